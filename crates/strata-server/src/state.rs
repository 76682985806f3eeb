//! The server's replicated state beside the MVCC key space: the member table, the alarms, the
//! leases, the auth state, the Kvdb sessions and the replicated clock. The applying task is its only writer (through
//! [`Pending`], written in the same LSM batch as the MVCC changes and the applied index); the
//! services read it. Its keys are in the LSM under [`SERVER`] (`docs/formats/server.md`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use prost::Message;
use strata_lsm::{Db, Direction};
use strata_mvcc::{LeaseMove, Store};

use crate::auth::AuthState;
use crate::proto::authpb::{Role, User};
use crate::proto::etcdserverpb::Member;

/// The first byte of every server key: apart from strata-mvcc's `k`, `r` and `m`.
pub const SERVER: u8 = b's';

/// The applied index: `s` `applied` → u64 LE.
pub const APPLIED: &[u8] = b"sapplied";
/// The replicated clock (Unix ms, never decreasing): `s` `clock` → u64 LE.
pub const CLOCK: &[u8] = b"sclock";
/// The cluster id, as headers show it: `s` `cluster` → u64 LE.
pub const CLUSTER: &[u8] = b"scluster";
/// A member: `s` `member/` id (u64 BE) → `etcdserverpb.Member`.
const MEMBER: &[u8] = b"smember/";
/// A raised alarm: `s` `alarm/` member id (u64 BE) alarm type (i32 BE) → empty.
const ALARM: &[u8] = b"salarm/";
/// A lease: `s` `lease/` id (i64 as u64 BE) → its granted TTL in seconds (i64 LE), then its
/// checkpointed remaining TTL in seconds (i64 LE) if one is recorded.
const LEASE: &[u8] = b"slease/";
/// A Kvdb session: `s` `kvdb/` client id (u64 BE) → `Session` (see [`Session::encode`]).
const KVDB: &[u8] = b"skvdb/";
/// Whether auth is enabled: `s` `auth/enabled` → one byte, 0 or 1.
const AUTH_ENABLED: &[u8] = b"sauth/enabled";
/// The auth revision: `s` `auth/revision` → u64 LE.
const AUTH_REVISION: &[u8] = b"sauth/revision";
/// The members' shared secret: `s` `auth/secret` → its bytes.
const AUTH_SECRET: &[u8] = b"sauth/secret";
/// A user: `s` `auth/user/` name → `authpb.User`.
const AUTH_USER: &[u8] = b"sauth/user/";
/// A role: `s` `auth/role/` name → `authpb.Role`.
const AUTH_ROLE: &[u8] = b"sauth/role/";

/// Live Kvdb sessions at most: each holds its last answer, so this bounds their memory (and
/// a client that registers in a loop cannot grow the table without bound).
pub const KVDB_SESSIONS_MAX: usize = 4096;

/// A Kvdb session idle for this long (replicated clock) is dropped when room is needed.
pub const KVDB_SESSION_TTL_MS: u64 = 60 * 60 * 1000;

/// One Kvdb client's session: the last sequence number applied and its answer, so that a retry
/// gets the first answer without applying again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    /// The last sequence number applied (0: none yet).
    pub last_seq: u64,
    /// Its answer (an encoded `clientpb.Response`).
    pub last_answer: Bytes,
    /// When the session was last used (replicated clock).
    pub active_ms: u64,
    /// The etcd user whose token opened it (empty: opened while auth was off).
    pub user: String,
}

impl Session {
    /// `last_seq` u64 LE, `active_ms` u64 LE, the user's length (u16 LE) and name, then the
    /// answer.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.user.len() + self.last_answer.len());
        out.extend_from_slice(&self.last_seq.to_le_bytes());
        out.extend_from_slice(&self.active_ms.to_le_bytes());
        // User names come from the auth state, whose requests are bounded far below 64 KiB.
        let user = &self.user.as_bytes()[..self.user.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(user.len() as u16).to_le_bytes());
        out.extend_from_slice(user);
        out.extend_from_slice(&self.last_answer);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let last_seq = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let active_ms = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
        let user_len = usize::from(u16::from_le_bytes(bytes.get(16..18)?.try_into().ok()?));
        let user = String::from_utf8(bytes.get(18..18 + user_len)?.to_vec()).ok()?;
        Some(Self {
            last_seq,
            last_answer: Bytes::copy_from_slice(&bytes[18 + user_len..]),
            active_ms,
            user,
        })
    }
}

