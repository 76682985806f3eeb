//! The `lsm-snapshot` file: the one flat file of a capture's file set, listing its tables (with
//! their levels, key and sequence ranges), the last sequence number and the caller's properties,
//! under a checksum. Format in `docs/formats/lsm-snapshot.md`.
//!
//! Encoding and decoding only: [`Capture::write_to`](crate::Capture::write_to) writes the file,
//! [`Db::restore`](crate::Db::restore) and [`SnapshotInfo::read`] read it. Decoding verifies
//! the checksum and that the description makes sense as a store (levels in range, sequence
//! ranges within the last sequence number, level 0 newest first, deeper levels disjoint), so a
//! damaged or forged file is refused before anything is linked.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use strata_fs::IoError;

use crate::error::{Error, Result};
use crate::keys::parse_internal_key;
use crate::manifest::{FileMeta, LEVELS};

/// The name of the flat file in a capture's file set.
pub const LSM_SNAPSHOT_FILE: &str = "lsm-snapshot";

/// The file's first 8 bytes.
const MAGIC: &[u8; 8] = b"SLSMSNAP";
const FORMAT_VERSION: u32 = 1;
/// Magic, format version, last sequence number, table count.
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;
const CHECKSUM_BYTES: usize = 4;

/// The most bytes of properties (names, values, and 8 bytes of lengths per property) a capture
/// records. They are copied into the manifest's restore record and into the first record of
/// every later manifest generation, and held in memory: a few Raft numbers need a few dozen
/// bytes, and 64 KiB leaves room for a caller's own metadata without letting it bloat either.
pub const PROPERTIES_BYTES_MAX: usize = 64 * 1024;

/// The largest `lsm-snapshot` file [`SnapshotInfo::read`] accepts. It is read whole into memory;
/// it lists every table in about 50 bytes plus two keys, so this bounds a snapshot's tables as
/// the manifest's largest record (also 256 MiB) bounds a store's.
const FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// What a capture's `lsm-snapshot` file describes: the tables of the captured state, the
/// sequence number it was captured at and the caller's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The sequence number the capture was taken at: the tables hold every write up to it and
    /// none after it.
    pub last_seq: u64,
    /// The tables: level 0 first, newest first, then each deeper level by smallest key. Each is
    /// the file [`table_file_name`]`(number)` of the set. (Returned by [`Db::restore`], they are
    /// the tables as the store now names them.)
    ///
    /// [`Db::restore`]: crate::Db::restore
    pub tables: Vec<FileMeta>,
    /// The caller's properties (the Raft layer's last included index and term).
    pub properties: BTreeMap<String, Vec<u8>>,
}

/// The file name of table `number`, in a store and in a capture's file set: `NNNNNN.sst`.
pub fn table_file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// The bytes `properties` take in the file (and in a manifest record).
pub(crate) fn properties_bytes<'a>(
    properties: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> usize {
    properties
        .into_iter()
        .map(|(name, value)| 8 + name.len() + value.len())
        .sum()
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("keys are at most 64 KiB, properties 64 KiB in all");
    put_u32(out, len);
    out.extend_from_slice(b);
}

