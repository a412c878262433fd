//! `filefd`: file handle counts from `/proc/sys/fs/file-nr`: `node_filefd_allocated`,
//! `node_filefd_maximum`.

use std::path::Path;

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_file};

/// Reads `/proc/sys/fs/file-nr`.
#[derive(Debug)]
pub struct FilefdCollector {
    roots: Roots,
}

impl FilefdCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `filefd` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("filefd", |ctx| {
    Ok(Box::new(FilefdCollector::new(ctx.roots.clone())))
});

impl Collector for FilefdCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let path = self.roots.proc("sys/fs/file-nr");
        let (allocated, maximum) = parse_file_nr(&read_file(&path)?, &path)?;
        out.gauge(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            &[],
            allocated,
        );
        out.gauge(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            &[],
            maximum,
        );
        Ok(())
    }
}

/// Parses `file-nr` (`allocated\tunused\tmaximum`, tab-separated) into
/// `(allocated, maximum)`; the middle field is always 0 since Linux 2.6.
pub fn parse_file_nr(text: &str, path: &Path) -> Result<(f64, f64), CollectError> {
    let error = |reason: String| CollectError::parse(path, Some(1), reason);
    // node_exporter splits on tabs only, as the kernel writes them.
    let mut fields = text.trim().split('\t');
    let (Some(allocated), Some(_unused), Some(maximum)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(error(format!(
            "expected 3 tab-separated values, found {:?}",
            text.trim()
        )));
    };
    let number = |field: &str| {
        field
            .parse::<f64>()
            .map_err(|_| error(format!("expected a number, found {field:?}")))
    };
    Ok((number(allocated)?, number(maximum)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    #[test]
    fn parses_literal() {
        let (allocated, maximum) =
            parse_file_nr("1024\t0\t9223372036854775807\n", Path::new("file-nr")).expect("parse");
        assert_eq!(allocated, 1024.0);
        // node_exporter prints 9.223372036854776e+18 for it.
        assert_eq!(maximum, 9.223372036854776e18);
    }

    #[test]
    fn rejects_garbage_naming_file_and_line() {
        let path = Path::new("x/file-nr");
        let err = parse_file_nr("1024\t0\n", path).expect_err("truncated");
        assert_eq!(
            err.to_string(),
            "cannot parse x/file-nr line 1: expected 3 tab-separated values, found \"1024\\t0\""
        );
        let err = parse_file_nr("1024 0 5\n", path).expect_err("spaces");
        assert!(err.to_string().contains("x/file-nr line 1"), "{err}");
        let err = parse_file_nr("x\t0\t5\n", path).expect_err("garbage");
        assert!(err.to_string().contains("\"x\""), "{err}");
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = FilefdCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    const FAMILIES: &[&str] = &["node_filefd_allocated", "node_filefd_maximum"];

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&FilefdCollector::new(fixture_roots("linux")));
        assert_same_as_node_exporter("linux", &text, FAMILIES);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&FilefdCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }
}
