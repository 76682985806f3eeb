//! `strata`: the Strata database server, and inspection and stress tools for every layer.
//!
//! `strata server` runs one member (etcd's flags), `strata dev` a local 3-member cluster,
//! `strata kv` is a client of the seed's Kvdb service. One subcommand group per layer; each
//! calls the layer's public API and holds no logic a library user would need:
//! `strata snaplog dump|compact|demo` and
//! `strata wal dump|stress`, `strata sst dump|check`, `strata lsm put|get|delete|scan|stats|stress|demo`,
//! `strata snapshot show|check|stress|restore`.
//!
//! Errors go to stderr as `strata: error: ...` with exit code 1.

mod kv;
mod lsm;
mod server;
mod snaplog;
mod snapshot;
mod sst;
mod stress;
mod wal;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the server allocates per request and per watch event,
/// and glibc's allocator took about 15% of a loaded member's CPU (perf, `bench watch`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Strata: a Raft-replicated key-value database speaking etcd's v3 API, and tools for every
/// layer of its storage stack.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one member of a cluster; takes etcd's flags (`etcd --help`) with etcd's defaults.
    #[command(args_override_self = true)]
    Server(Box<strata_server::config::ServerArgs>),
    /// Run a local 3-member cluster (client ports 2379, 22379, 32379) until Ctrl-C.
    Dev(server::DevArgs),
    /// A client of the seed's Kvdb service: register, put, get, delete.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Serf-compatible snapshot logs: dump, compact, demo.
    #[command(subcommand)]
    Snaplog(snaplog::SnaplogCommand),
    /// The LSM store: put, get, delete, stats, stress.
    #[command(subcommand)]
    Lsm(lsm::LsmCommand),
    /// Raft snapshots (exported, or in a node's store): show, check, stress; restore a server
    /// snapshot file into a new member's data dir.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Sorted table files: dump, check.
    #[command(subcommand)]
    Sst(sst::SstCommand),
    /// Write-ahead logs: dump, stress.
    #[command(subcommand)]
    Wal(wal::WalCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server::server(*args),
        Command::Dev(args) => server::dev(args),
        Command::Kv(command) => kv::run(command),
        Command::Snaplog(command) => snaplog::run(command),
        Command::Lsm(command) => lsm::run(command),
        Command::Snapshot(command) => snapshot::run(command),
        Command::Sst(command) => sst::run(command),
        Command::Wal(command) => wal::run(command),
    };
    if let Err(e) = result {
        eprintln!("strata: error: {e:#}");
        std::process::exit(1);
    }
}
