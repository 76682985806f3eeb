//! The crate's error type.

use std::path::PathBuf;

/// Errors of the transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// A chunk for a snapshot this receiver is not receiving (call [`Receiver::begin`]).
    ///
    /// [`Receiver::begin`]: crate::Receiver::begin
    #[error("chunk of snapshot {got}, receiving {expected:?}")]
    UnknownSnapshot {
        /// The chunk's snapshot.
        got: u64,
        /// The one being received, if any.
        expected: Option<u64>,
    },
    /// Metadata or a chunk that does not make sense (a file name with a separator, a chunk
    /// past a file's end).
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// Stored state that does not decode.
    #[error("corrupt {}: {reason}", path.display())]
    Corruption {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
