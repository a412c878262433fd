//! Arbitrary bytes as the agent's TOML config, through what `check-config` does:
//! `Config::parse` (TOML, unknown keys, the alert rules' expressions), then
//! `Config::validate` (names, intervals, regular expressions, every collector built
//! once).
//!
//! - Nothing panics.
//! - An error names the file, and a parse error's line and column are inside the text.
//! - A config that validates holds what validation promises (intervals above 0 and at
//!   most a day, a telemetry path outside /api/, a known log level).
//!
//! Validation reads key, password and CA files named by `*_file` keys (`lora`,
//! `remote_write`); a config with such a key is only parsed, so that the fuzzer never
//! makes the process open a path it made up.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nodewatch_agent::config::{Config, ConfigError};

const ORIGIN: &str = "fuzz.toml";

/// Whether any key of the document, at any depth, names a file.
fn names_a_file(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .any(|(key, value)| key.ends_with("_file") || names_a_file(value)),
        toml::Value::Array(items) => items.iter().any(names_a_file),
        _ => false,
    }
}

fn check_error(text: &str, error: &ConfigError) {
    let message = error.to_string();
    assert!(
        message.starts_with(ORIGIN),
        "error without the file: {message}"
    );
    if let ConfigError::Parse { line, column, .. } = error {
        let lines = text.split('\n').count();
        assert!(
            (1..=lines).contains(line),
            "line {line} outside 1..={lines}: {message}"
        );
        let line_text = text.split('\n').nth(line - 1).unwrap_or("");
        let columns = line_text.chars().count() + 1;
        assert!(
            (1..=columns).contains(column),
            "column {column} outside 1..={columns} of line {line}: {message}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // A config that is not UTF-8 is refused when it is read, before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text, Path::new(ORIGIN)) {
        Ok(config) => config,
        Err(e) => {
            check_error(text, &e);
            return;
        }
    };
    let document: toml::Table = toml::from_str(text).expect("what Config::parse took is TOML");
    if names_a_file(&toml::Value::Table(document)) {
        return;
    }
    match config.validate(Path::new(ORIGIN)) {
        Err(e) => check_error(text, &e),
        Ok(()) => {
            let day = 0.0..=86_400.0;
            // The textfile collector checks its own section; absent, its default (5 s).
            let textfile_interval = config
                .collector_sections()
                .get("collectors.textfile")
                .and_then(|t| t.get("interval_secs"))
                .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
                .unwrap_or(5.0);
            for (key, v) in [
                ("collectors.interval_secs", config.collectors.interval_secs),
                ("collectors.timeout_secs", config.collectors.timeout_secs),
                ("collectors.textfile.interval_secs", textfile_interval),
                (
                    "alerts.evaluation_interval_secs",
                    config.alerts.evaluation_interval_secs,
                ),
            ] {
                assert!(day.contains(&v) && v > 0.0, "{key} = {v} validated");
            }
            assert!(config.web.telemetry_path.starts_with('/'));
            assert!(!config.web.telemetry_path.starts_with("/api/"));
            assert!(["debug", "info", "warn", "error"].contains(&config.log.level.as_str()));
        }
    }
});
