//! A snapshot log compatible with HashiCorp Serf's: member events and Lamport clocks, appended
//! as text lines, compacted in place, replayed at start.
//!
//! A Serf agent appends what it learns about the cluster (`alive: NAME ADDR`,
//! `not-alive: NAME`, `clock: N`, `event-clock: N`, `query-clock: N`, `leave`) to a snapshot file,
//! so that after a restart it knows whom to rejoin and does not replay old events. This crate
//! reads any file Serf 0.9 writes and replays it to the state Serf would, and writes files Serf
//! can replay. The format is described byte by byte in `docs/formats/snaplog.md`.
//!
//! # Layers
//!
//! - [`parse_line`] / [`Record`]: the line codec.
//! - [`replay`] / [`replay_file`]: bytes to a [`Replay`] (a [`History`], warnings for skipped
//!   lines, the torn tail), with Serf's rules.
//! - [`History`]: the net effect of a log, answerable for either `rejoin_after_leave` setting,
//!   and its compacted form.
//! - [`SnapshotLog`]: the synchronous file: record, flush, `fsync`, compact (atomically, via
//!   [`strata_fs::SwapFile`]), recover.
//! - [`Snapshotter`]: the async (Tokio) task Serf has: events in, events passed through, lines
//!   recorded, flushed on a timer, compacted when the file grows.
//!
//! # Invariants
//!
//! - Replay is a pure function of the file's bytes and `rejoin_after_leave`.
//! - `replay(compact(log)) == replay(log)` under *both* `rejoin_after_leave` settings.
//! - The snapshotter's state ([`Snapshotter::alive_nodes`], the clocks) always equals the replay
//!   of what it has recorded.
//! - A recorded line reaches the file within [`SnapshotterConfig::flush_interval`], and is
//!   durable then too under the default [`FsyncPolicy::EveryFlush`].
//! - No event is dropped silently: [`EventSender::send`] waits for room, and
//!   [`EventSender::try_send`] counts what it refuses.
//!
//! # Where Strata deliberately differs from Serf
//!
//! - **Flush timer.** Serf flushes only when an append arrives more than 500 ms after the last
//!   flush, so a line can sit in memory indefinitely. Strata flushes within `flush_interval` of
//!   recording a line, and `fsync`s on every flush by default ([`FsyncPolicy`]).
//! - **Torn tails.** Serf appends onto a torn last line and merges two records into one. Strata
//!   cuts the torn tail off (and `fsync`s) before appending.
//! - **Compaction after `leave`.** Serf's compaction drops the `leave` and keeps the clocks, so
//!   the compacted file replays differently from the original. Strata's compacted file keeps
//!   the state before the last `leave`, the `leave`, and the net effect of what followed, so it
//!   replays to exactly the same state under both `rejoin_after_leave` settings.
//! - **Full queues.** Serf drops events silently when its 2048-slot queues are full. Strata
//!   applies backpressure or counts the drop ([`SnapshotterStats`]), on input and on output.
//!   A consumer that stops reading the output holds back new events, but never the flush timer,
//!   `leave` or shutdown.
//! - **Shutdown.** Serf records what it can drain within 250 ms and loses the rest of its queue.
//!   Strata stops accepting events, records every event it had accepted, and spends the timeout
//!   only on passing them to the output (counting those it could not).
//! - **Compaction storms.** Serf compacts on every append once its compacted file is larger
//!   than its 256-bytes-per-member estimate (long names). Strata also waits until the file is
//!   twice the size of the last compaction.
//! - **File mode.** Serf creates the compacted file with mode 0755; Strata uses 0644, the mode
//!   of a new snapshot.
//! - **Write errors.** After a failed write or `fsync`, Serf keeps appending after what may be
//!   a partial line. Strata stops appending and rewrites the whole file from memory (a recovery
//!   compaction, at most every 30 s), so nothing recorded is lost.
//! - **Swap.** Serf deletes the old file before renaming the compacted one over it, leaving a
//!   window with no snapshot; Strata renames over it (see `strata-fs`), and at open still
//!   promotes a complete `.compact` file if Serf crashed in that window.
//! - **Clock at zero.** Serf records `clock: now - 1` in unsigned arithmetic, so a clock at 0
//!   records 18446744073709551615; Strata records nothing until the clock passes 1.
//! - **Invalid UTF-8.** A member name that is not valid UTF-8 is skipped with a warning (Serf
//!   keeps the raw bytes), and names with a newline are refused when recording
//!   ([`Error::InvalidRecord`]) rather than written as two broken lines.
//!
//! # Examples
//!
//! Replaying a file Serf wrote:
//!
//! ```
//! use strata_snaplog::{ReplayOptions, replay};
//!
//! let file = b"alive: node a 10.0.0.1:7946\nalive: b [::1]:7946\nnot-alive: b\n\
//!              clock: 17\nevent-clock: 4\nbogus line\nquery-clock: 9\nalive: torn";
//! let replay = replay(&file[..], &ReplayOptions::default())?;
//! let state = replay.state(false);
//! assert_eq!(state.alive.get("node a").map(String::as_str), Some("10.0.0.1:7946"));
//! assert_eq!(state.alive.len(), 1);
//! assert_eq!((state.last_clock, state.last_event_clock, state.last_query_clock), (17, 4, 9));
//! assert_eq!(replay.warnings.len(), 1);
//! assert_eq!(replay.torn_tail_bytes, "alive: torn".len() as u64);
//! # Ok::<(), strata_snaplog::Error>(())
//! ```
//!
//! Running a snapshotter:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use strata_clock::LamportClock;
//! use strata_snaplog::{Event, Member, MemberEvent, MemberEventKind, Snapshotter, SnapshotterConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("snapshot");
//! let clock = Arc::new(LamportClock::new());
//!
//! let (events, snapshotter) =
//!     Snapshotter::open(&path, SnapshotterConfig::default(), Arc::clone(&clock), None).await?;
//! clock.witness(10);
//! events
//!     .send(Event::Member(MemberEvent {
//!         kind: MemberEventKind::Join,
//!         members: vec![Member { name: "web-1".into(), addr: "10.0.0.7:7946".parse()? }],
//!     }))
//!     .await?;
//! snapshotter.shutdown().await?;
//!
//! // A restart replays the file.
//! let (_events, snapshotter) =
//!     Snapshotter::open(&path, SnapshotterConfig::default(), clock, None).await?;
//! assert_eq!(snapshotter.alive_nodes()[0].name, "web-1");
//! assert_eq!(snapshotter.last_clock(), 10);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod error;
mod event;
mod line;
mod log;
mod replay;
mod snapshotter;
mod state;

