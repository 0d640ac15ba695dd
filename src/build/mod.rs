//! The build server: turns a pushed source tree into a Docker image.
//!
//! It makes an artifact and never runs it; deploying is `deploy`'s job. Today it
//! builds a `Dockerfile` at the root of the tree with the Docker engine (bollard);
//! buildpack builds come next and will live beside it.

pub mod buildpack;
pub mod container;
pub mod debian;
pub mod runtimes;
pub mod slug;
pub mod stack;
pub mod upstream;

use std::collections::HashMap;

use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the Docker build failed: {0}")]
    Failed(String),
    #[error("cannot talk to the Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// A buildpack stopped for a runtime gantry may fetch (`upstream`):
    /// its `/gantry/out/need` line.
    #[error("a buildpack needs a runtime that is not here: {0}")]
    NeedsRuntime(String),
}

/// An image the build produced.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub id: String,
    /// Bytes.
    pub size: i64,
    /// The single port the image `EXPOSE`s, if it exposes exactly one.
    pub exposed_port: Option<u16>,
}

impl BuildError {
    /// The engine lost a cached layer mid-build: something outside this gantry
    /// (another gantry on the same engine, a `docker image prune`) removed it.
    /// Building again picks a layer that exists.
    fn is_cache_race(&self) -> bool {
        matches!(self, BuildError::Failed(message)
            if message.contains("failed to get digest") || message.contains("No such image"))
    }
}

/// Which builder of the engine a Dockerfile build uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builder {
    /// BuildKit, through a session: the default.
    BuildKit,
    /// The classic builder: each step a container commit.
    Classic,
}

/// Builds `context` (a tar of the tree) with its root `Dockerfile`, tags the image
/// `tag`, and passes each line of build output to `on_line` as it arrives.
/// BuildKit builds it; an engine without BuildKit (or `GANTRY_BUILDKIT=0`)
/// gets the classic builder.
pub async fn build_dockerfile(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    labels: &HashMap<String, String>,
    mut on_line: impl FnMut(&str),
) -> Result<BuiltImage, BuildError> {
    let _gate = crate::context::image_gate::IMAGE_GATE.read().await;
    let context = bytes::Bytes::from(context);
    let mut builder = if std::env::var("GANTRY_BUILDKIT").is_ok_and(|v| v == "0") {
        Builder::Classic
    } else {
        Builder::BuildKit
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        match build_once(docker, context.clone(), tag, labels, builder, &mut on_line).await {
            Err(Unstarted(err)) if builder == Builder::BuildKit => {
                tracing::warn!(%tag, error = %err, "BuildKit is not usable; building with the classic builder");
                on_line(&format!(
                    "BuildKit is not usable on this engine ({err}); building with the classic builder"
                ));
                builder = Builder::Classic;
            }
            Err(Unstarted(err)) => return Err(err),
            Err(Started(err)) if err.is_cache_race() && attempts < 3 => {
                tracing::warn!(%tag, error = %err, "a cached layer vanished mid-build; building again");
                on_line("a cached layer was removed during the build; building again");
            }
            Err(Started(err)) => return Err(err),
            Ok(built) => return Ok(built),
        }
    }
}

/// How a build failed: before the engine reported anything (the builder
/// itself is unusable), or while it built.
enum Failure {
    Unstarted(BuildError),
    Started(BuildError),
}
use Failure::{Started, Unstarted};

async fn build_once(
    docker: &Docker,
    context: bytes::Bytes,
    tag: &str,
    labels: &HashMap<String, String>,
    builder: Builder,
    on_line: &mut impl FnMut(&str),
) -> Result<BuiltImage, Failure> {
    let mut options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels);
    let session = format!("gantry-{}", rand::random::<u64>());
    if builder == Builder::BuildKit {
        options = options
            .version(bollard::query_parameters::BuilderVersion::BuilderBuildKit)
            .session(&session);
    }
    let mut stream = docker.build_image(options.build(), None, Some(bollard::body_full(context)));
    let mut pending = String::new();
    let mut started = false;
    let mut steps = BuildKitSteps::default();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(Started(BuildError::Failed(error)))
            }
            Err(err) if !started => return Err(Unstarted(err.into())),
            Err(err) => return Err(Started(err.into())),
        };
        started = true;
        if let Some(bollard::models::BuildInfoAux::BuildKit(status)) = &info.aux {
            steps.show(status, on_line);
        }
        if let Some(text) = info.stream {
            pending.push_str(&text);
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                let line = line.trim_end();
                if !line.is_empty() {
                    on_line(line);
                }
            }
        }
        if let Some(detail) = info.error_detail {
            let message = detail.message.unwrap_or_else(|| "unknown error".into());
            return Err(Started(BuildError::Failed(message)));
        }
    }
    if !pending.trim().is_empty() {
        on_line(pending.trim_end());
    }
    if let Some(error) = steps.error {
        return Err(Started(BuildError::Failed(error)));
    }
    let image = docker
        .inspect_image(tag)
        .await
        .map_err(|e| Started(e.into()))?;
    let exposed: Vec<u16> = image
        .config
        .and_then(|c| c.exposed_ports)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.split('/').next()?.parse().ok())
        .collect();
    Ok(BuiltImage {
        id: image.id.unwrap_or_default(),
        size: image.size.unwrap_or(0),
        exposed_port: match exposed.as_slice() {
            [one] => Some(*one),
            _ => None,
        },
    })
}

/// BuildKit's progress as lines: each step once when it starts (`CACHED`
/// when it was), the output of `RUN` steps, and the first error.
#[derive(Default)]
struct BuildKitSteps {
    shown: std::collections::HashSet<String>,
    error: Option<String>,
}

impl BuildKitSteps {
    fn show(
        &mut self,
        status: &bollard::moby::buildkit::v1::StatusResponse,
        on_line: &mut impl FnMut(&str),
    ) {
        for vertex in &status.vertexes {
            let internal = vertex.name.starts_with("[internal]");
            if (vertex.started.is_some() || vertex.cached)
                && !internal
                && self.shown.insert(vertex.digest.clone())
            {
                let cached = if vertex.cached { " CACHED" } else { "" };
                on_line(&format!("{}{cached}", vertex.name));
            }
            if !vertex.error.is_empty() && self.error.is_none() {
                self.error = Some(format!("{}: {}", vertex.name, vertex.error));
            }
        }
        for log in &status.logs {
            for line in String::from_utf8_lossy(&log.msg).lines() {
                if !line.trim().is_empty() {
                    on_line(line.trim_end());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BuildError;

    #[test]
    fn only_a_vanished_layer_counts_as_a_cache_race() {
        let race = BuildError::Failed(
            "failed to get digest sha256:120e: open /var/lib/docker/image/x: no such file or directory"
                .into(),
        );
        assert!(race.is_cache_race());
        let real =
            BuildError::Failed("The command '/bin/sh -c false' returned a non-zero code: 1".into());
        assert!(!real.is_cache_race());
    }
}
