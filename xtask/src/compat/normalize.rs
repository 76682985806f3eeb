//! Rewriting etcdctl's output so that two clusters' answers to the same command compare equal
//! exactly when they mean the same thing.
//!
//! Each rewrite removes something that legitimately differs between two runs, or between etcd and
//! Strata, and that no client may depend on:
//!
//! - **Member and cluster ids** are random (etcd hashes the peer URLs, the cluster token and, for
//!   added members, the time). A member id becomes the member's name (`m1`, or `member@<peer url>`
//!   for one added by the script, which has no name until it starts), learned from the cluster's
//!   own `member list` and `member add` answers, so an answer from the wrong member still shows.
//!   An id that names no member becomes `<unknown member>`. A cluster id becomes `<cluster>`.
//! - **The leader** is whichever member won an election, so `leader` becomes `<member>` (or
//!   `<unknown member>`); commands whose whole output names the leader (`move-leader`) are run with
//!   every member id anonymised.
//! - **Raft terms and indexes** count elections and log entries, including entries a client never
//!   caused (configuration changes, empty entries of a new leader); they become `<term>` and
//!   `<index>`.
//! - **Sizes** (`dbSize`, `dbSizeInUse`, a snapshot's size) depend on the storage engine.
//! - **Hashes** (`hash` of Hash and HashKV) are computed over each implementation's own encoding;
//!   that every member agrees is checked elsewhere, here only that one is given.
//! - **Version strings** name the implementation.
//! - **Timings** (`took`, log timestamps) and the client's own log details (`caller`, the gRPC
//!   `target` with a random client id) change on every run.
//! - **Temporary paths and ports**: the run's directory becomes `{tmp}`, each `127.0.0.1:<port>`
//!   becomes the name of what listens there (`m1-client`, `m1-peer`).
//!
//! Everything else is kept: revisions (header, create, mod, compact), versions, counts, `more`,
//! keys and values (base64 in etcdctl's JSON, shown decoded as `text:...` when they are text),
//! member names and URLs, learner flags, error texts, gRPC codes in the client's logs, and exit
//! codes. Arrays whose order follows the random ids (`members`) or the client's concurrency (the
//! per-endpoint results of `endpoint ...`) are sorted after rewriting.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// What a field's value is rewritten to, chosen by the field's name (see [`rule_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// A cluster id: `<cluster>`.
    Cluster,
    /// A member id: the member's name.
    Member,
    /// The leader's member id: `<member>`, since which member leads is up to elections.
    Leader,
    /// A Raft term: `<term>`.
    Term,
    /// A Raft log index: `<index>`.
    Index,
    /// A size in bytes of something whose encoding is the implementation's own: `<bytes>`.
    Size,
    /// A version string (only when the value is a string: a key's `version` is a number and kept).
    Version,
    /// A hash value: `<hash>`.
    Hash,
    /// A duration: `<duration>`.
    Duration,
    /// The gRPC target in the client's logs, with a random client id: `<target>`.
    Target,
    /// A log line's timestamp or source position: removed.
    Drop,
    /// Key or value bytes, base64 in JSON: decoded when they are text.
    Bytes,
    /// A key's lease: `<lease>` unless 0 (none). `lock` and `elect` grant their session's lease
    /// themselves, with an id that is random on both sides.
    Lease,
}

/// The rule for a field name, in etcdctl's JSON (`cluster_id`, `raftTerm`), its `-w fields`
/// output (`"ClusterID" : ...`) or the client's JSON logs (`ts`, `caller`).
fn rule_for(name: &str) -> Option<Rule> {
    Some(match name {
        "cluster_id" | "ClusterID" => Rule::Cluster,
        "member_id" | "MemberID" | "memberID" | "ID" => Rule::Member,
        "leader" | "Leader" => Rule::Leader,
        "raft_term" | "raftTerm" | "RaftTerm" => Rule::Term,
        "raftIndex" | "raftAppliedIndex" | "RaftIndex" | "RaftAppliedIndex" => Rule::Index,
        "dbSize" | "dbSizeInUse" | "DBSize" | "DBSizeInUse" | "size" => Rule::Size,
        "version" | "Version" => Rule::Version,
        "hash" | "Hash" => Rule::Hash,
        "took" => Rule::Duration,
        "target" => Rule::Target,
        "ts" | "caller" => Rule::Drop,
        "key" | "value" | "range_end" => Rule::Bytes,
        "lease" => Rule::Lease,
        _ => return None,
    })
}

