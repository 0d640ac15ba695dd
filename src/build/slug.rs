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
    /// Runtime layers under the slug: (diff id, tar), from [`runtime_layer`].
    pub runtimes: Vec<(String, PathBuf)>,
}

/// Label of an image gantry wrote: how many of its top layers are the app's
/// (runtimes and the slug); what a rebase moves to a newer stack.
pub const LABEL_SLUG_LAYERS: &str = "gantry.slug.layers";

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
    } = on_stack(docker, stack, launch.cmd, None, {
        let mut labels = launch.labels.clone();
        labels.insert(
            LABEL_SLUG_LAYERS.to_owned(),
            (launch.runtimes.len() + 1).to_string(),
        );
        labels
    })
    .await?;
    // A runtime layer the engine was given once is named, not sent again;
    // if the engine lost it since (a prune of every image that had it), the
    // load fails and is retried with every layer included.
    let loaded = |tar: &Path| tar.with_extension("loaded");
    let mut include_all = false;
    loop {
        let runtimes: Vec<ArchiveLayer> = launch
            .runtimes
            .iter()
            .map(|(diff_id, tar)| ArchiveLayer {
                diff_id: diff_id.clone(),
                file: (include_all || !loaded(tar).exists()).then(|| tar.clone()),
                created_by: "gantry: runtime from the host's store".into(),
            })
            .collect();
        let omitted = runtimes.iter().any(|l| l.file.is_none());
        let launcher = launch.launcher.to_owned();
        let tag_owned = tag.to_owned();
        let scratch_owned = scratch.to_path_buf();
        let (app_tar, lib_tar, stack_layers, image_config, architecture, os) = (
            app_tar.clone(),
            lib_tar.clone(),
            stack_layers.clone(),
            image_config.clone(),
            architecture.clone(),
            os.clone(),
        );
        let archive = tokio::task::spawn_blocking(move || {
            write_archive(
                &scratch_owned,
                &app_tar,
                has_lib.then_some(lib_tar.as_path()),
                &launcher,
                &stack_layers,
                runtimes,
                image_config,
                &architecture,
                &os,
                &tag_owned,
            )
        })
        .await
        .map_err(|e| BuildError::Failed(format!("making the image: {e}")))?
        .map_err(|e| io("cannot make the image archive", e))?;
        match load_archive(docker, &archive, tag).await {
            Err(err) if omitted => {
                tracing::info!(%tag, error = %err, "a runtime layer was not in the engine; loading it again");
                include_all = true;
            }
            result => {
                if result.is_ok() {
                    for (_, tar) in &launch.runtimes {
                        if let Err(err) = std::fs::write(loaded(tar), b"") {
                            tracing::warn!(path = %tar.display(), error = %err, "cannot mark a runtime layer loaded");
                        }
                    }
                }
                return result;
            }
        }
    }
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
pub(super) async fn load_archive(
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
    let top = slug_layer_count(&old);
    if old_layers.len() < top + 1 {
        return Err(BuildError::Failed(format!(
            "{image} has no layers above a stack"
        )));
    }
    let slug_diff_ids: Vec<String> = old_layers[old_layers.len() - top..].to_vec();
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
    // The old image's own labels stay; what the stack (and a Debian runtime
    // on it) says of itself is the new stack's.
    let mut kept: HashMap<String, String> = old_config
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("gantry.stack.") && !k.starts_with("gantry.debian."))
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
        let files = extract_top_layers(&saved, top, &scratch_owned)?;
        let mut layers = stack_part(&stack_layers);
        for (diff_id, file) in slug_diff_ids.into_iter().zip(files) {
            layers.push(ArchiveLayer {
                diff_id,
                file: Some(file),
                created_by: "gantry: the slug, rebased".into(),
            });
        }
        write_load_archive(
            &scratch_owned,
            &layers,
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

/// How many top layers of an image gantry wrote are the app's (1 for
/// images from before runtime layers).
pub fn slug_layer_count(image: &bollard::models::ImageInspect) -> usize {
    image
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(LABEL_SLUG_LAYERS))
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// The top `count` layers of a `docker save` archive, bottom first, written
/// into `dir`.
fn extract_top_layers(saved: &Path, count: usize, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
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
    let all: Vec<String> = manifest[0]["Layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if all.len() < count {
        return Err(std::io::Error::other(
            "the saved image has fewer layers than its slug",
        ));
    }
    let wanted = &all[all.len() - count..];
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(saved)?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if let Some(i) = wanted.iter().position(|w| *w == name) {
            let to = dir.join(format!("top{i}.tar"));
            let mut out = std::fs::File::create(&to)?;
            std::io::copy(&mut entry, &mut out)?;
            found.insert(name, to);
        }
    }
    wanted
        .iter()
        .map(|w| {
            found
                .remove(w)
                .ok_or_else(|| std::io::Error::other(format!("the saved image lacks {w}")))
        })
        .collect()
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
    runtimes: Vec<ArchiveLayer>,
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
    let mut layers = stack_part(stack_layers);
    layers.extend(runtimes);
    layers.push(ArchiveLayer {
        diff_id: format!("sha256:{digest}"),
        file: Some(layer_path),
        created_by: "gantry: slug (/app) from buildpacks".into(),
    });
    write_load_archive(scratch, &layers, image_config, architecture, os, tag)
}

