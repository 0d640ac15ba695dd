//! What a pushed tree says about how to run it: its Procfile and app.json,
//! parsed and checked at receive time (a malformed one rejects the push) and
//! stored with the release, so a rollback runs the processes it ran.

pub mod app_json;
pub mod formation;
pub mod procfile;

use serde::{Deserialize, Serialize};

use app_json::AppJson;
use procfile::Procfile;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub procfile: Procfile,
    pub app_json: AppJson,
}

impl Manifest {
    /// Builds the manifest from the files' contents (`None`: absent). Returns every
    /// problem found, each naming its file and place.
    pub fn from_files(
        procfile: Option<&str>,
        app_json: Option<&str>,
    ) -> Result<Manifest, Vec<String>> {
        let mut problems = Vec::new();
        let procfile = match procfile.map(Procfile::parse) {
            None => Procfile::default(),
            Some(Ok(p)) => p,
            Some(Err(errors)) => {
                problems.extend(errors.iter().map(ToString::to_string));
                Procfile::default()
            }
        };
        let app_json = match app_json.map(AppJson::parse) {
            None => AppJson::default(),
            Some(Ok(a)) => a,
            Some(Err(error)) => {
                problems.push(error);
                AppJson::default()
            }
        };
        if problems.is_empty() {
            Ok(Manifest { procfile, app_json })
        } else {
            Err(problems)
        }
    }

    /// Stored form; a release without one reads as empty.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_stored(stored: &str) -> Manifest {
        serde_json::from_str(stored).unwrap_or_default()
    }

    /// The long-running process types: `web` (always) and the Procfile's workers.
    pub fn process_types(&self) -> Vec<String> {
        let mut types = vec!["web".to_string()];
        types.extend(
            self.procfile
                .processes
                .keys()
                .filter(|t| *t != "web")
                .cloned(),
        );
        types
    }

    /// The command for a process type, from the Procfile (`None`: the image's own).
    pub fn command(&self, process: &str) -> Option<&str> {
        self.procfile.processes.get(process).map(String::as_str)
    }

    /// How many of `process` run when the app has not been scaled: app.json's
    /// formation, else one of each.
    pub fn default_count(&self, process: &str) -> u32 {
        self.app_json
            .formation
            .get(process)
            .map_or(1, |f| f.quantity)
    }

    /// Lines for the push output describing what will run.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, command) in &self.procfile.processes {
            lines.push(format!("{name}: {command}"));
        }
        if let Some(release) = &self.procfile.release {
            lines.push(format!("release: {release}"));
        }
        for (name, cron) in &self.procfile.crons {
            lines.push(format!(
                "{name}: {} {} (scheduled)",
                cron.schedule, cron.command
            ));
        }
        for job in &self.app_json.cron {
            lines.push(format!(
                "app.json cron: {} {} (scheduled)",
                job.schedule, job.command
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_files_collects_every_problem() {
        let ok = Manifest::from_files(
            Some("web: a\nworker: b\n"),
            Some(r#"{"formation": {"worker": {"quantity": 3}}}"#),
        )
        .expect("ok");
        assert_eq!(ok.process_types(), ["web", "worker"]);
        assert_eq!(
            (ok.default_count("web"), ok.default_count("worker")),
            (1, 3)
        );
        assert_eq!(Manifest::from_stored(&ok.to_stored()), ok);
        assert_eq!(Manifest::from_stored(""), Manifest::default());
        let problems = Manifest::from_files(Some("oops\n"), Some("{")).expect_err("bad");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("Procfile line 1")
                && problems[1].starts_with("app.json line 1")
        );
    }
}
