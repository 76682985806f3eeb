//! Member and cluster ids computed as etcd computes them, so that the same flags give the same
//! ids under either binary (and `member list` output can be compared line for line).

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};

/// The first 8 bytes of the SHA-1 of `bytes`, big-endian: how etcd turns a hash into an id.
fn sha1_prefix_u64(bytes: &[u8]) -> u64 {
    let hash = digest(&SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(prefix)
}

/// The id of a member bootstrapped from `--initial-cluster`: etcd's
/// `membership.computeMemberId(peerURLs, token, nil)`, i.e. SHA-1 over the sorted peer URLs
/// concatenated, then the cluster token, first 8 bytes big-endian.
///
/// It is 0 with probability 2^-64; 0 means "no node" to Raft, and
/// [`ServerConfig::from_args`](super::ServerConfig::from_args) refuses it as etcd does
/// ("cannot use 0 as member id"), so a validated configuration never holds a 0 id.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    sha1_prefix_u64(&member_id_input(peer_urls, token, None))
}

/// The id etcd gives a member added at run time (`MemberAdd`): the same hash as [`member_id`]
/// with an empty cluster token and the time of the request appended as decimal Unix seconds
/// (etcd's `NewMember("", urls, "", &now)`). The caller must refuse or retry a 0 id, and one
/// that is already taken.
pub fn added_member_id(peer_urls: &[String], unix_secs: i64) -> u64 {
    sha1_prefix_u64(&member_id_input(peer_urls, "", Some(unix_secs)))
}

fn member_id_input(peer_urls: &[String], token: &str, unix_secs: Option<i64>) -> Vec<u8> {
    let mut sorted: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut input = sorted.concat().into_bytes();
    input.extend_from_slice(token.as_bytes());
    if let Some(secs) = unix_secs {
        input.extend_from_slice(secs.to_string().as_bytes());
    }
    input
}

/// The cluster id of a cluster bootstrapped with these members: etcd's `RaftCluster.genID`,
/// SHA-1 over the member ids sorted ascending, 8 bytes big-endian each, first 8 bytes
/// big-endian. The token is not hashed again: it is already in every member id.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut sorted = member_ids.to_vec();
    sorted.sort_unstable();
    let bytes: Vec<u8> = sorted.iter().flat_map(|id| id.to_be_bytes()).collect();
    sha1_prefix_u64(&bytes)
}
