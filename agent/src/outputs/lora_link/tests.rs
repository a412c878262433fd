//! The node's queueing decisions and the gateway's handling of frames.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use nodewatch_lora::airtime::time_on_air;
use nodewatch_lora::frame::{
    self, AlertFrame, AlertState, Frame, Key, MasterKey, NodeId, Severity, firing_digest,
};
use nodewatch_lora::radio::Received;
use tokio::time::Instant;

use super::gateway::Gateway;
use super::node::{NodeLink, by_name};
use super::{Keys, LoraConfig};
use crate::alerts::FiringAlert;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn master() -> MasterKey {
    MasterKey::from_hex(KEY).expect("master key")
}

/// pi-a's own key, derived from the master.
fn key() -> Key {
    master().node_key(NodeId::from_name("pi-a"))
}

/// A gateway's keys: the master, and pi-a by name.
fn keys() -> Keys {
    Keys::gateway(
        master(),
        vec![(NodeId::from_name("pi-a"), "pi-a".into(), None)],
    )
}

/// pi-a's keys: its own only.
fn node_keys() -> Keys {
    Keys::node(key())
}

fn config() -> LoraConfig {
    LoraConfig {
        enabled: true,
        ..LoraConfig::default()
    }
}

/// `KEY` in a file as the agent wants it: mode 0600, ours.
fn write_key_file(dir: &std::path::Path, name: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{KEY}\n")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// A config whose key comes from a file in `dir`.
fn config_with_key_file(dir: &std::path::Path) -> LoraConfig {
    LoraConfig {
        network_key_file: Some(write_key_file(dir, "lora.key", 0o600)),
        ..config()
    }
}

fn alert(name: &str, severity: crate::alerts::Severity, value: f64) -> FiringAlert {
    FiringAlert {
        alertname: name.into(),
        severity,
        labels: BTreeMap::new(),
        value,
        summary: String::new(),
        description: String::new(),
        active_since_unix: 0.0,
    }
}

#[test]
fn alerts_travel_by_name_at_their_highest_severity() {
    use crate::alerts::Severity as S;
    let m = by_name(&[
        alert("DiskFull", S::Warning, 85.0),
        alert("DiskFull", S::Critical, 95.0),
        alert("MemoryLow", S::Warning, 5.0),
    ]);
    assert_eq!(m["DiskFull"], (Severity::Critical, 95.0));
    assert_eq!(m["MemoryLow"], (Severity::Warning, 5.0));
}

#[test]
fn changes_are_queued_and_an_unsent_flap_cancels_out() {
    use crate::alerts::Severity as S;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut link = NodeLink::new(&config(), node_keys(), "pi-a", dir.path()).expect("link");
    link.update(&[alert("UnderVoltage", S::Critical, 1.0)]);
    assert_eq!(link.queued(), 1);
    // Same state again: nothing new.
    link.update(&[alert("UnderVoltage", S::Critical, 1.0)]);
    assert_eq!(link.queued(), 1);
    // Resolved before it could be sent: the gateway never heard of it.
    link.update(&[]);
    assert_eq!(link.queued(), 0);
    link.update(&[alert("MemoryLow", S::Warning, 5.0)]);
    link.heartbeat();
    link.heartbeat();
    assert_eq!(link.queued(), 2, "one heartbeat at most");
}

fn received(bytes: Vec<u8>) -> Received {
    Received {
        bytes,
        rssi_dbm: Some(-97.0),
        snr_db: Some(-3.5),
    }
}

fn alert_frame(state: AlertState, sequence: u32, name: &str) -> AlertFrame {
    AlertFrame {
        state,
        severity: Severity::Critical,
        node: NodeId::from_name("pi-a"),
        epoch: 0,
        sequence,
        value: 1.0,
        digest: if state == AlertState::Heartbeat {
            firing_digest([("Unknown", Severity::Info)])
        } else {
            0
        },
        alertname: name.into(),
    }
}

fn encode(f: AlertFrame, key: &Key) -> Vec<u8> {
    Frame::Alert(f).encode(key).expect("encode")
}

#[tokio::test(start_paused = true)]
async fn gateway_acknowledges_forwards_and_rejects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let now = SystemTime::now();

    let firing = encode(alert_frame(AlertState::Firing, 7, "UnderVoltage"), &key());
    let handled = gw.handle(&received(firing.clone()), now, Instant::now());
    assert_eq!(handled.rejected, None);
    let ack = frame::decode(handled.ack.as_deref().expect("ack"), &key()).expect("decode ack");
    assert_eq!(ack.sequence(), 7);
    let post = handled
        .posts
        .iter()
        .find(|p| p.labels["alertname"] == "UnderVoltage")
        .expect("posted");
    assert_eq!(post.labels["node"], "pi-a");
    assert_eq!(post.labels["severity"], "critical");
    assert_eq!(post.labels["source"], "lora");
    assert_eq!(gw.active_alerts(), 1);

    // The node resends (our ack was lost): acknowledged again, nothing forwarded.
    let again = gw.handle(&received(firing), now, Instant::now());
    assert!(again.ack.is_some());
    assert!(again.posts.is_empty());

    // A replay of an old frame, and a forgery, are dropped and counted.
    for seq in 8..80 {
        let hb = encode(alert_frame(AlertState::Heartbeat, seq, ""), &key());
        gw.handle(&received(hb), now, Instant::now());
    }
    let old = encode(alert_frame(AlertState::Resolved, 3, "UnderVoltage"), &key());
    assert_eq!(
        gw.handle(&received(old), now, Instant::now()).rejected,
        Some("replay")
    );
    let wrong = Key::from_hex(&"ee".repeat(32)).expect("key");
    let forged = encode(
        alert_frame(AlertState::Resolved, 100, "UnderVoltage"),
        &wrong,
    );
    let handled = gw.handle(&received(forged), now, Instant::now());
    assert_eq!(handled.rejected, Some("mac"));
    assert!(handled.ack.is_none());
    assert_eq!(
        gw.handle(&received(vec![1, 2, 3]), now, Instant::now())
            .rejected,
        Some("truncated")
    );
    assert_eq!(
        gw.handle(&received(vec![0; 60]), now, Instant::now())
            .rejected,
        Some("oversized")
    );
    assert_eq!(gw.active_alerts(), 1, "still firing");

    // The node says resolved: posted with endsAt now, and gone.
    let resolved = encode(
        alert_frame(AlertState::Resolved, 101, "UnderVoltage"),
        &key(),
    );
    let handled = gw.handle(&received(resolved), now, Instant::now());
    assert_eq!(handled.posts.len(), 1);
    assert_eq!(handled.posts[0].ends_at, super::alertmanager::rfc3339(now));
    assert_eq!(gw.active_alerts(), 0);
}

