//! The frame path: verify a frame against its node's key, check it against the
//! node's replay window, and answer it (an acknowledgement or a sync reply) within
//! the duty-cycle budget and the limits that keep a replayer from draining it.

use std::time::{Duration, SystemTime};

use nodewatch_lora::airtime::time_on_air;
use nodewatch_lora::frame::{self, AlertFrame, AlertState, Frame, Key, NodeId, SyncReply};
use nodewatch_lora::radio::Received;
use nodewatch_lora::replay::Verdict;
use tokio::time::Instant;

use super::Gateway;
use crate::outputs::lora_link::alertmanager::PostableAlert;

/// Re-acknowledgements of one frame: enough for a node whose acknowledgements got
/// lost a few times, too few for a replayer to drain the budget.
const MAX_REACKS: u8 = 3;
/// Sequences per node whose re-acknowledgements are remembered (the replay window's).
const REACK_MEMORY: usize = 64;
/// Sync replies per node an hour: a node that lost its state needs one; a replayer of
/// old requests gets no more.
const MAX_SYNC_REPLIES: usize = 20;

/// What one received frame led to.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    /// The acknowledgement to transmit, if any.
    pub ack: Option<Vec<u8>>,
    /// Alerts to post to Alertmanager now.
    pub posts: Vec<PostableAlert>,
    /// Why the frame was dropped, if it was.
    pub rejected: Option<&'static str>,
}

impl Gateway {
    fn reject(&mut self, reason: &'static str, detail: &str) -> Handled {
        *self.rejected.entry(reason).or_default() += 1;
        tracing::warn!(reason, detail, "LoRa frame rejected.");
        Handled {
            rejected: Some(reason),
            ..Handled::default()
        }
    }

    /// Handles one frame heard at `now` (wall clock) / `instant` (budget clock).
    pub fn handle(&mut self, rx: &Received, now: SystemTime, instant: Instant) -> Handled {
        let (node, key, decoded) = match self.verify(rx) {
            Ok(verified) => verified,
            Err(refused) => return refused,
        };
        match decoded {
            // Another gateway's answers.
            Frame::Ack(_) | Frame::SyncReply(_) => Handled::default(),
            Frame::SyncRequest(request) => {
                tracing::info!(node = %node, "LoRa node asks for its epoch (sync request).");
                Handled {
                    ack: self.sync_reply(node, request.nonce, &key, instant),
                    ..Handled::default()
                }
            }
            Frame::Alert(alert) => self.handle_alert(node, &key, alert, rx, now, instant),
        }
    }

    /// The frame's node, that node's key and the frame decoded under it; a frame that
    /// does not verify is counted and refused.
    fn verify(&mut self, rx: &Received) -> Result<(NodeId, Key, Frame), Handled> {
        let node = match frame::peek_node(&rx.bytes) {
            Ok(n) => n,
            Err(e) => return Err(self.reject(e.reason(), &e.to_string())),
        };
        // The node's own key: a frame signed with another node's key does not verify.
        let Some(key) = self.keys.key_of(node) else {
            return Err(self.reject("mac", &format!("from {node}: no key for it")));
        };
        match frame::decode(&rx.bytes, &key) {
            Ok(f) => Ok((node, key, f)),
            Err(e) => Err(self.reject(e.reason(), &format!("from {node}: {e}"))),
        }
    }

    /// An authentic alert or heartbeat frame: new ones change the node's state,
    /// duplicates are acknowledged again (a few times), replays are refused.
    fn handle_alert(
        &mut self,
        node: NodeId,
        key: &Key,
        alert: AlertFrame,
        rx: &Received,
        now: SystemTime,
        instant: Instant,
    ) -> Handled {
        let stamp = (alert.epoch, alert.sequence);
        let mut handled = Handled::default();
        let resync = match self.replay.check(node, alert.epoch, alert.sequence) {
            verdict @ (Verdict::Replay | Verdict::TooFar) => {
                return self.refuse_outside_window(node, verdict, stamp, key, instant);
            }
            Verdict::Duplicate => {
                self.duplicates += 1;
                if !self.may_reack(node, alert.sequence) {
                    // A replayed duplicate must not drain the budget: once a node has
                    // had a few re-acknowledgements of a frame, it gets no more.
                    *self.acks.entry("rate_limited").or_default() += 1;
                    return handled;
                }
                self.nodes.get(&node).and_then(|s| s.resync_from) == Some(stamp)
            }
            Verdict::New => {
                let (posts, resync) = self.accept(node, &alert, rx, now, instant);
                handled.posts = posts;
                resync
            }
        };
        let mut ack = Frame::Alert(alert).ack();
        ack.resync = resync;
        handled.ack = self.spend_reply(Frame::Ack(ack), frame::ACK_LEN, key, instant);
        handled
    }

