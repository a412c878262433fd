//! Building metric families for the exposition.
//!
//! Collectors write samples into a [`MetricSink`]; it groups them into
//! `prometheus::proto::MetricFamily` values and, when finished, sorts families by name,
//! labels by name and samples by label values, as node_exporter's Go client does, so
//! the output is stable and diffable.

use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of node_exporter's families, kept for drop-in compatibility.
pub const NODE_NAMESPACE: &str = "node";
/// Prefix of nodewatch's own families.
pub const NODEWATCH_NAMESPACE: &str = "nodewatch";

/// The sink collectors write into: one type for the agent and the exporters.
pub use nodewatch_http::MetricSink;

/// Whether `tail` can follow a valid prefix (`node_memory_`) in a metric name: only
/// `[a-zA-Z0-9_:]`. Names made from file contents (meminfo, vmstat fields) are checked
/// with it, so a garbled file cannot produce an unparseable exposition.
pub fn is_metric_name_tail(tail: &str) -> bool {
    tail.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

pub use nodewatch_http::metric_sink::sort_families;

pub use nodewatch_http::metric_with_labels;

pub use nodewatch_http::exposition::simple_value as sample_value;

/// Unix seconds of `t` (0 before the epoch), as timestamp gauges and the health
/// endpoint give times.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Unix seconds now.
pub fn unix_now() -> f64 {
    unix_seconds(SystemTime::now())
}
