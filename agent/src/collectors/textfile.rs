//! `textfile`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::config::TextfileConfig;
use crate::metrics::MetricSink;

/// Work in progress.
#[derive(Debug)]
pub struct TextfileCollector;

impl TextfileCollector {
    /// A collector for the configured directory.
    pub fn new(_config: &TextfileConfig) -> Self {
        Self
    }
}

impl Collector for TextfileCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
