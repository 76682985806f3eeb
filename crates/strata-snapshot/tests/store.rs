//! The store's `CURRENT`: only a missing one means no snapshot; one that is damaged, names a
//! set that is not there, or cannot be read is an error, never taken for an empty store.

use std::path::Path;

use strata_snapshot::{Error, Receiver, describe};

/// A store at `root` with set 5 (last index 50) adopted into it.
fn store_with_a_set(root: &Path) -> Receiver {
    let mut store = Receiver::open(root).expect("open");
    let local = store.local_dir().expect("local");
    std::fs::write(local.join("a.sst"), vec![5u8; 700]).expect("write");
    let meta = describe(&local, 5, 50, 2, &["a.sst"]).expect("describe");
    assert!(store.adopt(&meta).expect("adopt"));
    store
}

#[test]
fn a_store_without_current_has_no_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = Receiver::open(root.path()).expect("open");
    assert!(store.installed().expect("installed").is_none());
}

#[test]
fn a_current_that_holds_no_id_is_corruption() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = store_with_a_set(root.path());
    for garbage in [&b"not a number"[..], b"", b"\xff\xfe5", b"-5"] {
        std::fs::write(root.path().join("CURRENT"), garbage).expect("damage");
        match store.installed() {
            Err(Error::Corruption { path, reason }) => {
                assert_eq!(path, root.path().join("CURRENT"), "{reason}");
            }
            other => panic!("CURRENT {garbage:?}: {other:?}"),
        }
    }
}

#[test]
fn a_current_naming_a_missing_set_is_corruption() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut store = store_with_a_set(root.path());
    std::fs::write(root.path().join("CURRENT"), b"6").expect("name set 6");
    assert!(matches!(
        store.installed(),
        Err(Error::Corruption { ref path, .. }) if *path == root.path().join("CURRENT")
    ));
    // Nor is it taken for an empty store by what calls it: a pin fails rather than removing
    // sets it would think unused.
    assert!(store.pin(&[1]).is_err());
    assert!(
        root.path()
            .join("snapshots")
            .join("5")
            .join("a.sst")
            .exists()
    );
}

#[test]
fn an_unreadable_current_is_an_io_error() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = Receiver::open(root.path()).expect("open");
    // A directory where CURRENT should be: it exists, but reading it fails.
    std::fs::create_dir(root.path().join("CURRENT")).expect("mkdir");
    match store.installed() {
        Err(Error::Io(e)) => assert_eq!(e.path, root.path().join("CURRENT")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_adopted_set_is_current_after_a_reopen() {
    let root = tempfile::tempdir().expect("tempdir");
    drop(store_with_a_set(root.path()));
    let store = Receiver::open(root.path()).expect("reopen");
    let (meta, dir) = store.installed().expect("installed").expect("a set");
    assert_eq!((meta.id, meta.last_index), (5, 50));
    assert_eq!(
        std::fs::read(dir.join("a.sst")).expect("read"),
        vec![5u8; 700]
    );
}
