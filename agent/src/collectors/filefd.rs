//! `filefd`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct FilefdCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl FilefdCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

impl Collector for FilefdCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
