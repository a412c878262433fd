//! Sending one remote-write request, and what its answer means.
//!
//! The connection is hyper's HTTP/1 client (the agent's one HTTP stack) over a tokio
//! `TcpStream`, wrapped in rustls (ring provider) for `https://`. It is kept open
//! between sends and made again when the receiver closed it. Credentials are read
//! from their files for every request, so a rotated password or token is picked up.
//!
//! [`classify`] maps an answer to what the queue does with the batch, as Prometheus
//! does: 2xx accepted; 5xx and 429 retried with backoff (`Retry-After` honoured); any
//! other status refused for good, so the batch is dropped and counted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::HeaderMap;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Longest `Retry-After` honoured (a receiver asking for more is retried sooner).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Most bytes of an answer read (receivers answer with a short text).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Most characters of an answer's body quoted in errors.
const QUOTED_BODY_CHARS: usize = 200;

/// What to do with a batch after an answer (or no answer).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The receiver took it.
    Accepted,
    /// Try again later: `reason` labels the error counter; `after` is the receiver's
    /// `Retry-After`, when it gave one.
    Retry {
        /// `network`, `timeout`, `http_5xx`, `http_429`, `credentials`.
        reason: &'static str,
        /// The wait the receiver asked for.
        after: Option<Duration>,
        /// For the log and health.
        message: String,
    },
    /// The receiver refused it for good: drop the batch and count it.
    Reject {
        /// `http_4xx` (or another status that is not worth retrying).
        reason: &'static str,
        /// For the log and health.
        message: String,
    },
}

/// Classifies an HTTP answer: `status`, its headers and (the start of) its body, at
/// `now` (for a `Retry-After` date). Never panics, whatever the input.
pub fn classify(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Outcome {
    let quoted = quote_body(body);
    let message = if quoted.is_empty() {
        format!("the receiver answered {status}")
    } else {
        format!("the receiver answered {status}: {quoted}")
    };
    match status {
        200..=299 => Outcome::Accepted,
        429 | 500..=599 => Outcome::Retry {
            reason: if status == 429 {
                "http_429"
            } else {
                "http_5xx"
            },
            after: headers
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, now)),
            message,
        },
        _ => Outcome::Reject {
            reason: "http_4xx",
            message,
        },
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The start of an answer's body as one line of printable text.
fn quote_body(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTED_BODY_CHARS)
        .collect::<String>()
        .trim()
        .to_string()
}

/// A parsed receiver URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (80 or 443 when absent).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL without user info.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?} carries credentials; use basic_auth with a password_file"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} has no usable host or path"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// None.
    None,
    /// Basic: the user name and the file holding the password.
    Basic {
        /// The user name.
        username: String,
        /// The password's file.
        password_file: PathBuf,
    },
    /// `Authorization: Bearer`, the token from a file.
    Bearer {
        /// The token's file.
        token_file: PathBuf,
    },
}

/// The user the agent runs as.
#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Reads a secret from its file (`key` names the setting in errors). As the LoRa
/// key files: the file must be readable by its owner only and owned by the agent's
/// user, both checked on the opened file. Surrounding blanks and newlines are
/// trimmed, as Prometheus does.
pub fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{key}: {} has mode {mode:04o}; a secret must be readable by its owner only (chmod 600)",
            path.display()
        ));
    }
    let user = effective_uid();
    if meta.uid() != user {
        return Err(format!(
            "{key}: {} is owned by uid {}, not by the agent's user (uid {user}); chown it",
            path.display(),
            meta.uid()
        ));
    }
    let mut text = String::new();
    file.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(format!("{key}: {} is empty", path.display()));
    }
    Ok(secret)
}

impl Auth {
    /// The `Authorization` header value, read from the file now.
    pub fn header(&self) -> Result<Option<String>, String> {
        match self {
            Auth::None => Ok(None),
            Auth::Basic {
                username,
                password_file,
            } => {
                let password = read_secret("remote_write.basic_auth.password_file", password_file)?;
                Ok(Some(format!(
                    "Basic {}",
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        format!("{username}:{password}"),
                    )
                )))
            }
            Auth::Bearer { token_file } => {
                let token = read_secret("remote_write.bearer_token_file", token_file)?;
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }
}

/// Where the system's CA bundle is on the distributions the agent runs on (Debian and
/// Raspberry Pi OS first).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS client configuration: the roots of `ca_file`, else of the system bundle.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let (key, path) = match ca_file {
        Some(path) => ("remote_write.ca_file", path.to_path_buf()),
        None => (
            "remote_write (system CA bundle)",
            SYSTEM_CA_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    format!(
                        "remote_write: no system CA bundle ({}); install ca-certificates or set remote_write.ca_file",
                        SYSTEM_CA_BUNDLES.join(", ")
                    )
                })?,
        ),
    };
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{key}: {}: {e}", path.display()))?;
        found += 1;
        // The system bundle may hold a certificate rustls cannot use; skip it.
        if let Err(e) = roots.add(cert)
            && ca_file.is_some()
        {
            return Err(format!("{key}: {}: {e}", path.display()));
        }
    }
    if found == 0 || roots.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends remote-write requests to one receiver over a kept connection.
