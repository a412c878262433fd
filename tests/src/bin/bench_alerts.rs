//! Benchmark: how fast a condition on a Pi reaches the operator.
//!
//! `cargo run --release -p nodewatch-tests --bin bench-alerts [-- --trips N]`
//!
//! Node agent A runs on a copy of the Pi fixture with one critical rule on the
//! under-voltage alarm (`node_hwmon_in_lcrit_alarm_volts > 0`, no `for`), its buzzer
//! simulated and its LoRa radio on the simulated UDP air; gateway agent B forwards to
//! Debian's Alertmanager, which calls a webhook sink. Each trip flips the fixture's
//! alarm file and measures:
//! - condition → buzzer on (A's `nodewatch_buzzer_last_on_timestamp_seconds`),
//!   target ≤ 2 s;
//! - condition → webhook through the gateway, target ≤ 5 s over the simulated air,
//!   plus the radio's airtime (printed below for the frame and its acknowledgement).
//!
//! Both include the collector's interval (2 s by default): a condition waits for the
//! next collection. Trips are spread over that interval. Then it prints airtime and
//! the 1 % duty-cycle budget per spreading factor for the frame sizes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use nodewatch_lora::airtime::{Modulation, time_on_air};
use nodewatch_lora::frame;
use nodewatch_tests::alertmanager::{Alertmanager, WebhookSink};
use nodewatch_tests::{Agent, fixture, wait_until};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const RULE: &str = "BenchUnderVoltage";

