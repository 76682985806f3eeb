//! The on-disk format: segment names, the segment header, record framing, and the scanner that
//! recovery, readers and the fuzz target share. Described byte by byte in `docs/formats/wal.md`.

use std::path::{Path, PathBuf};

/// A log sequence number. The first record of a new log is [`FIRST_LSN`]; `0` means "none".
pub type Lsn = u64;

/// The LSN of the first record of a new log.
pub const FIRST_LSN: Lsn = 1;

/// The magic bytes a segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"STRATWAL";
/// The format version this code writes in new segments. A segment's records are framed as its
/// header's version says: 2, a header of varints (about 11 bytes); 1, a fixed 24-byte header.
/// Both are read, and a log opened on a version 1 tail segment goes on appending to it in
/// version 1 framing (new segments are version 2).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this code reads.
pub const FORMAT_VERSION_MIN: u32 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes in a version 1 record header.
pub const RECORD_HEADER_BYTES_V1: usize = 24;
/// The most bytes a record header takes (version 2: checksum, and three varints of at most 5,
/// 10 and 10 bytes).
pub const RECORD_HEADER_BYTES_MAX: usize = 4 + 5 + 10 + 10;
/// After damage, the search for later records that still verify checksums at most this many
/// times the bytes that follow the damage.
const CLAIM_SCAN_BUDGET_FACTOR: usize = 8;
/// The file name extension of segments.
pub const SEGMENT_EXTENSION: &str = "wal";

/// The header at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// A random per-segment value mixed into every record checksum, so bytes from another
    /// segment (or an older use of the same file name) never verify here.
    pub salt: u32,
    /// The LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// The format version, which frames every record of the segment.
    pub version: u32,
}

impl SegmentHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut out = [0u8; SEGMENT_HEADER_BYTES];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&self.version.to_le_bytes());
        out[12..16].copy_from_slice(&self.salt.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        // 24..28 reserved, zero.
        let crc = crc32fast::hash(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and verifies a header.
    ///
    /// # Errors
    ///
    /// A description of what is wrong: too short, bad magic, unknown version, bad checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        let header = bytes
            .get(..SEGMENT_HEADER_BYTES)
            .ok_or("segment header is truncated")?;
        if header[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32fast::hash(&header[0..28]) != le_u32(&header[28..32]) {
            return Err("segment header checksum mismatch");
        }
        let version = le_u32(&header[8..12]);
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&version) {
            return Err("unsupported segment format version");
        }
        Ok(Self {
            salt: le_u32(&header[12..16]),
            first_lsn: le_u64(&header[16..24]),
            version,
        })
    }
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// The checksum of a record: CRC-32 (IEEE) over the salt, then the header after the checksum
/// field, then the payload.
fn record_crc(salt: u32, header_rest: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(header_rest);
    hasher.update(payload);
    hasher.finalize()
}

/// Payloads shorter than this are checksummed with their header in one pass; longer ones ahead
/// of time, and the two CRCs combined (which costs about as much as checksumming a few
/// hundred bytes).
pub(crate) const PAYLOAD_CRC_AHEAD_BYTES_MIN: usize = 1024;

/// What [`record_header`] needs of a payload's checksum: for a large payload its CRC state,
/// computed before taking any lock (it is the expensive part) and combined with the header's;
/// for a small one the payload itself, checksummed with the header. Made only by
/// [`payload_crc`], from the payload it goes with.
#[derive(Debug, Clone)]
pub struct PayloadCrc<'a>(Crc<'a>);

#[derive(Debug, Clone)]
enum Crc<'a> {
    Inline(&'a [u8]),
    Ahead(crc32fast::Hasher),
}

impl<'a> PayloadCrc<'a> {
    /// For a payload shorter than `PAYLOAD_CRC_AHEAD_BYTES_MIN`: nothing computed ahead.
    pub(crate) fn inline(payload: &'a [u8]) -> Self {
        Self(Crc::Inline(payload))
    }
}

/// The checksum work for `payload` that can be done ahead, before any lock.
pub fn payload_crc(payload: &[u8]) -> PayloadCrc<'_> {
    if payload.len() < PAYLOAD_CRC_AHEAD_BYTES_MIN {
        return PayloadCrc::inline(payload);
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(payload);
    PayloadCrc(Crc::Ahead(hasher))
}

