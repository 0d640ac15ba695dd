//! The jobs a caller may see, as `jobs` and the dashboard list them.

use super::definition::JobDef;
use super::error::JobError;
use crate::context::Gantry;
use crate::store::Run;

/// One job as the `jobs` list and page show it.
pub struct Summary {
    pub name: String,
    pub last: Option<Run>,
    /// When its schedule fires next, formatted.
    pub next: Option<String>,
    /// `schedule @daily; after backup; critical`, `manual`, `push`, `release
    /// phase`, or `BROKEN, not run: FILE: what is wrong` for a definition
    /// that cannot be read.
    pub triggers: String,
}

/// The jobs `caller` may see, by name: every defined job, and jobs that only
/// have runs (`APP/deploy`, jobs since removed).
pub async fn overview(
    gantry: &Gantry,
    caller: &crate::access::Caller,
) -> Result<Vec<Summary>, JobError> {
    let defs: Vec<JobDef> = super::definition::all(gantry)
        .await
        .into_iter()
        .filter(|d| caller.may_use_job(&d.name))
        .collect();
    let latest = gantry.store.latest_runs().await?;
    let mut names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
    for run in &latest {
        if caller.may_use_job(&run.job) && !names.contains(&run.job) {
            names.push(run.job.clone());
        }
    }
    let broken: Vec<super::definition::Broken> = super::definition::broken(gantry)
        .into_iter()
        .filter(|b| caller.may_use_job(&b.name))
        .collect();
    for b in &broken {
        if !names.contains(&b.name) {
            names.push(b.name.clone());
        }
    }
    names.sort();
    let now = chrono::Local::now();
    Ok(names
        .into_iter()
        .map(|name| {
            let def = defs.iter().find(|d| d.name == name);
            let problem = broken.iter().find(|b| b.name == name);
            let triggers = match (def, problem) {
                (None, Some(b)) => format!("BROKEN, not run: {}", b.problem),
                (def, _) => match def {
                    None if name.ends_with("/release") => "release phase".to_string(),
                    None => "push".to_string(),
                    Some(def) => {
                        let mut t = Vec::new();
                        if let Some(s) = &def.schedule {
                            t.push(format!("schedule {s}"));
                        }
                        if !def.after.is_empty() {
                            t.push(format!("after {}", def.after.join(", ")));
                        }
                        if def.critical {
                            t.push("critical".into());
                        }
                        if t.is_empty() {
                            "manual".into()
                        } else {
                            t.join("; ")
                        }
                    }
                },
            };
            Summary {
                last: latest.iter().find(|r| r.job == name).cloned(),
                next: def
                    .and_then(|d| d.schedule.as_deref())
                    .and_then(|s| super::schedule::next_after(s, &now))
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                triggers,
                name,
            }
        })
        .collect())
}
