//! The report site: `index.html` beside the run reports in `report_dir` (and
//! `report_store`), rewritten after every run. It lists the runs, newest first, each
//! linking to its own page; charts records removed per category per day; shows the
//! latest conformance per rule and the result of the last `audit verify`. One file, no
//! scripts, no external assets; readable from a phone's width up.
//!
//! The conformance and verify results come from small JSON snapshots the `conformance`
//! command, the daemon's conformance check and `audit verify` leave in the same place.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::html::esc;
use super::table::count;
use super::{RunReport, Status};

/// File name of the conformance snapshot.
pub const CONFORMANCE_FILE: &str = "conformance.json";
/// File name of the verify snapshot.
pub const VERIFY_FILE: &str = "audit-verify.json";
/// Days the chart covers.
const CHART_DAYS: i64 = 30;

/// One rule's latest conformance, as the site shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConformanceLine {
    /// Rule.
    pub rule: String,
    /// Category.
    pub category: String,
    /// Records past the cutoff and not held.
    pub overdue: u64,
    /// Held records past the cutoff.
    pub held: u64,
    /// How long past the cutoff the oldest overdue record is.
    pub oldest_overdue_age: Option<String>,
    /// Why the rule could not be checked.
    pub error: Option<String>,
}

/// The latest conformance check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConformanceSnapshot {
    /// When it ran.
    pub checked_at: DateTime<Utc>,
    /// Per rule.
    pub rules: Vec<ConformanceLine>,
}

/// The latest `audit verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifySnapshot {
    /// When it ran.
    pub checked_at: DateTime<Utc>,
    /// Records checked.
    pub records: u64,
    /// The head hash.
    pub head_hash: Option<String>,
    /// Whether signatures were checked.
    pub signatures_checked: bool,
    /// Whether anchors were checked.
    pub anchors_checked: bool,
    /// Problems found (none: the trail verified).
    pub violations: Vec<String>,
}

/// The file name (without extension) of a run's report copies.
pub fn stem(r: &RunReport) -> String {
    format!("{}_{}", r.started_at.format("%Y%m%dT%H%M%SZ"), r.run_id)
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Succeeded => "ok",
        Status::Partial | Status::Interrupted | Status::Refused | Status::Running => "warn",
        _ => "bad",
    }
}

/// `removed` (records deleted or anonymised by enforcing runs, per UTC day and category,
/// as the trail sums them) laid out over the `CHART_DAYS` days up to `now`.
fn removed_per_day(
    removed: &[(NaiveDate, String, u64)],
    now: DateTime<Utc>,
) -> (Vec<NaiveDate>, BTreeMap<String, Vec<u64>>) {
    let today = now.date_naive();
    let days: Vec<NaiveDate> = (0..CHART_DAYS)
        .rev()
        .map(|d| today - Duration::days(d))
        .collect();
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (day, category, n) in removed {
        let Some(i) = days.iter().position(|d| d == day) else {
            continue;
        };
        per.entry(category.clone())
            .or_insert_with(|| vec![0; days.len()])[i] += n;
    }
    per.retain(|_, v| v.iter().any(|n| *n > 0));
    (days, per)
}

/// The first instant the chart covers.
pub fn chart_start(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() - Duration::days(CHART_DAYS - 1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
}

const PALETTE: &[&str] = &[
    "#2f6fbf", "#d9822b", "#3a9d5d", "#b8483f", "#7d5ba6", "#8c6d46", "#c55a9c", "#6b7b8c",
];

/// A stacked bar chart as inline SVG that scales to its container.
fn chart(days: &[NaiveDate], per: &BTreeMap<String, Vec<u64>>) -> String {
    if per.is_empty() {
        return "<p class=\"muted\">No records were removed by enforcing runs in the last 30 days.</p>".into();
    }
    let totals: Vec<u64> = (0..days.len())
        .map(|i| per.values().map(|v| v[i]).sum())
        .collect();
    let max = totals.iter().copied().max().unwrap_or(1).max(1);
    let (w, h, left, bottom) = (720.0_f64, 220.0_f64, 48.0_f64, 24.0_f64);
    let bar = (w - left) / days.len() as f64;
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"Records removed per category per day\" class=\"chart\">",
        h + bottom
    );
    let _ = write!(
        o,
        "<text x=\"0\" y=\"12\" class=\"axis\">{}</text><text x=\"0\" y=\"{h}\" class=\"axis\">0</text>",
        count(max)
    );
    for (i, day) in days.iter().enumerate() {
        let mut y = h;
        for (c, (cat, v)) in per.iter().enumerate() {
            if v[i] == 0 {
                continue;
            }
            let bh = v[i] as f64 / max as f64 * (h - 16.0);
            y -= bh;
            let _ = write!(
                o,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{day}: {} {}</title></rect>",
                left + i as f64 * bar + 1.0,
                (bar - 2.0).max(1.0),
                PALETTE[c % PALETTE.len()],
                count(v[i]),
                esc(cat)
            );
        }
        if (days.len() - 1 - i).is_multiple_of(7) {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{}\" class=\"axis\">{}</text>",
                left + i as f64 * bar,
                h + 16.0,
                day.format("%m-%d")
            );
        }
    }
    o.push_str("</svg><ul class=\"legend\">");
    for (c, cat) in per.keys().enumerate() {
        let _ = write!(
            o,
            "<li><span style=\"background:{}\"></span>{}</li>",
            PALETTE[c % PALETTE.len()],
            esc(cat)
        );
    }
    o.push_str("</ul>");
    o
}

