//! The LoRa alert link end to end: agent A (a node, simulated radio on the UDP air)
//! → gateway agent B → a real Alertmanager (Debian's) → a webhook sink.
//!
//! A condition is tripped by flipping a textfile fixture; the webhook must receive
//! the alert with the right labels, then its resolution. A frame signed with the
//! wrong key is rejected and counted. `nodewatch-agent test-alert` on A reaches the
//! webhook too. The gateway holds the network master key; the node holds only its
//! own key, made by `nodewatch-agent lora derive-key`. Then the failure model: a
//! gateway restart, a silent node, a frame given up while the gateway was away, a key
//! of one node signing for another, a node that lost its sequence file.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodewatch_lora::frame::{
    AlertFrame, AlertState, Frame, Key, MasterKey, NodeId, Severity, firing_digest,
};
use nodewatch_tests::alertmanager::{Alertmanager, WebhookSink};
use nodewatch_tests::{Agent, agent_binary, fixture, get_text, promtool_check_metrics, wait_until};

/// The network master key, held by the gateway only.
const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

/// The master key in a file as the gateway wants it: mode 0600.
fn master_key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("master.key");
    std::fs::write(&path, format!("{MASTER_KEY}\n")).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// The key of node `name`, written by `nodewatch-agent lora derive-key` into `dir`.
fn node_key_file(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let master = master_key_file(dir);
    let out = dir.join(format!("{name}.key"));
    let output = std::process::Command::new(agent_binary())
        .args(["lora", "derive-key", "--node", name, "--master"])
        .arg(&master)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run derive-key");
    assert!(
        output.status.success(),
        "derive-key failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mode = std::fs::metadata(&out)
        .expect("key written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The node keeps its own key only.
    std::fs::remove_file(&master).expect("remove the master from the node");
    out
}

/// Node `name`'s key, derived as the gateway derives it.
fn node_key(name: &str) -> Key {
    MasterKey::from_hex(MASTER_KEY)
        .expect("master")
        .node_key(NodeId::from_name(name))
}

/// The node under test: the Pi fixture, a textfile directory the test flips, and
/// one rule on it.
struct Node {
    agent: Agent,
    textfile: PathBuf,
    config: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Kills the node as a power cut would.
    fn kill(&mut self) {
        self.agent
            .child
            .signal(nix::sys::signal::Signal::SIGKILL)
            .expect("kill node");
        self.agent
            .child
            .wait_timeout(Duration::from_secs(10))
            .expect("node exited");
    }

    /// Starts the node again with its config and state.
    fn restart(&mut self) {
        self.agent = Agent::start(&common::strs(&self.args)).expect("node agent");
    }
}

/// Short timings for the restart and silence tests: a fast modulation, no duty-cycle
/// limit, so heartbeats every second or two fit.
const FAST_AIR: &str = "\n[lora.radio.modulation]\nspreading_factor = 7\n";

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
    start_node_with(
        node_port,
        gateway_port,
        "heartbeat_interval_secs = 3600",
        "",
    )
}

/// A node whose `[lora]` section gets `lora_extra`, and whose config ends with `tail`.
fn start_node_with(node_port: u16, gateway_port: u16, lora_extra: &str, tail: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).expect("mkdir");
    set_condition(&textfile, 0);
    let key = node_key_file(dir.path(), "pi-a");
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
{lora_extra}
ack_timeout_secs = 1

[lora.radio]
kind = "udp"
udp_bind = "127.0.0.1:{node_port}"
udp_peers = ["127.0.0.1:{gateway_port}"]
{tail}"#,
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
        args: all,
        _dir: dir,
    }
}

fn start_gateway(
    gateway_port: u16,
    node_port: u16,
    alertmanager: &str,
) -> (Agent, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = start_gateway_in(
        dir.path(),
        gateway_port,
        node_port,
        alertmanager,
        "repost_interval_secs = 5",
        "",
    );
    (agent, dir)
}

