//! Fills the display's view model from the snapshot's last good families.
//!
//! Each figure comes from one collector's slot; while that collector fails, its last
//! values stay and the figure's [`Source`] is marked stale. A collector absent on this
//! machine (no data) leaves its figures unknown (`--`), never 0.

use crate::alerts::bus::AlertBus;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nodewatch_display::{Builder, BuilderState, Source, Usage, ViewModel};
use prometheus::proto::{Metric, MetricFamily};

use super::wallet::WalletState;
use crate::snapshot::{SlotState, Snapshot};

/// How often the IP address is looked up again.
const IP_REFRESH: Duration = Duration::from_secs(30);

/// Builds view models, keeping what needs two readings (CPU share) or is costly to
/// read on every frame (the IP address).
#[derive(Debug)]
pub struct ViewBuilder {
    node_name: String,
    /// Busy and total CPU seconds at the previous distinct reading.
    cpu_previous: Option<(f64, f64)>,
    cpu_percent: Option<f32>,
    ip: Option<(Instant, Option<String>)>,
    wallet: Option<Arc<Mutex<WalletState>>>,
    acks: Option<Arc<crate::alerts::sound::Acknowledgements>>,
    alerts: Option<Arc<AlertBus>>,
}

fn label<'a>(metric: &'a Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// One sample: its labels and value.
struct Sample<'a> {
    metric: &'a Metric,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        label(self.metric, name)
    }
}

fn family<'a>(families: &'a [MetricFamily], name: &str) -> Vec<Sample<'a>> {
    families
        .iter()
        .find(|f| f.name() == name)
        .map(|f| {
            let kind = f.get_field_type();
            f.get_metric()
                .iter()
                .map(|metric| Sample {
                    metric,
                    value: nodewatch_http::exposition::simple_value(kind, metric),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn first_value(families: &[MetricFamily], name: &str) -> Option<f64> {
    family(families, name).first().map(|s| s.value)
}

/// One collector's families for the view: `None` when it is absent, disabled or has
/// never succeeded; `stale` when it fails now.
struct Reading {
    state: SlotState,
    stale: bool,
}

fn reading(snapshot: &Snapshot, collector: &str) -> Option<Reading> {
    let state = snapshot.slot(collector)?.state();
    if state.last_success.is_none() || (!state.ok && state.no_data) {
        return None;
    }
    Some(Reading {
        stale: !state.ok,
        state,
    })
}

/// CPU busy and total seconds over every CPU.
pub fn cpu_seconds(families: &[MetricFamily]) -> Option<(f64, f64)> {
    let metrics = family(families, "node_cpu_seconds_total");
    if metrics.is_empty() {
        return None;
    }
    let (mut busy, mut total) = (0.0, 0.0);
    for m in &metrics {
        total += m.value;
        if !matches!(m.label("mode"), Some("idle" | "iowait")) {
            busy += m.value;
        }
    }
    Some((busy, total))
}

/// The SoC temperature: the Pi's `cpu-thermal` zone, else another CPU zone, else the
/// first zone.
pub fn soc_temperature(families: &[MetricFamily]) -> Option<f64> {
    let zones = family(families, "node_thermal_zone_temp");
    let by_type = |want: &dyn Fn(&str) -> bool| {
        zones
            .iter()
            .find(|m| m.label("type").is_some_and(want))
            .map(|m| m.value)
    };
    by_type(&|t| t == "cpu-thermal")
        .or_else(|| by_type(&|t| t.contains("cpu") || t.contains("pkg") || t.contains("soc")))
        .or_else(|| zones.first().map(|m| m.value))
}

/// The address this node is reached on: the source address of the default route
/// (a UDP "connect" sends no packet).
fn primary_ip() -> Option<String> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).ok()?;
    socket
        .connect(SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9)))
        .ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then(|| ip.to_string())
}

