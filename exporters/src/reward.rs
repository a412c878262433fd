//! The reward exporter's on-chain source: claimable sITX per builder, summed over the
//! finished, unclaimed periods of the BlockBuilderReward contract, read in one
//! Multicall3 `aggregate3` per refresh (with the chain id checked as for wallets).
//!
//! Families: `intmax_builder_reward_sitx{node}`,
//! `intmax_builder_reward_check_success{node}`, `intmax_builder_reward_last_check`,
//! `nodewatch_reward_errors_total{kind}`, `nodewatch_reward_periods_counted`.
//! The ETH source (the INTMAX CLI over SSH) is not built yet, so
//! `intmax_builder_reward_eth` and `intmax_builder_reward_total_eth` are not exported.

use crate::unix_now;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, sol};
use prometheus::proto::MetricFamily;
use serde::Deserialize;

use crate::config::{ConfigError, DEFAULT_RPC_URL, MULTICALL3_ADDRESS, SCROLL_CHAIN_ID};
use crate::multicall::{self, IMulticall3};
use crate::rpc::{ERROR_KINDS, RpcClient, RpcError, redact};
use crate::wallet::{Families, RefreshOutcome};

sol! {
    /// INTMAX's BlockBuilderReward, the view we read.
    interface IBlockBuilderReward {
        function getClaimableReward(uint256 periodNumber, address user) external view returns (uint256);
    }
}

/// The BlockBuilderReward contract on Scroll mainnet (design §3).
pub const REWARD_CONTRACT: &str = "0xFe9Fca6e5AE58E6F06873D2beFB658424Ae07109";

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
    /// Multicall3's address.
    pub multicall_address: Option<String>,
    /// The BlockBuilderReward contract.
    pub reward_contract: Option<String>,
    /// Unix time period 0 starts (required: it differs between deployments).
    pub period_start_unix: u64,
    /// Length of a period (default 604800, a week).
    pub period_seconds: Option<u64>,
    /// The first period counted (default 0).
    pub first_period: Option<u64>,
    /// The builders.
    pub nodes: Vec<RewardNode>,
}

/// One builder.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RewardNode {
    /// The `node` label.
    pub name: String,
    /// The builder's address (the `user` of `getClaimableReward`).
    pub address: String,
}

