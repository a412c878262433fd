//! The reward exporter: per builder, the claimable sITX read on chain, the ETH fee
//! rewards read by the INTMAX CLI (locally or over SSH, see [`crate::intmax_cli`]), and the
//! optional auto-claim ([`crate::claim`]).
//!
//! - **sITX**: `getClaimableReward(period, builder)` summed over the finished periods of
//!   the BlockBuilderReward contract, every node and period in one Multicall3
//!   `aggregate3` per refresh (a JSON-RPC batch when Multicall3 is absent), with the
//!   chain id checked inside it as for wallets.
//! - **ETH**: one loop (thread) per node with an `[nodes.eth]` source, so runs of a node
//!   never overlap and a slow node never holds up another; the last good value is kept
//!   and marked stale when a run fails.
//! - **Claims**: after a good read, a node whose claimable sITX reaches its threshold
//!   gets `batchClaimReward(periods with something to claim)` (a dry run by default).
//!
//! Families: the wiki's `intmax_builder_reward_eth{node}`,
//! `intmax_builder_reward_sitx{node}`, `intmax_builder_reward_total_eth`,
//! `intmax_builder_reward_check_success{node}`, `intmax_builder_reward_last_check`,
//! and nodewatch's `nodewatch_reward_*` (see [`RewardState::families`]). A value is
//! served only after a successful read: never a 0 for unknown.
//!
//! # Layout
//! - `settings`: the TOML file and the settings in effect ([`RewardConfig`]).
//! - `refresh`: the on-chain read of every node's claimable sITX.
//! - `claims`: auto-claim after a read.
//! - `eth`: the ETH source's loops.
//! - `families`: the families served.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use alloy_primitives::{Address, U256};

use crate::claim;
use crate::intmax_cli::CLI_ERROR_KINDS;
use crate::rpc::ERROR_KINDS;

mod claims;
mod eth;
mod families;
mod refresh;
mod settings;
#[cfg(test)]
mod tests;

pub use eth::StopOnDrop;
pub use settings::{
    DEFAULT_STATE_DIR, NodeConfig, REWARD_CONTRACT, RewardConfig, RewardFile, RewardNode,
};

/// A node's ETH source, as last run.
#[derive(Debug, Default)]
struct EthState {
    /// The last good value (ETH).
    value: Option<f64>,
    /// Unix time of the last good read.
    read_at: Option<f64>,
    /// Whether the last run succeeded.
    last_ok: Option<bool>,
    last_error: Option<String>,
    last_duration: Option<f64>,
    /// A run is in flight (runs never overlap).
    in_flight: bool,
    /// The process group of the run in flight, to kill on shutdown.
    running: Option<u32>,
    runs: u64,
    errors: BTreeMap<&'static str, u64>,
}

/// A node's auto-claim, as it went.
#[derive(Debug, Default)]
struct ClaimState {
    /// A claim is pending in the state dir.
    pending: bool,
    dry_runs: u64,
    sent: u64,
    /// Versions sent at the same nonce with higher fees.
    replacements: u64,
    /// Claims not sent, by the ceiling they exceeded.
    refused: BTreeMap<&'static str, u64>,
    confirmed: u64,
    claimed_sitx: f64,
    failures: BTreeMap<&'static str, u64>,
    /// Whether the last claim (or dry run, or receipt) went well.
    last_ok: Option<bool>,
    last_error: Option<String>,
}

/// The reward exporter's state.
#[derive(Debug)]
pub struct RewardState {
    config: RewardConfig,
    verified: Vec<bool>,
    /// Multicall3 in use; `None` once it turned out absent (or when configured so).
    multicall: Option<Address>,
    sitx: Vec<Option<f64>>,
    node_ok: Vec<Option<bool>>,
    eth: Vec<EthState>,
    claims: Vec<ClaimState>,
    periods_counted: Option<u64>,
    errors: BTreeMap<&'static str, u64>,
    requests: u64,
    last_check: Option<f64>,
    last_error: Option<String>,
    last_duration: Option<f64>,
    started: Instant,
}

