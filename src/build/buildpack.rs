//! Buildpack builds: Heroku's buildpack API, run in a builder container.
//!
//! The builder is a container of the stack image holding the app's tree at
//! `/app`, the buildpacks, an env dir of the app's config vars (one file per
//! var) and the app's cache volume at `/cache`, which outlives the build. A
//! small driver (`scripts/build.sh`) runs detect, compile and release; its
//! output streams to the pusher. The compiled `/app` becomes the release's
//! image as one layer on the stack (see `slug`), started through
//! `scripts/launch.sh` so the buildpacks' `.profile.d` scripts apply.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use include_dir::{include_dir, Dir};

use super::container::{exit_code, read_file};
use super::{BuildError, BuiltImage};
use crate::names::AppName;

/// gantry's own buildpacks, compiled into the binary so it stays one file.
static BUILTIN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/buildpacks");

/// The built-in buildpacks in detection order, with what each looks for.
/// The order is documented in `buildpacks/README.md`: a Python app with an
/// `index.html` is a Python app; the Procfile one is the last resort.
pub const DETECT_ORDER: [(&str, &str); 5] = [
    (
        "python",
        "requirements.txt, pyproject.toml, Pipfile, runtime.txt, .python-version or *.py",
    ),
    ("node", "package.json"),
    ("go", "go.mod"),
    ("static", "index.html or public/index.html"),
    ("procfile", "a Procfile"),
];

const DRIVER: &str = include_str!("scripts/build.sh");
const LAUNCHER: &str = include_str!("scripts/launch.sh");

/// Which buildpacks a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The first built-in whose `bin/detect` says yes.
    Detect,
    /// These, in order (from `BUILDPACK_URL` or `.buildpacks`).
    Given(Vec<BuildpackRef>),
}

/// One buildpack named by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackRef {
    /// A built-in, by name (`python`, or `gantry/python`).
    Builtin(String),
    /// A git URL (anything `git clone` takes, local paths too) and an optional ref.
    Git {
        url: String,
        reference: Option<String>,
    },
}

impl std::fmt::Display for BuildpackRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildpackRef::Builtin(name) => write!(f, "{name} (built-in)"),
            BuildpackRef::Git {
                url,
                reference: Some(r),
            } => write!(f, "{url}#{r}"),
            BuildpackRef::Git { url, .. } => f.write_str(url),
        }
    }
}

impl BuildpackRef {
    pub fn parse(text: &str) -> BuildpackRef {
        let text = text.trim();
        let name = text.strip_prefix("gantry/").unwrap_or(text);
        if DETECT_ORDER.iter().any(|(builtin, _)| *builtin == name) {
            return BuildpackRef::Builtin(name.to_string());
        }
        // `#ref` ends a URL (`#v2`, `#feature/x`, a commit).
        match text.rsplit_once('#') {
            Some((url, reference)) if !reference.is_empty() => BuildpackRef::Git {
                url: url.to_string(),
                reference: Some(reference.to_string()),
            },
            _ => BuildpackRef::Git {
                url: text.trim_end_matches('#').to_string(),
                reference: None,
            },
        }
    }
}

/// Picks the buildpacks: the `BUILDPACK_URL` config var, else the tree's
/// `.buildpacks` file (one URL per line, `#` comments), else detection.
pub fn select(buildpack_url: Option<&str>, dot_buildpacks: Option<&str>) -> Selection {
    if let Some(url) = buildpack_url.map(str::trim).filter(|u| !u.is_empty()) {
        return Selection::Given(vec![BuildpackRef::parse(url)]);
    }
    let listed: Vec<BuildpackRef> = dot_buildpacks
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(BuildpackRef::parse)
        .collect();
    if listed.is_empty() {
        Selection::Detect
    } else {
        Selection::Given(listed)
    }
}

/// The message for a tree no built-in buildpack recognizes.
pub fn nothing_detected() -> String {
    let looked: Vec<String> = DETECT_ORDER
        .iter()
        .map(|(name, what)| format!("{what} ({name})"))
        .collect();
    format!(
        "no buildpack detected: looked for {}; add a Dockerfile, or set BUILDPACK_URL to a buildpack for this runtime",
        looked.join(", ")
    )
}

