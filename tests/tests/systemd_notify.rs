//! Life under systemd without systemd: the real binaries with `NOTIFY_SOCKET` pointing
//! at a datagram socket this test binds (as systemd does for `Type=notify`) and a short
//! `WATCHDOG_USEC`. READY=1 comes once the port answers with a complete /metrics,
//! WATCHDOG=1 keeps coming, SIGTERM gives STOPPING=1 and exit 0. And the exit codes a
//! unit's `RestartPreventExitStatus=78 98` relies on.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{agent_fixture_args, copy_tree, strs};
use nix::sys::signal::Signal;
use nodewatch_tests::{Child, agent_binary, fixture, free_port, get_text};

/// systemd's end of the notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// The next message's `KEY=VALUE` lines, or `None` after `timeout`.
    fn next(&self, timeout: Duration) -> Option<Vec<String>> {
        self.socket
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
        let mut buffer = [0u8; 4096];
        let n = self.socket.recv(&mut buffer).ok()?;
        Some(
            String::from_utf8_lossy(&buffer[..n])
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    /// Waits up to `timeout` for a message holding `line`; returns the lines of every
    /// message seen before it, and whether it came.
    fn wait_for(&self, line: &str, timeout: Duration) -> (bool, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(message) = self.next(left.max(Duration::from_millis(1))) else {
                break;
            };
            let found = message.iter().any(|l| l == line);
            seen.extend(message);
            if found {
                return (true, seen);
            }
        }
        (false, seen)
    }

    /// The environment systemd gives a `Type=notify` service with `WatchdogSec=0.4`.
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("NOTIFY_SOCKET", self.path.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ]
    }
}

