//! The Raft state machine: applies each committed batch of requests to the MVCC store and the
//! server's replicated state in one LSM write, with the applied index in it.
//!
//! The LSM write is not fsynced: the Raft log is, and it holds every entry after the applied
//! index the LSM recorded, so a crash that loses the LSM's unsynced tail loses only entries the
//! log replays (the node resumes applying after [`StateMachine::applied_index`]). The log is
//! compacted only behind a snapshot, and a snapshot's tables are synced when written.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use strata_lsm::Db;
use strata_mvcc::{LeaseCheck, Store};
use strata_raft::ChangeKind;
use strata_raft_node::{Committed, CommittedKind, SnapshotWriter, StateMachine};
use tokio::sync::watch;

use crate::auth::token::Tokens;
use crate::metrics::Counter;
use crate::proto::clientpb;
use crate::proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, LeaseGrantResponse, LeaseRevokeResponse, Member, ResponseHeader,
    alarm_request::AlarmAction,
};
use crate::proto::strataserverpb::{
    MemberChange, RaftAnswer, RaftRequest, Refusal, raft_answer::Answer, raft_request::Request,
};
use crate::rpctypes::ApiError;
use crate::state::{self, KVDB_SESSION_TTL_MS, KVDB_SESSIONS_MAX, Pending, Session, Shared};

/// `AlarmType::Nospace`.
pub const NOSPACE: i32 = 1;
/// `AlarmType::Corrupt`: raised by the corruption check; writes are refused while it is.
pub const CORRUPT: i32 = 2;

/// etcd's `warnApplyDuration`, `--experimental-warning-apply-duration`'s default: a request
/// that takes longer to apply is logged ("apply request took too long") and counted
/// (`etcd_server_slow_apply_total`).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// Where applies slower than a threshold are counted.
#[derive(Debug, Clone)]
pub struct SlowApplies {
    /// `--experimental-warning-apply-duration` ([`SLOW_APPLY`] by default).
    pub threshold: Duration,
    /// How many requests took longer to apply.
    pub count: Arc<Counter>,
}

/// A request's kind, for logs.
fn kind(request: &Request) -> &'static str {
    match request {
        Request::Put(_) => "put",
        Request::DeleteRange(_) => "delete_range",
        Request::Txn(_) => "txn",
        Request::Compaction(_) => "compaction",
        Request::Alarm(_) => "alarm",
        Request::Publish(_) => "publish",
        Request::KvdbRegister(_) => "kvdb_register",
        Request::Kvdb(_) => "kvdb",
        Request::MemberUpdate(_) => "member_update",
        Request::LeaseGrant(_) => "lease_grant",
        Request::LeaseRevoke(_) => "lease_revoke",
        Request::LeaseCheckpoint(_) => "lease_checkpoint",
        Request::AuthEnable(_) => "auth_enable",
        Request::AuthDisable(_) => "auth_disable",
        Request::Authenticate(_) => "authenticate",
        Request::UserAdd(_) => "user_add",
        Request::UserDelete(_) => "user_delete",
        Request::UserChangePassword(_) => "user_change_password",
        Request::UserGrantRole(_) => "user_grant_role",
        Request::UserRevokeRole(_) => "user_revoke_role",
        Request::RoleAdd(_) => "role_add",
        Request::RoleGrantPermission(_) => "role_grant_permission",
        Request::RoleRevokePermission(_) => "role_revoke_permission",
        Request::RoleDelete(_) => "role_delete",
    }
}

/// The leases as the batch sees them: granted before it or earlier in it, not revoked.
struct Leases<'a> {
    shared: &'a Shared,
    pending: &'a Pending,
}

impl LeaseCheck for Leases<'_> {
    fn exists(&self, lease: i64) -> bool {
        self.pending.lease_in(self.shared, lease).is_some()
    }
}

/// The keys attached to `lease` now, in key order: the index as of the batch's last commit,
/// with the batch's own lease moves since.
fn attached_keys(shared: &Shared, writes: &strata_mvcc::Batch<'_>, lease: i64) -> Vec<Vec<u8>> {
    let mut keys = shared
        .0
        .read()
        .lease_keys
        .get(&lease)
        .cloned()
        .unwrap_or_default();
    for m in writes.lease_moves() {
        if m.from == lease {
            keys.remove(&m.key);
        }
        if m.to == lease {
            keys.insert(m.key.clone());
        }
    }
    keys.into_iter().collect()
}

