//! The pending claim on disk: one JSON file per builder in the exporter's state dir,
//! written atomically (temporary file, fsync, rename, fsync of the dir) *before* the
//! transaction is sent, so a restart or a send with an unknown result finds it and
//! reconciles by nonce instead of signing at the next one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// A claim signed at `nonce` and not yet known to be mined or superseded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingClaim {
    /// The nonce every version of this claim uses.
    pub nonce: u64,
    /// Every hash signed at this nonce (a replacement adds one), newest last.
    pub hashes: Vec<String>,
    /// The newest signed transaction, hex (EIP-2718), re-sent as is while unknown to
    /// the node.
    pub raw: String,
    /// "eip1559" or "legacy".
    pub kind: String,
    /// Gas limit.
    pub gas_limit: u64,
    /// Max fee per gas (EIP-1559) or gas price (legacy), wei.
    pub max_fee_per_gas: u128,
    /// Max priority fee per gas, wei (0 for legacy).
    pub max_priority_fee_per_gas: u128,
    /// The periods claimed.
    pub periods: Vec<u64>,
    /// sITX claimed, for the counters.
    pub sitx: f64,
    /// Unix time the newest version was signed; a replacement is due
    /// `replace_after_seconds` later.
    pub signed_at_unix: u64,
}

/// Why the state file cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("claim state {path}: {message}")]
pub struct StateError {
    /// The file or dir.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// The state file of the builder `address` in `state_dir`.
pub fn state_file(state_dir: &Path, address: Address) -> PathBuf {
    state_dir.join(format!("claim-{}.json", address.to_string().to_lowercase()))
}

fn error(path: &Path, message: impl ToString) -> StateError {
    StateError {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Reads the pending claim; `None` if there is none. A file that cannot be read or
/// parsed is an error: the caller then sends nothing (it might be a claim in flight).
pub fn load(path: &Path) -> Result<Option<PendingClaim>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            error(
                path,
                format!(
                    "unreadable ({e}); move it away only after checking the builder's transactions"
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(path, e)),
    }
}

/// Writes `claim` to `path` atomically, creating its dir (mode 0700) if needed.
pub fn store(path: &Path, claim: &PendingClaim) -> Result<(), StateError> {
    let dir = path
        .parent()
        .ok_or_else(|| error(path, "has no parent directory"))?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| error(dir, e))?;
    let text = serde_json::to_vec_pretty(claim).map_err(|e| error(path, e))?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| error(&tmp, e))?;
    file.write_all(&text).map_err(|e| error(&tmp, e))?;
    file.sync_all().map_err(|e| error(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| error(path, e))?;
    sync_dir(dir)
}

/// Removes the pending claim (mined, reverted or superseded).
pub fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => path.parent().map(sync_dir).unwrap_or(Ok(())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error(path, e)),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| error(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn claim() -> PendingClaim {
        PendingClaim {
            nonce: 7,
            hashes: vec!["0xaa".into()],
            raw: "0x02f8".into(),
            kind: "eip1559".into(),
            gas_limit: 150_000,
            max_fee_per_gas: 3_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            periods: vec![0, 2],
            sitx: 5.0,
            signed_at_unix: 1_700_000_000,
        }
    }

    #[test]
    fn stored_claim_reads_back_and_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let state_dir = dir.path().join("state");
        let path = state_file(&state_dir, Address::repeat_byte(0xab));
        assert_eq!(load(&path).expect("none yet"), None);
        store(&path, &claim()).expect("store");
        assert_eq!(load(&path).expect("load"), Some(claim()));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(&state_dir)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        // A replacement overwrites it whole; no temporary file is left.
        let mut replaced = claim();
        replaced.hashes.push("0xbb".into());
        store(&path, &replaced).expect("store again");
        assert_eq!(load(&path).expect("load"), Some(replaced));
        assert_eq!(std::fs::read_dir(&state_dir).expect("list").count(), 1);
        remove(&path).expect("remove");
        assert_eq!(load(&path).expect("gone"), None);
        remove(&path).expect("removing twice is fine");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_no_claim() {
        let dir = tempfile::tempdir().expect("dir");
        let path = state_file(dir.path(), Address::ZERO);
        std::fs::write(&path, "{\"nonce\": 1, \"hashes\"").expect("write");
        let e = load(&path).expect_err("damaged").to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn an_unwritable_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").expect("write");
        let path = state_file(&blocker, Address::ZERO);
        assert!(store(&path, &claim()).is_err());
    }
}
