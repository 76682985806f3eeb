//! The script of etcdctl commands (`xtask/compat/script.txt`) and its parser.
//!
//! The format, line by line:
//!
//! - `# ...` is a comment; blank lines are ignored.
//! - `> [@tag ...] ARGS`: one etcdctl command, its arguments split like a shell's words (single
//!   or double quotes group words and may be empty; no escapes). `--endpoints=` is added (the
//!   first member's client URL) unless ARGS give their own.
//! - `| TEXT`: one line of the previous command's stdin (`|` alone: an empty line), for `txn`.
//! - `& NAME ARGS`: etcdctl ARGS started in the background as NAME, for commands that do not
//!   exit by themselves (`watch`, `elect`, `lock` without a command); its stdin (`|` lines) is
//!   kept open, so `watch -i` reads it and waits. It shows nothing until it is stopped.
//! - `? NAME TEXT`: waits (bounded) until NAME has printed a line containing TEXT (the rest of
//!   the line), so that what the next commands do comes after what NAME has seen; shows whether
//!   it came.
//! - `! NAME [TEXT]`: stops NAME: waits (bounded) as `?` for TEXT, or without TEXT until it has
//!   been quiet for a moment, then sends SIGINT (as Ctrl-C: `elect` resigns, `lock` unlocks) and
//!   shows its exit code, stdout and stderr, normalized like any command's.
//! - `~ PATH JSON`: `POST PATH` with the body JSON (the rest of the line, taken literally: no
//!   placeholders, no tags) to the first member's client URL, etcd's JSON gateway; shows the
//!   HTTP status and the answer, normalized as etcdctl's JSON once its 64-bit integers
//!   (strings in the gateway's JSON) are numbers.
//!
//! Tags: `@no-header` drops the response's top-level `header` (for responses etcd 3.5 gives a
//! header and 3.4 does not, such as Alarm's: Strata follows 3.5); `@multi` runs the command only
//! on a cluster of more than one member; `@any-member` shows
//! every member id in its output as `<member>` (outputs that name the leader, which elections
//! pick); `@snapshot` adds a line saying whether the file named by the last argument is a
//! plausible snapshot (its size is the implementation's, so only its shape is compared);
//! `@retry-unhealthy` repeats the command, within a bound, while it fails with `etcdserver:
//! unhealthy cluster` (etcd refuses reconfigurations until its leader has been connected to every
//! member for 5 s, which a freshly started cluster has not; when the answer comes is timing, not
//! behaviour, and only the final answer is compared).
//!
//! Placeholders in ARGS and stdin, replaced per cluster: `{all}` (every member's client URL,
//! comma-separated; the harness first waits until every member has applied the same revision and
//! index), `{tmp}` (the cluster's temporary directory), `{first_peer}` (the first member's peer
//! URL), `{peer:NAME}` (a free loopback URL, the same
//! for every use of NAME in a run, shown as `NAME-peer`), `{leader_id}` and `{follower_id}` (hex
//! member ids; the follower is the leader in a one-member cluster), `{lease_id}` (the id of the lease granted last; every lease id is shown as
//! `<lease>`), `{added_id}` (the id of the
//! member added by the latest successful `member add -w json`), `{x*N}` (N copies of `x`) and
//! `{rev}`, `{rev+N}`, `{rev-N}` (the cluster's current revision, read when the command runs, plus
//! or minus N: a background watcher started with `--rev={rev+1}` sees every later write, however
//! long it takes to start).

use anyhow::{Result, bail};

/// The script run by `cargo xtask compat`, compiled in so that the binary needs no files.
pub const SCRIPT: &str = include_str!("../../compat/script.txt");

/// One etcdctl command of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The script's line number (1-based), for reports.
    pub line: usize,
    /// The command as written, without the `> ` and tags, for reports.
    pub text: String,
    /// The arguments after `etcdctl`, placeholders not yet replaced.
    pub args: Vec<String>,
    /// Lines of stdin, placeholders not yet replaced; empty if the command reads none.
    pub stdin: Vec<String>,
    /// Run only on a cluster of more than one member (`@multi`).
    pub multi: bool,
    /// Show every member id as `<member>` (`@any-member`).
    pub any_member: bool,
    /// Check the snapshot file named by the last argument (`@snapshot`).
    pub snapshot: bool,
    /// Repeat while the answer is `etcdserver: unhealthy cluster` (`@retry-unhealthy`).
    pub retry_unhealthy: bool,
    /// Drop the response's top-level `header` (`@no-header`).
    pub no_header: bool,
    /// What the step does with its command.
    pub kind: Kind,
}

