//! Civil dates, the zone a business day is counted in (a fixed UTC offset, or a time zone
//! whose offset changes with daylight saving time), and the daily cron schedule of
//! `reconciler daemon`.

use anyhow::{Context, bail};
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use jiff::{Span, Timestamp, Zoned};

const EPOCH: Date = Date::constant(1970, 1, 1);
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a calendar date.
///
/// # Panics
/// On a date that is not in the calendar; callers pass validated business dates.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let date = match (i16::try_from(y), i8::try_from(m), i8::try_from(d)) {
        (Ok(y), Ok(m), Ok(d)) => Date::new(y, m, d).ok(),
        _ => None,
    }
    .unwrap_or_else(|| panic!("{y:04}-{m:02}-{d:02} is not a calendar date"));
    date.duration_since(EPOCH).as_secs() / 86_400
}

/// The date of a day number.
///
/// # Panics
/// Outside years -9999..=9999, which no clock or business date reaches.
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let date = Span::new()
        .try_days(z)
        .and_then(|days| EPOCH.checked_add(days))
        .unwrap_or_else(|e| panic!("day {z} is outside the calendar: {e}"));
    (
        i32::from(date.year()),
        date.month() as u32,
        date.day() as u32,
    )
}

/// Parses "+HH:MM" / "-HH:MM" / "Z" into minutes east of UTC.
pub fn parse_offset(s: &str) -> anyhow::Result<i64> {
    if s == "Z" || s == "+00:00" || s == "-00:00" {
        return Ok(0);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => bail!("utc offset '{s}' must look like -03:00"),
    };
    let (h, m) = rest
        .split_once(':')
        .with_context(|| format!("utc offset '{s}' must look like -03:00"))?;
    let (h, m): (i64, i64) = (h.parse()?, m.parse()?);
    if h > 14 || m > 59 {
        bail!("utc offset '{s}' is out of range");
    }
    Ok(sign * (h * 60 + m))
}

/// The UTC window `[start, end)` in unix ms of a business date at `offset_min`.
pub fn day_window_ms(y: i32, m: u32, d: u32, offset_min: i64) -> (i64, i64) {
    let start = days_from_civil(y, m, d) * DAY_MS - offset_min * 60_000;
    (start, start + DAY_MS)
}

/// Where a business day is counted: a fixed UTC offset (`matching.utc_offset`), or a time
/// zone of the system's tz database (`matching.time_zone`, e.g. `America/Santiago`, read as
/// the authorizer reads `controls.time_zone`), whose days are 23 or 25 hours long when its
/// clocks change.
#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    /// Minutes east of UTC.
    Fixed(i64),
    Named(TimeZone),
}

impl Zone {
    /// A time zone's name when `time_zone` is set, else the fixed `utc_offset`.
    pub fn parse(utc_offset: &str, time_zone: &str) -> anyhow::Result<Zone> {
        if time_zone.is_empty() {
            return Ok(Zone::Fixed(parse_offset(utc_offset)?));
        }
        let tzif = settings::system_zoneinfo(time_zone);
        let tz = ledger::controls::time_zone(time_zone, tzif.as_deref())
            .map_err(|e| anyhow::anyhow!("'{time_zone}': {}", e.reason))?;
        Ok(Zone::Named(tz))
    }

    /// The UTC window `[start, end)` in unix ms of a business date: from its first instant
    /// to the next date's.
    pub fn day_window_ms(&self, y: i32, m: u32, d: u32) -> (i64, i64) {
        match self {
            Zone::Fixed(offset_min) => day_window_ms(y, m, d, *offset_min),
            Zone::Named(tz) => {
                let day = days_from_civil(y, m, d);
                (start_of_day_ms(tz, day), start_of_day_ms(tz, day + 1))
            }
        }
    }

