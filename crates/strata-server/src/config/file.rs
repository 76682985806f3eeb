//! etcd's `--config-file`: a YAML file whose keys are the flags' names, read instead of the
//! command line and the environment (etcd's rule: with a file, other flags and `ETCD_*`
//! variables are ignored).
//!
//! The file becomes a command line, `--key=value` for each key set, parsed by the same clap
//! definitions as flags, so every value is checked as a flag's is. Values: strings, numbers
//! and booleans as written; a list (`log-outputs: [stderr]`) joined with commas; an empty or
//! null value leaves the flag at its default. The sections `client-transport-security` and
//! `peer-transport-security` hold the TLS flags without their prefix (`cert-file` in the peer
//! section is `--peer-cert-file`), as in etcd's file.
//!
//! Keys for etcd's flags that tune what Strata does not have (`enable-v2`, `max-wals`, ...)
//! are flags Strata takes and ignores with a warning ([`IgnoredArgs`](super::IgnoredArgs)),
//! as on the command line. Any other key that is not a flag is ignored with a note for the log
//! when its value leaves a feature off (empty, false, zero or `off`), and refused otherwise, so
//! a typo or an etcd feature Strata lacks (a discovery URL) is an error, not a member silently
//! started without it.

use std::path::Path;

use clap::{Args as _, FromArgMatches as _};
use yaml_rust2::{Yaml, YamlLoader};

use super::{ConfigError, ServerArgs};

/// The TLS sections and, for each of their keys, the flag it stands for.
const SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "client-transport-security",
        &[
            ("cert-file", "cert-file"),
            ("key-file", "key-file"),
            ("client-cert-auth", "client-cert-auth"),
            ("trusted-ca-file", "trusted-ca-file"),
            ("auto-tls", "auto-tls"),
            ("crl-file", "client-crl-file"),
            ("allowed-hostname", "client-cert-allowed-hostname"),
        ],
    ),
    (
        "peer-transport-security",
        &[
            ("cert-file", "peer-cert-file"),
            ("key-file", "peer-key-file"),
            ("client-cert-auth", "peer-client-cert-auth"),
            ("trusted-ca-file", "peer-trusted-ca-file"),
            ("auto-tls", "peer-auto-tls"),
            ("crl-file", "peer-crl-file"),
            ("allowed-cn", "peer-cert-allowed-cn"),
            ("allowed-hostname", "peer-cert-allowed-hostname"),
        ],
    ),
];

/// A scalar's text, `None` for null; lists joined with commas.
fn text(key: &str, value: &Yaml) -> Result<Option<String>, String> {
    Ok(Some(match value {
        Yaml::Null => return Ok(None),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match text(key, item)? {
                    Some(part) if !matches!(item, Yaml::Array(_) | Yaml::Hash(_)) => {
                        parts.push(part);
                    }
                    Some(_) => return Err(format!("{key}: a list of lists")),
                    None => {}
                }
            }
            parts.join(",")
        }
        Yaml::Hash(_) => return Err(format!("{key}: a mapping, where a value belongs")),
        Yaml::Alias(_) | Yaml::BadValue => return Err(format!("{key}: an unreadable value")),
    }))
}

/// Whether `value` leaves a feature off: what etcd's sample file writes for what it does not
/// use.
fn unset(value: &str) -> bool {
    matches!(value, "" | "false" | "0" | "off")
}

/// The command line etcd's YAML configuration `yaml` stands for (`--flag=value`, without a
/// program name), and a note for each key ignored.
///
/// # Errors
///
/// A reason: the text is not YAML, not a mapping, or sets a key that is not a flag Strata
/// takes (and not ignorable, see the module's documentation).
pub fn file_line(yaml: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let docs = YamlLoader::load_from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
    let top = match docs.as_slice() {
        [] => return Ok((Vec::new(), Vec::new())),
        [Yaml::Hash(top)] => top,
        [Yaml::Null] => return Ok((Vec::new(), Vec::new())),
        [_] => return Err("not a mapping of flag names to values".to_owned()),
        _ => return Err("more than one YAML document".to_owned()),
    };
    let flags: Vec<String> = ServerArgs::augment_args(clap::Command::new("strata"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut pairs: Vec<(String, Yaml)> = Vec::new();
    for (key, value) in top {
        let Yaml::String(key) = key else {
            return Err(format!("a key that is not a name: {key:?}"));
        };
        if let Some((_, names)) = SECTIONS.iter().find(|(section, _)| section == key) {
            let inner = match value {
                Yaml::Hash(inner) => inner,
                Yaml::Null => continue,
                _ => return Err(format!("{key}: not a mapping")),
            };
            for (name, value) in inner {
                let name = name.as_str().unwrap_or_default();
                let Some((_, flag)) = names.iter().find(|(n, _)| *n == name) else {
                    return Err(format!("{key}: unknown key {name:?}"));
                };
                pairs.push(((*flag).to_owned(), value.clone()));
            }
            continue;
        }
        pairs.push((key.clone(), value.clone()));
    }
    let mut line = Vec::new();
    let mut notes = Vec::new();
    for (flag, value) in pairs {
        if flag == "config-file" {
            return Err("config-file: a file cannot name another".to_owned());
        }
        let Some(value) = text(&flag, &value)? else {
            continue;
        };
        if flags.contains(&flag) {
            // Empty: the flag's default, as a null.
            if !value.is_empty() {
                line.push(format!("--{flag}={value}"));
            }
        } else if unset(&value) {
            notes.push(format!(
                "{flag}: {value:?} ignored (no such flag in Strata)"
            ));
        } else {
            return Err(format!(
                "{flag}: {value:?} is not a flag Strata takes (see `strata server --help`)"
            ));
        }
    }
    Ok((line, notes))
}

impl ServerArgs {
    /// The flags etcd's YAML configuration file at `path` sets, every other at its default
    /// (neither the command line nor `ETCD_*` variables count), and a note for each key
    /// ignored.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ConfigFile`]: the file cannot be read, is not YAML, sets a key that is
    /// not a flag Strata takes, or a value its flag refuses.
    pub fn from_config_file(path: &Path) -> Result<(ServerArgs, Vec<String>), ConfigError> {
        let error = |reason: String| ConfigError::ConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let yaml = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let (line, notes) = file_line(&yaml).map_err(error)?;
        // With a file, etcd reads no environment variable: neither does this parse.
        let command = ServerArgs::augment_args(clap::Command::new("strata").no_binary_name(true))
            .mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(&line)
            .map_err(|e| error(e.render().to_string().trim().to_owned()))?;
        let args = ServerArgs::from_arg_matches(&matches).map_err(|e| error(e.to_string()))?;
        Ok((args, notes))
    }
}
