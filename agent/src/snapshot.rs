//! The latest results of every collector, and the `/metrics` body built from them.
//!
//! Each collector's slot holds its pre-rendered text (empty while it fails, so its
//! samples leave `/metrics` as in node_exporter) and its last good families (kept
//! while it fails, marked stale, for the display and local alerts). A scrape takes
//! the cached body for the current generation, or assembles it once by copying the
//! slots' text: it never waits on a collector.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nodewatch_http::{ComponentHealth, DetailedHealth, Exposition, HealthStatus, MetricsSource};
use prometheus::proto::MetricFamily;

use crate::collectors::CollectorSpec;
use crate::metrics::MetricSink;

/// State of one collector.
#[derive(Debug, Clone, Default)]
pub struct SlotState {
    /// Whether the last run succeeded.
    pub ok: bool,
    /// Whether the last failure was "no data" (source absent on this machine).
    pub no_data: bool,
    /// Its current contribution to `/metrics`.
    pub rendered: Bytes,
    /// The last good families; stale when `ok` is false.
    pub families: Arc<Vec<MetricFamily>>,
    /// When the last success happened.
    pub last_success: Option<SystemTime>,
    /// The last error message (kept after recovery).
    pub last_error: Option<String>,
    /// Duration of the last run, or of the wait that timed out.
    pub duration: Option<Duration>,
    /// Runs started.
    pub runs: u64,
    /// Whether a run has begun and its result is not stored yet.
    pub running: bool,
}

/// One collector's place in the snapshot.
#[derive(Debug)]
pub struct Slot {
    /// The collector.
    pub spec: &'static CollectorSpec,
    /// Its interval, for health.
    pub interval: Duration,
    state: RwLock<SlotState>,
}

impl Slot {
    /// A copy of the current state.
    pub fn state(&self) -> SlotState {
        read(&self.state).clone()
    }

    /// Its last good families (stale when the last run failed), without copying the
    /// rest of its state.
    pub fn families(&self) -> Arc<Vec<MetricFamily>> {
        read(&self.state).families.clone()
    }
}

/// Everything `/metrics` and the health endpoints serve.
#[derive(Debug)]
pub struct Snapshot {
    slots: Vec<Slot>,
    started: Instant,
    generation: AtomicU64,
    cache: Mutex<Option<(u64, Arc<Exposition>)>>,
    /// Families that never change (build info), rendered once.
    constant: Bytes,
    /// Names written by built-in collectors: external (textfile) families with the
    /// same name are dropped.
    builtin_names: RwLock<HashSet<String>>,
    /// Names claimed by the enabled collectors' specs (`CollectorSpec::claims`), dropped
    /// from external families even before (or while) no built-in collector writes them.
    claimed_names: HashSet<&'static str>,
    /// Health and metrics of the outputs (display, …).
    outputs: crate::output_registry::OutputRegistry,
    /// The firing alerts for the health endpoint, from whoever owns them (the alert
    /// bus, a layer up): the store does not know alerting.
    alerts_view: std::sync::OnceLock<AlertsView>,
    /// Signalled after each collection that changed something, so alert rules are
    /// evaluated at once.
    collected: tokio::sync::Notify,
    /// Slots whose run has begun and whose result is not stored yet.
    running: std::sync::atomic::AtomicUsize,
    /// Signalled when `running` drops to zero: the runs begun together are all stored.
    settled: tokio::sync::Notify,
    /// The refused first-boot configuration import (`daemon::config_import`): the
    /// agent is degraded while it is there.
    config_import_error: std::sync::OnceLock<String>,
    version: String,
}

/// The firing alerts as JSON objects, read for each health answer.
pub struct AlertsView(pub Box<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>);

