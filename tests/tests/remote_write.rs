//! remote_write against a real Prometheus 2.42 started with
//! `--web.enable-remote-write-receiver`: labels, an outage of 60 s, a SIGKILL during
//! an outage, the buffer's cap, a full disk (a 64 KiB tmpfs: the test runs as root, as
//! tests/run.sh does) and a receiver that refuses.
//!
//! Every sample set the agent pushes carries its own count of sets made before it
//! (`nodewatch_remote_write_sample_sets_total` = 0, 1, 2, … per run), so "every set
//! arrived" is "the pushed values of that series have no gap".

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use nodewatch_tests::{Agent, Prometheus, free_port, http, parse_samples, wait_until};

/// The series whose values count the sets.
const SETS: &str = "nodewatch_remote_write_sample_sets_total";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Prometheus receiving remote writes on a port of its own, stopped and started
/// again on that port with the same TSDB.
struct Receiver {
    dir: tempfile::TempDir,
    address: String,
    prometheus: Option<Prometheus>,
}

impl Receiver {
    fn new() -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").unwrap();
        Receiver {
            dir,
            address: format!("127.0.0.1:{}", free_port()),
            prometheus: None,
        }
    }

    fn started() -> Receiver {
        let mut receiver = Receiver::new();
        receiver.start();
        receiver
    }

    fn start(&mut self) {
        self.prometheus = Some(
            Prometheus::start_at(
                &self.dir.path().join("prometheus.yml"),
                &self.dir.path().join("tsdb"),
                &["--web.enable-remote-write-receiver"],
                &self.address,
            )
            .unwrap(),
        );
    }

    fn stop(&mut self) {
        self.prometheus = None;
    }

    fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.address)
    }

    fn prometheus(&self) -> &Prometheus {
        self.prometheus.as_ref().unwrap()
    }

    /// The raw samples `(unix seconds, value)` of the one series `selector` matches,
    /// over the last 15 minutes.
    fn raw(&self, selector: &str) -> Vec<(f64, f64)> {
        let expr = format!("{selector}[15m]");
        let mut response = http()
            .get(format!("http://{}/api/v1/query", self.address))
            .query("query", &expr)
            .call()
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(body["status"], "success", "{expr}: {body}");
        let result = body["data"]["result"].as_array().unwrap();
        assert!(result.len() <= 1, "{expr} matched several series: {body}");
        result
            .iter()
            .flat_map(|series| series["values"].as_array().unwrap().iter())
            .map(|pair| {
                (
                    pair[0].as_f64().unwrap(),
                    pair[1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until a sample of `selector` newer than `after` (unix seconds) has
    /// arrived; the agent sends oldest first, so everything before it is in.
    fn wait_past(&self, selector: &str, after: f64, timeout: Duration) -> Vec<(f64, f64)> {
        let mut samples = Vec::new();
        let arrived = wait_until(timeout, || {
            samples = self.raw(selector);
            samples.last().is_some_and(|(t, _)| *t > after)
        });
        assert!(
            arrived,
            "no sample of {selector} after {after} within {timeout:?}; have {} samples, last {:?}",
            samples.len(),
            samples.last()
        );
        samples
    }
}

/// An agent configuration pushing to `url`, with its state in `dir`.
fn agent_config(dir: &Path, node: &str, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "node_name = \"{node}\"\nstate_dir = \"{}\"\n[remote_write]\nurl = \"{url}\"\n\
             interval_secs = 1\nsend_interval_secs = 1\n{extra}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn start_agent(config: &Path) -> Agent {
    Agent::start(&["--config", config.to_str().unwrap()]).unwrap()
}

fn agent_value(agent: &Agent, series: &str) -> f64 {
    let body = agent.metrics().unwrap();
    *parse_samples(&body)
        .get(series)
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{body}"))
}

/// Asserts that the values are `first, first + 1, …` (no set missing, none twice),
/// with timestamps increasing.
fn assert_contiguous(samples: &[(f64, f64)], first: f64, what: &str) {
    assert!(!samples.is_empty(), "{what}: no samples");
    for (i, (t, v)) in samples.iter().enumerate() {
        assert_eq!(
            *v,
            first + i as f64,
            "{what}: sample {i} at {t} should count {} sets; samples: {samples:?}",
            first + i as f64
        );
    }
    assert!(
        samples.windows(2).all(|w| w[0].0 < w[1].0),
        "{what}: timestamps not increasing: {samples:?}"
    );
}

#[test]
fn samples_arrive_with_labels_and_a_60s_outage_loses_nothing() {
    let mut receiver = Receiver::started();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_config(
        dir.path(),
        "pi-push",
        &receiver.write_url(),
        "",
    ));
    let series = receiver
        .prometheus()
        .wait_for("node_load1", Duration::from_secs(30))
        .unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].0,
        serde_json::json!({"__name__": "node_load1", "job": "node", "instance": "pi-push", "node": "pi-push"})
    );
    // The server's NodeDown rule for pushing nodes keys on build_info's job and node.
    let build = receiver
        .prometheus()
        .wait_for(
            "nodewatch_build_info{job=\"node\",instance=\"pi-push\",node=\"pi-push\"}",
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(build.len(), 1);
    std::thread::sleep(Duration::from_secs(2));

    let outage_start = unix_now();
    receiver.stop();
    std::thread::sleep(Duration::from_secs(60));
    let outage_end = unix_now();
    assert!(agent.child.is_running());
    assert!(
        agent_value(
            &agent,
            "nodewatch_remote_write_errors_total{reason=\"network\"}"
        ) > 0.0
    );
    let pending = agent_value(&agent, "nodewatch_remote_write_pending_samples");
    assert!(pending > 0.0, "nothing buffered during the outage");
    receiver.start();

    let selector = format!("{SETS}{{instance=\"pi-push\"}}");
    let samples = receiver.wait_past(&selector, outage_end + 1.0, Duration::from_secs(60));
    assert_contiguous(&samples, 0.0, "one run across a 60 s outage");
    let during = samples
        .iter()
        .filter(|(t, _)| *t > outage_start && *t < outage_end)
        .count();
    // One set a second (a blocking thread's fsync may delay a tick a little).
    assert!(
        during >= 55,
        "only {during} sets made during the 60 s outage arrived: {samples:?}"
    );
    // The agent's own figure: every set it made up to now was sent, none dropped.
    assert_eq!(
        agent_value(
            &agent,
            "nodewatch_remote_write_samples_total{result=\"dropped\"}"
        ),
        0.0
    );
}

#[test]
fn sigkill_during_an_outage_loses_nothing_buffered() {
    let mut receiver = Receiver::started();
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path(), "pi-kill", &receiver.write_url(), "");
    let mut first = start_agent(&config);
    let selector = format!("{SETS}{{instance=\"pi-kill\"}}");
    receiver.wait_past(&selector, 0.0, Duration::from_secs(30));
    receiver.stop();
    std::thread::sleep(Duration::from_secs(8));
    let made = agent_value(&first, SETS);
    let killed_at = unix_now();
    first.child.signal(Signal::SIGKILL).unwrap();
    assert!(first.child.wait_timeout(Duration::from_secs(5)).is_some());

    let second = start_agent(&config);
    std::thread::sleep(Duration::from_secs(3));
    let restarted_at = unix_now();
    receiver.start();
    let samples = receiver.wait_past(&selector, restarted_at, Duration::from_secs(60));
    let (before, after): (Vec<_>, Vec<_>) = samples.iter().partition(|(t, _)| *t < killed_at);
    assert_contiguous(&before, 0.0, "the killed run");
    assert!(
        before.len() as f64 >= made,
        "the killed agent had made {made} sets, {} arrived",
        before.len()
    );
    assert_contiguous(&after, 0.0, "the restarted run");
    assert!(second.child.is_running());
}

/// Bytes of the buffer's segment files.
fn segment_bytes(state: &Path) -> u64 {
    std::fs::read_dir(state.join("remote_write"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn at_the_cap_the_oldest_sets_are_dropped_and_counted() {
    const CAP: u64 = 64 * 1024;
    let mut receiver = Receiver::new();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&agent_config(
        dir.path(),
        "pi-cap",
        &receiver.write_url(),
        &format!("max_buffer_bytes = {CAP}\n"),
    ));
    let state = dir.path().join("state");
    let mut largest = 0;
    let mut largest_reported = 0.0f64;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut checks = 0;
    while Instant::now() < deadline {
        largest = largest.max(segment_bytes(&state));
        if checks % 5 == 0 {
            largest_reported =
                largest_reported.max(agent_value(&agent, "nodewatch_remote_write_buffer_bytes"));
        }
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        largest <= CAP,
        "the segments took {largest} bytes, cap {CAP}"
    );
    assert!(largest_reported <= CAP as f64);
    assert!(
        largest > CAP / 2,
        "the buffer never filled: {largest} bytes"
    );
    let dropped = agent_value(
        &agent,
        "nodewatch_remote_write_dropped_samples_total{reason=\"buffer_full\"}",
    );
    assert!(dropped > 0.0, "nothing dropped at the cap");
    assert!(
        agent_value(
            &agent,
            "nodewatch_remote_write_samples_total{result=\"dropped\"}"
        ) >= dropped
    );

    let receiver_up = unix_now();
    receiver.start();
    let samples = receiver.wait_past(
        &format!("{SETS}{{instance=\"pi-cap\"}}"),
        receiver_up,
        Duration::from_secs(60),
    );
    // The oldest sets are gone; from the oldest kept one on, nothing is missing.
    let oldest_kept = samples[0].1;
    assert!(oldest_kept > 0.0, "the oldest set arrived: {samples:?}");
    assert_contiguous(&samples, oldest_kept, "after the cap");
}

/// A size-limited tmpfs mounted for the test, detached when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap_or_else(|e| {
            panic!(
                "mounting a {size} tmpfs at {} for the full-disk test: {e} (the test needs root, as tests/run.sh runs)",
                path.display()
            )
        });
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_disk_is_a_counted_error_not_a_crash() {
    let mut receiver = Receiver::new();
    let dir = tempfile::tempdir().unwrap();
    let _disk = Tmpfs::mount(&dir.path().join("state"), "64k");
    let agent = start_agent(&agent_config(
        dir.path(),
        "pi-full",
        &receiver.write_url(),
        "",
    ));
    let series = "nodewatch_remote_write_errors_total{reason=\"wal_write\"}";
    assert!(
        wait_until(Duration::from_secs(30), || agent_value(&agent, series)
            > 0.0),
        "no disk error counted; log:\n{}",
        agent.child.log()
    );
    assert!(agent.child.is_running());
    let health: serde_json::Value = serde_json::from_str(
        &nodewatch_tests::get_text(&agent.url("/api/health/detailed")).unwrap(),
    )
    .unwrap();
    let output = &health["outputs"]["remote_write"];
    assert_eq!(output["ok"], false, "{health}");
    assert!(
        output["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("No space left on device"),
        "{health}"
    );
    assert!(agent_value(&agent, "nodewatch_remote_write_buffer_memory_bytes") > 0.0);
    std::thread::sleep(Duration::from_secs(3));

    // The sets the disk refused were kept in memory: nothing is missing.
    let receiver_up = unix_now();
    receiver.start();
    let samples = receiver.wait_past(
        &format!("{SETS}{{instance=\"pi-full\"}}"),
        receiver_up,
        Duration::from_secs(60),
    );
    assert_contiguous(&samples, 0.0, "with a full disk");
    assert!(agent.child.is_running());
    assert_eq!(
        agent_value(
            &agent,
            "nodewatch_remote_write_samples_total{result=\"dropped\"}"
        ),
        0.0
    );
}

#[test]
fn with_only_url_set_the_first_samples_arrive_within_30s() {
    let receiver = Receiver::started();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[remote_write]\nurl = \"{}\"\n",
            dir.path().join("state").display(),
            receiver.write_url()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let _agent = start_agent(&config);
    let series = receiver
        .prometheus()
        .wait_for("node_load1", Duration::from_secs(30))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "first samples after {took:?}"
    );
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        series[0].0,
        serde_json::json!({"__name__": "node_load1", "job": "node", "instance": host, "node": host})
    );
}

