//! Blocks: prefix-compressed sorted entries with restart points, built and decoded.
//!
//! An entry is `shared | unshared | value_len | key suffix | value`, where `shared` counts the
//! bytes the key has in common with the previous key (0 at a restart point). In format 2 the
//! three lengths are LEB128 varints (one byte each below 128); in format 1 they were fixed
//! `u16 | u16 | u32`, little-endian ([`EntryHeader`]). The block ends with the restart offsets
//! (`u32` each) and their count (`u32`).
//!
//! Data blocks are read in place ([`DataBlock`] and [`BlockCursor`]); the index and properties
//! blocks, read once when a table opens, are decoded whole ([`Block`]).

use bytes::Bytes;

/// How an entry's three lengths are written: fixed-width in format 1 tables, varints since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryHeader {
    /// `shared: u16 | unshared: u16 | value_len: u32`, little-endian (format 1).
    Fixed,
    /// Three LEB128 varints of at most 32 bits (format 2).
    Varint,
}

impl EntryHeader {
    /// The header the tables of format `version` use.
    pub fn for_version(version: u32) -> Self {
        if version >= 2 {
            EntryHeader::Varint
        } else {
            EntryHeader::Fixed
        }
    }

    /// Reads the header at `at`: `(shared, unshared, value_len, where the key suffix starts)`;
    /// `None` if it is truncated or malformed.
    fn read(self, bytes: &[u8], at: usize) -> Option<(usize, usize, usize, usize)> {
        match self {
            EntryHeader::Fixed => Some((
                le_u16(bytes, at)? as usize,
                le_u16(bytes, at + 2)? as usize,
                le_u32(bytes, at + 4)? as usize,
                at + 8,
            )),
            EntryHeader::Varint => {
                let (shared, at) = read_varint(bytes, at)?;
                let (unshared, at) = read_varint(bytes, at)?;
                let (value_len, at) = read_varint(bytes, at)?;
                Some((shared as usize, unshared as usize, value_len as usize, at))
            }
        }
    }
}

/// Appends `value` as a LEB128 varint.
fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The LEB128 varint at `at` and the offset just past it; `None` if it is truncated or does
/// not fit 32 bits.
fn read_varint(bytes: &[u8], mut at: usize) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        let bits = u32::from(byte & 0x7f);
        if shift == 28 && bits > 0x0f {
            return None; // Past 32 bits.
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// Builds one block.
#[derive(Debug)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    restart_interval: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    pub fn new(restart_interval: usize) -> Self {
        Self {
            buf: Vec::with_capacity(8 * 1024),
            restarts: Vec::new(),
            since_restart: 0,
            restart_interval: restart_interval.max(1),
            last_key: Vec::new(),
            entries: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The size the block would have if finished now.
    pub fn estimated_bytes(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// Adds an entry; `key` must sort after the previous one (the table builder checks) and fit
    /// the limits.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.since_restart == 0 {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
                .min(u16::MAX as usize)
        };
        let unshared = key.len() - shared;
        // The table builder limits keys to `u16` and values to `u32` lengths.
        write_varint(&mut self.buf, shared as u32);
        write_varint(&mut self.buf, unshared as u32);
        write_varint(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart = (self.since_restart + 1) % self.restart_interval;
        self.entries += 1;
    }

    /// Finishes the block and returns its bytes; the builder is then reset.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.since_restart = 0;
        self.last_key.clear();
        self.entries = 0;
        self.buf = Vec::with_capacity(out.capacity());
        out
    }
}

