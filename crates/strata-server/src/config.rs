//! The server configuration: etcd's flags, their defaults and their checks.
//!
//! `strata server` takes etcd 3.4's flags with etcd's meaning and defaults, so one command
//! line starts either binary. [`ServerArgs`] is the command line as clap reads it (flag for
//! flag etcd's, plus `--kvdb-token-file`); [`ServerConfig::from_args`] checks it as etcd does
//! and turns it into typed settings, creating the data directory.
//!
//! Where Strata differs from etcd, it refuses a line etcd would accept only when etcd would
//! fail later or do something surely unintended, and says so in the item's docs. The flags
//! etcd has and Strata does not (`--discovery*`, `--experimental-enable-v2v3`, ...) are refused
//! by clap as unknown. Each flag can also come from etcd's environment variable
//! (`--initial-cluster-token` from `ETCD_INITIAL_CLUSTER_TOKEN`); a flag given on the command
//! line wins over its variable, where etcd would refuse to start.
//!
//! ```
//! use clap::Parser;
//! use strata_server::config::{ServerArgs, ServerConfig};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     server: ServerArgs,
//! }
//!
//! let dir = std::env::temp_dir().join(format!("strata-config-doc-{}", std::process::id()));
//! let cli = Cli::parse_from(["strata", "--name", "a", "--data-dir", dir.to_str().unwrap()]);
//! let config = ServerConfig::from_args(cli.server).unwrap();
//! assert_eq!(config.initial_cluster[0].peer_urls, ["http://localhost:2380"]);
//! assert_eq!(config.heartbeat_interval.as_millis(), 100);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod compaction;
mod data_dir;
mod dev;
mod error;
mod file;
mod grpc;
mod ids;
mod ignored;
mod lease;
mod log;
mod operation;
mod tls;
mod url;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use compaction::parse_go_duration_nanos;
pub use compaction::{AutoCompaction, AutoCompactionMode};
pub use dev::{DEV_CLUSTER_TOKEN, DEV_PORTS, dev_members};
pub use error::ConfigError;
pub use file::file_line;
pub use grpc::{GrpcArgs, GrpcSettings};
pub use ids::{added_member_id, cluster_id, member_id};
pub use ignored::IgnoredArgs;
pub use lease::LeaseArgs;
pub use log::{LogLevel, LogOutput, Logger, parse_log_outputs};
pub use operation::{MetricsLevel, OperationArgs, OperationSettings};
pub use tls::TlsArgs;
use tls::{TlsFlags, check_https_has_tls};
pub use url::{ListenUrl, Scheme, resolve_url, url_host_name};

pub use crate::auth::jwt::TokenKind;

/// `--name`'s default.
pub const DEFAULT_NAME: &str = "default";
/// The default client URL, listened on and advertised.
pub const DEFAULT_CLIENT_URL: &str = "http://localhost:2379";
/// The default peer URL, listened on and advertised.
pub const DEFAULT_PEER_URL: &str = "http://localhost:2380";
/// `--initial-cluster-token`'s default.
pub const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";
/// `--heartbeat-interval`'s default.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// `--election-timeout`'s default.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1_000;
/// etcd's ceiling on `--election-timeout`: longer, a dead leader stalls writes for minutes.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;
/// `--snapshot-count`'s default, also used for 0 as etcd does. Each committed entry past a
/// snapshot stays in the Raft log until the next one: more means a longer log to replay.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 100_000;
/// The quota that `--quota-backend-bytes 0` (the default) stands for: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// `--disk-reserve-bytes`' default (256 MiB): below this much free space on the data
/// directory's file system the member raises NOSPACE, keeping room for what it has already
/// taken (log entries in flight, a snapshot, a compaction's new tables) instead of meeting
/// `ENOSPC` halfway through one.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 256 * 1024 * 1024;
/// The quota etcd warns above (8 GiB): bigger stores make snapshots and restarts slow.
pub const QUOTA_BACKEND_BYTES_WARN: u64 = 8 * 1024 * 1024 * 1024;
/// `--max-request-bytes`'s default (1.5 MiB): a request's bytes are held in memory on every
/// member and written to every Raft log.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 1_572_864;
/// The request size etcd warns above (10 MiB): big entries stall heartbeats behind them.
pub const MAX_REQUEST_BYTES_WARN: u64 = 10 * 1024 * 1024;
/// `--max-txn-ops`'s default: every op of a transaction is applied in one Raft entry.
pub const DEFAULT_MAX_TXN_OPS: u64 = 128;
/// etcd's `--experimental-watch-progress-notify-interval` default: 10 minutes.
pub const DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_secs(600);

