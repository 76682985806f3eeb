//! The crate's error type: which step failed, on which path, and why.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The step of a durable file operation that failed.
///
/// Callers use it to tell "nothing changed" (a failure before [`Step::Rename`]) from "the new
/// file is in place but its name may not be durable yet" (a failure at [`Step::SyncDir`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Opening or creating a file.
    Open,
    /// Writing bytes.
    Write,
    /// `fsync`/`fdatasync` of a file.
    Fsync,
    /// Renaming the temporary file over the target.
    Rename,
    /// Removing a file.
    Remove,
    /// `fsync` of the parent directory, which makes a create, rename or remove durable.
    SyncDir,
    /// Reading a file's metadata (its length).
    Metadata,
    /// Truncating a file.
    Truncate,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Open => "open",
            Step::Write => "write",
            Step::Fsync => "fsync",
            Step::Rename => "rename",
            Step::Remove => "remove",
            Step::SyncDir => "directory fsync",
            Step::Metadata => "metadata",
            Step::Truncate => "truncate",
        })
    }
}

/// An error from a `strata-fs` operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O step failed.
    #[error("{step} of {} failed", path.display())]
    Io {
        /// The step that failed.
        step: Step,
        /// The file (or, for [`Step::SyncDir`], the directory) it failed on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// An earlier `fsync` of this file failed. The kernel may have dropped the dirty pages and a
    /// retried `fsync` can report success for data that never reached the disk, so every later
    /// write and sync fails until the file is rewritten whole with
    /// [`SwapFile::replace`](crate::SwapFile::replace).
    #[error("{} is poisoned by an earlier failed fsync; rewrite it to recover", path.display())]
    Poisoned {
        /// The poisoned file.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(step: Step, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            step,
            path: path.into(),
            source,
        }
    }

    /// The step that failed, if this is an I/O error.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Io { step, .. } => Some(*step),
            Error::Poisoned { .. } => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `e` and its chain of causes, `: `-separated, for messages that must say everything on one
/// line (a log line, a poisoned log's cause). `Display` of this crate's errors, like most,
/// shows only the top level and leaves the causes to `source()`.
pub fn display_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
