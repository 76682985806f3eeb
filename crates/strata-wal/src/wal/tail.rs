//! [`Writer`]: the open tail segment, written with `write` or, with
//! [`WalOptions::mapped_tail`](crate::WalOptions::mapped_tail), through a shared memory map.
//!
//! Mapped, a record is copied into a `MAP_SHARED` map of the segment file instead of being written with
//! a system call. The copy lands in the page cache, exactly where `write` would have put it: it
//! survives a crash of the process, is what readers of the file see, and `fdatasync` on the
//! file makes it durable (dirty pages of a shared map are the file's dirty pages). Only the cost
//! changes: a copy instead of a `write` per commit round, which for small records was most of
//! an append's time.
//!
//! The map covers a region allocated ahead with [`strata_fs::preallocate`] (`fallocate`), so a
//! write into it never meets a full disk: a map can report that only with `SIGBUS`. The region
//! grows by doubling (from [`PREALLOCATE_BYTES_MIN`] to steps of [`PREALLOCATE_BYTES_MAX`]), and
//! the file holds zeros past the last record until the segment is sealed, when it is cut to its
//! records' length. A crash leaves the zeros behind; recovery cuts them off as the torn tail
//! they look like (without counting them as torn bytes: nothing was written there).

#![allow(unsafe_code)] // The shared map; see `Writer::grow`.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::format::SegmentHeader;

/// The first region allocated past a segment's end: small logs (a manifest) stay small.
pub(crate) const PREALLOCATE_BYTES_MIN: u64 = 64 * 1024;
/// The largest step a segment's allocated region grows by.
pub(crate) const PREALLOCATE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The open tail segment.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) header: SegmentHeader,
    /// Bytes of the segment holding its header and records: where the next record goes.
    len: u64,
    /// A shared map of the file's allocated length (past `len`, zeros), once something has been
    /// written; `None` before, and after a seal.
    map: Option<MmapMut>,
    /// Write through the map (`WalOptions::mapped_tail`); otherwise with `pwrite`.
    mapped: bool,
}

impl Writer {
    /// Opens the segment at `path` (header `header`, `len` bytes of header and records) for
    /// appending.
    ///
    /// # Errors
    ///
    /// I/O errors opening it.
    pub(crate) fn open(
        path: &Path,
        header: SegmentHeader,
        len: u64,
        mapped: bool,
    ) -> Result<Writer> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open segment", path, e))?;
        if !mapped {
            file.seek(SeekFrom::Start(len))
                .map_err(|e| Error::io("seek segment", path, e))?;
        }
        Ok(Self::new(file, path.to_path_buf(), header, len, mapped))
    }

    /// A writer for `file`, opened for reading and writing, whose first `len` bytes are the
    /// segment's header and records, and whose position is at `len` (a segment just created);
    /// through a map if `mapped`.
    pub(crate) fn new(
        file: File,
        path: PathBuf,
        header: SegmentHeader,
        len: u64,
        mapped: bool,
    ) -> Writer {
        Writer {
            file,
            path,
            header,
            len,
            map: None,
            mapped,
        }
    }

    /// Whether it writes through a map.
    pub(crate) fn mapped(&self) -> bool {
        self.mapped
    }

    /// Appends `parts`, one after another, after the last record.
    ///
    /// # Errors
    ///
    /// An I/O error allocating room (`ENOSPC`) or mapping it; nothing is appended then.
    pub(crate) fn append(&mut self, parts: &[&[u8]]) -> std::io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let end = self.len + total as u64;
        if !self.mapped {
            // The file's position is at `len` (see `open` and `new`).
            for part in parts {
                (&self.file).write_all(part)?;
            }
            self.len = end;
            return Ok(());
        }
        if self.map.as_ref().is_none_or(|map| (map.len() as u64) < end) {
            self.grow(end)?;
        }
        let Some(map) = self.map.as_mut() else {
            return Err(std::io::Error::other("the segment is not mapped"));
        };
        let mut at = usize::try_from(self.len).map_err(std::io::Error::other)?;
        for part in parts {
            map[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.len = end;
        Ok(())
    }

    /// Allocates and maps at least `end` bytes: the current region doubled, by at most
    /// [`PREALLOCATE_BYTES_MAX`], and at least enough for `end`.
    fn grow(&mut self, end: u64) -> std::io::Result<()> {
        let current = self.map.as_ref().map_or(self.len, |map| map.len() as u64);
        let step = current.clamp(PREALLOCATE_BYTES_MIN, PREALLOCATE_BYTES_MAX);
        let target = end.max(current + step);
        // Unmap before the file changes length: the new map covers it all.
        self.map = None;
        strata_fs::preallocate(&self.file, &self.path, target).map_err(|e| match e {
            strata_fs::Error::Io { source, .. } => source,
            other => std::io::Error::other(other),
        })?;
        // SAFETY: the map is of a segment this log holds locked (`LOCK`), written only through
        // this map by the one leader that holds the writer, and never shortened while mapped:
        // `seal` and `Drop` unmap first, and `truncate_after` drops the writer before it cuts
        // the file. Every mapped byte is allocated on disk (`preallocate`), so a write into the
        // map cannot fail for space. Another process truncating the file would fault it, as
        // for any mapped file: the log directory is the log's alone.
        let map = unsafe { MmapMut::map_mut(&self.file) }?;
        if (map.len() as u64) < end {
            return Err(std::io::Error::other(
                "the segment's map is shorter than allocated",
            ));
        }
        self.map = Some(map);
        Ok(())
    }

    /// Cuts the allocated zeros off the end of the file, leaving the header and records: a
    /// sealed segment holds nothing else. Not synced (the seal's `fdatasync` follows).
    ///
    /// # Errors
    ///
    /// The `ftruncate` error.
    pub(crate) fn trim(&mut self) -> Result<()> {
        if self.map.take().is_some() {
            self.file
                .set_len(self.len)
                .map_err(|e| Error::io("trim segment", &self.path, e))?;
        }
        Ok(())
    }
}

impl Drop for Writer {
    /// A log closed cleanly leaves no allocated zeros behind (a crash does; recovery cuts
    /// them).
    fn drop(&mut self) {
        let _ = self.trim();
    }
}