/// What a buildpack build needs.
pub struct BuildpackBuild<'a> {
    pub docker: &'a Docker,
    pub app: &'a AppName,
    pub stack: &'a super::stack::StackImages,
    /// The image's tag, `gantry/APP:vN`.
    pub tag: &'a str,
    pub labels: &'a HashMap<String, String>,
    /// A tar of the pushed tree.
    pub source: Vec<u8>,
    pub selection: Selection,
    /// The app's config vars, for the env dir.
    pub config: Vec<(String, String)>,
    pub commit_sha: &'a str,
    /// Where git buildpacks are cloned for the build.
    pub scratch: PathBuf,
    /// The host's runtime store, mounted read-only at `runtimes::MOUNT`.
    pub runtimes: PathBuf,
    /// Buildpacks may stop for a runtime gantry would fetch from upstream
    /// (`GANTRY_UPSTREAM=1`), rather than refuse.
    pub upstream: bool,
    /// The app's stack is not fixed yet (its first build): a buildpack may
    /// stop for a runtime another stack has (`GANTRY_NEW_APP=1`).
    pub new_app: bool,
}

/// A buildpack build's image and the process types its buildpacks declared.
#[derive(Debug)]
pub struct BuildpackImage {
    pub image: BuiltImage,
    pub default_process_types: BTreeMap<String, String>,
    /// The compiled tree's Procfile, which is what runs (a buildpack may
    /// write or change it), as Heroku reads it.
    pub procfile: Option<String>,
}

/// The per-app volume buildpacks keep their cache in (pip's, say).
pub fn cache_volume(app: &AppName) -> String {
    format!("gantry-cache-{app}")
}

