//! The sending side: chunks of a set read from any position, by reading or from a mapping.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use strata_fs::IoError;

use crate::error::{Error, Result};
use crate::meta::{Chunk, Position, SnapshotMeta};

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
        let opened = File::open(path).map_err(IoError::with("open", path))?;
        let len = opened
            .metadata()
            .map_err(IoError::with("stat", path))?
            .len();
        let map = if len == 0 {
            Bytes::new()
        } else {
            #[allow(unsafe_code)]
            // SAFETY: read-only, and `mapped`'s contract is that nothing modifies the files
            // while they are sent (installed sets are immutable; deleting one keeps the
            // inode, and so the mapping, alive).
            let map = unsafe { memmap2::Mmap::map(&opened) }.map_err(IoError::with("map", path))?;
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
        let mut file = File::open(&path).map_err(IoError::with("open", &path))?;
        file.seek(SeekFrom::Start(at.offset))
            .map_err(IoError::with("seek", &path))?;
        file.take(len as u64)
            .read_to_end(&mut data)
            .map_err(IoError::with("read", &path))?;
        if data.len() != len {
            return Err(
                IoError::new("read", path, std::io::ErrorKind::UnexpectedEof.into()).into(),
            );
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
