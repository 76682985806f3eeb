//! The crate's error type.

use std::path::PathBuf;

/// An error from the Raft log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying write-ahead log failed (a failed fsync poisons it: reopen).
    #[error(transparent)]
    Wal(#[from] strata_wal::Error),
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// An I/O operation failed: what was being done, on which file or directory, and why.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
    /// Stored state that does not decode or does not make sense.
    #[error("corrupt {} at {lsn}: {reason}", path.display())]
    Corruption {
        /// The log directory.
        path: PathBuf,
        /// The record's LSN (for the entry log, the entry's index).
        lsn: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Entries to append that are not consecutive, start past the end of the log (a gap), or
    /// go back in term.
    #[error("bad append: {reason}")]
    BadAppend {
        /// What is wrong.
        reason: &'static str,
    },
    /// The entries asked for were compacted away (they are in a snapshot).
    #[error("index {index} is compacted (the log starts at {first_index})")]
    Compacted {
        /// The index asked for.
        index: u64,
        /// The first index still in the log.
        first_index: u64,
    },
    /// The entries asked for are past the end of the log.
    #[error("index {index} is past the end of the log ({last_index})")]
    Unavailable {
        /// The index asked for.
        index: u64,
        /// The last index in the log.
        last_index: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
