//! The builder's health check: a plain HTTP/1.1 GET (the agent links no TLS; the
//! endpoint is on loopback) with one overall timeout, and the parse of
//! `{"name":"block-builder","version":"…"}`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest response read; the builder's answer is a few dozen bytes.
const MAX_RESPONSE: usize = 64 * 1024;

/// An `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Parses a plain `http://` URL; anything else (https, user info) is refused with a
/// reason.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?} is not an http:// URL (the agent speaks plain HTTP to a local endpoint)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?} has no usable host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        None => 80,
    };
    Ok(HttpUrl {
        host: host.to_string(),
        port,
        path: path.to_string(),
    })
}

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
    match tokio::time::timeout(timeout, get(url)).await {
        Ok(Ok((status, body))) => judge(status, &body),
        Ok(Err(e)) => HealthResult::failed(e),
        Err(_) => HealthResult::failed(format!("no answer within {:.1}s", timeout.as_secs_f64())),
    }
}

/// Status and body of a GET.
async fn get(url: &HttpUrl) -> Result<(u16, Vec<u8>), String> {
    let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nodewatch-agent\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        url.path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut response = Vec::with_capacity(1024);
    let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
    limited
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    if response.len() > MAX_RESPONSE {
        return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
    }
    parse_response(&response)
}

/// Splits a complete HTTP/1.x response into status and (de-chunked) body.
pub fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete HTTP answer")?;
    let head = std::str::from_utf8(&response[..head_end]).map_err(|_| "HTTP head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = &response[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunked body")?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or("truncated chunk")?;
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
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/health-check").expect("url"),
            HttpUrl {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health-check".into()
            }
        );
        let u = parse_http_url("http://localhost").expect("url");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = parse_http_url("http://[::1]:3000/abc/health-check").expect("url");
        assert_eq!((u.host.as_str(), u.port), ("::1", 3000));
        assert!(parse_http_url("https://x/").is_err());
        assert!(parse_http_url("http://x:notaport/").is_err());
        assert!(parse_http_url("http://u@x/").is_err());
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n{\"name\":\"block-builder\",\"version\":\"0.1.0\"}";
        let (status, body) = parse_response(ok).expect("parse");
        let result = judge(status, &body);
        assert!(result.ok);
        assert_eq!(result.version.as_deref(), Some("0.1.0"));

        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"ver\r\n14\r\nsion\":\"1.2.3\",\"a\":1}\r\n0\r\n\r\n";
        let (status, body) = parse_response(chunked).expect("parse");
        assert_eq!(judge(status, &body).version.as_deref(), Some("1.2.3"));

        let (status, body) =
            parse_response(b"HTTP/1.1 500 Internal Server Error\r\n\r\noops").expect("parse");
        assert_eq!(
            judge(status, &body).error.as_deref(),
            Some("HTTP status 500")
        );
        let (status, body) = parse_response(b"HTTP/1.0 200 OK\r\n\r\n<html>").expect("parse");
        assert!(!judge(status, &body).ok);
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
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
