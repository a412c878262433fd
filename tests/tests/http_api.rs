//! The agent's HTTP surface and lifecycle, as an operator sees them: /metrics (plain
//! and gzip), health endpoints, check-config, the port-taken message and SIGTERM.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{agent_fixture_args, strs};
use nix::sys::signal::Signal;
use nodewatch_tests::{Agent, agent_binary, fixture, http, workspace_root};

fn pi_agent() -> Agent {
    let args = agent_fixture_args(&fixture("pi"), &fixture("textfile"));
    Agent::start(&strs(&args)).expect("start agent")
}

#[test]
fn metrics_plain_and_gzip() {
    let agent = pi_agent();
    let body = agent
        .metrics_after_first_collection(&["loadavg", "cpu"])
        .expect("metrics");
    assert!(body.contains("# TYPE node_load1 gauge"));
    assert!(body.contains("nodewatch_build_info{target=\""), "{body}");

    let mut response = http().get(agent.url("/metrics")).call().expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .expect("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(response.headers().get("content-encoding").is_none());
    let _ = response.body_mut().read_to_string();

    let mut response = http()
        .get(agent.url("/metrics"))
        .header("Accept-Encoding", "gzip")
        .call()
        .expect("get gzip");
    assert_eq!(
        response
            .headers()
            .get("content-encoding")
            .expect("encoding"),
        "gzip"
    );
    let compressed = response.body_mut().read_to_vec().expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .expect("valid gzip");
    assert!(text.contains("# TYPE node_load1 gauge"));
    assert!(
        compressed.len() * 3 < text.len(),
        "gzip should shrink the body"
    );
}

#[test]
fn health_endpoints() {
    let agent = pi_agent();
    agent
        .metrics_after_first_collection(&["loadavg"])
        .expect("metrics");
    let mut response = http().get(agent.url("/api/health")).call().expect("health");
    assert_eq!(response.status(), 200);
    let health: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert!(
        matches!(health["status"].as_str(), Some("healthy" | "degraded")),
        "{health}"
    );
    assert!(health["uptime_seconds"].as_f64().expect("uptime") >= 0.0);

    let mut response = http()
        .get(agent.url("/api/health/detailed"))
        .call()
        .expect("detailed");
    let detailed: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(detailed["version"], env!("CARGO_PKG_VERSION"));
    let loadavg = &detailed["collectors"]["loadavg"];
    assert_eq!(loadavg["ok"], true, "{detailed}");
    assert!(loadavg["last_success_unix"].as_f64().expect("last success") > 1.6e9);
    assert!(detailed["outputs"].is_object());
    assert!(detailed["alerts"].is_array());

    let response = http().get(agent.url("/no-such-page")).call().expect("404");
    assert_eq!(response.status(), 404);
}

#[test]
fn health_is_degraded_when_a_collector_fails_and_unhealthy_when_all_do() {
    // An empty procfs/sysfs: every file-based collector fails or has no data.
    let empty = tempfile::tempdir().expect("tempdir");
    let broken_proc = empty.path().join("proc");
    std::fs::create_dir(&broken_proc).expect("mkdir");
    // loadavg as a directory: a read error, not "no data".
    std::fs::create_dir(broken_proc.join("loadavg")).expect("mkdir");
    let args = [
        format!("--path.procfs={}", broken_proc.display()),
        "--collector.disable-defaults".to_string(),
        "--collector.loadavg".to_string(),
        format!(
            "--config={}",
            write_config(&empty, "[collectors]\ninterval_secs = 0.2\n").display()
        ),
    ];
    let agent = Agent::start(&strs(&args)).expect("start");
    let mut last = (0, String::new());
    let ok = nodewatch_tests::wait_until(Duration::from_secs(10), || {
        let mut response = http().get(agent.url("/api/health")).call().expect("health");
        last = (
            response.status().as_u16(),
            response.body_mut().read_to_string().unwrap_or_default(),
        );
        last.0 == 503
    });
    assert!(ok, "expected 503 unhealthy, last {last:?}");
    assert!(last.1.contains("\"unhealthy\""), "{}", last.1);
    let mut response = http()
        .get(agent.url("/api/health/detailed"))
        .call()
        .expect("detailed");
    let body = response.body_mut().read_to_string().expect("body");
    assert!(
        body.contains("cannot read") && body.contains("loadavg"),
        "{body}"
    );
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn check_config_accepts_examples_and_names_errors() {
    let example = workspace_root().join("config/agent.toml");
    let out = std::process::Command::new(agent_binary())
        .args(["check-config", "--config"])
        .arg(&example)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    for (text, expected) in [
        (
            "[web]\nlisten_address = \":9100\"\nmax_request = 3\n",
            "agent.toml:3:1: unknown field `max_request`",
        ),
        ("[collectors]\ninterval_secs = \"2s\"\n", "agent.toml:2:17:"),
        ("[web\n", "agent.toml:1:"),
        (
            "[collectors]\ndisable = [\"cpux\"]\n",
            "unknown collector \"cpux\"",
        ),
    ] {
        let path = write_config(&dir, text);
        let out = std::process::Command::new(agent_binary())
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // EX_CONFIG: a unit does not restart on it (RestartPreventExitStatus=78).
        assert_eq!(out.status.code(), Some(78), "accepted {text:?}");
        assert!(
            stderr.contains(expected),
            "for {text:?} expected {expected:?} in {stderr}"
        );
        assert!(
            stderr.contains(&path.display().to_string()),
            "error names the file: {stderr}"
        );
    }
}

#[test]
fn a_taken_port_is_reported_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr");
    let out = std::process::Command::new(agent_binary())
        .arg(format!("--web.listen-address={address}"))
        .output()
        .expect("run");
    // EADDRINUSE's number: a unit does not restart on it (RestartPreventExitStatus=98).
    assert_eq!(out.status.code(), Some(98));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address}")) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn sigterm_during_a_scrape_lets_it_finish_and_exits_0() {
    let mut agent = pi_agent();
    agent
        .metrics_after_first_collection(&["loadavg"])
        .expect("metrics");
    // A request whose head is half sent is in flight when SIGTERM arrives.
    let mut stream = TcpStream::connect(&agent.address).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(100));
    agent.child.signal(Signal::SIGTERM).expect("sigterm");
    std::thread::sleep(Duration::from_millis(200));
    stream
        .write_all(b"Connection: close\r\n\r\n")
        .expect("finish request");
    let mut response = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.read_to_string(&mut response).expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response:.200}");
    assert!(response.contains("node_load1"), "the whole body arrives");
    let started = Instant::now();
    let status = agent
        .child
        .wait_timeout(Duration::from_secs(10))
        .expect("agent exits");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        agent.child.log()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // New connections are refused after shutdown.
    assert!(TcpStream::connect(&agent.address).is_err());
}

