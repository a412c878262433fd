//! remote_write: the agent pushes its metrics to a Prometheus-compatible receiver
//! (Prometheus remote write 1.0), for nodes a central Prometheus cannot scrape (a Pi
//! behind NAT).
//!
//! - [`proto`]: the `WriteRequest` messages, snappy, and one sample set from the
//!   `/metrics` text.
//! - [`wal`]: the write-ahead buffer on disk under `state_dir`, with its cap.
//! - [`sender`]: the HTTP(S) client and the classification of answers.
//!
//! Two tasks: every `interval_secs` the collector takes what `/metrics` serves,
//! stamps it with the time, and appends it to the buffer (fsynced, on a blocking
//! thread); every `send_interval_secs` the sender sends what is buffered, oldest first,
//! in batches of at most `max_samples_per_send` samples, retrying with backoff while
//! the receiver is away. Metrics: `nodewatch_remote_write_*`; health: the
//! `remote_write` output.

pub mod proto;
pub mod sender;
pub mod wal;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::metrics::MetricSink;
use crate::scheduler::OnDemand;
use crate::snapshot::Snapshot;
use sender::{Auth, Endpoint, Outcome};
use wal::Wal;

/// The subdirectory of `state_dir` holding the buffer.
pub const BUFFER_DIR: &str = "remote_write";
/// Smallest `max_buffer_bytes` (a few sample sets).
pub const MIN_BUFFER_BYTES: u64 = 64 * 1024;
/// First wait after a failed send; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between attempts while the receiver is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

const fn default_interval_secs() -> f64 {
    15.0
}
const fn default_send_interval_secs() -> f64 {
    5.0
}
const fn default_timeout_secs() -> f64 {
    30.0
}
const fn default_max_buffer_bytes() -> u64 {
    256 * 1024 * 1024
}
const fn default_max_samples_per_send() -> u64 {
    5000
}

/// The `[remote_write]` section. Present means on; `url` is the only required key.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's remote-write endpoint, `http://` or `https://` (Prometheus:
    /// `/api/v1/write`; Mimir: `/api/v1/push`; VictoriaMetrics: `/api/v1/write`).
    pub url: String,
    /// Seconds between sample sets: every interval the agent takes what `/metrics`
    /// serves and buffers it, so pushed series are as dense as scrapes at this
    /// interval. Default 15.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: f64,
    /// Seconds between sends of what is buffered. Default 5.
    #[serde(default = "default_send_interval_secs")]
    pub send_interval_secs: f64,
    /// Seconds one request may take (connect, TLS, answer). Default 30.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: f64,
    /// Cap of the buffer on disk, in bytes; when reached, the oldest sample sets are
    /// dropped (and counted). Default 268435456 (256 MiB, about four days at 15 s).
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: u64,
    /// Most samples in one request (at least one sample set). Default 5000.
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: u64,
    /// CA certificates (PEM) for an `https://` receiver. Default: the system's bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// A file holding a bearer token (owned by the agent's user, mode 0600).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Labels added to every pushed series. Defaults `job = "node"` and `instance` and
    /// `node` set to the node name; set one here to change it, to `""` to leave it out.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `[remote_write.basic_auth]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name.
    pub username: String,
    /// A file holding the password (owned by the agent's user, mode 0600).
    pub password_file: PathBuf,
}

