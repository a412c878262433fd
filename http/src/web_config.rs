//! `--web.config.file`: TLS, basic auth and response headers in the format of
//! Prometheus' exporter-toolkit, so a node_exporter user's file works unchanged.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients.crt
//!   min_version: TLS12
//! basic_auth_users:
//!   prometheus: $2y$10$...         # bcrypt hash
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! ```
//!
//! [`parse`] is pure (text in, validated settings out: what the fuzz target drives);
//! [`load`] reads the file and the certificates it names and builds the rustls
//! configuration. Every error names the file and the key.
//!
//! Reload: [`WebConfigHandle::current`] looks at the modification times of the file
//! and of every certificate and key it names, and loads them again when one changed.
//! The server asks at every new connection and every request, so new connections get
//! new certificates and every request is checked against the users in the file now,
//! as exporter-toolkit does. A file that became invalid is logged and the last good
//! one stays in force (exporter-toolkit would fail every request instead). Whether
//! TLS is on is decided at start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// Most bytes of a web config file read (real ones are a few hundred bytes).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A web config that cannot be used: which file, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct WebConfigError {
    /// The file (the web config, or a certificate it names).
    pub file: String,
    /// The key in the web config, dotted (`tls_server_config.cert_file`); `(file)` for
    /// the document as a whole.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn error(file: &Path, key: &str, message: impl Into<String>) -> WebConfigError {
    WebConfigError {
        file: file.display().to_string(),
        key: key.to_string(),
        message: message.into(),
    }
}

// The file as written. Keys exporter-toolkit knows that we do not implement are listed
// so that they get a clear error or warning rather than "unknown field".
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tls_server_config: Option<RawTls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    http_server_config: Option<RawHttp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    headers: Option<BTreeMap<String, String>>,
    http2: Option<bool>,
}

/// How clients must present certificates (`client_auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `NoClientCert` (the default).
    None,
    /// `VerifyClientCertIfGiven`: a certificate is optional, but checked against
    /// `client_ca_file` when sent.
    VerifyIfGiven,
    /// `RequireAndVerifyClientCert`: a certificate signed by `client_ca_file` is required.
    RequireAndVerify,
}

/// TLS protocol versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// `tls_server_config`, validated; paths resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// Client certificates.
    pub client_auth: ClientAuth,
    /// CA certificates client certificates are checked against (PEM).
    pub client_ca_file: Option<PathBuf>,
    /// Oldest version offered.
    pub min_version: TlsVersion,
    /// Newest version offered.
    pub max_version: TlsVersion,
}

/// A web config file, validated but not yet loaded (no certificate read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebSettings {
    /// TLS, if `tls_server_config` is there.
    pub tls: Option<TlsSettings>,
    /// User name → bcrypt hash. Empty: no basic auth.
    pub users: BTreeMap<String, String>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Things accepted and ignored, for the log (`cipher_suites`, …).
    pub warnings: Vec<String>,
}

/// Headers the server sets itself: the file may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "vary",
    "www-authenticate",
    "date",
];

