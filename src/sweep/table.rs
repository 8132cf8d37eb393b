//! Table rules: count, guard, then batches of deletes or anonymising updates, each its
//! own short transaction; linked objects go before their rows.

use crate::report::Status;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use sqlx::Row;
use tracing::{debug, warn};

use super::decide::{self, BatchSizing, Walk};
use super::protect::Protection;
use super::{Mode, RuleRun, SAMPLE_SIZE};
use crate::anonymise::hmac_pads;
use crate::audit::holds::{HoldGuard, HoldSet};
use crate::config::{Action, TableName, TableTarget};
use crate::preflight::{db_message, PreparedTable};
use crate::store::pg_sql::{self, hmac_names, Batch, Keep, Selection, Statement};
use crate::store::PgStore;

/// Attempts per batch before the rule gives up (connection loss, lock timeout).
const BATCH_ATTEMPTS: u32 = 4;

/// What every batch of one table rule builds its selection from. Holds are not here:
/// each batch reads them afresh, under the holds lock.
pub(crate) struct Scope<'a> {
    pub t: &'a TableTarget,
    pub p: &'a PreparedTable,
    pub protection: Protection<'a>,
    /// The rule's clock.
    pub now: DateTime<Utc>,
    pub cutoff: Option<DateTime<Utc>>,
    /// Erasure: the subject id as its column spells it.
    pub only_subject: Option<String>,
}

/// The holds in force for one batch, resolved for the rule's table.
pub(crate) struct BatchHolds {
    pub held_ids: Vec<String>,
    pub keeps: Vec<Keep>,
    pub category_hold: Option<i64>,
}

/// No holds and no other rules' keeps: the bare due selection.
static NO_HOLDS: BatchHolds = BatchHolds {
    held_ids: Vec::new(),
    keeps: Vec::new(),
    category_hold: None,
};

impl<'a> Scope<'a> {
    pub(crate) fn holds(&self, holds: &HoldSet, category: &str) -> BatchHolds {
        BatchHolds {
            held_ids: self.protection.held_ids(holds),
            keeps: self.protection.keeps(self.now, holds),
            category_hold: holds.category(category),
        }
    }

    pub(crate) fn selection<'s>(
        &'s self,
        table: &'s TableName,
        holds: &'s BatchHolds,
        skip: &'s [String],
    ) -> Selection<'s> {
        Selection {
            table,
            age_column: &self.t.age_column,
            age_kind: self.p.age_kind,
            cutoff: self.cutoff,
            not_before: None,
            filter: self.t.filter.as_deref(),
            subject_column: self.t.subject.as_ref().map(|s| &s.column),
            subject_type: self.protection.own_subject_type(),
            held_ids: &holds.held_ids,
            only_subject: self.only_subject.as_deref(),
            anonymise: &self.p.anonymise,
            keeps: &holds.keeps,
            skip,
        }
    }
}

/// The rows one batch changed, and those it could not.
#[derive(Debug, Default)]
pub(crate) struct BatchDone {
    /// Rows deleted or anonymised.
    pub changed: u64,
    /// Rows the statement could not change (foreign key, trigger, CHECK, bad value).
    pub bad: Vec<String>,
    /// The first such error, without values: SQLSTATE, constraint, table, column.
    pub first_error: Option<String>,
}

pub(crate) async fn run<'r>(rr: &mut RuleRun<'r>, t: &'r TableTarget, p: &'r PreparedTable) {
    let pg = rr.engine.stores.pg(&rr.rule.store).clone();
    let Some(scope) = scope_of(rr, &pg, t, p).await else {
        return;
    };
    let start_holds = match rr.engine.audit.holds_now().await {
        Ok(h) => scope.holds(&h, &rr.rule.category),
        Err(e) => return fail(rr, format!("cannot read holds: {}", db_message(&e))),
    };
    let mut tables = p.info.work_tables(&t.table);

    // Count what is due (exact, the same selection the batches use) when something
    // depends on it: a dry-run, a category hold, the max_delete guard.
    let guarded = rr.erase.is_none() && rr.rule.max_delete.is_some() && !rr.allow_mass_delete;
    let needs_count = rr.mode == Mode::DryRun || start_holds.category_hold.is_some() || guarded;
    if needs_count && count_and_guard(rr, &pg, &scope, &tables, &start_holds).await == Next::Stop {
        return;
    }
    if let (Some(c), None) = (scope.cutoff, &rr.erase) {
        let gone = super::partitions::remove_expired(rr, &pg, &scope, c).await;
        tables.retain(|leaf| !gone.contains(leaf));
    }
    let bad = remove(rr, &pg, &scope, &tables).await;
    finish(rr, &pg, &scope, &tables, start_holds, needs_count, bad).await;
}

