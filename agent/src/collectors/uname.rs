//! `uname`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;

/// Work in progress.
#[derive(Debug, Default)]
pub struct UnameCollector;

impl UnameCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self
    }
}

impl Collector for UnameCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
