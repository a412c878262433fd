//! `netdev`: per-interface traffic counters, node_exporter 1.5's
//! `node_network_{receive,transmit}_*_total{device}`.
//!
//! Reads `/proc/net/dev` (the 16 classic columns: receive `bytes packets errs drop fifo
//! frame compressed multicast`, transmit `bytes packets errs drop fifo colls carrier
//! compressed`) and, per reported device, `/sys/class/net/<device>/statistics/rx_nohandler`
//! for `node_network_receive_nohandler_total`.
//!
//! node_exporter 1.5 reads these counters over rtnetlink by default
//! (`--collector.netdev.netlink` defaults to true; `/proc/net/dev` is its fallback).
//! Netlink cannot be pointed at `--path.procfs`, so we read the files; the values are the
//! same (the kernel prints `/proc/net/dev` from the same `rtnl_link_stats64`, folding the
//! detailed error counters exactly as node_exporter's `legacy()` does). The one counter
//! netlink has and `/proc/net/dev` lacks, `rx_nohandler`, comes from sysfs; where that
//! file is absent the family is left out for the device, as node_exporter's file path does.
//!
//! Devices are filtered with `device_include` / `device_exclude` (unanchored regular
//! expressions, as Go's `MatchString`).

use std::path::Path;

use regex_lite::Regex;
use serde::Deserialize;

use super::{BuildError, CollectError, Collector, CollectorOption, CollectorSpec, compile_regex};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Number of counter columns in `/proc/net/dev`.
const COLUMNS: usize = 16;

/// Family name and HELP of each `/proc/net/dev` column, in file order.
const FAMILIES: [(&str, &str); COLUMNS] = [
    (
        "node_network_receive_bytes_total",
        "Network device statistic receive_bytes.",
    ),
    (
        "node_network_receive_packets_total",
        "Network device statistic receive_packets.",
    ),
    (
        "node_network_receive_errs_total",
        "Network device statistic receive_errs.",
    ),
    (
        "node_network_receive_drop_total",
        "Network device statistic receive_drop.",
    ),
    (
        "node_network_receive_fifo_total",
        "Network device statistic receive_fifo.",
    ),
    (
        "node_network_receive_frame_total",
        "Network device statistic receive_frame.",
    ),
    (
        "node_network_receive_compressed_total",
        "Network device statistic receive_compressed.",
    ),
    (
        "node_network_receive_multicast_total",
        "Network device statistic receive_multicast.",
    ),
    (
        "node_network_transmit_bytes_total",
        "Network device statistic transmit_bytes.",
    ),
    (
        "node_network_transmit_packets_total",
        "Network device statistic transmit_packets.",
    ),
    (
        "node_network_transmit_errs_total",
        "Network device statistic transmit_errs.",
    ),
    (
        "node_network_transmit_drop_total",
        "Network device statistic transmit_drop.",
    ),
    (
        "node_network_transmit_fifo_total",
        "Network device statistic transmit_fifo.",
    ),
    (
        "node_network_transmit_colls_total",
        "Network device statistic transmit_colls.",
    ),
    (
        "node_network_transmit_carrier_total",
        "Network device statistic transmit_carrier.",
    ),
    (
        "node_network_transmit_compressed_total",
        "Network device statistic transmit_compressed.",
    ),
];

/// The netlink-only counter, read from sysfs.
const NOHANDLER_FAMILY: (&str, &str) = (
    "node_network_receive_nohandler_total",
    "Network device statistic receive_nohandler.",
);

/// Reads `/proc/net/dev` and `rx_nohandler` from sysfs.
#[derive(Debug)]
pub struct NetdevCollector {
    roots: Roots,
    filter: DeviceFilter,
}

/// Netdev collector filters. At most one of the two may be set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetdevConfig {
    /// Only devices matching this. Default: all.
    pub device_include: Option<String>,
    /// Devices matching this are left out. Default: none.
    pub device_exclude: Option<String>,
}

