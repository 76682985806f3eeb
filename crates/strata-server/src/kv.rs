//! etcd's KV service: reads at this member (after a ReadIndex round unless serializable),
//! writes through Raft.

use std::sync::Arc;

use strata_mvcc::api::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    request_op::Request as Op,
};
use tonic::{Request, Response, Status};

use crate::auth::Access;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::strataserverpb::{raft_answer::Answer, raft_request::Request as Raft};
use crate::rpctypes::ApiError;
use crate::server::Inner;

/// The KV service.
pub struct KvService(pub Arc<Inner>);

/// Fills a header's member fields, keeping the revision the store set (or the current one).
pub fn fill(inner: &Inner, header: &mut Option<ResponseHeader>) {
    let revision = header.as_ref().map_or(0, |h| h.revision);
    *header = Some(inner.header(revision));
}

/// Whether every range a read-only txn holds is serializable.
fn txn_serializable(txn: &TxnRequest) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(t)) => txn_serializable(t),
            _ => true,
        })
}

fn unexpected(answer: &Answer) -> Status {
    ApiError::Internal(format!("an unexpected answer: {answer:?}")).into()
}

impl KvService {
    /// Refuses what a learner does not serve.
    fn voter_only(&self) -> Result<(), Status> {
        if self.0.is_learner() {
            return Err(ApiError::NotSupportedForLearner.into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let inner = &self.0;
        inner.metrics.requests.range.inc();
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        strata_mvcc::check_range(&request).map_err(ApiError::from)?;
        if !request.serializable {
            self.voter_only()?;
        }
        inner.read_barrier(request.serializable).await?;
        // After the barrier: a linearizable read is checked against every acknowledged change.
        inner
            .auth()
            .check_access(&caller, &request.key, &request.range_end, Access::Read)?;
        let mut response = if request.range_end.is_empty() {
            // One key: a seek or two, cheaper here than handed to the blocking pool and back
            // (two thread switches per get).
            inner.store.range_request(&request)
        } else {
            let store = Arc::clone(&inner.store);
            tokio::task::spawn_blocking(move || store.range_request(&request))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
        }
        .map_err(ApiError::from)?;
        fill(inner, &mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        self.voter_only()?;
        let inner = &self.0;
        inner.metrics.requests.put.inc();
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        strata_mvcc::check_put(&request).map_err(ApiError::from)?;
        match inner.propose(&caller, Raft::Put(request)).await? {
            Answer::Put(mut response) => {
                fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        self.voter_only()?;
        let inner = &self.0;
        inner.metrics.requests.delete_range.inc();
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        strata_mvcc::check_delete_range(&request).map_err(ApiError::from)?;
        match inner.propose(&caller, Raft::DeleteRange(request)).await? {
            Answer::DeleteRange(mut response) => {
                fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.voter_only()?;
        let inner = &self.0;
        inner.metrics.requests.txn.inc();
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        strata_mvcc::check_txn(&request, inner.config.max_txn_ops as usize)
            .map_err(ApiError::from)?;
        if strata_mvcc::txn_is_read_only(&request) {
            // Nothing to replicate: a read at this member, linearizable unless every range
            // in it is serializable.
            inner.read_barrier(txn_serializable(&request)).await?;
            inner.auth().check_read_txn(&caller, &request)?;
            let store = Arc::clone(&inner.store);
            let mut response = tokio::task::spawn_blocking(move || store.read_txn(&request))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(ApiError::from)?;
            fill(inner, &mut response.header);
            return Ok(Response::new(response));
        }
        match inner.propose(&caller, Raft::Txn(request)).await? {
            Answer::Txn(mut response) => {
                fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.voter_only()?;
        let inner = &self.0;
        inner.metrics.requests.compact.inc();
        let caller = inner.caller(&request).await?;
        let request = request.into_inner();
        let (revision, physical) = (request.revision, request.physical);
        match inner.propose(&caller, Raft::Compaction(request)).await? {
            Answer::Compaction(mut response) => {
                if physical {
                    // Returns once this member's removal of the old versions is done.
                    let mut done = inner.physical.clone();
                    let _ = done.wait_for(|&at| at >= revision).await;
                }
                fill(inner, &mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }
}
