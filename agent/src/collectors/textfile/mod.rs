//! `textfile`: families from the `*.prom` files of a directory (cron jobs' output, such
//! as the wiki's `intmax_builder.prom`), as node_exporter 1.5's textfile collector.
//!
//! Reads `--collector.textfile.directory` (a Go glob pattern is expanded as 1.5 does);
//! exports every family the files hold, `node_textfile_mtime_seconds{file}` for each file
//! read successfully (`file` = the cleaned full path) and the unlabelled
//! `node_textfile_scrape_error` (1 when anything was skipped).
//!
//! As in 1.5: only names ending in `.prom` (dotfiles included, not recursive), in byte
//! order; a file that does not parse, or that has client-side timestamps, is skipped
//! whole; a family without HELP gets "Metric read from <files>", listing every file
//! that has it; families of several files merge when HELP and type agree, otherwise
//! the later file's family is dropped, and so is a series seen before.
//!
//! Beyond 1.5, so that a bad file cannot hang or starve the Pi:
//! - a `*.prom` that is not a regular file (FIFO, socket, device, directory) is never
//!   opened: 1.5 hangs forever on a FIFO; here it is skipped as an error;
//! - a file over [`MAX_FILE_BYTES`] (16 MiB) is skipped as an error;
//! - a file that is not UTF-8 is skipped as an error naming its line;
//! - what 1.5 crashes on (label names starting with `__`, type `gauge_histogram`) is a
//!   parse error, and files cannot override this collector's own two families;
//! - dropped families and series set `node_textfile_scrape_error` (1.5 only logs them);
//! - a missing *default* directory is "no files"; a missing configured one is an error.
//!
//! Each problem is logged once, again only when it changes, and its end is logged.

mod glob;
pub mod parser;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricType, Quantile, Summary, Untyped,
};
use serde::Deserialize;

use self::parser::{FamilyType, Parsed, Value};
use super::{CollectError, Collector, CollectorOption, CollectorSpec};
use crate::metrics::MetricSink;

/// Largest textfile read, in bytes (16 MiB): a runaway cron job must not eat the Pi's
/// memory. Larger files are skipped as an error.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

const MTIME_NAME: &str = "node_textfile_mtime_seconds";
const MTIME_HELP: &str = "Unixtime mtime of textfiles successfully read.";
const ERROR_NAME: &str = "node_textfile_scrape_error";
const ERROR_HELP: &str = "1 if there was an error opening or reading a file, 0 otherwise";

/// Reads the textfile directory.
#[derive(Debug)]
pub struct TextfileCollector {
    directory: PathBuf,
    /// A missing directory is an error only when it was configured.
    explicit: bool,
    /// `collectors.textfile.interval_secs`.
    interval: Duration,
    /// Problems already logged, by what they are about (a file, a directory, a family
    /// in a file), with their message: logged again only when the message changes.
    logged: Mutex<HashMap<String, String>>,
}

/// A file read and parsed successfully.
#[derive(Debug)]
struct GoodFile {
    /// Cleaned full path, as the `file` label and the default HELP show it.
    path: String,
    mtime_seconds: f64,
    parsed: Parsed,
}

/// Something skipped in a run: `key` says what it is about, `message` what happened.
#[derive(Debug, Clone, PartialEq)]
struct Problem {
    key: String,
    message: String,
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
    /// Interval in seconds. Default 5.
    pub interval_secs: f64,
}

/// Debian's node_exporter textfile directory.
pub const DEFAULT_TEXTFILE_DIRECTORY: &str = "/var/lib/prometheus/node-exporter";

impl Default for TextfileConfig {
    fn default() -> Self {
        Self {
            directory: DEFAULT_TEXTFILE_DIRECTORY.into(),
            interval_secs: 5.0,
        }
    }
}

/// The `textfile` collector: `[collectors.textfile]`.
pub const SPEC: CollectorSpec = CollectorSpec {
    external: true,
    ..CollectorSpec::system("textfile", |ctx| {
        const SECTION: &str = "collectors.textfile";
        let config: TextfileConfig = ctx.section("textfile", SECTION)?;
        super::seconds(
            "textfile",
            "collectors.textfile.interval_secs",
            config.interval_secs,
        )?;
        let explicit = ctx.sets(SECTION, "directory");
        Ok(Box::new(TextfileCollector::new(&config, explicit)))
    })
    .with_section(
        "collectors.textfile",
        &[CollectorOption {
            flag: "directory",
            aliases: &[],
            key: "directory",
            value_name: "DIR",
            help: "Directory of `*.prom` files for the textfile collector.",
        }],
    )
};

