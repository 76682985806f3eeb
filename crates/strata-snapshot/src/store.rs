//! The node's snapshot store side of a [`Receiver`]: the installed set and `CURRENT`, sets made
//! locally ([`local_dir`](Receiver::local_dir), [`adopt`](Receiver::adopt)), pinned sets, and
//! the removal of sets no longer used.

use std::fs::File;
use std::path::{Path, PathBuf};

use prost::Message;
use strata_fs::{IoError, rename_durable};

use crate::error::{Error, Result};
use crate::meta::{META_FILE, SnapshotMeta, check_name};
use crate::receiver::Receiver;

impl Receiver {
    /// Removes every set but `current` and the pinned ones.
    pub(crate) fn remove_unused(&self, current: u64) -> Result<()> {
        let snapshots = self.root.join("snapshots");
        let Ok(list) = std::fs::read_dir(&snapshots) else {
            return Ok(());
        };
        for item in list {
            let item = item.map_err(IoError::with("list", &snapshots))?;
            let id = item
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| id == current || self.pinned.contains(&id)) {
                continue;
            }
            // Garbage: failing to remove it now is not worth failing the install over (the
            // next install tries again).
            let _ = std::fs::remove_dir_all(item.path());
        }
        Ok(())
    }

    /// Keeps the sets `ids` (besides the current one) until the next call: a sender is still
    /// reading them. Sets no longer pinned and not current are removed now.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn pin(&mut self, ids: &[u64]) -> Result<()> {
        if self.pinned == ids {
            return Ok(());
        }
        self.pinned = ids.to_vec();
        let current = self.installed()?.map(|(meta, _)| meta.id);
        match current {
            Some(current) => self.remove_unused(current),
            None => Ok(()),
        }
    }

    /// The directory of installed (or pinned) set `id`.
    pub fn set_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    /// An empty directory for a snapshot made locally: write its files there, then
    /// [`adopt`](Self::adopt) them. What it held before is removed.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn local_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("local");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(IoError::with("remove", &dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(IoError::with("create", &dir))?;
        Ok(dir)
    }

    /// Installs the set made in [`local_dir`](Self::local_dir), described by `meta` (see
    /// [`describe`]), as the current snapshot: its files are fsynced and the directory moved
    /// in whole, as a received set would be. A set older than the installed one (by
    /// `last_index`) is not installed; returns whether it was.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Invalid`] for a file name that is not a plain name.
    ///
    /// [`describe`]: crate::describe
    pub fn adopt(&mut self, meta: &SnapshotMeta) -> Result<bool> {
        let dir = self.root.join("local");
        if let Some((current, _)) = self.installed()?
            && current.last_index >= meta.last_index
        {
            std::fs::remove_dir_all(&dir).map_err(IoError::with("remove", &dir))?;
            return Ok(false);
        }
        for info in &meta.files {
            check_name(&info.name)?;
            if info.name == META_FILE {
                return Err(Error::Invalid("a snapshot file cannot be named `meta`"));
            }
            let path = dir.join(&info.name);
            let file = File::open(&path).map_err(IoError::with("open", &path))?;
            strata_fs::sync_file(&file, &path)?;
        }
        // The metadata durable, and with the directory fsync that ends the replace, the
        // names of the files written into it.
        strata_fs::atomic_replace(&dir.join(META_FILE), &meta.encode_to_vec())?;
        self.commit(&dir, meta)?;
        Ok(true)
    }

    /// Moves the complete set in `from` (`staging` or `local`, a directory of the root) to
    /// `snapshots/ID/`, points `CURRENT` at it, and removes the sets no longer used: the one
    /// install sequence of [`install`](Self::install) and [`adopt`](Self::adopt).
    ///
    /// The caller has made the set durable where it is: every file fsynced, `meta` written,
    /// and `from` itself fsynced, so that the names of its files survive a crash.
    ///
    /// Why a crash at any step leaves a complete set current (the old one or this one):
    ///
    /// - Until `CURRENT` is replaced it names the old set, and nothing here touches that set
    ///   before then (`snapshots/ID` is not its directory: a set is installed only if it is
    ///   newer than the current one, and a newer snapshot has a new id). A crash before then
    ///   leaves this set in `from` (a staged set is found complete and installed again at
    ///   open; a local one is garbage that the next [`local_dir`](Self::local_dir) removes)
    ///   or in `snapshots/ID` unnamed (garbage that the next install removes, or that
    ///   installing the same id again replaces).
    /// - The rename is durable (its directory fsynced, with the root's, which loses `from`)
    ///   before `CURRENT` names the set: after a crash, a `CURRENT` that names it finds it.
    /// - Replacing `CURRENT` is the commit point, atomic and durable when it returns:
    ///   temporary file fsynced, renamed over `CURRENT`, root fsynced.
    /// - Old sets are removed only after that, once nothing names them.
    ///
    /// The root is fsynced by the rename and again by the replace, which is why neither
    /// caller syncs it once more.
    pub(crate) fn commit(&self, from: &Path, meta: &SnapshotMeta) -> Result<()> {
        // Both callers checked this just before; a store never goes back to an older set.
        debug_assert!(
            self.installed()
                .ok()
                .flatten()
                .is_none_or(|(current, _)| current.last_index < meta.last_index),
            "installing set {} (last index {}) over a set at least as new",
            meta.id,
            meta.last_index
        );
        let id = meta.id;
        let snapshots = self.root.join("snapshots");
        std::fs::create_dir_all(&snapshots).map_err(IoError::with("create", &snapshots))?;
        let target = snapshots.join(id.to_string());
        if target.exists() {
            // Garbage from a crash before `CURRENT` named it, unless it is the current set:
            // removing that would leave `CURRENT` naming nothing until the replace below.
            if self
                .installed()?
                .is_some_and(|(current, _)| current.id == id)
            {
                return Err(Error::Invalid(
                    "a newer snapshot must have a new id: this one is the installed set's",
                ));
            }
            std::fs::remove_dir_all(&target).map_err(IoError::with("remove", &target))?;
        }
        rename_durable(from, &target)?;
        // The commit point: CURRENT names the new set.
        strata_fs::atomic_replace(&self.root.join("CURRENT"), id.to_string().as_bytes())?;
        self.remove_unused(id)
    }

    /// The installed snapshot and its directory, if any.
    ///
    /// # Errors
    ///
    /// I/O errors (reading `CURRENT` or the set's metadata fails other than by `CURRENT` not
    /// existing, which means no set was ever installed); [`Error::Corruption`] for a
    /// `CURRENT` that does not hold a set id, one that names a set that is not there, or
    /// metadata that does not decode.
    pub fn installed(&self) -> Result<Option<(SnapshotMeta, PathBuf)>> {
        let current = self.root.join("CURRENT");
        let text = match std::fs::read(&current) {
            Ok(text) => text,
            // The store has never installed a set. Any other failure is not "no set": a
            // caller that took it for one would start from nothing, or install an older set.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(IoError::new("read", current, e).into()),
        };
        let Some(id) = std::str::from_utf8(&text)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
        else {
            return Err(Error::Corruption {
                path: current,
                reason: "CURRENT does not hold a snapshot id",
            });
        };
        let dir = self.set_dir(id);
        let meta_path = dir.join(META_FILE);
        let bytes = match std::fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Corruption {
                    path: current,
                    reason: "CURRENT names a snapshot set that is not there",
                });
            }
            Err(e) => return Err(IoError::new("read", meta_path, e).into()),
        };
        let meta = SnapshotMeta::decode(bytes.as_slice()).map_err(|_| Error::Corruption {
            path: meta_path,
            reason: "installed snapshot metadata does not decode",
        })?;
        Ok(Some((meta, dir)))
    }
}
