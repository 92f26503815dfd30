//! A connection's schedule: an EventBridge Scheduler expression in an IANA time zone, run from a
//! start day to an end day of that zone (five years after the start unless given). Parsed once,
//! so the config check, the trigger's refusal and the next run time follow the same rules.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};

use crate::field_error::FieldError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// An EventBridge Scheduler expression: `rate(1 day)`, `cron(0 2 * * ? *)`,
    /// `at(2027-01-01T02:00:00)`.
    pub expression: String,
    /// IANA time zone, e.g. `Europe/Berlin`: the expression's hours and the dates are of this zone.
    pub timezone: String,
    /// `YYYY-MM-DD`, in the time zone.
    pub start_date: String,
    /// `YYYY-MM-DD`, in the time zone; five years after the start when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
}

/// A schedule whose every part was read: what the trigger and the status view use.
#[derive(Clone, Debug)]
pub struct ParsedSchedule {
    expression: Expression,
    zone: TimeZone,
    start: Date,
    end: Date,
}

#[derive(Clone, Debug)]
enum Expression {
    /// Every interval, counted by EventBridge Scheduler from the schedule's creation.
    Rate(SignedDuration),
    Cron(Box<croner::Cron>),
    /// Once, at this wall-clock time of the zone.
    At(DateTime),
}

/// When a connection runs next by its schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextRun {
    At(Timestamp),
    /// Not known yet, and why (a rate schedule before its first scheduled run).
    Unknown(String),
    /// No scheduled run is left, and why.
    Over(String),
}

const EXPRESSION_FORMS: &str = "use rate(1 day), cron(0 2 * * ? *) (minutes hours day-of-month month day-of-week year) or at(2027-01-01T02:00:00)";

impl Schedule {
    /// Reads every part; each problem names its field.
    pub fn parse(&self) -> Result<ParsedSchedule, Vec<FieldError>> {
        let mut errors = Vec::new();
        let expression = parse_expression(&self.expression)
            .map_err(|problem| errors.push(FieldError::new("schedule.expression", problem)))
            .ok();
        let zone = parse_zone(&self.timezone)
            .map_err(|problem| errors.push(FieldError::new("schedule.timezone", problem)))
            .ok();
        let start = parse_date(&self.start_date)
            .map_err(|problem| errors.push(FieldError::new("schedule.start_date", problem)))
            .ok();
        let end = match (&self.end_date, start) {
            (Some(end), start) => match (parse_date(end), start) {
                (Err(problem), _) => {
                    errors.push(FieldError::new("schedule.end_date", problem));
                    None
                }
                (Ok(end), Some(start)) if end <= start => {
                    errors.push(FieldError::new(
                        "schedule.end_date",
                        format!("{end} is not after start_date {start}"),
                    ));
                    None
                }
                (Ok(end), _) => Some(end),
            },
            (None, Some(start)) => Some(five_years_after(start)),
            (None, None) => None,
        };
        match (expression, zone, start, end) {
            (Some(expression), Some(zone), Some(start), Some(end)) if errors.is_empty() => {
                Ok(ParsedSchedule {
                    expression,
                    zone,
                    start,
                    end,
                })
            }
            _ => Err(errors),
        }
    }
}

impl ParsedSchedule {
    pub fn end_date(&self) -> Date {
        self.end
    }

    pub fn zone_name(&self) -> &str {
        self.zone.iana_name().unwrap_or("UTC")
    }

    /// Why a scheduled run at `now` is refused: before the start day or after the end day, as
    /// days of the schedule's time zone.
    pub fn refuses(&self, now: Timestamp) -> Option<String> {
        let today = now.to_zoned(self.zone.clone()).date();
        if today < self.start {
            return Some(format!(
                "the schedule starts on {} ({}); scheduled runs before it are refused",
                self.start,
                self.zone_name()
            ));
        }
        if today > self.end {
            return Some(format!(
                "the schedule ended on {} ({}); scheduled runs are refused after it",
                self.end,
                self.zone_name()
            ));
        }
        None
    }

