//! Splitting watch responses by size: responses of several revisions at revision boundaries
//! (always: a catch-up past a bound every gRPC client accepts, a live one past a smaller one), and any response into etcd's fragments (only for a watcher
//! created with `fragment`).

use prost::Message;

use crate::proto::etcdserverpb::WatchResponse;
use crate::proto::mvccpb::Event;

/// The largest catch-up response sent whole when it holds more than one revision: 4 MiB, the
/// default receive limit of every gRPC client but Go's (tonic, so etcd-client; grpc-java;
/// grpc-c++). etcd sends up to 1,000 revisions in one response whatever their size, which such a
/// client cannot receive at all: with big values it would fail on every retry from the same
/// revision. Splitting at a revision boundary changes nothing a client can rely on (a revision
/// is never split, and the events stay in order), and it bounds the bytes a stream's queue holds
/// per response. A single revision larger than this is sent whole, as etcd does, unless the
/// watcher asked for fragments.
pub const CATCH_UP_RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// The largest live response sent whole when it holds more than one revision (a watcher that
/// fell behind between polls gets its revisions together): big enough that a batch of small
/// events is one message, small enough that a stream's queue of responses stays a few MiB.
pub const LIVE_RESPONSE_BYTES_MAX: usize = 64 * 1024;

/// The bytes `event` adds to an encoded `WatchResponse`: its tag (field 11, one byte), its
/// length and itself.
fn event_bytes(event: &Event) -> usize {
    let len = event.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

/// Splits a response's `events` (whole revisions, in order) into runs of whole
/// revisions whose events take at most `bytes_max` bytes, except a run of one revision, which is
/// never split. Each run is non-empty; together they are `events`, in order.
pub fn at_revisions(events: Vec<Event>, bytes_max: usize) -> Vec<Vec<Event>> {
    let total: usize = events.iter().map(event_bytes).sum();
    if total <= bytes_max {
        return vec![events];
    }
    let mut runs = Vec::new();
    let mut run: Vec<Event> = Vec::new();
    let mut run_bytes = 0;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        // One whole revision.
        let revision = revision_of(&first);
        let mut bytes = event_bytes(&first);
        let mut group = vec![first];
        while let Some(next) = events.next_if(|e| revision_of(e) == revision) {
            bytes += event_bytes(&next);
            group.push(next);
        }
        if !run.is_empty() && run_bytes + bytes > bytes_max {
            runs.push(std::mem::take(&mut run));
            run_bytes = 0;
        }
        run.append(&mut group);
        run_bytes += bytes;
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// A live watcher's polled `events` (whole revisions, in order) as responses: runs of whole
/// revisions of at most [`LIVE_RESPONSE_BYTES_MAX`] bytes (a single revision is never split),
/// each with the revision its header carries, its last event's: every event up to it has then
/// been sent. A poll of one revision, the usual one, is one response, as etcd sends it.
pub fn live(events: Vec<Event>) -> Vec<(i64, Vec<Event>)> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        return Vec::new();
    };
    let (first, last) = (revision_of(first), revision_of(last));
    if first == last {
        // One revision, the usual poll: never split, so not measured.
        return vec![(last, events)];
    }
    at_revisions(events, LIVE_RESPONSE_BYTES_MAX)
        .into_iter()
        .map(|run| (run.last().map_or(0, revision_of), run))
        .collect()
}

