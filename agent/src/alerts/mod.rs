//! Local alerting: rules from the config (plus built-in defaults) evaluated on the
//! snapshot's families, on a short tick, with Prometheus's `for` semantics.
//!
//! - [`expr`]: the PromQL subset the rules are written in.
//! - [`template`]: `{{ $labels.x }}` / `{{ $value }}` in summaries and descriptions.
//! - [`export`]: the same rules as a Prometheus rule file (`rules export`).
//! - [`sound`]: buzzer patterns, quiet hours, persisted acknowledgements (driven by `outputs::buzzer`).
//!
//! Rules are evaluated after each collection (50 ms later, to take the collectors
//! of the same tick in the same evaluation) and when a pending alert's `for` or the test
//! alert ends (at most once per `alerts.evaluation_interval_secs`, default 1 s; nothing
//! else changes with time alone) on the
//! latest families of every collector (a failing collector's last values included,
//! as design §2 says), plus `node_scrape_collector_success{collector}` as `/metrics`
//! shows it (without collectors that have no data on this machine). A condition is
//! thus seen within one collection interval of the collector that reads it (2 s for
//! system collectors) plus about 50 ms.
//! An alert is pending from the first evaluation its condition holds, firing once it
//! has held for `for_secs` (at once when 0), and resolved when it no longer holds.
//! Firing alerts are exported as `nodewatch_alert_firing{alertname,severity}` (one
//! series per rule: 1 while any instance fires, else 0) and listed under `alerts` in
//! `/api/health/detailed`.

pub mod bus;
pub mod export;
pub mod expr;
pub mod sound;
pub mod template;
pub mod test_alert;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prometheus::proto::MetricFamily;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::MetricSink;
use crate::snapshot::Snapshot;
use bus::AlertBus;
use expr::{Expr, Families, Labels};
use template::Template;

/// How urgent an alert is: the one severity of every nodewatch crate.
pub use nodewatch_severity::Severity;

/// The `[alerts]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate rules at all. Default true.
    pub enabled: bool,
    /// Include the built-in rules ([`default_rules`]). Default true.
    pub default_rules: bool,
    /// Names of built-in rules to leave out. Default none.
    pub disable: Vec<String>,
    /// Seconds between evaluations. Default 1.
    pub evaluation_interval_secs: f64,
    /// Extra rules; one named like a built-in rule replaces it. Default none.
    pub rules: Vec<RuleConfig>,
    /// The buzzer and status LED on GPIO (`[alerts.buzzer]`).
    pub buzzer: sound::BuzzerConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_rules: true,
            disable: Vec::new(),
            evaluation_interval_secs: 1.0,
            rules: Vec::new(),
            buzzer: sound::BuzzerConfig::default(),
        }
    }
}

/// One `[[alerts.rules]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The alert's name (`alertname`): letters, digits and `_`.
    pub name: String,
    /// The condition, in the PromQL subset of [`expr`]. Its place in the file is
    /// kept for error positions.
    pub expr: toml::Spanned<String>,
    /// Seconds the condition must hold before the alert fires. Default 0.
    #[serde(default)]
    pub for_secs: u64,
    /// `critical`, `warning` or `info`.
    pub severity: Severity,
    /// One line; may use `{{ $labels.NAME }}` and `{{ $value }}`. Default empty.
    #[serde(default)]
    pub summary: String,
    /// Longer text, same templates. Default empty.
    #[serde(default)]
    pub description: String,
}

impl RuleConfig {
    fn new(
        name: &str,
        expr: &str,
        for_secs: u64,
        severity: Severity,
        summary: &str,
        description: &str,
    ) -> Self {
        Self {
            name: name.into(),
            expr: toml::Spanned::new(0..0, expr.into()),
            for_secs,
            severity,
            summary: summary.into(),
            description: description.into(),
        }
    }
}

/// How many samples a rule with a `for` sees within it, at least (see
/// [`CompiledRule::sample_pace`]).
pub const SAMPLES_PER_HOLD: u32 = 5;

/// The longest a rule's samples are apart, whatever its `for`: a common scrape interval.
pub const SAMPLE_PACE_LIMIT: Duration = Duration::from_secs(15);

