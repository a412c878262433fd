//! `netclass`: network interface properties from sysfs, as node_exporter 1.5's netclass
//! collector (its default sysfs path, not the opt-in netlink one).
//!
//! Reads the attributes of each `/sys/class/net/<device>/` and exports `node_network_info`
//! `{address,broadcast,device,duplex,ifalias,operstate}`, `node_network_up` (1 when
//! `operstate` is `up`), and one `node_network_<property>{device}` family per numeric
//! attribute: `address_assign_type`, `carrier`, `carrier_changes_total`,
//! `carrier_up_changes_total`, `carrier_down_changes_total`, `device_id`, `dormant`,
//! `flags`, `iface_id`, `iface_link`, `iface_link_mode`, `mtu_bytes`, `name_assign_type`,
//! `net_dev_group`, `speed_bytes`, `transmit_queue_length`, `protocol_type`.
//!
//! As in node_exporter (prometheus/procfs `parseNetClassIface`): an attribute the driver
//! does not implement (EINVAL, e.g. `speed` of a link that is down, or EOPNOTSUPP), that
//! is missing or not readable is left out; only the first 128 bytes of an attribute are
//! read; a numeric attribute is parsed as Go's `strconv.ParseInt(s, 0, 64)` (so `0x1003`
//! is hex and `010` octal) and one that does not parse is exported as 0; a speed of -1
//! (unknown) is exported as -125000 bytes, since `--collector.netclass.ignore-invalid-speed`
//! is off by default.

use std::borrow::Cow;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use regex_lite::Regex;
use serde::Deserialize;

use super::{BuildError, CollectError, Collector, CollectorOption, CollectorSpec, compile_regex};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// node_exporter reads sysfs attributes with one `read` of this many bytes.
const SYSFS_READ_LIMIT: usize = 128;

/// How a numeric attribute is exported.
struct NumericAttribute {
    /// File name under `/sys/class/net/<device>/`.
    file: &'static str,
    /// Family name.
    family: &'static str,
    /// node_exporter's HELP text: `Network device property: <property>`.
    help: &'static str,
    /// Counter rather than gauge.
    counter: bool,
}

const fn attribute(
    file: &'static str,
    family: &'static str,
    help: &'static str,
    counter: bool,
) -> NumericAttribute {
    NumericAttribute {
        file,
        family,
        help,
        counter,
    }
}

/// Index of `speed` in [`NUMERIC`]: it is scaled from Mbit/s to bytes/s.
const SPEED: usize = 14;

/// The numeric attributes node_exporter 1.5 exports.
const NUMERIC: [NumericAttribute; 17] = [
    attribute(
        "addr_assign_type",
        "node_network_address_assign_type",
        "Network device property: address_assign_type",
        false,
    ),
    attribute(
        "carrier",
        "node_network_carrier",
        "Network device property: carrier",
        false,
    ),
    attribute(
        "carrier_changes",
        "node_network_carrier_changes_total",
        "Network device property: carrier_changes_total",
        true,
    ),
    attribute(
        "carrier_up_count",
        "node_network_carrier_up_changes_total",
        "Network device property: carrier_up_changes_total",
        true,
    ),
    attribute(
        "carrier_down_count",
        "node_network_carrier_down_changes_total",
        "Network device property: carrier_down_changes_total",
        true,
    ),
    attribute(
        "dev_id",
        "node_network_device_id",
        "Network device property: device_id",
        false,
    ),
    attribute(
        "dormant",
        "node_network_dormant",
        "Network device property: dormant",
        false,
    ),
    attribute(
        "flags",
        "node_network_flags",
        "Network device property: flags",
        false,
    ),
    attribute(
        "ifindex",
        "node_network_iface_id",
        "Network device property: iface_id",
        false,
    ),
    attribute(
        "iflink",
        "node_network_iface_link",
        "Network device property: iface_link",
        false,
    ),
    attribute(
        "link_mode",
        "node_network_iface_link_mode",
        "Network device property: iface_link_mode",
        false,
    ),
    attribute(
        "mtu",
        "node_network_mtu_bytes",
        "Network device property: mtu_bytes",
        false,
    ),
    attribute(
        "name_assign_type",
        "node_network_name_assign_type",
        "Network device property: name_assign_type",
        false,
    ),
    attribute(
        "netdev_group",
        "node_network_net_dev_group",
        "Network device property: net_dev_group",
        false,
    ),
    attribute(
        "speed",
        "node_network_speed_bytes",
        "Network device property: speed_bytes",
        false,
    ),
    attribute(
        "tx_queue_len",
        "node_network_transmit_queue_length",
        "Network device property: transmit_queue_length",
        false,
    ),
    attribute(
        "type",
        "node_network_protocol_type",
        "Network device property: protocol_type",
        false,
    ),
];

