//! `resident.rs`'s check under mimalloc, the `strata` binary's global allocator: a zeroed
//! allocation from it may be reused memory zeroed by a `memset`, which would make a new arena
//! resident whole (the arena is mapped so that it never is). The only test in its binary.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "resident.rs"]
mod resident;
