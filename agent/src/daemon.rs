//! The running agent: collectors in the background, the HTTP server in front, and an
//! orderly shutdown on SIGTERM/SIGINT (in-flight scrapes finish, then exit 0).
//!
//! Under systemd (`Type=notify`) it sends `READY=1` once the first scrape is complete
//! (every collector has reported once, or its timeout passed), pings the watchdog from
//! the serving runtime, and sends `STOPPING=1` when shutdown starts.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::collectors::{self, BuildContext};
use crate::config::Config;
use crate::scheduler::{self, Scheduled};
use crate::snapshot::Snapshot;

/// Builds the snapshot and the scheduled collectors from a validated configuration.
pub fn prepare(config: &Config) -> anyhow::Result<(Arc<Snapshot>, Vec<Scheduled>)> {
    let roots = config.roots();
    let sections = config.collector_sections();
    let node = config.node_name();
    let ctx = BuildContext {
        roots: &roots,
        sections: &sections,
        node: &node,
    };
    let system_interval = Duration::from_secs_f64(config.collectors.interval_secs);
    let mut slots = Vec::new();
    let mut scheduled = Vec::new();
    for (index, spec) in config.enabled_collectors().into_iter().enumerate() {
        let collector = collectors::build(spec, &ctx)?;
        let schedule = config.collectors.schedule.get(spec.name);
        let interval = schedule
            .and_then(|s| s.interval_secs)
            .map(Duration::from_secs_f64)
            .or_else(|| collector.interval())
            .unwrap_or(system_interval);
        let timeout = Duration::from_secs_f64(
            schedule
                .and_then(|s| s.timeout_secs)
                .unwrap_or(config.collectors.timeout_secs),
        );
        slots.push((spec, interval));
        scheduled.push(Scheduled {
            index,
            collector: Arc::from(collector),
            interval,
            timeout,
        });
    }
    Ok((Arc::new(Snapshot::new(slots)), scheduled))
}

/// The listen address could not be bound.
#[derive(Debug)]
pub struct BindError(nodewatch_http::Error);

impl BindError {
    /// The exit status systemd units act on (98: the port is taken; 78: a malformed
    /// address; see `nodewatch_http::systemd`).
    pub fn exit_code(&self) -> u8 {
        nodewatch_http::systemd::bind_exit_code(&self.0)
    }
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        if self.exit_code() == nodewatch_http::systemd::EXIT_ADDRESS_IN_USE {
            write!(
                f,
                " (is node_exporter or another agent still running? Stop it, or pass --web.listen-address)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for BindError {}

/// Binds the configured listen address, with a hint when the port is taken.
pub async fn bind(config: &Config) -> Result<TcpListener, BindError> {
    nodewatch_http::bind(&config.web.listen_address)
        .await
        .map_err(BindError)
}

/// The file in `state_dir` where the Pi image's first-boot import leaves
/// `check-config`'s message when it refused the boot partition's `agent.toml`.
pub const CONFIG_IMPORT_ERROR_FILE: &str = "config-import-error";
/// Most of that file shown (a message is a few lines).
const CONFIG_IMPORT_ERROR_MAX: u64 = 4096;

/// The refused first-boot import's message, if the file is there. A file that cannot
/// be read still means the import failed, and says why it cannot be shown.
pub fn read_config_import_error(state_dir: &Path) -> Option<String> {
    use std::io::Read;
    let path = state_dir.join(CONFIG_IMPORT_ERROR_FILE);
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&path)
        .and_then(|file| file.take(CONFIG_IMPORT_ERROR_MAX).read_to_end(&mut bytes));
    // Cut at the cap, a message may end mid-character.
    let text = String::from_utf8_lossy(&bytes);
    match read {
        Ok(_) if text.trim().is_empty() => Some(format!(
            "the first-boot import refused the configuration ({} is empty)",
            path.display()
        )),
        Ok(_) => Some(text.trim_end().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!(
            "the first-boot import left {} but it cannot be read: {e}",
            path.display()
        )),
    }
}

/// Publishes the first-boot import's outcome: health (`config_import`, degraded while
/// it failed), `nodewatch_config_import_error`, and a warning in the log.
fn report_config_import(config: &Config, snapshot: &Snapshot) {
    let error = read_config_import_error(&config.state_dir);
    if let Some(text) = &error {
        tracing::warn!(
            error = text.as_str(),
            "The configuration from the boot partition was refused at first boot; running the shipped configuration."
        );
        snapshot.set_config_import_error(text.clone());
    }
    let mut sink = crate::metrics::MetricSink::new();
    sink.gauge(
        "nodewatch_config_import_error",
        "1 if the first-boot import refused the configuration on the boot partition (see /api/health/detailed).",
        &[],
        if error.is_some() { 1.0 } else { 0.0 },
    );
    // The outputs' registry is the snapshot's place for families no collector writes.
    snapshot
        .outputs()
        .set_metrics("config_import", &sink.into_families());
}

/// Once every collector has reported once (the first scrape is then complete), or
/// after `bound` (a collector's timeout) at the latest: opens `first_round` to the
/// scrapes held back by [`complete_first_scrape`] and sends `READY=1`.
async fn notify_ready_after_first_collection(
    snapshot: Arc<Snapshot>,
    bound: Duration,
    address: SocketAddr,
    first_round: watch::Sender<bool>,
) {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline
        && !snapshot
            .slots()
            .iter()
            .all(|slot| slot.state().duration.is_some())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first_round.send_replace(true);
    nodewatch_http::systemd::notify_ready(&format!("Serving metrics on {address}."));
}

/// Holds a scrape of `telemetry_path` until the first collection round has ended, so
/// the first answer is as complete as node_exporter's; the wait is bounded by the
/// round's own bound (see [`notify_ready_after_first_collection`]).
fn complete_scrapes(
    router: axum::Router,
    telemetry_path: String,
    first_round: watch::Receiver<bool>,
    on_demand: Arc<scheduler::OnDemand>,
) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let mut first_round = first_round.clone();
            let on_demand = on_demand.clone();
            let is_scrape = request.uri().path() == telemetry_path;
            async move {
                if is_scrape {
                    // An error means the notifier ended early (shutdown): serve anyway.
                    let _ = first_round.wait_for(|done| *done).await;
                    on_demand.refresh().await;
                }
                next.run(request).await
            }
        },
    ))
}

