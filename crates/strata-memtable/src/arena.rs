//! The arena: one mapping, bump-allocated by atomic fetch-and-add, freed whole.
//!
//! The mapping is reserved whole but costs memory only as it fills: an anonymous mapping is
//! the operating system's fresh zero pages, resident once written (`tests/resident.rs` checks
//! it, also under mimalloc, the server's allocator). It is mapped rather than allocated: a
//! general allocator asked for zeroed memory may hand back memory it reused and zero it with
//! a `memset`, which makes the whole capacity resident at once and costs a pass over it for
//! every new memtable (it took an eighth of the server's CPU under mimalloc).
//!
//! A dropped arena's mapping is kept for the next arena of its size ([`SPARE`], one per
//! process), as it is: a store switches to a new memtable at every flush, and faulting a fresh
//! mapping in again, each page zeroed by the kernel, took 4 to 7% of a member's CPU under a
//! steady stream of writes. The cost is memory: the spare stays resident as far as its last
//! memtable filled it.
//!
//! All of the crate's `unsafe` is here: the skiplist (`memtable.rs`) reads and writes its nodes
//! only through this module's accessors (`write`, `bytes`, `read_u32`, `atomic_u64`...). The
//! rules that make it sound:
//!
//! 1. Memory is mapped once and unmapped (or handed to the next arena) only when the arena is
//!    dropped; nothing in it ever moves. References into it therefore live as long as
//!    `&Arena`. Its bytes are initialized: zero pages, or what a previous arena wrote.
//! 2. Allocation hands each caller a disjoint range (`fetch_add` on the offset), so a writer
//!    filling a fresh range aliases nothing.
//! 3. Bytes other than atomics are written only before the range is published (by a
//!    `Release` compare-and-swap of its offset into a tower), and read only after it is
//!    observed (by an `Acquire` load). Towers are `AtomicU64`s from the start: every bit
//!    pattern is a valid `AtomicU64`. A fresh range may hold a previous arena's bytes, so the
//!    skiplist writes every field and tower of a node it will read, the head's included,
//!    before anyone can see it.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The mapping of the last arena dropped in this process, for the next arena of its size
/// (any other size maps afresh and lets it go). One, so that what it holds is bounded by one
/// memtable's capacity.
static SPARE: Mutex<Option<memmap2::MmapMut>> = Mutex::new(None);

/// Every allocation is aligned to this (enough for `u64` and `AtomicU64`).
pub(crate) const ALIGN: usize = 8;

pub(crate) struct Arena {
    ptr: NonNull<u8>,
    capacity: usize,
    used: AtomicUsize,
    /// Owns the memory `ptr` points into; on drop, becomes the [`SPARE`] (and the spare
    /// before it is unmapped). Never accessed through this field after `new` but by `drop`
    /// (all access goes through `ptr`, under the module's rules).
    map: Option<memmap2::MmapMut>,
}

// SAFETY: the arena is a block of memory accessed only under the rules in the module docs:
// disjoint writes before publication, atomic or read-only access after it.
unsafe impl Send for Arena {}
// SAFETY: as above; shared access never produces a data race.
unsafe impl Sync for Arena {}

impl Drop for Arena {
    /// The mapping becomes the spare. Nothing refers into it any more: references into the
    /// arena borrow `&self`.
    fn drop(&mut self) {
        let Some(map) = self.map.take() else {
            return;
        };
        let previous = match SPARE.lock() {
            Ok(mut spare) => spare.replace(map),
            Err(_) => Some(map),
        };
        // Unmapped outside the lock.
        drop(previous);
    }
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("capacity", &self.capacity)
            .field("used", &self.used.load(Ordering::Relaxed))
            .finish()
    }
}

impl Arena {
    /// An arena of `capacity` bytes (rounded up to the alignment; at most `u32::MAX`, since
    /// offsets are `u32`): the spare mapping if it has that size, else a fresh one. Offset 0 is
    /// reserved as "null". Its bytes are not necessarily zero (rule 3).
    pub fn new(capacity: usize) -> Self {
        // Round down at the top, so every offset and every `offset + length` fits in a `u32`.
        let capacity = capacity
            .clamp(64, u32::MAX as usize & !(ALIGN - 1))
            .next_multiple_of(ALIGN);
        let spare = SPARE.lock().map_or(None, |mut spare| spare.take());
        let mut map = match spare {
            Some(map) if map.len() == capacity => map,
            // Unmapped here, outside the lock.
            _ => Self::map(capacity),
        };
        // A mapping is page-aligned, so ALIGN-aligned.
        let ptr = NonNull::new(map.as_mut_ptr()).expect("a mapping is never at address 0");
        Self {
            ptr,
            capacity,
            used: AtomicUsize::new(ALIGN),
            map: Some(map),
        }
    }

