//! `strata server` (one member, etcd's flags) and `strata dev` (a local 3-member cluster).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use strata_server::Server;
use strata_server::config::{LogLevel, ServerArgs, ServerConfig, dev_members};
use tracing_subscriber::filter::LevelFilter;

use crate::output::outln;
use crate::progress::Progress;

/// `strata dev`'s flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the members keep their data (`infra1`, `infra2`, `infra3` under it); a temporary
    /// directory, removed at exit, if not given.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The least severe level of the members' log on stderr (their lines are not told apart:
    /// run `strata server` per member for that).
    #[arg(long, value_enum, default_value_t = LogLevel::Warn)]
    pub log_level: LogLevel,
}

/// The multi-threaded runtime, with `workers` worker threads (Tokio's default, one per core
/// or `TOKIO_WORKER_THREADS`, when `None`).
fn runtime(workers: Option<std::num::NonZeroUsize>) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers.get());
    }
    builder
        .enable_all()
        .build()
        .context("start the Tokio runtime")
}

/// Writes tracing events at `level` and above to stderr, timestamped, as etcd logs: role and
/// leader changes, snapshot restores, compactions, the quota alarm, links to peers breaking.
/// A second call in one process keeps the first's.
fn init_log(level: LogLevel) {
    let filter = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Waits for Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `strata server`: runs one member until Ctrl-C or SIGTERM.
pub fn server(args: ServerArgs) -> Result<()> {
    init_log(args.log_level);
    let workers = args.worker_threads;
    let config = ServerConfig::from_args(args)?;
    runtime(workers)?.block_on(async move {
        let name = config.name.clone();
        let server = Server::start(config)
            .await
            .with_context(|| format!("start member {name}"))?;
        eprintln!(
            "strata: member {name} ({:x}) serving clients on {}",
            server.id(),
            join(server.client_addrs())
        );
        tokio::select! {
            () = stopped() => {
                eprintln!("strata: member {name} stopping");
                server.shutdown().await;
                Ok(())
            }
            failure = server.failed() => {
                server.shutdown().await;
                anyhow::bail!("member {name} stopped: {failure}")
            }
        }
    })
}

/// Writes `contents` to a new file readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `strata dev`: three members in this process, on etcd's development ports.
pub fn dev(args: DevArgs) -> Result<()> {
    init_log(args.log_level);
    let (base, _temp) = match args.data_dir {
        Some(dir) => (dir, None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("strata-dev-")
                .tempdir()
                .context("make a temporary data directory")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    // The Kvdb service's token: random per cluster, in a file only this user reads.
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let token_file = base.join("kvdb-token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_owned(),
        _ => {
            let token = format!("{:032x}", rand::random::<u128>());
            write_private(&token_file, &token)?;
            token
        }
    };
    let configs = dev_members(&base)
        .into_iter()
        .map(|mut args| {
            args.kvdb_token_file = Some(token_file.clone());
            ServerConfig::from_args(args)
        })
        .collect::<Result<Vec<_>, _>>()?;
    runtime(None)?.block_on(async move {
        let mut servers = Vec::new();
        let mut endpoints = Vec::new();
        let members = configs.len();
        let progress = Progress::new("dev", Some(members as u64), "members");
        for config in configs {
            endpoints.extend(config.advertise_client_urls.clone());
            let name = config.name.clone();
            progress.set_message(format!("starting member {name}"));
            servers.push(
                Server::start(config)
                    .await
                    .with_context(|| format!("start member {name}"))?,
            );
            progress.inc(1);
        }
        progress.finish();
        let endpoints = endpoints.join(",");
        // The cluster runs on if stdout is gone (a closed pipe): the summary is a courtesy.
        let _ = (|| -> Result<()> {
            outln!("strata dev: {members} members, data in {}", base.display())?;
            outln!("  endpoints: {endpoints}")?;
            outln!("  try:       etcdctl --endpoints={endpoints} put greeting hello")?;
            outln!("             etcdctl --endpoints={endpoints} get greeting -w json")?;
            outln!("             etcdctl --endpoints={endpoints} member list -w table")?;
            outln!("  Kvdb:      strata kv register --token {token}")?;
            outln!("  Ctrl-C stops the cluster.")?;
            Ok(())
        })();
        let mut failures = tokio::task::JoinSet::new();
        for server in &servers {
            failures.spawn(server.failed());
        }
        let failure = tokio::select! {
            () = stopped() => None,
            Some(Ok(failure)) = failures.join_next() => Some(failure),
        };
        // A closed stdout must not keep the cluster from stopping cleanly.
        let _ = outln!("strata dev: stopping");
        for server in servers {
            server.shutdown().await;
        }
        match failure {
            Some(failure) => anyhow::bail!("a member stopped: {failure}"),
            None => Ok(()),
        }
    })
}