/// The page. `runs` newest first.
pub fn render_index(
    runs: &[RunReport],
    removed: &[(NaiveDate, String, u64)],
    conformance: Option<&ConformanceSnapshot>,
    verify: Option<&VerifySnapshot>,
    now: DateTime<Utc>,
) -> String {
    let mut o = String::new();
    o.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Retention runs</title>\
<style>body{font:15px/1.5 system-ui,sans-serif;margin:1.5rem auto;max-width:76rem;color:#1d2733;padding:0 1rem}\
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}.wrap{overflow-x:auto}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{padding:.35rem .6rem;border-bottom:1px solid #dde3ea;text-align:left;white-space:nowrap}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.badge{padding:.1rem .5rem;border-radius:.4rem;font-weight:600}\
.ok{background:#e3f6e8;color:#17692f}.warn{background:#fff4d6;color:#7a5300}.bad{background:#fde4e4;color:#8d1c1c}\
.muted{color:#5b6b7c}code{font-size:.85em;word-break:break-all}.note{background:#f3f6f9;padding:.8rem 1rem;border-radius:.5rem}\
.chart{width:100%;height:auto}.axis{font-size:11px;fill:#5b6b7c}\
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.4rem 1rem}.legend span{display:inline-block;width:.8rem;height:.8rem;margin-right:.35rem;border-radius:.15rem;vertical-align:-.05rem}\
@media (max-width:40rem){body{font-size:14px;margin:1rem auto}th,td{padding:.3rem .4rem}.wide{display:none}}</style></head><body>");
    let _ = write!(
        o,
        "<h1>Retention runs</h1><p class=\"muted\">Rewritten after every run; generated {}. The audit trail in PostgreSQL is the record, this page a view of it.</p>",
        now.format("%Y-%m-%d %H:%M UTC")
    );
    // The last verify.
    o.push_str("<h2>Audit trail</h2>");
    match verify {
        None => o.push_str("<p class=\"note\">No <code>audit verify</code> result yet: run <code>retentiond audit verify</code>.</p>"),
        Some(v) => {
            let (class, what) = if v.violations.is_empty() {
                ("ok", "verified")
            } else {
                ("bad", "VIOLATION")
            };
            let _ = write!(
                o,
                "<p class=\"note\"><span class=\"badge {class}\">{what}</span> {} records checked at {}{}{}.",
                count(v.records),
                v.checked_at.format("%Y-%m-%d %H:%M UTC"),
                if v.signatures_checked { ", signatures checked" } else { "" },
                if v.anchors_checked { ", anchors checked" } else { "" },
            );
            if let Some(h) = &v.head_hash {
                let _ = write!(o, " Head hash <code>{}</code>.", esc(h));
            }
            if let Some(first) = v.violations.first() {
                let _ = write!(
                    o,
                    " {} problem(s); first: {}",
                    v.violations.len(),
                    esc(first)
                );
            }
            o.push_str("</p>");
        }
    }
    // Removed per category per day.
    let (days, per) = removed_per_day(removed, now);
    o.push_str("<h2>Records removed per category per day (enforcing runs, last 30 days)</h2>");
    o.push_str(&chart(&days, &per));
    // Conformance.
    o.push_str("<h2>Conformance: records kept past their cutoff</h2>");
    match conformance {
        None => o.push_str("<p class=\"note\">No conformance check yet: run <code>retentiond conformance</code>, or let the daemon run it.</p>"),
        Some(c) => {
            let _ = write!(
                o,
                "<p class=\"muted\">Checked {}.</p><div class=\"wrap\"><table><thead><tr><th>Rule</th><th class=\"wide\">Category</th><th class=\"n\">Overdue</th><th class=\"n\">Held</th><th>Oldest overdue</th></tr></thead><tbody>",
                c.checked_at.format("%Y-%m-%d %H:%M UTC")
            );
            for r in &c.rules {
                let overdue = match &r.error {
                    Some(e) => format!("<span class=\"badge warn\" title=\"{}\">not checked</span>", esc(e)),
                    None if r.overdue == 0 => "<span class=\"badge ok\">0</span>".into(),
                    None => format!("<span class=\"badge bad\">{}</span>", count(r.overdue)),
                };
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td class=\"wide\">{}</td><td class=\"n\">{overdue}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    esc(&r.rule),
                    esc(&r.category),
                    count(r.held),
                    esc(r.oldest_overdue_age.as_deref().unwrap_or("—"))
                );
            }
            o.push_str("</tbody></table></div>");
        }
    }
    // Runs.
    let _ = write!(
        o,
        "<h2>Runs, newest first ({})</h2><div class=\"wrap\"><table><thead><tr><th>Started</th><th>Status</th><th>Trigger</th><th>Mode</th><th class=\"n\">Matched</th><th class=\"n\">Deleted</th><th class=\"n\">Anonymised</th><th class=\"n\">Held</th><th class=\"n\">Failed</th><th class=\"wide\">Run</th></tr></thead><tbody>",
        count(runs.len() as u64)
    );
    for r in runs {
        let (m, d, a, h, f, _) = r.totals();
        let link = esc(&format!("{}.html", stem(r)));
        let _ = write!(
            o,
            "<tr><td><a href=\"{link}\">{}</a></td><td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"wide\"><a href=\"{link}\"><code>{}</code></a></td></tr>",
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            status_class(r.status),
            esc(r.status.as_str()),
            esc(&r.trigger),
            match (r.trigger.as_str(), r.mode.as_str()) {
                ("export", _) => "export",
                (_, "dry_run") => "dry-run",
                _ => "enforce",
            },
            count(m),
            count(d),
            count(a),
            count(h),
            count(f),
            esc(&r.run_id[..r.run_id.len().min(8)])
        );
    }
    o.push_str("</tbody></table></div></body></html>");
    o
}

/// Where the site lives: `report_dir` and `report_store`/`report_prefix`.
fn places<'a>(
    config: &'a crate::config::Config,
    stores: &'a crate::store::Stores,
) -> (
    Option<&'a std::path::Path>,
    Option<(&'a crate::store::s3::S3Store, &'a str)>,
) {
    let dir = config.audit.report_dir.as_deref();
    let store = config
        .audit
        .report_store
        .as_ref()
        .and_then(|s| stores.s3.get(s))
        .map(|s| (s, config.audit.report_prefix.as_str()));
    (dir, store)
}

/// Writes `body` as `file` of the site; failures are logged, never fatal.
async fn put(
    config: &crate::config::Config,
    stores: &crate::store::Stores,
    file: &str,
    body: Vec<u8>,
    content_type: &str,
) {
    let (dir, store) = places(config, stores);
    if let Some(dir) = dir {
        // Write beside, then rename: a reader never sees half a page.
        let tmp = dir.join(format!(".{file}.tmp"));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, &body))
            .and_then(|()| std::fs::rename(&tmp, dir.join(file)));
        if let Err(e) = written {
            tracing::warn!(dir = %dir.display(), file, error = %e, "failed to write the report site");
        }
    }
    if let Some((s3, prefix)) = store {
        if let Err(e) = s3.put(&format!("{prefix}{file}"), body, content_type).await {
            tracing::warn!(file, error = %e, "failed to copy the report site to object storage");
        }
    }
}

