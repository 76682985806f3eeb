//! [`Table`]: reading a table file through a memory map.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_fs::IoError;

use crate::block::{Block, BlockCursor, DataBlock, EntryHeader};
use crate::bloom::{self, FilterProbe};
use crate::builder::{FilterKeyFn, whole_key};
use crate::error::{Error, Result};
use crate::format::{
    BLOCK_TRAILER_BYTES, BlockHandle, Compression, FOOTER_BYTES, FORMAT_VERSION, Footer,
    FooterError, block_crc,
};
use crate::properties::{self, Properties};

/// The largest block a reader will decompress. A compressed block states its own uncompressed
/// size; this keeps a damaged or hostile size from allocating without bound.
const DECOMPRESSED_BLOCK_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A verified (and, for a compressed table, decompressed) data block, as a [`BlockCache`]
/// holds it. For an uncompressed table it is a slice of the table's mapping, and its charge
/// is the page cache's memory rather than the heap's.
#[derive(Debug, Clone)]
pub struct CachedBlock(DataBlock);

impl CachedBlock {
    /// Roughly how many bytes the block holds, for the cache's accounting.
    pub fn charge(&self) -> usize {
        self.0.charge()
    }
}

/// A cache of verified data blocks, shared by many tables (the LSM's business; a table only
/// asks and offers). Keys are the table's id (from [`ReadOptions::table_id`]) and the block's
/// offset.
pub trait BlockCache: Send + Sync + std::fmt::Debug {
    /// The block at `offset` of table `table_id`, if cached.
    fn get(&self, table_id: u64, offset: u64) -> Option<CachedBlock>;
    /// Offers a block just read and verified.
    fn insert(&self, table_id: u64, offset: u64, block: CachedBlock);
    /// Drops every block of table `table_id`: the table is gone. A cached block of an
    /// uncompressed table is a slice of the table's mapping, so it keeps the whole mapping
    /// (and, for a deleted file, its disk space) alive. The default does nothing.
    fn evict_table(&self, table_id: u64) {
        let _ = table_id;
    }
}

/// Options for [`Table::open`].
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Identifies the table in a shared [`BlockCache`].
    pub table_id: u64,
    /// A block cache to consult before reading, and to fill after.
    pub cache: Option<Arc<dyn BlockCache>>,
    /// The function the table was built with as [`TableOptions::filter_key`](crate::TableOptions);
    /// [`Table::get`] filters on what it returns.
    pub filter_key: FilterKeyFn,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            table_id: 0,
            cache: None,
            filter_key: whole_key,
        }
    }
}

/// An open, immutable table.
///
/// The file is mapped into memory. Strata writes a table once (with
/// [`TableBuilder`](crate::TableBuilder)) and never truncates or rewrites it; deleting it while
/// mapped is harmless. A mapped file that another process truncates would fault on access: do
/// not modify table files in place (this includes opening a file that something else is still
/// writing). Values returned as [`Bytes`] keep the mapping alive after the `Table` is dropped.
///
/// [`ReadOptions::table_id`] must be unique among tables sharing a [`BlockCache`].
#[derive(Debug)]
pub struct Table {
    path: PathBuf,
    data: Bytes,
    /// Where the data blocks end (the filter, properties and index follow).
    index: Block,
    filter: Option<Bytes>,
    properties: Properties,
    options: ReadOptions,
    version: u32,
}

fn map_file(path: &Path) -> Result<Bytes> {
    let file = File::open(path).map_err(IoError::with("open table", path))?;
    let len = file
        .metadata()
        .map_err(IoError::with("stat table", path))?
        .len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    #[allow(unsafe_code)]
    // SAFETY: the mapping is read-only and tables are immutable once finished: Strata never
    // writes, truncates or rewrites a table file after `TableBuilder::finish`. Deleting it is
    // harmless (on Unix the mapping keeps the inode). Only another process truncating or
    // rewriting the file in place could invalidate the mapping; the type's docs make that the
    // contract.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(IoError::with("map table", path))?;
    Ok(Bytes::from_owner(map))
}

impl Table {
    /// Opens and maps the table at `path`, verifying its footer, index, filter and properties.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] naming the offset of what is damaged;
    /// [`Error::UnsupportedVersion`] for a newer format; I/O errors.
    pub fn open(path: &Path, options: ReadOptions) -> Result<Table> {
        let data = map_file(path)?;
        Self::from_bytes(path, data, options)
    }