/// Filesystems the disk rules ignore: memory-backed and read-only image types.
const DISK_FILTER: &str =
    "fstype!~\"tmpfs|ramfs|devtmpfs|squashfs|overlay|iso9660\",mountpoint!~\"/(run|snap)(/.*)?\"";

/// The built-in rules, in the order they are exported.
pub fn default_rules() -> Vec<RuleConfig> {
    use Severity::*;
    let disk = |pct: u32, name: &str, severity| {
        RuleConfig::new(
            name,
            &format!(
                "100 - 100 * node_filesystem_avail_bytes{{{DISK_FILTER}}} / node_filesystem_size_bytes{{{DISK_FILTER}}} > {pct}"
            ),
            300,
            severity,
            &format!("Disk {{{{ $labels.mountpoint }}}} is more than {pct}% full"),
            "{{ $labels.mountpoint }} ({{ $labels.device }}) is {{ $value }}% full.",
        )
    };
    vec![
        RuleConfig::new(
            "BuilderNotReady",
            "intmax_builder_ready == 0",
            60,
            Critical,
            "Builder on {{ $labels.node }} is not ready",
            "The INTMAX block builder on {{ $labels.node }} has not been ready for a minute.",
        ),
        RuleConfig::new(
            "BuilderContainerDown",
            "intmax_builder_container_running == 0",
            30,
            Critical,
            "Builder container on {{ $labels.node }} is down",
            "No builder container is running on {{ $labels.node }}.",
        ),
        RuleConfig::new(
            "BuilderHealthFailing",
            "intmax_builder_health_ok == 0",
            60,
            Warning,
            "Builder health check failing on {{ $labels.node }}",
            "The builder's /health-check on {{ $labels.node }} has failed for a minute.",
        ),
        RuleConfig::new(
            "UnderVoltage",
            "nodewatch_pi_throttled{condition=\"under_voltage\"} == 1",
            5,
            Critical,
            "Under-voltage now",
            "The power supply is too weak: the SD card and the builder are at risk.",
        ),
        RuleConfig::new(
            "SocTemperatureHigh",
            "node_thermal_zone_temp{type=\"cpu-thermal\"} > 80",
            60,
            Warning,
            "SoC temperature above 80 °C",
            "The SoC is at {{ $value }} °C; it throttles at 85 °C.",
        ),
        disk(80, "DiskAlmostFull", Warning),
        disk(90, "DiskFull", Critical),
        RuleConfig::new(
            "MemoryLow",
            "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100 < 10",
            120,
            Warning,
            "Less than 10% of memory available",
            "Only {{ $value }}% of memory is available.",
        ),
        RuleConfig::new(
            "CollectorFailing",
            "node_scrape_collector_success == 0",
            60,
            Warning,
            "Collector {{ $labels.collector }} is failing",
            "The {{ $labels.collector }} collector has failed for a minute; its last values are stale.",
        ),
    ]
}

