//! The git server, inspectable: an app's tree and files at its live
//! release's commit (or `?ref=BRANCH_OR_SHA`), its commits, one commit with
//! its diff, and a release's changes since the release before. Only apps
//! the visitor may manage; read through `git::browse` (gix).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use maud::{html, Markup};

use super::pages::{app_nav, layout, short};
use super::respond::{html as page, not_found, problem, Page};
use super::session::LoggedIn;
use crate::context::Gantry;
use crate::git::browse::{self, Change, Diff, Kind, Node};
use crate::names::AppName;
use crate::time::format_time;

/// Commits the log page lists.
const LOG_LIMIT: usize = 200;
/// Commits a release page lists between two releases.
const RANGE_LIMIT: usize = 100;

/// The app, if the visitor may see it and it has a repository; with its
/// record's releases (read first: a gix repository stays on one thread, so
/// it is opened after the last await).
async fn visible(
    gantry: &Gantry,
    visitor: &LoggedIn,
    name: &str,
) -> anyhow::Result<Option<(AppName, crate::store::AppRecord, Vec<crate::store::Release>)>> {
    let Some(record) = super::session::visible_app(gantry, visitor.caller(), name).await? else {
        return Ok(None);
    };
    let app = record.name.clone();
    if !crate::git::repos::repo_path(&gantry.config, &app)
        .join("HEAD")
        .exists()
    {
        return Ok(None);
    }
    let releases = gantry.store.list_releases(&app).await?;
    Ok(Some((app, record, releases)))
}

fn open(gantry: &Gantry, app: &AppName) -> Result<browse::Repo, browse::BrowseError> {
    browse::Repo::open(&crate::git::repos::repo_path(&gantry.config, app))
}

/// The commit to show: `?ref=`, else the live release's, else the newest
/// release's, else the default branch.
fn chosen(
    record: &crate::store::AppRecord,
    releases: &[crate::store::Release],
    repo: &browse::Repo,
    query: &HashMap<String, String>,
) -> Result<(gix::ObjectId, String), String> {
    if let Some(wanted) = query.get("ref").filter(|r| !r.is_empty()) {
        return repo
            .resolve(wanted)
            .map(|id| (id, wanted.clone()))
            .map_err(|e| e.to_string());
    }
    let live = record
        .current_release
        .and_then(|v| releases.iter().find(|r| r.version == v))
        .or_else(|| releases.iter().find(|r| !r.commit_sha.is_empty()));
    if let Some(release) = live.filter(|r| !r.commit_sha.is_empty()) {
        if let Ok(id) = repo.resolve(&release.commit_sha) {
            return Ok((id, format!("v{} (live)", release.version)));
        }
    }
    for branch in ["main", "master"] {
        if let Ok(id) = repo.resolve(branch) {
            return Ok((id, branch.to_owned()));
        }
    }
    Err("nothing was pushed yet".to_owned())
}

/// `GET /apps/APP/code` and `/apps/APP/code/PATH`.
pub async fn tree(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(params): Path<HashMap<String, String>>,
    Query(query): Query<HashMap<String, String>>,
) -> Page {
    let csrf = visitor.csrf();
    let name = params.get("name").cloned().unwrap_or_default();
    let path = params.get("path").cloned().unwrap_or_default();
    let Some((app, record, releases)) = visible(&gantry, &visitor, &name).await? else {
        return Ok(not_found(csrf));
    };
    let repo = open(&gantry, &app)?;
    let (commit, label) = match chosen(&record, &releases, &repo, &query) {
        Ok(found) => found,
        Err(why) => {
            return Ok(problem(
                StatusCode::NOT_FOUND,
                "No such code",
                &why,
                Some(csrf),
            ));
        }
    };
    let suffix = query
        .get("ref")
        .map(|r| format!("?ref={}", urlencode(r)))
        .unwrap_or_default();
    if query.contains_key("raw") {
        return Ok(match repo.blob(commit, &path)? {
            Some(bytes) => download(&path, bytes),
            None => not_found(csrf),
        });
    }
    let Some(node) = repo.node(commit, &path)? else {
        return Ok(not_found(csrf));
    };
    let title = if path.is_empty() {
        format!("{app} code")
    } else {
        format!("{path} · {app}")
    };
    let body = html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · code" }
        (app_nav(app.as_str()))
        p {
            "At " code { (short(&commit.to_string())) } " (" (label) ") · "
            (crumbs(app.as_str(), &path, &suffix))
        }
        (render_node(app.as_str(), &path, &suffix, &node))
    };
    Ok(page(StatusCode::OK, layout(&title, Some(csrf), body)))
}