/// etcd's `sendFragments`: a response of at least `bytes_max` encoded bytes with two events or
/// more becomes several, each with the same header and id, `fragment` set on all but the last;
/// each part is under `bytes_max` unless it holds a single event. Any other response is returned
/// whole. The client joins the parts' events back into one response.
pub fn fragments(response: WatchResponse, bytes_max: usize) -> Vec<WatchResponse> {
    if response.events.len() < 2 || response.encoded_len() < bytes_max {
        return vec![response];
    }
    let mut empty = response;
    let events = std::mem::take(&mut empty.events);
    empty.fragment = true;
    let base_bytes = empty.encoded_len();
    let mut parts = Vec::new();
    let mut part = Vec::new();
    let mut part_bytes = base_bytes;
    for event in events {
        let bytes = event_bytes(&event);
        if !part.is_empty() && part_bytes + bytes >= bytes_max {
            parts.push(WatchResponse {
                events: std::mem::take(&mut part),
                ..empty.clone()
            });
            part_bytes = base_bytes;
        }
        part.push(event);
        part_bytes += bytes;
    }
    parts.push(WatchResponse {
        events: part,
        fragment: false,
        ..empty
    });
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn event(revision: i64, value_bytes: usize) -> Event {
        Event {
            kv: Some(KeyValue {
                key: format!("k{revision}").into_bytes(),
                value: vec![b'v'; value_bytes],
                mod_revision: revision,
                ..KeyValue::default()
            }),
            ..Event::default()
        }
    }

    /// A deterministic case per seed (xorshift): up to 12 revisions of 1 to 3 events of up to
    /// 3,000 value bytes each, and a limit of up to 20,000 bytes. (A fixed sweep rather than
    /// proptest: the crate has no proptest dependency, and 2,000 seeds cover the shapes.)
    fn case(seed: u64) -> (Vec<Event>, usize) {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = |bound: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % bound).expect("a small bound")
        };
        let mut out = Vec::new();
        for revision in 2..2 + i64::try_from(next(13)).expect("small") {
            let count = 1 + next(3);
            let value_bytes = next(3_000);
            out.extend((0..count).map(|_| event(revision, value_bytes)));
        }
        (out, 1 + next(20_000))
    }

    const SEEDS: u64 = 2_000;

    #[test]
    fn fragments_rejoin_to_the_response_and_each_is_under_the_limit_or_one_event() {
        for seed in 0..SEEDS {
            let (events, bytes_max) = case(seed);
            let response = WatchResponse {
                watch_id: 7,
                events,
                ..WatchResponse::default()
            };
            let parts = fragments(response.clone(), bytes_max);
            let rejoined: Vec<Event> = parts.iter().flat_map(|p| p.events.clone()).collect();
            assert_eq!(rejoined, response.events, "seed {seed}");
            let (last, rest) = parts.split_last().expect("at least one part");
            assert!(!last.fragment, "seed {seed}");
            if rest.is_empty() {
                assert!(
                    response.events.len() < 2 || response.encoded_len() < bytes_max,
                    "seed {seed}: a large response sent whole"
                );
            }
            for part in rest {
                assert!(part.fragment && !part.events.is_empty(), "seed {seed}");
            }
            for part in parts.iter().filter(|_| parts.len() > 1) {
                assert_eq!(part.watch_id, 7);
                assert!(
                    part.events.len() == 1 || part.encoded_len() < bytes_max,
                    "seed {seed}: a part of {} bytes, limit {bytes_max}",
                    part.encoded_len()
                );
            }
        }
    }

    #[test]
    fn catch_up_runs_keep_revisions_whole_and_under_the_limit() {
        for seed in 0..SEEDS {
            let (events, bytes_max) = case(seed);
            let runs = at_revisions(events.clone(), bytes_max);
            let rejoined: Vec<Event> = runs.iter().flatten().cloned().collect();
            assert_eq!(rejoined, events, "seed {seed}");
            for (i, run) in runs.iter().enumerate() {
                assert!(!run.is_empty() || runs.len() == 1, "seed {seed}");
                let bytes: usize = run.iter().map(event_bytes).sum();
                let one_revision = run.iter().all(|e| revision_of(e) == revision_of(&run[0]));
                assert!(bytes <= bytes_max || one_revision, "seed {seed}");
                if let Some(next) = runs.get(i + 1) {
                    assert!(
                        revision_of(&run[run.len() - 1]) < revision_of(&next[0]),
                        "seed {seed}: a revision split"
                    );
                }
            }
        }
    }

    #[test]
    fn live_responses_keep_revisions_whole_and_carry_their_last_revision() {
        // Nothing: no response. One revision: one response at it, however big.
        assert_eq!(live(Vec::new()), vec![]);
        let one = vec![event(5, 10), event(5, 100_000)];
        assert_eq!(live(one.clone()), vec![(5, one)]);
        // Several small revisions: one response, at the last.
        let several: Vec<Event> = (2..40).map(|r| event(r, 100)).collect();
        assert_eq!(live(several.clone()), vec![(39, several)]);
        // Past the bound: runs of whole revisions, each at its own last.
        let big: Vec<Event> = (2..200).map(|r| event(r, 1_000)).collect();
        let runs = live(big.clone());
        assert!(runs.len() > 1);
        let rejoined: Vec<Event> = runs.iter().flat_map(|(_, run)| run.clone()).collect();
        assert_eq!(rejoined, big);
        for (revision, run) in &runs {
            assert_eq!(*revision, revision_of(&run[run.len() - 1]));
            assert!(run.iter().map(event_bytes).sum::<usize>() <= LIVE_RESPONSE_BYTES_MAX);
        }
    }

    #[test]
    fn a_small_response_or_a_single_event_is_not_fragmented() {
        let small = WatchResponse {
            events: vec![event(2, 10), event(2, 10)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(small.clone(), 10_000), vec![small]);
        let one = WatchResponse {
            events: vec![event(2, 50_000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(one.clone(), 1_000), vec![one]);
    }
}
