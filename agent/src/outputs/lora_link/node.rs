//! The node side of the link: this agent's local alerts, over the air.
//!
//! Alerts travel by name: a name starts firing (at its highest severity among its
//! instances), changes severity, or resolves when its last instance does. Each change
//! is one frame, queued critical first; a frame not yet sent is replaced by a newer
//! change of the same alert (a firing that resolves before it could be sent is
//! dropped with it: the gateway never knew). A frame is sent, then resent after
//! `ack_timeout` (backing off) until the gateway acknowledges its sequence, up to
//! `max_attempts`. Every transmission spends airtime from the duty-cycle budget;
//! when the budget is spent, frames wait in the queue for it. A heartbeat (value =
//! number of firing alert names) goes out at start and whenever nothing was sent for
//! `heartbeat_interval_secs`. It carries the digest of the firing set the gateway was
//! told; when the gateway's view differs (a frame given up while it was out of reach,
//! a gateway that lost its state), its acknowledgement asks for a resync and the node
//! announces every firing alert again, then another heartbeat.
//!
//! Frames are numbered (epoch, sequence) from `state_dir/lora-sequence`, whose
//! reservations are written on a blocking thread before a number is used. Without
//! that file (a new node, or one that lost its state) the node first sends a sync
//! request and starts the epoch the gateway's reply names; it does the same when the
//! gateway refuses one of its frames as a replay or as too far ahead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodewatch_lora::airtime::{Modulation, time_on_air};
use nodewatch_lora::duty::DutyCycle;
use nodewatch_lora::frame::{
    self, AlertFrame, AlertState, Frame, Key, NodeId, Severity, SyncRequest, firing_digest,
};
use nodewatch_lora::queue::{Priority, TxQueue};
use nodewatch_lora::radio::Radio;
use nodewatch_lora::sequence::SequenceStore;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Keys, LoraConfig};
use crate::alerts::FiringAlert;
use crate::alerts::bus::AlertBus;
use crate::metrics::MetricSink;
use crate::snapshot::Snapshot;

/// Frames waiting beyond this are dropped, lowest priority first.
const MAX_QUEUE: usize = 32;
/// The longest wait between resends.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// What each firing alert name looks like on the air: its highest severity and the
/// value of its most severe instance.
pub fn by_name(alerts: &[FiringAlert]) -> BTreeMap<String, (Severity, f32)> {
    let mut out: BTreeMap<String, (Severity, f32)> = BTreeMap::new();
    for a in alerts {
        let s = a.severity;
        let entry = out
            .entry(a.alertname.clone())
            .or_insert((s, a.value as f32));
        if s > entry.0 {
            *entry = (s, a.value as f32);
        }
    }
    out
}

/// A frame's (epoch, sequence), or a sync request's nonce.
pub type Stamp = (u16, u32);

/// A fresh nonce for a sync request (the reply must echo it).
fn random_nonce() -> Stamp {
    use std::io::Read;
    let mut b = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Unique is enough (only the gateway can answer); the clock's nanoseconds are.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b.copy_from_slice(&t.to_be_bytes()[10..16]);
    }
    (
        u16::from_be_bytes([b[0], b[1]]),
        u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
    )
}

fn priority(f: &AlertFrame) -> Priority {
    Priority::for_alert(f.state, f.severity)
}

/// Heartbeats are tried twice at most: the next one comes anyway, and out of the
/// gateway's range every resend would only spend the budget alerts need.
const HEARTBEAT_ATTEMPTS: u32 = 2;

fn attempts_allowed(frame: &AlertFrame, max_attempts: u32) -> u32 {
    if frame.state == AlertState::Heartbeat {
        max_attempts.min(HEARTBEAT_ATTEMPTS)
    } else {
        max_attempts
    }
}

/// A frame in the queue (its sequence is given at its first transmission).
#[derive(Debug, Clone)]
struct Outgoing {
    frame: AlertFrame,
    encoded: Option<Vec<u8>>,
    attempts: u32,
    /// Not before this (backoff after a missing acknowledgement).
    not_before: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    transmissions: BTreeMap<&'static str, u64>,
    acknowledged: u64,
    dropped: BTreeMap<&'static str, u64>,
    airtime: Duration,
    radio_errors: u64,
    last_ack_unix: Option<f64>,
    /// Resyncs the gateway asked for.
    resyncs: u64,
    /// Epochs started on the gateway's word.
    epoch_starts: u64,
}