/// A gateway with its config and state in `dir` (so it can be restarted on them).
fn start_gateway_in(
    dir: &Path,
    gateway_port: u16,
    node_port: u16,
    alertmanager: &str,
    lora_extra: &str,
    tail: &str,
) -> Agent {
    let textfile = dir.join("textfile");
    let _ = std::fs::create_dir(&textfile);
    let key = master_key_file(dir);
    let config = dir.join("gateway.toml");
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
{lora_extra}

[[lora.nodes]]
name = "pi-a"

[lora.radio]
kind = "udp"
udp_bind = "127.0.0.1:{gateway_port}"
udp_peers = ["127.0.0.1:{node_port}"]
{tail}"#,
            state = dir.join("state").display(),
            key = key.display(),
        ),
    )
    .expect("write config");
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(common::agent_fixture_args(&fixture("linux"), &textfile));
    Agent::start(&common::strs(&all)).expect("gateway agent")
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
        epoch: 0,
        sequence: 4_000_000_000,
        value: 1.0,
        digest: 0,
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

/// The alerts Alertmanager holds as active.
fn active_in_alertmanager(alertmanager: &Alertmanager, alertname: &str) -> Vec<serde_json::Value> {
    alertmanager
        .alerts()
        .expect("alerts")
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == alertname && a["status"]["state"] == "active")
        .collect()
}

fn resolved_notifications(sink: &WebhookSink, alertname: &str) -> usize {
    sink.received()
        .iter()
        .flat_map(|n| n.body["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["status"] == "resolved" && a["labels"]["alertname"] == alertname)
        .count()
}

#[test]
fn gateway_restart_keeps_firing_alerts() {
    const NODE_TIMEOUT_SECS: u64 = 10;
    const REPOST_INTERVAL_SECS: u64 = 1;
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let gateway_lora = format!(
        "repost_interval_secs = {REPOST_INTERVAL_SECS}\nnode_timeout_secs = {NODE_TIMEOUT_SECS}\nduty_cycle_percent = 100"
    );
    let start_gateway = || {
        start_gateway_in(
            gateway_dir.path(),
            gateway_port,
            node_port,
            &alertmanager.url(),
            &gateway_lora,
            FAST_AIR,
        )
    };
    let mut gateway = start_gateway();
    let node = start_node_with(
        node_port,
        gateway_port,
        "heartbeat_interval_secs = 2\nduty_cycle_percent = 100",
        FAST_AIR,
    );
    let logs = |gateway: &Agent| {
        format!(
            "node log:\n{}\ngateway log:\n{}",
            node.agent.child.log(),
            gateway.child.log()
        )
    };

    set_condition(&node.textfile, 1);
    let is_ours = |a: &serde_json::Value| a["labels"]["alertname"] == "ConditionTripped";
    sink.wait_for_alert("firing", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&gateway)));

    // A power cut on the gateway: no chance to save anything at exit.
    gateway
        .child
        .signal(nix::sys::signal::Signal::SIGKILL)
        .expect("kill gateway");
    gateway
        .child
        .wait_timeout(Duration::from_secs(10))
        .expect("gateway exited");
    // Every endsAt the old gateway posted (last heard + timeout + three re-posts)
    // lies before this.
    let old_ends_passed = std::time::Instant::now()
        + Duration::from_secs(NODE_TIMEOUT_SECS + 3 * REPOST_INTERVAL_SECS + 2);
    gateway = start_gateway();

    while std::time::Instant::now() < old_ends_passed {
        std::thread::sleep(Duration::from_millis(250));
    }
    let active = active_in_alertmanager(&alertmanager, "ConditionTripped");
    assert_eq!(
        active.len(),
        1,
        "the alert ended across the gateway restart: {active:?}\n{}",
        logs(&gateway)
    );
    assert_eq!(active[0]["labels"]["node"], "pi-a");
    assert_eq!(
        resolved_notifications(&sink, "ConditionTripped"),
        0,
        "a resolution was notified across the restart\n{}",
        logs(&gateway)
    );
    assert!(
        active_in_alertmanager(&alertmanager, "LoraNodeSilent").is_empty(),
        "the node is heard: it is not silent"
    );

    // It still resolves normally.
    set_condition(&node.textfile, 0);
    sink.wait_for_alert("resolved", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&gateway)));
    assert!(
        wait_until(Duration::from_secs(10), || {
            active_in_alertmanager(&alertmanager, "ConditionTripped").is_empty()
        }),
        "still active after its resolution"
    );
}

