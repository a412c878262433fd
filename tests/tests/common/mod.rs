// Shared helpers of the end-to-end tests (included with `mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Agent arguments that read everything from the fixture tree at `root`.
pub fn fixture_args(root: &Path, textfile_dir: &Path) -> Vec<String> {
    vec![
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.sysfs={}", root.join("sys").display()),
        format!("--path.rootfs={}", root.display()),
        format!("--collector.textfile.directory={}", textfile_dir.display()),
    ]
}

/// [`fixture_args`] for the agent: also turns off the collectors that read live
/// services (the Docker engine, the builder; tested in builder.rs), so the fixture
/// textfile's `intmax_builder_*` families are served.
pub fn agent_fixture_args(root: &Path, textfile_dir: &Path) -> Vec<String> {
    let mut args = fixture_args(root, textfile_dir);
    args.extend([
        "--no-collector.docker".to_string(),
        "--no-collector.intmax_builder".to_string(),
    ]);
    args
}

/// Copies a fixture tree (symlinks kept) to a temp dir the test may break.
pub fn copy_tree(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dst = dir.path().join("root");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(&dst)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -a {}", src.display());
    (dir, dst)
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
