//! The monitoring server's shipped files (`config/server/`) checked by the programs that
//! will load them: promtool (config, rules, rule unit tests), amtool (the shipped and the
//! rendered Alertmanager file), Debian's docker-compose, and a Prometheus that loads the
//! central rules beside the agent's local ones to compare them. The dashboards' JSON is
//! checked for unique panel ids, the provisioned datasource and the number of queries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nodewatch_tests::server::{run, server_dir};
use nodewatch_tests::{Prometheus, agent_binary, get_text, program, promtool};
use serde_json::Value;

/// The alerts the issue names, with their fixed severity where it has one.
const REQUIRED_ALERTS: &[(&str, Option<&str>)] = &[
    ("NodeDown", Some("critical")),
    ("ExporterDown", Some("critical")),
    ("BuilderNotReady", Some("critical")),
    ("BuilderContainerDown", Some("critical")),
    ("BuilderHealthFailing", None),
    ("DiskAlmostFull", Some("warning")),
    ("DiskFull", Some("critical")),
    ("UnderVoltage", Some("critical")),
    ("SocTemperatureHigh", None),
    ("GasWalletLow", Some("warning")),
    ("GasWalletCritical", Some("critical")),
    ("WalletCheckStale", None),
    ("RewardCheckStale", None),
    ("RpcEndpointDown", None),
    ("RpcEndpointLagging", None),
    ("HighErrorRate", None),
    ("HighLatency", None),
    ("LoraNodeSilent", None),
    ("TextfileScrapeError", None),
    ("ClockSkew", None),
];

fn rule_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(server_dir().join("prometheus/rules"))
        .expect("rules dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn promtool_checks_config_rules_and_rule_tests() {
    let dir = server_dir().join("prometheus");
    let (ok, out) = promtool(&dir, &["check", "config", "prometheus.yml"]).expect("promtool");
    assert!(ok, "promtool check config:\n{out}");
    let (ok, out) = promtool(
        &server_dir().join("global"),
        &["check", "config", "prometheus.yml"],
    )
    .expect("promtool");
    assert!(ok, "promtool check config (global, federating):\n{out}");

    let rules: Vec<String> = rule_files().iter().map(|f| format!("rules/{f}")).collect();
    assert!(rules.len() >= 4, "rules by domain: {rules:?}");
    let mut args = vec!["check", "rules"];
    args.extend(rules.iter().map(String::as_str));
    let (ok, out) = promtool(&dir, &args).expect("promtool");
    assert!(ok, "promtool check rules:\n{out}");

    let tests_dir = dir.join("tests");
    let mut tests: Vec<String> = std::fs::read_dir(&tests_dir)
        .expect("tests dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_test.yml"))
        .collect();
    tests.sort();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, out) = promtool(&tests_dir, &args).expect("promtool");
    assert!(ok, "promtool test rules:\n{out}");

    // Every alert of the rules is exercised by a unit test: it must fire somewhere
    // (an `alertname:` check with a non-empty exp_alerts).
    let tested: BTreeSet<String> = tests
        .iter()
        .flat_map(|t| {
            let text = std::fs::read_to_string(tests_dir.join(t)).expect("read test");
            let mut fired = Vec::new();
            let mut current = None;
            for line in text.lines() {
                let line = line.trim();
                if let Some(name) = line.strip_prefix("alertname: ") {
                    current = Some(name.to_string());
                } else if line == "exp_alerts:"
                    && let Some(name) = current.take()
                {
                    fired.push(name);
                }
            }
            fired
        })
        .collect();
    for name in defined_alerts().keys() {
        assert!(tested.contains(name), "no promtool test makes {name} fire");
    }
}

/// alertname → severities, from the shipped rule files (one `- alert:` line each, its
/// `severity:` below it).
fn defined_alerts() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rule_files() {
        let text = std::fs::read_to_string(server_dir().join("prometheus/rules").join(&file))
            .expect("read rules");
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix("- alert: ") {
                current = Some(name.to_string());
                out.entry(name.to_string()).or_default();
            } else if let (Some(severity), Some(name)) =
                (line.strip_prefix("severity: "), current.as_ref())
            {
                out.entry(name.clone())
                    .or_default()
                    .insert(severity.to_string());
            }
        }
    }
    out
}

#[test]
fn required_alerts_exist_with_their_severity() {
    let alerts = defined_alerts();
    for (name, severity) in REQUIRED_ALERTS {
        let found = alerts
            .get(*name)
            .unwrap_or_else(|| panic!("alert {name} is not defined"));
        assert!(!found.is_empty(), "{name} has no severity label");
        if let Some(severity) = severity {
            assert_eq!(
                found,
                &BTreeSet::from([severity.to_string()]),
                "severity of {name}"
            );
        }
    }
}