    /// The day number (days since 1970-01-01) of the local date at `at_ms`.
    pub fn day_of(&self, at_ms: i64) -> i64 {
        match self {
            Zone::Fixed(offset_min) => (at_ms + offset_min * 60_000).div_euclid(DAY_MS),
            Zone::Named(tz) => Timestamp::from_millisecond(at_ms)
                .map(|t| t.to_zoned(tz.clone()).date())
                .map_or(at_ms.div_euclid(DAY_MS), |date| {
                    date.duration_since(EPOCH).as_secs() / 86_400
                }),
        }
    }
}

/// The first instant of day number `day` in `tz` (its midnight, or the end of a clock change
/// that skips midnight), unix ms.
fn start_of_day_ms(tz: &TimeZone, day: i64) -> i64 {
    let (y, m, d) = civil_from_days(day);
    let date = Date::new(y as i16, m as i8, d as i8).expect("a calendar date");
    date.to_zoned(tz.clone())
        .and_then(|z| z.start_of_day())
        .map_or(day * DAY_MS, |z| z.timestamp().as_millisecond())
}

/// A five-field cron expression: minute hour day-of-month month day-of-week, each `*`,
/// a number, a range `a-b`, a list `a,b`, or a step `*/n`, `a/n` / `a-b/n`. Day of week 0-6,
/// Sunday 0 (7 is also Sunday). When both day fields are restricted, either matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron(croner::Cron);

/// Any valid five-field expression fires within about four years (Feb 29); one that
/// does not fire within five (e.g. Feb 30) never does.
const HORIZON_DAYS: i64 = 366 * 5;

