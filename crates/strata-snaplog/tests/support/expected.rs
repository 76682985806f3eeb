//! Shared by the golden-file tests of `strata-snaplog` and the CLI tests of `strata-cli`
//! (included with `#[path]`): the expected outcome of replaying a golden file, as its
//! `.expected.json` states it and as `strata snaplog dump` prints it.

use std::collections::BTreeMap;

use serde_json::Value;

/// What a replay must give under one `rejoin_after_leave` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub alive: BTreeMap<String, String>,
    pub last_clock: u64,
    pub last_event_clock: u64,
    pub last_query_clock: u64,
    /// `(line, text)` of every skipped line, in order.
    pub warnings: Vec<(u64, String)>,
    pub torn_tail_bytes: u64,
}

impl Expected {
    /// Reads one dump object (the reasons of warnings are not compared: their wording is an
    /// implementation detail).
    pub fn from_json(value: &Value, context: &str) -> Self {
        let field = |name: &str| {
            value
                .get(name)
                .unwrap_or_else(|| panic!("{context}: missing field {name:?}"))
        };
        let number = |name: &str| {
            field(name)
                .as_u64()
                .unwrap_or_else(|| panic!("{context}: {name:?} is not a u64"))
        };
        let alive = field("alive")
            .as_object()
            .unwrap_or_else(|| panic!("{context}: \"alive\" is not an object"))
            .iter()
            .map(|(name, addr)| {
                let addr = addr
                    .as_str()
                    .unwrap_or_else(|| panic!("{context}: address of {name:?} is not a string"));
                (name.clone(), addr.to_owned())
            })
            .collect();
        let warnings = field("warnings")
            .as_array()
            .unwrap_or_else(|| panic!("{context}: \"warnings\" is not an array"))
            .iter()
            .map(|w| {
                let line = w["line"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{context}: warning without a line: {w}"));
                let text = w["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{context}: warning without a text: {w}"));
                (line, text.to_owned())
            })
            .collect();
        Self {
            alive,
            last_clock: number("last_clock"),
            last_event_clock: number("last_event_clock"),
            last_query_clock: number("last_query_clock"),
            warnings,
            torn_tail_bytes: number("torn_tail_bytes"),
        }
    }

    /// The same state, as a file without skipped lines or a torn tail replays to.
    pub fn clean(&self) -> Self {
        Self {
            warnings: Vec::new(),
            torn_tail_bytes: 0,
            ..self.clone()
        }
    }
}