/// What the applying task tells the rest of the server.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The highest compaction revision applied (the physical removal follows it).
    pub compact_revision: i64,
    /// Bumped whenever the member table changes (the transport's peers follow it).
    pub members_version: u64,
}

/// The state machine.
pub struct Machine {
    db: Arc<Db>,
    store: Arc<Store>,
    shared: Arc<Shared>,
    tokens: Arc<Tokens>,
    applied: u64,
    notify: watch::Sender<Applied>,
    slow: SlowApplies,
}

impl Machine {
    /// The state machine over `db` (opened, with `store` on it), with `shared` loaded from it.
    ///
    /// # Errors
    ///
    /// The LSM failed, or the applied index does not decode.
    pub fn new(
        db: Arc<Db>,
        store: Arc<Store>,
        shared: Arc<Shared>,
        tokens: Arc<Tokens>,
        notify: watch::Sender<Applied>,
        slow: SlowApplies,
    ) -> Result<Self, String> {
        let applied = state::read_u64(&db, state::APPLIED)?;
        Ok(Self {
            db,
            store,
            shared,
            tokens,
            applied,
            notify,
            slow,
        })
    }
}

/// Whether a txn would write a value (etcd's quota cost): refused while NOSPACE is raised.
fn txn_puts(txn: &strata_mvcc::api::TxnRequest) -> bool {
    use strata_mvcc::api::request_op::Request as Op;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}

pub(crate) fn refused(e: ApiError) -> Answer {
    Answer::Refused(Refusal {
        code: e.code() as i32,
        message: e.to_string(),
    })
}

/// An mvcc error: a refusal of the request, or (the LSM's) a failure that stops the node.
fn refusal_or_fatal(e: strata_mvcc::Error) -> io::Result<Answer> {
    match ApiError::from(e) {
        ApiError::Internal(message) => Err(io::Error::other(message)),
        e => Ok(refused(e)),
    }
}