/// Whether the rule goes on after a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Go,
    Stop,
}

/// The rule's clock, cutoff, protection and (for an erasure) subject; `None` after
/// recording why the rule cannot run.
async fn scope_of<'a>(
    rr: &mut RuleRun<'a>,
    pg: &PgStore,
    t: &'a TableTarget,
    p: &'a PreparedTable,
) -> Option<Scope<'a>> {
    let config: &'a crate::config::Config = &rr.engine.config;
    let category = config.category_of(rr.rule).clone();
    let now = match rr.as_of {
        Some(t) => t,
        None => match with_retry(|| pg.now()).await {
            Ok(n) => n,
            Err(e) => {
                fail(
                    rr,
                    format!("cannot read the database clock: {}", db_message(&e)),
                );
                return None;
            }
        },
    };
    // A sweep removes what is past its cutoff. An erasure removes the subject's records
    // whatever their age, but never inside the legal floor of the rule's category,
    // whether it deletes or anonymises; other rules' floors are kept by the protection.
    let cutoff = match &rr.erase {
        None => match decide::cutoff(now, &rr.rule.retain, category.min_retain.as_ref()) {
            Some(c) => Some(c),
            None => {
                fail(rr, "the cutoff is out of range");
                return None;
            }
        },
        Some(_) => match category.min_retain {
            None => None,
            Some(f) => match f.before(now) {
                Some(c) => Some(c),
                None => {
                    fail(rr, "the floor's cutoff is out of range");
                    return None;
                }
            },
        },
    };
    rr.report.cutoff = cutoff;
    let protection = match Protection::new(config, rr.rule, t, &p.info) {
        Ok(pr) => pr,
        Err(e) => {
            fail(rr, e);
            return None;
        }
    };
    let only_subject = match &rr.erase {
        Some((_, id)) => match protection.own_subject_type().normalise(id) {
            Ok(v) => Some(v),
            Err(e) => {
                fail(rr, format!("subject {e}"));
                return None;
            }
        },
        None => None,
    };
    Some(Scope {
        t,
        p,
        protection,
        now,
        cutoff,
        only_subject,
    })
}

/// The count a dry-run reports, a category hold stops at, and the max_delete guard
/// judges; a dry-run ends here with its samples, partitions and floors.
async fn count_and_guard(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    tables: &[TableName],
    start_holds: &BatchHolds,
) -> Next {
    let (t, p) = (scope.t, scope.p);
    let counted = match count_all(pg, scope, tables, start_holds, true).await {
        Ok(c) => c,
        Err(e) => {
            fail(
                rr,
                format!("counting due records failed: {}", error_ref(&e)),
            );
            return Next::Stop;
        }
    };
    if let Some(o) = counted.oldest {
        rr.report
            .details
            .insert("oldest_due".into(), o.to_rfc3339().into());
    }
    if let Some(hold) = start_holds.category_hold {
        rr.report.held = counted.due;
        rr.report
            .details
            .insert("category_hold".into(), hold.into());
        return Next::Stop;
    }
    counted.report(rr);
    if let (Some(guard), true) = (rr.rule.max_delete, rr.erase.is_none()) {
        let total = match with_retry(|| total_rows(pg, &t.table)).await {
            Ok(n) => n,
            Err(e) => {
                fail(rr, format!("counting the table failed: {}", db_message(&e)));
                return Next::Stop;
            }
        };
        rr.report
            .details
            .insert("max_delete".into(), guard.to_string().into());
        if guard.exceeded(rr.report.matched, total) && !rr.allow_mass_delete {
            rr.report.status = Status::Refused;
            rr.error(format!(
                "would {} {} of {} records, above max_delete {guard}; nothing was changed (use --allow-mass-delete to override)",
                rr.rule.action.as_str(),
                rr.report.matched,
                total
            ));
            return Next::Stop;
        }
    }
    if let Some(o) = &t.objects {
        rr.report
            .details
            .insert("objects_store".into(), o.store.clone().into());
    }
    for table in tables {
        if rr.report.samples.len() >= SAMPLE_SIZE {
            break;
        }
        let st = scope
            .selection(table, start_holds, &[])
            .sample(&p.primary_key, SAMPLE_SIZE as i64);
        if let Ok(rows) = pg.fetch_all(&st).await {
            rr.report
                .samples
                .extend(rows.iter().filter_map(|r| r.try_get::<String, _>(0).ok()));
        }
    }
    rr.report.samples.truncate(SAMPLE_SIZE);
    if rr.mode == Mode::DryRun {
        if let (Some(c), None) = (scope.cutoff, &rr.erase) {
            super::partitions::remove_expired(rr, pg, scope, c).await;
        }
        report_kept_within_floor(rr, pg, scope, start_holds).await;
        return Next::Stop;
    }
    Next::Go
}

