//! `diskstats`: node_exporter 1.5's `node_disk_*` families from `/proc/diskstats`, plus
//! the udev properties it adds.
//!
//! Per device not matching `collectors.diskstats.device_exclude`:
//! `node_disk_{reads,writes}_completed_total`, `node_disk_{reads,writes}_merged_total`,
//! `node_disk_read_bytes_total` / `node_disk_written_bytes_total` (sectors × 512),
//! `node_disk_{read,write}_time_seconds_total`, `node_disk_io_now`,
//! `node_disk_io_time_seconds_total`, `node_disk_io_time_weighted_seconds_total`, and,
//! when the kernel has those columns, `node_disk_discards_{completed,merged}_total`,
//! `node_disk_discarded_sectors_total`, `node_disk_discard_time_seconds_total`,
//! `node_disk_flush_requests_total`, `node_disk_flush_requests_time_seconds_total`.
//!
//! `node_disk_info{device,major,minor,model,path,revision,serial,wwn}` is always
//! exported; its udev labels, and `node_disk_filesystem_info`,
//! `node_disk_device_mapper_info` and `node_disk_ata_*`, come from udev's database
//! `run/udev/data/b<major>:<minor>`, read under the root filesystem (`--path.rootfs`,
//! `/` by default, so `/run/udev/data` as node_exporter's default `--path.udev.data`).
//! `--path.udev.data` itself is accepted and ignored. Without udev data the labels are
//! empty, as with node_exporter.

use std::collections::HashMap;
use std::path::Path;

use regex_lite::Regex;
use serde::Deserialize;

use super::{BuildError, CollectError, Collector, CollectorOption, CollectorSpec, compile_regex};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// Statistics columns after major, minor and name that node_exporter exports.
pub const STAT_COLUMNS: usize = 17;

/// Fewest fields of a `/proc/diskstats` line (kernels before 4.18 have 14).
const MIN_FIELDS: usize = 14;

/// How a column is scaled into its family's unit.
#[derive(Debug, Clone, Copy)]
enum Scale {
    Count,
    /// 512-byte sectors to bytes.
    Sectors,
    /// Milliseconds to seconds.
    Ticks,
}

/// Family, HELP, whether it is a counter, and scale of each column, in column order.
const STATS: [(&str, &str, bool, Scale); STAT_COLUMNS] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        true,
        Scale::Sectors,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        true,
        Scale::Ticks,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        true,
        Scale::Sectors,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        true,
        Scale::Ticks,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        false,
        Scale::Count,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        true,
        Scale::Ticks,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        true,
        Scale::Ticks,
    ),
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        true,
        Scale::Count,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        true,
        Scale::Ticks,
    ),
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        true,
        Scale::Count,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        true,
        Scale::Ticks,
    ),
];

/// ATA udev properties exported as gauges when the disk is ATA (`ID_ATA` set).
const ATA_PROPERTIES: [(&str, &str, &str); 3] = [
    (
        "ID_ATA_WRITE_CACHE",
        "node_disk_ata_write_cache",
        "ATA disk has a write cache.",
    ),
    (
        "ID_ATA_WRITE_CACHE_ENABLED",
        "node_disk_ata_write_cache_enabled",
        "ATA disk has its write cache enabled.",
    ),
    (
        "ID_ATA_ROTATION_RATE_RPM",
        "node_disk_ata_rotation_rate_rpm",
        "ATA disk rotation rate in RPMs (0 for SSDs).",
    ),
];

/// node_exporter 1.5's default `--collector.diskstats.device-exclude`.
pub const DEFAULT_DISKSTATS_DEVICE_EXCLUDE: &str =
    "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";

/// Diskstats collector filters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskstatsConfig {
    /// Devices matching this are left out (partitions, loop and ram devices).
    /// Default: node_exporter's.
    pub device_exclude: String,
}

impl Default for DiskstatsConfig {
    fn default() -> Self {
        Self {
            device_exclude: DEFAULT_DISKSTATS_DEVICE_EXCLUDE.into(),
        }
    }
}

/// The `diskstats` collector: `[collectors.diskstats]`.
pub const SPEC: CollectorSpec = CollectorSpec::system("diskstats", |ctx| {
    let config: DiskstatsConfig = ctx.section("diskstats", "collectors.diskstats")?;
    Ok(Box::new(DiskstatsCollector::new(
        ctx.roots.clone(),
        &config,
    )?))
})
.with_section(
    "collectors.diskstats",
    &[CollectorOption {
        flag: "device-exclude",
        aliases: &["ignored-devices"],
        key: "device_exclude",
        value_name: "REGEX",
        help: "Block devices to leave out (regular expression).",
    }],
);

