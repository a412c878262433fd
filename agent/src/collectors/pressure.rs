//! `pressure`: pressure stall information from `/proc/pressure/{cpu,io,memory}`.
//!
//! Exports `node_pressure_cpu_waiting_seconds_total` (cpu `some`),
//! `node_pressure_io_waiting_seconds_total`, `node_pressure_io_stalled_seconds_total`
//! (io `some`, `full`), `node_pressure_memory_waiting_seconds_total`,
//! `node_pressure_memory_stalled_seconds_total` (memory `some`, `full`). node_exporter
//! 1.5 ignores the cpu `full` line newer kernels write. Without PSI (kernel < 4.20 or
//! `CONFIG_PSI` off) the files are missing: no data, as in 1.5.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// The `total=` fields of one resource's pressure file, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PressureTotals {
    /// Time some tasks were stalled.
    pub some: u64,
    /// Time all non-idle tasks were stalled; `None` where the file has no `full` line.
    pub full: Option<u64>,
}

/// Reads `/proc/pressure/*`.
#[derive(Debug)]
pub struct PressureCollector {
    roots: Roots,
}

impl PressureCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `pressure` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("pressure", |ctx| {
    Ok(Box::new(PressureCollector::new(ctx.roots.clone())))
});

impl Collector for PressureCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let read = |resource: &str| {
            let path = self.roots.proc(Path::new("pressure").join(resource));
            let totals = parse_pressure(&read_file(&path)?, &path)?;
            Ok::<_, CollectError>((totals, path))
        };

        let (cpu, _) = read("cpu")?;
        out.counter(
            "node_pressure_cpu_waiting_seconds_total",
            "Total time in seconds that processes have waited for CPU time",
            &[],
            seconds(cpu.some),
        );

        let (io, path) = read("io")?;
        out.counter(
            "node_pressure_io_waiting_seconds_total",
            "Total time in seconds that processes have waited due to IO congestion",
            &[],
            seconds(io.some),
        );
        out.counter(
            "node_pressure_io_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IO congestion",
            &[],
            seconds(required_full(io, &path)?),
        );

        let (memory, path) = read("memory")?;
        out.counter(
            "node_pressure_memory_waiting_seconds_total",
            "Total time in seconds that processes have waited for memory",
            &[],
            seconds(memory.some),
        );
        out.counter(
            "node_pressure_memory_stalled_seconds_total",
            "Total time in seconds no process could make progress due to memory congestion",
            &[],
            seconds(required_full(memory, &path)?),
        );
        Ok(())
    }
}

/// Microseconds to seconds, dividing twice as node_exporter does so the float is
/// identical (`3863138` → `3.8631379999999997`).
fn seconds(micros: u64) -> f64 {
    micros as f64 / 1000.0 / 1000.0
}

fn required_full(totals: PressureTotals, path: &Path) -> Result<u64, CollectError> {
    totals
        .full
        .ok_or_else(|| CollectError::parse(path, None, "no \"full\" line"))
}