/// The `netdev` collector: `[collectors.netdev]`.
pub const SPEC: CollectorSpec = CollectorSpec::system("netdev", |ctx| {
    let config: NetdevConfig = ctx.section("netdev", "collectors.netdev")?;
    Ok(Box::new(NetdevCollector::new(ctx.roots.clone(), &config)?))
})
.with_section(
    "collectors.netdev",
    &[
        CollectorOption {
            flag: "device-include",
            aliases: &["device-whitelist"],
            key: "device_include",
            value_name: "REGEX",
            help: "Only these network devices (regular expression).",
        },
        CollectorOption {
            flag: "device-exclude",
            aliases: &["device-blacklist"],
            key: "device_exclude",
            value_name: "REGEX",
            help: "Network devices to leave out (regular expression).",
        },
    ],
);

impl NetdevCollector {
    /// A collector reading under `roots`, filtering devices as `config` says. An empty
    /// pattern means "not set", as in node_exporter.
    pub fn new(roots: Roots, config: &NetdevConfig) -> Result<Self, BuildError> {
        let compile = |field: &str, pattern: &Option<String>| {
            pattern
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(|p| compile_regex("netdev", field, p))
                .transpose()
        };
        let filter = DeviceFilter {
            exclude: compile("device_exclude", &config.device_exclude)?,
            include: compile("device_include", &config.device_include)?,
        };
        if filter.exclude.is_some() && filter.include.is_some() {
            return Err(BuildError {
                collector: "netdev",
                reason: "device_include and device_exclude are mutually exclusive".into(),
            });
        }
        Ok(Self { roots, filter })
    }
}

impl Collector for NetdevCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("net/dev");
        // node_exporter fails (rather than reporting no data) when the file is missing.
        let text = std::fs::read_to_string(&path).map_err(|source| CollectError::Io {
            path: path.clone(),
            source,
        })?;
        let mut nohandler_path = self.roots.sys("class/net");
        for device in parse_net_dev(&text, &path)? {
            if self.filter.ignored(device.name) {
                continue;
            }
            let labels = [("device", device.name)];
            for ((name, help), value) in FAMILIES.iter().zip(device.counters) {
                out.counter(name, help, &labels, value as f64);
            }
            nohandler_path.push(device.name);
            nohandler_path.push("statistics/rx_nohandler");
            if let Some(value) = read_counter(&nohandler_path) {
                let (name, help) = NOHANDLER_FAMILY;
                out.counter(name, help, &labels, value as f64);
            }
            nohandler_path.pop();
            nohandler_path.pop();
            nohandler_path.pop();
        }
        Ok(())
    }
}

/// node_exporter's device filter: a device is ignored if it matches the exclude pattern
/// or does not match the include pattern.
#[derive(Debug, Default)]
struct DeviceFilter {
    exclude: Option<Regex>,
    include: Option<Regex>,
}

impl DeviceFilter {
    fn ignored(&self, name: &str) -> bool {
        self.exclude.as_ref().is_some_and(|re| re.is_match(name))
            || self.include.as_ref().is_some_and(|re| !re.is_match(name))
    }
}

/// One interface line of `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCounters<'a> {
    /// The interface name, before the colon.
    pub name: &'a str,
    /// The 16 counters in file order: receive bytes, packets, errs, drop, fifo, frame,
    /// compressed, multicast, then transmit bytes, packets, errs, drop, fifo, colls,
    /// carrier, compressed.
    pub counters: [u64; COLUMNS],
}

/// Parses `/proc/net/dev`: two header lines, then `name: 16 counters` per interface.
/// As node_exporter's parser (prometheus/procfs), the name is what precedes the last
/// colon, further columns are ignored, and a repeated name keeps its last line.
pub fn parse_net_dev<'a>(
    text: &'a str,
    path: &Path,
) -> Result<Vec<DeviceCounters<'a>>, CollectError> {
    let mut devices: Vec<DeviceCounters<'a>> = Vec::new();
    for (index, line) in text.lines().enumerate().skip(2) {
        let line_no = index + 1;
        let bad = |reason: String| CollectError::parse(path, Some(line_no), reason);
        let (name, rest) = line
            .rsplit_once(':')
            .ok_or_else(|| bad("missing colon after the interface name".into()))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad("empty interface name".into()));
        }
        let mut counters = [0u64; COLUMNS];
        let mut fields = rest.split_whitespace();
        for (i, counter) in counters.iter_mut().enumerate() {
            let field = fields
                .next()
                .ok_or_else(|| bad(format!("expected {COLUMNS} counters for {name}, found {i}")))?;
            *counter = field.parse().map_err(|_| {
                bad(format!(
                    "expected an unsigned integer in column {} for {name}, found {field:?}",
                    i + 1
                ))
            })?;
        }
        let device = DeviceCounters { name, counters };
        match devices.iter_mut().find(|d| d.name == name) {
            Some(previous) => *previous = device,
            None => devices.push(device),
        }
    }
    Ok(devices)
}

