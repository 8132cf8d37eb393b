//! The preflight of one table rule: catalog, age column, anonymise strategies and the
//! server's parameter logging, key columns, filter, partitions, index.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::logging::ParameterLogging;
use super::{db_message, Finding, Outage, Prepared, PreparedTable, Refusal};
use crate::anonymise::ColumnSql;
use crate::config::{Age, Config, EventAge, Ident, PartitionMode, Rule, TableTarget, Target};
use crate::store::pg_sql::{self, AgeKind};
use crate::store::postgres::{ColumnInfo, TableInfo};
use crate::store::s3::BucketInfo;
use crate::store::{PgStore, Stores};

mod anonymise;
mod event;

use anonymise::check_anonymise;
use event::check_event;

/// Checks one rule against its stores; `Ok(None)` for a prefix rule whose bucket did not
/// answer (the bucket check reports it).
pub(super) async fn check_rule(
    config: &Config,
    stores: &Stores,
    rule: &Rule,
    buckets: &BTreeMap<String, Option<BucketInfo>>,
    warnings: &mut Vec<Finding>,
) -> Result<Option<Prepared>, Refusal> {
    let t = match &rule.target {
        Target::Prefix(_) => {
            return Ok(buckets
                .get(&rule.store)
                .copied()
                .flatten()
                .map(Prepared::Prefix));
        }
        Target::Table(t) => t,
    };
    let pg = stores.pg(&rule.store);
    let info = catalog(pg, rule, t).await?;
    let age_kind = check_age(pg, rule, t, &info, warnings).await?;
    if let Some(s) = &t.subject {
        column(&info, t, &s.column)?;
    }
    let (anonymise, uses_hmac) = if t.anonymise.is_empty() {
        (Vec::new(), false)
    } else {
        check_anonymise(pg, config, rule, t, age_kind, &info, warnings).await?
    };
    let objects_bucket = check_objects(t, &info, buckets)?;
    check_filter_and_partitions(pg, t, &info).await?;
    warn_without_index(rule, t, &info, warnings);
    let primary_key = info
        .primary_key
        .iter()
        .filter_map(|c| Ident::parse(c).ok())
        .collect();
    Ok(Some(Prepared::Table(PreparedTable {
        info,
        age_kind,
        anonymise,
        uses_hmac,
        primary_key,
        objects_bucket,
    })))
}

/// The table's catalog facts: it exists in the rule's store and is a table.
async fn catalog(pg: &PgStore, rule: &Rule, t: &TableTarget) -> Result<TableInfo, Refusal> {
    let info = match pg.describe(&t.table).await {
        Ok(info) => info,
        Err(e) if crate::store::postgres::unavailable(&e) => {
            return Err(Refusal {
                message: format!(
                    "store `{}` is not reachable: {}",
                    rule.store,
                    db_message(&e)
                ),
                outage: Outage::Database,
            })
        }
        Err(e) => {
            return Err(
                format!("cannot read the catalog of {}: {}", t.table, db_message(&e)).into(),
            )
        }
    }
    .ok_or_else(|| format!("table {} does not exist in store `{}`", t.table, rule.store))?;
    if info.relkind != "r" && info.relkind != "p" {
        return Err(format!("{} is not a table (relkind {})", t.table, info.relkind).into());
    }
    Ok(info)
}

/// A column of the rule's table, or the refusal that names it.
fn column<'i>(info: &'i TableInfo, t: &TableTarget, c: &Ident) -> Result<&'i ColumnInfo, Refusal> {
    info.columns
        .get(c.as_str())
        .ok_or_else(|| format!("column {}.{} does not exist", t.table, c).into())
}

/// How the age column compares, with a warning where its time zone is ambiguous and a
/// unit check of epoch columns.
async fn check_age(
    pg: &PgStore,
    rule: &Rule,
    t: &TableTarget,
    info: &TableInfo,
    warnings: &mut Vec<Finding>,
) -> Result<AgeKind, Refusal> {
    let age_column = match &t.age {
        Age::Column(c) => c,
        Age::Event(e) => return check_event(pg, rule, t, e, info, warnings).await,
    };
    let age = column(info, t, age_column)?;
    let age_kind = AgeKind::resolve(&age.type_name, t.age_format, t.age_timezone)
        .map_err(|m| format!("{age_column}: {m}"))?;
    let zone_note = match (age_kind, t.age_timezone) {
        (AgeKind::Timestamp(_) | AgeKind::Date(_), None) => Some(format!(
            "age column {} is {}, which holds no time zone: its values are read as UTC. If they are local time, set age_timezone = \"<IANA zone>\" (e.g. \"Europe/Amsterdam\"); set age_timezone = \"UTC\" to confirm UTC",
            age_column, age.type_name
        )),
        (AgeKind::Timestamptz, Some(tz)) => Some(format!(
            "age_timezone = \"{tz}\" is ignored: age column {} is timestamp with time zone, whose values are instants already",
            age_column
        )),
        _ => None,
    };
    if let Some(message) = zone_note {
        warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message,
        });
    }
    if matches!(age_kind, AgeKind::EpochSeconds | AgeKind::EpochMillis) {
        let range = pg
            .fetch_one(&pg_sql::epoch_range(&t.table, age_column))
            .await
            .and_then(|row| {
                Ok((
                    row.try_get::<Option<f64>, _>(0)?,
                    row.try_get::<Option<f64>, _>(1)?,
                    row.try_get::<DateTime<Utc>, _>(2)?,
                ))
            });
        let (min, max, now) = range.map_err(|e| {
            format!(
                "cannot read the range of age column {}: {}",
                age_column,
                db_message(&e)
            )
        })?;
        check_epoch_range(age_column, age_kind, min, max, now)?;
    }
    Ok(age_kind)
}