/// Parses a pressure file:
/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=12345` and an optional `full` line.
/// Lines of other kinds are ignored, as procfs does, for kernels to come.
pub fn parse_pressure(text: &str, path: &Path) -> Result<PressureTotals, CollectError> {
    let mut some = None;
    let mut full = None;
    for (index, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        let slot = match parts.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        *slot = Some(
            parse_pressure_line(parts)
                .map_err(|reason| CollectError::parse(path, Some(index + 1), reason))?,
        );
    }
    let some = some.ok_or_else(|| CollectError::parse(path, None, "no \"some\" line"))?;
    Ok(PressureTotals { some, full })
}

/// Checks `avg10=… avg60=… avg300=… total=…` and returns the total.
fn parse_pressure_line<'a>(mut parts: impl Iterator<Item = &'a str>) -> Result<u64, String> {
    for key in ["avg10=", "avg60=", "avg300="] {
        let part = parts.next().unwrap_or_default();
        part.strip_prefix(key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("expected {key}<number>, found {part:?}"))?;
    }
    let part = parts.next().unwrap_or_default();
    part.strip_prefix("total=")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("expected total=<microseconds>, found {part:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal() {
        let text = "some avg10=23.74 avg60=26.72 avg300=15.61 total=102118842\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=7\n";
        assert_eq!(
            parse_pressure(text, Path::new("cpu")).expect("parse"),
            PressureTotals {
                some: 102_118_842,
                full: Some(7)
            }
        );
        let some_only = parse_pressure(
            "some avg10=1.00 avg60=2.00 avg300=3.00 total=99\n",
            Path::new("cpu"),
        )
        .expect("parse");
        assert_eq!(some_only.full, None);
    }

    #[test]
    fn converts_like_node_exporter() {
        // Values node_exporter 1.5 printed for these totals.
        assert_eq!(seconds(3_863_138), 3.8631379999999997);
        assert_eq!(seconds(99), 9.900000000000001e-05);
        assert_eq!(seconds(102_118_842), 102.118842);
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/io");
        let err = parse_pressure(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0.00\n",
            path,
        )
        .expect_err("truncated");
        assert_eq!(
            err.to_string(),
            "cannot parse x/io line 2: expected avg300=<number>, found \"\""
        );
        let err = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=x\n", path)
            .expect_err("garbage");
        assert!(err.to_string().contains("x/io line 1"), "{err}");
        let err = parse_pressure("garbage\n", path).expect_err("no some");
        assert!(err.to_string().contains("x/io"), "{err}");
    }

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/pressure")).expect("mkdir");
        for (name, text) in files {
            std::fs::write(dir.path().join("proc/pressure").join(name), text).expect("write");
        }
        dir
    }

    #[test]
    fn exports_literal() {
        let line = |total| {
            format!(
                "some avg10=0.00 avg60=0.00 avg300=0.00 total={total}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            )
        };
        let dir = tree(&[
            ("cpu", "some avg10=1.00 avg60=2.00 avg300=3.00 total=99\n"),
            ("io", &line(3_863_138)),
            ("memory", &line(1_234_567)),
        ]);
        let text = collect_text(&PressureCollector::new(Roots::under(dir.path())));
        assert_eq!(
            value_of(&text, "node_pressure_cpu_waiting_seconds_total"),
            9.900000000000001e-05
        );
        assert_eq!(
            value_of(&text, "node_pressure_io_waiting_seconds_total"),
            3.8631379999999997
        );
        assert_eq!(
            value_of(&text, "node_pressure_io_stalled_seconds_total"),
            0.0
        );
        assert_eq!(
            value_of(&text, "node_pressure_memory_waiting_seconds_total"),
            1.234567
        );
        assert!(text.contains("# HELP node_pressure_cpu_waiting_seconds_total Total time in seconds that processes have waited for CPU time\n"));
        assert!(text.contains("# TYPE node_pressure_memory_stalled_seconds_total counter\n"));
    }

    #[test]
    fn io_without_full_line_is_an_error() {
        let some = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n";
        let dir = tree(&[("cpu", some), ("io", some), ("memory", some)]);
        let err = PressureCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("no full");
        assert!(!err.is_no_data());
        assert!(err.to_string().contains("pressure/io"), "{err}");
    }

    #[test]
    fn missing_psi_is_no_data() {
        let collector = PressureCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
        // Only some resources present is no data too.
        let dir = tree(&[("cpu", "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n")]);
        let err = PressureCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("missing io");
        assert!(err.is_no_data());
    }

    const FAMILIES: &[&str] = &[
        "node_pressure_cpu_waiting_seconds_total",
        "node_pressure_io_waiting_seconds_total",
        "node_pressure_io_stalled_seconds_total",
        "node_pressure_memory_waiting_seconds_total",
        "node_pressure_memory_stalled_seconds_total",
    ];

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&PressureCollector::new(fixture_roots("linux")));
        assert_same_as_node_exporter("linux", &text, FAMILIES);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&PressureCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }
}
