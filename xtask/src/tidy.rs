//! The tidy checks: repository-wide rules that no compiler or linter enforces.
//!
//! They are `#[test]`s named `tidy_*`, so `cargo test` runs them with everything else and
//! `cargo test -p xtask tidy` runs them alone. Each check is a pure function over strings or
//! parsed `cargo metadata`, tested below on small bad inputs so that we know it can fail; the
//! `tidy_*` tests only gather the real repository's files and report what those functions find.
//!
//! The rules:
//!
//! - **Layer order.** `docs/architecture.md` lists the layers under `## Layers` as a numbered list
//!   of backticked crate names. Every `strata-*` workspace crate must be in that list, and may
//!   depend (normal, dev or build) only on workspace crates with a smaller number. A crate's
//!   dev-dependency on itself (to turn a feature on in its own tests) is allowed; `xtask` is not a
//!   layer and may depend on anything. A dev-dependency on an unpublished (`publish = false`)
//!   workspace crate that is not a layer, such as `bench-support`, is allowed too: such a crate
//!   is test or bench support that no user of a layer ever compiles.
//! - **Crate docs.** Each `crates/*/src/lib.rs` (or `src/main.rs` for a binary-only crate) starts
//!   with `//!` docs: its first non-blank line begins with `//!`.
//! - **Format docs point at code.** Each `docs/formats/*.md` names at least one codec file as a
//!   backticked path `crates/<...>.rs`, and every such path exists.
//! - **Durable steps go through `strata-fs`.** No source file under `crates/*/src` outside
//!   `strata-fs` calls `sync_all`, `sync_data`, `fs::rename` or `fs::hard_link`: those steps live
//!   in `strata-fs`, where each has a failpoint.
//! - **Files stay readable.** No source file under `crates/*/src` is over
//!   [`SOURCE_LINES_MAX`] lines, except the ones in [`SOURCE_LINES_EXEMPT`].

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{cargo, workspace_root};

/// A workspace package, reduced to what the layer check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pkg {
    /// The package name, as in its `Cargo.toml`.
    name: String,
    /// Every declared dependency of any kind, including target-specific ones.
    deps: Vec<Dep>,
    /// Whether the package may be published (`publish = false` in its `Cargo.toml` says no).
    publish: bool,
}

/// One dependency declaration of a [`Pkg`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dep {
    /// The depended-on package's real name (not a `rename`).
    name: String,
    /// `cargo metadata`'s kind: `None` for a normal dependency, `Some("dev")`, `Some("build")`.
    kind: Option<String>,
}

/// Where the layer order is written down; named in failure messages so the reader knows where to
/// look.
const ARCHITECTURE_MD: &str = "docs/architecture.md";

/// The heading of the section that holds the numbered layer list.
const LAYERS_HEADING: &str = "## Layers";

/// Reads the layer list from the architecture document: the backticked crate names of the
/// numbered list under `## Layers`, bottom layer first (layer `n` is at index `n - 1`).
///
/// # Errors
///
/// If the section is missing or holds no list, an item has no backticked name, the numbers are
/// not `1, 2, 3, ...` in order, or a crate appears twice: each would make the order ambiguous.
fn parse_layers(architecture: &str) -> Result<Vec<String>> {
    let mut lines = architecture.lines();
    lines
        .by_ref()
        .find(|line| line.trim_end() == LAYERS_HEADING)
        .with_context(|| format!("no `{LAYERS_HEADING}` heading in {ARCHITECTURE_MD}"))?;
    let mut layers: Vec<String> = Vec::new();
    for line in lines.take_while(|line| !line.starts_with("# ") && !line.starts_with("## ")) {
        let Some((number, item)) = numbered_item(line) else {
            continue;
        };
        let expected = layers.len() + 1;
        ensure!(
            number == expected,
            "{ARCHITECTURE_MD}: layer item numbered {number}, expected {expected}: {line:?}"
        );
        let name = item
            .strip_prefix('`')
            .and_then(|rest| rest.split_once('`'))
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty())
            .with_context(|| {
                format!(
                    "{ARCHITECTURE_MD}: layer item does not start with a `crate-name`: {line:?}"
                )
            })?;
        ensure!(
            !layers.iter().any(|layer| layer == name),
            "{ARCHITECTURE_MD}: `{name}` is listed twice under `{LAYERS_HEADING}`"
        );
        layers.push(name.to_owned());
    }
    ensure!(
        !layers.is_empty(),
        "{ARCHITECTURE_MD}: no numbered list under `{LAYERS_HEADING}`"
    );
    Ok(layers)
}

