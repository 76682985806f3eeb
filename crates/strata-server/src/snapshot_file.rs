//! The snapshot file Maintenance/Snapshot streams (`etcdctl snapshot save`) and
//! `strata snapshot restore` reads (`docs/formats/snapshot-file.md`):
//!
//! ```text
//! magic "STRATA-SNAPSHOT1" (16 bytes)
//! per file, in name order: name length u16 LE, name (UTF-8), size u64 LE, bytes
//! name length 0 (2 bytes): the end of the files
//! zero bytes up to a multiple of 512
//! SHA-256 of everything before (32 bytes)
//! ```
//!
//! The files are those of a Raft snapshot export (the LSM's tables and `meta`). The layout
//! keeps etcdctl's check (size ≡ 32 mod 512, the last 32 bytes a SHA-256 of the rest).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{Context, SHA256};

use crate::rpctypes::ApiError;
use crate::server::Inner;

/// The file's first bytes.
pub const MAGIC: &[u8; 16] = b"STRATA-SNAPSHOT1";

/// The padding unit, and the SHA-256's size.
const BLOCK_BYTES: u64 = 512;
const HASH_BYTES: u64 = 32;

/// A file name's longest length.
const NAME_BYTES_MAX: usize = 255;

/// How long an export may take.
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Distinguishes concurrent exports' directories.
static EXPORTS: AtomicU64 = AtomicU64::new(0);

/// An exported snapshot, ready to stream; its directory is removed when dropped.
#[derive(Debug)]
pub struct Export {
    dir: PathBuf,
    files: Vec<(String, u64)>,
}

