//! The monitoring server of `config/server/` under test: the shipped Prometheus
//! configuration copied to a temp dir with the test's target files, a Prometheus
//! started on it, and the sinks that stand in for the chat, paging and mail services.
//!
//! Time compression: the shipped files use production timings (15 s scrapes, `for:`
//! of minutes, Alertmanager group waits of 30 s to a day). Tests that need alerts
//! rewrite only those durations (to 1 s); expressions, labels, routes and receivers are
//! the shipped ones.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{Child, free_port, get_text, http, program, wait_until, workspace_root};

/// `config/server`.
pub fn server_dir() -> PathBuf {
    workspace_root().join("config/server")
}

/// Copies a directory tree (files only, symlinks followed).
pub fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let target = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Rewrites every `KEY: <duration>` of the listed keys to `KEY: VALUE`.
pub fn compress_durations(text: &str, keys: &[&str], value: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            for key in keys {
                if let Some(rest) = trimmed.strip_prefix(&format!("{key}:")) {
                    let rest = rest.trim();
                    if rest.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                        return format!("{indent}{key}: {value}\n");
                    }
                }
            }
            format!("{line}\n")
        })
        .collect()
}

/// One target of a file_sd file: address and labels.
pub type Target<'a> = (&'a str, &'a [(&'a str, &'a str)]);

/// The file_sd YAML for `targets`.
pub fn targets_yaml(targets: &[Target]) -> String {
    if targets.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::new();
    for (address, labels) in targets {
        out.push_str(&format!("- targets: [\"{address}\"]\n"));
        if !labels.is_empty() {
            out.push_str("  labels:\n");
            for (k, v) in *labels {
                out.push_str(&format!("    {k}: \"{v}\"\n"));
            }
        }
    }
    out
}

/// The shipped `prometheus/` directory in a temp dir: prometheus.yml, rules/ (and the
/// rest), with the shipped target files replaced by the test's (all empty at first).
#[derive(Debug)]
pub struct SiteConfig {
    /// The copy.
    pub dir: tempfile::TempDir,
}

impl SiteConfig {
    /// Copies the shipped configuration; `fast` compresses its timings to 1 s.
    pub fn new(fast: bool) -> Result<SiteConfig> {
        let dir = tempfile::tempdir()?;
        copy_dir(&server_dir().join("prometheus"), dir.path())?;
        for entry in std::fs::read_dir(dir.path().join("targets"))? {
            std::fs::write(entry?.path(), "[]\n")?;
        }
        if fast {
            let config = dir.path().join("prometheus.yml");
            let text = std::fs::read_to_string(&config)?;
            std::fs::write(
                &config,
                compress_durations(
                    &text,
                    &["scrape_interval", "evaluation_interval", "scrape_timeout"],
                    "1s",
                ),
            )?;
            for entry in std::fs::read_dir(dir.path().join("rules"))? {
                let path = entry?.path();
                let text = std::fs::read_to_string(&path)?;
                std::fs::write(&path, compress_durations(&text, &["for"], "1s"))?;
            }
        }
        Ok(SiteConfig { dir })
    }

    /// `prometheus.yml` of the copy.
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    /// Writes `targets/<name>.yml` atomically (file_sd watches the directory).
    pub fn set_targets(&self, name: &str, targets: &[Target]) -> Result<()> {
        let path = self.dir.path().join("targets").join(format!("{name}.yml"));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, targets_yaml(targets))?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

/// A Prometheus started on a given configuration file.
#[derive(Debug)]
pub struct SitePrometheus {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Its `--storage.tsdb.path`.
    pub tsdb: PathBuf,
}

impl SitePrometheus {
    /// Starts Prometheus on `config` with its TSDB in `tsdb`, the admin API and
    /// lifecycle on, alerts resent every second (the first is dropped before the
    /// Alertmanager is discovered), plus `extra` flags.
    pub fn start(config: &Path, tsdb: &Path, extra: &[&str]) -> Result<SitePrometheus> {
        let binary = program("prometheus", "prometheus")?;
        let address = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address={address}"),
            "--web.enable-admin-api".into(),
            "--web.enable-lifecycle".into(),
            "--rules.alert.resend-delay=1s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Child::spawn("prometheus", &binary, &args, &[])?;
        let ready = format!("http://{address}/-/ready");
        if !wait_until(Duration::from_secs(30), || get_text(&ready).is_ok()) {
            bail!("Prometheus did not become ready; log:\n{}", child.log());
        }
        Ok(SitePrometheus {
            child,
            address,
            tsdb: tsdb.to_path_buf(),
        })
    }

    /// `http://ADDRESS`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// An instant query: `(labels, value)` per series (a scalar is one unlabelled
    /// series).
    pub fn query(&self, expr: &str) -> Result<Vec<(Value, f64)>> {
        let mut response = http()
            .get(format!("{}/api/v1/query", self.url()))
            .query("query", expr)
            .call()?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        if body["status"] != "success" {
            bail!("query {expr}: {body}");
        }
        let data = &body["data"];
        if data["resultType"] == "scalar" {
            let value: f64 = data["result"][1].as_str().unwrap_or("NaN").parse()?;
            return Ok(vec![(Value::Null, value)]);
        }
        let mut out = Vec::new();
        for series in data["result"].as_array().into_iter().flatten() {
            let value: f64 = series["value"][1].as_str().unwrap_or("NaN").parse()?;
            out.push((series["metric"].clone(), value));
        }
        Ok(out)
    }

