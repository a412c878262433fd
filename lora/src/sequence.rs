//! The node's frame sequence: strictly increasing, across restarts too, so that the
//! gateway's [`crate::replay::ReplayWindow`] never mistakes a new frame for a replay.
//!
//! To spare the SD card the file does not hold the last number used but a
//! reservation: the first number not yet handed out in a block of
//! [`RESERVATION_BLOCK`]. The reservation is written before any number in it is
//! handed out, so a restart (or power cut) skips the rest of the block and never
//! reuses a number.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist;

/// How many numbers one write of the file reserves.
pub const RESERVATION_BLOCK: u32 = 64;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// Every number below this may have been used; none at or above it has.
    next_unused: u32,
}

/// The node's persisted sequence counter.
#[derive(Debug)]
pub struct SequenceStore {
    path: PathBuf,
    /// The number [`next`](Self::next) returns.
    next: u32,
    /// The end of the reservation on disk: numbers below it may be handed out
    /// without writing.
    reserved: u32,
}

impl SequenceStore {
    /// Opens the counter saved at `path` (an absent file starts at 0). A corrupt file
    /// is an error naming it: starting over at 0 would make the gateway drop the
    /// node's frames as replays.
    pub fn open(path: &Path) -> Result<Self, String> {
        let start = match persist::read_optional(path)? {
            None => 0,
            Some(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not a sequence file: {e}", path.display()))?;
                saved.next_unused
            }
        };
        Ok(Self {
            path: path.to_owned(),
            next: start,
            reserved: start,
        })
    }

    /// The next sequence number: strictly greater than any returned before, in this
    /// process or an earlier one. Writes the file once every [`RESERVATION_BLOCK`]
    /// numbers; an error (disk full, read-only) hands out nothing.
    // Not an iterator: it can fail, and the name says what it does.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u32, String> {
        if self.next == u32::MAX {
            return Err(format!(
                "{}: the sequence is exhausted (u32::MAX)",
                self.path.display()
            ));
        }
        if self.next >= self.reserved {
            let reserved = self.next.saturating_add(RESERVATION_BLOCK);
            let json = serde_json::to_vec(&Saved {
                next_unused: reserved,
            })
            .map_err(|e| format!("encoding {}: {e}", self.path.display()))?;
            persist::write_atomic(&self.path, &json)?;
            self.reserved = reserved;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// The number the next call to [`next`](Self::next) returns.
    pub fn peek(&self) -> u32 {
        self.next
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_across_reopen_without_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut s = SequenceStore::open(&path).expect("open");
            for _ in 0..10 {
                seen.push(s.next().expect("next"));
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        // Each restart skips the rest of its block.
        assert_eq!(&seen[..3], &[0, 1, 2]);
        assert_eq!(seen[10], RESERVATION_BLOCK);
        assert_eq!(seen[20], 2 * RESERVATION_BLOCK);
    }

    #[test]
    fn writes_once_per_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        let mut s = SequenceStore::open(&path).expect("open");
        assert_eq!(s.next(), Ok(0));
        let written = std::fs::read_to_string(&path).expect("written");
        for _ in 1..RESERVATION_BLOCK {
            s.next().expect("next");
        }
        // Still the first reservation: the file was not rewritten.
        assert_eq!(std::fs::read_to_string(&path).expect("read"), written);
        assert_eq!(s.peek(), RESERVATION_BLOCK);
        assert_eq!(s.next(), Ok(RESERVATION_BLOCK));
        assert_ne!(std::fs::read_to_string(&path).expect("read"), written);
        // A crash now resumes after the second block.
        let mut again = SequenceStore::open(&path).expect("reopen");
        assert_eq!(again.next(), Ok(2 * RESERVATION_BLOCK));
        assert!(!dir.path().join("sequence.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        for bad in [
            "",
            "12",
            "{\"next_unused\": -1}",
            "{\"next_unused\": \"a\"}",
            "{}",
        ] {
            std::fs::write(&path, bad).expect("write");
            let err = SequenceStore::open(&path).expect_err(bad);
            assert!(err.contains("sequence.json"), "{bad}: {err}");
        }
    }

    #[test]
    fn write_failure_hands_out_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("sequence.json");
        let mut s = SequenceStore::open(&path).expect("absent file opens");
        let err = s.next().expect_err("no directory");
        assert!(err.contains("missing"), "{err}");
        assert_eq!(s.peek(), 0);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        std::fs::write(&path, format!("{{\"next_unused\": {}}}", u32::MAX - 1)).expect("write");
        let mut s = SequenceStore::open(&path).expect("open");
        assert_eq!(s.next(), Ok(u32::MAX - 1));
        assert!(s.next().is_err());
    }
}
