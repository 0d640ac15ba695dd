//! Stacks: the base images buildpacks compile on and apps run on.
//!
//! No registry is assumed, so stacks are made on this host from Debian
//! packages, one per suite (bookworm, trixie, forky): debootstrap of a minimal
//! tree, the suite's `-security` and `-updates` applied inside it, imported as
//! the run image `gantry/stack:SUITE`; then the build tools installed on top and
//! imported as the build image `gantry/stack:SUITE-build`. Buildpacks compile in
//! the build image; the slug is one layer on the run image, which stays small
//! (Heroku's split). `gantry stack:build` makes them on purpose; a push that
//! needs one and finds none makes it first. `stack_image` in `gantry.toml`
//! names another image (a Heroku stack image loaded by hand, say); gantry then
//! uses that image for both and never builds or pulls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A Debian suite gantry makes a stack of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    Bookworm,
    Trixie,
    Forky,
}

/// Every suite, oldest first.
pub const SUITES: [Suite; 3] = [Suite::Bookworm, Suite::Trixie, Suite::Forky];

/// What each suite's Debian packages offer beyond the stack image, installed
/// by the buildpacks on first need (verified December 2026).
pub const SUITE_RUNTIMES: &str = "go: bookworm 1.19 (backports 1.23), trixie 1.24 (backports 1.25, 1.26, 1.27), forky 1.24+; python: bookworm 3.11, trixie 3.13, forky 3.14; node: bookworm 18, trixie 20, forky 24 (with npm, made into a layer once per stack)";

/// The stack new apps get. Apps keep the stack they were first built on.
pub const DEFAULT_SUITE: Suite = Suite::Trixie;

/// What apps built before stacks had suites were built on.
pub const LEGACY_SUITE: Suite = Suite::Bookworm;

/// Label on a stack image: when its packages were last brought up to date.
pub const LABEL_UPDATED: &str = "gantry.stack.updated";
/// Label on stack and app images: the suite.
pub const LABEL_SUITE: &str = "gantry.stack";
/// Label prefix on a stack image: a runtime's version (`gantry.stack.python`).
pub const LABEL_RUNTIME: &str = "gantry.stack.runtime.";

impl Suite {
    pub fn parse(text: &str) -> Result<Suite, StackError> {
        let text = text.trim();
        let text = text.strip_prefix("gantry-").unwrap_or(text);
        SUITES
            .into_iter()
            .find(|suite| suite.name() == text)
            .ok_or_else(|| StackError::UnknownSuite(text.to_owned()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
            Suite::Forky => "forky",
        }
    }

    /// The Python minor its Debian packages carry (as [`SUITE_RUNTIMES`]
    /// says; forky's may move on while it is testing).
    pub fn python(self) -> &'static str {
        match self {
            Suite::Bookworm => "3.11",
            Suite::Trixie => "3.13",
            Suite::Forky => "3.14",
        }
    }

    /// The suite whose Python is `version`'s minor (`3.14` or `3.14.2`).
    pub fn with_python(version: &str) -> Option<Suite> {
        let minor: Vec<&str> = version.split('.').take(2).collect();
        let minor = minor.join(".");
        SUITES.into_iter().find(|suite| suite.python() == minor)
    }

    /// The image apps run on.
    pub fn run_image(self) -> String {
        format!("gantry/stack:{}", self.name())
    }

    /// The image buildpacks compile in: the run image and the build tools.
    pub fn build_image(self) -> String {
        format!("gantry/stack:{}-build", self.name())
    }

    /// What `$STACK` says inside builds and apps.
    pub fn stack_name(self) -> String {
        format!("gantry-{}", self.name())
    }

    /// The suite's images, as a build uses them.
    pub fn images(self) -> StackImages {
        StackImages {
            build: self.build_image(),
            run: self.run_image(),
            name: self.stack_name(),
            suite: Some(self),
        }
    }

