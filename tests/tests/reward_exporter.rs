//! The reward exporter against real components:
//! - the on-chain sITX source against anvil with the repo's BlockBuilderReward stand-in
//!   (`tests/evm/BlockBuilderReward.sol`): one request per refresh through the counting
//!   proxy with Multicall3, one JSON-RPC batch per refresh without it, the current period
//!   never counted;
//! - the ETH source, the INTMAX CLI over SSH against a real OpenSSH server on loopback
//!   (and locally), with a stub CLI wrapper printing the real CLI's output shape;
//! - auto-claim: tokens move on anvil when enabled, a dry run sends nothing, a key file
//!   readable by others is refused; a restart mid-claim sends no second transaction, a
//!   stuck claim is replaced at the same nonce (anvil mining by hand), a fee over the
//!   ceiling is refused.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nodewatch_tests::evm::{
    Anvil, Artifact, RpcProxy, WalletExporter, address_word, exporter_binary, word,
};
use nodewatch_tests::ssh::SshServer;
use nodewatch_tests::{Child, get_text, parse_samples, promtool_check_metrics, wait_until};

const P1: &str = "0x1111111111111111111111111111111111111111";
const P2: &str = "0x2222222222222222222222222222222222222222";
const P3: &str = "0x3333333333333333333333333333333333333333";
const E18: u128 = 1_000_000_000_000_000_000;
const WEEK: u64 = 604_800;
/// anvil's well-known account #1 (a public test key) as the builder that claims.
const BUILDER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const BUILDER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
/// The spend key the node-side wrapper reads in the SSH tests (made up, test only).
const SPEND_KEY: &str = "0x7a5b0c4d9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn reward_binary() -> PathBuf {
    exporter_binary("nodewatch-reward-exporter")
}

fn samples(body: &str) -> BTreeMap<String, f64> {
    parse_samples(body)
}

/// anvil with the reward contract, its current period and claimable amounts set.
struct Chain {
    anvil: Anvil,
    reward: String,
}

impl Chain {
    fn start(multicall: bool) -> Chain {
        let anvil = Anvil::start().unwrap();
        if multicall {
            anvil.install_multicall3().unwrap();
        }
        let reward = anvil.deploy("BlockBuilderReward").unwrap();
        Chain { anvil, reward }
    }

    fn set_current(&self, period: u128) {
        self.anvil
            .transact(
                "BlockBuilderReward",
                &self.reward,
                "setCurrentPeriod(uint256)",
                &word(period),
            )
            .unwrap()
    }

    fn set_claimable(&self, period: u128, user: &str, amount: u128) {
        self.anvil
            .transact(
                "BlockBuilderReward",
                &self.reward,
                "setClaimable(uint256,address,uint256)",
                &format!("{}{}{}", word(period), address_word(user), word(amount)),
            )
            .unwrap()
    }

    /// `token.balanceOf(owner)`, raw units.
    fn balance_of(&self, token: &str, owner: &str) -> u128 {
        let selector = Artifact::load("Token")
            .unwrap()
            .selector("balanceOf(address)")
            .unwrap();
        let result = self
            .anvil
            .rpc(
                "eth_call",
                serde_json::json!([{"to": token, "data": format!("{selector}{}", address_word(owner))}, "latest"]),
            )
            .unwrap();
        u128::from_str_radix(result.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }
}

/// The common head of a config: RPC through `proxy`, quick intervals, period 0 started
/// `weeks` weeks and an hour ago.
fn config_head(proxy: &RpcProxy, chain: &Chain, weeks: u64) -> String {
    format!(
        "rpc_urls = [\"{}\"]\ninterval_seconds = 1\nretry_seconds = 1\n\
         request_timeout_seconds = 2\nreward_contract = \"{}\"\n\
         period_start_unix = {}\neth_interval_seconds = 1\n",
        proxy.url,
        chain.reward,
        now() - weeks * WEEK - 3600
    )
}

fn start_exporter(dir: &Path, config: &str) -> WalletExporter {
    let path = dir.join("reward-exporter.toml");
    std::fs::write(&path, config).unwrap();
    WalletExporter::start_program(&reward_binary(), Some(&path), &[]).unwrap()
}

#[test]
fn claimable_sitx_summed_over_finished_periods() {
    let chain = Chain::start(true);
    chain.set_current(3);
    chain.set_claimable(0, P1, 3 * E18 / 2);
    chain.set_claimable(1, P1, 9 * E18 / 4);
    chain.set_claimable(2, P1, E18 / 4);
    chain.set_claimable(3, P1, 100 * E18); // the current period: never counted
    chain.set_claimable(1, P2, 7 * E18);

    // Period 0 started 3 weeks and an hour ago: periods 0, 1, 2 are finished.
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exporter = start_exporter(
        dir.path(),
        &format!(
            "{}[[nodes]]\nname = \"pi-1\"\naddress = \"{P1}\"\n\
             [[nodes]]\nname = \"pi-2\"\naddress = \"{P2}\"\n\
             [[nodes]]\nname = \"pi-3\"\naddress = \"{P3}\"\n",
            config_head(&proxy, &chain, 3)
        ),
    );
    let body = exporter
        .wait_for("rewards", |b| {
            b.contains("intmax_builder_reward_last_check")
        })
        .unwrap();
    let s = samples(&body);
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
    // No node has an ETH source: its families are absent, not 0.
    assert!(!body.contains("intmax_builder_reward_eth"), "{body}");
    assert!(!body.contains("intmax_builder_reward_total_eth"), "{body}");
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
    chain.set_current(2);
    let body = exporter
        .wait_for("check failure", |b| {
            samples(b).get("intmax_builder_reward_check_success{node=\"pi-1\"}") == Some(&0.0)
        })
        .unwrap();
    let s = samples(&body);
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-1\"}"], 4.0);
    assert!(s["nodewatch_reward_errors_total{kind=\"reverted\"}"] >= 3.0);
    chain.set_current(3);
    exporter
        .wait_for("recovery", |b| {
            samples(b).get("intmax_builder_reward_check_success{node=\"pi-1\"}") == Some(&1.0)
        })
        .unwrap();
}

