//! Benchmark: nodewatch-agent against Debian's node_exporter, side by side on this
//! machine, in one run (these machines are noisy, so only ratios mean something).
//!
//! `cargo run --release -p nodewatch-tests --bin bench-agent [-- --scrapes N --idle-secs S]`
//!
//! Both run with their defaults on the live /proc and /sys. Prints body size, samples,
//! families, median and p99 latency of N sequential scrapes by curl on one
//! keep-alive connection (taken in turn, in batches of 20), RSS after load, and idle CPU with a 15 s
//! scrape interval, each with the agent/node_exporter ratio and the target.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nodewatch_tests::{Agent, NodeExporter, http, parse_samples};

struct Figures {
    body_bytes: usize,
    samples: usize,
    families: usize,
    median_ms: f64,
    p99_ms: f64,
    rss_kb: u64,
    idle_cpu_percent: f64,
}

fn scrape(agent: &ureq::Agent, url: &str) -> Result<(Duration, String)> {
    let started = Instant::now();
    let mut response = agent.get(url).call()?;
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()?;
    Ok((started.elapsed(), body))
}

/// `time_total` of `count` sequential transfers of `url` by one curl on one
/// connection, in milliseconds.
fn curl_times(url: &str, count: usize) -> Result<Vec<f64>> {
    let mut command = std::process::Command::new("curl");
    command.args(["-s", "-w", "%{time_total}\\n"]);
    for _ in 0..count {
        command.args(["-o", "/dev/null", url]);
    }
    let output = command
        .output()
        .context("run curl (apt-get install curl)")?;
    anyhow::ensure!(output.status.success(), "curl failed on {url}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| Ok(l.trim().parse::<f64>()? * 1000.0))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() -> Result<()> {
    let mut scrapes = 200usize;
    let mut idle_secs = 60u64;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--scrapes" => scrapes = args.get(i + 1).context("--scrapes N")?.parse()?,
            "--idle-secs" => idle_secs = args.get(i + 1).context("--idle-secs S")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }

    // The shipped configuration: profile `dist`, `--target <host>`, glibc linked
    // dynamically, as image/debs.sh builds the amd64 package (the same binary, one build).
    // NODEWATCH_BENCH_STATIC=1 links glibc statically instead, to compare (docs/packages.md).
    let static_glibc = std::env::var_os("NODEWATCH_BENCH_STATIC").is_some_and(|v| v == "1");
    let binary = nodewatch_tests::build_dist_agent(static_glibc)?;
    let linking = if static_glibc { "static" } else { "dynamic" };
    let binary_size = std::fs::metadata(&binary)?.len();

    let node_exporter = NodeExporter::start(&["--no-collector.systemd"])?;
    let agent = Agent::start_binary(&binary, &[], &[])?;
    // Let both settle: the agent's collectors run at start, node_exporter's on scrape.
    std::thread::sleep(Duration::from_secs(3));

    let urls = [
        format!("http://{}/metrics", node_exporter.address),
        agent.url("/metrics"),
    ];
    let clients = [http(), http()];
    let mut bodies = [String::new(), String::new()];
    for (k, url) in urls.iter().enumerate() {
        // Warm-up, and the body we describe.
        bodies[k] = scrape(&clients[k], url)?.1;
    }
    // Latency as the design's baseline was measured: curl, N transfers on one
    // connection, `time_total` each. Taken in turn, in batches, so both see the same
    // machine load.
    let mut latencies = [Vec::new(), Vec::new()];
    let batch = 20.min(scrapes).max(1);
    for _ in 0..scrapes.div_ceil(batch) {
        for (k, url) in urls.iter().enumerate() {
            latencies[k].extend(curl_times(url, batch)?);
        }
    }
    let rss = [
        node_exporter.child.rss_kb().unwrap_or(0),
        agent.child.rss_kb().unwrap_or(0),
    ];

    // Idle CPU: one scrape every 15 s, as a typical Prometheus does.
    eprintln!("measuring idle CPU over {idle_secs} s with a 15 s scrape interval…");
    let cpu_start = [
        node_exporter.child.cpu_seconds().unwrap_or(0.0),
        agent.child.cpu_seconds().unwrap_or(0.0),
    ];
    let idle_started = Instant::now();
    while idle_started.elapsed() < Duration::from_secs(idle_secs) {
        for (k, url) in urls.iter().enumerate() {
            scrape(&clients[k], url)?;
        }
        let left = Duration::from_secs(idle_secs).saturating_sub(idle_started.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(15)));
    }
    let idle_elapsed = idle_started.elapsed().as_secs_f64();
    let cpu_end = [
        node_exporter.child.cpu_seconds().unwrap_or(0.0),
        agent.child.cpu_seconds().unwrap_or(0.0),
    ];

    let figures: Vec<Figures> = (0..2)
        .map(|k| {
            let mut sorted = latencies[k].clone();
            sorted.sort_by(f64::total_cmp);
            Figures {
                body_bytes: bodies[k].len(),
                samples: parse_samples(&bodies[k]).len(),
                families: bodies[k]
                    .lines()
                    .filter(|l| l.starts_with("# TYPE "))
                    .count(),
                median_ms: percentile(&sorted, 0.5),
                p99_ms: percentile(&sorted, 0.99),
                rss_kb: rss[k],
                idle_cpu_percent: (cpu_end[k] - cpu_start[k]) / idle_elapsed * 100.0,
            }
        })
        .collect();
    let (ne, nw) = (&figures[0], &figures[1]);
    println!(
        "nodewatch-agent vs node_exporter 1.5 ({scrapes} scrapes each by curl, in turn, keep-alive)"
    );
    println!(
        "{:<28} {:>14} {:>14} {:>9}  target",
        "", "node_exporter", "nodewatch", "ratio"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str, target: &str| {
        let ratio = if a > 0.0 { b / a } else { f64::NAN };
        println!(
            "{name:<28} {:>11.3} {unit:<2} {:>11.3} {unit:<2} {ratio:>9.3}  {target}",
            a, b
        );
        ratio
    };
    row(
        "body",
        ne.body_bytes as f64 / 1024.0,
        nw.body_bytes as f64 / 1024.0,
        "KB",
        "",
    );
    row("samples", ne.samples as f64, nw.samples as f64, "", "");
    row("families", ne.families as f64, nw.families as f64, "", "");
    let median = row(
        "median latency",
        ne.median_ms,
        nw.median_ms,
        "ms",
        "<= 0.05 (1/20)",
    );
    row("p99 latency", ne.p99_ms, nw.p99_ms, "ms", "");
    let memory = row(
        "RSS after load",
        ne.rss_kb as f64 / 1024.0,
        nw.rss_kb as f64 / 1024.0,
        "MB",
        "<= 0.25 (1/4)",
    );
    row(
        "idle CPU, 15 s scrapes",
        ne.idle_cpu_percent,
        nw.idle_cpu_percent,
        "%",
        "",
    );
    println!(
        "agent binary (host, profile dist, {linking} glibc, stripped): {:.2} MB",
        binary_size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "verdict: latency {} , memory {}",
        if median <= 0.05 { "MET" } else { "NOT MET" },
        if memory <= 0.25 { "MET" } else { "NOT MET" }
    );
    Ok(())
}
