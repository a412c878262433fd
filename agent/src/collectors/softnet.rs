//! `softnet`: per-CPU packet processing counters from `/proc/net/softnet_stat`, as
//! node_exporter 1.5: `node_softnet_processed_total{cpu}`, `node_softnet_dropped_total{cpu}`
//! and `node_softnet_times_squeezed_total{cpu}` (1.5 exports only these three; the
//! `received_rps`, `flow_limit_count`, `cpu_collision` and `backlog_len` families came
//! later).
//!
//! The file has one line of hex columns per online CPU; node_exporter (prometheus/procfs
//! 0.8) requires at least 9 columns, parses the first three as 32-bit hex, and labels
//! each line with its 0-based position, not the CPU id some kernels print in column 13.
//! A missing file is a failure in node_exporter, and here.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Fewest columns node_exporter accepts on a line.
const MIN_COLUMNS: usize = 9;

/// Reads `/proc/net/softnet_stat`.
#[derive(Debug)]
pub struct SoftnetCollector {
    roots: Roots,
}

impl SoftnetCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `softnet` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("softnet", |ctx| {
    Ok(Box::new(SoftnetCollector::new(ctx.roots.clone())))
});

impl Collector for SoftnetCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("net/softnet_stat");
        let text = std::fs::read_to_string(&path).map_err(|source| CollectError::Io {
            path: path.clone(),
            source,
        })?;
        for (index, stat) in parse_softnet(&text, &path)?.iter().enumerate() {
            let cpu = index.to_string();
            let labels = [("cpu", cpu.as_str())];
            out.counter(
                "node_softnet_processed_total",
                "Number of processed packets",
                &labels,
                f64::from(stat.processed),
            );
            out.counter(
                "node_softnet_dropped_total",
                "Number of dropped packets",
                &labels,
                f64::from(stat.dropped),
            );
            out.counter(
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
                &labels,
                f64::from(stat.times_squeezed),
            );
        }
        Ok(())
    }
}

/// The counters node_exporter 1.5 keeps of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftnetStat {
    /// Column 1: packets processed.
    pub processed: u32,
    /// Column 2: packets dropped (backlog full).
    pub dropped: u32,
    /// Column 3: times `net_rx_action` ran out of budget or time.
    pub times_squeezed: u32,
}

/// Parses `/proc/net/softnet_stat`, one [`SoftnetStat`] per line.
pub fn parse_softnet(text: &str, path: &Path) -> Result<Vec<SoftnetStat>, CollectError> {
    let mut stats = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let bad = |reason: String| CollectError::parse(path, Some(index + 1), reason);
        let columns = line.split_whitespace().count();
        if columns < MIN_COLUMNS {
            return Err(bad(format!(
                "{columns} columns, expected at least {MIN_COLUMNS}"
            )));
        }
        let mut values = [0u32; 3];
        for (value, field) in values.iter_mut().zip(line.split_whitespace()) {
            *value = parse_hex_u32(field)
                .ok_or_else(|| bad(format!("expected a 32-bit hex number, found {field:?}")))?;
        }
        let [processed, dropped, times_squeezed] = values;
        stats.push(SoftnetStat {
            processed,
            dropped,
            times_squeezed,
        });
    }
    Ok(stats)
}

/// Go's `strconv.ParseUint(s, 16, 32)`: hex digits only, no sign or prefix.
fn parse_hex_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    /// Two CPUs, 13 columns (kernel 5.10+ prints the CPU id in column 13: here 0 and 2,
    /// as when CPU 1 is offline).
    const SOFTNET: &str = "\
00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
ffffffff 00000000 0000000a 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000000 00000000 00000002
";

    #[test]
    fn parses_literal() {
        let stats = parse_softnet(SOFTNET, Path::new("softnet_stat")).expect("parse");
        assert_eq!(
            stats,
            [
                SoftnetStat {
                    processed: 16,
                    dropped: 1,
                    times_squeezed: 2
                },
                SoftnetStat {
                    processed: u32::MAX,
                    dropped: 0,
                    times_squeezed: 10
                },
            ]
        );
    }

    #[test]
    fn labels_lines_by_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/net")).expect("mkdir");
        std::fs::write(dir.path().join("proc/net/softnet_stat"), SOFTNET).expect("write");
        let text = collect_text(&SoftnetCollector::new(Roots::under(dir.path())));
        assert_eq!(
            value_of(&text, "node_softnet_processed_total{cpu=\"1\"}"),
            4294967295.0
        );
        assert_eq!(
            value_of(&text, "node_softnet_dropped_total{cpu=\"0\"}"),
            1.0
        );
        assert_eq!(
            value_of(&text, "node_softnet_times_squeezed_total{cpu=\"1\"}"),
            10.0
        );
        assert!(!text.contains("cpu=\"2\""));
        assert!(text.contains("# HELP node_softnet_dropped_total Number of dropped packets\n"));
        assert!(text.contains("# TYPE node_softnet_processed_total counter\n"));
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let path = Path::new("x/softnet_stat");
        let err = parse_softnet("00000010 00000001 00000002 00000000 00000000\n", path)
            .expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/softnet_stat line 1: 5 columns, expected at least 9"
        );
        let line = "00000010 00000001 00000002 0 0 0 0 0 0\n";
        let err = parse_softnet(&format!("{line}{line}\n"), path).expect_err("blank line");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_softnet("100000000 1 2 0 0 0 0 0 0\n", path).expect_err("33 bits");
        assert!(err.to_string().contains("\"100000000\""), "{err}");
        let err = parse_softnet("+1 1 2 0 0 0 0 0 0\n", path).expect_err("sign");
        assert!(err.to_string().contains("line 1"), "{err}");
        // node_exporter parses only the first three columns.
        assert!(parse_softnet("1 1 2 0 0 0 0 0 zz\n", path).is_ok());
    }

    #[test]
    fn missing_file_is_an_error_as_in_node_exporter() {
        let collector = SoftnetCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(!err.is_no_data(), "{err}");
        assert!(err.to_string().contains("softnet_stat"), "{err}");
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        for tree in ["linux", "pi"] {
            let text = collect_text(&SoftnetCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name.starts_with("node_softnet_"),
            );
        }
    }
}
