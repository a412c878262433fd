//! `stat`: kernel and system statistics from `/proc/stat`: `node_boot_time_seconds`,
//! `node_context_switches_total`, `node_forks_total`, `node_intr_total`,
//! `node_procs_running`, `node_procs_blocked`.
//!
//! Also home of the `/proc/stat` parser the `cpu` collector shares. It follows
//! node_exporter 1.5 (procfs 0.8): the whole file is validated, so a malformed line
//! fails both collectors; absent lines count as 0; per-CPU lines are indexed by CPU
//! number, gaps filled with zeros. Written here rather than with `procfs::KernelStats`,
//! which has no interrupt total. The softirq family is off by default in 1.5, so it is
//! not exported.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// The kernel's `USER_HZ`: `/proc/stat` counts CPU time in 1/100 s on every Linux
/// architecture, whatever `CONFIG_HZ` is (node_exporter divides by 100 too).
pub const USER_HZ: f64 = 100.0;

/// Highest CPU number accepted in `/proc/stat`; CPUs are stored densely by number, so
/// this bounds what a garbage line can make us allocate.
const MAX_CPU_ID: usize = 1 << 16;

/// Time one CPU spent in each mode, in seconds (`cpuN` line of `/proc/stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// Normal processes in user mode (includes guest time).
    pub user: f64,
    /// Niced processes in user mode (includes guest nice time).
    pub nice: f64,
    /// Kernel mode.
    pub system: f64,
    /// Idle.
    pub idle: f64,
    /// Waiting for I/O.
    pub iowait: f64,
    /// Servicing interrupts.
    pub irq: f64,
    /// Servicing softirqs.
    pub softirq: f64,
    /// Stolen by the hypervisor.
    pub steal: f64,
    /// Running a guest.
    pub guest: f64,
    /// Running a niced guest.
    pub guest_nice: f64,
}

impl CpuTimes {
    /// The fields in `/proc/stat` column order.
    pub fn fields(&self) -> [f64; 10] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
            self.guest,
            self.guest_nice,
        ]
    }

    /// The fields in `/proc/stat` column order, to update in place.
    pub fn fields_mut(&mut self) -> [&mut f64; 10] {
        [
            &mut self.user,
            &mut self.nice,
            &mut self.system,
            &mut self.idle,
            &mut self.iowait,
            &mut self.irq,
            &mut self.softirq,
            &mut self.steal,
            &mut self.guest,
            &mut self.guest_nice,
        ]
    }
}

/// What node_exporter uses of `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcStat {
    /// Per-CPU times, indexed by CPU number; a CPU without a line (offline) is zero.
    pub cpus: Vec<CpuTimes>,
    /// `btime`: boot time, seconds since the epoch.
    pub boot_time: u64,
    /// `intr`: interrupts serviced since boot.
    pub interrupts: u64,
    /// `ctxt`: context switches since boot.
    pub context_switches: u64,
    /// `processes`: forks since boot.
    pub forks: u64,
    /// `procs_running`: runnable processes.
    pub procs_running: u64,
    /// `procs_blocked`: processes blocked on I/O.
    pub procs_blocked: u64,
}

/// Parses `/proc/stat`. `path` only names the file in errors.
pub fn parse_proc_stat(text: &str, path: &Path) -> Result<ProcStat, CollectError> {
    let mut stat = ProcStat::default();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let mut fields = line.split_ascii_whitespace();
        let (Some(key), Some(first)) = (fields.next(), fields.next()) else {
            // node_exporter skips lines without at least a key and a value.
            continue;
        };
        let uint = |text: &str| parse_u64(text, key, path, line_no);
        match key {
            "btime" => stat.boot_time = uint(first)?,
            "intr" => {
                stat.interrupts = uint(first)?;
                // The per-IRQ counts are not exported, but node_exporter rejects the
                // file when one is not a number.
                for count in fields {
                    uint(count)?;
                }
            }
            "ctxt" => stat.context_switches = uint(first)?,
            "processes" => stat.forks = uint(first)?,
            "procs_running" => stat.procs_running = uint(first)?,
            "procs_blocked" => stat.procs_blocked = uint(first)?,
            "softirq" => {
                // Not exported, but node_exporter requires the total and ten counts.
                let mut count = 0;
                for value in std::iter::once(first).chain(fields).take(11) {
                    uint(value)?;
                    count += 1;
                }
                if count < 11 {
                    return Err(CollectError::parse(
                        path,
                        Some(line_no),
                        format!("softirq: expected 11 counts, found {count}"),
                    ));
                }
            }
            _ if key.starts_with("cpu") => {
                let times = parse_cpu_times(std::iter::once(first).chain(fields), path, line_no)?;
                let id = &key[3..];
                if id.is_empty() {
                    // The "cpu" line sums all CPUs; node_exporter exports per CPU only.
                    continue;
                }
                let id: usize =
                    id.parse()
                        .ok()
                        .filter(|&id| id <= MAX_CPU_ID)
                        .ok_or_else(|| {
                            CollectError::parse(
                                path,
                                Some(line_no),
                                format!("bad CPU name {key:?}"),
                            )
                        })?;
                if stat.cpus.len() <= id {
                    stat.cpus.resize(id + 1, CpuTimes::default());
                }
                stat.cpus[id] = times;
            }
            _ => {}
        }
    }
    Ok(stat)
}

