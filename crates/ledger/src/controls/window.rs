//! Calendar windows of the spending and velocity limits, in the configured time zone.

use std::fmt;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Why the `controls.time_zone` setting could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controls.time_zone {setting:?}: {reason}")]
pub struct TimeZoneError {
    pub setting: String,
    pub reason: String,
}

/// Resolves the `controls.time_zone` setting. `UTC` (the default) stands alone; an IANA
/// name (`America/Argentina/Buenos_Aires`) needs its TZif data, which the caller reads
/// from the system's zoneinfo (this crate does no I/O, and the build bundles no tz
/// database); without data the setting is read as a POSIX TZ rule (`<-03>3`,
/// `EST5EDT,M3.2.0,M11.1.0`).
pub fn time_zone(setting: &str, tzif: Option<&[u8]>) -> Result<TimeZone, TimeZoneError> {
    let fail = |reason: String| TimeZoneError {
        setting: setting.to_owned(),
        reason,
    };
    match (setting, tzif) {
        ("UTC" | "Etc/UTC", _) => Ok(TimeZone::UTC),
        (name, Some(data)) => {
            TimeZone::tzif(name, data).map_err(|e| fail(format!("unreadable TZif data: {e}")))
        }
        (rule, None) => TimeZone::posix(rule).map_err(|e| {
            fail(format!(
                "no zoneinfo data for it, and not a POSIX TZ rule either ({e})"
            ))
        }),
    }
}

/// How long a limit's window lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// Each authorization on its own: no window, no counter.
    PerAuthorization,
    Daily,
    /// Monday to Sunday.
    Weekly,
    Monthly,
    Yearly,
    /// Since the control exists.
    AllTime,
}

impl Interval {
    pub const ALL: [Interval; 6] = [
        Interval::PerAuthorization,
        Interval::Daily,
        Interval::Weekly,
        Interval::Monthly,
        Interval::Yearly,
        Interval::AllTime,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Interval::PerAuthorization => "per_authorization",
            Interval::Daily => "daily",
            Interval::Weekly => "weekly",
            Interval::Monthly => "monthly",
            Interval::Yearly => "yearly",
            Interval::AllTime => "all_time",
        }
    }

    /// How the interval reads in a message ("monthly spending limit").
    pub fn words(&self) -> &'static str {
        match self {
            Interval::PerAuthorization => "per-authorization",
            Interval::AllTime => "all-time",
            other => other.name(),
        }
    }

    pub fn parse(s: &str) -> Option<Interval> {
        Self::ALL.into_iter().find(|i| i.name() == s)
    }

    /// The window of this interval holding `at`, in `tz`; `None` for
    /// [`Interval::PerAuthorization`], which counts nothing.
    pub fn window(&self, at: Timestamp, tz: &TimeZone) -> Option<Window> {
        let key = self.key_of_day(local_day(at, tz))?;
        let Some(first) = key.first_day else {
            return Some(Window {
                key,
                start: None,
                end: None,
            });
        };
        let next = match self {
            Interval::Daily => first.checked_add(1.day()),
            Interval::Weekly => first.checked_add(1.week()),
            Interval::Monthly => first.checked_add(1.month()),
            _ => first.checked_add(1.year()),
        };
        Some(Window {
            key,
            start: start_of(first, tz),
            // Past the last representable day the window simply does not end.
            end: next.ok().and_then(|d| start_of(d, tz)),
        })
    }

    /// The key of the window holding the local calendar `day`: all a counter needs, without
    /// the bounds (which cost two more time zone conversions).
    pub fn key_of_day(&self, day: Date) -> Option<WindowKey> {
        let first = match self {
            Interval::PerAuthorization => return None,
            Interval::AllTime => {
                return Some(WindowKey {
                    interval: Interval::AllTime,
                    first_day: None,
                });
            }
            Interval::Daily => day,
            Interval::Weekly => day
                .checked_sub(i64::from(day.weekday().to_monday_zero_offset()).days())
                .ok()?,
            Interval::Monthly => day.first_of_month(),
            Interval::Yearly => day.first_of_year(),
        };
        Some(WindowKey {
            interval: *self,
            first_day: Some(first),
        })
    }
}

