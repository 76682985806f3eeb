//! `strata`: inspection and stress tools for every Strata layer.
//!
//! One subcommand group per layer; each calls the layer's public API and holds no logic a
//! library user would need. Today: `strata snaplog dump|compact|demo` and
//! `strata wal dump|stress`, `strata sst dump|check`, `strata lsm put|get|delete|scan|stats|stress|demo`,
//! `strata snapshot show|check|stress`.
//!
//! Errors go to stderr as `strata: error: ...` with exit code 1.

mod lsm;
mod snaplog;
mod snapshot;
mod sst;
mod stress;
mod wal;

use clap::{Parser, Subcommand};

/// Strata: inspection and stress tools for every layer of the Strata storage stack.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serf-compatible snapshot logs: dump, compact, demo.
    #[command(subcommand)]
    Snaplog(snaplog::SnaplogCommand),
    /// The LSM store: put, get, delete, stats, stress.
    #[command(subcommand)]
    Lsm(lsm::LsmCommand),
    /// Raft snapshots (exported, or in a node's store): show, check, stress.
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