/// Applies one batch; runs on the blocking pool.
fn apply_batch(
    store: &Store,
    shared: &Shared,
    tokens: &Tokens,
    batch: Vec<Committed>,
    notify: &watch::Sender<Applied>,
    slow: &SlowApplies,
) -> io::Result<(Vec<Bytes>, u64)> {
    let mut answers = Vec::new();
    let mut pending = Pending::default();
    let mut writes = store.batch();
    // Half the LSM's limit: one more request never takes a batch past the whole (the batch
    // writes a request's changes ahead once they pass a quarter of it).
    let flush_bytes = store.batch_bytes_max() / 2;
    let mut last = 0;
    let mut compacted = None;
    let mut members_changed = false;
    let nospace = shared.0.read().alarms.iter().any(|&(_, a)| a == NOSPACE);
    let mut nospace_now = nospace;
    let mut corrupt_now = shared.0.read().alarms.iter().any(|&(_, a)| a == CORRUPT);
    for entry in batch {
        last = entry.index;
        match entry.kind {
            CommittedKind::Noop => {}
            CommittedKind::Membership(change) => {
                members_changed = true;
                let context = MemberChange::decode(change.context.as_ref()).unwrap_or_default();
                for c in &change.changes {
                    let kind = ChangeKind::try_from(c.kind).unwrap_or(ChangeKind::AddVoter);
                    if kind == ChangeKind::RemoveNode {
                        pending.member(c.node, None);
                        continue;
                    }
                    let known = pending.member_in(shared, c.node);
                    let given = context.members.iter().find(|m| m.id == c.node).cloned();
                    let mut member = given.or(known).unwrap_or(Member {
                        id: c.node,
                        ..Member::default()
                    });
                    member.is_learner = kind == ChangeKind::AddLearner;
                    pending.member(c.node, Some(member));
                }
            }
            CommittedKind::Command(data) => {
                let started = Instant::now();
                let request = match RaftRequest::decode(data.as_ref()) {
                    Ok(r) => r,
                    Err(_) => {
                        answers.push(encode(refused(ApiError::Invalid(
                            "a replicated request that does not decode".to_owned(),
                        ))));
                        continue;
                    }
                };
                pending.clock(request.now_ms);
                let request_kind = request.request.as_ref().map_or("empty", kind);
                // A client's request checked at an older auth revision: a permission may have
                // been revoked since (the Kvdb service's writes are checked here instead).
                let stale = !request.internal
                    && !matches!(request.request, Some(Request::Kvdb(_)))
                    && pending
                        .auth_with(shared, |a| a.enabled && request.auth_revision < a.revision);
                // etcd's corrupt applier: while CORRUPT is raised, every write is refused
                // (reads are served: they do not go through the log).
                let halted = corrupt_now
                    && matches!(
                        request.request,
                        Some(
                            Request::Put(_)
                                | Request::DeleteRange(_)
                                | Request::Txn(_)
                                | Request::Compaction(_)
                                | Request::LeaseGrant(_)
                                | Request::LeaseRevoke(_)
                                | Request::Kvdb(_)
                        )
                    );
                let answer = match request.request {
                    _ if stale => refused(ApiError::AuthOldRevision),
                    _ if halted => refused(ApiError::Corrupt),
                    None => refused(ApiError::Invalid("an empty request".to_owned())),
                    Some(Request::Authenticate(authenticate)) => {
                        crate::auth::service::assign_token(
                            shared,
                            &pending,
                            tokens,
                            &authenticate,
                            entry.index,
                        )
                    }
                    Some(
                        change @ (Request::AuthEnable(_)
                        | Request::AuthDisable(_)
                        | Request::UserAdd(_)
                        | Request::UserDelete(_)
                        | Request::UserChangePassword(_)
                        | Request::UserGrantRole(_)
                        | Request::UserRevokeRole(_)
                        | Request::RoleAdd(_)
                        | Request::RoleGrantPermission(_)
                        | Request::RoleRevokePermission(_)
                        | Request::RoleDelete(_)),
                    ) => crate::auth::service::apply_change(shared, &mut pending, tokens, &change),
                    Some(Request::Put(put)) => {
                        if nospace_now {
                            refused(ApiError::NoSpace)
                        } else {
                            match writes.put(
                                &put,
                                &Leases {
                                    shared,
                                    pending: &pending,
                                },
                            ) {
                                Ok(r) => Answer::Put(r),
                                Err(e) => refusal_or_fatal(e)?,
                            }
                        }
                    }
                    Some(Request::DeleteRange(delete)) => match writes.delete_range(&delete) {
                        Ok(r) => Answer::DeleteRange(r),
                        Err(e) => refusal_or_fatal(e)?,
                    },
                    Some(Request::Txn(txn)) => {
                        if nospace_now && txn_puts(&txn) {
                            refused(ApiError::NoSpace)
                        } else {
                            match writes.txn(
                                &txn,
                                &Leases {
                                    shared,
                                    pending: &pending,
                                },
                            ) {
                                Ok(r) => Answer::Txn(r),
                                Err(e) => refusal_or_fatal(e)?,
                            }
                        }
                    }
                    Some(Request::Compaction(compaction)) => match writes.compact(&compaction) {
                        Ok(r) => {
                            compacted = Some(compaction.revision);
                            Answer::Compaction(r)
                        }
                        Err(e) => refusal_or_fatal(e)?,
                    },
                    Some(Request::Alarm(alarm)) => {
                        let answer = apply_alarm(shared, &mut pending, &alarm);
                        nospace_now = alarm_raised(shared, &pending, NOSPACE);
                        corrupt_now = alarm_raised(shared, &pending, CORRUPT);
                        answer
                    }
                    Some(Request::Publish(attributes)) => {
                        if attributes.cluster_id != 0 && shared.0.read().cluster_id == 0 {
                            pending.cluster_id(attributes.cluster_id);
                        }
                        let known = pending.member_in(shared, attributes.id);
                        if let Some(mut member) = known {
                            member.name = attributes.name;
                            member.client_ur_ls = attributes.client_urls;
                            pending.member(attributes.id, Some(member));
                            members_changed = true;
                        }
                        Answer::Done(true)
                    }
                    Some(Request::MemberUpdate(update)) => {
                        let known = pending.member_in(shared, update.id);
                        match known {
                            Some(mut member) => {
                                member.peer_ur_ls = update.peer_ur_ls;
                                pending.member(update.id, Some(member));
                                members_changed = true;
                                Answer::Done(true)
                            }
                            None => refused(ApiError::MemberNotFound),
                        }
                    }
                    Some(Request::LeaseGrant(grant)) => {
                        if nospace_now {
                            refused(ApiError::NoSpace)
                        } else if pending.lease_in(shared, grant.id).is_some() {
                            refused(ApiError::LeaseExists)
                        } else {
                            pending.lease(grant.id, Some(grant.ttl));
                            Answer::LeaseGrant(LeaseGrantResponse {
                                header: Some(ResponseHeader {
                                    revision: writes.revision(),
                                    ..ResponseHeader::default()
                                }),
                                id: grant.id,
                                ttl: grant.ttl,
                                error: String::new(),
                            })
                        }
                    }
                    Some(Request::LeaseRevoke(revoke)) => {
                        if pending.lease_in(shared, revoke.id).is_none() {
                            refused(ApiError::LeaseNotFound)
                        } else {
                            // Every attached key deleted in one revision, in key order (etcd's).
                            let leases = Leases {
                                shared,
                                pending: &pending,
                            };
                            let keys = attached_keys(shared, &writes, revoke.id);
                            if !keys.is_empty() {
                                let deletes = strata_mvcc::api::TxnRequest {
                                    compare: Vec::new(),
                                    success: keys
                                        .into_iter()
                                        .map(|key| strata_mvcc::api::RequestOp {
                                            request: Some(
                                                strata_mvcc::api::request_op::Request::RequestDeleteRange(
                                                    strata_mvcc::api::DeleteRangeRequest {
                                                        key,
                                                        ..Default::default()
                                                    },
                                                ),
                                            ),
                                        })
                                        .collect(),
                                    failure: Vec::new(),
                                };
                                writes
                                    .txn(&deletes, &leases)
                                    .map_err(|e| io::Error::other(e.to_string()))?;
                            }
                            pending.lease(revoke.id, None);
                            Answer::LeaseRevoke(LeaseRevokeResponse {
                                header: Some(ResponseHeader {
                                    revision: writes.revision(),
                                    ..ResponseHeader::default()
                                }),
                            })
                        }
                    }
                    Some(Request::LeaseCheckpoint(checkpoints)) => {
                        // Leases revoked meanwhile are skipped.
                        for c in checkpoints.checkpoints {
                            pending.lease_checkpoint(shared, c.id, c.remaining_ttl);
                        }
                        Answer::Done(true)
                    }
                    Some(Request::KvdbRegister(r)) => {
                        register(shared, &mut pending, entry.index, request.now_ms, r.user)
                    }
                    Some(Request::Kvdb(kvdb)) => kvdb_apply(
                        shared,
                        &mut pending,
                        &mut writes,
                        kvdb,
                        request.now_ms,
                        nospace_now,
                    )?,
                };
                let took = started.elapsed();
                if took > slow.threshold {
                    slow.count.inc();
                    tracing::warn!(
                        took_ms = took.as_millis() as u64,
                        expected_ms = slow.threshold.as_millis() as u64,
                        request = request_kind,
                        index = entry.index,
                        "apply request took too long"
                    );
                }
                answers.push(encode(answer));
            }
        }
        // A Raft batch can hold more than one LSM write may: commit what is gathered (with
        // the applied index so far) and go on in a new one.
        if writes.bytes() >= flush_bytes {
            commit(writes, std::mem::take(&mut pending), last, shared)?;
            writes = store.batch();
        }
    }
    commit(writes, pending, last, shared)?;
    if compacted.is_some() || members_changed {
        notify.send_modify(|a| {
            if let Some(rev) = compacted {
                a.compact_revision = a.compact_revision.max(rev);
            }
            if members_changed {
                a.members_version += 1;
            }
        });
    }
    Ok((answers, last))
}

