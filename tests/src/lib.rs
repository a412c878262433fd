//! The test harness: starts real components (the agent, node_exporter, Prometheus,
//! promtool) as child processes on free loopback ports, in temp dirs, and stops them
//! by PID. Used by the end-to-end tests in `tests/tests/` and by the benchmarks.
//!
//! A component the suite needs but cannot find is an error, never a skip: the one
//! test command (`tests/run.sh`) installs everything first.

#![allow(clippy::unwrap_used)] // test support: a failed setup should stop the test loudly

pub mod alertmanager;
pub mod docker;
pub mod evm;
pub mod metrics_text;
pub mod process;
pub mod server;
pub mod sink;
pub mod ssh;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use metrics_text::{Sample, parse_samples};
pub use process::Child;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// A loopback TCP port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// Path of an external program, or an error saying how to install it.
pub fn program(name: &str, package: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
    ]) {
        let candidate = Path::new(dir).join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{name} not found: install Debian's {package} (tests/run.sh does it)")
}

/// The agent binary, built once per test process with the same cargo that runs the
/// tests (so it is never stale). `NODEWATCH_AGENT_BIN` overrides it.
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("NODEWATCH_AGENT_BIN") {
            return PathBuf::from(path);
        }
        let release = std::env::var("NODEWATCH_RELEASE").is_ok_and(|v| v == "1");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "nodewatch-agent",
            "--bin",
            "nodewatch-agent",
        ]);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p nodewatch-agent failed");
        let target_dir = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join("target"));
        target_dir
            .join(if release { "release" } else { "debug" })
            .join("nodewatch-agent")
    })
    .clone()
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT` it bound.
    pub address: String,
}

impl Agent {
    /// Starts the agent with `args` plus `--web.listen-address=127.0.0.1:0`, and waits
    /// until it logs the address it bound.
    pub fn start(args: &[&str]) -> Result<Agent> {
        Self::start_with(args, &[])
    }

    /// Like [`Agent::start`], with extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Result<Agent> {
        Self::start_binary(&agent_binary(), args, env)
    }

    /// Starts a given agent binary (the benchmarks use a release build).
    pub fn start_binary(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Agent> {
        let mut all = vec!["--web.listen-address=127.0.0.1:0"];
        all.extend_from_slice(args);
        let child = Child::spawn("nodewatch-agent", binary, &all, env)?;
        let mut address = None;
        wait_until(Duration::from_secs(20), || {
            address = child.log().lines().find_map(|l| {
                let rest = l.split("address=").nth(1)?;
                Some(rest.split_whitespace().next()?.to_string())
            });
            address.is_some() || !child.is_running()
        });
        let Some(address) = address else {
            bail!(
                "the agent did not report its address; log:\n{}",
                child.log()
            );
        };
        Ok(Agent { child, address })
    }

    /// `http://ADDRESS`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// GET `/metrics` as text.
    pub fn metrics(&self) -> Result<String> {
        get_text(&self.url("/metrics"))
    }

    /// Waits until every listed collector, and every enabled collector as listed in
    /// `/api/health/detailed`, has reported at least once (its
    /// `node_scrape_collector_success` sample is present), and returns the body.
    pub fn metrics_after_first_collection(&self, collectors: &[&str]) -> Result<String> {
        let detailed: serde_json::Value =
            serde_json::from_str(&get_text(&self.url("/api/health/detailed"))?)?;
        let mut all: Vec<String> = detailed["collectors"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        all.extend(collectors.iter().map(|c| c.to_string()));
        let mut body = String::new();
        let ok = wait_until(Duration::from_secs(20), || {
            body = self.metrics().unwrap_or_default();
            all.iter().all(|c| {
                body.contains(&format!(
                    "node_scrape_collector_success{{collector=\"{c}\"}}"
                ))
            })
        });
        if !ok {
            bail!(
                "collectors {collectors:?} did not all report; body:\n{body}\nlog:\n{}",
                self.child.log()
            );
        }
        Ok(body)
    }
}

