//! The properties block: the table's own statistics (`strata.*`) and user metadata.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Property names with this prefix are the table's own.
pub const RESERVED_PREFIX: &str = "strata.";

const ENTRIES: &str = "strata.entries";
const DATA_BLOCKS: &str = "strata.data_blocks";
const RAW_KEY_BYTES: &str = "strata.raw_key_bytes";
const RAW_VALUE_BYTES: &str = "strata.raw_value_bytes";
const FIRST_KEY: &str = "strata.first_key";
const LAST_KEY: &str = "strata.last_key";

/// A table's properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Entries in the table.
    pub entries: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Sum of key lengths, before prefix compression.
    pub raw_key_bytes: u64,
    /// Sum of value lengths.
    pub raw_value_bytes: u64,
    /// The smallest key, if the table has entries.
    pub first_key: Option<Bytes>,
    /// The largest key, if the table has entries.
    pub last_key: Option<Bytes>,
    /// Properties set with [`TableBuilder::set_property`](crate::TableBuilder::set_property).
    pub user: BTreeMap<String, Bytes>,
}

pub(crate) fn encode_builtin(
    entries: u64,
    data_blocks: u64,
    raw_key_bytes: u64,
    raw_value_bytes: u64,
    first_key: Option<&[u8]>,
    last_key: Option<&[u8]>,
) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        (ENTRIES, entries.to_le_bytes().to_vec()),
        (DATA_BLOCKS, data_blocks.to_le_bytes().to_vec()),
        (RAW_KEY_BYTES, raw_key_bytes.to_le_bytes().to_vec()),
        (RAW_VALUE_BYTES, raw_value_bytes.to_le_bytes().to_vec()),
    ];
    if let Some(k) = first_key {
        out.push((FIRST_KEY, k.to_vec()));
    }
    if let Some(k) = last_key {
        out.push((LAST_KEY, k.to_vec()));
    }
    out
}

/// Builds [`Properties`] from the decoded block's entries.
pub(crate) fn decode(
    entries: impl Iterator<Item = (Vec<u8>, Bytes)>,
) -> Result<Properties, &'static str> {
    let mut p = Properties::default();
    let number = |v: &Bytes| -> Result<u64, &'static str> {
        let bytes: [u8; 8] = v[..]
            .try_into()
            .map_err(|_| "numeric property is not 8 bytes")?;
        Ok(u64::from_le_bytes(bytes))
    };
    for (name, value) in entries {
        let name = String::from_utf8(name).map_err(|_| "property name is not UTF-8")?;
        match name.as_str() {
            ENTRIES => p.entries = number(&value)?,
            DATA_BLOCKS => p.data_blocks = number(&value)?,
            RAW_KEY_BYTES => p.raw_key_bytes = number(&value)?,
            RAW_VALUE_BYTES => p.raw_value_bytes = number(&value)?,
            FIRST_KEY => p.first_key = Some(value),
            LAST_KEY => p.last_key = Some(value),
            // Unknown `strata.` names come from a newer writer of the same major version:
            // skip them rather than fail.
            other if other.starts_with(RESERVED_PREFIX) => {}
            _ => {
                p.user.insert(name, value);
            }
        }
    }
    Ok(p)
}
