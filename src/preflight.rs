//! The preflight: before any write, check every selected rule against the live stores.
//!
//! Tables and columns exist, types suit the age format and anonymise strategies, key
//! columns are text or text[], filters compile (`EXPLAIN`), buckets answer, the HMAC key
//! is present when `hash` is used. What it learns (catalog facts, compiled anonymise SQL,
//! bucket versioning) is kept for the sweep, so the sweep never re-derives it.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::anonymise::ColumnSql;
use chrono::{DateTime, Utc};

use crate::config::{Config, Ident, PartitionMode, Rule, Target};
use crate::store::pg_sql::{self, AgeKind};
use crate::store::postgres::TableInfo;
use crate::store::s3::BucketInfo;
use crate::store::Stores;

/// What the sweep needs to know about a table rule.
#[derive(Debug, Clone)]
pub struct PreparedTable {
    /// Catalog facts.
    pub info: TableInfo,
    /// How the age column compares.
    pub age_kind: AgeKind,
    /// Compiled anonymise columns.
    pub anonymise: Vec<(Ident, ColumnSql)>,
    /// Whether the `hash` strategy is used.
    pub uses_hmac: bool,
    /// Primary key columns (empty: keyless, samples use ctid).
    pub primary_key: Vec<Ident>,
    /// Bucket facts of the linked-object store.
    pub objects_bucket: Option<BucketInfo>,
}

/// What the sweep needs to know about a rule.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A table rule.
    Table(PreparedTable),
    /// A prefix rule and its bucket.
    Prefix(BucketInfo),
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Rule (or `store NAME`).
    pub rule: String,
    /// What was found.
    pub message: String,
    /// The store did not answer (an outage, not a mistake in the config).
    #[serde(skip)]
    pub transient: bool,
}

/// The preflight's result.
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    /// Prepared rules by name (only those without errors).
    pub prepared: BTreeMap<String, Prepared>,
    /// Problems that stop a run.
    pub errors: Vec<Finding>,
    /// Things an operator should fix, that do not stop a run.
    pub warnings: Vec<Finding>,
}

impl Preflight {
    /// True when nothing stops a run.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Why `rule` did not pass: its own findings and those of the stores it uses.
    pub fn refusal(&self, rule: &str) -> String {
        let why: Vec<&str> = self
            .errors
            .iter()
            .filter(|f| f.rule == rule || f.rule.starts_with("(store "))
            .map(|f| f.message.as_str())
            .collect();
        if why.is_empty() {
            "the rule did not pass the preflight".into()
        } else {
            format!("preflight: {}", why.join("; "))
        }
    }

    /// The failure to report: exit 1 when only unreachable stores stopped it (retry
    /// later), exit 2 when something in the config or the schema is wrong.
    pub fn failure(&self) -> crate::error::Error {
        let message = format!(
            "preflight failed for {} rule(s); nothing was changed",
            self.errors.len()
        );
        if self.errors.iter().all(|e| e.transient) {
            crate::error::Error::unavailable(message)
        } else {
            crate::error::Error::usage(message)
        }
    }
}

