//! A fault-injecting TCP proxy for the transport's tests. A [`Proxy`] listens on a loopback
//! port and forwards each connection it accepts to a target, both ways, with faults a test sets
//! at any moment through its [`Faults`] handle:
//!
//! - a delay before each chunk it forwards;
//! - a probability, per chunk read, of dropping: a TCP proxy cannot drop one frame without
//!   breaking the stream, so a drop forwards a random prefix of the chunk and closes the
//!   connection (the receiver sees a torn frame, then the end);
//! - cutting every open connection: each is closed at its next read, after a random prefix of
//!   that read (mid-frame, most often), or between frames if it reads nothing for
//!   [`CUT_GRACE`];
//! - holding one direction: nothing is read from that side (its sender's window fills) and
//!   nothing is closed, an asymmetric partition; releasing it forwards what waited;
//! - blocking new connections: they are accepted and closed at once.
//!
//! Dropping the [`Proxy`] aborts its tasks, which closes its listener and its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// How long a cut waits for a connection's next read, to tear a frame, before closing it
/// between frames: a lane of Raft messages carries a heartbeat every tick.
const CUT_GRACE: Duration = Duration::from_millis(100);

/// Bytes read from one side at a time: one chunk, forwarded (or dropped, or cut) as a unit.
const CHUNK_BYTES: usize = 16 << 10;

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the side that connected to the proxy to the target (a transport's dialer to the
    /// acceptor: Hello and Raft messages).
    ToServer,
    /// From the target back to the side that connected (the acceptor's Welcome).
    ToClient,
}

/// The faults in force; every connection's tasks watch them.
#[derive(Clone, Debug, Default)]
struct State {
    delay: Duration,
    /// Chance of a drop per chunk read, in millionths.
    drop_ppm: u32,
    hold_to_server: bool,
    hold_to_client: bool,
    blocked: bool,
    /// Bumped by each cut: a connection opened under an older epoch is cut.
    cut_epoch: u64,
}

impl State {
    fn held(&self, direction: Direction) -> bool {
        match direction {
            Direction::ToServer => self.hold_to_server,
            Direction::ToClient => self.hold_to_client,
        }
    }
}

/// What the proxy did, read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted (blocked ones included).
    pub accepted: u64,
    /// Connections closed at once because new connections were blocked.
    pub blocked: u64,
    /// Connections closed by a cut.
    pub cuts: u64,
    /// Connections closed by a drop.
    pub drops: u64,
    /// Bytes forwarded to the target.
    pub bytes_to_server: u64,
    /// Bytes forwarded back.
    pub bytes_to_client: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    blocked: AtomicU64,
    cuts: AtomicU64,
    drops: AtomicU64,
    bytes_to_server: AtomicU64,
    bytes_to_client: AtomicU64,
}

/// The handle through which a test sets a proxy's faults, from any thread.
#[derive(Debug)]
pub struct Faults {
    state: watch::Sender<State>,
    counters: Counters,
    /// xorshift64 state for drops and cut points.
    random: AtomicU64,
}