impl Step {
    /// A step of `kind` at script line `line`, written `text`, with no arguments, stdin or
    /// tags yet.
    fn new(line: usize, text: &str, kind: Kind) -> Step {
        Step {
            line,
            text: text.to_owned(),
            args: Vec::new(),
            stdin: Vec::new(),
            multi: false,
            any_member: false,
            snapshot: false,
            retry_unhealthy: false,
            no_header: false,
            kind,
        }
    }
}

/// What a step does: run a command to its end, or start, wait for or stop a background one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `> ARGS`: runs etcdctl ARGS and shows its answer.
    Run,
    /// `& NAME ARGS`: starts etcdctl ARGS in the background as NAME.
    Start(String),
    /// `? NAME TEXT`: waits until NAME has printed a line containing TEXT.
    Wait(String, String),
    /// `! NAME [TEXT]`: stops NAME (after TEXT, if given) and shows its answer.
    Stop(String, Option<String>),
    /// `~ PATH JSON`: posts JSON to the gateway's PATH and shows the answer.
    Gateway(String, String),
}

/// A placeholder of the script, as found between braces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{all}`: every member's client URL.
    All,
    /// `{tmp}`: the cluster's temporary directory.
    Tmp,
    /// `{first_peer}`: the first member's peer URL.
    FirstPeer,
    /// `{peer:NAME}`: a free loopback peer URL named NAME.
    Peer(String),
    /// `{leader_id}`: the leader's id in hex.
    LeaderId,
    /// `{follower_id}`: a follower's id in hex (the leader's if there is none).
    FollowerId,
    /// `{added_id}`: the id of the member added last, in hex.
    AddedId,
    /// `{lease_id}`: the id (hex) of the lease granted last.
    LeaseId,
    /// `{x*N}`: N copies of `x`.
    Filler(usize),
    /// `{rev}`, `{rev+N}`, `{rev-N}`: the current revision plus this.
    Rev(i64),
}

/// The longest filler a script may ask for: larger values would only test argv limits.
const FILLER_BYTES_MAX: usize = 1 << 20;

impl Placeholder {
    /// Reads the text between braces.
    fn parse(inner: &str) -> Result<Self> {
        Ok(match inner {
            "all" => Self::All,
            "tmp" => Self::Tmp,
            "first_peer" => Self::FirstPeer,
            "leader_id" => Self::LeaderId,
            "follower_id" => Self::FollowerId,
            "added_id" => Self::AddedId,
            "lease_id" => Self::LeaseId,
            "rev" => Self::Rev(0),
            _ => {
                if let Some(offset) = inner.strip_prefix("rev") {
                    let parsed = match offset.strip_prefix('+') {
                        Some(n) => n.parse::<i64>().ok(),
                        None => offset
                            .strip_prefix('-')
                            .and_then(|n| n.parse::<i64>().ok())
                            .map(|n| -n),
                    };
                    return parsed.map(Self::Rev).ok_or_else(|| {
                        anyhow::anyhow!("`{{rev+N}}` needs a number, got `{inner}`")
                    });
                }
                if let Some(name) = inner.strip_prefix("peer:") {
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                        bail!("`{{peer:NAME}}` needs an alphanumeric NAME, got `{inner}`");
                    }
                    Self::Peer(name.to_owned())
                } else if let Some(count) = inner.strip_prefix("x*") {
                    let count: usize = count
                        .parse()
                        .map_err(|_| anyhow::anyhow!("`{{x*N}}` needs a number, got `{inner}`"))?;
                    if count > FILLER_BYTES_MAX {
                        bail!("`{{x*N}}` is at most {FILLER_BYTES_MAX}, got {count}");
                    }
                    Self::Filler(count)
                } else {
                    bail!("unknown placeholder `{{{inner}}}`");
                }
            }
        })
    }
}

/// Replaces every placeholder in `text` with `resolve`'s answer for it.
///
/// # Errors
///
/// If a brace is not closed, a placeholder is unknown, or `resolve` fails (a value the run does
/// not have, such as `{added_id}` before any member was added).
pub fn expand(
    text: &str,
    resolve: &mut dyn FnMut(&Placeholder) -> Result<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            bail!("unclosed `{{` in `{text}`");
        };
        let placeholder = Placeholder::parse(&rest[open + 1..open + close])?;
        out.push_str(&resolve(&placeholder)?);
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a command line into words like a shell: whitespace separates, `'...'` and `"..."`
/// group (and may make an empty word); no escapes.
fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => words.extend(word.take()),
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    if quote.is_some() {
        bail!("unclosed quote in `{line}`");
    }
    words.extend(word);
    Ok(words)
}

