//! The gateway side (`lora.gateway = true`): receive, verify, acknowledge, forward.
//!
//! Each frame is checked against its node's key (or the network key), then against
//! the node's replay window (persisted in `state_dir/lora-replay.json` by a writer
//! thread, so a restart does not reopen it and its fsync never holds up the radio).
//! A new frame updates the node's figures and its alerts and is acknowledged; a
//! duplicate (the node resending because our acknowledgement was lost) is
//! acknowledged again but changes nothing; a replay or a forgery is counted and
//! dropped. Acknowledgements spend the gateway's own duty-cycle budget.
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
//!
//! By concern: this file holds the gateway's state and the run loop; `receive` the
//! frame path (verification, replay window, acknowledgements, sync replies); `nodes`
//! each node's figures and firing set; `posts` what goes to Alertmanager and the
//! task that posts it; `state` the files in `state_dir`; `metrics` the families and
//! the health.

mod metrics;
mod nodes;
mod posts;
mod receive;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodewatch_lora::airtime::Modulation;
use nodewatch_lora::duty::DutyCycle;
use nodewatch_lora::frame::NodeId;
use nodewatch_lora::radio::{Radio, RadioError, Received};
use nodewatch_lora::replay::ReplayWindow;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::alertmanager::{AlertmanagerClient, PostableAlert};
use super::{Keys, LoraConfig};
use crate::snapshot::Snapshot;
use nodes::{ActiveAlert, NodeStats};
pub use posts::{NODE_SILENT_ALERT, PostCounters};
pub use receive::Handled;
pub(super) use state::state_writer;

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
    reacks: BTreeMap<NodeId, VecDeque<(u32, u8)>>,
    acks: BTreeMap<&'static str, u64>,
    /// When sync replies were sent per node, the last hour's.
    sync_replies: BTreeMap<NodeId, VecDeque<Instant>>,
    airtime: Duration,
    radio_errors: u64,
    last_error: Option<String>,
}

impl Gateway {
    /// A gateway whose replay state lives in `state_dir`.
    pub fn new(lora: &LoraConfig, keys: Keys, state_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("state_dir {}: {e}", state_dir.display()))?;
        let replay_path = state_dir.join("lora-replay.json");
        let replay = ReplayWindow::load(&replay_path)?;
        let state_path = state_dir.join("lora-gateway.json");
        let restored = state::Restored::load(&state_path, lora.duty_fraction())?;
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
            duty: restored.duty,
            node_timeout: Duration::try_from_secs_f64(lora.node_timeout_secs)
                .map_err(|e| format!("lora.node_timeout_secs: {e}"))?,
            nodes: restored.nodes,
            active: restored.active,
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

    /// Forwarded alerts still active (tests).
    pub fn active_alerts(&self) -> usize {
        self.active.len()
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
    let gateway = Gateway::new(lora, keys, state_dir)?;
    let mut running = Running::start(gateway, client);
    let mut repost = tokio::time::interval(Duration::from_secs_f64(lora.repost_interval_secs));
    repost.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(urls = ?lora.alertmanager_urls, "LoRa gateway: forwarding to Alertmanager.");
    loop {
        running.publish(&snapshot);
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            heard = radio.receive(Duration::from_secs(1)) => {
                running.received(&mut radio, heard).await;
            }
            _ = repost.tick() => running.repost(),
            _ = stop.changed() => {}
        }
    }
    running.finish().await;
    Ok(())
}

/// The gateway at work: its state and the tasks that post to Alertmanager and write
/// the replay window.
#[derive(Debug)]
struct Running {
    gateway: Gateway,
    /// Batches for the poster task.
    batches: mpsc::Sender<Vec<PostableAlert>>,
    poster: tokio::task::JoinHandle<()>,
    counters: Arc<PostCounters>,
    /// Why the state file was last not written, if it was not.
    state_error: Option<String>,
    /// The replay window for its writer task.
    replay_tx: watch::Sender<Option<(PathBuf, Vec<u8>)>>,
    replay_writer: tokio::task::JoinHandle<()>,
    replay_errors: Arc<std::sync::Mutex<Option<String>>>,
}