#[tokio::test(start_paused = true)]
async fn heartbeat_with_nothing_firing_and_silence_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let t0 = SystemTime::now();
    gw.handle(
        &received(encode(alert_frame(AlertState::Firing, 1, "A"), &key())),
        t0,
        Instant::now(),
    );
    gw.handle(
        &received(encode(alert_frame(AlertState::Firing, 2, "B"), &key())),
        t0,
        Instant::now(),
    );
    assert_eq!(gw.active_alerts(), 2);
    let mut hb = alert_frame(AlertState::Heartbeat, 3, "");
    hb.value = 0.0;
    hb.digest = firing_digest([]);
    let handled = gw.handle(&received(encode(hb, &key())), t0, Instant::now());
    assert_eq!(handled.posts.len(), 2, "both resolved");
    assert_eq!(gw.active_alerts(), 0);

    gw.handle(
        &received(encode(alert_frame(AlertState::Firing, 4, "A"), &key())),
        t0,
        Instant::now(),
    );
    // Re-posted while the node is heard from, with endsAt = its timeout.
    let posts = gw.repost(t0, Instant::now());
    assert_eq!(posts.len(), 1);
    let timeout = Duration::from_secs_f64(config().node_timeout_secs);
    let hold = Duration::from_secs_f64(config().repost_interval_secs * 3.0);
    assert_eq!(
        posts[0].ends_at,
        super::alertmanager::rfc3339(t0 + timeout + hold)
    );
    assert!(!posts[0].annotations.contains_key("stale"));
}

