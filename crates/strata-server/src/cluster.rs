//! etcd's Cluster service: the member table, changed through Raft's joint consensus (members
//! and learners). Changes run on the leader; a follower sends its client there (etcd's
//! clients retry on `leader changed`).

use std::sync::Arc;
use std::time::Duration;

use strata_raft::{ChangeKind, ConfChange};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Caller;
use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use crate::proto::strataserverpb::{MemberChange, raft_request::Request as Raft};
use crate::rpctypes::ApiError;
use crate::server::Inner;

/// How long a membership change may take to be applied.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A learner whose match index is at least this fraction of the leader's commit index is in
/// sync and may be promoted (etcd's rule, 90 %).
const PROMOTE_READY_FRACTION: f64 = 0.9;

fn forwarded(status: Status) -> Status {
    crate::server::forwarded_error(status).into()
}

/// The Cluster service.
pub struct ClusterService(pub Arc<Inner>);

impl ClusterService {
    /// Cluster responses carry no revision (etcd's).
    fn header(&self) -> Option<ResponseHeader> {
        let mut header = self.0.header(0);
        header.revision = 0;
        Some(header)
    }

    fn members(&self) -> Vec<Member> {
        self.0.shared.0.read().members.values().cloned().collect()
    }

    /// Membership changes are proposed by the leader: on a follower, the leader's client
    /// port (`None` on the leader).
    async fn leader(&self) -> Result<Option<ClusterClient<Channel>>, Status> {
        Ok(self.0.leader_channel().await?.map(ClusterClient::new))
    }

    /// Runs a `--strict-reconfig-check` rule on the view of the members from this leader now
    /// (nothing with the check off).
    fn reconfig_check(
        &self,
        check: impl FnOnce(&crate::reconfig::Cluster<'_>) -> Result<(), ApiError>,
    ) -> Result<(), Status> {
        if !self.0.config.strict_reconfig_check {
            return Ok(());
        }
        let now = std::time::Instant::now();
        let members: Vec<crate::reconfig::MemberView> = self
            .0
            .shared
            .0
            .read()
            .members
            .values()
            .map(|m| crate::reconfig::MemberView {
                id: m.id,
                started: !m.name.is_empty(),
                learner: m.is_learner,
                active_since: self.0.peer_activity.active_since(m.id, now),
            })
            .collect();
        let view = crate::reconfig::Cluster {
            me: self.0.id,
            members: &members,
            now,
        };
        check(&view).map_err(Status::from)
    }

    /// Checks peer URLs: well formed, and not another member's.
    fn check_urls(&self, urls: &[String], except: u64) -> Result<(), Status> {
        if urls.is_empty() || urls.iter().any(|u| crate::config::resolve_url(u).is_err()) {
            return Err(ApiError::InvalidMemberUrls.into());
        }
        let taken = self
            .0
            .shared
            .0
            .read()
            .members
            .values()
            .any(|m| m.id != except && m.peer_ur_ls.iter().any(|u| urls.contains(u)));
        if taken {
            return Err(ApiError::PeerUrlExists.into());
        }
        Ok(())
    }

    /// The caller of `request`, checked to be an admin (membership changes are etcd's admin
    /// operations).
    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.0.caller(request).await?;
        self.0.fresh_auth().await?.check_admin(&caller)?;
        Ok(caller)
    }

    /// `message` as a call with `caller`'s credentials, for the leader.
    fn call<T>(&self, caller: &Caller, message: T) -> Request<T> {
        let mut call = Request::new(message);
        self.0.credentials(caller, &mut call);
        call
    }

