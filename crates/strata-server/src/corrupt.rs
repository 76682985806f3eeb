//! etcd's `--experimental-initial-corrupt-check`: before a member serves clients, its store's
//! hash (`HashKV`) at its revision is compared with every peer's at that revision. Members
//! that applied the same log hold the same keys, values and revisions, so a hash that differs
//! at the same revision and the same compaction means one store is corrupt (a disk that lost
//! or changed data, a data dir restored from the wrong backup): the member refuses to start
//! rather than serve it. A peer that cannot answer (unreachable, behind this member, or
//! compacted past its revision) or that compacted elsewhere is logged and skipped, as etcd
//! does.
//!
//! Unlike etcd, which asks its peers' peer ports before it serves anything, a member asks
//! their client ports once it has caught up with the log (that is how it learns them): it
//! serves its peers' Raft traffic meanwhile, never clients.
//!
//! etcd's `--experimental-corrupt-check-time` ([`periodic`]): the leader checks every member,
//! itself included, at that interval, and raises the CORRUPT alarm for one that is found
//! wrong. While it is raised, every write is refused with `etcdserver: corrupt cluster` (reads
//! are served), until an operator has replaced the member and disarmed the alarm.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Caller;
use crate::machine::CORRUPT;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{AlarmRequest, HashKvRequest, alarm_request::AlarmAction};
use crate::proto::strataserverpb::raft_request::Request;
use crate::rpctypes::ApiError;
use crate::server::{Inner, ServerError};

/// How long a peer may take to hash its store (etcd: its request timeout, 5 s plus two
/// election timeouts; a large store takes a while to hash).
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a starting member waits for a leader to catch up with before its initial check
/// (then it skips the check, as etcd does with peers it cannot reach).
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

/// This member's hash, for comparing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    /// The hash at `revision`.
    pub hash: u32,
    /// The revision hashed.
    pub revision: i64,
    /// The store's compacted revision.
    pub compact_revision: i64,
}

/// What one peer's answer says about this member's store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same hash.
    Same,
    /// Another hash at the same revision and compaction: one of the two stores is corrupt.
    Differs {
        /// The peer's hash.
        theirs: u32,
    },
    /// Another hash, but the peer compacted at another revision: nothing can be said.
    CompactedElsewhere {
        /// The peer's compacted revision.
        theirs: i64,
    },
    /// The peer could not hash at this member's revision (behind it, compacted past it,
    /// unreachable): nothing can be said.
    Unknown(String),
}

/// What a peer's `HashKV` answer (hash and compacted revision, or the error) says.
pub fn judge(local: &Local, answer: Result<(u32, i64), ApiError>) -> Verdict {
    match answer {
        Ok((hash, _)) if hash == local.hash => Verdict::Same,
        Ok((theirs, compact)) if compact == local.compact_revision => Verdict::Differs { theirs },
        Ok((_, theirs)) => Verdict::CompactedElsewhere { theirs },
        // etcd's texts say which: "required revision is a future revision" (the peer is
        // behind), "required revision has been compacted", a timeout, no leader.
        Err(e) => Verdict::Unknown(e.to_string()),
    }
}

