//! `netclass`: not implemented yet (work in progress).

use super::{BuildError, CollectError, Collector};
use crate::config::NetclassConfig;
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct NetclassCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl NetclassCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots, _config: &NetclassConfig) -> Result<Self, BuildError> {
        Ok(Self { roots })
    }
}

impl Collector for NetclassCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
