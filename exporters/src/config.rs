//! The JSON-RPC settings both exporters share ([`RpcSettings`]), and the wallet
//! exporter's settings: a TOML file (every key optional, unknown keys refused), then the
//! wiki exporter's environment variables on top, so its users can switch without
//! editing anything.
//!
//! | env | TOML key | meaning |
//! |---|---|---|
//! | `WALLET_ADDRESSES` | `[[wallets]]` | comma-separated; an entry may be `name=0x…` |
//! | `SCROLL_RPC_URL` | `rpc_urls` | one URL, or several comma-separated, tried in order |
//! | `SITX_CONTRACT` | `sitx_contract` | the sITX token |
//! | `PORT` | `listen_address` | `PORT` means `:PORT` |
//! | `UPDATE_INTERVAL` | `interval_seconds` | seconds between refreshes |

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use alloy_primitives::Address;
use serde::Deserialize;

/// Scroll mainnet's chain id.
pub const SCROLL_CHAIN_ID: u64 = 534_352;
/// Multicall3's address, the same on every chain where it is deployed.
pub const MULTICALL3_ADDRESS: &str = "0xcA11bde05977b3631167028862bE2a173976CA11";
/// The sITX token on Scroll mainnet (18 decimals, not transferable).
pub const SITX_ADDRESS: &str = "0xc0579287f3CDE6BF796BE6E2bB61DbB06DA85024";
/// Scroll's public RPC endpoint.
pub const DEFAULT_RPC_URL: &str = "https://rpc.scroll.io";
/// The wallet exporter's port (design §1).
pub const DEFAULT_LISTEN_ADDRESS: &str = ":9101";

/// Errors in the settings. Each names the setting (and where it came from).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings (unknown keys included).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What `toml` said, with line and column.
        message: String,
    },
    /// A value is wrong.
    #[error("{setting}: {message}")]
    Invalid {
        /// The setting, e.g. `WALLET_ADDRESSES` or `wallets[2].address`.
        setting: String,
        /// What is wrong with it.
        message: String,
    },
}

fn invalid(setting: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        message: message.into(),
    }
}

/// The TOML file as written. See `config/wallet-exporter.toml` for every key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address (default `:9101`).
    pub listen_address: Option<String>,
    /// JSON-RPC URLs, tried in order (default Scroll's public endpoint).
    pub rpc_urls: Option<Vec<String>>,
    /// The chain every endpoint must be on (default 534352, Scroll mainnet).
    pub chain_id: Option<u64>,
    /// Seconds between refreshes (default 300).
    pub interval_seconds: Option<u64>,
    /// Timeout of one JSON-RPC request, in seconds (default 10).
    pub request_timeout_seconds: Option<u64>,
    /// First wait after a failed refresh, doubled up to the interval (default 5).
    pub retry_seconds: Option<u64>,
    /// Seconds between the block-height probes of every endpoint (default 60; the first
    /// one interval after start).
    pub probe_interval_seconds: Option<u64>,
    /// Multicall3's address (default the canonical one); `""` means a JSON-RPC batch.
    pub multicall_address: Option<String>,
    /// The sITX token (default Scroll mainnet's); `""` turns the sITX families off.
    pub sitx_contract: Option<String>,
    /// More ERC-20 tokens, exported in `nodewatch_wallet_token_balance`.
    pub tokens: Option<Vec<String>>,
    /// The wallets.
    pub wallets: Option<Vec<FileWallet>>,
}

/// One wallet in the TOML file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWallet {
    /// `0x…`, any case.
    pub address: String,
    /// Exported as the `name` label.
    pub name: Option<String>,
}

/// One wallet to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wallet {
    /// Its address.
    pub address: Address,
    /// Its name, if it has one.
    pub name: Option<String>,
}

