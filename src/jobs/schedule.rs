//! Cron schedules: 5 fields, or 6 with seconds first, or `@daily` and its kin.

use chrono::{DateTime, Local};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The first time `schedule` fires strictly after `after`. Host jobs may add
/// a leading seconds field (`*/10 * * * * *`); Procfile schedules cannot.
pub fn next_after(schedule: &str, after: &DateTime<Local>) -> Option<DateTime<Local>> {
    parse(schedule)?.find_next_occurrence(after, false).ok()
}

pub fn parse(schedule: &str) -> Option<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .ok()
}
