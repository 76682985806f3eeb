//! Blocks: prefix-compressed sorted entries with restart points, built and decoded.
//!
//! An entry is `shared: u16 | unshared: u16 | value_len: u32 | key suffix | value`, all
//! little-endian, where `shared` counts the bytes the key has in common with the previous key
//! (0 at a restart point). The block ends with the restart offsets (`u32` each) and their count
//! (`u32`).

use bytes::Bytes;

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
        self.buf.extend_from_slice(&(shared as u16).to_le_bytes());
        self.buf.extend_from_slice(&(unshared as u16).to_le_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
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
    pub fn decode(data: Bytes) -> Result<Self, &'static str> {
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
            let shared = le_u16(bytes, at).ok_or("entry header truncated")? as usize;
            let unshared = le_u16(bytes, at + 2).ok_or("entry header truncated")? as usize;
            let value_len = le_u32(bytes, at + 4).ok_or("entry header truncated")? as usize;
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
            let key_at = at + 8;
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

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Roughly the memory the decoded block holds.
    pub fn charge(&self) -> usize {
        self.data.len() + self.keys.len() + self.entries.len() * 16
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
        let block = Block::decode(Bytes::from(b.finish())).expect("decodes");
        assert_eq!(block.len(), 20);
        for (i, (k, v)) in entries.iter().enumerate() {
            assert_eq!(block.key(i), &k[..]);
            assert_eq!(block.value_slice(i), &v[..]);
        }
        assert_eq!(block.seek(b"key-0005"), 5);
        assert_eq!(block.seek(b"key-00055"), 6);
        assert_eq!(block.seek(b"zzz"), 20);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut b = BlockBuilder::new(2);
        for i in 0..10u8 {
            b.add(&[b'k', i], &[i; 5]);
        }
        let bytes = b.finish();
        for cut in 0..bytes.len() {
            let _ = Block::decode(Bytes::copy_from_slice(&bytes[..cut]));
        }
    }
}