/// Reads `file` of the site: from `report_dir` first, else from `report_store`.
async fn get<T: serde::de::DeserializeOwned>(
    config: &crate::config::Config,
    stores: &crate::store::Stores,
    file: &str,
) -> Option<T> {
    let (dir, store) = places(config, stores);
    let bytes = match (dir, store) {
        (Some(dir), _) => std::fs::read(dir.join(file)).ok()?,
        (None, Some((s3, prefix))) => s3.get_bytes(&format!("{prefix}{file}"), None).await.ok()?,
        (None, None) => return None,
    };
    serde_json::from_slice(&bytes).ok()
}

/// Whether there is a site at all (`report_dir` or `report_store`).
pub fn enabled(config: &crate::config::Config) -> bool {
    config.audit.report_dir.is_some() || config.audit.report_store.is_some()
}

/// Saves the latest conformance or verify result (`file` is [`CONFORMANCE_FILE`] or
/// [`VERIFY_FILE`]) for the site.
pub async fn save<T: Serialize>(
    config: &crate::config::Config,
    stores: &crate::store::Stores,
    file: &str,
    value: &T,
) {
    if enabled(config) {
        let body = serde_json::to_vec_pretty(value).expect("snapshots serialize");
        put(config, stores, file, body, "application/json").await;
    }
}

