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
