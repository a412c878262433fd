//! `udp_queues`: not implemented yet (work in progress).

use super::{CollectError, Collector};
use crate::metrics::MetricSink;
use crate::paths::Roots;

/// Work in progress.
#[derive(Debug)]
pub struct UdpQueuesCollector {
    #[allow(dead_code)]
    roots: Roots,
}

impl UdpQueuesCollector {
    /// A collector reading under `roots`.
    pub fn new(roots: Roots) -> Self {
        Self { roots }
    }
}

impl Collector for UdpQueuesCollector {
    fn collect(&self, _out: &mut MetricSink) -> Result<(), CollectError> {
        Err(CollectError::NoData("not implemented yet".into()))
    }
}