/// The replicated state as the services read it.
#[derive(Debug, Default)]
pub struct State {
    /// The members, by id.
    pub members: BTreeMap<u64, Member>,
    /// The raised alarms: (member id, `AlarmType` value).
    pub alarms: BTreeSet<(u64, i32)>,
    /// The Kvdb sessions, by client id.
    pub sessions: BTreeMap<u64, Session>,
    /// The replicated clock.
    pub clock_ms: u64,
    /// The cluster id (0 until known: a member that joined learns it from the log).
    pub cluster_id: u64,
    /// The leases granted and not revoked: id → granted TTL in seconds.
    pub leases: BTreeMap<i64, i64>,
    /// The leases' remaining TTLs in seconds as the leader last recorded them (checkpoints):
    /// what a new leader gives them instead of their whole TTL. Absent: the whole TTL.
    pub lease_remaining: BTreeMap<i64, i64>,
    /// Users, roles, permissions (shared: a request's check reads it without the lock).
    pub auth: Arc<AuthState>,
    /// Each lease's keys (not stored: built from the store at start and after a snapshot
    /// is installed, then kept from each batch's lease moves).
    pub lease_keys: HashMap<i64, BTreeSet<Vec<u8>>>,
}

/// [`State`], shared.
#[derive(Debug, Default)]
pub struct Shared(pub RwLock<State>);

/// Changes to the state made while applying a batch: written in the batch's LSM write, then
/// published.
#[derive(Debug, Default)]
pub struct Pending {
    members: BTreeMap<u64, Option<Member>>,
    alarms: BTreeMap<(u64, i32), bool>,
    sessions: BTreeMap<u64, Option<Session>>,
    clock_ms: Option<u64>,
    cluster_id: Option<u64>,
    /// Granted (`Some`: TTL, remaining TTL or 0 for none) or revoked (`None`) leases, and
    /// checkpointed ones.
    leases: BTreeMap<i64, Option<(i64, i64)>>,
    /// The auth state as the batch leaves it, once the batch changes it, with the user and
    /// role names it had before (to write the deletions).
    auth: Option<(AuthState, BTreeSet<String>, BTreeSet<String>)>,
    lease_moves: Vec<LeaseMove>,
}

impl Pending {
    /// Sets (`Some`) or removes a member.
    pub fn member(&mut self, id: u64, member: Option<Member>) {
        self.members.insert(id, member);
    }

    /// Raises or clears an alarm.
    pub fn alarm(&mut self, member: u64, alarm: i32, raised: bool) {
        self.alarms.insert((member, alarm), raised);
    }

    /// Sets or removes a session.
    pub fn session(&mut self, id: u64, session: Option<Session>) {
        self.sessions.insert(id, session);
    }

    /// Grants (`Some(ttl)`) or revokes a lease.
    pub fn lease(&mut self, id: i64, ttl: Option<i64>) {
        self.leases.insert(id, ttl.map(|ttl| (ttl, 0)));
    }

    /// Records lease `id`'s remaining TTL (0: none, its whole TTL), if it exists.
    pub fn lease_checkpoint(&mut self, shared: &Shared, id: i64, remaining: i64) {
        if let Some(ttl) = self.lease_in(shared, id) {
            // Never above the TTL, never negative (and no panic for a TTL below 0).
            self.leases
                .insert(id, Some((ttl, remaining.min(ttl).max(0))));
        }
    }

