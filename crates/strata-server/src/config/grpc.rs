//! etcd's flags for the client port's gRPC connections: concurrent streams and keepalive.

use std::time::Duration;

use super::ConfigError;
use super::compaction::go_duration_at_least;

/// The flags as clap reads them (flattened into [`ServerArgs`](super::ServerArgs)).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct GrpcArgs {
    /// Streams one client connection may have open at a time (etcd's default:
    /// math.MaxUint32).
    #[arg(
        long,
        env = "ETCD_MAX_CONCURRENT_STREAMS",
        value_name = "N",
        default_value = "4294967295"
    )]
    pub max_concurrent_streams: u32,
    /// The least time a client should wait between its keepalive pings (a Go duration).
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_MIN_TIME",
        value_name = "DURATION",
        default_value = "5s"
    )]
    pub grpc_keepalive_min_time: String,
    /// How often the server pings a client connection that is otherwise idle (a Go duration;
    /// 0 to disable).
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_INTERVAL",
        value_name = "DURATION",
        default_value = "2h"
    )]
    pub grpc_keepalive_interval: String,
    /// How long the server waits for a ping's answer before it closes the connection (a Go
    /// duration; 0: the 20 s default).
    #[arg(
        long,
        env = "ETCD_GRPC_KEEPALIVE_TIMEOUT",
        value_name = "DURATION",
        default_value = "20s"
    )]
    pub grpc_keepalive_timeout: String,
}

impl Default for GrpcArgs {
    fn default() -> Self {
        GrpcArgs {
            max_concurrent_streams: u32::MAX,
            grpc_keepalive_min_time: "5s".to_owned(),
            grpc_keepalive_interval: "2h".to_owned(),
            grpc_keepalive_timeout: "20s".to_owned(),
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcSettings {
    /// HTTP/2's `SETTINGS_MAX_CONCURRENT_STREAMS` for client connections.
    pub max_concurrent_streams: u32,
    /// The least time between a client's keepalive pings: checked, not enforced (Strata
    /// answers more frequent pings, where etcd closes the connection with `too_many_pings`).
    pub keepalive_min_time: Duration,
    /// How often an idle client connection is pinged; `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// How long an unanswered ping may wait before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// `--grpc-keepalive-timeout`'s default, also taken for 0.
const KEEPALIVE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);

impl GrpcArgs {
    /// The settings, checked.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidDuration`] for a duration that is not a Go duration, or negative.
    pub fn check(&self) -> Result<GrpcSettings, ConfigError> {
        let duration = |flag, text: &str| go_duration_at_least(flag, text, Duration::ZERO);
        let min_time = duration("grpc-keepalive-min-time", &self.grpc_keepalive_min_time)?;
        let interval = duration("grpc-keepalive-interval", &self.grpc_keepalive_interval)?;
        let timeout = duration("grpc-keepalive-timeout", &self.grpc_keepalive_timeout)?;
        Ok(GrpcSettings {
            max_concurrent_streams: self.max_concurrent_streams,
            keepalive_min_time: min_time,
            keepalive_interval: (!interval.is_zero()).then_some(interval),
            keepalive_timeout: if timeout.is_zero() {
                KEEPALIVE_TIMEOUT_DEFAULT
            } else {
                timeout
            },
        })
    }
}