impl ViewBuilder {
    /// A builder for this node.
    pub fn new(node_name: String) -> Self {
        Self {
            node_name,
            cpu_previous: None,
            cpu_percent: None,
            ip: None,
            wallet: None,
            acks: None,
            alerts: None,
        }
    }

    /// Takes wallet figures from `wallet` (polled by [`super::wallet::spawn`]).
    pub fn with_wallet(mut self, wallet: Option<Arc<Mutex<WalletState>>>) -> Self {
        self.wallet = wallet;
        self
    }

    /// Marks alerts acknowledged from the shared store.
    pub fn with_acks(mut self, acks: Arc<crate::alerts::sound::Acknowledgements>) -> Self {
        self.acks = Some(acks);
        self
    }

    /// Shows the firing alerts of `bus`.
    pub fn with_alerts(mut self, bus: Arc<AlertBus>) -> Self {
        self.alerts = Some(bus);
        self
    }

    /// The view model now.
    pub fn build(&mut self, snapshot: &Snapshot, now: Instant) -> ViewModel {
        let mut model = ViewModel {
            node_name: self.node_name.clone(),
            ..ViewModel::default()
        };
        let mut staleness = Staleness::default();
        self.system_readings(snapshot, &mut model, &mut staleness);
        Self::builder_reading(snapshot, &mut model, &mut staleness);
        self.wallet_figures(&mut model, &mut staleness);
        self.firing_alerts(&mut model);
        model.ip_address = self.ip_address(now);
        if let Some(age) = staleness.age_secs() {
            model.stale_age_secs = Some(age);
        }
        model
    }

    /// The node's own figures: CPU share, SoC temperature, memory, root disk and power.
    fn system_readings(
        &mut self,
        snapshot: &Snapshot,
        model: &mut ViewModel,
        staleness: &mut Staleness,
    ) {
        if let Some(r) = reading(snapshot, "cpu") {
            if let Some(seconds) = cpu_seconds(&r.state.families) {
                self.note_cpu_seconds(seconds);
            }
            model.cpu_percent = self.cpu_percent;
            staleness.mark(model, &r, Source::Cpu);
        }
        if let Some(r) = reading(snapshot, "thermal_zone") {
            model.soc_temp_celsius = soc_temperature(&r.state.families).map(|t| t as f32);
            staleness.mark(model, &r, Source::Temperature);
        }
        if let Some(r) = reading(snapshot, "meminfo") {
            if let Some(memory) = memory_usage(&r.state.families) {
                model.memory = Some(memory);
            }
            staleness.mark(model, &r, Source::Memory);
        }
        if let Some(r) = reading(snapshot, "filesystem") {
            if let Some(disk) = root_disk_usage(&r.state.families) {
                model.disk = Some(disk);
            }
            staleness.mark(model, &r, Source::Disk);
        }
        if let Some(r) = reading(snapshot, "pi") {
            let (under_voltage, throttled) = power_flags(&r.state.families);
            model.under_voltage = under_voltage;
            model.throttled = throttled;
            staleness.mark(model, &r, Source::Power);
        }
    }

    /// Takes a CPU reading (busy and total seconds): the share busy since the previous
    /// distinct reading. The same reading again (display faster than the collector)
    /// keeps the share.
    fn note_cpu_seconds(&mut self, (busy, total): (f64, f64)) {
        if let Some((b0, t0)) = self.cpu_previous
            && total > t0
        {
            self.cpu_percent = Some(((busy - b0) / (total - t0) * 100.0).clamp(0.0, 100.0) as f32);
        }
        if self.cpu_previous.is_none_or(|(_, t0)| total != t0) {
            self.cpu_previous = Some((busy, total));
        }
    }

    /// The builder's figures, when its collector has any.
    fn builder_reading(snapshot: &Snapshot, model: &mut ViewModel, staleness: &mut Staleness) {
        if let Some(r) = reading(snapshot, "intmax_builder") {
            model.builder = builder_view(&r.state.families);
            if model.builder.is_some() {
                staleness.mark(model, &r, Source::Builder);
            }
        }
    }

