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

use crate::output::{self, Table, outln};
use crate::progress::Progress;

/// The `strata snapshot` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Turn a server snapshot file (`etcdctl snapshot save`, Maintenance/Snapshot) into the
    /// data dir of the first member of a new cluster: its keys and revisions, the membership of
    /// `--initial-cluster` (etcd's `etcdutl snapshot restore`). Then start that member with the
    /// same flags and `--initial-cluster-state new`.
    #[command(after_help = "Example:
  etcdctl snapshot save backup.db
  strata snapshot restore backup.db --name s1 --data-dir /var/lib/strata-new \\
      --initial-cluster s1=http://10.0.0.1:2380 --initial-advertise-peer-urls http://10.0.0.1:2380
  strata server --name s1 --data-dir /var/lib/strata-new ...   # the same flags")]
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// The new member's flags (`--data-dir`, `--name`, `--initial-cluster`,
        /// `--initial-cluster-token`, `--initial-advertise-peer-urls`, ...).
        #[command(flatten)]
        args: Box<strata_server::config::ServerArgs>,
    },
    /// Print a snapshot's description: id, last index and term, membership, files. Reads
    /// only.
    #[command(after_help = "Examples:
  strata snapshot show /var/lib/strata/member/raft/snapshots
  strata snapshot show DIR --json | jq .last_index")]
    Show {
        /// An exported snapshot, a node's snapshot store (`NodeOptions::snapshot_dir`: its
        /// installed set is shown), or a set in one (`snapshots/ID`).
        dir: PathBuf,
        /// The description as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check every file of a snapshot against its size and CRC; exit 1 on damage. Reads only.
    #[command(after_help = "Example:
  strata snapshot check /var/lib/strata/member/raft/snapshots && echo intact")]
    Check {
        /// As for `show`.
        dir: PathBuf,
        /// The result as one JSON object: {"id", "files", "last_index", "intact", "damaged"}
        /// (printed before the exit code 1 of a damaged snapshot).
        #[arg(long)]
        json: bool,
    },
    /// Receive snapshot after snapshot into a store (for crash tests): round R's set is
    /// eight files of its own content, made under `--work`, sent in chunks; prints
    /// `chunk R FILE OFFSET` for each chunk staged and `installed R` once a set is durably
    /// installed. Resumes a transfer a kill interrupted, then goes on from the round after
    /// the installed one.
    #[command(
        after_help = "Example (kill it, then `strata snapshot check` the store):
  strata snapshot stress --store /tmp/snaps --work /tmp/work --rounds 5"
    )]
    Stress {
        /// The store (a `strata_snapshot::Receiver` directory).
        #[arg(long)]
        store: PathBuf,
        /// Where each round's source files are made.
        #[arg(long)]
        work: PathBuf,
        /// Rounds: snapshots 1 to this.
        #[arg(long, default_value_t = 5)]
        rounds: u64,
        /// Bytes per chunk.
        #[arg(long, default_value_t = 65536)]
        chunk_bytes: usize,
    },
}

fn restore(file: &Path, args: strata_server::config::ServerArgs) -> Result<()> {
    let config = strata_server::config::ServerConfig::from_args(args)?;
    let progress = Progress::new("snapshot restore", None, "");
    progress.set_message(format!(
        "{} into {}",
        file.display(),
        config.data_dir.display()
    ));
    let restored = strata_server::restore::restore(file, &config)
        .with_context(|| format!("restore {}", file.display()));
    progress.finish();
    let restored = restored?;
    outln!(
        "restored revision {} into {} with {} member(s)",
        restored.revision,
        config.data_dir.display(),
        restored.members
    )
}

/// Runs a `strata snapshot` subcommand.
pub fn run(command: SnapshotCommand) -> Result<()> {
    match command {
        SnapshotCommand::Restore { file, args } => restore(&file, *args),
        SnapshotCommand::Show { dir, json } => show(&dir, json),
        SnapshotCommand::Check { dir, json } => check(&dir, json),
        SnapshotCommand::Stress {
            store,
            work,
            rounds,
            chunk_bytes,
        } => stress(&store, &work, rounds, chunk_bytes),
    }
}

