//! Internal keys: a user key, a sequence number and a kind, encoded so that plain bytewise
//! order is the LSM's order (user key ascending, then newest first). Tables store these.
//!
//! Encoding: the user key with every `0x00` byte written as `0x00 0xFF`, then the terminator
//! `0x00 0x01`, then `!(seq << 8 | kind)` as 8 big-endian bytes. The escaping keeps user-key
//! order and makes no encoded user key a prefix of another; the inverted trailer puts higher
//! sequence numbers first.

use strata_memtable::ValueKind;

/// The largest sequence number (it shares a `u64` with the kind byte).
pub const SEQ_MAX: u64 = strata_memtable::SEQ_MAX;

/// What follows every `0x00` byte of the user key: `0x00 0xFF` sorts after the terminator.
const ZERO_ESCAPE: u8 = 0xff;

/// Ends the escaped user key. It sorts before any escaped byte that can follow at its place, so
/// a user key sorts before every longer key it is a prefix of.
const TERMINATOR: [u8; 2] = [0x00, 0x01];

/// The trailer: `!(seq << KIND_BITS | kind)`, big-endian.
const TRAILER_BYTES: usize = 8;

/// The low bits of the trailer that hold the kind; the sequence number is above them.
const KIND_BITS: u32 = 8;

// Every sequence number fits above the kind bits of the trailer.
const _: () = assert!(SEQ_MAX == u64::MAX >> KIND_BITS);

/// What an internal key adds to its escaped user key: the terminator and the trailer. A user
/// key fits a table only if its escaped length plus this is within the table's key limit.
pub const INTERNAL_KEY_OVERHEAD_BYTES: usize = TERMINATOR.len() + TRAILER_BYTES;

/// The length of `user_key` once escaped (every `0x00` byte takes two).
#[inline]
pub fn escaped_len(user_key: &[u8]) -> usize {
    user_key.len() + count_zeros(user_key)
}

/// Zero bytes a key may hold and still be escaped a run at a time: past them, the rest is
/// escaped a byte at a time. Keys from layers above hold a few (strata-mvcc's data keys: the
/// two of their key's terminator); a key full of them would cost a search per zero.
const SPARSE_ZEROS: usize = 8;

/// The zero bytes of `bytes`. The first [`SPARSE_ZEROS`] are found with `memchr` (a key
/// with none or a few, the common case, costs a search per zero); past them, the rest is
/// counted eight bytes at a time. A per-byte `filter().count()` cost about 0.45 ns a byte
/// (130 ns for a 275-byte key), and it ran several times per written key.
#[inline]
fn count_zeros(bytes: &[u8]) -> usize {
    let mut seen = 0;
    for at in memchr::memchr_iter(0, bytes) {
        seen += 1;
        if seen == SPARSE_ZEROS {
            return seen + count_zeros_dense(&bytes[at + 1..]);
        }
    }
    seen
}

/// The zero bytes of `bytes`, eight at a time: the high bit of each byte of `found` is set
/// exactly when that byte of the word is zero (no carry crosses bytes: each byte's low seven
/// bits plus `0x7F` stay below `0x100`).
fn count_zeros_dense(bytes: &[u8]) -> usize {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut words = bytes.chunks_exact(8);
    let mut zeros = 0;
    for word in &mut words {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let x = u64::from_ne_bytes(eight);
        let found = !(((x & LOW7) + LOW7) | x | LOW7);
        zeros += found.count_ones() as usize;
    }
    zeros + words.remainder().iter().filter(|&&b| b == 0).count()
}

/// Appends `bytes` to `out` with each zero byte escaped (`0x00 0xFF`), as internal keys hold
/// user keys: the escaping keeps bytewise order, and a terminator that begins with `0x00` and
/// sorts below `0xFF` after it makes no escaped key a prefix of another. For layers above that
/// lay out ordered keys of their own the same way (strata-mvcc's data keys).
///
/// The bytes between zeros are copied a run at a time, each zero found with `memchr`: a key
/// with none is one copy, one with a few (a data key's terminator) a few. Past `SPARSE_ZEROS`
/// (eight) zeros the rest is written a byte at a time with no branch on the data (each byte at
/// its place in an output filled with the escape byte), so a key full of zero bytes costs about
/// a nanosecond a byte rather than a search per zero.
#[inline]
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + SPARSE_ZEROS);
    let mut start = 0;
    for (seen, at) in memchr::memchr_iter(0, bytes).enumerate() {
        if seen == SPARSE_ZEROS {
            push_escaped_dense(out, &bytes[start..]);
            return;
        }
        out.extend_from_slice(&bytes[start..=at]);
        out.push(ZERO_ESCAPE);
        start = at + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// [`push_escaped`] a byte at a time, for keys with many zero bytes.
fn push_escaped_dense(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + escaped_len(bytes), ZERO_ESCAPE);
    let escaped = &mut out[start..];
    let mut at = 0;
    for &b in bytes {
        escaped[at] = b;
        at += 1 + usize::from(b == 0);
    }
}

