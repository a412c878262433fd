//! Load benchmark: 200 concurrent scrapers against the agent (with `--web.max-requests=0`
//! and with its default of 40, over plain HTTP and over TLS) and against Debian's
//! node_exporter, one after another in one run on this machine.
//!
//! `cargo run --release -p nodewatch-tests --bin bench-load`
//!
//! Each scraper is a thread with its own keep-alive connection, scraping `/metrics`
//! as fast as answers come, for `NODEWATCH_LOAD_SECS` seconds (default 60) per target.
//! Prints per target: answers, answers a second, errors (503 from the request limit,
//! other statuses, transport errors), p50/p99 latency of the 200s, and RSS before and
//! after. The agent is the shipped build (profile `dist`, `--target <host>`), as in
//! bench-agent; `NODEWATCH_AGENT_BIN` runs a given binary instead.
//! `NODEWATCH_LOAD_SCRAPERS` changes the number of scrapers.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nodewatch_tests::tls::Pki;
use nodewatch_tests::{Agent, DistBuild, NodeExporter};

#[derive(Debug, Default)]
struct Tally {
    latencies_ms: Vec<f64>,
    limited: u64,
    other_status: u64,
    transport: u64,
}

struct Figures {
    name: String,
    answers: usize,
    seconds: f64,
    tally: Tally,
    rss_before_kb: u64,
    rss_after_kb: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn client(ca_pem: Option<&[u8]>) -> Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .max_idle_connections_per_host(1)
        .proxy(None);
    if let Some(pem) = ca_pem {
        let ca = ureq::tls::Certificate::from_pem(pem)?;
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        );
    }
    Ok(config.build().into())
}

/// `scrapers` threads scraping `url` until `duration` passes.
fn load(url: &str, ca_pem: Option<&[u8]>, scrapers: usize, duration: Duration) -> Result<Tally> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..scrapers {
        let agent = client(ca_pem)?;
        let url = url.to_string();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match agent.get(&url).call() {
                    Ok(mut response) => {
                        let status = response.status().as_u16();
                        let body = response
                            .body_mut()
                            .with_config()
                            .limit(64 << 20)
                            .read_to_vec();
                        match (status, body) {
                            (200, Ok(_)) => tally
                                .latencies_ms
                                .push(started.elapsed().as_secs_f64() * 1000.0),
                            (503, _) => tally.limited += 1,
                            (_, Err(_)) => tally.transport += 1,
                            _ => tally.other_status += 1,
                        }
                    }
                    Err(_) => {
                        tally.transport += 1;
                        // A refused connection must not become a busy loop.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            tally
        }));
    }
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for thread in threads {
        let t = thread
            .join()
            .map_err(|_| anyhow::anyhow!("scraper panicked"))?;
        all.latencies_ms.extend(t.latencies_ms);
        all.limited += t.limited;
        all.other_status += t.other_status;
        all.transport += t.transport;
    }
    all.latencies_ms.sort_by(f64::total_cmp);
    Ok(all)
}

/// The shipped agent build (as bench-agent builds it), or `NODEWATCH_AGENT_BIN`.
fn agent_binary() -> Result<std::path::PathBuf> {
    match std::env::var("NODEWATCH_AGENT_BIN") {
        Ok(path) => Ok(path.into()),
        Err(_) => nodewatch_tests::build_dist_agent(DistBuild::Shipped),
    }
}

fn run_agent(
    name: &str,
    binary: &std::path::Path,
    args: &[&str],
    tls: Option<&Pki>,
    scrapers: usize,
    duration: Duration,
) -> Result<Figures> {
    let agent = Agent::start_binary(binary, args, &[])?;
    std::thread::sleep(Duration::from_secs(3));
    let rss_before_kb = agent.child.rss_kb().unwrap_or(0);
    let (url, ca) = match tls {
        Some(pki) => (
            format!("https://{}/metrics", agent.address),
            Some(std::fs::read(pki.path("ca.crt"))?),
        ),
        None => (agent.url("/metrics"), None),
    };
    eprintln!("{name}: {scrapers} scrapers for {duration:?}…");
    let started = Instant::now();
    let tally = load(&url, ca.as_deref(), scrapers, duration)?;
    Ok(Figures {
        name: name.to_string(),
        answers: tally.latencies_ms.len(),
        seconds: started.elapsed().as_secs_f64(),
        rss_after_kb: agent.child.rss_kb().unwrap_or(0),
        tally,
        rss_before_kb,
    })
}

fn main() -> Result<()> {
    let seconds: u64 = std::env::var("NODEWATCH_LOAD_SECS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("NODEWATCH_LOAD_SECS")?
        .unwrap_or(60);
    let scrapers: usize = std::env::var("NODEWATCH_LOAD_SCRAPERS")
        .ok()
        .map(|s| s.parse())
        .transpose()
        .context("NODEWATCH_LOAD_SCRAPERS")?
        .unwrap_or(200);
    let duration = Duration::from_secs(seconds);
    let binary = agent_binary()?;
    let pki = Pki::new()?;
    let web = pki.write_web_config(
        "web.yml",
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )?;
    let web_flag = format!("--web.config.file={}", web.display());

    let mut figures = Vec::new();
    {
        let node_exporter = NodeExporter::start(&["--no-collector.systemd"])?;
        std::thread::sleep(Duration::from_secs(3));
        let rss_before_kb = node_exporter.child.rss_kb().unwrap_or(0);
        eprintln!("node_exporter: {scrapers} scrapers for {duration:?}…");
        let started = Instant::now();
        let tally = load(
            &format!("http://{}/metrics", node_exporter.address),
            None,
            scrapers,
            duration,
        )?;
        figures.push(Figures {
            name: "node_exporter 1.5 (max-requests 40)".into(),
            answers: tally.latencies_ms.len(),
            seconds: started.elapsed().as_secs_f64(),
            rss_after_kb: node_exporter.child.rss_kb().unwrap_or(0),
            tally,
            rss_before_kb,
        });
    }
    for (name, args, tls) in [
        ("agent, max-requests 0", vec!["--web.max-requests=0"], None),
        ("agent, max-requests 40 (default)", vec![], None),
        (
            "agent TLS, max-requests 0",
            vec!["--web.max-requests=0", web_flag.as_str()],
            Some(&pki),
        ),
        (
            "agent TLS, max-requests 40",
            vec![web_flag.as_str()],
            Some(&pki),
        ),
    ] {
        figures.push(run_agent(name, &binary, &args, tls, scrapers, duration)?);
    }

    println!(
        "{scrapers} concurrent scrapers, keep-alive, {seconds} s per target, one after another"
    );
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "target",
        "answers",
        "per s",
        "503",
        "other",
        "transp",
        "p50 ms",
        "p99 ms",
        "RSS0 MB",
        "RSS1 MB"
    );
    for f in &figures {
        println!(
            "{:<36} {:>8} {:>8.0} {:>8} {:>7} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            f.name,
            f.answers,
            f.answers as f64 / f.seconds,
            f.tally.limited,
            f.tally.other_status,
            f.tally.transport,
            percentile(&f.tally.latencies_ms, 0.5),
            percentile(&f.tally.latencies_ms, 0.99),
            f.rss_before_kb as f64 / 1024.0,
            f.rss_after_kb as f64 / 1024.0,
        );
    }
    println!("agent binary: {}", binary.display());
    Ok(())
}