#[test]
fn silent_node_keeps_alerts_and_raises_lora_node_silent() {
    const NODE_TIMEOUT_SECS: u64 = 4;
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway_in(
        gateway_dir.path(),
        gateway_port,
        node_port,
        &alertmanager.url(),
        &format!(
            "repost_interval_secs = 1\nnode_timeout_secs = {NODE_TIMEOUT_SECS}\nduty_cycle_percent = 100"
        ),
        FAST_AIR,
    );
    let mut node = start_node_with(
        node_port,
        gateway_port,
        "heartbeat_interval_secs = 1\nduty_cycle_percent = 100",
        FAST_AIR,
    );
    let logs = |node: &Node| {
        format!(
            "node log:\n{}\ngateway log:\n{}",
            node.agent.child.log(),
            gateway.child.log()
        )
    };
    let silent_series = "nodewatch_lora_node_silent{node=\"pi-a\"}";

    set_condition(&node.textfile, 1);
    let is_ours = |a: &serde_json::Value| a["labels"]["alertname"] == "ConditionTripped";
    sink.wait_for_alert("firing", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));
    assert_eq!(metric(&gateway, silent_series), Some(0.0));

    // The node goes quiet (its internet and its radio gone).
    node.kill();
    let killed = std::time::Instant::now();
    let is_silent_alert = |a: &serde_json::Value| {
        a["labels"]["alertname"] == "LoraNodeSilent" && a["labels"]["node"] == "pi-a"
    };
    let (_, silent) = sink
        .wait_for_alert("firing", Duration::from_secs(30), is_silent_alert)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));
    // The central rule's labels (config/server/prometheus/rules/lora.yml).
    assert_eq!(silent["labels"]["severity"], "warning");
    assert_eq!(metric(&gateway, silent_series), Some(1.0));

    // Well past the node's last endsAt, its alert still fires, marked stale.
    while killed.elapsed() < Duration::from_secs(NODE_TIMEOUT_SECS + 4) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let active = active_in_alertmanager(&alertmanager, "ConditionTripped");
    assert_eq!(active.len(), 1, "{active:?}\n{}", logs(&node));
    assert_eq!(active[0]["annotations"]["stale"], "true", "{active:?}");
    assert_eq!(resolved_notifications(&sink, "ConditionTripped"), 0);
    assert_eq!(
        active_in_alertmanager(&alertmanager, "LoraNodeSilent").len(),
        1
    );

    // Heard again: LoraNodeSilent resolves and the alert is no longer stale.
    node.restart();
    sink.wait_for_alert("resolved", Duration::from_secs(30), is_silent_alert)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));
    assert_eq!(metric(&gateway, silent_series), Some(0.0));
    assert!(
        wait_until(Duration::from_secs(10), || {
            let active = active_in_alertmanager(&alertmanager, "ConditionTripped");
            active.len() == 1 && active[0]["annotations"].get("stale").is_none()
        }),
        "{:?}\n{}",
        alertmanager.alerts(),
        logs(&node)
    );
    set_condition(&node.textfile, 0);
    sink.wait_for_alert("resolved", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));
}

/// A counter's value, 0 while it is absent.
fn counter(agent: &Agent, series: &str) -> f64 {
    metric(agent, series).unwrap_or(0.0)
}

