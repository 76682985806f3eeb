//! etcd's KV messages (`mvccpb.KeyValue` and the KV service's messages of `etcdserverpb`),
//! written by hand exactly as prost-build 0.14 generates them from etcd's `kv.proto` and
//! `rpc.proto`: the same names, field numbers, types, derives and nested modules. The server's
//! tonic code refers to these types through `extern_path` (`.etcdserverpb.RangeRequest` is
//! `strata_mvcc::api::RangeRequest`, `.mvccpb.KeyValue` is `strata_mvcc::api::KeyValue`, ...),
//! so the store executes the wire messages themselves, with no conversion layer.
//!
//! Keep every name, tag and type here in step with the server's `.proto` copies: a mismatch is
//! a wire incompatibility that no compiler catches (the tests below pin the tags).

/// A key's version as a reader sees it (`mvccpb.KeyValue`).
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The main revision that created this incarnation of the key.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// The main revision of its last change.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// Changes since its creation, from 1 (a deletion resets it).
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// Its value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// Its lease (0: none).
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// One change a watcher sees (`mvccpb.Event`).
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Event {
    /// An [`event::EventType`].
    #[prost(enumeration = "event::EventType", tag = "1")]
    pub r#type: i32,
    /// A put: the key's new version. A deletion: the key and `mod_revision` (the deletion's
    /// revision) alone.
    #[prost(message, optional, tag = "2")]
    pub kv: ::core::option::Option<KeyValue>,
    /// The version before the change (at `mod_revision - 1`), if the watcher asked for it.
    #[prost(message, optional, tag = "3")]
    pub prev_kv: ::core::option::Option<KeyValue>,
}

/// Nested message and enum types in `Event`.
pub mod event {
    /// The kinds of change.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum EventType {
        /// A key set.
        Put = 0,
        /// A key deleted.
        Delete = 1,
    }
    impl EventType {
        /// String value of the enum field names used in the ProtoBuf definition.
        ///
        /// The values are not transformed in any way and thus are considered stable
        /// (if the ProtoBuf definition does not change) and safe for programmatic use.
        pub fn as_str_name(&self) -> &'static str {
            match self {
                Self::Put => "PUT",
                Self::Delete => "DELETE",
            }
        }
        /// Creates an enum from field names used in the ProtoBuf definition.
        pub fn from_str_name(value: &str) -> ::core::option::Option<Self> {
            match value {
                "PUT" => Some(Self::Put),
                "DELETE" => Some(Self::Delete),
                _ => None,
            }
        }
    }
}

/// The header of every response.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct ResponseHeader {
    /// The cluster's id (the server fills it in).
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The answering member's id (the server fills it in).
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The store revision the response reflects.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// The member's Raft term (the server fills it in).
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// Reads the keys in `[key, range_end)` at a revision.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct RangeRequest {
    /// The first key (alone, if `range_end` is empty).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, excluded; `[0]`: every key from `key` on.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// At most this many keys (0 or less: no limit).
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// The revision to read at (0 or less: the current one).
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// A [`range_request::SortOrder`].
    #[prost(enumeration = "range_request::SortOrder", tag = "5")]
    pub sort_order: i32,
    /// A [`range_request::SortTarget`].
    #[prost(enumeration = "range_request::SortTarget", tag = "6")]
    pub sort_target: i32,
    /// A local read (no ReadIndex round); the server's concern.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    /// Keys without their values.
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    /// The count alone, no keys.
    #[prost(bool, tag = "9")]
    pub count_only: bool,
    /// Only keys whose mod revision is at least this (0: no bound).
    #[prost(int64, tag = "10")]
    pub min_mod_revision: i64,
    /// Only keys whose mod revision is at most this (0: no bound).
    #[prost(int64, tag = "11")]
    pub max_mod_revision: i64,
    /// Only keys whose create revision is at least this (0: no bound).
    #[prost(int64, tag = "12")]
    pub min_create_revision: i64,
    /// Only keys whose create revision is at most this (0: no bound).
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