/// etcd's `--auth-token-ttl` default: 5 minutes.
pub const DEFAULT_AUTH_TOKEN_TTL_S: u64 = 300;
/// etcd's `--bcrypt-cost` default (bcrypt's own).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// The longest Kvdb token accepted (4 KiB): it is compared on every `register`.
pub const KVDB_TOKEN_BYTES_MAX: usize = 4 * 1024;

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a running cluster that this member was added to.
    Existing,
}

/// `strata server`'s command line: etcd 3.4's flags with etcd's defaults (see
/// [`ServerArgs::default`]), to be `#[command(flatten)]`ed into a command.
///
/// The flags whose default depends on others are `Option`s: `None` is "not given".
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServerArgs {
    /// etcd's YAML configuration file (keys are the flags' names): read instead of every other
    /// flag and `ETCD_*` variable, as etcd does ([`ServerArgs::from_config_file`]).
    #[arg(long, env = "ETCD_CONFIG_FILE", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = DEFAULT_NAME)]
    pub name: String,
    /// Path to the data directory [default: ${name}.etcd].
    #[arg(long, env = "ETCD_DATA_DIR", value_name = "DIR", value_parser = path_parser())]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic [default: http://localhost:2379].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", value_name = "URLS")]
    pub listen_client_urls: Option<String>,
    /// This member's client URLs to advertise [default: http://localhost:2379; required
    /// with --listen-client-urls].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", value_name = "URLS")]
    pub advertise_client_urls: Option<String>,
    /// URLs to listen on for the metrics and health endpoints alone (`/metrics`, `/health`,
    /// `/version`; no gRPC): a scrape port apart from clients. `https` ones use the client
    /// TLS flags.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_name = "URLS")]
    pub listen_metrics_urls: Option<String>,
    /// URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", value_name = "URLS", default_value = DEFAULT_PEER_URL)]
    pub listen_peer_urls: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_name = "URLS",
        default_value = DEFAULT_PEER_URL
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping, name=url,... [default:
    /// ${name}=each advertised peer URL].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER", value_name = "NAME=URL,...")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,
    /// Initial cluster token, which keeps separate clusters' ids apart.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = DEFAULT_CLUSTER_TOKEN)]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(
        long = "heartbeat-interval",
        env = "ETCD_HEARTBEAT_INTERVAL",
        value_name = "MS",
        default_value_t = DEFAULT_HEARTBEAT_INTERVAL_MS
    )]
    pub heartbeat_interval_ms: u64,
    /// Time (in milliseconds) for an election to time out.
    #[arg(
        long = "election-timeout",
        env = "ETCD_ELECTION_TIMEOUT",
        value_name = "MS",
        default_value_t = DEFAULT_ELECTION_TIMEOUT_MS
    )]
    pub election_timeout_ms: u64,
    /// Number of committed transactions to trigger a snapshot (0: the default).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = DEFAULT_SNAPSHOT_COUNT)]
    pub snapshot_count: u64,
    /// Raise the NOSPACE alarm when the store exceeds this (0: 2 GiB; negative: no quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,
    /// Raise the NOSPACE alarm when the data directory's file system has less than this
    /// free (0: never). Not an etcd flag: etcd meets a full disk with `ENOSPC` and stops.
    #[arg(long, env = "STRATA_DISK_RESERVE_BYTES", default_value_t = DEFAULT_DISK_RESERVE_BYTES)]
    pub disk_reserve_bytes: u64,
    /// Maximum client request size in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: u64,
    /// How --auto-compaction-retention is read.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        value_enum,
        default_value = "periodic"
    )]
    pub auto_compaction_mode: AutoCompactionMode,
    /// History to keep: periodic, a duration ("30m") or hours; revision, a count; 0: off.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,
    /// How often an idle watcher that asked for progress notifications gets one (a Go
    /// duration; 0 keeps the default).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        value_name = "DURATION",
        default_value = "10m"
    )]
    pub experimental_watch_progress_notify_interval: String,
    /// Before serving clients, compare the store's hash with every peer's at the same
    /// revision, and refuse to start if one differs.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub experimental_initial_corrupt_check: bool,
    /// Refuse member changes that could cost the cluster its quorum (etcd's default).
    #[arg(
        long,
        env = "ETCD_STRICT_RECONFIG_CHECK",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub strict_reconfig_check: bool,
    /// Unsafe: make this member the only one of its cluster, with everything its data holds
    /// (the way back for a cluster that lost its quorum for good; see docs/operators.md).
    #[arg(
        long,
        env = "ETCD_FORCE_NEW_CLUSTER",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub force_new_cluster: bool,
    /// Elections ask for pre-votes first, so that a member cut off from the others cannot
    /// depose the leader when it returns (etcd 3.5's default; 3.4's is false).
    #[arg(
        long,
        env = "ETCD_PRE_VOTE",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub pre_vote: bool,
    /// The client port's gRPC connections.
    #[command(flatten)]
    pub grpc: GrpcArgs,
    /// How the member runs: its Raft log's directory, its log and metrics.
    #[command(flatten)]
    pub operation: OperationArgs,
    /// Lease checkpoints.
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// etcd flags taken and ignored.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
    /// Origins whose browsers may read the client port's HTTP answers (CORS),
    /// comma-separated; empty or `*`: any.
    #[arg(long, env = "ETCD_CORS", value_name = "ORIGINS", default_value = "*")]
    pub cors: String,
    /// Host names the client port's plain-HTTP answers are given for (the `Host` a browser
    /// sends), comma-separated; empty or `*`: any. Against DNS rebinding (CVE-2018-5702).
    #[arg(
        long,
        env = "ETCD_HOST_WHITELIST",
        value_name = "HOSTS",
        default_value = "*"
    )]
    pub host_whitelist: String,
    /// How often the leader compares every member's store hash with its own, raising the
    /// CORRUPT alarm for one that differs (a Go duration; 0s: never).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        value_name = "DURATION",
        default_value = "0s"
    )]
    pub experimental_corrupt_check_time: String,
    /// Client and peer TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Authentication token type: "simple", or "jwt,sign-method=METHOD,priv-key=FILE,
    /// pub-key=FILE,ttl=DURATION" (etcd's; METHOD: RS256, ES256, HS256, ...).
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds an auth token lives after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = DEFAULT_AUTH_TOKEN_TTL_S)]
    pub auth_token_ttl: u64,
    /// bcrypt cost of the password hashes (4 to 31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = DEFAULT_BCRYPT_COST)]
    pub bcrypt_cost: u32,
    /// File holding the token Kvdb clients must present to register [default: none, and
    /// every register is refused].
    #[arg(long, env = "STRATA_KVDB_TOKEN_FILE", value_name = "FILE", value_parser = path_parser())]
    pub kvdb_token_file: Option<PathBuf>,
    /// The least severe level of the log written to stderr: debug, info, warn or error.
    #[arg(long, env = "ETCD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// The log's form: "zap" (one JSON object per line) or "capnslog" (text lines, etcd
    /// 3.4's default).
    #[arg(long, env = "ETCD_LOGGER", value_enum, default_value_t = Logger::Capnslog)]
    pub logger: Logger,
    /// Where the log goes, comma-separated: "default" or "stderr", "stdout", or file paths
    /// (appended to).
    #[arg(
        long,
        env = "ETCD_LOG_OUTPUTS",
        value_name = "TARGETS",
        default_value = "default"
    )]
    pub log_outputs: String,
    /// Threads that serve clients and peers (Tokio workers) [default: one per CPU core].
    /// Members that share a machine do better with their share of its cores: three on two
    /// cores, 1. Not an etcd flag: etcd's counterpart is the `GOMAXPROCS` variable. Read by
    /// `strata server`, which builds the runtime; the member itself does not use it.
    #[arg(long, env = "STRATA_WORKER_THREADS", value_name = "N")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
}

