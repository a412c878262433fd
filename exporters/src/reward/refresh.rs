//! One refresh of the on-chain source: `getClaimableReward(period, builder)` of every
//! node and finished period in one Multicall3 `aggregate3` (a JSON-RPC batch when
//! Multicall3 is absent), with the chain id read inside it; endpoints tried in order.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, sol};

use super::{Claimable, RewardConfig, RewardState, lock};
use crate::batch::{self, BatchCall};
use crate::multicall::{self, IMulticall3};
use crate::rpc::{RpcClient, RpcError, redact};
use crate::unix_now;
use crate::wallet::RefreshOutcome;

sol! {
    /// INTMAX's BlockBuilderReward, the view we read.
    interface IBlockBuilderReward {
        function getClaimableReward(uint256 periodNumber, address user) external view returns (uint256);
    }
}

/// The reads of one refresh: the chain id, then the claimable amount of every period,
/// node by node; as Multicall3 `aggregate3` data and as the same JSON-RPC batch.
struct Reads {
    /// Multicall3 in use, if any.
    multicall: Option<Address>,
    /// The `aggregate3` call data, when Multicall3 is in use.
    aggregate: Option<Vec<u8>>,
    /// The same reads as a JSON-RPC batch.
    batch: Vec<BatchCall>,
    /// How many results an answer must hold.
    expected: usize,
}

