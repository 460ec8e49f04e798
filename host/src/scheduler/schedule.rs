//! When a schedule fires: its cron pattern (`croner`) in its timezone
//! (`chrono-tz`), and what its missed ticks get (`catch_up`). Plain
//! functions over times in milliseconds since the epoch; every node's tick
//! loop (`api::ticker`) applies them.
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
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

/// A croner search from a time in a timezone, after or before it.
type Search = fn(
    &croner::Cron,
    &DateTime<chrono_tz::Tz>,
    bool,
) -> Result<DateTime<chrono_tz::Tz>, croner::errors::CronError>;

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
        self.search(at, croner::Cron::find_next_occurrence)
    }

    /// The last tick strictly before `at`.
    fn previous_before(&self, at: Millis) -> Option<Millis> {
        self.search(at, croner::Cron::find_previous_occurrence)
    }

    /// The tick `find` finds from `at` (excluded), read in the timezone.
    fn search(&self, at: Millis, find: Search) -> Option<Millis> {
        let local = Utc
            .timestamp_millis_opt(i64::try_from(at).ok()?)
            .single()?
            .with_timezone(&self.tz);
        let found = find(&self.cron, &local, false).ok()?;
        u64::try_from(found.timestamp_millis()).ok()
    }
}

/// A tick a node sees within this long of its time is on time (a busy
/// node's tick loop may be that late); a tick seen later was missed, and
/// `catch_up` decides whether it fires.
pub const ON_TIME: Millis = 2_000;

/// What a node looking at a schedule at `now` does with the ticks since the
/// last one handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// The ticks to fire, oldest first.
    pub fire: Vec<Millis>,
    /// The newest tick at or before `now`, fired or not: the schedule's
    /// last tick handled from now on.
    pub newest: Option<Millis>,
}

/// The ticks in (`last`, `now`] that fire: every tick on time, and of the
/// missed ones what `catch_up` keeps (`none`: no one; `latest`: the newest;
/// `all`: the newest [`MAX_CATCH_UP`]).
pub fn due_ticks(cron: &Cron, last: Millis, now: Millis, catch_up: CatchUp) -> Due {
    // Ticks are walked forward (the daylight-saving rules hold that way),
    // from no further back than the oldest that could fire.
    let mut from = last;
    let (mut back, mut older) = (now.saturating_add(1), 0);
    while older < MAX_CATCH_UP {
        match cron.previous_before(back) {
            Some(tick) if tick > last => {
                back = tick;
                from = tick - 1;
                older += usize::from(now - tick > ON_TIME);
            }
            _ => break,
        }
    }
    let (mut missed, mut on_time) = (Vec::new(), Vec::new());
    let mut at = from;
    while let Some(next) = cron.next_after(at) {
        if next > now {
            break;
        }
        if now - next <= ON_TIME {
            on_time.push(next);
        } else {
            missed.push(next);
        }
        at = next;
    }
    let newest = on_time.last().or(missed.last()).copied();
    let keep = match catch_up {
        CatchUp::None => 0,
        CatchUp::Latest => 1,
        CatchUp::All => MAX_CATCH_UP,
    };
    let fire = missed.split_off(missed.len().saturating_sub(keep));
    Due {
        fire: fire.into_iter().chain(on_time).collect(),
        newest,
    }
}

/// What happens to a tick's run when the schedule's previous run has not
/// ended (`overlap`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is skipped.
    #[default]
    Skip,
    /// The tick's run starts beside the previous one.
    Allow,
    /// The previous run is cancelled, then the tick's run starts.
    CancelPrevious,
}

/// What a tick does, the schedule's previous run being `previous_running`
/// (not ended) or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickAction {
    Start,
    Skip,
    CancelPreviousThenStart,
}

/// The rule of `overlap`.
pub fn on_tick(overlap: Overlap, previous_running: bool) -> TickAction {
    match (overlap, previous_running) {
        (_, false) | (Overlap::Allow, true) => TickAction::Start,
        (Overlap::Skip, true) => TickAction::Skip,
        (Overlap::CancelPrevious, true) => TickAction::CancelPreviousThenStart,
    }
}