/// Parses up to ten jiffy counts of a `cpu` line into seconds; missing trailing
/// columns (older kernels) stay 0, extra ones are ignored.
fn parse_cpu_times<'a>(
    values: impl Iterator<Item = &'a str>,
    path: &Path,
    line_no: usize,
) -> Result<CpuTimes, CollectError> {
    let mut times = CpuTimes::default();
    for (slot, value) in times.fields_mut().into_iter().zip(values) {
        let jiffies: f64 = value.parse().map_err(|_| {
            CollectError::parse(
                path,
                Some(line_no),
                format!("expected a number of jiffies, found {value:?}"),
            )
        })?;
        *slot = jiffies / USER_HZ;
    }
    Ok(times)
}

fn parse_u64(text: &str, key: &str, path: &Path, line_no: usize) -> Result<u64, CollectError> {
    text.parse().map_err(|_| {
        CollectError::parse(
            path,
            Some(line_no),
            format!("{key}: expected an unsigned integer, found {text:?}"),
        )
    })
}

/// Reads `/proc/stat`.
#[derive(Debug)]
pub struct StatCollector {
    roots: Roots,
}

impl StatCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `stat` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("stat", |ctx| {
    Ok(Box::new(StatCollector::new(ctx.roots.clone())))
});

impl Collector for StatCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("stat");
        let stat = parse_proc_stat(&read_file(&path)?, &path)?;
        out.counter(
            "node_intr_total",
            "Total number of interrupts serviced.",
            &[],
            stat.interrupts as f64,
        );
        out.counter(
            "node_context_switches_total",
            "Total number of context switches.",
            &[],
            stat.context_switches as f64,
        );
        out.counter(
            "node_forks_total",
            "Total number of forks.",
            &[],
            stat.forks as f64,
        );
        out.gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            &[],
            stat.boot_time as f64,
        );
        out.gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
            &[],
            stat.procs_running as f64,
        );
        out.gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            &[],
            stat.procs_blocked as f64,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const STAT: &str = "\
cpu  26738 15480 5074 85367 630 0 130 117 0 0
cpu0 13377 8065 2582 42223 406 0 39 61 5 3
cpu2 1 2 3 4
intr 535983 0 12 0
ctxt 894897
btime 1795314306
processes 17618
procs_running 3
procs_blocked 1
softirq 1 2 3 4 5 6 7 8 9 10 11
";

    #[test]
    fn parses_literal() {
        let stat = parse_proc_stat(STAT, Path::new("stat")).expect("parse");
        assert_eq!(stat.boot_time, 1_795_314_306);
        assert_eq!(stat.interrupts, 535_983);
        assert_eq!(stat.context_switches, 894_897);
        assert_eq!(stat.forks, 17_618);
        assert_eq!(stat.procs_running, 3);
        assert_eq!(stat.procs_blocked, 1);
        // cpu1 has no line (offline): node_exporter 1.5 reports zeros for it.
        assert_eq!(stat.cpus.len(), 3);
        assert_eq!(stat.cpus[1], CpuTimes::default());
        assert_eq!(stat.cpus[0].user, 133.77);
        assert_eq!(stat.cpus[0].softirq, 0.39);
        assert_eq!(stat.cpus[0].guest_nice, 0.03);
        assert_eq!(stat.cpus[2].idle, 0.04);
        assert_eq!(stat.cpus[2].iowait, 0.0);
    }

    #[test]
    fn absent_lines_are_zero() {
        let stat = parse_proc_stat("cpu0 1 2 3 4\nintr\n\n", Path::new("stat")).expect("parse");
        assert_eq!(stat.interrupts, 0);
        assert_eq!(stat.boot_time, 0);
        assert_eq!(stat.cpus.len(), 1);
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/stat");
        let cases = [
            ("cpu0 1 x 3 4\n", "line 1"),
            ("cpu0 1 2\nctxt 1.5\n", "line 2"),
            ("btime -1\n", "line 1"),
            ("intr 5 0 zz\n", "line 1"),
            ("softirq 1 2\n", "line 1"),
            ("cpufoo 1 2\n", "line 1"),
            ("cpu99999999999 1\n", "line 1"),
        ];
        for (text, line) in cases {
            let err = parse_proc_stat(text, path).expect_err(text);
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("cannot parse x/stat {line}:")),
                "{text:?}: {message}"
            );
        }
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = StatCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    #[test]
    fn exports_literal_with_node_exporter_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("proc")).expect("mkdir");
        std::fs::write(dir.path().join("proc/stat"), STAT).expect("write");
        let text = collect_text(&StatCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_boot_time_seconds"), 1_795_314_306.0);
        assert_eq!(value_of(&text, "node_intr_total"), 535_983.0);
        assert_eq!(value_of(&text, "node_procs_blocked"), 1.0);
        assert!(text.contains("# TYPE node_forks_total counter\n"));
        assert!(
            text.contains("# HELP node_procs_running Number of processes in runnable state.\n")
        );
    }

    const FAMILIES: &[&str] = &[
        "node_boot_time_seconds",
        "node_context_switches_total",
        "node_forks_total",
        "node_intr_total",
        "node_procs_running",
        "node_procs_blocked",
    ];

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&StatCollector::new(fixture_roots("linux")));
        assert_same_as_node_exporter("linux", &text, FAMILIES);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&StatCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }
}
