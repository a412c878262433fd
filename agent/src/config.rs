//! The agent's configuration: a TOML file (`--config FILE`), then flags on top.
//!
//! Every struct denies unknown fields, so a typo is an error naming the file, line
//! and column, not a silently ignored setting. Every field's doc states its unit and
//! default; `config/agent.toml` is the commented example and is parsed by a test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Configuration errors: always name the file and, for syntax and type errors, the
/// line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or `<flags>` for command-line values).
        path: PathBuf,
        /// What is wrong and with which key.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Name of this node in builder metrics, alerts and LoRa frames. Default: the
    /// hostname.
    pub node_name: Option<String>,
    /// Directory for state that must survive a restart (LoRa sequence numbers,
    /// acknowledged alerts). Default `/var/lib/nodewatch`.
    pub state_dir: PathBuf,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP server.
    pub web: WebConfig,
    /// Roots every exported value is read under.
    pub paths: PathsConfig,
    /// Which collectors run, and how often.
    pub collectors: CollectorsConfig,
    /// The Docker engine (the `docker` and `intmax_builder` collectors).
    pub docker: DockerConfig,
    /// The INTMAX builder (the `intmax_builder` collector).
    pub builder: BuilderConfig,
    /// The OLED display (SSD1306 on I2C, simulated without one) and `/display.png`.
    pub display: crate::outputs::oled::DisplayConfig,
    /// The push button on GPIO (acknowledge, mute, wake the display, next page).
    pub button: crate::outputs::button::ButtonConfig,
    /// Local alert rules (built-in defaults plus `[[alerts.rules]]`).
    pub alerts: crate::alerts::AlertsConfig,
    /// `[lora]`: the LoRa alert link (node or gateway).
    pub lora: crate::outputs::lora_link::LoraConfig,
    /// `[remote_write]`: push metrics to a Prometheus-compatible receiver. Default off.
    pub remote_write: Option<crate::remote_write::RemoteWriteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_name: None,
            state_dir: PathBuf::from("/var/lib/nodewatch"),
            log: LogConfig::default(),
            web: WebConfig::default(),
            paths: PathsConfig::default(),
            collectors: CollectorsConfig::default(),
            docker: DockerConfig::default(),
            builder: BuilderConfig::default(),
            display: crate::outputs::oled::DisplayConfig::default(),
            button: crate::outputs::button::ButtonConfig::default(),
            alerts: crate::alerts::AlertsConfig::default(),
            lora: crate::outputs::lora_link::LoraConfig::default(),
            remote_write: None,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `debug`, `info`, `warn` or `error` (as `--log.level`). Default `info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address to listen on (`--web.listen-address`): `:9100` is every interface,
    /// `127.0.0.1:0` picks a free port (the bound address is logged). Default `:9100`.
    pub listen_address: String,
    /// Path of the metrics endpoint (`--web.telemetry-path`). Default `/metrics`.
    pub telemetry_path: String,
    /// Most concurrent requests; beyond it, 503 at once (`--web.max-requests`).
    /// 0 means no limit. Default 40.
    pub max_requests: usize,
    /// Connection limits and `--web.config.file`: flags only (`--web.*`).
    #[serde(skip)]
    pub server: nodewatch_http::ServerSettings,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen_address: ":9100".into(),
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            server: nodewatch_http::ServerSettings::default(),
        }
    }
}

/// Filesystem roots (node_exporter's `--path.*`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// procfs mount point. Default `/proc`.
    pub procfs: PathBuf,
    /// sysfs mount point. Default `/sys`.
    pub sysfs: PathBuf,
    /// Root filesystem, for mount points. Default `/`.
    pub rootfs: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

/// Collector selection and schedule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorsConfig {
    /// Start from no collector rather than the default set
    /// (`--collector.disable-defaults`). Default false.
    pub disable_defaults: bool,
    /// Collectors to turn on (as `--collector.NAME`). Default empty.
    pub enable: Vec<String>,
    /// Collectors to turn off (as `--no-collector.NAME`). Default empty.
    pub disable: Vec<String>,
    /// Interval of the system and Pi collectors, in seconds. Default 2.
    pub interval_secs: f64,
    /// How long one collection may take before it counts as failed, in seconds. A
    /// collection still running at its next tick is not started twice. Default 5.
    pub timeout_secs: f64,
    /// Per-collector interval and timeout, e.g. `cpu = { interval_secs = 1 }`.
    pub schedule: BTreeMap<String, ScheduleOverride>,
    /// The textfile collector.
    pub textfile: TextfileConfig,
    /// The filesystem collector.
    pub filesystem: FilesystemConfig,
    /// The netdev collector.
    pub netdev: NetdevConfig,
    /// The netclass collector.
    pub netclass: NetclassConfig,
    /// The diskstats collector.
    pub diskstats: DiskstatsConfig,
}

impl Default for CollectorsConfig {
    fn default() -> Self {
        Self {
            disable_defaults: false,
            enable: Vec::new(),
            disable: Vec::new(),
            interval_secs: 2.0,
            timeout_secs: 5.0,
            schedule: BTreeMap::new(),
            textfile: TextfileConfig::default(),
            filesystem: FilesystemConfig::default(),
            netdev: NetdevConfig::default(),
            netclass: NetclassConfig::default(),
            diskstats: DiskstatsConfig::default(),
        }
    }
}

/// Interval and timeout of one collector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleOverride {
    /// Interval in seconds. Default: its kind's interval.
    pub interval_secs: Option<f64>,
    /// Timeout in seconds. Default: `collectors.timeout_secs`.
    pub timeout_secs: Option<f64>,
}

/// Where the textfile collector looks, and how often.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TextfileConfig {
    /// Directory of `*.prom` files (`--collector.textfile.directory`). Default
    /// `/var/lib/prometheus/node-exporter`, Debian's node_exporter directory, so cron
    /// jobs written for it keep working. A missing default directory is "no files"; a
    /// configured directory that is missing is an error.
    pub directory: PathBuf,
    /// Whether `directory` was set explicitly (file or flag), not by default.
    #[serde(skip)]
    pub directory_explicit: bool,
    /// Interval in seconds. Default 5.
    pub interval_secs: f64,
}

/// Debian's node_exporter textfile directory.
pub const DEFAULT_TEXTFILE_DIRECTORY: &str = "/var/lib/prometheus/node-exporter";

impl Default for TextfileConfig {
    fn default() -> Self {
        Self {
            directory: DEFAULT_TEXTFILE_DIRECTORY.into(),
            directory_explicit: false,
            interval_secs: 5.0,
        }
    }
}

/// node_exporter 1.5's default `--collector.filesystem.mount-points-exclude`.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter 1.5's default `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";
/// node_exporter 1.5's default `--collector.diskstats.device-exclude`.
pub const DEFAULT_DISKSTATS_DEVICE_EXCLUDE: &str =
    "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";

