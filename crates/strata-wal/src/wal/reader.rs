//! Reading records from any LSN still in the log: [`Wal::read_from`] and [`WalReader`].

use super::Wal;
use crate::error::{Error, Result};
use crate::format::{Lsn, RecordScanner, SEGMENT_HEADER_BYTES};
use crate::recovery::{Segment, read_file};

impl Wal {
    /// Reads every record from `lsn` on that was written when this is called.
    ///
    /// A reader made before a [`truncate_after`](Self::truncate_after) may return records
    /// written after the cut under the same LSNs; make a new reader after truncating.
    ///
    /// # Errors
    ///
    /// [`Error::LsnOutOfRange`] if `lsn` was purged or is beyond the next LSN.
    pub fn read_from(&self, lsn: Lsn) -> Result<WalReader> {
        let state = self.inner.state.lock();
        let first_lsn = state
            .segments
            .first()
            .map_or(state.next_lsn, |s| s.header.first_lsn);
        if lsn < first_lsn || lsn > state.written_lsn + 1 {
            return Err(Error::LsnOutOfRange {
                lsn,
                first_lsn,
                next_lsn: state.next_lsn,
            });
        }
        let start = state
            .segments
            .partition_point(|s| s.header.first_lsn <= lsn)
            .saturating_sub(1);
        Ok(WalReader {
            segments: state.segments[start..].to_vec(),
            next_segment: 0,
            current: None,
            offset: 0,
            scan_lsn: 0,
            next_lsn: lsn,
            end_lsn: state.written_lsn,
        })
    }
}

/// An iterator over records from some LSN on, as [`Wal::read_from`] returns it.
///
/// Reads one whole segment at a time (bounded by the segment size plus one record).
#[derive(Debug)]
pub struct WalReader {
    segments: Vec<Segment>,
    next_segment: usize,
    /// The segment being read, once loaded.
    current: Option<Vec<u8>>,
    /// Where the next record starts in `current`, and the LSN it must have.
    offset: u64,
    scan_lsn: Lsn,
    /// The first LSN to return, and the last that was written when the reader was made.
    next_lsn: Lsn,
    end_lsn: Lsn,
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_lsn > self.end_lsn {
                return None;
            }
            let segment = self.segments.get(self.next_segment)?;
            let header = segment.header;
            if self.current.is_none() {
                match read_file(&segment.path) {
                    Ok(bytes) => self.current = Some(bytes),
                    Err(e) => return Some(Err(e)),
                }
                self.offset = SEGMENT_HEADER_BYTES as u64;
                self.scan_lsn = header.first_lsn;
            }
            let bytes = self.current.as_deref().unwrap_or_default();
            let mut scanner =
                RecordScanner::resume(bytes, header, self.scan_lsn, self.offset, u32::MAX);
            match scanner.next() {
                None => {
                    self.next_segment += 1;
                    self.current = None;
                }
                Some(Ok(record)) => {
                    self.offset = scanner.offset();
                    self.scan_lsn = record.lsn + 1;
                    if record.lsn >= self.next_lsn {
                        self.next_lsn = record.lsn + 1;
                        return Some(Ok((record.lsn, record.payload.to_vec())));
                    }
                }
                // A write still in flight when the reader was made ends the tail: not damage.
                Some(Err(_)) if self.scan_lsn > self.end_lsn => return None,
                Some(Err((offset, damage))) => {
                    return Some(Err(Error::Corruption {
                        segment: segment.path.clone(),
                        offset,
                        reason: damage.describe(),
                    }));
                }
            }
        }
    }
}
