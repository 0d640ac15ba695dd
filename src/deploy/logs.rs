//! `logs APP [-f] [--ps TYPE] [-n N]`: the app's container output, Heroku-style
//! (`TIME app[web.1]: line`), merged across replicas in time order. Following
//! picks up containers that start later (deploys, scaling) and containers Docker
//! restarts, so it goes on across restarts.

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::context::Gantry;
use crate::names::AppName;
use crate::runtime::{Instance, LogsFrom, Runtime};

#[derive(Debug, Clone)]
pub struct LogsRequest {
    pub follow: bool,
    /// Only this process type (`web`).
    pub process: Option<String>,
    /// How many past lines to show first.
    pub lines: usize,
}

/// One line of output: Docker's RFC 3339 timestamp, the source, the text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Line {
    time: String,
    source: String,
    text: String,
}

impl Line {
    fn render(&self) -> String {
        let time = self.time.get(..19).unwrap_or(&self.time);
        format!("{time}Z {}: {}\n", self.source, self.text)
    }
}

/// Reads one container's output line by line into `each` until it returns false
/// or the output ends (for a follow: the container stopped).
async fn read_lines(
    runtime: Arc<dyn Runtime>,
    app: AppName,
    c: Instance,
    from: LogsFrom,
    mut each: impl FnMut(Line) -> bool,
) {
    let source = format!("{app}[{}.{}]", c.process, c.replica);
    let mut stream = runtime.logs(&c.id, from, true);
    let mut pending = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        pending.push_str(&chunk);
        while let Some(end) = pending.find('\n') {
            let raw: String = pending.drain(..=end).collect();
            let raw = raw.trim_end_matches(['\n', '\r']);
            let (time, text) = raw.split_once(' ').unwrap_or(("", raw));
            let line = Line {
                time: time.to_owned(),
                source: source.clone(),
                text: text.to_owned(),
            };
            if !each(line) {
                return;
            }
        }
    }
}

async fn sources(
    gantry: &Gantry,
    app: &AppName,
    request: &LogsRequest,
) -> anyhow::Result<Vec<Instance>> {
    Ok(gantry
        .runtime
        .list(app)
        .await?
        .into_iter()
        .filter(|c| request.process.as_ref().is_none_or(|p| *p == c.process))
        .collect())
}

/// Writes the app's logs to `out`; with `follow`, until `out` fails (the caller left).
pub async fn stream(
    gantry: &Gantry,
    app: &AppName,
    request: &LogsRequest,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> anyhow::Result<()> {
    // The past: the last `lines` lines of every source, merged by time.
    let mut past = Vec::new();
    let mut last_seen: HashMap<String, String> = HashMap::new();
    for c in sources(gantry, app, request).await? {
        let id = c.id.clone();
        read_lines(
            gantry.runtime.clone(),
            app.clone(),
            c,
            LogsFrom::Tail(request.lines),
            |line| {
                last_seen.insert(id.clone(), line.time.clone());
                past.push(line);
                true
            },
        )
        .await;
    }
    // gantry's own word on the app's processes: kills for memory.
    let ooms = gantry
        .store
        .list_runs(&crate::jobs::live::oom_job(app), 100)
        .await
        .unwrap_or_default();
    for run in ooms {
        let process = run.cause.split('.').next().unwrap_or_default();
        if request.process.as_ref().is_some_and(|p| p != process) {
            continue;
        }
        past.push(Line {
            time: crate::time::rfc3339_nanos(run.queued_at),
            source: format!("{app}[{}]", run.cause),
            text: format!("gantry: {}; the runtime restarts it", run.reason),
        });
    }
    past.sort();
    let skip = past.len().saturating_sub(request.lines);
    for line in &past[skip..] {
        out.write_all(line.render().as_bytes()).await?;
    }
    out.flush().await?;
    if !request.follow {
        return Ok(());
    }

    // The present: follow every running source, and pick up new ones each second.
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Line)>();
    let mut following: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some((id, line)) = rx.recv() => {
                if last_seen.get(&id).is_some_and(|seen| *seen >= line.time) {
                    continue;
                }
                last_seen.insert(id, line.time.clone());
                if out.write_all(line.render().as_bytes()).await.is_err() || out.flush().await.is_err() {
                    break;
                }
            }
            _ = rescan.tick() => {
                following.retain(|_, task| !task.is_finished());
                for c in sources(gantry, app, request).await? {
                    if !c.running || following.contains_key(&c.id) {
                        continue;
                    }
                    let from = match last_seen.get(&c.id).and_then(|t| crate::time::parse_rfc3339(t)) {
                        Some(secs) => LogsFrom::Since(i32::try_from(secs).unwrap_or(0)),
                        None => LogsFrom::Start,
                    };
                    let (tx, id) = (tx.clone(), c.id.clone());
                    following.insert(c.id.clone(), tokio::spawn(read_lines(
                        gantry.runtime.clone(),
                        app.clone(),
                        c,
                        from,
                        move |line| tx.send((id.clone(), line)).is_ok(),
                    )));
                }
            }
        }
    }
    for task in following.values() {
        task.abort();
    }
    Ok(())
}