fn udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// `hex` in a key file as the agent wants it: mode 0600.
fn write_key(dir: &Path, name: &str, hex: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, hex).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn gauge(agent: &Agent, name: &str) -> Option<f64> {
    let body = agent.metrics().ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Waits for a webhook notification of our rule with `status`, arrived after `since`.
fn webhook_after(sink: &WebhookSink, status: &str, since: Instant) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for n in sink.received() {
            if n.at < since {
                continue;
            }
            let ours = n.body["alerts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["status"] == status && a["labels"]["alertname"] == RULE);
            if ours {
                return Ok(n.at);
            }
        }
        if Instant::now() > deadline {
            bail!("no {status} notification within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stats(label: &str, mut ms: Vec<f64>, target_ms: f64) {
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    let max = ms[ms.len() - 1];
    println!(
        "{label:<44} median {median:>6.0} ms   max {max:>6.0} ms   target ≤ {target_ms:.0} ms   {}",
        if max <= target_ms { "met" } else { "MISSED" }
    );
}

fn main() -> Result<()> {
    let trips: usize = std::env::args()
        .skip_while(|a| a != "--trips")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(8);

    let dir = tempfile::tempdir()?;
    let root = dir.path().join("pi");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(fixture("pi"))
        .arg(&root)
        .status()?;
    anyhow::ensure!(status.success(), "copy the Pi fixture");
    let alarm = root.join(
        "sys/devices/platform/soc/soc:firmware/raspberrypi-hwmon/hwmon/hwmon0/in0_lcrit_alarm",
    );
    std::fs::write(&alarm, "0\n")?;
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile)?;
    // The gateway holds the master key; the node only its own, derived from it.
    let key = write_key(dir.path(), "master.key", KEY);
    let node_key = write_key(
        dir.path(),
        "pi-bench.key",
        &frame::MasterKey::from_hex(KEY)?.node_key_hex(frame::NodeId::from_name("pi-bench")),
    );

    let sink = WebhookSink::start()?;
    let alertmanager = Alertmanager::start(&sink.url)?;
    let (node_port, gateway_port) = (udp_port(), udp_port());

    // The trips follow each other faster than EU868's 1 % allows at SF12 (each is two
    // frames and two acks, ~8 s of airtime): without this the last ones would measure
    // the budget's wait, not the path. The budget has tests of its own; its figures
    // per spreading factor are printed at the end.
    let budget = "duty_cycle_percent = 100";
    let gateway_config = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "node_name = \"gateway\"\nstate_dir = \"{}\"\n[alerts]\ndefault_rules = false\n\
             [lora]\nenabled = true\ngateway = true\n{budget}\nnetwork_key_file = \"{}\"\n\
             alertmanager_urls = [\"{}\"]\n[[lora.nodes]]\nname = \"pi-bench\"\n\
             [lora.radio]\nkind = \"udp\"\nudp_bind = \"127.0.0.1:{gateway_port}\"\n\
             udp_peers = [\"127.0.0.1:{node_port}\"]\n",
            dir.path().join("gateway-state").display(),
            key.display(),
            alertmanager.url()
        ),
    )?;
    let node_config = dir.path().join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "node_name = \"pi-bench\"\nstate_dir = \"{}\"\n[alerts]\ndefault_rules = false\n\
             [[alerts.rules]]\nname = \"{RULE}\"\nexpr = \"node_hwmon_in_lcrit_alarm_volts > 0\"\n\
             severity = \"critical\"\n\
             [lora]\nenabled = true\n{budget}\nnetwork_key_file = \"{}\"\n\
             [lora.radio]\nkind = \"udp\"\nudp_bind = \"127.0.0.1:{node_port}\"\n\
             udp_peers = [\"127.0.0.1:{gateway_port}\"]\n",
            dir.path().join("node-state").display(),
            node_key.display(),
        ),
    )?;
    let fixture_args = |root: &Path| {
        vec![
            format!("--path.procfs={}", root.join("proc").display()),
            format!("--path.sysfs={}", root.join("sys").display()),
            format!("--path.rootfs={}", root.display()),
            format!("--collector.textfile.directory={}", textfile.display()),
            "--no-collector.docker".to_string(),
            "--no-collector.intmax_builder".to_string(),
        ]
    };
    let mut args = vec!["--config".to_string(), gateway_config.display().to_string()];
    args.extend(fixture_args(&fixture("linux")));
    let gateway = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut args = vec!["--config".to_string(), node_config.display().to_string()];
    args.extend(fixture_args(&root));
    let node = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    if !wait_until(Duration::from_secs(20), || {
        gauge(&node, "nodewatch_lora_acknowledged_total").unwrap_or(0.0) >= 1.0
    }) {
        bail!(
            "the gateway never acknowledged the node's heartbeat\nnode log:\n{}\ngateway log:\n{}",
            node.child.log(),
            gateway.child.log()
        );
    }

    let mut buzzer_ms = Vec::new();
    let mut webhook_ms = Vec::new();
    let mut resolved_ms = Vec::new();
    eprintln!("{trips} trips…");
    for trip in 0..trips {
        // Land at a different phase of the 2 s collection interval each time.
        std::thread::sleep(Duration::from_millis(250 * (trip as u64 % 8) + 300));
        let started_unix = unix_now();
        let started = Instant::now();
        std::fs::write(&alarm, "1\n")?;
        let webhook = webhook_after(&sink, "firing", started)
            .with_context(|| format!("trip {trip}; node log:\n{}", node.child.log()))?;
        webhook_ms.push((webhook - started).as_secs_f64() * 1000.0);
        let mut buzzer_at = None;
        wait_until(Duration::from_secs(10), || {
            buzzer_at = gauge(&node, "nodewatch_buzzer_last_on_timestamp_seconds")
                .filter(|t| *t >= started_unix);
            buzzer_at.is_some()
        });
        let buzzer_at = buzzer_at.context("the buzzer never sounded")?;
        buzzer_ms.push((buzzer_at - started_unix) * 1000.0);
        let cleared = Instant::now();
        std::fs::write(&alarm, "0\n")?;
        let resolved = webhook_after(&sink, "resolved", cleared)?;
        resolved_ms.push((resolved - cleared).as_secs_f64() * 1000.0);
    }

    println!("\n== Alert latency ({trips} trips, collector interval 2 s, simulated radio) ==");
    stats("condition → buzzer on (simulated GPIO)", buzzer_ms, 2000.0);
    stats(
        "condition → Alertmanager webhook via LoRa",
        webhook_ms,
        5000.0,
    );
    stats("condition cleared → resolved webhook", resolved_ms, 5000.0);

    let modulation = Modulation::default();
    let name_len = RULE.len();
    let alert_len = frame::ALERT_HEADER_LEN + name_len + frame::MAC_LEN;
    println!(
        "\nA real radio adds the frame's airtime to delivery: {:.0} ms for this {alert_len}-byte \
         frame at SF12/125 kHz (the {}-byte acknowledgement, {:.0} ms, follows on the gateway's \
         own budget).",
        time_on_air(&modulation, alert_len).as_secs_f64() * 1000.0,
        frame::ACK_LEN,
        time_on_air(&modulation, frame::ACK_LEN).as_secs_f64() * 1000.0
    );
    println!("\n== Airtime and 1 % duty-cycle budget (EU868: 36 s per hour), 125 kHz, CR 4/5 ==");
    println!(
        "{:<5} {:>14} {:>14} {:>14} {:>14}  longest frames/hour",
        "SF",
        format!("ack {} B", frame::ACK_LEN),
        format!("heartbeat {} B", frame::HEARTBEAT_LEN),
        format!("alert {alert_len} B"),
        format!("longest {} B", frame::MAX_ALERT_LEN),
    );
    for sf in 7..=12u8 {
        let m = Modulation {
            spreading_factor: sf,
            ..modulation
        };
        let ms = |len: usize| time_on_air(&m, len).as_secs_f64() * 1000.0;
        let per_hour = (36.0 / time_on_air(&m, frame::MAX_ALERT_LEN).as_secs_f64()).floor();
        println!(
            "{:<5} {:>11.0} ms {:>11.0} ms {:>11.0} ms {:>11.0} ms  {per_hour:.0}",
            format!("SF{sf}"),
            ms(frame::ACK_LEN),
            ms(frame::HEARTBEAT_LEN),
            ms(alert_len),
            ms(frame::MAX_ALERT_LEN),
        );
    }
    Ok(())
}
