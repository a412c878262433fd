//! The monitoring server of `config/server/` under test: the shipped Prometheus
//! configuration copied to a temp dir with the test's target files, a Prometheus
//! started on it, and the sinks that stand in for the chat, paging and mail services.
//!
//! Time compression: the shipped files use production timings (15 s scrapes, `for:`
//! of minutes, Alertmanager group waits of 30 s to a day). Tests that need alerts
//! rewrite only those durations (to 1 s); expressions, labels, routes and receivers are
//! the shipped ones.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::sink::Recorder;
use crate::{Prometheus, workspace_root};

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

/// Rewrites the scrape and evaluation intervals and the scrape timeout of a Prometheus
/// configuration file to 1 s, in place.
pub fn compress_prometheus_timings(config: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    std::fs::write(
        config,
        compress_durations(
            &text,
            &["scrape_interval", "evaluation_interval", "scrape_timeout"],
            "1s",
        ),
    )
    .with_context(|| format!("write {}", config.display()))
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
            compress_prometheus_timings(&dir.path().join("prometheus.yml"))?;
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

/// The shipped site configuration with 1 s timings and its `nodes` targets set to
/// `address` labelled `node`, and a Prometheus on it with its TSDB in `tsdb`.
pub fn site_scraping(address: &str, node: &str, tsdb: &Path) -> Result<(SiteConfig, Prometheus)> {
    let site = SiteConfig::new(true)?;
    site.set_targets("nodes", &[(address, &[("node", node)])])?;
    let prometheus = Prometheus::start_site(&site.config_file(), tsdb, &[])?;
    Ok((site, prometheus))
}

impl Prometheus {
    /// Starts Prometheus on `config` with its TSDB in `tsdb`, the admin API and
    /// lifecycle on, alerts resent every second (the first is dropped before the
    /// Alertmanager is discovered), plus `extra` flags.
    pub fn start_site(config: &Path, tsdb: &Path, extra: &[&str]) -> Result<Prometheus> {
        let mut flags = vec![
            "--web.enable-admin-api",
            "--web.enable-lifecycle",
            "--rules.alert.resend-delay=1s",
        ];
        flags.extend_from_slice(extra);
        Prometheus::start_with_config(config, tsdb, &flags)
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
    recorder: Recorder<Received>,
}

/// Telegram's answer to sendMessage (Alertmanager 0.25 reads its message id and crashes
/// on an answer without one); the other APIs only look at the status.
const TELEGRAM_ANSWER: &[u8] =
    br#"{"ok":true,"result":{"message_id":1,"date":0,"chat":{"id":42,"type":"group"}}}"#;

impl HttpSink {
    /// Starts the sink (it lives as long as the process).
    pub fn start() -> Result<HttpSink> {
        let recorder = Recorder::http(
            |path, body| {
                Some(Received {
                    path,
                    body: String::from_utf8_lossy(&body).into_owned(),
                })
            },
            TELEGRAM_ANSWER,
        )?;
        Ok(HttpSink {
            url: format!("http://{}", recorder.address),
            recorder,
        })
    }

    /// Requests whose path starts with `prefix`.
    pub fn received(&self, prefix: &str) -> Vec<Received> {
        self.recorder
            .records()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }

    /// Waits until a request under `prefix` has a body containing every one of
    /// `needles`; returns it.
    pub fn wait_for(&self, prefix: &str, needles: &[&str], timeout: Duration) -> Result<Received> {
        self.recorder
            .wait_for(timeout, |records| {
                records
                    .iter()
                    .find(|r| {
                        r.path.starts_with(prefix) && needles.iter().all(|n| r.body.contains(n))
                    })
                    .cloned()
            })
            .with_context(|| {
                format!(
                    "nothing under {prefix} contained {needles:?} within {timeout:?}; received: {:#?}",
                    self.received(prefix)
                )
            })
    }
}

/// A minimal SMTP server on a free loopback port (no TLS, no AUTH advertised) that
/// records each message's data: it stands in for the mail service.
#[derive(Debug)]
pub struct SmtpSink {
    /// `127.0.0.1:PORT`.
    pub address: String,
    recorder: Recorder<String>,
}

impl SmtpSink {
    /// Starts the sink (it lives as long as the process).
    pub fn start() -> Result<SmtpSink> {
        let recorder = Recorder::start(serve_smtp)?;
        Ok(SmtpSink {
            address: recorder.address.to_string(),
            recorder,
        })
    }

    /// The messages received so far (headers and body, dot-unstuffed).
    pub fn messages(&self) -> Vec<String> {
        self.recorder.records()
    }

    /// Waits until a message contains every one of `needles`.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> Result<String> {
        self.recorder
            .wait_for(timeout, |messages| {
                messages
                    .iter()
                    .find(|m| needles.iter().all(|n| m.contains(n)))
                    .cloned()
            })
            .with_context(|| {
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
