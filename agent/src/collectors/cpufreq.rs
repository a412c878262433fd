//! `cpufreq`: CPU frequencies from `/sys/devices/system/cpu/cpu*/cpufreq/`.
//!
//! Exports, per CPU with a `cpufreq` directory, each from its kHz attribute in hertz:
//! `node_cpu_frequency_hertz` (`cpuinfo_cur_freq`), `node_cpu_frequency_min_hertz`,
//! `node_cpu_frequency_max_hertz` (`cpuinfo_{min,max}_freq`),
//! `node_cpu_scaling_frequency_hertz`, `node_cpu_scaling_frequency_min_hertz`,
//! `node_cpu_scaling_frequency_max_hertz` (`scaling_{cur,min,max}_freq`).
//! node_exporter 1.5 has no governor family. An attribute that is missing or not
//! readable by us (`cpuinfo_cur_freq` is root-only) is skipped, as in 1.5.
//!
//! 1.5 also reads attributes it does not export (governors, driver, `related_cpus`,
//! `scaling_setspeed`, transition latency) and fails when one is missing; we do not
//! read them, so a kernel without one still gets its frequencies.

use std::io::ErrorKind;
use std::path::Path;

use super::cpu::cpu_dirs;
use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Attribute file, family, help, in node_exporter's order.
const FREQUENCIES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
];

/// Reads the CPUs' cpufreq attributes.
#[derive(Debug)]
pub struct CpufreqCollector {
    roots: Roots,
}

impl CpufreqCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `cpufreq` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("cpufreq", |ctx| {
    Ok(Box::new(CpufreqCollector::new(ctx.roots.clone())))
});

impl Collector for CpufreqCollector {
    /// A machine without cpufreq (most VMs) succeeds with no samples, as in 1.5.
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        for cpu_dir in cpu_dirs(&self.roots.sys("devices/system/cpu")) {
            let cpufreq = cpu_dir.join("cpufreq");
            match std::fs::metadata(&cpufreq) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CollectError::Io {
                        path: cpufreq,
                        source,
                    });
                }
            }
            let name = cpu_dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("cpu"))
                .unwrap_or_default();
            for (file, family, help) in FREQUENCIES {
                if let Some(khz) = read_khz(&cpufreq.join(file))? {
                    out.gauge(family, help, &[("cpu", name)], khz as f64 * 1000.0);
                }
            }
        }
        Ok(())
    }
}

/// Reads a frequency attribute in kHz; `None` when it is missing or we may not read it.
fn read_khz(path: &Path) -> Result<Option<u64>, CollectError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_khz(&text, path).map(Some),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => Ok(None),
        Err(source) => Err(CollectError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses a sysfs frequency attribute (`1500000\n`).
pub fn parse_khz(text: &str, path: &Path) -> Result<u64, CollectError> {
    let value = text.trim();
    value.parse().map_err(|_| {
        CollectError::parse(
            path,
            Some(1),
            format!("expected a frequency in kHz, found {value:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal() {
        assert_eq!(
            parse_khz("1500000\n", Path::new("f")).expect("parse"),
            1_500_000
        );
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let err = parse_khz("<unknown>\n", Path::new("x/scaling_cur_freq")).expect_err("garbage");
        assert_eq!(
            err.to_string(),
            "cannot parse x/scaling_cur_freq line 1: expected a frequency in kHz, found \"<unknown>\""
        );
        let err = parse_khz("", Path::new("x/f")).expect_err("truncated");
        assert!(err.to_string().contains("x/f line 1"), "{err}");
    }

    #[test]
    fn exports_present_attributes_per_cpu() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        for cpu in 0..3 {
            let d = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
            write(base, &format!("{d}/cpuinfo_min_freq"), "600000\n");
            write(base, &format!("{d}/cpuinfo_max_freq"), "1800000\n");
            write(base, &format!("{d}/scaling_cur_freq"), "1200000\n");
            write(base, &format!("{d}/scaling_min_freq"), "600000\n");
            write(base, &format!("{d}/scaling_max_freq"), "1500000\n");
        }
        write(
            base,
            "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_cur_freq",
            "1500000\n",
        );
        // A CPU without cpufreq and other entries are skipped.
        std::fs::create_dir_all(base.join("sys/devices/system/cpu/cpu3")).expect("mkdir");
        std::fs::create_dir_all(base.join("sys/devices/system/cpu/cpufreq/policy0"))
            .expect("mkdir");
        let text = collect_text(&CpufreqCollector::new(Roots::under(base)));
        assert_eq!(
            value_of(&text, r#"node_cpu_frequency_hertz{cpu="0"}"#),
            1.5e9
        );
        assert_eq!(
            value_of(&text, r#"node_cpu_frequency_max_hertz{cpu="2"}"#),
            1.8e9
        );
        assert_eq!(
            value_of(&text, r#"node_cpu_scaling_frequency_hertz{cpu="1"}"#),
            1.2e9
        );
        assert_eq!(
            value_of(&text, r#"node_cpu_scaling_frequency_min_hertz{cpu="1"}"#),
            6e8
        );
        assert_eq!(text.matches("node_cpu_frequency_hertz{").count(), 1);
        assert!(!text.contains(r#"cpu="3""#));
        assert!(text.contains(
            "# HELP node_cpu_scaling_frequency_max_hertz Maximum scaled CPU thread frequency in hertz.\n"
        ));
    }

    #[test]
    fn garbage_attribute_fails_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "abc\n",
        );
        let err = CpufreqCollector::new(Roots::under(dir.path()))
            .collect(&mut MetricSink::new())
            .expect_err("garbage");
        assert!(err.to_string().contains("scaling_cur_freq line 1"), "{err}");
    }

    #[test]
    fn no_cpufreq_is_success_without_samples() {
        // node_exporter 1.5 reports success with no samples on machines without cpufreq.
        let mut sink = MetricSink::new();
        CpufreqCollector::new(Roots::under("/nonexistent-nodewatch-root"))
            .collect(&mut sink)
            .expect("no cpufreq is not an error");
        assert!(sink.is_empty());
    }

    const FAMILIES: &[&str] = &[
        "node_cpu_frequency_hertz",
        "node_cpu_frequency_min_hertz",
        "node_cpu_frequency_max_hertz",
        "node_cpu_scaling_frequency_hertz",
        "node_cpu_scaling_frequency_min_hertz",
        "node_cpu_scaling_frequency_max_hertz",
    ];

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&CpufreqCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }

    #[test]
    fn linux_fixture_has_no_cpufreq() {
        // The captured VM has no cpufreq directories: node_exporter emits none either.
        let text = collect_text(&CpufreqCollector::new(fixture_roots("linux")));
        assert!(text.is_empty(), "{text}");
        let reference =
            std::fs::read_to_string(fixture_dir("linux").join("node_exporter-1.5.prom"))
                .expect("reference");
        for family in FAMILIES {
            assert!(!reference.contains(&format!("{family}{{")), "{family}");
        }
    }
}
