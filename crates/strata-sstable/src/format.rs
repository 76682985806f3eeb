//! Constants and fixed-size structures of the table format (`docs/formats/sstable.md`).

/// The magic number at the end of every table file.
pub const TABLE_MAGIC: [u8; 8] = *b"STRATSST";
/// The format version this code writes, and the newest it reads. Version 3 writes blocked
/// bloom filters over a word-at-a-time hash; version 2 wrote block entries' lengths as
/// varints (as 3 does) and spread filters over FNV-1a; version 1 (fixed-width lengths)
/// tables are still read too.
pub const FORMAT_VERSION: u32 = 3;
/// Bytes in the footer.
pub const FOOTER_BYTES: usize = 56;
/// Bytes in a block trailer: compression type (1) and CRC-32 (4).
pub const BLOCK_TRAILER_BYTES: usize = 5;
/// Bytes in an encoded block handle: offset (8) and size (4).
pub const BLOCK_HANDLE_BYTES: usize = 12;
/// The longest key a table accepts (its lengths are stored as `u16` in blocks).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// The longest value a table accepts.
pub const VALUE_BYTES_MAX: usize = u32::MAX as usize;

/// How a block's contents are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 block format, with the uncompressed size prepended (`lz4_flex`'s
    /// `compress_prepend_size`).
    Lz4,
}

impl Compression {
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            _ => None,
        }
    }
}

/// Where a block lies in the file: its offset and the size of its stored contents (without
/// the trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    /// Byte offset of the block in the file.
    pub offset: u64,
    /// Bytes of stored contents, trailer excluded.
    pub size: u32,
}

impl BlockHandle {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != BLOCK_HANDLE_BYTES {
            return None;
        }
        Some(Self {
            offset: u64::from_le_bytes(bytes[0..8].try_into().ok()?),
            size: u32::from_le_bytes(bytes[8..12].try_into().ok()?),
        })
    }

    /// The offset just past the block's trailer, or `None` if that overflows (a damaged or
    /// hostile handle).
    pub(crate) fn end(&self) -> Option<u64> {
        self.offset
            .checked_add(u64::from(self.size))?
            .checked_add(BLOCK_TRAILER_BYTES as u64)
    }
}

/// The footer: where the index, filter and properties blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    pub properties: BlockHandle,
    pub version: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut out = Vec::with_capacity(FOOTER_BYTES);
        self.index.encode(&mut out);
        self.filter.encode(&mut out);
        self.properties.encode(&mut out);
        out.extend_from_slice(&self.version.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&TABLE_MAGIC);
        let mut footer = [0u8; FOOTER_BYTES];
        footer.copy_from_slice(&out);
        footer
    }

    /// Decodes a footer; the error says what is wrong (the caller adds file and offset).
    pub fn decode(bytes: &[u8]) -> Result<Self, FooterError> {
        if bytes.len() != FOOTER_BYTES {
            return Err(FooterError::Damaged("file too short for a footer"));
        }
        if bytes[48..56] != TABLE_MAGIC {
            return Err(FooterError::Damaged("bad magic"));
        }
        let stored_crc = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]);
        if crc32fast::hash(&bytes[0..40]) != stored_crc {
            return Err(FooterError::Damaged("footer checksum mismatch"));
        }
        if bytes[44..48] != [0; 4] {
            // Outside the checksum, so a flipped bit here must be caught this way.
            return Err(FooterError::Damaged("footer reserved bytes are not zero"));
        }
        let version = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
        if version > FORMAT_VERSION {
            return Err(FooterError::Version(version));
        }
        if version == 0 {
            return Err(FooterError::Damaged("format version 0"));
        }
        let handle = |at: usize| {
            BlockHandle::decode(&bytes[at..at + BLOCK_HANDLE_BYTES])
                .ok_or(FooterError::Damaged("bad block handle"))
        };
        Ok(Self {
            index: handle(0)?,
            filter: handle(12)?,
            properties: handle(24)?,
            version,
        })
    }
}

pub(crate) enum FooterError {
    Damaged(&'static str),
    Version(u32),
}

/// The CRC-32 of a block's stored contents followed by its compression byte.
pub(crate) fn block_crc(contents: &[u8], compression: u8) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(contents);
    hasher.update(&[compression]);
    hasher.finalize()
}
