//! Shared HTTP plumbing of nodewatch's binaries: the agent and the Scroll exporters.
//!
//! # Layout
//! - [`web_config`]: `--web.config.file` (exporter-toolkit's YAML): parsing, loading
//!   the certificates into rustls, reloading when the files change.
//! - [`limits`]: connection cap, timeouts, size limits, `RLIMIT_NOFILE`, and the
//!   `--web.*` flags every binary shares ([`WebFlags`]).
//! - `connections`: each open connection's state, eviction at the cap, the timeouts.
//! - `auth`: basic auth (bcrypt) and the configured response headers.
//! - [`exposition`]: Prometheus text rendering with the `prometheus` crate, cached per
//!   snapshot together with its gzip form, so a scrape only copies bytes.
//! - [`metric_sink`]: the [`MetricSink`] the agent's collectors and the exporters write
//!   their samples into.
//! - [`health`]: the JSON bodies of `/api/health` and `/api/health/detailed`.
//! - [`logging`]: `--log.format` (logfmt or JSON lines) for every binary.
//! - [`requests`]: request counts and durations by route (`nodewatch_http_*`).
//! - [`server`]: the axum router (`/metrics`, health, landing page), the
//!   `--web.max-requests` limit and graceful shutdown.
//! - [`systemd`]: READY/WATCHDOG/STOPPING notifications and the exit codes units use.
//!
//! Errors are a `thiserror` enum ([`Error`]); binaries wrap them with `anyhow`.

mod auth;
mod connections;
pub mod exposition;
pub mod health;
pub mod limits;
pub mod logging;
pub mod metric_sink;
pub mod requests;
pub mod server;
pub mod systemd;
pub mod web_config;

pub use connections::ConnectionMetrics;
pub use limits::{Limits, ServerSettings, WebFlags};
pub use web_config::WebConfigError;

pub use exposition::{Exposition, encode_families, metric_with_labels};
pub use health::{ComponentHealth, ConfigImportHealth, DetailedHealth, HealthStatus, OutputHealth};
pub use metric_sink::MetricSink;
pub use requests::RequestMetrics;
pub use server::{MetricsSource, ServeOptions, bind, router, serve, shutdown_signal};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be parsed.
    #[error("invalid listen address {address:?}: {reason}")]
    ListenAddress {
        /// The address as given.
        address: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Binding the listener failed (port taken, permission denied, ...).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address we tried.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server error: {0}")]
    Serve(#[from] std::io::Error),
    /// The web config file is invalid (stops the start; exit status 78).
    #[error("invalid web config: {0}")]
    WebConfig(#[from] WebConfigError),
    /// The `prometheus` crate refused to encode a family.
    #[error("cannot encode metrics: {0}")]
    Encode(#[from] prometheus::Error),
}
