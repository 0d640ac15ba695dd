//! `/system`: gantry drawn as the four parts of any CI/CD system (git
//! server, job log, build server, artifact system) plus deploy and the
//! proxy, live: each box with what it holds now, each arrow with what flows
//! along it now, each box a link to its page. Server-rendered SVG; no
//! script.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use maud::{html, Markup};

use super::pages::layout;
use super::respond::{html as page, Page};
use super::session::LoggedIn;
use crate::artifacts::human_bytes;
use crate::context::Gantry;
use crate::store::ReleaseStatus;

/// Certificates that end within this many days count as expiring soon.
const EXPIRING_DAYS: i64 = 21;

/// What the chart shows, read at the moment the page is made.
#[derive(Debug, Default)]
struct Now {
    repositories: usize,
    pushes: usize,
    queued_runs: i64,
    running_runs: i64,
    executors: (usize, usize),
    next_run: Option<(String, String)>,
    building: usize,
    build_cache: Option<u64>,
    images: usize,
    images_bytes: Option<u64>,
    job_artifacts: u64,
    prunable: usize,
    live_releases: usize,
    apps: usize,
    replicas: usize,
    routes: usize,
    /// Requests per second through the proxy over the last whole minute.
    per_second: f64,
    certificates: usize,
    expiring: Vec<String>,
}

