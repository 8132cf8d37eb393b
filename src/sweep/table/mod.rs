//! Table rules: count, guard, then batches of deletes or anonymising updates, each its
//! own short transaction; rows go before their linked objects (queued in the same
//! statement).

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

mod batches;
mod count;
mod exec;

use batches::run_table;
pub(crate) use batches::Batches;
use count::{count_all, report_kept_within_floor, total_rows};
pub(crate) use exec::{error_ref, run_split, with_retry};

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
            age: &self.t.age,
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
    if let crate::config::Age::Event(e) = &t.age {
        // The cutoff applies to the subject's event, not to the row's own time.
        let details = &mut rr.report.details;
        details.insert("after_event".into(), e.event.clone().into());
        details.insert("retention".into(), rr.rule.retention().into());
    }
    let Some(scope) = scope_of(rr, &pg, t, p).await else {
        return;
    };
    let start_holds = match rr.engine.audit.holds_now().await {
        Ok(h) => scope.holds(&h, &rr.rule.category),
        Err(e) => return rr.fail(format!("cannot read holds: {}", db_message(&e))),
    };
    let mut tables = p.info.work_tables(&t.table);

    // Count what is due (exact, the same selection the batches use) when something
    // depends on it: a dry-run, a category hold, the max_delete guard.
    let guarded = rr.erase.is_none() && rr.rule.max_delete.is_some() && !rr.allow_mass_delete;
    let needs_count = rr.mode == Mode::DryRun || start_holds.category_hold.is_some() || guarded;
    if needs_count {
        let next = count_and_guard(rr, &pg, &scope, &tables, &start_holds).await;
        // A progress bar gets a total only from a count the rule makes anyway: a
        // terminal never changes what a sweep does to the database.
        if let Some(w) = &rr.engine.watch {
            w.counted(&rr.rule.name, rr.report.matched);
        }
        if next == Next::Stop {
            return;
        }
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
                rr.fail(format!(
                    "cannot read the database clock: {}",
                    db_message(&e)
                ));
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
                rr.fail("the cutoff is out of range");
                return None;
            }
        },
        Some(_) => match category.min_retain {
            None => None,
            Some(f) => match f.before(now) {
                Some(c) => Some(c),
                None => {
                    rr.fail("the floor's cutoff is out of range");
                    return None;
                }
            },
        },
    };
    rr.report.cutoff = cutoff;
    let protection = match Protection::new(config, rr.rule, t, &p.info) {
        Ok(pr) => pr,
        Err(e) => {
            rr.fail(e);
            return None;
        }
    };
    let only_subject = match &rr.erase {
        Some((_, id)) => match protection.own_subject_type().normalise(id) {
            Ok(v) => Some(v),
            Err(e) => {
                rr.fail(format!("subject {e}"));
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
            rr.fail(format!("counting due records failed: {}", error_ref(&e)));
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
                rr.fail(format!("counting the table failed: {}", db_message(&e)));
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
