//! A small file system for a member's data directory (a tmpfs of a given size, mounted as
//! root), and a filler file that takes its free space, for tests of a full disk.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory; unmounted when dropped (after the members using it are
/// gone: drop it after their cluster).
#[derive(Debug)]
pub struct SmallDisk {
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `path` (created).
    ///
    /// # Errors
    ///
    /// What `mount` said (not root, say).
    pub fn mount(path: &Path, mib: u64) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// The bytes still free on it.
    pub fn available(&self) -> u64 {
        strata_fs::available_bytes(&self.path).expect("statvfs of the small disk")
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Writes a filler file until `left` bytes are free (or fewer, if others write meanwhile).
    pub fn fill_to(&self, left: u64) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("open the filler");
        let chunk = vec![0x5a; 1 << 20];
        loop {
            let free = self.available();
            if free <= left {
                return;
            }
            let n = usize::try_from((free - left).min(chunk.len() as u64)).expect("a chunk");
            f.write_all(&chunk[..n]).expect("write the filler");
        }
    }

    /// Removes the filler.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a member still dying may hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
