//! etcd flags that tune what Strata does not have, taken so that etcd's command lines and
//! configuration files start a member, and ignored with a warning: the v2 API and its proxy
//! (`--enable-v2`, `--proxy*`), Go's profiler (`--enable-pprof`), bbolt's batching and free
//! list, WAL and snapshot file retention (Strata keeps only the files it needs), the
//! discovery fallback, per-package log levels, the initial election tick advance and the
//! compaction batch size. Each value is still checked as etcd checks it.

use super::parse_go_bool;

/// The flags as clap reads them (flattened into [`ServerArgs`](super::ServerArgs)); `None`:
/// not given.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct IgnoredArgs {
    /// Ignored (etcd's v2 API, which Strata does not serve).
    #[arg(long, env = "ETCD_ENABLE_V2", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub enable_v2: Option<bool>,
    /// Ignored (v2 requests served under a prefix of the v3 store; Strata serves no v2 API).
    #[arg(long, env = "ETCD_EXPERIMENTAL_ENABLE_V2V3", value_name = "PREFIX")]
    pub experimental_enable_v2v3: Option<String>,
    /// Ignored (Go's profiler; Strata has none).
    #[arg(long, env = "ETCD_ENABLE_PPROF", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = parse_go_bool)]
    pub enable_pprof: Option<bool>,
    /// Ignored (Strata's first election is not hurried).
    #[arg(long, env = "ETCD_INITIAL_ELECTION_TICK_ADVANCE", value_name = "BOOL",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = parse_go_bool)]
    pub initial_election_tick_advance: Option<bool>,
    /// Ignored (Strata keeps only the snapshot it needs).
    #[arg(long, env = "ETCD_MAX_SNAPSHOTS", value_name = "N")]
    pub max_snapshots: Option<u64>,
    /// Ignored (Strata keeps only the Raft log segments it needs).
    #[arg(long, env = "ETCD_MAX_WALS", value_name = "N")]
    pub max_wals: Option<u64>,
    /// Ignored (bbolt's commit interval).
    #[arg(long, env = "ETCD_BACKEND_BATCH_INTERVAL", value_name = "DURATION")]
    pub backend_batch_interval: Option<String>,
    /// Ignored (bbolt's commit batch).
    #[arg(long, env = "ETCD_BACKEND_BATCH_LIMIT", value_name = "N")]
    pub backend_batch_limit: Option<u64>,
    /// Ignored (bbolt's free list).
    #[arg(long, env = "ETCD_EXPERIMENTAL_BACKEND_BBOLT_FREELIST_TYPE", value_name = "TYPE",
          value_parser = ["array", "map"])]
    pub experimental_backend_bbolt_freelist_type: Option<String>,
    /// Ignored (Strata removes compacted revisions in resumable steps of its own size).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_COMPACTION_BATCH_LIMIT",
        value_name = "N"
    )]
    pub experimental_compaction_batch_limit: Option<u64>,
    /// Ignored (etcd's per-package log levels; see --log-level).
    #[arg(long, env = "ETCD_LOG_PACKAGE_LEVELS", value_name = "LEVELS")]
    pub log_package_levels: Option<String>,
    /// Ignored (what to do when discovery fails; Strata has no discovery).
    #[arg(long, env = "ETCD_DISCOVERY_FALLBACK", value_name = "exit|proxy",
          value_parser = ["exit", "proxy"])]
    pub discovery_fallback: Option<String>,
    /// etcd's v2 proxy mode: only `off` (Strata is never a proxy).
    #[arg(long, env = "ETCD_PROXY", value_name = "off", value_parser = ["off"])]
    pub proxy: Option<String>,
    /// Ignored (the v2 proxy's).
    #[arg(long, env = "ETCD_PROXY_FAILURE_WAIT", value_name = "MS")]
    pub proxy_failure_wait: Option<u64>,
    /// Ignored (the v2 proxy's).
    #[arg(long, env = "ETCD_PROXY_REFRESH_INTERVAL", value_name = "MS")]
    pub proxy_refresh_interval: Option<u64>,
    /// Ignored (the v2 proxy's).
    #[arg(long, env = "ETCD_PROXY_DIAL_TIMEOUT", value_name = "MS")]
    pub proxy_dial_timeout: Option<u64>,
    /// Ignored (the v2 proxy's).
    #[arg(long, env = "ETCD_PROXY_WRITE_TIMEOUT", value_name = "MS")]
    pub proxy_write_timeout: Option<u64>,
    /// Ignored (the v2 proxy's).
    #[arg(long, env = "ETCD_PROXY_READ_TIMEOUT", value_name = "MS")]
    pub proxy_read_timeout: Option<u64>,
}

impl IgnoredArgs {
    /// A note for each flag given, for the log: `--flag=value ignored (...)`.
    pub fn notes(&self) -> Vec<String> {
        let text = |v: &dyn std::fmt::Display| v.to_string();
        let given: [(&str, Option<String>); 18] = [
            ("enable-v2", self.enable_v2.as_ref().map(|v| text(v))),
            (
                "experimental-enable-v2v3",
                self.experimental_enable_v2v3.clone(),
            ),
            ("enable-pprof", self.enable_pprof.as_ref().map(|v| text(v))),
            (
                "initial-election-tick-advance",
                self.initial_election_tick_advance.as_ref().map(|v| text(v)),
            ),
            (
                "max-snapshots",
                self.max_snapshots.as_ref().map(|v| text(v)),
            ),
            ("max-wals", self.max_wals.as_ref().map(|v| text(v))),
            (
                "backend-batch-interval",
                self.backend_batch_interval.clone(),
            ),
            (
                "backend-batch-limit",
                self.backend_batch_limit.as_ref().map(|v| text(v)),
            ),
            (
                "experimental-backend-bbolt-freelist-type",
                self.experimental_backend_bbolt_freelist_type.clone(),
            ),
            (
                "experimental-compaction-batch-limit",
                self.experimental_compaction_batch_limit
                    .as_ref()
                    .map(|v| text(v)),
            ),
            ("log-package-levels", self.log_package_levels.clone()),
            ("discovery-fallback", self.discovery_fallback.clone()),
            ("proxy", self.proxy.clone()),
            (
                "proxy-failure-wait",
                self.proxy_failure_wait.as_ref().map(|v| text(v)),
            ),
            (
                "proxy-refresh-interval",
                self.proxy_refresh_interval.as_ref().map(|v| text(v)),
            ),
            (
                "proxy-dial-timeout",
                self.proxy_dial_timeout.as_ref().map(|v| text(v)),
            ),
            (
                "proxy-write-timeout",
                self.proxy_write_timeout.as_ref().map(|v| text(v)),
            ),
            (
                "proxy-read-timeout",
                self.proxy_read_timeout.as_ref().map(|v| text(v)),
            ),
        ];
        given
            .into_iter()
            .filter_map(|(flag, value)| {
                value.map(|v| format!("--{flag}={v} ignored (etcd's; Strata has no use for it)"))
            })
            .collect()
    }
}