/// A record's header, as long as its segment's format makes it.
#[derive(Debug, Clone, Copy)]
pub struct RecordHeader {
    bytes: [u8; RECORD_HEADER_BYTES_MAX],
    len: u8,
}

impl RecordHeader {
    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Bytes in the header.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Never true: a header always has its checksum.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Appends `value` to `out` at `at` as a LEB128 varint; returns the offset past it.
fn put_varint(out: &mut [u8], mut at: usize, mut value: u64) -> usize {
    while value >= 0x80 {
        out[at] = (value as u8) | 0x80;
        value >>= 7;
        at += 1;
    }
    out[at] = value as u8;
    at + 1
}

/// The LEB128 varint at `at` and the offset past it. [`Damage::Truncated`] if the bytes end
/// first, [`Damage::Checksum`] (damage like a failed checksum) if it does not fit 64 bits.
fn get_varint(bytes: &[u8], mut at: usize) -> Result<(u64, usize), Damage> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at).ok_or(Damage::Truncated)?;
        at += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(Damage::Checksum);
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok((value, at));
        }
    }
    Err(Damage::Checksum)
}

/// The header of a record in `segment` (which decides its framing) whose payload has length
/// `payload_len` and CRC state `payload_crc` (see [`payload_crc`]). `lsn` must be at or after
/// the segment's first, and `durable_lsn` below `lsn`.
pub fn record_header(
    segment: &SegmentHeader,
    lsn: Lsn,
    durable_lsn: Lsn,
    payload_len: u32,
    payload_crc: &PayloadCrc<'_>,
) -> RecordHeader {
    let mut bytes = [0u8; RECORD_HEADER_BYTES_MAX];
    let len = if segment.version == 1 {
        bytes[4..8].copy_from_slice(&payload_len.to_le_bytes());
        bytes[8..16].copy_from_slice(&lsn.to_le_bytes());
        bytes[16..24].copy_from_slice(&durable_lsn.to_le_bytes());
        RECORD_HEADER_BYTES_V1
    } else {
        debug_assert!(lsn >= segment.first_lsn && durable_lsn < lsn);
        let at = put_varint(&mut bytes, 4, u64::from(payload_len));
        let at = put_varint(&mut bytes, at, lsn - segment.first_lsn);
        put_varint(&mut bytes, at, lsn - durable_lsn)
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&segment.salt.to_le_bytes());
    hasher.update(&bytes[4..len]);
    match &payload_crc.0 {
        Crc::Inline(payload) => hasher.update(payload),
        Crc::Ahead(crc) => hasher.combine(crc),
    }
    bytes[0..4].copy_from_slice(&hasher.finalize().to_le_bytes());
    RecordHeader {
        bytes,
        len: len as u8,
    }
}

/// Appends one framed record to `out`.
pub fn encode_record(
    out: &mut Vec<u8>,
    segment: &SegmentHeader,
    lsn: Lsn,
    durable_lsn: Lsn,
    payload: &[u8],
) {
    let len = u32::try_from(payload.len()).expect("record length was checked against the limit");
    out.extend_from_slice(
        record_header(segment, lsn, durable_lsn, len, &payload_crc(payload)).as_bytes(),
    );
    out.extend_from_slice(payload);
}

/// One record as it lies in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// The highest LSN that was durable when it was written.
    pub durable_lsn: Lsn,
    /// Its byte offset in the segment file.
    pub offset: u64,
    /// The byte offset just past it.
    pub end: u64,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The record header or payload runs past the end of the bytes.
    Truncated,
    /// The length field exceeds the record size limit.
    TooLong,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the LSN is not the next one.
    OutOfSequence,
}

impl Damage {
    /// A short description.
    pub fn describe(self) -> &'static str {
        match self {
            Damage::Truncated => "record truncated",
            Damage::TooLong => "record length exceeds the limit",
            Damage::Checksum => "record checksum mismatch",
            Damage::OutOfSequence => "record out of sequence",
        }
    }
}

/// Iterates over the records of a segment's bytes (after the header), verifying each.
///
/// Yields records while they verify and follow in LSN order from `header.first_lsn`; stops
/// with `Some(Err((offset, damage)))` at the first that does not, or `None` at the end.
#[derive(Debug, Clone)]
pub struct RecordScanner<'a> {
    bytes: &'a [u8],
    header: SegmentHeader,
    next_lsn: Lsn,
    offset: usize,
    record_bytes_max: u32,
    done: bool,
}

