//! A concurrent skiplist memtable in one arena: the LSM's in-memory half.
//!
//! Entries are versions of user keys: `(user key, sequence number, kind, value)`, ordered by
//! user key and then newest first, so the LSM keeps several versions and tombstones side by
//! side and a read at a snapshot finds the right one with one seek. Nodes live in a single
//! arena and link to each other by `u32` offsets.
//!
//! # Invariants
//!
//! - **Lock-free writes, wait-free reads.** An insert links its node with one compare-and-swap
//!   per level, bottom up; readers only load. Nobody ever blocks.
//! - **No half-inserted entry is ever seen.** A node is written completely before the `Release`
//!   compare-and-swap that links it, and read only after an `Acquire` load.
//! - **Bounded memory, freed whole.** The arena's capacity is fixed; a full arena refuses inserts
//!   ([`Error::Full`]), and dropping the memtable frees everything at once.
//! - **Zero copy.** Keys and values are handed out as slices borrowed from the arena.
//!
//! All `unsafe` is confined to the arena module, with its rules stated there.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), strata_memtable::Error> {
//! use strata_memtable::{Memtable, ValueKind};
//!
//! let table = Memtable::with_capacity(1 << 20);
//! table.insert(b"k", 1, ValueKind::Put, b"v1")?;
//! table.insert(b"k", 5, ValueKind::Put, b"v5")?;
//! table.insert(b"k", 9, ValueKind::Delete, b"")?;
//!
//! assert_eq!(table.get(b"k", 4).map(|e| e.value), Some(&b"v1"[..])); // a snapshot at 4
//! assert_eq!(table.get(b"k", 7).map(|e| e.value), Some(&b"v5"[..]));
//! assert_eq!(table.get(b"k", 9).map(|e| e.kind), Some(ValueKind::Delete)); // tombstone
//! assert!(table.get(b"other", 9).is_none());
//!
//! let versions: Vec<u64> = table.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
//!     .map(|e| e.seq)
//!     .collect();
//! assert_eq!(versions, [9, 5, 1]); // newest first
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod arena;
mod error;
mod memtable;

pub use error::{Error, Result};
pub use memtable::{Entry, KEY_BYTES_MAX, Memtable, MemtableIter, Range, SEQ_MAX, ValueKind};
