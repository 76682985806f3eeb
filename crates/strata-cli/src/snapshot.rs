//! `strata snapshot`: inspect and verify Raft snapshots: an exported snapshot directory, a
//! node's snapshot store (its installed set), or one set in it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use prost::Message as _;
use serde_json::json;
use strata_raft::ConfState;
use strata_snapshot::SnapshotMeta;

/// The `strata snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Print a snapshot's description as JSON: id, last index and term, membership, files.
    Show {
        /// An exported snapshot, a node's snapshot store (`NodeOptions::snapshot_dir`: its
        /// installed set is shown), or a set in one (`snapshots/ID`).
        dir: PathBuf,
    },
    /// Check every file of a snapshot against its size and CRC; exit 1 on damage.
    Check {
        /// As for `show`.
        dir: PathBuf,
    },
}

/// Runs a `strata snapshot` subcommand.
pub fn run(command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Show { dir } => show(&dir),
        SnapshotCommand::Check { dir } => check(&dir),
    }
}

/// The set's directory and description. Reads only: a store's staged transfer is left alone.
fn open(dir: &Path) -> Result<(PathBuf, SnapshotMeta)> {
    let set = if dir.join("meta").exists() {
        dir.to_path_buf()
    } else if dir.join("CURRENT").exists() {
        let id = std::fs::read_to_string(dir.join("CURRENT"))
            .with_context(|| format!("cannot read {}", dir.join("CURRENT").display()))?;
        dir.join("snapshots").join(id.trim())
    } else {
        bail!(
            "{} is neither a snapshot (no `meta`) nor a snapshot store (no `CURRENT`)",
            dir.display()
        );
    };
    let path = set.join("meta");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = SnapshotMeta::decode(bytes.as_slice())
        .with_context(|| format!("{} does not decode", path.display()))?;
    Ok((set, meta))
}

fn show(dir: &Path) -> Result<()> {
    let (set, meta) = open(dir)?;
    let membership = match ConfState::decode(meta.membership.as_ref()) {
        Ok(cs) => json!({
            "voters": cs.voters,
            "outgoing": cs.outgoing,
            "learners": cs.learners,
        }),
        Err(_) => json!(null),
    };
    let files: Vec<_> = meta
        .files
        .iter()
        .map(|f| json!({"name": f.name, "size": f.size, "crc": f.crc}))
        .collect();
    let report = json!({
        "dir": set.display().to_string(),
        "id": meta.id,
        "last_index": meta.last_index,
        "last_term": meta.last_term,
        "membership": membership,
        "bytes": meta.files.iter().map(|f| f.size).sum::<u64>(),
        "files": files,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}

fn check(dir: &Path) -> Result<()> {
    let (set, meta) = open(dir)?;
    let names: Vec<&str> = meta.files.iter().map(|f| f.name.as_str()).collect();
    let mut damaged = Vec::new();
    for (info, name) in meta.files.iter().zip(&names) {
        match strata_snapshot::describe(&set, meta.id, meta.last_index, meta.last_term, &[name]) {
            Ok(found) if found.files.first() == Some(info) => {}
            Ok(found) => damaged.push(format!(
                "{name}: {} bytes, crc {:#010x}; expected {} bytes, crc {:#010x}",
                found.files.first().map_or(0, |f| f.size),
                found.files.first().map_or(0, |f| f.crc),
                info.size,
                info.crc
            )),
            Err(e) => damaged.push(format!("{name}: {e}")),
        }
    }
    if !damaged.is_empty() {
        bail!(
            "snapshot {} in {} is damaged:\n  {}",
            meta.id,
            set.display(),
            damaged.join("\n  ")
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "snapshot {} ({} files, last index {}) is intact",
        meta.id,
        meta.files.len(),
        meta.last_index
    )?;
    Ok(())
}
