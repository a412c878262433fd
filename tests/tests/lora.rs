//! The LoRa alert link end to end: agent A (a node, simulated radio on the UDP air)
//! → gateway agent B → a real Alertmanager (Debian's) → a webhook sink.
//!
//! A condition is tripped by flipping a textfile fixture; the webhook must receive
//! the alert with the right labels, then its resolution. A frame signed with the
//! wrong key is rejected and counted. `nodewatch-agent test-alert` on A reaches the
//! webhook too.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewatch_lora::frame::{AlertFrame, AlertState, Frame, Key, NodeId, Severity};
use nodewatch_tests::alertmanager::{Alertmanager, WebhookSink};
use nodewatch_tests::{Agent, agent_binary, fixture, get_text, promtool_check_metrics, wait_until};

const NETWORK_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("lora.key");
    std::fs::write(&path, format!("{NETWORK_KEY}\n")).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The node under test: the Pi fixture, a textfile directory the test flips, and
/// one rule on it.
struct Node {
    agent: Agent,
    textfile: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn set_condition(textfile: &Path, value: u32) {
    let tmp = textfile.join(".condition.prom.tmp");
    std::fs::write(
        &tmp,
        format!("# TYPE nodewatch_test_condition gauge\nnodewatch_test_condition {value}\n"),
    )
    .expect("write");
    std::fs::rename(&tmp, textfile.join("condition.prom")).expect("rename");
}

fn start_node(node_port: u16, gateway_port: u16) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).expect("mkdir");
    set_condition(&textfile, 0);
    let key = key_file(dir.path());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_name = "pi-a"
state_dir = "{state}"

[collectors.textfile]
interval_secs = 0.25

[alerts]
default_rules = false

[[alerts.rules]]
name = "ConditionTripped"
expr = "nodewatch_test_condition > 0"
severity = "critical"
summary = "The test condition tripped"

[lora]
enabled = true
network_key_file = "{key}"
heartbeat_interval_secs = 3600
ack_timeout_secs = 1

[lora.radio]
kind = "udp"
udp_bind = "127.0.0.1:{node_port}"
udp_peers = ["127.0.0.1:{gateway_port}"]
"#,
            state = dir.path().join("state").display(),
            key = key.display(),
        ),
    )
    .expect("write config");
    let args = common::agent_fixture_args(&fixture("pi"), &textfile);
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args);
    let agent = Agent::start(&common::strs(&all)).expect("node agent");
    Node {
        agent,
        textfile,
        config,
        _dir: dir,
    }
}

fn start_gateway(
    gateway_port: u16,
    node_port: u16,
    alertmanager: &str,
) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).expect("mkdir");
    let key = key_file(dir.path());
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"node_name = "gateway"
state_dir = "{state}"

[alerts]
default_rules = false

[lora]
enabled = true
gateway = true
network_key_file = "{key}"
alertmanager_urls = ["{alertmanager}"]
repost_interval_secs = 5

[[lora.nodes]]
name = "pi-a"

[lora.radio]
kind = "udp"
udp_bind = "127.0.0.1:{gateway_port}"
udp_peers = ["127.0.0.1:{node_port}"]
"#,
            state = dir.path().join("state").display(),
            key = key.display(),
        ),
    )
    .expect("write config");
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(common::agent_fixture_args(&fixture("linux"), &textfile));
    (
        Agent::start(&common::strs(&all)).expect("gateway agent"),
        dir,
    )
}

