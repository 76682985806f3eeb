//! Failpoints: named places where a test can make a file operation fail or kill the process.
//!
//! Built on the [`fail`](https://docs.rs/fail) crate and compiled in only with the `failpoints`
//! feature; without it [`check`] is an empty inline function. A test configures a point with
//! `fail::cfg(NAME, ACTIONS)` inside a `fail::FailScenario`, or a child process with the
//! `FAILPOINTS` environment variable (`NAME=ACTIONS;...`, read by `FailScenario::setup`).
//! Useful actions:
//!
//! - `return`: the operation fails with an [`std::io::Error`] naming the failpoint.
//! - `return(nospace)`: it fails as on a full disk (`ErrorKind::StorageFull`, as `ENOSPC`).
//! - `return(abort)`: the process aborts on the spot, without unwinding, running destructors or
//!   flushing buffers: the closest a test gets to `kill -9` at an exact step.
//! - `1*return->off`, `panic`, `sleep(10)`: see [`fail::cfg`](https://docs.rs/fail).
//!
//! Every layer that writes durably names its points `CRATE::STEP`; this crate's are the
//! constants below.

use std::io;

/// Writing the temporary file of a replace.
pub const TEMP_WRITE: &str = "fs::temp-write";
/// `fsync` of the temporary file, before it is renamed.
pub const TEMP_FSYNC: &str = "fs::temp-fsync";
/// The rename of the temporary file over the target.
pub const RENAME: &str = "fs::rename";
/// The directory `fsync` after a create or rename.
pub const DIR_FSYNC: &str = "fs::dir-fsync";
/// Re-opening the target after a Windows-style close-and-rename swap.
pub const REOPEN: &str = "fs::reopen";
/// An append through a [`SwapFile`](crate::SwapFile).
pub const APPEND_WRITE: &str = "fs::append-write";
/// `fsync` of a [`SwapFile`](crate::SwapFile).
pub const APPEND_FSYNC: &str = "fs::append-fsync";
/// `fsync` or `fdatasync` of an open file through [`sync_file`](crate::sync_file) or
/// [`sync_file_data`](crate::sync_file_data) (a table, a staged snapshot file, a WAL segment).
pub const FSYNC: &str = "fs::fsync";
/// A hard link made with [`hard_link`](crate::hard_link).
pub const LINK: &str = "fs::link";
/// The length change of [`truncate_synced`](crate::truncate_synced).
pub const TRUNCATE: &str = "fs::truncate";
/// The allocation of [`preallocate`](crate::preallocate).
pub const PREALLOCATE: &str = "fs::preallocate";

/// True if a child process died by `abort()`, which is what a `return(abort)` failpoint does,
/// rather than by a panic or an exit. Crash tests use it to check the kill really happened.
pub fn exited_by_abort(status: &std::process::ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(6)
    }
    #[cfg(windows)]
    {
        // Rust's abort on Windows is a fast-fail: STATUS_STACK_BUFFER_OVERRUN.
        status.code() == Some(0xC000_0409_u32 as i32)
    }
    #[cfg(not(any(unix, windows)))]
    {
        !status.success()
    }
}

/// Evaluates the failpoint `name`: `Ok(())` unless a test configured it to fail.
///
/// # Errors
///
/// An [`io::Error`] of kind `Other` naming the failpoint when it is configured with `return`;
/// of kind `StorageFull` with `return(nospace)`.
#[cfg(feature = "failpoints")]
pub fn check(name: &str) -> io::Result<()> {
    fn inject(name: &str, arg: Option<String>) -> io::Result<()> {
        if arg.as_deref() == Some("abort") {
            std::process::abort();
        }
        if arg.as_deref() == Some("nospace") {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("injected full disk at failpoint {name}"),
            ));
        }
        Err(io::Error::other(format!(
            "injected failure at failpoint {name}"
        )))
    }
    if let Some(result) = fail::eval(name, |arg| inject(name, arg)) {
        return result;
    }
    Ok(())
}

/// Evaluates the failpoint `name`: always `Ok(())` without the `failpoints` feature.
///
/// # Errors
///
/// None without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str) -> io::Result<()> {
    Ok(())
}