async fn read_now(gantry: &Gantry, visitor: &LoggedIn) -> anyhow::Result<Now> {
    let caller = visitor.caller();
    let mut now = Now {
        pushes: gantry.pushes.live(),
        executors: gantry.executors.executors(),
        ..Now::default()
    };
    for stat in gantry.store.run_stats().await? {
        match stat.status.as_str() {
            "queued" => now.queued_runs += stat.count,
            "running" => now.running_runs += stat.count,
            _ => {}
        }
    }
    let jobs = crate::jobs::overview(gantry, caller).await?;
    now.next_run = jobs
        .iter()
        .filter_map(|j| j.next.clone().map(|n| (n, j.name.clone())))
        .min();
    let usage = crate::artifacts::disk_usage().await;
    now.build_cache = usage.as_ref().map(|u| u.build_cache);
    let mut image_ids = std::collections::BTreeSet::new();
    for app in gantry.store.list_apps().await? {
        if !caller.may_manage(&app.name) {
            continue;
        }
        now.apps += 1;
        if crate::git::repos::repo_path(&gantry.config, &app.name)
            .join("HEAD")
            .exists()
        {
            now.repositories += 1;
        }
        if app.current_release.is_some() {
            now.live_releases += 1;
        }
        let releases = gantry.store.list_releases(&app.name).await?;
        now.building += releases
            .iter()
            .filter(|r| r.status == ReleaseStatus::Building)
            .count();
        if let Ok((artifacts, doomed)) = crate::artifacts::overview(gantry, &app, &releases).await {
            now.images += artifacts.len();
            image_ids.extend(artifacts.into_iter().map(|a| a.id));
            now.prunable += doomed.len();
        }
        if let Ok(instances) = gantry.runtime.list(&app.name).await {
            now.replicas += instances.iter().filter(|i| i.running).count();
        }
    }
    // The apps' images' own bytes: what they hold that no other image shares.
    now.images_bytes = usage.map(|u| {
        image_ids
            .iter()
            .filter_map(|id| u.images.get(id))
            .map(|(size, shared)| size.saturating_sub(*shared))
            .sum()
    });
    now.job_artifacts = dir_size(&gantry.config.runs_dir());
    now.routes = gantry
        .routing
        .snapshot()
        .map_or(0, |state| state.routes.len());
    let last_minute = crate::time::now_ms() / 60_000 - 1;
    now.per_second = gantry.store.requests_in(last_minute).await? as f64 / 60.0;
    let soon = crate::time::now_ms() / 1000 + EXPIRING_DAYS * 24 * 3600;
    if let Ok(entries) = std::fs::read_dir(gantry.config.certs_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".pem") else {
                continue;
            };
            if stem == crate::certs::LOCAL_CA {
                continue;
            }
            let Ok(pem) = std::fs::read(entry.path()) else {
                continue;
            };
            now.certificates += 1;
            if crate::certs::not_after(&pem).is_some_and(|end| end < soon) {
                now.expiring.push(stem.replace("_wildcard", "*"));
            }
        }
    }
    Ok(now)
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_size(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /system`.
pub async fn system(State(gantry): State<Arc<Gantry>>, visitor: LoggedIn) -> Page {
    let now = read_now(&gantry, &visitor).await?;
    let body = html! {
        h1 { "System" }
        p { "gantry as the four parts of any CI/CD system, with deploy and the proxy: what each holds and what flows between them right now. Each box opens its page." }
        div.wrap { (chart(&now)) }
    };
    Ok(page(
        StatusCode::OK,
        layout("System", Some(visitor.csrf()), body),
    ))
}

/// One box: a link, a title and its lines.
fn part(x: u32, y: u32, href: &str, title: &str, lines: &[String], busy: bool) -> Markup {
    let stroke = if busy { "#16794a" } else { "#1d2330" };
    html! {
        a href=(href) class="part" {
            rect x=(x) y=(y) width="230" height="130" rx="8" fill="#fff" stroke=(stroke) stroke-width=(if busy { "3" } else { "1.5" }) {}
            text x=(x + 12) y=(y + 26) font-weight="700" font-size="16" fill="#1d2330" { (title) }
            @for (i, line) in lines.iter().enumerate() {
                text x=(x + 12) y=(y + 50 + 18 * i as u32) font-size="13" fill="#39414f" { (line) }
            }
        }
    }
}

/// An arrow from (x1, y1) to (x2, y2) with what flows along it.
fn arrow(from: (u32, u32), to: (u32, u32), label: &str, flowing: bool) -> Markup {
    let color = if flowing { "#16794a" } else { "#8a93a3" };
    let (mx, my) = ((from.0 + to.0) / 2, (from.1 + to.1) / 2);
    html! {
        line x1=(from.0) y1=(from.1) x2=(to.0) y2=(to.1) stroke=(color) stroke-width=(if flowing { "3" } else { "1.5" }) marker-end=(if flowing { "url(#head-on)" } else { "url(#head)" }) {}
        text x=(mx) y=(my - 6) font-size="12" text-anchor="middle" fill=(color) { (label) }
    }
}

fn plural(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    let text = n.to_string();
    format!("{text} {}", if text == "1" { one } else { many })
}

fn chart(now: &Now) -> Markup {
    let bytes = |b: Option<u64>| b.map_or("unknown".to_owned(), human_bytes);
    let (busy, total) = now.executors;
    let git = [
        plural(now.repositories, "repository", "repositories"),
        plural(now.pushes, "push in progress", "pushes in progress"),
        "clones and pushes over SSH".to_owned(),
    ];
    let jobs = [
        format!("{} queued, {} running", now.queued_runs, now.running_runs),
        format!("executors: {busy} of {total} busy"),
        match &now.next_run {
            Some((at, job)) => format!("next: {job} at {at}"),
            None => "nothing scheduled".to_owned(),
        },
    ];
    let build = [
        plural(now.building, "build running", "builds running"),
        format!("build cache: {}", bytes(now.build_cache)),
        "Dockerfile and buildpacks".to_owned(),
    ];
    let artifacts = [
        format!(
            "{}, {} of their own",
            plural(now.images, "image", "images"),
            bytes(now.images_bytes)
        ),
        format!("job artifacts: {}", human_bytes(now.job_artifacts)),
        format!(
            "next prune removes {}",
            plural(now.prunable, "image", "images")
        ),
    ];
    let deploy = [
        format!("{} of {} apps live", now.live_releases, now.apps),
        plural(now.replicas, "process running", "processes running"),
        "releases, rollbacks, formation".to_owned(),
    ];
    let proxy = [
        format!(
            "{}, {:.1} requests/s",
            plural(now.routes, "route", "routes"),
            now.per_second
        ),
        plural(now.certificates, "certificate", "certificates"),
        if now.expiring.is_empty() {
            format!("none expires within {EXPIRING_DAYS} days")
        } else {
            format!("expiring soon: {}", now.expiring.join(", "))
        },
    ];
    html! {
        svg width="100%" viewBox="0 0 860 340" role="img" aria-label="gantry's parts and what flows between them" style="max-width:860px;background:#f6f7f9" {
            defs {
                marker id="head" markerWidth="10" markerHeight="10" refX="9" refY="5" orient="auto" {
                    path d="M0,0 L10,5 L0,10 z" fill="#8a93a3" {}
                }
                marker id="head-on" markerWidth="10" markerHeight="10" refX="9" refY="5" orient="auto" {
                    path d="M0,0 L10,5 L0,10 z" fill="#16794a" {}
                }
            }
            // Top row: what a push goes through; bottom row: what serves it.
            (part(10, 10, "/", "Git server", &git, now.pushes > 0))
            (part(315, 10, "/", "Build server", &build, now.building > 0))
            (part(620, 10, "/", "Artifact system", &artifacts, false))
            (part(10, 200, "/jobs", "Job log", &jobs, now.running_runs > 0))
            (part(315, 200, "/", "Proxy", &proxy, now.routes > 0))
            (part(620, 200, "/", "Deploy", &deploy, now.replicas > 0))
            (arrow((240, 60), (313, 60), &plural(now.pushes, "push", "pushes"), now.pushes > 0))
            (arrow((545, 60), (618, 60), &plural(now.building, "image", "images"), now.building > 0))
            (arrow((735, 140), (735, 198), "releases", now.live_releases > 0))
            (arrow((618, 265), (547, 265), &plural(now.routes, "route", "routes"), now.routes > 0))
            (arrow((200, 198), (330, 142), &plural(now.running_runs, "run", "runs"), now.running_runs > 0))
        }
    }
}
