//! The collectors: one file per collector, named as node_exporter names it.
//!
//! A collector reads its files (through [`Roots`](crate::paths::Roots)) and writes
//! families into a [`MetricSink`]. It is plain blocking code: the
//! [scheduler](crate::scheduler) runs it on a blocking thread, on its own interval and
//! under its own timeout, so a slow or hung collector never holds a scrape.

use std::time::Duration;

use crate::metrics::MetricSink;
use crate::paths::Roots;

pub mod arp;
pub mod conntrack;
pub mod cpu;
pub mod cpufreq;
pub mod diskstats;
pub mod docker;
pub mod entropy;
pub mod filefd;
pub mod filesystem;
pub mod hwmon;
pub mod intmax_builder;
pub mod loadavg;
pub mod meminfo;
pub mod netclass;
pub mod netdev;
pub mod netstat;
pub mod pi;
pub mod pressure;
pub mod process;
pub mod sockstat;
pub mod softnet;
pub mod stat;
pub mod textfile;
pub mod thermal_zone;
pub mod time;
pub mod timex;
pub mod udp_queues;
pub mod uname;
pub mod vmstat;

pub use crate::collect_error::CollectError;

/// A source of metrics, run on a blocking thread by the scheduler.
pub trait Collector: Send + Sync + 'static {
    /// Reads the source and writes its samples into `out`. On error, whatever was
    /// written is discarded.
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError>;

    /// Its own interval when its section sets one (`collectors.textfile.interval_secs`);
    /// `None` takes its cadence's.
    fn interval(&self) -> Option<Duration> {
        None
    }

    /// Signals that its source changed (a Docker event, a health check's new result):
    /// the scheduler runs it at once on each, besides its interval. Only
    /// [`Cadence::Watch`] collectors have them.
    fn changes(&self) -> Vec<ChangeSignal> {
        Vec::new()
    }
}

/// Ticks when a watched source changed; see [`Collector::changes`].
pub type ChangeSignal = tokio::sync::watch::Receiver<u64>;

/// How often a kind of collector runs by default (design §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// System and Pi collectors: `collectors.interval_secs` (2 s).
    System,
    /// Collectors that render state kept current by a background task (Docker events,
    /// builder health checks): at once on each change their task signals
    /// ([`Collector::changes`]), so a change reaches `/metrics` in milliseconds, and
    /// on `collectors.interval_secs` for what they poll themselves (the builder's
    /// process). Nothing runs while nothing changes.
    Watch,
}

/// Makes a collector from its configuration section.
pub type BuildFn = fn(&BuildContext<'_>) -> Result<Box<dyn Collector>, BuildError>;

/// A node_exporter option flag of a collector: `--collector.NAME.FLAG VALUE` sets `key`
/// in the collector's section.
#[derive(Debug, Clone, Copy)]
pub struct CollectorOption {
    /// The flag after `--collector.NAME.` (`device-exclude`).
    pub flag: &'static str,
    /// Older node_exporter spellings of the flag (`ignored-devices`).
    pub aliases: &'static [&'static str],
    /// The key it sets in the section (`device_exclude`).
    pub key: &'static str,
    /// The value's name in `--help` (`REGEX`).
    pub value_name: &'static str,
    /// The line in `--help`.
    pub help: &'static str,
}

/// A collector known to the agent: everything about it lives in its own file, which
/// defines its `SPEC`; [`ALL`] lists them.
#[derive(Debug, Clone, Copy)]
pub struct CollectorSpec {
    /// Its name in flags (`--collector.NAME`), config and `node_scrape_collector_*`.
    pub name: &'static str,
    /// On unless disabled (node_exporter's default set, plus `pi`).
    pub default_enabled: bool,
    /// Its default interval.
    pub cadence: Cadence,
    /// Internal collectors (the agent's own process figures) are not listed in
    /// `node_scrape_collector_*` and cannot be disabled.
    pub internal: bool,
    /// Families from external sources (textfiles) lose against built-in families of
    /// the same name.
    pub external: bool,
    /// Family names this collector owns even while it does not export them (a
    /// builder family absent until configured): external families of these names are
    /// dropped whenever this collector is enabled.
    pub claims: &'static [&'static str],
    /// The configuration section it reads (`collectors.diskstats`, `docker`), if any.
    pub section: Option<&'static str>,
    /// Its option flags.
    pub options: &'static [CollectorOption],
    /// Makes it.
    pub build: BuildFn,
}

