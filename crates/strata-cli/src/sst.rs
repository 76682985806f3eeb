//! `strata sst`: inspect and verify sorted table files.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use strata_sstable::{ReadOptions, Table};

/// The `strata sst` subcommands.
#[derive(Debug, Subcommand)]
pub enum SstCommand {
    /// Print a table's properties, then every entry. Reads only.
    #[command(after_help = "Examples:
  strata sst dump /var/lib/strata/member/lsm/000042.sst | head
  strata sst dump FILE --json | jq -c 'select(.key)'")]
    Dump {
        /// The table file.
        file: PathBuf,
        /// JSON: one object with the properties, then one object per entry
        /// ({"key": "HEX", "value": "HEX"}).
        #[arg(long)]
        json: bool,
    },
    /// Verify every block of a table; exit 1 on damage. Reads only.
    #[command(after_help = "Example:
  for t in /var/lib/strata/member/lsm/*.sst; do strata sst check \"$t\"; done")]
    Check {
        /// The table file.
        file: PathBuf,
        /// The result as one JSON object: {"file", "ok", "entries"}.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `strata sst` subcommand.
pub fn run(command: SstCommand) -> Result<()> {
    match command {
        SstCommand::Dump { file, json } => dump(&file, json),
        SstCommand::Check { file, json } => check(&file, json),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn open(file: &Path) -> Result<Table> {
    Table::open(file, ReadOptions::default())
        .with_context(|| format!("cannot open table {}", file.display()))
}

fn dump(file: &Path, json: bool) -> Result<()> {
    let table = open(file)?;
    let p = table.properties();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let user: serde_json::Map<String, serde_json::Value> = p
            .user
            .iter()
            .map(|(k, v)| (k.clone(), json!(hex(v))))
            .collect();
        let properties = json!({
            "format_version": table.format_version(),
            "file_bytes": table.file_bytes(),
            "entries": p.entries,
            "data_blocks": p.data_blocks,
            "raw_key_bytes": p.raw_key_bytes,
            "raw_value_bytes": p.raw_value_bytes,
            "first_key": p.first_key.as_deref().map(hex),
            "last_key": p.last_key.as_deref().map(hex),
            "user": user,
        });
        writeln!(out, "{properties}")?;
    } else {
        writeln!(out, "table {}", file.display())?;
        writeln!(
            out,
            "  format version {}, {} bytes, {} entries in {} data blocks",
            table.format_version(),
            table.file_bytes(),
            p.entries,
            p.data_blocks
        )?;
        for (name, value) in &p.user {
            writeln!(out, "  property {name} = {}", hex(value))?;
        }
    }
    for entry in table.iter() {
        let (key, value) = entry.with_context(|| format!("cannot read {}", file.display()))?;
        if json {
            writeln!(out, "{}", json!({"key": hex(&key), "value": hex(&value)}))?;
        } else {
            writeln!(out, "  {} => {}", hex(&key), hex(&value))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn check(file: &Path, json: bool) -> Result<()> {
    let table = open(file)?;
    let entries = table
        .check()
        .with_context(|| format!("table {} is damaged", file.display()))?;
    if json {
        return crate::output::json(
            &json!({"file": file.display().to_string(), "ok": true, "entries": entries}),
            false,
        );
    }
    crate::output::outln!("{}: ok, {entries} entries", file.display())
}
