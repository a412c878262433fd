//! Optional auto-claim: when a builder's claimable sITX reaches a threshold, send
//! `batchClaimReward(periods)` as a signed EIP-1559 transaction (a legacy one where the
//! chain has no base fee), through the exporter's own JSON-RPC client.
//!
//! The key is the builder's Scroll key (`batchClaimReward` claims for the sender), read
//! once at start from a file that must be owned by the user running the exporter and
//! readable by nobody else (mode 0600 or 0400); its address must be the node's. A dry
//! run, the default, prepares and signs the transaction, logs what it would send, and
//! sends nothing. The key never appears in logs, errors or metrics.
//!
//! Safety: a claim whose fee per gas or whose worst-case cost (gas limit × max fee)
//! exceeds the node's ceilings is refused, not sent. The signed claim is written to the
//! state dir ([`pending`]) before it is sent, and followed by its nonce until it is
//! mined or the nonce is used by another transaction: after a restart or a send with an
//! unknown result the same transaction is sent again, and a claim stuck for
//! `replace_after_seconds` is replaced at the same nonce with higher fees (within the
//! ceilings). A second nonce is never signed while a claim is pending.

pub mod pending;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::k256::ecdsa::SigningKey;
use alloy_sol_types::{SolCall, sol};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ConfigError;
use crate::rpc::{RpcClient, RpcError, hex_encode, quantity};
use pending::{PendingClaim, StateError};

/// Default ceiling of the fee per gas, in gwei: Scroll's is usually far below 0.1.
pub const DEFAULT_MAX_FEE_PER_GAS_GWEI: f64 = 1.0;
/// Default ceiling of one claim's worst-case cost (gas limit × max fee), in ETH.
pub const DEFAULT_MAX_CLAIM_COST_ETH: f64 = 0.0005;
/// Default wait before a claim not mined is replaced at the same nonce.
pub const DEFAULT_REPLACE_AFTER_SECONDS: u64 = 600;

sol! {
    /// BlockBuilderReward's claim.
    interface IBlockBuilderRewardClaim {
        function batchClaimReward(uint256[] periodNumbers) external;
    }
}

/// `[nodes.claim]` in the TOML file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClaimFile {
    /// The builder's Scroll private key, hex, in a file of mode 0600 owned by the user
    /// running the exporter.
    pub key_file: String,
    /// Claim when the claimable sITX reaches this (in sITX, e.g. `100` or `12.5`).
    pub threshold_sitx: Amount,
    /// `true` (the default): log what would be sent, send nothing.
    pub dry_run: Option<bool>,
    /// Highest max fee per gas (or gas price) a claim may offer, in gwei (default 1).
    pub max_fee_per_gas_gwei: Option<Amount>,
    /// Highest worst-case cost of one claim, gas limit × max fee, in ETH (default
    /// 0.0005).
    pub max_claim_cost_eth: Option<Amount>,
    /// Seconds a sent claim may stay unmined before it is replaced at the same nonce
    /// with higher fees (default 600).
    pub replace_after_seconds: Option<u64>,
}

/// A number written as a TOML integer or float.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Amount {
    /// `100`.
    Integer(u64),
    /// `12.5`.
    Float(f64),
}

impl Amount {
    fn value(self) -> f64 {
        match self {
            Amount::Integer(v) => v as f64,
            Amount::Float(v) => v,
        }
    }
}

/// A signing key; its `Debug` shows the address only.
pub struct ClaimKey {
    key: SigningKey,
    address: Address,
}

impl fmt::Debug for ClaimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimKey({})", self.address)
    }
}

impl ClaimKey {
    /// The key's address.
    pub fn address(&self) -> Address {
        self.address
    }
}

/// A node's auto-claim settings, validated, key loaded.
#[derive(Debug, Clone)]
pub struct ClaimConfig {
    /// The key file (for messages).
    pub key_file: PathBuf,
    /// The key.
    pub key: Arc<ClaimKey>,
    /// In sITX.
    pub threshold_sitx: f64,
    /// Send nothing.
    pub dry_run: bool,
    /// The fee ceilings.
    pub limits: FeeLimits,
    /// When a pending claim is replaced.
    pub replace_after: Duration,
    /// Where the pending claim is kept ([`pending`]).
    pub state_file: PathBuf,
}

/// The ceilings of one claim, wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeLimits {
    /// Highest max fee per gas (EIP-1559) or gas price (legacy).
    pub max_fee_per_gas: u128,
    /// Highest gas limit × max fee per gas.
    pub max_cost: u128,
}