impl SnapshotInfo {
    /// Encodes the file.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_BYTES
                + self
                    .tables
                    .iter()
                    .map(|t| 41 + t.smallest.len() + t.largest.len())
                    .sum::<usize>()
                + 4
                + properties_bytes(self.properties.iter().map(|(k, v)| (k.as_str(), &v[..])))
                + CHECKSUM_BYTES,
        );
        out.extend_from_slice(MAGIC);
        put_u32(&mut out, FORMAT_VERSION);
        put_u64(&mut out, self.last_seq);
        put_u32(
            &mut out,
            u32::try_from(self.tables.len()).expect("a store holds fewer than 2^32 tables"),
        );
        for t in &self.tables {
            put_u64(&mut out, t.number);
            out.push(t.level);
            put_u64(&mut out, t.size);
            put_u64(&mut out, t.smallest_seq);
            put_u64(&mut out, t.largest_seq);
            put_bytes(&mut out, &t.smallest);
            put_bytes(&mut out, &t.largest);
        }
        put_u32(
            &mut out,
            u32::try_from(self.properties.len()).expect("properties are at most 64 KiB in all"),
        );
        for (name, value) in &self.properties {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(&mut out, value);
        }
        let checksum = crc32fast::hash(&out);
        put_u32(&mut out, checksum);
        out
    }

    /// Reads and verifies the `lsm-snapshot` file in `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotFileMissing`] if there is none; [`Error::Corruption`] (with the file
    /// and the offset of what is wrong) if it is damaged, truncated, of an unknown format, or
    /// describes tables no store could hold; I/O errors.
    pub fn read(dir: &Path) -> Result<SnapshotInfo> {
        let path = dir.join(LSM_SNAPSHOT_FILE);
        let missing = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::SnapshotFileMissing {
                    name: LSM_SNAPSHOT_FILE.to_owned(),
                }
            } else {
                IoError::new("read", &path, e).into()
            }
        };
        let len = std::fs::metadata(&path).map_err(missing)?.len();
        if len > FILE_BYTES_MAX {
            return Err(Error::Corruption {
                path,
                offset: FILE_BYTES_MAX,
                reason: "lsm-snapshot file larger than any capture writes",
            });
        }
        let bytes = std::fs::read(&path).map_err(missing)?;
        Self::decode(&bytes).map_err(|(offset, reason)| Error::Corruption {
            path,
            offset,
            reason,
        })
    }

    /// Decodes and checks the file; on failure, the offset of what is wrong and what it is.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Self, (u64, &'static str)> {
        if bytes.len() < HEADER_BYTES + 4 + CHECKSUM_BYTES {
            return Err((0, "lsm-snapshot file too short"));
        }
        if &bytes[..8] != MAGIC {
            return Err((0, "not an lsm-snapshot file"));
        }
        let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let mut stored = [0; CHECKSUM_BYTES];
        stored.copy_from_slice(checksum);
        if crc32fast::hash(body) != u32::from_le_bytes(stored) {
            return Err((body.len() as u64, "lsm-snapshot checksum mismatch"));
        }
        let mut r = Reader { body, at: 8 };
        if r.u32()? != FORMAT_VERSION {
            return Err((8, "unknown lsm-snapshot format version"));
        }
        let last_seq = r.u64()?;
        let count = r.u32()?;
        let mut tables: Vec<FileMeta> = Vec::new();
        let mut numbers = HashSet::new();
        for _ in 0..count {
            let offset = r.at as u64;
            let table = FileMeta {
                number: r.u64()?,
                level: r.u8()?,
                size: r.u64()?,
                smallest_seq: r.u64()?,
                largest_seq: r.u64()?,
                smallest: r.bytes()?,
                largest: r.bytes()?,
            };
            check_table(&table, last_seq, tables.last()).map_err(|reason| (offset, reason))?;
            if !numbers.insert(table.number) {
                return Err((offset, "a table is listed twice"));
            }
            tables.push(table);
        }
        let count = r.u32()?;
        let mut properties = BTreeMap::new();
        for _ in 0..count {
            let offset = r.at as u64;
            let name = String::from_utf8(r.bytes()?)
                .map_err(|_| (offset, "property name is not UTF-8"))?;
            let value = r.bytes()?;
            properties.insert(name, value);
        }
        if r.at != body.len() {
            return Err((r.at as u64, "bytes after the last property"));
        }
        if properties_bytes(properties.iter().map(|(k, v)| (k.as_str(), &v[..])))
            > PROPERTIES_BYTES_MAX
        {
            return Err((
                HEADER_BYTES as u64,
                "properties larger than a capture writes",
            ));
        }
        Ok(SnapshotInfo {
            last_seq,
            tables,
            properties,
        })
    }
}

/// Checks one table of the file against the snapshot's last sequence number and the table
/// listed before it: what the store's reads rely on (a level-0 table shadows the ones after it,
/// a deeper level's tables are disjoint and sorted), so a file that breaks it cannot be
/// installed.
fn check_table(
    table: &FileMeta,
    last_seq: u64,
    previous: Option<&FileMeta>,
) -> std::result::Result<(), &'static str> {
    if usize::from(table.level) >= LEVELS {
        return Err("table level out of range");
    }
    if table.smallest_seq > table.largest_seq || table.largest_seq > last_seq {
        return Err("table sequence range outside the snapshot's");
    }
    let (Some(smallest), Some(_)) = (
        parse_internal_key(&table.smallest),
        parse_internal_key(&table.largest),
    ) else {
        return Err("table key range is not internal keys");
    };
    if table.smallest > table.largest {
        return Err("table key range is inverted");
    }
    let Some(previous) = previous else {
        return Ok(());
    };
    if table.level < previous.level {
        return Err("tables are not in level order");
    }
    if table.level == previous.level {
        if table.level == 0 {
            // Newest first. Tables of one ingest share a sequence number, hence not strictly.
            if table.largest_seq > previous.smallest_seq {
                return Err("level-0 tables are not newest first");
            }
        } else {
            let previous_largest = parse_internal_key(&previous.largest)
                .ok_or("table key range is not internal keys")?;
            if previous_largest.user_key >= smallest.user_key {
                return Err("tables of one level overlap or are out of order");
            }
        }
    }
    Ok(())
}