/// Without a contract at Multicall3's address, the reward exporter notices (the
/// `eth_call` returns nothing) and reads with one JSON-RPC batch per refresh.
#[test]
fn batch_fallback_without_multicall3() {
    let chain = Chain::start(false);
    chain.set_current(2);
    chain.set_claimable(0, P1, E18 / 2);
    chain.set_claimable(1, P1, E18);
    chain.set_claimable(1, P2, 2 * E18);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let exporter = start_exporter(
        dir.path(),
        &format!(
            "{}[[nodes]]\nname = \"pi-1\"\naddress = \"{P1}\"\n\
             [[nodes]]\nname = \"pi-2\"\naddress = \"{P2}\"\n",
            config_head(&proxy, &chain, 2)
        ),
    );
    let body = exporter
        .wait_for("rewards", |b| {
            b.contains("intmax_builder_reward_last_check")
        })
        .unwrap();
    let s = samples(&body);
    assert_eq!(
        s["intmax_builder_reward_sitx{node=\"pi-1\"}"], 1.5,
        "{body}"
    );
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-2\"}"], 2.0);
    std::thread::sleep(Duration::from_millis(3500));
    let seen = proxy.seen();
    assert_eq!(seen[0].body["method"], "eth_chainId");
    assert_eq!(seen[1].body["method"], "eth_call", "the Multicall3 attempt");
    let batches = &seen[2..];
    assert!(batches.len() >= 3, "{} batches", batches.len());
    // Every later request is one batch: the chain id and 2 nodes × 2 periods.
    for batch in batches {
        let items = batch
            .body
            .as_array()
            .unwrap_or_else(|| panic!("{}", batch.body));
        assert_eq!(items.len(), 1 + 2 * 2, "{}", batch.body);
        assert_eq!(items[0]["method"], "eth_chainId");
        assert!(items[1..].iter().all(|i| i["method"] == "eth_call"));
    }
    let body = exporter.metrics().unwrap();
    let (ok, lines) = promtool_check_metrics(&body).unwrap();
    assert!(ok && lines.is_empty(), "promtool: {lines:?}");
}

/// The node-side wrapper stand-in: reads the spend key from its 0600 file (as the real
/// wrapper does before running `intmax2-cli balance --private-key "$key"`), logs its
/// arguments, and prints what the mode file of its node says: the CLI's output shape
/// (`good`), a changed shape (`changed`), or nothing for a long time (`slow`).
fn write_stub(dir: &Path) -> PathBuf {
    let key_file = dir.join("spend.key");
    std::fs::write(&key_file, format!("{SPEND_KEY}\n")).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stub = dir.join("intmax-balance");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\n\
             set -eu\n\
             dir='{dir}'\n\
             key=$(cat \"$dir/spend.key\")\n\
             [ ${{#key}} -eq 66 ] || {{ echo 'cannot read the spend key' >&2; exit 1; }}\n\
             echo \"$$ $*\" >> \"$dir/wrapper.log\"\n\
             case $(cat \"$dir/mode-$1\") in\n\
             good) printf 'ETH: 1.25\\nsITX: 4.5\\n' ;;\n\
             good2) printf 'ETH: 2.5\\nsITX: 0\\n' ;;\n\
             changed) printf 'Balances of 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\\n  ETH  1.25\\n' ;;\n\
             slow) sleep 30; printf 'ETH: 9\\n' ;;\n\
             esac\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    stub
}

fn set_mode(dir: &Path, node: &str, mode: &str) {
    std::fs::write(dir.join(format!("mode-{node}")), mode).unwrap();
}

/// The exporter's children running `name` (by /proc/PID/stat's parent and comm).
fn children_named(parent: u32, name: &str) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if comm == name && ppid == Some(&parent.to_string()) {
            count += 1;
        }
    }
    count
}