    /// Lease `id`'s granted TTL as this batch leaves it, else as `shared` holds it.
    pub fn lease_in(&self, shared: &Shared, id: i64) -> Option<i64> {
        match self.leases.get(&id) {
            Some(lease) => lease.map(|(ttl, _)| ttl),
            None => shared.0.read().leases.get(&id).copied(),
        }
    }

    /// The auth state as this batch leaves it, to change (copied from `shared` on first use:
    /// auth changes are rare, and the state is small).
    pub fn auth_mut(&mut self, shared: &Shared) -> &mut AuthState {
        &mut self
            .auth
            .get_or_insert_with(|| {
                let auth = AuthState::clone(&shared.0.read().auth);
                let users = auth.users.keys().cloned().collect();
                let roles = auth.roles.keys().cloned().collect();
                (auth, users, roles)
            })
            .0
    }

    /// Reads the auth state as this batch leaves it.
    pub fn auth_with<R>(&self, shared: &Shared, read: impl FnOnce(&AuthState) -> R) -> R {
        match &self.auth {
            Some((auth, _, _)) => read(auth),
            None => read(&shared.0.read().auth),
        }
    }

    /// Records the batch's keys whose lease changed, for the lease index.
    pub fn lease_moves(&mut self, moves: &[LeaseMove]) {
        self.lease_moves.extend_from_slice(moves);
    }

    /// Sets the cluster id.
    pub fn cluster_id(&mut self, id: u64) {
        self.cluster_id = Some(id);
    }

    /// Moves the clock (never back).
    pub fn clock(&mut self, now_ms: u64) {
        self.clock_ms = Some(self.clock_ms.unwrap_or(0).max(now_ms));
    }

    /// Member `id` as this batch leaves it, else as `shared` holds it.
    pub fn member_in(&self, shared: &Shared, id: u64) -> Option<Member> {
        match self.members.get(&id) {
            Some(member) => member.clone(),
            None => shared.0.read().members.get(&id).cloned(),
        }
    }

    /// `alarms` with this batch's alarm changes applied.
    pub fn apply_alarms(&self, alarms: &mut BTreeSet<(u64, i32)>) {
        for (&key, &raised) in &self.alarms {
            if raised {
                alarms.insert(key);
            } else {
                alarms.remove(&key);
            }
        }
    }

    /// The session `id` as this batch left it: `None` if the batch did not touch it,
    /// `Some(None)` if it removed it.
    pub fn session_of(&self, id: u64) -> Option<Option<Session>> {
        self.sessions.get(&id).cloned()
    }

    /// How many sessions `sessions` holds once this batch's changes apply.
    pub fn session_count(&self, sessions: &BTreeMap<u64, Session>) -> usize {
        let mut count = sessions.len();
        for (id, s) in &self.sessions {
            match (sessions.contains_key(id), s.is_some()) {
                (false, true) => count += 1,
                (true, false) => count -= 1,
                _ => {}
            }
        }
        count
    }

