//! The line codec: Serf's snapshot lines parsed from and written to bytes.
//!
//! The format is described byte by byte in `docs/formats/snaplog.md`.

use std::fmt;
use std::io::Write;

use strata_clock::LamportTime;

/// The longest line replay accepts, in bytes, without its `\n`. Serf has no limit; a member
/// name is at most a few hundred bytes in practice, and a limit keeps replay's memory bounded
/// when it is handed a file that is not a snapshot at all. A longer line is skipped with a
/// warning.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

/// One parsed line of a snapshot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `alive: NAME ADDR`: `NAME` joined at `ADDR`. The split is at the last space, so names may
    /// contain spaces.
    Alive {
        /// The member's name.
        name: &'a str,
        /// Its address, as Serf formats a TCP address (`10.0.0.1:7946`, `[::1]:7946`).
        addr: &'a str,
    },
    /// `not-alive: NAME`: `NAME` left or failed.
    NotAlive {
        /// The member's name.
        name: &'a str,
    },
    /// `clock: N`: the member Lamport clock (minus one, as Serf records it).
    Clock(LamportTime),
    /// `event-clock: N`: the last user event's Lamport time.
    EventClock(LamportTime),
    /// `query-clock: N`: the last query's Lamport time.
    QueryClock(LamportTime),
    /// `leave`: this node left the cluster.
    Leave,
    /// A line starting with `#`: skipped silently.
    Comment,
    /// `coordinate: ...`: network coordinates from old Serf versions, skipped silently.
    Coordinate,
}

/// Why replay skipped a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The line matches no known record.
    Unrecognized,
    /// An `alive:` line without a space between name and address.
    MissingAddress,
    /// A clock value that is not a plain unsigned decimal fitting in 64 bits.
    InvalidNumber,
    /// An `alive:` or `not-alive:` line that is not valid UTF-8 (Serf would keep the raw bytes;
    /// Strata's member names are strings).
    InvalidUtf8,
    /// A line longer than [`LINE_BYTES_MAX`].
    TooLong,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Unrecognized => "unrecognized line",
            SkipReason::MissingAddress => "alive line has no address",
            SkipReason::InvalidNumber => "invalid clock value",
            SkipReason::InvalidUtf8 => "member name is not valid UTF-8",
            SkipReason::TooLong => "line too long",
        })
    }
}

const ALIVE: &[u8] = b"alive: ";
const NOT_ALIVE: &[u8] = b"not-alive: ";
const CLOCK: &[u8] = b"clock: ";
const EVENT_CLOCK: &[u8] = b"event-clock: ";
const QUERY_CLOCK: &[u8] = b"query-clock: ";
const COORDINATE: &[u8] = b"coordinate: ";
const LEAVE: &[u8] = b"leave";