impl<'a> RecordScanner<'a> {
    /// Scans `segment` (the whole file, header included) whose header is `header`.
    pub fn new(segment: &'a [u8], header: SegmentHeader, record_bytes_max: u32) -> Self {
        Self {
            bytes: segment,
            header,
            next_lsn: header.first_lsn,
            offset: SEGMENT_HEADER_BYTES.min(segment.len()),
            record_bytes_max,
            done: false,
        }
    }

    /// Scans `segment` from byte `offset`, where the record with `next_lsn` must start.
    pub fn resume(
        segment: &'a [u8],
        header: SegmentHeader,
        next_lsn: Lsn,
        offset: u64,
        record_bytes_max: u32,
    ) -> Self {
        Self {
            bytes: segment,
            header,
            next_lsn,
            offset: usize::try_from(offset).map_or(segment.len(), |o| o.min(segment.len())),
            record_bytes_max,
            done: false,
        }
    }

    /// The byte offset just after the last record yielded.
    pub fn offset(&self) -> u64 {
        self.offset as u64
    }

    /// The LSN the next record must have.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Reads the header at `offset`: its length, the payload length, the LSN and the durable
    /// LSN it states (unverified). [`Damage::Truncated`] if the bytes end within it;
    /// [`Damage::Checksum`] if its fields are malformed, which only damage makes them.
    fn header_at(&self, offset: usize) -> Result<(usize, u64, Lsn, Lsn), Damage> {
        let rest = &self.bytes[offset..];
        if self.header.version == 1 {
            let header = rest
                .get(..RECORD_HEADER_BYTES_V1)
                .ok_or(Damage::Truncated)?;
            return Ok((
                RECORD_HEADER_BYTES_V1,
                u64::from(le_u32(&header[4..8])),
                le_u64(&header[8..16]),
                le_u64(&header[16..24]),
            ));
        }
        let (len, at) = get_varint(rest, 4)?;
        let (lsn_delta, at) = get_varint(rest, at)?;
        let (durable_gap, at) = get_varint(rest, at)?;
        let lsn = self
            .header
            .first_lsn
            .checked_add(lsn_delta)
            .ok_or(Damage::Checksum)?;
        // A record is never durable when written: the gap is at least 1.
        let durable = lsn
            .checked_sub(durable_gap)
            .filter(|_| durable_gap > 0)
            .ok_or(Damage::Checksum)?;
        Ok((at, len, lsn, durable))
    }

    /// Decodes the record at `offset` expecting `lsn`, without advancing.
    fn decode_at(&self, offset: usize, lsn: Lsn) -> Result<(RecordRef<'a>, usize), Damage> {
        let (header_len, len, record_lsn, durable_lsn) = self.header_at(offset)?;
        if len > u64::from(self.record_bytes_max) {
            return Err(Damage::TooLong);
        }
        let end = header_len + len as usize;
        let rest = &self.bytes[offset..];
        let payload = rest.get(header_len..end).ok_or(Damage::Truncated)?;
        if record_crc(self.header.salt, &rest[4..header_len], payload) != le_u32(&rest[0..4]) {
            return Err(Damage::Checksum);
        }
        if record_lsn != lsn {
            return Err(Damage::OutOfSequence);
        }
        Ok((
            RecordRef {
                lsn,
                durable_lsn,
                offset: offset as u64,
                end: (offset + end) as u64,
                payload,
            },
            end,
        ))
    }

    /// After damage at the current offset: the highest `durable_lsn` claimed by any record that
    /// still verifies further on. If it reaches the damaged record's LSN, the damaged bytes had
    /// been made durable before that later record was written: corruption, not a torn write.
    pub fn durable_claim_after_damage(&self) -> Lsn {
        let mut claim = 0;
        let mut at = self.offset + 1;
        // Each candidate costs a checksum over its claimed length; a payload that repeats
        // header-like patterns could make that quadratic. Past this budget the search stops
        // (and the damage is taken for a torn tail).
        let mut crc_budget = (self.bytes.len() - self.offset)
            .saturating_mul(CLAIM_SCAN_BUDGET_FACTOR)
            .saturating_add(1 << 16);
        // Look for the records that followed: their LSNs continue the sequence, so only
        // candidate offsets whose LSN field is plausible are checksummed.
        let lsn_window = self.next_lsn..self.next_lsn.saturating_add(1 << 20);
        while at + 4 < self.bytes.len() {
            if let Ok((header_len, len, lsn_field, _)) = self.header_at(at) {
                // A candidate whose payload would run past the end cannot verify: skip it free.
                let fits = len <= (self.bytes.len() - at - header_len) as u64;
                if lsn_window.contains(&lsn_field) && fits {
                    let len = len as usize;
                    if len > crc_budget {
                        break;
                    }
                    crc_budget -= len;
                    if let Ok((record, end)) = self.decode_at(at, lsn_field) {
                        claim = claim.max(record.durable_lsn);
                        at += end;
                        continue;
                    }
                }
            }
            at += 1;
        }
        claim
    }
}