/// Filesystem collector filters (regular expressions, unanchored as in node_exporter).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Mount points to leave out. Default: node_exporter's.
    pub mount_points_exclude: String,
    /// Filesystem types to leave out. Default: node_exporter's.
    pub fs_types_exclude: String,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude: DEFAULT_MOUNT_POINTS_EXCLUDE.into(),
            fs_types_exclude: DEFAULT_FS_TYPES_EXCLUDE.into(),
        }
    }
}

/// Netdev collector filters. At most one of the two may be set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetdevConfig {
    /// Only devices matching this. Default: all.
    pub device_include: Option<String>,
    /// Devices matching this are left out. Default: none.
    pub device_exclude: Option<String>,
}

/// Netclass collector filters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetclassConfig {
    /// Devices matching this are left out. Default `^$` (none), as node_exporter.
    pub ignored_devices: String,
}

impl Default for NetclassConfig {
    fn default() -> Self {
        Self {
            ignored_devices: "^$".into(),
        }
    }
}

/// Diskstats collector filters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskstatsConfig {
    /// Devices matching this are left out (partitions, loop and ram devices).
    /// Default: node_exporter's.
    pub device_exclude: String,
}

impl Default for DiskstatsConfig {
    fn default() -> Self {
        Self {
            device_exclude: DEFAULT_DISKSTATS_DEVICE_EXCLUDE.into(),
        }
    }
}

/// The Docker engine, watched by events over its Unix socket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The engine's Unix socket (no TCP, no TLS). Default `/var/run/docker.sock`.
    /// Access to it is root-equivalent: see docs/builder.md, "Permissions".
    pub socket: PathBuf,
    /// Report only containers whose name (without `/`) matches this regular
    /// expression (unanchored). Default empty: every container.
    pub container_pattern: String,
    /// Report only containers that carry every one of these labels, each `key` or
    /// `key=value`. Default: none required.
    pub labels: Vec<String>,
    /// Full re-list of containers (and Swarm services) every this many seconds, in
    /// case an event was missed; changes arrive by events at once. Default 30.
    pub reconcile_interval_secs: f64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket: "/var/run/docker.sock".into(),
            container_pattern: String::new(),
            labels: Vec::new(),
            reconcile_interval_secs: 30.0,
        }
    }
}