/// Compares this member's hash with every peer's; an error if any peer's differs at the same
/// revision and compaction.
///
/// # Errors
///
/// [`ServerError::Corrupt`], naming the peers whose hash differs.
pub async fn initial_check(inner: &Arc<Inner>) -> Result<(), ServerError> {
    // Caught up with the log first: the member table (the peers' client URLs) and the store
    // as the cluster has them. A member that starts with the cluster's other members (or
    // restarts the leader) waits for an election.
    let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
    loop {
        match inner.read_barrier(false).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    error = %e,
                    "initial corruption check skipped: no leader to catch up with"
                );
                return Ok(());
            }
            Err(_) => tokio::time::sleep(inner.config.heartbeat_interval).await,
        }
    }
    let local = local_hash(inner)
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let mut differing = Vec::new();
    let mut same = 0;
    for peer in peers(inner) {
        let answer = peer_hash(inner, peer, local.revision).await;
        match judge(&local, answer.map(|a| (a.hash, a.compact_revision))) {
            Verdict::Same => same += 1,
            Verdict::Differs { theirs } => {
                tracing::error!(
                    peer = format_args!("{peer:x}"),
                    revision = local.revision,
                    compact_revision = local.compact_revision,
                    ours = local.hash,
                    theirs,
                    "initial corruption check: the peer's hash differs at the same revision"
                );
                differing.push(format!("{peer:x} ({theirs} against {})", local.hash));
            }
            Verdict::CompactedElsewhere { theirs } => tracing::warn!(
                peer = format_args!("{peer:x}"),
                ours = local.compact_revision,
                theirs,
                "initial corruption check: cannot compare with the peer, compacted elsewhere"
            ),
            Verdict::Unknown(why) => tracing::warn!(
                peer = format_args!("{peer:x}"),
                revision = local.revision,
                why,
                "initial corruption check: cannot compare with the peer"
            ),
        }
    }
    if !differing.is_empty() {
        return Err(ServerError::Corrupt(format!(
            "{:x} found data inconsistency with peers: at revision {} (compacted at {}), \
             the hash of {}",
            inner.id,
            local.revision,
            local.compact_revision,
            differing.join(", ")
        )));
    }
    tracing::info!(
        revision = local.revision,
        same,
        "initial corruption check passed"
    );
    Ok(())
}

/// The other members' ids.
fn peers(inner: &Inner) -> Vec<u64> {
    inner
        .shared
        .0
        .read()
        .members
        .keys()
        .copied()
        .filter(|&id| id != inner.id)
        .collect()
}

/// What a peer answered `HashKV` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHash {
    /// The hash at the revision asked for.
    pub hash: u32,
    /// Its compacted revision.
    pub compact_revision: i64,
    /// Its current revision (the answer's header).
    pub revision: i64,
}

/// `peer`'s hash at `revision`, asked of its client port as a member.
async fn peer_hash(inner: &Inner, peer: u64, revision: i64) -> Result<PeerHash, ApiError> {
    let channel = inner.channel_to(peer).await?;
    let mut call = tonic::Request::new(HashKvRequest { revision });
    inner.credentials(&Caller::Member, &mut call);
    let answer = tokio::time::timeout(
        PEER_HASH_TIMEOUT,
        MaintenanceClient::new(channel).hash_kv(call),
    )
    .await
    .map_err(|_| ApiError::Timeout)?
    .map_err(crate::server::forwarded_error)?
    .into_inner();
    Ok(PeerHash {
        hash: answer.hash,
        compact_revision: answer.compact_revision,
        revision: answer.header.map_or(0, |h| h.revision),
    })
}

/// This member's hash at its current revision.
async fn local_hash(inner: &Inner) -> Result<Local, ApiError> {
    let store = Arc::clone(&inner.store);
    let hashed = tokio::task::spawn_blocking(move || store.hash_kv(0))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    Ok(Local {
        hash: hashed.hash,
        revision: hashed.hash_revision,
        compact_revision: hashed.compact_revision,
    })
}

/// The periodic check (`--experimental-corrupt-check-time`): while this member leads, every
/// interval, [`suspect`] on its own hash and its peers', and the CORRUPT alarm raised for the
/// member found wrong.
pub async fn periodic(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let Some(every) = inner.config.corrupt_check_interval else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if inner.leader_now() != inner.id {
            continue;
        }
        let raised = inner
            .shared
            .0
            .read()
            .alarms
            .iter()
            .any(|&(_, a)| a == CORRUPT);
        if raised {
            continue;
        }
        match leader_check(&inner).await {
            Ok(None) => tracing::debug!("corruption check passed"),
            Ok(Some(member)) => {
                tracing::error!(
                    member = format_args!("{member:x}"),
                    "corruption check: the member's store differs: raising CORRUPT"
                );
                let alarm = AlarmRequest {
                    action: AlarmAction::Activate as i32,
                    member_id: member,
                    alarm: CORRUPT,
                };
                if let Err(e) = inner.propose(&Caller::Member, Request::Alarm(alarm)).await {
                    tracing::warn!(error = %e, "could not raise CORRUPT yet");
                }
            }
            Err(e) => tracing::warn!(error = %e, "corruption check skipped"),
        }
    }
}