/// How long the preflight waits for a Postgres store to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks `rules` against the stores.
pub async fn check(config: &Config, stores: &Stores, rules: &[&Rule]) -> Preflight {
    let mut pf = Preflight::default();
    // Each Postgres store answers once, or its rules fail at once as its outage (a
    // store that is down costs one probe, not a connection timeout per rule).
    let mut pg_names: Vec<&str> = rules
        .iter()
        .filter(|r| matches!(r.target, Target::Table(_)))
        .map(|r| r.store.as_str())
        .collect();
    pg_names.sort_unstable();
    pg_names.dedup();
    let mut down: Vec<String> = Vec::new();
    for name in pg_names {
        let Some(pg) = stores.pg.get(name) else {
            continue;
        };
        let clock = tokio::time::timeout(PROBE_TIMEOUT, pg.now()).await;
        match clock {
            Ok(Ok(db_now)) => {
                let skew = (Utc::now() - db_now).num_milliseconds() as f64 / 1000.0;
                if skew.abs() > crate::metrics::SKEW_WARN_SECS {
                    pf.warnings.push(Finding {
                        rule: format!("(store {name})"),
                        message: format!(
                            "this host's clock is {skew:.1} s off the database's; cutoffs and relative times (--as-of +7d, --tolerance) use the database clock, but fix the host's time (NTP)"
                        ),
                        transient: false,
                    });
                }
            }
            Ok(Err(e)) if !crate::store::postgres::unavailable(&e) => {}
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => db_message(&e),
                    _ => format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
                };
                pf.errors.push(Finding {
                    rule: format!("(store {name})"),
                    message: format!("store `{name}` is not reachable: {why}"),
                    transient: true,
                });
                down.push(name.to_owned());
            }
        }
    }
    let mut buckets: BTreeMap<String, Option<BucketInfo>> = BTreeMap::new();
    for rule in rules {
        let mut store_names = vec![rule.store.clone()];
        if let Target::Table(t) = &rule.target {
            if let Some(o) = &t.objects {
                store_names.push(o.store.clone());
            }
        }
        for name in store_names {
            let Some(s3) = stores.s3.get(&name) else {
                continue;
            };
            if let std::collections::btree_map::Entry::Vacant(slot) = buckets.entry(name.clone()) {
                let info = match s3.preflight().await {
                    Ok(i) => Some(i),
                    Err(e) => {
                        // Named as a store, not a rule: every rule using it fails too.
                        pf.errors.push(Finding {
                            rule: format!("(store {name})"),
                            message: e.to_string(),
                            transient: e.transient,
                        });
                        None
                    }
                };
                slot.insert(info);
            }
        }
    }
    for rule in rules {
        if down.contains(&rule.store) {
            pf.errors.push(Finding {
                rule: rule.name.clone(),
                message: format!("store `{}` is not reachable", rule.store),
                transient: true,
            });
            continue;
        }
        match check_rule(config, stores, rule, &buckets, &mut pf.warnings).await {
            Ok(Some(p)) => {
                pf.prepared.insert(rule.name.clone(), p);
            }
            Ok(None) => {}
            Err(Refusal { message, outage }) => {
                // A rule that failed only because its bucket did not answer shares the
                // store's outage.
                let transient = match outage {
                    Outage::None => false,
                    Outage::Database => true,
                    Outage::Bucket => pf
                        .errors
                        .iter()
                        .any(|f| f.transient && f.rule.starts_with("(store ")),
                };
                pf.errors.push(Finding {
                    rule: rule.name.clone(),
                    message,
                    transient,
                })
            }
        }
    }
    pf
}

/// Why a rule did not pass, and whether an outage caused it (worth retrying later).
struct Refusal {
    message: String,
    outage: Outage,
}

enum Outage {
    /// Something in the config or the schema is wrong.
    None,
    /// The rule's database did not answer.
    Database,
    /// A bucket the rule needs did not answer (its store's finding says why).
    Bucket,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Self {
            message,
            outage: Outage::None,
        }
    }
}

