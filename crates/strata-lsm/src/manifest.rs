//! The manifest: which tables make up the store, as a log of version edits.
//!
//! The manifest is a `strata-wal` log in the directory `manifest-NNNNNN/`; each record is one
//! encoded [`VersionEdit`] (format in `docs/formats/manifest.md`). The file `CURRENT` names the
//! live manifest directory and is replaced atomically (`strata_fs::atomic_replace`) when a new
//! manifest generation is written, which starts with a snapshot of the whole state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_fs::IoError;
use strata_wal::{Durability, Wal, WalOptions};

use crate::error::{Error, Result};

/// The number of levels.
pub const LEVELS: usize = 7;
/// The file naming the live manifest.
pub const CURRENT_FILE: &str = "CURRENT";
const EDIT_FORMAT_VERSION: u8 = 1;

const TAG_WAL_FLUSHED_LSN: u8 = 1;
const TAG_NEXT_FILE_NUMBER: u8 = 2;
const TAG_LAST_SEQ: u8 = 3;
const TAG_ADD_FILE: u8 = 4;
const TAG_DELETE_FILE: u8 = 5;
const TAG_PROPERTIES: u8 = 6;

/// A table in the store, as the manifest records it: what [`Db::flush`](crate::Db::flush) and
/// [`Db::ingest`](crate::Db::ingest) return and what a [`LiveFile`](crate::LiveFile) describes.
///
/// Its keys are internal keys: the user key with every `0x00` byte written as `0x00 0xFF`,
/// then `0x00 0x01`, then the sequence number and kind as 8 inverted big-endian bytes, so
/// that bytewise order is user-key order, newest version first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Its number: the file is `NNNNNN.sst`.
    pub number: u64,
    /// Its level.
    pub level: u8,
    /// Its size in bytes.
    pub size: u64,
    /// Its smallest and largest internal keys.
    pub smallest: Vec<u8>,
    /// See `smallest`.
    pub largest: Vec<u8>,
    /// Its smallest and largest sequence numbers.
    pub smallest_seq: u64,
    /// See `smallest_seq`.
    pub largest_seq: u64,
}

/// A change to the store's state, as one manifest record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    /// Every WAL record up to this LSN is in tables.
    pub wal_flushed_lsn: Option<u64>,
    /// The next unused file number.
    pub next_file_number: Option<u64>,
    /// The highest sequence number in tables.
    pub last_seq: Option<u64>,
    /// Tables added.
    pub added: Vec<FileMeta>,
    /// Tables removed, as `(level, number)`.
    pub deleted: Vec<(u8, u64)>,
    /// The properties of the snapshot the store was restored from ([`Db::restore`]), replacing
    /// the previous ones; `None` leaves them as they are.
    ///
    /// [`Db::restore`]: crate::Db::restore
    pub properties: Option<BTreeMap<String, Vec<u8>>>,
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("keys are at most 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        self.take(len).map(<[u8]>::to_vec)
    }
}

