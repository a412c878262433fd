//! The wallet exporter against a real EVM node: anvil with Scroll's chain id, the repo's
//! ERC-20 and Multicall3 (placed at the canonical address with `anvil_setCode`), and a
//! proxy in between that counts requests and injects faults.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use nodewatch_tests::evm::{Anvil, Fault, MULTICALL3, RpcProxy, WalletExporter};
use nodewatch_tests::{parse_samples, promtool_check_metrics};

const A: &str = "0x1111111111111111111111111111111111111111";
const B: &str = "0x2222222222222222222222222222222222222222";
const C: &str = "0x3333333333333333333333333333333333333333";
const E18: u128 = 1_000_000_000_000_000_000;

struct Chain {
    anvil: Anvil,
    sitx: String,
    usdc: String,
}

/// anvil with Multicall3, sITX (18 decimals) and a 6-decimal token, and balances:
/// A 1.5 ETH, 1234.5 sITX, 1.234567 USDC; B 1 wei, 0.25 sITX; C nothing but 42 USDC.
fn chain() -> Chain {
    chain_with(true)
}

fn chain_with(multicall3: bool) -> Chain {
    let anvil = Anvil::start().unwrap();
    if multicall3 {
        anvil.install_multicall3().unwrap();
    }
    let sitx = anvil.deploy_token("sITX", 18).unwrap();
    let usdc = anvil.deploy_token("USDC", 6).unwrap();
    anvil.set_balance(A, 3 * E18 / 2).unwrap();
    anvil.set_balance(B, 1).unwrap();
    anvil.set_balance(C, 0).unwrap();
    anvil.mint(&sitx, A, 12345 * E18 / 10).unwrap();
    anvil.mint(&sitx, B, E18 / 4).unwrap();
    anvil.mint(&usdc, A, 1_234_567).unwrap();
    anvil.mint(&usdc, C, 42_000_000).unwrap();
    Chain { anvil, sitx, usdc }
}

fn config_file(dir: &tempfile::TempDir, usdc: &str) -> std::path::PathBuf {
    let path = dir.path().join("wallet-exporter.toml");
    std::fs::write(
        &path,
        format!(
            "request_timeout_seconds = 1\nretry_seconds = 1\ntokens = [\"{usdc}\"]\n\
             [[wallets]]\naddress = \"0x0000000000000000000000000000000000000001\"\n"
        ),
    )
    .unwrap();
    path
}

fn start(chain: &Chain, proxy: &RpcProxy, dir: &tempfile::TempDir) -> WalletExporter {
    let config = config_file(dir, &chain.usdc);
    WalletExporter::start(
        Some(&config),
        &[
            // The wiki's variables override the file (its wallet list included).
            ("WALLET_ADDRESSES", &format!("builder-1={A},{B},{C}")),
            ("SCROLL_RPC_URL", &proxy.url),
            ("SITX_CONTRACT", &chain.sitx),
            ("UPDATE_INTERVAL", "1"),
        ],
    )
    .unwrap()
}

/// Samples with series lowercased: the exporter prints addresses in EIP-55 form, anvil
/// returns them lowercase, so the tests compare case-insensitively.
fn samples(body: &str) -> BTreeMap<String, f64> {
    parse_samples(body)
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect()
}

fn balance_series(body: &str) -> Vec<String> {
    parse_samples(body)
        .into_keys()
        .filter(|k| {
            k.starts_with("intmax_wallet_eth")
                || k.starts_with("intmax_wallet_sitx{")
                || k.starts_with("nodewatch_wallet_token_balance")
        })
        .collect()
}

