//! A real Prometheus scrapes the agent, and queries return the fixture's values.

mod common;

use std::time::Duration;

use common::{fixture_args, strs};
use nodewatch_tests::{Agent, Prometheus, fixture};

#[test]
fn prometheus_scrapes_the_agent() {
    let root = fixture("pi");
    let args = fixture_args(&root, &fixture("textfile"));
    let agent = Agent::start(&strs(&args)).expect("agent");
    agent
        .metrics_after_first_collection(&["loadavg", "cpu", "pi"])
        .expect("metrics");
    let prometheus = Prometheus::start(&[&agent.address]).expect("prometheus");

    let wait = Duration::from_secs(40);
    let up = prometheus
        .wait_for("up{job=\"node\"} == 1", wait)
        .expect("target up");
    assert_eq!(up.len(), 1);

    let loadavg = std::fs::read_to_string(root.join("proc/loadavg")).expect("loadavg");
    let expected_load1: f64 = loadavg
        .split_whitespace()
        .next()
        .expect("field")
        .parse()
        .expect("number");
    let load1 = prometheus.wait_for("node_load1", wait).expect("node_load1");
    assert_eq!(load1[0].1, expected_load1);

    // cpu0's idle jiffies from the fixture's /proc/stat, in seconds (USER_HZ = 100).
    let stat = std::fs::read_to_string(root.join("proc/stat")).expect("stat");
    let cpu0 = stat
        .lines()
        .find(|l| l.starts_with("cpu0 "))
        .expect("cpu0 line");
    let idle_jiffies: f64 = cpu0
        .split_whitespace()
        .nth(4)
        .expect("idle")
        .parse()
        .expect("number");
    let idle = prometheus
        .wait_for("node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}", wait)
        .expect("cpu");
    assert!(
        (idle[0].1 - idle_jiffies / 100.0).abs() < 1e-6,
        "{} vs {}",
        idle[0].1,
        idle_jiffies / 100.0
    );
    let modes = prometheus
        .query("count(node_cpu_seconds_total)")
        .expect("count");
    assert!(modes[0].1 >= 32.0, "4 CPUs x 8 modes, got {}", modes[0].1);

    let under_voltage = prometheus
        .wait_for("nodewatch_pi_throttled{condition=\"under_voltage\"}", wait)
        .expect("pi throttled");
    assert_eq!(under_voltage[0].1, 1.0);
    let occurred = prometheus
        .wait_for(
            "nodewatch_pi_throttled_occurred{condition=\"throttled\"}",
            wait,
        )
        .expect("pi throttled occurred");
    assert_eq!(occurred[0].1, 1.0);
}
