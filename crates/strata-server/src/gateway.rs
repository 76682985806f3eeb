//! etcd's JSON gateway: the v3 API as JSON over HTTP (`POST /v3/kv/range`, `/v3/watch`, ...),
//! as etcd serves it on its client port through grpc-gateway, for `curl` and the clients
//! that speak it.
//!
//! A request is translated to the gRPC call and the call made in-process, through the same
//! routes a gRPC client reaches, so every check (auth, limits, leader, quotas) is the gRPC
//! path's own. JSON is read and written with the proto3 JSON mapping as etcd's gateway
//! configures it: the proto's own field names (`create_revision`, `ID`, `dbSize`), 64-bit
//! integers as strings, bytes as base64, enums by name, fields at their default left out;
//! unknown fields in a request are ignored. The paths are those of etcd's `google.api.http`
//! annotations; `/v3beta/` is taken as `/v3/`, as etcd 3.4 does.
//!
//! - A unary call answers one JSON object, or `{"error":..,"message":..,"code":..}` with the
//!   HTTP status grpc-gateway gives the gRPC code.
//! - A streaming call (Watch, LeaseKeepAlive, Snapshot, Observe) answers one line per message,
//!   `{"result":{...}}`; an error ends it with `{"error":{"grpc_code":..,"http_code":..,
//!   "message":..,"http_status":..}}`. Its request body is a sequence of JSON objects, sent
//!   as they arrive; the end of the body half-closes the call, as grpc-gateway does (a watch
//!   goes on streaming, as etcd's does).
//! - The `Authorization` header is the token (`Bearer ` optional); `Grpc-Metadata-<name>`
//!   headers become metadata `<name>`, as grpc-gateway's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use tokio::sync::mpsc;
use tonic::Code;
use tower::ServiceExt;

/// The descriptors of every message and service the server compiles (`build.rs`).
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));