/// Writes a batch's MVCC changes and `pending` state in one LSM write with the applied index
/// `last`, then publishes the state.
fn commit(
    writes: strata_mvcc::Batch<'_>,
    mut pending: Pending,
    last: u64,
    shared: &Shared,
) -> io::Result<()> {
    pending.lease_moves(writes.lease_moves());
    let mut extra = Vec::new();
    pending.pairs(last, &mut extra);
    let pairs: Vec<(&[u8], &[u8])> = extra
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    writes
        .commit(&pairs)
        .map_err(|e| io::Error::other(e.to_string()))?;
    pending.publish(shared);
    Ok(())
}

fn encode(answer: Answer) -> Bytes {
    Bytes::from(
        RaftAnswer {
            answer: Some(answer),
        }
        .encode_to_vec(),
    )
}

/// Whether `alarm` is raised for any member once `pending` is applied.
fn alarm_raised(shared: &Shared, pending: &Pending, alarm: i32) -> bool {
    let state = shared.0.read();
    let mut raised: std::collections::BTreeSet<(u64, i32)> = state.alarms.clone();
    pending.apply_alarms(&mut raised);
    raised.iter().any(|&(_, a)| a == alarm)
}

fn apply_alarm(shared: &Shared, pending: &mut Pending, request: &AlarmRequest) -> Answer {
    use crate::proto::etcdserverpb::AlarmMember;
    let state = shared.0.read();
    let mut raised = state.alarms.clone();
    drop(state);
    pending.apply_alarms(&mut raised);
    let key = (request.member_id, request.alarm);
    let mut answered = Vec::new();
    match AlarmAction::try_from(request.action) {
        Ok(AlarmAction::Activate) if request.alarm != 0 => {
            pending.alarm(key.0, key.1, true);
            answered.push(AlarmMember {
                member_id: key.0,
                alarm: key.1,
            });
        }
        Ok(AlarmAction::Deactivate) if raised.contains(&key) => {
            pending.alarm(key.0, key.1, false);
            answered.push(AlarmMember {
                member_id: key.0,
                alarm: key.1,
            });
        }
        _ => {}
    }
    Answer::Alarm(AlarmResponse {
        header: None,
        alarms: answered,
    })
}

