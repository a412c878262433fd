//! The wallet exporter's state: one refresh reads every balance in one JSON-RPC request
//! (Multicall3 `aggregate3`), endpoints are tried in order, and what is served is only
//! what was read — never a 0 for unknown.
//!
//! Families (design §3): the wiki's `intmax_wallet_eth{address[,name]}`,
//! `intmax_wallet_sitx{address[,name]}`, `intmax_wallet_sitx_total`,
//! `intmax_wallet_last_check`, and nodewatch's `nodewatch_wallet_token_balance`,
//! `nodewatch_wallet_check_success`, `nodewatch_wallet_errors_total{kind}`,
//! `nodewatch_wallet_data_age_seconds`, `nodewatch_wallet_stale`,
//! `nodewatch_wallet_rpc_requests_total`, `nodewatch_wallet_refreshes_total`,
//! `nodewatch_wallet_refresh_duration_seconds`,
//! `nodewatch_wallet_rpc_endpoint_up{endpoint,host}`,
//! `nodewatch_wallet_last_attempt_timestamp_seconds`.

use crate::unix_now;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nodewatch_http::MetricSink;
use prometheus::proto::MetricFamily;

use crate::batch;
use crate::config::Config;
use crate::multicall::{self, Read};
use crate::rpc::{RpcClient, RpcError, redact};

/// A token's cached metadata, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMeta {
    /// `decimals()`.
    pub decimals: u8,
    /// `symbol()`.
    pub symbol: String,
}

#[derive(Debug)]
struct Endpoint {
    url: String,
    /// Its chain id was checked since the last failure on it.
    verified: bool,
    /// Not before this instant (a 429's `Retry-After`).
    not_before: Option<Instant>,
    up: Option<bool>,
}

/// A balance as last read.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Balance {
    value: f64,
    /// Unix time of the read.
    read_at: f64,
}

/// What one refresh did.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshOutcome {
    /// Every balance was read.
    pub ok: bool,
    /// The error, if the refresh failed (or some reads inside it failed).
    pub error: Option<String>,
    /// When the next refresh should start at the earliest (a 429's `Retry-After`, or
    /// backoff), if sooner or later than the interval.
    pub retry_after: Option<Duration>,
}

/// Everything the exporter knows.
#[derive(Debug)]
pub struct WalletState {
    config: Config,
    endpoints: Vec<Endpoint>,
    tokens_meta: Vec<Option<TokenMeta>>,
    /// (wallet, None = ETH / Some(token)) → balance.
    balances: HashMap<(usize, Option<usize>), Balance>,
    errors: BTreeMap<&'static str, u64>,
    requests: u64,
    refreshes: u64,
    /// Multicall3 in use; `None` once it turned out absent (or when configured so).
    multicall: Option<Address>,
    last_success: Option<f64>,
    last_attempt: Option<f64>,
    last_ok: Option<bool>,
    last_error: Option<String>,
    last_duration: Option<f64>,
    started: Instant,
}

