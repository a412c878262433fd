//! Tests of the textfile collector: node_exporter 1.5's output on the fixture
//! directories, and what 1.5 cannot do (FIFOs, size cap, logging once).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::collectors::test_support::{fixture_dir, parse_samples, value_of};

fn collector(directory: &Path, explicit: bool) -> TextfileCollector {
    let config = TextfileConfig {
        directory: directory.to_path_buf(),
        ..TextfileConfig::default()
    };
    TextfileCollector::new(&config, explicit)
}

/// Runs the collector once: the exposition text and the messages it logged.
fn run_text(collector: &TextfileCollector) -> (String, Vec<String>) {
    let mut sink = MetricSink::new();
    let logged = collector.run(&mut sink);
    let mut out = Vec::new();
    nodewatch_http::encode_families(&sink.into_families(), &mut out).expect("encode");
    (String::from_utf8(out).expect("utf8"), logged)
}

fn collect_dir(directory: &Path) -> (String, Vec<String>) {
    run_text(&collector(directory, true))
}

/// HELP/TYPE lines and samples, with the mtime values (which depend on the checkout)
/// zeroed. NaN is mapped to a marker so that maps compare.
type Normalized = (BTreeSet<String>, BTreeMap<String, String>);

fn normalize(text: &str) -> Normalized {
    let meta = text
        .lines()
        .filter(|l| l.starts_with("# "))
        .map(str::to_string)
        .collect();
    let samples = parse_samples(text)
        .into_iter()
        .map(|(series, value)| {
            let value = if series.starts_with("node_textfile_mtime_seconds{") {
                "mtime".to_string()
            } else if value.is_nan() {
                "NaN".to_string()
            } else {
                value.to_string()
            };
            (series, value)
        })
        .collect();
    (meta, samples)
}

/// `tests/fixtures/<name>` as node_exporter names it (a cleaned path).
fn fixture_path(name: &str) -> String {
    glob::clean(fixture_dir(name).to_str().expect("utf8 fixture path"))
}

