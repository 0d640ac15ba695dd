//! The build server: turns a pushed source tree into a Docker image.
//!
//! It makes an artifact and never runs it; deploying is `deploy`'s job. Today it
//! builds a `Dockerfile` at the root of the tree with the Docker engine (bollard);
//! buildpack builds come next and will live beside it.

pub mod buildpack;
pub mod runtimes;
pub mod slug;
pub mod stack;

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

/// Builds `context` (a tar of the tree) with its root `Dockerfile`, tags the image
/// `tag`, and passes each line of build output to `on_line` as it arrives.
pub async fn build_dockerfile(
    docker: &Docker,
    context: Vec<u8>,
    tag: &str,
    labels: &HashMap<String, String>,
    mut on_line: impl FnMut(&str),
) -> Result<BuiltImage, BuildError> {
    let _gate = crate::context::image_gate::IMAGE_GATE.read().await;
    let context = bytes::Bytes::from(context);
    match build_once(docker, context.clone(), tag, labels, &mut on_line).await {
        Err(err) if err.is_cache_race() => {
            tracing::warn!(%tag, error = %err, "a cached layer vanished mid-build; building again");
            on_line("a cached layer was removed during the build; building again");
            build_once(docker, context, tag, labels, &mut on_line).await
        }
        result => result,
    }
}

async fn build_once(
    docker: &Docker,
    context: bytes::Bytes,
    tag: &str,
    labels: &HashMap<String, String>,
    on_line: &mut impl FnMut(&str),
) -> Result<BuiltImage, BuildError> {
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(labels)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context)));
    let mut pending = String::new();
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(BuildError::Failed(error))
            }
            Err(err) => return Err(err.into()),
        };
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
            return Err(BuildError::Failed(message));
        }
    }
    if !pending.trim().is_empty() {
        on_line(pending.trim_end());
    }
    let image = docker.inspect_image(tag).await?;
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
