//! Transfers under random loss, duplication, reordering, damage in transit and receiver
//! restarts: the installed set is byte-identical to the source, and nothing is installed
//! before it is complete.

use std::collections::VecDeque;

use proptest::prelude::*;
use strata_snapshot::{Ack, Chunk, Position, Receiver, Sender, describe};

#[derive(Debug, Clone)]
enum Step {
    Send,
    Deliver(usize),
    Duplicate(usize),
    Drop(usize),
    Damage(usize),
    RestartReceiver,
    /// The sender's timeout: it goes back to the last position the receiver named.
    Timeout,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Send),
        6 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Duplicate),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Damage),
        1 => Just(Step::RestartReceiver),
        1 => Just(Step::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn installed_set_is_identical_or_absent(
        sizes in proptest::collection::vec(0usize..4000, 1..5),
        chunk_bytes in 1usize..900,
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let source = tempfile::tempdir().expect("tempdir");
        let mut names = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let name = format!("{i:06}.sst");
            let data: Vec<u8> = (0..*size).map(|b| (b * 31 + i * 7) as u8).collect();
            std::fs::write(source.path().join(&name), data).expect("write");
            names.push(name);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let meta = describe(source.path(), 9, 100, 4, &refs).expect("describe");
        let sender = Sender::new(source.path(), meta.clone(), chunk_bytes);
        let target = tempfile::tempdir().expect("tempdir");
        let mut receiver = Receiver::open(target.path()).expect("open");
        let mut cursor = receiver.begin(&meta).expect("begin");
        let mut network: VecDeque<Chunk> = VecDeque::new();
        let mut complete = receiver.installed().expect("installed").is_some();
        let mut acked = cursor;
        let handle = |ack: Ack, cursor: &mut Position, acked: &mut Position, complete: &mut bool| match ack {
            Ack::Accepted { next } | Ack::Duplicate { next } | Ack::Gap { need: next } => {
                *cursor = next;
                *acked = next;
            }
            Ack::Complete => *complete = true,
        };
        // The random steps, then a clean finish: what is still in flight is lost (as a
        // sender's timeout would have it), and each chunk is sent and delivered in turn.
        let chunks: usize = sizes.iter().map(|s| s.div_ceil(chunk_bytes) + 1).sum();
        let finish = [Step::Drop(0)].into_iter().cycle().take(steps.len() + 1)
            .chain([Step::Timeout])
            .chain([Step::Send, Step::Deliver(0)].into_iter().cycle().take(2 * chunks + 4));
        for step in steps.clone().into_iter().chain(finish) {
            if complete {
                break;
            }
            prop_assert!(receiver.installed().expect("installed").is_none(), "installed before complete");
            match step {
                Step::Send => {
                    if let Some(chunk) = sender.chunk(cursor).expect("chunk") {
                        cursor = Position { file: chunk.file, offset: chunk.offset + chunk.data.len() as u64 };
                        if cursor.offset == meta.files[chunk.file as usize].size {
                            cursor = Position { file: chunk.file + 1, offset: 0 };
                        }
                        network.push_back(chunk);
                    }
                }
                Step::Deliver(i) | Step::Duplicate(i) | Step::Damage(i) | Step::Drop(i) if network.is_empty() => {
                    let _ = i;
                }
                Step::Deliver(i) => {
                    let chunk = network.remove(i % network.len()).expect("chunk");
                    let ack = receiver.accept(&chunk).expect("accept");
                    handle(ack, &mut cursor, &mut acked, &mut complete);
                }
                Step::Duplicate(i) => {
                    let chunk = network[i % network.len()].clone();
                    network.push_back(chunk);
                }
                Step::Drop(i) => {
                    network.remove(i % network.len());
                }
                Step::Damage(i) => {
                    let at = i % network.len();
                    let mut data = network[at].data.to_vec();
                    if let Some(b) = data.first_mut() {
                        *b ^= 0x40;
                        network[at].data = data.into();
                    }
                }
                Step::Timeout => cursor = acked,
                Step::RestartReceiver => {
                    drop(receiver);
                    receiver = Receiver::open(target.path()).expect("reopen");
                    complete = receiver.installed().expect("installed").is_some();
                    if !complete {
                        cursor = receiver.begin(&meta).expect("resume");
                        acked = cursor;
                    }
                }
            }
        }
        prop_assert!(complete, "the transfer finished");
        let (installed, dir) = receiver.installed().expect("installed").expect("some");
        prop_assert_eq!(&installed, &meta);
        for name in &names {
            prop_assert_eq!(
                std::fs::read(dir.join(name)).expect("installed file"),
                std::fs::read(source.path().join(name)).expect("source file"),
                "{}", name
            );
        }
    }
}

