//! Whether a job and account is healthy (docs/status.md): the verdict `lorch status` gives, as a
//! pure function of what its runs and its schedule say and of the current instant, so every rule
//! is tested without a store or a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A run in progress is "running long" past this many times its usual duration (the median of
/// its recent completed runs)...
pub const LONG_FACTOR: f64 = 3.0;
/// ...and never before it has run this long: a job that usually takes 2 s is not late at 7 s.
pub const LONG_AT_LEAST: Duration = Duration::from_secs(60);
/// How many recent completed runs make "usual".
pub const USUAL_OF: usize = 20;
/// The least time a scheduled job may go past its period without a success before it is stale;
/// otherwise a tenth of the period.
pub const STALE_GRACE_AT_LEAST: Duration = Duration::from_secs(5 * 60);

/// The verdict, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    RunningLong,
    Failing,
    Stale,
    Ok,
}

impl Verdict {
    /// As the table prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::RunningLong => "running long",
            Verdict::Failing => "failing",
            Verdict::Stale => "stale",
            Verdict::Ok => "ok",
        }
    }
}

/// What is known of a job and account.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Its newest run that ended (completed or failed) failed.
    pub last_failed: bool,
    pub consecutive_failures: u32,
    pub last_success: Option<DateTime<Utc>>,
    pub running_since: Option<DateTime<Utc>>,
    /// The median duration of its recent completed runs.
    pub usual: Option<Duration>,
    /// The time between two fire times of its schedule, when it has one.
    pub period: Option<Duration>,
    /// Its schedule's latest fire time at or before now: one that passed with no success since
    /// the job began means `tick` never ran it (not installed, or broken).
    pub last_fire: Option<DateTime<Utc>>,
    /// `--max-age`: a success at least this recent is expected of every job.
    pub max_age: Option<Duration>,
}

/// The verdict, and why in a few words.
pub fn verdict(facts: &Facts, now: DateTime<Utc>) -> (Verdict, String) {
    let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    if let (Some(since), Some(usual)) = (facts.running_since, facts.usual) {
        let bound = usual.mul_f64(LONG_FACTOR).max(LONG_AT_LEAST);
        if age(since) > bound {
            let why = format!(
                "running for {}, more than {LONG_FACTOR}x its usual {}",
                short(age(since)),
                short(usual)
            );
            return (Verdict::RunningLong, why);
        }
    }
    if facts.last_failed {
        let why = match facts.consecutive_failures {
            0 | 1 => "its last run failed".to_owned(),
            n => format!("its last {n} runs failed"),
        };
        return (Verdict::Failing, why);
    }
    let allowed = match (facts.max_age, facts.period) {
        (Some(max_age), _) => Some(max_age),
        (None, Some(period)) => Some(period + (period / 10).max(STALE_GRACE_AT_LEAST)),
        (None, None) => None,
    };
    match (allowed, facts.last_success) {
        (Some(allowed), Some(success)) if age(success) > allowed => {
            let why = format!(
                "last success {} ago, more than the {} allowed",
                short(age(success)),
                short(allowed)
            );
            (Verdict::Stale, why)
        }
        (Some(_), None) if facts.max_age.is_some() => {
            (Verdict::Stale, "no run has succeeded yet".to_owned())
        }
        (Some(allowed), None) => match (facts.last_fire, facts.period) {
            (Some(fire), Some(period)) if age(fire) > allowed - period => {
                let why = format!(
                    "never succeeded, and its fire time passed {} ago: is `lorch tick` in your crontab? (lorch schedule install)",
                    short(age(fire))
                );
                (Verdict::Stale, why)
            }
            _ => (Verdict::Ok, String::new()),
        },
        _ => (Verdict::Ok, String::new()),
    }
}

/// `3h 5m`, `2d 4h`, `45s`: the two largest units.
pub fn short(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The median of `seconds`.
pub fn median(seconds: &mut [f64]) -> Option<Duration> {
    if seconds.is_empty() {
        return None;
    }
    seconds.sort_by(f64::total_cmp);
    Some(Duration::from_secs_f64(seconds[seconds.len() / 2].max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const DAY: Duration = Duration::from_secs(86400);

    /// A scheduled job that never ran (the tick line never installed) is stale once its fire
    /// time is past the grace, not before.
    #[test]
    fn a_scheduled_job_that_never_ran_is_stale_after_its_fire_time() {
        let never = Facts {
            period: Some(DAY),
            last_fire: Some(at("2026-11-26T06:00:00Z")),
            ..Facts::default()
        };
        assert_eq!(verdict(&never, at("2026-11-26T06:03:00Z")).0, Verdict::Ok);
        let (stale, why) = verdict(&never, at("2026-11-26T09:00:00Z"));
        assert_eq!(stale, Verdict::Stale);
        assert!(
            why.starts_with("never succeeded, and its fire time passed 3h 0m ago"),
            "{why}"
        );
    }

    #[test]
    fn each_verdict_and_what_wins() {
        let now = at("2026-11-26T12:00:00Z");
        let ok = Facts {
            last_success: Some(at("2026-11-26T06:10:00Z")),
            period: Some(DAY),
            ..Facts::default()
        };
        assert_eq!(verdict(&ok, now).0, Verdict::Ok);
        // A daily job may go a day and 2.4 hours without a success.
        let stale = Facts {
            last_success: Some(at("2026-11-25T09:00:00Z")),
            ..ok.clone()
        };
        assert_eq!(
            verdict(&stale, now),
            (
                Verdict::Stale,
                "last success 1d 3h ago, more than the 1d 2h allowed".to_owned()
            )
        );
        let failing = Facts {
            last_failed: true,
            consecutive_failures: 2,
            ..stale.clone()
        };
        assert_eq!(
            verdict(&failing, now),
            (Verdict::Failing, "its last 2 runs failed".to_owned())
        );
        let long = Facts {
            running_since: Some(at("2026-11-26T11:40:00Z")),
            usual: Some(Duration::from_secs(300)),
            ..failing.clone()
        };
        assert_eq!(verdict(&long, now).0, Verdict::RunningLong);
        // Three times a short usual duration is not late before a minute.
        let short_job = Facts {
            running_since: Some(at("2026-11-26T11:59:30Z")),
            usual: Some(Duration::from_secs(2)),
            ..ok.clone()
        };
        assert_eq!(verdict(&short_job, now).0, Verdict::Ok);
        // Unscheduled: stale only against --max-age; never succeeded is stale then.
        let unscheduled = Facts {
            period: None,
            ..stale
        };
        assert_eq!(verdict(&unscheduled, now).0, Verdict::Ok);
        let never = Facts {
            max_age: Some(DAY),
            ..Facts::default()
        };
        assert_eq!(verdict(&never, now).0, Verdict::Stale);
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short(Duration::from_secs(45)), "45s");
        assert_eq!(short(Duration::from_secs(3 * 3600 + 5 * 60 + 9)), "3h 5m");
        assert_eq!(short(Duration::from_secs(2 * 86400 + 4 * 3600)), "2d 4h");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(Duration::from_secs(2)));
        assert_eq!(median(&mut []), None);
    }
}
