//! `filesystem`: not implemented yet (work in progress).

use super::{BuildError, CollectError, Collector};
use crate::config::FilesystemConfig;
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct FilesystemCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl FilesystemCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots, _config: &FilesystemConfig) -> Result<Self, BuildError> {
        Ok(Self { roots })
    }
}

impl Collector for FilesystemCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
