//! What the build server's own containers (builders, provisioning) share:
//! waiting for one to end, reading a file out of one.

use bollard::Docker;
use futures_util::StreamExt;

use super::BuildError;

/// Waits for a build container to stop; its exit code. bollard reports a non-zero
/// exit as an error; here it is a code.
pub async fn exit_code(docker: &Docker, id: &str) -> Result<i64, BuildError> {
    let mut wait =
        docker.wait_container(id, None::<bollard::query_parameters::WaitContainerOptions>);
    match wait.next().await {
        Some(Ok(response)) => Ok(response.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
        Some(Err(err)) => Err(err.into()),
        None => Err(BuildError::Failed("the builder container vanished".into())),
    }
}

/// One file out of a container (`None`: not there).
pub async fn read_file(docker: &Docker, id: &str, path: &str) -> Option<String> {
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.ok()?);
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut entry = archive.entries().ok()?.next()?.ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
    Some(text)
}
