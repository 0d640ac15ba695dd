//! What jobs exist: host jobs from `$GANTRY_HOME/jobs` and app jobs from the
//! `cron` entries of each app's live release. Read afresh whenever needed, so
//! an edited `.toml` or a new release takes effect without a reload step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::context::Gantry;
use crate::manifest::Manifest;
use crate::names::AppName;

/// What a run does when a run of the same job is still going (as Dokku's cron).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrency {
    /// Run side by side.
    #[default]
    Allow,
    /// Skip the new run (recorded as cancelled, with the reason).
    Forbid,
    /// Cancel the running one, then run.
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// An executable on the host (`NAME.run`), or inside a container of
    /// `image` when the job names one.
    Host {
        script: PathBuf,
        image: Option<String>,
        /// On a swarm: run on a node with these labels, through the
        /// cluster's work queue.
        requires: crate::config::Requires,
    },
    /// A command in a one-off container of the app's live release.
    AppCron { app: AppName, command: String },
    /// gantry's own upkeep: pruning old runs, their logs and artifacts.
    PruneRuns,
    /// gantry's own upkeep that a part above jobs does (`context.upkeep`),
    /// by job name.
    Upkeep(&'static str),
    /// An app's job that a part above jobs does (`context.app_upkeep`), by
    /// the doer's name.
    AppUpkeep { doer: &'static str, app: AppName },
}

/// The built-in job that applies run retention (`runs_keep`, `runs_keep_days`).
pub const PRUNE_RUNS: &str = "gantry.prune-runs";

fn builtin_jobs(gantry: &Gantry) -> Vec<JobDef> {
    let upkeep = |name: &str, kind: JobKind, schedule: &str, timeout: u64, critical: bool| JobDef {
        name: name.to_owned(),
        kind,
        schedule: Some(schedule.to_owned()),
        after: Vec::new(),
        timeout: Some(Duration::from_secs(timeout)),
        concurrency: Concurrency::Forbid,
        critical,
        grace: DEFAULT_GRACE,
        env: BTreeMap::new(),
        notify: Vec::new(),
        run_missed: true,
        retry_interrupted: true,
    };
    let mut jobs = vec![upkeep(
        PRUNE_RUNS,
        JobKind::PruneRuns,
        "@daily",
        3600,
        false,
    )];
    for work in &gantry.upkeep {
        if work.enabled(&gantry.config) {
            jobs.push(upkeep(
                work.name(),
                JobKind::Upkeep(work.name()),
                work.schedule(),
                work.timeout().as_secs(),
                work.critical(&gantry.config),
            ));
        }
    }
    jobs
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDef {
    pub name: String,
    pub kind: JobKind,
    pub schedule: Option<String>,
    /// Jobs whose success starts this one.
    pub after: Vec<String>,
    pub timeout: Option<Duration>,
    pub concurrency: Concurrency,
    pub critical: bool,
    /// How late a critical job's success may be before `missed` is sent.
    pub grace: Duration,
    pub env: BTreeMap<String, String>,
    /// This job's own alert targets (besides gantry.toml's).
    pub notify: Vec<crate::config::NotifyTarget>,
    /// Whether a schedule missed while gantry was down runs once on start.
    pub run_missed: bool,
    /// Whether a run interrupted by gantry stopping is run again on start.
    pub retry_interrupted: bool,
}

/// What a schedule missed while gantry was down does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Missed {
    /// One run on start, never one per missed time.
    #[default]
    RunOnce,
    Skip,
}

/// Default lateness allowed a critical job before it counts as missed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// `NAME.toml` beside `NAME.run`; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostJobFile {
    schedule: Option<String>,
    #[serde(default)]
    after: Vec<String>,
    /// Seconds.
    timeout: Option<u64>,
    #[serde(default)]
    concurrency: Concurrency,
    #[serde(default)]
    critical: bool,
    /// Seconds.
    grace: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    notify: Vec<crate::config::NotifyTarget>,
    /// Run the script in a container of this image instead of on the host.
    image: Option<String>,
    /// `run-once` (default) or `skip`.
    #[serde(default)]
    missed: Missed,
    /// Run again a run that gantry stopping interrupted.
    #[serde(default)]
    retry_interrupted: bool,
    /// On a swarm: the node labels the job needs (`["gpu=1"]`).
    #[serde(default)]
    requires: crate::config::Requires,
}

