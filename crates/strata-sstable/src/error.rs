//! The crate's error type.

use std::path::PathBuf;

/// An error from building or reading a table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation on the table that is not a durable step failed (create, write, open,
    /// map): what was being done, on which path, and why.
    #[error(transparent)]
    Io(#[from] strata_fs::IoError),
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// The file is damaged: a checksum that does not match, a truncated block, a bad magic, a
    /// structure that does not decode. Nothing from a damaged block is ever returned.
    #[error("corrupt table {} at offset {offset}: {reason}", path.display())]
    Corruption {
        /// The table file.
        path: PathBuf,
        /// The byte offset of the damaged block or field.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file was written by a newer format version than this code reads.
    #[error("table {} has format version {found}; this build reads up to {supported}", path.display())]
    UnsupportedVersion {
        /// The table file.
        path: PathBuf,
        /// The version in its footer.
        found: u32,
        /// The newest version this code reads.
        supported: u32,
    },
    /// Keys given to a [`TableBuilder`](crate::TableBuilder) were not strictly increasing.
    #[error("keys must be strictly increasing: got a key not after the previous one")]
    KeysOutOfOrder,
    /// A key or value exceeds the format's limits.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// `"key"`, `"value"` or `"property"`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A user property name uses the reserved `strata.` prefix.
    #[error("property names starting with `strata.` are reserved")]
    ReservedProperty,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
