//! `netstat`: protocol counters from `/proc/net/netstat`, `/proc/net/snmp` and
//! `/proc/net/snmp6`, as node_exporter 1.5's `node_netstat_<Protocol>_<Field>` (untyped,
//! HELP `Statistic <Protocol><Field>.`).
//!
//! Only the fields selected by node_exporter's default `--collector.netstat.fields`
//! ([`DEFAULT_FIELDS`]) are exported. `/proc/net/netstat` and `/proc/net/snmp` are
//! required (node_exporter fails without them); `/proc/net/snmp6` is skipped when it does
//! not exist (IPv6 disabled). Every value of every field must parse, as in node_exporter.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// node_exporter 1.5's default `--collector.netstat.fields`, matched by
/// [`default_field_selected`].
pub const DEFAULT_FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// Reads the three files.
#[derive(Debug)]
pub struct NetstatCollector {
    roots: Roots,
}

impl NetstatCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `netstat` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("netstat", |ctx| {
    Ok(Box::new(NetstatCollector::new(ctx.roots.clone())))
});

impl Collector for NetstatCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let netstat_path = self.roots.proc("net/netstat");
        let snmp_path = self.roots.proc("net/snmp");
        let snmp6_path = self.roots.proc("net/snmp6");
        let netstat = read_required(&netstat_path)?;
        let snmp = read_required(&snmp_path)?;
        let snmp6 = match std::fs::read_to_string(&snmp6_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(CollectError::Io {
                    path: snmp6_path,
                    source,
                });
            }
        };

        let mut protocols = parse_net_stats(&netstat, &netstat_path)?;
        // Later files replace whole protocols of earlier ones, as node_exporter merges its
        // maps (the protocols are distinct in practice).
        merge(&mut protocols, parse_net_stats(&snmp, &snmp_path)?);
        if let Some(snmp6) = &snmp6 {
            merge(&mut protocols, parse_snmp6(snmp6, &snmp6_path)?);
        }

        let mut name = String::new();
        let mut help = String::new();
        for protocol in &protocols {
            for &(field, value) in &protocol.fields {
                name.clear();
                name.push_str("node_netstat_");
                name.push_str(protocol.name);
                name.push('_');
                name.push_str(field);
                if !default_field_selected(&name["node_netstat_".len()..]) {
                    continue;
                }
                help.clear();
                help.push_str("Statistic ");
                help.push_str(protocol.name);
                help.push_str(field);
                help.push('.');
                out.untyped(&name, &help, &[], value);
            }
        }
        Ok(())
    }
}

/// The counters of one protocol (`TcpExt`, `Ip`, `Udp6`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolStats<'a> {
    /// Protocol name, without its colon.
    pub name: &'a str,
    /// Field names and values, each name once (a repeated name keeps its last value).
    pub fields: Vec<(&'a str, f64)>,
}

impl<'a> ProtocolStats<'a> {
    fn set(&mut self, field: &'a str, value: f64) {
        match self.fields.iter_mut().find(|(f, _)| *f == field) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((field, value)),
        }
    }
}

/// Parses the `/proc/net/netstat` and `/proc/net/snmp` format: pairs of lines, a header
/// `Proto: Name1 Name2 ...` then the values `Proto: 1 2 ...`, fields separated by single
/// spaces. A protocol repeated later replaces the earlier one.
pub fn parse_net_stats<'a>(
    text: &'a str,
    path: &Path,
) -> Result<Vec<ProtocolStats<'a>>, CollectError> {
    let mut protocols: Vec<ProtocolStats<'a>> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, header)) = lines.next() {
        let header_no = index + 1;
        let mut names = header.split(' ');
        let protocol = names
            .next()
            .and_then(|p| p.strip_suffix(':'))
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                CollectError::parse(
                    path,
                    Some(header_no),
                    format!("expected a header \"Protocol: Field ...\", found {header:?}"),
                )
            })?;
        let (values_index, values_line) = lines.next().ok_or_else(|| {
            CollectError::parse(
                path,
                Some(header_no),
                format!("{protocol} header without a line of values"),
            )
        })?;
        let values_no = values_index + 1;
        let mut values = values_line.split(' ').skip(1);
        let mut stats = ProtocolStats {
            name: protocol,
            fields: Vec::new(),
        };
        for name in names {
            let value = values
                .next()
                .ok_or_else(|| field_count_mismatch(path, values_no, protocol))?;
            stats.set(name, parse_value(value, path, values_no)?);
        }
        if values.next().is_some() {
            return Err(field_count_mismatch(path, values_no, protocol));
        }
        merge(&mut protocols, [stats]);
    }
    Ok(protocols)
}

