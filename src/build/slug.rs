//! The slug: a buildpack build's compiled `/app`, made into an image layer.
//!
//! The app image is the stack image plus one layer holding `/app` and the
//! launcher. gantry writes that layer itself and hands the engine a
//! `docker load` archive naming the stack's layers by digest and carrying only
//! the new one, which the engine already has all the others of. That is
//! Heroku's slug-on-stack model, and much faster than `docker commit`, which
//! diffs the whole container filesystem (seconds on fuse-overlayfs).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, ImportImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{BuildError, BuiltImage};

/// Where buildpacks put files the app needs at run time that must not sit in
/// `/app` beside the app's own (the static buildpack's server): the image
/// has them at the same path.
pub const LIB: &str = "/gantry/lib";

/// How the image starts its processes.
pub struct Launch<'a> {
    /// The launcher script, stored at `/gantry/launch` and made the entrypoint.
    pub launcher: &'a str,
    /// The default command (the web process).
    pub cmd: Vec<String>,
    pub labels: &'a HashMap<String, String>,
}

/// Copies `/app` out of the finished builder and loads `stack` plus that
/// layer as `tag`. `scratch` holds the temporary archives.
pub async fn load(
    docker: &Docker,
    builder: &str,
    stack: &str,
    tag: &str,
    launch: Launch<'_>,
    scratch: &Path,
) -> Result<BuiltImage, BuildError> {
    let io = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| io("cannot make the build scratch directory", e))?;
    let app_tar = scratch.join("app.tar");
    let mut file = tokio::fs::File::create(&app_tar)
        .await
        .map_err(|e| io("cannot write the slug", e))?;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path("/app")
        .build();
    let mut stream = docker.download_from_container(builder, Some(options));
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| io("cannot write the slug", e))?;
    }
    file.flush()
        .await
        .map_err(|e| io("cannot write the slug", e))?;
    drop(file);
    let lib_tar = scratch.join("lib.tar");
    let has_lib = download(docker, builder, LIB, &lib_tar).await?;

    let OnStack {
        layers: stack_layers,
        config: image_config,
        architecture,
        os,
    } = on_stack(docker, stack, launch.cmd, None, launch.labels.clone()).await?;
    let launcher = launch.launcher.to_owned();
    let tag_owned = tag.to_owned();
    let scratch_owned = scratch.to_path_buf();
    let archive = tokio::task::spawn_blocking(move || {
        write_archive(
            &scratch_owned,
            &app_tar,
            has_lib.then_some(lib_tar.as_path()),
            &launcher,
            &stack_layers,
            image_config,
            &architecture,
            &os,
            &tag_owned,
        )
    })
    .await
    .map_err(|e| BuildError::Failed(format!("making the image: {e}")))?
    .map_err(|e| io("cannot make the image archive", e))?;

    load_archive(docker, &archive, tag).await
}

/// What an image on a stack takes from it (layers, environment, platform),
/// with the slug's command, user and labels on top.
struct OnStack {
    layers: Vec<String>,
    config: serde_json::Value,
    architecture: String,
    os: String,
}

async fn on_stack(
    docker: &Docker,
    stack: &str,
    cmd: Vec<String>,
    user: Option<String>,
    labels: HashMap<String, String>,
) -> Result<OnStack, BuildError> {
    let image = docker.inspect_image(stack).await?;
    let layers = image
        .root_fs
        .as_ref()
        .and_then(|r| r.layers.clone())
        .unwrap_or_default();
    let stack_config = image.config.clone().unwrap_or_default();
    let mut all = stack_config.labels.clone().unwrap_or_default();
    all.extend(labels);
    let config = json!({
        "Env": stack_config.env.clone().unwrap_or_default(),
        "User": user.or(stack_config.user.clone()).unwrap_or_default(),
        "Entrypoint": ["/gantry/launch"],
        "Cmd": cmd,
        "WorkingDir": "/app",
        "Labels": all,
    });
    Ok(OnStack {
        layers,
        config,
        architecture: image.architecture.unwrap_or_else(|| "amd64".into()),
        os: image.os.unwrap_or_else(|| "linux".into()),
    })
}

/// Hands a `docker load` archive to the engine; the loaded image.
async fn load_archive(
    docker: &Docker,
    archive: &Path,
    tag: &str,
) -> Result<BuiltImage, BuildError> {
    let io = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    let file = tokio::fs::File::open(archive)
        .await
        .map_err(|e| io("cannot read the image archive", e))?;
    let body = tokio_util::io::ReaderStream::new(file);
    let mut loading = docker.import_image_stream(
        ImportImageOptionsBuilder::default().quiet(true).build(),
        body,
        None,
    );
    while let Some(item) = loading.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(BuildError::Failed(format!("loading the image: {error}")))
            }
            Err(err) => return Err(err.into()),
        };
        if let Some(detail) = info.error_detail {
            return Err(BuildError::Failed(format!(
                "loading the image: {}",
                detail.message.unwrap_or_default()
            )));
        }
    }
    let image = docker.inspect_image(tag).await?;
    Ok(BuiltImage {
        id: image.id.unwrap_or_default(),
        size: image.size.unwrap_or(0),
        exposed_port: None,
    })
}