/// A rule that does not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// The key at fault (`expr`, `summary`, …).
    pub key: &'static str,
    /// Byte range of the value in the config file, when it came from one.
    pub span: Option<std::ops::Range<usize>>,
    /// 1-based column in the value, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "alerts rule {:?}: {}", self.rule, self.key)?;
        if let Some(c) = self.column {
            write!(f, ", column {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The rules in effect: the defaults (unless turned off), without the disabled ones,
/// each replaced by a configured rule of the same name, then the other configured rules.
pub fn effective_rules(config: &AlertsConfig) -> Result<Vec<RuleConfig>, RuleError> {
    let plain = |rule: &str, key, message: String| RuleError {
        rule: rule.to_string(),
        key,
        span: None,
        column: None,
        message,
    };
    let defaults = default_rules();
    for name in &config.disable {
        if !defaults.iter().any(|r| &r.name == name) {
            return Err(plain(
                name,
                "disable",
                format!(
                    "no built-in rule of that name; built-in: {}",
                    defaults
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for rule in &config.rules {
        if !seen.insert(rule.name.as_str()) {
            return Err(plain(&rule.name, "name", "defined twice".into()));
        }
        let valid = rule
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && rule
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(plain(
                &rule.name,
                "name",
                "must be letters, digits and _, not starting with a digit".into(),
            ));
        }
    }
    let mut out = Vec::new();
    if config.default_rules {
        for rule in defaults {
            if config.disable.contains(&rule.name) {
                continue;
            }
            match config.rules.iter().find(|r| r.name == rule.name) {
                Some(replacement) => out.push(replacement.clone()),
                None => out.push(rule),
            }
        }
    }
    for rule in &config.rules {
        if !out.iter().any(|r| r.name == rule.name) {
            out.push(rule.clone());
        }
    }
    Ok(out)
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Its name.
    pub name: String,
    expr: Expr,
    hold: Duration,
    /// Its severity.
    pub severity: Severity,
    summary: Template,
    description: Template,
}

impl CompiledRule {
    /// The metric names its expression reads.
    pub fn metric_names(&self) -> Vec<&str> {
        self.expr.metric_names()
    }

    /// How far apart the samples it reads may be: a [`SAMPLES_PER_HOLD`]th of its
    /// `for`, at most [`SAMPLE_PACE_LIMIT`]; zero (every collection) without a `for`.
    /// An alert fires exactly `for` after the first sample its condition held in, so a
    /// coarser pace delays only when that first sample is taken.
    pub fn sample_pace(&self) -> Duration {
        (self.hold / SAMPLES_PER_HOLD).min(SAMPLE_PACE_LIMIT)
    }

    /// Parses a rule's expression and templates.
    pub fn compile(rule: &RuleConfig) -> Result<CompiledRule, RuleError> {
        let expr = Expr::parse(rule.expr.get_ref()).map_err(|e| RuleError {
            rule: rule.name.clone(),
            key: "expr",
            span: Some(rule.expr.span()).filter(|s| !s.is_empty()),
            column: Some(e.column),
            message: e.message,
        })?;
        let template = |key, text: &str| {
            Template::parse(text).map_err(|e| RuleError {
                rule: rule.name.clone(),
                key,
                span: None,
                column: Some(e.column),
                message: e.message,
            })
        };
        Ok(CompiledRule {
            name: rule.name.clone(),
            expr,
            hold: Duration::from_secs(rule.for_secs),
            severity: rule.severity,
            summary: template("summary", &rule.summary)?,
            description: template("description", &rule.description)?,
        })
    }
}

/// Compiles the rules in effect.
pub fn compile(config: &AlertsConfig) -> Result<Vec<CompiledRule>, RuleError> {
    effective_rules(config)?
        .iter()
        .map(CompiledRule::compile)
        .collect()
}

/// A firing alert, as `/api/health/detailed` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    /// The rule's name.
    pub alertname: String,
    /// Its severity.
    pub severity: Severity,
    /// The sample's labels (without the metric name).
    pub labels: BTreeMap<String, String>,
    /// The expression's value at the last evaluation.
    pub value: f64,
    /// The rendered summary.
    pub summary: String,
    /// The rendered description.
    pub description: String,
    /// When the condition started to hold (unix seconds).
    pub active_since_unix: f64,
}

/// A change of state, for logs and outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The alert started firing.
    Firing(FiringAlert),
    /// The alert, which was firing, no longer holds.
    Resolved(FiringAlert),
}

#[derive(Debug, Clone)]
struct Active {
    since: Instant,
    firing: bool,
    alert: FiringAlert,
}

/// Keeps every rule's pending and firing alerts between evaluations.
#[derive(Debug)]
pub struct Evaluator {
    rules: Vec<CompiledRule>,
    active: Vec<HashMap<Labels, Active>>,
    errors: Vec<Option<String>>,
    /// The family names the rules read (a few dozen of the hundreds collected).
    reads: Vec<String>,
}

impl Evaluator {
    /// An evaluator with nothing active.
    pub fn new(rules: Vec<CompiledRule>) -> Self {
        let n = rules.len();
        let mut reads: Vec<String> = rules
            .iter()
            .flat_map(|r| r.metric_names())
            .map(String::from)
            .collect();
        reads.sort();
        reads.dedup();
        Self {
            rules,
            active: vec![HashMap::new(); n],
            errors: vec![None; n],
            reads,
        }
    }

    /// Whether a rule reads the family `name`.
    pub fn reads(&self, name: &str) -> bool {
        self.reads.iter().any(|r| r == name)
    }

    /// When the first pending alert's `for` ends: only then does time alone (no new
    /// collection) change what fires.
    pub fn next_due(&self) -> Option<Instant> {
        self.rules
            .iter()
            .zip(&self.active)
            .flat_map(|(rule, active)| {
                active
                    .values()
                    .filter(|a| !a.firing)
                    .map(move |a| a.since + rule.hold)
            })
            .min()
    }

    /// Evaluates every rule at `now`; returns what started firing or resolved.
    pub fn evaluate(&mut self, families: &Families<'_>, now: Instant) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let samples = match rule.expr.eval(families) {
                Ok(s) => {
                    self.errors[index] = None;
                    s
                }
                Err(e) => {
                    // A runtime error keeps the rule's state, as Prometheus does not
                    // resolve on a failed evaluation; logged once per change.
                    if self.errors[index].as_deref() != Some(e.as_str()) {
                        tracing::warn!(
                            rule = rule.name.as_str(),
                            error = e.as_str(),
                            "Alert rule failed."
                        );
                        self.errors[index] = Some(e);
                    }
                    continue;
                }
            };
            let active = &mut self.active[index];
            let mut present = Vec::with_capacity(samples.len());
            for sample in samples {
                let labels: BTreeMap<String, String> = sample.labels.iter().cloned().collect();
                let summary = rule.summary.render(&labels, sample.value);
                let description = rule.description.render(&labels, sample.value);
                let entry = active.entry(sample.labels.clone()).or_insert_with(|| {
                    let since_wall = SystemTime::now();
                    Active {
                        since: now,
                        firing: false,
                        alert: FiringAlert {
                            alertname: rule.name.clone(),
                            severity: rule.severity,
                            labels: BTreeMap::new(),
                            value: 0.0,
                            summary: String::new(),
                            description: String::new(),
                            active_since_unix: crate::metrics::unix_seconds(since_wall),
                        },
                    }
                });
                entry.alert.labels = labels;
                entry.alert.value = sample.value;
                entry.alert.summary = summary;
                entry.alert.description = description;
                if !entry.firing && now.saturating_duration_since(entry.since) >= rule.hold {
                    entry.firing = true;
                    transitions.push(Transition::Firing(entry.alert.clone()));
                }
                present.push(sample.labels);
            }
            active.retain(|labels, a| {
                let keep = present.contains(labels);
                if !keep && a.firing {
                    transitions.push(Transition::Resolved(a.alert.clone()));
                }
                keep
            });
        }
        transitions
    }

    /// The firing alerts, most severe first, then by name.
    pub fn firing(&self) -> Vec<FiringAlert> {
        let mut out: Vec<FiringAlert> = self
            .active
            .iter()
            .flat_map(|m| m.values())
            .filter(|a| a.firing)
            .map(|a| a.alert.clone())
            .collect();
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.alertname.cmp(&b.alertname))
                .then_with(|| a.labels.cmp(&b.labels))
        });
        out
    }

    /// `nodewatch_alert_firing{alertname,severity}`: one series per rule.
    pub fn metrics(&self) -> Vec<MetricFamily> {
        let mut sink = MetricSink::new();
        for (rule, active) in self.rules.iter().zip(&self.active) {
            let firing = active.values().any(|a| a.firing);
            sink.gauge(
                "nodewatch_alert_firing",
                "Whether a local alert rule has a firing alert (1) or not (0).",
                &[
                    ("alertname", rule.name.as_str()),
                    ("severity", rule.severity.as_str()),
                ],
                if firing { 1.0 } else { 0.0 },
            );
        }
        sink.into_families()
    }
}