/// The gateway's paths (after `/v3/`) and the gRPC methods they call: etcd's
/// `google.api.http` annotations (etcd 3.4's rpc.proto, v3lock.proto, v3election.proto).
const METHODS: &[(&str, &str, &str)] = &[
    ("kv/range", "etcdserverpb.KV", "Range"),
    ("kv/put", "etcdserverpb.KV", "Put"),
    ("kv/deleterange", "etcdserverpb.KV", "DeleteRange"),
    ("kv/txn", "etcdserverpb.KV", "Txn"),
    ("kv/compaction", "etcdserverpb.KV", "Compact"),
    ("watch", "etcdserverpb.Watch", "Watch"),
    ("lease/grant", "etcdserverpb.Lease", "LeaseGrant"),
    ("lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("kv/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("lease/keepalive", "etcdserverpb.Lease", "LeaseKeepAlive"),
    ("lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
    (
        "kv/lease/timetolive",
        "etcdserverpb.Lease",
        "LeaseTimeToLive",
    ),
    ("lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("kv/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("cluster/member/add", "etcdserverpb.Cluster", "MemberAdd"),
    (
        "cluster/member/remove",
        "etcdserverpb.Cluster",
        "MemberRemove",
    ),
    (
        "cluster/member/update",
        "etcdserverpb.Cluster",
        "MemberUpdate",
    ),
    ("cluster/member/list", "etcdserverpb.Cluster", "MemberList"),
    (
        "cluster/member/promote",
        "etcdserverpb.Cluster",
        "MemberPromote",
    ),
    ("maintenance/alarm", "etcdserverpb.Maintenance", "Alarm"),
    ("maintenance/status", "etcdserverpb.Maintenance", "Status"),
    (
        "maintenance/defragment",
        "etcdserverpb.Maintenance",
        "Defragment",
    ),
    ("maintenance/hash", "etcdserverpb.Maintenance", "Hash"),
    ("maintenance/hashkv", "etcdserverpb.Maintenance", "HashKV"),
    (
        "maintenance/snapshot",
        "etcdserverpb.Maintenance",
        "Snapshot",
    ),
    (
        "maintenance/transfer-leadership",
        "etcdserverpb.Maintenance",
        "MoveLeader",
    ),
    ("auth/enable", "etcdserverpb.Auth", "AuthEnable"),
    ("auth/disable", "etcdserverpb.Auth", "AuthDisable"),
    ("auth/status", "etcdserverpb.Auth", "AuthStatus"),
    ("auth/authenticate", "etcdserverpb.Auth", "Authenticate"),
    ("auth/user/add", "etcdserverpb.Auth", "UserAdd"),
    ("auth/user/get", "etcdserverpb.Auth", "UserGet"),
    ("auth/user/list", "etcdserverpb.Auth", "UserList"),
    ("auth/user/delete", "etcdserverpb.Auth", "UserDelete"),
    (
        "auth/user/changepw",
        "etcdserverpb.Auth",
        "UserChangePassword",
    ),
    ("auth/user/grant", "etcdserverpb.Auth", "UserGrantRole"),
    ("auth/user/revoke", "etcdserverpb.Auth", "UserRevokeRole"),
    ("auth/role/add", "etcdserverpb.Auth", "RoleAdd"),
    ("auth/role/get", "etcdserverpb.Auth", "RoleGet"),
    ("auth/role/list", "etcdserverpb.Auth", "RoleList"),
    ("auth/role/delete", "etcdserverpb.Auth", "RoleDelete"),
    (
        "auth/role/grant",
        "etcdserverpb.Auth",
        "RoleGrantPermission",
    ),
    (
        "auth/role/revoke",
        "etcdserverpb.Auth",
        "RoleRevokePermission",
    ),
    ("lock/lock", "v3lockpb.Lock", "Lock"),
    ("lock/unlock", "v3lockpb.Lock", "Unlock"),
    ("election/campaign", "v3electionpb.Election", "Campaign"),
    ("election/proclaim", "v3electionpb.Election", "Proclaim"),
    ("election/leader", "v3electionpb.Election", "Leader"),
    ("election/observe", "v3electionpb.Election", "Observe"),
    ("election/resign", "v3electionpb.Election", "Resign"),
];

/// Request messages a streaming call may have in flight between the body and the call.
const STREAM_REQUESTS_BUFFERED: usize = 16;

/// One gateway path's call.
struct Method_ {
    /// `/<service>/<method>`, the gRPC path.
    path: String,
    input: MessageDescriptor,
    output: MessageDescriptor,
    client_streaming: bool,
    server_streaming: bool,
}

/// What the gateway's handler holds.
struct Gateway {
    /// The gRPC routes, called in-process.
    grpc: Router,
    methods: HashMap<&'static str, Method_>,
    /// The largest JSON body (or JSON object of a stream) taken.
    body_max: usize,
}

/// The gateway's routes (`/v3/*`, `/v3beta/*`), calling `grpc`; `body_max` bounds a request's
/// JSON.
///
/// # Panics
///
/// If the compiled descriptors lack a method the gateway names: a build defect, which every
/// test that starts a server would show.
pub fn router(grpc: Router, body_max: usize) -> Router {
    let pool = DescriptorPool::decode(DESCRIPTORS).expect("the build's descriptors decode");
    let methods = METHODS
        .iter()
        .map(|&(path, service, name)| {
            let method = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == name))
                .unwrap_or_else(|| panic!("{service}.{name} is compiled"));
            let call = Method_ {
                path: format!("/{service}/{name}"),
                input: method.input(),
                output: method.output(),
                client_streaming: method.is_client_streaming(),
                server_streaming: method.is_server_streaming(),
            };
            (path, call)
        })
        .collect();
    let gateway = Arc::new(Gateway {
        grpc,
        methods,
        body_max,
    });
    Router::new()
        .route("/v3/{*path}", any(handle))
        .route("/v3beta/{*path}", any(handle))
        .with_state(gateway)
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    Path(path): Path<String>,
    request: Request<Body>,
) -> Response {
    answer(&gateway, &path, request).await
}

async fn answer(gateway: &Gateway, path: &str, request: Request<Body>) -> Response {
    let Some(method) = gateway.methods.get(path) else {
        return (StatusCode::NOT_FOUND, "Not Found\n").into_response();
    };
    if request.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
    }
    let (parts, body) = request.into_parts();
    let metadata = metadata(&parts.headers);
    if method.client_streaming {
        return streaming_request(gateway, method, metadata, body).await;
    }
    let json = match read_body(body, gateway.body_max).await {
        Ok(json) => json,
        Err(e) => return unary_error(Code::InvalidArgument, &e),
    };
    let message = match from_json(&method.input, &json) {
        Ok(message) => message,
        Err(e) => return unary_error(Code::InvalidArgument, &e),
    };
    let body = Body::from(frame(&message));
    let response = call(gateway, method, metadata, body).await;
    if method.server_streaming {
        return stream_response(method.output.clone(), response);
    }
    unary_response(&method.output, response).await
}