fn names(posts: &[super::alertmanager::PostableAlert]) -> Vec<&str> {
    posts
        .iter()
        .map(|p| p.labels["alertname"].as_str())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn silent_node_keeps_its_alerts_stale_and_raises_lora_node_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let t0 = SystemTime::now();
    gw.handle(
        &received(encode(alert_frame(AlertState::Firing, 1, "A"), &key())),
        t0,
        Instant::now(),
    );
    let timeout = Duration::from_secs_f64(config().node_timeout_secs);
    // A wall-clock step of a day changes nothing: timeouts run on the monotonic clock.
    let stepped = gw.repost(t0 + Duration::from_secs(86_400), Instant::now());
    assert_eq!(names(&stepped), ["A"]);
    assert!(!stepped[0].annotations.contains_key("stale"));

    tokio::time::advance(timeout + Duration::from_secs(1)).await;
    let late = t0 + timeout + Duration::from_secs(1);
    let posts = gw.repost(late, Instant::now());
    assert_eq!(names(&posts), ["LoraNodeSilent", "A"]);
    assert_eq!(posts[0].labels["node"], "pi-a");
    assert_eq!(posts[0].labels["severity"], "warning");
    assert_eq!(posts[1].annotations["stale"], "true");
    // Kept firing: endsAt lies ahead, three re-posts away.
    let hold = Duration::from_secs_f64(config().repost_interval_secs * 3.0);
    assert_eq!(posts[1].ends_at, super::alertmanager::rfc3339(late + hold));
    assert_eq!(posts[0].ends_at, super::alertmanager::rfc3339(late + hold));
    assert_eq!(gw.active_alerts(), 1);

    // Heard again: LoraNodeSilent ends at once, the alert is fresh again.
    let heard = late + Duration::from_secs(5);
    let handled = gw.handle(
        &received(encode(alert_frame(AlertState::Heartbeat, 2, ""), &key())),
        heard,
        Instant::now(),
    );
    assert_eq!(names(&handled.posts), ["LoraNodeSilent", "A"]);
    assert_eq!(
        handled.posts[0].ends_at,
        super::alertmanager::rfc3339(heard)
    );
    assert!(!handled.posts[1].annotations.contains_key("stale"));
    assert_eq!(
        handled.posts[1].ends_at,
        super::alertmanager::rfc3339(heard + timeout + hold)
    );
}

#[tokio::test(start_paused = true)]
async fn firing_sets_survive_a_gateway_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = SystemTime::now();
    {
        let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
        for (seq, name) in [(1, "A"), (2, "B")] {
            gw.handle(
                &received(encode(alert_frame(AlertState::Firing, seq, name), &key())),
                t0,
                Instant::now(),
            );
        }
        gw.handle(
            &received(encode(alert_frame(AlertState::Resolved, 3, "B"), &key())),
            t0,
            Instant::now(),
        );
        let (path, bytes) = gw.take_state_if_changed().expect("changed");
        nodewatch_lora::persist::write_atomic(&path, &bytes).expect("write");
        assert!(gw.take_state_if_changed().is_none(), "nothing new");
    }
    let gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    assert_eq!(gw.active_alerts(), 1);
    let later = t0 + Duration::from_secs(600);
    let posts = gw.startup_posts(later, Instant::now());
    assert_eq!(names(&posts), ["A"]);
    assert_eq!(posts[0].labels["node"], "pi-a");
    // startsAt is the original one; the timeout starts again at the restart.
    assert_eq!(posts[0].starts_at, super::alertmanager::rfc3339(t0));
    let timeout = Duration::from_secs_f64(config().node_timeout_secs);
    assert_eq!(
        posts[0].ends_at,
        super::alertmanager::rfc3339(
            later + timeout + Duration::from_secs_f64(config().repost_interval_secs * 3.0)
        )
    );
}

#[test]
fn a_corrupt_gateway_state_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("lora-gateway.json"), b"{not json").expect("write");
    let err = Gateway::new(&config(), keys(), dir.path()).expect_err("corrupt");
    assert!(err.contains("lora-gateway.json"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn replay_window_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frame = encode(alert_frame(AlertState::Firing, 10, "A"), &key());
    {
        let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
        assert_eq!(
            gw.handle(&received(frame.clone()), SystemTime::now(), Instant::now())
                .rejected,
            None
        );
        for seq in 11..90 {
            let hb = encode(alert_frame(AlertState::Heartbeat, seq, ""), &key());
            gw.handle(&received(hb), SystemTime::now(), Instant::now());
        }
        // What the run loop hands to its writer thread.
        let (path, bytes) = gw.take_replay_if_changed().expect("changed");
        nodewatch_lora::persist::write_atomic(&path, &bytes).expect("write");
        assert!(gw.take_replay_if_changed().is_none());
    }
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    assert_eq!(
        gw.handle(&received(frame), SystemTime::now(), Instant::now())
            .rejected,
        Some("replay")
    );
}

/// The gateway's acknowledgements spend its own budget: at EU868's 1 % of an hour
/// (36 s), as many 18-byte SF12 acknowledgements as fit, then none until the window
/// slides.
#[tokio::test(start_paused = true)]
async fn acknowledgements_spend_the_gateways_own_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let ack_airtime = time_on_air(&config().radio.modulation, frame::ACK_LEN);
    let fit = (Duration::from_secs(36).as_secs_f64() / ack_airtime.as_secs_f64()).floor() as u32;
    let mut acked = 0;
    for seq in 1..=fit + 5 {
        let hb = encode(alert_frame(AlertState::Heartbeat, seq, ""), &key());
        if gw
            .handle(&received(hb), SystemTime::now(), Instant::now())
            .ack
            .is_some()
        {
            acked += 1;
        }
    }
    assert_eq!(acked, fit, "ack airtime {ack_airtime:?}");
    tokio::time::advance(Duration::from_secs(3601)).await;
    let hb = encode(alert_frame(AlertState::Heartbeat, fit + 10, ""), &key());
    assert!(
        gw.handle(&received(hb), SystemTime::now(), Instant::now())
            .ack
            .is_some()
    );
}

