//! Forwarding writes to the leader: a follower sends the requests its clients write on one
//! long-lived stream to the leader's client port (`Internal/ProposeMany`), many per message,
//! and the leader answers each by its id as applying it answers, many per message.
//!
//! A unary call per request cost each forwarded write an HTTP/2 stream, a tonic request and
//! a response on both members: with clients spread over three members (as a client library
//! balancing over its endpoints spreads them), two writes in three are forwarded, and that
//! was the largest part of the leader's CPU. On one stream the framing is shared by every
//! request of a batch; what is left per request is its encoding and the leader's own work.
//!
//! Nothing is trusted from the follower that the unary `Propose` did not trust: each request
//! carries its caller's credentials (a token, or the members' secret), and the leader checks
//! it again as that caller.
//!
//! Bounds: a follower queues at most [`QUEUE_REQUESTS`] requests per leader (a client beyond
//! that waits, within its request's deadline); a batch holds at most [`BATCH_REQUESTS`]
//! requests or about [`BATCH_BYTES`]; the leader works on at most [`IN_FLIGHT`] requests and
//! [`IN_FLIGHT_BYTES`] of them from one stream at once, and reads no more of the stream until
//! one is answered.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use crate::auth::Caller;
use crate::proto::strataserverpb::internal_client::InternalClient;
use crate::proto::strataserverpb::{
    Forwarded, ForwardedAnswer, ForwardedAnswers, ForwardedBatch, RaftAnswer, RaftRequest, Refusal,
    raft_answer::Answer,
};
use crate::rpctypes::ApiError;
use crate::server::{Credential, Credentials, Inner, forwarded_error};

/// Requests a follower holds for one leader before they are sent.
pub const QUEUE_REQUESTS: usize = 4096;

/// Requests in one `ForwardedBatch` at most.
pub const BATCH_REQUESTS: usize = 256;

/// Bytes of requests in one batch at most (a single request larger than this is sent alone).
/// With the largest request a client may send, a batch stays within what the leader's
/// Internal service decodes (`--max-request-bytes` and 1 MiB).
pub const BATCH_BYTES: usize = 512 * 1024;

/// Batches a follower has encoded and the stream has not yet taken.
const OUTBOUND_BATCHES: usize = 4;

/// Requests of one stream the leader works on at once.
pub const IN_FLIGHT: usize = 4096;

/// Bytes of requests of one stream the leader works on at once (a single larger request is
/// let through alone).
pub const IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// Answers in one `ForwardedAnswers` at most.
const ANSWER_BATCH: usize = 256;

/// A request waiting to be sent, and where its answer goes.
struct Pending {
    request: RaftRequest,
    credential: Option<Credential>,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// The follower's side: one stream per leader, made when the first request needs it and made
/// again once it ends (the leader stepped down, restarted or could not be reached).
#[derive(Default)]
pub struct Forwarders {
    /// The leader the queue serves, with the client URL its stream was opened to.
    queue: Mutex<Option<(u64, String, mpsc::Sender<Pending>)>>,
}

impl std::fmt::Debug for Forwarders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarders").finish_non_exhaustive()
    }
}

impl Forwarders {
    /// Sends `request` for `caller` to `leader` and waits, up to `timeout`, for what applying
    /// it answered.
    ///
    /// # Errors
    ///
    /// The leader's refusal (passed through as its own `Propose` would have answered it),
    /// [`ApiError::LeaderChanged`] if the stream ends first, [`ApiError::Timeout`].
    pub async fn forward(
        &self,
        inner: &Inner,
        leader: u64,
        caller: &Caller,
        request: RaftRequest,
        timeout: Duration,
    ) -> Result<Answer, ApiError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request,
            credential: inner.credential(caller),
            reply,
        };
        tokio::time::timeout(timeout, async {
            let queue = self.queue(inner, leader).await?;
            queue
                .send(pending)
                .await
                .map_err(|_| ApiError::LeaderChanged)?;
            // A dropped reply: the stream ended before the request was sent.
            answer.await.unwrap_or(Err(ApiError::LeaderChanged))
        })
        .await
        .unwrap_or(Err(ApiError::Timeout))
    }

    /// The queue of the stream to `leader`, opened if there is none (or it ended, or the
    /// leader's URL changed). A queue to an earlier leader is dropped: its stream ends once the
    /// requests already sent on it are answered.
    async fn queue(&self, inner: &Inner, leader: u64) -> Result<mpsc::Sender<Pending>, ApiError> {
        let (url, channel) = inner.channel_with_url(leader).await?;
        let mut queue = self.queue.lock();
        if let Some((id, at, sender)) = queue.as_ref()
            && *id == leader
            && *at == url
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let (sender, receiver) = mpsc::channel(QUEUE_REQUESTS);
        tokio::spawn(run_stream(channel, receiver));
        *queue = Some((leader, url, sender.clone()));
        Ok(sender)
    }
}

