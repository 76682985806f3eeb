//! etcd's auth: users (bcrypt password hashes), roles, permissions on keys and ranges, the
//! enabled flag and the auth revision, as replicated state ([`AuthState`]); the changes the
//! Auth service proposes, applied here the same way on every member ([`AuthState::apply`]);
//! and the permission rules every request is checked against ([`AuthState::check`]), as
//! etcd's `auth/store.go` and `apply_auth.go` define them.
//!
//! Who is asking is a [`Caller`], found from the request's `token` metadata: a simple token
//! that `Authenticate` assigned through the log ([`token::Tokens`]), or, with
//! `--auth-token jwt,...`, a JSON Web Token checked by its signature ([`jwt`]). A member
//! forwards its own requests to the leader with the members' shared secret instead.

pub mod caller;
pub mod jwt;
pub mod service;
pub mod token;

use std::collections::BTreeMap;

use crate::proto::authpb::{Permission, Role, User, UserAddOptions, permission::Type as PermType};
use crate::proto::etcdserverpb::{
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
    DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, request_op,
};
use crate::proto::strataserverpb::raft_request::Request;
use crate::rpctypes::ApiError;

/// The user and the role that bypass every permission check (etcd's).
pub const ROOT: &str = "root";

/// The bytes of the members' shared secret.
pub const MEMBER_SECRET_BYTES: usize = 32;

/// Users at most: each is checked and listed in memory, so the table is bounded (etcd has no
/// limit; 100,000 users with a few roles each is a few tens of MiB).
pub const USERS_MAX: usize = 100_000;

/// Roles at most, for the same reason.
pub const ROLES_MAX: usize = 100_000;

/// Permissions per role at most: a check walks a user's permissions, so this bounds its cost.
pub const PERMISSIONS_PER_ROLE_MAX: usize = 10_000;

/// The replicated auth state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthState {
    /// Whether requests are checked.
    pub enabled: bool,
    /// Bumped by every change (and by enable): a request checked at an older revision is
    /// refused when applied.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (the `root` role is a name only: it grants everything).
    pub roles: BTreeMap<String, Role>,
    /// The secret members forward their own requests with (fixed by the first enable).
    pub member_secret: Vec<u8>,
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A member, for itself (publish, alarms, auto-compaction, lease expiry, authentication):
    /// never checked.
    Member,
    /// A client that presented a valid token, or (with `--client-cert-auth` and no token)
    /// a verified client certificate whose subject common name is the user's (etcd's rule).
    User {
        /// The user's name.
        name: String,
        /// The token, passed on when the request is forwarded to the leader; `None` for a
        /// user known by its certificate, whom the forwarding member vouches for.
        token: Option<String>,
    },
    /// A client without a token.
    Anonymous,
}

/// A read or a write, for a permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, watch, compares, `prev_kv`.
    Read,
    /// Put, delete.
    Write,
}

/// The key after `key` in byte order: `[key, successor(key))` holds `key` alone.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// etcd's reading of a key and a range end as an interval `[start, end)`; `None` as the end
/// is unbounded (`range_end` `"\0"`); an empty `range_end` is the key alone.
fn interval(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    match range_end {
        [] => (key.to_vec(), Some(successor(key))),
        [0] => (key.to_vec(), None),
        end => (key.to_vec(), Some(end.to_vec())),
    }
}

/// Whether the union of `granted` covers `[start, end)` (`None`: unbounded).
fn covers(mut granted: Vec<(Vec<u8>, Option<Vec<u8>>)>, start: &[u8], end: Option<&[u8]>) -> bool {
    if let Some(end) = end
        && start >= end
    {
        // An empty range reads and writes nothing.
        return true;
    }
    granted.sort();
    // Sweep from the start: `reached` is how far the granted intervals cover so far.
    let mut reached = start.to_vec();
    for (from, to) in granted {
        if from.as_slice() > reached.as_slice() {
            break;
        }
        match to {
            None => return true,
            Some(to) if to > reached => reached = to,
            Some(_) => {}
        }
        if end.is_some_and(|end| reached.as_slice() >= end) {
            return true;
        }
    }
    false
}

