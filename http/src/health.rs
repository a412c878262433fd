//! Bodies of `/api/health` and `/api/health/detailed` (design §2).

use std::collections::BTreeMap;

use serde::Serialize;

/// Overall state of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Every collector and output works.
    Healthy,
    /// Some collector or output is failing; the rest is served.
    Degraded,
    /// Nothing succeeded recently: answered with 503.
    Unhealthy,
}

/// One collector (or data source) in the detailed report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentHealth {
    /// Whether its last run succeeded.
    pub ok: bool,
    /// Unix time of its last success, if any.
    pub last_success_unix: Option<f64>,
    /// The last error, kept after recovery so an operator can see what happened.
    pub last_error: Option<String>,
    /// How long its last run took.
    pub duration_seconds: Option<f64>,
}

/// One output (display, buzzer, LoRa) in the detailed report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputHealth {
    /// Whether it works now.
    pub ok: bool,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The first-boot import of the operator's configuration (the Pi image copies
/// `nodewatch/agent.toml` from the boot partition only if `check-config` accepts it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigImportHealth {
    /// False while the last import was refused (the shipped configuration runs).
    pub ok: bool,
    /// Why it was refused: `check-config`'s message, with file:line:col.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `/api/health/detailed`.
#[derive(Debug, Clone, Serialize)]
pub struct DetailedHealth {
    /// Overall state.
    pub status: HealthStatus,
    /// Version of the binary.
    pub version: String,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// Per collector (or data source).
    pub collectors: BTreeMap<String, ComponentHealth>,
    /// Per output.
    pub outputs: BTreeMap<String, OutputHealth>,
    /// Firing alerts, as their own JSON objects.
    pub alerts: Vec<serde_json::Value>,
    /// The agent's first-boot configuration import; absent for the exporters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_import: Option<ConfigImportHealth>,
}

/// The body of `/api/health`.
#[derive(Debug, Clone, Serialize)]
pub struct BasicHealth {
    /// Overall state.
    pub status: HealthStatus,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
}

impl DetailedHealth {
    /// The short form served on `/api/health`.
    pub fn basic(&self) -> BasicHealth {
        BasicHealth {
            status: self.status,
            uptime_seconds: self.uptime_seconds,
        }
    }
}