/// The shortest token taken for a member or cluster id in plain text. etcdctl prints ids as
/// unpadded hex of a random `u64`, so a real id is shorter than this with probability 2^-32, while
/// revisions and counts in the same lines are short numbers that must never be taken for ids.
const ID_TOKEN_CHARS_MIN: usize = 8;

/// Rewrites one cluster's etcdctl outputs; it learns member ids as the outputs show them.
#[derive(Debug, Default)]
pub struct Normalizer {
    /// Literal texts and what they become: ports (`127.0.0.1:2379` → `m1-client`) and the run's
    /// directory (→ `{tmp}`). Longest first, so that no text is replaced by a shorter prefix.
    literals: Vec<(String, String)>,
    /// Every member id seen, and the name it is shown as.
    members: BTreeMap<u64, String>,
    /// Every cluster id seen.
    clusters: BTreeSet<u64>,
}

/// Per command options of [`Normalizer::output`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Show every member id as `<member>`: for outputs that name the leader, which elections pick.
    pub any_member: bool,
    /// Drop the top-level `header`: for responses where etcd versions differ on whether there
    /// is one.
    pub no_header: bool,
}

impl Normalizer {
    /// A normalizer that knows nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `from` (a path, or a `host:port`) as `to` wherever it appears.
    pub fn name_literal(&mut self, from: &str, to: &str) {
        self.literals.push((from.to_owned(), to.to_owned()));
        self.literals
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    }