    /// forky is Debian testing: debootstrap knows it by sid's script, and it
    /// has no -security or -updates suites.
    fn script(self) -> Option<&'static str> {
        match self {
            Suite::Forky => Some("sid"),
            _ => None,
        }
    }

    fn has_updates(self) -> bool {
        self != Suite::Forky
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The images one build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackImages {
    /// Where buildpacks compile.
    pub build: String,
    /// What the slug is a layer on.
    pub run: String,
    /// `$STACK`.
    pub name: String,
    /// `None`: a configured `stack_image`, not one of gantry's suites.
    pub suite: Option<Suite>,
}

/// Debian packages of the run image, beyond debootstrap's minimal base:
/// python3 for the python and static buildpacks, certificates and curl for
/// apps that fetch things, libpq for apps built against libpq-dev.
const RUN_PACKAGES: &str = "python3,ca-certificates,curl,libpq5";

/// What buildpacks commonly need at build time, installed over the run image:
/// a C toolchain and headers for wheels and native modules, and the tools
/// Heroku's buildpacks call.
const BUILD_PACKAGES: [&str; 13] = [
    "python3-venv",
    "python3-dev",
    "build-essential",
    "pkg-config",
    "libpq-dev",
    "libssl-dev",
    "libffi-dev",
    "jq",
    "file",
    "zstd",
    "xz-utils",
    "git",
    "unzip",
];

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("unknown stack {0:?}: gantry makes stacks of bookworm, trixie and forky")]
    UnknownSuite(String),
    #[error("the stack image {0} is not in the Docker engine, and gantry never pulls: load it (docker load / docker pull) or remove stack_image from gantry.toml to use gantry's stacks")]
    Missing(String),
    #[error("building the stack needs root (debootstrap makes a Debian tree with device files and owners): run `sudo gantry stack:build {0}` once")]
    NotRoot(Suite),
    #[error("building the stack needs debootstrap: apt-get install debootstrap")]
    NoDebootstrap,
    #[error("debootstrap failed ({0}); its output is above")]
    Debootstrap(String),
    #[error("{0} failed in the stack tree ({1}); its output is above")]
    Chroot(String, String),
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