/// The batches over every table (leaf) of the rule; returns the rows that could not be
/// changed (blocked or failed), after recording them.
async fn remove(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    tables: &[TableName],
) -> u64 {
    let config = rr.engine.config.clone();
    let hmac = if scope.p.uses_hmac {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        Some(hmac_pads(key.as_bytes()))
    } else {
        None
    };
    let daemon = &config.daemon;
    let sizing = BatchSizing {
        min: daemon.min_batch_size,
        max: daemon.max_batch_size,
        target: daemon.max_batch_duration,
    };
    let mut run = Batches {
        size: daemon.batch_size,
        sizing,
        guard: rr.hold_guard(),
        count: 0,
        unconfirmed: None,
        restarts: 0,
        longest: Duration::ZERO,
        skip: Vec::new(),
        bad: 0,
        first_error: None,
    };
    for table in tables {
        run.skip.clear();
        let go_on = match &scope.t.objects {
            Some(o) => super::objects::run_linked(rr, pg, scope, table, o, &mut run).await,
            None => run_table(rr, pg, scope, table, hmac.clone(), &mut run).await,
        };
        // A walk that stopped early may leave page batches unconfirmed: confirm them
        // before the trail records them (no redo: the rule is stopping).
        let confirmed = run.confirm(rr, pg, scope, table, false).await;
        if !go_on || confirmed.is_err() || rr.report.status != Status::Succeeded {
            break;
        }
    }
    drop(run.guard);
    rr.report.details.insert("batches".into(), run.count.into());
    rr.report.details.insert(
        "longest_batch_ms".into(),
        (run.longest.as_millis() as u64).into(),
    );
    let bad = run.bad;
    if let Some(e) = run.first_error.take() {
        let (what, field) = match rr.rule.action {
            Action::Delete => ("deleted", "blocked"),
            Action::Anonymise => ("anonymised", "failed"),
        };
        rr.error(format!(
            "{bad} row(s) could not be {what} and stay ({field}); the first error: {e}"
        ));
    }
    match rr.rule.action {
        Action::Delete => rr.report.blocked += bad,
        Action::Anonymise => rr.report.failed += bad,
    }
    if bad > 0 && rr.report.status == Status::Succeeded {
        rr.report.status = Status::Partial;
    }
    bad
}

/// What is left after the batches: recounted where it can differ from what was done,
/// what the floor keeps, and ANALYZE when asked.
async fn finish(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    tables: &[TableName],
    start_holds: BatchHolds,
    needs_count: bool,
    bad: u64,
) {
    let t = scope.t;
    // What is still due now is held, kept by another rule, blocked, or was locked by the
    // application and skipped. Recount only when it can differ from what was processed:
    // right after a large delete that count walks every dead index entry, so it is
    // skipped when nothing can be left.
    // What other rules keep is never removable, so it needs no recount: a dry-run and
    // `plan` count it (`kept_by_other_rules`), and an erasure always recounts.
    let recount =
        rr.erase.is_some() || !start_holds.held_ids.is_empty() || t.objects.is_some() || bad > 0;
    if !needs_count && !recount {
        rr.report.matched = rr.report.deleted + rr.report.anonymised;
    }
    if !needs_count && recount {
        let end_holds = match rr.engine.audit.holds_now().await {
            Ok(h) => scope.holds(&h, &rr.rule.category),
            Err(_) => start_holds,
        };
        if let Ok(left) = count_all(pg, scope, tables, &end_holds, false).await {
            let done = rr.report.deleted + rr.report.anonymised;
            left.report(rr);
            // Left removable: blocked, failed, or locked by the application.
            rr.report.matched += done;
            if end_holds.category_hold.is_some() {
                // Everything still due is held by the category hold placed meanwhile.
                rr.report.held = left.due;
                rr.report.matched = done;
            }
        }
    }
    report_kept_within_floor(rr, pg, scope, &scope.holds(&HoldSet::default(), "")).await;
    if t.vacuum_analyze && rr.report.deleted > 0 {
        let sql = crate::store::pg_sql::analyze(&t.table);
        if let Err(e) = pg.execute_script(&sql).await {
            warn!(error = %db_message(&e), "ANALYZE after the sweep failed");
        } else {
            rr.report.details.insert("analyzed".into(), true.into());
        }
    }
}