    /// Learns the member ids and cluster ids in an etcdctl JSON answer (`member list -w json`,
    /// `member add -w json`, any header), so that later outputs show names.
    pub fn learn(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                if let Some(id) = map.get("cluster_id").and_then(Value::as_u64) {
                    self.clusters.insert(id);
                }
                let id = map.get("ID").and_then(Value::as_u64);
                let peer = map
                    .get("peerURLs")
                    .and_then(Value::as_array)
                    .and_then(|urls| urls.first())
                    .and_then(Value::as_str);
                if let (Some(id), Some(peer)) = (id, peer) {
                    let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
                    // A member keeps the first name it was seen with: an added member is first
                    // seen unnamed and would otherwise change names when it starts.
                    let shown = if name.is_empty() {
                        format!("member@{}", self.text(peer, Options::default()))
                    } else {
                        name.to_owned()
                    };
                    self.members.entry(id).or_insert(shown);
                }
                map.values().for_each(|inner| self.learn(inner));
            }
            Value::Array(items) => items.iter().for_each(|inner| self.learn(inner)),
            _ => {}
        }
    }

    /// The normalized form of one command's result: its exit code, stdout, and stderr when there
    /// is any. JSON output is learned from first (see [`Normalizer::learn`]), then rewritten and
    /// printed with sorted keys, one field per line, so that a diff points at the field.
    pub fn output(&mut self, exit: &str, stdout: &str, stderr: &str, options: Options) -> String {
        let mut shown = format!("exit {exit}\n");
        let whole = stdout.trim();
        match serde_json::from_str::<Value>(whole) {
            Ok(mut value) if whole.starts_with(['{', '[']) => {
                self.learn(&value);
                if options.no_header
                    && let Some(object) = value.as_object_mut()
                {
                    object.remove("header");
                }
                let value = self.value(None, value, options);
                render_pretty(&sorted(value, true), 0, &mut shown);
                shown.push('\n');
            }
            _ => shown.push_str(&self.lines(stdout, options)),
        }
        if !stderr.trim().is_empty() {
            shown.push_str("stderr:\n");
            shown.push_str(&self.lines(stderr, options));
        }
        shown
    }

    /// Normalizes text line by line: JSON lines (the client's logs) field by field, `-w fields`
    /// lines by their field name, anything else as text. Ends with a newline unless empty.
    fn lines(&mut self, text: &str, options: Options) -> String {
        let mut shown = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            let json = trimmed
                .starts_with('{')
                .then(|| serde_json::from_str::<Value>(trimmed).ok())
                .flatten();
            if let Some(value) = json {
                self.learn(&value);
                let value = self.value(None, value, options);
                shown.push_str(&render_compact(&sorted(value, false)));
            } else if let Some(field) = self.fields_line(trimmed, options) {
                shown.push_str(&field);
            } else {
                shown.push_str(&self.text(line.trim_end(), options));
            }
            shown.push('\n');
        }
        shown
    }

    /// A `-w fields` line, `"Name" : value`, with the value rewritten by the name's rule; `None`
    /// if the line is not one.
    fn fields_line(&self, line: &str, options: Options) -> Option<String> {
        let rest = line.strip_prefix('"')?;
        let (name, value) = rest.split_once("\" : ")?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        // A fields value is a number, `true`/`false`, or a Go-quoted string; JSON reads all three
        // (Go's `%q` escapes agree with JSON's for the text this script writes).
        let parsed = serde_json::from_str::<Value>(value)
            .unwrap_or_else(|_| Value::String(value.to_owned()));
        let shown = match rule_for(name) {
            // Fields print keys and values as text already, not base64.
            Some(Rule::Bytes) | None => match parsed {
                Value::String(text) => Value::String(self.text(&text, options)),
                other => other,
            },
            Some(rule) => self.apply(rule, parsed, options)?,
        };
        Some(format!("\"{name}\" : {}", render_compact(&shown)))
    }

    /// Rewrites one JSON value found under the field `name` (`None` at the top or in an array).
    fn value(&self, name: Option<&str>, value: Value, options: Options) -> Value {
        if let Some(rule) = name.and_then(rule_for) {
            // `Drop` answers `None`; the caller's object rewrite has already removed such fields.
            return self
                .apply(rule, value, options)
                .unwrap_or(Value::String("<dropped>".to_owned()));
        }
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, inner) in map {
                    if rule_for(&key) == Some(Rule::Drop) {
                        continue;
                    }
                    let inner = self.value(Some(&key), inner, options);
                    out.insert(key, inner);
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|inner| self.value(None, inner, options))
                    .collect(),
            ),
            Value::String(text) => Value::String(self.text(&text, options)),
            other => other,
        }
    }

    /// Applies `rule` to a field's value; `None` when the field is to be removed.
    fn apply(&self, rule: Rule, value: Value, options: Options) -> Option<Value> {
        let placeholder = |text: &str| Value::String(text.to_owned());
        Some(match rule {
            Rule::Drop => return None,
            Rule::Cluster => placeholder("<cluster>"),
            Rule::Member => match value.as_u64() {
                Some(id) => placeholder(&self.member(id, options)),
                None => self.value(None, value, options),
            },
            Rule::Leader => match value.as_u64() {
                Some(id) => placeholder(&self.member(
                    id,
                    Options {
                        any_member: true,
                        ..Options::default()
                    },
                )),
                None => self.value(None, value, options),
            },
            Rule::Term => placeholder("<term>"),
            Rule::Index => placeholder("<index>"),
            Rule::Size => placeholder("<bytes>"),
            Rule::Hash => placeholder("<hash>"),
            Rule::Lease => match value.as_i64() {
                Some(0) => value,
                Some(_) => placeholder("<lease>"),
                None => self.value(None, value, options),
            },
            Rule::Duration => placeholder("<duration>"),
            Rule::Target => placeholder("<target>"),
            Rule::Version => match value {
                Value::String(_) => placeholder("<version>"),
                other => other,
            },
            Rule::Bytes => match value {
                Value::String(encoded) => match decode_base64(&encoded) {
                    Some(bytes) => match String::from_utf8(bytes) {
                        // Literals too: a lock's or a candidate's key ends in its lease's id.
                        Ok(text) if !text.chars().any(char::is_control) => {
                            Value::String(format!("text:{}", self.literals(&text)))
                        }
                        _ => Value::String(encoded),
                    },
                    None => Value::String(encoded),
                },
                other => other,
            },
        })
    }

    /// How member `id` is shown: its name, `<member>` when all members are anonymised, `0` for
    /// "no member" (no leader) and `<unknown member>` for an id no member has.
    fn member(&self, id: u64, options: Options) -> String {
        match self.members.get(&id) {
            _ if id == 0 => "0".to_owned(),
            Some(_) if options.any_member => "<member>".to_owned(),
            Some(name) => name.clone(),
            None => "<unknown member>".to_owned(),
        }
    }

    /// Rewrites free text: known literals (ports, the run's directory), member and cluster ids in
    /// hex or decimal, and `took = <duration>`.
    pub fn text(&self, text: &str, options: Options) -> String {
        let text = self.literals(text);
        let mut out = String::with_capacity(text.len());
        let mut token = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() {
                token.push(c);
                continue;
            }
            let shown = self.id_token(&token, options);
            if shown != token && out.ends_with("  ") {
                // etcdctl pads some ids to 16 columns (`%16x`); an id with a leading zero nibble
                // then has one more space before it, which is no more meaningful than the id.
                let kept = out.trim_end_matches(' ').len() + 1;
                out.truncate(kept);
            }
            out.push_str(&shown);
            token.clear();
            out.push(c);
        }
        out.pop();
        sort_attached_keys(&hide_remaining(&hide_took(&out)))
    }

    /// `text` with the known literals replaced (ports, the run's directory, lease ids).
    fn literals(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in &self.literals {
            text = replace_not_before_digit(&text, from, to);
        }
        text
    }

    /// A token of free text, shown as a name if it is a known member or cluster id.
    fn id_token(&self, token: &str, options: Options) -> String {
        if token.len() >= ID_TOKEN_CHARS_MIN {
            let decimal = token.parse::<u64>().ok();
            let hex = u64::from_str_radix(token, 16).ok();
            for id in [decimal, hex].into_iter().flatten() {
                if self.clusters.contains(&id) {
                    return "<cluster>".to_owned();
                }
                if self.members.contains_key(&id) {
                    return self.member(id, options);
                }
            }
        }
        token.to_owned()
    }
}

