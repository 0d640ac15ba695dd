//! Runtimes from the stack suite's own Debian packages that work only at the
//! paths Debian put them: Debian's Node.js finds its builtins and npm its
//! modules by absolute path (`/usr/share/nodejs`), so it cannot be unpacked
//! into a cache directory the way a Go toolchain can.
//!
//! On first need, the packages the run image lacks (the runtime and every
//! dependency, resolved by apt against the run image's own dpkg status) are
//! fetched from the suite's mirror and unpacked into one layer. That layer
//! goes on the run image (`gantry/stack:SUITE-LANG`, which an app's slug
//! then sits on) and on the build image (`gantry/stack:SUITE-build-LANG`, the
//! builder of apps that may use it). The engine is the cache: both images
//! carry labels naming the images they were made from, and are made again
//! after `stack:build` replaces those.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::slug::{self, ArchiveLayer};
use super::stack::{StackImages, Suite};
use super::BuildError;

/// A runtime Debian packages for a suite.
#[derive(Debug, Clone, Copy)]
pub struct DebianRuntime {
    /// The buildpack's name for it (`node`).
    pub lang: &'static str,
    /// What is installed (dependencies come along).
    pub packages: &'static [&'static str],
    /// The package whose version is the runtime's.
    pub versioned: &'static str,
    /// Builds use it too: a build image with it is made beside the run image.
    pub for_builds: bool,
}

/// Debian's Node.js with its npm.
pub const NODE: DebianRuntime = DebianRuntime {
    lang: "node",
    packages: &["nodejs", "npm"],
    versioned: "nodejs",
    for_builds: true,
};

/// Debian's PostgreSQL server and client, for the `postgres` add-on (run
/// image only: nothing builds with it).
pub const POSTGRESQL: DebianRuntime = DebianRuntime {
    lang: "postgresql",
    packages: &["postgresql"],
    versioned: "postgresql",
    for_builds: false,
};

/// Label on a derived image, and so on the images of apps built on it: the
/// runtime it adds (`node`).
pub const LABEL_RUNTIME: &str = "gantry.debian.runtime";
/// Label on a derived image: the id of the stack image it was made from.
pub const LABEL_BASE: &str = "gantry.debian.base";
/// Label on a derived image: the Debian version of the runtime.
pub const LABEL_VERSION: &str = "gantry.debian.version";
/// Label on a derived image: the diff id of the runtime's layer.
pub const LABEL_LAYER: &str = "gantry.debian.layer";

/// A Debian runtime ready for builds of one stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provided {
    /// The Debian version (`20.19.2+dfsg-1+deb13u3`).
    pub version: String,
    /// The builder image: the build image with the runtime.
    pub build_image: String,
    /// The run image with the runtime: what the slug's layers sit on.
    pub run_image: String,
    /// The runtime layer's diff id, the same in both images.
    pub layer: String,
}

impl Provided {
    /// The upstream version inside Debian's (`20.19.2` of `20.19.2+dfsg-1`).
    pub fn upstream(&self) -> &str {
        upstream_version(&self.version)
    }
}

/// `20.19.2` of `20.19.2+dfsg-1+deb13u3`, `1:2.3~rc1-2` gives `2.3`.
pub fn upstream_version(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map_or(debian, |(_, v)| v);
    let end = no_epoch.find(['+', '~', '-']).unwrap_or(no_epoch.len());
    &no_epoch[..end]
}

fn run_tag(suite: Suite, runtime: DebianRuntime) -> String {
    format!("gantry/stack:{}-{}", suite.name(), runtime.lang)
}

fn build_tag(suite: Suite, runtime: DebianRuntime) -> String {
    format!("gantry/stack:{}-build-{}", suite.name(), runtime.lang)
}

/// The Debian runtime an image gantry built sits on (its label), if any.
pub fn runtime_of(labels: &HashMap<String, String>) -> Option<DebianRuntime> {
    match labels.get(LABEL_RUNTIME).map(String::as_str) {
        Some("node") => Some(NODE),
        _ => None,
    }
}

