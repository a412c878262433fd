//! `hwmon`: node_exporter 1.5's `node_hwmon_*` families from sysfs `class/hwmon/hwmon*`
//! (each chip's directory and its `device` directory).
//!
//! Sensor files are named `<type><n>_<element>` (`temp1_input`, `in0_lcrit_alarm`,
//! `fan1_min`). As in node_exporter, every element of the known sensor types becomes a
//! family `node_hwmon_<type>[_<element>]<unit>` labelled `{chip,sensor}`:
//! `node_hwmon_temp_celsius`, `node_hwmon_temp_crit_celsius`, `node_hwmon_temp_max_celsius`,
//! `node_hwmon_in_volts`, `node_hwmon_in_lcrit_alarm_volts` (node_exporter gives alarm
//! files other than `<type><n>_alarm` the unit of their sensor: `in0_lcrit_alarm` = 1 is
//! exported as 0.001 volts), `node_hwmon_fan_rpm`, `node_hwmon_curr_amps`,
//! `node_hwmon_power_*_watt`, `node_hwmon_energy_joule_total`, `node_hwmon_humidity`,
//! `node_hwmon_*_alarm`, `node_hwmon_*_fault`, `node_hwmon_*_beep_enabled`,
//! `node_hwmon_beep_enabled`, `node_hwmon_voltage_regulator_version`,
//! `node_hwmon_update_interval_seconds`, and a unit-less family for anything else; plus
//! `node_hwmon_chip_names{chip,chip_name}` and `node_hwmon_sensor_label{chip,sensor,label}`.
//!
//! The `chip` label is derived as node_exporter derives it: from the resolved `device`
//! link, `<parent dir>_<device dir>` cleaned (a Pi's `raspberrypi-hwmon` under
//! `soc:firmware` is `soc:firmware_raspberrypi_hwmon`, its CPU sensor under
//! `thermal` is `thermal_thermal_zone0`), else the `name` file, else `hwmonN`.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use prometheus::proto::MetricType;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::{MetricSink, metric_with_labels};
use crate::paths::Roots;

/// Sensor types node_exporter 1.5 reads; other files are ignored.
const SENSOR_TYPES: &[&str] = &[
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// node_exporter reads at most this much of a sensor file, in one read (some broken
/// drivers answer EAGAIN forever to a read loop).
const SENSOR_READ_LIMIT: usize = 128;

/// Properties of one sensor (`temp1`): element (`input`, `crit`, `""` for a bare
/// `temp1` file) to raw value.
type SensorData = BTreeMap<String, String>;

/// Reads `class/hwmon`.
#[derive(Debug)]
pub struct HwmonCollector {
    roots: Roots,
}

impl HwmonCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `hwmon` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("hwmon", |ctx| {
    Ok(Box::new(HwmonCollector::new(ctx.roots.clone())))
});

impl Collector for HwmonCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let class_dir = self.roots.sys("class/hwmon");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&class_dir)
            .map_err(|e| CollectError::io(&class_dir, e))?
            .flatten()
            .map(|e| e.path())
            // Entries are symlinks to the devices; follow them, keep directories.
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_dir()))
            .collect();
        dirs.sort();
        // Two chips with the same derived name would give duplicate series; as with
        // node_exporter's registry, the first one wins.
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut last_error = None;
        for dir in &dirs {
            if let Err(error) = collect_chip(dir, out, &mut seen) {
                // As node_exporter: go on with the other chips, report the error.
                last_error = Some(error);
            }
        }
        match last_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Writes one chip's families.
