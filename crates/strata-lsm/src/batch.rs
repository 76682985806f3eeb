//! [`WriteBatch`]: operations applied atomically, and their encoding as one WAL record
//! (`docs/formats/write-batch.md`).
//!
//! Format 2 (written): the first sequence number in 7 bytes and the format byte `2`, then per
//! operation: kind `u8` (1 put, 0 delete), key length (varint), key, and for a put the value
//! length (varint) and value. Format 1 (read, and converted): first sequence number `u64`
//! (whose top byte, as every sequence number is below 2^56, is 0), operation count `u32`, then
//! per operation: kind `u8`, key length `u32`, key, value length `u32`, value. Little-endian.

use std::ops::Range;

use strata_memtable::ValueKind;

use crate::keys::{SEQ_MAX, escaped_len};

/// Where the header holds the first sequence number (its low 7 bytes).
const FIRST_SEQ_AT: Range<usize> = 0..7;
/// Where the header holds the format: 0 in format 1 (the top byte of a `u64` sequence number
/// below 2^56), [`FORMAT`] since.
const FORMAT_AT: usize = 7;
/// The format this code writes.
const FORMAT: u8 = 2;
const HEADER_BYTES: usize = FORMAT_AT + 1;
/// Format 1's header: first sequence number `u64`, operation count `u32`.
const V1_HEADER_BYTES: usize = 12;
/// The most an operation adds to its key and value: kind `u8`, two varint lengths.
const OP_HEADER_BYTES_MAX: usize = 1 + 5 + 5;

// A sequence number fits the header's 7 bytes.
const _: () = assert!(SEQ_MAX < 1 << 56);

/// Appends `value` as a LEB128 varint.
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

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
        let mut encoded = Vec::with_capacity(HEADER_BYTES + bytes + OP_HEADER_BYTES_MAX);
        encoded.resize(HEADER_BYTES, 0);
        encoded[FORMAT_AT] = FORMAT;
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
        write_varint(&mut self.encoded, key.len() as u64);
        self.encoded.extend_from_slice(key);
        if kind == ValueKind::Put {
            write_varint(&mut self.encoded, value.len() as u64);
            self.encoded.extend_from_slice(value);
        }
        self.count += 1;
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

    /// Key and value bytes of every operation (what [`with_capacity`](Self::with_capacity)
    /// makes room for).
    pub fn data_bytes(&self) -> usize {
        self.data_bytes
    }

    /// The longest key as the internal key encoding escapes it (zero bytes count twice).
    pub(crate) fn escaped_key_max(&self) -> usize {
        self.escaped_key_max
    }

    pub(crate) fn set_first_seq(&mut self, seq: u64) {
        debug_assert!(seq <= SEQ_MAX, "sequence number {seq} does not fit 7 bytes");
        self.encoded[FIRST_SEQ_AT].copy_from_slice(&seq.to_le_bytes()[FIRST_SEQ_AT]);
    }

    pub(crate) fn first_seq(&self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes[FIRST_SEQ_AT].copy_from_slice(&self.encoded[FIRST_SEQ_AT]);
        u64::from_le_bytes(bytes)
    }

    /// Decodes a WAL record of either format, checking its structure. A format 1 record comes
    /// back in today's encoding.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < HEADER_BYTES {
            return Err("write batch header truncated");
        }
        match bytes[FORMAT_AT] {
            FORMAT => {
                let mut batch = Self {
                    encoded: bytes.to_vec(),
                    count: 0,
                    data_bytes: 0,
                    escaped_key_max: 0,
                };
                let (mut count, mut data_bytes, mut escaped_key_max) = (0u32, 0, 0);
                for op in batch.raw_ops() {
                    let (_, key, value) = op?;
                    data_bytes += key.len() + value.len();
                    escaped_key_max = escaped_key_max.max(escaped_len(key));
                    count = count.checked_add(1).ok_or("write batch too long")?;
                }
                batch.count = count;
                batch.data_bytes = data_bytes;
                batch.escaped_key_max = escaped_key_max;
                Ok(batch)
            }
            0 => Self::decode_v1(bytes),
            _ => Err("unknown write batch format"),
        }
    }

    /// Decodes a format 1 record into a batch in today's encoding.
    fn decode_v1(bytes: &[u8]) -> Result<Self, &'static str> {
        let header = bytes
            .get(..V1_HEADER_BYTES)
            .ok_or("write batch header truncated")?;
        let first_seq = u64::from_le_bytes(header[0..8].try_into().map_err(|_| "bad sequence")?);
        let count = u32::from_le_bytes(header[8..12].try_into().map_err(|_| "bad count")?);
        let mut batch = Self::with_capacity(bytes.len());
        batch.set_first_seq(first_seq);
        let mut ops = V1Ops {
            bytes: &bytes[V1_HEADER_BYTES..],
        };
        while !ops.bytes.is_empty() {
            let (kind, key, value) = ops.next_op()?;
            batch.push(kind, key, value);
        }
        if batch.count != count {
            return Err("write batch count does not match its operations");
        }
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

