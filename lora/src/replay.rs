//! The gateway's replay window, per node.
//!
//! Frames are ordered by (epoch, sequence). For each node the gateway keeps its epoch,
//! the highest sequence it accepted in it, and a 64-bit bitmap of which of the 64
//! sequences below it it accepted too, so frames that arrive out of order (a resend
//! overtaken by a newer alert) are still taken, once. The window is saved in
//! `state_dir` so that a restarted gateway does not take an old frame recorded off the
//! air.
//!
//! A sequence may advance by at most [`MAX_STEP`] per frame, and an epoch by one: a
//! key taken from a node cannot push its window to the end of the number space in
//! one frame. A node that lost its sequence file asks the gateway for its epoch
//! (a sync request, answered under the node's own key); it then starts the next
//! epoch at sequence 0, and every frame of the old epochs is refused from then on.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::frame::NodeId;
use crate::persist;

/// How many sequences below the highest are remembered.
pub const WINDOW: u32 = 64;

/// How far one frame may move a node's sequence ahead of the highest accepted. A
/// restart skips at most [`crate::sequence::RESERVATION_BLOCK`] numbers, so this is
/// a thousand restarts, or a week of frames at EU868's 1 % and SF7, unheard; a node
/// further ahead is answered with a sync reply and starts the next epoch.
pub const MAX_STEP: u32 = 1 << 16;

/// What to do with a verified frame's epoch and sequence.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Verdict {
    /// Never seen and not too old: accept it ([`ReplayWindow::accept`]) and forward it.
    New,
    /// Already accepted: a resend whose ack was lost. Acknowledge it again, but do not
    /// forward it.
    Duplicate,
    /// Older than the window, or of an older epoch: drop it (and count it).
    Replay,
    /// Further ahead than [`MAX_STEP`] (or more than one epoch ahead): drop it.
    TooFar,
}

/// One node's window.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeWindow {
    /// The node's epoch (files of frame version 1 have none: 0).
    #[serde(default)]
    epoch: u16,
    /// The highest accepted sequence in the epoch.
    highest: u32,
    /// Bit `i` set: `highest - 1 - i` was accepted.
    below: u64,
}

/// The file's format (versioned, so that a later gateway can migrate it).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    nodes: BTreeMap<NodeId, NodeWindow>,
}

const FILE_VERSION: u32 = 1;

/// The per-node replay windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    nodes: BTreeMap<NodeId, NodeWindow>,
}

impl ReplayWindow {
    /// An empty window: every sequence of every node is new.
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies `(epoch, seq)` from `node` without changing anything (call it after
    /// the MAC verified, and [`accept`](Self::accept) on [`Verdict::New`]). A node
    /// never heard from is new whatever its numbers.
    pub fn check(&self, node: NodeId, epoch: u16, seq: u32) -> Verdict {
        let Some(w) = self.nodes.get(&node) else {
            return Verdict::New;
        };
        if epoch < w.epoch {
            return Verdict::Replay;
        }
        if epoch > w.epoch {
            // The next epoch starts again near 0.
            return if epoch - w.epoch == 1 && seq <= MAX_STEP {
                Verdict::New
            } else {
                Verdict::TooFar
            };
        }
        if seq > w.highest {
            return if seq - w.highest <= MAX_STEP {
                Verdict::New
            } else {
                Verdict::TooFar
            };
        }
        let behind = w.highest - seq;
        if behind == 0 {
            return Verdict::Duplicate;
        }
        if behind > WINDOW {
            return Verdict::Replay;
        }
        if w.below & (1 << (behind - 1)) != 0 {
            Verdict::Duplicate
        } else {
            Verdict::New
        }
    }

    /// Records `(epoch, seq)` from `node` as accepted. A newer epoch starts a fresh
    /// window; a sequence below the window, or an older epoch, is ignored.
    pub fn accept(&mut self, node: NodeId, epoch: u16, seq: u32) {
        let fresh = NodeWindow {
            epoch,
            highest: seq,
            below: 0,
        };
        let w = self.nodes.entry(node).or_insert(fresh);
        if epoch > w.epoch {
            *w = fresh;
            return;
        }
        if epoch < w.epoch {
            return;
        }
        if seq > w.highest {
            let shift = seq - w.highest;
            // The old highest becomes bit `shift - 1`; shifting by 64 or more empties.
            let moved = w.below.checked_shl(shift).unwrap_or(0);
            let old_highest = 1u64.checked_shl(shift - 1).unwrap_or(0);
            w.below = moved | old_highest;
            w.highest = seq;
        } else if seq < w.highest {
            let behind = w.highest - seq;
            if behind <= WINDOW {
                w.below |= 1 << (behind - 1);
            }
        }
    }

    /// The highest sequence accepted from `node` in its epoch, if any.
    pub fn highest(&self, node: NodeId) -> Option<u32> {
        self.nodes.get(&node).map(|w| w.highest)
    }

    /// The epoch `node` must move to when it lost its sequence: one past the current,
    /// or 0 for a node never heard. `None` when the epochs are used up.
    pub fn next_epoch(&self, node: NodeId) -> Option<u16> {
        match self.nodes.get(&node) {
            None => Some(0),
            Some(w) => w.epoch.checked_add(1),
        }
    }

    /// The nodes heard from.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.keys().copied()
    }