impl Default for ServerArgs {
    /// etcd 3.4's defaults, as `etcd --help` prints them; the same as parsing an empty
    /// command line with no `ETCD_*` variable set.
    fn default() -> Self {
        ServerArgs {
            config_file: None,
            name: DEFAULT_NAME.to_owned(),
            data_dir: None,
            listen_client_urls: None,
            listen_metrics_urls: None,
            advertise_client_urls: None,
            listen_peer_urls: DEFAULT_PEER_URL.to_owned(),
            initial_advertise_peer_urls: DEFAULT_PEER_URL.to_owned(),
            initial_cluster: None,
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.to_owned(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_count: DEFAULT_SNAPSHOT_COUNT,
            quota_backend_bytes: 0,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            auto_compaction_mode: AutoCompactionMode::Periodic,
            auto_compaction_retention: "0".to_owned(),
            experimental_watch_progress_notify_interval: "10m".to_owned(),
            experimental_initial_corrupt_check: false,
            strict_reconfig_check: true,
            force_new_cluster: false,
            pre_vote: true,
            grpc: GrpcArgs::default(),
            operation: OperationArgs::default(),
            lease: LeaseArgs::default(),
            ignored: IgnoredArgs::default(),
            cors: "*".to_owned(),
            host_whitelist: "*".to_owned(),
            experimental_corrupt_check_time: "0s".to_owned(),
            tls: TlsArgs::default(),
            auth_token: "simple".to_owned(),
            auth_token_ttl: DEFAULT_AUTH_TOKEN_TTL_S,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            kvdb_token_file: None,
            log_level: LogLevel::Info,
            logger: Logger::Capnslog,
            log_outputs: "default".to_owned(),
            worker_threads: None,
        }
    }
}

/// Paths as given, the empty one included (etcd reads `--data-dir ''` as "not given"; clap's
/// own path parser would refuse it).
fn path_parser() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}