/// A decoded block: keys rebuilt into one buffer, values as ranges of the block's bytes (so
/// they are handed out without copying).
#[derive(Debug, Clone)]
pub(crate) struct Block {
    data: Bytes,
    keys: Vec<u8>,
    /// Per entry: key start and end in `keys`, value start and end in `data`.
    entries: Vec<(u32, u32, u32, u32)>,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl Block {
    /// Decodes and checks a block's contents (already verified against their CRC).
    ///
    /// # Errors
    ///
    /// A description of the first structural problem.
    pub fn decode(data: Bytes, header: EntryHeader) -> Result<Self, &'static str> {
        let bytes = &data[..];
        let count = le_u32(bytes, bytes.len().checked_sub(4).ok_or("block too short")?)
            .ok_or("block too short")? as usize;
        let restarts_at = bytes
            .len()
            .checked_sub(4)
            .and_then(|n| n.checked_sub(count.checked_mul(4)?))
            .ok_or("restart array runs past the block")?;
        let mut keys: Vec<u8> = Vec::with_capacity(restarts_at);
        let mut entries = Vec::new();
        let mut at = 0usize;
        let mut previous = (0usize, 0usize);
        let mut restarts_seen = 0usize;
        while at < restarts_at {
            let restart = le_u32(bytes, restarts_at + 4 * restarts_seen);
            let (shared, unshared, value_len, key_at) = header
                .read(&bytes[..restarts_at], at)
                .ok_or("entry header truncated")?;
            if restarts_seen < count && restart == Some(at as u32) {
                if shared != 0 {
                    return Err("restart entry shares a prefix");
                }
                restarts_seen += 1;
            }
            let (prev_start, prev_end) = previous;
            if shared > prev_end - prev_start {
                return Err("entry shares more than the previous key");
            }
            let value_at = key_at
                .checked_add(unshared)
                .ok_or("entry runs past the block")?;
            let end = value_at
                .checked_add(value_len)
                .ok_or("entry runs past the block")?;
            if end > restarts_at {
                return Err("entry runs past the block");
            }
            let start = keys.len();
            keys.extend_from_within(prev_start..prev_start + shared);
            keys.extend_from_slice(&bytes[key_at..value_at]);
            if !entries.is_empty() && keys[prev_start..prev_end] >= keys[start..] {
                return Err("keys out of order in block");
            }
            entries.push((start as u32, keys.len() as u32, value_at as u32, end as u32));
            previous = (start, keys.len());
            at = end;
        }
        if restarts_seen != count {
            return Err("restart array does not match the entries");
        }
        Ok(Self {
            data,
            keys,
            entries,
        })
    }

    pub fn empty() -> Self {
        Self {
            data: Bytes::new(),
            keys: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn key(&self, i: usize) -> &[u8] {
        let (s, e, _, _) = self.entries[i];
        &self.keys[s as usize..e as usize]
    }

    pub fn value(&self, i: usize) -> Bytes {
        let (_, _, s, e) = self.entries[i];
        self.data.slice(s as usize..e as usize)
    }

    pub fn value_slice(&self, i: usize) -> &[u8] {
        let (_, _, s, e) = self.entries[i];
        &self.data[s as usize..e as usize]
    }

    /// The index of the first entry whose key is at least `key` (`len()` if none).
    pub fn seek(&self, key: &[u8]) -> usize {
        self.entries
            .partition_point(|&(s, e, _, _)| &self.keys[s as usize..e as usize] < key)
    }
}

/// An entry's header and where its parts lie in the block.
struct RawEntry {
    shared: usize,
    key_at: usize,
    value_at: usize,
    end: usize,
}

/// A data block read in place, without decoding it first: a [`BlockCursor`] rebuilds each
/// entry's key as it walks, and a seek binary-searches the restart points (whose keys are
/// stored whole) before walking at most one restart interval. Cloning shares the bytes.
///
/// Only the restart array is checked up front; an entry is checked when a cursor reaches it,
/// and a damaged one is an error there (never a panic, never a wrong entry).
#[derive(Debug, Clone)]
pub(crate) struct DataBlock {
    data: Bytes,
    header: EntryHeader,
    /// Where the entries end and the restart array begins.
    restarts_at: usize,
    restarts: usize,
}

impl DataBlock {
    /// Checks the block's restart array (its contents were already verified against their
    /// CRC).
    ///
    /// # Errors
    ///
    /// A description of the first structural problem.
    pub fn new(data: Bytes, header: EntryHeader) -> Result<Self, &'static str> {
        let bytes = &data[..];
        let count_at = bytes.len().checked_sub(4).ok_or("block too short")?;
        let count = le_u32(bytes, count_at).ok_or("block too short")? as usize;
        let restarts_at = count
            .checked_mul(4)
            .and_then(|n| count_at.checked_sub(n))
            .ok_or("restart array runs past the block")?;
        if (count == 0) != (restarts_at == 0) {
            return Err("restart array does not match the entries");
        }
        let mut previous = None;
        for i in 0..count {
            let restart = le_u32(bytes, restarts_at + 4 * i).ok_or("block too short")? as usize;
            let in_order = match previous {
                None => restart == 0,
                Some(p) => restart > p,
            };
            if !in_order || restart >= restarts_at {
                return Err("restart array does not match the entries");
            }
            previous = Some(restart);
        }
        Ok(Self {
            data,
            header,
            restarts_at,
            restarts: count,
        })
    }

    /// The memory the block holds, for a cache's accounting.
    pub fn charge(&self) -> usize {
        self.data.len()
    }

    /// The offset of restart point `i` (checked by [`new`](Self::new)).
    fn restart(&self, i: usize) -> usize {
        le_u32(&self.data, self.restarts_at + 4 * i).map_or(0, |r| r as usize)
    }

    fn entry_at(&self, at: usize) -> Result<RawEntry, &'static str> {
        let (shared, unshared, value_len, key_at) = self
            .header
            .read(&self.data[..self.restarts_at], at)
            .ok_or("entry header truncated")?;
        let value_at = key_at + unshared;
        let end = value_at
            .checked_add(value_len)
            .ok_or("entry runs past the block")?;
        if end > self.restarts_at {
            return Err("entry runs past the block");
        }
        Ok(RawEntry {
            shared,
            key_at,
            value_at,
            end,
        })
    }

