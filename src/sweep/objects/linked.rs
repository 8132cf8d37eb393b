//! Objects linked from table rows: rows first with their keys queued in the same
//! statement, then the queue drained of objects nothing references any more.

use super::references::{pending_done, pending_next};
use super::*;

/// Deletes the due rows of one table that has linked objects, then their objects.
///
/// Each batch deletes its rows and queues their keys in the same transaction
/// ([`Selection::delete_batch_queued`]); the queue is then drained: an object goes only
/// when no row of any table rule with `objects` in its store references it any more, and
/// no hold covers the row it belonged to. A crash leaves either rows with their objects,
/// or keys in the queue that the next run deletes. Returns false when the rule must stop.
pub(crate) async fn run_linked(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    table: &TableName,
    objects: &Objects,
    run: &mut Batches,
) -> bool {
    let s3 = rr.engine.stores.s3(&objects.store).clone();
    let bucket = scope.p.objects_bucket.unwrap_or_default();
    if let Err(e) = with_retry(|| pg.execute_script(PENDING_DDL)).await {
        rr.fail(format!(
            "cannot create the queue of objects to delete: {}",
            db_message(&e)
        ));
        return false;
    }
    let refs = match References::load(rr.engine, &objects.store).await {
        Ok(r) => r,
        Err(e) => {
            rr.fail(e);
            return false;
        }
    };
    let mut drain = Drain::new(pg, &s3, bucket, &refs, &objects.store);
    // Objects whose rows an earlier run deleted come first.
    let mut go_on = drain.run(rr).await;
    let queue = QueueTarget {
        objects_store: &objects.store,
        rule: &rr.rule.name,
        category: &rr.rule.category,
        subject_kind: scope.t.subject.as_ref().map(|s| s.kind.as_str()),
        key_columns: &objects.key_columns,
    };
    while go_on {
        if rr.cancelled() {
            rr.report.status = Status::Interrupted;
            go_on = false;
            break;
        }
        let Some(holds) = run.enter(rr, scope).await else {
            go_on = false;
            break;
        };
        let selection = scope.selection(table, &holds, &run.skip);
        let limit = i64::from(run.size);
        let batch = Batch::First(limit);
        let statement = |b: &Batch| selection.delete_batch_queued(b, &queue);
        let started = Instant::now();
        let result = run_split(pg, &selection, &batch, &statement, true, run.sizing.target).await;
        run.guard.leave().await;
        let done = match result {
            Ok(d) => d,
            Err(e) => {
                rr.report.status = if rr.report.deleted > 0 {
                    Status::Partial
                } else {
                    Status::Failed
                };
                rr.error(format!("deleting rows failed: {}", error_ref(&e)));
                go_on = false;
                break;
            }
        };
        let taken = done.changed + done.bad.len() as u64;
        let changed = done.changed;
        run.done(rr, done, started.elapsed()).await;
        if changed > 0 && !drain.run(rr).await {
            go_on = false;
        }
        if taken < limit as u64 {
            break;
        }
    }
    drain.report(rr);
    if rr.report.failed > 0 && rr.report.status == Status::Succeeded {
        rr.report.status = Status::Partial;
    }
    go_on
}

/// What draining the queue did, over one rule's run.
pub(super) struct Drain<'a> {
    pg: &'a PgStore,
    s3: &'a S3Store,
    bucket: BucketInfo,
    refs: &'a References,
    store: &'a str,
    /// Queue entries up to this id were tried this run.
    after: i64,
    versions_deleted: u64,
    /// Kept by Object Lock or by a hold on the row's subject or category; stay queued.
    held: u64,
    /// Kept because a row still references them; leave the queue.
    referenced: u64,
    /// Keys handled this run.
    seen: HashSet<String>,
}

impl<'a> Drain<'a> {
    fn new(
        pg: &'a PgStore,
        s3: &'a S3Store,
        bucket: BucketInfo,
        refs: &'a References,
        store: &'a str,
    ) -> Self {
        Self {
            pg,
            s3,
            bucket,
            refs,
            store,
            after: 0,
            versions_deleted: 0,
            held: 0,
            referenced: 0,
            seen: HashSet::new(),
        }
    }

