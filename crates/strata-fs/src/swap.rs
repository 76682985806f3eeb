//! [`SwapFile`]: an append handle whose file can be replaced whole while it is open.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{DEFAULT_FILE_MODE, Error, Result, Step, failpoint, sync_parent_dir, write_synced};

/// How many times a rename or reopen is tried when Windows reports a transient sharing
/// violation. With the backoff below the attempts span about one second: long enough for a
/// virus scanner or indexer to let go of the file, short enough not to stall a writer for long.
const TRANSIENT_RETRIES_MAX: u32 = 10;
/// The first backoff between retries; it doubles each time, up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF_INITIAL: Duration = Duration::from_millis(2);
/// The longest single backoff between retries.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How [`SwapFile::replace`] moves the new file into place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwapStrategy {
    /// Open the new file, rename it over the target while the old handle is still open, swap
    /// handles. Atomic on Unix, where an open file can be renamed over; on Windows the rename
    /// may be refused while the handles are open, so use it only on Unix.
    RenameOver,
    /// Close the handle, rename the new file over the target, reopen it, retrying transient
    /// sharing violations. Needed on Windows, where an open file may refuse to be replaced.
    CloseAndRename,
}

impl SwapStrategy {
    /// The strategy this platform needs: [`RenameOver`](Self::RenameOver) on Unix,
    /// [`CloseAndRename`](Self::CloseAndRename) elsewhere.
    pub const fn platform_default() -> Self {
        if cfg!(unix) {
            SwapStrategy::RenameOver
        } else {
            SwapStrategy::CloseAndRename
        }
    }
}

/// Options for [`SwapFile::open`].
#[derive(Debug, Clone)]
pub struct SwapOptions {
    /// Appended to the target's file name to name the temporary file of a replace. Serf uses
    /// `.compact`; the default is `.tmp`.
    pub temp_suffix: String,
    /// Unix permission bits for the file and its replacements (before the umask).
    pub mode: u32,
    /// How a replace swaps files; defaults to [`SwapStrategy::platform_default`].
    pub strategy: SwapStrategy,
}

impl Default for SwapOptions {
    fn default() -> Self {
        Self {
            temp_suffix: ".tmp".to_owned(),
            mode: DEFAULT_FILE_MODE,
            strategy: SwapStrategy::platform_default(),
        }
    }
}

/// What [`recover_swap`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveredSwap {
    /// No temporary file: nothing to do.
    Clean,
    /// Both files existed: the temporary file was left by an interrupted replace and is removed.
    RemovedStaleTemp,
    /// Only the temporary file existed: a replace that deletes the target before renaming (as
    /// Serf's does on every platform) was interrupted after the delete. The temporary file is
    /// complete, since it was synced before the delete, and is renamed into place.
    PromotedTemp,
}

/// Finishes or rolls back a replace of `target` that a crash interrupted; see
/// [`RecoveredSwap`]. Call it before reading a file that is replaced through `temp_suffix`.
///
/// A lone temporary file is trusted to be complete. That holds for every crash of a replace
/// (this crate's or Serf's), but not if someone deletes the target by hand while a crashed
/// replace left a partial temporary file: delete both to reset.
///
/// # Errors
///
/// [`Error::Io`] if a file cannot be inspected, removed or renamed, or the directory synced.
pub fn recover_swap(target: &Path, temp_suffix: &str) -> Result<RecoveredSwap> {
    let temp = temp_path(target, temp_suffix);
    let temp_exists = exists(&temp)?;
    if !temp_exists {
        return Ok(RecoveredSwap::Clean);
    }
    if exists(target)? {
        retry_transient(|| std::fs::remove_file(&temp))
            .map_err(|e| Error::io(Step::Remove, &temp, e))?;
        sync_parent_dir(target)?;
        Ok(RecoveredSwap::RemovedStaleTemp)
    } else {
        rename_with_retry(&temp, target)?;
        sync_parent_dir(target)?;
        Ok(RecoveredSwap::PromotedTemp)
    }
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|e| Error::io(Step::Metadata, path, e))
}

