//! The descriptions a transfer exchanges: a snapshot's metadata and files, its chunks and
//! positions in it (protobuf messages, the wire and on-disk format), and [`describe`], which
//! makes the metadata of files on disk.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use strata_fs::IoError;

use crate::error::{Error, Result};

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

/// The name of a set's metadata file (in `staging/`, `local/` and `snapshots/ID/`).
pub(crate) const META_FILE: &str = "meta";

pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(Error::Invalid("a file name must be a plain name"));
    }
    Ok(())
}

pub(crate) fn crc_of_file(path: &Path) -> Result<(u64, u32)> {
    let mut file = File::open(path).map_err(IoError::with("open", path))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(IoError::with("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize()))
}

/// Describes the files `names` in `dir` as snapshot `id` covering the log up to
/// (`last_index`, `last_term`): their sizes and checksums. Reads every file whole; a node that
/// describes snapshot after snapshot of mostly the same immutable files keeps a
/// [`ChecksumCache`] instead.
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
    // A cache that knows nothing reads every file.
    ChecksumCache::default().describe(dir, id, last_index, last_term, names)
}

/// What identifies one version of a file's contents: its device and inode (a hard link to it
/// in the next snapshot's directory is the same file), its size and its modification time to
/// the nanosecond (a write changes it).
///
/// File systems stamp times at a clock tick (a few milliseconds), so two writes within one
/// tick leave the same time: a file modified less than [`SETTLED`] before it was looked at is
/// not remembered (git's "racily clean" rule), and it is read again the next time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct FileVersion {
    /// Whether it was last modified at least [`SETTLED`] before it was looked at.
    settled: bool,
    dev: u64,
    ino: u64,
    size: u64,
    mtime_s: i64,
    mtime_ns: i64,
}

impl FileVersion {
    #[cfg(unix)]
    fn of(path: &Path) -> Result<Option<Self>> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(IoError::with("stat", path))?;
        let settled = m
            .modified()
            .ok()
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age >= SETTLED);
        Ok(Some(Self {
            settled,
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_s: m.mtime(),
            mtime_ns: m.mtime_nsec(),
        }))
    }

    /// Elsewhere a file has no identity to remember it by: every file is read.
    #[cfg(not(unix))]
    fn of(_path: &Path) -> Result<Option<Self>> {
        Ok(None)
    }
}

/// How long before it is looked at a file must have been last modified for its checksum to be
/// remembered: well above any file system's timestamp tick.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Remembers the checksums of the files of the last set it described, so that describing the
/// next one reads only the files that are new or changed.
///
/// An LSM's snapshot is mostly the same immutable tables, hard-linked into each snapshot's
/// directory: without the cache every snapshot reads the whole store (at 10 GiB, 10 GiB per
/// snapshot). A file is known again by its device, inode, size and modification time (in
/// nanoseconds), and only once it has not been modified for 2 s (a file system stamps times at
/// a clock tick: two writes within one leave the same time); anything else about it changing
/// is not looked for. A checksum that no longer
/// matches the bytes (a bit flipped on disk since) is caught where it matters: the receiver
/// checks every file against it, and refuses the set.
///
/// It holds the files of the last set only (bounded by the size of one set), and its lock is
/// never held while a file is read.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use strata_snapshot::ChecksumCache;
///
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("000007.sst"), vec![7u8; 5000])?;
/// // A table written a while ago (a file modified in the last 2 s is read every time).
/// let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
/// std::fs::File::options()
///     .write(true)
///     .open(dir.path().join("000007.sst"))?
///     .set_modified(an_hour_ago)?;
/// let cache = ChecksumCache::default();
/// let first = cache.describe(dir.path(), 1, 42, 3, &["000007.sst"])?;
/// std::fs::write(dir.path().join("000009.sst"), vec![9u8; 300])?;
/// let second = cache.describe(dir.path(), 2, 50, 3, &["000007.sst", "000009.sst"])?;
/// assert_eq!(first.files[0], second.files[0]);
/// assert_eq!(cache.reads(), 2); // 000007.sst was read once
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct ChecksumCache {
    inner: std::sync::Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    known: std::collections::HashMap<FileVersion, u32>,
    reads: u64,
}

impl ChecksumCache {
    /// As [`describe`], reading only the files this cache has not seen as they are now; it
    /// then remembers exactly this set's files.
    ///
    /// # Errors
    ///
    /// As [`describe`].
    pub fn describe(
        &self,
        dir: &Path,
        id: u64,
        last_index: u64,
        last_term: u64,
        names: &[&str],
    ) -> Result<SnapshotMeta> {
        let mut files = Vec::with_capacity(names.len());
        let mut seen = std::collections::HashMap::with_capacity(names.len());
        let mut reads = 0;
        for name in names {
            check_name(name)?;
            let path = dir.join(name);
            // Looked at before it is read: a write during the read changes what the next
            // describe sees, so it is read again then.
            let version = FileVersion::of(&path)?;
            let known = version.and_then(|v| self.lock().known.get(&v).copied());
            let (size, crc) = match (version, known) {
                (Some(v), Some(crc)) => (v.size, crc),
                _ => {
                    reads += 1;
                    crc_of_file(&path)?
                }
            };
            if let Some(v) = version
                && v.settled
                && v.size == size
            {
                seen.insert(v, crc);
            }
            files.push(FileInfo {
                name: (*name).to_owned(),
                size,
                crc,
            });
        }
        let mut inner = self.lock();
        inner.known = seen;
        inner.reads += reads;
        Ok(SnapshotMeta {
            id,
            last_index,
            last_term,
            membership: Bytes::new(),
            files,
        })
    }

    /// How many files it has read whole so far.
    pub fn reads(&self) -> u64 {
        self.lock().reads
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map is replaced whole or read: a panic elsewhere leaves nothing half-made.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
