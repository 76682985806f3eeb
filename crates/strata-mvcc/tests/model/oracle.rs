//! The oracle: etcd's KV rules written plainly over a `BTreeMap` of every key's versions, with
//! no LSM, overlay or scan merging. It answers requests as the store must, errors included.

use std::collections::{BTreeMap, BTreeSet};

use strata_mvcc::api::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_mvcc::api::range_request::{SortOrder, SortTarget};
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::response_op::Response;
use strata_mvcc::api::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    ResponseOp, TxnRequest, TxnResponse,
};

pub const COMPACTED: &str = "mvcc: required revision has been compacted";
pub const FUTURE: &str = "mvcc: required revision is a future revision";
pub const EMPTY_KEY: &str = "key is not provided";
pub const KEY_NOT_FOUND: &str = "key not found";
pub const VALUE_PROVIDED: &str = "value is provided";
pub const LEASE_PROVIDED: &str = "lease is provided";
pub const TOO_MANY_OPS: &str = "too many operations in txn request";
pub const DUPLICATE_KEY: &str = "duplicate key given in txn request";
pub const LEASE_NOT_FOUND: &str = "requested lease not found";
pub const INVALID_SORT: &str = "invalid sort option";

pub type Answer<T> = Result<T, &'static str>;

/// The leases the tests' lease check knows.
pub fn lease_exists(lease: i64) -> bool {
    lease == 1 || lease == 2
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

#[derive(Debug, Clone)]
pub struct Model {
    /// Every key's states, one per main revision that changed it, oldest first.
    pub history: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    pub current: i64,
    pub compacted: i64,
    /// The request in progress changed something.
    changed: bool,
}

impl Default for Model {
    fn default() -> Self {
        Self {
            history: BTreeMap::new(),
            current: 1,
            compacted: -1,
            changed: false,
        }
    }
}

/// Which branch each txn on the path takes.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl Model {
    fn main(&self) -> i64 {
        self.current + 1
    }

    fn so_far(&self) -> i64 {
        if self.changed {
            self.main()
        } else {
            self.current
        }
    }

    /// Every live key at `rev`.
    pub fn at(&self, rev: i64) -> BTreeMap<Vec<u8>, KeyValue> {
        self.history
            .iter()
            .filter_map(|(k, h)| {
                h.iter()
                    .rev()
                    .find(|(r, _)| *r <= rev)
                    .and_then(|(_, kv)| kv.clone())
                    .map(|kv| (k.clone(), kv))
            })
            .collect()
    }

    fn range_at(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.at(rev)
            .into_values()
            .filter(|kv| in_range(&kv.key, key, end))
            .collect()
    }

    fn set(&mut self, key: &[u8], kv: Option<KeyValue>) {
        let main = self.main();
        let h = self.history.entry(key.to_vec()).or_default();
        match h.last_mut() {
            Some((m, state)) if *m == main => *state = kv,
            _ => h.push((main, kv)),
        }
        self.changed = true;
    }

    /// Runs one request on a copy, kept only if it succeeds.
    fn request<T>(&mut self, run: impl FnOnce(&mut Model) -> Answer<T>) -> Answer<T> {
        let mut work = self.clone();
        work.changed = false;
        let answer = run(&mut work)?;
        if work.changed {
            work.current += 1;
        }
        work.changed = false;
        *self = work;
        Ok(answer)
    }

    pub fn range(&self, req: &RangeRequest) -> Answer<RangeResponse> {
        self.range_as_of(req, self.current)
    }

    fn range_as_of(&self, req: &RangeRequest, cur: i64) -> Answer<RangeResponse> {
        if req.revision > cur {
            return Err(FUTURE);
        }
        let rev = if req.revision <= 0 { cur } else { req.revision };
        if rev < self.compacted {
            return Err(COMPACTED);
        }
        let all = self.range_at(&req.key, &req.range_end, rev);
        let count = all.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                header: header(cur),
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        let filters = [
            req.min_mod_revision,
            req.max_mod_revision,
            req.min_create_revision,
            req.max_create_revision,
        ];
        let fetch_all = req.sort_order != 0 || filters.iter().any(|f| *f != 0) || req.limit <= 0;
        let mut kvs: Vec<KeyValue> = if fetch_all {
            all
        } else {
            all.into_iter().take(req.limit as usize + 1).collect()
        };
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        let target = SortTarget::try_from(req.sort_target).expect("generated valid");
        let order = SortOrder::try_from(req.sort_order).expect("generated valid");
        let order = if order == SortOrder::None && target != SortTarget::Key {
            SortOrder::Ascend
        } else {
            order
        };
        let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Vec::new()),
                SortTarget::Create => (kv.create_revision, Vec::new()),
                SortTarget::Mod => (kv.mod_revision, Vec::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        // Ties stay in key order, both ways.
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by_key(field),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: header(cur),
            kvs,
            more,
            count,
        })
    }

    pub fn put(&mut self, req: &PutRequest) -> Answer<PutResponse> {
        check_put(req)?;
        if req.lease != 0 && !lease_exists(req.lease) {
            return Err(LEASE_NOT_FOUND);
        }
        self.request(|m| m.apply_put(req))
    }

    fn apply_put(&mut self, req: &PutRequest) -> Answer<PutResponse> {
        let main = self.main();
        let prev = self.at(main).remove(&req.key);
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(KEY_NOT_FOUND);
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
            mod_revision: main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: match (&prev, req.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => req.value.clone(),
            },
            lease: match (&prev, req.ignore_lease) {
                (Some(p), true) => p.lease,
                _ => req.lease,
            },
        };
        self.set(&req.key, Some(kv));
        Ok(PutResponse {
            header: header(main),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Answer<DeleteRangeResponse> {
        if req.key.is_empty() {
            return Err(EMPTY_KEY);
        }
        self.request(|m| Ok(m.apply_delete(req)))
    }

    fn apply_delete(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let live = self.range_at(&req.key, &req.range_end, self.main());
        for kv in &live {
            self.set(&kv.key, None);
        }
        DeleteRangeResponse {
            header: header(self.so_far()),
            deleted: live.len() as i64,
            prev_kvs: if req.prev_kv { live } else { Vec::new() },
        }
    }

    pub fn compact(&mut self, req: &CompactionRequest) -> Answer<CompactionResponse> {
        if req.revision <= self.compacted {
            return Err(COMPACTED);
        }
        if req.revision > self.current {
            return Err(FUTURE);
        }
        self.compacted = req.revision;
        Ok(CompactionResponse {
            header: header(self.current),
        })
    }

    pub fn txn(&mut self, req: &TxnRequest, max_ops: usize) -> Answer<TxnResponse> {
        check_txn(req, max_ops as i64)?;
        check_duplicates(&req.success)?;
        check_duplicates(&req.failure)?;
        self.request(|m| {
            let before = m.current;
            let path = m.path(req, before);
            let read_only = req
                .success
                .iter()
                .chain(&req.failure)
                .all(|op| matches!(op.request, Some(Request::RequestRange(_))));
            if !read_only {
                m.check_puts(req, &path, before)?;
            }
            m.check_ranges(req, &path, before)?;
            let mut response = m.apply_txn(req, &path)?;
            response.header = header(m.so_far());
            Ok(response)
        })
    }

    fn path(&self, req: &TxnRequest, rev: i64) -> Path {
        let succeeded = req.compare.iter().all(|c| self.holds(c, rev));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.path(t, rev)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    fn holds(&self, c: &Compare, rev: i64) -> bool {
        let kvs = self.range_at(&c.key, &c.range_end, rev);
        let target = CompareTarget::try_from(c.target).expect("generated valid");
        if kvs.is_empty() {
            return target != CompareTarget::Value && compare_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, kv))
    }

    fn check_puts(&self, req: &TxnRequest, path: &Path, rev: i64) -> Answer<()> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    self.check_puts(t, nested.next().expect("path"), rev)?;
                }
                Some(Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && !self.at(rev).contains_key(&p.key) {
                        return Err(KEY_NOT_FOUND);
                    }
                    if p.lease != 0 && !lease_exists(p.lease) {
                        return Err(LEASE_NOT_FOUND);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, req: &TxnRequest, path: &Path, rev: i64) -> Answer<()> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(Request::RequestTxn(t)) => {
                    self.check_ranges(t, nested.next().expect("path"), rev)?;
                }
                Some(Request::RequestRange(r)) if r.revision != 0 => {
                    if r.revision > rev {
                        return Err(FUTURE);
                    }
                    if r.revision < self.compacted {
                        return Err(COMPACTED);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_txn(&mut self, req: &TxnRequest, path: &Path) -> Answer<TxnResponse> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::new();
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Some(Response::ResponseRange(self.range_as_of(r, self.so_far())?))
                }
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.apply_put(p)?)),
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.apply_delete(d)))
                }
                Some(Request::RequestTxn(t)) => {
                    let mut r = self.apply_txn(t, nested.next().expect("path"))?;
                    r.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(r))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        })
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let n = |v: Option<i64>| v.unwrap_or(0);
    let ordering = match CompareTarget::try_from(c.target).expect("generated valid") {
        CompareTarget::Value => kv.value.as_slice().cmp(match &c.target_union {
            Some(TargetUnion::Value(v)) => v.as_slice(),
            _ => &[],
        }),
        CompareTarget::Version => kv.version.cmp(&n(match c.target_union {
            Some(TargetUnion::Version(v)) => Some(v),
            _ => None,
        })),
        CompareTarget::Create => kv.create_revision.cmp(&n(match c.target_union {
            Some(TargetUnion::CreateRevision(v)) => Some(v),
            _ => None,
        })),
        CompareTarget::Mod => kv.mod_revision.cmp(&n(match c.target_union {
            Some(TargetUnion::ModRevision(v)) => Some(v),
            _ => None,
        })),
        CompareTarget::Lease => kv.lease.cmp(&n(match c.target_union {
            Some(TargetUnion::Lease(v)) => Some(v),
            _ => None,
        })),
    };
    match CompareResult::try_from(c.result).expect("generated valid") {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

pub fn check_range(r: &RangeRequest) -> Answer<()> {
    if r.key.is_empty() {
        return Err(EMPTY_KEY);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(INVALID_SORT);
    }
    Ok(())
}

pub fn check_put(p: &PutRequest) -> Answer<()> {
    if p.key.is_empty() {
        Err(EMPTY_KEY)
    } else if p.ignore_value && !p.value.is_empty() {
        Err(VALUE_PROVIDED)
    } else if p.ignore_lease && p.lease != 0 {
        Err(LEASE_PROVIDED)
    } else {
        Ok(())
    }
}

fn check_txn(req: &TxnRequest, max_ops: i64) -> Answer<()> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if ops > max_ops {
        return Err(TOO_MANY_OPS);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EMPTY_KEY);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => check_range(r)?,
            Some(Request::RequestPut(p)) => check_put(p)?,
            Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => return Err(EMPTY_KEY),
            Some(Request::RequestDeleteRange(_)) => {}
            Some(Request::RequestTxn(t)) => check_txn(t, max_ops - ops)?,
            None => return Err(KEY_NOT_FOUND),
        }
    }
    Ok(())
}

