//! Artifacts: the image each release runs, and how long it is kept.
//!
//! Every build makes one image, tagged `gantry/APP:vN`. Config changes and
//! rollbacks reuse an earlier release's image. Retention keeps the images of the
//! app's last N releases that went live (default 5, `artifacts:set APP keep N`),
//! and always the current one, so a rollback within N never needs a rebuild.
//! Older images are pruned after every deploy and daily, and the freed disk
//! space is reported. The daily job also prunes dangling build layers older
//! than a day, and BuildKit's build cache unused for a week.

pub mod registry;

use std::collections::{HashMap, HashSet};

use bollard::models::ImageSummary;
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};
use bollard::Docker;

use crate::context::Gantry;
use crate::names::AppName;
use crate::store::{AppRecord, Release, ReleaseStatus, StoreError};

/// Releases whose images are kept, unless the app says otherwise.
pub const DEFAULT_KEEP: i64 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot talk to the Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tag of release `vN`'s image: `gantry/APP:vN`.
pub fn image_tag(app: &AppName, version: i64) -> String {
    format!("gantry/{app}:v{version}")
}

/// Labels of a buildpack image, written into the slug's image config for
/// free. A Dockerfile build gets none: the classic builder turns the build
/// API's labels into a last LABEL step, one more container commit (about 1 s
/// per push here). Images are found by their repository, `gantry/APP`.
pub fn image_labels(app: &AppName) -> HashMap<String, String> {
    HashMap::from([("gantry.app".to_owned(), app.to_string())])
}

/// One image of an app, as `artifacts APP` lists it.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub tag: String,
    pub id: String,
    pub size: i64,
    /// Unix seconds.
    pub created: i64,
    /// The releases that run (or ran) this image, newest first.
    pub used_by: Vec<i64>,
}

/// What a prune removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<String>,
    /// Bytes of image layers the engine no longer holds, as it counts
    /// them before and after; `None` when it could not say.
    pub freed: Option<u64>,
}

impl PruneReport {
    /// `pruned 2 old image(s), freed 4.1 MB`, or nothing when nothing was pruned.
    pub fn summary(&self) -> Option<String> {
        (!self.removed.is_empty()).then(|| {
            format!(
                "pruned {} old image(s), freed {}",
                self.removed.len(),
                self.freed_text()
            )
        })
    }

    /// `4.1 MB`, or that the engine did not say.
    pub fn freed_text(&self) -> String {
        match self.freed {
            Some(bytes) => human_bytes(bytes),
            None => "an unknown amount".to_owned(),
        }
    }
}

/// What the engine counts of its disk (`GET /system/df`): all image
/// layers, and each image's size and the part of it other images share.
#[derive(Debug, Default)]
pub struct DiskUsage {
    pub layers: u64,
    /// Image id → (size, shared size).
    pub images: HashMap<String, (u64, u64)>,
    /// BuildKit's build cache, in all.
    pub build_cache: u64,
}

