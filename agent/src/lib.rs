//! nodewatch-agent: a small, fast drop-in for node_exporter on Raspberry Pi builder
//! nodes.
//!
//! # Layout
//! - [`cli`]: node_exporter-compatible flags and subcommands.
//! - [`config`]: the TOML configuration, its defaults and validation.
//! - [`paths`]: the procfs/sysfs/rootfs roots every read goes through.
//! - [`collectors`]: one module per collector, each plain blocking code.
//! - [`metrics`]: building metric families.
//! - [`scheduler`]: runs collectors in the background with intervals and timeouts.
//! - [`snapshot`]: the latest results and the cached `/metrics` body.
//! - [`alerts`]: local alert rules, evaluated on the snapshot; `rules export`.
//! - [`outputs`]: what the agent drives: the OLED display (simulated without one).
//! - [`http_client`]: the one HTTP client (plain HTTP GETs to local endpoints).
//! - [`remote_write`]: pushing metrics to a receiver, with a buffer on disk.
//! - [`daemon`]: wiring, the HTTP server and shutdown.
//!
//! Library errors are `thiserror` enums ([`collectors::CollectError`],
//! [`config::ConfigError`]); the binary and [`daemon`] use `anyhow`.

pub mod alerts;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod daemon;
pub mod http_client;
pub mod metrics;
pub mod outputs;
pub mod paths;
pub mod remote_write;
pub mod scheduler;
pub mod snapshot;

/// The target triple this binary was built for, for `nodewatch_build_info`.
pub const BUILD_TARGET: &str = env!("NODEWATCH_BUILD_TARGET");