/// Reads `/proc/diskstats` and udev's database.
#[derive(Debug)]
pub struct DiskstatsCollector {
    roots: Roots,
    device_exclude: Regex,
}

impl DiskstatsCollector {
    /// A collector reading under `roots`; fails when `device_exclude` is not a valid
    /// regular expression.
    pub fn new(roots: Roots, config: &DiskstatsConfig) -> Result<Self, BuildError> {
        let device_exclude = compile_regex(
            "diskstats",
            "collectors.diskstats.device_exclude",
            &config.device_exclude,
        )?;
        Ok(Self {
            roots,
            device_exclude,
        })
    }
}

impl Collector for DiskstatsCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("diskstats");
        let text = read_file(&path)?;
        let udev_dir = self.roots.root("run/udev/data");
        for disk in parse_diskstats(&text, &path)? {
            if self.device_exclude.is_match(disk.device) {
                continue;
            }
            let udev_text =
                std::fs::read_to_string(udev_dir.join(format!("b{}:{}", disk.major, disk.minor)))
                    .unwrap_or_default();
            write_disk(out, &disk, &parse_udev_properties(&udev_text));
        }
        Ok(())
    }
}

/// One line of `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk<'a> {
    /// Major device number.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Device name (`mmcblk0`).
    pub device: &'a str,
    /// The statistics columns; only the first `columns` are real.
    pub stats: [u64; STAT_COLUMNS],
    /// How many statistics columns the kernel printed (11, 15 or 17), at most
    /// [`STAT_COLUMNS`].
    pub columns: usize,
}

/// Parses `/proc/diskstats`: `major minor name` and 11, 15 or 17 (or more, ignored)
/// statistics.
pub fn parse_diskstats<'a>(text: &'a str, path: &Path) -> Result<Vec<Disk<'a>>, CollectError> {
    let mut disks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < MIN_FIELDS {
            return Err(CollectError::parse(
                path,
                Some(line_number),
                format!(
                    "expected at least {MIN_FIELDS} fields, found {}",
                    fields.len()
                ),
            ));
        }
        let number = |text: &str| -> Result<u64, CollectError> {
            text.parse().map_err(|_| {
                CollectError::parse(
                    path,
                    Some(line_number),
                    format!("expected an unsigned integer, found {text:?}"),
                )
            })
        };
        let device_number = |text: &str| -> Result<u32, CollectError> {
            u32::try_from(number(text)?).map_err(|_| {
                CollectError::parse(
                    path,
                    Some(line_number),
                    format!("device number {text} out of range"),
                )
            })
        };
        let mut disk = Disk {
            major: device_number(fields[0])?,
            minor: device_number(fields[1])?,
            device: fields[2],
            stats: [0; STAT_COLUMNS],
            columns: (fields.len() - 3).min(STAT_COLUMNS),
        };
        for (stat, field) in disk.stats.iter_mut().zip(&fields[3..]) {
            *stat = number(field)?;
        }
        disks.push(disk);
    }
    Ok(disks)
}

/// The `E:NAME=value` properties of a udev database file (`/run/udev/data/b179:0`).
pub fn parse_udev_properties(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("E:")?.split_once('='))
        .collect()
}

