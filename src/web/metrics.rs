//! Prometheus `/metrics`: the job log, builds and deploys, for a logged-in
//! admin or a scraper sending `Authorization: Bearer TOKEN` (`metrics_token`
//! in gantry.toml).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::session::caller_of;
use crate::context::Gantry;

/// `GET /metrics`.
pub async fn metrics(State(gantry): State<Arc<Gantry>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = matches!(
        (&gantry.config.metrics_token, bearer),
        (Some(want), Some(got)) if want == got
    );
    let admin = caller_of(&gantry, &headers)
        .await
        .is_some_and(|c| c.is_admin());
    if !token_ok && !admin {
        return plain(
            StatusCode::UNAUTHORIZED,
            "metrics need an admin session, or Authorization: Bearer TOKEN with metrics_token from gantry.toml\n".into(),
        );
    }
    match text(&gantry).await {
        Ok(text) => plain(StatusCode::OK, text),
        Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{err:#}\n")),
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// Prometheus text exposition of the job log, builds and deploys.
async fn text(gantry: &Gantry) -> anyhow::Result<String> {
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
    if let Some(traffic) = gantry.routing.traffic().await {
        write_traffic(&mut out, &traffic)?;
    }
    Ok(out)
}

/// Each app's requests by status class, their durations and their bytes,
/// as the proxy counted them (counters from its start).
fn write_traffic(
    out: &mut String,
    traffic: &[gantry_proxy::traffic::AppTraffic],
) -> std::fmt::Result {
    use std::fmt::Write;
    writeln!(
        out,
        "# HELP gantry_http_requests_total Requests the proxy answered for each app, by status class."
    )?;
    writeln!(out, "# TYPE gantry_http_requests_total counter")?;
    for app in traffic {
        for (i, count) in app.by_class.iter().enumerate() {
            writeln!(
                out,
                "gantry_http_requests_total{{app=\"{}\",code=\"{}xx\"}} {count}",
                escape(&app.app),
                i + 1
            )?;
        }
    }
    writeln!(
        out,
        "# HELP gantry_http_request_duration_seconds How long the proxy took to answer each app's requests."
    )?;
    writeln!(out, "# TYPE gantry_http_request_duration_seconds histogram")?;
    for app in traffic {
        let name = escape(&app.app);
        let mut cumulative = 0;
        for (bound, count) in gantry_proxy::traffic::BOUNDS.iter().zip(app.buckets) {
            cumulative += count;
            writeln!(
                out,
                "gantry_http_request_duration_seconds_bucket{{app=\"{name}\",le=\"{bound}\"}} {cumulative}"
            )?;
        }
        writeln!(
            out,
            "gantry_http_request_duration_seconds_bucket{{app=\"{name}\",le=\"+Inf\"}} {}",
            app.count
        )?;
        writeln!(
            out,
            "gantry_http_request_duration_seconds_sum{{app=\"{name}\"}} {:.6}",
            app.seconds
        )?;
        writeln!(
            out,
            "gantry_http_request_duration_seconds_count{{app=\"{name}\"}} {}",
            app.count
        )?;
    }
    for (name, help, bytes) in [
        (
            "gantry_http_received_bytes_total",
            "Bytes the proxy received from clients for each app (heads and bodies, after TLS).",
            (|a: &gantry_proxy::traffic::AppTraffic| a.received) as fn(&_) -> u64,
        ),
        (
            "gantry_http_sent_bytes_total",
            "Bytes the proxy sent to clients for each app (heads and bodies, before TLS).",
            |a| a.sent,
        ),
    ] {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} counter")?;
        for app in traffic {
            writeln!(out, "{name}{{app=\"{}\"}} {}", escape(&app.app), bytes(app))?;
        }
    }
    Ok(())
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