/// Why a key file is refused. The key's content is never part of the message.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Cannot open or stat it.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
    /// Group or others may read or write it.
    #[error(
        "{path} has mode {mode:04o}: a key file must be mode 0600 (readable by its owner only); run `chmod 600 {path}`"
    )]
    Mode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Owned by somebody else.
    #[error(
        "{path} is owned by uid {owner}, not by the user running the exporter (uid {me}); `chown` it to that user"
    )]
    Owner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        me: u32,
    },
    /// Not one hex private key.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong (never the content).
        message: String,
    },
}

/// Reads a private key from `path` after checking the file's owner and mode (on the
/// opened file, so a swap between check and read is caught).
pub fn load_key(path: &Path) -> Result<ClaimKey, KeyError> {
    use std::os::unix::fs::MetadataExt;
    let name = path.display().to_string();
    let read_error = |e: std::io::Error| KeyError::Read {
        path: name.clone(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if !meta.is_file() {
        return Err(KeyError::Format {
            path: name,
            message: "not a regular file".into(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode { path: name, mode });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(KeyError::Owner {
            path: name,
            owner: meta.uid(),
            me,
        });
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|_| KeyError::Format {
            path: name.clone(),
            message: "not text".into(),
        })?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    let bytes = (hex.len() == 64)
        .then(|| crate::rpc::hex_decode(hex))
        .flatten()
        .ok_or_else(|| KeyError::Format {
            path: name.clone(),
            message: "expected one private key: 64 hex digits, optionally 0x-prefixed".into(),
        })?;
    let key = SigningKey::from_slice(&bytes).map_err(|_| KeyError::Format {
        path: name.clone(),
        message: "not a valid secp256k1 private key".into(),
    })?;
    let address = alloy_signer::utils::secret_key_to_address(&key);
    Ok(ClaimKey { key, address })
}

impl ClaimConfig {
    /// Validates `[nodes.claim]` of node `node` whose address is `builder`, loading the
    /// key (refused unless 0600 and ours, and unless its address is the builder's).
    /// The pending claim is kept in `state_dir`.
    pub fn resolve(
        node: usize,
        builder: Address,
        file: &ClaimFile,
        state_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let at = format!("nodes[{node}].claim");
        let wei = |key: &str, value: Option<Amount>, default: f64, scale: f64| {
            let v = value.map(Amount::value).unwrap_or(default);
            let wei = v * scale;
            // Below 1 wei or beyond u128 is a typo, not a ceiling.
            if !(v.is_finite() && v > 0.0 && (1.0..1e36).contains(&wei)) {
                return Err(ConfigError::Invalid {
                    setting: format!("{at}.{key}"),
                    message: format!("{v} is not a positive amount of at least 1 wei"),
                });
            }
            Ok(wei as u128)
        };
        let limits = FeeLimits {
            max_fee_per_gas: wei(
                "max_fee_per_gas_gwei",
                file.max_fee_per_gas_gwei,
                DEFAULT_MAX_FEE_PER_GAS_GWEI,
                1e9,
            )?,
            max_cost: wei(
                "max_claim_cost_eth",
                file.max_claim_cost_eth,
                DEFAULT_MAX_CLAIM_COST_ETH,
                1e18,
            )?,
        };
        let replace_after = file
            .replace_after_seconds
            .unwrap_or(DEFAULT_REPLACE_AFTER_SECONDS);
        if !(1..=7 * 86_400).contains(&replace_after) {
            return Err(ConfigError::Invalid {
                setting: format!("{at}.replace_after_seconds"),
                message: "must be between 1 and 604800 seconds".into(),
            });
        }
        let threshold = file.threshold_sitx.value();
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(ConfigError::Invalid {
                setting: format!("{at}.threshold_sitx"),
                message: "must be a positive number of sITX".into(),
            });
        }
        let key_file = PathBuf::from(&file.key_file);
        let key = load_key(&key_file).map_err(|e| ConfigError::Invalid {
            setting: format!("{at}.key_file"),
            message: e.to_string(),
        })?;
        if key.address != builder {
            return Err(ConfigError::Invalid {
                setting: format!("{at}.key_file"),
                message: format!(
                    "the key is for {}, not for the node's address {builder}: batchClaimReward claims for the sender",
                    key.address
                ),
            });
        }
        Ok(ClaimConfig {
            key_file,
            key: Arc::new(key),
            threshold_sitx: threshold,
            dry_run: file.dry_run.unwrap_or(true),
            limits,
            replace_after: Duration::from_secs(replace_after),
            state_file: pending::state_file(state_dir, builder),
        })
    }
}

/// A claim not sent because it would cost more than the ceilings allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused ({reason}): {message}")]
pub struct Refusal {
    /// The `reason` label: one of [`REFUSAL_REASONS`].
    pub reason: &'static str,
    /// What was over which setting.
    pub message: String,
}

/// Every `reason` label of `nodewatch_reward_claim_refused_total`.
pub const REFUSAL_REASONS: &[&str] = &["fee_per_gas", "total_cost"];

/// Why a claim failed, by the stage it failed in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClaimError {
    /// Nonce, fees or gas could not be read (a revert in `eth_estimateGas` included).
    #[error("preparing the transaction: {0}")]
    Prepare(RpcError),
    /// Over a ceiling: not sent.
    #[error("{0}")]
    Refused(Refusal),
    /// Signing failed.
    #[error("signing the transaction: {0}")]
    Sign(String),
    /// The pending claim could not be written or read: nothing is sent.
    #[error("{0}")]
    State(StateError),
    /// `eth_sendRawTransaction` failed; the claim stays pending and is followed.
    #[error("sending the transaction: {0}")]
    Send(RpcError),
}

impl ClaimError {
    /// The `stage` label of the failure counter (a refusal has its own counter).
    pub fn stage(&self) -> &'static str {
        match self {
            ClaimError::Prepare(_) => "prepare",
            ClaimError::Refused(_) => "refused",
            ClaimError::Sign(_) => "sign",
            ClaimError::State(_) => "state",
            ClaimError::Send(_) => "send",
        }
    }
}

/// Every `stage` label of `nodewatch_reward_claim_failures_total`.
pub const FAILURE_STAGES: &[&str] = &["prepare", "sign", "state", "send", "reverted", "dropped"];

/// The fees of one transaction, wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// Max fee per gas (EIP-1559) or gas price (legacy).
    pub max_fee_per_gas: u128,
    /// Max priority fee per gas (0 for legacy).
    pub max_priority_fee_per_gas: u128,
}

