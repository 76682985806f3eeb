//! etcd's Lease service, and the leader's lessor: which leases expire when.
//!
//! Leases are replicated state (granted and revoked through Raft; `state.rs`), but their clocks
//! are the leader's alone, as etcd's: the leader keeps each lease's expiry in memory, refreshes
//! it on keep-alives (followers send theirs to the leader), and revokes expired leases through
//! Raft. A member that becomes leader gives every lease its remaining TTL plus an election
//! timeout from then, so a leader change never cuts a lease short.
//!
//! The remaining TTL is the lease's whole TTL (etcd's rule) unless the leader recorded a
//! shorter one: with lease checkpoints (`--experimental-enable-lease-checkpoint`, on by
//! default, every `--experimental-lease-checkpoint-interval`), the leader proposes each long
//! lease's remaining TTL, so leaders changing often cannot keep a lease alive forever by
//! giving it its whole TTL again and again. A keep-alive of a lease with a recorded remaining
//! TTL clears it through Raft before it is answered (etcd's rule): otherwise a new leader
//! could expire a lease its client has just renewed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Access, Caller};
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use crate::proto::strataserverpb::internal_client::InternalClient;
use crate::proto::strataserverpb::{raft_answer::Answer, raft_request::Request as Raft};
use crate::rpctypes::ApiError;
use crate::server::Inner;

/// etcd's largest TTL, in seconds.
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// How often the leader looks for expired leases (etcd: 500 ms).
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Revokes proposed per check at most (etcd revokes at most 1,000 a second): a mass expiry
/// does not flood the log.
const REVOKES_PER_CHECK: usize = 500;

/// A revoke proposed and not yet applied is proposed again after this long (etcd: 3 s).
const REVOKE_RETRY: Duration = Duration::from_secs(3);

/// Keep-alive answers buffered ahead of a slow client on one stream.
const KEEPALIVE_BUFFERED: usize = 16;

/// Leases recorded per checkpoint proposal at most (etcd's `maxLeaseCheckpointBatchSize`).
const CHECKPOINTS_PER_PROPOSAL: usize = 1000;

/// The leader's clocks: each lease's expiry, and the revokes and checkpoints under way.
#[derive(Debug, Default)]
pub struct Lessor {
    expiries: Mutex<HashMap<i64, Instant>>,
    revoking: Mutex<HashMap<i64, Instant>>,
    /// Held by a checkpoint pass from before it reads the expiries until its proposals are
    /// applied: a keep-alive of a lease the pass records waits for it (see
    /// [`Lessor::clear_checkpoint`]).
    checkpoint_pass: tokio::sync::Mutex<()>,
    /// The leases the pass under way records.
    checkpointing: Mutex<HashSet<i64>>,
}

/// The smallest TTL (etcd: 1.5 election timeouts, rounded up to whole seconds): a shorter one
/// could expire before a new leader could even be elected.
pub fn min_ttl(inner: &Inner) -> i64 {
    let ms = inner.config.election_timeout.as_millis() as i64 * 3 / 2;
    (ms + 999) / 1000
}

impl Lessor {
    /// Refreshes `id` (a keep-alive on the leader); returns its granted TTL, 0 if it does not
    /// exist.
    fn keep_alive(&self, inner: &Inner, id: i64) -> i64 {
        let Some(ttl) = inner.shared.0.read().leases.get(&id).copied() else {
            return 0;
        };
        self.expiries
            .lock()
            .insert(id, Instant::now() + Duration::from_secs(ttl.max(0) as u64));
        ttl
    }

