//! The crate's error type.

use std::io;
use std::path::{Path, PathBuf};

/// An error from the snapshot log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the log failed.
    #[error("{op} {}", path.as_deref().map(|p| p.display().to_string()).unwrap_or_default())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file, when known.
        path: Option<PathBuf>,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A durable file step (append, fsync, compaction swap) failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// A record cannot be written as one line that replays to itself, for example a member
    /// name containing a newline. Nothing was recorded.
    #[error("cannot record {record}: {reason}")]
    InvalidRecord {
        /// The record, debug-formatted.
        record: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The snapshotter's task has stopped (after shutdown, or because it panicked).
    #[error("the snapshotter has shut down")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: Option<&Path>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.map(Path::to_path_buf),
            source,
        }
    }

    pub(crate) fn with_path(self, path: &Path) -> Self {
        match self {
            Error::Io {
                op,
                path: None,
                source,
            } => Error::Io {
                op,
                path: Some(path.to_path_buf()),
                source,
            },
            other => other,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
