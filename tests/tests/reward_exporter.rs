//! The reward exporter's on-chain sITX source against anvil: the repo's
//! BlockBuilderReward stand-in (`tests/evm/BlockBuilderReward.sol`) and Multicall3, one
//! request per refresh through the counting proxy, the current period never counted.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nodewatch_tests::evm::{Anvil, RpcProxy, WalletExporter, address_word, exporter_binary, word};
use nodewatch_tests::{parse_samples, promtool_check_metrics};

const P1: &str = "0x1111111111111111111111111111111111111111";
const P2: &str = "0x2222222222222222222222222222222222222222";
const P3: &str = "0x3333333333333333333333333333333333333333";
const E18: u128 = 1_000_000_000_000_000_000;
const WEEK: u64 = 604_800;

#[test]
fn claimable_sitx_summed_over_finished_periods() {
    let anvil = Anvil::start().unwrap();
    anvil.install_multicall3().unwrap();
    let reward = anvil.deploy("BlockBuilderReward").unwrap();
    let set_current = |period: u128| {
        anvil
            .transact(
                "BlockBuilderReward",
                &reward,
                "setCurrentPeriod(uint256)",
                &word(period),
            )
            .unwrap()
    };
    let set_claimable = |period: u128, user: &str, amount: u128| {
        anvil
            .transact(
                "BlockBuilderReward",
                &reward,
                "setClaimable(uint256,address,uint256)",
                &format!("{}{}{}", word(period), address_word(user), word(amount)),
            )
            .unwrap()
    };
    set_current(3);
    set_claimable(0, P1, 3 * E18 / 2);
    set_claimable(1, P1, 9 * E18 / 4);
    set_claimable(2, P1, E18 / 4);
    set_claimable(3, P1, 100 * E18); // the current period: never counted
    set_claimable(1, P2, 7 * E18);

    // Period 0 started 3 weeks and an hour ago: periods 0, 1, 2 are finished.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let proxy = RpcProxy::start(&anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reward-exporter.toml");
    std::fs::write(
        &config,
        format!(
            "rpc_urls = [\"{}\"]\ninterval_seconds = 1\nretry_seconds = 1\n\
             request_timeout_seconds = 2\nreward_contract = \"{reward}\"\n\
             period_start_unix = {}\n\
             [[nodes]]\nname = \"pi-1\"\naddress = \"{P1}\"\n\
             [[nodes]]\nname = \"pi-2\"\naddress = \"{P2}\"\n\
             [[nodes]]\nname = \"pi-3\"\naddress = \"{P3}\"\n",
            proxy.url,
            now - 3 * WEEK - 3600
        ),
    )
    .unwrap();
    let exporter = WalletExporter::start_program(
        &exporter_binary("nodewatch-reward-exporter"),
        Some(&config),
        &[],
    )
    .unwrap();
    let body = exporter
        .wait_for("rewards", |b| {
            b.contains("intmax_builder_reward_last_check")
        })
        .unwrap();
    let s = parse_samples(&body);
    assert_eq!(
        s["intmax_builder_reward_sitx{node=\"pi-1\"}"], 4.0,
        "{body}"
    );
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-2\"}"], 7.0);
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-3\"}"], 0.0);
    for node in ["pi-1", "pi-2", "pi-3"] {
        assert_eq!(
            s[&format!("intmax_builder_reward_check_success{{node=\"{node}\"}}")],
            1.0
        );
    }
    assert_eq!(s["nodewatch_reward_periods_counted"], 3.0);
    // The ETH source is not built: its families are absent, not 0.
    assert!(!body.contains("intmax_builder_reward_eth"), "{body}");
    let (ok, lines) = promtool_check_metrics(&body).unwrap();
    assert!(ok && lines.is_empty(), "promtool: {lines:?}");

    // One request per refresh: after the chain-id check, one eth_call each.
    std::thread::sleep(Duration::from_millis(2500));
    let seen = proxy.seen();
    assert_eq!(seen[0].body["method"], "eth_chainId");
    assert!(seen.len() >= 3);
    for r in &seen[1..] {
        assert_eq!(r.body["method"], "eth_call", "{}", r.body);
    }

    // The contract says period 2 has not ended (the exporter's clock disagrees): those
    // reads revert, the last good values stay, the check fails and says so.
    set_current(2);
    let body = exporter
        .wait_for("check failure", |b| {
            parse_samples(b).get("intmax_builder_reward_check_success{node=\"pi-1\"}") == Some(&0.0)
        })
        .unwrap();
    let s = parse_samples(&body);
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-1\"}"], 4.0);
    assert!(s["nodewatch_reward_errors_total{kind=\"reverted\"}"] >= 3.0);
    set_current(3);
    exporter
        .wait_for("recovery", |b| {
            parse_samples(b).get("intmax_builder_reward_check_success{node=\"pi-1\"}") == Some(&1.0)
        })
        .unwrap();
}