/// The state the batches of one rule share across its tables.
pub(crate) struct Batches {
    pub size: u32,
    pub sizing: BatchSizing,
    pub guard: HoldGuard,
    pub count: u64,
    /// Page batches of the current table that are not yet known to be durable.
    pub unconfirmed: Option<Unconfirmed>,
    /// PostgreSQL restarts seen during the rule.
    pub restarts: u32,
    pub longest: Duration,
    /// Rows of the current table that could not be changed this run: its later batches
    /// leave them out (ctids are per table: cleared for each leaf).
    pub skip: Vec<String>,
    /// Rows that could not be changed this run, over every table.
    pub bad: u64,
    pub first_error: Option<String>,
}

impl Batches {
    /// Takes the holds lock and reads the holds for the next batch. `None` (after
    /// recording why) when the rule must stop: a category hold, or no holds to read.
    pub(crate) async fn enter(
        &mut self,
        rr: &mut RuleRun<'_>,
        scope: &Scope<'_>,
    ) -> Option<BatchHolds> {
        match self.guard.enter(&rr.engine.audit).await {
            Ok(h) => {
                let holds = scope.holds(&h, &rr.rule.category);
                if let Some(id) = holds.category_hold {
                    self.guard.leave().await;
                    rr.report.details.insert("category_hold".into(), id.into());
                    rr.report.details.insert(
                        "note".into(),
                        format!(
                            "hold {id} on category `{}` was placed during the run: the rule stopped before its next batch",
                            rr.rule.category
                        )
                        .into(),
                    );
                    return None;
                }
                Some(holds)
            }
            Err(e) => {
                self.guard.leave().await;
                rr.report.status = if rr.report.deleted + rr.report.anonymised > 0 {
                    Status::Partial
                } else {
                    Status::Failed
                };
                rr.error(format!("cannot read holds: {}", db_message(&e)));
                None
            }
        }
    }

    /// Records one finished batch, and every [`super::PROGRESS_EVERY`] the rule's running
    /// counts in the trail. Not while page batches are unconfirmed: a progress record
    /// never counts a batch a server crash could undo ([`Batches::confirm`] records it).
    pub(crate) async fn done(&mut self, rr: &mut RuleRun<'_>, done: BatchDone, elapsed: Duration) {
        self.count_batch(rr, done, elapsed);
        if self.unconfirmed.is_some() || !progress_due(rr) {
            return;
        }
        self.record_progress(rr).await;
    }

    async fn record_progress(&mut self, rr: &mut RuleRun<'_>) {
        let bad = self.bad;
        let action = rr.rule.action;
        rr.record_progress(|r| match action {
            Action::Delete => r.blocked += bad,
            Action::Anonymise => r.failed += bad,
        })
        .await;
    }

