//! `netdev`: not implemented yet (work in progress).

use super::{BuildError, CollectError, Collector};
use crate::config::NetdevConfig;
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct NetdevCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl NetdevCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots, _config: &NetdevConfig) -> Result<Self, BuildError> {
        Ok(Self { roots })
    }
}

impl Collector for NetdevCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