impl AuthState {
    /// Whether `user` exists and has the root role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|u| u.roles.iter().any(|r| r == ROOT))
    }

    /// Whether `user` may `access` every key of `key`..`range_end` (etcd's reading of the
    /// pair); root may do anything, an unknown user nothing.
    pub fn permitted(&self, user: &str, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.iter().any(|r| r == ROOT) {
            return true;
        }
        let mut granted = Vec::new();
        for role in u.roles.iter().filter_map(|r| self.roles.get(r)) {
            for perm in &role.key_permission {
                let matches = match PermType::try_from(perm.perm_type) {
                    Ok(PermType::Readwrite) => true,
                    Ok(PermType::Read) => access == Access::Read,
                    Ok(PermType::Write) => access == Access::Write,
                    Err(_) => false,
                };
                if matches {
                    granted.push(interval(&perm.key, &perm.range_end));
                }
            }
        }
        let (start, end) = interval(key, range_end);
        covers(granted, &start, end.as_deref())
    }

    /// Whether auth is on and `caller` is not a member (so its requests are checked); refuses
    /// a caller without a token.
    fn user<'a>(&self, caller: &'a Caller) -> Result<Option<&'a str>, ApiError> {
        if !self.enabled {
            return Ok(None);
        }
        match caller {
            Caller::Member => Ok(None),
            Caller::User { name, .. } => Ok(Some(name)),
            Caller::Anonymous => Err(ApiError::UserEmpty),
        }
    }

    /// Checks that `caller` may `access` `key`..`range_end`.
    ///
    /// # Errors
    ///
    /// [`ApiError::UserEmpty`] without a token, [`ApiError::PermissionDenied`].
    pub fn check_access(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), ApiError> {
        match self.user(caller)? {
            Some(user) if !self.permitted(user, key, range_end, access) => {
                Err(ApiError::PermissionDenied)
            }
            _ => Ok(()),
        }
    }

    /// Checks that `caller` is an administrator (has the root role).
    ///
    /// # Errors
    ///
    /// [`ApiError::UserEmpty`] without a token, [`ApiError::UserNotFound`] for a user that
    /// no longer exists, [`ApiError::PermissionDenied`].
    pub fn check_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        match self.user(caller)? {
            Some(user) if !self.users.contains_key(user) => Err(ApiError::UserNotFound),
            Some(user) if !self.is_admin(user) => Err(ApiError::PermissionDenied),
            _ => Ok(()),
        }
    }

    /// Checks that `caller` is someone: any user with a valid token (requests that touch no
    /// key but should not be anonymous once auth is on).
    ///
    /// # Errors
    ///
    /// [`ApiError::UserEmpty`] without a token.
    pub fn check_user(&self, caller: &Caller) -> Result<(), ApiError> {
        self.user(caller).map(|_| ())
    }

    /// Checks that `caller` may have `request` proposed, as etcd's apply checks it.
    /// `lease_keys` gives the keys attached to a lease (for puts with a lease and revokes,
    /// which need write permission on every key of the lease unless the caller is admin).
    ///
    /// # Errors
    ///
    /// As [`check_access`](Self::check_access) and [`check_admin`](Self::check_admin).
    pub fn check(
        &self,
        caller: &Caller,
        request: &Request,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        match request {
            // Checked when applied, against the user the session was opened by.
            Request::Kvdb(_) => return Ok(()),
            // Leases are etcd 3.4's: anyone may grant one (etcd's clients, the etcd-client
            // crate included, send no token with Lease calls); a revoke needs write permission
            // on every key attached (none attached: anyone).
            Request::LeaseGrant(_) => return Ok(()),
            Request::LeaseRevoke(revoke) if self.enabled && *caller != Caller::Member => {
                if let Caller::User { name, .. } = caller
                    && self.is_admin(name)
                {
                    return Ok(());
                }
                for key in lease_keys(revoke.id) {
                    self.check_access(caller, &key, &[], Access::Write)?;
                }
                return Ok(());
            }
            _ => {}
        }
        let Some(user) = self.user(caller)? else {
            return Ok(());
        };
        match request {
            Request::Put(put) => self.check_put(caller, user, put, lease_keys),
            Request::DeleteRange(delete) => self.check_delete(caller, delete),
            Request::Txn(txn) => self.check_txn(caller, user, txn, lease_keys),
            // etcd checks no permission for compaction; Strata asks for a user at least.
            Request::Compaction(_) | Request::LeaseGrant(_) => Ok(()),
            Request::LeaseRevoke(revoke) => {
                self.check_lease_keys(caller, user, revoke.id, lease_keys)
            }
            Request::KvdbRegister(register) => {
                if register.user == user {
                    Ok(())
                } else {
                    Err(ApiError::PermissionDenied)
                }
            }
            Request::Kvdb(_) => Ok(()),
            Request::Alarm(_)
            | Request::MemberUpdate(_)
            | Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_)
            | Request::RoleDelete(_) => self.check_admin(caller),
            // A member's own: a client may not send them.
            Request::Publish(_) | Request::Authenticate(_) | Request::LeaseCheckpoint(_) => {
                Err(ApiError::PermissionDenied)
            }
        }
    }

    /// Checks a txn that only reads (served at this member, never proposed).
    ///
    /// # Errors
    ///
    /// As [`check_access`](Self::check_access).
    pub fn check_read_txn(&self, caller: &Caller, txn: &TxnRequest) -> Result<(), ApiError> {
        match self.user(caller)? {
            Some(user) => self.check_txn(caller, user, txn, &|_| Vec::new()),
            None => Ok(()),
        }
    }

    fn check_put(
        &self,
        caller: &Caller,
        user: &str,
        put: &PutRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        self.check_access(caller, &put.key, &[], Access::Write)?;
        if put.lease != 0 {
            self.check_lease_keys(caller, user, put.lease, lease_keys)?;
        }
        if put.prev_kv {
            self.check_access(caller, &put.key, &[], Access::Read)?;
        }
        Ok(())
    }

    fn check_delete(&self, caller: &Caller, delete: &DeleteRangeRequest) -> Result<(), ApiError> {
        self.check_access(caller, &delete.key, &delete.range_end, Access::Write)?;
        if delete.prev_kv {
            self.check_access(caller, &delete.key, &delete.range_end, Access::Read)?;
        }
        Ok(())
    }

    fn check_txn(
        &self,
        caller: &Caller,
        user: &str,
        txn: &TxnRequest,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        for compare in &txn.compare {
            self.check_access(caller, &compare.key, &compare.range_end, Access::Read)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            self.check_op(caller, user, op, lease_keys)?;
        }
        Ok(())
    }

    fn check_op(
        &self,
        caller: &Caller,
        user: &str,
        op: &RequestOp,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                self.check_access(caller, &range.key, &range.range_end, Access::Read)
            }
            Some(request_op::Request::RequestPut(put)) => {
                self.check_put(caller, user, put, lease_keys)
            }
            Some(request_op::Request::RequestDeleteRange(delete)) => {
                self.check_delete(caller, delete)
            }
            Some(request_op::Request::RequestTxn(txn)) => {
                self.check_txn(caller, user, txn, lease_keys)
            }
            None => Ok(()),
        }
    }

    /// Write permission on every key attached to `lease`, unless `user` is admin.
    fn check_lease_keys(
        &self,
        caller: &Caller,
        user: &str,
        lease: i64,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), ApiError> {
        if self.is_admin(user) {
            return Ok(());
        }
        for key in lease_keys(lease) {
            self.check_access(caller, &key, &[], Access::Write)?;
        }
        Ok(())
    }

    /// Applies one auth change; `Ok(true)` if it changed the state (the revision moved).
    ///
    /// # Errors
    ///
    /// etcd's refusals for the change (`user name already exists`, `role name not found`,
    /// `invalid auth management`, ...).
    pub fn apply(&mut self, request: &Request) -> Result<bool, ApiError> {
        let changed = match request {
            Request::AuthEnable(enable) => self.enable(&enable.member_secret)?,
            Request::AuthDisable(_) => {
                let was = self.enabled;
                self.enabled = false;
                was
            }
            Request::UserAdd(add) => self.user_add(add)?,
            Request::UserDelete(delete) => {
                if self.enabled && delete.name == ROOT {
                    return Err(ApiError::InvalidAuthMgmt);
                }
                self.users
                    .remove(&delete.name)
                    .ok_or(ApiError::UserNotFound)?;
                true
            }
            Request::UserChangePassword(change) => self.user_change_password(change)?,
            Request::UserGrantRole(grant) => self.user_grant_role(grant)?,
            Request::UserRevokeRole(revoke) => self.user_revoke_role(revoke)?,
            Request::RoleAdd(add) => {
                if add.name.is_empty() {
                    return Err(ApiError::RoleEmpty);
                }
                if self.roles.contains_key(&add.name) {
                    return Err(ApiError::RoleExists);
                }
                if self.roles.len() >= ROLES_MAX {
                    return Err(ApiError::Invalid(format!(
                        "auth: more than {ROLES_MAX} roles"
                    )));
                }
                self.roles.insert(
                    add.name.clone(),
                    Role {
                        name: add.name.clone().into_bytes(),
                        key_permission: Vec::new(),
                    },
                );
                true
            }
            Request::RoleGrantPermission(grant) => self.role_grant_permission(grant)?,
            Request::RoleRevokePermission(revoke) => self.role_revoke_permission(revoke)?,
            Request::RoleDelete(delete) => {
                if self.enabled && delete.role == ROOT {
                    return Err(ApiError::InvalidAuthMgmt);
                }
                self.roles
                    .remove(&delete.role)
                    .ok_or(ApiError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.retain(|r| *r != delete.role);
                }
                true
            }
            _ => false,
        };
        if changed {
            self.revision += 1;
        }
        Ok(changed)
    }

    fn enable(&mut self, secret: &[u8]) -> Result<bool, ApiError> {
        if self.enabled {
            return Ok(false);
        }
        let root = self.users.get(ROOT).ok_or(ApiError::RootUserNotExist)?;
        if !root.roles.iter().any(|r| r == ROOT) {
            return Err(ApiError::RootRoleNotExist);
        }
        if self.member_secret.is_empty() {
            self.member_secret = secret.to_vec();
        }
        self.enabled = true;
        Ok(true)
    }

    fn user_add(&mut self, add: &AuthUserAddRequest) -> Result<bool, ApiError> {
        if add.name.is_empty() {
            return Err(ApiError::UserEmpty);
        }
        if self.users.contains_key(&add.name) {
            return Err(ApiError::UserExists);
        }
        if self.users.len() >= USERS_MAX {
            return Err(ApiError::Invalid(format!(
                "auth: more than {USERS_MAX} users"
            )));
        }
        let options = add.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            add.hashed_password.clone().into_bytes()
        };
        self.users.insert(
            add.name.clone(),
            User {
                name: add.name.clone().into_bytes(),
                password,
                roles: Vec::new(),
                options: Some(options),
            },
        );
        Ok(true)
    }

    fn user_change_password(
        &mut self,
        change: &AuthUserChangePasswordRequest,
    ) -> Result<bool, ApiError> {
        let user = self
            .users
            .get_mut(&change.name)
            .ok_or(ApiError::UserNotFound)?;
        if !user.options.is_some_and(|o| o.no_password) {
            user.password = change.hashed_password.clone().into_bytes();
        }
        Ok(true)
    }

    fn user_grant_role(&mut self, grant: &AuthUserGrantRoleRequest) -> Result<bool, ApiError> {
        if !self.users.contains_key(&grant.user) {
            return Err(ApiError::UserNotFound);
        }
        if grant.role != ROOT && !self.roles.contains_key(&grant.role) {
            return Err(ApiError::RoleNotFound);
        }
        let user = self
            .users
            .get_mut(&grant.user)
            .expect("the user exists: checked above");
        match user.roles.binary_search(&grant.role) {
            // etcd ignores a role granted twice.
            Ok(_) => Ok(false),
            Err(at) => {
                user.roles.insert(at, grant.role.clone());
                Ok(true)
            }
        }
    }

    fn user_revoke_role(&mut self, revoke: &AuthUserRevokeRoleRequest) -> Result<bool, ApiError> {
        if self.enabled && revoke.name == ROOT && revoke.role == ROOT {
            return Err(ApiError::InvalidAuthMgmt);
        }
        let user = self
            .users
            .get_mut(&revoke.name)
            .ok_or(ApiError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|r| *r != revoke.role);
        if user.roles.len() == before {
            return Err(ApiError::RoleNotGranted);
        }
        Ok(true)
    }

    fn role_grant_permission(
        &mut self,
        grant: &AuthRoleGrantPermissionRequest,
    ) -> Result<bool, ApiError> {
        let perm = grant.perm.as_ref().ok_or(ApiError::PermissionNotGiven)?;
        if !valid_permission_range(&perm.key, &perm.range_end) {
            return Err(ApiError::InvalidAuthMgmt);
        }
        let role = self
            .roles
            .get_mut(&grant.name)
            .ok_or(ApiError::RoleNotFound)?;
        let at = role
            .key_permission
            .partition_point(|p| p.key.as_slice() < perm.key.as_slice());
        match role.key_permission.get_mut(at) {
            Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                p.perm_type = perm.perm_type;
            }
            _ => {
                if role.key_permission.len() >= PERMISSIONS_PER_ROLE_MAX {
                    return Err(ApiError::Invalid(format!(
                        "auth: more than {PERMISSIONS_PER_ROLE_MAX} permissions in a role"
                    )));
                }
                role.key_permission.insert(
                    at,
                    Permission {
                        perm_type: perm.perm_type,
                        key: perm.key.clone(),
                        range_end: perm.range_end.clone(),
                    },
                );
            }
        }
        Ok(true)
    }

    fn role_revoke_permission(
        &mut self,
        revoke: &AuthRoleRevokePermissionRequest,
    ) -> Result<bool, ApiError> {
        let role = self
            .roles
            .get_mut(&revoke.role)
            .ok_or(ApiError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != revoke.key || p.range_end != revoke.range_end);
        if role.key_permission.len() == before {
            return Err(ApiError::PermissionNotGranted);
        }
        Ok(true)
    }

    /// A role as RoleGet shows it: root's is one permission on every key.
    pub fn role_permissions(&self, role: &str) -> Option<Vec<Permission>> {
        let found = self.roles.get(role)?;
        Some(if role == ROOT {
            vec![Permission {
                perm_type: PermType::Readwrite as i32,
                key: Vec::new(),
                range_end: vec![0],
            }]
        } else {
            found.key_permission.clone()
        })
    }
}

