//! Progress of long work, on stderr: a bar (or a spinner, when the total is unknown) with its
//! rate and ETA on a terminal (indicatif); plain lines every few seconds otherwise (a log or a
//! pipe gets text, not redraws); nothing with `--quiet`.

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use parking_lot::Mutex;

/// Set by `--quiet`: no progress at all.
static QUIET: AtomicBool = AtomicBool::new(false);

/// How often a plain line is printed when stderr is not a terminal. `STRATA_PROGRESS_SECS`
/// (seconds, fractions allowed) overrides it, for logs that want more or fewer.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// Turns progress off for the whole command (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn plain_interval() -> Duration {
    std::env::var("STRATA_PROGRESS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(PLAIN_INTERVAL, Duration::from_secs_f64)
}

/// The progress of one piece of work. Cheap to clone; clones report to the same display.
#[derive(Clone)]
pub struct Progress {
    shown: Shown,
}

#[derive(Clone)]
enum Shown {
    Quiet,
    Bar(ProgressBar),
    Plain(Arc<Plain>),
}

struct Plain {
    label: String,
    total: Option<u64>,
    unit: &'static str,
    done: AtomicU64,
    started: Instant,
    interval: Duration,
    next: Mutex<Instant>,
    message: Mutex<String>,
}

impl Plain {
    fn report(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let message = self.message.lock().clone();
        let what = if message.is_empty() {
            String::new()
        } else {
            format!(", {message}")
        };
        let line = match self.total {
            // Before the count moves, and once it is complete (a later phase), the count says
            // nothing more.
            Some(total) if done == 0 || done >= total => {
                format!(
                    "{}{what}: {done}/{total} {}, {elapsed:.0}s",
                    self.label, self.unit
                )
            }
            Some(total) => {
                let eta = if rate > 0.0 {
                    format!(", ETA {:.0}s", total.saturating_sub(done) as f64 / rate)
                } else {
                    String::new()
                };
                format!(
                    "{}{what}: {done}/{total} {} ({:.0}%), {rate:.0} {}/s{eta}",
                    self.label,
                    self.unit,
                    done as f64 * 100.0 / total as f64,
                    self.unit
                )
            }
            _ if self.unit.is_empty() => format!("{}{what}: {elapsed:.0}s", self.label),
            _ => format!("{}{what}: {done} {}, {elapsed:.0}s", self.label, self.unit),
        };
        // Progress is a courtesy: a closed or full stderr must not stop the work (the
        // `eprintln` macro would panic).
        let _ = writeln!(std::io::stderr(), "strata: {line}");
    }
}

impl Progress {
    /// Progress of `label` (`lsm demo`), counting `unit`s (`ops`) up to `total` if known.
    pub fn new(label: &str, total: Option<u64>, unit: &'static str) -> Self {
        let shown = if QUIET.load(Ordering::Relaxed) {
            Shown::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = match total {
                Some(total) => ProgressBar::new(total).with_style(
                    ProgressStyle::with_template(&format!(
                        "{{spinner}} {label} {{msg}} [{{bar:24}}] {{human_pos}}/{{human_len}} \
                         {unit} {{rate}} ETA {{eta}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key(
                        "rate",
                        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                            let _ = write!(w, "{:.0}/s", state.per_sec());
                        },
                    )
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(&format!(
                        "{{spinner}} {label} {{msg}} {{elapsed}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.enable_steady_tick(Duration::from_millis(100));
            Shown::Bar(bar)
        } else {
            let interval = plain_interval();
            Shown::Plain(Arc::new(Plain {
                label: label.to_owned(),
                total,
                unit,
                done: AtomicU64::new(0),
                started: Instant::now(),
                interval,
                next: Mutex::new(Instant::now() + interval),
                message: Mutex::new(String::new()),
            }))
        };
        Self { shown }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        match &self.shown {
            Shown::Quiet => {}
            Shown::Bar(bar) => bar.inc(n),
            Shown::Plain(plain) => {
                plain.done.fetch_add(n, Ordering::Relaxed);
                let now = Instant::now();
                let due = {
                    let mut next = plain.next.lock();
                    let due = now >= *next;
                    if due {
                        *next = now + plain.interval;
                    }
                    due
                };
                if due {
                    plain.report();
                }
            }
        }
    }

    /// What the work is doing now (`checking the snapshot`): shown next to the bar, or as a
    /// plain line at once.
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        let message = message.into();
        match &self.shown {
            Shown::Quiet => {}
            Shown::Bar(bar) => bar.set_message(message),
            Shown::Plain(plain) => {
                *plain.message.lock() = message.into_owned();
                plain.report();
            }
        }
    }

    /// The work is over: the bar is cleared (the command prints its result next).
    pub fn finish(&self) {
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
    }
}
