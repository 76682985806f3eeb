//! A durable state machine and the node's applied index: a restart restores nothing and
//! re-applies nothing the state machine holds; a crash between a batch's apply and its
//! persist re-applies exactly that batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;
use strata_raft_node::{Committed, CommittedKind, RaftNode, SnapshotWriter, StateMachine};

const WAIT: Duration = Duration::from_secs(20);

/// What the test watches of a state machine, across restarts.
#[derive(Debug, Default)]
struct Seen {
    /// Every index handed to `apply`, in order.
    applied: Vec<u64>,
    /// Every batch handed to `apply`: its indexes.
    batches: Vec<Vec<u64>>,
    /// Restores from a snapshot.
    restores: usize,
}

/// A key-value state machine (a command is "key=value") that persists its whole state and
/// its applied index atomically after each batch (one file, replaced whole).
struct Durable {
    dir: PathBuf,
    kv: BTreeMap<String, String>,
    applied: u64,
    seen: Arc<Mutex<Seen>>,
    /// Apply the batch holding this command in memory, then fail before persisting it (a
    /// crash between the two).
    fail_on: Option<Bytes>,
}

impl Durable {
    /// Opens the state machine persisted in `dir` (empty if none).
    fn open(dir: &Path, seen: Arc<Mutex<Seen>>) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let (kv, applied) = match std::fs::read(dir.join("state")) {
            Ok(bytes) => decode(&bytes),
            Err(_) => (BTreeMap::new(), 0),
        };
        Self {
            dir: dir.to_path_buf(),
            kv,
            applied,
            seen,
            fail_on: None,
        }
    }

    fn persist(&self) -> std::io::Result<()> {
        strata_fs::atomic_replace(&self.dir.join("state"), &encode(&self.kv, self.applied))
            .map_err(std::io::Error::other)
    }
}

