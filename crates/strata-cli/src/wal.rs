//! `strata wal`: dump a write-ahead log, and a stress writer meant to be killed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use strata_wal::{Durability, Wal, WalOptions, scan_log};

use crate::output::outln;
use crate::progress::Progress;

/// The `strata wal` subcommands.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Print each segment and each record of a log, read-only. Exits 1 on corruption, after
    /// printing everything valid before it.
    #[command(after_help = "Examples:
  strata wal dump /var/lib/strata/member/raft/log | less
  strata wal dump DIR --json | jq .len")]
    Dump {
        /// The log's directory.
        dir: PathBuf,
        /// One JSON object per record: {"lsn": N, "len": N, "head": "HEX"} (head: the hex of
        /// the first 16 bytes).
        #[arg(long)]
        json: bool,
    },
    /// Append from several writers at once and print `acked W S` (flushed) as each record is
    /// acknowledged. Records start with the writer id and its sequence number (u64
    /// big-endian each). Meant to be killed at any moment.
    #[command(after_help = "Example (kill it, then `strata wal dump` what survived):
  strata wal stress --dir /tmp/wal --writers 4 --records 1000 > acked.txt")]
    Stress {
        /// The log's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: u64,
        /// Records per writer.
        #[arg(long, default_value_t = 1000)]
        records: u64,
        /// Bytes per record (at least 16).
        #[arg(long, default_value_t = 128)]
        record_bytes: usize,
        /// Acknowledge only durable records (the default).
        #[arg(long, conflicts_with = "no_sync")]
        sync: bool,
        /// Acknowledge records once written to the OS.
        #[arg(long)]
        no_sync: bool,
    },
}

/// Runs a `strata wal` subcommand.
pub fn run(command: WalCommand) -> Result<()> {
    match command {
        WalCommand::Dump { dir, json } => dump(&dir, json),
        WalCommand::Stress {
            dir,
            writers,
            records,
            record_bytes,
            sync: _,
            no_sync,
        } => stress(&dir, writers, records, record_bytes, no_sync),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Buffered stdout that remembers its first error instead of failing the scan.
struct Emitter<W: Write> {
    out: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Emitter<W> {
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        if self.error.is_none()
            && let Err(e) = writeln!(self.out, "{args}")
        {
            self.error = Some(e);
        }
    }
}

fn dump(dir: &Path, json: bool) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // Both callbacks print; they share the writer through a RefCell (they never run at once).
    let out = std::cell::RefCell::new(Emitter {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        error: None,
    });
    let scanned = scan_log(
        dir,
        |path, first_lsn| {
            if !json {
                out.borrow_mut().line(format_args!(
                    "segment {} first_lsn={first_lsn}",
                    path.display()
                ));
            }
        },
        |lsn, payload| {
            let head = hex(&payload[..payload.len().min(16)]);
            let len = payload.len();
            if json {
                out.borrow_mut().line(format_args!(
                    "{{\"lsn\": {lsn}, \"len\": {len}, \"head\": \"{head}\"}}"
                ));
            } else {
                out.borrow_mut()
                    .line(format_args!("  lsn={lsn} len={len} head={head}"));
            }
        },
    );
    let mut out = out.into_inner();
    if let Some(e) = out.error.take() {
        return Err(e).context("cannot write to stdout");
    }
    out.out.flush().context("cannot write to stdout")?;
    let scan = scanned.with_context(|| format!("cannot read the log in {}", dir.display()))?;
    if !json {
        outln!("{} records, next lsn {}", scan.records, scan.next_lsn)?;
        if let Some(torn) = scan.torn {
            outln!("torn tail (recovery would cut it): {torn:?}")?;
        }
    }
    Ok(())
}

fn stress(
    dir: &Path,
    writers: u64,
    records: u64,
    record_bytes: usize,
    no_sync: bool,
) -> Result<()> {
    if record_bytes < 16 {
        bail!("--record-bytes must be at least 16");
    }
    let options = WalOptions {
        durability: if no_sync {
            Durability::NoSync
        } else {
            Durability::Sync
        },
        ..WalOptions::default()
    };
    let (wal, _) =
        Wal::open(dir, options).with_context(|| format!("cannot open {}", dir.display()))?;
    let wal = Arc::new(wal);
    let progress = Progress::new("wal stress", Some(writers * records), "records");
    let shown = progress.clone();
    crate::stress::run_writers(writers, move |writer| {
        let mut record = vec![0xa5u8; record_bytes];
        record[0..8].copy_from_slice(&writer.to_be_bytes());
        for seq in 0..records {
            record[8..16].copy_from_slice(&seq.to_be_bytes());
            wal.append(&record).context("append failed")?;
            crate::stress::ack(format_args!("{writer} {seq}"))?;
            shown.inc(1);
        }
        Ok(())
    })?;
    progress.finish();
    Ok(())
}
