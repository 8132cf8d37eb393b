//! Table rules: count, guard, then batches of deletes or anonymising updates, each its
//! own short transaction; linked objects go before their rows.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use sqlx::Row;
use tracing::{debug, warn};

use super::decide::{self, BatchSizing, Walk};
use super::{Mode, RuleRun, SAMPLE_SIZE};
use crate::anonymise::hmac_pads;
use crate::config::{Action, TableName, TableTarget};
use crate::preflight::{db_message, PreparedTable};
use crate::store::pg_sql::{hmac_names, Batch, Selection, Statement, HEAP_SHAPE};
use crate::store::PgStore;

/// Attempts per batch before the rule gives up (connection loss, lock timeout).
const BATCH_ATTEMPTS: u32 = 4;

pub(crate) async fn run(rr: &mut RuleRun<'_>, t: &TableTarget, p: &PreparedTable) {
    let pg = rr.engine.stores.pg(&rr.rule.store).clone();
    let config = rr.engine.config.clone();
    let category = config.category_of(rr.rule);
    let now = match rr.as_of {
        Some(t) => t,
        None => match with_retry(|| pg.now()).await {
            Ok(n) => n,
            Err(e) => {
                return fail(
                    rr,
                    format!("cannot read the database clock: {}", db_message(&e)),
                )
            }
        },
    };
    // A sweep removes what is past its cutoff. An erasure removes the subject's records
    // whatever their age, except that a delete never reaches inside the legal floor;
    // an anonymising rule may anonymise inside it (the record stays, de-identified).
    let cutoff = match (&rr.erase, rr.rule.action) {
        (None, _) => match decide::cutoff(now, &rr.rule.retain, category.min_retain.as_ref()) {
            Some(c) => Some(c),
            None => return fail(rr, "the cutoff is out of range"),
        },
        (Some(_), Action::Anonymise) => None,
        (Some(_), Action::Delete) => category.min_retain.and_then(|f| f.before(now)),
    };
    rr.report.cutoff = cutoff;
    let only_subject = rr.erase.as_ref().map(|(_, id)| id.clone());

    let held_ids = match &t.subject {
        Some(s) => match rr.engine.audit.held_subjects(&s.kind).await {
            Ok(ids) => ids,
            Err(e) => return fail(rr, format!("cannot read holds: {e}")),
        },
        None => Vec::new(),
    };
    let category_hold = match rr.engine.audit.category_hold(&rr.rule.category).await {
        Ok(h) => h,
        Err(e) => return fail(rr, format!("cannot read holds: {e}")),
    };
    let hmac = if p.uses_hmac {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        Some(hmac_pads(key.as_bytes()))
    } else {
        None
    };
    let mut tables = p.info.work_tables(&t.table);
    macro_rules! selection {
        ($table:expr) => {
            make_selection($table, t, p, cutoff, &held_ids, only_subject.as_deref())
        };
    }

    // Count what is due (exact, the same selection the batches use).
    let guarded = rr.erase.is_none() && rr.rule.max_delete.is_some() && !rr.allow_mass_delete;
    let needs_count = rr.mode == Mode::DryRun || category_hold.is_some() || guarded;
    if needs_count {
        let (mut due, mut held, mut oldest) = (0u64, 0u64, None);
        // With an index on the age column the oldest due record is one index probe away;
        // without one it costs nothing extra to find it during the count's pass.
        let indexed = p.info.has_index_on(t.age_column.as_str());
        for table in &tables {
            let counted = with_retry(|| async {
                let (d, h, mut o) = count(&pg, selection!(table).count(!indexed)).await?;
                if indexed && d > h {
                    o = pg
                        .fetch_one(&selection!(table).oldest())
                        .await?
                        .try_get(0)?;
                }
                Ok((d, h, o))
            })
            .await;
            match counted {
                Ok((d, h, o)) => {
                    due += d;
                    held += h;
                    oldest = min_opt(oldest, o);
                }
                Err(e) => {
                    return fail(
                        rr,
                        format!("counting due records failed: {}", db_message(&e)),
                    )
                }
            }
        }
        if let Some(o) = oldest {
            rr.report
                .details
                .insert("oldest_due".into(), o.to_rfc3339().into());
        }
        if let Some(hold) = category_hold {
            rr.report.held = due;
            rr.report
                .details
                .insert("category_hold".into(), hold.into());
            return;
        }
        rr.report.matched = due - held;
        rr.report.held = held;
        if let (Some(guard), true) = (rr.rule.max_delete, rr.erase.is_none()) {
            let total = match with_retry(|| total_rows(&pg, &t.table)).await {
                Ok(n) => n,
                Err(e) => {
                    return fail(rr, format!("counting the table failed: {}", db_message(&e)))
                }
            };
            rr.report
                .details
                .insert("max_delete".into(), guard.to_string().into());
            if guard.exceeded(rr.report.matched, total) && !rr.allow_mass_delete {
                rr.report.status = "refused".into();
                rr.error(format!(
                    "would {} {} of {} records, above max_delete {guard}; nothing was changed (use --allow-mass-delete to override)",
                    rr.rule.action.as_str(),
                    rr.report.matched,
                    total
                ));
                return;
            }
        }
        if let Some(o) = &t.objects {
            rr.report
                .details
                .insert("objects_store".into(), o.store.clone().into());
        }
        for table in &tables {
            if rr.report.samples.len() >= SAMPLE_SIZE {
                break;
            }
            let st = selection!(table).sample(&p.primary_key, SAMPLE_SIZE as i64);
            if let Ok(rows) = pg.fetch_all(&st).await {
                rr.report
                    .samples
                    .extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
            }
        }
        rr.report.samples.truncate(SAMPLE_SIZE);
        if rr.mode == Mode::DryRun {
            if let (Some(c), None) = (cutoff, &rr.erase) {
                super::partitions::remove_expired(rr, &pg, t, p, c, &held_ids).await;
            }
            report_kept_within_floor(rr, &pg, t, p, now, &held_ids, only_subject.as_deref()).await;
            return;
        }
    }

    if let (Some(c), None) = (cutoff, &rr.erase) {
        let gone = super::partitions::remove_expired(rr, &pg, t, p, c, &held_ids).await;
        tables.retain(|leaf| !gone.contains(leaf));
    }
    let daemon = &config.daemon;
    let sizing = BatchSizing {
        min: daemon.min_batch_size,
        max: daemon.max_batch_size,
        target: daemon.max_batch_duration,
    };
    let mut size = daemon.batch_size;
    let mut batches = 0u64;
    let mut paged = false;
    let mut longest = Duration::ZERO;
    for table in &tables {
        if let Some(o) = &t.objects {
            let bucket = p.objects_bucket.unwrap_or_default();
            if !super::objects::run_linked(
                rr,
                &pg,
                &selection!(table),
                o,
                bucket,
                &mut size,
                sizing,
            )
            .await
            {
                break;
            }
            continue;
        }
        let selection = selection!(table);
        let mut walk = choose_walk(&pg, &selection).await;
        let walk_name = match walk {
            Walk::Index => "index",
            Walk::Pages { pages, .. } => {
                debug!(table = %table, pages, "batches walk the table's pages in order");
                "pages"
            }
        };
        rr.report
            .details
            .insert("batch_walk".into(), walk_name.into());
        // A row the application updates during the walk may move to a page past the
        // end the walk started with: the walk goes once more over the pages added since.
        let mut second_lap = false;
        let action = rr.rule.action;
        let statement = |batch: Batch| match action {
            Action::Delete => selection.delete_batch(batch),
            Action::Anonymise => selection.anonymise_batch(batch, hmac.clone(), &hmac_names()),
        };
        let mut next_page = 0u64;
        loop {
            if rr.cancelled() {
                rr.report.status = "interrupted".into();
                break;
            }
            let batch = match walk {
                Walk::Index => Batch::First(i64::from(size)),
                Walk::Pages {
                    pages,
                    rows_per_page,
                } => {
                    if next_page >= pages && !second_lap {
                        second_lap = true;
                        if let Ok((now_pages, ..)) = heap_shape(&pg, table).await {
                            walk = Walk::Pages {
                                pages: now_pages,
                                rows_per_page,
                            };
                            continue;
                        }
                    }
                    if next_page >= pages {
                        break;
                    }
                    Batch::Pages {
                        from: next_page,
                        to: (next_page + decide::pages_for(size, rows_per_page)).min(pages),
                        skip_locked: false,
                    }
                }
            };
            let started = Instant::now();
            let n = match with_retry(|| run_batch(&pg, batch, &statement, sizing.target)).await {
                Ok(n) => n,
                Err(e) => {
                    rr.report.status = if rr.report.deleted + rr.report.anonymised > 0 {
                        "partial"
                    } else {
                        "failed"
                    }
                    .into();
                    rr.error(format!("batch on {table} failed: {}", db_message(&e)));
                    break;
                }
            };
            let elapsed = started.elapsed();
            longest = longest.max(elapsed);
            batches += 1;
            paged |= matches!(batch, Batch::Pages { .. });
            match rr.rule.action {
                Action::Delete => rr.report.deleted += n,
                Action::Anonymise => rr.report.anonymised += n,
            }
            debug!(table = %table, rows = n, batch_size = size, elapsed_ms = elapsed.as_millis() as u64, "batch done");
            crate::metrics::record_batch(&rr.rule.name, rr.rule.action.as_str(), n);
            size = sizing.next(size, elapsed);
            match batch {
                Batch::First(limit) if n < limit as u64 => break,
                Batch::First(_) => {}
                Batch::Pages { to, .. } => next_page = to,
            }
        }
        if rr.report.status != "succeeded" {
            break;
        }
    }
    // Page batches commit without waiting for their WAL; make them durable before the
    // audit trail records them.
    if paged {
        if let Err(e) = with_retry(|| pg.flush_wal()).await {
            rr.report.status = "partial".into();
            rr.error(format!(
                "cannot confirm the batches reached disk: {}",
                db_message(&e)
            ));
        }
    }
    rr.report.details.insert("batches".into(), batches.into());
    rr.report.details.insert(
        "longest_batch_ms".into(),
        (longest.as_millis() as u64).into(),
    );

    // What is still due now is held, or was locked by the application and skipped.
    // Recount what is still due only when it can differ from what was processed: held
    // subjects, or linked objects that failed or are locked. Right after a large delete
    // that count walks every dead index entry, so it is skipped when nothing is held.
    let recount = !held_ids.is_empty() || t.objects.is_some();
    if !needs_count && !recount {
        rr.report.matched = rr.report.deleted + rr.report.anonymised;
    }
    if !needs_count && recount {
        let (mut due, mut held) = (0u64, 0u64);
        for table in &tables {
            if let Ok((d, h, _)) = count(&pg, selection!(table).count(false)).await {
                due += d;
                held += h;
            }
        }
        // Rows left by linked-object failures or Object Lock are still due here and were
        // already counted in `failed` / `held`; subject holds come on top.
        let object_held = rr.report.held;
        let left_unheld = due.saturating_sub(held);
        rr.report.held = object_held + held;
        rr.report.matched = rr.report.deleted
            + rr.report.anonymised
            + left_unheld.max(rr.report.failed + object_held);
    }
    report_kept_within_floor(rr, &pg, t, p, now, &held_ids, only_subject.as_deref()).await;
    if t.vacuum_analyze && rr.report.deleted > 0 {
        let sql = crate::store::pg_sql::analyze(&t.table);
        if let Err(e) = sqlx::query(&sql).execute(&pg.pool).await {
            warn!(error = %db_message(&e), "ANALYZE after the sweep failed");
        } else {
            rr.report.details.insert("analyzed".into(), true.into());
        }
    }
}

