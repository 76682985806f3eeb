//! `available_bytes` reports the space left, and it falls as a file takes space.

use std::io::Write;

#[test]
fn available_bytes_falls_when_a_file_takes_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chunk = vec![7u8; 1 << 20];
    // 64 MiB written and synced: the file system has that much less. Other writers on the
    // machine move the figure too, so a loose margin, and three tries before failing.
    let mut seen = Vec::new();
    for attempt in 0..3 {
        let before = strata_fs::available_bytes(dir.path()).expect("statvfs");
        assert!(before > 0, "a writable directory has some space");
        let path = dir.path().join(format!("big{attempt}"));
        let mut f = std::fs::File::create(&path).expect("create");
        for _ in 0..64 {
            f.write_all(&chunk).expect("write");
        }
        strata_fs::sync_file(&f, &path).expect("sync");
        let after = strata_fs::available_bytes(dir.path()).expect("statvfs");
        if after + 32 * (1 << 20) < before {
            return;
        }
        seen.push((before, after));
    }
    panic!("64 MiB written each time, yet available went (before, after): {seen:?}");
}

#[test]
fn available_bytes_of_a_missing_path_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(strata_fs::available_bytes(&dir.path().join("missing")).is_err());
}
