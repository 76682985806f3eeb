//! etcd's Election service (`v3electionpb.Election`), run in the server as etcd runs it: the
//! recipe of etcd's `concurrency.Election` on the caller's lease. A candidate's key is
//! `name/<lease in hex>` holding its value; the first-created key under `name/` is the leader's.

use crate::auth::{Access, Caller};
use std::pin::Pin;
use std::sync::Arc;

use strata_mvcc::WatchSpec;
use strata_mvcc::api::{
    Compare, DeleteRangeRequest, KeyValue, PutRequest, RequestOp, TxnRequest, compare, request_op,
};
use tokio::sync::{Notify, mpsc};
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};

use crate::lock::{claim, oldest_query, prefix_end, wait_turn};
use crate::proto::etcdserverpb::ResponseHeader;
use crate::proto::strataserverpb::{raft_answer::Answer, raft_request::Request as Raft};
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::rpctypes::ApiError;
use crate::server::Inner;

/// Leader changes buffered ahead of a slow observer.
const OBSERVE_BUFFERED: usize = 16;

/// etcd's `concurrency.ErrElectionNotLeader`.
const NOT_LEADER: &str = "election: not leader";
/// etcd's `concurrency.ErrElectionNoLeader`.
const NO_LEADER: &str = "election: no leader";

/// The Election service.
pub struct ElectionService(pub Arc<Inner>);

fn prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A txn that runs `op` if `leader` still holds its key (the key's create revision is its).
fn if_holder(leader: &LeaderKey, op: request_op::Request) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: leader.key.clone(),
            target_union: Some(compare::TargetUnion::CreateRevision(leader.rev)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp { request: Some(op) }],
        failure: Vec::new(),
    }
}

/// Runs a txn; returns whether its compares held, and its header.
async fn run(
    inner: &Inner,
    caller: &Caller,
    txn: TxnRequest,
) -> Result<(bool, Option<ResponseHeader>), ApiError> {
    match inner.propose(caller, Raft::Txn(txn)).await? {
        Answer::Txn(mut response) => {
            crate::kv::fill(inner, &mut response.header);
            Ok((response.succeeded, response.header))
        }
        other => Err(ApiError::Internal(format!(
            "an unexpected answer: {other:?}"
        ))),
    }
}

/// The leader of `name` now (the first-created key under it), and the revision read at.
async fn leader(
    inner: &Inner,
    caller: &Caller,
    name: &[u8],
) -> Result<(Option<KeyValue>, i64), ApiError> {
    let prefix = prefix(name);
    inner.read_barrier(false).await?;
    inner
        .auth()
        .check_access(caller, &prefix, &prefix_end(&prefix), Access::Read)?;
    let store = Arc::clone(&inner.store);
    let query = oldest_query(&prefix, 0);
    let found = tokio::task::spawn_blocking(move || store.range_request(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    let revision = found.header.map_or(0, |h| h.revision);
    Ok((found.kvs.into_iter().next(), revision))
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        let prefix = prefix(&request.name);
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", request.lease).as_bytes());
        let (rev, created) = claim(inner, &caller, &key, &request.value, request.lease).await?;
        let leader = LeaderKey {
            name: request.name.clone(),
            key: key.clone(),
            rev,
            lease: request.lease,
        };
        if !created {
            // Already a candidate (a retry): its value becomes the one campaigned with.
            let put = request_op::Request::RequestPut(PutRequest {
                key,
                value: request.value,
                lease: request.lease,
                ..PutRequest::default()
            });
            run(inner, &caller, if_holder(&leader, put)).await?;
        }
        wait_turn(inner, &caller, &prefix, rev).await?;
        Ok(Response::new(CampaignResponse {
            header: Some(inner.header(0)),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        let leader = request.leader.unwrap_or_default();
        let put = request_op::Request::RequestPut(PutRequest {
            key: leader.key.clone(),
            value: request.value,
            lease: leader.lease,
            ..PutRequest::default()
        });
        let (held, header) = run(inner, &caller, if_holder(&leader, put)).await?;
        if !held {
            return Err(Status::new(Code::FailedPrecondition, NOT_LEADER));
        }
        Ok(Response::new(ProclaimResponse { header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        let (kv, _) = leader(inner, &caller, &request.into_inner().name).await?;
        match kv {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: Some(inner.header(0)),
                kv: Some(kv),
            })),
            None => Err(Status::new(Code::NotFound, NO_LEADER)),
        }
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let inner = Arc::clone(&self.0);
        let caller = inner.caller(&request).await?;
        let name = request.into_inner().name;
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFERED);
        let (_, start) = leader(&inner, &caller, &name).await?;
        let wake = Arc::new(Notify::new());
        let notify = Arc::clone(&wake);
        let prefix = prefix(&name);
        let spec = WatchSpec {
            key: prefix.clone(),
            range_end: prefix_end(&prefix),
            ..WatchSpec::default()
        };
        let id = inner
            .store
            .watch(spec, start + 1, 64, Arc::new(move || notify.notify_one()))
            .map_err(ApiError::from)?;
        tokio::spawn(async move {
            // What the observer last saw: (key, mod revision) of the leader's version.
            let mut shown: Option<(Vec<u8>, i64)> = None;
            loop {
                match leader(&inner, &caller, &name).await {
                    Ok((Some(kv), _)) => {
                        let seen = (kv.key.clone(), kv.mod_revision);
                        if shown.as_ref() != Some(&seen) {
                            shown = Some(seen);
                            let response = LeaderResponse {
                                header: Some(inner.header(0)),
                                kv: Some(kv),
                            };
                            if tx.send(Ok(response)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok((None, _)) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                }
                // Until the next change under the name (the events themselves are not needed:
                // the leader is read again).
                tokio::select! {
                    () = wake.notified() => {}
                    () = tx.closed() => break,
                }
                let store = Arc::clone(&inner.store);
                let drained = tokio::task::spawn_blocking(move || {
                    loop {
                        match store.watch_poll(id, strata_mvcc::CATCH_UP_REVISIONS_MAX) {
                            Ok(poll) if poll.caught_up => return Ok(()),
                            Ok(_) => {}
                            Err(e) => return Err(e),
                        }
                    }
                })
                .await;
                if !matches!(drained, Ok(Ok(())))
                    && !matches!(drained, Ok(Err(strata_mvcc::Error::Compacted)))
                {
                    break;
                }
            }
            inner.store.unwatch(id);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let inner = &self.0;
        let caller = inner.caller(&request).await?;
        let leader = request.into_inner().leader.unwrap_or_default();
        let delete = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..DeleteRangeRequest::default()
        });
        // Not holding it any more is no error (etcd's Resign).
        let (_, header) = run(inner, &caller, if_holder(&leader, delete)).await?;
        Ok(Response::new(ResignResponse { header }))
    }
}