/// A family as exported, merged from the files.
#[derive(Debug)]
struct Merged {
    help: String,
    kind: FamilyType,
    /// File that defined it first.
    origin: String,
    metrics: Vec<Metric>,
    /// Sorted label pairs of the series already exported.
    series: HashSet<Vec<(String, String)>>,
}

impl TextfileCollector {
    /// A collector for the configured directory; `explicit` when the directory was
    /// configured (file or flag), not a default.
    pub fn new(config: &TextfileConfig, explicit: bool) -> Self {
        Self {
            directory: config.directory.clone(),
            explicit,
            interval: Duration::from_secs_f64(config.interval_secs),
            logged: Mutex::new(HashMap::new()),
        }
    }

    /// Collects into `out` and returns the messages logged by this run (new problems
    /// and resolved ones), so tests can see what is logged when.
    fn run(&self, out: &mut MetricSink) -> Vec<String> {
        let mut problems = Vec::new();
        let files = self.read_files(&mut problems);
        let families = merge(&files, &mut problems);
        for (name, family) in families {
            let kind = match family.kind {
                FamilyType::Counter => MetricType::COUNTER,
                FamilyType::Gauge => MetricType::GAUGE,
                FamilyType::Summary => MetricType::SUMMARY,
                FamilyType::Untyped => MetricType::UNTYPED,
                FamilyType::Histogram => MetricType::HISTOGRAM,
            };
            for metric in family.metrics {
                out.push(&name, &family.help, kind, metric);
            }
        }
        for file in &files {
            out.gauge(
                MTIME_NAME,
                MTIME_HELP,
                &[("file", &file.path)],
                file.mtime_seconds,
            );
        }
        let failed = if problems.is_empty() { 0.0 } else { 1.0 };
        out.gauge(ERROR_NAME, ERROR_HELP, &[], failed);
        self.log_changes(&problems)
    }

    /// The directories to read: the glob's matches, or the directory itself.
    fn directories(&self) -> Vec<PathBuf> {
        if let Some(pattern) = self.directory.to_str()
            && let Ok(matches) = glob::glob(pattern)
            && !matches.is_empty()
        {
            return matches.into_iter().map(PathBuf::from).collect();
        }
        vec![self.directory.clone()]
    }

    fn read_files(&self, problems: &mut Vec<Problem>) -> Vec<GoodFile> {
        let mut files = Vec::new();
        if self.directory.as_os_str().is_empty() {
            return files; // An empty directory setting turns the collector off, as in Go.
        }
        for dir in self.directories() {
            let dir_problem = |e: &std::io::Error| Problem {
                key: dir.display().to_string(),
                message: format!("cannot read textfile directory {}: {e}", dir.display()),
            };
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.explicit => {
                    tracing::debug!(directory = %dir.display(), "No textfile directory.");
                    continue;
                }
                Err(e) => {
                    problems.push(dir_problem(&e));
                    continue;
                }
            };
            let mut names = Vec::new();
            for entry in entries {
                match entry {
                    Ok(entry) if entry.file_name().as_bytes().ends_with(b".prom") => {
                        names.push(entry.file_name());
                    }
                    Ok(_) => {}
                    Err(e) => problems.push(dir_problem(&e)),
                }
            }
            names.sort();
            for name in names {
                // Go opens and labels filepath.Join(dir, name), a lexically cleaned path.
                let (path, label) = match (dir.to_str(), name.to_str()) {
                    (Some(d), Some(n)) => {
                        let joined = glob::join(d, n);
                        (PathBuf::from(&joined), joined)
                    }
                    _ => {
                        let joined = dir.join(&name);
                        let label = joined.to_string_lossy().into_owned();
                        (joined, label)
                    }
                };
                match read_textfile(&path) {
                    Ok((parsed, mtime_seconds)) => files.push(GoodFile {
                        path: label,
                        mtime_seconds,
                        parsed,
                    }),
                    Err(e) => problems.push(Problem {
                        key: label,
                        message: e.to_string(),
                    }),
                }
            }
        }
        files
    }

    /// Logs problems that are new or changed, and those that went away.
    fn log_changes(&self, problems: &[Problem]) -> Vec<String> {
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lines = Vec::new();
        let mut now = HashMap::with_capacity(problems.len());
        for problem in problems {
            if logged.get(&problem.key) != Some(&problem.message) {
                tracing::error!(error = %problem.message, "Textfile data skipped.");
                lines.push(problem.message.clone());
            }
            now.insert(problem.key.clone(), problem.message.clone());
        }
        for key in logged.keys() {
            if !now.contains_key(key) {
                tracing::info!(source = %key, "Textfile problem resolved.");
                lines.push(format!("resolved: {key}"));
            }
        }
        *logged = now;
        lines
    }
}

