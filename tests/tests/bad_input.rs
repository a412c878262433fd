//! Bad input never takes the agent down: broken textfiles, missing and unreadable
//! procfs/sysfs files, and collectors that really hang (FIFOs with no writer).

mod common;

use std::time::{Duration, Instant};

use common::{agent_fixture_args, copy_tree, strs};
use nodewatch_tests::{Agent, fixture, parse_samples};

fn success(body: &str, collector: &str) -> Option<f64> {
    parse_samples(body)
        .get(&format!(
            "node_scrape_collector_success{{collector=\"{collector}\"}}"
        ))
        .copied()
}

#[test]
fn malformed_textfile_sets_error_and_good_files_are_served() {
    let args = agent_fixture_args(&fixture("pi"), &fixture("textfile-bad"));
    let agent = Agent::start(&strs(&args)).expect("start");
    let body = agent
        .metrics_after_first_collection(&["textfile", "loadavg"])
        .expect("metrics");
    let samples = parse_samples(&body);
    assert_eq!(
        samples.get("node_textfile_scrape_error"),
        Some(&1.0),
        "{body}"
    );
    assert_eq!(success(&body, "textfile"), Some(1.0));
    assert!(
        body.contains("intmax_builder_container_running"),
        "good files are still served:\n{body}"
    );
    assert!(
        agent.child.log().contains(".prom"),
        "the bad file is named in the log:\n{}",
        agent.child.log()
    );
}

#[test]
fn missing_and_unreadable_files_fail_only_their_collector() {
    let (_dir, root) = copy_tree(&fixture("pi"));
    std::fs::remove_file(root.join("proc/meminfo")).expect("rm meminfo");
    // A directory where a file is expected: reading fails with EISDIR (as root, mode
    // bits cannot make a file unreadable).
    std::fs::remove_file(root.join("proc/stat")).expect("rm stat");
    std::fs::create_dir(root.join("proc/stat")).expect("mkdir stat");
    // A sysfs attribute with garbage in it.
    std::fs::write(
        root.join("sys/devices/platform/soc/soc:firmware/get_throttled"),
        "zz\n",
    )
    .expect("write");
    let args = agent_fixture_args(&root, &fixture("textfile"));
    let agent = Agent::start(&strs(&args)).expect("start");
    let body = agent
        .metrics_after_first_collection(&["meminfo", "stat", "pi", "loadavg"])
        .expect("metrics");
    assert_eq!(success(&body, "meminfo"), Some(0.0));
    assert_eq!(success(&body, "stat"), Some(0.0));
    assert_eq!(success(&body, "pi"), Some(0.0));
    assert_eq!(success(&body, "loadavg"), Some(1.0));
    assert!(!body.contains("node_memory_MemTotal_bytes"));
    assert!(!body.contains("node_boot_time_seconds"));
    assert!(
        !body.contains("nodewatch_pi_throttled{"),
        "no made-up throttling values:\n{body}"
    );
    assert!(body.contains("node_load1 "));
    let log = agent.child.log();
    assert!(
        log.contains("stat") && log.contains("Is a directory"),
        "{log}"
    );
    assert!(log.contains("get_throttled"), "{log}");
    assert!(agent.child.is_running());
}

#[test]
fn hung_collectors_do_not_hold_scrapes() {
    let (_dir, root) = copy_tree(&fixture("pi"));
    // /proc/loadavg as a FIFO with no writer: reading it blocks forever.
    std::fs::remove_file(root.join("proc/loadavg")).expect("rm loadavg");
    nix::unistd::mkfifo(&root.join("proc/loadavg"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    // And a FIFO named like a textfile, which would hang node_exporter's textfile collector.
    let textfiles = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        fixture("textfile/intmax_builder.prom"),
        textfiles.path().join("intmax_builder.prom"),
    )
    .expect("copy");
    nix::unistd::mkfifo(
        &textfiles.path().join("x.prom"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .expect("mkfifo");
    let config = textfiles.path().join("agent.toml");
    std::fs::write(&config, "[collectors]\ntimeout_secs = 1\n").expect("config");
    let mut args = agent_fixture_args(&root, textfiles.path());
    args.push(format!("--config={}", config.display()));
    let agent = Agent::start(&strs(&args)).expect("start");
    let body = agent
        .metrics_after_first_collection(&["cpu", "textfile"])
        .expect("metrics");
    assert!(body.contains("intmax_builder_container_running"), "{body}");
    assert_eq!(
        parse_samples(&body).get("node_textfile_scrape_error"),
        Some(&1.0)
    );
    // The loadavg collector times out after 1 s and is marked failed.
    let mut last = String::new();
    let marked = nodewatch_tests::wait_until(Duration::from_secs(5), || {
        last = agent.metrics().unwrap_or_default();
        success(&last, "loadavg") == Some(0.0)
    });
    assert!(marked, "{last}");
    // Scrapes stay fast while the collector is stuck.
    for _ in 0..20 {
        let started = Instant::now();
        let body = agent.metrics().expect("scrape");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "scrape took {:?}",
            started.elapsed()
        );
        assert!(body.contains("node_cpu_seconds_total"));
        assert!(!body.contains("node_load1 "));
    }
    let log = agent.child.log();
    assert!(
        log.contains("timed out") || log.contains("still running"),
        "{log}"
    );
    assert!(log.contains("x.prom"), "{log}");
}