/// The engine's disk usage, asked over its unix socket directly (bollard
/// 0.21's model of that answer does not read API 1.41's); `None` if it
/// cannot say.
pub async fn disk_usage() -> Option<DiskUsage> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(host) => host.strip_prefix("unix://")?.to_owned(),
        Err(_) => "/var/run/docker.sock".to_owned(),
    };
    let asked = async {
        let mut stream = tokio::net::UnixStream::connect(&socket).await.ok()?;
        stream
            .write_all(b"GET /v1.41/system/df HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), asked)
        .await
        .ok()??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    parse_disk_usage(body)
}

fn parse_disk_usage(body: &str) -> Option<DiskUsage> {
    let df: serde_json::Value = serde_json::from_str(body).ok()?;
    let count = |v: &serde_json::Value| v.as_i64().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let images = df
        .get("Images")
        .and_then(|i| i.as_array())
        .map(|images| {
            images
                .iter()
                .filter_map(|image| {
                    let id = image.get("Id")?.as_str()?.to_owned();
                    let size = count(image.get("Size")?);
                    let shared = image.get("SharedSize").map_or(0, count);
                    Some((id, (size, shared)))
                })
                .collect()
        })
        .unwrap_or_default();
    let build_cache = df
        .get("BuildCache")
        .and_then(|c| c.as_array())
        .map_or(0, |records| {
            records
                .iter()
                .filter_map(|r| r.get("Size"))
                .map(count)
                .sum()
        });
    Some(DiskUsage {
        layers: count(df.get("LayersSize")?),
        images,
        build_cache,
    })
}

/// What deleting `deleted` (image ids) gave back: the engine's layer total
/// before less after, and at least what those images held alone (which
/// holds even if another build added layers meanwhile).
fn reclaimed(before: &DiskUsage, after: Option<&DiskUsage>, deleted: &[String]) -> u64 {
    let alone: u64 = deleted
        .iter()
        .filter_map(|id| before.images.get(id))
        .map(|(size, shared)| size.saturating_sub(*shared))
        .sum();
    let delta = after.map_or(0, |after| before.layers.saturating_sub(after.layers));
    alone.max(delta)
}

async fn app_images(
    docker: &Docker,
    app: &AppName,
) -> Result<Vec<ImageSummary>, bollard::errors::Error> {
    let filters = HashMap::from([("reference", vec![format!("gantry/{app}")])]);
    docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
}

/// The app's images, newest first, with the releases that use each.
pub async fn list(gantry: &Gantry, app: &AppName) -> Result<Vec<Artifact>, ArtifactError> {
    let releases = gantry.store.list_releases(app).await?;
    let images = app_images(&gantry.docker, app).await?;
    Ok(artifacts_of(app, &releases, &images))
}

/// What an overview of the app's images needs, read once: its images, and
/// those the next prune removes (tag, image id).
pub async fn overview(
    gantry: &Gantry,
    record: &AppRecord,
    releases: &[Release],
) -> Result<(Vec<Artifact>, Vec<(String, String)>), ArtifactError> {
    let images = app_images(&gantry.docker, &record.name).await?;
    Ok((
        artifacts_of(&record.name, releases, &images),
        doomed(record, releases, images),
    ))
}

fn artifacts_of(app: &AppName, releases: &[Release], images: &[ImageSummary]) -> Vec<Artifact> {
    let prefix = format!("gantry/{app}:");
    let mut artifacts: Vec<Artifact> = images
        .iter()
        .flat_map(|image| {
            let prefix = &prefix;
            image
                .repo_tags
                .iter()
                .filter(move |t| t.starts_with(prefix))
                .map(move |tag| Artifact {
                    used_by: releases
                        .iter()
                        .filter(|r| &r.image == tag && r.status == ReleaseStatus::Succeeded)
                        .map(|r| r.version)
                        .collect(),
                    tag: tag.clone(),
                    id: image.id.clone(),
                    size: image.size,
                    created: image.created,
                })
        })
        .collect();
    artifacts.sort_by(|a, b| b.created.cmp(&a.created).then(b.tag.cmp(&a.tag)));
    artifacts
}

/// Removes the app's images that retention does not keep.
pub async fn prune(gantry: &Gantry, app: &AppName) -> Result<PruneReport, ArtifactError> {
    let doomed = prunable(gantry, app).await?;
    remove_images(&gantry.docker, doomed).await
}

/// The app's images (tag, image id) that retention does not keep: what the
/// next prune removes.
pub async fn prunable(
    gantry: &Gantry,
    app: &AppName,
) -> Result<Vec<(String, String)>, ArtifactError> {
    let Some(record) = gantry.store.get_app(app).await? else {
        return Ok(Vec::new());
    };
    let releases = gantry.store.list_releases(app).await?;
    let images = app_images(&gantry.docker, app).await?;
    Ok(doomed(&record, &releases, images))
}

/// Of the app's `images`, the tags retention does not keep.
fn doomed(
    record: &AppRecord,
    releases: &[Release],
    images: Vec<ImageSummary>,
) -> Vec<(String, String)> {
    let app = &record.name;
    let keep_n = record.keep_releases.unwrap_or(DEFAULT_KEEP).max(1);
    let mut keep: HashSet<&str> = releases
        .iter()
        .filter(|r| r.status == ReleaseStatus::Succeeded && !r.image.is_empty())
        .take(usize::try_from(keep_n).unwrap_or(usize::MAX))
        .map(|r| r.image.as_str())
        .collect();
    // A deploy in progress (`building`) has not gone live yet: keep its image too.
    keep.extend(
        releases
            .iter()
            .filter(|r| {
                r.status == ReleaseStatus::Building || Some(r.version) == record.current_release
            })
            .map(|r| r.image.as_str()),
    );
    images
        .into_iter()
        .flat_map(|image| {
            let id = image.id.clone();
            image
                .repo_tags
                .into_iter()
                .map(move |tag| (tag, id.clone()))
        })
        .filter(|(tag, _)| {
            tag.starts_with(&format!("gantry/{app}:")) && !keep.contains(tag.as_str())
        })
        .collect()
}

/// Removes dangling images (untagged and unused: the layers a failed build
/// left) older than a day, as `docker image prune --filter until=24h` does.
/// Whether the engine still has `image` (a rollback needs it).
pub async fn exists(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

/// Returns the bytes reclaimed. Run by the daily job.
pub async fn prune_dangling(docker: &Docker) -> Result<u64, ArtifactError> {
    let filters = HashMap::from([
        ("dangling", vec!["true".to_string()]),
        ("until", vec!["24h".to_string()]),
    ]);
    let options = bollard::query_parameters::PruneImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let response = docker.prune_images(Some(options)).await?;
    Ok(response
        .space_reclaimed
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0))
}

/// How long BuildKit's build cache may go unused before the daily job
/// removes it: a week keeps every app that is pushed at all fast to build.
pub const BUILD_CACHE_UNUSED: &str = "168h";

/// Removes BuildKit cache records no build used for [`BUILD_CACHE_UNUSED`]
/// (`docker builder prune --filter until=168h`); returns the bytes reclaimed.
/// Records a build is using are never removed by the engine.
pub async fn prune_build_cache(docker: &Docker) -> Result<u64, ArtifactError> {
    let filters = HashMap::from([("until", vec![BUILD_CACHE_UNUSED.to_string()])]);
    let options = bollard::query_parameters::PruneBuildOptionsBuilder::default()
        .filters(&filters)
        .build();
    let response = docker.prune_build(Some(options)).await?;
    Ok(response
        .space_reclaimed
        .and_then(|b| u64::try_from(b).ok())
        .unwrap_or(0))
}

/// Removes every image of `app` (for `apps:destroy`).
pub async fn remove_all(docker: &Docker, app: &AppName) -> Result<PruneReport, ArtifactError> {
    let all: Vec<(String, String)> = app_images(docker, app)
        .await?
        .into_iter()
        .flat_map(|image| {
            let id = image.id.clone();
            let tags = if image.repo_tags.is_empty() {
                vec![id.clone()]
            } else {
                image.repo_tags
            };
            tags.into_iter().map(move |tag| (tag, id.clone()))
        })
        .collect();
    remove_images(docker, all).await
}

/// Untags each `(tag, image id)`; Docker deletes an image and the layers only it
/// used when its last tag goes. Freed bytes are the sizes, read from the image
/// histories beforehand, of the layers Docker reports deleted.
async fn remove_images(
    docker: &Docker,
    doomed: Vec<(String, String)>,
) -> Result<PruneReport, ArtifactError> {
    let mut report = PruneReport::default();
    if doomed.is_empty() {
        return Ok(report);
    }
    // No build adds layers while the gate is held, so the engine's count
    // before and after is what these removals gave back.
    let _gate = crate::context::image_gate::IMAGE_GATE.write().await;
    let before = disk_usage().await;
    let mut deleted = Vec::new();
    for (tag, _) in doomed {
        let options = RemoveImageOptionsBuilder::default().force(false).build();
        match docker.remove_image(&tag, Some(options), None).await {
            Ok(items) => {
                deleted.extend(items.into_iter().filter_map(|item| item.deleted));
                report.removed.push(tag);
            }
            // In use by a container (e.g. one still draining): kept until next time.
            Err(err) => tracing::debug!(%tag, error = %err, "image not removed"),
        }
    }
    report.freed = if deleted.is_empty() {
        // Only tags went: every layer is still used by another image.
        Some(0)
    } else {
        let after = disk_usage().await;
        before.map(|before| reclaimed(&before, after.as_ref(), &deleted))
    };
    Ok(report)
}

/// `4.1 MB`
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_docker() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(4_100_000), "4.1 MB");
        assert_eq!(human_bytes(2_500_000_000), "2.5 GB");
    }

    #[test]
    fn reclaimed_bytes_come_from_the_engines_own_count() {
        let before = parse_disk_usage(
            r#"{"LayersSize": 10000000, "Images": [
                {"Id": "sha256:a", "Size": 4000000, "SharedSize": 1000000},
                {"Id": "sha256:b", "Size": 2000000, "SharedSize": -1}
            ]}"#,
        )
        .expect("df");
        assert_eq!(before.images["sha256:b"], (2_000_000, 0));
        let after = DiskUsage {
            layers: 6_500_000,
            ..DiskUsage::default()
        };
        let deleted = vec!["sha256:a".to_owned()];
        // The engine's total fell by 3.5 MB: more than a held alone.
        assert_eq!(reclaimed(&before, Some(&after), &deleted), 3_500_000);
        // Another build added layers meanwhile: still what a held alone.
        let grown = DiskUsage {
            layers: 12_000_000,
            ..DiskUsage::default()
        };
        assert_eq!(reclaimed(&before, Some(&grown), &deleted), 3_000_000);
        assert!(parse_disk_usage("not json").is_none());
    }

    #[test]
    fn an_empty_prune_says_nothing() {
        assert_eq!(PruneReport::default().summary(), None);
        let report = PruneReport {
            removed: vec!["gantry/a:v1".into()],
            freed: Some(1_500_000),
        };
        assert_eq!(
            report.summary().as_deref(),
            Some("pruned 1 old image(s), freed 1.5 MB")
        );
        let unknown = PruneReport {
            freed: None,
            ..report
        };
        assert_eq!(
            unknown.summary().as_deref(),
            Some("pruned 1 old image(s), freed an unknown amount")
        );
    }
}
