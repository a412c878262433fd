//! Log output of every nodewatch binary (`--log.format`), on stderr.
//!
//! - `logfmt` (the default, as node_exporter's): human-readable lines, coloured only
//!   when stderr is a terminal.
//! - `json`: one JSON object per line, `{"time":..,"level":..,"target":..,"fields":{..}}`,
//!   `time` in RFC 3339 (UTC), `level` in the words of `--log.level`, the message in
//!   `fields.message`. Written here on top of `serde_json` (already a dependency)
//!   instead of tracing-subscriber's `json` feature, so the keys are the ones the docs
//!   promise (`time`, not `timestamp`) and the agent links no extra crate.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use serde_json::{Map, Number, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The value of `--log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Text lines (node_exporter's default name for its text format).
    #[default]
    Logfmt,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "logfmt" => Ok(Self::Logfmt),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected logfmt or json"
            )),
        }
    }
}

/// Installs the global subscriber: events at `level` and above, to stderr, in `format`.
/// Call once, early in `main`.
pub fn init(level: Level, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Logfmt => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init(),
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).init(),
    }
}

/// Formats one event as one JSON line.
#[derive(Debug)]
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(&json_line(event))
    }
}

/// The JSON object of `event`, newline-terminated; keys in a fixed order so lines read
/// well without a JSON tool too.
fn json_line(event: &Event<'_>) -> String {
    let mut time = String::new();
    // SystemTime writes RFC 3339 in UTC with microseconds; it cannot fail into a String.
    let _ = SystemTime.format_time(&mut Writer::new(&mut time));
    let mut fields = FieldsToJson(Map::new());
    event.record(&mut fields);
    let metadata = event.metadata();
    format!(
        "{{\"time\":{},\"level\":{},\"target\":{},\"fields\":{}}}\n",
        Value::String(time),
        Value::String(level_name(metadata.level()).to_owned()),
        Value::String(metadata.target().to_owned()),
        Value::Object(fields.0),
    )
}

/// The level in the words `--log.level` takes.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Collects an event's fields; numbers and booleans stay JSON numbers and booleans.
struct FieldsToJson(Map<String, Value>);

impl Visit for FieldsToJson {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: keep them readable as strings.
        let value = Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.0.insert(field.name().to_owned(), value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_named() {
        assert_eq!("logfmt".parse(), Ok(LogFormat::Logfmt));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        let error = "xml".parse::<LogFormat>().expect_err("xml is no format");
        assert!(
            error.contains("\"xml\"") && error.contains("logfmt or json"),
            "{error}"
        );
    }

    #[test]
    fn an_event_becomes_one_json_object_with_typed_fields() {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .event_format(JsonLines)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let address = "127.0.0.1:9100";
            tracing::info!(address = %address, count = 3u64, ok = true, ratio = f64::NAN, "Listening.");
            tracing::debug!("below the level");
        });
        let lines = lines.lock().expect("lock").concat();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let value: Value = serde_json::from_str(lines[0]).expect("a JSON line");
        assert_eq!(value["level"], "info");
        assert_eq!(value["target"], module_path!());
        assert_eq!(value["fields"]["message"], "Listening.");
        assert_eq!(value["fields"]["address"], "127.0.0.1:9100");
        assert_eq!(value["fields"]["count"], 3);
        assert_eq!(value["fields"]["ok"], true);
        assert_eq!(value["fields"]["ratio"], "NaN");
        let time = value["time"].as_str().expect("time is a string");
        assert!(looks_like_rfc3339_utc(time), "{time}");
    }

    /// `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
    fn looks_like_rfc3339_utc(time: &str) -> bool {
        let bytes = time.as_bytes();
        bytes.len() >= 20
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes[10] == b'T'
            && bytes[13] == b':'
            && bytes[16] == b':'
            && time.ends_with('Z')
    }

    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(buf).into_owned());
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
