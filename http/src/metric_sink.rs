//! Building metric families for the exposition: the one sink the agent's collectors and
//! the exporters write samples into.
//!
//! A [`MetricSink`] groups samples into `prometheus::proto::MetricFamily` values.
//! [`MetricSink::into_families`] sorts families by name, labels by name and samples by
//! label values, as node_exporter's Go client does, so the agent's output is stable and
//! diffable. [`MetricSink::into_families_as_written`] keeps the order of writing, the
//! order the exporters have always served their pages in.

use std::collections::HashMap;

use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType, Untyped};

use crate::exposition::metric_with_labels;

/// Accumulates the families of one collection run.
#[derive(Debug, Default)]
pub struct MetricSink {
    families: Vec<MetricFamily>,
    by_name: HashMap<String, usize>,
}

impl MetricSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        let mut metric = metric_with_labels(labels);
        metric.set_gauge(gauge);
        self.push(name, help, MetricType::GAUGE, metric);
    }

    /// Adds a counter sample. `name` carries its `_total` suffix where node_exporter's does.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut counter = Counter::default();
        counter.set_value(value);
        let mut metric = metric_with_labels(labels);
        metric.set_counter(counter);
        self.push(name, help, MetricType::COUNTER, metric);
    }

    /// Adds an untyped sample.
    #[allow(deprecated)] // "protobuf specific" per the crate, but it is the plain model's field.
    pub fn untyped(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut untyped = Untyped::default();
        untyped.set_value(value);
        let mut metric = metric_with_labels(labels);
        metric.set_untyped(untyped);
        self.push(name, help, MetricType::UNTYPED, metric);
    }

    /// Adds a ready-made metric (summaries, histograms, textfile samples) to the family
    /// `name`, creating it with `help` and `kind` if it is new.
    pub fn push(&mut self, name: &str, help: &str, kind: MetricType, metric: Metric) {
        let index = match self.by_name.get(name) {
            Some(&i) => i,
            None => {
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(help.to_string());
                family.set_field_type(kind);
                self.families.push(family);
                self.by_name
                    .insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        self.families[index].mut_metric().push(metric);
    }

    /// True when no sample was written.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Whether a family of that name was written.
    pub fn has_family(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The families, sorted for stable output.
    pub fn into_families(self) -> Vec<MetricFamily> {
        let mut families = self.families;
        sort_families(&mut families);
        families
    }

    /// The families in the order they were first written, each family's samples in the
    /// order they were written.
    pub fn into_families_as_written(self) -> Vec<MetricFamily> {
        self.families
    }
}

/// Sorts families by name and their samples by label values, labels by name.
pub fn sort_families(families: &mut [MetricFamily]) {
    families.sort_by(|a, b| a.name().cmp(b.name()));
    for family in families.iter_mut() {
        family.mut_metric().sort_by(|a, b| {
            let a = a.get_label().iter().map(|l| l.value());
            let b = b.get_label().iter().map(|l| l.value());
            a.cmp(b)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_families_samples_and_labels() {
        let mut sink = MetricSink::new();
        sink.gauge("b", "B.", &[("z", "1"), ("a", "2")], 1.0);
        sink.gauge("b", "B.", &[("z", "0"), ("a", "1")], 2.0);
        sink.counter("a_total", "A.", &[], 3.0);
        let families = sink.into_families();
        assert_eq!(families[0].name(), "a_total");
        assert_eq!(families[1].get_metric()[0].get_label()[0].name(), "a");
        assert_eq!(families[1].get_metric()[0].get_label()[0].value(), "1");
        let mut out = Vec::new();
        crate::encode_families(&families, &mut out).expect("encode");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n# HELP b B.\n# TYPE b gauge\nb{a=\"1\",z=\"0\"} 2\nb{a=\"2\",z=\"1\"} 1\n"
        );
    }

    #[test]
    fn as_written_keeps_the_order_of_writing() {
        let mut sink = MetricSink::new();
        sink.gauge("b", "B.", &[("z", "1"), ("a", "2")], 1.0);
        sink.counter("a_total", "A.", &[], 3.0);
        sink.gauge("b", "B.", &[("z", "0"), ("a", "1")], 2.0);
        assert!(sink.has_family("a_total") && !sink.has_family("c"));
        let mut out = Vec::new();
        crate::encode_families(&sink.into_families_as_written(), &mut out).expect("encode");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "# HELP b B.\n# TYPE b gauge\nb{a=\"2\",z=\"1\"} 1\nb{a=\"1\",z=\"0\"} 2\n# HELP a_total A.\n# TYPE a_total counter\na_total 3\n"
        );
    }
}
