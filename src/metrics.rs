//! Prometheus metrics, through the `metrics` facade (the exporter is installed by the daemon).

use metrics::{counter, gauge, histogram};

use crate::report::RunReport;

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
    counter!("retentiond_runs_total", "mode" => report.mode.clone(), "status" => report.status.clone()).increment(1);
    for r in &report.rules {
        if r.status == "failed" || r.status == "partial" {
            counter!("retentiond_rule_failures_total", "rule" => r.rule.clone()).increment(1);
        }
        if report.mode == "enforce" && r.status == "succeeded" {
            if let Some(f) = report.finished_at {
                gauge!("retentiond_rule_last_success_timestamp_seconds", "rule" => r.rule.clone(), "category" => r.category.clone())
                    .set(f.timestamp() as f64);
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
