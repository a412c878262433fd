//! `pi`: nodewatch's own Raspberry Pi collector (design §2).
//!
//! Reads sysfs `devices/platform/soc/soc:firmware/get_throttled` (or, when the kernel has
//! no such file, the `in0_lcrit_alarm` of the `rpi_volt` hwmon device, which only knows
//! under-voltage now), procfs `device-tree/model` and `cpuinfo`'s `Revision` line.
//! Exports `nodewatch_pi_throttled{condition}`, `nodewatch_pi_throttled_occurred{condition}`
//! and `nodewatch_pi_model_info{model,revision}`. Only what is known is exported: the
//! hwmon fallback yields `under_voltage` now and nothing since boot, never a made-up 0.
//! Off a Pi (none of these files) the collector returns [`CollectError::NoData`].

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// The firmware's throttling conditions, in bit order: bit `n` is "now", bit `16 + n`
/// "occurred since boot".
pub const CONDITIONS: [&str; 4] = [
    "under_voltage",
    "freq_capped",
    "throttled",
    "soft_temp_limit",
];

/// Bit of the first "occurred since boot" condition in `get_throttled`.
const OCCURRED_SHIFT: u32 = 16;

const THROTTLED: &str = "nodewatch_pi_throttled";
const THROTTLED_HELP: &str = "Whether a Raspberry Pi throttling condition is active now \
    (firmware get_throttled bits 0-3; with only the rpi_volt hwmon, just under_voltage).";
const OCCURRED: &str = "nodewatch_pi_throttled_occurred";
const OCCURRED_HELP: &str = "Whether a Raspberry Pi throttling condition occurred since boot \
    (firmware get_throttled bits 16-19).";
const MODEL_INFO: &str = "nodewatch_pi_model_info";
const MODEL_INFO_HELP: &str = "Raspberry Pi model (device-tree model) and board revision code \
    (cpuinfo Revision); always 1.";

/// What is known about the throttling conditions, indexed like [`CONDITIONS`];
/// `None` is unknown and not exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Throttling {
    /// Conditions active now.
    pub now: [Option<bool>; 4],
    /// Conditions that occurred since boot.
    pub occurred: [Option<bool>; 4],
}

/// The board's model and revision code, which do not change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// `Raspberry Pi 4 Model B Rev 1.4`.
    pub model: String,
    /// `c03114`, or empty when neither cpuinfo nor the device tree has it.
    pub revision: String,
}

/// Reads the Pi's firmware and board files.
#[derive(Debug)]
pub struct PiCollector {
    roots: Roots,
    /// The board, once its model file has been read (`Some(None)`: not a Pi).
    model: OnceLock<Option<ModelInfo>>,
    /// The `rpi_volt` hwmon directory once found, so it is not searched every run.
    rpi_volt_dir: Mutex<Option<PathBuf>>,
}

impl PiCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self {
            roots,
            model: OnceLock::new(),
            rpi_volt_dir: Mutex::new(None),
        }
    }

    /// Throttling from `get_throttled`, else from the `rpi_volt` hwmon, else `None`.
    fn throttling(&self) -> Result<Option<Throttling>, CollectError> {
        let path = self
            .roots
            .sys("devices/platform/soc/soc:firmware/get_throttled");
        match std::fs::read_to_string(&path) {
            Ok(text) => return parse_get_throttled(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CollectError::io(&path, e)),
        }
        let Some(dir) = self.rpi_volt_dir() else {
            return Ok(None);
        };
        let alarm_path = dir.join("in0_lcrit_alarm");
        match std::fs::read_to_string(&alarm_path) {
            Ok(text) => parse_lcrit_alarm(&text, &alarm_path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The hwmon went away (driver reloaded): search again next time.
                self.forget_rpi_volt_dir();
                Ok(None)
            }
            Err(e) => Err(CollectError::io(&alarm_path, e)),
        }
    }

    fn rpi_volt_dir(&self) -> Option<PathBuf> {
        let mut cached = self
            .rpi_volt_dir
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if cached.is_none() {
            *cached = find_hwmon_named(&self.roots.sys("class/hwmon"), "rpi_volt");
        }
        cached.clone()
    }

    fn forget_rpi_volt_dir(&self) {
        *self
            .rpi_volt_dir
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// The board's model info, read once: `None` while the model file is missing (so a
    /// later run tries again) or when the board is not a Raspberry Pi.
    fn model(&self) -> Result<Option<&ModelInfo>, CollectError> {
        if let Some(known) = self.model.get() {
            return Ok(known.as_ref());
        }
        let model_path = self.roots.proc("device-tree/model");
        let raw = match std::fs::read(&model_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CollectError::io(&model_path, e)),
        };
        let model = parse_device_tree_string(&raw);
        let info = if model.starts_with("Raspberry Pi") {
            Some(ModelInfo {
                revision: self.revision(),
                model,
            })
        } else {
            tracing::debug!(model = model.as_str(), "Not a Raspberry Pi model.");
            None
        };
        Ok(self.model.get_or_init(|| info).as_ref())
    }

    /// The revision code from `/proc/cpuinfo`, else from the device tree's
    /// `system/linux,revision` (mainline kernels print no `Revision` line), else empty.
    fn revision(&self) -> String {
        let cpuinfo = self.roots.proc("cpuinfo");
        if let Ok(text) = read_file(&cpuinfo)
            && let Some(revision) = parse_cpuinfo_revision(&text)
        {
            return revision.to_string();
        }
        std::fs::read(self.roots.proc("device-tree/system/linux,revision"))
            .ok()
            .and_then(|raw| parse_device_tree_revision(&raw))
            .unwrap_or_default()
    }
}