fn collect_chip(
    dir: &Path,
    out: &mut MetricSink,
    seen: &mut HashSet<(String, String)>,
) -> Result<(), CollectError> {
    let chip = chip_name(dir)?;
    let mut data: BTreeMap<String, SensorData> = BTreeMap::new();
    read_sensor_files(dir, &mut data)?;
    let device_dir = dir.join("device");
    if std::fs::metadata(&device_dir).is_ok() {
        read_sensor_files(&device_dir, &mut data)?;
    }

    if let Some(readable) = human_readable_chip_name(dir)
        && seen.insert((chip.clone(), String::new()))
    {
        out.gauge(
            "node_hwmon_chip_names",
            "Annotation metric for human-readable chip names",
            &[("chip", &chip), ("chip_name", &readable)],
            1.0,
        );
    }
    for (sensor, properties) in &data {
        if !seen.insert((chip.clone(), sensor.clone())) {
            tracing::debug!(
                chip = chip.as_str(),
                sensor = sensor.as_str(),
                "Duplicate hwmon sensor."
            );
            continue;
        }
        write_sensor(out, &chip, sensor, properties);
    }
    Ok(())
}

/// Adds the sensor files of `dir` to `data`, keyed by sensor (`temp1`) then element.
fn read_sensor_files(
    dir: &Path,
    data: &mut BTreeMap<String, SensorData>,
) -> Result<(), CollectError> {
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| CollectError::io(dir, e))?
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    // The order node_exporter reads them in, which decides between `temp01_input` and
    // `temp1_input`.
    names.sort();
    for (name, path) in names {
        let Some((sensor_type, number, element)) = explode_sensor_filename(&name) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&sensor_type) {
            continue;
        }
        let Some(value) = read_sensor_value(&path) else {
            continue;
        };
        data.entry(format!("{sensor_type}{number}"))
            .or_default()
            .insert(element.to_string(), value);
    }
    Ok(())
}

/// Splits `temp1_input` into `("temp", 1, "input")` as node_exporter's
/// `^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$` does: a missing number is 0,
/// a missing element is `""`.
pub fn explode_sensor_filename(name: &str) -> Option<(&str, u64, &str)> {
    let type_end = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    if type_end == 0 {
        return None;
    }
    let (sensor_type, rest) = name.split_at(type_end);
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, rest) = rest.split_at(digits_end);
    let element = if rest.is_empty() {
        ""
    } else {
        match rest.strip_prefix('_') {
            Some(element) if !element.is_empty() => element,
            _ => return None,
        }
    };
    let number = if digits.is_empty() {
        0
    } else {
        // Go's Atoi fails on overflow, and the file is skipped.
        digits.parse::<i64>().ok()?.try_into().ok()?
    };
    Some((sensor_type, number, element))
}

/// A sensor file's value: one read of at most [`SENSOR_READ_LIMIT`] bytes, newlines
/// trimmed. `None` when it cannot be read (directories, write-only files, EIO).
fn read_sensor_value(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buffer = [0u8; SENSOR_READ_LIMIT];
    let n = file.read(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..n]);
    Some(text.trim_matches('\n').to_string())
}

/// Lowercases and replaces every character outside `[a-z0-9:_]` with `_`, then trims
/// `_` (node_exporter's `cleanMetricName`).
pub fn clean_name(name: &str) -> String {
    let mut cleaned = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        cleaned.push(
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            },
        );
    }
    cleaned.trim_matches('_').to_string()
}

/// The `chip` label: from the `device` link (`<parent>_<device>`), else the `name`
/// file, else the `hwmonN` directory, each cleaned.
pub fn chip_name(dir: &Path) -> Result<String, CollectError> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let device_name = device
            .file_name()
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        let device_type = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()))
            .unwrap_or_default();
        if !device_type.is_empty() && !device_name.is_empty() {
            return Ok(format!("{device_type}_{device_name}"));
        }
        if !device_name.is_empty() {
            return Ok(device_name);
        }
    }
    if let Some(name) = human_readable_chip_name(dir) {
        return Ok(name);
    }
    let real_dir = std::fs::canonicalize(dir).map_err(|e| CollectError::io(dir, e))?;
    let name = real_dir
        .file_name()
        .map(|n| clean_name(&n.to_string_lossy()))
        .unwrap_or_default();
    if name.is_empty() {
        return Err(CollectError::Other(format!(
            "could not derive a monitoring name for {}",
            dir.display()
        )));
    }
    Ok(name)
}

