//! The client port: gRPC (etcd's KV, Watch, Lease, Auth, Cluster, Maintenance, Lock and
//! Election, the seed's Kvdb, Strata's
//! Internal forwarding, grpc.health.v1) and HTTP (`/health`, `/version`, `/metrics`, and
//! etcd's JSON gateway under `/v3/`) on one listener per `--listen-client-urls` address.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::coalesce::Coalesced;
use crate::proto::clientpb::kvdb_server::KvdbServer;
use crate::proto::etcdserverpb::auth_server::AuthServer;
use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;
use crate::proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::proto::strataserverpb::internal_server::{Internal, InternalServer};
use crate::proto::strataserverpb::{ForwardedBatch, RaftAnswer, RaftRequest};
use crate::proto::v3electionpb::election_server::ElectionServer;
use crate::proto::v3lockpb::lock_server::LockServer;
use crate::rpctypes::ApiError;
use crate::server::{Inner, ServerError};

/// Bytes a gRPC message may have beyond `--max-request-bytes` (etcd's allowance, 512 KiB): a
/// request over the limit but under this gets etcd's "request is too large" rather than a
/// transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The leader's side of forwarding: proposes what a follower sends.
pub struct InternalService(pub Arc<Inner>);

#[tonic::async_trait]
impl Internal for InternalService {
    async fn propose(&self, request: Request<RaftRequest>) -> Result<Response<RaftAnswer>, Status> {
        let inner = &self.0;
        // Checked again here, as the caller the forwarding member presents (a client's token,
        // or the members' secret): what the follower checked is not trusted.
        let caller = inner.caller(&request).await?;
        let answer =
            crate::forward::propose_forwarded(inner, &caller, request.into_inner()).await?;
        Ok(Response::new(RaftAnswer {
            answer: Some(answer),
        }))
    }

    type ProposeManyStream = crate::forward::AnswerStream;

    async fn propose_many(
        &self,
        request: Request<tonic::Streaming<ForwardedBatch>>,
    ) -> Result<Response<Self::ProposeManyStream>, Status> {
        Ok(Response::new(crate::forward::serve_stream(
            Arc::clone(&self.0),
            request.into_inner(),
        )))
    }

    async fn keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let inner = &self.0;
        if inner.leader_now() != inner.id {
            return Err(ApiError::LeaderChanged.into());
        }
        let caller = inner.caller(&request).await?;
        Ok(Response::new(
            crate::lease::keep_alive(inner, &caller, request.into_inner().id).await?,
        ))
    }

    async fn time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let inner = &self.0;
        if inner.leader_now() != inner.id {
            return Err(ApiError::LeaderChanged.into());
        }
        let caller = inner.caller(&request).await?;
        Ok(Response::new(
            crate::lease::time_to_live(inner, &caller, request.into_inner()).await?,
        ))
    }
}