/// What the chain asks for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeeQuote {
    /// An EIP-1559 chain: the latest base fee and the suggested tip.
    Eip1559 {
        /// Base fee of the latest block.
        base_fee: u128,
        /// `eth_maxPriorityFeePerGas` (0 where the node lacks it).
        tip: u128,
    },
    /// No base fee: `eth_gasPrice`.
    Legacy {
        /// The gas price.
        gas_price: u128,
    },
}

fn gwei(wei: u128) -> String {
    format!("{} gwei", wei as f64 / 1e9)
}

/// A replacement must beat the old fees by at least 10% (geth's rule); 12.5% and a wei.
fn bump(fee: u128) -> u128 {
    fee.saturating_add(fee / 8).saturating_add(1)
}

/// The fees of a claim under `limits`, or why there are none. With `previous` (a
/// replacement) both fees beat the previous ones by 12.5%.
pub fn choose_fees(
    quote: FeeQuote,
    limits: &FeeLimits,
    previous: Option<&Fees>,
) -> Result<Fees, Refusal> {
    let ceiling = limits.max_fee_per_gas;
    let over = |what: &str, wei: u128| Refusal {
        reason: "fee_per_gas",
        message: format!(
            "{what} {} is above max_fee_per_gas_gwei ({})",
            gwei(wei),
            gwei(ceiling)
        ),
    };
    let floor = previous.map(|p| bump(p.max_fee_per_gas)).unwrap_or(0);
    if floor > ceiling {
        return Err(over("the replacement's fee per gas", floor));
    }
    match quote {
        FeeQuote::Eip1559 { base_fee, tip } => {
            if base_fee > ceiling {
                return Err(over("the base fee", base_fee));
            }
            // Room for the base fee to double before inclusion, capped at the ceiling.
            let max_fee = base_fee
                .saturating_mul(2)
                .saturating_add(tip)
                .max(floor)
                .min(ceiling);
            let tip = previous
                .map(|p| tip.max(bump(p.max_priority_fee_per_gas)))
                .unwrap_or(tip)
                .min(max_fee);
            Ok(Fees {
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
            })
        }
        FeeQuote::Legacy { gas_price } => {
            let price = gas_price.max(floor);
            if price > ceiling {
                return Err(over("the gas price", price));
            }
            Ok(Fees {
                max_fee_per_gas: price,
                max_priority_fee_per_gas: 0,
            })
        }
    }
}

/// Refuses a claim whose worst case, `gas_limit` × max fee, is over the cost ceiling.
pub fn check_cost(gas_limit: u64, fees: &Fees, limits: &FeeLimits) -> Result<(), Refusal> {
    let cost = u128::from(gas_limit).saturating_mul(fees.max_fee_per_gas);
    if cost > limits.max_cost {
        return Err(Refusal {
            reason: "total_cost",
            message: format!(
                "gas limit {gas_limit} × {} = {} ETH is above max_claim_cost_eth ({} ETH)",
                gwei(fees.max_fee_per_gas),
                cost as f64 / 1e18,
                limits.max_cost as f64 / 1e18
            ),
        });
    }
    Ok(())
}