/// The cleaned `name` file, for `node_hwmon_chip_names`.
fn human_readable_chip_name(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join("name")).ok()?;
    let name = clean_name(&String::from_utf8_lossy(&raw));
    (!name.is_empty()).then_some(name)
}

/// Writes the families of one sensor, with node_exporter 1.5's names, units and HELP.
fn write_sensor(out: &mut MetricSink, chip: &str, sensor: &str, properties: &SensorData) {
    let Some((sensor_type, _, _)) = explode_sensor_filename(sensor) else {
        return;
    };
    let labels = [("chip", chip), ("sensor", sensor)];
    if let Some(label) = properties.get("label") {
        out.gauge(
            "node_hwmon_sensor_label",
            "Label for given chip and sensor",
            &[("chip", chip), ("sensor", sensor), ("label", label)],
            1.0,
        );
    }
    let bare = properties.get("");
    match sensor_type {
        "beep_enable" => {
            let enabled = bare.is_some_and(|v| v == "1");
            out.gauge(
                "node_hwmon_beep_enabled",
                "Hardware beep enabled",
                &labels,
                if enabled { 1.0 } else { 0.0 },
            );
            return;
        }
        "vrm" => {
            if let Some(value) = bare.and_then(|v| parse_go_float(v)) {
                out.gauge(
                    "node_hwmon_voltage_regulator_version",
                    "Hardware voltage regulator",
                    &labels,
                    value,
                );
            }
            return;
        }
        "update_interval" => {
            if let Some(value) = bare.and_then(|v| parse_go_float(v)) {
                out.gauge(
                    "node_hwmon_update_interval_seconds",
                    "Hardware monitor update interval",
                    &labels,
                    value * 0.001,
                );
            }
            return;
        }
        _ => {}
    }

    for (element, raw) in properties {
        if element == "label" {
            continue;
        }
        let mut name = format!("node_hwmon_{sensor_type}");
        if element == "input" {
            // `temp1_input` is the value itself, unless there is also a bare `temp1`.
            if bare.is_some() {
                name.push_str("_input");
            }
        } else if !element.is_empty() {
            name.push('_');
            name.push_str(&clean_name(element));
        }
        let Some(value) = parse_go_float(raw) else {
            continue;
        };
        let sample = sample_for(sensor_type, element, name, value);
        let mut metric = metric_with_labels(&labels);
        if sample.kind == MetricType::COUNTER {
            let mut counter = prometheus::proto::Counter::default();
            counter.set_value(sample.value);
            metric.set_counter(counter);
        } else {
            let mut gauge = prometheus::proto::Gauge::default();
            gauge.set_value(sample.value);
            metric.set_gauge(gauge);
        }
        out.push(&sample.name, &sample.help, sample.kind, metric);
    }
}

/// One element's family name, HELP, type and scaled value.
struct Sample {
    name: String,
    help: String,
    kind: MetricType,
    value: f64,
}