    /// Deletes the queued objects not yet tried this run. False when the rule must stop.
    async fn run(&mut self, rr: &mut RuleRun<'_>) -> bool {
        loop {
            let st = pending_next(self.store, self.after, 1000);
            let rows = match with_retry(|| self.pg.fetch_all(&st)).await {
                Ok(r) => r,
                Err(e) => {
                    rr.report.status = Status::Partial;
                    rr.error(format!("cannot read the object queue: {}", db_message(&e)));
                    return false;
                }
            };
            let page = pending_rows(&rows);
            let Some(last) = page.last() else {
                return true;
            };
            self.after = last.id;
            // Every entry of the page's keys, on later pages too: a key shared by rows of
            // several subjects stays while any of them is held.
            let mut keys: Vec<String> = page
                .iter()
                .map(|e| e.key.clone())
                .filter(|k| !self.seen.contains(k))
                .collect();
            keys.sort();
            keys.dedup();
            if keys.is_empty() {
                continue;
            }
            self.seen.extend(keys.iter().cloned());
            let st = Statement {
                sql: PENDING_OF_KEYS.into(),
                params: Params(vec![Param::Text(self.store.into()), Param::TextArray(keys)]),
            };
            let entries = match with_retry(|| self.pg.fetch_all(&st)).await {
                Ok(rows) => pending_rows(&rows),
                Err(e) => {
                    rr.report.status = Status::Partial;
                    rr.error(format!("cannot read the object queue: {}", db_message(&e)));
                    return false;
                }
            };
            let mut guard = rr.hold_guard();
            let holds = match guard.enter(&rr.engine.audit).await {
                Ok(h) => h,
                Err(e) => {
                    guard.leave().await;
                    rr.report.status = Status::Partial;
                    rr.error(format!("cannot read holds: {}", db_message(&e)));
                    return false;
                }
            };
            let ok = self.delete(rr, entries, &holds).await;
            guard.leave().await;
            if !ok {
                return false;
            }
        }
    }

    /// Deletes the objects of `entries` that nothing keeps, under the holds lock.
    async fn delete(
        &mut self,
        rr: &mut RuleRun<'_>,
        entries: Vec<Pending>,
        holds: &HoldSet,
    ) -> bool {
        let held_keys: HashSet<String> = entries
            .iter()
            .filter(|e| e.held(holds))
            .map(|e| e.key.clone())
            .collect();
        self.held += held_keys.len() as u64;
        let free: Vec<Pending> = entries
            .into_iter()
            .filter(|e| !held_keys.contains(&e.key))
            .collect();
        let mut keys: Vec<String> = free.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let referenced = match self.refs.referenced(&keys).await {
            Ok(r) => r,
            Err(e) => {
                rr.report.status = Status::Partial;
                rr.error(format!(
                    "cannot check which objects rows still reference; none deleted: {e}"
                ));
                return false;
            }
        };
        let mut done: Vec<i64> = Vec::new();
        let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
        for e in free {
            if referenced.contains(&e.key) {
                // Whoever deletes the referencing row queues the key again.
                done.push(e.id);
            } else {
                by_key.entry(e.key).or_default().push(e.id);
            }
        }
        self.referenced += referenced.len() as u64;
        let keys: Vec<String> = by_key.keys().cloned().collect();
        let bucket = self.bucket;
        let listed: Vec<(String, Result<Vec<Listed>, String>)> = stream::iter(keys)
            .map(|k| {
                let s3 = self.s3.clone();
                async move {
                    let r = if bucket.versioned {
                        s3.versions_of(&k).await
                    } else {
                        current_of(&s3, &k).await
                    };
                    (k, r.map_err(|e| e.to_string()))
                }
            })
            .buffer_unordered(self.s3.max_in_flight * 4)
            .collect()
            .await;
        let mut state: HashMap<String, KeyState> = HashMap::new();
        let mut to_delete = Vec::new();
        for (k, r) in listed {
            match r {
                Ok(versions) => {
                    to_delete.extend(versions.iter().map(|v| {
                        let mut o = v.to_ref();
                        if !bucket.versioned {
                            o.version_id = None;
                        }
                        o
                    }));
                    state.insert(k, KeyState::Gone);
                }
                Err(e) => {
                    let key = key_ref(rr, &k);
                    rr.error(format!("{key}: {e}"));
                    state.insert(k, KeyState::Failed);
                }
            }
        }
        let result = self.s3.delete_all(to_delete, false).await;
        self.versions_deleted += result.deleted.len() as u64;
        rr.report.bytes += result.deleted.iter().map(|o| o.size).sum::<u64>();
        for o in &result.held {
            state.insert(o.key.clone(), KeyState::Held);
        }
        for (o, e) in &result.failed {
            if state.get(&o.key) != Some(&KeyState::Held) {
                state.insert(o.key.clone(), KeyState::Failed);
            }
            let key = key_ref(rr, &o.key);
            rr.error(format!("{key}: {e}"));
        }
        for (k, ids) in by_key {
            match state.get(&k).copied().unwrap_or(KeyState::Failed) {
                KeyState::Gone => done.extend(ids),
                // Object Lock: stays queued until its retention ends.
                KeyState::Held => self.held += 1,
                KeyState::Failed => rr.report.failed += 1,
            }
        }
        if !done.is_empty() {
            let st = pending_done(done);
            if let Err(e) = with_retry(|| self.pg.execute(&st)).await {
                // The objects are gone; the entries go on the next run (absent is gone).
                rr.error(format!(
                    "cannot update the object queue: {}",
                    db_message(&e)
                ));
            }
        }
        true
    }