/// The text attributes that label `node_network_info`, in [`Interface::text`] order.
const TEXT: [&str; 5] = ["address", "broadcast", "duplex", "ifalias", "operstate"];

/// Reads `/sys/class/net/*/`.
#[derive(Debug)]
pub struct NetclassCollector {
    roots: Roots,
    ignored_devices: Regex,
}

/// Netclass collector filters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetclassConfig {
    /// Devices matching this are left out. Default `^$` (none), as node_exporter.
    pub ignored_devices: String,
}

impl Default for NetclassConfig {
    fn default() -> Self {
        Self {
            ignored_devices: "^$".into(),
        }
    }
}

/// The `netclass` collector: `[collectors.netclass]`.
pub const SPEC: CollectorSpec = CollectorSpec::system("netclass", |ctx| {
    let config: NetclassConfig = ctx.section("netclass", "collectors.netclass")?;
    Ok(Box::new(NetclassCollector::new(
        ctx.roots.clone(),
        &config,
    )?))
})
.with_section(
    "collectors.netclass",
    &[CollectorOption {
        flag: "ignored-devices",
        aliases: &[],
        key: "ignored_devices",
        value_name: "REGEX",
        help: "Network devices the netclass collector leaves out (regular expression).",
    }],
);

impl NetclassCollector {
    /// A collector reading under `roots`, leaving out devices matching
    /// `config.ignored_devices` (unanchored, as Go's `MatchString`).
    pub fn new(roots: Roots, config: &NetclassConfig) -> Result<Self, BuildError> {
        Ok(Self {
            roots,
            ignored_devices: compile_regex("netclass", "ignored_devices", &config.ignored_devices)?,
        })
    }
}

impl Collector for NetclassCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let class_dir = self.roots.sys("class/net");
        let entries = std::fs::read_dir(&class_dir).map_err(|e| unreadable_dir(&class_dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| unreadable_dir(&class_dir, e))?;
            // Devices are symlinks (or directories); regular files such as
            // `bonding_masters` are not devices.
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if self.ignored_devices.is_match(&name) {
                continue;
            }
            let interface = read_interface(&entry.path())?;
            write_interface(out, &name, &interface);
        }
        Ok(())
    }
}

/// What node_exporter keeps of one `/sys/class/net/<device>/`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Interface {
    /// [`NUMERIC`] attributes, `None` where absent or unreadable.
    numeric: [Option<i64>; NUMERIC.len()],
    /// [`TEXT`] attributes, empty where absent or unreadable.
    text: [String; TEXT.len()],
}

/// Reads the attributes of one device directory.
fn read_interface(dir: &Path) -> Result<Interface, CollectError> {
    let mut interface = Interface::default();
    let entries = std::fs::read_dir(dir).map_err(|e| unreadable_dir(dir, e))?;
    let mut buf = [0u8; SYSFS_READ_LIMIT];
    for entry in entries {
        let entry = entry.map_err(|e| unreadable_dir(dir, e))?;
        // Only regular files are attributes (`statistics/`, `subsystem` are not).
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let numeric = NUMERIC.iter().position(|a| a.file == file);
        let text = TEXT.iter().position(|t| *t == file);
        if numeric.is_none() && text.is_none() {
            continue;
        }
        let Some(value) = read_attribute(&entry.path(), &mut buf)? else {
            continue;
        };
        if let Some(i) = numeric {
            interface.numeric[i] = Some(parse_go_int(&value).unwrap_or(0));
        } else if let Some(i) = text {
            interface.text[i] = value.into_owned();
        }
    }
    Ok(interface)
}

