//! The receiving side: chunks accepted in order, staged, verified and installed; a staged
//! transfer resumed after a restart.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use strata_fs::IoError;

use crate::error::{Error, Result};
use crate::meta::{Chunk, META_FILE, Position, SnapshotMeta, check_name, crc_of_file};

/// The receiver's answer to a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Written; send from `next`.
    Accepted {
        /// Where the next chunk starts.
        next: Position,
    },
    /// Already had it (a duplicate); send from `next`.
    Duplicate {
        /// Where the next chunk starts.
        next: Position,
    },
    /// Not the expected chunk (a gap, or damaged in transit): send from `need`.
    Gap {
        /// Where the receiver needs data from.
        need: Position,
    },
    /// The whole set is verified and installed (or dropped, when the installed set is at
    /// least as new: see [`installed`](Receiver::installed)).
    Complete,
}

/// Receives one snapshot at a time into `ROOT/staging/`, installing complete ones under
/// `ROOT/snapshots/ID/`, named by `ROOT/CURRENT`.
///
/// It is also a node's snapshot store: [`adopt`](Self::adopt) installs a set made locally (a
/// snapshot the node took itself) the same way. Installing removes older sets except those
/// [`pin`](Self::pin)ned (a sender still reading them).
#[derive(Debug)]
pub struct Receiver {
    pub(crate) root: PathBuf,
    pub(crate) staging: Option<Staging>,
    pub(crate) pinned: Vec<u64>,
}

#[derive(Debug)]
pub(crate) struct Staging {
    meta: SnapshotMeta,
    next: Position,
    /// The file at `next`, open, and the checksum of its bytes so far.
    current: Option<File>,
    crc: crc32fast::Hasher,
    /// Fsyncs of complete files, running in the background while the next file arrives;
    /// all are waited for before the set is installed.
    syncing: std::collections::VecDeque<(PathBuf, std::thread::JoinHandle<strata_fs::Result<()>>)>,
}

impl Staging {
    fn new(meta: SnapshotMeta, next: Position, crc: crc32fast::Hasher) -> Self {
        let staging = Self {
            meta,
            next,
            current: None,
            crc,
            syncing: std::collections::VecDeque::new(),
        };
        staging.debug_check_next();
        staging
    }

    /// Asserts that `next` is a position of the set: in a file, at most at its size (the
    /// staged offset never runs past what the metadata says the file holds), or just past
    /// the last file, at offset 0.
    fn debug_check_next(&self) {
        match self.meta.files.get(self.next.file as usize) {
            Some(info) => debug_assert!(
                self.next.offset <= info.size,
                "staged offset {} past the size {} of file {}",
                self.next.offset,
                info.size,
                self.next.file
            ),
            None => debug_assert!(
                self.next.file as usize == self.meta.files.len() && self.next.offset == 0,
                "staged position {:?} past the end of the set",
                self.next
            ),
        }
    }

    /// Waits for the background fsyncs, all of them or all but `keep`.
    fn wait_synced(&mut self, keep: usize) -> Result<()> {
        while self.syncing.len() > keep {
            let Some((path, handle)) = self.syncing.pop_front() else {
                break;
            };
            match handle.join() {
                Ok(synced) => synced?,
                Err(_) => {
                    let panicked = std::io::Error::other("the fsync thread panicked");
                    return Err(IoError::new("fsync", path, panicked).into());
                }
            }
        }
        Ok(())
    }
}

/// Complete files being fsynced in the background, at most.
const SYNCING_MAX: usize = 4;

