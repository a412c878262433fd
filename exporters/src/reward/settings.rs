//! The reward exporter's settings: the TOML file (`config/reward-exporter.toml`) and
//! the settings in effect, checked at start.

use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use serde::Deserialize;

use crate::claim::{ClaimConfig, ClaimFile};
use crate::config::{ConfigError, EndpointRule, RpcKeys, RpcSettings};
use crate::intmax_cli::{EthFile, EthSource};

/// The BlockBuilderReward contract on Scroll mainnet (design §3).
pub const REWARD_CONTRACT: &str = "0xFe9Fca6e5AE58E6F06873D2beFB658424Ae07109";

/// Where the pending claims are kept: the package's StateDirectory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nodewatch-exporters";

/// The TOML file; see `config/reward-exporter.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardFile {
    /// Listen address (default `:9102`).
    pub listen_address: Option<String>,
    /// JSON-RPC URLs, tried in order.
    pub rpc_urls: Option<Vec<String>>,
    /// Expected chain id (default 534352).
    pub chain_id: Option<u64>,
    /// Seconds between refreshes (default 300).
    pub interval_seconds: Option<u64>,
    /// Timeout of one request (default 10).
    pub request_timeout_seconds: Option<u64>,
    /// First retry after a failure (default 5).
    pub retry_seconds: Option<u64>,
    /// Between the block-height probes of every endpoint (default 60; the first one
    /// interval after start).
    pub probe_interval_seconds: Option<u64>,
    /// Multicall3's address; `""` reads with a JSON-RPC batch instead.
    pub multicall_address: Option<String>,
    /// The BlockBuilderReward contract.
    pub reward_contract: Option<String>,
    /// Unix time period 0 starts (required: it differs between deployments).
    pub period_start_unix: u64,
    /// Length of a period (default 604800, a week).
    pub period_seconds: Option<u64>,
    /// The first period counted (default 0).
    pub first_period: Option<u64>,
    /// Seconds between two ETH runs of a node, counted from the end of a run
    /// (default 600).
    pub eth_interval_seconds: Option<u64>,
    /// The SSH client (default `ssh`, found on PATH).
    pub ssh_program: Option<String>,
    /// Where pending claims are kept (default `/var/lib/nodewatch-exporters`).
    pub state_dir: Option<String>,
    /// The builders.
    pub nodes: Vec<RewardNode>,
}

/// One builder.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewardNode {
    /// The `node` label.
    pub name: String,
    /// The builder's address (the `user` of `getClaimableReward`).
    pub address: String,
    /// The ETH source: the INTMAX CLI, locally or over SSH.
    pub eth: Option<EthFile>,
    /// Auto-claim.
    pub claim: Option<ClaimFile>,
}

/// One builder, validated.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The `node` label.
    pub name: String,
    /// Its address.
    pub address: Address,
    /// Its ETH source, if any.
    pub eth: Option<EthSource>,
    /// Its auto-claim, if any.
    pub claim: Option<ClaimConfig>,
}

/// The settings in effect.
#[derive(Debug, Clone)]
pub struct RewardConfig {
    /// Listen address.
    pub listen_address: String,
    /// Endpoints, chain, refresh timing, Multicall3.
    pub rpc: RpcSettings,
    /// BlockBuilderReward.
    pub contract: Address,
    /// Start of period 0.
    pub period_start_unix: u64,
    /// Period length in seconds.
    pub period_seconds: u64,
    /// First period counted.
    pub first_period: u64,
    /// Between two ETH runs of a node.
    pub eth_interval: Duration,
    /// The SSH client.
    pub ssh_program: String,
    /// The builders.
    pub nodes: Vec<NodeConfig>,
}

fn invalid(setting: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message,
    }
}

fn address(setting: &str, text: &str) -> Result<Address, ConfigError> {
    let text = text.trim();
    if text.len() != 42 || !text.starts_with("0x") {
        return Err(invalid(setting, format!("{text:?} is not a 0x… address")));
    }
    text.parse()
        .map_err(|e| invalid(setting, format!("{text:?}: {e}")))
}

