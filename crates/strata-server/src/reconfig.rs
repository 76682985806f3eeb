//! etcd's `--strict-reconfig-check` (on by default): the leader refuses a member change that
//! could cost the cluster its quorum, as etcd's `mayAddMember`, `mayRemoveMember` and
//! `mayPromoteMember` do.
//!
//! - Adding a member (voter or learner) needs the leader to have heard from every voting
//!   member without a break for [`HEALTH_INTERVAL`]; adding a voter also needs a quorum of the
//!   grown cluster to have started (named themselves), so a member added while another is
//!   down or not yet started cannot leave the cluster without a majority.
//! - Removing a voter needs a quorum of the others started, and, unless the member removed is
//!   down already (or is the leader), enough connected members left for a quorum.
//! - Promoting a learner needs a quorum of the grown cluster started.
//!
//! Refusals are etcd's: `etcdserver: unhealthy cluster` (Unavailable: retry) and
//! `etcdserver: re-configuration failed due to not enough started members`.

use std::time::{Duration, Instant};

use crate::rpctypes::ApiError;

/// How long the leader must have heard from a member without a break for it to count as
/// connected (etcd's `HealthInterval`).
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// What the checks know of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    /// Its id.
    pub id: u64,
    /// It has started and published its name (etcd's `IsStarted`).
    pub started: bool,
    /// It is a learner (not a voter).
    pub learner: bool,
    /// Since when the leader has heard from it without a break; `None`: not now.
    pub active_since: Option<Instant>,
}

/// The members' view, from the leader `me` at `now`.
#[derive(Debug)]
pub struct Cluster<'a> {
    /// The leader's id.
    pub me: u64,
    /// Every member, the leader and learners too.
    pub members: &'a [MemberView],
    /// When the view was taken.
    pub now: Instant,
}

impl Cluster<'_> {
    fn voters(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| !m.learner)
    }

    /// Whether `m` has been connected since [`HEALTH_INTERVAL`] ago (the leader always is).
    fn connected(&self, m: &MemberView) -> bool {
        let since = self.now.checked_sub(HEALTH_INTERVAL);
        m.id == self.me || matches!((m.active_since, since), (Some(t), Some(since)) if t <= since)
    }

    /// A member may be added (`learner`: as a learner).
    ///
    /// # Errors
    ///
    /// [`ApiError::NotEnoughStartedMembers`], [`ApiError::Unhealthy`].
    pub fn may_add(&self, learner: bool) -> Result<(), ApiError> {
        if !learner {
            // The grown cluster counts the new member, not started.
            let members = self.voters().count() + 1;
            let started = self.voters().filter(|m| m.started).count();
            // Adding a second member to one is how a cluster restored from a backup grows.
            let restoring = started == 1 && members == 2;
            if !restoring && started < quorum(members) {
                return Err(ApiError::NotEnoughStartedMembers);
            }
        }
        if !self.voters().all(|m| self.connected(m)) {
            return Err(ApiError::Unhealthy);
        }
        Ok(())
    }

    /// Member `id` may be removed.
    ///
    /// # Errors
    ///
    /// [`ApiError::NotEnoughStartedMembers`], [`ApiError::Unhealthy`].
    pub fn may_remove(&self, id: u64) -> Result<(), ApiError> {
        let Some(target) = self.members.iter().find(|m| m.id == id) else {
            return Ok(());
        };
        if target.learner {
            return Ok(());
        }
        let others = self.voters().filter(|m| m.id != id).count();
        let started = self.voters().filter(|m| m.id != id && m.started).count();
        if started < quorum(others) {
            return Err(ApiError::NotEnoughStartedMembers);
        }
        // A member that is down is not part of the quorum that is working: removing it is safe.
        if id != self.me && target.active_since.is_none() {
            return Ok(());
        }
        let voters = self.voters().count();
        let connected = self.voters().filter(|m| self.connected(m)).count();
        if connected.saturating_sub(1) < quorum(voters.saturating_sub(1)) {
            return Err(ApiError::Unhealthy);
        }
        Ok(())
    }

    /// Learner `id` may be promoted.
    ///
    /// # Errors
    ///
    /// [`ApiError::NotEnoughStartedMembers`].
    pub fn may_promote(&self) -> Result<(), ApiError> {
        // The learner counts, as started.
        let members = self.voters().count() + 1;
        let started = self.voters().filter(|m| m.started).count() + 1;
        if started < quorum(members) {
            return Err(ApiError::NotEnoughStartedMembers);
        }
        Ok(())
    }
}

