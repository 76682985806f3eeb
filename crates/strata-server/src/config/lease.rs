//! etcd's lease checkpoint flags: whether the leader records leases' remaining TTLs through
//! Raft, and how often.

use std::time::Duration;

use super::ConfigError;
use super::compaction::go_duration_at_least;

/// The flags as clap reads them (flattened into [`ServerArgs`](super::ServerArgs)).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LeaseArgs {
    /// The leader records each long lease's remaining TTL through Raft, so that a new leader
    /// gives it what was left rather than its whole TTL again (which, with leaders changing
    /// often, kept leases alive forever). On by default: etcd 3.4's default is false.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = super::parse_go_bool
    )]
    pub experimental_enable_lease_checkpoint: bool,
    /// How often the leader records the remaining TTLs (etcd 3.5's flag, a Go duration); only
    /// leases longer than this are recorded.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub experimental_lease_checkpoint_interval: String,
}

impl Default for LeaseArgs {
    fn default() -> Self {
        LeaseArgs {
            experimental_enable_lease_checkpoint: true,
            experimental_lease_checkpoint_interval: "5m".to_owned(),
        }
    }
}

impl LeaseArgs {
    /// The checkpoint interval, `None` when checkpoints are off.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidDuration`] for an interval that is not a Go duration of at least
    /// a second.
    pub fn checkpoint_interval(&self) -> Result<Option<Duration>, ConfigError> {
        let interval = go_duration_at_least(
            "experimental-lease-checkpoint-interval",
            &self.experimental_lease_checkpoint_interval,
            Duration::from_secs(1),
        )?;
        Ok(self
            .experimental_enable_lease_checkpoint
            .then_some(interval))
    }
}
