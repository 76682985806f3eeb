//! Property tests: a `SwapFile` under random appends and replaces always holds exactly what a
//! simple in-memory model says, for both swap strategies.

use proptest::prelude::*;
use strata_fs::{SwapFile, SwapOptions, SwapStrategy, atomic_replace};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    Sync,
    Replace(Vec<u8>),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        4 => bytes.clone().prop_map(Op::Append),
        1 => Just(Op::Sync),
        2 => bytes.prop_map(Op::Replace),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn swap_file_contents_match_the_model(
        ops in proptest::collection::vec(op(), 0..40),
        close_and_rename in any::<bool>(),
    ) {
        let strategy = if close_and_rename || !cfg!(unix) {
            SwapStrategy::CloseAndRename
        } else {
            SwapStrategy::RenameOver
        };
        let options = SwapOptions { strategy, ..SwapOptions::default() };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        let mut file = SwapFile::open(&path, options.clone()).expect("open");
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                Op::Append(bytes) => {
                    file.append(&bytes).expect("append");
                    model.extend_from_slice(&bytes);
                }
                Op::Sync => file.sync().expect("sync"),
                Op::Replace(bytes) => {
                    let len = file.replace(|w| w.write_all(&bytes)).expect("replace");
                    prop_assert_eq!(len, bytes.len() as u64);
                    model = bytes;
                }
                Op::Reopen => {
                    drop(file);
                    file = SwapFile::open(&path, options.clone()).expect("reopen");
                }
            }
            prop_assert_eq!(file.len().expect("len"), model.len() as u64);
        }
        prop_assert_eq!(std::fs::read(&path).expect("read"), model);
    }

    #[test]
    fn atomic_replace_leaves_exactly_the_last_contents(
        versions in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..256), 1..8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("MANIFEST");
        for version in &versions {
            atomic_replace(&path, version).expect("replace");
        }
        let last = versions.last().expect("at least one version");
        prop_assert_eq!(&std::fs::read(&path).expect("read"), last);
        prop_assert!(!dir.path().join("MANIFEST.tmp").exists());
    }
}
