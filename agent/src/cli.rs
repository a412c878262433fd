//! Command line: node_exporter's flags, so an existing unit file keeps working, plus
//! `--config FILE` and the subcommands.
//!
//! node_exporter has a `--collector.NAME` / `--no-collector.NAME` flag per collector
//! and dozens of collector options. Before clap sees the arguments, [`split_args`]
//! takes out the enable/disable flags and every node_exporter option we do not
//! implement (kept, with a warning), so clap only parses what we know.

use std::path::PathBuf;

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::collectors::{ALL, CollectorOption};
use crate::config::Config;

/// nodewatch-agent: a small, fast drop-in for node_exporter on Raspberry Pi builder nodes.
#[derive(Debug, Parser)]
#[command(name = "nodewatch-agent", version, about, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file; flags override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (`:9100`, `127.0.0.1:0`, `[::1]:9100`).
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub listen_address: Option<String>,
    /// Path under which metrics are exposed.
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub telemetry_path: Option<String>,
    /// Most concurrent requests (0 = no limit).
    #[arg(long = "web.max-requests", value_name = "N")]
    pub max_requests: Option<usize>,
    /// `--web.config.file` (TLS, basic auth) and the connection limits, shared with the
    /// exporters.
    #[command(flatten)]
    pub web_server: nodewatch_http::WebFlags,
    /// procfs mount point.
    #[arg(long = "path.procfs", value_name = "DIR")]
    pub procfs: Option<PathBuf>,
    /// sysfs mount point.
    #[arg(long = "path.sysfs", value_name = "DIR")]
    pub sysfs: Option<PathBuf>,
    /// Root filesystem mount point.
    #[arg(long = "path.rootfs", value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Turn off every collector not enabled explicitly.
    #[arg(long = "collector.disable-defaults")]
    pub disable_defaults: bool,
    /// Log level: debug, info, warn, error.
    #[arg(long = "log.level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: logfmt (text, the default) or json (one object per line).
    #[arg(long = "log.format", value_name = "FORMAT", default_value = "logfmt")]
    pub log_format: nodewatch_http::logging::LogFormat,
    /// Subcommand; without one the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `--collector.NAME` (true) and `--no-collector.NAME` (false), in order.
    #[arg(skip)]
    pub collector_toggles: Vec<(String, bool)>,
    /// node_exporter flags we accept and ignore, for the warning.
    #[arg(skip)]
    pub ignored_flags: Vec<String>,
    /// Collector options (`--collector.diskstats.device-exclude RE`) as
    /// (collector, key in its section, value), from the collectors' own
    /// [`CollectorOption`]s.
    #[arg(skip)]
    pub collector_options: Vec<(&'static str, &'static str, String)>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration (file and flags) and exit: 0 when valid, else 1 with
    /// the file, line and column of the problem.
    CheckConfig,
    /// Draw a display page to a PNG file, from a built-in sample state or a JSON
    /// state file (the display's view model; every field optional).
    Render {
        /// overview, system, builder, wallet, alerts, network, or critical (the
        /// takeover screen).
        #[arg(long, value_name = "NAME")]
        page: String,
        /// Panel size, 128x64 or 128x32. Default: `display.size` from the config.
        #[arg(long, value_name = "WxH")]
        size: Option<String>,
        /// JSON state file; without it, a sample Pi with a ready builder.
        #[arg(long, value_name = "FILE.json")]
        state: Option<PathBuf>,
        /// Where to write the PNG.
        #[arg(long, value_name = "FILE.png")]
        out: PathBuf,
        /// Pixels per panel pixel.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
        scale: u32,
    },
    /// Time to draw and diff each display page on this machine, and the I2C bytes
    /// per update (full frame against a one-figure change).
    BenchDisplay {
        /// Runs per page.
        #[arg(long, default_value_t = 2000)]
        iterations: u32,
    },
    /// Local alert rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The LoRa link's keys.
    #[command(subcommand)]
    Lora(LoraCommand),
    /// Ask the running agent (on this machine, at `web.listen_address`'s port) to fire
    /// a test alert, `NodewatchTestAlert`, through every output that follows alerts
    /// (buzzer and LED, display, LoRa), then resolve it.
    TestAlert {
        /// critical, warning or info.
        #[arg(long, default_value = "critical", value_parser = ["critical", "warning", "info"])]
        severity: String,
        /// Seconds it fires (1–600).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600))]
        duration_secs: u64,
    },
}

