//! The node's frame numbers, (epoch, sequence): strictly increasing, across restarts
//! too, so that the gateway's [`crate::replay::ReplayWindow`] never mistakes a new
//! frame for a replay.
//!
//! To spare the SD card the file does not hold the last number used but a
//! reservation: the first number not yet handed out in a block of
//! [`RESERVATION_BLOCK`]. The reservation is written before any number in it is
//! handed out, so a restart (or power cut) skips the rest of the block and never
//! reuses a number. The caller may write it on a thread of its own
//! ([`SequenceStore::reservation`], then [`SequenceStore::reserved`]).
//!
//! A node without the file (a new node, or one whose state was lost) does not know
//! which numbers it used: it hands out none ([`SequenceStore::needs_sync`]) until the
//! gateway has told it, in an authenticated sync reply, the epoch to start
//! ([`SequenceStore::start_epoch`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::persist;

/// How many numbers one write of the file reserves.
pub const RESERVATION_BLOCK: u32 = 64;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// The epoch the numbers belong to (absent in files of frame version 1: 0).
    #[serde(default)]
    epoch: u16,
    /// Every number below this may have been used; none at or above it has.
    next_unused: u32,
}

/// A reservation to write before its numbers are handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The sequence file.
    pub path: PathBuf,
    /// Its new contents.
    pub bytes: Vec<u8>,
    epoch: u16,
    reserved: u32,
}

impl Reservation {
    /// Writes it (temporary file, fsync, rename): blocking.
    pub fn write(&self) -> Result<(), String> {
        persist::write_atomic(&self.path, &self.bytes)
    }
}

/// The node's persisted sequence counter.
#[derive(Debug)]
pub struct SequenceStore {
    path: PathBuf,
    /// The epoch of the numbers handed out; `None` until known (no file).
    epoch: Option<u16>,
    /// The number [`next`](Self::next) returns.
    next: u32,
    /// The end of the reservation on disk: numbers below it may be handed out
    /// without writing.
    reserved: u32,
}

impl SequenceStore {
    /// Opens the counter saved at `path`. An absent file needs a sync
    /// ([`needs_sync`](Self::needs_sync)). A corrupt file is an error naming it:
    /// starting over would make the gateway drop the node's frames as replays.
    pub fn open(path: &Path) -> Result<Self, String> {
        let (epoch, start) = match persist::read_optional(path)? {
            None => (None, 0),
            Some(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{} is not a sequence file: {e}", path.display()))?;
                (Some(saved.epoch), saved.next_unused)
            }
        };
        Ok(Self {
            path: path.to_owned(),
            epoch,
            next: start,
            reserved: start,
        })
    }

    /// Whether the epoch is unknown: the file was absent and no sync reply came yet.
    pub fn needs_sync(&self) -> bool {
        self.epoch.is_none()
    }

    /// The epoch of the numbers handed out (0 until synced).
    pub fn epoch(&self) -> u16 {
        self.epoch.unwrap_or(0)
    }

    /// Starts `epoch` at sequence 0, as the gateway's sync reply says (nothing is
    /// written until the first number is handed out).
    pub fn start_epoch(&mut self, epoch: u16) {
        self.epoch = Some(epoch);
        self.next = 0;
        self.reserved = 0;
    }

    /// The reservation to write before the next number may be handed out, if the
    /// current one is used up. Errors: no epoch yet, or the sequence is exhausted.
    pub fn reservation(&self) -> Result<Option<Reservation>, String> {
        let Some(epoch) = self.epoch else {
            return Err(format!(
                "{}: no sequence yet (waiting for the gateway's sync reply)",
                self.path.display()
            ));
        };
        if self.next == u32::MAX {
            return Err(format!(
                "{}: the sequence is exhausted (u32::MAX)",
                self.path.display()
            ));
        }
        if self.next < self.reserved {
            return Ok(None);
        }
        let reserved = self.next.saturating_add(RESERVATION_BLOCK);
        let bytes = serde_json::to_vec(&Saved {
            epoch,
            next_unused: reserved,
        })
        .map_err(|e| format!("encoding {}: {e}", self.path.display()))?;
        Ok(Some(Reservation {
            path: self.path.clone(),
            bytes,
            epoch,
            reserved,
        }))
    }

    /// Records that `reservation` is on disk.
    pub fn reserved(&mut self, reservation: &Reservation) {
        if self.epoch == Some(reservation.epoch) {
            self.reserved = self.reserved.max(reservation.reserved);
        }
    }

    /// The next sequence number when the reservation on disk covers it (see
    /// [`reservation`](Self::reservation)); otherwise an error.
    pub fn take(&mut self) -> Result<u32, String> {
        if self.reservation()?.is_some() {
            return Err(format!(
                "{}: the next number is not reserved on disk yet",
                self.path.display()
            ));
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }

    /// The next sequence number: strictly greater than any returned before in this
    /// epoch, in this process or an earlier one. Writes the reservation on this
    /// thread when needed; an error (disk full, read-only) hands out nothing.
    // Not an iterator: it can fail, and the name says what it does.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u32, String> {
        if let Some(r) = self.reservation()? {
            r.write()?;
            self.reserved(&r);
        }
        self.take()
    }

    /// The number the next call to [`next`](Self::next) returns.
    pub fn peek(&self) -> u32 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose epoch is known (as after the gateway's sync reply).
    fn synced(path: &Path) -> SequenceStore {
        let mut s = SequenceStore::open(path).expect("open");
        if s.needs_sync() {
            s.start_epoch(0);
        }
        s
    }

    #[test]
    fn increases_across_reopen_without_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut s = synced(&path);
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
        let mut s = synced(&path);
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
        let mut s = synced(&path);
        let err = s.next().expect_err("no directory");
        assert!(err.contains("missing"), "{err}");
        assert_eq!(s.peek(), 0);
    }

    #[test]
    fn a_lost_file_hands_out_nothing_until_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        let mut s = synced(&path);
        for _ in 0..70 {
            s.next().expect("next");
        }
        std::fs::remove_file(&path).expect("lose it");
        let mut lost = SequenceStore::open(&path).expect("absent opens");
        assert!(lost.needs_sync());
        assert!(lost.next().expect_err("no epoch").contains("sync"));
        assert!(!path.exists(), "nothing written before the sync");
        // The gateway's reply: epoch 1 from 0.
        lost.start_epoch(1);
        assert_eq!(lost.next(), Ok(0));
        assert_eq!(lost.epoch(), 1);
        let again = SequenceStore::open(&path).expect("reopen");
        assert!(!again.needs_sync());
        assert_eq!((again.epoch(), again.peek()), (1, RESERVATION_BLOCK));
    }

    #[test]
    fn the_reservation_can_be_written_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sequence.json");
        let mut s = synced(&path);
        let r = s
            .reservation()
            .expect("ok")
            .expect("first number needs one");
        assert!(s.take().is_err(), "not on disk yet");
        // Written by another thread, as the agent does.
        std::thread::spawn({
            let r = r.clone();
            move || r.write()
        })
        .join()
        .expect("thread")
        .expect("write");
        s.reserved(&r);
        assert_eq!(s.take(), Ok(0));
        assert_eq!(s.reservation(), Ok(None));
        // A file of frame version 1 (no epoch) is epoch 0.
        std::fs::write(&path, "{\"next_unused\": 128}").expect("write");
        let old = SequenceStore::open(&path).expect("v1 file");
        assert_eq!((old.epoch(), old.peek()), (0, 128));
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
