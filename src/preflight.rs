//! The preflight: before any write, check every selected rule against the live stores.
//!
//! Tables and columns exist, types suit the age format and anonymise strategies, key
//! columns are text or text[], filters compile (`EXPLAIN`), buckets answer, the HMAC key
//! is present when `hash` is used. What it learns (catalog facts, compiled anonymise SQL,
//! bucket versioning) is kept for the sweep, so the sweep never re-derives it.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use crate::anonymise::ColumnSql;

use crate::config::{Config, Ident, Rule, Target};
use crate::store::pg_sql::AgeKind;
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

/// A database error's message (no connection details).
pub fn db_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        other => other.to_string(),
    }
}

mod logging;
mod table;

use table::check_rule;

#[cfg(test)]
mod tests;