#[test]
fn config_checks_name_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let short = dir.path().join("short.key");
    std::fs::write(&short, "abcd").expect("write");
    std::fs::set_permissions(&short, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut c = config();
    c.network_key_file = Some(short);
    assert!(
        c.validate(&[])
            .expect_err("short key")
            .contains("lora.network_key_file")
    );
    let c = config_with_key_file(dir.path());
    assert_eq!(c.validate(&[]), Ok(()));
    let long = "A".repeat(26);
    let e = c.validate(&[long]).expect_err("long name");
    assert!(e.contains("cannot be sent over LoRa"), "{e}");
    let mut c = config_with_key_file(dir.path());
    c.gateway = true;
    c.alertmanager_urls = vec!["https://am:9093".into()];
    assert!(
        c.validate(&[])
            .expect_err("https")
            .contains("lora.alertmanager_urls")
    );
}

#[test]
fn a_key_file_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_key_file(dir.path(), "lora.key", 0o644);
    let mut c = config();
    c.network_key_file = Some(path.clone());
    let e = c.keys().expect_err("0644");
    assert!(e.contains("chmod 600"), "{e}");
    assert!(e.contains("lora.network_key_file"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(c.keys().is_ok());
}

#[test]
fn a_key_file_owned_by_another_user_is_refused() {
    let path = std::path::Path::new("lora.key");
    let e = super::check_key_file("lora.network_key_file", path, 0o100600, 1001, 1000)
        .expect_err("owner");
    assert!(e.contains("lora.network_key_file"), "{e}");
    assert!(e.contains("uid 1001") && e.contains("uid 1000"), "{e}");
    assert_eq!(
        super::check_key_file("lora.network_key_file", path, 0o100600, 1000, 1000),
        Ok(())
    );
    // The mode is checked on the same metadata: group-readable is refused too.
    assert!(super::check_key_file("k", path, 0o100640, 1000, 1000).is_err());
}

#[test]
fn inline_keys_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inline: LoraConfig =
        toml::from_str(&format!("enabled = true\nnetwork_key = \"{KEY}\"\n")).expect("parse");
    let e = inline.validate(&[]).expect_err("inline network key");
    assert!(e.starts_with("lora.network_key:"), "{e}");
    assert!(!e.contains(KEY), "{e}");

    let mut node_inline: LoraConfig = toml::from_str(&format!(
        "enabled = true\ngateway = true\n[[nodes]]\nname = \"pi-a\"\nkey = \"{KEY}\"\n"
    ))
    .expect("parse");
    node_inline.network_key_file = config_with_key_file(dir.path()).network_key_file;
    let e = node_inline.validate(&[]).expect_err("inline node key");
    assert!(e.starts_with("lora.nodes[0].key (pi-a):"), "{e}");
}

#[test]
fn no_config_type_prints_a_key_in_debug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inline: LoraConfig = toml::from_str(&format!(
        "enabled = true\nnetwork_key = \"{KEY}\"\n[[nodes]]\nname = \"pi-a\"\nkey = \"{KEY}\"\n"
    ))
    .expect("parse");
    let loaded = config_with_key_file(dir.path()).keys().expect("keys");
    // Any 8 digits of the key would be a leak.
    for printed in [
        format!("{inline:?}"),
        format!("{loaded:?}"),
        format!("{:?}", keys()),
    ] {
        for window in KEY.as_bytes().windows(8) {
            let digits = std::str::from_utf8(window).expect("ascii");
            assert!(!printed.contains(digits), "{printed}");
        }
    }
}