#[test]
fn balances_exact_in_one_request_per_refresh() {
    let chain = chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(&chain, &proxy, &dir);
    let body = exporter
        .wait_for("sitx total", |b| b.contains("intmax_wallet_sitx_total"))
        .unwrap();
    let s = samples(&body);
    let (sitx, usdc) = (chain.sitx.to_lowercase(), chain.usdc.to_lowercase());
    let a = A.to_lowercase();
    let expected: Vec<(String, f64)> = vec![
        (
            format!("intmax_wallet_eth{{address=\"{a}\",name=\"builder-1\"}}"),
            1.5,
        ),
        (
            format!("intmax_wallet_eth{{address=\"{}\"}}", B.to_lowercase()),
            1e-18,
        ),
        (
            format!("intmax_wallet_eth{{address=\"{}\"}}", C.to_lowercase()),
            0.0,
        ),
        (
            format!("intmax_wallet_sitx{{address=\"{a}\",name=\"builder-1\"}}"),
            1234.5,
        ),
        (
            format!("intmax_wallet_sitx{{address=\"{}\"}}", B.to_lowercase()),
            0.25,
        ),
        (
            format!("intmax_wallet_sitx{{address=\"{}\"}}", C.to_lowercase()),
            0.0,
        ),
        ("intmax_wallet_sitx_total".into(), 1234.75),
        (
            format!(
                "nodewatch_wallet_token_balance{{address=\"{a}\",name=\"builder-1\",symbol=\"sitx\",token=\"{sitx}\"}}"
            ),
            1234.5,
        ),
        (
            format!(
                "nodewatch_wallet_token_balance{{address=\"{a}\",name=\"builder-1\",symbol=\"usdc\",token=\"{usdc}\"}}"
            ),
            1.234567,
        ),
        (
            format!(
                "nodewatch_wallet_token_balance{{address=\"{}\",symbol=\"usdc\",token=\"{usdc}\"}}",
                C.to_lowercase()
            ),
            42.0,
        ),
        (
            format!(
                "nodewatch_wallet_token_balance{{address=\"{}\",symbol=\"usdc\",token=\"{usdc}\"}}",
                B.to_lowercase()
            ),
            0.0,
        ),
        ("nodewatch_wallet_check_success".into(), 1.0),
        ("nodewatch_wallet_stale".into(), 0.0),
    ];
    for (series, value) in &expected {
        assert_eq!(s.get(series), Some(value), "{series} in\n{body}");
    }
    assert!(s["intmax_wallet_last_check"] > 1.7e9);
    // 3 wallets × (ETH + 2 tokens).
    assert_eq!(balance_series(&body).len(), 3 + 3 + 3 * 2, "{body}");

    // The proxy, not the exporter, counts: over a few refreshes (interval 1 s), every
    // request after the first chain-id check is one eth_call to Multicall3 carrying
    // every read, and requests come one interval apart.
    let before = proxy.seen().len();
    std::thread::sleep(Duration::from_millis(4500));
    let seen = proxy.seen();
    assert_eq!(seen[0].body["method"], "eth_chainId", "{:?}", seen[0].body);
    let window = &seen[before..];
    assert!(
        (3..=6).contains(&window.len()),
        "{} requests in 4.5 s at a 1 s interval",
        window.len()
    );
    for request in &seen[1..] {
        assert_eq!(request.body["method"], "eth_call", "{}", request.body);
        assert!(request.body.is_object(), "one request object, not a batch");
        assert_eq!(
            request.body["params"][0]["to"]
                .as_str()
                .unwrap()
                .to_lowercase(),
            MULTICALL3.to_lowercase()
        );
    }
    for pair in seen[1..].windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(800), "requests {gap:?} apart");
    }

    // A balance that changes on chain changes in the next refresh.
    chain.anvil.mint(&chain.sitx, C, E18 / 8).unwrap();
    let series = format!("intmax_wallet_sitx{{address=\"{}\"}}", C.to_lowercase());
    let body = exporter
        .wait_for("C's new sITX", |b| samples(b).get(&series) == Some(&0.125))
        .unwrap();
    assert_eq!(samples(&body)["intmax_wallet_sitx_total"], 1234.875);

    // promtool: no parse error; lint findings only on the wiki's inherited names, by an
    // explicit allowlist.
    let (_, lines) = promtool_check_metrics(&body).unwrap();
    let allowed =
        ["intmax_wallet_sitx_total non-counter metrics should not have \"_total\" suffix"];
    let unexpected: Vec<&String> = lines
        .iter()
        .filter(|l| !allowed.contains(&l.trim()))
        .collect();
    assert!(unexpected.is_empty(), "promtool: {lines:?}");

    let health = nodewatch_tests::get_text(&exporter.url("/api/health")).unwrap();
    assert!(health.contains("\"healthy\""), "{health}");
}