    /// The whole key stored at restart point `i`.
    fn restart_key(&self, i: usize) -> Result<&[u8], &'static str> {
        let entry = self.entry_at(self.restart(i))?;
        if entry.shared != 0 {
            return Err("restart entry shares a prefix");
        }
        Ok(&self.data[entry.key_at..entry.value_at])
    }

    /// The value the cursor is on.
    pub fn value(&self, cursor: &BlockCursor) -> Bytes {
        self.data.slice(cursor.value.0..cursor.value.1)
    }

    /// The value the cursor is on, borrowed.
    pub fn value_slice(&self, cursor: &BlockCursor) -> &[u8] {
        &self.data[cursor.value.0..cursor.value.1]
    }
}

/// A position in a [`DataBlock`]: the current entry's rebuilt key and where its value and
/// the next entry are. One cursor may walk many blocks; its key buffer is reused.
#[derive(Debug, Default)]
pub(crate) struct BlockCursor {
    key: Vec<u8>,
    /// Where the current entry starts.
    at: usize,
    /// Where the next entry starts.
    next: usize,
    /// The next restart point at or after `next`, so that a walk checks every restart entry
    /// it crosses stores its key whole.
    next_restart: usize,
    value: (usize, usize),
    valid: bool,
}

impl BlockCursor {
    pub fn valid(&self) -> bool {
        self.valid
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Starts a walk at restart point `i` (not yet on an entry).
    fn start_at_restart(&mut self, block: &DataBlock, i: usize) {
        self.key.clear();
        self.next = if i < block.restarts {
            block.restart(i)
        } else {
            block.restarts_at
        };
        self.next_restart = i;
        self.valid = false;
    }

    /// Moves onto the entry at `self.next`; false (and not valid) past the last.
    fn step(&mut self, block: &DataBlock) -> Result<bool, &'static str> {
        if self.next >= block.restarts_at {
            self.valid = false;
            return Ok(false);
        }
        let at = self.next;
        let entry = block.entry_at(at)?;
        let at_restart =
            self.next_restart < block.restarts && block.restart(self.next_restart) == at;
        if at_restart {
            if entry.shared != 0 {
                return Err("restart entry shares a prefix");
            }
            self.next_restart += 1;
        }
        if entry.shared > self.key.len() {
            return Err("entry shares more than the previous key");
        }
        let suffix = &block.data[entry.key_at..entry.value_at];
        // Keys strictly increase: past the shared prefix, the suffix sorts after the previous
        // key's rest (a walk from a restart point has no previous key to compare).
        if self.valid && suffix <= &self.key[entry.shared..] {
            return Err("keys out of order in block");
        }
        self.key.truncate(entry.shared);
        self.key.extend_from_slice(suffix);
        self.at = at;
        self.next = entry.end;
        self.value = (entry.value_at, entry.end);
        self.valid = true;
        Ok(true)
    }

