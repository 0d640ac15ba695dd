//! The job log's pages: `/jobs`, `/jobs/NAME`, `/jobs/NAME/RUN` (the log,
//! followed live over Server-Sent Events while the run goes), Run again,
//! artifacts, `/badge/NAME.svg` and Prometheus `/metrics`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::Response;

use super::pages;
use crate::access::Caller;
use crate::context::Gantry;
use crate::jobs::{self, Trigger};
use crate::store::{Run, RunStatus};

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// `["jobs", ...rest]` split into the job name and what follows it: job names
/// may hold one `/` (`APP/cron-x`), so a numeric segment marks the run.
pub fn split_path(rest: &[&str]) -> Option<(String, Vec<String>)> {
    let run_at = rest
        .iter()
        .position(|s| s.parse::<i64>().is_ok() || *s == "run");
    let (name, tail) = match run_at {
        Some(i) => rest.split_at(i),
        None => (rest, &[][..]),
    };
    if name.is_empty() || name.len() > 2 {
        return None;
    }
    Some((name.join("/"), tail.iter().map(|s| s.to_string()).collect()))
}

pub async fn list_page(
    gantry: &Gantry,
    caller: &Caller,
    csrf: &str,
) -> anyhow::Result<maud::Markup> {
    let mut rows = Vec::new();
    for job in jobs::overview(gantry, caller).await? {
        let mut durations: Vec<f64> = gantry
            .store
            .list_runs(&job.name, 20)
            .await?
            .iter()
            .filter(|r| r.started_at > 0 && r.finished_at > 0)
            .map(|r| (r.finished_at - r.started_at) as f64 / 1000.0)
            .collect();
        durations.reverse();
        rows.push(pages::JobRow {
            name: job.name,
            last: job.last,
            next: job.next,
            triggers: job.triggers,
            durations,
        });
    }
    Ok(pages::layout("Jobs", Some(csrf), pages::jobs(&rows)))
}

pub async fn runs_page(gantry: &Gantry, job: &str, csrf: &str) -> anyhow::Result<maud::Markup> {
    let runs = gantry.store.list_runs(job, 200).await?;
    Ok(pages::layout(
        job,
        Some(csrf),
        pages::job_runs(job, &runs, csrf),
    ))
}

pub async fn run_page(gantry: &Gantry, run: &Run, csrf: &str) -> anyhow::Result<maud::Markup> {
    let text = std::fs::read(jobs::log_path(gantry, &run.job, run.number)).unwrap_or_default();
    // Show whole lines; a live run's events start after the last one shown.
    let shown = if run.status.is_finished() {
        text.len()
    } else {
        text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
    };
    let log_html = to_html(&String::from_utf8_lossy(&text[..shown]));
    let mut artifacts: Vec<String> =
        std::fs::read_dir(jobs::artifacts_dir(gantry, &run.job, run.number))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
    artifacts.sort();
    let children = gantry
        .store
        .child_runs(&format!("{}#{}", run.job, run.number))
        .await?;
    let page = pages::RunPage {
        run,
        log_html,
        log_bytes: shown,
        artifacts: &artifacts,
        children: &children,
        csrf,
    };
    Ok(pages::layout(
        &format!("{} #{}", run.job, run.number),
        Some(csrf),
        pages::run(&page),
    ))
}

/// ANSI-coloured text to HTML (escaped), as the release build log is.
pub fn to_html(text: &str) -> String {
    ansi_to_html::convert(text).unwrap_or_else(|_| maud::html! { (text) }.into_string())
}

