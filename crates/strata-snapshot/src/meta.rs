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
