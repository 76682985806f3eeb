//! The load generators' gRPC client: unary etcd KV calls, and etcd's watch stream, on an
//! HTTP/2 connection of the `h2` crate, with nothing between the caller and the connection.
//!
//! The benches run the load generator on the cores the servers use, so whatever a request
//! costs the generator is taken from both systems and narrows every ratio towards 1. The
//! `etcd-client` crate (tonic on hyper) spent about as much CPU per linearizable get as the
//! three Strata members together (37.5 against 36.1 µs at 500 clients), and wrote 2.3
//! `writev`s per request: hyper sends a request's HEADERS frame, then a task it spawns for
//! the body sends the DATA frame, and the connection flushes after each. Here a request's
//! HEADERS and DATA are queued together before the connection task runs, so requests leave
//! in one write, and several when callers share a connection; no task is spawned and no
//! buffer task sits between the caller and the connection.
//!
//! It is the same code for both systems: standard gRPC over HTTP/2 (`content-type:
//! application/grpc`, a 5-byte message prefix, the status in the trailers), no compression,
//! no TLS, no auth token. Flow-control windows are hyper's defaults (2 MiB per stream, 5 MiB
//! per connection), as the `etcd-client` crate has them through tonic.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderValue, Method, Request, Uri};
use prost::Message;

/// hyper's default HTTP/2 stream window (what tonic, and so `etcd-client`, use).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// hyper's default HTTP/2 connection window.
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// The length-prefixed message's prefix: a compressed flag and a big-endian length.
const PREFIX_BYTES: usize = 5;

/// A unary RPC of etcd's KV service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Range = 0,
    Put = 1,
    Txn = 2,
}

impl Rpc {
    const ALL: [Rpc; 3] = [Rpc::Range, Rpc::Put, Rpc::Txn];

    fn path(self) -> &'static str {
        match self {
            Rpc::Range => "/etcdserverpb.KV/Range",
            Rpc::Put => "/etcdserverpb.KV/Put",
            Rpc::Txn => "/etcdserverpb.KV/Txn",
        }
    }
}

/// The path of etcd's watch stream (`Watch/Watch`).
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The connection or the stream failed.
    Http(h2::Error),
    /// The server answered with a gRPC status other than OK.
    Status { code: String, message: String },
    /// The answer was not a well-formed unary gRPC response.
    Malformed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Http(e) => write!(f, "HTTP/2: {e}"),
            CallError::Status { code, message } => write!(f, "grpc-status {code}: {message}"),
            CallError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl From<h2::Error> for CallError {
    fn from(e: h2::Error) -> Self {
        CallError::Http(e)
    }
}

/// One HTTP/2 connection to a member's client URL; cheap to clone (clones share it).
#[derive(Clone)]
pub struct Connection {
    send: SendRequest<Bytes>,
    /// The full URI of each [`Rpc`], in [`Rpc::ALL`]'s order, made once.
    uris: [Uri; 3],
}

