//! Queues scheduled runs. It sleeps until the next schedule is due (at most a
//! quarter second, to pick up edits) and queues a run for every schedule that
//! came due since it last looked, so a run starts right at its time. On start,
//! a schedule that came due while gantry was down runs once (`missed
//! schedule`), never once per missed time. On a swarm with several managers
//! only the elected one schedules (`context::leader`), and the store queues
//! its runs only while its term holds.

use std::sync::Arc;

use chrono::{DateTime, Local, TimeZone};
use croner::Cron;
use tokio_util::sync::CancellationToken;

use super::definition::JobDef;
use super::queue::Trigger;
use super::schedule::{next_after, parse};
use crate::context::leader::Fence;
use crate::context::Gantry;

const TICK: std::time::Duration = std::time::Duration::from_millis(250);

pub async fn run_forever(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let mut last = Local::now();
    let mut started = last;
    let mut leading = false;
    let mut alerted = std::collections::HashMap::new();
    // Definitions are read (and schedules parsed) at most once a second:
    // edits apply within a second.
    let mut scheduled: Vec<(JobDef, Cron)> = Vec::new();
    let mut read_at = std::time::Instant::now() - std::time::Duration::from_secs(2);
    loop {
        // Sleep until the next schedule comes due (or a tick, to pick up
        // edited definitions), so runs start right at their time.
        let nap = scheduled
            .iter()
            .filter_map(|(_, cron)| cron.find_next_occurrence(&last, false).ok())
            .min()
            .map_or(TICK, |due| {
                (due - Local::now()).to_std().unwrap_or_default().min(TICK)
            });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(nap) => {}
        }
        // Only the leading manager schedules; one that takes over runs
        // what came due meanwhile once, as after a restart.
        let Some(fence) = gantry.leader.leading() else {
            if leading {
                tracing::warn!("the scheduler stops here: this manager no longer leads");
                leading = false;
            }
            continue;
        };
        if !leading {
            leading = true;
            if fence != Fence::Sole {
                tracing::info!("the scheduler runs here: this manager leads");
            }
            run_missed(&gantry, &fence).await;
            last = Local::now();
            started = last;
            alerted.clear();
        }
        if read_at.elapsed() >= std::time::Duration::from_secs(1) {
            let jobs = super::definition::all(&gantry).await;
            scheduled = jobs
                .iter()
                .filter_map(|job| Some((job.clone(), parse(job.schedule.as_deref()?)?)))
                .collect();
            read_at = std::time::Instant::now();
            check_overdue(&gantry, &jobs, &started, &mut alerted).await;
        }
        let now = Local::now();
        for (job, cron) in &scheduled {
            if cron
                .find_next_occurrence(&last, false)
                .is_ok_and(|due| due <= now)
            {
                let schedule = job.schedule.clone().unwrap_or_default();
                start(&gantry, job.clone(), "schedule", &schedule, &fence).await;
            }
        }
        last = now;
    }
}

/// The dead man's switch: a critical scheduled job with no success since the
/// first time it was due (after its last success, or after gantry started)
/// plus its grace gets one `missed` alert per overdue stretch, whether its
/// runs failed, hang, or never started at all.
async fn check_overdue(
    gantry: &Gantry,
    jobs: &[JobDef],
    started: &DateTime<Local>,
    alerted: &mut std::collections::HashMap<String, i64>,
) {
    let now = Local::now();
    for job in jobs.iter().filter(|j| j.critical) {
        let Some(schedule) = &job.schedule else {
            continue;
        };
        let last_success = gantry.store.last_success_at(&job.name).await.ok().flatten();
        let since = last_success
            .and_then(|ms| Local.timestamp_millis_opt(ms).single())
            .unwrap_or(*started);
        let Some(due) = next_after(schedule, &since) else {
            continue;
        };
        let grace = chrono::Duration::from_std(job.grace).unwrap_or_default();
        let key = since.timestamp_millis();
        if due + grace >= now || alerted.get(&job.name) == Some(&key) {
            continue;
        }
        alerted.insert(job.name.clone(), key);
        let last = last_success.map_or_else(
            || "it has not succeeded since gantry started".to_string(),
            |_| {
                format!(
                    "its last success was at {}",
                    since.format("%Y-%m-%d %H:%M:%S")
                )
            },
        );
        let reason = format!(
            "no successful run since it was due at {} (grace {}s); {last}",
            due.format("%Y-%m-%d %H:%M:%S"),
            job.grace.as_secs()
        );
        tracing::warn!(job = %job.name, "{reason}");
        let mut targets = gantry.config.notify.clone();
        targets.extend(job.notify.iter().cloned());
        super::notify::send(
            gantry,
            targets,
            super::notify::Alert {
                event: "missed".into(),
                job: job.name.clone(),
                run: 0,
                status: "missed".into(),
                reason: reason.clone(),
                log_tail: Vec::new(),
                link: format!("{}/jobs/{}", gantry.config.dashboard_url(), job.name),
                text: format!("{} missed: {reason}", job.name),
            },
        );
    }
}

/// One run for each schedule that came due since its last scheduled run.
async fn run_missed(gantry: &Arc<Gantry>, fence: &Fence) {
    let now = Local::now();
    for job in super::definition::all(gantry).await {
        let Some(schedule) = job.schedule.clone().filter(|_| job.run_missed) else {
            continue;
        };
        let Ok(Some(last_ms)) = gantry.store.last_scheduled_at(&job.name).await else {
            continue;
        };
        let Some(last) = Local.timestamp_millis_opt(last_ms).single() else {
            continue;
        };
        if next_after(&schedule, &last).is_some_and(|due| due <= now) {
            start(gantry, job, "missed schedule", &schedule, fence).await;
        }
    }
}

async fn start(gantry: &Arc<Gantry>, job: JobDef, kind: &str, schedule: &str, fence: &Fence) {
    let name = job.name.clone();
    let trigger = Trigger {
        kind,
        cause: schedule,
        params: Vec::new(),
        parent: "",
        fence: Some(fence.clone()),
    };
    if let Err(err) = super::queue::trigger(gantry, job, trigger).await {
        tracing::warn!(job = %name, error = %err, "cannot queue a scheduled run");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_after_follows_cron() {
        let at = Local
            .with_ymd_and_hms(2026, 11, 22, 10, 7, 30)
            .single()
            .expect("time");
        let next = next_after("*/5 * * * *", &at).expect("next");
        assert_eq!(next.format("%H:%M:%S").to_string(), "10:10:00");
        let next = next_after("@hourly", &at).expect("next");
        assert_eq!(next.format("%H:%M").to_string(), "11:00");
        assert!(next_after("not a schedule", &at).is_none());
        let next = next_after("*/10 * * * * *", &at).expect("seconds");
        assert_eq!(next.format("%H:%M:%S").to_string(), "10:07:40");
    }
}
