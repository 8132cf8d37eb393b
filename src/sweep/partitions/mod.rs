//! Partition-aware sweeps: whole leaf partitions past the cutoff are detached, then
//! dropped, kept or archived; everything else is deleted row by row.
//!
//! A leaf goes whole only when the table is RANGE-partitioned on exactly the age column,
//! the leaf's upper bound is at or before the cutoff (so every row in it is due), the
//! rule has no `filter` (rows outside the filter must stay), and no row in it is held or
//! kept by another rule on the table (its floor, its holds). That last check is made
//! under the holds lock, right before the leaf is detached.

use crate::report::Status;
use sqlx::Row;

use super::table::{BatchHolds, Scope};
use super::{Mode, RuleRun};
use crate::config::{Ident, PartitionMode, TableName};
use crate::preflight::db_message;
use crate::store::pg_sql::partitions as sql;
use crate::store::pg_sql::{Param, Params, Statement};
use crate::store::PgStore;

mod finish;

use finish::{count_in_background, finish, finish_left_over};

/// Removes whole expired leaves; returns those no longer to be swept row by row.
pub(crate) async fn remove_expired(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Vec<TableName> {
    let Some(mode) = &scope.t.partitions else {
        return Vec::new();
    };
    let Some(leaves) = leaves_of(rr, pg, scope).await else {
        return Vec::new();
    };
    let mut found = expired(rr, pg, scope, leaves, cutoff).await;
    let mut gone = Vec::new();
    if rr.mode == Mode::Enforce {
        finish_left_over(rr, pg, &scope.t.table, mode, &mut gone).await;
        if let Err(e) = pg.execute_script(sql::DETACHING_DDL).await {
            partial(rr);
            rr.error(format!(
                "cannot create the record of partitions being detached: {}",
                db_message(&e)
            ));
            found.eligible.clear();
        }
        detach_each(rr, pg, scope, mode, &mut found, &mut gone).await;
    }
    let key = match mode {
        PartitionMode::Drop => "partitions_dropped",
        PartitionMode::Detach => "partitions_detached",
        PartitionMode::Archive(_) => "partitions_archived",
    };
    if rr.mode == Mode::DryRun {
        rr.report
            .details
            .insert("partitions_due".into(), found.due.into());
    } else {
        let names: Vec<String> = gone.iter().map(ToString::to_string).collect();
        rr.report.details.insert(key.into(), names.into());
    }
    if !found.blocked.is_empty() {
        rr.report
            .details
            .insert("partitions_kept_for_holds".into(), found.blocked.into());
    }
    gone
}

/// `(schema, name, bound, directly under the parent)` of every leaf, when whole leaves
/// can go: a partitioned table, RANGE-partitioned on the age column alone, and a rule
/// without a filter. `None` (with a note why) when the rule sweeps row by row.
async fn leaves_of(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
) -> Option<Vec<sqlx::postgres::PgRow>> {
    let (t, p) = (scope.t, scope.p);
    // An `after_event` rule's rows age by their subjects' events, not by the partition key.
    let age_column = t.age_column()?;
    if p.info.relkind != "p" {
        return None;
    }
    if t.filter.is_some() {
        note(
            rr,
            "the rule has a filter, so partitions are swept row by row",
        );
        return None;
    }
    let partkey: Option<String> = pg
        .fetch_one(&st(sql::PARTKEY, vec![Param::BigInt(p.info.oid)]))
        .await
        .and_then(|r| r.try_get(0))
        .ok()
        .flatten();
    if !partkey
        .as_deref()
        .is_some_and(|k| sql::keyed_on(k, age_column))
    {
        note(rr, "the table is not RANGE-partitioned on the age column alone, so partitions are swept row by row");
        return None;
    }
    match pg
        .fetch_all(&st(sql::LEAVES, vec![Param::BigInt(p.info.oid)]))
        .await
    {
        Ok(rows) => Some(rows),
        Err(e) => {
            rr.error(format!("cannot list partitions: {}", db_message(&e)));
            None
        }
    }
}

/// The leaves past the cutoff.
struct Expired {
    /// Leaves an enforcing run may detach (each checked again under the holds lock).
    eligible: Vec<TableName>,
    /// Names of the leaves that are due.
    due: Vec<String>,
    /// Names of the leaves a held or kept row keeps whole.
    blocked: Vec<String>,
}

/// The direct leaves whose upper bound is at or before the cutoff. In a dry-run, a row
/// held or kept by another rule keeps the whole leaf (an enforcing run checks again
/// under the holds lock, right before detaching).
async fn expired(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    leaves: Vec<sqlx::postgres::PgRow>,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Expired {
    let (t, p) = (scope.t, scope.p);
    let mut found = Expired {
        eligible: Vec::new(),
        due: Vec::new(),
        blocked: Vec::new(),
    };
    let Some(age_type) = t
        .age_column()
        .and_then(|c| p.info.columns.get(c.as_str()))
        .map(|c| c.type_name.clone())
    else {
        return found;
    };
    let cutoff_param = p.age_kind.cutoff_param(cutoff);
    for row in leaves {
        let leaf = TableName {
            schema: Ident::from_catalog(row.get::<String, _>(0)),
            name: Ident::from_catalog(row.get::<String, _>(1)),
        };
        let bound: Option<String> = row.get(2);
        let direct: bool = row.get(3);
        let Some(upper) = bound
            .as_deref()
            .filter(|_| direct)
            .and_then(sql::upper_bound)
        else {
            continue;
        };
        let check = sql::bound_before_cutoff(&age_type);
        let q = st(&check, vec![Param::Text(upper), cutoff_param.clone()]);
        match pg.fetch_one(&q).await.and_then(|r| r.try_get(0)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                rr.error(format!(
                    "cannot compare the bound of {leaf}: {}",
                    db_message(&e)
                ));
                continue;
            }
        }
        if rr.mode == Mode::DryRun {
            let holds = match rr.engine.audit.holds_now().await {
                Ok(h) => scope.holds(&h, &rr.rule.category),
                Err(e) => {
                    rr.error(format!("cannot read holds: {}", db_message(&e)));
                    continue;
                }
            };
            match kept_rows(pg, scope, &leaf, &holds).await {
                Ok(0) => found.due.push(leaf.to_string()),
                Ok(_) => found.blocked.push(leaf.to_string()),
                Err(e) => rr.error(format!(
                    "cannot check holds in {leaf}: {}",
                    super::table::error_ref(&e)
                )),
            }
            continue;
        }
        found.due.push(leaf.to_string());
        found.eligible.push(leaf);
    }
    found
}

/// Each leaf is recorded, detached, then counted (no row can arrive once it is
/// detached), then dropped, kept or archived, and its record removed: a crash in
/// between leaves the record, and the next run finishes the leaf. Counting the next
/// leaf overlaps removing the previous one.
async fn detach_each(
    rr: &mut RuleRun<'_>,
    pg: &PgStore,
    scope: &Scope<'_>,
    mode: &PartitionMode,
    found: &mut Expired,
    gone: &mut Vec<TableName>,
) {
    let t = scope.t;
    let has_default: bool = pg
        .fetch_one(&st(sql::HAS_DEFAULT, vec![Param::BigInt(scope.p.info.oid)]))
        .await
        .and_then(|r| r.try_get(0))
        .unwrap_or(true);
    let mut pending: Option<(TableName, tokio::task::JoinHandle<Result<u64, sqlx::Error>>)> = None;
    let mut guard = rr.hold_guard();
    for leaf in std::mem::take(&mut found.eligible) {
        if rr.cancelled() {
            break;
        }
        // Holds apply at once: the leaf goes only if, under the holds lock, no row in it
        // is held or kept by another rule; the lock is held until it is detached.
        let holds = match guard.enter(&rr.engine.audit).await {
            Ok(h) => scope.holds(&h, &rr.rule.category),
            Err(e) => {
                guard.leave().await;
                rr.error(format!("cannot read holds: {}", db_message(&e)));
                break;
            }
        };
        if holds.category_hold.is_some() {
            guard.leave().await;
            break;
        }
        match kept_rows(pg, scope, &leaf, &holds).await {
            Ok(0) => {}
            Ok(_) => {
                guard.leave().await;
                found.due.retain(|n| *n != leaf.to_string());
                found.blocked.push(leaf.to_string());
                continue;
            }
            Err(e) => {
                guard.leave().await;
                rr.error(format!(
                    "cannot check holds in {leaf}: {}",
                    super::table::error_ref(&e)
                ));
                continue;
            }
        }
        let recorded = pg
            .execute(&st(
                sql::DETACHING_ADD,
                vec![
                    Param::Text(rr.rule.name.clone()),
                    Param::Text(t.table.quoted()),
                    Param::Text(leaf.schema.as_str().to_owned()),
                    Param::Text(leaf.name.as_str().to_owned()),
                ],
            ))
            .await;
        let detached = match recorded {
            Ok(_) => {
                pg.execute_script(&sql::detach(&t.table, &leaf, !has_default))
                    .await
            }
            Err(e) => Err(e),
        };
        guard.leave().await;
        if let Err(e) = detached {
            partial(rr);
            rr.error(format!(
                "cannot detach partition {leaf}: {}",
                db_message(&e)
            ));
            continue;
        }
        let counting = count_in_background(pg, &leaf);
        if let Some((prev, counted)) = pending.replace((leaf, counting)) {
            finish(rr, pg, &t.table, prev, counted, mode, gone).await;
        }
    }
    if let Some((prev, counted)) = pending.take() {
        finish(rr, pg, &t.table, prev, counted, mode, gone).await;
    }
}

/// Rows of `leaf` that are held, or kept by another rule on the table.
async fn kept_rows(
    pg: &PgStore,
    scope: &Scope<'_>,
    leaf: &TableName,
    holds: &BatchHolds,
) -> Result<u64, sqlx::Error> {
    let mut sel = scope.selection(leaf, holds, &[]);
    // Every row of an expired leaf counts, whatever its age.
    sel.cutoff = None;
    let row = pg.fetch_one(&sel.count(false)).await?;
    let held: i64 = row.try_get(1)?;
    let kept: i64 = row.try_get(3)?;
    Ok((held + kept).max(0) as u64)
}

/// A partition step failed: the rule did not do all its work.
fn partial(rr: &mut RuleRun<'_>) {
    if rr.report.status == Status::Succeeded {
        rr.report.status = Status::Partial;
    }
}

fn note(rr: &mut RuleRun<'_>, text: &str) {
    rr.report
        .details
        .insert("partitions_note".into(), text.into());
}

/// A statement from constant SQL (`pg_sql::partitions`) and its parameters.
fn st(sql: &str, params: Vec<Param>) -> Statement {
    Statement {
        sql: sql.to_owned(),
        params: Params(params),
    }
}