impl Faults {
    /// Waits `delay` before forwarding each chunk, both ways (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.state.send_modify(|s| s.delay = delay);
    }

    /// Drops (closes mid-chunk) a connection with probability `p` per chunk read.
    pub fn set_drop_probability(&self, p: f64) {
        let ppm = (p.clamp(0.0, 1.0) * 1e6).round() as u32;
        self.state.send_modify(|s| s.drop_ppm = ppm);
    }

    /// Cuts every connection open now, each at its next read, after a random prefix of it (or
    /// after [`CUT_GRACE`] without a read).
    pub fn cut_all(&self) {
        self.state.send_modify(|s| s.cut_epoch += 1);
    }

    /// Holds (`true`) or releases one direction of every connection, open or to come.
    pub fn hold(&self, direction: Direction, held: bool) {
        self.state.send_modify(|s| match direction {
            Direction::ToServer => s.hold_to_server = held,
            Direction::ToClient => s.hold_to_client = held,
        });
    }

    /// Closes new connections at once while `blocked`.
    pub fn block(&self, blocked: bool) {
        self.state.send_modify(|s| s.blocked = blocked);
    }

    /// Lifts every fault (cuts already made stay made).
    pub fn heal(&self) {
        self.state.send_modify(|s| {
            *s = State {
                cut_epoch: s.cut_epoch,
                ..State::default()
            }
        });
    }

    /// The counters, read now.
    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            accepted: get(&c.accepted),
            blocked: get(&c.blocked),
            cuts: get(&c.cuts),
            drops: get(&c.drops),
            bytes_to_server: get(&c.bytes_to_server),
            bytes_to_client: get(&c.bytes_to_client),
        }
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&self, n: u64) -> u64 {
        let next = |mut x: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let previous = self
            .random
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(next(x)))
            .expect("the closure always answers");
        next(previous) % n
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A proxy in front of one address; see the module docs.
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`, on the current runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seed = u64::from(addr.port()) << 32 | u64::from(target.port()) | 1;
        let faults = Arc::new(Faults {
            state: watch::Sender::new(State::default()),
            counters: Counters::default(),
            random: AtomicU64::new(seed),
        });
        let accept = tokio::spawn(accept(listener, target, Arc::clone(&faults)));
        Ok(Proxy {
            addr,
            faults,
            accept,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its faults, to set from any thread.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }
}

impl std::ops::Deref for Proxy {
    type Target = Faults;

    fn deref(&self) -> &Faults {
        &self.faults
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the connections' tasks (a JoinSet): aborting it aborts them.
        self.accept.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, faults: Arc<Faults>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so that the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors: give the others a turn rather than spin.
            tokio::task::yield_now().await;
            continue;
        };
        add(&faults.counters.accepted, 1);
        let (blocked, epoch) = {
            let state = faults.state.borrow();
            (state.blocked, state.cut_epoch)
        };
        if blocked {
            add(&faults.counters.blocked, 1);
            drop(client);
            continue;
        }
        connections.spawn(connection(client, target, epoch, Arc::clone(&faults)));
    }
}

/// How one direction of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Its sender closed: the close was passed on, the other direction carries on.
    Eof,
    /// Cut by the test: close the whole connection.
    Cut,
    /// Dropped at random: close the whole connection.
    Dropped,
    /// A read or write failed: close the whole connection.
    Broken,
}

async fn connection(client: TcpStream, target: SocketAddr, epoch: u64, faults: Arc<Faults>) {
    let Ok(server) = TcpStream::connect(target).await else {
        // The target is down: the client sees its connection close.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        Direction::ToServer,
        epoch,
        &faults,
    );
    let down = pump(
        server_read,
        client_write,
        Direction::ToClient,
        epoch,
        &faults,
    );
    tokio::pin!(up, down);
    let end = tokio::select! {
        end = &mut up => match end {
            End::Eof => down.await,
            end => end,
        },
        end = &mut down => match end {
            End::Eof => up.await,
            end => end,
        },
    };
    match end {
        End::Cut => add(&faults.counters.cuts, 1),
        End::Dropped => add(&faults.counters.drops, 1),
        End::Eof | End::Broken => {}
    }
    // Returning drops both streams: the connection closes on both sides.
}

/// Forwards one direction until its sender closes or a fault ends the connection.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    epoch: u64,
    faults: &Faults,
) -> End {
    let mut state = faults.state.subscribe();
    let cut = move |s: &State| s.cut_epoch != epoch;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        // Held: read nothing, so the sender's window fills; a cut still goes through.
        if state
            .wait_for(|s| !s.held(direction) || cut(s))
            .await
            .is_err()
        {
            return End::Broken;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            () = cut_after_grace(&mut state, cut) => return End::Cut,
        };
        let n = match read {
            Ok(0) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
            Err(_) => return End::Broken,
        };
        // What was being read when a hold began waits too.
        if state
            .wait_for(|s| !s.held(direction) || cut(s))
            .await
            .is_err()
        {
            return End::Broken;
        }
        let now = state.borrow().clone();
        let end = if cut(&now) {
            Some(End::Cut)
        } else if now.drop_ppm > 0 && faults.below(1_000_000) < u64::from(now.drop_ppm) {
            Some(End::Dropped)
        } else {
            None
        };
        if let Some(end) = end {
            // A prefix strictly shorter than what was read: the frame in it is torn.
            let prefix = faults.below(n as u64) as usize;
            let _ = to.write_all(&buffer[..prefix]).await;
            return end;
        }
        if !now.delay.is_zero() {
            tokio::time::sleep(now.delay).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return End::Broken;
        }
        let bytes = match direction {
            Direction::ToServer => &faults.counters.bytes_to_server,
            Direction::ToClient => &faults.counters.bytes_to_client,
        };
        add(bytes, n as u64);
    }
}

/// Returns [`CUT_GRACE`] after the connection is cut (at once if it already is).
async fn cut_after_grace(state: &mut watch::Receiver<State>, cut: impl Fn(&State) -> bool) {
    // An error means the proxy is gone: close as well.
    let _ = state.wait_for(|s| cut(s)).await;
    tokio::time::sleep(CUT_GRACE).await;
}
