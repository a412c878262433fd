//! Auto-claim after a read ([`crate::claim`] builds, signs and follows the
//! transactions): a pending claim is followed by its nonce, and a node whose claimable
//! sITX reaches its threshold gets `batchClaimReward` (a dry run by default).

use std::sync::Mutex;

use alloy_primitives::U256;

use super::{ClaimState, Claimable, NodeConfig, RewardConfig, RewardState, lock};
use crate::claim::{self, ClaimConfig, ClaimError, Followed};
use crate::multicall;
use crate::rpc::RpcClient;

/// Where a claim is sent: the endpoint that answered the read, and the contract.
struct Target<'a> {
    client: &'a RpcClient,
    url: &'a str,
    config: &'a RewardConfig,
}

impl RewardState {
    /// Auto-claim after a read: for each node with `[nodes.claim]` whose periods were
    /// all read, follow its pending transaction, or claim when the threshold is reached.
    pub(super) fn claims(
        state: &Mutex<RewardState>,
        client: &RpcClient,
        config: &RewardConfig,
        url: &str,
        claimable: &Claimable,
    ) {
        let target = Target {
            client,
            url,
            config,
        };
        for (n, node) in config.nodes.iter().enumerate() {
            let (Some(settings), Some(per_period)) = (&node.claim, &claimable[n]) else {
                continue;
            };
            // A pending claim is followed by its nonce; no new one while it is there.
            // A dry run sends nothing, not even a pending claim's re-send or replacement.
            let followed = if settings.dry_run {
                Ok(Followed::NoClaim)
            } else {
                claim::follow(client, url, config.rpc.chain_id, config.contract, settings)
            };
            {
                let mut s = lock(state);
                let c = &mut s.claims[n];
                record_followed(&node.name, c, &followed);
                c.pending = settings.state_file.exists();
            }
            if followed != Ok(Followed::NoClaim) {
                // The claimed periods read 0 from the next refresh on.
                continue;
            }
            claim_if_due(state, &target, n, node, settings, per_period);
        }
    }
}

/// Counts and logs what following a node's pending claim found.
fn record_followed(node: &str, c: &mut ClaimState, followed: &Result<Followed, ClaimError>) {
    match followed {
        Ok(Followed::NoClaim) => {}
        Ok(Followed::Mined {
            hash,
            ok: true,
            sitx,
        }) => {
            tracing::info!(node = %node, tx = %hash, sitx, "claim mined");
            c.confirmed += 1;
            c.claimed_sitx += sitx;
            c.last_ok = Some(true);
            c.last_error = None;
        }
        Ok(Followed::Mined {
            hash, ok: false, ..
        }) => {
            tracing::warn!(node = %node, tx = %hash, "claim reverted");
            *c.failures.entry("reverted").or_insert(0) += 1;
            c.last_ok = Some(false);
            c.last_error = Some(format!("transaction {hash} reverted"));
        }
        Ok(Followed::Superseded { nonce }) => {
            tracing::warn!(node = %node, nonce, "claim dropped: its nonce was used by another transaction");
            *c.failures.entry("dropped").or_insert(0) += 1;
            c.last_ok = Some(false);
            c.last_error = Some(format!(
                "nonce {nonce} was used by another transaction: claim dropped"
            ));
        }
        Ok(Followed::Waiting { hash, resent }) => {
            if *resent {
                tracing::info!(node = %node, tx = %hash, "pending claim unknown to the node: sent the same transaction again");
            }
        }
        Ok(Followed::Replaced {
            hash,
            nonce,
            max_fee_per_gas,
        }) => {
            tracing::info!(node = %node, tx = %hash, nonce, max_fee_per_gas, "claim stuck: replaced at the same nonce with higher fees");
            c.replacements += 1;
        }
        Err(e) => claim_failed(node, c, e),
    }
}

/// Claims the periods with something to claim once their sum reaches the node's
/// threshold: logs the transaction in a dry run, sends it otherwise.
fn claim_if_due(
    state: &Mutex<RewardState>,
    target: &Target<'_>,
    n: usize,
    node: &NodeConfig,
    settings: &ClaimConfig,
    per_period: &[(u64, U256)],
) {
    let Target {
        client,
        url,
        config,
    } = *target;
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
        return;
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
        Err(e) => claim_failed(&node.name, c, &e),
    }
    c.pending = settings.state_file.exists();
}

/// Counts and logs a failed or refused claim step.
fn claim_failed(node: &str, c: &mut ClaimState, e: &ClaimError) {
    match e {
        ClaimError::Refused(refusal) => {
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
