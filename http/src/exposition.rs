//! Prometheus text exposition (format 0.0.4), rendered once per snapshot.
//!
//! The data model is the `prometheus` crate's `proto::MetricFamily`, so a
//! `prometheus::Registry::gather()` and the agent's own collectors render alike. The
//! writer is ours: the crate's `TextEncoder` (0.14) panics on untyped families, which
//! textfiles use all the time, and prints infinities as `inf`. The result and its gzip
//! form are cached in an [`Exposition`], so serving a scrape is a copy of bytes.

use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compression, write::DeflateEncoder};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};

/// The content type of the text format 0.0.4, as node_exporter sends it.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes families in the text format 0.0.4, leaving out families without samples.
pub fn encode_families(families: &[MetricFamily], out: &mut Vec<u8>) -> Result<(), crate::Error> {
    for family in families.iter().filter(|f| !f.get_metric().is_empty()) {
        encode_family(family, out);
    }
    Ok(())
}

fn encode_family(family: &MetricFamily, out: &mut Vec<u8>) {
    let name = family.name();
    if !family.help().is_empty() {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        escape_into(family.help(), false, out);
        out.push(b'\n');
    }
    let kind = family.get_field_type();
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(match kind {
        MetricType::COUNTER => b" counter\n".as_slice(),
        MetricType::GAUGE => b" gauge\n",
        MetricType::SUMMARY => b" summary\n",
        MetricType::HISTOGRAM => b" histogram\n",
        MetricType::UNTYPED => b" untyped\n",
    });
    for metric in family.get_metric() {
        match kind {
            MetricType::COUNTER | MetricType::GAUGE | MetricType::UNTYPED => {
                sample(out, name, "", metric, None, simple_value(kind, metric));
            }
            MetricType::SUMMARY => {
                let summary = metric.get_summary();
                for q in summary.get_quantile() {
                    sample(
                        out,
                        name,
                        "",
                        metric,
                        Some(("quantile", q.quantile())),
                        q.value(),
                    );
                }
                sample(out, name, "_sum", metric, None, summary.sample_sum());
                sample(
                    out,
                    name,
                    "_count",
                    metric,
                    None,
                    summary.sample_count() as f64,
                );
            }
            MetricType::HISTOGRAM => {
                let histogram = metric.get_histogram();
                let mut saw_inf = false;
                for bucket in histogram.get_bucket() {
                    saw_inf |= bucket.upper_bound() == f64::INFINITY;
                    sample(
                        out,
                        name,
                        "_bucket",
                        metric,
                        Some(("le", bucket.upper_bound())),
                        bucket.cumulative_count() as f64,
                    );
                }
                if !saw_inf {
                    sample(
                        out,
                        name,
                        "_bucket",
                        metric,
                        Some(("le", f64::INFINITY)),
                        histogram.get_sample_count() as f64,
                    );
                }
                sample(out, name, "_sum", metric, None, histogram.get_sample_sum());
                sample(
                    out,
                    name,
                    "_count",
                    metric,
                    None,
                    histogram.get_sample_count() as f64,
                );
            }
        }
    }
}

/// A metric with its labels sorted by name, as Prometheus' Go client renders them.
pub fn metric_with_labels(labels: &[(&str, &str)]) -> Metric {
    let mut pairs: Vec<LabelPair> = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_string());
            pair.set_value((*value).to_string());
            pair
        })
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    let mut metric = Metric::default();
    metric.set_label(pairs);
    metric
}

/// The value of a counter, gauge or untyped sample of a family of type `kind`.
#[allow(deprecated)] // `get_untyped` is marked protobuf-specific, but it is the plain model's field.
pub fn simple_value(kind: MetricType, metric: &Metric) -> f64 {
    match kind {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        _ => metric.get_untyped().get_value(),
    }
}

fn sample(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    metric: &Metric,
    extra: Option<(&str, f64)>,
    value: f64,
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    let labels = metric.get_label();
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        let mut first = true;
        for label in labels {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(label.name().as_bytes());
            out.extend_from_slice(b"=\"");
            escape_into(label.value(), true, out);
            out.push(b'"');
        }
        if let Some((label, bound)) = extra {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(label.as_bytes());
            out.extend_from_slice(b"=\"");
            write_label_float(bound, out);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    write_float(value, out);
    let timestamp = metric.timestamp_ms();
    if timestamp != 0 {
        let _ = write!(out, " {timestamp}");
    }
    out.push(b'\n');
}

/// Writes a float as Prometheus parses it: `+Inf`, `-Inf`, `NaN`, else the shortest
/// form that round-trips, with an exponent for very large or small magnitudes.
pub fn write_float(value: f64, out: &mut Vec<u8>) {
    if value.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if value != 0.0 && (value.abs() >= 1e21 || value.abs() < 1e-6) {
        let _ = write!(out, "{value:e}");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Writes an `le` or `quantile` label value exactly as Go's `%g` (shortest) does, the
/// way node_exporter renders it: Prometheus compares label values as strings, so
/// `1638400` and `1.6384e+06` would be two different series.
pub fn write_label_float(value: f64, out: &mut Vec<u8>) {
    if !value.is_finite() {
        return write_float(value, out);
    }
    if value == 0.0 {
        // Go prints both zeros as "0" here.
        out.push(b'0');
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits Go uses; only the choice
    // of notation and the exponent's spelling differ.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        let _ = write!(out, "{value}");
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.unsigned_abs());
    }
}

/// Escapes `\`, newline and (in label values) `"`, as the text format requires.
fn escape_into(text: &str, quote: bool, out: &mut Vec<u8>) {
    for byte in text.bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(byte),
        }
    }
}

/// One rendered body and, made on first demand, its compressed form.
#[derive(Debug, Default)]
pub struct Exposition {
    text: Bytes,
    deflated: OnceLock<Deflated>,
}

