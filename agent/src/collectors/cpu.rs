//! `cpu`: per-CPU time and throttling.
//!
//! Reads `/proc/stat` (parsed by [`stat::parse_proc_stat`](super::stat::parse_proc_stat)),
//! `/sys/devices/system/cpu/cpu*/{topology,thermal_throttle}/` and, once at start,
//! `/sys/devices/system/cpu/isolated`. Exports `node_cpu_seconds_total{cpu,mode}`,
//! `node_cpu_guest_seconds_total{cpu,mode}`, `node_cpu_core_throttles_total{package,core}`
//! and `node_cpu_package_throttles_total{package}` (x86 only: where `thermal_throttle`
//! exists), `node_cpu_isolated{cpu}` (when CPUs are isolated). `node_cpu_info` and its
//! flag/bug families are off by default in node_exporter 1.5 and not exported.
//!
//! As node_exporter 1.5, the exported times never go backwards: a counter that drops is
//! held at its last value, unless idle drops by 3 s or more (a CPU was hot-plugged),
//! which resets that CPU; a change in the number of CPUs resets them all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::stat::{CpuTimes, parse_proc_stat};
use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file, read_u64};

/// Idle going back by this many seconds means the CPU was replaced (hotplug).
const JUMP_BACK_SECONDS: f64 = 3.0;

const SECONDS_HELP: &str = "Seconds the CPUs spent in each mode.";
const GUEST_HELP: &str = "Seconds the CPUs spent in guests (VMs) for each mode.";

/// CPUs listed in `/sys/devices/system/cpu/isolated`, read once: the list comes from
/// the `isolcpus` boot parameter and cannot change while the system runs.
#[derive(Debug)]
enum Isolated {
    Cpus(Vec<u16>),
    /// node_exporter 1.5 refuses to start on a malformed list; we fail the collector.
    Invalid {
        path: PathBuf,
        reason: String,
    },
}

/// Reads `/proc/stat` and the CPUs' sysfs attributes.
#[derive(Debug)]
pub struct CpuCollector {
    roots: Roots,
    isolated: Isolated,
    /// The times last exported, per CPU number, to keep counters monotonic.
    exported: Mutex<Vec<CpuTimes>>,
}

impl CpuCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        let path = roots.sys("devices/system/cpu/isolated");
        let isolated = match std::fs::read_to_string(&path) {
            Ok(text) => match parse_cpu_list(&text) {
                Ok(cpus) => Isolated::Cpus(cpus),
                Err(reason) => Isolated::Invalid { path, reason },
            },
            // Absent (old kernels) or unreadable: no isolated CPUs to report.
            Err(_) => Isolated::Cpus(Vec::new()),
        };
        Self {
            roots,
            isolated,
            exported: Mutex::new(Vec::new()),
        }
    }
}

/// The `cpu` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("cpu", |ctx| {
    Ok(Box::new(CpuCollector::new(ctx.roots.clone())))
});

impl Collector for CpuCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let isolated = match &self.isolated {
            Isolated::Cpus(cpus) => cpus,
            Isolated::Invalid { path, reason } => {
                return Err(CollectError::parse(path, Some(1), reason.clone()));
            }
        };
        let path = self.roots.proc("stat");
        let stat = parse_proc_stat(&read_file(&path)?, &path)?;
        {
            let mut exported = self
                .exported
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            update_monotonic(&mut exported, &stat.cpus);
            write_times(out, &exported);
        }
        for cpu in isolated {
            out.gauge(
                "node_cpu_isolated",
                "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.",
                &[("cpu", &cpu.to_string())],
                1.0,
            );
        }
        write_thermal_throttles(out, &self.roots.sys("devices/system/cpu"));
        Ok(())
    }
}

/// Folds freshly read times into the exported ones the way node_exporter 1.5 does.
pub fn update_monotonic(exported: &mut Vec<CpuTimes>, fresh: &[CpuTimes]) {
    if exported.len() != fresh.len() {
        exported.clear();
        exported.resize(fresh.len(), CpuTimes::default());
    }
    for (old, new) in exported.iter_mut().zip(fresh) {
        if old.idle - new.idle >= JUMP_BACK_SECONDS {
            *old = CpuTimes::default();
        }
        for (kept, fresh) in old.fields_mut().into_iter().zip(new.fields()) {
            if fresh >= *kept {
                *kept = fresh;
            }
        }
    }
}

