//! Benchmark: nodewatch-agent against Debian's node_exporter, side by side on this
//! machine, in one run (these machines are noisy, so only ratios mean something).
//!
//! `cargo run --release -p nodewatch-tests --bin bench-agent [-- --scrapes N --idle-secs S --load-secs S]`
//!
//! All run with their defaults on the live /proc and /sys: node_exporter, the shipped
//! agent (profile `dist`, `--target <host>`) and what `cargo build --profile dist -p
//! nodewatch-agent` gives. Prints body size, samples, families, median and p99
//! latency of N sequential scrapes by curl on one keep-alive connection (taken in
//! turn, in batches of 20), RSS after them, scrapes per second and RSS after S seconds
//! of back-to-back scrapes on one connection (as `wrk -c1`), and idle CPU with a 15 s
//! scrape interval, each with the agent/node_exporter ratios and the targets.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nodewatch_tests::{Agent, DistBuild, NodeExporter, http, parse_samples};

struct Figures {
    body_bytes: usize,
    samples: usize,
    families: usize,
    median_ms: f64,
    p99_ms: f64,
    rss_kb: u64,
    rss_loaded_kb: u64,
    scrapes_per_sec: f64,
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

/// `cargo build --profile dist -p nodewatch-agent` as a developer types it (no
/// `--target`), into its own target directory.
fn build_plain_dist_agent() -> Result<std::path::PathBuf> {
    eprintln!("building the agent (cargo build --profile dist -p nodewatch-agent)…");
    let workspace_target: std::path::PathBuf = std::env::var("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| nodewatch_tests::workspace_root().join("target"));
    let target = workspace_target.join("bench-plain");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(nodewatch_tests::workspace_root())
            .args([
                "build",
                "--profile",
                "dist",
                "-p",
                "nodewatch-agent",
                "--quiet",
            ])
            .status()?;
    anyhow::ensure!(status.success(), "cargo build failed");
    Ok(target.join("dist/nodewatch-agent"))
}

/// Back-to-back scrapes on one keep-alive connection for `secs` (as `wrk -c1`);
/// returns how many.
fn continuous_load(client: &ureq::Agent, url: &str, secs: u64) -> Result<u64> {
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        scrape(client, url)?;
        count += 1;
    }
    Ok(count)
}

fn main() -> Result<()> {
    let mut scrapes = 200usize;
    let mut idle_secs = 60u64;
    let mut load_secs = 12u64;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--scrapes" => scrapes = args.get(i + 1).context("--scrapes N")?.parse()?,
            "--idle-secs" => idle_secs = args.get(i + 1).context("--idle-secs S")?.parse()?,
            "--load-secs" => load_secs = args.get(i + 1).context("--load-secs S")?.parse()?,
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }

    // The shipped configuration: profile `dist`, `--target <host>`, glibc linked
    // dynamically, as image/debs.sh builds the amd64 package (the same binary, one build).
    // NODEWATCH_BENCH_STATIC=1 links glibc statically instead, to compare (docs/packages.md).
    let static_glibc = std::env::var_os("NODEWATCH_BENCH_STATIC").is_some_and(|v| v == "1");
    let shipped = nodewatch_tests::build_dist_agent(if static_glibc {
        DistBuild::StaticGlibc
    } else {
        DistBuild::Shipped
    })?;
    let plain = build_plain_dist_agent()?;
    let linking = if static_glibc { "static" } else { "dynamic" };
    let sizes = [
        std::fs::metadata(&shipped)?.len(),
        std::fs::metadata(&plain)?.len(),
    ];

    let node_exporter = NodeExporter::start(&["--no-collector.systemd"])?;
    let agents = [
        Agent::start_binary(&shipped, &[], &[])?,
        Agent::start_binary(&plain, &[], &[])?,
    ];
    // Let them settle: the agent's collectors run at start, node_exporter's on scrape.
    std::thread::sleep(Duration::from_secs(3));

    let urls = [
        format!("http://{}/metrics", node_exporter.address),
        agents[0].url("/metrics"),
        agents[1].url("/metrics"),
    ];
    let rss_of = |k: usize| {
        if k == 0 {
            node_exporter.child.rss_kb().unwrap_or(0)
        } else {
            agents[k - 1].child.rss_kb().unwrap_or(0)
        }
    };
    let cpu_of = |k: usize| {
        if k == 0 {
            node_exporter.child.cpu_seconds().unwrap_or(0.0)
        } else {
            agents[k - 1].child.cpu_seconds().unwrap_or(0.0)
        }
    };
    let clients = [http(), http(), http()];
    let mut bodies = [String::new(), String::new(), String::new()];
    for (k, url) in urls.iter().enumerate() {
        // Warm-up, and the body we describe.
        bodies[k] = scrape(&clients[k], url)?.1;
    }
    // Latency as the design's baseline was measured: curl, N transfers on one
    // connection, `time_total` each. Taken in turn, in batches, so all see the same
    // machine load.
    let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
    let batch = 20.min(scrapes).max(1);
    for _ in 0..scrapes.div_ceil(batch) {
        for (k, url) in urls.iter().enumerate() {
            latencies[k].extend(curl_times(url, batch)?);
        }
    }
    let rss = [rss_of(0), rss_of(1), rss_of(2)];
    let shipped_split = rss_split(agents[0].child.pid(), &shipped);

    // Continuous load, one after the other: back-to-back scrapes on one connection.
    eprintln!("continuous load: {load_secs} s of back-to-back scrapes on each…");
    let mut loaded = [0u64; 3];
    let mut rss_loaded = [0u64; 3];
    for (k, url) in urls.iter().enumerate() {
        loaded[k] = continuous_load(&clients[k], url, load_secs)?;
        rss_loaded[k] = rss_of(k);
    }