/// Loads the central rules and the agent's exported local rules into one real
/// Prometheus and compares, by alert name, the parsed expression, `for` and labels.
#[test]
fn central_rules_match_the_agents_local_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let export = std::process::Command::new(agent_binary())
        .args(["rules", "export"])
        .output()
        .expect("rules export");
    assert!(export.status.success(), "rules export failed");
    std::fs::write(dir.path().join("local.yml"), &export.stdout).expect("write");
    let mut config =
        String::from("global: { evaluation_interval: 1h }\nrule_files:\n  - local.yml\n");
    for file in rule_files() {
        config.push_str(&format!(
            "  - {}\n",
            server_dir().join("prometheus/rules").join(file).display()
        ));
    }
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write");
    let prometheus = Prometheus::start_site(
        &dir.path().join("prometheus.yml"),
        &dir.path().join("tsdb"),
        &[],
    )
    .expect("prometheus");
    let rules: Value = serde_json::from_str(
        &get_text(&format!("{}/api/v1/rules?type=alert", prometheus.url())).expect("rules"),
    )
    .expect("json");
    let mut local = BTreeMap::new();
    let mut central: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for group in rules["data"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().expect("name").to_string();
            let key = serde_json::json!({
                "query": rule["query"],
                "duration": rule["duration"],
                "labels": rule["labels"],
            });
            if group["file"].as_str().unwrap_or("").ends_with("local.yml") {
                local.insert(name, key);
            } else {
                central.entry(name).or_default().push(key);
            }
        }
    }
    assert!(local.len() >= 5, "local rules: {local:?}");
    for (name, key) in &local {
        let same = central.get(name).unwrap_or_else(|| {
            panic!("the agent's local alert {name} has no central rule of the same name")
        });
        assert!(
            same.contains(key),
            "{name}: local {key} differs from central {same:?}"
        );
    }
}

#[test]
fn the_50_node_example_is_a_valid_target_file() {
    let example = server_dir().join("prometheus/examples/nodes-50.yml");
    let text = std::fs::read_to_string(&example).expect("example");
    let nodes: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node: "))
        .collect();
    assert_eq!(nodes.len(), 50, "50 distinct node labels");
    assert_eq!(text.matches("- targets:").count(), 50);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "scrape_configs:\n  - job_name: node\n    file_sd_configs:\n      - files: [{}]\n",
            example.display()
        ),
    )
    .expect("write");
    let (ok, out) = promtool(dir.path(), &["check", "config", "prometheus.yml"]).expect("promtool");
    assert!(ok, "{out}");
}

fn amtool_check(file: &Path) -> (bool, String) {
    let amtool = program("amtool", "prometheus-alertmanager").expect("amtool");
    run(
        &amtool,
        &["check-config", &file.display().to_string()],
        Path::new("."),
    )
    .expect("amtool")
}

const SECRETS: &[(&str, &str)] = &[
    ("telegram_bot_token", "123456:ABC"),
    ("telegram_chat_id", "-1001234"),
    ("discord_webhook_url", "http://127.0.0.1:9/discord"),
    ("webhook_url", "http://127.0.0.1:9/webhook"),
    ("email_to", "ops@example.invalid"),
    ("email_from", "nodewatch@example.invalid"),
    ("smtp_smarthost", "127.0.0.1:25"),
    ("smtp_username", "nodewatch"),
    ("smtp_password", "s3cret \"quoted\""),
    ("slack_api_url", "http://127.0.0.1:9/slack"),
    ("pagerduty_routing_key", "routing-key"),
];

#[test]
fn alertmanager_config_as_shipped_and_rendered() {
    let shipped = server_dir().join("alertmanager/alertmanager.yml");
    let (ok, out) = amtool_check(&shipped);
    assert!(ok, "amtool check-config (shipped):\n{out}");
    assert!(
        out.contains("4 receivers") || out.contains("receivers"),
        "{out}"
    );

    let secrets = tempfile::tempdir().expect("tempdir");
    for (name, value) in SECRETS {
        std::fs::write(secrets.path().join(name), format!("{value}\n")).expect("write");
    }
    let render = server_dir().join("alertmanager/render.sh");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let rendered = out_dir.path().join("am");
    let (ok, out) = run(
        Path::new("bash"),
        &[
            &render.display().to_string(),
            &secrets.path().display().to_string(),
            &rendered.display().to_string(),
        ],
        Path::new("."),
    )
    .expect("render");
    assert!(ok, "render.sh:\n{out}");
    let file = rendered.join("alertmanager.yml");
    let (ok, out) = amtool_check(&file);
    assert!(ok, "amtool check-config (rendered):\n{out}");
    let text = std::fs::read_to_string(&file).expect("rendered");
    assert!(text.contains("bot_token: \"123456:ABC\""), "{text}");
    assert!(text.contains("chat_id: -1001234"), "{text}");
    assert!(
        text.contains("url: \"http://127.0.0.1:9/discord\""),
        "{text}"
    );
    // Secrets Alertmanager reads from files stay in files.
    assert!(!text.contains("s3cret") && !text.contains("routing-key"));
    assert!(text.contains(&format!(
        "routing_key_file: {}/pagerduty_routing_key",
        secrets.path().display()
    )));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the rendered file holds secrets");

    // A missing required value is an error naming the file.
    std::fs::remove_file(secrets.path().join("telegram_bot_token")).expect("rm");
    let (ok, out) = run(
        Path::new("bash"),
        &[
            &render.display().to_string(),
            &secrets.path().display().to_string(),
            &out_dir.path().join("again").display().to_string(),
        ],
        Path::new("."),
    )
    .expect("render");
    assert!(!ok, "render.sh must fail without telegram_bot_token");
    assert!(out.contains("telegram_bot_token"), "{out}");
}

