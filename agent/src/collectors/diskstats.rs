//! `diskstats`: not implemented yet (work in progress).

use super::{BuildError, CollectError, Collector};
use crate::config::DiskstatsConfig;
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct DiskstatsCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl DiskstatsCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots, _config: &DiskstatsConfig) -> Result<Self, BuildError> {
        Ok(Self { roots })
    }
}

impl Collector for DiskstatsCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
