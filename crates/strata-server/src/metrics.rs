//! Counters the server keeps, and the Prometheus text `/metrics` serves (with etcd's metric
//! names where etcd has one, so dashboards and `etcdctl check datascale` read them).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::server::Inner;

/// A counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests served, per KV method.
#[derive(Debug, Default)]
pub struct Requests {
    /// Range.
    pub range: Counter,
    /// Put.
    pub put: Counter,
    /// DeleteRange.
    pub delete_range: Counter,
    /// Txn.
    pub txn: Counter,
    /// Compact.
    pub compact: Counter,
    /// Kvdb get, put, delete and register.
    pub kvdb: Counter,
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests this member proposed to Raft (or forwarded to the leader).
    pub proposals: Counter,
    /// Requests by method.
    pub requests: Requests,
    /// Requests that took longer than `--experimental-warning-apply-duration` to apply
    /// (counted by the state machine).
    pub slow_applies: Arc<Counter>,
}

/// The resident memory of this process, from `/proc/self/statm` (0 where there is none).
fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0);
    pages * 4096
}

/// The Prometheus text of every metric.
pub fn render(inner: &Inner) -> String {
    let status = inner.status();
    let stats = inner.db.stats();
    let size = crate::maintenance::db_size_bytes(inner);
    let transport = inner.transport.metrics();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "etcd_server_has_leader",
        "Whether a leader exists (1) or not (0).",
        f64::from(u8::from(status.leader != 0)),
    );
    gauge(
        "etcd_server_is_leader",
        "Whether this member leads.",
        f64::from(u8::from(status.leader == inner.id)),
    );
    gauge(
        "etcd_server_is_learner",
        "Whether this member is a learner.",
        f64::from(u8::from(inner.is_learner())),
    );
    gauge(
        "etcd_server_proposals_committed_total",
        "The Raft commit index.",
        status.commit as f64,
    );
    gauge(
        "etcd_server_proposals_applied_total",
        "The index applied.",
        *inner.node.applied().borrow() as f64,
    );
    gauge("etcd_server_term", "The Raft term.", status.term as f64);
    gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Bytes of the LSM's tables.",
        size as f64,
    );
    gauge(
        "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Bytes of the LSM's tables.",
        size as f64,
    );
    gauge(
        "etcd_debugging_mvcc_current_revision",
        "The current revision.",
        inner.store.current_revision() as f64,
    );
    gauge(
        "etcd_debugging_mvcc_compact_revision",
        "The last compacted revision.",
        inner.store.compacted_revision() as f64,
    );
    gauge(
        "etcd_server_quota_backend_bytes",
        "The quota.",
        inner.config.quota_backend_bytes.unwrap_or(0) as f64,
    );
    gauge(
        "process_resident_memory_bytes",
        "Resident memory.",
        resident_bytes() as f64,
    );
    gauge(
        "strata_server_proposals_total",
        "Requests proposed or forwarded.",
        inner.metrics.proposals.get() as f64,
    );
    let _ = writeln!(
        out,
        "# HELP etcd_server_slow_apply_total Requests that took more than 100 ms to apply.\n\
         # TYPE etcd_server_slow_apply_total counter\n\
         etcd_server_slow_apply_total {}",
        inner.metrics.slow_applies.get()
    );
    for (method, counter) in [
        ("Range", &inner.metrics.requests.range),
        ("Put", &inner.metrics.requests.put),
        ("DeleteRange", &inner.metrics.requests.delete_range),
        ("Txn", &inner.metrics.requests.txn),
        ("Compact", &inner.metrics.requests.compact),
        ("Kvdb", &inner.metrics.requests.kvdb),
    ] {
        let _ = writeln!(
            out,
            "strata_grpc_requests_total{{method=\"{method}\"}} {}",
            counter.get()
        );
    }
    let _ = writeln!(out, "strata_lsm_wal_bytes_total {}", stats.wal_bytes);
    let _ = writeln!(out, "strata_lsm_flush_bytes_total {}", stats.flush_bytes);
    let _ = writeln!(
        out,
        "strata_lsm_compaction_written_bytes_total {}",
        stats.compaction_written_bytes
    );
    let _ = writeln!(
        out,
        "strata_lsm_trivial_moves_total {}",
        stats.trivial_moves
    );
    let _ = writeln!(
        out,
        "strata_lsm_write_stall_micros_total {}",
        stats.stall_micros
    );
    let _ = writeln!(
        out,
        "strata_lsm_no_space_retries_total {}",
        stats.no_space_retries
    );
    let _ = writeln!(
        out,
        "strata_lsm_compaction_no_space {}",
        u8::from(stats.compaction_no_space.is_some())
    );
    let _ = writeln!(out, "strata_lsm_memtable_bytes {}", stats.memtable_bytes);
    let _ = writeln!(
        out,
        "strata_lsm_block_cache_hits_total {}",
        stats.cache_hits
    );
    let _ = writeln!(
        out,
        "strata_lsm_block_cache_misses_total {}",
        stats.cache_misses
    );
    for (level, l) in stats.levels.iter().enumerate() {
        let _ = writeln!(
            out,
            "strata_lsm_level_bytes{{level=\"{level}\"}} {}",
            l.bytes
        );
        let _ = writeln!(
            out,
            "strata_lsm_level_tables{{level=\"{level}\"}} {}",
            l.tables
        );
    }
    let _ = writeln!(out, "strata_transport_refused_total {}", transport.refused);
    let _ = writeln!(
        out,
        "strata_transport_bad_frames_total {}",
        transport.bad_frames
    );
    // What `--strict-reconfig-check` asks: whether this member has heard from each peer
    // within an election timeout (a leader hears from every follower, a follower only from
    // its leader).
    let now = std::time::Instant::now();
    let peers: Vec<u64> = inner.shared.0.read().members.keys().copied().collect();
    for peer in peers.into_iter().filter(|&p| p != inner.id) {
        let active = inner.peer_activity.active_since(peer, now).is_some();
        let _ = writeln!(
            out,
            "strata_raft_peer_active{{peer=\"{peer:x}\"}} {}",
            u8::from(active)
        );
    }
    for ((peer, lane), lane_metrics) in &transport.lanes {
        let _ = writeln!(
            out,
            "strata_transport_frames_sent_total{{peer=\"{peer:x}\",lane=\"{lane:?}\"}} {}",
            lane_metrics.frames_sent
        );
        let _ = writeln!(
            out,
            "strata_transport_dropped_total{{peer=\"{peer:x}\",lane=\"{lane:?}\"}} {}",
            lane_metrics.dropped
        );
    }
    out
}
