//! The I/O a commit leader does with the state lock released: copy the queued records (and a
//! large record straight from its caller's buffer) into the tail segment's map, seal and create
//! segments, `fdatasync`, and count it all.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::metrics::Counters;
use super::{Chunk, Writer};
use crate::error::{Error, Result};
use crate::recovery::{Segment, create_segment};

pub(super) struct WriteDone {
    pub(super) buffers: Vec<Vec<u8>>,
    pub(super) new_segments: Vec<Segment>,
    pub(super) records_written: u64,
}

pub(super) fn write_chunks(
    dir: &Path,
    writer: &mut Writer,
    chunks: Vec<Chunk>,
    direct: Option<(&[u8], &[u8])>,
    sync: bool,
    already_unsynced: u64,
    counters: &Counters,
) -> Result<WriteDone> {
    let mut done = WriteDone {
        buffers: Vec::with_capacity(chunks.len()),
        new_segments: Vec::new(),
        records_written: 0,
    };
    let mut unsynced = already_unsynced;
    for mut chunk in chunks {
        if let Some(header) = chunk.new_segment {
            // Seal the current segment: cut to its records and durable before anything goes
            // into the next one, so recovery can be strict about every segment but the last.
            writer.trim()?;
            sync_segment(writer, unsynced, counters)?;
            unsynced = 0;
            let (file, path) = create_segment(dir, header)?;
            counters.rotations.fetch_add(1, Ordering::Relaxed);
            done.new_segments.push(Segment {
                header,
                path: path.clone(),
            });
            *writer = Writer::new(
                file,
                path,
                header,
                crate::format::SEGMENT_HEADER_BYTES as u64,
                writer.mapped(),
            );
        }
        if !chunk.bytes.is_empty() {
            strata_fs::failpoint::check(crate::FP_WRITE)
                .and_then(|()| writer.append(&[&chunk.bytes]))
                .map_err(|e| Error::io("write", &writer.path, e))?;
            counters.writes.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            counters.records.fetch_add(chunk.records, Ordering::Relaxed);
            unsynced += chunk.records;
            done.records_written += chunk.records;
        }
        chunk.bytes.clear();
        done.buffers.push(chunk.bytes);
    }
    if let Some((header, payload)) = direct {
        strata_fs::failpoint::check(crate::FP_WRITE)
            .and_then(|()| writer.append(&[header, payload]))
            .map_err(|e| Error::io("write", &writer.path, e))?;
        counters.writes.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add((header.len() + payload.len()) as u64, Ordering::Relaxed);
        counters.records.fetch_add(1, Ordering::Relaxed);
        unsynced += 1;
        done.records_written += 1;
    }
    if sync {
        sync_segment(writer, unsynced, counters)?;
    }
    Ok(done)
}

fn sync_segment(writer: &mut Writer, records: u64, counters: &Counters) -> Result<()> {
    let start = Instant::now();
    // The WAL's own failpoint stays (tests of the layers above name it), before strata-fs's.
    strata_fs::failpoint::check(crate::FP_FSYNC)
        .map_err(|e| Error::io("fdatasync", &writer.path, e))?;
    strata_fs::sync_file_data(&writer.file, &writer.path)?;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    counters.syncs.fetch_add(1, Ordering::Relaxed);
    counters
        .synced_records
        .fetch_add(records, Ordering::Relaxed);
    counters
        .sync_micros_total
        .fetch_add(micros, Ordering::Relaxed);
    counters
        .sync_micros_max
        .fetch_max(micros, Ordering::Relaxed);
    Ok(())
}
