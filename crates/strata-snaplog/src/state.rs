//! What a snapshot log means: the replayed [`State`], and the [`History`] that can answer for
//! either `rejoin_after_leave` setting and write itself back compactly.

use std::collections::HashMap;
use std::io::{self, Write};

use strata_clock::LamportTime;

use crate::line::{Line, Record};

/// The state a snapshot log replays to: the members last known alive and the three clocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Alive members, name to address.
    pub alive: HashMap<String, String>,
    /// The last member clock recorded (`clock:`).
    pub last_clock: LamportTime,
    /// The last user-event clock recorded (`event-clock:`).
    pub last_event_clock: LamportTime,
    /// The last query clock recorded (`query-clock:`).
    pub last_query_clock: LamportTime,
}

/// The net effect of the lines after the last `leave` (or of all lines, if there is none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Delta {
    /// Name to `Some(addr)` if its last line was `alive:`, `None` if it was `not-alive:` and the
    /// name was alive before the leave (a tombstone that only matters when the leave is ignored).
    members: HashMap<String, Option<String>>,
    clock: Option<LamportTime>,
    event_clock: Option<LamportTime>,
    query_clock: Option<LamportTime>,
}

/// The net effect of a whole snapshot log, kept in a form that replays correctly under *both*
/// `rejoin_after_leave` settings.
///
/// Serf's `leave` line means "forget everything" to a node that will not rejoin and nothing to
/// one that will. Serf's compaction writes only the state its own setting sees, so a compacted
/// file replays differently from the original (after a `leave`, it even keeps clocks a replay
/// would have zeroed). A `History` keeps what was true up to the last `leave` (as a rejoining
/// node sees it) apart from what happened after it, so [`write_compacted`](Self::write_compacted)
/// produces a file that replays to the same state as the original whichever setting reads it.
///
/// Memory is bounded by the number of members, not the number of lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The state up to and including the last `leave`, with leaves ignored; `None` if the log
    /// has no `leave`.
    before_leave: Option<State>,
    after: Delta,
}

impl History {
    /// An empty history: the state of an empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one parsed line.
    pub fn apply(&mut self, line: &Line<'_>) {
        match *line {
            Line::Alive { name, addr } => match self.after.members.get_mut(name) {
                // Reuse the existing allocations: replay of a long log rewrites the same names.
                Some(Some(existing)) => {
                    existing.clear();
                    existing.push_str(addr);
                }
                Some(slot @ None) => *slot = Some(addr.to_owned()),
                None => {
                    self.after
                        .members
                        .insert(name.to_owned(), Some(addr.to_owned()));
                }
            },
            Line::NotAlive { name } => {
                let alive_before_leave = self
                    .before_leave
                    .as_ref()
                    .is_some_and(|s| s.alive.contains_key(name));
                if alive_before_leave {
                    self.after.members.insert(name.to_owned(), None);
                } else {
                    // Nothing to hide under either setting: forget the name entirely.
                    self.after.members.remove(name);
                }
            }
            Line::Clock(t) => self.after.clock = Some(t),
            Line::EventClock(t) => self.after.event_clock = Some(t),
            Line::QueryClock(t) => self.after.query_clock = Some(t),
            Line::Leave => {
                let mut base = self.before_leave.take().unwrap_or_default();
                apply_delta(&mut base, std::mem::take(&mut self.after));
                self.before_leave = Some(base);
            }
            Line::Comment | Line::Coordinate => {}
        }
    }

    /// Applies a record the log is about to write.
    pub fn apply_record(&mut self, record: &Record<'_>) {
        self.apply(&record.as_line());
    }

    /// True if the history contains a `leave`.
    pub fn has_leave(&self) -> bool {
        self.before_leave.is_some()
    }

    /// The replayed state under `rejoin_after_leave`.
    pub fn state(&self, rejoin_after_leave: bool) -> State {
        let mut state = match (&self.before_leave, rejoin_after_leave) {
            (Some(base), true) => base.clone(),
            _ => State::default(),
        };
        apply_delta(&mut state, self.after.clone());
        state
    }

    /// The member clock under `rejoin_after_leave`, without building the whole state.
    pub fn last_clock(&self, rejoin_after_leave: bool) -> LamportTime {
        self.clock_of(rejoin_after_leave, |d| d.clock, |s| s.last_clock)
    }

