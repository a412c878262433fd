//! The gateway's files in `state_dir`: every node's firing set and the duty-cycle
//! spend (`lora-gateway.json`, read at start and written before a frame is answered)
//! and the replay window (`lora-replay.json`), both written atomically on a blocking
//! thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nodewatch_lora::duty::{DutyCycle, SavedSpend};
use nodewatch_lora::frame::NodeId;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Gateway;
use super::nodes::{ActiveAlert, NodeStats};

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

/// What the state file gives a starting gateway.
#[derive(Debug)]
pub(super) struct Restored {
    pub(super) duty: DutyCycle,
    pub(super) nodes: BTreeMap<NodeId, NodeStats>,
    pub(super) active: BTreeMap<(NodeId, String), ActiveAlert>,
}

impl Restored {
    /// Reads the state file at `path` (none yet: nothing to restore); the duty cycle
    /// allows `duty_fraction` of each sliding hour.
    pub(super) fn load(path: &Path, duty_fraction: f64) -> Result<Self, String> {
        let saved: SavedState = match nodewatch_lora::persist::read_optional(path)? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => SavedState::default(),
        };
        // A restored node's timeout starts now: the gateway could not listen while down.
        let restarted = Instant::now();
        let mut duty = DutyCycle::new(duty_fraction, Duration::from_secs(3600));
        duty.restore(&saved.duty, restarted, SystemTime::now());
        let mut nodes = BTreeMap::new();
        let mut active = BTreeMap::new();
        for n in saved.nodes {
            for (name, alert) in n.alerts {
                active.insert((n.node, name), alert);
            }
            nodes.insert(n.node, NodeStats::new(n.name, n.last_seen, restarted));
        }
        if !active.is_empty() {
            tracing::info!(
                alerts = active.len(),
                "LoRa gateway: restored firing alerts from the state file."
            );
        }
        Ok(Self {
            duty,
            nodes,
            active,
        })
    }
}

impl Gateway {
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
}

/// Writes one state file on a blocking thread, so its fsyncs don't hold up the runtime.
pub(super) async fn write_state((path, bytes): (PathBuf, Vec<u8>)) -> Result<(), String> {
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
pub(in crate::outputs::lora_link) async fn state_writer(
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