pub struct Client {
    endpoint: Endpoint,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    auth: Auth,
    timeout: Duration,
    connection: Option<(SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for `endpoint` (TLS set up from `ca_file` or the system bundle for
    /// `https://`).
    pub fn new(
        endpoint: Endpoint,
        ca_file: Option<&Path>,
        auth: Auth,
        timeout: Duration,
    ) -> Result<Client, String> {
        let tls = if endpoint.tls {
            let server_name = rustls_pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("remote_write.url: host {:?}: {e}", endpoint.host))?;
            Some((
                tokio_rustls::TlsConnector::from(tls_config(ca_file)?),
                server_name,
            ))
        } else {
            None
        };
        Ok(Client {
            endpoint,
            tls,
            auth,
            timeout,
            connection: None,
        })
    }

    /// Sends one compressed `WriteRequest`; the answer, classified. Never waits longer
    /// than the timeout.
    pub async fn send(&mut self, body: Bytes) -> Outcome {
        let authorization = match self.auth.header() {
            Ok(h) => h,
            Err(message) => {
                return Outcome::Retry {
                    reason: "credentials",
                    after: None,
                    message,
                };
            }
        };
        match tokio::time::timeout(self.timeout, self.exchange(body, authorization)).await {
            Ok(Ok((status, headers, answer))) => {
                classify(status, &headers, &answer, SystemTime::now())
            }
            Ok(Err(message)) => {
                self.drop_connection();
                Outcome::Retry {
                    reason: "network",
                    after: None,
                    message,
                }
            }
            Err(_) => {
                self.drop_connection();
                Outcome::Retry {
                    reason: "timeout",
                    after: None,
                    message: format!("no answer within {:?}", self.timeout),
                }
            }
        }
    }

    fn drop_connection(&mut self) {
        if let Some((_, driver)) = self.connection.take() {
            driver.abort();
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        let stream =
            tokio::net::TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| {
                    format!(
                        "cannot connect to {}:{}: {e}",
                        self.endpoint.host, self.endpoint.port
                    )
                })?;
        let _ = stream.set_nodelay(true);
        let (sender, driver) = match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.endpoint.host))?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("cannot start HTTP: {e}"))?;
                (
                    sender,
                    tokio::spawn(async move {
                        let _ = connection.await;
                    }),
                )
            }
            None => {
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| format!("cannot start HTTP: {e}"))?;
                (
                    sender,
                    tokio::spawn(async move {
                        let _ = connection.await;
                    }),
                )
            }
        };
        self.connection = Some((sender, driver));
        Ok(())
    }

    async fn exchange(
        &mut self,
        body: Bytes,
        authorization: Option<String>,
    ) -> Result<(u16, HeaderMap, Bytes), String> {
        let reusable = match self.connection.as_mut() {
            Some((sender, _)) => sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.drop_connection();
            self.connect().await?;
        }
        let Some((sender, _)) = self.connection.as_mut() else {
            return Err("no connection".into());
        };
        let mut request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(self.endpoint.path.as_str())
            .header(hyper::header::HOST, self.endpoint.host_header())
            .header(
                hyper::header::USER_AGENT,
                concat!("nodewatch-agent/", env!("CARGO_PKG_VERSION")),
            )
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        if let Some(value) = authorization {
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no valid HTTP answer: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        // A body larger than the limit is cut: only its start is quoted.
        let answer = match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                self.drop_connection();
                Bytes::new()
            }
        };
        Ok((status, headers, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        map
    }

    #[test]
    fn classification_follows_prometheus() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(classify(204, &headers(&[]), b"", now), Outcome::Accepted);
        assert!(matches!(
            classify(503, &headers(&[("retry-after", "7")]), b"busy", now),
            Outcome::Retry { reason: "http_5xx", after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert!(matches!(
            classify(429, &headers(&[("retry-after", &date)]), b"", now),
            Outcome::Retry { reason: "http_429", after: Some(d), .. } if d == Duration::from_secs(30)
        ));
        assert!(matches!(
            classify(500, &headers(&[("retry-after", "999999")]), b"", now),
            Outcome::Retry {
                after: Some(MAX_RETRY_AFTER),
                ..
            }
        ));
        match classify(400, &headers(&[]), b"out of order sample\n\x1b[31m", now) {
            Outcome::Reject { reason, message } => {
                assert_eq!(reason, "http_4xx");
                assert_eq!(
                    message,
                    "the receiver answered 400: out of order sample  [31m"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(302, &headers(&[]), b"", now),
            Outcome::Reject { .. }
        ));
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://mimir.example:8443/api/v1/push").expect("url");
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (true, "mimir.example", 8443, "/api/v1/push")
        );
        assert_eq!(e.host_header(), "mimir.example:8443");
        let e = Endpoint::parse("http://[::1]/api/v1/write").expect("url");
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        assert!(e.is_loopback());
        assert_eq!(e.host_header(), "[::1]");
        assert_eq!(Endpoint::parse("https://h?x=1").expect("url").path, "/?x=1");
        assert!(Endpoint::parse("ftp://h/").is_err());
        assert!(Endpoint::parse("https://u:p@h/").is_err());
        assert!(Endpoint::parse("https://h:x/").is_err());
        assert!(Endpoint::parse("https:///x").is_err());
    }

    #[test]
    fn secret_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_secret("remote_write.basic_auth.password_file", &path).expect_err("0644");
        assert!(
            err.contains("mode 0644") && err.starts_with("remote_write.basic_auth.password_file"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_secret("k", &path).expect("ok"), "s3cret");
        let auth = Auth::Basic {
            username: "Aladdin".into(),
            password_file: path,
        };
        assert_eq!(
            auth.header().expect("header").as_deref(),
            Some("Basic QWxhZGRpbjpzM2NyZXQ=")
        );
        assert!(read_secret("k", &dir.path().join("missing")).is_err());
    }
}
