//! The gateway's `nodewatch_lora_*` families and its health.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::nodes::NodeStats;
use super::{Gateway, PostCounters};
use crate::metrics::MetricSink;

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
    /// The `nodewatch_lora_*` families of a gateway.
    pub fn metrics(&mut self, posts: &PostCounters) -> Vec<prometheus::proto::MetricFamily> {
        let mut sink = MetricSink::new();
        for s in self.nodes.values() {
            self.node_families(&mut sink, s);
        }
        self.frame_families(&mut sink);
        self.link_families(&mut sink, posts);
        sink.into_families()
    }

    /// One node's families: silent, frames received, last seen, signal.
    fn node_families(&self, sink: &mut MetricSink, s: &NodeStats) {
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

    /// What became of the frames: rejected, duplicates, and the answers to them.
    fn frame_families(&self, sink: &mut MetricSink) {
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
    }

    /// The forwarding and the radio: alerts active, posts, airtime, budget, errors.
    fn link_families(&self, sink: &mut MetricSink, posts: &PostCounters) {
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
    }

    /// The error the gateway's health reports, if any: its own first, then the state
    /// file's, the replay window's, and the last post's.
    pub(super) fn health_error(
        &self,
        state_error: Option<String>,
        replay_error: Option<String>,
        posts: &PostCounters,
    ) -> Option<String> {
        self.last_error
            .clone()
            .or(state_error)
            .or(replay_error)
            .or_else(|| posts.last_error())
    }
}