/// Makes sure the stack's images exist, building the suite's if they are
/// missing (progress goes to `on_line`).
pub async fn ensure(
    docker: &Docker,
    configured: Option<&str>,
    suite: Suite,
    home: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<StackImages, StackError> {
    if let Some(image) = configured {
        let found = docker
            .inspect_image(image)
            .await
            .map_err(|_| StackError::Missing(image.to_string()))?;
        let name = found
            .config
            .and_then(|c| c.env)
            .unwrap_or_default()
            .iter()
            .find_map(|e| e.strip_prefix("STACK=").map(str::to_owned))
            .unwrap_or_else(|| image.to_string());
        return Ok(StackImages {
            build: image.to_string(),
            run: image.to_string(),
            name,
            suite: None,
        });
    }
    let images = suite.images();
    let _building = BUILDING.lock().await;
    if docker.inspect_image(&images.run).await.is_ok()
        && docker.inspect_image(&images.build).await.is_ok()
    {
        return Ok(images);
    }
    on_line(&format!(
        "the stack {} is not built yet; building it now (once, a few minutes)",
        images.run
    ));
    build(docker, suite, home, mirror, on_line).await?;
    Ok(images)
}

/// What a stack build did.
#[derive(Debug, Clone)]
pub struct Built {
    /// Packages the suite's -security and -updates upgraded (`None`: the
    /// suite has none).
    pub upgraded: Option<usize>,
    pub runtimes: Vec<(String, String)>,
}

/// Builds the suite's run and build images from Debian packages, replacing
/// any earlier ones.
pub async fn build(
    docker: &Docker,
    suite: Suite,
    home: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, StackError> {
    if !is_root() {
        return Err(StackError::NotRoot(suite));
    }
    if which("debootstrap").is_none() {
        return Err(StackError::NoDebootstrap);
    }
    let work = home.join("stack");
    std::fs::create_dir_all(&work)?;
    let root = work.join(format!("rootfs-{}-{}", suite, std::process::id()));
    // A leftover from a build that died half way is unusable.
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let result = build_in(docker, suite, &root, mirror, on_line).await;
    if let Err(err) = std::fs::remove_dir_all(&root) {
        tracing::warn!(path = %root.display(), error = %err, "cannot remove the stack build tree");
    }
    result
}

/// The security archive beside a Debian mirror.
fn security_mirror(mirror: &str) -> String {
    let trimmed = mirror.trim_end_matches('/');
    match trimmed.strip_suffix("/debian") {
        Some(base) => format!("{base}/debian-security"),
        None => "http://deb.debian.org/debian-security".to_owned(),
    }
}

/// The tree's apt sources: the suite, and for released suites its -updates,
/// -security and -backports (backports are never installed unless asked for:
/// they are where newer Go toolchains come from).
fn sources(suite: Suite, mirror: &str) -> String {
    let name = suite.name();
    let mut text = format!("deb {mirror} {name} main\n");
    if suite.has_updates() {
        text.push_str(&format!("deb {mirror} {name}-updates main\n"));
        text.push_str(&format!(
            "deb {} {name}-security main\n",
            security_mirror(mirror)
        ));
        text.push_str(&format!("deb {mirror} {name}-backports main\n"));
    }
    text
}

async fn build_in(
    docker: &Docker,
    suite: Suite,
    root: &Path,
    mirror: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, StackError> {
    on_line(&format!(
        "debootstrap: Debian {suite} (minbase) with {RUN_PACKAGES} from {mirror}"
    ));
    let mut debootstrap = tokio::process::Command::new("debootstrap");
    debootstrap
        .args(["--variant=minbase", &format!("--include={RUN_PACKAGES}")])
        .arg(suite.name())
        .arg(root)
        .arg(mirror);
    if let Some(script) = suite.script() {
        debootstrap.arg(format!("/usr/share/debootstrap/scripts/{script}"));
    }
    let status = run_quietly(debootstrap, "debootstrap", on_line).await?;
    if !status.success() {
        return Err(StackError::Debootstrap(status.to_string()));
    }
    std::fs::write(root.join("etc/apt/sources.list"), sources(suite, mirror))?;
    // The host's way to reach the mirror (an apt proxy; a snapshot mirror
    // whose Release files are past their Valid-Until) holds in the tree too,
    // and in the build image, where buildpacks install runtimes.
    let host_apt = host_apt_settings().await;
    if !host_apt.is_empty() {
        std::fs::write(root.join("etc/apt/apt.conf.d/99gantry-host"), host_apt)?;
    }
    // No daemons start inside the tree while packages install.
    std::fs::write(root.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n")?;
    set_mode(&root.join("usr/sbin/policy-rc.d"), 0o755)?;
    chroot(
        root,
        "apt-get update",
        &["apt-get", "-q", "update"],
        on_line,
    )
    .await?;
    let upgraded = if suite.has_updates() {
        on_line(&format!("applying {suite}-security and {suite}-updates"));
        let before = installed_versions(root)?;
        chroot(
            root,
            "apt-get dist-upgrade",
            &[
                "apt-get",
                "-qy",
                "-o",
                "Dpkg::Options::=--force-confold",
                "dist-upgrade",
            ],
            on_line,
        )
        .await?;
        let after = installed_versions(root)?;
        let changed = after
            .iter()
            .filter(|(name, version)| before.get(*name).is_some_and(|old| old != *version))
            .count();
        on_line(&format!(
            "{changed} package(s) upgraded by {suite}-security and {suite}-updates"
        ));
        Some(changed)
    } else {
        on_line(&format!(
            "{suite} is Debian testing: it has no -security or -updates suites, so its packages are as the suite has them today"
        ));
        None
    };
    let mut runtimes = Vec::new();
    if let Some(python) = package_version(root, "python3")? {
        runtimes.push(("python".to_owned(), python));
    }
    let updated = crate::time::now_rfc3339();
    let run_image = suite.run_image();
    let keep_lists = false;
    finish_tree(root, keep_lists)?;
    let mut labels = vec![
        (LABEL_SUITE.to_owned(), suite.name().to_owned()),
        (LABEL_UPDATED.to_owned(), updated.clone()),
    ];
    labels.extend(
        runtimes
            .iter()
            .map(|(lang, version)| (format!("{LABEL_RUNTIME}{lang}"), version.clone())),
    );
    on_line(&format!("importing into Docker as {run_image}"));
    import(docker, root, &run_image, suite, &labels).await?;

    on_line(&format!(
        "installing the build tools: {}",
        BUILD_PACKAGES.join(" ")
    ));
    chroot(
        root,
        "apt-get update",
        &["apt-get", "-q", "update"],
        on_line,
    )
    .await?;
    let mut install = vec!["apt-get", "-qy", "--no-install-recommends", "install"];
    install.extend(BUILD_PACKAGES);
    chroot(root, "apt-get install", &install, on_line).await?;
    // The build image keeps apt's lists: buildpacks install runtimes from the
    // suite's packages on first need (Go, say), and that needs them.
    finish_tree(root, true)?;
    let build_image = suite.build_image();
    on_line(&format!("importing into Docker as {build_image}"));
    import(docker, root, &build_image, suite, &labels).await?;
    on_line(&format!(
        "the stack {run_image} is ready (builds in {build_image})"
    ));
    Ok(Built { upgraded, runtimes })
}

/// Runs a command, folding the per-package lines of debootstrap and apt into
/// one line per phase.
async fn run_quietly(
    mut command: tokio::process::Command,
    what: &str,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<std::process::ExitStatus, StackError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(StackError::Chroot(
            what.to_owned(),
            "no output pipes".into(),
        ));
    };
    let mut out = BufReader::new(stdout).lines();
    let mut err = BufReader::new(stderr).lines();
    let (mut out_open, mut err_open) = (true, true);
    // One line per package per phase is noise; each phase gets one line.
    let mut phase: Option<(String, usize)> = None;
    let flush = |phase: &mut Option<(String, usize)>, on_line: &mut (dyn FnMut(&str) + Send)| {
        if let Some((word, count)) = phase.take() {
            on_line(&format!("{what}: {word}... ({count})"));
        }
    };
    while out_open || err_open {
        let line = tokio::select! {
            line = out.next_line(), if out_open => line?.or_else(|| { out_open = false; None }),
            line = err.next_line(), if err_open => line?.or_else(|| { err_open = false; None }),
        };
        let Some(line) = line else { continue };
        if line.starts_with("I: Validating ") || line.trim().is_empty() {
            continue;
        }
        // posix_openpt: apt's terminal log, harmless without /dev/pts.
        if line.contains("Is /dev/pts mounted?") {
            continue;
        }
        let per_package = phase_of(&line).map(str::to_owned);
        match (per_package, &mut phase) {
            (Some(word), Some((current, count))) if *current == word => *count += 1,
            (Some(word), _) => {
                flush(&mut phase, on_line);
                phase = Some((word, 1));
            }
            (None, _) => {
                flush(&mut phase, on_line);
                on_line(&format!("{what}: {line}"));
            }
        }
    }
    flush(&mut phase, on_line);
    Ok(child.wait().await?)
}

/// The host's apt settings that decide how the mirror is reached, as
/// `apt.conf` lines; empty without apt or without such settings.
async fn host_apt_settings() -> String {
    let Ok(out) = tokio::process::Command::new("apt-config")
        .arg("dump")
        .output()
        .await
    else {
        return String::new();
    };
    apt_settings_to_keep(&String::from_utf8_lossy(&out.stdout))
}

fn apt_settings_to_keep(dump: &str) -> String {
    const KEEP: [&str; 4] = [
        "Acquire::Check-Valid-Until ",
        "Acquire::Check-Date ",
        "Acquire::http::Proxy ",
        "Acquire::https::Proxy ",
    ];
    dump.lines()
        .filter(|line| KEEP.iter().any(|k| line.starts_with(k)))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The phase a per-package line of debootstrap, apt or dpkg belongs to.
fn phase_of(line: &str) -> Option<&'static str> {
    const PHASES: [(&str, &str); 12] = [
        ("I: Retrieving", "Retrieving"),
        ("I: Extracting", "Extracting"),
        ("I: Unpacking", "Unpacking"),
        ("I: Configuring", "Configuring"),
        ("Get:", "downloading"),
        ("Hit:", "downloading"),
        ("Ign:", "downloading"),
        ("Preparing to unpack", "installing"),
        ("Unpacking", "installing"),
        ("Selecting previously unselected", "installing"),
        ("(Reading database", "installing"),
        ("Setting up", "configuring"),
    ];
    PHASES
        .into_iter()
        .find(|(prefix, _)| line.starts_with(prefix))
        .map(|(_, phase)| phase)
        .or_else(|| {
            line.starts_with("Processing triggers")
                .then_some("configuring")
        })
}

/// Runs `args` inside the tree with `chroot`.
async fn chroot(
    root: &Path,
    what: &str,
    args: &[&str],
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), StackError> {
    let mut command = tokio::process::Command::new("chroot");
    command
        .arg(root)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LANG", "C.UTF-8");
    let status = run_quietly(command, what, on_line).await?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::Chroot(what.to_owned(), status.to_string()))
    }
}

/// Installed packages and their versions, from the tree's dpkg status.
fn installed_versions(root: &Path) -> Result<HashMap<String, String>, StackError> {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status"))?;
    Ok(parse_dpkg_status(&status))
}

fn package_version(root: &Path, package: &str) -> Result<Option<String>, StackError> {
    let version = installed_versions(root)?.remove(package);
    // `3.13.5-1` → `3.13.5`; python3's Debian version is its interpreter's.
    Ok(version.map(|v| upstream_version(&v)))
}

/// The upstream part of a Debian version: no epoch, no Debian revision.
pub fn upstream_version(version: &str) -> String {
    let version = version.split_once(':').map_or(version, |(_, v)| v);
    let version = version.rsplit_once('-').map_or(version, |(v, _)| v);
    version
        .split(['~', '+'])
        .next()
        .unwrap_or(version)
        .to_owned()
}

fn parse_dpkg_status(status: &str) -> HashMap<String, String> {
    let mut versions = HashMap::new();
    for stanza in status.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|line| line.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(package), Some(version)) =
            (installed, field("Package:"), field("Version:"))
        {
            versions.insert(package, version);
        }
    }
    versions
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// A built stack, as `stacks` lists it.
#[derive(Debug, Clone)]
pub struct StackInfo {
    pub suite: Suite,
    pub run_image: String,
    pub built: bool,
    /// When its packages were last brought up to date (RFC 3339).
    pub updated: Option<String>,
    /// `(language, version)` of the runtimes in the image.
    pub runtimes: Vec<(String, String)>,
    pub size: i64,
}

