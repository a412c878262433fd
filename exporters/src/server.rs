//! Serving an exporter through `nodewatch-http`, and its refresh loop.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodewatch_http::{DetailedHealth, Exposition, MetricsSource, ServeOptions};
use prometheus::proto::MetricFamily;
use tokio::net::TcpListener;

use crate::config::RpcSettings;
use crate::reward::RewardState;
use crate::rpc::RpcClient;
use crate::telemetry::{self, Telemetry};
use crate::wallet::{RefreshOutcome, WalletState};

/// What the HTTP side and the refresh loop need from an exporter's state.
pub trait Exporter: Send + 'static {
    /// The JSON-RPC settings: endpoints (probed for their block height), refresh timing.
    fn rpc(&self) -> &RpcSettings;
    /// One refresh; blocking, run on the blocking pool.
    fn refresh(state: &Mutex<Self>, client: &RpcClient) -> RefreshOutcome
    where
        Self: Sized;
    /// The families to serve now.
    fn families(&self) -> Vec<MetricFamily>;
    /// The detailed health report.
    fn health(&self) -> DetailedHealth;
    /// Starts work beside the refresh loop (the reward exporter's ETH source); it stops
    /// when the returned guard is dropped.
    fn start_background(_state: &Arc<Mutex<Self>>) -> Option<Box<dyn std::any::Any + Send>>
    where
        Self: Sized,
    {
        None
    }
    /// At shutdown: ends what is in flight (child processes).
    fn stop_background(&self) {}
}

impl Exporter for WalletState {
    fn rpc(&self) -> &RpcSettings {
        &self.config().rpc
    }
    fn refresh(state: &Mutex<Self>, client: &RpcClient) -> RefreshOutcome {
        WalletState::refresh(state, client)
    }
    fn families(&self) -> Vec<MetricFamily> {
        WalletState::families(self)
    }
    fn health(&self) -> DetailedHealth {
        WalletState::health(self)
    }
}

impl Exporter for RewardState {
    fn rpc(&self) -> &RpcSettings {
        &self.config().rpc
    }
    fn refresh(state: &Mutex<Self>, client: &RpcClient) -> RefreshOutcome {
        RewardState::refresh(state, client)
    }
    fn families(&self) -> Vec<MetricFamily> {
        RewardState::families(self)
    }
    fn health(&self) -> DetailedHealth {
        RewardState::health(self)
    }
    fn start_background(state: &Arc<Mutex<Self>>) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(RewardState::start_eth_loops(state)))
    }
    fn stop_background(&self) {
        self.kill_runs();
    }
}

fn lock<E>(state: &Mutex<E>) -> std::sync::MutexGuard<'_, E> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The [`MetricsSource`] of an exporter: renders the state on each scrape, so data ages
/// are current (the body is small).
#[derive(Debug)]
pub struct Source<E> {
    /// The shared state.
    pub state: Arc<Mutex<E>>,
    /// Refresh durations and endpoint probes.
    pub telemetry: Arc<Mutex<Telemetry>>,
}

impl<E: Exporter> MetricsSource for Source<E> {
    fn exposition(&self) -> Arc<Exposition> {
        let mut families = lock(&self.state).families();
        families.extend(telemetry::lock(&self.telemetry).families());
        let mut body = Vec::with_capacity(4096);
        if let Err(e) = nodewatch_http::encode_families(&families, &mut body) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        Arc::new(Exposition::new(body))
    }

    fn health(&self) -> DetailedHealth {
        lock(&self.state).health()
    }
}

