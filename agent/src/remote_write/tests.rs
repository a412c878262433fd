//! The buffer (cap, replay after a restart, damaged tails) and the configuration.

use std::path::Path;

use bytes::Bytes;

use super::wal::{RECORD_HEADER, Wal};
use super::*;

fn payload(i: u32, len: usize) -> Bytes {
    let mut bytes = vec![(i % 251) as u8; len];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    bytes.into()
}

fn sent_ids(wal: &mut Wal) -> Vec<u32> {
    wal.peek(u64::MAX)
        .iter()
        .map(|r| u32::from_le_bytes([r.payload[0], r.payload[1], r.payload[2], r.payload[3]]))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

fn bytes_on_disk(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).expect("meta").len())
        .sum()
}

#[test]
fn records_survive_a_restart_and_acked_ones_are_not_sent_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::open(dir.path(), 1 << 20);
    for i in 0..10 {
        wal.append(payload(i, 100), 7).expect("append");
    }
    assert_eq!(wal.pending_samples(), 70);
    let batch = wal.peek(21);
    assert_eq!(batch.len(), 3);
    assert_eq!(wal.ack(batch[2].id), 21);
    drop(wal);
    // As after a SIGKILL: nothing but the files.
    let mut wal = Wal::open(dir.path(), 1 << 20);
    assert_eq!(sent_ids(&mut wal), (3..10).collect::<Vec<_>>());
    assert_eq!(wal.stats().corrupt_truncations, 0);
    // New records continue after the old ones.
    wal.append(payload(10, 100), 7).expect("append");
    let all = wal.peek(u64::MAX);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(sent_ids(&mut wal).last(), Some(&10));
    let last = all.last().expect("records").id;
    assert_eq!(wal.ack(last), 56);
    assert_eq!(wal.pending_records(), 0);
    drop(wal);
    let mut wal = Wal::open(dir.path(), 1 << 20);
    assert!(sent_ids(&mut wal).is_empty());
    // Everything was accepted: no segment is left behind.
    assert_eq!(bytes_on_disk(dir.path()), 0);
}

#[test]
fn the_cap_drops_the_oldest_and_is_never_passed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cap = 64 * 1024;
    let mut wal = Wal::open(dir.path(), cap);
    let record = 1000u64;
    for i in 0..500 {
        wal.append(payload(i, record as usize), 10).expect("append");
        assert!(wal.disk_bytes() <= cap, "{} > {cap}", wal.disk_bytes());
        assert!(bytes_on_disk(dir.path()) <= cap);
        assert_eq!(wal.disk_bytes(), bytes_on_disk(dir.path()));
    }
    let kept = sent_ids(&mut wal);
    // The newest are kept, contiguous up to the last; the oldest went.
    assert_eq!(kept.last(), Some(&499));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
    let first_kept = u64::from(kept[0]);
    assert!(first_kept > 0);
    assert_eq!(wal.stats().dropped_buffer_full, first_kept * 10);
    // At least seven eighths of the cap stay in use.
    assert!(kept.len() as u64 * (record + RECORD_HEADER) >= cap * 7 / 8 - record);
    // A record larger than the cap is dropped at once, counted.
    wal.append(payload(999, cap as usize), 3).expect("append");
    assert_eq!(wal.stats().dropped_buffer_full, first_kept * 10 + 3);
    drop(wal);
    // A smaller cap after a restart applies at once.
    let wal = Wal::open(dir.path(), 16 * 1024);
    assert!(wal.disk_bytes() <= 16 * 1024 && bytes_on_disk(dir.path()) <= 16 * 1024);
}

