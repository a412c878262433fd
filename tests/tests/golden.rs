//! Golden end-to-end test: the agent binary on each fixture tree, its `/metrics` diffed
//! against `tests/golden/<tree>.prom`. Families that depend on the live machine or
//! the clock are left out. `NODEWATCH_UPDATE_GOLDEN=1` rewrites the golden files.

mod common;

use common::{agent_fixture_args, strs};
use nodewatch_tests::{Agent, fixture, workspace_root};

/// Families whose values depend on the live machine, the clock or the checkout.
fn is_live(family: &str) -> bool {
    family.starts_with("process_")
        || family.starts_with("nodewatch_display_")
        // Local alerts go from pending to firing with time (tested in alert_rules.rs).
        || family.starts_with("nodewatch_alert_")
        // Request counts grow with every request the test makes.
        || family.starts_with("nodewatch_http_")
        || family.starts_with("node_timex_")
        || family.starts_with("node_time_")
        || matches!(
            family,
            "node_uname_info"
                | "node_scrape_collector_duration_seconds"
                | "node_textfile_mtime_seconds"
                | "node_filesystem_size_bytes"
                | "node_filesystem_free_bytes"
                | "node_filesystem_avail_bytes"
                | "node_filesystem_files"
                | "node_filesystem_files_free"
                | "nodewatch_build_info"
        )
}

/// The body without live families (their HELP, TYPE and samples).
fn stable(body: &str) -> String {
    body.lines()
        .filter(|line| {
            let family = if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                rest.split(' ').next().unwrap_or("")
            } else {
                line.split(['{', ' ']).next().unwrap_or("")
            };
            !is_live(family)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check(tree: &str) {
    let args = agent_fixture_args(&fixture(tree), &fixture("textfile"));
    let agent = Agent::start(&strs(&args)).expect("agent");
    let body = agent
        .metrics_after_first_collection(&["cpu", "textfile", "netclass", "hwmon"])
        .expect("metrics");
    // Textfile families without HELP get node_exporter's "Metric read from <path>":
    // the checkout's path is replaced so the golden file holds on any machine.
    let textfile_dir = fixture("textfile").display().to_string();
    let actual = stable(&body).replace(&textfile_dir, "{textfile}");
    let path = workspace_root().join(format!("tests/golden/{tree}.prom"));
    if std::env::var("NODEWATCH_UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (NODEWATCH_UPDATE_GOLDEN=1 creates it)",
            path.display()
        )
    });
    if expected != actual {
        let expected_lines: std::collections::BTreeSet<_> = expected.lines().collect();
        let actual_lines: std::collections::BTreeSet<_> = actual.lines().collect();
        let missing: Vec<_> = expected_lines.difference(&actual_lines).take(40).collect();
        let extra: Vec<_> = actual_lines.difference(&expected_lines).take(40).collect();
        panic!(
            "{tree}: /metrics differs from {} (NODEWATCH_UPDATE_GOLDEN=1 rewrites it)\nmissing:\n{}\nunexpected:\n{}",
            path.display(),
            missing
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            extra
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
}

#[test]
fn golden_linux() {
    check("linux");
}

#[test]
fn golden_pi() {
    check("pi");
}