/// Writes the families of one device.
fn write_interface(out: &mut MetricSink, device: &str, interface: &Interface) {
    let labels = [("device", device)];
    let [address, broadcast, duplex, ifalias, operstate] = &interface.text;
    out.gauge(
        "node_network_up",
        "Value is 1 if operstate is 'up', 0 otherwise.",
        &labels,
        if operstate == "up" { 1.0 } else { 0.0 },
    );
    out.gauge(
        "node_network_info",
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
        &[
            ("device", device),
            ("address", address),
            ("broadcast", broadcast),
            ("duplex", duplex),
            ("operstate", operstate),
            ("ifalias", ifalias),
        ],
        1.0,
    );
    for (i, (attribute, value)) in NUMERIC.iter().zip(interface.numeric).enumerate() {
        let Some(mut value) = value else { continue };
        if i == SPEED {
            // Mbit/s to bytes/s in int64 arithmetic, as node_exporter.
            value = value.wrapping_mul(1000 * 1000) / 8;
        }
        if attribute.counter {
            out.counter(attribute.family, attribute.help, &labels, value as f64);
        } else {
            out.gauge(attribute.family, attribute.help, &labels, value as f64);
        }
    }
}

/// Reads a sysfs attribute the way prometheus/procfs `SysReadFile` does: one read of at
/// most 128 bytes, surrounding whitespace trimmed. `None` for the errors node_exporter
/// skips: missing, permission denied, EINVAL and EOPNOTSUPP (attributes a driver does not
/// implement); any other error names the file.
fn read_attribute<'b>(
    path: &Path,
    buf: &'b mut [u8; SYSFS_READ_LIMIT],
) -> Result<Option<Cow<'b, str>>, CollectError> {
    let read = std::fs::File::open(path).and_then(|mut file| file.read(buf));
    match read {
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            Ok(Some(match text {
                Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
                Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
            }))
        }
        Err(e) if skipped(&e) => Ok(None),
        Err(source) => Err(CollectError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn skipped(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied)
        || matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

/// A directory that cannot be listed: node_exporter reports no data when it is missing
/// or not accessible, and fails otherwise.
fn unreadable_dir(dir: &Path, source: std::io::Error) -> CollectError {
    match source.kind() {
        ErrorKind::NotFound | ErrorKind::PermissionDenied => {
            CollectError::NoData(format!("cannot read {}: {source}", dir.display()))
        }
        _ => CollectError::Io {
            path: PathBuf::from(dir),
            source,
        },
    }
}

/// Go's `strconv.ParseUint(s, 16, 64)`: hex digits only.
pub fn parse_hex(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then an unsigned number as
/// [`parse_go_uint`]. `None` when it does not parse or does not fit an i64.
pub fn parse_go_int(s: &str) -> Option<i64> {
    match s.as_bytes().first()? {
        b'-' => 0i64.checked_sub_unsigned(parse_go_uint(&s[1..])?),
        b'+' => i64::try_from(parse_go_uint(&s[1..])?).ok(),
        _ => i64::try_from(parse_go_uint(s)?).ok(),
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: `0x`/`0X` hex, `0o`/`0O` or a leading `0` octal,
/// `0b`/`0B` binary, else decimal; no sign. `None` when it does not parse or does not fit
/// a u64 (Go's digit-separating underscores are not accepted; the kernel never writes
/// them).
pub fn parse_go_uint(s: &str) -> Option<u64> {
    let prefix = s.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match prefix.as_deref() {
        Some("0x") => (16, &s[2..]),
        Some("0b") => (2, &s[2..]),
        Some("0o") => (8, &s[2..]),
        _ if s.len() > 1 && s.starts_with('0') => (8, &s[1..]),
        _ => (10, s),
    };
    // from_str_radix alone would accept a sign.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn device(dir: &Path, name: &str, attributes: &[(&str, &str)]) {
        let dev = dir.join("sys/class/net").join(name);
        std::fs::create_dir_all(dev.join("statistics")).expect("mkdir");
        for (file, value) in attributes {
            std::fs::write(dev.join(file), format!("{value}\n")).expect("write");
        }
    }

    /// eth0 fully populated; wlan0 dormant with unknown speed, an octal carrier, a
    /// decimal `flags` and an unparsable mtu; docker0 nearly empty.
    fn sample_tree(dir: &Path) {
        device(
            dir,
            "eth0",
            &[
                ("addr_assign_type", "0"),
                ("address", "dc:a6:32:00:00:01"),
                ("broadcast", "ff:ff:ff:ff:ff:ff"),
                ("carrier", "1"),
                ("carrier_changes", "3"),
                ("carrier_up_count", "2"),
                ("carrier_down_count", "1"),
                ("dev_id", "0x0"),
                ("dormant", "0"),
                ("duplex", "full"),
                ("flags", "0x1003"),
                ("ifalias", "uplink to switch"),
                ("ifindex", "2"),
                ("iflink", "2"),
                ("link_mode", "0"),
                ("mtu", "1500"),
                ("name_assign_type", "4"),
                ("netdev_group", "0"),
                ("operstate", "up"),
                ("speed", "1000"),
                ("tx_queue_len", "1000"),
                ("type", "1"),
                ("gro_flush_timeout", "0"),
            ],
        );
        device(
            dir,
            "wlan0",
            &[
                ("address", "dc:a6:32:00:00:02"),
                ("operstate", "dormant"),
                ("speed", "-1"),
                ("mtu", "abc"),
                ("flags", "4099"),
                ("type", "1"),
                ("carrier", "010"),
            ],
        );
        device(
            dir,
            "docker0",
            &[("operstate", "down"), ("mtu", "1500"), ("dev_id", "0x10")],
        );
        std::fs::write(dir.join("sys/class/net/bonding_masters"), "\n").expect("write");
    }

    #[test]
    fn tables_agree_with_their_indices() {
        assert_eq!(NUMERIC[SPEED].file, "speed");
        assert_eq!(TEXT[4], "operstate");
    }

    #[test]
    fn parses_go_integers() {
        assert_eq!(parse_go_int("1500"), Some(1500));
        assert_eq!(parse_go_int("-1"), Some(-1));
        assert_eq!(parse_go_int("+7"), Some(7));
        assert_eq!(parse_go_int("0x1003"), Some(4099));
        assert_eq!(parse_go_int("0X10"), Some(16));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0o17"), Some(15));
        assert_eq!(parse_go_int("0b101"), Some(5));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        for bad in [
            "", "-", "0x", "abc", "08", "1.5", "--1", "0x-1", " 1", "-+1",
        ] {
            assert_eq!(parse_go_int(bad), None, "{bad:?}");
        }
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("0x10"), Some(16));
        assert_eq!(parse_go_uint("+1"), None);
        assert_eq!(parse_go_uint("-1"), None);
    }

    #[test]
    fn reads_literal_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        sample_tree(dir.path());
        let collector =
            NetclassCollector::new(Roots::under(dir.path()), &NetclassConfig::default())
                .expect("new");
        let text = collect_text(&collector);
        assert!(text.contains(
            "node_network_info{address=\"dc:a6:32:00:00:01\",broadcast=\"ff:ff:ff:ff:ff:ff\",device=\"eth0\",duplex=\"full\",ifalias=\"uplink to switch\",operstate=\"up\"} 1"
        ), "{text}");
        assert!(text.contains(
            "node_network_info{address=\"\",broadcast=\"\",device=\"docker0\",duplex=\"\",ifalias=\"\",operstate=\"down\"} 1"
        ), "{text}");
        assert_eq!(value_of(&text, "node_network_up{device=\"eth0\"}"), 1.0);
        assert_eq!(value_of(&text, "node_network_up{device=\"wlan0\"}"), 0.0);
        assert_eq!(
            value_of(&text, "node_network_flags{device=\"eth0\"}"),
            4099.0
        );
        assert_eq!(
            value_of(&text, "node_network_flags{device=\"wlan0\"}"),
            4099.0
        );
        assert_eq!(
            value_of(&text, "node_network_carrier{device=\"wlan0\"}"),
            8.0
        );
        assert_eq!(
            value_of(&text, "node_network_mtu_bytes{device=\"wlan0\"}"),
            0.0
        );
        assert_eq!(
            value_of(&text, "node_network_device_id{device=\"docker0\"}"),
            16.0
        );
        assert_eq!(
            value_of(&text, "node_network_speed_bytes{device=\"eth0\"}"),
            125_000_000.0
        );
        assert_eq!(
            value_of(&text, "node_network_speed_bytes{device=\"wlan0\"}"),
            -125_000.0
        );
        assert_eq!(
            value_of(
                &text,
                "node_network_carrier_up_changes_total{device=\"eth0\"}"
            ),
            2.0
        );
        assert!(text.contains("# TYPE node_network_carrier_changes_total counter"));
        assert!(text.contains(
            "# HELP node_network_iface_link_mode Network device property: iface_link_mode\n"
        ));
        // Absent attributes give no sample.
        assert!(!text.contains("node_network_speed_bytes{device=\"docker0\"}"));
        assert!(!text.contains("node_network_dormant{device=\"wlan0\"}"));
        // bonding_masters is a file, not a device.
        assert!(!text.contains("bonding_masters"));
    }

    #[test]
    fn ignores_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        sample_tree(dir.path());
        let config = NetclassConfig {
            ignored_devices: "^(docker|veth)".into(),
        };
        let text =
            collect_text(&NetclassCollector::new(Roots::under(dir.path()), &config).expect("new"));
        assert!(!text.contains("docker0"));
        assert!(text.contains("device=\"wlan0\""));
        let bad = NetclassConfig {
            ignored_devices: "(".into(),
        };
        assert!(NetclassCollector::new(Roots::under(dir.path()), &bad).is_err());
    }

    #[test]
    fn truncates_long_attributes_as_node_exporter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alias = "x".repeat(200);
        device(dir.path(), "eth0", &[("ifalias", &alias)]);
        let interface = read_interface(&dir.path().join("sys/class/net/eth0")).expect("read");
        assert_eq!(interface.text[3].len(), SYSFS_READ_LIMIT);
    }

    #[test]
    fn unreadable_attribute_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        device(dir.path(), "eth0", &[("operstate", "up")]);
        // A directory named like an attribute is skipped, as node_exporter skips
        // anything that is not a regular file.
        std::fs::create_dir(dir.path().join("sys/class/net/eth0/mtu")).expect("mkdir");
        let interface = read_interface(&dir.path().join("sys/class/net/eth0")).expect("read");
        assert_eq!(interface.numeric[11], None);
        // A device entry that is a dangling symlink: as node_exporter, no data.
        std::os::unix::fs::symlink("/nonexistent-nodewatch", dir.path().join("sys/class/net/x"))
            .expect("symlink");
        let collector =
            NetclassCollector::new(Roots::under(dir.path()), &NetclassConfig::default())
                .expect("new");
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("dangling");
        assert!(err.is_no_data(), "{err}");
        assert!(err.to_string().contains("class/net/x"), "{err}");
        // A device entry that is not a directory: a failure naming it.
        std::fs::remove_file(dir.path().join("sys/class/net/x")).expect("rm");
        std::os::unix::fs::symlink("eth0/operstate", dir.path().join("sys/class/net/y"))
            .expect("symlink");
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("not a dir");
        assert!(!err.is_no_data(), "{err}");
        assert!(err.to_string().contains("class/net/y"), "{err}");
    }

    #[test]
    fn missing_class_dir_is_no_data() {
        let collector = NetclassCollector::new(
            Roots::under("/nonexistent-nodewatch-root"),
            &NetclassConfig::default(),
        )
        .expect("new");
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn matches_node_exporter_on_fixtures() {
        let netclass_family = |name: &str| {
            name.starts_with("node_network_")
                && !crate::collectors::netdev::fixture_check::is_netdev_family(name)
        };
        for tree in ["linux", "pi"] {
            let collector = NetclassCollector::new(fixture_roots(tree), &NetclassConfig::default())
                .expect("new");
            let text = collect_text(&collector);
            crate::collectors::netdev::fixture_check::assert_matches_node_exporter(
                tree,
                &text,
                &netclass_family,
            );
        }
    }
}
