//! Immutable sorted table files: the LSM's on-disk half.
//!
//! A [`TableBuilder`] writes a table once, from entries in strictly increasing key order:
//! data blocks of about 4 KiB with key prefix compression and restart points, a bloom filter
//! over every key, a properties block (the table's statistics and user metadata), an index
//! block mapping each data block's last key to it, and a footer with a magic number and format
//! version. Every block carries a CRC-32 that is checked on every read. A [`Table`] reads the
//! file through a memory map: a point [`get`](Table::get) consults the filter and then reads
//! one block; a [`TableIter`] seeks and moves both ways. The format is described byte by byte
//! in `docs/formats/sstable.md`.
//!
//! # Invariants
//!
//! - **Never wrong data.** A block whose checksum fails, a truncated file, a bad magic or any
//!   structure that does not decode gives [`Error::Corruption`] naming the file and offset; a
//!   newer format gives [`Error::UnsupportedVersion`]. Nothing panics on bad input.
//! - **Written once.** A table is created new, `fsync`ed with its directory when finished, and
//!   never modified again, which is what makes reading it through a map sound.
//!
//! A shared block cache belongs to the LSM; a table consults one through [`BlockCache`]. This
//! crate knows nothing about what keys mean (the LSM encodes versions into them).
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_sstable::{ReadOptions, Table, TableBuilder, TableOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("000001.sst");
//! let mut builder = TableBuilder::create(&path, TableOptions::default())?;
//! for i in 0..1000u32 {
//!     builder.add(format!("key-{i:05}").as_bytes(), &i.to_le_bytes())?;
//! }
//! builder.set_property("raft.last_index", &42u64.to_le_bytes())?;
//! builder.finish()?;
//!
//! let table = Table::open(&path, ReadOptions::default())?;
//! assert_eq!(table.get(b"key-00007")?.as_deref(), Some(&7u32.to_le_bytes()[..]));
//! assert_eq!(table.get(b"nope")?, None);
//! assert_eq!(table.properties().entries, 1000);
//!
//! let mut iter = table.iter();
//! iter.seek(b"key-00998");
//! assert_eq!(iter.key(), b"key-00998");
//! iter.prev();
//! assert_eq!(iter.key(), b"key-00997");
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod block;
mod bloom;
mod builder;
mod error;
mod format;
mod properties;
mod table;
#[doc(hidden)]
pub mod testing;

pub use bloom::{FilterProbe, key_hash};
pub use builder::{FilterKeyFn, TableBuilder, TableOptions, TableSummary, whole_key};
pub use error::{Error, Result};
pub use format::{
    BlockHandle, Compression, FOOTER_BYTES, FORMAT_VERSION, KEY_BYTES_MAX, TABLE_MAGIC,
    VALUE_BYTES_MAX,
};
pub use properties::Properties;
pub use table::{BlockCache, CachedBlock, ReadOptions, Table, TableIter};
