use super::table::{check_epoch_range, describe_secs};
use super::*;
use crate::store::pg_sql;
use chrono::{DateTime, Utc};

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
        e.contains("age column started_ms holds values that decode to 1970-01-20 as epoch_millis"),
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
    let e =
        check_epoch_range(&col(), AgeKind::EpochSeconds, Some(-5.0), Some(1e6), now()).unwrap_err();
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