impl Collector for TextfileCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        // Like node_exporter, problems with files are reported through
        // node_textfile_scrape_error, not as a failure of the collector.
        self.run(out);
        Ok(())
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }
}

/// Reads and parses one file: its families and its mtime in whole seconds.
fn read_textfile(path: &Path) -> Result<(Parsed, f64), CollectError> {
    let io_error = |source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Look before opening: opening a FIFO for reading blocks until a writer comes.
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    check_regular_and_size(path, &metadata)?;
    // Non-blocking, in case the file was replaced by a FIFO since: regular files ignore it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    check_regular_and_size(path, &metadata)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize + 1);
    (&file)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(path));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        CollectError::parse(path, Some(line), "not UTF-8 text")
    })?;
    let parsed =
        parser::parse(&text).map_err(|e| CollectError::parse(path, Some(e.line), e.message))?;
    if let Some(line) = parsed.first_timestamp_line {
        return Err(CollectError::parse(
            path,
            Some(line),
            "contains unsupported client-side timestamps, skipping entire file",
        ));
    }
    // Stat after parsing, as 1.5 does, so a failure never looks fresh.
    let metadata = file.metadata().map_err(io_error)?;
    // Go's UnixNano()/1e9 truncates toward zero.
    let mut seconds = metadata.mtime();
    if seconds < 0 && metadata.mtime_nsec() > 0 {
        seconds += 1;
    }
    Ok((parsed, seconds as f64))
}

fn check_regular_and_size(path: &Path, metadata: &std::fs::Metadata) -> Result<(), CollectError> {
    let kind = metadata.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(CollectError::Other(format!(
            "{} is {what}, not a regular file: skipped without reading it",
            path.display()
        )));
    }
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large(path));
    }
    Ok(())
}

fn too_large(path: &Path) -> CollectError {
    CollectError::Other(format!(
        "{} is larger than the {} MiB limit for a textfile: skipped",
        path.display(),
        MAX_FILE_BYTES >> 20
    ))
}

/// Merges the files' families as node_exporter 1.5's registry does when it gathers
/// them: the first file to export a name sets its HELP and type, a later family with
/// another HELP or type is dropped, and so is a series exported before.
fn merge(files: &[GoodFile], problems: &mut Vec<Problem>) -> Vec<(String, Merged)> {
    let mut files_by_family: HashMap<&str, Vec<&str>> = HashMap::new();
    for file in files {
        for family in &file.parsed.families {
            files_by_family
                .entry(family.name.as_str())
                .or_default()
                .push(file.path.as_str());
        }
    }
    let mut merged: Vec<(String, Merged)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for file in files {
        for family in &file.parsed.families {
            let name = family.name.as_str();
            let mut drop_family = |reason: String| {
                problems.push(Problem {
                    key: format!("{}: {name}", file.path),
                    message: format!("{}: family {name} dropped: {reason}", file.path),
                });
            };
            if name == MTIME_NAME || name == ERROR_NAME {
                drop_family("the textfile collector exports that name itself".into());
                continue;
            }
            let help = match &family.help {
                Some(help) => help.clone(),
                None => format!(
                    "Metric read from {}",
                    files_by_family
                        .get(name)
                        .map(|paths| paths.join(", "))
                        .unwrap_or_default()
                ),
            };
            let slot = match index.get(name) {
                Some(&i) => {
                    let existing = &merged[i].1;
                    if existing.help != help {
                        drop_family(format!(
                            "its HELP {help:?} differs from {:?} in {}",
                            existing.help, existing.origin
                        ));
                        continue;
                    }
                    if existing.kind != family.kind {
                        drop_family(format!(
                            "its type {} differs from {} in {}",
                            family.kind.as_str(),
                            existing.kind.as_str(),
                            existing.origin
                        ));
                        continue;
                    }
                    i
                }
                None => {
                    if let Some(other) = suffix_collision(name, family.kind, &index, &merged) {
                        drop_family(format!("its series would collide with family {other}"));
                        continue;
                    }
                    merged.push((
                        name.to_string(),
                        Merged {
                            help,
                            kind: family.kind,
                            origin: file.path.clone(),
                            metrics: Vec::with_capacity(family.metrics.len()),
                            series: HashSet::new(),
                        },
                    ));
                    index.insert(name.to_string(), merged.len() - 1);
                    merged.len() - 1
                }
            };
            let target = &mut merged[slot].1;
            // Every series of a family in a file gets all the label names used in it,
            // empty where it has none (node_exporter's convertMetricFamily).
            let label_names: BTreeSet<&str> = family
                .metrics
                .iter()
                .flat_map(|m| m.labels.iter().map(|(n, _)| n.as_str()))
                .collect();
            let mut duplicates = Vec::new();
            for metric in &family.metrics {
                let pairs: Vec<(String, String)> = label_names
                    .iter()
                    .map(|&label| {
                        let value = metric
                            .labels
                            .iter()
                            .find(|(n, _)| n == label)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        (label.to_string(), value)
                    })
                    .collect();
                if target.series.contains(&pairs) {
                    duplicates.push(metric.line);
                    continue;
                }
                target
                    .metrics
                    .push(to_proto(&pairs, family.kind, &metric.value));
                target.series.insert(pairs);
            }
            if let Some(first) = duplicates.first() {
                problems.push(Problem {
                    key: format!("{}: {name} duplicates", file.path),
                    message: format!(
                        "{}: {} series of {name} dropped (first on line {first}): the same series came before",
                        file.path,
                        duplicates.len()
                    ),
                });
            }
        }
    }
    merged
}

