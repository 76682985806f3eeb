//! Three nodes over TCP with faults: a proxy on every directed link delays, drops and cuts
//! connections mid-frame, or holds one direction (an asymmetric partition); strangers send
//! garbage, oversized frames and wrong handshakes straight to a node. The cluster keeps or
//! regains a leader, keeps committing, and loses nothing it acknowledged.

#[allow(dead_code)]
mod support {
    pub mod cluster;
    pub mod proxy;
}

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use strata_raft::{Message, MessageType, NodeId, Role};
use strata_transport::{
    FRAME_BYTES_MAX, Hello, Lane, Metrics, PROTOCOL_VERSION, Welcome, decode_handshake,
    decode_message, encode, split_frame,
};
use support::cluster::{CLUSTER, Cluster, WAIT};
use support::proxy::{Direction, Faults, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy on every directed link `(from, to)`, in front of `to`, on a runtime of their own.
struct Links {
    proxies: BTreeMap<(NodeId, NodeId), Proxy>,
    /// Runs the proxies; dropped after them.
    _runtime: tokio::runtime::Runtime,
}

impl Links {
    /// Puts a proxy on each of `c`'s links (before its nodes start).
    fn new(c: &mut Cluster) -> Links {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut proxies = BTreeMap::new();
        let addrs = c.addrs.clone();
        for (&(from, to), route) in &mut c.routes {
            let proxy = runtime.block_on(async {
                // The nodes' ports were found free and let go: a proxy must not take one.
                let mut taken = Vec::new();
                loop {
                    let proxy = Proxy::start(addrs[&to]).await.expect("proxy");
                    if addrs.values().all(|a| *a != proxy.addr()) {
                        return proxy;
                    }
                    taken.push(proxy);
                }
            });
            *route = proxy.addr();
            proxies.insert((from, to), proxy);
        }
        Links {
            proxies,
            _runtime: runtime,
        }
    }

    fn all(&self) -> impl Iterator<Item = &Proxy> {
        self.proxies.values()
    }

    fn link(&self, from: NodeId, to: NodeId) -> &Proxy {
        &self.proxies[&(from, to)]
    }

    fn cuts(&self) -> u64 {
        self.all().map(|p| p.stats().cuts + p.stats().drops).sum()
    }
}

/// Polls `done` until it holds, within [`WAIT`].
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn role(c: &Cluster, id: NodeId) -> Role {
    c.raft(id).status().borrow().role
}

/// Puts `key=value` and records it as acknowledged; the highest index acknowledged so far.
fn put(c: &Cluster, acked: &mut BTreeMap<String, String>, last: &mut u64, key: String) {
    let value = format!("v-{key}");
    *last = (*last).max(c.put(&key, &value));
    acked.insert(key, value);
}

/// Every node applies up to `last` and holds every acknowledged pair.
fn converged(c: &Cluster, acked: &BTreeMap<String, String>, last: u64) {
    for &id in &c.ids {
        c.wait_applied(id, last);
        let kv = c.nodes[&id].kv.lock();
        for (key, value) in acked {
            assert_eq!(
                kv.get(key),
                Some(value),
                "node {id} lost the acknowledged {key}"
            );
        }
    }
}

/// xorshift64: the tests' randomness, from a fixed seed.
struct Random(u64);

impl Random {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn cuts_mid_frame_drops_and_delays_on_every_link_lose_nothing_acknowledged() {
    let mut c = Cluster::new(3);
    let links = Links::new(&mut c);
    c.start_all();
    let mut acked = BTreeMap::new();
    let mut last = 0;
    put(&c, &mut acked, &mut last, "first".to_owned());
    for proxy in links.all() {
        proxy.set_delay(Duration::from_millis(1));
        proxy.set_drop_probability(0.002);
    }
    // Besides the cuts of every link below, one link at a time is cut at random moments.
    let stop = Arc::new(AtomicBool::new(false));
    let chaos = std::thread::spawn({
        let stop = Arc::clone(&stop);
        let faults: Vec<Arc<Faults>> = links.all().map(Proxy::faults).collect();
        move || {
            let mut random = Random(0x5eed_f00d);
            while !stop.load(Ordering::Relaxed) {
                // Pacing the faults, not waiting for a condition.
                std::thread::sleep(Duration::from_millis(20 + random.below(100)));
                let link = &faults[random.below(faults.len() as u64) as usize];
                link.set_delay(Duration::from_micros(random.below(3000)));
                link.cut_all();
            }
        }
    });
    for i in 0..200 {
        if i % 20 == 10 {
            for proxy in links.all() {
                proxy.cut_all();
            }
        }
        put(&c, &mut acked, &mut last, format!("k{i:03}"));
    }
    stop.store(true, Ordering::Relaxed);
    chaos.join().expect("the chaos thread");
    for proxy in links.all() {
        proxy.heal();
    }
    assert!(
        links.cuts() >= 10,
        "the faults were made: {} connections cut or dropped",
        links.cuts()
    );
    // A leader after the faults, which commits, and every node has every acknowledged put.
    c.leader();
    put(&c, &mut acked, &mut last, "after".to_owned());
    converged(&c, &acked, last);
}

/// Partitions the leader one way (`into_leader`: it sends but hears nothing; otherwise it
/// hears but cannot send), checks that another node leads and commits, then heals.
fn asymmetric_partition(into_leader: bool) {
    let mut c = Cluster::new(3);
    let links = Links::new(&mut c);
    c.start_all();
    let mut acked = BTreeMap::new();
    let mut last = 0;
    for i in 0..20 {
        put(&c, &mut acked, &mut last, format!("before{i}"));
    }
    let old = c.leader();
    let others: Vec<NodeId> = c.ids.iter().copied().filter(|&id| id != old).collect();
    let held: Vec<&Proxy> = others
        .iter()
        .map(|&x| {
            if into_leader {
                links.link(x, old)
            } else {
                links.link(old, x)
            }
        })
        .collect();
    for proxy in &held {
        // Only the dialer's direction carries Raft's messages; the other carries the Welcome.
        proxy.hold(Direction::ToServer, true);
    }
    // The old leader steps down (it hears no quorum, or hears a newer leader) and another
    // leads: the held side can neither vote for it nor hear it.
    eventually("another leader", || {
        role(&c, old) != Role::Leader && others.iter().any(|&x| role(&c, x) == Role::Leader)
    });
    for i in 0..20 {
        put(&c, &mut acked, &mut last, format!("during{i}"));
    }
    assert_ne!(
        c.leader(),
        old,
        "the partitioned leader came back while held"
    );
    for proxy in &held {
        proxy.hold(Direction::ToServer, false);
    }
    for i in 0..20 {
        put(&c, &mut acked, &mut last, format!("after{i}"));
    }
    converged(&c, &acked, last);
}

#[test]
fn a_leader_that_hears_nothing_is_replaced_and_catches_up_after_healing() {
    asymmetric_partition(true);
}

#[test]
fn a_leader_that_cannot_send_is_replaced_and_catches_up_after_healing() {
    asymmetric_partition(false);
}

#[test]
fn a_node_whose_connections_are_refused_is_reported_and_catches_up_once_they_are_not() {
    let mut c = Cluster::new(3);
    let links = Links::new(&mut c);
    c.start_all();
    let mut acked = BTreeMap::new();
    let mut last = 0;
    put(&c, &mut acked, &mut last, "first".to_owned());
    let leader = c.leader();
    let cut_off = c
        .ids
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    // Nothing reaches it: open connections are cut and new ones closed at once.
    let into: Vec<&Proxy> = c
        .ids
        .iter()
        .filter(|&&id| id != cut_off)
        .map(|&id| links.link(id, cut_off))
        .collect();
    for proxy in &into {
        proxy.block(true);
        proxy.cut_all();
    }
    for i in 0..20 {
        put(&c, &mut acked, &mut last, format!("k{i}"));
    }
    // The leader's writer fails to connect, and keeps trying (with a growing wait).
    let failures = || {
        c.nodes[&leader]
            .transport
            .metrics()
            .lanes
            .get(&(cut_off, Lane::Control))
            .map_or(0, |m| m.connect_failures)
    };
    eventually("two failed connects to the cut-off node", || {
        failures() >= 2
    });
    assert!(into.iter().map(|p| p.stats().blocked).sum::<u64>() >= 2);
    assert_eq!(c.leader(), leader, "two nodes keep the leader");
    for proxy in &into {
        proxy.block(false);
    }
    put(&c, &mut acked, &mut last, "after".to_owned());
    converged(&c, &acked, last);
}

/// A stranger's connection straight to a node.
struct Stranger {
    runtime: tokio::runtime::Runtime,
    stream: TcpStream,
}

impl Stranger {
    fn connect(addr: std::net::SocketAddr) -> Stranger {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stream = runtime.block_on(TcpStream::connect(addr)).expect("connect");
        Stranger { runtime, stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        // The node may have closed already (a refusal at the first bad byte).
        let _ = self.runtime.block_on(self.stream.write_all(bytes));
    }

    fn hello(&mut self, hello: &Hello) {
        let mut out = BytesMut::new();
        encode(hello, &mut out);
        self.send(&out);
    }

    /// Says hello as node `from` of this cluster and expects to be welcomed.
    fn welcomed(&mut self, from: NodeId, to: NodeId) {
        self.hello(&valid_hello(from, to));
        let welcome = self.welcome();
        assert!(welcome.accepted, "{welcome:?}");
    }

    /// Reads the node's one handshake frame.
    fn welcome(&mut self) -> Welcome {
        let mut buffer = BytesMut::new();
        self.runtime.block_on(async {
            loop {
                if let Some(body) = split_frame(&mut buffer, 4096).expect("a Welcome-sized frame") {
                    return decode_handshake::<Welcome>(body).expect("a Welcome");
                }
                let read = tokio::time::timeout(WAIT, self.stream.read_buf(&mut buffer))
                    .await
                    .expect("a Welcome in time")
                    .expect("read");
                assert!(read > 0, "closed without a Welcome");
            }
        })
    }

    /// Closes its sending side, then expects the node to close the connection (with or without
    /// a last frame).
    fn closed(mut self) {
        self.runtime.block_on(async {
            let _ = self.stream.shutdown().await;
            let mut buffer = [0u8; 4096];
            loop {
                match tokio::time::timeout(WAIT, self.stream.read(&mut buffer))
                    .await
                    .expect("the node closes the connection in time")
                {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
}

fn valid_hello(from: NodeId, to: NodeId) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        cluster_id: CLUSTER,
        from,
        to,
        lane: Lane::Control as i32,
    }
}

/// Waits until `count` of node `id`'s metrics is `want`.
fn counted(c: &Cluster, id: NodeId, what: &str, count: fn(&Metrics) -> u64, want: u64) {
    eventually(what, || count(&c.nodes[&id].transport.metrics()) >= want);
    let got = count(&c.nodes[&id].transport.metrics());
    assert_eq!(got, want, "{what}: counted once");
}

#[test]
fn garbage_oversized_frames_and_wrong_handshakes_are_refused_and_the_cluster_carries_on() {
    let mut c = Cluster::new(3);
    c.start_all();
    c.put("first", "1");
    let target = c.leader();
    let addr = c.addrs[&target];
    let peer = c
        .ids
        .iter()
        .copied()
        .find(|&id| id != target)
        .expect("a peer");
    let refused = |m: &Metrics| m.refused;
    let bad_frames = |m: &Metrics| m.bad_frames;
    let mut refusals = 0;
    let mut bad = 0;

    // (a) Random bytes instead of a Hello.
    let mut random = Random(0xbad_5eed);
    let garbage: Vec<u8> = (0..1000).map(|_| random.below(256) as u8).collect();
    let mut s = Stranger::connect(addr);
    s.send(&garbage);
    s.closed();
    refusals += 1;
    counted(&c, target, "random bytes refused", refused, refusals);
    c.put("after-random-bytes", "1");

    // (b) A length prefix over the limits: first instead of a Hello, then after one.
    let mut oversized = BytesMut::new();
    oversized.put_u32_le(u32::try_from(FRAME_BYTES_MAX + 1).expect("16 MiB fits"));
    let mut s = Stranger::connect(addr);
    s.send(&oversized);
    s.closed();
    refusals += 1;
    counted(&c, target, "an oversized Hello refused", refused, refusals);
    let mut s = Stranger::connect(addr);
    s.welcomed(peer, target);
    s.send(&oversized);
    s.closed();
    bad += 1;
    counted(&c, target, "an oversized frame closed", bad_frames, bad);
    c.put("after-oversized", "1");

    // (c) Another cluster.
    let mut s = Stranger::connect(addr);
    s.hello(&Hello {
        cluster_id: CLUSTER + 1,
        ..valid_hello(peer, target)
    });
    let welcome = s.welcome();
    assert!(!welcome.accepted);
    assert!(welcome.reason.contains("cluster"), "{}", welcome.reason);
    s.closed();
    refusals += 1;
    counted(&c, target, "another cluster refused", refused, refusals);
    c.put("after-other-cluster", "1");

    // (d) An unknown node; and, while at it, another version and another recipient.
    for (hello, reason) in [
        (valid_hello(99, target), "not a known peer"),
        (
            Hello {
                version: PROTOCOL_VERSION + 1,
                ..valid_hello(peer, target)
            },
            "protocol version",
        ),
        (valid_hello(peer, 99), "meant for node 99"),
    ] {
        let mut s = Stranger::connect(addr);
        s.hello(&hello);
        let welcome = s.welcome();
        assert!(!welcome.accepted);
        assert!(welcome.reason.contains(reason), "{}", welcome.reason);
        s.closed();
        refusals += 1;
        counted(&c, target, reason, refused, refusals);
    }
    c.put("after-unknown-node", "1");

    // (e) A welcomed peer sends a frame that does not decode.
    // Field 1 with wire type 7, which does not exist.
    let undecodable: &'static [u8] = &[0x0f];
    assert!(decode_message(bytes::Bytes::from_static(undecodable)).is_err());
    let mut frame = BytesMut::new();
    frame.put_u32_le(1);
    frame.extend_from_slice(undecodable);
    let mut s = Stranger::connect(addr);
    s.welcomed(peer, target);
    s.send(&frame);
    s.closed();
    bad += 1;
    counted(&c, target, "an undecodable frame closed", bad_frames, bad);
    c.put("after-undecodable", "1");

    // (f) A welcomed peer sends a message from another node.
    let other = c
        .ids
        .iter()
        .copied()
        .find(|&id| id != target && id != peer)
        .expect("a third node");
    let mut frame = BytesMut::new();
    encode(
        &Message {
            msg_type: MessageType::Heartbeat as i32,
            from: other,
            to: target,
            term: 1,
            ..Message::default()
        },
        &mut frame,
    );
    let mut s = Stranger::connect(addr);
    s.welcomed(peer, target);
    s.send(&frame);
    s.closed();
    bad += 1;
    counted(&c, target, "a spoofed sender closed", bad_frames, bad);

    // None of it reached Raft: the cluster commits, with the same leader.
    let mut last = c.put("last", "1");
    last = last.max(c.put("after-all", "1"));
    assert_eq!(c.leader(), target);
    for &id in &c.ids {
        c.wait_applied(id, last);
        assert_eq!(c.get(id, "after-undecodable").as_deref(), Some("1"));
    }
}