/// The applied index, then `key=value` lines.
fn encode(kv: &BTreeMap<String, String>, applied: u64) -> Vec<u8> {
    let mut out = applied.to_le_bytes().to_vec();
    for (k, v) in kv {
        out.extend_from_slice(format!("{k}={v}\n").as_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> (BTreeMap<String, String>, u64) {
    let applied = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let text = std::str::from_utf8(&bytes[8..]).expect("utf-8");
    let kv = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (kv, applied)
}

impl StateMachine for Durable {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let mut answers = Vec::new();
        let mut fail = false;
        {
            let mut seen = self.seen.lock();
            seen.batches.push(batch.iter().map(|c| c.index).collect());
            seen.applied.extend(batch.iter().map(|c| c.index));
        }
        for entry in batch {
            assert_eq!(entry.index, self.applied + 1, "no gap, no repeat");
            self.applied = entry.index;
            if let CommittedKind::Command(command) = entry.kind {
                fail |= self.fail_on.as_ref() == Some(&command);
                let text = String::from_utf8_lossy(&command).into_owned();
                if let Some((k, v)) = text.split_once('=') {
                    self.kv.insert(k.to_owned(), v.to_owned());
                }
                answers.push(Bytes::from(entry.index.to_string()));
            }
        }
        if fail {
            return Err(std::io::Error::other("crash before the persist"));
        }
        self.persist()?;
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        let state = encode(&self.kv, self.applied);
        Ok(Box::new(move |dir: &Path| {
            std::fs::write(dir.join("state"), &state)?;
            Ok(vec!["state".to_owned()])
        }))
    }

    async fn restore(
        &mut self,
        dir: &Path,
        _files: &[String],
        last_index: u64,
    ) -> std::io::Result<()> {
        self.seen.lock().restores += 1;
        let (kv, applied) = decode(&std::fs::read(dir.join("state"))?);
        assert_eq!(applied, last_index);
        (self.kv, self.applied) = (kv, applied);
        self.persist()
    }
}

/// One voter on a durable log in `root`, with `state_machine`.
fn start(root: &Path, state_machine: Durable) -> RaftNode {
    support::start_alone(root, state_machine)
}

async fn wait_leader(node: &RaftNode) {
    support::wait_leader([node], WAIT).await;
}

async fn put(node: &RaftNode, command: &str) -> u64 {
    let answer = node
        .propose(Bytes::copy_from_slice(command.as_bytes()), WAIT)
        .await
        .expect("committed");
    std::str::from_utf8(&answer)
        .expect("utf-8")
        .parse()
        .expect("an index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_state_machine_restarts_without_a_restore_and_reapplies_nothing() {
    let root = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let node = start(
        root.path(),
        Durable::open(&root.path().join("sm"), Arc::clone(&seen)),
    );
    wait_leader(&node).await;
    for i in 0..10 {
        put(&node, &format!("k{i}=v{i}")).await;
    }
    // A snapshot in the store: a restart could restore from it, but must not.
    let snapshot = node
        .request_snapshot(WAIT)
        .await
        .expect("snapshot")
        .expect("taken");
    let mut last = 0;
    for i in 10..15 {
        last = put(&node, &format!("k{i}=v{i}")).await;
    }
    assert!(last > snapshot.last_index);
    node.shutdown().await;
    let before = std::mem::take(&mut *seen.lock());
    assert_eq!(*before.applied.last().expect("applied"), last);

    let sm = Durable::open(&root.path().join("sm"), Arc::clone(&seen));
    assert_eq!(
        sm.applied, last,
        "the state machine held everything durably"
    );
    let node = start(root.path(), sm);
    wait_leader(&node).await;
    let next = put(&node, "after=restart").await;
    node.shutdown().await;
    let after = seen.lock();
    assert_eq!(after.restores, 0, "no restore from the older snapshot");
    assert!(
        after.applied.iter().all(|&i| i > last),
        "re-applied {:?}, all at or below {last}",
        after.applied
    );
    assert_eq!(after.applied, ((last + 1)..=next).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_a_batchs_apply_and_its_persist_reapplies_exactly_that_batch() {
    let root = tempfile::tempdir().expect("tempdir");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut sm = Durable::open(&root.path().join("sm"), Arc::clone(&seen));
    sm.fail_on = Some(Bytes::from_static(b"crash=here"));
    let node = start(root.path(), sm);
    wait_leader(&node).await;
    for i in 0..5 {
        put(&node, &format!("k{i}=v{i}")).await;
    }
    // The state machine applies this batch, then fails before persisting it: the node stops.
    let crashed = node.propose(Bytes::from_static(b"crash=here"), WAIT).await;
    assert!(
        crashed.is_err(),
        "answered after a failed apply: {crashed:?}"
    );
    node.shutdown().await;
    let lost = seen
        .lock()
        .batches
        .last()
        .cloned()
        .expect("the failed batch");
    std::mem::take(&mut *seen.lock());

    let sm = Durable::open(&root.path().join("sm"), Arc::clone(&seen));
    assert_eq!(
        sm.applied + 1,
        lost[0],
        "the failed batch was not persisted"
    );
    assert!(!sm.kv.contains_key("crash"));
    let node = start(root.path(), sm);
    wait_leader(&node).await;
    put(&node, "after=restart").await;
    node.shutdown().await;
    let after = seen.lock();
    let reapplied: Vec<u64> = after
        .applied
        .iter()
        .copied()
        .filter(|&i| i <= *lost.last().expect("not empty"))
        .collect();
    assert_eq!(reapplied, lost, "exactly the failed batch is applied again");
    assert_eq!(after.restores, 0);
    let state = std::fs::read(root.path().join("sm").join("state")).expect("state");
    assert_eq!(
        decode(&state).0.get("crash").map(String::as_str),
        Some("here")
    );
}

/// Panics on any command: a state machine with a bug.
struct Panics;

impl StateMachine for Panics {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        assert!(
            !batch
                .iter()
                .any(|c| matches!(c.kind, CommittedKind::Command(_))),
            "a bug in the state machine"
        );
        Ok(Vec::new())
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        Ok(Box::new(|_: &Path| Ok(Vec::new())))
    }

    async fn restore(&mut self, _: &Path, _: &[String], _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_that_panics_stops_the_node_and_says_why() {
    let root = tempfile::tempdir().expect("tempdir");
    let node = support::start_alone(root.path(), Panics);
    wait_leader(&node).await;
    let answer = node.propose(Bytes::from_static(b"boom"), WAIT).await;
    assert!(answer.is_err(), "{answer:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let failure = loop {
        if let Some(failure) = node.failure() {
            break failure;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure recorded"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(failure.to_string().contains("panicked"), "{failure}");
    // The loop stopped too: a request now finds the node stopped.
    let after = node.propose(Bytes::from_static(b"more"), WAIT).await;
    assert!(after.is_err(), "{after:?}");
    node.shutdown().await;
}
