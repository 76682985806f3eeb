//! Chunked transfer of snapshot file sets: a [`Sender`] that reads any chunk of the set (so a
//! transfer resumes where the receiver says it stopped), and a [`Receiver`] that accepts
//! chunks only in order, stages them, verifies each file's checksum when it completes, and
//! installs the complete set atomically. A crash mid-transfer leaves no partial install, and a
//! restarted receiver resumes from what it has on disk. The format is in
//! `docs/formats/snapshot-transfer.md`.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_snapshot::{Ack, Receiver, Sender, describe};
//!
//! let source = tempfile::tempdir()?;
//! std::fs::write(source.path().join("000007.sst"), vec![7u8; 5000])?;
//! std::fs::write(source.path().join("000009.sst"), vec![9u8; 300])?;
//! let meta = describe(source.path(), 1, 42, 3, &["000007.sst", "000009.sst"])?;
//!
//! let target = tempfile::tempdir()?;
//! let mut receiver = Receiver::open(target.path())?;
//! let sender = Sender::new(source.path(), meta.clone(), 1024);
//! let mut at = receiver.begin(&meta)?;
//! loop {
//!     let chunk = sender.chunk(at)?.expect("a chunk until complete");
//!     match receiver.accept(&chunk)? {
//!         Ack::Accepted { next } | Ack::Duplicate { next } | Ack::Gap { need: next } => at = next,
//!         Ack::Complete => break,
//!     }
//! }
//! let (installed, dir) = receiver.installed()?.expect("installed");
//! assert_eq!(installed.last_index, 42);
//! assert_eq!(std::fs::read(dir.join("000009.sst"))?, vec![9u8; 300]);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prost::Message;

/// One file of a snapshot.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct FileInfo {
    /// Its name within the snapshot directory (no separators).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its length in bytes.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// CRC-32 (IEEE) of its contents.
    #[prost(uint32, tag = "3")]
    pub crc: u32,
}

/// What a snapshot is: its id, the last log entry it covers, the membership then, and its
/// files.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SnapshotMeta {
    /// Identifies the transfer; a different id is a different snapshot.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The last log index the snapshot covers.
    #[prost(uint64, tag = "2")]
    pub last_index: u64,
    /// That entry's term.
    #[prost(uint64, tag = "3")]
    pub last_term: u64,
    /// The membership as of `last_index`, opaque here.
    #[prost(bytes = "bytes", tag = "4")]
    pub membership: Bytes,
    /// The files, in transfer order.
    #[prost(message, repeated, tag = "5")]
    pub files: Vec<FileInfo>,
}

/// One piece of one file.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Chunk {
    /// The snapshot it belongs to.
    #[prost(uint64, tag = "1")]
    pub snapshot_id: u64,
    /// The file's position in [`SnapshotMeta::files`].
    #[prost(uint32, tag = "2")]
    pub file: u32,
    /// Where in the file the data starts.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    /// The bytes.
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// CRC-32 (IEEE) of `data`.
    #[prost(uint32, tag = "5")]
    pub crc: u32,
    /// The last chunk of the last file.
    #[prost(bool, tag = "6")]
    pub done: bool,
}

/// A position in a transfer: a file and an offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The file's position in [`SnapshotMeta::files`].
    pub file: u32,
    /// The offset in it.
    pub offset: u64,
}

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

/// Errors of the transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A durable file step failed.
    #[error(transparent)]
    Fs(#[from] strata_fs::Error),
    /// A chunk for a snapshot this receiver is not receiving (call [`Receiver::begin`]).
    #[error("chunk of snapshot {got}, receiving {expected:?}")]
    UnknownSnapshot {
        /// The chunk's snapshot.
        got: u64,
        /// The one being received, if any.
        expected: Option<u64>,
    },
    /// Metadata or a chunk that does not make sense (a file name with a separator, a chunk
    /// past a file's end).
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// Stored state that does not decode.
    #[error("corrupt {}: {reason}", path.display())]
    Corruption {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(Error::Invalid("a file name must be a plain name"));
    }
    Ok(())
}

fn crc_of_file(path: &Path) -> Result<(u64, u32)> {
    let mut file = File::open(path).map_err(io("open", path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize()))
}

