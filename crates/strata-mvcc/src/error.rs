//! The crate's errors. The request errors print etcd's texts without the `etcdserver: ` prefix
//! (the server adds it with the gRPC code), so that clients matching on the text work.

/// Errors from the store and from request validation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The revision asked for has been compacted (etcd's `ErrCompacted`; gRPC `OutOfRange`).
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for is above the current one (etcd's `ErrFutureRev`; `OutOfRange`).
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request, compare or txn operation without a key (`InvalidArgument`).
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist, or an empty txn
    /// operation (`InvalidArgument`).
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` with a value (`InvalidArgument`).
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease (`InvalidArgument`).
    #[error("lease is provided")]
    LeaseProvided,
    /// More compares or operations in a txn branch than allowed (`InvalidArgument`).
    #[error("too many operations in txn request")]
    TooManyOps,
    /// A key put twice, or put and deleted, in one txn branch (`InvalidArgument`).
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A put with a lease that does not exist (`NotFound`).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A range's sort order or target that is not one of etcd's (`InvalidArgument`).
    #[error("invalid sort option")]
    InvalidSortOption,
    /// [`Store::read_txn`](crate::Store::read_txn) given a txn with writes (a caller's bug:
    /// such a txn goes through Raft and a [`Batch`](crate::Batch)).
    #[error("mvcc: a txn with writes cannot be run as a read")]
    NotReadOnly,
    /// A [`Write`](crate::Write) whose put or delete failed: the request is not committed.
    #[error("mvcc: the write request failed part of the way and was not committed")]
    WriteFailed,
    /// A watcher whose range holds no key (`range_end` at or below `key`; `InvalidArgument`).
    #[error("mvcc: watcher range is empty")]
    EmptyWatchRange,
    /// A watcher id that is not registered (cancelled, or never was).
    #[error("mvcc: watcher not found")]
    WatcherNotFound,
    /// A stored key or value that does not decode.
    #[error("mvcc: corrupt entry: {0}")]
    Corrupt(&'static str),
    /// The LSM failed.
    #[error(transparent)]
    Lsm(#[from] strata_lsm::Error),
}

/// The crate's results.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::Error;

    /// Clients match on these texts (after the server's `etcdserver: ` prefix): etcd's
    /// `api/v3rpc/rpctypes/error.go`, verbatim.
    #[test]
    fn request_errors_print_etcds_texts() {
        let cases = [
            (
                Error::Compacted,
                "mvcc: required revision has been compacted",
            ),
            (
                Error::FutureRevision,
                "mvcc: required revision is a future revision",
            ),
            (Error::EmptyKey, "key is not provided"),
            (Error::KeyNotFound, "key not found"),
            (Error::ValueProvided, "value is provided"),
            (Error::LeaseProvided, "lease is provided"),
            (Error::TooManyOps, "too many operations in txn request"),
            (Error::DuplicateKey, "duplicate key given in txn request"),
            (Error::LeaseNotFound, "requested lease not found"),
            (Error::InvalidSortOption, "invalid sort option"),
            (Error::EmptyWatchRange, "mvcc: watcher range is empty"),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }
}