/// Key columns are text or text[], and the objects store answered; its bucket facts.
fn check_objects(
    t: &TableTarget,
    info: &TableInfo,
    buckets: &BTreeMap<String, Option<BucketInfo>>,
) -> Result<Option<BucketInfo>, Refusal> {
    let Some(o) = &t.objects else {
        return Ok(None);
    };
    for c in &o.key_columns {
        let ci = column(info, t, c)?;
        let ok = matches!(ci.type_name.as_str(), "text" | "text[]")
            || (ci.type_name.starts_with("character varying") && !ci.type_name.ends_with("[]"));
        if !ok {
            return Err(format!(
                "key column {c} is {}: expected text or text[]",
                ci.type_name
            )
            .into());
        }
    }
    match buckets.get(&o.store) {
        Some(Some(b)) => Ok(Some(*b)),
        _ => Err(Refusal {
            message: format!("the objects store `{}` is not reachable", o.store),
            outage: Outage::Bucket,
        }),
    }
}

/// The filter compiles (`EXPLAIN`); `partitions` is on a partitioned table and its
/// archive schema exists.
async fn check_filter_and_partitions(
    pg: &PgStore,
    t: &TableTarget,
    info: &TableInfo,
) -> Result<(), Refusal> {
    if let Some(filter) = &t.filter {
        pg.fetch_all(&pg_sql::explain_filter(&t.table, filter))
            .await
            .map_err(|e| format!("filter `{filter}` does not compile: {}", db_message(&e)))?;
    }
    match (&t.partitions, info.relkind.as_str()) {
        (Some(_), "r") => Err(format!(
            "`partitions` is set but {} is not a partitioned table",
            t.table
        )
        .into()),
        (Some(PartitionMode::Archive(schema)), _) => {
            let exists: bool = pg
                .fetch_one(&pg_sql::schema_exists(schema))
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| db_message(&e))?;
            if exists {
                Ok(())
            } else {
                Err(format!("archive schema {schema} does not exist").into())
            }
        }
        _ => Ok(()),
    }
}

/// Warns, with the statement that fixes it, when no index starts with the age column.
fn warn_without_index(rule: &Rule, t: &TableTarget, info: &TableInfo, warnings: &mut Vec<Finding>) {
    // An `after_event` rule's rows are found through their events.
    let Some(age_column) = t.age_column() else {
        return;
    };
    if info.has_index_on(age_column.as_str()) {
        return;
    }
    warnings.push(Finding {
        transient: false,
        rule: rule.name.clone(),
        message: format!(
            "no index starts with the age column; every batch scans the table. Create one with:\n    CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({});",
            Ident::parse(&format!("{}_{}_idx", t.table.name, age_column).chars().take(63).collect::<String>())
                .map(|i| i.quoted())
                .unwrap_or_else(|_| "retentiond_age_idx".into()),
            t.table.quoted(),
            age_column.quoted()
        ),
    });
}

/// The earliest plausible age: values before it almost surely have the wrong unit.
fn earliest_plausible() -> DateTime<Utc> {
    DateTime::from_timestamp(631_152_000, 0).expect("1990-01-01 is in range")
}

/// Refuses an epoch age column whose values decode, in the declared unit, to before
/// 1990-01-01 or to after `now` + 1 day: a unit mix-up would make every row due at once
/// (milliseconds read as seconds land far in the future, seconds read as milliseconds in
/// January 1970). Empty tables and all-NULL columns (`None`) pass.
pub(super) fn check_epoch_range(
    column: &Ident,
    kind: AgeKind,
    min: Option<f64>,
    max: Option<f64>,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let (Some(min), Some(max)) = (min, max) else {
        return Ok(());
    };
    let latest = now + chrono::TimeDelta::days(1);
    let plausible = |secs: f64| {
        secs.is_finite()
            && secs >= earliest_plausible().timestamp() as f64
            && secs <= latest.timestamp() as f64
    };
    let (declared, per_second) = match kind {
        AgeKind::EpochMillis => ("epoch_millis", 1_000.0),
        _ => ("epoch_seconds", 1.0),
    };
    let value = if !plausible(min / per_second) {
        min
    } else if !plausible(max / per_second) {
        max
    } else {
        return Ok(());
    };
    let which = if value / per_second < earliest_plausible().timestamp() as f64 {
        "before 1990"
    } else {
        "in the future"
    };
    let hint = if kind == AgeKind::EpochMillis && plausible(value) {
        "they look like epoch seconds: set age_format = \"epoch_seconds\"".to_owned()
    } else if kind == AgeKind::EpochSeconds && plausible(value / 1_000.0) {
        "they look like epoch milliseconds: set age_format = \"epoch_millis\"".to_owned()
    } else if plausible(value / 1_000_000.0) || plausible(value / 1_000_000_000.0) {
        "they look like epoch microseconds or nanoseconds, which retentiond does not read: store seconds or milliseconds".to_owned()
    } else {
        "they do not look like epoch seconds or milliseconds either: check the column and age_format".to_owned()
    };
    Err(format!(
        "age column {column} holds values that decode to {} as {declared} ({which}); {hint}. Nothing was changed",
        describe_secs(value / per_second)
    ))
}

/// `secs` since the epoch as a date, for messages.
pub(super) fn describe_secs(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() > 1e15 {
        return "a time outside the calendar".into();
    }
    match DateTime::from_timestamp(secs.floor() as i64, 0) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "a time outside the calendar".into(),
    }
}