/// What stays on the fast tick: the families the alert rules read (when local
/// alerting is on) and the collectors the display reads (when it is on).
pub fn fast_set(config: &Config) -> scheduler::FastSet {
    let mut fast = scheduler::FastSet {
        all: !config.collectors.on_demand,
        ..scheduler::FastSet::default()
    };
    if config.alerts.enabled {
        // Rules were checked by `Config::parse`; one that fails here is left out by the
        // evaluator too.
        for rule in crate::alerts::compile(&config.alerts).unwrap_or_default() {
            let pace = rule.sample_pace();
            for name in rule.metric_names() {
                fast.families
                    .entry(name.to_string())
                    .and_modify(|p| *p = (*p).min(pace))
                    .or_insert(pace);
            }
        }
    }
    if config.display.enabled {
        fast.collectors.extend(
            crate::outputs::oled::COLLECTORS_READ
                .iter()
                .map(|c| c.to_string()),
        );
    }
    fast
}

/// Runs until `shutdown` completes: collectors, then the server; returns after the
/// server has drained and the collectors have stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (snapshot, scheduled) = prepare(&config)?;
    report_config_import(&config, &snapshot);
    // The first runs go one after another, each ending by its timeout (a stuck one
    // leaves the rest to a new thread).
    let first_collection_bound = scheduled
        .iter()
        .map(|s| s.timeout)
        .max()
        .unwrap_or_default()
        + Duration::from_secs(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (mut collectors, on_demand) = scheduler::spawn_all(
        scheduled,
        snapshot.clone(),
        fast_set(&config),
        stop_rx.clone(),
    );
    let mut tasks = Tasks::spawn(&config, &snapshot, &on_demand, &stop_rx);
    let options = nodewatch_http::ServeOptions {
        telemetry_path: config.web.telemetry_path.clone(),
        max_requests: config.web.max_requests,
        title: "nodewatch agent".into(),
        server: config.web.server.clone(),
    };
    let mut router = nodewatch_http::router(snapshot.clone(), &options).merge(
        crate::alerts::test_alert::router(
            tasks.bus.clone(),
            snapshot.clone(),
            config.node_name(),
            config.alerts.enabled,
        ),
    );
    if let Some(frame) = tasks.display_frame.take() {
        router = router.merge(crate::outputs::oled::router(frame));
    }
    let (first_round_tx, first_round) = watch::channel(false);
    let router = complete_scrapes(
        router,
        options.telemetry_path.clone(),
        first_round,
        on_demand,
    );
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(address = %local, telemetry_path = options.telemetry_path.as_str(), "Listening.");
    let watchdog = nodewatch_http::systemd::start_watchdog();
    let ready = tokio::spawn(notify_ready_after_first_collection(
        snapshot.clone(),
        first_collection_bound,
        local,
        first_round_tx,
    ));
    let shutdown = nodewatch_http::systemd::stopping_after(shutdown);
    let served = nodewatch_http::serve(listener, router, &options, shutdown).await;
    ready.abort();
    let _ = stop_tx.send(true);
    tasks.stop().await;
    // Collectors stop at their next await; a collector stuck in a system call is left
    // behind (its thread ends with the process).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while collectors.join_next().await.is_some() {}
    })
    .await;
    drop(watchdog);
    served.context("HTTP server")?;
    tracing::info!("Stopped.");
    Ok(())
}

/// The tasks that follow the store and the alert bus: alert evaluation, the outputs
/// and remote_write.
struct Tasks {
    bus: Arc<crate::alerts::bus::AlertBus>,
    alerts: Option<JoinHandle<()>>,
    lora: Option<JoinHandle<()>>,
    remote_write: Option<JoinHandle<()>>,
    display: Option<JoinHandle<()>>,
    /// `/display.png`'s frame, taken by the router.
    display_frame: Option<Arc<crate::outputs::oled::DisplayShared>>,
    buzzer: Option<JoinHandle<()>>,
}

