//! [`LruBlockCache`]: a shared block cache with a byte budget, least recently used out first.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use strata_sstable::{BlockCache, CachedBlock};

/// At most this many shards, each with its own lock, so concurrent readers rarely contend.
const SHARDS_MAX: usize = 16;
/// Each shard holds at least this much, so that a small cache still fits whole blocks.
const SHARD_BYTES_MIN: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<(u64, u64), (CachedBlock, usize, u64)>,
    /// Last-use tick to key: the first entry is the least recently used.
    order: BTreeMap<u64, (u64, u64)>,
    /// Blocks per table, so that evicting a table skips the shards that hold none of it.
    per_table: HashMap<u64, usize>,
    bytes: usize,
    tick: u64,
}

impl Shard {
    fn forget(&mut self, table_id: u64) {
        if let Some(count) = self.per_table.get_mut(&table_id) {
            *count -= 1;
            if *count == 0 {
                self.per_table.remove(&table_id);
            }
        }
    }
}

/// Verified data blocks shared by every table of a store, within a byte budget.
#[derive(Debug)]
pub struct LruBlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_bytes_max: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl LruBlockCache {
    /// A cache holding at most about `capacity_bytes` of blocks.
    pub fn new(capacity_bytes: usize) -> Self {
        let shards = (capacity_bytes / SHARD_BYTES_MIN).clamp(1, SHARDS_MAX);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            shard_bytes_max: capacity_bytes / shards,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard(&self, table_id: u64, offset: u64) -> &Mutex<Shard> {
        let h = table_id
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(offset >> 12);
        &self.shards[(h >> 59) as usize % self.shards.len()]
    }

    /// Lookups that found their block.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

impl BlockCache for LruBlockCache {
    fn get(&self, table_id: u64, offset: u64) -> Option<CachedBlock> {
        let mut shard = self.shard(table_id, offset).lock();
        shard.tick += 1;
        let tick = shard.tick;
        let Some((block, _, last)) = shard.entries.get_mut(&(table_id, offset)) else {
            drop(shard);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let old = std::mem::replace(last, tick);
        let block = block.clone();
        shard.order.remove(&old);
        shard.order.insert(tick, (table_id, offset));
        drop(shard);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(block)
    }

    fn evict_table(&self, table_id: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            if shard.per_table.remove(&table_id).is_none() {
                continue;
            }
            let shard = &mut *shard;
            let (order, bytes) = (&mut shard.order, &mut shard.bytes);
            shard.entries.retain(|&(table, _), (_, charge, tick)| {
                if table != table_id {
                    return true;
                }
                order.remove(tick);
                *bytes -= *charge;
                false
            });
        }
    }

    fn insert(&self, table_id: u64, offset: u64, block: CachedBlock) {
        let charge = block.charge();
        if charge > self.shard_bytes_max {
            return; // Larger than the whole shard: caching it would evict everything.
        }
        let mut shard = self.shard(table_id, offset).lock();
        shard.tick += 1;
        let tick = shard.tick;
        if let Some((_, old_charge, old_tick)) = shard
            .entries
            .insert((table_id, offset), (block, charge, tick))
        {
            shard.order.remove(&old_tick);
            shard.bytes -= old_charge;
        } else {
            *shard.per_table.entry(table_id).or_insert(0) += 1;
        }
        shard.order.insert(tick, (table_id, offset));
        shard.bytes += charge;
        while shard.bytes > self.shard_bytes_max {
            let Some((_, key)) = shard.order.pop_first() else {
                break;
            };
            if let Some((_, c, _)) = shard.entries.remove(&key) {
                shard.bytes -= c;
                shard.forget(key.0);
            }
        }
    }
}
