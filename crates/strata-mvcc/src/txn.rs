//! The parts of a txn that read before it writes, as etcd's `applierV3backend.Txn` does them
//! (`server/etcdserver/apply.go`): every compare of the txn and of the nested txns on the
//! chosen path is evaluated first, against the store as it was before the txn (so a nested
//! txn's compares do not see its parent's writes, as in etcd); then the puts on that path are
//! checked (`ignore_*` on a key that existed before the txn, the lease), then the ranges'
//! revisions. Only then does anything run.

use std::cmp::Ordering;

use crate::LeaseCheck;
use crate::api::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::api::request_op::Request;
use crate::api::{Compare, KeyValue, TxnRequest};
use crate::error::{Error, Result};
use crate::view::View;

/// Which branch a txn takes, and the paths of the nested txns in that branch, in order.
#[derive(Debug)]
pub(crate) struct Path {
    /// Every compare held: `success` runs.
    pub succeeded: bool,
    /// One per nested txn in the branch that runs.
    pub nested: Vec<Path>,
}

/// etcd's `compareToPath`: the branch of `req` and of every nested txn on it, all evaluated
/// on `view` at `rev` (the store before the txn).
pub(crate) fn path(view: &View<'_>, rev: i64, req: &TxnRequest) -> Result<Path> {
    let mut succeeded = true;
    for compare in &req.compare {
        if !holds(view, rev, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = Vec::new();
    for op in ops {
        if let Some(Request::RequestTxn(txn)) = &op.request {
            nested.push(path(view, rev, txn)?);
        }
    }
    Ok(Path { succeeded, nested })
}

/// etcd's `applyCompare`: every key of the compare's range must match; a range with no key
/// compares as a zero key-value, except that a value compare then fails.
fn holds(view: &View<'_>, rev: i64, compare: &Compare) -> Result<bool> {
    let is_value = compare.target == CompareTarget::Value as i32;
    let mut any = false;
    let mut all = true;
    view.scan(&compare.key, &compare.range_end, rev, is_value, |kv| {
        any = true;
        all = matches(compare, &kv);
        all
    })?;
    if !any {
        return Ok(!is_value && matches(compare, &KeyValue::default()));
    }
    Ok(all)
}

/// etcd's `compareKV`: a target union of another kind than the target compares as zero (or
/// an empty value); an unknown target compares equal; an unknown result holds.
fn matches(compare: &Compare, kv: &KeyValue) -> bool {
    let given = compare.target_union.as_ref();
    let int = |pick: fn(&TargetUnion) -> Option<i64>| given.and_then(pick).unwrap_or(0);
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => {
            let value = match given {
                Some(TargetUnion::Value(v)) => v.as_slice(),
                _ => &[],
            };
            kv.value.as_slice().cmp(value)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int(|u| match u {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int(|u| match u {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int(|u| match u {
            TargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int(|u| match u {
            TargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

/// etcd's `checkRequestPut` over the path: a put with `ignore_value` or `ignore_lease` needs
/// its key before the txn; a put's lease must exist.
pub(crate) fn check_puts(
    view: &View<'_>,
    rev: i64,
    req: &TxnRequest,
    path: &Path,
    leases: &dyn LeaseCheck,
) -> Result<()> {
    let ops = if path.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(Request::RequestTxn(txn)) => {
                let inner = nested.next().expect("a path per nested txn on it");
                check_puts(view, rev, txn, inner, leases)?;
            }
            Some(Request::RequestPut(put)) => {
                if (put.ignore_value || put.ignore_lease) && view.get(&put.key, rev)?.is_none() {
                    return Err(Error::KeyNotFound);
                }
                if put.lease != 0 && !leases.exists(put.lease) {
                    return Err(Error::LeaseNotFound);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// etcd's `checkRequestRange` over the path: a range's revision (0: none given) must not be
/// above `current` nor below `compacted` (-1 before any compaction, so that, as in etcd, a
/// negative revision below -1 is refused as compacted inside a txn).
pub(crate) fn check_ranges(
    req: &TxnRequest,
    path: &Path,
    current: i64,
    compacted: i64,
) -> Result<()> {
    let ops = if path.succeeded {
        &req.success
    } else {
        &req.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(Request::RequestTxn(txn)) => {
                let inner = nested.next().expect("a path per nested txn on it");
                check_ranges(txn, inner, current, compacted)?;
            }
            Some(Request::RequestRange(range)) => {
                if range.revision == 0 {
                    continue;
                }
                if range.revision > current {
                    return Err(Error::FutureRevision);
                }
                if range.revision < compacted {
                    return Err(Error::Compacted);
                }
            }
            _ => {}
        }
    }
    Ok(())
}