#[test]
fn every_interval_is_bounded_with_an_error_naming_it() {
    assert_eq!(config().validate_intervals(), Ok(()));
    type Set = fn(&mut LoraConfig, f64);
    let settings: [(&str, Set); 4] = [
        ("lora.heartbeat_interval_secs", |c, v| {
            c.heartbeat_interval_secs = v
        }),
        ("lora.node_timeout_secs", |c, v| c.node_timeout_secs = v),
        ("lora.repost_interval_secs", |c, v| {
            c.repost_interval_secs = v
        }),
        ("lora.ack_timeout_secs", |c, v| c.ack_timeout_secs = Some(v)),
    ];
    for (name, set) in settings {
        for bad in [1e20, f64::INFINITY, -1.0, 0.0, f64::NAN, 1e-9] {
            let mut c = config();
            set(&mut c, bad);
            let e = c.validate_intervals().expect_err(name);
            assert!(e.starts_with(name), "{name} = {bad}: {e}");
            // check-config runs the same check, before anything else.
            assert!(c.validate(&[]).expect_err(name).starts_with(name));
        }
        let mut c = config();
        set(&mut c, 60.0);
        assert_eq!(c.validate_intervals(), Ok(()), "{name} = 60");
    }
    let mut c = config();
    c.duty_cycle_percent = Some(f64::NAN);
    assert!(
        c.validate_intervals()
            .expect_err("NaN")
            .starts_with("lora.duty_cycle_percent")
    );
    c = config();
    c.max_attempts = 1_000_000;
    assert!(
        c.validate_intervals()
            .expect_err("attempts")
            .starts_with("lora.max_attempts")
    );
}

/// Out of the gateway's range: an alert is sent `max_attempts` times, a heartbeat twice,
/// then both are given up and counted.
#[tokio::test(start_paused = true)]
async fn unacknowledged_frames_are_given_up_after_their_attempts() {
    use crate::alerts::Severity as S;
    use nodewatch_lora::radio::udp::UdpAir;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lora = config();
    lora.max_attempts = 3;
    lora.ack_timeout_secs = Some(1.0);
    synced_sequence(dir.path());
    let mut link = NodeLink::new(&lora, node_keys(), "pi-a", dir.path()).expect("link");
    // Nobody listens on the peer: every frame goes unacknowledged.
    let mut radio = UdpAir::bind(
        "127.0.0.1:0".parse().expect("addr"),
        vec!["127.0.0.1:9".parse().expect("addr")],
    )
    .await
    .expect("bind");
    link.heartbeat();
    link.update(&[alert("UnderVoltage", S::Critical, 1.0)]);
    let mut sent = 0;
    for _ in 0..20 {
        match link.send_next(&mut radio).await {
            Ok(Some(_)) => sent += 1,
            Ok(None) => {}
            Err(wait) if wait == Duration::MAX => break,
            Err(wait) => tokio::time::advance(wait.min(Duration::from_secs(600))).await,
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        link.expire_unacknowledged();
    }
    assert_eq!(sent, 3 + 2, "three alert attempts, two heartbeat attempts");
    assert_eq!(link.queued(), 0);
}

/// The acknowledgements' airtime is in the gateway's state file: a restart does not
/// hand it a fresh budget.
#[tokio::test(start_paused = true)]
async fn the_gateways_budget_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seq = 0;
    {
        let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
        loop {
            seq += 1;
            let hb = encode(alert_frame(AlertState::Heartbeat, seq, ""), &key());
            if gw
                .handle(&received(hb), SystemTime::now(), Instant::now())
                .ack
                .is_none()
            {
                break;
            }
        }
        let (path, bytes) = gw.take_state_if_changed().expect("changed");
        nodewatch_lora::persist::write_atomic(&path, &bytes).expect("write");
    }
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let hb = encode(alert_frame(AlertState::Heartbeat, seq + 1, ""), &key());
    assert!(
        gw.handle(&received(hb), SystemTime::now(), Instant::now())
            .ack
            .is_none(),
        "a restart must not refill the budget"
    );
}

/// A frame heard again is re-acknowledged at most three times: a replayer cannot
/// drain the gateway's budget with it.
#[tokio::test(start_paused = true)]
async fn duplicates_are_reacknowledged_a_few_times_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let frame = encode(alert_frame(AlertState::Firing, 7, "A"), &key());
    let acked: Vec<bool> = (0..10)
        .map(|_| {
            gw.handle(&received(frame.clone()), SystemTime::now(), Instant::now())
                .ack
                .is_some()
        })
        .collect();
    // The first hearing and three re-acknowledgements.
    assert_eq!(acked.iter().filter(|a| **a).count(), 4, "{acked:?}");
    assert!(acked[..4].iter().all(|a| *a), "{acked:?}");
    // Another frame is acknowledged as usual.
    let next = encode(alert_frame(AlertState::Firing, 8, "A"), &key());
    assert!(
        gw.handle(&received(next), SystemTime::now(), Instant::now())
            .ack
            .is_some()
    );
    let families = gw.metrics(&Default::default());
    let acks = families
        .iter()
        .find(|f| f.name() == "nodewatch_lora_acks_total")
        .expect("acks family");
    let limited = acks
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.value() == "rate_limited"))
        .expect("rate_limited");
    assert_eq!(limited.get_counter().get_value(), 6.0);
}