    /// After a keep-alive of `id` (granted `ttl`) on the leader: a remaining TTL recorded for
    /// it (or being recorded by a pass under way) would let a new leader expire it before the
    /// TTL its client was just given, so it is cleared through Raft first. One proposal per
    /// lease per checkpoint, at its first keep-alive after it; a lease too short to be
    /// checkpointed costs nothing, a longer one a ReadIndex round.
    ///
    /// Why it cannot miss one: a checkpoint an earlier leader proposed (in its own term: it is
    /// never forwarded) is committed at the latest with this leader's first entry, which a
    /// ReadIndex round waits for, so after the round it is applied here. A pass of this leader marks its leases before it reads their
    /// expiries, and a keep-alive refreshes the expiry before it looks for the mark: either
    /// the pass read the refreshed expiry (and records about the whole TTL), or the keep-alive
    /// sees the mark and waits for the pass to be applied, then clears what it recorded.
    async fn clear_checkpoint(&self, inner: &Inner, id: i64, ttl: i64) -> Result<(), ApiError> {
        let recorded = || inner.shared.0.read().lease_remaining.contains_key(&id);
        let checkpointed = inner
            .config
            .lease_checkpoint_interval
            .is_some_and(|interval| u64::try_from(ttl).is_ok_and(|t| t > interval.as_secs()));
        if !checkpointed && !recorded() {
            return Ok(());
        }
        inner.read_barrier(false).await?;
        if self.checkpointing.lock().contains(&id) {
            drop(self.checkpoint_pass.lock().await);
        }
        if !recorded() {
            return Ok(());
        }
        let clear = LeaseCheckpoint {
            id,
            remaining_ttl: 0,
        };
        propose_while_leading(inner, vec![clear]).await
    }

    /// `id`'s remaining whole seconds and granted TTL; `None` if it does not exist.
    fn remaining(&self, inner: &Inner, id: i64) -> Option<(i64, i64)> {
        let (ttl, recorded) = {
            let state = inner.shared.0.read();
            let ttl = state.leases.get(&id).copied()?;
            (ttl, state.lease_remaining.get(&id).copied())
        };
        // Before this leader's first expiry check, what it will give the lease.
        let left = self
            .expiries
            .lock()
            .get(&id)
            .map_or(recorded.unwrap_or(ttl), |at| {
                at.saturating_duration_since(Instant::now()).as_secs() as i64
            });
        Some((left, ttl))
    }
}

/// One checkpoint pass of the leader: records the remaining TTL of every lease longer than
/// `interval` (a shorter one is renewed or expires before a checkpoint could matter: etcd's
/// rule), [`CHECKPOINTS_PER_PROPOSAL`] to a proposal. Skipped while another runs.
async fn checkpoint(inner: &Inner, interval: Duration) {
    let Ok(_pass) = inner.lessor.checkpoint_pass.try_lock() else {
        return;
    };
    let long: Vec<i64> = inner
        .shared
        .0
        .read()
        .leases
        .iter()
        .filter(|&(_, &ttl)| u64::try_from(ttl).is_ok_and(|ttl| ttl > interval.as_secs()))
        .map(|(&id, _)| id)
        .collect();
    // Marked before the expiries are read (see `Lessor::clear_checkpoint`).
    inner.lessor.checkpointing.lock().extend(&long);
    let now = Instant::now();
    let checkpoints: Vec<LeaseCheckpoint> = {
        let expiries = inner.lessor.expiries.lock();
        long.iter()
            .filter_map(|id| {
                let left = expiries.get(id)?.saturating_duration_since(now);
                // Whole seconds, rounded up: a lease is never recorded shorter than it is.
                let remaining_ttl = left.as_millis().div_ceil(1000) as i64;
                (remaining_ttl > 0).then_some(LeaseCheckpoint {
                    id: *id,
                    remaining_ttl,
                })
            })
            .collect()
    };
    for batch in checkpoints.chunks(CHECKPOINTS_PER_PROPOSAL) {
        if let Err(e) = propose_while_leading(inner, batch.to_vec()).await {
            tracing::debug!(error = %e, "lease checkpoint not applied");
        }
    }
    inner.lessor.checkpointing.lock().clear();
}

