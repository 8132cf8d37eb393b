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
