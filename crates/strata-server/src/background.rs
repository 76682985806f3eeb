//! The member's background tasks: physical compaction after a Compact is applied,
//! auto-compaction, and the quota and disk watch that raises NOSPACE.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Caller;
use crate::config::AutoCompaction;
use crate::machine::NOSPACE;
use crate::proto::etcdserverpb::{AlarmRequest, alarm_request::AlarmAction};
use crate::proto::strataserverpb::raft_request::Request;
use crate::server::Inner;

/// How often the quota and the disk are checked. Writes can outrun a slow check: on a tmpfs a
/// member took 200 MiB of 64 KiB puts within a second, and a fast disk takes as much, so a
/// check each second let them through the reserve to `ENOSPC`. At this interval a disk
/// taking 1 GB/s fills 100 MiB between checks, within the default 256 MiB reserve. A check
/// is a `statvfs`, a listing of the store's directory and the LSM's stats.
const QUOTA_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How often auto-compaction looks at the revision (etcd's periodic compactor checks every
/// tenth of its retention, at most every hour; the revision compactor every 5 minutes).
const AUTO_COMPACTION_CHECK_MAX: Duration = Duration::from_secs(300);

/// Removes the versions a compaction made unreachable, in the background so that applying is
/// never held up; resumes an unfinished one at start. Publishes the revision it reached.
pub async fn physical_compaction(
    inner: Arc<Inner>,
    done: watch::Sender<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = inner.applied.clone();
    loop {
        let target = inner.store.compacted_revision();
        if target > *done.borrow() {
            let store = Arc::clone(&inner.store);
            let result = tokio::task::spawn_blocking(move || store.compact_physical()).await;
            match result {
                Ok(Ok(())) => {
                    let _ = done.send(target);
                }
                Ok(Err(e)) => tracing::error!(error = %e, "physical compaction failed"),
                Err(e) => tracing::error!(error = %e, "physical compaction panicked"),
            }
            continue;
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Raises NOSPACE (through Raft, so every member refuses writes alike) once the LSM's tables
/// exceed the quota, or the data directory's file system has less free space than the
/// reserve, or (with a reserve) less than the LSM needs for its next compaction: the LSM holds
/// that compaction back, level 0 only grows, and writes would stop at its stop trigger with
/// nothing said, however much free space the reserve check sees (but not once the disk has
/// the room that compaction waits for again, or, for one whose write failed, the reserve).
/// Checked every 100 ms (`QUOTA_CHECK_INTERVAL`); a disarmed alarm whose cause remains is
/// raised again.
pub async fn quota(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let quota = inner.config.quota_backend_bytes;
    let reserve = inner.config.disk_reserve_bytes;
    if quota.is_none() && reserve.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(QUOTA_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // A listing of the store's directory and a `statvfs`: off the runtime's threads, which
        // a slow file system would hold up ten times a second.
        let checked = {
            let inner = Arc::clone(&inner);
            tokio::task::spawn_blocking(move || {
                let size = crate::maintenance::db_size_bytes(&inner);
                let (free, held_back) = match reserve {
                    Some(reserve) => {
                        let free = strata_fs::available_bytes(&inner.config.data_dir).ok();
                        let stats = inner.db.stats();
                        let held_back = compaction_held_back(
                            stats.compaction_no_space,
                            stats.compaction_no_space_needs,
                            free,
                            reserve,
                        );
                        (free, held_back)
                    }
                    None => (None, None),
                };
                (size, free, held_back)
            })
            .await
        };
        let Ok((size, free, held_back)) = checked else {
            continue;
        };
        let over_quota = quota.is_some_and(|quota| size > quota);
        let disk_low = matches!((free, reserve), (Some(free), Some(reserve)) if free < reserve);
        if !over_quota && !disk_low && held_back.is_none() {
            continue;
        }
        let raised = inner.shared.0.read().alarms.contains(&(inner.id, NOSPACE));
        if raised {
            continue;
        }
        if over_quota {
            tracing::warn!(size, ?quota, "quota exceeded: raising NOSPACE");
        } else if disk_low {
            tracing::warn!(
                ?free,
                ?reserve,
                "data directory's disk nearly full: raising NOSPACE"
            );
        } else {
            tracing::warn!(
                ?free,
                cause = held_back.as_deref().unwrap_or_default(),
                "no room on the data directory's disk for the store's compactions: raising NOSPACE"
            );
        }
        let alarm = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: inner.id,
            alarm: NOSPACE,
        };
        if let Err(e) = inner.propose(&Caller::Member, Request::Alarm(alarm)).await {
            tracing::warn!(error = %e, "could not raise NOSPACE yet");
        }
    }
}

/// Why the LSM's compactions are held back for want of room, if they still are: `cause` (the
/// LSM's `compaction_no_space`) unless the disk has room again (`free` bytes), as much as the
/// compaction waits for (`needs`) or, when that is not known (a write that failed), at least the
/// reserve. A compaction's next try, within a second, then runs it: raised on a cause that is
/// gone, the alarm would come back right after an operator freed space and disarmed it. If the
/// try fails again for want of room, the LSM holds it back with what it needs, or the disk is
/// below the reserve: either raises the alarm.
fn compaction_held_back(
    cause: Option<String>,
    needs: Option<u64>,
    free: Option<u64>,
    reserve: u64,
) -> Option<String> {
    let room_again = match (needs, free) {
        (Some(needs), Some(free)) => free >= needs,
        (None, Some(free)) => free >= reserve,
        (_, None) => false,
    };
    cause.filter(|_| !room_again)
}

/// etcd's auto-compaction, run by the leader: `periodic` keeps the revisions of the last
/// retention period (compacting to the revision current one period ago), `revision` keeps the
/// last N revisions.
pub async fn auto_compaction(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let (check, mode) = match inner.config.auto_compaction {
        AutoCompaction::Off => return,
        AutoCompaction::Periodic(period) => (
            (period / 10).clamp(Duration::from_secs(1), AUTO_COMPACTION_CHECK_MAX),
            inner.config.auto_compaction,
        ),
        AutoCompaction::Revision(_) => (
            AUTO_COMPACTION_CHECK_MAX.min(Duration::from_secs(60)),
            inner.config.auto_compaction,
        ),
    };
    // (time seen, revision then), oldest first: what the periodic mode compacts to.
    let mut history: std::collections::VecDeque<(tokio::time::Instant, i64)> = Default::default();
    let mut tick = tokio::time::interval(check);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = tokio::time::Instant::now();
        let current = inner.store.current_revision();
        history.push_back((now, current));
        if inner.leader_now() != inner.id {
            continue;
        }
        let target = match mode {
            AutoCompaction::Periodic(period) => {
                // The newest revision seen at least one period ago.
                let mut target = 0;
                while let Some(&(at, rev)) = history.front() {
                    if now.duration_since(at) >= period {
                        target = rev;
                        history.pop_front();
                    } else {
                        break;
                    }
                }
                target
            }
            AutoCompaction::Revision(keep) => current - keep as i64,
            AutoCompaction::Off => 0,
        };
        if target <= inner.store.compacted_revision() || target <= 1 {
            continue;
        }
        let request = strata_mvcc::api::CompactionRequest {
            revision: target,
            physical: false,
        };
        match inner
            .propose(&Caller::Member, Request::Compaction(request))
            .await
        {
            Ok(_) => tracing::info!(revision = target, "auto-compacted"),
            Err(e) => tracing::warn!(revision = target, error = %e, "auto-compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compaction_held_back;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_held_back_compaction_is_a_cause_until_the_disk_has_its_room() {
        let cause = || Some("held back".to_owned());
        assert!(compaction_held_back(cause(), Some(100 * MIB), Some(99 * MIB), 64 * MIB).is_some());
        assert!(
            compaction_held_back(cause(), Some(100 * MIB), Some(100 * MIB), 64 * MIB).is_none()
        );
        // Room for it, though the disk is below the reserve (that raises the alarm itself).
        assert!(compaction_held_back(cause(), Some(10 * MIB), Some(20 * MIB), 64 * MIB).is_none());
        // Free space unknown: the cause stands.
        assert!(compaction_held_back(cause(), Some(MIB), None, 64 * MIB).is_some());
        assert!(compaction_held_back(None, Some(100 * MIB), Some(0), 64 * MIB).is_none());
    }

    /// A chaos run (seed 330610) raised NOSPACE again a second after the disk was freed and the
    /// alarm disarmed: the compaction that had failed writing its table on the full disk was
    /// still the LSM's cause, with no room it waits for, until its retry ran.
    #[test]
    fn a_compaction_write_that_failed_is_a_cause_only_while_the_disk_is_below_the_reserve() {
        let cause = || Some("flush table 000541.sst: No space left on device".to_owned());
        assert!(compaction_held_back(cause(), None, Some(60 * MIB), 128 * MIB).is_some());
        assert!(compaction_held_back(cause(), None, Some(128 * MIB), 128 * MIB).is_none());
        assert!(compaction_held_back(cause(), None, Some(2_000 * MIB), 128 * MIB).is_none());
        assert!(compaction_held_back(cause(), None, None, 128 * MIB).is_some());
    }
}