/// `a / b / c`, each a link up the tree.
fn crumbs(app: &str, path: &str, suffix: &str) -> Markup {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    html! {
        a href={ "/apps/" (app) "/code" (suffix) } { "/" }
        @for (i, part) in parts.iter().enumerate() {
            " " a href={ "/apps/" (app) "/code/" (parts[..=i].join("/")) (suffix) } { (part) } " /"
        }
    }
}

fn render_node(app: &str, path: &str, suffix: &str, node: &Node) -> Markup {
    let base = if path.is_empty() {
        format!("/apps/{app}/code/")
    } else {
        format!("/apps/{app}/code/{}/", path.trim_matches('/'))
    };
    match node {
        Node::Dir(entries) => html! {
            @if entries.is_empty() { p { "An empty directory." } }
            div.wrap { table {
                tr { th { "Name" } th { "Kind" } }
                @for entry in entries {
                    tr {
                        td {
                            @if entry.kind == Kind::Submodule { (entry.name) }
                            @else { a href={ (base) (entry.name) (suffix) } { (entry.name) @if entry.kind == Kind::Dir { "/" } } }
                        }
                        td { (match entry.kind { Kind::Dir => "directory", Kind::File => "file", Kind::Link => "link", Kind::Submodule => "submodule" }) }
                    }
                }
            } }
        },
        Node::Link(target) => html! { p { "A symbolic link to " code { (target) } } },
        Node::File { size, text, cut } => {
            let raw = format!(
                "{}{}raw=1",
                base.trim_end_matches('/'),
                if suffix.is_empty() {
                    "?".to_owned()
                } else {
                    format!("{suffix}&")
                }
            );
            html! {
                p {
                    (crate::artifacts::human_bytes(*size as u64)) " · "
                    a href=(raw) download { "download" }
                }
                @match text {
                    None => p { "A binary file: download it to see it." },
                    Some(text) => {
                        @if *cut {
                            p.note { "Only the first " (crate::artifacts::human_bytes(browse::SHOW_BYTES as u64)) " are shown: download the file for the rest." }
                        }
                        div.wrap { table.code {
                            @for (n, line) in text.lines().enumerate() {
                                tr id={ "L" (n + 1) } { td.n { (n + 1) } td { (line) } }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// A file as a download: never shown inline, never sniffed.
fn download(path: &str, bytes: Vec<u8>) -> axum::response::Response {
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /apps/APP/commits`: the deploy branch's log, each deployed commit
/// with the release it became.
pub async fn commits(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Page {
    let csrf = visitor.csrf();
    let Some((app, record, releases)) = visible(&gantry, &visitor, &name).await? else {
        return Ok(not_found(csrf));
    };
    let repo = open(&gantry, &app)?;
    let branch = query
        .get("ref")
        .cloned()
        .or_else(|| {
            record
                .deploy_branch
                .clone()
                .map(|b| b.trim_start_matches("refs/heads/").to_owned())
        })
        .or_else(|| {
            ["main", "master"]
                .into_iter()
                .find(|b| repo.resolve(b).is_ok())
                .map(str::to_owned)
        });
    let Some(tip) = branch.as_deref().and_then(|b| repo.resolve(b).ok()) else {
        return Ok(problem(
            StatusCode::NOT_FOUND,
            "No commits",
            "Nothing was pushed to this app's branch yet.",
            Some(csrf),
        ));
    };
    let log = repo.log(tip, None, LOG_LIMIT)?;
    let mut became: HashMap<String, Vec<i64>> = HashMap::new();
    for release in releases {
        if !release.commit_sha.is_empty() {
            became
                .entry(release.commit_sha.clone())
                .or_default()
                .push(release.version);
        }
    }
    let body = html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · commits" }
        (app_nav(app.as_str()))
        p { "Branch " code { (branch.unwrap_or_default()) } @if log.len() == LOG_LIMIT { " · the newest " (LOG_LIMIT) } }
        (commit_table(app.as_str(), &log, &became))
    };
    Ok(page(
        StatusCode::OK,
        layout(&format!("{app} commits"), Some(csrf), body),
    ))
}

fn commit_table(
    app: &str,
    log: &[browse::CommitSummary],
    became: &HashMap<String, Vec<i64>>,
) -> Markup {
    html! {
        div.wrap { table {
            tr { th { "Commit" } th { "Message" } th { "Author" } th { "Date" } th { "Release" } }
            @for c in log {
                tr {
                    td { a href={ "/apps/" (app) "/commits/" (c.sha) } { code { (short(&c.sha)) } } }
                    td { (c.subject) }
                    td { (c.author) }
                    td { (format_time(c.time * 1000)) " UTC" }
                    td {
                        @for v in became.get(&c.sha).map(Vec::as_slice).unwrap_or_default() {
                            a href={ "/apps/" (app) "/releases/v" (v) } { "v" (v) } " "
                        }
                    }
                }
            }
        } }
    }
}

/// `GET /apps/APP/commits/SHA`: the message and the diff.
pub async fn commit(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path((name, sha)): Path<(String, String)>,
) -> Page {
    let csrf = visitor.csrf();
    let Some((app, _, _)) = visible(&gantry, &visitor, &name).await? else {
        return Ok(not_found(csrf));
    };
    let repo = open(&gantry, &app)?;
    let Ok(id) = repo.resolve(&sha) else {
        return Ok(not_found(csrf));
    };
    let detail = repo.commit_detail(id)?;
    let c = &detail.summary;
    let body = html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · " code { (short(&c.sha)) } }
        (app_nav(app.as_str()))
        dl {
            dt { "Commit" } dd { code { (c.sha) } }
            dt { "Author" } dd { (c.author) }
            dt { "Date" } dd { (format_time(c.time * 1000)) " UTC" }
            dt { "Parents" } dd {
                @for p in &detail.parents { a href={ "/apps/" (app) "/commits/" (p) } { code { (short(p)) } } " " }
            }
            dt { "Tree" } dd { a href={ "/apps/" (app) "/code?ref=" (c.sha) } { "browse the code at this commit" } }
        }
        pre { (detail.message) }
        (render_diff(&detail.diff))
    };
    Ok(page(
        StatusCode::OK,
        layout(&format!("{} · {app}", short(&c.sha)), Some(csrf), body),
    ))
}

/// A release's changes since the release before it: the commits between
/// them and their combined diff (`None` when the repository cannot say).
pub fn since_previous(
    gantry: &Gantry,
    app: &AppName,
    release: &crate::store::Release,
    previous: Option<&crate::store::Release>,
) -> Option<Markup> {
    if release.commit_sha.is_empty() {
        return None;
    }
    let path = crate::git::repos::repo_path(&gantry.config, app);
    let repo = browse::Repo::open(&path).ok()?;
    let new = repo.resolve(&release.commit_sha).ok()?;
    let old = previous
        .filter(|p| !p.commit_sha.is_empty())
        .and_then(|p| repo.resolve(&p.commit_sha).ok());
    if old == Some(new) {
        return Some(html! {
            h2 id="changes" { "Changes" }
            p { "The same commit as the release before: only config or formation changed." }
        });
    }
    let commits = repo.log(new, old, RANGE_LIMIT).ok()?;
    let diff = repo.diff(old, new).ok()?;
    let became = HashMap::new();
    Some(html! {
        h2 id="changes" {
            "Changes since "
            @match previous { Some(p) => { "v" (p.version) }, None => "the start" }
        }
        p { (commits.len()) " commit(s)" @if commits.len() == RANGE_LIMIT { " (the newest " (RANGE_LIMIT) ")" } ", " (diff.files.len()) " file(s) changed" }
        (commit_table(app.as_str(), &commits, &became))
        (render_diff(&diff))
    })
}

fn render_diff(diff: &Diff) -> Markup {
    html! {
        @for file in &diff.files {
            h3 {
                code { (file.path) } " "
                small { (match file.change { Change::Added => "added", Change::Deleted => "deleted", Change::Modified => "modified" }) }
            }
            @if let Some(note) = &file.note { p { (note) } }
            @if let Some(patch) = &file.patch {
                pre.diff {
                    @for line in patch.lines() {
                        @if line.starts_with("@@") { span.hunk { (line) } }
                        @else if line.starts_with('+') { span.add { (line) } }
                        @else if line.starts_with('-') { span.del { (line) } }
                        @else { (line) "\n" }
                    }
                }
            }
        }
        @if diff.more_files { p { "More files changed than are shown here." } }
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