/// A host job that cannot be read: left out, and shown as broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The job's name (its script's name without `.run`).
    pub name: String,
    /// The file and what is wrong with it.
    pub problem: String,
}

/// The host jobs in `dir`; a job whose `.toml` is broken is reported in the
/// returned problems and left out, not guessed at.
pub fn host_jobs(dir: &Path) -> (Vec<JobDef>, Vec<Broken>) {
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (jobs, problems);
    };
    let mut scripts: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "run"))
        .collect();
    scripts.sort();
    for script in scripts {
        let Some(name) = script
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let broken = |problem: String| Broken {
            name: name.clone(),
            problem,
        };
        if !valid_job_name(&name) {
            problems.push(broken(format!(
                "{}: job names use letters, digits, '-', '_' and '.'",
                script.display()
            )));
            continue;
        }
        let toml_path = script.with_extension("toml");
        let file = match std::fs::read_to_string(&toml_path) {
            Ok(text) => match toml::from_str::<HostJobFile>(&text) {
                Ok(file) => file,
                Err(err) => {
                    problems.push(broken(format!(
                        "{}: {}",
                        toml_path.display(),
                        err.message().trim()
                    )));
                    continue;
                }
            },
            Err(_) => HostJobFile::default(),
        };
        if let Some(schedule) = &file.schedule {
            let now = chrono::Local::now();
            if super::schedule::next_after(schedule, &now).is_none() {
                problems.push(broken(format!(
                    "{}: invalid schedule {schedule:?}: use cron's 5 fields (or 6, seconds first), or @hourly, @daily, @weekly, @monthly",
                    toml_path.display()
                )));
                continue;
            }
        }
        if file.image.is_some() && !file.requires.is_empty() {
            problems.push(broken(format!(
                "{}: `image` and `requires` do not go together yet: a node runs the script itself",
                toml_path.display()
            )));
            continue;
        }
        jobs.push(JobDef {
            name,
            kind: JobKind::Host {
                script,
                image: file.image.filter(|i| !i.trim().is_empty()),
                requires: file.requires,
            },
            schedule: file.schedule,
            after: file.after,
            timeout: file.timeout.map(Duration::from_secs),
            concurrency: file.concurrency,
            critical: file.critical,
            grace: file.grace.map_or(DEFAULT_GRACE, Duration::from_secs),
            env: file.env,
            notify: file.notify,
            run_missed: file.missed == Missed::RunOnce,
            retry_interrupted: file.retry_interrupted,
        });
    }
    (jobs, problems)
}

fn valid_job_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The app's scheduled jobs from its live release: Procfile `cronX` types
/// become `APP/cron-X` (`cron-x` stays `cron-x`), app.json's `cron` entries
/// `APP/cron-appjson-N` in order. They never overlap (`forbid`), as in Dokku.
pub fn app_jobs(app: &AppName, manifest: &Manifest) -> Vec<JobDef> {
    let job = |suffix: &str, schedule: &str, command: &str| JobDef {
        name: format!("{app}/{suffix}"),
        kind: JobKind::AppCron {
            app: app.clone(),
            command: command.to_owned(),
        },
        schedule: Some(schedule.to_owned()),
        after: Vec::new(),
        timeout: None,
        concurrency: Concurrency::Forbid,
        critical: false,
        grace: DEFAULT_GRACE,
        env: BTreeMap::new(),
        notify: Vec::new(),
        run_missed: true,
        retry_interrupted: false,
    };
    let mut jobs: Vec<JobDef> = manifest
        .procfile
        .crons
        .iter()
        .map(|(name, entry)| {
            let rest = name
                .trim_start_matches("cron")
                .trim_start_matches(['-', '_']);
            let suffix = if rest.is_empty() {
                "cron".to_owned()
            } else {
                format!("cron-{rest}")
            };
            job(&suffix, &entry.schedule, &entry.command)
        })
        .collect();
    jobs.extend(manifest.app_json.cron.iter().enumerate().map(|(i, entry)| {
        job(
            &format!("cron-appjson-{}", i + 1),
            &entry.schedule,
            &entry.command,
        )
    }));
    jobs
}

