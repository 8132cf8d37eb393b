//! Pure decisions: cutoffs, batch sizes, which object versions are due. No I/O.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Period, Versions};
use crate::store::s3::{Listed, ObjectRef};

/// The cutoff of a rule at `now`: records strictly older than it are due.
///
/// It is the earlier of `now - retain` and `now - min_retain`, so a legal floor holds
/// even if a rule's `retain` were ever shorter than it (config loading rejects that too).
pub fn cutoff(
    now: DateTime<Utc>,
    retain: &Period,
    floor: Option<&Period>,
) -> Option<DateTime<Utc>> {
    let by_rule = retain.before(now)?;
    match floor.map(|f| f.before(now)) {
        None => Some(by_rule),
        Some(None) => None,
        Some(Some(by_floor)) => Some(by_rule.min(by_floor)),
    }
}

/// Whether a record with `age` is due under `cutoff` (a `None` age never is).
pub fn is_due(age: Option<DateTime<Utc>>, cutoff: DateTime<Utc>) -> bool {
    age.is_some_and(|a| a < cutoff)
}

/// Bounds and target of adaptive batch sizing.
#[derive(Debug, Clone, Copy)]
pub struct BatchSizing {
    /// Never below this.
    pub min: u32,
    /// Never above this.
    pub max: u32,
    /// Target duration of one batch.
    pub target: Duration,
}

impl BatchSizing {
    /// The next batch size after a batch of `size` rows took `elapsed`.
    ///
    /// Over target: shrink in proportion (at least halving), so one slow batch is not
    /// followed by another. Under half the target: grow by half, so a fast table
    /// converges in a few batches without overshooting. In between: keep.
    pub fn next(&self, size: u32, elapsed: Duration) -> u32 {
        let next = if elapsed > self.target {
            let ratio = self.target.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
            (f64::from(size) * ratio.min(0.5)) as u32
        } else if elapsed < self.target / 2 {
            size.saturating_add(size / 2).max(size + 1)
        } else {
            size
        };
        next.clamp(self.min, self.max)
    }
}

/// How a table's batches find their rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Walk {
    /// Each batch asks for the next due rows, which the planner finds through an index on
    /// the age column: cheap when few rows are due.
    Index,
    /// Batches walk the heap's pages in order, `pages` of them at the start of the run,
    /// each page read once: the plan of a bulk `DELETE`, cut into short transactions.
    Pages {
        /// Pages the table had when the walk began.
        pages: u64,
        /// Estimated rows per page, which turns a batch size in rows into pages.
        rows_per_page: f64,
    },
}

/// The oldest PostgreSQL with TID range scans (`ctid >= a AND ctid < b` reads only those pages).
pub const TID_RANGE_SCAN_SINCE: i32 = 140_000;

/// Chooses the walk of one table from the plan PostgreSQL picks for "every due row"
/// (`EXPLAIN (FORMAT JSON)` output): when it would read the whole table anyway, or
/// expects at least [`PAGE_WALK_SHARE`] of the rows to be due (then nearly every page
/// holds one, and a bitmap scan reads them all too), the batches read the table once
/// in physical order; otherwise they follow the index.
///
/// `reltuples`/`relpages` are the catalog's estimates (negative or zero when the table
/// was never analysed); `pages` is the table's current size in pages.
pub fn choose_walk(
    plan: &serde_json::Value,
    server_version: i32,
    pages: u64,
    reltuples: f64,
    relpages: i64,
) -> Walk {
    let due_rows = plan
        .pointer("/0/Plan/Plan Rows")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let large_share = reltuples > 0.0 && due_rows >= PAGE_WALK_SHARE * reltuples;
    if server_version < TID_RANGE_SCAN_SINCE || !(reads_whole_table(plan) || large_share) {
        return Walk::Index;
    }
    // Unknown statistics: assume narrow rows, so the first batch is small rather than
    // large; the adaptive sizing corrects it within a few batches.
    let rows_per_page = if reltuples > 0.0 && relpages > 0 {
        (reltuples / relpages as f64).max(1.0)
    } else {
        UNKNOWN_ROWS_PER_PAGE
    };
    Walk::Pages {
        pages,
        rows_per_page,
    }
}

