//! `sockstat`: socket counts from `/proc/net/sockstat` and `/proc/net/sockstat6`, as
//! node_exporter 1.5's `node_sockstat_*` gauges.
//!
//! `node_sockstat_sockets_used` (IPv4 file only), and per protocol line
//! (`TCP`, `UDP`, `UDPLITE`, `RAW`, `FRAG`, `TCP6`, ...) `node_sockstat_<PROTO>_<key>`
//! for `inuse` (always), `orphan`, `tw`, `alloc`, `mem`, `memory` where present, plus
//! `node_sockstat_<PROTO>_mem_bytes` = `mem` pages × this host's page size (as
//! node_exporter, which uses its live page size). A missing file is skipped (IPv4 or
//! IPv6 disabled); with both missing node_exporter reports success with no samples, and
//! so do we.

use std::path::Path;

use super::netclass::parse_go_int;
use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Page size when `sysconf` cannot tell (it always can on Linux).
const FALLBACK_PAGE_SIZE: i64 = 4096;

/// Reads both sockstat files.
#[derive(Debug)]
pub struct SockstatCollector {
    roots: Roots,
    page_size: i64,
}

impl SockstatCollector {
    /// A collector reading under `roots`; the page size is read once.
    pub fn new(roots: Roots) -> Self {
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(FALLBACK_PAGE_SIZE, i64::from);
        Self { roots, page_size }
    }
}

/// The `sockstat` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("sockstat", |ctx| {
    Ok(Box::new(SockstatCollector::new(ctx.roots.clone())))
});

impl Collector for SockstatCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        for (file, ipv6) in [("net/sockstat", false), ("net/sockstat6", true)] {
            let path = self.roots.proc(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CollectError::Io { path, source }),
            };
            let stat = parse_sockstat(&text, &path)?;
            write_sockstat(out, &stat, ipv6, self.page_size);
        }
        Ok(())
    }
}

/// One sockstat file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sockstat<'a> {
    /// `sockets: used N` (0 if the line lacks `used`), when the line is there.
    pub used: Option<i64>,
    /// The protocol lines, in file order.
    pub protocols: Vec<SockstatProtocol<'a>>,
}

/// One protocol line, e.g. `TCP: inuse 3 orphan 0 tw 4 alloc 3 mem 85`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SockstatProtocol<'a> {
    /// The protocol, without its colon.
    pub name: &'a str,
    /// `inuse`, 0 when absent (node_exporter always exports it).
    pub inuse: i64,
    /// `orphan`.
    pub orphan: Option<i64>,
    /// `tw`.
    pub tw: Option<i64>,
    /// `alloc`.
    pub alloc: Option<i64>,
    /// `mem`, in pages.
    pub mem: Option<i64>,
    /// `memory`, in bytes (FRAG).
    pub memory: Option<i64>,
}

/// Parses a sockstat file as prometheus/procfs does: fields separated by single spaces, a
/// protocol then key/value pairs (at least one), values as Go's `ParseInt(s, 0, 64)`;
/// unknown keys are ignored and a repeated key keeps its last value.
pub fn parse_sockstat<'a>(text: &'a str, path: &Path) -> Result<Sockstat<'a>, CollectError> {
    let mut stat = Sockstat::default();
    for (index, line) in text.lines().enumerate() {
        let bad = |reason: String| CollectError::parse(path, Some(index + 1), reason);
        let mut fields = line.split(' ');
        let first = fields.next().unwrap_or_default();
        let name = first.strip_suffix(':').unwrap_or(first);
        let mut protocol = SockstatProtocol {
            name,
            ..SockstatProtocol::default()
        };
        let mut used = 0;
        let mut pairs = 0;
        while let Some(key) = fields.next() {
            let value = fields
                .next()
                .ok_or_else(|| bad(format!("odd number of fields in key/value pairs: {line:?}")))?;
            let value = parse_go_int(value)
                .ok_or_else(|| bad(format!("expected an integer for {key}, found {value:?}")))?;
            pairs += 1;
            match key {
                "used" => used = value,
                "inuse" => protocol.inuse = value,
                "orphan" => protocol.orphan = Some(value),
                "tw" => protocol.tw = Some(value),
                "alloc" => protocol.alloc = Some(value),
                "mem" => protocol.mem = Some(value),
                "memory" => protocol.memory = Some(value),
                _ => {}
            }
        }
        if pairs == 0 {
            return Err(bad(format!(
                "expected a protocol and key/value pairs, found {line:?}"
            )));
        }
        if name == "sockets" {
            stat.used = Some(used);
        } else {
            stat.protocols.push(protocol);
        }
    }
    Ok(stat)
}

