//! `loadavg`: `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.
//!
//! Parsed here rather than with `procfs::LoadAverage`, which holds f32 and would not
//! give node_exporter's exact float64 values.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// Reads `/proc/loadavg`.
#[derive(Debug)]
pub struct LoadavgCollector {
    roots: Roots,
}

impl LoadavgCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `loadavg` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("loadavg", |ctx| {
    Ok(Box::new(LoadavgCollector::new(ctx.roots.clone())))
});

impl Collector for LoadavgCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("loadavg");
        let [one, five, fifteen] = parse_loadavg(&read_file(&path)?, &path)?;
        out.gauge("node_load1", "1m load average.", &[], one);
        out.gauge("node_load5", "5m load average.", &[], five);
        out.gauge("node_load15", "15m load average.", &[], fifteen);
        Ok(())
    }
}

/// Parses the first three fields of `/proc/loadavg` (`0.52 0.58 0.59 1/467 12345`).
pub fn parse_loadavg(text: &str, path: &Path) -> Result<[f64; 3], CollectError> {
    let mut fields = text.split_whitespace();
    let mut values = [0.0; 3];
    for (i, value) in values.iter_mut().enumerate() {
        let field = fields.next().ok_or_else(|| {
            CollectError::parse(
                path,
                Some(1),
                format!("expected 3 load averages, found {i}"),
            )
        })?;
        *value = crate::paths::parse_f64(field, path, 1)?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal() {
        let values =
            parse_loadavg("0.52 0.58 0.59 1/467 12345\n", Path::new("loadavg")).expect("parse");
        assert_eq!(values, [0.52, 0.58, 0.59]);
    }

    #[test]
    fn rejects_short_and_garbage() {
        let err = parse_loadavg("0.52 0.58\n", Path::new("x/loadavg")).expect_err("short");
        assert_eq!(
            err.to_string(),
            "cannot parse x/loadavg line 1: expected 3 load averages, found 2"
        );
        let err = parse_loadavg("0.52 abc 1\n", Path::new("x/loadavg")).expect_err("garbage");
        assert!(err.to_string().contains("\"abc\""), "{err}");
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = LoadavgCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    #[test]
    fn reads_pi_fixture() {
        let text = collect_text(&LoadavgCollector::new(fixture_roots("pi")));
        assert!(value_of(&text, "node_load1") >= 0.0);
        assert!(text.contains("# TYPE node_load15 gauge"));
    }
}