/// `node_scrape_collector_success` as `/metrics` shows it, for the rules, except for
/// collectors whose source is absent on this machine (no Pi firmware, no Docker
/// socket): `/metrics` shows 0 for them, as node_exporter does, but they are not
/// failing (as in `/api/health`), so locally they are left out.
/// The family rules read to see a collector fail.
const COLLECTOR_SUCCESS: &str = "node_scrape_collector_success";

fn collector_success(snapshot: &Snapshot) -> Vec<MetricFamily> {
    let mut sink = MetricSink::new();
    for slot in snapshot.slots().iter().filter(|s| !s.spec.internal) {
        let state = slot.state();
        if state.duration.is_none() || (!state.ok && state.no_data) {
            continue;
        }
        sink.gauge(
            COLLECTOR_SUCCESS,
            "node_exporter: Whether a collector succeeded.",
            &[("collector", slot.spec.name)],
            if state.ok { 1.0 } else { 0.0 },
        );
    }
    sink.into_families()
}

/// One evaluation on the snapshot's current families; publishes the result.
pub fn evaluate_snapshot(
    evaluator: &mut Evaluator,
    snapshot: &Snapshot,
    bus: &AlertBus,
    now: Instant,
) -> Vec<Transition> {
    let held: Vec<Arc<Vec<MetricFamily>>> = snapshot.slots().iter().map(|s| s.families()).collect();
    let meta = if evaluator.reads(COLLECTOR_SUCCESS) {
        collector_success(snapshot)
    } else {
        Vec::new()
    };
    let mut families = Families::new();
    for f in held.iter().map(|f| f.as_slice()).chain([meta.as_slice()]) {
        families.extend(f.iter().filter(|f| evaluator.reads(f.name())));
    }
    let transitions = evaluator.evaluate(&families, now);
    bus.set_alerts(with_test_alert(evaluator.firing(), bus.test_alert(now)));
    snapshot
        .outputs()
        .set_metrics("alerts", &evaluator.metrics());
    transitions
}

