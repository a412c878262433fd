//! `--log.format`: the agent and the exporters, started for real, write one JSON object
//! per line with `json` (time, level, target, fields), text by default and with
//! `logfmt`, and all three binaries refuse an unknown format with exit status 78.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use nodewatch_tests::evm::{exporter_binary, wallet_exporter_binary};
use nodewatch_tests::{Child, agent_binary, free_port, get_text, wait_until};
use serde_json::Value;

const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// The wallet exporter's settings through the wiki's variables; its RPC endpoint is a
/// loopback port nobody listens on (logging is under test, not balances).
fn wallet_env(rpc_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("NO_PROXY", "*".into()),
        ("no_proxy", "*".into()),
        (
            "WALLET_ADDRESSES",
            "builder-1=0x1111111111111111111111111111111111111111".into(),
        ),
        ("SCROLL_RPC_URL", format!("http://127.0.0.1:{rpc_port}")),
    ]
}

fn spawn(name: &str, binary: &std::path::Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Child::spawn(name, binary, args, &env).unwrap()
}

/// Waits for the line that has "Listening." in it; fails with the log otherwise.
fn listening_line(child: &Child) -> String {
    let mut line = None;
    wait_until(Duration::from_secs(30), || {
        line = child
            .log()
            .lines()
            .find(|l| l.contains("Listening."))
            .map(str::to_string);
        line.is_some() || !child.is_running()
    });
    line.unwrap_or_else(|| panic!("no \"Listening.\" line; log:\n{}", child.log()))
}

/// Every line of `log` is a JSON object with an RFC 3339 UTC time, a level, a target
/// and fields; returns them.
fn json_lines(log: &str) -> Vec<Value> {
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nlog:\n{log}"));
            let time = value["time"]
                .as_str()
                .unwrap_or_else(|| panic!("no time: {line}"));
            assert_rfc3339_utc(time);
            let level = value["level"]
                .as_str()
                .unwrap_or_else(|| panic!("no level: {line}"));
            assert!(LEVELS.contains(&level), "level {level:?}: {line}");
            let target = value["target"]
                .as_str()
                .unwrap_or_else(|| panic!("no target: {line}"));
            assert!(target.starts_with("nodewatch"), "target {target:?}: {line}");
            assert!(value["fields"].is_object(), "no fields object: {line}");
            value
        })
        .collect();
    assert!(!lines.is_empty(), "no log lines at all");
    lines
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, with digits where digits belong.
fn assert_rfc3339_utc(time: &str) {
    let bytes = time.as_bytes();
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    let shape_ok = bytes.len() >= 20
        && digits.iter().all(|&i| bytes[i].is_ascii_digit())
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && time.ends_with('Z')
        && time[19..time.len() - 1]
            .strip_prefix('.')
            .is_none_or(|fraction| fraction.bytes().all(|b| b.is_ascii_digit()));
    assert!(shape_ok, "time {time:?} is not RFC 3339 UTC");
}

/// The "Listening." object's `address` field: a loopback address that serves /metrics.
fn check_listening_json(lines: &[Value]) {
    let listening = lines
        .iter()
        .find(|v| v["fields"]["message"] == "Listening.")
        .unwrap_or_else(|| panic!("no Listening. object in {lines:?}"));
    assert_eq!(listening["level"], "info");
    let address: SocketAddr = listening["fields"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address field: {listening}"))
        .parse()
        .unwrap();
    assert!(address.ip().is_loopback(), "{address}");
    let body = get_text(&format!("http://{address}/metrics")).unwrap();
    assert!(!body.is_empty());
}

fn stop(mut child: Child) -> String {
    child.signal(Signal::SIGTERM).unwrap();
    let status = child.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit {status:?}; log:\n{}", child.log());
    child.log()
}

#[test]
fn agent_writes_one_json_object_per_line() {
    let agent = spawn(
        "nodewatch-agent",
        &agent_binary(),
        &["--web.listen-address=127.0.0.1:0", "--log.format=json"],
        &[],
    );
    listening_line(&agent);
    let lines = json_lines(&agent.log());
    check_listening_json(&lines);
    let listening = lines
        .iter()
        .find(|v| v["fields"]["message"] == "Listening.")
        .unwrap();
    assert_eq!(listening["target"], "nodewatch_agent::daemon");
    // Lines written while shutting down are JSON too.
    json_lines(&stop(agent));
}

#[test]
fn wallet_exporter_writes_one_json_object_per_line() {
    let exporter = spawn(
        "nodewatch-wallet-exporter",
        &wallet_exporter_binary(),
        &["--web.listen-address=127.0.0.1:0", "--log.format=json"],
        &wallet_env(free_port()),
    );
    listening_line(&exporter);
    check_listening_json(&json_lines(&exporter.log()));
    let log = stop(exporter);
    let lines = json_lines(&log);
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "settings loaded" && v["fields"]["wallets"] == 1),
        "numbers stay JSON numbers: {lines:?}"
    );
}

#[test]
fn default_and_logfmt_are_text() {
    for format in [None, Some("--log.format=logfmt")] {
        let mut args = vec!["--web.listen-address=127.0.0.1:0"];
        args.extend(format);
        let agent = spawn("nodewatch-agent", &agent_binary(), &args, &[]);
        let line = listening_line(&agent);
        assert!(
            serde_json::from_str::<Value>(&line).is_err() && line.contains("address=127.0.0.1:"),
            "{format:?}: {line}"
        );
        assert!(line.contains("INFO"), "{format:?}: {line}");
        stop(agent);

        let mut args = vec!["--web.listen-address=127.0.0.1:0"];
        args.extend(format);
        let exporter = spawn(
            "nodewatch-wallet-exporter",
            &wallet_exporter_binary(),
            &args,
            &wallet_env(free_port()),
        );
        let line = listening_line(&exporter);
        assert!(
            serde_json::from_str::<Value>(&line).is_err() && line.contains("address=127.0.0.1:"),
            "{format:?}: {line}"
        );
        stop(exporter);
    }
}

#[test]
fn an_unknown_format_is_a_settings_error() {
    let binaries = [
        ("nodewatch-agent", agent_binary()),
        ("nodewatch-wallet-exporter", wallet_exporter_binary()),
        (
            "nodewatch-reward-exporter",
            exporter_binary("nodewatch-reward-exporter"),
        ),
    ];
    for (name, binary) in binaries {
        let mut child = spawn(
            name,
            &binary,
            &["--web.listen-address=127.0.0.1:0", "--log.format=xml"],
            &wallet_env(free_port()),
        );
        let status = child.wait_timeout(Duration::from_secs(10)).unwrap();
        let log = child.log();
        assert_eq!(status.code(), Some(78), "{name}: {log}");
        assert!(
            log.contains("--log.format")
                && log.contains("\"xml\"")
                && log.contains("logfmt or json"),
            "{name}: {log}"
        );
    }
}
