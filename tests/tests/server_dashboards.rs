//! Every panel query of the shipped Grafana dashboards returns data from a real
//! Prometheus that loads the shipped rules and scrapes what a fleet runs:
//!
//! - `pi-builder`: an agent watching a stub builder container in the test's own Docker
//!   engine (docker and intmax_builder collectors);
//! - `pi-01`: an agent on the Pi fixture tree (temperature, throttling, disks, network);
//! - `pi-a`, a LoRa node agent, heard over the simulated air by a gateway agent
//!   (job `lora-gateway`);
//! - both Scroll exporters against anvil: a gas wallet named `pi-01`, claimable sITX for
//!   `pi-01`'s builder address with auto-claim in dry run, and its ETH reward from a CLI
//!   stand-in.
//!
//! The `node` variable is substituted as Grafana's "All" does (`.*`), and each node value
//! alone must give the per-node "Agent up" panel data. Timings compressed to 1 s (see
//! `nodewatch_tests::server`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::{agent_fixture_args, strs};
use nodewatch_tests::docker::Dockerd;
use nodewatch_tests::evm::{Anvil, WalletExporter, address_word, exporter_binary, word};
use nodewatch_tests::server::{SiteConfig, server_dir};
use nodewatch_tests::{Agent, Prometheus, fixture, free_port, get_text, wait_until};
use serde_json::Value;

const E18: u128 = 1_000_000_000_000_000_000;
const WEEK: u64 = 604_800;
/// anvil's well-known account #1 (a public test key): pi-01's builder address.
const BUILDER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const BUILDER: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const LORA_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("udp port")
}

/// The builder agent: only the docker and builder collectors, on the test's engine.
fn builder_agent(dir: &Path, dockerd: &Dockerd, health_port: u16) -> Agent {
    let config = dir.join("builder-agent.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"pi-builder\"\nstate_dir = \"{}\"\n\n[docker]\nsocket = \"{}\"\n\n\
             [builder]\nhealth_url = \"http://127.0.0.1:{health_port}/health-check\"\n\
             health_interval_secs = 0.5\nhealth_timeout_secs = 1.0\n",
            dir.join("builder-state").display(),
            dockerd.socket().display()
        ),
    )
    .expect("write");
    Agent::start(&[
        &format!("--config={}", config.display()),
        "--collector.disable-defaults",
        "--collector.docker",
        "--collector.intmax_builder",
    ])
    .expect("builder agent")
}

/// A LoRa node (`pi-a`) whose one rule fires from the start, so its first frame goes out
/// at once, and the gateway that hears it.
fn lora_pair(dir: &Path) -> (Agent, Agent) {
    let (node_port, gateway_port) = (free_udp_port(), free_udp_port());
    let key = dir.join("lora.key");
    write_private(&key, &format!("{LORA_KEY}\n"));
    // The node holds its own key, derived from the gateway's master key.
    let node_key = dir.join("pi-a.key");
    let derived = nodewatch_lora::frame::MasterKey::from_hex(LORA_KEY)
        .expect("master key")
        .node_key_hex(nodewatch_lora::frame::NodeId::from_name("pi-a"));
    write_private(&node_key, &format!("{derived}\n"));
    let textfile = dir.join("lora-textfile");
    std::fs::create_dir(&textfile).expect("mkdir");
    std::fs::write(
        textfile.join("condition.prom"),
        "# TYPE nodewatch_test_condition gauge\nnodewatch_test_condition 1\n",
    )
    .expect("write");
    let gateway_config = dir.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "node_name = \"lora-gw\"\nstate_dir = \"{state}\"\n\n[alerts]\ndefault_rules = false\n\n\
             [lora]\nenabled = true\ngateway = true\nnetwork_key_file = \"{key}\"\n\
             alertmanager_urls = [\"http://127.0.0.1:{dead}\"]\n\n[[lora.nodes]]\nname = \"pi-a\"\n\n\
             [lora.radio]\nkind = \"udp\"\nudp_bind = \"127.0.0.1:{gateway_port}\"\n\
             udp_peers = [\"127.0.0.1:{node_port}\"]\n",
            state = dir.join("gateway-state").display(),
            key = key.display(),
            dead = free_port(),
        ),
    )
    .expect("write");
    let mut args = vec![format!("--config={}", gateway_config.display())];
    args.extend(agent_fixture_args(
        &fixture("linux"),
        &dir.join("lora-textfile-gw"),
    ));
    std::fs::create_dir(dir.join("lora-textfile-gw")).expect("mkdir");
    let gateway = Agent::start(&strs(&args)).expect("gateway agent");
    let node_config = dir.join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "node_name = \"pi-a\"\nstate_dir = \"{state}\"\n\n[alerts]\ndefault_rules = false\n\n\
             [[alerts.rules]]\nname = \"ConditionTripped\"\nexpr = \"nodewatch_test_condition > 0\"\n\
             severity = \"critical\"\nsummary = \"The test condition tripped\"\n\n\
             [lora]\nenabled = true\nnetwork_key_file = \"{key}\"\nack_timeout_secs = 1\n\n\
             [lora.radio]\nkind = \"udp\"\nudp_bind = \"127.0.0.1:{node_port}\"\n\
             udp_peers = [\"127.0.0.1:{gateway_port}\"]\n",
            state = dir.join("node-state").display(),
            key = node_key.display(),
        ),
    )
    .expect("write");
    let mut args = vec![format!("--config={}", node_config.display())];
    args.extend(agent_fixture_args(&fixture("pi"), &textfile));
    let node = Agent::start(&strs(&args)).expect("lora node agent");
    (gateway, node)
}

