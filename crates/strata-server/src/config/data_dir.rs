//! The data directory's checks at start: it exists (made private, as etcd makes it), is a
//! directory and can be written.

use std::fs;
use std::io;
use std::path::Path;

use super::ConfigError;

/// Makes sure the data directory exists (created with mode 0700 as etcd creates it), is a
/// directory and can be written, by creating and removing a probe file in it. A directory
/// open to others is only warned about, as etcd does.
pub(super) fn prepare_data_dir(dir: &Path) -> Result<(), ConfigError> {
    let unusable = |action, source| ConfigError::DataDirUnusable {
        path: dir.to_owned(),
        action,
        source,
    };
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(ConfigError::DataDirNotDir {
                path: dir.to_owned(),
            });
        }
        Ok(meta) => warn_if_open_to_others(dir, &meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|e| unusable("create it", e))?;
        }
        Err(e) => return Err(unusable("read it", e)),
    }
    let probe = dir.join(".strata-write-probe");
    fs::write(&probe, b"").map_err(|e| unusable("write in it", e))?;
    fs::remove_file(&probe).map_err(|e| unusable("remove a file in it", e))?;
    Ok(())
}

#[cfg(unix)]
fn warn_if_open_to_others(dir: &Path, meta: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{mode:o}"),
            "the data directory is open to other users; 0700 is recommended"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_open_to_others(_dir: &Path, _meta: &fs::Metadata) {}
