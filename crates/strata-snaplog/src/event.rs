//! The events a [`Snapshotter`](crate::Snapshotter) takes in and passes through.

use std::net::SocketAddr;

use strata_clock::LamportTime;

/// A cluster member as member events carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's unique name. It must not contain a newline to be recorded.
    pub name: String,
    /// Its gossip address. Recorded as Serf formats a TCP address: `10.0.0.1:7946`,
    /// `[::1]:7946`.
    pub addr: SocketAddr,
}

/// What happened to the members of a [`MemberEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberEventKind {
    /// The members joined: recorded as `alive:` lines.
    Join,
    /// The members left gracefully: recorded as `not-alive:` lines.
    Leave,
    /// The members failed: recorded as `not-alive:` lines.
    Failed,
    /// The members' tags changed: not recorded (only the clock is).
    Update,
    /// The members were reaped: not recorded (only the clock is).
    Reap,
}

/// A change to one or more members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEvent {
    /// What happened.
    pub kind: MemberEventKind,
    /// To whom.
    pub members: Vec<Member>,
}

/// A user event: recorded as `event-clock:` when its time is newer than the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    /// The event's Lamport time.
    pub ltime: LamportTime,
    /// The event's name.
    pub name: String,
    /// The event's payload.
    pub payload: Vec<u8>,
    /// Whether events of the same name may be coalesced.
    pub coalesce: bool,
}

/// A query: recorded as `query-clock:` when its time is newer than the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The query's Lamport time.
    pub ltime: LamportTime,
    /// The query's name.
    pub name: String,
    /// The query's payload.
    pub payload: Vec<u8>,
}

/// An event flowing through the snapshotter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Members joined, left, failed, were updated or reaped.
    Member(MemberEvent),
    /// A user event.
    User(UserEvent),
    /// A query.
    Query(Query),
}
