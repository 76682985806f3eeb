//! The directory lock: one `Wal` at a time per log, across processes.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// The name of the lock file in a log's directory.
const LOCK_FILE_NAME: &str = "LOCK";

/// Creates and locks `DIR/LOCK` for the life of the log.
pub(super) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}