    async fn change(&self, change: ConfChange) -> Result<(), Status> {
        self.0
            .node
            .change_membership(change, CHANGE_TIMEOUT)
            .await
            .map_err(|e| Status::from(ApiError::from(e)))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        self.check_urls(&request.peer_ur_ls, 0)?;
        if let Some(mut leader) = self.leader().await? {
            let mut response = leader
                .member_add(self.call(&caller, request))
                .await
                .map_err(forwarded)?;
            // The member that served the client answers in its own name, as etcd's does.
            response.get_mut().header = self.header();
            return Ok(response);
        }
        // The id the new member computes from its own flags (its peer URLs and the cluster
        // token), as bootstrapped members' are: it starts knowing it, with no round trip to
        // the cluster. (etcd mixes the time in and has the new member look its id up.)
        let id =
            crate::config::member_id(&request.peer_ur_ls, &self.0.config.initial_cluster_token);
        if id == 0 || self.0.shared.0.read().members.contains_key(&id) {
            return Err(ApiError::MemberExists.into());
        }
        self.reconfig_check(|view| view.may_add(request.is_learner))?;
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: request.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: request.is_learner,
        };
        if let Some((addr, host)) = crate::server::peer_target(&request.peer_ur_ls) {
            self.0.transport.set_peer(id, addr);
            self.0.transport.set_peer_host(id, host);
        }
        let kind = if request.is_learner {
            ChangeKind::AddLearner
        } else {
            ChangeKind::AddVoter
        };
        let context = prost::Message::encode_to_vec(&MemberChange {
            members: vec![member.clone()],
        });
        self.change(ConfChange::single(kind, id).with_context(context))
            .await?;
        // The new member catches up from a snapshot rather than the whole log.
        let _ = self.0.node.request_snapshot(CHANGE_TIMEOUT).await;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        if !self.0.shared.0.read().members.contains_key(&id) {
            return Err(ApiError::MemberNotFound.into());
        }
        if let Some(mut leader) = self.leader().await? {
            let mut response = leader
                .member_remove(self.call(&caller, MemberRemoveRequest { id }))
                .await
                .map_err(forwarded)?;
            response.get_mut().header = self.header();
            return Ok(response);
        }
        self.reconfig_check(|view| view.may_remove(id))?;
        self.change(ConfChange::single(ChangeKind::RemoveNode, id))
            .await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let caller = self.admin(&request).await?;
        let request = request.into_inner();
        if !self.0.shared.0.read().members.contains_key(&request.id) {
            return Err(ApiError::MemberNotFound.into());
        }
        self.check_urls(&request.peer_ur_ls, request.id)?;
        self.0.propose(&caller, Raft::MemberUpdate(request)).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.0.read_barrier(false).await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let caller = self.admin(&request).await?;
        let id = request.into_inner().id;
        let member = self.0.shared.0.read().members.get(&id).cloned();
        let Some(member) = member else {
            return Err(ApiError::MemberNotFound.into());
        };
        if !member.is_learner {
            return Err(ApiError::MemberNotLearner.into());
        }
        if let Some(mut leader) = self.leader().await? {
            let mut response = leader
                .member_promote(self.call(&caller, MemberPromoteRequest { id }))
                .await
                .map_err(forwarded)?;
            response.get_mut().header = self.header();
            return Ok(response);
        }
        let status = self.0.status();
        let matched = status.matched.get(&id).copied().unwrap_or(0);
        if (matched as f64) < status.commit as f64 * PROMOTE_READY_FRACTION {
            return Err(ApiError::LearnerNotReady.into());
        }
        self.reconfig_check(|view| view.may_promote())?;
        self.change(ConfChange::single(ChangeKind::AddVoter, id))
            .await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}

/// `--force-new-cluster`: makes this member, whose Raft configuration is `raft` and whose
/// log and snapshots are `log` and `snapshot_dir`, the only member of its cluster before it
/// starts (see [`strata_raft_node::force_new_cluster`]); the other members leave the member
/// table as the forced entries are applied. A new data dir has nothing to force: it starts as
/// `--initial-cluster` says (as etcd does).
///
/// # Errors
///
/// The log or the snapshot store cannot be read or written.
pub(crate) fn force_new_cluster(
    raft: &strata_raft::Config,
    log: &Arc<strata_raft_log::RaftLog>,
    snapshot_dir: &std::path::Path,
    fresh: bool,
) -> Result<(), crate::ServerError> {
    if fresh {
        tracing::warn!("--force-new-cluster: the data dir is new, so there is nothing to force");
        return Ok(());
    }
    let forced = strata_raft_node::force_new_cluster(raft, log, snapshot_dir)
        .map_err(|e| crate::ServerError::Raft(format!("--force-new-cluster: {e}")))?;
    let removed: Vec<String> = forced.removed.iter().map(|id| format!("{id:x}")).collect();
    tracing::warn!(
        member = format_args!("{:x}", raft.id),
        removed = %removed.join(","),
        term = forced.term,
        commit = forced.commit,
        "--force-new-cluster: this member is now the only member of its cluster; \
         the removed members must not run again with their data"
    );
    Ok(())
}
