//! The WAL against a model: random appends, syncs, rotations, purges, suffix truncations and
//! crashes (drop without sync, then cut the last segment at a random byte or flip a random bit
//! in its unsynced part), then reopen. What recovers must be exactly the model's durable prefix
//! plus possibly some unsynced records, in order, never anything else.

mod support;

use std::path::Path;

use proptest::prelude::*;
use strata_wal::format::{RecordScanner, SEGMENT_HEADER_BYTES, SegmentHeader};
use strata_wal::{Durability, Lsn, Wal, WalOptions};
use support::segments;

#[derive(Debug, Clone)]
enum Damage {
    None,
    /// Cut the last segment at this fraction (per mille) of its unsynced part.
    Cut(u16),
    /// Flip this bit of this byte (per mille of the unsynced part).
    Flip(u16, u8),
}

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<u8>),
    AppendBatch(Vec<Vec<u8>>),
    Sync,
    Purge(u16),
    TruncateAfter(u16),
    Crash(Damage),
    Reopen,
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => proptest::collection::vec(any::<u8>(), 0..40),
        3 => proptest::collection::vec(any::<u8>(), 100..400),
        // Large enough to take the direct-write path (written from the caller's buffer).
        1 => (64usize * 1024..66 * 1024, any::<u8>()).prop_map(|(len, b)| vec![b; len]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => payload().prop_map(Op::Append),
        2 => proptest::collection::vec(payload(), 0..6).prop_map(Op::AppendBatch),
        3 => Just(Op::Sync),
        1 => (0u16..1000).prop_map(Op::Purge),
        1 => (0u16..1000).prop_map(Op::TruncateAfter),
        2 => prop_oneof![
            Just(Damage::None),
            (0u16..1000).prop_map(Damage::Cut),
            ((0u16..1000), (0u8..8)).prop_map(|(at, bit)| Damage::Flip(at, bit)),
        ]
        .prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    /// Every record the log holds, in LSN order, starting at LSN 1.
    records: Vec<Vec<u8>>,
    /// How many of them are durable.
    durable: usize,
}

fn options(sync: bool, mapped_tail: bool) -> WalOptions {
    WalOptions {
        mapped_tail,
        // Small segments, so rotation, purge and cross-segment truncation happen often.
        segment_bytes_max: 512,
        record_bytes_max: 128 * 1024,
        durability: if sync {
            Durability::Sync
        } else {
            Durability::NoSync
        },
        ..WalOptions::default()
    }
}

/// The byte offset in the last segment after which nothing is durable.
fn durable_boundary(path: &Path, durable_lsn: Lsn) -> usize {
    let bytes = std::fs::read(path).expect("read");
    let header = SegmentHeader::decode(&bytes).expect("header of the last segment");
    let mut boundary = SEGMENT_HEADER_BYTES;
    for record in RecordScanner::new(&bytes, header, u32::MAX) {
        match record {
            Ok(r) if r.lsn <= durable_lsn => {
                boundary = r.end as usize;
            }
            _ => break,
        }
    }
    boundary
}

fn damage(dir: &Path, model: &Model, damage: &Damage) {
    let files = segments(dir);
    let Some(last) = files.last() else { return };
    let boundary = durable_boundary(last, model.durable as Lsn);
    let mut bytes = std::fs::read(last).expect("read");
    let unsynced = bytes.len() - boundary;
    match *damage {
        Damage::None => return,
        Damage::Cut(per_mille) => {
            bytes.truncate(boundary + unsynced * usize::from(per_mille) / 1000);
        }
        Damage::Flip(per_mille, bit) => {
            if unsynced == 0 {
                return;
            }
            let at = boundary + (unsynced - 1) * usize::from(per_mille) / 1000;
            bytes[at] ^= 1 << bit;
        }
    }
    std::fs::write(last, &bytes).expect("write damage");
}

fn check_contents(wal: &Wal, model: &Model) -> Result<(), TestCaseError> {
    let first = wal.first_lsn();
    prop_assert_eq!(wal.next_lsn(), model.records.len() as Lsn + 1);
    let read: Vec<(Lsn, Vec<u8>)> = wal
        .read_from(first)
        .expect("read_from")
        .collect::<Result<_, _>>()
        .expect("records verify");
    let expected: Vec<(Lsn, Vec<u8>)> = model
        .records
        .iter()
        .enumerate()
        .map(|(i, p)| (i as Lsn + 1, p.clone()))
        .skip(first as usize - 1)
        .collect();
    prop_assert_eq!(read, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn recovery_yields_the_durable_prefix_plus_some_unsynced_records(
        ops in proptest::collection::vec(op(), 1..60),
        sync in any::<bool>(),
        mapped_tail in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = || options(sync, mapped_tail);
        let (mut wal, _) = Wal::open(dir.path(), options()).expect("open");
        let mut model = Model { records: Vec::new(), durable: 0 };
        for op in ops {
            match op {
                Op::Append(p) => {
                    let lsn = wal.append(&p).expect("append");
                    prop_assert_eq!(lsn, model.records.len() as Lsn + 1);
                    model.records.push(p);
                    if sync {
                        model.durable = model.records.len();
                    }
                }
                Op::AppendBatch(ps) => {
                    let lsns = wal.append_batch(&ps).expect("append_batch");
                    prop_assert_eq!(*lsns.start(), model.records.len() as Lsn + 1);
                    model.records.extend(ps);
                    if sync {
                        model.durable = model.records.len();
                    }
                }
                Op::Sync => {
                    wal.sync().expect("sync");
                    model.durable = model.records.len();
                }
                Op::Purge(per_mille) => {
                    let lsn = (model.records.len() as Lsn + 1) * Lsn::from(per_mille) / 1000;
                    let first_before = wal.first_lsn();
                    wal.purge_before(lsn).expect("purge");
                    prop_assert!(
                        wal.first_lsn() <= lsn.max(first_before),
                        "purged past {}", lsn
                    );
                }
                Op::TruncateAfter(per_mille) => {
                    let first = wal.first_lsn();
                    let len = model.records.len() as Lsn;
                    let lsn = (first - 1) + (len + 1 - first) * Lsn::from(per_mille) / 1000;
                    wal.truncate_after(lsn).expect("truncate_after");
                    model.records.truncate(lsn as usize);
                    // The cut is durable, and so is everything before it.
                    model.durable = model.records.len();
                }
                Op::Crash(how) => {
                    drop(wal);
                    damage(dir.path(), &model, &how);
                    let (reopened, _) = Wal::open(dir.path(), options())
                        .expect("reopen after a crash");
                    let recovered = reopened.next_lsn() as usize - 1;
                    prop_assert!(
                        recovered >= model.durable && recovered <= model.records.len(),
                        "recovered {} records; durable {}, written {}",
                        recovered, model.durable, model.records.len()
                    );
                    model.records.truncate(recovered);
                    // Recovery makes what it found durable.
                    model.durable = recovered;
                    wal = reopened;
                }
                Op::Reopen => {
                    drop(wal);
                    let (reopened, report) = Wal::open(dir.path(), options()).expect("reopen");
                    prop_assert_eq!(report.torn_tail_bytes, 0);
                    model.durable = model.records.len();
                    wal = reopened;
                }
            }
            check_contents(&wal, &model)?;
        }
    }
}