impl VersionEdit {
    /// Encodes the edit.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![EDIT_FORMAT_VERSION];
        for (tag, value) in [
            (TAG_WAL_FLUSHED_LSN, self.wal_flushed_lsn),
            (TAG_NEXT_FILE_NUMBER, self.next_file_number),
            (TAG_LAST_SEQ, self.last_seq),
        ] {
            if let Some(v) = value {
                out.push(tag);
                put_u64(&mut out, v);
            }
        }
        for f in &self.added {
            out.push(TAG_ADD_FILE);
            out.push(f.level);
            put_u64(&mut out, f.number);
            put_u64(&mut out, f.size);
            put_u64(&mut out, f.smallest_seq);
            put_u64(&mut out, f.largest_seq);
            put_bytes(&mut out, &f.smallest);
            put_bytes(&mut out, &f.largest);
        }
        for &(level, number) in &self.deleted {
            out.push(TAG_DELETE_FILE);
            out.push(level);
            put_u64(&mut out, number);
        }
        if let Some(properties) = &self.properties {
            out.push(TAG_PROPERTIES);
            let count =
                u32::try_from(properties.len()).expect("properties are at most 64 KiB in all");
            out.extend_from_slice(&count.to_le_bytes());
            for (name, value) in properties {
                put_bytes(&mut out, name.as_bytes());
                put_bytes(&mut out, value);
            }
        }
        out
    }

    /// Decodes an edit.
    ///
    /// # Errors
    ///
    /// What is wrong, for the caller to wrap with the manifest's name and the record's LSN.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let mut r = Reader { bytes };
        if r.u8() != Some(EDIT_FORMAT_VERSION) {
            return Err("unknown version edit format");
        }
        let mut edit = VersionEdit::default();
        let truncated = "version edit truncated";
        while let Some(tag) = r.u8() {
            match tag {
                TAG_WAL_FLUSHED_LSN => edit.wal_flushed_lsn = Some(r.u64().ok_or(truncated)?),
                TAG_NEXT_FILE_NUMBER => edit.next_file_number = Some(r.u64().ok_or(truncated)?),
                TAG_LAST_SEQ => edit.last_seq = Some(r.u64().ok_or(truncated)?),
                TAG_ADD_FILE => {
                    let level = r.u8().ok_or(truncated)?;
                    if usize::from(level) >= LEVELS {
                        return Err("table level out of range");
                    }
                    edit.added.push(FileMeta {
                        level,
                        number: r.u64().ok_or(truncated)?,
                        size: r.u64().ok_or(truncated)?,
                        smallest_seq: r.u64().ok_or(truncated)?,
                        largest_seq: r.u64().ok_or(truncated)?,
                        smallest: r.bytes().ok_or(truncated)?,
                        largest: r.bytes().ok_or(truncated)?,
                    });
                }
                TAG_DELETE_FILE => {
                    let level = r.u8().ok_or(truncated)?;
                    edit.deleted.push((level, r.u64().ok_or(truncated)?));
                }
                TAG_PROPERTIES => {
                    let count = r.u32().ok_or(truncated)?;
                    let mut properties = BTreeMap::new();
                    for _ in 0..count {
                        let name = String::from_utf8(r.bytes().ok_or(truncated)?)
                            .map_err(|_| "property name is not UTF-8")?;
                        properties.insert(name, r.bytes().ok_or(truncated)?);
                    }
                    edit.properties = Some(properties);
                }
                _ => return Err("unknown version edit tag"),
            }
        }
        Ok(edit)
    }
}

/// The store's state as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionState {
    /// Tables per level; level 0 newest first, other levels by smallest key.
    pub levels: Vec<Vec<FileMeta>>,
    /// Every WAL record up to this LSN is in tables.
    pub wal_flushed_lsn: u64,
    /// The next unused file number.
    pub next_file_number: u64,
    /// The highest sequence number in tables.
    pub last_seq: u64,
    /// The properties of the snapshot the store was last restored from (empty if never).
    pub properties: BTreeMap<String, Vec<u8>>,
}

impl Default for VersionState {
    fn default() -> Self {
        Self {
            levels: vec![Vec::new(); LEVELS],
            wal_flushed_lsn: 0,
            next_file_number: 1,
            last_seq: 0,
            properties: BTreeMap::new(),
        }
    }
}

