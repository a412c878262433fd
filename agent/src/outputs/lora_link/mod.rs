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
//! the node's own key, which the gateway derives from the network master key; the
//! codec, replay window, sequence, airtime and duty cycle live in the `nodewatch-lora`
//! crate.

pub mod alertmanager;
pub mod gateway;
pub mod hardware;
pub mod node;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodewatch_lora::duty::Region;
use nodewatch_lora::frame::{Key, MasterKey, NodeId};
use serde::Deserialize;
use tokio::sync::watch;

use crate::alerts::bus::AlertBus;
use crate::snapshot::Snapshot;

/// Lowest and highest value (seconds) of each `[lora]` interval.
struct IntervalBounds {
    heartbeat: (f64, f64),
    node_timeout: (f64, f64),
    repost: (f64, f64),
    ack_timeout: (f64, f64),
}

/// A heartbeat at most once a second (airtime) and at least daily; a node silent for
/// a week is long gone; Alertmanager needs a re-post within its hour; an
/// acknowledgement takes at most a few seconds even at SF12.
const INTERVAL_BOUNDS: IntervalBounds = IntervalBounds {
    heartbeat: (1.0, 86_400.0),
    node_timeout: (1.0, 604_800.0),
    repost: (1.0, 3_600.0),
    ack_timeout: (0.1, 600.0),
};

/// More transmissions of one frame only spend the duty-cycle budget.
const MAX_ATTEMPTS: u32 = 100;

/// The `[lora]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Use the radio at all. Default false.
    pub enabled: bool,
    /// Receive other nodes' alerts and forward them to Alertmanager, instead of
    /// sending this node's own. Default false.
    pub gateway: bool,
    /// Refused: a key written in the config itself. Parsed only to name it in the
    /// error (a config file is often world-readable, copied and pasted).
    pub network_key: Option<InlineKey>,
    /// A file holding a key as hex (at least 32 digits), owned by the user the agent
    /// runs as, mode 0600. On a gateway: the network master key. On a node: the
    /// node's own key, derived from the master by `nodewatch-agent lora derive-key`
    /// (a node never holds the master).
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
    /// Refused, as `lora.network_key` is: keys only from files.
    #[serde(default)]
    pub key: Option<InlineKey>,
    /// A file holding the node's key as hex, when it is not the one derived from the
    /// master key (owned by the agent's user, mode 0600).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// A key written inline in the config: kept only to be refused, never printed.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct InlineKey(String);

impl std::fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InlineKey(redacted)")
    }
}

/// The user the agent runs as.
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// A key file must be readable by its owner only and owned by `user`.
fn check_key_file(what: &str, path: &Path, mode: u32, owner: u32, user: u32) -> Result<(), String> {
    let mode = mode & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what}: {} has mode {mode:04o}; the key must be readable by its owner only (chmod 600)",
            path.display()
        ));
    }
    if owner != user {
        return Err(format!(
            "{what}: {} is owned by uid {owner}, not by the agent's user (uid {user}); chown it",
            path.display()
        ));
    }
    Ok(())
}

/// Reads a key's hex from its file (`what` names the setting in errors). An inline
/// key is refused; so is a file readable by group or others (as ssh refuses such
/// private keys) or owned by another user. Both are checked on the opened file, so
/// the file read is the file checked.
fn read_key_file(
    what: &str,
    inline_setting: &str,
    inline: bool,
    file: Option<&Path>,
) -> Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    if inline {
        return Err(format!(
            "{inline_setting}: keys written in the config are refused; put the key in a file owned by the agent's user with mode 0600 and set {what}"
        ));
    }
    let Some(path) = file else { return Ok(None) };
    let mut opened = std::fs::File::open(path)
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    let meta = opened
        .metadata()
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    check_key_file(what, path, meta.mode(), meta.uid(), effective_uid())?;
    let mut text = String::new();
    opened
        .read_to_string(&mut text)
        .map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    Ok(Some(text.trim().to_string()))
}

fn load_key(
    what: &str,
    inline_setting: &str,
    inline: bool,
    file: Option<&Path>,
) -> Result<Option<Key>, String> {
    read_key_file(what, inline_setting, inline, file)?
        .map(|hex| Key::from_hex(&hex).map_err(|e| format!("{what}: {e}")))
        .transpose()
}

/// The keys in effect. A gateway holds the network master key and derives each
/// node's key from it (or takes a node's own `key_file`); a node holds only its own
/// key, derived from the master by `nodewatch-agent lora derive-key`.
#[derive(Debug)]
pub struct Keys {
    master: Option<MasterKey>,
    own: Option<Key>,
    /// Known nodes: id → (name, own key file's key if any).
    pub nodes: Vec<(NodeId, String, Option<Key>)>,
}

impl Keys {
    /// A gateway's keys.
    pub fn gateway(master: MasterKey, nodes: Vec<(NodeId, String, Option<Key>)>) -> Self {
        Self {
            master: Some(master),
            own: None,
            nodes,
        }
    }

    /// A node's key.
    pub fn node(own: Key) -> Self {
        Self {
            master: None,
            own: Some(own),
            nodes: Vec::new(),
        }
    }