/// One layer of an image gantry writes: its diff id, and its tar when the
/// engine may lack it (`None`: named, not included, for a layer the engine
/// has, such as the stack's: it only opens the files of layers it lacks).
pub struct ArchiveLayer {
    pub diff_id: String,
    pub file: Option<PathBuf>,
    pub created_by: String,
}

/// Writes the `docker load` archive of `layers`, bottom first.
pub(super) fn write_load_archive(
    scratch: &Path,
    layers: &[ArchiveLayer],
    image_config: serde_json::Value,
    architecture: &str,
    os: &str,
    tag: &str,
) -> std::io::Result<PathBuf> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| json!({ "created_by": l.created_by }))
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
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = json!([{ "Config": config_name, "RepoTags": [tag], "Layers": names }]);
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
    for (layer, name) in layers.iter().zip(&names) {
        if let Some(file) = &layer.file {
            archive.append_path_with_name(file, name)?;
        }
    }
    archive.into_inner()?.sync_all()?;
    Ok(archive_path)
}

/// The stack's layers, as the bottom of an image gantry writes.
fn stack_part(stack_layers: &[String]) -> Vec<ArchiveLayer> {
    stack_layers
        .iter()
        .map(|diff_id| ArchiveLayer {
            diff_id: diff_id.clone(),
            file: None,
            created_by: "stack".into(),
        })
        .collect()
}

/// A runtime from the host's store as an image layer at `dest` (such as
/// `app/.heroku/node`), made once per runtime and kept beside the store: an
/// app's one-file push then carries none of a 190 MB Node, which the engine
/// already has. Returns the layer's diff id and tar.
pub fn runtime_layer(dir: &Path, dest: &str, cache: &Path) -> std::io::Result<(String, PathBuf)> {
    std::fs::create_dir_all(cache)?;
    let key: String = format!("{}-{dest}", dir.display())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tar_path = cache.join(format!("{key}.tar"));
    let id_path = cache.join(format!("{key}.diffid"));
    if let (true, Ok(id)) = (tar_path.is_file(), std::fs::read_to_string(&id_path)) {
        return Ok((id.trim().to_owned(), tar_path));
    }
    let partial = cache.join(format!("{key}.tar.partial"));
    let mut layer = tar::Builder::new(HashingWriter::new(std::fs::File::create(&partial)?));
    layer.follow_symlinks(false);
    let mut parent = PathBuf::new();
    for part in Path::new(dest)
        .parent()
        .into_iter()
        .flat_map(Path::components)
    {
        parent.push(part);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        layer.append_data(&mut header, &parent, std::io::empty())?;
    }
    layer.append_dir_all(dest, dir)?;
    let (file, digest) = layer.into_inner()?.finish()?;
    file.sync_all()?;
    let diff_id = format!("sha256:{digest}");
    std::fs::rename(&partial, &tar_path)?;
    std::fs::write(&id_path, &diff_id)?;
    Ok((diff_id, tar_path))
}

