//! The crate's error type: which step failed, on which path, and why.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

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
    /// Creating a hard link.
    Link,
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
            Step::Link => "hard link",
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

/// A plain I/O operation that failed (a read, a directory listing, a `mkdir`): what was being
/// done, on which path, and the operating system's error.
///
/// Durable steps fail with [`Error`] and its [`Step`]; everything else a layer does with files
/// fails with this, which each layer's own error type wraps (`Error::Io(IoError)`), so a message
/// always reads "`<op>` `<path>`: `<cause>`" whichever layer it comes from.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct IoError {
    /// What was being done, as a short phrase ("read", "open segment", "list directory").
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// An error for `op` on `path`.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        IoError {
            op,
            path: path.into(),
            source,
        }
    }

    /// A closure for `map_err` that makes an [`IoError`] for `op` on `path`:
    /// `std::fs::read(&path).map_err(IoError::with("read", &path))?`.
    pub fn with<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
        move |source| IoError::new(op, path, source)
    }

    /// The operating system error's kind.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
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