/// Binds every client address and serves them until `stop`; returns the bound addresses and
/// the serving tasks.
///
/// # Errors
///
/// [`ServerError::Listen`] if an address cannot be bound, [`ServerError::Tls`] for unusable
/// TLS files.
pub async fn serve(
    inner: Arc<Inner>,
    stop: watch::Receiver<bool>,
) -> Result<(Vec<SocketAddr>, Vec<JoinHandle<()>>), ServerError> {
    let recv_max = inner.config.max_request_bytes as usize + GRPC_OVERHEAD_BYTES;
    // grpc.health.v1: SERVING (service "") from the moment the port is up, as etcd's.
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let mut builder = RoutesBuilder::default();
    builder
        .add_service(health_service)
        .add_service(
            KvServer::new(crate::kv::KvService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            ClusterServer::new(crate::cluster::ClusterService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            MaintenanceServer::new(crate::maintenance::MaintenanceService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            WatchServer::new(crate::watch::WatchService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            ElectionServer::new(crate::election::ElectionService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            LockServer::new(crate::lock::LockService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            LeaseServer::new(crate::lease::LeaseService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            AuthServer::new(crate::auth::service::AuthService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            KvdbServer::new(crate::kvdb::KvdbService::new(Arc::clone(&inner))?)
                .max_decoding_message_size(recv_max),
        )
        .add_service(
            InternalServer::new(InternalService(Arc::clone(&inner)))
                .max_decoding_message_size(recv_max + GRPC_OVERHEAD_BYTES),
        );
    let grpc = builder.routes().into_axum_router();
    // etcd's JSON gateway calls the gRPC routes themselves; JSON (base64 bytes) is larger
    // than the message it carries, hence twice the gRPC limit.
    let gateway = crate::gateway::router(grpc.clone(), 2 * recv_max);
    let http = crate::http::router(Arc::clone(&inner)).merge(gateway);
    let tls = crate::tls::server_tls(&inner.config)?;
    let http = crate::http::with_cors(http, inner.config.cors.clone());
    // The host whitelist is checked first, on plain HTTP only: only there can a rebound name
    // reach (over TLS the name must be in the certificate), as etcd checks it.
    let whitelisted =
        crate::http::with_host_whitelist(http.clone(), inner.config.host_whitelist.clone());
    let plain = tonic::service::Routes::from(grpc.clone().merge(whitelisted));
    let secure = tonic::service::Routes::from(grpc.merge(http));
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    // TLS on `https` URLs; an `http` one beside them is served plain, as etcd serves it.
    let scheme_tls = |scheme| match scheme {
        crate::config::Scheme::Https => tls.clone(),
        crate::config::Scheme::Http => None,
    };
    for url in &inner.config.listen_client_urls {
        let routes = match url.scheme {
            crate::config::Scheme::Https => secure.clone(),
            crate::config::Scheme::Http => plain.clone(),
        };
        let (addr, task) = listen_on(
            url.addr,
            inner.config.grpc,
            routes,
            scheme_tls(url.scheme),
            stop.clone(),
            "client",
        )?;
        addrs.push(addr);
        tasks.push(task);
    }
    // `--listen-metrics-urls`: the HTTP routes alone, TLS for `https` ones (etcd's).
    let metrics = tonic::service::Routes::from(crate::http::router(Arc::clone(&inner)));
    for url in &inner.config.listen_metrics_urls {
        let (addr, task) = listen_on(
            url.addr,
            inner.config.grpc,
            metrics.clone(),
            scheme_tls(url.scheme),
            stop.clone(),
            "metrics",
        )?;
        tracing::info!(%addr, "serving /metrics and /health");
        tasks.push(task);
    }
    Ok((addrs, tasks))
}

/// Binds `listen` and serves `routes` on it (HTTP/1.1 and HTTP/2, TLS if given) until `stop`;
/// `port` names it in errors and the log.
fn listen_on(
    listen: SocketAddr,
    grpc: crate::config::GrpcSettings,
    routes: tonic::service::Routes,
    tls: Option<Arc<crate::tls::ServerTls>>,
    mut stop: watch::Receiver<bool>,
    port: &'static str,
) -> Result<(SocketAddr, JoinHandle<()>), ServerError> {
    let incoming = TcpIncoming::bind(listen)
        .map_err(|e| ServerError::Listen {
            addr: listen.to_string(),
            reason: e.to_string(),
        })?
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().map_err(|e| ServerError::Listen {
        addr: listen.to_string(),
        reason: e.to_string(),
    })?;
    let mut server = tonic::transport::Server::builder()
        .accept_http1(true)
        // `--max-concurrent-streams` and `--grpc-keepalive-*`, etcd's.
        .max_concurrent_streams(Some(grpc.max_concurrent_streams))
        .http2_keepalive_interval(grpc.keepalive_interval)
        .http2_keepalive_timeout(Some(grpc.keepalive_timeout))
        .tcp_nodelay(true);
    let router = server.add_routes(routes);
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        // Each connection's answers leave in as few writes as they can (`coalesce`).
        let incoming = incoming.map(|tcp| tcp.map(Coalesced::new));
        let served = match tls {
            Some(tls) => {
                let incoming = crate::tls::accept(incoming, tls);
                router.serve_with_incoming_shutdown(incoming, signal).await
            }
            None => router.serve_with_incoming_shutdown(incoming, signal).await,
        };
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "the {port} port stopped");
        }
    });
    Ok((addr, task))
}