impl WalletState {
    /// A state with nothing read yet.
    pub fn new(config: Config) -> WalletState {
        let endpoints = config
            .rpc
            .urls
            .iter()
            .map(|url| Endpoint {
                url: url.clone(),
                verified: false,
                not_before: None,
                up: None,
            })
            .collect();
        let errors = crate::rpc::ERROR_KINDS.iter().map(|k| (*k, 0)).collect();
        WalletState {
            tokens_meta: vec![None; config.tokens.len()],
            endpoints,
            balances: HashMap::new(),
            errors,
            requests: 0,
            refreshes: 0,
            multicall: config.rpc.multicall,
            last_success: None,
            last_attempt: None,
            last_ok: None,
            last_error: None,
            last_duration: None,
            started: Instant::now(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The reads of the next batch: the chain id, every balance, and the metadata of
    /// tokens not read yet (so the first refresh is one request too).
    fn plan(&self) -> Vec<Read> {
        let mut reads = vec![Read::ChainId];
        for (token, meta) in self.tokens_meta.iter().enumerate() {
            if meta.is_none() {
                reads.push(Read::Decimals { token });
                reads.push(Read::Symbol { token });
            }
        }
        for wallet in 0..self.config.wallets.len() {
            reads.push(Read::Eth { wallet });
        }
        for token in 0..self.config.tokens.len() {
            for wallet in 0..self.config.wallets.len() {
                reads.push(Read::TokenBalance { token, wallet });
            }
        }
        reads
    }

    fn count_error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    /// One refresh: blocking (run it on the blocking pool). `client` does the I/O.
    pub fn refresh(state: &Mutex<WalletState>, client: &RpcClient) -> RefreshOutcome {
        let started = Instant::now();
        let (plan, endpoints) = {
            let s = lock(state);
            let endpoints: Vec<(usize, String, bool, Option<Instant>)> = s
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| (i, e.url.clone(), e.verified, e.not_before))
                .collect();
            (s.plan_batch(), endpoints)
        };
        let answer = ask_endpoints(state, client, &plan, endpoints);
        let mut s = lock(state);
        if answer.multicall_missing && s.multicall.is_some() {
            tracing::warn!(
                multicall = %s.config.rpc.multicall.map(|a| a.to_string()).unwrap_or_default(),
                "no Multicall3 contract at the configured address: reading with JSON-RPC batches"
            );
            s.multicall = None;
        }
        let now = unix_now();
        s.refreshes += 1;
        s.last_attempt = Some(now);
        s.last_duration = Some(started.elapsed().as_secs_f64());
        let Some((index, results)) = answer.results else {
            let error = match answer.last_error {
                Some(e) => e.to_string(),
                None => "every endpoint is backing off (Retry-After)".to_string(),
            };
            s.last_ok = Some(false);
            s.last_error = Some(error.clone());
            return RefreshOutcome {
                ok: false,
                error: Some(error),
                retry_after: answer.retry_after,
            };
        };
        s.store(&plan.reads, index, &results, now)
    }

    /// The next refresh's reads, as Multicall3 `aggregate3` data and as a JSON-RPC batch.
    fn plan_batch(&self) -> BatchPlan {
        let wallets: Vec<Address> = self.config.wallets.iter().map(|w| w.address).collect();
        let reads = self.plan();
        // In batch mode the Multicall3 target of a call is never used.
        let target = self.multicall.unwrap_or(Address::ZERO);
        let calls: Vec<multicall::IMulticall3::Call3> = reads
            .iter()
            .map(|r| multicall::call_for(*r, target, &self.config.tokens, &wallets))
            .collect();
        BatchPlan {
            aggregate: self
                .multicall
                .map(|_| multicall::encode_aggregate3(calls.clone())),
            // The same reads as a JSON-RPC batch (shared with the reward exporter).
            batch: batch::from_calls(&calls, target),
            reads,
            multicall: self.multicall,
            chain_id: self.config.rpc.chain_id,
        }
    }

    /// Counts one endpoint's answer (or error). Returns the results when they answer
    /// every read.
    fn record_answer(
        &mut self,
        index: usize,
        result: Result<Vec<multicall::IMulticall3::Result>, RpcError>,
        expected: usize,
        answer: &mut Answer,
    ) -> Option<Vec<multicall::IMulticall3::Result>> {
        let url = redact(&self.endpoints[index].url);
        let endpoint = &mut self.endpoints[index];
        let error = match result {
            Ok(results) if results.len() == expected => {
                endpoint.verified = true;
                endpoint.not_before = None;
                endpoint.up = Some(true);
                return Some(results);
            }
            Ok(results) => {
                endpoint.verified = false;
                endpoint.up = Some(false);
                RpcError::Decode(format!("{} results for {expected} calls", results.len()))
            }
            Err(e) => {
                endpoint.verified = false;
                endpoint.up = Some(false);
                if let RpcError::RateLimited { retry_after: wait } = &e {
                    let wait = wait.unwrap_or(self.config.rpc.retry);
                    self.endpoints[index].not_before = Some(Instant::now() + wait);
                    answer.retry_after = Some(answer.retry_after.map_or(wait, |r| r.max(wait)));
                }
                e
            }
        };
        self.count_error(error.kind());
        tracing::warn!(endpoint = %url, error = %error, "refresh failed");
        answer.last_error = Some(error);
        None
    }

    /// Stores the answer of endpoint `index` and says how the refresh went.
    fn store(
        &mut self,
        reads: &[Read],
        index: usize,
        results: &[multicall::IMulticall3::Result],
        now: f64,
    ) -> RefreshOutcome {
        match self.apply(reads, results, now) {
            Ok(failed_reads) => {
                self.last_ok = Some(failed_reads.is_empty());
                let error = (!failed_reads.is_empty()).then(|| {
                    format!(
                        "{} of {} reads failed (reverted or undecodable): {}",
                        failed_reads.len(),
                        reads.len(),
                        failed_reads.join(", ")
                    )
                });
                if failed_reads.is_empty() {
                    self.last_success = Some(now);
                } else {
                    self.last_error = error.clone();
                }
                RefreshOutcome {
                    ok: failed_reads.is_empty(),
                    error,
                    retry_after: None,
                }
            }
            Err(e) => {
                self.endpoints[index].verified = false;
                self.endpoints[index].up = Some(false);
                self.count_error(e.kind());
                self.last_ok = Some(false);
                self.last_error = Some(e.to_string());
                tracing::warn!(error = %e, "refresh failed");
                RefreshOutcome {
                    ok: false,
                    error: Some(e.to_string()),
                    retry_after: None,
                }
            }
        }
    }

    /// Stores the results of a batch. The batch's own chain id is checked first: a
    /// wrong chain discards everything. Returns the reads that failed.
    fn apply(
        &mut self,
        reads: &[Read],
        results: &[multicall::IMulticall3::Result],
        now: f64,
    ) -> Result<Vec<String>, RpcError> {
        let mut failed = Vec::new();
        for (read, result) in reads.iter().zip(results) {
            if *read == Read::ChainId {
                let chain = multicall::decode_u256(&result.returnData)
                    .ok()
                    .filter(|_| result.success)
                    .ok_or_else(|| RpcError::Decode("getChainId() failed".into()))?;
                if chain != U256::from(self.config.rpc.chain_id) {
                    return Err(RpcError::WrongChain {
                        expected: self.config.rpc.chain_id,
                        actual: u64::try_from(chain).unwrap_or(u64::MAX),
                    });
                }
            }
        }
        // Metadata first: balances of a token need its decimals.
        let mut new_meta: HashMap<usize, (Option<u8>, Option<String>)> = HashMap::new();
        for (read, result) in reads.iter().zip(results) {
            match *read {
                Read::Decimals { token } => {
                    if let Some(d) = result
                        .success
                        .then(|| multicall::decode_decimals(&result.returnData).ok())
                        .flatten()
                    {
                        new_meta.entry(token).or_default().0 = Some(d);
                    } else {
                        failed.push(format!("{}.decimals()", self.config.tokens[token]));
                    }
                }
                Read::Symbol { token } => {
                    if let Some(sym) = result
                        .success
                        .then(|| multicall::decode_symbol(&result.returnData).ok())
                        .flatten()
                    {
                        new_meta.entry(token).or_default().1 = Some(sym);
                    } else {
                        failed.push(format!("{}.symbol()", self.config.tokens[token]));
                    }
                }
                _ => {}
            }
        }
        for (token, meta) in new_meta {
            if let (Some(decimals), Some(symbol)) = meta {
                self.tokens_meta[token] = Some(TokenMeta { decimals, symbol });
            }
        }
        for (read, result) in reads.iter().zip(results) {
            let (key, decimals, what) = match *read {
                Read::Eth { wallet } => ((wallet, None), Some(18), "getEthBalance"),
                Read::TokenBalance { token, wallet } => (
                    (wallet, Some(token)),
                    self.tokens_meta[token].as_ref().map(|m| m.decimals),
                    "balanceOf",
                ),
                _ => continue,
            };
            let Some(decimals) = decimals else {
                // The token's decimals are unknown: no value rather than a wrong one.
                continue;
            };
            match result
                .success
                .then(|| multicall::decode_u256(&result.returnData).ok())
                .flatten()
            {
                Some(raw) => {
                    self.balances.insert(
                        key,
                        Balance {
                            value: multicall::to_units(raw, decimals),
                            read_at: now,
                        },
                    );
                }
                None => {
                    let target = match key.1 {
                        Some(t) => self.config.tokens[t].to_string(),
                        None => "Multicall3".into(),
                    };
                    failed.push(format!(
                        "{target}.{what}({})",
                        self.config.wallets[key.0].address
                    ));
                }
            }
        }
        for _ in 0..failed.len() {
            self.count_error("reverted");
        }
        Ok(failed)
    }

    /// The families to serve now, in the order written: balances, the refreshes, the
    /// endpoints.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = MetricSink::new();
        self.balance_families(&mut out);
        self.refresh_families(&mut out, unix_now());
        self.endpoint_families(&mut out);
        out.into_families_as_written()
    }

    /// ETH, sITX and token balances per wallet, and the sITX total.
    fn balance_families(&self, out: &mut MetricSink) {
        let sitx = self
            .config
            .sitx
            .and_then(|a| self.config.tokens.iter().position(|t| *t == a));
        let mut sitx_total = Some(0.0);
        for (w, wallet) in self.config.wallets.iter().enumerate() {
            let address = wallet.address.to_checksum(None);
            let mut labels: Vec<(&str, &str)> = vec![("address", &address)];
            if let Some(name) = &wallet.name {
                labels.push(("name", name));
            }
            if let Some(b) = self.balances.get(&(w, None)) {
                out.gauge(
                    "intmax_wallet_eth",
                    "ETH balance of the wallet on Scroll, in ETH.",
                    &labels,
                    b.value,
                );
            }
            match sitx.and_then(|t| self.balances.get(&(w, Some(t)))) {
                Some(b) => {
                    out.gauge(
                        "intmax_wallet_sitx",
                        "sITX balance of the wallet on Scroll, in sITX.",
                        &labels,
                        b.value,
                    );
                    sitx_total = sitx_total.map(|t| t + b.value);
                }
                None => sitx_total = None,
            }
            for (t, token) in self.config.tokens.iter().enumerate() {
                let (Some(b), Some(meta)) =
                    (self.balances.get(&(w, Some(t))), &self.tokens_meta[t])
                else {
                    continue;
                };
                let token = token.to_checksum(None);
                let mut token_labels = labels.clone();
                token_labels.push(("token", &token));
                token_labels.push(("symbol", &meta.symbol));
                out.gauge(
                    "nodewatch_wallet_token_balance",
                    "ERC-20 balance of the wallet, in the token's units (raw / 10^decimals).",
                    &token_labels,
                    b.value,
                );
            }
        }
        // The total only when every wallet's sITX balance is known.
        if let (Some(total), Some(_)) = (sitx_total, sitx) {
            out.gauge(
                "intmax_wallet_sitx_total",
                "Sum of the sITX balances of all wallets.",
                &[],
                total,
            );
        }
    }

    /// How the refreshes went: times, data age, success, errors and requests.
    fn refresh_families(&self, out: &mut MetricSink, now: f64) {
        if let Some(t) = self.last_success {
            out.gauge(
                "intmax_wallet_last_check",
                "Unix time of the last refresh that read every balance.",
                &[],
                t.floor(),
            );
            out.gauge(
                "nodewatch_wallet_data_age_seconds",
                "Seconds since the oldest balance served was read.",
                &[],
                self.balances
                    .values()
                    .map(|b| now - b.read_at)
                    .fold(0.0, f64::max),
            );
        } else if let Some(oldest) = self.balances.values().map(|b| b.read_at).reduce(f64::min) {
            out.gauge(
                "nodewatch_wallet_data_age_seconds",
                "Seconds since the oldest balance served was read.",
                &[],
                now - oldest,
            );
        }
        if let Some(ok) = self.last_ok {
            out.gauge(
                "nodewatch_wallet_check_success",
                "1 if the last refresh read every balance, 0 otherwise.",
                &[],
                if ok { 1.0 } else { 0.0 },
            );
            out.gauge(
                "nodewatch_wallet_stale",
                "1 if the last refresh failed and the balances served are older values.",
                &[],
                if ok { 0.0 } else { 1.0 },
            );
        }
        if let Some(t) = self.last_attempt {
            out.gauge(
                "nodewatch_wallet_last_attempt_timestamp_seconds",
                "Unix time the last refresh ended, whether it succeeded or not.",
                &[],
                t,
            );
        }
        if let Some(d) = self.last_duration {
            out.gauge(
                "nodewatch_wallet_refresh_duration_seconds",
                "Duration of the last refresh, all endpoints tried included.",
                &[],
                d,
            );
        }
        for (kind, n) in &self.errors {
            out.counter(
                "nodewatch_wallet_errors_total",
                "Failed JSON-RPC requests and failed reads, by kind.",
                &[("kind", kind)],
                *n as f64,
            );
        }
        out.counter(
            "nodewatch_wallet_refreshes_total",
            "Refreshes attempted.",
            &[],
            self.refreshes as f64,
        );
        out.counter(
            "nodewatch_wallet_rpc_requests_total",
            "JSON-RPC HTTP requests sent.",
            &[],
            self.requests as f64,
        );
    }

    /// `nodewatch_wallet_rpc_endpoint_up` of each endpoint asked so far.
    fn endpoint_families(&self, out: &mut MetricSink) {
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Some(up) = e.up {
                let index = i.to_string();
                let host = redact(&e.url);
                out.gauge(
                    "nodewatch_wallet_rpc_endpoint_up",
                    "1 if the last request to this endpoint (by position in rpc_urls) succeeded.",
                    &[("endpoint", &index), ("host", &host)],
                    if up { 1.0 } else { 0.0 },
                );
            }
        }
    }

