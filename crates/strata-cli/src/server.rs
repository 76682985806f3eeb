//! `strata server` (one member, etcd's flags) and `strata dev` (a local 3-member cluster).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use strata_server::Server;
use strata_server::config::{
    LogLevel, LogOutput, Logger, ServerArgs, ServerConfig, dev_members, parse_log_outputs,
};
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

/// Writes tracing events at `level` and above, timestamped, as etcd logs them: role and leader
/// changes, snapshot restores, compactions, the quota alarm, links to peers breaking. Text
/// lines (`--logger capnslog`) or JSON objects (`--logger zap`), to every `--log-outputs`
/// target. A second call in one process keeps the first's.
///
/// # Errors
///
/// A log file that cannot be opened for appending.
fn init_log(level: LogLevel, logger: Logger, outputs: &[LogOutput]) -> Result<()> {
    let filter = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    };
    let mut targets = Vec::new();
    for output in outputs {
        targets.push(match output {
            LogOutput::Stderr => Target::Stderr,
            LogOutput::Stdout => Target::Stdout,
            LogOutput::File(path) => Target::File(parking_lot::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("--log-outputs: open {}", path.display()))?,
            )),
        });
    }
    let writer = Tee(std::sync::Arc::new(targets));
    let builder = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(writer);
    let _ = match logger {
        Logger::Capnslog => builder.try_init(),
        Logger::Zap => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    Ok(())
}

/// A `--log-outputs` target.
enum Target {
    Stderr,
    Stdout,
    File(parking_lot::Mutex<std::fs::File>),
}

/// Every target, each event written to each in one `write` (lines from several threads do not
/// interleave).
#[derive(Clone)]
struct Tee(std::sync::Arc<Vec<Target>>);

/// One event's bytes, written to every target when the event is done.
struct Event<'a> {
    targets: &'a [Target],
    bytes: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Tee {
    type Writer = Event<'a>;

    fn make_writer(&'a self) -> Event<'a> {
        Event {
            targets: &self.0,
            bytes: Vec::new(),
        }
    }
}

impl std::io::Write for Event<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Event<'_> {
    fn drop(&mut self) {
        use std::io::Write;
        // A log write that fails has nowhere to be reported: it is dropped, as a full disk
        // must not stop the member through its log.
        for target in self.targets {
            let _ = match target {
                Target::Stderr => std::io::stderr().lock().write_all(&self.bytes),
                Target::Stdout => std::io::stdout().lock().write_all(&self.bytes),
                Target::File(file) => file.lock().write_all(&self.bytes),
            };
        }
    }
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
    // etcd's rule: with a configuration file, every other flag and ETCD_* variable is ignored.
    let (args, notes) = match &args.config_file {
        None => (args, Vec::new()),
        Some(path) => {
            let others = ServerArgs {
                config_file: None,
                ..args.clone()
            } != ServerArgs::default();
            let (from_file, mut notes) = ServerArgs::from_config_file(path)?;
            if others {
                notes.push(format!(
                    "--config-file {}: the other flags and ETCD_* variables given are ignored",
                    path.display()
                ));
            }
            (from_file, notes)
        }
    };
    let outputs = parse_log_outputs(&args.log_outputs)?;
    init_log(args.log_level_in_effect(), args.logger, &outputs)?;
    for note in notes.iter().chain(&args.ignored.notes()) {
        tracing::warn!("{note}");
    }
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
    init_log(args.log_level, Logger::Capnslog, &[LogOutput::Stderr])?;
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
