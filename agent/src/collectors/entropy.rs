//! `entropy`: the kernel's entropy pool from `/proc/sys/kernel/random/entropy_avail` and
//! `/proc/sys/kernel/random/poolsize`: `node_entropy_available_bits`,
//! `node_entropy_pool_size_bits`.
//!
//! node_exporter 1.5 also reads (without exporting) the pool's wakeup thresholds and
//! reseed interval and fails when one of them is malformed; we read only the two files
//! we export.

use super::{CollectError, Collector, CollectorSpec};
use crate::metrics::MetricSink;
use crate::paths::{Roots, read_u64};

/// Reads `/proc/sys/kernel/random/`.
#[derive(Debug)]
pub struct EntropyCollector {
    roots: Roots,
}

impl EntropyCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

/// The `entropy` collector.
pub const SPEC: CollectorSpec = CollectorSpec::system("entropy", |ctx| {
    Ok(Box::new(EntropyCollector::new(ctx.roots.clone())))
});

impl Collector for EntropyCollector {
    fn collect(&self, out: &mut MetricSink) -> Result<(), CollectError> {
        let available = read_u64(&self.roots.proc("sys/kernel/random/entropy_avail"))?;
        let pool_size = read_u64(&self.roots.proc("sys/kernel/random/poolsize"))?;
        out.gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            &[],
            available as f64,
        );
        out.gauge(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            &[],
            pool_size as f64,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::test_support::*;

    fn tree(available: &str, pool_size: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let random = dir.path().join("proc/sys/kernel/random");
        std::fs::create_dir_all(&random).expect("mkdir");
        std::fs::write(random.join("entropy_avail"), available).expect("write");
        std::fs::write(random.join("poolsize"), pool_size).expect("write");
        dir
    }

    #[test]
    fn exports_literal() {
        let dir = tree("3518\n", "4096\n");
        let text = collect_text(&EntropyCollector::new(Roots::under(dir.path())));
        assert_eq!(
            text,
            "# HELP node_entropy_available_bits Bits of available entropy.\n\
             # TYPE node_entropy_available_bits gauge\nnode_entropy_available_bits 3518\n\
             # HELP node_entropy_pool_size_bits Bits of entropy pool.\n\
             # TYPE node_entropy_pool_size_bits gauge\nnode_entropy_pool_size_bits 4096\n"
        );
    }

    #[test]
    fn rejects_garbage_naming_the_file() {
        for (available, pool_size, file) in [
            ("abc\n", "4096\n", "entropy_avail"),
            ("256\n", "\n", "poolsize"),
        ] {
            let dir = tree(available, pool_size);
            let err = EntropyCollector::new(Roots::under(dir.path()))
                .collect(&mut MetricSink::new())
                .expect_err("garbage");
            assert!(err.to_string().contains(file), "{err}");
            assert!(!err.is_no_data());
        }
    }

    #[test]
    fn missing_file_is_no_data() {
        let collector = EntropyCollector::new(Roots::under("/nonexistent-nodewatch-root"));
        let err = collector
            .collect(&mut MetricSink::new())
            .expect_err("missing");
        assert!(err.is_no_data());
    }

    const FAMILIES: &[&str] = &["node_entropy_available_bits", "node_entropy_pool_size_bits"];

    #[test]
    fn same_as_node_exporter_on_linux_fixture() {
        let text = collect_text(&EntropyCollector::new(fixture_roots("linux")));
        assert_same_as_node_exporter("linux", &text, FAMILIES);
    }

    #[test]
    fn same_as_node_exporter_on_pi_fixture() {
        let text = collect_text(&EntropyCollector::new(fixture_roots("pi")));
        assert_same_as_node_exporter("pi", &text, FAMILIES);
    }
}