/// The headers a call carries as gRPC metadata: the token, and grpc-gateway's
/// `Grpc-Metadata-<name>` ones.
fn metadata(headers: &HeaderMap) -> Vec<(header::HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if name == header::AUTHORIZATION {
            out.push((name.clone(), value.clone()));
        } else if let Some(rest) = name.as_str().strip_prefix("grpc-metadata-")
            && let Ok(name) = header::HeaderName::from_bytes(rest.as_bytes())
        {
            out.push((name, value.clone()));
        }
    }
    out
}

/// Makes the call on the gRPC routes.
async fn call(
    gateway: &Gateway,
    method: &Method_,
    metadata: Vec<(header::HeaderName, HeaderValue)>,
    body: Body,
) -> Response {
    let mut request = Request::post(method.path.as_str())
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(body)
        .expect("a static method path and headers make a request");
    request.headers_mut().extend(metadata);
    match gateway.grpc.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The whole body, at most `max` bytes.
async fn read_body(body: Body, max: usize) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, max);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(format!(
            "reading the request body: {e} (at most {max} bytes)"
        )),
    }
}

/// A request message from its JSON (an empty body is the empty message, as grpc-gateway's).
fn from_json(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, String> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(desc.clone()));
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize_with_options(
        desc.clone(),
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(message)
}

/// A response message, decoded from its protobuf bytes, as JSON as etcd's gateway writes it.
fn to_json_bytes(output: &MessageDescriptor, message: Bytes) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(output.clone(), message).map_err(|e| e.to_string())?;
    to_json(&message)
}

/// A message as JSON, as etcd's gateway writes it.
fn to_json(message: &DynamicMessage) -> Result<Vec<u8>, String> {
    let mut out = serde_json::Serializer::new(Vec::new());
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    message
        .serialize_with_options(&mut out, &options)
        .map_err(|e| e.to_string())?;
    Ok(out.into_inner())
}

/// A message in gRPC's length-prefixed framing (uncompressed).
fn frame(message: &DynamicMessage) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message
        .encode(&mut out)
        .expect("the buffer has the message's length");
    out.freeze()
}

/// The next whole message of a gRPC body from `buf`, if it holds one.
fn next_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).freeze())
}

/// A gRPC response's body, read frame by frame.
struct Frames {
    body: Body,
    buf: BytesMut,
    /// The call's status once its trailers (or its trailers-only headers) are read.
    status: Option<tonic::Status>,
}

impl Frames {
    fn new(response: Response) -> Self {
        let (parts, body) = response.into_parts();
        Frames {
            body,
            buf: BytesMut::new(),
            status: tonic::Status::from_header_map(&parts.headers),
        }
    }

    /// The next message, or `None` at the end of the call (its status is then in `status`).
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(message) = next_message(&mut self.buf) {
                return Some(message);
            }
            if self.status.is_some() {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            self.status = tonic::Status::from_header_map(trailers);
                        }
                    }
                },
                Some(Err(e)) => {
                    self.status = Some(tonic::Status::unknown(e.to_string()));
                }
                None => {
                    self.status.get_or_insert_with(|| {
                        tonic::Status::internal("the call ended without a status")
                    });
                }
            }
        }
    }

    /// The call's status, if it failed.
    fn error(&self) -> Option<&tonic::Status> {
        self.status.as_ref().filter(|s| s.code() != Code::Ok)
    }
}

/// The HTTP status grpc-gateway gives a gRPC code (its `HTTPStatusFromCode`, in the version
/// etcd 3.4 builds with: FailedPrecondition is 412 there, 400 in later ones).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

