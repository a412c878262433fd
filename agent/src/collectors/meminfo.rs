//! `meminfo`: every field of `/proc/meminfo` as `node_memory_<Field>[_bytes]`.
//!
//! Parsed line by line with node_exporter 1.5's rules, so fields the kernel adds later
//! are exported too (the `procfs` crate's `Meminfo` drops fields it does not know):
//! parentheses become an underscore (`Active(anon)` → `Active_anon`); a value with a
//! unit (always kB) is multiplied by 1024 and the name gets `_bytes`; a value without
//! one (`HugePages_Total`) keeps its name. All are gauges, except a name ending in
//! `_total`, which 1.5 types as a counter. A repeated field keeps its last value.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// Reads `/proc/meminfo`.
#[derive(Debug)]
pub struct MeminfoCollector {
    roots: Roots,
}

impl MeminfoCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `meminfo` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("meminfo", |ctx| {
    Ok(Box::new(MeminfoCollector::new(ctx.roots.clone())))
});

impl Collector for MeminfoCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("meminfo");
        let fields = parse_meminfo(&read_file(&path)?, &path)?;
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(64);
        for (key, value) in &fields {
            name.clear();
            name.push_str("node_memory_");
            name.push_str(key);
            help.clear();
            help.push_str("Memory information field ");
            help.push_str(key);
            help.push('.');
            if key.ends_with("_total") {
                out.counter(&name, &help, &[], *value);
            } else {
                out.gauge(&name, &help, &[], *value);
            }
        }
        Ok(())
    }
}

/// Parses `/proc/meminfo` into `(name suffix, value)` pairs, names as node_exporter
/// forms them (`MemTotal_bytes`, `Active_anon_bytes`, `HugePages_Total`), sorted by
/// name, each once. `path` only names the file in errors.
pub fn parse_meminfo(text: &str, path: &Path) -> Result<Vec<(String, f64)>, CollectError> {
    let mut fields: Vec<(String, f64)> = Vec::with_capacity(64);
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let error = |reason: String| CollectError::parse(path, Some(line_no), reason);
        let mut parts = line.split_ascii_whitespace();
        // Some kernels emit empty lines; node_exporter skips them.
        let Some(label) = parts.next() else {
            continue;
        };
        let Some(value) = parts.next() else {
            return Err(error(format!("no value in {line:?}")));
        };
        let has_unit = parts.next().is_some();
        if parts.next().is_some() {
            return Err(error(format!("too many fields in {line:?}")));
        }
        let mut value: f64 = value
            .parse()
            .map_err(|_| error(format!("expected a number, found {value:?}")))?;
        // node_exporter drops the label's last character, the colon.
        let mut chars = label.chars();
        chars.next_back();
        let mut key = with_parens_replaced(chars.as_str());
        if has_unit {
            value *= 1024.0;
            key.push_str("_bytes");
        }
        if !crate::metrics::is_metric_name_tail(&key) {
            // node_exporter 1.5 panics on such a name; the kernel never writes one.
            return Err(error(format!(
                "{label:?} does not make a valid metric name"
            )));
        }
        fields.push((key, value));
    }
    // Stable sort keeps file order among equal names, so the last one can win.
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    let mut unique: Vec<(String, f64)> = Vec::with_capacity(fields.len());
    for field in fields {
        match unique.last_mut() {
            Some(last) if last.0 == field.0 => *last = field,
            _ => unique.push(field),
        }
    }
    Ok(unique)
}

/// `Active(anon)` → `Active_anon`: node_exporter's regex `\((.*)\)` replaced by `_$1`,
/// i.e. from the first `(` to the last `)` after it.
fn with_parens_replaced(key: &str) -> String {
    if let Some(open) = key.find('(')
        && let Some(close) = key.rfind(')')
        && close > open
    {
        let mut out = String::with_capacity(key.len());
        out.push_str(&key[..open]);
        out.push('_');
        out.push_str(&key[open + 1..close]);
        out.push_str(&key[close + 1..]);
        return out;
    }
    key.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal_with_node_exporter_names() {
        let text = "MemTotal:  100 kB\nActive(anon):   5 kB\nFoo_total: 7\n\
                    HugePages_Total:   0\nMemTotal: 200 kB\n\nBar: 1 MB\nBaz 4 kB\n";
        let fields = parse_meminfo(text, Path::new("meminfo")).expect("parse");
        // The same output node_exporter 1.5 gave for this input.
        assert_eq!(
            fields,
            vec![
                ("Active_anon_bytes".to_string(), 5120.0),
                ("Ba_bytes".to_string(), 4096.0),
                ("Bar_bytes".to_string(), 1024.0),
                ("Foo_total".to_string(), 7.0),
                ("HugePages_Total".to_string(), 0.0),
                ("MemTotal_bytes".to_string(), 204_800.0),
            ]
        );
    }

    #[test]
    fn replaces_parentheses_like_node_exporter() {
        assert_eq!(with_parens_replaced("Active(file)"), "Active_file");
        assert_eq!(with_parens_replaced("A(b)c"), "A_bc");
        assert_eq!(with_parens_replaced("A(b"), "A(b");
        assert_eq!(with_parens_replaced("A)b(c"), "A)b(c");
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/meminfo");
        for (text, line) in [
            ("MemTotal: 1 kB\nMemFree:\n", "line 2"),
            ("MemTotal: abc kB\n", "line 1"),
            ("MemTotal: 1 kB extra\n", "line 1"),
            ("A(b)(c: 1 kB\n", "line 1"),
        ] {
            let err = parse_meminfo(text, path).expect_err(text);
            assert!(
                err.to_string()
                    .starts_with(&format!("cannot parse x/meminfo {line}:")),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn types_total_as_counter() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("proc")).expect("mkdir");
        std::fs::write(
            dir.path().join("proc/meminfo"),
            "MemTotal: 3 kB\nFoo_total: 7\nHugePages_Total: 2\n",
        )
        .expect("write");
        let text = collect_text(&MeminfoCollector::new(Roots::under(dir.path())));
        assert!(
            text.contains("# TYPE node_memory_Foo_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.\n"
        ));
        assert_eq!(value_of(&text, "node_memory_MemTotal_bytes"), 3072.0);
        assert_eq!(value_of(&text, "node_memory_HugePages_Total"), 2.0);
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = MeminfoCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    /// Every `node_memory_*` family node_exporter wrote for the tree.
    fn reference_families(tree: &str) -> Vec<String> {
        let path = fixture_dir(tree).join("node_exporter-1.5.prom");
        let text = std::fs::read_to_string(&path).expect("reference");
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| name.starts_with("node_memory_"))
            .map(str::to_string)
            .collect()
    }

    fn check_fixture(tree: &str) {
        let text = collect_text(&MeminfoCollector::new(fixture_roots(tree)));
        let families = reference_families(tree);
        assert!(families.len() > 20, "{families:?}");
        let families: Vec<&str> = families.iter().map(String::as_str).collect();
        assert_same_as_node_exporter(tree, &text, &families);
        // And nothing node_exporter did not export.
        let ours = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(ours, families.len(), "{text}");
    }

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        check_fixture("linux");
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        check_fixture("pi");
    }
}