    /// The key of `node`: its configured key file, else derived from the master
    /// (a node: its own key).
    pub fn key_of(&self, node: NodeId) -> Option<Key> {
        if let Some(k) = self
            .nodes
            .iter()
            .find(|(id, _, _)| *id == node)
            .and_then(|(_, _, k)| k.clone())
        {
            return Some(k);
        }
        match &self.master {
            Some(m) => Some(m.node_key(node)),
            None => self.own.clone(),
        }
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

/// `nodewatch-agent lora derive-key`: writes the key of the node called `node_name`,
/// derived from the master key in `master`, to `out` (mode 0600, replaced
/// atomically). Returns what to tell the operator.
pub fn derive_key_file(master: &Path, node_name: &str, out: &Path) -> Result<String, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if node_name.trim().is_empty() {
        return Err("--node: the node's name (its node_name) must not be empty".into());
    }
    let hex = read_key_file("--master", "--master", false, Some(master))?
        .ok_or_else(|| "--master: no file".to_string())?;
    let master_key = MasterKey::from_hex(&hex).map_err(|e| format!("--master: {e}"))?;
    let node = NodeId::from_name(node_name);
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        writeln!(f, "{}", master_key.node_key_hex(node))?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("--out: cannot write {}: {e}", out.display())
    })?;
    Ok(format!(
        "{}: the LoRa key of node {node_name:?} (id {node}), mode 0600; set it as lora.network_key_file on that node only\n",
        out.display()
    ))
}

impl LoraConfig {
    /// Loads and checks the keys: on a gateway `network_key_file` is the network
    /// master key, on a node its own key (`lora derive-key`).
    pub fn keys(&self) -> Result<Keys, String> {
        let hex = read_key_file(
            "lora.network_key_file",
            "lora.network_key",
            self.network_key.is_some(),
            self.network_key_file.as_deref(),
        )?
        .ok_or_else(|| "lora.network_key_file: not set (the link needs a key)".to_string())?;
        if !self.gateway {
            let own = Key::from_hex(&hex).map_err(|e| format!("lora.network_key_file: {e}"))?;
            return Ok(Keys::node(own));
        }
        let master =
            MasterKey::from_hex(&hex).map_err(|e| format!("lora.network_key_file: {e}"))?;
        let mut nodes: Vec<(NodeId, String, Option<Key>)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.trim().is_empty() {
                return Err(format!("lora.nodes[{i}].name must not be empty"));
            }
            let id = NodeId::from_name(&n.name);
            if let Some((_, other, _)) = nodes.iter().find(|(o, _, _)| *o == id) {
                return Err(format!(
                    "lora.nodes[{i}].name: {:?} has the same node id ({id}) as {other:?}; rename one",
                    n.name
                ));
            }
            let key = load_key(
                &format!("lora.nodes[{i}].key_file ({})", n.name),
                &format!("lora.nodes[{i}].key ({})", n.name),
                n.key.is_some(),
                n.key_file.as_deref(),
            )?;
            nodes.push((id, n.name.clone(), key));
        }
        Ok(Keys::gateway(master, nodes))
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

    /// Checks every interval against its bounds (`NaN`, negative and huge values
    /// included), so that no duration conversion can panic later.
    pub fn validate_intervals(&self) -> Result<(), String> {
        let mut intervals = vec![
            (
                "lora.heartbeat_interval_secs",
                self.heartbeat_interval_secs,
                INTERVAL_BOUNDS.heartbeat,
            ),
            (
                "lora.node_timeout_secs",
                self.node_timeout_secs,
                INTERVAL_BOUNDS.node_timeout,
            ),
            (
                "lora.repost_interval_secs",
                self.repost_interval_secs,
                INTERVAL_BOUNDS.repost,
            ),
        ];
        if let Some(v) = self.ack_timeout_secs {
            intervals.push(("lora.ack_timeout_secs", v, INTERVAL_BOUNDS.ack_timeout));
        }
        for (name, v, (low, high)) in intervals {
            // Written so that NaN fails too.
            if !(v >= low && v <= high) {
                return Err(format!(
                    "{name} must be between {low} and {high} seconds, found {v}"
                ));
            }
        }
        if let Some(p) = self.duty_cycle_percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(format!(
                "lora.duty_cycle_percent must be in (0, 100], found {p}"
            ));
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "lora.max_attempts must be between 1 and {MAX_ATTEMPTS}, found {}",
                self.max_attempts
            ));
        }
        Ok(())
    }

    /// Checks the section when the link is on (`check-config` and start-up).
    pub fn validate(&self, rule_names: &[String]) -> Result<(), String> {
        self.validate_intervals()?;
        if !self.enabled {
            return Ok(());
        }
        self.keys()?;
        self.radio.validate()?;
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
    lora: &LoraConfig,
    node_name: String,
    state_dir: std::path::PathBuf,
    snapshot: Arc<Snapshot>,
    bus: Arc<AlertBus>,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let lora = lora.clone();
    if !lora.enabled {
        return None;
    }
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
            match node::NodeLink::new(&lora, keys, &node_name, &state_dir) {
                Ok(link) => node::run(radio, link, snapshot.clone(), &bus, stop).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "LoRa link stopped.");
            snapshot.outputs().report_health("lora", false, Some(e));
        }
    }))
}

#[cfg(test)]
mod tests;