/// Parses a script (see the module docs) and checks every placeholder.
///
/// # Errors
///
/// On a line that is none of the forms, stdin before any command, an unknown tag, a command
/// with no words, an unclosed quote, or an unknown placeholder; the error names the line.
pub fn parse(script: &str) -> Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    for (index, raw) in script.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim_end();
        if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let checked = |text: &str| -> Result<()> {
            expand(text, &mut |_| Ok(String::new()))
                .map(|_| ())
                .map_err(|error| anyhow::anyhow!("script line {line}: {error}"))
        };
        if let Some(stdin) = trimmed.strip_prefix('|') {
            let Some(step) = steps.last_mut() else {
                bail!("script line {line}: stdin (`|`) before any command");
            };
            let stdin = stdin.strip_prefix(' ').unwrap_or(stdin);
            checked(stdin)?;
            step.stdin.push(stdin.to_owned());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("~ ") {
            let rest = rest.trim_start();
            let (path, body) = rest.split_once(' ').unwrap_or((rest, ""));
            if !path.starts_with("/v3") {
                bail!("script line {line}: `~ PATH JSON` needs a gateway path (/v3/...)");
            }
            let kind = Kind::Gateway(path.to_owned(), body.trim().to_owned());
            steps.push(Step::new(line, trimmed, kind));
            continue;
        }
        let mut kind = Kind::Run;
        let command = if let Some(command) = trimmed.strip_prefix("> ") {
            command
        } else if let Some(rest) = trimmed.strip_prefix("& ") {
            let Some((name, command)) = rest.trim_start().split_once(' ') else {
                bail!("script line {line}: `& NAME ARGS` needs a name and a command");
            };
            kind = Kind::Start(name.to_owned());
            command
        } else if let Some(rest) = trimmed
            .strip_prefix("? ")
            .or_else(|| trimmed.strip_prefix("! "))
        {
            let rest = rest.trim();
            let (name, text) = match rest.split_once(' ') {
                Some((name, text)) => (name, Some(text.trim().to_owned())),
                None => (rest, None),
            };
            let known = steps
                .iter()
                .any(|s| matches!(&s.kind, Kind::Start(started) if started == name));
            if !known {
                bail!("script line {line}: no `& {name} ...` before it");
            }
            let waits = trimmed.starts_with('?');
            let kind = match (waits, text) {
                (true, Some(text)) => Kind::Wait(name.to_owned(), text),
                (true, None) => bail!("script line {line}: `? NAME TEXT` needs a text"),
                (false, text) => Kind::Stop(name.to_owned(), text),
            };
            steps.push(Step::new(line, trimmed, kind));
            continue;
        } else {
            bail!(
                "script line {line}: expected `> command`, `& NAME command`, `? NAME TEXT`, \
                 `! NAME [TEXT]`, `~ PATH JSON`, `| stdin`, `#` or a blank line"
            );
        };
        let mut words =
            split_words(command).map_err(|error| anyhow::anyhow!("script line {line}: {error}"))?;
        let tags = words
            .iter()
            .take_while(|word| word.starts_with('@'))
            .count();
        let mut step = Step::new(line, "", kind);
        for tag in words.drain(..tags) {
            match tag.as_str() {
                "@multi" => step.multi = true,
                "@any-member" => step.any_member = true,
                "@snapshot" => step.snapshot = true,
                "@retry-unhealthy" => step.retry_unhealthy = true,
                "@no-header" => step.no_header = true,
                other => bail!("script line {line}: unknown tag `{other}`"),
            }
        }
        if words.is_empty() {
            bail!("script line {line}: a command needs at least one word");
        }
        for word in &words {
            checked(word)?;
        }
        step.text = command
            .split_whitespace()
            .skip(tags)
            .collect::<Vec<_>>()
            .join(" ");
        if let Kind::Start(name) = &step.kind {
            step.text = format!("& {name} {}", step.text);
        }
        step.args = words;
        steps.push(step);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_take_their_tags_quoted_words_and_stdin_lines() -> Result<()> {
        let steps = parse(
            "# a comment\n\n> put \"\" 'two words' -w json\n> @multi @any-member txn -w json\n| val(\"a\") = \"1\"\n|\n| put a 2\n",
        )?;
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[0].args, ["put", "", "two words", "-w", "json"]);
        assert_eq!(steps[0].line, 3);
        assert!(!steps[0].multi && steps[0].stdin.is_empty());
        assert_eq!(steps[1].args, ["txn", "-w", "json"]);
        assert!(steps[1].multi && steps[1].any_member && !steps[1].snapshot);
        assert!(!steps[1].retry_unhealthy);
        assert_eq!(steps[1].stdin, ["val(\"a\") = \"1\"", "", "put a 2"]);
        assert_eq!(steps[1].text, "txn -w json");
        Ok(())
    }

    #[test]
    fn malformed_scripts_are_refused_with_their_line() {
        for (script, expected) in [
            ("| orphan\n", "line 1: stdin"),
            ("> @nope get a\n", "line 1: unknown tag"),
            ("\n> get {nope}\n", "line 2: unknown placeholder"),
            ("> get 'a\n", "line 1: unclosed quote"),
            ("> @multi\n", "line 1: a command needs"),
            ("get a\n", "line 1: expected"),
            ("> put a {x*abc}\n", "line 1: `{x*N}` needs a number"),
            ("> put a {x\n", "line 1: unclosed `{`"),
            ("! w\n", "line 1: no `& w ...` before it"),
            ("& w\n", "line 1: `& NAME ARGS` needs"),
            ("~ kv/range {}\n", "line 1: `~ PATH JSON` needs"),
            ("& w watch a\n? w\n", "line 2: `? NAME TEXT` needs a text"),
            (
                "> get a --rev={rev+x}\n",
                "line 1: `{rev+N}` needs a number",
            ),
        ] {
            let error = parse(script).expect_err(script).to_string();
            assert!(error.contains(expected), "{script:?}: {error}");
        }
    }

    #[test]
    fn gateway_steps_take_their_json_literally() -> Result<()> {
        let steps = parse("~ /v3/kv/range {\"key\": \"{x}\"}\n~ /v3/maintenance/status\n")?;
        assert_eq!(
            steps[0].kind,
            Kind::Gateway("/v3/kv/range".into(), "{\"key\": \"{x}\"}".into())
        );
        assert_eq!(
            steps[1].kind,
            Kind::Gateway("/v3/maintenance/status".into(), String::new())
        );
        Ok(())
    }

    #[test]
    fn background_commands_are_started_waited_for_and_stopped_by_name() -> Result<()> {
        let steps = parse(
            "& w1 watch a --rev={rev+1}\n| watch b\n> put a 1\n? w1 PUT\n! w1 end of it\n& w2 elect e p\n! w2\n",
        )?;
        assert_eq!(steps[0].kind, Kind::Start("w1".into()));
        assert_eq!(steps[0].args, ["watch", "a", "--rev={rev+1}"]);
        assert_eq!(steps[0].stdin, ["watch b"]);
        assert_eq!(steps[0].text, "& w1 watch a --rev={rev+1}");
        assert_eq!(steps[1].kind, Kind::Run);
        assert_eq!(steps[2].kind, Kind::Wait("w1".into(), "PUT".into()));
        assert_eq!(
            steps[3].kind,
            Kind::Stop("w1".into(), Some("end of it".into()))
        );
        assert_eq!(steps[5].kind, Kind::Stop("w2".into(), None));
        assert!(steps[3].args.is_empty());
        let mut seen = Vec::new();
        expand("{rev}{rev+2}{rev-3}", &mut |p| {
            seen.push(p.clone());
            Ok(String::new())
        })?;
        assert_eq!(
            seen,
            [
                Placeholder::Rev(0),
                Placeholder::Rev(2),
                Placeholder::Rev(-3)
            ]
        );
        Ok(())
    }

    #[test]
    fn expand_replaces_each_placeholder_with_its_value() -> Result<()> {
        let mut seen = Vec::new();
        let text = expand("--endpoints={all} {peer:new1} {x*3}{tmp}/s", &mut |p| {
            seen.push(p.clone());
            Ok(match p {
                Placeholder::All => "A".to_owned(),
                Placeholder::Filler(n) => "x".repeat(*n),
                _ => "_".to_owned(),
            })
        })?;
        assert_eq!(text, "--endpoints=A _ xxx_/s");
        assert_eq!(
            seen,
            [
                Placeholder::All,
                Placeholder::Peer("new1".into()),
                Placeholder::Filler(3),
                Placeholder::Tmp
            ]
        );
        Ok(())
    }

    #[test]
    fn the_shipped_script_parses_and_names_only_etcdctl_commands() -> Result<()> {
        let known = [
            "put",
            "get",
            "del",
            "txn",
            "compaction",
            "lease",
            "member",
            "endpoint",
            "alarm",
            "defrag",
            "snapshot",
            "move-leader",
            "watch",
            "lock",
            "elect",
            "user",
            "role",
            "auth",
        ];
        let steps = parse(SCRIPT)?;
        assert!(steps.len() >= 60, "only {} commands", steps.len());
        for step in steps.iter().filter(|s| !s.args.is_empty()) {
            // Global flags may come first (`--user NAME:PASSWORD put ...`).
            let mut args = step.args.iter();
            let mut command = args.next();
            while let Some(flag) = command.filter(|a| a.starts_with("--")) {
                if !flag.contains('=') {
                    args.next();
                }
                command = args.next();
            }
            let command = command.map_or("", String::as_str);
            assert!(
                known.contains(&command),
                "line {}: `{command}` is not a command this script covers",
                step.line,
            );
        }
        Ok(())
    }
}
