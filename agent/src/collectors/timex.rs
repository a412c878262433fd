//! `timex`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;

/// Work in progress.
#[derive(Debug, Default)]
pub struct TimexCollector;

impl TimexCollector {
    /// A new collector.
    pub fn new() -> Self {
        Self
    }
}

impl Collector for TimexCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