/// One check as etcd's leader makes it: its hash, every peer's at the same revision, then,
/// after a linearizable read point, its own again. Returns the member found wrong, if any.
async fn leader_check(inner: &Arc<Inner>) -> Result<Option<u64>, ApiError> {
    let before = local_hash(inner).await?;
    let mut answers = Vec::new();
    for peer in peers(inner) {
        match peer_hash(inner, peer, before.revision).await {
            Ok(answer) => answers.push((peer, answer)),
            Err(e) => tracing::debug!(
                peer = format_args!("{peer:x}"),
                error = %e,
                "corruption check: the peer did not answer"
            ),
        }
    }
    inner.read_barrier(false).await?;
    let after = local_hash(inner).await?;
    Ok(suspect(inner.id, &before, &after, &answers))
}

/// The member a leader's check finds wrong, as etcd's `checkHashKV` decides (the first one):
/// the leader itself if its hash changed at the same revision and compaction (its store
/// changing under it); a peer ahead of the leader's revision or compaction after the read
/// point (it cannot be, having applied no more than was committed); a peer with the leader's
/// compaction and another hash at the leader's first revision.
pub fn suspect(
    leader: u64,
    before: &Local,
    after: &Local,
    answers: &[(u64, PeerHash)],
) -> Option<u64> {
    if after.hash != before.hash
        && after.revision == before.revision
        && after.compact_revision == before.compact_revision
    {
        return Some(leader);
    }
    answers.iter().find_map(|&(peer, answer)| {
        let wrong = answer.revision > after.revision
            || answer.compact_revision > after.compact_revision
            || (answer.compact_revision == before.compact_revision && answer.hash != before.hash);
        wrong.then_some(peer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_hash_at_the_same_revision_and_compaction_is_corruption() {
        let local = Local {
            hash: 7,
            revision: 10,
            compact_revision: 4,
        };
        assert_eq!(judge(&local, Ok((7, 4))), Verdict::Same);
        // The same hash with another compaction: the hash covers only what both keep.
        assert_eq!(judge(&local, Ok((7, 6))), Verdict::Same);
        assert_eq!(judge(&local, Ok((8, 4))), Verdict::Differs { theirs: 8 });
        assert_eq!(
            judge(&local, Ok((8, 6))),
            Verdict::CompactedElsewhere { theirs: 6 }
        );
        for error in [
            ApiError::FutureRevision,
            ApiError::Compacted,
            ApiError::Timeout,
            ApiError::NoLeader,
        ] {
            assert!(matches!(judge(&local, Err(error)), Verdict::Unknown(_)));
        }
    }

    #[test]
    fn the_leader_suspects_as_etcds_check_does() {
        let before = Local {
            hash: 7,
            revision: 10,
            compact_revision: 4,
        };
        let peer = |hash, compact_revision, revision| PeerHash {
            hash,
            compact_revision,
            revision,
        };
        let good = (2, peer(7, 4, 10));
        assert_eq!(suspect(1, &before, &before, &[good]), None);
        // Writes between the two hashes move the revision: nothing is said of the leader.
        let moved = Local {
            hash: 9,
            revision: 12,
            ..before
        };
        assert_eq!(suspect(1, &before, &moved, &[good]), None);
        // The leader's own hash changed at the same revision.
        let changed = Local { hash: 9, ..before };
        assert_eq!(suspect(1, &before, &changed, &[good]), Some(1));
        // A peer with another hash at the same compaction; ahead of the leader; compacted
        // further; the first such is named.
        assert_eq!(
            suspect(1, &before, &before, &[good, (3, peer(8, 4, 10))]),
            Some(3)
        );
        assert_eq!(
            suspect(1, &before, &before, &[(3, peer(7, 4, 11))]),
            Some(3)
        );
        assert_eq!(
            suspect(1, &before, &before, &[(3, peer(7, 5, 10))]),
            Some(3)
        );
        assert_eq!(
            suspect(
                1,
                &before,
                &before,
                &[(3, peer(8, 4, 10)), (4, peer(8, 4, 10))]
            ),
            Some(3)
        );
        // Another hash after another (older) compaction: nothing can be said.
        assert_eq!(suspect(1, &before, &before, &[(3, peer(8, 2, 10))]), None);
    }
}