/// A signed transaction, ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// EIP-2718 encoding.
    pub raw: Vec<u8>,
    /// Its hash.
    pub hash: B256,
    /// Nonce used.
    pub nonce: u64,
    /// Gas limit.
    pub gas_limit: u64,
    /// Max fee (EIP-1559) or gas price (legacy), wei.
    pub fee_per_gas: u128,
    /// Max priority fee (EIP-1559), wei; 0 for legacy.
    pub priority_fee_per_gas: u128,
    /// "eip1559" or "legacy".
    pub kind: &'static str,
}

/// The calldata of `batchClaimReward(periods)`.
pub fn calldata(periods: &[u64]) -> Vec<u8> {
    IBlockBuilderRewardClaim::batchClaimRewardCall {
        periodNumbers: periods.iter().map(|p| U256::from(*p)).collect(),
    }
    .abi_encode()
}

fn small<T: TryFrom<U256>>(value: U256, what: &str) -> Result<T, RpcError> {
    T::try_from(value).map_err(|_| RpcError::Malformed(format!("{what} {value} is out of range")))
}

/// The account's nonce at `tag` ("latest": mined transactions only).
fn nonce_at(client: &RpcClient, url: &str, from: Address, tag: &str) -> Result<u64, RpcError> {
    client.call_quantity(
        url,
        "eth_getTransactionCount",
        json!([from.to_string(), tag]),
    )
}

/// The fees the chain asks for now.
fn quote(client: &RpcClient, url: &str) -> Result<FeeQuote, RpcError> {
    let block = client.call(url, "eth_getBlockByNumber", json!(["latest", false]))?;
    match block.get("baseFeePerGas") {
        Some(v) if !v.is_null() => {
            let base_fee = small(quantity(v, "baseFeePerGas")?, "base fee")?;
            // The tip the node suggests; some nodes lack the method: then no tip.
            let tip = match client.call_quantity(url, "eth_maxPriorityFeePerGas", json!([])) {
                Ok(tip) => tip,
                Err(RpcError::Rpc { .. }) => 0,
                Err(e) => return Err(e),
            };
            Ok(FeeQuote::Eip1559 { base_fee, tip })
        }
        _ => Ok(FeeQuote::Legacy {
            gas_price: client.call_quantity(url, "eth_gasPrice", json!([]))?,
        }),
    }
}

/// Signs the claim of `periods` at `nonce` with `fees` (legacy without a base fee).
#[allow(clippy::too_many_arguments)]
fn sign(
    chain_id: u64,
    contract: Address,
    key: &ClaimKey,
    nonce: u64,
    gas_limit: u64,
    fees: Fees,
    legacy: bool,
    periods: &[u64],
) -> Result<Prepared, ClaimError> {
    let input = Bytes::from(calldata(periods));
    let signature = |hash: B256| -> Result<alloy_primitives::Signature, ClaimError> {
        let (signature, recovery) = key
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| ClaimError::Sign(e.to_string()))?;
        Ok(alloy_primitives::Signature::from((signature, recovery)))
    };
    let (raw, hash, kind) = if legacy {
        let tx = TxLegacy {
            chain_id: Some(chain_id),
            nonce,
            gas_price: fees.max_fee_per_gas,
            gas_limit,
            to: TxKind::Call(contract),
            value: U256::ZERO,
            input,
        };
        let hash = tx.signature_hash();
        let signed = tx.into_signed(signature(hash)?);
        (signed.encoded_2718(), *signed.hash(), "legacy")
    } else {
        let tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(contract),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let hash = tx.signature_hash();
        let signed = tx.into_signed(signature(hash)?);
        (signed.encoded_2718(), *signed.hash(), "eip1559")
    };
    Ok(Prepared {
        raw,
        hash,
        nonce,
        gas_limit,
        fee_per_gas: fees.max_fee_per_gas,
        priority_fee_per_gas: fees.max_priority_fee_per_gas,
        kind,
    })
}

