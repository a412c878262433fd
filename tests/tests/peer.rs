//! The peer check: Debian's node_exporter 1.5 and nodewatch-agent read the same
//! fixture trees; for every family both produce, the samples must be equal.
//!
//! Left out, because they read the live machine whatever the roots say: time, timex,
//! uname, the statfs values of filesystem, and collector durations. Families only one
//! side has are listed (nodewatch does not implement every node_exporter collector, and
//! has its own `nodewatch_*` families), not compared.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{fixture_args, strs};
use nodewatch_tests::metrics_text::family_of;
use nodewatch_tests::{Agent, NodeExporter, fixture, parse_samples};

/// Families whose values come from the live machine (or the clock), on either side.
const LIVE: &[&str] = &[
    "node_time_seconds",
    "node_time_zone_offset_seconds",
    "node_uname_info",
    "node_scrape_collector_duration_seconds",
    "node_filesystem_size_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
];

fn is_live(family: &str) -> bool {
    // process_* describe each exporter's own process.
    LIVE.contains(&family) || family.starts_with("node_timex_") || family.starts_with("process_")
}

/// Samples by family, without live ones.
fn by_family(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (series, value) in parse_samples(text) {
        let family = family_of(&series).to_string();
        if !is_live(&family) {
            out.entry(family).or_default().insert(series, value);
        }
    }
    out
}

/// The shared textfile fixtures plus the peer-only ones (bucket and quantile spellings
/// that Go re-renders), in one directory both exporters read.
fn peer_textfiles() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for source in [fixture("textfile"), fixture("textfile-peer")] {
        for entry in std::fs::read_dir(&source).expect("textfile fixtures") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
                    .expect("copy textfile fixture");
            }
        }
    }
    dir
}

fn compare(tree: &str) {
    let root = fixture(tree);
    let textfile_dir = peer_textfiles();
    let textfiles = textfile_dir.path().to_path_buf();
    let args = fixture_args(&root, &textfiles);
    let agent_args = common::agent_fixture_args(&root, &textfiles);
    let agent = Agent::start(&strs(&agent_args)).expect("agent");
    let ours = agent
        .metrics_after_first_collection(&["cpu", "textfile", "netclass", "hwmon"])
        .expect("metrics");
    let mut ne_args = args.clone();
    ne_args.extend([
        "--no-collector.systemd".to_string(),
        // 1.5 reads interface counters over netlink from the live kernel by default.
        "--no-collector.netdev.netlink".to_string(),
        format!("--path.udev.data={}", root.join("run/udev/data").display()),
        // Debian's build changes two upstream defaults; nodewatch keeps upstream's.
        "--collector.netdev.device-exclude=".to_string(),
        format!(
            "--collector.filesystem.mount-points-exclude={}",
            nodewatch_agent_default_mount_points_exclude()
        ),
    ]);
    let node_exporter = NodeExporter::start(&strs(&ne_args)).expect("node_exporter");
    let theirs = node_exporter.metrics().expect("node_exporter metrics");

    let ours = by_family(&ours);
    let mut theirs = by_family(&theirs);
    // Collectors only one side has (node_exporter's bonding, nodewatch's pi) report
    // their success there; compare the collectors both have.
    let theirs_success = theirs
        .get("node_scrape_collector_success")
        .cloned()
        .unwrap_or_default();
    let mut ours = ours;
    if let Some(success) = ours.get_mut("node_scrape_collector_success") {
        success.retain(|series, _| theirs_success.contains_key(series));
    }
    if let Some(success) = theirs.get_mut("node_scrape_collector_success") {
        let ours_success = &ours["node_scrape_collector_success"];
        success.retain(|series, _| ours_success.contains_key(series));
    }
    let mut problems = Vec::new();
    let shared: BTreeSet<_> = ours
        .keys()
        .filter(|f| theirs.contains_key(*f))
        .cloned()
        .collect();
    for family in &shared {
        let (a, b) = (&ours[family], &theirs[family]);
        for (series, value) in b {
            match a.get(series) {
                None => problems.push(format!("missing {series} = {value}")),
                Some(v) if !close(*v, *value) => {
                    problems.push(format!("{series}: nodewatch {v}, node_exporter {value}"))
                }
                _ => {}
            }
        }
        for (series, value) in a {
            if !b.contains_key(series) {
                problems.push(format!("extra {series} = {value}"));
            }
        }
    }
    let only_theirs: Vec<_> = theirs.keys().filter(|f| !ours.contains_key(*f)).collect();
    let only_ours: Vec<_> = ours.keys().filter(|f| !theirs.contains_key(*f)).collect();
    eprintln!("{tree}: {} shared families compared", shared.len());
    eprintln!("{tree}: only node_exporter: {only_theirs:?}");
    eprintln!("{tree}: only nodewatch: {only_ours:?}");
    assert!(
        problems.is_empty(),
        "{tree}: {} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The families this issue promises are among the compared ones.
    for family in [
        "node_cpu_seconds_total",
        "node_load1",
        "node_memory_MemTotal_bytes",
        "node_network_receive_bytes_total",
    ] {
        assert!(shared.contains(family), "{tree}: {family} was not compared");
    }
    // nodewatch must not lack any family node_exporter produces for the collectors it implements.
    let implemented_prefixes = [
        "node_arp_",
        "node_nf_conntrack_",
        "node_cpu_",
        "node_disk_",
        "node_entropy_",
        "node_filefd_",
        "node_filesystem_",
        "node_hwmon_",
        "node_load",
        "node_memory_",
        "node_network_",
        "node_netstat_",
        "node_pressure_",
        "node_sockstat_",
        "node_softnet_",
        "node_textfile_",
        "node_thermal_zone_",
        "node_udp_queues",
        "node_vmstat_",
        "node_boot_time",
        "node_context_switches",
        "node_forks",
        "node_intr",
        "node_procs_",
    ];
    let missing: Vec<_> = only_theirs
        .iter()
        .filter(|f| implemented_prefixes.iter().any(|p| f.starts_with(p)))
        .filter(|f| !KNOWN_GAPS.contains(&f.as_str()))
        .collect();
    assert!(missing.is_empty(), "{tree}: nodewatch lacks {missing:?}");
}

/// node_exporter families of implemented collectors that nodewatch leaves out on
/// purpose, each with its reason in docs/metrics.md ("Differences from node_exporter").
const KNOWN_GAPS: &[&str] = &[];

/// Upstream node_exporter 1.5's default, which nodewatch uses too.
fn nodewatch_agent_default_mount_points_exclude() -> &'static str {
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn same_samples_as_node_exporter_on_the_linux_tree() {
    compare("linux");
}

#[test]
fn same_samples_as_node_exporter_on_the_pi_tree() {
    compare("pi");
}