/// A majority of `n`.
fn quorum(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, since: Option<Duration>, now: Instant) -> MemberView {
        MemberView {
            id,
            started: true,
            learner: false,
            active_since: since.map(|ago| now - ago),
        }
    }

    /// The view from member 1.
    fn from_one(members: &[MemberView], now: Instant) -> Cluster<'_> {
        Cluster {
            me: 1,
            members,
            now,
        }
    }

    const LONG: Option<Duration> = Some(Duration::from_secs(60));
    const FRESH: Option<Duration> = Some(Duration::from_secs(1));

    #[test]
    fn adding_needs_every_voter_connected_for_the_health_interval() {
        let now = Instant::now() + Duration::from_secs(3600);
        let healthy = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, LONG, now),
        ];
        let view = from_one(&healthy, now);
        assert_eq!(view.may_add(false), Ok(()));
        assert_eq!(view.may_add(true), Ok(()));
        for other in [None, FRESH] {
            let members = [
                member(1, None, now),
                member(2, LONG, now),
                member(3, other, now),
            ];
            let view = from_one(&members, now);
            assert_eq!(view.may_add(false), Err(ApiError::Unhealthy));
            assert_eq!(view.may_add(true), Err(ApiError::Unhealthy));
        }
    }

    #[test]
    fn a_voter_is_added_only_with_a_quorum_of_the_grown_cluster_started() {
        let now = Instant::now() + Duration::from_secs(3600);
        // Two of three started: the fourth member's cluster needs three.
        let mut members = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, LONG, now),
        ];
        members[2].started = false;
        let view = from_one(&members, now);
        assert_eq!(view.may_add(false), Err(ApiError::NotEnoughStartedMembers));
        // One member growing to two: allowed (a restored cluster).
        let one = [member(1, None, now)];
        let view = from_one(&one, now);
        assert_eq!(view.may_add(false), Ok(()));
    }

    #[test]
    fn removing_keeps_a_connected_quorum_unless_the_member_is_down() {
        let now = Instant::now() + Duration::from_secs(3600);
        // Member 3 down: removing it is fine; removing the live member 2 would leave 1 of 2.
        let members = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, None, now),
        ];
        let view = from_one(&members, now);
        assert_eq!(view.may_remove(3), Ok(()));
        assert_eq!(view.may_remove(2), Err(ApiError::Unhealthy));
        // All up: any member, the leader too.
        let members = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, LONG, now),
        ];
        let view = from_one(&members, now);
        assert_eq!(view.may_remove(2), Ok(()));
        assert_eq!(view.may_remove(1), Ok(()));
        // Two of the others not started: not enough started members.
        let mut members = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, LONG, now),
            member(4, None, now),
        ];
        members[2].started = false;
        members[3].started = false;
        let view = from_one(&members, now);
        assert_eq!(view.may_remove(2), Err(ApiError::NotEnoughStartedMembers));
        // A learner always.
        let mut members = [member(1, None, now), member(2, None, now)];
        members[1].learner = true;
        let view = from_one(&members, now);
        assert_eq!(view.may_remove(2), Ok(()));
    }

    #[test]
    fn promoting_needs_a_quorum_of_the_grown_cluster_started() {
        let now = Instant::now() + Duration::from_secs(3600);
        let mut members = [
            member(1, None, now),
            member(2, LONG, now),
            member(3, LONG, now),
            member(4, LONG, now),
        ];
        members[3].learner = true;
        let view = from_one(&members, now);
        assert_eq!(view.may_promote(), Ok(()));
        members[1].started = false;
        members[2].started = false;
        let view = from_one(&members, now);
        assert_eq!(view.may_promote(), Err(ApiError::NotEnoughStartedMembers));
    }
}
