//! The builder's health check: a plain-HTTP GET through [`crate::http_client`] (the
//! agent links no TLS; the endpoint is on loopback) with one overall timeout, and the
//! judgement of `{"name":"block-builder","version":"…"}`.

use std::time::Duration;

pub use crate::http_client::{HttpUrl, parse_http_url};

/// Largest response read; the builder's answer is a few dozen bytes.
const MAX_RESPONSE: usize = 64 * 1024;

/// The outcome of one health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthResult {
    /// 200 with a JSON object.
    pub ok: bool,
    /// `version` from the answer.
    pub version: Option<String>,
    /// Why it is not ok (stable text, for logging once).
    pub error: Option<String>,
}

impl HealthResult {
    fn failed(error: String) -> Self {
        Self {
            ok: false,
            version: None,
            error: Some(error),
        }
    }
}

/// GETs `url` within `timeout` and judges the answer.
pub async fn check(url: &HttpUrl, timeout: Duration) -> HealthResult {
    match tokio::time::timeout(
        timeout,
        crate::http_client::get(url, "application/json", MAX_RESPONSE),
    )
    .await
    {
        Ok(Ok((status, body))) => judge(status, &body),
        Ok(Err(e)) => HealthResult::failed(e),
        Err(_) => HealthResult::failed(format!("no answer within {:.1}s", timeout.as_secs_f64())),
    }
}

/// A 200 whose body is a JSON object is healthy; its `version` is kept.
pub fn judge(status: u16, body: &[u8]) -> HealthResult {
    if status != 200 {
        return HealthResult::failed(format!("HTTP status {status}"));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => HealthResult {
            ok: true,
            version: map
                .get("version")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            error: None,
        },
        Ok(_) => HealthResult::failed("answer is JSON but not an object".into()),
        Err(_) => HealthResult::failed("answer is not JSON".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_answers() {
        let result = judge(200, br#"{"name":"block-builder","version":"0.1.0"}"#);
        assert!(result.ok);
        assert_eq!(result.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            judge(500, b"oops").error.as_deref(),
            Some("HTTP status 500")
        );
        assert!(!judge(200, b"<html>").ok);
        assert_eq!(
            judge(200, b"[1]").error.as_deref(),
            Some("answer is JSON but not an object")
        );
    }

    #[tokio::test]
    async fn hanging_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (_socket, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let url = parse_http_url(&format!("http://127.0.0.1:{port}/health-check")).expect("url");
        let started = std::time::Instant::now();
        let result = check(&url, Duration::from_millis(200)).await;
        assert!(!result.ok);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(result.error.expect("error").contains("no answer"));
        server.abort();
    }
}
