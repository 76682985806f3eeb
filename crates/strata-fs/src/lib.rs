//! Durable file primitives for every Strata layer that writes to disk.
//!
//! A storage engine tells its user "done" only when the bytes will survive a crash. On a POSIX
//! file system that takes more than `write`: the file must be `fsync`ed, and a file that was
//! created, renamed or removed needs an `fsync` of its *directory* too, or the name can vanish
//! after a power cut even though the data is on disk. Replacing a file whole (a manifest, a
//! compacted log) needs a temporary file, an `fsync`, and a rename over the old one, and on
//! Windows a file that is open cannot always be renamed over at all. This crate does those steps
//! once, in the right order, and lets tests fail any of them.
//!
//! - [`atomic_replace`] / [`atomic_replace_with`]: write a complete new version of a file.
//! - [`SwapFile`]: an open, append-mode handle to a file that can be replaced whole while open
//!   (Serf's snapshot compaction), with the Windows close, rename and reopen dance.
//! - [`sync_dir`], [`sync_parent_dir`], [`create_synced`], [`write_synced`]: the building blocks.
//! - [`sync_file`], [`sync_file_data`], [`rename_durable`], [`hard_link`], [`truncate_synced`]:
//!   single durable steps for layers that manage their own files (tables, WAL segments,
//!   snapshot sets). No other crate calls `sync_all`, `sync_data`, `rename` or `hard_link`
//!   itself (the tidy check enforces it), so every durable step in Strata has a failpoint.
//! - [`available_bytes`]: the space left on a file system, before `ENOSPC`.
//! - [`IoError`]: the error of a plain (non-durable) file operation, which every layer's error
//!   type wraps.
//! - [`failpoint`]: named failure points at every write, `fsync`, rename and directory `fsync`
//!   (feature `failpoints`).
//!
//! # Invariants
//!
//! - **Old or new, never a mix, never nothing.** A crash at any step of a replace leaves the
//!   complete old file or the complete new file under the target name. The new content is
//!   `fsync`ed before the rename, and the rename is made durable by a directory `fsync` before
//!   the replace returns `Ok`.
//! - **A failed swap leaves a usable handle.** After [`SwapFile::replace`] fails at any step, the
//!   handle still appends to the file that is under the target name (Serf leaves its handles nil
//!   and crashes on the next write).
//! - **No success after a failed `fsync`.** Once an `fsync` through a [`SwapFile`] fails, it is
//!   poisoned: every later append and sync fails until the file is rewritten whole.
//!
//! This crate knows nothing about what the bytes mean.
//!
//! # Platforms
//!
//! On Unix a rename over an open file is atomic and the open handle keeps the old inode, so
//! [`SwapStrategy::RenameOver`] opens the new file first, renames it over the target and swaps
//! handles. On Windows [`SwapStrategy::CloseAndRename`] closes the handle first, renames over the
//! target (the standard library's rename replaces an existing file there) and reopens it,
//! retrying the sharing violations that virus scanners and indexers cause, with backoff. Unlike
//! Serf it does not delete the old file before the rename: that opens a window in which a crash
//! leaves no file under the target name. Because Serf does delete first, [`recover_swap`] still
//! promotes a complete temporary file when the target is missing. Directory `fsync` is a no-op on
//! Windows, where it is neither possible nor needed. Both strategies run on every platform, so
//! the Windows path is tested on Linux too.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write;
//! use strata_fs::{SwapFile, SwapOptions, atomic_replace};
//!
//! let dir = tempfile::tempdir()?;
//!
//! // Replace a whole file atomically.
//! let manifest = dir.path().join("MANIFEST");
//! atomic_replace(&manifest, b"version 1\n")?;
//! atomic_replace(&manifest, b"version 2\n")?;
//! assert_eq!(std::fs::read(&manifest)?, b"version 2\n");
//!
//! // Append to a log, then compact it in place while it is open.
//! let log_path = dir.path().join("log");
//! let mut log = SwapFile::open(&log_path, SwapOptions::default())?;
//! log.append(b"a=1\na=2\na=3\n")?;
//! log.sync()?;
//! log.replace(|w| w.write_all(b"a=3\n"))?;
//! log.append(b"b=1\n")?;
//! assert_eq!(std::fs::read(&log_path)?, b"a=3\nb=1\n");
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod error;
pub mod failpoint;
mod file;
mod swap;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub use error::{Error, IoError, Result, Step, display_chain};
pub use file::{
    hard_link, preallocate, rename_durable, sync_file, sync_file_data, truncate_synced,
};
pub use swap::{RecoveredSwap, SwapFile, SwapOptions, SwapStrategy, recover_swap};