/// Answers waiting for their requests' ids, on one stream.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    replies: HashMap<u64, oneshot::Sender<Result<Answer, ApiError>>>,
    /// Why the stream ended, once it has: later requests fail at once.
    ended: Option<Status>,
}

/// Takes `first` and whatever else is queued, within the batch limits, and registers their
/// replies. Returns the batch (`None` if the stream has already ended: the replies are
/// answered) and the request that did not fit, if one was taken.
fn gather(
    first: Pending,
    queue: &mut mpsc::Receiver<Pending>,
    waiting: &Mutex<Waiting>,
) -> (Option<ForwardedBatch>, Option<Pending>) {
    let mut waiting = waiting.lock();
    let mut requests = Vec::new();
    let mut bytes = 0;
    let mut next = Some(first);
    while let Some(pending) = next.take() {
        if let Some(ended) = &waiting.ended {
            let _ = pending.reply.send(Err(forwarded_error(ended.clone())));
            return (None, None);
        }
        let size = pending.request.encoded_len()
            + match &pending.credential {
                Some(Credential::Token(token)) => token.len(),
                Some(Credential::MemberSecret(secret)) => secret.len(),
                Some(Credential::Vouched(name, secret)) => name.len() + secret.len(),
                None => 0,
            };
        if !requests.is_empty() && bytes + size > BATCH_BYTES {
            return (Some(ForwardedBatch { requests }), Some(pending));
        }
        bytes += size;
        let id = waiting.next_id;
        waiting.next_id += 1;
        waiting.replies.insert(id, pending.reply);
        let mut forwarded = Forwarded {
            id,
            request: Some(pending.request),
            ..Forwarded::default()
        };
        match pending.credential {
            Some(Credential::Token(token)) => forwarded.token = token,
            Some(Credential::MemberSecret(secret)) => forwarded.member_secret = secret,
            Some(Credential::Vouched(name, secret)) => {
                forwarded.certified_user = name;
                forwarded.vouching_secret = secret;
            }
            None => {}
        }
        requests.push(forwarded);
        if requests.len() < BATCH_REQUESTS {
            next = queue.try_recv().ok();
        }
    }
    (Some(ForwardedBatch { requests }), None)
}

/// Answers every waiting request with `end`, and every later one.
fn end_stream(waiting: &Mutex<Waiting>, end: Status) {
    let mut waiting = waiting.lock();
    for (_, reply) in waiting.replies.drain() {
        let _ = reply.send(Err(forwarded_error(end.clone())));
    }
    waiting.ended = Some(end);
}

/// Opens the stream on `channel` with the first queued request and sends batches until the
/// queue is dropped or the stream ends; a second task reads the answers, so a stalled send
/// never holds answers back.
async fn run_stream(channel: tonic::transport::Channel, mut queue: mpsc::Receiver<Pending>) {
    let Some(first) = queue.recv().await else {
        return;
    };
    let waiting = Arc::new(Mutex::new(Waiting::default()));
    let (batches, outbound) = mpsc::channel(OUTBOUND_BATCHES);
    let (batch, mut carried) = gather(first, &mut queue, &waiting);
    if let Some(batch) = batch {
        // The channel is new and empty: this cannot fail for want of room.
        let _ = batches.try_send(batch);
    }
    let mut client = InternalClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let inbound = match client
        .propose_many(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            // The queued requests are dropped with the queue: their senders see a leader change.
            end_stream(&waiting, status);
            return;
        }
    };
    let (ended_tx, mut ended) = oneshot::channel::<()>();
    tokio::spawn(read_answers(inbound, Arc::clone(&waiting), ended_tx));
    loop {
        let first = match carried.take() {
            Some(pending) => pending,
            None => tokio::select! {
                pending = queue.recv() => match pending {
                    Some(pending) => pending,
                    None => break,
                },
                _ = &mut ended => break,
            },
        };
        let (batch, rest) = gather(first, &mut queue, &waiting);
        carried = rest;
        let Some(batch) = batch else {
            break;
        };
        if batches.send(batch).await.is_err() {
            break;
        }
    }
    // Dropping `batches` ends the outbound stream; the leader answers what it has, and the
    // reader delivers it. Requests still queued are dropped: their senders see a leader change.
}

/// Delivers the answers of one stream until it ends, then fails whatever is still waiting.
async fn read_answers(
    mut inbound: Streaming<ForwardedAnswers>,
    waiting: Arc<Mutex<Waiting>>,
    ended: oneshot::Sender<()>,
) {
    let end = loop {
        match inbound.message().await {
            Ok(Some(answers)) => {
                let mut waiting = waiting.lock();
                for answer in answers.answers {
                    let Some(reply) = waiting.replies.remove(&answer.id) else {
                        continue;
                    };
                    let _ = reply.send(decode_answer(answer));
                }
            }
            Ok(None) => break Status::unavailable("the leader closed the forwarding stream"),
            Err(status) => break status,
        }
    };
    end_stream(&waiting, end);
    let _ = ended.send(());
}