/// The address the binary logged (`address=…`).
fn logged_address(child: &Child) -> Option<String> {
    child.log().lines().find_map(|l| {
        let rest = l.split("address=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// Pings keep coming (0.2 s apart for a 0.4 s watchdog); SIGTERM gives STOPPING=1 and
/// a clean exit.
fn watchdog_then_stop(notify: &NotifySocket, child: &mut Child) {
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(2) {
        if let Some(message) = notify.next(Duration::from_millis(500)) {
            pings += message.iter().filter(|l| *l == "WATCHDOG=1").count();
        }
    }
    assert!(
        pings >= 5,
        "{pings} WATCHDOG=1 in 2 s for a 0.4 s watchdog; log:\n{}",
        child.log()
    );
    child.signal(Signal::SIGTERM).expect("sigterm");
    let (stopping, seen) = notify.wait_for("STOPPING=1", Duration::from_secs(5));
    assert!(stopping, "no STOPPING=1 after SIGTERM: {seen:?}");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}; log:\n{}", child.log());
}

/// READY=1 waits for the first complete scrape: here until a hung collector (a FIFO
/// for /proc/loadavg) has timed out, so its failure is already in the first /metrics.
#[test]
fn agent_notifies_ready_after_the_first_complete_scrape_then_pings_and_stops() {
    let (dir, root) = copy_tree(&fixture("pi"));
    std::fs::remove_file(root.join("proc/loadavg")).expect("rm loadavg");
    nix::unistd::mkfifo(&root.join("proc/loadavg"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[collectors]\ntimeout_secs = 1\n").expect("config");
    let notify = NotifySocket::bind();
    let mut args = vec![
        "--web.listen-address=127.0.0.1:0".to_string(),
        format!("--config={}", config.display()),
    ];
    args.extend(agent_fixture_args(&root, &fixture("textfile")));
    let started = Instant::now();
    let mut child = Child::spawn(
        "nodewatch-agent",
        &agent_binary(),
        &strs(&args),
        &notify.env(),
    )
    .expect("spawn agent");
    let (ready, seen) = notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(ready, "no READY=1: {seen:?}; log:\n{}", child.log());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "READY=1 after {:?}, before the hung collector's 1 s timeout",
        started.elapsed()
    );
    // At READY: the port answers, and every collector is in the first /metrics.
    let address = logged_address(&child).expect("the address is logged before READY");
    let body = get_text(&format!("http://{address}/metrics")).expect("/metrics at READY");
    let detailed: serde_json::Value = serde_json::from_str(
        &get_text(&format!("http://{address}/api/health/detailed")).expect("health"),
    )
    .expect("json");
    let collectors = detailed["collectors"].as_object().expect("collectors");
    assert!(collectors.contains_key("cpu"), "{detailed}");
    for name in collectors.keys() {
        assert!(
            body.contains(&format!(
                "node_scrape_collector_success{{collector=\"{name}\"}}"
            )),
            "collector {name} missing from the first /metrics after READY:\n{body}"
        );
    }
    assert!(
        body.contains("node_scrape_collector_success{collector=\"loadavg\"} 0"),
        "{body}"
    );
    assert!(body.contains("node_cpu_seconds_total"), "{body}");
    watchdog_then_stop(&notify, &mut child);
}

#[test]
fn wallet_exporter_notifies_ready_once_bound_then_pings_and_stops() {
    let notify = NotifySocket::bind();
    // A loopback RPC port nobody serves: its refreshes fail, the service still runs.
    let rpc = format!("http://127.0.0.1:{}", free_port());
    let mut env = notify.env();
    env.extend([
        (
            "WALLET_ADDRESSES",
            "builder=0x00000000000000000000000000000000000000a1",
        ),
        ("SCROLL_RPC_URL", rpc.as_str()),
        ("NO_PROXY", "*"),
    ]);
    let mut child = Child::spawn(
        "nodewatch-wallet-exporter",
        &nodewatch_tests::evm::wallet_exporter_binary(),
        &["--web.listen-address=127.0.0.1:0"],
        &env,
    )
    .expect("spawn exporter");
    let (ready, seen) = notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(ready, "no READY=1: {seen:?}; log:\n{}", child.log());
    let address = logged_address(&child).expect("the address is logged before READY");
    let body = get_text(&format!("http://{address}/metrics")).expect("/metrics at READY");
    assert!(
        body.contains("nodewatch_exporter_refresh_errors_total"),
        "{body}"
    );
    watchdog_then_stop(&notify, &mut child);
}

/// Without NOTIFY_SOCKET nothing is sent and nothing fails (a plain start, as every
/// other test does, covers serving); with a socket path nobody binds, the service
/// still runs and says why systemd was not told.
#[test]
fn a_dead_notify_socket_is_logged_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nobody.sock").display().to_string();
    let mut args = vec!["--web.listen-address=127.0.0.1:0".to_string()];
    args.extend(agent_fixture_args(&fixture("pi"), &fixture("textfile")));
    let mut child = Child::spawn(
        "nodewatch-agent",
        &agent_binary(),
        &strs(&args),
        &[("NOTIFY_SOCKET", missing.as_str())],
    )
    .expect("spawn agent");
    let logged = nodewatch_tests::wait_until(Duration::from_secs(20), || {
        child.log().contains("Cannot notify systemd.")
    });
    assert!(logged, "{}", child.log());
    let address = logged_address(&child).expect("address");
    assert!(get_text(&format!("http://{address}/metrics")).is_ok());
    child.signal(Signal::SIGTERM).expect("sigterm");
    let status = child.wait_timeout(Duration::from_secs(10)).expect("exit");
    assert!(status.success(), "{}", child.log());
}

/// Runs `binary args` to its end; returns the exit code and stderr.
fn run(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(binary);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_taken_port_exits_98_naming_the_address_and_the_likely_culprit() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("addr").to_string();
    let listen = format!("--web.listen-address={address}");
    let (code, stderr) = run(&agent_binary(), &[&listen], &[]);
    assert_eq!(code, Some(98), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")) && stderr.contains("node_exporter"),
        "{stderr}"
    );

    let (code, stderr) = run(
        &nodewatch_tests::evm::wallet_exporter_binary(),
        &[&listen],
        &[
            (
                "WALLET_ADDRESSES",
                "0x00000000000000000000000000000000000000a1",
            ),
            ("SCROLL_RPC_URL", "http://127.0.0.1:9"),
        ],
    );
    assert_eq!(code, Some(98), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}"))
            && stderr.contains("another instance"),
        "{stderr}"
    );
}

#[test]
fn invalid_configuration_exits_78() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("agent.toml");
    std::fs::write(&bad, "[web]\nmax_request = 3\n").expect("write");
    let config = format!("--config={}", bad.display());
    // Serving, check-config, a malformed listen address and an unknown flag alike.
    for args in [
        vec![config.as_str()],
        vec!["check-config", config.as_str()],
        vec!["--web.listen-address=nonsense"],
        vec!["--no-such-flag"],
    ] {
        let (code, stderr) = run(&agent_binary(), &args, &[]);
        assert_eq!(code, Some(78), "{args:?}: {stderr}");
    }
    let (code, stderr) = run(&agent_binary(), &[config.as_str()], &[]);
    assert!(stderr.contains("agent.toml:2:1"), "{code:?} {stderr}");

    let wallet = nodewatch_tests::evm::wallet_exporter_binary();
    let (code, stderr) = run(&wallet, &[], &[("WALLET_ADDRESSES", "builder-1=0x12")]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("WALLET_ADDRESSES"), "{stderr}");
    let reward = nodewatch_tests::evm::exporter_binary("nodewatch-reward-exporter");
    let bad = dir.path().join("reward.toml");
    std::fs::write(&bad, "no_such_setting = 1\n").expect("write");
    let (code, stderr) = run(&reward, &[&format!("--config={}", bad.display())], &[]);
    assert_eq!(code, Some(78), "{stderr}");
}