/// Parses one line, without its trailing `\n`, with Serf's rules in Serf's order.
///
/// # Errors
///
/// The [`SkipReason`] when replay must skip the line with a warning.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, SkipReason> {
    if let Some(info) = line.strip_prefix(ALIVE) {
        let info = std::str::from_utf8(info).map_err(|_| SkipReason::InvalidUtf8)?;
        let split = info.rfind(' ').ok_or(SkipReason::MissingAddress)?;
        Ok(Line::Alive {
            name: &info[..split],
            addr: &info[split + 1..],
        })
    } else if let Some(name) = line.strip_prefix(NOT_ALIVE) {
        let name = std::str::from_utf8(name).map_err(|_| SkipReason::InvalidUtf8)?;
        Ok(Line::NotAlive { name })
    } else if let Some(value) = line.strip_prefix(CLOCK) {
        parse_time(value).map(Line::Clock)
    } else if let Some(value) = line.strip_prefix(EVENT_CLOCK) {
        parse_time(value).map(Line::EventClock)
    } else if let Some(value) = line.strip_prefix(QUERY_CLOCK) {
        parse_time(value).map(Line::QueryClock)
    } else if line.starts_with(COORDINATE) {
        Ok(Line::Coordinate)
    } else if line == LEAVE {
        Ok(Line::Leave)
    } else if line.starts_with(b"#") {
        Ok(Line::Comment)
    } else {
        Err(SkipReason::Unrecognized)
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`: one or more ASCII digits (leading zeros allowed), no
/// sign, no spaces, no `\r`, no underscores, and the value must fit in a `u64`.
fn parse_time(digits: &[u8]) -> Result<LamportTime, SkipReason> {
    if digits.is_empty() {
        return Err(SkipReason::InvalidNumber);
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(SkipReason::InvalidNumber);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(SkipReason::InvalidNumber)?;
    }
    Ok(value)
}

/// A record the snapshot log can write. Unlike [`Line`], it has no comment or coordinate form:
/// Strata never writes those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// `alive: NAME ADDR`.
    Alive {
        /// The member's name; must not contain `\n`.
        name: &'a str,
        /// Its address; must contain neither `\n` nor a space.
        addr: &'a str,
    },
    /// `not-alive: NAME`.
    NotAlive {
        /// The member's name; must not contain `\n`.
        name: &'a str,
    },
    /// `clock: N`.
    Clock(LamportTime),
    /// `event-clock: N`.
    EventClock(LamportTime),
    /// `query-clock: N`.
    QueryClock(LamportTime),
    /// `leave`.
    Leave,
}

impl<'a> Record<'a> {
    /// Checks that the record can be written as one line that replays to itself.
    ///
    /// # Errors
    ///
    /// A description of the problem: a name with a newline would split into two lines, an
    /// address with a space would move the name/address split, and a line longer than
    /// [`LINE_BYTES_MAX`] would be skipped by replay.
    pub fn validate(&self) -> Result<(), &'static str> {
        let text_bytes = match self {
            Record::Alive { name, addr } => ALIVE.len() + name.len() + 1 + addr.len(),
            Record::NotAlive { name } => NOT_ALIVE.len() + name.len(),
            _ => 0,
        };
        if text_bytes > LINE_BYTES_MAX {
            // Replay would skip it, and the live state would differ from the file's.
            return Err("line longer than LINE_BYTES_MAX");
        }
        match self {
            Record::Alive { name, addr } => {
                if name.contains('\n') {
                    Err("member name contains a newline")
                } else if addr.contains(['\n', ' ']) {
                    Err("member address contains a space or newline")
                } else {
                    Ok(())
                }
            }
            Record::NotAlive { name } if name.contains('\n') => {
                Err("member name contains a newline")
            }
            _ => Ok(()),
        }
    }

    /// The line this record replays as.
    pub fn as_line(&self) -> Line<'a> {
        match *self {
            Record::Alive { name, addr } => Line::Alive { name, addr },
            Record::NotAlive { name } => Line::NotAlive { name },
            Record::Clock(t) => Line::Clock(t),
            Record::EventClock(t) => Line::EventClock(t),
            Record::QueryClock(t) => Line::QueryClock(t),
            Record::Leave => Line::Leave,
        }
    }

    /// Appends the record and its `\n` to `out`. The record must be [`validate`](Self::validate)d.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = self.write_to(out);
    }

    /// Writes the record and its `\n` to `w`.
    ///
    /// # Errors
    ///
    /// Whatever `w` returns.
    pub fn write_to(&self, w: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
        match self {
            Record::Alive { name, addr } => {
                w.write_all(ALIVE)?;
                w.write_all(name.as_bytes())?;
                w.write_all(b" ")?;
                w.write_all(addr.as_bytes())?;
            }
            Record::NotAlive { name } => {
                w.write_all(NOT_ALIVE)?;
                w.write_all(name.as_bytes())?;
            }
            Record::Clock(t) => write_time(w, CLOCK, *t)?,
            Record::EventClock(t) => write_time(w, EVENT_CLOCK, *t)?,
            Record::QueryClock(t) => write_time(w, QUERY_CLOCK, *t)?,
            Record::Leave => w.write_all(LEAVE)?,
        }
        w.write_all(b"\n")
    }
}

fn write_time(w: &mut (impl Write + ?Sized), prefix: &[u8], t: LamportTime) -> std::io::Result<()> {
    // Format into a stack buffer: no allocation per record.
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = t;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    w.write_all(prefix)?;
    w.write_all(&digits[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_splits_at_the_last_space() {
        assert_eq!(
            parse_line(b"alive: my node 1 10.0.0.1:7946"),
            Ok(Line::Alive {
                name: "my node 1",
                addr: "10.0.0.1:7946"
            })
        );
        assert_eq!(
            parse_line(b"alive: v6 [::1]:7946"),
            Ok(Line::Alive {
                name: "v6",
                addr: "[::1]:7946"
            })
        );
        assert_eq!(
            parse_line(b"alive:  1.2.3.4:5"),
            Ok(Line::Alive {
                name: "",
                addr: "1.2.3.4:5"
            })
        );
        assert_eq!(
            parse_line(b"alive: nospace"),
            Err(SkipReason::MissingAddress)
        );
    }

    #[test]
    fn clocks_are_strict_unsigned_decimals() {
        assert_eq!(parse_line(b"clock: 0"), Ok(Line::Clock(0)));
        assert_eq!(parse_line(b"clock: 007"), Ok(Line::Clock(7)));
        assert_eq!(
            parse_line(b"clock: 18446744073709551615"),
            Ok(Line::Clock(u64::MAX))
        );
        for bad in [
            &b"clock: "[..],
            b"clock: +5",
            b"clock: -5",
            b"clock:  5",
            b"clock: 5 ",
            b"clock: 5\r",
            b"clock: 0x10",
            b"clock: 1_000",
            b"clock: 18446744073709551616",
            b"event-clock: abc",
            b"query-clock: 99999999999999999999",
        ] {
            assert_eq!(parse_line(bad), Err(SkipReason::InvalidNumber), "{bad:?}");
        }
    }

    #[test]
    fn skipped_and_silent_lines() {
        assert_eq!(parse_line(b"leave"), Ok(Line::Leave));
        assert_eq!(parse_line(b"leave "), Err(SkipReason::Unrecognized));
        assert_eq!(parse_line(b"# comment"), Ok(Line::Comment));
        assert_eq!(parse_line(b"coordinate: {}"), Ok(Line::Coordinate));
        assert_eq!(parse_line(b""), Err(SkipReason::Unrecognized));
        assert_eq!(parse_line(b"clock:5"), Err(SkipReason::Unrecognized));
        assert_eq!(parse_line(b"alive: \xff 1:2"), Err(SkipReason::InvalidUtf8));
    }

    #[test]
    fn records_that_would_not_replay_to_themselves_are_refused() {
        let long = "x".repeat(LINE_BYTES_MAX);
        for bad in [
            Record::Alive {
                name: "a\nclock: 9",
                addr: "1:1",
            },
            Record::Alive {
                name: "a",
                addr: "1 2",
            },
            Record::NotAlive { name: "a\nleave" },
            Record::Alive {
                name: &long,
                addr: "1:1",
            },
            Record::NotAlive { name: &long },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(
            Record::Alive {
                name: &long[..LINE_BYTES_MAX - 20],
                addr: "1:1"
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn records_encode_to_lines_that_parse_back() {
        let records = [
            Record::Alive {
                name: "a b",
                addr: "[::1]:1",
            },
            Record::NotAlive { name: "a b" },
            Record::Clock(0),
            Record::EventClock(u64::MAX),
            Record::QueryClock(42),
            Record::Leave,
        ];
        for record in records {
            let mut out = Vec::new();
            record.encode(&mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            assert_eq!(parse_line(&out[..out.len() - 1]), Ok(record.as_line()));
        }
    }
}