/// Proposes `checkpoints` on this member only while it leads (never forwarded): a record made
/// from a former leader's clocks must not be appended by a newer leader, after keep-alives it
/// has answered (see [`Lessor::clear_checkpoint`]).
async fn propose_while_leading(
    inner: &Inner,
    checkpoints: Vec<LeaseCheckpoint>,
) -> Result<(), ApiError> {
    let request = crate::proto::strataserverpb::RaftRequest {
        now_ms: crate::server::now_ms(),
        request: Some(Raft::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints,
        })),
        auth_revision: 0,
        // A member's own request: no permission applies.
        internal: true,
    };
    inner
        .propose_here(prost::Message::encode_to_vec(&request).into())
        .await
        .map(|_| ())
}

/// The leader's expiry loop: runs on every member, acts while it leads.
pub async fn expire(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
    let mut leading = false;
    let mut last_checkpoint = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if inner.leader_now() != inner.id {
            if leading {
                inner.lessor.expiries.lock().clear();
                inner.lessor.revoking.lock().clear();
            }
            leading = false;
            continue;
        }
        let now = Instant::now();
        // Each lease's whole TTL, or the remaining TTL last recorded for it.
        let leases: Vec<(i64, i64)> = {
            let state = inner.shared.0.read();
            state
                .leases
                .iter()
                .map(|(&id, &ttl)| (id, state.lease_remaining.get(&id).copied().unwrap_or(ttl)))
                .collect()
        };
        let live: HashSet<i64> = leases.iter().map(|&(id, _)| id).collect();
        let expired: Vec<i64> = {
            let mut expiries = inner.lessor.expiries.lock();
            // Newly leading: every lease gets its remaining TTL, plus an election timeout.
            let extra = if leading {
                Duration::ZERO
            } else {
                expiries.clear();
                inner.config.election_timeout
            };
            expiries.retain(|id, _| live.contains(id));
            for &(id, ttl) in &leases {
                expiries
                    .entry(id)
                    .or_insert(now + extra + Duration::from_secs(ttl.max(0) as u64));
            }
            let mut revoking = inner.lessor.revoking.lock();
            revoking
                .retain(|id, since| live.contains(id) && now.duration_since(*since) < REVOKE_RETRY);
            let expired: Vec<i64> = expiries
                .iter()
                .filter(|&(id, &at)| at <= now && !revoking.contains_key(id))
                .map(|(&id, _)| id)
                .take(REVOKES_PER_CHECK)
                .collect();
            for &id in &expired {
                revoking.insert(id, now);
            }
            expired
        };
        if !leading {
            last_checkpoint = now;
        }
        leading = true;
        if let Some(interval) = inner.config.lease_checkpoint_interval
            && now.duration_since(last_checkpoint) >= interval
        {
            last_checkpoint = now;
            let inner = Arc::clone(&inner);
            tokio::spawn(async move { checkpoint(&inner, interval).await });
        }
        for id in expired {
            let inner = Arc::clone(&inner);
            tokio::spawn(async move {
                if let Err(e) = inner
                    .propose(
                        &Caller::Member,
                        Raft::LeaseRevoke(LeaseRevokeRequest { id }),
                    )
                    .await
                {
                    tracing::debug!(lease = id, error = %e, "expiry revoke not applied yet");
                }
            });
        }
    }
}

/// The keys attached to each of `leases` now, in key order (from the lease index).
pub fn keys_of(inner: &Inner, leases: &[i64]) -> BTreeMap<i64, Vec<Vec<u8>>> {
    let state = inner.shared.0.read();
    leases
        .iter()
        .map(|id| {
            let keys = state
                .lease_keys
                .get(id)
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default();
            (*id, keys)
        })
        .collect()
}

/// Checks that `caller` may `access` every key attached to each of `leases`: an admin may,
/// anyone else needs the permission on every key (none attached: anyone may).
async fn check_leases(
    inner: &Inner,
    caller: &Caller,
    leases: &[i64],
    access: Access,
) -> Result<(), ApiError> {
    let auth = inner.auth();
    let exempt = match caller {
        Caller::Member => true,
        Caller::User { name, .. } => auth.is_admin(name),
        Caller::Anonymous => false,
    };
    if !auth.enabled || exempt {
        return Ok(());
    }
    for keys in keys_of(inner, leases).values() {
        for key in keys {
            auth.check_access(caller, key, &[], access)?;
        }
    }
    Ok(())
}