/// Parses and validates a web config's text. `file` names it in errors; relative paths
/// in it are resolved against `base_dir` (the file's directory). Reads nothing.
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<WebSettings, WebConfigError> {
    // An empty file (or only comments) is valid: plain HTTP, no auth, as in
    // exporter-toolkit.
    let has_content = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---");
    let raw: RawFile = if has_content {
        serde_norway::from_str(text).map_err(|e| yaml_error(&e, file))?
    } else {
        RawFile::default()
    };
    let mut settings = WebSettings::default();
    if let Some(tls) = raw.tls_server_config {
        settings.tls = Some(parse_tls(tls, file, base_dir, &mut settings.warnings)?);
    }
    for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
        let key = format!("basic_auth_users.{user}");
        if user.is_empty() {
            return Err(error(file, "basic_auth_users", "a user name is empty"));
        }
        if user.contains(':') {
            return Err(error(
                file,
                &key,
                "a user name cannot hold ':' (basic auth separates it from the password with one)",
            ));
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(error(
                file,
                &key,
                "not a bcrypt hash (expected $2y$/$2b$/$2a$<cost>$<53 characters>; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ));
        }
        settings.users.insert(user, hash);
    }
    if let Some(http) = raw.http_server_config {
        if http.http2 == Some(true) {
            settings
                .warnings
                .push("http_server_config.http2: HTTP/2 is not served; HTTP/1.1 only".to_string());
        }
        for (name, value) in http.headers.unwrap_or_default() {
            let key = format!("http_server_config.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| error(file, &key, "not a valid header name"))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(error(
                    file,
                    &key,
                    "set by the server itself; it cannot be configured",
                ));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| error(file, &key, "not a valid header value"))?;
            settings.headers.push((header, value));
        }
    }
    Ok(settings)
}

/// serde_norway's message and the key it is about: the dotted path it starts with
/// (`tls_server_config.cert_file: invalid type ...`), and the field an "unknown field"
/// message names.
fn yaml_error(e: &serde_norway::Error, file: &Path) -> WebConfigError {
    let text = e.to_string();
    let (path, message) = match text.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(' ') => (Some(path), rest),
        _ => (None, text.as_str()),
    };
    // A YAML key may be empty (`?` alone, `"": x`): name it so, never as "".
    let unknown = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| {
            if field.is_empty() {
                "(empty key)"
            } else {
                field
            }
        });
    let key = match (path, unknown) {
        (Some(path), Some(field)) => format!("{path}.{field}"),
        (Some(path), None) => path.to_string(),
        (None, Some(field)) => field.to_string(),
        (None, None) => "(file)".to_string(),
    };
    error(file, &key, message)
}

