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

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Caller;
use crate::proto::etcdserverpb::HashKvRequest;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::rpctypes::ApiError;
use crate::server::{Inner, ServerError};

/// How long a peer may take to hash its store (etcd: its request timeout, 5 s plus two
/// election timeouts; a large store takes a while to hash).
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(10);

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
    // as the cluster has them.
    if let Err(e) = inner.read_barrier(false).await {
        tracing::warn!(error = %e, "initial corruption check skipped: no leader to catch up with");
        return Ok(());
    }
    let store = Arc::clone(&inner.store);
    let hashed = tokio::task::spawn_blocking(move || store.hash_kv(0))
        .await
        .map_err(|e| ServerError::Storage(e.to_string()))?
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let local = Local {
        hash: hashed.hash,
        revision: hashed.hash_revision,
        compact_revision: hashed.compact_revision,
    };
    let peers: Vec<u64> = inner
        .shared
        .0
        .read()
        .members
        .keys()
        .copied()
        .filter(|&id| id != inner.id)
        .collect();
    let mut differing = Vec::new();
    let mut same = 0;
    for peer in peers {
        let answer = peer_hash(inner, peer, local.revision).await;
        match judge(&local, answer) {
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

/// `peer`'s hash and compacted revision at `revision`, asked of its client port as a member.
async fn peer_hash(inner: &Inner, peer: u64, revision: i64) -> Result<(u32, i64), ApiError> {
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
    Ok((answer.hash, answer.compact_revision))
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
}
