//! Per-node bookkeeping: each node's figures (when it was last heard, its signal,
//! whether it is silent) and its firing set, changed by its alert frames and checked
//! against its heartbeats' digest.

use std::time::SystemTime;

use nodewatch_lora::frame::{self, AlertFrame, AlertState, NodeId, Severity};
use nodewatch_lora::radio::Received;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Gateway;
use crate::outputs::lora_link::alertmanager::PostableAlert;

/// What the gateway knows of one node.
#[derive(Debug, Clone)]
pub(super) struct NodeStats {
    pub(super) name: String,
    pub(super) received: u64,
    pub(super) rssi_dbm: Option<f32>,
    pub(super) snr_db: Option<f32>,
    pub(super) last_seen: SystemTime,
    /// When it was last heard, on the monotonic clock (timeouts use this).
    pub(super) last_heard: Instant,
    /// Whether `LoraNodeSilent` has been raised for it.
    pub(super) silent: bool,
    /// The heartbeat whose digest differed (its ack asked for a resync).
    pub(super) resync_from: Option<(u16, u32)>,
}

impl NodeStats {
    /// A node last seen at `last_seen` (wall clock) and heard at `last_heard`.
    pub(super) fn new(name: String, last_seen: SystemTime, last_heard: Instant) -> Self {
        Self {
            name,
            received: 0,
            rssi_dbm: None,
            snr_db: None,
            last_seen,
            last_heard,
            silent: false,
            resync_from: None,
        }
    }
}

/// One alert of a node, firing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ActiveAlert {
    pub(super) severity: Severity,
    pub(super) value: f32,
    pub(super) starts_at: SystemTime,
    /// The epoch and sequence of the frame that last announced it firing.
    #[serde(default)]
    pub(super) confirmed: (u16, u32),
}

impl Gateway {
    /// Notes a new frame from `node`: its signal and when it was heard. Returns
    /// whether the node had been silent.
    pub(super) fn heard(
        &mut self,
        node: NodeId,
        alert: &AlertFrame,
        rx: &Received,
        now: SystemTime,
        instant: Instant,
    ) -> bool {
        let name = self.keys.name_of(node);
        let stats = self
            .nodes
            .entry(node)
            .or_insert(NodeStats::new(name, now, instant));
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
        was_silent
    }

    /// Compares a heartbeat's digest of the node's firing set with ours. Returns the
    /// posts it leads to and whether the two agree; when they do not, the ack asks the
    /// node to announce its alerts again. An alert of ours not announced again since
    /// the last such request is resolved only when the alerts that were announced
    /// make up exactly the node's set: a lost re-announcement never ends an alert.
    pub(super) fn compare_digest(
        &mut self,
        node: NodeId,
        stamp: (u16, u32),
        theirs: u32,
        now: SystemTime,
    ) -> (Vec<PostableAlert>, bool) {
        let Some(keep) = self.agreed_set(node, theirs) else {
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

    /// The names of our alerts of `node` that the digest `theirs` says fire: all of
    /// them, none (nothing fires), or those announced since the last resync request;
    /// `None` when no such set matches.
    fn agreed_set(&self, node: NodeId, theirs: u32) -> Option<Vec<String>> {
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
        if digest_of(&ours) == theirs {
            return Some(ours.iter().map(|(n, _)| (*n).clone()).collect());
        }
        if theirs == frame::firing_digest([]) {
            // Nothing fires on the node.
            return Some(Vec::new());
        }
        let from = resync_from?;
        let confirmed: Vec<(&String, &ActiveAlert)> = ours
            .iter()
            .filter(|(_, a)| a.confirmed > from)
            .copied()
            .collect();
        (digest_of(&confirmed) == theirs)
            .then(|| confirmed.iter().map(|(n, _)| (*n).clone()).collect())
    }

    /// Applies a firing or resolved frame to the node's firing set. Returns the posts
    /// it leads to (the alerts it ends).
    pub(super) fn apply(
        &mut self,
        node: NodeId,
        alert: &AlertFrame,
        now: SystemTime,
    ) -> Vec<PostableAlert> {
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

    /// Whether a node has not been heard for `node_timeout_secs`.
    pub(super) fn is_silent(&self, stats: &NodeStats, instant: Instant) -> bool {
        instant.saturating_duration_since(stats.last_heard) >= self.node_timeout
    }

    /// Marks the nodes silent past the timeout that were not yet.
    pub(super) fn mark_newly_silent(&mut self, instant: Instant) {
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
    }
}