    /// Refuses a frame behind the node's window or too far ahead of it, answering
    /// with the epoch the node must start.
    fn refuse_outside_window(
        &mut self,
        node: NodeId,
        verdict: Verdict,
        stamp: (u16, u32),
        key: &Key,
        instant: Instant,
    ) -> Handled {
        let (reason, why) = if verdict == Verdict::Replay {
            ("replay", "is behind its window")
        } else {
            ("too_far", "is too far ahead")
        };
        let mut refused = self.reject(
            reason,
            &format!("from {node}: epoch {} sequence {} {why}", stamp.0, stamp.1),
        );
        // An authentic frame we refuse: tell the node which epoch to start
        // (it recovers a lost or regressed sequence this way). Rate-limited,
        // so a replayer cannot drain the budget.
        refused.ack = self.sync_reply(node, stamp, key, instant);
        refused
    }

    /// A new frame: into the replay window, the node's figures and its firing set.
    /// Returns the posts it leads to and whether the ack asks the node to resync.
    fn accept(
        &mut self,
        node: NodeId,
        alert: &AlertFrame,
        rx: &Received,
        now: SystemTime,
        instant: Instant,
    ) -> (Vec<PostableAlert>, bool) {
        self.replay.accept(node, alert.epoch, alert.sequence);
        // Written by the state writer, off the runtime thread.
        self.replay_dirty = true;
        let mut posts = Vec::new();
        let was_silent = self.heard(node, alert, rx, now, instant);
        if was_silent {
            tracing::info!(node = %node, "LoRa node heard again: LoraNodeSilent ends.");
            posts.push(self.silent_alert(node, now, now));
        }
        let mut resync = false;
        let changes = if alert.state == AlertState::Heartbeat {
            let stamp = (alert.epoch, alert.sequence);
            let (changes, in_sync) = self.compare_digest(node, stamp, alert.digest, now);
            resync = !in_sync;
            changes
        } else {
            self.apply(node, alert, now)
        };
        posts.extend(changes);
        // Alerts still active get their endsAt moved on (and lose `stale`).
        if alert.state != AlertState::Resolved || was_silent {
            posts.extend(self.node_posts(node, now, instant));
        }
        (posts, resync)
    }

    /// Encodes a reply for `node` if the duty-cycle budget has room for it.
    fn spend_reply(
        &mut self,
        reply: Frame,
        len: usize,
        key: &Key,
        instant: Instant,
    ) -> Option<Vec<u8>> {
        let airtime = time_on_air(&self.modulation, len);
        if self.duty.try_spend(airtime, instant).is_err() {
            *self.acks.entry("over_budget").or_default() += 1;
            tracing::warn!(node = %reply.node(), "No duty-cycle budget left to answer a frame.");
            return None;
        }
        match reply.encode(key) {
            Ok(bytes) => {
                self.airtime += airtime;
                // The budget spent outlives a restart.
                self.state_dirty = true;
                Some(bytes)
            }
            Err(e) => {
                self.last_error = Some(format!("reply: {e}"));
                None
            }
        }
    }

    /// The sync reply to a request (or to a refused frame) `answers`: the epoch the
    /// node must start. At most [`MAX_SYNC_REPLIES`] per node an hour.
    fn sync_reply(
        &mut self,
        node: NodeId,
        answers: (u16, u32),
        key: &Key,
        instant: Instant,
    ) -> Option<Vec<u8>> {
        let given = self.sync_replies.entry(node).or_default();
        while given
            .front()
            .is_some_and(|t| instant.saturating_duration_since(*t) >= Duration::from_secs(3600))
        {
            given.pop_front();
        }
        if given.len() >= MAX_SYNC_REPLIES {
            *self.acks.entry("rate_limited").or_default() += 1;
            return None;
        }
        let Some(next_epoch) = self.replay.next_epoch(node) else {
            self.last_error = Some(format!(
                "node {node} has used every epoch; re-key it and forget its replay window"
            ));
            return None;
        };
        given.push_back(instant);
        let reply = Frame::SyncReply(SyncReply {
            node,
            answers,
            next_epoch,
        });
        let bytes = self.spend_reply(reply, frame::SYNC_REPLY_LEN, key, instant)?;
        *self.acks.entry("sync_reply").or_default() += 1;
        Some(bytes)
    }

    /// Whether a duplicate of `sequence` from `node` may be acknowledged again (at
    /// most [`MAX_REACKS`] times per sequence).
    fn may_reack(&mut self, node: NodeId, sequence: u32) -> bool {
        let given = self.reacks.entry(node).or_default();
        if let Some((_, count)) = given.iter_mut().find(|(s, _)| *s == sequence) {
            if *count >= MAX_REACKS {
                return false;
            }
            *count += 1;
            return true;
        }
        if given.len() >= REACK_MEMORY {
            given.pop_front();
        }
        given.push_back((sequence, 1));
        true
    }
}