/// node_exporter 1.5's unit rules for element `element` of a `sensor_type` sensor;
/// `name` is `node_hwmon_<type>[_<element>]`.
fn sample_for(sensor_type: &str, element: &str, name: String, value: f64) -> Sample {
    let gauge = |name: String, help: String, value: f64| Sample {
        name,
        help,
        kind: MetricType::GAUGE,
        value,
    };
    if element == "fault" || element == "alarm" {
        let help = format!("Hardware sensor {element} status ({sensor_type})");
        return gauge(name, help, value);
    }
    if element == "beep" {
        let help = "Hardware monitor sensor has beeping enabled".to_string();
        return gauge(name + "_enabled", help, value);
    }
    match sensor_type {
        "in" | "cpu" => gauge(
            name + "_volts",
            format!("Hardware monitor for voltage ({element})"),
            value * 0.001,
        ),
        "temp" if element != "type" => {
            let element = if element.is_empty() { "input" } else { element };
            gauge(
                name + "_celsius",
                format!("Hardware monitor for temperature ({element})"),
                value * 0.001,
            )
        }
        "curr" => gauge(
            name + "_amps",
            format!("Hardware monitor for current ({element})"),
            value * 0.001,
        ),
        "energy" => Sample {
            name: name + "_joule_total",
            help: format!("Hardware monitor for joules used so far ({element})"),
            kind: MetricType::COUNTER,
            value: value / 1_000_000.0,
        },
        "power" if element == "accuracy" => gauge(
            name,
            "Hardware monitor power meter accuracy, as a ratio".to_string(),
            value / 1_000_000.0,
        ),
        "power"
            if matches!(
                element,
                "average_interval" | "average_interval_min" | "average_interval_max"
            ) =>
        {
            gauge(
                name + "_seconds",
                format!("Hardware monitor power usage update interval ({element})"),
                value * 0.001,
            )
        }
        "power" => gauge(
            name + "_watt",
            format!("Hardware monitor for power usage in watts ({element})"),
            value / 1_000_000.0,
        ),
        "humidity" => gauge(
            name,
            format!(
                "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"
            ),
            value / 1_000_000.0,
        ),
        "fan" if matches!(element, "input" | "min" | "max" | "target") => gauge(
            name + "_rpm",
            format!("Hardware monitor for fan revolutions per minute ({element})"),
            value,
        ),
        _ => gauge(
            name,
            format!("Hardware monitor {sensor_type} element {element}"),
            value,
        ),
    }
}

