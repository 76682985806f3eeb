//! The client port's HTTP side: `/health` (etcd's JSON), `/version`, `/metrics`; and a plain
//! refusal under `/v3/`, where etcd serves its API as JSON through grpc-gateway and Strata
//! does not (without it, such a request would meet the gRPC router and get an empty 200).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};

use crate::machine::NOSPACE;
use crate::server::{ETCD_CLUSTER_VERSION, ETCD_VERSION, Inner};

/// The routes, to merge with the gRPC ones.
pub fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .route("/v3/{*path}", any(gateway))
        .with_state(inner)
}

/// etcd's JSON gateway (`POST /v3/kv/range`, ...) is not served: 501, with an error body in the
/// gateway's own shape (gRPC code 12, Unimplemented), so a `curl` user is told why.
async fn gateway() -> axum::response::Response {
    let message = "the JSON gateway (/v3/...) is not served: use gRPC (etcdctl, an etcd client)";
    json(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "{{\"error\":{m},\"message\":{m},\"code\":12}}",
            m = quote(message)
        ),
    )
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
