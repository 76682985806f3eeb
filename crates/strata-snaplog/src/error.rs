//! The crate's error type.

use std::io;
use std::path::Path;

/// An error from the snapshot log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the log failed: what was being done, on which file, and why. The
    /// path is empty when no file was involved or known: reading the reader handed to
    /// [`replay`](crate::replay), or the snapshotter's task failing.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
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
    /// An [`Error::Io`] for `op` on `path`; with `None`, on an empty path that
    /// [`with_path`](Self::with_path) fills in once the caller knows the file.
    pub(crate) fn io(op: &'static str, path: Option<&Path>, source: io::Error) -> Self {
        Error::Io(strata_fs::IoError::new(
            op,
            path.unwrap_or(Path::new("")),
            source,
        ))
    }

    /// Names `path` in an [`Error::Io`] that has no path yet; any other error is unchanged.
    pub(crate) fn with_path(self, path: &Path) -> Self {
        match self {
            Error::Io(mut e) if e.path.as_os_str().is_empty() => {
                e.path = path.to_path_buf();
                Error::Io(e)
            }
            other => other,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::Error;

    #[test]
    fn with_path_names_the_file_of_an_io_error_that_had_none() {
        let broken = || std::io::Error::other("broken");
        let unnamed = Error::io("replay", None, broken());
        assert_eq!(unnamed.to_string(), "replay ");
        let named = unnamed.with_path(Path::new("snap/log"));
        assert_eq!(named.to_string(), "replay snap/log");
        // A path already known is kept.
        let kept = Error::io("open", Some(Path::new("a")), broken()).with_path(Path::new("b"));
        assert!(matches!(kept, Error::Io(e) if e.path == Path::new("a")));
    }
}
