//! A parser for the Prometheus text format 0.0.4, as node_exporter 1.5 reads textfiles.
//!
//! It accepts and rejects what node_exporter 1.5's parser (`expfmt.TextParser` of
//! prometheus/common) does, so a file that works there works here and a file it
//! rejects is rejected here, with the line number and message node_exporter logs
//! (checked by running it on each case of the tests):
//!
//! - lines end in `\n`; a last line without one is an error ("unexpected end of input
//!   stream"), a `\r` before it is part of the value (so CRLF files are rejected);
//! - `# HELP name text` (escapes `\\` and `\n` only) and `# TYPE name type` (type
//!   case-insensitive, the rest of the line taken as is); other `#` lines are comments;
//!   a second HELP, or a TYPE after the family's samples, is an error;
//! - samples `name{label="value",…} value [timestamp]`, blanks and tabs allowed around
//!   tokens, a trailing comma allowed, label value escapes `\"`, `\\`, `\n`; values are
//!   Go floats without hex or `_` (`+Inf`, `-Inf`, `NaN`, `1e3`, `.5`; not `-NaN`, not
//!   values that overflow); a blank after the value starts a timestamp, so trailing
//!   blanks are an error;
//! - a family need not be contiguous; summary lines (`quantile`, `_sum`, `_count`) and
//!   histogram lines (`le`, `_bucket`, `_sum`, `_count`) with the same other labels form
//!   one metric; `_sum`/`_count`/`_bucket` belong to a summary or histogram only if one
//!   of the base name was seen before; families without samples are dropped.
//!
//! Stricter than node_exporter 1.5 where 1.5 crashes on what its parser accepted: label
//! names starting with `__` and the type `gauge_histogram` are errors here.
//! Checking for timestamps, duplicates and merging across files is the collector's job.

use std::collections::HashMap;
use std::fmt;

/// A family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `summary`.
    Summary,
    /// `untyped`, or no TYPE line.
    Untyped,
    /// `histogram`.
    Histogram,
}

impl FamilyType {
    /// The name used in TYPE lines.
    pub fn as_str(self) -> &'static str {
        match self {
            FamilyType::Counter => "counter",
            FamilyType::Gauge => "gauge",
            FamilyType::Summary => "summary",
            FamilyType::Untyped => "untyped",
            FamilyType::Histogram => "histogram",
        }
    }
}

/// One family of a parsed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Its name.
    pub name: String,
    /// The HELP text, unescaped; `None` without a HELP line.
    pub help: Option<String>,
    /// Its type.
    pub kind: FamilyType,
    /// Its metrics, in the order of their first line.
    pub metrics: Vec<Metric>,
}

/// One metric (label set) of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Labels in file order; for summaries and histograms without `quantile`/`le`.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: Value,
    /// The client-side timestamp in milliseconds, if a line of this metric had one.
    pub timestamp_ms: Option<i64>,
    /// The 1-based line where the metric first appeared.
    pub line: usize,
}

/// A metric's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Counter, gauge or untyped value.
    Simple(f64),
    /// A summary.
    Summary {
        /// `(quantile, value)` in file order.
        quantiles: Vec<(f64, f64)>,
        /// `_sum` (0 when absent, as in Go).
        sum: f64,
        /// `_count`, truncated to an integer (0 when absent).
        count: u64,
    },
    /// A histogram.
    Histogram {
        /// `(upper bound, cumulative count)` in file order.
        buckets: Vec<(f64, u64)>,
        /// `_sum` (0 when absent).
        sum: f64,
        /// `_count` (0 when absent).
        count: u64,
    },
}