/// Reads one HTTP/1.1 request (request line, headers, a `Content-Length` body) for the
/// harness's small stand-in servers (the RPC proxy, the webhook sink); `None` when the
/// client closed the connection first.
pub fn read_http_request(reader: &mut impl std::io::BufRead) -> Result<Option<Vec<u8>>> {
    Ok(read_http_request_with_path(reader)?.map(|(_, body)| body))
}

/// Like [`read_http_request`], with the request's path: `(path, body)`.
pub fn read_http_request_with_path(
    reader: &mut impl std::io::BufRead,
) -> Result<Option<(String, Vec<u8>)>> {
    let mut content_length = 0usize;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse()?;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Some((path, body)))
}

/// An HTTP agent that never retries and never reads proxies from the environment.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .proxy(None)
        .build()
        .into()
}

/// GET a URL, failing on a non-2xx status.
pub fn get_text(url: &str) -> Result<String> {
    let mut response = http()
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// A running node_exporter (Debian's `prometheus-node-exporter`, the baseline).
#[derive(Debug)]
pub struct NodeExporter {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl NodeExporter {
    /// Starts node_exporter with `args` on a free loopback port and waits until it
    /// answers.
    pub fn start(args: &[&str]) -> Result<NodeExporter> {
        let binary = program("prometheus-node-exporter", "prometheus-node-exporter")?;
        let address = format!("127.0.0.1:{}", free_port());
        let listen = format!("--web.listen-address={address}");
        let mut all = vec![listen.as_str()];
        all.extend_from_slice(args);
        let child = Child::spawn("node_exporter", &binary, &all, &[])?;
        let url = format!("http://{address}/metrics");
        if !wait_until(Duration::from_secs(20), || get_text(&url).is_ok()) {
            bail!("node_exporter did not answer; log:\n{}", child.log());
        }
        Ok(NodeExporter { child, address })
    }

    /// GET `/metrics`.
    pub fn metrics(&self) -> Result<String> {
        get_text(&format!("http://{}/metrics", self.address))
    }
}

/// A running Prometheus: one scraping given targets every second, or one started on a
/// given configuration file (`server::Prometheus::start_site`).
#[derive(Debug)]
pub struct Prometheus {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Its `--storage.tsdb.path`.
    pub tsdb: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Prometheus {
    /// Starts Prometheus with one job `node` scraping `targets` (host:port).
    pub fn start(targets: &[&str]) -> Result<Prometheus> {
        let dir = tempfile::tempdir()?;
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: node\n    static_configs: [ {{ targets: [ {} ] }} ]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let mut prometheus =
            Prometheus::start_with_config(&config_path, &dir.path().join("tsdb"), &[])?;
        prometheus._dir = Some(dir);
        Ok(prometheus)
    }

    /// Starts Prometheus on `config` with its TSDB in `tsdb`, plus `flags`, and waits
    /// until it is ready.
    pub fn start_with_config(config: &Path, tsdb: &Path, flags: &[&str]) -> Result<Prometheus> {
        let address = format!("127.0.0.1:{}", free_port());
        Prometheus::start_at(config, tsdb, flags, &address)
    }

    /// Like [`Prometheus::start_with_config`], listening on `address` (a restart on the
    /// port it had before).
    pub fn start_at(
        config: &Path,
        tsdb: &Path,
        flags: &[&str],
        address: &str,
    ) -> Result<Prometheus> {
        let binary = program("prometheus", "prometheus")?;
        let address = address.to_string();
        let mut args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={address}"),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Child::spawn("prometheus", &binary, &args, &[])?;
        let ready = format!("http://{address}/-/ready");
        if !wait_until(Duration::from_secs(30), || get_text(&ready).is_ok()) {
            bail!("Prometheus did not become ready; log:\n{}", child.log());
        }
        Ok(Prometheus {
            child,
            address,
            tsdb: tsdb.to_path_buf(),
            _dir: None,
        })
    }

    /// `http://ADDRESS`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// An instant query: `(labels, value)` per series (a scalar is one unlabelled
    /// series).
    pub fn query(&self, expr: &str) -> Result<Vec<(serde_json::Value, f64)>> {
        let mut response = http()
            .get(format!("{}/api/v1/query", self.url()))
            .query("query", expr)
            .call()?;
        let body: serde_json::Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        if body["status"] != "success" {
            bail!("query {expr}: {body}");
        }
        let data = &body["data"];
        if data["resultType"] == "scalar" {
            let value: f64 = data["result"][1].as_str().unwrap_or("NaN").parse()?;
            return Ok(vec![(serde_json::Value::Null, value)]);
        }
        let mut out = Vec::new();
        for series in data["result"].as_array().into_iter().flatten() {
            let value: f64 = series["value"][1].as_str().unwrap_or("NaN").parse()?;
            out.push((series["metric"].clone(), value));
        }
        Ok(out)
    }

    /// Waits until `expr` returns at least one series, and returns them.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Result<Vec<(serde_json::Value, f64)>> {
        let mut last = Ok(Vec::new());
        wait_until(timeout, || {
            last = self.query(expr);
            matches!(&last, Ok(v) if !v.is_empty())
        });
        match last {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => bail!(
                "query {expr} returned nothing within {timeout:?}; log:\n{}",
                self.child.log()
            ),
            Err(e) => Err(e),
        }
    }
}

/// Runs `promtool check metrics` on a body; returns (exit success, output lines).
pub fn promtool_check_metrics(body: &str) -> Result<(bool, Vec<String>)> {
    use std::io::Write;
    let binary = program("promtool", "prometheus")?;
    let mut child = std::process::Command::new(binary)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(body.as_bytes())?;
    let output = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((
        output.status.success(),
        text.lines()
            .map(str::to_string)
            .filter(|l| !l.trim().is_empty())
            .collect(),
    ))
}

/// Runs `promtool` with `args` in `dir`; returns (exit success, stdout and stderr).
pub fn promtool(dir: &Path, args: &[&str]) -> Result<(bool, String)> {
    server::run(&program("promtool", "prometheus")?, args, dir)
}

/// `promtool test rules FILE` (run in the file's directory, so its `rule_files` are
/// found next to it).
pub fn promtool_test_rules(test_file: &Path) -> Result<(bool, String)> {
    let dir = test_file.parent().unwrap_or(Path::new("."));
    let name = test_file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("bad test file name {}", test_file.display()))?;
    promtool(dir, &["test", "rules", name])
}

/// The host's target triple (`rustc -vV`).
pub fn host_target() -> Result<String> {
    let output = std::process::Command::new("rustc").arg("-vV").output()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host")
}

/// Which build of the agent as it ships (profile `dist`, `--target <host>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistBuild {
    /// glibc linked dynamically: the binary the amd64 package is made from.
    Shipped,
    /// glibc linked statically, to compare (docs/packages.md).
    StaticGlibc,
    /// The shipped build with its symbols kept, for `profile-hot-code`.
    WithSymbols,
}

