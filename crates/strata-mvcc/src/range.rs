//! A `RangeRequest` executed as etcd's `applierV3backend.Range` does (`server/etcdserver/apply.go`
//! with `mvcc/kvstore_txn.go`'s `rangeKeys`): revision checks, `count` over the whole range,
//! `limit + 1` keys fetched when nothing needs them all, filters, sort, truncation and `more`.

use std::cmp::Ordering;

use crate::api::range_request::{SortOrder, SortTarget};
use crate::api::{KeyValue, RangeRequest, RangeResponse, header};
use crate::error::{Error, Result};
use crate::view::View;

/// Runs `req` on `view`, where `current` is the revision the reader is at (the header's
/// revision, and the highest it may read) and `compacted` the compacted revision (-1: none).
pub(crate) fn range(
    view: &View<'_>,
    req: &RangeRequest,
    current: i64,
    compacted: i64,
) -> Result<RangeResponse> {
    if req.revision > current {
        return Err(Error::FutureRevision);
    }
    let rev = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if rev < compacted {
        return Err(Error::Compacted);
    }
    let mut response = RangeResponse {
        header: header(current),
        ..RangeResponse::default()
    };
    if req.count_only {
        view.scan(&req.key, &req.range_end, rev, false, |_| {
            response.count += 1;
            true
        })?;
        return Ok(response);
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // etcd fetches everything when it sorts or filters (by the raw order: a target other than
    // the key with order NONE sorts only the `limit + 1` keys fetched), else one key past the
    // limit to learn `more`.
    let fetch = if req.sort_order != SortOrder::None as i32 || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(req.limit.saturating_add(1)).unwrap_or(usize::MAX)
    };
    let values = !req.keys_only || req.sort_target == SortTarget::Value as i32;
    let mut kvs = Vec::new();
    view.scan(&req.key, &req.range_end, rev, values, |kv| {
        response.count += 1;
        if kvs.len() < fetch {
            kvs.push(kv);
        }
        true
    })?;
    if filtered {
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
    }
    sort(&mut kvs, req.sort_order, req.sort_target);
    if req.limit > 0 {
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        if kvs.len() > limit {
            kvs.truncate(limit);
            response.more = true;
        }
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Vec::new();
        }
    }
    response.kvs = kvs;
    Ok(response)
}

/// Sorts `kvs` (in key order) as etcd does: a target other than the key with order NONE means
/// ascending; key ascending is the order they are in. Stable, so ties keep key order in both
/// directions (as Go's `sort.Sort` does on the short lists where it is an insertion sort).
/// Orders and targets that are not etcd's leave the order alone ([`check_range`] refuses them).
///
/// [`check_range`]: crate::check_range
fn sort(kvs: &mut [KeyValue], order: i32, target: i32) {
    let Ok(target) = SortTarget::try_from(target) else {
        return;
    };
    let order = match SortOrder::try_from(order) {
        Ok(SortOrder::None) if target != SortTarget::Key => SortOrder::Ascend,
        Ok(SortOrder::Ascend) if target == SortTarget::Key => return,
        Ok(order) => order,
        Err(_) => return,
    };
    let by = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(by),
        SortOrder::Descend => kvs.sort_by(|a, b| by(b, a)),
    }
}
