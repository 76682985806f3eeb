//! Watch against real processes, driven by the etcd-client crate: history then live events,
//! exactly once and in order, from any member; a compacted start revision cancels the watcher
//! with the compact revision, as etcd does.

mod support;

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use support::cluster::{Cluster, client, wait_ready};

/// Reads watch responses until `n` events came (bounded); returns them as (type, key, value,
/// mod revision).
async fn take_events(
    stream: &mut etcd_client::WatchStream,
    n: usize,
) -> Vec<(EventType, String, String, i64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events in time")
            .expect("a watch response")
            .expect("the stream is open");
        for e in message.events() {
            let kv = e.kv().expect("kv");
            got.push((
                e.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            ));
        }
    }
    got
}

#[test]
fn watchers_see_history_then_live_events_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            for e in &endpoints {
                wait_ready(e).await;
            }
            let mut c = client(&endpoints[..1]).await;
            let first = c
                .put("w/a", "1", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
            c.put("w/b", "2", None).await.expect("put");
            c.put("other", "x", None).await.expect("put");
            c.delete("w/a", None).await.expect("delete");

            // From the first revision, on another member: the history, then what comes next.
            let mut w = client(&endpoints[2..3]).await;
            let mut stream = w
                .watch(
                    "w/",
                    Some(WatchOptions::new().with_prefix().with_start_revision(first)),
                )
                .await
                .expect("watch");
            let history = take_events(&mut stream, 3).await;
            assert_eq!(
                history,
                vec![
                    (EventType::Put, "w/a".to_owned(), "1".to_owned(), first),
                    (EventType::Put, "w/b".to_owned(), "2".to_owned(), first + 1),
                    (
                        EventType::Delete,
                        "w/a".to_owned(),
                        String::new(),
                        first + 3
                    ),
                ]
            );
            for i in 0..50 {
                c.put(format!("w/live{i:02}"), i.to_string(), None)
                    .await
                    .expect("put");
            }
            let live = take_events(&mut stream, 50).await;
            let revisions: Vec<i64> = live.iter().map(|e| e.3).collect();
            let expected: Vec<i64> = (first + 4..first + 54).collect();
            assert_eq!(revisions, expected, "each live event once, in order");

            // Compacted history cancels the watcher with the compact revision.
            let now = c
                .put("w/last", "z", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
            c.compact(now, None).await.expect("compact");
            let mut late = w
                .watch(
                    "w/",
                    Some(WatchOptions::new().with_prefix().with_start_revision(first)),
                )
                .await
                .expect("watch");
            let canceled = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let m = late.message().await.expect("response").expect("open");
                    if m.canceled() {
                        return m;
                    }
                }
            })
            .await
            .expect("a cancel in time");
            assert_eq!(canceled.compact_revision(), now);
        });
}
