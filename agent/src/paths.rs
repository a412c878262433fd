//! One root for every path: `--path.procfs`, `--path.sysfs`, `--path.rootfs`.
//!
//! Every exported value is read through these roots, so the agent can run in a
//! container with the host's `/proc` mounted elsewhere, and tests run it on fixture
//! trees. Reading helpers return [`CollectError`]s that name the file.

use std::path::{Path, PathBuf};

use crate::collect_error::CollectError;

/// The configured roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// Mount point of procfs (default `/proc`).
    pub procfs: PathBuf,
    /// Mount point of sysfs (default `/sys`).
    pub sysfs: PathBuf,
    /// The root filesystem (default `/`).
    pub rootfs: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            procfs: "/proc".into(),
            sysfs: "/sys".into(),
            rootfs: "/".into(),
        }
    }
}

impl Roots {
    /// Roots of a fixture tree with `proc/` and `sys/` under `base`.
    pub fn under(base: impl AsRef<Path>) -> Self {
        let base = base.as_ref();
        Self {
            procfs: base.join("proc"),
            sysfs: base.join("sys"),
            rootfs: base.to_path_buf(),
        }
    }

    /// A path under procfs, `relative` without a leading slash.
    pub fn proc(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.procfs.join(relative)
    }

    /// A path under sysfs.
    pub fn sys(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.sysfs.join(relative)
    }

    /// A path of the host's filesystem (e.g. a mount point) under rootfs.
    pub fn root(&self, absolute: impl AsRef<Path>) -> PathBuf {
        let absolute = absolute.as_ref();
        self.rootfs
            .join(absolute.strip_prefix("/").unwrap_or(absolute))
    }
}

/// Reads a whole file; a missing file is [`CollectError::NoData`], other failures name
/// the file.
pub fn read_file(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::io(path, source))
}

/// Reads a file and trims surrounding whitespace (sysfs attributes end in a newline).
pub fn read_trimmed(path: &Path) -> Result<String, CollectError> {
    read_file(path).map(|s| s.trim().to_string())
}

/// Reads a sysfs attribute holding one unsigned integer.
pub fn read_u64(path: &Path) -> Result<u64, CollectError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| {
        CollectError::parse(
            path,
            None,
            format!("expected an unsigned integer, found {text:?}"),
        )
    })
}

/// Reads an optional attribute: `Ok(None)` when it does not exist or cannot be read
/// (sysfs attributes that a driver does not implement fail with EINVAL or EOPNOTSUPP).
pub fn read_optional(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Parses a number in a named field, naming the file and line when it is not one.
pub fn parse_f64(text: &str, path: &Path, line: usize) -> Result<f64, CollectError> {
    text.parse().map_err(|_| {
        CollectError::parse(
            path,
            Some(line),
            format!("expected a number, found {text:?}"),
        )
    })
}