/// Round `round`'s eight files, made in `dir` (replacing what was there): sizes and bytes
/// differ by round and file, so that a set installed whole from the wrong round, or files
/// mixed between rounds, fail the checksum check.
fn make_round(dir: &Path, round: u64) -> Result<Vec<String>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut names = Vec::new();
    for file in 0..8u64 {
        let name = format!("{file:06}.sst");
        let size = 50_000 + ((round * 7 + file * 13) % 11) * 23_456;
        let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ file;
        let data: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(dir.join(&name), data)
            .with_context(|| format!("write {}", dir.join(&name).display()))?;
        names.push(name);
    }
    Ok(names)
}

fn stress(store: &Path, work: &Path, rounds: u64, chunk_bytes: usize) -> Result<()> {
    let mut receiver = strata_snapshot::Receiver::open(store)
        .with_context(|| format!("cannot open the store {}", store.display()))?;
    let installed = receiver.installed()?.map_or(0, |(meta, _)| meta.id);
    let mut out = std::io::stdout().lock();
    for round in installed + 1..=rounds {
        let source = work.join(format!("round-{round}"));
        let names = make_round(&source, round)?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // Snapshot `round` covers the log up to 100 * round.
        let meta = strata_snapshot::describe(&source, round, 100 * round, 1, &names)?;
        let sender = strata_snapshot::Sender::new(&source, meta.clone(), chunk_bytes);
        let mut at = receiver.begin(&meta)?;
        loop {
            let Some(chunk) = sender.chunk(at)? else {
                bail!("round {round}: the sender ran out at {at:?}");
            };
            match receiver.receive(&meta, &chunk)? {
                strata_snapshot::Ack::Accepted { next }
                | strata_snapshot::Ack::Duplicate { next } => {
                    writeln!(out, "chunk {round} {} {}", chunk.file, chunk.offset)?;
                    out.flush()?;
                    at = next;
                }
                strata_snapshot::Ack::Gap { need } => at = need,
                strata_snapshot::Ack::Complete => break,
            }
        }
        writeln!(out, "installed {round}")?;
        out.flush()?;
        std::fs::remove_dir_all(&source)?;
    }
    Ok(())
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

fn show(dir: &Path, json: bool) -> Result<()> {
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
    if json {
        return output::json(&report, true);
    }
    let membership = match ConfState::decode(meta.membership.as_ref()) {
        Ok(cs) => {
            let ids = |ids: &[u64]| {
                ids.iter()
                    .map(|id| format!("{id:x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut text = format!("voters {}", ids(&cs.voters));
            if !cs.outgoing.is_empty() {
                text += &format!("; outgoing {}", ids(&cs.outgoing));
            }
            if !cs.learners.is_empty() {
                text += &format!("; learners {}", ids(&cs.learners));
            }
            text
        }
        Err(_) => "(does not decode)".to_owned(),
    };
    outln!("snapshot {} in {}", meta.id, set.display())?;
    output::fields(&[
        (
            "last index",
            format!("{} (term {})", meta.last_index, meta.last_term),
        ),
        ("membership", membership),
        (
            "bytes",
            output::bytes(meta.files.iter().map(|f| f.size).sum::<u64>()),
        ),
    ])?;
    outln!()?;
    let mut table = Table::new(&["file", "bytes", "crc"]);
    for f in &meta.files {
        table.row(vec![
            f.name.clone(),
            f.size.to_string(),
            format!("{:#010x}", f.crc),
        ]);
    }
    outln!("{}", table.plain())
}

fn check(dir: &Path, json: bool) -> Result<()> {
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
    if json {
        output::json(
            &json!({
                "id": meta.id,
                "files": meta.files.len(),
                "last_index": meta.last_index,
                "intact": damaged.is_empty(),
                "damaged": damaged,
            }),
            false,
        )?;
    }
    if !damaged.is_empty() {
        bail!(
            "snapshot {} in {} is damaged:\n  {}",
            meta.id,
            set.display(),
            damaged.join("\n  ")
        );
    }
    if json {
        return Ok(());
    }
    outln!(
        "snapshot {} ({} files, last index {}) is intact",
        meta.id,
        meta.files.len(),
        meta.last_index
    )
}
