//! Helpers for tests and fuzz targets, not part of the supported API.

use crate::format::{BlockHandle, FORMAT_VERSION, Footer, block_crc};

/// A table file assembled from arbitrary contents for the data, filter, properties and index
/// blocks, each with a correct trailer, and a correct footer. Checksums pass, so every decoder
/// sees the given bytes: what the fuzz target and the arbitrary-blocks test feed the reader.
pub fn assemble_table(data: &[u8], filter: &[u8], properties: &[u8], index: &[u8]) -> Vec<u8> {
    let mut file = Vec::new();
    let mut handles = Vec::new();
    for block in [data, filter, properties, index] {
        let offset = file.len() as u64;
        file.extend_from_slice(block);
        file.push(0);
        file.extend_from_slice(&block_crc(block, 0).to_le_bytes());
        handles.push(BlockHandle {
            offset,
            size: u32::try_from(block.len()).unwrap_or(u32::MAX),
        });
    }
    let footer = Footer {
        index: handles[3],
        filter: handles[1],
        properties: handles[2],
        version: FORMAT_VERSION,
    };
    file.extend_from_slice(&footer.encode());
    file
}
