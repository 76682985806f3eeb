//! etcd's flags about how the member runs rather than what it serves: where its Raft log lives
//! (`--wal-dir`), what it logs (`--debug`, `--experimental-warning-apply-duration`) and how
//! much `/metrics` says (`--metrics`).

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use std::time::Duration;

use super::ConfigError;
use super::compaction::go_duration_at_least;

/// `--metrics`: etcd's level of detail for its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricsLevel {
    /// etcd's default.
    Basic,
    /// etcd adds its gRPC latency histograms; Strata's `/metrics` is the same at both levels.
    Extensive,
}

/// The flags as clap reads them (flattened into [`ServerArgs`](super::ServerArgs)).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct OperationArgs {
    /// The directory of the Raft log (etcd's dedicated WAL directory), for example on a
    /// faster disk than the data; `DATA_DIR/member/log` if not given (or empty).
    #[arg(
        long,
        env = "ETCD_WAL_DIR",
        value_name = "DIR",
        // An empty path (etcd's default) is taken, and means none.
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub wal_dir: Option<PathBuf>,
    /// Log at debug level (etcd 3.4's older spelling of `--log-level=debug`, which it
    /// overrides).
    #[arg(
        long,
        env = "ETCD_DEBUG",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = super::parse_go_bool
    )]
    pub debug: bool,
    /// Requests that take longer than this to apply are logged as a warning (a Go duration).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WARNING_APPLY_DURATION",
        value_name = "DURATION",
        default_value = "100ms"
    )]
    pub experimental_warning_apply_duration: String,
    /// The level of detail of `/metrics`: `basic` or `extensive` (the same for Strata).
    #[arg(
        long,
        env = "ETCD_METRICS",
        value_enum,
        default_value_t = MetricsLevel::Basic
    )]
    pub metrics: MetricsLevel,
}

impl Default for OperationArgs {
    fn default() -> Self {
        OperationArgs {
            wal_dir: None,
            debug: false,
            experimental_warning_apply_duration: "100ms".to_owned(),
            metrics: MetricsLevel::Basic,
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationSettings {
    /// Where the Raft log is, if not in the data directory.
    pub wal_dir: Option<PathBuf>,
    /// Applying a request for longer than this is logged and counted.
    pub warning_apply_duration: Duration,
    /// `--metrics`, as given.
    pub metrics: MetricsLevel,
}

impl OperationArgs {
    /// The settings, checked.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidDuration`] for a duration that is not a positive Go duration.
    pub fn check(&self) -> Result<OperationSettings, ConfigError> {
        let warning_apply_duration = go_duration_at_least(
            "experimental-warning-apply-duration",
            &self.experimental_warning_apply_duration,
            Duration::from_nanos(1),
        )?;
        Ok(OperationSettings {
            // etcd's default is the empty path: none.
            wal_dir: self
                .wal_dir
                .clone()
                .filter(|dir| !dir.as_os_str().is_empty()),
            warning_apply_duration,
            metrics: self.metrics,
        })
    }
}

impl super::ServerArgs {
    /// The level the member logs at: `--log-level`, or debug with etcd 3.4's `--debug`.
    pub fn log_level_in_effect(&self) -> super::LogLevel {
        if self.operation.debug {
            super::LogLevel::Debug
        } else {
            self.log_level
        }
    }
}