    /// Opens a table whose bytes are already in memory (a table received in a snapshot
    /// transfer, a test, a fuzzer). `path` only names it in errors.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn from_bytes(path: &Path, data: Bytes, options: ReadOptions) -> Result<Table> {
        let corruption = |offset: u64, reason: &'static str| Error::Corruption {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        if data.len() < FOOTER_BYTES {
            return Err(corruption(0, "file too short for a footer"));
        }
        let footer_at = data.len() - FOOTER_BYTES;
        let footer = Footer::decode(&data[footer_at..]).map_err(|e| match e {
            FooterError::Damaged(reason) => corruption(footer_at as u64, reason),
            FooterError::Version(found) => Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            },
        })?;
        let mut table = Table {
            path: path.to_path_buf(),
            data,
            index: Block::empty(),
            filter: None,
            properties: Properties::default(),
            options,
            version: footer.version,
        };
        table.index = table.read_block(footer.index)?;
        if footer.filter.size > 0 {
            let filter = table.read_raw(footer.filter)?;
            bloom::check_filter(&filter, bloom::Layout::of_version(footer.version))
                .ok_or_else(|| corruption(footer.filter.offset, "malformed bloom filter"))?;
            table.filter = Some(filter);
        }
        let props = table.read_block(footer.properties)?;
        table.properties =
            properties::decode((0..props.len()).map(|i| (props.key(i).to_vec(), props.value(i))))
                .map_err(|reason| corruption(footer.properties.offset, reason))?;
        // The data blocks are contiguous from offset 0 up to the first metadata block.
        let data_end = if footer.filter.size > 0 {
            footer.filter.offset
        } else {
            footer.properties.offset
        };
        let mut expected_offset = 0u64;
        for i in 0..table.index.len() {
            let handle = BlockHandle::decode(table.index.value_slice(i))
                .ok_or_else(|| corruption(footer.index.offset, "bad block handle in the index"))?;
            if handle.offset != expected_offset {
                return Err(corruption(
                    footer.index.offset,
                    "index entries are not contiguous",
                ));
            }
            expected_offset = handle.end().filter(|&end| end <= data_end).ok_or_else(|| {
                corruption(footer.index.offset, "index entry points past the data")
            })?;
        }
        if expected_offset != data_end {
            return Err(corruption(
                footer.index.offset,
                "index does not cover the data",
            ));
        }
        Ok(table)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version the file was written with.
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// How this table's block entries are laid out.
    fn entry_header(&self) -> EntryHeader {
        EntryHeader::for_version(self.version)
    }

    /// The table's properties.
    pub fn properties(&self) -> &Properties {
        &self.properties
    }

    /// Bytes of the file.
    pub fn file_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// False if the bloom filter says no key with this filter key is in the table.
    ///
    /// `filter_key` is what [`TableOptions::filter_key`](crate::TableOptions) extracted when the
    /// table was built (the whole key, by default).
    pub fn may_contain(&self, filter_key: &[u8]) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|filter| bloom::may_contain(filter, self.filter_layout(), filter_key))
    }

    /// [`may_contain`](Self::may_contain) for a filter key or part hashed once for many
    /// tables.
    pub fn may_contain_probe(&self, probe: &FilterProbe<'_>) -> bool {
        self.filter.as_ref().is_none_or(|filter| {
            let layout = self.filter_layout();
            bloom::may_contain_hash(filter, layout, probe.hash(layout))
        })
    }

    fn filter_layout(&self) -> bloom::Layout {
        bloom::Layout::of_version(self.version)
    }

    /// The value stored for `key`, if any. Consults the bloom filter first, then reads (and
    /// verifies) at most one data block. The value is a slice of the mapped file when blocks
    /// are not compressed.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] if the data block is damaged.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        if !self.may_contain((self.options.filter_key)(key)) {
            return Ok(None);
        }
        let block_index = self.index.seek(key);
        if block_index == self.index.len() {
            return Ok(None);
        }
        let block = self.data_block(block_index)?;
        let mut cursor = BlockCursor::default();
        let found = cursor
            .seek(&block, key)
            .map_err(|reason| self.block_corruption(block_index, reason))?;
        Ok((found && cursor.key() == key).then(|| block.value(&cursor)))
    }

    /// An iterator over the table, positioned before the first entry. See [`TableIter`].
    pub fn iter(&self) -> TableIter<'_> {
        TableIter {
            table: self,
            block_index: 0,
            block: None,
            cursor: BlockCursor::default(),
            error: None,
            positioned: false,
            yielded: false,
        }
    }

    /// Reads and verifies every block; returns the number of entries.
    ///
    /// # Errors
    ///
    /// The first damage found.
    pub fn check(&self) -> Result<u64> {
        let mut entries = 0;
        let mut previous_last: Option<Vec<u8>> = None;
        let mut cursor = BlockCursor::default();
        for i in 0..self.index.len() {
            let block = self.data_block(i)?;
            let structure = |reason: &'static str| self.block_corruption(i, reason);
            if !cursor.seek_to_first(&block).map_err(structure)? {
                return Err(structure("empty data block"));
            }
            // Keys increase across blocks, and the index names each block's last key.
            if previous_last
                .as_deref()
                .is_some_and(|last| last >= cursor.key())
            {
                return Err(structure("keys out of order across blocks"));
            }
            entries += 1;
            while cursor.advance(&block).map_err(structure)? {
                entries += 1;
            }
            cursor.seek_to_last(&block).map_err(structure)?;
            if cursor.key() != self.index.key(i) {
                return Err(structure("index key differs from the block's last key"));
            }
            previous_last = Some(cursor.key().to_vec());
        }
        if entries != self.properties.entries {
            return Err(Error::Corruption {
                path: self.path.clone(),
                offset: 0,
                reason: "entry count differs from the properties",
            });
        }
        Ok(entries)
    }

    /// A structural problem in data block `block_index`, named by the block's offset.
    fn block_corruption(&self, block_index: usize, reason: &'static str) -> Error {
        Error::Corruption {
            path: self.path.clone(),
            offset: self.handle(block_index).map_or(0, |h| h.offset),
            reason,
        }
    }

    fn handle(&self, block_index: usize) -> Result<BlockHandle> {
        // Every index entry was checked at open.
        BlockHandle::decode(self.index.value_slice(block_index)).ok_or_else(|| Error::Corruption {
            path: self.path.clone(),
            offset: 0,
            reason: "bad block handle",
        })
    }

    fn data_block(&self, block_index: usize) -> Result<DataBlock> {
        let handle = self.handle(block_index)?;
        if let Some(cache) = &self.options.cache
            && let Some(CachedBlock(block)) = cache.get(self.options.table_id, handle.offset)
        {
            return Ok(block);
        }
        let contents = self.read_raw(handle)?;
        let block =
            DataBlock::new(contents, self.entry_header()).map_err(|reason| Error::Corruption {
                path: self.path.clone(),
                offset: handle.offset,
                reason,
            })?;
        if let Some(cache) = &self.options.cache {
            cache.insert(
                self.options.table_id,
                handle.offset,
                CachedBlock(block.clone()),
            );
        }
        Ok(block)
    }

    fn read_block(&self, handle: BlockHandle) -> Result<Block> {
        let contents = self.read_raw(handle)?;
        Block::decode(contents, self.entry_header()).map_err(|reason| Error::Corruption {
            path: self.path.clone(),
            offset: handle.offset,
            reason,
        })
    }

    /// The verified, decompressed contents of the block at `handle`.
    fn read_raw(&self, handle: BlockHandle) -> Result<Bytes> {
        let corruption = |reason: &'static str| Error::Corruption {
            path: self.path.clone(),
            offset: handle.offset,
            reason,
        };
        let limit = (self.data.len() - FOOTER_BYTES) as u64;
        if handle.end().is_none_or(|end| end > limit) {
            return Err(corruption("block runs past the data"));
        }
        let start = handle.offset as usize;
        let end = start + handle.size as usize;
        let stored = self.data.slice(start..end);
        let trailer = &self.data[end..end + BLOCK_TRAILER_BYTES];
        let code = trailer[0];
        let crc = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
        if block_crc(&stored, code) != crc {
            return Err(corruption("block checksum mismatch"));
        }
        match Compression::from_code(code) {
            Some(Compression::None) => Ok(stored),
            Some(Compression::Lz4) => {
                let size = stored
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .ok_or_else(|| corruption("compressed block too short"))?;
                if size > DECOMPRESSED_BLOCK_BYTES_MAX {
                    return Err(corruption("compressed block too large"));
                }
                lz4_flex::decompress_size_prepended(&stored)
                    .map(Bytes::from)
                    .map_err(|_| corruption("compressed block does not decompress"))
            }
            None => Err(corruption("unknown block compression")),
            // `Compression` is non-exhaustive for users, not for this crate.
            #[allow(unreachable_patterns)]
            Some(_) => Err(corruption("unknown block compression")),
        }
    }
}