    /// The first scheduled run after `now` that the trigger accepts (within the start and end
    /// days, and before the end day's end in UTC, when EventBridge Scheduler's `EndDate` stops
    /// the schedule). A rate schedule counts from its last scheduled run, when there was one.
    pub fn next_run(&self, now: Timestamp, last_scheduled_run: Option<Timestamp>) -> NextRun {
        let after_end = self.end.tomorrow().unwrap_or(self.end);
        let window_start = self.day_start(self.start);
        let window_end = self.day_start(after_end).min(
            after_end
                .to_zoned(TimeZone::UTC)
                .map(|z| z.timestamp())
                .unwrap_or(Timestamp::MAX),
        );
        let from = now.max(window_start);
        let next = match &self.expression {
            Expression::Cron(cron) => match self.next_cron(cron, from, from > now) {
                Some(next) => next,
                None => return NextRun::Over("the cron expression matches no later time".into()),
            },
            Expression::Rate(every) => {
                let Some(anchor) = last_scheduled_run else {
                    return NextRun::Unknown(format!(
                        "a rate schedule fires every {} from its creation; the first scheduled run sets the time",
                        jiff::Span::try_from(*every)
                            .map(|s| format!("{s:#}"))
                            .unwrap_or_default()
                    ));
                };
                let elapsed = from.duration_since(anchor);
                // The anchor fired already: the next is at least one interval after it.
                let periods = if elapsed.is_negative() {
                    1
                } else {
                    elapsed.as_secs() / every.as_secs() + 1
                };
                every
                    .as_secs()
                    .checked_mul(periods)
                    .and_then(|secs| anchor.checked_add(SignedDuration::from_secs(secs)).ok())
                    .unwrap_or(Timestamp::MAX)
            }
            Expression::At(at) => match at.to_zoned(self.zone.clone()) {
                Ok(at) if at.timestamp() > now && at.timestamp() >= window_start => at.timestamp(),
                Ok(at) if at.timestamp() > now => {
                    return NextRun::Over(format!(
                        "its one run, at {}, is before the schedule's start on {}",
                        at.datetime(),
                        self.start
                    ));
                }
                _ => return NextRun::Over(format!("its one run, at {at}, is past")),
            },
        };
        if next >= window_end {
            return NextRun::Over(format!(
                "the schedule ends on {} ({})",
                self.end,
                self.zone_name()
            ));
        }
        NextRun::At(next)
    }

    /// The cron expression's next time as EventBridge Scheduler fires it: a wall-clock time the
    /// spring-forward gap skips does not fire (croner would move it past the gap), and a time the
    /// autumn fold repeats fires once, at its first instant.
    fn next_cron(
        &self,
        cron: &croner::Cron,
        from: Timestamp,
        inclusive: bool,
    ) -> Option<Timestamp> {
        let mut from = from.to_zoned(self.zone.clone());
        let mut inclusive = inclusive;
        // Each pass moves past one skipped or repeated time; a year of them is far more than any
        // zone has.
        for _ in 0..1000 {
            let next = cron.find_next_occurrence(&from, inclusive).ok()?;
            let skipped = !cron.is_time_matching(&next).unwrap_or(false);
            let repeated = matches!(
                self.zone.to_ambiguous_zoned(next.datetime()).offset(),
                jiff::tz::AmbiguousOffset::Fold { before, .. } if next.offset() != before
            );
            if !skipped && !repeated {
                return Some(next.timestamp());
            }
            from = next;
            inclusive = false;
        }
        None
    }

    /// A day's first instant in the schedule's zone.
    fn day_start(&self, day: Date) -> Timestamp {
        day.to_zoned(self.zone.clone())
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MAX)
    }

    /// `at` in the schedule's zone, for people.
    pub fn local(&self, at: Timestamp) -> Zoned {
        at.to_zoned(self.zone.clone())
    }
}

/// Five years after `start`; February 29th ends on February 28th.
fn five_years_after(start: Date) -> Date {
    start.checked_add(5.years()).unwrap_or(Date::MAX)
}

fn parse_date(text: &str) -> Result<Date, String> {
    let shaped = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    match text.parse::<Date>() {
        Ok(date) if shaped => Ok(date),
        _ => Err(format!("'{text}' is not a date; use YYYY-MM-DD")),
    }
}