/// The local calendar day holding `at` in `tz`.
pub fn local_day(at: Timestamp, tz: &TimeZone) -> Date {
    tz.to_datetime(at).date()
}

/// The first instant of `day` in `tz`. Where midnight falls in a gap (a zone that moves
/// its clocks at 00:00), the day starts at the first local time that exists.
fn start_of(day: Date, tz: &TimeZone) -> Option<Timestamp> {
    day.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

impl serde::Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names one window of one interval: the interval and the local date it starts on.
/// Two instants in the same window have equal keys whatever the time zone's offset did in
/// between, so the key (not the bounds) is what a counter is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    interval: Interval,
    first_day: Option<Date>,
}

impl WindowKey {
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// Reads the stored form written by `Display`.
    pub fn parse(s: &str) -> Option<WindowKey> {
        if s == "all_time" {
            return Some(WindowKey {
                interval: Interval::AllTime,
                first_day: None,
            });
        }
        let (name, rest) = s.split_once(':')?;
        let interval = Interval::parse(name)?;
        let day: Date = match interval {
            Interval::Daily | Interval::Weekly => rest.parse().ok()?,
            Interval::Monthly => format!("{rest}-01").parse().ok()?,
            Interval::Yearly => format!("{rest}-01-01").parse().ok()?,
            Interval::PerAuthorization | Interval::AllTime => return None,
        };
        let key = WindowKey {
            interval,
            first_day: Some(day),
        };
        // Only the canonical spelling of a window start is a key.
        (key.to_string() == s
            && (interval != Interval::Weekly || day.weekday() == jiff::civil::Weekday::Monday))
            .then_some(key)
    }
}

impl fmt::Display for WindowKey {
    /// `daily:2026-12-03`, `weekly:2026-11-30` (its Monday), `monthly:2026-12`,
    /// `yearly:2026`, `all_time`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.interval, self.first_day) {
            (Interval::Daily | Interval::Weekly, Some(d)) => {
                write!(f, "{}:{}", self.interval.name(), d)
            }
            (Interval::Monthly, Some(d)) => {
                write!(f, "monthly:{:04}-{:02}", d.year(), d.month())
            }
            (Interval::Yearly, Some(d)) => write!(f, "yearly:{:04}", d.year()),
            _ => f.write_str("all_time"),
        }
    }
}

/// One window: its key and its bounds, `[start, end)`; `None` means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub key: WindowKey,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

