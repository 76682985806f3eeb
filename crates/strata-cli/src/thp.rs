//! Transparent huge pages off for the process, unless the environment asks for them.
//!
//! mimalloc asks the kernel for huge pages on the memory it maps (`madvise(MADV_HUGEPAGE)`),
//! and with the common `defrag` setting (`madvise`) a fault in such memory makes the kernel
//! find, compact and zero a whole 2 MiB page before the faulting thread goes on; memory that
//! mimalloc gave back in 64 KiB pieces is faulted in again that way. In a profile of a
//! loaded member, huge-page faults were about a twentieth of applying the writes. Turned off,
//! the members of `cargo xtask bench cluster` took 7% and 16% less CPU per put (74.4
//! against 79.9 and 73.4 against 87.8 µs, put at 500 clients, two runs of 5 rounds with the
//! roles swapped). Databases commonly ask for the same (Redis, MongoDB and others tell their
//! operators to turn transparent huge pages off).
//!
//! `prctl(PR_SET_THP_DISABLE)` turns them off for this process and the processes it starts
//! (`strata dev`'s members), whatever the system-wide setting and mimalloc's `madvise`.
//! `MIMALLOC_ALLOW_THP` in the environment (mimalloc's own setting; `1` to allow) leaves the
//! choice to mimalloc and the system.

/// The environment variable that, when set, leaves transparent huge pages to mimalloc.
pub const ALLOW_VAR: &str = "MIMALLOC_ALLOW_THP";

/// Turns transparent huge pages off for the process unless [`ALLOW_VAR`] is set; whether it
/// did. On a kernel without the call (before Linux 3.15) nothing changes.
pub fn disable_unless_allowed() -> bool {
    if std::env::var_os(ALLOW_VAR).is_some() {
        return false;
    }
    disable()
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // prctl has no safe wrapper.
fn disable() -> bool {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only, reads no memory, and changes
    // only this process's memory policy.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[allow(unsafe_code)] // prctl has no safe wrapper.
    fn thp_disabled() -> bool {
        // SAFETY: PR_GET_THP_DISABLE takes integer arguments only and reads no memory.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }

    #[test]
    fn disable_turns_transparent_huge_pages_off_for_the_process() {
        assert!(super::disable(), "prctl(PR_SET_THP_DISABLE) failed");
        assert!(thp_disabled());
    }
}
