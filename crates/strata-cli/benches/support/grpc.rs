//! The load generators' gRPC client: unary etcd KV calls on an HTTP/2 connection of the `h2`
//! crate, with nothing between the caller and the connection.
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

    /// Sends `request` to `rpc` and returns its decoded response.
    pub async fn call<Q: Message, A: Message + Default>(
        &self,
        rpc: Rpc,
        request: &Q,
    ) -> Result<A, CallError> {
        let len = request.encoded_len();
        let mut body = BytesMut::with_capacity(PREFIX_BYTES + len);
        body.put_u8(0);
        body.put_u32(u32::try_from(len).expect("a request under 4 GiB"));
        request
            .encode(&mut body)
            .expect("BytesMut grows to fit a message");

        let uri = self.uris[rpc as usize].clone();
        let mut head = Request::new(());
        *head.method_mut() = Method::POST;
        *head.uri_mut() = uri;
        let headers = head.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));

        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(head, false)?;
        // Queued with the HEADERS frame: the connection task writes both in one go.
        stream.send_data(body.freeze(), true)?;

        let response = response.await?;
        if response.status() != http::StatusCode::OK {
            return Err(CallError::Malformed(format!(
                "HTTP status {}",
                response.status()
            )));
        }
        // A trailers-only response: the status is in the headers, and there is no message.
        if let Some(error) = status_error(response.headers()) {
            return Err(error);
        }
        let mut body = response.into_body();
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
