//! Alertmanager's v2 API, as the gateway uses it: `POST /api/v2/alerts` with the
//! alerts it holds, each with `startsAt` and `endsAt` (Alertmanager ends an alert at
//! `endsAt` unless it is posted again, so active alerts are re-posted and resolved
//! ones are posted with `endsAt` = now).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;

use crate::http_client::{HttpUrl, parse_http_url, post_json};

/// One alert as Alertmanager's API takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// `alertname`, `node`, `severity`, `source`.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `value`, …
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
}

/// RFC 3339 in UTC, as Alertmanager parses it.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Posts to every configured Alertmanager.
#[derive(Debug, Clone)]
pub struct AlertmanagerClient {
    targets: Vec<(String, HttpUrl)>,
    timeout: Duration,
}

impl AlertmanagerClient {
    /// A client for base URLs like `http://127.0.0.1:9093` (checked by the config).
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, String> {
        let mut targets = Vec::new();
        for url in urls {
            let base = url.trim_end_matches('/');
            let mut parsed = parse_http_url(base)?;
            parsed.path = format!("{}/api/v2/alerts", parsed.path.trim_end_matches('/'));
            targets.push((base.to_string(), parsed));
        }
        Ok(Self { targets, timeout })
    }

    /// Posts `alerts` to every Alertmanager; returns one error per one that failed.
    pub async fn post(&self, alerts: &[PostableAlert]) -> Vec<String> {
        let body = match serde_json::to_vec(alerts) {
            Ok(b) => Bytes::from(b),
            Err(e) => return vec![format!("cannot encode alerts: {e}")],
        };
        let mut errors = Vec::new();
        for (base, url) in &self.targets {
            let answer =
                tokio::time::timeout(self.timeout, post_json(url, body.clone(), 64 * 1024)).await;
            match answer {
                Ok(Ok((200..=299, _))) => {}
                Ok(Ok((status, body))) => errors.push(format!(
                    "Alertmanager {base}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                )),
                Ok(Err(e)) => errors.push(format!("Alertmanager {base}: {e}")),
                Err(_) => errors.push(format!(
                    "Alertmanager {base}: no answer within {:?}",
                    self.timeout
                )),
            }
        }
        errors
    }
}