/// Appends to `out` the bytes `escaped` is the [`push_escaped`] form of; false if it is not one
/// (a zero byte not followed by `0xFF`), with `out` as it was.
#[inline]
pub fn push_unescaped(out: &mut Vec<u8>, escaped: &[u8]) -> bool {
    let start = out.len();
    let Some(first_zero) = escaped.iter().position(|&b| b == 0) else {
        out.extend_from_slice(escaped);
        return true;
    };
    // The bytes before the first zero in one copy, then one byte at a time (at most as many
    // as `escaped` holds).
    out.reserve(escaped.len());
    out.extend_from_slice(&escaped[..first_zero]);
    let mut rest = &escaped[first_zero..];
    while let [b, tail @ ..] = rest {
        out.push(*b);
        rest = match (*b, tail) {
            (0, [ZERO_ESCAPE, after @ ..]) => after,
            (0, _) => {
                out.truncate(start);
                return false;
            }
            _ => tail,
        };
    }
    true
}

/// Appends the internal key of `(user_key, seq, kind)` to `out`.
pub fn encode_internal_key(out: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: ValueKind) {
    out.reserve(user_key.len() + INTERNAL_KEY_OVERHEAD_BYTES);
    push_escaped(out, user_key);
    out.extend_from_slice(&TERMINATOR);
    let trailer = !((seq.min(SEQ_MAX) << KIND_BITS) | kind as u64);
    out.extend_from_slice(&trailer.to_be_bytes());
}

/// The internal key of `(user_key, seq, kind)`.
pub fn internal_key(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    let mut out = Vec::new();
    encode_internal_key(&mut out, user_key, seq, kind);
    out
}

/// The smallest internal key of `user_key` visible at `seq`: seeking to it finds the newest
/// version not newer than `seq`.
pub fn seek_key(user_key: &[u8], seq: u64) -> Vec<u8> {
    // Kind Put (1) is the larger kind byte, so its inverted trailer is the smaller: the first
    // of the two possible entries at `seq`.
    internal_key(user_key, seq, ValueKind::Put)
}

/// An internal key taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// The user key.
    pub user_key: Vec<u8>,
    /// The sequence number.
    pub seq: u64,
    /// Put or delete.
    pub kind: ValueKind,
}

/// Decodes an internal key; `None` if it is malformed.
pub fn parse_internal_key(key: &[u8]) -> Option<ParsedKey> {
    let mut user_key = Vec::new();
    let (seq, kind) = parse_internal_key_into(key, &mut user_key)?;
    Some(ParsedKey {
        user_key,
        seq,
        kind,
    })
}

/// Decodes an internal key's user key into `user_key` (cleared first, its allocation reused)
/// and returns its sequence number and kind; `None` if it is malformed.
pub fn parse_internal_key_into(key: &[u8], user_key: &mut Vec<u8>) -> Option<(u64, ValueKind)> {
    user_key.clear();
    let split = key.len().checked_sub(TRAILER_BYTES)?;
    let (escaped, trailer) = key.split_at(split);
    let trailer = !u64::from_be_bytes(trailer.try_into().ok()?);
    let escaped = escaped.strip_suffix(&TERMINATOR)?;
    if !push_unescaped(user_key, escaped) {
        return None;
    }
    let kind = match trailer & ((1 << KIND_BITS) - 1) {
        0 => ValueKind::Delete,
        1 => ValueKind::Put,
        _ => return None,
    };
    Some((trailer >> KIND_BITS, kind))
}

/// The kind of an internal key, read from its trailer alone; `None` if it is malformed.
pub fn internal_kind(key: &[u8]) -> Option<ValueKind> {
    let split = key.len().checked_sub(TRAILER_BYTES)?;
    match !key[split + TRAILER_BYTES - 1] {
        0 => Some(ValueKind::Delete),
        1 => Some(ValueKind::Put),
        _ => None,
    }
}

