//! Arbitrary bytes as the wallet and the reward exporter's settings: the TOML file, and
//! after a NUL byte the environment (`NAME=value` lines: the wiki's variables, which the
//! wallet exporter reads on top of its file).
//!
//! - Nothing panics; a parse error names the file.
//! - Accepted wallet settings hold what the exporter relies on: http(s) endpoints,
//!   intervals of at least a second, wallets listed once, tokens without duplicates.
//! - Accepted reward settings never let a signing exporter talk plain http:// to another
//!   host: every `http://` endpoint, as the HTTP client (the `http` crate's URI, which
//!   ureq sends with) reads it, is a loopback host. An SSH source's host cannot be read
//!   as an ssh option, and no command line holds what looks like a private key.
//!
//! Auto-claim reads the key named by `key_file`; a reward config with such a key is
//! only parsed, so that the fuzzer never makes the process open a path it made up.

#![no_main]

use std::collections::HashMap;
use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use nodewatch_exporters::config::{self, Config, ConfigError};
use nodewatch_exporters::intmax_cli::{How, looks_like_key};
use nodewatch_exporters::reward::{RewardConfig, RewardFile};

const ORIGIN: &str = "fuzz.toml";

fn has_key(value: &toml::Value, name: &str) -> bool {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .any(|(key, value)| key == name || has_key(value, name)),
        toml::Value::Array(items) => items.iter().any(|v| has_key(v, name)),
        _ => false,
    }
}

fn environment(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Whether the `http` crate reads `url` as plain http to a loopback host.
fn client_sees_loopback(url: &str) -> bool {
    let Ok(uri) = url.trim().parse::<http::Uri>() else {
        return true; // The client refuses it: nothing is sent.
    };
    let Some(host) = uri.host() else { return true };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_wallet(text: &str, env: &HashMap<String, String>) {
    let file = match config::parse_file(text, ORIGIN) {
        Ok(file) => file,
        Err(e) => {
            assert!(e.to_string().starts_with(ORIGIN), "{e}");
            return;
        }
    };
    let Ok(config) = Config::resolve(file, env) else {
        return;
    };
    assert!(!config.rpc.urls.is_empty());
    for url in &config.rpc.urls {
        assert!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url}"
        );
    }
    for interval in [
        config.rpc.interval,
        config.rpc.request_timeout,
        config.rpc.retry,
        config.rpc.probe_interval,
    ] {
        assert!(interval.as_secs() >= 1);
    }
    assert!(!config.wallets.is_empty());
    for (i, wallet) in config.wallets.iter().enumerate() {
        assert!(
            !config.wallets[..i]
                .iter()
                .any(|o| o.address == wallet.address)
        );
    }
    for (i, token) in config.tokens.iter().enumerate() {
        assert!(!config.tokens[..i].contains(token));
    }
    if let Some(sitx) = config.sitx {
        assert_eq!(config.tokens.first(), Some(&sitx));
    }
}

fn check_reward(text: &str) {
    let Ok(document) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    let file: RewardFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(_) => return,
    };
    if has_key(&toml::Value::Table(document), "key_file") {
        return;
    }
    let config = match RewardConfig::resolve(file) {
        Ok(config) => config,
        Err(ConfigError::Invalid { setting, message }) => {
            assert!(!setting.is_empty() && !message.is_empty());
            return;
        }
        Err(e) => panic!("resolve gave {e}"),
    };
    for url in &config.rpc.urls {
        if url
            .trim()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            assert!(
                client_sees_loopback(url),
                "plain http to another host accepted: {url}"
            );
        }
    }
    for node in &config.nodes {
        let Some(eth) = &node.eth else { continue };
        let argv = eth.argv(&config.ssh_program);
        for arg in &argv {
            assert!(!looks_like_key(arg), "a key on the command line: {arg:?}");
        }
        if let How::Ssh { .. } = eth.how {
            // After the last `--`: the host, then the remote command.
            let end = argv.len() - 3;
            assert_eq!(argv[end], "--", "{argv:?}");
            assert!(!argv[end + 1].starts_with('-'), "{argv:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return; // Read with read_to_string: not UTF-8 is a read error.
    };
    let env = environment(&String::from_utf8_lossy(env));
    check_wallet(text, &env);
    check_reward(text);
});
