//! A flipped bit in a table or the manifest gives a typed error; the store never returns wrong
//! data.

use strata_lsm::{Db, Error, Options, WriteOptions};

fn filled(dir: &std::path::Path) {
    let db = Db::open(dir, Options::default()).expect("open");
    for i in 0..2000u32 {
        db.put(
            format!("k{i:05}").as_bytes(),
            &[7u8; 64],
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.flush().expect("flush");
}

fn files_with(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

#[test]
fn a_flipped_bit_in_a_table_is_an_error_never_wrong_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    filled(dir.path());
    let table = files_with(dir.path(), ".sst").pop().expect("a table");
    let mut bytes = std::fs::read(&table).expect("read");
    bytes[1000] ^= 0x04; // inside a data block
    std::fs::write(&table, bytes).expect("write");
    let db = Db::open(dir.path(), Options::default()).expect("metadata is intact");
    let mut errors = 0;
    for i in 0..2000u32 {
        match db.get(format!("k{i:05}").as_bytes()) {
            Ok(Some(v)) => assert_eq!(v, vec![7u8; 64], "wrong data for k{i:05}"),
            Ok(None) => panic!("k{i:05} lost without an error"),
            Err(Error::Table(_)) => errors += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(errors > 0, "the damaged block was never reported");
}

#[test]
fn a_flipped_bit_in_the_manifest_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    filled(dir.path());
    {
        // A second edit after the first, so the damaged one is provably synced.
        let db = Db::open(dir.path(), Options::default()).expect("open");
        db.put(b"more", b"x", WriteOptions::default()).expect("put");
        db.flush().expect("flush");
    }
    let manifest_dir = files_with(dir.path(), "")
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("manifest-"))
        })
        .expect("a manifest");
    let segment = files_with(&manifest_dir, ".wal").remove(0);
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[32 + 24 + 3] ^= 0x01; // inside the first edit
    std::fs::write(&segment, bytes).expect("write");
    assert!(matches!(
        Db::open(dir.path(), Options::default()),
        Err(Error::Wal(_) | Error::Corruption { .. })
    ));
}