    /// Makes the page batches of the current table durable before anything records
    /// them. They committed without waiting for their WAL (`synchronous_commit = off`),
    /// so a crash of PostgreSQL before the WAL reached disk undid the latest of them.
    /// The flush runs on the witness session taken before the first of them: when that
    /// session is gone, or the server's start time changed, the server may have lost
    /// them. Then the WAL is flushed on a new session, the due rows found again in their
    /// pages are taken off the counts, and with `redo` the walk goes over those pages
    /// again. Returns the page to go back to, or `Err` (after recording why) when
    /// nothing can be confirmed.
    pub(crate) async fn confirm(
        &mut self,
        rr: &mut RuleRun<'_>,
        pg: &PgStore,
        scope: &Scope<'_>,
        table: &TableName,
        redo: bool,
    ) -> Result<Option<u64>, ()> {
        let Some(u) = self.unconfirmed.take() else {
            return Ok(None);
        };
        if matches!(u.witness.confirm().await, Ok(true)) {
            self.counted(rr, u.rows);
            if progress_due(rr) {
                self.record_progress(rr).await;
            }
            return Ok(None);
        }
        self.restarts += 1;
        warn!(table = %table, from = u.from, to = u.to, "PostgreSQL may have lost the last batches (their session or the server restarted): recounting their pages");
        let not_counted = |rr: &mut RuleRun<'_>, what: String| {
            rr.report.status = Status::Partial;
            rr.error(format!(
                "{what}; {} row(s) of the last batches are not counted",
                u.rows
            ));
        };
        if let Err(e) = with_retry(|| pg.flush_wal()).await {
            self.uncount(rr, u.rows);
            not_counted(
                rr,
                format!("cannot make the last batches durable ({})", db_message(&e)),
            );
            return Err(());
        }
        // The due rows in those pages now, other rules' floors aside (never removed):
        // at least the rows that came back, so what stays counted is never more than
        // is gone. Held rows and rows the application had locked count as come back.
        let keeps = scope.protection.keeps(scope.now, &HoldSet::default());
        let bare = BatchHolds {
            held_ids: Vec::new(),
            keeps,
            category_hold: None,
        };
        let recount = scope
            .selection(table, &bare, &self.skip)
            .count_batch(&Batch::Pages {
                from: u.from,
                to: u.to,
                skip_locked: false,
            });
        let back = match with_retry(|| pg.fetch_count(&recount)).await {
            Ok(n) => n.min(u.rows),
            Err(e) => {
                self.uncount(rr, u.rows);
                not_counted(
                    rr,
                    format!(
                        "PostgreSQL may have lost the last batches and their pages cannot be recounted ({})",
                        db_message(&e)
                    ),
                );
                return Err(());
            }
        };
        self.uncount(rr, back);
        self.counted(rr, u.rows - back);
        let undone = rr
            .report
            .details
            .get("rows_undone_by_restart")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        rr.report
            .details
            .insert("rows_undone_by_restart".into(), (undone + back).into());
        rr.report
            .details
            .insert("postgres_restarts".into(), self.restarts.into());
        if !redo {
            return Ok(None);
        }
        if self.restarts > MAX_REDOS {
            rr.report.status = Status::Partial;
            rr.error(format!(
                "PostgreSQL lost batches {} times during the rule; {back} row(s) that came back stay for the next run",
                self.restarts
            ));
            return Ok(None);
        }
        Ok(Some(u.from))
    }

    /// Adds confirmed rows to the removal counter of the metrics.
    fn counted(&self, rr: &RuleRun<'_>, rows: u64) {
        crate::metrics::record_batch(&rr.rule.name, rr.rule.action.as_str(), rows);
    }

    /// Takes rows a crash undid (or may have undone) off the rule's counts.
    fn uncount(&mut self, rr: &mut RuleRun<'_>, rows: u64) {
        let n = match rr.rule.action {
            Action::Delete => &mut rr.report.deleted,
            Action::Anonymise => &mut rr.report.anonymised,
        };
        *n = n.saturating_sub(rows);
    }

    /// Notes a page batch about to run, taking a witness session before the first of
    /// a run of them. An error means the batch must not run.
    async fn before_page_batch(&mut self, pg: &PgStore, from: u64) -> Result<(), sqlx::Error> {
        if self.unconfirmed.is_none() {
            let witness = with_retry(|| pg.witness()).await?;
            self.unconfirmed = Some(Unconfirmed {
                witness,
                from,
                to: from,
                rows: 0,
            });
        }
        Ok(())
    }

    fn count_batch(&mut self, rr: &mut RuleRun<'_>, done: BatchDone, elapsed: Duration) {
        self.longest = self.longest.max(elapsed);
        self.count += 1;
        match rr.rule.action {
            Action::Delete => rr.report.deleted += done.changed,
            Action::Anonymise => rr.report.anonymised += done.changed,
        }
        // Page batches are counted in the metrics once confirmed durable.
        if self.unconfirmed.is_none() {
            crate::metrics::record_batch(&rr.rule.name, rr.rule.action.as_str(), done.changed);
        }
        if self.first_error.is_none() {
            self.first_error = done.first_error;
        }
        self.bad += done.bad.len() as u64;
        self.skip.extend(done.bad);
        self.size = self.sizing.next(self.size, elapsed);
    }
}

