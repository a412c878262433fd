//! nodewatch-agent: a small, fast drop-in for node_exporter on Raspberry Pi builder
//! nodes.
//!
//! # Layout
//! Layers from the bottom; a module imports only its own layer and those below
//! (checked by `tests/tests/layers.rs`):
//!
//! 1. **Leaf types**: [`collect_error`] (why a read failed), [`paths`] (the
//!    procfs/sysfs/rootfs roots every read goes through), [`metrics`] (the metric
//!    sink), [`http_client`] (plain HTTP to local endpoints).
//! 2. **Collectors**: [`collectors`], one file per collector, each plain blocking
//!    code with its own `SPEC` (name, default, section, flags), listed once in
//!    [`collectors::ALL`].
//! 3. **Metric store**: [`snapshot`] (the latest results and the cached `/metrics`
//!    body), [`scheduler`] (runs collectors with intervals and timeouts),
//!    [`output_registry`] (the outputs' health and families).
//! 4. **Alert evaluation**: [`alerts`], rules evaluated on the store, and the
//!    [alert bus](alerts::bus) outputs subscribe to.
//! 5. **Outputs**: [`outputs`] (OLED, buzzer/LED/button, the LoRa link) and
//!    [`remote_write`] (pushing to a receiver, with a buffer on disk).
//! 6. **Daemon and CLI**: [`config`] (the TOML file; each component checks its own
//!    section), [`cli`] (node_exporter-compatible flags), [`daemon`] (wiring, the
//!    HTTP server and shutdown).
//!
//! Data path: collectors → store → `/metrics`; alerts: store → evaluation → alert
//! bus → outputs. Library errors are `thiserror` enums ([`collectors::CollectError`],
//! [`config::ConfigError`]); the binary and [`daemon`] use `anyhow`.

pub mod alerts;
pub mod cli;
pub mod collect_error;
pub mod collectors;
pub mod config;
pub mod daemon;
pub mod http_client;
pub mod metrics;
pub mod output_registry;
pub mod outputs;
pub mod paths;
pub mod remote_write;
pub mod scheduler;
pub mod snapshot;

/// The target triple this binary was built for, for `nodewatch_build_info`.
pub const BUILD_TARGET: &str = env!("NODEWATCH_BUILD_TARGET");
