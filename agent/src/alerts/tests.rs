//! Rule sets, `for` handling and evaluation on fixture-like families.

use super::*;

fn families(builder_ready: f64, root_avail: f64, temp: f64) -> Vec<MetricFamily> {
    let mut sink = MetricSink::new();
    sink.gauge(
        "intmax_builder_ready",
        "r",
        &[("node", "pi-01")],
        builder_ready,
    );
    sink.gauge(
        "intmax_builder_container_running",
        "c",
        &[("node", "pi-01")],
        1.0,
    );
    sink.gauge("intmax_builder_health_ok", "h", &[("node", "pi-01")], 1.0);
    for (mp, fs, dev, size, avail) in [
        ("/", "ext4", "/dev/mmcblk0p2", 100.0, root_avail),
        ("/boot/firmware", "vfat", "/dev/mmcblk0p1", 100.0, 70.0),
        ("/run", "tmpfs", "tmpfs", 100.0, 1.0),
    ] {
        let labels = [("device", dev), ("fstype", fs), ("mountpoint", mp)];
        sink.gauge("node_filesystem_size_bytes", "s", &labels, size);
        sink.gauge("node_filesystem_avail_bytes", "a", &labels, avail);
    }
    sink.gauge(
        "node_thermal_zone_temp",
        "t",
        &[("type", "cpu-thermal"), ("zone", "0")],
        temp,
    );
    for condition in [
        "under_voltage",
        "freq_capped",
        "throttled",
        "soft_temp_limit",
    ] {
        sink.gauge(
            "nodewatch_pi_throttled",
            "p",
            &[("condition", condition)],
            0.0,
        );
    }
    sink.gauge("node_memory_MemTotal_bytes", "m", &[], 4e9);
    sink.gauge("node_memory_MemAvailable_bytes", "m", &[], 2e9);
    sink.gauge(
        "node_scrape_collector_success",
        "s",
        &[("collector", "cpu")],
        1.0,
    );
    sink.into_families()
}

fn run(evaluator: &mut Evaluator, fams: &[MetricFamily], now: Instant) -> Vec<Transition> {
    let mut set = Families::new();
    set.extend(fams);
    evaluator.evaluate(&set, now)
}

fn defaults() -> Evaluator {
    Evaluator::new(compile(&AlertsConfig::default()).expect("defaults compile"))
}

#[test]
fn healthy_node_fires_nothing() {
    let mut e = defaults();
    let t0 = Instant::now();
    for s in 0..400 {
        let out = run(
            &mut e,
            &families(1.0, 50.0, 55.0),
            t0 + Duration::from_secs(s),
        );
        assert!(out.is_empty(), "{out:?}");
    }
    assert!(e.firing().is_empty());
    let metrics = e.metrics();
    assert_eq!(metrics[0].name(), "nodewatch_alert_firing");
    assert_eq!(metrics[0].get_metric().len(), default_rules().len());
}

#[test]
fn for_goes_pending_then_firing_then_resolves() {
    let mut e = defaults();
    let t0 = Instant::now();
    let down = families(0.0, 50.0, 55.0);
    assert!(run(&mut e, &down, t0).is_empty(), "pending, not firing");
    assert!(run(&mut e, &down, t0 + Duration::from_secs(59)).is_empty());
    assert!(e.firing().is_empty());
    let out = run(&mut e, &down, t0 + Duration::from_secs(60));
    assert_eq!(out.len(), 1, "{out:?}");
    let Transition::Firing(alert) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(alert.alertname, "BuilderNotReady");
    assert_eq!(alert.severity, Severity::Critical);
    assert_eq!(alert.summary, "Builder on pi-01 is not ready");
    assert_eq!(alert.labels["node"], "pi-01");
    assert!(
        run(&mut e, &down, t0 + Duration::from_secs(61)).is_empty(),
        "fires once"
    );
    assert_eq!(e.firing().len(), 1);
    let firing = e.metrics()[0]
        .get_metric()
        .iter()
        .filter(|m| m.get_gauge().get_value() == 1.0)
        .count();
    assert_eq!(firing, 1);
    let out = run(
        &mut e,
        &families(1.0, 50.0, 55.0),
        t0 + Duration::from_secs(62),
    );
    assert!(matches!(&out[..], [Transition::Resolved(a)] if a.alertname == "BuilderNotReady"));
    assert!(e.firing().is_empty());
}

