//! Arbitrary text as a local alert rule's `expr`, parsed and evaluated on a small
//! snapshot of families.
//!
//! - Parsing never panics (nor overflows the stack); an error points at a column of
//!   the text and says something.
//! - An accepted expression evaluates without panicking, and the same expression in
//!   parentheses is accepted too (unless they pass the nesting or length limit) and
//!   gives the same samples.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodewatch_agent::alerts::expr::{Expr, Families, Sample};
use nodewatch_agent::metrics::MetricSink;
use prometheus::proto::MetricFamily;

/// A few families with the names the built-in rules read, with edge values.
fn families() -> &'static [MetricFamily] {
    static FAMILIES: OnceLock<Vec<MetricFamily>> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let mut sink = MetricSink::new();
        sink.gauge("up", "Up.", &[("job", "node"), ("instance", "a")], 1.0);
        sink.gauge("up", "Up.", &[("job", "lora"), ("instance", "b")], 0.0);
        sink.gauge("node_load1", "Load.", &[("instance", "a")], 0.5);
        sink.gauge("intmax_builder_ready", "Ready.", &[("node", "n1")], 0.0);
        sink.gauge(
            "intmax_builder_health_ok",
            "Health.",
            &[("node", "n1")],
            f64::NAN,
        );
        for (condition, value) in [("under_voltage", 1.0), ("throttled", 0.0)] {
            sink.gauge(
                "nodewatch_pi_throttled",
                "Throttled.",
                &[("condition", condition)],
                value,
            );
        }
        sink.gauge(
            "node_thermal_zone_temp",
            "Temperature.",
            &[("type", "cpu-thermal"), ("zone", "0")],
            f64::INFINITY,
        );
        for (mountpoint, fstype, avail, size) in [
            ("/", "ext4", 1.0e9, 8.0e9),
            ("/run", "tmpfs", 0.0, 0.0),
            ("/boot/firmware", "vfat", -0.0, 5.0e8),
        ] {
            let labels = [("mountpoint", mountpoint), ("fstype", fstype)];
            sink.gauge("node_filesystem_avail_bytes", "Avail.", &labels, avail);
            sink.gauge("node_filesystem_size_bytes", "Size.", &labels, size);
        }
        sink.counter("node_memory_MemAvailable_bytes", "Avail.", &[], 1.5e8);
        sink.counter("node_memory_MemTotal_bytes", "Total.", &[], f64::MAX);
        sink.untyped(
            "node_scrape_collector_success",
            "OK.",
            &[("collector", "")],
            1.0,
        );
        sink.into_families()
    })
}

/// Samples as comparable values, in a stable order, NaN equal to NaN.
fn normalized(mut samples: Vec<Sample>) -> Vec<(Vec<(String, String)>, u64)> {
    samples.sort_by(|a, b| a.labels.cmp(&b.labels));
    samples
        .into_iter()
        .map(|s| {
            let bits = if s.value.is_nan() {
                f64::NAN.to_bits()
            } else {
                s.value.to_bits()
            };
            (s.labels, bits)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // The config is TOML: text only.
    };
    let expr = match Expr::parse(text) {
        Ok(expr) => expr,
        Err(e) => {
            let columns = text.chars().count() + 1;
            assert!(
                (1..=columns).contains(&e.column),
                "column {} outside 1..={columns}",
                e.column
            );
            assert!(!e.message.is_empty(), "an error without a message");
            return;
        }
    };
    let mut snapshot = Families::new();
    snapshot.extend(families());
    let result = expr.eval(&snapshot);

    let wrapped = format!("({text})");
    let again = match Expr::parse(&wrapped) {
        Ok(again) => again,
        // The parentheses may be the one level or the token too many.
        Err(e) if e.message.contains("nested more than") || e.message.contains("longer than") => {
            return;
        }
        Err(e) => panic!("{text:?} parses, {wrapped:?} does not: {e}"),
    };
    let wrapped_result = again.eval(&snapshot);
    match (result, wrapped_result) {
        (Ok(a), Ok(b)) => assert_eq!(normalized(a), normalized(b), "{wrapped:?} differs"),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("{text:?} gave {a:?}, {wrapped:?} gave {b:?}"),
    }
});