/// Parses `/proc/net/snmp6`: `Ip6InReceives 123` per line; the protocol is the name up to
/// and including its first `6`. Lines with fewer than two fields or without a `6` are
/// skipped, as node_exporter does.
pub fn parse_snmp6<'a>(text: &'a str, path: &Path) -> Result<Vec<ProtocolStats<'a>>, CollectError> {
    let mut protocols: Vec<ProtocolStats<'a>> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(six) = key.find('6') else { continue };
        let (protocol, field) = key.split_at(six + 1);
        let value = parse_value(value, path, index + 1)?;
        match protocols.iter_mut().find(|p| p.name == protocol) {
            Some(stats) => stats.set(field, value),
            None => protocols.push(ProtocolStats {
                name: protocol,
                fields: vec![(field, value)],
            }),
        }
    }
    Ok(protocols)
}

/// node_exporter's default field selection ([`DEFAULT_FIELDS`]) on `Protocol_Field`,
/// written out so that no regular expression runs on each of the ~350 fields every
/// collection; a test checks it against the expression.
pub fn default_field_selected(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "Ip_Forwarding",
        "Ip6_InOctets",
        "Ip6_OutOctets",
        "IpExt_InOctets",
        "IpExt_OutOctets",
        "Icmp_InMsgs",
        "Icmp_OutMsgs",
        "Icmp6_InMsgs",
        "Icmp6_OutMsgs",
        "TcpExt_TCPSynRetrans",
        "TcpExt_TCPTimeouts",
        "Tcp_ActiveOpens",
        "Tcp_InSegs",
        "Tcp_OutSegs",
        "Tcp_OutRsts",
        "Tcp_PassiveOpens",
        "Tcp_RetransSegs",
        "Tcp_CurrEstab",
        "Udp_InDatagrams",
        "Udp_OutDatagrams",
        "Udp_NoPorts",
        "Udp_RcvbufErrors",
        "Udp_SndbufErrors",
        "Udp6_InDatagrams",
        "Udp6_OutDatagrams",
        "Udp6_NoPorts",
        "Udp6_RcvbufErrors",
        "Udp6_SndbufErrors",
    ];
    // `.` does not match a newline in Go's regexp and `^`/`$` anchor the whole key, so
    // no key holding one is selected (keys come from single lines; this keeps it exact).
    if key.contains('\n') {
        return false;
    }
    key.ends_with("_InErrors")
        || key.ends_with("_InErrs")
        || key.starts_with("TcpExt_Listen")
        || key.starts_with("TcpExt_Syncookies")
        || EXACT.contains(&key)
}

fn merge<'a>(into: &mut Vec<ProtocolStats<'a>>, from: impl IntoIterator<Item = ProtocolStats<'a>>) {
    for stats in from {
        match into.iter_mut().find(|p| p.name == stats.name) {
            Some(existing) => *existing = stats,
            None => into.push(stats),
        }
    }
}

fn parse_value(text: &str, path: &Path, line: usize) -> Result<f64, CollectError> {
    crate::paths::parse_f64(text, path, line)
}

