//! The HTTP server cannot be starved: 2,000 idle or byte-a-second connections from one
//! host, against the agent started at systemd's default descriptor limits (soft 1024,
//! hard 524288), while a scraper still gets every `/metrics` answer in under a second
//! and the agent's open descriptors stay under the connection cap; and SIGTERM with
//! those connections open exits within the shutdown deadline.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{agent_fixture_args, strs};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nodewatch_tests::{Child, agent_binary, fixture, wait_until};

/// systemd's default `LimitNOFILE=` for services: soft 1024, hard 524288.
const SYSTEMD_SOFT: u64 = 1024;
const SYSTEMD_HARD: u64 = 524_288;
/// `--web.max-connections`' default.
const MAX_CONNECTIONS: usize = 512;
/// Hostile connections held open at once.
const ATTACKERS: usize = 2000;

/// The hard limit the agent is started with: systemd's, or this process's own where
/// raising a hard limit is not permitted (a container without CAP_SYS_RESOURCE).
/// Printed, so a run says which one it used.
fn hard_limit() -> u64 {
    let prlimit = nodewatch_tests::program("prlimit", "util-linux").expect("prlimit");
    let allowed = std::process::Command::new(prlimit)
        .args([
            format!("--nofile={SYSTEMD_SOFT}:{SYSTEMD_HARD}"),
            "--".into(),
            "true".into(),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let hard = if allowed {
        SYSTEMD_HARD
    } else {
        getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").1
    };
    eprintln!(
        "agent started with RLIMIT_NOFILE soft {SYSTEMD_SOFT}, hard {hard}{}",
        if allowed {
            ""
        } else {
            " (this machine does not permit a hard limit of 524288)"
        }
    );
    hard
}

/// Room for this test's own 2,000 sockets.
fn raise_own_limit() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= ATTACKERS as u64 + 200,
        "this test needs {} descriptors, the hard limit allows {soft}",
        ATTACKERS + 200
    );
}

