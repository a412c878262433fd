//! nodewatch's Scroll exporters (design §3), separate binaries never linked into the
//! agent.
//!
//! - [`config`]: the JSON-RPC settings both share ([`config::RpcSettings`]), the wallet
//!   exporter's TOML settings and the wiki's environment variables.
//! - [`rpc`]: a small blocking JSON-RPC client; errors sorted by kind.
//! - [`multicall`]: Multicall3 and ERC-20 ABI (alloy's `sol!`), exact unit conversion.
//! - [`wallet`]: the state, one-request refresh with endpoint failover, families, health.
//! - [`batch`]: the JSON-RPC batch both exporters fall back to without Multicall3.
//! - [`reward`]: the reward exporter: on-chain sITX (claimable per period), ETH from
//!   the INTMAX CLI ([`intmax_cli`], locally or over SSH), optional auto-claim ([`claim`]).
//! - [`server`]: the HTTP side through `nodewatch-http` and the refresh loop.
//! - [`telemetry`]: refresh durations and per-endpoint probes (height, lag, errors).

pub mod batch;
pub mod claim;
pub mod config;
pub mod intmax_cli;
pub mod multicall;
pub mod reward;
pub mod rpc;
pub mod server;
pub mod telemetry;
pub mod wallet;

/// Now, in unix seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