/// A sequence file at epoch 0, as a node that has talked to its gateway has.
fn synced_sequence(state_dir: &std::path::Path) {
    std::fs::write(
        state_dir.join("lora-sequence"),
        r#"{"epoch":0,"next_unused":0}"#,
    )
    .expect("write sequence");
}

/// A radio that keeps what is sent, and hears nothing.
#[derive(Debug, Default)]
struct Captured(Vec<Vec<u8>>);

impl nodewatch_lora::radio::Radio for Captured {
    async fn transmit(&mut self, frame: &[u8]) -> Result<(), nodewatch_lora::radio::RadioError> {
        self.0.push(frame.to_vec());
        Ok(())
    }

    async fn receive(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Received>, nodewatch_lora::radio::RadioError> {
        tokio::time::sleep(timeout).await;
        Ok(None)
    }

    fn describe(&self) -> String {
        "captured".into()
    }
}

/// Sends the node's next frame, hands it to the gateway when `deliver` (else it is
/// lost on the air), and the gateway's answer back to the node. Returns the frame
/// sent and what the gateway did with it.
async fn exchange(
    link: &mut NodeLink,
    gw: &mut Gateway,
    radio: &mut Captured,
    deliver: bool,
) -> (Frame, Option<super::gateway::Handled>) {
    let stamp = loop {
        match link.send_next(radio).await {
            Ok(Some((stamp, _))) => break stamp,
            Ok(None) => {}
            Err(wait) => {
                assert!(wait < Duration::from_secs(3600), "nothing to send");
                tokio::time::advance(wait).await;
            }
        }
    };
    let bytes = radio.0.pop().expect("a frame on the air");
    let sent = frame::decode(&bytes, &key()).expect("the node's frame verifies");
    if !deliver {
        return (sent, None);
    }
    let handled = gw.handle(&received(bytes), SystemTime::now(), Instant::now());
    if let Some(reply) = &handled.ack {
        link.receive(reply, stamp);
    }
    (sent, Some(handled))
}

#[tokio::test(start_paused = true)]
async fn a_node_without_its_sequence_file_asks_the_gateway_for_its_epoch() {
    use crate::alerts::Severity as S;
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let node_dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), gw_dir.path()).expect("gateway");
    let mut radio = Captured::default();
    let firing = [alert("UnderVoltage", S::Critical, 1.0)];
    let mut old_frames = Vec::new();
    {
        // A new node: no sequence file, so its first frame is a sync request.
        let mut link =
            NodeLink::new(&config(), node_keys(), "pi-a", node_dir.path()).expect("link");
        link.update(&firing);
        let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
        assert!(matches!(sent, Frame::SyncRequest(_)), "{sent:?}");
        let reply = handled.expect("delivered").ack.expect("a sync reply");
        assert!(
            matches!(frame::decode(&reply, &key()), Ok(Frame::SyncReply(r)) if r.next_epoch == 0)
        );
        for _ in 0..3 {
            let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
            assert_eq!(sent.stamp().0, 0, "epoch 0");
            assert_eq!(handled.expect("delivered").rejected, None);
            old_frames.push(radio.0.len());
            if link.queued() == 0 {
                link.heartbeat();
            }
        }
        assert_eq!(gw.active_alerts(), 1);
    }
    // The node loses its state: it syncs again and moves to epoch 1.
    std::fs::remove_file(node_dir.path().join("lora-sequence")).expect("lose it");
    let mut link = NodeLink::new(&config(), node_keys(), "pi-a", node_dir.path()).expect("link");
    link.update(&[]);
    link.update(&firing);
    let (sent, _) = exchange(&mut link, &mut gw, &mut radio, true).await;
    assert!(matches!(sent, Frame::SyncRequest(_)), "{sent:?}");
    let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
    assert_eq!(sent.stamp(), (1, 0), "{sent:?}");
    let handled = handled.expect("delivered");
    assert_eq!(handled.rejected, None, "the new epoch is accepted");
    assert!(handled.ack.is_some());
    // A frame of epoch 0 recorded off the air is a replay now.
    let recorded = encode(
        alert_frame(AlertState::Resolved, 1000, "UnderVoltage"),
        &key(),
    );
    assert_eq!(
        gw.handle(&received(recorded), SystemTime::now(), Instant::now())
            .rejected,
        Some("replay")
    );
    assert_eq!(gw.active_alerts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_frame_refused_as_a_replay_moves_the_node_to_the_next_epoch() {
    use crate::alerts::Severity as S;
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let node_dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), gw_dir.path()).expect("gateway");
    // The gateway has heard pi-a up to 500; the node's file was restored from an old
    // backup (sequence 0).
    let hb = encode(alert_frame(AlertState::Heartbeat, 500, ""), &key());
    gw.handle(&received(hb), SystemTime::now(), Instant::now());
    synced_sequence(node_dir.path());
    let mut link = NodeLink::new(&config(), node_keys(), "pi-a", node_dir.path()).expect("link");
    let mut radio = Captured::default();
    link.update(&[alert("UnderVoltage", S::Critical, 1.0)]);
    let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
    assert_eq!(sent.stamp(), (0, 0));
    let handled = handled.expect("delivered");
    assert_eq!(handled.rejected, Some("replay"));
    assert!(
        matches!(frame::decode(handled.ack.as_deref().expect("reply"), &key()), Ok(Frame::SyncReply(r)) if r.next_epoch == 1)
    );
    // The same alert, renumbered in epoch 1, gets through.
    let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
    assert_eq!(sent.stamp(), (1, 0));
    assert_eq!(handled.expect("delivered").rejected, None);
    assert_eq!(gw.active_alerts(), 1);
    // The node's sequence file holds the new epoch.
    let saved = std::fs::read_to_string(node_dir.path().join("lora-sequence")).expect("read");
    assert!(saved.contains("\"epoch\":1"), "{saved}");
}