/// Answers a keep-alive: here if this member leads, else at the leader.
pub async fn keep_alive(
    inner: &Inner,
    caller: &Caller,
    id: i64,
) -> Result<LeaseKeepAliveResponse, ApiError> {
    // No check (etcd 3.4's): a renewal changes no key, and etcd's clients send no token with
    // Lease calls.
    let ttl = match inner.leader_channel().await? {
        None => {
            let ttl = inner.lessor.keep_alive(inner, id);
            if ttl > 0 {
                inner.lessor.clear_checkpoint(inner, id, ttl).await?;
            }
            ttl
        }
        Some(channel) => {
            let mut call = Request::new(LeaseKeepAliveRequest { id });
            inner.credentials(caller, &mut call);
            InternalClient::new(channel)
                .keep_alive(call)
                .await
                .map_err(crate::server::forwarded_error)?
                .into_inner()
                .ttl
        }
    };
    Ok(LeaseKeepAliveResponse {
        header: Some(inner.header(0)),
        id,
        ttl,
    })
}

/// Answers a time-to-live question: here if this member leads, else at the leader.
pub async fn time_to_live(
    inner: &Inner,
    caller: &Caller,
    request: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, ApiError> {
    if request.keys {
        // The names of the keys attached need read permission on each.
        check_leases(inner, caller, &[request.id], Access::Read).await?;
    }
    if let Some(channel) = inner.leader_channel().await? {
        let mut call = Request::new(request);
        inner.credentials(caller, &mut call);
        let mut response = InternalClient::new(channel)
            .time_to_live(call)
            .await
            .map_err(crate::server::forwarded_error)?
            .into_inner();
        response.header = Some(inner.header(0));
        return Ok(response);
    }
    let Some((left, granted)) = inner.lessor.remaining(inner, request.id) else {
        return Ok(LeaseTimeToLiveResponse {
            header: Some(inner.header(0)),
            id: request.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        });
    };
    let keys = if request.keys {
        keys_of(inner, &[request.id])
            .remove(&request.id)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(LeaseTimeToLiveResponse {
        header: Some(inner.header(0)),
        id: request.id,
        ttl: left,
        granted_ttl: granted,
        keys,
    })
}

/// The Lease service.
pub struct LeaseService(pub Arc<Inner>);

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        let mut request = request.into_inner();
        if request.ttl > LEASE_TTL_MAX {
            return Err(ApiError::LeaseTtlTooLarge.into());
        }
        // Shorter TTLs are raised silently, and the answer shows the real one (etcd's).
        request.ttl = request.ttl.max(min_ttl(inner));
        if request.id == 0 {
            // A positive id no lease has, picked here so that every member applies the same.
            request.id = loop {
                let id = (rand::random::<u64>() >> 1) as i64;
                if id != 0 && !inner.shared.0.read().leases.contains_key(&id) {
                    break id;
                }
            };
        }
        match inner.propose(&caller, Raft::LeaseGrant(request)).await? {
            Answer::LeaseGrant(mut response) => {
                crate::kv::fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        match inner
            .propose(&caller, Raft::LeaseRevoke(request.into_inner()))
            .await?
        {
            Answer::LeaseRevoke(mut response) => {
                crate::kv::fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inner = Arc::clone(&self.0);
        let caller = inner.caller(&request).await?;
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(KEEPALIVE_BUFFERED);
        tokio::spawn(async move {
            while let Some(Ok(request)) = incoming.next().await {
                let answer = keep_alive(&inner, &caller, request.id)
                    .await
                    .map_err(Status::from);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        Ok(Response::new(
            time_to_live(&self.0, &caller, request.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let inner = &self.0;
        // Ids only, no check (etcd 3.4's; etcd's clients send no token with Lease calls).
        let _ = request;
        let leases = inner
            .shared
            .0
            .read()
            .leases
            .keys()
            .map(|&id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(inner.header(0)),
            leases,
        }))
    }
}