/// Splits a Markdown ordered-list line `12. rest` into `(12, "rest")`.
fn numbered_item(line: &str) -> Option<(usize, &str)> {
    let (number, rest) = line.trim_start().split_once(". ")?;
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((number.parse().ok()?, rest.trim_start()))
}

/// Reads the workspace packages and their dependencies out of
/// `cargo metadata --format-version 1 --no-deps` output, where `packages` holds exactly the
/// workspace members.
///
/// # Errors
///
/// If the JSON does not have the documented shape.
fn packages_from_metadata(metadata: &Value) -> Result<Vec<Pkg>> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: no `packages` array")?;
    packages
        .iter()
        .map(|package| {
            let name = package["name"]
                .as_str()
                .context("cargo metadata: a package without a `name`")?;
            let deps = package["dependencies"]
                .as_array()
                .with_context(|| format!("cargo metadata: {name} has no `dependencies` array"))?
                .iter()
                .map(|dep| {
                    Ok(Dep {
                        name: dep["name"]
                            .as_str()
                            .with_context(|| {
                                format!("cargo metadata: a dependency of {name} without a `name`")
                            })?
                            .to_owned(),
                        kind: dep["kind"].as_str().map(str::to_owned),
                    })
                })
                .collect::<Result<_>>()?;
            // `cargo metadata` gives `publish: null` for "any registry" and a list of the
            // registries allowed otherwise: `publish = false` is the empty list.
            let publish = package["publish"]
                .as_array()
                .is_none_or(|registries| !registries.is_empty());
            Ok(Pkg {
                name: name.to_owned(),
                deps,
                publish,
            })
        })
        .collect()
}

/// Every breach of the layer rule, one message per offending crate or edge.
///
/// `layers` is the list from [`parse_layers`]; `packages` are the workspace members. Only
/// `strata-*` packages are layers; dependencies outside the workspace are not this check's
/// business.
fn layer_violations(layers: &[String], packages: &[Pkg]) -> Vec<String> {
    let layer_of = |name: &str| layers.iter().position(|layer| layer == name).map(|i| i + 1);
    let members: HashSet<&str> = packages.iter().map(|pkg| pkg.name.as_str()).collect();
    let support: HashSet<&str> = packages
        .iter()
        .filter(|pkg| !pkg.publish && !pkg.name.starts_with("strata-"))
        .map(|pkg| pkg.name.as_str())
        .collect();
    let mut violations = Vec::new();
    for pkg in packages
        .iter()
        .filter(|pkg| pkg.name.starts_with("strata-"))
    {
        let Some(layer) = layer_of(&pkg.name) else {
            violations.push(format!(
                "{} is a workspace crate but is not in the `{LAYERS_HEADING}` list of \
                 {ARCHITECTURE_MD}: add it at the layer it belongs to",
                pkg.name
            ));
            continue;
        };
        for dep in &pkg.deps {
            // A self dev-dependency only switches features on for the crate's own tests.
            if dep.name == pkg.name || !members.contains(dep.name.as_str()) {
                continue;
            }
            // Unpublished support crates (bench helpers) may serve any layer's tests and benches.
            if dep.kind.as_deref() == Some("dev") && support.contains(dep.name.as_str()) {
                continue;
            }
            let as_kind = match dep.kind.as_deref() {
                Some(kind) => format!(" (as a {kind}-dependency)"),
                None => String::new(),
            };
            let violation = match layer_of(&dep.name) {
                Some(dep_layer) if dep_layer < layer => continue,
                Some(dep_layer) => format!(
                    "{} (layer {layer}) depends on {} (layer {dep_layer}){as_kind}: a crate may \
                     depend only on layers below it ({ARCHITECTURE_MD})",
                    pkg.name, dep.name
                ),
                None => format!(
                    "{} (layer {layer}) depends on {}{as_kind}, which is not a layer: a crate may \
                     depend only on layers below it ({ARCHITECTURE_MD})",
                    pkg.name, dep.name
                ),
            };
            // The same edge can be declared twice (say, normal and dev); report it once.
            if !violations.contains(&violation) {
                violations.push(violation);
            }
        }
    }
    violations
}