#[test]
fn eth_from_the_cli_over_ssh() {
    let server = SshServer::start().unwrap();
    let chain = Chain::start(true);
    chain.set_current(1);
    chain.set_claimable(0, P1, 3 * E18);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let node_dir = server.dir.path();
    let stub = write_stub(node_dir);
    set_mode(node_dir, "pi1", "good");
    set_mode(node_dir, "pi2", "changed");
    // The SSH client, through a wrapper that logs its command line.
    let dir = tempfile::tempdir().unwrap();
    let ssh_log = dir.path().join("ssh-argv.log");
    let ssh_wrapper = dir.path().join("ssh");
    std::fs::write(
        &ssh_wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            ssh_log.display(),
            nodewatch_tests::program("ssh", "openssh-client")
                .unwrap()
                .display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh_wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = format!(
        "{}ssh_program = \"{}\"\n\
         [[nodes]]\nname = \"pi-1\"\naddress = \"{P1}\"\n\
         [nodes.eth]\ntimeout_seconds = 3\n\
         [nodes.eth.ssh]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
         identity_file = \"{}\"\nknown_hosts = \"{}\"\ncommand = \"{} pi1\"\n\
         connect_timeout_seconds = 5\n\
         [[nodes]]\nname = \"pi-2\"\naddress = \"{P2}\"\n\
         [nodes.eth]\nlocal_command = [\"{}\", \"pi2\"]\ntimeout_seconds = 3\n",
        config_head(&proxy, &chain, 1),
        ssh_wrapper.display(),
        server.port,
        server.user,
        server.identity_file.display(),
        server.known_hosts.display(),
        stub.display(),
        stub.display(),
    );
    let exporter = start_exporter(dir.path(), &config);

    // A good run over SSH; pi-2's CLI prints another shape: an error naming the node
    // and the line, no value, check failed, and no total (it would be made up).
    let body = exporter
        .wait_for("pi-1's ETH and pi-2's error", |b| {
            let s = samples(b);
            s.get("intmax_builder_reward_eth{node=\"pi-1\"}") == Some(&1.25)
                && s.get("intmax_builder_reward_check_success{node=\"pi-1\"}") == Some(&1.0)
                && s.get("nodewatch_reward_eth_errors_total{kind=\"format\",node=\"pi-2\"}")
                    >= Some(&1.0)
        })
        .unwrap();
    let s = samples(&body);
    assert!(
        !s.contains_key("intmax_builder_reward_eth{node=\"pi-2\"}"),
        "{body}"
    );
    assert_eq!(s["intmax_builder_reward_check_success{node=\"pi-2\"}"], 0.0);
    assert_eq!(
        s["nodewatch_reward_source_success{node=\"pi-2\",source=\"chain\"}"],
        1.0
    );
    assert_eq!(
        s["nodewatch_reward_source_success{node=\"pi-2\",source=\"cli\"}"],
        0.0
    );
    assert!(!s.contains_key("intmax_builder_reward_total_eth"), "{body}");
    assert_eq!(s["nodewatch_reward_eth_nodes_missing"], 1.0);
    assert_eq!(s["intmax_builder_reward_sitx{node=\"pi-1\"}"], 3.0);
    let log = exporter.child.log();
    assert!(
        log.contains("pi-2") && log.contains("\"Balances of 0x7099"),
        "the error names the node and the line: {log}"
    );
    let (ok, lines) = promtool_check_metrics(&body).unwrap();
    assert!(ok && lines.is_empty(), "promtool: {lines:?}");

    // pi-2's CLI reads again: the total appears.
    set_mode(node_dir, "pi2", "good2");
    let body = exporter
        .wait_for("the total", |b| {
            samples(b).get("intmax_builder_reward_total_eth") == Some(&3.75)
        })
        .unwrap();
    assert_eq!(samples(&body)["nodewatch_reward_eth_nodes_missing"], 0.0);

    // pi-1's CLI changes its output: the last good value stays, marked stale.
    set_mode(node_dir, "pi1", "changed");
    let body = exporter
        .wait_for("pi-1 stale", |b| {
            samples(b).get("nodewatch_reward_eth_stale{node=\"pi-1\"}") == Some(&1.0)
        })
        .unwrap();
    let s = samples(&body);
    assert_eq!(s["intmax_builder_reward_eth{node=\"pi-1\"}"], 1.25);
    assert_eq!(s["intmax_builder_reward_check_success{node=\"pi-1\"}"], 0.0);
    assert_eq!(s["intmax_builder_reward_total_eth"], 3.75);

    // pi-1's CLI hangs: killed after 3 s, never two runs at once.
    set_mode(node_dir, "pi1", "slow");
    let started = Instant::now();
    let mut most = 0;
    let timed_out = wait_until(Duration::from_secs(20), || {
        most = most.max(children_named(exporter.child.pid(), "ssh"));
        let s = samples(&exporter.metrics().unwrap_or_default());
        s.get("nodewatch_reward_eth_errors_total{kind=\"timeout\",node=\"pi-1\"}") >= Some(&1.0)
    });
    assert!(timed_out, "no timeout; log:\n{}", exporter.child.log());
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(most <= 1, "{most} ssh runs at once");
    let s = samples(&exporter.metrics().unwrap());
    assert_eq!(s["intmax_builder_reward_eth{node=\"pi-1\"}"], 1.25);
    assert_eq!(s["nodewatch_reward_eth_stale{node=\"pi-1\"}"], 1.0);

    // Back to good: recovery.
    set_mode(node_dir, "pi1", "good2");
    exporter
        .wait_for("pi-1 recovers", |b| {
            let s = samples(b);
            s.get("intmax_builder_reward_eth{node=\"pi-1\"}") == Some(&2.5)
                && s.get("nodewatch_reward_eth_stale{node=\"pi-1\"}") == Some(&0.0)
                && s.get("intmax_builder_reward_total_eth") == Some(&5.0)
        })
        .unwrap();

    // The spend key is read on the node: never in the settings, the ssh command line,
    // the wrapper's arguments or the exporter's log.
    let key = &SPEND_KEY[2..];
    let ssh_argv = std::fs::read_to_string(&ssh_log).unwrap();
    assert!(ssh_argv.contains("StrictHostKeyChecking=yes"), "{ssh_argv}");
    assert!(ssh_argv.contains("BatchMode=yes"), "{ssh_argv}");
    assert!(ssh_argv.contains(&server.known_hosts.display().to_string()));
    let wrapper_log = std::fs::read_to_string(node_dir.join("wrapper.log")).unwrap();
    assert!(
        wrapper_log.lines().any(|l| l.ends_with(" pi1")),
        "{wrapper_log}"
    );
    for (what, text) in [
        ("config", config.as_str()),
        ("ssh command line", ssh_argv.as_str()),
        ("wrapper arguments", wrapper_log.as_str()),
        ("exporter log", &exporter.child.log()),
    ] {
        assert!(!text.contains(key), "the spend key is in the {what}");
    }

    // SIGTERM with a run in flight: a prompt, clean exit, and the ssh run ends with it.
    set_mode(node_dir, "pi1", "slow");
    let mut exporter = exporter;
    assert!(wait_until(Duration::from_secs(10), || children_named(
        exporter.child.pid(),
        "ssh"
    ) == 1));
    exporter
        .child
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = exporter.child.wait_timeout(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        exporter.child.log()
    );
    let known_hosts = server.known_hosts.display().to_string();
    assert!(
        wait_until(Duration::from_secs(3), || !any_process_mentions(
            &known_hosts
        )),
        "an ssh run outlived the exporter"
    );
}

/// Whether a process's command line contains `text`.
fn any_process_mentions(text: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(text)
            })
            .unwrap_or(false)
    })
}