    /// Waits until `expr` returns a series, and returns them.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Result<Vec<(Value, f64)>> {
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

/// One HTTP request a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request path.
    pub path: String,
    /// The body as text.
    pub body: String,
}

/// An HTTP server on a free loopback port that answers 200 and a Telegram-shaped body
/// to every request and records its path and body: it stands in for the Telegram, Discord,
/// Slack, PagerDuty and webhook APIs, one path prefix each.
#[derive(Debug)]
pub struct HttpSink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl HttpSink {
    /// Starts the sink (it lives as long as the process).
    pub fn start() -> Result<HttpSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = serve_http(stream, &sink);
                });
            }
        });
        Ok(HttpSink { url, received })
    }

    /// Requests whose path starts with `prefix`.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits until a request under `prefix` has a body containing every one of
    /// `needles`; returns it.
    pub fn wait_for(&self, prefix: &str, needles: &[&str], timeout: Duration) -> Result<Received> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .received(prefix)
                .into_iter()
                .find(|r| needles.iter().all(|n| r.body.contains(n)));
            found.is_some()
        });
        found.with_context(|| {
            format!(
                "nothing under {prefix} contained {needles:?} within {timeout:?}; received: {:#?}",
                self.received(prefix)
            )
        })
    }
}

fn serve_http(stream: TcpStream, sink: &Mutex<Vec<Received>>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
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
        sink.lock().unwrap().push(Received {
            path,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        // Telegram's answer to sendMessage (Alertmanager 0.25 reads its message id and
        // crashes on an answer without one); the other APIs only look at the status.
        let answer =
            br#"{"ok":true,"result":{"message_id":1,"date":0,"chat":{"id":42,"type":"group"}}}"#;
        let mut out = &stream;
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            answer.len()
        )?;
        out.write_all(answer)?;
        out.flush()?;
    }
}

/// A minimal SMTP server on a free loopback port (no TLS, no AUTH advertised) that
/// records each message's data: it stands in for the mail service.
#[derive(Debug)]
pub struct SmtpSink {
    /// `127.0.0.1:PORT`.
    pub address: String,
    messages: Arc<Mutex<Vec<String>>>,
}

impl SmtpSink {
    /// Starts the sink (it lives as long as the process).
    pub fn start() -> Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = serve_smtp(stream, &sink);
                });
            }
        });
        Ok(SmtpSink { address, messages })
    }

    /// The messages received so far (headers and body, dot-unstuffed).
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message contains every one of `needles`.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self
                .messages()
                .into_iter()
                .find(|m| needles.iter().all(|n| m.contains(n)));
            found.is_some()
        });
        found.with_context(|| {
            format!(
                "no mail contained {needles:?} within {timeout:?}; received: {:#?}",
                self.messages()
            )
        })
    }
}

fn serve_smtp(stream: TcpStream, sink: &Mutex<Vec<String>>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = &stream;
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => out.write_all(b"250-sink.test\r\n250 8BITMIME\r\n")?,
            "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => out.write_all(b"250 OK\r\n")?,
            "DATA" => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut message = String::new();
                loop {
                    let mut data = String::new();
                    if reader.read_line(&mut data)? == 0 {
                        return Ok(());
                    }
                    if data.trim_end_matches(['\r', '\n']) == "." {
                        break;
                    }
                    message.push_str(data.strip_prefix('.').unwrap_or(&data));
                }
                sink.lock().unwrap().push(message);
                out.write_all(b"250 OK queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 Bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"502 Command not implemented\r\n")?,
        }
        out.flush()?;
    }
}

/// Runs a program to completion; returns (success, stdout and stderr).
pub fn run(program_path: &Path, args: &[&str], dir: &Path) -> Result<(bool, String)> {
    let output = std::process::Command::new(program_path)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("run {}", program_path.display()))?;
    Ok((
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    ))
}

/// Alertmanager started on a given configuration file, gossip off.
#[derive(Debug)]
pub struct SiteAlertmanager {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    _data: tempfile::TempDir,
}

impl SiteAlertmanager {
    /// Starts Alertmanager on `config` with a fresh storage directory.
    pub fn start(config: &Path) -> Result<SiteAlertmanager> {
        let binary = program("prometheus-alertmanager", "prometheus-alertmanager")?;
        let data = tempfile::tempdir()?;
        let address = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", data.path().display()),
            format!("--web.listen-address={address}"),
            "--cluster.listen-address=".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Child::spawn("alertmanager", &binary, &args, &[])?;
        let ready = format!("http://{address}/-/ready");
        if !wait_until(Duration::from_secs(30), || get_text(&ready).is_ok()) {
            bail!("Alertmanager did not become ready; log:\n{}", child.log());
        }
        Ok(SiteAlertmanager {
            child,
            address,
            _data: data,
        })
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`, inhibited ones included).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let body: Value = serde_json::from_str(&get_text(&format!(
            "http://{}/api/v2/alerts",
            self.address
        ))?)?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }
}
