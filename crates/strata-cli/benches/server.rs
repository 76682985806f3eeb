//! `cargo xtask bench server`: put throughput of a 3-member cluster of `strata server`
//! processes on this machine, driven by the etcd-client crate (etcdctl check perf's request
//! shape: 256-byte keys, 1 KiB values), and the same load against a 3-member etcd when `etcd`
//! is installed, in the same run.
//!
//! Prints `BENCH server_put <ops/s>`, latency percentiles, and `RATIO server_put_vs_etcd`
//! (above 1: Strata ahead). Flags: `--clients N` (default 64), `--seconds S` (default 10),
//! `--rounds R` (default 1; medians reported).

#[path = "../tests/support/cluster.rs"]
mod cluster;

use bench_support::{Args, closed_loop, median, print_bench, print_ratio};
use cluster::{Cluster, client, wait_ready};

/// One round against the cluster `program` starts: (ops/s, p50 µs, p99 µs).
fn round(program: &[&str], clients: usize, seconds: f64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_program(program, dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load = runtime.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        // One connection per endpoint, shared by the clients on it (etcd-client multiplexes
        // requests over HTTP/2, as etcdctl check perf does).
        let mut connections = Vec::new();
        for e in &endpoints {
            connections.push(client(std::slice::from_ref(e)).await);
        }
        let value = vec![b'v'; 1024];
        closed_loop(clients, seconds, move |client, step| {
            let mut c = connections[client % connections.len()].clone();
            let value = value.clone();
            async move {
                let mut key = vec![0u8; 256];
                key[..8].copy_from_slice(&(client as u64).to_be_bytes());
                key[8..16].copy_from_slice(&step.to_be_bytes());
                c.put(key, value, None).await.is_ok()
            }
        })
        .await
    });
    drop(cluster);
    (
        load.per_s(),
        load.percentile_us(0.5),
        load.percentile_us(0.99),
    )
}

fn main() {
    let args = Args::from_env();
    let clients = args.value_or("--clients", 64usize);
    let seconds = args.value_or("--seconds", 10.0f64);
    let rounds = args.value_or("--rounds", 1usize);
    let etcd = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut strata = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..rounds {
        strata.push(round(
            &[env!("CARGO_BIN_EXE_strata"), "server"],
            clients,
            seconds,
        ));
        if etcd {
            theirs.push(round(&["etcd"], clients, seconds));
        }
    }
    let ops = median(strata.iter().map(|r| r.0));
    print_bench("server_put", ops, "ops/s");
    print_bench("server_put_p50", median(strata.iter().map(|r| r.1)), "us");
    print_bench("server_put_p99", median(strata.iter().map(|r| r.2)), "us");
    if etcd {
        let their_ops = median(theirs.iter().map(|r| r.0));
        print_bench("etcd_put", their_ops, "ops/s");
        print_bench("etcd_put_p50", median(theirs.iter().map(|r| r.1)), "us");
        print_bench("etcd_put_p99", median(theirs.iter().map(|r| r.2)), "us");
        print_ratio("server_put_vs_etcd", ops / their_ops);
    } else {
        println!("etcd is not installed: no comparison (apt-get install etcd-server)");
    }
}