/// The part of an internal key the tables' bloom filters record: the encoded user key (every
/// version of a user key shares it). A [`strata_sstable::FilterKeyFn`].
pub fn filter_key(internal_key: &[u8]) -> &[u8] {
    &internal_key[..internal_key.len().saturating_sub(TRAILER_BYTES)]
}

/// The filter key of `user_key` (what [`filter_key`] returns for its internal keys).
pub fn user_filter_key(user_key: &[u8]) -> Vec<u8> {
    let mut out = internal_key(user_key, 0, ValueKind::Delete);
    out.truncate(out.len() - TRAILER_BYTES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(put: bool) -> ValueKind {
        if put {
            ValueKind::Put
        } else {
            ValueKind::Delete
        }
    }

    proptest! {
        #[test]
        fn bytewise_order_of_internal_keys_is_user_key_then_newest_first(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), Just(b'a')], 0..5),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), Just(b'a')], 0..5),
            sa in 0u64..1000, sb in 0u64..1000, ka in any::<bool>(), kb in any::<bool>(),
        ) {
            let ea = internal_key(&a, sa, kind(ka));
            let eb = internal_key(&b, sb, kind(kb));
            let want = a.cmp(&b).then(sb.cmp(&sa)).then((kb as u8).cmp(&(ka as u8)));
            prop_assert_eq!(ea.cmp(&eb), want);
            let parsed = parse_internal_key(&ea).expect("parses");
            prop_assert_eq!(parsed, ParsedKey { user_key: a.clone(), seq: sa, kind: kind(ka) });
            prop_assert_eq!(filter_key(&ea), &user_filter_key(&a)[..]);
        }
    }

    proptest! {
        /// Escaping then unescaping gives the bytes back, whatever their zeros; the escaped
        /// form is the byte-at-a-time one the format describes.
        #[test]
        fn unescaping_an_escaped_key_gives_it_back(
            bytes in proptest::collection::vec(prop_oneof![Just(0u8), Just(0xff), any::<u8>()], 0..300),
            prefix in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut escaped = prefix.clone();
            push_escaped(&mut escaped, &bytes);
            let mut want = prefix.clone();
            for &b in &bytes {
                want.push(b);
                if b == 0 {
                    want.push(0xff);
                }
            }
            prop_assert_eq!(&escaped, &want);
            let mut back = prefix.clone();
            prop_assert!(push_unescaped(&mut back, &escaped[prefix.len()..]));
            prop_assert_eq!(&back[prefix.len()..], &bytes[..]);
        }

        /// Keys with no zero byte, a few (escaped a run at a time) and more than a few (the
        /// rest a byte at a time) escape as the format says, and their escaped length is
        /// counted right on both sides of the switch.
        #[test]
        fn escaping_follows_the_format_at_every_count_of_zeros(
            mut bytes in proptest::collection::vec(1u8.., 0..300),
            zeros in proptest::collection::vec(any::<proptest::sample::Index>(), 0..2 * SPARSE_ZEROS + 2),
        ) {
            for at in zeros {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, 0);
            }
            let mut escaped = b"p".to_vec();
            push_escaped(&mut escaped, &bytes);
            let mut want = b"p".to_vec();
            for &b in &bytes {
                want.push(b);
                if b == 0 {
                    want.push(0xff);
                }
            }
            prop_assert_eq!(&escaped, &want);
            prop_assert_eq!(escaped_len(&bytes), want.len() - 1);
        }

        /// A zero byte not followed by the escape is refused, and leaves the output as it was.
        #[test]
        fn an_unescaped_zero_is_refused(
            before in proptest::collection::vec(1u8.., 0..20),
            after in proptest::collection::vec(0u8..0xff, 0..2),
        ) {
            let mut escaped = before.clone();
            escaped.push(0);
            escaped.extend_from_slice(&after);
            let mut out = b"kept".to_vec();
            prop_assert!(!push_unescaped(&mut out, &escaped));
            prop_assert_eq!(&out, b"kept");
        }
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        assert!(parse_internal_key(b"").is_none());
        assert!(parse_internal_key(b"short").is_none());
        let mut bad = internal_key(b"a\0b", 3, ValueKind::Put);
        bad[2] = 0x05; // the escape after the 0x00
        assert!(parse_internal_key(&bad).is_none());
    }
}