/// Nested message and enum types in `RangeRequest`.
pub mod range_request {
    /// The order of a range's keys.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum SortOrder {
        /// Key order, unless the target is not the key (then ascending).
        None = 0,
        /// Ascending by the target.
        Ascend = 1,
        /// Descending by the target.
        Descend = 2,
    }
    impl SortOrder {
        /// String value of the enum field names used in the ProtoBuf definition.
        ///
        /// The values are not transformed in any way and thus are considered stable
        /// (if the ProtoBuf definition does not change) and safe for programmatic use.
        pub fn as_str_name(&self) -> &'static str {
            match self {
                Self::None => "NONE",
                Self::Ascend => "ASCEND",
                Self::Descend => "DESCEND",
            }
        }
        /// Creates an enum from field names used in the ProtoBuf definition.
        pub fn from_str_name(value: &str) -> ::core::option::Option<Self> {
            match value {
                "NONE" => Some(Self::None),
                "ASCEND" => Some(Self::Ascend),
                "DESCEND" => Some(Self::Descend),
                _ => None,
            }
        }
    }
    /// What a range's keys are sorted by.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum SortTarget {
        /// The key.
        Key = 0,
        /// The version.
        Version = 1,
        /// The create revision.
        Create = 2,
        /// The mod revision.
        Mod = 3,
        /// The value.
        Value = 4,
    }
    impl SortTarget {
        /// String value of the enum field names used in the ProtoBuf definition.
        ///
        /// The values are not transformed in any way and thus are considered stable
        /// (if the ProtoBuf definition does not change) and safe for programmatic use.
        pub fn as_str_name(&self) -> &'static str {
            match self {
                Self::Key => "KEY",
                Self::Version => "VERSION",
                Self::Create => "CREATE",
                Self::Mod => "MOD",
                Self::Value => "VALUE",
            }
        }
        /// Creates an enum from field names used in the ProtoBuf definition.
        pub fn from_str_name(value: &str) -> ::core::option::Option<Self> {
            match value {
                "KEY" => Some(Self::Key),
                "VERSION" => Some(Self::Version),
                "CREATE" => Some(Self::Create),
                "MOD" => Some(Self::Mod),
                "VALUE" => Some(Self::Value),
                _ => None,
            }
        }
    }
}

/// What a range read.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RangeResponse {
    /// The header; `revision` is the store's current revision (not the one read at).
    #[prost(message, optional, tag = "1")]
    pub header: ::core::option::Option<ResponseHeader>,
    /// The keys, up to the limit.
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// More keys than the limit passed the filters.
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// Keys in the range at that revision, whatever the limit and filters.
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// Sets a key.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct PutRequest {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// The lease to attach (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Return the previous version.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the current value.
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// What a put did.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct PutResponse {
    /// The header; `revision` is the put's.
    #[prost(message, optional, tag = "1")]
    pub header: ::core::option::Option<ResponseHeader>,
    /// The previous version, if asked for and there was one.
    #[prost(message, optional, tag = "2")]
    pub prev_kv: ::core::option::Option<KeyValue>,
}

/// Deletes the keys in `[key, range_end)`.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct DeleteRangeRequest {
    /// The first key (alone, if `range_end` is empty).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, excluded; `[0]`: every key from `key` on.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Return the deleted versions.
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

/// What a delete did.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DeleteRangeResponse {
    /// The header; `revision` is the delete's (the current one if it deleted nothing).
    #[prost(message, optional, tag = "1")]
    pub header: ::core::option::Option<ResponseHeader>,
    /// How many keys it deleted.
    #[prost(int64, tag = "2")]
    pub deleted: i64,
    /// The deleted versions, if asked for.
    #[prost(message, repeated, tag = "3")]
    pub prev_kvs: Vec<KeyValue>,
}

/// One operation of a txn branch.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct RequestOp {
    /// The operation (`None` is refused by [`check_txn`](crate::check_txn)).
    #[prost(oneof = "request_op::Request", tags = "1, 2, 3, 4")]
    pub request: ::core::option::Option<request_op::Request>,
}

/// Nested message and enum types in `RequestOp`.
pub mod request_op {
    /// The operations a txn branch may hold.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Request {
        /// A range.
        #[prost(message, tag = "1")]
        RequestRange(super::RangeRequest),
        /// A put.
        #[prost(message, tag = "2")]
        RequestPut(super::PutRequest),
        /// A delete.
        #[prost(message, tag = "3")]
        RequestDeleteRange(super::DeleteRangeRequest),
        /// A nested txn.
        #[prost(message, tag = "4")]
        RequestTxn(super::TxnRequest),
    }
}

