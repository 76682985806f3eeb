//! Replay: reading a snapshot log's bytes back into a [`History`], with Serf's rules.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::line::{LINE_BYTES_MAX, SkipReason, parse_line};
use crate::state::{History, State};

/// The read buffer replay streams the file through. Lines are parsed in place from it, so
/// replay's memory is this plus at most one line that straddles two reads.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The longest warning text kept, in bytes; longer lines are cut (on a character boundary).
const WARNING_TEXT_BYTES_MAX: usize = 1024;

/// A line replay skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The line's number, counting from 1.
    pub line: u64,
    /// The byte offset where the line starts.
    pub offset: u64,
    /// The line's text (lossily decoded, cut at 1 KiB).
    pub text: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Options for [`replay`].
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// How many warnings to keep; the rest are only counted in
    /// [`Replay::warnings_total`]. Bounds memory on a file full of garbage.
    pub warnings_max: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self { warnings_max: 1024 }
    }
}

/// The result of replaying a snapshot log.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// The net effect of every complete line.
    pub history: History,
    /// The first [`ReplayOptions::warnings_max`] skipped lines.
    pub warnings: Vec<Warning>,
    /// How many lines were skipped with a warning, kept or not.
    pub warnings_total: u64,
    /// Complete lines read (every line ending in `\n`).
    pub lines: u64,
    /// Bytes after the last `\n`: a torn last line that replay ignores.
    pub torn_tail_bytes: u64,
    /// Bytes up to and including the last `\n`: where an appender must continue.
    pub valid_len: u64,
}

impl Replay {
    /// The replayed state under `rejoin_after_leave`.
    pub fn state(&self, rejoin_after_leave: bool) -> State {
        self.history.state(rejoin_after_leave)
    }
}

/// Replays the snapshot log in `reader`.
///
/// Applies Serf's rules: `alive:` splits at the last space; clocks are assigned (a later smaller
/// value wins); `leave` is kept in the [`History`] so either `rejoin_after_leave` setting can be
/// asked for afterwards; `#` and `coordinate:` lines are skipped silently; any other line, or
/// one whose value does not parse, is skipped with a [`Warning`]; a last line without `\n` is a
/// torn tail and is ignored.
///
/// # Errors
///
/// [`Error::Io`] if reading fails.
pub fn replay(reader: impl Read, options: &ReplayOptions) -> Result<Replay> {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut out = Replay::default();
    // Holds a line that straddles two reads; empty otherwise.
    let mut pending: Vec<u8> = Vec::new();
    // True while skipping the rest of a line longer than LINE_BYTES_MAX.
    let mut overlong = false;
    let mut line_start: u64 = 0;
    let mut consumed: u64 = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok([]) => break,
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("replay", None, e)),
        };
        let mut at = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
            let end = at + i;
            out.lines += 1;
            if overlong {
                out.warn(options, line_start, &pending, SkipReason::TooLong);
                overlong = false;
                pending.clear();
            } else if pending.len() + i > LINE_BYTES_MAX {
                pending.extend_from_slice(&buf[at..end.min(at + WARNING_TEXT_BYTES_MAX)]);
                out.warn(options, line_start, &pending, SkipReason::TooLong);
                pending.clear();
            } else if pending.is_empty() {
                // The common case: the whole line is in the read buffer; parse it in place.
                out.apply(options, line_start, &buf[at..end]);
            } else {
                pending.extend_from_slice(&buf[at..end]);
                out.apply(options, line_start, &pending);
                pending.clear();
            }
            line_start = consumed + (end + 1) as u64;
            at = end + 1;
        }
        let rest = &buf[at..];
        if !overlong {
            if pending.len() + rest.len() > LINE_BYTES_MAX {
                // Keep only a prefix for the warning text; drop the rest as it streams by.
                let keep = WARNING_TEXT_BYTES_MAX.saturating_sub(pending.len());
                pending.extend_from_slice(&rest[..rest.len().min(keep)]);
                overlong = true;
            } else {
                pending.extend_from_slice(rest);
            }
        }
        let len = buf.len();
        consumed += len as u64;
        reader.consume(len);
    }
    out.valid_len = line_start;
    out.torn_tail_bytes = consumed - line_start;
    Ok(out)
}

/// Replays the snapshot log at `path`.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be opened or read (a missing file is an error here; the
/// [`SnapshotLog`](crate::SnapshotLog) creates one).
pub fn replay_file(path: &Path, options: &ReplayOptions) -> Result<Replay> {
    let file = File::open(path).map_err(|e| Error::io("open", Some(path), e))?;
    replay(file, options).map_err(|e| e.with_path(path))
}

impl Replay {
    fn apply(&mut self, options: &ReplayOptions, offset: u64, line: &[u8]) {
        match parse_line(line) {
            Ok(parsed) => self.history.apply(&parsed),
            Err(reason) => self.warn(options, offset, line, reason),
        }
    }

    fn warn(&mut self, options: &ReplayOptions, offset: u64, line: &[u8], reason: SkipReason) {
        self.warnings_total += 1;
        if self.warnings.len() < options.warnings_max {
            let cut = &line[..line.len().min(WARNING_TEXT_BYTES_MAX)];
            let mut text = String::from_utf8_lossy(cut).into_owned();
            if line.len() > WARNING_TEXT_BYTES_MAX {
                text.push('…');
            }
            self.warnings.push(Warning {
                line: self.lines,
                offset,
                text,
                reason,
            });
        }
    }
}
