//! The gateway side (`lora.gateway = true`): receive, verify, acknowledge, forward.
//!
//! Each frame is checked against its node's key (or the network key), then against
//! the node's replay window (persisted in `state_dir/lora-replay.json` by a writer
//! thread, so a restart does not reopen it and its fsync never holds up the radio). A new frame updates the node's figures and its alerts and is
//! acknowledged; a duplicate (the node resending because our acknowledgement was
//! lost) is acknowledged again but changes nothing; a replay or a forgery is counted
//! and dropped. Acknowledgements spend the gateway's own duty-cycle budget.
//!
//! Alerts go to Alertmanager with labels `alertname`, `node`, `severity` and
//! `source="lora"`: at once when they change, and re-posted every
//! `repost_interval_secs` with `endsAt` = last heard + `node_timeout_secs`. A node's
//! alert resolves when it says so or when its heartbeat says nothing fires. Posting
//! runs in its own task and retries, so a slow Alertmanager never holds up the radio.
//!
//! Every node's firing set is kept in `state_dir/lora-gateway.json` (written
//! atomically, off the runtime thread) and re-posted at start, so a gateway restart
//! ends nothing. A node silent past `node_timeout_secs` (measured on the monotonic
//! clock, so a clock step changes nothing) keeps its alerts firing, annotated
//! `stale="true"`, and the gateway raises `LoraNodeSilent{node}` until it is heard again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use nodewatch_lora::airtime::{Modulation, time_on_air};
use nodewatch_lora::duty::{DutyCycle, SavedSpend};
use nodewatch_lora::frame::{self, AlertFrame, AlertState, Frame, NodeId, Severity, SyncReply};
use nodewatch_lora::radio::{Radio, Received};
use nodewatch_lora::replay::{ReplayWindow, Verdict};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::alertmanager::{AlertmanagerClient, PostableAlert, rfc3339};
use super::{Keys, LoraConfig};
use crate::metrics::MetricSink;
use crate::snapshot::Snapshot;

