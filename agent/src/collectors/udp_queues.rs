//! `udp_queues`: `node_udp_queues{ip,queue}` from `/proc/net/udp` (`ip="v4"`) and
//! `/proc/net/udp6` (`ip="v6"`), as node_exporter 1.5: the sums over all sockets of the
//! hex `tx_queue` and `rx_queue` columns, in bytes.
//!
//! A missing file is skipped; with both missing there is no data, as node_exporter. Each
//! socket line is checked as prometheus/procfs 0.8 does (sl, addresses, ports, state,
//! queues, uid and inode must parse), so a malformed file fails rather than giving a
//! wrong sum.

use std::path::Path;

use super::netclass::{parse_go_uint, parse_hex};
use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Fewest columns of a socket line (through `inode`).
const MIN_COLUMNS: usize = 10;

/// Reads `/proc/net/udp` and `/proc/net/udp6`.
#[derive(Debug)]
pub struct UdpQueuesCollector {
    roots: Roots,
}

impl UdpQueuesCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `udp_queues` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("udp_queues", |ctx| {
    Ok(Box::new(UdpQueuesCollector::new(ctx.roots.clone())))
});

impl Collector for UdpQueuesCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let mut found = false;
        for (file, ip) in [("net/udp", "v4"), ("net/udp6", "v6")] {
            let path = self.roots.proc(file);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CollectError::Io { path, source }),
            };
            found = true;
            let queues = parse_udp_queues(&text, &path)?;
            let help = "Number of allocated memory in the kernel for UDP datagrams in bytes.";
            out.gauge(
                "node_udp_queues",
                help,
                &[("queue", "tx"), ("ip", ip)],
                queues.tx as f64,
            );
            out.gauge(
                "node_udp_queues",
                help,
                &[("queue", "rx"), ("ip", ip)],
                queues.rx as f64,
            );
        }
        if found {
            Ok(())
        } else {
            Err(CollectError::NoData(format!(
                "neither {} nor {} exists",
                self.roots.proc("net/udp").display(),
                self.roots.proc("net/udp6").display()
            )))
        }
    }
}

/// Queued bytes summed over the sockets of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpQueues {
    /// Sum of `tx_queue`.
    pub tx: u64,
    /// Sum of `rx_queue`.
    pub rx: u64,
}

/// Parses `/proc/net/udp` or `/proc/net/udp6`: a header line, then one socket per line
/// (`sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout
/// inode ...`).
pub fn parse_udp_queues(text: &str, path: &Path) -> Result<UdpQueues, CollectError> {
    let mut sums = UdpQueues::default();
    for (index, line) in text.lines().enumerate().skip(1) {
        let (tx, rx) = parse_socket_line(line)
            .map_err(|reason| CollectError::parse(path, Some(index + 1), reason))?;
        // Go's uint64 sums wrap; so do these.
        sums.tx = sums.tx.wrapping_add(tx);
        sums.rx = sums.rx.wrapping_add(rx);
    }
    Ok(sums)
}

/// Checks one socket line and returns its `(tx_queue, rx_queue)`.
fn parse_socket_line(line: &str) -> Result<(u64, u64), String> {
    let mut fields = [""; MIN_COLUMNS];
    let mut count = 0;
    for field in line.split_whitespace() {
        if let Some(slot) = fields.get_mut(count) {
            *slot = field;
        }
        count += 1;
    }
    if count < MIN_COLUMNS {
        return Err(format!("{count} columns, expected at least {MIN_COLUMNS}"));
    }
    let [
        sl,
        local,
        remote,
        state,
        queues,
        _timer,
        _retransmits,
        uid,
        _timeout,
        inode,
    ] = fields;
    // `N:`: exactly one colon, the number before it.
    let Some((sl, _)) = sl.split_once(':').filter(|(_, rest)| !rest.contains(':')) else {
        return Err(format!("cannot parse sl field {sl:?}"));
    };
    parse_go_uint(sl).ok_or_else(|| format!("cannot parse sl value {sl:?}"))?;
    for (what, address) in [("local_address", local), ("rem_address", remote)] {
        let (ip, port) = address
            .split_once(':')
            .filter(|(_, port)| !port.contains(':'))
            .ok_or_else(|| format!("cannot parse {what} field {address:?}"))?;
        if !matches!(ip.len(), 8 | 32) || !ip.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("cannot parse {what} address {ip:?}"));
        }
        parse_hex(port).ok_or_else(|| format!("cannot parse {what} port {port:?}"))?;
    }
    parse_hex(state).ok_or_else(|| format!("cannot parse st value {state:?}"))?;
    let (tx, rx) = queues
        .split_once(':')
        .filter(|(_, rx)| !rx.contains(':'))
        .ok_or_else(|| format!("cannot parse tx_queue:rx_queue field {queues:?}"))?;
    let tx = parse_hex(tx).ok_or_else(|| format!("cannot parse tx_queue value {tx:?}"))?;
    let rx = parse_hex(rx).ok_or_else(|| format!("cannot parse rx_queue value {rx:?}"))?;
    parse_go_uint(uid).ok_or_else(|| format!("cannot parse uid value {uid:?}"))?;
    parse_go_uint(inode).ok_or_else(|| format!("cannot parse inode value {inode:?}"))?;
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  123: 3500007F:0035 00000000:0000 07 00000010:00000200 00:00000000 00000000   101        0 20001 2 0000000000000000 0
  456: 00000000:0044 00000000:0000 07 00000001:00000002 00:00000000 00000000     0        0 20002 2 0000000000000000 0
