//! The table's bloom filter: one filter over every key, probed before any data block is read.
//!
//! Two layouts, told apart by the table's format version ([`Layout::of_version`]), both the
//! bit array followed by `k` (the number of probes) as one byte:
//!
//! - **Blocked** (format 3): the array is whole 64-byte blocks; a key's hash ([`key_hash`],
//!   eight bytes at a time) picks one block and sets all `k` of its bits there, so a probe
//!   costs one cache miss rather than `k`, and hashing a 300-byte key costs 38 dependent
//!   multiplies rather than 300.
//! - **Spread** (formats 1 and 2): probes spread over the whole array by double hashing over
//!   [`fnv_key_hash`] (FNV-1a, byte by byte). Tables written so are still read.
//!
//! The layouts depend on nothing but the bytes and these functions: they are on disk.

use std::cell::OnceCell;

/// How a table's filter hashes keys and places their bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Formats 1 and 2: [`fnv_key_hash`], probes over the whole array.
    Spread,
    /// Format 3 on: [`key_hash`], all probes of a key in one 512-bit block.
    Blocked,
}

impl Layout {
    /// The layout of tables of format `version`.
    pub(crate) fn of_version(version: u32) -> Self {
        if version >= 3 {
            Layout::Blocked
        } else {
            Layout::Spread
        }
    }

    fn hash(self, key: &[u8]) -> u64 {
        match self {
            Layout::Spread => fnv_key_hash(key),
            Layout::Blocked => key_hash(key),
        }
    }
}

/// Bytes in a block of the blocked layout: one cache line.
const BLOCK_BYTES: usize = 64;

/// The hash the filters of format 3 record for a key: eight bytes at a time (a multiply and a
/// rotate each), the last partial word and the length, then a `splitmix64` finish. Stable
/// across builds and platforms (little-endian words, whatever the machine).
pub fn key_hash(key: &[u8]) -> u64 {
    let full = key.len() & !7;
    finish_words(
        absorb_words(WORDS_SEED, &key[..full]),
        &key[full..],
        key.len(),
    )
}

const WORDS_SEED: u64 = 0x243f_6a88_85a3_08d3;
const WORDS_MULTIPLIER: u64 = 0x9fb2_1c65_1e98_df25;

/// Folds `words` (a multiple of 8 bytes) into the state `h`.
#[inline]
fn absorb_words(mut h: u64, words: &[u8]) -> u64 {
    for chunk in words.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(WORDS_MULTIPLIER)
            .rotate_left(31);
    }
    h
}

/// Finishes the state `h` with the key's last `tail` bytes (fewer than 8) and its length.
#[inline]
fn finish_words(h: u64, tail: &[u8], len: usize) -> u64 {
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    let h = (h ^ u64::from_le_bytes(word)).wrapping_mul(WORDS_MULTIPLIER) ^ len as u64;
    splitmix(h)
}

/// The hash the filters of formats 1 and 2 record: the 64-bit FNV-1a of the key, finished
/// with a `splitmix64` round for good bit mixing.
pub(crate) fn fnv_key_hash(key: &[u8]) -> u64 {
    splitmix(fnv(FNV_OFFSET, key))
}

/// The hashes of `key[..part_len]` and of `key` ([`key_hash`]), in one pass over the bytes
/// they share: `(key_hash(&key[..part_len]), key_hash(key))`. `part_len` must be at most
/// `key.len()`. Both hashes fold the same words up to the last whole word of the part.
pub(crate) fn prefix_and_key_hash(key: &[u8], part_len: usize) -> (u64, u64) {
    let shared = part_len & !7;
    let at_shared = absorb_words(WORDS_SEED, &key[..shared]);
    let part = finish_words(at_shared, &key[shared..part_len], part_len);
    let full = key.len() & !7;
    let whole = finish_words(
        absorb_words(at_shared, &key[shared..full]),
        &key[full..],
        key.len(),
    );
    (part, whole)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, from state `h`.
#[inline]
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `splitmix64` round that finishes a hash.
#[inline]
fn splitmix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// A key, or a part of keys, to ask the filters of many tables about: hashed once for each
/// layout the tables asked use (the current one at once, the old one when a table written in
/// it is first asked), not once per table.
#[derive(Debug)]
pub struct FilterProbe<'a> {
    bytes: &'a [u8],
    hash: u64,
    spread_hash: OnceCell<u64>,
}

impl<'a> FilterProbe<'a> {
    /// A probe for `bytes`: a filter key, or a part recorded with
    /// [`TableBuilder::add_to_filter`](crate::TableBuilder::add_to_filter).
    pub fn new(bytes: &'a [u8]) -> Self {
        FilterProbe {
            bytes,
            hash: key_hash(bytes),
            spread_hash: OnceCell::new(),
        }
    }