/// Rewrites a tar whose entries all sit under one top directory (as
/// Docker's archive of a directory names them) so that they sit under
/// `top` instead (empty: at the root), with `top`'s parent directories
/// first; returns the new tar's sha256 (a layer's diff id).
pub fn retop(from: &Path, to: &Path, top: &Path) -> std::io::Result<String> {
    let moved = |path: &Path| -> Option<PathBuf> {
        let mut parts = path.components();
        parts.next()?;
        let rest = parts.as_path();
        match (rest.as_os_str().is_empty(), top.as_os_str().is_empty()) {
            (true, true) => None,
            (true, false) => Some(top.to_path_buf()),
            (false, _) => Some(top.join(rest)),
        }
    };
    let mut archive = tar::Archive::new(std::fs::File::open(from)?);
    let mut layer = tar::Builder::new(HashingWriter::new(std::fs::File::create(to)?));
    let mut parent = PathBuf::new();
    for part in top.parent().into_iter().flat_map(Path::components) {
        parent.push(part);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        layer.append_data(&mut header, &parent, std::io::empty())?;
    }
    for entry in archive.entries()? {
        let mut entry = entry?;
        let Some(path) = moved(&entry.path()?) else {
            continue;
        };
        let mut header = entry.header().clone();
        match (entry.header().entry_type(), entry.link_name()?) {
            (tar::EntryType::Link, Some(target)) => {
                let target = moved(&target)
                    .ok_or_else(|| std::io::Error::other("a hard link to the layer's root"))?;
                layer.append_link(&mut header, &path, &target)?;
            }
            (_, Some(target)) => {
                let target = target.into_owned();
                layer.append_link(&mut header, &path, &target)?;
            }
            (_, None) => layer.append_data(&mut header, &path, &mut entry)?,
        }
    }
    let (file, digest) = layer.into_inner()?.finish()?;
    file.sync_all()?;
    Ok(digest)
}

/// The sha256 of `data`, in hex.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    hex(&sha256(data))
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
pub(super) struct HashingWriter<W> {
    inner: W,
    context: aws_lc_rs::digest::Context,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            context: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        }
    }

    pub(super) fn finish(mut self) -> std::io::Result<(W, String)> {
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

    #[test]
    fn retop_moves_every_entry_and_link_under_the_new_top() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (from, to) = (dir.path().join("from.tar"), dir.path().join("to.tar"));
        // As Docker archives /cache/python/venv: everything under `venv/`.
        let mut archive = tar::Builder::new(std::fs::File::create(&from).expect("create"));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        archive
            .append_data(&mut header.clone(), "venv", std::io::empty())
            .expect("dir");
        archive
            .append_data(&mut header, "venv/bin", std::io::empty())
            .expect("dir");
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o755);
        file.set_size(5);
        archive
            .append_data(&mut file, "venv/bin/python3", &b"#!elf"[..])
            .expect("file");
        let mut hard = tar::Header::new_gnu();
        hard.set_entry_type(tar::EntryType::Link);
        hard.set_size(0);
        archive
            .append_link(&mut hard, "venv/bin/python", "venv/bin/python3")
            .expect("hard link");
        let mut soft = tar::Header::new_gnu();
        soft.set_entry_type(tar::EntryType::Symlink);
        soft.set_size(0);
        archive
            .append_link(&mut soft, "venv/bin/py", "python3")
            .expect("symlink");
        archive.finish().expect("finish");
        drop(archive);

        let digest = retop(&from, &to, Path::new("app/.venv")).expect("retop");
        let bytes = std::fs::read(&to).expect("read");
        assert_eq!(digest, sha256_hex(&bytes));
        let mut entries = Vec::new();
        for entry in tar::Archive::new(&bytes[..]).entries().expect("entries") {
            let entry = entry.expect("entry");
            let link = entry
                .link_name()
                .expect("link")
                .map(|l| l.display().to_string());
            entries.push((entry.path().expect("path").display().to_string(), link));
        }
        let names: Vec<(&str, Option<&str>)> = entries
            .iter()
            .map(|(p, l)| (p.as_str(), l.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("app", None),
                ("app/.venv", None),
                ("app/.venv/bin", None),
                ("app/.venv/bin/python3", None),
                ("app/.venv/bin/python", Some("app/.venv/bin/python3")),
                ("app/.venv/bin/py", Some("python3")),
            ]
        );
        // With an empty top, the entries sit at the root.
        retop(&from, &to, Path::new("")).expect("retop to the root");
        let bytes = std::fs::read(&to).expect("read");
        let first: Vec<String> = tar::Archive::new(&bytes[..])
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(first, ["bin", "bin/python3", "bin/python", "bin/py"]);
    }
}
