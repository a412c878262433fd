//! Local alert rules: the exported Prometheus rule file passes `promtool check rules`
//! and the committed promtool unit tests (one per built-in rule); a running agent on
//! the Pi fixture fires the under-voltage rule and shows it in `/metrics` and
//! `/api/health/detailed`; `check-config` points at a bad expression.

mod common;

use std::path::Path;
use std::time::Duration;

use nodewatch_tests::{
    Agent, agent_binary, fixture, get_text, promtool, promtool_test_rules, wait_until,
};

fn export(config: Option<&Path>, out: &Path) {
    let mut command = std::process::Command::new(agent_binary());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let output = command
        .args(["rules", "export", "--out"])
        .arg(out)
        .output()
        .expect("run agent");
    assert!(
        output.status.success(),
        "rules export failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn default_rules_pass_promtool_check_and_unit_tests() {
    let dir = tempfile::tempdir().expect("tempdir");
    export(None, &dir.path().join("rules.yml"));
    let (ok, out) = promtool(dir.path(), &["check", "rules", "rules.yml"]).expect("promtool");
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
    let test_file = dir.path().join("default_rules_test.yml");
    std::fs::copy(fixture("alerts").join("default_rules_test.yml"), &test_file).expect("copy");
    let (ok, out) = promtool_test_rules(&test_file).expect("promtool");
    assert!(ok, "promtool test rules failed:\n{out}");
}

#[test]
fn export_follows_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        r#"
[alerts]
disable = ["UnderVoltage"]

[[alerts.rules]]
name = "LoadHigh"
expr = 'node_load1 > 4 and on() absent(nodewatch_pi_model_info{model=~".*Zero.*"})'
for_secs = 120
severity = "info"
summary = "Load {{ $value }} on {{ $labels.instance }}"
"#,
    )
    .expect("write");
    let rules = dir.path().join("rules.yml");
    export(Some(&config), &rules);
    let text = std::fs::read_to_string(&rules).expect("read");
    assert!(!text.contains("UnderVoltage"), "{text}");
    assert!(text.contains("alert: \"LoadHigh\""), "{text}");
    let (ok, out) = promtool(dir.path(), &["check", "rules", "rules.yml"]).expect("promtool");
    assert!(ok, "{out}");
    assert!(out.contains("SUCCESS: 9 rules found"), "{out}");
}

#[test]
fn check_config_points_at_a_bad_expression() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[[alerts.rules]]\nname = \"X\"\nseverity = \"info\"\nexpr = 'up{job=~\"(\"}'\n",
    )
    .expect("write");
    let output = std::process::Command::new(agent_binary())
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .expect("run agent");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The regular expression's string starts at column 9 of the expression, which
    // starts at column 9 of line 4.
    let want = format!(
        "{}:4:17: alerts rule \"X\": expr: bad regular expression",
        config.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn pi_fixture_fires_under_voltage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        r#"
[alerts]
evaluation_interval_secs = 0.2

[[alerts.rules]]
name = "LoadSustained"
expr = "node_load1 >= 0"
for_secs = 3600
severity = "info"
"#,
    )
    .expect("write");
    let mut args = common::agent_fixture_args(&fixture("pi"), &fixture("textfile"));
    args.push(format!("--config={}", config.display()));
    let agent = Agent::start(&common::strs(&args)).expect("agent");
    let firing = "nodewatch_alert_firing{alertname=\"UnderVoltage\",severity=\"critical\"} 1";
    let mut body = String::new();
    let fired = wait_until(Duration::from_secs(20), || {
        body = agent.metrics().unwrap_or_default();
        body.contains(firing)
    });
    assert!(fired, "{body}\nlog:\n{}", agent.child.log());
    // Pending, not firing.
    assert!(
        body.contains("nodewatch_alert_firing{alertname=\"LoadSustained\",severity=\"info\"} 0"),
        "{body}"
    );
    let detailed: serde_json::Value =
        serde_json::from_str(&get_text(&agent.url("/api/health/detailed")).expect("get"))
            .expect("json");
    let alerts = detailed["alerts"].as_array().expect("alerts");
    let under_voltage = alerts
        .iter()
        .find(|a| a["alertname"] == "UnderVoltage")
        .unwrap_or_else(|| panic!("{detailed}"));
    assert_eq!(under_voltage["severity"], "critical");
    assert_eq!(under_voltage["labels"]["condition"], "under_voltage");
    assert_eq!(under_voltage["summary"], "Under-voltage now");
    assert!(!alerts.iter().any(|a| a["alertname"] == "LoadSustained"));
    assert!(
        agent.child.log().contains("Alert firing."),
        "{}",
        agent.child.log()
    );
}
