//! backup.sh end to end: a site Prometheus (admin API on) scrapes a real agent; the
//! shipped backup.sh takes a TSDB snapshot plus Grafana's database and the
//! configuration into one dated archive; the archive's Prometheus part, restored into a
//! fresh Prometheus, answers with the same series.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{agent_fixture_args, strs};
use nodewatch_tests::server::{run, server_dir, site_scraping};
use nodewatch_tests::{Agent, Prometheus, fixture};

/// An empty SQLite database (one 4096-byte page: the header and an empty schema table),
/// standing in for Grafana's.
fn empty_sqlite_database() -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    page[..16].copy_from_slice(b"SQLite format 3\0");
    page[16..18].copy_from_slice(&4096u16.to_be_bytes()); // page size
    page[18] = 1; // legacy write format
    page[19] = 1; // legacy read format
    page[21] = 64; // max embedded payload fraction
    page[22] = 32; // min embedded payload fraction
    page[23] = 32; // leaf payload fraction
    page[24..28].copy_from_slice(&1u32.to_be_bytes()); // change counter
    page[28..32].copy_from_slice(&1u32.to_be_bytes()); // pages
    page[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
    page[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
    page[92..96].copy_from_slice(&1u32.to_be_bytes()); // version-valid-for
    page[96..100].copy_from_slice(&3_040_001u32.to_be_bytes());
    page[100] = 0x0d; // a leaf table b-tree page, no cells
    page[105..107].copy_from_slice(&4096u16.to_be_bytes()); // cell content start
    page
}

#[test]
fn backup_restores_into_a_fresh_prometheus() {
    let work = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(&strs(&agent_fixture_args(
        &fixture("pi"),
        &fixture("textfile"),
    )))
    .expect("agent");
    let tsdb = work.path().join("tsdb");
    let (_site, prometheus) = site_scraping(&agent.address, "pi-01", &tsdb).expect("site");
    let known = r#"node_filesystem_size_bytes{node="pi-01",mountpoint="/"}"#;
    let before = prometheus
        .wait_for(known, Duration::from_secs(40))
        .expect("scraped");

    let grafana = work.path().join("grafana");
    std::fs::create_dir(&grafana).expect("mkdir");
    std::fs::write(grafana.join("grafana.db"), empty_sqlite_database()).expect("write");
    let out = work.path().join("backups");
    let (ok, log) = run(
        Path::new("bash"),
        &[
            &server_dir().join("backup.sh").display().to_string(),
            "--prometheus-url",
            &prometheus.url(),
            "--prometheus-data",
            &tsdb.display().to_string(),
            "--grafana-data",
            &grafana.display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
        work.path(),
    )
    .expect("backup.sh");
    assert!(ok, "backup.sh:\n{log}");
    let archive = Path::new(log.trim());
    let name = archive.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(
        name.starts_with("nodewatch-backup-20") && name.ends_with("Z.tar.gz"),
        "dated archive: {name}"
    );
    // The snapshot is not left behind in Prometheus' data directory.
    let snapshots = std::fs::read_dir(tsdb.join("snapshots"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(snapshots, 0, "snapshot left in the TSDB directory");
    drop(prometheus);

    let restored = work.path().join("restored");
    std::fs::create_dir(&restored).expect("mkdir");
    let (ok, log) = run(
        Path::new("tar"),
        &[
            "-xzf",
            &archive.display().to_string(),
            "-C",
            &restored.display().to_string(),
        ],
        work.path(),
    )
    .expect("tar");
    assert!(ok, "{log}");
    // Copied, or backed up by sqlite3 where it is installed: a database either way.
    let db = std::fs::read(restored.join("grafana/grafana.db")).expect("grafana.db");
    assert!(db.starts_with(b"SQLite format 3\0") && db.len() >= 4096);
    assert!(restored.join("config/prometheus/prometheus.yml").is_file());
    assert!(
        restored
            .join("config/alertmanager/alertmanager.yml")
            .is_file()
    );

    // A fresh Prometheus on the restored TSDB, scraping nothing.
    let empty = work.path().join("empty.yml");
    std::fs::write(&empty, "global: { scrape_interval: 1s }\n").expect("write");
    let fresh = Prometheus::start_site(&empty, &restored.join("prometheus/snapshot"), &[])
        .expect("fresh prometheus");
    let after = fresh
        .wait_for(
            &format!("last_over_time({known}[1h])"),
            Duration::from_secs(20),
        )
        .expect("the known series after restore");
    assert_eq!(after[0].1, before[0].1, "same value after restore");
}