/// Times a rule walks pages again after PostgreSQL restarted under it.
const MAX_REDOS: u32 = 3;

/// Page batches that committed without waiting for their WAL, not yet confirmed durable.
pub(crate) struct Unconfirmed {
    /// A session taken before the first of them.
    witness: crate::store::postgres::Witness,
    /// The pages they covered: a page walk goes in order, so one range.
    from: u64,
    to: u64,
    /// The rows they reported changed.
    rows: u64,
}

fn progress_due(rr: &RuleRun<'_>) -> bool {
    rr.progress
        .as_ref()
        .is_some_and(|p| p.last.elapsed() >= super::PROGRESS_EVERY)
}

/// Deletes or anonymises the due rows of one table (no linked objects), batch by batch.
/// Returns false when the rule must stop.
async fn run_table(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    table: &TableName,
    hmac: Option<(Vec<u8>, Vec<u8>)>,
    run: &mut Batches,
) -> bool {
    // The walk follows where the due rows lie. Other rules' keep conditions only take
    // rows out, and they skew the planner's estimate of how many are due (measured: the
    // P1 table then chose the index walk in three runs of five, at twice the time).
    let mut walk = { choose_walk(pg, &scope.selection(table, &NO_HOLDS, &[])).await };
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
    let mut next_page = 0u64;
    loop {
        if rr.cancelled() {
            rr.report.status = Status::Interrupted;
            return false;
        }
        let batch = match walk {
            Walk::Index => Batch::First(i64::from(run.size)),
            Walk::Pages {
                pages,
                rows_per_page,
            } => {
                if next_page >= pages && !second_lap {
                    second_lap = true;
                    if let Ok((now_pages, ..)) = heap_shape(pg, table).await {
                        walk = Walk::Pages {
                            pages: now_pages,
                            rows_per_page,
                        };
                        continue;
                    }
                }
                if next_page >= pages {
                    match run.confirm(rr, pg, scope, table, true).await {
                        Ok(None) => return true,
                        Ok(Some(back)) => {
                            next_page = back;
                            continue;
                        }
                        Err(()) => return false,
                    }
                }
                Batch::Pages {
                    from: next_page,
                    to: (next_page + decide::pages_for(run.size, rows_per_page)).min(pages),
                    skip_locked: false,
                }
            }
        };
        if let Batch::Pages { from, .. } = batch {
            if let Err(e) = run.before_page_batch(pg, from).await {
                rr.report.status = if rr.report.deleted + rr.report.anonymised > 0 {
                    Status::Partial
                } else {
                    Status::Failed
                };
                rr.error(format!(
                    "cannot read the server's start time: {}",
                    db_message(&e)
                ));
                return false;
            }
        }
        let Some(holds) = run.enter(rr, scope).await else {
            return false;
        };
        let selection = scope.selection(table, &holds, &run.skip);
        let statement = |b: &Batch| match action {
            Action::Delete => selection.delete_batch(b),
            Action::Anonymise => selection.anonymise_batch(b, hmac.clone(), &hmac_names()),
        };
        let started = Instant::now();
        let result = run_split(pg, &selection, &batch, &statement, false, run.sizing.target).await;
        run.guard.leave().await;
        let done = match result {
            Ok(d) => d,
            Err(e) => {
                rr.report.status = if rr.report.deleted + rr.report.anonymised > 0 {
                    Status::Partial
                } else {
                    Status::Failed
                };
                rr.error(format!("batch on {table} failed: {}", error_ref(&e)));
                return false;
            }
        };
        let elapsed = started.elapsed();
        let taken = done.changed + done.bad.len() as u64;
        debug!(table = %table, rows = done.changed, bad = done.bad.len(), batch_size = run.size, elapsed_ms = elapsed.as_millis() as u64, "batch done");
        if let (Batch::Pages { to, .. }, Some(u)) = (&batch, run.unconfirmed.as_mut()) {
            u.to = *to;
            u.rows += done.changed;
        }
        run.done(rr, done, elapsed).await;
        match batch {
            Batch::First(limit) if taken < limit as u64 => return true,
            Batch::Pages { to, .. } => next_page = to,
            _ => {}
        }
        if run.unconfirmed.is_some() && progress_due(rr) {
            match run.confirm(rr, pg, scope, table, true).await {
                Ok(None) => {}
                Ok(Some(back)) => next_page = back,
                Err(()) => return false,
            }
        }
    }
}