/// A cursor over a table's entries in key order, movable both ways.
///
/// Starts unpositioned; [`seek_to_first`](Self::seek_to_first), [`seek_to_last`](Self::seek_to_last)
/// or [`seek`](Self::seek) position it, [`next`](Self::next) and [`prev`](Self::prev) move it, and
/// [`valid`](Self::valid) says whether it is on an entry. A damaged block stops it and leaves the
/// error in [`status`](Self::status). It also implements [`Iterator`] (forward, from wherever it
/// is, starting at the first entry if unpositioned).
#[derive(Debug)]
pub struct TableIter<'a> {
    table: &'a Table,
    block_index: usize,
    block: Option<DataBlock>,
    cursor: BlockCursor,
    error: Option<Error>,
    /// Set by any seek: `Iterator::next` then starts from the current entry.
    positioned: bool,
    /// Set once `Iterator::next` has returned the current entry; any move clears it.
    yielded: bool,
}

impl<'a> TableIter<'a> {
    /// Makes block `block_index` current (not yet on an entry); false past the last block or
    /// on an error.
    fn load(&mut self, block_index: usize) -> bool {
        self.positioned = true;
        self.yielded = false;
        self.block_index = block_index;
        self.block = None;
        if block_index >= self.table.index.len() {
            return false;
        }
        match self.table.data_block(block_index) {
            Ok(block) => {
                self.block = Some(block);
                true
            }
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    /// Runs a cursor move on the current block; a damaged entry stops the iterator.
    fn on_block(
        &mut self,
        step: impl FnOnce(&mut BlockCursor, &DataBlock) -> std::result::Result<bool, &'static str>,
    ) -> bool {
        let Some(block) = &self.block else {
            return false;
        };
        match step(&mut self.cursor, block) {
            Ok(on_entry) => on_entry,
            Err(reason) => {
                self.error = Some(self.table.block_corruption(self.block_index, reason));
                self.block = None;
                false
            }
        }
    }

    /// From block `first` on, positions on the first entry of the first non-empty block.
    fn first_entry_from_block(&mut self, first: usize) {
        let mut i = first;
        while self.load(i) {
            if self.on_block(|c, b| c.seek_to_first(b)) {
                return;
            }
            if self.error.is_some() {
                return;
            }
            i += 1;
        }
    }

    /// True if positioned on an entry.
    pub fn valid(&self) -> bool {
        self.block.is_some() && self.cursor.valid()
    }

    /// The error that stopped the iterator, if any.
    pub fn status(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Takes the error that stopped the iterator, if any.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The current key. Only call when [`valid`](Self::valid).
    pub fn key(&self) -> &[u8] {
        if self.valid() { self.cursor.key() } else { &[] }
    }

    /// The current value (a slice of the mapped file for uncompressed tables).
    pub fn value(&self) -> Bytes {
        match &self.block {
            Some(block) if self.cursor.valid() => block.value(&self.cursor),
            _ => Bytes::new(),
        }
    }

    /// The current value, borrowed: no reference count is taken.
    pub fn value_slice(&self) -> &[u8] {
        match &self.block {
            Some(block) if self.cursor.valid() => block.value_slice(&self.cursor),
            _ => &[],
        }
    }

    /// Positions on the first entry.
    pub fn seek_to_first(&mut self) {
        self.error = None;
        self.first_entry_from_block(0);
    }

    /// Positions on the last entry.
    pub fn seek_to_last(&mut self) {
        self.error = None;
        self.last_entry_before_block(self.table.index.len());
    }

    /// Positions on the last entry of the last non-empty block before block `end`.
    fn last_entry_before_block(&mut self, end: usize) {
        let mut i = end;
        while i > 0 {
            i -= 1;
            if !self.load(i) {
                return;
            }
            if self.on_block(|c, b| c.seek_to_last(b)) || self.error.is_some() {
                return;
            }
        }
        self.block = None;
    }

    /// Positions on the first entry whose key is at least `key`.
    pub fn seek(&mut self, key: &[u8]) {
        self.error = None;
        let i = self.table.index.seek(key);
        if !self.load(i) {
            return;
        }
        if !self.on_block(|c, b| c.seek(b, key)) && self.error.is_none() {
            self.first_entry_from_block(i + 1);
        }
    }

    /// Moves to the next entry.
    pub fn advance(&mut self) {
        if !self.valid() {
            return;
        }
        self.yielded = false;
        if !self.on_block(|c, b| c.advance(b)) && self.error.is_none() {
            self.first_entry_from_block(self.block_index + 1);
        }
    }

    /// Moves to the previous entry.
    pub fn prev(&mut self) {
        if !self.valid() {
            return;
        }
        self.yielded = false;
        if !self.on_block(|c, b| c.prev(b)) && self.error.is_none() {
            self.last_entry_before_block(self.block_index);
        }
    }
}

impl Iterator for TableIter<'_> {
    type Item = Result<(Vec<u8>, Bytes)>;

    /// Yields the entry the cursor is on (the first, if it was never positioned), then moves
    /// forward on the next call.
    fn next(&mut self) -> Option<Self::Item> {
        if !self.positioned {
            self.seek_to_first();
        } else if self.yielded {
            self.advance();
        }
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        if !self.valid() {
            return None;
        }
        self.yielded = true;
        Some(Ok((self.key().to_vec(), self.value())))
    }
}
