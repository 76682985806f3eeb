//! Compiles the .proto files with protox (in Rust: no protoc needed on the machine) and
//! generates the gRPC servers and clients with tonic-prost-build; writes the descriptors for
//! the JSON gateway.

use std::path::PathBuf;

/// etcd's KV messages are strata-mvcc's own (it executes them): the generated code uses those
/// types instead of defining its own, so requests reach the store with no conversion.
const MVCC_TYPES: &[(&str, &str)] = &[
    (".mvccpb.KeyValue", "::strata_mvcc::api::KeyValue"),
    (".mvccpb.Event", "::strata_mvcc::api::Event"),
    (
        ".etcdserverpb.ResponseHeader",
        "::strata_mvcc::api::ResponseHeader",
    ),
    (
        ".etcdserverpb.RangeRequest",
        "::strata_mvcc::api::RangeRequest",
    ),
    (
        ".etcdserverpb.RangeResponse",
        "::strata_mvcc::api::RangeResponse",
    ),
    (".etcdserverpb.PutRequest", "::strata_mvcc::api::PutRequest"),
    (
        ".etcdserverpb.PutResponse",
        "::strata_mvcc::api::PutResponse",
    ),
    (
        ".etcdserverpb.DeleteRangeRequest",
        "::strata_mvcc::api::DeleteRangeRequest",
    ),
    (
        ".etcdserverpb.DeleteRangeResponse",
        "::strata_mvcc::api::DeleteRangeResponse",
    ),
    (".etcdserverpb.RequestOp", "::strata_mvcc::api::RequestOp"),
    (".etcdserverpb.ResponseOp", "::strata_mvcc::api::ResponseOp"),
    (".etcdserverpb.Compare", "::strata_mvcc::api::Compare"),
    (".etcdserverpb.TxnRequest", "::strata_mvcc::api::TxnRequest"),
    (
        ".etcdserverpb.TxnResponse",
        "::strata_mvcc::api::TxnResponse",
    ),
    (
        ".etcdserverpb.CompactionRequest",
        "::strata_mvcc::api::CompactionRequest",
    ),
    (
        ".etcdserverpb.CompactionResponse",
        "::strata_mvcc::api::CompactionResponse",
    ),
];

/// The protos, relative to `proto/`.
const PROTOS: &[&str] = &[
    "rpc.proto",
    "kv.proto",
    "auth.proto",
    "kvdb.proto",
    "raft.proto",
    "v3lock.proto",
    "v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let descriptors = protox::compile(&files, [&root])?;
    // The JSON gateway (`/v3/kv/range`, ...) maps JSON to these messages by their descriptors.
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&descriptors))?;
    let mut builder = tonic_prost_build::configure();
    for (proto, rust) in MVCC_TYPES {
        builder = builder.extern_path(*proto, *rust);
    }
    builder
        .build_server(true)
        // The clients serve the tests, `strata kv` and the forwarding of writes to the leader.
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
