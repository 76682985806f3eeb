//! A node's snapshot store in the simulator, in memory.

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_snapshot::{Ack, Chunk, Position, SnapshotMeta};

/// A node's snapshot store, in memory; like a disk, it survives crashes. It receives a
/// transfer as `strata_snapshot::Receiver` does: chunks only at the expected position,
/// duplicates acknowledged and ignored, a gap answered with the position needed, each file's
/// checksum verified when it completes, and the set installed only whole and only if newer
/// (`tests/sim_store.rs` checks it against the real receiver).
#[derive(Debug, Clone, Default)]
pub struct SimStore {
    /// Sets kept, by id: metadata and each file's contents.
    pub sets: BTreeMap<u64, (SnapshotMeta, Vec<Bytes>)>,
    /// The installed set.
    pub current: Option<u64>,
    /// A transfer being received: its metadata, the files so far, the next position.
    pub staging: Option<(SnapshotMeta, Vec<Vec<u8>>, Position)>,
}

impl SimStore {
    /// The installed set's metadata.
    pub fn current_meta(&self) -> Option<&SnapshotMeta> {
        self.current
            .and_then(|id| self.sets.get(&id))
            .map(|(meta, _)| meta)
    }

    fn skip_empty(meta: &SnapshotMeta, mut file: u32) -> Position {
        while meta.files.get(file as usize).is_some_and(|f| f.size == 0) {
            file += 1;
        }
        Position { file, offset: 0 }
    }

    /// Installs `meta` with `files` if it is newer than the current set.
    pub fn install(&mut self, meta: SnapshotMeta, files: Vec<Bytes>) {
        if self
            .current_meta()
            .is_some_and(|c| c.last_index >= meta.last_index)
        {
            return;
        }
        self.current = Some(meta.id);
        self.sets.insert(meta.id, (meta, files));
    }

    /// Stages a chunk of `meta`.
    pub fn stage(&mut self, meta: &SnapshotMeta, chunk: &Chunk) -> Ack {
        if self.current_meta() == Some(meta) {
            return Ack::Complete;
        }
        if self.staging.as_ref().is_none_or(|(m, _, _)| m != meta) {
            let start = Self::skip_empty(meta, 0);
            self.staging = Some((meta.clone(), vec![Vec::new(); meta.files.len()], start));
        }
        let Some((staged, files, next)) = &mut self.staging else {
            return Ack::Gap {
                need: Position { file: 0, offset: 0 },
            };
        };
        let at = Position {
            file: chunk.file,
            offset: chunk.offset,
        };
        let end = staged.files.len() as u32;
        if next.file < end {
            if crc32fast::hash(&chunk.data) != chunk.crc || at > *next {
                return Ack::Gap { need: *next };
            }
            if at < *next {
                return Ack::Duplicate { next: *next };
            }
            let info = &staged.files[at.file as usize];
            let file = &mut files[at.file as usize];
            if file.len() as u64 + chunk.data.len() as u64 > info.size {
                return Ack::Gap { need: *next };
            }
            file.extend_from_slice(&chunk.data);
            next.offset = file.len() as u64;
            if next.offset < info.size {
                return Ack::Accepted { next: *next };
            }
            if crc32fast::hash(file) != info.crc {
                file.clear();
                next.offset = 0;
                return Ack::Gap { need: *next };
            }
            *next = Self::skip_empty(staged, at.file + 1);
            if next.file < end {
                return Ack::Accepted { next: *next };
            }
        }
        let Some((meta, files, _)) = self.staging.take() else {
            return Ack::Complete;
        };
        self.install(meta, files.into_iter().map(Bytes::from).collect());
        Ack::Complete
    }

    /// The data of the chunk at `at` of set `id`, `chunk_bytes` long at most.
    pub(super) fn read(&self, id: u64, at: Position, chunk_bytes: usize) -> Option<Bytes> {
        let (_, files) = self.sets.get(&id)?;
        let Some(file) = files.get(at.file as usize) else {
            return Some(Bytes::new());
        };
        let from = usize::try_from(at.offset).ok()?.min(file.len());
        let to = (from + chunk_bytes).min(file.len());
        Some(file.slice(from..to))
    }
}