/// A cursor over the file's body; errors carry the offset where the field was cut short.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], (u64, &'static str)> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.body.len())
            .ok_or((self.at as u64, "lsm-snapshot file cut short"))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], (u64, &'static str)> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> std::result::Result<u8, (u64, &'static str)> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, (u64, &'static str)> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> std::result::Result<u64, (u64, &'static str)> {
        self.array().map(u64::from_le_bytes)
    }

    fn bytes(&mut self) -> std::result::Result<Vec<u8>, (u64, &'static str)> {
        let len = self.u32()? as usize;
        self.take(len).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use strata_memtable::ValueKind;

    use super::*;
    use crate::keys::internal_key;

    fn table(number: u64, level: u8, low: &[u8], high: &[u8], seqs: (u64, u64)) -> FileMeta {
        FileMeta {
            number,
            level,
            size: 100,
            smallest: internal_key(low, seqs.1, ValueKind::Put),
            largest: internal_key(high, seqs.0, ValueKind::Put),
            smallest_seq: seqs.0,
            largest_seq: seqs.1,
        }
    }

    fn info() -> SnapshotInfo {
        SnapshotInfo {
            last_seq: 40,
            tables: vec![
                table(9, 0, b"a", b"z", (30, 40)),
                table(7, 0, b"c", b"d", (21, 29)),
                table(3, 1, b"a", b"f", (1, 20)),
                table(4, 1, b"g", b"k", (1, 20)),
                table(2, 3, b"a", b"z", (1, 1)),
            ],
            properties: BTreeMap::from([
                ("raft.index".to_owned(), 7u64.to_le_bytes().to_vec()),
                ("raft.term".to_owned(), 2u64.to_le_bytes().to_vec()),
            ]),
        }
    }

    #[test]
    fn a_file_decodes_to_what_was_encoded() {
        let info = info();
        assert_eq!(SnapshotInfo::decode(&info.encode()), Ok(info));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_refused() {
        let bytes = info().encode();
        for cut in 0..bytes.len() {
            assert!(SnapshotInfo::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    SnapshotInfo::decode(&damaged).is_err(),
                    "flip of bit {bit} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_description_no_store_could_hold_is_refused_even_with_a_good_checksum() {
        let refused = |edit: &dyn Fn(&mut SnapshotInfo)| {
            let mut info = info();
            edit(&mut info);
            SnapshotInfo::decode(&info.encode())
                .map(|_| ())
                .map_err(|(_, reason)| reason)
        };
        assert_eq!(
            refused(&|i| i.tables[0].level = 7),
            Err("table level out of range")
        );
        assert_eq!(
            refused(&|i| i.last_seq = 39),
            Err("table sequence range outside the snapshot's")
        );
        assert_eq!(
            refused(&|i| i.tables.swap(0, 1)),
            Err("level-0 tables are not newest first")
        );
        assert_eq!(
            refused(&|i| i.tables[3] = table(4, 1, b"f", b"k", (1, 20))),
            Err("tables of one level overlap or are out of order")
        );
        assert_eq!(
            refused(&|i| i.tables.swap(3, 4)),
            Err("tables are not in level order")
        );
        assert_eq!(
            refused(&|i| i.tables[4].number = 9),
            Err("a table is listed twice")
        );
        assert_eq!(
            refused(&|i| i.tables[2].smallest = b"abc".to_vec()),
            Err("table key range is not internal keys")
        );
        assert_eq!(
            refused(&|i| {
                i.properties
                    .insert("big".to_owned(), vec![0; PROPERTIES_BYTES_MAX]);
            }),
            Err("properties larger than a capture writes")
        );
    }
}