/// The JSON-RPC settings both exporters share, read from the same TOML keys in both
/// files: `rpc_urls`, `chain_id`, `interval_seconds`, `request_timeout_seconds`,
/// `retry_seconds`, `probe_interval_seconds` and `multicall_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcSettings {
    /// JSON-RPC URLs, tried in order.
    pub urls: Vec<String>,
    /// Expected chain id.
    pub chain_id: u64,
    /// Time between refreshes.
    pub interval: Duration,
    /// Timeout of one JSON-RPC request.
    pub request_timeout: Duration,
    /// First wait after a failed refresh.
    pub retry: Duration,
    /// Between two block-height probes of the endpoints.
    pub probe_interval: Duration,
    /// Multicall3's address; `None` (`multicall_address = ""`) reads with a JSON-RPC
    /// batch instead.
    pub multicall: Option<Address>,
}

/// The keys of [`RpcSettings`] as written (or set by the environment), before the
/// defaults and checks.
#[derive(Debug, Default)]
pub struct RpcKeys {
    /// `rpc_urls`.
    pub rpc_urls: Option<Vec<String>>,
    /// `chain_id`.
    pub chain_id: Option<u64>,
    /// `interval_seconds`.
    pub interval_seconds: Option<u64>,
    /// `request_timeout_seconds`.
    pub request_timeout_seconds: Option<u64>,
    /// `retry_seconds`.
    pub retry_seconds: Option<u64>,
    /// `probe_interval_seconds`.
    pub probe_interval_seconds: Option<u64>,
    /// `multicall_address`.
    pub multicall_address: Option<String>,
}

/// Which endpoints an exporter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointRule {
    /// Any `http://` or `https://` URL: the wallet exporter only reads public balances.
    Http,
    /// `https://`, or `http://` to a loopback host only ([`check_rpc_url`]): the reward
    /// exporter signs claims.
    HttpsOrLoopback,
}

impl RpcSettings {
    /// Applies the defaults to `keys` and checks them. `interval_setting` names the
    /// refresh interval in errors (the wallet exporter's may come from
    /// `UPDATE_INTERVAL`).
    pub fn resolve(
        keys: RpcKeys,
        rule: EndpointRule,
        interval_setting: &str,
    ) -> Result<RpcSettings, ConfigError> {
        let urls = keys
            .rpc_urls
            .unwrap_or_else(|| vec![DEFAULT_RPC_URL.into()]);
        check_endpoints(&urls, rule)?;
        let seconds = |name: &str, value: Option<u64>, default: u64| match value.unwrap_or(default)
        {
            0 => Err(invalid(name, "must be at least 1 second")),
            v => Ok(Duration::from_secs(v)),
        };
        let multicall = match keys.multicall_address.as_deref().map(str::trim) {
            Some("") => None,
            other => Some(parse_address(
                "multicall_address",
                other.unwrap_or(MULTICALL3_ADDRESS),
            )?),
        };
        Ok(RpcSettings {
            urls,
            chain_id: keys.chain_id.unwrap_or(SCROLL_CHAIN_ID),
            interval: seconds(interval_setting, keys.interval_seconds, 300)?,
            request_timeout: seconds("request_timeout_seconds", keys.request_timeout_seconds, 10)?,
            retry: seconds("retry_seconds", keys.retry_seconds, 5)?,
            probe_interval: seconds("probe_interval_seconds", keys.probe_interval_seconds, 60)?,
            multicall,
        })
    }
}

/// At least one endpoint, each allowed by `rule`.
fn check_endpoints(urls: &[String], rule: EndpointRule) -> Result<(), ConfigError> {
    if urls.is_empty() {
        return Err(invalid(
            "rpc_urls",
            match rule {
                EndpointRule::Http => "at least one URL is needed",
                EndpointRule::HttpsOrLoopback => "one or more https:// URLs",
            },
        ));
    }
    for (i, url) in urls.iter().enumerate() {
        let setting = format!("rpc_urls[{i}]");
        match rule {
            EndpointRule::Http => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        setting,
                        format!("{} is not an http(s) URL", crate::rpc::redact(url)),
                    ));
                }
            }
            EndpointRule::HttpsOrLoopback => check_rpc_url(&setting, url)?,
        }
    }
    Ok(())
}

