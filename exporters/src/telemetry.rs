//! What both exporters report about their own work, for the central alerts
//! `HighErrorRate`, `HighLatency`, `RpcEndpointDown` and `RpcEndpointLagging`:
//!
//! - `nodewatch_exporter_refresh_duration_seconds` (histogram) and
//!   `nodewatch_exporter_refresh_errors_total`: every refresh, whatever the exporter;
//! - every `probe_interval_seconds` (default 60), every configured endpoint is asked for
//!   `eth_blockNumber`, in a request of its own:
//!   `nodewatch_exporter_rpc_requests_total{endpoint,host}`,
//!   `nodewatch_exporter_rpc_errors_total{endpoint,host,kind}`,
//!   `nodewatch_exporter_rpc_endpoint_up{endpoint,host}`,
//!   `nodewatch_exporter_rpc_block_height{endpoint,host}` and
//!   `nodewatch_exporter_rpc_head_lag_blocks{endpoint,host}` (blocks behind the highest
//!   endpoint). The refresh itself only talks to the first endpoint that answers, so a
//!   lagging or dead fallback would otherwise go unnoticed until it is needed; the
//!   refresh keeps its one request.
//!
//! `endpoint` is the position in `rpc_urls` and `host` its redacted form, as in
//! `nodewatch_wallet_rpc_endpoint_up`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use crate::rpc::{ERROR_KINDS, RpcClient, RpcError, redact};
use nodewatch_http::MetricSink;

/// Upper bounds of the refresh duration buckets, in seconds (`+Inf` implied).
pub const REFRESH_BUCKETS: [f64; 6] = [0.25, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug)]
struct Probe {
    url: String,
    host: String,
    height: Option<u64>,
    up: Option<bool>,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
}

/// The refresh histogram and the endpoint probes.
#[derive(Debug)]
pub struct Telemetry {
    probes: Vec<Probe>,
    /// Non-cumulative counts per bucket of [`REFRESH_BUCKETS`].
    buckets: [u64; REFRESH_BUCKETS.len()],
    refreshes: u64,
    refresh_seconds: f64,
    refresh_errors: u64,
}

impl Telemetry {
    /// Telemetry for the endpoints `rpc_urls`, in order.
    pub fn new(rpc_urls: &[String]) -> Telemetry {
        Telemetry {
            probes: rpc_urls
                .iter()
                .map(|url| Probe {
                    url: url.clone(),
                    host: redact(url),
                    height: None,
                    up: None,
                    requests: 0,
                    errors: ERROR_KINDS.iter().map(|k| (*k, 0)).collect(),
                })
                .collect(),
            buckets: [0; REFRESH_BUCKETS.len()],
            refreshes: 0,
            refresh_seconds: 0.0,
            refresh_errors: 0,
        }
    }

    /// Records one refresh.
    pub fn observe_refresh(&mut self, seconds: f64, ok: bool) {
        if let Some(i) = REFRESH_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i] += 1;
        }
        self.refreshes += 1;
        self.refresh_seconds += seconds;
        if !ok {
            self.refresh_errors += 1;
        }
    }

    /// Records one probe answer of endpoint `index`.
    pub fn observe_probe(&mut self, index: usize, answer: Result<u64, RpcError>) {
        let Some(probe) = self.probes.get_mut(index) else {
            return;
        };
        probe.requests += 1;
        match answer {
            Ok(height) => {
                probe.height = Some(height);
                probe.up = Some(true);
            }
            Err(e) => {
                // A dead endpoint has no current height: no lag is computed for it.
                probe.height = None;
                probe.up = Some(false);
                *probe.errors.entry(e.kind()).or_insert(0) += 1;
            }
        }
    }

    /// Asks every endpoint for its block height (blocking: run on the blocking pool).
    /// The lock is not held during the requests.
    pub fn probe(telemetry: &Mutex<Telemetry>, client: &RpcClient) {
        let urls: Vec<String> = lock(telemetry)
            .probes
            .iter()
            .map(|p| p.url.clone())
            .collect();
        for (index, url) in urls.iter().enumerate() {
            let answer = client.block_number(url);
            if let Err(e) = &answer {
                tracing::warn!(endpoint = %redact(url), error = %e, "block height probe failed");
            }
            lock(telemetry).observe_probe(index, answer);
        }
    }

    /// The families to serve.
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut out = MetricSink::new();
        let head = self.probes.iter().filter_map(|p| p.height).max();
        for (i, probe) in self.probes.iter().enumerate() {
            let index = i.to_string();
            let labels = [("endpoint", index.as_str()), ("host", probe.host.as_str())];
            out.counter(
                "nodewatch_exporter_rpc_requests_total",
                "Block height probes sent to the endpoint (eth_blockNumber, every probe_interval_seconds).",
                &labels,
                probe.requests as f64,
            );
            for (kind, n) in &probe.errors {
                out.counter(
                    "nodewatch_exporter_rpc_errors_total",
                    "Failed block height probes of the endpoint, by kind.",
                    &[labels[0], labels[1], ("kind", kind)],
                    *n as f64,
                );
            }
            if let Some(up) = probe.up {
                out.gauge(
                    "nodewatch_exporter_rpc_endpoint_up",
                    "1 if the endpoint answered its last block height probe.",
                    &labels,
                    if up { 1.0 } else { 0.0 },
                );
            }
            if let (Some(height), Some(head)) = (probe.height, head) {
                out.gauge(
                    "nodewatch_exporter_rpc_block_height",
                    "The endpoint's latest block number at its last probe.",
                    &labels,
                    height as f64,
                );
                out.gauge(
                    "nodewatch_exporter_rpc_head_lag_blocks",
                    "Blocks the endpoint is behind the highest configured endpoint.",
                    &labels,
                    head.saturating_sub(height) as f64,
                );
            }
        }
        out.counter(
            "nodewatch_exporter_refresh_errors_total",
            "Refreshes that did not read everything.",
            &[],
            self.refresh_errors as f64,
        );
        let mut families = out.into_families_as_written();
        if self.refreshes > 0 {
            families.push(self.refresh_histogram());
        }
        families
    }

    fn refresh_histogram(&self) -> MetricFamily {
        let mut cumulative = 0;
        let buckets = REFRESH_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(bound, n)| {
                cumulative += n;
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(*bound);
                bucket.set_cumulative_count(cumulative);
                bucket
            })
            .collect();
        let mut histogram = Histogram::default();
        histogram.set_bucket(buckets);
        histogram.set_sample_count(self.refreshes);
        histogram.set_sample_sum(self.refresh_seconds);
        let mut metric = Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name("nodewatch_exporter_refresh_duration_seconds".into());
        family.set_help("Duration of each refresh, all endpoints tried included.".into());
        family.set_field_type(MetricType::HISTOGRAM);
        family.mut_metric().push(metric);
        family
    }
}