    /// The wallet figures polled by [`super::wallet::spawn`], and whether they are stale.
    fn wallet_figures(&self, model: &mut ViewModel, staleness: &mut Staleness) {
        let Some(wallet) = &self.wallet else { return };
        let w = wallet.lock().unwrap_or_else(|e| e.into_inner()).clone();
        model.wallet = w.wallet;
        if w.stale {
            model.stale.push(Source::Wallet);
            if let Some(t) = w.last_success {
                staleness.note(t);
            }
        }
    }

    /// Firing local alerts, one entry per rule (most severe first), acknowledged when
    /// every firing instance of it is (the shared, persisted store).
    fn firing_alerts(&self, model: &mut ViewModel) {
        let firing = self.alerts.as_ref().map(|b| b.alerts()).unwrap_or_default();
        for alert in &firing {
            if !model.alerts.iter().any(|a| a.name == alert.alertname) {
                let acknowledged = self.acks.as_ref().is_some_and(|acks| {
                    firing
                        .iter()
                        .filter(|a| a.alertname == alert.alertname)
                        .all(|a| acks.is_acknowledged(a))
                });
                model.alerts.push(nodewatch_display::Alert {
                    name: alert.alertname.clone(),
                    severity: alert.severity,
                    acknowledged,
                });
            }
        }
    }

    fn ip_address(&mut self, now: Instant) -> Option<String> {
        match &self.ip {
            Some((at, ip)) if now.saturating_duration_since(*at) < IP_REFRESH => ip.clone(),
            _ => {
                let ip = primary_ip();
                self.ip = Some((now, ip.clone()));
                ip
            }
        }
    }
}

/// Which sources are stale, and since when the oldest of them last succeeded.
#[derive(Default)]
struct Staleness {
    oldest: Option<SystemTime>,
}

impl Staleness {
    /// Marks `source` stale in `model` when its reading is.
    fn mark(&mut self, model: &mut ViewModel, r: &Reading, source: Source) {
        if r.stale {
            if !model.stale.contains(&source) {
                model.stale.push(source);
            }
            if let Some(t) = r.state.last_success {
                self.note(t);
            }
        }
    }

    /// Notes a stale source's last success.
    fn note(&mut self, last_success: SystemTime) {
        self.oldest = Some(self.oldest.map_or(last_success, |o| o.min(last_success)));
    }

    /// Seconds since the oldest stale source last succeeded.
    fn age_secs(&self) -> Option<u64> {
        self.oldest.map(|t| {
            SystemTime::now()
                .duration_since(t)
                .unwrap_or_default()
                .as_secs()
        })
    }
}

/// Memory in use (total less available).
fn memory_usage(families: &[MetricFamily]) -> Option<Usage> {
    let total = first_value(families, "node_memory_MemTotal_bytes")?;
    let available = first_value(families, "node_memory_MemAvailable_bytes")?;
    Some(Usage {
        used_bytes: (total - available).max(0.0) as u64,
        total_bytes: total as u64,
    })
}

/// The root filesystem's use (size less available to users).
fn root_disk_usage(families: &[MetricFamily]) -> Option<Usage> {
    let root = |name| {
        family(families, name)
            .iter()
            .find(|m| m.label("mountpoint") == Some("/"))
            .map(|m| m.value)
    };
    let size = root("node_filesystem_size_bytes")?;
    let avail = root("node_filesystem_avail_bytes")?;
    Some(Usage {
        used_bytes: (size - avail).max(0.0) as u64,
        total_bytes: size as u64,
    })
}