impl RemoteWriteConfig {
    /// Checks what types alone cannot; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        let endpoint = Endpoint::parse(&self.url).map_err(|e| format!("remote_write.url: {e}"))?;
        let seconds = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(())
            } else {
                Err(format!(
                    "remote_write.{key} must be a number of seconds above 0 and at most 86400, found {v}"
                ))
            }
        };
        seconds("interval_secs", self.interval_secs)?;
        seconds("send_interval_secs", self.send_interval_secs)?;
        seconds("timeout_secs", self.timeout_secs)?;
        if self.max_buffer_bytes < MIN_BUFFER_BYTES {
            return Err(format!(
                "remote_write.max_buffer_bytes must be at least {MIN_BUFFER_BYTES}, found {}",
                self.max_buffer_bytes
            ));
        }
        if self.max_samples_per_send == 0 {
            return Err("remote_write.max_samples_per_send must be at least 1".into());
        }
        for name in self.labels.keys() {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            if !valid {
                return Err(format!(
                    "remote_write.labels: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                ));
            }
        }
        let auth = self.auth()?;
        match &auth {
            Auth::None => {}
            Auth::Basic { password_file, .. } => {
                sender::read_secret("remote_write.basic_auth.password_file", password_file)?;
            }
            Auth::Bearer { token_file } => {
                sender::read_secret("remote_write.bearer_token_file", token_file)?;
            }
        }
        if auth != Auth::None && !endpoint.tls && !endpoint.is_loopback() {
            return Err(format!(
                "remote_write.url: {:?} is plain http:// to another host; credentials would cross the network in clear text: use https://",
                self.url
            ));
        }
        if let Some(path) = &self.ca_file {
            if !endpoint.tls {
                return Err(
                    "remote_write.ca_file is set but remote_write.url is not https://".into(),
                );
            }
            sender::tls_config(Some(path))?;
        }
        Ok(())
    }

    fn auth(&self) -> Result<Auth, String> {
        match (&self.basic_auth, &self.bearer_token_file) {
            (Some(_), Some(_)) => {
                Err("remote_write: basic_auth and bearer_token_file are mutually exclusive".into())
            }
            (Some(basic), None) => {
                if basic.username.is_empty() || basic.username.contains(':') {
                    return Err(
                        "remote_write.basic_auth.username must not be empty or contain ':'".into(),
                    );
                }
                Ok(Auth::Basic {
                    username: basic.username.clone(),
                    password_file: basic.password_file.clone(),
                })
            }
            (None, Some(file)) => Ok(Auth::Bearer {
                token_file: file.clone(),
            }),
            (None, None) => Ok(Auth::None),
        }
    }

    /// The labels every pushed series carries: `job`, `instance`, `node`, then the
    /// configured ones; empty values left out.
    pub fn external_labels(&self, node_name: &str) -> Vec<(String, String)> {
        let mut labels: BTreeMap<String, String> = [
            ("job", "node"),
            ("instance", node_name),
            ("node", node_name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        labels.extend(self.labels.clone());
        labels.into_iter().filter(|(_, v)| !v.is_empty()).collect()
    }
}

/// Error reasons, each exported at 0 from the start.
const ERROR_REASONS: &[&str] = &[
    "network",
    "timeout",
    "http_5xx",
    "http_429",
    "http_4xx",
    "credentials",
    "wal_write",
    "wal_read",
    "wal_housekeeping",
];

/// The sender's and collector's counters (the buffer keeps its own).
#[derive(Debug, Default)]
struct Counters {
    sample_sets: u64,
    sent_samples: u64,
    rejected_samples: u64,
    /// Samples of buffered records that could not be decoded for sending.
    undecodable_samples: u64,
    errors: BTreeMap<&'static str, u64>,
    last_success_unix: Option<f64>,
    failing: Option<String>,
}

/// Where the pushed samples come from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The latest results.
    pub snapshot: Arc<Snapshot>,
    /// Asked before each sample set, as a scrape does, so on-demand collectors are
    /// as fresh as a scrape would see them.
    pub on_demand: Arc<OnDemand>,
}

/// What both tasks share.
#[derive(Debug)]
struct Shared {
    wal: Mutex<Wal>,
    counters: Mutex<Counters>,
    snapshot: Arc<Snapshot>,
    on_demand: Arc<OnDemand>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Publishes `nodewatch_remote_write_*` and the output's health.
    fn publish(&self) {
        let (stats, disk_bytes, cap, pending, memory_bytes) = {
            let wal = lock(&self.wal);
            (
                wal.stats().clone(),
                wal.disk_bytes(),
                wal.cap(),
                wal.pending_samples(),
                wal.memory_bytes(),
            )
        };
        let counters = lock(&self.counters);
        let mut sink = MetricSink::new();
        sink.counter(
            "nodewatch_remote_write_sample_sets_total",
            "Sample sets taken from /metrics and buffered for remote_write (one per interval).",
            &[],
            counters.sample_sets as f64,
        );
        let dropped = stats.dropped_buffer_full
            + stats.dropped_disk_error
            + stats.dropped_corrupt
            + counters.undecodable_samples
            + counters.rejected_samples;
        for (result, value) in [("sent", counters.sent_samples), ("dropped", dropped)] {
            sink.counter(
                "nodewatch_remote_write_samples_total",
                "Samples that left the remote_write buffer: sent (accepted by the receiver) or dropped.",
                &[("result", result)],
                value as f64,
            );
        }
        for (reason, value) in [
            ("buffer_full", stats.dropped_buffer_full),
            ("rejected", counters.rejected_samples),
            ("disk_error", stats.dropped_disk_error),
            (
                "corrupt",
                stats.dropped_corrupt + counters.undecodable_samples,
            ),
        ] {
            sink.counter(
                "nodewatch_remote_write_dropped_samples_total",
                "Samples dropped: buffer_full (the cap was reached, oldest first), rejected (the receiver refused them with a 4xx), disk_error (neither disk nor memory could keep them), corrupt (damaged on disk).",
                &[("reason", reason)],
                value as f64,
            );
        }
        for reason in ERROR_REASONS {
            let value = match *reason {
                "wal_write" => stats.write_errors,
                "wal_read" => {
                    stats.read_errors + counters.errors.get("wal_read").copied().unwrap_or(0)
                }
                "wal_housekeeping" => stats.housekeeping_errors,
                other => counters.errors.get(other).copied().unwrap_or(0),
            };
            sink.counter(
                "nodewatch_remote_write_errors_total",
                "remote_write errors by reason: sends (network, timeout, http_5xx, http_429, http_4xx, credentials) and the buffer's disk (wal_write, wal_read, wal_housekeeping).",
                &[("reason", reason)],
                value as f64,
            );
        }
        sink.gauge(
            "nodewatch_remote_write_buffer_bytes",
            "Bytes of the remote_write buffer's segments on disk.",
            &[],
            disk_bytes as f64,
        );
        sink.gauge(
            "nodewatch_remote_write_buffer_max_bytes",
            "The cap of the remote_write buffer on disk (remote_write.max_buffer_bytes).",
            &[],
            cap as f64,
        );
        sink.gauge(
            "nodewatch_remote_write_buffer_memory_bytes",
            "Bytes of sample sets held in memory because the disk refused them.",
            &[],
            memory_bytes as f64,
        );
        sink.gauge(
            "nodewatch_remote_write_pending_samples",
            "Samples buffered and not yet sent.",
            &[],
            pending as f64,
        );
        sink.counter(
            "nodewatch_remote_write_wal_truncations_total",
            "Buffer segments cut at a torn or damaged record when the agent started.",
            &[],
            stats.corrupt_truncations as f64,
        );
        sink.counter(
            "nodewatch_remote_write_wal_truncated_bytes_total",
            "Bytes cut off buffer segments at a torn or damaged record.",
            &[],
            stats.truncated_bytes as f64,
        );
        if let Some(t) = counters.last_success_unix {
            sink.gauge(
                "nodewatch_remote_write_last_success_timestamp_seconds",
                "Unix time of the last request the receiver accepted.",
                &[],
                t,
            );
        }
        let outputs = self.snapshot.outputs();
        outputs.set_metrics("remote_write", &sink.into_families());
        let error = match (&stats.write_failing, &counters.failing) {
            (Some(disk), Some(send)) => Some(format!("buffer: {disk}; sending: {send}")),
            (Some(disk), None) => Some(format!("buffer: {disk}")),
            (None, send) => send.clone(),
        };
        outputs.report_health("remote_write", error.is_none(), error);
    }

    fn count_error(&self, reason: &'static str, message: String) {
        let mut counters = lock(&self.counters);
        *counters.errors.entry(reason).or_default() += 1;
        counters.failing = Some(message);
    }
}

/// Starts remote_write when `[remote_write]` is set (a validated configuration): the
/// buffer is opened, then the collecting and sending tasks run until `stop` turns
/// true. `None` when the section is absent.
pub fn spawn(
    config: Option<&RemoteWriteConfig>,
    node_name: &str,
    state_dir: &std::path::Path,
    source: Source,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let rw = config?.clone();
    let Source {
        snapshot,
        on_demand,
    } = source;
    let labels = rw.external_labels(node_name);
    let dir = state_dir.join(BUFFER_DIR);
    Some(tokio::spawn(async move {
        let endpoint = match Endpoint::parse(&rw.url) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = e.as_str(), "remote_write: bad url.");
                return;
            }
        };
        let auth = match rw.auth() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = e.as_str(), "remote_write: bad credentials.");
                return;
            }
        };
        let client = match sender::Client::new(
            endpoint,
            rw.ca_file.as_deref(),
            auth,
            Duration::from_secs_f64(rw.timeout_secs),
        ) {
            Ok(c) => c,
            Err(e) => {
                snapshot
                    .outputs()
                    .report_health("remote_write", false, Some(e.clone()));
                tracing::error!(
                    error = e.as_str(),
                    "remote_write: cannot set up the client."
                );
                return;
            }
        };
        let cap = rw.max_buffer_bytes;
        let open_dir = dir.clone();
        let wal = match tokio::task::spawn_blocking(move || Wal::open(&open_dir, cap)).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "remote_write: cannot open the buffer.");
                return;
            }
        };
        let stats = wal.stats().clone();
        if stats.corrupt_truncations > 0 || stats.last_error.is_some() {
            tracing::warn!(
                truncations = stats.corrupt_truncations,
                truncated_bytes = stats.truncated_bytes,
                error = stats.last_error.as_deref().unwrap_or(""),
                "remote_write: the buffer had damage or errors at start."
            );
        }
        tracing::info!(
            url = rw.url.as_str(),
            buffer = %dir.display(),
            pending_samples = wal.pending_samples(),
            "remote_write: pushing metrics."
        );
        let shared = Arc::new(Shared {
            wal: Mutex::new(wal),
            counters: Mutex::new(Counters::default()),
            snapshot,
            on_demand,
        });
        shared.publish();
        let collecting = tokio::spawn(collect(
            shared.clone(),
            labels,
            Duration::from_secs_f64(rw.interval_secs),
            stop.clone(),
        ));
        send(
            shared,
            client,
            Duration::from_secs_f64(rw.send_interval_secs),
            rw.max_samples_per_send,
            stop,
        )
        .await;
        let _ = collecting.await;
    }))
}

