//! INTMAX builder collector: the wiki's `intmax_builder_*` families (design §2), each
//! labelled `{node}`, plus a restart counter and the builder's version.
//!
//! Sources:
//! - the container, from the shared Docker watch (events + reconcile, see
//!   [`docker::watch`](super::docker::watch)), matched by `builder.container_pattern`;
//! - the process, by scanning `<procfs>/[pid]/comm` and `cmdline` (through
//!   `--path.procfs`) on the collector's interval: the last match is checked first;
//!   while none runs, a scan happens every 10 s or when the Docker view changes (a
//!   container started), and reads only processes it has not read before, with a full
//!   scan every 30 s (a process may `exec` into the builder);
//! - the health endpoint, polled by a background task every
//!   `builder.health_interval_secs` under `builder.health_timeout_secs`;
//! - the data directory, walked off the runtime every `builder.data_dir_interval_secs`
//!   (existence every health interval), bounded by `builder.data_dir_max_entries`.
//!
//! The collector itself renders cached results, at once when the Docker view, a health
//! check or the data directory changes ([`Collector::changes`]), and never blocks on
//! Docker, the network or a large tree.
//!
//! `ready` is 1 when the builder's container is running and, wherever a health check
//! applies, the last check succeeded. It is 0 when Docker cannot be reached (the
//! container cannot be confirmed); it is absent only until the first answers arrive.

pub mod health;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use regex_lite::Regex;
use serde::Deserialize;