/// Puts the slug of `image` (its last layer, byte for byte) on `stack`'s
/// current layers as `tag`: a stack's security updates reach an app without
/// a rebuild. `labels` are added to the image's own.
pub async fn rebase(
    docker: &Docker,
    image: &str,
    stack: &str,
    tag: &str,
    labels: &HashMap<String, String>,
    scratch: &Path,
) -> Result<BuiltImage, BuildError> {
    let io = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| io("cannot make the scratch directory", e))?;
    let old = docker.inspect_image(image).await?;
    let old_layers = old
        .root_fs
        .as_ref()
        .and_then(|r| r.layers.clone())
        .unwrap_or_default();
    let Some(slug_diff_id) = old_layers.last().cloned() else {
        return Err(BuildError::Failed(format!("{image} has no layers")));
    };
    let is_slug = old
        .config
        .as_ref()
        .and_then(|c| c.entrypoint.clone())
        .is_some_and(|e| e == ["/gantry/launch"]);
    if !is_slug {
        return Err(BuildError::Failed(format!(
            "{image} is not a buildpack build (a Dockerfile image is rebuilt by pushing, not rebased)"
        )));
    }
    // `docker save` of the old image, kept on disk; only the slug layer is read.
    let saved = scratch.join("saved.tar");
    let mut file = tokio::fs::File::create(&saved)
        .await
        .map_err(|e| io("cannot write the saved image", e))?;
    let mut stream = docker.export_image(image);
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| io("cannot write the saved image", e))?;
    }
    file.flush()
        .await
        .map_err(|e| io("cannot write the saved image", e))?;
    drop(file);

    let old_config = old.config.clone().unwrap_or_default();
    // The old image's own labels stay; what the stack says of itself is the
    // new stack's.
    let mut kept: HashMap<String, String> = old_config
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("gantry.stack."))
        .collect();
    kept.extend(labels.clone());
    let OnStack {
        layers: stack_layers,
        config: image_config,
        architecture,
        os,
    } = on_stack(
        docker,
        stack,
        old_config.cmd.clone().unwrap_or_default(),
        old_config.user.clone(),
        kept,
    )
    .await?;
    let tag_owned = tag.to_owned();
    let scratch_owned = scratch.to_path_buf();
    let archive = tokio::task::spawn_blocking(move || {
        let layer = extract_last_layer(&saved, &scratch_owned.join("slug.tar"))?;
        write_load_archive(
            &scratch_owned,
            &layer,
            &slug_diff_id,
            &stack_layers,
            image_config,
            &architecture,
            &os,
            &tag_owned,
        )
    })
    .await
    .map_err(|e| BuildError::Failed(format!("making the image: {e}")))?
    .map_err(|e| io("cannot make the rebased image", e))?;
    load_archive(docker, &archive, tag).await
}

/// The last layer of a `docker save` archive, written to `to`.
fn extract_last_layer(saved: &Path, to: &Path) -> std::io::Result<PathBuf> {
    let mut archive = tar::Archive::new(std::fs::File::open(saved)?);
    let mut manifest = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == "manifest.json" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)?;
            manifest = Some(text);
            break;
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest.unwrap_or_default()).map_err(std::io::Error::other)?;
    let last = manifest[0]["Layers"]
        .as_array()
        .and_then(|layers| layers.last())
        .and_then(|l| l.as_str())
        .ok_or_else(|| std::io::Error::other("the saved image lists no layers"))?
        .to_owned();
    let mut archive = tar::Archive::new(std::fs::File::open(saved)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy() == last {
            let mut out = std::fs::File::create(to)?;
            std::io::copy(&mut entry, &mut out)?;
            return Ok(to.to_path_buf());
        }
    }
    Err(std::io::Error::other(format!(
        "the saved image lacks {last}"
    )))
}