fn field_count_mismatch(path: &Path, line: usize, protocol: &str) -> CollectError {
    CollectError::parse(
        path,
        Some(line),
        format!("{protocol}: the numbers of field names and values differ"),
    )
}

/// Reads a file node_exporter cannot do without: missing is a failure, not "no data".
fn read_required(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops TCPTimeouts TCPSynRetrans TCPOFOQueue
TcpExt: 1 2 3 4 5 6 7 8 9
IpExt: InNoRoutes InOctets OutOctets InCsumErrors
IpExt: 0 833153640 1256423 0
";

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 2 64 23459 0
Icmp: InMsgs InErrors InCsumErrors OutMsgs
Icmp: 1 0 0 0
IcmpMsg: InType3 OutType3
IcmpMsg: 1 1
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 142 34 0 0 2 23535 14279 1 0 93 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 121 0 0 122 0 0 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
";

    const SNMP6: &str = "\
Ip6InReceives                   	2
Ip6InOctets                     	128
Ip6OutOctets                    	880
Icmp6InMsgs                     	1
Icmp6InErrors                   	1
Icmp6OutMsgs                    	9
Icmp6InType134                  	1
Udp6InDatagrams                 	0
Udp6NoPorts                     	0
Udp6InErrors                    	0
UdpLite6InErrors                	0

nonsense
";

    fn write_tree(dir: &Path, snmp6: Option<&str>) {
        std::fs::create_dir_all(dir.join("proc/net")).expect("mkdir");
        std::fs::write(dir.join("proc/net/netstat"), NETSTAT).expect("write");
        std::fs::write(dir.join("proc/net/snmp"), SNMP).expect("write");
        if let Some(snmp6) = snmp6 {
            std::fs::write(dir.join("proc/net/snmp6"), snmp6).expect("write");
        }
    }

    #[test]
    fn parses_literals() {
        let netstat = parse_net_stats(NETSTAT, Path::new("netstat")).expect("parse");
        assert_eq!(netstat.len(), 2);
        assert_eq!(netstat[0].name, "TcpExt");
        assert_eq!(netstat[0].fields[4], ("ListenOverflows", 5.0));
        assert_eq!(netstat[1].fields[1], ("InOctets", 833153640.0));
        let snmp = parse_net_stats(SNMP, Path::new("snmp")).expect("parse");
        let tcp = snmp.iter().find(|p| p.name == "Tcp").expect("Tcp");
        assert!(tcp.fields.contains(&("MaxConn", -1.0)));
        let snmp6 = parse_snmp6(SNMP6, Path::new("snmp6")).expect("parse");
        let names: Vec<_> = snmp6.iter().map(|p| p.name).collect();
        assert_eq!(names, ["Ip6", "Icmp6", "Udp6", "UdpLite6"]);
        assert!(snmp6[1].fields.contains(&("InType134", 1.0)));
    }

    #[test]
    fn exports_selected_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), Some(SNMP6));
        let text = collect_text(&NetstatCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_netstat_TcpExt_ListenDrops"), 6.0);
        assert_eq!(value_of(&text, "node_netstat_TcpExt_TCPTimeouts"), 7.0);
        assert_eq!(value_of(&text, "node_netstat_IpExt_InOctets"), 833153640.0);
        assert_eq!(value_of(&text, "node_netstat_Ip_Forwarding"), 2.0);
        assert_eq!(value_of(&text, "node_netstat_Tcp_InErrs"), 0.0);
        assert_eq!(value_of(&text, "node_netstat_UdpLite_InErrors"), 0.0);
        assert_eq!(value_of(&text, "node_netstat_Icmp6_OutMsgs"), 9.0);
        assert_eq!(value_of(&text, "node_netstat_UdpLite6_InErrors"), 0.0);
        assert!(text.contains("# TYPE node_netstat_Tcp_CurrEstab untyped\n"));
        assert!(text.contains(
            "# HELP node_netstat_TcpExt_SyncookiesSent Statistic TcpExtSyncookiesSent.\n"
        ));
        for unselected in [
            "TcpExt_EmbryonicRsts",
            "TcpExt_TCPOFOQueue",
            "Ip_DefaultTTL",
            "Tcp_MaxConn",
            "Icmp6_InType134",
            "IcmpMsg_InType3",
        ] {
            assert!(!text.contains(unselected), "{unselected}");
        }
    }

    #[test]
    fn missing_snmp6_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), None);
        let text = collect_text(&NetstatCollector::new(Roots::under(dir.path())));
        assert_eq!(value_of(&text, "node_netstat_Tcp_ActiveOpens"), 142.0);
        assert!(!text.contains("Udp6"));
    }

    #[test]
    fn missing_netstat_is_an_error_as_in_node_exporter() {
        let collector = NetstatCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(!err.is_no_data(), "{err}");
        assert!(err.to_string().contains("net/netstat"), "{err}");
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let path = Path::new("x/netstat");
        // A value of an unselected field must parse too, as in node_exporter.
        let err = parse_net_stats("TcpExt: SyncookiesSent Foo\nTcpExt: 0 x1\n", path)
            .expect_err("garbage");
        assert_eq!(
            err.to_string(),
            "cannot parse x/netstat line 2: expected a number, found \"x1\""
        );
        let err = parse_net_stats("Ip: A B\nIp: 1 2\nTcp: A B\n", path).expect_err("truncated");
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = parse_net_stats("Ip: A B\nIp: 1\n", path).expect_err("short");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_net_stats("Ip: A B\nIp: 1 2 3\n", path).expect_err("long");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_net_stats("\nIp: 1\n", path).expect_err("blank");
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = parse_snmp6("Ip6InOctets 12\nIp6OutOctets zz\n", Path::new("x/snmp6"))
            .expect_err("garbage");
        assert!(err.to_string().contains("x/snmp6 line 2"), "{err}");
    }

    #[test]
    fn field_selection_matches_node_exporter_regex() {
        let regex = regex_lite::Regex::new(DEFAULT_FIELDS).expect("regex");
        let mut keys: Vec<String> = Vec::new();
        for text in [NETSTAT, SNMP] {
            for p in parse_net_stats(text, Path::new("t")).expect("parse") {
                keys.extend(p.fields.iter().map(|(f, _)| format!("{}_{f}", p.name)));
            }
        }
        for p in parse_snmp6(SNMP6, Path::new("t")).expect("parse") {
            keys.extend(p.fields.iter().map(|(f, _)| format!("{}_{f}", p.name)));
        }
        // This machine's files, when present, for every field the kernel has.
        for file in ["/proc/net/netstat", "/proc/net/snmp"] {
            if let Ok(text) = std::fs::read_to_string(file) {
                for p in parse_net_stats(&text, Path::new(file)).expect("parse") {
                    keys.extend(p.fields.iter().map(|(f, _)| format!("{}_{f}", p.name)));
                }
            }
        }
        keys.extend(
            [
                "_InErrors",
                "X_InErrorsX",
                "Ip_ForwardingX",
                "XIp_Forwarding",
                "TcpExt_Listen",
                "TcpExt_SyncookiesX",
                "TcpExtX_ListenDrops",
                "Icmp66_InMsgs",
                "Udp6_InDatagramsX",
                "Ip6Ext_InOctets",
                "IpExt_InOctets",
                "a\nTcp_InSegs",
                "Tcp_InSegs\n",
                "TcpExt_Listen\nX",
            ]
            .map(String::from),
        );
        for key in &keys {
            assert_eq!(default_field_selected(key), regex.is_match(key), "{key:?}");
        }
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        for tree in ["linux", "pi"] {
            let text = collect_text(&NetstatCollector::new(fixture_roots(tree)));
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &|name| name.starts_with("node_netstat_"),
            );
        }
    }
}