#[test]
fn a_torn_or_corrupt_tail_is_truncated_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut wal = Wal::open(dir.path(), 1 << 20);
    for i in 0..5 {
        wal.append(payload(i, 200), 1).expect("append");
    }
    drop(wal);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let segment = &files[0];
    let full = std::fs::metadata(segment).expect("meta").len();
    // A crash in the middle of the last record's write.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .expect("open");
    file.set_len(full - 50).expect("truncate");
    drop(file);
    let mut wal = Wal::open(dir.path(), 1 << 20);
    assert_eq!(sent_ids(&mut wal), [0, 1, 2, 3]);
    assert_eq!(wal.stats().corrupt_truncations, 1);
    assert_eq!(wal.stats().truncated_bytes, 200 + RECORD_HEADER - 50);
    drop(wal);
    assert_eq!(
        std::fs::metadata(segment).expect("meta").len(),
        4 * (200 + RECORD_HEADER)
    );
    // A flipped byte in the second record's payload: the segment ends before it.
    let mut bytes = std::fs::read(segment).expect("read");
    let second = (200 + RECORD_HEADER) as usize;
    bytes[second + RECORD_HEADER as usize + 10] ^= 0xff;
    std::fs::write(segment, &bytes).expect("write");
    let mut wal = Wal::open(dir.path(), 1 << 20);
    assert_eq!(sent_ids(&mut wal), [0]);
    assert_eq!(wal.stats().corrupt_truncations, 1);
    // Garbage headers (a huge length, random bytes) are truncated too.
    drop(wal);
    let mut bytes = std::fs::read(segment).expect("read");
    bytes.extend_from_slice(&[0xff; 7]);
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    std::fs::write(segment, &bytes).expect("write");
    let mut wal = Wal::open(dir.path(), 1 << 20);
    assert_eq!(sent_ids(&mut wal), [0]);
    assert_eq!(wal.stats().truncated_bytes, 15);
    // The buffer goes on working.
    wal.append(payload(7, 10), 1).expect("append");
    assert_eq!(sent_ids(&mut wal), [0, 7]);
}

#[test]
fn garbage_files_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("00000000000000000001.seg"), b"").expect("write");
    std::fs::write(dir.path().join("00000000000000000002.seg"), [0u8; 19]).expect("write");
    std::fs::write(dir.path().join("00000000000000000003.seg"), [0u8; 100]).expect("write");
    std::fs::write(dir.path().join("acked"), b"not a number").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
    let mut wal = Wal::open(dir.path(), 1 << 20);
    // An all-zero header with an empty payload fails its checksum.
    assert!(sent_ids(&mut wal).is_empty());
    assert_eq!(wal.stats().corrupt_truncations, 2);
    wal.append(payload(1, 10), 1).expect("append");
    assert_eq!(sent_ids(&mut wal), [1]);
}

#[test]
fn a_refusing_disk_keeps_records_in_memory_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The buffer's directory is a file: nothing can be created in it.
    let blocked = dir.path().join("remote_write");
    std::fs::write(&blocked, b"").expect("write");
    let mut wal = Wal::open(&blocked, 64 << 20);
    assert!(wal.append(payload(1, 100), 5).is_err());
    assert!(wal.append(payload(2, 100), 5).is_err());
    assert_eq!(wal.stats().write_errors, 2);
    assert_eq!(wal.memory_bytes(), 200);
    assert_eq!(sent_ids(&mut wal), [1, 2]);
    let last = wal.peek(u64::MAX).last().expect("record").id;
    assert_eq!(wal.ack(last), 10);
    assert_eq!(wal.memory_bytes(), 0);
    // The memory overflow is bounded too.
    let big = (wal::MAX_MEMORY_BYTES / 4 + 1) as usize;
    for i in 0..5 {
        let _ = wal.append(payload(10 + i, big), 2);
    }
    assert!(wal.memory_bytes() <= wal::MAX_MEMORY_BYTES);
    assert_eq!(wal.stats().dropped_disk_error, 4);
    assert_eq!(sent_ids(&mut wal), [12, 13, 14]);
}

fn parse(text: &str) -> Result<crate::config::Config, String> {
    let path = Path::new("agent.toml");
    let config = crate::config::Config::parse(text, path).map_err(|e| e.to_string())?;
    config.validate(path).map_err(|e| e.to_string())?;
    Ok(config)
}

