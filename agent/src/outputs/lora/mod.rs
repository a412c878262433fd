//! The LoRa alert link (design §4): a node sends its local alerts over the air, a
//! gateway agent receives them and forwards them to Alertmanager.
//!
//! - [`node`]: the sender — one frame per change of an alert (by name), critical
//!   first, resent until the gateway acknowledges it, within the duty-cycle budget;
//!   a heartbeat every `heartbeat_interval_secs` so the gateway knows the node lives.
//! - [`gateway`]: the receiver (`lora.gateway = true`) — verifies, de-duplicates,
//!   acknowledges (on its own budget), and keeps Alertmanager up to date.
//! - [`alertmanager`]: Alertmanager's v2 API client.
//! - [`hardware`]: the `[lora.radio]` section and the radios at the edge (rppal SPI,
//!   GPIO character device lines, the UART, the simulated UDP air).
//!
//! One task owns the radio (LoRa radios are half duplex). Frames are authenticated with
//! the network key (or the node's own key); the codec, replay window, sequence,
//! airtime and duty cycle live in the `nodewatch-lora` crate.

pub mod alertmanager;
pub mod gateway;
pub mod hardware;
pub mod node;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodewatch_lora::duty::Region;
use nodewatch_lora::frame::{Key, NodeId};
use serde::Deserialize;
use tokio::sync::watch;

use crate::snapshot::Snapshot;

/// The `[lora]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Use the radio at all. Default false.
    pub enabled: bool,
    /// Receive other nodes' alerts and forward them to Alertmanager, instead of
    /// sending this node's own. Default false.
    pub gateway: bool,
    /// The network key, as hex (at least 32 digits). Prefer `network_key_file`.
    pub network_key: Option<String>,
    /// A file holding the network key as hex; must not be readable by group or others.
    pub network_key_file: Option<PathBuf>,
    /// The radio region, for its duty-cycle rule: EU868 (1 %), EU433 (10 %), …
    pub region: Region,
    /// Overrides the region's duty cycle, in percent of each sliding hour.
    pub duty_cycle_percent: Option<f64>,
    /// Seconds between heartbeats (a node). Default 1800.
    pub heartbeat_interval_secs: f64,
    /// Seconds to wait for an acknowledgement before resending (a node). Default:
    /// the acknowledgement's airtime plus 2 s.
    pub ack_timeout_secs: Option<f64>,
    /// Transmissions of one frame before it is given up (a node). Default 8.
    pub max_attempts: u32,
    /// Alertmanager base URLs the gateway posts to (every one, as Prometheus does).
    /// Default `["http://127.0.0.1:9093"]`.
    pub alertmanager_urls: Vec<String>,
    /// A node not heard for this many seconds is silent (a gateway): the gateway
    /// raises `LoraNodeSilent` and keeps its last known alerts firing, marked stale.
    /// Default 5400 (three heartbeats).
    pub node_timeout_secs: f64,
    /// Seconds between the gateway's re-posts of active alerts to Alertmanager
    /// (which ends alerts not re-posted). Default 60.
    pub repost_interval_secs: f64,
    /// The nodes a gateway knows by name (and optionally by their own key).
    pub nodes: Vec<KnownNode>,
    /// The radio.
    pub radio: hardware::RadioConfig,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            gateway: false,
            network_key: None,
            network_key_file: None,
            region: Region::Eu868,
            duty_cycle_percent: None,
            heartbeat_interval_secs: 1800.0,
            ack_timeout_secs: None,
            max_attempts: 8,
            alertmanager_urls: vec!["http://127.0.0.1:9093".into()],
            node_timeout_secs: 5400.0,
            repost_interval_secs: 60.0,
            nodes: Vec::new(),
            radio: hardware::RadioConfig::default(),
        }
    }
}

/// One `[[lora.nodes]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KnownNode {
    /// The node's `node_name` (its id is the first 4 bytes of its SHA-256).
    pub name: String,
    /// The node's own key, as hex, when it does not use the network key.
    #[serde(default)]
    pub key: Option<String>,
    /// A file holding the node's own key as hex.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// Reads a key given inline or in a file (`what` names the setting in errors). A file
/// readable by group or others is refused, as ssh refuses such private keys.
fn load_key(what: &str, inline: Option<&str>, file: Option<&Path>) -> Result<Option<Key>, String> {
    let text = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{what}: give the key inline or in a file, not both"
            ));
        }
        (Some(hex), None) => hex.to_string(),
        (None, Some(path)) => {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{what}: {} has mode {mode:04o}; the key must be readable by its owner only (chmod 600)",
                    path.display()
                ));
            }
            std::fs::read_to_string(path)
                .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?
        }
        (None, None) => return Ok(None),
    };
    Key::from_hex(text.trim())
        .map(Some)
        .map_err(|e| format!("{what}: {e}"))
}

/// The keys in effect: the network key, and the per-node keys and names a gateway knows.
#[derive(Debug)]
pub struct Keys {
    /// The network key.
    pub network: Key,
    /// Known nodes: id → (name, own key if any).
    pub nodes: Vec<(NodeId, String, Option<Key>)>,
}