/// Whether a crate root opens with crate docs: its first non-blank line starts with `//!`.
fn has_crate_docs(source: &str) -> bool {
    source
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("//!"))
}

/// The contents of every Markdown code span in `text`, fenced blocks included.
///
/// A span opens with a run of backticks and closes at the next run of the same length, as in
/// CommonMark; so a fenced block is one span and the backticks inside it open nothing.
fn code_spans(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let run_end = |mut at: usize| {
        while at < bytes.len() && bytes[at] == b'`' {
            at += 1;
        }
        at
    };
    let mut spans = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'`' {
            at += 1;
            continue;
        }
        let open_end = run_end(at);
        let run = open_end - at;
        at = open_end;
        let mut scan = open_end;
        while scan < bytes.len() {
            if bytes[scan] != b'`' {
                scan += 1;
                continue;
            }
            let close_end = run_end(scan);
            if close_end - scan == run {
                // Backticks are ASCII, so both ends are char boundaries.
                spans.push(&text[open_end..scan]);
                at = close_end;
                break;
            }
            scan = close_end;
        }
        // An unmatched run is literal text; scanning resumes just after it.
    }
    spans
}

/// The codec files a format document names: backticked paths `crates/<...>.rs`, in order of first
/// mention.
fn codec_paths(doc: &str) -> Vec<&str> {
    let mut paths: Vec<&str> = Vec::new();
    for span in code_spans(doc) {
        let span = span.trim();
        let is_codec_path = span
            .strip_prefix("crates/")
            .and_then(|rest| rest.strip_suffix(".rs"))
            .is_some_and(|middle| !middle.is_empty())
            && !span.contains(char::is_whitespace);
        if is_codec_path && !paths.contains(&span) {
            paths.push(span);
        }
    }
    paths
}

/// What is wrong with one format document: it names no codec file, or names one that `exists`
/// says is not there. `doc_path` is only for the messages.
fn format_doc_problems(doc_path: &str, doc: &str, exists: impl Fn(&str) -> bool) -> Vec<String> {
    let paths = codec_paths(doc);
    if paths.is_empty() {
        return vec![format!(
            "{doc_path} names no codec file: point at the code that implements the format with \
             a backticked path such as `crates/<crate>/src/<file>.rs`"
        )];
    }
    paths
        .into_iter()
        .filter(|path| !exists(path))
        .map(|path| format!("{doc_path} names `{path}`, which does not exist"))
        .collect()
}

/// The calls that only `strata-fs` may make: each is a durable step that must have a failpoint.
const DURABLE_CALLS: &[&str] = &["sync_all", "sync_data", "fs::rename", "fs::hard_link"];

/// The crate that owns the durable steps, as its directory under `crates/`.
const DURABLE_STEPS_CRATE: &str = "crates/strata-fs/";

/// Every line of `source` (a file at `path`) that makes one of the [`DURABLE_CALLS`] outside
/// `strata-fs`. Comment lines do not count: docs may name the calls they replace.
fn durable_call_problems(path: &str, source: &str) -> Vec<String> {
    if path.starts_with(DURABLE_STEPS_CRATE) {
        return Vec::new();
    }
    let mut problems = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for call in DURABLE_CALLS {
            if contains_token(code, call) {
                problems.push(format!(
                    "{path}:{}: `{call}` outside strata-fs: use strata_fs::{{sync_file, \
                     sync_file_data, rename_durable, hard_link, truncate_synced}} so the step has \
                     a failpoint",
                    number + 1
                ));
            }
        }
    }
    problems
}