/// With no arguments at all the agent runs on built-in defaults: it serves :9100, or,
/// when :9100 is taken (node_exporter, Debian's service), says so clearly and exits.
#[test]
fn no_arguments_serves_9100_or_says_it_is_taken() {
    let mut child =
        nodewatch_tests::Child::spawn("nodewatch-agent", &agent_binary(), &[], &[]).expect("spawn");
    let mut outcome = None;
    nodewatch_tests::wait_until(Duration::from_secs(20), || {
        let log = child.log();
        if log.contains("Listening.") && log.contains(":9100") {
            outcome = Some(Ok(()));
        } else if !child.is_running() {
            outcome = Some(Err(log));
        }
        outcome.is_some()
    });
    match outcome {
        Some(Ok(())) => {
            let body = nodewatch_tests::get_text("http://127.0.0.1:9100/metrics")
                .expect("metrics on :9100");
            assert!(body.contains("nodewatch_build_info"));
            child.signal(Signal::SIGTERM).expect("sigterm");
            assert!(
                child
                    .wait_timeout(Duration::from_secs(10))
                    .expect("exit")
                    .success()
            );
        }
        Some(Err(log)) => {
            assert!(
                log.contains("cannot listen on :9100") && log.contains("in use"),
                "{log}"
            );
            let status = child.wait_timeout(Duration::from_secs(5)).expect("exited");
            assert_eq!(status.code(), Some(98));
        }
        None => panic!("neither served nor failed within 20 s:\n{}", child.log()),
    }
}