/// The builder's default container pattern: the standalone container `block-builder`
/// or a Swarm task of `block-builder-stack-<env>_block-builder-<env>`.
pub const DEFAULT_BUILDER_CONTAINER_PATTERN: &str =
    "^(block-builder|block-builder-stack-[^_]+_block-builder-.+)$";
/// The builder's default process pattern (matched against `comm` and argv\[0\]).
pub const DEFAULT_BUILDER_PROCESS_PATTERN: &str = "intmax-builder|block-builder";
/// The standalone builder's health endpoint.
pub const DEFAULT_BUILDER_HEALTH_URL: &str = "http://127.0.0.1:8080/health-check";

/// The INTMAX Block Builder: where to find it and how to check it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuilderConfig {
    /// Regular expression on container names (anchor it yourself). Default: the
    /// standalone `block-builder` and Swarm tasks of `block-builder-stack-*`.
    pub container_pattern: String,
    /// Regular expression on process names (`comm`) and the base name of argv\[0\],
    /// read under `--path.procfs`. Default `intmax-builder|block-builder`.
    pub process_pattern: String,
    /// Health endpoint (plain `http://`, loopback in practice). Unset: the standalone
    /// builder's `http://127.0.0.1:8080/health-check`, checked while a standalone
    /// builder container exists; none for a Swarm task (its 8080 is not published:
    /// `ready` is "container running"). Empty string: no health check.
    pub health_url: Option<String>,
    /// Seconds between health checks. Default 5.
    pub health_interval_secs: f64,
    /// Seconds a health check may take before it counts as failed. Default 5.
    pub health_timeout_secs: f64,
    /// The builder's data directory. Default unset: its two metrics are absent.
    pub data_dir: Option<PathBuf>,
    /// Seconds between walks of the data directory to measure its size. Default 300.
    pub data_dir_interval_secs: f64,
    /// Most directory entries one walk visits; a larger tree is reported as
    /// measured so far and logged. Default 1000000.
    pub data_dir_max_entries: u64,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        Self {
            container_pattern: DEFAULT_BUILDER_CONTAINER_PATTERN.into(),
            process_pattern: DEFAULT_BUILDER_PROCESS_PATTERN.into(),
            health_url: None,
            health_interval_secs: 5.0,
            health_timeout_secs: 5.0,
            data_dir: None,
            data_dir_interval_secs: 300.0,
            data_dir_max_entries: 1_000_000,
        }
    }
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses TOML text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|s| line_column(text, s.start))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        config.collectors.textfile.directory_explicit = text_sets_textfile_directory(text);
        // Rules are checked here, where the text is at hand, so an error in an
        // expression points at its line and column in the file.
        crate::alerts::compile(&config.alerts).map_err(|e| rule_error(text, path, e))?;
        Ok(config)
    }

    /// Checks what types alone cannot: names of collectors, intervals, regular
    /// expressions. `origin` names where the values came from.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        };
        for name in self
            .collectors
            .enable
            .iter()
            .chain(&self.collectors.disable)
            .chain(self.collectors.schedule.keys())
        {
            if crate::collectors::spec(name).is_none_or(|s| s.internal) {
                return Err(invalid(format!(
                    "unknown collector {name:?}; known: {}",
                    crate::collectors::ALL
                        .iter()
                        .filter(|s| !s.internal)
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{key} must be a number of seconds above 0 and at most 86400, found {v}"
                )))
            }
        };
        positive("collectors.interval_secs", self.collectors.interval_secs)?;
        positive(
            "docker.reconcile_interval_secs",
            self.docker.reconcile_interval_secs,
        )?;
        positive(
            "builder.health_interval_secs",
            self.builder.health_interval_secs,
        )?;
        positive(
            "builder.health_timeout_secs",
            self.builder.health_timeout_secs,
        )?;
        positive(
            "builder.data_dir_interval_secs",
            self.builder.data_dir_interval_secs,
        )?;
        positive("collectors.timeout_secs", self.collectors.timeout_secs)?;
        positive(
            "alerts.evaluation_interval_secs",
            self.alerts.evaluation_interval_secs,
        )?;
        positive(
            "collectors.textfile.interval_secs",
            self.collectors.textfile.interval_secs,
        )?;
        for (name, o) in &self.collectors.schedule {
            if let Some(v) = o.interval_secs {
                positive(&format!("collectors.schedule.{name}.interval_secs"), v)?;
            }
            if let Some(v) = o.timeout_secs {
                positive(&format!("collectors.schedule.{name}.timeout_secs"), v)?;
            }
        }
        if !self.web.telemetry_path.starts_with('/') || self.web.telemetry_path.starts_with("/api/")
        {
            return Err(invalid(format!(
                "web.telemetry_path must start with / and not be under /api/, found {:?}",
                self.web.telemetry_path
            )));
        }
        if !matches!(self.log.level.as_str(), "debug" | "info" | "warn" | "error") {
            return Err(invalid(format!(
                "log.level must be debug, info, warn or error, found {:?}",
                self.log.level
            )));
        }
        self.display.validate().map_err(invalid)?;
        if self.lora.enabled {
            let names: Vec<String> = crate::alerts::effective_rules(&self.alerts)
                .map(|rules| rules.into_iter().map(|r| r.name).collect())
                .unwrap_or_default();
            self.lora.validate(&names).map_err(invalid)?;
        }
        if let Some(remote_write) = &self.remote_write {
            remote_write.validate().map_err(invalid)?;
        }
        let button = crate::outputs::button::ButtonConfig::effective(self);
        button.validate().map_err(invalid)?;
        self.alerts
            .buzzer
            .validate(button.enabled.then_some(button.gpio))
            .map_err(invalid)?;
        if self.collectors.netdev.device_include.is_some()
            && self.collectors.netdev.device_exclude.is_some()
        {
            return Err(invalid(
                "collectors.netdev: device_include and device_exclude are mutually exclusive"
                    .into(),
            ));
        }
        if self
            .node_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(invalid("node_name must not be empty".into()));
        }
        // Build every collector once so bad regular expressions are reported now.
        let roots = self.roots();
        let ctx = crate::collectors::BuildContext {
            roots: &roots,
            config: self,
        };
        for spec in crate::collectors::ALL {
            crate::collectors::build(spec, &ctx).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// The roots from `paths`.
    pub fn roots(&self) -> crate::paths::Roots {
        crate::paths::Roots {
            procfs: self.paths.procfs.clone(),
            sysfs: self.paths.sysfs.clone(),
            rootfs: self.paths.rootfs.clone(),
        }
    }

    /// Names of the collectors that run, in `/metrics` order.
    pub fn enabled_collectors(&self) -> Vec<&'static crate::collectors::CollectorSpec> {
        crate::collectors::ALL
            .iter()
            .filter(|s| {
                if s.internal {
                    return true;
                }
                let on_by_default = s.default_enabled && !self.collectors.disable_defaults;
                let enabled = self.collectors.enable.iter().any(|n| n == s.name);
                let disabled = self.collectors.disable.iter().any(|n| n == s.name);
                (on_by_default || enabled) && !disabled
            })
            .collect()
    }

    /// The node name: configured, else the hostname, else `localhost`.
    pub fn node_name(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        })
    }
}