/// Removes the app's build cache (the app is being destroyed).
pub async fn remove_cache(docker: &Docker, app: &AppName) {
    let volume = cache_volume(app);
    match docker
        .remove_volume(
            &volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
    {
        Ok(()) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(err) => tracing::warn!(%app, %volume, error = %err, "cannot remove the build cache"),
    }
}

/// Runs the buildpacks and commits the result as `build.tag`.
pub async fn build(
    build: BuildpackBuild<'_>,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<BuildpackImage, BuildError> {
    let _gate = crate::context::image_gate::IMAGE_GATE.read().await;
    let detect = build.selection == Selection::Detect;
    let mut packs: Vec<(String, Pack)> = Vec::new();
    match &build.selection {
        Selection::Detect => {
            for (name, _) in DETECT_ORDER {
                packs.push((name.to_string(), builtin(name)?));
            }
        }
        Selection::Given(refs) => {
            for (i, r) in refs.iter().enumerate() {
                let pack = match r {
                    BuildpackRef::Builtin(name) => builtin(name)?,
                    BuildpackRef::Git { url, reference } => {
                        on_line(&format!("-----> Fetching buildpack {r}"));
                        let dir = build.scratch.join(format!("buildpack-{i}"));
                        clone(url, reference.as_deref(), &dir).await?;
                        Pack::Dir(dir)
                    }
                };
                packs.push((r.to_string().replace(' ', "_"), pack));
            }
        }
    }
    let files = tokio::task::spawn_blocking({
        let config = build.config.clone();
        move || builder_files(&packs, detect, &config)
    })
    .await
    .map_err(|e| BuildError::Failed(format!("preparing the build: {e}")))??;

    let name = format!(
        "gantry-build-{}-{}",
        build.app,
        build.tag.rsplit(':').next().unwrap_or("latest")
    );
    // A builder left by a crash of an earlier try of this same release, or
    // still being removed after the try just before (a runtime fetched
    // from upstream): gone before the name is taken again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _ = build
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        let gone = matches!(
            build.docker.inspect_container(&name, None).await,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })
        );
        if gone || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Debian's Node works only at Debian's paths: an app that may use it
    // builds on the build image with it, and its slug sits on the run image
    // with it (made once per stack; see `debian`).
    let mut builder_image = build.stack.build.clone();
    let mut env = vec![
        format!("SOURCE_VERSION={}", build.commit_sha),
        format!("STACK={}", build.stack.name),
        format!("GANTRY_APP={}", build.app),
    ];
    if build.upstream {
        env.push("GANTRY_UPSTREAM=1".to_owned());
    }
    if build.new_app {
        env.push("GANTRY_NEW_APP=1".to_owned());
    }
    let mut debian_node = None;
    if build.stack.suite.is_some() && may_use_node(&build.selection, &build.source) {
        let scratch = build.scratch.join("debian-node");
        match super::debian::provide(
            build.docker,
            build.stack,
            super::debian::NODE,
            &scratch,
            on_line,
        )
        .await
        {
            Ok(provided) => {
                builder_image = provided.build_image.clone();
                env.push(format!("GANTRY_DEBIAN_NODE={}", provided.upstream()));
                env.push(format!("GANTRY_DEBIAN_NODE_PACKAGE={}", provided.version));
                debian_node = Some(provided);
            }
            Err(err) => on_line(&format!(
                "       Debian's Node.js is not available on this stack ({err}); Node.js comes from the host's runtime store"
            )),
        }
    }
    let mut binds = vec![format!("{}:/cache", cache_volume(build.app))];
    if std::fs::create_dir_all(&build.runtimes).is_ok() {
        binds.push(format!(
            "{}:{}:ro",
            build.runtimes.display(),
            super::runtimes::MOUNT
        ));
    }
    let body = ContainerCreateBody {
        image: Some(builder_image),
        entrypoint: Some(vec!["/bin/sh".into(), "/gantry/build".into()]),
        cmd: Some(vec![]),
        working_dir: Some("/app".into()),
        env: Some(env),
        host_config: Some(HostConfig {
            binds: Some(binds),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = build
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await?;
    let builder = Builder {
        docker: build.docker.clone(),
        id: created.id,
    };
    let upload = |path: &str| {
        UploadToContainerOptionsBuilder::default()
            .path(path)
            .build()
    };
    build
        .docker
        .upload_to_container(
            &builder.id,
            Some(upload("/")),
            bollard::body_full(files.into()),
        )
        .await?;
    build
        .docker
        .upload_to_container(
            &builder.id,
            Some(upload("/app")),
            bollard::body_full(build.source.into()),
        )
        .await?;
    build.docker.start_container(&builder.id, None).await?;

    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = build.docker.logs(&builder.id, Some(options));
    let mut pending = String::new();
    while let Some(chunk) = logs.next().await {
        let chunk = chunk?;
        pending.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            on_line(line.trim_end_matches(['\n', '\r']));
        }
    }
    if !pending.is_empty() {
        on_line(&pending);
    }
    let code = exit_code(build.docker, &builder.id).await?;
    match code {
        0 => {}
        100 => return Err(BuildError::Failed(nothing_detected())),
        101 => {
            return Err(BuildError::Failed(
                "the buildpack does not apply to this app".into(),
            ))
        }
        102 => {
            return Err(BuildError::Failed(
                "the buildpack's compile step failed".into(),
            ))
        }
        103 => {
            return Err(BuildError::Failed(
                "the buildpack's release step failed".into(),
            ))
        }
        104 => {
            let need = read_file(build.docker, &builder.id, "/gantry/out/need")
                .await
                .unwrap_or_default();
            return Err(BuildError::NeedsRuntime(need.trim().to_owned()));
        }
        other => {
            return Err(BuildError::Failed(format!(
                "the builder container exited with code {other}"
            )))
        }
    }

    let release_yml = read_file(build.docker, &builder.id, "/gantry/out/release.yml").await;
    let default_process_types = release_yml
        .as_deref()
        .map(parse_release)
        .unwrap_or_default();
    let procfile = read_file(build.docker, &builder.id, "/app/Procfile").await;
    // Each buildpack notes the runtimes it chose (`python 3.13.5`): they go
    // with the release's image, for apps:info and the next build.
    let mut labels = build.labels.clone();
    if let Some(chosen) = read_file(build.docker, &builder.id, "/gantry/out/runtimes").await {
        for line in chosen.lines() {
            if let Some((lang, version)) = line.trim().split_once(' ') {
                labels.insert(format!("gantry.runtime.{lang}"), version.trim().to_owned());
            }
        }
    }
    // Runtimes a buildpack took from the host's store ("node/22.20.0
    // app/.heroku/node"): layers of their own under the slug, made once.
    let mut runtime_layers = Vec::new();
    let mut run_image = build.stack.run.clone();
    if let Some(listed) = read_file(build.docker, &builder.id, "/gantry/out/layers").await {
        for line in listed.lines().filter(|l| !l.trim().is_empty()) {
            // Debian's Node, at its own paths: the slug sits on the run image
            // that has it.
            if line.trim() == DEBIAN_NODE_LINE {
                let provided = debian_node.as_ref().ok_or_else(|| {
                    BuildError::Failed(
                        "a buildpack asked for Debian's Node.js, which this build does not have"
                            .into(),
                    )
                })?;
                run_image = provided.run_image.clone();
                continue;
            }
            let (runtime, dest) = parse_layer_line(line).ok_or_else(|| {
                BuildError::Failed(format!(
                    "a buildpack asked for a runtime layer gantry cannot make: {line:?}"
                ))
            })?;
            let dir = build.runtimes.join(runtime);
            let cache = build.runtimes.join(".layers");
            let dest = dest.to_owned();
            let made = tokio::task::spawn_blocking(move || {
                super::slug::runtime_layer(&dir, &dest, &cache)
            })
            .await
            .map_err(|e| BuildError::Failed(format!("making a runtime layer: {e}")))?
            .map_err(|e| BuildError::Failed(format!("making the layer of {runtime}: {e}")))?;
            runtime_layers.push(made);
        }
    }
    // A Python virtualenv from the cache: a layer of its own at app/.venv,
    // made once per key (the lock file, the tool and the Python).
    if let Some(key) = read_file(build.docker, &builder.id, "/gantry/out/venv-key").await {
        let dir = read_file(build.docker, &builder.id, "/gantry/out/venv-dir")
            .await
            .unwrap_or_default();
        let made = venv_layer(
            build.docker,
            &builder.id,
            build.app,
            key.trim(),
            dir.trim(),
            &build.runtimes.join(".layers"),
        )
        .await?;
        runtime_layers.push(made);
    }
    let cmd = match default_process_types.get("web") {
        Some(web) => vec!["/bin/bash".into(), "-c".into(), web.clone()],
        None => vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo 'this app has no web process: add a web line to its Procfile' >&2; exit 1".into(),
        ],
    };
    let image = super::slug::load(
        build.docker,
        &builder.id,
        &run_image,
        build.tag,
        super::slug::Launch {
            launcher: LAUNCHER,
            cmd,
            labels: &labels,
            runtimes: runtime_layers,
        },
        &build.scratch,
    )
    .await?;
    Ok(BuildpackImage {
        image,
        default_process_types,
        procfile,
    })
}