/// A JSON string.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A unary call's error, as grpc-gateway writes it.
fn unary_error(code: Code, message: &str) -> Response {
    let m = quote(message);
    let body = format!("{{\"error\":{m},\"message\":{m},\"code\":{}}}", code as i32);
    json_response(http_status(code), body)
}

/// A stream's error chunk, as grpc-gateway writes it (fields at their default left out).
fn stream_error(status: &tonic::Status) -> Vec<u8> {
    let http = http_status(status.code());
    let mut fields = Vec::new();
    if status.code() != Code::Ok {
        fields.push(format!("\"grpc_code\":{}", status.code() as i32));
    }
    fields.push(format!("\"http_code\":{}", http.as_u16()));
    if !status.message().is_empty() {
        fields.push(format!("\"message\":{}", quote(status.message())));
    }
    fields.push(format!(
        "\"http_status\":{}",
        quote(http.canonical_reason().unwrap_or_default())
    ));
    format!("{{\"error\":{{{}}}}}\n", fields.join(",")).into_bytes()
}

/// A unary call's answer.
async fn unary_response(output: &MessageDescriptor, response: Response) -> Response {
    let mut frames = Frames::new(response);
    let message = frames.next().await;
    // Read to the end: the status is in the trailers.
    while frames.next().await.is_some() {}
    if let Some(status) = frames.error() {
        return unary_error(status.code(), status.message());
    }
    let Some(message) = message else {
        return unary_error(Code::Internal, "the call answered no message");
    };
    match to_json_bytes(output, message) {
        Ok(json) => json_response(StatusCode::OK, json),
        Err(e) => unary_error(Code::Internal, &e),
    }
}

/// A streaming call's answer: a line per message, and an error line if the call fails. The
/// lines are produced as the client reads them; the call is dropped (cancelled) once the
/// client has gone, even while it has nothing to send.
fn stream_response(output: MessageDescriptor, response: Response) -> Response {
    let mut frames = Frames::new(response);
    if let Some(status) = frames.error() {
        // Failed before its first message: grpc-gateway answers the error's HTTP status.
        return json_response(http_status(status.code()), stream_error(status));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = frames.next() => message,
                () = tx.closed() => return,
            };
            let Some(message) = message else { break };
            let line = match to_json_bytes(&output, message) {
                Ok(json) => {
                    let mut line = b"{\"result\":".to_vec();
                    line.extend_from_slice(&json);
                    line.extend_from_slice(b"}\n");
                    line
                }
                Err(e) => stream_error(&tonic::Status::internal(e)),
            };
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
        if let Some(status) = frames.error() {
            let _ = tx.send(Bytes::from(stream_error(status))).await;
        }
    });
    json_response(StatusCode::OK, body_of(rx))
}

/// A body of what `rx` receives.
fn body_of(rx: mpsc::Receiver<Bytes>) -> Body {
    use tokio_stream::StreamExt;
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, Infallible>))
}

/// JSON values as they arrive in a request body.
struct JsonValues {
    body: Body,
    buf: BytesMut,
    max: usize,
    ended: bool,
}

impl JsonValues {
    /// The next value, `Ok(None)` at the end of the body.
    async fn next(&mut self) -> Result<Option<serde_json::Value>, String> {
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.advance(start);
            if !self.buf.is_empty() {
                let mut values = serde_json::Deserializer::from_slice(&self.buf)
                    .into_iter::<serde_json::Value>();
                match values.next() {
                    Some(Ok(value)) => {
                        let used = values.byte_offset();
                        self.buf.advance(used);
                        return Ok(Some(value));
                    }
                    Some(Err(e)) if !e.is_eof() || self.ended => return Err(e.to_string()),
                    _ => {}
                }
            }
            if self.ended {
                return Ok(None);
            }
            if self.buf.len() > self.max {
                return Err(format!("a JSON object over {} bytes", self.max));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(format!("reading the request body: {e}")),
                None => self.ended = true,
            }
        }
    }

    /// The next request message, `Ok(None)` at the end of the body.
    async fn next_message(
        &mut self,
        desc: &MessageDescriptor,
    ) -> Result<Option<DynamicMessage>, String> {
        let Some(value) = self.next().await? else {
            return Ok(None);
        };
        DynamicMessage::deserialize_with_options(
            desc.clone(),
            value,
            &DeserializeOptions::new().deny_unknown_fields(false),
        )
        .map(Some)
        .map_err(|e| e.to_string())
    }
}

