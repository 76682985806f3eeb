//! The table's bloom filter: one filter over every key, probed before any data block is read.
//!
//! Layout: the bit array, then `k` (the number of probes) as one byte. Probes use double
//! hashing over a 64-bit hash of the key (below), so the layout depends on nothing but the
//! bytes and this function.

/// A 64-bit hash that is stable across builds and platforms (the filter is on disk): the
/// 64-bit FNV-1a of the key, finished with a `splitmix64` round for good bit mixing.
pub fn key_hash(key: &[u8]) -> u64 {
    finish(fnv(FNV_OFFSET, key))
}

/// The hashes of `key[..part_len]` and of `key`, in one pass over the bytes they share:
/// `(key_hash(&key[..part_len]), key_hash(key))`. `part_len` must be at most `key.len()`.
pub(crate) fn prefix_and_key_hash(key: &[u8], part_len: usize) -> (u64, u64) {
    let (part, rest) = key.split_at(part_len);
    let at_part = fnv(FNV_OFFSET, part);
    (finish(at_part), finish(fnv(at_part, rest)))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, from state `h`: byte by byte, so a prefix's state continues into the
/// whole key's.
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
fn finish(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Collects key hashes and builds the filter at the end.
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

    /// The filter for the keys added, with `bits_per_key` bits each.
    pub fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let bits_per_key = bits_per_key.clamp(1, 64);
        // k = bits_per_key * ln 2 minimises the false-positive rate.
        let k = ((f64::from(bits_per_key) * std::f64::consts::LN_2).round() as u32).clamp(1, 30);
        let bits = (self.hashes.len() as u64 * u64::from(bits_per_key)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let bits = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &h in &self.hashes {
            for probe in probes(h, k, bits) {
                out[(probe / 8) as usize] |= 1 << (probe % 8);
            }
        }
        out[bytes] = k as u8;
        out
    }
}

fn probes(hash: u64, k: u32, bits: u64) -> impl Iterator<Item = u64> {
    let h1 = hash;
    let h2 = hash.rotate_left(32) | 1;
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
}

/// Checks a filter's bytes: `None` if they are not a well-formed filter.
pub(crate) fn check_filter(filter: &[u8]) -> Option<()> {
    let (&k, bits) = filter.split_last()?;
    (!bits.is_empty() && (1..=30).contains(&k)).then_some(())
}

/// True if `key` may be in the set the filter was built from (false means it certainly is
/// not). `filter` must have passed [`check_filter`].
pub(crate) fn may_contain(filter: &[u8], key: &[u8]) -> bool {
    may_contain_hash(filter, key_hash(key))
}

/// [`may_contain`] for a key whose [`key_hash`] is `hash`.
pub(crate) fn may_contain_hash(filter: &[u8], hash: u64) -> bool {
    let Some((&k, bits)) = filter.split_last() else {
        return true;
    };
    let bit_count = bits.len() as u64 * 8;
    if bit_count == 0 {
        return true;
    }
    probes(hash, u32::from(k), bit_count)
        .all(|probe| bits[(probe / 8) as usize] & (1 << (probe % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_hash_is_the_one_tables_on_disk_were_built_with() {
        // FNV-1a then splitmix64, computed apart from this code: filters on disk depend on it.
        assert_eq!(key_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(key_hash(b"strata"), 0xbdc7_f02a_3d84_e502);
        assert_eq!(key_hash(&[0; 300]), 0xd5c3_74b7_bf4d_f85d);
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
    }

    #[test]
    fn no_false_negatives_and_about_the_configured_false_positive_rate() {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(format!("present-{i}").as_bytes());
        }
        let filter = b.finish(10);
        check_filter(&filter).expect("well formed");
        for i in 0..10_000u32 {
            assert!(may_contain(&filter, format!("present-{i}").as_bytes()));
        }
        let false_positives = (0..100_000u32)
            .filter(|i| may_contain(&filter, format!("absent-{i}").as_bytes()))
            .count();
        let rate = false_positives as f64 / 100_000.0;
        // 10 bits per key targets about 0.8-1%; the acceptance bound is 2x the target.
        assert!(rate < 0.02, "false-positive rate {rate}");
    }
}