    /// The detailed health report.
    pub fn health(&self) -> nodewatch_http::DetailedHealth {
        use nodewatch_http::{ComponentHealth, DetailedHealth, HealthStatus};
        let status = match (self.last_ok, self.last_success) {
            (Some(true), _) => HealthStatus::Healthy,
            (None, _) => HealthStatus::Degraded,
            (Some(false), Some(_)) => HealthStatus::Degraded,
            (Some(false), None) if !self.balances.is_empty() => HealthStatus::Degraded,
            (Some(false), None) => HealthStatus::Unhealthy,
        };
        let mut collectors = BTreeMap::new();
        collectors.insert(
            "wallet".to_string(),
            ComponentHealth {
                ok: self.last_ok == Some(true),
                last_success_unix: self.last_success,
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
            config_import: None,
        }
    }
}

/// One refresh's reads and how they are sent.
struct BatchPlan {
    reads: Vec<Read>,
    /// Multicall3 in use, if any.
    multicall: Option<Address>,
    /// The `aggregate3` call data, when Multicall3 is in use.
    aggregate: Option<Vec<u8>>,
    /// The same reads as a JSON-RPC batch.
    batch: Vec<batch::BatchCall>,
    /// The chain an unverified endpoint must be on.
    chain_id: u64,
}

/// What asking the endpoints in order gave.
#[derive(Default)]
struct Answer {
    /// The endpoint (by position) that answered every read, and its results.
    results: Option<(usize, Vec<multicall::IMulticall3::Result>)>,
    /// The last endpoint's error.
    last_error: Option<RpcError>,
    /// The earliest time worth trying again, when endpoints are backing off.
    retry_after: Option<Duration>,
    /// No code at the Multicall3 address: read with JSON-RPC batches from now on.
    multicall_missing: bool,
}

/// Asks the endpoints in order, skipping those backing off after a 429, until one
/// answers every read.
fn ask_endpoints(
    state: &Mutex<WalletState>,
    client: &RpcClient,
    plan: &BatchPlan,
    endpoints: Vec<(usize, String, bool, Option<Instant>)>,
) -> Answer {
    let mut answer = Answer::default();
    for (index, url, verified, not_before) in endpoints {
        if let Some(t) = not_before {
            let now = Instant::now();
            if now < t {
                let wait = t - now;
                answer.retry_after = Some(answer.retry_after.map_or(wait, |r| r.min(wait)));
                continue;
            }
        }
        let mut requests = 0;
        let result = read_endpoint(
            client,
            &url,
            verified,
            plan,
            &mut answer.multicall_missing,
            &mut requests,
        );
        let mut s = lock(state);
        s.requests += requests;
        if let Some(results) = s.record_answer(index, result, plan.reads.len(), &mut answer) {
            answer.results = Some((index, results));
            break;
        }
    }
    answer
}

/// Every read from one endpoint: its chain id first unless `verified`, then one
/// `aggregate3`, or the JSON-RPC batch when Multicall3 is not in use or absent.
fn read_endpoint(
    client: &RpcClient,
    url: &str,
    verified: bool,
    plan: &BatchPlan,
    multicall_missing: &mut bool,
    requests: &mut u64,
) -> Result<Vec<multicall::IMulticall3::Result>, RpcError> {
    if !verified {
        *requests += 1;
        let actual = client.chain_id(url)?;
        if actual != plan.chain_id {
            return Err(RpcError::WrongChain {
                expected: plan.chain_id,
                actual,
            });
        }
    }
    if let (Some(address), Some(data)) = (plan.multicall, &plan.aggregate) {
        *requests += 1;
        let returned = client.eth_call(url, &address.to_string(), data)?;
        if !returned.is_empty() {
            return multicall::decode_aggregate3(&returned).map_err(RpcError::Decode);
        }
        // No code at the Multicall3 address (eth_call returns nothing): fall back to a
        // JSON-RPC batch, now and from now on.
        *multicall_missing = true;
    }
    *requests += 1;
    batch::parse(&plan.batch, client.post(url, &batch::body(&plan.batch))?)
}

/// Locks the state; a poisoned lock (a panic elsewhere) still holds usable data.
pub fn lock(state: &Mutex<WalletState>) -> std::sync::MutexGuard<'_, WalletState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Wallet};
    use alloy_sol_types::SolValue;
    use multicall::IMulticall3::Result as CallResult;