#[tokio::test(start_paused = true)]
async fn heartbeat_digest_repairs_given_up_frames() {
    use crate::alerts::Severity as S;
    let gw_dir = tempfile::tempdir().expect("tempdir");
    let node_dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), gw_dir.path()).expect("gateway");
    synced_sequence(node_dir.path());
    let mut lora = config();
    lora.max_attempts = 1;
    let mut link = NodeLink::new(&lora, node_keys(), "pi-a", node_dir.path()).expect("link");
    let mut radio = Captured::default();

    // A and B fire; B's frame is lost and given up (the gateway was out of reach).
    link.update(&[alert("A", S::Critical, 1.0)]);
    exchange(&mut link, &mut gw, &mut radio, true).await;
    link.update(&[alert("A", S::Critical, 1.0), alert("B", S::Warning, 2.0)]);
    let (sent, _) = exchange(&mut link, &mut gw, &mut radio, false).await;
    assert!(matches!(&sent, Frame::Alert(a) if a.alertname == "B"));
    tokio::time::advance(Duration::from_secs(60)).await;
    link.expire_unacknowledged();
    assert_eq!(link.queued(), 0, "given up");
    assert_eq!(gw.active_alerts(), 1);

    // The next heartbeat's digest differs: the ack asks for a resync, the node
    // announces A and B again, and a second heartbeat agrees.
    link.heartbeat();
    let (sent, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
    assert!(matches!(&sent, Frame::Alert(a) if a.state == AlertState::Heartbeat));
    let ack = frame::decode(&handled.expect("delivered").ack.expect("ack"), &key());
    assert!(matches!(ack, Ok(Frame::Ack(a)) if a.resync), "{ack:?}");
    let mut posted = Vec::new();
    let mut last_ack = None;
    while link.queued() > 0 {
        let (_, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
        let handled = handled.expect("delivered");
        posted.extend(handled.posts.iter().map(|p| p.labels["alertname"].clone()));
        last_ack = handled.ack;
    }
    assert!(posted.contains(&"B".to_string()), "{posted:?}");
    assert_eq!(gw.active_alerts(), 2);
    let ack = frame::decode(&last_ack.expect("ack"), &key());
    assert!(
        matches!(ack, Ok(Frame::Ack(a)) if !a.resync),
        "in sync: {ack:?}"
    );

    // A's resolution is lost: the gateway keeps A until a resync shows that the
    // alerts the node announced again (B) are its whole set.
    link.update(&[alert("B", S::Warning, 2.0)]);
    exchange(&mut link, &mut gw, &mut radio, false).await;
    tokio::time::advance(Duration::from_secs(60)).await;
    link.expire_unacknowledged();
    link.heartbeat();
    let mut resolved = Vec::new();
    while link.queued() > 0 {
        let (_, handled) = exchange(&mut link, &mut gw, &mut radio, true).await;
        for p in handled.expect("delivered").posts {
            if p.ends_at <= super::alertmanager::rfc3339(SystemTime::now()) {
                resolved.push(p.labels["alertname"].clone());
            }
        }
    }
    assert_eq!(resolved, ["A"]);
    assert_eq!(gw.active_alerts(), 1);
}

#[test]
fn a_frame_signed_with_another_nodes_key_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let pi_b = NodeId::from_name("pi-b");
    // pi-b fires, signed with its own key (derived from the master).
    let mut b_firing = alert_frame(AlertState::Firing, 1, "Down");
    b_firing.node = pi_b;
    let b_key = master().node_key(pi_b);
    let handled = gw.handle(
        &received(encode(b_firing, &b_key)),
        SystemTime::now(),
        Instant::now(),
    );
    assert_eq!(handled.rejected, None);
    // pi-a's key (stolen) signs "nothing fires on pi-b": refused, counted, no change.
    let mut forged = alert_frame(AlertState::Heartbeat, 2, "");
    forged.node = pi_b;
    forged.value = 0.0;
    forged.digest = firing_digest([]);
    let handled = gw.handle(
        &received(encode(forged, &key())),
        SystemTime::now(),
        Instant::now(),
    );
    assert_eq!(handled.rejected, Some("mac"));
    assert!(handled.ack.is_none() && handled.posts.is_empty());
    assert_eq!(gw.active_alerts(), 1);
}