    fn report(&self, rr: &mut RuleRun<'_>) {
        let d = &mut rr.report.details;
        let before = d
            .get("objects_deleted")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        d.insert(
            "objects_deleted".into(),
            (before + self.versions_deleted).into(),
        );
        if self.held > 0 {
            d.insert("objects_held".into(), self.held.into());
        }
        if self.referenced > 0 {
            d.insert("objects_kept_referenced".into(), self.referenced.into());
        }
    }
}

pub(super) fn pending_rows(rows: &[sqlx::postgres::PgRow]) -> Vec<Pending> {
    rows.iter()
        .filter_map(|r| {
            Some(Pending {
                id: r.try_get(0).ok()?,
                key: r.try_get(1).ok()?,
                category: r.try_get(2).ok()?,
                subject_kind: r.try_get(3).ok()?,
                subject_id: r.try_get(4).ok()?,
            })
        })
        .collect()
}

/// One queued object.
pub(super) struct Pending {
    id: i64,
    key: String,
    category: String,
    subject_kind: Option<String>,
    subject_id: Option<String>,
}

impl Pending {
    /// Whether a hold covers the row this object belonged to.
    fn held(&self, holds: &HoldSet) -> bool {
        if holds.category(&self.category).is_some() {
            return true;
        }
        match (&self.subject_kind, &self.subject_id) {
            (Some(kind), Some(id)) => holds.subject_ids(kind).iter().any(|h| same_subject(h, id)),
            _ => false,
        }
    }
}

/// Whether a hold's id and a row's subject (its column's text) name the same subject:
/// equal as text, as integers (`042` is 42) or as uuids (in any case).
pub(super) fn same_subject(hold: &str, row: &str) -> bool {
    let (h, r) = (hold.trim(), row.trim());
    if h == r {
        return true;
    }
    if let (Ok(a), Ok(b)) = (h.parse::<i64>(), r.parse::<i64>()) {
        return a == b;
    }
    matches!((uuid::Uuid::parse_str(h), uuid::Uuid::parse_str(r)), (Ok(a), Ok(b)) if a == b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum KeyState {
    Gone,
    Held,
    Failed,
}

/// The current object at exactly `key` on an unversioned bucket (empty when absent).
pub(super) async fn current_of(
    s3: &S3Store,
    key: &str,
) -> Result<Vec<Listed>, crate::store::s3::S3Error> {
    Ok(s3.head(key).await?.into_iter().collect())
}
