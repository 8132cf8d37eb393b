//! Object storage: prefix rules (streamed listing, versions, Object Lock, multipart) and
//! objects linked from table rows (rows first, their keys queued in the same
//! transaction, then the objects that nothing references any more).
//!
//! Neither path deletes an object that a row of a table rule with `objects` in the same
//! store still references (young rows, held subjects' rows, rows that cannot be deleted).

use crate::report::Status;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use sqlx::Row;

use super::decide::{due_versions, excluded};
use super::table::{error_ref, run_split, with_retry, Batches, Scope};
use super::{Engine, Mode, RuleRun, SAMPLE_SIZE};
use crate::audit::holds::HoldSet;
use crate::config::{Objects, PrefixTarget, TableName, Target};
use crate::preflight::db_message;
use crate::store::pg_sql::{
    referenced_keys, Batch, Param, Params, QueueTarget, Statement, PENDING_DDL, PENDING_DONE,
    PENDING_EXISTS, PENDING_NEXT, PENDING_OF_KEYS, PENDING_QUEUED,
};
use crate::store::s3::{BucketInfo, BulkDelete, Listed, ObjectRef, S3Store, MAX_KEYS_PER_DELETE};
use crate::store::PgStore;

/// Runs a prefix rule.
pub(crate) async fn run_prefix(rr: &mut RuleRun<'_>, p: &PrefixTarget, bucket: BucketInfo) {
    let s3 = rr.engine.stores.s3(&rr.rule.store).clone();
    let now = match rr.as_of {
        Some(t) => t,
        None => match rr.engine.audit.now().await {
            Ok(n) => n,
            Err(e) => return fail(rr, format!("cannot read the clock: {e}")),
        },
    };
    let category = rr.engine.config.category_of(rr.rule).clone();
    let Some(cutoff) = super::decide::cutoff(now, &rr.rule.retain, category.min_retain.as_ref())
    else {
        return fail(rr, "the cutoff is out of range");
    };
    rr.report.cutoff = Some(cutoff);
    let category_hold = match rr.engine.audit.category_hold(&rr.rule.category).await {
        Ok(h) => h,
        Err(e) => return fail(rr, format!("cannot read holds: {e}")),
    };
    let refs = match References::load(rr.engine, &rr.rule.store).await {
        Ok(r) => r,
        Err(e) => return fail(rr, e),
    };
    rr.report
        .details
        .insert("versioned".into(), bucket.versioned.into());
    rr.report
        .details
        .insert("object_lock".into(), bucket.object_lock.into());

    // A dry-run, a guard or a category hold needs the full count before anything is
    // removed; a plain enforcing run lists once and deletes as pages arrive.
    let guarded = rr.rule.max_delete.is_some() && !rr.allow_mass_delete;
    let count_first = rr.mode == Mode::DryRun || category_hold.is_some() || guarded;
    if count_first {
        let mut totals = Tally::default();
        if let Err(e) = walk(rr, &s3, p, bucket, cutoff, &refs, true, &mut totals).await {
            return fail(rr, e);
        }
        rr.report.samples = totals.samples.clone();
        if let Some(o) = totals.oldest {
            rr.report
                .details
                .insert("oldest_due".into(), o.to_rfc3339().into());
        }
        if let Some(hold) = category_hold {
            rr.report.held = totals.due;
            rr.report
                .details
                .insert("category_hold".into(), hold.into());
            return;
        }
        if let Some(guard) = rr.rule.max_delete {
            rr.report
                .details
                .insert("max_delete".into(), guard.to_string().into());
            if guard.exceeded(totals.due, totals.seen) && !rr.allow_mass_delete {
                rr.report.matched = totals.due;
                rr.report.status = Status::Refused;
                rr.error(format!(
                    "would delete {} of {} object versions, above max_delete {guard}; nothing was changed (use --allow-mass-delete to override)",
                    totals.due, totals.seen
                ));
                return;
            }
        }
        if rr.mode == Mode::DryRun {
            rr.report.matched = totals.due;
            rr.report.bytes = totals.bytes;
            multipart(rr, &s3, p, now).await;
            return;
        }
    }
    // Enforce: delete as pages arrive (memory stays flat).
    let mut done = Tally::default();
    rr.report.referenced = 0;
    rr.report.details.remove("left_to_the_queue");
    if let Err(e) = walk(rr, &s3, p, bucket, cutoff, &refs, false, &mut done).await {
        rr.error(e);
        rr.report.status = if rr.report.deleted > 0 {
            Status::Partial
        } else {
            Status::Failed
        };
    }
    rr.report.matched = rr.report.deleted + rr.report.held + rr.report.failed;
    if rr.report.samples.is_empty() {
        rr.report.samples = done.samples;
    }
    if !rr.cancelled() {
        multipart(rr, &s3, p, now).await;
    }
    if rr.report.failed > 0 && rr.report.status == Status::Succeeded {
        rr.report.status = Status::Partial;
    }
}

