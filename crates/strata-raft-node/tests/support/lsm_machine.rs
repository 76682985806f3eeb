//! A Raft state machine on `strata-lsm` (the server grows its own): each applied batch is one
//! `WriteBatch` holding the batch's commands and its last index, so the applied index is
//! durable exactly as far as the data is; snapshots are LSM captures (taken on the apply path,
//! written as a flat file set off it), and a restore swaps the whole store for the snapshot's
//! tables.
//!
//! A batch larger than one `WriteBatch` may hold goes as several, the applied index in the
//! last: a crash between them re-applies the whole batch, which puts and deletes in order
//! make harmless (each key ends as the batch left it).
//!
//! Commands: `[op: u8][key length: u16 LE][key][value]`, op 0 a put, 1 a delete (no value).
//! A command that does not decode changes nothing and is answered `bad command` (on every
//! node alike).

use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata_lsm::{Db, Options, WriteBatch, WriteOptions};
use strata_raft_node::{Committed, CommittedKind, SnapshotWriter, StateMachine};

/// Where the applied index (and its term) lives: outside the data keys, which all start
/// with `DATA_PREFIX`.
const APPLIED_KEY: &[u8] = b"m/applied";
const DATA_PREFIX: u8 = b'd';

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;

/// A put of `value` at `key`.
pub fn put(key: &[u8], value: &[u8]) -> Bytes {
    command(OP_PUT, key, value)
}

/// A delete of `key`.
pub fn delete(key: &[u8]) -> Bytes {
    command(OP_DELETE, key, &[])
}

fn command(op: u8, key: &[u8], value: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(3 + key.len() + value.len());
    out.push(op);
    out.extend_from_slice(&u16::try_from(key.len()).expect("a short key").to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Bytes::from(out)
}

/// The state machine: a store and the last index it holds.
pub struct LsmMachine {
    db: Arc<Db>,
    applied: u64,
    /// The data key being built (reused: no allocation per command).
    key: Vec<u8>,
}

impl LsmMachine {
    /// Opens (or creates) the store in `dir`; its applied index is what it last wrote.
    pub fn open(dir: &Path, options: Options) -> io::Result<Self> {
        let db = Db::open(dir, options).map_err(io::Error::other)?;
        let applied = read_applied(&db)?;
        Ok(Self {
            db: Arc::new(db),
            applied,
            key: Vec::new(),
        })
    }

    /// The store (to read it).
    pub fn db(&self) -> Arc<Db> {
        Arc::clone(&self.db)
    }

    /// The value at `key` in `db`.
    pub fn get(db: &Db, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut data_key = vec![DATA_PREFIX];
        data_key.extend_from_slice(key);
        db.get(&data_key).map_err(io::Error::other)
    }
}

fn read_applied(db: &Db) -> io::Result<u64> {
    match db.get(APPLIED_KEY).map_err(io::Error::other)? {
        None => Ok(0),
        Some(bytes) => bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a short applied index")),
    }
}

impl StateMachine for LsmMachine {
    async fn apply(&mut self, batch: Vec<Committed>) -> io::Result<Vec<Bytes>> {
        let Some((last, term)) = batch.last().map(|c| (c.index, c.term)) else {
            return Ok(Vec::new());
        };
        let max = self.db.batch_bytes_max();
        let mut writes = vec![WriteBatch::new()];
        let mut answers = Vec::with_capacity(batch.len());
        for entry in &batch {
            let CommittedKind::Command(command) = &entry.kind else {
                continue;
            };
            let parsed = command.split_first().and_then(|(&op, rest)| {
                let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
                let key = rest.get(2..2 + len)?;
                Some((op, key, &rest[2 + len..]))
            });
            let Some((op, key, value)) = parsed.filter(|(op, _, _)| *op <= OP_DELETE) else {
                answers.push(Bytes::from_static(b"bad command"));
                continue;
            };
            self.key.clear();
            self.key.push(DATA_PREFIX);
            self.key.extend_from_slice(key);
            // Room for this command and the applied index (a key and 16 bytes, with the
            // per-operation estimate) in the last batch.
            let room = Db::batch_bytes(writes.last().expect("one batch at least"))
                + (self.key.len() + value.len() + APPLIED_KEY.len() + 16) * 2
                + 256;
            if room > max && !writes.last().is_some_and(WriteBatch::is_empty) {
                writes.push(WriteBatch::new());
            }
            let write = writes.last_mut().expect("one batch at least");
            if op == OP_PUT {
                write.put(&self.key, value);
            } else {
                write.delete(&self.key);
            }
            answers.push(Bytes::new());
        }
        // The applied index goes in the same batch as the data: durable together or not at
        // all.
        let mut applied = [0u8; 16];
        applied[..8].copy_from_slice(&last.to_le_bytes());
        applied[8..].copy_from_slice(&term.to_le_bytes());
        writes
            .last_mut()
            .expect("one batch at least")
            .put(APPLIED_KEY, &applied);
        let db = Arc::clone(&self.db);
        // Not synced: the Raft log is durable, and a store that loses its last batches (a
        // power cut) reports an older applied index, from which the node re-applies the log
        // (or restores a newer snapshot).
        tokio::task::spawn_blocking(move || {
            for write in writes {
                db.write(write, WriteOptions { sync: false })?;
            }
            Ok::<_, strata_lsm::Error>(())
        })
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
        self.applied = last;
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    async fn snapshot(&mut self) -> io::Result<SnapshotWriter> {
        let capture = self.db.capture();
        let applied = self.applied.to_le_bytes();
        Ok(Box::new(move |dir: &Path| {
            capture
                .write_to(dir, &[("raft_applied", &applied)])
                .map_err(io::Error::other)
        }))
    }

    async fn restore(&mut self, dir: &Path, files: &[String], last_index: u64) -> io::Result<()> {
        let db = Arc::clone(&self.db);
        let (dir, files) = (dir.to_path_buf(), files.to_vec());
        let applied = tokio::task::spawn_blocking(move || {
            db.restore(&dir, &files).map_err(io::Error::other)?;
            read_applied(&db)
        })
        .await
        .map_err(io::Error::other)??;
        if applied != last_index {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the snapshot holds index {applied}, not {last_index}"),
            ));
        }
        self.applied = applied;
        Ok(())
    }
}
