//! `conntrack`: netfilter connection tracking, as node_exporter 1.5.
//!
//! `node_nf_conntrack_entries` and `node_nf_conntrack_entries_limit` from
//! `/proc/sys/net/netfilter/nf_conntrack_{count,max}`, and the `node_nf_conntrack_stat_*`
//! gauges (`found`, `invalid`, `ignore`, `insert`, `insert_failed`, `drop`,
//! `early_drop`, `search_restart`) summed over the per-CPU lines of
//! `/proc/net/stat/nf_conntrack`. Without the `nf_conntrack` module the sysctls do not
//! exist: no data, as node_exporter.
//!
//! One difference: when the sysctls exist but the stat file does not, node_exporter 1.5
//! exports the two entry gauges and reports the collector as failed (no data); we export
//! the same two gauges and report success, since our failed collectors export nothing
//! and the table fill level is what dashboards and alerts use.

use std::path::Path;

use super::netclass::parse_hex;
use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Columns of a line of `/proc/net/stat/nf_conntrack` (node_exporter requires exactly
/// this many).
const STAT_COLUMNS: usize = 17;

/// The stat families: column index, family name, HELP.
const STAT_FAMILIES: [(usize, &str, &str); 8] = [
    (
        2,
        "node_nf_conntrack_stat_found",
        "Number of searched entries which were successful.",
    ),
    (
        4,
        "node_nf_conntrack_stat_invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        5,
        "node_nf_conntrack_stat_ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (
        8,
        "node_nf_conntrack_stat_insert",
        "Number of entries inserted into the list.",
    ),
    (
        9,
        "node_nf_conntrack_stat_insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        10,
        "node_nf_conntrack_stat_drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        11,
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        16,
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Reads the conntrack sysctls and statistics.
#[derive(Debug)]
pub struct ConntrackCollector {
    roots: Roots,
}

impl ConntrackCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `conntrack` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("conntrack", |ctx| {
    Ok(Box::new(ConntrackCollector::new(ctx.roots.clone())))
});

impl Collector for ConntrackCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let count = read_sysctl(&self.roots.proc("sys/net/netfilter/nf_conntrack_count"))?;
        let max = read_sysctl(&self.roots.proc("sys/net/netfilter/nf_conntrack_max"))?;
        out.gauge(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            &[],
            count as f64,
        );
        out.gauge(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            &[],
            max as f64,
        );
        let stat_path = self.roots.proc("net/stat/nf_conntrack");
        let text = match std::fs::read_to_string(&stat_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(CollectError::Io {
                    path: stat_path,
                    source,
                });
            }
        };
        let sums = parse_conntrack_stat(&text, &stat_path)?;
        for (column, name, help) in STAT_FAMILIES {
            out.gauge(name, help, &[], sums[column] as f64);
        }
        Ok(())
    }
}

/// Reads a sysctl holding one unsigned decimal; missing is no data (module not loaded).
fn read_sysctl(path: &Path) -> Result<u64, CollectError> {
    crate::paths::read_u64(path)
}