impl CollectorSpec {
    /// A collector on by default, on the system cadence, with no section.
    pub const fn system(name: &'static str, build: BuildFn) -> Self {
        CollectorSpec {
            name,
            default_enabled: true,
            cadence: Cadence::System,
            internal: false,
            external: false,
            claims: &[],
            section: None,
            options: &[],
            build,
        }
    }

    /// The same, reading `section` and taking `options`.
    pub const fn with_section(
        self,
        section: &'static str,
        options: &'static [CollectorOption],
    ) -> Self {
        CollectorSpec {
            section: Some(section),
            options,
            ..self
        }
    }
}

/// Every collector, in the order their samples appear in `/metrics`. A new collector
/// is its file (with its `SPEC`) plus one line here.
pub const ALL: &[CollectorSpec] = &[
    arp::SPEC,
    conntrack::SPEC,
    cpu::SPEC,
    cpufreq::SPEC,
    diskstats::SPEC,
    docker::SPEC,
    entropy::SPEC,
    filefd::SPEC,
    filesystem::SPEC,
    hwmon::SPEC,
    intmax_builder::SPEC,
    loadavg::SPEC,
    meminfo::SPEC,
    netclass::SPEC,
    netdev::SPEC,
    netstat::SPEC,
    pi::SPEC,
    pressure::SPEC,
    sockstat::SPEC,
    softnet::SPEC,
    stat::SPEC,
    textfile::SPEC,
    thermal_zone::SPEC,
    time::SPEC,
    timex::SPEC,
    udp_queues::SPEC,
    uname::SPEC,
    vmstat::SPEC,
    process::SPEC,
];

/// Looks a collector up by name.
pub fn spec(name: &str) -> Option<&'static CollectorSpec> {
    ALL.iter().find(|s| s.name == name)
}

/// The configuration sections collectors read, by name (`collectors.diskstats`,
/// `docker`, `builder`), as TOML tables: each collector parses and checks its own.
pub type Sections = std::collections::BTreeMap<String, toml::Table>;

/// Everything a collector may need when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    /// The roots every path goes through.
    pub roots: &'a Roots,
    /// The configuration sections.
    pub sections: &'a Sections,
    /// The node's name (`node` label of the builder's families).
    pub node: &'a str,
}

impl BuildContext<'_> {
    /// The section `key` parsed as `T` (its defaults when the section is absent).
    pub fn section<T: serde::de::DeserializeOwned + Default>(
        &self,
        collector: &'static str,
        key: &str,
    ) -> Result<T, BuildError> {
        let Some(table) = self.sections.get(key) else {
            return Ok(T::default());
        };
        table
            .clone()
            .try_into()
            .map_err(|e: toml::de::Error| BuildError {
                collector,
                reason: format!("[{key}]: {}", e.message().trim_end()),
            })
    }

    /// Whether the section `key` sets `field` (a value given, not a default).
    pub fn sets(&self, key: &str, field: &str) -> bool {
        self.sections
            .get(key)
            .is_some_and(|t| t.contains_key(field))
    }
}

/// Error building a collector from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("collector {collector}: {reason}")]
pub struct BuildError {
    /// The collector.
    pub collector: &'static str,
    /// What is wrong with its configuration.
    pub reason: String,
}

/// Builds the collector `spec` from the configuration.
pub fn build(
    spec: &CollectorSpec,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Collector>, BuildError> {
    (spec.build)(ctx)
}

/// A duration in seconds from configuration: above 0 and at most a day.
pub fn seconds(collector: &'static str, key: &str, value: f64) -> Result<Duration, BuildError> {
    if value.is_finite() && value > 0.0 && value <= 86_400.0 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(BuildError {
            collector,
            reason: format!(
                "{key} must be a number of seconds above 0 and at most 86400, found {value}"
            ),
        })
    }
}