/// An IANA zone name as EventBridge Scheduler takes it: spelled as the time zone database does.
fn parse_zone(name: &str) -> Result<TimeZone, String> {
    let zone = TimeZone::get(name).map_err(|_| {
        format!(
            "'{name}' is not in the IANA time zone database; use a name like UTC or Europe/Berlin"
        )
    })?;
    match zone.iana_name() {
        Some(canonical) if canonical != name => Err(format!(
            "'{name}' is spelled '{canonical}' in the IANA time zone database; use that"
        )),
        _ => Ok(zone),
    }
}

fn parse_expression(text: &str) -> Result<Expression, String> {
    let text = text.trim();
    let inner = |prefix: &str| {
        text.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
    };
    if let Some(rate) = inner("rate(") {
        parse_rate(rate).map(Expression::Rate)
    } else if let Some(cron) = inner("cron(") {
        parse_cron(cron).map(|cron| Expression::Cron(Box::new(cron)))
    } else if let Some(at) = inner("at(") {
        DateTime::strptime("%Y-%m-%dT%H:%M:%S", at)
            .map(Expression::At)
            .map_err(|_| format!("'{text}': the time is not yyyy-mm-ddThh:mm:ss"))
    } else {
        Err(format!(
            "'{text}' is not a schedule expression; {EXPRESSION_FORMS}"
        ))
    }
    .map_err(|problem| {
        if problem.contains(EXPRESSION_FORMS) {
            problem
        } else {
            format!("{problem}; {EXPRESSION_FORMS}")
        }
    })
}

/// `N minute(s) | hour(s) | day(s)`: singular when N is 1, plural otherwise, as Scheduler asks.
fn parse_rate(text: &str) -> Result<SignedDuration, String> {
    let bad = |why: &str| format!("'rate({text})': {why}");
    let (value, unit) = text
        .trim()
        .split_once(' ')
        .ok_or_else(|| bad("give a number and a unit"))?;
    let value: i64 = value
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| bad("the number must be a whole number of at least 1"))?;
    let (singular, seconds) = match unit.trim_end_matches('s') {
        "minute" => ("minute", 60),
        "hour" => ("hour", 3_600),
        "day" => ("day", 86_400),
        _ => return Err(bad("the unit must be minutes, hours or days")),
    };
    let expected = if value == 1 {
        singular.to_string()
    } else {
        format!("{singular}s")
    };
    if unit != expected {
        return Err(bad(&format!("write rate({value} {expected})")));
    }
    value
        .checked_mul(seconds)
        .map(SignedDuration::from_secs)
        .ok_or_else(|| bad("the interval is too long"))
}

