//! `strata lsm`: use an LSM store from the command line, and a stress writer to kill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::ops::Bound;

use strata_lsm::{Db, Direction, Options, WriteOptions};

/// The `strata lsm` subcommands.
#[derive(Debug, Subcommand)]
pub enum LsmCommand {
    /// Set a key (durably).
    Put {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print a key's value; exit 1 if absent.
    Get {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key.
        key: String,
    },
    /// Delete a key (durably).
    Delete {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key.
        key: String,
    },
    /// List every live key in order (with --json, one {"key": "...", "value_len": N} per line).
    Scan {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object per key.
        #[arg(long)]
        json: bool,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Newest key first.
        #[arg(long)]
        reverse: bool,
    },
    /// Print the store's tables.
    Stats {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write keys `w{W}-{seq}` from several writers with sync writes and print `acked KEY`
    /// (flushed) after each durable write. Meant to be killed at any moment.
    Stress {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: u64,
        /// Keys per writer.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_bytes: usize,
    },
}

/// Runs a `strata lsm` subcommand.
pub fn run(command: LsmCommand) -> Result<()> {
    match command {
        LsmCommand::Put { dir, key, value } => {
            let db = open(&dir)?;
            db.put(
                key.as_bytes(),
                value.as_bytes(),
                WriteOptions { sync: true },
            )?;
            Ok(())
        }
        LsmCommand::Get { dir, key } => {
            let db = open(&dir)?;
            match db.get(key.as_bytes())? {
                Some(value) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&value)?;
                    writeln!(out)?;
                    Ok(())
                }
                None => bail!("key {key:?} not found"),
            }
        }
        LsmCommand::Delete { dir, key } => {
            let db = open(&dir)?;
            db.delete(key.as_bytes(), WriteOptions { sync: true })?;
            Ok(())
        }
        LsmCommand::Scan {
            dir,
            json,
            prefix,
            reverse,
        } => scan(&dir, json, prefix.as_deref(), reverse),
        LsmCommand::Stats { dir } => {
            let db = open(&dir)?;
            let stats = db.stats();
            for (level, l) in stats.levels.iter().enumerate() {
                if l.tables > 0 {
                    println!("L{level}: {} tables, {} bytes", l.tables, l.bytes);
                }
            }
            println!("last sequence {}", stats.last_seq);
            for f in db.live_files() {
                println!(
                    "  L{} {:06}.sst {} bytes, sequences {}..={}",
                    f.level, f.number, f.size, f.smallest_seq, f.largest_seq
                );
            }
            Ok(())
        }
        LsmCommand::Stress {
            dir,
            writers,
            keys,
            value_bytes,
        } => stress(&dir, writers, keys, value_bytes),
    }
}

fn scan(dir: &Path, json: bool, prefix: Option<&str>, reverse: bool) -> Result<()> {
    let db = open(dir)?;
    let direction = if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failure = None;
    let mut visit = |key: &[u8], value: &[u8]| {
        let key = String::from_utf8_lossy(key);
        let line = if json {
            serde_json::json!({"key": key, "value_len": value.len()}).to_string()
        } else {
            format!("{key} ({} bytes)", value.len())
        };
        match writeln!(out, "{line}") {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        }
    };
    match prefix {
        Some(p) => db.scan_prefix(p.as_bytes(), direction, &mut visit)?,
        None => db.scan(Bound::Unbounded, Bound::Unbounded, direction, &mut visit)?,
    }
    if let Some(e) = failure {
        return Err(e).context("cannot write to stdout");
    }
    out.flush()?;
    Ok(())
}

fn open(dir: &Path) -> Result<Db> {
    Db::open(dir, Options::default())
        .with_context(|| format!("cannot open store {}", dir.display()))
}

fn stress(dir: &Path, writers: u64, keys: u64, value_bytes: usize) -> Result<()> {
    let options = Options {
        // Small memtables, so a run of a few seconds flushes several times.
        memtable_bytes: 1 << 20,
        ..Options::default()
    };
    let db = Arc::new(
        Db::open(dir, options).with_context(|| format!("cannot open store {}", dir.display()))?,
    );
    crate::stress::run_writers(writers, move |w| {
        let value = vec![0x5a; value_bytes];
        for seq in 0..keys {
            let key = format!("w{w}-{seq}");
            db.put(key.as_bytes(), &value, WriteOptions { sync: true })?;
            crate::stress::ack(format_args!("{key}"))?;
        }
        Ok(())
    })
}