/// Locks the telemetry; a poisoned lock still holds usable figures.
pub fn lock(telemetry: &Mutex<Telemetry>) -> std::sync::MutexGuard<'_, Telemetry> {
    telemetry.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Telemetry) -> String {
        let mut out = Vec::new();
        nodewatch_http::encode_families(&t.families(), &mut out).expect("encode");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn lag_is_measured_against_the_highest_endpoint() {
        let mut t = Telemetry::new(&[
            "https://a.example/key".into(),
            "https://b.example".into(),
            "https://c.example".into(),
        ]);
        t.observe_probe(0, Ok(100));
        t.observe_probe(1, Ok(160));
        t.observe_probe(2, Err(RpcError::Timeout(std::time::Duration::from_secs(1))));
        let text = render(&t);
        for line in [
            "nodewatch_exporter_rpc_head_lag_blocks{endpoint=\"0\",host=\"https://a.example\"} 60",
            "nodewatch_exporter_rpc_head_lag_blocks{endpoint=\"1\",host=\"https://b.example\"} 0",
            "nodewatch_exporter_rpc_block_height{endpoint=\"1\",host=\"https://b.example\"} 160",
            "nodewatch_exporter_rpc_endpoint_up{endpoint=\"2\",host=\"https://c.example\"} 0",
            "nodewatch_exporter_rpc_errors_total{endpoint=\"2\",host=\"https://c.example\",kind=\"timeout\"} 1",
            "nodewatch_exporter_rpc_requests_total{endpoint=\"2\",host=\"https://c.example\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        // The dead endpoint has no height and no lag; the URL's path never shows.
        assert!(!text.contains("endpoint=\"2\",host=\"https://c.example\"} 160"));
        assert!(!text.contains("lag_blocks{endpoint=\"2\""));
        assert!(!text.contains("/key"));
    }

    #[test]
    fn refresh_histogram_is_cumulative() {
        let mut t = Telemetry::new(&[]);
        assert!(!render(&t).contains("refresh_duration_seconds"));
        t.observe_refresh(0.1, true);
        t.observe_refresh(3.0, false);
        t.observe_refresh(100.0, true);
        let text = render(&t);
        for line in [
            "nodewatch_exporter_refresh_duration_seconds_bucket{le=\"0.25\"} 1",
            "nodewatch_exporter_refresh_duration_seconds_bucket{le=\"2.5\"} 1",
            "nodewatch_exporter_refresh_duration_seconds_bucket{le=\"5\"} 2",
            "nodewatch_exporter_refresh_duration_seconds_bucket{le=\"30\"} 2",
            "nodewatch_exporter_refresh_duration_seconds_bucket{le=\"+Inf\"} 3",
            "nodewatch_exporter_refresh_duration_seconds_count 3",
            "nodewatch_exporter_refresh_errors_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