/// Queues a manual run from the dashboard; `again` names a run whose
/// parameters it takes (the run page's "Run again").
pub async fn run_now(
    gantry: &Gantry,
    caller: &Caller,
    job: &str,
    again: Option<i64>,
) -> anyhow::Result<Run> {
    let def = jobs::find(gantry, job).await?;
    let who = format!("{} (dashboard)", caller.name());
    let params = match again {
        Some(number) => gantry
            .store
            .run(job, number)
            .await?
            .map(|run| run.param_pairs())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(jobs::trigger(
        gantry,
        def,
        Trigger {
            kind: "manual",
            cause: &who,
            params,
            parent: "",
        },
    )
    .await?)
}

/// The run's log from byte `from` on, as Server-Sent Events: `log` events of
/// rendered HTML lines while it grows, then one `end` event with the status.
pub fn events(gantry: std::sync::Arc<Gantry>, run: Run, from: u64) -> Response<Body> {
    struct State {
        gantry: std::sync::Arc<Gantry>,
        run: Run,
        offset: u64,
        done: bool,
    }
    let state = State {
        gantry,
        run,
        offset: from,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let status = state
                .gantry
                .store
                .run(&state.run.job, state.run.number)
                .await
                .ok()
                .flatten()
                .map_or(RunStatus::Failed, |r| r.status);
            let path = jobs::log_path(&state.gantry, &state.run.job, state.run.number);
            let bytes = std::fs::read(&path).unwrap_or_default();
            let start = usize::try_from(state.offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let fresh = &bytes[start..];
            // Whole lines only, unless the run is over.
            let take = if status.is_finished() {
                fresh.len()
            } else {
                fresh.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
            };
            if take > 0 {
                state.offset += take as u64;
                let html = to_html(String::from_utf8_lossy(&fresh[..take]).trim_end_matches('\n'));
                let mut event = String::from("event: log\n");
                for line in html.lines() {
                    event.push_str("data: ");
                    event.push_str(line);
                    event.push('\n');
                }
                event.push('\n');
                return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), state));
            }
            if status.is_finished() {
                state.done = true;
                let event = format!("event: end\ndata: {}\n\n", status.as_str());
                return Some((Ok(Frame::data(Bytes::from(event))), state));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A shields-style status badge for READMEs.
pub fn badge(job: &str, last: Option<&Run>) -> Response<Body> {
    let (text, color) = match last.map(|r| r.status) {
        Some(RunStatus::Succeeded) => ("passing", "#2e7d32"),
        Some(RunStatus::Failed | RunStatus::TimedOut) => ("failing", "#c62828"),
        Some(RunStatus::Running | RunStatus::Queued) => ("running", "#1565c0"),
        Some(_) => ("stopped", "#8a6100"),
        None => ("no runs", "#757575"),
    };
    let label = job;
    let lw = 6 * label.len() + 10;
    let tw = 6 * text.len() + 10;
    let svg = maud::html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(lw + tw) height="20" role="img" aria-label={ (label) ": " (text) } {
            rect width=(lw) height="20" fill="#555" {}
            rect x=(lw) width=(tw) height="20" fill=(color) {}
            g fill="#fff" font-family="Verdana,sans-serif" font-size="11" {
                text x="5" y="14" { (label) }
                text x=(lw + 5) y="14" { (text) }
            }
        }
    }
    .into_string();
    let mut response = Response::new(Full::new(Bytes::from(svg)).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Prometheus text exposition of the job log, builds and deploys.
pub async fn metrics(gantry: &Gantry) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let stats = gantry.store.run_stats().await?;
    writeln!(
        out,
        "# HELP gantry_job_runs_total Finished runs by job and status (pruned runs included)."
    )?;
    writeln!(out, "# TYPE gantry_job_runs_total counter")?;
    for s in stats
        .iter()
        .filter(|s| s.status != "queued" && s.status != "running")
    {
        writeln!(
            out,
            "gantry_job_runs_total{{job=\"{}\",status=\"{}\"}} {}",
            escape(&s.job),
            s.status,
            s.count
        )?;
    }
    writeln!(
        out,
        "# HELP gantry_job_run_duration_seconds Time from start to end of finished runs."
    )?;
    writeln!(out, "# TYPE gantry_job_run_duration_seconds summary")?;
    let mut by_job: std::collections::BTreeMap<&str, (f64, i64)> = Default::default();
    for s in &stats {
        let e = by_job.entry(&s.job).or_default();
        e.0 += s.duration_ms as f64 / 1000.0;
        e.1 += s.finished;
    }
    for (job, (sum, count)) in by_job {
        writeln!(
            out,
            "gantry_job_run_duration_seconds_sum{{job=\"{}\"}} {sum:.3}",
            escape(job)
        )?;
        writeln!(
            out,
            "gantry_job_run_duration_seconds_count{{job=\"{}\"}} {count}",
            escape(job)
        )?;
    }
    let queued: i64 = stats
        .iter()
        .filter(|s| s.status == "queued")
        .map(|s| s.count)
        .sum();
    writeln!(
        out,
        "# HELP gantry_job_queue_depth Runs waiting for an executor."
    )?;
    writeln!(out, "# TYPE gantry_job_queue_depth gauge")?;
    writeln!(out, "gantry_job_queue_depth {queued}")?;
    let (busy, total) = gantry.executors.executors();
    writeln!(
        out,
        "# HELP gantry_executors_busy Executors running a job, of gantry_executors."
    )?;
    writeln!(out, "# TYPE gantry_executors_busy gauge")?;
    writeln!(out, "gantry_executors_busy {busy}")?;
    writeln!(out, "# TYPE gantry_executors gauge")?;
    writeln!(out, "gantry_executors {total}")?;
    writeln!(
        out,
        "# HELP gantry_releases_total Releases (builds and deploys) by kind and status."
    )?;
    writeln!(out, "# TYPE gantry_releases_total counter")?;
    for (kind, status, count) in gantry.store.release_stats().await? {
        writeln!(
            out,
            "gantry_releases_total{{kind=\"{kind}\",status=\"{status}\"}} {count}"
        )?;
    }
    writeln!(
        out,
        "# HELP gantry_notify_failures_total Alert sends that failed (each attempt)."
    )?;
    writeln!(out, "# TYPE gantry_notify_failures_total counter")?;
    writeln!(
        out,
        "gantry_notify_failures_total {}",
        gantry
            .executors
            .notify_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    )?;
    Ok(out)
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_split_at_the_run_number() {
        assert_eq!(split_path(&["backup"]), Some(("backup".into(), vec![])));
        assert_eq!(
            split_path(&["shop", "cron-1", "12", "events"]),
            Some(("shop/cron-1".into(), vec!["12".into(), "events".into()]))
        );
        assert_eq!(
            split_path(&["backup", "run"]),
            Some(("backup".into(), vec!["run".into()]))
        );
        assert_eq!(split_path(&["a", "b", "c"]), None);
        assert_eq!(split_path(&[]), None);
    }
}