/// The Debian runtimes made for `suite`'s current images: (lang, upstream
/// version), for `stacks`.
pub async fn made_for(docker: &Docker, suite: Suite) -> Vec<(String, String)> {
    let (Ok(run_id), Ok(build_id)) = (
        image_id(docker, &suite.run_image()).await,
        image_id(docker, &suite.build_image()).await,
    ) else {
        return Vec::new();
    };
    let mut made = Vec::new();
    for runtime in [NODE] {
        if let Some(ready) = existing(docker, suite, runtime, &run_id, &build_id).await {
            made.push((runtime.lang.to_owned(), ready.upstream().to_owned()));
        }
    }
    made
}

/// One provisioning at a time in this process: two pushes that both need
/// Debian's Node fetch it once.
static PROVISIONING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The runtime for `stack`, made on first need (and again after the stack
/// was rebuilt). `scratch` holds the layer while it is made; `on_line`
/// hears what the pusher should.
pub async fn provide(
    docker: &Docker,
    stack: &StackImages,
    runtime: DebianRuntime,
    scratch: &Path,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Provided, BuildError> {
    let suite = stack.suite.ok_or_else(|| {
        BuildError::Failed("the stack is a configured stack_image, not a Debian suite".into())
    })?;
    let run_id = image_id(docker, &stack.run).await?;
    let build_id = image_id(docker, &stack.build).await?;
    if let Some(ready) = existing(docker, suite, runtime, &run_id, &build_id).await {
        return Ok(ready);
    }
    let _one = PROVISIONING.lock().await;
    if let Some(ready) = existing(docker, suite, runtime, &run_id, &build_id).await {
        return Ok(ready);
    }
    on_line(&format!(
        "-----> Installing {} from Debian {suite}'s packages ({}): once for this stack",
        runtime.lang,
        runtime.packages.join(" ")
    ));
    tokio::fs::create_dir_all(scratch)
        .await
        .map_err(|e| io("cannot make the scratch directory", e))?;
    let made = make_layer(docker, stack, runtime, scratch, on_line).await;
    let result = match made {
        Ok((layer, file, version)) => {
            let mut labels = HashMap::from([
                (LABEL_RUNTIME.to_owned(), runtime.lang.to_owned()),
                (LABEL_VERSION.to_owned(), version.clone()),
                (LABEL_LAYER.to_owned(), layer.clone()),
            ]);
            labels.insert(LABEL_BASE.to_owned(), run_id.clone());
            let run_image = run_tag(suite, runtime);
            let replaced_run = image_id(docker, &run_image).await.ok();
            derive(
                docker, &stack.run, &run_image, &layer, &file, &labels, scratch,
            )
            .await?;
            let build_image = build_tag(suite, runtime);
            let mut replaced_build = None;
            if runtime.for_builds {
                labels.insert(LABEL_BASE.to_owned(), build_id.clone());
                replaced_build = image_id(docker, &build_image).await.ok();
                derive(
                    docker,
                    &stack.build,
                    &build_image,
                    &layer,
                    &file,
                    &labels,
                    scratch,
                )
                .await?;
            }
            // The images made for the stack before its rebuild are no use now;
            // apps' images built on them keep the layers they need.
            for old in [replaced_run, replaced_build].into_iter().flatten() {
                remove_untagged(docker, &old).await;
            }
            on_line(&format!(
                "       {} {version} is ready for builds on {}",
                runtime.lang, stack.run
            ));
            Ok(Provided {
                version,
                build_image,
                run_image,
                layer,
            })
        }
        Err(err) => Err(err),
    };
    if let Err(err) = tokio::fs::remove_dir_all(scratch).await {
        tracing::debug!(path = %scratch.display(), error = %err, "no scratch to remove");
    }
    result
}

/// Removes an image that lost its tag, unless something still uses it.
async fn remove_untagged(docker: &Docker, id: &str) {
    let Ok(image) = docker.inspect_image(id).await else {
        return;
    };
    if !image.repo_tags.unwrap_or_default().is_empty() {
        return;
    }
    if let Err(err) = docker
        .remove_image(
            id,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await
    {
        tracing::debug!(image = id, error = %err, "an outdated Debian runtime image stays");
    }
}

async fn image_id(docker: &Docker, image: &str) -> Result<String, BuildError> {
    let inspected = docker.inspect_image(image).await?;
    Ok(inspected.id.unwrap_or_default())
}

/// Both derived images, if they were made from the current stack images.
async fn existing(
    docker: &Docker,
    suite: Suite,
    runtime: DebianRuntime,
    run_id: &str,
    build_id: &str,
) -> Option<Provided> {
    let labels = |image: bollard::models::ImageInspect| {
        image.config.and_then(|c| c.labels).unwrap_or_default()
    };
    let run_image = run_tag(suite, runtime);
    let build_image = build_tag(suite, runtime);
    let run = labels(docker.inspect_image(&run_image).await.ok()?);
    let build_fresh = if runtime.for_builds {
        let build = labels(docker.inspect_image(&build_image).await.ok()?);
        build.get(LABEL_BASE).map(String::as_str) == Some(build_id)
            && run.get(LABEL_LAYER) == build.get(LABEL_LAYER)
    } else {
        true
    };
    let fresh = run.get(LABEL_RUNTIME).map(String::as_str) == Some(runtime.lang)
        && run.get(LABEL_BASE).map(String::as_str) == Some(run_id)
        && run.contains_key(LABEL_LAYER)
        && build_fresh;
    if !fresh {
        return None;
    }
    Some(Provided {
        version: run.get(LABEL_VERSION).cloned().unwrap_or_default(),
        build_image,
        run_image,
        layer: run.get(LABEL_LAYER).cloned().unwrap_or_default(),
    })
}

/// What runs in a container of the build image: resolve the packages the
/// run image lacks (against its dpkg status, uploaded beside), fetch them and
/// unpack them into `/out/root`.
const PROVISION: &str = r#"set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get -qq update >/dev/null 2>&1 || echo "       (apt-get update failed; using the stack's package lists)"
status=/gantry/run-status
uris=$(apt-get -o Dir::State::status=$status install --print-uris -qq --no-install-recommends "$@") || {
    echo " !     apt cannot install $* on this stack:"; apt-get -o Dir::State::status=$status install -s --no-install-recommends "$@" 2>&1 | tail -n 5 | sed 's/^/       /'; exit 1; }
wanted=$(echo "$uris" | awk '{ print $2 }' | sed -n 's/^\([^_]*\)_\([^_]*\)_[^_]*\.deb$/\1=\2/p' | sed 's/%3a/:/g')
count=$(echo "$wanted" | grep -c . || true)
[ "$count" -gt 0 ] || { echo " !     the run image already has $*, or apt found nothing to install"; exit 1; }
mkdir -p /out/debs /out/root
cd /out/debs
echo "       fetching $count package(s)"
apt-get download -qq $wanted >/dev/null 2>&1 || apt-get download $wanted 2>&1 | tail -n 5 | sed 's/^/       /'
[ "$(ls | wc -l)" -ge "$count" ] || { echo " !     apt-get download fetched $(ls | wc -l) of $count package(s)"; exit 1; }
echo "       unpacking"
for deb in *.deb; do dpkg-deb -x "$deb" /out/root; done
rm -rf /out/root/usr/share/doc /out/root/usr/share/man /out/root/usr/share/lintian /out/root/usr/share/info
dpkg-deb -f "$(ls "$VERSIONED"_*.deb | head -n1)" Version >/out/version
"#;

/// Fetches and unpacks the runtime in a container of the build image and
/// writes its layer into `scratch`; (diff id, layer file, Debian version).
async fn make_layer(
    docker: &Docker,
    stack: &StackImages,
    runtime: DebianRuntime,
    scratch: &Path,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(String, PathBuf, String), BuildError> {
    let status = file_of_image(docker, &stack.run, "/var/lib/dpkg/status").await?;
    let mut args = vec![
        "bash".to_owned(),
        "-c".to_owned(),
        PROVISION.to_owned(),
        "provision".to_owned(),
    ];
    args.extend(runtime.packages.iter().map(|p| (*p).to_owned()));
    let body = ContainerCreateBody {
        image: Some(stack.build.clone()),
        entrypoint: Some(vec![]),
        cmd: Some(args),
        env: Some(vec![format!("VERSIONED={}", runtime.versioned)]),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?;
    let id = created.id;
    let outcome = async {
        let upload = single_file_tar("gantry/run-status", &status)
            .map_err(|e| io("cannot pack the run image's package status", e))?;
        docker
            .upload_to_container(
                &id,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(upload.into()),
            )
            .await?;
        docker.start_container(&id, None).await?;
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = docker.logs(&id, Some(options));
        let mut pending = String::new();
        while let Some(chunk) = logs.next().await {
            pending.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                on_line(line.trim_end());
            }
        }
        let code = super::container::exit_code(docker, &id).await?;
        if code != 0 {
            return Err(BuildError::Failed(format!(
                "installing {} from Debian's packages failed (exit {code})",
                runtime.lang
            )));
        }
        let version = super::container::read_file(docker, &id, "/out/version")
            .await
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BuildError::Failed("the unpacked runtime has no version".into()))?;
        let file = scratch.join(format!("{}-layer.tar", runtime.lang));
        let layer = reroot(docker, &id, "/out/root", &file).await?;
        Ok((layer, file, version))
    }
    .await;
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    if let Err(err) = docker.remove_container(&id, Some(remove)).await {
        tracing::warn!(container = %id, error = %err, "cannot remove the provisioning container");
    }
    outcome
}

/// One file of an image, read from a container that is created, never started.
async fn file_of_image(docker: &Docker, image: &str, path: &str) -> Result<Vec<u8>, BuildError> {
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let id = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await?
        .id;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut bytes = Vec::new();
    let mut stream = docker.download_from_container(&id, Some(options));
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(err) => {
                failed = Some(err);
                break;
            }
        }
    }
    drop(stream);
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    let _ = docker.remove_container(&id, Some(remove)).await;
    if let Some(err) = failed {
        return Err(err.into());
    }
    let mut archive = tar::Archive::new(bytes.as_slice());
    let mut first = archive
        .entries()
        .and_then(|mut e| e.next().transpose())
        .map_err(|e| io("cannot read the copied file", e))?
        .ok_or_else(|| BuildError::Failed(format!("{image} has no {path}")))?;
    let mut content = Vec::new();
    first
        .read_to_end(&mut content)
        .map_err(|e| io("cannot read the copied file", e))?;
    Ok(content)
}

fn single_file_tar(name: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    builder.append_data(&mut header, name, content)?;
    builder.into_inner()
}

/// Copies `dir` out of a container as a layer whose root is `dir` itself
/// (Docker's archive names entries `root/...`); returns its diff id.
async fn reroot(docker: &Docker, id: &str, dir: &str, to: &Path) -> Result<String, BuildError> {
    let copied = to.with_extension("copied");
    let mut file = tokio::fs::File::create(&copied)
        .await
        .map_err(|e| io("cannot write the runtime", e))?;
    let options = DownloadFromContainerOptionsBuilder::default()
        .path(dir)
        .build();
    let mut stream = docker.download_from_container(id, Some(options));
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| io("cannot write the runtime", e))?;
    }
    file.flush()
        .await
        .map_err(|e| io("cannot write the runtime", e))?;
    drop(file);
    let to = to.to_path_buf();
    let diff_id = tokio::task::spawn_blocking(move || {
        let result = slug::retop(&copied, &to, Path::new(""));
        let _ = std::fs::remove_file(&copied);
        result
    })
    .await
    .map_err(|e| BuildError::Failed(format!("making the runtime layer: {e}")))?
    .map_err(|e| io("cannot make the runtime layer", e))?;
    Ok(format!("sha256:{diff_id}"))
}