#[test]
fn compose_file_validates_with_debians_docker_compose() {
    let compose = program("docker-compose", "docker-compose").expect("docker-compose");
    let (ok, out) = run(&compose, &["-f", "compose.yaml", "config"], &server_dir())
        .expect("docker-compose config");
    assert!(ok, "docker-compose config:\n{out}");
    assert!(!out.contains("privileged: true"), "{out}");
    assert!(!out.contains("network_mode: host"), "{out}");
    for service in [
        "prometheus",
        "alertmanager",
        "grafana",
        "wallet-exporter",
        "reward-exporter",
    ] {
        assert!(out.contains(&format!("  {service}:")), "service {service}");
    }
    // Upstream images pinned to a version.
    for line in out.lines().filter(|l| l.trim().starts_with("image:")) {
        let image = line.trim().trim_start_matches("image:").trim();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "image {image} is not pinned"
        );
    }
    assert!(
        server_dir().join("Dockerfile").is_file(),
        "the exporters' image"
    );
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(server_dir().join("grafana/dashboards")).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read");
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), json));
        }
    }
    out
}

#[test]
fn dashboards_have_unique_ids_and_the_provisioned_datasource() {
    let provisioning = std::fs::read_to_string(
        server_dir().join("grafana/provisioning/datasources/prometheus.yml"),
    )
    .expect("datasource");
    let uid = provisioning
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid: "))
        .expect("a fixed datasource uid")
        .trim();
    let dashboards = dashboards();
    assert!(dashboards.len() >= 3, "three dashboards");
    let mut queries = 0;
    let mut uids = BTreeSet::new();
    for (path, dashboard) in &dashboards {
        assert!(
            uids.insert(dashboard["uid"].as_str().expect("uid").to_string()),
            "{path}: duplicate dashboard uid"
        );
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{path}: panel id {id} used twice");
            assert_eq!(panel["datasource"]["uid"], uid, "{path}: panel {id}");
            for target in panel["targets"].as_array().expect("targets") {
                assert_eq!(target["datasource"]["uid"], uid, "{path}: panel {id}");
                assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()));
                queries += 1;
            }
        }
        for variable in dashboard["templating"]["list"].as_array().expect("list") {
            assert_eq!(variable["datasource"]["uid"], uid, "{path}: variable");
        }
    }
    assert!(queries >= 20, "{queries} panel queries");
    let titles: Vec<&str> = dashboards
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap_or(""))
        .collect();
    for wanted in ["fleet overview", "node detail", "wallets & rewards"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no {wanted} dashboard in {titles:?}"
        );
    }
}

/// Every alert's `runbook_url` points to a `### Name` line of docs/monitoring-server.md.
#[test]
fn every_alert_links_its_runbook_line() {
    let doc = std::fs::read_to_string(
        nodewatch_tests::workspace_root().join("docs/monitoring-server.md"),
    )
    .expect("docs/monitoring-server.md");
    let anchors: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for file in rule_files() {
        let text = std::fs::read_to_string(server_dir().join("prometheus/rules").join(&file))
            .expect("read rules");
        let mut current = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix("- alert: ") {
                assert!(current.is_none(), "{file}: {current:?} has no runbook_url");
                current = Some(name.to_string());
            } else if let Some(url) = line.strip_prefix("runbook_url: ") {
                let name = current.take().expect("runbook_url inside an alert");
                let anchor = url
                    .trim_matches('"')
                    .strip_prefix("docs/monitoring-server.md#")
                    .unwrap_or_else(|| panic!("{name}: runbook_url {url}"));
                assert_eq!(anchor, name.to_lowercase(), "{file}: {name}");
                assert!(anchors.contains(anchor), "no runbook line for {name}");
            }
        }
        assert!(current.is_none(), "{file}: {current:?} has no runbook_url");
    }
}
