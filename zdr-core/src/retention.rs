//! Retention rules: which backups a policy keeps (`keep_last`, `keep_hourly`, `keep_daily`,
//! `keep_weekly`, `keep_monthly`, `keep_yearly`), the grandfather-father-son scheme of
//! restic's `forget` and borg's `prune`.
//!
//! Each rule walks the backups newest first. `keep_last = n` keeps the `n` newest.
//! `keep_daily = n` keeps the newest backup of each of the `n` most recent days that have a
//! backup (a day without a backup does not use up a slot); hourly, weekly (ISO weeks),
//! monthly and yearly likewise. Periods are taken in UTC from the backup's start. A backup
//! is kept when any rule keeps it, and every rule that keeps it is named. A policy with no
//! rule keeps everything.
//!
//! The policy only says what the rules keep. The safety rules of pruning (the newest backup
//! that verifies, what a point-in-time recovery window or a replica still needs) are the
//! caller's, which may keep more; see `zdr::Stack::prune`.

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many backups to keep; see the module docs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest `n` backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last `n` hours with a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last `n` days with a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last `n` ISO weeks with a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// The newest backup of each of the last `n` months with a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// The newest backup of each of the last `n` years with a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
}

/// A period rule: its name and the period a time falls in.
type Period = (&'static str, fn(&DateTime<Utc>) -> String);

const PERIODS: [Period; 5] = [
    ("hourly", |t| t.format("%Y-%m-%d %H:00").to_string()),
    ("daily", |t| t.format("%Y-%m-%d").to_string()),
    ("weekly", |t| {
        let w = t.iso_week();
        format!("{}-W{:02}", w.year(), w.week())
    }),
    ("monthly", |t| t.format("%Y-%m").to_string()),
    ("yearly", |t| t.format("%Y").to_string()),
];

impl Retention {
    /// Whether no rule is set (everything is kept).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(Option::is_none) && self.keep_last.is_none()
    }

    /// Check the rules: a rule of 0 keeps nothing by itself and is refused, so a typo cannot
    /// delete every backup.
    ///
    /// # Errors
    /// [`crate::ErrorKind::BadInput`] naming the rule.
    pub fn check(&self) -> Result<()> {
        let named = [("keep_last", self.keep_last)].into_iter().chain(
            PERIODS
                .iter()
                .map(|(n, _)| *n)
                .zip(self.counts())
                .map(|(n, c)| (rule_name(n), c)),
        );
        for (name, n) in named {
            if n == Some(0) {
                return Err(Error::bad_input(format!(
                    "retention rule {name} = 0 keeps nothing: leave it out, or keep at least 1"
                )));
            }
        }
        Ok(())
    }

    fn counts(&self) -> [Option<u32>; 5] {
        [
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ]
    }

    /// For backups started at `times` (any order), the rules that keep each one: an empty
    /// list means no rule keeps it. With no rule set, every backup is kept by `"no rule"`.
    #[must_use]
    pub fn apply(&self, times: &[DateTime<Utc>]) -> Vec<Vec<String>> {
        let mut reasons = vec![Vec::new(); times.len()];
        if self.is_empty() {
            for r in &mut reasons {
                r.push("no retention rule".to_owned());
            }
            return reasons;
        }
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|&a, &b| times[b].cmp(&times[a]).then(a.cmp(&b)));
        if let Some(n) = self.keep_last {
            for (rank, &i) in order.iter().take(n as usize).enumerate() {
                reasons[i].push(format!("keep_last ({} of {n})", rank + 1));
            }
        }
        for ((name, period), count) in PERIODS.iter().zip(self.counts()) {
            let Some(n) = count else { continue };
            let mut last: Option<String> = None;
            let mut used = 0;
            for &i in &order {
                if used == n {
                    break;
                }
                let p = period(&times[i]);
                if last.as_ref() != Some(&p) {
                    used += 1;
                    reasons[i].push(format!("{} ({p})", rule_name(name)));
                    last = Some(p);
                }
            }
        }
        reasons
    }
}