/// Whether `token` occurs in `code` as a whole path or name: not preceded or followed by an
/// identifier character, so `strata_fs::rename_durable` is not `fs::rename` and `fsync_all_files`
/// is not `sync_all`.
fn contains_token(code: &str, token: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(token).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + token.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// The most lines a source file under `crates/*/src` may have: past this a file holds more than
/// one job and should be split into modules.
const SOURCE_LINES_MAX: usize = 1_000;

/// The files allowed past [`SOURCE_LINES_MAX`], each with the reason.
const SOURCE_LINES_EXEMPT: &[(&str, &str)] = &[(
    "crates/strata-raft/src/raft.rs",
    "the Raft core's state machine: one `step` over every message type reads best in one place",
)];

/// A problem if `source` (a file at `path`) is longer than [`SOURCE_LINES_MAX`] lines and not
/// exempt.
fn source_length_problem(path: &str, source: &str) -> Option<String> {
    let lines = source.lines().count();
    let exempt = SOURCE_LINES_EXEMPT.iter().any(|(file, _)| *file == path);
    (lines > SOURCE_LINES_MAX && !exempt).then(|| {
        format!(
            "{path} has {lines} lines (at most {SOURCE_LINES_MAX}): split it into modules with \
             one job each"
        )
    })
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for path in sorted_entries(dir, |_| true)? {
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

/// Every `crates/*/src/**/*.rs` file, as a path relative to the workspace root with `/`
/// separators, and its contents.
fn crate_sources(root: &Path) -> Result<Vec<(String, String)>> {
    let crates = sorted_entries(&root.join("crates"), |path| {
        path.join("Cargo.toml").is_file()
    })?;
    let mut sources = Vec::new();
    for krate in crates {
        for file in rust_files(&krate.join("src"))? {
            let relative = file
                .strip_prefix(root)
                .with_context(|| format!("{} is outside the workspace", file.display()))?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = fs::read_to_string(&file)
                .with_context(|| format!("could not read {}", file.display()))?;
            sources.push((relative, text));
        }
    }
    Ok(sources)
}

/// Fails with every problem listed, so one run shows all there is to fix.
fn report(check: &str, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "tidy: {check}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    )
}

/// The workspace members, from `cargo metadata` run at the workspace root.
fn workspace_packages(root: &Path) -> Result<Vec<Pkg>> {
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("could not run `cargo metadata`")?;
    ensure!(
        output.status.success(),
        "`cargo metadata` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed invalid JSON")?;
    packages_from_metadata(&metadata)
}

/// The entries of `dir` that `keep` accepts, sorted so failures come out in a stable order. A
/// missing directory has no entries: git does not keep empty directories.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<std::path::PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("could not list {}", dir.display()));
        }
    };
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("could not list {}", dir.display()))?
            .path();
        if keep(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads a file whose path is relative to the workspace root.
fn read(root: &Path, relative: &str) -> Result<String> {
    fs::read_to_string(root.join(relative)).with_context(|| format!("could not read {relative}"))
}

#[test]
fn tidy_layer_order() -> Result<()> {
    let root = workspace_root()?;
    let layers = parse_layers(&read(&root, ARCHITECTURE_MD)?)?;
    let packages = workspace_packages(&root)?;
    report("layer order", &layer_violations(&layers, &packages))
}

#[test]
fn tidy_crate_roots_open_with_crate_docs() -> Result<()> {
    let root = workspace_root()?;
    let crates = sorted_entries(&root.join("crates"), |path| {
        path.join("Cargo.toml").is_file()
    })?;
    let mut problems = Vec::new();
    for krate in crates {
        let name = krate
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", krate.display()))?;
        let Some(crate_root) = ["src/lib.rs", "src/main.rs"]
            .into_iter()
            .map(|file| format!("crates/{name}/{file}"))
            .find(|relative| root.join(relative).is_file())
        else {
            problems.push(format!(
                "crates/{name} has neither src/lib.rs nor src/main.rs"
            ));
            continue;
        };
        if !has_crate_docs(&read(&root, &crate_root)?) {
            problems.push(format!(
                "{crate_root} does not open with `//!` crate docs: say what the crate is for, \
                 its invariants and what it does not do"
            ));
        }
    }
    report("crate docs", &problems)
}

#[test]
fn tidy_format_docs_name_existing_codecs() -> Result<()> {
    let root = workspace_root()?;
    let docs = sorted_entries(&root.join("docs/formats"), |path| {
        path.extension().is_some_and(|ext| ext == "md") && path.is_file()
    })?;
    let mut problems = Vec::new();
    for doc in docs {
        let name = doc
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} has no file name", doc.display()))?;
        let doc_path = format!("docs/formats/{name}");
        let text = read(&root, &doc_path)?;
        problems.extend(format_doc_problems(&doc_path, &text, |path| {
            root.join(path).is_file()
        }));
    }
    report("format docs", &problems)
}

