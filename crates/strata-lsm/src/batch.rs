//! [`WriteBatch`]: operations applied atomically, and their encoding as one WAL record.
//!
//! Record: first sequence number `u64`, operation count `u32`, then per operation: kind `u8`
//! (1 put, 0 delete), key length `u32`, key, value length `u32`, value. Little-endian.

use std::ops::Range;

use strata_memtable::ValueKind;

use crate::keys::escaped_len;

/// Where the header holds the first sequence number.
const FIRST_SEQ_AT: Range<usize> = 0..8;
/// Where the header holds the operation count.
const COUNT_AT: Range<usize> = 8..12;
const HEADER_BYTES: usize = COUNT_AT.end;
/// What an operation adds to its key and value: kind `u8`, key and value lengths `u32`.
const OP_HEADER_BYTES: usize = 1 + 4 + 4;

/// Puts and deletes applied together: all or none, at consecutive sequence numbers.
#[derive(Debug, Clone)]
pub struct WriteBatch {
    encoded: Vec<u8>,
    count: u32,
    /// Key and value bytes of every operation.
    data_bytes: usize,
    /// The longest key, zero bytes counted twice (as the internal key escapes them).
    escaped_key_max: usize,
}

impl Default for WriteBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// A batch on its way to the WAL: its encoding is the record (`docs/formats/write-batch.md`).
/// Crate-private, so that the encoding is not part of `WriteBatch`'s API.
#[derive(Debug)]
pub(crate) struct Logged(pub WriteBatch);

impl AsRef<[u8]> for Logged {
    fn as_ref(&self) -> &[u8] {
        &self.0.encoded
    }
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of keys and values without reallocating.
    pub fn with_capacity(bytes: usize) -> Self {
        // Room for one operation's header too: a batch of one needs no reallocation.
        let mut encoded = Vec::with_capacity(HEADER_BYTES + bytes + OP_HEADER_BYTES);
        encoded.resize(HEADER_BYTES, 0);
        Self {
            encoded,
            count: 0,
            data_bytes: 0,
            escaped_key_max: 0,
        }
    }

    fn push(&mut self, kind: ValueKind, key: &[u8], value: &[u8]) {
        self.data_bytes += key.len() + value.len();
        self.escaped_key_max = self.escaped_key_max.max(escaped_len(key));
        self.encoded.push(kind as u8);
        self.encoded
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.encoded.extend_from_slice(key);
        self.encoded
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.encoded.extend_from_slice(value);
        self.count += 1;
        self.encoded[COUNT_AT].copy_from_slice(&self.count.to_le_bytes());
    }

    /// Adds a put.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.push(ValueKind::Put, key, value);
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) {
        self.push(ValueKind::Delete, key, &[]);
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Key and value bytes of every operation.
    pub(crate) fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The longest key as the internal key encoding escapes it (zero bytes count twice).
    pub(crate) fn escaped_key_max(&self) -> usize {
        self.escaped_key_max
    }

    pub(crate) fn set_first_seq(&mut self, seq: u64) {
        self.encoded[FIRST_SEQ_AT].copy_from_slice(&seq.to_le_bytes());
    }

    pub(crate) fn first_seq(&self) -> u64 {
        u64::from_le_bytes(self.encoded[FIRST_SEQ_AT].try_into().unwrap_or([0; 8]))
    }

    /// Decodes a WAL record, checking its structure.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < HEADER_BYTES {
            return Err("write batch header truncated");
        }
        let count = u32::from_le_bytes(bytes[COUNT_AT].try_into().map_err(|_| "bad count")?);
        let mut batch = Self {
            encoded: bytes.to_vec(),
            count,
            data_bytes: 0,
            escaped_key_max: 0,
        };
        let mut seen = 0u32;
        let (mut data_bytes, mut escaped_key_max) = (0, 0);
        for op in batch.raw_ops() {
            let (_, key, value) = op?;
            data_bytes += key.len() + value.len();
            escaped_key_max = escaped_key_max.max(escaped_len(key));
            seen += 1;
        }
        if seen != count {
            return Err("write batch count does not match its operations");
        }
        batch.data_bytes = data_bytes;
        batch.escaped_key_max = escaped_key_max;
        Ok(batch)
    }

    fn raw_ops(&self) -> RawOps<'_> {
        RawOps {
            bytes: &self.encoded[HEADER_BYTES..],
        }
    }

    /// The operations, in order: kind, key, value. Only on a batch this crate built or
    /// [`decode`](Self::decode)d, which checked the structure.
    pub(crate) fn ops(&self) -> impl Iterator<Item = (ValueKind, &[u8], &[u8])> {
        self.raw_ops().map_while(Result::ok)
    }
}

struct RawOps<'a> {
    bytes: &'a [u8],
}

impl<'a> RawOps<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.bytes.len() {
            return Err("write batch operation truncated");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
}

impl<'a> Iterator for RawOps<'a> {
    type Item = Result<(ValueKind, &'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let mut op = || {
            let kind = match self.take(1)?[0] {
                0 => ValueKind::Delete,
                1 => ValueKind::Put,
                _ => return Err("unknown write batch operation"),
            };
            let key_len = self.len()?;
            let key = self.take(key_len)?;
            let value_len = self.len()?;
            let value = self.take(value_len)?;
            Ok((kind, key, value))
        };
        let result = op();
        if result.is_err() {
            self.bytes = &[];
        }
        Some(result)
    }
}