/// Writes the families of one file. `ipv6` leaves out `sockets_used`, as node_exporter.
pub fn write_sockstat(out: &mut MetricSink, stat: &Sockstat<'_>, ipv6: bool, page_size: i64) {
    if let (false, Some(used)) = (ipv6, stat.used) {
        out.gauge(
            "node_sockstat_sockets_used",
            "Number of IPv4 sockets in use.",
            &[],
            used as f64,
        );
    }
    let mut name = String::new();
    let mut help = String::new();
    for p in &stat.protocols {
        let mem_bytes = p.mem.map(|pages| pages.wrapping_mul(page_size));
        let pairs = [
            ("inuse", Some(p.inuse)),
            ("orphan", p.orphan),
            ("tw", p.tw),
            ("alloc", p.alloc),
            ("mem", p.mem),
            ("memory", p.memory),
            ("mem_bytes", mem_bytes),
        ];
        for (key, value) in pairs {
            let Some(value) = value else { continue };
            name.clear();
            name.push_str("node_sockstat_");
            name.push_str(p.name);
            name.push('_');
            name.push_str(key);
            help.clear();
            help.push_str("Number of ");
            help.push_str(p.name);
            help.push_str(" sockets in state ");
            help.push_str(key);
            help.push('.');
            out.gauge(&name, &help, &[], value as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const SOCKSTAT: &str = "\
sockets: used 230
TCP: inuse 12 orphan 1 tw 7 alloc 15 mem 3
UDP: inuse 4 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
";

    const SOCKSTAT6: &str = "\
TCP6: inuse 5
UDP6: inuse 2
UDPLITE6: inuse 0
RAW6: inuse 1
FRAG6: inuse 0 memory 0
";

    #[test]
    fn parses_literal() {
        let stat = parse_sockstat(SOCKSTAT, Path::new("sockstat")).expect("parse");
        assert_eq!(stat.used, Some(230));
        assert_eq!(stat.protocols.len(), 5);
        assert_eq!(
            stat.protocols[0],
            SockstatProtocol {
                name: "TCP",
                inuse: 12,
                orphan: Some(1),
                tw: Some(7),
                alloc: Some(15),
                mem: Some(3),
                memory: None,
            }
        );
        assert_eq!(stat.protocols[4].memory, Some(0));
        let stat6 = parse_sockstat(SOCKSTAT6, Path::new("sockstat6")).expect("parse");
        assert_eq!(stat6.used, None);
        assert_eq!(stat6.protocols[0].name, "TCP6");
    }

    #[test]
    fn exports_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/net")).expect("mkdir");
        std::fs::write(dir.path().join("proc/net/sockstat"), SOCKSTAT).expect("write");
        std::fs::write(dir.path().join("proc/net/sockstat6"), SOCKSTAT6).expect("write");
        let collector = SockstatCollector::new(Roots::under(dir.path()));
        let page = collector.page_size as f64;
        let text = collect_text(&collector);
        assert_eq!(value_of(&text, "node_sockstat_sockets_used"), 230.0);
        assert_eq!(value_of(&text, "node_sockstat_TCP_inuse"), 12.0);
        assert_eq!(value_of(&text, "node_sockstat_TCP_mem"), 3.0);
        assert_eq!(value_of(&text, "node_sockstat_TCP_mem_bytes"), 3.0 * page);
        assert_eq!(value_of(&text, "node_sockstat_UDP_mem_bytes"), 2.0 * page);
        assert_eq!(value_of(&text, "node_sockstat_FRAG_memory"), 0.0);
        assert_eq!(value_of(&text, "node_sockstat_TCP6_inuse"), 5.0);
        assert_eq!(value_of(&text, "node_sockstat_RAW6_inuse"), 1.0);
        assert!(!text.contains("node_sockstat_RAW_mem"));
        assert!(!text.contains("node_sockstat_FRAG_mem_bytes"));
        assert!(text.contains(
            "# HELP node_sockstat_TCP_tw Number of TCP sockets in state tw.\n# TYPE node_sockstat_TCP_tw gauge\n"
        ));
    }

    #[test]
    fn uses_the_live_page_size() {
        let collector = SockstatCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        assert!(collector.page_size >= 4096, "{}", collector.page_size);
        assert!(collector.page_size.count_ones() == 1);
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let path = Path::new("x/sockstat");
        let err = parse_sockstat("sockets: used 3\nTCP: inuse 1 orphan\n", path).expect_err("odd");
        assert!(
            err.to_string()
                .starts_with("cannot parse x/sockstat line 2:"),
            "{err}"
        );
        let err = parse_sockstat("TCP: inuse x\n", path).expect_err("garbage");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.to_string().contains("\"x\""), "{err}");
        let err = parse_sockstat("TCP: inuse 1\nTCP:\n", path).expect_err("truncated");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_sockstat("TCP: inuse 1\n\n", path).expect_err("blank");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn missing_files_give_no_samples_and_success() {
        // node_exporter 1.5 reports success with no samples when both files are missing.
        let collector = SockstatCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let mut sink = MetricSink::new();
        collector
            .collect(&mut sink)
            .expect("missing files are skipped");
        assert!(sink.is_empty());
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        // `*_mem_bytes` uses the page size of the machine running the test, as the
        // reference used that of the machine that generated it (both 4 KiB here).
        for tree in ["linux", "pi"] {
            let text = collect_text(&SockstatCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name.starts_with("node_sockstat_"),
            );
        }
    }
}
