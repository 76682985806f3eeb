//! Partitions where network namespaces are not available (not root, no `ip`), or with
//! `--proxy`: a TCP proxy in front of every member's peer port and client port, on 127.0.0.1,
//! which stops carrying bytes across a cut.
//!
//! - Peers: a member listens on a port of its own and advertises its proxy's, so every
//!   connection another member opens to it passes through the proxy. A peer connection is one
//!   way and starts with the dialer's `Hello` frame (`docs/formats/transport.md`), which names
//!   the dialer (`from`) and the member dialed (`to`): the proxy reads it to learn which slot
//!   each member id is on, and which slot a connection comes from. Cutting the link between
//!   slots `a` and `b` holds every connection from `a` to `b` and from `b` to `a`.
//! - Clients: the clients and watchers reach a member through its client proxy (the member
//!   still advertises its own client port, so its peers forward to it directly, as in the
//!   namespaced network, where only the clients' route is cut).
//!
//! A held connection stays open, and the proxy stops reading from both of its ends: what is
//! sent meanwhile waits in the kernel's buffers (the sender blocks once they fill), as in a
//! partition where TCP keeps retransmitting; when the cut heals it is delivered late, unless an
//! end gave up and closed first. A connection opened to a cut destination is accepted and held
//! in the same way (its dialer's timeouts close it). Nothing is dropped from the middle of a
//! stream, which no real network does to TCP.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use strata_transport::{Hello, LENGTH_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The most a proxy reads from one end before writing it to the other.
const CHUNK_BYTES: usize = 64 * 1024;

/// The longest a `Hello` frame may be (the transport's own limit).
const HELLO_BYTES_MAX: usize = 4096;

/// How long a dialer has to send its `Hello` (the transport allows 5 s).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The cuts in place, and what the proxies have learned.
#[derive(Debug, Default)]
struct Cuts {
    /// Links cut, as (from slot, to slot): both orders for a cut link.
    links: HashSet<(usize, usize)>,
    /// Slots cut off from the clients.
    clients: HashSet<usize>,
    /// Each member id's slot, from the `to` of the `Hello`s its proxy carried.
    slots: HashMap<u64, usize>,
}

#[derive(Debug)]
struct State {
    cuts: Mutex<Cuts>,
    /// Bumped whenever the cuts change, to wake held connections.
    changed: watch::Sender<u64>,
    /// Times a connection was held by a cut (a run whose cuts held nothing cut nothing).
    held: AtomicU64,
}

