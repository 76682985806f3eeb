//! Why a command line cannot start a server: one variant per kind of problem, each message
//! naming the flag and the value at fault, so an operator can fix the line from the message.

use std::io;
use std::path::PathBuf;

/// A flag or a combination of flags that cannot start a server, or a data directory, TLS file
/// or token file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL that is not `http(s)://host:port` with nothing after the port.
    #[error("invalid value {url:?} for --{flag}: {reason}")]
    InvalidUrl {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A URL list flag with no URL in it.
    #[error("--{flag} holds no URL (given {value:?})")]
    NoUrls {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value as given.
        value: String,
    },
    /// A listen URL whose host is a name: etcd binds only to IP addresses and `localhost`.
    #[error("expected IP in URL for binding ({url}) in --{flag}")]
    ListenHostNotIp {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The URL as given.
        url: String,
    },
    /// A host name that the system resolver could not turn into an address.
    #[error("cannot resolve the host of {url:?}: {reason}")]
    Unresolvable {
        /// The URL as given.
        url: String,
        /// The resolver's answer.
        reason: String,
    },
    /// `--listen-client-urls` was set but `--advertise-client-urls` was not (etcd's rule: a
    /// member listening on chosen addresses must say where clients reach it).
    #[error(
        "--advertise-client-urls is required when --listen-client-urls is set explicitly \
         (listening on {listen})"
    )]
    AdvertiseClientUrlsRequired {
        /// The listen URLs as given.
        listen: String,
    },
    /// `--name` is empty.
    #[error("--name must not be empty")]
    EmptyName,
    /// An `--initial-cluster` entry that is not `name=url`.
    #[error("invalid --initial-cluster entry {entry:?}: {reason}")]
    InvalidInitialCluster {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// This member's name is not in `--initial-cluster`.
    #[error("couldn't find local name {name:?} in --initial-cluster {initial_cluster:?}")]
    LocalMemberMissing {
        /// `--name`.
        name: String,
        /// `--initial-cluster` as used.
        initial_cluster: String,
    },
    /// `--initial-cluster` lists this member with other peer URLs than it advertises.
    #[error(
        "--initial-cluster has {name}={cluster_urls} but --initial-advertise-peer-urls is \
         {advertise_urls} (they must be the same URLs)"
    )]
    AdvertisePeerUrlsMismatch {
        /// `--name`.
        name: String,
        /// This member's URLs in `--initial-cluster`, comma-separated.
        cluster_urls: String,
        /// `--initial-advertise-peer-urls`, comma-separated.
        advertise_urls: String,
    },
    /// One peer URL given twice in `--initial-cluster`.
    #[error("--initial-cluster has the peer URL {url} twice")]
    DuplicatePeerUrl {
        /// The URL.
        url: String,
    },
    /// Two members whose ids collide, or a member whose id is 0 (Raft's "no node").
    #[error("--initial-cluster: cannot use {id:016x} as the id of member {name:?}: {reason}")]
    UnusableMemberId {
        /// The member's name.
        name: String,
        /// The id its peer URLs and the token hash to.
        id: u64,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// `--heartbeat-interval 0` or `--election-timeout 0`.
    #[error("--{flag} must be >0 (set to 0ms)")]
    ZeroInterval {
        /// The flag, without its dashes.
        flag: &'static str,
    },
    /// An election timeout under five heartbeats: followers would start elections while the
    /// leader is healthy.
    #[error(
        "--election-timeout[{election_timeout_ms}ms] should be at least as 5 times as \
         --heartbeat-interval[{heartbeat_interval_ms}ms]"
    )]
    ElectionTimeoutTooShort {
        /// `--election-timeout`.
        election_timeout_ms: u64,
        /// `--heartbeat-interval`.
        heartbeat_interval_ms: u64,
    },
    /// An election timeout above etcd's limit.
    #[error(
        "--election-timeout[{election_timeout_ms}ms] is too long, and should be set less than \
         {max_ms}ms"
    )]
    ElectionTimeoutTooLong {
        /// `--election-timeout`.
        election_timeout_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// An `--auto-compaction-retention` that the mode cannot read.
    #[error(
        "invalid --auto-compaction-retention {value:?} for --auto-compaction-mode {mode}: {reason}"
    )]
    InvalidCompactionRetention {
        /// `periodic` or `revision`.
        mode: &'static str,
        /// The retention as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https` URL without the certificate and key to serve it.
    #[error(
        "TLS key/cert (--{cert_flag}, --{key_flag}) must be provided for {url} with HTTPS scheme"
    )]
    TlsRequired {
        /// The certificate flag.
        cert_flag: &'static str,
        /// The key flag.
        key_flag: &'static str,
        /// The `https` URL.
        url: String,
    },
    /// A TLS flag given without the flag it needs (a certificate without its key, a CA or
    /// client-certificate check without a certificate, ...).
    #[error("--{given} needs --{missing}")]
    TlsIncomplete {
        /// The flag given.
        given: &'static str,
        /// The flag it needs.
        missing: &'static str,
    },
    /// A TLS file that cannot be read.
    #[error("--{flag} {path}: {source}")]
    TlsFile {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        source: io::Error,
    },
    /// A data directory path that exists but is not a directory.
    #[error("--data-dir {path}: exists and is not a directory")]
    DataDirNotDir {
        /// The path.
        path: PathBuf,
    },
    /// A data directory that cannot be created, read or written.
    #[error("--data-dir {path}: cannot {action}: {source}")]
    DataDirUnusable {
        /// The path.
        path: PathBuf,
        /// What was tried.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
    /// An `--auth-token` that is neither `simple` nor usable JWT options (see
    /// [`crate::auth::jwt`]).
    #[error("--auth-token {value:?}: {source}")]
    InvalidAuthToken {
        /// The flag's value.
        value: String,
        /// What is wrong with it.
        source: crate::auth::jwt::TokenOptionsError,
    },
    /// A `--log-outputs` that cannot be used.
    #[error("--log-outputs {value:?}: {reason}")]
    InvalidLogOutputs {
        /// The flag's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A duration flag that is not a Go duration.
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    InvalidDuration {
        /// The flag, without its dashes.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--cipher-suites` naming a suite Strata cannot offer.
    #[error("invalid value {value:?} for --cipher-suites: {reason}")]
    InvalidCipherSuites {
        /// The list as given.
        value: String,
        /// Which name, and why.
        reason: String,
    },
    /// `--bcrypt-cost` outside bcrypt's range.
    #[error("--bcrypt-cost {cost}: must be from 4 to 31")]
    InvalidBcryptCost {
        /// The flag's value.
        cost: u32,
    },
    /// A `--config-file` that cannot be read, is not YAML, or sets a key that is not a flag
    /// Strata takes.
    #[error("--config-file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A `--kvdb-token-file` that cannot be read or holds no usable token.
    #[error("--kvdb-token-file {path}: {reason}")]
    KvdbTokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