/// Runs the site shows, at most.
const RUNS_SHOWN: i64 = 500;

/// Rewrites `index.html` from the trail's latest runs and the saved snapshots.
pub async fn refresh(
    config: &crate::config::Config,
    stores: &crate::store::Stores,
    audit: &crate::audit::Audit,
) {
    if !enabled(config) {
        return;
    }
    let runs = match audit
        .list_runs(&crate::audit::RunFilter {
            since: None,
            rule: None,
            status: None,
            limit: RUNS_SHOWN,
        })
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the report site was not rewritten: the runs cannot be read");
            return;
        }
    };
    let conformance: Option<ConformanceSnapshot> = get(config, stores, CONFORMANCE_FILE).await;
    let verify: Option<VerifySnapshot> = get(config, stores, VERIFY_FILE).await;
    let now = Utc::now();
    // Summed by the trail over every run of the period, not only the runs listed.
    let removed = match audit.removed_per_category_day(chart_start(now)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "the report site was not rewritten: the removals cannot be read");
            return;
        }
    };
    let page = render_index(&runs, &removed, conformance.as_ref(), verify.as_ref(), now);
    put(config, stores, "index.html", page.into_bytes(), "text/html").await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RuleReport;

    fn run(id: &str, days_ago: i64, mode: &str, category: &str, deleted: u64) -> RunReport {
        let now = Utc::now();
        RunReport {
            schema: crate::report::REPORT_SCHEMA.into(),
            run_id: id.into(),
            trigger: "schedule".into(),
            mode: mode.into(),
            status: Status::Succeeded,
            started_at: now - Duration::days(days_ago),
            finished_at: Some(now - Duration::days(days_ago)),
            config_sha256: "ab".into(),
            actor: "t".into(),
            host: "h".into(),
            version: "0".into(),
            as_of: None,
            subject_hash: None,
            error: None,
            chain_seq: Some(1),
            prev_hash: None,
            hash: None,
            rules: vec![RuleReport {
                rule: "r".into(),
                category: category.into(),
                deleted,
                status: Status::Succeeded,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_chart_lays_the_trails_sums_over_the_last_30_days() {
        let now = Utc::now();
        let day = |ago: i64| now.date_naive() - Duration::days(ago);
        let removed = [
            (day(0), "logs".to_owned(), 7),
            (day(3), "assets".to_owned(), 4),
            (day(45), "assets".to_owned(), 9),
            (day(1), "idle".to_owned(), 0),
        ];
        let (days, per) = removed_per_day(&removed, now);
        assert_eq!(days.len(), 30);
        assert_eq!(per["logs"][29], 7);
        assert_eq!(per["assets"][26], 4);
        assert_eq!(
            per["assets"].iter().sum::<u64>(),
            4,
            "45 days ago is off the chart"
        );
        assert!(
            !per.contains_key("idle"),
            "a category with nothing removed has no bar"
        );
        assert_eq!(chart_start(now).date_naive(), days[0]);
    }

    #[test]
    fn the_page_links_every_run_and_escapes_what_it_shows() {
        let mut r = run("0192<x>", 0, "enforce", "l<o>gs", 3);
        r.status = Status::Failed;
        let page = render_index(&[r.clone()], &[], None, None, Utc::now());
        assert!(
            page.contains(&format!("href=\"{}.html\"", esc(&stem(&r)))),
            "{page}"
        );
        assert!(!page.contains("<x>") && !page.contains("l<o>gs"), "escaped");
        assert!(page.contains("badge bad"));
        assert!(
            !page.contains("<script") && !page.contains("http"),
            "self-contained"
        );
    }
}
