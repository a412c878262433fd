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
    /// The Docker engine: read by the `docker` and `intmax_builder` collectors
    /// ([`crate::collectors::docker::DockerConfig`]).
    pub docker: toml::Table,
    /// The INTMAX builder: read by the `intmax_builder` collector
    /// ([`crate::collectors::intmax_builder::BuilderConfig`]).
    pub builder: toml::Table,
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
            docker: toml::Table::new(),
            builder: toml::Table::new(),
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

/// Collector selection and schedule, and each collector's own section.
///
/// Not `deny_unknown_fields`: every other key is a collector's section
/// (`[collectors.diskstats]`), kept as TOML for the collector to parse and check
/// itself; [`Config::validate`] refuses keys that are no collector's section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
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
    /// Collect what neither the alert rules nor the display read only when a scrape
    /// (or remote_write) asks, at most every second, and at least every 60 s; false:
    /// every collector on its interval. Default true.
    pub on_demand: bool,
    /// Per-collector interval and timeout, e.g. `cpu = { interval_secs = 1 }`.
    pub schedule: BTreeMap<String, ScheduleOverride>,
    /// `[collectors.NAME]`: the sections of collectors with options, by name.
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

impl Default for CollectorsConfig {
    fn default() -> Self {
        Self {
            disable_defaults: false,
            enable: Vec::new(),
            disable: Vec::new(),
            interval_secs: 2.0,
            timeout_secs: 5.0,
            on_demand: true,
            schedule: BTreeMap::new(),
            sections: BTreeMap::new(),
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
        let config: Config = toml::from_str(text).map_err(|e| {
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
        positive("collectors.timeout_secs", self.collectors.timeout_secs)?;
        positive(
            "alerts.evaluation_interval_secs",
            self.alerts.evaluation_interval_secs,
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
        let button = self.button_in_effect();
        button.validate().map_err(invalid)?;
        self.alerts
            .buzzer
            .validate(button.enabled.then_some(button.gpio))
            .map_err(invalid)?;
        if self
            .node_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(invalid("node_name must not be empty".into()));
        }
        self.validate_collector_sections().map_err(invalid)?;
        // Each collector checks its own section: build every one once, so a bad
        // regular expression or interval is reported now, not at start.
        let roots = self.roots();
        let sections = self.collector_sections();
        let node = self.node_name();
        let ctx = crate::collectors::BuildContext {
            roots: &roots,
            sections: &sections,
            node: &node,
        };
        for spec in crate::collectors::ALL {
            crate::collectors::build(spec, &ctx).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(())
    }

    /// Every `[collectors.KEY]` that is not a general key must be the section of a
    /// collector that reads one.
    fn validate_collector_sections(&self) -> Result<(), String> {
        for (key, value) in &self.collectors.sections {
            let section = format!("collectors.{key}");
            let owner = crate::collectors::ALL
                .iter()
                .find(|s| s.section == Some(section.as_str()));
            match (owner, value) {
                (Some(_), toml::Value::Table(_)) => {}
                (Some(_), other) => {
                    return Err(format!(
                        "{section} must be a table ([{section}]), found a {}",
                        other.type_str()
                    ));
                }
                (None, _) => {
                    let with_sections: Vec<&str> = crate::collectors::ALL
                        .iter()
                        .filter_map(|s| s.section?.strip_prefix("collectors."))
                        .collect();
                    return Err(format!(
                        "unknown key collectors.{key}; the keys are disable_defaults, enable, \
                         disable, interval_secs, timeout_secs, on_demand, schedule, and the \
                         sections of {}",
                        with_sections.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// The sections collectors read, by name: `collectors.NAME`, `docker`, `builder`.
    pub fn collector_sections(&self) -> crate::collectors::Sections {
        let mut sections: crate::collectors::Sections = self
            .collectors
            .sections
            .iter()
            .filter_map(|(name, value)| {
                let table = value.as_table()?;
                Some((format!("collectors.{name}"), table.clone()))
            })
            .collect();
        sections.insert("docker".into(), self.docker.clone());
        sections.insert("builder".into(), self.builder.clone());
        sections
    }

    /// Sets `key` in the section `[collectors.NAME]` (a flag's value).
    pub fn set_collector_option(&mut self, collector: &str, key: &str, value: String) {
        let section = self
            .collectors
            .sections
            .entry(collector.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !section.is_table() {
            *section = toml::Value::Table(toml::Table::new());
        }
        if let toml::Value::Table(table) = section {
            table.insert(key.to_string(), toml::Value::String(value));
        }
    }

    /// The button in effect: `[button]` with the deprecated `display.button` and
    /// `display.button_gpio` on top.
    pub fn button_in_effect(&self) -> crate::outputs::button::ButtonConfig {
        self.button
            .with_deprecated(self.display.button, self.display.button_gpio)
    }

    /// Warnings about deprecated keys, for the log at start.
    pub fn deprecation_warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.display.button.is_some() || self.display.button_gpio.is_some() {
            warnings.push(
                "display.button and display.button_gpio are deprecated: use [button] enabled and gpio.",
            );
        }
        warnings
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
                // Collectors' sections are compared with their defaults beside each
                // collector (`example_section`).
                let mut config = config;
                config.collectors.sections.clear();
                config.docker.clear();
                config.builder.clear();
                assert_eq!(
                    config,
                    Config::default(),
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
    fn a_key_that_is_no_collector_section_is_refused() {
        for text in [
            "[collectors]\ninterval_sec = 2\n",
            "[collectors.cpu]\nx = 1\n",
            "[collectors]\ndiskstats = 1\n",
        ] {
            let config = Config::parse(text, Path::new("a.toml")).expect("parse");
            let err = config.validate(Path::new("a.toml")).expect_err(text);
            assert!(err.to_string().contains("collectors."), "{err}");
        }
    }

    #[test]
    fn a_flag_sets_its_collector_section() {
        let mut config = Config::default();
        config.set_collector_option("diskstats", "device_exclude", "^sda$".into());
        let sections = config.collector_sections();
        assert_eq!(
            sections["collectors.diskstats"]["device_exclude"].as_str(),
            Some("^sda$")
        );
        config.validate(Path::new("<flags>")).expect("valid");
    }
}