/// The settings in effect.
#[derive(Debug, Clone)]
pub struct RewardConfig {
    /// Listen address.
    pub listen_address: String,
    /// Endpoints, in order.
    pub rpc_urls: Vec<String>,
    /// Expected chain id.
    pub chain_id: u64,
    /// Between refreshes.
    pub interval: Duration,
    /// Per request.
    pub request_timeout: Duration,
    /// First retry.
    pub retry: Duration,
    /// Multicall3.
    pub multicall: Address,
    /// BlockBuilderReward.
    pub contract: Address,
    /// Start of period 0.
    pub period_start_unix: u64,
    /// Period length in seconds.
    pub period_seconds: u64,
    /// First period counted.
    pub first_period: u64,
    /// (name, address) per builder.
    pub nodes: Vec<(String, Address)>,
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

impl RewardConfig {
    /// Reads and validates the TOML file.
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
    pub fn resolve(file: RewardFile) -> Result<RewardConfig, ConfigError> {
        let rpc_urls = file
            .rpc_urls
            .unwrap_or_else(|| vec![DEFAULT_RPC_URL.into()]);
        if rpc_urls.is_empty()
            || rpc_urls
                .iter()
                .any(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(invalid("rpc_urls", "one or more http(s) URLs".into()));
        }
        let period_seconds = file.period_seconds.unwrap_or(604_800);
        let seconds = |name: &str, v: u64| {
            if v == 0 {
                Err(invalid(name, "must be at least 1".into()))
            } else {
                Ok(Duration::from_secs(v))
            }
        };
        if period_seconds == 0 {
            return Err(invalid("period_seconds", "must be at least 1".into()));
        }
        if file.nodes.is_empty() {
            return Err(invalid("nodes", "list at least one builder".into()));
        }
        let nodes = file
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                Ok((
                    n.name.clone(),
                    address(&format!("nodes[{i}].address"), &n.address)?,
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(RewardConfig {
            listen_address: file.listen_address.unwrap_or_else(|| ":9102".into()),
            rpc_urls,
            chain_id: file.chain_id.unwrap_or(SCROLL_CHAIN_ID),
            interval: seconds("interval_seconds", file.interval_seconds.unwrap_or(300))?,
            request_timeout: seconds(
                "request_timeout_seconds",
                file.request_timeout_seconds.unwrap_or(10),
            )?,
            retry: seconds("retry_seconds", file.retry_seconds.unwrap_or(5))?,
            multicall: address(
                "multicall_address",
                file.multicall_address
                    .as_deref()
                    .unwrap_or(MULTICALL3_ADDRESS),
            )?,
            contract: address(
                "reward_contract",
                file.reward_contract.as_deref().unwrap_or(REWARD_CONTRACT),
            )?,
            period_start_unix: file.period_start_unix,
            period_seconds,
            first_period: file.first_period.unwrap_or(0),
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

/// The reward exporter's state.
#[derive(Debug)]
pub struct RewardState {
    config: RewardConfig,
    verified: Vec<bool>,
    sitx: Vec<Option<f64>>,
    node_ok: Vec<Option<bool>>,
    periods_counted: Option<u64>,
    errors: BTreeMap<&'static str, u64>,
    last_check: Option<f64>,
    last_error: Option<String>,
    last_duration: Option<f64>,
    started: Instant,
}

impl RewardState {
    /// Nothing read yet.
    pub fn new(config: RewardConfig) -> RewardState {
        RewardState {
            verified: vec![false; config.rpc_urls.len()],
            sitx: vec![None; config.nodes.len()],
            node_ok: vec![None; config.nodes.len()],
            periods_counted: None,
            errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
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

    /// One refresh (blocking).
    pub fn refresh(state: &Mutex<RewardState>, client: &RpcClient) -> RefreshOutcome {
        let started = Instant::now();
        let (config, verified) = {
            let s = lock(state);
            (s.config.clone(), s.verified.clone())
        };
        let periods: Vec<u64> = config.finished_periods(unix_now() as u64).collect();
        let mut calls = vec![IMulticall3::Call3 {
            target: config.multicall,
            allowFailure: true,
            callData: Bytes::from(IMulticall3::getChainIdCall {}.abi_encode()),
        }];
        for (_, node) in &config.nodes {
            for period in &periods {
                calls.push(IMulticall3::Call3 {
                    target: config.contract,
                    allowFailure: true,
                    callData: Bytes::from(
                        IBlockBuilderReward::getClaimableRewardCall {
                            periodNumber: U256::from(*period),
                            user: *node,
                        }
                        .abi_encode(),
                    ),
                });
            }
        }
        let expected = calls.len();
        let data = multicall::encode_aggregate3(calls);
        let multicall = config.multicall.to_string();
        let mut errors = Vec::new();
        let mut retry_after = None;
        let mut answer = None;
        for (i, url) in config.rpc_urls.iter().enumerate() {
            let result = (|| {
                if !verified[i] {
                    let actual = client.chain_id(url)?;
                    if actual != config.chain_id {
                        return Err(RpcError::WrongChain {
                            expected: config.chain_id,
                            actual,
                        });
                    }
                }
                let returned = client.eth_call(url, &multicall, &data)?;
                let results = multicall::decode_aggregate3(&returned).map_err(RpcError::Decode)?;
                if results.len() != expected {
                    return Err(RpcError::Decode(format!(
                        "{} results for {expected} calls",
                        results.len()
                    )));
                }
                let chain =
                    multicall::decode_u256(&results[0].returnData).map_err(RpcError::Decode)?;
                if chain != U256::from(config.chain_id) {
                    return Err(RpcError::WrongChain {
                        expected: config.chain_id,
                        actual: u64::try_from(chain).unwrap_or(u64::MAX),
                    });
                }
                Ok(results)
            })();
            match result {
                Ok(results) => {
                    lock(state).verified[i] = true;
                    answer = Some(results);
                    break;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %redact(url), error = %e, "reward refresh failed");
                    if let RpcError::RateLimited { retry_after: wait } = &e {
                        retry_after = Some(wait.unwrap_or(config.retry));
                    }
                    let mut s = lock(state);
                    s.verified[i] = false;
                    *s.errors.entry(e.kind()).or_insert(0) += 1;
                    errors.push(e.to_string());
                }
            }
        }
        let mut s = lock(state);
        s.last_duration = Some(started.elapsed().as_secs_f64());
        let Some(results) = answer else {
            let error = errors.join("; ");
            s.last_error = Some(error.clone());
            for ok in &mut s.node_ok {
                *ok = Some(false);
            }
            return RefreshOutcome {
                ok: false,
                error: Some(error),
                retry_after,
            };
        };
        // Per node: its sum only if every period was read; otherwise its last value stays.
        let mut all_ok = true;
        let mut failed = Vec::new();
        for (n, chunk) in results[1..].chunks(periods.len().max(1)).enumerate() {
            let mut sum = U256::ZERO;
            let mut ok = true;
            for (period, r) in periods.iter().zip(chunk) {
                match r
                    .success
                    .then(|| multicall::decode_u256(&r.returnData).ok())
                    .flatten()
                {
                    Some(v) => sum = sum.saturating_add(v),
                    None => {
                        ok = false;
                        failed.push(format!("{}: period {period}", config.nodes[n].0));
                    }
                }
            }
            if ok {
                s.sitx[n] = Some(multicall::to_units(sum, 18));
            }
            s.node_ok[n] = Some(ok);
            all_ok &= ok;
        }
        if periods.is_empty() {
            for n in 0..config.nodes.len() {
                s.sitx[n] = Some(0.0);
                s.node_ok[n] = Some(true);
            }
        }
        for _ in 0..failed.len() {
            *s.errors.entry("reverted").or_insert(0) += 1;
        }
        s.periods_counted = Some(periods.len() as u64);
        if all_ok {
            s.last_check = Some(unix_now());
        }
        let error = (!failed.is_empty()).then(|| format!("reads failed: {}", failed.join(", ")));
        if let Some(e) = &error {
            s.last_error = Some(e.clone());
        }
        RefreshOutcome {
            ok: all_ok,
            error,
            retry_after: None,
        }
    }

    /// The families to serve.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = Families::default();
        for (n, (name, _)) in self.config.nodes.iter().enumerate() {
            if let Some(v) = self.sitx[n] {
                out.gauge(
                    "intmax_builder_reward_sitx",
                    "Claimable sITX builder reward, summed over finished periods, in sITX.",
                    &[("node", name)],
                    v,
                );
            }
            if let Some(ok) = self.node_ok[n] {
                out.gauge(
                    "intmax_builder_reward_check_success",
                    "1 if the node's last reward check read every period, 0 otherwise.",
                    &[("node", name)],
                    if ok { 1.0 } else { 0.0 },
                );
            }
        }
        if let Some(t) = self.last_check {
            out.gauge(
                "intmax_builder_reward_last_check",
                "Unix time of the last reward check that read every period of every node.",
                &[],
                t.floor(),
            );
        }
        if let Some(p) = self.periods_counted {
            out.gauge(
                "nodewatch_reward_periods_counted",
                "Finished periods summed in the last check.",
                &[],
                p as f64,
            );
        }
        for (kind, n) in &self.errors {
            out.counter(
                "nodewatch_reward_errors_total",
                "Failed JSON-RPC requests and failed reads, by kind.",
                &[("kind", kind)],
                *n as f64,
            );
        }
        out.families
    }

    /// The detailed health report.
    pub fn health(&self) -> nodewatch_http::DetailedHealth {
        use nodewatch_http::{ComponentHealth, DetailedHealth, HealthStatus};
        let ok = !self.node_ok.is_empty() && self.node_ok.iter().all(|o| *o == Some(true));
        let any_value = self.sitx.iter().any(Option::is_some);
        let status = if ok {
            HealthStatus::Healthy
        } else if any_value || self.node_ok.iter().all(Option::is_none) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Unhealthy
        };
        let mut collectors = BTreeMap::new();
        collectors.insert(
            "reward_sitx".to_string(),
            ComponentHealth {
                ok,
                last_success_unix: self.last_check,
                last_error: self.last_error.clone(),
                duration_seconds: self.last_duration,
            },
        );
        DetailedHealth {
            status,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            collectors,
            outputs: BTreeMap::new(),
            alerts: Vec::new(),
        }
    }
}

/// Locks the state, poisoned or not.
pub fn lock(state: &Mutex<RewardState>) -> std::sync::MutexGuard<'_, RewardState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(start: u64) -> RewardConfig {
        let file: RewardFile = toml::from_str(&format!(
            "period_start_unix = {start}\n[[nodes]]\nname = \"pi-1\"\naddress = \"0x1111111111111111111111111111111111111111\"\n"
        ))
        .expect("toml");
        RewardConfig::resolve(file).expect("config")
    }

    #[test]
    fn current_period_is_never_counted() {
        let c = config(1_000_000);
        assert_eq!(c.finished_periods(999_999), 0..0);
        assert_eq!(c.finished_periods(1_000_000), 0..0);
        assert_eq!(c.finished_periods(1_000_000 + 604_799), 0..0);
        assert_eq!(c.finished_periods(1_000_000 + 604_800), 0..1);
        assert_eq!(c.finished_periods(1_000_000 + 3 * 604_800 + 5), 0..3);
        let mut c = c;
        c.first_period = 2;
        assert_eq!(c.finished_periods(1_000_000 + 3 * 604_800 + 5), 2..3);
        assert_eq!(c.finished_periods(1_000_000), 2..2);
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/reward-exporter.toml");
        let c = RewardConfig::load(&path).expect("example");
        assert_eq!(c.period_seconds, 604_800);
        assert_eq!(c.contract.to_string(), REWARD_CONTRACT);
        assert!(
            toml::from_str::<RewardFile>("period_start_unix = 1\nnodes = []\nx = 1\n").is_err()
        );
    }
}
