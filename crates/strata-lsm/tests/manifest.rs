//! The manifest against a model: random edits, new generations and reopens replay to the state
//! the edits describe; damage gives typed errors.

use proptest::prelude::*;
use strata_lsm::Error;
use strata_lsm::manifest::{FileMeta, Manifest, VersionEdit, VersionState};

#[derive(Debug, Clone)]
enum Op {
    Add {
        level: u8,
        keys: (u8, u8),
    },
    DeleteOldest,
    Lsn(u64),
    /// A restore's properties (replacing the previous ones; none empties them).
    Properties(Vec<(String, Vec<u8>)>),
    Rewrite,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..7, any::<(u8, u8)>()).prop_map(|(level, keys)| Op::Add { level, keys }),
        2 => Just(Op::DeleteOldest),
        1 => (0u64..1000).prop_map(Op::Lsn),
        1 => proptest::collection::vec(("[a-z.]{0,8}", proptest::collection::vec(any::<u8>(), 0..8)), 0..3)
            .prop_map(Op::Properties),
        1 => Just(Op::Rewrite),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn manifest_replays_to_the_state_its_edits_describe(ops in proptest::collection::vec(op(), 0..30)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut model = VersionState::default();
        let mut manifest = Manifest::create(dir.path(), 1, &model).expect("create");
        for op in ops {
            let edit = match op {
                Op::Add { level, keys: (a, b) } => {
                    let (lo, hi) = (a.min(b), a.max(b));
                    let number = model.next_file_number;
                    Some(VersionEdit {
                        added: vec![FileMeta {
                            number,
                            level,
                            size: u64::from(hi) * 100,
                            smallest: vec![lo],
                            largest: vec![hi],
                            smallest_seq: number,
                            largest_seq: number + 5,
                        }],
                        next_file_number: Some(number + 1),
                        last_seq: Some(number + 5),
                        ..VersionEdit::default()
                    })
                }
                Op::DeleteOldest => model
                    .levels
                    .iter()
                    .flatten()
                    .min_by_key(|f| f.number)
                    .map(|f| VersionEdit {
                        deleted: vec![(f.level, f.number)],
                        ..VersionEdit::default()
                    }),
                Op::Lsn(lsn) => Some(VersionEdit {
                    wal_flushed_lsn: Some(lsn),
                    ..VersionEdit::default()
                }),
                Op::Properties(properties) => Some(VersionEdit {
                    properties: Some(properties.into_iter().collect()),
                    ..VersionEdit::default()
                }),
                Op::Rewrite => {
                    let next = manifest.generation() + 1;
                    drop(manifest);
                    manifest = Manifest::create(dir.path(), next, &model).expect("rewrite");
                    None
                }
                Op::Reopen => {
                    drop(manifest);
                    let (reopened, state) = Manifest::open(dir.path())
                        .expect("open")
                        .expect("exists");
                    prop_assert_eq!(&state, &model);
                    manifest = reopened;
                    None
                }
            };
            if let Some(edit) = edit {
                prop_assert_eq!(VersionEdit::decode(&edit.encode()), Ok(edit.clone()));
                manifest.append(&edit).expect("append");
                model.apply(&edit).expect("a consistent edit");
            }
        }
        drop(manifest);
        let (_, state) = Manifest::open(dir.path()).expect("open").expect("exists");
        prop_assert_eq!(state, model);
        // Exactly one manifest generation is left on disk.
        let generations = std::fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .starts_with("manifest-")
            })
            .count();
        prop_assert_eq!(generations, 1);
    }

    #[test]
    fn every_truncation_of_an_edit_is_an_error(cut in 0usize..200) {
        let edit = VersionEdit {
            wal_flushed_lsn: Some(3),
            added: vec![FileMeta {
                number: 1,
                level: 2,
                size: 10,
                smallest: b"abc".to_vec(),
                largest: b"xyz".to_vec(),
                smallest_seq: 1,
                largest_seq: 2,
            }],
            deleted: vec![(1, 9)],
            ..VersionEdit::default()
        };
        let bytes = edit.encode();
        if cut < bytes.len() {
            // A cut at a field boundary can still decode (to a smaller edit); it must never
            // decode to this edit, and never panic.
            prop_assert_ne!(VersionEdit::decode(&bytes[..cut]), Ok(edit));
        }
    }
}

#[test]
fn a_damaged_current_file_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Manifest::create(dir.path(), 1, &VersionState::default()).expect("create"));
    std::fs::write(dir.path().join("CURRENT"), b"nonsense").expect("write");
    assert!(matches!(
        Manifest::open(dir.path()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn an_edit_that_contradicts_the_state_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = Manifest::create(dir.path(), 1, &VersionState::default()).expect("create");
    manifest
        .append(&VersionEdit {
            deleted: vec![(0, 42)],
            ..VersionEdit::default()
        })
        .expect("append");
    drop(manifest);
    assert!(matches!(
        Manifest::open(dir.path()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_new_store_has_no_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(Manifest::open(dir.path()).expect("open").is_none());
}