#[test]
fn given_up_frame_is_repaired_by_heartbeat() {
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let start_gateway = || {
        start_gateway_in(
            gateway_dir.path(),
            gateway_port,
            node_port,
            &alertmanager.url(),
            "repost_interval_secs = 1\nnode_timeout_secs = 60\nduty_cycle_percent = 100",
            FAST_AIR,
        )
    };
    let mut gateway = start_gateway();
    let node = start_node_with(
        node_port,
        gateway_port,
        "heartbeat_interval_secs = 2\nduty_cycle_percent = 100\nmax_attempts = 2",
        FAST_AIR,
    );
    let logs = |gateway: &Agent| {
        format!(
            "node log:\n{}\ngateway log:\n{}",
            node.agent.child.log(),
            gateway.child.log()
        )
    };
    let dropped = "nodewatch_lora_dropped_total{reason=\"unacknowledged\"}";
    assert!(
        wait_until(Duration::from_secs(20), || {
            counter(&node.agent, "nodewatch_lora_acknowledged_total") >= 1.0
        }),
        "the node never got through\n{}",
        logs(&gateway)
    );

    // The gateway goes away; meanwhile the condition trips and the node gives its
    // frame up after its two attempts.
    gateway
        .child
        .signal(nix::sys::signal::Signal::SIGKILL)
        .expect("kill gateway");
    gateway
        .child
        .wait_timeout(Duration::from_secs(10))
        .expect("gateway exited");
    let dropped_before = counter(&node.agent, dropped);
    set_condition(&node.textfile, 1);
    // The alert outranks heartbeats, so by the second frame given up after the trip
    // the alert's frame is one of them.
    assert!(
        wait_until(Duration::from_secs(30), || {
            counter(&node.agent, dropped) >= dropped_before + 2.0
        }),
        "the node never gave a frame up\n{}",
        logs(&gateway)
    );
    assert!(
        active_in_alertmanager(&alertmanager, "ConditionTripped").is_empty(),
        "nothing could have reached Alertmanager"
    );

    // The gateway is back: the next heartbeat's digest shows the gap, the node
    // announces its alert again, and it reaches Alertmanager.
    gateway = start_gateway();
    let is_ours = |a: &serde_json::Value| a["labels"]["alertname"] == "ConditionTripped";
    let (_, firing) = sink
        .wait_for_alert("firing", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&gateway)));
    assert_eq!(firing["labels"]["node"], "pi-a");
    assert_eq!(
        active_in_alertmanager(&alertmanager, "ConditionTripped").len(),
        1
    );
    assert!(
        counter(&node.agent, "nodewatch_lora_resyncs_total") >= 1.0,
        "repaired by a resync\n{}",
        logs(&gateway)
    );
}

#[test]
fn node_key_cannot_sign_for_another_node() {
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    // The test is both nodes: it sends from this socket and hears the gateway's acks.
    let air = UdpSocket::bind("127.0.0.1:0").expect("bind");
    air.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let node_port = air.local_addr().expect("addr").port();
    let gateway_port = free_udp_port();
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway_in(
        gateway_dir.path(),
        gateway_port,
        node_port,
        &alertmanager.url(),
        "repost_interval_secs = 1\nduty_cycle_percent = 100",
        &format!("{FAST_AIR}\n[[lora.nodes]]\nname = \"pi-b\"\n"),
    );
    let (pi_a, pi_b) = (NodeId::from_name("pi-a"), NodeId::from_name("pi-b"));
    let send = |frame: AlertFrame, key: &Key| {
        let bytes = Frame::Alert(frame).encode(key).expect("encode");
        air.send_to(&bytes, ("127.0.0.1", gateway_port))
            .expect("send");
    };
    let frame = |node, state, sequence, name: &str| AlertFrame {
        state,
        severity: Severity::Critical,
        node,
        epoch: 0,
        sequence,
        value: 1.0,
        digest: 0,
        alertname: name.into(),
    };

    // pi-b fires, under its own key.
    send(
        frame(pi_b, AlertState::Firing, 1, "DiskFull"),
        &node_key("pi-b"),
    );
    let is_b = |a: &serde_json::Value| {
        a["labels"]["alertname"] == "DiskFull" && a["labels"]["node"] == "pi-b"
    };
    sink.wait_for_alert("firing", Duration::from_secs(30), is_b)
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gateway.child.log()));

    // pi-a's key (taken from its SD card) signs for pi-b: "DiskFull resolved", and a
    // heartbeat saying nothing fires. Both are refused and counted.
    let a_key = node_key("pi-a");
    send(frame(pi_b, AlertState::Resolved, 2, "DiskFull"), &a_key);
    let mut empty = frame(pi_b, AlertState::Heartbeat, 3, "");
    empty.value = 0.0;
    empty.digest = firing_digest([]);
    send(empty, &a_key);
    // pi-a's key still signs for pi-a.
    send(frame(pi_a, AlertState::Firing, 1, "Hot"), &a_key);
    assert!(
        wait_until(Duration::from_secs(10), || {
            metric(&gateway, "nodewatch_lora_rejected_total{reason=\"mac\"}") == Some(2.0)
                && metric(&gateway, "nodewatch_lora_received_total{node=\"pi-a\"}") == Some(1.0)
        }),
        "forgeries not counted; gateway log:\n{}",
        gateway.child.log()
    );
    sink.wait_for_alert("firing", Duration::from_secs(30), |a| {
        a["labels"]["alertname"] == "Hot" && a["labels"]["node"] == "pi-a"
    })
    .expect("pi-a's own alert");
    // Several re-posts later pi-b's alert still fires; nothing resolved it.
    std::thread::sleep(Duration::from_secs(3));
    let active: Vec<_> = active_in_alertmanager(&alertmanager, "DiskFull")
        .into_iter()
        .filter(|a| a["labels"]["node"] == "pi-b")
        .collect();
    assert_eq!(active.len(), 1, "{:?}", alertmanager.alerts());
    assert_eq!(resolved_notifications(&sink, "DiskFull"), 0);
    assert_eq!(
        metric(&gateway, "nodewatch_lora_received_total{node=\"pi-b\"}"),
        Some(1.0)
    );
}

