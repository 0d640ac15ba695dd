//! Telling someone when a job fails: webhooks and command hooks.
//!
//! Targets come from `[[notify]]` in `gantry.toml` (every job) and in a host
//! job's `NAME.toml` (that job). A run that fails or times out sends
//! `failure`, the first success after a failure sends `recovery`, and a
//! critical job with no success within its period plus grace sends `missed`.
//! Sends happen in the background, are retried with backoff, and every failed
//! attempt is written to the run's log and to gantry's; they never hold a run.

use std::time::Duration;

use serde::Serialize;

use crate::config::NotifyTarget as Target;
use crate::context::Gantry;

/// What is sent.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `failure`, `recovery` or `missed`.
    pub event: String,
    pub job: String,
    /// 0 for `missed` (there is no run to name).
    pub run: i64,
    pub status: String,
    pub reason: String,
    /// The last lines of the run's log.
    pub log_tail: Vec<String>,
    /// The run's page on the dashboard.
    pub link: String,
    /// One line for chat services: `backup #12 failed: exit code 2`.
    pub text: String,
}

const ATTEMPTS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
];

/// Sends `alert` to each target in the background.
pub fn send(gantry: &Gantry, targets: Vec<Target>, alert: Alert) {
    if targets.is_empty() {
        return;
    }
    let log = (alert.run > 0).then(|| super::files::log_path(gantry, &alert.job, alert.run));
    let failures = gantry.executors.notify_failures.clone();
    tokio::spawn(async move {
        for target in targets {
            let mut tries = 0;
            loop {
                let outcome = deliver(&target, &alert).await;
                let Err(err) = outcome else { break };
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let retry = ATTEMPTS.get(tries).copied();
                let line = match retry {
                    Some(wait) => format!(
                        "notify: {} failed: {err}; retrying in {}s",
                        describe(&target),
                        wait.as_secs()
                    ),
                    None => format!("notify: {} failed: {err}; giving up", describe(&target)),
                };
                tracing::warn!(job = %alert.job, run = alert.run, "{line}");
                if let Some(path) = &log {
                    append(path, &line);
                }
                let Some(wait) = retry else { break };
                tokio::time::sleep(wait).await;
                tries += 1;
            }
        }
    });
}

fn describe(target: &Target) -> String {
    match (&target.webhook, &target.command) {
        (Some(url), _) => format!("webhook {url}"),
        (None, Some(command)) => format!("command {command:?}"),
        (None, None) => "an empty target".into(),
    }
}

fn append(path: &std::path::Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(path) {
        let _ = writeln!(file, "{line}");
    }
}

async fn deliver(target: &Target, alert: &Alert) -> Result<(), String> {
    if let Some(url) = &target.webhook {
        let body = match &target.template {
            Some(template) => render(template, alert)?,
            None => serde_json::to_string(alert).map_err(|e| e.to_string())?,
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "gantry")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
    }
    if let Some(command) = &target.command {
        use tokio::io::AsyncWriteExt;
        let json = serde_json::to_string(alert).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", command])
            .env("GANTRY_EVENT", &alert.event)
            .env("GANTRY_JOB", &alert.job)
            .env("GANTRY_RUN", alert.run.to_string())
            .env("GANTRY_STATUS", &alert.status)
            .env("GANTRY_REASON", &alert.reason)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(json.as_bytes()).await;
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| "timed out after 30s".to_string())?
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Renders a webhook body template with the alert's fields.
pub fn render(template: &str, alert: &Alert) -> Result<String, String> {
    let env = minijinja::Environment::new();
    env.render_str(template, alert)
        .map_err(|e| format!("the notify template does not render: {e}"))
}

/// The last `n` lines of a log, without ANSI escapes (alerts are read in chat).
pub fn tail(path: &std::path::Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| strip_ansi(l))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            event: "failure".into(),
            job: "backup".into(),
            run: 12,
            status: "failed".into(),
            reason: "exit code 2".into(),
            log_tail: vec!["pg_dump: \"oops\"".into()],
            link: "http://gantry.localhost:8080/jobs/backup/12".into(),
            text: "backup #12 failed: exit code 2".into(),
        }
    }

    #[test]
    fn templates_render_json_safely() {
        let body = render(
            r#"{"content": {{ text|tojson }}, "log": {{ log_tail|tojson }}}"#,
            &alert(),
        )
        .expect("render");
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(value["content"], "backup #12 failed: exit code 2");
        assert_eq!(value["log"][0], "pg_dump: \"oops\"");
        assert!(render("{{ nope(", &alert()).is_err());
    }

    #[test]
    fn tails_drop_colors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.log");
        std::fs::write(&path, "a\nb\n\u{1b}[31mred\u{1b}[0m\n").expect("write");
        assert_eq!(tail(&path, 2), ["b", "red"]);
    }
}