/// The family a new family's series would collide with, as client_golang's
/// `checkSuffixCollisions`: `x_sum`/`x_count` of a summary `x`, those and `x_bucket` of
/// a histogram `x`, in either order.
fn suffix_collision(
    name: &str,
    kind: FamilyType,
    index: &HashMap<String, usize>,
    merged: &[(String, Merged)],
) -> Option<String> {
    for suffix in ["_count", "_sum", "_bucket"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(&i) = index.get(base)
        {
            match merged[i].1.kind {
                FamilyType::Summary if suffix != "_bucket" => return Some(base.to_string()),
                FamilyType::Histogram => return Some(base.to_string()),
                _ => {}
            }
        }
    }
    let suffixes: &[&str] = match kind {
        FamilyType::Summary => &["_count", "_sum"],
        FamilyType::Histogram => &["_count", "_sum", "_bucket"],
        _ => &[],
    };
    suffixes
        .iter()
        .map(|suffix| format!("{name}{suffix}"))
        .find(|other| index.contains_key(other))
}

/// A metric of the data model; labels already sorted by name.
#[allow(deprecated)] // `set_untyped` is marked protobuf-specific, but it is the plain model's field.
fn to_proto(labels: &[(String, String)], kind: FamilyType, value: &Value) -> Metric {
    let mut metric = Metric::default();
    metric.set_label(
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.clone());
                pair.set_value(value.clone());
                pair
            })
            .collect(),
    );
    match value {
        Value::Simple(v) => match kind {
            FamilyType::Counter => {
                let mut counter = Counter::default();
                counter.set_value(*v);
                metric.set_counter(counter);
            }
            FamilyType::Gauge => {
                let mut gauge = Gauge::default();
                gauge.set_value(*v);
                metric.set_gauge(gauge);
            }
            _ => {
                let mut untyped = Untyped::default();
                untyped.set_value(*v);
                metric.set_untyped(untyped);
            }
        },
        Value::Summary {
            quantiles,
            sum,
            count,
        } => {
            let mut summary = Summary::default();
            summary.set_sample_sum(*sum);
            summary.set_sample_count(*count);
            summary.set_quantile(
                sorted_last_wins(quantiles)
                    .into_iter()
                    .map(|(q, v)| {
                        let mut quantile = Quantile::default();
                        quantile.set_quantile(q);
                        quantile.set_value(v);
                        quantile
                    })
                    .collect(),
            );
            metric.set_summary(summary);
        }
        Value::Histogram {
            buckets,
            sum,
            count,
        } => {
            let mut histogram = Histogram::default();
            histogram.set_sample_sum(*sum);
            histogram.set_sample_count(*count);
            histogram.set_bucket(
                sorted_last_wins(buckets)
                    .into_iter()
                    .map(|(bound, cumulative)| {
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(bound);
                        bucket.set_cumulative_count(cumulative);
                        bucket
                    })
                    .collect(),
            );
            metric.set_histogram(histogram);
        }
    }
    metric
}

/// Quantiles or buckets as Go's const summaries and histograms hold them: keyed by
/// bound (a later line with the same bound wins) and sorted by it.
fn sorted_last_wins<T: Copy>(entries: &[(f64, T)]) -> Vec<(f64, T)> {
    let mut sorted: Vec<(f64, T)> = Vec::with_capacity(entries.len());
    for &(bound, value) in entries {
        match sorted.iter_mut().find(|(b, _)| *b == bound) {
            Some(entry) => entry.1 = value,
            None => sorted.push((bound, value)),
        }
    }
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    sorted
}

#[cfg(test)]
mod tests;
