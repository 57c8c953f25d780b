//! Time on the command line: `--since`/`--until` in every accepted form (README, "Time
//! arguments"), resolved once to a UTC instant, and the durations of `--timeout` and its kin.

use std::time::{Duration, Instant};

use chrono::{DateTime, Days, DurationRound, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use lorch_plugin_api::TimeArg;

/// The longest duration any option or variable takes: 100 years. Anything longer is a usage
/// error, so no user's value can overflow a clock (`--timeout 300000000000y` panicked once).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600); // humantime's year: 365.25 days

/// A duration such as `30s`, `10m`, `2h`, `1h30m`, from zero to [`MAX_DURATION`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; expected a duration such as 30s, 10m, 2h or 1h30m"))?;
    if duration > MAX_DURATION {
        return Err(format!(
            "'{text}' is longer than the longest duration lorch accepts (100 years)"
        ));
    }
    Ok(duration)
}

/// A [`duration`] longer than zero, for limits where zero makes no sense (`--timeout 0s`).
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        Duration::ZERO => Err(format!(
            "'{text}' is zero; expected a duration longer than zero, such as 30s or 10m"
        )),
        duration => Ok(duration),
    }
}

/// The instant `duration` from now, without overflowing however long it is.
pub fn after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .or_else(|| now.checked_add(MAX_DURATION))
        .unwrap_or(now)
}

/// The variable that sets lorch's clock, for tests (docs/configuration.md, "The clock").
pub const NOW_VAR: &str = "LORCH_NOW";

/// Now, to the microsecond (the precision the store keeps, so a window ending now is recorded
/// exactly): `LORCH_NOW` when set (an RFC 3339 instant: tests move time without sleeping),
/// else the system clock. Windows, watermarks and schedules read time here; event timestamps
/// are the system clock's.
pub fn now() -> Result<DateTime<Utc>, String> {
    let now = match std::env::var(NOW_VAR) {
        Err(_) => Utc::now(),
        Ok(text) => DateTime::parse_from_rfc3339(text.trim())
            .map_err(|e| {
                format!("invalid {NOW_VAR} '{text}': {e}; expected an RFC 3339 instant such as 2026-11-22T06:00:00Z")
            })?
            .with_timezone(&Utc),
    };
    Ok(now
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now))
}