use super::docker::DockerConfig;
use super::docker::watch::{Connection, ContainerInfo, DockerView, DockerWatch};
use super::{BuildError, CollectError, Collector, compile_regex, seconds};
use super::{Cadence, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;
use health::{HealthResult, HttpUrl};

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

/// The `intmax_builder` collector: the `[builder]` section, and `[docker]` for the
/// engine's socket.
pub const SPEC: CollectorSpec = CollectorSpec {
    cadence: Cadence::Watch,
    claims: FAMILIES,
    ..CollectorSpec::system("intmax_builder", |ctx| {
        let builder: BuilderConfig = ctx.section("intmax_builder", "builder")?;
        let docker: DockerConfig = ctx.section("intmax_builder", "docker")?;
        Ok(Box::new(BuilderCollector::new(
            ctx.roots.clone(),
            ctx.node,
            &builder,
            &docker,
        )?))
    })
    .with_section("builder", &[])
};

/// Every family this collector may export; textfile families of these names are
/// dropped while it is enabled (the wiki's cron output), even those it leaves absent.
pub const FAMILIES: &[&str] = &[
    "intmax_builder_ready",
    "intmax_builder_container_running",
    "intmax_builder_process_running",
    "intmax_builder_health_ok",
    "intmax_builder_data_dir_exists",
    "intmax_builder_uptime_seconds",
    "intmax_builder_data_dir_bytes",
    "intmax_builder_last_scrape_timestamp",
    "intmax_builder_restart_count",
    "intmax_builder_container_starts_total",
    "intmax_builder_container_info",
    "intmax_builder_info",
];

/// Longest a "no builder process" stands without a scan while Docker shows no change.
const PROCESS_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Longest between full scans: a process that `exec`s into the builder keeps its PID,
/// which a scan of new PIDs only would skip.
const PROCESS_RESCAN_MAX: Duration = Duration::from_secs(30);

/// Which health URL applies.
#[derive(Debug, Clone)]
enum HealthTarget {
    /// `builder.health_url = ""`: no health check.
    Off,
    /// A configured URL, always checked.
    Fixed(HttpUrl),
    /// Unset: the standalone default, checked while a standalone builder container
    /// exists (not for a Swarm task, not without a container).
    Auto(HttpUrl),
}

/// What the background tasks found.
#[derive(Debug, Default)]
struct Cached {
    /// `None` until the first check; `Some(None)` when no check applies.
    health: Option<Option<HealthResult>>,
    /// `(exists, bytes)`; bytes `None` until the first walk finishes.
    data_dir: Option<(bool, Option<u64>)>,
}

/// The last process scan.
#[derive(Debug, Default)]
struct ProcessScan {
    /// When the last full scan ran.
    full_at: Option<Instant>,
    /// When the last scan ran, and the Docker view's version then.
    scanned: Option<(Instant, u64)>,
    /// PIDs read since the last full scan that did not match.
    not_builder: HashSet<u32>,
    pid: Option<u32>,
    error: Option<String>,
}

/// The builder collector.
#[derive(Debug)]
pub struct BuilderCollector {
    node: String,
    roots: Roots,
    watch: Arc<DockerWatch>,
    container: Regex,
    process: Regex,
    health: HealthTarget,
    health_interval: Duration,
    health_timeout: Duration,
    data_dir: Option<PathBuf>,
    data_dir_interval: Duration,
    data_dir_max_entries: u64,
    cached: Arc<Mutex<Cached>>,
    /// Ticks when `cached` changes.
    cached_changed: Arc<tokio::sync::watch::Sender<u64>>,
    scan: Mutex<ProcessScan>,
    started: Once,
}

impl BuilderCollector {
    /// A collector from the `[builder]` and `[docker]` sections, for the node `node`.
    pub fn new(
        roots: Roots,
        node: &str,
        b: &BuilderConfig,
        docker: &DockerConfig,
    ) -> Result<Self, BuildError> {
        let bad = |reason: String| BuildError {
            collector: "intmax_builder",
            reason,
        };
        let health = match b.health_url.as_deref() {
            Some("") => HealthTarget::Off,
            Some(url) => HealthTarget::Fixed(
                health::parse_http_url(url).map_err(|e| bad(format!("builder.health_url: {e}")))?,
            ),
            None => {
                HealthTarget::Auto(health::parse_http_url(DEFAULT_BUILDER_HEALTH_URL).map_err(bad)?)
            }
        };
        Ok(Self {
            node: node.to_string(),
            roots,
            watch: DockerWatch::shared(
                &docker.socket,
                seconds(
                    "intmax_builder",
                    "docker.reconcile_interval_secs",
                    docker.reconcile_interval_secs,
                )?,
            ),
            container: compile_regex(
                "intmax_builder",
                "builder.container_pattern",
                &b.container_pattern,
            )?,
            process: compile_regex(
                "intmax_builder",
                "builder.process_pattern",
                &b.process_pattern,
            )?,
            health,
            health_interval: seconds(
                "intmax_builder",
                "builder.health_interval_secs",
                b.health_interval_secs,
            )?,
            health_timeout: seconds(
                "intmax_builder",
                "builder.health_timeout_secs",
                b.health_timeout_secs,
            )?,
            data_dir: b.data_dir.clone(),
            data_dir_interval: seconds(
                "intmax_builder",
                "builder.data_dir_interval_secs",
                b.data_dir_interval_secs,
            )?,
            data_dir_max_entries: b.data_dir_max_entries,
            cached: Arc::new(Mutex::new(Cached::default())),
            cached_changed: Arc::new(tokio::sync::watch::Sender::new(0)),
            scan: Mutex::new(ProcessScan::default()),
            started: Once::new(),
        })
    }

    /// Starts the health and data-dir tasks on the current runtime, once.
    fn ensure_started(&self) {
        self.watch.ensure_started();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.started.call_once(|| {
            let cache = CacheWriter {
                cached: self.cached.clone(),
                changed: self.cached_changed.clone(),
            };
            handle.spawn(health_loop(
                self.health.clone(),
                self.health_interval,
                self.health_timeout,
                self.watch.clone(),
                self.container.clone(),
                cache.clone(),
            ));
            if let Some(dir) = &self.data_dir {
                handle.spawn(data_dir_loop(
                    dir.clone(),
                    self.health_interval,
                    self.data_dir_interval,
                    self.data_dir_max_entries,
                    cache,
                ));
            }
        });
    }

    /// Whether a builder process runs: the last match is checked first; while none
    /// runs, a scan happens every [`PROCESS_SCAN_INTERVAL`] or when the Docker view
    /// changed, a full one every [`PROCESS_RESCAN_MAX`].
    fn process_running(&self) -> Result<bool, CollectError> {
        let mut scan = self.scan.lock().unwrap_or_else(|e| e.into_inner());
        let procfs = &self.roots.procfs;
        if scan
            .pid
            .is_some_and(|pid| process_matches(procfs, pid, &self.process))
        {
            return Ok(true);
        }
        scan.pid = None;
        let full = scan.error.is_some()
            || scan
                .full_at
                .is_none_or(|at| at.elapsed() >= PROCESS_RESCAN_MAX);
        let docker = self.watch.version();
        let due = scan
            .scanned
            .is_none_or(|(at, version)| at.elapsed() >= PROCESS_SCAN_INTERVAL || version != docker);
        if !full && !due {
            return Ok(false);
        }
        scan.scanned = Some((Instant::now(), docker));
        if full {
            scan.full_at = Some(Instant::now());
            scan.not_builder.clear();
        }
        match find_process(procfs, &self.process, &mut scan.not_builder) {
            Ok(pid) => {
                scan.pid = pid;
                scan.error = None;
                Ok(pid.is_some())
            }
            Err(e) => {
                scan.error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

impl Collector for BuilderCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        self.ensure_started();
        let process_running = self.process_running()?;
        let (health, data_dir) = {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            (cached.health.clone(), cached.data_dir)
        };
        let inputs = Inputs {
            node: &self.node,
            process_running,
            health,
            data_dir_configured: self.data_dir.is_some(),
            data_dir,
            now: crate::metrics::unix_now(),
        };
        self.watch
            .with_view(|view| render(view, &self.container, &inputs, out));
        Ok(())
    }

    fn changes(&self) -> Vec<super::ChangeSignal> {
        vec![self.watch.changes(), self.cached_changed.subscribe()]
    }
}

/// Everything besides the Docker view that [`render`] needs.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The `node` label.
    pub node: &'a str,
    /// Whether a builder process runs.
    pub process_running: bool,
    /// `None` until the first check; `Some(None)` when no check applies.
    pub health: Option<Option<HealthResult>>,
    /// Whether `builder.data_dir` is set.
    pub data_dir_configured: bool,
    /// `(exists, bytes)` of the data dir.
    pub data_dir: Option<(bool, Option<u64>)>,
    /// Unix seconds now.
    pub now: f64,
}

/// The builder's container among all: a running one first, else the latest started.
pub fn builder_container<'v>(view: &'v DockerView, pattern: &Regex) -> Option<&'v ContainerInfo> {
    view.containers
        .values()
        .filter(|c| pattern.is_match(&c.name))
        .max_by(|a, b| {
            (a.running, a.started_at.unwrap_or(0.0))
                .partial_cmp(&(b.running, b.started_at.unwrap_or(0.0)))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// Writes the builder families.
pub fn render(view: &DockerView, pattern: &Regex, inputs: &Inputs<'_>, out: &mut MetricSink) {
    let node = [("node", inputs.node)];
    let bool_value = |b: bool| if b { 1.0 } else { 0.0 };
    // Container: known when connected, unknown (absent) otherwise.
    let container_running = match &view.connection {
        Connection::Connected { .. } => {
            let container = builder_container(view, pattern);
            let running = container.is_some_and(|c| c.running);
            out.gauge(
                "intmax_builder_container_running",
                "Whether the builder's container is running (1) or not (0).",
                &node,
                bool_value(running),
            );
            let uptime = container
                .filter(|c| c.running)
                .and_then(|c| c.started_at)
                .map(|t| (inputs.now - t).max(0.0))
                .unwrap_or(0.0);
            out.gauge(
                "intmax_builder_uptime_seconds",
                "Seconds since the builder's container started (0 while it is not running).",
                &node,
                uptime,
            );
            if let Some(c) = container {
                out.gauge(
                    "intmax_builder_restart_count",
                    "Docker's RestartCount of the builder's container: restarts by its restart policy since it was created.",
                    &node,
                    c.restart_count as f64,
                );
                out.gauge(
                    "intmax_builder_container_info",
                    "A metric with a constant '1' value labeled by the builder container's name and image.",
                    &[("node", inputs.node), ("container", &c.name), ("image", &c.image)],
                    1.0,
                );
            }
            let starts: u64 = view
                .observed_starts
                .iter()
                .filter(|(name, _)| pattern.is_match(name))
                .map(|(_, n)| n)
                .sum();
            out.counter(
                "intmax_builder_container_starts_total",
                "Starts of the builder's container that the agent saw (Docker events: policy restarts, manual restarts, re-creations) since the agent started.",
                &node,
                starts as f64,
            );
            Some(running)
        }
        Connection::Down { .. } => Some(false),
        Connection::Connecting => None,
    };
    out.gauge(
        "intmax_builder_process_running",
        "Whether a builder process runs on this machine (1) or not (0).",
        &node,
        bool_value(inputs.process_running),
    );
    // Health: absent before the first check and where none applies.
    let health_ok = match &inputs.health {
        Some(Some(result)) => {
            out.gauge(
                "intmax_builder_health_ok",
                "Whether the builder's health endpoint answered 200 with a JSON object at the last check.",
                &node,
                bool_value(result.ok),
            );
            if let Some(version) = result.version.as_deref().filter(|_| result.ok) {
                out.gauge(
                    "intmax_builder_info",
                    "A metric with a constant '1' value labeled by the version the builder's health endpoint reports.",
                    &[("node", inputs.node), ("version", version)],
                    1.0,
                );
            }
            Some(result.ok)
        }
        Some(None) => Some(true),
        None => None,
    };
    if let (Some(running), Some(healthy)) = (container_running, health_ok) {
        out.gauge(
            "intmax_builder_ready",
            "Whether the builder is ready: its container runs and, where a health check applies, the last one succeeded.",
            &node,
            bool_value(running && healthy),
        );
    }
    if inputs.data_dir_configured
        && let Some((exists, bytes)) = inputs.data_dir
    {
        out.gauge(
            "intmax_builder_data_dir_exists",
            "Whether the builder's data directory exists.",
            &node,
            bool_value(exists),
        );
        if let Some(bytes) = bytes {
            out.gauge(
                "intmax_builder_data_dir_bytes",
                "Size of the builder's data directory: the sum of its regular files' sizes, measured every data_dir_interval_secs.",
                &node,
                bytes as f64,
            );
        }
    }
    out.gauge(
        "intmax_builder_last_scrape_timestamp",
        "When the builder was last checked, in unix seconds.",
        &node,
        inputs.now,
    );
}

/// Whether process `pid` under `procfs` matches `pattern` by `comm` or argv\[0\]'s
/// base name.
pub fn process_matches(procfs: &Path, pid: u32, pattern: &Regex) -> bool {
    let dir = procfs.join(pid.to_string());
    if let Ok(comm) = std::fs::read_to_string(dir.join("comm"))
        && pattern.is_match(comm.trim_end_matches('\n'))
    {
        return true;
    }
    // comm is cut at 15 bytes and may be renamed; argv[0] is what was run.
    std::fs::read(dir.join("cmdline")).is_ok_and(|cmdline| {
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or(&[]);
        let argv0 = String::from_utf8_lossy(argv0);
        let base = argv0.rsplit('/').next().unwrap_or("");
        !base.is_empty() && pattern.is_match(base)
    })
}

/// The first process under `procfs` that matches `pattern`, reading only the PIDs not
/// in `not_builder`, which is left holding the running PIDs that do not match.
pub fn find_process(
    procfs: &Path,
    pattern: &Regex,
    not_builder: &mut HashSet<u32>,
) -> Result<Option<u32>, CollectError> {
    let entries = std::fs::read_dir(procfs).map_err(|e| CollectError::io(procfs, e))?;
    let own = std::process::id();
    let mut running = HashSet::with_capacity(not_builder.len());
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != own && !not_builder.contains(&pid) && process_matches(procfs, pid, pattern) {
            return Ok(Some(pid));
        }
        running.insert(pid);
    }
    *not_builder = running;
    Ok(None)
}

/// Total size of the regular files under `dir` (symbolic links not followed, other
/// filesystems not entered), visiting at most `max_entries` entries. Returns the
/// bytes and whether the walk stopped at the bound.
pub fn dir_size(dir: &Path, max_entries: u64) -> std::io::Result<(u64, bool)> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::symlink_metadata(dir)?;
    let device = root.dev();
    let mut bytes = 0u64;
    let mut visited = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        // A directory that vanished or is unreadable mid-walk is skipped.
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > max_entries {
                return Ok((bytes, true));
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if meta.dev() == device {
                    stack.push(entry.path());
                }
            } else if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    Ok((bytes, false))
}

/// Where the background tasks put what they found, and the signal that it changed.
#[derive(Debug, Clone)]
struct CacheWriter {
    cached: Arc<Mutex<Cached>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

impl CacheWriter {
    /// Applies `f`; signals the collector when that changed anything.
    fn update(&self, f: impl FnOnce(&mut Cached)) {
        let changed = {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            let before = (cached.health.clone(), cached.data_dir);
            f(&mut cached);
            before != (cached.health.clone(), cached.data_dir)
        };
        if changed {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Waits for the next change of the Docker view (which may start or end a check).
async fn docker_changed(docker: &mut crate::collectors::ChangeSignal) {
    if docker.changed().await.is_err() {
        // The watch is gone (never while the collector lives): nothing will change.
        std::future::pending::<()>().await;
    }
}

async fn health_loop(
    target: HealthTarget,
    interval: Duration,
    timeout: Duration,
    watch: Arc<DockerWatch>,
    container: Regex,
    cache: CacheWriter,
) {
    let mut docker = watch.changes();
    let mut last_error: Option<String> = None;
    let mut last_check: Option<Instant> = None;
    loop {
        let url = match &target {
            HealthTarget::Off => None,
            HealthTarget::Fixed(url) => Some(url),
            HealthTarget::Auto(url) => {
                // The default URL is the standalone container's: checked while such a
                // container exists. A Swarm task's 8080 is not published, and with no
                // builder container (or no Docker) there is nothing to check. Until
                // Docker first answers, it is not known which case this is.
                let (known, standalone) = watch.with_view(|v| {
                    let known = !matches!(v.connection, Connection::Connecting);
                    let standalone = builder_container(v, &container)
                        .is_some_and(|c| c.swarm_service().is_none());
                    (known, standalone)
                });
                if !known {
                    docker_changed(&mut docker).await;
                    continue;
                }
                standalone.then_some(url)
            }
        };
        let Some(url) = url else {
            // No check applies: say so at once, and check as soon as one does.
            last_check = None;
            cache.update(|c| c.health = Some(None));
            docker_changed(&mut docker).await;
            continue;
        };
        if let Some(wait) = last_check.and_then(|t| interval.checked_sub(t.elapsed())) {
            // The Docker view may end the check (the container removed) before it is due.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = docker_changed(&mut docker) => {}
            }
            continue;
        }
        last_check = Some(Instant::now());
        let result = health::check(url, timeout).await;
        if result.error != last_error {
            match &result.error {
                Some(e) => tracing::warn!(
                    url = %format!("http://{}:{}{}", url.host, url.port, url.path),
                    error = e.as_str(),
                    "Builder health check failed."
                ),
                None if last_error.is_some() => {
                    tracing::info!("Builder health check succeeds again.")
                }
                None => {}
            }
            last_error.clone_from(&result.error);
        }
        cache.update(|c| c.health = Some(Some(result)));
    }
}

async fn data_dir_loop(
    dir: PathBuf,
    check_interval: Duration,
    walk_interval: Duration,
    max_entries: u64,
    cache: CacheWriter,
) {
    let mut ticker = tokio::time::interval(check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_walk: Option<Instant> = None;
    let mut logged_truncation = false;
    loop {
        ticker.tick().await;
        let walk_due = last_walk.is_none_or(|t| t.elapsed() >= walk_interval);
        let path = dir.clone();
        // Off the runtime: a stat can hang on a dead mount, a walk takes a while.
        let result = tokio::task::spawn_blocking(move || {
            let exists = path.is_dir();
            let size = if walk_due && exists {
                dir_size(&path, max_entries).ok()
            } else {
                None
            };
            (exists, size)
        })
        .await;
        let Ok((exists, size)) = result else { continue };
        if walk_due {
            last_walk = Some(Instant::now());
        }
        if let Some((_, true)) = size
            && !logged_truncation
        {
            tracing::warn!(
                dir = %dir.display(),
                max_entries,
                "Builder data directory has more entries than builder.data_dir_max_entries; its size is a lower bound."
            );
            logged_truncation = true;
        }
        cache.update(|cached| {
            let previous_bytes = cached.data_dir.and_then(|(_, b)| b);
            let bytes = match size {
                Some((bytes, _)) => Some(bytes),
                None if exists => previous_bytes,
                None => None,
            };
            cached.data_dir = Some((exists, bytes));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::value_of;
    use crate::collectors::{self, docker::watch::DockerView};
    use crate::snapshot::Snapshot;
    use std::collections::HashMap;

    fn pattern() -> Regex {
        Regex::new(DEFAULT_BUILDER_CONTAINER_PATTERN).expect("regex")
    }

    fn container(name: &str, running: bool, started: f64) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}-{started}"),
            name: name.into(),
            image: "intmax2/block-builder:latest".into(),
            state: if running { "running" } else { "exited" }.into(),
            running,
            health: None,
            restart_count: 2,
            started_at: Some(started),
            exit_code: 0,
            labels: HashMap::new(),
        }
    }

    fn connected(containers: Vec<ContainerInfo>) -> DockerView {
        DockerView {
            connection: Connection::Connected {
                api_version: "1.41".into(),
            },
            containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            services: None,
            observed_starts: HashMap::from([
                ("block-builder".to_string(), 3),
                ("other".to_string(), 7),
            ]),
        }
    }

    fn inputs(health: Option<Option<HealthResult>>) -> Inputs<'static> {
        Inputs {
            node: "pi-01",
            process_running: true,
            health,
            data_dir_configured: false,
            data_dir: None,
            now: 2000.0,
        }
    }

    fn ok_health() -> Option<Option<HealthResult>> {
        Some(Some(HealthResult {
            ok: true,
            version: Some("0.1.0".into()),
            error: None,
        }))
    }

    fn text(view: &DockerView, inputs: &Inputs<'_>) -> String {
        let mut sink = MetricSink::new();
        render(view, &pattern(), inputs, &mut sink);
        let mut body = Vec::new();
        nodewatch_http::encode_families(&sink.into_families(), &mut body).expect("encode");
        String::from_utf8(body).expect("utf8")
    }

    #[test]
    fn default_pattern_matches_standalone_and_swarm_tasks() {
        let p = pattern();
        assert!(p.is_match("block-builder"));
        assert!(p.is_match(
            "block-builder-stack-mainnet_block-builder-mainnet.1.x8k2m4n5p6q7r8s9t0u1v2w3"
        ));
        assert!(!p.is_match("block-builder-stack-mainnet_nginx-proxy-mainnet.1.abc"));
        assert!(!p.is_match("block-builder-old"));
    }

    #[test]
    fn running_and_healthy_is_ready() {
        let t = text(
            &connected(vec![
                container("block-builder", true, 1500.0),
                container("nginx", true, 1.0),
            ]),
            &inputs(ok_health()),
        );
        for (series, value) in [
            ("intmax_builder_ready{node=\"pi-01\"}", 1.0),
            ("intmax_builder_container_running{node=\"pi-01\"}", 1.0),
            ("intmax_builder_process_running{node=\"pi-01\"}", 1.0),
            ("intmax_builder_health_ok{node=\"pi-01\"}", 1.0),
            ("intmax_builder_uptime_seconds{node=\"pi-01\"}", 500.0),
            ("intmax_builder_restart_count{node=\"pi-01\"}", 2.0),
            ("intmax_builder_container_starts_total{node=\"pi-01\"}", 3.0),
            ("intmax_builder_info{node=\"pi-01\",version=\"0.1.0\"}", 1.0),
            (
                "intmax_builder_last_scrape_timestamp{node=\"pi-01\"}",
                2000.0,
            ),
        ] {
            assert_eq!(value_of(&t, series), value, "{series}");
        }
        assert!(!t.contains("data_dir"), "absent until configured: {t}");
    }

    #[test]
    fn health_failing_or_container_stopped_is_not_ready() {
        let failed = Some(Some(HealthResult {
            ok: false,
            version: None,
            error: Some("HTTP status 500".into()),
        }));
        let t = text(
            &connected(vec![container("block-builder", true, 1500.0)]),
            &inputs(failed),
        );
        assert_eq!(value_of(&t, "intmax_builder_ready{node=\"pi-01\"}"), 0.0);
        assert_eq!(
            value_of(&t, "intmax_builder_health_ok{node=\"pi-01\"}"),
            0.0
        );
        assert!(!t.contains("intmax_builder_info"));

        // An old exited container and the new running one: the running one counts.
        let t = text(
            &connected(vec![
                container("block-builder", false, 1900.0),
                container("block-builder", true, 1000.0),
            ]),
            &inputs(ok_health()),
        );
        assert_eq!(value_of(&t, "intmax_builder_ready{node=\"pi-01\"}"), 1.0);
        assert_eq!(
            value_of(&t, "intmax_builder_uptime_seconds{node=\"pi-01\"}"),
            1000.0
        );

        let t = text(
            &connected(vec![container("block-builder", false, 1500.0)]),
            &inputs(ok_health()),
        );
        assert_eq!(value_of(&t, "intmax_builder_ready{node=\"pi-01\"}"), 0.0);
        assert_eq!(
            value_of(&t, "intmax_builder_uptime_seconds{node=\"pi-01\"}"),
            0.0
        );
    }

    #[test]
    fn without_health_check_ready_is_container_running() {
        let t = text(
            &connected(vec![container("block-builder", true, 1500.0)]),
            &inputs(Some(None)),
        );
        assert_eq!(value_of(&t, "intmax_builder_ready{node=\"pi-01\"}"), 1.0);
        assert!(!t.contains("intmax_builder_health_ok"));
    }

    #[test]
    fn docker_unreachable_gives_not_ready_and_no_container_families() {
        let mut view = connected(vec![]);
        view.connection = Connection::Down {
            message: "x".into(),
            socket_absent: true,
        };
        let t = text(&view, &inputs(ok_health()));
        assert_eq!(value_of(&t, "intmax_builder_ready{node=\"pi-01\"}"), 0.0);
        assert!(!t.contains("intmax_builder_container_running"));
        assert!(!t.contains("intmax_builder_uptime_seconds"));
        view.connection = Connection::Connecting;
        let t = text(&view, &inputs(ok_health()));
        assert!(!t.contains("intmax_builder_ready"), "unknown yet: {t}");
    }

    #[test]
    fn data_dir_families() {
        let mut i = inputs(ok_health());
        i.data_dir_configured = true;
        i.data_dir = Some((true, Some(12345)));
        let t = text(&connected(vec![]), &i);
        assert_eq!(
            value_of(&t, "intmax_builder_data_dir_exists{node=\"pi-01\"}"),
            1.0
        );
        assert_eq!(
            value_of(&t, "intmax_builder_data_dir_bytes{node=\"pi-01\"}"),
            12345.0
        );
        i.data_dir = Some((false, None));
        let t = text(&connected(vec![]), &i);
        assert_eq!(
            value_of(&t, "intmax_builder_data_dir_exists{node=\"pi-01\"}"),
            0.0
        );
        assert!(!t.contains("intmax_builder_data_dir_bytes"));
    }

    #[test]
    fn dir_size_sums_regular_files_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("db/sub")).expect("mkdir");
        std::fs::write(root.join("a"), vec![0u8; 1000]).expect("write");
        std::fs::write(root.join("db/b"), vec![0u8; 2345]).expect("write");
        std::fs::write(root.join("db/sub/c"), vec![0u8; 7]).expect("write");
        std::os::unix::fs::symlink("/usr", root.join("link")).expect("symlink");
        assert_eq!(dir_size(root, 1000).expect("size"), (3352, false));
        let (_, truncated) = dir_size(root, 2).expect("size");
        assert!(truncated);
        assert!(dir_size(&root.join("missing"), 10).is_err());
    }

    #[test]
    fn process_scan_reads_procfs_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = dir.path();
        for (pid, comm, cmdline) in [
            ("1", "systemd\n", &b"/sbin/init\0"[..]),
            (
                "42",
                "tokio-runtime-w\n",
                &b"/usr/local/bin/block-builder\0--port\08080\0"[..],
            ),
            ("43", "grep\n", &b"grep\0block-builder\0"[..]),
        ] {
            std::fs::create_dir(proc.join(pid)).expect("mkdir");
            std::fs::write(proc.join(pid).join("comm"), comm).expect("comm");
            std::fs::write(proc.join(pid).join("cmdline"), cmdline).expect("cmdline");
        }
        std::fs::write(proc.join("uptime"), "1 2\n").expect("uptime");
        let re = Regex::new(DEFAULT_BUILDER_PROCESS_PATTERN).expect("regex");
        assert_eq!(
            find_process(proc, &re, &mut HashSet::new()).expect("scan"),
            Some(42)
        );
        assert!(!process_matches(proc, 43, &re), "argv[1] does not count");
        std::fs::remove_dir_all(proc.join("42")).expect("rm");
        let mut not_builder = HashSet::new();
        assert_eq!(
            find_process(proc, &re, &mut not_builder).expect("scan"),
            None
        );
        assert_eq!(not_builder, HashSet::from([1, 43]), "what was read");
        // A new process is read; one already read is not (until a full scan).
        std::fs::write(proc.join("1").join("comm"), "block-builder\n").expect("exec");
        std::fs::create_dir(proc.join("50")).expect("mkdir");
        std::fs::write(proc.join("50").join("comm"), "intmax-builder\n").expect("comm");
        assert_eq!(
            find_process(proc, &re, &mut not_builder).expect("scan"),
            Some(50)
        );
        std::fs::remove_dir_all(proc.join("50")).expect("rm");
        assert_eq!(
            find_process(proc, &re, &mut not_builder).expect("scan"),
            None,
            "PID 1 was read before"
        );
        assert_eq!(
            find_process(proc, &re, &mut HashSet::new()).expect("scan"),
            Some(1),
            "a full scan reads it again"
        );
        let err =
            find_process(&proc.join("missing"), &re, &mut HashSet::new()).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn collector_on_fixture_procfs_without_docker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let docker = DockerConfig {
            socket: dir.path().join("absent.sock"),
            ..DockerConfig::default()
        };
        let builder = BuilderConfig {
            health_url: Some(String::new()),
            ..BuilderConfig::default()
        };
        let roots = crate::collectors::test_support::fixture_roots("linux");
        let collector = BuilderCollector::new(roots, "pi-01", &builder, &docker).expect("new");
        // Without a runtime nothing starts: the Docker view is "connecting".
        let t = crate::collectors::test_support::collect_text(&collector);
        assert!(
            t.contains("intmax_builder_process_running{node=\"pi-01\"}"),
            "{t}"
        );
        assert!(!t.contains("intmax_builder_ready"), "{t}");
    }

    #[test]
    fn bad_config_is_a_build_error() {
        let docker = DockerConfig::default();
        let builder = BuilderConfig {
            health_url: Some("https://127.0.0.1:8080/health-check".into()),
            ..BuilderConfig::default()
        };
        let err =
            BuilderCollector::new(Roots::default(), "pi", &builder, &docker).expect_err("https");
        assert!(err.to_string().contains("builder.health_url"), "{err}");
        let builder = BuilderConfig {
            process_pattern: "(".into(),
            ..BuilderConfig::default()
        };
        let err =
            BuilderCollector::new(Roots::default(), "pi", &builder, &docker).expect_err("regex");
        assert!(err.to_string().contains("builder.process_pattern"), "{err}");
    }

    /// The wiki's cron output in the textfile directory loses against this collector,
    /// including families it leaves absent (data dir unset) and before its first run.
    #[test]
    fn textfile_builder_families_are_dropped() {
        use prometheus::proto::{Gauge, Metric, MetricFamily, MetricType};
        let specs = vec![
            (collectors::spec("intmax_builder").expect("spec"), WATCH),
            (collectors::spec("textfile").expect("spec"), WATCH),
        ];
        let snapshot = Snapshot::new(specs);
        let family = |name: &str| {
            let mut f = MetricFamily::default();
            f.set_name(name.into());
            f.set_help("x".into());
            f.set_field_type(MetricType::GAUGE);
            let mut m = Metric::default();
            m.set_gauge(Gauge::default());
            f.mut_metric().push(m);
            f
        };
        let dropped = snapshot.store_success(
            1,
            vec![
                family("intmax_builder_data_dir_bytes"),
                family("intmax_builder_ready"),
                family("intmax_wallet_eth"),
            ],
            Duration::ZERO,
        );
        assert_eq!(
            dropped,
            ["intmax_builder_data_dir_bytes", "intmax_builder_ready"]
        );
    }

    const WATCH: Duration = Duration::from_secs(2);
}