/// Waits until `kind`'s error counter exceeds `after`.
fn wait_error(exporter: &WalletExporter, kind: &str, after: f64) -> String {
    let series = format!("nodewatch_wallet_errors_total{{kind=\"{kind}\"}}");
    exporter
        .wait_for(&series, |b| {
            samples(b).get(&series).copied().unwrap_or(0.0) > after
        })
        .unwrap()
}

fn error_count(body: &str, kind: &str) -> f64 {
    samples(body)
        .get(&format!("nodewatch_wallet_errors_total{{kind=\"{kind}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

#[test]
fn faults_never_invent_values_and_recover() {
    let chain = chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Wrong chain from the start: nothing is served, the error says why.
    proxy.set_fault(Fault::WrongChain);
    let exporter = start(&chain, &proxy, &dir);
    let body = wait_error(&exporter, "wrong_chain", 0.0);
    assert!(balance_series(&body).is_empty(), "{body}");
    assert!(!body.contains("intmax_wallet_sitx_total"), "{body}");
    assert!(!body.contains("intmax_wallet_last_check"), "{body}");
    assert_eq!(samples(&body)["nodewatch_wallet_check_success"], 0.0);
    let health = nodewatch_tests::http()
        .get(exporter.url("/api/health/detailed"))
        .call()
        .unwrap();
    assert_eq!(health.status(), 503);
    // No eth_call was ever sent to the wrong chain.
    assert!(
        proxy
            .seen()
            .iter()
            .all(|r| r.body["method"] == "eth_chainId")
    );

    // Recovery: the chain id is checked again and values appear.
    proxy.set_fault(Fault::None);
    let good = exporter
        .wait_for("balances", |b| b.contains("intmax_wallet_sitx_total"))
        .unwrap();
    let good_balances: BTreeMap<String, f64> = samples(&good)
        .into_iter()
        .filter(|(k, _)| balance_series(&good).iter().any(|s| s.to_lowercase() == *k))
        .collect();
    assert_eq!(good_balances.len(), 12);

    // Each fault: the last good values stay, marked stale, the error is counted by kind.
    for (fault, kind) in [
        (Fault::Status500, "http_status"),
        (Fault::Garbage, "malformed"),
        (Fault::Delay(2500), "timeout"),
    ] {
        let before = error_count(&exporter.metrics().unwrap(), kind);
        proxy.set_fault(fault);
        let body = wait_error(&exporter, kind, before);
        let body = if samples(&body)["nodewatch_wallet_stale"] == 1.0 {
            body
        } else {
            exporter
                .wait_for("stale", |b| samples(b)["nodewatch_wallet_stale"] == 1.0)
                .unwrap()
        };
        let s = samples(&body);
        assert_eq!(s["nodewatch_wallet_check_success"], 0.0, "{fault:?}");
        for (series, value) in &good_balances {
            assert_eq!(s.get(series), Some(value), "{fault:?}: {series}");
        }
        let detailed = nodewatch_tests::get_text(&exporter.url("/api/health/detailed")).unwrap();
        assert!(detailed.contains("\"degraded\""), "{fault:?}: {detailed}");
        proxy.set_fault(Fault::None);
        exporter
            .wait_for("recovery", |b| {
                samples(b).get("nodewatch_wallet_check_success") == Some(&1.0)
            })
            .unwrap();
    }

    // 429 with Retry-After: 3 (interval and retry are 1 s): the next request waits 3 s.
    proxy.set_fault(Fault::RateLimited(3));
    wait_error(&exporter, "rate_limited", 0.0);
    proxy.set_fault(Fault::None);
    let body = exporter
        .wait_for("recovery after 429", |b| {
            samples(b).get("nodewatch_wallet_check_success") == Some(&1.0)
        })
        .unwrap();
    assert_eq!(samples(&body)["nodewatch_wallet_stale"], 0.0);
    let seen = proxy.seen();
    let limited = seen
        .iter()
        .position(|r| matches!(r.fault, Fault::RateLimited(_)))
        .unwrap();
    let gap = seen[limited + 1].at - seen[limited].at;
    assert!(
        gap >= Duration::from_millis(2900),
        "retried {gap:?} after a 429"
    );
}

/// Without a contract at Multicall3's address, the exporter notices (the `eth_call`
/// returns nothing) and reads everything with one JSON-RPC batch per refresh.
#[test]
fn batch_fallback_without_multicall3() {
    let chain = chain_with(false);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exporter = start(&chain, &proxy, &dir);
    let body = exporter
        .wait_for("sitx total", |b| b.contains("intmax_wallet_sitx_total"))
        .unwrap();
    let s = samples(&body);
    let usdc = chain.usdc.to_lowercase();
    assert_eq!(s["intmax_wallet_sitx_total"], 1234.75, "{body}");
    assert_eq!(
        s[&format!(
            "intmax_wallet_eth{{address=\"{}\",name=\"builder-1\"}}",
            A.to_lowercase()
        )],
        1.5
    );
    assert_eq!(
        s[&format!(
            "nodewatch_wallet_token_balance{{address=\"{}\",symbol=\"usdc\",token=\"{usdc}\"}}",
            C.to_lowercase()
        )],
        42.0
    );
    assert_eq!(balance_series(&body).len(), 12, "{body}");
    std::thread::sleep(Duration::from_millis(3500));
    let seen = proxy.seen();
    assert_eq!(seen[0].body["method"], "eth_chainId");
    assert_eq!(seen[1].body["method"], "eth_call", "the Multicall3 attempt");
    let batches = &seen[2..];
    assert!(batches.len() >= 3, "{} batches", batches.len());
    // First batch: chain id, 3 ETH balances, 2 tokens × 3 wallets, and 2 × (decimals,
    // symbol); then the metadata is cached.
    assert_eq!(
        batches[0].body.as_array().map(Vec::len),
        Some(1 + 3 + 6 + 4)
    );
    for batch in &batches[1..] {
        assert_eq!(
            batch.body.as_array().map(Vec::len),
            Some(1 + 3 + 6),
            "{}",
            batch.body
        );
    }
    for pair in batches.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(800));
    }
}

/// Two endpoints: while the first fails, every refresh fails over to the second in the
/// same refresh; the exporter stops cleanly on SIGTERM.
#[test]
fn failover_between_endpoints_and_graceful_shutdown() {
    let chain = chain();
    let first = RpcProxy::start(&chain.anvil.url).unwrap();
    let second = RpcProxy::start(&chain.anvil.url).unwrap();
    first.set_fault(Fault::Status500);
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &chain.usdc);
    let urls = format!("{},{}", first.url, second.url);
    let mut exporter = WalletExporter::start(
        Some(&config),
        &[
            ("WALLET_ADDRESSES", &format!("builder-1={A},{B},{C}")),
            ("SCROLL_RPC_URL", &urls),
            ("SITX_CONTRACT", &chain.sitx),
            ("UPDATE_INTERVAL", "1"),
        ],
    )
    .unwrap();
    let body = exporter
        .wait_for("balances through the second endpoint", |b| {
            b.contains("intmax_wallet_sitx_total")
        })
        .unwrap();
    let s = samples(&body);
    assert_eq!(s["intmax_wallet_sitx_total"], 1234.75);
    assert_eq!(s["nodewatch_wallet_check_success"], 1.0);
    let up = |s: &BTreeMap<String, f64>, endpoint: &str, proxy: &RpcProxy| {
        let host = proxy.url.to_lowercase();
        s.get(&format!(
            "nodewatch_wallet_rpc_endpoint_up{{endpoint=\"{endpoint}\",host=\"{host}\"}}"
        ))
        .copied()
    };
    assert_eq!(up(&s, "0", &first), Some(0.0), "{body}");
    assert_eq!(up(&s, "1", &second), Some(1.0), "{body}");
    assert!(error_count(&body, "http_status") >= 1.0);
    assert!(!first.seen().is_empty());

    // The first endpoint comes back: it is preferred again (after its chain-id check).
    first.set_fault(Fault::None);
    let before = first.seen().len();
    exporter
        .wait_for("first endpoint back", |b| {
            up(&samples(b), "0", &first) == Some(1.0)
        })
        .unwrap();
    let seen = first.seen();
    assert_eq!(seen[before].body["method"], "eth_chainId");

    exporter
        .child
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = exporter
        .child
        .wait_timeout(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", exporter.child.log());
}

/// Settings errors stop the exporter at start, naming the setting; `--check-config`
/// accepts the example file.
#[test]
fn bad_settings_exit_with_the_setting_named() {
    let binary = nodewatch_tests::evm::wallet_exporter_binary();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(&binary);
        command.args(args).env_remove("WALLET_ADDRESSES");
        for (k, v) in env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (ok, text) = run(
        &["--check-config"],
        &[("WALLET_ADDRESSES", "builder-1=0x12")],
    );
    assert!(!ok && text.contains("WALLET_ADDRESSES"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "interval_secs = 5\n").unwrap();
    let config = format!("--config={}", bad.display());
    let (ok, text) = run(&["--check-config", &config], &[]);
    assert!(
        !ok && text.contains("interval_secs") && text.contains("bad.toml"),
        "{text}"
    );

    let example = nodewatch_tests::workspace_root().join("config/wallet-exporter.toml");
    let config = format!("--config={}", example.display());
    let (ok, text) = run(&["--check-config", &config], &[]);
    assert!(
        ok && text.contains("2 wallets, 2 tokens, chain 534352"),
        "{text}"
    );
}

/// A token address without a contract: its reads fail inside the batch (the call
/// succeeds with no data), so it has no series at all — never a 0 — while every other
/// balance is served; the refresh counts as failed and says which reads failed.
#[test]
fn a_token_without_contract_has_no_values() {
    let chain = chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let missing = "0x000000000000000000000000000000000000dEaD";
    let config = dir.path().join("wallet-exporter.toml");
    std::fs::write(
        &config,
        format!(
            "retry_seconds = 1\ntokens = [\"{}\", \"{missing}\"]\n",
            chain.usdc
        ),
    )
    .unwrap();
    let exporter = WalletExporter::start(
        Some(&config),
        &[
            ("WALLET_ADDRESSES", &format!("builder-1={A},{B},{C}")),
            ("SCROLL_RPC_URL", &proxy.url),
            ("SITX_CONTRACT", &chain.sitx),
            ("UPDATE_INTERVAL", "1"),
        ],
    )
    .unwrap();
    let body = exporter
        .wait_for("sitx total", |b| b.contains("intmax_wallet_sitx_total"))
        .unwrap();
    let s = samples(&body);
    assert_eq!(s["intmax_wallet_sitx_total"], 1234.75);
    assert_eq!(balance_series(&body).len(), 12, "{body}");
    assert!(
        !body.to_lowercase().contains(&missing.to_lowercase()),
        "{body}"
    );
    assert_eq!(s["nodewatch_wallet_check_success"], 0.0);
    assert!(error_count(&body, "reverted") >= 2.0, "{body}");
    assert!(!body.contains("intmax_wallet_last_check"), "{body}");
    let detailed = nodewatch_tests::get_text(&exporter.url("/api/health/detailed")).unwrap();
    assert!(
        detailed.contains("\"degraded\"")
            && detailed
                .to_lowercase()
                .contains("0x000000000000000000000000000000000000dead.decimals()"),
        "{detailed}"
    );
}
