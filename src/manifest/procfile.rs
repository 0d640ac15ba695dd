//! The Procfile (Heroku's grammar): `name: command` lines. `web` is routed and
//! gets `PORT`; `release` runs once per deploy before any process switches; any
//! type whose name starts with `cron` and whose command starts with a schedule
//! is scheduled (Piku-compatible: `cron1: */5 * * * * python task.py`), with
//! full 5-field cron syntax (ranges, lists, steps, names) or `@hourly`/`@daily`/
//! `@weekly`/`@monthly`/`@yearly`, validated with croner. Every other type,
//! `cron: python3 -u worker.py` included (as Dokku reads it), is a worker.

use std::collections::BTreeMap;

use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

/// One problem, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcfileError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ProcfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Procfile line {}: {}", self.line, self.message)
    }
}

/// A scheduled process: when, and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronEntry {
    pub schedule: String,
    pub command: String,
}

/// A parsed Procfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Procfile {
    /// Long-running process types (`web` and workers) and their commands.
    pub processes: BTreeMap<String, String>,
    /// The release-phase command, if any.
    pub release: Option<String>,
    /// Scheduled types (`cron*`).
    pub crons: BTreeMap<String, CronEntry>,
}

/// Checks a 5-field cron schedule or an `@nickname`.
pub fn check_schedule(schedule: &str) -> Result<(), String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .map(|_| ())
        .map_err(|e| format!("invalid schedule {schedule:?}: {e}"))
}

impl Procfile {
    /// Parses a Procfile, reporting every malformed line.
    pub fn parse(text: &str) -> Result<Procfile, Vec<ProcfileError>> {
        let mut procfile = Procfile::default();
        let mut errors = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fail = |message: String| errors.push(ProcfileError { line, message });
            let Some((name, command)) = trimmed.split_once(':') else {
                fail(format!("expected `name: command`, got {trimmed:?}"));
                continue;
            };
            let (name, command) = (name.trim(), command.trim());
            if !valid_name(name) {
                fail(format!(
                    "invalid process type {name:?}: use letters, digits, '_' and '-' (up to 30)"
                ));
                continue;
            }
            if !seen.insert(name.to_owned()) {
                fail(format!("process type {name:?} is defined twice"));
                continue;
            }
            if command.is_empty() {
                fail(format!("process type {name:?} has no command"));
                continue;
            }
            if name == "release" {
                procfile.release = Some(command.to_owned());
            } else if name.starts_with("cron") && looks_scheduled(command) {
                match split_schedule(command) {
                    Ok((schedule, command)) => {
                        procfile
                            .crons
                            .insert(name.to_owned(), CronEntry { schedule, command });
                    }
                    Err(message) => fail(message),
                }
            } else {
                procfile
                    .processes
                    .insert(name.to_owned(), command.to_owned());
            }
        }
        if errors.is_empty() {
            Ok(procfile)
        } else {
            Err(errors)
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `name` may be a long-running process type (not `release`): for
/// process types a buildpack declares.
pub fn is_process_name(name: &str) -> bool {
    valid_name(name) && name != "release"
}

/// Whether a `cron*` line's command starts with a schedule, as Dokku reads
/// it: an `@macro`, or a first word made of cron field characters (`*/5`,
/// `0`, `MON-FRI`). `cron: python3 -u worker.py` is a worker named cron.
fn looks_scheduled(command: &str) -> bool {
    let Some(first) = command.split_whitespace().next() else {
        return false;
    };
    if first.starts_with('@') {
        return true;
    }
    const NAMES: [&str; 19] = [
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC", "MON",
        "TUE", "WED", "THU", "FRI", "SAT", "SUN",
    ];
    first.split([',', '-', '/']).all(|part| {
        part == "*"
            || part == "?"
            || (!part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
            || NAMES.contains(&part.to_ascii_uppercase().as_str())
    })
}

/// `*/5 * * * * cmd args` → (`*/5 * * * *`, `cmd args`); `@daily cmd` likewise.
fn split_schedule(text: &str) -> Result<(String, String), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let fields = if words.first().is_some_and(|w| w.starts_with('@')) {
        1
    } else {
        5
    };
    if words.len() <= fields {
        return Err(format!(
            "a cron process needs a schedule and a command, e.g. `*/5 * * * * python task.py` (got {text:?})"
        ));
    }
    let schedule = words[..fields].join(" ");
    check_schedule(&schedule)?;
    Ok((schedule, words[fields..].join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_workers_release_and_crons() {
        let text = "# processes\nweb: python app.py --port $PORT\nworker:   python worker.py\n\n\
                    release: python migrate.py\ncron1: */5 * * * * python task.py\n\
                    cron-nightly: @daily ./backup.sh --full\ncronweek: 0 3 * * MON-FRI,SUN echo hi\n";
        let p = Procfile::parse(text).expect("parse");
        assert_eq!(p.processes["web"], "python app.py --port $PORT");
        assert_eq!(p.processes["worker"], "python worker.py");
        assert_eq!(p.release.as_deref(), Some("python migrate.py"));
        assert_eq!(
            p.crons["cron1"],
            CronEntry {
                schedule: "*/5 * * * *".into(),
                command: "python task.py".into()
            }
        );
        assert_eq!(p.crons["cron-nightly"].schedule, "@daily");
        assert_eq!(p.crons["cron-nightly"].command, "./backup.sh --full");
        assert_eq!(p.crons["cronweek"].schedule, "0 3 * * MON-FRI,SUN");
        assert!(!p.processes.contains_key("release") && !p.processes.contains_key("cron1"));
    }

    #[test]
    fn a_cron_type_without_a_schedule_is_a_worker() {
        let p = Procfile::parse(
            "cron: python3 -u worker.py\ncronjob: ./run-forever\ncron2: 0 3 * * * ./nightly\n",
        )
        .expect("parse");
        assert_eq!(p.processes["cron"], "python3 -u worker.py");
        assert_eq!(p.processes["cronjob"], "./run-forever");
        assert_eq!(p.crons["cron2"].schedule, "0 3 * * *");
        assert!(is_process_name("cron"));
        assert!(
            !looks_scheduled("python3 x") && looks_scheduled("MON-FRI") && looks_scheduled("*/5")
        );
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let text = "web: ok\nno colon here\nweb: again\nbad name!: x\nworker:\ncron1: 61 * * * * x\ncron2: * * * *\ncron3: @sometimes x\n";
        let errors = Procfile::parse(text).expect_err("bad");
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 8], "{errors:?}");
        assert!(errors[0]
            .to_string()
            .starts_with("Procfile line 2: expected `name: command`"));
        assert!(errors[1].message.contains("defined twice"));
        assert!(errors[3].message.contains("has no command"));
        assert!(
            errors[4]
                .message
                .contains("invalid schedule \"61 * * * *\""),
            "{}",
            errors[4].message
        );
        assert!(
            errors[5].message.contains("needs a schedule and a command"),
            "{}",
            errors[5].message
        );
    }

    #[test]
    fn schedules_follow_cron() {
        for good in [
            "*/5 * * * *",
            "0 0 1 1 *",
            "@hourly",
            "@weekly",
            "@monthly",
            "15-45/10 8-18 * JAN-MAR MON",
        ] {
            assert!(check_schedule(good).is_ok(), "{good}");
        }
        for bad in ["* * * * * *", "60 * * * *", "@never", "", "a b c d e"] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
    }
}
