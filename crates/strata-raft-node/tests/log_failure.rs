//! A Raft log that fails stops the node, and why is known by the time its status channel
//! closes: a server watching for the node to stop prints the cause as it exits, rather than
//! only that the node stopped. Alone in its binary: its failpoint is process-wide.

use std::time::Duration;

use bytes::Bytes;
use fail::FailScenario;

#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_is_recorded_before_the_status_channel_closes() {
    let scenario = FailScenario::setup();
    let root = tempfile::tempdir().expect("tempdir");
    let node = support::start_alone(root.path(), support::Nothing);
    support::wait_leader([&node], WAIT).await;
    node.propose(Bytes::from_static(b"before"), WAIT)
        .await
        .expect("a proposal with a working log");
    let mut status = node.status();
    fail::cfg(strata_wal::FP_WRITE, "return").expect("cfg");
    let answer = node.propose(Bytes::from_static(b"lost"), WAIT).await;
    assert!(answer.is_err(), "{answer:?}");
    tokio::time::timeout(WAIT, async { while status.changed().await.is_ok() {} })
        .await
        .expect("the node never stopped");
    // No wait: the channel closed, so the failure is there.
    let failure = node.failure().expect("the node stopped without saying why");
    assert!(
        failure.to_string().contains(strata_wal::FP_WRITE),
        "{failure}"
    );
    fail::remove(strata_wal::FP_WRITE);
    node.shutdown().await;
    drop(scenario);
}
