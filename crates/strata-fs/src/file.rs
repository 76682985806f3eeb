//! Single durable steps on files and names that other layers compose: `fsync` of an open file,
//! a rename made durable, a hard link, a truncation made durable.
//!
//! Every layer's durable step goes through one of these (or through [`atomic_replace`],
//! [`SwapFile`] and [`sync_dir`]) so that each has a failpoint a test can fail, and so that the
//! tidy check can forbid the `std` calls everywhere else.
//!
//! [`atomic_replace`]: crate::atomic_replace
//! [`SwapFile`]: crate::SwapFile
//! [`sync_dir`]: crate::sync_dir

use std::fs::File;
use std::path::Path;

use crate::{Error, Result, Step, failpoint, parent_dir, swap, sync_dir};

/// `fsync`s `file` (data and metadata, `fsync(2)`), whose name is `path` (for the error only).
///
/// Use it when the file's length or other metadata changed since the last sync (a new file, a
/// truncation, an append past the old end that must be found after a crash).
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Fsync`]. A failed `fsync` may have dropped dirty pages: the caller
/// must not report success for anything it wrote, nor trust a retried `fsync` (see
/// [`Error::Poisoned`]).
pub fn sync_file(file: &File, path: &Path) -> Result<()> {
    failpoint::check(failpoint::FSYNC)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(Step::Fsync, path, e))
}

/// `fdatasync`s `file`: its data and the metadata needed to read it back (the length), but not
/// timestamps, which saves a journal write per call on most file systems. The hot-path sync of
/// an append-only log whose blocks are preallocated or whose growth the next read must see.
///
/// # Errors
///
/// As [`sync_file`].
pub fn sync_file_data(file: &File, path: &Path) -> Result<()> {
    failpoint::check(failpoint::FSYNC)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(Step::Fsync, path, e))
}

/// Renames `from` to `to` (a file or a directory; an existing file at `to` is replaced) and
/// `fsync`s the directories involved, so the new name (and the old name's removal) survives a
/// crash once this returns.
///
/// Transient sharing violations on Windows are retried with backoff.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Rename`] (nothing changed) or [`Step::SyncDir`] (the rename
/// happened but may not be durable yet).
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    swap::rename_with_retry(from, to)?;
    let to_dir = parent_dir(to);
    let from_dir = parent_dir(from);
    sync_dir(&to_dir)?;
    if from_dir != to_dir {
        sync_dir(&from_dir)?;
    }
    Ok(())
}

/// Creates `link` as a hard link to `original`.
///
/// The new name is not yet durable: link a whole set of files, then [`sync_dir`] once.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Link`] naming `link` (already existing, a different file system,
/// a missing `original`).
pub fn hard_link(original: &Path, link: &Path) -> Result<()> {
    failpoint::check(failpoint::LINK)
        .and_then(|()| std::fs::hard_link(original, link))
        .map_err(|e| Error::io(Step::Link, link, e))
}

/// Cuts (or extends with zeros) `file`, named `path`, to `len` bytes and `fsync`s it, so the new
/// length survives a crash once this returns.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Truncate`] or [`Step::Fsync`].
pub fn truncate_synced(file: &File, path: &Path, len: u64) -> Result<()> {
    failpoint::check(failpoint::TRUNCATE)
        .and_then(|()| file.set_len(len))
        .map_err(|e| Error::io(Step::Truncate, path, e))?;
    sync_file(file, path)
}

/// Makes `file`, named `path`, at least `len` bytes long with every byte up to `len` allocated
/// on disk (`fallocate`; new bytes read as zeros), so that writes below `len` through a shared
/// memory map can never meet a full disk (which a map can only report by killing the process
/// with `SIGBUS`). A file system without `fallocate` gets the length alone (`ftruncate`). The
/// new length is not synced: an `fdatasync` after writing into it makes it durable.
///
/// # Errors
///
/// [`Error::Io`] with [`Step::Write`]: `ENOSPC` when the disk cannot hold `len` bytes.
pub fn preallocate(file: &File, path: &Path, len: u64) -> Result<()> {
    let allocated = failpoint::check(failpoint::PREALLOCATE).and_then(|()| {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                if file.metadata()?.len() < len {
                    file.set_len(len)?;
                }
                Ok(())
            }
            Err(errno) => Err(std::io::Error::from(errno)),
        }
    });
    allocated.map_err(|e| Error::io(Step::Write, path, e))
}