impl<'a> Iterator for RecordScanner<'a> {
    type Item = Result<RecordRef<'a>, (u64, Damage)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.offset >= self.bytes.len() {
            return None;
        }
        match self.decode_at(self.offset, self.next_lsn) {
            Ok((record, end)) => {
                self.offset += end;
                self.next_lsn += 1;
                Some(Ok(record))
            }
            Err(damage) => {
                self.done = true;
                Some(Err((self.offset as u64, damage)))
            }
        }
    }
}

/// The file name of the segment whose first record is `first_lsn`: 20 zero-padded decimal
/// digits, so names sort in LSN order.
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.{SEGMENT_EXTENSION}")
}

/// The path of the segment starting at `first_lsn` in `dir`.
pub fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(segment_file_name(first_lsn))
}

/// The first LSN a segment file name encodes, if it is a segment name.
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".wal")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_of(version: u32, salt: u32, first_lsn: Lsn, payloads: &[&[u8]]) -> Vec<u8> {
        let header = SegmentHeader {
            salt,
            first_lsn,
            version,
        };
        let mut out = header.encode().to_vec();
        for (i, p) in payloads.iter().enumerate() {
            encode_record(&mut out, &header, first_lsn + i as u64, 0, p);
        }
        out
    }

    fn segment(salt: u32, first_lsn: Lsn, payloads: &[&[u8]]) -> Vec<u8> {
        segment_of(FORMAT_VERSION, salt, first_lsn, payloads)
    }

    #[test]
    fn records_of_either_version_scan_back_in_order() {
        for version in [1, 2] {
            let bytes = segment_of(version, 7, 10, &[b"a", b"", b"ccc"]);
            let header = SegmentHeader::decode(&bytes).expect("header");
            assert_eq!(header.version, version);
            let records: Vec<_> = RecordScanner::new(&bytes, header, 1024)
                .map(|r| r.expect("valid"))
                .map(|r| (r.lsn, r.payload.to_vec()))
                .collect();
            assert_eq!(
                records,
                vec![(10, b"a".to_vec()), (11, Vec::new()), (12, b"ccc".to_vec())]
            );
        }
        // Version 2's framing of a small record: checksum, then one byte each for the length,
        // the LSN's distance from the segment's first and from the durable LSN.
        assert_eq!(
            segment(7, 10, &[b"a"]).len(),
            SEGMENT_HEADER_BYTES + 4 + 3 + 1
        );
    }

    #[test]
    fn a_record_from_another_segment_does_not_verify() {
        let mut bytes = segment(7, 10, &[b"a"]);
        let other = segment(8, 11, &[b"b"]);
        bytes.extend_from_slice(&other[SEGMENT_HEADER_BYTES..]);
        let header = SegmentHeader::decode(&bytes).expect("header");
        let results: Vec<_> = RecordScanner::new(&bytes, header, 1024).collect();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[1],
            Err((SEGMENT_HEADER_BYTES as u64 + 4 + 3 + 1, Damage::Checksum))
        );
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        for (version, header_bytes) in [(1, RECORD_HEADER_BYTES_V1), (2, 4 + 3)] {
            let bytes = segment_of(version, 7, 1, &[b"hello", b"world"]);
            let header = SegmentHeader::decode(&bytes).expect("header");
            for cut in SEGMENT_HEADER_BYTES + 1..bytes.len() {
                let results: Vec<_> = RecordScanner::new(&bytes[..cut], header, 1024).collect();
                let last = results.last().expect("something");
                if cut == SEGMENT_HEADER_BYTES + header_bytes + 5 {
                    assert!(last.is_ok());
                } else {
                    assert!(
                        matches!(last, Err((_, Damage::Truncated))),
                        "version {version}, cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_file_name(42), "00000000000000000042.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.wal"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