impl Keys {
    /// The key a frame from `node` must verify with.
    pub fn for_node(&self, node: NodeId) -> &Key {
        self.nodes
            .iter()
            .find(|(id, _, _)| *id == node)
            .and_then(|(_, _, k)| k.as_ref())
            .unwrap_or(&self.network)
    }

    /// The configured name of `node`, else its id in hex.
    pub fn name_of(&self, node: NodeId) -> String {
        self.nodes
            .iter()
            .find(|(id, _, _)| *id == node)
            .map(|(_, name, _)| name.clone())
            .unwrap_or_else(|| node.to_string())
    }
}

impl LoraConfig {
    /// Loads and checks the keys.
    pub fn keys(&self) -> Result<Keys, String> {
        let network = load_key(
            "lora.network_key",
            self.network_key.as_deref(),
            self.network_key_file.as_deref(),
        )?
        .ok_or_else(|| "lora: set network_key_file (or network_key)".to_string())?;
        let mut nodes = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.trim().is_empty() {
                return Err(format!("lora.nodes[{i}].name must not be empty"));
            }
            let key = load_key(
                &format!("lora.nodes[{i}] ({})", n.name),
                n.key.as_deref(),
                n.key_file.as_deref(),
            )?;
            nodes.push((NodeId::from_name(&n.name), n.name.clone(), key));
        }
        Ok(Keys { network, nodes })
    }

    /// The duty-cycle fraction in effect.
    pub fn duty_fraction(&self) -> f64 {
        self.duty_cycle_percent
            .map(|p| p / 100.0)
            .unwrap_or_else(|| self.region.default_duty_fraction())
    }

    /// How long a node waits for an acknowledgement.
    pub fn ack_timeout(&self) -> Duration {
        self.ack_timeout_secs
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| {
                nodewatch_lora::airtime::time_on_air(
                    &self.radio.modulation,
                    nodewatch_lora::frame::ACK_LEN,
                ) + Duration::from_secs(2)
            })
    }

    /// Checks the section when the link is on (`check-config` and start-up).
    pub fn validate(&self, rule_names: &[String]) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.keys()?;
        self.radio.validate()?;
        if let Some(p) = self.duty_cycle_percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(format!(
                "lora.duty_cycle_percent must be in (0, 100], found {p}"
            ));
        }
        for (name, v) in [
            ("lora.heartbeat_interval_secs", self.heartbeat_interval_secs),
            ("lora.node_timeout_secs", self.node_timeout_secs),
            ("lora.repost_interval_secs", self.repost_interval_secs),
            (
                "lora.ack_timeout_secs",
                self.ack_timeout_secs.unwrap_or(1.0),
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "{name} must be a positive number of seconds, found {v}"
                ));
            }
        }
        if self.max_attempts == 0 {
            return Err("lora.max_attempts must be at least 1".into());
        }
        if self.gateway {
            if self.alertmanager_urls.is_empty() {
                return Err("lora.alertmanager_urls: a gateway needs at least one".into());
            }
            for url in &self.alertmanager_urls {
                crate::http_client::parse_http_url(url)
                    .map_err(|e| format!("lora.alertmanager_urls: {e}"))?;
            }
        } else {
            // Alert names travel in the frame: printable ASCII, 25 bytes at most.
            for name in rule_names {
                if name.len() > nodewatch_lora::frame::MAX_NAME_LEN
                    || !name.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(format!(
                        "alert rule {name:?} cannot be sent over LoRa: names must be printable ASCII of at most {} bytes",
                        nodewatch_lora::frame::MAX_NAME_LEN
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Starts the link (node or gateway) when `lora.enabled`; a radio or key that fails
/// is reported in the output's health and the agent runs on without it.
pub fn spawn(
    config: &crate::config::Config,
    snapshot: Arc<Snapshot>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let lora = config.lora.clone();
    if !lora.enabled {
        return None;
    }
    let node_name = config.node_name();
    let state_dir = config.state_dir.clone();
    Some(tokio::spawn(async move {
        let outputs = snapshot.outputs();
        let keys = match lora.keys() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "LoRa is off.");
                outputs.report_health("lora", false, Some(e));
                return;
            }
        };
        let radio = match hardware::open(&lora.radio).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "LoRa radio unavailable: LoRa is off.");
                outputs.report_health("lora", false, Some(e));
                return;
            }
        };
        tracing::info!(
            radio = nodewatch_lora::radio::Radio::describe(&radio).as_str(),
            gateway = lora.gateway,
            "LoRa link up."
        );
        let result = if lora.gateway {
            gateway::run(radio, &lora, keys, &state_dir, snapshot.clone(), stop).await
        } else {
            node::run(
                radio,
                &lora,
                keys,
                &node_name,
                &state_dir,
                snapshot.clone(),
                stop,
            )
            .await
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "LoRa link stopped.");
            snapshot.outputs().report_health("lora", false, Some(e));
        }
    }))
}

#[cfg(test)]
mod tests;
