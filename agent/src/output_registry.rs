//! Health and metric families of the outputs (display, buzzer, LoRa, …), by output
//! name. The store serves them with the collectors' samples in `/metrics` and the
//! health endpoints; outputs, a layer up, report into it.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use nodewatch_http::OutputHealth;
use prometheus::proto::MetricFamily;

#[derive(Debug, Default)]
struct OutputEntry {
    health: Option<OutputHealth>,
    rendered: Bytes,
}

/// Health and metrics of every output, keyed by output name.
#[derive(Debug, Default)]
pub struct OutputRegistry {
    entries: RwLock<BTreeMap<&'static str, OutputEntry>>,
    generation: AtomicU64,
}

impl OutputRegistry {
    /// Records an output's state: `last_error` is kept after recovery (as collectors
    /// do) unless a new one replaces it.
    pub fn report_health(&self, name: &'static str, ok: bool, error: Option<String>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(name).or_default();
        let last_error = error.or_else(|| entry.health.as_ref().and_then(|h| h.last_error.clone()));
        let health = OutputHealth { ok, last_error };
        if entry.health.as_ref() != Some(&health) {
            entry.health = Some(health);
        }
    }

    /// Replaces an output's metric families in `/metrics`.
    pub fn set_metrics(&self, name: &'static str, families: &[MetricFamily]) {
        let mut rendered = Vec::new();
        let _ = nodewatch_http::encode_families(families, &mut rendered);
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.entry(name).or_default();
        if entry.rendered.as_ref() != rendered.as_slice() {
            entry.rendered = rendered.into();
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever an output's metrics change (part of the `/metrics` cache key).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every output's health that has reported.
    pub fn health(&self) -> BTreeMap<String, OutputHealth> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter_map(|(name, e)| Some((name.to_string(), e.health.clone()?)))
            .collect()
    }

    /// Appends every output's metrics text to a `/metrics` body.
    pub fn append_metrics(&self, body: &mut Vec<u8>) {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        for entry in entries.values() {
            body.extend_from_slice(&entry.rendered);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_error_after_recovery() {
        let registry = OutputRegistry::default();
        registry.report_health("display", false, Some("I2C: EREMOTEIO".into()));
        registry.report_health("display", true, None);
        let health = registry.health();
        assert!(health["display"].ok);
        assert_eq!(
            health["display"].last_error.as_deref(),
            Some("I2C: EREMOTEIO")
        );
    }

    #[test]
    fn metrics_change_bumps_the_generation() {
        let registry = OutputRegistry::default();
        let mut sink = crate::metrics::MetricSink::new();
        sink.counter("nodewatch_display_frames_total", "Frames.", &[], 1.0);
        let families = sink.into_families();
        registry.set_metrics("display", &families);
        let g = registry.generation();
        registry.set_metrics("display", &families);
        assert_eq!(registry.generation(), g, "unchanged text, same generation");
        let mut body = Vec::new();
        registry.append_metrics(&mut body);
        assert!(String::from_utf8_lossy(&body).contains("nodewatch_display_frames_total 1"));
    }
}