const UNKNOWN_ROWS_PER_PAGE: f64 = 100.0;

/// The share of due rows from which the batches walk the pages whatever the plan.
pub const PAGE_WALK_SHARE: f64 = 0.25;

/// Whether some node of the plan is a sequential scan.
fn reads_whole_table(plan: &serde_json::Value) -> bool {
    match plan {
        serde_json::Value::Array(items) => items.iter().any(reads_whole_table),
        serde_json::Value::Object(node) => {
            node.get("Node Type").and_then(|v| v.as_str()) == Some("Seq Scan")
                || node.get("Plan").is_some_and(reads_whole_table)
                || node.get("Plans").is_some_and(reads_whole_table)
        }
        _ => false,
    }
}

/// Pages that hold about `rows` rows (at least one).
pub fn pages_for(rows: u32, rows_per_page: f64) -> u64 {
    ((f64::from(rows) / rows_per_page).ceil() as u64).max(1)
}

/// Which versions of one key are due. `group` holds every listed version and delete
/// marker of the key, newest first; `versioned` says whether the bucket keeps versions.
///
/// - Unversioned bucket: the object goes when it is older than the cutoff.
/// - `versions = "all"`: when the current version is older than the cutoff the key has
///   expired and every version and delete marker goes, so no marker is left behind.
///   Otherwise each noncurrent version older than the cutoff goes; a delete marker goes
///   once nothing else of its key would be left.
/// - `versions = "current"`: only an expired current version goes, deleted without a
///   version id so the bucket keeps the history.
pub fn due_versions(
    group: &[Listed],
    cutoff: DateTime<Utc>,
    mode: Versions,
    versioned: bool,
) -> Vec<ObjectRef> {
    let old = |l: &Listed| l.last_modified < cutoff;
    if !versioned {
        return group
            .iter()
            .filter(|l| old(l))
            .map(|l| ObjectRef {
                version_id: None,
                ..l.to_ref()
            })
            .collect();
    }
    let latest = group.iter().find(|l| l.is_latest);
    match mode {
        Versions::Current => match latest {
            Some(l) if !l.delete_marker && old(l) => vec![ObjectRef {
                version_id: None,
                ..l.to_ref()
            }],
            _ => Vec::new(),
        },
        Versions::All => {
            if let Some(l) = latest {
                if !l.delete_marker && old(l) {
                    return group.iter().map(Listed::to_ref).collect();
                }
            }
            let data: Vec<&Listed> = group.iter().filter(|l| !l.delete_marker).collect();
            let mut due: Vec<ObjectRef> = data
                .iter()
                .filter(|l| !l.is_latest && old(l))
                .map(|l| l.to_ref())
                .collect();
            let data_left = data.len() - due.len();
            if data_left == 0 {
                due.extend(group.iter().filter(|l| l.delete_marker).map(Listed::to_ref));
            }
            due
        }
    }
}