/// Refreshes until `stop` fires: every interval after a success; after a failure,
/// after the first retry delay doubling up to the interval, and never before a 429's
/// `Retry-After`.
pub async fn refresh_loop<E: Exporter>(
    state: Arc<Mutex<E>>,
    telemetry: Arc<Mutex<Telemetry>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (interval, retry, timeout) = {
        let s = lock(&state);
        (s.rpc().interval, s.rpc().retry, s.rpc().request_timeout)
    };
    let client = RpcClient::new(timeout);
    let mut backoff = retry;
    loop {
        let (s, c, t) = (state.clone(), client.clone(), telemetry.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let outcome = E::refresh(&s, &c);
            telemetry::lock(&t).observe_refresh(started.elapsed().as_secs_f64(), outcome.ok);
            outcome
        })
        .await;
        let delay = match outcome {
            Ok(o) if o.ok => {
                backoff = retry;
                interval
            }
            Ok(o) => {
                let delay = backoff.min(interval);
                backoff = (backoff * 2).min(interval);
                delay.max(o.retry_after.unwrap_or(Duration::ZERO))
            }
            Err(e) => {
                tracing::error!(error = %e, "refresh task failed");
                interval
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Probes every endpoint's block height every `interval`, the first time one interval
/// after start: a request per endpoint of its own, so they are rarer than refreshes by
/// default and never delay one.
pub async fn probe_loop(
    telemetry: Arc<Mutex<Telemetry>>,
    interval: Duration,
    timeout: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = RpcClient::new(timeout);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let (t, c) = (telemetry.clone(), client.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || Telemetry::probe(&t, &c)).await {
            tracing::error!(error = %e, "probe task failed");
        }
    }
}

/// Serves `state` on `listener` and refreshes it until `shutdown` completes.
pub async fn run<E: Exporter>(
    state: Arc<Mutex<E>>,
    listener: TcpListener,
    title: &str,
    server: nodewatch_http::ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), nodewatch_http::Error> {
    let options = ServeOptions {
        telemetry_path: "/metrics".into(),
        max_requests: 40,
        title: title.into(),
        server,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let telemetry = Arc::new(Mutex::new(Telemetry::new(&lock(&state).rpc().urls)));
    let refresher = tokio::spawn(refresh_loop(
        state.clone(),
        telemetry.clone(),
        stop_rx.clone(),
    ));
    let (probe_interval, timeout) = {
        let s = lock(&state);
        (s.rpc().probe_interval, s.rpc().request_timeout)
    };
    let prober = tokio::spawn(probe_loop(
        telemetry.clone(),
        probe_interval,
        timeout,
        stop_rx,
    ));
    let background = E::start_background(&state);
    let router = nodewatch_http::router(
        Arc::new(Source {
            state: state.clone(),
            telemetry,
        }),
        &options,
    );
    let result = nodewatch_http::serve(listener, router, &options, shutdown).await;
    let _ = stop_tx.send(true);
    // A refresh in flight on the blocking pool is not waited for: its answer is moot.
    refresher.abort();
    prober.abort();
    drop(background);
    lock(&state).stop_background();
    result
}

/// What both exporter binaries do after reading their settings: a small runtime, bind
/// `listen_address` (logged), serve until SIGTERM/SIGINT, then stop. `web` holds the
/// `--web.*` flags (`--web.config.file`, connection limits); a bad web config stops
/// the start with status 78.
pub fn serve_main<E: Exporter>(
    listen_address: &str,
    web: &nodewatch_http::WebFlags,
    state: E,
    title: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let server = web.settings();
    if let Some(path) = &server.web_config_file {
        nodewatch_http::web_config::load(path).map_err(nodewatch_http::Error::from)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    runtime.block_on(async move {
        let listener = nodewatch_http::bind(listen_address).await?;
        let address = listener.local_addr().context("listener address")?;
        // Handlers first: a SIGTERM right after "Listening." stops, not kills.
        let shutdown = nodewatch_http::systemd::stopping_after(shutdown_signal());
        tracing::info!(address = %address, "Listening.");
        // systemd (Type=notify): pings from this runtime, ready once bound.
        let _watchdog = nodewatch_http::systemd::start_watchdog();
        nodewatch_http::systemd::notify_ready(&format!("Serving metrics on {address}."));
        run(
            Arc::new(Mutex::new(state)),
            listener,
            title,
            server,
            shutdown,
        )
        .await?;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub use nodewatch_http::shutdown_signal;

/// Prints a settings or command-line error and returns the status systemd units do
/// not restart on (78, `EX_CONFIG`).
pub fn config_error(program: &str, error: &dyn std::fmt::Display) -> std::process::ExitCode {
    eprintln!("{program}: error: {error:#}");
    std::process::ExitCode::from(nodewatch_http::systemd::EXIT_CONFIG)
}

/// Command-line errors are settings errors (78); `--help` and `--version` succeed.
pub fn usage_error(error: &clap::Error) -> std::process::ExitCode {
    let _ = error.print();
    if error.use_stderr() {
        std::process::ExitCode::from(nodewatch_http::systemd::EXIT_CONFIG)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The exit status of [`serve_main`]'s outcome, its error printed: 98 when the port is
/// taken (with a hint), 78 for a malformed listen address, 1 otherwise.
pub fn exit_status(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    let Err(error) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    let code = error
        .downcast_ref::<nodewatch_http::Error>()
        .map(nodewatch_http::systemd::bind_exit_code)
        .unwrap_or(1);
    let hint = if code == nodewatch_http::systemd::EXIT_ADDRESS_IN_USE {
        " (is another instance still running? Stop it, or pass --web.listen-address)"
    } else {
        ""
    };
    eprintln!("{program}: error: {error:#}{hint}");
    std::process::ExitCode::from(code)
}