impl Connection {
    /// Connects to `endpoint` (`http://host:port`) and spawns the task that drives the
    /// connection; it ends when every clone is dropped or the connection fails.
    pub async fn connect(endpoint: &str) -> io::Result<Connection> {
        let authority = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::other(format!("{endpoint}: only http:// endpoints")))?
            .trim_end_matches('/');
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        let (send, connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            // An error ends the connection; the calls on it then fail and are counted so.
            let _ = connection.await;
        });
        let uris = Rpc::ALL.map(|rpc| {
            format!("http://{authority}{}", rpc.path())
                .parse::<Uri>()
                .expect("an endpoint's authority and a path make a URI")
        });
        Ok(Connection { send, uris })
    }

    /// Opens a watch stream (`Watch/Watch`): requests go on the returned sender, responses
    /// come from the receiver. Like etcd's clients, it sends nothing until the first
    /// request, and the response headers come with the server's first message.
    pub async fn watch(&self) -> Result<(WatchSender, WatchReceiver), CallError> {
        let uri = format!(
            "http://{}{WATCH_PATH}",
            self.uris[0].authority().map_or("", |a| a.as_str())
        )
        .parse::<Uri>()
        .map_err(|e| CallError::Malformed(e.to_string()))?;
        let mut send = self.send.clone().ready().await?;
        let (response, stream) = send.send_request(grpc_head(uri), false)?;
        Ok((
            WatchSender { stream },
            WatchReceiver {
                response: Some(response),
                body: None,
                buffer: BytesMut::new(),
            },
        ))
    }

    /// Sends `request` to `rpc` and returns its decoded response.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        rpc: Rpc,
        request: &Q,
    ) -> Result<A, CallError> {
        let body = framed(request);
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) =
            send.send_request(grpc_head(self.uris[rpc as usize].clone()), false)?;
        // Queued with the HEADERS frame: the connection task writes both in one go.
        stream.send_data(body, true)?;

        let mut body = response_body(response).await?;
        // A message usually arrives in one DATA frame, which is then used as it is; a larger
        // one is gathered into one buffer.
        let mut first: Option<Bytes> = None;
        let mut gathered: Option<BytesMut> = None;
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            match (&mut gathered, first.take()) {
                (Some(all), _) => all.extend_from_slice(&chunk),
                (None, None) => first = Some(chunk),
                (None, Some(earlier)) => {
                    let mut all = BytesMut::with_capacity(2 * (earlier.len() + chunk.len()));
                    all.extend_from_slice(&earlier);
                    all.extend_from_slice(&chunk);
                    gathered = Some(all);
                }
            }
        }
        let message = gathered.map_or_else(|| first.unwrap_or_default(), BytesMut::freeze);
        let Some(trailers) = body.trailers().await? else {
            return Err(CallError::Malformed("no trailers".to_owned()));
        };
        if !trailers.contains_key("grpc-status") {
            return Err(CallError::Malformed(
                "trailers without grpc-status".to_owned(),
            ));
        }
        if let Some(error) = status_error(&trailers) {
            return Err(error);
        }
        decode_message(message)
    }
}

/// The requests of one watch stream.
pub struct WatchSender {
    stream: h2::SendStream<Bytes>,
}

impl WatchSender {
    /// Queues `requests` on the stream in one DATA frame's worth of data (the connection task
    /// sends it, in frames of at most the peer's frame size; h2 holds what the stream's window
    /// does not yet allow).
    ///
    /// Requests sent together go together: hyper's h2 server sends a connection that floods
    /// it with small DATA frames its application has not read yet a GOAWAY
    /// (`too_many_data_frames`), and a stream of thousands of creates, each its own frame, is
    /// one. etcd's Go client sends one create at a time, waiting for its answer.
    pub fn send<'a, Q: Message + 'a>(
        &mut self,
        requests: impl IntoIterator<Item = &'a Q>,
    ) -> Result<(), CallError> {
        let mut body = BytesMut::new();
        for request in requests {
            put_framed(&mut body, request);
        }
        self.stream.send_data(body.freeze(), false)?;
        Ok(())
    }
}

/// The responses of one watch stream.
pub struct WatchReceiver {
    /// The response headers, until they have come.
    response: Option<h2::client::ResponseFuture>,
    body: Option<h2::RecvStream>,
    /// What has come of messages not yet taken.
    buffer: BytesMut,
}