/// `lora` subcommands.
#[derive(Debug, Subcommand)]
pub enum LoraCommand {
    /// Write a node's LoRa key, derived from the network master key (HKDF-SHA256 over
    /// the node's id), to a file of mode 0600: that node's `lora.network_key_file`.
    DeriveKey {
        /// The master key file (the gateway's `lora.network_key_file`).
        #[arg(long, value_name = "FILE")]
        master: PathBuf,
        /// The node's `node_name`.
        #[arg(long, value_name = "NAME")]
        node: String,
        /// Where to write the node's key (replaced if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Write the rules in effect (defaults and `[[alerts.rules]]`) as a Prometheus
    /// rule file, for the central Prometheus.
    Export {
        /// Where to write it; standard output without it.
        #[arg(long, value_name = "FILE.yml")]
        out: Option<PathBuf>,
    },
}

/// node_exporter collector options that take no value (booleans), so the argument
/// after them is not swallowed.
const BOOLEAN_OPTIONS: &[&str] = &[
    "collector.cpu.guest",
    "collector.cpu.info",
    "collector.netdev.address-info",
    "collector.netdev.netlink",
    "collector.netclass.ignore-invalid-speed",
    "collector.netclass.netlink",
    "collector.ntp.server-is-local",
    "collector.perf.disable-hardware-profilers",
    "collector.perf.disable-software-profilers",
    "collector.perf.disable-cache-profilers",
    "collector.stat.softirq",
    "collector.systemd.enable-task-metrics",
    "collector.systemd.enable-restarts-metrics",
    "collector.systemd.enable-start-time-metrics",
    "collector.wifi.fixtures",
    "collector.filesystem.mount-timeout",
    "web.disable-exporter-metrics",
    "web.systemd-socket",
];

/// Whether `--NAME` is an option clap parses: `collector.disable-defaults`, or a
/// collector's option flag (or an older spelling of it).
fn is_known_option(name: &str) -> bool {
    name == "collector.disable-defaults"
        || collector_option_flags()
            .any(|(flag, aliases, _, _)| flag == name || aliases.iter().any(|alias| *alias == name))
}

/// Every collector option as (`collector.NAME.FLAG`, its aliases spelled the same
/// way, the collector, the option).
fn collector_option_flags()
-> impl Iterator<Item = (String, Vec<String>, &'static str, &'static CollectorOption)> {
    ALL.iter().flat_map(|spec| {
        spec.options.iter().map(move |option| {
            let flag = format!("collector.{}.{}", spec.name, option.flag);
            let aliases = option
                .aliases
                .iter()
                .map(|alias| format!("collector.{}.{alias}", spec.name))
                .collect();
            (flag, aliases, spec.name, option)
        })
    })
}

/// The clap command: the derived flags plus every collector's option flags.
fn command() -> clap::Command {
    collector_option_flags().fold(Cli::command(), |command, (flag, aliases, _, option)| {
        command.arg(
            Arg::new(flag.clone())
                .long(flag)
                .aliases(aliases)
                .value_name(option.value_name)
                .help(option.help),
        )
    })
}

/// The result of [`split_args`].
#[derive(Debug, Default, PartialEq)]
pub struct SplitArgs {
    /// What clap should parse.
    pub for_clap: Vec<String>,
    /// `--collector.NAME` / `--no-collector.NAME`, in order.
    pub toggles: Vec<(String, bool)>,
    /// Accepted node_exporter flags that the agent ignores.
    pub ignored: Vec<String>,
}

/// Separates collector toggles and unimplemented node_exporter flags from the rest.
pub fn split_args(args: impl IntoIterator<Item = String>) -> SplitArgs {
    let mut split = SplitArgs::default();
    let mut args = args.into_iter().peekable();
    if let Some(program) = args.next() {
        split.for_clap.push(program);
    }
    while let Some(arg) = args.next() {
        if arg == "--" {
            split.for_clap.push(arg);
            split.for_clap.extend(args.by_ref());
            break;
        }
        let (flag, inline_value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let (negated, name) = if let Some(rest) = flag.strip_prefix("--no-") {
            (true, rest.to_string())
        } else if let Some(rest) = flag.strip_prefix("--") {
            (false, rest.to_string())
        } else {
            split.for_clap.push(arg);
            continue;
        };
        if is_known_option(&name) && !negated {
            split.for_clap.push(arg);
            continue;
        }
        let collector = name
            .strip_prefix("collector.")
            .filter(|rest| !rest.contains('.'));
        if let Some(collector) = collector {
            // `--collector.cpu`, `--no-collector.cpu`, `--collector.cpu=false`.
            let value = match inline_value.as_deref() {
                None => true,
                Some(v) => !matches!(v, "false" | "0"),
            };
            split
                .toggles
                .push((collector.to_string(), value != negated));
            continue;
        }
        let unimplemented = name.starts_with("collector.")
            || BOOLEAN_OPTIONS.contains(&name.as_str())
            || matches!(
                name.as_str(),
                "path.udev.data" | "runtime.gomaxprocs" | "web.systemd-socket"
            );
        if unimplemented {
            let mut shown = arg.clone();
            let takes_value =
                inline_value.is_none() && !negated && !BOOLEAN_OPTIONS.contains(&name.as_str());
            if takes_value
                && args.peek().is_some_and(|next| !next.starts_with("--"))
                && let Some(value) = args.next()
            {
                shown = format!("{arg} {value}");
            }
            split.ignored.push(shown);
            continue;
        }
        split.for_clap.push(arg);
    }
    split
}

impl Cli {
    /// Parses arguments, program name first; clap's error (usage, `--help`) to show
    /// and exit with.
    pub fn try_from_args(args: impl IntoIterator<Item = String>) -> Result<Self, clap::Error> {
        let split = split_args(args);
        let mut matches = command().try_get_matches_from(split.for_clap)?;
        let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
        cli.collector_toggles = split.toggles;
        cli.ignored_flags = split.ignored;
        for (flag, _, collector, option) in collector_option_flags() {
            if let Some(value) = matches.get_one::<String>(&flag) {
                cli.collector_options
                    .push((collector, option.key, value.clone()));
            }
        }
        Ok(cli)
    }

    /// Applies the flags on top of a configuration. Returns warnings for the log
    /// (unknown collectors named in toggles, ignored flags).
    pub fn apply(&self, config: &mut Config) -> Vec<String> {
        let mut warnings = Vec::new();
        let web = &mut config.web;
        if let Some(v) = &self.listen_address {
            web.listen_address = v.clone();
        }
        if let Some(v) = &self.telemetry_path {
            web.telemetry_path = v.clone();
        }
        if let Some(v) = self.max_requests {
            web.max_requests = v;
        }
        web.server = self.web_server.settings();
        if let Some(v) = &self.procfs {
            config.paths.procfs = v.clone();
        }
        if let Some(v) = &self.sysfs {
            config.paths.sysfs = v.clone();
        }
        if let Some(v) = &self.rootfs {
            config.paths.rootfs = v.clone();
        }
        for (collector, key, value) in &self.collector_options {
            config.set_collector_option(collector, key, value.clone());
        }
        let c = &mut config.collectors;
        if self.disable_defaults {
            c.disable_defaults = true;
        }
        for (name, on) in &self.collector_toggles {
            if crate::collectors::spec(name).is_none_or(|s| s.internal) {
                warnings.push(format!(
                    "Ignoring --{}collector.{name}: nodewatch has no {name} collector.",
                    if *on { "" } else { "no-" }
                ));
                continue;
            }
            c.enable.retain(|n| n != name);
            c.disable.retain(|n| n != name);
            if *on {
                c.enable.push(name.clone())
            } else {
                c.disable.push(name.clone())
            }
        }
        if let Some(level) = &self.log_level {
            config.log.level = level.clone();
        }
        for flag in &self.ignored_flags {
            warnings.push(format!(
                "Ignoring node_exporter flag {flag}: nodewatch does not implement it."
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        std::iter::once("nodewatch-agent")
            .chain(list.iter().copied())
            .map(String::from)
            .collect()
    }

    #[test]
    fn node_exporter_unit_file_flags_parse() {
        let cli = Cli::try_from_args(args(&[
            "--web.listen-address=:9100",
            "--collector.textfile.directory",
            "/var/lib/prometheus/node-exporter",
            "--no-collector.wifi",
            "--collector.systemd",
            "--collector.systemd.unit-include",
            "(docker|ssh).service",
            "--collector.filesystem.mount-points-exclude=^/(sys|proc)($|/)",
            "--collector.cpu.info",
            "--no-collector.arp",
            "--path.procfs=/host/proc",
            "--collector.diskstats.ignored-devices=^loop",
            "--log.level=warn",
        ]))
        .expect("parse");
        assert_eq!(cli.listen_address.as_deref(), Some(":9100"));
        assert!(cli.collector_options.contains(&(
            "textfile",
            "directory",
            "/var/lib/prometheus/node-exporter".into()
        )));
        assert_eq!(
            cli.collector_toggles,
            vec![
                ("wifi".into(), false),
                ("systemd".into(), true),
                ("arp".into(), false)
            ]
        );
        assert_eq!(
            cli.ignored_flags,
            vec![
                "--collector.systemd.unit-include (docker|ssh).service",
                "--collector.cpu.info"
            ]
        );
        let mut config = Config::default();
        let warnings = cli.apply(&mut config);
        assert_eq!(config.collectors.disable, vec!["arp"]);
        assert_eq!(config.paths.procfs, std::path::Path::new("/host/proc"));
        let sections = config.collector_sections();
        assert_eq!(
            sections["collectors.diskstats"]["device_exclude"].as_str(),
            Some("^loop")
        );
        assert_eq!(
            sections["collectors.filesystem"]["mount_points_exclude"].as_str(),
            Some("^/(sys|proc)($|/)")
        );
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("wifi"));
    }

    #[test]
    fn later_toggle_wins_and_flags_override_file() {
        let cli = Cli::try_from_args(args(&[
            "--no-collector.cpu",
            "--collector.cpu=true",
            "--web.max-requests",
            "3",
        ]))
        .expect("parse");
        let mut config = Config::default();
        config.collectors.disable = vec!["cpu".into()];
        cli.apply(&mut config);
        assert_eq!(config.collectors.enable, vec!["cpu"]);
        assert!(config.collectors.disable.is_empty());
        assert_eq!(config.web.max_requests, 3);
    }

    #[test]
    fn unknown_plain_flag_is_an_error() {
        assert!(Cli::try_from_args(args(&["--web.listen-adress=:1"])).is_err());
    }

    #[test]
    fn render_subcommand() {
        let cli = Cli::try_from_args(args(&[
            "render", "--page", "system", "--size", "128x32", "--out", "s.png",
        ]))
        .expect("parse");
        let Some(Command::Render {
            page,
            size,
            state,
            out,
            scale,
        }) = cli.command
        else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            (page.as_str(), size.as_deref(), state, scale),
            ("system", Some("128x32"), None, 4)
        );
        assert_eq!(out, std::path::Path::new("s.png"));
        assert!(
            Cli::try_from_args(args(&["render", "--page", "system"])).is_err(),
            "--out required"
        );
    }

    #[test]
    fn rules_export_subcommand() {
        let cli = Cli::try_from_args(args(&["rules", "export", "--out", "r.yml"])).expect("parse");
        let Some(Command::Rules(RulesCommand::Export { out })) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(out.as_deref(), Some(std::path::Path::new("r.yml")));
        assert!(Cli::try_from_args(args(&["rules", "export"])).is_ok());
    }

    #[test]
    fn subcommand_with_global_config() {
        let cli = Cli::try_from_args(args(&["check-config", "--config", "a.toml"])).expect("parse");
        assert!(matches!(cli.command, Some(Command::CheckConfig)));
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("a.toml")));
    }
}