/// Go's `strconv.ParseBool`, which etcd's boolean flags and variables use.
fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    }
}

/// TLS material for one side (clients or peers), as paths to PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain this server presents.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// The CA that the other side's certificates must be signed by.
    pub trusted_ca_file: Option<PathBuf>,
    /// Whether a connecting side must present a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// The common name and host name one of which the other side's certificates must have
    /// (a client's: the host name alone).
    pub allowed_names: (Option<String>, Option<String>),
    /// The revocation list checked against the certificates the other side presents.
    pub crl_file: Option<PathBuf>,
    /// A certificate this member makes when the files are missing (`--auto-tls`,
    /// `--peer-auto-tls`): self-signed, so members dialing it check nothing.
    pub self_signed: bool,
}

/// One member of `--initial-cluster`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its peer URLs in the order given.
    pub peer_urls: Vec<String>,
    /// Its id: [`member_id`] of its peer URLs and the cluster token; never 0.
    pub id: u64,
}

/// A checked configuration, everything typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// This member's name (`--name`).
    pub name: String,
    /// The data directory, existing and writable.
    pub data_dir: PathBuf,
    /// Where clients are served, each address once.
    pub listen_client_urls: Vec<ListenUrl>,
    /// Where `/metrics`, `/health` and `/version` are served alone (none by default).
    pub listen_metrics_urls: Vec<ListenUrl>,
    /// The client URLs this member advertises, as given (scheme lower-cased).
    pub advertise_client_urls: Vec<String>,
    /// Where peers are served, each address once.
    pub listen_peer_urls: Vec<ListenUrl>,
    /// The peer URLs this member advertises, as given (scheme lower-cased).
    pub advertise_peer_urls: Vec<String>,
    /// The members of `--initial-cluster` in the order first named; this member is among them.
    pub initial_cluster: Vec<Member>,
    /// Bootstrap a new cluster or join an existing one.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// Raft's heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Raft's election timeout, at least 5 heartbeats.
    pub election_timeout: Duration,
    /// Committed entries between snapshots (never 0).
    pub snapshot_count: u64,
    /// The store size that raises the NOSPACE alarm; `None` for no quota (a negative flag).
    pub quota_backend_bytes: Option<u64>,
    /// The free space on the data directory's file system below which NOSPACE is raised;
    /// `None` for no check (a 0 flag).
    pub disk_reserve_bytes: Option<u64>,
    /// The largest client request accepted.
    pub max_request_bytes: u64,
    /// The most operations in one transaction.
    pub max_txn_ops: u64,
    /// What the server compacts on its own.
    pub auto_compaction: AutoCompaction,
    /// How often idle watchers that asked for progress notifications get one.
    pub watch_progress_notify_interval: Duration,
    /// Compare the store's hash with the peers' before serving clients.
    pub initial_corrupt_check: bool,
    /// Refuse member changes that could cost the cluster its quorum.
    pub strict_reconfig_check: bool,
    /// Make this member the only one of its cluster at start (an existing data dir only).
    pub force_new_cluster: bool,
    /// Elections ask for pre-votes first.
    pub pre_vote: bool,
    /// The client port's gRPC connection settings.
    pub grpc: GrpcSettings,
    /// How the member runs: its Raft log's directory, slow applies, metrics.
    pub operation: OperationSettings,
    /// How often the leader records leases' remaining TTLs; `None`: never.
    pub lease_checkpoint_interval: Option<Duration>,
    /// Origins allowed by CORS; `None`: any.
    pub cors: Option<Vec<String>>,
    /// Host names plain-HTTP requests may name (lowercase); `None`: any.
    pub host_whitelist: Option<Vec<String>>,
    /// How often the leader checks every member's store hash; `None`: never.
    pub corrupt_check_interval: Option<Duration>,
    /// Client TLS, when `--cert-file` and `--key-file` are given.
    pub client_tls: Option<TlsFiles>,
    /// Peer TLS, when `--peer-cert-file` and `--peer-key-file` are given.
    pub peer_tls: Option<TlsFiles>,
    /// The TLS 1.2 cipher suites of both ports, by Go's names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// Dialing members' certificates need not name their addresses.
    pub peer_skip_client_san_verification: bool,
    /// The auth tokens `Authenticate` gives: simple, or JWT with its keys.
    pub auth_token: TokenKind,
    /// How long a simple auth token lives after its last use.
    pub auth_token_ttl: Duration,
    /// The bcrypt cost of new password hashes.
    pub bcrypt_cost: u32,
    /// The Kvdb token file; `None` refuses every Kvdb `register` (see [`read_kvdb_token`]).
    pub kvdb_token_file: Option<PathBuf>,
}