/// Parses `/proc/net/stat/nf_conntrack` (a header, then one line of 17 hex columns per
/// CPU) and returns each column summed over the CPUs, wrapping as Go's uint64 sums.
pub fn parse_conntrack_stat(text: &str, path: &Path) -> Result<[u64; STAT_COLUMNS], CollectError> {
    let mut sums = [0u64; STAT_COLUMNS];
    for (index, line) in text.lines().enumerate().skip(1) {
        let bad = |reason: String| CollectError::parse(path, Some(index + 1), reason);
        let columns = line.split_whitespace().count();
        if columns != STAT_COLUMNS {
            return Err(bad(format!("{columns} columns, expected {STAT_COLUMNS}")));
        }
        for (sum, field) in sums.iter_mut().zip(line.split_whitespace()) {
            let value = parse_hex(field)
                .ok_or_else(|| bad(format!("expected a hex number, found {field:?}")))?;
            *sum = sum.wrapping_add(value);
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const HEADER: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart";

    fn stat_text() -> String {
        format!(
            "{HEADER}\n\
00000001  00000002 00000003 00000004 00000005 00000006 00000007 00000008 00000009 0000000a 0000000b 0000000c 0000000d  0000000e 0000000f 00000010 00000011\n\
00000001  00000002 00000003 00000004 00000005 00000006 00000007 00000008 00000009 0000000a 0000000b 0000000c 0000000d  0000000e 0000000f 00000010 ffffffffffffffff\n"
        )
    }

    fn write_tree(dir: &Path, stat: Option<&str>) {
        let sysctl = dir.join("proc/sys/net/netfilter");
        std::fs::create_dir_all(&sysctl).expect("mkdir");
        std::fs::write(sysctl.join("nf_conntrack_count"), "17\n").expect("write");
        std::fs::write(sysctl.join("nf_conntrack_max"), "65536\n").expect("write");
        if let Some(stat) = stat {
            std::fs::create_dir_all(dir.join("proc/net/stat")).expect("mkdir");
            std::fs::write(dir.join("proc/net/stat/nf_conntrack"), stat).expect("write");
        }
    }

    #[test]
    fn parses_literal() {
        let sums = parse_conntrack_stat(&stat_text(), Path::new("nf_conntrack")).expect("parse");
        assert_eq!(sums[2], 6);
        assert_eq!(sums[11], 24);
        // 0x11 + 0xffffffffffffffff wraps to 0x10, as node_exporter's uint64 sum.
        assert_eq!(sums[16], 16);
        let header_only = parse_conntrack_stat(HEADER, Path::new("nf_conntrack")).expect("parse");
        assert_eq!(header_only, [0; STAT_COLUMNS]);
    }

    #[test]
    fn exports_all_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), Some(&stat_text()));
        let text = collect_text(&ConntrackCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_nf_conntrack_entries"), 17.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_entries_limit"), 65536.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_found"), 6.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_invalid"), 10.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_ignore"), 12.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_insert"), 18.0);
        assert_eq!(
            value_of(&text, "node_nf_conntrack_stat_insert_failed"),
            20.0
        );
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_drop"), 22.0);
        assert_eq!(value_of(&text, "node_nf_conntrack_stat_early_drop"), 24.0);
        assert_eq!(
            value_of(&text, "node_nf_conntrack_stat_search_restart"),
            16.0
        );
        assert!(text.contains("# TYPE node_nf_conntrack_stat_drop gauge\n"));
    }

    #[test]
    fn without_stat_file_exports_the_entry_gauges() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), None);
        let text = collect_text(&ConntrackCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_nf_conntrack_entries"), 17.0);
        assert!(!text.contains("node_nf_conntrack_stat"));
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let path = Path::new("x/nf_conntrack");
        let err = parse_conntrack_stat(&format!("{HEADER}\n00000001 00000002\n"), path)
            .expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/nf_conntrack line 2: 2 columns, expected 17"
        );
        let eighteen = format!("{HEADER}\n{}\n", ["0"; 18].join(" "));
        assert!(parse_conntrack_stat(&eighteen, path).is_err());
        let garbage = format!("{HEADER}\n{} zz\n", ["0"; 16].join(" "));
        let err = parse_conntrack_stat(&garbage, path).expect_err("garbage");
        assert!(err.to_string().contains("\"zz\""), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), None);
        std::fs::write(
            dir.path().join("proc/sys/net/netfilter/nf_conntrack_count"),
            "abc\n",
        )
        .expect("write");
        let err = ConntrackCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("garbage count");
        assert!(!err.is_no_data());
        assert!(err.to_string().contains("nf_conntrack_count"), "{err}");
    }

    #[test]
    fn module_not_loaded_is_no_data() {
        let collector = ConntrackCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        for tree in ["linux", "pi"] {
            let text = collect_text(&ConntrackCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name.starts_with("node_nf_conntrack_"),
            );
        }
    }
}
