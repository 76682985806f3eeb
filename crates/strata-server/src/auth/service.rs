//! etcd's Auth service, and the two steps of its requests that run while applying: a change
//! to users and roles ([`apply_change`]) and a token assigned ([`assign_token`]).
//!
//! Passwords are hashed (bcrypt, `--bcrypt-cost`) and checked by the member the client
//! called, off the async threads: the log holds hashes only, never a password.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Caller, token};
use crate::machine::refused;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};
use crate::proto::strataserverpb::{
    AuthEnable, Authenticate, raft_answer::Answer, raft_request::Request as Raft,
};
use crate::rpctypes::ApiError;
use crate::server::Inner;
use crate::state::{Pending, Shared};

/// Times Authenticate checks a password again when the users changed between the check and
/// the token's assignment (etcd loops until they did not).
const AUTHENTICATE_ATTEMPTS_MAX: usize = 3;

/// Applies an auth change (users, roles, enable, disable) to the batch's auth state; drops the
/// tokens it invalidates.
pub fn apply_change(
    shared: &Shared,
    pending: &mut Pending,
    tokens: &token::Tokens,
    change: &Raft,
) -> Answer {
    match pending.auth_mut(shared).apply(change) {
        Ok(_) => {
            if let Some(user) = super::invalidated_user(change) {
                tokens.invalidate_user(user);
            }
            if matches!(change, Raft::AuthDisable(_)) {
                tokens.clear();
            }
            Answer::Done(true)
        }
        Err(e) => refused(e),
    }
}

/// Assigns the token `<prefix>.<index>` if the user can still log in.
pub fn assign_token(
    shared: &Shared,
    pending: &Pending,
    tokens: &token::Tokens,
    request: &Authenticate,
    index: u64,
) -> Answer {
    let allowed = pending.auth_with(shared, |auth| {
        if !auth.enabled {
            return Err(ApiError::AuthNotEnabled);
        }
        match auth.users.get(&request.name) {
            Some(user) if !user.options.is_some_and(|o| o.no_password) => Ok(()),
            _ => Err(ApiError::AuthFailed),
        }
    });
    match allowed {
        Ok(()) => {
            let token = format!("{}.{index}", request.token_prefix);
            tokens.assign(token.clone(), &request.name);
            Answer::Token(token)
        }
        Err(e) => refused(e),
    }
}

/// The bcrypt hash (its text) to store for a new password: the one given (etcd's
/// `hashedPassword`, base64 of the hash's text), else `password` hashed here.
async fn hash(inner: &Inner, password: String, hashed: String) -> Result<String, ApiError> {
    if !hashed.is_empty() {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD
            .decode(hashed.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| t.parse::<bcrypt::HashParts>().is_ok())
            .ok_or_else(|| ApiError::Invalid("hashedPassword is not a bcrypt hash".into()))?;
        return Ok(text);
    }
    let cost = inner.config.bcrypt_cost;
    tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("bcrypt: {e}")))
}

/// The Auth service.
pub struct AuthService(pub Arc<Inner>);

impl AuthService {
    /// Proposes an auth change for `caller` (an admin, once auth is on).
    async fn change(&self, caller: &Caller, change: Raft) -> Result<(), Status> {
        match self.0.propose(caller, change).await? {
            Answer::Done(_) => Ok(()),
            other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
        }
    }

