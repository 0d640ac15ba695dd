//! The stack: the base image buildpacks compile on and apps run on.
//!
//! No registry is assumed, so the default stack is made on this host from
//! Debian packages: debootstrap of a minimal bookworm with what the built-in
//! buildpacks need, streamed as a tar into `docker import`. `gantry stack:build`
//! makes it on purpose; a push that needs it and finds none makes it first.
//! `stack_image` in `gantry.toml` names another image (a Heroku stack image
//! loaded by hand, say); gantry then uses that image and never builds or pulls.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The image `stack:build` makes.
pub const DEFAULT_STACK: &str = "gantry/stack:bookworm";

/// What `$STACK` says inside builds and apps on the default stack.
pub const DEFAULT_STACK_NAME: &str = "gantry-bookworm";

/// Debian packages on the default stack, beyond debootstrap's minimal base:
/// python3 and venv for the python buildpack (and the static one's server),
/// certificates and curl for buildpacks that fetch things.
const PACKAGES: &str = "python3,python3-venv,ca-certificates,curl";

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("the stack image {0} is not in the Docker engine, and gantry never pulls: load it (docker load / docker pull) or remove stack_image from gantry.toml to use the default stack")]
    Missing(String),
    #[error("building the stack needs root (debootstrap makes a Debian tree with device files and owners): run `sudo gantry stack:build` once")]
    NotRoot,
    #[error("building the stack needs debootstrap: apt-get install debootstrap")]
    NoDebootstrap,
    #[error("debootstrap failed ({0}); its output is above")]
    Debootstrap(String),
    #[error("cannot import the stack into Docker: {0}")]
    Import(String),
    #[error("cannot prepare the stack: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot talk to the Docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
}

/// Only one stack build at a time in this process; a second push that needs
/// the stack waits for the first to make it.
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Makes sure the stack image exists, building the default one if it is
/// missing (progress goes to `on_line`). Returns the image to build on.
pub async fn ensure(
    docker: &Docker,
    configured: Option<&str>,
    home: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<String, StackError> {
    if let Some(image) = configured {
        return match docker.inspect_image(image).await {
            Ok(_) => Ok(image.to_string()),
            Err(_) => Err(StackError::Missing(image.to_string())),
        };
    }
    let _building = BUILDING.lock().await;
    if docker.inspect_image(DEFAULT_STACK).await.is_ok() {
        return Ok(DEFAULT_STACK.to_string());
    }
    on_line(&format!(
        "the stack image {DEFAULT_STACK} is not built yet; building it now (once, about a minute)"
    ));
    build(docker, home, mirror, on_line).await?;
    Ok(DEFAULT_STACK.to_string())
}

/// Builds the default stack image from Debian packages and imports it as
/// [`DEFAULT_STACK`], replacing any earlier one.
pub async fn build(
    docker: &Docker,
    home: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), StackError> {
    if !is_root() {
        return Err(StackError::NotRoot);
    }
    if which("debootstrap").is_none() {
        return Err(StackError::NoDebootstrap);
    }
    let work = home.join("stack");
    std::fs::create_dir_all(&work)?;
    let root = work.join(format!("rootfs-{}", std::process::id()));
    // A leftover from a build that died half way is unusable.
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let result = build_in(docker, &root, mirror, on_line).await;
    if let Err(err) = std::fs::remove_dir_all(&root) {
        tracing::warn!(path = %root.display(), error = %err, "cannot remove the stack build tree");
    }
    result
}

async fn build_in(
    docker: &Docker,
    root: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), StackError> {
    on_line(&format!(
        "debootstrap: Debian bookworm (minbase) with {PACKAGES} from {mirror}"
    ));
    let mut child = tokio::process::Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={PACKAGES}")])
        .arg("bookworm")
        .arg(root)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(StackError::Debootstrap("no output pipes".into()));
    };
    let mut out = BufReader::new(stdout).lines();
    let mut err = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    // One line per package per phase is noise; each phase gets one line.
    let mut phase: Option<(&str, usize)> = None;
    let flush = |phase: &mut Option<(&str, usize)>, on_line: &mut (dyn FnMut(&str) + Send)| {
        if let Some((word, count)) = phase.take() {
            on_line(&format!("debootstrap: {word}... ({count})"));
        }
    };
    while out_open || err_open {
        let line = tokio::select! {
            line = out.next_line(), if out_open => line?.or_else(|| { out_open = false; None }),
            line = err.next_line(), if err_open => line?.or_else(|| { err_open = false; None }),
        };
        let Some(line) = line else { continue };
        if line.starts_with("I: Validating ") {
            continue;
        }
        let per_package = ["Retrieving", "Extracting", "Unpacking", "Configuring"]
            .into_iter()
            .find(|word| line.starts_with(&format!("I: {word} ")));
        match (per_package, &mut phase) {
            (Some(word), Some((current, count))) if *current == word => *count += 1,
            (Some(word), _) => {
                flush(&mut phase, on_line);
                phase = Some((word, 1));
            }
            (None, _) => {
                flush(&mut phase, on_line);
                on_line(&format!("debootstrap: {line}"));
            }
        }
    }
    flush(&mut phase, on_line);
    let status = child.wait().await?;
    if !status.success() {
        return Err(StackError::Debootstrap(status.to_string()));
    }
    finish_tree(root)?;
    on_line(&format!("importing into Docker as {DEFAULT_STACK}"));
    import(docker, root).await?;
    on_line(&format!("the stack {DEFAULT_STACK} is ready"));
    Ok(())
}

/// Trims the tree and makes it trust what the host trusts: a host behind a
/// TLS-inspecting proxy has that proxy's CA in its bundle, and buildpacks
/// fetching dependencies through it need the same.
fn finish_tree(root: &Path) -> Result<(), StackError> {
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let dir = root.join(dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(entry.path())?;
                }
            }
        }
    }
    let host_bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if host_bundle.is_file() {
        std::fs::copy(host_bundle, root.join("etc/ssl/certs/ca-certificates.crt"))?;
    }
    std::fs::create_dir_all(root.join("app"))?;
    Ok(())
}

/// `tar -c` of the tree streamed into the engine's import (`docker import`).
async fn import(docker: &Docker, root: &Path) -> Result<(), StackError> {
    let mut tar = tokio::process::Command::new("tar")
        .args(["--numeric-owner", "-C"])
        .arg(root)
        .args(["-c", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let Some(stdout) = tar.stdout.take() else {
        return Err(StackError::Import("no tar output".into()));
    };
    let body = tokio_util::io::ReaderStream::new(stdout);
    let (repo, tag) = DEFAULT_STACK
        .split_once(':')
        .unwrap_or((DEFAULT_STACK, "latest"));
    let changes = [
        "ENV LANG=C.UTF-8".to_string(),
        format!("ENV STACK={DEFAULT_STACK_NAME}"),
        "WORKDIR /app".to_string(),
        "CMD [\"/bin/bash\"]".to_string(),
    ];
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes.to_vec())
        .build();
    let mut stream = docker.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(detail) = info.error_detail {
                    return Err(StackError::Import(detail.message.unwrap_or_default()));
                }
            }
            Err(err) => return Err(StackError::Import(err.to_string())),
        }
    }
    let status = tar.wait().await?;
    if !status.success() {
        return Err(StackError::Import(format!("tar {status}")));
    }
    Ok(())
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
