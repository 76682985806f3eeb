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

use crate::output::{self, Table, outln};
use crate::progress::Progress;

/// The `strata lsm` subcommands.
#[derive(Debug, Subcommand)]
pub enum LsmCommand {
    /// Set a key (durably). The store must exist, unless `--create` is given.
    #[command(after_help = "Examples:
  strata lsm put --create --dir /tmp/store greeting hello   # makes the store if missing
  strata lsm put --dir /tmp/store greeting goodbye")]
    Put {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Make a new store at `--dir` if there is none (without it, a missing store is an
        /// error, so a mistyped path never becomes an empty store).
        #[arg(long)]
        create: bool,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print a key's value; exit 1 if absent. Reads only: opens the store read-only.
    #[command(after_help = "Examples:
  strata lsm get --dir /tmp/store greeting
  strata lsm get --dir /tmp/store greeting --json   # {\"key\":...,\"value\":...}")]
    Get {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key.
        key: String,
        /// One JSON object: `key`, and `value` (UTF-8) or `value_hex`.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key (durably). The store must exist.
    #[command(after_help = "Example:
  strata lsm delete --dir /tmp/store greeting")]
    Delete {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// The key.
        key: String,
    },
    /// List every live key in order, with its value's size. Reads only.
    #[command(after_help = "Examples:
  strata lsm scan --dir /tmp/store | head
  strata lsm scan --dir /tmp/store --prefix user/ --reverse
  strata lsm scan --dir /tmp/store --json | jq .key   # one object per line")]
    Scan {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object per key: {"key": "...", "value_len": N}.
        #[arg(long)]
        json: bool,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Newest key first.
        #[arg(long)]
        reverse: bool,
    },
    /// Print the store's levels and tables. Reads only.
    #[command(after_help = "Examples:
  strata lsm stats --dir /tmp/store
  strata lsm stats --dir /tmp/store --json")]
    Stats {
        /// The store's directory.
        #[arg(long)]
        dir: PathBuf,
        /// One JSON object: levels, tables, last sequence, memtable bytes.
        #[arg(long)]
        json: bool,
    },
    /// The store at work: concurrent writers (batches, overwrites, deletes) through flushes and
    /// compactions, a snapshot that must not move, a checkpoint ingested into a second store,
    /// a reopen; everything is checked against what was written. Prints a summary (a JSON
    /// report with --json); exits 1 if a check fails.
    #[command(after_help = "Examples:
  strata lsm demo                         # about a minute on two cores, with a progress bar
  strata lsm demo --ops 20000 --json      # a short run, its report as JSON")]
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
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write keys `w{W}-{seq}` from several writers with sync writes and print `acked KEY`
    /// (flushed) after each durable write. Meant to be killed at any moment. Creates the
    /// store if missing.
    #[command(after_help = "Example (kill it, then check what survived):
  strata lsm stress --dir /tmp/stress --writers 4 --keys 10000 > acked.txt")]
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
        LsmCommand::Put {
            dir,
            create,
            key,
            value,
        } => {
            let db = if create {
                Db::open(&dir, Options::default())
                    .with_context(|| format!("cannot open store {}", dir.display()))?
            } else {
                open_existing(&dir)?
            };
            db.put(
                key.as_bytes(),
                value.as_bytes(),
                WriteOptions { sync: true },
            )?;
            outln!("OK")
        }
        LsmCommand::Get { dir, key, json } => {
            let db = open_read_only(&dir)?;
            let Some(value) = db.get(key.as_bytes())? else {
                bail!("key {key:?} not found in {}", dir.display());
            };
            if json {
                let value = match std::str::from_utf8(&value) {
                    Ok(text) => serde_json::json!({"key": key, "value": text}),
                    Err(_) => serde_json::json!({"key": key, "value_hex": hex(&value)}),
                };
                return output::json(&value, false);
            }
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            writeln!(out)?;
            Ok(())
        }
        LsmCommand::Delete { dir, key } => {
            let db = open_existing(&dir)?;
            db.delete(key.as_bytes(), WriteOptions { sync: true })?;
            outln!("OK")
        }
        LsmCommand::Scan {
            dir,
            json,
            prefix,
            reverse,
        } => scan(&dir, json, prefix.as_deref(), reverse),
        LsmCommand::Stats { dir, json } => stats(&dir, json),
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
            json,
        } => demo(dir, writers, ops, seed, json),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize)]
struct StatsFile {
    level: u8,
    number: u64,
    bytes: u64,
    smallest_seq: u64,
    largest_seq: u64,
}

#[derive(Serialize)]
struct StatsReport {
    dir: PathBuf,
    last_seq: u64,
    memtable_bytes: u64,
    levels: Vec<LevelReport>,
    tables: Vec<StatsFile>,
}

fn stats(dir: &Path, json: bool) -> Result<()> {
    let db = open_read_only(dir)?;
    let stats = db.stats();
    let report = StatsReport {
        dir: dir.to_path_buf(),
        last_seq: stats.last_seq,
        memtable_bytes: stats.memtable_bytes,
        levels: levels(&stats),
        tables: db
            .live_files()
            .into_iter()
            .map(|f| StatsFile {
                level: f.level,
                number: f.number,
                bytes: f.size,
                smallest_seq: f.smallest_seq,
                largest_seq: f.largest_seq,
            })
            .collect(),
    };
    if json {
        return output::json(&report, true);
    }
    let total: u64 = report.levels.iter().map(|l| l.bytes).sum();
    outln!(
        "store {}: {} tables, {}; last sequence {}; {} in memory (the WAL past the tables)",
        dir.display(),
        report.tables.len(),
        output::bytes(total),
        output::count(report.last_seq),
        output::bytes(report.memtable_bytes)
    )?;
    if report.levels.is_empty() {
        return Ok(());
    }
    outln!()?;
    let mut table = Table::new(&["level", "tables", "bytes"]);
    for l in &report.levels {
        table.row(vec![
            format!("L{}", l.level),
            l.tables.to_string(),
            output::bytes(l.bytes),
        ]);
    }
    outln!("{}", table.plain())?;
    outln!()?;
    let mut table = Table::new(&["level", "file", "bytes", "sequences"]);
    for f in &report.tables {
        table.row(vec![
            format!("L{}", f.level),
            format!("{:06}.sst", f.number),
            f.bytes.to_string(),
            format!("{}..={}", f.smallest_seq, f.largest_seq),
        ]);
    }
    outln!("{}", table.plain())
}

fn levels(stats: &strata_lsm::Stats) -> Vec<LevelReport> {
    stats
        .levels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.tables > 0)
        .map(|(level, l)| LevelReport {
            level,
            tables: l.tables,
            bytes: l.bytes,
        })
        .collect()
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

/// How many operations a demo writer does between two progress updates.
const DEMO_PROGRESS_STEP: u64 = 1024;

fn demo(dir: Option<PathBuf>, writers: u64, ops: u64, seed: u64, json: bool) -> Result<()> {
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
    let progress = Progress::new("lsm demo", Some(writers * ops), "writes");
    progress.set_message("writing");
    let started = std::time::Instant::now();
    let mut snapshot = None;
    let mut models = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                let progress = progress.clone();
                scope.spawn(move || -> Result<Model> {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ w);
                    let mut model = Model::new();
                    let mut done = 0;
                    let mut reported = 0;
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
                        // A batch may take `done` past `ops`; the bar counts to `ops`.
                        let shown = done.min(ops);
                        if shown - reported >= DEMO_PROGRESS_STEP {
                            progress.inc(shown - reported);
                            reported = shown;
                        }
                    }
                    progress.inc(ops - reported);
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
    progress.set_message("checking the snapshot");
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
    progress.set_message("checkpointing and ingesting");
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
    progress.set_message("reopening");
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
        levels: levels(&stats),
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
    progress.finish();
    if json {
        output::json(&report, true)?;
    } else {
        print_demo(&report)?;
    }
    if !(snapshot_unchanged && checkpoint_ingested_matches && reopened_matches) {
        bail!("the store's contents differ from what was written");
    }
    Ok(())
}

fn print_demo(r: &DemoReport) -> Result<()> {
    outln!(
        "lsm demo: {} writes from {} writer{} in {:.1} s ({} writes/s)",
        output::count(r.operations),
        r.writers,
        if r.writers == 1 { "" } else { "s" },
        r.operations as f64 / r.writes_per_sec.max(f64::MIN_POSITIVE),
        output::count(r.writes_per_sec as u64)
    )?;
    let levels: Vec<String> = r
        .levels
        .iter()
        .map(|l| format!("L{} {} ({})", l.level, l.tables, output::bytes(l.bytes)))
        .collect();
    let mut fields = vec![
        ("live keys", output::count(r.live_keys as u64)),
        ("tables", levels.join(", ")),
        (
            "write amplification",
            format!(
                "{:.2}x (flushed {}, compactions wrote {})",
                r.write_amplification,
                output::bytes(r.flush_bytes),
                output::bytes(r.compaction_written_bytes)
            ),
        ),
        (
            "write stalls",
            format!("{} slowdowns, {} stops", r.write_slowdowns, r.write_stops),
        ),
        (
            "block cache",
            format!(
                "{} hits, {} misses",
                output::count(r.cache_hits),
                output::count(r.cache_misses)
            ),
        ),
        (
            "snapshot unchanged",
            output::yes_no(r.snapshot_unchanged).into(),
        ),
        (
            "checkpoint ingested matches",
            output::yes_no(r.checkpoint_ingested_matches).into(),
        ),
        (
            "reopened store matches",
            output::yes_no(r.reopened_matches).into(),
        ),
    ];
    if let Some(path) = &r.path {
        fields.push(("kept in", path.display().to_string()));
    }
    output::fields(&fields)
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
    let db = open_read_only(dir)?;
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

/// Opens an existing store for reading only: a missing one is an error naming the path, and
/// nothing is created or changed.
fn open_read_only(dir: &Path) -> Result<Db> {
    match Db::open_read_only(dir, Options::default()) {
        Ok(db) => Ok(db),
        // It names the path already.
        Err(e @ strata_lsm::Error::NoStore { .. }) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot open store {}", dir.display())),
    }
}

/// Opens an existing store to write to it: a missing one is an error naming the path (see
/// `put --create`).
fn open_existing(dir: &Path) -> Result<Db> {
    let options = Options {
        create_if_missing: false,
        ..Options::default()
    };
    match Db::open(dir, options) {
        Ok(db) => Ok(db),
        Err(e @ strata_lsm::Error::NoStore { .. }) => {
            bail!("{e} (`strata lsm put --create` makes one)")
        }
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("cannot open store {}", dir.display())),
    }
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
    let progress = Progress::new("lsm stress", Some(writers * keys), "writes");
    let shown = progress.clone();
    crate::stress::run_writers(writers, move |w| {
        let value = vec![0x5a; value_bytes];
        for seq in 0..keys {
            let key = format!("w{w}-{seq}");
            db.put(key.as_bytes(), &value, WriteOptions { sync: true })?;
            crate::stress::ack(format_args!("{key}"))?;
            shown.inc(1);
        }
        Ok(())
    })?;
    progress.finish();
    Ok(())
}