/// Replaces `from` with `to` except where the next character is a digit, so that port 2379 is
/// not found inside port 23791.
fn replace_not_before_digit(text: &str, from: &str, to: &str) -> String {
    if from.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(from) {
        let after = &rest[at + from.len()..];
        out.push_str(&rest[..at]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Sorts the list in `attached keys([a b])` (`lease timetolive --keys`): etcd lists a lease's
/// keys in Go's map order, which is random.
fn sort_attached_keys(text: &str) -> String {
    const START: &str = "attached keys([";
    let Some(at) = text.find(START) else {
        return text.to_owned();
    };
    let list_at = at + START.len();
    let Some(len) = text[list_at..].find("])") else {
        return text.to_owned();
    };
    let mut keys: Vec<&str> = text[list_at..list_at + len].split(' ').collect();
    keys.sort_unstable();
    format!(
        "{}{}{}",
        &text[..list_at],
        keys.join(" "),
        &text[list_at + len..]
    )
}

/// Replaces the seconds in `remaining(Ns)` (`lease timetolive`) with `<s>`: a lease's remaining
/// time depends on when the command ran, not on the implementation.
fn hide_remaining(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("remaining(") {
        let after = &rest[at + "remaining(".len()..];
        out.push_str(&rest[..at + "remaining(".len()]);
        match after.find("s)") {
            Some(end)
                if end > 0 && after[..end].chars().all(|c| c.is_ascii_digit() || c == '-') =>
            {
                out.push_str("<s>");
                // Past the digits and their unit: `)` follows.
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the word after `took = ` or `took: ` (etcdctl's plain `endpoint health`) with
/// `<duration>`.
fn hide_took(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("took") {
        let after = &rest[at + "took".len()..];
        let Some(sep) = [" = ", ": "].into_iter().find(|sep| after.starts_with(sep)) else {
            out.push_str(&rest[..at + "took".len()]);
            rest = after;
            continue;
        };
        out.push_str(&rest[..at]);
        out.push_str("took");
        out.push_str(sep);
        out.push_str("<duration>");
        let value = &after[sep.len()..];
        let end = value
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(value.len());
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Sorts the arrays whose order is not part of the answer: `members` (etcd orders them by random
/// id) and, at the top, the per-endpoint results of `endpoint ...` (collected concurrently).
fn sorted(value: Value, top: bool) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, inner)| {
                    let inner = match inner {
                        Value::Array(items) if key == "members" => sort_items(items),
                        other => sorted(other, false),
                    };
                    (key, inner)
                })
                .collect(),
        ),
        Value::Array(items) if top => sort_items(items),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|inner| sorted(inner, false))
                .collect(),
        ),
        other => other,
    }
}

/// The items, each sorted inside, in the order of their compact rendering.
fn sort_items(items: Vec<Value>) -> Value {
    let mut items: Vec<(String, Value)> = items
        .into_iter()
        .map(|inner| {
            let inner = sorted(inner, false);
            (render_compact(&inner), inner)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(items.into_iter().map(|(_, inner)| inner).collect())
}

/// One line of JSON with keys sorted (independent of serde_json's `preserve_order` feature).
fn render_compact(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        Value::String(key.clone()),
                        render_compact(&map[key])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(render_compact).collect();
            format!("[{}]", items.join(","))
        }
        scalar => scalar.to_string(),
    }
}

/// JSON with sorted keys, one field or item per line, two spaces per level.
fn render_pretty(value: &Value, depth: usize, out: &mut String) {
    let indent = |depth: usize| "  ".repeat(depth);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, key) in keys.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                out.push_str(&format!("{}: ", Value::String((*key).clone())));
                render_pretty(&map[*key], depth + 1, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push('}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&indent(depth + 1));
                render_pretty(item, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&indent(depth));
            out.push(']');
        }
        other => out.push_str(&render_compact(other)),
    }
}

/// Decodes standard padded base64 (Go's `encoding/json` form of `[]byte`); `None` if `text` is
/// not that.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut bits = 0u32;
        for &c in &chunk[..4 - pad] {
            bits = (bits << 6) | sextet(c)?;
        }
        bits <<= 6 * pad as u32;
        let decoded = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A normalizer that knows a two-member cluster on ports 23791/23801 and 23792/23802.
    fn known() -> Normalizer {
        let mut n = Normalizer::new();
        n.name_literal("127.0.0.1:23791", "m1-client");
        n.name_literal("127.0.0.1:23801", "m1-peer");
        n.name_literal("127.0.0.1:23792", "m2-client");
        n.name_literal("127.0.0.1:23802", "m2-peer");
        n.name_literal("/tmp/strata-compat-1/etcd", "{tmp}");
        let members: Value = serde_json::from_str(
            r#"{"header":{"cluster_id":2478302587001825083,"member_id":4627081221937520288,"raft_term":2},
            "members":[{"ID":4627081221937520288,"name":"m1","peerURLs":["http://127.0.0.1:23801"]},
            {"ID":17456095905768140106,"name":"m2","peerURLs":["http://127.0.0.1:23802"]}]}"#,
        )
        .expect("the test's JSON is valid");
        n.learn(&members);
        n
    }

    #[test]
    fn headers_lose_ids_and_terms_but_keep_revisions_and_kvs() {
        let mut n = known();
        let out = n.output(
            "0",
            r#"{"header":{"cluster_id":2478302587001825083,"member_id":4627081221937520288,"revision":3,"raft_term":2},"kvs":[{"key":"YQ==","create_revision":2,"mod_revision":3,"version":2,"value":"MQ=="}],"count":1}"#,
            "",
            Options::default(),
        );
        let expected = r#"exit 0
{
  "count": 1,
  "header": {
    "cluster_id": "<cluster>",
    "member_id": "m1",
    "raft_term": "<term>",
    "revision": 3
  },
  "kvs": [
    {
      "create_revision": 2,
      "key": "text:a",
      "mod_revision": 3,
      "value": "text:1",
      "version": 2
    }
  ]
}
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn two_runs_with_different_ids_ports_and_sizes_normalize_equal() {
        let mut a = known();
        let mut b = Normalizer::new();
        b.name_literal("127.0.0.1:40001", "m1-client");
        b.name_literal("127.0.0.1:40002", "m1-peer");
        b.name_literal("127.0.0.1:40003", "m2-client");
        b.name_literal("127.0.0.1:40004", "m2-peer");
        // Status of the same cluster state: other ids, term, indexes, sizes and version.
        let status_a = r#"[{"Endpoint":"http://127.0.0.1:23791","Status":{"header":{"cluster_id":2478302587001825083,"member_id":4627081221937520288,"revision":2,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":17456095905768140106,"raftIndex":5,"raftTerm":2,"raftAppliedIndex":5,"dbSizeInUse":16384}}]"#;
        let members_b = r#"{"header":{"cluster_id":99,"member_id":1234567890123,"raft_term":7},"members":[{"ID":1234567890123,"name":"m1","peerURLs":["http://127.0.0.1:40002"]},{"ID":98765432109876,"name":"m2","peerURLs":["http://127.0.0.1:40004"]}]}"#;
        b.output("0", members_b, "", Options::default());
        let status_b = r#"[{"Endpoint":"http://127.0.0.1:40001","Status":{"header":{"cluster_id":99,"member_id":1234567890123,"revision":2,"raft_term":7},"version":"0.1.0","dbSize":1,"leader":1234567890123,"raftIndex":50,"raftTerm":7,"raftAppliedIndex":49,"dbSizeInUse":1}}]"#;
        let shown_a = a.output("0", status_a, "", Options::default());
        assert_eq!(shown_a, b.output("0", status_b, "", Options::default()));
        assert!(shown_a.contains("\"Endpoint\": \"http://m1-client\""));
        assert!(shown_a.contains("\"leader\": \"<member>\""));
        assert!(shown_a.contains("\"revision\": 2"));
    }

    #[test]
    fn a_different_revision_value_or_error_text_still_differs() {
        let mut n = known();
        let base =
            r#"{"header":{"revision":3},"kvs":[{"key":"YQ==","mod_revision":3,"value":"MQ=="}]}"#;
        let shown = n.output("0", base, "", Options::default());
        for changed in [
            base.replace("\"revision\":3", "\"revision\":4"),
            base.replace("\"mod_revision\":3", "\"mod_revision\":2"),
            base.replace("MQ==", "Mg=="),
        ] {
            assert_ne!(shown, n.output("0", &changed, "", Options::default()));
        }
        let error = |text: &str| n.text(text, Options::default());
        assert_ne!(
            error("Error: etcdserver: mvcc: required revision has been compacted"),
            error("Error: etcdserver: mvcc: required revision is a future revision")
        );
        assert_ne!(
            n.output("1", "", "", Options::default()),
            n.output("0", "", "", Options::default())
        );
    }

    #[test]
    fn an_id_that_names_no_member_is_shown_as_unknown() {
        let mut n = known();
        let out = n.output(
            "0",
            r#"{"header":{"member_id":555555555555}}"#,
            "",
            Options::default(),
        );
        assert!(out.contains("\"member_id\": \"<unknown member>\""), "{out}");
    }

    #[test]
    fn members_are_named_and_sorted_by_name_and_an_added_one_by_its_peer_url() {
        let mut n = known();
        n.name_literal("127.0.0.1:23999", "new1-peer");
        let added = r#"{"header":{"cluster_id":2478302587001825083,"member_id":4627081221937520288,"raft_term":2},"member":{"ID":7,"peerURLs":["http://127.0.0.1:23999"],"isLearner":true},"members":[{"ID":17456095905768140106,"name":"m2","peerURLs":["http://127.0.0.1:23802"]},{"ID":7,"peerURLs":["http://127.0.0.1:23999"],"isLearner":true},{"ID":4627081221937520288,"name":"m1","peerURLs":["http://127.0.0.1:23801"]}]}"#;
        let out = n.output("0", added, "", Options::default());
        let m1 = out.find("\"ID\": \"m1\"").expect("m1 is shown by name");
        let m2 = out.find("\"ID\": \"m2\"").expect("m2 is shown by name");
        assert!(m1 < m2, "members sorted by name:\n{out}");
        assert!(out.contains("\"ID\": \"member@http://new1-peer\""), "{out}");
        // The plain text of a later `member remove` names it the same way (ids in hex there).
        let removed = n.text(
            "Member 7 removed from cluster 2264b312802ce73b",
            Options::default(),
        );
        // `7` is too short to be taken for an id in text; the cluster id is long enough.
        assert_eq!(removed, "Member 7 removed from cluster <cluster>");
        // Ids padded to 16 columns show the same whatever their length.
        n.learn(&serde_json::json!({ "cluster_id": 0x0264_b312_802c_e73b_u64 }));
        let padded = n.text(
            "Member 7 updated in cluster  264b312802ce73b",
            Options::default(),
        );
        assert_eq!(padded, "Member 7 updated in cluster <cluster>");
        let hex = format!("Member {:x} removed", 17456095905768140106u64);
        assert_eq!(n.text(&hex, Options::default()), "Member m2 removed");
        let any = Options {
            any_member: true,
            ..Options::default()
        };
        assert_eq!(n.text(&hex, any), "Member <member> removed");
    }

    #[test]
    fn client_logs_lose_timestamps_callers_and_targets_but_keep_the_error() {
        let mut n = known();
        let stderr = r#"{"level":"warn","ts":"2026-12-04T11:30:53.517Z","caller":"clientv3/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":"endpoint://client-f633/127.0.0.1:23791","attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided"}
Error: etcdserver: key is not provided
"#;
        let out = n.output("1", "", stderr, Options::default());
        let expected = r#"exit 1
stderr:
{"attempt":0,"error":"rpc error: code = InvalidArgument desc = etcdserver: key is not provided","level":"warn","msg":"retrying of unary invoker failed","target":"<target>"}
Error: etcdserver: key is not provided
"#;
        assert_eq!(out, expected);
    }

    #[test]
    fn fields_lines_follow_the_same_rules_as_json() {
        let mut n = known();
        let fields = "\"ClusterID\" : 2478302587001825083\n\"MemberID\" : 4627081221937520288\n\"Revision\" : 2\n\"RaftTerm\" : 2\n\"Key\" : \"a\"\n\"Version\" : 1\n\"Count\" : 1\n";
        let out = n.output("0", fields, "", Options::default());
        let expected = "exit 0\n\"ClusterID\" : \"<cluster>\"\n\"MemberID\" : \"m1\"\n\"Revision\" : 2\n\"RaftTerm\" : \"<term>\"\n\"Key\" : \"a\"\n\"Version\" : 1\n\"Count\" : 1\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn ports_paths_and_durations_are_named_without_touching_longer_ports() {
        let mut n = known();
        n.name_literal("127.0.0.1:2379", "short-port");
        let text = "http://127.0.0.1:23791 is healthy: successfully committed proposal: took = 1.42ms, saved /tmp/strata-compat-1/etcd/snap.db 127.0.0.1:2379";
        assert_eq!(
            n.text(text, Options::default()),
            "http://m1-client is healthy: successfully committed proposal: took = <duration>, saved {tmp}/snap.db short-port"
        );
    }

    #[test]
    fn a_lease_remaining_time_is_hidden_but_not_its_ttl() {
        assert_eq!(
            hide_remaining(
                "lease <lease> granted with TTL(100s), remaining(99s), attached keys([a])"
            ),
            "lease <lease> granted with TTL(100s), remaining(<s>), attached keys([a])"
        );
        assert_eq!(hide_remaining("remaining(x)"), "remaining(x)");
        assert_eq!(
            sort_attached_keys("TTL(1s), attached keys([b a c])"),
            "TTL(1s), attached keys([a b c])"
        );
    }

    #[test]
    fn base64_decodes_padded_standard_text_only() {
        assert_eq!(decode_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(decode_base64("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(decode_base64("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(decode_base64("").as_deref(), Some(&b""[..]));
        assert_eq!(decode_base64("YQ="), None);
        assert_eq!(decode_base64("YQ==YQ=="), None);
        assert_eq!(decode_base64("Y!=="), None);
        // Bytes that are not text stay base64.
        let n = known();
        let kept = n.apply(
            Rule::Bytes,
            Value::String("AAE=".into()),
            Options::default(),
        );
        assert_eq!(kept, Some(Value::String("AAE=".into())));
    }
}
