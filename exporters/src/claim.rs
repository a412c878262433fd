//! Optional auto-claim: when a builder's claimable sITX reaches a threshold, send
//! `batchClaimReward(periods)` as a signed EIP-1559 transaction (a legacy one where the
//! chain has no base fee), through the exporter's own JSON-RPC client.
//!
//! The key is the builder's Scroll key (`batchClaimReward` claims for the sender), read
//! once at start from a file that must be owned by the user running the exporter and
//! readable by nobody else (mode 0600 or 0400); its address must be the node's. A dry
//! run, the default, prepares and signs the transaction, logs what it would send, and
//! sends nothing. The key never appears in logs, errors or metrics.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::k256::ecdsa::SigningKey;
use alloy_sol_types::{SolCall, sol};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::ConfigError;
use crate::rpc::{RpcClient, RpcError, hex_encode};

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
    pub fn resolve(node: usize, builder: Address, file: &ClaimFile) -> Result<Self, ConfigError> {
        let at = format!("nodes[{node}].claim");
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
        })
    }
}

/// Why a claim failed, by the stage it failed in.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClaimError {
    /// Nonce, fees or gas could not be read (a revert in `eth_estimateGas` included).
    #[error("preparing the transaction: {0}")]
    Prepare(RpcError),
    /// Signing failed.
    #[error("signing the transaction: {0}")]
    Sign(String),
    /// `eth_sendRawTransaction` failed.
    #[error("sending the transaction: {0}")]
    Send(RpcError),
}

impl ClaimError {
    /// The `stage` label of the failure counter.
    pub fn stage(&self) -> &'static str {
        match self {
            ClaimError::Prepare(_) => "prepare",
            ClaimError::Sign(_) => "sign",
            ClaimError::Send(_) => "send",
        }
    }
}

/// Every `stage` label of `nodewatch_reward_claim_failures_total`.
pub const FAILURE_STAGES: &[&str] = &["prepare", "sign", "send", "reverted", "dropped"];

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

fn quantity(value: &Value, what: &str) -> Result<U256, RpcError> {
    value
        .as_str()
        .and_then(|t| U256::from_str_radix(t.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| RpcError::Malformed(format!("{what}: {value}")))
}

fn small<T: TryFrom<U256>>(value: U256, what: &str) -> Result<T, RpcError> {
    T::try_from(value).map_err(|_| RpcError::Malformed(format!("{what} {value} is out of range")))
}

/// Reads nonce, fees and gas from `url`, and builds and signs the claim of `periods`.
pub fn prepare(
    client: &RpcClient,
    url: &str,
    chain_id: u64,
    contract: Address,
    key: &ClaimKey,
    periods: &[u64],
) -> Result<Prepared, ClaimError> {
    let from = key.address.to_string();
    let data = calldata(periods);
    let call = |method: &str, params: Value| {
        client
            .call(url, method, params)
            .map_err(ClaimError::Prepare)
    };
    let nonce: u64 = small(
        quantity(
            &call("eth_getTransactionCount", json!([from, "pending"]))?,
            "nonce",
        )
        .map_err(ClaimError::Prepare)?,
        "nonce",
    )
    .map_err(ClaimError::Prepare)?;
    let estimate: u64 = small(
        quantity(
            &call(
                "eth_estimateGas",
                json!([{"from": from, "to": contract.to_string(), "data": hex_encode(&data)}]),
            )?,
            "eth_estimateGas",
        )
        .map_err(ClaimError::Prepare)?,
        "gas estimate",
    )
    .map_err(ClaimError::Prepare)?;
    // A margin over the estimate: state may move between estimate and inclusion.
    let gas_limit = estimate.saturating_add(estimate / 4).saturating_add(10_000);
    let block = call("eth_getBlockByNumber", json!(["latest", false]))?;
    let base_fee = match block.get("baseFeePerGas") {
        Some(v) if !v.is_null() => Some(
            small::<u128>(
                quantity(v, "baseFeePerGas").map_err(ClaimError::Prepare)?,
                "base fee",
            )
            .map_err(ClaimError::Prepare)?,
        ),
        _ => None,
    };
    let input = Bytes::from(data);
    let sign = |hash: B256| -> Result<alloy_primitives::Signature, ClaimError> {
        let (signature, recovery) = key
            .key
            .sign_prehash_recoverable(hash.as_slice())
            .map_err(|e| ClaimError::Sign(e.to_string()))?;
        Ok(alloy_primitives::Signature::from((signature, recovery)))
    };
    match base_fee {
        Some(base_fee) => {
            // The tip the node suggests; some nodes lack the method: then no tip.
            let tip = match client.call(url, "eth_maxPriorityFeePerGas", json!([])) {
                Ok(v) => small::<u128>(
                    quantity(&v, "eth_maxPriorityFeePerGas").map_err(ClaimError::Prepare)?,
                    "tip",
                )
                .map_err(ClaimError::Prepare)?,
                Err(RpcError::Rpc { .. }) => 0,
                Err(e) => return Err(ClaimError::Prepare(e)),
            };
            let max_fee = base_fee.saturating_mul(2).saturating_add(tip);
            let tx = TxEip1559 {
                chain_id,
                nonce,
                gas_limit,
                max_fee_per_gas: max_fee,
                max_priority_fee_per_gas: tip,
                to: TxKind::Call(contract),
                value: U256::ZERO,
                access_list: Default::default(),
                input,
            };
            let hash = tx.signature_hash();
            let signed = tx.into_signed(sign(hash)?);
            Ok(Prepared {
                raw: signed.encoded_2718(),
                hash: *signed.hash(),
                nonce,
                gas_limit,
                fee_per_gas: max_fee,
                kind: "eip1559",
            })
        }
        None => {
            let gas_price: u128 = small(
                quantity(&call("eth_gasPrice", json!([]))?, "eth_gasPrice")
                    .map_err(ClaimError::Prepare)?,
                "gas price",
            )
            .map_err(ClaimError::Prepare)?;
            let tx = TxLegacy {
                chain_id: Some(chain_id),
                nonce,
                gas_price,
                gas_limit,
                to: TxKind::Call(contract),
                value: U256::ZERO,
                input,
            };
            let hash = tx.signature_hash();
            let signed = tx.into_signed(sign(hash)?);
            Ok(Prepared {
                raw: signed.encoded_2718(),
                hash: *signed.hash(),
                nonce,
                gas_limit,
                fee_per_gas: gas_price,
                kind: "legacy",
            })
        }
    }
}

/// `eth_sendRawTransaction`; returns the hash the node reports.
pub fn send(client: &RpcClient, url: &str, prepared: &Prepared) -> Result<String, ClaimError> {
    let result = client
        .call(
            url,
            "eth_sendRawTransaction",
            json!([hex_encode(&prepared.raw)]),
        )
        .map_err(ClaimError::Send)?;
    Ok(result
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| prepared.hash.to_string()))
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
        };
        let ok = ClaimConfig::resolve(0, ADDRESS.parse().expect("a"), &file).expect("ok");
        assert!(ok.dry_run, "dry run by default");
        let e = ClaimConfig::resolve(0, Address::repeat_byte(1), &file)
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
}