/// The result of parsing one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Families with at least one metric, in the order they were first named.
    pub families: Vec<Family>,
    /// The first line carrying a timestamp, if any.
    pub first_timestamp_line: Option<usize>,
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong, worded as node_exporter words it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole file.
pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let mut parser = Parser::default();
    let mut rest = text;
    let mut line = 0;
    loop {
        line += 1;
        match rest.find('\n') {
            Some(end) => {
                parser.line(&rest[..end], line)?;
                rest = &rest[end + 1..];
            }
            None => {
                if !rest.bytes().all(is_blank) {
                    // Go stops at the end of input in the middle of this line. Report a
                    // syntax error of the line itself first: it is the more useful one.
                    parser.line(rest, line)?;
                    return Err(ParseError {
                        line,
                        message: "unexpected end of input stream".into(),
                    });
                }
                break;
            }
        }
    }
    let mut families = parser.families;
    families.retain(|f| !f.metrics.is_empty());
    Ok(Parsed {
        families: families
            .into_iter()
            .map(|f| Family {
                name: f.name,
                help: f.help,
                kind: f.kind.unwrap_or(FamilyType::Untyped),
                metrics: f.metrics,
            })
            .collect(),
        first_timestamp_line: parser.first_timestamp_line,
    })
}

/// A family while parsing: its type is unknown until a TYPE line or a sample.
#[derive(Debug)]
struct OpenFamily {
    name: String,
    help: Option<String>,
    kind: Option<FamilyType>,
    metrics: Vec<Metric>,
    /// Summary/histogram metrics by their sorted labels.
    grouped: HashMap<Vec<(String, String)>, usize>,
}

/// What a sample line's name says about its role in a summary or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Plain,
    Sum,
    Count,
}

#[derive(Debug, Default)]
struct Parser {
    families: Vec<OpenFamily>,
    by_name: HashMap<String, usize>,
    first_timestamp_line: Option<usize>,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && is_blank(bytes[i]) {
        i += 1;
    }
    i
}

/// End of the token starting at `i`: the next blank or the end of the line.
fn token_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && !is_blank(bytes[i]) {
        i += 1;
    }
    i
}

fn is_label_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// End of the metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) starting at `i`; `i` if none.
fn metric_name_end(bytes: &[u8], mut i: usize) -> usize {
    if i < bytes.len() && (is_label_name_start(bytes[i]) || bytes[i] == b':') {
        i += 1;
        while i < bytes.len() && (is_label_name_char(bytes[i]) || bytes[i] == b':') {
            i += 1;
        }
    }
    i
}

/// End of the label name (`[a-zA-Z_][a-zA-Z0-9_]*`) starting at `i`; `i` if none.
fn label_name_end(bytes: &[u8], mut i: usize) -> usize {
    if i < bytes.len() && is_label_name_start(bytes[i]) {
        i += 1;
        while i < bytes.len() && is_label_name_char(bytes[i]) {
            i += 1;
        }
    }
    i
}

/// The byte at `i` as Go's `%q` shows a byte (`'x'`), or `'\n'` at the end of the line.
fn quoted_byte(line: &str, i: usize) -> String {
    match line[i..].chars().next() {
        Some(c) => format!("{c:?}"),
        None => "'\\n'".into(),
    }
}

