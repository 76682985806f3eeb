//! Every error a client can see, with etcd's gRPC code and exact text: clients (etcd's Go
//! client, `etcdctl`, the `etcd-client` crate) match on the text, so it is written once, here
//! (etcd's `api/v3rpc/rpctypes/error.go`).

use tonic::{Code, Status};

/// A client-visible error. `Display` is etcd's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// An empty key in a request or a compare.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist; an empty request op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// More operations in a txn than `--max-txn-ops`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A key written twice in one txn branch.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Peer URLs that do not parse.
    #[error("etcdserver: given member URLs are invalid")]
    InvalidMemberUrls,
    /// A read below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The NOSPACE alarm is raised: writes are refused until it is disarmed.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// Too many requests committed and not yet applied.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// LeaseGrant with the id of a live lease.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// LeaseGrant with a TTL over etcd's maximum (9,000,000,000 s).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A member that does not exist.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// MemberAdd with an id already in use.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// MemberAdd or MemberUpdate with another member's peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// MemberPromote of a voter.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// MemberPromote of a learner behind the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A member change that would leave fewer started members than a quorum
    /// (`--strict-reconfig-check`).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A member change while the leader has not been connected to enough members for 5 s
    /// (`--strict-reconfig-check`).
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// MoveLeader on a member that is not the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// No leader to serve the request.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was under way.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The server is stopping or stopped.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A learner asked for what only voters serve.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// No answer in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A Kvdb session that does not exist (never registered, or expired).
    #[error("kvdb: unknown client id {0}; register again")]
    UnknownSession(u64),
    /// A Kvdb token that does not match `--kvdb-token-file`.
    #[error("kvdb: invalid token")]
    BadToken,
    /// Too many live Kvdb sessions.
    #[error("kvdb: too many sessions; retry after idle ones expire")]
    TooManySessions,
    /// A Kvdb sequence number below one already answered.
    #[error("kvdb: sequence number {seq} is older than the last one answered ({last})")]
    StaleSequence {
        /// The request's.
        seq: u64,
        /// The session's last answered.
        last: u64,
    },
    /// Auth is on and the request has no token.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// A token that no member assigned, or that expired.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A request checked at an auth revision older than the one it was applied at: the client
    /// authenticates again and retries.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// A wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// AuthEnable without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// AuthEnable while the root user lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// UserAdd of a user that exists.
    #[error("etcdserver: user name already exists")]
    UserExists,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleExists,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd with an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// RoleGrantPermission without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// UserRevokeRole of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// RoleRevokePermission of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// Deleting root (or its role) while auth is on; an invalid permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A refusal made while applying (on this member or the leader): its code and text as
    /// they were made.
    #[error("{1}")]
    Refused(i32, String),
    /// A sort order or target that does not exist.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A write while the CORRUPT alarm is raised.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// `Authenticate` on a member with a JWT public key and no private key.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// Bad input that has no etcd text of its own.
    #[error("etcdserver: {0}")]
    Invalid(String),
    /// The storage failed.
    #[error("etcdserver: {0}")]
    Internal(String),
}

impl ApiError {
    /// etcd's gRPC code for the error.
    pub fn code(&self) -> Code {
        use ApiError::*;
        match self {
            EmptyKey
            | InvalidSortOption
            | KeyNotFound
            | ValueProvided
            | LeaseProvided
            | TooManyOps
            | DuplicateKey
            | RequestTooLarge
            | InvalidMemberUrls
            | Invalid(_)
            | BadToken
            | StaleSequence { .. }
            | UserEmpty
            | AuthOldRevision
            | AuthFailed
            | RoleEmpty
            | PermissionNotGiven
            | InvalidAuthMgmt => Code::InvalidArgument,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            AuthNotEnabled | RootUserNotExist | RootRoleNotExist | UserExists | UserNotFound
            | RoleExists | RoleNotFound | RoleNotGranted | PermissionNotGranted => {
                Code::FailedPrecondition
            }
            Compacted | FutureRevision | LeaseTtlTooLarge => Code::OutOfRange,
            NoSpace | TooManyRequests | TooManySessions => Code::ResourceExhausted,
            LeaseNotFound | MemberNotFound | UnknownSession(_) => Code::NotFound,
            LeaseExists
            | MemberExists
            | PeerUrlExists
            | MemberNotLearner
            | LearnerNotReady
            | NotEnoughStartedMembers
            | NotLeader
            | BadLeaderTransferee => Code::FailedPrecondition,
            NoLeader | LeaderChanged | Stopped | NotSupportedForLearner | Timeout | Unhealthy => {
                Code::Unavailable
            }
            Internal(_) => Code::Internal,
            VerifyOnly => Code::Unknown,
            Corrupt => Code::DataLoss,
            Refused(code, _) => Code::from_i32(*code),
        }
    }

    /// The gRPC status a client receives.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        e.to_status()
    }
}

impl From<strata_mvcc::Error> for ApiError {
    fn from(e: strata_mvcc::Error) -> Self {
        use strata_mvcc::Error as E;
        match e {
            E::Compacted => ApiError::Compacted,
            E::FutureRevision => ApiError::FutureRevision,
            E::EmptyKey => ApiError::EmptyKey,
            E::KeyNotFound => ApiError::KeyNotFound,
            E::ValueProvided => ApiError::ValueProvided,
            E::LeaseProvided => ApiError::LeaseProvided,
            E::TooManyOps => ApiError::TooManyOps,
            E::DuplicateKey => ApiError::DuplicateKey,
            E::LeaseNotFound => ApiError::LeaseNotFound,
            E::InvalidSortOption => ApiError::InvalidSortOption,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<strata_raft_node::DriverError> for ApiError {
    fn from(e: strata_raft_node::DriverError) -> Self {
        use strata_raft_node::DriverError as D;
        match e {
            D::NotLeader { leader: 0 } => ApiError::NoLeader,
            D::NotLeader { .. } | D::Dropped(_) => ApiError::LeaderChanged,
            D::EntryTooLarge { .. } => ApiError::RequestTooLarge,
            D::Timeout => ApiError::Timeout,
            D::Stopped => ApiError::Stopped,
            other => ApiError::Internal(other.to_string()),
        }
    }
}