/// The `pi` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("pi", |ctx| {
    Ok(Box::new(PiCollector::new(ctx.roots.clone())))
});

impl Collector for PiCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let throttling = self.throttling()?;
        let model = self.model()?;
        if throttling.is_none() && model.is_none() {
            return Err(CollectError::NoData(
                "not a Raspberry Pi: no get_throttled, no rpi_volt hwmon, no Raspberry Pi device-tree model".into(),
            ));
        }
        if let Some(throttling) = throttling {
            for (i, condition) in CONDITIONS.iter().enumerate() {
                let labels = [("condition", *condition)];
                if let Some(now) = throttling.now[i] {
                    out.gauge(THROTTLED, THROTTLED_HELP, &labels, f64::from(u8::from(now)));
                }
                if let Some(occurred) = throttling.occurred[i] {
                    out.gauge(
                        OCCURRED,
                        OCCURRED_HELP,
                        &labels,
                        f64::from(u8::from(occurred)),
                    );
                }
            }
        }
        if let Some(info) = model {
            out.gauge(
                MODEL_INFO,
                MODEL_INFO_HELP,
                &[("model", &info.model), ("revision", &info.revision)],
                1.0,
            );
        }
        Ok(())
    }
}

/// Parses `get_throttled`: hexadecimal without `0x` (`50005`), bits 0-3 now, 16-19
/// since boot.
pub fn parse_get_throttled(text: &str, path: &Path) -> Result<Throttling, CollectError> {
    let digits = text.trim();
    let digits = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
        .unwrap_or(digits);
    // from_str_radix would also take a sign; the firmware never prints one.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CollectError::parse(
            path,
            Some(1),
            format!(
                "expected a hexadecimal 32-bit value, found {:?}",
                text.trim()
            ),
        ));
    }
    let bits = u32::from_str_radix(digits, 16).map_err(|e| {
        CollectError::parse(path, Some(1), format!("bad hexadecimal {digits:?}: {e}"))
    })?;
    let mut throttling = Throttling::default();
    for i in 0..CONDITIONS.len() {
        let bit = i as u32;
        throttling.now[i] = Some(bits & (1 << bit) != 0);
        throttling.occurred[i] = Some(bits & (1 << (bit + OCCURRED_SHIFT)) != 0);
    }
    Ok(throttling)
}

/// Parses the `rpi_volt` hwmon's `in0_lcrit_alarm` (`0` or `1`): under-voltage now; the
/// other conditions and the since-boot bits are unknown.
pub fn parse_lcrit_alarm(text: &str, path: &Path) -> Result<Throttling, CollectError> {
    let value: u64 = text.trim().parse().map_err(|_| {
        CollectError::parse(
            path,
            Some(1),
            format!("expected 0 or 1, found {:?}", text.trim()),
        )
    })?;
    let mut throttling = Throttling::default();
    throttling.now[0] = Some(value != 0);
    Ok(throttling)
}

/// A device-tree string property: NUL-terminated, possibly not valid UTF-8.
pub fn parse_device_tree_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

