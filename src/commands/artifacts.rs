//! `artifacts`, `artifacts:set`: an app's images and how many are kept.

use crate::access::Caller;
use crate::artifacts::{self, human_bytes, DEFAULT_KEEP};
use crate::context::Gantry;
use crate::names::AppName;
use crate::time::format_time;

pub async fn list(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let app = record.name.clone();
    let list = artifacts::list(gantry, &app).await?;
    let keep = record.keep_releases.unwrap_or(DEFAULT_KEEP);
    if list.is_empty() {
        return Ok(format!(
            "{app} has no images (keeping the last {keep} releases')\n"
        ));
    }
    let mut out = format!(
        "{:<24} {:<14} {:>9}  {:<19}  USED BY (keeping the last {keep} releases')\n",
        "IMAGE", "ID", "SIZE", "CREATED"
    );
    for a in list {
        let id = a.id.trim_start_matches("sha256:");
        let used: Vec<String> = a.used_by.iter().map(|v| format!("v{v}")).collect();
        out.push_str(&format!(
            "{:<24} {:<14} {:>9}  {:<19}  {}\n",
            a.tag,
            &id[..id.len().min(12)],
            human_bytes(u64::try_from(a.size).unwrap_or(0)),
            format_time(a.created.saturating_mul(1000)),
            if used.is_empty() {
                "-".into()
            } else {
                used.join(", ")
            }
        ));
    }
    Ok(out)
}

pub async fn set_keep(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    value: Option<&str>,
) -> anyhow::Result<String> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    let keep = value
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    anyhow::anyhow!("keep must be a number of releases from 1 to 1000, not {v:?}")
                })
        })
        .transpose()?;
    gantry.store.set_keep_releases(&app, keep).await?;
    let _lock = gantry.locks.get(&app).lock_owned().await;
    let report = artifacts::prune(gantry, &app).await?;
    let n = keep.unwrap_or(DEFAULT_KEEP);
    Ok(match report.summary() {
        Some(summary) => format!("{app}: keeping the images of the last {n} releases; {summary}\n"),
        None => format!("{app}: keeping the images of the last {n} releases\n"),
    })
}