impl VersionState {
    /// Applies an edit.
    ///
    /// # Errors
    ///
    /// A description if the edit contradicts the state (deletes a table that is not there,
    /// adds one twice).
    pub fn apply(&mut self, edit: &VersionEdit) -> Result<(), &'static str> {
        for &(level, number) in &edit.deleted {
            let files = self
                .levels
                .get_mut(usize::from(level))
                .ok_or("table level out of range")?;
            let before = files.len();
            files.retain(|f| f.number != number);
            if files.len() == before {
                return Err("edit deletes a table that is not in the store");
            }
        }
        for f in &edit.added {
            if self.levels.iter().flatten().any(|g| g.number == f.number) {
                return Err("edit adds a table twice");
            }
            let files = &mut self.levels[usize::from(f.level)];
            if f.level == 0 {
                files.insert(0, f.clone());
            } else {
                let at = files.partition_point(|g| g.smallest < f.smallest);
                files.insert(at, f.clone());
            }
            self.next_file_number = self.next_file_number.max(f.number + 1);
        }
        if let Some(v) = edit.wal_flushed_lsn {
            self.wal_flushed_lsn = self.wal_flushed_lsn.max(v);
        }
        if let Some(v) = edit.next_file_number {
            self.next_file_number = self.next_file_number.max(v);
        }
        if let Some(v) = edit.last_seq {
            self.last_seq = self.last_seq.max(v);
        }
        if let Some(properties) = &edit.properties {
            self.properties.clone_from(properties);
        }
        Ok(())
    }

    /// An edit that recreates this state from nothing: how a new manifest starts.
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            wal_flushed_lsn: Some(self.wal_flushed_lsn),
            next_file_number: Some(self.next_file_number),
            last_seq: Some(self.last_seq),
            // Oldest level-0 table first, so applying the adds in order rebuilds the order.
            added: self
                .levels
                .iter()
                .flat_map(|files| files.iter().rev())
                .cloned()
                .collect(),
            deleted: Vec::new(),
            properties: (!self.properties.is_empty()).then(|| self.properties.clone()),
        }
    }
}

/// The open manifest.
#[derive(Debug)]
pub struct Manifest {
    db_dir: PathBuf,
    generation: u64,
    /// `None` for a manifest only read ([`Manifest::read`]).
    log: Option<Wal>,
}

/// The generation `CURRENT` names; `None` if the store has none.
fn read_current(db_dir: &Path) -> Result<Option<u64>> {
    let current_path = db_dir.join(CURRENT_FILE);
    let current = match std::fs::read(&current_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(IoError::new("read", current_path, e).into());
        }
    };
    let corrupt_current = |reason| Error::Corruption {
        path: current_path.clone(),
        offset: 0,
        reason,
    };
    let name = std::str::from_utf8(&current)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or_else(|| corrupt_current("CURRENT is not one line"))?;
    let generation = name
        .strip_prefix("manifest-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| corrupt_current("CURRENT does not name a manifest"))?;
    Ok(Some(generation))
}

fn manifest_dir_name(generation: u64) -> String {
    format!("manifest-{generation:06}")
}

/// Removes manifest directories other than the live one: older ones a crash left after the
/// `CURRENT` swap, newer ones a crash left before it. Neither is or will be live.
fn remove_other_generations(db_dir: &Path, live: u64) -> Result<()> {
    let entries = std::fs::read_dir(db_dir).map_err(IoError::with("list", db_dir))?;
    let mut removed = false;
    for entry in entries {
        let entry = entry.map_err(IoError::with("list", db_dir))?;
        let name = entry.file_name();
        let generation = name
            .to_str()
            .and_then(|n| n.strip_prefix("manifest-"))
            .and_then(|n| n.parse::<u64>().ok());
        if generation.is_some_and(|g| g != live) {
            std::fs::remove_dir_all(entry.path())
                .map_err(|e| IoError::new("remove obsolete manifest", entry.path(), e))?;
            removed = true;
        }
    }
    if removed {
        strata_fs::sync_dir(db_dir)?;
    }
    Ok(())
}

/// The manifest log's segment size. Edits are small (a flush's is about a hundred bytes plus two
/// keys), and the store starts a new generation once they pass a few MiB, so one segment
/// usually holds a whole generation.
const SEGMENT_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The largest edit. The first edit of a generation lists every table in the store (each in
/// about 50 bytes plus its smallest and largest keys), so this bounds how many tables a store
/// can hold; recovery holds such an edit in memory.
const EDIT_BYTES_MAX: u32 = 256 * 1024 * 1024;

fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes_max: SEGMENT_BYTES_MAX,
        record_bytes_max: EDIT_BYTES_MAX,
        durability: Durability::Sync,
        ..WalOptions::default()
    }
}