/// Waits `period` or until `stop` turns true; returns whether to stop.
async fn wait_or_stop(period: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(period) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Every `interval`: one sample set from `/metrics` into the buffer.
async fn collect(
    shared: Arc<Shared>,
    labels: Vec<(String, String)>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    // The first set waits for the first collection round (bounded), so it is complete.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && !shared
            .snapshot
            .slots()
            .iter()
            .all(|slot| slot.state().duration.is_some())
    {
        if wait_or_stop(Duration::from_millis(50), &mut stop).await {
            return;
        }
    }
    let labels = Arc::new(labels);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_write_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        shared.on_demand.refresh().await;
        let text = nodewatch_http::MetricsSource::exposition(shared.snapshot.as_ref()).text();
        let timestamp_ms = (crate::metrics::unix_now() * 1000.0) as i64;
        let task_shared = shared.clone();
        let task_labels = labels.clone();
        // Parsing, compressing and the fsync are blocking work.
        let appended = tokio::task::spawn_blocking(move || {
            let text = String::from_utf8_lossy(&text);
            let (samples, _unparsed) = proto::parse_exposition(&text);
            let count = u32::try_from(samples.len()).unwrap_or(u32::MAX);
            let request = proto::write_request(samples, &task_labels, timestamp_ms);
            let payload = proto::encode_compressed(&request)?;
            lock(&task_shared.counters).sample_sets += 1;
            lock(&task_shared.wal).append(payload.into(), count)
        })
        .await
        .unwrap_or_else(|e| Err(format!("buffering task failed: {e}")));
        match appended {
            Ok(()) => {
                if let Some(previous) = last_write_error.take() {
                    tracing::info!(
                        previous = previous.as_str(),
                        "remote_write: the buffer is written to disk again."
                    );
                }
            }
            Err(message) => {
                if last_write_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(
                        error = message.as_str(),
                        "remote_write: cannot write the buffer to disk; keeping sample sets in memory."
                    );
                }
                last_write_error = Some(message);
            }
        }
        shared.publish();
    }
}