async fn check_rule(
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
    let column = |c: &Ident| {
        info.columns
            .get(c.as_str())
            .ok_or_else(|| format!("column {}.{} does not exist", t.table, c))
    };
    let age = column(&t.age_column)?;
    let age_kind = AgeKind::resolve(&age.type_name, t.age_format, t.age_timezone)
        .map_err(|m| format!("{}: {m}", t.age_column))?;
    match (age_kind, t.age_timezone) {
        (AgeKind::Timestamp(_) | AgeKind::Date(_), None) => warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message: format!(
                "age column {} is {}, which holds no time zone: its values are read as UTC. If they are local time, set age_timezone = \"<IANA zone>\" (e.g. \"Europe/Amsterdam\"); set age_timezone = \"UTC\" to confirm UTC",
                t.age_column, age.type_name
            ),
        }),
        (AgeKind::Timestamptz, Some(tz)) => warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message: format!(
                "age_timezone = \"{tz}\" is ignored: age column {} is timestamp with time zone, whose values are instants already",
                t.age_column
            ),
        }),
        _ => {}
    }
    if matches!(age_kind, AgeKind::EpochSeconds | AgeKind::EpochMillis) {
        let range = pg
            .fetch_one(&pg_sql::epoch_range(&t.table, &t.age_column))
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
                t.age_column,
                db_message(&e)
            )
        })?;
        check_epoch_range(&t.age_column, age_kind, min, max, now)?;
    }
    if let Some(s) = &t.subject {
        column(&s.column)?;
    }
    let (anonymise, uses_hmac) = if t.anonymise.is_empty() {
        (Vec::new(), false)
    } else {
        pg_sql::anonymise_columns(&t.anonymise, |c| {
            info.columns
                .get(c.as_str())
                .map(|ci| (ci.type_name.clone(), ci.nullable))
        })?
    };
    if uses_hmac {
        let key = std::env::var(&config.hmac_key_env).unwrap_or_default();
        if key.is_empty() {
            return Err(format!(
                "the `hash` strategy needs a secret key in environment variable {} ([anonymise] hmac_key_env)",
                config.hmac_key_env
            ).into());
        }
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
        if let Some(why) = logging.would_log_parameters() {
            return Err(format!(
                "the `hash` strategy sends derived key material (the HMAC pads) as bind parameters, and this server would write them to its log ({why}); set log_parameter_max_length = 0 and log_parameter_max_length_on_error = 0 for the retentiond role or database (and pgaudit.log_parameter = off), see the README's Secrets section"
            ).into());
        }
    }
    if !anonymise.is_empty() {
        if let Err(e) =
            explain_anonymise(pg, config, t, age_kind, &info, &anonymise, uses_hmac).await
        {
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
    }
    let mut objects_bucket = None;
    if let Some(o) = &t.objects {
        for c in &o.key_columns {
            let ci = column(c)?;
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
        objects_bucket = match buckets.get(&o.store) {
            Some(Some(b)) => Some(*b),
            _ => {
                return Err(Refusal {
                    message: format!("the objects store `{}` is not reachable", o.store),
                    outage: Outage::Bucket,
                })
            }
        };
    }
    if let Some(filter) = &t.filter {
        pg.fetch_all(&pg_sql::explain_filter(&t.table, filter))
            .await
            .map_err(|e| format!("filter `{filter}` does not compile: {}", db_message(&e)))?;
    }
    match (&t.partitions, info.relkind.as_str()) {
        (Some(_), "r") => {
            return Err(format!(
                "`partitions` is set but {} is not a partitioned table",
                t.table
            )
            .into());
        }
        (Some(PartitionMode::Archive(schema)), _) => {
            let exists: bool = pg
                .fetch_one(&pg_sql::schema_exists(schema))
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|e| db_message(&e))?;
            if !exists {
                return Err(format!("archive schema {schema} does not exist").into());
            }
        }
        _ => {}
    }
    if !info.has_index_on(t.age_column.as_str()) {
        warnings.push(Finding {
            transient: false,
            rule: rule.name.clone(),
            message: format!(
                "no index starts with the age column; every batch scans the table. Create one with:\n    CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {} ({});",
                Ident::parse(&format!("{}_{}_idx", t.table.name, t.age_column).chars().take(63).collect::<String>())
                    .map(|i| i.quoted())
                    .unwrap_or_else(|_| "retentiond_age_idx".into()),
                t.table.quoted(),
                t.age_column.quoted()
            ),
        });
    }
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
        age_column: &t.age_column,
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
fn check_epoch_range(
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
fn describe_secs(secs: f64) -> String {
    if !secs.is_finite() || secs.abs() > 1e15 {
        return "a time outside the calendar".into();
    }
    match DateTime::from_timestamp(secs.floor() as i64, 0) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "a time outside the calendar".into(),
    }
}

/// The settings that decide whether PostgreSQL writes bind parameters to its log.
#[derive(Debug, Default, Clone)]
struct ParameterLogging {
    log_statement: Option<String>,
    log_min_duration_statement: Option<String>,
    log_min_duration_sample: Option<String>,
    log_parameter_max_length: Option<String>,
    log_parameter_max_length_on_error: Option<String>,
    pgaudit_log_parameter: Option<String>,
}

impl ParameterLogging {
    /// Why a statement's parameters would reach the server log, if they would.
    fn would_log_parameters(&self) -> Option<String> {
        let is = |v: &Option<String>, x: &str| v.as_deref().map(str::trim) == Some(x);
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty() && s != "-1");
        if is(&self.pgaudit_log_parameter, "on") {
            return Some("pgaudit.log_parameter = on".into());
        }
        // An error's statement is logged with its parameters unless this is 0 (the default).
        if !is(&self.log_parameter_max_length_on_error, "0")
            && self.log_parameter_max_length_on_error.is_some()
        {
            return Some(format!(
                "log_parameter_max_length_on_error = {}",
                self.log_parameter_max_length_on_error
                    .as_deref()
                    .unwrap_or("")
            ));
        }
        if is(&self.log_parameter_max_length, "0") {
            return None;
        }
        if matches!(self.log_statement.as_deref(), Some("mod" | "all")) {
            return Some(format!(
                "log_statement = {}",
                self.log_statement.as_deref().unwrap_or("")
            ));
        }
        if set(&self.log_min_duration_statement) {
            return Some(format!(
                "log_min_duration_statement = {}",
                self.log_min_duration_statement.as_deref().unwrap_or("")
            ));
        }
        if set(&self.log_min_duration_sample) {
            return Some(format!(
                "log_min_duration_sample = {}",
                self.log_min_duration_sample.as_deref().unwrap_or("")
            ));
        }
        None
    }
}