/// The device tree's `linux,revision`: a 32-bit big-endian cell, printed as cpuinfo
/// prints it (lowercase hex, no leading zeros).
pub fn parse_device_tree_revision(raw: &[u8]) -> Option<String> {
    let cell: [u8; 4] = raw.get(..4)?.try_into().ok()?;
    Some(format!("{:x}", u32::from_be_bytes(cell)))
}

/// The value of cpuinfo's `Revision : c03114` line, if any.
pub fn parse_cpuinfo_revision(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "Revision").then(|| value.trim())
    })
}

/// The hwmon directory under `class_dir` whose `name` file holds `name`.
fn find_hwmon_named(class_dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(class_dir).ok()?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|dir| std::fs::read_to_string(dir.join("name")).is_ok_and(|n| n.trim() == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn write(path: &Path, content: &[u8]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    #[test]
    fn parses_50005() {
        // Under-voltage now and since boot, throttled since boot.
        let t = parse_get_throttled("50005\n", Path::new("get_throttled")).expect("parse");
        assert_eq!(t.now, [Some(true), Some(false), Some(true), Some(false)]);
        assert_eq!(
            t.occurred,
            [Some(true), Some(false), Some(true), Some(false)]
        );
        let t = parse_get_throttled("0\n", Path::new("get_throttled")).expect("parse");
        assert_eq!(t.now, [Some(false); 4]);
        assert_eq!(t.occurred, [Some(false); 4]);
    }

    #[test]
    fn parses_each_bit() {
        for i in 0..4 {
            let now = format!("{:x}", 1u32 << i);
            let t = parse_get_throttled(&now, Path::new("g")).expect("now");
            for j in 0..4 {
                assert_eq!(t.now[j], Some(i == j), "now bit {i}, condition {j}");
                assert_eq!(t.occurred[j], Some(false));
            }
            let occurred = format!("{:x}", 1u32 << (i + 16));
            let t = parse_get_throttled(&occurred, Path::new("g")).expect("occurred");
            for j in 0..4 {
                assert_eq!(t.now[j], Some(false));
                assert_eq!(
                    t.occurred[j],
                    Some(i == j),
                    "occurred bit {i}, condition {j}"
                );
            }
        }
        // Other bits (4 to 15, 20 and up) are ignored.
        let t = parse_get_throttled("f0fff0", Path::new("g")).expect("other bits");
        assert_eq!(t.now, [Some(false); 4]);
        assert_eq!(t.occurred, [Some(false); 4]);
        let t = parse_get_throttled("0x80008", Path::new("g")).expect("0x prefix");
        assert_eq!(t.now[3], Some(true));
        assert_eq!(t.occurred[3], Some(true));
    }

    #[test]
    fn rejects_garbage_hex_naming_the_file() {
        for bad in ["", "xyz", "+5", "-1", "123456789", "5 0"] {
            let err = parse_get_throttled(bad, Path::new("/sys/x/get_throttled")).expect_err(bad);
            let message = err.to_string();
            assert!(
                message.starts_with("cannot parse /sys/x/get_throttled line 1:"),
                "{message}"
            );
        }
        let err = parse_lcrit_alarm("yes\n", Path::new("/h/in0_lcrit_alarm")).expect_err("alarm");
        assert!(err.to_string().contains("/h/in0_lcrit_alarm"), "{err}");
    }

    #[test]
    fn garbage_get_throttled_fails_the_collection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir
            .path()
            .join("sys/devices/platform/soc/soc:firmware/get_throttled");
        write(&path, b"zz\n");
        let err = PiCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("garbage");
        assert!(err.to_string().contains("get_throttled"), "{err}");
        assert!(!err.is_no_data());
    }

    #[test]
    fn parses_model_and_revision() {
        assert_eq!(
            parse_device_tree_string(b"Raspberry Pi 4 Model B Rev 1.4\0"),
            "Raspberry Pi 4 Model B Rev 1.4"
        );
        assert_eq!(parse_device_tree_string(b"no nul"), "no nul");
        assert_eq!(
            parse_cpuinfo_revision(
                "processor\t: 0\nHardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000002a3b4c5d\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
            ),
            Some("c03114")
        );
        assert_eq!(parse_cpuinfo_revision("processor\t: 0\n"), None);
        assert_eq!(
            parse_device_tree_revision(&[0x00, 0xc0, 0x31, 0x14]).as_deref(),
            Some("c03114")
        );
        assert_eq!(parse_device_tree_revision(&[0xc0]), None);
    }

    #[test]
    fn hwmon_fallback_knows_only_under_voltage_now() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hwmon = dir.path().join("sys/class/hwmon");
        write(&hwmon.join("hwmon0/name"), b"cpu_thermal\n");
        write(&hwmon.join("hwmon0/temp1_input"), b"45000\n");
        write(&hwmon.join("hwmon1/name"), b"rpi_volt\n");
        write(&hwmon.join("hwmon1/in0_lcrit_alarm"), b"1\n");
        let collector = PiCollector::new(Roots::under(dir.path()));
        let text = collect_text(&collector);
        assert_eq!(
            value_of(&text, "nodewatch_pi_throttled{condition=\"under_voltage\"}"),
            1.0
        );
        // Nothing made up for what the hwmon does not know.
        assert!(!text.contains("freq_capped"), "{text}");
        assert!(!text.contains(OCCURRED), "{text}");
        assert!(!text.contains(MODEL_INFO), "{text}");

        std::fs::write(hwmon.join("hwmon1/in0_lcrit_alarm"), "0\n").expect("write");
        let text = collect_text(&collector);
        assert_eq!(
            value_of(&text, "nodewatch_pi_throttled{condition=\"under_voltage\"}"),
            0.0
        );
    }

    #[test]
    fn get_throttled_wins_over_hwmon_and_model_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        write(
            &root.join("sys/devices/platform/soc/soc:firmware/get_throttled"),
            b"50005\n",
        );
        write(&root.join("sys/class/hwmon/hwmon0/name"), b"rpi_volt\n");
        write(&root.join("sys/class/hwmon/hwmon0/in0_lcrit_alarm"), b"0\n");
        write(
            &root.join("proc/device-tree/model"),
            b"Raspberry Pi 4 Model B Rev 1.4\0",
        );
        write(
            &root.join("proc/cpuinfo"),
            b"processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000002a3b4c5d\n",
        );
        let text = collect_text(&PiCollector::new(Roots::under(root)));
        assert_eq!(
            value_of(&text, "nodewatch_pi_throttled{condition=\"under_voltage\"}"),
            1.0
        );
        assert_eq!(
            value_of(&text, "nodewatch_pi_throttled{condition=\"throttled\"}"),
            1.0
        );
        assert_eq!(
            value_of(
                &text,
                "nodewatch_pi_throttled_occurred{condition=\"throttled\"}"
            ),
            1.0
        );
        assert_eq!(
            value_of(
                &text,
                "nodewatch_pi_throttled_occurred{condition=\"freq_capped\"}"
            ),
            0.0
        );
        assert_eq!(
            value_of(
                &text,
                "nodewatch_pi_model_info{model=\"Raspberry Pi 4 Model B Rev 1.4\",revision=\"c03114\"}"
            ),
            1.0
        );
        assert!(text.contains("# TYPE nodewatch_pi_throttled gauge"));
    }

    #[test]
    fn missing_files_are_no_data() {
        let collector = PiCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn other_boards_are_no_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            &dir.path().join("proc/device-tree/model"),
            b"Radxa ROCK Pi 4B\0",
        );
        let err = PiCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("not a Pi");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn linux_fixture_is_no_data() {
        let err = PiCollector::new(fixture_roots("linux"))
            .collect(&mut MetricSink::new())
            .expect_err("not a Pi");
        assert!(err.is_no_data(), "{err}");
    }

    #[test]
    fn reads_pi_fixture() {
        // The tree's get_throttled is 50005, its board a Pi 4 Model B Rev 1.4 (c03114).
        // These families are nodewatch's own: node_exporter has nothing to compare with.
        let text = collect_text(&PiCollector::new(fixture_roots("pi")));
        for (condition, now, occurred) in [
            ("under_voltage", 1.0, 1.0),
            ("freq_capped", 0.0, 0.0),
            ("throttled", 1.0, 1.0),
            ("soft_temp_limit", 0.0, 0.0),
        ] {
            let labels = format!("{{condition=\"{condition}\"}}");
            assert_eq!(value_of(&text, &format!("{THROTTLED}{labels}")), now);
            assert_eq!(value_of(&text, &format!("{OCCURRED}{labels}")), occurred);
        }
        assert_eq!(
            value_of(
                &text,
                "nodewatch_pi_model_info{model=\"Raspberry Pi 4 Model B Rev 1.4\",revision=\"c03114\"}"
            ),
            1.0
        );
    }
}
