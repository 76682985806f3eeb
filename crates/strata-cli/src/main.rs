//! `strata`: the Strata database server, and inspection and stress tools for every layer.
//!
//! `strata server` runs one member (etcd's flags), `strata dev` a local 3-member cluster,
//! `strata kv` is a client of the seed's Kvdb service. One subcommand group per layer; each
//! calls the layer's public API and holds no logic a library user would need:
//! `strata snaplog dump|compact|demo` and
//! `strata wal dump|stress`, `strata sst dump|check`, `strata lsm put|get|delete|scan|stats|stress|demo`,
//! `strata snapshot show|check|stress|restore`, `strata completions SHELL`.
//!
//! Output is for people by default and JSON with `--json` (`-w json|table|simple` for `kv`,
//! as etcdctl); commands that read never create anything; long work shows progress on a
//! terminal. Errors go to stderr as `strata: error: ...`; the exit codes are [`EXIT_FAILURE`]
//! and clap's 2 for a usage error; a closed stdout ends a command quietly with 0. A signal that
//! ends the process says so on stderr first (`fatal.rs`).

mod fatal;
mod kv;
mod lsm;
mod output;
mod progress;
mod server;
mod snaplog;
mod snapshot;
mod sst;
mod stress;
mod thp;
mod wal;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc rather than glibc's malloc: the server allocates per request and per watch event,
/// and glibc's allocator took about 15% of a loaded member's CPU (perf, `bench watch`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit code of a command that failed: a missing store or file, a key not found, damage
/// found by a check, a server that refused. (A usage error exits with clap's 2.)
const EXIT_FAILURE: i32 = 1;

/// `strata --version`: the version, then the API and the formats this build reads and writes.
fn long_version() -> String {
    let sstable = strata_sstable::FORMAT_VERSION;
    let wal = strata_wal::format::FORMAT_VERSION;
    let wal_min = strata_wal::format::FORMAT_VERSION_MIN;
    format!(
        "{version}
API: etcd v3 (gRPC, as etcd {etcd}), the Kvdb service
formats (described byte by byte in docs/formats/):
  sorted tables        writes v{sstable}, reads v1-v{sstable}
  write-ahead logs     writes v{wal}, reads v{wal_min}-v{wal} (LSM WAL and manifest, Raft log)
  LSM snapshot sets    v1
  Raft transport       protocol v{transport}
  server snapshots     etcdctl snapshot save files written by Strata
  snapshot logs        Serf 0.9's snapshot file (reads and writes it unchanged)",
        version = env!("CARGO_PKG_VERSION"),
        etcd = strata_server::server::ETCD_VERSION,
        transport = strata_transport::PROTOCOL_VERSION,
    )
}

/// Strata: a Raft-replicated key-value database speaking etcd's v3 API, and tools for every
/// layer of its storage stack.
#[derive(Debug, Parser)]
#[command(
    name = "strata",
    version,
    long_version = long_version(),
    about,
    after_help = "Examples:
  strata dev                                  # a local 3-member cluster; etcdctl works against it
  strata lsm put --create --dir /tmp/s k v    # make a store and set a key
  strata lsm scan --dir /tmp/s | head         # its keys, a page at a time
  strata completions bash > /etc/bash_completion.d/strata

Exit codes: 0 success, 1 failure (the message says why), 2 usage error."
)]
struct Cli {
    /// No progress output (results and errors are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one member of a cluster; takes etcd's flags (`etcd --help`) with etcd's defaults.
    #[command(
        args_override_self = true,
        after_help = "Example (a one-member cluster on etcd's default ports):
  strata server --name s1 --data-dir /var/lib/strata"
    )]
    Server(Box<strata_server::config::ServerArgs>),
    /// Run a local 3-member cluster (client ports 2379, 22379, 32379) until Ctrl-C.
    #[command(after_help = "Examples:
  strata dev                          # data in a temporary directory, removed at exit
  strata dev --data-dir ./dev-data    # kept, and reused by the next run")]
    Dev(server::DevArgs),
    /// A client of the seed's Kvdb service: register, put, get, delete.
    Kv(kv::KvArgs),
    /// Serf-compatible snapshot logs: dump, compact, demo.
    #[command(subcommand)]
    Snaplog(snaplog::SnaplogCommand),
    /// The LSM store: put, get, delete, scan, stats, stress, demo.
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
    /// Print a shell completion script for `strata` (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  strata completions bash > ~/.local/share/bash-completion/completions/strata
  strata completions zsh > ~/.zfunc/_strata
  strata completions fish > ~/.config/fish/completions/strata.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "strata", &mut script);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)?;
    Ok(())
}

fn main() {
    thp::disable_unless_allowed();
    fatal::install();
    let cli = Cli::parse();
    progress::set_quiet(cli.quiet);
    let result = match cli.command {
        Command::Server(args) => server::server(*args),
        Command::Dev(args) => server::dev(args),
        Command::Kv(command) => kv::run(command),
        Command::Snaplog(command) => snaplog::run(command),
        Command::Lsm(command) => lsm::run(command),
        Command::Snapshot(command) => snapshot::run(command),
        Command::Sst(command) => sst::run(command),
        Command::Wal(command) => wal::run(command),
        Command::Completions { shell } => completions(shell),
    };
    if let Err(e) = result {
        if output::is_broken_pipe(&e) {
            // `strata ... | head`: the reader has what it wanted.
            return;
        }
        eprintln!("strata: error: {e:#}");
        std::process::exit(EXIT_FAILURE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf subcommand, with its path (`lsm scan`).
    fn leaves(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let subcommands: Vec<_> = command
            .get_subcommands()
            .filter(|c| c.get_name() != "help")
            .collect();
        if subcommands.is_empty() {
            out.push((path.trim().to_owned(), command.clone()));
        }
        for sub in subcommands {
            leaves(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_subcommand_help_has_an_example() {
        let mut all = Vec::new();
        leaves(&Cli::command(), "", &mut all);
        assert!(all.len() > 20, "found only {} subcommands", all.len());
        for (path, command) in all {
            let help = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("Example") && help.contains("strata "),
                "`strata {path} --help` has no example"
            );
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