fn write_times(out: &mut MetricSink, times: &[CpuTimes]) {
    for (number, t) in times.iter().enumerate() {
        let cpu = number.to_string();
        let modes = [
            ("user", t.user),
            ("nice", t.nice),
            ("system", t.system),
            ("idle", t.idle),
            ("iowait", t.iowait),
            ("irq", t.irq),
            ("softirq", t.softirq),
            ("steal", t.steal),
        ];
        for (mode, value) in modes {
            out.counter(
                "node_cpu_seconds_total",
                SECONDS_HELP,
                &[("cpu", &cpu), ("mode", mode)],
                value,
            );
        }
        // Guest time is also counted in user and nice; exported apart as node_exporter does.
        for (mode, value) in [("user", t.guest), ("nice", t.guest_nice)] {
            out.counter(
                "node_cpu_guest_seconds_total",
                GUEST_HELP,
                &[("cpu", &cpu), ("mode", mode)],
                value,
            );
        }
    }
}

/// Writes the thermal throttle counters of `cpu_dir` (`/sys/devices/system/cpu`):
/// per core and per package, each read from the first CPU (in name order) of that core
/// or package whose count is readable. CPUs missing topology are skipped, as in 1.5.
fn write_thermal_throttles(out: &mut MetricSink, cpu_dir: &Path) {
    let mut package_throttles: BTreeMap<u64, u64> = BTreeMap::new();
    let mut core_throttles: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for cpu in cpu_dirs(cpu_dir) {
        // Checked first so machines without it (ARM) skip the topology reads: the
        // output is the same, since nothing is exported without the counts.
        let throttle = cpu.join("thermal_throttle");
        if !throttle.is_dir() {
            continue;
        }
        let (Ok(package), Ok(core)) = (
            read_u64(&cpu.join("topology/physical_package_id")),
            read_u64(&cpu.join("topology/core_id")),
        ) else {
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) =
            core_throttles.entry((package, core))
            && let Ok(count) = read_u64(&throttle.join("core_throttle_count"))
        {
            slot.insert(count);
        }
        if let std::collections::btree_map::Entry::Vacant(slot) = package_throttles.entry(package)
            && let Ok(count) = read_u64(&throttle.join("package_throttle_count"))
        {
            slot.insert(count);
        }
    }
    for (package, count) in package_throttles {
        out.counter(
            "node_cpu_package_throttles_total",
            "Number of times this CPU package has been throttled.",
            &[("package", &package.to_string())],
            count as f64,
        );
    }
    for ((package, core), count) in core_throttles {
        out.counter(
            "node_cpu_core_throttles_total",
            "Number of times this CPU core has been throttled.",
            &[
                ("package", &package.to_string()),
                ("core", &core.to_string()),
            ],
            count as f64,
        );
    }
}

/// The `cpu[0-9]*` entries of `dir`, sorted by name as Go's `filepath.Glob` returns
/// them; none when the directory cannot be read (Glob ignores I/O errors).
pub fn cpu_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            name.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .collect();
    names.sort_unstable();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// Parses a kernel CPU list (`0-2,5`), as `/sys/devices/system/cpu/isolated` holds it.