/// Whether `key` is under one of the `exclude` prefixes.
pub fn excluded(key: &str, exclude: &[String]) -> bool {
    exclude.iter().any(|e| key.starts_with(e.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn plan(node: &str) -> serde_json::Value {
        plan_rows(node, 100.0)
    }

    fn plan_rows(node: &str, rows: f64) -> serde_json::Value {
        serde_json::json!([{ "Plan": { "Node Type": "Gather", "Plan Rows": rows, "Plans": [{ "Node Type": node }] } }])
    }

    #[test]
    fn walk_follows_the_planner() {
        assert_eq!(
            choose_walk(&plan("Seq Scan"), 150_000, 320, 20_000.0, 320),
            Walk::Pages {
                pages: 320,
                rows_per_page: 62.5
            }
        );
        assert_eq!(
            choose_walk(&plan("Index Scan"), 150_000, 320, 20_000.0, 320),
            Walk::Index
        );
        assert_eq!(
            choose_walk(&plan("Bitmap Heap Scan"), 150_000, 320, 20_000.0, 320),
            Walk::Index
        );
        // A quarter of the rows due: nearly every page holds one, whatever the plan.
        assert_eq!(
            choose_walk(
                &plan_rows("Bitmap Heap Scan", 5_000.0),
                150_000,
                320,
                20_000.0,
                320
            ),
            Walk::Pages {
                pages: 320,
                rows_per_page: 62.5
            }
        );
        assert_eq!(
            choose_walk(
                &plan_rows("Bitmap Heap Scan", 4_999.0),
                150_000,
                320,
                20_000.0,
                320
            ),
            Walk::Index
        );
        // Before PostgreSQL 14 a ctid range is a filter, not a scan: every batch would
        // read the whole table.
        assert_eq!(
            choose_walk(&plan("Seq Scan"), 130_011, 320, 20_000.0, 320),
            Walk::Index
        );
        // Never analysed: a small first batch.
        assert_eq!(
            choose_walk(&plan("Seq Scan"), 150_000, 7, -1.0, 0),
            Walk::Pages {
                pages: 7,
                rows_per_page: UNKNOWN_ROWS_PER_PAGE
            }
        );
    }

    #[test]
    fn pages_cover_the_batch_size() {
        assert_eq!(pages_for(5000, 62.5), 80);
        assert_eq!(pages_for(5001, 62.5), 81);
        assert_eq!(pages_for(1, 300.0), 1);
    }

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::hours(h)
    }

    fn v(key: &str, id: &str, latest: bool, marker: bool, at: i64) -> Listed {
        Listed {
            key: key.into(),
            version_id: Some(id.into()),
            is_latest: latest,
            delete_marker: marker,
            last_modified: t(at),
            size: if marker { 0 } else { 10 },
        }
    }

    #[test]
    fn floor_wins_over_a_shorter_retain() {
        let now = t(0);
        let c = cutoff(
            now,
            &Period::parse("30d").unwrap(),
            Some(&Period::parse("7y").unwrap()),
        )
        .unwrap();
        assert_eq!(c, Period::parse("7y").unwrap().before(now).unwrap());
        let c = cutoff(now, &Period::parse("30d").unwrap(), None).unwrap();
        assert_eq!(c, now - TimeDelta::days(30));
    }

    #[test]
    fn boundaries() {
        let c = t(10);
        assert!(is_due(Some(c - TimeDelta::seconds(1)), c));
        assert!(!is_due(Some(c), c));
        assert!(!is_due(Some(c + TimeDelta::seconds(1)), c));
        assert!(!is_due(None, c));
    }

    #[test]
    fn batch_size_adapts_within_bounds() {
        let s = BatchSizing {
            min: 100,
            max: 10_000,
            target: Duration::from_millis(250),
        };
        assert_eq!(s.next(1000, Duration::from_millis(50)), 1500);
        assert_eq!(s.next(1000, Duration::from_millis(200)), 1000);
        assert_eq!(s.next(1000, Duration::from_millis(1000)), 250);
        assert_eq!(s.next(1000, Duration::from_millis(300)), 500);
        assert_eq!(s.next(9_000, Duration::from_millis(1)), 10_000);
        assert_eq!(s.next(150, Duration::from_secs(10)), 100);
        let mut size = 100;
        for _ in 0..50 {
            size = s.next(size, Duration::from_millis(10));
        }
        assert_eq!(size, 10_000);
    }

    #[test]
    fn expired_key_loses_every_version_and_marker() {
        let group = vec![
            v("k", "3", true, false, 1),
            v("k", "2", false, true, 0),
            v("k", "1", false, false, -5),
        ];
        let due = due_versions(&group, t(5), Versions::All, true);
        assert_eq!(due.len(), 3);
    }

    #[test]
    fn young_current_keeps_key_but_old_noncurrent_go() {
        let group = vec![
            v("k", "3", true, false, 9),
            v("k", "2", false, false, 6),
            v("k", "1", false, false, 1),
        ];
        let due = due_versions(&group, t(5), Versions::All, true);
        assert_eq!(
            due.iter()
                .map(|r| r.version_id.clone().unwrap())
                .collect::<Vec<_>>(),
            vec!["1"]
        );
    }

    #[test]
    fn delete_marker_goes_only_with_the_last_version() {
        let group = vec![
            v("k", "m", true, true, 9),
            v("k", "2", false, false, 6),
            v("k", "1", false, false, 1),
        ];
        let due = due_versions(&group, t(5), Versions::All, true);
        assert_eq!(due.len(), 1, "version 2 is young, so the marker stays");
        let due = due_versions(&group, t(7), Versions::All, true);
        assert_eq!(due.len(), 3, "both versions old: marker goes too");
    }

    #[test]
    fn current_mode_never_touches_history() {
        let group = vec![v("k", "3", true, false, 1), v("k", "1", false, false, 0)];
        let due = due_versions(&group, t(5), Versions::Current, true);
        assert_eq!(
            due,
            vec![ObjectRef {
                key: "k".into(),
                version_id: None,
                size: 10
            }]
        );
        let young = vec![v("k", "3", true, false, 9)];
        assert!(due_versions(&young, t(5), Versions::Current, true).is_empty());
    }

    #[test]
    fn exclusions() {
        let ex = vec!["generated/pinned/".to_string()];
        assert!(excluded("generated/pinned/a.png", &ex));
        assert!(!excluded("generated/a.png", &ex));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use chrono::{Datelike, TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 1971..2100, biased towards month ends and leap days by picking day-of-month too.
        (
            1971i32..2100,
            1u32..=12,
            prop_oneof![Just(28u32), Just(29), Just(30), Just(31), 1u32..=31],
            0u32..24,
            0u32..60,
            0u32..60,
        )
            .prop_map(|(y, m, d, h, mi, s)| {
                let last = (28..=31)
                    .rev()
                    .find(|d| chrono::NaiveDate::from_ymd_opt(y, m, *d).is_some())
                    .unwrap();
                Utc.with_ymd_and_hms(y, m, d.min(last), h, mi, s).unwrap()
            })
    }

    fn period() -> impl Strategy<Value = Period> {
        prop_oneof![
            (0u32..240).prop_map(Period::from_months),
            (0u64..(20 * 366 * 86_400_000)).prop_map(Period::from_millis),
            (0u32..120, 0u64..(400 * 86_400_000))
                .prop_map(|(m, ms)| Period::parse(&format!("{m}mo{ms}ms")).unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A record younger than (or exactly at) the cutoff is never due, and the cutoff
        /// never lies after `now - retain` or `now - floor`.
        #[test]
        fn younger_than_the_cutoff_is_never_due(now in instant(), retain in period(), floor in proptest::option::of(period()), offset_ms in 0i64..(400 * 86_400_000)) {
            let Some(c) = cutoff(now, &retain, floor.as_ref()) else { return Ok(()) };
            prop_assert!(c <= now);
            prop_assert!(c <= retain.before(now).unwrap());
            if let Some(f) = floor {
                prop_assert!(c <= f.before(now).unwrap(), "the floor holds");
            }
            let young = c + TimeDelta::milliseconds(offset_ms);
            prop_assert!(!is_due(Some(young), c));
            prop_assert!(is_due(Some(c - TimeDelta::milliseconds(1)), c));
            prop_assert!(!is_due(None, c));
        }

        /// Calendar months never move a cutoff later than the same number of shortest
        /// months would, and the result is a valid date in the right month.
        #[test]
        fn month_arithmetic_lands_in_the_right_month(now in instant(), months in 0u32..240) {
            let c = Period::from_months(months).before(now).unwrap();
            let total = now.year() * 12 + now.month0() as i32 - months as i32;
            prop_assert_eq!((c.year(), c.month0() as i32), (total.div_euclid(12), total.rem_euclid(12)));
            prop_assert!(c.day() <= now.day(), "a shorter month clamps the day, never pushes it");
            prop_assert_eq!(c.time(), now.time());
        }

        /// Adaptive sizing stays within its bounds whatever the timings.
        #[test]
        fn batch_size_stays_in_bounds(start in 1u32..100_000, ms in proptest::collection::vec(0u64..5_000, 1..50)) {
            let s = BatchSizing { min: 50, max: 50_000, target: Duration::from_millis(250) };
            let mut size = start.clamp(50, 50_000);
            for m in ms {
                size = s.next(size, Duration::from_millis(m));
                prop_assert!((50..=50_000).contains(&size));
            }
        }
    }
}
