//! `age_timezone`: reading `timestamp` and `date` age columns as local wall-clock time.
//!
//! A `timestamp without time zone` or `date` value has no offset. Under a rule's
//! `age_timezone` it is the local time of that zone, and the same wall-clock time can be
//! two instants (the repeated hour when clocks go back) or none (the hour skipped when
//! they go forward). Retention must never remove a record early, so the local cutoff is
//! chosen such that every interpretation of every earlier local time is before the cutoff.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// Parses an IANA zone name (`"Europe/Amsterdam"`, `"UTC"`), as written (case-sensitive).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!(
            "unknown time zone `{name}`: expected an IANA zone name such as \"Europe/Amsterdam\", \"America/Los_Angeles\" or \"UTC\""
        )
    })
}

/// The local wall-clock time `L` in `tz` such that every naive local time `t < L` is,
/// under every UTC offset the zone could give it (including the repeated hour when the
/// clocks go back and the skipped hour when they go forward), an instant before `cutoff`.
///
/// A local time `t` read with offset `o` is the instant `t − o`; its latest reading uses
/// the smallest offset around the cutoff. So `L = cutoff + min(offsets in force one day
/// before the cutoff, at it, and one day after)`. This is conservative: near a DST switch
/// a row can become due up to the switch's size (an hour) later than strictly needed,
/// never earlier.
pub fn naive_cutoff(cutoff: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    let offset_at = |t: DateTime<Utc>| {
        i64::from(
            tz.offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    };
    let day = TimeDelta::days(1);
    let min_offset = [
        cutoff.checked_sub_signed(day),
        Some(cutoff),
        cutoff.checked_add_signed(day),
    ]
    .into_iter()
    .flatten()
    .map(offset_at)
    .min()
    .unwrap_or(0);
    let naive = cutoff.naive_utc();
    naive
        .checked_add_signed(TimeDelta::seconds(min_offset))
        .unwrap_or(if min_offset < 0 {
            NaiveDateTime::MIN
        } else {
            naive
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::LocalResult;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn local(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// Every instant a naive local time can stand for in `tz`: both readings of a repeated
    /// time, and for a skipped time the readings with the offsets before and after the gap.
    fn readings(t: NaiveDateTime, tz: Tz) -> Vec<DateTime<Utc>> {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => vec![x.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
            LocalResult::None => [-1i64, 1]
                .iter()
                .map(|d| {
                    let near = t.and_utc() + TimeDelta::days(*d);
                    let o = tz.offset_from_utc_datetime(&near.naive_utc()).fix();
                    t.and_utc() - TimeDelta::seconds(i64::from(o.local_minus_utc()))
                })
                .collect(),
        }
    }

    /// Checks the contract for `cutoff` on local times just below `L`, and that `L` is not
    /// more than `slack` earlier than the plain reading with the offset at the cutoff.
    #[track_caller]
    fn holds(cutoff: DateTime<Utc>, tz: Tz) {
        let l = naive_cutoff(cutoff, tz);
        for back in [1, 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 3 * 3600, 86_400] {
            let t = l - TimeDelta::seconds(back);
            for r in readings(t, tz) {
                assert!(
                    r < cutoff,
                    "{tz} cutoff {cutoff}: local {t} (< L = {l}) can be {r}, not before the cutoff"
                );
            }
        }
        let plain = cutoff.with_timezone(&tz).naive_local();
        let early = plain - l;
        assert!(
            early >= TimeDelta::zero() && early <= TimeDelta::hours(1),
            "{tz} cutoff {cutoff}: L = {l} is {early} before the plain local time {plain}"
        );
    }

    #[test]
    fn utc_is_the_cutoff_itself() {
        let c = utc("2024-03-31T01:30:00Z");
        assert_eq!(naive_cutoff(c, Tz::UTC), c.naive_utc());
        assert_eq!(
            naive_cutoff(utc("2024-10-27T00:30:00Z"), chrono_tz::Etc::UTC),
            local("2024-10-27 00:30:00")
        );
    }

    #[test]
    fn amsterdam_outside_the_switches() {
        let tz = chrono_tz::Europe::Amsterdam;
        // CET, +01:00.
        assert_eq!(
            naive_cutoff(utc("2024-01-15T12:00:00Z"), tz),
            local("2024-01-15 13:00:00")
        );
        // CEST, +02:00.
        assert_eq!(
            naive_cutoff(utc("2024-07-15T12:00:00Z"), tz),
            local("2024-07-15 14:00:00")
        );
    }

    #[test]
    fn amsterdam_spring_forward() {
        // 2024-03-31 01:00Z: 02:00 CET becomes 03:00 CEST; 02:00–03:00 local never happens.
        let tz = chrono_tz::Europe::Amsterdam;
        let c = utc("2024-03-31T01:30:00Z"); // 03:30 CEST
        let l = naive_cutoff(c, tz);
        assert_eq!(
            l,
            local("2024-03-31 02:30:00"),
            "read with the smaller offset"
        );
        // 03:15 local is 01:15Z, before the cutoff, but a local time in the gap read
        // as CET would be after it: the conservative L keeps both.
        assert!(local("2024-03-31 02:45:00") >= l);
        holds(c, tz);
    }

    #[test]
    fn amsterdam_fall_back() {
        // 2024-10-27 01:00Z: 03:00 CEST becomes 02:00 CET; 02:00–03:00 local happens twice.
        let tz = chrono_tz::Europe::Amsterdam;
        let c = utc("2024-10-27T00:30:00Z"); // 02:30 CEST, the first time round
        let l = naive_cutoff(c, tz);
        assert_eq!(l, local("2024-10-27 01:30:00"));
        // 02:15 local may be 00:15Z (before) or 01:15Z (after the cutoff): not due.
        let t = local("2024-10-27 02:15:00");
        assert!(readings(t, tz).iter().any(|r| *r > c));
        assert!(
            t >= l,
            "an ambiguous local time read as the later instant is kept"
        );
        holds(c, tz);
    }

    #[test]
    fn los_angeles_is_not_due_hours_early() {
        let tz = chrono_tz::America::Los_Angeles;
        let c = utc("2024-01-15T12:00:00Z"); // 04:00 PST
        let l = naive_cutoff(c, tz);
        assert_eq!(l, local("2024-01-15 04:00:00"));
        // A row written at 05:00 local is 13:00Z, after the cutoff. Read as UTC it would
        // be due now, eight hours early.
        let row = local("2024-01-15 05:00:00");
        assert!(row < c.naive_utc(), "the UTC reading would remove it");
        assert!(row >= l, "the zone reading keeps it");
        holds(c, tz);
        // PDT, -07:00.
        assert_eq!(
            naive_cutoff(utc("2024-07-01T12:00:00Z"), tz),
            local("2024-07-01 05:00:00")
        );
    }

    #[test]
    fn every_quarter_hour_around_the_switches() {
        let zones = [
            (chrono_tz::Europe::Amsterdam, "2024-03-31T01:00:00Z"),
            (chrono_tz::Europe::Amsterdam, "2024-10-27T01:00:00Z"),
            (chrono_tz::America::Los_Angeles, "2024-03-10T10:00:00Z"),
            (chrono_tz::America::Los_Angeles, "2024-11-03T09:00:00Z"),
            (chrono_tz::Australia::Lord_Howe, "2024-04-06T15:00:00Z"),
            (chrono_tz::Pacific::Apia, "2011-12-30T10:00:00Z"),
        ];
        for (tz, switch) in zones {
            let switch = utc(switch);
            for q in -4 * 30..=4 * 30 {
                let c = switch + TimeDelta::minutes(15 * q);
                let l = naive_cutoff(c, tz);
                for back in [1, 60, 15 * 60, 30 * 60, 3600, 2 * 3600, 86_400] {
                    let t = l - TimeDelta::seconds(back);
                    for r in readings(t, tz) {
                        assert!(r < c, "{tz} cutoff {c}: local {t} can be {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn zone_names() {
        assert_eq!(parse_zone("UTC"), Ok(Tz::UTC));
        assert_eq!(
            parse_zone("Europe/Amsterdam"),
            Ok(chrono_tz::Europe::Amsterdam)
        );
        let e = parse_zone("Europe/Amsterdm").unwrap_err();
        assert!(e.contains("unknown time zone `Europe/Amsterdm`"), "{e}");
        assert!(parse_zone("").is_err());
        assert!(parse_zone("+02:00").is_err());
    }
}
