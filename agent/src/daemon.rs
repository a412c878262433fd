//! The running agent: collectors in the background, the HTTP server in front, and an
//! orderly shutdown on SIGTERM/SIGINT (in-flight scrapes finish, then exit 0).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::collectors::{self, BuildContext};
use crate::config::Config;
use crate::scheduler::{self, Scheduled};
use crate::snapshot::Snapshot;

/// Builds the snapshot and the scheduled collectors from a validated configuration.
pub fn prepare(config: &Config) -> anyhow::Result<(Arc<Snapshot>, Vec<Scheduled>)> {
    let roots = config.roots();
    let ctx = BuildContext {
        roots: &roots,
        config,
    };
    let mut slots = Vec::new();
    let mut scheduled = Vec::new();
    for (index, spec) in config.enabled_collectors().into_iter().enumerate() {
        let collector = collectors::build(spec, &ctx)?;
        let schedule = config.collectors.schedule.get(spec.name);
        let interval = schedule
            .and_then(|s| s.interval_secs)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| collectors::default_interval(spec.cadence, config));
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

/// Binds the configured listen address, with a hint when the port is taken.
pub async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let address = &config.web.listen_address;
    nodewatch_http::bind(address).await.map_err(|e| {
        let hint = match &e {
            nodewatch_http::Error::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                " (is node_exporter or another agent still running? Stop it, or pass --web.listen-address)"
            }
            _ => "",
        };
        anyhow::anyhow!("{e}{hint}")
    })
}

/// Runs until `shutdown` completes: collectors, then the server; returns after the
/// server has drained and the collectors have stopped.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (snapshot, scheduled) = prepare(&config)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut collectors = scheduler::spawn_all(scheduled, snapshot.clone(), stop_rx.clone());
    let alerts = crate::alerts::spawn(&config, snapshot.clone(), stop_rx.clone());
    let lora = crate::outputs::lora::spawn(&config, snapshot.clone(), stop_rx.clone());
    let acks = crate::alerts::buzzer::Acknowledgements::open(&config.state_dir);
    let button = crate::outputs::button::spawn(&config, stop_rx.clone());
    let display = crate::outputs::display::spawn(
        &config,
        snapshot.clone(),
        acks.clone(),
        button.as_ref().map(|b| b.subscribe()),
        stop_rx.clone(),
    );
    // Without a display, the buzzer's task acknowledges on a press.
    let buzzer = crate::outputs::buzzer::spawn(
        &config,
        snapshot.clone(),
        acks,
        button.as_ref().map(|b| b.subscribe()),
        display.is_none(),
        stop_rx.clone(),
    );
    let options = nodewatch_http::ServeOptions {
        telemetry_path: config.web.telemetry_path.clone(),
        max_requests: config.web.max_requests,
        title: "nodewatch agent".into(),
    };
    let mut router = nodewatch_http::router(snapshot.clone(), &options).merge(
        crate::alerts::test_alert::router(
            snapshot.clone(),
            config.node_name(),
            config.alerts.enabled,
        ),
    );
    let mut display_task = None;
    if let Some((frame, task)) = display {
        router = router.merge(crate::outputs::display::router(frame));
        display_task = Some(task);
    }
    let local = listener.local_addr().context("listener address")?;
    tracing::info!(address = %local, telemetry_path = options.telemetry_path.as_str(), "Listening.");
    let served = nodewatch_http::serve(listener, router, &options, shutdown).await;
    let _ = stop_tx.send(true);
    // The display blanks the panel before it ends.
    if let Some(task) = display_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    if let Some(task) = alerts {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    // The buzzer and LED are left off.
    if let Some(task) = buzzer {
        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
    }
    if let Some(task) = lora {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    // Collectors stop at their next await; a collector stuck in a system call is left
    // behind (its thread ends with the process).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while collectors.join_next().await.is_some() {}
    })
    .await;
    served.context("HTTP server")?;
    tracing::info!("Stopped.");
    Ok(())
}

/// Completes on SIGTERM or SIGINT (shared with the exporters).
pub use nodewatch_http::shutdown_signal;
