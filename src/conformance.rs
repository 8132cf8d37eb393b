//! Conformance: for every rule, what is still kept past its cutoff (held records apart).

use crate::report::Status;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::preflight::Preflight;
use crate::sweep::{Engine, Mode};

/// One rule's conformance.
#[derive(Debug, Clone, Serialize)]
pub struct RuleConformance {
    /// Rule.
    pub rule: String,
    /// Category.
    pub category: String,
    /// Table or bucket prefix.
    pub place: String,
    /// The cutoff now.
    pub cutoff: Option<DateTime<Utc>>,
    /// Records past the cutoff and not held: should be gone.
    pub overdue: u64,
    /// Records past the cutoff kept by a hold.
    pub held: u64,
    /// Time of the oldest overdue record.
    pub oldest_overdue: Option<DateTime<Utc>>,
    /// How long past the cutoff it is, human-readable.
    pub oldest_overdue_age: Option<String>,
    /// The same in seconds (as `retentiond_oldest_overdue_age_seconds`).
    pub oldest_overdue_age_seconds: Option<f64>,
    /// Why the rule could not be checked.
    pub error: Option<String>,
}

/// Checks every prepared, enabled rule; also sets the overdue gauges. `tolerance` moves
/// every cutoff back: only records past it by more than that count.
pub async fn check(
    engine: &Engine,
    pf: &Preflight,
    tolerance: Option<&crate::config::Period>,
) -> Vec<RuleConformance> {
    let mut out = Vec::new();
    for rule in engine.config.rules.iter().filter(|r| r.enabled) {
        if engine.shutdown.is_cancelled() {
            break;
        }
        out.push(check_rule(engine, rule, pf, tolerance).await);
    }
    out
}

/// Checks one rule.
pub async fn check_rule(
    engine: &Engine,
    rule: &crate::config::Rule,
    pf: &Preflight,
    tolerance: Option<&crate::config::Period>,
) -> RuleConformance {
    // The tolerance counts back from the rule's database clock (cutoffs do too), not
    // from this host's, which may be off.
    let as_of = match tolerance {
        None => None,
        Some(t) => {
            let now = match (&rule.target, engine.stores.pg.get(&rule.store)) {
                (crate::config::Target::Table(_), Some(pg)) => {
                    pg.now().await.unwrap_or_else(|_| Utc::now())
                }
                _ => Utc::now(),
            };
            t.before(now)
        }
    };
    let r = engine
        .evaluate(rule, Mode::DryRun, as_of, pf.prepared.get(&rule.name))
        .await;
    let oldest: Option<DateTime<Utc>> = r
        .details
        .get("oldest_due")
        .and_then(|v| v.as_str())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let failed = r.status == Status::Failed;
    let overdue = if failed { 0 } else { r.matched };
    let oldest = if overdue > 0 { oldest } else { None };
    // How long past its cutoff the oldest overdue record is (not its age).
    let age = match (oldest, r.cutoff) {
        (Some(o), Some(c)) => Some((c - o).num_seconds().max(0) as f64),
        _ => None,
    };
    if failed {
        crate::metrics::record_conformance_failure(&rule.name);
    } else {
        crate::metrics::record_overdue(&rule.name, overdue, age.unwrap_or(0.0));
    }
    RuleConformance {
        rule: rule.name.clone(),
        category: rule.category.clone(),
        place: r.place.clone(),
        cutoff: r.cutoff,
        overdue,
        held: r.held,
        oldest_overdue: oldest,
        oldest_overdue_age: age.map(|s| human_age(s as u64)),
        oldest_overdue_age_seconds: age,
        error: (r.status == Status::Failed).then(|| r.errors.join("; ")),
    }
}

/// `3d 4h`, `12m`, `40s`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// `results` as the report site's snapshot.
pub fn snapshot(results: &[RuleConformance]) -> crate::report::site::ConformanceSnapshot {
    crate::report::site::ConformanceSnapshot {
        checked_at: Utc::now(),
        rules: results
            .iter()
            .map(|r| crate::report::site::ConformanceLine {
                rule: r.rule.clone(),
                category: r.category.clone(),
                overdue: r.overdue,
                held: r.held,
                oldest_overdue_age: r.oldest_overdue_age.clone(),
                error: r.error.clone(),
            })
            .collect(),
    }
}

/// Saves `results` for the report site and rewrites its index.
pub async fn publish(engine: &Engine, results: &[RuleConformance]) {
    use crate::report::site;
    site::save(
        &engine.config,
        &engine.stores,
        site::CONFORMANCE_FILE,
        &snapshot(results),
    )
    .await;
    site::refresh(&engine.config, &engine.stores, &engine.audit).await;
}