/// Builds the agent as it ships and returns its path. The variants other than
/// [`DistBuild::Shipped`] go into target directories of their own, so they never replace
/// the shipped binary. The benchmarks and the hot-code profiler use these builds.
pub fn build_dist_agent(variant: DistBuild) -> Result<PathBuf> {
    let host = host_target()?;
    eprintln!("building the agent (profile dist, {variant:?}, {host})…");
    let rustflags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        host.to_uppercase().replace('-', "_")
    );
    let workspace_target: PathBuf = std::env::var("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| workspace_root().join("target"));
    let target = match variant {
        DistBuild::Shipped => workspace_target,
        DistBuild::StaticGlibc => workspace_target.join("bench-static"),
        DistBuild::WithSymbols => workspace_target.join("hot-code-profile"),
    };
    let mut build =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    if variant == DistBuild::StaticGlibc {
        build.env(&rustflags_var, "-C target-feature=+crt-static");
    } else {
        build.env_remove(&rustflags_var);
    }
    if variant == DistBuild::WithSymbols {
        build.env("CARGO_PROFILE_DIST_STRIP", "false");
    }
    let status = build
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root())
        .args(["build", "--profile", "dist", "--target", &host, "--quiet"])
        .args(["-p", "nodewatch-agent", "--bin", "nodewatch-agent"])
        .status()?;
    anyhow::ensure!(status.success(), "cargo build failed");
    Ok(target.join(&host).join("dist/nodewatch-agent"))
}
