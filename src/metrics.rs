//! Prometheus metrics, through the `metrics` facade (the exporter is installed by the daemon).

use crate::report::Status;
use chrono::{DateTime, Utc};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};

use crate::config::{Config, Rule};
use crate::report::RunReport;

/// Clock skew between this host and a database above which the daemon warns.
pub const SKEW_WARN_SECS: f64 = 5.0;

/// HELP texts (and units) of every metric; called once when the exporter is installed.
pub fn describe() {
    describe_gauge!(
        "retentiond_build_info",
        "Always 1; the running version in `version`."
    );
    describe_gauge!(
        "retentiond_config_info",
        "1 for the loaded config (its `sha256`), 0 for configs replaced by a reload."
    );
    describe_gauge!(
        "retentiond_rule_info",
        "Always 1 per enabled rule; its category, store, action and schedule as labels."
    );
    describe_gauge!(
        "retentiond_rule_last_success_timestamp_seconds",
        Unit::Seconds,
        "End of the rule's last successful enforcing run (from the audit trail); 0 if it never succeeded."
    );
    describe_gauge!(
        "retentiond_rule_never_succeeded",
        "1 while the rule has no successful enforcing run in the audit trail."
    );
    describe_gauge!(
        "retentiond_rule_next_run_timestamp_seconds",
        Unit::Seconds,
        "When the rule's schedule fires next."
    );
    describe_counter!(
        "retentiond_records_removed_total",
        Unit::Count,
        "Rows deleted or anonymised and object versions deleted, by rule and action."
    );
    describe_counter!(
        "retentiond_rule_failures_total",
        Unit::Count,
        "Runs of the rule that ended failed or partial."
    );
    describe_counter!(
        "retentiond_anchor_failures_total",
        Unit::Count,
        "Chain heads that could not be anchored in `[audit] anchor_store` (the next seal anchors a newer head)."
    );
    describe_counter!(
        "retentiond_runs_total",
        Unit::Count,
        "Finished runs, by mode and status."
    );
    describe_histogram!(
        "retentiond_run_duration_seconds",
        Unit::Seconds,
        "Duration of finished runs."
    );
    describe_gauge!(
        "retentiond_overdue_records",
        "Records past their cutoff and not held, at the last conformance check that worked."
    );
    describe_gauge!(
        "retentiond_oldest_overdue_age_seconds",
        Unit::Seconds,
        "How long past its cutoff the oldest overdue record is, at the last conformance check that worked."
    );
    describe_gauge!("retentiond_conformance_check_ok", "1 if the rule's last conformance check worked, 0 if it failed (the overdue gauges are then stale).");
    describe_counter!(
        "retentiond_conformance_failures_total",
        Unit::Count,
        "Conformance checks of the rule that could not be made."
    );
    describe_gauge!(
        "retentiond_store_up",
        "1 if the store answered its last probe, else 0."
    );
    describe_gauge!(
        "retentiond_clock_skew_seconds",
        Unit::Seconds,
        "This host's clock minus the database's `now()`, at the last probe."
    );
}

/// The series an alert needs from the first scrape, for one enabled rule: its info, its
/// last success (0 and `never_succeeded 1` if none), its next run, and its counters at 0.
pub fn init_rule(config: &Config, rule: &Rule, last_success: Option<DateTime<Utc>>) {
    rule_info(config, rule).set(1.0);
    gauge!("retentiond_rule_last_success_timestamp_seconds", "rule" => rule.name.clone(), "category" => rule.category.clone())
        .set(last_success.map_or(0.0, |t| t.timestamp() as f64));
    gauge!("retentiond_rule_never_succeeded", "rule" => rule.name.clone())
        .set(if last_success.is_some() { 0.0 } else { 1.0 });
    next_run(config, rule);
    counter!("retentiond_records_removed_total", "rule" => rule.name.clone(), "action" => rule.action.as_str())
        .increment(0);
    counter!("retentiond_rule_failures_total", "rule" => rule.name.clone()).increment(0);
    counter!("retentiond_conformance_failures_total", "rule" => rule.name.clone()).increment(0);
}

/// Marks a rule of a replaced config as gone: its info and never-succeeded series 0.
pub fn retire_rule(config: &Config, rule: &Rule) {
    rule_info(config, rule).set(0.0);
    gauge!("retentiond_rule_never_succeeded", "rule" => rule.name.clone()).set(0.0);
}

/// The `retentiond_rule_info` series of `rule` under `config`.
fn rule_info(config: &Config, rule: &Rule) -> metrics::Gauge {
    gauge!("retentiond_rule_info",
        "rule" => rule.name.clone(), "category" => rule.category.clone(), "store" => rule.store.clone(),
        "action" => rule.action.as_str(), "schedule" => config.schedule_of(rule).expr.clone())
}