#[test]
fn derive_key_writes_the_nodes_key_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let master_path = write_key_file(dir.path(), "master.key", 0o600);
    let out = dir.path().join("pi-a.key");
    let said = super::derive_key_file(&master_path, "pi-a", &out).expect("derive");
    assert!(said.contains("pi-a") && said.contains(&NodeId::from_name("pi-a").to_string()));
    let written = std::fs::read_to_string(&out).expect("read");
    assert_eq!(
        written.trim(),
        master().node_key_hex(NodeId::from_name("pi-a"))
    );
    assert!(!said.contains(written.trim()), "the key is not printed");
    let mode = std::fs::metadata(&out).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The node loads it as its key, and the gateway verifies what it signs.
    let node = LoraConfig {
        network_key_file: Some(out.clone()),
        ..config()
    };
    let own = node
        .keys()
        .expect("node keys")
        .key_of(NodeId::from_name("pi-a"))
        .expect("own key");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let f = encode(alert_frame(AlertState::Firing, 1, "A"), &own);
    assert_eq!(
        gw.handle(&received(f), SystemTime::now(), Instant::now())
            .rejected,
        None
    );
    // A master readable by others is refused, naming the option.
    let loose = write_key_file(dir.path(), "loose.key", 0o644);
    let e = super::derive_key_file(&loose, "pi-a", &out).expect_err("0644");
    assert!(e.starts_with("--master") && e.contains("chmod 600"), "{e}");
    let e = super::derive_key_file(&master_path, " ", &out).expect_err("no name");
    assert!(e.starts_with("--node"), "{e}");
}

/// A frame too far ahead is refused and answered with the next epoch; sync requests
/// (or refused frames) replayed over and over get 20 answers an hour, no more.
#[tokio::test(start_paused = true)]
async fn sync_replies_answer_too_far_frames_and_are_rate_limited() {
    use nodewatch_lora::frame::SyncRequest;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Gateway::new(&config(), keys(), dir.path()).expect("gateway");
    let now = SystemTime::now();
    gw.handle(
        &received(encode(alert_frame(AlertState::Firing, 10, "A"), &key())),
        now,
        Instant::now(),
    );
    let far = nodewatch_lora::replay::MAX_STEP + 11;
    let handled = gw.handle(
        &received(encode(alert_frame(AlertState::Resolved, far, "A"), &key())),
        now,
        Instant::now(),
    );
    assert_eq!(handled.rejected, Some("too_far"));
    let reply = frame::decode(handled.ack.as_deref().expect("a sync reply"), &key());
    assert!(
        matches!(reply, Ok(Frame::SyncReply(r)) if r.answers == (0, far) && r.next_epoch == 1),
        "{reply:?}"
    );
    assert_eq!(gw.active_alerts(), 1, "a refused frame changes nothing");

    // One recorded sync request, replayed: 19 more answers this hour (20 in all).
    let request = Frame::SyncRequest(SyncRequest {
        node: NodeId::from_name("pi-a"),
        nonce: (1, 2),
    })
    .encode(&key())
    .expect("encode");
    let answered = (0..50)
        .filter(|_| {
            gw.handle(&received(request.clone()), now, Instant::now())
                .ack
                .is_some()
        })
        .count();
    assert_eq!(answered, 19);
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(
        gw.handle(&received(request), now, Instant::now())
            .ack
            .is_some(),
        "a new hour, a new answer"
    );
}