/// Every suite's stack, built or not.
pub async fn list(docker: &Docker) -> Vec<StackInfo> {
    let mut stacks = Vec::new();
    for suite in SUITES {
        let run = docker.inspect_image(&suite.run_image()).await.ok();
        let build = docker.inspect_image(&suite.build_image()).await.ok();
        let labels = run
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let mut runtimes: Vec<(String, String)> = labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(LABEL_RUNTIME)?.to_owned(), v.clone())))
            .collect();
        runtimes.sort();
        stacks.push(StackInfo {
            suite,
            run_image: suite.run_image(),
            built: run.is_some() && build.is_some(),
            updated: labels.get(LABEL_UPDATED).cloned(),
            runtimes,
            size: run.as_ref().and_then(|i| i.size).unwrap_or(0),
        });
    }
    stacks
}

/// The image id of a suite's run image, if built.
pub async fn run_image_id(docker: &Docker, suite: Suite) -> Option<String> {
    docker.inspect_image(&suite.run_image()).await.ok()?.id
}

/// Trims the tree and makes it trust what the host trusts: a host behind a
/// TLS-inspecting proxy has that proxy's CA in its bundle, and buildpacks
/// fetching dependencies through it need the same.
fn finish_tree(root: &Path, keep_lists: bool) -> Result<(), StackError> {
    let dirs: &[&str] = if keep_lists {
        &["var/cache/apt/archives"]
    } else {
        &["var/cache/apt/archives", "var/lib/apt/lists"]
    };
    for dir in dirs {
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
async fn import(
    docker: &Docker,
    root: &Path,
    image: &str,
    suite: Suite,
    labels: &[(String, String)],
) -> Result<(), StackError> {
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
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let mut changes = vec![
        "ENV LANG=C.UTF-8".to_string(),
        format!("ENV STACK={}", suite.stack_name()),
        "WORKDIR /app".to_string(),
        "CMD [\"/bin/bash\"]".to_string(),
    ];
    for (key, value) in labels {
        changes.push(format!(
            "LABEL {key}={}",
            serde_json::Value::String(value.clone())
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_parse_by_name_or_stack_name() {
        assert_eq!(Suite::parse("trixie").ok(), Some(Suite::Trixie));
        assert_eq!(Suite::parse("gantry-forky").ok(), Some(Suite::Forky));
        let err = Suite::parse("heroku-24").expect_err("unknown");
        assert!(
            err.to_string().contains("bookworm, trixie and forky"),
            "{err}"
        );
        assert_eq!(Suite::Trixie.run_image(), "gantry/stack:trixie");
        assert_eq!(Suite::Trixie.build_image(), "gantry/stack:trixie-build");
        assert_eq!(DEFAULT_SUITE, Suite::Trixie);
    }

    #[test]
    fn released_suites_get_security_and_updates_testing_does_not() {
        let trixie = sources(Suite::Trixie, "http://deb.debian.org/debian");
        assert!(trixie.contains("deb http://deb.debian.org/debian-security trixie-security main"));
        assert!(trixie.contains("deb http://deb.debian.org/debian trixie-updates main"));
        let forky = sources(Suite::Forky, "http://mirror.example/debian/");
        assert_eq!(forky, "deb http://mirror.example/debian/ forky main\n");
        assert_eq!(
            security_mirror("http://mirror.example/debian/"),
            "http://mirror.example/debian-security"
        );
    }

    #[test]
    fn the_hosts_way_to_the_mirror_is_kept() {
        let dump = "APT \"\";\nAcquire::Check-Valid-Until \"false\";\nAcquire::http::Proxy \"http://proxy:3142\";\nDir \"/\";\n";
        assert_eq!(
            apt_settings_to_keep(dump),
            "Acquire::Check-Valid-Until \"false\";\nAcquire::http::Proxy \"http://proxy:3142\";\n"
        );
    }

    #[test]
    fn versions_come_from_dpkg_status() {
        let status = "Package: python3\nStatus: install ok installed\nVersion: 3.13.5-1\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libc6\nStatus: install ok installed\nVersion: 2.41-12+deb13u1\n";
        let versions = parse_dpkg_status(status);
        assert_eq!(versions.len(), 2);
        assert_eq!(upstream_version(&versions["python3"]), "3.13.5");
        assert_eq!(Suite::with_python("3.14"), Some(Suite::Forky));
        assert_eq!(Suite::with_python("3.11.9"), Some(Suite::Bookworm));
        assert_eq!(Suite::with_python("3.12"), None);
        assert!(SUITE_RUNTIMES.contains("python: bookworm 3.11, trixie 3.13, forky 3.14"));
        assert_eq!(upstream_version(&versions["libc6"]), "2.41");
        assert_eq!(upstream_version("1:2.0~rc1-3"), "2.0");
    }
}
