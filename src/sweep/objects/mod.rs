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

mod linked;
mod references;

pub(crate) use linked::run_linked;
pub(crate) use references::References;

/// Runs a prefix rule.
pub(crate) async fn run_prefix(rr: &mut RuleRun<'_>, p: &PrefixTarget, bucket: BucketInfo) {
    let s3 = rr.engine.stores.s3(&rr.rule.store).clone();
    let now = match rr.as_of {
        Some(t) => t,
        None => match rr.engine.audit.now().await {
            Ok(n) => n,
            Err(e) => return rr.fail(format!("cannot read the clock: {e}")),
        },
    };
    let category = rr.engine.config.category_of(rr.rule).clone();
    let Some(cutoff) = super::decide::cutoff(now, &rr.rule.retain, category.min_retain.as_ref())
    else {
        return rr.fail("the cutoff is out of range");
    };
    rr.report.cutoff = Some(cutoff);
    let category_hold = match rr.engine.audit.category_hold(&rr.rule.category).await {
        Ok(h) => h,
        Err(e) => return rr.fail(format!("cannot read holds: {e}")),
    };
    let refs = match References::load(rr.engine, &rr.rule.store).await {
        Ok(r) => r,
        Err(e) => return rr.fail(e),
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
            return rr.fail(e);
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