/// Removes the builder containers of `apps` that a crashed `serve` left
/// behind (a live build removes its own). Run at start, before pushes are
/// accepted; only this gantry's apps, as the engine may be shared.
pub async fn remove_stale_builders(docker: &Docker, apps: &[AppName]) {
    if apps.is_empty() {
        return;
    }
    let names = apps
        .iter()
        .map(|app| format!("^/gantry-build-{app}-v"))
        .collect();
    let filters = HashMap::from([("name", names)]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let Ok(stale) = docker.list_containers(Some(options)).await else {
        return;
    };
    for container in stale {
        let Some(id) = container.id else { continue };
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(&id, Some(options)).await {
            Ok(()) => tracing::info!(%id, "removed a builder container left by an earlier run"),
            Err(err) => tracing::warn!(%id, error = %err, "cannot remove a stale builder"),
        }
    }
}

/// Removes the builder container however the build ends (failure, or the
/// pusher going away and the build future being dropped).
struct Builder {
    docker: Docker,
    id: String,
}

impl Drop for Builder {
    fn drop(&mut self) {
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(false)
                    .build();
                if let Err(err) = docker.remove_container(&id, Some(options)).await {
                    tracing::warn!(%id, error = %err, "cannot remove a builder container");
                }
            });
        }
    }
}