impl Reads {
    fn new(config: &RewardConfig, periods: &[u64], multicall: Option<Address>) -> Reads {
        // In batch mode the Multicall3 target of a call is never used.
        let target = multicall.unwrap_or(Address::ZERO);
        let mut calls = vec![IMulticall3::Call3 {
            target,
            allowFailure: true,
            callData: Bytes::from(IMulticall3::getChainIdCall {}.abi_encode()),
        }];
        for node in &config.nodes {
            for period in periods {
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
        let batch = batch::from_calls(&calls, target);
        let aggregate = multicall.map(|_| multicall::encode_aggregate3(calls));
        Reads {
            multicall,
            aggregate,
            batch,
            expected,
        }
    }
}

/// What asking the endpoints in order gave.
#[derive(Default)]
struct Answer {
    /// The endpoint that answered, and its results.
    results: Option<(String, Vec<IMulticall3::Result>)>,
    /// The errors of the endpoints that did not.
    errors: Vec<String>,
    /// A 429's `Retry-After` (the first retry delay when it gave none).
    retry_after: Option<Duration>,
    /// No code at the Multicall3 address: read with JSON-RPC batches from now on.
    multicall_missing: bool,
}

impl RewardState {
    /// One refresh of the on-chain source (blocking), then the claims it calls for.
    pub fn refresh(state: &Mutex<RewardState>, client: &RpcClient) -> RefreshOutcome {
        let started = Instant::now();
        let (config, verified, multicall) = {
            let s = lock(state);
            (s.config.clone(), s.verified.clone(), s.multicall)
        };
        let periods: Vec<u64> = config.finished_periods(unix_now() as u64).collect();
        let reads = Reads::new(&config, &periods, multicall);
        let answer = ask_endpoints(state, client, &config, &verified, &reads);
        let mut s = lock(state);
        if answer.multicall_missing && s.multicall.is_some() {
            tracing::warn!(
                multicall = %multicall.unwrap_or(Address::ZERO),
                "no Multicall3 contract at the configured address: reading with JSON-RPC batches"
            );
            s.multicall = None;
        }
        s.last_duration = Some(started.elapsed().as_secs_f64());
        let Some((url, results)) = answer.results else {
            let error = answer.errors.join("; ");
            s.last_error = Some(error.clone());
            for ok in &mut s.node_ok {
                *ok = Some(false);
            }
            return RefreshOutcome {
                ok: false,
                error: Some(error),
                retry_after: answer.retry_after,
            };
        };
        let (outcome, claimable) = s.store_claimable(&config, &periods, &results);
        drop(s);
        Self::claims(state, client, &config, &url, &claimable);
        outcome
    }

    /// Stores what an endpoint answered: per node, its sum only if every period was
    /// read (otherwise its last value stays). Returns the outcome and what each node
    /// can claim.
    fn store_claimable(
        &mut self,
        config: &RewardConfig,
        periods: &[u64],
        results: &[IMulticall3::Result],
    ) -> (RefreshOutcome, Claimable) {
        let mut all_ok = true;
        let mut failed = Vec::new();
        let mut claimable: Claimable = vec![None; config.nodes.len()];
        if periods.is_empty() {
            for (n, c) in claimable.iter_mut().enumerate() {
                self.sitx[n] = Some(0.0);
                self.node_ok[n] = Some(true);
                *c = Some(Vec::new());
            }
        } else {
            for (n, chunk) in results[1..].chunks(periods.len()).enumerate() {
                match per_period(periods, chunk) {
                    Ok(amounts) => {
                        let sum = amounts
                            .iter()
                            .fold(U256::ZERO, |a, (_, v)| a.saturating_add(*v));
                        self.sitx[n] = Some(multicall::to_units(sum, 18));
                        claimable[n] = Some(amounts);
                        self.node_ok[n] = Some(true);
                    }
                    Err(unread) => {
                        let name = &config.nodes[n].name;
                        failed.extend(unread.iter().map(|p| format!("{name}: period {p}")));
                        self.node_ok[n] = Some(false);
                        all_ok = false;
                    }
                }
            }
        }
        for _ in 0..failed.len() {
            *self.errors.entry("reverted").or_insert(0) += 1;
        }
        self.periods_counted = Some(periods.len() as u64);
        if all_ok {
            self.last_check = Some(unix_now());
        }
        let error = (!failed.is_empty()).then(|| format!("reads failed: {}", failed.join(", ")));
        if let Some(e) = &error {
            self.last_error = Some(e.clone());
        }
        let outcome = RefreshOutcome {
            ok: all_ok,
            error,
            retry_after: None,
        };
        (outcome, claimable)
    }
}

/// A node's claimable amount of each period (raw units), or the periods whose read
/// failed.
fn per_period(
    periods: &[u64],
    results: &[IMulticall3::Result],
) -> Result<Vec<(u64, U256)>, Vec<u64>> {
    let mut amounts = Vec::with_capacity(periods.len());
    let mut unread = Vec::new();
    for (period, r) in periods.iter().zip(results) {
        match r
            .success
            .then(|| multicall::decode_u256(&r.returnData).ok())
            .flatten()
        {
            Some(v) => amounts.push((*period, v)),
            None => unread.push(*period),
        }
    }
    if unread.is_empty() {
        Ok(amounts)
    } else {
        Err(unread)
    }
}

/// Asks the endpoints in order until one answers every read; counts the requests and
/// the errors, and which endpoints' chain id is verified.
fn ask_endpoints(
    state: &Mutex<RewardState>,
    client: &RpcClient,
    config: &RewardConfig,
    verified: &[bool],
    reads: &Reads,
) -> Answer {
    let mut answer = Answer::default();
    for (i, url) in config.rpc.urls.iter().enumerate() {
        let mut requests = 0;
        let result = read_endpoint(
            client,
            url,
            config.rpc.chain_id,
            verified[i],
            reads,
            &mut answer.multicall_missing,
            &mut requests,
        );
        lock(state).requests += requests;
        match result {
            Ok(results) => {
                lock(state).verified[i] = true;
                answer.results = Some((url.clone(), results));
                break;
            }
            Err(e) => {
                tracing::warn!(endpoint = %redact(url), error = %e, "reward refresh failed");
                if let RpcError::RateLimited { retry_after: wait } = &e {
                    answer.retry_after = Some(wait.unwrap_or(config.rpc.retry));
                }
                let mut s = lock(state);
                s.verified[i] = false;
                *s.errors.entry(e.kind()).or_insert(0) += 1;
                answer.errors.push(e.to_string());
            }
        }
    }
    answer
}

/// Every read from one endpoint: its chain id first unless `verified`, then one
/// `aggregate3` (or the JSON-RPC batch), whose own chain id read must match too.
fn read_endpoint(
    client: &RpcClient,
    url: &str,
    chain_id: u64,
    verified: bool,
    reads: &Reads,
    multicall_missing: &mut bool,
    requests: &mut u64,
) -> Result<Vec<IMulticall3::Result>, RpcError> {
    if !verified {
        *requests += 1;
        let actual = client.chain_id(url)?;
        if actual != chain_id {
            return Err(RpcError::WrongChain {
                expected: chain_id,
                actual,
            });
        }
    }
    let mut results = None;
    if let (Some(address), Some(data)) = (reads.multicall, &reads.aggregate)
        && !*multicall_missing
    {
        *requests += 1;
        let returned = client.eth_call(url, &address.to_string(), data)?;
        if returned.is_empty() {
            // No code at the Multicall3 address: a JSON-RPC batch, now and from now on.
            *multicall_missing = true;
        } else {
            results = Some(multicall::decode_aggregate3(&returned).map_err(RpcError::Decode)?);
        }
    }
    let results = match results {
        Some(r) => r,
        None => {
            *requests += 1;
            batch::parse(&reads.batch, client.post(url, &batch::body(&reads.batch))?)?
        }
    };
    if results.len() != reads.expected {
        return Err(RpcError::Decode(format!(
            "{} results for {} calls",
            results.len(),
            reads.expected
        )));
    }
    let chain = results[0]
        .success
        .then(|| multicall::decode_u256(&results[0].returnData).ok())
        .flatten()
        .ok_or_else(|| RpcError::Decode("the chain id read failed".into()))?;
    if chain != U256::from(chain_id) {
        return Err(RpcError::WrongChain {
            expected: chain_id,
            actual: u64::try_from(chain).unwrap_or(u64::MAX),
        });
    }
    Ok(results)
}