#[derive(Debug, Clone)]
struct NodeStats {
    name: String,
    received: u64,
    rssi_dbm: Option<f32>,
    snr_db: Option<f32>,
    last_seen: SystemTime,
    /// When it was last heard, on the monotonic clock (timeouts use this).
    last_heard: Instant,
    /// Whether `LoraNodeSilent` has been raised for it.
    silent: bool,
    /// The heartbeat whose digest differed (its ack asked for a resync).
    resync_from: Option<(u16, u32)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveAlert {
    severity: Severity,
    value: f32,
    starts_at: SystemTime,
    /// The epoch and sequence of the frame that last announced it firing.
    #[serde(default)]
    confirmed: (u16, u32),
}

/// Re-acknowledgements of one frame: enough for a node whose acknowledgements got
/// lost a few times, too few for a replayer to drain the budget.
const MAX_REACKS: u8 = 3;
/// Sequences per node whose re-acknowledgements are remembered (the replay window's).
const REACK_MEMORY: usize = 64;
/// Sync replies per node an hour: a node that lost its state needs one; a replayer of
/// old requests gets no more.
const MAX_SYNC_REPLIES: usize = 20;

/// The alert the gateway raises for a node silent past `node_timeout_secs`; the
/// central server's rule of the same name (rules/lora.yml) has the same labels, so
/// Alertmanager groups the two.
pub const NODE_SILENT_ALERT: &str = "LoraNodeSilent";

/// The gateway's persisted view: each node's last wall-clock time heard and firing set.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    nodes: Vec<SavedNode>,
    /// The acknowledgements' airtime still in the duty-cycle window.
    #[serde(default)]
    duty: Vec<SavedSpend>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedNode {
    node: NodeId,
    name: String,
    last_seen: SystemTime,
    alerts: BTreeMap<String, ActiveAlert>,
}

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

/// The gateway's state; [`run`] drives it.
#[derive(Debug)]
pub struct Gateway {
    keys: Keys,
    replay: ReplayWindow,
    replay_path: PathBuf,
    /// The replay window changed since it was last handed to the writer.
    replay_dirty: bool,
    state_path: PathBuf,
    /// The firing sets changed since the state file was last written.
    state_dirty: bool,
    repost_interval: Duration,
    modulation: Modulation,
    duty: DutyCycle,
    node_timeout: Duration,
    nodes: BTreeMap<NodeId, NodeStats>,
    active: BTreeMap<(NodeId, String), ActiveAlert>,
    rejected: BTreeMap<&'static str, u64>,
    duplicates: u64,
    /// Re-acknowledgements given per node and sequence (the latest few sequences).
    reacks: BTreeMap<NodeId, std::collections::VecDeque<(u32, u8)>>,
    acks: BTreeMap<&'static str, u64>,
    /// When sync replies were sent per node, the last hour's.
    sync_replies: BTreeMap<NodeId, std::collections::VecDeque<Instant>>,
    airtime: Duration,
    radio_errors: u64,
    last_error: Option<String>,
}

const REJECT_REASONS: [&str; 7] = [
    "truncated",
    "oversized",
    "version",
    "malformed",
    "mac",
    "replay",
    "too_far",
];

impl Gateway {
    /// A gateway whose replay state lives in `state_dir`.
    pub fn new(lora: &LoraConfig, keys: Keys, state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("state_dir {}: {e}", state_dir.display()))?;
        let replay_path = state_dir.join("lora-replay.json");
        let replay = ReplayWindow::load(&replay_path)?;
        let state_path = state_dir.join("lora-gateway.json");
        let saved: SavedState = match nodewatch_lora::persist::read_optional(&state_path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: {e}", state_path.display()))?,
            None => SavedState::default(),
        };
        // A restored node's timeout starts now: the gateway could not listen while down.
        let restarted = Instant::now();
        let mut duty = DutyCycle::new(lora.duty_fraction(), Duration::from_secs(3600));
        duty.restore(&saved.duty, restarted, SystemTime::now());
        let mut nodes = BTreeMap::new();
        let mut active = BTreeMap::new();
        for n in saved.nodes {
            for (name, alert) in n.alerts {
                active.insert((n.node, name), alert);
            }
            nodes.insert(
                n.node,
                NodeStats {
                    name: n.name,
                    received: 0,
                    rssi_dbm: None,
                    snr_db: None,
                    last_seen: n.last_seen,
                    last_heard: restarted,
                    silent: false,
                    resync_from: None,
                },
            );
        }
        if !active.is_empty() {
            tracing::info!(
                alerts = active.len(),
                "LoRa gateway: restored firing alerts from the state file."
            );
        }
        Ok(Self {
            keys,
            replay,
            replay_path,
            replay_dirty: false,
            state_path,
            state_dirty: false,
            repost_interval: Duration::try_from_secs_f64(lora.repost_interval_secs)
                .map_err(|e| format!("lora.repost_interval_secs: {e}"))?,
            modulation: lora.radio.modulation,
            duty,
            node_timeout: Duration::try_from_secs_f64(lora.node_timeout_secs)
                .map_err(|e| format!("lora.node_timeout_secs: {e}"))?,
            nodes,
            active,
            rejected: BTreeMap::new(),
            duplicates: 0,
            reacks: BTreeMap::new(),
            acks: BTreeMap::new(),
            sync_replies: BTreeMap::new(),
            airtime: Duration::ZERO,
            radio_errors: 0,
            last_error: None,
        })
    }