/// anvil with Multicall3, the sITX token, pi-01's gas wallet (0.005 ETH) holding sITX,
/// and the reward contract owing it 5 sITX over finished periods. Returns (anvil, sITX,
/// reward contract).
fn chain() -> (Anvil, String, String) {
    let anvil = Anvil::start().expect("anvil");
    anvil.install_multicall3().expect("multicall3");
    let sitx = anvil.deploy_token("sITX", 18).expect("token");
    let reward = anvil.deploy("BlockBuilderReward").expect("reward contract");
    anvil.mint(&sitx, &reward, 100 * E18).expect("mint");
    anvil.mint(&sitx, BUILDER, 7 * E18).expect("mint");
    anvil.set_balance(BUILDER, E18 / 200).expect("balance");
    let transact = |signature: &str, args: String| {
        anvil
            .transact("BlockBuilderReward", &reward, signature, &args)
            .expect(signature)
    };
    transact("setToken(address)", address_word(&sitx));
    transact("setCurrentPeriod(uint256)", word(3));
    transact(
        "setClaimable(uint256,address,uint256)",
        format!("{}{}{}", word(0), address_word(BUILDER), word(2 * E18)),
    );
    transact(
        "setClaimable(uint256,address,uint256)",
        format!("{}{}{}", word(2), address_word(BUILDER), word(3 * E18)),
    );
    (anvil, sitx, reward)
}

fn reward_exporter(dir: &Path, anvil: &Anvil, reward: &str) -> WalletExporter {
    let key = dir.join("builder.key");
    write_private(&key, &format!("{BUILDER_KEY}\n"));
    let cli = dir.join("intmax-balance");
    std::fs::write(&cli, "#!/bin/sh\nprintf 'ETH: 1.25\\nsITX: 4.5\\n'\n").expect("write");
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = dir.join("reward-exporter.toml");
    std::fs::write(
        &config,
        format!(
            "rpc_urls = [\"{url}\"]\ninterval_seconds = 1\nretry_seconds = 1\n\
             request_timeout_seconds = 2\nreward_contract = \"{reward}\"\n\
             period_start_unix = {start}\neth_interval_seconds = 1\nprobe_interval_seconds = 1\n\
             [[nodes]]\nname = \"pi-01\"\naddress = \"{BUILDER}\"\n\
             [nodes.eth]\nlocal_command = [\"{cli}\"]\ntimeout_seconds = 3\n\
             [nodes.claim]\nkey_file = \"{key}\"\nthreshold_sitx = 4\n",
            url = anvil.url,
            start = now() - 3 * WEEK - 3600,
            cli = cli.display(),
            key = key.display(),
        ),
    )
    .expect("write");
    WalletExporter::start_program(
        &exporter_binary("nodewatch-reward-exporter"),
        Some(&config),
        &[],
    )
    .expect("reward exporter")
}