/// A compiled regular expression from configuration, with the text it came from.
pub fn compile_regex(
    collector: &'static str,
    field: &str,
    pattern: &str,
) -> Result<regex_lite::Regex, BuildError> {
    regex_lite::Regex::new(pattern).map_err(|e| BuildError {
        collector,
        reason: format!("{field} {pattern:?} is not a valid regular expression: {e}"),
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for collector unit tests on the committed fixture trees.

    use std::path::{Path, PathBuf};

    use super::*;

    /// Roots of `tests/fixtures/<tree>`.
    pub fn fixture_roots(tree: &str) -> Roots {
        Roots::under(fixture_dir(tree))
    }

    /// `tests/fixtures/<tree>`.
    pub fn fixture_dir(tree: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(tree)
    }

    /// Writes `content` to `base/relative`, creating the directories.
    pub fn write(base: &Path, relative: &str, content: &str) {
        let path = base.join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    /// Runs a collector and renders its output as text.
    pub fn collect_text(collector: &dyn Collector) -> String {
        let mut sink = MetricSink::new();
        collector.collect(&mut sink).expect("collect");
        let mut out = Vec::new();
        nodewatch_http::encode_families(&sink.into_families(), &mut out).expect("encode");
        String::from_utf8(out).expect("utf8")
    }

    /// Samples of the text format as `series -> value`, `series` being the name and the
    /// labels exactly as rendered (labels sorted by name, as both node_exporter and we
    /// render them).
    pub fn parse_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let value = match value {
                    "+Inf" => f64::INFINITY,
                    "-Inf" => f64::NEG_INFINITY,
                    v => v.parse().ok()?,
                };
                Some((series.to_string(), value))
            })
            .collect()
    }

    /// Asserts that, for each family in `families`, our samples in `ours` equal
    /// node_exporter 1.5's on the same fixture tree (`tests/fixtures/<tree>/node_exporter-1.5.prom`):
    /// same series, values equal within 1e-9 relative.
    pub fn assert_same_as_node_exporter(tree: &str, ours: &str, families: &[&str]) {
        let reference_path = fixture_dir(tree).join("node_exporter-1.5.prom");
        let reference = std::fs::read_to_string(&reference_path)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
        let in_family = |series: &str, family: &str| {
            let name = series.split('{').next().unwrap_or("");
            name == family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family))
        };
        let ours = parse_samples(ours);
        let theirs = parse_samples(&reference);
        let mut problems = Vec::new();
        for family in families {
            let a: Vec<_> = ours.iter().filter(|(k, _)| in_family(k, family)).collect();
            let b: Vec<_> = theirs
                .iter()
                .filter(|(k, _)| in_family(k, family))
                .collect();
            if b.is_empty() {
                problems.push(format!(
                    "{family}: node_exporter has no sample on tree {tree}"
                ));
            }
            for (k, v) in &b {
                match ours.get(*k) {
                    None => problems.push(format!("missing {k} (node_exporter: {v})")),
                    Some(o) if !close(*o, **v) => {
                        problems.push(format!("{k}: ours {o}, node_exporter {v}"))
                    }
                    _ => {}
                }
            }
            for (k, v) in &a {
                if !theirs.contains_key(*k) {
                    problems.push(format!("extra {k} {v} (node_exporter has no such series)"));
                }
            }
        }
        assert!(
            problems.is_empty(),
            "differences from node_exporter on {tree}:\n{}",
            problems.join("\n")
        );
    }

    fn close(a: f64, b: f64) -> bool {
        a == b || (a.is_nan() && b.is_nan()) || ((a - b).abs() <= 1e-9 * a.abs().max(b.abs()))
    }

    /// The value of the one sample whose line starts with `series` (name plus labels
    /// exactly as rendered), or panics listing what was there.
    pub fn value_of(text: &str, series: &str) -> f64 {
        for line in text.lines() {
            if let Some(v) = line
                .strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
            {
                return v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
            }
        }
        panic!("no sample {series} in:\n{text}");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The sections of `config/agent.toml`, the commented example.
    fn example_sections() -> Sections {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/agent.toml");
        let text = std::fs::read_to_string(&path).expect("config/agent.toml");
        let table: toml::Table = toml::from_str(&text).expect("toml");
        let mut sections = Sections::new();
        for (key, value) in &table {
            match (key.as_str(), value) {
                ("collectors", toml::Value::Table(collectors)) => {
                    for (name, value) in collectors {
                        if let toml::Value::Table(t) = value {
                            sections.insert(format!("collectors.{name}"), t.clone());
                        }
                    }
                }
                (_, toml::Value::Table(t)) => {
                    sections.insert(key.clone(), t.clone());
                }
                _ => {}
            }
        }
        sections
    }

    /// `config/agent.toml` spells out each collector's defaults.
    #[test]
    fn example_config_shows_each_collector_default() {
        let sections = example_sections();
        let roots = Roots::default();
        let ctx = BuildContext {
            roots: &roots,
            sections: &sections,
            node: "pi",
        };
        fn same<T: serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug>(
            ctx: &BuildContext<'_>,
            key: &str,
        ) {
            let parsed: T = ctx.section("test", key).expect(key);
            assert_eq!(parsed, T::default(), "[{key}] in config/agent.toml");
        }
        same::<textfile::TextfileConfig>(&ctx, "collectors.textfile");
        same::<filesystem::FilesystemConfig>(&ctx, "collectors.filesystem");
        same::<netdev::NetdevConfig>(&ctx, "collectors.netdev");
        same::<netclass::NetclassConfig>(&ctx, "collectors.netclass");
        same::<diskstats::DiskstatsConfig>(&ctx, "collectors.diskstats");
        same::<docker::DockerConfig>(&ctx, "docker");
        same::<intmax_builder::BuilderConfig>(&ctx, "builder");
        // Every section in the example belongs to a collector that reads it.
        for key in sections.keys().filter(|k| k.starts_with("collectors.")) {
            assert!(
                key == "collectors.schedule" || ALL.iter().any(|s| s.section == Some(key)),
                "[{key}] is no collector's section"
            );
        }
    }

    /// Names are unique, options belong to collectors with a section, and a section's
    /// error names the section and the key.
    #[test]
    fn registry_is_consistent() {
        let mut names: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "duplicate collector name");
        for spec in ALL.iter().filter(|s| !s.options.is_empty()) {
            assert!(
                spec.section.is_some(),
                "{} has options but no section",
                spec.name
            );
        }
        let mut sections = Sections::new();
        let mut bad = toml::Table::new();
        bad.insert("device_exclud".into(), toml::Value::String("x".into()));
        sections.insert("collectors.diskstats".into(), bad);
        let roots = Roots::default();
        let ctx = BuildContext {
            roots: &roots,
            sections: &sections,
            node: "pi",
        };
        let err = build(spec("diskstats").expect("spec"), &ctx)
            .err()
            .expect("unknown key");
        let text = err.to_string();
        assert!(
            text.contains("[collectors.diskstats]") && text.contains("device_exclud"),
            "{text}"
        );
    }

    /// A configured textfile directory (file or flag) that is missing is an error; the
    /// default one is "no files".
    #[test]
    fn textfile_directory_set_in_its_section_is_explicit() {
        let roots = Roots::default();
        let mut sections = Sections::new();
        let mut table = toml::Table::new();
        table.insert(
            "directory".into(),
            toml::Value::String("/nonexistent-nodewatch-dir".into()),
        );
        sections.insert("collectors.textfile".into(), table);
        let ctx = BuildContext {
            roots: &roots,
            sections: &sections,
            node: "pi",
        };
        let collector = build(spec("textfile").expect("spec"), &ctx).expect("build");
        let text = test_support::collect_text(collector.as_ref());
        assert_eq!(
            test_support::value_of(&text, "node_textfile_scrape_error"),
            1.0
        );
        assert_eq!(collector.interval(), Some(Duration::from_secs(5)));
    }
}
