//! `promtool check metrics` over the live output: no parse error, and lint findings
//! only on names inherited from node_exporter (an explicit allowlist).

mod common;

use nodewatch_tests::{Agent, fixture, promtool_check_metrics};

/// Names (or name prefixes, ending in `_`) that node_exporter exports with names
/// promtool's linter dislikes, kept for compatibility with existing dashboards:
/// meminfo's CamelCase fields (`node_memory_MemTotal_bytes`), netstat's
/// (`node_netstat_Tcp_InSegs`), and entropy's `_bits` unit.
const INHERITED: &[&str] = &[
    "node_memory_",
    "node_netstat_",
    "node_entropy_available_bits",
    "node_entropy_pool_size_bits",
];

fn check(body: &str) {
    let (_ok, findings) = promtool_check_metrics(body).expect("promtool");
    let mut unexpected = Vec::new();
    for finding in &findings {
        if finding.contains("error while linting")
            || finding.contains("parse error")
            || finding.contains("text format parsing error")
        {
            panic!("promtool could not parse the output: {finding}");
        }
        let name = finding.split_whitespace().next().unwrap_or("");
        let inherited = INHERITED.iter().any(|p| {
            if p.ends_with('_') {
                name.starts_with(p)
            } else {
                name == *p || name.starts_with(p)
            }
        });
        if !inherited {
            unexpected.push(finding.clone());
        }
    }
    assert!(
        unexpected.is_empty(),
        "lint findings on nodewatch's own names:\n{}",
        unexpected.join("\n")
    );
}

#[test]
fn live_output_passes_promtool() {
    // The machine's own /proc and /sys: the real thing.
    let agent = Agent::start(&[]).expect("agent");
    let body = agent
        .metrics_after_first_collection(&["cpu", "meminfo", "netdev"])
        .expect("metrics");
    check(&body);
}

#[test]
fn pi_fixture_output_passes_promtool() {
    let args = common::fixture_args(&fixture("pi"), &fixture("textfile"));
    let agent = Agent::start(&common::strs(&args)).expect("agent");
    let body = agent
        .metrics_after_first_collection(&["cpu", "pi", "textfile"])
        .expect("metrics");
    check(&body);
}