/// `target` with `suffix` appended to its file name.
pub(crate) fn temp_path(target: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = target.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Renames `from` over `to`, retrying transient errors with backoff.
pub(crate) fn rename_with_retry(from: &Path, to: &Path) -> Result<()> {
    retry_transient(|| {
        failpoint::check(failpoint::RENAME)?;
        std::fs::rename(from, to)
    })
    .map_err(|e| Error::io(Step::Rename, to, e))
}

/// Runs `op` until it succeeds, fails with a non-transient error, or the retries run out.
pub(crate) fn retry_transient<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut backoff = RETRY_BACKOFF_INITIAL;
    let mut attempt = 1;
    loop {
        match op() {
            Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES_MAX => {
                // Sleeping here is backoff against another process holding the file, not
                // waiting for a condition we could observe.
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// True for the errors Windows returns while another process briefly holds a file open:
/// `ERROR_ACCESS_DENIED` (5), `ERROR_SHARING_VIOLATION` (32), `ERROR_LOCK_VIOLATION` (33).
fn is_transient(e: &io::Error) -> bool {
    cfg!(windows) && matches!(e.raw_os_error(), Some(5 | 32 | 33))
}

/// Opens `path` for appending, creating it with `mode` if needed. Returns the file and whether
/// it was created.
fn open_append(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.append(true).read(true);
    let mut create = options.clone();
    create.create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        create.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    match create.open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((options.open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// An open, append-mode handle to a file that can be replaced whole while it is open.
///
/// This is the shape of Serf's snapshot log: lines are appended during normal operation and the
/// whole file is periodically rewritten to a compact form. All writes go through the methods
/// here so the handle can be re-opened after a swap, and poisoned after a failed `fsync`.
#[derive(Debug)]
pub struct SwapFile {
    path: PathBuf,
    options: SwapOptions,
    /// `None` only between closing and reopening in [`SwapStrategy::CloseAndRename`], or after a
    /// reopen failed; every operation first tries to reopen.
    file: Option<File>,
    poisoned: bool,
    generation: u64,
    /// A replace renamed a new file into place but the directory `fsync` that makes the new
    /// name durable has not succeeded yet: a power cut could bring the old file back.
    dir_sync_pending: bool,
}

impl SwapFile {
    /// Opens `path` for appending, creating it (and syncing its directory) if it does not
    /// exist. First runs [`recover_swap`], so a replace that a crash interrupted is finished or
    /// rolled back.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if recovery, the open, or the directory sync fails.
    pub fn open(path: &Path, options: SwapOptions) -> Result<Self> {
        recover_swap(path, &options.temp_suffix)?;
        let (file, created) = retry_transient(|| open_append(path, options.mode))
            .map_err(|e| Error::io(Step::Open, path, e))?;
        if created {
            sync_parent_dir(path)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            options,
            file: Some(file),
            poisoned: false,
            generation: 0,
            dir_sync_pending: false,
        })
    }

    /// The target path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the temporary file a replace writes.
    pub fn temp_path(&self) -> PathBuf {
        temp_path(&self.path, &self.options.temp_suffix)
    }

    /// How many replaces have put a new file under the target name since open. A caller whose
    /// [`replace`](Self::replace) returned an error compares it with the value before the call
    /// to learn whether the new content is in place anyway (the error was the directory sync).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// True after a failed `fsync`, until a successful [`replace`](Self::replace).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn handle(&mut self) -> Result<&mut File> {
        if self.poisoned {
            return Err(Error::Poisoned {
                path: self.path.clone(),
            });
        }
        self.reopen_if_closed()?;
        // `reopen_if_closed` returned Ok, so the handle is there.
        self.file.as_mut().ok_or_else(|| {
            Error::io(
                Step::Open,
                &self.path,
                io::Error::other("no file handle after reopen"),
            )
        })
    }

    fn reopen_if_closed(&mut self) -> Result<()> {
        if self.file.is_none() {
            let path = &self.path;
            let mode = self.options.mode;
            let (file, _) = retry_transient(|| {
                failpoint::check(failpoint::REOPEN)?;
                open_append(path, mode)
            })
            .map_err(|e| Error::io(Step::Open, path, e))?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// Appends `bytes` at the end of the file (one `write_all`; not synced).
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] after a failed `fsync`; [`Error::Io`] with [`Step::Write`].
    pub fn append(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path.clone();
        let file = self.handle()?;
        failpoint::check(failpoint::APPEND_WRITE)
            .and_then(|()| file.write_all(bytes))
            .map_err(|e| Error::io(Step::Write, path, e))
    }

    /// `fsync`s the file's data (`fdatasync` where available). A failure poisons the handle.
    /// If an earlier [`replace`](Self::replace) could not `fsync` the directory, that is
    /// retried first.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] after an earlier failure; [`Error::Io`] with [`Step::Fsync`], or with
    /// [`Step::SyncDir`] while the directory `fsync` still fails.
    pub fn sync(&mut self) -> Result<()> {
        // After a replace whose directory fsync failed, the file's data being durable is not
        // enough: its name must be too.
        self.sync_dir_if_pending()?;
        let path = self.path.clone();
        let file = self.handle()?;
        let result = failpoint::check(failpoint::APPEND_FSYNC).and_then(|()| file.sync_data());
        if let Err(e) = result {
            self.poisoned = true;
            return Err(Error::io(Step::Fsync, path, e));
        }
        Ok(())
    }

    /// The file's current length in bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with [`Step::Metadata`].
    pub fn len(&mut self) -> Result<u64> {
        let path = self.path.clone();
        let file = self.handle()?;
        file.metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(Step::Metadata, path, e))
    }

    /// True if the file is empty.
    ///
    /// # Errors
    ///
    /// As [`len`](Self::len).
    pub fn is_empty(&mut self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Cuts the file to `len` bytes and `fsync`s it, for example to drop a torn last record
    /// before appending after it.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with [`Step::Truncate`] or [`Step::Fsync`].
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        // Make sure the append handle exists (and is not poisoned) first.
        self.handle()?;
        let path = self.path.clone();
        // An append-only handle lacks the plain write access that truncation needs on Windows,
        // so truncate through a second, ordinary write handle to the same file.
        let file = retry_transient(|| OpenOptions::new().write(true).open(&path))
            .map_err(|e| Error::io(Step::Open, &path, e))?;
        file.set_len(len)
            .map_err(|e| Error::io(Step::Truncate, &path, e))?;
        if let Err(e) = file.sync_all() {
            self.poisoned = true;
            return Err(Error::io(Step::Fsync, path, e));
        }
        Ok(())
    }

    /// Replaces the whole file with what `write` produces, while keeping this handle usable,
    /// and returns the new length.
    ///
    /// Writes and `fsync`s the temporary file ([`temp_path`](Self::temp_path)), moves it over the
    /// target with the configured [`SwapStrategy`], and `fsync`s the directory. A crash at any
    /// step leaves the complete old or the complete new file under the target name (after
    /// [`recover_swap`], which [`open`](Self::open) runs). On success the handle appends to the
    /// new file and a poisoned handle is healed, since the new file was written and synced
    /// whole.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the failed step. The handle stays usable: it appends to whichever
    /// file is under the target name, the old one if the failure came before the rename, the
    /// new one otherwise ([`generation`](Self::generation) tells which).
    pub fn replace(&mut self, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<u64> {
        let temp = self.temp_path();
        let bytes = write_synced(&temp, self.options.mode, write)?;
        let generation = self.generation;
        let swapped = match self.options.strategy {
            SwapStrategy::RenameOver => self.rename_over(&temp),
            SwapStrategy::CloseAndRename => self.close_and_rename(&temp),
        };
        if self.generation != generation {
            // The new file is under the target name: make the name durable, or remember that
            // it is not, so that `sync` cannot report success until it is.
            self.dir_sync_pending = true;
            self.sync_dir_if_pending()?;
        }
        swapped.map(|()| bytes)
    }

    fn sync_dir_if_pending(&mut self) -> Result<()> {
        if self.dir_sync_pending {
            sync_parent_dir(&self.path)?;
            self.dir_sync_pending = false;
        }
        Ok(())
    }

    fn rename_over(&mut self, temp: &Path) -> Result<()> {
        // Open the new file before the rename so that, once the rename has happened, nothing
        // can fail between it and holding a handle to the file under the target name.
        let (new_file, _) =
            open_append(temp, self.options.mode).map_err(|e| Error::io(Step::Open, temp, e))?;
        rename_with_retry(temp, &self.path)?;
        self.installed(new_file);
        Ok(())
    }

    fn close_and_rename(&mut self, temp: &Path) -> Result<()> {
        // Windows refuses to replace a file that is open without FILE_SHARE_DELETE, so close
        // ours first, as Serf learned to.
        self.file = None;
        let renamed = rename_with_retry(temp, &self.path);
        let reopened = self.reopen_if_closed();
        match (renamed, reopened) {
            (Ok(()), Ok(())) => {
                self.generation += 1;
                self.poisoned = false;
                Ok(())
            }
            (Ok(()), Err(e)) => {
                // The new file is in place; the handle will be reopened by the next operation.
                self.generation += 1;
                self.poisoned = false;
                Err(e)
            }
            // The old file is still in place and (if the reopen worked) open again.
            (Err(e), _) => Err(e),
        }
    }

    fn installed(&mut self, new_file: File) {
        self.file = Some(new_file);
        self.generation += 1;
        self.poisoned = false;
    }
}
