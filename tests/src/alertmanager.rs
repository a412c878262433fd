//! Debian's Alertmanager (`prometheus-alertmanager`) on a free loopback port, with
//! gossip off, routing everything to a webhook sink the test owns.

use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::{Child, free_port, get_text, http, program, read_http_request, wait_until};

/// One notification the webhook sink received.
#[derive(Debug, Clone)]
pub struct Notification {
    /// When it arrived.
    pub at: Instant,
    /// The webhook payload (`status`, `alerts`, `groupLabels`, …).
    pub body: Value,
}

/// An HTTP server on a free loopback port that records every POSTed JSON body, as
/// Alertmanager's webhook receiver would see them.
#[derive(Debug)]
pub struct WebhookSink {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    received: Arc<Mutex<Vec<Notification>>>,
}

impl WebhookSink {
    /// Starts the sink in a background thread (it lives as long as the process).
    pub fn start() -> Result<WebhookSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = serve_one(stream, &sink);
                });
            }
        });
        Ok(WebhookSink { url, received })
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until an alert matching `matches` arrives with `status` ("firing" or
    /// "resolved"); returns it with its arrival time.
    pub fn wait_for_alert(
        &self,
        status: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value)> {
        let deadline = Instant::now() + timeout;
        loop {
            for n in self.received() {
                for alert in n.body["alerts"].as_array().into_iter().flatten() {
                    if alert["status"] == status && matches(alert) {
                        return Ok((n.at, alert.clone()));
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "no {status} alert arrived within {timeout:?}; received: {:#?}",
                    self.received().iter().map(|n| &n.body).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve_one(stream: TcpStream, sink: &Mutex<Vec<Notification>>) -> Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    while let Some(body) = read_http_request(&mut reader)? {
        let at = Instant::now();
        if let Ok(body) = serde_json::from_slice(&body) {
            sink.lock().unwrap().push(Notification { at, body });
        }
        let mut out = &stream;
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
        out.flush()?;
    }
    Ok(())
}

/// A running Alertmanager.
#[derive(Debug)]
pub struct Alertmanager {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager routing every alert to `webhook_url` at once (group_wait
    /// 0 s, group_interval 1 s, resolved notifications on), gossip off.
    pub fn start(webhook_url: &str) -> Result<Alertmanager> {
        let binary = program("prometheus-alertmanager", "prometheus-alertmanager")?;
        let dir = tempfile::tempdir()?;
        let config = format!(
            "route:\n  receiver: sink\n  group_by: ['alertname', 'node']\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: sink\n    webhook_configs:\n      - url: '{webhook_url}'\n        \
             send_resolved: true\n"
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config)?;
        let address = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={address}"),
            "--cluster.listen-address=".to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = Child::spawn("alertmanager", &binary, &args, &[])?;
        let ready = format!("http://{address}/-/ready");
        if !wait_until(Duration::from_secs(30), || get_text(&ready).is_ok()) {
            bail!("Alertmanager did not become ready; log:\n{}", child.log());
        }
        Ok(Alertmanager {
            child,
            address,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT` (what the gateway's `alertmanager_urls` take).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let mut response = http()
            .get(format!("http://{}/api/v2/alerts", self.address))
            .call()?;
        let body: Value = serde_json::from_str(&response.body_mut().read_to_string()?)?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }
}