    /// The user-event clock under `rejoin_after_leave`.
    pub fn last_event_clock(&self, rejoin_after_leave: bool) -> LamportTime {
        self.clock_of(
            rejoin_after_leave,
            |d| d.event_clock,
            |s| s.last_event_clock,
        )
    }

    /// The query clock under `rejoin_after_leave`.
    pub fn last_query_clock(&self, rejoin_after_leave: bool) -> LamportTime {
        self.clock_of(
            rejoin_after_leave,
            |d| d.query_clock,
            |s| s.last_query_clock,
        )
    }

    fn clock_of(
        &self,
        rejoin_after_leave: bool,
        after: impl Fn(&Delta) -> Option<LamportTime>,
        before: impl Fn(&State) -> LamportTime,
    ) -> LamportTime {
        after(&self.after).unwrap_or_else(|| match (&self.before_leave, rejoin_after_leave) {
            (Some(base), true) => before(base),
            _ => 0,
        })
    }

    /// How many member entries a compacted file holds; Serf's compaction threshold scales with
    /// it.
    pub fn member_entries(&self) -> usize {
        self.before_leave.as_ref().map_or(0, |s| s.alive.len()) + self.after.members.len()
    }

    /// Writes the compacted form: a file that replays to the same state as the log this history
    /// came from, under both `rejoin_after_leave` settings.
    ///
    /// Without a `leave` it is what Serf writes (`alive:` lines, then the three clocks). With one
    /// it is the state before the leave, the `leave`, then the net effect of what followed.
    /// Members are sorted by name so the output is deterministic.
    ///
    /// # Errors
    ///
    /// Whatever `w` returns.
    pub fn write_compacted(&self, w: &mut (impl Write + ?Sized)) -> io::Result<()> {
        match &self.before_leave {
            None => {
                let mut alive: Vec<(&str, &str)> = self
                    .after
                    .members
                    .iter()
                    .filter_map(|(n, a)| a.as_deref().map(|a| (n.as_str(), a)))
                    .collect();
                alive.sort_unstable();
                for (name, addr) in alive {
                    Record::Alive { name, addr }.write_to(w)?;
                }
                Record::Clock(self.after.clock.unwrap_or(0)).write_to(w)?;
                Record::EventClock(self.after.event_clock.unwrap_or(0)).write_to(w)?;
                Record::QueryClock(self.after.query_clock.unwrap_or(0)).write_to(w)?;
            }
            Some(base) => {
                let mut alive: Vec<(&String, &String)> = base.alive.iter().collect();
                alive.sort_unstable();
                for (name, addr) in alive {
                    Record::Alive { name, addr }.write_to(w)?;
                }
                Record::Clock(base.last_clock).write_to(w)?;
                Record::EventClock(base.last_event_clock).write_to(w)?;
                Record::QueryClock(base.last_query_clock).write_to(w)?;
                Record::Leave.write_to(w)?;
                let mut members: Vec<(&String, &Option<String>)> =
                    self.after.members.iter().collect();
                members.sort_unstable();
                for (name, addr) in members {
                    match addr {
                        Some(addr) => Record::Alive { name, addr }.write_to(w)?,
                        None => Record::NotAlive { name }.write_to(w)?,
                    }
                }
                if let Some(t) = self.after.clock {
                    Record::Clock(t).write_to(w)?;
                }
                if let Some(t) = self.after.event_clock {
                    Record::EventClock(t).write_to(w)?;
                }
                if let Some(t) = self.after.query_clock {
                    Record::QueryClock(t).write_to(w)?;
                }
            }
        }
        Ok(())
    }
}

fn apply_delta(state: &mut State, delta: Delta) {
    for (name, addr) in delta.members {
        match addr {
            Some(addr) => {
                state.alive.insert(name, addr);
            }
            None => {
                state.alive.remove(&name);
            }
        }
    }
    if let Some(t) = delta.clock {
        state.last_clock = t;
    }
    if let Some(t) = delta.event_clock {
        state.last_event_clock = t;
    }
    if let Some(t) = delta.query_clock {
        state.last_query_clock = t;
    }
}
