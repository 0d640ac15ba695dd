//! The dashboard's HTML, rendered on the server with maud (escaped by default).
//! Plain pages: a little CSS, readable on a phone, no JavaScript but the
//! one script that follows a running job's log.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::deploy::processes::ProcessInfo;
use crate::store::{Release, ReleaseKind, ReleaseStatus};
use crate::time::format_time;

const CSS: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.7em 1em;display:flex;gap:1em;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header nav{display:flex;gap:1em}header nav a{font-weight:400}
header .who{margin-left:auto;opacity:.8}
header form{margin-left:auto}header .who+form{margin-left:0}
nav.sub{display:flex;gap:1em;flex-wrap:wrap;margin:.2em 0 1em}
.graph svg{max-width:100%;height:auto;display:block;margin-bottom:.6em}
table.code td.n{color:#8a93a3;text-align:right;user-select:none;width:1%;white-space:nowrap}
table.code td{padding:0 .6em;border:0;font-family:ui-monospace,monospace;font-size:.85em;white-space:pre}
pre.diff{background:#fff;padding:.6em;overflow-x:auto;font-size:.85em;border:1px solid #e3e6eb}
pre.diff .add{background:#e6ffec;display:block}pre.diff .del{background:#ffebe9;display:block}pre.diff .hunk{color:#6e7781;display:block}
main{max-width:60em;margin:0 auto;padding:1em}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.95em}
th,td{text-align:left;padding:.45em .6em;border-bottom:1px solid #e3e6eb;vertical-align:top}
th{background:#eef0f4}
.wrap{overflow-x:auto}
.status{font-weight:600}
.succeeded,.running,.current{color:#16794a}.failed,.crashed{color:#b3261e}.rolledback,.building{color:#8a6100}
pre.log{background:#11151c;color:#e6e6e6;padding:1em;overflow-x:auto;font-size:.85em;line-height:1.35}
code{font-size:.9em}
button{font:inherit;padding:.35em .9em;border-radius:4px;border:1px solid #1d2330;background:#fff;cursor:pointer}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3em 1em;background:#fff;padding:1em}
dt{font-weight:600}
";

tokio::task_local! {
    /// The logged-in key's name, while a page behind the session check is
    /// made: the header shows it.
    pub static VISITOR: String;
}

/// The frame every page shares: the header links the parts (Apps, Jobs,
/// System) and names the logged-in key.
pub fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    let visitor = VISITOR.try_with(Clone::clone).ok();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gantry" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    a href="/" { "gantry" }
                    @if csrf.is_some() {
                        nav {
                            a href="/" { "Apps" }
                            a href="/jobs" { "Jobs" }
                            a href="/system" { "System" }
                        }
                    }
                    @if let Some(csrf) = csrf {
                        @if let Some(key) = &visitor { span.who { (key) } }
                        form method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// One row of the apps overview.
pub struct AppRow {
    pub name: String,
    pub url: String,
    pub release: Option<i64>,
    pub state: String,
    pub last_deploy: Option<i64>,
}

pub fn overview(rows: &[AppRow]) -> Markup {
    html! {
        h1 { "Apps" }
        @if rows.is_empty() {
            p { "No apps yet. Push one with " code { "git push" } "." }
        } @else {
            div.wrap { table {
                tr { th { "App" } th { "URL" } th { "Release" } th { "State" } th { "Last deploy" } }
                @for row in rows {
                    tr {
                        td { a href={ "/apps/" (row.name) } { (row.name) } }
                        td { a href=(row.url) { (row.url) } }
                        td { @if let Some(v) = row.release { "v" (v) } @else { "-" } }
                        td { span class={ "status " (state_class(&row.state)) } { (row.state) } }
                        td { @if let Some(t) = row.last_deploy { (format_time(t)) " UTC" } @else { "-" } }
                    }
                }
            } }
        }
    }
}

fn state_class(state: &str) -> &'static str {
    if state.starts_with("running") {
        "running"
    } else if state.contains("crash") || state.starts_with("exited") {
        "crashed"
    } else {
        ""
    }
}

pub struct AppPage<'a> {
    pub name: &'a str,
    pub url: &'a str,
    /// `APP.DOMAIN` and its custom domains.
    pub domains: &'a [String],
    pub current: Option<&'a Release>,
    pub processes: &'a [ProcessInfo],
    pub recent: &'a [Release],
    pub statuses: &'a [String],
    /// The app's jobs (`APP/deploy`, `APP/release`, its crons), by name.
    pub jobs: &'a [crate::jobs::Summary],
    /// `git clone` of its repository, over SSH.
    pub clone_url: &'a str,
}

/// The links every page of an app shows under its name.
pub fn app_nav(app: &str) -> Markup {
    html! {
        nav.sub {
            a href={ "/apps/" (app) } { "Overview" }
            a href={ "/apps/" (app) "/code" } { "Code" }
            a href={ "/apps/" (app) "/commits" } { "Commits" }
            a href={ "/apps/" (app) "/releases" } { "Releases" }
            a href={ "/apps/" (app) "/metrics" } { "Metrics" }
            a href={ "/apps/" (app) "/logs" } { "Logs" }
            a href={ "/apps/" (app) "#jobs" } { "Jobs" }
        }
    }
}

pub fn app(page: &AppPage<'_>) -> Markup {
    html! {
        h1 { (page.name) }
        (app_nav(page.name))
        dl {
            dt { "URL" } dd { a href=(page.url) { (page.url) } }
            dt { "Clone" } dd { code { (page.clone_url) } }
            dt { "Domains" } dd { (page.domains.join(", ")) }
            dt { "Current release" } dd {
                @if let Some(r) = page.current {
                    a href={ "/apps/" (page.name) "/releases/v" (r.version) } { "v" (r.version) }
                    " · " (r.description)
                } @else { "not deployed yet" }
            }
        }
        h2 { "Processes" }
        @if page.processes.is_empty() {
            p { "No processes run." }
        } @else {
            div.wrap { table {
                tr { th { "Process" } th { "Release" } th { "State" } th { "Restarts" } th { "Container" } }
                @for p in page.processes {
                    tr {
                        td { (p.process) "." (p.replica) }
                        td { @if let Some(v) = p.release { "v" (v) } }
                        td { span class={ "status " (state_class(&p.state)) } { (p.state) } }
                        td { (p.restarts) }
                        td { code { (p.name) } }
                    }
                }
            } }
        }
        h2 { "Recent activity" }
        (release_table(page.name, page.recent, page.statuses))
        p { a href={ "/apps/" (page.name) "/releases" } { "All releases" } }
        h2 id="jobs" { "Jobs" }
        @if page.jobs.is_empty() {
            p { "No jobs yet: pushes, release phases and Procfile cron entries show here." }
        } @else {
            div.wrap { table {
                tr { th { "Job" } th { "Last run" } th { "Next run" } th { "Triggers" } }
                @for job in page.jobs {
                    tr {
                        td { a href={ "/jobs/" (job.name) } { (job.name) } }
                        td { @if let Some(run) = &job.last {
                            a href={ "/jobs/" (run.job) "/" (run.number) } { "#" (run.number) }
                            " " span class={ "status " (run.status.as_str().replace(' ', "")) } { (run.status.as_str()) }
                        } @else { "-" } }
                        td { (job.next.as_deref().unwrap_or("-")) }
                        td { (job.triggers) }
                    }
                }
            } }
        }
        p { a href="/jobs" { "All jobs" } }
    }
}

pub fn releases(app: &str, releases: &[Release], statuses: &[String]) -> Markup {
    html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · releases" }
        (app_nav(app))
        (release_table(app, releases, statuses))
    }
}

fn release_table(app: &str, releases: &[Release], statuses: &[String]) -> Markup {
    html! {
        div.wrap { table {
            tr { th { "Version" } th { "Change" } th { "By" } th { "When" } th { "Build" } th { "Status" } }
            @for (r, status) in releases.iter().zip(statuses) {
                tr {
                    td { a href={ "/apps/" (app) "/releases/v" (r.version) } { "v" (r.version) } }
                    td {
                        @if r.kind == ReleaseKind::Deploy {
                            code { (short(&r.commit_sha)) } " " (r.commit_message)
                            br; small { (r.commit_author) }
                        } @else {
                            (r.description)
                        }
                    }
                    td { (r.created_by) }
                    td { (format_time(r.created_at)) }
                    td { @if r.build_ms > 0 { (format!("{:.1}s", r.build_ms as f64 / 1000.0)) } @else { "-" } }
                    td {
                        span class={ "status " (status.replace(' ', "")) } { (status) }
                        " · " a href={ "/apps/" (app) "/releases/v" (r.version) "#log" } { "log" }
                    }
                }
            }
        } }
    }
}

/// A commit's id as people read it: its first seven characters.
pub(super) fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

pub struct ReleasePage<'a> {
    pub app: &'a str,
    pub release: &'a Release,
    /// The commits and the diff since the release before.
    pub changes: Option<Markup>,
    pub status: &'a str,
    pub changed: &'a [String],
    pub log_html: String,
    pub can_roll_back: bool,
    pub csrf: &'a str,
}

pub fn release(page: &ReleasePage<'_>) -> Markup {
    let r = page.release;
    html! {
        h1 { a href={ "/apps/" (page.app) } { (page.app) } " · v" (r.version) }
        (app_nav(page.app))
        dl {
            dt { "Status" } dd { span class={ "status " (page.status.replace(' ', "")) } { (page.status) } }
            dt { "Change" } dd { (r.description) }
            dt { "Commit" } dd { code { (r.commit_sha) } " " (r.commit_message) " · " (r.commit_author) }
            dt { "By" } dd { (r.created_by) " at " (format_time(r.created_at)) " UTC" }
            dt { "Image" } dd {
                code { (r.image) }
                @if !r.image_id.is_empty() {
                    " · " code { (r.image_id) } " · "
                    (crate::artifacts::human_bytes(u64::try_from(r.image_size).unwrap_or(0)))
                }
            }
            dt { "Config changed" } dd {
                @if page.changed.is_empty() { "-" } @else { (page.changed.join(", ")) }
            }
            @if !r.error.is_empty() { dt { "Error" } dd { (r.error) } }
        }
        @if page.can_roll_back {
            form method="post" action={ "/apps/" (page.app) "/releases/v" (r.version) "/rollback" } {
                input type="hidden" name="csrf" value=(page.csrf);
                button type="submit" id="rollback" { "Roll back to v" (r.version) }
            }
        }
        @if let Some(changes) = &page.changes { (changes) }
        h2 id="log" { "Build log" }
        pre.log { (PreEscaped(&page.log_html)) }
    }
}

/// One row of the jobs overview.
pub struct JobRow {
    pub name: String,
    pub last: Option<crate::store::Run>,
    pub next: Option<String>,
    pub triggers: String,
    /// Durations in seconds of the latest runs, oldest first, for the sparkline.
    pub durations: Vec<f64>,
}

pub fn jobs(rows: &[JobRow]) -> Markup {
    html! {
        h1 { "Jobs" }
        @if rows.is_empty() {
            p { "No jobs yet: add an executable " code { "$GANTRY_HOME/jobs/NAME.run" } ", or cron entries to an app's Procfile." }
        } @else {
            div.wrap { table {
                tr { th { "Job" } th { "Last run" } th { "Next run" } th { "Triggers" } th { "Durations" } }
                @for row in rows {
                    tr {
                        td { a href={ "/jobs/" (row.name) } { (row.name) } }
                        td { @if let Some(run) = &row.last {
                            a href={ "/jobs/" (run.job) "/" (run.number) } { "#" (run.number) }
                            " " span class={ "status " (run.status.as_str().replace(' ', "")) } { (run.status.as_str()) }
                        } @else { "-" } }
                        td { (row.next.as_deref().unwrap_or("-")) }
                        td { (row.triggers) }
                        td { (sparkline(&row.durations)) }
                    }
                }
            } }
        }
    }
}

/// A tiny inline SVG of run durations (no script, no external assets).
pub fn sparkline(values: &[f64]) -> Markup {
    if values.len() < 2 {
        return html! { "-" };
    }
    let max = values.iter().cloned().fold(f64::MIN_POSITIVE, f64::max);
    let step = 80.0 / (values.len() - 1) as f64;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 * step, 18.0 - v / max * 16.0))
        .collect();
    html! {
        svg width="80" height="20" viewBox="0 0 80 20" role="img" aria-label="run durations" {
            polyline fill="none" stroke="#3a6ea5" stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}

pub fn job_runs(job: &str, runs: &[crate::store::Run], csrf: &str) -> Markup {
    html! {
        h1 { a href="/jobs" { "Jobs" } " · " (job) }
        form method="post" action={ "/jobs/" (job) "/run" } {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" id="run" { "Run now" }
        }
        div.wrap { table {
            tr { th { "Run" } th { "Status" } th { "Trigger" } th { "Queued" } th { "Duration" } th { "Detail" } }
            @for run in runs {
                tr {
                    td { a href={ "/jobs/" (job) "/" (run.number) } { "#" (run.number) } }
                    td { span class={ "status " (run.status.as_str().replace(' ', "")) } { (run.status.as_str()) } }
                    td { (run.trigger) @if !run.cause.is_empty() { " · " (run.cause) } }
                    td { (format_time(run.queued_at)) " UTC" }
                    td { (run_duration(run)) }
                    td { (run.reason) }
                }
            }
        } }
    }
}

fn run_duration(run: &crate::store::Run) -> String {
    match (run.started_at, run.finished_at) {
        (0, _) | (_, 0) => "-".into(),
        (start, end) => format!("{:.1}s", (end - start) as f64 / 1000.0),
    }
}

pub struct RunPage<'a> {
    pub run: &'a crate::store::Run,
    pub log_html: String,
    /// How much of the log file `log_html` shows; live events start there.
    pub log_bytes: usize,
    pub artifacts: &'a [String],
    pub children: &'a [crate::store::Run],
    pub csrf: &'a str,
}

pub fn run(page: &RunPage<'_>) -> Markup {
    let r = page.run;
    html! {
        h1 { a href="/jobs" { "Jobs" } " · " a href={ "/jobs/" (r.job) } { (r.job) } " #" (r.number) }
        dl {
            dt { "Status" } dd { span id="status" class={ "status " (r.status.as_str().replace(' ', "")) } { (r.status.as_str()) } }
            dt { "Trigger" } dd { (r.trigger) @if !r.cause.is_empty() { " by " (r.cause) } }
            @if !r.parent.is_empty() { dt { "Parent" } dd { (r.parent) } }
            @if !page.children.is_empty() {
                dt { "Started" } dd { @for c in page.children {
                    a href={ "/jobs/" (c.job) "/" (c.number) } { (c.job) "#" (c.number) } " "
                } }
            }
            @if !r.params.is_empty() { dt { "Parameters" } dd { code { (r.params.replace('\n', " ")) } } }
            dt { "Queued" } dd { (format_time(r.queued_at)) " UTC" }
            dt { "Duration" } dd { (run_duration(r)) }
            @if let Some(code) = r.exit_code { dt { "Exit code" } dd { (code) } }
            @if !r.reason.is_empty() { dt { "Reason" } dd { (r.reason) } }
            @if !page.artifacts.is_empty() {
                dt { "Artifacts" } dd { @for name in page.artifacts {
                    a href={ "/jobs/" (r.job) "/" (r.number) "/artifacts/" (name) } { (name) } " "
                } }
            }
        }
        form method="post" action={ "/jobs/" (r.job) "/run" } {
            input type="hidden" name="csrf" value=(page.csrf);
            input type="hidden" name="again" value=(r.number);
            button type="submit" id="run-again" { "Run again" }
        }
        h2 { "Log" }
        pre.log id="log" data-events=(if r.status.is_finished() { String::new() } else { format!("/jobs/{}/{}/events?from={}", r.job, r.number, page.log_bytes) }) {
            (PreEscaped(&page.log_html))
        }
        @if !r.status.is_finished() {
            script src="/assets/follow.js" defer {}
        }
    }
}

/// A page that says what went wrong, with the status code the caller sends.
pub fn message(title: &str, text: &str) -> Markup {
    html! {
        h1 { (title) }
        p { (text) }
    }
}

/// History statuses: `succeeded`, `failed`, `building`, `current`, or
/// `rolled back` for a release that a later rollback replaced.
pub fn statuses(releases: &[Release], current: Option<i64>) -> Vec<String> {
    // `releases` is newest first; a release is "rolled back" when the next
    // release that went live after it is a rollback.
    let mut out = vec![String::new(); releases.len()];
    let mut next_live: Option<&Release> = None;
    for (i, r) in releases.iter().enumerate() {
        out[i] = if Some(r.version) == current {
            "current".into()
        } else if r.status == ReleaseStatus::Succeeded
            && next_live.is_some_and(|n| n.kind == ReleaseKind::Rollback)
        {
            "rolled back".into()
        } else {
            r.status.as_str().into()
        };
        if r.status == ReleaseStatus::Succeeded {
            next_live = Some(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::AppName;

    fn release(version: i64, kind: ReleaseKind, status: ReleaseStatus) -> Release {
        Release {
            app: AppName::parse("web").expect("name"),
            version,
            status,
            image: String::new(),
            commit_sha: "0123456789abcdef".into(),
            commit_message: "<b>msg</b>".into(),
            commit_author: "A".into(),
            port: 5000,
            created_by: "alice".into(),
            created_at: 0,
            build_ms: 1500,
            build_log: String::new(),
            error: String::new(),
            config: String::new(),
            kind,
            description: "Deploy 0123456".into(),
            image_id: String::new(),
            image_size: 0,
            formation: String::new(),
            manifest: String::new(),
        }
    }

    #[test]
    fn history_statuses_mark_rolled_back_releases() {
        use ReleaseKind::*;
        use ReleaseStatus::*;
        // newest first: v4 rollback (current), v3 failed, v2 deploy, v1 deploy
        let list = vec![
            release(4, Rollback, Succeeded),
            release(3, Deploy, Failed),
            release(2, Deploy, Succeeded),
            release(1, Deploy, Succeeded),
        ];
        assert_eq!(
            statuses(&list, Some(4)),
            ["current", "failed", "rolled back", "succeeded"]
        );
    }

    #[test]
    fn pages_escape_user_text() {
        let list = vec![release(1, ReleaseKind::Deploy, ReleaseStatus::Succeeded)];
        let html = releases("web", &list, &statuses(&list, Some(1))).into_string();
        assert!(html.contains("&lt;b&gt;msg&lt;/b&gt;"), "{html}");
        assert!(html.contains("href=\"/apps/web/releases/v1\""), "{html}");
    }
}