fn register(
    shared: &Shared,
    pending: &mut Pending,
    index: u64,
    now_ms: u64,
    user: String,
) -> Answer {
    let state = shared.0.read();
    let live = pending.session_count(&state.sessions);
    let mut evict = None;
    if live >= KVDB_SESSIONS_MAX {
        // The longest idle session, if it has expired.
        evict = state
            .sessions
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.active_ms) >= KVDB_SESSION_TTL_MS)
            .min_by_key(|(_, s)| s.active_ms)
            .map(|(&id, _)| id);
        if evict.is_none() {
            return refused(ApiError::TooManySessions);
        }
    }
    drop(state);
    if let Some(id) = evict {
        pending.session(id, None);
    }
    pending.session(
        index,
        Some(Session {
            last_seq: 0,
            last_answer: Bytes::new(),
            active_ms: now_ms,
            user,
        }),
    );
    Answer::Kvdb(clientpb::Response {
        success: true,
        data: Vec::new(),
        client_id: index,
        msg: String::new(),
    })
}

/// A Kvdb put or delete, exactly once per (client id, seq).
fn kvdb_apply(
    shared: &Shared,
    pending: &mut Pending,
    writes: &mut strata_mvcc::Batch<'_>,
    request: clientpb::Request,
    now_ms: u64,
    nospace: bool,
) -> io::Result<Answer> {
    use strata_mvcc::api::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, request_op};
    let session = match pending.session_of(request.client_id) {
        Some(session) => session,
        None => shared.0.read().sessions.get(&request.client_id).cloned(),
    };
    let Some(mut session) = session else {
        return Ok(refused(ApiError::UnknownSession(request.client_id)));
    };
    if request.seq == session.last_seq && request.seq != 0 {
        // A retry: the first answer, applied once.
        return Ok(
            match clientpb::Response::decode(session.last_answer.as_ref()) {
                Ok(r) => Answer::Kvdb(r),
                Err(_) => refused(ApiError::Internal(
                    "a stored Kvdb answer that does not decode".into(),
                )),
            },
        );
    }
    if request.seq < session.last_seq {
        return Ok(refused(ApiError::StaleSequence {
            seq: request.seq,
            last: session.last_seq,
        }));
    }
    let command = request.cmd.unwrap_or_default();
    let mut ops = Vec::new();
    let put = command.operate_type == clientpb::Operate::Put as i32;
    if put {
        for pair in command.put.unwrap_or_default().data {
            ops.push(RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: pair.key,
                    value: pair.value,
                    ..PutRequest::default()
                })),
            });
        }
    } else {
        for key in command.del.unwrap_or_default().keys {
            ops.push(RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key,
                        ..DeleteRangeRequest::default()
                    },
                )),
            });
        }
    }
    // With auth on, the session's user needs write permission on every key.
    let denied = pending.auth_with(shared, |auth| {
        if !auth.enabled {
            return None;
        }
        if session.user.is_empty() {
            return Some(ApiError::UserEmpty);
        }
        let permitted = ops.iter().all(|op| {
            let key = match &op.request {
                Some(request_op::Request::RequestPut(p)) => &p.key,
                Some(request_op::Request::RequestDeleteRange(d)) => &d.key,
                _ => return true,
            };
            auth.permitted(&session.user, key, &[], crate::auth::Access::Write)
        });
        (!permitted).then_some(ApiError::PermissionDenied)
    });
    let refusal = denied.or((put && nospace).then_some(ApiError::NoSpace));
    let response = if let Some(refusal) = refusal {
        clientpb::Response {
            success: false,
            client_id: request.client_id,
            msg: refusal.to_string(),
            data: Vec::new(),
        }
    } else {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        };
        let (success, msg) = match writes.txn(
            &txn,
            &Leases {
                shared,
                pending: &*pending,
            },
        ) {
            Ok(_) => (true, String::new()),
            Err(e) => match refusal_or_fatal(e)? {
                Answer::Refused(r) => (false, r.message),
                _ => (false, String::new()),
            },
        };
        clientpb::Response {
            success,
            client_id: request.client_id,
            msg,
            data: Vec::new(),
        }
    };
    session.last_seq = request.seq;
    session.last_answer = Bytes::from(response.encode_to_vec());
    session.active_ms = session.active_ms.max(now_ms);
    pending.session(request.client_id, Some(session));
    Ok(Answer::Kvdb(response))
}

