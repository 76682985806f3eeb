//! Request validation before a request is proposed, as etcd's gRPC layer does it
//! (`server/etcdserver/api/v3rpc/key.go`: `checkRangeRequest`, `checkPutRequest`,
//! `checkDeleteRequest`, `checkTxnRequest`, `checkIntervals`). The store's execution assumes
//! requests passed these checks.

use std::cmp::Ordering;
use std::collections::HashSet;

use crate::api::range_request::{SortOrder, SortTarget};
use crate::api::request_op::Request;
use crate::api::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::error::{Error, Result};

/// etcd's default of `--max-txn-ops`: compares, or operations in one branch, per txn.
pub const MAX_TXN_OPS_DEFAULT: usize = 128;

/// Checks a range: a key, and a sort order and target that are etcd's.
///
/// # Errors
///
/// [`Error::EmptyKey`], [`Error::InvalidSortOption`].
pub fn check_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if SortOrder::try_from(req.sort_order).is_err()
        || SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

/// Checks a put: a key, and no value or lease given with `ignore_value` or `ignore_lease`.
///
/// # Errors
///
/// [`Error::EmptyKey`], [`Error::ValueProvided`], [`Error::LeaseProvided`].
pub fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete: a key.
///
/// # Errors
///
/// [`Error::EmptyKey`].
pub fn check_delete_range(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd does before proposing it: at most `max_ops` compares and at most
/// `max_ops` operations per branch (a nested txn gets what its parent leaves:
/// `max_ops - max(compares, success, failure)` of the parent); a key in every compare and
/// operation, each operation as [`check_range`], [`check_put`] and [`check_delete_range`] ask;
/// no empty operation; and no key put twice, or put and deleted, in one branch, nested txns
/// included (a `then` and an `else` branch may put the same key; a delete with `range_end`
/// `[0]` conflicts with nothing, as in etcd, whose interval check treats that end as below
/// every key).
///
/// # Errors
///
/// [`Error::TooManyOps`], [`Error::EmptyKey`], [`Error::InvalidSortOption`],
/// [`Error::ValueProvided`], [`Error::LeaseProvided`], [`Error::KeyNotFound`] (an empty
/// operation), [`Error::DuplicateKey`]; the first found in etcd's order.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_ops(req, i64::try_from(max_ops).unwrap_or(i64::MAX))?;
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`.
fn check_txn_ops(req: &TxnRequest, max_ops: i64) -> Result<()> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(r)) => check_put(r)?,
            Some(Request::RequestDeleteRange(r)) => check_delete_range(r)?,
            Some(Request::RequestTxn(r)) => check_txn_ops(r, max_ops - ops)?,
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// A half-open interval of keys as etcd's `adt.StringAffineComparable` orders them: the empty
/// string is above every other.
#[derive(Debug, Clone)]
struct Interval {
    begin: Vec<u8>,
    end: Vec<u8>,
}

fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

impl Interval {
    /// A delete's interval: `[key, range_end)`, or the point `key` (`[key, key\0)`).
    fn of(key: &[u8], range_end: &[u8]) -> Self {
        if range_end.is_empty() {
            Self::point(key)
        } else {
            Self {
                begin: key.to_vec(),
                end: range_end.to_vec(),
            }
        }
    }

    fn point(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Self {
            begin: key.to_vec(),
            end,
        }
    }

    fn intersects(&self, other: &Interval) -> bool {
        affine_cmp(&self.begin, &other.end) == Ordering::Less
            && affine_cmp(&other.begin, &self.end) == Ordering::Less
    }
}

/// Whether any of `dels` holds `key`.
fn deleted(dels: &[Interval], key: &[u8]) -> bool {
    let point = Interval::point(key);
    dels.iter().any(|d| d.intersects(&point))
}

/// etcd's `checkIntervals`: the keys the ops put and the intervals they delete, nested txns
/// included, or [`Error::DuplicateKey`].
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    // etcd merges the nested deletes seen through `[\0, +inf)`: those that reach above `\0`.
    let everything = Interval {
        begin: vec![0],
        end: Vec::new(),
    };
    for op in ops {
        let Some(Request::RequestTxn(txn)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&txn.success)?;
        let (puts_else, dels_else) = check_intervals(&txn.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // A key put by both branches is fine: only one of them runs.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(
            dels_then
                .into_iter()
                .chain(dels_else)
                .filter(|d| d.intersects(&everything)),
        );
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if puts.contains(&put.key) || deleted(&dels, &put.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(put.key.clone());
    }
    Ok((puts, dels))
}

/// etcd's `isTxnReadonly`: every operation of both branches is a range (a nested txn counts as
/// a write). Such a txn needs no Raft round: [`Store::read_txn`](crate::Store::read_txn).
pub fn txn_is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op.request, Some(Request::RequestRange(_))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Compare, request_op};

    fn put(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                ..PutRequest::default()
            })),
        }
    }

    fn del(key: &[u8], end: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.to_vec(),
                    range_end: end.to_vec(),
                    prev_kv: false,
                },
            )),
        }
    }

    fn get(key: &[u8]) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..RangeRequest::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: Vec::new(),
            success,
            failure,
        }
    }

    fn nested(t: TxnRequest) -> RequestOp {
        RequestOp {
            request: Some(request_op::Request::RequestTxn(t)),
        }
    }

    fn compare(key: &[u8]) -> Compare {
        Compare {
            key: key.to_vec(),
            ..Compare::default()
        }
    }

    fn check(t: &TxnRequest) -> Result<()> {
        check_txn(t, MAX_TXN_OPS_DEFAULT)
    }

    #[test]
    fn an_empty_key_is_refused_everywhere() {
        assert!(matches!(
            check_range(&RangeRequest::default()),
            Err(Error::EmptyKey)
        ));
        assert!(matches!(
            check_put(&PutRequest::default()),
            Err(Error::EmptyKey)
        ));
        assert!(matches!(
            check_delete_range(&DeleteRangeRequest::default()),
            Err(Error::EmptyKey)
        ));
        let mut t = txn(vec![put(b"a")], vec![]);
        t.compare.push(compare(b""));
        assert!(matches!(check(&t), Err(Error::EmptyKey)));
        for op in [put(b""), del(b"", b"z"), get(b"")] {
            assert!(matches!(
                check(&txn(vec![], vec![op.clone()])),
                Err(Error::EmptyKey)
            ));
            let deep = txn(vec![nested(txn(vec![op], vec![]))], vec![]);
            assert!(matches!(check(&deep), Err(Error::EmptyKey)));
        }
    }

    #[test]
    fn a_value_or_lease_given_with_ignore_is_refused() {
        let value = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..PutRequest::default()
        };
        assert!(matches!(check_put(&value), Err(Error::ValueProvided)));
        let lease = PutRequest {
            key: b"k".to_vec(),
            lease: 7,
            ignore_lease: true,
            ..PutRequest::default()
        };
        assert!(matches!(check_put(&lease), Err(Error::LeaseProvided)));
        let op = RequestOp {
            request: Some(request_op::Request::RequestPut(lease)),
        };
        assert!(matches!(
            check(&txn(vec![op], vec![])),
            Err(Error::LeaseProvided)
        ));
    }

    #[test]
    fn a_sort_option_that_is_not_etcds_is_refused() {
        let bad_order = RangeRequest {
            key: b"k".to_vec(),
            sort_order: 3,
            ..RangeRequest::default()
        };
        assert!(matches!(
            check_range(&bad_order),
            Err(Error::InvalidSortOption)
        ));
        let bad_target = RangeRequest {
            key: b"k".to_vec(),
            sort_target: 5,
            ..RangeRequest::default()
        };
        assert!(matches!(
            check_range(&bad_target),
            Err(Error::InvalidSortOption)
        ));
    }

    #[test]
    fn an_empty_operation_is_key_not_found() {
        let t = txn(vec![put(b"a"), RequestOp { request: None }], vec![]);
        assert!(matches!(check(&t), Err(Error::KeyNotFound)));
    }

    #[test]
    fn too_many_ops_counts_compares_and_each_branch_and_nested_share_the_rest() {
        let puts = |n: usize| (0..n).map(|i| put(&[b'k', i as u8])).collect::<Vec<_>>();
        assert!(check_txn(&txn(puts(4), vec![]), 4).is_ok());
        assert!(matches!(
            check_txn(&txn(puts(5), vec![]), 4),
            Err(Error::TooManyOps)
        ));
        assert!(matches!(
            check_txn(&txn(vec![], puts(5)), 4),
            Err(Error::TooManyOps)
        ));
        let mut compares = txn(vec![], vec![]);
        compares.compare = (0..5).map(|_| compare(b"a")).collect();
        assert!(matches!(check_txn(&compares, 4), Err(Error::TooManyOps)));
        // The parent uses 2 of 4: a nested txn may use 2, not 3.
        let inner = |n: usize| nested(txn(puts(n), vec![]));
        assert!(check_txn(&txn(vec![inner(2), get(b"x")], vec![]), 4).is_ok());
        assert!(matches!(
            check_txn(&txn(vec![inner(3), get(b"x")], vec![]), 4),
            Err(Error::TooManyOps)
        ));
    }

    #[test]
    fn a_key_put_twice_or_put_and_deleted_in_one_branch_is_a_duplicate() {
        let dup =
            |ops: Vec<RequestOp>| matches!(check(&txn(ops, vec![])), Err(Error::DuplicateKey));
        assert!(dup(vec![put(b"a"), put(b"a")]));
        assert!(dup(vec![put(b"a"), del(b"a", b"")]));
        assert!(dup(vec![del(b"a", b"c"), put(b"b")]));
        // Across nesting: a nested put against the parent's delete or put.
        assert!(dup(vec![
            del(b"a", b"c"),
            nested(txn(vec![put(b"b")], vec![]))
        ]));
        assert!(dup(vec![put(b"b"), nested(txn(vec![], vec![put(b"b")]))]));
        // A nested delete against the parent's put.
        assert!(dup(vec![
            nested(txn(vec![del(b"b", b"")], vec![])),
            put(b"b")
        ]));
        // Two nested txns putting the same key.
        assert!(dup(vec![
            nested(txn(vec![put(b"b")], vec![])),
            nested(txn(vec![put(b"b")], vec![])),
        ]));
    }

    #[test]
    fn what_etcd_lets_through_is_not_a_duplicate() {
        let ok = |ops: Vec<RequestOp>| check(&txn(ops, vec![])).is_ok();
        // Different keys; a range end below the put; the two branches of one nested txn.
        assert!(ok(vec![put(b"a"), put(b"b")]));
        assert!(ok(vec![del(b"a", b"b"), put(b"b")]));
        assert!(ok(vec![nested(txn(vec![put(b"b")], vec![put(b"b")]))]));
        // The success and failure branches are checked apart.
        assert!(check(&txn(vec![put(b"a")], vec![put(b"a")])).is_ok());
        // A delete of everything from a key on conflicts with nothing (etcd's interval check
        // reads the end `\0` as below every key).
        assert!(ok(vec![del(b"a", &[0]), put(b"b")]));
        assert!(ok(vec![
            nested(txn(vec![del(b"a", &[0])], vec![])),
            put(b"b")
        ]));
        // Ranges may overlap anything.
        assert!(ok(vec![get(b"a"), put(b"a"), get(b"a")]));
    }

    #[test]
    fn only_all_range_txns_are_read_only() {
        assert!(txn_is_read_only(&txn(vec![get(b"a")], vec![get(b"b")])));
        assert!(!txn_is_read_only(&txn(vec![get(b"a")], vec![put(b"b")])));
        assert!(!txn_is_read_only(&txn(
            vec![nested(txn(vec![get(b"a")], vec![]))],
            vec![]
        )));
    }
}