/// Under-voltage and throttling from the Pi's throttled flags: each `None` when no
/// flag of it is exported.
fn power_flags(families: &[MetricFamily]) -> (Option<bool>, Option<bool>) {
    let throttled = family(families, "nodewatch_pi_throttled");
    let condition = |names: &[&str]| {
        let matching: Vec<_> = throttled
            .iter()
            .filter(|m| m.label("condition").is_some_and(|c| names.contains(&c)))
            .collect();
        (!matching.is_empty()).then(|| matching.iter().any(|m| m.value > 0.0))
    };
    (
        condition(&["under_voltage"]),
        condition(&["throttled", "freq_capped", "soft_temp_limit"]),
    )
}

/// The builder from its families (design §2 names); `None` when it exports none.
pub fn builder_view(families: &[MetricFamily]) -> Option<Builder> {
    let flag = |name| first_value(families, name).map(|v| v > 0.0);
    let ready = flag("intmax_builder_ready");
    let running =
        flag("intmax_builder_container_running").or(flag("intmax_builder_process_running"));
    let state = match (ready, running) {
        (None, None) => return None,
        (Some(true), _) => BuilderState::Ready,
        (_, Some(true)) => BuilderState::Starting,
        (Some(false), _) | (_, Some(false)) => BuilderState::Down,
    };
    let version = families
        .iter()
        .filter(|f| f.name().starts_with("intmax_builder"))
        .flat_map(|f| f.get_metric())
        .find_map(|m| label(m, "version"))
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    Some(Builder {
        state,
        uptime_secs: first_value(families, "intmax_builder_uptime_seconds")
            .map(|v| v.max(0.0) as u64),
        version,
        data_dir_bytes: first_value(families, "intmax_builder_data_dir_bytes")
            .map(|v| v.max(0.0) as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::CollectorSpec;
    use crate::metrics::MetricSink;

    fn spec(name: &'static str) -> &'static CollectorSpec {
        crate::collectors::spec(name).expect("known collector")
    }

    fn snapshot() -> Snapshot {
        Snapshot::new(
            ["cpu", "thermal_zone", "meminfo", "filesystem", "pi"]
                .into_iter()
                .map(|n| (spec(n), Duration::from_secs(2)))
                .collect(),
        )
    }

    fn cpu(idle: f64, user: f64) -> Vec<MetricFamily> {
        let mut sink = MetricSink::new();
        let help = "Seconds the CPUs spent in each mode.";
        sink.counter(
            "node_cpu_seconds_total",
            help,
            &[("cpu", "0"), ("mode", "idle")],
            idle,
        );
        sink.counter(
            "node_cpu_seconds_total",
            help,
            &[("cpu", "0"), ("mode", "user")],
            user,
        );
        sink.into_families()
    }

    fn index(s: &Snapshot, name: &str) -> usize {
        s.slots()
            .iter()
            .position(|x| x.spec.name == name)
            .expect("slot")
    }

    #[test]
    fn fills_figures_and_marks_stale_sources() {
        let s = snapshot();
        let now = Instant::now();
        let mut b = ViewBuilder::new("pi-01".into());
        let m = b.build(&s, now);
        assert_eq!(m.cpu_percent, None, "nothing collected yet: unknown, not 0");
        assert!(m.stale.is_empty());

        let i = index(&s, "cpu");
        s.store_success(i, cpu(100.0, 100.0), Duration::ZERO);
        assert_eq!(
            b.build(&s, now).cpu_percent,
            None,
            "one reading gives no share"
        );
        s.store_success(i, cpu(175.0, 125.0), Duration::ZERO);
        assert_eq!(b.build(&s, now).cpu_percent, Some(25.0));
        // The same reading again (display faster than the collector) keeps the share.
        assert_eq!(b.build(&s, now).cpu_percent, Some(25.0));

        let mut sink = MetricSink::new();
        sink.gauge(
            "node_thermal_zone_temp",
            "t",
            &[("type", "cpu-thermal"), ("zone", "0")],
            48.5,
        );
        s.store_success(
            index(&s, "thermal_zone"),
            sink.into_families(),
            Duration::ZERO,
        );
        let mut sink = MetricSink::new();
        sink.gauge(
            "nodewatch_pi_throttled",
            "t",
            &[("condition", "under_voltage")],
            1.0,
        );
        sink.gauge(
            "nodewatch_pi_throttled",
            "t",
            &[("condition", "throttled")],
            0.0,
        );
        s.store_success(index(&s, "pi"), sink.into_families(), Duration::ZERO);

        s.store_failure(i, "cannot read /proc/stat".into(), false, Duration::ZERO);
        let m = b.build(&s, now);
        assert_eq!(m.cpu_percent, Some(25.0), "last value kept");
        assert_eq!(m.stale, vec![Source::Cpu]);
        assert_eq!(m.stale_age_secs, Some(0));
        assert_eq!(m.soc_temp_celsius, Some(48.5));
        assert_eq!(m.under_voltage, Some(true));
        assert_eq!(m.throttled, Some(false));
        assert_eq!(m.memory, None);

        // Source gone for good (no data): unknown, not stale.
        s.store_failure(index(&s, "pi"), "no data".into(), true, Duration::ZERO);
        assert_eq!(b.build(&s, now).under_voltage, None);
    }

    #[test]
    fn wallet_figures_and_their_staleness() {
        let s = snapshot();
        let state = Arc::new(Mutex::new(WalletState::default()));
        let mut b = ViewBuilder::new("pi-01".into()).with_wallet(Some(state.clone()));
        assert_eq!(
            b.build(&s, Instant::now()).wallet.eth,
            None,
            "unknown until read"
        );
        {
            let mut w = state.lock().expect("lock");
            w.wallet.eth = Some(0.5);
            w.last_success = Some(SystemTime::now());
            w.stale = true;
        }
        let m = b.build(&s, Instant::now());
        assert_eq!(m.wallet.eth, Some(0.5));
        assert_eq!(m.stale, vec![Source::Wallet]);
    }

    #[test]
    fn builder_states() {
        let mut sink = MetricSink::new();
        sink.gauge("intmax_builder_ready", "r", &[("node", "n")], 0.0);
        sink.gauge(
            "intmax_builder_container_running",
            "r",
            &[("node", "n")],
            1.0,
        );
        sink.gauge("intmax_builder_uptime_seconds", "u", &[("node", "n")], 90.0);
        let b = builder_view(&sink.into_families()).expect("builder");
        assert_eq!(b.state, BuilderState::Starting);
        assert_eq!(b.uptime_secs, Some(90));
        assert_eq!(builder_view(&[]), None);
    }

    #[test]
    fn firing_alerts_reach_the_model_once_per_rule() {
        let s = snapshot();
        let alert = |name: &str, severity, mountpoint: &str| crate::alerts::FiringAlert {
            alertname: name.into(),
            severity,
            labels: [("mountpoint".to_string(), mountpoint.to_string())].into(),
            value: 95.0,
            summary: String::new(),
            description: String::new(),
            active_since_unix: 0.0,
        };
        let bus = Arc::new(AlertBus::default());
        bus.set_alerts(vec![
            alert("DiskFull", crate::alerts::Severity::Critical, "/"),
            alert("DiskFull", crate::alerts::Severity::Critical, "/data"),
            alert("MemoryLow", crate::alerts::Severity::Warning, ""),
        ]);
        let m = ViewBuilder::new("pi".into())
            .with_alerts(bus)
            .build(&s, Instant::now());
        let names: Vec<_> = m
            .alerts
            .iter()
            .map(|a| (a.name.as_str(), a.severity))
            .collect();
        assert_eq!(
            names,
            [
                ("DiskFull", nodewatch_display::Severity::Critical),
                ("MemoryLow", nodewatch_display::Severity::Warning)
            ]
        );
        assert_eq!(
            m.unacknowledged_critical().map(|a| a.name.as_str()),
            Some("DiskFull")
        );
    }
}
