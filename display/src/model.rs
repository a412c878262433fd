//! The view model: everything the panel can show, as plain values.
//!
//! A figure that is not known is `None` and is drawn as `--`, never as 0. A figure
//! whose source is failing keeps its last value and its [`Source`] is listed in
//! [`ViewModel::stale`], so the pages mark it. The same struct, as JSON, is the state
//! file of `nodewatch-agent render --state FILE.json`; every field may be left out.

use serde::{Deserialize, Serialize};

/// What the panel shows about one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewModel {
    /// The node's name (its hostname unless configured).
    pub node_name: String,
    /// The INTMAX builder, when one is monitored.
    pub builder: Option<Builder>,
    /// CPU busy share over the last interval, 0–100.
    pub cpu_percent: Option<f32>,
    /// SoC temperature, °C.
    pub soc_temp_celsius: Option<f32>,
    /// Memory in use (total − available).
    pub memory: Option<Usage>,
    /// The root filesystem (size − available).
    pub disk: Option<Usage>,
    /// Under-voltage now (Pi firmware).
    pub under_voltage: Option<bool>,
    /// Throttled or frequency-capped now (Pi firmware).
    pub throttled: Option<bool>,
    /// The address other machines reach this node on.
    pub ip_address: Option<String>,
    /// Wallet and reward figures from the exporters.
    pub wallet: Wallet,
    /// Firing alerts, most severe first.
    pub alerts: Vec<Alert>,
    /// The LoRa link, when a radio is configured.
    pub lora: Option<Lora>,
    /// Sources whose figures are last known values, not current ones.
    pub stale: Vec<Source>,
    /// Age of the oldest stale figure, seconds.
    pub stale_age_secs: Option<u64>,
}

/// Used and total bytes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes in all.
    pub total_bytes: u64,
}

impl Usage {
    /// Share in use, 0–100 (0 when the total is 0).
    pub fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 * 100.0 / self.total_bytes as f64
        }
    }
}

/// The builder's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuilderState {
    /// Running and its health check answers.
    Ready,
    /// Its container runs but it is not ready yet.
    Starting,
    /// Not running.
    Down,
    /// No data.
    Unknown,
}

/// The INTMAX builder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Builder {
    /// Its state.
    pub state: BuilderState,
    /// Seconds since its container started.
    pub uptime_secs: Option<u64>,
    /// Its version, from the health endpoint.
    pub version: Option<String>,
    /// Bytes in its data directory.
    pub data_dir_bytes: Option<u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            state: BuilderState::Unknown,
            uptime_secs: None,
            version: None,
            data_dir_bytes: None,
        }
    }
}

/// Wallet and reward figures (display only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Wallet {
    /// ETH for gas, summed over the node's addresses.
    pub eth: Option<f64>,
    /// sITX held.
    pub sitx: Option<f64>,
    /// Claimable ETH fee rewards.
    pub reward_eth: Option<f64>,
    /// Claimable sITX rewards.
    pub reward_sitx: Option<f64>,
}

/// How bad an alert is (`info`, `warning`, `critical` in the JSON state); a critical
/// alert not yet acknowledged takes over the panel.
pub use nodewatch_severity::Severity;

/// A firing alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// Its name (`BuilderDown`).
    pub name: String,
    /// Its severity.
    pub severity: Severity,
    /// Acknowledged by the operator (still firing, no longer takes over).
    #[serde(default)]
    pub acknowledged: bool,
}

/// The LoRa link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// The gateway acknowledged recently.
    Up,
    /// No acknowledgement for too long.
    Down,
    /// Radio simulated or off.
    Off,
}

/// The LoRa link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lora {
    /// Its state.
    pub link: LinkState,
    /// Seconds since the gateway's last acknowledgement.
    #[serde(default)]
    pub last_ack_secs: Option<u64>,
    /// Signal strength of the last acknowledgement, dBm.
    #[serde(default)]
    pub rssi_dbm: Option<i16>,
}

/// Where a figure comes from, for stale marking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// CPU figures.
    Cpu,
    /// SoC temperature.
    Temperature,
    /// Memory.
    Memory,
    /// The root filesystem.
    Disk,
    /// Pi power and throttling.
    Power,
    /// Network address.
    Network,
    /// The builder.
    Builder,
    /// Wallet and rewards.
    Wallet,
}

/// The node's overall state, drawn large on the overview page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// All well.
    Ok,
    /// Something needs attention soon (or the data is stale).
    Warn,
    /// Something needs attention now.
    Alert,
}

impl Status {
    /// The word drawn on the overview.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Alert => "ALERT",
        }
    }
}

/// SoC temperature from which the overview warns, °C (the Pi 4 soft limit is 80).
pub const HOT_CELSIUS: f32 = 75.0;
/// Disk or memory use from which the overview warns, percent.
pub const FULL_PERCENT: f64 = 90.0;

impl ViewModel {
    /// Whether figures from `source` are stale.
    pub fn is_stale(&self, source: Source) -> bool {
        self.stale.contains(&source)
    }

