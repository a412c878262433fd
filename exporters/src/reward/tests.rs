//! The reward exporter's settings, ETH source loops and families.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::proto::MetricFamily;

use super::*;
use crate::intmax_cli::EthSource;

fn config(start: u64) -> RewardConfig {
    let file: RewardFile = toml::from_str(&format!(
        "period_start_unix = {start}\n[[nodes]]\nname = \"pi-1\"\naddress = \"0x1111111111111111111111111111111111111111\"\n"
    ))
    .expect("toml");
    RewardConfig::resolve(file).expect("config")
}

#[test]
fn current_period_is_never_counted() {
    let c = config(1_000_000);
    assert_eq!(c.finished_periods(999_999), 0..0);
    assert_eq!(c.finished_periods(1_000_000), 0..0);
    assert_eq!(c.finished_periods(1_000_000 + 604_799), 0..0);
    assert_eq!(c.finished_periods(1_000_000 + 604_800), 0..1);
    assert_eq!(c.finished_periods(1_000_000 + 3 * 604_800 + 5), 0..3);
    let mut c = c;
    c.first_period = 2;
    assert_eq!(c.finished_periods(1_000_000 + 3 * 604_800 + 5), 2..3);
    assert_eq!(c.finished_periods(1_000_000), 2..2);
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/reward-exporter.toml");
    let c = RewardConfig::load(&path).expect("example");
    assert_eq!(c.period_seconds, 604_800);
    assert_eq!(c.contract.to_string(), REWARD_CONTRACT);
    assert!(c.nodes.iter().any(|n| n.eth.is_some()), "an ETH example");
    assert!(toml::from_str::<RewardFile>("period_start_unix = 1\nnodes = []\nx = 1\n").is_err());
}

#[test]
fn an_ssh_program_that_looks_like_a_key_is_refused() {
    let file: RewardFile = toml::from_str(&format!(
        "period_start_unix = 1\nssh_program = \"/opt/{}/ssh\"\n[[nodes]]\nname = \"a\"\naddress = \"0x1111111111111111111111111111111111111111\"\n",
        "c".repeat(64)
    ))
    .expect("toml");
    let e = RewardConfig::resolve(file)
        .expect_err("key-like")
        .to_string();
    assert!(
        e.contains("ssh_program") && e.contains("private key"),
        "{e}"
    );
}

fn state_with_eth() -> RewardState {
    let file: RewardFile = toml::from_str(
        "period_start_unix = 1\n\
         [[nodes]]\nname = \"a\"\naddress = \"0x1111111111111111111111111111111111111111\"\n\
         [nodes.eth]\nlocal_command = [\"/bin/sh\", \"-c\", \"echo 'ETH: 1.5'\"]\n\
         [[nodes]]\nname = \"b\"\naddress = \"0x2222222222222222222222222222222222222222\"\n\
         [nodes.eth]\nlocal_command = [\"/bin/sh\", \"-c\", \"echo 'Balance 2 ETH'\"]\n\
         [[nodes]]\nname = \"c\"\naddress = \"0x3333333333333333333333333333333333333333\"\n",
    )
    .expect("toml");
    RewardState::new(RewardConfig::resolve(file).expect("config"))
}

fn sample(families: &[MetricFamily], name: &str, node: &str) -> Option<f64> {
    let f = families.iter().find(|f| f.name() == name)?;
    f.get_metric()
        .iter()
        .find(|m| node.is_empty() || m.get_label().iter().any(|l| l.value() == node))
        .map(|m| {
            if f.get_field_type() == prometheus::proto::MetricType::GAUGE {
                m.get_gauge().get_value()
            } else {
                m.get_counter().get_value()
            }
        })
}