/// What one read of the contract gave, per node: the claimable amount of each period
/// (raw units), or `None` if some period could not be read.
type Claimable = Vec<Option<Vec<(u64, U256)>>>;

impl RewardState {
    /// Nothing read yet.
    pub fn new(config: RewardConfig) -> RewardState {
        let n = config.nodes.len();
        RewardState {
            verified: vec![false; config.rpc.urls.len()],
            multicall: config.rpc.multicall,
            sitx: vec![None; n],
            node_ok: vec![None; n],
            eth: (0..n)
                .map(|_| EthState {
                    errors: CLI_ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
                    ..EthState::default()
                })
                .collect(),
            claims: (0..n)
                .map(|_| ClaimState {
                    failures: claim::FAILURE_STAGES.iter().map(|k| (*k, 0)).collect(),
                    refused: claim::REFUSAL_REASONS.iter().map(|k| (*k, 0)).collect(),
                    ..ClaimState::default()
                })
                .collect(),
            periods_counted: None,
            errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
            requests: 0,
            last_check: None,
            last_error: None,
            last_duration: None,
            started: Instant::now(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RewardConfig {
        &self.config
    }

    /// Whether node `n`'s sources all succeeded last time: `Some(false)` if one failed,
    /// `Some(true)` if all succeeded, `None` while one has not reported yet.
    fn node_success(&self, n: usize) -> Option<bool> {
        let chain = self.node_ok[n];
        let eth = if self.config.nodes[n].eth.is_some() {
            self.eth[n].last_ok
        } else {
            Some(true)
        };
        match (chain, eth) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        }
    }

    /// The detailed health report.
    pub fn health(&self) -> nodewatch_http::DetailedHealth {
        use nodewatch_http::{ComponentHealth, DetailedHealth, HealthStatus};
        let sitx_ok = !self.node_ok.is_empty() && self.node_ok.iter().all(|o| *o == Some(true));
        let mut collectors = BTreeMap::new();
        collectors.insert(
            "reward_sitx".to_string(),
            ComponentHealth {
                ok: sitx_ok,
                last_success_unix: self.last_check,
                last_error: self.last_error.clone(),
                duration_seconds: self.last_duration,
            },
        );
        for (n, node) in self.config.nodes.iter().enumerate() {
            if node.eth.is_some() {
                let eth = &self.eth[n];
                collectors.insert(
                    format!("reward_eth:{}", node.name),
                    ComponentHealth {
                        ok: eth.last_ok == Some(true),
                        last_success_unix: eth.read_at,
                        last_error: eth.last_error.clone(),
                        duration_seconds: eth.last_duration,
                    },
                );
            }
            if node.claim.is_some() {
                let c = &self.claims[n];
                collectors.insert(
                    format!("reward_claim:{}", node.name),
                    ComponentHealth {
                        ok: c.last_ok != Some(false),
                        last_success_unix: None,
                        last_error: c.last_error.clone(),
                        duration_seconds: None,
                    },
                );
            }
        }
        let all: Vec<Option<bool>> = (0..self.config.nodes.len())
            .map(|n| self.node_success(n))
            .collect();
        let any_value =
            self.sitx.iter().any(Option::is_some) || self.eth.iter().any(|e| e.value.is_some());
        let status = if all.iter().all(|o| *o == Some(true)) {
            HealthStatus::Healthy
        } else if any_value || all.iter().all(Option::is_none) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Unhealthy
        };
        DetailedHealth {
            status,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            collectors,
            outputs: BTreeMap::new(),
            alerts: Vec::new(),
            config_import: None,
        }
    }
}

/// Locks the state, poisoned or not.
pub fn lock(state: &Mutex<RewardState>) -> std::sync::MutexGuard<'_, RewardState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