enum Pack {
    Builtin(&'static Dir<'static>),
    Dir(PathBuf),
}

fn builtin(name: &str) -> Result<Pack, BuildError> {
    BUILTIN
        .get_dir(name)
        .map(Pack::Builtin)
        .ok_or_else(|| BuildError::Failed(format!("no built-in buildpack named {name}")))
}

/// `git clone` of a buildpack (at `reference` if given), without its `.git`.
async fn clone(url: &str, reference: Option<&str>, dir: &Path) -> Result<(), BuildError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| BuildError::Failed(e.to_string()))?;
    }
    let git = |args: Vec<&std::ffi::OsStr>| {
        let mut command = tokio::process::Command::new("git");
        command
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    };
    let fail = |what: &str, out: &std::process::Output| {
        BuildError::Failed(format!(
            "cannot {what} buildpack {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    };
    let out = git(vec![
        "clone".as_ref(),
        "--quiet".as_ref(),
        url.as_ref(),
        dir.as_os_str(),
    ])
    .output()
    .await
    .map_err(|e| BuildError::Failed(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(fail("fetch", &out));
    }
    if let Some(reference) = reference {
        let out = git(vec![
            "-C".as_ref(),
            dir.as_os_str(),
            "checkout".as_ref(),
            "--quiet".as_ref(),
            reference.as_ref(),
        ])
        .output()
        .await
        .map_err(|e| BuildError::Failed(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(fail(&format!("check out {reference} of"), &out));
        }
    }
    std::fs::remove_dir_all(dir.join(".git")).map_err(|e| BuildError::Failed(e.to_string()))?;
    Ok(())
}

/// The tar uploaded at `/` before the build: `/app`, the driver, the launcher,
/// the buildpacks in order and the env dir.
fn builder_files(
    packs: &[(String, Pack)],
    detect: bool,
    config: &[(String, String)],
) -> Result<Vec<u8>, BuildError> {
    let io = |e: std::io::Error| BuildError::Failed(format!("preparing the build: {e}"));
    let mut tar = tar::Builder::new(Vec::new());
    let add = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, data)
    };
    let dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, std::io::empty())
    };
    dir(&mut tar, "app", 0o755).map_err(io)?;
    dir(&mut tar, "gantry", 0o755).map_err(io)?;
    dir(&mut tar, "gantry/env", 0o700).map_err(io)?;
    add(&mut tar, "gantry/build", 0o755, DRIVER.as_bytes()).map_err(io)?;
    add(&mut tar, "gantry/launch", 0o755, LAUNCHER.as_bytes()).map_err(io)?;
    if detect {
        add(&mut tar, "gantry/detect", 0o644, b"").map_err(io)?;
    }
    let mut order = String::new();
    for (i, (label, pack)) in packs.iter().enumerate() {
        let root = format!("gantry/buildpacks/{i:02}");
        order.push_str(&format!("{i:02} {label}\n"));
        match pack {
            Pack::Builtin(d) => add_embedded(&mut tar, d, d.path(), &root).map_err(io)?,
            Pack::Dir(path) => tar.append_dir_all(&root, path).map_err(io)?,
        }
    }
    add(&mut tar, "gantry/order", 0o644, order.as_bytes()).map_err(io)?;
    for (name, value) in config {
        add(
            &mut tar,
            &format!("gantry/env/{name}"),
            0o600,
            value.as_bytes(),
        )
        .map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

/// Adds an embedded buildpack; files under `bin/` are executable.
fn add_embedded(
    tar: &mut tar::Builder<Vec<u8>>,
    dir: &Dir<'_>,
    base: &Path,
    root: &str,
) -> std::io::Result<()> {
    for file in dir.files() {
        let relative = file.path().strip_prefix(base).unwrap_or(file.path());
        let executable = relative.starts_with("bin");
        let mut header = tar::Header::new_gnu();
        header.set_size(file.contents().len() as u64);
        header.set_mode(if executable { 0o755 } else { 0o644 });
        header.set_cksum();
        tar.append_data(&mut header, Path::new(root).join(relative), file.contents())?;
    }
    for sub in dir.dirs() {
        add_embedded(tar, sub, base, root)?;
    }
    Ok(())
}

/// The layer of an app's virtualenv for `key`, from the cache (`dir` in the
/// builder) the first time, from the layer cache after; other keys' layers
/// of the app are removed. Returns its diff id and tar.
async fn venv_layer(
    docker: &Docker,
    builder: &str,
    app: &AppName,
    key: &str,
    dir: &str,
    cache: &Path,
) -> Result<(String, PathBuf), BuildError> {
    let failed = |what: &str, e: std::io::Error| BuildError::Failed(format!("{what}: {e}"));
    let digest = super::slug::sha256_hex(key.as_bytes());
    let prefix = format!("venv-{app}-");
    let name = format!("{prefix}{}", &digest[..16]);
    let tar_path = cache.join(format!("{name}.tar"));
    let id_path = cache.join(format!("{name}.diffid"));
    if let (true, Ok(id)) = (tar_path.is_file(), std::fs::read_to_string(&id_path)) {
        return Ok((id.trim().to_owned(), tar_path));
    }
    if !dir.starts_with("/cache/") {
        return Err(BuildError::Failed(format!(
            "the python buildpack named {dir:?} as its virtualenv, outside the build cache"
        )));
    }
    std::fs::create_dir_all(cache).map_err(|e| failed("cannot make the layer cache", e))?;
    let copied = cache.join(format!("{name}.copied"));
    let mut file = tokio::fs::File::create(&copied)
        .await
        .map_err(|e| failed("cannot copy the virtualenv", e))?;
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(dir)
        .build();
    let mut stream = docker.download_from_container(builder, Some(options));
    while let Some(chunk) = stream.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk?)
            .await
            .map_err(|e| failed("cannot copy the virtualenv", e))?;
    }
    drop(file);
    let (from, to) = (copied.clone(), tar_path.clone());
    let made =
        tokio::task::spawn_blocking(move || super::slug::retop(&from, &to, Path::new("app/.venv")))
            .await
            .map_err(|e| BuildError::Failed(format!("making the virtualenv's layer: {e}")))?;
    let _ = std::fs::remove_file(&copied);
    let diff_id = format!(
        "sha256:{}",
        made.map_err(|e| failed("cannot make the virtualenv's layer", e))?
    );
    std::fs::write(&id_path, &diff_id).map_err(|e| failed("cannot record the layer", e))?;
    // The app's layers for other keys are of no use now.
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && !file.starts_with(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok((diff_id, tar_path))
}

/// The `/gantry/out/layers` line of a buildpack that uses Debian's Node.
const DEBIAN_NODE_LINE: &str = "debian/node /";

/// Whether a build may run the node buildpack: it is named, or detection
/// may pick it (a `package.json` at the root, as its `bin/detect` asks).
fn may_use_node(selection: &Selection, source: &[u8]) -> bool {
    match selection {
        Selection::Given(refs) => refs
            .iter()
            .any(|r| matches!(r, BuildpackRef::Builtin(name) if name == "node")),
        Selection::Detect => tar_has_root_file(source, "package.json"),
    }
}

/// Whether a tar of a tree has `name` at its root.
fn tar_has_root_file(tar_bytes: &[u8], name: &str) -> bool {
    let mut archive = tar::Archive::new(tar_bytes);
    let Ok(entries) = archive.entries() else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        entry
            .path()
            .is_ok_and(|p| p.strip_prefix("./").unwrap_or(&p) == Path::new(name))
    })
}