/// node_exporter 1.5 on `tests/fixtures/textfile` (`--collector.disable-defaults
/// --collector.textfile --collector.textfile.directory=DIR`), DIR written as `{dir}`;
/// mtime values are the checkout's.
const NODE_EXPORTER_GOOD: &str = r#"# HELP backup_last_success_timestamp_seconds When the last backup finished successfully
# TYPE backup_last_success_timestamp_seconds gauge
backup_last_success_timestamp_seconds{job="home"} 1.73223e+09
backup_last_success_timestamp_seconds{host="pi-01",job="var"} 1.732231e+09
# HELP backup_size_bytes Metric read from {dir}/backup_home.prom, {dir}/backup_var.prom
# TYPE backup_size_bytes untyped
backup_size_bytes{job="home"} 1.23456789e+08
backup_size_bytes{job="var"} 987654
# HELP builder_batch_wait_seconds Metric read from {dir}/latency.prom
# TYPE builder_batch_wait_seconds histogram
builder_batch_wait_seconds_bucket{stage="collect",le="0.1"} 1
builder_batch_wait_seconds_bucket{stage="collect",le="0.5"} 2
builder_batch_wait_seconds_bucket{stage="collect",le="+Inf"} 4
builder_batch_wait_seconds_sum{stage="collect"} 1.25
builder_batch_wait_seconds_count{stage="collect"} 4
# HELP builder_block_size_bytes Size of the blocks built
# TYPE builder_block_size_bytes histogram
builder_block_size_bytes_bucket{le="1024"} 3
builder_block_size_bytes_bucket{le="4096"} 10
builder_block_size_bytes_bucket{le="16384"} 12
builder_block_size_bytes_bucket{le="+Inf"} 13
builder_block_size_bytes_sum 70000
builder_block_size_bytes_count 13
# HELP builder_rpc_duration_seconds Builder RPC latency, with "quotes", a backslash \\ and\na second line
# TYPE builder_rpc_duration_seconds summary
builder_rpc_duration_seconds{method="health",quantile="0.5"} NaN
builder_rpc_duration_seconds_sum{method="health"} 0
builder_rpc_duration_seconds_count{method="health"} 0
builder_rpc_duration_seconds{method="submit",quantile="0.5"} 0.012
builder_rpc_duration_seconds{method="submit",quantile="0.9"} 0.034
builder_rpc_duration_seconds{method="submit",quantile="0.99"} 0.25
builder_rpc_duration_seconds_sum{method="submit"} 17.5
builder_rpc_duration_seconds_count{method="submit"} 1024
# HELP intmax_builder_container_running Whether the block builder container is running
# TYPE intmax_builder_container_running gauge
intmax_builder_container_running{node="pi-01"} 1
# HELP intmax_builder_data_dir_bytes Size of the builder data directory
# TYPE intmax_builder_data_dir_bytes gauge
intmax_builder_data_dir_bytes{node="pi-01"} 4.2e+09
# HELP intmax_builder_health_ok Whether the builder health check answered
# TYPE intmax_builder_health_ok gauge
intmax_builder_health_ok{node="pi-01"} 0
# HELP intmax_builder_last_scrape_timestamp Metric read from {dir}/intmax_builder.prom
# TYPE intmax_builder_last_scrape_timestamp untyped
intmax_builder_last_scrape_timestamp{node="pi-01"} 1.73224e+09
# HELP intmax_builder_process_running Whether the block builder process is running
# TYPE intmax_builder_process_running gauge
intmax_builder_process_running{node="pi-01"} 1
# HELP node_textfile_mtime_seconds Unixtime mtime of textfiles successfully read.
# TYPE node_textfile_mtime_seconds gauge
node_textfile_mtime_seconds{file="{dir}/backup_home.prom"} 1.795315543e+09
node_textfile_mtime_seconds{file="{dir}/backup_var.prom"} 1.795315543e+09
node_textfile_mtime_seconds{file="{dir}/intmax_builder.prom"} 1.795315543e+09
node_textfile_mtime_seconds{file="{dir}/latency.prom"} 1.795315543e+09
node_textfile_mtime_seconds{file="{dir}/misc.prom"} 1.795315549e+09
# HELP node_textfile_scrape_error 1 if there was an error opening or reading a file, 0 otherwise
# TYPE node_textfile_scrape_error gauge
node_textfile_scrape_error 0
# HELP pi_case_temperature_celsius Metric read from {dir}/misc.prom
# TYPE pi_case_temperature_celsius untyped
pi_case_temperature_celsius{sensor="bottom\\side"} 38
pi_case_temperature_celsius{sensor="top"} 41.5
# HELP pi_fan_on Metric read from {dir}/misc.prom
# TYPE pi_fan_on untyped
pi_fan_on 1
# HELP ssd_wear_ratio Metric read from {dir}/misc.prom
# TYPE ssd_wear_ratio untyped
ssd_wear_ratio{device="sda",model="Samsung \"EVO\""} 0.07
"#;

/// node_exporter 1.5 on `tests/fixtures/textfile-bad`. It also logged: malformed.prom
/// "line 4: unexpected end of label value \"pi-02\"", no_newline.prom "line 2:
/// unexpected end of input stream", timestamps.prom "contains unsupported client-side
/// timestamps", and at gathering, backup_ok{copy="2"} of zz_conflict.prom "should be a
/// Gauge".
const NODE_EXPORTER_BAD: &str = r#"# HELP backup_ok Whether the last backup worked
# TYPE backup_ok gauge
backup_ok 1
# HELP intmax_builder_container_running Whether the block builder container is running
# TYPE intmax_builder_container_running gauge
intmax_builder_container_running{node="pi-01"} 1
# HELP node_textfile_mtime_seconds Unixtime mtime of textfiles successfully read.
# TYPE node_textfile_mtime_seconds gauge
node_textfile_mtime_seconds{file="{dir}/good.prom"} 1.795315549e+09
node_textfile_mtime_seconds{file="{dir}/zz_conflict.prom"} 1.795315549e+09
# HELP node_textfile_scrape_error 1 if there was an error opening or reading a file, 0 otherwise
# TYPE node_textfile_scrape_error gauge
node_textfile_scrape_error 1
# HELP zz_still_served Families of this file that do not conflict are kept
# TYPE zz_still_served gauge
zz_still_served 1
"#;