#[test]
fn a_refused_batch_is_dropped_and_counted() {
    let receiver = Receiver::started();
    let dir = tempfile::tempdir().unwrap();
    // Prometheus answers 404 on a path it does not serve.
    let url = format!("http://{}/api/v1/not-a-write-endpoint", receiver.address);
    let agent = start_agent(&agent_config(dir.path(), "pi-refused", &url, ""));
    let rejected = "nodewatch_remote_write_dropped_samples_total{reason=\"rejected\"}";
    assert!(
        wait_until(Duration::from_secs(30), || agent_value(&agent, rejected)
            > 0.0),
        "nothing counted as rejected; log:\n{}",
        agent.child.log()
    );
    assert!(
        agent_value(
            &agent,
            "nodewatch_remote_write_errors_total{reason=\"http_4xx\"}"
        ) > 0.0
    );
    // Refused batches are not retried: the buffer does not grow.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent_value(&agent, "nodewatch_remote_write_pending_samples") < 2000.0);
    assert!(agent.child.log().contains("404"), "{}", agent.child.log());
}

/// Prometheus with TLS and basic auth (its `--web.config.file`); the agent trusts the
/// test CA through `ca_file` and reads its password from a 0600 file.
#[test]
fn https_with_basic_auth_and_a_ca_file() {
    use nodewatch_tests::tls::{Pki, bcrypt_hash, ca_args, curl};
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new().unwrap();
    let web = pki
        .write_web_config(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
                 basic_auth_users:\n  pusher: {}\n",
                bcrypt_hash("s3cret").unwrap()
            ),
        )
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("prometheus.yml"), "global: {}\n").unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let args = [
        format!(
            "--config.file={}",
            work.path().join("prometheus.yml").display()
        ),
        format!("--storage.tsdb.path={}", work.path().join("tsdb").display()),
        format!("--web.listen-address={address}"),
        format!("--web.config.file={}", web.display()),
        "--web.enable-remote-write-receiver".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let prometheus = nodewatch_tests::Child::spawn(
        "prometheus",
        &nodewatch_tests::program("prometheus", "prometheus").unwrap(),
        &args,
        &[],
    )
    .unwrap();
    let mut curl_args = ca_args(&pki);
    curl_args.extend(["-u".to_string(), "pusher:s3cret".to_string()]);
    let curl_args: Vec<&str> = curl_args.iter().map(String::as_str).collect();
    assert!(
        wait_until(Duration::from_secs(30), || {
            curl(&format!("https://{address}/-/ready"), &curl_args).is_ok_and(|r| r.status == 200)
        }),
        "Prometheus with TLS did not become ready; log:\n{}",
        prometheus.log()
    );

    let agent_with_password = |node: &str, password: &str| {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let extra = format!(
            "ca_file = \"{}\"\nbasic_auth = {{ username = \"pusher\", password_file = \"{}\" }}\n",
            pki.path("ca.crt").display(),
            password_file.display()
        );
        let config = agent_config(
            dir.path(),
            node,
            &format!("https://{address}/api/v1/write"),
            &extra,
        );
        (start_agent(&config), dir)
    };
    let (good, _good_dir) = agent_with_password("pi-tls", "s3cret");
    let (bad, _bad_dir) = agent_with_password("pi-wrong", "wrong");
    let query = format!(
        "https://{address}/api/v1/query?query=nodewatch_build_info%7Bnode%3D%22pi-tls%22%7D"
    );
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            body = curl(&query, &curl_args).map(|r| r.body).unwrap_or_default();
            body.contains("\"instance\":\"pi-tls\"")
        }),
        "nothing arrived over TLS with basic auth: {body}; agent log:\n{}",
        good.child.log()
    );
    // A wrong password is a 401: refused for good, dropped and counted.
    let rejected = "nodewatch_remote_write_dropped_samples_total{reason=\"rejected\"}";
    assert!(
        wait_until(Duration::from_secs(30), || agent_value(&bad, rejected)
            > 0.0),
        "a 401 was not counted; log:\n{}",
        bad.child.log()
    );
    assert!(bad.child.log().contains("401"), "{}", bad.child.log());
    assert_eq!(agent_value(&good, rejected), 0.0);
}