impl ServerConfig {
    /// Checks a command line as etcd 3.4 does and returns the typed configuration, creating
    /// the data directory (mode 0700) if it is missing.
    ///
    /// Besides etcd's checks, it refuses: `unix://` URLs; `https` peer URLs without
    /// `--peer-trusted-ca-file` (peers always authenticate each other's certificates);
    /// client-certificate checks without a trusted CA; a CA or a key without the certificate
    /// it goes with; TLS and token files that cannot be read. `--initial-cluster` defaults to
    /// `<name>=<each advertised peer URL>` whether or not `--name` was given (etcd derives it
    /// only from a given `--name`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first flag at fault.
    pub fn from_args(args: ServerArgs) -> Result<ServerConfig, ConfigError> {
        if args.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let (heartbeat_interval, election_timeout) =
            check_timing(args.heartbeat_interval_ms, args.election_timeout_ms)?;

        let listen_client_text = non_empty(args.listen_client_urls.as_deref());
        let advertise_client_text = non_empty(args.advertise_client_urls.as_deref());
        if let (Some(listen), None) = (listen_client_text, advertise_client_text) {
            return Err(ConfigError::AdvertiseClientUrlsRequired {
                listen: listen.to_owned(),
            });
        }
        let listen_client_urls = url::parse_listen_urls(
            "listen-client-urls",
            listen_client_text.unwrap_or(DEFAULT_CLIENT_URL),
        )?;
        let advertise_client_urls = url_strings(url::parse_url_list(
            "advertise-client-urls",
            advertise_client_text.unwrap_or(DEFAULT_CLIENT_URL),
        )?);
        let listen_metrics_urls = match non_empty(args.listen_metrics_urls.as_deref()) {
            Some(text) => url::parse_listen_urls("listen-metrics-urls", text)?,
            None => Vec::new(),
        };
        let listen_peer_urls = url::parse_listen_urls("listen-peer-urls", &args.listen_peer_urls)?;
        let advertise_peer_urls = url_strings(url::parse_url_list(
            "initial-advertise-peer-urls",
            &args.initial_advertise_peer_urls,
        )?);

        let initial_cluster_text = match non_empty(args.initial_cluster.as_deref()) {
            Some(text) => text.to_owned(),
            None => advertise_peer_urls
                .iter()
                .map(|url| format!("{}={url}", args.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        let initial_cluster =
            parse_initial_cluster(&initial_cluster_text, &args.initial_cluster_token)?;
        check_local_member(
            &args.name,
            &initial_cluster_text,
            &initial_cluster,
            &advertise_peer_urls,
        )?;

        let auto_compaction = compaction::parse_auto_compaction(
            args.auto_compaction_mode,
            &args.auto_compaction_retention,
        )?;
        let check_text = &args.experimental_corrupt_check_time;
        let corrupt_check_interval = match parse_go_duration_nanos(check_text) {
            Ok(nanos) if nanos <= 0 => None,
            Ok(nanos) => Some(Duration::from_nanos(
                u64::try_from(nanos).unwrap_or(u64::MAX),
            )),
            Err(reason) => {
                return Err(ConfigError::InvalidDuration {
                    flag: "experimental-corrupt-check-time",
                    value: check_text.clone(),
                    reason,
                });
            }
        };
        let progress_text = &args.experimental_watch_progress_notify_interval;
        let watch_progress_notify_interval = match parse_go_duration_nanos(progress_text) {
            // etcd keeps its default for 0 or less.
            Ok(nanos) if nanos <= 0 => DEFAULT_WATCH_PROGRESS_NOTIFY_INTERVAL,
            Ok(nanos) => Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)),
            Err(reason) => {
                return Err(ConfigError::InvalidDuration {
                    flag: "experimental-watch-progress-notify-interval",
                    value: progress_text.clone(),
                    reason,
                });
            }
        };

        let grpc = args.grpc.check()?;
        let operation = args.operation.check()?;
        let lease_checkpoint_interval = args.lease.checkpoint_interval()?;
        let data_dir = match args.data_dir.filter(|dir| !dir.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => PathBuf::from(format!("{}.etcd", args.name)),
        };
        let tls = args.tls.check()?.with_auto_tls(&data_dir);
        let (client_tls, peer_tls) = (tls.client, tls.peer);
        check_https_has_tls(TlsFlags::CLIENT, &listen_client_urls, client_tls.as_ref())?;
        check_https_has_tls(TlsFlags::CLIENT, &listen_metrics_urls, client_tls.as_ref())?;
        check_https_has_tls(TlsFlags::PEER, &listen_peer_urls, peer_tls.as_ref())?;
        if let Some(tls) = &peer_tls
            && tls.trusted_ca_file.is_none()
            && !tls.self_signed
            && listen_peer_urls
                .iter()
                .any(|url| url.scheme == Scheme::Https)
        {
            return Err(ConfigError::TlsIncomplete {
                given: "peer-cert-file",
                missing: "peer-trusted-ca-file (peers check each other's certificates)",
            });
        }

        parse_log_outputs(&args.log_outputs)?;
        let auth_token =
            TokenKind::parse(&args.auth_token).map_err(|source| ConfigError::InvalidAuthToken {
                value: args.auth_token.clone(),
                source,
            })?;
        if !(4..=31).contains(&args.bcrypt_cost) {
            return Err(ConfigError::InvalidBcryptCost {
                cost: args.bcrypt_cost,
            });
        }

        let kvdb_token_file = args
            .kvdb_token_file
            .filter(|path| !path.as_os_str().is_empty());
        if let Some(path) = &kvdb_token_file {
            read_kvdb_token(path)?;
        }

        let quota_backend_bytes = match u64::try_from(args.quota_backend_bytes) {
            Err(_) => None,
            Ok(0) => Some(DEFAULT_QUOTA_BACKEND_BYTES),
            Ok(bytes) => Some(bytes),
        };
        if quota_backend_bytes.is_some_and(|bytes| bytes > QUOTA_BACKEND_BYTES_WARN) {
            tracing::warn!(
                quota_backend_bytes = args.quota_backend_bytes,
                "--quota-backend-bytes exceeds 8 GiB: snapshots and restarts will be slow"
            );
        }
        if args.max_request_bytes > MAX_REQUEST_BYTES_WARN {
            tracing::warn!(
                max_request_bytes = args.max_request_bytes,
                "--max-request-bytes exceeds 10 MiB: big entries delay heartbeats"
            );
        }

        data_dir::prepare_data_dir(&data_dir)?;

        Ok(ServerConfig {
            name: args.name,
            data_dir,
            listen_client_urls,
            listen_metrics_urls,
            advertise_client_urls,
            listen_peer_urls,
            advertise_peer_urls,
            initial_cluster,
            initial_cluster_state: args.initial_cluster_state,
            initial_cluster_token: args.initial_cluster_token,
            heartbeat_interval,
            election_timeout,
            snapshot_count: if args.snapshot_count == 0 {
                DEFAULT_SNAPSHOT_COUNT
            } else {
                args.snapshot_count
            },
            quota_backend_bytes,
            disk_reserve_bytes: (args.disk_reserve_bytes > 0).then_some(args.disk_reserve_bytes),
            max_request_bytes: args.max_request_bytes,
            max_txn_ops: args.max_txn_ops,
            auto_compaction,
            watch_progress_notify_interval,
            initial_corrupt_check: args.experimental_initial_corrupt_check,
            strict_reconfig_check: args.strict_reconfig_check,
            force_new_cluster: args.force_new_cluster,
            pre_vote: args.pre_vote,
            grpc,
            operation,
            lease_checkpoint_interval,
            cors: list_or_any(&args.cors),
            host_whitelist: list_or_any(&args.host_whitelist.to_lowercase()),
            corrupt_check_interval,
            client_tls,
            peer_tls,
            cipher_suites: tls.cipher_suites,
            peer_skip_client_san_verification: tls.peer_skip_client_san_verification,
            auth_token,
            auth_token_ttl: Duration::from_secs(args.auth_token_ttl.max(1)),
            bcrypt_cost: args.bcrypt_cost,
            kvdb_token_file,
        })
    }

    /// This member's entry in [`ServerConfig::initial_cluster`].
    pub fn local_member(&self) -> &Member {
        self.initial_cluster
            .iter()
            .find(|member| member.name == self.name)
            .expect("from_args checked that --initial-cluster names this member")
    }

    /// This member's id.
    pub fn member_id(&self) -> u64 {
        self.local_member().id
    }

    /// The id of the cluster `--initial-cluster` bootstraps ([`cluster_id`] of its members).
    pub fn cluster_id(&self) -> u64 {
        let ids: Vec<u64> = self
            .initial_cluster
            .iter()
            .map(|member| member.id)
            .collect();
        cluster_id(&ids)
    }
}

/// Reads the Kvdb token: the file's contents without surrounding whitespace (so a trailing
/// newline does not count). A missing `--kvdb-token-file` means no token exists and every
/// `register` is refused: Kvdb is opt-in, never open by default.
///
/// # Errors
///
/// [`ConfigError::KvdbTokenFile`] if the file cannot be read, is not UTF-8, holds only
/// whitespace or more than [`KVDB_TOKEN_BYTES_MAX`] bytes.
pub fn read_kvdb_token(path: &Path) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::KvdbTokenFile {
        path: path.to_owned(),
        reason,
    };
    let file = fs::File::open(path).map_err(|e| invalid(e.to_string()))?;
    // One byte past the limit and the surrounding whitespace budget tell "too long" apart.
    let read_limit = u64::try_from(KVDB_TOKEN_BYTES_MAX * 2).expect("a small constant fits");
    let mut bytes = Vec::new();
    file.take(read_limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(e.to_string()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| invalid("the token is not UTF-8".to_owned()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid("holds no token".to_owned()));
    }
    if token.len() > KVDB_TOKEN_BYTES_MAX || text.len() as u64 > read_limit {
        return Err(invalid(format!(
            "the token is longer than {KVDB_TOKEN_BYTES_MAX} bytes"
        )));
    }
    Ok(token.to_owned())
}

/// A comma-separated list, `None` when it is empty or holds `*` (anything allowed).
fn list_or_any(text: &str) -> Option<Vec<String>> {
    let items: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty() && !items.iter().any(|o| o == "*")).then_some(items)
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|text| !text.trim().is_empty())
}