/// Every `send_interval`: sends what is buffered, oldest first, until the buffer is
/// empty or the receiver is away (then retries with backoff).
async fn send(
    shared: Arc<Shared>,
    mut client: sender::Client,
    send_interval: Duration,
    max_samples: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        if wait_or_stop(send_interval, &mut stop).await {
            return;
        }
        loop {
            let peek_shared = shared.clone();
            let batch =
                tokio::task::spawn_blocking(move || lock(&peek_shared.wal).peek(max_samples))
                    .await
                    .unwrap_or_default();
            let Some(last) = batch.last() else { break };
            let last_id = last.id;
            let samples: u64 = batch.iter().map(|r| u64::from(r.samples)).sum();
            let payloads: Vec<bytes::Bytes> = batch.into_iter().map(|r| r.payload).collect();
            let outcome = match proto::concat_records(&payloads) {
                Ok(body) => client.send(body).await,
                Err(message) => Outcome::Reject {
                    reason: "wal_read",
                    message,
                },
            };
            match outcome {
                Outcome::Accepted | Outcome::Reject { .. } => {
                    let ack_shared = shared.clone();
                    let acked =
                        tokio::task::spawn_blocking(move || lock(&ack_shared.wal).ack(last_id))
                            .await
                            .unwrap_or(0);
                    {
                        let mut counters = lock(&shared.counters);
                        if let Outcome::Reject { reason, message } = &outcome {
                            *counters.errors.entry(reason).or_default() += 1;
                            if *reason == "wal_read" {
                                counters.undecodable_samples += acked;
                                tracing::warn!(
                                    error = message.as_str(),
                                    samples,
                                    "remote_write: a buffered batch cannot be decoded; dropped."
                                );
                            } else {
                                counters.rejected_samples += acked;
                                tracing::warn!(
                                    error = message.as_str(),
                                    samples,
                                    "remote_write: the receiver refused a batch; dropped."
                                );
                            }
                        } else {
                            counters.sent_samples += acked;
                            counters.last_success_unix = Some(crate::metrics::unix_now());
                            counters.failing = None;
                        }
                    }
                    if failing && outcome == Outcome::Accepted {
                        tracing::info!("remote_write: the receiver takes samples again.");
                        failing = false;
                    }
                    backoff = MIN_BACKOFF;
                    shared.publish();
                }
                Outcome::Retry {
                    reason,
                    after,
                    message,
                } => {
                    if !failing {
                        tracing::warn!(
                            error = message.as_str(),
                            "remote_write: cannot send; buffering and retrying."
                        );
                        failing = true;
                    }
                    shared.count_error(reason, message);
                    shared.publish();
                    let wait = after.unwrap_or(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if wait_or_stop(wait, &mut stop).await {
                        return;
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
