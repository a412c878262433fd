//! The agent's one HTTP client: plain-HTTP GETs to local endpoints (the builder's
//! health check, the exporters' `/metrics` for the display) and the LoRa gateway's
//! POSTs to Alertmanager. It is hyper's HTTP/1
//! client over a tokio `TcpStream` — already in the tree through axum and bollard — so
//! the agent parses no HTTP by hand and links no TLS (design §2).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

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

/// GETs `url` with the given `Accept` header and returns the status and the body, at
/// most `max_bytes` long. No timeout of its own: callers wrap it in theirs.
pub async fn get(
    url: &HttpUrl,
    accept: &'static str,
    max_bytes: usize,
) -> Result<(u16, Bytes), String> {
    request(url, hyper::Method::GET, accept, None, max_bytes).await
}

/// POSTs a JSON body to `url` (the LoRa gateway's alerts to Alertmanager) and returns
/// the status and the body, at most `max_bytes` long. No timeout of its own.
pub async fn post_json(
    url: &HttpUrl,
    body: Bytes,
    max_bytes: usize,
) -> Result<(u16, Bytes), String> {
    request(
        url,
        hyper::Method::POST,
        "application/json",
        Some(body),
        max_bytes,
    )
    .await
}

async fn request(
    url: &HttpUrl,
    method: hyper::Method,
    accept: &'static str,
    body: Option<Bytes>,
    max_bytes: usize,
) -> Result<(u16, Bytes), String> {
    let stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("cannot start HTTP: {e}"))?;
    // The connection task ends with the exchange (Connection: close) or the caller's timeout.
    let driver = tokio::spawn(connection);
    let host = if url.host.contains(':') {
        format!("[{}]:{}", url.host, url.port)
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(url.path.as_str())
        .header(hyper::header::HOST, host)
        .header(
            hyper::header::USER_AGENT,
            concat!("nodewatch-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::ACCEPT, accept)
        .header(hyper::header::CONNECTION, "close");
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no valid HTTP answer: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("answer larger than {max_bytes} bytes")
                } else {
                    format!("cannot read the answer: {e}")
                }
            })?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// Serves one canned answer on a loopback port and returns the URL.
    async fn serve_once(answer: &'static [u8]) -> HttpUrl {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(answer).await;
        });
        parse_http_url(&format!("http://127.0.0.1:{port}/x")).expect("url")
    }

    #[tokio::test]
    async fn plain_chunked_oversized_and_garbage_answers() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(
            get(&url, "application/json", 100).await.expect("get"),
            (200, Bytes::from_static(b"{}"))
        );
        let url = serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").await;
        assert_eq!(
            get(&url, "text/plain", 100).await.expect("get").1,
            Bytes::from_static(b"abcde")
        );
        let url =
            serve_once(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
                .await;
        assert_eq!(get(&url, "text/plain", 100).await.expect("get").0, 500);
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789").await;
        assert!(
            get(&url, "text/plain", 5)
                .await
                .expect_err("too big")
                .contains("larger than 5")
        );
        let url = serve_once(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        assert!(
            get(&url, "text/plain", 100)
                .await
                .expect_err("garbage")
                .contains("no valid HTTP answer")
        );
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = parse_http_url(&format!("http://127.0.0.1:{port}/")).expect("url");
        assert!(
            get(&url, "text/plain", 100)
                .await
                .expect_err("refused")
                .starts_with("cannot connect")
        );
    }
}
