//! How MVCC keys are laid out in the LSM (format in `docs/formats/mvcc.md`): every version of a
//! user key sorts by the user key, then newest first, so that the version visible at a
//! revision is one seek away; a second keyspace orders every change by revision.
//!
//! - Data: `'k'`, the user key escaped (each `0x00` becomes `0x00 0xFF`) and terminated by
//!   `0x00 0x00`, then the revision's main and sub parts inverted (`u64::MAX - x`, big-endian),
//!   so that a larger revision sorts first. Escaping keeps the order of user keys: a key that
//!   is a prefix of another ends with the terminator, which sorts before any escaped byte.
//! - Revisions: `'r'`, then main and sub big-endian: every change in revision order, for
//!   watchers catching up and for compaction.
//! - Metadata: `'m'` and a name.

/// The data keyspace's first byte.
pub const DATA: u8 = b'k';
/// The revision keyspace's first byte.
pub const REVISIONS: u8 = b'r';
/// The metadata keyspace's first byte.
pub const META: u8 = b'm';

/// Bytes of an encoded revision (main and sub, 8 each).
pub const REVISION_BYTES: usize = 16;

/// A store revision: `main` counts write requests (1 for an empty store), `sub` the changes
/// within one, in the order they were applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// One per write request that changed something.
    pub main: u64,
    /// The change's place within its request.
    pub sub: u64,
}

impl Revision {
    /// Revision `main`, sub-revision `sub`.
    pub const fn new(main: u64, sub: u64) -> Self {
        Self { main, sub }
    }

    /// The last revision of main revision `main` (for "everything at or before `main`").
    pub const fn end_of(main: u64) -> Self {
        Self {
            main,
            sub: u64::MAX,
        }
    }
}

/// Ends an escaped user key: sorts before `0x00 0xFF`, an escaped zero byte.
const TERMINATOR: [u8; 2] = [0, 0];

/// The LSM prefix extractor for this layout (set it as the store's
/// `Options::prefix_extractor`): a data key's prefix is its user key's ([`data_prefix`]), so
/// that the lookup of a key's newest version (every put does one) skips the tables that hold no
/// version of it. Other keys have none.
pub const PREFIX_EXTRACTOR: strata_lsm::PrefixExtractor = strata_lsm::PrefixExtractor {
    name: "strata-mvcc.data-key.v1",
    prefix_len: data_key_prefix_len,
};

/// The length of a data key's [`data_prefix`] (everything before its revision); `None` for any
/// other key.
fn data_key_prefix_len(key: &[u8]) -> Option<usize> {
    let len = key.len().checked_sub(REVISION_BYTES)?;
    (key.first() == Some(&DATA) && len >= 3 && key[len - 2..len] == [0, 0]).then_some(len)
}

/// The data keyspace's prefix of every version of `key`.
pub fn data_prefix(key: &[u8]) -> Vec<u8> {
    // Room for the revision too: `data_key` appends it.
    let mut out =
        Vec::with_capacity(1 + strata_lsm::escaped_len(key) + TERMINATOR.len() + REVISION_BYTES);
    out.push(DATA);
    strata_lsm::push_escaped(&mut out, key);
    out.extend_from_slice(&TERMINATOR);
    out
}

/// The data key of `key` at `rev`.
pub fn data_key(key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = data_prefix(key);
    out.extend_from_slice(&(u64::MAX - rev.main).to_be_bytes());
    out.extend_from_slice(&(u64::MAX - rev.sub).to_be_bytes());
    out
}

/// Where the versions of user keys at or after `key` begin in the data keyspace.
pub fn data_lower(key: &[u8]) -> Vec<u8> {
    data_prefix(key)
}

/// The user key and revision of a data key; `None` if it is not one.
pub fn decode_data_key(encoded: &[u8]) -> Option<(Vec<u8>, Revision)> {
    let (&first, rest) = encoded.split_first()?;
    if first != DATA || rest.len() < 2 + REVISION_BYTES {
        return None;
    }
    let (escaped, rev) = rest.split_at(rest.len() - REVISION_BYTES);
    // An escaped key holds no `0x00 0x00`: the terminator is its last two bytes.
    let escaped = escaped.strip_suffix(&TERMINATOR)?;
    let mut key = Vec::with_capacity(escaped.len());
    if !strata_lsm::push_unescaped(&mut key, escaped) {
        return None;
    }
    let main = u64::MAX - u64::from_be_bytes(rev[..8].try_into().ok()?);
    let sub = u64::MAX - u64::from_be_bytes(rev[8..].try_into().ok()?);
    Some((key, Revision { main, sub }))
}

/// The revision keyspace's key of `rev`.
pub fn revision_key(rev: Revision) -> [u8; 1 + REVISION_BYTES] {
    let mut out = [0u8; 1 + REVISION_BYTES];
    out[0] = REVISIONS;
    out[1..9].copy_from_slice(&rev.main.to_be_bytes());
    out[9..].copy_from_slice(&rev.sub.to_be_bytes());
    out
}

/// The revision of a revision key; `None` if it is not one.
pub fn decode_revision_key(encoded: &[u8]) -> Option<Revision> {
    let (&first, rest) = encoded.split_first()?;
    if first != REVISIONS || rest.len() != REVISION_BYTES {
        return None;
    }
    Some(Revision {
        main: u64::from_be_bytes(rest[..8].try_into().ok()?),
        sub: u64::from_be_bytes(rest[8..].try_into().ok()?),
    })
}

/// The metadata key named `name`.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + name.len());
    out.push(META);
    out.extend_from_slice(name.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rev() -> impl Strategy<Value = Revision> {
        (0u64..1000, 0u64..10).prop_map(|(main, sub)| Revision { main, sub })
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Short keys over a small alphabet with NULs and 0xFF, where ordering bugs hide.
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(0xFE), Just(0xFF)],
            0..5,
        )
    }

    proptest! {
        /// Data keys sort by user key, then newest revision first.
        #[test]
        fn data_keys_sort_by_user_key_then_newest_first(a in key(), b in key(), ra in rev(), rb in rev()) {
            let want = a.cmp(&b).then(rb.cmp(&ra));
            prop_assert_eq!(data_key(&a, ra).cmp(&data_key(&b, rb)), want);
        }

        /// Every data key decodes to its user key and revision.
        #[test]
        fn data_keys_decode_to_what_was_encoded(k in key(), r in rev()) {
            prop_assert_eq!(decode_data_key(&data_key(&k, r)), Some((k, r)));
        }

        /// Every version of a key starts with its prefix, and no other key's versions do.
        #[test]
        fn a_keys_versions_and_only_they_start_with_its_prefix(a in key(), b in key(), r in rev()) {
            prop_assert_eq!(data_key(&b, r).starts_with(&data_prefix(&a)), a == b);
        }

        /// Revision keys sort by revision.
        #[test]
        fn revision_keys_sort_by_revision(a in rev(), b in rev()) {
            prop_assert_eq!(revision_key(a).cmp(&revision_key(b)), a.cmp(&b));
            prop_assert_eq!(decode_revision_key(&revision_key(a)), Some(a));
        }

        /// Arbitrary bytes never panic the decoders.
        #[test]
        fn garbage_does_not_decode_as_a_key_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_data_key(&bytes);
            let _ = decode_revision_key(&bytes);
        }
    }

    #[test]
    fn the_keyspaces_do_not_overlap() {
        // Data, then metadata, then revisions.
        let last_data = data_key(&[0xFF; 8], Revision::default());
        assert!(last_data < meta_key(""));
        assert!(meta_key("\u{10FFFF}").as_slice() < &revision_key(Revision::default())[..]);
    }
}