/// Loads `base` plus the layer as `tag`, with `base`'s configuration and
/// `labels` added.
async fn derive(
    docker: &Docker,
    base: &str,
    tag: &str,
    layer: &str,
    file: &Path,
    labels: &HashMap<String, String>,
    scratch: &Path,
) -> Result<(), BuildError> {
    let image = docker.inspect_image(base).await?;
    let mut config = image.config.clone().unwrap_or_default();
    let mut all = config.labels.clone().unwrap_or_default();
    all.extend(labels.clone());
    config.labels = Some(all);
    let config = serde_json::to_value(&config)
        .map_err(|e| BuildError::Failed(format!("the image configuration of {base}: {e}")))?;
    let mut layers: Vec<ArchiveLayer> = image
        .root_fs
        .and_then(|r| r.layers)
        .unwrap_or_default()
        .into_iter()
        .map(|diff_id| ArchiveLayer {
            diff_id,
            file: None,
            created_by: base.to_owned(),
        })
        .collect();
    layers.push(ArchiveLayer {
        diff_id: layer.to_owned(),
        file: Some(file.to_path_buf()),
        created_by: "gantry: a runtime from Debian's packages".into(),
    });
    let architecture = image.architecture.unwrap_or_else(|| "amd64".into());
    let os = image.os.unwrap_or_else(|| "linux".into());
    let dir = scratch.join(tag.replace(['/', ':'], "_"));
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| io("cannot make the scratch directory", e))?;
    let tag_owned = tag.to_owned();
    let archive = tokio::task::spawn_blocking(move || {
        slug::write_load_archive(&dir, &layers, config, &architecture, &os, &tag_owned)
    })
    .await
    .map_err(|e| BuildError::Failed(format!("making the image: {e}")))?
    .map_err(|e| io("cannot make the image archive", e))?;
    slug::load_archive(docker, &archive, tag).await?;
    Ok(())
}