/// The body as a deflate stream left open (sync-flushed, no final block), so a scrape
/// can close it with a short tail without compressing the body again.
#[derive(Debug)]
struct Deflated {
    /// The gzip header and the open deflate stream.
    head: Bytes,
    /// CRC-32 of the body so far.
    crc: crc32fast::Hasher,
}

/// Gzip header: magic, deflate, no flags, no mtime, no extra flags, OS "Unix".
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

impl Exposition {
    /// Wraps an already rendered text body.
    pub fn new(text: impl Into<Bytes>) -> Self {
        Self {
            text: text.into(),
            deflated: OnceLock::new(),
        }
    }

    /// The plain text body.
    pub fn text(&self) -> Bytes {
        self.text.clone()
    }

    /// The gzip body.
    pub fn gzip(&self) -> Bytes {
        self.gzip_with(b"")
    }

    /// The body followed by `tail` (the request metrics), gzipped as one member. The
    /// body is compressed at most once per exposition; the tail goes in stored blocks.
    pub fn gzip_with(&self, tail: &[u8]) -> Bytes {
        let deflated = self.deflated.get_or_init(|| {
            // Level 1: the body is small and repetitive; speed matters more than bytes.
            let mut encoder = DeflateEncoder::new(
                Vec::with_capacity(self.text.len() / 4 + GZIP_HEADER.len()),
                Compression::fast(),
            );
            // Writing into a Vec cannot fail; flush() is a sync flush: byte-aligned,
            // stream still open.
            let _ = encoder.get_mut().write_all(&GZIP_HEADER);
            let _ = encoder.write_all(&self.text);
            let _ = encoder.flush();
            let head = Bytes::from(std::mem::take(encoder.get_mut()));
            let mut crc = crc32fast::Hasher::new();
            crc.update(&self.text);
            Deflated { head, crc }
        });
        let mut out = Vec::with_capacity(deflated.head.len() + tail.len() + 16);
        out.extend_from_slice(&deflated.head);
        // Stored blocks hold at most 65535 bytes each; the last one is final (even empty).
        let mut chunks = tail.chunks(usize::from(u16::MAX)).peekable();
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let len = chunk.len() as u16; // at most u16::MAX by construction
            out.push(u8::from(last));
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
            if last {
                break;
            }
        }
        let mut crc = deflated.crc.clone();
        crc.update(tail);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        // ISIZE is the length modulo 2^32.
        let size = (self.text.len() + tail.len()) as u32;
        out.extend_from_slice(&size.to_le_bytes());
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::{Gauge, Metric, MetricType};
    use std::io::Read;

    fn gauge_family(name: &str, values: &[f64]) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(name.into());
        family.set_help("help text".into());
        family.set_field_type(MetricType::GAUGE);
        for v in values {
            let mut gauge = Gauge::default();
            gauge.set_value(*v);
            let mut metric = Metric::default();
            metric.set_gauge(gauge);
            family.mut_metric().push(metric);
        }
        family
    }

    #[test]
    fn bucket_and_quantile_labels_are_formatted_like_go() {
        // Expected strings are what Go's strconv.FormatFloat(v, 'g', -1, 64) returns.
        let cases = [
            (1_638_400.0, "1.6384e+06"),
            (1e6, "1e+06"),
            (999_999.0, "999999"),
            (100_000.0, "100000"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (0.005, "0.005"),
            (0.5, "0.5"),
            (1.0, "1"),
            (123_456_789.0, "1.23456789e+08"),
            (1e100, "1e+100"),
            (-0.0, "0"),
            (-1_638_400.0, "-1.6384e+06"),
            (f64::INFINITY, "+Inf"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_label_float(value, &mut out);
            assert_eq!(String::from_utf8(out).expect("utf8"), expected, "{value}");
        }
    }

    #[test]
    fn empty_families_are_left_out() {
        let mut out = Vec::new();
        encode_families(
            &[gauge_family("a", &[]), gauge_family("b", &[1.5])],
            &mut out,
        )
        .expect("encode");
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(text, "# HELP b help text\n# TYPE b gauge\nb 1.5\n");
    }

    #[test]
    fn floats_and_escapes() {
        let mut out = Vec::new();
        for v in [
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            0.0,
            1.5,
            1e22,
            2.5e-9,
            17179869184.0,
        ] {
            write_float(v, &mut out);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "+Inf -Inf NaN 0 1.5 1e22 2.5e-9 17179869184 "
        );
        let mut out = Vec::new();
        escape_into("a\\b\n\"c\"", true, &mut out);
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"a\\b\n\"c\""#);
    }

    #[test]
    fn gzip_round_trips() {
        let exposition = Exposition::new("x 1\n".repeat(100));
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&exposition.gzip()[..])
            .read_to_string(&mut decoded)
            .expect("gunzip");
        assert_eq!(decoded, "x 1\n".repeat(100));
    }

    /// The cached body plus any tail is one valid gzip member (CRC and size checked by
    /// the decoder), also for a tail longer than a stored block and for an empty body.
    #[test]
    fn gzip_with_tail_round_trips() {
        for (body, tail) in [
            ("x 1\n".repeat(1000), "y 2\n".to_string()),
            ("x 1\n".repeat(10), "z 3\n".repeat(40_000)),
            (String::new(), String::new()),
        ] {
            let exposition = Exposition::new(body.clone());
            for _ in 0..2 {
                let mut decoded = String::new();
                flate2::read::GzDecoder::new(&exposition.gzip_with(tail.as_bytes())[..])
                    .read_to_string(&mut decoded)
                    .expect("gunzip");
                assert_eq!(decoded, format!("{body}{tail}"));
            }
        }
    }
}