impl Running {
    /// Starts the poster and the replay writer, and posts the alerts restored from
    /// the state file again at once.
    fn start(gateway: Gateway, client: AlertmanagerClient) -> Self {
        let counters = Arc::new(PostCounters::default());
        let (batches, rx) = mpsc::channel(256);
        let poster = tokio::spawn(posts::post_loop(client, rx, counters.clone()));
        let replay_errors = Arc::new(std::sync::Mutex::new(None));
        let (replay_tx, replay_rx) = watch::channel(None);
        let replay_writer = tokio::spawn(state_writer(replay_rx, replay_errors.clone()));
        let restored = gateway.startup_posts(SystemTime::now(), Instant::now());
        if !restored.is_empty() {
            let _ = batches.try_send(restored);
        }
        Self {
            gateway,
            batches,
            poster,
            counters,
            state_error: None,
            replay_tx,
            replay_writer,
            replay_errors,
        }
    }

    /// Hands a changed replay window to its writer, and the families and health to
    /// the output registry.
    fn publish(&mut self, snapshot: &Snapshot) {
        if let Some(window) = self.gateway.take_replay_if_changed() {
            self.replay_tx.send_replace(Some(window));
        }
        let replay_error = self
            .replay_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let error =
            self.gateway
                .health_error(self.state_error.clone(), replay_error, &self.counters);
        snapshot
            .outputs()
            .set_metrics("lora", &self.gateway.metrics(&self.counters));
        snapshot
            .outputs()
            .report_health("lora", error.is_none(), error);
    }

    /// What the radio heard (or why it failed): a frame is handled, made durable,
    /// posted and acknowledged.
    async fn received<R: Radio>(
        &mut self,
        radio: &mut R,
        heard: Result<Option<Received>, RadioError>,
    ) {
        match heard {
            Ok(Some(rx)) => {
                let handled = self.gateway.handle(&rx, SystemTime::now(), Instant::now());
                // Durable before acknowledged or posted: once the node holds an ack,
                // a power cut here must not lose the alert.
                if let Some(state) = self.gateway.take_state_if_changed() {
                    self.state_error = state::write_state(state).await.err();
                }
                if !handled.posts.is_empty() {
                    let _ = self.batches.try_send(handled.posts);
                }
                if let Some(ack) = handled.ack {
                    self.transmit_ack(radio, &ack).await;
                }
            }
            Ok(None) => {}
            Err(e) => {
                self.gateway.radio_errors += 1;
                self.gateway.last_error = Some(format!("receive: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Transmits an answer to a node, counting it.
    async fn transmit_ack<R: Radio>(&mut self, radio: &mut R, ack: &[u8]) {
        match radio.transmit(ack).await {
            Ok(()) => *self.gateway.acks.entry("sent").or_default() += 1,
            Err(e) => {
                self.gateway.radio_errors += 1;
                tracing::warn!(error = %e, "LoRa acknowledgement not sent.");
            }
        }
    }

    /// The periodic re-post to Alertmanager.
    fn repost(&mut self) {
        let posts = self.gateway.repost(SystemTime::now(), Instant::now());
        if !posts.is_empty() {
            let _ = self.batches.try_send(posts);
        }
    }

    /// Writes what changed last, and gives the writer and the poster two seconds
    /// each to finish.
    async fn finish(mut self) {
        if let Some(state) = self.gateway.take_state_if_changed() {
            let _ = state::write_state(state).await;
        }
        if let Some(window) = self.gateway.take_replay_if_changed() {
            self.replay_tx.send_replace(Some(window));
        }
        drop(self.replay_tx);
        drop(self.batches);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.replay_writer).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.poster).await;
    }
}