    pub(crate) fn hash(&self, layout: Layout) -> u64 {
        match layout {
            Layout::Blocked => self.hash,
            Layout::Spread => *self.spread_hash.get_or_init(|| fnv_key_hash(self.bytes)),
        }
    }
}

/// Collects key hashes (of the layout it builds: blocked) and builds the filter at the end.
#[derive(Debug, Default)]
pub(crate) struct BloomBuilder {
    hashes: Vec<u64>,
}

impl BloomBuilder {
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(key_hash(key));
    }

    /// Adds a hash computed already (a [`key_hash`]).
    pub fn add_hash(&mut self, hash: u64) {
        self.hashes.push(hash);
    }

    /// The filter (blocked layout) for the keys added, with `bits_per_key` bits each.
    pub fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let bits_per_key = bits_per_key.clamp(1, 64);
        // k = bits_per_key * ln 2 minimises the false-positive rate.
        let k = ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, 30);
        let bits = self.hashes.len() as u64 * u64::from(bits_per_key);
        let blocks = bits.div_ceil(BLOCK_BYTES as u64 * 8).max(1) as usize;
        let mut out = vec![0u8; blocks * BLOCK_BYTES + 1];
        for &h in &self.hashes {
            let block = block_of(h, blocks);
            let bits = &mut out[block..block + BLOCK_BYTES];
            for bit in block_probes(h, k) {
                bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        out[blocks * BLOCK_BYTES] = k as u8;
        out
    }
}

/// The byte offset of the block a hash's bits go to, among `blocks`: the hash's upper half
/// scaled to the count (a multiply, not a modulo).
#[inline]
fn block_of(hash: u64, blocks: usize) -> usize {
    (((hash >> 32) * blocks as u64) >> 32) as usize * BLOCK_BYTES
}

/// The `k` bit positions (0..512) of a hash within its block: the top nine bits of the lower
/// half, remixed by a multiply for each probe.
#[inline]
fn block_probes(hash: u64, k: u32) -> impl Iterator<Item = usize> {
    let mut h = hash as u32;
    (0..k).map(move |_| {
        let bit = (h >> 23) as usize;
        h = h.wrapping_mul(0x9e37_79b9);
        bit
    })
}

