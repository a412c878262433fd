//! `vmstat`: selected fields of `/proc/vmstat` as untyped `node_vmstat_<field>`.
//!
//! The fields are node_exporter 1.5's default `--collector.vmstat.fields`,
//! `^(oom_kill|pgpg|pswp|pg.*fault).*`: `oom_kill`, `pgpgin`, `pgpgout`, `pswpin`,
//! `pswpout`, `pgfault`, `pgmajfault` and any other `pg…fault…` field. As in 1.5, every
//! value in the file must be a number, selected or not.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// Reads `/proc/vmstat`.
#[derive(Debug)]
pub struct VmstatCollector {
    roots: Roots,
}

impl VmstatCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `vmstat` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("vmstat", |ctx| {
    Ok(Box::new(VmstatCollector::new(ctx.roots.clone())))
});

impl Collector for VmstatCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("vmstat");
        let text = read_file(&path)?;
        let mut name = String::with_capacity(48);
        let mut help = String::with_capacity(64);
        for (field, value) in parse_vmstat(&text, &path)? {
            name.clear();
            name.push_str("node_vmstat_");
            name.push_str(field);
            help.clear();
            help.push_str("/proc/vmstat information field ");
            help.push_str(field);
            help.push('.');
            out.untyped(&name, &help, &[], value);
        }
        Ok(())
    }
}

/// The selected `(field, value)` pairs of `/proc/vmstat`, in file order.
pub fn parse_vmstat<'a>(text: &'a str, path: &Path) -> Result<Vec<(&'a str, f64)>, CollectError> {
    let mut selected = Vec::with_capacity(8);
    for (index, line) in text.lines().enumerate() {
        let mut parts = line.split_ascii_whitespace();
        // node_exporter 1.5 panics on an empty line; we skip it.
        let Some(field) = parts.next() else {
            continue;
        };
        let error = |reason: String| CollectError::parse(path, Some(index + 1), reason);
        let Some(value) = parts.next() else {
            return Err(error(format!("no value for {field:?}")));
        };
        let value: f64 = value
            .parse()
            .map_err(|_| error(format!("expected a number, found {value:?}")))?;
        if is_default_field(field) {
            if !crate::metrics::is_metric_name_tail(field) {
                return Err(error(format!(
                    "{field:?} does not make a valid metric name"
                )));
            }
            // A repeated field (never seen from a kernel) keeps its last value, so the
            // family has one sample.
            match selected.iter_mut().find(|(f, _)| *f == field) {
                Some(slot) => slot.1 = value,
                None => selected.push((field, value)),
            }
        }
    }
    Ok(selected)
}

/// node_exporter 1.5's default field regex `^(oom_kill|pgpg|pswp|pg.*fault).*`,
/// matched without a regex engine.
pub fn is_default_field(field: &str) -> bool {
    field.starts_with("oom_kill")
        || field.starts_with("pgpg")
        || field.starts_with("pswp")
        || field
            .strip_prefix("pg")
            .is_some_and(|rest| rest.contains("fault"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal_and_selects_default_fields() {
        let text = "nr_free_pages 5\npgfault 12\npgmajfault 3\noom_kill 0\npgpgin 7\n\
                    pswpin 1\npgscan_fault_x 9\nxpgfault 2\npgsteal 4\n";
        let fields = parse_vmstat(text, Path::new("vmstat")).expect("parse");
        // What node_exporter 1.5 exported for this input.
        assert_eq!(
            fields,
            vec![
                ("pgfault", 12.0),
                ("pgmajfault", 3.0),
                ("oom_kill", 0.0),
                ("pgpgin", 7.0),
                ("pswpin", 1.0),
                ("pgscan_fault_x", 9.0),
            ]
        );
    }

    #[test]
    fn matches_the_default_regex() {
        let regex = regex_lite::Regex::new("^(oom_kill|pgpg|pswp|pg.*fault).*").expect("regex");
        for field in [
            "oom_kill",
            "oom_kills",
            "pgpgin",
            "pgpgout",
            "pswpin",
            "pswpout",
            "pgfault",
            "pgmajfault",
            "pgfaul",
            "pg",
            "xpgfault",
            "pgsteal_kswapd",
            "thp_fault_alloc",
            "pgfaultfault",
            "numa_hint_faults",
            "pgscan_fault",
        ] {
            assert_eq!(is_default_field(field), regex.is_match(field), "{field}");
        }
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/vmstat");
        let err = parse_vmstat("pgfault 1\nnr_foo abc\n", path).expect_err("garbage");
        assert_eq!(
            err.to_string(),
            "cannot parse x/vmstat line 2: expected a number, found \"abc\""
        );
        let err = parse_vmstat("pgfault 1\npgmajfault\n", path).expect_err("truncated");
        assert!(err.to_string().contains("x/vmstat line 2"), "{err}");
    }

    #[test]
    fn exports_untyped_with_node_exporter_help() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("proc")).expect("mkdir");
        std::fs::write(
            dir.path().join("proc/vmstat"),
            "pgfault 1.1085179e+07\nnr_x 1\n",
        )
        .expect("write");
        let text = collect_text(&VmstatCollector::new(Roots::under(dir.path())));
        assert_eq!(
            text,
            "# HELP node_vmstat_pgfault /proc/vmstat information field pgfault.\n\
             # TYPE node_vmstat_pgfault untyped\nnode_vmstat_pgfault 11085179\n"
        );
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = VmstatCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    const FAMILIES: &[&str] = &[
        "node_vmstat_oom_kill",
        "node_vmstat_pgfault",
        "node_vmstat_pgmajfault",
        "node_vmstat_pgpgin",
        "node_vmstat_pgpgout",
        "node_vmstat_pswpin",
        "node_vmstat_pswpout",
    ];

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&VmstatCollector::new(fixture_roots("linux")));
        assert_same_as_node_exporter("linux", &text, FAMILIES);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&VmstatCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }
}