#[test]
fn good_fixture_matches_node_exporter() {
    let dir = fixture_path("textfile");
    let (ours, logged) = collect_dir(&fixture_dir("textfile"));
    assert_eq!(logged, Vec::<String>::new());
    assert_eq!(
        normalize(&ours),
        normalize(&NODE_EXPORTER_GOOD.replace("{dir}", &dir)),
        "ours:\n{ours}"
    );
}

#[test]
fn bad_fixture_matches_node_exporter_and_names_files_and_lines() {
    let dir = fixture_path("textfile-bad");
    let (ours, logged) = collect_dir(&fixture_dir("textfile-bad"));
    assert_eq!(
        normalize(&ours),
        normalize(&NODE_EXPORTER_BAD.replace("{dir}", &dir)),
        "ours:\n{ours}"
    );
    assert_eq!(
        logged,
        [
            format!(
                "cannot parse {dir}/malformed.prom line 4: unexpected end of label value \"pi-02\""
            ),
            format!("cannot parse {dir}/no_newline.prom line 2: unexpected end of input stream"),
            format!(
                "cannot parse {dir}/timestamps.prom line 4: contains unsupported client-side timestamps, skipping entire file"
            ),
            format!(
                "{dir}/zz_conflict.prom: family backup_ok dropped: its type counter differs from gauge in {dir}/good.prom"
            ),
        ]
    );
}

#[test]
fn serves_the_wiki_cron_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("intmax_builder.prom"),
        concat!(
            "# HELP intmax_builder_container_running Whether the block builder container is running\n",
            "# TYPE intmax_builder_container_running gauge\n",
            "intmax_builder_container_running{node=\"pi-01\"} 1\n",
            "intmax_builder_last_scrape_timestamp{node=\"pi-01\"} 1732240000\n",
        ),
    )
    .expect("write");
    let (text, logged) = collect_dir(tmp.path());
    assert!(logged.is_empty(), "{logged:?}");
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    assert!(text.contains(
        "# HELP intmax_builder_container_running Whether the block builder container is running\n# TYPE intmax_builder_container_running gauge\nintmax_builder_container_running{node=\"pi-01\"} 1\n"
    ));
    assert!(text.contains(&format!(
        "# HELP intmax_builder_last_scrape_timestamp Metric read from {dir}/intmax_builder.prom\n# TYPE intmax_builder_last_scrape_timestamp untyped\n"
    )));
    assert_eq!(
        value_of(
            &text,
            "intmax_builder_last_scrape_timestamp{node=\"pi-01\"}"
        ),
        1732240000.0
    );
    let mtime = value_of(
        &text,
        &format!("node_textfile_mtime_seconds{{file=\"{dir}/intmax_builder.prom\"}}"),
    );
    assert!(mtime > 1.6e9 && mtime.fract() == 0.0, "{mtime}");
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 0.0);
}

/// Runs the collector on a thread, failing instead of hanging if it blocks.
fn collect_within(directory: &Path, limit: Duration) -> (String, Vec<String>) {
    let directory = directory.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(collect_dir(&directory));
    });
    rx.recv_timeout(limit)
        .expect("the collector blocked (did it open the FIFO?)")
}

#[test]
fn never_opens_a_fifo_or_other_special_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    nix::unistd::mkfifo(
        &tmp.path().join("pipe.prom"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    std::fs::create_dir(tmp.path().join("subdir.prom")).expect("mkdir");
    let socket = std::os::unix::net::UnixListener::bind(tmp.path().join("socket.prom"))
        .expect("bind socket");
    std::fs::write(tmp.path().join("good.prom"), "good 1\n").expect("write");

    let started = std::time::Instant::now();
    let (text, logged) = collect_within(tmp.path(), Duration::from_secs(10));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(socket);

    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    assert_eq!(
        logged,
        [
            format!("{dir}/pipe.prom is a FIFO, not a regular file: skipped without reading it"),
            format!(
                "{dir}/socket.prom is a socket, not a regular file: skipped without reading it"
            ),
            format!(
                "{dir}/subdir.prom is a directory, not a regular file: skipped without reading it"
            ),
        ]
    );
    assert_eq!(value_of(&text, "good"), 1.0);
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
    assert!(
        !text.contains("pipe.prom"),
        "no mtime for a skipped file:\n{text}"
    );
}

#[test]
fn a_symlink_to_a_fifo_is_not_opened_either() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fifo = tmp.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    std::os::unix::fs::symlink(&fifo, tmp.path().join("link.prom")).expect("symlink");
    let (text, logged) = collect_within(tmp.path(), Duration::from_secs(10));
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("link.prom is a FIFO"), "{logged:?}");
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
}

