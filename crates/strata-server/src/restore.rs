//! `strata snapshot restore`: turns a snapshot file (Maintenance/Snapshot, `etcdctl snapshot
//! save`) into the data dir of the first member of a new cluster (etcd's `etcdutl snapshot
//! restore`): the keys, revisions and Kvdb sessions of the snapshot, the membership of the
//! flags given, an empty Raft log.

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use strata_lsm::{Db, WriteBatch, WriteOptions};

use crate::config::ServerConfig;
use crate::proto::etcdserverpb::Member;
use crate::snapshot_file::{SnapshotFileError, unpack};
use crate::state;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target already holds a member's data.
    #[error("{0} already holds a member's data; restore into a new directory")]
    Exists(std::path::PathBuf),
    /// The snapshot file.
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    /// The storage.
    #[error("storage: {0}")]
    Storage(String),
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The store's revision.
    pub revision: i64,
    /// The members written.
    pub members: usize,
}

/// Restores `file` into `config.data_dir` for the member `config` describes.
///
/// # Errors
///
/// [`RestoreError`].
pub fn restore(file: &Path, config: &ServerConfig) -> Result<Restored, RestoreError> {
    let member_dir = config.data_dir.join("member");
    if member_dir.exists() {
        return Err(RestoreError::Exists(member_dir));
    }
    let storage = |e: &dyn std::fmt::Display| RestoreError::Storage(e.to_string());
    let unpacked = config.data_dir.join("restore.tmp");
    let _ = std::fs::remove_dir_all(&unpacked);
    let names = unpack(file, &unpacked)?;
    let tables: Vec<&String> = names.iter().filter(|n| n.as_str() != "meta").collect();
    let db = Arc::new(
        Db::open(&member_dir.join("db"), crate::state::lsm_options()).map_err(|e| storage(&e))?,
    );
    db.restore(&unpacked, &tables).map_err(|e| storage(&e))?;
    let old = state::load(&db).map_err(|e| storage(&e))?;
    let mut batch = WriteBatch::new();
    // The old cluster's members and alarms go; its keys, revisions and Kvdb sessions stay.
    for id in old.members.keys() {
        batch.put(&state::member_key(*id), &[]);
    }
    for &(member, alarm) in &old.alarms {
        batch.put(&state::alarm_key(member, alarm), &[]);
    }
    let members: Vec<Member> = config
        .initial_cluster
        .iter()
        .map(|m| Member {
            id: m.id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: false,
        })
        .collect();
    for member in &members {
        batch.put(&state::member_key(member.id), &member.encode_to_vec());
    }
    batch.put(state::CLUSTER, &config.cluster_id().to_le_bytes());
    // A new Raft log: nothing applied from it yet.
    batch.put(state::APPLIED, &0u64.to_le_bytes());
    db.write(batch, WriteOptions { sync: true })
        .map_err(|e| storage(&e))?;
    let store = strata_mvcc::Store::open(Arc::clone(&db)).map_err(|e| storage(&e))?;
    let revision = store.current_revision();
    drop(store);
    drop(db);
    let _ = std::fs::remove_dir_all(&unpacked);
    Ok(Restored {
        revision,
        members: members.len(),
    })
}