#[test]
fn config_defaults_and_errors_name_the_key() {
    let config =
        parse("[remote_write]\nurl = \"http://127.0.0.1:9090/api/v1/write\"\n").expect("ok");
    let rw = config.remote_write.expect("section");
    assert_eq!(rw.interval_secs, 15.0);
    assert_eq!(rw.send_interval_secs, 5.0);
    assert_eq!(
        rw.external_labels("pi-1"),
        [
            ("instance".to_string(), "pi-1".to_string()),
            ("job".into(), "node".into()),
            ("node".into(), "pi-1".into())
        ]
    );
    let config = parse(
        "[remote_write]\nurl = \"http://127.0.0.1/\"\nlabels = { instance = \"\", site = \"home\", job = \"pis\" }\n",
    )
    .expect("ok");
    assert_eq!(
        config
            .remote_write
            .expect("section")
            .external_labels("pi-1"),
        [
            ("job".to_string(), "pis".to_string()),
            ("node".into(), "pi-1".into()),
            ("site".into(), "home".into())
        ]
    );
    let err = parse("[remote_write]\ninterval_secs = 5\n").expect_err("no url");
    assert!(
        err.contains("missing field `url`") && err.starts_with("agent.toml:1:"),
        "{err}"
    );
    for (text, key) in [
        ("url = \"ftp://x/\"", "remote_write.url"),
        (
            "url = \"http://x/\"\ninterval_secs = 0",
            "remote_write.interval_secs",
        ),
        (
            "url = \"http://x/\"\nsend_interval_secs = -1",
            "remote_write.send_interval_secs",
        ),
        (
            "url = \"http://x/\"\ntimeout_secs = 1e9",
            "remote_write.timeout_secs",
        ),
        (
            "url = \"http://x/\"\nmax_buffer_bytes = 1000",
            "remote_write.max_buffer_bytes",
        ),
        (
            "url = \"http://x/\"\nmax_samples_per_send = 0",
            "remote_write.max_samples_per_send",
        ),
        (
            "url = \"http://x/\"\nlabels = { \"a-b\" = \"1\" }",
            "remote_write.labels",
        ),
        (
            "url = \"http://x/\"\nlabels = { __name__ = \"1\" }",
            "remote_write.labels",
        ),
        (
            "url = \"https://x/\"\nca_file = \"/nonexistent/ca.pem\"",
            "remote_write.ca_file",
        ),
        (
            "url = \"http://x/\"\nca_file = \"/nonexistent/ca.pem\"",
            "remote_write.ca_file",
        ),
        (
            "url = \"https://x/\"\nbearer_token_file = \"/nonexistent\"",
            "remote_write.bearer_token_file",
        ),
        (
            "url = \"https://x/\"\nbasic_auth = { username = \"u\", password_file = \"/nonexistent\" }",
            "remote_write.basic_auth.password_file",
        ),
        (
            "url = \"https://x/\"\nbearer_token_file = \"/t\"\nbasic_auth = { username = \"u\", password_file = \"/p\" }",
            "basic_auth and bearer_token_file",
        ),
    ] {
        let err = parse(&format!("[remote_write]\n{text}\n")).expect_err(text);
        assert!(err.contains(key), "{text}: {err}");
    }
    let err = parse("[remote_write]\nurl = \"http://x/\"\nurll = 1\n").expect_err("unknown");
    assert!(err.contains("unknown field `urll`"), "{err}");
}

#[test]
fn credentials_never_go_in_clear_text_to_another_host() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let section = |url: &str| {
        format!(
            "[remote_write]\nurl = \"{url}\"\nbearer_token_file = \"{}\"\n",
            token.display()
        )
    };
    let err = parse(&section("http://192.0.2.1/api/v1/write")).expect_err("clear text");
    assert!(err.contains("https://"), "{err}");
    parse(&section("http://127.0.0.1:9090/api/v1/write")).expect("loopback");
    parse(&section("https://192.0.2.1/api/v1/write")).expect("https");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let err = parse(&section("https://192.0.2.1/api/v1/write")).expect_err("mode");
    assert!(
        err.contains("remote_write.bearer_token_file") && err.contains("0640"),
        "{err}"
    );
}