fn rule_name(period: &str) -> &'static str {
    match period {
        "hourly" => "keep_hourly",
        "daily" => "keep_daily",
        "weekly" => "keep_weekly",
        "monthly" => "keep_monthly",
        _ => "keep_yearly",
    }
}

/// Parse a duration such as `7d`, `36h`, `90m`, `2w` or `3600s`.
///
/// # Errors
/// [`crate::ErrorKind::BadInput`] naming the text.
pub fn parse_duration(text: &str) -> Result<std::time::Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        Error::bad_input(format!(
            "invalid duration {text:?}: a number and a unit, such as 7d, 36h, 90m, 2w"
        ))
    })?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(Error::bad_input(format!(
                "invalid duration {text:?}: the unit is one of s, m, h, d, w"
            )));
        }
    };
    n.checked_mul(secs)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| Error::bad_input(format!("duration {text:?} is too large")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, 0, 0).unwrap()
    }

    fn kept(r: &Retention, times: &[DateTime<Utc>]) -> Vec<usize> {
        r.apply(times)
            .iter()
            .enumerate()
            .filter(|(_, why)| !why.is_empty())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn no_rule_keeps_everything() {
        let t = [at(2026, 1, 1, 0), at(2026, 1, 2, 0)];
        assert_eq!(kept(&Retention::default(), &t), vec![0, 1]);
        assert!(Retention::default().is_empty());
    }

    #[test]
    fn keep_last_and_daily_count_days_with_backups() {
        // Four backups a day for five days, the third day missing.
        let mut t = Vec::new();
        for d in [1, 2, 4, 5, 6] {
            for h in [0, 6, 12, 18] {
                t.push(at(2026, 3, d, h));
            }
        }
        let r = Retention {
            keep_last: Some(2),
            keep_daily: Some(3),
            ..Retention::default()
        };
        let k = kept(&r, &t);
        // keep_last: the two newest of day 6; daily: the newest of days 6, 5, 4.
        let expect: Vec<usize> = vec![11, 15, 18, 19];
        assert_eq!(k, expect, "{:?}", r.apply(&t));
        let why = r.apply(&t);
        assert_eq!(
            why[19],
            vec!["keep_last (1 of 2)", "keep_daily (2026-03-06)"]
        );
        assert_eq!(why[11], vec!["keep_daily (2026-03-04)"]);
    }

    #[test]
    fn weekly_monthly_yearly_take_the_newest_of_each_period() {
        let t = [
            at(2024, 12, 31, 0),
            at(2025, 6, 1, 0),
            at(2025, 6, 20, 0),
            at(2025, 12, 29, 0), // ISO week 2026-W01
            at(2026, 1, 2, 0),   // the same ISO week
        ];
        let r = Retention {
            keep_yearly: Some(10),
            ..Retention::default()
        };
        assert_eq!(kept(&r, &t), vec![0, 3, 4]);
        let r = Retention {
            keep_weekly: Some(2),
            ..Retention::default()
        };
        assert_eq!(kept(&r, &t), vec![2, 4]);
        let r = Retention {
            keep_monthly: Some(3),
            ..Retention::default()
        };
        assert_eq!(kept(&r, &t), vec![2, 3, 4]);
    }

    #[test]
    fn a_zero_rule_is_refused() {
        let r = Retention {
            keep_daily: Some(0),
            ..Retention::default()
        };
        let e = r.check().unwrap_err();
        assert!(e.to_string().contains("keep_daily"), "{e}");
        assert!(Retention::default().check().is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_duration("36h").unwrap().as_secs(), 36 * 3600);
        assert_eq!(parse_duration("2w").unwrap().as_secs(), 14 * 86_400);
        for bad in ["", "d", "7", "7 days", "-1d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
