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

use crate::unix_now;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, sol};
use prometheus::proto::MetricFamily;
use serde::Deserialize;

use crate::batch;
use crate::claim::{self, ClaimConfig, ClaimFile};
use crate::config::{ConfigError, EndpointRule, RpcKeys, RpcSettings};
use crate::intmax_cli::{self, CLI_ERROR_KINDS, EthFile, EthSource};
use crate::multicall::{self, IMulticall3};
use crate::rpc::{ERROR_KINDS, RpcClient, RpcError, redact};
use crate::wallet::RefreshOutcome;
use nodewatch_http::MetricSink;

sol! {
    /// INTMAX's BlockBuilderReward, the view we read.
    interface IBlockBuilderReward {
        function getClaimableReward(uint256 periodNumber, address user) external view returns (uint256);
    }
}

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

    /// One refresh of the on-chain source (blocking), then the claims it calls for.
    pub fn refresh(state: &Mutex<RewardState>, client: &RpcClient) -> RefreshOutcome {
        let started = Instant::now();
        let (config, verified, multicall) = {
            let s = lock(state);
            (s.config.clone(), s.verified.clone(), s.multicall)
        };
        let periods: Vec<u64> = config.finished_periods(unix_now() as u64).collect();
        let target = multicall.unwrap_or(Address::ZERO);
        let mut calls = vec![IMulticall3::Call3 {
            target,
            allowFailure: true,
            callData: Bytes::from(IMulticall3::getChainIdCall {}.abi_encode()),
        }];
        for node in &config.nodes {
            for period in &periods {
                calls.push(IMulticall3::Call3 {
                    target: config.contract,
                    allowFailure: true,
                    callData: Bytes::from(
                        IBlockBuilderReward::getClaimableRewardCall {
                            periodNumber: U256::from(*period),
                            user: node.address,
                        }
                        .abi_encode(),
                    ),
                });
            }
        }
        let expected = calls.len();
        let batch_calls = batch::from_calls(&calls, target);
        let aggregate = multicall.map(|_| multicall::encode_aggregate3(calls));
        let mut errors = Vec::new();
        let mut retry_after = None;
        let mut answer = None;
        let mut multicall_missing = false;
        for (i, url) in config.rpc.urls.iter().enumerate() {
            let mut requests = 0;
            let result = (|| {
                if !verified[i] {
                    requests += 1;
                    let actual = client.chain_id(url)?;
                    if actual != config.rpc.chain_id {
                        return Err(RpcError::WrongChain {
                            expected: config.rpc.chain_id,
                            actual,
                        });
                    }
                }
                let mut results = None;
                if let (Some(address), Some(data)) = (multicall, &aggregate)
                    && !multicall_missing
                {
                    requests += 1;
                    let returned = client.eth_call(url, &address.to_string(), data)?;
                    if returned.is_empty() {
                        // No code at the Multicall3 address: a JSON-RPC batch, now and
                        // from now on.
                        multicall_missing = true;
                    } else {
                        results = Some(
                            multicall::decode_aggregate3(&returned).map_err(RpcError::Decode)?,
                        );
                    }
                }
                let results = match results {
                    Some(r) => r,
                    None => {
                        requests += 1;
                        batch::parse(&batch_calls, client.post(url, &batch::body(&batch_calls))?)?
                    }
                };
                if results.len() != expected {
                    return Err(RpcError::Decode(format!(
                        "{} results for {expected} calls",
                        results.len()
                    )));
                }
                let chain = results[0]
                    .success
                    .then(|| multicall::decode_u256(&results[0].returnData).ok())
                    .flatten()
                    .ok_or_else(|| RpcError::Decode("the chain id read failed".into()))?;
                if chain != U256::from(config.rpc.chain_id) {
                    return Err(RpcError::WrongChain {
                        expected: config.rpc.chain_id,
                        actual: u64::try_from(chain).unwrap_or(u64::MAX),
                    });
                }
                Ok(results)
            })();
            lock(state).requests += requests;
            match result {
                Ok(results) => {
                    lock(state).verified[i] = true;
                    answer = Some((url.clone(), results));
                    break;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %redact(url), error = %e, "reward refresh failed");
                    if let RpcError::RateLimited { retry_after: wait } = &e {
                        retry_after = Some(wait.unwrap_or(config.rpc.retry));
                    }
                    let mut s = lock(state);
                    s.verified[i] = false;
                    *s.errors.entry(e.kind()).or_insert(0) += 1;
                    errors.push(e.to_string());
                }
            }
        }
        let mut s = lock(state);
        if multicall_missing && s.multicall.is_some() {
            tracing::warn!(
                multicall = %target,
                "no Multicall3 contract at the configured address: reading with JSON-RPC batches"
            );
            s.multicall = None;
        }
        s.last_duration = Some(started.elapsed().as_secs_f64());
        let Some((url, results)) = answer else {
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
        let mut claimable: Claimable = vec![None; config.nodes.len()];
        if periods.is_empty() {
            for (n, c) in claimable.iter_mut().enumerate() {
                s.sitx[n] = Some(0.0);
                s.node_ok[n] = Some(true);
                *c = Some(Vec::new());
            }
        } else {
            for (n, chunk) in results[1..].chunks(periods.len()).enumerate() {
                let mut sum = U256::ZERO;
                let mut per_period = Vec::with_capacity(periods.len());
                let mut ok = true;
                for (period, r) in periods.iter().zip(chunk) {
                    match r
                        .success
                        .then(|| multicall::decode_u256(&r.returnData).ok())
                        .flatten()
                    {
                        Some(v) => {
                            sum = sum.saturating_add(v);
                            per_period.push((*period, v));
                        }
                        None => {
                            ok = false;
                            failed.push(format!("{}: period {period}", config.nodes[n].name));
                        }
                    }
                }
                if ok {
                    s.sitx[n] = Some(multicall::to_units(sum, 18));
                    claimable[n] = Some(per_period);
                }
                s.node_ok[n] = Some(ok);
                all_ok &= ok;
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
        drop(s);
        Self::claims(state, client, &config, &url, &claimable);
        RefreshOutcome {
            ok: all_ok,
            error,
            retry_after: None,
        }
    }

    /// Auto-claim after a read: for each node with `[nodes.claim]` whose periods were
    /// all read, follow its pending transaction, or claim when the threshold is reached.
    fn claims(
        state: &Mutex<RewardState>,
        client: &RpcClient,
        config: &RewardConfig,
        url: &str,
        claimable: &Claimable,
    ) {
        for (n, node) in config.nodes.iter().enumerate() {
            let (Some(settings), Some(per_period)) = (&node.claim, &claimable[n]) else {
                continue;
            };
            // A pending claim is followed by its nonce; no new one while it is there.
            // A dry run sends nothing, not even a pending claim's re-send or replacement.
            let followed = if settings.dry_run {
                Ok(claim::Followed::NoClaim)
            } else {
                claim::follow(client, url, config.rpc.chain_id, config.contract, settings)
            };
            {
                let mut s = lock(state);
                let c = &mut s.claims[n];
                match &followed {
                    Ok(claim::Followed::NoClaim) => {}
                    Ok(claim::Followed::Mined {
                        hash,
                        ok: true,
                        sitx,
                    }) => {
                        tracing::info!(node = %node.name, tx = %hash, sitx, "claim mined");
                        c.confirmed += 1;
                        c.claimed_sitx += sitx;
                        c.last_ok = Some(true);
                        c.last_error = None;
                    }
                    Ok(claim::Followed::Mined {
                        hash, ok: false, ..
                    }) => {
                        tracing::warn!(node = %node.name, tx = %hash, "claim reverted");
                        *c.failures.entry("reverted").or_insert(0) += 1;
                        c.last_ok = Some(false);
                        c.last_error = Some(format!("transaction {hash} reverted"));
                    }
                    Ok(claim::Followed::Superseded { nonce }) => {
                        tracing::warn!(node = %node.name, nonce, "claim dropped: its nonce was used by another transaction");
                        *c.failures.entry("dropped").or_insert(0) += 1;
                        c.last_ok = Some(false);
                        c.last_error = Some(format!(
                            "nonce {nonce} was used by another transaction: claim dropped"
                        ));
                    }
                    Ok(claim::Followed::Waiting { hash, resent }) => {
                        if *resent {
                            tracing::info!(node = %node.name, tx = %hash, "pending claim unknown to the node: sent the same transaction again");
                        }
                    }
                    Ok(claim::Followed::Replaced {
                        hash,
                        nonce,
                        max_fee_per_gas,
                    }) => {
                        tracing::info!(node = %node.name, tx = %hash, nonce, max_fee_per_gas, "claim stuck: replaced at the same nonce with higher fees");
                        c.replacements += 1;
                    }
                    Err(e) => Self::claim_failed(&node.name, c, e),
                }
                c.pending = settings.state_file.exists();
            }
            if followed != Ok(claim::Followed::NoClaim) {
                // The claimed periods read 0 from the next refresh on.
                continue;
            }
            let periods: Vec<u64> = per_period
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(p, _)| *p)
                .collect();
            let total = per_period
                .iter()
                .fold(U256::ZERO, |a, (_, v)| a.saturating_add(*v));
            let amount = multicall::to_units(total, 18);
            if periods.is_empty() || amount < settings.threshold_sitx {
                continue;
            }
            let result = claim::prepare(
                client,
                url,
                config.rpc.chain_id,
                config.contract,
                &settings.key,
                &periods,
                &settings.limits,
            )
            .and_then(|prepared| {
                if settings.dry_run {
                    tracing::info!(
                        node = %node.name,
                        from = %settings.key.address(),
                        to = %config.contract,
                        periods = ?periods,
                        sitx = amount,
                        nonce = prepared.nonce,
                        gas_limit = prepared.gas_limit,
                        fee_per_gas = prepared.fee_per_gas,
                        kind = prepared.kind,
                        tx = %prepared.hash,
                        "dry run: would send batchClaimReward (set dry_run = false to send)"
                    );
                    Ok(None)
                } else {
                    claim::send_new(client, url, settings, &prepared, &periods, amount).map(Some)
                }
            });
            let mut s = lock(state);
            let c = &mut s.claims[n];
            match result {
                Ok(None) => {
                    c.dry_runs += 1;
                    c.last_ok = Some(true);
                }
                Ok(Some(hash)) => {
                    tracing::info!(
                        node = %node.name,
                        tx = %hash,
                        periods = ?periods,
                        sitx = amount,
                        "claim sent: batchClaimReward"
                    );
                    c.sent += 1;
                    c.last_ok = Some(true);
                    c.last_error = None;
                }
                Err(e) => Self::claim_failed(&node.name, c, &e),
            }
            c.pending = settings.state_file.exists();
        }
    }

    /// Counts and logs a failed or refused claim step.
    fn claim_failed(node: &str, c: &mut ClaimState, e: &claim::ClaimError) {
        match e {
            claim::ClaimError::Refused(refusal) => {
                tracing::warn!(node = %node, reason = refusal.reason, error = %refusal.message, "claim refused: not sent");
                *c.refused.entry(refusal.reason).or_insert(0) += 1;
            }
            _ => {
                tracing::warn!(node = %node, error = %e, "claim failed");
                *c.failures.entry(e.stage()).or_insert(0) += 1;
            }
        }
        c.last_ok = Some(false);
        c.last_error = Some(e.to_string());
    }

    /// One run of node `node`'s ETH source (blocking). Returns at once if a run of that
    /// node is in flight.
    pub fn run_eth(state: &Mutex<RewardState>, node: usize) {
        let (argv, timeout, name) = {
            let mut s = lock(state);
            let Some(source) = s.config.nodes.get(node).and_then(|n| n.eth.clone()) else {
                return;
            };
            if s.eth[node].in_flight {
                return;
            }
            s.eth[node].in_flight = true;
            (
                source.argv(&s.config.ssh_program),
                source.timeout,
                s.config.nodes[node].name.clone(),
            )
        };
        let started = Instant::now();
        let result = intmax_cli::run(&argv, timeout, &|pgid| lock(state).eth[node].running = pgid)
            .and_then(|output| intmax_cli::parse_balance(&output));
        let mut s = lock(state);
        let eth = &mut s.eth[node];
        eth.in_flight = false;
        eth.running = None;
        eth.runs += 1;
        eth.last_duration = Some(started.elapsed().as_secs_f64());
        match result {
            Ok(balances) => {
                eth.value = Some(balances.eth);
                eth.read_at = Some(unix_now());
                eth.last_ok = Some(true);
            }
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "ETH reward read (INTMAX CLI) failed");
                *eth.errors.entry(e.kind()).or_insert(0) += 1;
                eth.last_ok = Some(false);
                eth.last_error = Some(format!("node {name}: {e}"));
            }
        }
    }

    /// Starts one thread per node with an ETH source: a run, then `eth_interval`, until
    /// the returned guard is dropped.
    pub fn start_eth_loops(state: &Arc<Mutex<RewardState>>) -> StopOnDrop {
        let stop = StopOnDrop::default();
        let (nodes, interval) = {
            let s = lock(state);
            (
                s.config
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.eth.is_some())
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
                s.config.eth_interval,
            )
        };
        for node in nodes {
            let (state, signal) = (state.clone(), stop.signal.clone());
            // A node's loop runs its runs one after another: they never overlap.
            let spawned = std::thread::Builder::new()
                .name(format!("eth-{node}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    loop {
                        RewardState::run_eth(&state, node);
                        let (stopped, wake) = &*signal;
                        let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                        let (guard, _) = wake
                            .wait_timeout_while(guard, interval, |stopped| !*stopped)
                            .unwrap_or_else(|e| e.into_inner());
                        if *guard {
                            return;
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(node, error = %e, "cannot start the ETH source's thread");
            }
        }
        stop
    }

    /// Kills the runs in flight (shutdown).
    pub fn kill_runs(&self) {
        for eth in &self.eth {
            if let Some(pgid) = eth.running {
                intmax_cli::kill_group(pgid);
            }
        }
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

    /// The families to serve.
    pub fn families(&self) -> Vec<MetricFamily> {
        let now = unix_now();
        let mut out = MetricSink::new();
        let any_eth = self.config.nodes.iter().any(|n| n.eth.is_some());
        for (n, node) in self.config.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if let Some(v) = self.eth[n].value {
                out.gauge(
                    "intmax_builder_reward_eth",
                    "ETH fee reward of the builder (INTMAX L2 balance read by the INTMAX CLI), in ETH; the last good read.",
                    &[("node", name)],
                    v,
                );
            }
        }
        for (n, node) in self.config.nodes.iter().enumerate() {
            if let Some(v) = self.sitx[n] {
                out.gauge(
                    "intmax_builder_reward_sitx",
                    "Claimable sITX builder reward, summed over finished periods, in sITX.",
                    &[("node", &node.name)],
                    v,
                );
            }
        }
        // The total only when every node with an ETH source has a value: a sum with a
        // node missing would be a made-up number.
        let eth_nodes: Vec<usize> = (0..self.config.nodes.len())
            .filter(|n| self.config.nodes[*n].eth.is_some())
            .collect();
        let missing = eth_nodes
            .iter()
            .filter(|n| self.eth[**n].value.is_none())
            .count();
        if any_eth && missing == 0 {
            out.gauge(
                "intmax_builder_reward_total_eth",
                "Sum of intmax_builder_reward_eth over every node with an ETH source; absent while one has no value yet.",
                &[],
                eth_nodes.iter().filter_map(|n| self.eth[*n].value).sum(),
            );
        }
        for n in 0..self.config.nodes.len() {
            if let Some(ok) = self.node_success(n) {
                out.gauge(
                    "intmax_builder_reward_check_success",
                    "1 if the node's last checks all succeeded (on-chain sITX and, if configured, the ETH source), 0 otherwise.",
                    &[("node", &self.config.nodes[n].name)],
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
        for (n, node) in self.config.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if let Some(ok) = self.node_ok[n] {
                out.gauge(
                    "nodewatch_reward_source_success",
                    "1 if the node's last read from this source succeeded (chain: on-chain sITX; cli: the INTMAX CLI's ETH).",
                    &[("node", name), ("source", "chain")],
                    if ok { 1.0 } else { 0.0 },
                );
            }
            if node.eth.is_some()
                && let Some(ok) = self.eth[n].last_ok
            {
                out.gauge(
                    "nodewatch_reward_source_success",
                    "1 if the node's last read from this source succeeded (chain: on-chain sITX; cli: the INTMAX CLI's ETH).",
                    &[("node", name), ("source", "cli")],
                    if ok { 1.0 } else { 0.0 },
                );
            }
        }
        if any_eth {
            out.gauge(
                "nodewatch_reward_eth_nodes_missing",
                "Nodes with an ETH source that has never been read successfully.",
                &[],
                missing as f64,
            );
        }
        for n in &eth_nodes {
            let (name, eth) = (self.config.nodes[*n].name.as_str(), &self.eth[*n]);
            if let (Some(_), Some(at)) = (eth.value, eth.read_at) {
                out.gauge(
                    "nodewatch_reward_eth_stale",
                    "1 if the node's last ETH run failed and the value served is an older one.",
                    &[("node", name)],
                    if eth.last_ok == Some(false) { 1.0 } else { 0.0 },
                );
                out.gauge(
                    "nodewatch_reward_eth_data_age_seconds",
                    "Seconds since the node's ETH value served was read.",
                    &[("node", name)],
                    (now - at).max(0.0),
                );
            }
            out.counter(
                "nodewatch_reward_eth_runs_total",
                "Runs of the node's ETH source (the INTMAX CLI), successful or not.",
                &[("node", name)],
                eth.runs as f64,
            );
            for (kind, count) in &eth.errors {
                out.counter(
                    "nodewatch_reward_eth_errors_total",
                    "Failed runs of the node's ETH source, by kind (spawn, timeout, exit, format).",
                    &[("node", name), ("kind", kind)],
                    *count as f64,
                );
            }
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
        out.counter(
            "nodewatch_reward_rpc_requests_total",
            "JSON-RPC HTTP requests sent by the on-chain refresh (claims not included).",
            &[],
            self.requests as f64,
        );
        for (n, node) in self.config.nodes.iter().enumerate() {
            let Some(settings) = &node.claim else {
                continue;
            };
            let (name, c) = (node.name.as_str(), &self.claims[n]);
            out.gauge(
                "nodewatch_reward_claim_dry_run",
                "1 if auto-claim of the node is a dry run (logs, sends nothing), 0 if it sends.",
                &[("node", name)],
                if settings.dry_run { 1.0 } else { 0.0 },
            );
            out.counter(
                "nodewatch_reward_claim_dry_runs_total",
                "Claims prepared and logged but not sent (dry run).",
                &[("node", name)],
                c.dry_runs as f64,
            );
            out.counter(
                "nodewatch_reward_claims_sent_total",
                "batchClaimReward transactions sent.",
                &[("node", name)],
                c.sent as f64,
            );
            out.counter(
                "nodewatch_reward_claims_confirmed_total",
                "batchClaimReward transactions mined successfully.",
                &[("node", name)],
                c.confirmed as f64,
            );
            out.counter(
                "nodewatch_reward_claimed_sitx_total",
                "sITX claimed by mined batchClaimReward transactions, in sITX.",
                &[("node", name)],
                c.claimed_sitx,
            );
            for (stage, count) in &c.failures {
                out.counter(
                    "nodewatch_reward_claim_failures_total",
                    "Failed claims by stage (prepare, sign, state, send, reverted, dropped).",
                    &[("node", name), ("stage", stage)],
                    *count as f64,
                );
            }
            for (reason, count) in &c.refused {
                out.counter(
                    "nodewatch_reward_claim_refused_total",
                    "Claims not sent because the fee per gas or the total cost was over its ceiling.",
                    &[("node", name), ("reason", reason)],
                    *count as f64,
                );
            }
            out.counter(
                "nodewatch_reward_claim_replacements_total",
                "Stuck claims replaced at the same nonce with higher fees.",
                &[("node", name)],
                c.replacements as f64,
            );
            out.gauge(
                "nodewatch_reward_claim_pending",
                "1 while a signed claim waits to be mined (kept in the state dir).",
                &[("node", name)],
                if c.pending { 1.0 } else { 0.0 },
            );
        }
        out.into_families_as_written()
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

/// Stops the ETH loops when dropped (they finish the run in flight, if any, first;
/// [`RewardState::kill_runs`] ends it at once).
#[derive(Debug, Default)]
pub struct StopOnDrop {
    signal: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.signal;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
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
        assert!(c.nodes.iter().any(|n| n.eth.is_some()), "an ETH example");
        assert!(
            toml::from_str::<RewardFile>("period_start_unix = 1\nnodes = []\nx = 1\n").is_err()
        );
    }

    fn state_with_eth() -> RewardState {
        let file: RewardFile = toml::from_str(
            "period_start_unix = 1\n\
             [[nodes]]\nname = \"a\"\naddress = \"0x1111111111111111111111111111111111111111\"\n\
             [nodes.eth]\nlocal_command = [\"/bin/sh\", \"-c\", \"echo 'ETH: 1.5'\"]\n\
             [[nodes]]\nname = \"b\"\naddress = \"0x2222222222222222222222222222222222222222\"\n\
             [nodes.eth]\nlocal_command = [\"/bin/sh\", \"-c\", \"echo 'Balance 2 ETH'\"]\n\
             [[nodes]]\nname = \"c\"\naddress = \"0x3333333333333333333333333333333333333333\"\n",
        )
        .expect("toml");
        RewardState::new(RewardConfig::resolve(file).expect("config"))
    }

    fn sample(families: &[MetricFamily], name: &str, node: &str) -> Option<f64> {
        let f = families.iter().find(|f| f.name() == name)?;
        f.get_metric()
            .iter()
            .find(|m| node.is_empty() || m.get_label().iter().any(|l| l.value() == node))
            .map(|m| {
                if f.get_field_type() == prometheus::proto::MetricType::GAUGE {
                    m.get_gauge().get_value()
                } else {
                    m.get_counter().get_value()
                }
            })
    }

    #[test]
    fn eth_values_only_after_a_good_read_and_no_partial_total() {
        let state = Mutex::new(state_with_eth());
        let families = lock(&state).families();
        assert_eq!(sample(&families, "intmax_builder_reward_eth", "a"), None);
        assert_eq!(
            sample(&families, "intmax_builder_reward_total_eth", ""),
            None
        );
        assert_eq!(
            sample(&families, "intmax_builder_reward_check_success", "a"),
            None
        );

        RewardState::run_eth(&state, 0);
        RewardState::run_eth(&state, 1);
        RewardState::run_eth(&state, 2); // no source: nothing
        let s = lock(&state);
        let families = s.families();
        assert_eq!(
            sample(&families, "intmax_builder_reward_eth", "a"),
            Some(1.5)
        );
        assert_eq!(sample(&families, "intmax_builder_reward_eth", "b"), None);
        // b never read: no total (a made-up sum), and a count of what is missing.
        assert_eq!(
            sample(&families, "intmax_builder_reward_total_eth", ""),
            None
        );
        assert_eq!(
            sample(&families, "nodewatch_reward_eth_nodes_missing", ""),
            Some(1.0)
        );
        // b failed: its check fails even before the chain was read.
        assert_eq!(
            sample(&families, "intmax_builder_reward_check_success", "b"),
            Some(0.0)
        );
        // a's ETH is good, its chain read has not happened yet: not known.
        assert_eq!(
            sample(&families, "intmax_builder_reward_check_success", "a"),
            None
        );
        let error = s.eth[1].last_error.clone().expect("error");
        assert!(
            error.contains("node b") && error.contains("Balance 2 ETH"),
            "{error}"
        );
        drop(s);

        // Once b reads, the total appears; when a then fails, its value stays (stale).
        lock(&state).eth[1].value = Some(2.0);
        lock(&state).eth[1].last_ok = Some(true);
        lock(&state).config.nodes[0].eth = Some(
            EthSource::resolve(
                0,
                &toml::from_str("local_command = [\"/bin/false\"]").expect("toml"),
            )
            .expect("source"),
        );
        RewardState::run_eth(&state, 0);
        let families = lock(&state).families();
        assert_eq!(
            sample(&families, "intmax_builder_reward_eth", "a"),
            Some(1.5)
        );
        assert_eq!(
            sample(&families, "nodewatch_reward_eth_stale", "a"),
            Some(1.0)
        );
        assert_eq!(
            sample(&families, "intmax_builder_reward_total_eth", ""),
            Some(3.5)
        );
    }

    #[test]
    fn eth_loops_of_nodes_run_side_by_side() {
        let state = Arc::new(Mutex::new(state_with_eth()));
        lock(&state).config.eth_interval = Duration::from_millis(300);
        let stop = RewardState::start_eth_loops(&state);
        std::thread::sleep(Duration::from_millis(1600));
        drop(stop);
        let runs: Vec<u64> = lock(&state).eth.iter().map(|e| e.runs).collect();
        // Each node's loop waits on its own: both ran about 1600 / 300 times.
        assert!(runs[0] >= 4 && runs[1] >= 4, "{runs:?}");
        assert_eq!(runs[2], 0, "no source, no loop");
        std::thread::sleep(Duration::from_millis(400));
        let after: Vec<u64> = lock(&state).eth.iter().map(|e| e.runs).collect();
        assert!(after[0] <= runs[0] + 1, "stopped: {runs:?} then {after:?}");
    }

    #[test]
    fn runs_never_overlap() {
        let state = Mutex::new(state_with_eth());
        lock(&state).eth[0].in_flight = true;
        RewardState::run_eth(&state, 0);
        assert_eq!(
            lock(&state).eth[0].runs,
            0,
            "a run in flight: no second one"
        );
    }

    #[test]
    fn node_names_are_unique() {
        let file: RewardFile = toml::from_str(
            "period_start_unix = 1\n\
             [[nodes]]\nname = \"a\"\naddress = \"0x1111111111111111111111111111111111111111\"\n\
             [[nodes]]\nname = \"a\"\naddress = \"0x2222222222222222222222222222222222222222\"\n",
        )
        .expect("toml");
        let e = RewardConfig::resolve(file).expect_err("twice").to_string();
        assert!(e.contains("nodes[1].name"), "{e}");
    }
}