/// The settings in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listen address.
    pub listen_address: String,
    /// Endpoints, chain, refresh timing, Multicall3.
    pub rpc: RpcSettings,
    /// The sITX token, if any.
    pub sitx: Option<Address>,
    /// Every token read: sITX first (if set), then the others, without duplicates.
    pub tokens: Vec<Address>,
    /// The wallets.
    pub wallets: Vec<Wallet>,
}

/// An environment variable, trimmed; `None` when unset or empty.
fn var<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl Config {
    /// Reads the file (if any), then applies the environment `env` (the wiki's
    /// variables) on top.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                parse_file(&text, &path.display().to_string())?
            }
            None => FileConfig::default(),
        };
        Config::resolve(file, env)
    }

    /// Merges a parsed file with the environment and validates the result.
    pub fn resolve(
        mut file: FileConfig,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let listen_address = match var(env, "PORT") {
            Some(port) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid("PORT", format!("{port:?} is not a port number")))?;
                format!(":{port}")
            }
            None => file
                .listen_address
                .take()
                .unwrap_or_else(|| DEFAULT_LISTEN_ADDRESS.into()),
        };
        let rpc = RpcSettings::resolve(
            rpc_keys(&mut file, env)?,
            EndpointRule::Http,
            "interval_seconds / UPDATE_INTERVAL",
        )?;
        let (sitx, tokens) = tokens(
            var(env, "SITX_CONTRACT")
                .map(str::to_string)
                .or(file.sitx_contract),
            file.tokens.unwrap_or_default(),
        )?;
        let wallets = wallets(var(env, "WALLET_ADDRESSES"), file.wallets)?;
        Ok(Config {
            listen_address,
            rpc,
            sitx,
            tokens,
            wallets,
        })
    }
}

/// The file's JSON-RPC keys, with the wiki's `SCROLL_RPC_URL`, `UPDATE_INTERVAL` and
/// `CHAIN_ID` on top.
fn rpc_keys(file: &mut FileConfig, env: &HashMap<String, String>) -> Result<RpcKeys, ConfigError> {
    let interval_seconds = match var(env, "UPDATE_INTERVAL") {
        Some(v) => Some(v.parse().map_err(|_| {
            invalid(
                "UPDATE_INTERVAL",
                format!("{v:?} is not a number of seconds"),
            )
        })?),
        None => file.interval_seconds,
    };
    let chain_id = match var(env, "CHAIN_ID") {
        Some(v) => Some(
            v.parse()
                .map_err(|_| invalid("CHAIN_ID", format!("{v:?} is not a number")))?,
        ),
        None => file.chain_id,
    };
    Ok(RpcKeys {
        rpc_urls: var(env, "SCROLL_RPC_URL")
            .map(split_list)
            .or(file.rpc_urls.take()),
        chain_id,
        interval_seconds,
        request_timeout_seconds: file.request_timeout_seconds,
        retry_seconds: file.retry_seconds,
        probe_interval_seconds: file.probe_interval_seconds,
        multicall_address: file.multicall_address.take(),
    })
}