impl Drop for Export {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Exports a snapshot of `inner`'s state into a private directory under its data dir.
///
/// # Errors
///
/// The node's, as an [`ApiError`].
pub async fn export(inner: &Inner) -> Result<Export, ApiError> {
    let n = EXPORTS.fetch_add(1, Ordering::Relaxed);
    let dir = inner
        .config
        .data_dir
        .join("member")
        .join(format!("export-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    inner.node.export_snapshot(&dir, EXPORT_TIMEOUT).await?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| ApiError::Internal(e.to_string()))? {
        let entry = entry.map_err(|e| ApiError::Internal(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = entry
            .metadata()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .len();
        files.push((name, size));
    }
    files.sort();
    Ok(Export { dir, files })
}

impl Export {
    /// The file's size.
    pub fn total_bytes(&self) -> u64 {
        let body: u64 = MAGIC.len() as u64
            + self
                .files
                .iter()
                .map(|(name, size)| 2 + name.len() as u64 + 8 + size)
                .sum::<u64>()
            + 2;
        body.div_ceil(BLOCK_BYTES) * BLOCK_BYTES + HASH_BYTES
    }

    /// Streams the file in blobs of at most `blob_bytes`: `send(blob, remaining_bytes)` until it
    /// returns false (the client went away).
    ///
    /// # Errors
    ///
    /// Reading the exported files failed.
    pub fn stream(
        &self,
        blob_bytes: usize,
        send: impl FnMut(Vec<u8>, u64) -> bool,
    ) -> io::Result<()> {
        let mut out = Blobs {
            blob: Vec::with_capacity(blob_bytes),
            blob_bytes,
            total: self.total_bytes(),
            sent: 0,
            written: 0,
            hash: Context::new(&SHA256),
            send,
            open: true,
        };
        out.put(MAGIC);
        let mut buf = vec![0u8; blob_bytes.clamp(4096, 1 << 20)];
        for (name, size) in &self.files {
            out.put(&(name.len() as u16).to_le_bytes());
            out.put(name.as_bytes());
            out.put(&size.to_le_bytes());
            let mut file = File::open(self.dir.join(name))?.take(*size);
            let mut copied = 0u64;
            while out.open {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                out.put(&buf[..n]);
            }
            if !out.open {
                return Ok(());
            }
            if copied != *size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{name} shrank while it was streamed"),
                ));
            }
        }
        out.put(&0u16.to_le_bytes());
        let padding = (BLOCK_BYTES - out.written % BLOCK_BYTES) % BLOCK_BYTES;
        out.put(&vec![0u8; padding as usize]);
        out.finish();
        Ok(())
    }
}

/// The stream's writer: cuts the bytes into blobs and hashes them.
struct Blobs<F: FnMut(Vec<u8>, u64) -> bool> {
    blob: Vec<u8>,
    blob_bytes: usize,
    total: u64,
    sent: u64,
    written: u64,
    hash: Context,
    send: F,
    /// False once the client went away.
    open: bool,
}

impl<F: FnMut(Vec<u8>, u64) -> bool> Blobs<F> {
    fn put(&mut self, bytes: &[u8]) {
        if !self.open {
            return;
        }
        self.hash.update(bytes);
        self.written += bytes.len() as u64;
        self.blob.extend_from_slice(bytes);
        if self.blob.len() >= self.blob_bytes {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let blob = std::mem::replace(&mut self.blob, Vec::with_capacity(self.blob_bytes));
        self.sent += blob.len() as u64;
        self.open = (self.send)(blob, self.total.saturating_sub(self.sent));
    }

    /// Appends the hash (not part of what it covers) and sends the rest.
    fn finish(mut self) {
        if !self.open {
            return;
        }
        let digest = self.hash.clone().finish();
        self.blob.extend_from_slice(digest.as_ref());
        self.flush();
        debug_assert!(
            !self.open || self.sent == self.total,
            "the size announced is the size sent"
        );
    }
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not a Strata snapshot file, or damaged.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Checks `file`'s hash and unpacks its files into `dir` (created); returns their names.
///
/// # Errors
///
/// [`SnapshotFileError`]: a damaged or foreign file (nothing is trusted before the hash
/// matches), or I/O.
pub fn unpack(file: &Path, dir: &Path) -> Result<Vec<String>, SnapshotFileError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SnapshotFileError::Io {
            path: path.clone(),
            source,
        }
    };
    let invalid = |reason: &str| SnapshotFileError::Invalid {
        path: file.to_path_buf(),
        reason: reason.to_owned(),
    };
    let size = std::fs::metadata(file).map_err(io_err(file))?.len();
    if size < MAGIC.len() as u64 + HASH_BYTES || size % BLOCK_BYTES != HASH_BYTES {
        return Err(invalid(
            "not a Strata snapshot file (its size is not 32 mod 512)",
        ));
    }
    // First pass: the hash over everything but the last 32 bytes.
    let mut reader = BufReader::new(File::open(file).map_err(io_err(file))?);
    let mut hash = Context::new(&SHA256);
    let mut left = size - HASH_BYTES;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        reader.read_exact(&mut buf[..n]).map_err(io_err(file))?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut stored = [0u8; HASH_BYTES as usize];
    reader.read_exact(&mut stored).map_err(io_err(file))?;
    if hash.finish().as_ref() != stored {
        return Err(invalid(
            "the SHA-256 at its end does not match: the file is damaged",
        ));
    }
    // Second pass: the files.
    let mut reader = BufReader::new(File::open(file).map_err(io_err(file))?);
    let mut magic = [0u8; 16];
    reader.read_exact(&mut magic).map_err(io_err(file))?;
    if &magic != MAGIC {
        return Err(invalid("not a Strata snapshot file (bad magic)"));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut names = Vec::new();
    loop {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).map_err(io_err(file))?;
        let len = u16::from_le_bytes(len) as usize;
        if len == 0 {
            break;
        }
        if len > NAME_BYTES_MAX {
            return Err(invalid("a file name that is too long"));
        }
        let mut name = vec![0u8; len];
        reader.read_exact(&mut name).map_err(io_err(file))?;
        let name = String::from_utf8(name).map_err(|_| invalid("a file name that is not UTF-8"))?;
        if name.contains('/') || name == "." || name == ".." {
            return Err(invalid("a file name with a path in it"));
        }
        let mut size = [0u8; 8];
        reader.read_exact(&mut size).map_err(io_err(file))?;
        let size = u64::from_le_bytes(size);
        let path = dir.join(&name);
        let mut out = File::create(&path).map_err(io_err(&path))?;
        let copied = io::copy(&mut (&mut reader).take(size), &mut out).map_err(io_err(&path))?;
        if copied != size {
            return Err(invalid("a file cut short"));
        }
        out.flush().map_err(io_err(&path))?;
        strata_fs::sync_file(&out, &path)
            .map_err(|e| io_err(&path)(io::Error::other(e.to_string())))?;
        names.push(name);
    }
    strata_fs::sync_dir(dir).map_err(|e| io_err(dir)(io::Error::other(e.to_string())))?;
    Ok(names)
}
