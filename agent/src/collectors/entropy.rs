//! `entropy`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct EntropyCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl EntropyCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

impl Collector for EntropyCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