    fn postable(
        &self,
        node: NodeId,
        alertname: &str,
        alert: &ActiveAlert,
        ends_at: SystemTime,
    ) -> PostableAlert {
        let node_name = self.keys.name_of(node);
        let stale = self.nodes.get(&node).is_some_and(|s| s.silent);
        let labels = BTreeMap::from([
            ("alertname".to_string(), alertname.to_string()),
            ("node".to_string(), node_name.clone()),
            ("severity".to_string(), alert.severity.as_str().to_string()),
            ("source".to_string(), "lora".to_string()),
        ]);
        let annotations = BTreeMap::from([
            (
                "summary".to_string(),
                format!("{alertname} on {node_name} (over LoRa)"),
            ),
            ("value".to_string(), alert.value.to_string()),
        ]);
        let mut annotations = annotations;
        if stale {
            // The node is silent: this is its last known state, kept firing.
            annotations.insert("stale".to_string(), "true".to_string());
        }
        PostableAlert {
            labels,
            annotations,
            starts_at: rfc3339(alert.starts_at),
            ends_at: rfc3339(ends_at),
        }
    }

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
        let node = match frame::peek_node(&rx.bytes) {
            Ok(n) => n,
            Err(e) => return self.reject(e.reason(), &e.to_string()),
        };
        // The node's own key: a frame signed with another node's key does not verify.
        let Some(key) = self.keys.key_of(node) else {
            return self.reject("mac", &format!("from {node}: no key for it"));
        };
        let decoded = match frame::decode(&rx.bytes, &key) {
            Ok(f) => f,
            Err(e) => return self.reject(e.reason(), &format!("from {node}: {e}")),
        };
        let alert = match decoded {
            // Another gateway's answers.
            Frame::Ack(_) | Frame::SyncReply(_) => return Handled::default(),
            Frame::SyncRequest(request) => {
                tracing::info!(node = %node, "LoRa node asks for its epoch (sync request).");
                return Handled {
                    ack: self.sync_reply(node, request.nonce, &key, instant),
                    ..Handled::default()
                };
            }
            Frame::Alert(a) => a,
        };
        let stamp = (alert.epoch, alert.sequence);
        let mut handled = Handled::default();
        let mut resync = false;
        match self.replay.check(node, alert.epoch, alert.sequence) {
            verdict @ (Verdict::Replay | Verdict::TooFar) => {
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
                refused.ack = self.sync_reply(node, stamp, &key, instant);
                return refused;
            }
            Verdict::Duplicate => {
                self.duplicates += 1;
                if !self.may_reack(node, alert.sequence) {
                    // A replayed duplicate must not drain the budget: once a node has
                    // had a few re-acknowledgements of a frame, it gets no more.
                    *self.acks.entry("rate_limited").or_default() += 1;
                    return handled;
                }
                resync = self.nodes.get(&node).and_then(|s| s.resync_from) == Some(stamp);
            }
            Verdict::New => {
                self.replay.accept(node, alert.epoch, alert.sequence);
                // Written by the state writer, off the runtime thread.
                self.replay_dirty = true;
                let name = self.keys.name_of(node);
                let stats = self.nodes.entry(node).or_insert(NodeStats {
                    name,
                    received: 0,
                    rssi_dbm: None,
                    snr_db: None,
                    last_seen: now,
                    last_heard: instant,
                    silent: false,
                    resync_from: None,
                });
                stats.received += 1;
                stats.rssi_dbm = rx.rssi_dbm;
                stats.snr_db = rx.snr_db;
                stats.last_seen = now;
                stats.last_heard = instant;
                let was_silent = std::mem::replace(&mut stats.silent, false);
                tracing::info!(
                    node = stats.name.as_str(),
                    state = alert.state.as_str(),
                    alertname = alert.alertname.as_str(),
                    severity = alert.severity.as_str(),
                    epoch = alert.epoch,
                    sequence = alert.sequence,
                    rssi = ?rx.rssi_dbm,
                    "LoRa frame received."
                );
                if was_silent {
                    tracing::info!(node = %node, "LoRa node heard again: LoraNodeSilent ends.");
                    handled.posts.push(self.silent_alert(node, now, now));
                }
                let changes = if alert.state == AlertState::Heartbeat {
                    let (changes, in_sync) = self.compare_digest(node, stamp, alert.digest, now);
                    resync = !in_sync;
                    changes
                } else {
                    self.apply(node, &alert, now)
                };
                handled.posts.extend(changes);
                // Alerts still active get their endsAt moved on (and lose `stale`).
                if alert.state != AlertState::Resolved || was_silent {
                    handled.posts.extend(self.node_posts(node, now, instant));
                }
            }
        }
        let mut ack = Frame::Alert(alert).ack();
        ack.resync = resync;
        handled.ack = self.spend_reply(Frame::Ack(ack), frame::ACK_LEN, &key, instant);
        handled
    }

    /// Encodes a reply for `node` if the duty-cycle budget has room for it.
    fn spend_reply(
        &mut self,
        reply: Frame,
        len: usize,
        key: &nodewatch_lora::frame::Key,
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
        key: &nodewatch_lora::frame::Key,
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

    /// Compares a heartbeat's digest of the node's firing set with ours. Returns the
    /// posts it leads to and whether the two agree; when they do not, the ack asks the
    /// node to announce its alerts again. An alert of ours not announced again since
    /// the last such request is resolved only when the alerts that were announced
    /// make up exactly the node's set: a lost re-announcement never ends an alert.
    fn compare_digest(
        &mut self,
        node: NodeId,
        stamp: (u16, u32),
        theirs: u32,
        now: SystemTime,
    ) -> (Vec<PostableAlert>, bool) {
        let digest_of = |alerts: &[(&String, &ActiveAlert)]| {
            frame::firing_digest(alerts.iter().map(|(n, a)| (n.as_str(), a.severity)))
        };
        let ours: Vec<(&String, &ActiveAlert)> = self
            .active
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((_, name), a)| (name, a))
            .collect();
        let resync_from = self.nodes.get(&node).and_then(|s| s.resync_from);
        let mut keep: Option<Vec<String>> = None;
        if digest_of(&ours) == theirs {
            keep = Some(ours.iter().map(|(n, _)| (*n).clone()).collect());
        } else if theirs == frame::firing_digest([]) {
            // Nothing fires on the node.
            keep = Some(Vec::new());
        } else if let Some(from) = resync_from {
            let confirmed: Vec<(&String, &ActiveAlert)> = ours
                .iter()
                .filter(|(_, a)| a.confirmed > from)
                .copied()
                .collect();
            if digest_of(&confirmed) == theirs {
                keep = Some(confirmed.iter().map(|(n, _)| (*n).clone()).collect());
            }
        }
        let Some(keep) = keep else {
            tracing::info!(node = %node, "LoRa heartbeat's firing set differs from ours: asking the node to resync.");
            if let Some(s) = self.nodes.get_mut(&node) {
                s.resync_from = Some(stamp);
            }
            return (Vec::new(), false);
        };
        if let Some(s) = self.nodes.get_mut(&node) {
            s.resync_from = None;
        }
        let ended: Vec<(String, ActiveAlert)> = self
            .active
            .iter()
            .filter(|((n, name), _)| *n == node && !keep.contains(name))
            .map(|((_, name), a)| (name.clone(), a.clone()))
            .collect();
        let mut posts = Vec::new();
        for (name, old) in ended {
            self.active.remove(&(node, name.clone()));
            self.state_dirty = true;
            posts.push(self.postable(node, &name, &old, now));
        }
        (posts, true)
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

    fn apply(&mut self, node: NodeId, alert: &AlertFrame, now: SystemTime) -> Vec<PostableAlert> {
        let mut posts = Vec::new();
        // Any change to a firing set is written to the state file.
        self.state_dirty = true;
        let alertname = alert.alertname.as_str();
        match alert.state {
            AlertState::Firing => {
                let key = (node, alertname.to_string());
                let previous = self.active.get(&key).cloned();
                if let Some(old) = &previous
                    && old.severity != alert.severity
                {
                    // Another severity is another alert for Alertmanager: end the old one.
                    posts.push(self.postable(node, alertname, old, now));
                }
                let starts_at = previous.map(|p| p.starts_at).unwrap_or(now);
                self.active.insert(
                    key,
                    ActiveAlert {
                        severity: alert.severity,
                        value: alert.value,
                        starts_at,
                        confirmed: (alert.epoch, alert.sequence),
                    },
                );
            }
            AlertState::Resolved => {
                if let Some(old) = self.active.remove(&(node, alertname.to_string())) {
                    posts.push(self.postable(node, alertname, &old, now));
                }
            }
            // Compared in `compare_digest`.
            AlertState::Heartbeat => {}
        }
        posts
    }

    /// How long Alertmanager keeps a silent node's alerts without a re-post: three
    /// re-posts, so one lost post ends nothing.
    fn stale_hold(&self) -> Duration {
        self.repost_interval.saturating_mul(3)
    }

    /// `endsAt` for `node`'s alerts: what is left of its timeout since it was last
    /// heard (on the monotonic clock, mapped to the wall clock now), plus the stale
    /// hold, so that the re-post that marks the node silent comes before it. Only a
    /// gateway gone for good lets Alertmanager end them.
    fn ends_at(&self, node: NodeId, now: SystemTime, instant: Instant) -> SystemTime {
        let left = match self.nodes.get(&node) {
            Some(s) if s.silent => Duration::ZERO,
            Some(s) => self
                .node_timeout
                .saturating_sub(instant.saturating_duration_since(s.last_heard)),
            None => Duration::ZERO,
        };
        now.checked_add(left.saturating_add(self.stale_hold()))
            .unwrap_or(now)
    }

    fn node_posts(&self, node: NodeId, now: SystemTime, instant: Instant) -> Vec<PostableAlert> {
        let ends_at = self.ends_at(node, now, instant);
        self.active
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((n, name), a)| self.postable(*n, name, a, ends_at))
            .collect()
    }

    /// `LoraNodeSilent{node}` for `node`, ending at `ends_at` (now, to resolve it).
    fn silent_alert(&self, node: NodeId, since: SystemTime, ends_at: SystemTime) -> PostableAlert {
        let node_name = self.keys.name_of(node);
        PostableAlert {
            labels: BTreeMap::from([
                ("alertname".to_string(), NODE_SILENT_ALERT.to_string()),
                ("node".to_string(), node_name.clone()),
                ("severity".to_string(), "warning".to_string()),
            ]),
            annotations: BTreeMap::from([(
                "summary".to_string(),
                format!("{node_name} is silent on LoRa"),
            )]),
            starts_at: rfc3339(since),
            ends_at: rfc3339(ends_at),
        }
    }

    fn is_silent(&self, stats: &NodeStats, instant: Instant) -> bool {
        instant.saturating_duration_since(stats.last_heard) >= self.node_timeout
    }

    /// The periodic re-post: every active alert with its `endsAt`. A node silent past
    /// the timeout keeps its alerts (annotated `stale`) and gets `LoraNodeSilent`.
    pub fn repost(&mut self, now: SystemTime, instant: Instant) -> Vec<PostableAlert> {
        let newly_silent: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, s)| !s.silent && self.is_silent(s, instant))
            .map(|(id, _)| *id)
            .collect();
        for node in &newly_silent {
            if let Some(s) = self.nodes.get_mut(node) {
                s.silent = true;
                tracing::warn!(
                    node = s.name.as_str(),
                    "LoRa node silent past node_timeout_secs: its alerts stay firing as stale."
                );
            }
        }
        let mut posts = Vec::new();
        for (node, s) in &self.nodes {
            if s.silent {
                let since = s
                    .last_seen
                    .checked_add(self.node_timeout)
                    .unwrap_or(now)
                    .min(now);
                posts.push(self.silent_alert(*node, since, now + self.stale_hold()));
            }
        }
        for ((node, name), alert) in &self.active {
            posts.push(self.postable(*node, name, alert, self.ends_at(*node, now, instant)));
        }
        posts
    }

    /// Every active alert, as posted at start (after a restart).
    pub fn startup_posts(&self, now: SystemTime, instant: Instant) -> Vec<PostableAlert> {
        self.active
            .iter()
            .map(|((node, name), a)| {
                self.postable(*node, name, a, self.ends_at(*node, now, instant))
            })
            .collect()
    }

    /// The replay window file's contents when it changed since the last call.
    pub fn take_replay_if_changed(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::replace(&mut self.replay_dirty, false) {
            return None;
        }
        match self.replay.to_bytes() {
            Ok(bytes) => Some((self.replay_path.clone(), bytes)),
            Err(e) => {
                self.last_error = Some(format!("{}: {e}", self.replay_path.display()));
                None
            }
        }
    }

    /// The state file's contents when the firing sets changed since the last call.
    pub fn take_state_if_changed(&mut self) -> Option<(PathBuf, Vec<u8>)> {
        if !std::mem::replace(&mut self.state_dirty, false) {
            return None;
        }
        let nodes = self
            .nodes
            .iter()
            .map(|(id, s)| SavedNode {
                node: *id,
                name: s.name.clone(),
                last_seen: s.last_seen,
                alerts: self
                    .active
                    .iter()
                    .filter(|((n, _), _)| n == id)
                    .map(|((_, name), a)| (name.clone(), a.clone()))
                    .collect(),
            })
            .collect();
        let duty = self.duty.saved(Instant::now(), SystemTime::now());
        match serde_json::to_vec(&SavedState { nodes, duty }) {
            Ok(bytes) => Some((self.state_path.clone(), bytes)),
            Err(e) => {
                self.last_error = Some(format!("{}: {e}", self.state_path.display()));
                None
            }
        }
    }

    /// Forwarded alerts still active (tests).
    pub fn active_alerts(&self) -> usize {
        self.active.len()
    }

    /// The `nodewatch_lora_*` families of a gateway.
    pub fn metrics(&mut self, posts: &PostCounters) -> Vec<prometheus::proto::MetricFamily> {
        let mut sink = MetricSink::new();
        for s in self.nodes.values() {
            let node = [("node", s.name.as_str())];
            // The central LoraNodeSilent alert follows the gateway's own timeout.
            sink.gauge(
                "nodewatch_lora_node_silent",
                "1 if a node has not been heard for node_timeout_secs.",
                &node,
                if self.is_silent(s, Instant::now()) {
                    1.0
                } else {
                    0.0
                },
            );
            sink.counter(
                "nodewatch_lora_received_total",
                "Verified LoRa frames received from a node (duplicates not counted).",
                &node,
                s.received as f64,
            );
            sink.gauge(
                "nodewatch_lora_last_seen_timestamp_seconds",
                "When a node was last heard (unix seconds, the gateway's clock).",
                &node,
                crate::metrics::unix_seconds(s.last_seen),
            );
            if let Some(rssi) = s.rssi_dbm {
                sink.gauge(
                    "nodewatch_lora_rssi_dbm",
                    "Signal strength of a node's last frame.",
                    &node,
                    f64::from(rssi),
                );
            }
            if let Some(snr) = s.snr_db {
                sink.gauge(
                    "nodewatch_lora_snr_db",
                    "Signal-to-noise ratio of a node's last frame.",
                    &node,
                    f64::from(snr),
                );
            }
        }
        for reason in REJECT_REASONS {
            sink.counter(
                "nodewatch_lora_rejected_total",
                "LoRa frames dropped: malformed, forged (mac), replayed, or too far ahead.",
                &[("reason", reason)],
                self.rejected.get(reason).copied().unwrap_or(0) as f64,
            );
        }
        sink.counter(
            "nodewatch_lora_duplicates_total",
            "Frames received again (resent by a node that missed our acknowledgement).",
            &[],
            self.duplicates as f64,
        );
        for result in ["sent", "over_budget", "rate_limited", "sync_reply"] {
            sink.counter(
                "nodewatch_lora_acks_total",
                "Answers to nodes: sent, skipped for lack of duty-cycle budget, refused to a duplicate or sync request seen too often, and sync replies among those sent.",
                &[("result", result)],
                self.acks.get(result).copied().unwrap_or(0) as f64,
            );
        }
        sink.gauge(
            "nodewatch_lora_forwarded_alerts",
            "Alerts from LoRa nodes active in Alertmanager.",
            &[],
            self.active.len() as f64,
        );
        for (result, n) in [
            ("success", posts.success.load(Ordering::Relaxed)),
            ("failure", posts.failure.load(Ordering::Relaxed)),
        ] {
            sink.counter(
                "nodewatch_lora_alertmanager_posts_total",
                "Posts to Alertmanager, by result.",
                &[("result", result)],
                n as f64,
            );
        }
        sink.counter(
            "nodewatch_lora_airtime_seconds_total",
            "Time this radio spent transmitting.",
            &[],
            self.airtime.as_secs_f64(),
        );
        sink.gauge(
            "nodewatch_lora_duty_cycle_remaining_seconds",
            "Airtime left in the duty-cycle budget of the sliding hour.",
            &[],
            self.duty.remaining(Instant::now()).as_secs_f64(),
        );
        sink.counter(
            "nodewatch_lora_radio_errors_total",
            "Radio failures (transmit or receive).",
            &[],
            self.radio_errors as f64,
        );
        sink.into_families()
    }
}

