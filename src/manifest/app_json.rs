//! `app.json` (Heroku's and Dokku's format), optional at the root of a push:
//! `scripts.dokku.predeploy`/`postdeploy`, `healthchecks.web` (the check a
//! deploy waits on), `formation` (process counts), `cron` (Dokku's list of
//! `{command, schedule}`). Unknown keys are ignored; malformed JSON is an error
//! with its line and column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::formation::MAX_REPLICAS;
use super::procfile::check_schedule;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppJson {
    #[serde(default)]
    pub scripts: Scripts,
    #[serde(default)]
    pub healthchecks: Healthchecks,
    #[serde(default)]
    pub formation: BTreeMap<String, FormationEntry>,
    #[serde(default)]
    pub cron: Vec<CronJob>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scripts {
    #[serde(default)]
    pub dokku: DokkuScripts,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DokkuScripts {
    pub predeploy: Option<String>,
    pub postdeploy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthchecks {
    #[serde(default)]
    pub web: Vec<Healthcheck>,
}

/// One of Dokku's web checks: `GET path` until it answers below 500.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    #[serde(default = "root")]
    pub path: String,
    /// Seconds per attempt.
    pub timeout: Option<u64>,
    pub attempts: Option<u32>,
}

fn root() -> String {
    "/".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormationEntry {
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJob {
    pub command: String,
    pub schedule: String,
}

/// app.json as Dokku reads it: `//` and `/* */` comments and trailing commas
/// are allowed, as people write them in hand-kept files.
fn lenient(text: &str) -> Result<AppJson, serde_json_lenient::Error> {
    let mut de = serde_json_lenient::Deserializer::from_str(text);
    de.set_allow_comments(true);
    de.set_ignore_trailing_commas(true);
    let parsed = AppJson::deserialize(&mut de)?;
    de.end()?;
    Ok(parsed)
}

impl AppJson {
    /// Parses and checks `app.json`; the error says where and what.
    pub fn parse(text: &str) -> Result<AppJson, String> {
        let parsed = lenient(text)
            .map_err(|e| format!("app.json line {} column {}: {e}", e.line(), e.column()))?;
        let mut problems = Vec::new();
        for (i, job) in parsed.cron.iter().enumerate() {
            if let Err(message) = check_schedule(&job.schedule) {
                problems.push(format!("app.json cron[{i}]: {message}"));
            }
            if job.command.trim().is_empty() {
                problems.push(format!("app.json cron[{i}]: the command is empty"));
            }
        }
        for (process, entry) in &parsed.formation {
            if entry.quantity > MAX_REPLICAS {
                problems.push(format!(
                    "app.json formation.{process}.quantity: {} is more than {MAX_REPLICAS}",
                    entry.quantity
                ));
            }
        }
        if let Some(check) = parsed.healthchecks.web.first() {
            if !check.path.starts_with('/') {
                problems.push(format!(
                    "app.json healthchecks.web[0].path: {:?} must start with /",
                    check.path
                ));
            }
        }
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(problems.join("; "))
        }
    }

    /// The web check a deploy waits on: (path, overall timeout in seconds).
    pub fn web_check(&self) -> Option<(String, Option<u64>)> {
        self.healthchecks.web.first().map(|check| {
            let total = match (check.timeout, check.attempts) {
                (Some(timeout), Some(attempts)) => Some(timeout * u64::from(attempts)),
                (Some(timeout), None) => Some(timeout),
                _ => None,
            };
            (check.path.clone(), total)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dokku_app_json() {
        let text = r#"{
            "name": "ignored", "env": {"X": {"value": "1"}},
            "scripts": {"dokku": {"predeploy": "python migrate.py", "postdeploy": "echo done"}},
            "healthchecks": {"web": [{"type": "startup", "path": "/health", "timeout": 5, "attempts": 3}]},
            "formation": {"web": {"quantity": 2}, "worker": {"quantity": 1}},
            "cron": [{"command": "python task.py", "schedule": "@daily"}]
        }"#;
        let app = AppJson::parse(text).expect("parse");
        assert_eq!(
            app.scripts.dokku.predeploy.as_deref(),
            Some("python migrate.py")
        );
        assert_eq!(app.web_check(), Some(("/health".into(), Some(15))));
        assert_eq!(app.formation["web"].quantity, 2);
        assert_eq!(app.cron[0].schedule, "@daily");
        assert_eq!(AppJson::parse("{}").expect("empty"), AppJson::default());
    }

    #[test]
    fn comments_and_trailing_commas_as_dokku_allows() {
        let text = "// deploy settings\n{\n  /* two web */ \"formation\": {\"web\": {\"quantity\": 2,},},\n  \"cron\": [{\"command\": \"echo // not a comment\", \"schedule\": \"@daily\"},], // nightly\n}\n";
        let app = AppJson::parse(text).expect("parse");
        assert_eq!(app.formation["web"].quantity, 2);
        assert_eq!(app.cron[0].command, "echo // not a comment");
        assert!(AppJson::parse("{} trailing").is_err());
    }

    #[test]
    fn errors_say_where() {
        let err = AppJson::parse("{\n  \"formation\": {\n    \"web\": {\"quantity\": -1}\n  }\n}")
            .expect_err("negative");
        assert!(err.starts_with("app.json line 3 column"), "{err}");
        let err = AppJson::parse("{ \"cron\": [ {\"command\": \"x\", ").expect_err("truncated");
        assert!(err.contains("line 1 column"), "{err}");
        let err = AppJson::parse(r#"{"cron": [{"command": "x", "schedule": "61 * * * *"}], "formation": {"web": {"quantity": 99}}}"#)
            .expect_err("bad values");
        assert!(
            err.contains("cron[0]: invalid schedule") && err.contains("formation.web.quantity"),
            "{err}"
        );
    }
}