impl RewardFile {
    /// The JSON-RPC keys, shared with the wallet exporter's file.
    fn rpc_keys(&mut self) -> RpcKeys {
        RpcKeys {
            rpc_urls: self.rpc_urls.take(),
            chain_id: self.chain_id,
            interval_seconds: self.interval_seconds,
            request_timeout_seconds: self.request_timeout_seconds,
            retry_seconds: self.retry_seconds,
            probe_interval_seconds: self.probe_interval_seconds,
            multicall_address: self.multicall_address.take(),
        }
    }
}

/// Validates `[[nodes]]`: at least one, names unique, their ETH source and auto-claim.
fn nodes(file: &[RewardNode], state_dir: &Path) -> Result<Vec<NodeConfig>, ConfigError> {
    if file.is_empty() {
        return Err(invalid("nodes", "list at least one builder".into()));
    }
    let mut nodes: Vec<NodeConfig> = Vec::with_capacity(file.len());
    for (i, n) in file.iter().enumerate() {
        let name = n.name.trim().to_string();
        if name.is_empty() {
            return Err(invalid(
                &format!("nodes[{i}].name"),
                "must not be empty".into(),
            ));
        }
        if nodes.iter().any(|o| o.name == name) {
            return Err(invalid(
                &format!("nodes[{i}].name"),
                format!("{name:?} is used twice"),
            ));
        }
        let builder = address(&format!("nodes[{i}].address"), &n.address)?;
        let eth = n
            .eth
            .as_ref()
            .map(|e| EthSource::resolve(i, e))
            .transpose()?;
        let claim = n
            .claim
            .as_ref()
            .map(|c| ClaimConfig::resolve(i, builder, c, state_dir))
            .transpose()?;
        nodes.push(NodeConfig {
            name,
            address: builder,
            eth,
            claim,
        });
    }
    Ok(nodes)
}

impl RewardConfig {
    /// Reads and validates the TOML file (key files of auto-claim included).
    pub fn load(path: &Path) -> Result<RewardConfig, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        let file: RewardFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: name,
            message: e.to_string(),
        })?;
        RewardConfig::resolve(file)
    }

    /// Validates a parsed file and applies the defaults.
    pub fn resolve(mut file: RewardFile) -> Result<RewardConfig, ConfigError> {
        let rpc = RpcSettings::resolve(
            file.rpc_keys(),
            EndpointRule::HttpsOrLoopback,
            "interval_seconds",
        )?;
        let state_dir =
            std::path::PathBuf::from(file.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR));
        if !state_dir.is_absolute() {
            return Err(invalid(
                "state_dir",
                format!("{} is not an absolute path", state_dir.display()),
            ));
        }
        let period_seconds = file.period_seconds.unwrap_or(604_800);
        if period_seconds == 0 {
            return Err(invalid("period_seconds", "must be at least 1".into()));
        }
        let nodes = nodes(&file.nodes, &state_dir)?;
        let ssh_program = file.ssh_program.unwrap_or_else(|| "ssh".into());
        if ssh_program.trim().is_empty() {
            return Err(invalid("ssh_program", "must not be empty".into()));
        }
        // It is the command line's first word, which any user of the machine can read.
        if crate::intmax_cli::looks_like_key(&ssh_program) {
            return Err(invalid(
                "ssh_program",
                "holds what looks like a private key (64 hex digits in a row)".into(),
            ));
        }
        let eth_interval = match file.eth_interval_seconds.unwrap_or(600) {
            0 => return Err(invalid("eth_interval_seconds", "must be at least 1".into())),
            v => Duration::from_secs(v),
        };
        Ok(RewardConfig {
            listen_address: file.listen_address.unwrap_or_else(|| ":9102".into()),
            rpc,
            contract: address(
                "reward_contract",
                file.reward_contract.as_deref().unwrap_or(REWARD_CONTRACT),
            )?,
            period_start_unix: file.period_start_unix,
            period_seconds,
            first_period: file.first_period.unwrap_or(0),
            eth_interval,
            ssh_program,
            nodes,
        })
    }

    /// The finished periods at `now` (unix seconds): `first_period` up to, not
    /// including, the current one, which is never counted (claims revert with
    /// PeriodNotEnded).
    pub fn finished_periods(&self, now: u64) -> std::ops::Range<u64> {
        let current = now.saturating_sub(self.period_start_unix) / self.period_seconds;
        let current = if now < self.period_start_unix {
            0
        } else {
            current
        };
        self.first_period..current.max(self.first_period)
    }
}