/// Every `expr` of every panel, as (dashboard title, panel title, expr).
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(server_dir().join("grafana/dashboards")).expect("dir") {
        let path = entry.expect("entry").path();
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let title = dashboard["title"].as_str().unwrap_or("").to_string();
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((
                    title.clone(),
                    panel["title"].as_str().unwrap_or("").to_string(),
                    target["expr"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn every_panel_query_returns_data() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();

    let dockerd = Dockerd::start().expect("dockerd");
    dockerd.import_builder_stub().expect("import stub");
    let health_port = free_port();
    dockerd
        .run_builder_stub(health_port, "0.1.0-test", &[])
        .expect("docker run");
    let builder = builder_agent(dir, &dockerd, health_port);
    let pi = Agent::start(&strs(&agent_fixture_args(
        &fixture("pi"),
        &fixture("textfile"),
    )))
    .expect("pi agent");
    let (gateway, lora_node) = lora_pair(dir);

    let (anvil, sitx, reward) = chain();
    let wallet_config = dir.join("wallet-exporter.toml");
    std::fs::write(&wallet_config, "probe_interval_seconds = 1\n").expect("write");
    let wallet = WalletExporter::start(
        Some(&wallet_config),
        &[
            ("WALLET_ADDRESSES", &format!("pi-01={BUILDER}")),
            ("SCROLL_RPC_URL", &anvil.url),
            ("SITX_CONTRACT", &sitx),
            ("UPDATE_INTERVAL", "1"),
        ],
    )
    .expect("wallet exporter");
    let rewards = reward_exporter(dir, &anvil, &reward);

    let site = SiteConfig::new(true).expect("site config");
    site.set_targets(
        "nodes",
        &[
            (&builder.address, &[("node", "pi-builder")]),
            (&pi.address, &[("node", "pi-01")]),
            (&lora_node.address, &[("node", "pi-a")]),
        ],
    )
    .expect("targets");
    site.set_targets(
        "lora-gateway",
        &[(&gateway.address, &[("node", "lora-gw")])],
    )
    .expect("targets");
    site.set_targets("intmax-wallet", &[(&wallet.address, &[])])
        .expect("targets");
    site.set_targets("intmax-reward", &[(&rewards.address, &[])])
        .expect("targets");
    let prometheus =
        Prometheus::start_site(&site.config_file(), &dir.join("tsdb"), &[]).expect("prometheus");

    // Every target up, then a few scrapes more so rates have two points.
    let timeout = Duration::from_secs(60);
    let all_up = wait_until(timeout, || {
        prometheus
            .query("up")
            .map(|v| v.len() == 6 && v.iter().all(|(_, value)| *value == 1.0))
            .unwrap_or(false)
    });
    assert!(all_up, "targets: {:?}", prometheus.query("up"));
    prometheus
        .wait_for("intmax_builder_reward_eth", timeout)
        .expect("ETH rewards");
    prometheus
        .wait_for(
            r#"nodewatch_lora_last_seen_timestamp_seconds{node="pi-a"}"#,
            timeout,
        )
        .unwrap_or_else(|e| panic!("{e}\ngateway log:\n{}", gateway.child.log()));
    prometheus
        .wait_for(
            r#"nodewatch_container_running{name="block-builder"}"#,
            timeout,
        )
        .expect("the builder container");

    // The shipped rules load and evaluate (five groups, every rule evaluated, no error).
    let fetch_rules = || -> Value {
        serde_json::from_str(
            &get_text(&format!("{}/api/v1/rules", prometheus.url())).expect("rules"),
        )
        .expect("json")
    };
    let all_evaluated = |rules: &Value| {
        rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().into_iter().flatten())
            .all(|rule| {
                rule["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001-"))
            })
    };
    wait_until(timeout, || all_evaluated(&fetch_rules()));
    let rules = fetch_rules();
    assert!(all_evaluated(&rules), "rules never evaluated: {rules}");
    let groups = rules["data"]["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 5, "{rules}");
    for group in groups {
        for rule in group["rules"].as_array().into_iter().flatten() {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
    }

    let nodes: Vec<String> = prometheus
        .query(r#"group by (node) (up{job="node"})"#)
        .expect("nodes")
        .iter()
        .filter_map(|(labels, _)| labels["node"].as_str().map(str::to_string))
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let mut missing = Vec::new();
    let queries = panel_queries();
    assert!(queries.len() >= 20);
    for (dashboard, panel, expr) in &queries {
        let expr = expr.replace("$node", ".*");
        let ok = wait_until(Duration::from_secs(10), || {
            prometheus.query(&expr).is_ok_and(|v| !v.is_empty())
        });
        if !ok {
            missing.push(format!("{dashboard} / {panel}: {expr}"));
        }
    }
    assert!(
        missing.is_empty(),
        "panel queries without data:\n{}",
        missing.join("\n")
    );
    for node in &nodes {
        let expr = format!(r#"up{{job="node",node=~"{node}"}}"#);
        assert_eq!(prometheus.query(&expr).expect("query").len(), 1, "{node}");
    }
}