/// The sender's state; [`run`] drives it.
#[derive(Debug)]
pub struct NodeLink {
    key: Key,
    node: NodeId,
    modulation: Modulation,
    sequence: SequenceStore,
    duty: DutyCycle,
    /// `state_dir/lora-duty.json`: the airtime spent, so a restart cannot overspend.
    duty_path: PathBuf,
    /// Airtime was spent since the budget was last saved.
    duty_dirty: bool,
    queue: TxQueue<Outgoing>,
    /// The alert states the gateway was last told (or is being told).
    told: BTreeMap<String, (Severity, f32)>,
    ack_timeout: Duration,
    max_attempts: u32,
    heartbeat_interval: Duration,
    last_sent: Option<Instant>,
    /// Sync requests sent since the epoch was last unknown (backoff).
    sync_attempts: u32,
    /// No sync request before this.
    sync_not_before: Option<Instant>,
    counters: Counters,
    last_error: Option<String>,
}

impl NodeLink {
    /// A link for `node_name`, its sequence kept in `state_dir`.
    pub fn new(
        lora: &LoraConfig,
        keys: Keys,
        node_name: &str,
        state_dir: &Path,
    ) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("state_dir {}: {e}", state_dir.display()))?;
        let sequence = SequenceStore::open(&state_dir.join("lora-sequence"))?;
        let duty_path = state_dir.join("lora-duty.json");
        let mut duty = DutyCycle::new(lora.duty_fraction(), Duration::from_secs(3600));
        duty.load(&duty_path, Instant::now(), std::time::SystemTime::now())?;
        let node = NodeId::from_name(node_name);
        let key = keys
            .key_of(node)
            .ok_or_else(|| "lora.network_key_file: no key for this node".to_string())?;
        Ok(Self {
            duty_path,
            duty_dirty: false,
            key,
            node,
            modulation: lora.radio.modulation,
            sequence,
            duty,
            queue: TxQueue::new(),
            told: BTreeMap::new(),
            ack_timeout: lora.ack_timeout(),
            max_attempts: lora.max_attempts,
            heartbeat_interval: Duration::from_secs_f64(lora.heartbeat_interval_secs),
            last_sent: None,
            sync_attempts: 0,
            sync_not_before: None,
            counters: Counters::default(),
            last_error: None,
        })
    }

    fn frame(&self, state: AlertState, severity: Severity, value: f32, name: &str) -> AlertFrame {
        AlertFrame {
            state,
            severity,
            node: self.node,
            epoch: 0,
            sequence: 0,
            value,
            digest: 0,
            alertname: name.to_string(),
        }
    }

    fn enqueue(&mut self, frame: AlertFrame) {
        // A newer change of the same alert replaces one not yet on the air.
        let mut dropped_unsent_firing = false;
        if frame.state != AlertState::Heartbeat {
            self.queue.retain(|o| {
                let same =
                    o.frame.state != AlertState::Heartbeat && o.frame.alertname == frame.alertname;
                if same && o.attempts == 0 && o.frame.state == AlertState::Firing {
                    dropped_unsent_firing = true;
                }
                !same
            });
        }
        if frame.state == AlertState::Resolved && dropped_unsent_firing {
            // The gateway never heard it fire.
            return;
        }
        let priority = priority(&frame);
        self.queue.push(
            priority,
            Outgoing {
                frame,
                encoded: None,
                attempts: 0,
                not_before: None,
            },
        );
        while self.queue.len() > MAX_QUEUE {
            if self.queue.pop_lowest().is_some() {
                *self.counters.dropped.entry("queue_full").or_default() += 1;
            }
        }
    }

    /// Queues the changes between what the gateway was told and `alerts`.
    pub fn update(&mut self, alerts: &[FiringAlert]) {
        let now = by_name(alerts);
        let gone: Vec<(String, (Severity, f32))> = self
            .told
            .iter()
            .filter(|(name, _)| !now.contains_key(*name))
            .map(|(n, v)| (n.clone(), *v))
            .collect();
        for (name, (sev, value)) in gone {
            self.enqueue(self.frame(AlertState::Resolved, sev, value, &name));
        }
        for (name, (sev, value)) in &now {
            if self.told.get(name).map(|(s, _)| s) != Some(sev) {
                self.enqueue(self.frame(AlertState::Firing, *sev, *value, name));
            }
        }
        self.told = now;
    }

    /// Queues a heartbeat unless one is already waiting.
    pub fn heartbeat(&mut self) {
        if self
            .queue
            .iter()
            .any(|o| o.frame.state == AlertState::Heartbeat)
        {
            return;
        }
        // Its count and digest are taken when it goes on the air.
        self.enqueue(self.frame(AlertState::Heartbeat, Severity::Info, 0.0, ""));
    }

    /// The gateway's view of our firing set differs: announce every firing alert
    /// again, then a heartbeat to compare once more.
    fn reannounce(&mut self) {
        tracing::info!(
            alerts = self.told.len(),
            "LoRa gateway asked for a resync: announcing every firing alert again."
        );
        self.counters.resyncs += 1;
        let told: Vec<(String, (Severity, f32))> =
            self.told.iter().map(|(n, v)| (n.clone(), *v)).collect();
        for (name, (sev, value)) in told {
            self.enqueue(self.frame(AlertState::Firing, sev, value, &name));
        }
        self.heartbeat();
    }

    /// The gateway named the epoch to use: the sequence restarts at 0 in it, and
    /// frames numbered in the old one get new numbers.
    fn start_epoch(&mut self, epoch: u16) {
        tracing::info!(
            epoch,
            "LoRa gateway sent this node's epoch: its sequence restarts at 0."
        );
        self.sequence.start_epoch(epoch);
        self.sync_attempts = 0;
        self.sync_not_before = None;
        self.counters.epoch_starts += 1;
        let mut all = Vec::new();
        while let Some((p, mut out)) = self.queue.pop_with_priority() {
            out.encoded = None;
            out.attempts = 0;
            out.not_before = None;
            all.push((p, out));
        }
        for (p, out) in all {
            self.queue.push(p, out);
        }
    }

    /// Handles a frame heard while waiting for the answer to `awaited`; true when it
    /// is that answer.
    fn heard(&mut self, bytes: &[u8], awaited: Stamp) -> bool {
        let Ok(heard) = frame::decode(bytes, &self.key) else {
            return false;
        };
        if heard.node() != self.node {
            return false;
        }
        match heard {
            Frame::Ack(ack) => {
                let done = self.acknowledged((ack.epoch, ack.sequence));
                if done && ack.resync {
                    self.reannounce();
                }
                done && (ack.epoch, ack.sequence) == awaited
            }
            Frame::SyncReply(reply) if reply.answers == awaited => {
                self.start_epoch(reply.next_epoch);
                true
            }
            _ => false,
        }
    }

    /// Sends a sync request (the epoch is unknown), backing off between attempts.
    async fn send_sync_request<R: Radio>(
        &mut self,
        radio: &mut R,
        now: Instant,
    ) -> Result<Option<(Stamp, Instant)>, Duration> {
        if let Some(t) = self.sync_not_before
            && t > now
        {
            return Err(t - now);
        }
        let airtime = time_on_air(&self.modulation, frame::SYNC_REQUEST_LEN);
        self.duty.try_spend(airtime, now)?;
        self.duty_dirty = true;
        let nonce = random_nonce();
        let request = Frame::SyncRequest(SyncRequest {
            node: self.node,
            nonce,
        });
        let bytes = match request.encode(&self.key) {
            Ok(b) => b,
            Err(e) => {
                self.last_error = Some(format!("sync request: {e}"));
                return Err(Duration::from_secs(10));
            }
        };
        self.sync_attempts = self.sync_attempts.saturating_add(1);
        self.counters.airtime += airtime;
        match radio.transmit(&bytes).await {
            Ok(()) => {
                *self.counters.transmissions.entry("sync").or_default() += 1;
                self.last_sent = Some(Instant::now());
                tracing::info!(
                    attempt = self.sync_attempts,
                    "LoRa sequence unknown (no sequence file): sync request sent."
                );
            }
            Err(e) => {
                self.counters.radio_errors += 1;
                self.last_error = Some(format!("transmit: {e}"));
            }
        }
        let deadline = Instant::now() + self.ack_timeout;
        let backoff = (self.ack_timeout * self.sync_attempts).min(MAX_BACKOFF);
        self.sync_not_before = Some(deadline + backoff.saturating_sub(self.ack_timeout));
        Ok(Some((nonce, deadline)))
    }

    /// Makes sure the next sequence number is reserved on disk, writing the
    /// reservation on a blocking thread (its fsync must not hold up the runtime).
    async fn reserve_sequence(&mut self) -> Result<(), String> {
        let Some(reservation) = self.sequence.reservation()? else {
            return Ok(());
        };
        let written = tokio::task::spawn_blocking({
            let r = reservation.clone();
            move || r.write()
        })
        .await
        .unwrap_or_else(|e| Err(format!("sequence writer: {e}")));
        written?;
        self.sequence.reserved(&reservation);
        Ok(())
    }

    /// When a heartbeat is due.
    fn heartbeat_due(&self) -> Option<Instant> {
        self.last_sent.map(|t| t + self.heartbeat_interval)
    }

    /// Frames waiting (tests, metrics).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Sends the head of the queue if it may go now; returns how long to wait
    /// otherwise (`None`: nothing to send).
    async fn try_send<R: Radio>(
        &mut self,
        radio: &mut R,
    ) -> Result<Option<(Stamp, Instant)>, Duration> {
        let now = Instant::now();
        let Some(head) = self.queue.peek() else {
            return Err(Duration::MAX);
        };
        if self.sequence.needs_sync() {
            return self.send_sync_request(radio, now).await;
        }
        if let Some(t) = head.not_before
            && t > now
        {
            return Err(t - now);
        }
        let unnumbered = head.encoded.is_none();
        let len = head.frame.encoded_len();
        if unnumbered && let Err(e) = self.reserve_sequence().await {
            // Without a persisted sequence the gateway could take our frames for
            // replays: keep the frame and report.
            self.last_error = Some(e);
            return Err(Duration::from_secs(10));
        }
        let airtime = time_on_air(&self.modulation, len);
        self.duty.try_spend(airtime, now)?;
        self.duty_dirty = true;
        let Some(mut out) = self.queue.pop() else {
            return Err(Duration::MAX);
        };
        if out.encoded.is_none() {
            let sequence = match self.sequence.take() {
                Ok(s) => s,
                Err(e) => {
                    self.last_error = Some(e);
                    self.queue.push(priority(&out.frame), out);
                    return Err(Duration::from_secs(10));
                }
            };
            out.frame.epoch = self.sequence.epoch();
            out.frame.sequence = sequence;
            if out.frame.state == AlertState::Heartbeat {
                out.frame.value = self.told.len() as f32;
                out.frame.digest =
                    firing_digest(self.told.iter().map(|(n, (s, _))| (n.as_str(), *s)));
            }
            match Frame::Alert(out.frame.clone()).encode(&self.key) {
                Ok(bytes) => out.encoded = Some(bytes),
                Err(e) => {
                    tracing::error!(error = %e, "LoRa frame cannot be encoded; dropped.");
                    *self.counters.dropped.entry("unencodable").or_default() += 1;
                    return Ok(None);
                }
            }
        }
        let bytes = out.encoded.clone().unwrap_or_default();
        let kind = if out.attempts == 0 { "first" } else { "resend" };
        out.attempts += 1;
        self.counters.airtime += airtime;
        match radio.transmit(&bytes).await {
            Ok(()) => {
                *self.counters.transmissions.entry(kind).or_default() += 1;
                self.last_sent = Some(Instant::now());
                tracing::debug!(
                    alertname = out.frame.alertname.as_str(),
                    state = out.frame.state.as_str(),
                    sequence = out.frame.sequence,
                    attempt = out.attempts,
                    "LoRa frame sent."
                );
                self.last_error = None;
            }
            Err(e) => {
                self.counters.radio_errors += 1;
                self.last_error = Some(format!("transmit: {e}"));
                tracing::warn!(error = %e, "LoRa transmit failed.");
            }
        }
        let stamp = (out.frame.epoch, out.frame.sequence);
        let deadline = Instant::now() + self.ack_timeout;
        // Back in the queue until acknowledged; after its last attempt's deadline it is
        // given up (`give_up_exhausted`).
        let backoff = (self.ack_timeout * out.attempts).min(MAX_BACKOFF);
        out.not_before = Some(deadline + backoff.saturating_sub(self.ack_timeout));
        self.queue.push(priority(&out.frame), out);
        Ok(Some((stamp, deadline)))
    }

    /// An acknowledgement heard: the frame with that epoch and sequence is done.
    fn acknowledged(&mut self, stamp: Stamp) -> bool {
        let before = self.queue.len();
        self.queue
            .retain(|o| !(o.encoded.is_some() && (o.frame.epoch, o.frame.sequence) == stamp));
        let done = self.queue.len() < before;
        if done {
            self.counters.acknowledged += 1;
            self.counters.last_ack_unix = Some(crate::metrics::unix_now());
        }
        done
    }

    /// Sends the next frame if it may go now (tests drive the link step by step).
    #[cfg(test)]
    pub async fn send_next<R: Radio>(
        &mut self,
        radio: &mut R,
    ) -> Result<Option<(Stamp, Instant)>, Duration> {
        self.try_send(radio).await
    }

    /// Hands a received frame to the link as [`run`] does (tests).
    #[cfg(test)]
    pub fn receive(&mut self, bytes: &[u8], awaited: Stamp) -> bool {
        self.heard(bytes, awaited)
    }

    /// Gives up frames whose last attempt went unacknowledged (tests).
    #[cfg(test)]
    pub fn expire_unacknowledged(&mut self) {
        self.give_up_exhausted();
    }

    /// Drops frames that used their last attempt.
    fn give_up_exhausted(&mut self) {
        let max = self.max_attempts;
        let before = self.queue.len();
        self.queue
            .retain(|o| o.attempts < attempts_allowed(&o.frame, max));
        let dropped = before - self.queue.len();
        if dropped > 0 {
            *self.counters.dropped.entry("unacknowledged").or_default() += dropped as u64;
            tracing::warn!(
                frames = dropped,
                "LoRa frames never acknowledged; given up."
            );
        }
    }

    /// The `nodewatch_lora_*` families of a node.
    pub fn metrics(&mut self) -> Vec<prometheus::proto::MetricFamily> {
        let mut sink = MetricSink::new();
        for kind in ["first", "resend", "sync"] {
            sink.counter(
                "nodewatch_lora_transmissions_total",
                "LoRa frames put on the air: first sends, resends, and sync requests.",
                &[("kind", kind)],
                self.counters.transmissions.get(kind).copied().unwrap_or(0) as f64,
            );
        }
        sink.counter(
            "nodewatch_lora_acknowledged_total",
            "LoRa frames the gateway acknowledged.",
            &[],
            self.counters.acknowledged as f64,
        );
        for reason in ["unacknowledged", "queue_full", "unencodable"] {
            sink.counter(
                "nodewatch_lora_dropped_total",
                "LoRa frames given up, by reason.",
                &[("reason", reason)],
                self.counters.dropped.get(reason).copied().unwrap_or(0) as f64,
            );
        }
        sink.counter(
            "nodewatch_lora_resyncs_total",
            "Times the gateway's view of the firing set differed and every alert was announced again.",
            &[],
            self.counters.resyncs as f64,
        );
        sink.counter(
            "nodewatch_lora_epoch_starts_total",
            "Epochs started on the gateway's sync reply (the sequence was lost or refused).",
            &[],
            self.counters.epoch_starts as f64,
        );
        sink.gauge(
            "nodewatch_lora_queue_frames",
            "LoRa frames waiting to be sent or acknowledged.",
            &[],
            self.queue.len() as f64,
        );
        sink.counter(
            "nodewatch_lora_airtime_seconds_total",
            "Time this radio spent transmitting.",
            &[],
            self.counters.airtime.as_secs_f64(),
        );
        let now = Instant::now();
        sink.gauge(
            "nodewatch_lora_duty_cycle_remaining_seconds",
            "Airtime left in the duty-cycle budget of the sliding hour.",
            &[],
            self.duty.remaining(now).as_secs_f64(),
        );
        sink.counter(
            "nodewatch_lora_radio_errors_total",
            "Radio failures (transmit or receive).",
            &[],
            self.counters.radio_errors as f64,
        );
        if let Some(t) = self.counters.last_ack_unix {
            sink.gauge(
                "nodewatch_lora_last_ack_timestamp_seconds",
                "When the gateway last acknowledged a frame (unix seconds).",
                &[],
                t,
            );
        }
        sink.into_families()
    }

    fn publish(&mut self, snapshot: &Snapshot) {
        snapshot.outputs().set_metrics("lora", &self.metrics());
        snapshot.outputs().report_health(
            "lora",
            self.last_error.is_none(),
            self.last_error.clone(),
        );
    }
}