#[test]
fn tidy_durable_steps_go_through_strata_fs() -> Result<()> {
    let root = workspace_root()?;
    let mut problems = Vec::new();
    for (path, text) in crate_sources(&root)? {
        problems.extend(durable_call_problems(&path, &text));
    }
    report("durable steps", &problems)
}

#[test]
fn tidy_source_files_stay_under_the_line_limit() -> Result<()> {
    let root = workspace_root()?;
    let problems: Vec<String> = crate_sources(&root)?
        .iter()
        .filter_map(|(path, text)| source_length_problem(path, text))
        .collect();
    report("file length", &problems)
}

/// Each check on small inputs, good and bad: the bad ones prove the check can fail.
mod tests {
    use super::*;

    fn pkg(name: &str, deps: &[(&str, Option<&str>)]) -> Pkg {
        Pkg {
            publish: true,
            name: name.to_owned(),
            deps: deps
                .iter()
                .map(|(name, kind)| Dep {
                    name: (*name).to_owned(),
                    kind: kind.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn layers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    const ARCHITECTURE: &str = "\
# Title

## Bird's-eye view

1. `not-a-layer`: in another section.

## Layers

Some prose, with a number: 2. not an item.

1. `strata-clock`: exists.
2. `strata-fs`: exists.
3. `strata-snaplog`: planned.

`xtask` is not a layer.

## Crates

1. `strata-later`: in another section.
";

    #[test]
    fn parse_layers_reads_the_numbered_list_under_the_heading_in_order() -> Result<()> {
        assert_eq!(
            parse_layers(ARCHITECTURE)?,
            layers(&["strata-clock", "strata-fs", "strata-snaplog"])
        );
        Ok(())
    }

    #[test]
    fn parse_layers_fails_on_a_missing_section_misnumbering_a_nameless_item_or_a_duplicate() {
        let bad = [
            ("# Title\n\n1. `strata-clock`\n", "no `## Layers` heading"),
            ("## Layers\n\nprose only\n", "no numbered list"),
            ("## Layers\n\n1. `a`\n3. `b`\n", "numbered 3, expected 2"),
            ("## Layers\n\n1. strata-clock\n", "does not start with"),
            ("## Layers\n\n1. `a`\n2. `a`\n", "listed twice"),
        ];
        for (doc, expected) in bad {
            let error = match parse_layers(doc) {
                Ok(layers) => panic!("parsed {doc:?} as {layers:?}"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn layer_violations_accepts_downward_edges_a_self_dev_dependency_and_xtask() {
        let packages = [
            pkg("strata-clock", &[("proptest", Some("dev"))]),
            pkg(
                "strata-fs",
                &[("strata-clock", None), ("strata-fs", Some("dev"))],
            ),
            pkg("strata-cli", &[("strata-fs", None), ("anyhow", None)]),
            pkg("xtask", &[("strata-cli", None)]),
        ];
        let violations = layer_violations(
            &layers(&["strata-clock", "strata-fs", "strata-cli"]),
            &packages,
        );
        assert_eq!(violations, Vec::<String>::new());
    }

    #[test]
    fn layer_violations_reports_every_upward_or_sideways_edge_of_any_kind() {
        let packages = [
            pkg("strata-clock", &[("strata-fs", Some("dev"))]),
            pkg(
                "strata-fs",
                &[("strata-snaplog", None), ("strata-snaplog", None)],
            ),
            pkg("strata-snaplog", &[("strata-snaplog-twin", Some("build"))]),
            pkg("strata-snaplog-twin", &[]),
        ];
        let violations = layer_violations(
            &layers(&[
                "strata-clock",
                "strata-fs",
                "strata-snaplog",
                "strata-snaplog-twin",
            ]),
            &packages,
        );
        assert_eq!(
            violations,
            [
                "strata-clock (layer 1) depends on strata-fs (layer 2) (as a dev-dependency): a \
                 crate may depend only on layers below it (docs/architecture.md)",
                "strata-fs (layer 2) depends on strata-snaplog (layer 3): a crate may depend only \
                 on layers below it (docs/architecture.md)",
                "strata-snaplog (layer 3) depends on strata-snaplog-twin (layer 4) (as a \
                 build-dependency): a crate may depend only on layers below it \
                 (docs/architecture.md)",
            ]
        );

        // Same layer is not below.
        let sideways = [pkg("strata-a", &[("strata-b", None)]), pkg("strata-b", &[])];
        let violations = layer_violations(&layers(&["strata-b", "strata-a"]), &sideways);
        assert!(violations.is_empty());
        let violations = layer_violations(&layers(&["strata-a", "strata-b"]), &sideways);
        assert_eq!(violations.len(), 1, "{violations:?}");
    }

    #[test]
    fn layer_violations_reports_unlisted_crates_and_edges_into_non_layers() {
        let packages = [
            pkg("strata-fs", &[("xtask", Some("dev"))]),
            pkg("strata-new", &[]),
            pkg("xtask", &[]),
        ];
        let violations = layer_violations(&layers(&["strata-fs"]), &packages);
        assert_eq!(violations.len(), 2, "{violations:?}");
        // `xtask` is unpublished too, but an unpublished support crate is allowed only as a
        // dev-dependency, and `xtask` here is a published one.
        assert!(violations[0].starts_with(
            "strata-fs (layer 1) depends on xtask (as a dev-dependency), which is not a layer"
        ));
        assert!(violations[1].starts_with("strata-new is a workspace crate but is not in"));
    }

    #[test]
    fn layer_violations_allows_unpublished_support_crates_only_as_dev_dependencies() {
        let support = Pkg {
            publish: false,
            ..pkg("bench-support", &[])
        };
        let packages = [
            pkg("strata-fs", &[("bench-support", Some("dev"))]),
            pkg("strata-wal", &[("bench-support", None)]),
            support,
        ];
        let violations = layer_violations(&layers(&["strata-fs", "strata-wal"]), &packages);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0]
                .starts_with("strata-wal (layer 2) depends on bench-support, which is not a layer")
        );
    }

    #[test]
    fn packages_from_metadata_reads_names_and_dependency_kinds() -> Result<()> {
        let metadata = serde_json::json!({
            "packages": [{
                "name": "strata-fs",
                "dependencies": [
                    {"name": "thiserror", "kind": null, "rename": null},
                    {"name": "strata-fs", "kind": "dev", "rename": null},
                    {"name": "strata-clock", "kind": "build", "rename": "clock"},
                ],
                "publish": null,
            }, {
                "name": "bench-support",
                "dependencies": [],
                "publish": [],
            }],
            "workspace_members": [],
        });
        assert_eq!(
            packages_from_metadata(&metadata)?,
            [
                pkg(
                    "strata-fs",
                    &[
                        ("thiserror", None),
                        ("strata-fs", Some("dev")),
                        ("strata-clock", Some("build")),
                    ],
                ),
                Pkg {
                    publish: false,
                    ..pkg("bench-support", &[])
                }
            ]
        );
        assert!(packages_from_metadata(&serde_json::json!({"version": 1})).is_err());
        Ok(())
    }

    #[test]
    fn has_crate_docs_wants_a_leading_inner_doc_comment() {
        assert!(has_crate_docs("//! A crate.\n\npub fn f() {}\n"));
        assert!(has_crate_docs("\n\n//! After blank lines.\n"));

        assert!(!has_crate_docs(""));
        assert!(!has_crate_docs("pub fn f() {}\n//! Too late.\n"));
        assert!(!has_crate_docs("// A plain comment.\n//! Too late.\n"));
        assert!(!has_crate_docs("/// An item doc.\npub fn f() {}\n"));
        assert!(!has_crate_docs("#![forbid(unsafe_code)]\n//! Too late.\n"));
    }

    #[test]
    fn code_spans_match_runs_of_equal_length() {
        assert_eq!(code_spans("a `b` c ``d`e`` `f"), ["b", "d`e"]);
        assert_eq!(
            code_spans("```text\nx `y` z\n```\nthen `w`"),
            ["text\nx `y` z\n", "w"]
        );
    }

    #[test]
    fn codec_paths_finds_backticked_rust_files_under_crates() {
        let doc = "\
The codec is `crates/strata-snaplog/src/line.rs`, helped by
[`crates/strata-fs/src/swap.rs`](../../crates/strata-fs/src/swap.rs).
Not codecs: crates/strata-fs/src/lib.rs (no backticks), `crates/x/Cargo.toml`, `src/line.rs`,
`crates/.rs`, `crates/a b.rs`, and a repeat: `crates/strata-snaplog/src/line.rs`.

```text
`crates/in/a/fence.rs`
```
";
        assert_eq!(
            codec_paths(doc),
            [
                "crates/strata-snaplog/src/line.rs",
                "crates/strata-fs/src/swap.rs"
            ]
        );
    }

    #[test]
    fn format_doc_problems_fails_on_a_missing_codec_file_or_none_named() {
        let exists = |path: &str| path == "crates/strata-snaplog/src/line.rs";

        let good = "Implemented in `crates/strata-snaplog/src/line.rs`.";
        assert!(format_doc_problems("docs/formats/good.md", good, exists).is_empty());

        let stale = "Implemented in `crates/strata-snaplog/src/line.rs` and \
                     `crates/strata-snaplog/src/gone.rs`.";
        assert_eq!(
            format_doc_problems("docs/formats/stale.md", stale, exists),
            [
                "docs/formats/stale.md names `crates/strata-snaplog/src/gone.rs`, which does not \
                 exist"
            ]
        );

        let orphan = "A format with no code behind it (see crates/strata-snaplog/src/line.rs).";
        let problems = format_doc_problems("docs/formats/orphan.md", orphan, exists);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("docs/formats/orphan.md names no codec file"));
    }

    #[test]
    fn durable_call_problems_flags_std_calls_outside_strata_fs_but_not_comments() {
        let source = "fn f(file: &File) {\n    // file.sync_all() is what this replaces\n    \
                      file.sync_data().unwrap();\n    std::fs::rename(a, b);\n}\n";
        let problems = durable_call_problems("crates/strata-wal/src/wal.rs", source);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("crates/strata-wal/src/wal.rs:3: `sync_data`"));
        assert!(problems[1].starts_with("crates/strata-wal/src/wal.rs:4: `fs::rename`"));
        assert!(durable_call_problems("crates/strata-fs/src/file.rs", source).is_empty());
        // strata-fs's own steps, and names that merely contain a call, are fine.
        let fine = "strata_fs::rename_durable(a, b)?;\nstrata_fs::hard_link(a, b)?;\n\
                    fsync_all_files(&dir);\nstrata_fs::sync_file_data(&f, p)?;\n";
        assert_eq!(
            durable_call_problems("crates/strata-lsm/src/x.rs", fine),
            Vec::<String>::new()
        );
        assert!(
            durable_call_problems("crates/strata-lsm/src/x.rs", "std::fs::hard_link(a, b)").len()
                == 1
        );
    }

    #[test]
    fn source_length_problem_flags_long_files_unless_exempt() {
        let long = "x\n".repeat(SOURCE_LINES_MAX + 1);
        let short = "x\n".repeat(SOURCE_LINES_MAX);
        assert!(source_length_problem("crates/strata-lsm/src/db.rs", &long).is_some());
        assert!(source_length_problem("crates/strata-lsm/src/db.rs", &short).is_none());
        assert!(source_length_problem(SOURCE_LINES_EXEMPT[0].0, &long).is_none());
    }

    #[test]
    fn report_lists_every_problem() {
        assert!(report("check", &[]).is_ok());
        let error = match report("check", &["one".to_owned(), "two".to_owned()]) {
            Ok(()) => panic!("two problems reported as success"),
            Err(error) => error.to_string(),
        };
        assert_eq!(error, "tidy: check: 2 problem(s):\n  - one\n  - two");
    }
}