impl StateMachine for Machine {
    async fn apply(&mut self, batch: Vec<Committed>) -> io::Result<Vec<Bytes>> {
        let store = Arc::clone(&self.store);
        let shared = Arc::clone(&self.shared);
        let tokens = Arc::clone(&self.tokens);
        let notify = self.notify.clone();
        let slow = self.slow.clone();
        let (answers, last) = tokio::task::spawn_blocking(move || {
            apply_batch(&store, &shared, &tokens, batch, &notify, &slow)
        })
        .await
        .map_err(io::Error::other)??;
        if last > 0 {
            self.applied = last;
        }
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        self.applied
    }

    async fn snapshot(&mut self) -> io::Result<SnapshotWriter> {
        // The capture holds the applied index too: it is written with every batch. It
        // switches the memtable out, so that what it holds is flushed once: the tables the
        // flush below makes are linked into the snapshot, not written a second time.
        let capture = self.db.capture_switching();
        Ok(Box::new(move |dir: &Path| {
            // The node compacts its log behind the snapshot once this returns, and the LSM has
            // no WAL of its own (`state::lsm_options`): its tables must hold at least what the
            // snapshot does first, or a crash would leave entries that are in neither. The
            // flush runs here, on the blocking pool, while applying goes on.
            capture.flush().map_err(io::Error::other)?;
            capture.write_to(dir, &[]).map_err(io::Error::other)
        }))
    }

