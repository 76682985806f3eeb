//! etcd's Maintenance service: Status, Alarm, Defragment, Hash, HashKV, Snapshot, MoveLeader.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use strata_raft::Role;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::maintenance_server::Maintenance;
use crate::proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    alarm_request::AlarmAction,
};
use crate::proto::strataserverpb::{raft_answer::Answer, raft_request::Request as Raft};
use crate::rpctypes::ApiError;
use crate::server::{ETCD_VERSION, Inner};

/// Snapshot bytes per streamed message (etcd sends 32 KiB; larger blobs mean fewer messages).
const SNAPSHOT_BLOB_BYTES: usize = 1 << 20;

/// Streamed snapshot messages buffered ahead of a slow client (each at most
/// [`SNAPSHOT_BLOB_BYTES`]): bounds the memory one download holds.
const SNAPSHOT_BUFFERED_BLOBS: usize = 4;

/// How long a leader transfer may take before MoveLeader gives up.
const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Maintenance service.
pub struct MaintenanceService(pub Arc<Inner>);

/// The bytes of the LSM's files on disk (tables, manifest) and of the writes its memtables
/// hold that no file has yet (it keeps no WAL): the database size Status reports and the quota
/// counts, as etcd counts its bbolt file, which grows with every write.
pub fn db_size_bytes(inner: &Inner) -> u64 {
    dir_bytes(&inner.config.data_dir.join("member").join("db"), 2) + inner.db.stats().memtable_bytes
}

/// The bytes of the files in `dir` and its subdirectories down to `depth` levels.
fn dir_bytes(dir: &std::path::Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_file() => m.len(),
            Ok(m) if m.is_dir() && depth > 0 => dir_bytes(&entry.path(), depth - 1),
            _ => 0,
        })
        .sum()
}

/// Checks that the caller of `request` is an admin (etcd's rule for the maintenance calls
/// that read everything or change the member).
async fn admin<T>(inner: &Inner, request: &Request<T>) -> Result<(), Status> {
    let caller = inner.caller(request).await?;
    inner.fresh_auth().await?.check_admin(&caller)?;
    Ok(())
}

/// The alarms raised, as Alarm and Status report them.
fn alarms(inner: &Inner) -> Vec<AlarmMember> {
    inner
        .shared
        .0
        .read()
        .alarms
        .iter()
        .map(|&(member_id, alarm)| AlarmMember { member_id, alarm })
        .collect()
}

/// The Snapshot stream.
type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        let inner = &self.0;
        let request = request.into_inner();
        let alarms = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => {
                inner.auth().check_user(&caller)?;
                alarms(inner)
            }
            Ok(_) => match inner.propose(&caller, Raft::Alarm(request)).await? {
                Answer::Alarm(response) => response.alarms,
                other => {
                    return Err(
                        ApiError::Internal(format!("an unexpected answer: {other:?}")).into(),
                    );
                }
            },
            Err(_) => return Err(ApiError::Invalid("unknown alarm action".to_owned()).into()),
        };
        Ok(Response::new(AlarmResponse {
            header: Some(inner.header(0)),
            alarms,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.0.auth().check_user(&caller)?;
        let inner = &self.0;
        let status = inner.status();
        let size = db_size_bytes(inner) as i64;
        let errors = alarms(inner)
            .into_iter()
            .map(|a| {
                let name = AlarmType::try_from(a.alarm).map_or("UNKNOWN", |t| t.as_str_name());
                format!("memberID:{} alarm:{name} ", a.member_id)
            })
            .collect();
        Ok(Response::new(StatusResponse {
            header: Some(inner.header(0)),
            version: ETCD_VERSION.to_owned(),
            db_size: size,
            leader: status.leader,
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: *inner.node.applied().borrow(),
            errors,
            db_size_in_use: size,
            is_learner: inner.is_learner(),
        }))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        admin(&self.0, &request).await?;
        // An LSM has nothing to defragment: compaction rewrites tables in the background, and
        // this only asks for a full one now (returning when it is done). Reads and writes go on
        // meanwhile, unlike etcd's stop-the-world defragmentation.
        let db = Arc::clone(&self.0.db);
        tokio::task::spawn_blocking(move || db.compact())
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        admin(&self.0, &request).await?;
        let store = Arc::clone(&self.0.store);
        let hash = tokio::task::spawn_blocking(move || store.hash_kv(0))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
        Ok(Response::new(HashResponse {
            header: Some(self.0.header(0)),
            hash: hash.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        admin(&self.0, &request).await?;
        let revision = request.into_inner().revision;
        let store = Arc::clone(&self.0.store);
        let hash = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.0.header(0)),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        admin(&self.0, &request).await?;
        let inner = Arc::clone(&self.0);
        let export = crate::snapshot_file::export(&inner).await?;
        let header = inner.header(0);
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_BUFFERED_BLOBS);
        tokio::task::spawn_blocking(move || {
            let result = export.stream(SNAPSHOT_BLOB_BYTES, |blob, remaining| {
                tx.blocking_send(Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: remaining,
                    blob,
                }))
                .is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(ApiError::Internal(e.to_string()).into()));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        admin(&self.0, &request).await?;
        let inner = &self.0;
        let target = request.into_inner().target_id;
        if inner.status().role != Role::Leader {
            return Err(ApiError::NotLeader.into());
        }
        let votes = inner
            .shared
            .0
            .read()
            .members
            .get(&target)
            .is_some_and(|m| !m.is_learner);
        if !votes {
            return Err(ApiError::BadLeaderTransferee.into());
        }
        if target != inner.id {
            inner
                .node
                .transfer_leader(target)
                .await
                .map_err(ApiError::from)?;
            let mut status = inner.node.status();
            let moved =
                tokio::time::timeout(MOVE_LEADER_TIMEOUT, status.wait_for(|s| s.leader == target))
                    .await;
            if !matches!(moved, Ok(Ok(_))) {
                return Err(ApiError::Timeout.into());
            }
        }
        Ok(Response::new(MoveLeaderResponse {
            header: Some(inner.header(0)),
        }))
    }
}