/// Reads nonce, fees and gas from `url`, checks them against `limits`, and builds and
/// signs the claim of `periods`.
pub fn prepare(
    client: &RpcClient,
    url: &str,
    chain_id: u64,
    contract: Address,
    key: &ClaimKey,
    periods: &[u64],
    limits: &FeeLimits,
) -> Result<Prepared, ClaimError> {
    let from = key.address;
    // The mined nonce, not "pending": were a claim of ours in flight that the state
    // file does not know, this one would replace it, never add a second one.
    let nonce = nonce_at(client, url, from, "latest").map_err(ClaimError::Prepare)?;
    let estimate: u64 = client.call_quantity(
        url,
        "eth_estimateGas",
        json!([{"from": from.to_string(), "to": contract.to_string(), "data": hex_encode(&calldata(periods))}]),
    )
    .map_err(ClaimError::Prepare)?;
    // A margin over the estimate: state may move between estimate and inclusion.
    let gas_limit = estimate.saturating_add(estimate / 4).saturating_add(10_000);
    let quote = quote(client, url).map_err(ClaimError::Prepare)?;
    let fees = choose_fees(quote, limits, None).map_err(ClaimError::Refused)?;
    check_cost(gas_limit, &fees, limits).map_err(ClaimError::Refused)?;
    sign(
        chain_id,
        contract,
        key,
        nonce,
        gas_limit,
        fees,
        matches!(quote, FeeQuote::Legacy { .. }),
        periods,
    )
}

/// `eth_sendRawTransaction`; returns the hash the node reports.
pub fn send(client: &RpcClient, url: &str, raw: &[u8], hash: B256) -> Result<String, ClaimError> {
    let result = client
        .call(url, "eth_sendRawTransaction", json!([hex_encode(raw)]))
        .map_err(ClaimError::Send)?;
    Ok(result
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| hash.to_string()))
}

/// Persists `prepared` as the node's pending claim, then sends it. A failed send
/// leaves it pending: [`follow`] sends the same transaction again.
pub fn send_new(
    client: &RpcClient,
    url: &str,
    settings: &ClaimConfig,
    prepared: &Prepared,
    periods: &[u64],
    sitx: f64,
) -> Result<String, ClaimError> {
    let claim = PendingClaim {
        nonce: prepared.nonce,
        hashes: vec![prepared.hash.to_string()],
        raw: hex_encode(&prepared.raw),
        kind: prepared.kind.to_string(),
        gas_limit: prepared.gas_limit,
        max_fee_per_gas: prepared.fee_per_gas,
        max_priority_fee_per_gas: prepared.priority_fee_per_gas,
        periods: periods.to_vec(),
        sitx,
        signed_at_unix: crate::unix_now() as u64,
    };
    pending::store(&settings.state_file, &claim).map_err(ClaimError::State)?;
    send(client, url, &prepared.raw, prepared.hash)
}

/// `eth_getTransactionReceipt`: `None` while pending, else whether it succeeded.
pub fn receipt(client: &RpcClient, url: &str, hash: &str) -> Result<Option<bool>, RpcError> {
    let receipt = client.call(url, "eth_getTransactionReceipt", json!([hash]))?;
    if receipt.is_null() {
        return Ok(None);
    }
    Ok(Some(
        receipt.get("status").and_then(Value::as_str) == Some("0x1"),
    ))
}

/// What following the pending claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// No claim pending: a new one may be prepared.
    NoClaim,
    /// Mined (`ok`: succeeded), the state file removed.
    Mined {
        /// The version that was mined.
        hash: String,
        /// Whether it succeeded.
        ok: bool,
        /// sITX claimed.
        sitx: f64,
    },
    /// The nonce was used by a transaction this exporter did not sign; state removed.
    Superseded {
        /// The claim's nonce.
        nonce: u64,
    },
    /// Still pending (`resent`: the node did not know it, the same bytes were sent).
    Waiting {
        /// The newest version.
        hash: String,
        /// Sent again.
        resent: bool,
    },
    /// Stuck past `replace_after`: a version with higher fees was sent at the same nonce.
    Replaced {
        /// The new version.
        hash: String,
        /// Its nonce (the claim's).
        nonce: u64,
        /// Its max fee per gas, wei.
        max_fee_per_gas: u128,
    },
}

