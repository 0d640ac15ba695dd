//! `/apps/APP/metrics`: the app's last hour and last day in graphs drawn on
//! the server (SVG, by plotters; no script): requests and 5xx per minute,
//! p50 and p95 latency, bytes in and out, replicas running, memory per
//! process, with each deploy and rollback marked where it happened. From
//! the minutes `traffic` keeps in the store.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{html, Markup, PreEscaped};
use plotters::prelude::*;

use super::pages::{app_nav, layout};
use super::respond::{html as page, not_found, Page};
use super::session::LoggedIn;
use crate::context::Gantry;
use crate::store::{ReleaseKind, TrafficMinute};
use crate::traffic::quantile_ms;

/// One line of a graph.
struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    points: Vec<(i64, f64)>,
}

/// A deploy or rollback: its minute and `vN`.
type Marker = (i64, String);

const BLUE: RGBColor = RGBColor(0x3a, 0x6e, 0xa5);
const RED: RGBColor = RGBColor(0xb3, 0x26, 0x1e);
const GREEN: RGBColor = RGBColor(0x16, 0x79, 0x4a);
const AMBER: RGBColor = RGBColor(0x8a, 0x61, 0x00);

/// `GET /apps/APP/metrics`.
pub async fn metrics(
    State(gantry): State<Arc<Gantry>>,
    visitor: LoggedIn,
    Path(name): Path<String>,
) -> Page {
    let csrf = visitor.csrf();
    let Some(app) = super::session::visible_app(&gantry, visitor.caller(), &name)
        .await?
        .map(|r| r.name)
    else {
        return Ok(not_found(csrf));
    };
    let now = crate::time::now_ms() / 60_000;
    let minutes = gantry
        .store
        .traffic_since(app.as_str(), now - 24 * 60)
        .await?;
    let markers: Vec<Marker> = gantry
        .store
        .list_releases(&app)
        .await?
        .into_iter()
        .filter(|r| matches!(r.kind, ReleaseKind::Deploy | ReleaseKind::Rollback))
        .map(|r| (r.created_at / 60_000, format!("v{}", r.version)))
        .collect();
    let body = html! {
        h1 { a href={ "/apps/" (app) } { (app) } " · metrics" }
        (app_nav(app.as_str()))
        p { "Through gantry's proxies (on a swarm, every node's edge too), per minute; each deploy and rollback is marked. Bytes are HTTP's, heads and bodies, after TLS. Memory is sampled from each engine that runs the app's processes." }
        (window("Last hour", now - 60, now, &minutes, &markers))
        (window("Last day", now - 24 * 60, now, &minutes, &markers))
    };
    Ok(page(
        StatusCode::OK,
        layout(&format!("{app} metrics"), Some(csrf), body),
    ))
}

