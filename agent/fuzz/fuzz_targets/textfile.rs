//! Arbitrary bytes as a `*.prom` file, read by the real textfile collector and served
//! through the agent's own text encoder, as a scrape would see them.
//!
//! - Nothing panics, neither the parser nor the collector nor the encoder.
//! - What the agent serves always parses again: no file can make `/metrics` unreadable.
//! - A file the parser refuses (or that is not UTF-8, or has timestamps) exports none of
//!   its families and sets `node_textfile_scrape_error` to 1.
//! - A file the parser accepts and the collector keeps whole (`node_textfile_scrape_error`
//!   0) comes out with the same families, types, HELP, series and values.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nodewatch_agent::collectors::Collector;
use nodewatch_agent::collectors::textfile::parser::{self, Family, Parsed, Value};
use nodewatch_agent::collectors::textfile::{TextfileCollector, TextfileConfig};
use nodewatch_agent::metrics::MetricSink;

const OWN_FAMILIES: [&str; 2] = ["node_textfile_mtime_seconds", "node_textfile_scrape_error"];

struct Setup {
    _dir: tempfile::TempDir,
    file: PathBuf,
    collector: TextfileCollector,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = TextfileConfig {
            directory: dir.path().to_path_buf(),
            interval_secs: 5.0,
        };
        Setup {
            file: dir.path().join("fuzz.prom"),
            // Explicit: a missing directory is an error, as when configured.
            collector: TextfileCollector::new(&config, true),
            _dir: dir,
        }
    })
}

/// A series as a comparable value: labels with a value, sorted (an empty label value
/// is the same as no label), and the sample values with NaN made comparable.
type Series = (Vec<(String, String)>, Vec<u64>);

fn bits(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

/// A bucket bound or quantile as it is served: Go's text writer (and so node_exporter
/// and the agent) prints both zeros as `0`.
fn bound_bits(v: f64) -> u64 {
    bits(if v == 0.0 { 0.0 } else { v })
}

/// Quantiles or buckets as the collector exports them (Go's const summaries and
/// histograms): a later line with the same bound wins, sorted by bound.
fn sorted_last_wins<T: Copy>(entries: &[(f64, T)]) -> Vec<(f64, T)> {
    let mut sorted: Vec<(f64, T)> = Vec::new();
    for &(bound, value) in entries {
        match sorted.iter_mut().find(|(b, _)| *b == bound) {
            Some(entry) => entry.1 = value,
            None => sorted.push((bound, value)),
        }
    }
    sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    sorted
}

fn series(family: &Family) -> Vec<Series> {
    let mut all: Vec<Series> = family
        .metrics
        .iter()
        .map(|m| {
            let mut labels: Vec<(String, String)> = m
                .labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect();
            labels.sort();
            let values = match &m.value {
                Value::Simple(v) => vec![bits(*v)],
                Value::Summary {
                    quantiles,
                    sum,
                    count,
                } => sorted_last_wins(quantiles)
                    .iter()
                    .flat_map(|(q, v)| [bound_bits(*q), bits(*v)])
                    .chain([bits(*sum), *count])
                    .collect(),
                Value::Histogram {
                    buckets,
                    sum,
                    count,
                } => {
                    let mut buckets = sorted_last_wins(buckets);
                    // The encoder adds the +Inf bucket a histogram must have.
                    if !buckets.iter().any(|(le, _)| *le == f64::INFINITY) {
                        buckets.push((f64::INFINITY, *count));
                    }
                    buckets
                        .iter()
                        .flat_map(|(le, c)| [bound_bits(*le), *c])
                        .chain([bits(*sum), *count])
                        .collect()
                }
            };
            (labels, values)
        })
        .collect();
    all.sort();
    all
}

fn scrape_error(served: &Parsed) -> f64 {
    let family = served
        .families
        .iter()
        .find(|f| f.name == "node_textfile_scrape_error")
        .expect("node_textfile_scrape_error is always served");
    match family.metrics.as_slice() {
        [metric] => match metric.value {
            Value::Simple(v) => v,
            _ => panic!("node_textfile_scrape_error is not a gauge"),
        },
        _ => panic!("node_textfile_scrape_error has not exactly one series"),
    }
}

fuzz_target!(|data: &[u8]| {
    let setup = setup();
    std::fs::write(&setup.file, data).expect("write the textfile");
    let direct = std::str::from_utf8(data).ok().map(parser::parse);

    let mut sink = MetricSink::new();
    setup
        .collector
        .collect(&mut sink)
        .expect("the textfile collector never fails");
    let mut body = Vec::new();
    nodewatch_http::encode_families(&sink.into_families(), &mut body).expect("encodes");
    let body = String::from_utf8(body).expect("the served text is UTF-8");
    let served = parser::parse(&body)
        .unwrap_or_else(|e| panic!("the agent served text it cannot parse: {e}\n{body}"));
    assert_eq!(served.first_timestamp_line, None, "timestamps served");

    let served_files: Vec<&Family> = served
        .families
        .iter()
        .filter(|f| !OWN_FAMILIES.contains(&f.name.as_str()))
        .collect();
    let accepted = match &direct {
        Some(Ok(parsed)) if parsed.first_timestamp_line.is_none() => parsed,
        _ => {
            assert_eq!(scrape_error(&served), 1.0, "a refused file is not an error");
            assert!(
                served_files.is_empty(),
                "a refused file's families are served"
            );
            return;
        }
    };
    if scrape_error(&served) != 0.0 {
        return; // Something was dropped (duplicates, collisions): checked by unit tests.
    }
    let names: Vec<&str> = accepted.families.iter().map(|f| f.name.as_str()).collect();
    let mut served_names: Vec<&str> = served_files.iter().map(|f| f.name.as_str()).collect();
    let mut expected_names = names.clone();
    expected_names.sort_unstable();
    served_names.sort_unstable();
    assert_eq!(served_names, expected_names, "families lost or added");
    for family in &accepted.families {
        let out = served_files
            .iter()
            .find(|f| f.name == family.name)
            .expect("served");
        assert_eq!(out.kind, family.kind, "type of {}", family.name);
        match family.help.as_deref() {
            Some("") => assert_eq!(out.help, None, "empty HELP of {}", family.name),
            Some(help) => assert_eq!(out.help.as_deref(), Some(help), "HELP of {}", family.name),
            None => assert!(
                out.help
                    .as_deref()
                    .is_some_and(|h| h.starts_with("Metric read from ")),
                "default HELP of {}",
                family.name
            ),
        }
        assert_eq!(series(out), series(family), "series of {}", family.name);
    }
});