/// The agent under `prlimit --nofile=1024:HARD` (prlimit execs it: same PID), on the
/// fixture tree, with `extra` flags. Returns the process and its address.
fn start_agent_at_systemd_limits(extra: &[&str]) -> (Child, String) {
    let prlimit = nodewatch_tests::program("prlimit", "util-linux").expect("prlimit");
    let nofile = format!("--nofile={SYSTEMD_SOFT}:{}", hard_limit());
    let agent = agent_binary();
    let mut args = vec![
        nofile,
        "--".to_string(),
        agent.display().to_string(),
        "--web.listen-address=127.0.0.1:0".to_string(),
    ];
    args.extend(agent_fixture_args(&fixture("pi"), &fixture("textfile")));
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Child::spawn("nodewatch-agent", &prlimit, &strs(&args), &[]).expect("spawn");
    let mut address = None;
    wait_until(Duration::from_secs(30), || {
        address = child.log().lines().find_map(|l| {
            let rest = l.split("address=").nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        });
        address.is_some() || !child.is_running()
    });
    let address = address.unwrap_or_else(|| panic!("agent did not start:\n{}", child.log()));
    (child, address)
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The soft and hard "Max open files" of a process.
fn nofile_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line")
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

/// One scrape on a fresh connection: (status line, body, time taken).
fn scrape(address: &str) -> Result<(String, String, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read after {:?}: {e}", started.elapsed()))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string(), started.elapsed()))
}

/// A hostile client: `ATTACKERS` connections, half silent and half sending a request
/// one byte a second; closed ones are opened again, so the pressure stays on.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

const SLOW_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";

impl Flood {
    fn start(address: &str) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let address = address.to_string();
        let thread = std::thread::spawn(move || {
            let connect = || {
                let s = TcpStream::connect(&address).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            };
            let mut sockets: Vec<Option<(TcpStream, usize)>> =
                (0..ATTACKERS).map(|_| connect().map(|s| (s, 0))).collect();
            let mut opened = ATTACKERS;
            let mut last_byte = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                // Up to 1,000 new connections a second once the cap is full.
                let mut reconnects = 0;
                let send_byte = last_byte.elapsed() >= Duration::from_secs(1);
                if send_byte {
                    last_byte = Instant::now();
                }
                for (i, slot) in sockets.iter_mut().enumerate() {
                    let closed = match slot {
                        None => true,
                        Some((s, sent)) => {
                            let mut buf = [0u8; 512];
                            let peer_closed = match s.read(&mut buf) {
                                Ok(0) => true,
                                Ok(_) => false,
                                Err(e) => e.kind() != ErrorKind::WouldBlock,
                            };
                            // Odd ones trickle a request, a byte a second.
                            if !peer_closed
                                && send_byte
                                && i % 2 == 1
                                && *sent < SLOW_REQUEST.len()
                                && matches!(s.write(&SLOW_REQUEST[*sent..*sent + 1]), Ok(1))
                            {
                                *sent += 1;
                            }
                            peer_closed
                        }
                    };
                    if closed && reconnects < 100 {
                        *slot = connect().map(|s| (s, 0));
                        opened += 1;
                        reconnects += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            opened
        });
        Flood {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it; returns how many connections it opened in all.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("flood thread"))
            .unwrap_or(0)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sample(body: &str, prefix: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in the body"))
}

#[test]
fn two_thousand_idle_and_byte_a_second_connections_do_not_starve_a_scraper() {
    raise_own_limit();
    let (agent, address) = start_agent_at_systemd_limits(&[]);
    let pid = agent.pid();
    let (first, _, _) = scrape(&address).expect("first scrape");
    assert!(first.ends_with("200 OK"), "{first}");
    let baseline_fds = open_fds(pid);
    let (soft, hard) = nofile_limits(pid);
    assert_eq!(
        soft, hard,
        "RLIMIT_NOFILE raised to its hard limit at start"
    );
    assert_eq!(hard, hard_limit().to_string());

    let flood = Flood::start(&address);
    std::thread::sleep(Duration::from_secs(2));
    let mut most_fds = 0;
    let mut slowest = Duration::ZERO;
    let mut scrapes = 0;
    let mut last_body = String::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let (status, body, took) = scrape(&address)
            .unwrap_or_else(|e| panic!("scrape {scrapes} failed: {e}\n{}", agent.child_log()));
        assert!(status.ends_with("200 OK"), "scrape {scrapes}: {status}");
        assert!(
            body.contains("node_load1 "),
            "scrape {scrapes}: incomplete body"
        );
        assert!(
            took < Duration::from_secs(1),
            "scrape {scrapes} took {took:?} under the flood"
        );
        slowest = slowest.max(took);
        most_fds = most_fds.max(open_fds(pid));
        scrapes += 1;
        last_body = body;
        std::thread::sleep(Duration::from_millis(200));
    }
    let opened = flood.stop();
    eprintln!(
        "{scrapes} scrapes under a flood of {ATTACKERS} connections ({opened} opened in all): slowest {slowest:?}, most open descriptors {most_fds} (baseline {baseline_fds}, cap {MAX_CONNECTIONS})"
    );
    assert!(scrapes >= 40, "only {scrapes} scrapes");
    assert!(
        most_fds <= baseline_fds + MAX_CONNECTIONS + 16,
        "open descriptors {most_fds} over the cap ({MAX_CONNECTIONS} connections + {baseline_fds} baseline)"
    );
    assert!(most_fds < SYSTEMD_SOFT as usize, "{most_fds} descriptors");
    // The limits did the work, and the collectors still read their files.
    assert!(
        sample(
            &last_body,
            "nodewatch_http_connections_closed_total{reason=\"evicted\"}"
        ) > 0.0
    );
    assert_eq!(
        sample(&last_body, "nodewatch_http_accept_errors_total"),
        0.0
    );
    for collector in ["cpu", "loadavg", "meminfo", "textfile"] {
        assert_eq!(
            sample(
                &last_body,
                &format!("node_scrape_collector_success{{collector=\"{collector}\"}}")
            ),
            1.0,
            "{collector} failed under the flood"
        );
    }
}

#[test]
fn sigterm_with_two_thousand_connections_open_exits_within_the_shutdown_deadline() {
    raise_own_limit();
    let (mut agent, address) = start_agent_at_systemd_limits(&["--web.shutdown-timeout=2s"]);
    let (first, _, _) = scrape(&address).expect("first scrape");
    assert!(first.ends_with("200 OK"), "{first}");
    let flood = Flood::start(&address);
    // Wait until the cap is full of hostile connections.
    assert!(
        wait_until(Duration::from_secs(20), || open_fds(agent.pid())
            >= MAX_CONNECTIONS),
        "the flood did not fill the cap"
    );
    let started = Instant::now();
    agent
        .signal(nix::sys::signal::Signal::SIGTERM)
        .expect("SIGTERM");
    let status = agent.wait_timeout(Duration::from_secs(4));
    let took = started.elapsed();
    flood.stop();
    let status =
        status.unwrap_or_else(|| panic!("still running 4 s after SIGTERM:\n{}", agent.log()));
    eprintln!("exited {took:?} after SIGTERM with the cap full");
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert!(took < Duration::from_secs(3), "took {took:?}; deadline 2 s");
}

/// A request trickled too slowly is cut at the header timeout, an idle keep-alive
/// connection at the idle timeout, and a scraper that keeps up is never cut.
#[test]
fn slow_headers_and_idle_connections_are_closed_at_their_timeouts() {
    let (agent, address) =
        start_agent_at_systemd_limits(&["--web.read-header-timeout=2s", "--web.idle-timeout=3s"]);
    let closed_after = |mut stream: TcpStream, trickle: bool| {
        stream.set_nonblocking(true).expect("nonblocking");
        let started = Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(10) {
            let mut buf = [0u8; 64];
            match stream.read(&mut buf) {
                Ok(0) => return started.elapsed(),
                Err(e) if e.kind() != ErrorKind::WouldBlock => return started.elapsed(),
                _ => {}
            }
            if trickle
                && sent < SLOW_REQUEST.len()
                && started.elapsed() >= Duration::from_millis(500 * sent as u64)
            {
                let _ = stream.write(&SLOW_REQUEST[sent..sent + 1]);
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("not closed within 10 s");
    };
    let slow = TcpStream::connect(&address).expect("connect");
    let idle = TcpStream::connect(&address).expect("connect");
    let idle_thread = std::thread::spawn(move || closed_after(idle, false));
    let slow_took = closed_after(slow, true);
    let idle_took = idle_thread.join().expect("join");
    assert!(
        (Duration::from_millis(1900)..Duration::from_millis(3500)).contains(&slow_took),
        "slow headers closed after {slow_took:?}, timeout 2 s"
    );
    assert!(
        (Duration::from_millis(2900)..Duration::from_millis(4500)).contains(&idle_took),
        "idle connection closed after {idle_took:?}, timeout 3 s"
    );
    let (status, body, _) = scrape(&address).expect("scrape");
    assert!(
        status.ends_with("200 OK"),
        "{status}
{}",
        agent.log()
    );
    assert_eq!(
        sample(
            &body,
            "nodewatch_http_connections_closed_total{reason=\"header_timeout\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            "nodewatch_http_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        1.0
    );
}

/// A request head over 16 KiB is refused (431), and the server goes on answering.
#[test]
fn oversized_request_heads_are_refused() {
    let (agent, address) = start_agent_at_systemd_limits(&[]);
    let mut stream = TcpStream::connect(&address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let padding = "a".repeat(32 * 1024);
    // The server may close before reading it all: a failed write is fine.
    let _ = stream.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Padding: {padding}\r\n\r\n").as_bytes(),
    );
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let status = String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        status.starts_with("HTTP/1.1 431"),
        "expected 431 for a 32 KiB head, got {status:?}"
    );
    let (status, _, _) = scrape(&address).expect("scrape");
    assert!(status.ends_with("200 OK"), "{status}\n{}", agent.log());
}

trait ChildLog {
    fn child_log(&self) -> String;
}

impl ChildLog for Child {
    fn child_log(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}