/// Sets when `rule` runs next.
pub fn next_run(config: &Config, rule: &Rule) {
    if let Some(next) = config.schedule_of(rule).next_after(&Utc::now()) {
        gauge!("retentiond_rule_next_run_timestamp_seconds", "rule" => rule.name.clone())
            .set(next.timestamp() as f64);
    }
}

/// `build_info` and `config_info` (the replaced config's series, if any, set to 0).
pub fn init_process(sha256: &str, replaced: Option<&str>) {
    gauge!("retentiond_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if let Some(old) = replaced.filter(|old| *old != sha256) {
        gauge!("retentiond_config_info", "sha256" => old.to_owned()).set(0.0);
    }
    gauge!("retentiond_config_info", "sha256" => sha256.to_owned()).set(1.0);
    // Every run outcome an alert watches from the first scrape, at 0: a counter that
    // appears at 1 has no increase, and its first failure would go unnoticed.
    for mode in ["enforce", "dry_run"] {
        for status in ["succeeded", "partial", "failed", "refused", "interrupted"] {
            counter!("retentiond_runs_total", "mode" => mode, "status" => status).increment(0);
        }
    }
}

/// One store's probe: up or down, and for a Postgres store the skew of this host's clock
/// against the database's.
pub fn record_store(name: &str, up: bool, skew_seconds: Option<f64>) {
    gauge!("retentiond_store_up", "store" => name.to_owned()).set(if up { 1.0 } else { 0.0 });
    if let Some(s) = skew_seconds {
        gauge!("retentiond_clock_skew_seconds", "store" => name.to_owned()).set(s);
    }
}

/// Counts rows or objects removed by one batch.
pub fn record_batch(rule: &str, action: &str, n: u64) {
    counter!("retentiond_records_removed_total", "rule" => rule.to_owned(), "action" => action.to_owned()).increment(n);
}

/// Updates per-rule gauges and counters after a run.
pub fn record_run(report: &RunReport) {
    let duration = match report.finished_at {
        Some(f) => (f - report.started_at).num_milliseconds().max(0) as f64 / 1000.0,
        None => 0.0,
    };
    histogram!("retentiond_run_duration_seconds", "mode" => report.mode.clone()).record(duration);
    counter!("retentiond_runs_total", "mode" => report.mode.clone(), "status" => report.status.as_str()).increment(1);
    for r in &report.rules {
        if r.status == Status::Failed || r.status == Status::Partial {
            counter!("retentiond_rule_failures_total", "rule" => r.rule.clone()).increment(1);
        }
        if report.mode == "enforce" && r.status == Status::Succeeded {
            if let Some(f) = report.finished_at {
                gauge!("retentiond_rule_last_success_timestamp_seconds", "rule" => r.rule.clone(), "category" => r.category.clone())
                    .set(f.timestamp() as f64);
                gauge!("retentiond_rule_never_succeeded", "rule" => r.rule.clone()).set(0.0);
            }
        }
    }
}

/// Sets the overdue gauges of one rule (from `conformance` figures), and marks its
/// check as done (`retentiond_conformance_check_ok 1`).
pub fn record_overdue(rule: &str, overdue: u64, oldest_age_seconds: f64) {
    gauge!("retentiond_overdue_records", "rule" => rule.to_owned()).set(overdue as f64);
    gauge!("retentiond_oldest_overdue_age_seconds", "rule" => rule.to_owned())
        .set(oldest_age_seconds);
    gauge!("retentiond_conformance_check_ok", "rule" => rule.to_owned()).set(1.0);
}

/// A conformance check that could not be made. The overdue gauges are left as they
/// were (absent, or stale from the last check that worked), never set to 0: a failed
/// check must not look like a clean one. `retentiond_conformance_check_ok 0` marks them
/// stale, and the failure is counted.
pub fn record_conformance_failure(rule: &str) {
    gauge!("retentiond_conformance_check_ok", "rule" => rule.to_owned()).set(0.0);
    counter!("retentiond_conformance_failures_total", "rule" => rule.to_owned()).increment(1);
}

/// An anchor write to `store` failed.
pub fn anchor_failed(store: &str) {
    counter!("retentiond_anchor_failures_total", "store" => store.to_owned()).increment(1);
}

/// Shows the anchor failure counter of `store` at 0 before any failure, so an alert on
/// its increase fires on the first one.
pub fn anchor_series(store: &str) {
    counter!("retentiond_anchor_failures_total", "store" => store.to_owned()).increment(0);
}