    // Idle CPU: one scrape every 15 s, as a typical Prometheus does.
    eprintln!("measuring idle CPU over {idle_secs} s with a 15 s scrape interval…");
    let cpu_start = [cpu_of(0), cpu_of(1), cpu_of(2)];
    let idle_started = Instant::now();
    while idle_started.elapsed() < Duration::from_secs(idle_secs) {
        for (k, url) in urls.iter().enumerate() {
            scrape(&clients[k], url)?;
        }
        let left = Duration::from_secs(idle_secs).saturating_sub(idle_started.elapsed());
        std::thread::sleep(left.min(Duration::from_secs(15)));
    }
    let idle_elapsed = idle_started.elapsed().as_secs_f64();
    let cpu_end = [cpu_of(0), cpu_of(1), cpu_of(2)];

    let figures: Vec<Figures> = (0..3)
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
                rss_loaded_kb: rss_loaded[k],
                scrapes_per_sec: loaded[k] as f64 / load_secs.max(1) as f64,
                idle_cpu_percent: (cpu_end[k] - cpu_start[k]) / idle_elapsed * 100.0,
            }
        })
        .collect();
    report(&figures, scrapes, load_secs, linking, sizes);
    if let Some(split) = shipped_split {
        println!(
            "shipped agent's RSS after the scrapes: its binary {:.2} MB (code laid out hot first: agent/hot-code.txt), shared libraries {:.2} MB, heap, stacks and other anonymous memory {:.2} MB",
            split.binary_kb as f64 / 1024.0,
            split.libraries_kb as f64 / 1024.0,
            split.anonymous_kb as f64 / 1024.0,
        );
    }
    Ok(())
}

/// Where a process's resident memory is, from `/proc/PID/smaps`.
struct RssSplit {
    binary_kb: u64,
    libraries_kb: u64,
    anonymous_kb: u64,
}

fn rss_split(pid: u32, binary: &std::path::Path) -> Option<RssSplit> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let binary = std::fs::canonicalize(binary).ok()?;
    let mut split = RssSplit {
        binary_kb: 0,
        libraries_kb: 0,
        anonymous_kb: 0,
    };
    let mut mapping = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            mapping = fields.nth(4).unwrap_or_default().to_string();
        } else if first == "Rss:" {
            let kb: u64 = fields.next()?.parse().ok()?;
            if std::path::Path::new(&mapping) == binary {
                split.binary_kb += kb;
            } else if mapping.starts_with('/') {
                split.libraries_kb += kb;
            } else {
                split.anonymous_kb += kb;
            }
        }
    }
    Some(split)
}

/// Prints the table: node_exporter, the shipped build, the plain `dist` build, and
/// each build's ratio to node_exporter with the target.
fn report(figures: &[Figures], scrapes: usize, load_secs: u64, linking: &str, sizes: [u64; 2]) {
    println!(
        "nodewatch-agent vs node_exporter 1.5 ({scrapes} scrapes each by curl, in turn, keep-alive; \
         {load_secs} s continuous load)"
    );
    println!(
        "{:<30} {:>14} {:>14} {:>14} {:>8} {:>8}  target",
        "", "node_exporter", "shipped", "plain dist", "ratio", "ratio"
    );
    let mut ratios = std::collections::BTreeMap::new();
    let mut row = |name: &str, value: &dyn Fn(&Figures) -> f64, unit: &str, target: &str| {
        let base = value(&figures[0]);
        let ratio = |k: usize| {
            if base > 0.0 {
                value(&figures[k]) / base
            } else {
                f64::NAN
            }
        };
        println!(
            "{name:<30} {:>11.3} {unit:<2} {:>11.3} {unit:<2} {:>11.3} {unit:<2} {:>8.3} {:>8.3}  {target}",
            base,
            value(&figures[1]),
            value(&figures[2]),
            ratio(1),
            ratio(2),
        );
        ratios.insert(name.to_string(), ratio(1).max(ratio(2)));
    };
    row("body", &|f| f.body_bytes as f64 / 1024.0, "KB", "");
    row("samples", &|f| f.samples as f64, "", "");
    row("families", &|f| f.families as f64, "", "");
    row("median latency", &|f| f.median_ms, "ms", "<= 0.05 (1/20)");
    row("p99 latency", &|f| f.p99_ms, "ms", "");
    row(
        "RSS after sequential scrapes",
        &|f| f.rss_kb as f64 / 1024.0,
        "MB",
        "<= 0.20 (1/5)",
    );
    row("scrapes/s, continuous", &|f| f.scrapes_per_sec, "/s", "");
    row(
        "RSS after continuous load",
        &|f| f.rss_loaded_kb as f64 / 1024.0,
        "MB",
        "<= 0.20 (1/5)",
    );
    row(
        "idle CPU, 15 s scrapes",
        &|f| f.idle_cpu_percent,
        "%",
        "<= 2",
    );
    println!(
        "agent binary (profile dist, stripped): shipped (--target host, {linking} glibc) {:.2} MB, plain {:.2} MB",
        sizes[0] as f64 / (1024.0 * 1024.0),
        sizes[1] as f64 / (1024.0 * 1024.0)
    );
    let met = |name: &str, limit: f64| {
        if ratios.get(name).is_some_and(|r| *r <= limit) {
            "MET"
        } else {
            "NOT MET"
        }
    };
    println!(
        "verdict: latency {}, memory {}, memory under load {}, idle CPU {}",
        met("median latency", 0.05),
        met("RSS after sequential scrapes", 0.20),
        met("RSS after continuous load", 0.20),
        met("idle CPU, 15 s scrapes", 2.0),
    );
}