/// Reads a varint-encoded length.
fn take_varint(bytes: &mut &[u8]) -> Result<usize, &'static str> {
    let mut value = 0u64;
    for shift in (0..35).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or("write batch operation truncated")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| "write batch length too large");
        }
    }
    Err("write batch length too large")
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
    if n > bytes.len() {
        return Err("write batch operation truncated");
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn take_kind(bytes: &mut &[u8]) -> Result<ValueKind, &'static str> {
    match take(bytes, 1)?[0] {
        0 => Ok(ValueKind::Delete),
        1 => Ok(ValueKind::Put),
        _ => Err("unknown write batch operation"),
    }
}

/// Format 1's operations: kind, `u32` key length, key, `u32` value length, value.
struct V1Ops<'a> {
    bytes: &'a [u8],
}

impl<'a> V1Ops<'a> {
    fn len(&mut self) -> Result<usize, &'static str> {
        let b = take(&mut self.bytes, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn next_op(&mut self) -> Result<(ValueKind, &'a [u8], &'a [u8]), &'static str> {
        let kind = take_kind(&mut self.bytes)?;
        let key_len = self.len()?;
        let key = take(&mut self.bytes, key_len)?;
        let value_len = self.len()?;
        let value = take(&mut self.bytes, value_len)?;
        Ok((kind, key, value))
    }
}

struct RawOps<'a> {
    bytes: &'a [u8],
}

impl<'a> Iterator for RawOps<'a> {
    type Item = Result<(ValueKind, &'a [u8], &'a [u8]), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.is_empty() {
            return None;
        }
        let mut op = || {
            let bytes = &mut self.bytes;
            let kind = take_kind(bytes)?;
            let key_len = take_varint(bytes)?;
            let key = take(bytes, key_len)?;
            let value: &[u8] = match kind {
                ValueKind::Put => {
                    let value_len = take_varint(bytes)?;
                    take(bytes, value_len)?
                }
                ValueKind::Delete => &[],
            };
            Ok((kind, key, value))
        };
        let result = op();
        if result.is_err() {
            self.bytes = &[];
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Op = (bool, Vec<u8>, Vec<u8>);

    fn ops_of(batch: &WriteBatch) -> Vec<Op> {
        batch
            .ops()
            .map(|(kind, k, v)| (kind == ValueKind::Put, k.to_vec(), v.to_vec()))
            .collect()
    }

    fn built(ops: &[Op], seq: u64) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (put, k, v) in ops {
            if *put {
                batch.put(k, v);
            } else {
                batch.delete(k);
            }
        }
        batch.set_first_seq(seq);
        batch
    }

    /// A format 1 record, as the code before format 2 wrote it.
    fn format_1(ops: &[Op], seq: u64) -> Vec<u8> {
        let mut out = seq.to_le_bytes().to_vec();
        out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
        for (put, k, v) in ops {
            out.push(u8::from(*put));
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            let v: &[u8] = if *put { v } else { &[] };
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    fn op() -> impl Strategy<Value = Op> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(put, k, v)| (put, k, if put { v } else { Vec::new() }))
    }

    proptest! {
        #[test]
        fn a_record_of_either_format_decodes_to_the_operations_written(
            ops in proptest::collection::vec(op(), 0..8),
            seq in 0..=SEQ_MAX,
        ) {
            let batch = built(&ops, seq);
            let logged = Logged(batch.clone());
            let decoded = WriteBatch::decode(logged.as_ref()).expect("decodes");
            prop_assert_eq!(decoded.first_seq(), seq);
            prop_assert_eq!(decoded.len(), ops.len());
            prop_assert_eq!(decoded.data_bytes(), batch.data_bytes());
            prop_assert_eq!(ops_of(&decoded), ops.clone());
            let old = WriteBatch::decode(&format_1(&ops, seq)).expect("format 1 decodes");
            prop_assert_eq!(old.first_seq(), seq);
            prop_assert_eq!(ops_of(&old), ops.clone());
            // Converted, it is the same record as one written today.
            let converted = Logged(old);
            prop_assert_eq!(converted.as_ref(), logged.as_ref());
        }

        #[test]
        fn a_cut_or_damaged_record_is_an_error_or_other_operations_never_a_panic(
            ops in proptest::collection::vec(op(), 1..4),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let today = Logged(built(&ops, 7));
            for bytes in [today.as_ref().to_vec(), format_1(&ops, 7)] {
                for cut in 0..bytes.len() {
                    let _ = WriteBatch::decode(&bytes[..cut]);
                }
                let mut damaged = bytes.clone();
                let i = at.index(damaged.len());
                damaged[i] ^= flip;
                let _ = WriteBatch::decode(&damaged);
            }
        }
    }

    #[test]
    fn a_single_put_costs_eleven_bytes_beside_its_key_and_value() {
        let mut batch = WriteBatch::new();
        batch.put(&[7; 16], &[9; 100]);
        assert_eq!(Logged(batch).as_ref().len(), 16 + 100 + 11);
    }
}