/// A database error's message (no connection details).
pub fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod logging_tests {
    use super::ParameterLogging;

    fn with(f: impl FnOnce(&mut ParameterLogging)) -> Option<String> {
        let mut l = ParameterLogging {
            log_statement: Some("none".into()),
            log_min_duration_statement: Some("-1".into()),
            log_min_duration_sample: Some("-1".into()),
            log_parameter_max_length: Some("-1".into()),
            log_parameter_max_length_on_error: Some("0".into()),
            pgaudit_log_parameter: None,
        };
        f(&mut l);
        l.would_log_parameters()
    }

    #[test]
    fn parameter_logging_is_detected() {
        assert_eq!(
            with(|_| {}),
            None,
            "PostgreSQL's defaults log no parameters"
        );
        assert!(with(|l| l.log_statement = Some("mod".into())).is_some());
        assert!(with(|l| l.log_statement = Some("all".into())).is_some());
        assert_eq!(with(|l| l.log_statement = Some("ddl".into())), None);
        assert!(with(|l| l.log_min_duration_statement = Some("0".into())).is_some());
        assert!(with(|l| l.log_min_duration_sample = Some("250".into())).is_some());
        assert!(with(|l| l.log_parameter_max_length_on_error = Some("-1".into())).is_some());
        assert!(with(|l| l.pgaudit_log_parameter = Some("on".into())).is_some());
        assert_eq!(
            with(|l| {
                l.log_statement = Some("all".into());
                l.log_parameter_max_length = Some("0".into());
            }),
            None,
            "parameters are not logged at log_parameter_max_length = 0"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col() -> Ident {
        Ident::parse("started_ms").unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn epoch_ranges_that_fit_pass() {
        let s = 1_717_000_000.0; // 2024-05-29
        assert_eq!(
            check_epoch_range(&col(), AgeKind::EpochSeconds, Some(s), Some(s + 1e6), now()),
            Ok(())
        );
        assert_eq!(
            check_epoch_range(
                &col(),
                AgeKind::EpochMillis,
                Some(s * 1e3),
                Some(s * 1e3),
                now()
            ),
            Ok(())
        );
        // Empty tables and all-NULL columns.
        assert_eq!(
            check_epoch_range(&col(), AgeKind::EpochMillis, None, None, now()),
            Ok(())
        );
        // Up to a day ahead is clock skew, not a unit mix-up.
        let ahead = (now().timestamp() + 3_600) as f64;
        assert_eq!(
            check_epoch_range(
                &col(),
                AgeKind::EpochSeconds,
                Some(ahead),
                Some(ahead),
                now()
            ),
            Ok(())
        );
    }

    #[test]
    fn seconds_declared_as_millis_are_refused() {
        let e = check_epoch_range(
            &col(),
            AgeKind::EpochMillis,
            Some(1_717_000_000.0),
            Some(1_717_100_000.0),
            now(),
        )
        .unwrap_err();
        assert!(
            e.contains(
                "age column started_ms holds values that decode to 1970-01-20 as epoch_millis"
            ),
            "{e}"
        );
        assert!(
            e.contains("they look like epoch seconds: set age_format = \"epoch_seconds\""),
            "{e}"
        );
    }

    #[test]
    fn millis_declared_as_seconds_are_refused() {
        let e = check_epoch_range(
            &col(),
            AgeKind::EpochSeconds,
            Some(1_717_000_000_000.0),
            Some(1_717_000_000_000.0),
            now(),
        )
        .unwrap_err();
        assert!(e.contains("as epoch_seconds (in the future)"), "{e}");
        assert!(e.contains("set age_format = \"epoch_millis\""), "{e}");
    }

    #[test]
    fn other_implausible_values_are_refused() {
        let micros = 1_717_000_000_000_000.0;
        let e = check_epoch_range(
            &col(),
            AgeKind::EpochMillis,
            Some(micros),
            Some(micros),
            now(),
        )
        .unwrap_err();
        assert!(e.contains("microseconds"), "{e}");
        // A sentinel 0 among good values.
        let e = check_epoch_range(
            &col(),
            AgeKind::EpochSeconds,
            Some(0.0),
            Some(1_717_000_000.0),
            now(),
        )
        .unwrap_err();
        assert!(
            e.contains("decode to 1970-01-01 as epoch_seconds (before 1990)"),
            "{e}"
        );
        // A future value.
        let future = (now().timestamp() + 3 * 86_400) as f64;
        let e = check_epoch_range(
            &col(),
            AgeKind::EpochSeconds,
            Some(1_717_000_000.0),
            Some(future),
            now(),
        )
        .unwrap_err();
        assert!(
            e.contains("2025-06-04 as epoch_seconds (in the future)"),
            "{e}"
        );
        let e = check_epoch_range(&col(), AgeKind::EpochSeconds, Some(-5.0), Some(1e6), now())
            .unwrap_err();
        assert!(e.contains("1969-12-31"), "{e}");
        assert_eq!(describe_secs(1e300), "a time outside the calendar");
    }

    #[test]
    fn the_range_query_quotes_its_identifiers() {
        let t = crate::config::TableName::parse("public.Sessions").unwrap();
        assert_eq!(
            pg_sql::epoch_range(&t, &col()).sql,
            "SELECT min(\"started_ms\")::float8, max(\"started_ms\")::float8, now() FROM \"public\".\"Sessions\""
        );
    }
}