/// Runs the node side until `stop`.
pub async fn run<R: Radio>(
    mut radio: R,
    mut link: NodeLink,
    snapshot: Arc<Snapshot>,
    bus: &AlertBus,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    tracing::info!(id = %link.node, "LoRa node: sending local alerts.");
    let mut alerts = bus.subscribe_alerts();
    link.heartbeat();
    link.update(&alerts.borrow_and_update());
    // The frame awaiting its answer: (epoch and sequence, or a sync nonce; until).
    let mut awaiting: Option<(Stamp, Instant)> = None;
    let (duty_tx, duty_rx) = watch::channel(None);
    let duty_errors = Arc::new(std::sync::Mutex::new(None));
    // Saved on a blocking thread: its fsyncs must not hold up the runtime.
    let writer = tokio::spawn(super::gateway::state_writer(duty_rx, duty_errors.clone()));
    loop {
        if std::mem::replace(&mut link.duty_dirty, false) {
            let saved = link
                .duty
                .saved(Instant::now(), std::time::SystemTime::now());
            match serde_json::to_vec(&saved) {
                Ok(bytes) => {
                    duty_tx.send_replace(Some((link.duty_path.clone(), bytes)));
                }
                Err(e) => link.last_error = Some(format!("duty-cycle record: {e}")),
            }
        }
        if let Some(e) = duty_errors.lock().unwrap_or_else(|e| e.into_inner()).take() {
            link.last_error = Some(e);
        }
        link.publish(&snapshot);
        if *stop.borrow() {
            // Let the last budget record reach the disk.
            drop(duty_tx);
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            return Ok(());
        }
        if let Some((stamp, until)) = awaiting {
            let now = Instant::now();
            if now >= until {
                awaiting = None;
                link.give_up_exhausted();
                continue;
            }
            tokio::select! {
                heard = radio.receive(until - now) => match heard {
                    Ok(Some(rx)) => {
                        if link.heard(&rx.bytes, stamp) {
                            awaiting = None;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        link.counters.radio_errors += 1;
                        link.last_error = Some(format!("receive: {e}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                },
                changed = alerts.changed() => {
                    if changed.is_err() { return Ok(()); }
                    let list = alerts.borrow_and_update().clone();
                    link.update(&list);
                }
                _ = stop.changed() => {}
            }
            continue;
        }
        let wait = match link.try_send(&mut radio).await {
            Ok(Some(pending)) => {
                awaiting = Some(pending);
                continue;
            }
            Ok(None) => continue,
            Err(wait) => wait,
        };
        let heartbeat_at = link.heartbeat_due();
        let sleep_for = match heartbeat_at {
            Some(t) => wait.min(t.saturating_duration_since(Instant::now())),
            None => wait,
        }
        .min(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {
                if heartbeat_at.is_some_and(|t| Instant::now() >= t) {
                    link.heartbeat();
                }
            }
            changed = alerts.changed() => {
                if changed.is_err() { return Ok(()); }
                let list = alerts.borrow_and_update().clone();
                link.update(&list);
            }
            _ = stop.changed() => {}
        }
    }
}
