//! `time`: the system clock and clocksources.
//!
//! Exports `node_time_seconds` and `node_time_zone_offset_seconds{time_zone}` from the
//! live clock and local time zone (as node_exporter, not through the roots), and
//! `node_time_clocksource_available_info{device,clocksource}` /
//! `node_time_clocksource_current_info{device,clocksource}` from
//! `/sys/devices/system/clocksource/clocksource*/{available,current}_clocksource`.
//! `device` is the clocksource directory's position in name order, as in 1.5.

use std::ffi::CStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// A clocksource device: the clocksources it may use and the one it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clocksource {
    /// `available_clocksource`, split on whitespace.
    pub available: Vec<String>,
    /// `current_clocksource`, trimmed.
    pub current: String,
}

/// Reads the clock and `/sys/devices/system/clocksource`.
#[derive(Debug)]
pub struct TimeCollector {
    roots: Roots,
}

impl TimeCollector {
    /// A collector reading the clocksources under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `time` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("time", |ctx| {
    Ok(Box::new(TimeCollector::new(ctx.roots.clone())))
});

impl Collector for TimeCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| CollectError::Other(format!("system clock before 1970: {e}")))?;
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            &[],
            now.as_nanos() as f64 / 1e9,
        );
        let (zone, offset) = local_zone(now.as_secs())?;
        out.gauge(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            &[("time_zone", &zone)],
            offset as f64,
        );
        for (index, source) in read_clocksources(&self.roots.sys("devices/system/clocksource"))?
            .iter()
            .enumerate()
        {
            let device = index.to_string();
            for available in &source.available {
                out.gauge(
                    "node_time_clocksource_available_info",
                    "Available clocksources read from '/sys/devices/system/clocksource'.",
                    &[("device", &device), ("clocksource", available)],
                    1.0,
                );
            }
            out.gauge(
                "node_time_clocksource_current_info",
                "Current clocksource read from '/sys/devices/system/clocksource'.",
                &[("device", &device), ("clocksource", &source.current)],
                1.0,
            );
        }
        Ok(())
    }
}

/// The clocksource devices under `dir`, in name order. No directory means none (VMs
/// and containers may lack it; node_exporter 1.5 then exports the time alone), but a
/// device missing one of its two files is an error, as in 1.5.
pub fn read_clocksources(dir: &Path) -> Result<Vec<Clocksource>, CollectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(_) => return Ok(Vec::new()),
    };
    let mut devices: Vec<PathBuf> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let digits = name.strip_prefix("clocksource")?;
            digits
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| dir.join(name))
        })
        .collect();
    devices.sort_unstable();
    devices
        .iter()
        .map(|device| {
            let available = read_required(&device.join("available_clocksource"))?;
            let current = read_required(&device.join("current_clocksource"))?;
            Ok(parse_clocksource(&available, &current))
        })
        .collect()
}

/// Builds a [`Clocksource`] from its two attribute files' text.
pub fn parse_clocksource(available: &str, current: &str) -> Clocksource {
    Clocksource {
        available: available.split_whitespace().map(str::to_string).collect(),
        current: current.trim().to_string(),
    }
}

/// Reads a file that must exist: unlike [`crate::paths::read_file`], ENOENT is a failure.
fn read_required(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == ErrorKind::NotFound {
            CollectError::Io {
                path: path.to_path_buf(),
                source,
            }
        } else {
            CollectError::io(path, source)
        }
    })
}

/// The local time zone's abbreviation (`UTC`, `CET`, `CEST`) and offset from UTC in
/// seconds at `unix_seconds`, as Go's `time.Now().Zone()` gives them: from `TZ`, else
/// `/etc/localtime`.
pub fn local_zone(unix_seconds: u64) -> Result<(String, i64), CollectError> {
    let time = libc::time_t::try_from(unix_seconds)
        .map_err(|_| CollectError::Other(format!("time {unix_seconds} out of range")))?;
    local_zone_at(time).ok_or_else(|| CollectError::Other("localtime_r failed".to_string()))
}

/// `long` is 32 bits on 32-bit ARM, 64 elsewhere.
fn wide(value: impl Into<i64>) -> i64 {
    value.into()
}