    /// Reads the saved windows; an absent file is an empty window. A corrupt file is
    /// an error naming it, not a silent reset (that would reopen the replay window).
    pub fn load(path: &Path) -> Result<Self, String> {
        let Some(bytes) = persist::read_optional(path)? else {
            return Ok(Self::new());
        };
        let saved: Saved = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{} is not a replay window file: {e}", path.display()))?;
        if saved.version != FILE_VERSION {
            return Err(format!(
                "{} has replay window format {}, expected {FILE_VERSION}",
                path.display(),
                saved.version
            ));
        }
        Ok(Self { nodes: saved.nodes })
    }

    /// Saves the windows atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let json = self
            .to_bytes()
            .map_err(|e| format!("encoding {}: {e}", path.display()))?;
        persist::write_atomic(path, &json)
    }

    /// The file's contents, for a caller that writes it elsewhere (off its runtime
    /// thread) with [`persist::write_atomic`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let saved = Saved {
            version: FILE_VERSION,
            nodes: self.nodes.clone(),
        };
        serde_json::to_vec_pretty(&saved).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{AlertFrame, AlertState, Frame, Key, Severity, decode};

    const A: NodeId = NodeId([1, 2, 3, 4]);
    const B: NodeId = NodeId([5, 6, 7, 8]);

    #[test]
    fn new_duplicate_replay() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(A, 0, 100), Verdict::New);
        w.accept(A, 0, 100);
        assert_eq!(w.check(A, 0, 100), Verdict::Duplicate);
        assert_eq!(w.check(B, 0, 100), Verdict::New, "nodes are independent");
        assert_eq!(w.check(A, 0, 101), Verdict::New);
        // Below the first accepted, but within the window: never seen, so new.
        assert_eq!(w.check(A, 0, 99), Verdict::New);
        assert_eq!(w.check(A, 0, 100 - WINDOW), Verdict::New);
        assert_eq!(w.check(A, 0, 100 - WINDOW - 1), Verdict::Replay);
        assert_eq!(w.check(A, 0, 0), Verdict::Replay);
        assert_eq!(w.highest(A), Some(100));
        assert_eq!(w.highest(B), None);
    }

    #[test]
    fn out_of_order_within_the_window() {
        let mut w = ReplayWindow::new();
        for seq in [10, 12, 11, 15] {
            assert_eq!(w.check(A, 0, seq), Verdict::New, "{seq}");
            w.accept(A, 0, seq);
        }
        for seq in [10, 11, 12, 15] {
            assert_eq!(w.check(A, 0, seq), Verdict::Duplicate, "{seq}");
        }
        for seq in [13, 14, 9] {
            assert_eq!(w.check(A, 0, seq), Verdict::New, "{seq}");
        }
        // Slide by exactly 64: 15 is then the oldest remembered.
        w.accept(A, 0, 15 + 64);
        assert_eq!(w.check(A, 0, 15), Verdict::Duplicate);
        assert_eq!(w.check(A, 0, 14), Verdict::Replay);
        assert_eq!(w.check(A, 0, 16), Verdict::New);
        // Slide by more than 64: everything below is forgotten or too old.
        w.accept(A, 0, 1000);
        assert_eq!(w.check(A, 0, 15 + 64), Verdict::Replay);
        assert_eq!(w.check(A, 0, 999), Verdict::New);
        // Accepting below the window changes nothing.
        let before = w.clone();
        w.accept(A, 0, 3);
        assert_eq!(w, before);
    }

    #[test]
    fn a_sequence_advances_by_at_most_max_step() {
        let mut w = ReplayWindow::new();
        // A node never heard from: anything goes (the gateway has nothing to compare).
        assert_eq!(w.check(A, 0, 4_000_000_000), Verdict::New);
        w.accept(A, 0, 10);
        assert_eq!(w.check(A, 0, 10 + MAX_STEP), Verdict::New);
        assert_eq!(w.check(A, 0, 10 + MAX_STEP + 1), Verdict::TooFar);
        assert_eq!(w.check(A, 0, u32::MAX), Verdict::TooFar);
        // A key taken from a node needs 65 536 frames per 2^32 / MAX_STEP to push the
        // window to the end, one step at a time.
        w.accept(A, 0, 10 + MAX_STEP);
        assert_eq!(w.highest(A), Some(10 + MAX_STEP));
        assert_eq!(w.check(A, 0, 10 + 2 * MAX_STEP), Verdict::New);
    }

    #[test]
    fn a_new_epoch_starts_near_zero_and_retires_the_old_one() {
        let mut w = ReplayWindow::new();
        w.accept(A, 0, 5000);
        assert_eq!(w.next_epoch(A), Some(1));
        assert_eq!(w.next_epoch(B), Some(0), "never heard: epoch 0");
        // The next epoch, from 0 up to the step cap; never two epochs ahead.
        assert_eq!(w.check(A, 1, 0), Verdict::New);
        assert_eq!(w.check(A, 1, MAX_STEP + 1), Verdict::TooFar);
        assert_eq!(w.check(A, 2, 0), Verdict::TooFar);
        w.accept(A, 1, 0);
        assert_eq!(w.highest(A), Some(0));
        assert_eq!(w.check(A, 1, 0), Verdict::Duplicate);
        assert_eq!(w.check(A, 1, 1), Verdict::New);
        // Every frame of the old epoch is a replay now, however high its sequence.
        assert_eq!(w.check(A, 0, 5001), Verdict::Replay);
        assert_eq!(w.check(A, 0, 5000), Verdict::Replay);
        let before = w.clone();
        w.accept(A, 0, 6000);
        assert_eq!(w, before, "an old epoch changes nothing");
        w.nodes.insert(
            B,
            NodeWindow {
                epoch: u16::MAX,
                highest: 0,
                below: 0,
            },
        );
        assert_eq!(w.next_epoch(B), None);
    }

    #[test]
    fn extremes() {
        let mut w = ReplayWindow::new();
        w.accept(A, 0, u32::MAX - 10);
        w.accept(A, 0, u32::MAX);
        assert_eq!(w.check(A, 0, u32::MAX), Verdict::Duplicate);
        assert_eq!(w.check(A, 0, u32::MAX - 1), Verdict::New);
        assert_eq!(w.check(A, 0, 0), Verdict::Replay);
        assert_eq!(w.check(A, 0, u32::MAX - 10), Verdict::Duplicate);
    }

    #[test]
    fn replayed_frame_is_refused_after_verifying() {
        let key = Key::from_hex("00112233445566778899aabbccddeeff").expect("key");
        let frame = |seq| {
            Frame::Alert(AlertFrame {
                state: AlertState::Firing,
                severity: Severity::Critical,
                node: A,
                epoch: 0,
                sequence: seq,
                value: 1.0,
                digest: 0,
                alertname: "Down".into(),
            })
            .encode(&key)
            .expect("encode")
        };
        let mut w = ReplayWindow::new();
        let old = frame(5);
        for seq in [5, 6, 200] {
            let f = decode(&frame(seq), &key).expect("valid");
            assert_eq!(w.check(f.node(), 0, f.sequence()), Verdict::New);
            w.accept(f.node(), 0, f.sequence());
        }
        // A recording of frame 5 played back: the MAC verifies, the window refuses.
        let f = decode(&old, &key).expect("still a valid MAC");
        assert_eq!(w.check(f.node(), 0, f.sequence()), Verdict::Replay);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replay.json");
        assert_eq!(
            ReplayWindow::load(&path).expect("absent"),
            ReplayWindow::new()
        );
        let mut w = ReplayWindow::new();
        for seq in [1, 3, 40] {
            w.accept(A, 0, seq);
        }
        w.accept(B, 0, 7);
        w.save(&path).expect("save");
        let back = ReplayWindow::load(&path).expect("load");
        assert_eq!(back, w);
        assert_eq!(back.check(A, 0, 3), Verdict::Duplicate);
        assert_eq!(back.check(A, 0, 2), Verdict::New);
        assert_eq!(back.nodes().collect::<Vec<_>>(), vec![A, B]);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"01020304\""), "{text}");
        assert!(!dir.path().join("replay.json.tmp").exists());
        // Saving again replaces the file.
        w.accept(B, 0, 8);
        w.save(&path).expect("save again");
        assert_eq!(ReplayWindow::load(&path).expect("load"), w);
    }

    #[test]
    fn a_file_without_epochs_loads_as_epoch_0() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replay.json");
        std::fs::write(
            &path,
            r#"{"version":1,"nodes":{"01020304":{"highest":9,"below":0}}}"#,
        )
        .expect("write");
        let w = ReplayWindow::load(&path).expect("load");
        assert_eq!(w.check(A, 0, 9), Verdict::Duplicate);
        assert_eq!(w.next_epoch(A), Some(1));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("replay.json");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"version":2,"nodes":{}}"#,
            r#"{"version":1,"nodes":{"xyz":{"highest":1,"below":0}}}"#,
        ] {
            std::fs::write(&path, bad).expect("write");
            let err = ReplayWindow::load(&path).expect_err(bad);
            assert!(err.contains("replay.json"), "{bad}: {err}");
        }
    }

    #[test]
    fn save_to_a_missing_directory_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("replay.json");
        let err = ReplayWindow::new().save(&path).expect_err("no directory");
        assert!(err.contains("missing"), "{err}");
    }
}