";

    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
    0: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000100 00:00000000 00000000   108        0 15893 2 0000000000000000 0
";

    fn write_tree(dir: &Path, udp: Option<&str>, udp6: Option<&str>) {
        std::fs::create_dir_all(dir.join("proc/net")).expect("mkdir");
        for (file, text) in [("udp", udp), ("udp6", udp6)] {
            if let Some(text) = text {
                std::fs::write(dir.join("proc/net").join(file), text).expect("write");
            }
        }
    }

    #[test]
    fn parses_literal() {
        let queues = parse_udp_queues(UDP, Path::new("udp")).expect("parse");
        assert_eq!(queues, UdpQueues { tx: 17, rx: 514 });
        let queues = parse_udp_queues(UDP6, Path::new("udp6")).expect("parse");
        assert_eq!(queues, UdpQueues { tx: 0, rx: 256 });
        let header_only = UDP.lines().next().expect("header");
        assert_eq!(
            parse_udp_queues(header_only, Path::new("udp")).expect("parse"),
            UdpQueues::default()
        );
    }

    #[test]
    fn exports_both_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), Some(UDP), Some(UDP6));
        let text = collect_text(&UdpQueuesCollector::new(Roots::under(dir.path())));
        assert_eq!(
            value_of(&text, "node_udp_queues{ip=\"v4\",queue=\"rx\"}"),
            514.0
        );
        assert_eq!(
            value_of(&text, "node_udp_queues{ip=\"v4\",queue=\"tx\"}"),
            17.0
        );
        assert_eq!(
            value_of(&text, "node_udp_queues{ip=\"v6\",queue=\"rx\"}"),
            256.0
        );
        assert_eq!(
            value_of(&text, "node_udp_queues{ip=\"v6\",queue=\"tx\"}"),
            0.0
        );
        assert!(text.contains(
            "# HELP node_udp_queues Number of allocated memory in the kernel for UDP datagrams in bytes.\n"
        ));
    }

    #[test]
    fn one_missing_file_is_skipped_both_missing_is_no_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), Some(UDP), None);
        let text = collect_text(&UdpQueuesCollector::new(Roots::under(dir.path())));
        assert_eq!(
            value_of(&text, "node_udp_queues{ip=\"v4\",queue=\"tx\"}"),
            17.0
        );
        assert!(!text.contains("v6"));
        let collector = UdpQueuesCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let path = Path::new("x/udp");
        let good = "  0: 3500007F:0035 00000000:0000 07 00000010:00000200 00:00000000 00000000   101        0 20001";
        assert!(parse_udp_queues(&format!("h\n{good}\n"), path).is_ok());
        let cases = [
            (good.replacen(" 20001", "", 1), "9 columns"),
            (good.replacen("0:", "0", 1), "sl field"),
            (good.replace("  0:", "  a:"), "sl value"),
            (good.replace("3500007F", "3500007"), "local_address address"),
            (good.replace(":0035", ":zz"), "local_address port"),
            (good.replace(" 07 ", " 0z "), "st value"),
            (good.replace("00000010:", "0000001G:"), "tx_queue value"),
            (good.replace(":00000200", ":-1"), "rx_queue value"),
            (
                good.replace("00000010:00000200", "00000010"),
                "tx_queue:rx_queue",
            ),
            (good.replace(" 101 ", " abc "), "uid value"),
            (good.replace("20001", "x"), "inode value"),
        ];
        for (line, reason) in cases {
            let err = parse_udp_queues(&format!("h\n{good}\n{line}\n"), path).expect_err(reason);
            let text = err.to_string();
            assert!(text.starts_with("cannot parse x/udp line 3: "), "{text}");
            assert!(text.contains(reason), "{reason}: {text}");
        }
        // Hex uid and inode are accepted, as Go's ParseUint(s, 0, 64).
        assert!(
            parse_udp_queues(&format!("h\n{}\n", good.replace(" 101 ", " 0x101 ")), path).is_ok()
        );
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        for tree in ["linux", "pi"] {
            let text = collect_text(&UdpQueuesCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name == "node_udp_queues",
            );
        }
    }
}