/// Reads a sysfs counter; `None` when it is absent or unreadable.
fn read_counter(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Fixture comparison shared by the network collectors' tests.
#[cfg(test)]
pub(crate) mod fixture_check {
    use std::collections::BTreeSet;

    use crate::collectors::test_support::{assert_same_as_node_exporter, fixture_dir};

    /// Family names declared (`# TYPE`) in an exposition.
    fn families(text: &str, keep: &dyn Fn(&str) -> bool) -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|f| keep(f))
            .map(String::from)
            .collect()
    }

    /// The netdev families (the rest of `node_network_*` is netclass's).
    pub fn is_netdev_family(name: &str) -> bool {
        (name.starts_with("node_network_receive_") || name.starts_with("node_network_transmit_"))
            && name.ends_with("_total")
    }

    /// Asserts that the families `keep` selects are the same in `ours` as in
    /// node_exporter 1.5's output on `tree`, and that their samples are equal.
    pub fn assert_matches_node_exporter(tree: &str, ours: &str, keep: &dyn Fn(&str) -> bool) {
        let path = fixture_dir(tree).join("node_exporter-1.5.prom");
        let reference =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let theirs = families(&reference, keep);
        assert_eq!(families(ours, keep), theirs, "families on tree {tree}");
        let list: Vec<&str> = theirs.iter().map(String::as_str).collect();
        assert_same_as_node_exporter(tree, ours, &list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  216299     281    0    0    0     0          0         0   216299     281    0    0    0     0       0          0
  eth0: 18446744073709551615 1000 1 2 3 4 5 6 987654321 2000 7 8 9 10 11 12
wlan0:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16
";

    fn write_tree(dir: &Path, net_dev: &str) {
        std::fs::create_dir_all(dir.join("proc/net")).expect("mkdir");
        std::fs::write(dir.join("proc/net/dev"), net_dev).expect("write");
        let stats = dir.join("sys/class/net/eth0/statistics");
        std::fs::create_dir_all(&stats).expect("mkdir");
        std::fs::write(stats.join("rx_nohandler"), "42\n").expect("write");
    }

    #[test]
    fn parses_literal() {
        let devices = parse_net_dev(NET_DEV, Path::new("net/dev")).expect("parse");
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].name, "lo");
        assert_eq!(devices[0].counters[0], 216299);
        assert_eq!(devices[1].name, "eth0");
        assert_eq!(
            devices[1].counters,
            [
                u64::MAX,
                1000,
                1,
                2,
                3,
                4,
                5,
                6,
                987654321,
                2000,
                7,
                8,
                9,
                10,
                11,
                12
            ]
        );
        // No space after the colon.
        assert_eq!(devices[2].name, "wlan0");
        assert_eq!(devices[2].counters[15], 16);
    }

    #[test]
    fn repeated_device_keeps_last_line() {
        let text = "h\nh\na: 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\na: 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let devices = parse_net_dev(text, Path::new("dev")).expect("parse");
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].counters[0], 2);
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let err = parse_net_dev("h\nh\n eth0: 1 2 3\n", Path::new("x/net/dev")).expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/net/dev line 3: expected 16 counters for eth0, found 3"
        );
        let err = parse_net_dev(
            "h\nh\nlo: 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\neth0 1 2\n",
            Path::new("x/net/dev"),
        )
        .expect_err("no colon");
        assert!(err.to_string().contains("line 4"), "{err}");
        let err = parse_net_dev(
            "h\nh\neth0: 1 0 0 0 0 0 0 0 0 -1 0 0 0 0 0 0\n",
            Path::new("x/net/dev"),
        )
        .expect_err("negative");
        assert!(err.to_string().contains("line 3"), "{err}");
        assert!(err.to_string().contains("\"-1\""), "{err}");
        let err = parse_net_dev("h\nh\n : 1\n", Path::new("x/net/dev")).expect_err("no name");
        assert!(err.to_string().contains("empty interface name"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error_as_in_node_exporter() {
        let collector = NetdevCollector::new(
            Roots::under("/nonexistent-nodewatch-root"),
            &NetdevConfig::default(),
        )
        .expect("new");
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(!err.is_no_data(), "{err}");
        assert!(err.to_string().contains("net/dev"), "{err}");
    }

    #[test]
    fn exports_counters_and_nohandler() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), NET_DEV);
        let collector =
            NetdevCollector::new(Roots::under(dir.path()), &NetdevConfig::default()).expect("new");
        let text = collect_text(&collector);
        assert_eq!(
            value_of(&text, "node_network_receive_bytes_total{device=\"eth0\"}"),
            18446744073709551615.0
        );
        assert_eq!(
            value_of(
                &text,
                "node_network_transmit_carrier_total{device=\"wlan0\"}"
            ),
            15.0
        );
        assert_eq!(
            value_of(
                &text,
                "node_network_receive_nohandler_total{device=\"eth0\"}"
            ),
            42.0
        );
        // No sysfs counter for lo in this tree: no sample, as node_exporter's file path.
        assert!(!text.contains("node_network_receive_nohandler_total{device=\"lo\"}"));
        assert!(text.contains("# TYPE node_network_receive_drop_total counter"));
        assert!(text.contains(
            "# HELP node_network_transmit_colls_total Network device statistic transmit_colls."
        ));
    }

    #[test]
    fn filters_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tree(dir.path(), NET_DEV);
        let roots = Roots::under(dir.path());
        let exclude = NetdevConfig {
            device_exclude: Some("^lo$".into()),
            device_include: None,
        };
        let text = collect_text(&NetdevCollector::new(roots.clone(), &exclude).expect("new"));
        assert!(!text.contains("device=\"lo\""));
        assert!(text.contains("device=\"eth0\""));
        // Unanchored, as Go's MatchString: "an" matches "wlan0" only.
        let include = NetdevConfig {
            device_include: Some("an".into()),
            device_exclude: None,
        };
        let text = collect_text(&NetdevCollector::new(roots.clone(), &include).expect("new"));
        assert!(text.contains("device=\"wlan0\""));
        assert!(!text.contains("device=\"eth0\""));
        assert!(!text.contains("device=\"lo\""));
        // An empty pattern means "not set".
        let empty = NetdevConfig {
            device_include: Some(String::new()),
            device_exclude: None,
        };
        let text = collect_text(&NetdevCollector::new(roots, &empty).expect("new"));
        assert!(text.contains("device=\"lo\""));
    }

    #[test]
    fn rejects_bad_patterns() {
        let roots = Roots::under("/nonexistent-nodewatch-root");
        let bad = NetdevConfig {
            device_exclude: Some("(".into()),
            device_include: None,
        };
        let err = NetdevCollector::new(roots.clone(), &bad).expect_err("bad regex");
        assert!(err.to_string().contains("device_exclude"), "{err}");
        let both = NetdevConfig {
            device_exclude: Some("a".into()),
            device_include: Some("b".into()),
        };
        assert!(NetdevCollector::new(roots, &both).is_err());
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        // The references come from Debian's node_exporter 1.5 with
        // --no-collector.netdev.netlink (netlink would read the live kernel) and its
        // packaged default --collector.netdev.device-exclude="^lo$" (upstream has no
        // default): configure the same exclusion. Neither tree has
        // class/net/*/statistics/rx_nohandler, so neither side has receive_nohandler.
        let config = NetdevConfig {
            device_exclude: Some("^lo$".into()),
            device_include: None,
        };
        for tree in ["linux", "pi"] {
            let collector = NetdevCollector::new(fixture_roots(tree), &config).expect("new");
            let text = collect_text(&collector);
            fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &fixture_check::is_netdev_family,
            );
        }
    }
}