/// The bytes an unprivileged writer can still write on the file system that holds `path`
/// (`statvfs`'s available blocks times its fragment size: what is left before `ENOSPC`,
/// less the blocks reserved for root). A server checks it to stop taking writes while it
/// still has room to finish the ones it took.
///
/// # Errors
///
/// If `statvfs` fails (`path` missing, say), or on a platform without it.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(path)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "free space is known on Unix only",
        ))
    }
}

/// The permission bits of files this crate creates on Unix (before the umask): `0644`, readable
/// by all and writable by the owner, like Serf's snapshot file.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// `fsync`s the directory `dir`, making the creation, rename or removal of a file in it durable.
///
/// A no-op on Windows, which cannot open a directory as a file and does not need it.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::SyncDir`] if the directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<()> {
    failpoint::check(failpoint::DIR_FSYNC).map_err(|e| Error::io(Step::SyncDir, dir, e))?;
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(|e| Error::io(Step::SyncDir, dir, e))?;
        handle
            .sync_all()
            .map_err(|e| Error::io(Step::SyncDir, dir, e))?;
    }
    Ok(())
}

/// `fsync`s the directory that contains `path`.
///
/// # Errors
///
/// As [`sync_dir`].
pub fn sync_parent_dir(path: &Path) -> Result<()> {
    sync_dir(&parent_dir(path))
}

/// The directory containing `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Options for a file this crate creates: write access, and mode `mode` on Unix.
pub(crate) fn create_options(mode: u32) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options
}

/// Creates (or truncates) `path` with [`DEFAULT_FILE_MODE`] and `fsync`s its directory, so the
/// new name survives a crash.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Open`] or [`Step::SyncDir`].
pub fn create_synced(path: &Path) -> Result<File> {
    let file = create_options(DEFAULT_FILE_MODE)
        .open(path)
        .map_err(|e| Error::io(Step::Open, path, e))?;
    sync_parent_dir(path)?;
    Ok(file)
}

/// Creates (or truncates) `path` with mode `mode`, writes it with `write`, and `fsync`s it.
/// Returns the number of bytes written. The directory is *not* synced: this is the first half
/// of a replace, whose rename is what makes the name durable.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Open`], [`Step::Write`] (including any error `write` returns) or
/// [`Step::Fsync`].
pub fn write_synced(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64> {
    let file = swap::retry_transient(|| create_options(mode).open(path))
        .map_err(|e| Error::io(Step::Open, path, e))?;
    let mut counted = CountingWriter {
        inner: BufWriter::with_capacity(64 * 1024, file),
        bytes: 0,
    };
    let written = (|| {
        write(&mut counted)?;
        failpoint::check(failpoint::TEMP_WRITE)?;
        counted.flush()
    })();
    written.map_err(|e| Error::io(Step::Write, path, e))?;
    let file = counted
        .inner
        .into_inner()
        .map_err(|e| Error::io(Step::Write, path, e.into_error()))?;
    failpoint::check(failpoint::TEMP_FSYNC).map_err(|e| Error::io(Step::Fsync, path, e))?;
    file.sync_all()
        .map_err(|e| Error::io(Step::Fsync, path, e))?;
    Ok(counted.bytes)
}

/// Atomically replaces `target` with `contents`; see [`atomic_replace_with`].
///
/// # Errors
///
/// As [`atomic_replace_with`].
pub fn atomic_replace(target: &Path, contents: &[u8]) -> Result<()> {
    atomic_replace_with(target, |w| w.write_all(contents)).map(|_| ())
}

/// Atomically replaces `target` with what `write` produces, and returns its length.
///
/// Writes `TARGET.tmp`, `fsync`s and closes it, renames it over `target` (retrying transient
/// sharing violations on Windows) and `fsync`s the directory. A crash at any point leaves the
/// complete old or the complete new file under `target`; a stale `TARGET.tmp` from a crash is
/// overwritten by the next replace.
///
/// # Errors
///
/// [`Error::Io`] naming the step that failed. A failure before [`Step::Rename`] leaves `target`
/// untouched; a failure at [`Step::SyncDir`] means the new file is in place but its name may not
/// yet be durable.
pub fn atomic_replace_with(
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<u64> {
    let temp = swap::temp_path(target, ".tmp");
    let bytes = write_synced(&temp, DEFAULT_FILE_MODE, write)?;
    swap::rename_with_retry(&temp, target)?;
    sync_parent_dir(target)?;
    Ok(bytes)
}

/// A writer that counts the bytes it passes on.
struct CountingWriter<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
