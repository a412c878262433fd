//! `time`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;

/// Work in progress.
#[derive(Debug, Default)]
pub struct TimeCollector;

impl TimeCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self
    }
}

impl Collector for TimeCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