/// A node whose host key is not the one in known_hosts: ssh refuses (strict checking,
/// batch mode: no prompt), the run fails, no value.
#[test]
fn ssh_refuses_an_unknown_host_key() {
    let server = SshServer::start().unwrap();
    let chain = Chain::start(true);
    chain.set_current(1);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let stub = write_stub(server.dir.path());
    set_mode(server.dir.path(), "pi1", "good");
    let dir = tempfile::tempdir().unwrap();
    let exporter = start_exporter(
        dir.path(),
        &format!(
            "{}[[nodes]]\nname = \"pi-1\"\naddress = \"{P1}\"\n\
             [nodes.eth.ssh]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\n\
             identity_file = \"{}\"\nknown_hosts = \"{}\"\ncommand = \"{} pi1\"\n",
            config_head(&proxy, &chain, 1),
            server.port,
            server.user,
            server.identity_file.display(),
            server.wrong_known_hosts().unwrap().display(),
            stub.display(),
        ),
    );
    let body = exporter
        .wait_for("ssh refused", |b| {
            samples(b).get("nodewatch_reward_eth_errors_total{kind=\"exit\",node=\"pi-1\"}")
                >= Some(&1.0)
        })
        .unwrap();
    assert!(!body.contains("intmax_builder_reward_eth{"), "{body}");
    assert_eq!(
        samples(&body)["intmax_builder_reward_check_success{node=\"pi-1\"}"],
        0.0
    );
    let log = exporter.child.log();
    assert!(log.contains("exited with exit status: 255"), "{log}");
    assert!(
        !server.dir.path().join("wrapper.log").exists(),
        "the wrapper ran"
    );
}

