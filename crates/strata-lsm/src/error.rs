//! The crate's error type.

use std::path::PathBuf;

/// An error from the LSM store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation that is not a durable step failed (a read, a directory listing, a
    /// removal): what was being done, on which path, and why.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// The write-ahead log (or the manifest, which is one) failed.
    #[error(transparent)]
    Wal(#[from] strata_wal::Error),
    /// A table failed to open or read.
    #[error(transparent)]
    Table(#[from] strata_sstable::Error),
    /// A background flush failed (a failed `fsync` included): the store refuses writes until
    /// it is reopened, and keeps serving reads from what is durable.
    #[error("the store is read-only after a background failure: {cause}")]
    ReadOnly {
        /// The failure.
        cause: String,
    },
    /// The file system had no room (`ENOSPC`, or a disk quota) for a table a flush or
    /// compaction was writing, or too little for a compaction's inputs to be rewritten. The
    /// partial table was removed and nothing else changed: the memtable or the compaction's
    /// inputs are still there, the store stays writable, and the background thread tries
    /// again every [`NO_SPACE_RETRY`](crate::NO_SPACE_RETRY). Writes go on meanwhile until
    /// the memtables are full, then wait for space (RocksDB's behaviour with an
    /// `SstFileManager`), rather than the store turning read-only over a transient condition.
    #[error("no space left for {}: {cause}", path.display())]
    NoSpace {
        /// The table being written (or the store's directory, for a compaction held back).
        path: PathBuf,
        /// What the file system said, or how much room was missing.
        cause: String,
    },
    /// A write, flush, compaction, checkpoint, ingest or restore on a store opened with
    /// [`Db::open_read_only`](crate::Db::open_read_only).
    #[error("the store was opened read-only")]
    OpenedReadOnly,
    /// [`Db::open_read_only`](crate::Db::open_read_only), or [`Db::open`](crate::Db::open)
    /// without `Options::create_if_missing`, found no store: the directory is missing, or
    /// holds no `CURRENT` file. Nothing was created.
    #[error("no Strata store at {}: {reason}", path.display())]
    NoStore {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        reason: &'static str,
    },
    /// A key whose encoded form would exceed the table format's key limit (64 KiB, where a
    /// zero byte counts twice). Refused before anything is written.
    #[error("key of {len} bytes is too large")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
    },
    /// A batch larger than a quarter of a memtable. Refused before anything is written.
    #[error("write batch of about {bytes} bytes exceeds the limit of {max}")]
    BatchTooLarge {
        /// The batch's size in memory.
        bytes: usize,
        /// The limit (a quarter of `Options::memtable_bytes`).
        max: usize,
    },
    /// A level number past the last level.
    #[error("level {level} does not exist (levels are 0 to {last})")]
    NoSuchLevel {
        /// The level asked for.
        level: usize,
        /// The last level.
        last: usize,
    },
    /// The group commit that carried this write failed (the cause is the leader's error).
    #[error("the write failed: {cause}")]
    WriteFailed {
        /// The failure.
        cause: String,
    },
    /// The store was replaced by [`Db::restore`](crate::Db::restore) after this
    /// [`Snapshot`](crate::Snapshot) was taken, or while this forced flush waited for its
    /// memtable: what it would read or write is gone.
    #[error("the store was restored from a snapshot since this operation began")]
    Restored,
    /// A file that a snapshot's file set must hold is not in the list given to
    /// [`Db::restore`](crate::Db::restore), or not in its directory. Nothing was changed.
    #[error("the snapshot's file set has no {name}")]
    SnapshotFileMissing {
        /// The file's name.
        name: String,
    },
    /// Properties for [`Capture::write_to`](crate::Capture::write_to) larger than
    /// [`PROPERTIES_BYTES_MAX`](crate::PROPERTIES_BYTES_MAX). Refused before anything is
    /// written.
    #[error("snapshot properties of {bytes} bytes exceed the limit of {max}")]
    PropertiesTooLarge {
        /// Their size, as the limit counts it.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// Stored state that does not decode or does not make sense: the store refuses to serve
    /// from it rather than risk wrong data.
    #[error("corrupt {} at {offset}: {reason}", path.display())]
    Corruption {
        /// The file or directory.
        path: PathBuf,
        /// Where: a byte offset, or for the manifest the LSN of the record.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Error {
    /// Turns an error from writing the table at `path` into [`Error::NoSpace`] when the file
    /// system said it was full (`ENOSPC` or `EDQUOT` anywhere in its chain of causes).
    pub(crate) fn or_no_space(self, path: &std::path::Path) -> Error {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                )
            {
                return Error::NoSpace {
                    path: path.to_path_buf(),
                    cause: strata_fs::display_chain(&self),
                };
            }
            cause = e.source();
        }
        self
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
