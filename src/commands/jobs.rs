//! `jobs`, `jobs:run`, `jobs:runs`, `jobs:log`, `jobs:cancel`: the job log.
//!
//! Host jobs are the admin's; an app's jobs (`APP/...`) belong to whoever may
//! manage the app.

use chrono::{Local, TimeZone};

use crate::access::Caller;
use crate::context::Gantry;
use crate::jobs::{self, Trigger};
use crate::store::Run;
use crate::time::format_time;

fn require(caller: &Caller, job: &str) -> anyhow::Result<()> {
    if caller.may_use_job(job) {
        Ok(())
    } else {
        anyhow::bail!("no job named {job} that this key may use (see `jobs`)")
    }
}

fn describe(run: &Run) -> String {
    format!("#{} {}", run.number, run.status.as_str())
}

fn duration(run: &Run) -> String {
    match (run.started_at, run.finished_at) {
        (0, _) => "-".into(),
        (start, 0) => format!(
            "{:.1}s so far",
            (crate::time::now_ms() - start) as f64 / 1000.0
        ),
        (start, end) => format!("{:.1}s", (end - start) as f64 / 1000.0),
    }
}

pub async fn list(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    let jobs = jobs::overview(gantry, caller).await?;
    if jobs.is_empty() {
        return Ok(format!(
            "no jobs yet: add an executable {}/NAME.run, or cron entries to an app's Procfile\n",
            gantry.config.jobs_dir().display()
        ));
    }
    let mut out = format!(
        "{:<32} {:<20} {:<19} {}\n",
        "JOB", "LAST RUN", "NEXT RUN", "TRIGGERS"
    );
    for job in jobs {
        let last = job.last.as_ref().map_or_else(|| "-".to_string(), describe);
        out.push_str(&format!(
            "{:<32} {last:<20} {:<19} {}\n",
            job.name,
            job.next.as_deref().unwrap_or("-"),
            job.triggers
        ));
    }
    Ok(out)
}

pub async fn run(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    params: &[String],
    parent: Option<&str>,
) -> anyhow::Result<String> {
    require(caller, name)?;
    let params = params
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("parameters are KEY=VALUE, not {p:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let job = jobs::find(gantry, name).await?;
    let who = caller.name();
    let run = jobs::trigger(
        gantry,
        job,
        Trigger {
            kind: "manual",
            cause: &who,
            params,
            parent: parent.unwrap_or(""),
            fence: None,
        },
    )
    .await?;
    Ok(format!(
        "queued {}#{}; follow it with: gantry jobs:log {} {} -f\n",
        run.job, run.number, run.job, run.number
    ))
}

pub async fn runs(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    require(caller, name)?;
    let runs = gantry.store.list_runs(name, 50).await?;
    if runs.is_empty() {
        return Ok(format!("{name} has no runs yet\n"));
    }
    let mut out = format!(
        "{:<6} {:<12} {:<16} {:<19} {:<10} {}\n",
        "RUN", "STATUS", "TRIGGER", "QUEUED", "DURATION", "DETAIL"
    );
    for run in runs {
        let mut detail = vec![];
        if !run.cause.is_empty() {
            detail.push(format!("by {}", run.cause));
        }
        if !run.parent.is_empty() {
            detail.push(format!("from {}", run.parent));
        }
        if !run.reason.is_empty() {
            detail.push(run.reason.clone());
        }
        out.push_str(&format!(
            "{:<6} {:<12} {:<16} {:<19} {:<10} {}\n",
            format!("#{}", run.number),
            run.status.as_str(),
            run.trigger,
            format_time(run.queued_at),
            duration(&run),
            detail.join("; ")
        ));
    }
    Ok(out)
}

pub async fn cancel(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    number: i64,
) -> anyhow::Result<String> {
    require(caller, name)?;
    let run = jobs::cancel(gantry, name, number).await?;
    Ok(if run.status.is_finished() {
        format!(
            "{name}#{number} already finished ({})\n",
            run.status.as_str()
        )
    } else {
        format!("cancelling {name}#{number}\n")
    })
}

/// Writes the run's log (the latest run by default); with `follow`, keeps
/// writing as it grows until the run finishes.
pub async fn log(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    number: Option<i64>,
    follow: bool,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> anyhow::Result<i32> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    require(caller, name)?;
    let run = match number {
        Some(n) => gantry.store.run(name, n).await?,
        None => gantry.store.list_runs(name, 1).await?.into_iter().next(),
    };
    let Some(run) = run else {
        anyhow::bail!(match number {
            Some(n) => format!("{name} has no run #{n}"),
            None => format!("{name} has no runs yet"),
        });
    };
    let path = jobs::log_path(gantry, name, run.number);
    let mut offset = 0u64;
    loop {
        let status = gantry
            .store
            .run(name, run.number)
            .await?
            .map_or(run.status, |r| r.status);
        if let Ok(mut file) = tokio::fs::File::open(&path).await {
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).await?;
            offset += buf.len() as u64;
            out.write_all(&buf).await?;
            out.flush().await?;
        }
        if status.is_finished() {
            let end = gantry.store.run(name, run.number).await?.unwrap_or(run);
            let reason = if end.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", end.reason)
            };
            let when = Local
                .timestamp_millis_opt(end.finished_at)
                .single()
                .filter(|_| end.finished_at > 0)
                .map(|t| t.format(" at %Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let trailer = format!(
                "-----> {}#{} {}{reason}{when}\n",
                end.job,
                end.number,
                end.status.as_str()
            );
            out.write_all(trailer.as_bytes()).await?;
            return Ok(i32::from(end.status != crate::store::RunStatus::Succeeded));
        }
        if !follow {
            return Ok(0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