    /// The pairs to write with the batch.
    pub fn pairs(&self, applied: u64, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        out.push((APPLIED.to_vec(), applied.to_le_bytes().to_vec()));
        if let Some(clock) = self.clock_ms {
            out.push((CLOCK.to_vec(), clock.to_le_bytes().to_vec()));
        }
        if let Some(id) = self.cluster_id {
            out.push((CLUSTER.to_vec(), id.to_le_bytes().to_vec()));
        }
        for (id, member) in &self.members {
            let value = member.as_ref().map(Message::encode_to_vec);
            out.push((member_key(*id), value.unwrap_or_default()));
        }
        for (&(member, alarm), &raised) in &self.alarms {
            out.push((
                alarm_key(member, alarm),
                if raised { vec![1] } else { Vec::new() },
            ));
        }
        for (id, lease) in &self.leases {
            let mut value = Vec::new();
            if let Some((ttl, remaining)) = lease {
                value.extend_from_slice(&ttl.to_le_bytes());
                if *remaining > 0 {
                    value.extend_from_slice(&remaining.to_le_bytes());
                }
            }
            out.push((lease_key(*id), value));
        }
        if let Some((auth, users, roles)) = &self.auth {
            out.push((AUTH_ENABLED.to_vec(), vec![u8::from(auth.enabled)]));
            out.push((AUTH_REVISION.to_vec(), auth.revision.to_le_bytes().to_vec()));
            if !auth.member_secret.is_empty() {
                out.push((AUTH_SECRET.to_vec(), auth.member_secret.clone()));
            }
            for (name, user) in &auth.users {
                out.push((named_key(AUTH_USER, name), user.encode_to_vec()));
            }
            for (name, role) in &auth.roles {
                out.push((named_key(AUTH_ROLE, name), role.encode_to_vec()));
            }
            for gone in users.iter().filter(|n| !auth.users.contains_key(*n)) {
                out.push((named_key(AUTH_USER, gone), Vec::new()));
            }
            for gone in roles.iter().filter(|n| !auth.roles.contains_key(*n)) {
                out.push((named_key(AUTH_ROLE, gone), Vec::new()));
            }
        }
        for (id, session) in &self.sessions {
            let mut key = KVDB.to_vec();
            key.extend_from_slice(&id.to_be_bytes());
            out.push((
                key,
                session.as_ref().map(Session::encode).unwrap_or_default(),
            ));
        }
    }

    /// Publishes the changes (after the batch is durable in the LSM).
    pub fn publish(self, shared: &Shared) {
        let mut state = shared.0.write();
        for (id, member) in self.members {
            match member {
                Some(m) => state.members.insert(id, m),
                None => state.members.remove(&id),
            };
        }
        for (key, raised) in self.alarms {
            if raised {
                state.alarms.insert(key);
            } else {
                state.alarms.remove(&key);
            }
        }
        for (id, session) in self.sessions {
            match session {
                Some(s) => state.sessions.insert(id, s),
                None => state.sessions.remove(&id),
            };
        }
        if let Some(clock) = self.clock_ms {
            state.clock_ms = state.clock_ms.max(clock);
        }
        if let Some(id) = self.cluster_id {
            state.cluster_id = id;
        }
        for (id, lease) in self.leases {
            match lease {
                Some((ttl, remaining)) => {
                    state.leases.insert(id, ttl);
                    if remaining > 0 {
                        state.lease_remaining.insert(id, remaining);
                    } else {
                        state.lease_remaining.remove(&id);
                    }
                }
                None => {
                    state.leases.remove(&id);
                    state.lease_remaining.remove(&id);
                }
            }
        }
        if let Some((auth, _, _)) = self.auth {
            state.auth = Arc::new(auth);
        }
        move_leases(&mut state.lease_keys, &self.lease_moves);
    }
}

/// Applies lease moves to a lease index.
pub fn move_leases(index: &mut HashMap<i64, BTreeSet<Vec<u8>>>, moves: &[LeaseMove]) {
    for m in moves {
        if m.from != 0
            && let Some(keys) = index.get_mut(&m.from)
        {
            keys.remove(&m.key);
            if keys.is_empty() {
                index.remove(&m.from);
            }
        }
        if m.to != 0 {
            index.entry(m.to).or_default().insert(m.key.clone());
        }
    }
}

/// Each lease's keys as `store` holds them (one keys-only scan).
///
/// # Errors
///
/// The store's.
pub fn lease_index(store: &Store) -> Result<HashMap<i64, BTreeSet<Vec<u8>>>, String> {
    let all = store
        .range_request(&strata_mvcc::api::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            keys_only: true,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
    let mut index: HashMap<i64, BTreeSet<Vec<u8>>> = HashMap::new();
    for kv in all.kvs.into_iter().filter(|kv| kv.lease != 0) {
        index.entry(kv.lease).or_default().insert(kv.key);
    }
    Ok(index)
}

/// A user's or a role's key.
fn named_key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

/// A member's key.
pub fn member_key(id: u64) -> Vec<u8> {
    let mut key = MEMBER.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// A lease's key.
pub fn lease_key(id: i64) -> Vec<u8> {
    let mut key = LEASE.to_vec();
    key.extend_from_slice(&(id as u64).to_be_bytes());
    key
}

/// An alarm's key.
pub fn alarm_key(member: u64, alarm: i32) -> Vec<u8> {
    let mut key = ALARM.to_vec();
    key.extend_from_slice(&member.to_be_bytes());
    key.extend_from_slice(&alarm.to_be_bytes());
    key
}

/// Reads a u64 LE value (0 when absent).
pub fn read_u64(db: &Db, key: &[u8]) -> Result<u64, String> {
    match db.get(key).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(v) => v
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("{}: not a u64", String::from_utf8_lossy(key))),
    }
}

