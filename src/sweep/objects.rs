//! Object storage: prefix rules (streamed listing, versions, Object Lock, multipart) and
//! objects linked from table rows (objects first, rows only once their objects are gone).

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use sqlx::Row;

use super::decide::{due_versions, excluded, BatchSizing};
use super::{Mode, RuleRun, SAMPLE_SIZE};
use crate::config::{Objects, PrefixTarget};
use crate::preflight::db_message;
use crate::store::pg_sql::Selection;
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
        if let Err(e) = walk(rr, &s3, p, bucket, cutoff, true, &mut totals).await {
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
                rr.report.status = "refused".into();
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
    if let Err(e) = walk(rr, &s3, p, bucket, cutoff, false, &mut done).await {
        rr.error(e);
        rr.report.status = if rr.report.deleted > 0 {
            "partial"
        } else {
            "failed"
        }
        .into();
    }
    rr.report.matched = rr.report.deleted + rr.report.held + rr.report.failed;
    if rr.report.samples.is_empty() {
        rr.report.samples = done.samples;
    }
    if !rr.cancelled() {
        multipart(rr, &s3, p, now).await;
    }
    if rr.report.failed > 0 && rr.report.status == "succeeded" {
        rr.report.status = "partial".into();
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
/// it deletes due versions in chunks, several requests in flight.
async fn walk(
    rr: &mut RuleRun<'_>,
    s3: &S3Store,
    p: &PrefixTarget,
    bucket: BucketInfo,
    cutoff: DateTime<Utc>,
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
            rr.report.status = "interrupted".into();
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
            let batch = std::mem::take(&mut pending);
            apply(rr, s3, p, batch).await;
        }
        if count_only {
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
            rr.report.status = "partial".into();
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

/// Deletes due rows of one table whose objects are gone, objects first. Returns false
/// when the rule must stop (shutdown or a database failure).
pub(crate) async fn run_linked(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    selection: &Selection<'_>,
    objects: &Objects,
    bucket: BucketInfo,
    size: &mut u32,
    sizing: BatchSizing,
) -> bool {
    let s3 = rr.engine.stores.s3(&objects.store).clone();
    let mut skip: Vec<String> = Vec::new();
    let mut objects_deleted = rr
        .report
        .details
        .get("objects_deleted")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    loop {
        if rr.cancelled() {
            rr.report.status = "interrupted".into();
            return false;
        }
        let started = Instant::now();
        let limit = i64::from(*size);
        let st = selection.select_with_objects(&objects.key_columns, &skip, limit);
        let rows = match super::table::with_retry(|| pg.fetch_all(&st)).await {
            Ok(r) => r,
            Err(e) => {
                rr.report.status = if rr.report.deleted > 0 {
                    "partial"
                } else {
                    "failed"
                }
                .into();
                rr.error(format!("reading rows failed: {}", db_message(&e)));
                return false;
            }
        };
        if rows.is_empty() {
            break;
        }
        let fetched = rows.len();
        let rows: Vec<(String, String, Vec<String>)> = rows
            .iter()
            .filter_map(|r| Some((r.try_get(0).ok()?, r.try_get(1).ok()?, r.try_get(2).ok()?)))
            .collect();
        // Resolve every key to the versions that exist, then delete them all.
        let mut keys: Vec<String> = rows.iter().flat_map(|r| r.2.iter().cloned()).collect();
        keys.sort();
        keys.dedup();
        let listed: Vec<(String, Result<Vec<Listed>, String>)> = stream::iter(keys)
            .map(|k| {
                let s3 = s3.clone();
                async move {
                    let r = if bucket.versioned {
                        s3.versions_of(&k).await
                    } else {
                        current_of(&s3, &k).await
                    };
                    (k, r.map_err(|e| e.to_string()))
                }
            })
            .buffer_unordered(s3.max_in_flight * 4)
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
        let result = s3.delete_all(to_delete, false).await;
        objects_deleted += result.deleted.len() as u64;
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
        // Only rows whose every object is confirmed gone are deleted.
        let (mut ctids, mut fps) = (Vec::new(), Vec::new());
        for (ctid, fp, keys) in &rows {
            let worst = keys
                .iter()
                .map(|k| state.get(k).copied().unwrap_or(KeyState::Failed))
                .max()
                .unwrap_or(KeyState::Gone);
            match worst {
                KeyState::Gone => {
                    ctids.push(ctid.clone());
                    fps.push(fp.clone());
                }
                KeyState::Held => {
                    rr.report.held += 1;
                    skip.push(ctid.clone());
                }
                KeyState::Failed => {
                    rr.report.failed += 1;
                    skip.push(ctid.clone());
                }
            }
        }
        if !ctids.is_empty() {
            let st = selection.delete_rows(&objects.key_columns, ctids, fps);
            let attempted = ctids_len(&st);
            match super::table::with_retry(|| pg.execute(&st)).await {
                Ok(n) => {
                    rr.report.deleted += n;
                    if n < attempted {
                        // Rows changed since they were read: they stay for the next run
                        // (their objects are gone, which the next run sees as absent).
                        tracing::debug!(
                            skipped = attempted - n,
                            "rows changed concurrently; left for the next run"
                        );
                        if n == 0 {
                            break;
                        }
                    }
                    crate::metrics::record_batch(&rr.rule.name, "delete", n);
                }
                Err(e) => {
                    // The objects are gone; the rows stay and the next run removes them.
                    rr.report.status = "partial".into();
                    rr.error(format!("deleting rows failed: {}", db_message(&e)));
                    return false;
                }
            }
        }
        *size = sizing.next(*size, started.elapsed());
        if fetched < limit as usize {
            break;
        }
    }
    rr.report
        .details
        .insert("objects_deleted".into(), objects_deleted.into());
    if rr.report.failed > 0 && rr.report.status == "succeeded" {
        rr.report.status = "partial".into();
    }
    true
}

fn ctids_len(st: &crate::store::pg_sql::Statement) -> u64 {
    match st.params.0.first() {
        Some(crate::store::pg_sql::Param::TextArray(v)) => v.len() as u64,
        _ => 0,
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
    rr.report.status = "failed".into();
    rr.error(message);
}