/// One operation's response in a txn.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ResponseOp {
    /// The response, of the operation's kind.
    #[prost(oneof = "response_op::Response", tags = "1, 2, 3, 4")]
    pub response: ::core::option::Option<response_op::Response>,
}

/// Nested message and enum types in `ResponseOp`.
pub mod response_op {
    /// The responses a txn may hold.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Response {
        /// A range's.
        #[prost(message, tag = "1")]
        ResponseRange(super::RangeResponse),
        /// A put's.
        #[prost(message, tag = "2")]
        ResponsePut(super::PutResponse),
        /// A delete's.
        #[prost(message, tag = "3")]
        ResponseDeleteRange(super::DeleteRangeResponse),
        /// A nested txn's.
        #[prost(message, tag = "4")]
        ResponseTxn(super::TxnResponse),
    }
}

/// One condition of a txn: a key's (or every key of a range's) target compared with a value.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Compare {
    /// A [`compare::CompareResult`].
    #[prost(enumeration = "compare::CompareResult", tag = "1")]
    pub result: i32,
    /// A [`compare::CompareTarget`].
    #[prost(enumeration = "compare::CompareTarget", tag = "2")]
    pub target: i32,
    /// The key (the first of the range, if `range_end` is set).
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// The end of the range, excluded; empty: `key` alone; `[0]`: every key from `key` on.
    #[prost(bytes = "vec", tag = "64")]
    pub range_end: Vec<u8>,
    /// The value compared with (a variant other than the target's compares as zero).
    #[prost(oneof = "compare::TargetUnion", tags = "4, 5, 6, 7, 8")]
    pub target_union: ::core::option::Option<compare::TargetUnion>,
}

/// Nested message and enum types in `Compare`.
pub mod compare {
    /// How the key's target must compare with the given value.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum CompareResult {
        /// Equal.
        Equal = 0,
        /// Greater than the value.
        Greater = 1,
        /// Less than the value.
        Less = 2,
        /// Not equal.
        NotEqual = 3,
    }
    impl CompareResult {
        /// String value of the enum field names used in the ProtoBuf definition.
        ///
        /// The values are not transformed in any way and thus are considered stable
        /// (if the ProtoBuf definition does not change) and safe for programmatic use.
        pub fn as_str_name(&self) -> &'static str {
            match self {
                Self::Equal => "EQUAL",
                Self::Greater => "GREATER",
                Self::Less => "LESS",
                Self::NotEqual => "NOT_EQUAL",
            }
        }
        /// Creates an enum from field names used in the ProtoBuf definition.
        pub fn from_str_name(value: &str) -> ::core::option::Option<Self> {
            match value {
                "EQUAL" => Some(Self::Equal),
                "GREATER" => Some(Self::Greater),
                "LESS" => Some(Self::Less),
                "NOT_EQUAL" => Some(Self::NotEqual),
                _ => None,
            }
        }
    }
    /// What of the key is compared.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum CompareTarget {
        /// Its version.
        Version = 0,
        /// Its create revision.
        Create = 1,
        /// Its mod revision.
        Mod = 2,
        /// Its value.
        Value = 3,
        /// Its lease.
        Lease = 4,
    }
    impl CompareTarget {
        /// String value of the enum field names used in the ProtoBuf definition.
        ///
        /// The values are not transformed in any way and thus are considered stable
        /// (if the ProtoBuf definition does not change) and safe for programmatic use.
        pub fn as_str_name(&self) -> &'static str {
            match self {
                Self::Version => "VERSION",
                Self::Create => "CREATE",
                Self::Mod => "MOD",
                Self::Value => "VALUE",
                Self::Lease => "LEASE",
            }
        }
        /// Creates an enum from field names used in the ProtoBuf definition.
        pub fn from_str_name(value: &str) -> ::core::option::Option<Self> {
            match value {
                "VERSION" => Some(Self::Version),
                "CREATE" => Some(Self::Create),
                "MOD" => Some(Self::Mod),
                "VALUE" => Some(Self::Value),
                "LEASE" => Some(Self::Lease),
                _ => None,
            }
        }
    }
    /// The value a target is compared with.
    #[derive(Clone, PartialEq, Eq, Hash, ::prost::Oneof)]
    pub enum TargetUnion {
        /// For [`CompareTarget::Version`].
        #[prost(int64, tag = "4")]
        Version(i64),
        /// For [`CompareTarget::Create`].
        #[prost(int64, tag = "5")]
        CreateRevision(i64),
        /// For [`CompareTarget::Mod`].
        #[prost(int64, tag = "6")]
        ModRevision(i64),
        /// For [`CompareTarget::Value`].
        #[prost(bytes, tag = "7")]
        Value(Vec<u8>),
        /// For [`CompareTarget::Lease`].
        #[prost(int64, tag = "8")]
        Lease(i64),
    }
}

