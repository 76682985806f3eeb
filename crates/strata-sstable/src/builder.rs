//! [`TableBuilder`]: writes a table file once, from keys in strictly increasing order.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use strata_fs::IoError;

use crate::block::BlockBuilder;
use crate::bloom::{BloomBuilder, prefix_and_key_hash};
use crate::error::{Error, Result};
use crate::format::{
    BLOCK_HANDLE_BYTES, BlockHandle, Compression, FORMAT_VERSION, Footer, KEY_BYTES_MAX,
    VALUE_BYTES_MAX, block_crc,
};
use crate::properties::{RESERVED_PREFIX, encode_builtin};

/// Options for writing a table.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// A data block is finished once it holds about this many bytes. Smaller blocks mean less
    /// to read and checksum per point lookup, a larger index. Default 4 KiB.
    pub block_bytes: usize,
    /// Every this many entries a key is stored whole (a restart point) instead of sharing a
    /// prefix with the previous key. Default 16.
    pub restart_interval: usize,
    /// Bloom filter bits per key; 0 writes no filter. Default 10 (about 1% false positives).
    pub bloom_bits_per_key: u32,
    /// Block compression. Default [`Compression::None`]: blocks are then read in place from the
    /// mapped file, with no copy.
    pub compression: Compression,
    /// The part of each key the bloom filter records. Default: the whole key. An LSM whose
    /// keys carry a sequence number filters on the user key instead, so that a read at any
    /// snapshot can consult the filter; readers must use the same function
    /// ([`ReadOptions::filter_key`](crate::ReadOptions::filter_key)).
    pub filter_key: FilterKeyFn,
}

/// Extracts from a key the part a bloom filter records (see [`TableOptions::filter_key`]).
pub type FilterKeyFn = fn(&[u8]) -> &[u8];

/// The default [`FilterKeyFn`]: the whole key.
pub fn whole_key(key: &[u8]) -> &[u8] {
    key
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            block_bytes: 4 * 1024,
            restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::None,
            filter_key: whole_key,
        }
    }
}

/// What [`TableBuilder::finish`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSummary {
    /// Entries in the table.
    pub entries: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

/// Writes one table file from a sorted stream of entries.
///
/// The file is created new (never overwriting), written through a buffer, and on
/// [`finish`](Self::finish) `fsync`ed together with its directory. A builder dropped without
/// finishing removes its partial file.
#[derive(Debug)]
pub struct TableBuilder {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    options: TableOptions,
    data: BlockBuilder,
    index: BlockBuilder,
    bloom: BloomBuilder,
    offset: u64,
    last_key: Vec<u8>,
    /// The last part recorded by [`add_to_filter`](Self::add_to_filter).
    last_extra: Option<Vec<u8>>,
    first_key: Option<Vec<u8>>,
    entries: u64,
    data_blocks: u64,
    raw_key_bytes: u64,
    raw_value_bytes: u64,
    user_properties: BTreeMap<String, Vec<u8>>,
    finished: bool,
    /// A write failed: the file is missing a block whose entries the filter and counts already
    /// include, so the table can only be abandoned.
    failed: bool,
}

