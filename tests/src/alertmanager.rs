//! Debian's Alertmanager (`prometheus-alertmanager`) on a free loopback port, with
//! gossip off, routing everything to a webhook sink the test owns (or on a given
//! configuration file).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::sink::Recorder;
use crate::{Child, free_port, get_text, program, wait_until};

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
    recorder: Recorder<Notification>,
}

impl WebhookSink {
    /// Starts the sink in a background thread (it lives as long as the process).
    pub fn start() -> Result<WebhookSink> {
        let recorder = Recorder::http(
            |_path, body| {
                let at = Instant::now();
                let body = serde_json::from_slice(&body).ok()?;
                Some(Notification { at, body })
            },
            b"",
        )?;
        Ok(WebhookSink {
            url: format!("http://{}/hook", recorder.address),
            recorder,
        })
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Notification> {
        self.recorder.records()
    }

    /// Waits until an alert matching `matches` arrives with `status` ("firing" or
    /// "resolved"); returns it with its arrival time.
    pub fn wait_for_alert(
        &self,
        status: &str,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<(Instant, Value)> {
        self.recorder
            .wait_for(timeout, |notifications| {
                notifications.iter().find_map(|n| {
                    n.body["alerts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|alert| alert["status"] == status && matches(alert))
                        .map(|alert| (n.at, alert.clone()))
                })
            })
            .with_context(|| {
                format!(
                    "no {status} alert arrived within {timeout:?}; received: {:#?}",
                    self.received().iter().map(|n| &n.body).collect::<Vec<_>>()
                )
            })
    }
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
        let dir = tempfile::tempdir()?;
        let config = format!(
            "route:\n  receiver: sink\n  group_by: ['alertname', 'node']\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: sink\n    webhook_configs:\n      - url: '{webhook_url}'\n        \
             send_resolved: true\n"
        );
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config)?;
        Alertmanager::launch(&config_path, dir)
    }

    /// Starts Alertmanager on `config` with a fresh storage directory, gossip off.
    pub fn start_with_config(config: &Path) -> Result<Alertmanager> {
        Alertmanager::launch(config, tempfile::tempdir()?)
    }

    /// Starts Alertmanager on `config` with its storage under `dir`, which it keeps.
    fn launch(config: &Path, dir: tempfile::TempDir) -> Result<Alertmanager> {
        let binary = program("prometheus-alertmanager", "prometheus-alertmanager")?;
        let address = format!("127.0.0.1:{}", free_port());
        let args = [
            format!("--config.file={}", config.display()),
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

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`, inhibited ones
    /// included).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let body: Value =
            serde_json::from_str(&get_text(&format!("{}/api/v2/alerts", self.url()))?)?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }
}
