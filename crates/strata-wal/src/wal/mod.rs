//! [`Wal`]: the log's shared state (the tail writer, the queue, the LSN watermarks, the
//! segment list) and its open. The group commit is in `commit` (with its I/O in `write` and its
//! waiters in `wait`), purges and suffix cuts in `cut`, readers in `reader`, the directory lock
//! in `lock` and the counters in `metrics`.

mod commit;
mod cut;
mod lock;
mod metrics;
mod reader;
mod tail;
mod wait;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::format::{FORMAT_VERSION, Lsn, SEGMENT_HEADER_BYTES, SegmentHeader};
use crate::options::{Durability, WalOptions};
use crate::recovery::{Recovery, Segment, create_segment, recover};

pub use metrics::Metrics;
pub use reader::WalReader;

use commit::spawn_interval_syncer;
use lock::lock_dir;
use metrics::Counters;
use tail::Writer;
use wait::Waiter;

/// Encoded records waiting to be written, all destined for one segment.
#[derive(Debug)]
struct Chunk {
    /// Create this segment (and seal the current one) before writing `bytes`.
    new_segment: Option<SegmentHeader>,
    bytes: Vec<u8>,
    last_lsn: Lsn,
    records: u64,
}

/// The segment the next record goes into, counting what is queued.
#[derive(Debug, Clone, Copy)]
struct TailPlan {
    header: SegmentHeader,
    projected_bytes: u64,
    has_records: bool,
}

#[derive(Debug)]
struct State {
    next_lsn: Lsn,
    queue: Vec<Chunk>,
    tail: TailPlan,
    /// `None` while a leader (or `truncate_after`) has it out for I/O.
    writer: Option<Writer>,
    /// Set while `truncate_after` runs: appends wait.
    exclusive: bool,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    /// Records written but not yet synced.
    unsynced_records: u64,
    poisoned: Option<String>,
    segments: Vec<Segment>,
    /// Emptied buffers, reused for the next batches.
    spare_buffers: Vec<Vec<u8>>,
    /// Threads parked until their record is written or durable. A leader wakes exactly those
    /// it finished (and one more to lead the next round): waking every waiter after every
    /// round costs more CPU than the `fdatasync` with many writers.
    waiters: Vec<Waiter>,
    next_waiter_id: u64,
    /// Reused by `wake_waiters`, so waking allocates nothing.
    wake_buffer: Vec<std::thread::Thread>,
    last_sync: Instant,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<State>,
    changed: Condvar,
    counters: Counters,
    /// Serialises `purge_before` and `truncate_after`, which both change the segment list with
    /// the state lock released. Appends never take it.
    maintenance: Mutex<()>,
    /// Holds the directory's `LOCK` file locked, so a second open of the same log fails
    /// instead of writing the same tail.
    _dir_lock: File,
}

/// A segmented write-ahead log. Cheap to clone; every clone is the same log.
///
/// See the [crate docs](crate) for the guarantees.
#[derive(Debug, Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl State {
    /// Checks, in debug builds, the order of the LSN watermarks.
    fn debug_assert_watermarks(&self) {
        // The durable LSN is never above the last written LSN.
        debug_assert!(
            self.durable_lsn <= self.written_lsn,
            "durable LSN {} is above the written LSN {}",
            self.durable_lsn,
            self.written_lsn
        );
        // Nothing is written that was not handed out.
        debug_assert!(
            self.written_lsn < self.next_lsn,
            "written LSN {} is not below the next LSN {}",
            self.written_lsn,
            self.next_lsn
        );
    }
}

fn new_salt() -> u32 {
    // Never zero, so a zeroed region can never carry a matching salt by accident.
    rand::random::<u32>() | 1
}

impl Wal {
    /// Opens the log in `dir`, creating the directory and a first segment if needed, and
    /// recovers it: every record's checksum is verified, a torn tail is cut off, and damage
    /// before the tail stops the open with [`Error::Corruption`].
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for damage before the tail; I/O errors.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery)> {
        if !dir.try_exists().map_err(|e| Error::io("stat", dir, e))? {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
            strata_fs::sync_parent_dir(dir)?;
        }
        let dir_lock = lock_dir(dir)?;
        let recovered = recover(dir)?;
        let mut report = recovered.report;
        let mut segments = recovered.segments;
        let (writer, tail_bytes) = match segments.last() {
            Some(last) => {
                let writer = Writer::open(
                    &last.path,
                    last.header,
                    recovered.tail_len,
                    options.mapped_tail,
                )?;
                // What recovery found may still be only in the page cache (written by a
                // process that died before its fsync): make it durable before new records
                // claim, in their durable-LSN field, that it is.
                strata_fs::sync_file(&writer.file, &last.path)?;
                (writer, recovered.tail_len)
            }
            None => {
                report.next_lsn = report.next_lsn.max(options.first_lsn.max(1));
                let header = SegmentHeader {
                    salt: new_salt(),
                    first_lsn: report.next_lsn,
                    version: FORMAT_VERSION,
                };
                let (file, path) = create_segment(dir, header)?;
                segments.push(Segment {
                    header,
                    path: path.clone(),
                });
                report.segments = 1;
                (
                    Writer::new(
                        file,
                        path,
                        header,
                        SEGMENT_HEADER_BYTES as u64,
                        options.mapped_tail,
                    ),
                    SEGMENT_HEADER_BYTES as u64,
                )
            }
        };
        let durable = report.next_lsn - 1;
        let state = State {
            next_lsn: report.next_lsn,
            queue: Vec::new(),
            tail: TailPlan {
                header: writer.header,
                projected_bytes: tail_bytes,
                has_records: tail_bytes > SEGMENT_HEADER_BYTES as u64,
            },
            writer: Some(writer),
            exclusive: false,
            written_lsn: durable,
            durable_lsn: durable,
            unsynced_records: 0,
            poisoned: None,
            segments,
            spare_buffers: Vec::new(),
            waiters: Vec::new(),
            next_waiter_id: 0,
            wake_buffer: Vec::new(),
            last_sync: Instant::now(),
        };
        state.debug_assert_watermarks();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(state),
            changed: Condvar::new(),
            counters: Counters::default(),
            maintenance: Mutex::new(()),
            _dir_lock: dir_lock,
        });
        if let Durability::Interval(interval) = inner.options.durability {
            spawn_interval_syncer(dir, Arc::downgrade(&inner), interval)?;
        }
        Ok((Wal { inner }, report))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.inner.state.lock().next_lsn
    }

    /// The highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.state.lock().durable_lsn
    }

    /// The first LSN still in the log (after purges).
    pub fn first_lsn(&self) -> Lsn {
        let state = self.inner.state.lock();
        state
            .segments
            .first()
            .map_or(state.next_lsn, |s| s.header.first_lsn)
    }
}