impl Window {
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start.is_none_or(|s| s <= at) && self.end.is_none_or(|e| at < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// New York rules (DST from the second Sunday of March to the first of November).
    fn new_york() -> TimeZone {
        TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap()
    }

    /// Brazil's rules of 2018: clocks moved at midnight, so one day a year had no 00:00.
    fn sao_paulo_2018() -> TimeZone {
        TimeZone::posix("<-03>3<-02>,M11.1.0/0,M2.3.0/0").unwrap()
    }

    /// (zone, instant, interval, key, start, end)
    type Row = (
        &'static str,
        &'static str,
        Interval,
        &'static str,
        &'static str,
        &'static str,
    );

    #[test]
    fn window_table() {
        use Interval::*;
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // UTC: the last and first instants of a day, week, month and year.
            ("UTC", "2026-12-03T23:59:59.999999999Z", Daily, "daily:2026-12-03", "2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z"),
            ("UTC", "2026-12-04T00:00:00Z", Daily, "daily:2026-12-04", "2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z"),
            ("UTC", "2026-12-06T23:59:59Z", Weekly, "weekly:2026-11-30", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"),
            ("UTC", "2026-12-07T00:00:00Z", Weekly, "weekly:2026-12-07", "2026-12-07T00:00:00Z", "2026-12-14T00:00:00Z"),
            ("UTC", "2026-11-30T00:00:00Z", Weekly, "weekly:2026-11-30", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"),
            // A week across the turn of the year belongs to its Monday's year.
            ("UTC", "2027-01-03T12:00:00Z", Weekly, "weekly:2026-12-28", "2026-12-28T00:00:00Z", "2027-01-04T00:00:00Z"),
            ("UTC", "2026-11-30T23:59:59Z", Monthly, "monthly:2026-11", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
            ("UTC", "2026-12-01T00:00:00Z", Monthly, "monthly:2026-12", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("UTC", "2026-12-31T23:59:59Z", Yearly, "yearly:2026", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("UTC", "2027-01-01T00:00:00Z", Yearly, "yearly:2027", "2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),
            // Leap day: its own day, February has 29 days, the leap year 366.
            ("UTC", "2028-02-29T12:00:00Z", Daily, "daily:2028-02-29", "2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"),
            ("UTC", "2028-02-29T23:59:59Z", Monthly, "monthly:2028-02", "2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z"),
            ("UTC", "2028-03-01T00:00:00Z", Monthly, "monthly:2028-03", "2028-03-01T00:00:00Z", "2028-04-01T00:00:00Z"),
            ("UTC", "2027-02-28T23:59:59Z", Monthly, "monthly:2027-02", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"),
            ("UTC", "2028-02-29T00:00:00Z", Weekly, "weekly:2028-02-28", "2028-02-28T00:00:00Z", "2028-03-06T00:00:00Z"),
            ("UTC", "2028-02-29T00:00:00Z", Yearly, "yearly:2028", "2028-01-01T00:00:00Z", "2029-01-01T00:00:00Z"),
            // New York in winter (UTC-5): 04:59Z is still the previous local day.
            ("NY", "2026-12-04T04:59:59Z", Daily, "daily:2026-12-03", "2026-12-03T05:00:00Z", "2026-12-04T05:00:00Z"),
            ("NY", "2026-12-04T05:00:00Z", Daily, "daily:2026-12-04", "2026-12-04T05:00:00Z", "2026-12-05T05:00:00Z"),
            ("NY", "2027-01-01T04:59:59Z", Yearly, "yearly:2026", "2026-01-01T05:00:00Z", "2027-01-01T05:00:00Z"),
            ("NY", "2027-01-01T04:59:59Z", Monthly, "monthly:2026-12", "2026-12-01T05:00:00Z", "2027-01-01T05:00:00Z"),
            ("NY", "2027-01-01T05:00:00Z", Monthly, "monthly:2027-01", "2027-01-01T05:00:00Z", "2027-02-01T05:00:00Z"),
            // Spring forward (2026-03-08): a 23-hour day.
            ("NY", "2026-03-08T12:00:00Z", Daily, "daily:2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
            ("NY", "2026-03-09T03:59:59Z", Daily, "daily:2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"),
            ("NY", "2026-03-09T04:00:00Z", Daily, "daily:2026-03-09", "2026-03-09T04:00:00Z", "2026-03-10T04:00:00Z"),
            // The week holding the change is 167 hours long.
            ("NY", "2026-03-08T12:00:00Z", Weekly, "weekly:2026-03-02", "2026-03-02T05:00:00Z", "2026-03-09T04:00:00Z"),
            ("NY", "2026-03-31T12:00:00Z", Monthly, "monthly:2026-03", "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z"),
            // Fall back (2026-11-01): a 25-hour day; the repeated hour stays in it.
            ("NY", "2026-11-01T05:30:00Z", Daily, "daily:2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            ("NY", "2026-11-01T06:30:00Z", Daily, "daily:2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            ("NY", "2026-11-02T04:59:59Z", Daily, "daily:2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            ("NY", "2026-11-02T05:00:00Z", Daily, "daily:2026-11-02", "2026-11-02T05:00:00Z", "2026-11-03T05:00:00Z"),
            ("NY", "2028-02-29T04:59:59Z", Daily, "daily:2028-02-28", "2028-02-28T05:00:00Z", "2028-02-29T05:00:00Z"),
            ("NY", "2028-03-01T04:59:59Z", Daily, "daily:2028-02-29", "2028-02-29T05:00:00Z", "2028-03-01T05:00:00Z"),
            // Midnight in the gap: 2018-11-04 began at 01:00 local (03:00Z).
            ("SP", "2018-11-04T03:00:00Z", Daily, "daily:2018-11-04", "2018-11-04T03:00:00Z", "2018-11-05T02:00:00Z"),
            ("SP", "2018-11-04T02:59:59Z", Daily, "daily:2018-11-03", "2018-11-03T03:00:00Z", "2018-11-04T03:00:00Z"),
            ("SP", "2018-11-10T12:00:00Z", Weekly, "weekly:2018-11-05", "2018-11-05T02:00:00Z", "2018-11-12T02:00:00Z"),
            ("UTC", "2026-12-03T10:00:00Z", AllTime, "all_time", "", ""),
        ];
        for (zone, at, interval, key, start, end) in rows {
            let tz = match *zone {
                "UTC" => TimeZone::UTC,
                "NY" => new_york(),
                _ => sao_paulo_2018(),
            };
            let at = ts(at);
            let w = interval.window(at, &tz).unwrap();
            let case = format!("{zone} {at} {interval}");
            assert_eq!(w.key.to_string(), *key, "{case}");
            assert_eq!(w.start, (!start.is_empty()).then(|| ts(start)), "{case}");
            assert_eq!(w.end, (!end.is_empty()).then(|| ts(end)), "{case}");
            assert!(w.contains(at), "{case}");
            if let Some(s) = w.start {
                assert!(
                    !w.contains(s - jiff::SignedDuration::from_nanos(1)),
                    "{case}"
                );
                // The nanosecond before the window is in the previous window.
                let before = interval
                    .window(s - jiff::SignedDuration::from_nanos(1), &tz)
                    .unwrap();
                assert_ne!(before.key, w.key, "{case}");
                assert_eq!(before.end, w.start, "{case}");
            }
            if let Some(e) = w.end {
                assert!(!w.contains(e), "{case}");
            }
            assert_eq!(WindowKey::parse(key), Some(w.key), "{case}");
            assert_eq!(
                interval.key_of_day(local_day(at, &tz)),
                Some(w.key),
                "{case}"
            );
        }
    }

    #[test]
    fn the_setting_resolves_to_a_zone() {
        assert_eq!(time_zone("UTC", None), Ok(TimeZone::UTC));
        let ny = time_zone("EST5EDT,M3.2.0,M11.1.0", None).unwrap();
        assert_eq!(
            Interval::Daily
                .window(ts("2026-07-01T12:00:00Z"), &ny)
                .unwrap()
                .start,
            Some(ts("2026-07-01T04:00:00Z"))
        );
        let e = time_zone("America/Sao_Paulo", None).unwrap_err();
        assert!(e.reason.contains("no zoneinfo data"), "{e}");
        assert!(time_zone("America/Sao_Paulo", Some(b"not tzif")).is_err());
        // The real tz database entry: in 2018 Sao Paulo's 4 November began at 01:00, and
        // since 2019 the zone keeps -03 all year.
        let sp = time_zone(
            "America/Sao_Paulo",
            Some(include_bytes!("testdata/America_Sao_Paulo.tzif")),
        )
        .unwrap();
        let day = Interval::Daily
            .window(ts("2018-11-04T12:00:00Z"), &sp)
            .unwrap();
        assert_eq!(day.start, Some(ts("2018-11-04T03:00:00Z")));
        assert_eq!(day.end, Some(ts("2018-11-05T02:00:00Z")));
        let year = Interval::Yearly
            .window(ts("2027-01-01T02:59:59Z"), &sp)
            .unwrap();
        assert_eq!(year.key.to_string(), "yearly:2026");
        assert_eq!(year.end, Some(ts("2027-01-01T03:00:00Z")));
    }

    #[test]
    fn per_authorization_has_no_window() {
        assert_eq!(
            Interval::PerAuthorization.window(ts("2026-12-03T10:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn intervals_and_keys_parse_only_their_canonical_form() {
        for i in Interval::ALL {
            assert_eq!(Interval::parse(i.name()), Some(i));
        }
        for bad in ["Daily", "day", "week", "per_transaction", ""] {
            assert_eq!(Interval::parse(bad), None, "{bad:?}");
        }
        for bad in [
            "daily:2026-12-3",
            "weekly:2026-12-01",
            "monthly:2026-13",
            "yearly:26",
            "hourly:2026",
            "per_authorization:2026-12-03",
            "all_time:2026",
        ] {
            assert_eq!(WindowKey::parse(bad), None, "{bad:?}");
        }
    }
}