    fn state() -> WalletState {
        let env = HashMap::from([(
            "WALLET_ADDRESSES".to_string(),
            "a=0x1111111111111111111111111111111111111111,0x2222222222222222222222222222222222222222"
                .to_string(),
        )]);
        WalletState::new(Config::resolve(FileConfig::default(), &env).expect("config"))
    }

    fn ok(data: Vec<u8>) -> CallResult {
        CallResult {
            success: true,
            returnData: data.into(),
        }
    }

    fn failed() -> CallResult {
        CallResult {
            success: false,
            returnData: Default::default(),
        }
    }

    fn names(families: &[MetricFamily]) -> Vec<String> {
        families.iter().map(|f| f.name().to_string()).collect()
    }

    #[test]
    fn nothing_read_nothing_served() {
        let s = state();
        let families = names(&s.families());
        for absent in [
            "intmax_wallet_eth",
            "intmax_wallet_sitx",
            "intmax_wallet_sitx_total",
            "intmax_wallet_last_check",
            "nodewatch_wallet_token_balance",
        ] {
            assert!(!families.iter().any(|f| f == absent), "{absent}");
        }
        assert!(
            families
                .iter()
                .any(|f| f == "nodewatch_wallet_errors_total")
        );
        assert_eq!(
            s.health().status,
            nodewatch_http::HealthStatus::Degraded,
            "starting"
        );
    }