#[test]
fn a_blip_shorter_than_for_never_fires() {
    let mut e = defaults();
    let t0 = Instant::now();
    run(&mut e, &families(0.0, 50.0, 55.0), t0);
    let out = run(
        &mut e,
        &families(1.0, 50.0, 55.0),
        t0 + Duration::from_secs(30),
    );
    assert!(out.is_empty(), "a pending alert resolves silently");
    // The clock restarts on the next occurrence.
    run(
        &mut e,
        &families(0.0, 50.0, 55.0),
        t0 + Duration::from_secs(40),
    );
    assert!(
        run(
            &mut e,
            &families(0.0, 50.0, 55.0),
            t0 + Duration::from_secs(80)
        )
        .is_empty()
    );
    assert_eq!(
        run(
            &mut e,
            &families(0.0, 50.0, 55.0),
            t0 + Duration::from_secs(100)
        )
        .len(),
        1
    );
}

#[test]
fn disk_rules_ignore_tmpfs_and_render_the_value() {
    let mut e = defaults();
    let t0 = Instant::now();
    // Root 95 % full: both disk rules; /run (tmpfs, 99 %) is ignored.
    let full = families(1.0, 5.0, 55.0);
    run(&mut e, &full, t0);
    let out = run(&mut e, &full, t0 + Duration::from_secs(300));
    let names: Vec<_> = out
        .iter()
        .map(|t| match t {
            Transition::Firing(a) => (a.alertname.as_str(), a.labels["mountpoint"].as_str()),
            Transition::Resolved(a) => panic!("{a:?}"),
        })
        .collect();
    assert_eq!(names, [("DiskAlmostFull", "/"), ("DiskFull", "/")]);
    let firing = e.firing();
    assert_eq!(firing[0].alertname, "DiskFull", "critical first");
    assert_eq!(firing[0].description, "/ (/dev/mmcblk0p2) is 95% full.");
    assert_eq!(firing[0].summary, "Disk / is more than 90% full");
}

#[test]
fn temperature_fires_with_its_value() {
    let mut e = defaults();
    let t0 = Instant::now();
    run(&mut e, &families(1.0, 50.0, 82.5), t0);
    let out = run(
        &mut e,
        &families(1.0, 50.0, 82.5),
        t0 + Duration::from_secs(60),
    );
    let [Transition::Firing(a)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        a.description,
        "The SoC is at 82.5 °C; it throttles at 85 °C."
    );
}

#[test]
fn missing_families_fire_nothing() {
    // A laptop: no builder, no Pi families.
    let mut e = defaults();
    let t0 = Instant::now();
    let out = run(&mut e, &[], t0 + Duration::from_secs(1000));
    assert!(out.is_empty());
}

fn rule(name: &str, expr: &str, severity: Severity) -> RuleConfig {
    RuleConfig::new(name, expr, 0, severity, "", "")
}

#[test]
fn overrides_disables_and_extra_rules() {
    let config = AlertsConfig {
        disable: vec!["UnderVoltage".into()],
        rules: vec![
            rule(
                "SocTemperatureHigh",
                "node_thermal_zone_temp > 70",
                Severity::Critical,
            ),
            rule("Custom", "up == 0", Severity::Info),
        ],
        ..AlertsConfig::default()
    };
    let rules = effective_rules(&config).expect("rules");
    let names: Vec<_> = rules.iter().map(|r| r.name.as_str()).collect();
    assert!(!names.contains(&"UnderVoltage"));
    assert_eq!(names.last(), Some(&"Custom"));
    let soc = rules
        .iter()
        .find(|r| r.name == "SocTemperatureHigh")
        .expect("soc");
    assert_eq!(soc.expr.get_ref(), "node_thermal_zone_temp > 70");
    assert_eq!(rules.len(), default_rules().len());

    let only_custom = AlertsConfig {
        default_rules: false,
        rules: vec![rule("Custom", "up == 0", Severity::Info)],
        ..AlertsConfig::default()
    };
    assert_eq!(effective_rules(&only_custom).expect("rules").len(), 1);

    let bad_disable = AlertsConfig {
        disable: vec!["Nope".into()],
        ..AlertsConfig::default()
    };
    assert!(
        effective_rules(&bad_disable)
            .expect_err("unknown")
            .message
            .contains("built-in")
    );
    let twice = AlertsConfig {
        rules: vec![
            rule("A", "up", Severity::Info),
            rule("A", "up", Severity::Info),
        ],
        ..AlertsConfig::default()
    };
    assert!(effective_rules(&twice).is_err());
    let bad_name = AlertsConfig {
        rules: vec![rule("1bad", "up", Severity::Info)],
        ..AlertsConfig::default()
    };
    assert!(effective_rules(&bad_name).is_err());
}