/// Follows the node's pending claim, if any, by its nonce: mined (a receipt of one of
/// its versions), superseded (the account's mined nonce moved past it without one),
/// or still pending: sent again as is when the node does not know it, replaced at the
/// same nonce with higher fees (within the ceilings) once stuck.
pub fn follow(
    client: &RpcClient,
    url: &str,
    chain_id: u64,
    contract: Address,
    settings: &ClaimConfig,
) -> Result<Followed, ClaimError> {
    let path = &settings.state_file;
    let Some(mut claim) = pending::load(path).map_err(ClaimError::State)? else {
        return Ok(Followed::NoClaim);
    };
    // The nonce first: a version mined after this read still has its receipt below.
    let mined_nonce =
        nonce_at(client, url, settings.key.address, "latest").map_err(ClaimError::Prepare)?;
    for hash in &claim.hashes {
        if let Some(ok) = receipt(client, url, hash).map_err(ClaimError::Prepare)? {
            pending::remove(path).map_err(ClaimError::State)?;
            return Ok(Followed::Mined {
                hash: hash.clone(),
                ok,
                sitx: claim.sitx,
            });
        }
    }
    if mined_nonce > claim.nonce {
        pending::remove(path).map_err(ClaimError::State)?;
        return Ok(Followed::Superseded { nonce: claim.nonce });
    }
    let newest = claim.hashes.last().cloned().unwrap_or_default();
    let raw = crate::rpc::hex_decode(&claim.raw).ok_or_else(|| {
        ClaimError::State(StateError {
            path: path.display().to_string(),
            message: "raw transaction is not hex".into(),
        })
    })?;
    let hash: B256 = newest.parse().map_err(|_| {
        ClaimError::State(StateError {
            path: path.display().to_string(),
            message: format!("{newest:?} is not a transaction hash"),
        })
    })?;
    let now = crate::unix_now() as u64;
    if now.saturating_sub(claim.signed_at_unix) >= settings.replace_after.as_secs() {
        let previous = Fees {
            max_fee_per_gas: claim.max_fee_per_gas,
            max_priority_fee_per_gas: claim.max_priority_fee_per_gas,
        };
        let quote = quote(client, url).map_err(ClaimError::Prepare)?;
        let legacy = claim.kind == "legacy";
        // The kind the claim was signed with stays; only the fees move.
        let quote = match (quote, legacy) {
            (FeeQuote::Eip1559 { base_fee, tip }, true) => FeeQuote::Legacy {
                gas_price: base_fee.saturating_add(tip),
            },
            (FeeQuote::Legacy { gas_price }, false) => FeeQuote::Eip1559 {
                base_fee: gas_price,
                tip: 0,
            },
            (q, _) => q,
        };
        let fees = choose_fees(quote, &settings.limits, Some(&previous))
            .and_then(|fees| check_cost(claim.gas_limit, &fees, &settings.limits).map(|()| fees));
        match fees {
            Ok(fees) => {
                let prepared = sign(
                    chain_id,
                    contract,
                    &settings.key,
                    claim.nonce,
                    claim.gas_limit,
                    fees,
                    legacy,
                    &claim.periods,
                )?;
                claim.hashes.push(prepared.hash.to_string());
                claim.raw = hex_encode(&prepared.raw);
                claim.max_fee_per_gas = fees.max_fee_per_gas;
                claim.max_priority_fee_per_gas = fees.max_priority_fee_per_gas;
                claim.signed_at_unix = now;
                pending::store(path, &claim).map_err(ClaimError::State)?;
                send(client, url, &prepared.raw, prepared.hash)?;
                return Ok(Followed::Replaced {
                    hash: prepared.hash.to_string(),
                    nonce: claim.nonce,
                    max_fee_per_gas: fees.max_fee_per_gas,
                });
            }
            Err(refusal) => {
                // The old version stays pending; below it is sent again if needed.
                resend_if_unknown(client, url, &raw, hash)?;
                return Err(ClaimError::Refused(refusal));
            }
        }
    }
    let resent = resend_if_unknown(client, url, &raw, hash)?;
    Ok(Followed::Waiting {
        hash: newest,
        resent,
    })
}