/// The host jobs that cannot be read, as `jobs` and `/jobs` show them.
pub fn broken(gantry: &Gantry) -> Vec<Broken> {
    host_jobs(&gantry.config.jobs_dir()).1
}

/// Logs each broken definition once, not on every look at the jobs (the
/// scheduler looks several times a second); a fixed one that breaks again
/// is logged again.
fn warn_once(problems: &[Broken]) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let now: Vec<String> = problems.iter().map(|b| b.problem.clone()).collect();
    for problem in now.iter().filter(|p| !warned.contains(p)) {
        tracing::warn!("job definition skipped: {problem}");
    }
    *warned = now;
}

/// Every job: gantry's own, host jobs, then each app's.
pub async fn all(gantry: &Gantry) -> Vec<JobDef> {
    let (host, problems) = host_jobs(&gantry.config.jobs_dir());
    let mut jobs = builtin_jobs(gantry);
    jobs.extend(
        host.into_iter()
            .filter(|j| j.name != PRUNE_RUNS && !gantry.upkeep.iter().any(|u| u.name() == j.name)),
    );
    warn_once(&problems);
    for doer in &gantry.app_upkeep {
        for job in doer.jobs(gantry).await {
            jobs.push(JobDef {
                name: job.name,
                kind: JobKind::AppUpkeep {
                    doer: doer.name(),
                    app: job.app,
                },
                schedule: Some(job.schedule),
                after: Vec::new(),
                timeout: Some(Duration::from_secs(6 * 3600)),
                concurrency: Concurrency::Forbid,
                critical: job.critical,
                grace: DEFAULT_GRACE,
                env: BTreeMap::new(),
                notify: Vec::new(),
                run_missed: true,
                retry_interrupted: true,
            });
        }
    }
    if let Ok(apps) = gantry.store.list_apps().await {
        for app in apps {
            if let Ok(Some(release)) = gantry.store.current_release(&app.name).await {
                jobs.extend(app_jobs(
                    &app.name,
                    &Manifest::from_stored(&release.manifest),
                ));
            }
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_jobs_read_scripts_and_their_toml() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("backup.run"), "#!/bin/sh\n").expect("write");
        std::fs::write(
            dir.path().join("backup.toml"),
            "schedule = \"@daily\"\ntimeout = 30\nconcurrency = \"forbid\"\ncritical = true\n[env]\nA = \"b\"\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("report.run"), "#!/bin/sh\n").expect("write");
        std::fs::write(dir.path().join("report.toml"), "after = [\"backup\"]\n").expect("write");
        std::fs::write(dir.path().join("broken.run"), "#!/bin/sh\n").expect("write");
        std::fs::write(
            dir.path().join("broken.toml"),
            "schedule = \"61 * * * *\"\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("typo.run"), "#!/bin/sh\n").expect("write");
        std::fs::write(dir.path().join("typo.toml"), "schedul = \"@daily\"\n").expect("write");
        let (jobs, problems) = host_jobs(dir.path());
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["backup", "report"]);
        assert_eq!(jobs[0].schedule.as_deref(), Some("@daily"));
        assert_eq!(jobs[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(jobs[0].concurrency, Concurrency::Forbid);
        assert!(jobs[0].critical);
        assert_eq!(jobs[0].env["A"], "b");
        assert_eq!(jobs[1].after, ["backup"]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].name, "broken");
        assert!(
            problems[0].problem.contains("broken.toml")
                && problems[0].problem.contains("invalid schedule")
        );
        assert_eq!(problems[1].name, "typo");
        assert!(
            problems[1].problem.contains("typo.toml") && problems[1].problem.contains("schedul")
        );
    }

    #[test]
    fn app_crons_are_named_after_their_entries() {
        let manifest = Manifest::from_files(
            Some("web: x\ncron1: */5 * * * * one\ncron-clean: @hourly two\n"),
            Some(r#"{"cron": [{"command": "three", "schedule": "@daily"}]}"#),
        )
        .expect("manifest");
        let app = AppName::parse("shop").expect("name");
        let names: Vec<String> = app_jobs(&app, &manifest)
            .into_iter()
            .map(|j| j.name)
            .collect();
        assert_eq!(
            names,
            ["shop/cron-clean", "shop/cron-1", "shop/cron-appjson-1"]
        );
    }
}