    /// The first critical alert nobody has acknowledged.
    pub fn unacknowledged_critical(&self) -> Option<&Alert> {
        self.alerts
            .iter()
            .find(|a| a.severity == Severity::Critical && !a.acknowledged)
    }

    /// The overall status and the single most important fact, for the overview.
    pub fn status(&self) -> (Status, String) {
        let worst = self.alerts.iter().max_by_key(|a| a.severity);
        if let Some(alert) = worst.filter(|a| a.severity == Severity::Critical) {
            return (Status::Alert, alert.name.clone());
        }
        if let Some(b) = &self.builder
            && b.state == BuilderState::Down
        {
            return (Status::Alert, "builder down".into());
        }
        if self.under_voltage == Some(true) {
            return (Status::Alert, "under-voltage".into());
        }
        if let Some(alert) = worst.filter(|a| a.severity == Severity::Warning) {
            return (Status::Warn, alert.name.clone());
        }
        if let Some(t) = self.soc_temp_celsius.filter(|t| *t >= HOT_CELSIUS) {
            return (Status::Warn, format!("hot {t:.0}C"));
        }
        if let Some(d) = self.disk.filter(|d| d.percent() >= FULL_PERCENT) {
            return (Status::Warn, format!("disk {:.0}% full", d.percent()));
        }
        if let Some(m) = self.memory.filter(|m| m.percent() >= FULL_PERCENT) {
            return (Status::Warn, format!("memory {:.0}%", m.percent()));
        }
        if self.throttled == Some(true) {
            return (Status::Warn, "throttled".into());
        }
        if let Some(b) = &self.builder
            && b.state == BuilderState::Starting
        {
            return (Status::Warn, "builder starting".into());
        }
        if !self.stale.is_empty() {
            return (
                Status::Warn,
                format!("stale {}", age(self.stale_age_secs.unwrap_or(0))),
            );
        }
        let fact = match &self.builder {
            Some(b) if b.state == BuilderState::Ready => match b.uptime_secs {
                Some(up) => format!("builder up {}", age(up)),
                None => "builder ready".into(),
            },
            _ => match (self.cpu_percent, self.soc_temp_celsius) {
                (Some(c), Some(t)) => format!("CPU {c:.0}% {t:.0}C"),
                (Some(c), None) => format!("CPU {c:.0}%"),
                _ => self.ip_address.clone().unwrap_or_default(),
            },
        };
        (Status::Ok, fact)
    }

    /// A sample state for `render` and the golden images: a Pi 4 running a ready
    /// builder, with wallet figures and a LoRa link.
    pub fn sample() -> Self {
        const GIB: u64 = 1 << 30;
        ViewModel {
            node_name: "pi-builder-01".into(),
            builder: Some(Builder {
                state: BuilderState::Ready,
                uptime_secs: Some(3 * 86_400 + 4 * 3600 + 12 * 60),
                version: Some("0.1.27".into()),
                data_dir_bytes: Some(12 * GIB),
            }),
            cpu_percent: Some(12.5),
            soc_temp_celsius: Some(48.2),
            memory: Some(Usage {
                used_bytes: 1_288_490_189,
                total_bytes: 4 * GIB - 200 * (1 << 20),
            }),
            disk: Some(Usage {
                used_bytes: 12 * GIB,
                total_bytes: 29 * GIB,
            }),
            under_voltage: Some(false),
            throttled: Some(false),
            ip_address: Some("192.168.1.42".into()),
            wallet: Wallet {
                eth: Some(0.0123),
                sitx: Some(1520.5),
                reward_eth: Some(0.0042),
                reward_sitx: Some(87.25),
            },
            alerts: Vec::new(),
            lora: Some(Lora {
                link: LinkState::Up,
                last_ack_secs: Some(42),
                rssi_dbm: Some(-97),
            }),
            stale: Vec::new(),
            stale_age_secs: None,
        }
    }
}

/// A short age: `42s`, `5m`, `3h12m`, `3d4h`.
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_priorities() {
        let mut m = ViewModel::sample();
        assert_eq!(m.status(), (Status::Ok, "builder up 3d4h".into()));
        m.stale = vec![Source::Cpu];
        m.stale_age_secs = Some(130);
        assert_eq!(m.status(), (Status::Warn, "stale 2m".into()));
        m.soc_temp_celsius = Some(81.0);
        assert_eq!(m.status(), (Status::Warn, "hot 81C".into()));
        m.under_voltage = Some(true);
        assert_eq!(m.status(), (Status::Alert, "under-voltage".into()));
        m.alerts.push(Alert {
            name: "BuilderDown".into(),
            severity: Severity::Critical,
            acknowledged: true,
        });
        assert_eq!(m.status(), (Status::Alert, "BuilderDown".into()));
        assert!(m.unacknowledged_critical().is_none());
    }

    #[test]
    fn unknown_is_not_zero() {
        let m: ViewModel = serde_json::from_str(r#"{"node_name":"x"}"#).expect("json");
        assert_eq!(m.wallet.eth, None);
        assert_eq!(m.status(), (Status::Ok, String::new()));
    }

    #[test]
    fn ages() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(3 * 3600 + 720), "3h12m");
        assert_eq!(age(2 * 86_400 + 3600), "2d1h");
    }
}