    #[test]
    fn failed_reads_leave_gaps_not_zeros() {
        let mut s = state();
        assert_eq!(
            s.config.wallets[0],
            Wallet {
                address: "0x1111111111111111111111111111111111111111"
                    .parse()
                    .expect("a"),
                name: Some("a".into()),
            }
        );
        let reads = s.plan();
        let results: Vec<CallResult> = reads
            .iter()
            .map(|r| match r {
                Read::ChainId => ok(U256::from(534_352u64).abi_encode()),
                Read::Decimals { .. } => ok(U256::from(18u64).abi_encode()),
                Read::Symbol { .. } => ok("sITX".to_string().abi_encode()),
                Read::Eth { wallet: 0 } => {
                    ok(U256::from(10u64).pow(U256::from(18u64)).abi_encode())
                }
                // Wallet 1's ETH read and every token balance fail.
                _ => failed(),
            })
            .collect();
        let failed_reads = s.apply(&reads, &results, 1.0).expect("apply");
        assert_eq!(failed_reads.len(), 3);
        let families = s.families();
        let eth = families
            .iter()
            .find(|f| f.name() == "intmax_wallet_eth")
            .expect("eth");
        assert_eq!(eth.get_metric().len(), 1);
        assert_eq!(eth.get_metric()[0].get_gauge().get_value(), 1.0);
        let names = names(&families);
        assert!(!names.iter().any(|f| f == "intmax_wallet_sitx"));
        assert!(!names.iter().any(|f| f == "intmax_wallet_sitx_total"));
    }

    #[test]
    fn wrong_chain_in_the_batch_discards_it() {
        let mut s = state();
        let reads = s.plan();
        let results: Vec<CallResult> = reads
            .iter()
            .map(|r| match r {
                Read::ChainId => ok(U256::from(1u64).abi_encode()),
                _ => ok(U256::from(5u64).abi_encode()),
            })
            .collect();
        assert!(matches!(
            s.apply(&reads, &results, 1.0),
            Err(RpcError::WrongChain { actual: 1, .. })
        ));
        assert!(s.balances.is_empty());
    }
}