#[test]
fn eth_values_only_after_a_good_read_and_no_partial_total() {
    let state = Mutex::new(state_with_eth());
    let families = lock(&state).families();
    assert_eq!(sample(&families, "intmax_builder_reward_eth", "a"), None);
    assert_eq!(
        sample(&families, "intmax_builder_reward_total_eth", ""),
        None
    );
    assert_eq!(
        sample(&families, "intmax_builder_reward_check_success", "a"),
        None
    );

    RewardState::run_eth(&state, 0);
    RewardState::run_eth(&state, 1);
    RewardState::run_eth(&state, 2); // no source: nothing
    let s = lock(&state);
    let families = s.families();
    assert_eq!(
        sample(&families, "intmax_builder_reward_eth", "a"),
        Some(1.5)
    );
    assert_eq!(sample(&families, "intmax_builder_reward_eth", "b"), None);
    // b never read: no total (a made-up sum), and a count of what is missing.
    assert_eq!(
        sample(&families, "intmax_builder_reward_total_eth", ""),
        None
    );
    assert_eq!(
        sample(&families, "nodewatch_reward_eth_nodes_missing", ""),
        Some(1.0)
    );
    // b failed: its check fails even before the chain was read.
    assert_eq!(
        sample(&families, "intmax_builder_reward_check_success", "b"),
        Some(0.0)
    );
    // a's ETH is good, its chain read has not happened yet: not known.
    assert_eq!(
        sample(&families, "intmax_builder_reward_check_success", "a"),
        None
    );
    let error = s.eth[1].last_error.clone().expect("error");
    assert!(
        error.contains("node b") && error.contains("Balance 2 ETH"),
        "{error}"
    );
    drop(s);

    // Once b reads, the total appears; when a then fails, its value stays (stale).
    lock(&state).eth[1].value = Some(2.0);
    lock(&state).eth[1].last_ok = Some(true);
    lock(&state).config.nodes[0].eth = Some(
        EthSource::resolve(
            0,
            &toml::from_str("local_command = [\"/bin/false\"]").expect("toml"),
        )
        .expect("source"),
    );
    RewardState::run_eth(&state, 0);
    let families = lock(&state).families();
    assert_eq!(
        sample(&families, "intmax_builder_reward_eth", "a"),
        Some(1.5)
    );
    assert_eq!(
        sample(&families, "nodewatch_reward_eth_stale", "a"),
        Some(1.0)
    );
    assert_eq!(
        sample(&families, "intmax_builder_reward_total_eth", ""),
        Some(3.5)
    );
}

#[test]
fn eth_loops_of_nodes_run_side_by_side() {
    let state = Arc::new(Mutex::new(state_with_eth()));
    lock(&state).config.eth_interval = Duration::from_millis(300);
    let stop = RewardState::start_eth_loops(&state);
    std::thread::sleep(Duration::from_millis(1600));
    drop(stop);
    let runs: Vec<u64> = lock(&state).eth.iter().map(|e| e.runs).collect();
    // Each node's loop waits on its own: both ran about 1600 / 300 times.
    assert!(runs[0] >= 4 && runs[1] >= 4, "{runs:?}");
    assert_eq!(runs[2], 0, "no source, no loop");
    std::thread::sleep(Duration::from_millis(400));
    let after: Vec<u64> = lock(&state).eth.iter().map(|e| e.runs).collect();
    assert!(after[0] <= runs[0] + 1, "stopped: {runs:?} then {after:?}");
}

#[test]
fn runs_never_overlap() {
    let state = Mutex::new(state_with_eth());
    lock(&state).eth[0].in_flight = true;
    RewardState::run_eth(&state, 0);
    assert_eq!(
        lock(&state).eth[0].runs,
        0,
        "a run in flight: no second one"
    );
}

#[test]
fn node_names_are_unique() {
    let file: RewardFile = toml::from_str(
        "period_start_unix = 1\n\
         [[nodes]]\nname = \"a\"\naddress = \"0x1111111111111111111111111111111111111111\"\n\
         [[nodes]]\nname = \"a\"\naddress = \"0x2222222222222222222222222222222222222222\"\n",
    )
    .expect("toml");
    let e = RewardConfig::resolve(file).expect_err("twice").to_string();
    assert!(e.contains("nodes[1].name"), "{e}");
}