impl Cron {
    pub fn parse(expr: &str) -> anyhow::Result<Cron> {
        if expr.split_whitespace().count() != 5 {
            bail!(
                "cron '{expr}' must have five fields: minute hour day-of-month month day-of-week"
            );
        }
        // The documented grammar is numeric. croner's dialect also takes names, `L`, `W`,
        // `#`, `?` and a `+` that turns the day fields' OR into an AND; none of them is
        // part of this configuration, so they are refused rather than silently meant.
        if let Some(c) = expr.chars().find(|c| {
            !(c.is_ascii_digit() || c.is_whitespace() || matches!(c, '*' | ',' | '-' | '/'))
        }) {
            bail!("cron '{expr}': unexpected '{c}' (fields are numbers, '*', ',', '-' and '/')");
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            // `a/n` (from a to the end of the range, every n) is classic cron syntax.
            .sloppy_ranges(true)
            .build();
        let cron = parser
            .parse(expr)
            .with_context(|| format!("cron '{expr}'"))?;
        Ok(Cron(cron))
    }

    /// The first matching minute strictly after `after_ms` (unix ms), in `zone`'s local time.
    /// Across a clock change, a job at one time of day (one minute, one hour: the daemon's
    /// use) whose time is skipped fires at the end of the gap, and once in a repeated hour;
    /// one with several hours or minutes may miss the skipped one (the next fire's catch-up
    /// reconciles the date then).
    pub fn next_in(&self, after_ms: i64, zone: &Zone) -> Option<i64> {
        let tz = match zone {
            Zone::Fixed(offset_min) => return self.next_after(after_ms, *offset_min),
            Zone::Named(tz) => tz,
        };
        let first_min = after_ms.div_euclid(60_000) + 1;
        let first = Timestamp::from_millisecond(first_min * 60_000)
            .ok()?
            .to_zoned(tz.clone());
        let next: Zoned = self.0.find_next_occurrence(&first, true).ok()?;
        let next_ms = next.timestamp().as_millisecond();
        ((next_ms - first_min * 60_000) / DAY_MS < HORIZON_DAYS).then_some(next_ms)
    }

    /// The first matching minute strictly after `after_ms` (unix ms), at `offset_min`.
    pub fn next_after(&self, after_ms: i64, offset_min: i64) -> Option<i64> {
        let offset = Offset::from_seconds(i32::try_from(offset_min * 60).ok()?).ok()?;
        let offset_ms = offset_min * 60_000;
        // Minute resolution: the first candidate is the next whole local minute.
        let first_local_min = (after_ms + offset_ms).div_euclid(60_000) + 1;
        let first = offset
            .to_datetime(Timestamp::from_millisecond(first_local_min * 60_000 - offset_ms).ok()?);
        let next = self.0.find_next_occurrence(&first, true).ok()?;
        let next_ms = offset.to_timestamp(next).ok()?.as_millisecond();
        let days_ahead =
            (next_ms + offset_ms).div_euclid(DAY_MS) - first_local_min.div_euclid(1440);
        (days_ahead < HORIZON_DAYS).then_some(next_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        for z in [-1000, 0, 19_782, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn offsets_and_windows() {
        assert_eq!(parse_offset("-03:00").unwrap(), -180);
        assert_eq!(parse_offset("+05:30").unwrap(), 330);
        assert_eq!(parse_offset("Z").unwrap(), 0);
        assert!(parse_offset("03:00").is_err());
        assert!(parse_offset("-15:00").is_err());
        // 2024-01-01 in Buenos Aires starts at 03:00 UTC.
        let (s, e) = day_window_ms(2024, 1, 1, -180);
        assert_eq!(s, 1_704_078_000_000);
        assert_eq!(e - s, 86_400_000);
    }

    #[test]
    fn a_time_zone_follows_its_clock_changes() {
        let santiago = Zone::parse("Z", "America/Santiago").unwrap();
        let hour = 3_600_000;
        let midnight = |y, m, d| days_from_civil(y, m, d) * 86_400_000;
        // Summer (-03:00) and winter (-04:00).
        assert_eq!(
            santiago.day_window_ms(2024, 1, 15),
            (
                midnight(2024, 1, 15) + 3 * hour,
                midnight(2024, 1, 16) + 3 * hour
            )
        );
        assert_eq!(
            santiago.day_window_ms(2024, 7, 15),
            (
                midnight(2024, 7, 15) + 4 * hour,
                midnight(2024, 7, 16) + 4 * hour
            )
        );
        // 2024-09-08: the clocks go from 00:00 to 01:00 (-04:00 to -03:00): 23 hours, from
        // 01:00 local; 2024-04-06 ends at 00:00 -03:00, which is 23:00 -04:00 again: 25.
        let (s, e) = santiago.day_window_ms(2024, 9, 8);
        assert_eq!((s, e - s), (midnight(2024, 9, 8) + 4 * hour, 23 * hour));
        let (s, e) = santiago.day_window_ms(2024, 4, 6);
        assert_eq!((s, e - s), (midnight(2024, 4, 6) + 3 * hour, 25 * hour));
        // 02:30 UTC on 2024-01-16 is still the 15th there; 03:00 is the 16th.
        let day = days_from_civil(2024, 1, 15);
        assert_eq!(santiago.day_of(midnight(2024, 1, 16) + 150 * 60_000), day);
        assert_eq!(santiago.day_of(midnight(2024, 1, 16) + 3 * hour), day + 1);
        // 06:00 local: 09:00 UTC in summer, 10:00 in winter.
        let c = Cron::parse("0 6 * * *").unwrap();
        assert_eq!(
            c.next_in(midnight(2024, 1, 15), &santiago),
            Some(midnight(2024, 1, 15) + 9 * hour)
        );
        assert_eq!(
            c.next_in(midnight(2024, 7, 15), &santiago),
            Some(midnight(2024, 7, 15) + 10 * hour)
        );
        // Midnight of 2024-09-08 does not exist there: a midnight job fires at its end, 01:00
        // (-03:00), and the next one at 00:00 of the 9th.
        let midnight_job = Cron::parse("0 0 * * *").unwrap();
        let noon_7th = midnight(2024, 9, 7) + 16 * hour;
        let first = midnight_job.next_in(noon_7th, &santiago).unwrap();
        assert_eq!(first, midnight(2024, 9, 8) + 4 * hour);
        assert_eq!(
            midnight_job.next_in(first, &santiago),
            Some(midnight(2024, 9, 9) + 3 * hour)
        );
        // A fixed offset is what it was.
        let fixed = Zone::parse("-03:00", "").unwrap();
        assert_eq!(
            fixed.day_window_ms(2024, 7, 15),
            day_window_ms(2024, 7, 15, -180)
        );
        assert_eq!(c.next_in(0, &fixed), c.next_after(0, -180));
        assert!(Zone::parse("Z", "America/Atlantis").is_err());
    }

    #[test]
    fn cron_next_fire() {
        let c = Cron::parse("0 6 * * *").unwrap();
        // 2024-01-01T00:00:00Z = 2023-12-31 21:00 in -03:00 -> next 06:00 local = 09:00Z on Jan 1.
        assert_eq!(
            c.next_after(1_704_067_200_000, -180),
            Some(1_704_099_600_000)
        );
        // Exactly at a fire time: strictly after.
        assert_eq!(
            c.next_after(1_704_099_600_000, -180),
            Some(1_704_099_600_000 + 86_400_000)
        );
        let weekdays = Cron::parse("30 2 * * 1-5").unwrap();
        // Saturday 2024-01-06 -> Monday 2024-01-08 02:30Z.
        let sat = days_from_civil(2024, 1, 6) * 86_400_000;
        assert_eq!(
            weekdays.next_after(sat, 0),
            Some(days_from_civil(2024, 1, 8) * 86_400_000 + 150 * 60_000)
        );
        let leap = Cron::parse("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.next_after(days_from_civil(2025, 1, 1) * 86_400_000, 0),
            Some(days_from_civil(2028, 2, 29) * 86_400_000)
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "0 24 * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_classic_forms() {
        let at = |y, m, d, h: i64, mi: i64| {
            days_from_civil(y, m, d) * 86_400_000 + (h * 60 + mi) * 60_000
        };
        // Mid-minute and sub-second starts fire on the next whole minute, not at once.
        let every = Cron::parse("* * * * *").unwrap();
        assert_eq!(
            every.next_after(at(2024, 1, 1, 9, 0) + 30_500, 0),
            Some(at(2024, 1, 1, 9, 1))
        );
        assert_eq!(
            every.next_after(at(2024, 1, 1, 9, 0) - 1, 0),
            Some(at(2024, 1, 1, 9, 0))
        );
        // 7 is Sunday too: Monday 2024-01-01 -> Sunday 2024-01-07.
        for sunday in ["0 6 * * 7", "0 6 * * 0"] {
            let c = Cron::parse(sunday).unwrap();
            assert_eq!(
                c.next_after(at(2024, 1, 1, 0, 0), 0),
                Some(at(2024, 1, 7, 6, 0)),
                "{sunday}"
            );
        }
        // Both day fields restricted: either matches (the 5th, or any Friday).
        let either = Cron::parse("0 6 5 * 5").unwrap();
        assert_eq!(
            either.next_after(at(2024, 1, 1, 0, 0), 0),
            Some(at(2024, 1, 5, 6, 0))
        );
        assert_eq!(
            either.next_after(at(2024, 1, 5, 6, 0), 0),
            Some(at(2024, 1, 12, 6, 0))
        );
        // `a/n` runs from a to the end of the field.
        let from_five = Cron::parse("5/20 * * * *").unwrap();
        assert_eq!(
            from_five.next_after(at(2024, 1, 1, 9, 46), 0),
            Some(at(2024, 1, 1, 10, 5))
        );
        // A local schedule in a half-hour offset: 06:00 at +05:30 is 00:30Z.
        let daily = Cron::parse("0 6 * * *").unwrap();
        assert_eq!(
            daily.next_after(at(2024, 1, 1, 0, 0), 330),
            Some(at(2024, 1, 1, 0, 30))
        );
        // A date that never comes.
        assert_eq!(Cron::parse("0 0 30 2 *").unwrap().next_after(0, 0), None);
        // Dialects beyond the documented numeric grammar are refused.
        for other in [
            "0 6 * * MON",
            "0 6 L * *",
            "0 6 * * 1#2",
            "0 6 ? * *",
            "0 6 * * +1",
            "@daily",
        ] {
            assert!(Cron::parse(other).is_err(), "{other}");
        }
    }
}