impl Manifest {
    /// Opens the manifest of the store in `db_dir` and replays it; `None` if the store has no
    /// `CURRENT` yet (a new store).
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for a `CURRENT` or an edit that does not decode or apply; the log's
    /// own errors.
    pub fn open(db_dir: &Path) -> Result<Option<(Manifest, VersionState)>> {
        let Some(generation) = read_current(db_dir)? else {
            return Ok(None);
        };
        let dir = db_dir.join(manifest_dir_name(generation));
        remove_other_generations(db_dir, generation)?;
        let (log, _) = Wal::open(&dir, wal_options())?;
        let mut state = VersionState::default();
        for record in log.read_from(log.first_lsn())? {
            let (lsn, bytes) = record?;
            let corrupt = |reason| Error::Corruption {
                path: dir.clone(),
                offset: lsn,
                reason,
            };
            let edit = VersionEdit::decode(&bytes).map_err(corrupt)?;
            state.apply(&edit).map_err(corrupt)?;
        }
        Ok(Some((
            Manifest {
                db_dir: db_dir.to_path_buf(),
                generation,
                log: Some(log),
            },
            state,
        )))
    }

    /// Writes a new manifest generation holding `state`, makes it live by replacing `CURRENT`
    /// atomically, and removes the previous generation. Also how a new store starts.
    ///
    /// # Errors
    ///
    /// I/O and log errors; on failure before the swap the old manifest stays live.
    pub fn create(db_dir: &Path, generation: u64, state: &VersionState) -> Result<Manifest> {
        let dir = db_dir.join(manifest_dir_name(generation));
        if dir.exists() {
            // Left by a crash before an earlier swap: never live, safe to remove.
            std::fs::remove_dir_all(&dir).map_err(IoError::with("remove stale manifest", &dir))?;
        }
        let (log, _) = Wal::open(&dir, wal_options())?;
        log.append(&state.snapshot_edit().encode())?;
        strata_fs::atomic_replace(
            &db_dir.join(CURRENT_FILE),
            format!("{}\n", manifest_dir_name(generation)).as_bytes(),
        )?;
        if let Some(previous) = generation.checked_sub(1) {
            let old = db_dir.join(manifest_dir_name(previous));
            if old.exists() {
                std::fs::remove_dir_all(&old)
                    .map_err(IoError::with("remove old manifest", &old))?;
                strata_fs::sync_dir(db_dir)?;
            }
        }
        Ok(Manifest {
            db_dir: db_dir.to_path_buf(),
            generation,
            log: Some(log),
        })
    }

    /// Reads the manifest of the store in `db_dir` without changing anything (no file is
    /// created, removed or truncated: a torn last edit is left where it is and ignored, as
    /// [`open`](Self::open) would cut it); the manifest it returns refuses edits. `None` if
    /// the store has no `CURRENT`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn read(db_dir: &Path) -> Result<Option<(Manifest, VersionState)>> {
        let Some(generation) = read_current(db_dir)? else {
            return Ok(None);
        };
        let dir = db_dir.join(manifest_dir_name(generation));
        let mut state = VersionState::default();
        let mut failure = None;
        strata_wal::scan_log(
            &dir,
            |_, _| {},
            |lsn, bytes| {
                if failure.is_some() {
                    return;
                }
                let applied = VersionEdit::decode(bytes).and_then(|edit| state.apply(&edit));
                if let Err(reason) = applied {
                    failure = Some(Error::Corruption {
                        path: dir.clone(),
                        offset: lsn,
                        reason,
                    });
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Some((
            Manifest {
                db_dir: db_dir.to_path_buf(),
                generation,
                log: None,
            },
            state,
        )))
    }

    /// Appends an edit durably.
    ///
    /// # Errors
    ///
    /// [`Error::OpenedReadOnly`] for a manifest from [`read`](Self::read); the log's errors
    /// (a failed fsync poisons it).
    pub fn append(&self, edit: &VersionEdit) -> Result<()> {
        let log = self.log.as_ref().ok_or(Error::OpenedReadOnly)?;
        log.append(&edit.encode())?;
        Ok(())
    }

    /// The live generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of edits in the live generation, to decide when to write a new one.
    pub fn bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, |log| log.metrics().bytes)
    }

    /// The store's directory.
    pub fn db_dir(&self) -> &Path {
        &self.db_dir
    }
}
