//! `Db::ingest`: another store's tables installed as newer than everything local, atomically,
//! at any level; bad input is refused with nothing installed.

use std::ops::Bound;
use std::path::{Path, PathBuf};

use strata_lsm::{Db, Direction, Error, Options, WriteOptions};

const W: WriteOptions = WriteOptions { sync: false };

/// A store in `dir` with `writes` (None deletes), flushed in two parts so that its tables
/// overlap; returns its table paths.
fn source_tables(dir: &Path, writes: &[(&str, Option<&str>)]) -> (Db, Vec<PathBuf>) {
    let db = Db::open(dir, Options::default()).expect("open source");
    for (i, (k, v)) in writes.iter().enumerate() {
        if i == writes.len() / 2 {
            db.flush().expect("flush");
        }
        match v {
            Some(v) => db.put(k.as_bytes(), v.as_bytes(), W).expect("put"),
            None => db.delete(k.as_bytes(), W).expect("delete"),
        };
    }
    db.flush().expect("flush");
    let paths = db.live_files().into_iter().map(|f| f.path).collect();
    (db, paths)
}

/// How many table files `dir` holds.
fn tables_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "sst")
        })
        .count()
}

fn get(db: &Db, k: &str) -> Option<String> {
    db.get(k.as_bytes())
        .expect("get")
        .map(|v| String::from_utf8(v).expect("utf-8"))
}

fn all(db: &Db) -> Vec<(String, String)> {
    let mut out = Vec::new();
    db.scan(
        Bound::Unbounded,
        Bound::Unbounded,
        Direction::Forward,
        |k, v| {
            out.push((
                String::from_utf8(k.to_vec()).expect("utf-8"),
                String::from_utf8(v.to_vec()).expect("utf-8"),
            ));
            true
        },
    )
    .expect("scan");
    out
}

/// A store with versions of `a`..`e` in a memtable, level 0 and level 1.
fn layered_store(dir: &Path) -> Db {
    let db = Db::open(dir, Options::default()).expect("open");
    for k in ["a", "b", "c", "d", "e"] {
        db.put(k.as_bytes(), b"deep", W).expect("put");
    }
    db.flush().expect("flush");
    db.compact().expect("compact to level 1");
    assert_eq!(db.live_files()[0].level, 1);
    for k in ["b", "c"] {
        db.put(k.as_bytes(), b"level0", W).expect("put");
    }
    db.flush().expect("flush");
    db.put(b"c", b"memtable", W).expect("put");
    db
}

#[test]
fn ingested_data_wins_over_every_local_layer_at_every_level() {
    for level in 0..7 {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = layered_store(&dir.path().join("db"));
        let before = db.snapshot();
        let (_source, files) = source_tables(
            &dir.path().join("source"),
            &[
                ("a", Some("old")),
                ("b", Some("ingested")),
                ("c", Some("ingested")),
                ("a", Some("ingested")), // the newer version of `a` in the source wins
                ("d", None),
            ],
        );
        let installed = db.ingest(level, &files).expect("ingest");
        assert!(!installed.is_empty());
        let want = vec![
            ("a".to_owned(), "ingested".to_owned()),
            ("b".to_owned(), "ingested".to_owned()),
            ("c".to_owned(), "ingested".to_owned()),
            ("e".to_owned(), "deep".to_owned()),
        ];
        assert_eq!(all(&db), want, "level {level}");
        assert_eq!(
            get(&db, "d"),
            None,
            "level {level}: the ingested tombstone deletes"
        );
        // A snapshot from before sees none of it.
        assert_eq!(before.get(b"a").expect("get"), Some(b"deep".to_vec()));
        assert_eq!(before.get(b"c").expect("get"), Some(b"memtable".to_vec()));
        assert_eq!(before.get(b"d").expect("get"), Some(b"deep".to_vec()));
        drop(before);
        // Later writes are newer than the ingest.
        db.put(b"b", b"after", W).expect("put");
        assert_eq!(get(&db, "b").as_deref(), Some("after"));
        drop(db);
        let db = Db::open(&dir.path().join("db"), Options::default()).expect("reopen");
        assert_eq!(get(&db, "b").as_deref(), Some("after"), "level {level}");
        assert_eq!(get(&db, "a").as_deref(), Some("ingested"), "level {level}");
        assert_eq!(get(&db, "d"), None, "level {level}");
        db.compact().expect("compact");
        assert_eq!(get(&db, "c").as_deref(), Some("ingested"), "level {level}");
        assert_eq!(get(&db, "e").as_deref(), Some("deep"), "level {level}");
    }
}

