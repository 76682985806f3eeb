//! The members of `strata dev`: etcd's own development cluster (the `Procfile` at the root of
//! the etcd repository, run with goreman), so that etcd's documentation and habits apply.

use std::path::Path;

use super::{ClusterState, ServerArgs};

/// The client and peer ports of etcd's `Procfile`: `infra1` serves clients on 2379 and peers on
/// 12380, `infra2` on 22379 and 22380, `infra3` on 32379 and 32380.
pub const DEV_PORTS: [(u16, u16); 3] = [(2379, 12380), (22379, 22380), (32379, 32380)];

/// The `Procfile`'s cluster token.
pub const DEV_CLUSTER_TOKEN: &str = "etcd-cluster-1";

/// The three members of `strata dev`, exactly as etcd's `Procfile` starts them: names
/// `infra1`..`infra3`, every URL on 127.0.0.1 with the ports of [`DEV_PORTS`], token
/// [`DEV_CLUSTER_TOKEN`], state `new`, and etcd's default heartbeat and election timeout (the
/// `Procfile` sets neither). Each member's data directory is `base_dir/<name>.etcd`, the name
/// etcd would give it in `base_dir`.
pub fn dev_members(base_dir: &Path) -> Vec<ServerArgs> {
    let peer_url = |peer: u16| format!("http://127.0.0.1:{peer}");
    let initial_cluster = DEV_PORTS
        .iter()
        .enumerate()
        .map(|(i, &(_, peer))| format!("infra{}={}", i + 1, peer_url(peer)))
        .collect::<Vec<_>>()
        .join(",");
    DEV_PORTS
        .iter()
        .enumerate()
        .map(|(i, &(client, peer))| {
            let name = format!("infra{}", i + 1);
            let client_url = format!("http://127.0.0.1:{client}");
            ServerArgs {
                data_dir: Some(base_dir.join(format!("{name}.etcd"))),
                name,
                listen_client_urls: Some(client_url.clone()),
                advertise_client_urls: Some(client_url),
                listen_peer_urls: peer_url(peer),
                initial_advertise_peer_urls: peer_url(peer),
                initial_cluster: Some(initial_cluster.clone()),
                initial_cluster_state: ClusterState::New,
                initial_cluster_token: DEV_CLUSTER_TOKEN.to_owned(),
                ..ServerArgs::default()
            }
        })
        .collect()
}
