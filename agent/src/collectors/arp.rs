//! `arp`: `node_arp_entries{device}` from `/proc/net/arp`, as node_exporter 1.5.
//!
//! Every entry counts, complete or not (1.5 does not look at the flags); the device is
//! the last column. As in node_exporter, a line with fewer than 6 columns is an error and
//! so is a missing file.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Columns of an entry (and the header starts with `IP address`).
const MIN_COLUMNS: usize = 6;

/// Reads `/proc/net/arp`.
#[derive(Debug)]
pub struct ArpCollector {
    roots: Roots,
}

impl ArpCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `arp` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("arp", |ctx| {
    Ok(Box::new(ArpCollector::new(ctx.roots.clone())))
});

impl Collector for ArpCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("net/arp");
        let text = std::fs::read_to_string(&path).map_err(|source| CollectError::Io {
            path: path.clone(),
            source,
        })?;
        for (device, entries) in parse_arp(&text, &path)? {
            out.gauge(
                "node_arp_entries",
                "ARP entries by device",
                &[("device", device)],
                f64::from(entries),
            );
        }
        Ok(())
    }
}

/// Counts the entries of `/proc/net/arp` per device, devices in order of first
/// appearance.
pub fn parse_arp<'a>(text: &'a str, path: &Path) -> Result<Vec<(&'a str, u32)>, CollectError> {
    let mut counts: Vec<(&'a str, u32)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut columns = line.split_whitespace();
        let first = columns.next();
        let mut count = usize::from(first.is_some());
        let mut device = first;
        for column in columns {
            count += 1;
            device = Some(column);
        }
        if count < MIN_COLUMNS {
            return Err(CollectError::parse(
                path,
                Some(index + 1),
                format!("{count} columns, expected at least {MIN_COLUMNS}"),
            ));
        }
        if first == Some("IP") {
            continue;
        }
        let Some(device) = device else { continue };
        match counts.iter_mut().find(|(d, _)| *d == device) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => counts.push((device, 1)),
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const ARP: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         dc:a6:32:00:00:01     *        eth0
192.168.1.7      0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.2         0x1         0x2         dc:a6:32:00:00:02     *        wlan0
";

    #[test]
    fn parses_literal() {
        let counts = parse_arp(ARP, Path::new("arp")).expect("parse");
        // The incomplete entry (flags 0x0) counts too, as in node_exporter 1.5.
        assert_eq!(counts, [("eth0", 2), ("wlan0", 1)]);
        assert_eq!(parse_arp("", Path::new("arp")).expect("empty"), []);
    }

    #[test]
    fn exports_per_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/net")).expect("mkdir");
        std::fs::write(dir.path().join("proc/net/arp"), ARP).expect("write");
        let text = collect_text(&ArpCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_arp_entries{device=\"eth0\"}"), 2.0);
        assert_eq!(value_of(&text, "node_arp_entries{device=\"wlan0\"}"), 1.0);
        assert!(text.contains("# HELP node_arp_entries ARP entries by device\n"));
        assert!(text.contains("# TYPE node_arp_entries gauge\n"));
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let err = parse_arp(
            "IP address HW type Flags HW address Mask Device\n1.2.3.4 0x1 0x2 aa:bb *\n",
            Path::new("x/arp"),
        )
        .expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/arp line 2: 5 columns, expected at least 6"
        );
        let err = parse_arp(&format!("{ARP}\n"), Path::new("x/arp")).expect_err("blank");
        assert!(err.to_string().contains("line 5"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error_as_in_node_exporter() {
        let collector = ArpCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(!err.is_no_data(), "{err}");
        assert!(err.to_string().contains("net/arp"), "{err}");
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        for tree in ["linux", "pi"] {
            let text = collect_text(&ArpCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name.starts_with("node_arp_"),
            );
        }
    }
}