/// anvil with the reward token held by the reward contract, and claimable amounts for
/// the builder (anvil's account #1) in periods 0 and 2 (5 sITX).
fn claim_chain() -> (Chain, String) {
    let chain = Chain::start(true);
    let token = chain.anvil.deploy_token("sITX", 18).unwrap();
    chain.anvil.mint(&token, &chain.reward, 100 * E18).unwrap();
    chain
        .anvil
        .transact(
            "BlockBuilderReward",
            &chain.reward,
            "setToken(address)",
            &address_word(&token),
        )
        .unwrap();
    chain.set_current(3);
    chain.set_claimable(0, BUILDER, 2 * E18);
    chain.set_claimable(2, BUILDER, 3 * E18);
    (chain, token)
}

fn key_file(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join("builder.key");
    std::fs::write(&path, format!("{BUILDER_KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A claim config; pending claims are kept in `state/` beside the key file.
fn claim_config(proxy: &RpcProxy, chain: &Chain, key: &Path, extra: &str) -> String {
    format!(
        "{}state_dir = \"{}\"\n[[nodes]]\nname = \"builder\"\naddress = \"{BUILDER}\"\n\
         [nodes.claim]\nkey_file = \"{}\"\nthreshold_sitx = 4\n{extra}",
        config_head(proxy, chain, 3),
        state_dir(key).display(),
        key.display()
    )
}

fn state_dir(key: &Path) -> PathBuf {
    key.parent().unwrap().join("state")
}

/// The builder's pending claim as the exporter keeps it, if any.
fn pending_claim(key: &Path) -> Option<serde_json::Value> {
    let path = state_dir(key).join(format!("claim-{}.json", BUILDER.to_lowercase()));
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

/// Every distinct signed transaction the exporter sent (a re-send of the same bytes is
/// one).
fn distinct_raw_transactions(proxy: &RpcProxy) -> Vec<String> {
    let mut raws: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|r| r.body["method"] == "eth_sendRawTransaction")
        .map(|r| r.body["params"][0].as_str().unwrap().to_string())
        .collect();
    raws.sort();
    raws.dedup();
    raws
}

/// The builder's nonce at `tag` ("latest": mined; "pending": with the pool).
fn builder_nonce(chain: &Chain, tag: &str) -> u64 {
    let n = chain
        .anvil
        .rpc("eth_getTransactionCount", serde_json::json!([BUILDER, tag]))
        .unwrap();
    u64::from_str_radix(n.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn mine_by_hand(chain: &Chain) {
    chain
        .anvil
        .rpc("evm_setAutomine", serde_json::json!([false]))
        .unwrap();
}

fn mine(chain: &Chain) {
    chain.anvil.rpc("evm_mine", serde_json::json!([])).unwrap();
}

/// Waits until the exporter reports the builder's claim confirmed; returns the body.
fn wait_builder_confirmed(exporter: &WalletExporter, what: &str) -> String {
    exporter
        .wait_for(what, |b| {
            metric(
                b,
                "nodewatch_reward_claims_confirmed_total{node=\"builder\"}",
            ) == 1.0
        })
        .unwrap()
}

/// A claiming exporter on `chain` through `proxy` with a fresh 0600 key file and
/// `extra` claim settings: its directory, key file and the exporter.
fn start_claiming(
    proxy: &RpcProxy,
    chain: &Chain,
    extra: &str,
) -> (tempfile::TempDir, PathBuf, WalletExporter) {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o600);
    let exporter = start_exporter(dir.path(), &claim_config(proxy, chain, &key, extra));
    (dir, key, exporter)
}

/// Starts the exporter on `config`, which it must refuse: its exit status and log.
fn refused_start(config: &Path) -> (std::process::ExitStatus, String) {
    let config_arg = format!("--config={}", config.display());
    let mut child = Child::spawn(
        "nodewatch-reward-exporter",
        &reward_binary(),
        &["--web.listen-address=127.0.0.1:0", &config_arg],
        &[],
    )
    .unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(20))
        .expect("the exporter should refuse to start");
    (status, child.log())
}

fn metric(body: &str, name: &str) -> f64 {
    samples(body).get(name).copied().unwrap_or(f64::NAN)
}

fn raw_transactions(proxy: &RpcProxy) -> usize {
    proxy
        .seen()
        .iter()
        .filter(|r| r.body["method"] == "eth_sendRawTransaction")
        .count()
}

#[test]
fn auto_claim_moves_the_tokens() {
    let (chain, token) = claim_chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let (_dir, _key, exporter) = start_claiming(&proxy, &chain, "dry_run = false\n");
    let body = wait_builder_confirmed(&exporter, "the claim mined");
    assert_eq!(chain.balance_of(&token, BUILDER), 5 * E18);
    assert_eq!(chain.balance_of(&token, &chain.reward), 95 * E18);
    let s = samples(&body);
    assert_eq!(
        s["nodewatch_reward_claims_sent_total{node=\"builder\"}"],
        1.0
    );
    assert_eq!(
        s["nodewatch_reward_claimed_sitx_total{node=\"builder\"}"],
        5.0
    );
    assert_eq!(s["nodewatch_reward_claim_dry_run{node=\"builder\"}"], 0.0);
    // The claimed periods read 0, and nothing is sent again.
    exporter
        .wait_for("nothing left to claim", |b| {
            samples(b).get("intmax_builder_reward_sitx{node=\"builder\"}") == Some(&0.0)
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(raw_transactions(&proxy), 1);
    // The log names the transaction; its receipt is a success.
    let log = exporter.child.log();
    let hash = log
        .lines()
        .find(|l| l.contains("claim sent"))
        .and_then(|l| l.split("tx=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no tx hash in the log:\n{log}"))
        .to_string();
    let receipt = chain
        .anvil
        .rpc("eth_getTransactionReceipt", serde_json::json!([hash]))
        .unwrap();
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(
        receipt["from"].as_str().unwrap().to_lowercase(),
        BUILDER.to_lowercase()
    );
    assert!(!log.contains(&BUILDER_KEY[2..]), "the key is in the log");
    let (ok, lines) = promtool_check_metrics(&exporter.metrics().unwrap()).unwrap();
    assert!(ok && lines.is_empty(), "promtool: {lines:?}");
}

#[test]
fn auto_claim_dry_run_sends_nothing() {
    let (chain, token) = claim_chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o600);
    // No dry_run key: a dry run.
    let exporter = start_exporter(dir.path(), &claim_config(&proxy, &chain, &key, ""));
    let body = exporter
        .wait_for("two dry runs", |b| {
            samples(b).get("nodewatch_reward_claim_dry_runs_total{node=\"builder\"}") >= Some(&2.0)
        })
        .unwrap();
    let s = samples(&body);
    assert_eq!(
        s["nodewatch_reward_claims_sent_total{node=\"builder\"}"],
        0.0
    );
    assert_eq!(s["nodewatch_reward_claim_dry_run{node=\"builder\"}"], 1.0);
    assert_eq!(s["intmax_builder_reward_sitx{node=\"builder\"}"], 5.0);
    assert_eq!(raw_transactions(&proxy), 0, "a dry run sent a transaction");
    assert_eq!(chain.balance_of(&token, BUILDER), 0);
    let log = exporter.child.log();
    assert!(
        log.contains("dry run: would send batchClaimReward"),
        "{log}"
    );
    assert!(log.contains("periods=[0, 2]"), "{log}");
}

#[test]
fn auto_claim_refuses_a_key_file_others_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o644);
    let config = dir.path().join("reward-exporter.toml");
    std::fs::write(
        &config,
        format!(
            "rpc_urls = [\"http://127.0.0.1:9\"]\nperiod_start_unix = 1\n\
             [[nodes]]\nname = \"builder\"\naddress = \"{BUILDER}\"\n\
             [nodes.claim]\nkey_file = \"{}\"\nthreshold_sitx = 1\ndry_run = true\n",
            key.display()
        ),
    )
    .unwrap();
    let (status, log) = refused_start(&config);
    assert!(!status.success());
    assert!(
        log.contains("nodes[0].claim.key_file")
            && log.contains("mode 0644")
            && log.contains("0600"),
        "{log}"
    );
    assert!(!log.contains(&BUILDER_KEY[2..]), "the key is in the log");
}

#[test]
fn restart_mid_claim_sends_no_second_transaction() {
    let (chain, token) = claim_chain();
    mine_by_hand(&chain);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o600);
    let config = claim_config(&proxy, &chain, &key, "dry_run = false\n");
    let exporter = start_exporter(dir.path(), &config);
    exporter
        .wait_for("the claim sent", |b| {
            metric(b, "nodewatch_reward_claims_sent_total{node=\"builder\"}") == 1.0
        })
        .unwrap();
    let claim = pending_claim(&key).expect("the claim is kept in the state dir");
    assert_eq!(claim["nonce"], 0, "{claim}");
    let hash = claim["hashes"][0].as_str().unwrap().to_string();
    // The exporter dies mid-claim, and the node forgets the transaction meanwhile (the
    // worst case: nothing on chain or in the pool says a claim is in flight).
    let mut child = exporter.child;
    child.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
    assert!(child.wait_timeout(Duration::from_secs(10)).is_some());
    chain
        .anvil
        .rpc("anvil_dropAllTransactions", serde_json::json!([]))
        .unwrap();
    assert_eq!(builder_nonce(&chain, "pending"), 0, "the pool still has it");

    let exporter = start_exporter(dir.path(), &config);
    assert!(
        wait_until(Duration::from_secs(30), || builder_nonce(&chain, "pending")
            == 1),
        "the pending claim was not sent again; log:\n{}",
        exporter.child.log()
    );
    // Refreshes go on while it waits: the claimable sITX still reads 5, and yet no new
    // claim is signed.
    let requests = metric(
        &exporter.metrics().unwrap(),
        "nodewatch_reward_rpc_requests_total",
    );
    exporter
        .wait_for("two more refreshes", |b| {
            metric(b, "nodewatch_reward_rpc_requests_total") >= requests + 2.0
        })
        .unwrap();
    assert_eq!(
        distinct_raw_transactions(&proxy).len(),
        1,
        "a second transaction was signed"
    );
    mine(&chain);
    let body = wait_builder_confirmed(&exporter, "the claim mined");
    assert_eq!(
        metric(
            &body,
            "nodewatch_reward_claims_sent_total{node=\"builder\"}"
        ),
        0.0,
        "the restarted exporter signed a new claim"
    );
    assert_eq!(
        metric(&body, "nodewatch_reward_claim_pending{node=\"builder\"}"),
        0.0
    );
    let receipt = chain
        .anvil
        .rpc("eth_getTransactionReceipt", serde_json::json!([hash]))
        .unwrap();
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert!(
        pending_claim(&key).is_none(),
        "the state file outlived the claim"
    );
    // Nothing more, however long it runs.
    std::thread::sleep(Duration::from_secs(3));
    mine(&chain);
    assert_eq!(builder_nonce(&chain, "pending"), 1);
    assert_eq!(distinct_raw_transactions(&proxy).len(), 1);
    assert_eq!(chain.balance_of(&token, BUILDER), 5 * E18);
    assert!(
        exporter
            .child
            .log()
            .contains("sent the same transaction again"),
        "{}",
        exporter.child.log()
    );
}

#[test]
fn stuck_claim_is_replaced_at_the_same_nonce() {
    let (chain, token) = claim_chain();
    mine_by_hand(&chain);
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o600);
    let exporter = start_exporter(
        dir.path(),
        &claim_config(
            &proxy,
            &chain,
            &key,
            "dry_run = false\nreplace_after_seconds = 2\nmax_fee_per_gas_gwei = 100\n\
             max_claim_cost_eth = 0.05\n",
        ),
    );
    let mut first = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            first = pending_claim(&key);
            first.is_some()
        }),
        "no claim; log:\n{}",
        exporter.child.log()
    );
    let first = first.unwrap();
    let first_hash = first["hashes"][0].as_str().unwrap().to_string();
    let first_fee = first["max_fee_per_gas"].as_u64().unwrap();
    exporter
        .wait_for("a replacement", |b| {
            metric(
                b,
                "nodewatch_reward_claim_replacements_total{node=\"builder\"}",
            ) >= 1.0
        })
        .unwrap();
    let replaced = pending_claim(&key).unwrap();
    assert_eq!(replaced["nonce"], 0, "{replaced}");
    let hashes = replaced["hashes"].as_array().unwrap();
    assert!(
        hashes.len() >= 2 && hashes[0] == first_hash.as_str(),
        "{replaced}"
    );
    let newest = hashes.last().unwrap().as_str().unwrap().to_string();
    let tx = chain
        .anvil
        .rpc("eth_getTransactionByHash", serde_json::json!([newest]))
        .unwrap();
    assert_eq!(tx["nonce"], "0x0", "{tx}");
    let fee = u64::from_str_radix(
        tx["maxFeePerGas"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert!(fee > first_fee + first_fee / 10, "{fee} vs {first_fee}");
    // One transaction in the pool: the replacement took the old one's place.
    assert_eq!(builder_nonce(&chain, "pending"), 1);

    mine(&chain);
    let body = wait_builder_confirmed(&exporter, "the claim mined");
    assert_eq!(
        metric(
            &body,
            "nodewatch_reward_claims_sent_total{node=\"builder\"}"
        ),
        1.0
    );
    assert_eq!(builder_nonce(&chain, "latest"), 1);
    assert_eq!(chain.balance_of(&token, BUILDER), 5 * E18);
    let receipt = chain
        .anvil
        .rpc("eth_getTransactionReceipt", serde_json::json!([first_hash]))
        .unwrap();
    assert!(
        receipt.is_null(),
        "the replaced version was mined: {receipt}"
    );
    let versions = distinct_raw_transactions(&proxy).len();
    // Never followed by a second nonce.
    std::thread::sleep(Duration::from_secs(4));
    mine(&chain);
    assert_eq!(builder_nonce(&chain, "pending"), 1);
    assert_eq!(distinct_raw_transactions(&proxy).len(), versions);
    assert!(pending_claim(&key).is_none());
}

#[test]
fn fee_above_ceiling_is_refused() {
    let (chain, token) = claim_chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    // anvil's base fee is near 1 gwei: far over a ceiling of 0.001 gwei.
    let (dir, key, exporter) = start_claiming(
        &proxy,
        &chain,
        "dry_run = false\nmax_fee_per_gas_gwei = 0.001\n",
    );
    let body = exporter
        .wait_for("two refusals", |b| {
            metric(
                b,
                "nodewatch_reward_claim_refused_total{node=\"builder\",reason=\"fee_per_gas\"}",
            ) >= 2.0
        })
        .unwrap();
    assert_eq!(
        metric(
            &body,
            "nodewatch_reward_claim_refused_total{node=\"builder\",reason=\"total_cost\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &body,
            "nodewatch_reward_claims_sent_total{node=\"builder\"}"
        ),
        0.0
    );
    let health: serde_json::Value =
        serde_json::from_str(&get_text(&exporter.url("/api/health/detailed")).unwrap()).unwrap();
    let component = &health["collectors"]["reward_claim:builder"];
    assert_eq!(component["ok"], false, "{health}");
    let reason = component["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("fee_per_gas") && reason.contains("max_fee_per_gas_gwei"),
        "{health}"
    );
    let log = exporter.child.log();
    assert!(
        log.contains("claim refused") && log.contains("max_fee_per_gas_gwei"),
        "{log}"
    );
    let (ok, lines) = promtool_check_metrics(&exporter.metrics().unwrap()).unwrap();
    assert!(ok && lines.is_empty(), "promtool: {lines:?}");
    drop(exporter);

    // The fee fits, the worst-case total does not.
    let exporter = start_exporter(
        dir.path(),
        &claim_config(
            &proxy,
            &chain,
            &key,
            "dry_run = false\nmax_fee_per_gas_gwei = 100\nmax_claim_cost_eth = 0.00001\n",
        ),
    );
    exporter
        .wait_for("a refusal over the total", |b| {
            metric(
                b,
                "nodewatch_reward_claim_refused_total{node=\"builder\",reason=\"total_cost\"}",
            ) >= 1.0
        })
        .unwrap();
    let health = get_text(&exporter.url("/api/health/detailed")).unwrap();
    assert!(health.contains("max_claim_cost_eth"), "{health}");
    assert_eq!(raw_transactions(&proxy), 0, "a refused claim was sent");
    assert_eq!(builder_nonce(&chain, "pending"), 0);
    assert_eq!(chain.balance_of(&token, BUILDER), 0);
    assert!(pending_claim(&key).is_none());
}

#[test]
fn plain_http_rpc_url_is_refused_unless_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("reward-exporter.toml");
    // Never contacted: the exporter refuses the setting before any request.
    std::fs::write(
        &config,
        format!(
            "rpc_urls = [\"http://127.0.0.1:9\", \"http://rpc.example.invalid/key\"]\n\
             period_start_unix = 1\n[[nodes]]\nname = \"builder\"\naddress = \"{BUILDER}\"\n"
        ),
    )
    .unwrap();
    let (status, log) = refused_start(&config);
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains("rpc_urls[1]") && log.contains("https://") && !log.contains("/key"),
        "{log}"
    );
}

#[test]
fn send_with_unknown_result_is_followed_not_repeated() {
    let (chain, token) = claim_chain();
    let proxy = RpcProxy::start(&chain.anvil.url).unwrap();
    // anvil gets and mines the claim, but its answer comes after the exporter's 2 s
    // request timeout: the exporter cannot know whether it was sent.
    proxy.set_fault(nodewatch_tests::evm::Fault::DelaySendAnswer(3000));
    let (_dir, key, exporter) = start_claiming(&proxy, &chain, "dry_run = false\n");
    let body = wait_builder_confirmed(&exporter, "the claim found mined");
    assert!(
        metric(
            &body,
            "nodewatch_reward_claim_failures_total{node=\"builder\",stage=\"send\"}"
        ) >= 1.0,
        "the send did not time out: {body}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(builder_nonce(&chain, "pending"), 1);
    assert_eq!(distinct_raw_transactions(&proxy).len(), 1);
    assert_eq!(chain.balance_of(&token, BUILDER), 5 * E18);
    assert!(pending_claim(&key).is_none());
}