impl Drop for Staging {
    fn drop(&mut self) {
        // Nothing may write into a staging directory after it is dropped (or removed).
        let _ = self.wait_synced(0);
    }
}
impl Receiver {
    /// Opens the receiver at `root`, resuming a staged transfer if there is one (from what
    /// its files hold on disk; a file that is complete but fails its checksum is received
    /// again).
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Corruption`] for staged metadata that does not decode.
    pub fn open(root: &Path) -> Result<Receiver> {
        let staging_dir = root.join("staging");
        std::fs::create_dir_all(&staging_dir).map_err(IoError::with("create", &staging_dir))?;
        let mut receiver = Receiver {
            root: root.to_path_buf(),
            staging: None,
            pinned: Vec::new(),
        };
        let meta_path = staging_dir.join(META_FILE);
        if meta_path.exists() {
            let bytes = std::fs::read(&meta_path).map_err(IoError::with("read", &meta_path))?;
            let meta = SnapshotMeta::decode(bytes.as_slice()).map_err(|_| Error::Corruption {
                path: meta_path.clone(),
                reason: "staged snapshot metadata does not decode",
            })?;
            let (next, crc) = receiver.resume_position(&meta)?;
            receiver.staging = Some(Staging::new(meta, next, crc));
            // A crash can come between writing the metadata and creating the empty files at
            // the resume position: they need no chunk, so create them now.
            receiver.skip_empty_files()?;
            if receiver.is_complete() {
                receiver.install()?;
            }
        }
        Ok(receiver)
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Where a staged transfer of `meta` continues: the first file not complete on disk
    /// (files after it, written before its fsync finished, are removed), and the checksum of
    /// what it holds.
    fn resume_position(&self, meta: &SnapshotMeta) -> Result<(Position, crc32fast::Hasher)> {
        for (i, info) in meta.files.iter().enumerate() {
            let path = self.staging_dir().join(&info.name);
            let on_disk = std::fs::metadata(&path).ok().map(|m| m.len());
            let complete = on_disk == Some(info.size) && crc_of_file(&path)?.1 == info.crc;
            if complete {
                // Complete is not durable: the process that wrote it may have died before its
                // fsync finished (or the fsync failed). Sync it before it counts as received.
                let file = File::open(&path).map_err(IoError::with("open", &path))?;
                strata_fs::sync_file(&file, &path)?;
            } else {
                let on_disk = on_disk.unwrap_or(0);
                let keep = if on_disk < info.size { on_disk } else { 0 };
                truncate(&path, keep)?;
                for later in &meta.files[i + 1..] {
                    let path = self.staging_dir().join(&later.name);
                    if path.exists() {
                        std::fs::remove_file(&path).map_err(IoError::with("remove", &path))?;
                    }
                }
                let crc = crc_of_prefix(&path, keep)?;
                return Ok((
                    Position {
                        file: i as u32,
                        offset: keep,
                    },
                    crc,
                ));
            }
        }
        Ok((
            Position {
                file: meta.files.len() as u32,
                offset: 0,
            },
            crc32fast::Hasher::new(),
        ))
    }

    fn is_complete(&self) -> bool {
        self.staging
            .as_ref()
            .is_some_and(|s| s.next.file as usize >= s.meta.files.len())
    }

    /// Starts (or resumes) receiving `meta`: returns where the sender should start. A
    /// different snapshot replaces what was staged.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Invalid`] for a file name that is not a plain name.
    pub fn begin(&mut self, meta: &SnapshotMeta) -> Result<Position> {
        for info in &meta.files {
            check_name(&info.name)?;
            if info.name == META_FILE {
                return Err(Error::Invalid("a snapshot file cannot be named `meta`"));
            }
        }
        if let Some(staging) = &self.staging
            && staging.meta == *meta
        {
            return Ok(staging.next);
        }
        self.abort()?;
        let dir = self.staging_dir();
        std::fs::create_dir_all(&dir).map_err(IoError::with("create", &dir))?;
        strata_fs::atomic_replace(&dir.join(META_FILE), &meta.encode_to_vec())?;
        self.staging = Some(Staging::new(
            meta.clone(),
            Position { file: 0, offset: 0 },
            crc32fast::Hasher::new(),
        ));
        self.skip_empty_files()?;
        if self.is_complete() {
            self.install()?;
        }
        Ok(self
            .staging
            .as_ref()
            .map_or(Position { file: 0, offset: 0 }, |s| s.next))
    }

    /// Creates the empty files at the current position (they need no chunk).
    fn skip_empty_files(&mut self) -> Result<()> {
        let dir = self.staging_dir();
        let Some(staging) = &mut self.staging else {
            return Ok(());
        };
        while let Some(info) = staging.meta.files.get(staging.next.file as usize) {
            if info.size > 0 {
                break;
            }
            strata_fs::create_synced(&dir.join(&info.name))?;
            staging.next = Position {
                file: staging.next.file + 1,
                offset: 0,
            };
            staging.debug_check_next();
        }
        Ok(())
    }

    /// Takes a chunk: written if it is the expected one, acknowledged and ignored if already
    /// had, answered with the position needed otherwise. The last chunk installs the set.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSnapshot`]; [`Error::Invalid`] for a chunk past a file's end; I/O
    /// errors.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<Ack> {
        let dir = self.staging_dir();
        let Some(staging) = &mut self.staging else {
            return Err(Error::UnknownSnapshot {
                got: chunk.snapshot_id,
                expected: None,
            });
        };
        if chunk.snapshot_id != staging.meta.id {
            return Err(Error::UnknownSnapshot {
                got: chunk.snapshot_id,
                expected: Some(staging.meta.id),
            });
        }
        let at = Position {
            file: chunk.file,
            offset: chunk.offset,
        };
        let next = staging.next;
        let mut chunk_crc = crc32fast::Hasher::new();
        chunk_crc.update(&chunk.data);
        if chunk_crc.clone().finalize() != chunk.crc {
            return Ok(Ack::Gap { need: next });
        }
        if at < next {
            return Ok(Ack::Duplicate { next });
        }
        if at > next {
            return Ok(Ack::Gap { need: next });
        }
        // Only the chunk at the expected position is written: the staged bytes are a prefix
        // of the set, in order.
        debug_assert_eq!(at, next, "a chunk out of order reached the staged file");
        let info = staging
            .meta
            .files
            .get(at.file as usize)
            .ok_or(Error::Invalid("chunk of a file past the last"))?
            .clone();
        let end = at.offset + chunk.data.len() as u64;
        if end > info.size {
            return Err(Error::Invalid("chunk runs past the end of its file"));
        }
        let path = dir.join(&info.name);
        if staging.current.is_none() {
            staging.current = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(IoError::with("open", &path))?,
            );
        }
        let Some(file) = staging.current.as_mut() else {
            return Err(Error::Invalid("no open file"));
        };
        if let Err(e) = file.write_all(&chunk.data) {
            // What reached the file is unknown: start it again.
            staging.current = None;
            staging.crc = crc32fast::Hasher::new();
            staging.next.offset = 0;
            truncate(&path, 0)?;
            return Err(IoError::new("write", path, e).into());
        }
        staging.crc.combine(&chunk_crc);
        staging.next.offset = end;
        staging.debug_check_next();
        if end == info.size {
            // The file is whole and verified (its checksum ran over what was written); it
            // is fsynced in the background while the next one arrives.
            let file = staging.current.take();
            let crc = std::mem::take(&mut staging.crc).finalize();
            if crc != info.crc {
                drop(file);
                truncate(&path, 0)?;
                staging.next.offset = 0;
                return Ok(Ack::Gap { need: staging.next });
            }
            if let Some(file) = file {
                let synced = path.clone();
                let handle = std::thread::spawn(move || strata_fs::sync_file(&file, &synced));
                staging.syncing.push_back((path, handle));
                staging.wait_synced(SYNCING_MAX)?;
            }
            staging.next = Position {
                file: at.file + 1,
                offset: 0,
            };
            staging.debug_check_next();
            self.skip_empty_files()?;
            if self.is_complete() {
                self.install()?;
                return Ok(Ack::Complete);
            }
        }
        Ok(Ack::Accepted {
            next: self.staging.as_ref().map_or(next, |s| s.next),
        })
    }

    /// Takes a chunk of `meta` whatever is staged: starts (or resumes) receiving `meta` if it
    /// is not the snapshot staged, and answers [`Ack::Complete`] if `meta` is the installed
    /// set (a chunk that arrives after the last). A chunk positioned past the last file (a
    /// set of empty files needs no data) just starts the transfer.
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin) and [`accept`](Self::accept).
    pub fn receive(&mut self, meta: &SnapshotMeta, chunk: &Chunk) -> Result<Ack> {
        if self.staging.as_ref().is_none_or(|s| s.meta != *meta)
            && let Some((installed, _)) = self.installed()?
            && installed == *meta
        {
            return Ok(Ack::Complete);
        }
        let need = self.begin(meta)?;
        if self.staging.is_none() {
            // Installed by `begin` (nothing but empty files), or dropped as older.
            return Ok(Ack::Complete);
        }
        if chunk.file as usize >= meta.files.len() {
            return Ok(Ack::Gap { need });
        }
        self.accept(chunk)
    }

    /// Drops what is staged.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn abort(&mut self) -> Result<()> {
        if let Some(mut staging) = self.staging.take() {
            // Its files are about to go: whether their fsyncs failed does not matter.
            let _ = staging.wait_synced(0);
        }
        let dir = self.staging_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(IoError::with("remove", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(IoError::with("create", &dir))?;
        strata_fs::sync_dir(&self.root)?;
        Ok(())
    }

    /// Moves the complete staged set under `snapshots/ID/` and points `CURRENT` at it,
    /// unless the installed set is as new (by `last_index`): then the staged one is dropped.
    fn install(&mut self) -> Result<()> {
        let Some(mut staging) = self.staging.take() else {
            return Ok(());
        };
        debug_assert!(
            staging.next.file as usize >= staging.meta.files.len(),
            "installing a set that is not complete"
        );
        // Every file durable before the set is.
        staging.wait_synced(0)?;
        debug_assert!(staging.syncing.is_empty() && staging.current.is_none());
        if let Some((current, _)) = self.installed()?
            && current.last_index >= staging.meta.last_index
        {
            return self.abort();
        }
        let dir = self.staging_dir();
        // The names of the files written into it durable before it moves.
        strata_fs::sync_dir(&dir)?;
        self.commit(&dir, &staging.meta)?;
        // An empty staging directory for the next transfer. Its creation is not fsynced:
        // `open` and `begin` create it again if a crash loses it.
        std::fs::create_dir_all(&dir).map_err(IoError::with("create", &dir))?;
        Ok(())
    }
}

/// The checksum state of the first `len` bytes of `path`.
fn crc_of_prefix(path: &Path, len: u64) -> Result<crc32fast::Hasher> {
    let mut hasher = crc32fast::Hasher::new();
    if len == 0 {
        return Ok(hasher);
    }
    let file = File::open(path).map_err(IoError::with("open", path))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(IoError::with("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher)
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(IoError::with("open", path))?;
    strata_fs::truncate_synced(&file, path, len)?;
    Ok(())
}