/// Sleeps until `at`; never without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Longest the evaluator waits after a collection for the others begun with it (a
/// tick's, a scrape's) to be stored; a stuck run does not hold it longer.
const SETTLE_LIMIT: Duration = Duration::from_millis(100);

/// The firing alerts with the test alert, if one is on, in its place by severity.
pub fn with_test_alert(
    mut firing: Vec<FiringAlert>,
    test: Option<FiringAlert>,
) -> Vec<FiringAlert> {
    if let Some(t) = test {
        let at = firing
            .iter()
            .position(|a| a.severity < t.severity)
            .unwrap_or(firing.len());
        firing.insert(at, t);
    }
    firing
}

/// Starts the evaluation loop, unless alerting is off. Rules were checked by
/// `Config::parse`; a rule that fails to compile here is logged and left out.
pub fn spawn(
    config: &AlertsConfig,
    snapshot: Arc<Snapshot>,
    bus: Arc<AlertBus>,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if !config.enabled {
        return None;
    }
    let rules = match compile(config) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Local alerting is off.");
            return None;
        }
    };
    let period = Duration::from_secs_f64(config.evaluation_interval_secs);
    Some(tokio::spawn(async move {
        let mut evaluator = Evaluator::new(rules);
        let mut last: Option<tokio::time::Instant> = None;
        let mut published = bus.subscribe_alerts();
        loop {
            // Between collections only the end of a pending `for` or of the test alert
            // changes what fires, so only then does the clock wake the evaluator (at
            // most once per `period`).
            let timed = [evaluator.next_due(), bus.test_alert_until()]
                .into_iter()
                .flatten()
                .min()
                .map(|due| {
                    let due = tokio::time::Instant::from_std(due);
                    last.map_or(due, |l| due.max(l + period))
                });
            tokio::select! {
                _ = sleep_until_some(timed) => {}
                _ = snapshot.collected() => {
                    // The collectors of one tick end within a few ms: one evaluation,
                    // once the last has stored (no timer wake-up of its own).
                    let _ = tokio::time::timeout(SETTLE_LIMIT, snapshot.settled()).await;
                }
                // A test alert may have started: decide again when to wake.
                _ = published.changed() => continue,
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            // Collections stored while we waited are in this evaluation.
            let _ = futures_util::FutureExt::now_or_never(snapshot.collected());
            last = Some(tokio::time::Instant::now());
            let now = tokio::time::Instant::now().into_std();
            for t in evaluate_snapshot(&mut evaluator, &snapshot, &bus, now) {
                match t {
                    Transition::Firing(a) => tracing::warn!(
                        alertname = a.alertname.as_str(),
                        severity = a.severity.as_str(),
                        labels = ?a.labels,
                        summary = a.summary.as_str(),
                        "Alert firing."
                    ),
                    Transition::Resolved(a) => tracing::info!(
                        alertname = a.alertname.as_str(),
                        labels = ?a.labels,
                        "Alert resolved."
                    ),
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests;