impl Tasks {
    /// Starts each task its section turns on, each given its own section.
    fn spawn(
        config: &Config,
        snapshot: &Arc<Snapshot>,
        on_demand: &Arc<scheduler::OnDemand>,
        stop: &watch::Receiver<bool>,
    ) -> Self {
        let node_name = config.node_name();
        let bus = Arc::new(crate::alerts::bus::AlertBus::default());
        bus.show_in_health(snapshot);
        let alerts =
            crate::alerts::spawn(&config.alerts, snapshot.clone(), bus.clone(), stop.clone());
        let lora = crate::outputs::lora_link::spawn(
            &config.lora,
            node_name.clone(),
            config.state_dir.clone(),
            snapshot.clone(),
            bus.clone(),
            stop.clone(),
        );
        let remote_write = crate::remote_write::spawn(
            config.remote_write.as_ref(),
            &node_name,
            &config.state_dir,
            crate::remote_write::Source {
                snapshot: snapshot.clone(),
                on_demand: on_demand.clone(),
            },
            stop.clone(),
        );
        let acks = crate::alerts::sound::Acknowledgements::open(&config.state_dir);
        for warning in config.deprecation_warnings() {
            tracing::warn!("{warning}");
        }
        let button = crate::outputs::button::spawn(
            &config.button_in_effect(),
            config.display.enabled || config.alerts.enabled,
            snapshot.outputs(),
            stop.clone(),
        );
        let display = crate::outputs::oled::spawn(
            &config.display,
            &node_name,
            crate::outputs::oled::DisplayInputs {
                snapshot: snapshot.clone(),
                alerts: bus.clone(),
                acks: acks.clone(),
                buttons: button.as_ref().map(|b| b.subscribe()),
                on_demand: Some(on_demand.clone()),
            },
            stop.clone(),
        );
        // Without a display, the buzzer's task acknowledges on a press.
        let buzzer = crate::outputs::buzzer::spawn(
            &config.alerts,
            snapshot.clone(),
            bus.clone(),
            acks,
            button.as_ref().map(|b| b.subscribe()),
            display.is_none(),
            stop.clone(),
        );
        let (display_frame, display) = display.unzip();
        Self {
            bus,
            alerts,
            lora,
            remote_write,
            display,
            display_frame,
            buzzer,
        }
    }

    /// Waits for each task to end after `stop` turned true, each within its deadline.
    async fn stop(self) {
        let wait = |task: Option<JoinHandle<()>>, secs: u64| async move {
            if let Some(task) = task {
                let _ = tokio::time::timeout(Duration::from_secs(secs), task).await;
            }
        };
        // The display blanks the panel before it ends.
        wait(self.display, 2).await;
        wait(self.alerts, 1).await;
        // The buzzer and LED are left off.
        wait(self.buzzer, 1).await;
        wait(self.lora, 2).await;
        // The buffer is on disk: an unsent batch waits for the next start.
        wait(self.remote_write, 2).await;
    }
}

/// Completes on SIGTERM or SIGINT (shared with the exporters).
pub use nodewatch_http::shutdown_signal;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_a_rule_reads_is_paced_by_the_most_demanding_rule() {
        let text = "[[alerts.rules]]\nname = \"LoadNow\"\nexpr = \"node_load1 > 4\"\nseverity = \"warning\"\n\
                    [[alerts.rules]]\nname = \"LoadLong\"\nexpr = \"node_load1 > 2\"\nseverity = \"warning\"\n\
                    for_secs = 600\n";
        let config = Config::parse(text, Path::new("agent.toml")).expect("config");
        let fast = fast_set(&config);
        let pace = |name: &str| fast.families.get(name).copied();
        // The built-in rules: a fifth of their `for`, at most 15 s.
        assert_eq!(
            pace("node_memory_MemAvailable_bytes"),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            pace("node_thermal_zone_temp"),
            Some(Duration::from_secs(12))
        );
        assert_eq!(pace("nodewatch_pi_throttled"), Some(Duration::from_secs(1)));
        // Read by a rule without `for` and by one with: every collection.
        assert_eq!(pace("node_load1"), Some(Duration::ZERO));
        assert_eq!(pace("node_cpu_seconds_total"), None, "read by no rule");
    }

    #[test]
    fn config_import_error_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_config_import_error(dir.path()), None);
        let path = dir.path().join(CONFIG_IMPORT_ERROR_FILE);
        std::fs::write(&path, "agent.toml:3:1: unknown field `max_request`\n\n").expect("write");
        assert_eq!(
            read_config_import_error(dir.path()).as_deref(),
            Some("agent.toml:3:1: unknown field `max_request`")
        );
        std::fs::write(&path, "").expect("write");
        let empty = read_config_import_error(dir.path()).expect("an empty file is a failure");
        assert!(empty.contains("is empty"), "{empty}");
        // Much more than a message: only the start is kept.
        std::fs::write(&path, "x".repeat(100_000)).expect("write");
        let long = read_config_import_error(dir.path()).expect("error");
        assert_eq!(long.len(), CONFIG_IMPORT_ERROR_MAX as usize);
    }
}