fn window(title: &str, from: i64, to: i64, all: &[TrafficMinute], markers: &[Marker]) -> Markup {
    let minutes: Vec<&TrafficMinute> = all.iter().filter(|m| m.minute >= from).collect();
    let requests: i64 = minutes.iter().map(|m| m.requests).sum();
    let errors: i64 = minutes.iter().map(|m| m.errors).sum();
    let received: i64 = minutes.iter().map(|m| m.received).sum();
    let sent: i64 = minutes.iter().map(|m| m.sent).sum();
    let size = |bytes: i64| crate::artifacts::human_bytes(u64::try_from(bytes).unwrap_or(0));
    let markers: Vec<Marker> = markers
        .iter()
        .filter(|(m, _)| *m >= from && *m <= to)
        .cloned()
        .collect();
    let series = |f: &dyn Fn(&TrafficMinute) -> Option<f64>| -> Vec<(i64, f64)> {
        minutes
            .iter()
            .filter_map(|m| f(m).map(|v| (m.minute, v)))
            .collect()
    };
    let traffic = graph(
        "requests per minute",
        (from, to),
        &[
            Line {
                label: "requests",
                color: BLUE,
                points: series(&|m| Some(m.requests as f64)),
            },
            Line {
                label: "5xx",
                color: RED,
                points: series(&|m| Some(m.errors as f64)),
            },
        ],
        &markers,
    );
    let latency = graph(
        "latency, ms",
        (from, to),
        &[
            Line {
                label: "p50",
                color: GREEN,
                points: series(&|m| quantile_ms(&m.buckets, 0.5)),
            },
            Line {
                label: "p95",
                color: AMBER,
                points: series(&|m| quantile_ms(&m.buckets, 0.95)),
            },
        ],
        &markers,
    );
    let bytes = graph(
        "traffic, kB per minute",
        (from, to),
        &[
            Line {
                label: "in",
                color: GREEN,
                points: series(&|m| Some(m.received as f64 / 1e3)),
            },
            Line {
                label: "out",
                color: BLUE,
                points: series(&|m| Some(m.sent as f64 / 1e3)),
            },
        ],
        &markers,
    );
    // One line per process, in MB.
    let processes: std::collections::BTreeSet<&String> =
        minutes.iter().flat_map(|m| m.memory.keys()).collect();
    const COLORS: [RGBColor; 4] = [BLUE, GREEN, AMBER, RED];
    let memory_lines: Vec<Line> = processes
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, process)| Line {
            label: process.as_str(),
            color: COLORS[i % COLORS.len()],
            points: series(&|m| m.memory.get(*process).map(|b| *b as f64 / 1e6)),
        })
        .collect();
    let memory = graph(
        "memory per process, MB",
        (from, to),
        &memory_lines,
        &markers,
    );
    let replicas = graph(
        "replicas running",
        (from, to),
        &[Line {
            label: "replicas",
            color: BLUE,
            points: series(&|m| Some(m.replicas as f64)),
        }],
        &markers,
    );
    html! {
        section.window {
            h2 { (title) }
            p.summary { (requests) " requests, " (errors) " with a 5xx status, " (size(received)) " in, " (size(sent)) " out" @if !markers.is_empty() { ", " (markers.len()) " deploy(s)" } "." }
            div.graph { (PreEscaped(traffic)) }
            div.graph { (PreEscaped(latency)) }
            div.graph { (PreEscaped(bytes)) }
            div.graph { (PreEscaped(replicas)) }
            div.graph { (PreEscaped(memory)) }
        }
    }
}

/// One SVG graph over minutes `from..to`; a failure to draw is shown as
/// text instead.
fn graph(title: &str, (from, to): (i64, i64), lines: &[Line<'_>], markers: &[Marker]) -> String {
    let mut svg = String::new();
    let drawn = draw(&mut svg, title, (from, to), lines, markers);
    match drawn {
        Ok(()) => svg,
        Err(err) => html! { p { "cannot draw " (title) ": " (err) } }.into_string(),
    }
}

fn draw(
    svg: &mut String,
    title: &str,
    (from, to): (i64, i64),
    lines: &[Line<'_>],
    markers: &[Marker],
) -> Result<(), Box<dyn std::error::Error>> {
    let top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|(_, v)| *v))
        .fold(0.0_f64, f64::max);
    let top = if top <= 0.0 { 1.0 } else { top * 1.15 };
    let root = SVGBackend::with_string(svg, (760, 200)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(52)
        .build_cartesian_2d(from..to.max(from + 1), 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(7)
        .y_labels(4)
        .x_label_formatter(&|minute: &i64| clock(*minute))
        .light_line_style(RGBColor(0xee, 0xf0, 0xf4))
        .draw()?;
    for line in lines {
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                line.color.stroke_width(2),
            ))?
            .label(line.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], line.color.stroke_width(2))
            });
    }
    for (minute, label) in markers {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*minute, 0.0), (*minute, top)],
            RGBColor(0x6e, 0x77, 0x81).stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*minute, top * 0.92),
            ("sans-serif", 12).into_font().color(&BLACK),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(RGBColor(0xe3, 0xe6, 0xeb))
        .draw()?;
    root.present()?;
    Ok(())
}

/// `HH:MM` UTC of a unix minute.
fn clock(minute: i64) -> String {
    let day = minute.rem_euclid(24 * 60);
    format!("{:02}:{:02}", day / 60, day % 60)
}