    /// The caller of `request`, checked to be an admin (early, before a password is hashed).
    async fn admin<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.0.caller(request).await?;
        self.0.fresh_auth().await?.check_admin(&caller)?;
        Ok(caller)
    }

    /// A linearizable read of the auth state for `caller`.
    async fn read<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let caller = self.0.caller(request).await?;
        self.0.read_barrier(false).await?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let caller = self.admin(&request).await?;
        let mut member_secret = vec![0; super::MEMBER_SECRET_BYTES];
        rand::fill(&mut member_secret[..]);
        self.change(&caller, Raft::AuthEnable(AuthEnable { member_secret }))
            .await?;
        Ok(Response::new(AuthEnableResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let caller = self.admin(&request).await?;
        self.change(&caller, Raft::AuthDisable(request.into_inner()))
            .await?;
        Ok(Response::new(AuthDisableResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.read(&request).await?;
        let auth = self.0.auth();
        Ok(Response::new(AuthStatusResponse {
            header: Some(self.0.header(0)),
            enabled: auth.enabled,
            auth_revision: auth.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let inner = &self.0;
        inner.read_barrier(false).await?;
        let request = request.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS_MAX {
            let auth = inner.auth();
            if !auth.enabled {
                return Err(ApiError::AuthNotEnabled.into());
            }
            let hash = match auth.users.get(&request.name) {
                Some(user) if !user.options.is_some_and(|o| o.no_password) => {
                    String::from_utf8_lossy(&user.password).into_owned()
                }
                _ => return Err(ApiError::AuthFailed.into()),
            };
            let password = request.password.clone();
            let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .unwrap_or(false);
            if !matches {
                return Err(ApiError::AuthFailed.into());
            }
            if let Some(jwt) = inner.config.auth_token.jwt() {
                // Signed here, at the auth revision the password was checked at: nothing to
                // replicate, since any later auth change makes the token old.
                if inner.auth().revision != auth.revision {
                    continue;
                }
                let jwt = Arc::clone(jwt);
                let (name, revision) = (request.name.clone(), auth.revision);
                let token = tokio::task::spawn_blocking(move || jwt.sign(&name, revision))
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))??;
                return Ok(Response::new(AuthenticateResponse {
                    header: Some(inner.header(0)),
                    token,
                }));
            }
            let assign = Raft::Authenticate(Authenticate {
                name: request.name.clone(),
                token_prefix: token::prefix(),
            });
            let token = match inner.propose(&Caller::Member, assign).await? {
                Answer::Token(token) => token,
                other => {
                    return Err(
                        ApiError::Internal(format!("an unexpected answer: {other:?}")).into(),
                    );
                }
            };
            // The password was checked against the users as of `auth`: if they changed since,
            // check again (the password may have changed).
            if inner.auth().revision == auth.revision {
                return Ok(Response::new(AuthenticateResponse {
                    header: Some(inner.header(0)),
                    token,
                }));
            }
        }
        Err(ApiError::AuthOldRevision.into())
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = self.admin(&request).await?;
        let mut add = request.into_inner();
        if add.name.is_empty() {
            return Err(ApiError::UserEmpty.into());
        }
        if self.0.auth().users.contains_key(&add.name) {
            return Err(ApiError::UserExists.into());
        }
        if !add.options.is_some_and(|o| o.no_password) {
            let password = std::mem::take(&mut add.password);
            let hashed = std::mem::take(&mut add.hashed_password);
            add.hashed_password = hash(&self.0, password, hashed).await?;
        } else {
            add.password.clear();
            add.hashed_password.clear();
        }
        self.change(&caller, Raft::UserAdd(add)).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = self.read(&request).await?;
        let name = request.into_inner().name;
        let auth = self.0.auth();
        // Users may see their own roles (etcd's).
        let own = matches!(&caller, Caller::User { name: n, .. } if *n == name);
        if !own {
            auth.check_admin(&caller)?;
        }
        let user = auth.users.get(&name).ok_or(ApiError::UserNotFound)?;
        Ok(Response::new(AuthUserGetResponse {
            header: Some(self.0.header(0)),
            roles: user.roles.clone(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let caller = self.read(&request).await?;
        let auth = self.0.auth();
        auth.check_admin(&caller)?;
        Ok(Response::new(AuthUserListResponse {
            header: Some(self.0.header(0)),
            users: auth.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::UserDelete(request.into_inner()))
            .await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = self.admin(&request).await?;
        let mut change = request.into_inner();
        let no_password = match self.0.auth().users.get(&change.name) {
            None => return Err(ApiError::UserNotFound.into()),
            Some(user) => user.options.is_some_and(|o| o.no_password),
        };
        let password = std::mem::take(&mut change.password);
        let hashed = std::mem::take(&mut change.hashed_password);
        if !no_password {
            change.hashed_password = hash(&self.0, password, hashed).await?;
        }
        self.change(&caller, Raft::UserChangePassword(change))
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::UserGrantRole(request.into_inner()))
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::UserRevokeRole(request.into_inner()))
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::RoleAdd(request.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = self.read(&request).await?;
        let role = request.into_inner().role;
        let auth = self.0.auth();
        // Users may see the roles they have (etcd's).
        let own = matches!(&caller, Caller::User { name, .. }
            if auth.users.get(name).is_some_and(|u| u.roles.contains(&role)));
        if !own {
            auth.check_admin(&caller)?;
        }
        let perm = auth.role_permissions(&role).ok_or(ApiError::RoleNotFound)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: Some(self.0.header(0)),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let caller = self.read(&request).await?;
        let auth = self.0.auth();
        auth.check_admin(&caller)?;
        Ok(Response::new(AuthRoleListResponse {
            header: Some(self.0.header(0)),
            roles: auth.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::RoleDelete(request.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::RoleGrantPermission(request.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: Some(self.0.header(0)),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.0.caller(&request).await?;
        self.change(&caller, Raft::RoleRevokePermission(request.into_inner()))
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: Some(self.0.header(0)),
        }))
    }
}