/// The keys of the test's key space a delete covers, for the duplicate check; a delete of
/// everything from a key on covers none (etcd's interval check reads its end as below every
/// key).
fn covered(d: &DeleteRangeRequest, universe: &[Vec<u8>]) -> BTreeSet<Vec<u8>> {
    if d.range_end == [0] {
        return BTreeSet::new();
    }
    universe
        .iter()
        .filter(|k| in_range(k, &d.key, &d.range_end))
        .cloned()
        .collect()
}

type Keys = BTreeSet<Vec<u8>>;

/// etcd's duplicate-key rule over sets of the test's keys: (puts, deleted keys) of a branch.
fn duplicates(ops: &[RequestOp], universe: &[Vec<u8>]) -> Answer<(Keys, Keys)> {
    let mut dels: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            dels.extend(covered(d, universe));
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (then_puts, then_dels) = duplicates(&t.success, universe)?;
        let (else_puts, else_dels) = duplicates(&t.failure, universe)?;
        for k in &then_puts {
            if puts.contains(k) || dels.contains(k) {
                return Err(DUPLICATE_KEY);
            }
            puts.insert(k.clone());
        }
        for k in &else_puts {
            if (puts.contains(k) && !then_puts.contains(k)) || dels.contains(k) {
                return Err(DUPLICATE_KEY);
            }
            puts.insert(k.clone());
        }
        dels.extend(then_dels);
        dels.extend(else_dels);
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || dels.contains(&p.key) {
                return Err(DUPLICATE_KEY);
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

fn check_duplicates(ops: &[RequestOp]) -> Answer<()> {
    let universe: Vec<Vec<u8>> = super::KEYS.iter().map(|k| k.to_vec()).collect();
    duplicates(ops, &universe).map(|_| ())
}
