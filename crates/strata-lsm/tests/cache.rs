//! The shared block cache: a byte budget, and eviction of a table's blocks once the table is
//! gone (a cached block of an uncompressed table keeps the table's whole mapping alive).

use std::sync::Arc;

use strata_lsm::LruBlockCache;
use strata_sstable::{BlockCache, ReadOptions, Table, TableBuilder, TableOptions};

fn table(dir: &std::path::Path, id: u64, cache: &Arc<LruBlockCache>) -> Table {
    let path = dir.join(format!("{id}.sst"));
    let mut builder = TableBuilder::create(&path, TableOptions::default()).expect("create");
    for i in 0..2000u32 {
        builder
            .add(format!("key{i:06}").as_bytes(), &[id as u8; 100])
            .expect("add");
    }
    builder.finish().expect("finish");
    Table::open(
        &path,
        ReadOptions {
            table_id: id,
            cache: Some(Arc::clone(cache) as Arc<dyn BlockCache>),
            ..ReadOptions::default()
        },
    )
    .expect("open")
}

#[test]
fn evicting_a_table_drops_its_blocks_and_only_its() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(LruBlockCache::new(64 * 1024 * 1024));
    let one = table(dir.path(), 1, &cache);
    let two = table(dir.path(), 2, &cache);
    assert_eq!(one.iter().count(), 2000);
    let after_one = cache.bytes();
    assert!(after_one > 0);
    assert_eq!(two.iter().count(), 2000);
    let both = cache.bytes();
    assert!(both > after_one);
    cache.evict_table(1);
    assert_eq!(cache.bytes(), both - after_one);
    // Table 2's blocks are still there: reading it again misses nothing.
    let misses = cache.misses();
    assert_eq!(two.iter().count(), 2000);
    assert_eq!(cache.misses(), misses);
    // Table 1's are not.
    assert_eq!(one.iter().count(), 2000);
    assert!(cache.misses() > misses);
}