#[test]
fn skips_files_over_the_size_cap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Sparse: takes no disk space, and is never read.
    let big = std::fs::File::create(tmp.path().join("runaway.prom")).expect("create");
    big.set_len(MAX_FILE_BYTES + 1).expect("set_len");
    std::fs::write(tmp.path().join("ok.prom"), "ok 1\n").expect("write");
    let (text, logged) = collect_dir(tmp.path());
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    assert_eq!(
        logged,
        [format!(
            "{dir}/runaway.prom is larger than the 16 MiB limit for a textfile: skipped"
        )]
    );
    assert_eq!(value_of(&text, "ok"), 1.0);
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);

    // A file right at the cap is read.
    let mut content = "at_cap 1\n".to_string();
    content.push_str(&"#".repeat(MAX_FILE_BYTES as usize - content.len() - 1));
    content.push('\n');
    std::fs::write(tmp.path().join("runaway.prom"), &content).expect("write");
    let (text, logged) = collect_dir(tmp.path());
    assert!(logged.is_empty(), "{logged:?}");
    assert_eq!(value_of(&text, "at_cap"), 1.0);
}

#[test]
fn rejects_non_utf8_naming_the_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("latin1.prom"), b"ok 1\n# caf\xe9\nx 2\n").expect("write");
    let (text, logged) = collect_dir(tmp.path());
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    assert_eq!(
        logged,
        [format!(
            "cannot parse {dir}/latin1.prom line 2: not UTF-8 text"
        )]
    );
    assert!(!text.contains("ok 1"), "the whole file is skipped:\n{text}");
}

#[test]
fn missing_default_directory_is_no_files_but_missing_explicit_one_is_an_error() {
    let missing = Path::new("/nonexistent-nodewatch-textfile-dir");
    let (text, logged) = run_text(&collector(missing, false));
    assert!(logged.is_empty(), "{logged:?}");
    assert_eq!(
        text,
        "# HELP node_textfile_scrape_error 1 if there was an error opening or reading a file, 0 otherwise\n# TYPE node_textfile_scrape_error gauge\nnode_textfile_scrape_error 0\n"
    );

    let configured = collector(missing, true);
    let (text, logged) = run_text(&configured);
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].starts_with(
            "cannot read textfile directory /nonexistent-nodewatch-textfile-dir: No such file"
        ),
        "{logged:?}"
    );
    // Logged once, not on every run.
    let (_, logged) = run_text(&configured);
    assert!(logged.is_empty(), "{logged:?}");

    // A default directory that exists but is a file is still an error.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let (text, _) = run_text(&collector(&file, false));
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
}

#[test]
fn the_collector_itself_never_fails() {
    let missing = collector(Path::new("/nonexistent-nodewatch"), true);
    let mut sink = MetricSink::new();
    assert!(missing.collect(&mut sink).is_ok());
    assert!(sink.has_family(ERROR_NAME));
}