impl WatchReceiver {
    /// The next message, decoded as `A`; `None` once the server ends the stream with status
    /// OK (an end without a status is an error).
    pub async fn message<A: Message + Default>(&mut self) -> Result<Option<A>, CallError> {
        loop {
            if let Some(message) = self.take_message()? {
                return A::decode(message)
                    .map(Some)
                    .map_err(|e| CallError::Malformed(e.to_string()));
            }
            let Some(body) = &mut self.body else {
                let Some(response) = self.response.take() else {
                    return Ok(None);
                };
                self.body = Some(response_body(response).await?);
                continue;
            };
            match body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    self.buffer.extend_from_slice(&chunk);
                }
                None => {
                    if !self.buffer.is_empty() {
                        return Err(CallError::Malformed(format!(
                            "the stream ended inside a message ({} bytes)",
                            self.buffer.len()
                        )));
                    }
                    let trailers = body.trailers().await?;
                    self.body = None;
                    // As for a unary call: a stream the server ended has its status in the
                    // trailers; without one it was cut off, not ended.
                    let Some(trailers) = trailers.filter(|t| t.contains_key("grpc-status")) else {
                        return Err(CallError::Malformed(
                            "a stream ended without a grpc-status".to_owned(),
                        ));
                    };
                    if let Some(error) = status_error(&trailers) {
                        return Err(error);
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// A whole message from the buffer, without its prefix, if one has come.
    fn take_message(&mut self) -> Result<Option<Bytes>, CallError> {
        let Some(prefix) = self.buffer.get(..PREFIX_BYTES) else {
            return Ok(None);
        };
        if prefix[0] != 0 {
            return Err(CallError::Malformed("a compressed message".to_owned()));
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if self.buffer.len() < PREFIX_BYTES + len {
            return Ok(None);
        }
        self.buffer.advance(PREFIX_BYTES);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }
}

/// The body of a response, once its head has come: HTTP 200 and no gRPC error status in the
/// headers (a trailers-only response has its status there, and no message).
async fn response_body(response: h2::client::ResponseFuture) -> Result<h2::RecvStream, CallError> {
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        return Err(CallError::Malformed(format!(
            "HTTP status {}",
            response.status()
        )));
    }
    if let Some(error) = status_error(response.headers()) {
        return Err(error);
    }
    Ok(response.into_body())
}

/// What the watch bench reads of etcd's `WatchResponse` (etcd's field numbers): the rest of
/// each response (the header, each event's key and revisions, `prev_kv`) is skipped as it is
/// decoded, not copied out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// An event's `kv` (`mvccpb.Event`, field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

/// A version's value (`mvccpb.KeyValue`, field 5), as a slice of the received message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

/// `message` with its gRPC prefix (uncompressed, its length big-endian).
fn framed<Q: Message>(message: &Q) -> Bytes {
    let mut body = BytesMut::with_capacity(PREFIX_BYTES + message.encoded_len());
    put_framed(&mut body, message);
    body.freeze()
}

/// Appends `message` with its gRPC prefix to `body`.
fn put_framed<Q: Message>(body: &mut BytesMut, message: &Q) {
    let len = message.encoded_len();
    body.reserve(PREFIX_BYTES + len);
    body.put_u8(0);
    body.put_u32(u32::try_from(len).expect("a message under 4 GiB"));
    message
        .encode(body)
        .expect("BytesMut grows to fit a message");
}

/// A gRPC request's headers, for `uri`.
fn grpc_head(uri: Uri) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = Method::POST;
    *head.uri_mut() = uri;
    let headers = head.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    head
}

/// The error a `grpc-status` header other than 0 stands for; `None` if there is none or it
/// is 0.
fn status_error(headers: &http::HeaderMap) -> Option<CallError> {
    let code = headers.get("grpc-status")?.to_str().unwrap_or("?");
    if code == "0" {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .map_or_else(String::new, |m| percent_decoded(m.as_bytes()));
    Some(CallError::Status {
        code: code.to_owned(),
        message,
    })
}

/// `grpc-message` is percent-encoded (`%20` for a space).
fn percent_decoded(encoded: &[u8]) -> String {
    let hex = |b: &u8| char::from(*b).to_digit(16);
    let mut out = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%'
            && let (Some(high), Some(low)) = (
                encoded.get(i + 1).and_then(hex),
                encoded.get(i + 2).and_then(hex),
            )
        {
            // Two hex digits: at most 255.
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(encoded[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a unary response's body: exactly one uncompressed length-prefixed message.
fn decode_message<A: Message + Default>(mut body: Bytes) -> Result<A, CallError> {
    if body.len() < PREFIX_BYTES {
        return Err(CallError::Malformed(format!(
            "{} bytes, less than a message prefix",
            body.len()
        )));
    }
    let compressed = body.get_u8();
    let len = body.get_u32() as usize;
    if compressed != 0 {
        return Err(CallError::Malformed("a compressed message".to_owned()));
    }
    if body.len() != len {
        return Err(CallError::Malformed(format!(
            "a {len}-byte message in {} bytes",
            body.len()
        )));
    }
    A::decode(body).map_err(|e| CallError::Malformed(e.to_string()))
}