fn io(what: &str, err: std::io::Error) -> BuildError {
    BuildError::Failed(format!("{what}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_version_is_debians_without_its_revision() {
        assert_eq!(upstream_version("20.19.2+dfsg-1+deb13u3"), "20.19.2");
        assert_eq!(upstream_version("1:2.3~rc1-2"), "2.3");
        assert_eq!(upstream_version("24.11.0"), "24.11.0");
    }

    #[test]
    fn a_copied_directory_becomes_a_layer_at_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("copied.tar");
        let mut builder = tar::Builder::new(std::fs::File::create(&from).expect("create"));
        let mut add = |path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_mode(0o755);
            header.set_size(data.len() as u64);
            match link {
                Some(target) => builder
                    .append_link(&mut header, path, target)
                    .expect("link"),
                None => builder.append_data(&mut header, path, data).expect("add"),
            }
        };
        add("root/", tar::EntryType::Directory, None, b"");
        add("root/usr/bin/node", tar::EntryType::Regular, None, b"ELF");
        add(
            "root/usr/bin/nodejs",
            tar::EntryType::Symlink,
            Some("node"),
            b"",
        );
        add(
            "root/usr/bin/node2",
            tar::EntryType::Link,
            Some("root/usr/bin/node"),
            b"",
        );
        builder.into_inner().expect("finish");
        let to = dir.path().join("layer.tar");
        let digest = slug::retop(&from, &to, Path::new("")).expect("strip");
        assert_eq!(digest.len(), 64);
        let mut archive = tar::Archive::new(std::fs::File::open(&to).expect("open"));
        let seen: Vec<(String, Option<String>)> = archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                (
                    e.path().expect("path").display().to_string(),
                    e.link_name()
                        .expect("link")
                        .map(|l| l.display().to_string()),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("usr/bin/node".to_owned(), None),
                ("usr/bin/nodejs".to_owned(), Some("node".to_owned())),
                ("usr/bin/node2".to_owned(), Some("usr/bin/node".to_owned())),
            ]
        );
    }
}
