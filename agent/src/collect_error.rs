//! Why reading a source failed: the error of every collector, and of the
//! [`paths`](crate::paths) helpers they read through.

use std::path::{Path, PathBuf};

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The source does not exist on this machine (no PSI, no conntrack module, no
    /// hwmon). As in node_exporter, `success` is 0, but it is logged at debug level
    /// and does not make the agent's health degraded.
    #[error("no data: {0}")]
    NoData(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file did not have the expected shape.
    #[error("cannot parse {path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What was wrong.
        reason: String,
    },
    /// Anything else (a system call failed, ...).
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    /// An I/O error on `path`; ENOENT becomes [`CollectError::NoData`].
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            CollectError::NoData(format!("{} does not exist", path.display()))
        } else {
            CollectError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// A parse error in `path`, at `line` (1-based) when known.
    pub fn parse(path: &Path, line: Option<usize>, reason: impl Into<String>) -> Self {
        CollectError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }

    /// Whether this is "no data" rather than a failure.
    pub fn is_no_data(&self) -> bool {
        matches!(self, CollectError::NoData(_))
    }
}
