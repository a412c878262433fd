//! Limits that keep the server answering whatever clients do: a cap on open
//! connections, header-read and idle timeouts, request-size limits, a shutdown
//! deadline, and `RLIMIT_NOFILE` raised at start. The same flags for every binary
//! ([`WebFlags`], flattened into each one's command line).

use std::path::PathBuf;
use std::time::Duration;

/// Largest request head (request line and headers), in bytes. hyper's floor is 8 KiB;
/// Prometheus' requests are a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Largest request body, in bytes (only `POST /api/test-alert` takes one, a few bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The server's hardening settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections. At the cap, a new connection closes the connection idle
    /// the longest; if every one has a request in flight, the new one is closed.
    pub max_connections: usize,
    /// Time from a request's first byte to the end of its headers (TLS handshake
    /// included).
    pub read_header_timeout: Duration,
    /// Time a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM; then every connection is
    /// closed.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            read_header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Default of `--web.max-connections`: room for hundreds of scrapers, and with the
/// process's other descriptors still under systemd's default soft limit of 1024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// What binaries pass to [`crate::serve`] besides routes: limits and the web config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// Connection and request limits.
    pub limits: Limits,
    /// `--web.config.file`.
    pub web_config_file: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected e.g. 10s, 2m, 500ms)"))
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The server flags every nodewatch binary takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct WebFlags {
    /// TLS, basic auth and response headers (exporter-toolkit's YAML format; see
    /// docs/web-config.md). Re-read when it or a certificate changes.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Most open connections; at the cap the longest-idle one is closed for a new one
    /// [default: 512].
    #[arg(long = "web.max-connections", value_name = "N", value_parser = parse_positive)]
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, TLS handshake included
    /// [default: 10s].
    #[arg(long = "web.read-header-timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub read_header_timeout: Option<Duration>,
    /// Time an idle keep-alive connection is kept open [default: 2m].
    #[arg(long = "web.idle-timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Time in-flight requests get to finish on SIGTERM [default: 5s].
    #[arg(long = "web.shutdown-timeout", value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

impl WebFlags {
    /// The settings: the flags given, defaults for the rest.
    pub fn settings(&self) -> ServerSettings {
        let defaults = Limits::default();
        ServerSettings {
            limits: Limits {
                max_connections: self.max_connections.unwrap_or(defaults.max_connections),
                read_header_timeout: self
                    .read_header_timeout
                    .unwrap_or(defaults.read_header_timeout),
                idle_timeout: self.idle_timeout.unwrap_or(defaults.idle_timeout),
                shutdown_timeout: self.shutdown_timeout.unwrap_or(defaults.shutdown_timeout),
            },
            web_config_file: self.web_config_file.clone(),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (systemd starts services at a
/// soft 1024 to spare old `select()` users; this process uses epoll). The connection
/// cap, not this, bounds the descriptors clients can take; the headroom is for the
/// collectors. Returns `(before, after)` soft limits.
// rlim_t is 32 bits on armv7, 64 elsewhere.
#[allow(clippy::useless_conversion)]
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft >= hard {
        return Ok((soft.into(), soft.into()));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    Ok((soft.into(), hard.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        web: WebFlags,
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from(["x"]).expect("parse");
        assert_eq!(cli.web.settings(), ServerSettings::default());
        let cli = Cli::try_parse_from([
            "x",
            "--web.max-connections=3",
            "--web.read-header-timeout=2s",
            "--web.idle-timeout=1m",
            "--web.shutdown-timeout=500ms",
            "--web.config.file=w.yml",
        ])
        .expect("parse");
        let s = cli.web.settings();
        assert_eq!(s.limits.max_connections, 3);
        assert_eq!(s.limits.read_header_timeout, Duration::from_secs(2));
        assert_eq!(s.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.limits.shutdown_timeout, Duration::from_millis(500));
        assert_eq!(s.web_config_file, Some(PathBuf::from("w.yml")));
        assert!(Cli::try_parse_from(["x", "--web.max-connections=0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--web.idle-timeout=soon"]).is_err());
    }
}