/// The list is sorted and without duplicates, so each CPU is exported once.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u16>, String> {
    let number = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("expected a CPU number, found {s:?}"))
    };
    let mut cpus = Vec::new();
    for item in text.strip_suffix('\n').unwrap_or(text).split(',') {
        if item.is_empty() {
            continue;
        }
        match item.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    return Err(format!("empty CPU range {item:?}"));
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(number(item)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn times(user: f64, idle: f64) -> CpuTimes {
        CpuTimes {
            user,
            idle,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,5\n"), Ok(vec![0, 1, 2, 5]));
        assert_eq!(parse_cpu_list("\n"), Ok(vec![]));
        assert_eq!(parse_cpu_list(""), Ok(vec![]));
        assert_eq!(parse_cpu_list("3,1,3"), Ok(vec![1, 3]));
        assert!(parse_cpu_list("0-x").is_err());
        assert!(parse_cpu_list(" 1 , 2").is_err());
        assert!(parse_cpu_list("1-2-3").is_err());
        assert!(parse_cpu_list("5-1").is_err());
    }

    #[test]
    fn counters_never_go_backwards() {
        // The sequence node_exporter 1.5 was observed to export for these inputs.
        let mut exported = Vec::new();
        update_monotonic(&mut exported, &[times(5.0, 10.0), times(0.01, 0.01)]);
        assert_eq!(exported, [times(5.0, 10.0), times(0.01, 0.01)]);
        // user drops: held.
        update_monotonic(&mut exported, &[times(4.0, 11.0), times(0.01, 0.01)]);
        assert_eq!(exported, [times(5.0, 11.0), times(0.01, 0.01)]);
        // A CPU fewer: everything restarts from the fresh values.
        update_monotonic(&mut exported, &[times(4.5, 10.5)]);
        assert_eq!(exported, [times(4.5, 10.5)]);
        // idle back by 3.5 s: hotplug, that CPU restarts.
        update_monotonic(&mut exported, &[times(3.0, 7.0)]);
        assert_eq!(exported, [times(3.0, 7.0)]);
        // idle back by less than 3 s: held.
        update_monotonic(&mut exported, &[times(3.0, 6.0)]);
        assert_eq!(exported, [times(3.0, 7.0)]);
    }

    fn tree(stat: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        std::fs::write(dir.path().join("proc/stat"), stat).expect("write");
        dir
    }

    #[test]
    fn exports_times_throttles_and_isolated() {
        let dir = tree("cpu  1 2 3 4\ncpu0 13377 8065 2582 42223 406 0 39 61 5 3\ncpu1 1 2 3 4\n");
        let base = dir.path();
        for (cpu, package, core) in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1), (10, 1, 1)] {
            let d = format!("sys/devices/system/cpu/cpu{cpu}");
            write(
                base,
                &format!("{d}/topology/physical_package_id"),
                &format!("{package}\n"),
            );
            write(base, &format!("{d}/topology/core_id"), &format!("{core}\n"));
            write(
                base,
                &format!("{d}/thermal_throttle/core_throttle_count"),
                &format!("{}\n", cpu * 10 + 1),
            );
            write(
                base,
                &format!("{d}/thermal_throttle/package_throttle_count"),
                &format!("{}\n", cpu * 100 + 7),
            );
        }
        write(base, "sys/devices/system/cpu/isolated", "1,3\n");
        let text = collect_text(&CpuCollector::new(Roots::under(base)));
        assert_eq!(
            value_of(&text, r#"node_cpu_seconds_total{cpu="0",mode="user"}"#),
            133.77
        );
        assert_eq!(
            value_of(&text, r#"node_cpu_seconds_total{cpu="0",mode="softirq"}"#),
            0.39
        );
        assert_eq!(
            value_of(&text, r#"node_cpu_seconds_total{cpu="1",mode="idle"}"#),
            0.04
        );
        assert_eq!(
            value_of(
                &text,
                r#"node_cpu_guest_seconds_total{cpu="0",mode="nice"}"#
            ),
            0.03
        );
        assert_eq!(
            value_of(
                &text,
                r#"node_cpu_guest_seconds_total{cpu="0",mode="user"}"#
            ),
            0.05
        );
        // The first CPU in name order wins: cpu10 sorts before cpu2 and cpu3.
        assert_eq!(
            value_of(&text, r#"node_cpu_package_throttles_total{package="1"}"#),
            1007.0
        );
        assert_eq!(
            value_of(
                &text,
                r#"node_cpu_core_throttles_total{core="1",package="1"}"#
            ),
            101.0
        );
        assert_eq!(
            value_of(
                &text,
                r#"node_cpu_core_throttles_total{core="0",package="1"}"#
            ),
            21.0
        );
        assert_eq!(value_of(&text, r#"node_cpu_isolated{cpu="3"}"#), 1.0);
        assert!(
            text.contains("# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n")
        );
        assert!(text.contains("# TYPE node_cpu_core_throttles_total counter\n"));
        assert_eq!(text.matches("node_cpu_seconds_total{").count(), 16);
    }

    #[test]
    fn malformed_isolated_list_fails_naming_the_file() {
        let dir = tree("cpu0 1 2 3 4\n");
        write(dir.path(), "sys/devices/system/cpu/isolated", "0-x\n");
        let err = CpuCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("invalid");
        assert!(err.to_string().contains("isolated line 1"), "{err}");
    }

    #[test]
    fn bad_stat_names_file_and_line() {
        let dir = tree("cpu0 1 2 3 4\ncpu1 1 x\n");
        let err = CpuCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("garbage");
        let message = err.to_string();
        assert!(message.contains("proc/stat line 2"), "{message}");
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = CpuCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    /// Compares every family node_exporter's cpu collector wrote on the tree (neither
    /// tree has `thermal_throttle` or isolated CPUs), and checks we wrote no other.
    fn check_fixture(tree: &str) {
        let text = collect_text(&CpuCollector::new(fixture_roots(tree)));
        let families = ["node_cpu_guest_seconds_total", "node_cpu_seconds_total"];
        assert_same_as_node_exporter(tree, &text, &families);
        let ours: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(ours, families);
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        check_fixture("linux");
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        check_fixture("pi");
    }
}