/// etcd's rule for a granted range: a key, and an end that is empty (the key alone), `"\0"`
/// (every key from it) or after it.
fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

/// The leases whose attached keys a check of `request` needs: those its puts attach, the one
/// it revokes.
pub fn leases_of(request: &Request) -> Vec<i64> {
    fn txn_leases(txn: &TxnRequest, out: &mut Vec<i64>) {
        for op in txn.success.iter().chain(&txn.failure) {
            match &op.request {
                Some(request_op::Request::RequestPut(put)) if put.lease != 0 => out.push(put.lease),
                Some(request_op::Request::RequestTxn(t)) => txn_leases(t, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match request {
        Request::Put(put) if put.lease != 0 => out.push(put.lease),
        Request::Txn(txn) => txn_leases(txn, &mut out),
        Request::LeaseRevoke(revoke) => out.push(revoke.id),
        _ => {}
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The user whose tokens a change invalidates (etcd drops a user's tokens when it is deleted
/// or its password changes).
pub fn invalidated_user(request: &Request) -> Option<&str> {
    match request {
        Request::UserDelete(d) => Some(&d.name),
        Request::UserChangePassword(c) => Some(&c.name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::{AuthRoleAddRequest, AuthUserDeleteRequest};
    use proptest::prelude::*;

    fn state_with(perms: &[(PermType, &[u8], &[u8])]) -> AuthState {
        let mut s = AuthState::default();
        s.users.insert(
            "u".into(),
            User {
                name: b"u".to_vec(),
                password: Vec::new(),
                roles: vec!["r".into()],
                options: None,
            },
        );
        s.roles.insert(
            "r".into(),
            Role {
                name: b"r".to_vec(),
                key_permission: perms
                    .iter()
                    .map(|(t, k, e)| Permission {
                        perm_type: *t as i32,
                        key: k.to_vec(),
                        range_end: e.to_vec(),
                    })
                    .collect(),
            },
        );
        s
    }

    #[test]
    fn points_ranges_and_open_ends_are_read_as_etcd_reads_them() {
        let s = state_with(&[
            (PermType::Read, b"a", b""),
            (PermType::Readwrite, b"b", b"d"),
            (PermType::Write, b"x", b"\0"),
        ]);
        assert!(s.permitted("u", b"a", b"", Access::Read));
        assert!(!s.permitted("u", b"a", b"", Access::Write));
        assert!(!s.permitted("u", b"a0", b"", Access::Read));
        assert!(s.permitted("u", b"b", b"d", Access::Write));
        assert!(s.permitted("u", b"c", b"", Access::Read));
        assert!(!s.permitted("u", b"b", b"e", Access::Read));
        // a and [b, d) together do not cover [a, d): a\0 .. b is missing.
        assert!(!s.permitted("u", b"a", b"d", Access::Read));
        assert!(s.permitted("u", b"x", b"\0", Access::Write));
        assert!(s.permitted("u", b"zzz", b"", Access::Write));
        assert!(!s.permitted("u", b"w", b"\0", Access::Write));
        assert!(!s.permitted("nobody", b"a", b"", Access::Read));
    }

    #[test]
    fn root_may_do_anything_and_anonymous_nothing_once_enabled() {
        let mut s = AuthState::default();
        let add = |name: &str| {
            Request::UserAdd(AuthUserAddRequest {
                name: name.into(),
                hashed_password: "h".into(),
                ..Default::default()
            })
        };
        assert_eq!(
            s.apply(&Request::AuthEnable(Default::default())),
            Err(ApiError::RootUserNotExist)
        );
        s.apply(&add(ROOT)).expect("add root");
        assert_eq!(
            s.apply(&Request::AuthEnable(Default::default())),
            Err(ApiError::RootRoleNotExist)
        );
        s.apply(&Request::UserGrantRole(AuthUserGrantRoleRequest {
            user: ROOT.into(),
            role: ROOT.into(),
        }))
        .expect("applies");
        let before = s.revision;
        assert_eq!(
            s.apply(&Request::AuthEnable(
                crate::proto::strataserverpb::AuthEnable {
                    member_secret: vec![7; 4],
                }
            )),
            Ok(true)
        );
        assert!(s.revision > before);
        assert_eq!(s.member_secret, vec![7; 4]);
        let root = Caller::User {
            name: ROOT.into(),
            token: Some("t".into()),
        };
        assert_eq!(s.check_access(&root, b"any", b"\0", Access::Write), Ok(()));
        assert_eq!(
            s.check_access(&Caller::Anonymous, b"k", b"", Access::Read),
            Err(ApiError::UserEmpty)
        );
        assert_eq!(
            s.apply(&Request::UserDelete(AuthUserDeleteRequest {
                name: ROOT.into()
            })),
            Err(ApiError::InvalidAuthMgmt)
        );
        s.apply(&add("bob")).expect("add bob");
        let bob = Caller::User {
            name: "bob".into(),
            token: Some("t2".into()),
        };
        assert_eq!(s.check_admin(&bob), Err(ApiError::PermissionDenied));
        assert_eq!(
            s.check_access(&bob, b"k", b"", Access::Read),
            Err(ApiError::PermissionDenied)
        );
        assert_eq!(
            s.check(&bob, &Request::Publish(Default::default()), &|_| Vec::new()),
            Err(ApiError::PermissionDenied)
        );
    }

    #[test]
    fn a_role_deleted_leaves_every_user() {
        let mut s = state_with(&[(PermType::Read, b"a", b"")]);
        s.apply(&Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }))
            .expect_err("r exists");
        s.apply(&Request::RoleDelete(
            crate::proto::etcdserverpb::AuthRoleDeleteRequest { role: "r".into() },
        ))
        .expect("applies");
        assert!(s.users["u"].roles.is_empty());
        assert!(!s.permitted("u", b"a", b"", Access::Read));
    }

    #[test]
    fn a_permission_granted_twice_is_updated_not_duplicated() {
        let mut s = state_with(&[]);
        for t in [PermType::Read, PermType::Write] {
            s.apply(&Request::RoleGrantPermission(
                AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(Permission {
                        perm_type: t as i32,
                        key: b"k".to_vec(),
                        range_end: Vec::new(),
                    }),
                },
            ))
            .expect("applies");
        }
        assert_eq!(s.roles["r"].key_permission.len(), 1);
        assert!(s.permitted("u", b"k", b"", Access::Write));
        assert!(!s.permitted("u", b"k", b"", Access::Read));
        assert_eq!(
            s.apply(&Request::RoleGrantPermission(
                AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(Permission {
                        perm_type: 0,
                        key: b"z".to_vec(),
                        range_end: b"a".to_vec(),
                    }),
                }
            )),
            Err(ApiError::InvalidAuthMgmt)
        );
    }

    /// Keys over a small alphabet, short, so that ranges and points collide often.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..3, 0..3)
    }

    proptest! {
        /// A range is permitted exactly when every key in it is: checked against every key of
        /// the small universe (keys of up to 3 bytes over {0, 1, 2}, which is where the
        /// granted intervals' ends lie).
        #[test]
        fn a_range_is_permitted_iff_each_of_its_keys_is(
            grants in proptest::collection::vec((key(), prop_oneof![Just(Vec::new()), Just(vec![0u8]), key()]), 0..4),
            start in key(),
            end in prop_oneof![Just(Vec::new()), Just(vec![0u8]), key()],
        ) {
            let perms: Vec<(PermType, &[u8], &[u8])> = grants
                .iter()
                .filter(|(k, e)| valid_permission_range(k, e))
                .map(|(k, e)| (PermType::Read, k.as_slice(), e.as_slice()))
                .collect();
            let s = state_with(&perms);
            let mut universe = vec![Vec::new()];
            for len in 1..=4 {
                let mut next = Vec::new();
                for k in universe.iter().filter(|k| k.len() == len - 1) {
                    for b in 0u8..3 {
                        let mut k = k.clone();
                        k.push(b);
                        next.push(k);
                    }
                }
                universe.extend(next);
            }
            let (lo, hi) = interval(&start, &end);
            let inside = |k: &Vec<u8>| *k >= lo && hi.as_ref().is_none_or(|h| k < h);
            let each = universe
                .iter()
                .filter(|k| inside(k))
                .all(|k| s.permitted("u", k, b"", Access::Read));
            // The universe stops at 4 bytes: a range whose permitted part ends in a key longer
            // than that could differ, but grants and requests use keys of at most 3 bytes, so
            // every interval boundary is in the universe or its successor.
            prop_assert_eq!(s.permitted("u", &start, &end, Access::Read), each);
        }
    }
}