fn parse_version(
    value: &str,
    file: &Path,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<TlsVersion, WebConfigError> {
    match value {
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS12" => Ok(TlsVersion::Tls12),
        // rustls has no TLS 1.0/1.1 (both deprecated by RFC 8996): the floor is 1.2.
        "TLS10" | "TLS11" => {
            warnings.push(format!(
                "{key}: {value} is not offered (TLS 1.0 and 1.1 are deprecated); TLS 1.2 is the oldest version served"
            ));
            Ok(TlsVersion::Tls12)
        }
        other => Err(error(
            file,
            key,
            format!("{other:?} is not one of TLS10, TLS11, TLS12, TLS13"),
        )),
    }
}

fn parse_tls(
    raw: RawTls,
    file: &Path,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<TlsSettings, WebConfigError> {
    let prefix = "tls_server_config";
    if raw.cert.is_some() || raw.key.is_some() {
        return Err(error(
            file,
            &format!(
                "{prefix}.{}",
                if raw.cert.is_some() { "cert" } else { "key" }
            ),
            "inline certificates are not supported; use cert_file and key_file",
        ));
    }
    if raw.client_allowed_sans.is_some() {
        return Err(error(
            file,
            &format!("{prefix}.client_allowed_sans"),
            "not supported; remove it or use a client CA that signs only the allowed clients",
        ));
    }
    for (key, set) in [
        ("cipher_suites", raw.cipher_suites.is_some()),
        ("curve_preferences", raw.curve_preferences.is_some()),
        (
            "prefer_server_cipher_suites",
            raw.prefer_server_cipher_suites.is_some(),
        ),
    ] {
        if set {
            warnings.push(format!(
                "{prefix}.{key} is ignored: rustls offers only its own modern cipher suites and groups"
            ));
        }
    }
    let path = |value: Option<String>, key: &str| -> Result<Option<PathBuf>, WebConfigError> {
        match value {
            None => Ok(None),
            Some(v) if v.trim().is_empty() => Err(error(file, key, "is empty")),
            Some(v) => Ok(Some(base_dir.join(v))),
        }
    };
    let cert_key = format!("{prefix}.cert_file");
    let key_key = format!("{prefix}.key_file");
    let cert_file = path(raw.cert_file, &cert_key)?;
    let key_file = path(raw.key_file, &key_key)?;
    let (cert_file, key_file) = match (cert_file, key_file) {
        (Some(c), Some(k)) => (c, k),
        (None, _) => return Err(error(file, &cert_key, "missing (TLS needs a certificate)")),
        (_, None) => return Err(error(file, &key_key, "missing (TLS needs a private key)")),
    };
    let ca_key = format!("{prefix}.client_ca_file");
    let client_ca_file = path(raw.client_ca_file, &ca_key)?;
    let auth_key = format!("{prefix}.client_auth_type");
    let client_auth = match raw.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "" | "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        // Accepting any certificate unverified protects nothing.
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(error(
                file,
                &auth_key,
                "unverified client certificates are not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
            ));
        }
        other => {
            return Err(error(
                file,
                &auth_key,
                format!(
                    "{other:?} is not one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    if client_auth != ClientAuth::None && client_ca_file.is_none() {
        return Err(error(
            file,
            &ca_key,
            "missing: client certificates are verified against it",
        ));
    }
    if client_auth == ClientAuth::None && client_ca_file.is_some() {
        return Err(error(
            file,
            &auth_key,
            "client_ca_file is set but client_auth_type does not verify client certificates (set VerifyClientCertIfGiven or RequireAndVerifyClientCert)",
        ));
    }
    let min_version = match &raw.min_version {
        Some(v) => parse_version(v, file, &format!("{prefix}.min_version"), warnings)?,
        None => TlsVersion::Tls12,
    };
    let max_version = match &raw.max_version {
        Some(v) => parse_version(v, file, &format!("{prefix}.max_version"), warnings)?,
        None => TlsVersion::Tls13,
    };
    if max_version < min_version {
        return Err(error(
            file,
            &format!("{prefix}.max_version"),
            "is older than min_version",
        ));
    }
    Ok(TlsSettings {
        cert_file,
        key_file,
        client_auth,
        client_ca_file,
        min_version,
        max_version,
    })
}

/// A web config loaded: its settings and, with TLS, the rustls configuration built
/// from the certificates as they were read.
#[derive(Debug)]
pub struct WebConfig {
    /// The settings.
    pub settings: WebSettings,
    /// With TLS: the server configuration for new connections.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl WebConfig {
    /// Plain HTTP, no auth, no headers (no `--web.config.file`).
    pub fn plain() -> WebConfig {
        WebConfig {
            settings: WebSettings::default(),
            tls: None,
        }
    }
}

fn read_limited(path: &Path, file_for_errors: &Path, key: &str) -> Result<Vec<u8>, WebConfigError> {
    use std::io::Read;
    let opened = std::fs::File::open(path).map_err(|e| {
        error(
            file_for_errors,
            key,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            error(
                file_for_errors,
                key,
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(error(
            file_for_errors,
            key,
            format!("{} is larger than {MAX_FILE_BYTES} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn certificates(
    path: &Path,
    file: &Path,
    key: &str,
) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bytes = read_limited(path, file, key)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            error(
                file,
                key,
                format!("{}: not PEM certificates: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(error(
            file,
            key,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration of `tls`, reading its files now.
pub fn server_config(
    tls: &TlsSettings,
    file: &Path,
) -> Result<Arc<rustls::ServerConfig>, WebConfigError> {
    let cert_key = "tls_server_config.cert_file";
    let key_key = "tls_server_config.key_file";
    let chain = certificates(&tls.cert_file, file, cert_key)?;
    let key_bytes = read_limited(&tls.key_file, file, key_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        error(
            file,
            key_key,
            format!("{}: no PEM private key in it: {e}", tls.key_file.display()),
        )
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (tls.min_version..=tls.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&versions)
        .map_err(|e| error(file, "tls_server_config.min_version", e.to_string()))?;
    let builder = match (&tls.client_auth, &tls.client_ca_file) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca_file)) => {
            let ca_key = "tls_server_config.client_ca_file";
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca_file, file, ca_key)? {
                roots.add(cert).map_err(|e| {
                    error(
                        file,
                        ca_key,
                        format!("{}: not a usable CA certificate: {e}", ca_file.display()),
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            );
            let verifier = if *auth == ClientAuth::VerifyIfGiven {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| error(file, ca_key, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        error(
            file,
            key_key,
            format!("the key does not fit the certificate or is unusable: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads, parses and loads the web config at `path` (certificates included).
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let bytes = read_limited(path, path, "(file)")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| error(path, "(file)", "not UTF-8 text"))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let settings = parse(text, path, base_dir)?;
    let tls = match &settings.tls {
        Some(tls) => Some(server_config(tls, path)?),
        None => None,
    };
    Ok(WebConfig { settings, tls })
}

/// Modification times of the file and of every file it names, to notice a change.
fn stamp(path: &Path, config: &WebConfig) -> Vec<Option<(SystemTime, u64)>> {
    let mut paths = vec![path.to_path_buf()];
    if let Some(tls) = &config.settings.tls {
        paths.push(tls.cert_file.clone());
        paths.push(tls.key_file.clone());
        paths.extend(tls.client_ca_file.clone());
    }
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

#[derive(Debug)]
struct Loaded {
    config: Arc<WebConfig>,
    stamp: Vec<Option<(SystemTime, u64)>>,
    /// The stamp of a file that failed to load, so the error is logged once.
    failed_stamp: Option<Vec<Option<(SystemTime, u64)>>>,
}

/// The web config in force, reloaded when its files change (see the module docs).
#[derive(Debug, Clone)]
pub struct WebConfigHandle {
    path: Option<PathBuf>,
    loaded: Arc<Mutex<Loaded>>,
}

impl WebConfigHandle {
    /// Loads `path` (an error stops the start), or plain HTTP without one.
    pub fn open(path: Option<&Path>) -> Result<WebConfigHandle, WebConfigError> {
        let config = match path {
            Some(p) => load(p)?,
            None => WebConfig::plain(),
        };
        for warning in &config.settings.warnings {
            tracing::warn!(file = %path.map(|p| p.display().to_string()).unwrap_or_default(), "{warning}");
        }
        let stamp = path.map(|p| stamp(p, &config)).unwrap_or_default();
        Ok(WebConfigHandle {
            path: path.map(Path::to_path_buf),
            loaded: Arc::new(Mutex::new(Loaded {
                config: Arc::new(config),
                stamp,
                failed_stamp: None,
            })),
        })
    }

    /// Whether connections are TLS (decided at start).
    pub fn tls(&self) -> bool {
        self.lock().config.tls.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config in force, loaded again first if a file changed. A load that fails
    /// keeps the last good config (logged once per change).
    pub fn current(&self) -> Arc<WebConfig> {
        let Some(path) = &self.path else {
            return self.lock().config.clone();
        };
        let mut loaded = self.lock();
        let now = stamp(path, &loaded.config);
        if now == loaded.stamp || loaded.failed_stamp.as_ref() == Some(&now) {
            return loaded.config.clone();
        }
        match load(path) {
            Ok(config) if config.tls.is_some() != loaded.config.tls.is_some() => {
                tracing::error!(
                    file = %path.display(),
                    "The web config now turns TLS {} but that takes a restart; keeping the config loaded before.",
                    if config.tls.is_some() { "on" } else { "off" }
                );
                loaded.failed_stamp = Some(now);
            }
            Ok(config) => {
                tracing::info!(file = %path.display(), "Web config reloaded.");
                for warning in &config.settings.warnings {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                loaded.stamp = stamp(path, &config);
                loaded.config = Arc::new(config);
                loaded.failed_stamp = None;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot reload the web config; keeping the one loaded before.");
                loaded.failed_stamp = Some(now);
            }
        }
        loaded.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<WebSettings, WebConfigError> {
        parse(text, Path::new("web.yml"), Path::new("/etc/nw"))
    }

    #[test]
    fn empty_file_is_plain_http() {
        assert_eq!(parse_str("").expect("empty"), WebSettings::default());
        assert_eq!(
            parse_str("# nothing\n---\n").expect("comments"),
            WebSettings::default()
        );
    }

    #[test]
    fn full_file_parses_with_paths_relative_to_the_file() {
        let hash = bcrypt::hash_with_result("secret", 4)
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY);
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS13\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        );
        let settings = parse_str(&text).expect("valid");
        let tls = settings.tls.expect("tls");
        assert_eq!(tls.cert_file, Path::new("/etc/nw/server.crt"));
        assert_eq!(tls.key_file, Path::new("/abs/server.key"));
        assert_eq!(
            tls.client_ca_file.as_deref(),
            Some(Path::new("/etc/nw/ca.crt"))
        );
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerify);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(settings.users.get("prometheus"), Some(&hash));
        assert_eq!(settings.headers.len(), 1);
        assert_eq!(settings.headers[0].0.as_str(), "x-frame-options");
    }

    /// Each bad file names the key at fault.
    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "tls_server_config:\n  key_file: k\n",
                "tls_server_config.cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n",
                "tls_server_config.key_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: Maybe\n",
                "tls_server_config.client_auth_type",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS14\n",
                "tls_server_config.min_version",
            ),
            (
                "basic_auth_users:\n  alice: plaintext\n",
                "basic_auth_users.alice",
            ),
            (
                "http_server_config:\n  headers:\n    Content-Type: text/html\n",
                "http_server_config.headers.Content-Type",
            ),
            (
                "http_server_config:\n  headers:\n    \"bad header\": x\n",
                "http_server_config.headers.bad header",
            ),
        ];
        for (text, key) in cases {
            let e = parse_str(text).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert_eq!(e.file, "web.yml");
            assert!(
                e.to_string().starts_with(&format!("web.yml: {key}: ")),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_yaml_are_errors_with_a_location() {
        let e = parse_str("tls_server_config:\n  cert_fle: x\n").expect_err("typo");
        assert_eq!(e.key, "tls_server_config.cert_fle", "{e}");
        assert!(e.message.contains("line 2 column 3"), "{e}");
        let e = parse_str("basic_auth_users: [\n").expect_err("syntax");
        assert_eq!(e.key, "basic_auth_users", "{e}");
        let e = parse_str("{ unclosed\n").expect_err("syntax");
        assert!(e.message.contains("line"), "{e}");
        let e = parse_str("tls_server_config:\n  cert_file: [1]\n").expect_err("type");
        assert_eq!(e.key, "tls_server_config.cert_file", "{e}");
        assert!(e.message.contains("line 2 column"), "{e}");
    }

    /// Found by the web_config fuzz target: `?` is an empty YAML key, and the error
    /// named the key as "".
    #[test]
    fn an_empty_key_is_named() {
        for text in ["?", "\"\": 1\n", "tls_server_config:\n  \"\": x\n"] {
            let e = parse_str(text).expect_err(text);
            assert!(!e.key.is_empty() && !e.key.ends_with('.'), "{text:?}: {e}");
            assert!(e.key.ends_with("(empty key)"), "{text:?}: {e}");
        }
    }

    #[test]
    fn old_tls_versions_and_go_only_keys_warn() {
        let settings = parse_str(
            "tls_server_config:\n  cert_file: c\n  key_file: k\n  min_version: TLS10\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        )
        .expect("valid");
        assert_eq!(settings.tls.expect("tls").min_version, TlsVersion::Tls12);
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
    }
}