/// An instant as the store and messages write it: RFC 3339, UTC, microseconds.
pub fn micros(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The accepted forms, as error messages list them.
pub const ACCEPTED: &str = "accepted: a duration in the past such as -7d, 7d, -36h, 2w, 1h30m or \
90min (m is minutes, M or months is months), `now`, `today`, `yesterday` (00:00 UTC), a date \
such as 2024-01-01 (00:00 UTC), or an RFC 3339 date-time such as 2024-01-01T06:00:00Z \
(no offset means UTC)";

/// `--since` and `--until` (of `run-job`, or `runs list`), resolved against one `now`, so that
/// `--since -1d --until now` is exactly one day. The error names the flag, the value, what is
/// wrong with it and every accepted form; or both flags, when the window ends before it starts.
pub fn window(
    since: Option<&str>,
    until: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Option<TimeArg>, Option<TimeArg>), String> {
    let time = |flag: &str, value: Option<&str>| {
        value
            .map(|raw| match resolve(raw, now) {
                Ok(utc) => Ok(TimeArg {
                    raw: raw.to_owned(),
                    utc,
                }),
                Err(why) => Err(format!(
                    "invalid value '{raw}' for {flag}: {why}; {ACCEPTED}"
                )),
            })
            .transpose()
    };
    let (since, until) = (time("--since", since)?, time("--until", until)?);
    if let (Some(since), Some(until)) = (&since, &until)
        && since.utc > until.utc
    {
        return Err(format!(
            "--since '{}' ({}) is later than --until '{}' ({}); the window must not end before it starts",
            since.raw,
            since.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            until.raw,
            until.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok((since, until))
}

/// [`window`] for a run's own window, which ends now unless `until` is given: a start in the
/// future is refused (a filter such as `runs list --since` may name one).
pub fn run_window(
    since: Option<&str>,
    until: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(Option<TimeArg>, Option<TimeArg>), String> {
    let (since, until) = window(since, until, now)?;
    if let (Some(since), None) = (&since, &until)
        && since.utc > now
    {
        return Err(format!(
            "--since '{}' ({}) is in the future; the window ends now (give --until for a later end)",
            since.raw,
            since.utc.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    Ok((since, until))
}

/// Resolves `value` against `now`. The error says what is wrong with the value, without the
/// list of accepted forms (see [`window`]).
pub fn resolve(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let value = value.trim();
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    match value.to_ascii_lowercase().as_str() {
        "" => return Err("the value is empty".to_owned()),
        "now" => return Ok(now),
        "today" => return Ok(midnight),
        "yesterday" => return Ok(midnight - Days::new(1)),
        _ => {}
    }
    // A date is four digits of year, two of month, two of day: chrono alone would also take
    // `24-01-01` as the year 24.
    let shaped_like_a_date = value.len() >= 10
        && value.as_bytes()[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped_like_a_date && value.as_bytes().get(2) == Some(&b'-') {
        return Err("a date needs a four-digit year (2024-01-01)".to_owned());
    }
    if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(date.and_time(NaiveTime::MIN).and_utc());
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        return Ok(instant.to_utc());
    }
    const WITH_OFFSET: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%z",
        "%Y-%m-%d %H:%M%z",
    ];
    if let Some(instant) = WITH_OFFSET
        .iter()
        .find_map(|f| DateTime::parse_from_str(value, f).ok())
    {
        return Ok(instant.to_utc());
    }
    const WITHOUT_OFFSET: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ];
    if let Some(naive) = WITHOUT_OFFSET
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
    {
        return Ok(naive.and_utc());
    }
    if shaped_like_a_date {
        return Err(format!(
            "it is not a valid date or date-time ({} does not exist, or the time is malformed)",
            &value[..10]
        ));
    }
    relative(value, now)
}

/// `-7d` and `7d` both mean seven days ago: a relative time is always in the past.
fn relative(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let span = value.strip_prefix('-').unwrap_or(value);
    if !span.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("it is not a time lorch recognizes".to_owned());
    }
    let duration =
        humantime::parse_duration(span).map_err(|e| format!("it is not a valid duration ({e})"))?;
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| "it reaches too far into the past".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-22T15:30:45Z".parse().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[track_caller]
    fn ok(value: &str, expected: &str) {
        assert_eq!(resolve(value, now()), Ok(at(expected)), "value {value:?}");
    }

    #[test]
    fn relative_durations_are_in_the_past_with_or_without_minus() {
        ok("-7d", "2026-11-15T15:30:45Z");
        ok("7d", "2026-11-15T15:30:45Z");
        ok("-36h", "2026-11-21T03:30:45Z");
        ok("2w", "2026-11-08T15:30:45Z");
        ok("1h30m", "2026-11-22T14:00:45Z");
        ok("1h 30m", "2026-11-22T14:00:45Z");
        ok("90min", "2026-11-22T14:00:45Z");
        ok("45s", "2026-11-22T15:30:00Z");
        ok("-0s", "2026-11-22T15:30:45Z");
    }

    #[test]
    fn small_m_is_minutes_and_capital_m_is_months() {
        ok("5m", "2026-11-22T15:25:45Z");
        // humantime's month is 30.44 days.
        let month = resolve("1M", now()).unwrap();
        assert_eq!(month, resolve("1months", now()).unwrap());
        assert_eq!((now() - month).num_hours(), 730);
    }

    #[test]
    fn words() {
        ok("now", "2026-11-22T15:30:45Z");
        ok("today", "2026-11-22T00:00:00Z");
        ok("yesterday", "2026-11-21T00:00:00Z");
        ok("Today", "2026-11-22T00:00:00Z");
        ok(" now ", "2026-11-22T15:30:45Z");
    }

    #[test]
    fn dates_and_date_times() {
        ok("2024-01-01", "2024-01-01T00:00:00Z");
        ok("2024-02-29", "2024-02-29T00:00:00Z");
        ok("2024-01-01T06:00:00Z", "2024-01-01T06:00:00Z");
        ok("2024-01-01T06:00:00+02:00", "2024-01-01T04:00:00Z");
        ok("2024-01-01T06:00:00-0530", "2024-01-01T11:30:00Z");
        ok("2024-01-01T06:00:00.250Z", "2024-01-01T06:00:00.250Z");
        ok("2024-01-01 06:00:00+00:00", "2024-01-01T06:00:00Z");
        // No offset means UTC.
        ok("2024-01-01T06:00:00", "2024-01-01T06:00:00Z");
        ok("2024-01-01 06:00:00", "2024-01-01T06:00:00Z");
        ok("2024-01-01T06:00", "2024-01-01T06:00:00Z");
        ok("2024-01-01T06:00:00.5", "2024-01-01T06:00:00.500Z");
    }

    #[test]
    fn durations_are_bounded_and_limits_are_positive() {
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("100y").map(|d| d <= MAX_DURATION), Ok(true));
        for absurd in ["101y", "300000000000y", "18446744073709551615s"] {
            let err = duration(absurd).unwrap_err();
            assert!(
                err.contains("longest duration")
                    || err.contains("too big")
                    || err.contains("overflow"),
                "{absurd}: {err}"
            );
        }
        assert!(
            duration("soon")
                .unwrap_err()
                .contains("expected a duration such as 30s")
        );
        assert!(
            positive_duration("0s")
                .unwrap_err()
                .contains("longer than zero")
        );
        assert_eq!(positive_duration("5s"), Ok(Duration::from_secs(5)));
        assert!(after(MAX_DURATION) > Instant::now());
    }

    #[test]
    fn rejected_values_say_why() {
        for bad in [
            "",
            "  ",
            "yesterdayish",
            "last week",
            "7",
            "-7",
            "7x",
            "-7dd",
            "+7d",
            "d7",
            "2024-13-01",
            "2024-02-30",
            "24-01-01",
            "0024-01-01x",
            "2024-01-01T25:00:00Z",
            "01/02/2024",
            "10000000000y",
            "--7d",
            "-",
            "7d ago",
        ] {
            assert!(resolve(bad, now()).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(resolve("", now()).unwrap_err(), "the value is empty");
        assert!(
            resolve("7x", now())
                .unwrap_err()
                .contains("not a valid duration")
        );
        assert!(
            resolve("10000000000y", now())
                .unwrap_err()
                .contains("too far")
        );
        assert!(resolve("soon", now()).unwrap_err().contains("not a time"));
        assert!(
            resolve("24-01-01", now())
                .unwrap_err()
                .contains("four-digit year")
        );
        for bad in ["2024-02-30", "2024-13-01", "2024-01-01T25:00:00Z"] {
            let err = resolve(bad, now()).unwrap_err();
            assert!(err.contains("not a valid date"), "{bad}: {err}");
        }
    }
}