/// What the follower's client gets for one answer.
fn decode_answer(answer: ForwardedAnswer) -> Result<Answer, ApiError> {
    if let Some(error) = answer.error {
        return Err(forwarded_error(Status::new(
            tonic::Code::from(error.code),
            error.message,
        )));
    }
    answer
        .answer
        .and_then(|a| a.answer)
        .ok_or_else(|| ApiError::Internal("an empty answer".to_owned()))
}

/// The leader's side of `ProposeMany`: reads batches, works on each request (up to
/// [`IN_FLIGHT`] at once) and streams the answers back in batches. The returned stream ends
/// once the follower's side has ended and every request read is answered.
pub fn serve_stream(inner: Arc<Inner>, mut inbound: Streaming<ForwardedBatch>) -> AnswerStream {
    let (answers, receiver) = mpsc::channel(IN_FLIGHT);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let byte_permits = Arc::new(Semaphore::new(IN_FLIGHT_BYTES));
    tokio::spawn(async move {
        while let Ok(Some(batch)) = inbound.message().await {
            for forwarded in batch.requests {
                // Held until the answer is queued: the queue has room for every permit, so
                // answering never waits on the follower reading.
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let bytes = forwarded.encoded_len().clamp(1, IN_FLIGHT_BYTES);
                let Ok(byte_permit) = Arc::clone(&byte_permits)
                    .acquire_many_owned(u32::try_from(bytes).unwrap_or(u32::MAX))
                    .await
                else {
                    return;
                };
                let inner = Arc::clone(&inner);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let id = forwarded.id;
                    let answer = match answer_one(&inner, forwarded).await {
                        Ok(answer) => ForwardedAnswer {
                            id,
                            answer: Some(RaftAnswer {
                                answer: Some(answer),
                            }),
                            error: None,
                        },
                        Err(e) => {
                            let status = e.to_status();
                            ForwardedAnswer {
                                id,
                                answer: None,
                                error: Some(Refusal {
                                    code: status.code() as i32,
                                    message: status.message().to_owned(),
                                }),
                            }
                        }
                    };
                    let _ = answers.send(answer).await;
                    drop((permit, byte_permit));
                });
            }
        }
    });
    AnswerStream { receiver }
}

/// One forwarded request on the leader, as the unary `Propose` handles it.
async fn answer_one(inner: &Inner, forwarded: Forwarded) -> Result<Answer, ApiError> {
    let given = |bytes: Vec<u8>| (!bytes.is_empty()).then_some(bytes);
    let caller = inner
        .caller_from(Credentials {
            member_secret: given(forwarded.member_secret),
            vouched: (!forwarded.certified_user.is_empty())
                .then_some(forwarded.certified_user)
                .zip(given(forwarded.vouching_secret)),
            token: (!forwarded.token.is_empty()).then_some(forwarded.token),
            // A certificate presented to the follower reaches the leader only vouched for.
            certified: None,
        })
        .await?;
    let request = forwarded
        .request
        .ok_or_else(|| ApiError::Invalid("an empty request".to_owned()))?;
    propose_forwarded(inner, &caller, request).await
}

/// Proposes a request a follower forwarded for `caller`, on this member, which must lead.
/// What the follower set beyond the request and its clock is not trusted: the request is
/// checked again here.
///
/// # Errors
///
/// [`ApiError::LeaderChanged`] if this member does not lead; the check's and the proposal's.
pub async fn propose_forwarded(
    inner: &Inner,
    caller: &Caller,
    forwarded: RaftRequest,
) -> Result<Answer, ApiError> {
    if inner.leader_now() != inner.id {
        // Never forwarded twice: the sender retries with the leader it learns next.
        return Err(ApiError::LeaderChanged);
    }
    let Some(wrapped) = forwarded.request else {
        return Err(ApiError::Invalid("an empty request".to_owned()));
    };
    let checked = inner.prepare(caller, wrapped, forwarded.now_ms).await?;
    let bytes = prost::Message::encode_to_vec(&checked);
    inner.propose_here(bytes.into()).await
}

/// The answers of one `ProposeMany` stream, as many as are ready per message.
pub struct AnswerStream {
    receiver: mpsc::Receiver<ForwardedAnswer>,
}

impl Stream for AnswerStream {
    type Item = Result<ForwardedAnswers, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let first = match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(first)) => first,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        let mut answers = vec![first];
        while answers.len() < ANSWER_BATCH {
            match self.receiver.try_recv() {
                Ok(answer) => answers.push(answer),
                Err(_) => break,
            }
        }
        Poll::Ready(Some(Ok(ForwardedAnswers { answers })))
    }
}