#[test]
fn lost_sequence_file_recovers() {
    let sink = WebhookSink::start().expect("sink");
    let alertmanager = Alertmanager::start(&sink.url).expect("alertmanager");
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let gateway_dir = tempfile::tempdir().expect("tempdir");
    let gateway = start_gateway_in(
        gateway_dir.path(),
        gateway_port,
        node_port,
        &alertmanager.url(),
        "repost_interval_secs = 1\nduty_cycle_percent = 100",
        FAST_AIR,
    );
    let mut node = start_node_with(
        node_port,
        gateway_port,
        "heartbeat_interval_secs = 2\nduty_cycle_percent = 100",
        FAST_AIR,
    );
    let logs = |node: &Node| {
        format!(
            "node log:\n{}\ngateway log:\n{}",
            node.agent.child.log(),
            gateway.child.log()
        )
    };
    let is_ours = |a: &serde_json::Value| a["labels"]["alertname"] == "ConditionTripped";
    set_condition(&node.textfile, 1);
    sink.wait_for_alert("firing", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));
    set_condition(&node.textfile, 0);
    sink.wait_for_alert("resolved", Duration::from_secs(30), is_ours)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&node)));

    // The node loses its sequence file (a new SD card, a wiped state_dir) and starts
    // again. Nobody touches the gateway.
    node.kill();
    let sequence_file = node
        .config
        .parent()
        .expect("config dir")
        .join("state")
        .join("lora-sequence");
    let before = std::fs::read_to_string(&sequence_file).expect("the node kept one");
    assert!(before.contains("\"epoch\":0"), "{before}");
    std::fs::remove_file(&sequence_file).expect("remove the sequence file");
    node.restart();
    set_condition(&node.textfile, 1);
    assert!(
        wait_until(Duration::from_secs(30), || {
            active_in_alertmanager(&alertmanager, "ConditionTripped").len() == 1
        }),
        "the node's alert never reached Alertmanager again\n{}",
        logs(&node)
    );
    // It asked the gateway for its epoch and moved to the next one.
    assert!(counter(&node.agent, "nodewatch_lora_epoch_starts_total") >= 1.0);
    let after = std::fs::read_to_string(&sequence_file).expect("written again");
    assert!(after.contains("\"epoch\":1"), "{after}");
    set_condition(&node.textfile, 0);
    assert!(
        wait_until(Duration::from_secs(30), || {
            active_in_alertmanager(&alertmanager, "ConditionTripped").is_empty()
        }),
        "the alert never resolved\n{}",
        logs(&node)
    );
}
