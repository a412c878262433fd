//! What goes to Alertmanager: each forwarded alert with its labels and `endsAt`,
//! `LoraNodeSilent` for a silent node, the periodic re-post, and the task that posts
//! batches and retries them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use nodewatch_lora::frame::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Gateway;
use super::nodes::ActiveAlert;
use crate::outputs::lora_link::alertmanager::{AlertmanagerClient, PostableAlert, rfc3339};

/// The alert the gateway raises for a node silent past `node_timeout_secs`; the
/// central server's rule of the same name (rules/lora.yml) has the same labels, so
/// Alertmanager groups the two.
pub const NODE_SILENT_ALERT: &str = "LoraNodeSilent";

impl Gateway {
    /// `alertname` of `node` as Alertmanager gets it, ending at `ends_at`.
    pub(super) fn postable(
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

    /// Every active alert of `node`, its `endsAt` moved on.
    pub(super) fn node_posts(
        &self,
        node: NodeId,
        now: SystemTime,
        instant: Instant,
    ) -> Vec<PostableAlert> {
        let ends_at = self.ends_at(node, now, instant);
        self.active
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|((n, name), a)| self.postable(*n, name, a, ends_at))
            .collect()
    }

    /// `LoraNodeSilent{node}` for `node`, ending at `ends_at` (now, to resolve it).
    pub(super) fn silent_alert(
        &self,
        node: NodeId,
        since: SystemTime,
        ends_at: SystemTime,
    ) -> PostableAlert {
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

    /// The periodic re-post: every active alert with its `endsAt`. A node silent past
    /// the timeout keeps its alerts (annotated `stale`) and gets `LoraNodeSilent`.
    pub fn repost(&mut self, now: SystemTime, instant: Instant) -> Vec<PostableAlert> {
        self.mark_newly_silent(instant);
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
}

/// Alertmanager post results, shared with the poster task.
#[derive(Debug, Default)]
pub struct PostCounters {
    pub(super) success: AtomicU64,
    pub(super) failure: AtomicU64,
    pub(super) last_error: std::sync::Mutex<Option<String>>,
}

impl PostCounters {
    /// Why the last post failed, if it did.
    pub(super) fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Posts batches to Alertmanager; failed alerts are retried (the latest state of each
/// alert) every few seconds until they go through.
pub(super) async fn post_loop(
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