/// Whether the TOML sets `collectors.textfile.directory` (so a missing directory is
/// an error rather than "no files").
fn text_sets_textfile_directory(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| {
            t.get("collectors")?
                .get("textfile")?
                .get("directory")
                .cloned()
        })
        .is_some()
}

/// A rule error as a configuration error: at the expression's place in the file when
/// it came from one (the column within a one-line basic string), else the rule's name.
fn rule_error(text: &str, path: &Path, e: crate::alerts::RuleError) -> ConfigError {
    match (&e.span, e.column) {
        (Some(span), Some(column)) => {
            // Skip the opening quote; count the column in characters.
            let value_start = span.start + 1;
            let offset = text
                .get(value_start..span.end)
                .and_then(|v| {
                    v.char_indices()
                        .nth(column - 1)
                        .map(|(i, _)| value_start + i)
                })
                .unwrap_or(span.end.saturating_sub(1));
            let (line, column) = line_column(text, offset);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: format!("alerts rule {:?}: {}: {}", e.rule, e.key, e.message),
            }
        }
        _ => ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example in `config/` parses and validates; `agent.toml` spells out the
    /// defaults, so it must equal them.
    #[test]
    fn examples_in_config_dir_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config dir") {
            let path = entry.expect("entry").path();
            let is_agent_config = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("agent") && n.ends_with(".toml"));
            if !is_agent_config {
                continue;
            }
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            config.validate(&path).unwrap_or_else(|e| panic!("{e}"));
            if path.ends_with("agent.toml") {
                let mut defaults = Config::default();
                defaults.collectors.textfile.directory_explicit = true;
                assert_eq!(
                    config, defaults,
                    "config/agent.toml must show the built-in defaults"
                );
            }
            seen += 1;
        }
        assert!(seen >= 1);
    }

    #[test]
    fn alert_rule_errors_point_into_the_file() {
        let text = "[alerts]\n[[alerts.rules]]\nname = \"X\"\nseverity = \"info\"\nexpr = \"up{job=\\\"a\\\" > 1\"\n";
        let err = Config::parse(text, Path::new("a.toml")).expect_err("bad expr");
        assert!(err.to_string().starts_with("a.toml:5:"), "{err}");
        let text =
            "[[alerts.rules]]\nname = \"X\"\nseverity = \"info\"\nexpr = 'up{job=\"a\" > 1'\n";
        let err = Config::parse(text, Path::new("a.toml")).expect_err("bad expr");
        // `>` is column 12 of the expression, which starts at column 9.
        assert!(
            err.to_string()
                .starts_with("a.toml:4:20: alerts rule \"X\": expr:"),
            "{err}"
        );
        let err = Config::parse("[alerts]\ndisable = [\"Nope\"]\n", Path::new("a.toml"))
            .expect_err("unknown rule");
        assert!(err.to_string().contains("Nope"), "{err}");
        let err = Config::parse(
            "[[alerts.rules]]\nname = \"X\"\nseverity = \"urgent\"\nexpr = \"up\"\n",
            Path::new("a.toml"),
        )
        .expect_err("bad severity");
        assert!(err.to_string().starts_with("a.toml:3:"), "{err}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let config = Config::parse("", Path::new("a.toml")).expect("parse");
        assert_eq!(config, Config::default());
        config.validate(Path::new("a.toml")).expect("valid");
    }

    #[test]
    fn unknown_key_names_file_line_and_column() {
        let err = Config::parse(
            "[web]\nlisten_address = \":9100\"\nlisten_adress = \":1\"\n",
            Path::new("agent.toml"),
        )
        .expect_err("unknown key");
        let text = err.to_string();
        assert!(
            text.starts_with("agent.toml:3:1: unknown field `listen_adress`"),
            "{text}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_positions() {
        let err = Config::parse(
            "[collectors]\ninterval_secs = \"two\"\n",
            Path::new("a.toml"),
        )
        .expect_err("type");
        assert!(err.to_string().starts_with("a.toml:2:17:"), "{err}");
        let err = Config::parse("[web\n", Path::new("a.toml")).expect_err("syntax");
        assert!(err.to_string().starts_with("a.toml:1:"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let config = Config::parse("[collectors]\nenable = [\"cpux\"]\n", Path::new("a.toml"))
            .expect("parse");
        let err = config
            .validate(Path::new("a.toml"))
            .expect_err("unknown collector");
        assert!(
            err.to_string().contains("unknown collector \"cpux\""),
            "{err}"
        );
        let config =
            Config::parse("[collectors]\ninterval_secs = 0\n", Path::new("a.toml")).expect("parse");
        assert!(
            config
                .validate(Path::new("a.toml"))
                .expect_err("zero")
                .to_string()
                .contains("collectors.interval_secs")
        );
        let config = Config::parse(
            "[collectors.diskstats]\ndevice_exclude = \"(\"\n",
            Path::new("a.toml"),
        )
        .expect("parse");
        let err = config.validate(Path::new("a.toml")).expect_err("regex");
        assert!(err.to_string().contains("device_exclude"), "{err}");
    }

    #[test]
    fn collector_selection() {
        let mut config = Config::default();
        assert!(config.enabled_collectors().iter().any(|s| s.name == "cpu"));
        config.collectors.disable_defaults = true;
        config.collectors.enable = vec!["loadavg".into()];
        let names: Vec<_> = config.enabled_collectors().iter().map(|s| s.name).collect();
        assert_eq!(names, ["loadavg", "process"]);
    }

    #[test]
    fn textfile_directory_explicitness() {
        let config = Config::parse(
            "[collectors.textfile]\ndirectory = \"/x\"\n",
            Path::new("a"),
        )
        .expect("parse");
        assert!(config.collectors.textfile.directory_explicit);
        assert!(!Config::default().collectors.textfile.directory_explicit);
    }
}