    /// A fresh mapping of `capacity` zero bytes.
    fn map(capacity: usize) -> memmap2::MmapMut {
        let map = match memmap2::MmapMut::map_anon(capacity) {
            Ok(map) => map,
            // As an allocation failure is: the process cannot go on without the memory.
            Err(e) => panic!("cannot map a memtable arena of {capacity} bytes: {e}"),
        };
        // Huge pages where the system gives them on request (`transparent_hugepage` set to
        // `madvise`): a skiplist's searches jump across the whole arena, and with 4 KiB pages
        // they miss the TLB at every hop. Only a hint: without it the arena works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        map
    }

    /// Bytes allocated so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed).min(self.capacity)
    }

    /// The arena's size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Reserves `size` bytes (rounded up to the alignment) and returns their offset, or `None`
    /// if the arena is full.
    pub fn alloc(&self, size: usize) -> Option<u32> {
        let size = size.next_multiple_of(ALIGN);
        let offset = self.used.fetch_add(size, Ordering::Relaxed);
        if offset.checked_add(size)? > self.capacity {
            // Leave `used` past the end: every later allocation fails too, which is what a
            // full memtable wants.
            return None;
        }
        u32::try_from(offset).ok()
    }

    /// A pointer to `offset`. The caller must stay within what it allocated or observed.
    fn at(&self, offset: u32) -> *mut u8 {
        debug_assert!((offset as usize) < self.capacity);
        // SAFETY: offsets come from `alloc`, so they lie inside the allocation.
        unsafe { self.ptr.as_ptr().add(offset as usize) }
    }

    /// Copies `bytes` to `offset`. Only for a range this thread allocated and has not yet
    /// published (rule 2 and 3).
    pub fn write(&self, offset: u32, bytes: &[u8]) {
        debug_assert!(offset as usize + bytes.len() <= self.capacity);
        // SAFETY: the range was allocated by the caller and is unpublished, so nothing else
        // reads or writes it; source and destination cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.at(offset), bytes.len()) }
    }

    /// Writes a `u32` at `offset` (aligned to 4). Same rule as [`write`](Self::write).
    pub fn write_u32(&self, offset: u32, value: u32) {
        self.write(offset, &value.to_ne_bytes());
    }

    /// Writes a `u64` at `offset`. Same rule as [`write`](Self::write).
    pub fn write_u64(&self, offset: u32, value: u64) {
        self.write(offset, &value.to_ne_bytes());
    }

    /// The bytes at `offset..offset + len`. Only for a range that is published (or written by
    /// this thread): it is never written again.
    pub fn bytes(&self, offset: u32, len: u32) -> &[u8] {
        debug_assert!(offset as usize + len as usize <= self.capacity);
        // SAFETY: the range lies inside the allocation, which lives as long as `&self`, and is
        // no longer written (rule 3).
        unsafe { std::slice::from_raw_parts(self.at(offset), len as usize) }
    }

    /// The `u32` at `offset` (aligned to 4), under the same rule as [`bytes`](Self::bytes).
    pub fn read_u32(&self, offset: u32) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.bytes(offset, 4));
        u32::from_ne_bytes(b)
    }

    /// The `u64` at `offset`, under the same rule as [`bytes`](Self::bytes).
    pub fn read_u64(&self, offset: u32) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(offset, 8));
        u64::from_ne_bytes(b)
    }

    /// The atomic at `offset` (aligned to 8).
    pub fn atomic_u64(&self, offset: u32) -> &AtomicU64 {
        debug_assert!(offset.is_multiple_of(8) && offset as usize + 8 <= self.capacity);
        // SAFETY: the address is inside the allocation, 8-aligned (all allocations are
        // 8-aligned and towers sit at multiples of 8 within a node), lives as long as `&self`,
        // and is only ever accessed atomically once published; zeroed memory is a valid
        // `AtomicU64`.
        unsafe { &*self.at(offset).cast::<AtomicU64>() }
    }
}
