//! The LSM benchmark's workloads (`crates/strata-lsm/benches/common/workloads.rs`) on fjall,
//! with the settings Strata and RocksDB get: a 32 MiB block cache, 64 MiB memtables, no
//! compression, 10-bit bloom filters on every level. `cargo xtask bench lsm` builds this and
//! runs it as a child process of the Strata benchmark, which measures its peak memory and the
//! bytes it writes.
//!
//! Durability is matched too: every write is handed to the operating system before it returns
//! (`PersistMode::Buffer`), so that it survives a process crash as it does in Strata and in
//! RocksDB with `--sync=0`; `fillsync` waits for `fdatasync` (`PersistMode::SyncData`).

use std::path::Path;
use std::time::{Duration, Instant};

use fjall::config::{BloomConstructionPolicy, FilterPolicy, FilterPolicyEntry};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

#[path = "../../../crates/strata-lsm/benches/common/workloads.rs"]
mod workloads;

struct Fjall {
    db: Database,
    keyspace: Keyspace,
}

fn open(dir: &Path) -> Fjall {
    let db = Database::builder(dir)
        .cache_size(32 * 1024 * 1024)
        .open()
        .expect("open fjall");
    let keyspace = db
        .keyspace("bench", || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(64 * 1024 * 1024)
                .filter_policy(FilterPolicy::all(FilterPolicyEntry::Bloom(
                    BloomConstructionPolicy::BitsPerKey(10.0),
                )))
        })
        .expect("open keyspace");
    Fjall { db, keyspace }
}

impl workloads::Engine for Fjall {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.keyspace.insert(key, value).expect("insert");
        // Hand the journal to the operating system, as Strata and RocksDB (`--sync=0`) do
        // before a write returns: without this, fjall keeps acknowledged writes in a
        // user-space buffer, and a process crash loses them.
        self.db.persist(PersistMode::Buffer).expect("persist");
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) {
        self.keyspace.insert(key, value).expect("insert");
        self.db.persist(PersistMode::SyncData).expect("persist");
    }

    fn get(&self, key: &[u8]) -> bool {
        self.keyspace.get(key).expect("get").is_some()
    }

    fn seek_scan(&self, key: &[u8], n: usize) -> usize {
        let mut seen = 0;
        for guard in self.keyspace.range(key..).take(n) {
            let (k, v) = guard.into_inner().expect("read");
            std::hint::black_box((k, v));
            seen += 1;
        }
        seen
    }

    fn settle(&self) {
        // fjall has no call that waits for its background work, and no count of compactions
        // queued but not started: wait (bounded) until no flush is queued, no compaction
        // runs and none has finished for half a second.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut quiet_since = Instant::now();
        let mut completed = self.db.compactions_completed();
        loop {
            let busy = self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0;
            let now_completed = self.db.compactions_completed();
            if busy || now_completed != completed {
                completed = now_completed;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= Duration::from_millis(500) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fjall's background work did not finish in 300 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn main() {
    if !workloads::child(&open) {
        eprintln!("usage: strata-bench-fjall --child main|writes --dir DIR --keys N");
        std::process::exit(2);
    }
}
