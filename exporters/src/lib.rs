//! nodewatch's Scroll exporters (design §3), separate binaries never linked into the
//! agent.
//!
//! - [`config`]: the wallet exporter's TOML settings and the wiki's environment variables.
//! - [`rpc`]: a small blocking JSON-RPC client; errors sorted by kind.
//! - [`multicall`]: Multicall3 and ERC-20 ABI (alloy's `sol!`), exact unit conversion.
//! - [`wallet`]: the state, one-request refresh with endpoint failover, families, health.
//! - [`reward`]: the reward exporter's on-chain sITX source (claimable per period).
//! - [`server`]: the HTTP side through `nodewatch-http` and the refresh loop.

pub mod config;
pub mod multicall;
pub mod reward;
pub mod rpc;
pub mod server;
pub mod wallet;
