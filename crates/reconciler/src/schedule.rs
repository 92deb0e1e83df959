//! Civil dates in a fixed UTC offset, and the daily cron schedule of `reconciler daemon`.
//! A fixed offset is exact for the processor's markets (none of them observes DST).

use anyhow::{Context, bail};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number.
pub fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
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
    let start = days_from_civil(y, m, d) * 86_400_000 - offset_min * 60_000;
    (start, start + 86_400_000)
}

/// A five-field cron expression: minute hour day-of-month month day-of-week, each `*`,
/// a number, a range `a-b`, a list `a,b`, or a step `*/n` / `a-b/n`. Day of week 0-6,
/// Sunday 0 (7 is also Sunday). When both day fields are restricted, either matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_any: bool,
    weekdays_any: bool,
}

fn field(spec: &str, lo: u32, hi: u32, name: &str) -> anyhow::Result<Vec<bool>> {
    let mut set = vec![false; hi as usize + 1];
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .with_context(|| format!("cron {name}: bad step in '{part}'"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            bail!("cron {name}: step 0 in '{part}'");
        }
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse()?, b.parse()?)
        } else {
            let v: u32 = range
                .parse()
                .with_context(|| format!("cron {name}: '{part}' is not a number"))?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            bail!("cron {name}: '{part}' is outside {lo}-{hi}");
        }
        for v in (a..=b).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok(set)
}

impl Cron {
    pub fn parse(expr: &str) -> anyhow::Result<Cron> {
        let f: Vec<&str> = expr.split_whitespace().collect();
        if f.len() != 5 {
            bail!(
                "cron '{expr}' must have five fields: minute hour day-of-month month day-of-week"
            );
        }
        let mut weekdays = field(f[4], 0, 7, "day-of-week")?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Cron {
            minutes: field(f[0], 0, 59, "minute")?,
            hours: field(f[1], 0, 23, "hour")?,
            days: field(f[2], 1, 31, "day-of-month")?,
            months: field(f[3], 1, 12, "month")?,
            weekdays,
            days_any: f[2] == "*",
            weekdays_any: f[4] == "*",
        })
    }

    fn matches_day(&self, y: i32, m: u32, d: u32) -> bool {
        let weekday = (days_from_civil(y, m, d) + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let dom = self.days[d as usize];
        let dow = self.weekdays[weekday];
        self.months[m as usize]
            && match (self.days_any, self.weekdays_any) {
                (true, true) => true,
                (false, true) => dom,
                (true, false) => dow,
                (false, false) => dom || dow,
            }
    }

    /// The first matching minute strictly after `after_ms` (unix ms), at `offset_min`.
    pub fn next_after(&self, after_ms: i64, offset_min: i64) -> Option<i64> {
        let local_min = (after_ms + offset_min * 60_000).div_euclid(60_000) + 1;
        let first_day = local_min.div_euclid(1440);
        let mut minute_of_day = local_min.rem_euclid(1440);
        // Any valid expression fires within about four years (Feb 29).
        for day in first_day..first_day + 366 * 5 {
            let (y, m, d) = civil_from_days(day);
            if self.matches_day(y, m, d) {
                for mod_ in minute_of_day..1440 {
                    let (h, mi) = (mod_ / 60, mod_ % 60);
                    if self.hours[h as usize] && self.minutes[mi as usize] {
                        return Some((day * 1440 + mod_) * 60_000 - offset_min * 60_000);
                    }
                }
            }
            minute_of_day = 0;
        }
        None
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
}
