//! The log's flags: `--log-level`, `--logger` and `--log-outputs`, as etcd 3.4 reads them (the
//! `strata` binary sets its log up from them).

use std::path::PathBuf;

use super::ConfigError;

/// `--log-level`: etcd's levels (its `panic` and `fatal` are not offered: a member logs
/// nothing at them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Everything, including per-connection and per-peer detail.
    Debug,
    /// Role and leader changes, snapshot restores, compactions, links to peers breaking;
    /// and everything below (etcd's default).
    Info,
    /// What an operator should look at: a quota exceeded, a risky flag, a peer refused.
    Warn,
    /// Failures only.
    Error,
}

/// `--logger`: etcd's two loggers, by the form of their lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Logger {
    /// One JSON object per line (time, level, message, fields), for log pipelines.
    Zap,
    /// Text lines: time, level, where, message and fields.
    Capnslog,
}

/// One `--log-outputs` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard error (`default`, `stderr`).
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// Reads `--log-outputs` as etcd does: comma-separated targets, `default` being standard
/// error (etcd's journald under systemd reads a service's stderr too); each target once.
///
/// # Errors
///
/// [`ConfigError::InvalidLogOutputs`] for an empty target or a repeated one.
pub fn parse_log_outputs(text: &str) -> Result<Vec<LogOutput>, ConfigError> {
    let mut outputs = Vec::new();
    for target in text.split(',').map(str::trim) {
        let output = match target {
            "" => {
                return Err(ConfigError::InvalidLogOutputs {
                    value: text.to_owned(),
                    reason: "an empty target".to_owned(),
                });
            }
            "default" | "stderr" => LogOutput::Stderr,
            "stdout" => LogOutput::Stdout,
            path => LogOutput::File(PathBuf::from(path)),
        };
        if outputs.contains(&output) {
            return Err(ConfigError::InvalidLogOutputs {
                value: text.to_owned(),
                reason: format!("{target:?} given twice"),
            });
        }
        outputs.push(output);
    }
    Ok(outputs)
}