    async fn restore(&mut self, dir: &Path, files: &[String], last_index: u64) -> io::Result<()> {
        let db = Arc::clone(&self.db);
        let store = Arc::clone(&self.store);
        let shared = Arc::clone(&self.shared);
        let (dir, files) = (dir.to_path_buf(), files.to_vec());
        let applied = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            db.restore(&dir, &files).map_err(io::Error::other)?;
            store.reload().map_err(io::Error::other)?;
            let mut loaded = state::load(&db).map_err(io::Error::other)?;
            loaded.lease_keys = state::lease_index(&store).map_err(io::Error::other)?;
            *shared.0.write() = loaded;
            state::read_u64(&db, state::APPLIED).map_err(io::Error::other)
        })
        .await
        .map_err(io::Error::other)??;
        if applied != last_index {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the snapshot holds index {applied}, not {last_index}"),
            ));
        }
        self.applied = applied;
        self.notify.send_modify(|a| {
            a.members_version += 1;
            a.compact_revision = self.store.compacted_revision();
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ROOT;
    use crate::proto::authpb::{Permission, permission::Type as PermType};
    use crate::proto::etcdserverpb::{
        AuthRoleAddRequest, AuthRoleGrantPermissionRequest, AuthUserAddRequest,
        AuthUserGrantRoleRequest, PutRequest,
    };
    use crate::proto::strataserverpb::{AuthEnable, Authenticate};

    /// A store, the state beside it, and a way to apply one request after another.
    struct Harness {
        _dir: tempfile::TempDir,
        db: Arc<Db>,
        store: Arc<Store>,
        shared: Shared,
        tokens: Tokens,
        notify: watch::Sender<Applied>,
        slow: SlowApplies,
        index: u64,
    }

    impl Harness {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Arc::new(Db::open(dir.path(), strata_lsm::Options::default()).expect("db"));
            let store = Arc::new(Store::open(Arc::clone(&db)).expect("store"));
            Harness {
                _dir: dir,
                db,
                store,
                shared: Shared::default(),
                tokens: Tokens::new(std::time::Duration::from_secs(60)),
                notify: watch::channel(Applied::default()).0,
                slow: SlowApplies {
                    threshold: SLOW_APPLY,
                    count: Arc::default(),
                },
                index: 0,
            }
        }

        /// Applies `request` as a client's (checked at `auth_revision`) or a member's.
        fn apply(&mut self, request: Request, auth_revision: u64, internal: bool) -> Answer {
            self.index += 1;
            let entry = Committed {
                index: self.index,
                term: 1,
                kind: CommittedKind::Command(Bytes::from(
                    RaftRequest {
                        now_ms: 1,
                        request: Some(request),
                        auth_revision,
                        internal,
                    }
                    .encode_to_vec(),
                )),
            };
            let (answers, _) = apply_batch(
                &self.store,
                &self.shared,
                &self.tokens,
                vec![entry],
                &self.notify,
                &self.slow,
            )
            .expect("apply");
            RaftAnswer::decode(answers[0].as_ref())
                .expect("an answer")
                .answer
                .expect("set")
        }

        fn revision(&self) -> u64 {
            self.shared.0.read().auth.revision
        }
    }

    fn refusal(answer: &Answer) -> Option<&str> {
        match answer {
            Answer::Refused(r) => Some(&r.message),
            _ => None,
        }
    }

    fn put(key: &str) -> Request {
        Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    }

    /// With auth on, a client's request checked at an older auth revision is refused when
    /// applied (a permission may have been revoked since), one checked at the current revision
    /// and a member's own are applied; a token is assigned at the entry's index.
    #[test]
    fn requests_checked_at_an_old_auth_revision_are_refused_when_applied() {
        let mut h = Harness::new();
        let setup = [
            Request::UserAdd(AuthUserAddRequest {
                name: ROOT.into(),
                hashed_password: "hash".into(),
                ..Default::default()
            }),
            Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: ROOT.into(),
                role: ROOT.into(),
            }),
            Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
            Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(Permission {
                    perm_type: PermType::Readwrite as i32,
                    key: b"k".to_vec(),
                    range_end: Vec::new(),
                }),
            }),
            Request::AuthEnable(AuthEnable {
                member_secret: vec![1; 32],
            }),
        ];
        for request in setup {
            let at = h.revision();
            assert_eq!(refusal(&h.apply(request, at, false)), None);
        }
        let now = h.revision();
        assert_eq!(
            refusal(&h.apply(put("k"), now - 1, false)),
            Some("etcdserver: revision of auth store is old")
        );
        assert!(matches!(h.apply(put("k"), now, false), Answer::Put(_)));
        assert!(matches!(h.apply(put("k"), 0, true), Answer::Put(_)));
        let token = h.apply(
            Request::Authenticate(Authenticate {
                name: ROOT.into(),
                token_prefix: "abcdefghijklmnop".into(),
            }),
            0,
            true,
        );
        let index = h.index;
        assert_eq!(token, Answer::Token(format!("abcdefghijklmnop.{index}")));
        assert_eq!(
            h.tokens
                .user(&format!("abcdefghijklmnop.{index}"))
                .as_deref(),
            Some(ROOT)
        );
        // The state survives a reload from the LSM.
        let loaded = state::load(&h.db).expect("load");
        assert_eq!(*loaded.auth, *h.shared.0.read().auth);
    }

    /// A request that takes longer than the threshold to apply is counted (and logged); one
    /// within it is not.
    #[test]
    fn slow_applies_are_counted() {
        let mut h = Harness::new();
        h.slow.threshold = Duration::MAX;
        assert!(matches!(h.apply(put("k"), 0, true), Answer::Put(_)));
        assert_eq!(h.slow.count.get(), 0);
        h.slow.threshold = Duration::ZERO;
        assert!(matches!(h.apply(put("k"), 0, true), Answer::Put(_)));
        assert_eq!(h.slow.count.get(), 1);
        let revoke = Request::LeaseRevoke(crate::proto::etcdserverpb::LeaseRevokeRequest { id: 7 });
        assert_eq!(
            refusal(&h.apply(revoke, 0, true)),
            Some("etcdserver: requested lease not found")
        );
        assert_eq!(h.slow.count.get(), 2, "a refused request counts too");
    }
}
