//! `thermal_zone`: `node_thermal_zone_temp{type,zone}` from sysfs
//! `class/thermal/thermal_zone*/{type,temp}`, and
//! `node_cooling_device_{cur,max}_state{name,type}` from
//! `class/thermal/cooling_device*/{type,cur_state,max_state}`, as node_exporter 1.5.
//!
//! On a Pi the SoC temperature is `node_thermal_zone_temp{type="cpu-thermal",zone="0"}`.
//!
//! Differences from node_exporter 1.5, on purpose: a zone or cooling device whose files
//! cannot be read (a sensor that answers ENODATA or EINVAL while its device is down,
//! a zone that vanished) is skipped rather than failing the whole collector, as later
//! node_exporter versions do; the unexported `policy`, `mode` and `passive` attributes
//! are not read. A value that is not a number is still an error naming the file.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

const ZONE_PREFIX: &str = "thermal_zone";
const COOLING_PREFIX: &str = "cooling_device";

/// Reads `class/thermal`.
#[derive(Debug)]
pub struct ThermalZoneCollector {
    roots: Roots,
}

impl ThermalZoneCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `thermal_zone` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("thermal_zone", |ctx| {
    Ok(Box::new(ThermalZoneCollector::new(ctx.roots.clone())))
});

impl Collector for ThermalZoneCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let class_dir = self.roots.sys("class/thermal");
        let entries = match std::fs::read_dir(&class_dir) {
            Ok(entries) => entries,
            // node_exporter 1.5 globs this directory: no directory is no zones, and a
            // success.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(CollectError::io(&class_dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| CollectError::io(&class_dir, e))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let dir = entry.path();
            if let Some(zone) = numbered(name, ZONE_PREFIX) {
                let Some((kind, temp)) = read_zone(&dir)? else {
                    continue;
                };
                out.gauge(
                    "node_thermal_zone_temp",
                    "Zone temperature in Celsius",
                    &[("type", &kind), ("zone", zone)],
                    temp as f64 / 1000.0,
                );
            } else if let Some(device) = numbered(name, COOLING_PREFIX) {
                let Some((kind, cur, max)) = read_cooling_device(&dir)? else {
                    continue;
                };
                let labels = [("name", device), ("type", kind.as_str())];
                out.gauge(
                    "node_cooling_device_cur_state",
                    "Current throttle state of the cooling device",
                    &labels,
                    cur as f64,
                );
                out.gauge(
                    "node_cooling_device_max_state",
                    "Maximum throttle state of the cooling device",
                    &labels,
                    max as f64,
                );
            }
        }
        Ok(())
    }
}

/// The part after `prefix` when `name` matches the glob `<prefix>[0-9]*`.
fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    rest.starts_with(|c: char| c.is_ascii_digit())
        .then_some(rest)
}

/// A zone's type and temperature in millidegrees Celsius; `None` when its files cannot
/// be read.
fn read_zone(dir: &Path) -> Result<Option<(String, i64)>, CollectError> {
    let Some(kind) = read_attribute(&dir.join("type")) else {
        return Ok(None);
    };
    let temp_path = dir.join("temp");
    let Some(temp) = read_attribute(&temp_path) else {
        return Ok(None);
    };
    Ok(Some((kind, parse_i64(&temp, &temp_path)?)))
}

/// A cooling device's type, current and maximum state; `None` when its files cannot be
/// read.
fn read_cooling_device(dir: &Path) -> Result<Option<(String, i64, i64)>, CollectError> {
    let Some(kind) = read_attribute(&dir.join("type")) else {
        return Ok(None);
    };
    let max_path = dir.join("max_state");
    let cur_path = dir.join("cur_state");
    let (Some(max), Some(cur)) = (read_attribute(&max_path), read_attribute(&cur_path)) else {
        return Ok(None);
    };
    // cur_state may be -1 (intel_powerclamp), hence signed.
    Ok(Some((
        kind,
        parse_i64(&cur, &cur_path)?,
        parse_i64(&max, &max_path)?,
    )))
}

/// A sysfs attribute, trimmed; `None` (logged at debug) when it cannot be read.
fn read_attribute(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(error) => {
            tracing::debug!(
                path = %path.display(),
                %error,
                "Skipping a thermal zone or cooling device whose attribute cannot be read."
            );
            None
        }
    }
}

