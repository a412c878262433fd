//! The monitoring server's alerting end to end: real agents → a real Prometheus with the
//! shipped rules → a real Alertmanager with the shipped routes, rendered by the shipped
//! render.sh → sinks standing in for Telegram, Discord, Slack, PagerDuty, the generic
//! webhook (one HTTP sink, a path each) and e-mail (an SMTP sink).
//!
//! Only the secrets and URLs point at the sinks, and the timings are compressed to 1 s
//! (see `nodewatch_tests::server`).
//!
//! - pi-01 (the Pi fixture, booted just now, with a broken textfile): UnderVoltage
//!   (critical) reaches PagerDuty and Telegram only; TextfileScrapeError (warning)
//!   Discord and Slack only; NodeRebooted (info) the e-mail digest; the webhook gets
//!   all. When the power is fixed, UnderVoltage's resolution reaches Telegram and
//!   PagerDuty.
//! - pi-02: one of its targets does not answer, so NodeDown fires; its other agent's
//!   TextfileScrapeError is inhibited and reaches no chat.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{agent_fixture_args, copy_tree, strs};
use nodewatch_tests::alertmanager::Alertmanager;
use nodewatch_tests::server::{
    HttpSink, SiteConfig, SmtpSink, compress_durations, run, server_dir,
};
use nodewatch_tests::{Agent, Prometheus, fixture, free_port, wait_until};

const BOT_TOKEN: &str = "4242:test-token";
const ROUTING_KEY: &str = "test-routing-key";

/// Renders the shipped Alertmanager file with the sinks' addresses, then compresses
/// its group timings.
fn render_alertmanager(dir: &Path, http: &HttpSink, smtp: &SmtpSink) -> std::path::PathBuf {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    let values = [
        ("telegram_bot_token", BOT_TOKEN.to_string()),
        ("telegram_chat_id", "42".into()),
        ("telegram_api_url", format!("{}/telegram", http.url)),
        ("discord_webhook_url", format!("{}/discord/hook", http.url)),
        ("slack_api_url", format!("{}/slack/hook", http.url)),
        ("pagerduty_routing_key", ROUTING_KEY.into()),
        ("pagerduty_url", format!("{}/pagerduty/enqueue", http.url)),
        ("webhook_url", format!("{}/webhook", http.url)),
        ("email_to", "operator@example.invalid".into()),
        ("email_from", "nodewatch@example.invalid".into()),
        ("smtp_smarthost", smtp.address.clone()),
        ("smtp_username", "nodewatch".into()),
        ("smtp_password", "unused".into()),
        ("smtp_require_tls", "false".into()),
        ("grafana_url", "http://127.0.0.1:3000".into()),
    ];
    for (name, value) in values {
        std::fs::write(secrets.join(name), format!("{value}\n")).expect("write secret");
    }
    let out = dir.join("alertmanager");
    let (ok, log) = run(
        Path::new("bash"),
        &[
            &server_dir()
                .join("alertmanager/render.sh")
                .display()
                .to_string(),
            &secrets.display().to_string(),
            &out.display().to_string(),
        ],
        dir,
    )
    .expect("render.sh");
    assert!(ok, "render.sh:\n{log}");
    let config = out.join("alertmanager.yml");
    let text = std::fs::read_to_string(&config).expect("rendered");
    std::fs::write(
        &config,
        compress_durations(&text, &["group_wait", "group_interval"], "1s"),
    )
    .expect("write");
    config
}

fn set_throttled(root: &Path, value: &str) {
    let path = root.join("sys/devices/platform/soc/soc:firmware/get_throttled");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{value}\n")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename");
}

