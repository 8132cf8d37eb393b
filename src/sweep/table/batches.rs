//! The batches of one table: the walk, the holds lock around each batch, progress, and
//! confirming asynchronously committed page batches durable.

use super::exec::{choose_walk, heap_shape};
use super::*;

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
                rr.stop(format!("cannot read holds: {}", db_message(&e)));
                None
            }
        }
    }

    /// Records one finished batch, and every [`crate::sweep::PROGRESS_EVERY`] the rule's running
    /// counts in the trail. Not while page batches are unconfirmed: a progress record
    /// never counts a batch a server crash could undo ([`Batches::confirm`] records it).
    pub(crate) async fn done(&mut self, rr: &mut RuleRun<'_>, done: BatchDone, elapsed: Duration) {
        self.count_batch(rr, done, elapsed);
        rr.watch_progress();
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
pub(super) const MAX_REDOS: u32 = 3;

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

pub(super) fn progress_due(rr: &RuleRun<'_>) -> bool {
    rr.progress
        .as_ref()
        .is_some_and(|p| p.last.elapsed() >= crate::sweep::PROGRESS_EVERY)
}

/// Deletes or anonymises the due rows of one table (no linked objects), batch by batch.
/// Returns false when the rule must stop.
pub(super) async fn run_table(
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
    let walk = choose_walk(pg, &scope.selection(table, &NO_HOLDS, &[])).await;
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
    let mut cursor = Cursor {
        walk,
        next_page: 0,
        second_lap: false,
    };
    loop {
        if rr.cancelled() {
            rr.report.status = Status::Interrupted;
            return false;
        }
        let batch = match cursor.next(rr, pg, scope, table, run).await {
            Step::Batch(b) => b,
            Step::Again => continue,
            Step::Done => return true,
            Step::Stop => return false,
        };
        let Some(taken) = run_one(rr, pg, scope, table, &hmac, run, &batch).await else {
            return false;
        };
        match batch {
            Batch::First(limit) if taken < limit as u64 => return true,
            Batch::Pages { to, .. } => cursor.next_page = to,
            _ => {}
        }
        if run.unconfirmed.is_some() && progress_due(rr) {
            match run.confirm(rr, pg, scope, table, true).await {
                Ok(None) => {}
                Ok(Some(back)) => cursor.next_page = back,
                Err(()) => return false,
            }
        }
    }
}

/// Where the batches of one table are: the walk, and for a page walk the next page.
struct Cursor {
    walk: Walk,
    next_page: u64,
    /// A row the application updates during the walk may move to a page past the end
    /// the walk started with: the walk goes once more over the pages added since.
    second_lap: bool,
}

/// What the cursor says to do next.
enum Step {
    Batch(Batch),
    /// The cursor moved (a second lap, pages to walk again): ask again.
    Again,
    /// Every due row of the table is done.
    Done,
    /// The rule must stop (recorded why).
    Stop,
}

impl Cursor {
    async fn next(
        &mut self,
        rr: &mut RuleRun<'_>,
        pg: &PgStore,
        scope: &Scope<'_>,
        table: &TableName,
        run: &mut Batches,
    ) -> Step {
        let Walk::Pages {
            pages,
            rows_per_page,
        } = self.walk
        else {
            return Step::Batch(Batch::First(i64::from(run.size)));
        };
        if self.next_page >= pages && !self.second_lap {
            self.second_lap = true;
            if let Ok((now_pages, ..)) = heap_shape(pg, table).await {
                self.walk = Walk::Pages {
                    pages: now_pages,
                    rows_per_page,
                };
                return Step::Again;
            }
        }
        if self.next_page >= pages {
            return match run.confirm(rr, pg, scope, table, true).await {
                Ok(None) => Step::Done,
                Ok(Some(back)) => {
                    self.next_page = back;
                    Step::Again
                }
                Err(()) => Step::Stop,
            };
        }
        Step::Batch(Batch::Pages {
            from: self.next_page,
            to: (self.next_page + decide::pages_for(run.size, rows_per_page)).min(pages),
            skip_locked: false,
        })
    }
}

/// Runs one batch under the holds lock and counts it. Returns the rows it took (changed
/// or found unchangeable), or `None` (after recording why) when the rule must stop.
async fn run_one(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    table: &TableName,
    hmac: &Option<(Vec<u8>, Vec<u8>)>,
    run: &mut Batches,
    batch: &Batch,
) -> Option<u64> {
    if let Batch::Pages { from, .. } = batch {
        if let Err(e) = run.before_page_batch(pg, *from).await {
            rr.stop(format!(
                "cannot read the server's start time: {}",
                db_message(&e)
            ));
            return None;
        }
    }
    let holds = run.enter(rr, scope).await?;
    let selection = scope.selection(table, &holds, &run.skip);
    let statement = |b: &Batch| match rr.rule.action {
        Action::Delete => selection.delete_batch(b),
        Action::Anonymise => selection.anonymise_batch(b, hmac.clone(), &hmac_names()),
    };
    let started = Instant::now();
    let result = run_split(pg, &selection, batch, &statement, false, run.sizing.target).await;
    run.guard.leave().await;
    let done = match result {
        Ok(d) => d,
        Err(e) => {
            rr.stop(format!("batch on {table} failed: {}", error_ref(&e)));
            return None;
        }
    };
    let elapsed = started.elapsed();
    debug!(table = %table, rows = done.changed, bad = done.bad.len(), batch_size = run.size, elapsed_ms = elapsed.as_millis() as u64, "batch done");
    if let (Batch::Pages { to, .. }, Some(u)) = (batch, run.unconfirmed.as_mut()) {
        u.to = *to;
        u.rows += done.changed;
    }
    let taken = done.changed + done.bad.len() as u64;
    run.done(rr, done, elapsed).await;
    Some(taken)
}