/// Parses a decimal integer attribute (already trimmed), naming the file when it is not one.
pub fn parse_i64(text: &str, path: &Path) -> Result<i64, CollectError> {
    text.parse().map_err(|_| {
        CollectError::parse(
            path,
            Some(1),
            format!("expected an integer, found {text:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn zone(root: &Path, name: &str, kind: &str, temp: &str) {
        let dir = root.join("sys/class/thermal").join(name);
        write(&dir.join("type"), &format!("{kind}\n"));
        write(&dir.join("temp"), &format!("{temp}\n"));
        write(&dir.join("policy"), "step_wise\n");
    }

    #[test]
    fn parses_literals() {
        assert_eq!(parse_i64("45764", Path::new("temp")).expect("int"), 45764);
        assert_eq!(parse_i64("-5", Path::new("temp")).expect("negative"), -5);
        assert_eq!(numbered("thermal_zone0", ZONE_PREFIX), Some("0"));
        assert_eq!(numbered("thermal_zone10", ZONE_PREFIX), Some("10"));
        assert_eq!(numbered("thermal_zone", ZONE_PREFIX), None);
        assert_eq!(numbered("thermal_zonex", ZONE_PREFIX), None);
        assert_eq!(numbered("cooling_device3", COOLING_PREFIX), Some("3"));
    }

    #[test]
    fn reads_zones_and_cooling_devices() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        zone(root, "thermal_zone0", "cpu-thermal", "45764");
        zone(root, "thermal_zone1", "acpitz", "-5");
        let cooling = root.join("sys/class/thermal/cooling_device0");
        write(&cooling.join("type"), "Processor\n");
        write(&cooling.join("cur_state"), " 1 \n");
        write(&cooling.join("max_state"), "3\n");
        // Not a zone: ignored.
        write(&root.join("sys/class/thermal/thermal_zonex/temp"), "1\n");
        let text = collect_text(&ThermalZoneCollector::new(Roots::under(root)));
        assert_eq!(
            value_of(
                &text,
                "node_thermal_zone_temp{type=\"cpu-thermal\",zone=\"0\"}"
            ),
            45.764
        );
        assert_eq!(
            value_of(&text, "node_thermal_zone_temp{type=\"acpitz\",zone=\"1\"}"),
            -0.005
        );
        assert_eq!(
            value_of(
                &text,
                "node_cooling_device_cur_state{name=\"0\",type=\"Processor\"}"
            ),
            1.0
        );
        assert_eq!(
            value_of(
                &text,
                "node_cooling_device_max_state{name=\"0\",type=\"Processor\"}"
            ),
            3.0
        );
        assert!(text.contains("# HELP node_thermal_zone_temp Zone temperature in Celsius\n"));
    }

    #[test]
    fn unreadable_zone_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        zone(root, "thermal_zone0", "cpu-thermal", "45764");
        write(
            &root.join("sys/class/thermal/thermal_zone1/type"),
            "iwlwifi_1\n",
        );
        let text = collect_text(&ThermalZoneCollector::new(Roots::under(root)));
        assert!(text.contains("zone=\"0\""), "{text}");
        assert!(!text.contains("iwlwifi"), "{text}");
    }

    #[test]
    fn garbage_temperature_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        zone(dir.path(), "thermal_zone0", "cpu-thermal", "4x");
        let err = ThermalZoneCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("garbage");
        let message = err.to_string();
        assert!(
            message.contains("thermal_zone0/temp line 1: expected an integer, found \"4x\""),
            "{message}"
        );
    }

    #[test]
    fn missing_class_dir_is_an_empty_success() {
        // node_exporter 1.5 reports success with no samples here (it globs the directory).
        let mut sink = MetricSink::new();
        ThermalZoneCollector::new(Roots::under("/nonexistent-nodewatch-root"))
            .collect(&mut sink)
            .expect("no zones");
        assert!(sink.is_empty());
    }

    const FAMILIES: &[&str] = &[
        "node_thermal_zone_temp",
        "node_cooling_device_cur_state",
        "node_cooling_device_max_state",
    ];

    fn families_on(tree: &str) -> Vec<&'static str> {
        let reference = std::fs::read_to_string(fixture_dir(tree).join("node_exporter-1.5.prom"))
            .expect("reference");
        FAMILIES
            .iter()
            .copied()
            .filter(|f| reference.contains(&format!("\n{f}{{")))
            .collect()
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&ThermalZoneCollector::new(fixture_roots("pi")));
        let families = families_on("pi");
        assert!(families.contains(&"node_thermal_zone_temp"));
        assert_same_as_node_exporter("pi", &text, &families);
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&ThermalZoneCollector::new(fixture_roots("linux")));
        let families = families_on("linux");
        if families.is_empty() {
            // This machine has no thermal zones: neither has any sample.
            assert!(!text.contains("node_thermal_zone_temp{"), "{text}");
        } else {
            assert_same_as_node_exporter("linux", &text, &families);
        }
    }
}