/// The sITX token (default Scroll mainnet's, `""` for none) and every token read: sITX
/// first, then `others` without duplicates.
fn tokens(
    sitx: Option<String>,
    others: Vec<String>,
) -> Result<(Option<Address>, Vec<Address>), ConfigError> {
    let sitx_text = sitx.unwrap_or_else(|| SITX_ADDRESS.into());
    let sitx = if sitx_text.trim().is_empty() {
        None
    } else {
        Some(parse_address("sitx_contract / SITX_CONTRACT", &sitx_text)?)
    };
    let mut tokens: Vec<Address> = sitx.into_iter().collect();
    for (i, token) in others.iter().enumerate() {
        let token = parse_address(&format!("tokens[{i}]"), token)?;
        if !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    Ok((sitx, tokens))
}

/// The wallets: `WALLET_ADDRESSES` if set, else the file's; at least one, each once.
fn wallets(
    env_list: Option<&str>,
    file: Option<Vec<FileWallet>>,
) -> Result<Vec<Wallet>, ConfigError> {
    let wallets = match env_list {
        Some(list) => parse_wallet_list(list)?,
        None => file
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                Ok(Wallet {
                    address: parse_address(&format!("wallets[{i}].address"), &w.address)?,
                    name: w.name.filter(|n| !n.is_empty()),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
    };
    if wallets.is_empty() {
        return Err(invalid(
            "wallets / WALLET_ADDRESSES",
            "no wallet to watch: list at least one address",
        ));
    }
    for (i, w) in wallets.iter().enumerate() {
        if wallets[..i].iter().any(|o| o.address == w.address) {
            return Err(invalid(
                "wallets / WALLET_ADDRESSES",
                format!("{} is listed twice", w.address),
            ));
        }
    }
    Ok(wallets)
}

/// Checks an RPC URL of an exporter that signs transactions: `https://`, or `http://`
/// to a loopback host only (127.0.0.0/8, `::1`, `localhost`), so a signed claim or the
/// answers it is built from never cross a network in clear. `setting` names the key.
pub fn check_rpc_url(setting: &str, url: &str) -> Result<(), ConfigError> {
    let shown = crate::rpc::redact(url);
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(invalid(setting, format!("{shown} is not an https:// URL")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(invalid(
            setting,
            format!(
                "{shown}: plain http:// is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https://"
            ),
        ))
    }
}

/// Parses the TOML file; errors name the file, line and column.
pub fn parse_file(text: &str, path: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `WALLET_ADDRESSES`: `0xA,builder-2=0xB`.
pub fn parse_wallet_list(list: &str) -> Result<Vec<Wallet>, ConfigError> {
    split_list(list)
        .iter()
        .map(|entry| {
            let (name, address) = match entry.split_once('=') {
                Some((name, address)) => (Some(name.trim().to_string()), address.trim()),
                None => (None, entry.as_str()),
            };
            if name.as_deref() == Some("") {
                return Err(invalid(
                    "WALLET_ADDRESSES",
                    format!("{entry:?}: empty name before '='"),
                ));
            }
            Ok(Wallet {
                address: parse_address("WALLET_ADDRESSES", address)?,
                name,
            })
        })
        .collect()
}

pub(crate) fn parse_address(setting: &str, text: &str) -> Result<Address, ConfigError> {
    let text = text.trim();
    if !(text.len() == 42 && (text.starts_with("0x") || text.starts_with("0X"))) {
        return Err(invalid(
            setting,
            format!("{text:?} is not a 0x-prefixed 20-byte address"),
        ));
    }
    text.parse()
        .map_err(|e| invalid(setting, format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const A: &str = "0x1111111111111111111111111111111111111111";
    const B: &str = "0x2222222222222222222222222222222222222222";

    #[test]
    fn defaults_with_only_wallets() {
        let c = Config::resolve(FileConfig::default(), &env(&[("WALLET_ADDRESSES", A)]))
            .expect("config");
        assert_eq!(c.listen_address, ":9101");
        assert_eq!(c.rpc.urls, vec![DEFAULT_RPC_URL.to_string()]);
        assert_eq!(c.rpc.chain_id, 534_352);
        assert_eq!(c.rpc.interval, Duration::from_secs(300));
        assert_eq!(c.rpc.request_timeout, Duration::from_secs(10));
        assert_eq!(
            c.rpc.multicall.map(|a| a.to_string()).as_deref(),
            Some(MULTICALL3_ADDRESS)
        );
        assert_eq!(c.sitx.map(|a| a.to_string()).as_deref(), Some(SITX_ADDRESS));
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.wallets.len(), 1);
        assert_eq!(c.wallets[0].name, None);
    }

    #[test]
    fn wiki_environment() {
        let c = Config::resolve(
            FileConfig::default(),
            &env(&[
                ("WALLET_ADDRESSES", &format!(" builder-1={A}, {B} ")),
                (
                    "SCROLL_RPC_URL",
                    "http://a.example:8545,https://b.example/key",
                ),
                ("SITX_CONTRACT", B),
                ("PORT", "19101"),
                ("UPDATE_INTERVAL", "3600"),
            ]),
        )
        .expect("config");
        assert_eq!(c.listen_address, ":19101");
        assert_eq!(c.rpc.urls.len(), 2);
        assert_eq!(c.rpc.interval, Duration::from_secs(3600));
        assert_eq!(c.sitx, Some(B.parse().expect("addr")));
        assert_eq!(c.wallets[0].name.as_deref(), Some("builder-1"));
        assert_eq!(c.wallets[1].name, None);
        assert_eq!(c.wallets[1].address, B.parse::<Address>().expect("addr"));
    }

    #[test]
    fn environment_overrides_file() {
        let file = parse_file(
            &format!("interval_seconds = 60\n[[wallets]]\naddress = \"{A}\"\n"),
            "f.toml",
        )
        .expect("parse");
        let c = Config::resolve(file, &env(&[("UPDATE_INTERVAL", "7")])).expect("config");
        assert_eq!(c.rpc.interval, Duration::from_secs(7));
        assert_eq!(c.wallets.len(), 1);
    }

    #[test]
    fn bad_settings_are_named() {
        let e = parse_file("intervall_seconds = 5\n", "w.toml").expect_err("unknown key");
        let text = e.to_string();
        assert!(
            text.contains("w.toml") && text.contains("intervall_seconds"),
            "{text}"
        );

        for (pairs, setting) in [
            (vec![("WALLET_ADDRESSES", "0x12")], "WALLET_ADDRESSES"),
            (vec![("WALLET_ADDRESSES", "=0x12")], "WALLET_ADDRESSES"),
            (vec![("WALLET_ADDRESSES", A), ("PORT", "x")], "PORT"),
            (
                vec![("WALLET_ADDRESSES", A), ("UPDATE_INTERVAL", "0")],
                "UPDATE_INTERVAL",
            ),
            (
                vec![("WALLET_ADDRESSES", A), ("SCROLL_RPC_URL", "ftp://x")],
                "rpc_urls[0]",
            ),
            (vec![("WALLET_ADDRESSES", &format!("{A},{A}"))], "twice"),
            (vec![], "no wallet"),
        ] {
            let e = Config::resolve(FileConfig::default(), &env(&pairs)).expect_err("invalid");
            assert!(e.to_string().contains(setting), "{setting}: {e}");
        }
    }

    #[test]
    fn rpc_urls_need_https_unless_loopback() {
        for good in [
            "https://rpc.scroll.io",
            "HTTPS://rpc.example/key",
            "http://127.0.0.1:8545",
            "http://127.3.2.1",
            "http://[::1]:8545/",
            "http://localhost:8545",
            "http://user:pw@localhost/x",
        ] {
            check_rpc_url("rpc_urls[0]", good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "http://rpc.scroll.io",
            "http://10.0.0.5:8545",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://localhost@evil.example/",
            "ws://127.0.0.1",
            "rpc.scroll.io",
        ] {
            let e = check_rpc_url("rpc_urls[2]", bad)
                .expect_err(bad)
                .to_string();
            assert!(e.starts_with("rpc_urls[2]"), "{bad}: {e}");
        }
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/wallet-exporter.toml");
        let c = Config::load(Some(&path), &HashMap::new()).expect("example config");
        assert_eq!(c.rpc.chain_id, SCROLL_CHAIN_ID);
        assert!(c.wallets.iter().any(|w| w.name.is_some()));
        assert!(c.tokens.len() >= 2, "sITX plus at least one more token");
    }
}