pub use error::{Error, Result};
pub use event::{Event, Member, MemberEvent, MemberEventKind, Query, UserEvent};
pub use line::{LINE_BYTES_MAX, Line, Record, SkipReason, parse_line};
pub use log::{
    COMPACT_SUFFIX, LogOptions, LogStats, OpenReport, SNAPSHOT_BYTES_PER_NODE,
    SNAPSHOT_COMPACTION_THRESHOLD, SnapshotLog,
};
pub use replay::{Replay, ReplayOptions, Warning, replay, replay_file};
pub use snapshotter::{
    EventSender, FsyncPolicy, OutputOverflow, PreviousNode, ShutdownReport, Snapshotter,
    SnapshotterConfig, SnapshotterStats,
};
pub use state::{History, State};

/// Compacts the snapshot log at `path` in place, atomically, and returns what opening it found
/// (the replay of the file as it was, and any torn tail cut off). The file replays to the same state afterwards, under both
/// `rejoin_after_leave` settings.
///
/// Not for a file a running [`Snapshotter`] has open: it would keep appending to the old one.
///
/// # Errors
///
/// As [`SnapshotLog::open`] and [`SnapshotLog::compact`].
pub fn compact_file(path: &std::path::Path, options: LogOptions) -> Result<OpenReport> {
    if !path
        .try_exists()
        .map_err(|e| Error::io("stat", Some(path), e))?
    {
        return Err(Error::io(
            "open",
            Some(path),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let (mut log, report) = SnapshotLog::open(path, options)?;
    log.compact()?;
    Ok(report)
}
