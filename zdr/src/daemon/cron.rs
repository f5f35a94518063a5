//! [`Schedule`]: a cron expression (five fields, as in crontab(5)), evaluated in UTC.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use zdr_core::{Error, Result};

/// A cron schedule: `minute hour day-of-month month day-of-week`, each field `*`, a number,
/// a range `a-b`, a step `*/n` or `a-b/n`, or a list of those (`1,15,30`); months and weekdays
/// also by name (`jan`, `mon`); Sunday is 0 or 7. The macros `@hourly`, `@daily`
/// (`@midnight`), `@weekly`, `@monthly` and `@yearly` (`@annually`) are accepted. As in cron,
/// when both day fields are restricted a day matching either one fires. Times are UTC.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let s: zdr::daemon::Schedule = "0 */6 * * *".parse()?;
/// let t = Utc.with_ymd_and_hms(2026, 1, 16, 7, 30, 0).unwrap();
/// assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 16, 12, 0, 0).unwrap()));
/// # Ok::<(), zdr::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl std::str::FromStr for Schedule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        let expanded = match trimmed {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let bad = |why: String| {
            Error::bad_input(format!("invalid cron expression {text:?}: {why}")).with_hint(
                "five fields: minute hour day-of-month month day-of-week, such as \"0 */6 * * *\"",
            )
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad(format!("{} fields where cron has five", fields.len())));
        }
        let field = |i: usize, name: &str, lo: u32, hi: u32, names: &[&str]| {
            parse_field(fields[i], lo, hi, names).map_err(|why| bad(format!("{name}: {why}")))
        };
        let minutes = field(0, "minute", 0, 59, &[])?;
        let hours = field(1, "hour", 0, 23, &[])?;
        let days = field(2, "day of month", 1, 31, &[])?;
        let months = field(3, "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(4, "day of week", 0, 7, &WEEKDAYS)?;
        // Sunday is 0 and 7.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        let schedule = Self {
            text: trimmed.to_owned(),
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_restricted: !fields[2].starts_with('*'),
            weekdays_restricted: !fields[4].starts_with('*'),
        };
        // A day that never comes (`0 0 30 2 *`) is refused rather than silently never run.
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if probe.and_then(|p| schedule.next_after(p)).is_none() {
            return Err(bad("it never fires (no such day)".to_owned()));
        }
        Ok(schedule)
    }
}

/// One field as a bit set of the values it allows.
fn parse_field(text: &str, lo: u32, hi: u32, names: &[&str]) -> std::result::Result<u64, String> {
    let value = |s: &str| -> std::result::Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Months count from 1, weekdays from 0.
            return Ok(u32::try_from(i).unwrap_or(0) + lo);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!(
                "{s:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        if v < lo || v > hi {
            return Err(format!("{v} is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!("empty list item in {text:?}"));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let s: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if s == 0 {
                    return Err("a step of 0".to_owned());
                }
                (r, s)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range {range:?} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `5/15`: from 5 to the end, every 15.
            (a, if step > 1 { hi } else { a })
        };
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// The expression as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            (true, false) => dom,
            (false, true) => dow,
            (false, false) => true,
        }
    }

    /// The first time after `t` (strictly later, to the minute) the schedule fires; `None`
    /// when it does not fire within the next eight years.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = t.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let limit = start + Duration::days(8 * 366);
        let mut c = start;
        while c < limit {
            if self.months & (1 << c.month()) == 0 {
                // The first day of the next month.
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(c.date_naive()) {
                c = Utc.from_utc_datetime(&c.date_naive().succ_opt()?.and_hms_opt(0, 0, 0)?);
                continue;
            }
            if self.hours & (1 << c.hour()) == 0 {
                c = c.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << c.minute()) == 0 {
                c += Duration::minutes(1);
                continue;
            }
            return Some(c);
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn next(expr: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        expr.parse::<Schedule>().unwrap().next_after(t).unwrap()
    }

    #[test]
    fn common_schedules() {
        let t = at(2026, 1, 16, 7, 30);
        assert_eq!(next("0 * * * *", t), at(2026, 1, 16, 8, 0));
        assert_eq!(next("@hourly", t), at(2026, 1, 16, 8, 0));
        assert_eq!(next("*/15 * * * *", t), at(2026, 1, 16, 7, 45));
        assert_eq!(next("0 */6 * * *", t), at(2026, 1, 16, 12, 0));
        assert_eq!(next("30 2 * * *", t), at(2026, 1, 17, 2, 30));
        assert_eq!(next("@daily", t), at(2026, 1, 17, 0, 0));
        // 2026-01-16 is a Friday: the next Sunday is the 18th.
        assert_eq!(next("0 3 * * 0", t), at(2026, 1, 18, 3, 0));
        assert_eq!(next("0 3 * * 7", t), at(2026, 1, 18, 3, 0));
        assert_eq!(next("0 3 * * sun", t), at(2026, 1, 18, 3, 0));
        assert_eq!(next("0 9 * * mon-fri", t), at(2026, 1, 16, 9, 0));
        assert_eq!(next("0 9 * * sat,sun", t), at(2026, 1, 17, 9, 0));
        assert_eq!(next("@monthly", t), at(2026, 2, 1, 0, 0));
        assert_eq!(next("0 4 1 1,4,7,10 *", t), at(2026, 4, 1, 4, 0));
        assert_eq!(next("0 4 1 jan,apr,jul,oct *", t), at(2026, 4, 1, 4, 0));
        assert_eq!(next("@yearly", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("5/20 * * * *", t), at(2026, 1, 16, 7, 45));
        assert_eq!(next("0 0 29 2 *", t), at(2028, 2, 29, 0, 0));
    }

    #[test]
    fn strictly_after_and_whole_minutes() {
        let t = Utc.with_ymd_and_hms(2026, 1, 16, 8, 0, 0).unwrap();
        assert_eq!(next("0 * * * *", t), at(2026, 1, 16, 9, 0));
        let t = t + Duration::seconds(59);
        assert_eq!(next("* * * * *", t), at(2026, 1, 16, 8, 1));
        // Across the end of a year.
        assert_eq!(
            next("0 0 * * *", at(2026, 12, 31, 23, 59)),
            at(2027, 1, 1, 0, 0)
        );
    }

    #[test]
    fn either_day_field_when_both_are_restricted() {
        // The 1st of the month or any Monday, as cron does.
        let s: Schedule = "0 0 1 * mon".parse().unwrap();
        assert_eq!(
            s.next_after(at(2026, 1, 16, 7, 0)),
            Some(at(2026, 1, 19, 0, 0))
        );
        assert_eq!(
            s.next_after(at(2026, 1, 27, 7, 0)),
            Some(at(2026, 2, 1, 0, 0))
        );
    }

    #[test]
    fn bad_expressions_are_named() {
        for (expr, why) in [
            ("0 * * *", "4 fields"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("0 24 * * *", "hour: 24 is outside 0-23"),
            ("0 0 0 * *", "day of month: 0 is outside 1-31"),
            ("0 0 * 13 *", "month: 13 is outside 1-12"),
            ("0 0 * * 8", "day of week: 8 is outside 0-7"),
            ("*/0 * * * *", "a step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "\"x\" is not a number"),
            ("0 0 * foo *", "\"foo\" is not a number or a name"),
            ("1,,2 * * * *", "empty list item"),
            ("0 0 30 2 *", "never fires"),
            ("@often", "1 fields"),
        ] {
            let e = expr.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(why), "{expr}: {e}");
            assert!(e.contains(expr), "{expr}: {e}");
        }
    }
}