/// Alertmanager post results, shared with the poster task.
#[derive(Debug, Default)]
pub struct PostCounters {
    success: AtomicU64,
    failure: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

/// Posts batches to Alertmanager; failed alerts are retried (the latest state of each
/// alert) every few seconds until they go through.
async fn post_loop(
    client: AlertmanagerClient,
    mut batches: mpsc::Receiver<Vec<PostableAlert>>,
    counters: Arc<PostCounters>,
) {
    let mut pending: BTreeMap<Vec<(String, String)>, PostableAlert> = BTreeMap::new();
    loop {
        let next = if pending.is_empty() {
            batches.recv().await
        } else {
            match tokio::time::timeout(Duration::from_secs(5), batches.recv()).await {
                Ok(b) => b,
                Err(_) => Some(Vec::new()),
            }
        };
        let Some(batch) = next else { return };
        for alert in batch {
            let key = alert.labels.clone().into_iter().collect();
            pending.insert(key, alert);
        }
        if pending.is_empty() {
            continue;
        }
        let alerts: Vec<PostableAlert> = pending.values().cloned().collect();
        let errors = client.post(&alerts).await;
        let mut last_error = counters
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() {
            counters.success.fetch_add(1, Ordering::Relaxed);
            *last_error = None;
            pending.clear();
        } else {
            counters.failure.fetch_add(1, Ordering::Relaxed);
            for e in &errors {
                tracing::warn!(
                    error = e.as_str(),
                    "Posting LoRa alerts to Alertmanager failed; will retry."
                );
            }
            *last_error = errors.into_iter().next();
        }
    }
}

/// Runs the gateway until `stop`.
pub async fn run<R: Radio>(
    mut radio: R,
    lora: &LoraConfig,
    keys: Keys,
    state_dir: &Path,
    snapshot: Arc<Snapshot>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let client = AlertmanagerClient::new(&lora.alertmanager_urls, Duration::from_secs(10))?;
    let mut gateway = Gateway::new(lora, keys, state_dir)?;
    let counters = Arc::new(PostCounters::default());
    let (batches, rx) = mpsc::channel(256);
    let poster = tokio::spawn(post_loop(client, rx, counters.clone()));
    let mut state_error = None;
    let replay_errors = Arc::new(std::sync::Mutex::new(None));
    let (replay_tx, replay_rx) = watch::channel(None);
    let replay_writer = tokio::spawn(state_writer(replay_rx, replay_errors.clone()));
    // Alerts restored from the state file are posted again at once.
    let restored = gateway.startup_posts(SystemTime::now(), Instant::now());
    if !restored.is_empty() {
        let _ = batches.try_send(restored);
    }
    let mut repost = tokio::time::interval(Duration::from_secs_f64(lora.repost_interval_secs));
    repost.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(urls = ?lora.alertmanager_urls, "LoRa gateway: forwarding to Alertmanager.");
    loop {
        if let Some(window) = gateway.take_replay_if_changed() {
            replay_tx.send_replace(Some(window));
        }
        let replay_error = replay_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let error = (gateway.last_error.clone())
            .or(state_error.clone())
            .or(replay_error)
            .or_else(|| {
                counters
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            });
        snapshot
            .outputs()
            .set_metrics("lora", &gateway.metrics(&counters));
        snapshot
            .outputs()
            .report_health("lora", error.is_none(), error);
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            heard = radio.receive(Duration::from_secs(1)) => match heard {
                Ok(Some(rx)) => {
                    let handled = gateway.handle(&rx, SystemTime::now(), Instant::now());
                    // Durable before acknowledged or posted: once the node holds an ack,
                    // a power cut here must not lose the alert.
                    if let Some(state) = gateway.take_state_if_changed() {
                        state_error = write_state(state).await.err();
                    }
                    if !handled.posts.is_empty() {
                        let _ = batches.try_send(handled.posts);
                    }
                    if let Some(ack) = handled.ack {
                        match radio.transmit(&ack).await {
                            Ok(()) => *gateway.acks.entry("sent").or_default() += 1,
                            Err(e) => {
                                gateway.radio_errors += 1;
                                tracing::warn!(error = %e, "LoRa acknowledgement not sent.");
                            }
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    gateway.radio_errors += 1;
                    gateway.last_error = Some(format!("receive: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            _ = repost.tick() => {
                let posts = gateway.repost(SystemTime::now(), Instant::now());
                if !posts.is_empty() {
                    let _ = batches.try_send(posts);
                }
            }
            _ = stop.changed() => {}
        }
    }
    if let Some(state) = gateway.take_state_if_changed() {
        let _ = write_state(state).await;
    }
    if let Some(window) = gateway.take_replay_if_changed() {
        replay_tx.send_replace(Some(window));
    }
    drop(replay_tx);
    drop(batches);
    let _ = tokio::time::timeout(Duration::from_secs(2), replay_writer).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), poster).await;
    Ok(())
}

/// Writes one state file on a blocking thread, so its fsyncs don't hold up the runtime.
async fn write_state((path, bytes): (PathBuf, Vec<u8>)) -> Result<(), String> {
    let result =
        tokio::task::spawn_blocking(move || nodewatch_lora::persist::write_atomic(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(format!("state writer: {e}")));
    if let Err(e) = &result {
        tracing::warn!(error = e.as_str(), "LoRa gateway state not saved.");
    }
    result
}

/// Writes the latest state file on a blocking thread (its fsyncs must not hold up
/// the runtime); states that arrive meanwhile are coalesced into the newest.
pub(super) async fn state_writer(
    mut states: watch::Receiver<Option<(PathBuf, Vec<u8>)>>,
    errors: Arc<std::sync::Mutex<Option<String>>>,
) {
    while states.changed().await.is_ok() {
        let Some((path, bytes)) = states.borrow_and_update().clone() else {
            continue;
        };
        let result = write_state((path, bytes)).await;
        *errors.lock().unwrap_or_else(|e| e.into_inner()) = result.err();
    }
}
