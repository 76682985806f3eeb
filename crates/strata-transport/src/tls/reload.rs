//! A value built from files and built again when they change: etcd reads its certificate
//! and key at every handshake, so operators rotate them (cert-manager, a cron job) without a
//! restart, and expect the next connection to use the new ones.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::TlsError;

/// What a file looked like: a change of any part means it was rewritten or replaced (an
/// atomic rename changes the inode; an in-place write, the time or the length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files
        .iter()
        .map(|path| {
            std::fs::metadata(path).ok().map(|m| Stamp {
                inode: m.ino(),
                len: m.len(),
                modified: m.modified().ok(),
            })
        })
        .collect()
}

type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A value (a TLS acceptor, a connector) built from `files` by a function, and built again
/// by [`get`](Self::get) when one of them has changed since. A build that fails (a
/// certificate written before its key, a file half-written) keeps the previous value, with a
/// warning, and is tried again at the next change.
pub struct Reloading<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    build: Build<T>,
    current: Mutex<(Vec<Option<Stamp>>, Arc<T>)>,
}

impl<T> Reloading<T> {
    /// Builds the first value; `what` names it in warnings.
    ///
    /// # Errors
    ///
    /// The first build's: a server must not start on files it cannot use.
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamped = stamps(&files);
        let value = Arc::new(build()?);
        Ok(Self {
            what,
            files,
            build: Box::new(build),
            current: Mutex::new((stamped, value)),
        })
    }

    /// The value for the next connection: the files are looked at (one `stat` each) and, if
    /// one changed, the value is built again, outside the lock.
    pub fn get(&self) -> Arc<T> {
        let now = stamps(&self.files);
        {
            let current = self.current.lock();
            if current.0 == now {
                return Arc::clone(&current.1);
            }
        }
        let built = (self.build)();
        let mut current = self.current.lock();
        match built {
            Ok(value) => {
                tracing::info!(files = ?self.files, "{}: read the changed files again", self.what);
                *current = (now, Arc::new(value));
            }
            Err(e) => {
                tracing::warn!(
                    files = ?self.files,
                    "{}: the files changed but cannot be used, keeping the previous ones: {e}",
                    self.what
                );
                current.0 = now;
            }
        }
        Arc::clone(&current.1)
    }
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_bad_one_keeps_the_previous_value() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("value");
        std::fs::write(&path, "1").expect("write");
        let builds = Arc::new(AtomicUsize::new(0));
        let reloading = {
            let (path, builds) = (path.clone(), Arc::clone(&builds));
            Reloading::new("test", vec![path.clone()], move || {
                builds.fetch_add(1, Ordering::Relaxed);
                let text = std::fs::read_to_string(&path).map_err(|e| TlsError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                text.trim().parse::<u32>().map_err(|e| TlsError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })
            .expect("first build")
        };
        assert_eq!(*reloading.get(), 1);
        assert_eq!(*reloading.get(), 1);
        assert_eq!(
            builds.load(Ordering::Relaxed),
            1,
            "unchanged files are not read"
        );
        std::fs::write(&path, "22").expect("write");
        assert_eq!(*reloading.get(), 22);
        std::fs::write(&path, "not a number").expect("write");
        assert_eq!(*reloading.get(), 22, "a bad file keeps the previous value");
        let after_bad = builds.load(Ordering::Relaxed);
        assert_eq!(*reloading.get(), 22);
        assert_eq!(
            builds.load(Ordering::Relaxed),
            after_bad,
            "tried once per change"
        );
        // A new file in the old one's place (the integration tests rename one over it).
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, "333").expect("write");
        assert_eq!(*reloading.get(), 333);
    }
}