/// The Pi image's first-boot import leaves check-config's message in
/// `<state_dir>/config-import-error` when it refused the boot partition's agent.toml:
/// the agent shows it in health (degraded), as a metric and in its log.
#[test]
fn a_refused_config_import_is_shown_in_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let config = write_config(&dir, &format!("state_dir = \"{}\"\n", state.display()));
    let mut args = agent_fixture_args(&fixture("pi"), &fixture("textfile"));
    args.push(format!("--config={}", config.display()));

    // No file: the import is fine.
    let agent = Agent::start(&strs(&args)).expect("start");
    let body = agent
        .metrics_after_first_collection(&["loadavg"])
        .expect("metrics");
    assert!(body.contains("nodewatch_config_import_error 0"), "{body}");
    let detailed: serde_json::Value = serde_json::from_str(
        &nodewatch_tests::get_text(&agent.url("/api/health/detailed")).expect("health"),
    )
    .expect("json");
    assert_eq!(
        detailed["config_import"],
        serde_json::json!({"ok": true}),
        "{detailed}"
    );
    drop(agent);

    let message = "/boot/firmware/nodewatch/agent.toml:3:1: unknown field `max_request`, expected one of `listen_address`, `telemetry_path`";
    std::fs::write(state.join("config-import-error"), format!("{message}\n")).expect("write");
    let agent = Agent::start(&strs(&args)).expect("start");
    let body = agent
        .metrics_after_first_collection(&["loadavg"])
        .expect("metrics");
    assert!(body.contains("nodewatch_config_import_error 1"), "{body}");
    let mut response = http()
        .get(agent.url("/api/health/detailed"))
        .call()
        .expect("detailed");
    assert_eq!(response.status(), 200);
    let detailed: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    assert_eq!(
        detailed["config_import"],
        serde_json::json!({"ok": false, "error": message}),
        "{detailed}"
    );
    assert_eq!(detailed["status"], "degraded", "{detailed}");
    let health = nodewatch_tests::get_text(&agent.url("/api/health")).expect("health");
    assert!(health.contains("\"degraded\""), "{health}");
    let log = agent.child.log();
    assert!(
        log.contains("WARN") && log.contains("agent.toml:3:1"),
        "{log}"
    );
}

/// The `# TYPE` families of a text exposition.
fn families(body: &str) -> std::collections::BTreeSet<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn first_scrape_after_start_is_complete() {
    // Scraped the moment the listener is up, as Prometheus does after a restart.
    let agent = pi_agent();
    let first = agent.metrics().expect("first scrape");
    let later = agent
        .metrics_after_first_collection(&["cpu", "textfile", "loadavg"])
        .expect("metrics");
    let (first_families, later_families) = (families(&first), families(&later));
    // The request metrics count earlier requests: the first scrape has none to count.
    let missing: Vec<_> = later_families
        .difference(&first_families)
        .filter(|f| !f.starts_with("nodewatch_http_request"))
        .collect();
    assert!(
        missing.is_empty(),
        "the first scrape lacked {} of {} families: {missing:?}",
        missing.len(),
        later_families.len()
    );
    // Every collector had its say in the first answer, not only the quick ones.
    let detailed: serde_json::Value = serde_json::from_str(
        &nodewatch_tests::get_text(&agent.url("/api/health/detailed")).expect("health"),
    )
    .expect("health json");
    for collector in detailed["collectors"]
        .as_object()
        .expect("collectors")
        .keys()
    {
        assert!(
            first.contains(&format!(
                "node_scrape_collector_success{{collector=\"{collector}\"}}"
            )),
            "the first scrape had no result from {collector}"
        );
    }
}
