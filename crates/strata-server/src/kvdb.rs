//! The seed's Kvdb service (package `clientpb`): `register` checks the token and opens a
//! session; `put` and `delete` carry `(clientId, seq)` and are applied exactly once (the
//! session table is replicated state: a retry after a leader change, a snapshot or a restart
//! gets the first answer); `get` is a linearizable read. Its keys are the etcd API's keys.
//!
//! One auth story with the etcd API: while etcd's auth is off, `register` takes the token of
//! `--kvdb-token-file`; once it is on, `register` takes a token etcd's `Authenticate` gave,
//! the session belongs to that user, its writes are checked against the user's permissions
//! when applied, and `get` needs the token in the `token` metadata, as etcd's calls do.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::auth::{Access, Caller};
use crate::proto::clientpb::kvdb_server::Kvdb;
use crate::proto::clientpb::{self, Auth, KvPair, Operate, ReadonlyQuery};
use crate::proto::strataserverpb::{
    KvdbRegister, raft_answer::Answer, raft_request::Request as Raft,
};
use crate::rpctypes::ApiError;
use crate::server::{Inner, ServerError};

/// The Kvdb service.
pub struct KvdbService {
    inner: Arc<Inner>,
    /// The token `register` accepts (`--kvdb-token-file`); without one, it accepts none.
    token: Option<Vec<u8>>,
}

impl KvdbService {
    /// The service, with the token read from `--kvdb-token-file` (surrounding whitespace
    /// trimmed).
    ///
    /// # Errors
    ///
    /// [`ServerError::DataDir`] if the token file cannot be read or is empty.
    pub fn new(inner: Arc<Inner>) -> Result<Self, ServerError> {
        let token = match &inner.config.kvdb_token_file {
            None => None,
            Some(path) => Some(
                crate::config::read_kvdb_token(path)
                    .map_err(|e| ServerError::DataDir {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .into_bytes(),
            ),
        };
        Ok(Self { inner, token })
    }
}

/// Compares in time independent of where the two differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KvdbService {
    async fn write(
        &self,
        request: clientpb::Request,
        operate: Operate,
    ) -> Result<Response<clientpb::Response>, Status> {
        self.inner.metrics.requests.kvdb.inc();
        if request.client_id == 0 {
            return Err(ApiError::UnknownSession(0).into());
        }
        if request.seq == 0 {
            return Err(ApiError::Invalid("kvdb: seq starts at 1".to_owned()).into());
        }
        let command = request.cmd.clone().unwrap_or_default();
        if command.operate_type != operate as i32 {
            return Err(ApiError::Invalid(format!(
                "kvdb: the command's operateType is not {}",
                operate.as_str_name()
            ))
            .into());
        }
        let keys: Vec<&[u8]> = match operate {
            Operate::Put => command
                .put
                .iter()
                .flat_map(|p| &p.data)
                .map(|kv| kv.key.as_slice())
                .collect(),
            Operate::Delete => command
                .del
                .iter()
                .flat_map(|d| &d.keys)
                .map(Vec::as_slice)
                .collect(),
        };
        if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
            return Err(ApiError::EmptyKey.into());
        }
        // Checked when applied, against the user whose token opened the session.
        match self
            .inner
            .propose(&Caller::Anonymous, Raft::Kvdb(request))
            .await?
        {
            Answer::Kvdb(response) => Ok(Response::new(response)),
            other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
        }
    }
}

#[tonic::async_trait]
impl Kvdb for KvdbService {
    async fn register(
        &self,
        request: Request<Auth>,
    ) -> Result<Response<clientpb::Response>, Status> {
        self.inner.metrics.requests.kvdb.inc();
        let given = request.into_inner().token;
        if self.inner.auth().enabled {
            // With etcd's auth on, the token is one Authenticate gave: the session is that
            // user's, and its writes need the user's permissions.
            let caller = self.inner.token_user(given).await?;
            let Caller::User { name, .. } = &caller else {
                return Err(ApiError::InvalidAuthToken.into());
            };
            let register = KvdbRegister {
                now_ms: crate::server::now_ms(),
                user: name.clone(),
            };
            return match self
                .inner
                .propose(&caller, Raft::KvdbRegister(register))
                .await?
            {
                Answer::Kvdb(response) => Ok(Response::new(response)),
                other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
            };
        }
        match &self.token {
            Some(token) if same(token, given.as_bytes()) => {}
            Some(_) => return Err(Status::unauthenticated(ApiError::BadToken.to_string())),
            None => {
                return Err(Status::unauthenticated(
                    "kvdb: register needs a token: start the server with --kvdb-token-file",
                ));
            }
        }
        match self
            .inner
            .propose(
                &Caller::Anonymous,
                Raft::KvdbRegister(KvdbRegister {
                    now_ms: crate::server::now_ms(),
                    user: String::new(),
                }),
            )
            .await?
        {
            Answer::Kvdb(response) => Ok(Response::new(response)),
            other => Err(ApiError::Internal(format!("an unexpected answer: {other:?}")).into()),
        }
    }

    async fn get(
        &self,
        request: Request<ReadonlyQuery>,
    ) -> Result<Response<clientpb::Response>, Status> {
        self.inner.metrics.requests.kvdb.inc();
        let caller = self.inner.caller(&request).await?;
        let key = request.into_inner().key;
        if key.is_empty() {
            return Err(ApiError::EmptyKey.into());
        }
        self.inner
            .auth()
            .check_access(&caller, &key, &[], Access::Read)?;
        self.inner.read_barrier(false).await?;
        let store = Arc::clone(&self.inner.store);
        let range = strata_mvcc::api::RangeRequest {
            key,
            ..Default::default()
        };
        let found = tokio::task::spawn_blocking(move || store.range_request(&range))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)?;
        Ok(Response::new(clientpb::Response {
            success: true,
            data: found
                .kvs
                .into_iter()
                .map(|kv| KvPair {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            client_id: 0,
            msg: String::new(),
        }))
    }

    async fn put(
        &self,
        request: Request<clientpb::Request>,
    ) -> Result<Response<clientpb::Response>, Status> {
        self.write(request.into_inner(), Operate::Put).await
    }

    async fn delete(
        &self,
        request: Request<clientpb::Request>,
    ) -> Result<Response<clientpb::Response>, Status> {
        self.write(request.into_inner(), Operate::Delete).await
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
