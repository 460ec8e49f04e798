//! When a schedule fires: its cron pattern (`croner`) in its timezone
//! (`chrono-tz`), and what its missed ticks get (`catch_up`). Plain
//! functions over times in milliseconds since the epoch, for the schedules
//! of section 17 (their API and the nodes' tick loop are still to come).
//!
//! A wall-clock time a daylight-saving change skips fires at the first
//! time after the gap; one it repeats fires once, at its first occurrence.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

use super::clock::Millis;

/// Missed ticks a schedule makes up for when `catch_up` is `all`, at most.
pub const MAX_CATCH_UP: usize = 100;

/// A parsed schedule: a cron pattern (5 fields, or 6 with seconds first) in
/// an IANA timezone.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

/// What the ticks a schedule missed (its nodes were down) get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None: missed ticks are skipped.
    None,
    /// The newest missed tick fires once.
    #[default]
    Latest,
    /// Every missed tick fires, the newest [`MAX_CATCH_UP`] at most.
    All,
}

impl Cron {
    /// The pattern in the timezone, or why not.
    pub fn parse(pattern: &str, timezone: &str) -> Result<Self, String> {
        let tz = chrono_tz::Tz::from_str(timezone)
            .map_err(|_| format!("{timezone:?} is not an IANA timezone such as Europe/Berlin"))?;
        let cron = croner::parser::CronParser::new()
            .parse(pattern)
            .map_err(|e| format!("{pattern:?} is not a cron pattern: {e}"))?;
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `at`: the next wall-clock time the
    /// pattern matches in the timezone, as an instant.
    pub fn next_after(&self, at: Millis) -> Option<Millis> {
        let local = Utc
            .timestamp_millis_opt(i64::try_from(at).ok()?)
            .single()?
            .with_timezone(&self.tz);
        let next: DateTime<chrono_tz::Tz> = self.cron.find_next_occurrence(&local, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

/// The ticks to fire when a node looks at `now`, the last fired (or the
/// schedule's creation) being `last`: the ticks in (`last`, `now`] as
/// `catch_up` keeps them. The newest tick is never missed: it fires under
/// every policy.
pub fn due_ticks(cron: &Cron, last: Millis, now: Millis, catch_up: CatchUp) -> Vec<Millis> {
    let mut ticks = Vec::new();
    let mut at = last;
    while let Some(next) = cron.next_after(at) {
        if next > now {
            break;
        }
        ticks.push(next);
        if ticks.len() > MAX_CATCH_UP {
            ticks.remove(0);
        }
        at = next;
    }
    match catch_up {
        CatchUp::All => ticks,
        CatchUp::None | CatchUp::Latest => ticks.pop().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        super::super::clock::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn a_pattern_of_seconds_ticks_every_second() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            cron.next_after(at("2026-12-01T10:00:00.500Z")),
            Some(at("2026-12-01T10:00:01Z"))
        );
        assert_eq!(
            cron.next_after(at("2026-12-01T10:00:01Z")),
            Some(at("2026-12-01T10:00:02Z"))
        );
    }

    #[test]
    fn a_daily_tick_keeps_its_wall_clock_time_across_daylight_saving_changes() {
        let cron = Cron::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // Before the spring change Berlin is UTC+1, after it UTC+2.
        assert_eq!(
            cron.next_after(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            cron.next_after(at("2026-03-29T12:00:00Z")),
            Some(at("2026-03-30T01:00:00Z"))
        );
        // In autumn back to UTC+1.
        assert_eq!(
            cron.next_after(at("2026-10-25T12:00:00Z")),
            Some(at("2026-10-26T02:00:00Z"))
        );
    }

    #[test]
    fn a_wall_clock_time_that_does_not_exist_or_exists_twice_fires_once() {
        // 02:30 does not exist in Berlin on 2026-03-29 and exists twice on 2026-10-25.
        let cron = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let spring = due_ticks(
            &cron,
            at("2026-03-28T12:00:00Z"),
            at("2026-03-30T12:00:00Z"),
            CatchUp::All,
        );
        assert_eq!(spring.len(), 2, "{spring:?}");
        // The skipped hour: at the first time after the gap, 03:00 CEST.
        assert_eq!(spring[0], at("2026-03-29T01:00:00Z"));
        assert_eq!(spring[1], at("2026-03-30T00:30:00Z"));
        let autumn = due_ticks(
            &cron,
            at("2026-10-24T12:00:00Z"),
            at("2026-10-25T12:00:00Z"),
            CatchUp::All,
        );
        assert_eq!(autumn.len(), 1, "{autumn:?}");
        // The repeated hour: at its first occurrence, 02:30 CEST.
        assert_eq!(autumn[0], at("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn missed_ticks_get_what_catch_up_says() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        let (last, now) = (at("2026-12-01T10:00:00Z"), at("2026-12-01T10:00:10Z"));
        assert_eq!(due_ticks(&cron, last, now, CatchUp::All).len(), 10);
        assert_eq!(due_ticks(&cron, last, now, CatchUp::Latest), vec![now]);
        assert_eq!(due_ticks(&cron, last, now, CatchUp::None), vec![now]);
        let long = due_ticks(&cron, last, at("2026-12-01T11:00:00Z"), CatchUp::All);
        assert_eq!(long.len(), MAX_CATCH_UP);
        assert_eq!(*long.last().unwrap(), at("2026-12-01T11:00:00Z"));
    }

    #[test]
    fn bad_patterns_and_timezones_say_why() {
        assert!(
            Cron::parse("61 * * * *", "UTC")
                .unwrap_err()
                .contains("cron pattern")
        );
        assert!(
            Cron::parse("* * * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("timezone")
        );
    }
}