#[test]
fn compile_errors_name_rule_key_and_column() {
    let config = AlertsConfig {
        rules: vec![rule("Broken", "up{job=\"a\" > 1", Severity::Info)],
        ..AlertsConfig::default()
    };
    let e = compile(&config).expect_err("broken");
    assert_eq!(
        (e.rule.as_str(), e.key, e.column),
        ("Broken", "expr", Some(12))
    );
    let mut r = rule("T", "up", Severity::Info);
    r.summary = "{{ .Labels.x }}".into();
    let e = CompiledRule::compile(&r).expect_err("template");
    assert_eq!(e.key, "summary");
}

#[test]
fn collector_failure_rule_sees_synthesised_success() {
    use crate::collectors;
    let snapshot = Snapshot::new(vec![(
        collectors::spec("loadavg").expect("spec"),
        Duration::from_secs(2),
    )]);
    let bus = Arc::new(AlertBus::default());
    bus.show_in_health(&snapshot);
    let config = AlertsConfig {
        default_rules: false,
        rules: vec![rule(
            "CollectorFailing",
            "node_scrape_collector_success == 0",
            Severity::Warning,
        )],
        ..AlertsConfig::default()
    };
    let mut e = Evaluator::new(compile(&config).expect("compile"));
    let t0 = Instant::now();
    assert!(
        evaluate_snapshot(&mut e, &snapshot, &bus, t0).is_empty(),
        "not collected yet"
    );
    snapshot.store_failure(0, "no such file".into(), true, Duration::from_millis(1));
    assert!(
        evaluate_snapshot(&mut e, &snapshot, &bus, t0).is_empty(),
        "no data on this machine is not a failure"
    );
    snapshot.store_failure(0, "boom".into(), false, Duration::from_millis(1));
    let out = evaluate_snapshot(&mut e, &snapshot, &bus, t0 + Duration::from_secs(1));
    assert!(matches!(&out[..], [Transition::Firing(a)] if a.labels["collector"] == "loadavg"));
    assert_eq!(bus.alerts().len(), 1);
    let health = nodewatch_http::MetricsSource::health(&snapshot);
    assert_eq!(health.alerts[0]["alertname"], "CollectorFailing");
    assert_eq!(health.alerts[0]["severity"], "warning");
    let body = nodewatch_http::MetricsSource::exposition(&snapshot);
    let text = String::from_utf8_lossy(&body.text()).into_owned();
    assert!(
        text.contains(
            "nodewatch_alert_firing{alertname=\"CollectorFailing\",severity=\"warning\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_fires_with_paused_time() {
    use crate::collectors;
    let snapshot = Arc::new(Snapshot::new(vec![(
        collectors::spec("loadavg").expect("spec"),
        Duration::from_secs(2),
    )]));
    let bus = Arc::new(AlertBus::default());
    let mut sink = MetricSink::new();
    sink.gauge("intmax_builder_ready", "r", &[("node", "pi")], 0.0);
    snapshot.store_success(0, sink.into_families(), Duration::from_millis(1));
    let mut config = crate::config::Config::default();
    config.alerts.default_rules = false;
    config.alerts.rules = vec![RuleConfig::new(
        "BuilderNotReady",
        "intmax_builder_ready == 0",
        10,
        Severity::Critical,
        "",
        "",
    )];
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = spawn(&config.alerts, snapshot.clone(), bus.clone(), stop_rx).expect("enabled");
    tokio::time::sleep(Duration::from_millis(9_500)).await;
    assert!(bus.alerts().is_empty(), "still pending at 9.5 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(bus.alerts().len(), 1, "firing after 10 s");
    let _ = stop_tx.send(true);
    let _ = task.await;
}