impl State {
    fn cuts(&self) -> std::sync::MutexGuard<'_, Cuts> {
        self.cuts.lock().expect("the proxies' cuts")
    }

    fn change(&self, f: impl FnOnce(&mut Cuts)) {
        f(&mut self.cuts());
        self.changed.send_modify(|n| *n += 1);
    }

    /// Returns once `held` is false for the cuts in place.
    async fn open(&self, held: &(impl Fn(&Cuts) -> bool + Sync)) {
        let mut changed = self.changed.subscribe();
        let mut counted = false;
        while held(&self.cuts()) {
            if !counted {
                self.held.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }
}

/// The proxies of one run, on a runtime of their own; they stop when it is dropped.
pub struct Proxies {
    rt: tokio::runtime::Runtime,
    state: Arc<State>,
    /// Each proxied client port's proxy port.
    client_ports: HashMap<u16, u16>,
}

impl Proxies {
    /// A runtime for the proxies; none started yet.
    ///
    /// # Errors
    ///
    /// If the runtime cannot be built.
    pub fn new() -> Result<Proxies, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .map_err(|e| format!("the proxies' runtime: {e}"))?;
        Ok(Proxies {
            rt,
            state: Arc::new(State {
                cuts: Mutex::new(Cuts::default()),
                changed: watch::channel(0).0,
                held: AtomicU64::new(0),
            }),
            client_ports: HashMap::new(),
        })
    }

    /// Binds a proxy port on 127.0.0.1 and serves it with `serve` for each connection.
    fn listen<F, Fut>(&self, serve: F) -> u16
    where
        F: Fn(TcpStream, Arc<State>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = std_listener.local_addr().expect("a proxy's address").port();
        std_listener
            .set_nonblocking(true)
            .expect("a non-blocking proxy port");
        let state = Arc::clone(&self.state);
        let _entered = self.rt.enter();
        let listener = TcpListener::from_std(std_listener).expect("a proxy listener");
        self.rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, Arc::clone(&state)));
            }
        });
        port
    }

    /// A proxy for slot `slot`'s peer port `upstream`; returns the port to advertise.
    pub fn peer(&mut self, slot: usize, upstream: u16) -> u16 {
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        self.listen(move |conn, state| peer_connection(conn, state, slot, upstream))
    }

    /// A proxy for slot `slot`'s client port `upstream`; its port is then
    /// [`client_port`](Self::client_port)`(upstream)`.
    pub fn client(&mut self, slot: usize, upstream: u16) {
        let to = SocketAddr::from(([127, 0, 0, 1], upstream));
        let port = self.listen(move |conn, state| async move {
            let held = move |cuts: &Cuts| cuts.clients.contains(&slot);
            carry(conn, Bytes::new(), to, &state, &held).await;
        });
        self.client_ports.insert(upstream, port);
    }

    /// The proxy port in front of client port `upstream`, if it has one.
    pub fn client_port(&self, upstream: u16) -> Option<u16> {
        self.client_ports.get(&upstream).copied()
    }

    /// Cuts the link between slots `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.state.change(|cuts| {
            cuts.links.insert((a, b));
            cuts.links.insert((b, a));
        });
    }

    /// Cuts slot `slot` off from the clients.
    pub fn cut_clients(&mut self, slot: usize) {
        self.state.change(|cuts| {
            cuts.clients.insert(slot);
        });
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        self.state.change(|cuts| {
            cuts.links.clear();
            cuts.clients.clear();
        });
    }

    /// How many times a cut has held a connection so far.
    pub fn held(&self) -> u64 {
        self.state.held.load(Ordering::Relaxed)
    }
}

/// One connection to slot `slot`'s peer port: its `Hello` read (to learn who dials whom),
/// then carried to `upstream`, held while the link from the dialer's slot is cut.
async fn peer_connection(
    mut conn: TcpStream,
    state: Arc<State>,
    slot: usize,
    upstream: SocketAddr,
) {
    let Ok(Ok(hello)) = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut conn)).await else {
        return;
    };
    let Ok(decoded) = <Hello as prost::Message>::decode(&hello[LENGTH_BYTES..]) else {
        return;
    };
    state.change(|cuts| {
        cuts.slots.insert(decoded.to, slot);
    });
    let from = decoded.from;
    let held = move |cuts: &Cuts| {
        cuts.slots
            .get(&from)
            .is_some_and(|&f| cuts.links.contains(&(f, slot)))
    };
    carry(conn, hello, upstream, &state, &held).await;
}

/// One frame, its length prefix included.
async fn read_frame(conn: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut prefix = [0u8; LENGTH_BYTES];
    conn.read_exact(&mut prefix).await?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > HELLO_BYTES_MAX {
        return Err(std::io::Error::other("a Hello above the limit"));
    }
    let mut frame = vec![0u8; LENGTH_BYTES + len];
    frame[..LENGTH_BYTES].copy_from_slice(&prefix);
    conn.read_exact(&mut frame[LENGTH_BYTES..]).await?;
    Ok(Bytes::from(frame))
}

/// Connects to `to` once `held` is false, sends `first` (what was already read from `conn`),
/// then carries bytes both ways until both ends have closed, holding them while `held`.
async fn carry(
    conn: TcpStream,
    first: Bytes,
    to: SocketAddr,
    state: &State,
    held: &(impl Fn(&Cuts) -> bool + Sync),
) {
    state.open(held).await;
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&first).await.is_err() {
        return;
    }
    let (from_dialer, to_dialer) = conn.into_split();
    let (from_upstream, to_upstream) = upstream.into_split();
    tokio::join!(
        pump(from_dialer, to_upstream, state, held),
        pump(from_upstream, to_dialer, state, held),
    );
}

/// Copies `from` to `to` until `from` ends or either fails, never reading or writing while
/// `held`; shuts `to` down when done (dropping it), so the far end sees the close.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: &State,
    held: &(impl Fn(&Cuts) -> bool + Sync),
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        state.open(held).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read before a cut began, or while it was beginning: delivered once it heals.
        state.open(held).await;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