/// The Pi fixture, booted a minute ago.
fn pi_booted_now() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, root) = copy_tree(&fixture("pi"));
    let stat = root.join("proc/stat");
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 60;
    let text = std::fs::read_to_string(&stat).expect("stat");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("btime ") {
                format!("btime {boot}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&stat, text).expect("write stat");
    (dir, root)
}

#[test]
fn alerts_reach_the_right_receivers_inhibited_and_resolved() {
    let work = tempfile::tempdir().expect("tempdir");
    let http = HttpSink::start().expect("http sink");
    let smtp = SmtpSink::start().expect("smtp sink");
    let am_config = render_alertmanager(work.path(), &http, &smtp);
    let alertmanager = Alertmanager::start_with_config(&am_config).expect("alertmanager");

    let (_pi_dir, pi_root) = pi_booted_now();
    let pi = Agent::start(&strs(&agent_fixture_args(
        &pi_root,
        &fixture("textfile-bad"),
    )))
    .expect("pi-01 agent");
    let site = SiteConfig::new(true).expect("site config");
    let dead = format!("127.0.0.1:{}", free_port());
    site.set_targets("alertmanager", &[(&alertmanager.address, &[])])
        .expect("targets");
    site.set_targets(
        "nodes",
        &[
            (&pi.address, &[("node", "pi-01")]),
            (&dead, &[("node", "pi-02")]),
        ],
    )
    .expect("targets");
    let prometheus = Prometheus::start_site(&site.config_file(), &work.path().join("tsdb"), &[])
        .expect("prometheus");
    let timeout = Duration::from_secs(60);
    let state = || {
        format!(
            "\nPrometheus up: {:?}\nALERTS: {:?}\nAlertmanager holds: {:?}\nAlertmanager log:\n{}\nPrometheus log:\n{}",
            prometheus.query("up"),
            prometheus.query("ALERTS"),
            alertmanager.alerts(),
            alertmanager.child.log(),
            prometheus.child.log()
        )
    };

    // Critical: PagerDuty and Telegram, with a phone-sized message.
    let telegram = http
        .wait_for(
            &format!("/telegram/bot{BOT_TOKEN}/sendMessage"),
            &["UnderVoltage on pi-01", "\"chat_id\":\"42\""],
            timeout,
        )
        .unwrap_or_else(|e| panic!("UnderVoltage on Telegram: {e}{}", state()));
    for line in [
        "Node: pi-01",
        "Value: 1",
        "Since: ",
        "Dashboard: http://127.0.0.1:3000/d/nodewatch-node/nodewatch-node-detail?var-node=pi-01",
        "Runbook: docs/monitoring-server.md#undervoltage",
    ] {
        assert!(
            telegram.body.contains(line),
            "{line} not in {}",
            telegram.body
        );
    }
    let pager = http
        .wait_for(
            "/pagerduty/",
            &[
                "UnderVoltage on pi-01",
                ROUTING_KEY,
                "\"event_action\":\"trigger\"",
            ],
            timeout,
        )
        .unwrap_or_else(|e| panic!("UnderVoltage on PagerDuty: {e}{}", state()));
    assert!(
        pager.body.contains("\"severity\":\"critical\""),
        "{}",
        pager.body
    );

    // Warning: Discord and Slack.
    http.wait_for("/discord/", &["TextfileScrapeError on pi-01"], timeout)
        .unwrap_or_else(|e| panic!("TextfileScrapeError on Discord: {e}{}", state()));
    http.wait_for("/slack/", &["TextfileScrapeError on pi-01"], timeout)
        .unwrap_or_else(|e| panic!("TextfileScrapeError on Slack: {e}{}", state()));
    // Info: the e-mail digest.
    let mail = smtp
        .wait_for(
            &["NodeRebooted on pi-01", "operator@example.invalid"],
            timeout,
        )
        .expect("NodeRebooted by e-mail");
    assert!(mail.contains("Subject:"), "{mail}");
    // Everything: the webhook.
    for name in [
        "UnderVoltage",
        "TextfileScrapeError",
        "NodeRebooted",
        "NodeDown",
    ] {
        http.wait_for("/webhook", &[&format!("\"alertname\":\"{name}\"")], timeout)
            .unwrap_or_else(|e| panic!("{name} on the webhook: {e}{}", state()));
    }
    // NodeDown of pi-02 pages too.
    http.wait_for(
        &format!("/telegram/bot{BOT_TOKEN}/"),
        &["NodeDown on pi-02"],
        timeout,
    )
    .unwrap_or_else(|e| panic!("NodeDown on Telegram: {e}{}", state()));

    // pi-02's second target, an agent with a broken textfile: its warning is inhibited
    // by NodeDown of the same node.
    let pi02 = Agent::start(&strs(&agent_fixture_args(
        &fixture("linux"),
        &fixture("textfile-bad"),
    )))
    .expect("pi-02 agent");
    site.set_targets(
        "nodes",
        &[
            (&pi.address, &[("node", "pi-01")]),
            (&dead, &[("node", "pi-02")]),
            (&pi02.address, &[("node", "pi-02")]),
        ],
    )
    .expect("targets");
    let inhibited = wait_until(timeout, || {
        alertmanager.alerts().unwrap_or_default().iter().any(|a| {
            a["labels"]["alertname"] == "TextfileScrapeError"
                && a["labels"]["node"] == "pi-02"
                && a["status"]["state"] == "suppressed"
                && a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|i| !i.is_empty())
        })
    });
    assert!(
        inhibited,
        "TextfileScrapeError of pi-02 not inhibited: {}",
        state()
    );

    // The power comes back: the resolution reaches the phone and the pager.
    set_throttled(&pi_root, "50000");
    http.wait_for(
        &format!("/telegram/bot{BOT_TOKEN}/"),
        &["[RESOLVED] UnderVoltage on pi-01"],
        timeout,
    )
    .unwrap_or_else(|e| panic!("UnderVoltage resolved on Telegram: {e}{}", state()));
    http.wait_for(
        "/pagerduty/",
        &["UnderVoltage on pi-01", "\"event_action\":\"resolve\""],
        timeout,
    )
    .unwrap_or_else(|e| panic!("UnderVoltage resolved on PagerDuty: {e}{}", state()));

    // Nothing crossed routes: no critical in the chats, no warning on the pager or the
    // phone, and pi-02's inhibited warning nowhere but Alertmanager.
    for prefix in ["/discord/", "/slack/"] {
        for r in http.received(prefix) {
            assert!(!r.body.contains("UnderVoltage"), "{prefix}: {}", r.body);
            assert!(!r.body.contains("NodeDown"), "{prefix}: {}", r.body);
            assert!(
                !r.body.contains("TextfileScrapeError on pi-02"),
                "{prefix}: {}",
                r.body
            );
        }
    }
    for prefix in ["/pagerduty/", "/telegram/"] {
        for r in http.received(prefix) {
            assert!(
                !r.body.contains("TextfileScrapeError"),
                "{prefix}: {}",
                r.body
            );
        }
    }
    for r in http.received("/webhook") {
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("webhook json");
        for alert in body["alerts"].as_array().into_iter().flatten() {
            assert!(
                !(alert["labels"]["alertname"] == "TextfileScrapeError"
                    && alert["labels"]["node"] == "pi-02"),
                "inhibited alert delivered: {alert}"
            );
        }
    }
    drop(prometheus);
}
