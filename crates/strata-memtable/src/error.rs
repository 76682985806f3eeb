//! The crate's error type.

/// Why an insert was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The arena has no room for the entry: switch to a new memtable.
    #[error("the memtable is full")]
    Full,
    /// The user key is longer than [`KEY_BYTES_MAX`](crate::KEY_BYTES_MAX).
    #[error("key of {len} bytes exceeds the limit")]
    KeyTooLarge {
        /// The key's length.
        len: usize,
    },
    /// The memtable was frozen for flushing.
    #[error("the memtable is frozen")]
    Frozen,
    /// This user key already has an entry with this sequence number.
    #[error("duplicate key and sequence number")]
    Duplicate,
    /// The sequence number does not fit in 56 bits.
    #[error("sequence number {seq} exceeds the maximum")]
    SeqTooLarge {
        /// The sequence number given.
        seq: u64,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