/// Writes a new member's first state: the initial members and the cluster id (the same on
/// every member of a new cluster, which all start from the same flags), synced.
pub fn bootstrap(db: &Db, members: &[Member], cluster_id: u64) -> Result<(), String> {
    let mut batch = strata_lsm::WriteBatch::new();
    for member in members {
        batch.put(&member_key(member.id), &member.encode_to_vec());
    }
    batch.put(CLUSTER, &cluster_id.to_le_bytes());
    db.write(batch, strata_lsm::WriteOptions { sync: true })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Loads the replicated state from the LSM. Empty values are deletions that the LSM still
/// holds (a removed member, a cleared alarm): they are skipped.
pub fn load(db: &Db) -> Result<State, String> {
    let mut state = State {
        clock_ms: read_u64(db, CLOCK)?,
        cluster_id: read_u64(db, CLUSTER)?,
        ..State::default()
    };
    let mut error = None;
    let lower = [SERVER];
    let upper = [SERVER + 1];
    db.scan(
        std::ops::Bound::Included(&lower[..]),
        std::ops::Bound::Excluded(&upper[..]),
        Direction::Forward,
        |k, v| {
            if v.is_empty() {
                return true;
            }
            let id_at = |prefix: &[u8]| {
                k.get(prefix.len()..prefix.len() + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
            };
            if k.starts_with(MEMBER) {
                match (id_at(MEMBER), Member::decode(v)) {
                    (Some(id), Ok(m)) => {
                        state.members.insert(id, m);
                    }
                    _ => error = Some("a member entry that does not decode".to_owned()),
                }
            } else if k.starts_with(ALARM) {
                let alarm = k
                    .get(ALARM.len() + 8..ALARM.len() + 12)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_be_bytes);
                match (id_at(ALARM), alarm) {
                    (Some(id), Some(alarm)) => {
                        state.alarms.insert((id, alarm));
                    }
                    _ => error = Some("an alarm entry that does not decode".to_owned()),
                }
            } else if k.starts_with(LEASE) {
                let at = |range: std::ops::Range<usize>| {
                    v.get(range)
                        .and_then(|b| b.try_into().ok())
                        .map(i64::from_le_bytes)
                };
                // A remaining TTL follows when one was checkpointed.
                let remaining = if v.len() == 16 { at(8..16) } else { None };
                match (id_at(LEASE), at(0..8)) {
                    (Some(id), Some(ttl)) if v.len() == 8 || remaining.is_some() => {
                        state.leases.insert(id as i64, ttl);
                        if let Some(remaining) = remaining.filter(|&r| r > 0) {
                            state.lease_remaining.insert(id as i64, remaining);
                        }
                    }
                    _ => error = Some("a lease entry that does not decode".to_owned()),
                }
            } else if k == AUTH_ENABLED {
                Arc::make_mut(&mut state.auth).enabled = v == [1];
            } else if k == AUTH_REVISION {
                match v.get(..8).and_then(|b| b.try_into().ok()) {
                    Some(b) => Arc::make_mut(&mut state.auth).revision = u64::from_le_bytes(b),
                    None => error = Some("an auth revision that does not decode".to_owned()),
                }
            } else if k == AUTH_SECRET {
                Arc::make_mut(&mut state.auth).member_secret = v.to_vec();
            } else if let Some(name) = k.strip_prefix(AUTH_USER) {
                match (String::from_utf8(name.to_vec()), User::decode(v)) {
                    (Ok(name), Ok(user)) => {
                        Arc::make_mut(&mut state.auth).users.insert(name, user);
                    }
                    _ => error = Some("a user entry that does not decode".to_owned()),
                }
            } else if let Some(name) = k.strip_prefix(AUTH_ROLE) {
                match (String::from_utf8(name.to_vec()), Role::decode(v)) {
                    (Ok(name), Ok(role)) => {
                        Arc::make_mut(&mut state.auth).roles.insert(name, role);
                    }
                    _ => error = Some("a role entry that does not decode".to_owned()),
                }
            } else if k.starts_with(KVDB) {
                match (id_at(KVDB), Session::decode(v)) {
                    (Some(id), Some(s)) => {
                        state.sessions.insert(id, s);
                    }
                    _ => error = Some("a Kvdb session that does not decode".to_owned()),
                }
            }
            error.is_none()
        },
    )
    .map_err(|e| e.to_string())?;
    match error {
        Some(e) => Err(e),
        None => Ok(state),
    }
}

/// The member's LSM options: the defaults, but without the LSM's own WAL. The Raft log is the
/// member's write-ahead log: every apply batch carries its applied index, so the LSM's tables
/// always hold a prefix of the applied entries with the index of the last, and after a crash the
/// node re-applies the log from there. The log is compacted only behind a snapshot, and a
/// snapshot flushes the LSM first (`machine.rs`), so the entries after what the tables hold are
/// always still in the log. Without it each entry is written to disk once instead of twice
/// (3,000 puts of 1 KiB: 3.1 against 6.3 MiB written); put throughput measured the same, the
/// CPU bounding it on the machine measured.
///
/// The MVCC layout's prefix extractor records each user key's name in the tables' filters:
/// every put looks for the key's newest version, and for a new key no table is read (it was a
/// fifth of a member's CPU under puts of new keys).
///
/// Compactions run below the member's other threads' priority (`COMPACTION_NICE`): when the CPU
/// is short, applying entries, the Raft log and the gRPC threads come first, and the compaction
/// catches up when it is not (level 0's slowdown and stop triggers bound how far it falls
/// behind).
pub(crate) fn lsm_options() -> strata_lsm::Options {
    strata_lsm::Options {
        wal: false,
        prefix_extractor: Some(strata_mvcc::PREFIX_EXTRACTOR),
        compaction_nice: COMPACTION_NICE,
        ..strata_lsm::Options::default()
    }
}

/// How much the LSM's compaction thread's nice value is above the member's: 10 gives it about a
/// tenth of a busy CPU's share of a thread at the member's own (Linux's weights, 110 to 1,024).
const COMPACTION_NICE: u8 = 10;

/// The file in the member directory that records where its Raft log is (the log directory's
/// path, as given), so that a start with another `--wal-dir` is refused rather than started on
/// an empty log.
pub(crate) const LOG_LOCATION: &str = "raft-log";

/// The directory of the Raft log: `wal_dir` (`--wal-dir`) if given, else `member/log` under
/// the data dir (`member_dir`). Once the log is open there, [`record_raft_log_dir`] records it.
///
/// # Errors
///
/// There is no log at that directory but the member recorded one elsewhere: it ran with
/// another `--wal-dir` (or without one), and starting on an empty log would lose every entry
/// it holds. A new member, and one restored from a snapshot, have recorded nothing.
pub(crate) fn raft_log_dir(
    member_dir: &std::path::Path,
    wal_dir: Option<&std::path::Path>,
) -> Result<std::path::PathBuf, String> {
    use std::os::unix::ffi::OsStringExt as _;
    let dir = wal_dir.map_or_else(|| member_dir.join("log"), std::path::Path::to_path_buf);
    let recorded = match std::fs::read(member_dir.join(LOG_LOCATION)) {
        Ok(bytes) => Some(std::path::PathBuf::from(std::ffi::OsString::from_vec(
            bytes,
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(format!(
                "read {}: {e}",
                member_dir.join(LOG_LOCATION).display()
            ));
        }
    };
    match recorded {
        Some(recorded) if recorded != dir && !dir.exists() => Err(format!(
            "the member's Raft log is at {} and it has no Raft log at {}: give the --wal-dir              it ran with (or move the log there)",
            recorded.display(),
            dir.display()
        )),
        _ => Ok(dir),
    }
}

/// Records `dir` as where the member's Raft log is (see [`raft_log_dir`]), durably, if it
/// is not recorded already.
///
/// # Errors
///
/// The record cannot be written.
pub(crate) fn record_raft_log_dir(
    member_dir: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let record = member_dir.join(LOG_LOCATION);
    let bytes = dir.as_os_str().as_bytes();
    if std::fs::read(&record).is_ok_and(|recorded| recorded == bytes) {
        return Ok(());
    }
    strata_fs::atomic_replace(&record, bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `pending` as a batch would: its pairs written to `db`, then published.
    fn apply(db: &Db, shared: &Shared, pending: Pending, applied: u64) {
        let mut pairs = Vec::new();
        pending.pairs(applied, &mut pairs);
        let mut batch = strata_lsm::WriteBatch::new();
        for (k, v) in &pairs {
            batch.put(k, v);
        }
        db.write(batch, strata_lsm::WriteOptions { sync: false })
            .expect("write");
        pending.publish(shared);
    }

    /// A checkpointed remaining TTL is kept with its lease in the store and read back at a
    /// restart; clearing it (0) or revoking the lease drops it; a lease that does not exist is
    /// not made by a checkpoint, and a remaining TTL is never above the granted one.
    #[test]
    fn lease_checkpoints_round_trip_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), lsm_options()).expect("open");
        let shared = Shared::default();
        let mut grant = Pending::default();
        grant.lease(5, Some(60));
        apply(&db, &shared, grant, 1);
        let mut checkpoint = Pending::default();
        checkpoint.lease_checkpoint(&shared, 5, 42);
        checkpoint.lease_checkpoint(&shared, 6, 42);
        apply(&db, &shared, checkpoint, 2);
        for state in [
            load(&db).expect("load"),
            std::mem::take(&mut *shared.0.write()),
        ] {
            assert_eq!(state.leases, BTreeMap::from([(5, 60)]));
            assert_eq!(state.lease_remaining, BTreeMap::from([(5, 42)]));
        }
        *shared.0.write() = load(&db).expect("load");
        let mut above = Pending::default();
        above.lease_checkpoint(&shared, 5, 600);
        apply(&db, &shared, above, 3);
        assert_eq!(
            load(&db).expect("load").lease_remaining,
            BTreeMap::from([(5, 60)])
        );
        let mut clear = Pending::default();
        clear.lease_checkpoint(&shared, 5, 0);
        apply(&db, &shared, clear, 4);
        let state = load(&db).expect("load");
        assert_eq!(state.leases, BTreeMap::from([(5, 60)]));
        assert!(state.lease_remaining.is_empty());
        assert!(shared.0.read().lease_remaining.is_empty());
        let mut again = Pending::default();
        again.lease_checkpoint(&shared, 5, 7);
        apply(&db, &shared, again, 5);
        let mut revoke = Pending::default();
        revoke.lease(5, None);
        apply(&db, &shared, revoke, 6);
        let state = load(&db).expect("load");
        assert!(state.leases.is_empty() && state.lease_remaining.is_empty());
        assert!(shared.0.read().lease_remaining.is_empty());
    }

    #[test]
    fn session_round_trips() {
        let s = Session {
            last_seq: 7,
            last_answer: Bytes::from_static(b"answer"),
            active_ms: 99,
            user: "alice".to_owned(),
        };
        assert_eq!(Session::decode(&s.encode()), Some(s));
        assert_eq!(Session::decode(&[1, 2, 3]), None);
    }
}
