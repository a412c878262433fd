//! The collectors: one file per collector, named as node_exporter names it.
//!
//! A collector reads its files (through [`Roots`](crate::paths::Roots)) and writes
//! families into a [`MetricSink`]. It is plain blocking code: the
//! [scheduler](crate::scheduler) runs it on a blocking thread, on its own interval and
//! under its own timeout, so a slow or hung collector never holds a scrape.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
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

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The source does not exist on this machine (no PSI, no conntrack module, no
    /// hwmon). As in node_exporter, `success` is 0, but it is logged at debug level
    /// and does not make the agent's health degraded.
    #[error("no data: {0}")]
    NoData(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file did not have the expected shape.
    #[error("cannot parse {path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What was wrong.
        reason: String,
    },
    /// Anything else (a system call failed, ...).
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    /// An I/O error on `path`; ENOENT becomes [`CollectError::NoData`].
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            CollectError::NoData(format!("{} does not exist", path.display()))
        } else {
            CollectError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A parse error in `path`, at `line` (1-based) when known.
    pub fn parse(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }

    /// Whether this is "no data" rather than a failure.
    pub fn is_no_data(&self) -> bool {
        matches!(self, CollectError::NoData(_))
    }
}

/// A source of metrics, run on a blocking thread by the scheduler.
pub trait Collector: Send + Sync + 'static {
    /// Reads the source and writes its samples into `out`. On error, whatever was
    /// written is discarded.
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError>;
}

/// How often a kind of collector runs by default (design §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// System and Pi collectors: `collectors.interval_secs` (2 s).
    System,
    /// The textfile collector: `collectors.textfile.interval_secs` (5 s).
    Textfile,
    /// Collectors that render state kept current by a background task (Docker events,
    /// builder health checks): every [`WATCH_INTERVAL`], so a change reaches
    /// `/metrics` well within a second while a run costs microseconds.
    Watch,
}

/// Interval of [`Cadence::Watch`] collectors.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A collector known to the agent.
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
}

const fn system(name: &'static str) -> CollectorSpec {
    CollectorSpec {
        name,
        default_enabled: true,
        cadence: Cadence::System,
        internal: false,
        external: false,
        claims: &[],
    }
}

/// Every collector, in the order their samples appear in `/metrics`.
pub const ALL: &[CollectorSpec] = &[
    system("arp"),
    system("conntrack"),
    system("cpu"),
    system("cpufreq"),
    system("diskstats"),
    CollectorSpec {
        name: "docker",
        default_enabled: true,
        cadence: Cadence::Watch,
        internal: false,
        external: false,
        claims: &[],
    },
    system("entropy"),
    system("filefd"),
    system("filesystem"),
    system("hwmon"),
    CollectorSpec {
        name: "intmax_builder",
        default_enabled: true,
        cadence: Cadence::Watch,
        internal: false,
        external: false,
        claims: intmax_builder::FAMILIES,
    },
    system("loadavg"),
    system("meminfo"),
    system("netclass"),
    system("netdev"),
    system("netstat"),
    system("pi"),
    system("pressure"),
    system("sockstat"),
    system("softnet"),
    system("stat"),
    CollectorSpec {
        name: "textfile",
        default_enabled: true,
        cadence: Cadence::Textfile,
        internal: false,
        external: true,
        claims: &[],
    },
    system("thermal_zone"),
    system("time"),
    system("timex"),
    system("udp_queues"),
    system("uname"),
    system("vmstat"),
    CollectorSpec {
        name: "process",
        default_enabled: true,
        cadence: Cadence::System,
        internal: true,
        external: false,
        claims: &[],
    },
];

/// Looks a collector up by name.
pub fn spec(name: &str) -> Option<&'static CollectorSpec> {
    ALL.iter().find(|s| s.name == name)
}

/// Everything a collector may need when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext<'a> {
    /// The roots every path goes through.
    pub roots: &'a Roots,
    /// The whole (validated) configuration.
    pub config: &'a Config,
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
    let roots = ctx.roots.clone();
    Ok(match spec.name {
        "arp" => Box::new(arp::ArpCollector::new(roots)),
        "conntrack" => Box::new(conntrack::ConntrackCollector::new(roots)),
        "cpu" => Box::new(cpu::CpuCollector::new(roots)),
        "cpufreq" => Box::new(cpufreq::CpufreqCollector::new(roots)),
        "diskstats" => Box::new(diskstats::DiskstatsCollector::new(
            roots,
            &ctx.config.collectors.diskstats,
        )?),
        "docker" => Box::new(docker::DockerCollector::new(&ctx.config.docker)?),
        "entropy" => Box::new(entropy::EntropyCollector::new(roots)),
        "filefd" => Box::new(filefd::FilefdCollector::new(roots)),
        "filesystem" => Box::new(filesystem::FilesystemCollector::new(
            roots,
            &ctx.config.collectors.filesystem,
        )?),
        "hwmon" => Box::new(hwmon::HwmonCollector::new(roots)),
        "intmax_builder" => Box::new(intmax_builder::BuilderCollector::new(roots, ctx.config)?),
        "loadavg" => Box::new(loadavg::LoadavgCollector::new(roots)),
        "meminfo" => Box::new(meminfo::MeminfoCollector::new(roots)),
        "netclass" => Box::new(netclass::NetclassCollector::new(
            roots,
            &ctx.config.collectors.netclass,
        )?),
        "netdev" => Box::new(netdev::NetdevCollector::new(
            roots,
            &ctx.config.collectors.netdev,
        )?),
        "netstat" => Box::new(netstat::NetstatCollector::new(roots)),
        "pi" => Box::new(pi::PiCollector::new(roots)),
        "pressure" => Box::new(pressure::PressureCollector::new(roots)),
        "process" => Box::new(process::ProcessCollector::new()),
        "sockstat" => Box::new(sockstat::SockstatCollector::new(roots)),
        "softnet" => Box::new(softnet::SoftnetCollector::new(roots)),
        "stat" => Box::new(stat::StatCollector::new(roots)),
        "textfile" => Box::new(textfile::TextfileCollector::new(
            &ctx.config.collectors.textfile,
        )),
        "thermal_zone" => Box::new(thermal_zone::ThermalZoneCollector::new(roots)),
        "time" => Box::new(time::TimeCollector::new(roots)),
        "timex" => Box::new(timex::TimexCollector::new()),
        "udp_queues" => Box::new(udp_queues::UdpQueuesCollector::new(roots)),
        "uname" => Box::new(uname::UnameCollector::new()),
        "vmstat" => Box::new(vmstat::VmstatCollector::new(roots)),
        other => {
            return Err(BuildError {
                collector: spec.name,
                reason: format!("unknown collector {other:?}"),
            });
        }
    })
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

/// Default interval of a cadence.
pub fn default_interval(cadence: Cadence, config: &Config) -> Duration {
    match cadence {
        Cadence::System => Duration::from_secs_f64(config.collectors.interval_secs),
        Cadence::Textfile => Duration::from_secs_f64(config.collectors.textfile.interval_secs),
        Cadence::Watch => WATCH_INTERVAL,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for collector unit tests on the committed fixture trees.

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