fn spread_probes(hash: u64, k: u32, bits: u64) -> impl Iterator<Item = u64> {
    let h1 = hash;
    let h2 = hash.rotate_left(32) | 1;
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// Checks a filter's bytes: `None` if they are not a well-formed filter of `layout`.
pub(crate) fn check_filter(filter: &[u8], layout: Layout) -> Option<()> {
    let (&k, bits) = filter.split_last()?;
    let whole = match layout {
        Layout::Spread => true,
        Layout::Blocked => bits.len() % BLOCK_BYTES == 0,
    };
    (!bits.is_empty() && whole && (1..=30).contains(&k)).then_some(())
}

/// True if `key` may be in the set the filter was built from (false means it certainly is
/// not). `filter` must have passed [`check_filter`] for `layout`.
pub(crate) fn may_contain(filter: &[u8], layout: Layout, key: &[u8]) -> bool {
    may_contain_hash(filter, layout, layout.hash(key))
}

/// [`may_contain`] for a key whose hash (in `layout`) is `hash`.
pub(crate) fn may_contain_hash(filter: &[u8], layout: Layout, hash: u64) -> bool {
    let Some((&k, bits)) = filter.split_last() else {
        return true;
    };
    match layout {
        Layout::Spread => {
            let bit_count = bits.len() as u64 * 8;
            if bit_count == 0 {
                return true;
            }
            spread_probes(hash, u32::from(k), bit_count)
                .all(|probe| bits[(probe / 8) as usize] & (1 << (probe % 8)) != 0)
        }
        Layout::Blocked => {
            let blocks = bits.len() / BLOCK_BYTES;
            if blocks == 0 {
                return true;
            }
            let block = block_of(hash, blocks);
            let bits = &bits[block..block + BLOCK_BYTES];
            block_probes(hash, u32::from(k)).all(|bit| bits[bit / 8] & (1 << (bit % 8)) != 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_hashes_are_the_ones_tables_on_disk_were_built_with() {
        // Computed apart from this code (a few lines of Python): filters on disk depend on them.
        assert_eq!(key_hash(b""), 0x21e0_762d_1f82_adec);
        assert_eq!(key_hash(b"strata"), 0xf27e_6bab_341c_c150);
        assert_eq!(key_hash(&[0; 300]), 0xa0fc_9ec9_3c94_a7bd);
        // The length is hashed: a trailing zero byte is a different key.
        assert_eq!(key_hash(b"\0"), 0xa2ca_42c0_ddcb_c0c6);
        // FNV-1a then splitmix64, for formats 1 and 2.
        assert_eq!(fnv_key_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(fnv_key_hash(b"strata"), 0xbdc7_f02a_3d84_e502);
        assert_eq!(fnv_key_hash(&[0; 300]), 0xd5c3_74b7_bf4d_f85d);
    }

    proptest! {
        #[test]
        fn one_pass_hashes_equal_the_hashes_of_prefix_and_key(
            key in proptest::collection::vec(any::<u8>(), 0..600),
            cut in any::<prop::sample::Index>(),
        ) {
            let part_len = cut.index(key.len() + 1);
            prop_assert_eq!(
                prefix_and_key_hash(&key, part_len),
                (key_hash(&key[..part_len]), key_hash(&key))
            );
        }

        #[test]
        fn a_probe_hashes_as_each_layout_does(key in proptest::collection::vec(any::<u8>(), 0..300)) {
            let probe = FilterProbe::new(&key);
            prop_assert_eq!(probe.hash(Layout::Blocked), key_hash(&key));
            prop_assert_eq!(probe.hash(Layout::Spread), fnv_key_hash(&key));
        }
    }

    /// The false-positive rate of a blocked filter of `keys` over 10 bits per key, asked about
    /// 100,000 absent keys; every present key must be found.
    fn false_positive_rate(keys: impl Fn(u32) -> Vec<u8>, absent: impl Fn(u32) -> Vec<u8>) -> f64 {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(&keys(i));
        }
        let filter = b.finish(10);
        check_filter(&filter, Layout::Blocked).expect("well formed");
        for i in 0..10_000u32 {
            assert!(may_contain(&filter, Layout::Blocked, &keys(i)));
        }
        let false_positives = (0..100_000u32)
            .filter(|&i| may_contain(&filter, Layout::Blocked, &absent(i)))
            .count();
        false_positives as f64 / 100_000.0
    }

    #[test]
    fn no_false_negatives_and_about_the_configured_false_positive_rate() {
        // 10 bits per key targets about 1%; the acceptance bound is 2x the target.
        let rate = false_positive_rate(
            |i| format!("present-{i}").into_bytes(),
            |i| format!("absent-{i}").into_bytes(),
        );
        assert!(rate < 0.02, "false-positive rate {rate}");
        // Long keys that share their first 250 bytes and differ in a few digits, as an MVCC
        // store's padded names do: the words hash mixes every word into every bit.
        let long = |tag: &str, i: u32| {
            let mut key = vec![b'x'; 250];
            key.extend_from_slice(format!("{tag}/{i:08}").as_bytes());
            key
        };
        let rate = false_positive_rate(|i| long("p", i), |i| long("a", i));
        assert!(
            rate < 0.02,
            "false-positive rate with long shared prefixes {rate}"
        );
    }

    #[test]
    fn spread_filters_of_older_formats_answer_as_they_were_built() {
        // Built as format 2 built them: FNV hashes, probes over the whole array.
        let keys: Vec<Vec<u8>> = (0..1_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        let bits = keys.len() as u64 * 10;
        let mut filter = vec![0u8; bits.div_ceil(8) as usize + 1];
        let bit_count = (filter.len() as u64 - 1) * 8;
        for key in &keys {
            for probe in spread_probes(fnv_key_hash(key), 7, bit_count) {
                filter[(probe / 8) as usize] |= 1 << (probe % 8);
            }
        }
        *filter.last_mut().expect("k byte") = 7;
        check_filter(&filter, Layout::Spread).expect("well formed");
        for key in &keys {
            assert!(may_contain(&filter, Layout::Spread, key));
        }
        let false_positives = (0..10_000u32)
            .filter(|i| may_contain(&filter, Layout::Spread, format!("a{i}").as_bytes()))
            .count();
        assert!(false_positives < 200, "{false_positives} false positives");
    }

    #[test]
    fn a_blocked_filter_must_be_whole_blocks() {
        let mut filter = vec![0u8; BLOCK_BYTES + 1];
        filter[BLOCK_BYTES] = 7;
        assert_eq!(check_filter(&filter, Layout::Blocked), Some(()));
        let mut short = vec![0u8; BLOCK_BYTES];
        short[BLOCK_BYTES - 1] = 7;
        assert_eq!(check_filter(&short, Layout::Blocked), None);
        assert_eq!(check_filter(&short, Layout::Spread), Some(()));
        let mut no_probes = filter.clone();
        no_probes[BLOCK_BYTES] = 0;
        assert_eq!(check_filter(&no_probes, Layout::Blocked), None);
    }
}