/// How the batches on `table` find their rows (see [`decide::choose_walk`]). Any catalog
/// or planner error falls back to the index walk, which is always correct.
async fn choose_walk(pg: &PgStore, selection: &Selection<'_>) -> Walk {
    let shape = heap_shape(pg, selection.table).await;
    let plan = pg
        .fetch_one(&selection.explain_due())
        .await
        .and_then(|row| row.try_get::<serde_json::Value, _>(0));
    match (shape, plan) {
        (Ok((pages, reltuples, relpages, version)), Ok(plan)) => {
            decide::choose_walk(&plan, version, pages, reltuples, relpages)
        }
        (Err(e), _) | (_, Err(e)) => {
            debug!(error = %db_message(&e), "cannot read the table's shape or plan: batches follow the index");
            Walk::Index
        }
    }
}

/// `(pages now, reltuples, relpages, server_version_num)` of `table`.
async fn heap_shape(pg: &PgStore, table: &TableName) -> Result<(u64, f64, i64, i32), sqlx::Error> {
    let row = sqlx::query(HEAP_SHAPE)
        .bind(table.quoted())
        .fetch_one(&pg.pool)
        .await?;
    Ok((
        row.try_get::<i64, _>(0)?.max(0) as u64,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

/// Runs one batch. A page batch first runs as one plain statement, the cheapest form,
/// waiting at most `lock_wait` for a row the application has locked; if it has to wait
/// longer, the same pages are done again skipping locked rows, so the sweep never holds
/// up the application for more than that.
async fn run_batch(
    pg: &PgStore,
    batch: Batch,
    statement: &impl Fn(Batch) -> Statement,
    lock_wait: Duration,
) -> Result<u64, sqlx::Error> {
    match batch {
        Batch::First(_) => pg.execute(&statement(batch)).await,
        Batch::Pages { from, to, .. } => {
            match pg.execute_batch(&statement(batch), lock_wait).await {
                Err(e) if lock_not_available(&e) => {
                    debug!(from, to, "rows in these pages are locked: skipping them");
                    pg.execute(&statement(Batch::Pages {
                        from,
                        to,
                        skip_locked: true,
                    }))
                    .await
                }
                r => r,
            }
        }
    }
}

fn lock_not_available(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03"))
}

fn make_selection<'a>(
    table: &'a TableName,
    t: &'a TableTarget,
    p: &'a PreparedTable,
    cutoff: Option<chrono::DateTime<chrono::Utc>>,
    held_ids: &'a [String],
    only_subject: Option<&'a str>,
) -> Selection<'a> {
    Selection {
        table,
        age_column: &t.age_column,
        age_kind: p.age_kind,
        cutoff,
        not_before: None,
        // The operator's filter narrows a retention rule ("resolved tickets"); an
        // erasure request covers every record of the subject.
        filter: if only_subject.is_some() {
            None
        } else {
            t.filter.as_deref()
        },
        subject_column: t.subject.as_ref().map(|s| &s.column),
        held_ids,
        only_subject,
        anonymise: &p.anonymise,
    }
}

fn fail(rr: &mut RuleRun<'_>, message: impl std::fmt::Display) {
    rr.report.status = "failed".into();
    rr.error(message);
}

async fn count(
    pg: &PgStore,
    st: Statement,
) -> Result<(u64, u64, Option<DateTime<Utc>>), sqlx::Error> {
    let row = pg.fetch_one(&st).await?;
    let due: i64 = row.try_get(0)?;
    let held: i64 = row.try_get(1)?;
    let oldest: Option<DateTime<Utc>> = row.try_get(2)?;
    Ok((due.max(0) as u64, held.max(0) as u64, oldest))
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// For an erasure under a legal floor: how many of the subject's records are kept
/// because they are inside the floor, and the date the first of them becomes erasable.
async fn report_kept_within_floor(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    t: &TableTarget,
    p: &PreparedTable,
    now: DateTime<Utc>,
    held_ids: &[String],
    only_subject: Option<&str>,
) {
    let (Some(_), Action::Delete) = (&rr.erase, rr.rule.action) else {
        return;
    };
    let Some(floor) = rr.engine.config.category_of(rr.rule).min_retain else {
        return;
    };
    let Some(floor_cutoff) = floor.before(now) else {
        return;
    };
    let (mut kept, mut first) = (0u64, None);
    for table in p.info.work_tables(&t.table) {
        let mut inside = make_selection(&table, t, p, None, held_ids, only_subject);
        inside.not_before = Some(floor_cutoff);
        if let Ok((n, _, oldest)) = count(pg, inside.count(true)).await {
            kept += n;
            first = min_opt(first, oldest);
        }
    }
    if kept > 0 {
        rr.report
            .details
            .insert("kept_within_floor".into(), kept.into());
        if let Some(f) = first.and_then(|f| floor.after(f)) {
            rr.report
                .details
                .insert("erasable_from".into(), f.to_rfc3339().into());
            rr.report.details.insert(
                "note".into(),
                format!(
                    "{kept} record(s) are kept under the legal floor of category `{}` ({floor}); the first becomes erasable on {}",
                    rr.rule.category,
                    f.format("%Y-%m-%d")
                )
                .into(),
            );
        }
    }
}

async fn total_rows(pg: &PgStore, table: &TableName) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(&crate::store::pg_sql::count_rows(table))
        .fetch_one(&pg.pool)
        .await?;
    Ok(n.max(0) as u64)
}

/// Whether a database error is worth retrying: lost connections, lock and statement
/// timeouts, serialization failures, a server shutting down.
pub(crate) fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some(
                "40001"
                    | "40P01"
                    | "55P03"
                    | "57014"
                    | "57P01"
                    | "57P02"
                    | "57P03"
                    | "08000"
                    | "08003"
                    | "08006"
            )
        ),
        _ => false,
    }
}

/// Runs `f` up to [`BATCH_ATTEMPTS`] times with exponential backoff on retryable errors.
pub(crate) async fn with_retry<T, F, Fut>(mut f: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < BATCH_ATTEMPTS && retryable(&e) => {
                warn!(attempt, error = %db_message(&e), "retrying after a transient database error");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
