//! Time as gantry stores and shows it: unix milliseconds in the store, UTC
//! `YYYY-MM-DD HH:MM:SS` for people, RFC 3339 from Docker. One place, with
//! chrono, so no part formats or parses dates by hand.

use chrono::{DateTime, Utc};

/// Now, in unix milliseconds (the store's unit).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Now as RFC 3339 UTC, for labels and files other tools read.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A store time (unix milliseconds) as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// A store time (unix milliseconds) as RFC 3339 UTC with nanoseconds, the
/// form Docker stamps log lines with (so the two sort together).
pub fn rfc3339_nanos(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-22T03:55:41.1Z`);
/// `None` for text that is not one, and for times before 1970 (Docker writes
/// `0001-01-01T00:00:00Z` for "never").
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let secs = DateTime::parse_from_rfc3339(text).ok()?.timestamp();
    (secs >= 0).then_some(secs)
}

/// `3d4h`, `5m12s`: how long since `since` (unix seconds).
pub fn format_age(since: i64, now: i64) -> String {
    let secs = (now - since).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_795_316_400_000), "2026-11-22 03:00:00");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn rfc3339_round_trips_with_format_time() {
        let secs = parse_rfc3339("2026-11-22T03:00:00.123456789Z").expect("parse");
        assert_eq!(format_time(secs * 1000), "2026-11-22 03:00:00");
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            None,
            "Docker's zero time"
        );
        assert_eq!(parse_rfc3339("garbage"), None);
        assert_eq!(format_age(100, 100 + 3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(format_age(0, 312), "5m12s");
    }

    #[test]
    fn now_is_after_the_tests_were_written() {
        assert!(now_ms() > 1_795_316_400_000);
    }
}
