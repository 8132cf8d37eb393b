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

/// An `after_event` rule's event: its table is in the rule's store, its subject column
/// has the type of the rule's subject column (they are compared with `=`), and its
/// `at_column` is a timestamp with time zone. Warns when no index starts with the
/// event's subject column: every row looks its event up.
async fn check_event(
    pg: &PgStore,
    rule: &Rule,
    t: &TableTarget,
    e: &EventAge,
    info: &TableInfo,
    warnings: &mut Vec<Finding>,
) -> Result<AgeKind, Refusal> {
    let name = &e.event;
    let events = match pg.describe(&e.table).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return Err(format!(
                "the table of event `{name}`, {}, does not exist in store `{}`",
                e.table, rule.store
            )
            .into())
        }
        Err(x) => {
            return Err(format!(
                "cannot read the catalog of {}, the table of event `{name}`: {}",
                e.table,
                db_message(&x)
            )
            .into())
        }
    };
    let in_events = |c: &Ident| {
        events.columns.get(c.as_str()).ok_or_else(|| {
            Refusal::from(format!(
                "column {}.{c} of event `{name}` does not exist",
                e.table
            ))
        })
    };
    let key = in_events(&e.key)?;
    let at = in_events(&e.at)?;
    if at.type_name != "timestamp with time zone" {
        return Err(format!(
            "at_column {}.{} of event `{name}` is {}: expected timestamp with time zone, an instant",
            e.table, e.at, at.type_name
        )
        .into());
    }
    let own = column(info, t, &e.subject)?;
    if own.type_name != key.type_name {
        return Err(format!(
            "subject column {}.{} is {}, but the subject column {}.{} of event `{name}` is {}: they are compared with =, so their types must be the same",
            t.table, e.subject, own.type_name, e.table, e.key, key.type_name
        )
        .into());
    }
    if !events.has_index_on(e.key.as_str()) {
        warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message: format!(
                "no index starts with {}.{}, the subject column of event `{name}`: every due row looks its event up with a scan",
                e.table, e.key
            ),
        });
    }
    Ok(AgeKind::Timestamptz)
}

/// The compiled anonymise columns and whether they use the HMAC key: the key is present,
/// the server would not log the pads, and the real `UPDATE` compiles (`EXPLAIN`).
async fn check_anonymise(
    pg: &PgStore,
    config: &Config,
    rule: &Rule,
    t: &TableTarget,
    age_kind: AgeKind,
    info: &TableInfo,
    warnings: &mut Vec<Finding>,
) -> Result<(Vec<(Ident, ColumnSql)>, bool), Refusal> {
    let (anonymise, uses_hmac) = pg_sql::anonymise_columns(&t.anonymise, |c| {
        info.columns
            .get(c.as_str())
            .map(|ci| (ci.type_name.clone(), ci.nullable))
    })?;
    if uses_hmac {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        if key.is_empty() {
            return Err(format!(
                "the `hash` strategy needs a secret key in environment variable {} ([anonymise] hmac_key_env)",
                config.hmac_key_env
            ).into());
        }
        check_parameter_logging(pg).await?;
    }
    if let Err(e) = explain_anonymise(pg, config, t, age_kind, info, &anonymise, uses_hmac).await {
        let columns: Vec<&str> = anonymise.iter().map(|(c, _)| c.as_str()).collect();
        let what = format!(
            "the anonymise update of columns {} does not compile: {}",
            columns.join(", "),
            db_message(&e)
        );
        // Read-only credentials (`plan`, `conformance`) cannot compile an UPDATE;
        // the sweep's own credentials will be checked when it runs.
        if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501") {
            warnings.push(Finding {
                transient: false,
                rule: rule.name.clone(),
                message: format!("{what} (not checked with these credentials)"),
            });
        } else {
            return Err(what.into());
        }
    }
    Ok((anonymise, uses_hmac))
}

/// Refuses the `hash` strategy on a server that would write its bind parameters (the
/// HMAC pads) to its log.
async fn check_parameter_logging(pg: &PgStore) -> Result<(), Refusal> {
    let row = pg
        .fetch_one(&pg_sql::Statement {
            sql: pg_sql::PARAMETER_LOGGING.into(),
            params: Default::default(),
        })
        .await
        .map_err(|e| {
            format!(
                "cannot read the server's logging settings: {}",
                db_message(&e)
            )
        })?;
    let setting = |i: usize| row.try_get::<Option<String>, _>(i).ok().flatten();
    let logging = ParameterLogging {
        log_statement: setting(0),
        log_min_duration_statement: setting(1),
        log_min_duration_sample: setting(2),
        log_parameter_max_length: setting(3),
        log_parameter_max_length_on_error: setting(4),
        pgaudit_log_parameter: setting(5),
    };
    match logging.would_log_parameters() {
        Some(why) => Err(format!(
            "the `hash` strategy sends derived key material (the HMAC pads) as bind parameters, and this server would write them to its log ({why}); set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0 for the retentiond role or database (and pgaudit.log_parameter = off), see the README's Secrets section"
        ).into()),
        None => Ok(()),
    }
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

/// Compiles the rule's real anonymise `UPDATE` with `EXPLAIN` (nothing runs): a `fixed:`
/// value its column's type cannot take, or a type without the equality that tells an
/// anonymised row, fails here and not on the first batch.
async fn explain_anonymise(
    pg: &crate::store::PgStore,
    config: &Config,
    t: &crate::config::TableTarget,
    age_kind: AgeKind,
    info: &TableInfo,
    anonymise: &[(Ident, ColumnSql)],
    uses_hmac: bool,
) -> Result<(), sqlx::Error> {
    let subject_type = t
        .subject
        .as_ref()
        .and_then(|s| info.columns.get(s.column.as_str()))
        .map(|c| pg_sql::SubjectType::of(&c.type_name))
        .unwrap_or_default();
    let selection = pg_sql::Selection {
        table: &t.table,
        age: &t.age,
        age_kind,
        cutoff: Some(Utc::now()),
        not_before: None,
        filter: t.filter.as_deref(),
        subject_column: t.subject.as_ref().map(|s| &s.column),
        subject_type,
        held_ids: &[],
        only_subject: None,
        anonymise,
        keeps: &[],
        skip: &[],
    };
    let hmac = uses_hmac.then(|| {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        crate::anonymise::hmac_pads(key.as_bytes())
    });
    let mut st = selection.anonymise_batch(&pg_sql::Batch::First(1), hmac, &pg_sql::hmac_names());
    st.sql = format!("EXPLAIN {}", st.sql);
    pg.fetch_all(&st).await.map(|_| ())
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