/// Describes the files `names` in `dir` as snapshot `id` covering the log up to
/// (`last_index`, `last_term`): their sizes and checksums.
///
/// # Errors
///
/// I/O errors; [`Error::Invalid`] for a name that is not a plain file name.
pub fn describe(
    dir: &Path,
    id: u64,
    last_index: u64,
    last_term: u64,
    names: &[&str],
) -> Result<SnapshotMeta> {
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        check_name(name)?;
        let (size, crc) = crc_of_file(&dir.join(name))?;
        files.push(FileInfo {
            name: (*name).to_owned(),
            size,
            crc,
        });
    }
    Ok(SnapshotMeta {
        id,
        last_index,
        last_term,
        membership: Bytes::new(),
        files,
    })
}

/// Reads a snapshot's files in chunks, from any position.
#[derive(Clone)]
pub struct Sender {
    dir: PathBuf,
    meta: SnapshotMeta,
    chunk_bytes: usize,
    /// With [`Sender::mapped`]: each file's mapping, made on first use.
    maps: Option<Arc<Mutex<Vec<Option<Bytes>>>>>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("dir", &self.dir)
            .field("snapshot", &self.meta.id)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("mapped", &self.maps.is_some())
            .finish()
    }
}

impl Sender {
    /// A sender of `meta`'s files in `dir`, `chunk_bytes` at a time (at least 1; 1 MiB is a
    /// good default).
    pub fn new(dir: &Path, meta: SnapshotMeta, chunk_bytes: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            meta,
            chunk_bytes: chunk_bytes.max(1),
            maps: None,
        }
    }

    /// As [`new`](Self::new), but each file is memory-mapped once and chunks are slices of
    /// the mapping (no copy, no buffer per chunk): for a set that nothing modifies while it is
    /// sent, such as an installed set (the store only ever deletes those, and a deleted file
    /// stays mapped). A file truncated or rewritten in place under the mapping would make
    /// reading it fail with a bus error.
    pub fn mapped(dir: &Path, meta: SnapshotMeta, chunk_bytes: usize) -> Self {
        let files = meta.files.len();
        Self {
            maps: Some(Arc::new(Mutex::new(vec![None; files]))),
            ..Self::new(dir, meta, chunk_bytes)
        }
    }

    /// File `file`'s mapping (made now if it is not yet).
    fn map(&self, maps: &Mutex<Vec<Option<Bytes>>>, file: usize, path: &Path) -> Result<Bytes> {
        let mut maps = maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(Some(map)) = maps.get(file) {
            return Ok(map.clone());
        }
        let opened = File::open(path).map_err(io("open", path))?;
        let len = opened.metadata().map_err(io("stat", path))?.len();
        let map = if len == 0 {
            Bytes::new()
        } else {
            #[allow(unsafe_code)]
            // SAFETY: read-only, and `mapped`'s contract is that nothing modifies the files
            // while they are sent (installed sets are immutable; deleting one keeps the
            // inode, and so the mapping, alive).
            let map = unsafe { memmap2::Mmap::map(&opened) }.map_err(io("map", path))?;
            Bytes::from_owner(map)
        };
        if let Some(slot) = maps.get_mut(file) {
            *slot = Some(map.clone());
        }
        Ok(map)
    }

    /// The snapshot.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The chunk at `at` (`None` past the last file). Empty files get one empty chunk.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Invalid`] for an offset past the file's end.
    pub fn chunk(&self, at: Position) -> Result<Option<Chunk>> {
        let Some(info) = self.meta.files.get(at.file as usize) else {
            return Ok(None);
        };
        if at.offset > info.size {
            return Err(Error::Invalid("offset past the end of the file"));
        }
        let path = self.dir.join(&info.name);
        let len = usize::try_from((info.size - at.offset).min(self.chunk_bytes as u64))
            .map_err(|_| Error::Invalid("chunk too large"))?;
        let last_file = at.file as usize + 1 == self.meta.files.len();
        if let Some(maps) = &self.maps {
            let map = self.map(maps, at.file as usize, &path)?;
            let from = usize::try_from(at.offset).map_err(|_| Error::Invalid("offset"))?;
            let Some(data) = map
                .get(from..from + len)
                .map(|_| map.slice(from..from + len))
            else {
                return Err(Error::Invalid("the file is shorter than its description"));
            };
            return Ok(Some(Chunk {
                snapshot_id: self.meta.id,
                file: at.file,
                offset: at.offset,
                crc: crc32fast::hash(&data),
                done: last_file && at.offset + len as u64 == info.size,
                data,
            }));
        }
        // Read straight into spare capacity (no zeroing first).
        let mut data = Vec::with_capacity(len);
        let mut file = File::open(&path).map_err(io("open", &path))?;
        file.seek(SeekFrom::Start(at.offset))
            .map_err(io("seek", &path))?;
        file.take(len as u64)
            .read_to_end(&mut data)
            .map_err(io("read", &path))?;
        if data.len() != len {
            return Err(Error::Io {
                op: "read",
                path,
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        Ok(Some(Chunk {
            snapshot_id: self.meta.id,
            file: at.file,
            offset: at.offset,
            crc: crc32fast::hash(&data),
            done: last_file && at.offset + len as u64 == info.size,
            data: Bytes::from(data),
        }))
    }
}

/// Receives one snapshot at a time into `ROOT/staging/`, installing complete ones under
/// `ROOT/snapshots/ID/`, named by `ROOT/CURRENT`.
///
/// It is also a node's snapshot store: [`adopt`](Self::adopt) installs a set made locally (a
/// snapshot the node took itself) the same way. Installing removes older sets except those
/// [`pin`](Self::pin)ned (a sender still reading them).
#[derive(Debug)]
pub struct Receiver {
    root: PathBuf,
    staging: Option<Staging>,
    pinned: Vec<u64>,
}

#[derive(Debug)]
struct Staging {
    meta: SnapshotMeta,
    next: Position,
    /// The file at `next`, open, and the checksum of its bytes so far.
    current: Option<File>,
    crc: crc32fast::Hasher,
    /// Fsyncs of complete files, running in the background while the next file arrives;
    /// all are waited for before the set is installed.
    syncing: std::collections::VecDeque<(PathBuf, std::thread::JoinHandle<std::io::Result<()>>)>,
}

impl Staging {
    fn new(meta: SnapshotMeta, next: Position, crc: crc32fast::Hasher) -> Self {
        Self {
            meta,
            next,
            current: None,
            crc,
            syncing: std::collections::VecDeque::new(),
        }
    }

    /// Waits for the background fsyncs, all of them or all but `keep`.
    fn wait_synced(&mut self, keep: usize) -> Result<()> {
        while self.syncing.len() > keep {
            let Some((path, handle)) = self.syncing.pop_front() else {
                break;
            };
            let synced = handle
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the fsync thread panicked")));
            synced.map_err(io("fsync", &path))?;
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

const META_FILE: &str = "meta";

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
        std::fs::create_dir_all(&staging_dir).map_err(io("create", &staging_dir))?;
        let mut receiver = Receiver {
            root: root.to_path_buf(),
            staging: None,
            pinned: Vec::new(),
        };
        let meta_path = staging_dir.join(META_FILE);
        if meta_path.exists() {
            let bytes = std::fs::read(&meta_path).map_err(io("read", &meta_path))?;
            let meta = SnapshotMeta::decode(bytes.as_slice()).map_err(|_| Error::Corruption {
                path: meta_path.clone(),
                reason: "staged snapshot metadata does not decode",
            })?;
            let (next, crc) = receiver.resume_position(&meta)?;
            receiver.staging = Some(Staging::new(meta, next, crc));
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
            let on_disk = std::fs::metadata(&path).map_or(0, |m| m.len());
            let complete = on_disk == info.size && crc_of_file(&path)?.1 == info.crc;
            if !complete {
                let keep = if on_disk < info.size { on_disk } else { 0 };
                truncate(&path, keep)?;
                for later in &meta.files[i + 1..] {
                    let path = self.staging_dir().join(&later.name);
                    if path.exists() {
                        std::fs::remove_file(&path).map_err(io("remove", &path))?;
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
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
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
                    .map_err(io("open", &path))?,
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
            return Err(io("write", &path)(e));
        }
        staging.crc.combine(&chunk_crc);
        staging.next.offset = end;
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
                let handle = std::thread::spawn(move || file.sync_all());
                staging.syncing.push_back((path, handle));
                staging.wait_synced(SYNCING_MAX)?;
            }
            staging.next = Position {
                file: at.file + 1,
                offset: 0,
            };
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
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        strata_fs::sync_dir(&self.root)?;
        Ok(())
    }

    /// Moves the complete staged set under `snapshots/ID/` and points `CURRENT` at it,
    /// unless the installed set is as new (by `last_index`): then the staged one is dropped.
    fn install(&mut self) -> Result<()> {
        let Some(mut staging) = self.staging.take() else {
            return Ok(());
        };
        // Every file durable before the set is.
        staging.wait_synced(0)?;
        if let Some((current, _)) = self.installed()?
            && current.last_index >= staging.meta.last_index
        {
            return self.abort();
        }
        let dir = self.staging_dir();
        strata_fs::sync_dir(&dir)?;
        let snapshots = self.root.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(io("create", &snapshots))?;
        let target = snapshots.join(staging.meta.id.to_string());
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io("remove", &target))?;
        }
        std::fs::rename(&dir, &target).map_err(io("rename", &dir))?;
        strata_fs::sync_dir(&snapshots)?;
        // The commit point: CURRENT names the new set.
        strata_fs::atomic_replace(
            &self.root.join("CURRENT"),
            staging.meta.id.to_string().as_bytes(),
        )?;
        self.remove_unused(staging.meta.id)?;
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        strata_fs::sync_dir(&self.root)?;
        Ok(())
    }

    /// Removes every set but `current` and the pinned ones.
    fn remove_unused(&self, current: u64) -> Result<()> {
        let snapshots = self.root.join("snapshots");
        let Ok(list) = std::fs::read_dir(&snapshots) else {
            return Ok(());
        };
        for item in list {
            let item = item.map_err(io("list", &snapshots))?;
            let id = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| id == current || self.pinned.contains(&id)) {
                continue;
            }
            // Garbage: failing to remove it now is not worth failing the install over (the
            // next install tries again).
            let _ = std::fs::remove_dir_all(item.path());
        }
        Ok(())
    }

    /// Keeps the sets `ids` (besides the current one) until the next call: a sender is still
    /// reading them. Sets no longer pinned and not current are removed now.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn pin(&mut self, ids: &[u64]) -> Result<()> {
        if self.pinned == ids {
            return Ok(());
        }
        self.pinned = ids.to_vec();
        let current = self.installed()?.map(|(meta, _)| meta.id);
        match current {
            Some(current) => self.remove_unused(current),
            None => Ok(()),
        }
    }

    /// The directory of installed (or pinned) set `id`.
    pub fn set_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// An empty directory for a snapshot made locally: write its files there, then
    /// [`adopt`](Self::adopt) them. What it held before is removed.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn local_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("local");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        Ok(dir)
    }

    /// Installs the set made in [`local_dir`](Self::local_dir), described by `meta` (see
    /// [`describe`]), as the current snapshot: its files are fsynced and the directory moved
    /// in whole, as a received set would be. A set older than the installed one (by
    /// `last_index`) is not installed; returns whether it was.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Invalid`] for a file name that is not a plain name.
    pub fn adopt(&mut self, meta: &SnapshotMeta) -> Result<bool> {
        let dir = self.root.join("local");
        if let Some((current, _)) = self.installed()?
            && current.last_index >= meta.last_index
        {
            std::fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
            return Ok(false);
        }
        for info in &meta.files {
            check_name(&info.name)?;
            if info.name == META_FILE {
                return Err(Error::Invalid("a snapshot file cannot be named `meta`"));
            }
            let path = dir.join(&info.name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io("fsync", &path))?;
        }
        strata_fs::atomic_replace(&dir.join(META_FILE), &meta.encode_to_vec())?;
        strata_fs::sync_dir(&dir)?;
        let snapshots = self.root.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(io("create", &snapshots))?;
        let target = snapshots.join(meta.id.to_string());
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(io("remove", &target))?;
        }
        std::fs::rename(&dir, &target).map_err(io("rename", &dir))?;
        strata_fs::sync_dir(&snapshots)?;
        strata_fs::atomic_replace(&self.root.join("CURRENT"), meta.id.to_string().as_bytes())?;
        self.remove_unused(meta.id)?;
        strata_fs::sync_dir(&self.root)?;
        Ok(true)
    }

    /// The installed snapshot and its directory, if any.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Corruption`] for a `CURRENT` or metadata that does not decode.
    pub fn installed(&self) -> Result<Option<(SnapshotMeta, PathBuf)>> {
        let current = self.root.join("CURRENT");
        let Ok(id) = std::fs::read_to_string(&current) else {
            return Ok(None);
        };
        let dir = self.root.join("snapshots").join(id.trim());
        let meta_path = dir.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(io("read", &meta_path))?;
        let meta = SnapshotMeta::decode(bytes.as_slice()).map_err(|_| Error::Corruption {
            path: meta_path,
            reason: "installed snapshot metadata does not decode",
        })?;
        Ok(Some((meta, dir)))
    }
}

/// The checksum state of the first `len` bytes of `path`.
fn crc_of_prefix(path: &Path, len: u64) -> Result<crc32fast::Hasher> {
    let mut hasher = crc32fast::Hasher::new();
    if len == 0 {
        return Ok(hasher);
    }
    let file = File::open(path).map_err(io("open", path))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(io("read", path))?;
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
        .map_err(io("open", path))?;
    file.set_len(len).map_err(io("truncate", path))?;
    file.sync_all().map_err(io("fsync", path))?;
    Ok(())
}
