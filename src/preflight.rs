//! The preflight: before any write, check every selected rule against the live stores.
//!
//! Tables and columns exist, types suit the age format and anonymise strategies, key
//! columns are text or text[], filters compile (`EXPLAIN`), buckets answer, the HMAC key
//! is present when `hash` is used. What it learns (catalog facts, compiled anonymise SQL,
//! bucket versioning) is kept for the sweep, so the sweep never re-derives it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::anonymise::ColumnSql;
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

    /// The failure to report: exit 1 when only unreachable stores stopped it (retry
    /// later), exit 2 when something in the config or the schema is wrong.
    pub fn failure(&self) -> crate::cli::Fail {
        let message = format!(
            "preflight failed for {} rule(s); nothing was changed",
            self.errors.len()
        );
        if self.errors.iter().all(|e| e.transient) {
            crate::cli::Fail::runtime(message)
        } else {
            crate::cli::Fail::usage(message)
        }
    }
}

/// Checks `rules` against the stores.
pub async fn check(config: &Config, stores: &Stores, rules: &[&Rule]) -> Preflight {
    let mut pf = Preflight::default();
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
        match check_rule(config, stores, rule, &buckets, &mut pf.warnings).await {
            Ok(Some(p)) => {
                pf.prepared.insert(rule.name.clone(), p);
            }
            Ok(None) => {}
            Err(message) => {
                // A rule that failed only because its bucket did not answer shares the
                // store's outage.
                let unreachable = message.contains("is not reachable");
                let transient = unreachable
                    && pf
                        .errors
                        .iter()
                        .any(|f| f.transient && f.rule.starts_with("(store "));
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

async fn check_rule(
    config: &Config,
    stores: &Stores,
    rule: &Rule,
    buckets: &BTreeMap<String, Option<BucketInfo>>,
    warnings: &mut Vec<Finding>,
) -> Result<Option<Prepared>, String> {
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
    let info = pg
        .describe(&t.table)
        .await
        .map_err(|e| format!("cannot read the catalog of {}: {}", t.table, db_message(&e)))?
        .ok_or_else(|| format!("table {} does not exist in store `{}`", t.table, rule.store))?;
    if info.relkind != "r" && info.relkind != "p" {
        return Err(format!(
            "{} is not a table (relkind {})",
            t.table, info.relkind
        ));
    }
    let column = |c: &Ident| {
        info.columns
            .get(c.as_str())
            .ok_or_else(|| format!("column {}.{} does not exist", t.table, c))
    };
    let age = column(&t.age_column)?;
    let age_kind = AgeKind::resolve(&age.type_name, t.age_format)
        .map_err(|m| format!("{}: {m}", t.age_column))?;
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
            ));
        }
    }
    let mut objects_bucket = None;
    if let Some(o) = &t.objects {
        for c in &o.key_columns {
            let ci = column(c)?;
            let ok = matches!(ci.type_name.as_str(), "text" | "text[]")
                || ci.type_name.starts_with("character varying");
            if !ok {
                return Err(format!(
                    "key column {c} is {}: expected text or text[]",
                    ci.type_name
                ));
            }
        }
        objects_bucket = match buckets.get(&o.store) {
            Some(Some(b)) => Some(*b),
            _ => return Err(format!("the objects store `{}` is not reachable", o.store)),
        };
    }
    if let Some(filter) = &t.filter {
        let sql = format!(
            "EXPLAIN SELECT 1 FROM {} WHERE ({filter})",
            t.table.quoted()
        );
        sqlx::query(&sql)
            .execute(&pg.pool)
            .await
            .map_err(|e| format!("filter `{filter}` does not compile: {}", db_message(&e)))?;
    }
    match (&t.partitions, info.relkind.as_str()) {
        (Some(_), "r") => {
            return Err(format!(
                "`partitions` is set but {} is not a partitioned table",
                t.table
            ));
        }
        (Some(PartitionMode::Archive(schema)), _) => {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema.as_str())
                    .fetch_one(&pg.pool)
                    .await
                    .map_err(|e| db_message(&e))?;
            if !exists {
                return Err(format!("archive schema {schema} does not exist"));
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

/// A database error's message (no connection details).
pub fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}
