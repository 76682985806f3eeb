//! etcd's Watch service: one bidirectional stream carries many watchers; each is a watcher of
//! strata-mvcc's change stream (`Store::watch`), fed live from every applied batch and caught up
//! from the LSM when it starts in the past or falls behind (its buffer is bounded), so a slow
//! client costs bounded memory and loses nothing.

use crate::auth::{Access, Caller};
use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::Arc;

use strata_mvcc::{
    CATCH_UP_REVISIONS_MAX, WATCHER_BUFFER_EVENTS_DEFAULT, WatchPoll, WatchSpec, WatcherId,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use crate::server::Inner;

mod split;

/// Responses buffered per stream ahead of a slow client (etcd: 128). Past it the stream's
/// watchers stop being polled, their buffers fill and they fall back to the store: memory stays
/// bounded, nothing is lost.
const STREAM_RESPONSES_MAX: usize = 128;

/// Watchers one stream may hold (etcd's limit is 2^32 − 1; a bound keeps one client from
/// holding a member's memory).
const STREAM_WATCHERS_MAX: usize = 100_000;

/// Events a drain takes from the hub at once before sending them (it takes the ready watchers'
/// buffers in batches, each under one take of the hub's lock). The events taken are copies
/// held until sent, so this bounds them to about a watcher buffer's worth more than a drain
/// taking one watcher at a time holds; a batch is rarely this big, as a live watcher is polled
/// as soon as it has an event.
const DRAIN_BATCH_EVENTS_MAX: usize = WATCHER_BUFFER_EVENTS_DEFAULT;

/// etcd's texts for refused creates.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const COMPACTED: &str = "mvcc: required revision has been compacted";

/// An error as grpc-go prints a status (etcd puts that text in a refused create's
/// `cancel_reason`).
fn go_status_text(e: &crate::rpctypes::ApiError) -> String {
    let code = match e.code() {
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::Unauthenticated => "Unauthenticated",
        tonic::Code::InvalidArgument => "InvalidArgument",
        _ => "Unknown",
    };
    format!("rpc error: code = {code} desc = {e}")
}

/// Responses a drain stamps with one copy of the member's header before building it anew:
/// building one reads the Raft status (a clone) and two locks, which per response would be
/// a good part of a live event's cost, while the term it carries changes rarely.
const HEADER_REUSES_MAX: u32 = 64;

/// The header a drain stamps its responses with, rebuilt every [`HEADER_REUSES_MAX`] uses.
struct Headers {
    base: ResponseHeader,
    uses: u32,
}

impl Headers {
    fn new(inner: &Inner) -> Self {
        Headers {
            base: inner.header(0),
            uses: 0,
        }
    }

    /// A header at `revision` (the current one if 0), as [`Inner::header`] gives.
    fn at(&mut self, inner: &Inner, revision: i64) -> Option<ResponseHeader> {
        self.uses += 1;
        if self.uses > HEADER_REUSES_MAX {
            *self = Headers::new(inner);
        }
        let revision = if revision == 0 {
            inner.store.current_revision()
        } else {
            revision
        };
        Some(ResponseHeader {
            revision,
            ..self.base
        })
    }
}

/// The Watch service.
pub struct WatchService(pub Arc<Inner>);

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

/// One watcher of a stream.
struct Watcher {
    store_id: WatcherId,
    progress_notify: bool,
    /// Whether responses of `--max-request-bytes` or more are sent in fragments (etcd's
    /// `fragment`).
    fragment: bool,
    /// Whether it started in the past and has not caught up yet: until then what it gets is
    /// sent as etcd sends a catch-up, in one response (at most 1,000 revisions) with the current
    /// revision, also the last part, which brings it up to date.
    catching_up: bool,
    /// Whether it had nothing to send at the last poll.
    caught_up: bool,
}

/// One stream's watchers, by their watch id.
struct Stream_ {
    inner: Arc<Inner>,
    /// Who opened the stream: each create is checked for read permission on its range.
    caller: Caller,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    wake: Arc<Notify>,
    /// The watchers the store said have something to poll: only they are polled.
    ready: Arc<parking_lot::Mutex<BTreeSet<i64>>>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl Stream_ {
    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.inner.header(revision))
    }

    /// The header of a compacted watcher's cancel: revision 0, as etcd's (its store reports the
    /// compaction with no revision).
    fn compacted_header(&self) -> Option<crate::proto::etcdserverpb::ResponseHeader> {
        let mut header = self.inner.header(0);
        header.revision = 0;
        Some(header)
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    /// Sends a response with events: in etcd's fragments if watcher `id` asked for them.
    async fn send_events(&self, id: i64, response: WatchResponse) -> bool {
        if !self.watchers.get(&id).is_some_and(|w| w.fragment) {
            return self.send(response).await;
        }
        let bytes_max = usize::try_from(self.inner.config.max_request_bytes).unwrap_or(usize::MAX);
        for part in split::fragments(response, bytes_max) {
            if !self.send(part).await {
                return false;
            }
        }
        true
    }

    async fn create(&mut self, create: WatchCreateRequest) -> bool {
        let refuse = |reason: &str| WatchResponse {
            header: None,
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_owned(),
            ..WatchResponse::default()
        };
        let mut key = create.key;
        if key.is_empty() {
            key = vec![0];
        }
        let spec = WatchSpec {
            key,
            range_end: create.range_end,
            prev_kv: create.prev_kv,
            no_put: create.filters.contains(&(FilterType::Noput as i32)),
            no_delete: create.filters.contains(&(FilterType::Nodelete as i32)),
        };
        let id = if create.watch_id != 0 {
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let mut response = if self.watchers.contains_key(&id) {
            refuse(DUPLICATE_ID)
        } else if spec.is_empty_range() {
            refuse(EMPTY_RANGE)
        } else if create.start_revision < 0 {
            refuse(COMPACTED)
        } else if let Err(e) =
            self.inner
                .auth()
                .check_access(&self.caller, &spec.key, &spec.range_end, Access::Read)
        {
            refuse(&go_status_text(&e))
        } else if self.watchers.len() >= STREAM_WATCHERS_MAX {
            refuse("strata: too many watchers on one stream")
        } else {
            WatchResponse {
                watch_id: id,
                created: true,
                ..WatchResponse::default()
            }
        };
        response.header = self.header(0);
        let created = !response.canceled;
        // The created reply goes first: the watcher's events are held until it is sent.
        if !self.send(response).await {
            return false;
        }
        if !created {
            return true;
        }
        let wake = Arc::clone(&self.wake);
        let ready = Arc::clone(&self.ready);
        // Read before the watcher exists: a write in between makes it catch up from the store,
        // but etcd too would have taken it as live (synced) then.
        let current_revision = self.inner.store.current_revision();
        let watched = self.inner.store.watch(
            spec,
            create.start_revision,
            WATCHER_BUFFER_EVENTS_DEFAULT,
            Arc::new(move || {
                ready.lock().insert(id);
                wake.notify_one();
            }),
        );
        match watched {
            Ok(store_id) => {
                self.watchers.insert(
                    id,
                    Watcher {
                        store_id,
                        progress_notify: create.progress_notify,
                        fragment: create.fragment,
                        catching_up: create.start_revision != 0
                            && create.start_revision <= current_revision,
                        caught_up: !self.ready.lock().contains(&id),
                    },
                );
                if id >= self.next_id {
                    self.next_id = id + 1;
                }
                true
            }
            // Behind the compacted revision: canceled with the compact revision, no reason
            // (etcd 3.5's answer; etcdctl shows it as ErrCompacted).
            Err(_) => {
                let compacted = WatchResponse {
                    header: self.compacted_header(),
                    watch_id: id,
                    canceled: true,
                    compact_revision: self.inner.store.compacted_revision(),
                    ..WatchResponse::default()
                };
                self.send(compacted).await
            }
        }
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(watcher) = self.watchers.remove(&id) else {
            // etcd does not answer an unknown id.
            return true;
        };
        self.inner.store.unwatch(watcher.store_id);
        let response = WatchResponse {
            header: self.header(0),
            watch_id: id,
            canceled: true,
            ..WatchResponse::default()
        };
        self.send(response).await
    }

    /// Sends what the ready watchers have, a response per poll; false once the client is gone.
    async fn drain(&mut self) -> bool {
        let ready: Vec<i64> = std::mem::take(&mut *self.ready.lock())
            .into_iter()
            .collect();
        let mut ids = Vec::with_capacity(ready.len());
        let mut store_ids = Vec::with_capacity(ready.len());
        for id in ready {
            if let Some(w) = self.watchers.get_mut(&id) {
                w.caught_up = false;
                ids.push(id);
                store_ids.push(w.store_id);
            }
        }
        let mut headers = Headers::new(&self.inner);
        let mut polls = Vec::new();
        let mut at = 0;
        while at < ids.len() {
            // The ready watchers' buffered events are taken in batches, each under one take of
            // the hub's lock, rather than a lock and a lookup per watcher.
            let answered = self.inner.store.watch_poll_buffered_many(
                &store_ids[at..],
                CATCH_UP_REVISIONS_MAX,
                DRAIN_BATCH_EVENTS_MAX,
                &mut polls,
            );
            for (i, first) in polls.drain(..).enumerate() {
                if !self
                    .drain_one(ids[at + i], store_ids[at + i], first, &mut headers)
                    .await
                {
                    return false;
                }
            }
            at += answered;
        }
        true
    }

    /// Sends what watcher `id` has, starting from `first`, its buffered poll: polls again until
    /// it is caught up; false once the client is gone.
    async fn drain_one(
        &mut self,
        id: i64,
        store_id: WatcherId,
        first: Result<Option<WatchPoll>, strata_mvcc::Error>,
        headers: &mut Headers,
    ) -> bool {
        let mut first = Some(first);
        while self.watchers.contains_key(&id) {
            // A live watcher's events are in its buffer: taken on the runtime, as a
            // blocking-pool round trip per event would cost far more than the take. Only
            // a watcher that is behind reads the store, off the runtime.
            let buffered = match first.take() {
                Some(buffered) => buffered,
                None => self
                    .inner
                    .store
                    .watch_poll_buffered(store_id, CATCH_UP_REVISIONS_MAX),
            };
            let polled = match buffered {
                Ok(Some(poll)) => Ok(Ok(poll)),
                Ok(None) => {
                    let store = Arc::clone(&self.inner.store);
                    tokio::task::spawn_blocking(move || {
                        store.watch_poll(store_id, CATCH_UP_REVISIONS_MAX)
                    })
                    .await
                }
                Err(e) => Ok(Err(e)),
            };
            let poll = match polled {
                Ok(Ok(poll)) => poll,
                Ok(Err(strata_mvcc::Error::Compacted)) => {
                    self.watchers.remove(&id);
                    self.inner.store.unwatch(store_id);
                    let response = WatchResponse {
                        header: self.compacted_header(),
                        watch_id: id,
                        canceled: true,
                        compact_revision: self.inner.store.compacted_revision(),
                        ..WatchResponse::default()
                    };
                    if !self.send(response).await {
                        return false;
                    }
                    break;
                }
                Ok(Err(e)) => {
                    let _ = self.out.send(Err(Status::internal(e.to_string()))).await;
                    return false;
                }
                Err(e) => {
                    let _ = self.out.send(Err(Status::internal(e.to_string()))).await;
                    return false;
                }
            };
            let mut catching_up = false;
            if let Some(w) = self.watchers.get_mut(&id) {
                w.caught_up = poll.caught_up;
                catching_up = w.catching_up;
                w.catching_up &= !poll.caught_up;
            }
            if poll.caught_up && !catching_up {
                // Live. A watcher keeping up has one revision per poll: one response, its
                // header at that revision (etcd's). One that fell behind between polls (its
                // client or this stream slower than the writes) has several: they go in one
                // response, up to a bound, its header at the last of them, as etcd sends a
                // watcher that fell behind (a revision is never split, the events stay in
                // order, and everything up to the header's revision has been sent). A response
                // per revision would cost this stream and its client a message per revision
                // exactly when they can least afford it.
                for (revision, events) in split::live(poll.events) {
                    let response = WatchResponse {
                        header: headers.at(&self.inner, revision),
                        watch_id: id,
                        events,
                        ..WatchResponse::default()
                    };
                    if !self.send_events(id, response).await {
                        return false;
                    }
                }
            } else if !poll.events.is_empty() {
                // Catch-up: up to 1,000 revisions at once, the header at the current one;
                // split at revisions past what any client can receive.
                let header = headers.at(&self.inner, 0);
                for events in split::at_revisions(poll.events, split::CATCH_UP_RESPONSE_BYTES_MAX) {
                    let response = WatchResponse {
                        header,
                        watch_id: id,
                        events,
                        ..WatchResponse::default()
                    };
                    if !self.send_events(id, response).await {
                        return false;
                    }
                }
            }
            if poll.caught_up {
                break;
            }
        }
        true
    }

    /// A progress response (`watch_id` -1) if every watcher is caught up (etcd's rule).
    async fn progress(&mut self) -> bool {
        if !self.drain().await {
            return false;
        }
        if self.watchers.values().all(|w| w.caught_up) {
            let response = WatchResponse {
                header: self.header(0),
                watch_id: -1,
                ..WatchResponse::default()
            };
            return self.send(response).await;
        }
        true
    }

    /// Progress notifications for idle caught-up watchers that asked for them.
    async fn notify_progress(&mut self) -> bool {
        let due: Vec<i64> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.progress_notify && w.caught_up)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let response = WatchResponse {
                header: self.header(0),
                watch_id: id,
                ..WatchResponse::default()
            };
            if !self.send(response).await {
                return false;
            }
        }
        true
    }

    fn close(&mut self) {
        for (_, watcher) in std::mem::take(&mut self.watchers) {
            self.inner.store.unwatch(watcher.store_id);
        }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.0.caller(&request).await?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        let mut stream = Stream_ {
            inner: Arc::clone(&self.0),
            caller,
            watchers: BTreeMap::new(),
            next_id: 0,
            wake: Arc::new(Notify::new()),
            ready: Arc::new(parking_lot::Mutex::new(BTreeSet::new())),
            out: tx,
        };
        tokio::spawn(async move {
            let wake = Arc::clone(&stream.wake);
            // How often an idle, caught-up watcher that asked for progress notifications
            // gets one (`--experimental-watch-progress-notify-interval`, etcd's 10 minutes).
            let every = stream.inner.config.watch_progress_notify_interval;
            let mut progress = tokio::time::interval(every);
            progress.tick().await;
            // Whether the client still sends: one that half-closes its side keeps its
            // watchers, as etcd's (its receive loop ends, the stream does not).
            let mut sending = true;
            loop {
                let open = tokio::select! {
                    request = incoming.next(), if sending => match request {
                        Some(Ok(request)) => match request.request_union {
                            Some(RequestUnion::CreateRequest(create)) => stream.create(create).await,
                            Some(RequestUnion::CancelRequest(cancel)) => {
                                stream.cancel(cancel.watch_id).await
                            }
                            Some(RequestUnion::ProgressRequest(_)) => stream.progress().await,
                            None => true,
                        },
                        None => {
                            sending = false;
                            true
                        }
                        Some(Err(_)) => false,
                    },
                    () = wake.notified() => stream.drain().await,
                    _ = progress.tick() => stream.notify_progress().await,
                    () = stream.out.closed() => false,
                };
                if !open {
                    break;
                }
            }
            stream.close();
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
