//! Recovery at open: list the segments, verify every record, cut a torn tail, refuse damage.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    Damage, FIRST_LSN, Lsn, RecordScanner, SEGMENT_HEADER_BYTES, SegmentHeader,
    parse_segment_file_name, segment_path,
};

/// A segment file the log holds.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub header: SegmentHeader,
    pub path: PathBuf,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Segment files in the log.
    pub segments: usize,
    /// Records that verified.
    pub records: u64,
    /// Bytes cut off the end of the last segment: a torn last write (or a segment whose
    /// creation a crash interrupted). Zeros at the very end, room allocated ahead of the
    /// records and never written, are cut too but not counted.
    pub torn_tail_bytes: u64,
    /// The LSN the next record will get.
    pub next_lsn: Lsn,
}

pub(crate) struct Recovered {
    pub report: Recovery,
    pub segments: Vec<Segment>,
    /// Length of the last segment after recovery (where appends continue).
    pub tail_len: u64,
}

/// Lists the segment files in `dir`, sorted by first LSN.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if let Some(lsn) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            found.push((lsn, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(found)
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// What is wrong with the end of the last segment, for recovery to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TornTail {
    /// The last segment is shorter than its header: its creation was interrupted.
    ShortSegment {
        /// The segment file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The last segment's records end before its bytes do.
    Records {
        /// The segment file.
        path: PathBuf,
        /// The length of its valid records (with the header): where it is cut.
        valid_len: u64,
        /// The bytes after them, up to the last that is not zero (a final run of zeros is room
        /// the writer allocated ahead, never written).
        torn_bytes: u64,
    },
}

/// The result of [`scan_log`].
#[derive(Debug, Clone)]
pub struct Scan {
    pub(crate) segments: Vec<Segment>,
    /// Records that verified.
    pub records: u64,
    /// The LSN after the last valid record.
    pub next_lsn: Lsn,
    /// Length of the last segment's valid part.
    pub tail_len: u64,
    /// A torn tail, if there is one.
    pub torn: Option<TornTail>,
}

/// Reads and verifies the log in `dir` without changing anything, calling `on_segment` for
/// each segment (its path and first LSN) and `on_record` for each valid record, in order.
///
/// # Errors
///
/// [`Error::Corruption`] at the first damage that is not a torn tail (after the callbacks
/// have seen everything valid before it); I/O errors.
pub fn scan_log(
    dir: &Path,
    mut on_segment: impl FnMut(&Path, Lsn),
    mut on_record: impl FnMut(Lsn, &[u8]),
) -> Result<Scan> {
    let files = list_segments(dir)?;
    let mut scan = Scan {
        segments: Vec::with_capacity(files.len()),
        records: 0,
        next_lsn: FIRST_LSN,
        tail_len: 0,
        torn: None,
    };
    let count = files.len();
    for (i, (name_lsn, path)) in files.into_iter().enumerate() {
        let last = i + 1 == count;
        let bytes = read_file(&path)?;
        let corruption = |offset: u64, reason: &'static str| Error::Corruption {
            segment: path.clone(),
            offset,
            reason,
        };
        let decoded = SegmentHeader::decode(&bytes);
        if last && bytes.len() <= SEGMENT_HEADER_BYTES && decoded.is_err() {
            // The header is written and synced before any record goes into a segment, so a
            // last segment no longer than a header that does not verify is a creation a crash
            // interrupted (a file system may show the new length before the data): it holds
            // nothing.
            scan.torn = Some(TornTail::ShortSegment {
                path: path.clone(),
                len: bytes.len() as u64,
            });
            continue;
        }
        let header = decoded.map_err(|reason| corruption(0, reason))?;
        if header.first_lsn != name_lsn {
            return Err(corruption(
                0,
                "segment header LSN does not match its file name",
            ));
        }
        if !scan.segments.is_empty() && header.first_lsn != scan.next_lsn {
            return Err(corruption(0, "segment does not continue the previous one"));
        }
        on_segment(&path, header.first_lsn);
        // No length limit but the file's own: reopening with a smaller `record_bytes_max`
        // must not turn acknowledged records into a "torn tail".
        let mut scanner = RecordScanner::new(&bytes, header, u32::MAX);
        let mut damage: Option<(u64, Damage)> = None;
        for item in scanner.by_ref() {
            match item {
                Ok(record) => {
                    scan.records += 1;
                    on_record(record.lsn, record.payload);
                }
                Err(found) => {
                    damage = Some(found);
                    break;
                }
            }
        }
        let valid_len = scanner.offset();
        if let Some((offset, kind)) = damage {
            // In the last segment, damage is a torn write unless a later record proves the
            // damaged one had been made durable before it was written.
            if !last || scanner.durable_claim_after_damage() >= scanner.next_lsn() {
                return Err(corruption(offset, kind.describe()));
            }
            // A run of zeros at the end is room the writer allocated ahead and never wrote
            // (see `wal::tail`): cut off with the torn bytes, but not counted as torn.
            let rest = &bytes[valid_len as usize..];
            let written = rest
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |last| last + 1);
            scan.torn = Some(TornTail::Records {
                path: path.clone(),
                valid_len,
                torn_bytes: written as u64,
            });
        }
        scan.next_lsn = scanner.next_lsn();
        scan.tail_len = valid_len;
        scan.segments.push(Segment { header, path });
    }
    Ok(scan)
}

/// Recovers the log in `dir` (which must exist): scans it and cuts off a torn tail.
pub(crate) fn recover(dir: &Path) -> Result<Recovered> {
    let scan = scan_log(dir, |_, _| {}, |_, _| {})?;
    let mut torn_tail_bytes = 0;
    match &scan.torn {
        Some(TornTail::ShortSegment { path, len }) => {
            std::fs::remove_file(path).map_err(|e| Error::io("remove torn segment", path, e))?;
            strata_fs::sync_dir(dir)?;
            torn_tail_bytes = *len;
        }
        Some(TornTail::Records {
            path,
            valid_len,
            torn_bytes,
        }) => {
            truncate(path, *valid_len)?;
            torn_tail_bytes = *torn_bytes;
        }
        None => {}
    }
    Ok(Recovered {
        report: Recovery {
            segments: scan.segments.len(),
            records: scan.records,
            torn_tail_bytes,
            next_lsn: scan.next_lsn,
        },
        tail_len: scan.tail_len,
        segments: scan.segments,
    })
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open for truncation", path, e))?;
    strata_fs::truncate_synced(&file, path, len)?;
    Ok(())
}

/// Creates a new segment: header written and synced, directory synced, before any record.
pub(crate) fn create_segment(dir: &Path, header: SegmentHeader) -> Result<(File, PathBuf)> {
    let path = segment_path(dir, header.first_lsn);
    let mut options = OpenOptions::new();
    // Read as well as write: the writer maps it.
    options.read(true).write(true).create_new(true);
    let mut file = options
        .open(&path)
        .map_err(|e| Error::io("create segment", &path, e))?;
    std::io::Write::write_all(&mut file, &header.encode())
        .and_then(|()| strata_fs::failpoint::check(crate::FP_SEGMENT_CREATE))
        .map_err(|e| Error::io("write segment header", &path, e))?;
    strata_fs::sync_file(&file, &path)?;
    strata_fs::sync_dir(dir)?;
    Ok((file, path))
}
