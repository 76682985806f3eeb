//! Chunked transfer of snapshot file sets: a [`Sender`] that reads any chunk of the set (so a
//! transfer resumes where the receiver says it stopped), and a [`Receiver`] that accepts
//! chunks only in order, stages them, verifies each file's checksum when it completes, and
//! installs the complete set atomically. A crash mid-transfer leaves no partial install, and a
//! restarted receiver resumes from what it has on disk. The format is in
//! `docs/formats/snapshot-transfer.md`.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_snapshot::{Ack, Receiver, Sender, describe};
//!
//! let source = tempfile::tempdir()?;
//! std::fs::write(source.path().join("000007.sst"), vec![7u8; 5000])?;
//! std::fs::write(source.path().join("000009.sst"), vec![9u8; 300])?;
//! let meta = describe(source.path(), 1, 42, 3, &["000007.sst", "000009.sst"])?;
//!
//! let target = tempfile::tempdir()?;
//! let mut receiver = Receiver::open(target.path())?;
//! let sender = Sender::new(source.path(), meta.clone(), 1024);
//! let mut at = receiver.begin(&meta)?;
//! loop {
//!     let chunk = sender.chunk(at)?.expect("a chunk until complete");
//!     match receiver.accept(&chunk)? {
//!         Ack::Accepted { next } | Ack::Duplicate { next } | Ack::Gap { need: next } => at = next,
//!         Ack::Complete => break,
//!     }
//! }
//! let (installed, dir) = receiver.installed()?.expect("installed");
//! assert_eq!(installed.last_index, 42);
//! assert_eq!(std::fs::read(dir.join("000009.sst"))?, vec![9u8; 300]);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod error;
mod meta;
mod receiver;
mod sender;
mod store;

pub use error::{Error, Result};
pub use meta::{ChecksumCache, Chunk, FileInfo, Position, SnapshotMeta, describe};
pub use receiver::{Ack, Receiver};
pub use sender::Sender;