/// Writes one disk's families.
fn write_disk(out: &mut MetricSink, disk: &Disk<'_>, udev: &HashMap<&str, &str>) {
    let property = |name: &str| udev.get(name).copied().unwrap_or("");
    let device = disk.device;
    let major = disk.major.to_string();
    let minor = disk.minor.to_string();
    out.gauge(
        "node_disk_info",
        "Info of /sys/block/<block_device>.",
        &[
            ("device", device),
            ("major", &major),
            ("minor", &minor),
            ("path", property("ID_PATH")),
            ("wwn", property("ID_WWN")),
            ("model", property("ID_MODEL")),
            // node_exporter 1.5 takes the short serial only.
            ("serial", property("ID_SERIAL_SHORT")),
            ("revision", property("ID_REVISION")),
        ],
        1.0,
    );

    let labels = [("device", device)];
    for (&(name, help, counter, scale), &raw) in STATS.iter().zip(&disk.stats).take(disk.columns) {
        // Multiplications as node_exporter does them, for identical floats.
        let value = match scale {
            Scale::Count => raw as f64,
            Scale::Sectors => raw as f64 * 512.0,
            Scale::Ticks => raw as f64 * 0.001,
        };
        if counter {
            out.counter(name, help, &labels, value);
        } else {
            out.gauge(name, help, &labels, value);
        }
    }

    let fs_type = property("ID_FS_TYPE");
    if !fs_type.is_empty() {
        out.gauge(
            "node_disk_filesystem_info",
            "Info about disk filesystem.",
            &[
                ("device", device),
                ("type", fs_type),
                ("usage", property("ID_FS_USAGE")),
                ("uuid", property("ID_FS_UUID")),
                ("version", property("ID_FS_VERSION")),
            ],
            1.0,
        );
    }
    let dm_name = property("DM_NAME");
    if !dm_name.is_empty() {
        out.gauge(
            "node_disk_device_mapper_info",
            "Info about disk device mapper.",
            &[
                ("device", device),
                ("name", dm_name),
                ("uuid", property("DM_UUID")),
                ("vg_name", property("DM_VG_NAME")),
                ("lv_name", property("DM_LV_NAME")),
                ("lv_layer", property("DM_LV_LAYER")),
            ],
            1.0,
        );
    }
    if !property("ID_ATA").is_empty() {
        for (key, name, help) in ATA_PROPERTIES {
            let Some(text) = udev.get(key) else {
                continue;
            };
            match text.parse::<f64>() {
                Ok(value) => out.gauge(name, help, &labels, value),
                Err(_) => tracing::debug!(
                    device,
                    property = key,
                    value = *text,
                    "Skipping an ATA udev property that is not a number."
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    const LITERAL: &str = "\
 179       0 mmcblk0 12345 678 901234 5678 2345 678 90123 4567 0 8901 12345 10 0 20 30 40 50
 179       1 mmcblk0p1 100 0 2000 30 0 0 0 0 0 40 30 0 0 0 0 0 0
   8       0 sda 1 2 3 4 5 6 7 8 9 10 11
 254       0 dm-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17
";

    fn collector(roots: Roots) -> DiskstatsCollector {
        DiskstatsCollector::new(roots, &DiskstatsConfig::default()).expect("default config")
    }

    #[test]
    fn parses_literal() {
        let disks = parse_diskstats(LITERAL, Path::new("diskstats")).expect("parse");
        assert_eq!(disks.len(), 5);
        assert_eq!(disks[0].major, 179);
        assert_eq!(disks[0].device, "mmcblk0");
        assert_eq!(disks[0].columns, 17);
        assert_eq!(disks[0].stats[16], 50);
        assert_eq!(disks[2].columns, 11);
        assert_eq!(disks[3].columns, 15);
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let err = parse_diskstats(
            "   8 0 sda 1 2 3 4 5 6 7 8 9 10 11\n   8 1 sda1 1 2 3\n",
            Path::new("x/diskstats"),
        )
        .expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/diskstats line 2: expected at least 14 fields, found 6"
        );
        let err = parse_diskstats(
            "   8 0 sda 1 2 3 4 5 six 7 8 9 10 11\n",
            Path::new("x/diskstats"),
        )
        .expect_err("garbage");
        assert!(
            err.to_string().starts_with(
                "cannot parse x/diskstats line 1: expected an unsigned integer, found \"six\""
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_regex_is_a_build_error() {
        let config = DiskstatsConfig {
            device_exclude: "(".into(),
        };
        let err = DiskstatsCollector::new(Roots::default(), &config).expect_err("bad regex");
        assert!(err.to_string().contains("device_exclude"), "{err}");
    }

    #[test]
    fn missing_file_is_no_data() {
        let err = collector(Roots::under("/nonexistent-nodewatch-root"))
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    #[test]
    fn exports_columns_and_udev_properties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc")).expect("mkdir");
        std::fs::write(root.join("proc/diskstats"), LITERAL).expect("write");
        let udev = root.join("run/udev/data");
        std::fs::create_dir_all(&udev).expect("mkdir");
        std::fs::write(
            udev.join("b179:0"),
            "S:disk/by-path/platform-fe340000.mmc\nI:123\nE:ID_PATH=platform-fe340000.mmc\nE:ID_SERIAL=0x12345678\nE:ID_MODEL=SD32G\nE:ID_REVISION=0x8\nE:ID_WWN=0x123\nE:ID_FS_TYPE=\nG:systemd\n",
        )
        .expect("write");
        std::fs::write(
            udev.join("b8:0"),
            "E:ID_ATA=1\nE:ID_ATA_WRITE_CACHE=1\nE:ID_ATA_WRITE_CACHE_ENABLED=abc\nE:ID_ATA_ROTATION_RATE_RPM=0\nE:ID_MODEL=a=b\nE:ID_SERIAL_SHORT=S123\nE:SCSI_IDENT_SERIAL=SCSI1\nE:ID_FS_TYPE=ext4\nE:ID_FS_USAGE=filesystem\nE:ID_FS_UUID=abcd\nE:ID_FS_VERSION=1.0\n",
        )
        .expect("write");
        std::fs::write(
            udev.join("b254:0"),
            "E:DM_NAME=vg-root\nE:DM_UUID=LVM-xyz\nE:DM_VG_NAME=vg\nE:DM_LV_NAME=root\nE:DM_LV_LAYER=\n",
        )
        .expect("write");
        let text = collect_text(&collector(Roots::under(root)));
        // Values and labels checked against node_exporter 1.5 on the same files.
        for (series, value) in [
            (
                "node_disk_reads_completed_total{device=\"mmcblk0\"}",
                12345.0,
            ),
            (
                "node_disk_read_bytes_total{device=\"mmcblk0\"}",
                4.61431808e+08,
            ),
            (
                "node_disk_read_time_seconds_total{device=\"mmcblk0\"}",
                5.678,
            ),
            (
                "node_disk_written_bytes_total{device=\"mmcblk0\"}",
                4.6142976e+07,
            ),
            ("node_disk_io_now{device=\"dm-0\"}", 9.0),
            ("node_disk_io_time_seconds_total{device=\"mmcblk0\"}", 8.901),
            (
                "node_disk_io_time_weighted_seconds_total{device=\"mmcblk0\"}",
                12.345,
            ),
            (
                "node_disk_discards_completed_total{device=\"mmcblk0\"}",
                10.0,
            ),
            (
                "node_disk_discarded_sectors_total{device=\"mmcblk0\"}",
                20.0,
            ),
            (
                "node_disk_discard_time_seconds_total{device=\"dm-0\"}",
                0.015,
            ),
            ("node_disk_flush_requests_total{device=\"mmcblk0\"}", 40.0),
            (
                "node_disk_flush_requests_time_seconds_total{device=\"mmcblk0\"}",
                0.05,
            ),
            (
                "node_disk_info{device=\"mmcblk0\",major=\"179\",minor=\"0\",model=\"SD32G\",path=\"platform-fe340000.mmc\",revision=\"0x8\",serial=\"\",wwn=\"0x123\"}",
                1.0,
            ),
            (
                "node_disk_info{device=\"sda\",major=\"8\",minor=\"0\",model=\"a=b\",path=\"\",revision=\"\",serial=\"S123\",wwn=\"\"}",
                1.0,
            ),
            (
                "node_disk_info{device=\"mmcblk0p1\",major=\"179\",minor=\"1\",model=\"\",path=\"\",revision=\"\",serial=\"\",wwn=\"\"}",
                1.0,
            ),
            (
                "node_disk_filesystem_info{device=\"sda\",type=\"ext4\",usage=\"filesystem\",uuid=\"abcd\",version=\"1.0\"}",
                1.0,
            ),
            (
                "node_disk_device_mapper_info{device=\"dm-0\",lv_layer=\"\",lv_name=\"root\",name=\"vg-root\",uuid=\"LVM-xyz\",vg_name=\"vg\"}",
                1.0,
            ),
            ("node_disk_ata_write_cache{device=\"sda\"}", 1.0),
            ("node_disk_ata_rotation_rate_rpm{device=\"sda\"}", 0.0),
        ] {
            assert_eq!(value_of(&text, series), value, "{series}");
        }
        // Columns the kernel did not print, unparsable ATA values, excluded devices.
        assert!(!text.contains("node_disk_discards_completed_total{device=\"sda\"}"));
        assert!(!text.contains("node_disk_flush_requests_total{device=\"dm-0\"}"));
        assert!(!text.contains("node_disk_ata_write_cache_enabled"));
        assert!(!text.contains("loop0"));
        assert!(!text.contains("node_disk_filesystem_info{device=\"mmcblk0\""));
        assert!(text.contains("# TYPE node_disk_io_now gauge\n"));
        assert!(text.contains("# TYPE node_disk_reads_completed_total counter\n"));
    }

    /// Every `node_disk_*` family node_exporter emitted on `tree`.
    fn disk_families(tree: &str) -> Vec<String> {
        let reference = std::fs::read_to_string(fixture_dir(tree).join("node_exporter-1.5.prom"))
            .expect("reference");
        reference
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("node_disk_"))
            .map(str::to_string)
            .collect()
    }

    fn same_as_node_exporter(tree: &str) {
        let text = collect_text(&collector(fixture_roots(tree)));
        let families = disk_families(tree);
        assert!(
            families
                .iter()
                .any(|f| f == "node_disk_reads_completed_total"),
            "{families:?}"
        );
        let families: Vec<&str> = families.iter().map(String::as_str).collect();
        assert_same_as_node_exporter(tree, &text, &families);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        same_as_node_exporter("pi");
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        same_as_node_exporter("linux");
    }
}