/// `localtime_r(3)`: the standard library has no time zone support and `nix` does not
/// wrap it.
#[allow(unsafe_code)]
fn local_zone_at(time: libc::time_t) -> Option<(String, i64)> {
    // SAFETY: `tm` is plain data (integers and a pointer) for which all-zero bytes are
    // a valid value; localtime_r only writes into it and is thread-safe. On success
    // `tm_zone` is null or points to a NUL-terminated string owned by the C library,
    // which stays valid until the time zone is changed; it is copied out at once.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&time, &mut tm).is_null() {
            return None;
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            CStr::from_ptr(tm.tm_zone).to_string_lossy().into_owned()
        };
        Some((zone, wide(tm.tm_gmtoff)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal() {
        assert_eq!(
            parse_clocksource("tsc hpet acpi_pm \n", "tsc\n"),
            Clocksource {
                available: vec!["tsc".into(), "hpet".into(), "acpi_pm".into()],
                current: "tsc".into(),
            }
        );
    }

    #[test]
    fn numbers_devices_by_name_order_like_node_exporter() {
        // node_exporter 1.5 gave device 0, 1, 2 to clocksource0, 1, 10.
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().join("sys/devices/system/clocksource");
        write(&base, "clocksource0/available_clocksource", "a b\n");
        write(&base, "clocksource0/current_clocksource", "a\n");
        write(&base, "clocksource10/available_clocksource", "c\n");
        write(&base, "clocksource10/current_clocksource", "c\n");
        write(&base, "clocksource1/available_clocksource", "  \n");
        write(&base, "clocksource1/current_clocksource", "d\n");
        write(&base, "power/control", "auto\n");
        let text = collect_text(&TimeCollector::new(Roots::under(dir.path())));
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("node_time_clocksource"))
            .collect();
        assert_eq!(
            info,
            [
                r#"node_time_clocksource_available_info{clocksource="a",device="0"} 1"#,
                r#"node_time_clocksource_available_info{clocksource="b",device="0"} 1"#,
                r#"node_time_clocksource_available_info{clocksource="c",device="2"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="a",device="0"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="c",device="2"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="d",device="1"} 1"#,
            ]
        );
    }

    #[test]
    fn missing_device_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            "tsc\n",
        );
        let err = TimeCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("missing file");
        assert!(!err.is_no_data());
        assert!(err.to_string().contains("available_clocksource"), "{err}");
    }

    #[test]
    fn exports_live_time_without_clocksources() {
        // The clock is live: check the shape, not the values.
        let text = collect_text(&TimeCollector::new(Roots::under(
            "/nonexistent-nodewatch-root",
        )));
        let now = value_of(&text, "node_time_seconds");
        let expected = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!((now - expected).abs() < 60.0, "{now} vs {expected}");
        assert!(
            text.contains("# HELP node_time_seconds System time in seconds since epoch (1970).\n")
        );
        assert!(
            text.contains("node_time_zone_offset_seconds{time_zone=\""),
            "{text}"
        );
        assert!(!text.contains("clocksource"));
    }

    #[test]
    fn local_zone_is_sane() {
        let (zone, offset) = local_zone(1_700_000_000).expect("zone");
        assert!(!zone.is_empty());
        assert!(offset.abs() <= 14 * 3600, "{offset}");
    }

    /// Our clocksource samples on a fixture tree.
    fn clocksource_lines(tree: &str) -> Vec<String> {
        collect_text(&TimeCollector::new(fixture_roots(tree)))
            .lines()
            .filter(|l| l.starts_with("node_time_clocksource"))
            .map(str::to_string)
            .collect()
    }

    // The references leave out the time collector (its clock and zone are live), so the
    // clocksource samples are compared with what node_exporter 1.5 printed when run
    // with `--collector.time` on each tree (clocksource files added to the trees for
    // this collector; linux/ copied from the capturing VM).
    #[test]
    fn same_clocksources_as_node_exporter_on_linux_fixture() {
        assert_eq!(
            clocksource_lines("linux"),
            [
                r#"node_time_clocksource_available_info{clocksource="kvm-clock",device="0"} 1"#,
                r#"node_time_clocksource_available_info{clocksource="tsc",device="0"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="tsc",device="0"} 1"#,
            ]
        );
    }

    #[test]
    fn same_clocksources_as_node_exporter_on_pi_fixture() {
        assert_eq!(
            clocksource_lines("pi"),
            [
                r#"node_time_clocksource_available_info{clocksource="arch_sys_counter",device="0"} 1"#,
                r#"node_time_clocksource_current_info{clocksource="arch_sys_counter",device="0"} 1"#,
            ]
        );
    }
}
