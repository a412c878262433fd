//! Benchmark of the wallet exporter against anvil: for N = 1, 10, 100 wallets with 2
//! tokens (sITX and a 6-decimal token), JSON-RPC requests per refresh (counted by the
//! proxy in front of anvil), refresh latency (median and max of
//! `nodewatch_wallet_refresh_duration_seconds`) and the exporter's RSS.
//!
//!   cargo run -p nodewatch-tests --bin bench-wallet-exporter [--release]
//!
//! `NODEWATCH_WALLET_EXPORTER_BIN` picks the binary (e.g. a release build); the default
//! is a debug build of the workspace. The wiki's exporter made 2 × N requests.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nodewatch_tests::evm::{Anvil, RpcProxy, WalletExporter};
use nodewatch_tests::parse_samples;

fn main() -> anyhow::Result<()> {
    let anvil = Anvil::start()?;
    anvil.install_multicall3()?;
    let sitx = anvil.deploy_token("sITX", 18)?;
    let usdc = anvil.deploy_token("USDC", 6)?;
    let dir = tempfile::tempdir()?;
    println!(
        "| wallets | tokens | requests/refresh | wiki's requests | refresh median | refresh max | RSS |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in [1usize, 10, 100] {
        let wallets: Vec<String> = (1..=n).map(|i| format!("0x{:040x}", 0x1000 + i)).collect();
        for (i, w) in wallets.iter().enumerate() {
            anvil.set_balance(w, 1_000_000_000_000_000 * (i as u128 + 1))?;
        }
        anvil.mint(&sitx, &wallets[0], 5 * 10u128.pow(18))?;
        let config = dir.path().join(format!("bench-{n}.toml"));
        std::fs::write(&config, format!("tokens = [\"{usdc}\"]\n"))?;
        let proxy = RpcProxy::start(&anvil.url)?;
        let exporter = WalletExporter::start(
            Some(&config),
            &[
                ("WALLET_ADDRESSES", &wallets.join(",")),
                ("SCROLL_RPC_URL", &proxy.url),
                ("SITX_CONTRACT", &sitx),
                ("UPDATE_INTERVAL", "1"),
            ],
        )?;
        exporter.wait_for("first refresh", |b| {
            b.contains("nodewatch_wallet_check_success 1")
        })?;
        let counters = |body: &str| {
            let s = parse_samples(body);
            (
                s.get("nodewatch_wallet_refreshes_total")
                    .copied()
                    .unwrap_or(0.0),
                s.get("nodewatch_wallet_refresh_duration_seconds")
                    .copied()
                    .unwrap_or(f64::NAN),
            )
        };
        // Counted between two moments just after a refresh completed, so the proxy's
        // count and the exporter's refresh count cover the same refreshes.
        let (mut last, _) = counters(&exporter.metrics()?);
        let mut first: Option<(f64, usize)> = None;
        let mut latest = (last, proxy.seen().len());
        let mut durations = Vec::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let (refreshes, duration) = counters(&exporter.metrics()?);
            if refreshes > last {
                let mark = (refreshes, proxy.seen().len());
                if first.is_none() {
                    first = Some(mark);
                } else {
                    durations.push(duration);
                }
                latest = mark;
                last = refreshes;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let first = first.unwrap_or(latest);
        let refreshes = latest.0 - first.0;
        let requests = latest.1 - first.1;
        durations.sort_by(f64::total_cmp);
        let median = durations
            .get(durations.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        let max = durations.last().copied().unwrap_or(f64::NAN);
        let rss = exporter.child.rss_kb().unwrap_or(0);
        println!(
            "| {n} | 2 | {:.2} | {} | {:.1} ms | {:.1} ms | {:.1} MB |",
            requests as f64 / refreshes,
            2 * n,
            median * 1e3,
            max * 1e3,
            rss as f64 / 1024.0
        );
    }
    Ok(())
}