#[test]
fn logs_a_file_error_once_then_its_change_then_its_recovery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("job.prom");
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    let collector = self::collector(tmp.path(), true);

    std::fs::write(&path, "job_ok{a=\"1\" 1\n").expect("write");
    let (text, logged) = run_text(&collector);
    assert_eq!(
        logged,
        [format!(
            "cannot parse {dir}/job.prom line 1: unexpected end of label value \"1\""
        )]
    );
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
    assert!(!text.contains("node_textfile_mtime_seconds"), "{text}");

    let (text, logged) = run_text(&collector);
    assert!(logged.is_empty(), "logged again: {logged:?}");
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);

    std::fs::write(&path, "job_ok 1 1732240000000\n").expect("write");
    let (_, logged) = run_text(&collector);
    assert_eq!(
        logged,
        [format!(
            "cannot parse {dir}/job.prom line 1: contains unsupported client-side timestamps, skipping entire file"
        )]
    );

    std::fs::write(&path, "job_ok 1\n").expect("write");
    let (text, logged) = run_text(&collector);
    assert_eq!(logged, [format!("resolved: {dir}/job.prom")]);
    assert_eq!(value_of(&text, "job_ok"), 1.0);
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 0.0);
    value_of(
        &text,
        &format!("node_textfile_mtime_seconds{{file=\"{dir}/job.prom\"}}"),
    );

    let (_, logged) = run_text(&collector);
    assert!(logged.is_empty(), "{logged:?}");

    std::fs::write(&path, "job_ok{a=\"1\" 1\n").expect("write");
    let (_, logged) = run_text(&collector);
    assert_eq!(logged.len(), 1, "a new failure is logged again: {logged:?}");
}

#[test]
fn reads_only_prom_files_dotfiles_included_and_follows_symlinks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join(".hidden.prom"), "hidden 1\n").expect("write");
    std::fs::write(tmp.path().join("notes.txt"), "garbage {\n").expect("write");
    std::fs::write(tmp.path().join("job.prom.tmp"), "garbage {\n").expect("write");
    std::fs::create_dir(tmp.path().join("sub")).expect("mkdir");
    std::fs::write(tmp.path().join("sub/nested.prom"), "nested 1\n").expect("write");
    std::fs::write(other.path().join("target.prom"), "linked 1\n").expect("write");
    std::os::unix::fs::symlink(
        other.path().join("target.prom"),
        tmp.path().join("link.prom"),
    )
    .expect("symlink");
    let (text, logged) = collect_dir(tmp.path());
    assert!(logged.is_empty(), "{logged:?}");
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    assert_eq!(value_of(&text, "hidden"), 1.0);
    assert_eq!(value_of(&text, "linked"), 1.0);
    assert!(text.contains(&format!("# HELP linked Metric read from {dir}/link.prom\n")));
    assert!(!text.contains("nested"), "{text}");
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 0.0);
}

#[test]
fn merges_like_node_exporter_and_reports_what_it_drops() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = glob::clean(tmp.path().to_str().expect("utf8"));
    let files = [
        (
            "a.prom",
            "# HELP m multi\n# TYPE m counter\nm{a=\"1\"} 1\nshared{f=\"a\"} 1\ndup{x=\"1\"} 1\n",
        ),
        // No HELP: its default HELP differs from a.prom's, so 1.5 drops it.
        (
            "b.prom",
            "# TYPE m counter\nm{a=\"2\"} 2\nshared{f=\"b\"} 2\ndup{x=\"1\"} 9\ndup{x=\"2\"} 2\n",
        ),
        (
            "c.prom",
            "# HELP m multi\n# TYPE m counter\nm{a=\"3\"} 3\npad{a=\"1\"} 1\npad{b=\"2\"} 2\npad 3\n",
        ),
        (
            "d.prom",
            "# TYPE s summary\ns_sum 1\ns_count 2\nnode_textfile_scrape_error 5\n",
        ),
        ("e.prom", "s_count 7\n"),
    ];
    for (name, content) in files {
        std::fs::write(tmp.path().join(name), content).expect("write");
    }
    let (text, logged) = collect_dir(tmp.path());
    assert_eq!(
        logged,
        [
            format!(
                "{dir}/b.prom: family m dropped: its HELP \"Metric read from {dir}/a.prom, {dir}/b.prom, {dir}/c.prom\" differs from \"multi\" in {dir}/a.prom"
            ),
            format!(
                "{dir}/b.prom: 1 series of dup dropped (first on line 4): the same series came before"
            ),
            format!(
                "{dir}/d.prom: family node_textfile_scrape_error dropped: the textfile collector exports that name itself"
            ),
            format!("{dir}/e.prom: family s_count dropped: its series would collide with family s"),
        ]
    );
    let samples = parse_samples(&text);
    let m: Vec<_> = samples.keys().filter(|k| k.starts_with("m{")).collect();
    assert_eq!(m, ["m{a=\"1\"}", "m{a=\"3\"}"]);
    assert!(text.contains(&format!(
        "# HELP shared Metric read from {dir}/a.prom, {dir}/b.prom\n"
    )));
    assert_eq!(value_of(&text, "shared{f=\"b\"}"), 2.0);
    assert_eq!(value_of(&text, "dup{x=\"1\"}"), 1.0, "the first one wins");
    assert_eq!(value_of(&text, "dup{x=\"2\"}"), 2.0);
    // Labels padded with empty values within a file, as node_exporter does; `pad 3`
    // becomes pad{a="",b=""}, and `pad{b="2"}` pad{a="",b="2"}.
    assert_eq!(value_of(&text, "pad{a=\"\",b=\"\"}"), 3.0);
    assert_eq!(value_of(&text, "pad{a=\"\",b=\"2\"}"), 2.0);
    assert_eq!(value_of(&text, "pad{a=\"1\",b=\"\"}"), 1.0);
    assert_eq!(value_of(&text, "s_count"), 2.0);
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
    for file in ["a", "b", "c", "d", "e"] {
        value_of(
            &text,
            &format!("node_textfile_mtime_seconds{{file=\"{dir}/{file}.prom\"}}"),
        );
    }
}

