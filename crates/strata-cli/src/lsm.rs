//! `strata lsm`: use an LSM store from the command line, a stress writer to kill, and a demo
//! of the whole store at work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::ops::Bound;

use serde::Serialize;
use strata_lsm::{CompactionOptions, Db, Direction, Options, WriteBatch, WriteOptions};

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
    /// The store at work: concurrent writers (batches, overwrites, deletes) through flushes and
    /// compactions, a snapshot that must not move, a checkpoint ingested into a second store,
    /// a reopen; everything is checked against what was written. Prints a JSON report.
    Demo {
        /// Keep the stores here (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Concurrent writers.
        #[arg(long, default_value_t = 4)]
        writers: u64,
        /// Write operations per writer.
        #[arg(long, default_value_t = 250_000)]
        ops: u64,
        /// Seed of the writers' random choices.
        #[arg(long, default_value_t = 7)]
        seed: u64,
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
        LsmCommand::Demo {
            dir,
            writers,
            ops,
            seed,
        } => demo(dir, writers, ops, seed),
    }
}

#[derive(Serialize)]
struct LevelReport {
    level: usize,
    tables: usize,
    bytes: u64,
}

#[derive(Serialize)]
struct DemoReport {
    path: Option<PathBuf>,
    writers: u64,
    operations: u64,
    writes_per_sec: f64,
    live_keys: usize,
    levels: Vec<LevelReport>,
    write_amplification: f64,
    flush_bytes: u64,
    compaction_written_bytes: u64,
    write_slowdowns: u64,
    write_stops: u64,
    cache_hits: u64,
    cache_misses: u64,
    snapshot_unchanged: bool,
    checkpoint_ingested_matches: bool,
    reopened_matches: bool,
}

/// Each writer's keys are its own (`u{w}:{k}`), so the expected final state is the union of
/// what each writer last did to each key.
type Model = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

fn demo(dir: Option<PathBuf>, writers: u64, ops: u64, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    if writers == 0 {
        bail!("--writers must be at least 1");
    }
    let temp;
    let keep = dir.is_some();
    let root = match dir {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    for sub in ["store", "checkpoint", "copy"] {
        if root.join(sub).exists() {
            bail!(
                "{} exists: give --dir an empty directory",
                root.join(sub).display()
            );
        }
    }
    let options = || Options {
        // Small memtables and levels, so that a short run flushes and compacts many times.
        memtable_bytes: 4 << 20,
        compaction: CompactionOptions {
            target_file_bytes: 2 << 20,
            level_base_bytes: 8 << 20,
            ..CompactionOptions::default()
        },
        ..Options::default()
    };
    let store = root.join("store");
    let db = Db::open(&store, options())
        .with_context(|| format!("cannot open store {}", store.display()))?;
    let started = std::time::Instant::now();
    let mut snapshot = None;
    let mut models = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                scope.spawn(move || -> Result<Model> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ w);
                    let mut model = Model::new();
                    let mut done = 0;
                    while done < ops {
                        // Mostly single puts; some atomic batches; one write in ten a delete.
                        let mut batch = WriteBatch::new();
                        let size = if rng.random_bool(0.1) { 16 } else { 1 };
                        for _ in 0..size {
                            let key = format!("u{w}:{:08}", rng.random_range(0..ops / 2 + 1));
                            if rng.random_bool(0.1) {
                                batch.delete(key.as_bytes());
                                model.remove(key.as_bytes());
                            } else {
                                let value = format!("{key}@{done}").repeat(4);
                                batch.put(key.as_bytes(), value.as_bytes());
                                model.insert(key.into_bytes(), value.into_bytes());
                            }
                            done += 1;
                        }
                        db.write(batch, WriteOptions::default())?;
                    }
                    Ok(model)
                })
            })
            .collect();
        // A snapshot taken while the writers run; checked once they are done.
        let snap = db.snapshot();
        let mut before = Model::new();
        snap.scan(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            |k, v| {
                before.insert(k.to_vec(), v.to_vec());
                true
            },
        )?;
        snapshot = Some((snap, before));
        for handle in handles {
            models.push(handle.join().expect("a writer panicked")?);
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let model: Model = models.into_iter().flatten().collect();
    let (snap, before) = snapshot.context("the snapshot was taken")?;
    let snapshot_unchanged = contents(|visit| {
        snap.scan(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            visit,
        )
    })? == before;
    drop(snap);
    // Export a checkpoint, and ingest its tables into a second, empty store.
    db.checkpoint(&root.join("checkpoint"))?;
    let copy = Db::open(&root.join("copy"), Options::default())?;
    let tables: Vec<PathBuf> = db.live_files().into_iter().map(|f| f.path).collect();
    copy.ingest(6, &tables)?;
    let checkpoint_ingested_matches = contents(|visit| {
        copy.scan(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            visit,
        )
    })? == model;
    let stats = db.stats();
    drop(db);
    let db = Db::open(&store, options())?;
    let reopened_matches = contents(|visit| {
        db.scan(
            Bound::Unbounded,
            Bound::Unbounded,
            Direction::Forward,
            visit,
        )
    })? == model;
    let report = DemoReport {
        path: Some(root.clone()).filter(|_| keep),
        writers,
        operations: writers * ops,
        writes_per_sec: (writers * ops) as f64 / elapsed,
        live_keys: model.len(),
        levels: stats
            .levels
            .iter()
            .enumerate()
            .filter(|(_, l)| l.tables > 0)
            .map(|(level, l)| LevelReport {
                level,
                tables: l.tables,
                bytes: l.bytes,
            })
            .collect(),
        write_amplification: (stats.write_amplification() * 100.0).round() / 100.0,
        flush_bytes: stats.flush_bytes,
        compaction_written_bytes: stats.compaction_written_bytes,
        write_slowdowns: stats.write_slowdowns,
        write_stops: stats.write_stops,
        cache_hits: stats.cache_hits,
        cache_misses: stats.cache_misses,
        snapshot_unchanged,
        checkpoint_ingested_matches,
        reopened_matches,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !(snapshot_unchanged && checkpoint_ingested_matches && reopened_matches) {
        bail!("the store's contents differ from what was written");
    }
    Ok(())
}

/// Every key and value a scan visits.
fn contents(
    scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> strata_lsm::Result<()>,
) -> Result<Model> {
    let mut out = Model::new();
    scan(&mut |k, v| {
        out.insert(k.to_vec(), v.to_vec());
        true
    })?;
    Ok(out)
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