#[test]
fn a_newer_snapshot_replaces_a_staged_one_and_an_abort_cleans_up() {
    let source = tempfile::tempdir().expect("tempdir");
    std::fs::write(source.path().join("a"), vec![1u8; 3000]).expect("write");
    let first = describe(source.path(), 1, 10, 1, &["a"]).expect("describe");
    let target = tempfile::tempdir().expect("tempdir");
    let mut receiver = Receiver::open(target.path()).expect("open");
    let at = receiver.begin(&first).expect("begin");
    let sender = Sender::new(source.path(), first.clone(), 1000);
    let chunk = sender.chunk(at).expect("chunk").expect("some");
    assert!(matches!(
        receiver.accept(&chunk).expect("accept"),
        Ack::Accepted { .. }
    ));
    // A newer snapshot: the staged one is dropped, the new one starts at zero.
    let second = describe(source.path(), 2, 20, 2, &["a"]).expect("describe");
    assert_eq!(
        receiver.begin(&second).expect("begin"),
        Position { file: 0, offset: 0 }
    );
    assert!(
        receiver.accept(&chunk).is_err(),
        "a chunk of the old snapshot"
    );
    receiver.abort().expect("abort");
    let staged: Vec<_> = std::fs::read_dir(target.path().join("staging"))
        .expect("list")
        .collect();
    assert!(staged.is_empty());
    assert!(receiver.installed().expect("installed").is_none());
    // Bad names are refused.
    let mut bad = first;
    bad.files[0].name = "../escape".to_owned();
    assert!(receiver.begin(&bad).is_err());
}

#[test]
fn a_mapped_sender_sends_what_a_reading_sender_sends() {
    let source = tempfile::tempdir().expect("tempdir");
    let names = ["a", "empty", "b"];
    std::fs::write(
        source.path().join("a"),
        (0..5000u32).map(|i| i as u8).collect::<Vec<u8>>(),
    )
    .expect("write");
    std::fs::write(source.path().join("empty"), b"").expect("write");
    std::fs::write(source.path().join("b"), vec![9u8; 1234]).expect("write");
    let meta = describe(source.path(), 3, 30, 2, &names).expect("describe");
    let read = Sender::new(source.path(), meta.clone(), 1000);
    let mapped = Sender::mapped(source.path(), meta.clone(), 1000);
    for (file, info) in meta.files.iter().enumerate() {
        let mut offset = 0;
        loop {
            let at = Position {
                file: file as u32,
                offset,
            };
            let (a, b) = (
                read.chunk(at).expect("read"),
                mapped.chunk(at).expect("mapped"),
            );
            assert_eq!(a, b, "file {file} offset {offset}");
            offset += 1000;
            if offset >= info.size {
                break;
            }
        }
    }
    // A file shorter than described is an error, not a short chunk.
    std::fs::write(source.path().join("b"), vec![9u8; 10]).expect("truncate");
    let fresh = Sender::mapped(source.path(), meta, 1000);
    assert!(fresh.chunk(Position { file: 2, offset: 0 }).is_err());
}
