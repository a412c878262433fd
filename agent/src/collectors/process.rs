//! `process` (internal): the agent's own process figures under the Prometheus client
//! libraries' standard names, as node_exporter exports its own:
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_virtual_memory_max_bytes`,
//! `process_start_time_seconds`, `process_open_fds`, `process_max_fds`.
//!
//! Memory and CPU come from `sysinfo`, refreshing only our own PID; the descriptor
//! count and limits from `/proc/self/fd` and `/proc/self/limits` (the live procfs:
//! these describe this process, not the monitored host root).

use std::sync::Mutex;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;

/// What `/proc/self/limits` says, as the Go client reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Soft limit of open files; `u64::MAX` when unlimited.
    pub max_open_files: f64,
    /// Soft limit of the address space in bytes; `u64::MAX` when unlimited.
    pub max_address_space: f64,
}

/// Reports on the agent's own process.
#[derive(Debug)]
pub struct ProcessCollector {
    /// Kept between runs so sysinfo does not rebuild its state every time; created on
    /// first use because creating it can fail.
    system: Mutex<Option<System>>,
    pid: Pid,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self {
            system: Mutex::new(None),
            pid: Pid::from_u32(std::process::id()),
        }
    }
}

/// The agent's own process figures (`process_*`), always on.
pub const SPEC: CollectorSpec = CollectorSpec {
    internal: true,
    ..CollectorSpec::system("process", |_| Ok(Box::new(ProcessCollector::new())))
};

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let (cpu_seconds, resident, virtual_size, start_time) = {
            let mut guard = self
                .system
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let system = match &mut *guard {
                Some(system) => system,
                empty => empty.insert(
                    System::new().map_err(|e| CollectError::Other(format!("sysinfo: {e}")))?,
                ),
            };
            system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[self.pid]),
                true,
                ProcessRefreshKind::nothing().with_memory().with_cpu(),
            );
            let process = system.process(self.pid).ok_or_else(|| {
                CollectError::Other("sysinfo does not see the agent's own process".to_string())
            })?;
            (
                process.accumulated_cpu_time() as f64 / 1000.0,
                process.memory() as f64,
                process.virtual_memory() as f64,
                process.start_time() as f64,
            )
        };
        out.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            &[],
            cpu_seconds,
        );
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &[],
            resident,
        );
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &[],
            virtual_size,
        );
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &[],
            start_time,
        );

        let fd_dir = std::path::Path::new("/proc/self/fd");
        let open_fds = std::fs::read_dir(fd_dir)
            .map_err(|e| CollectError::io(fd_dir, e))?
            .count();
        out.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            open_fds as f64,
        );
        let limits_path = std::path::Path::new("/proc/self/limits");
        let limits = parse_limits(&crate::paths::read_file(limits_path)?, limits_path)?;
        out.gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            &[],
            limits.max_open_files,
        );
        out.gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            &[],
            limits.max_address_space,
        );
        Ok(())
    }
}

/// Parses `/proc/<pid>/limits` for the soft limits of open files and address space.
/// The columns are fixed-width, `Limit` padded to 26 characters then the soft limit.
pub fn parse_limits(text: &str, path: &std::path::Path) -> Result<Limits, CollectError> {
    let mut max_open_files = None;
    let mut max_address_space = None;
    for (index, line) in text.lines().enumerate() {
        let slot = if line.starts_with("Max open files") {
            &mut max_open_files
        } else if line.starts_with("Max address space") {
            &mut max_address_space
        } else {
            continue;
        };
        let soft = line
            .get(26..)
            .and_then(|rest| rest.split_whitespace().next());
        let value = match soft {
            Some("unlimited") => u64::MAX as f64,
            Some(number) => number
                .parse::<u64>()
                .ok()
                .map(|n| n as f64)
                .ok_or_else(|| {
                    CollectError::parse(
                        path,
                        Some(index + 1),
                        format!("expected a limit, found {number:?}"),
                    )
                })?,
            None => {
                return Err(CollectError::parse(path, Some(index + 1), "no soft limit"));
            }
        };
        *slot = Some(value);
    }
    match (max_open_files, max_address_space) {
        (Some(max_open_files), Some(max_address_space)) => Ok(Limits {
            max_open_files,
            max_address_space,
        }),
        _ => Err(CollectError::parse(
            path,
            None,
            "no \"Max open files\" or \"Max address space\" line",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::collectors::test_support::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max address space         unlimited            unlimited            bytes     
Max open files            20000                524288               files     
";

    #[test]
    fn parses_literal() {
        let limits = parse_limits(LIMITS, Path::new("limits")).expect("parse");
        assert_eq!(limits.max_open_files, 20000.0);
        // The Go client prints 1.8446744073709552e+19 for unlimited.
        assert_eq!(limits.max_address_space, 1.8446744073709552e19);
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/limits");
        let garbage = LIMITS.replace("20000", "lots!");
        let err = parse_limits(&garbage, path).expect_err("garbage");
        assert_eq!(
            err.to_string(),
            "cannot parse x/limits line 4: expected a limit, found \"lots!\""
        );
        let truncated: String = LIMITS.lines().take(3).collect::<Vec<_>>().join("\n");
        let err = parse_limits(&truncated, path).expect_err("truncated");
        assert!(err.to_string().contains("x/limits"), "{err}");
        let err = parse_limits("Max open files\n", path).expect_err("short line");
        assert!(err.to_string().contains("x/limits line 1"), "{err}");
    }

    #[test]
    fn reports_our_own_process() {
        // Live values: check the shape and plausibility, not exact figures.
        let collector = ProcessCollector::new();
        let text = collect_text(&collector);
        assert!(value_of(&text, "process_resident_memory_bytes") > 1e5);
        assert!(value_of(&text, "process_virtual_memory_bytes") > 1e5);
        assert!(value_of(&text, "process_open_fds") >= 3.0);
        assert!(value_of(&text, "process_max_fds") >= value_of(&text, "process_open_fds"));
        let start = value_of(&text, "process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(start > 1e9 && start <= now + 1.0, "{start}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(
            text.contains("# HELP process_resident_memory_bytes Resident memory size in bytes.\n")
        );
        // A second run reuses the sysinfo state and CPU time does not go backwards.
        let first = value_of(&text, "process_cpu_seconds_total");
        let again = collect_text(&collector);
        assert!(value_of(&again, "process_cpu_seconds_total") >= first);
    }
}