/// Sends `raw` again when the node does not know `hash` (a send whose result was
/// unknown, a restart, a node that dropped it). Same bytes, same nonce: never a second
/// transaction.
fn resend_if_unknown(
    client: &RpcClient,
    url: &str,
    raw: &[u8],
    hash: B256,
) -> Result<bool, ClaimError> {
    let known = client
        .call(url, "eth_getTransactionByHash", json!([hash.to_string()]))
        .map_err(ClaimError::Prepare)?;
    if !known.is_null() {
        return Ok(false);
    }
    send(client, url, raw, hash)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // anvil's well-known account #1 (a test key, public).
    const KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const ADDRESS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    fn key_file(dir: &Path, mode: u32, content: &str) -> PathBuf {
        let path = dir.join("claim.key");
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn key_files_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = key_file(dir.path(), 0o600, &format!("{KEY}\n"));
        let key = load_key(&path).expect("0600");
        assert_eq!(key.address().to_string(), ADDRESS);
        assert!(!format!("{key:?}").contains(&KEY[2..]));

        let path = key_file(dir.path(), 0o644, KEY);
        let e = load_key(&path).expect_err("0644").to_string();
        assert!(e.contains("mode 0644") && e.contains("0600"), "{e}");
        assert!(!e.contains(&KEY[2..]));

        let path = key_file(dir.path(), 0o600, "not a key at all");
        let e = load_key(&path).expect_err("format").to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(!e.contains("not a key"));

        let missing = dir.path().join("missing");
        assert!(load_key(&missing).is_err());
    }

    #[test]
    fn key_must_be_the_builders() {
        let dir = tempfile::tempdir().expect("dir");
        let path = key_file(dir.path(), 0o600, KEY);
        let file = ClaimFile {
            key_file: path.display().to_string(),
            threshold_sitx: Amount::Integer(10),
            dry_run: None,
            max_fee_per_gas_gwei: None,
            max_claim_cost_eth: None,
            replace_after_seconds: None,
        };
        let ok =
            ClaimConfig::resolve(0, ADDRESS.parse().expect("a"), &file, dir.path()).expect("ok");
        assert!(ok.dry_run, "dry run by default");
        assert_eq!(ok.limits.max_fee_per_gas, 1_000_000_000);
        assert_eq!(ok.limits.max_cost, 500_000_000_000_000);
        assert_eq!(ok.replace_after, Duration::from_secs(600));
        assert!(ok.state_file.starts_with(dir.path()));
        let e = ClaimConfig::resolve(0, Address::repeat_byte(1), &file, dir.path())
            .expect_err("other address")
            .to_string();
        assert!(e.contains("nodes[0].claim.key_file"), "{e}");
    }

    #[test]
    fn claim_calldata() {
        let data = calldata(&[0, 2]);
        // batchClaimReward(uint256[])
        assert_eq!(
            &data[..4],
            &alloy_primitives::keccak256("batchClaimReward(uint256[])")[..4]
        );
        assert_eq!(data.len(), 4 + 32 * 4);
    }

    const GWEI: u128 = 1_000_000_000;

    fn limits(max_fee_gwei: u128, max_cost_wei: u128) -> FeeLimits {
        FeeLimits {
            max_fee_per_gas: max_fee_gwei * GWEI,
            max_cost: max_cost_wei,
        }
    }

    #[test]
    fn fees_stay_under_the_ceiling() {
        let quote = FeeQuote::Eip1559 {
            base_fee: GWEI / 10,
            tip: GWEI / 100,
        };
        let fees = choose_fees(quote, &limits(1, u128::MAX), None).expect("fees");
        assert_eq!(fees.max_fee_per_gas, 2 * GWEI / 10 + GWEI / 100);
        assert_eq!(fees.max_priority_fee_per_gas, GWEI / 100);
        // 2 × base + tip above the ceiling: capped at it, still enough for the base fee.
        let quote = FeeQuote::Eip1559 {
            base_fee: 8 * GWEI / 10,
            tip: GWEI,
        };
        let fees = choose_fees(quote, &limits(1, u128::MAX), None).expect("capped");
        assert_eq!(fees.max_fee_per_gas, GWEI);
        assert_eq!(fees.max_priority_fee_per_gas, GWEI);
        // A base fee over the ceiling cannot be paid under it: refused.
        let quote = FeeQuote::Eip1559 {
            base_fee: 2 * GWEI,
            tip: 0,
        };
        let refusal = choose_fees(quote, &limits(1, u128::MAX), None).expect_err("over");
        assert_eq!(refusal.reason, "fee_per_gas");
        assert!(
            refusal.message.contains("max_fee_per_gas_gwei"),
            "{refusal}"
        );
        let legacy = FeeQuote::Legacy {
            gas_price: 3 * GWEI,
        };
        assert_eq!(
            choose_fees(legacy, &limits(1, u128::MAX), None)
                .expect_err("legacy over")
                .reason,
            "fee_per_gas"
        );
        assert_eq!(
            choose_fees(legacy, &limits(5, u128::MAX), None)
                .expect("legacy")
                .max_fee_per_gas,
            3 * GWEI
        );
    }

    #[test]
    fn replacements_beat_the_old_fees_within_the_ceiling() {
        let previous = Fees {
            max_fee_per_gas: 2 * GWEI,
            max_priority_fee_per_gas: GWEI,
        };
        let quote = FeeQuote::Eip1559 {
            base_fee: GWEI / 2,
            tip: GWEI / 2,
        };
        let fees = choose_fees(quote, &limits(10, u128::MAX), Some(&previous)).expect("bump");
        assert!(fees.max_fee_per_gas > previous.max_fee_per_gas * 9 / 8);
        assert!(fees.max_priority_fee_per_gas > previous.max_priority_fee_per_gas * 9 / 8);
        assert!(fees.max_priority_fee_per_gas <= fees.max_fee_per_gas);
        // The old fee is already at the ceiling: no room for a replacement.
        let refusal =
            choose_fees(quote, &limits(2, u128::MAX), Some(&previous)).expect_err("no room");
        assert_eq!(refusal.reason, "fee_per_gas");
        assert!(refusal.message.contains("replacement"), "{refusal}");
        let legacy_previous = Fees {
            max_fee_per_gas: GWEI,
            max_priority_fee_per_gas: 0,
        };
        let fees = choose_fees(
            FeeQuote::Legacy { gas_price: GWEI },
            &limits(10, u128::MAX),
            Some(&legacy_previous),
        )
        .expect("legacy bump");
        assert_eq!(fees.max_fee_per_gas, GWEI + GWEI / 8 + 1);
    }

    #[test]
    fn total_cost_is_gas_limit_times_max_fee() {
        let fees = Fees {
            max_fee_per_gas: GWEI,
            max_priority_fee_per_gas: 0,
        };
        // 100 000 gas × 1 gwei = 0.0001 ETH.
        check_cost(100_000, &fees, &limits(1, 100_000 * GWEI)).expect("exactly at");
        let refusal = check_cost(100_001, &fees, &limits(1, 100_000 * GWEI)).expect_err("over");
        assert_eq!(refusal.reason, "total_cost");
        assert!(refusal.message.contains("max_claim_cost_eth"), "{refusal}");
        assert!(
            check_cost(
                u64::MAX,
                &Fees {
                    max_fee_per_gas: u128::MAX,
                    max_priority_fee_per_gas: 0
                },
                &limits(1, u128::MAX - 1)
            )
            .is_err()
        );
    }

    #[test]
    fn ceilings_are_read_and_bounded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = key_file(dir.path(), 0o600, KEY);
        let mut file = ClaimFile {
            key_file: path.display().to_string(),
            threshold_sitx: Amount::Integer(10),
            dry_run: Some(false),
            max_fee_per_gas_gwei: Some(Amount::Float(0.05)),
            max_claim_cost_eth: Some(Amount::Float(0.0001)),
            replace_after_seconds: Some(120),
        };
        let builder: Address = ADDRESS.parse().expect("a");
        let c = ClaimConfig::resolve(3, builder, &file, dir.path()).expect("ok");
        assert_eq!(c.limits.max_fee_per_gas, 50_000_000);
        assert_eq!(c.limits.max_cost, 100_000_000_000_000);
        assert_eq!(c.replace_after, Duration::from_secs(120));
        for (setting, change) in [
            (
                "nodes[3].claim.max_fee_per_gas_gwei",
                (|f: &mut ClaimFile| f.max_fee_per_gas_gwei = Some(Amount::Float(-1.0)))
                    as fn(&mut ClaimFile),
            ),
            ("nodes[3].claim.max_fee_per_gas_gwei", |f| {
                f.max_fee_per_gas_gwei = Some(Amount::Float(f64::NAN))
            }),
            ("nodes[3].claim.max_claim_cost_eth", |f| {
                f.max_claim_cost_eth = Some(Amount::Integer(0))
            }),
            ("nodes[3].claim.max_claim_cost_eth", |f| {
                f.max_claim_cost_eth = Some(Amount::Float(1e30))
            }),
            ("nodes[3].claim.replace_after_seconds", |f| {
                f.replace_after_seconds = Some(0)
            }),
        ] {
            let mut bad = file.clone();
            change(&mut bad);
            let e = ClaimConfig::resolve(3, builder, &bad, dir.path())
                .expect_err(setting)
                .to_string();
            assert!(e.contains(setting), "{setting}: {e}");
        }
        file.max_fee_per_gas_gwei = None;
        assert_eq!(
            ClaimConfig::resolve(3, builder, &file, dir.path())
                .expect("default")
                .limits
                .max_fee_per_gas,
            GWEI
        );
    }

    #[test]
    fn example_claim_table_parses() {
        // The example keeps [nodes.claim] commented out (it needs a real key file):
        // uncommented, its keys must still be the ones this exporter reads.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/reward-exporter.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let table: String = text
            .lines()
            .skip_while(|l| l.trim() != "# [nodes.claim]")
            .skip(1)
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let file: ClaimFile = toml::from_str(&table).expect("the example's claim keys");
        assert_eq!(file.max_fee_per_gas_gwei, Some(Amount::Integer(1)));
        assert_eq!(file.max_claim_cost_eth, Some(Amount::Float(0.0005)));
        assert_eq!(file.replace_after_seconds, Some(600));
        assert_eq!(file.dry_run, Some(true));
    }
}
