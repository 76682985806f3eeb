//! The crate's error type.

use std::io;
use std::path::PathBuf;

use crate::format::Lsn;

/// An error from the write-ahead log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed: what was being done, on which file or directory, and why.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// Damage before the tail of the log: a record or header that does not verify where a valid
    /// one must be. Recovery never skips over it and never returns its bytes.
    #[error("corruption in {} at offset {offset}: {reason}", segment.display())]
    Corruption {
        /// The segment file.
        segment: PathBuf,
        /// The byte offset of the damaged header or record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A record is larger than [`WalOptions::record_bytes_max`](crate::WalOptions).
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The record's length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// An earlier write or `fsync` failed. Its data may be lost and a retried `fsync` could
    /// report success for it, so the log accepts nothing more; reopen it to recover.
    #[error("the log is poisoned by an earlier failure: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// Another `Wal` (in this process or another) has the log open.
    #[error("the log in {} is already open", dir.display())]
    Locked {
        /// The log's directory.
        dir: PathBuf,
    },
    /// The LSN is outside the range the log holds.
    #[error("LSN {lsn} is outside the log ({first_lsn}..{next_lsn})")]
    LsnOutOfRange {
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN still in the log.
        first_lsn: Lsn,
        /// The LSN the next record will get.
        next_lsn: Lsn,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io(strata_fs::IoError::new(op, path, source))
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