/// The idempotency key of a tick's run: the same on every node, so that a
/// tick starts one run however many nodes fire it.
pub fn tick_key(schedule: &str, tick: Millis) -> String {
    format!("schedule:{schedule}:{}", super::clock::rfc3339(tick))
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
        )
        .fire;
        assert_eq!(spring.len(), 2, "{spring:?}");
        // The skipped hour: at the first time after the gap, 03:00 CEST.
        assert_eq!(spring[0], at("2026-03-29T01:00:00Z"));
        assert_eq!(spring[1], at("2026-03-30T00:30:00Z"));
        let autumn = due_ticks(
            &cron,
            at("2026-10-24T12:00:00Z"),
            at("2026-10-25T12:00:00Z"),
            CatchUp::All,
        )
        .fire;
        assert_eq!(autumn.len(), 1, "{autumn:?}");
        // The repeated hour: at its first occurrence, 02:30 CEST.
        assert_eq!(autumn[0], at("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn missed_ticks_get_what_catch_up_says_and_ticks_on_time_always_fire() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        let (last, now) = (at("2026-12-01T10:00:00Z"), at("2026-12-01T10:00:10.500Z"));
        let on_time = [at("2026-12-01T10:00:09Z"), at("2026-12-01T10:00:10Z")];
        let all = due_ticks(&cron, last, now, CatchUp::All);
        assert_eq!(all.fire.len(), 10);
        assert_eq!(all.newest, Some(at("2026-12-01T10:00:10Z")));
        let latest = due_ticks(&cron, last, now, CatchUp::Latest);
        assert_eq!(
            latest.fire,
            [&[at("2026-12-01T10:00:08Z")][..], &on_time].concat()
        );
        let none = due_ticks(&cron, last, now, CatchUp::None);
        assert_eq!(none.fire, on_time);
        assert_eq!(none.newest, all.newest);
        let long = due_ticks(&cron, last, at("2026-12-01T11:00:00Z"), CatchUp::All);
        assert_eq!(long.fire.len(), MAX_CATCH_UP + 3);
        assert_eq!(*long.fire.last().unwrap(), at("2026-12-01T11:00:00Z"));
        assert_eq!(long.fire[0], at("2026-12-01T10:58:18Z"));
    }

    #[test]
    fn a_daily_tick_missed_by_minutes_fires_only_when_caught_up() {
        let cron = Cron::parse("0 3 * * *", "UTC").unwrap();
        let (last, now) = (at("2026-12-01T02:59:00Z"), at("2026-12-01T03:05:00Z"));
        assert_eq!(
            due_ticks(&cron, last, now, CatchUp::None).fire,
            Vec::<Millis>::new()
        );
        let tick = at("2026-12-01T03:00:00Z");
        assert_eq!(due_ticks(&cron, last, now, CatchUp::Latest).fire, [tick]);
        assert_eq!(due_ticks(&cron, last, now, CatchUp::All).fire, [tick]);
        assert_eq!(
            due_ticks(&cron, last, now, CatchUp::None).newest,
            Some(tick)
        );
        // Nothing due: nothing fires and nothing is handled.
        assert_eq!(due_ticks(&cron, tick, now, CatchUp::All), Due::default());
    }

    #[test]
    fn a_year_of_missed_seconds_costs_a_bounded_walk() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        let started = std::time::Instant::now();
        let due = due_ticks(
            &cron,
            at("2025-12-01T00:00:00Z"),
            at("2026-12-01T00:00:00Z"),
            CatchUp::All,
        );
        assert_eq!(due.fire.len(), MAX_CATCH_UP + 3);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn overlap_decides_a_tick_beside_a_running_previous_run() {
        assert_eq!(on_tick(Overlap::Skip, false), TickAction::Start);
        assert_eq!(on_tick(Overlap::Skip, true), TickAction::Skip);
        assert_eq!(on_tick(Overlap::Allow, true), TickAction::Start);
        assert_eq!(
            on_tick(Overlap::CancelPrevious, true),
            TickAction::CancelPreviousThenStart
        );
        assert_eq!(
            tick_key("nightly", at("2026-12-01T03:00:00Z")),
            "schedule:nightly:2026-12-01T03:00:00.000Z"
        );
    }

    #[test]
    fn a_pattern_that_never_matches_has_no_next_tick_found_quickly() {
        let started = std::time::Instant::now();
        let never = Cron::parse("0 0 30 2 *", "UTC").unwrap();
        assert_eq!(never.next_after(at("2026-12-01T00:00:00Z")), None);
        let leap = Cron::parse("0 0 29 2 *", "UTC").unwrap();
        assert_eq!(
            leap.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
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
