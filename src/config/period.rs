//! Retention periods: `250ms`, `30s`, `15m`, `12h`, `30d`, `2w`, `6mo`, `7y`, or a sum
//! such as `1y6mo`. Months and years are calendar arithmetic, everything else is exact.

use std::fmt;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Months, NaiveDate, TimeDelta, Utc};
use serde::{de, Deserialize, Deserializer};

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
const MS_PER_WEEK: u64 = 7 * MS_PER_DAY;

/// A length of time with a calendar part (months) and an exact part (milliseconds).
///
/// The calendar part is applied first: `now - 1mo - 2d` subtracts one calendar month,
/// clamping to the end of a shorter month (31 March − 1mo = 28 or 29 February), then
/// two days of 24 hours, all in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Period {
    months: u32,
    millis: u64,
}

impl Period {
    /// A period of exactly `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self { months: 0, millis }
    }

    /// A period of `months` calendar months.
    pub const fn from_months(months: u32) -> Self {
        Self { months, millis: 0 }
    }

    /// The calendar part, in months.
    pub fn months(&self) -> u32 {
        self.months
    }

    /// The exact part, in milliseconds.
    pub fn millis(&self) -> u64 {
        self.millis
    }

    /// The instant this period before `t`, or `None` when that is out of chrono's range.
    pub fn before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.checked_sub_months(Months::new(self.months))?;
        t.checked_sub_signed(TimeDelta::try_milliseconds(
            i64::try_from(self.millis).ok()?,
        )?)
    }

    /// The instant this period after `t`, or `None` when that is out of chrono's range.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.checked_add_months(Months::new(self.months))?;
        t.checked_add_signed(TimeDelta::try_milliseconds(
            i64::try_from(self.millis).ok()?,
        )?)
    }

    /// The exact part as a std duration (the calendar part must be zero to be meaningful).
    pub fn as_std(&self) -> StdDuration {
        StdDuration::from_millis(self.millis + u64::from(self.months) * 30 * MS_PER_DAY)
    }

    /// Shortest and longest this period can be, in milliseconds, over every start date.
    ///
    /// Month lengths vary, so `1mo` is between 28 and 31 days and `7y` between 2556 and
    /// 2557 days. Found by walking the start dates of a four-year cycle that contains a
    /// leap century (2000), which covers every Gregorian case that matters here.
    pub fn bounds_millis(&self) -> (u64, u64) {
        if self.months == 0 {
            return (self.millis, self.millis);
        }
        let start = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
        let (mut min_days, mut max_days) = (i64::MAX, i64::MIN);
        for offset in 0..(4 * 366) {
            let from = start + TimeDelta::days(offset);
            let to = from + Months::new(self.months);
            let days = (to - from).num_days();
            min_days = min_days.min(days);
            max_days = max_days.max(days);
        }
        let ms = |days: i64| days as u64 * MS_PER_DAY + self.millis;
        (ms(min_days), ms(max_days))
    }

    /// True when this period is at least `other` whatever the start date.
    pub fn always_at_least(&self, other: &Period) -> bool {
        (self.months >= other.months && self.millis >= other.millis)
            || self.bounds_millis().0 >= other.bounds_millis().1
    }

    /// Parses `30d`, `6mo`, `1y6mo`, `250ms`.
    pub fn parse(text: &str) -> Result<Self, PeriodError> {
        let bad = || PeriodError(text.to_owned());
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let mut period = Period::default();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let (months, millis) = match unit {
                "ms" => (0, value),
                "s" => (0, value.checked_mul(MS_PER_SECOND).ok_or_else(bad)?),
                "m" => (0, value.checked_mul(MS_PER_MINUTE).ok_or_else(bad)?),
                "h" => (0, value.checked_mul(MS_PER_HOUR).ok_or_else(bad)?),
                "d" => (0, value.checked_mul(MS_PER_DAY).ok_or_else(bad)?),
                "w" => (0, value.checked_mul(MS_PER_WEEK).ok_or_else(bad)?),
                "mo" => (value, 0),
                "y" => (value.checked_mul(12).ok_or_else(bad)?, 0),
                _ => return Err(bad()),
            };
            period.months = period
                .months
                .checked_add(u32::try_from(months).map_err(|_| bad())?)
                .ok_or_else(bad)?;
            period.millis = period.millis.checked_add(millis).ok_or_else(bad)?;
        }
        // Ten thousand years is far past anything meaningful and keeps chrono in range.
        if period.months > 12 * 10_000 || period.millis > 10_000 * 366 * MS_PER_DAY {
            return Err(bad());
        }
        Ok(period)
    }
}

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}`: expected a number and a unit (ms, s, m, h, d, w, mo, y), e.g. `30d`, `6mo`, `7y`")]
pub struct PeriodError(pub String);

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.months == 0 && self.millis == 0 {
            return f.write_str("0s");
        }
        let (years, months) = (self.months / 12, self.months % 12);
        if years > 0 {
            write!(f, "{years}y")?;
        }
        if months > 0 {
            write!(f, "{months}mo")?;
        }
        let mut ms = self.millis;
        for (unit, size) in [
            ("d", MS_PER_DAY),
            ("h", MS_PER_HOUR),
            ("m", MS_PER_MINUTE),
            ("s", MS_PER_SECOND),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Period::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(Period::parse("250ms").unwrap(), Period::from_millis(250));
        assert_eq!(Period::parse("30s").unwrap(), Period::from_millis(30_000));
        assert_eq!(Period::parse("15m").unwrap(), Period::from_millis(900_000));
        assert_eq!(
            Period::parse("12h").unwrap(),
            Period::from_millis(43_200_000)
        );
        assert_eq!(
            Period::parse("30d").unwrap(),
            Period::from_millis(30 * MS_PER_DAY)
        );
        assert_eq!(
            Period::parse("2w").unwrap(),
            Period::from_millis(14 * MS_PER_DAY)
        );
        assert_eq!(Period::parse("6mo").unwrap(), Period::from_months(6));
        assert_eq!(Period::parse("7y").unwrap(), Period::from_months(84));
        let mixed = Period::parse("1y6mo2d").unwrap();
        assert_eq!((mixed.months(), mixed.millis()), (18, 2 * MS_PER_DAY));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "30",
            "d30",
            "30x",
            "-5d",
            "3.5d",
            "30 d",
            "1e3d",
            "99999999999999999999d",
            "20000y",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn displays_round_trip() {
        for s in [
            "250ms", "30s", "15m", "12h", "30d", "6mo", "7y", "1y6mo", "1d12h",
        ] {
            assert_eq!(Period::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn months_are_calendar_arithmetic() {
        let p = Period::parse("1mo").unwrap();
        assert_eq!(
            p.before(utc(2024, 3, 31, 10)).unwrap(),
            utc(2024, 2, 29, 10)
        );
        assert_eq!(
            p.before(utc(2023, 3, 31, 10)).unwrap(),
            utc(2023, 2, 28, 10)
        );
        let y = Period::parse("1y").unwrap();
        assert_eq!(y.before(utc(2028, 2, 29, 0)).unwrap(), utc(2027, 2, 28, 0));
        let seven = Period::parse("7y").unwrap();
        assert_eq!(
            seven.before(utc(2026, 11, 22, 3)).unwrap(),
            utc(2019, 11, 22, 3)
        );
    }

    #[test]
    fn bounds_cover_month_lengths() {
        let (lo, hi) = Period::from_months(1).bounds_millis();
        assert_eq!((lo / MS_PER_DAY, hi / MS_PER_DAY), (28, 31));
        let (lo, hi) = Period::from_months(84).bounds_millis();
        assert_eq!((lo / MS_PER_DAY, hi / MS_PER_DAY), (2556, 2557));
    }

    #[test]
    fn floor_comparison_is_conservative() {
        let seven_years = Period::parse("7y").unwrap();
        assert!(Period::parse("7y").unwrap().always_at_least(&seven_years));
        assert!(Period::parse("84mo").unwrap().always_at_least(&seven_years));
        assert!(Period::parse("2557d")
            .unwrap()
            .always_at_least(&seven_years));
        assert!(!Period::parse("2556d")
            .unwrap()
            .always_at_least(&seven_years));
        assert!(!Period::parse("6y").unwrap().always_at_least(&seven_years));
        assert!(Period::parse("8y").unwrap().always_at_least(&seven_years));
    }
}
