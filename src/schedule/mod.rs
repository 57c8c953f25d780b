//! When a `[[schedule]]` entry fires, and what `lorch tick` owes it now (docs/schedules.md):
//! pure functions of the entry, what was last handled and the current instant, so catch-up and
//! DST are tested without a clock.
//!
//! Fire times come from croner in the entry's time zone, with DST handled as Vixie cron does
//! (docs/schedules.md): an entry whose minute and hour fields have no `*` runs at wall-clock
//! times, so a local time that happens twice (fall-back) fires once, at its first occurrence,
//! and one that does not exist (spring-forward) fires at the change; an entry with a `*` in
//! either follows elapsed time, firing at every instant that shows a matching local time.

pub mod install;
pub mod tick;

use std::time::Duration;

use chrono::{
    DateTime, LocalResult, NaiveDateTime, Offset as _, TimeZone as _, Timelike as _, Utc,
};
use chrono_tz::Tz;
use croner::{Cron, Direction};

use crate::config::{self, CatchUp, Schedule, Target};

/// How far back missed fire times are looked for when the entry does not say.
pub const DEFAULT_MAX_CATCH_UP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How old a fire time may be and still be run by a `skip` entry: a `tick` every minute from
/// cron, a little late, still runs it.
pub const SKIP_GRACE: Duration = Duration::from_secs(5 * 60);

/// The most fire times one `tick` looks at for an entry (a `* * * * *` entry asleep for a
/// week has 10,080).
const MAX_FIRES: usize = 100_000;

/// A schedule entry ready to compute with.
pub struct Entry<'a> {
    pub schedule: &'a Schedule,
    cron: &'a Cron,
    pub zone: Tz,
    /// Fires at wall-clock times (no `*` in the minute or hour field), not elapsed time.
    fixed: bool,
}

/// More than any change of a zone's UTC offset (DST moves clocks by at most 2 hours).
const LARGEST_SHIFT: chrono::Duration = chrono::Duration::hours(3);

/// What `tick` does for an entry now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The fire times missed since the last one handled (within `max_catch_up`), oldest first.
    pub missed: Vec<DateTime<Utc>>,
    /// The fire times to run, oldest first: each run's window ends at its fire time.
    pub run: Vec<DateTime<Utc>>,
}

impl<'a> Entry<'a> {
    /// The entry, with the cron expression and time zone parsed when the file was read.
    pub fn new(schedule: &'a Schedule) -> Entry<'a> {
        let (cron, zone) = (&schedule.parsed.0, schedule.parsed.1);
        let fields: Vec<&str> = config::cron_fields(schedule.cron.get_ref())
            .split_whitespace()
            .collect();
        let fixed = fields.iter().take(2).all(|f| !f.contains('*'));
        Entry {
            schedule,
            cron,
            zone,
            fixed,
        }
    }

    /// What identifies the entry's progress: its job (or `pipeline:NAME`), account, cron
    /// expression and zone. An entry whose expression changes starts afresh.
    pub fn key(&self) -> String {
        let s = self.schedule;
        let target = match &s.target {
            Target::Job(id) => id.get_ref().clone(),
            Target::Pipeline(name) => format!("pipeline:{}", name.get_ref()),
        };
        format!(
            "{} {} {} {}",
            target,
            s.options.account.as_deref().unwrap_or("-"),
            s.cron.get_ref().trim(),
            self.zone.name()
        )
    }

    /// The first fire time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(t, Direction::Forward, false)
    }