#[test]
fn keeps_the_last_of_repeated_quantiles_and_buckets_sorted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("h.prom"),
        concat!(
            "# TYPE h histogram\n",
            "h_bucket{le=\"5\"} 4\n",
            "h_bucket{le=\"1\"} 1\n",
            "h_bucket{le=\"1\"} 2\n",
            "h_count 4.9\n",
            "# TYPE s summary\n",
            "s{quantile=\"0.9\"} 9\n",
            "s{quantile=\"0.5\"} 5\n",
            "s{quantile=\"0.9\"} 8\n",
        ),
    )
    .expect("write");
    let (text, logged) = collect_dir(tmp.path());
    assert!(logged.is_empty(), "{logged:?}");
    let expected_h =
        "h_bucket{le=\"1\"} 2\nh_bucket{le=\"5\"} 4\nh_bucket{le=\"+Inf\"} 4\nh_sum 0\nh_count 4\n";
    assert!(text.contains(expected_h), "{text}");
    let expected_s = "s{quantile=\"0.5\"} 5\ns{quantile=\"0.9\"} 8\ns_sum 0\ns_count 0\n";
    assert!(text.contains(expected_s), "{text}");
}

#[test]
fn expands_a_glob_directory_like_node_exporter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (dir, value) in [("d3", 3), ("d4", 4), ("e5", 5)] {
        std::fs::create_dir(tmp.path().join(dir)).expect("mkdir");
        std::fs::write(
            tmp.path().join(dir).join("g.prom"),
            format!("g{{d=\"{dir}\"}} {value}\n"),
        )
        .expect("write");
    }
    let base = glob::clean(tmp.path().to_str().expect("utf8"));
    let (text, logged) = collect_dir(Path::new(&format!("{base}/d[0-9]")));
    assert!(logged.is_empty(), "{logged:?}");
    assert_eq!(value_of(&text, "g{d=\"d3\"}"), 3.0);
    assert_eq!(value_of(&text, "g{d=\"d4\"}"), 4.0);
    assert!(!text.contains("e5"), "{text}");
    assert!(text.contains(&format!(
        "# HELP g Metric read from {base}/d3/g.prom, {base}/d4/g.prom\n"
    )));
    // A pattern matching nothing is read as a directory, which is missing.
    let (text, logged) = collect_dir(Path::new(&format!("{base}/x*")));
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 1.0);
}

#[test]
fn labels_paths_as_go_joins_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("x.prom"), "x 1\n").expect("write");
    let base = glob::clean(tmp.path().to_str().expect("utf8"));
    let (text, _) = collect_dir(Path::new(&format!("{base}//./")));
    value_of(
        &text,
        &format!("node_textfile_mtime_seconds{{file=\"{base}/x.prom\"}}"),
    );
}

#[test]
fn empty_directory_setting_reads_nothing() {
    let (text, logged) = run_text(&collector(Path::new(""), true));
    assert!(logged.is_empty());
    assert_eq!(value_of(&text, "node_textfile_scrape_error"), 0.0);
}