    /// Moves to the next entry; false (and not valid) past the last.
    pub fn advance(&mut self, block: &DataBlock) -> Result<bool, &'static str> {
        self.step(block)
    }

    /// Positions on the first entry; false if the block is empty.
    pub fn seek_to_first(&mut self, block: &DataBlock) -> Result<bool, &'static str> {
        self.start_at_restart(block, 0);
        self.step(block)
    }

    /// Positions on the last entry; false if the block is empty.
    pub fn seek_to_last(&mut self, block: &DataBlock) -> Result<bool, &'static str> {
        self.start_at_restart(block, block.restarts.saturating_sub(1));
        while self.next < block.restarts_at {
            self.step(block)?;
        }
        Ok(self.valid)
    }

    /// Positions on the first entry whose key is at least `target`; false (and not valid) if
    /// there is none.
    pub fn seek(&mut self, block: &DataBlock, target: &[u8]) -> Result<bool, &'static str> {
        // The first restart point whose key is not below the target; the entry sought is at
        // it or in the interval before it.
        let (mut low, mut high) = (0, block.restarts);
        while low < high {
            let mid = low + (high - low) / 2;
            if block.restart_key(mid)? < target {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        self.start_at_restart(block, low.saturating_sub(1));
        while self.step(block)? {
            if self.key.as_slice() >= target {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves to the previous entry; false (and not valid) before the first.
    pub fn prev(&mut self, block: &DataBlock) -> Result<bool, &'static str> {
        let current = self.at;
        if !self.valid || current == 0 {
            self.valid = false;
            return Ok(false);
        }
        // Walk from the last restart point before the current entry up to the entry before it.
        let (mut low, mut high) = (0, block.restarts);
        while low < high {
            let mid = low + (high - low) / 2;
            if block.restart(mid) < current {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        self.start_at_restart(block, low.saturating_sub(1));
        while self.next < current {
            if !self.step(block)? {
                break;
            }
        }
        if self.next != current {
            return Err("entries do not end where the next begins");
        }
        Ok(self.valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_prefix_compression() {
        let mut b = BlockBuilder::new(3);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..20u32)
            .map(|i| {
                (
                    format!("key-{i:04}").into_bytes(),
                    vec![i as u8; i as usize],
                )
            })
            .collect();
        for (k, v) in &entries {
            b.add(k, v);
        }
        let block = Block::decode(Bytes::from(b.finish()), EntryHeader::Varint).expect("decodes");
        assert_eq!(block.len(), 20);
        for (i, (k, v)) in entries.iter().enumerate() {
            assert_eq!(block.key(i), &k[..]);
            assert_eq!(block.value_slice(i), &v[..]);
        }
        assert_eq!(block.seek(b"key-0005"), 5);
        assert_eq!(block.seek(b"key-00055"), 6);
        assert_eq!(block.seek(b"zzz"), 20);
    }

    fn built(entries: &std::collections::BTreeMap<Vec<u8>, Vec<u8>>, interval: usize) -> DataBlock {
        let mut b = BlockBuilder::new(interval);
        for (k, v) in entries {
            b.add(k, v);
        }
        DataBlock::new(Bytes::from(b.finish()), EntryHeader::Varint)
            .expect("a block just built is well formed")
    }

    proptest::proptest! {
        #[test]
        fn a_cursor_seeks_walks_and_steps_back_as_the_sorted_entries_do(
            entries in proptest::collection::btree_map(
                proptest::collection::vec(proptest::prelude::prop_oneof![
                    proptest::strategy::Just(0u8), proptest::strategy::Just(b'a'),
                    proptest::strategy::Just(b'b'), proptest::strategy::Just(0xff)], 0..6),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
                0..40),
            interval in 1usize..6,
            targets in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::prop_oneof![
                    proptest::strategy::Just(0u8), proptest::strategy::Just(b'a'),
                    proptest::strategy::Just(b'b'), proptest::strategy::Just(0xff)], 0..6),
                0..10),
        ) {
            let block = built(&entries, interval);
            let model: Vec<(&Vec<u8>, &Vec<u8>)> = entries.iter().collect();
            let mut cursor = BlockCursor::default();
            // Forward from the first entry.
            let mut seen = Vec::new();
            let mut on = cursor.seek_to_first(&block).expect("walks");
            while on {
                seen.push((cursor.key().to_vec(), block.value_slice(&cursor).to_vec()));
                on = cursor.advance(&block).expect("walks");
            }
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                model.iter().map(|(k, v)| ((*k).clone(), (*v).clone())).collect();
            proptest::prop_assert_eq!(&seen, &want);
            // Backward from the last.
            let mut back = Vec::new();
            let mut on = cursor.seek_to_last(&block).expect("walks");
            while on {
                back.push(cursor.key().to_vec());
                on = cursor.prev(&block).expect("walks");
            }
            let want_back: Vec<Vec<u8>> = model.iter().rev().map(|(k, _)| (*k).clone()).collect();
            proptest::prop_assert_eq!(back, want_back);
            // Seeks land on the first key at or after the target, and step both ways from it.
            for target in &targets {
                let at = model.partition_point(|(k, _)| k.as_slice() < target.as_slice());
                let found = cursor.seek(&block, target).expect("seeks");
                proptest::prop_assert_eq!(found, at < model.len());
                if found {
                    proptest::prop_assert_eq!(cursor.key(), model[at].0.as_slice());
                    let before = cursor.prev(&block).expect("steps back");
                    proptest::prop_assert_eq!(before, at > 0);
                    if before {
                        proptest::prop_assert_eq!(cursor.key(), model[at - 1].0.as_slice());
                    }
                }
            }
        }
    }

    #[test]
    fn a_damaged_data_block_is_an_error_or_a_walk_never_a_panic() {
        let entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = (0..30u8)
            .map(|i| (vec![b'k', i / 4, i], vec![i; usize::from(i % 5)]))
            .collect();
        let mut b = BlockBuilder::new(3);
        for (k, v) in &entries {
            b.add(k, v);
        }
        let good = b.finish();
        let mut damaged_and_caught = 0;
        for at in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = good.clone();
                bytes[at] ^= flip;
                let Ok(block) = DataBlock::new(Bytes::from(bytes), EntryHeader::Varint) else {
                    damaged_and_caught += 1;
                    continue;
                };
                let mut cursor = BlockCursor::default();
                let mut walk = || -> Result<(), &'static str> {
                    let mut on = cursor.seek_to_first(&block)?;
                    while on {
                        on = cursor.advance(&block)?;
                    }
                    let mut on = cursor.seek_to_last(&block)?;
                    while on {
                        on = cursor.prev(&block)?;
                    }
                    cursor.seek(&block, b"k\x03")?;
                    Ok(())
                };
                if walk().is_err() {
                    damaged_and_caught += 1;
                }
            }
        }
        // Most damage to the headers and restart array is caught without a CRC's help.
        assert!(damaged_and_caught > 0);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut b = BlockBuilder::new(2);
        for i in 0..10u8 {
            b.add(&[b'k', i], &[i; 5]);
        }
        let bytes = b.finish();
        for cut in 0..bytes.len() {
            let _ = Block::decode(Bytes::copy_from_slice(&bytes[..cut]), EntryHeader::Varint);
            if let Ok(block) =
                DataBlock::new(Bytes::copy_from_slice(&bytes[..cut]), EntryHeader::Varint)
            {
                let mut cursor = BlockCursor::default();
                let _ = cursor.seek_to_last(&block);
                let _ = cursor.seek(&block, &[b'k', 5]);
            }
        }
    }
}
