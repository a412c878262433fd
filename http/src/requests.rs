//! Request metrics of the HTTP server, for the central `HighErrorRate` and
//! `HighLatency` alerts: `nodewatch_http_requests_total{handler,code}` and the histogram
//! `nodewatch_http_request_duration_seconds{handler}`.
//!
//! `handler` is the route pattern (`/metrics`, `/api/health`, …) or `unmatched`, so the
//! label set is bounded by the routes. Five buckets keep the agent's memory small. The
//! figures are process-wide, as in the Go client's default registry: one server runs
//! per process, and a scrape renders them after the cached body.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use crate::exposition::write_float;

/// Upper bounds of the duration buckets, in seconds (`+Inf` is implied).
pub const DURATION_BUCKETS: [f64; 5] = [0.005, 0.025, 0.1, 0.5, 2.5];

/// The `handler` label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Default)]
struct HandlerStats {
    /// Non-cumulative counts per bucket of [`DURATION_BUCKETS`].
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
    by_code: BTreeMap<u16, u64>,
}

/// Counters and duration histograms by route.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    handlers: Mutex<BTreeMap<String, HandlerStats>>,
}

impl RequestMetrics {
    /// The process-wide instance the server records into.
    pub fn global() -> &'static RequestMetrics {
        static GLOBAL: OnceLock<RequestMetrics> = OnceLock::new();
        GLOBAL.get_or_init(RequestMetrics::default)
    }

    /// Records one answered request.
    pub fn observe(&self, handler: &str, code: u16, seconds: f64) {
        let mut handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        // A known route costs no allocation.
        let stats = match handlers.get_mut(handler) {
            Some(stats) => stats,
            None => handlers.entry(handler.to_string()).or_default(),
        };
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            stats.buckets[i] += 1;
        }
        stats.count += 1;
        stats.sum += seconds;
        *stats.by_code.entry(code).or_insert(0) += 1;
    }

    /// Appends both families in the text format; nothing before the first request.
    pub fn render(&self, out: &mut Vec<u8>) {
        let handlers = self.handlers.lock().unwrap_or_else(|e| e.into_inner());
        if handlers.is_empty() {
            return;
        }
        out.extend_from_slice(
            b"# HELP nodewatch_http_requests_total HTTP requests answered, by route and status code.\n\
              # TYPE nodewatch_http_requests_total counter\n",
        );
        for (handler, stats) in handlers.iter() {
            for (code, n) in &stats.by_code {
                let _ = writeln!(
                    out,
                    "nodewatch_http_requests_total{{code=\"{code}\",handler=\"{}\"}} {n}",
                    escape(handler)
                );
            }
        }
        out.extend_from_slice(
            b"# HELP nodewatch_http_request_duration_seconds Time to answer an HTTP request, by route.\n\
              # TYPE nodewatch_http_request_duration_seconds histogram\n",
        );
        for (handler, stats) in handlers.iter() {
            let handler = escape(handler);
            let mut cumulative = 0;
            for (bound, n) in DURATION_BUCKETS.iter().zip(stats.buckets) {
                cumulative += n;
                let _ = write!(
                    out,
                    "nodewatch_http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\""
                );
                write_float(*bound, out);
                let _ = writeln!(out, "\"}} {cumulative}");
            }
            let _ = writeln!(
                out,
                "nodewatch_http_request_duration_seconds_bucket{{handler=\"{handler}\",le=\"+Inf\"}} {}",
                stats.count
            );
            let _ = write!(
                out,
                "nodewatch_http_request_duration_seconds_sum{{handler=\"{handler}\"}} "
            );
            write_float(stats.sum, out);
            out.push(b'\n');
            let _ = writeln!(
                out,
                "nodewatch_http_request_duration_seconds_count{{handler=\"{handler}\"}} {}",
                stats.count
            );
        }
    }
}

/// Route patterns are ours, but escape them as label values anyway.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_cumulative_buckets() {
        let metrics = RequestMetrics::default();
        let mut out = Vec::new();
        metrics.render(&mut out);
        assert!(out.is_empty(), "no families before the first request");
        metrics.observe("/metrics", 200, 0.004);
        metrics.observe("/metrics", 200, 0.2);
        metrics.observe("/metrics", 503, 3.0);
        metrics.observe(UNMATCHED, 404, 0.001);
        metrics.render(&mut out);
        let text = String::from_utf8(out).expect("utf8");
        for line in [
            "nodewatch_http_requests_total{code=\"200\",handler=\"/metrics\"} 2",
            "nodewatch_http_requests_total{code=\"503\",handler=\"/metrics\"} 1",
            "nodewatch_http_requests_total{code=\"404\",handler=\"unmatched\"} 1",
            "nodewatch_http_request_duration_seconds_bucket{handler=\"/metrics\",le=\"0.005\"} 1",
            "nodewatch_http_request_duration_seconds_bucket{handler=\"/metrics\",le=\"0.1\"} 1",
            "nodewatch_http_request_duration_seconds_bucket{handler=\"/metrics\",le=\"0.5\"} 2",
            "nodewatch_http_request_duration_seconds_bucket{handler=\"/metrics\",le=\"2.5\"} 2",
            "nodewatch_http_request_duration_seconds_bucket{handler=\"/metrics\",le=\"+Inf\"} 3",
            "nodewatch_http_request_duration_seconds_sum{handler=\"/metrics\"} 3.204",
            "nodewatch_http_request_duration_seconds_count{handler=\"/metrics\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(
            text.matches("# TYPE nodewatch_http_requests_total counter")
                .count(),
            1
        );
    }
}