/// EventBridge's six fields (minutes hours day-of-month month day-of-week year), weekdays 1–7 from
/// Sunday, one of the two day fields `?`: Quartz's form without its seconds.
fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "'cron({text})' has {} fields; EventBridge takes six",
            fields.len()
        ));
    }
    if (fields[2] == "?") == (fields[4] == "?") {
        return Err(format!(
            "'cron({text})': exactly one of day-of-month and day-of-week must be '?'"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .year(croner::parser::Year::Required)
        .alternative_weekdays(true)
        // EventBridge writes steps from a number: `0/15` (every 15 from 0).
        .sloppy_ranges(true)
        .build()
        .parse(&format!("0 {text}"))
        .map_err(|e| format!("'cron({text})': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(expression: &str, timezone: &str, start: &str, end: Option<&str>) -> Schedule {
        Schedule {
            expression: expression.into(),
            timezone: timezone.into(),
            start_date: start.into(),
            end_date: end.map(str::to_string),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn every_malformed_part_is_named_with_its_fix() {
        let cases = [
            (
                "daily",
                "UTC",
                "2026-12-01",
                None,
                "`schedule.expression`: 'daily' is not a schedule expression",
            ),
            (
                "rate(1 days)",
                "UTC",
                "2026-12-01",
                None,
                "write rate(1 day)",
            ),
            (
                "rate(2 day)",
                "UTC",
                "2026-12-01",
                None,
                "write rate(2 days)",
            ),
            ("rate(0 days)", "UTC", "2026-12-01", None, "at least 1"),
            (
                "rate(3 weeks)",
                "UTC",
                "2026-12-01",
                None,
                "minutes, hours or days",
            ),
            (
                "cron(0 2 * * *)",
                "UTC",
                "2026-12-01",
                None,
                "has 5 fields; EventBridge takes six",
            ),
            (
                "cron(0 2 * * * *)",
                "UTC",
                "2026-12-01",
                None,
                "exactly one of day-of-month and day-of-week",
            ),
            (
                "cron(0 25 * * ? *)",
                "UTC",
                "2026-12-01",
                None,
                "'cron(0 25 * * ? *)'",
            ),
            (
                "at(2027-01-01 02:00)",
                "UTC",
                "2026-12-01",
                None,
                "not yyyy-mm-ddThh:mm:ss",
            ),
            (
                "rate(1 day)",
                "Mars/Base",
                "2026-12-01",
                None,
                "`schedule.timezone`: 'Mars/Base' is not in the IANA time zone database",
            ),
            (
                "rate(1 day)",
                "Berlin",
                "2026-12-01",
                None,
                "'Berlin' is not in the IANA",
            ),
            (
                "rate(1 day)",
                "europe/berlin",
                "2026-12-01",
                None,
                "spelled 'Europe/Berlin'",
            ),
            (
                "rate(1 day)",
                "UTC",
                "2026-13-01",
                None,
                "`schedule.start_date`: '2026-13-01' is not a date",
            ),
            (
                "rate(1 day)",
                "UTC",
                "2026-1-1",
                None,
                "'2026-1-1' is not a date; use YYYY-MM-DD",
            ),
            (
                "rate(1 day)",
                "UTC",
                "2026-12-01",
                Some("2026-12-01"),
                "`schedule.end_date`: 2026-12-01 is not after start_date",
            ),
        ];
        for (expression, zone, start, end, expected) in cases {
            let problems = schedule(expression, zone, start, end)
                .parse()
                .err()
                .unwrap_or_default();
            let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            assert!(
                text.iter().any(|t| t.contains(expected)),
                "{expression} {zone} {start} {end:?}: {text:?}"
            );
        }
        for (expression, zone) in [
            ("rate(1 day)", "UTC"),
            ("rate(15 minutes)", "America/Los_Angeles"),
            ("cron(0 2 * * ? *)", "Europe/Berlin"),
            ("cron(30 6 ? * MON-FRI *)", "Asia/Kolkata"),
            ("cron(0 0 L * ? *)", "UTC"),
            ("at(2027-01-01T02:00:00)", "Pacific/Auckland"),
        ] {
            assert!(
                schedule(expression, zone, "2026-12-01", None)
                    .parse()
                    .is_ok(),
                "{expression} in {zone} should parse"
            );
        }
    }

    #[test]
    fn the_start_and_end_days_are_days_of_the_schedules_time_zone() {
        let berlin = schedule(
            "cron(0 2 * * ? *)",
            "Europe/Berlin",
            "2026-12-01",
            Some("2027-01-10"),
        )
        .parse()
        .unwrap();
        // 23:30 UTC on November 30th is already December 1st in Berlin.
        assert_eq!(berlin.refuses(at("2026-11-30T23:30:00Z")), None);
        let early = berlin.refuses(at("2026-11-30T22:30:00Z")).unwrap();
        assert!(
            early.contains("starts on 2026-12-01 (Europe/Berlin)"),
            "{early}"
        );
        assert_eq!(berlin.refuses(at("2027-01-10T22:30:00Z")), None);
        let late = berlin.refuses(at("2027-01-10T23:30:00Z")).unwrap();
        assert!(late.contains("ended on 2027-01-10"), "{late}");
    }

    #[test]
    fn schedules_end_five_years_after_their_start_by_default() {
        let end = |start: &str| {
            schedule("rate(1 day)", "UTC", start, None)
                .parse()
                .unwrap()
                .end_date()
                .to_string()
        };
        assert_eq!(end("2026-02-28"), "2031-02-28");
        assert_eq!(end("2028-02-29"), "2033-02-28");
    }

    #[test]
    fn the_next_run_is_the_expressions_next_time_within_the_schedules_days() {
        let nightly = schedule(
            "cron(0 2 * * ? *)",
            "Europe/Berlin",
            "2026-12-01",
            Some("2026-12-31"),
        )
        .parse()
        .unwrap();
        // 02:00 in Berlin is 01:00 UTC in winter.
        assert_eq!(
            nightly.next_run(at("2026-12-02T01:30:00Z"), None),
            NextRun::At(at("2026-12-03T01:00:00Z"))
        );
        // Before the start day: the first run of the start day.
        assert_eq!(
            nightly.next_run(at("2026-11-01T12:00:00Z"), None),
            NextRun::At(at("2026-12-01T01:00:00Z"))
        );
        assert!(matches!(
            nightly.next_run(at("2026-12-31T01:30:00Z"), None),
            NextRun::Over(why) if why.contains("ends on 2026-12-31")
        ));
        let weekdays = schedule("cron(30 6 ? * MON-FRI *)", "UTC", "2026-12-01", None)
            .parse()
            .unwrap();
        // Friday 2026-12-04 after 06:30: the next is Monday the 7th (weekdays count from Sunday = 1).
        assert_eq!(
            weekdays.next_run(at("2026-12-04T07:00:00Z"), None),
            NextRun::At(at("2026-12-07T06:30:00Z"))
        );

        let hourly = schedule("rate(6 hours)", "UTC", "2026-12-01", None)
            .parse()
            .unwrap();
        assert!(matches!(
            hourly.next_run(at("2026-12-02T00:00:00Z"), None),
            NextRun::Unknown(why) if why.contains("first scheduled run")
        ));
        assert_eq!(
            hourly.next_run(at("2026-12-02T13:00:00Z"), Some(at("2026-12-02T02:15:00Z"))),
            NextRun::At(at("2026-12-02T14:15:00Z"))
        );

        let once = schedule(
            "at(2026-12-24T18:00:00)",
            "America/New_York",
            "2026-12-01",
            None,
        )
        .parse()
        .unwrap();
        assert_eq!(
            once.next_run(at("2026-12-02T00:00:00Z"), None),
            NextRun::At(at("2026-12-24T23:00:00Z"))
        );
        assert!(matches!(
            once.next_run(at("2026-12-25T00:00:00Z"), None),
            NextRun::Over(_)
        ));
    }

    #[test]
    fn daylight_saving_changes_are_followed_as_eventbridge_scheduler_follows_them() {
        let berlin = |expression: &str| {
            schedule(expression, "Europe/Berlin", "2027-01-01", None)
                .parse()
                .unwrap()
        };
        // 2027-03-28: 02:00 jumps to 03:00, so 02:30 does not exist that day and does not fire.
        assert_eq!(
            berlin("cron(30 2 * * ? *)").next_run(at("2027-03-27T12:00:00Z"), None),
            NextRun::At(at("2027-03-29T00:30:00Z"))
        );
        // 2027-10-31: 02:00–03:00 happens twice; a run in it fires once, at the first.
        let every_quarter = berlin("cron(0/15 2 * * ? *)");
        assert_eq!(
            every_quarter.next_run(at("2027-10-31T00:50:00Z"), None),
            NextRun::At(at("2027-11-01T01:00:00Z")),
            "02:00 CET after 02:45 CEST is the repeated hour: the next run is the next day's"
        );
        // Summer and winter time keep 02:00 local.
        let nightly = berlin("cron(0 2 * * ? *)");
        assert_eq!(
            nightly.next_run(at("2027-07-01T12:00:00Z"), None),
            NextRun::At(at("2027-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn west_of_utc_the_last_run_is_the_last_before_the_schedulers_end_date() {
        // Scheduler's EndDate is the end day's end in UTC (16:59 in Los Angeles): a run at 20:00 on
        // the end day would not fire.
        let evening = schedule(
            "cron(0 20 * * ? *)",
            "America/Los_Angeles",
            "2026-12-01",
            Some("2026-12-20"),
        )
        .parse()
        .unwrap();
        assert_eq!(
            evening.next_run(at("2026-12-19T12:00:00Z"), None),
            NextRun::At(at("2026-12-20T04:00:00Z"))
        );
        assert!(matches!(
            evening.next_run(at("2026-12-20T05:00:00Z"), None),
            NextRun::Over(_)
        ));
    }
}