/// Runs one batch; when it fails on a row (a foreign key, a trigger, a CHECK, a value
/// the strategy cannot write), splits it until every other row is done and the rows
/// that cannot be changed are known. `counts`: the statement returns a `count(*)`.
pub(crate) async fn run_split(
    pg: &PgStore,
    selection: &Selection<'_>,
    batch: &Batch,
    statement: &impl Fn(&Batch) -> Statement,
    counts: bool,
    lock_wait: Duration,
) -> Result<BatchDone, sqlx::Error> {
    let first = with_retry(|| run_batch(pg, batch, statement, counts, lock_wait)).await;
    let err = match first {
        Ok(n) => {
            return Ok(BatchDone {
                changed: n,
                ..Default::default()
            })
        }
        Err(e) if row_error(&e) => e,
        Err(e) => return Err(e),
    };
    debug!(error = %error_ref(&err), "a row of the batch cannot be changed: splitting the batch");
    // The candidates without the "already anonymised" test, which may itself be what
    // raises (a strategy's expression on the bad value); each part re-applies it.
    let mut candidates = selection.clone();
    candidates.anonymise = &[];
    let rows_st = candidates.batch_rows(batch);
    let rows: Vec<String> = with_retry(|| pg.fetch_all(&rows_st))
        .await?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    let mut done = BatchDone::default();
    let mut parts = vec![rows];
    while let Some(part) = parts.pop() {
        if part.is_empty() {
            continue;
        }
        let rows = Batch::Rows(part);
        match with_retry(|| run_batch(pg, &rows, statement, counts, lock_wait)).await {
            Ok(n) => done.changed += n,
            Err(e) if row_error(&e) => {
                let Batch::Rows(mut part) = rows else {
                    unreachable!("built as rows above")
                };
                if part.len() == 1 {
                    done.first_error.get_or_insert_with(|| error_ref(&e));
                    done.bad.append(&mut part);
                } else {
                    let back = part.split_off(part.len() / 2);
                    parts.push(back);
                    parts.push(part);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// An error caused by the data of a row rather than by the server or the statement:
/// data exceptions, integrity constraints, triggers and routines that raise.
fn row_error(e: &sqlx::Error) -> bool {
    let Some(code) = e.as_database_error().and_then(|d| d.code()) else {
        return false;
    };
    ["22", "23", "27", "09", "P0", "2F", "38", "39"]
        .iter()
        .any(|class| code.starts_with(class))
}

/// A database error as the trail may keep it: SQLSTATE, constraint, table, column;
/// never the message, which can quote a row's values.
pub(crate) fn error_ref(e: &sqlx::Error) -> String {
    let Some(d) = e.as_database_error() else {
        return db_message(e);
    };
    let mut out = format!("SQLSTATE {}", d.code().as_deref().unwrap_or("?"));
    if let Some(pg) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        out.push_str(&format!(" ({})", pg_condition(pg.code())));
        if let Some(c) = pg.constraint() {
            out.push_str(&format!(", constraint `{c}`"));
        }
        if let Some(t) = pg.table() {
            match pg.schema() {
                Some(s) => out.push_str(&format!(", table {s}.{t}")),
                None => out.push_str(&format!(", table {t}")),
            }
        }
        if let Some(c) = pg.column() {
            out.push_str(&format!(", column {c}"));
        }
    }
    out
}

/// A short name for the SQLSTATEs a row can raise.
fn pg_condition(code: &str) -> &'static str {
    match code {
        "23503" => "foreign key violation",
        "23505" => "unique violation",
        "23514" => "check violation",
        "23502" => "not null violation",
        "23001" => "restrict violation",
        "P0001" => "raised by a trigger or function",
        c if c.starts_with("22") => "data exception",
        c if c.starts_with("23") => "integrity constraint violation",
        _ => "error",
    }
}

/// What one count over a rule's tables found.
#[derive(Debug, Default)]
struct Counted {
    due: u64,
    held: u64,
    kept: u64,
    oldest: Option<DateTime<Utc>>,
    by_rule: BTreeMap<String, u64>,
}

impl Counted {
    /// Sets `matched`, `held` and the kept-by-rule details from the count.
    fn report(&self, rr: &mut RuleRun<'_>) {
        rr.report.matched = self.due - self.held - self.kept;
        rr.report.held = self.held;
        let kept: serde_json::Map<String, serde_json::Value> = self
            .by_rule
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| (r.clone(), (*n).into()))
            .collect();
        if !kept.is_empty() {
            rr.report
                .details
                .insert("kept_by_other_rules".into(), kept.into());
        }
    }
}

/// Counts the due rows of every table in one pass each.
async fn count_all(
    pg: &PgStore,
    scope: &Scope<'_>,
    tables: &[TableName],
    holds: &BatchHolds,
    with_oldest: bool,
) -> Result<Counted, sqlx::Error> {
    // With an index on the age column the oldest due record is one index probe away;
    // without one it costs nothing extra to find it during the count's pass.
    let indexed = scope.p.info.has_index_on(scope.t.age_column.as_str());
    let mut total = Counted::default();
    for table in tables {
        let sel = scope.selection(table, holds, &[]);
        let rules = sel.kept_rules();
        let st = sel.count(with_oldest && !indexed);
        let row = with_retry(|| pg.fetch_one(&st)).await?;
        let get =
            |i: usize| -> Result<u64, sqlx::Error> { Ok(row.try_get::<i64, _>(i)?.max(0) as u64) };
        let (due, held, kept) = (get(0)?, get(1)?, get(3)?);
        let mut oldest: Option<DateTime<Utc>> = row.try_get(2)?;
        for (i, r) in rules.iter().enumerate() {
            *total.by_rule.entry(r.clone()).or_default() += get(4 + i)?;
        }
        if with_oldest && indexed && due > held + kept {
            oldest = with_retry(|| async { pg.fetch_one(&sel.oldest()).await?.try_get(0) }).await?;
        }
        total.due += due;
        total.held += held;
        total.kept += kept;
        total.oldest = min_opt(total.oldest, oldest);
    }
    Ok(total)
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
    let row = pg.fetch_one(&pg_sql::heap_shape(table)).await?;
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
/// up the application for more than that. `counts`: the statement returns a `count(*)`.
async fn run_batch(
    pg: &PgStore,
    batch: &Batch,
    statement: &impl Fn(&Batch) -> Statement,
    counts: bool,
    lock_wait: Duration,
) -> Result<u64, sqlx::Error> {
    match batch {
        Batch::First(_) | Batch::Rows(_) if counts => pg.fetch_count(&statement(batch)).await,
        Batch::First(_) | Batch::Rows(_) => pg.execute(&statement(batch)).await,
        Batch::Pages { from, to, .. } => {
            match pg.execute_batch(&statement(batch), lock_wait).await {
                Err(e) if lock_not_available(&e) => {
                    debug!(from, to, "rows in these pages are locked: skipping them");
                    pg.execute(&statement(&Batch::Pages {
                        from: *from,
                        to: *to,
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

fn fail(rr: &mut RuleRun<'_>, message: impl std::fmt::Display) {
    rr.report.status = Status::Failed;
    rr.error(message);
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// For an erasure under a legal floor: how many of the subject's records are kept
/// because they are inside the rule's own floor, and the date the first of them becomes
/// erasable. (Records kept by other rules' floors are in `kept_by_other_rules`.)
async fn report_kept_within_floor(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    holds: &BatchHolds,
) {
    if rr.erase.is_none() {
        return;
    }
    let Some(floor) = rr.engine.config.category_of(rr.rule).min_retain else {
        return;
    };
    let Some(floor_cutoff) = floor.before(scope.now) else {
        return;
    };
    let (mut kept, mut first) = (0u64, None);
    for table in scope.p.info.work_tables(&scope.t.table) {
        let mut inside = scope.selection(&table, holds, &[]);
        inside.cutoff = None;
        inside.not_before = Some(floor_cutoff);
        inside.keeps = &[];
        if let Ok(row) = pg.fetch_one(&inside.count(true)).await {
            kept += row.try_get::<i64, _>(0).unwrap_or(0).max(0) as u64;
            first = min_opt(first, row.try_get(2).ok().flatten());
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
    pg.fetch_count(&Statement {
        sql: pg_sql::count_rows(table),
        params: Default::default(),
    })
    .await
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