/// Parses a float as Go's `strconv.ParseFloat` does for the text format: no hex, no
/// `_`, no signed NaN, and a value that overflows is an error rather than infinity.
pub fn parse_float(text: &str) -> Option<f64> {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let literal_inf =
        unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity");
    if unsigned.eq_ignore_ascii_case("nan") && unsigned.len() != text.len() {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    (!value.is_infinite() || literal_inf).then_some(value)
}

/// Unescapes a HELP text (`\\`, `\n`).
fn unescape_help(text: &str, line: usize) -> Result<String, ParseError> {
    if !text.contains('\\') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => {
                return Err(ParseError {
                    line,
                    message: format!("invalid escape sequence '\\{other}'"),
                });
            }
            None => {
                return Err(ParseError {
                    line,
                    message: "invalid escape sequence: '\\' at the end of the line".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Reads a label value whose opening quote is just before `start`; returns it and the
/// index after the closing quote.
fn read_label_value(
    line: &str,
    start: usize,
    number: usize,
) -> Result<(String, usize), ParseError> {
    let bytes = line.as_bytes();
    let mut value = String::new();
    let mut segment = start;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                value.push_str(&line[segment..i]);
                return Ok((value, i + 1));
            }
            b'\\' => {
                value.push_str(&line[segment..i]);
                match bytes.get(i + 1) {
                    Some(b'"') => value.push('"'),
                    Some(b'\\') => value.push('\\'),
                    Some(b'n') => value.push('\n'),
                    Some(_) => {
                        return Err(ParseError {
                            line: number,
                            message: format!(
                                "invalid escape sequence '\\{}'",
                                line[i + 1..].chars().next().unwrap_or('?')
                            ),
                        });
                    }
                    None => {
                        return Err(ParseError {
                            line: number,
                            message: "invalid escape sequence: '\\' at the end of the line".into(),
                        });
                    }
                }
                i += 2;
                segment = i;
            }
            _ => i += 1,
        }
    }
    value.push_str(&line[segment..]);
    Err(ParseError {
        line: number,
        message: format!("label value {value:?} contains unescaped new-line"),
    })
}

fn strip_count(name: &str) -> Option<&str> {
    name.strip_suffix("_count").filter(|base| !base.is_empty())
}

fn strip_sum(name: &str) -> Option<&str> {
    name.strip_suffix("_sum").filter(|base| !base.is_empty())
}

impl Parser {
    fn error<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line,
            message: message.into(),
        })
    }

    /// The family a name refers to, as Go's `setOrCreateCurrentMF`: the family of that
    /// name; else the summary or histogram whose `_sum`/`_count` (or histogram
    /// `_bucket`) this is; else a new family.
    fn family_for(&mut self, name: &str) -> (usize, Role) {
        if let Some(&index) = self.by_name.get(name) {
            return (index, Role::Plain);
        }
        let summary_base = strip_count(name).or_else(|| strip_sum(name));
        if let Some(&index) = summary_base.and_then(|base| self.by_name.get(base))
            && self.families[index].kind == Some(FamilyType::Summary)
        {
            return (index, Self::role(name));
        }
        let histogram_base =
            summary_base.or_else(|| name.strip_suffix("_bucket").filter(|base| !base.is_empty()));
        if let Some(&index) = histogram_base.and_then(|base| self.by_name.get(base))
            && self.families[index].kind == Some(FamilyType::Histogram)
        {
            return (index, Self::role(name));
        }
        self.families.push(OpenFamily {
            name: name.to_string(),
            help: None,
            kind: None,
            metrics: Vec::new(),
            grouped: HashMap::new(),
        });
        let index = self.families.len() - 1;
        self.by_name.insert(name.to_string(), index);
        (index, Role::Plain)
    }

    fn role(name: &str) -> Role {
        if strip_count(name).is_some() {
            Role::Count
        } else if strip_sum(name).is_some() {
            Role::Sum
        } else {
            Role::Plain
        }
    }

    fn line(&mut self, line: &str, number: usize) -> Result<(), ParseError> {
        let bytes = line.as_bytes();
        let start = skip_blanks(bytes, 0);
        match bytes.get(start) {
            None => Ok(()),
            Some(b'#') => self.comment(line, start + 1, number),
            Some(_) => self.sample(line, start, number),
        }
    }

    fn comment(&mut self, line: &str, after_hash: usize, number: usize) -> Result<(), ParseError> {
        let bytes = line.as_bytes();
        let keyword_start = skip_blanks(bytes, after_hash);
        let keyword_end = token_end(bytes, keyword_start);
        if keyword_end == bytes.len() {
            return Ok(());
        }
        let keyword = &line[keyword_start..keyword_end];
        if keyword != "HELP" && keyword != "TYPE" {
            return Ok(());
        }
        let name_start = skip_blanks(bytes, keyword_end);
        let name_end = metric_name_end(bytes, name_start);
        if name_end == bytes.len() {
            return Ok(());
        }
        if !is_blank(bytes[name_end]) {
            return Self::error(number, "invalid metric name in comment");
        }
        let (index, _) = self.family_for(&line[name_start..name_end]);
        let text_start = skip_blanks(bytes, name_end);
        if text_start == bytes.len() {
            return Ok(());
        }
        let text = &line[text_start..];
        let family = &mut self.families[index];
        if keyword == "HELP" {
            if family.help.is_some() {
                return Self::error(
                    number,
                    format!("second HELP line for metric name {:?}", family.name),
                );
            }
            family.help = Some(unescape_help(text, number)?);
        } else {
            if family.kind.is_some() {
                return Self::error(
                    number,
                    format!(
                        "second TYPE line for metric name {:?}, or TYPE reported after samples",
                        family.name
                    ),
                );
            }
            family.kind = Some(match text.to_ascii_uppercase().as_str() {
                "COUNTER" => FamilyType::Counter,
                "GAUGE" => FamilyType::Gauge,
                "SUMMARY" => FamilyType::Summary,
                "UNTYPED" => FamilyType::Untyped,
                "HISTOGRAM" => FamilyType::Histogram,
                _ => return Self::error(number, format!("unknown metric type {text:?}")),
            });
        }
        Ok(())
    }

    fn sample(&mut self, line: &str, start: usize, number: usize) -> Result<(), ParseError> {
        let bytes = line.as_bytes();
        let name_end = metric_name_end(bytes, start);
        if name_end == start {
            return Self::error(number, "invalid metric name");
        }
        let (index, role) = self.family_for(&line[start..name_end]);
        let kind = *self.families[index].kind.get_or_insert(FamilyType::Untyped);
        let family_name = &self.families[index].name;

        let mut labels: Vec<(String, String)> = Vec::new();
        // Go's "not set" for both is NaN, so `quantile="NaN"` is ignored as there.
        let mut quantile = f64::NAN;
        let mut bucket = f64::NAN;
        let mut i = skip_blanks(bytes, name_end);
        if bytes.get(i) == Some(&b'{') {
            i += 1;
            loop {
                i = skip_blanks(bytes, i);
                if bytes.get(i) == Some(&b'}') {
                    i += 1;
                    break;
                }
                let label_end = label_name_end(bytes, i);
                if label_end == i {
                    return Self::error(
                        number,
                        format!("invalid label name for metric {family_name:?}"),
                    );
                }
                let label = &line[i..label_end];
                i = skip_blanks(bytes, label_end);
                if bytes.get(i) != Some(&b'=') {
                    return Self::error(
                        number,
                        format!(
                            "expected '=' after label name, found {}",
                            quoted_byte(line, i)
                        ),
                    );
                }
                if label == "__name__" {
                    return Self::error(number, "label name \"__name__\" is reserved");
                }
                if label.starts_with("__") {
                    // node_exporter 1.5 accepts these, then crashes building the metric.
                    return Self::error(
                        number,
                        format!(
                            "label name {label:?} is reserved (names starting with \"__\" are for Prometheus' own use)"
                        ),
                    );
                }
                let special = (kind == FamilyType::Summary && label == "quantile")
                    || (kind == FamilyType::Histogram && label == "le");
                if !special && labels.iter().any(|(name, _)| name == label) {
                    return Self::error(
                        number,
                        format!("duplicate label names for metric {family_name:?}"),
                    );
                }
                i = skip_blanks(bytes, i + 1);
                if bytes.get(i) != Some(&b'"') {
                    return Self::error(
                        number,
                        format!(
                            "expected '\"' at start of label value, found {}",
                            quoted_byte(line, i)
                        ),
                    );
                }
                let (value, after) = read_label_value(line, i + 1, number)?;
                if special {
                    let parsed = parse_float(&value).ok_or_else(|| ParseError {
                        line: number,
                        message: format!(
                            "expected float as value for '{label}' label, got {value:?}"
                        ),
                    })?;
                    if label == "quantile" {
                        quantile = parsed;
                    } else {
                        bucket = parsed;
                    }
                } else {
                    labels.push((label.to_string(), value.clone()));
                }
                i = skip_blanks(bytes, after);
                match bytes.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => {
                        return Self::error(
                            number,
                            format!("unexpected end of label value {value:?}"),
                        );
                    }
                }
            }
            i = skip_blanks(bytes, i);
        }

        let value_end = token_end(bytes, i);
        let value_text = &line[i..value_end];
        let value = parse_float(value_text).ok_or_else(|| ParseError {
            line: number,
            message: format!("expected float as value, got {value_text:?}"),
        })?;
        let mut timestamp = None;
        if value_end < bytes.len() {
            let ts_start = skip_blanks(bytes, value_end);
            let ts_end = token_end(bytes, ts_start);
            let ts_text = &line[ts_start..ts_end];
            timestamp = Some(ts_text.parse::<i64>().map_err(|_| ParseError {
                line: number,
                message: format!("expected integer as timestamp, got {ts_text:?}"),
            })?);
            if ts_end < bytes.len() {
                return Self::error(
                    number,
                    format!("spurious string after timestamp: {:?}", &line[ts_end..]),
                );
            }
            self.first_timestamp_line.get_or_insert(number);
        }

        let family = &mut self.families[index];
        let metric_index = match kind {
            FamilyType::Summary | FamilyType::Histogram => {
                let mut key = labels.clone();
                key.sort();
                match family.grouped.get(&key) {
                    Some(&m) => m,
                    None => {
                        family.metrics.push(Metric {
                            labels,
                            value: if kind == FamilyType::Summary {
                                Value::Summary {
                                    quantiles: Vec::new(),
                                    sum: 0.0,
                                    count: 0,
                                }
                            } else {
                                Value::Histogram {
                                    buckets: Vec::new(),
                                    sum: 0.0,
                                    count: 0,
                                }
                            },
                            timestamp_ms: None,
                            line: number,
                        });
                        family.grouped.insert(key, family.metrics.len() - 1);
                        family.metrics.len() - 1
                    }
                }
            }
            _ => {
                family.metrics.push(Metric {
                    labels,
                    value: Value::Simple(value),
                    timestamp_ms: None,
                    line: number,
                });
                family.metrics.len() - 1
            }
        };
        let metric = &mut family.metrics[metric_index];
        if timestamp.is_some() {
            metric.timestamp_ms = timestamp;
        }
        // Go converts counts with uint64(float): truncation; negative and NaN counts
        // become 0 here as on ARM (amd64 Go wraps them around).
        match &mut metric.value {
            Value::Simple(_) => {}
            Value::Summary {
                quantiles,
                sum,
                count,
            } => match role {
                Role::Count => *count = value as u64,
                Role::Sum => *sum = value,
                Role::Plain if !quantile.is_nan() => quantiles.push((quantile, value)),
                Role::Plain => {}
            },
            Value::Histogram {
                buckets,
                sum,
                count,
            } => match role {
                Role::Count => *count = value as u64,
                Role::Sum => *sum = value,
                Role::Plain if !bucket.is_nan() => buckets.push((bucket, value as u64)),
                Role::Plain => {}
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Parsed {
        parse(text).unwrap_or_else(|e| panic!("{e} in {text:?}"))
    }

    fn parse_err(text: &str) -> ParseError {
        match parse(text) {
            Ok(parsed) => panic!("{text:?} parsed: {parsed:?}"),
            Err(e) => e,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_wiki_cron_output() {
        let parsed = parse_ok(concat!(
            "# HELP intmax_builder_container_running Whether the block builder container is running\n",
            "# TYPE intmax_builder_container_running gauge\n",
            "intmax_builder_container_running{node=\"pi-01\"} 1\n",
            "intmax_builder_last_scrape_timestamp{node=\"pi-01\"} 1732240000\n",
        ));
        assert_eq!(parsed.first_timestamp_line, None);
        assert_eq!(
            parsed.families,
            vec![
                Family {
                    name: "intmax_builder_container_running".into(),
                    help: Some("Whether the block builder container is running".into()),
                    kind: FamilyType::Gauge,
                    metrics: vec![Metric {
                        labels: labels(&[("node", "pi-01")]),
                        value: Value::Simple(1.0),
                        timestamp_ms: None,
                        line: 3,
                    }],
                },
                Family {
                    name: "intmax_builder_last_scrape_timestamp".into(),
                    help: None,
                    kind: FamilyType::Untyped,
                    metrics: vec![Metric {
                        labels: labels(&[("node", "pi-01")]),
                        value: Value::Simple(1732240000.0),
                        timestamp_ms: None,
                        line: 4,
                    }],
                },
            ]
        );
    }

    #[test]
    fn parses_summaries_and_histograms() {
        let parsed = parse_ok(concat!(
            "# TYPE rpc summary\n",
            "rpc{quantile=\"0.9\",a=\"1\"} 3\n",
            "rpc{a=\"1\",quantile=\"0.5\"} 2\n",
            "rpc_sum{a=\"1\"} 10\n",
            "rpc_count{a=\"1\"} 4.7\n",
            "rpc{a=\"2\",quantile=\"0.5\"} 1\n",
            "# TYPE lat histogram\n",
            "lat_bucket{le=\"1\"} 1\n",
            "lat_bucket{le=\"+Inf\"} 2\n",
            "lat_sum 3\n",
            "lat_count 2\n",
        ));
        let [rpc, lat] = &parsed.families[..] else {
            panic!("{parsed:?}")
        };
        assert_eq!(rpc.kind, FamilyType::Summary);
        assert_eq!(rpc.metrics.len(), 2);
        assert_eq!(rpc.metrics[0].labels, labels(&[("a", "1")]));
        assert_eq!(
            rpc.metrics[0].value,
            Value::Summary {
                quantiles: vec![(0.9, 3.0), (0.5, 2.0)],
                sum: 10.0,
                count: 4
            }
        );
        assert_eq!(
            rpc.metrics[1].value,
            Value::Summary {
                quantiles: vec![(0.5, 1.0)],
                sum: 0.0,
                count: 0
            }
        );
        assert_eq!(lat.kind, FamilyType::Histogram);
        assert_eq!(
            lat.metrics,
            vec![Metric {
                labels: vec![],
                value: Value::Histogram {
                    buckets: vec![(1.0, 1), (f64::INFINITY, 2)],
                    sum: 3.0,
                    count: 2
                },
                timestamp_ms: None,
                line: 8,
            }]
        );
    }

    #[test]
    fn sum_and_count_need_the_summary_declared_first() {
        // Without a TYPE, `x_sum` is a family of its own, as in Go.
        let parsed = parse_ok("x_sum 1\nx_count 2\n");
        let names: Vec<_> = parsed.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["x_sum", "x_count"]);
        // A family named by HELP first keeps its own name.
        let parsed = parse_ok("# HELP s_count own\n# TYPE s summary\ns_count 1\n");
        assert_eq!(parsed.families.len(), 1);
        assert_eq!(parsed.families[0].name, "s_count");
        assert_eq!(parsed.families[0].help.as_deref(), Some("own"));
        // `_bucket` of a summary is not part of it.
        let parsed = parse_ok("# TYPE s summary\ns_bucket 1\n");
        assert_eq!(parsed.families[0].name, "s_bucket");
    }

    #[test]
    fn handles_escapes_blanks_and_comments() {
        let parsed = parse_ok(concat!(
            "# a comment\n",
            "#\n",
            "   \n",
            "\n",
            "#HELP h a\\\\b\\nc \"quoted\"\n",
            "h{a=\"\u{e9} \\\"q\\\" \\\\ \\n\",} 1\n",
            "  h { b = \"2\" , } 2\n",
            "h\t{c=\"3\"}\t3\n",
            "h{} +Inf\n",
        ));
        let h = &parsed.families[0];
        assert_eq!(h.help.as_deref(), Some("a\\b\nc \"quoted\""));
        assert_eq!(h.metrics[0].labels, labels(&[("a", "\u{e9} \"q\" \\ \n")]));
        assert_eq!(h.metrics[1].labels, labels(&[("b", "2")]));
        assert_eq!(h.metrics[2].labels, labels(&[("c", "3")]));
        assert_eq!(h.metrics[3].value, Value::Simple(f64::INFINITY));
        // HELP after samples is fine, type names are case-insensitive.
        let parsed = parse_ok("x 1\n# HELP x late\n# TYPE y GAUGE\ny 2\n");
        assert_eq!(parsed.families[0].help.as_deref(), Some("late"));
        assert_eq!(parsed.families[1].kind, FamilyType::Gauge);
        // HELP/TYPE alone define nothing.
        assert!(
            parse_ok("# HELP lonely text\n# TYPE lonely gauge\n")
                .families
                .is_empty()
        );
        assert!(parse_ok("").families.is_empty());
        // Trailing blanks after the last newline are fine.
        assert_eq!(parse_ok("x 1\n  ").families.len(), 1);
    }

    #[test]
    fn parses_go_floats() {
        for (text, value) in [
            ("+Inf", f64::INFINITY),
            ("-Inf", f64::NEG_INFINITY),
            ("infinity", f64::INFINITY),
            ("1e3", 1000.0),
            ("+1.5", 1.5),
            (".5", 0.5),
            ("1.", 1.0),
            ("-0", -0.0),
        ] {
            assert_eq!(parse_float(text), Some(value), "{text}");
        }
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        for bad in ["-nan", "+NaN", "0x1p3", "1_000", "1e400", "", "1,5", "one"] {
            assert_eq!(parse_float(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_timestamps() {
        let parsed = parse_ok("a 1\nb 2 1700000000000\nc 3 -5\n");
        assert_eq!(parsed.first_timestamp_line, Some(2));
        assert_eq!(
            parsed.families[1].metrics[0].timestamp_ms,
            Some(1700000000000)
        );
    }

    /// The messages node_exporter 1.5 logs for the same input (checked by running it).
    #[test]
    fn rejects_what_node_exporter_rejects() {
        for (text, line, message) in [
            ("nonl 1", 1, "unexpected end of input stream"),
            ("a 1\n# HELP h4", 2, "unexpected end of input stream"),
            ("trail 1 \n", 1, "expected integer as timestamp, got \"\""),
            ("c 1\r\n", 1, "expected float as value, got \"1\\r\""),
            ("v -nan\n", 1, "expected float as value, got \"-nan\""),
            ("v 0x1p3\n", 1, "expected float as value, got \"0x1p3\""),
            ("v\n", 1, "expected float as value, got \"\""),
            ("v abc\n", 1, "expected float as value, got \"abc\""),
            ("v 1 2 3\n", 1, "spurious string after timestamp: \" 3\""),
            ("v 1 1.5\n", 1, "expected integer as timestamp, got \"1.5\""),
            (
                "# TYPE t2 gauge \nt2 1\n",
                1,
                "unknown metric type \"gauge \"",
            ),
            (
                "# TYPE t gauge_histogram\n",
                1,
                "unknown metric type \"gauge_histogram\"",
            ),
            (
                "x 1\n# TYPE x gauge\n",
                2,
                "second TYPE line for metric name \"x\", or TYPE reported after samples",
            ),
            (
                "# HELP x a\n# HELP x b\n",
                2,
                "second HELP line for metric name \"x\"",
            ),
            (
                "# HELP q esc \\\"q\\\"\n",
                1,
                "invalid escape sequence '\\\"'",
            ),
            (
                "# HELP q a\\\n",
                1,
                "invalid escape sequence: '\\' at the end of the line",
            ),
            ("# HELP 1x y\n", 1, "invalid metric name in comment"),
            (
                "l{a=\"x\n",
                1,
                "label value \"x\" contains unescaped new-line",
            ),
            ("l{a=\"\\q\"} 1\n", 1, "invalid escape sequence '\\q'"),
            ("{a=\"b\"} 1\n", 1, "invalid metric name"),
            ("\u{feff}u 1\n", 1, "invalid metric name"),
            ("l{1=\"b\"} 1\n", 1, "invalid label name for metric \"l\""),
            (
                "l{a \"b\"} 1\n",
                1,
                "expected '=' after label name, found '\"'",
            ),
            ("l{a} 1\n", 1, "expected '=' after label name, found '}'"),
            (
                "l{a=b} 1\n",
                1,
                "expected '\"' at start of label value, found 'b'",
            ),
            (
                "l{a=\"1\" b=\"2\"} 1\n",
                1,
                "unexpected end of label value \"1\"",
            ),
            (
                "l{a=\"1\",a=\"2\"} 1\n",
                1,
                "duplicate label names for metric \"l\"",
            ),
            (
                "l{__name__=\"x\"} 1\n",
                1,
                "label name \"__name__\" is reserved",
            ),
            (
                "# TYPE s summary\ns{quantile=\"x\"} 1\n",
                2,
                "expected float as value for 'quantile' label, got \"x\"",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"\"} 1\n",
                2,
                "expected float as value for 'le' label, got \"\"",
            ),
            ("v 1e400\n", 1, "expected float as value, got \"1e400\""),
            (
                "l{a=\"x\\\"} 1\n",
                1,
                "label value \"x\\\"} 1\" contains unescaped new-line",
            ),
        ] {
            let err = parse_err(text);
            assert_eq!(
                (err.line, err.message.as_str()),
                (line, message),
                "{text:?}"
            );
        }
        let err = parse_err("ok 1\nl{__a=\"x\"} 1\n");
        assert_eq!(err.line, 2);
        assert!(
            err.message.starts_with("label name \"__a\" is reserved"),
            "{err}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "{",
            "}",
            "#",
            "# HELP",
            "# TYPE x",
            "x{",
            "x{a",
            "x{a=",
            "x{a=\"",
            "x{a=\"\\",
            "x{a=\"b\"",
            "x{a=\"b\",",
            "x 1 ",
            "\u{e9}\u{e9}",
            "x{\u{e9}=\"1\"} 1",
            "x 1 \u{e9}",
            "x{a=\"\u{e9}\\\u{e9}\"} 1",
        ];
        for input in inputs {
            for text in [input.to_string(), format!("{input}\n")] {
                let _ = parse(&text);
            }
        }
    }

    /// Thousands of small corruptions of a valid file: errors, never a panic.
    #[test]
    fn mutated_input_never_panics() {
        let base: Vec<char> = concat!(
            "# HELP a x\\ny \\\\\n# TYPE a summary\n",
            "a{q=\"\u{e9}\\\"\",quantile=\"0.5\"} 1\na_sum{q=\"\u{e9}\\\"\"} 2\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 3 17\nplain{x=\"1\",} -Inf\n",
        )
        .chars()
        .collect();
        let alphabet: Vec<char> = "{}\"\\=, \t\n#\u{e9}_:0aZ-+.eE".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..5000 {
            let mut text = base.clone();
            for _ in 0..1 + next(3) {
                let at = next(text.len());
                match next(3) {
                    0 => text[at] = alphabet[next(alphabet.len())],
                    1 => text.insert(at, alphabet[next(alphabet.len())]),
                    _ => {
                        text.remove(at);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            match parse(&text) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.line >= 1 && e.line <= text.lines().count() + 1, "{e}");
                    failed += 1;
                }
            }
        }
        assert!(ok > 0 && failed > 0, "ok {ok}, failed {failed}");
    }
}