/// `LANG/VERSION app/PATH`: a stored runtime and where the image has it.
/// Nothing outside the store or outside `/app`.
fn parse_layer_line(line: &str) -> Option<(&str, &str)> {
    let (runtime, dest) = line.trim().split_once(' ')?;
    let dest = dest.trim();
    let (lang, version) = runtime.split_once('/')?;
    let plain = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    let dest_ok = dest.starts_with("app/") && dest.split('/').all(plain);
    (plain(lang) && plain(version) && dest_ok).then_some((runtime, dest))
}

/// The `default_process_types` of a `bin/release` output. That output is YAML
/// but only ever this shape (a mapping of names to one-line commands), so a
/// reader for that shape beats a YAML dependency.
pub fn parse_release(yaml: &str) -> BTreeMap<String, String> {
    let mut types = BTreeMap::new();
    let mut inside = false;
    for line in yaml.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') || line.trim() == "---" {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            inside = line.trim_end() == "default_process_types:";
            continue;
        }
        if inside {
            if let Some((name, command)) = line.trim().split_once(':') {
                let command = unquote(command.trim());
                if !name.trim().is_empty() && !command.is_empty() {
                    types.insert(name.trim().to_string(), command.to_string());
                }
            }
        }
    }
    types
}

fn unquote(text: &str) -> String {
    let quoted = |q: char| text.len() >= 2 && text.starts_with(q) && text.ends_with(q);
    if quoted('"') {
        text[1..text.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else if quoted('\'') {
        text[1..text.len() - 1].replace("''", "'")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_follows_config_then_dot_buildpacks_then_detection() {
        assert_eq!(select(None, None), Selection::Detect);
        assert_eq!(
            select(Some(" "), Some("# only a comment\n\n")),
            Selection::Detect
        );
        assert_eq!(
            select(Some("https://example.com/bp.git#v2"), Some("python\n")),
            Selection::Given(vec![BuildpackRef::Git {
                url: "https://example.com/bp.git".into(),
                reference: Some("v2".into())
            }])
        );
        assert_eq!(
            select(None, Some("gantry/static\n/srv/bp\n")),
            Selection::Given(vec![
                BuildpackRef::Builtin("static".into()),
                BuildpackRef::Git {
                    url: "/srv/bp".into(),
                    reference: None
                }
            ])
        );
        assert_eq!(
            BuildpackRef::parse("file:///srv/bp#feature/x"),
            BuildpackRef::Git {
                url: "file:///srv/bp".into(),
                reference: Some("feature/x".into())
            }
        );
    }

    #[test]
    fn every_builtin_is_embedded_with_its_scripts() {
        for (name, _) in DETECT_ORDER {
            let dir = BUILTIN.get_dir(name).expect(name);
            for script in ["detect", "compile"] {
                let path = dir.path().join("bin").join(script);
                assert!(BUILTIN.get_file(&path).is_some(), "{}", path.display());
            }
            assert!(BUILTIN.get_file(dir.path().join("README.md")).is_some());
        }
    }

    #[test]
    fn release_output_gives_the_default_process_types() {
        let yaml = "---\naddons: []\ndefault_process_types:\n  web: python3 app.py\n  worker: \"sh -c 'x: y'\"\nconfig_vars:\n  A: b\n";
        let types = parse_release(yaml);
        assert_eq!(types.len(), 2);
        assert_eq!(types["web"], "python3 app.py");
        assert_eq!(types["worker"], "sh -c 'x: y'");
        assert!(parse_release("--- {}\n").is_empty());
    }

    #[test]
    fn runtime_layers_stay_inside_the_store_and_app() {
        assert_eq!(
            parse_layer_line("node/22.20.0 app/.heroku/node"),
            Some(("node/22.20.0", "app/.heroku/node"))
        );
        for bad in [
            "node/../../etc app/x",
            "node/22 /etc",
            "node/22 app/../etc",
            "node app/x",
            "node/22",
        ] {
            assert_eq!(parse_layer_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn nothing_detected_says_what_was_looked_for() {
        let message = nothing_detected();
        assert!(message.starts_with("no buildpack detected: looked for requirements.txt"));
        assert!(message.contains("index.html or public/index.html (static)"));
    }
}