fn url_strings(urls: Vec<url::ParsedUrl>) -> Vec<String> {
    urls.into_iter().map(|url| url.url).collect()
}

fn check_timing(heartbeat_ms: u64, election_ms: u64) -> Result<(Duration, Duration), ConfigError> {
    if heartbeat_ms == 0 {
        return Err(ConfigError::ZeroInterval {
            flag: "heartbeat-interval",
        });
    }
    if election_ms == 0 {
        return Err(ConfigError::ZeroInterval {
            flag: "election-timeout",
        });
    }
    if heartbeat_ms.saturating_mul(5) > election_ms {
        return Err(ConfigError::ElectionTimeoutTooShort {
            election_timeout_ms: election_ms,
            heartbeat_interval_ms: heartbeat_ms,
        });
    }
    if election_ms > ELECTION_TIMEOUT_MS_MAX {
        return Err(ConfigError::ElectionTimeoutTooLong {
            election_timeout_ms: election_ms,
            max_ms: ELECTION_TIMEOUT_MS_MAX,
        });
    }
    Ok((
        Duration::from_millis(heartbeat_ms),
        Duration::from_millis(election_ms),
    ))
}

/// Parses `name=url,name=url,...` as etcd's `types.NewURLsMap`: empty items are skipped and a
/// name given twice gets both URLs. Every URL appears once in the whole cluster, every name is
/// non-empty, and member ids are distinct and not 0.
fn parse_initial_cluster(text: &str, token: &str) -> Result<Vec<Member>, ConfigError> {
    let mut members: Vec<Member> = Vec::new();
    let mut seen_urls = BTreeSet::new();
    for entry in text.split(',').filter(|entry| !entry.trim().is_empty()) {
        let invalid = |reason: &str| ConfigError::InvalidInitialCluster {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let (name, raw_url) = entry
            .split_once('=')
            .ok_or_else(|| invalid("expected name=url"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid("the member name is empty"));
        }
        let url = url::parse_url("initial-cluster", raw_url)?;
        if url.host.is_empty() {
            return Err(invalid("unexpected empty host"));
        }
        if !seen_urls.insert(url.url.clone()) {
            return Err(ConfigError::DuplicatePeerUrl { url: url.url });
        }
        match members.iter_mut().find(|member| member.name == name) {
            Some(member) => member.peer_urls.push(url.url),
            None => members.push(Member {
                name: name.to_owned(),
                peer_urls: vec![url.url],
                id: 0,
            }),
        }
    }
    let mut names_by_id: HashMap<u64, String> = HashMap::new();
    for member in &mut members {
        member.id = member_id(&member.peer_urls, token);
        let unusable = |reason| ConfigError::UnusableMemberId {
            name: member.name.clone(),
            id: member.id,
            reason,
        };
        if member.id == 0 {
            return Err(unusable("0 means no member to Raft; change the token"));
        }
        if names_by_id.insert(member.id, member.name.clone()).is_some() {
            return Err(unusable("another member has the same id; change the token"));
        }
    }
    Ok(members)
}

/// etcd's rule: `--initial-cluster` lists this member, with exactly the peer URLs it
/// advertises (in any order).
fn check_local_member(
    name: &str,
    initial_cluster_text: &str,
    initial_cluster: &[Member],
    advertise_peer_urls: &[String],
) -> Result<(), ConfigError> {
    let local = initial_cluster
        .iter()
        .find(|member| member.name == name)
        .ok_or_else(|| ConfigError::LocalMemberMissing {
            name: name.to_owned(),
            initial_cluster: initial_cluster_text.to_owned(),
        })?;
    let cluster_urls: BTreeSet<&String> = local.peer_urls.iter().collect();
    let advertised: BTreeSet<&String> = advertise_peer_urls.iter().collect();
    if cluster_urls != advertised {
        return Err(ConfigError::AdvertisePeerUrlsMismatch {
            name: name.to_owned(),
            cluster_urls: local.peer_urls.join(","),
            advertise_urls: advertise_peer_urls.join(","),
        });
    }
    Ok(())
}