fn metric(agent: &Agent, series: &str) -> Option<f64> {
    let body = agent.metrics().ok()?;
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn alert_travels_node_to_gateway_to_alertmanager_and_resolves() {
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let (gateway, _gw_dir) = start_gateway(gateway_port, node_port, &alertmanager.url());
    let node = start_node(node_port, gateway_port);

    // The node's start-up heartbeat is acknowledged.
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(&node.agent, "nodewatch_lora_acknowledged_total").unwrap_or(0.0) >= 1.0
        }),
        "no acknowledgement; node log:\n{}\ngateway log:\n{}",
        node.agent.child.log(),
        gateway.child.log()
    );
    assert!(metric(&gateway, "nodewatch_lora_received_total{node=\"pi-a\"}").unwrap_or(0.0) >= 1.0);
    assert!(metric(&gateway, "nodewatch_lora_rssi_dbm{node=\"pi-a\"}").is_some());

    set_condition(&node.textfile, 1);
    let is_ours = |a: &serde_json::Value| a["labels"]["alertname"] == "ConditionTripped";
    let (_, firing) = sink
        .wait_for_alert("firing", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nnode log:\n{}\ngateway log:\n{}",
                node.agent.child.log(),
                gateway.child.log()
            )
        });
    assert_eq!(firing["labels"]["node"], "pi-a");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert_eq!(firing["labels"]["source"], "lora");
    assert!(
        alertmanager
            .alerts()
            .expect("alerts")
            .iter()
            .any(|a| a["labels"]["alertname"] == "ConditionTripped"),
        "Alertmanager holds the alert"
    );

    set_condition(&node.textfile, 0);
    let (_, resolved) = sink
        .wait_for_alert("resolved", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nnode log:\n{}\ngateway log:\n{}",
                node.agent.child.log(),
                gateway.child.log()
            )
        });
    assert_eq!(resolved["labels"]["node"], "pi-a");

    // A frame signed with another key is rejected and counted; nothing is forwarded.
    let before = sink.received().len();
    let wrong = Key::from_hex(&"ab".repeat(32)).expect("key");
    let forged = Frame::Alert(AlertFrame {
        state: AlertState::Firing,
        severity: Severity::Critical,
        node: NodeId::from_name("pi-a"),
        sequence: 4_000_000_000,
        value: 1.0,
        node_time: 0,
        alertname: "Forged".into(),
    })
    .encode(&wrong)
    .expect("encode");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .send_to(&forged, ("127.0.0.1", gateway_port))
        .expect("send");
    assert!(
        wait_until(Duration::from_secs(10), || {
            metric(&gateway, "nodewatch_lora_rejected_total{reason=\"mac\"}") == Some(1.0)
        }),
        "forged frame not counted; gateway log:\n{}",
        gateway.child.log()
    );
    // Whether it was forwarded is checked below, once a later alert has gone through
    // the gateway's (first in, first out) posts to Alertmanager.

    // test-alert on the node goes the same way.
    let output = std::process::Command::new(agent_binary())
        .arg("--config")
        .arg(&node.config)
        .arg(format!("--web.listen-address={}", node.agent.address))
        .args([
            "test-alert",
            "--severity",
            "warning",
            "--duration-secs",
            "3",
        ])
        .output()
        .expect("run test-alert");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "test-alert failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("NodewatchTestAlert (warning)"), "{stdout}");
    assert!(stdout.contains("lora: ok"), "{stdout}");
    let is_test = |a: &serde_json::Value| {
        a["labels"]["alertname"] == "NodewatchTestAlert" && a["labels"]["node"] == "pi-a"
    };
    sink.wait_for_alert("firing", Duration::from_secs(30), is_test)
        .expect("test alert firing");
    assert!(
        sink.received()[before..]
            .iter()
            .all(|n| !n.body.to_string().contains("Forged"))
            && alertmanager
                .alerts()
                .expect("alerts")
                .iter()
                .all(|a| a["labels"]["alertname"] != "Forged"),
        "a forged alert was forwarded"
    );
    sink.wait_for_alert("resolved", Duration::from_secs(30), is_test)
        .expect("test alert resolved");
    let health: serde_json::Value =
        serde_json::from_str(&get_text(&gateway.url("/api/health/detailed")).expect("health"))
            .expect("json");
    assert_eq!(health["outputs"]["lora"]["ok"], true, "{health}");

    // The LoRa families pass promtool's lint on both sides.
    for (side, agent) in [("node", &node.agent), ("gateway", &gateway)] {
        let body = agent.metrics().expect("metrics");
        assert!(body.contains("nodewatch_lora_"), "{side}: no LoRa families");
        let (_, findings) = promtool_check_metrics(&body).expect("promtool");
        let ours: Vec<&String> = findings
            .iter()
            .filter(|l| l.contains("nodewatch_lora"))
            .collect();
        assert!(
            ours.is_empty(),
            "{side}: promtool findings on LoRa families: {ours:?}"
        );
    }
}