impl TableBuilder {
    /// Creates the table file at `path`, which must not exist.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file exists or cannot be created.
    pub fn create(path: &Path, options: TableOptions) -> Result<Self> {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            open.mode(strata_fs::DEFAULT_FILE_MODE);
        }
        let file = open
            .open(path)
            .map_err(IoError::with("create table", path))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(256 * 1024, file)),
            data: BlockBuilder::new(options.restart_interval),
            index: BlockBuilder::new(1),
            options,
            bloom: BloomBuilder::default(),
            offset: 0,
            last_key: Vec::new(),
            last_extra: None,
            first_key: None,
            entries: 0,
            data_blocks: 0,
            raw_key_bytes: 0,
            raw_value_bytes: 0,
            user_properties: BTreeMap::new(),
            finished: false,
            failed: false,
        })
    }

    /// Adds an entry. Keys must be strictly increasing (bytewise).
    ///
    /// # Errors
    ///
    /// [`Error::KeysOutOfOrder`], [`Error::TooLarge`], or a write error. After a write error
    /// every later call fails too: the table can only be dropped.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.add_entry(key, value, None)
    }

    /// [`add`](Self::add), then [`add_to_filter`](Self::add_to_filter) with `key[..part_len]`
    /// (nothing if `part_len` is past the key's end), in one pass over the bytes the part and
    /// the key's filter key share when the part begins it: a long key is hashed once, not
    /// twice. The filter is the same as from the two calls.
    ///
    /// # Errors
    ///
    /// As [`add`](Self::add).
    pub fn add_with_filter_part(
        &mut self,
        key: &[u8],
        value: &[u8],
        part_len: usize,
    ) -> Result<()> {
        self.add_entry(key, value, Some(part_len))
    }

    fn add_entry(&mut self, key: &[u8], value: &[u8], part_len: Option<usize>) -> Result<()> {
        self.check_not_failed()?;
        if key.len() > KEY_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "key",
                len: key.len(),
                max: KEY_BYTES_MAX,
            });
        }
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "value",
                len: value.len(),
                max: VALUE_BYTES_MAX,
            });
        }
        if self.first_key.is_some() && key <= &self.last_key[..] {
            return Err(Error::KeysOutOfOrder);
        }
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        self.data.add(key, value);
        if self.options.bloom_bits_per_key > 0 {
            let filter_key = (self.options.filter_key)(key);
            // Versions of one user key arrive together: record each filter key once.
            let key_new =
                self.entries == 0 || (self.options.filter_key)(&self.last_key) != filter_key;
            // And each part once per run of equal parts.
            let part = part_len
                .and_then(|n| key.get(..n))
                .filter(|part| self.last_extra.as_deref() != Some(*part));
            match part {
                Some(part)
                    if key_new
                        && filter_key.as_ptr() == key.as_ptr()
                        && part.len() <= filter_key.len() =>
                {
                    let (part_hash, key_hash) = prefix_and_key_hash(filter_key, part.len());
                    self.bloom.add_hash(part_hash);
                    self.bloom.add_hash(key_hash);
                }
                _ => {
                    if key_new {
                        self.bloom.add(filter_key);
                    }
                    if let Some(part) = part {
                        self.bloom.add(part);
                    }
                }
            }
            if let Some(part) = part {
                let last = self.last_extra.get_or_insert_with(Vec::new);
                last.clear();
                last.extend_from_slice(part);
            }
        }
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.entries += 1;
        self.raw_key_bytes += key.len() as u64;
        self.raw_value_bytes += value.len() as u64;
        if self.data.estimated_bytes() >= self.options.block_bytes {
            let flushed = self.flush_data_block();
            self.failed |= flushed.is_err();
            flushed?;
        }
        Ok(())
    }

    /// Records `part` in the bloom filter too, beside what [`TableOptions::filter_key`] takes
    /// from each key (once per run of equal parts): an LSM records the prefix of each key this
    /// way, so that a seek within one prefix can rule the table out
    /// ([`Table::may_contain`](crate::Table::may_contain) with the same part). The table does
    /// not record what the extra parts were: the writer says so in a property.
    pub fn add_to_filter(&mut self, part: &[u8]) {
        if self.options.bloom_bits_per_key == 0 || self.last_extra.as_deref() == Some(part) {
            return;
        }
        self.bloom.add(part);
        let last = self.last_extra.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(part);
    }

    fn check_not_failed(&self) -> Result<()> {
        if self.failed {
            return Err(IoError::new(
                "continue a table after a failed write:",
                &self.path,
                std::io::Error::other("an earlier write failed; the table must be abandoned"),
            )
            .into());
        }
        Ok(())
    }

    /// Records a user property (the Raft layer's last index and term, the LSM's sequence
    /// range...). Names starting with `strata.` are reserved.
    ///
    /// # Errors
    ///
    /// [`Error::ReservedProperty`]; [`Error::TooLarge`] for a name over 64 KiB.
    pub fn set_property(&mut self, name: &str, value: &[u8]) -> Result<()> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(Error::ReservedProperty);
        }
        if name.len() > KEY_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "property",
                len: name.len(),
                max: KEY_BYTES_MAX,
            });
        }
        self.user_properties.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn flush_data_block(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let contents = self.data.finish();
        let handle = self.write_block(&contents, self.options.compression)?;
        let mut encoded = Vec::with_capacity(BLOCK_HANDLE_BYTES);
        handle.encode(&mut encoded);
        // The index maps each block's last key to the block.
        self.index.add(&self.last_key, &encoded);
        self.data_blocks += 1;
        Ok(())
    }

    fn write_block(&mut self, contents: &[u8], compression: Compression) -> Result<BlockHandle> {
        let compressed;
        let (stored, code) = match compression {
            Compression::Lz4 => {
                compressed = lz4_flex::compress_prepend_size(contents);
                // Keep the compressed form only if it saves at least an eighth.
                if compressed.len() < contents.len() - contents.len() / 8 {
                    (&compressed[..], Compression::Lz4.code())
                } else {
                    (contents, Compression::None.code())
                }
            }
            Compression::None => (contents, Compression::None.code()),
        };
        let size = u32::try_from(stored.len()).map_err(|_| Error::TooLarge {
            what: "block",
            len: stored.len(),
            max: u32::MAX as usize,
        })?;
        let handle = BlockHandle {
            offset: self.offset,
            size,
        };
        let crc = block_crc(stored, code);
        let path = &self.path;
        let out = self.out.as_mut().ok_or_else(|| {
            IoError::new(
                "write to a finished table",
                path,
                std::io::ErrorKind::Other.into(),
            )
        })?;
        out.write_all(stored)
            .and_then(|()| out.write_all(&[code]))
            .and_then(|()| out.write_all(&crc.to_le_bytes()))
            .map_err(IoError::with("write table", path))?;
        self.offset = handle.end().ok_or(Error::TooLarge {
            what: "table",
            len: usize::MAX,
            max: usize::MAX,
        })?;
        Ok(handle)
    }

    /// Writes the filter, properties, index and footer, then `fsync`s the file and its
    /// directory. The table is complete and durable when this returns.
    ///
    /// # Errors
    ///
    /// A write or sync error, or an earlier failed write (after which the builder refuses
    /// everything); the partial file is removed.
    pub fn finish(mut self) -> Result<TableSummary> {
        self.check_not_failed()?;
        self.flush_data_block()?;
        let filter = if self.options.bloom_bits_per_key > 0 {
            let bytes = self.bloom.finish(self.options.bloom_bits_per_key);
            self.write_block(&bytes, Compression::None)?
        } else {
            BlockHandle::default()
        };
        let mut properties = BlockBuilder::new(1);
        let builtin = encode_builtin(
            self.entries,
            self.data_blocks,
            self.raw_key_bytes,
            self.raw_value_bytes,
            self.first_key.as_deref(),
            self.entries.checked_sub(1).map(|_| &self.last_key[..]),
        );
        let mut all: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
        for (k, v) in &builtin {
            all.insert(k.as_bytes(), v);
        }
        for (k, v) in &self.user_properties {
            all.insert(k.as_bytes(), v);
        }
        for (k, v) in all {
            properties.add(k, v);
        }
        let properties = properties.finish();
        let properties = self.write_block(&properties, Compression::None)?;
        let index = self.index.finish();
        let index = self.write_block(&index, Compression::None)?;
        let footer = Footer {
            index,
            filter,
            properties,
            version: FORMAT_VERSION,
        }
        .encode();
        let path = self.path.clone();
        let mut out = self.out.take().ok_or_else(|| {
            IoError::new(
                "finish a finished table",
                &path,
                std::io::ErrorKind::Other.into(),
            )
        })?;
        out.write_all(&footer)
            .map_err(IoError::with("write table footer", &path))?;
        let file = out
            .into_inner()
            .map_err(|e| IoError::new("flush table", &path, e.into_error()))?;
        strata_fs::sync_file(&file, &path)?;
        strata_fs::sync_parent_dir(&path)?;
        self.finished = true;
        Ok(TableSummary {
            entries: self.entries,
            data_blocks: self.data_blocks,
            file_bytes: self.offset + footer.len() as u64,
        })
    }
}

impl Drop for TableBuilder {
    fn drop(&mut self) {
        if !self.finished {
            // An unfinished table is garbage: remove it rather than leave a file without a
            // footer for someone to trip over. Best effort: the open below would report it.
            self.out = None;
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