/// Compares, then one branch of operations, as one write (one main revision if it changes
/// anything).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TxnRequest {
    /// The conditions, all of which must hold for `success` to run.
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    /// The operations run if every compare holds.
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    /// The operations run otherwise.
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// What a txn did.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TxnResponse {
    /// The header; `revision` is the txn's (the current one if it wrote nothing). A nested
    /// txn's header is all zero, as etcd's.
    #[prost(message, optional, tag = "1")]
    pub header: ::core::option::Option<ResponseHeader>,
    /// Every compare held (`success` ran).
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    /// The responses of the branch that ran, in order.
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// Compacts the history up to a revision.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct CompactionRequest {
    /// The revision: reads below it fail from then on.
    #[prost(int64, tag = "1")]
    pub revision: i64,
    /// Answer only once the versions are removed from the disk (the server's concern).
    #[prost(bool, tag = "2")]
    pub physical: bool,
}

/// A compaction's answer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct CompactionResponse {
    /// The header; `revision` is the current one.
    #[prost(message, optional, tag = "1")]
    pub header: ::core::option::Option<ResponseHeader>,
}

/// A header with only the revision set (the server fills in the rest).
pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// etcd's wire bytes for a few messages (hand-encoded from the proto's field numbers), so a
    /// changed tag or type fails here rather than at a client.
    #[test]
    fn messages_encode_with_etcds_field_numbers() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 5,
        };
        assert_eq!(
            kv.encode_to_vec(),
            [
                0x0A, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x2A, 1, b'v', 0x30, 5
            ]
        );
        let compare = Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(compare::TargetUnion::Lease(7)),
        };
        // range_end is field 64: tag (64 << 3 | 2) = 514, varint 0x82 0x04.
        assert_eq!(
            compare.encode_to_vec(),
            [
                0x08, 3, 0x10, 4, 0x1A, 1, b'k', 0x40, 7, 0x82, 0x04, 1, b'z'
            ]
        );
        let range = RangeRequest {
            key: b"a".to_vec(),
            limit: 1,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Value as i32,
            count_only: true,
            max_create_revision: 9,
            ..RangeRequest::default()
        };
        assert_eq!(
            range.encode_to_vec(),
            [0x0A, 1, b'a', 0x18, 1, 0x28, 2, 0x30, 4, 0x48, 1, 0x68, 9]
        );
        let op = RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: b"d".to_vec(),
                    prev_kv: true,
                    ..DeleteRangeRequest::default()
                },
            )),
        };
        assert_eq!(op.encode_to_vec(), [0x1A, 5, 0x0A, 1, b'd', 0x18, 1]);
        let header = ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        };
        assert_eq!(header.encode_to_vec(), [0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);
        let compaction = CompactionRequest {
            revision: 6,
            physical: true,
        };
        assert_eq!(compaction.encode_to_vec(), [0x08, 6, 0x10, 1]);
        let event = Event {
            r#type: event::EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: 3,
                ..KeyValue::default()
            }),
            prev_kv: Some(KeyValue {
                version: 1,
                ..KeyValue::default()
            }),
        };
        assert_eq!(
            event.encode_to_vec(),
            [0x08, 1, 0x12, 5, 0x0A, 1, b'k', 0x18, 3, 0x1A, 2, 0x20, 1]
        );
    }
}