    /// The last fire time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(t, Direction::Backward, true)
    }

    /// The fire time before `fire`: where the window of a first run starts.
    pub fn previous(&self, fire: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(fire, Direction::Backward, false)
    }

    /// The nearest fire time from `t` in `direction`, in the entry's zone.
    fn find(
        &self,
        t: DateTime<Utc>,
        direction: Direction,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        if self.fixed {
            return self.find_fixed(t, direction, inclusive);
        }
        let local = t.with_timezone(&self.zone);
        let found = match direction {
            Direction::Forward => self.cron.find_next_occurrence(&local, inclusive),
            Direction::Backward => self.cron.find_previous_occurrence(&local, inclusive),
        };
        found.ok().map(|f| f.with_timezone(&Utc))
    }

    /// [`Entry::find`] for a fixed-time entry: walks the matching wall-clock times (croner in
    /// UTC, where no clock changes) from near `t`'s own, and takes the first whose instant
    /// ([`Entry::instant`], which never goes back as wall time goes on) lies past `t`. The walk
    /// starts [`LARGEST_SHIFT`] back only when the offset changes near `t`.
    fn find_fixed(
        &self,
        t: DateTime<Utc>,
        direction: Direction,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        let offset = |at: DateTime<Utc>| self.zone.offset_from_utc_datetime(&at.naive_utc()).fix();
        let steady =
            offset(t - LARGEST_SHIFT) == offset(t) && offset(t) == offset(t + LARGEST_SHIFT);
        let margin = match steady {
            true => chrono::Duration::seconds(1),
            false => LARGEST_SHIFT,
        };
        let local = t.with_timezone(&self.zone).naive_local();
        let mut wall = match direction {
            Direction::Forward => local - margin,
            Direction::Backward => local + margin,
        };
        let past = |at: DateTime<Utc>| match direction {
            Direction::Forward => at > t || (inclusive && at == t),
            Direction::Backward => at < t || (inclusive && at == t),
        };
        // A few steps: only the matches within the margin come before the first past `t`
        // (bounded anyway, as croner's own searches are).
        for _ in 0..100_000 {
            let from = wall.and_utc();
            let found = match direction {
                Direction::Forward => self.cron.find_next_occurrence(&from, false),
                Direction::Backward => self.cron.find_previous_occurrence(&from, false),
            };
            wall = found.ok()?.naive_utc();
            let at = self.instant(wall);
            if past(at) {
                return Some(at);
            }
        }
        None
    }

    /// When a fixed-time entry fires for the wall-clock time `wall`: the first of two instants
    /// that show it, or the change itself when the clock skips it.
    fn instant(&self, wall: NaiveDateTime) -> DateTime<Utc> {
        match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
            LocalResult::None => {
                // The first wall time after the gap, to the minute (every zone changes on one);
                // a gap is hours long at most (a day, once, for Samoa in 2011).
                let mut after = wall.with_second(0).unwrap_or(wall);
                for _ in 0..48 * 60 {
                    after += chrono::Duration::minutes(1);
                    if let Some(at) = self.zone.from_local_datetime(&after).earliest() {
                        return at.with_timezone(&Utc);
                    }
                }
                wall.and_utc()
            }
        }
    }

    fn max_catch_up(&self) -> Duration {
        config::duration(&self.schedule.max_catch_up).unwrap_or(DEFAULT_MAX_CATCH_UP)
    }

    /// What is owed at `now`, given the last fire time handled (`None`: a new entry, owed its
    /// latest fire time, as `latest` would).
    pub fn due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Due {
        let horizon = now - chrono::Duration::from_std(self.max_catch_up()).unwrap_or_default();
        let missed: Vec<DateTime<Utc>> = match last {
            None => self.last_at_or_before(now).into_iter().collect(),
            Some(last) => {
                let mut fires = Vec::new();
                let mut at = last.max(horizon - chrono::Duration::microseconds(1));
                while let Some(next) = self.next_after(at) {
                    if next > now || fires.len() == MAX_FIRES {
                        break;
                    }
                    fires.push(next);
                    at = next;
                }
                fires
            }
        };
        let missed: Vec<_> = missed.into_iter().filter(|f| *f >= horizon).collect();
        let run = match self.schedule.catch_up {
            CatchUp::All => missed.clone(),
            CatchUp::Latest => missed.last().copied().into_iter().collect(),
            CatchUp::Skip => missed
                .last()
                .copied()
                .filter(|f| (now - *f).to_std().unwrap_or_default() <= SKIP_GRACE)
                .into_iter()
                .collect(),
        };
        Due { missed, run }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn schedule(toml: &str) -> Schedule {
        let config = config::Config::parse(Path::new("t.toml"), toml.to_owned()).unwrap();
        config.schedules[0].clone()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn daily(catch_up: &str) -> Schedule {
        schedule(&format!(
            "[[schedule]]\njob = \"a/b\"\ncron = \"0 6 * * *\"\ncatch_up = \"{catch_up}\"\n"
        ))
    }

    #[test]
    fn three_missed_days_are_run_all_latest_or_not_at_all() {
        let last = Some(at("2026-11-01T06:00:00Z"));
        let now = at("2026-11-04T07:00:00Z");
        let days = [
            at("2026-11-02T06:00:00Z"),
            at("2026-11-03T06:00:00Z"),
            at("2026-11-04T06:00:00Z"),
        ];
        let all = daily("all");
        let due = Entry::new(&all).due(last, now);
        assert_eq!(
            (due.missed.as_slice(), due.run.as_slice()),
            (&days[..], &days[..])
        );
        let latest = daily("latest");
        assert_eq!(Entry::new(&latest).due(last, now).run, [days[2]]);
        let skip = daily("skip");
        let entry = Entry::new(&skip);
        assert!(entry.due(last, now).run.is_empty());
        assert_eq!(entry.next_after(now), Some(at("2026-11-05T06:00:00Z")));
        // On time (within the grace), skip runs it.
        assert_eq!(entry.due(last, at("2026-11-02T06:01:00Z")).run, [days[0]]);
        // Nothing is owed between fire times; a new entry is owed its latest one.
        assert!(entry.due(Some(days[2]), now).missed.is_empty());
        assert_eq!(Entry::new(&all).due(None, now).run, [days[2]]);
    }

    #[test]
    fn missed_fire_times_older_than_max_catch_up_are_dropped() {
        let entry = schedule(
            "[[schedule]]\njob = \"a/b\"\ncron = \"0 6 * * *\"\ncatch_up = \"all\"\nmax_catch_up = \"2d\"\n",
        );
        let due =
            Entry::new(&entry).due(Some(at("2026-10-01T06:00:00Z")), at("2026-11-04T07:00:00Z"));
        assert_eq!(
            due.run,
            [at("2026-11-03T06:00:00Z"), at("2026-11-04T06:00:00Z")]
        );
    }

    #[test]
    fn berlin_at_2_30_fires_once_on_both_dst_days() {
        let entry = schedule(
            "[[schedule]]\njob = \"a/b\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\ncatch_up = \"all\"\n",
        );
        let entry = Entry::new(&entry);
        // Spring forward, 2026-03-29: 02:00 jumps to 03:00; 02:30 does not exist and fires
        // once, at the next valid instant (03:00 CEST = 01:00Z).
        let spring = entry.due(Some(at("2026-03-28T01:30:00Z")), at("2026-03-30T12:00:00Z"));
        assert_eq!(
            spring.run,
            [at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]
        );
        // Fall back, 2026-10-25: 02:30 happens twice (CEST, then CET); it fires once, first.
        let fall = entry.due(Some(at("2026-10-24T00:30:00Z")), at("2026-10-26T12:00:00Z"));
        assert_eq!(
            fall.run,
            [at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]
        );
    }

    /// The fire times of `cron` in New York from `from` (excluded) to `to`, as `tick` runs them.
    fn fires_in_new_york(cron: &str, from: &str, to: &str) -> Vec<DateTime<Utc>> {
        let entry = schedule(&format!(
            "[[schedule]]\njob = \"a/b\"\ncron = \"{cron}\"\ntimezone = \"America/New_York\"\ncatch_up = \"all\"\n"
        ));
        let fires = Entry::new(&entry).due(Some(at(from)), at(to)).run;
        // Walking back gives the same fire times.
        let entry = Entry::new(&entry);
        let mut back = Vec::new();
        let mut t = at(to);
        while let Some(f) = entry.last_at_or_before(t).filter(|f| *f > at(from)) {
            back.push(f);
            t = f - chrono::Duration::seconds(1);
        }
        back.reverse();
        assert_eq!(back, fires, "{cron}: backward and forward disagree");
        fires
    }

    fn ats(texts: &[&str]) -> Vec<DateTime<Utc>> {
        texts.iter().map(|t| at(t)).collect()
    }

    /// Vixie cron's rules (docs/schedules.md): fixed hours fire once per local time, at its
    /// first occurrence, on the fall-back day (2026-11-01, 01:00-02:00 happens twice).
    #[test]
    fn a_fixed_hour_fires_once_per_local_time_when_the_clock_goes_back() {
        let fires = fires_in_new_york(
            "0,30 1 * * *",
            "2026-10-31T12:00:00Z",
            "2026-11-02T12:00:00Z",
        );
        assert_eq!(
            fires,
            ats(&[
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT; not again in EST
                "2026-11-02T06:00:00Z", // 01:00 EST
                "2026-11-02T06:30:00Z",
            ])
        );
    }

    /// A skipped local time fires at the change (2026-03-08, 02:00 EST becomes 03:00 EDT): once,
    /// for both 02:00 and 02:30.
    #[test]
    fn a_fixed_hour_skipped_by_the_clock_fires_at_the_change() {
        let fires = fires_in_new_york(
            "0,30 2 * * *",
            "2026-03-07T12:00:00Z",
            "2026-03-09T12:00:00Z",
        );
        assert_eq!(
            fires,
            ats(&[
                "2026-03-08T07:00:00Z", // the change: 03:00 EDT
                "2026-03-09T06:00:00Z", // 02:00 EDT
                "2026-03-09T06:30:00Z",
            ])
        );
    }

    /// A `*` in the minute or hour field follows elapsed time: every instant showing a matching
    /// local time fires, and a local time that does not exist does not.
    #[test]
    fn a_wildcard_entry_follows_elapsed_time_across_both_changes() {
        let fall = fires_in_new_york("30 * * * *", "2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z");
        assert_eq!(
            fall,
            ats(&[
                "2026-11-01T04:30:00Z", // 00:30 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:30:00Z", // 02:30 EST
            ])
        );
        let spring =
            fires_in_new_york("30 * * * *", "2026-03-08T05:00:00Z", "2026-03-08T08:00:00Z");
        assert_eq!(
            spring,
            ats(&[
                "2026-03-08T05:30:00Z", // 00:30 EST
                "2026-03-08T06:30:00Z", // 01:30 EST; 02:30 does not exist
                "2026-03-08T07:30:00Z", // 03:30 EDT
            ])
        );
        let minutes = fires_in_new_york(
            "*/30 1 * * *",
            "2026-11-01T04:00:00Z",
            "2026-11-01T08:00:00Z",
        );
        assert_eq!(minutes.len(), 4, "{minutes:?}");
    }
}