impl std::fmt::Debug for AlertsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertsView")
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Snapshot {
    /// An empty snapshot for these collectors and intervals.
    pub fn new(collectors: Vec<(&'static CollectorSpec, Duration)>) -> Self {
        let claimed_names = collectors
            .iter()
            .flat_map(|(spec, _)| spec.claims.iter().copied())
            .collect();
        let mut sink = MetricSink::new();
        sink.gauge(
            "nodewatch_build_info",
            "A metric with a constant '1' value labeled by version and target from which nodewatch was built.",
            &[("version", env!("CARGO_PKG_VERSION")), ("target", crate::BUILD_TARGET)],
            1.0,
        );
        let mut constant = Vec::new();
        // Encoding into a Vec cannot fail.
        let _ = nodewatch_http::encode_families(&sink.into_families(), &mut constant);
        Self {
            slots: collectors
                .into_iter()
                .map(|(spec, interval)| Slot {
                    spec,
                    interval,
                    state: RwLock::new(SlotState::default()),
                })
                .collect(),
            started: Instant::now(),
            generation: AtomicU64::new(1),
            cache: Mutex::new(None),
            constant: constant.into(),
            builtin_names: RwLock::new(HashSet::new()),
            claimed_names,
            outputs: crate::output_registry::OutputRegistry::default(),
            alerts_view: std::sync::OnceLock::new(),
            collected: tokio::sync::Notify::new(),
            running: std::sync::atomic::AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
            config_import_error: std::sync::OnceLock::new(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The slots, in `/metrics` order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot of a collector.
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.spec.name == name)
    }

    /// Marks the start of a run.
    pub fn begin_run(&self, index: usize) {
        let mut state = write(&self.slots[index].state);
        state.runs += 1;
        if !state.running {
            state.running = true;
            self.running.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Ends the run of a slot (its result is stored, or a run was skipped).
    fn end_run(&self, state: &mut SlotState) {
        if std::mem::take(&mut state.running) && self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Completes when no begun run is waiting to be stored (at once if none is): the
    /// collectors that ticked together have all answered.
    pub async fn settled(&self) {
        let notified = self.settled.notified();
        if self.running.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }

    /// Stores a successful run. Families of external collectors whose name a built-in
    /// collector uses are dropped; the dropped names are returned for logging.
    pub fn store_success(
        &self,
        index: usize,
        mut families: Vec<MetricFamily>,
        duration: Duration,
    ) -> Vec<String> {
        let slot = &self.slots[index];
        let mut dropped = Vec::new();
        if slot.spec.external {
            let builtin = read(&self.builtin_names);
            families.retain(|f| {
                let keep = !builtin.contains(f.name()) && !self.claimed_names.contains(f.name());
                if !keep {
                    dropped.push(f.name().to_string());
                }
                keep
            });
        } else {
            let mut builtin = write(&self.builtin_names);
            for f in &families {
                if !builtin.contains(f.name()) {
                    builtin.insert(f.name().to_string());
                }
            }
        }
        let mut rendered = Vec::new();
        let _ = nodewatch_http::encode_families(&families, &mut rendered);
        let changed;
        {
            let mut state = write(&slot.state);
            // Unchanged samples need no new evaluation of the alert rules (the event-driven
            // collectors publish every 250 ms, mostly the same).
            changed = !state.ok || state.rendered.as_ref() != rendered.as_slice();
            state.ok = true;
            state.no_data = false;
            state.rendered = rendered.into();
            state.families = Arc::new(families);
            state.last_success = Some(SystemTime::now());
            state.duration = Some(duration);
            self.end_run(&mut state);
        }
        self.generation.fetch_add(1, Ordering::Release);
        if changed {
            self.collected.notify_one();
        }
        dropped
    }

    /// Stores a failed run: its samples leave `/metrics`, its last values stay.
    pub fn store_failure(&self, index: usize, error: String, no_data: bool, duration: Duration) {
        let changed;
        {
            let mut state = write(&self.slots[index].state);
            changed = state.ok || state.no_data != no_data || state.duration.is_none();
            state.ok = false;
            state.no_data = no_data;
            state.rendered = Bytes::new();
            state.last_error = Some(error);
            state.duration = Some(duration);
            self.end_run(&mut state);
        }
        self.generation.fetch_add(1, Ordering::Release);
        if changed {
            self.collected.notify_one();
        }
    }

    /// Completes after the next collection (or at once if one finished unseen).
    pub async fn collected(&self) {
        self.collected.notified().await;
    }

    /// The outputs' health and metrics.
    pub fn outputs(&self) -> &crate::output_registry::OutputRegistry {
        &self.outputs
    }

    /// Where the health endpoint reads the firing alerts from (set once, at start).
    pub fn set_alerts_view(&self, view: AlertsView) {
        let _ = self.alerts_view.set(view);
    }

    /// Records a refused first-boot configuration import (once, at start).
    pub fn set_config_import_error(&self, error: String) {
        let _ = self.config_import_error.set(error);
    }

    /// Seconds since the snapshot was made (the agent's uptime).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn assemble(&self) -> Exposition {
        let mut body = Vec::with_capacity(64 * 1024);
        let mut meta = MetricSink::new();
        for slot in &self.slots {
            let state = read(&slot.state);
            body.extend_from_slice(&state.rendered);
            // No sample before its first result: "not collected yet" is not a failure.
            if slot.spec.internal || state.duration.is_none() {
                continue;
            }
            let labels = [("collector", slot.spec.name)];
            meta.gauge(
                "node_scrape_collector_duration_seconds",
                "node_exporter: Duration of a collector scrape.",
                &labels,
                state.duration.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            );
            meta.gauge(
                "node_scrape_collector_success",
                "node_exporter: Whether a collector succeeded.",
                &labels,
                if state.ok { 1.0 } else { 0.0 },
            );
        }
        let _ = nodewatch_http::encode_families(&meta.into_families(), &mut body);
        self.outputs.append_metrics(&mut body);
        body.extend_from_slice(&self.constant);
        Exposition::new(body)
    }
}

impl MetricsSource for Snapshot {
    fn exposition(&self) -> Arc<Exposition> {
        // Both counters only grow, so their sum changes whenever either does.
        let generation = self.generation.load(Ordering::Acquire) + self.outputs.generation();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, exposition)) = cache.as_ref()
            && *g == generation
        {
            return exposition.clone();
        }
        let exposition = Arc::new(self.assemble());
        *cache = Some((generation, exposition.clone()));
        exposition
    }

    fn health(&self) -> DetailedHealth {
        let now = SystemTime::now();
        let uptime = self.uptime();
        let mut collectors = std::collections::BTreeMap::new();
        let mut any_recent_success = false;
        let mut longest_interval = Duration::ZERO;
        let mut any_failing = false;
        for slot in self.slots.iter().filter(|s| !s.spec.internal) {
            let state = read(&slot.state);
            longest_interval = longest_interval.max(slot.interval);
            if let Some(t) = state.last_success
                && now.duration_since(t).unwrap_or_default() <= slot.interval * 3
            {
                any_recent_success = true;
            }
            if state.runs > 0 && !state.ok && !state.no_data {
                any_failing = true;
            }
            collectors.insert(
                slot.spec.name.to_string(),
                ComponentHealth {
                    ok: state.ok || state.no_data,
                    last_success_unix: state.last_success.map(crate::metrics::unix_seconds),
                    last_error: state.last_error.clone(),
                    duration_seconds: state.duration.map(|d| d.as_secs_f64()),
                },
            );
        }
        let outputs = self.outputs.health();
        any_failing |= outputs.values().any(|o| !o.ok);
        let import_error = self.config_import_error.get().cloned();
        any_failing |= import_error.is_some();
        let status = if !any_recent_success && uptime > longest_interval * 3 {
            HealthStatus::Unhealthy
        } else if any_failing {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        };
        DetailedHealth {
            status,
            version: self.version.clone(),
            uptime_seconds: uptime.as_secs_f64(),
            collectors,
            outputs,
            alerts: self
                .alerts_view
                .get()
                .map(|view| (view.0)())
                .unwrap_or_default(),
            config_import: Some(nodewatch_http::ConfigImportHealth {
                ok: import_error.is_none(),
                error: import_error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn settled_waits_for_every_run_begun() {
        let specs = ["loadavg", "arp"]
            .map(|name| {
                (
                    crate::collectors::spec(name).expect("spec"),
                    Duration::from_secs(2),
                )
            })
            .to_vec();
        let snapshot = Snapshot::new(specs);
        assert!(snapshot.settled().now_or_never().is_some(), "nothing begun");
        snapshot.begin_run(0);
        snapshot.begin_run(1);
        let mut settled = Box::pin(snapshot.settled());
        assert!((&mut settled).now_or_never().is_none());
        snapshot.store_success(0, Vec::new(), Duration::ZERO);
        assert!((&mut settled).now_or_never().is_none(), "one run still out");
        // A run skipped while a stuck one is out stores a failure without a begin: it
        // ends nothing.
        snapshot.store_failure(0, "stuck".into(), false, Duration::ZERO);
        assert!((&mut settled).now_or_never().is_none());
        snapshot.store_failure(1, "failed".into(), false, Duration::ZERO);
        assert!(settled.now_or_never().is_some(), "both stored");
        assert!(snapshot.settled().now_or_never().is_some());
    }
}