/// A client-streaming call (Watch, LeaseKeepAlive): its first request is read before the
/// call is made (a bad one is answered as a unary call's error); the rest are sent as the
/// body brings them, and the body's end half-closes the call.
async fn streaming_request(
    gateway: &Gateway,
    method: &Method_,
    metadata: Vec<(header::HeaderName, HeaderValue)>,
    body: Body,
) -> Response {
    let mut values = JsonValues {
        body,
        buf: BytesMut::new(),
        max: gateway.body_max,
        ended: false,
    };
    let first = match values.next_message(&method.input).await {
        Ok(first) => first,
        Err(e) => return unary_error(Code::InvalidArgument, &e),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_REQUESTS_BUFFERED);
    if let Some(first) = first {
        let _ = tx.try_send(frame(&first));
        let input = method.input.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = values.next_message(&input) => message,
                    () = tx.closed() => return,
                };
                match message {
                    Ok(Some(message)) => {
                        if tx.send(frame(&message)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        // grpc-gateway ends the stream's requests at a bad one, as here.
                        tracing::debug!(error = %e, "gateway: a bad request in a stream");
                        return;
                    }
                }
            }
        });
    }
    let response = call(gateway, method, metadata, body_of(rx)).await;
    stream_response(method.output.clone(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(DESCRIPTORS).unwrap()
    }

    #[test]
    fn every_path_names_a_compiled_method() {
        let gateway = router(Router::new(), 1024);
        drop(gateway);
    }

    #[test]
    fn json_uses_etcds_field_names_and_strings_for_64_bit_integers() {
        let desc = pool()
            .get_message_by_name("etcdserverpb.LeaseGrantResponse")
            .unwrap();
        let message = from_json(&desc, br#"{"ID": 7, "TTL": "30", "unknown": 1}"#).unwrap();
        assert_eq!(
            String::from_utf8(to_json(&message).expect("encodes")).expect("UTF-8"),
            r#"{"ID":"7","TTL":"30"}"#
        );
        let range = pool()
            .get_message_by_name("etcdserverpb.RangeRequest")
            .unwrap();
        let message = from_json(
            &range,
            br#"{"key":"Zm9v","sort_order":"DESCEND","keysOnly":true}"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(to_json(&message).expect("encodes")).expect("UTF-8"),
            r#"{"key":"Zm9v","sort_order":"DESCEND","keys_only":true}"#
        );
        assert_eq!(from_json(&range, b"  ").unwrap().encoded_len(), 0);
        assert!(from_json(&range, br#"{"key":"not base64!"}"#).is_err());
        assert!(from_json(&range, br#"{"key":"Zm9v"} x"#).is_err());
        assert!(from_json(&range, b"[1]").is_err());
    }

    #[test]
    fn frames_round_trip_through_the_grpc_framing() {
        let desc = pool()
            .get_message_by_name("etcdserverpb.PutRequest")
            .unwrap();
        let a = from_json(&desc, br#"{"key":"YQ==","value":"Yg=="}"#).unwrap();
        let b = from_json(&desc, br#"{"key":"Yw=="}"#).unwrap();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(&a));
        let second = frame(&b);
        buf.extend_from_slice(&second[..3]);
        assert_eq!(next_message(&mut buf).unwrap(), a.encode_to_vec());
        assert!(next_message(&mut buf).is_none(), "a partial frame waits");
        buf.extend_from_slice(&second[3..]);
        assert_eq!(next_message(&mut buf).unwrap(), b.encode_to_vec());
        assert!(buf.is_empty());
    }

    #[test]
    fn http_statuses_are_grpc_gateways() {
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        // etcd 3.4's grpc-gateway (checked: a lease granted twice answers 412).
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::PRECONDITION_FAILED
        );
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::DataLoss),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let line = stream_error(&tonic::Status::not_found(
            "etcdserver: requested lease not found",
        ));
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"error\":{\"grpc_code\":5,\"http_code\":404,\"message\":\"etcdserver: requested lease not found\",\"http_status\":\"Not Found\"}}\n"
        );
    }
}