/// Copies `path` out of the builder as a tar at `to`; false when the
/// builder has no such path.
async fn download(
    docker: &Docker,
    builder: &str,
    path: &str,
    to: &Path,
) -> Result<bool, BuildError> {
    let io = |e: std::io::Error| BuildError::Failed(format!("cannot write {}: {e}", to.display()));
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(builder, Some(options));
    let mut file: Option<tokio::fs::File> = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(false),
            Err(err) => return Err(err.into()),
        };
        if file.is_none() {
            file = Some(tokio::fs::File::create(to).await.map_err(io)?);
        }
        if let Some(file) = file.as_mut() {
            file.write_all(&chunk).await.map_err(io)?;
        }
    }
    match file {
        Some(mut file) => {
            file.flush().await.map_err(io)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Writes `layer.tar` (the slug plus the launcher) and around it the
/// `docker load` archive; returns the archive's path.
#[allow(clippy::too_many_arguments)]
fn write_archive(
    scratch: &Path,
    app_tar: &Path,
    lib_tar: Option<&Path>,
    launcher: &str,
    stack_layers: &[String],
    image_config: serde_json::Value,
    architecture: &str,
    os: &str,
    tag: &str,
) -> std::io::Result<PathBuf> {
    let layer_path = scratch.join("layer.tar");
    let hashing = HashingWriter::new(std::fs::File::create(&layer_path)?);
    let mut layer = tar::Builder::new(hashing);
    let mut slug = tar::Archive::new(std::fs::File::open(app_tar)?);
    for entry in slug.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        // Long names and link targets travel in extension records the tar
        // crate has already folded into `path`/`link_name`.
        match entry.link_name()? {
            Some(target) => {
                let target = target.into_owned();
                layer.append_link(&mut header, &path, &target)?;
            }
            None => layer.append_data(&mut header, &path, &mut entry)?,
        }
    }
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    layer.append_data(&mut dir, "gantry", std::io::empty())?;
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o755);
    file.set_size(launcher.len() as u64);
    layer.append_data(&mut file, "gantry/launch", launcher.as_bytes())?;
    if let Some(lib_tar) = lib_tar {
        let mut lib = tar::Archive::new(std::fs::File::open(lib_tar)?);
        for entry in lib.entries()? {
            let mut entry = entry?;
            let mut header = entry.header().clone();
            let path = Path::new("gantry").join(entry.path()?);
            match entry.link_name()? {
                Some(target) => {
                    let target = target.into_owned();
                    layer.append_link(&mut header, &path, &target)?;
                }
                None => layer.append_data(&mut header, &path, &mut entry)?,
            }
        }
    }
    let hashing = layer.into_inner()?;
    let (file, digest) = hashing.finish()?;
    drop(file);
    let diff_id = format!("sha256:{digest}");
    write_load_archive(
        scratch,
        &layer_path,
        &diff_id,
        stack_layers,
        image_config,
        architecture,
        os,
        tag,
    )
}

/// Writes the `docker load` archive of `stack_layers` (named, not included:
/// the engine has them) plus the slug layer at `layer_path`.
#[allow(clippy::too_many_arguments)]
fn write_load_archive(
    scratch: &Path,
    layer_path: &Path,
    diff_id: &str,
    stack_layers: &[String],
    image_config: serde_json::Value,
    architecture: &str,
    os: &str,
    tag: &str,
) -> std::io::Result<PathBuf> {
    let mut diff_ids: Vec<String> = stack_layers.to_vec();
    diff_ids.push(diff_id.to_owned());
    let history: Vec<serde_json::Value> = (0..diff_ids.len())
        .map(|i| {
            json!({ "created_by": if i + 1 == diff_ids.len() { "gantry: slug (/app) from buildpacks" } else { "stack" } })
        })
        .collect();
    let config = json!({
        "architecture": architecture,
        "os": os,
        "config": image_config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let config_bytes = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
    let config_name = format!("{}.json", hex(&sha256(&config_bytes)));
    // The stack's layers are named but not included: the engine has them
    // and only opens the files of layers it lacks.
    let mut layers: Vec<String> = (0..stack_layers.len())
        .map(|i| format!("stack{i}/layer.tar"))
        .collect();
    layers.push("slug/layer.tar".into());
    let manifest = json!([{ "Config": config_name, "RepoTags": [tag], "Layers": layers }]);
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;

    let archive_path = scratch.join("image.tar");
    let mut archive = tar::Builder::new(std::fs::File::create(&archive_path)?);
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        archive.append_data(&mut header, name, data)
    };
    add(&config_name, &config_bytes)?;
    add("manifest.json", &manifest_bytes)?;
    archive.append_path_with_name(layer_path, "slug/layer.tar")?;
    archive.into_inner()?.sync_all()?;
    Ok(archive_path)
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A writer that computes the SHA-256 of what passes through (a layer's diff id).
struct HashingWriter<W> {
    inner: W,
    context: aws_lc_rs::digest::Context,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            context: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        }
    }

    fn finish(mut self) -> std::io::Result<(W, String)> {
        self.inner.flush()?;
        Ok((self.inner, hex(self.context.finish().as_ref())))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.context.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_digest_is_the_sha256_of_its_bytes() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").expect("write");
        let (bytes, digest) = writer.finish().expect("finish");
        assert_eq!(bytes, b"abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