#[test]
fn a_corrupt_ingest_file_is_refused_and_nothing_is_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("open");
    db.put(b"a", b"local", W).expect("put");
    let (_source, files) = source_tables(
        &dir.path().join("source"),
        &[("a", Some("ingested")), ("b", Some("ingested"))],
    );
    // Flip a bit in the first data block of one input.
    let mut bytes = std::fs::read(&files[0]).expect("read");
    bytes[4] ^= 0x10;
    std::fs::write(&files[0], &bytes).expect("write");
    let err = db.ingest(1, &files).expect_err("a corrupt input");
    assert!(
        matches!(err, Error::Table(_) | Error::Corruption { .. }),
        "{err:?}"
    );
    assert_eq!(get(&db, "a").as_deref(), Some("local"));
    assert_eq!(get(&db, "b"), None);
    db.put(b"c", b"still writable", W).expect("put");
    // Nothing is left behind: the only tables are the store's own.
    assert_eq!(tables_in(&dir.path().join("db")), db.live_files().len());

    let missing = dir.path().join("no-such.sst");
    assert!(db.ingest(0, &[missing]).is_err());
    assert!(matches!(
        db.ingest(7, &files),
        Err(Error::NoSuchLevel { level: 7, last: 6 })
    ));
    assert!(
        db.ingest(0, &[] as &[PathBuf])
            .expect("nothing to ingest")
            .is_empty()
    );
}

#[test]
fn ingesting_a_checkpoint_reproduces_its_contents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Db::open(&dir.path().join("source"), Options::default()).expect("open");
    for i in 0..2000u32 {
        source
            .put(format!("k{i:05}").as_bytes(), &i.to_le_bytes(), W)
            .expect("put");
        if i % 500 == 499 {
            source.flush().expect("flush");
        }
    }
    source.compact().expect("compact");
    for i in (0..2000u32).step_by(3) {
        source
            .delete(format!("k{i:05}").as_bytes(), W)
            .expect("delete");
    }
    source.flush().expect("flush");
    let files: Vec<PathBuf> = source.live_files().into_iter().map(|f| f.path).collect();
    assert!(files.len() > 1, "tables from more than one level");
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("open");
    db.ingest(6, &files).expect("ingest");
    let collect = |db: &Db| {
        let mut out = Vec::new();
        db.scan(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                true
            },
        )
        .expect("scan");
        out
    };
    assert_eq!(collect(&db), collect(&source));
    assert!(db.stats().ingested_bytes > 0);
}

#[test]
fn damage_deep_in_an_input_leaves_no_partial_output_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        compaction: strata_lsm::CompactionOptions {
            // Many small outputs, so that several are finished before the damage is reached.
            target_file_bytes: 4096,
            ..strata_lsm::CompactionOptions::default()
        },
        ..Options::default()
    };
    let source = Db::open(&dir.path().join("source"), Options::default()).expect("open");
    for i in 0..2000u32 {
        source
            .put(format!("k{i:05}").as_bytes(), &[7; 64], W)
            .expect("put");
    }
    let file = source.flush().expect("flush")[0].clone();
    let path = source.live_files()[0].path.clone();
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[usize::try_from(file.size / 2).expect("fits")] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let db = Db::open(&dir.path().join("db"), options()).expect("open");
    assert!(db.ingest(1, &[path]).is_err());
    let tables = tables_in(&dir.path().join("db"));
    assert_eq!(
        tables, 0,
        "the outputs written before the damage are removed"
    );
    assert!(db.live_files().is_empty());
}
