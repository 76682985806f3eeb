//! The client port's HTTP side: `/health` (etcd's JSON), `/version`, `/metrics` (the JSON
//! gateway under `/v3/` is `gateway.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::machine::NOSPACE;
use crate::server::{ETCD_CLUSTER_VERSION, ETCD_VERSION, Inner};

/// etcd's `--cors`: every HTTP answer of the client port (not gRPC's) says which origins may
/// read it, and `OPTIONS` (a browser's preflight) answers 200 at once. With any origin
/// allowed, `*`; otherwise the request's `Origin` when it is one of `origins`.
pub fn with_cors(router: Router, origins: Option<Vec<String>>) -> Router {
    let origins = Arc::new(origins);
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let origins = Arc::clone(&origins);
            async move {
                let allowed = match origins.as_ref() {
                    None => Some(header::HeaderValue::from_static("*")),
                    Some(list) => request
                        .headers()
                        .get(header::ORIGIN)
                        .filter(|o| list.iter().any(|l| l.as_bytes() == o.as_bytes()))
                        .cloned(),
                };
                let mut response = if request.method() == axum::http::Method::OPTIONS {
                    StatusCode::OK.into_response()
                } else {
                    next.run(request).await
                };
                if let Some(origin) = allowed {
                    let headers = response.headers_mut();
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        header::HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
                    );
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        header::HeaderValue::from_static("accept, content-type, authorization"),
                    );
                }
                response
            }
        },
    ))
}

/// etcd's `--host-whitelist`, on a client port without TLS: an HTTP request whose host (the
/// `Host` header, or HTTP/2's authority; its port aside) is not one of `hosts` is answered
/// 421 Misdirected Request with etcd's explanation, before anything else. A web page that
/// got its name to resolve to a member's address (DNS rebinding) then reads nothing. gRPC is
/// not checked (etcd's), nor are ports with TLS, which a rebound name cannot pass.
pub fn with_host_whitelist(router: Router, hosts: Option<Vec<String>>) -> Router {
    let Some(hosts) = hosts else {
        return router;
    };
    let hosts = Arc::new(hosts);
    router.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let hosts = Arc::clone(&hosts);
            async move {
                let host = request
                    .uri()
                    .host()
                    .map(str::to_owned)
                    .or_else(|| {
                        let value = request.headers().get(header::HOST)?.to_str().ok()?;
                        let uri: axum::http::Uri = format!("http://{value}/").parse().ok()?;
                        uri.host().map(str::to_owned)
                    })
                    .unwrap_or_default()
                    .to_lowercase();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if hosts.iter().any(|h| h == host) {
                    return next.run(request).await;
                }
                tracing::warn!(
                    host,
                    "rejecting an HTTP request to prevent DNS rebinding attacks"
                );
                let text = format!(
                    "\netcd received your request, but the Host header was unrecognized.\n\n\
                     To fix this, choose one of the following options:\n\
                     - Enable TLS, then any HTTPS request will be allowed.\n\
                     - Add the hostname you want to use to the whitelist in settings.\n  \
                     - e.g. etcd --host-whitelist {host:?}\n\n\
                     This requirement has been added to help prevent \"DNS Rebinding\" attacks \
                     (CVE-2018-5702).\n"
                );
                (StatusCode::MISDIRECTED_REQUEST, text).into_response()
            }
        },
    ))
}

/// The routes, to merge with the gRPC ones.
pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(inner)
}

fn json(status: StatusCode, body: String) -> axum::response::Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's health check: no alarm (unless excluded), a leader (unless `serializable=true`), and
/// a one-key read that succeeds.
async fn health(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let unhealthy = |reason: String| {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":{}}}", quote(&reason)),
        )
    };
    let excluded: Vec<&str> = query
        .get("exclude")
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let alarms: Vec<i32> = inner
        .shared
        .0
        .read()
        .alarms
        .iter()
        .map(|&(_, a)| a)
        .collect();
    for alarm in alarms {
        let name = if alarm == NOSPACE {
            "NOSPACE"
        } else {
            "CORRUPT"
        };
        if !excluded.contains(&name) {
            return unhealthy(format!("ALARM {name}"));
        }
    }
    let serializable = query.get("serializable").is_some_and(|v| v == "true");
    if !serializable && inner.leader_now() == 0 {
        return unhealthy("RAFT NO LEADER".to_owned());
    }
    if let Err(e) = inner.read_barrier(serializable).await {
        return unhealthy(format!("RANGE ERROR:{e}"));
    }
    json(
        StatusCode::OK,
        "{\"health\":\"true\",\"reason\":\"\"}".to_owned(),
    )
}

/// A JSON string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

async fn version() -> axum::response::Response {
    json(
        StatusCode::OK,
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{ETCD_CLUSTER_VERSION}\"}}"),
    )
}

async fn metrics(State(inner): State<Arc<Inner>>) -> axum::response::Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(&inner),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quote_escapes_what_json_needs() {
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
