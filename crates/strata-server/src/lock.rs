//! etcd's Lock service (`v3lockpb.Lock`), run in the server as etcd runs it: the recipe of
//! etcd's `concurrency.Mutex` on the caller's lease. The lock's key is `name/<lease in hex>`;
//! whoever's key under `name/` was created first holds it, the others wait for the key created
//! just before theirs to go (a watch), and a holder's key goes with its lease.

use crate::auth::{Access, Caller};
use std::sync::Arc;

use strata_mvcc::WatchSpec;
use strata_mvcc::api::event::EventType;
use strata_mvcc::api::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, range_request, request_op,
    response_op,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::proto::strataserverpb::{raft_answer::Answer, raft_request::Request as Raft};
use crate::proto::v3lockpb::lock_server::Lock;
use crate::proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use crate::rpctypes::ApiError;
use crate::server::Inner;

/// The Lock service.
pub struct LockService(pub Arc<Inner>);

/// The end of the range of keys that start with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn range_op(request: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(request)),
    }
}

/// The first-created key under `prefix`, the first one created before `before` (0: any).
pub(crate) fn oldest_query(prefix: &[u8], before: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: if before > 0 {
            range_request::SortOrder::Descend as i32
        } else {
            range_request::SortOrder::Ascend as i32
        },
        sort_target: range_request::SortTarget::Create as i32,
        max_create_revision: if before > 0 { before - 1 } else { 0 },
        ..RangeRequest::default()
    }
}

/// Puts `key` with `value` on `lease` unless it exists (etcd's session recipe); returns the
/// key's create revision and whether this call created it.
pub async fn claim(
    inner: &Inner,
    caller: &Caller,
    key: &[u8],
    value: &[u8],
    lease: i64,
) -> Result<(i64, bool), ApiError> {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
                ..PutRequest::default()
            })),
        }],
        failure: vec![range_op(RangeRequest {
            key: key.to_vec(),
            ..RangeRequest::default()
        })],
    };
    let Answer::Txn(response) = inner.propose(caller, Raft::Txn(txn)).await? else {
        return Err(ApiError::Internal(
            "an unexpected answer to a lock's txn".to_owned(),
        ));
    };
    let revision = response.header.as_ref().map_or(0, |h| h.revision);
    if response.succeeded {
        return Ok((revision, true));
    }
    let created = response
        .responses
        .into_iter()
        .find_map(|op| match op.response {
            Some(response_op::Response::ResponseRange(r)) => r.kvs.into_iter().next(),
            _ => None,
        })
        .map_or(revision, |kv| kv.create_revision);
    Ok((created, false))
}

/// Waits until no key under `prefix` was created before `mine` (each wait is a watch on the
/// key created just before it, until it is deleted).
pub async fn wait_turn(
    inner: &Inner,
    caller: &Caller,
    prefix: &[u8],
    mine: i64,
) -> Result<(), ApiError> {
    inner
        .fresh_auth()
        .await?
        .check_access(caller, prefix, &prefix_end(prefix), Access::Read)?;
    loop {
        inner.read_barrier(false).await?;
        let store = Arc::clone(&inner.store);
        let query = oldest_query(prefix, mine);
        let before = tokio::task::spawn_blocking(move || store.range_request(&query))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
        let Some(blocker) = before.kvs.into_iter().next() else {
            return Ok(());
        };
        let at = before.header.map_or(0, |h| h.revision);
        wait_deleted(inner, &blocker.key, at + 1).await?;
    }
}

/// Waits until `key` is deleted at or after revision `from`.
async fn wait_deleted(inner: &Inner, key: &[u8], from: i64) -> Result<(), ApiError> {
    let wake = Arc::new(Notify::new());
    let notify = Arc::clone(&wake);
    let spec = WatchSpec {
        key: key.to_vec(),
        range_end: Vec::new(),
        prev_kv: false,
        no_put: true,
        no_delete: false,
    };
    let id = inner
        .store
        .watch(spec, from, 16, Arc::new(move || notify.notify_one()))
        .map_err(ApiError::from)?;
    /// Unwatches however the wait ends (the client may go away).
    struct Unwatch<'a>(&'a Inner, strata_mvcc::WatcherId);
    impl Drop for Unwatch<'_> {
        fn drop(&mut self) {
            self.0.store.unwatch(self.1);
        }
    }
    let _guard = Unwatch(inner, id);
    loop {
        wake.notified().await;
        let store = Arc::clone(&inner.store);
        let poll = tokio::task::spawn_blocking(move || store.watch_poll(id, 16))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        match poll {
            Ok(poll) => {
                if poll
                    .events
                    .iter()
                    .any(|e| e.r#type == EventType::Delete as i32)
                {
                    return Ok(());
                }
                if !poll.caught_up {
                    wake.notify_one();
                }
            }
            // Compacted past: read again (the key may be gone).
            Err(strata_mvcc::Error::Compacted) => return Ok(()),
            Err(e) => return Err(ApiError::from(e)),
        }
    }
}

/// Deletes `key` (an unlock, a resign, or a wait given up).
pub async fn release(
    inner: &Inner,
    caller: &Caller,
    key: Vec<u8>,
) -> Result<Option<crate::proto::etcdserverpb::ResponseHeader>, ApiError> {
    let request = strata_mvcc::api::DeleteRangeRequest {
        key,
        ..Default::default()
    };
    match inner.propose(caller, Raft::DeleteRange(request)).await? {
        Answer::DeleteRange(mut response) => {
            crate::kv::fill(inner, &mut response.header);
            Ok(response.header)
        }
        other => Err(ApiError::Internal(format!(
            "an unexpected answer: {other:?}"
        ))),
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let inner = Arc::clone(&self.0);
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        let mut prefix = request.name.clone();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", request.lease).as_bytes());
        let (mine, _) = claim(&inner, &caller, &key, b"", request.lease).await?;
        // If the client goes away while waiting, its key goes too (etcd's Mutex does the same),
        // so that it does not hold the lock it never learned it had.
        struct GiveUp(Option<(Arc<Inner>, Caller, Vec<u8>)>);
        impl Drop for GiveUp {
            fn drop(&mut self) {
                if let Some((inner, caller, key)) = self.0.take() {
                    tokio::spawn(async move {
                        let _ = release(&inner, &caller, key).await;
                    });
                }
            }
        }
        let mut give_up = GiveUp(Some((Arc::clone(&inner), caller.clone(), key.clone())));
        wait_turn(&inner, &caller, &prefix, mine).await?;
        give_up.0 = None;
        Ok(Response::new(LockResponse {
            header: Some(inner.header(0)),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let header = release(&self.0, &caller, request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header }))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_etcds() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