#[derive(Default)]
struct Tally {
    seen: u64,
    due: u64,
    bytes: u64,
    oldest: Option<DateTime<Utc>>,
    samples: Vec<String>,
}

/// Lists the prefix page by page. With `count_only` it only tallies what is due; else
/// it deletes due versions in chunks, several requests in flight. Objects that a row
/// still references are left out either way, and counted in `referenced`.
#[allow(clippy::too_many_arguments)]
async fn walk(
    rr: &mut RuleRun<'_>,
    s3: &S3Store,
    p: &PrefixTarget,
    bucket: BucketInfo,
    cutoff: DateTime<Utc>,
    refs: &References,
    count_only: bool,
    tally: &mut Tally,
) -> Result<(), String> {
    let flush_at = MAX_KEYS_PER_DELETE * s3.max_in_flight;
    let mut pending: Vec<ObjectRef> = Vec::new();
    let mut group: Vec<Listed> = Vec::new();
    let mut token: Option<String> = None;
    let mut marker: Option<(String, Option<String>)> = None;
    loop {
        if rr.cancelled() {
            rr.report.status = Status::Interrupted;
            break;
        }
        let (items, more) = if bucket.versioned {
            let (items, next) = s3
                .list_versions_page(&p.prefix, marker.take())
                .await
                .map_err(|e| e.to_string())?;
            let more = next.is_some();
            marker = next;
            (items, more)
        } else {
            let (items, next) = s3
                .list_page(&p.prefix, token.take())
                .await
                .map_err(|e| e.to_string())?;
            let more = next.is_some();
            token = next;
            (items, more)
        };
        for item in items {
            if group.first().is_some_and(|g| g.key != item.key) {
                let g = std::mem::take(&mut group);
                consider(
                    rr,
                    s3,
                    p,
                    bucket,
                    cutoff,
                    &g,
                    tally,
                    &mut pending,
                    count_only,
                )
                .await;
            }
            group.push(item);
        }
        if !more {
            let g = std::mem::take(&mut group);
            consider(
                rr,
                s3,
                p,
                bucket,
                cutoff,
                &g,
                tally,
                &mut pending,
                count_only,
            )
            .await;
        }
        if !count_only && (pending.len() >= flush_at || !more) {
            let mut batch = std::mem::take(&mut pending);
            // Holds apply at once, and no delete starts once the run's liveness is lost.
            let mut guard = rr.hold_guard();
            let holds = match guard.enter(&rr.engine.audit).await {
                Ok(h) => h,
                Err(e) => {
                    guard.leave().await;
                    return Err(format!("cannot read holds: {}", db_message(&e)));
                }
            };
            if let Some(id) = holds.category(&rr.rule.category) {
                guard.leave().await;
                rr.report.details.insert("category_hold".into(), id.into());
                break;
            }
            let checked = leave_referenced(rr, refs, &mut batch).await;
            if checked.is_ok() {
                apply(rr, s3, p, batch).await;
            }
            guard.leave().await;
            checked?;
            rr.record_progress(|_| {}).await;
        }
        if count_only {
            let before: (usize, u64) = (pending.len(), pending.iter().map(|o| o.size).sum());
            leave_referenced(rr, refs, &mut pending).await?;
            tally.due -= (before.0 - pending.len()) as u64;
            tally.bytes -= before.1 - pending.iter().map(|o| o.size).sum::<u64>();
            pending.clear();
        }
        if !more {
            break;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn consider(
    rr: &mut RuleRun<'_>,
    s3: &S3Store,
    p: &PrefixTarget,
    bucket: BucketInfo,
    cutoff: DateTime<Utc>,
    group: &[Listed],
    tally: &mut Tally,
    pending: &mut Vec<ObjectRef>,
    count_only: bool,
) {
    let Some(first) = group.first() else { return };
    if excluded(&first.key, &p.exclude) {
        return;
    }
    tally.seen += group.len() as u64;
    let due = due_versions(group, cutoff, p.versions, bucket.versioned);
    if due.is_empty() {
        return;
    }
    if !p.tags.is_empty() {
        let current = group
            .iter()
            .find(|l| l.is_latest && !l.delete_marker)
            .or(group.first());
        let tags = match current {
            Some(c) => s3.tags(&c.key, c.version_id.as_deref()).await,
            None => return,
        };
        match tags {
            Ok(tags) => {
                let all = p
                    .tags
                    .iter()
                    .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v));
                if !all {
                    return;
                }
            }
            Err(e) => {
                // Counted once, by the walk that would delete.
                if !count_only {
                    rr.report.failed += due.len() as u64;
                }
                rr.error(e);
                return;
            }
        }
    }
    tally.due += due.len() as u64;
    let oldest = group.iter().map(|l| l.last_modified).min();
    tally.oldest = match (tally.oldest, oldest) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    tally.bytes += due.iter().map(|o| o.size).sum::<u64>();
    if tally.samples.len() < SAMPLE_SIZE {
        tally.samples.push(first.key.clone());
    }
    pending.extend(due);
}

/// Takes out of `batch` the objects a row still references, counting their keys.
async fn leave_referenced(
    rr: &mut RuleRun<'_>,
    refs: &References,
    batch: &mut Vec<ObjectRef>,
) -> Result<(), String> {
    let mut keys: Vec<String> = batch.iter().map(|o| o.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let referenced = refs.referenced(&keys).await.map_err(|e| {
        format!("cannot check which objects rows still reference; nothing was deleted: {e}")
    })?;
    // Objects whose rows are gone but which wait in the queue (held subjects' included)
    // are the queue's to delete, not this rule's.
    let queued = refs.queued(&keys).await.map_err(|e| {
        format!("cannot read the queue of objects to delete; nothing was deleted: {e}")
    })?;
    batch.retain(|o| !referenced.contains(&o.key) && !queued.contains(&o.key));
    rr.report.referenced += referenced.len() as u64;
    if !queued.is_empty() {
        let before = rr
            .report
            .details
            .get("left_to_the_queue")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        rr.report.details.insert(
            "left_to_the_queue".into(),
            (before + queued.len() as u64).into(),
        );
    }
    Ok(())
}

async fn apply(rr: &mut RuleRun<'_>, s3: &S3Store, p: &PrefixTarget, batch: Vec<ObjectRef>) {
    if batch.is_empty() {
        return;
    }
    let result = s3.delete_all(batch, p.bypass_governance_retention).await;
    tally_bulk(rr, &result);
}

fn tally_bulk(rr: &mut RuleRun<'_>, result: &BulkDelete) {
    rr.report.deleted += result.deleted.len() as u64;
    rr.report.bytes += result.deleted.iter().map(|o| o.size).sum::<u64>();
    rr.report.held += result.held.len() as u64;
    rr.report.failed += result.failed.len() as u64;
    crate::metrics::record_batch(&rr.rule.name, "delete", result.deleted.len() as u64);
    for (o, e) in result.failed.iter().take(super::MAX_ERRORS) {
        let key = key_ref(rr, &o.key);
        rr.error(format!("{key}: {e}"));
    }
}

/// Aborts (or, in a dry-run, counts) incomplete multipart uploads older than the rule says.
async fn multipart(rr: &mut RuleRun<'_>, s3: &S3Store, p: &PrefixTarget, now: DateTime<Utc>) {
    let Some(after) = p.abort_multipart_after else {
        return;
    };
    let Some(cutoff) = after.before(now) else {
        return;
    };
    let uploads = match s3.multipart_uploads(&p.prefix).await {
        Ok(u) => u,
        Err(e) => {
            rr.error(e);
            rr.report.status = Status::Partial;
            return;
        }
    };
    let due: Vec<_> = uploads
        .into_iter()
        .filter(|(k, _, t)| *t < cutoff && !excluded(k, &p.exclude))
        .collect();
    let mut aborted = 0u64;
    if rr.mode == Mode::Enforce {
        for (key, id, _) in &due {
            match s3.abort_multipart(key, id).await {
                Ok(()) => aborted += 1,
                Err(e) => {
                    rr.report.failed += 1;
                    rr.error(e);
                }
            }
        }
    }
    rr.report
        .details
        .insert("multipart_due".into(), (due.len() as u64).into());
    rr.report
        .details
        .insert("multipart_aborted".into(), aborted.into());
    rr.report
        .details
        .insert("multipart_cutoff".into(), cutoff.to_rfc3339().into());
}

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
        fail(
            rr,
            format!(
                "cannot create the queue of objects to delete: {}",
                db_message(&e)
            ),
        );
        return false;
    }
    let refs = match References::load(rr.engine, &objects.store).await {
        Ok(r) => r,
        Err(e) => {
            fail(rr, e);
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
struct Drain<'a> {
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

fn pending_rows(rows: &[sqlx::postgres::PgRow]) -> Vec<Pending> {
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
struct Pending {
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
fn same_subject(hold: &str, row: &str) -> bool {
    let (h, r) = (hold.trim(), row.trim());
    if h == r {
        return true;
    }
    if let (Ok(a), Ok(b)) = (h.parse::<i64>(), r.parse::<i64>()) {
        return a == b;
    }
    matches!((uuid::Uuid::parse_str(h), uuid::Uuid::parse_str(r)), (Ok(a), Ok(b)) if a == b)
}

/// Every table that can reference objects of one s3 store: the tables of all table
/// rules (enabled or not) whose `objects` use it.
pub(crate) struct References {
    queries: Vec<(PgStore, String)>,
    /// The s3 store, and the databases whose queues may hold its keys.
    store: String,
    queues: Vec<PgStore>,
}

impl References {
    /// Reads the key columns' types of every referencing table. A table that cannot be
    /// read is an error: an object it might reference must not be deleted.
    pub(crate) async fn load(engine: &Engine, store: &str) -> Result<Self, String> {
        let mut queries = Vec::new();
        let (mut queue_stores, mut queues): (Vec<String>, Vec<PgStore>) = (Vec::new(), Vec::new());
        for rule in &engine.config.rules {
            let Target::Table(t) = &rule.target else {
                continue;
            };
            let Some(o) = t.objects.as_ref().filter(|o| o.store == store) else {
                continue;
            };
            let Some(pg) = engine.stores.pg.get(&rule.store) else {
                return Err(format!(
                    "rule `{}` references objects in `{store}` but its store `{}` is not connected",
                    rule.name, rule.store
                ));
            };
            let info = match pg.describe(&t.table).await {
                Ok(Some(i)) => i,
                Ok(None) => {
                    return Err(format!(
                        "rule `{}` references objects in `{store}` but table {} does not exist",
                        rule.name, t.table
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "cannot read the catalog of {} (rule `{}`): {}",
                        t.table,
                        rule.name,
                        db_message(&e)
                    ))
                }
            };
            let mut cols = Vec::new();
            for c in &o.key_columns {
                let Some(ci) = info.columns.get(c.as_str()) else {
                    return Err(format!(
                        "rule `{}`: key column {}.{c} does not exist",
                        rule.name, t.table
                    ));
                };
                cols.push((c.clone(), ci.type_name.ends_with("[]")));
            }
            queries.push((pg.clone(), referenced_keys(&t.table, &cols)));
            if !queue_stores.contains(&rule.store) {
                queue_stores.push(rule.store.clone());
                queues.push(pg.clone());
            }
        }
        Ok(Self {
            queries,
            store: store.to_owned(),
            queues,
        })
    }

    /// The keys of `keys` queued for deletion after their rows went: a prefix rule leaves
    /// them to the queue, which keeps an object while a hold covers its row.
    pub(crate) async fn queued(&self, keys: &[String]) -> Result<HashSet<String>, String> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        for pg in &self.queues {
            let exists = Statement {
                sql: PENDING_EXISTS.into(),
                params: Params(Vec::new()),
            };
            let there: bool = with_retry(|| pg.fetch_one(&exists))
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| db_message(&e))?;
            if !there {
                continue;
            }
            let st = Statement {
                sql: PENDING_QUEUED.into(),
                params: Params(vec![
                    Param::Text(self.store.clone()),
                    Param::TextArray(keys.to_vec()),
                ]),
            };
            let rows = with_retry(|| pg.fetch_all(&st))
                .await
                .map_err(|e| db_message(&e))?;
            out.extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
        }
        Ok(out)
    }

    /// The keys of `keys` that some row still references.
    pub(crate) async fn referenced(&self, keys: &[String]) -> Result<HashSet<String>, String> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        for (pg, sql) in &self.queries {
            let st = Statement {
                sql: sql.clone(),
                params: Params(vec![Param::TextArray(keys.to_vec())]),
            };
            let rows = with_retry(|| pg.fetch_all(&st))
                .await
                .map_err(|e| db_message(&e))?;
            out.extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
        }
        Ok(out)
    }
}

fn pending_next(store: &str, after: i64, limit: i64) -> Statement {
    Statement {
        sql: PENDING_NEXT.into(),
        params: Params(vec![
            Param::Text(store.into()),
            Param::BigInt(after),
            Param::BigInt(limit),
        ]),
    }
}

fn pending_done(ids: Vec<i64>) -> Statement {
    Statement {
        sql: PENDING_DONE.into(),
        params: Params(vec![Param::BigIntArray(ids)]),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KeyState {
    Gone,
    Held,
    Failed,
}

/// The current object at exactly `key` on an unversioned bucket (empty when absent).
async fn current_of(s3: &S3Store, key: &str) -> Result<Vec<Listed>, crate::store::s3::S3Error> {
    Ok(s3.head(key).await?.into_iter().collect())
}

/// How an object key appears in errors: as written when the trail keeps samples, else
/// as a short SHA-256 (keys such as `uploads/<account>/…` can be personal data; the hash
/// still lets an operator match it against a listing).
fn key_ref(rr: &RuleRun<'_>, key: &str) -> String {
    if rr.engine.config.audit.samples {
        key.to_owned()
    } else {
        use sha2::{Digest, Sha256};
        format!(
            "key sha256:{}",
            &hex::encode(Sha256::digest(key.as_bytes()))[..16]
        )
    }
}

fn fail(rr: &mut RuleRun<'_>, message: impl std::fmt::Display) {
    rr.report.status = Status::Failed;
    rr.error(message);
}