/// Parses a value as Go's `strconv.ParseFloat` would for what sysfs holds (decimal
/// integers and floats); anything else is skipped, as node_exporter skips it.
fn parse_go_float(text: &str) -> Option<f64> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn write(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    fn symlink(target: &str, link: &Path) {
        std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, link).expect("symlink");
    }

    #[test]
    fn explodes_file_names() {
        assert_eq!(
            explode_sensor_filename("temp1_input"),
            Some(("temp", 1, "input"))
        );
        assert_eq!(
            explode_sensor_filename("in0_lcrit_alarm"),
            Some(("in", 0, "lcrit_alarm"))
        );
        assert_eq!(explode_sensor_filename("pwm1"), Some(("pwm", 1, "")));
        assert_eq!(explode_sensor_filename("temp"), Some(("temp", 0, "")));
        assert_eq!(
            explode_sensor_filename("beep_enable"),
            Some(("beep_enable", 0, ""))
        );
        assert_eq!(
            explode_sensor_filename("temp01_auto_point1_temp"),
            Some(("temp", 1, "auto_point1_temp"))
        );
        assert_eq!(explode_sensor_filename("temp1x"), None);
        assert_eq!(explode_sensor_filename("temp1_"), None);
        assert_eq!(explode_sensor_filename("1temp"), None);
        assert_eq!(
            explode_sensor_filename("temp99999999999999999999_input"),
            None
        );
    }

    #[test]
    fn cleans_names() {
        assert_eq!(clean_name("rpi_volt\n"), "rpi_volt");
        assert_eq!(clean_name("My-Chip 2"), "my_chip_2");
        assert_eq!(clean_name("soc:firmware"), "soc:firmware");
        assert_eq!(clean_name("coretemp.0"), "coretemp_0");
        assert_eq!(clean_name("__"), "");
    }

    /// A tree like a Pi 4's: `rpi_volt` under the firmware device, the CPU sensor under
    /// its thermal zone (whose own `temp` file is read as sensor `temp0`).
    fn pi_like_tree(root: &Path) {
        let firmware = root.join("sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon");
        write(&firmware.join("hwmon/hwmon0/name"), "rpi_volt\n");
        write(&firmware.join("hwmon/hwmon0/in0_lcrit_alarm"), "1\n");
        std::fs::create_dir_all(firmware.join("power")).expect("mkdir");
        symlink(
            "../../../raspberrypi-hwmon",
            &firmware.join("hwmon/hwmon0/device"),
        );
        symlink(
            "../../devices/platform/soc/soc:firmware/raspberrypi-hwmon/hwmon/hwmon0",
            &root.join("sys/class/hwmon/hwmon0"),
        );
        let zone = root.join("sys/devices/virtual/thermal/thermal_zone0");
        write(&zone.join("hwmon1/name"), "cpu_thermal\n");
        write(&zone.join("hwmon1/temp1_input"), "45277\n");
        write(&zone.join("temp"), "45764\n");
        write(&zone.join("type"), "cpu-thermal\n");
        write(&zone.join("trip_point_0_temp"), "85000\n");
        symlink("../../thermal_zone0", &zone.join("hwmon1/device"));
        symlink(
            "../../devices/virtual/thermal/thermal_zone0/hwmon1",
            &root.join("sys/class/hwmon/hwmon1"),
        );
    }

    #[test]
    fn reads_pi_like_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        pi_like_tree(dir.path());
        let text = collect_text(&HwmonCollector::new(Roots::under(dir.path())));
        // Checked against node_exporter 1.5 on the same tree.
        let expected = "\
# HELP node_hwmon_chip_names Annotation metric for human-readable chip names
# TYPE node_hwmon_chip_names gauge
node_hwmon_chip_names{chip=\"soc:firmware_raspberrypi_hwmon\",chip_name=\"rpi_volt\"} 1
node_hwmon_chip_names{chip=\"thermal_thermal_zone0\",chip_name=\"cpu_thermal\"} 1
# HELP node_hwmon_in_lcrit_alarm_volts Hardware monitor for voltage (lcrit_alarm)
# TYPE node_hwmon_in_lcrit_alarm_volts gauge
node_hwmon_in_lcrit_alarm_volts{chip=\"soc:firmware_raspberrypi_hwmon\",sensor=\"in0\"} 0.001
# HELP node_hwmon_temp_celsius Hardware monitor for temperature (input)
# TYPE node_hwmon_temp_celsius gauge
node_hwmon_temp_celsius{chip=\"thermal_thermal_zone0\",sensor=\"temp0\"} 45.764
node_hwmon_temp_celsius{chip=\"thermal_thermal_zone0\",sensor=\"temp1\"} 45.277
";
        assert_eq!(text, expected);
    }

    #[test]
    fn reads_every_kind_of_sensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let chip = root.join("sys/devices/platform/coretemp.0/hwmon/hwmon2");
        for (file, value) in [
            ("name", "coretemp\n"),
            ("temp1_label", "Package id 0\n"),
            ("temp1_input", "52000\n"),
            ("temp1_crit", "100000\n"),
            ("temp1_crit_alarm", "0\n"),
            ("temp1_max", "84000\n"),
            ("temp1_type", "3\n"),
            ("temp3_input", "x\n"),
            ("temp4", "41000\n"),
            ("fan1_input", "1200\n"),
            ("fan1_min", "500\n"),
            ("fan1_alarm", "0\n"),
            ("fan1_beep", "1\n"),
            ("fan1_fault", "0\n"),
            ("fan1_pulses", "2\n"),
            ("pwm1", "128\n"),
            ("pwm1_enable", "2\n"),
            ("beep_enable", "1\n"),
            ("update_interval", "1500\n"),
            ("vrm", "90\n"),
            ("in1_input", "1200\n"),
            ("in1_label", "Vcore\n"),
            ("curr1_input", "5000\n"),
            ("power1_average", "12000000\n"),
            ("power1_average_interval", "1000\n"),
            ("power1_accuracy", "500000\n"),
            ("energy1_input", "123456789\n"),
            ("humidity1_input", "450000\n"),
            ("intrusion0_alarm", "0\n"),
            ("cpu0_vid", "3300\n"),
        ] {
            write(&chip.join(file), value);
        }
        write(
            &root.join("sys/devices/platform/coretemp.0/temp9_input"),
            "7\n",
        );
        symlink("../../../coretemp.0", &chip.join("device"));
        symlink(
            "../../devices/platform/coretemp.0/hwmon/hwmon2",
            &root.join("sys/class/hwmon/hwmon2"),
        );
        // No device link, a name with characters to clean.
        let virtual_chip = root.join("sys/devices/virtual/hwmon/hwmon3");
        write(&virtual_chip.join("name"), "My-Chip 2\n");
        write(&virtual_chip.join("temp1_input"), "33000\n");
        symlink(
            "../../devices/virtual/hwmon/hwmon3",
            &root.join("sys/class/hwmon/hwmon3"),
        );

        let text = collect_text(&HwmonCollector::new(Roots::under(root)));
        let c = "chip=\"platform_coretemp_0\"";
        for (series, value) in [
            (
                format!("node_hwmon_temp_celsius{{{c},sensor=\"temp1\"}}"),
                52.0,
            ),
            (
                format!("node_hwmon_temp_celsius{{{c},sensor=\"temp4\"}}"),
                41.0,
            ),
            (
                format!("node_hwmon_temp_celsius{{{c},sensor=\"temp9\"}}"),
                0.007,
            ),
            (
                format!("node_hwmon_temp_crit_celsius{{{c},sensor=\"temp1\"}}"),
                100.0,
            ),
            (
                format!("node_hwmon_temp_crit_alarm_celsius{{{c},sensor=\"temp1\"}}"),
                0.0,
            ),
            (
                format!("node_hwmon_temp_max_celsius{{{c},sensor=\"temp1\"}}"),
                84.0,
            ),
            (format!("node_hwmon_temp_type{{{c},sensor=\"temp1\"}}"), 3.0),
            (format!("node_hwmon_fan_rpm{{{c},sensor=\"fan1\"}}"), 1200.0),
            (
                format!("node_hwmon_fan_min_rpm{{{c},sensor=\"fan1\"}}"),
                500.0,
            ),
            (format!("node_hwmon_fan_alarm{{{c},sensor=\"fan1\"}}"), 0.0),
            (
                format!("node_hwmon_fan_beep_enabled{{{c},sensor=\"fan1\"}}"),
                1.0,
            ),
            (format!("node_hwmon_fan_fault{{{c},sensor=\"fan1\"}}"), 0.0),
            (format!("node_hwmon_fan_pulses{{{c},sensor=\"fan1\"}}"), 2.0),
            (format!("node_hwmon_pwm{{{c},sensor=\"pwm1\"}}"), 128.0),
            (format!("node_hwmon_pwm_enable{{{c},sensor=\"pwm1\"}}"), 2.0),
            (
                format!("node_hwmon_beep_enabled{{{c},sensor=\"beep_enable0\"}}"),
                1.0,
            ),
            (
                format!("node_hwmon_update_interval_seconds{{{c},sensor=\"update_interval0\"}}"),
                1.5,
            ),
            (
                format!("node_hwmon_voltage_regulator_version{{{c},sensor=\"vrm0\"}}"),
                90.0,
            ),
            (format!("node_hwmon_in_volts{{{c},sensor=\"in1\"}}"), 1.2),
            (format!("node_hwmon_curr_amps{{{c},sensor=\"curr1\"}}"), 5.0),
            (
                format!("node_hwmon_power_average_watt{{{c},sensor=\"power1\"}}"),
                12.0,
            ),
            (
                format!("node_hwmon_power_average_interval_seconds{{{c},sensor=\"power1\"}}"),
                1.0,
            ),
            (
                format!("node_hwmon_power_accuracy{{{c},sensor=\"power1\"}}"),
                0.5,
            ),
            (
                format!("node_hwmon_energy_joule_total{{{c},sensor=\"energy1\"}}"),
                123.456789,
            ),
            (
                format!("node_hwmon_humidity{{{c},sensor=\"humidity1\"}}"),
                0.45,
            ),
            (
                format!("node_hwmon_intrusion_alarm{{{c},sensor=\"intrusion0\"}}"),
                0.0,
            ),
            (
                format!("node_hwmon_cpu_vid_volts{{{c},sensor=\"cpu0\"}}"),
                3.3000000000000003,
            ),
            (
                "node_hwmon_temp_celsius{chip=\"my_chip_2\",sensor=\"temp1\"}".to_string(),
                33.0,
            ),
            (
                format!("node_hwmon_sensor_label{{{c},label=\"Package id 0\",sensor=\"temp1\"}}"),
                1.0,
            ),
            (
                format!("node_hwmon_sensor_label{{{c},label=\"Vcore\",sensor=\"in1\"}}"),
                1.0,
            ),
            (
                format!("node_hwmon_chip_names{{{c},chip_name=\"coretemp\"}}"),
                1.0,
            ),
            (
                "node_hwmon_chip_names{chip=\"my_chip_2\",chip_name=\"my_chip_2\"}".to_string(),
                1.0,
            ),
        ] {
            assert_eq!(value_of(&text, &series), value, "{series}");
        }
        assert!(
            !text.contains("sensor=\"temp3\""),
            "unparsable value skipped:\n{text}"
        );
        assert!(text.contains("# HELP node_hwmon_pwm Hardware monitor pwm element \n"));
        assert!(text.contains("# TYPE node_hwmon_energy_joule_total counter\n"));
        assert!(text.contains("# HELP node_hwmon_fan_alarm Hardware sensor alarm status (fan)\n"));
    }

    #[test]
    fn missing_class_dir_is_no_data() {
        let err = HwmonCollector::new(Roots::under("/nonexistent-nodewatch-root"))
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn unreadable_chip_dir_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A dangling `hwmon0` link is not a directory and is skipped, like node_exporter.
        symlink(
            "../../devices/gone",
            &dir.path().join("sys/class/hwmon/hwmon0"),
        );
        let mut sink = MetricSink::new();
        HwmonCollector::new(Roots::under(dir.path()))
            .collect(&mut sink)
            .expect("dangling link skipped");
        assert!(sink.is_empty());
    }

    /// Families node_exporter emitted on `tree`.
    fn hwmon_families(tree: &str) -> Vec<String> {
        let reference = std::fs::read_to_string(fixture_dir(tree).join("node_exporter-1.5.prom"))
            .expect("reference");
        let mut families: Vec<String> = reference
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("node_hwmon_"))
            .map(str::to_string)
            .collect();
        families.dedup();
        families
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&HwmonCollector::new(fixture_roots("pi")));
        let families = hwmon_families("pi");
        assert!(
            families.iter().any(|f| f == "node_hwmon_temp_celsius"),
            "{families:?}"
        );
        let families: Vec<&str> = families.iter().map(String::as_str).collect();
        assert_same_as_node_exporter("pi", &text, &families);
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let collector = HwmonCollector::new(fixture_roots("linux"));
        let families = hwmon_families("linux");
        if families.is_empty() {
            // The machine the tree was captured on has no hwmon.
            let mut sink = MetricSink::new();
            match collector.collect(&mut sink) {
                Ok(()) => assert!(sink.is_empty()),
                Err(e) => assert!(e.is_no_data(), "{e}"),
            }
        } else {
            let text = collect_text(&collector);
            let families: Vec<&str> = families.iter().map(String::as_str).collect();
            assert_same_as_node_exporter("linux", &text, &families);
        }
    }
}
