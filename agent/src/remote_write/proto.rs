//! Prometheus remote write 1.0 on the wire: the protobuf `WriteRequest` (the few
//! messages of `prometheus/prompb` it needs, derived with prost by hand rather than
//! generated), snappy's block format, and the conversion of the agent's `/metrics`
//! text into one sample set.
//!
//! Field numbers follow `prompb/remote.proto` and `prompb/types.proto`. Protobuf
//! concatenates repeated fields when messages are concatenated, so the encodings of
//! several `WriteRequest`s laid end to end are one `WriteRequest` holding all their
//! series: that is how buffered sample sets are batched (see [`concat_records`]).

use prost::Message;

/// `prometheus.WriteRequest` (only `timeseries`; metadata is optional in 1.0).
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series, each with its samples.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples in time order.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// One series of the exposition: name, labels in exposition order, value.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    /// Metric name (`__name__`).
    pub name: String,
    /// Labels as written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// Reads the sample lines of a text exposition (format 0.0.4, as the agent's own
/// encoder writes it): comments and blank lines are skipped; a line that does not
/// parse is skipped and counted, never a panic. Summary and histogram lines come out
/// as the series a scrape would store (`_bucket{le}`, `_sum`, `_count`, `{quantile}`).
pub fn parse_exposition(text: &str) -> (Vec<ExposedSample>, usize) {
    let mut samples = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_sample_line(line) {
            Some(sample) => samples.push(sample),
            None => bad += 1,
        }
    }
    (samples, bad)
}

fn parse_sample_line(line: &str) -> Option<ExposedSample> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim();
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            };
            labels.push((label.to_string(), value));
            rest = rest[end + 1..].trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // A timestamp in the exposition is not honoured: every sample of a set carries the
    // time it was collected (the agent never writes one).
    Some(ExposedSample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Builds the `WriteRequest` of one sample set, all samples at `timestamp_ms`, with the
/// external `labels` added to every series (sorted by name). A series label with the
/// name of an external label but another value is kept as `exported_<name>`, as
/// Prometheus does for target labels when `honor_labels` is off.
pub fn write_request(
    samples: Vec<ExposedSample>,
    external: &[(String, String)],
    timestamp_ms: i64,
) -> WriteRequest {
    let timeseries = samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<Label> = Vec::with_capacity(sample.labels.len() + 4);
            labels.push(Label {
                name: "__name__".into(),
                value: sample.name,
            });
            for (name, value) in sample.labels {
                let name = match external.iter().find(|(n, _)| *n == name) {
                    Some((_, v)) if *v == value => continue,
                    Some(_) => format!("exported_{name}"),
                    None => name,
                };
                labels.push(Label { name, value });
            }
            for (name, value) in external {
                labels.push(Label {
                    name: name.clone(),
                    value: value.clone(),
                });
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            labels.dedup_by(|a, b| a.name == b.name);
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: sample.value,
                    timestamp: timestamp_ms,
                }],
            }
        })
        .collect();
    WriteRequest { timeseries }
}

/// Encodes a `WriteRequest` and compresses it in snappy's block format: the body of a
/// remote-write request, and what one buffer record holds.
pub fn encode_compressed(request: &WriteRequest) -> Result<Vec<u8>, String> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .map_err(|e| format!("snappy: {e}"))
}

/// One request body from several buffered records (each a compressed `WriteRequest`):
/// decompressed, laid end to end (one `WriteRequest` with every series, in record
/// order) and compressed again. A single record is sent as it is.
pub fn concat_records(records: &[bytes::Bytes]) -> Result<bytes::Bytes, String> {
    if let [only] = records {
        return Ok(only.clone());
    }
    let mut decoder = snap::raw::Decoder::new();
    let mut plain = Vec::new();
    for record in records {
        plain.extend_from_slice(
            &decoder
                .decompress_vec(record)
                .map_err(|e| format!("buffered record: snappy: {e}"))?,
        );
    }
    snap::raw::Encoder::new()
        .compress_vec(&plain)
        .map(bytes::Bytes::from)
        .map_err(|e| format!("snappy: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agents_exposition() {
        let text = "# HELP a A.\n# TYPE a gauge\na 1\nb{x=\"1\",y=\"q\\\"\\\\\\n\"} -Inf\n\
                    c_bucket{le=\"+Inf\"} 3\nbad line\n{x=\"1\"} 2\nd{x=\"1\" 2\nnan NaN\n";
        let (samples, bad) = parse_exposition(text);
        assert_eq!(bad, 3, "{samples:?}");
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "a");
        assert_eq!(samples[1].labels[1], ("y".into(), "q\"\\\n".into()));
        assert_eq!(samples[1].value, f64::NEG_INFINITY);
        assert_eq!(samples[2].labels, [("le".into(), "+Inf".into())]);
        assert!(samples[3].value.is_nan());
    }

    #[test]
    fn external_labels_are_added_sorted_and_conflicts_exported() {
        let (samples, _) = parse_exposition(
            "intmax_builder_ready{node=\"pi-1\"} 1\nx{node=\"other\",a=\"1\"} 2\n",
        );
        let external = vec![
            ("instance".to_string(), "pi-1".to_string()),
            ("job".to_string(), "node".to_string()),
            ("node".to_string(), "pi-1".to_string()),
        ];
        let request = write_request(samples, &external, 1_000);
        let names = |i: usize| -> Vec<(String, String)> {
            request.timeseries[i]
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            names(0),
            pairs(&[
                ("__name__", "intmax_builder_ready"),
                ("instance", "pi-1"),
                ("job", "node"),
                ("node", "pi-1")
            ])
        );
        assert_eq!(
            names(1),
            pairs(&[
                ("__name__", "x"),
                ("a", "1"),
                ("exported_node", "other"),
                ("instance", "pi-1"),
                ("job", "node"),
                ("node", "pi-1")
            ])
        );
        assert_eq!(request.timeseries[1].samples[0].timestamp, 1_000);
    }

    #[test]
    fn concatenated_records_are_one_request() {
        let one = |name: &str, t: i64| {
            let (samples, _) = parse_exposition(&format!("{name} 1\n"));
            bytes::Bytes::from(encode_compressed(&write_request(samples, &[], t)).expect("enc"))
        };
        let body = concat_records(&[one("a", 1), one("b", 2), one("a", 3)]).expect("concat");
        let plain = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        let request = WriteRequest::decode(plain.as_slice()).expect("decode");
        let seen: Vec<(String, i64)> = request
            .timeseries
            .iter()
            .map(|t| (t.labels[0].value.clone(), t.samples[0].timestamp))
            .collect();
        assert_eq!(seen, [("a".into(), 1), ("b".into(), 2), ("a".into(), 3)]);
    }
}
