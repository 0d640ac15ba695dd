//! A push's stages, from the pre-receive hook's request to a live route:
//! receive (read the pushed commit), build (image from the tree), release
//! (record `vN`), deploy (start, health-check, switch, stop the old).
//!
//! Everything happens before git accepts the ref, so a failure at any stage
//! rejects the push and the branch never points at an undeployed commit. Output
//! streams to the pusher as it happens and is kept as the release's build log.

use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::build::{buildpack, stack};
use crate::config_vars::ConfigVars;
use crate::context::sessions::PushSession;
use crate::context::Gantry;
use crate::control::protocol::{Frame, HookRequest, RefUpdate};
use crate::git::source::Source;
use crate::jobs::live::LiveRun;
use crate::manifest::Manifest;
use crate::store::{Release, ReleaseKind, ReleaseStatus, RunStatus};
use crate::{artifacts, build, deploy};

/// The port an app listens on when its image does not `EXPOSE` exactly one.
pub const DEFAULT_PORT: u16 = 5000;

/// How much of a push's output is kept as its build log (all of it streams).
const MAX_KEPT_LOG: usize = 1 << 20;

/// What the pusher sees, kept as the build log and, live, as the log of the
/// push's `APP/deploy` run.
pub struct PushLog {
    tx: UnboundedSender<Frame>,
    text: String,
    /// Cancelled when the pusher disconnects.
    gone: CancellationToken,
    /// A child of `gone`, also cancelled by `jobs:cancel` of the deploy run:
    /// either way the push stops before anything changes.
    stop: CancellationToken,
    run: Option<LiveRun>,
    /// Why the push failed, for its run: a stage's one-line reason, else the
    /// first line of the latest error.
    last_error: Option<String>,
}

impl PushLog {
    /// `gone` is cancelled when the pusher disconnects.
    pub fn new(tx: UnboundedSender<Frame>, gone: CancellationToken) -> Self {
        PushLog {
            tx,
            text: String::new(),
            stop: gone.child_token(),
            gone,
            run: None,
            last_error: None,
        }
    }

    fn write(&mut self, text: &str) {
        if let Some(run) = &mut self.run {
            run.write(text);
        }
        if self.text.len() < MAX_KEPT_LOG {
            self.text.push_str(text);
            if self.text.len() >= MAX_KEPT_LOG {
                self.text
                    .push_str("\n[build log truncated: only the first 1 MiB is kept]\n");
            }
        }
        let _ = self.tx.send(Frame::Stderr(text.as_bytes().to_vec()));
    }

    /// A stage header: `-----> Build`.
    pub fn stage(&mut self, title: &str) {
        self.write(&format!("-----> {title}\n"));
    }

    /// Indented detail under the current stage.
    pub fn line(&mut self, text: &str) {
        for line in text.lines() {
            self.write(&format!("       {line}\n"));
        }
    }

    /// A line of buildpack output, which follows Heroku's conventions itself:
    /// `-----> ` heads a step, ` !     ` a problem; the rest is indented.
    pub fn buildpack_line(&mut self, line: &str) {
        if let Some(title) = line.strip_prefix("-----> ") {
            self.stage(title);
        } else if let Some(problem) = line.strip_prefix(" !     ") {
            self.error(problem);
        } else {
            self.line(line.strip_prefix("       ").unwrap_or(line));
        }
    }

    /// A failure, set apart so it stands out among `remote:` lines.
    pub fn error(&mut self, text: &str) {
        if let Some(first) = text.lines().next() {
            self.last_error = Some(first.to_owned());
        }
        for line in text.lines() {
            self.write(&format!(" !     {line}\n"));
        }
    }

    pub fn elapsed(&mut self, what: &str, since: Instant) {
        self.line(&format!("{what} in {:.1}s", since.elapsed().as_secs_f64()));
    }

    /// False once the pusher has gone away (its hook died with the connection)
    /// or the deploy run was cancelled.
    pub fn is_connected(&self) -> bool {
        !self.stop.is_cancelled() && !self.tx.is_closed()
    }

    /// Resolves when the pusher goes away or the deploy run is cancelled.
    pub fn disconnected(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Whether `jobs:cancel` stopped this push (the pusher is still there).
    fn cancelled_by_command(&self) -> bool {
        self.stop.is_cancelled() && !self.gone.is_cancelled() && !self.tx.is_closed()
    }

    /// Why the push stopped early, for the pusher and the run.
    fn stop_reason(&self, when: &str) -> String {
        if self.cancelled_by_command() {
            format!("cancelled with jobs:cancel {when}; nothing changed")
        } else {
            format!("the pusher disconnected {when}; nothing changed")
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl deploy::Progress for PushLog {
    fn line(&mut self, text: &str) {
        PushLog::line(self, text);
    }
    fn error(&mut self, text: &str) {
        PushLog::error(self, text);
    }
    fn proceed(&self) -> bool {
        self.is_connected()
    }
    fn run(&self) -> Option<String> {
        self.run.as_ref().map(LiveRun::reference)
    }
}

/// Handles a pre-receive hook: deploys the deploy branch, stores the others.
/// Returns the exit code for the hook (non-zero rejects the whole push).
pub async fn handle_hook(
    gantry: &Gantry,
    request: HookRequest,
    tx: UnboundedSender<Frame>,
    gone: CancellationToken,
) -> i32 {
    let mut log = PushLog::new(tx, gone);
    let Some(session) = gantry.pushes.get(&request.token) else {
        log.error(
            "this push is not known to gantry serve (was it restarted mid-push?); push again",
        );
        return 1;
    };
    let app = match gantry.store.get_app(&session.app).await {
        Ok(Some(app)) => app,
        Ok(None) => {
            log.error(&format!(
                "app {} does not exist (was it destroyed mid-push?)",
                session.app
            ));
            return 1;
        }
        Err(err) => {
            log.error(&format!("cannot read app {}: {err}", session.app));
            return 1;
        }
    };
    let deploying: Vec<&str> = request
        .updates
        .iter()
        .filter(|u| app.deploys(&u.refname))
        .map(|u| u.refname.as_str())
        .collect();
    if deploying.len() > 1 {
        log.error(&format!(
            "this push updates {} branches that deploy {} ({}); push one of them at a time",
            deploying.len(),
            app.name,
            deploying.join(", ")
        ));
        return 1;
    }
    let mut code = 0;
    for update in &request.updates {
        if !app.deploys(&update.refname) {
            let name = update.refname.trim_start_matches("refs/heads/");
            let deploy_branch = app.deploy_branch.as_deref().unwrap_or("main or master");
            log.stage(&format!(
                "{name}: stored, not deployed (only {deploy_branch} deploys)"
            ));
            continue;
        }
        if update.is_delete() {
            log.error(&format!(
                "refusing to delete {}: it is the branch that deploys {}",
                update.refname, app.name
            ));
            code = 1;
            continue;
        }
        if deploy_push(gantry, &session, update, &request, &mut log)
            .await
            .is_err()
        {
            code = 1;
        }
    }
    code
}

/// Marker: the push failed and the pusher has been told why.
pub struct Failed;

/// Runs one push's deploy as a run of `APP/deploy`, recorded from the start
/// with its log written as the pusher sees it. With `deploy.queue = true` the
/// run waits in the queue (its turn among the app's deploys, then an executor
/// slot); otherwise it starts at once and only waits for a deploy going now.
async fn deploy_push(
    gantry: &Gantry,
    session: &PushSession,
    update: &RefUpdate,
    request: &HookRequest,
    log: &mut PushLog,
) -> Result<(), Failed> {
    let app = &session.app;
    let started = Instant::now();
    let queued = gantry.config.deploy_queued(app);
    let job = format!("{app}/deploy");
    let key = session.key.to_string();
    match LiveRun::queue(gantry, &job, "push", &key, "", log.stop.clone()).await {
        Ok(run) => log.run = Some(run),
        // The job log is a record; a push still deploys without it.
        Err(err) => tracing::warn!(%app, error = %err, "cannot record the push in the job log"),
    }
    let number = log.run.as_ref().map_or(0, |r| r.number);
    if queued {
        log.stage(&format!("Queued: {job} #{number} (deploy.queue = true)"));
    } else {
        start_run(gantry, log).await;
    }
    let lock = gantry.locks.get(app);
    let guard = match lock.clone().try_lock_owned() {
        Ok(guard) => guard,
        Err(_) => {
            let ahead = gantry.executors.going(&job);
            let ahead: Vec<String> = ahead
                .iter()
                .filter(|n| **n < number)
                .map(|n| format!("#{n}"))
                .collect();
            log.stage(&format!(
                "Waiting: another deploy of {app} is running{}",
                if ahead.is_empty() {
                    String::new()
                } else {
                    format!(" ({job} {} ahead)", ahead.join(", "))
                }
            ));
            let waited = tokio::select! {
                guard = lock.lock_owned() => Some(guard),
                _ = log.disconnected() => None,
            };
            let Some(guard) = waited else {
                return stopped_waiting(gantry, log).await;
            };
            log.line(&format!("waited {:.1}s", started.elapsed().as_secs_f64()));
            guard
        }
    };
    let mut slot = None;
    if queued {
        let (busy, total) = gantry.executors.executors();
        if busy >= total {
            log.line(&format!("waiting for an executor ({busy} of {total} busy)"));
        }
        let waiting = tokio::select! {
            permit = gantry.executors.slot() => permit,
            _ = log.disconnected() => None,
        };
        if waiting.is_none() || !log.is_connected() {
            drop(guard);
            return stopped_waiting(gantry, log).await;
        }
        slot = waiting;
        log.stage(&format!(
            "Start: {job} #{number} (queued {:.1}s)",
            started.elapsed().as_secs_f64()
        ));
        start_run(gantry, log).await;
    }
    let result = deploy_locked(gantry, session, update, request, log, started).await;
    drop(slot);
    gantry.pushes.hold_until_done(&request.token, guard);
    if let Some(run) = log.run.take() {
        let (status, code, reason) = match &result {
            Ok(()) => (RunStatus::Succeeded, Some(0), String::new()),
            Err(_) if log.cancelled_by_command() => (
                RunStatus::Cancelled,
                None,
                log.stop_reason("during the deploy"),
            ),
            Err(Failed) => (
                RunStatus::Failed,
                Some(1),
                log.last_error
                    .clone()
                    .unwrap_or_else(|| "the push failed".into()),
            ),
        };
        run.finish(gantry, status, code, &reason).await;
    }
    result
}

async fn start_run(gantry: &Gantry, log: &PushLog) {
    if let Some(run) = &log.run {
        run.start(gantry).await;
    }
}

/// Ends a push that was stopped while it waited for its turn.
async fn stopped_waiting(gantry: &Gantry, log: &mut PushLog) -> Result<(), Failed> {
    let reason = log.stop_reason("while this push waited");
    log.error(&format!("push rejected: {reason}"));
    if let Some(run) = log.run.take() {
        run.finish(gantry, RunStatus::Cancelled, None, &reason)
            .await;
    }
    Err(Failed)
}

/// The stages of a push, run while holding the app's lock.
async fn deploy_locked(
    gantry: &Gantry,
    session: &PushSession,
    update: &RefUpdate,
    request: &HookRequest,
    log: &mut PushLog,
    started: Instant,
) -> Result<(), Failed> {
    let app = &session.app;

    // While this push waited, another may have moved the branch; git would then
    // refuse the ref update after our hook, leaving a deploy the branch never saw.
    let repo = crate::git::repos::repo_path(&gantry.config, app);
    let expected = (!update.old.chars().all(|c| c == '0')).then(|| update.old.clone());
    match crate::git::repos::ref_target(&repo, &update.refname) {
        Ok(current) if current == expected => {}
        Ok(_) => {
            log.error(&format!(
                "{} moved while this push waited (another push landed first); pull and push again",
                update.refname
            ));
            return Err(Failed);
        }
        Err(err) => {
            log.error(&format!("cannot read {} of {app}: {err}", update.refname));
            return Err(Failed);
        }
    }

    // ---- receive ----
    let t = Instant::now();
    let scratch = gantry
        .config
        .run_dir()
        .join(format!("push-{}", request.token));
    let object_dirs = request.object_dirs.clone();
    let sha = update.new.clone();
    let received = tokio::task::spawn_blocking(move || {
        let source = Source::open(&scratch, &object_dirs)?;
        let info = source.commit_info(&sha)?;
        let has_dockerfile = source.has_file(&sha, "Dockerfile")?;
        let tar = source.tar(&sha)?;
        let text = |path| -> Result<Option<String>, crate::git::source::SourceError> {
            Ok(source
                .read_file(&sha, path)?
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
        };
        let files = (text("Procfile")?, text("app.json")?, text(".buildpacks")?);
        Ok::<_, crate::git::source::SourceError>((info, tar, has_dockerfile, files))
    })
    .await;
    let (commit, context, has_dockerfile, (procfile, app_json, dot_buildpacks)) = match received {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => {
            log.error(&err.to_string());
            return Err(Failed);
        }
        Err(err) => {
            log.error(&format!("reading the push failed: {err}"));
            return Err(Failed);
        }
    };
    log.stage(&format!(
        "Receive: {app} {} {} \"{}\"",
        update.refname.trim_start_matches("refs/heads/"),
        &commit.sha[..commit.sha.len().min(7)],
        commit.subject
    ));
    log.line(&format!("by {} (key {})", commit.author, session.key));
    log.elapsed(&format!("received {} KiB", context.len() / 1024), t);
    let manifest = match Manifest::from_files(procfile.as_deref(), app_json.as_deref()) {
        Ok(manifest) => manifest,
        Err(problems) => {
            for problem in problems {
                log.error(&problem);
            }
            log.error("fix the file(s) above and push again");
            return Err(Failed);
        }
    };

    // The release runs with the app's config vars and formation as they are now.
    let (config, formation, stack) = match gantry.store.get_app(app).await {
        Ok(Some(record)) => (record.config, record.formation, record.stack),
        Ok(None) => {
            log.error(&format!("app {app} was destroyed during the push"));
            return Err(Failed);
        }
        Err(err) => {
            log.error(&format!("cannot read app {app}: {err}"));
            return Err(Failed);
        }
    };
    let vars = match ConfigVars::open(&config, &gantry.secrets) {
        Ok(vars) => vars,
        Err(err) => {
            log.error(&format!("cannot read the config vars of {app}: {err}"));
            return Err(Failed);
        }
    };
    let plan = Plan::choose(&vars, has_dockerfile, dot_buildpacks.as_deref(), stack);
    let mut release = Release {
        app: app.clone(),
        version: 0,
        status: ReleaseStatus::Building,
        image: String::new(),
        commit_sha: commit.sha.clone(),
        commit_message: commit.subject.clone(),
        commit_author: commit.author.clone(),
        port: 0,
        created_by: session.key.to_string(),
        created_at: 0,
        build_ms: 0,
        build_log: String::new(),
        error: String::new(),
        config,
        kind: ReleaseKind::Deploy,
        description: format!("Deploy {}", &commit.sha[..commit.sha.len().min(7)]),
        image_id: String::new(),
        image_size: 0,
        formation,
        manifest: manifest.to_stored(),
    };
    release.version = match gantry.store.begin_release(&release).await {
        Ok(version) => version,
        Err(err) => {
            log.error(&format!("cannot record the release: {err}"));
            return Err(Failed);
        }
    };
    let outcome = build_and_deploy(gantry, &mut release, plan, context, log).await;
    release.build_log = log.text().to_owned();
    match &outcome {
        Ok(()) => {
            release.status = ReleaseStatus::Succeeded;
            // Record the success first: retention counts releases that went live.
            if let Err(err) = gantry.store.finish_release(&release).await {
                tracing::error!(%app, version = release.version, error = %err, "cannot record release outcome");
            }
            match crate::artifacts::prune(gantry, app).await {
                Ok(report) => {
                    if let Some(summary) = report.summary() {
                        log.line(&summary);
                    }
                }
                Err(err) => log.line(&format!("could not prune old images: {err}")),
            }
            log.stage(&format!(
                "Done: {app} v{} is live at {} ({:.1}s)",
                release.version,
                gantry.config.app_url(app),
                started.elapsed().as_secs_f64()
            ));
            release.build_log = log.text().to_owned();
        }
        Err(reason) => {
            release.status = ReleaseStatus::Failed;
            release.error = reason.clone();
            log.error(&format!("push rejected: {reason}"));
            log.error("the previous release (if any) is still serving");
            log.last_error = Some(reason.clone());
        }
    }
    if let Err(err) = gantry.store.finish_release(&release).await {
        tracing::error!(%app, version = release.version, error = %err, "cannot record release outcome");
    }
    outcome.map_err(|_| Failed)
}

impl Plan {
    /// A root Dockerfile, unless `GANTRY_BUILDER=buildpack` (the app's
    /// config or gantry's environment) says buildpacks; else buildpacks, with
    /// the app's config vars for their env dir.
    fn choose(
        vars: &ConfigVars,
        has_dockerfile: bool,
        dot_buildpacks: Option<&str>,
        stack: Option<String>,
    ) -> Plan {
        let builder = vars
            .get("GANTRY_BUILDER")
            .map(str::to_owned)
            .or_else(|| std::env::var("GANTRY_BUILDER").ok());
        if has_dockerfile && builder.as_deref() != Some("buildpack") {
            return Plan::Dockerfile;
        }
        Plan::Buildpacks {
            selection: buildpack::select(vars.get("BUILDPACK_URL"), dot_buildpacks),
            env: vars
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            stack,
        }
    }
}

/// How a push is built.
enum Plan {
    /// The Dockerfile at the root of the tree.
    Dockerfile,
    /// Buildpacks, with the app's config vars for their env dir.
    Buildpacks {
        selection: buildpack::Selection,
        env: Vec<(String, String)>,
        /// The app's stack; `None`: never built, the default.
        stack: Option<String>,
    },
}

/// Build, release and deploy stages; `Err` carries a one-line reason.
async fn build_and_deploy(
    gantry: &Gantry,
    release: &mut Release,
    plan: Plan,
    context: Vec<u8>,
    log: &mut PushLog,
) -> Result<(), String> {
    let app = release.app.clone();

    // ---- build ----
    let t = Instant::now();
    let tag = artifacts::image_tag(&app, release.version);
    let labels = artifacts::image_labels(&app);
    let disconnected = log.disconnected();
    let requires = gantry.config.build_requires(&app);
    let built = match plan {
        Plan::Dockerfile if !requires.is_empty() => {
            log.stage(&format!("Build: Dockerfile, on a node labelled {requires}"));
            let build = build_on_node(gantry, &app, &tag, &requires, context, log);
            tokio::select! {
                built = build => Some(built),
                _ = disconnected => None,
            }
        }
        Plan::Buildpacks { .. } if !requires.is_empty() => {
            let text = format!(
                "build.requires = [{requires}] is set for {app}, and only Dockerfile builds run on other nodes yet; \
                 add a Dockerfile, or remove build.requires to build with buildpacks on the manager"
            );
            log.error(&text);
            return Err(text);
        }
        Plan::Dockerfile => {
            log.stage("Build: Dockerfile");
            // No labels: see artifacts::image_labels.
            let no_labels = std::collections::HashMap::new();
            let build =
                build::build_dockerfile(&gantry.docker, context, &tag, &no_labels, |line| {
                    log.line(line)
                });
            tokio::select! {
                built = build => Some(built),
                _ = disconnected => None,
            }
        }
        Plan::Buildpacks {
            selection,
            env,
            stack,
        } => {
            log.stage("Build: buildpacks");
            let build = build_with_buildpacks(
                gantry,
                release,
                &tag,
                &labels,
                BuildpackPlan {
                    selection,
                    env,
                    stack,
                },
                context,
                log,
            );
            tokio::select! {
                built = build => Some(built),
                _ = disconnected => None,
            }
        }
    };
    let Some(built) = built else {
        return Err(log.stop_reason("during the build"));
    };
    let built = built.map_err(|err| {
        let text = err.to_string();
        log.error(&text);
        let first = text.lines().next().unwrap_or_default();
        format!("the build failed: {}", truncate(first, 200))
    })?;
    release.build_ms = t.elapsed().as_millis() as i64;
    release.image = tag.clone();
    release.image_id = built.id.clone();
    release.image_size = built.size;
    release.port = built.exposed_port.unwrap_or(DEFAULT_PORT);
    log.elapsed(&format!("built {tag}"), t);

    // ---- release ----
    log.stage(&format!("Release: v{}", release.version));
    log.line(&format!(
        "image {tag}, web process on PORT={}{}",
        release.port,
        if built.exposed_port.is_some() {
            " (from EXPOSE)"
        } else {
            ""
        }
    ));
    for line in Manifest::from_stored(&release.manifest).describe() {
        log.line(&line);
    }
    if let Err(err) = gantry.store.finish_release(release).await {
        return Err(format!("cannot record the release: {err}"));
    }

    // ---- deploy ----
    log.stage(&format!("Deploy: v{}", release.version));
    deploy::roll_out(gantry, release, log, true).await
}

/// A Dockerfile build on a node labelled with all of `requires`, through
/// the cluster's work queue: the node builds and pushes to the cluster's
/// registry, and the image is pulled here under its usual tag, so the
/// release is the same as one built here.
async fn build_on_node(
    gantry: &Gantry,
    app: &crate::names::AppName,
    tag: &str,
    requires: &crate::config::Requires,
    context: Vec<u8>,
    log: &mut PushLog,
) -> Result<build::BuiltImage, build::BuildError> {
    let failed = build::BuildError::Failed;
    if gantry.runtime.services().is_none() {
        return Err(failed(format!(
            "build.requires = [{requires}]: only a swarm (runtime = \"swarm\") has nodes to build on"
        )));
    }
    let spec = crate::work::BuildSpec {
        app: app.to_string(),
        image: tag.to_owned(),
    };
    let spec = serde_json::to_string(&spec).map_err(|e| failed(e.to_string()))?;
    let title = format!("build of {tag}");
    let never = tokio_util::sync::CancellationToken::new();
    let state = crate::work::run(
        &gantry.store,
        "build",
        &title,
        requires,
        (&spec, &context),
        &never,
        &mut |line: &str| log.line(line),
    )
    .await
    .map_err(|e| failed(format!("the work queue failed: {e}")))?;
    if state.state != "done" || state.code != Some(0) {
        return Err(failed(state.result));
    }
    let result: crate::work::BuildResult = serde_json::from_str(&state.result)
        .map_err(|e| failed(format!("the node's answer is unreadable: {e}")))?;
    let registry = &gantry.config.swarm.registry_push;
    crate::runtime::swarm::pull_image(&gantry.docker, registry, tag, &result.digest)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let image = gantry.docker.inspect_image(tag).await?;
    log.line(&format!(
        "pulled {tag} ({}) from the cluster's registry",
        result.digest
    ));
    Ok(build::BuiltImage {
        id: image.id.unwrap_or_default(),
        size: image.size.unwrap_or(result.size),
        exposed_port: result.exposed_port,
    })
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Fetches the runtime a buildpack stopped for into the store; a failure is
/// told to the pusher, and the build that follows refuses with the
/// buildpack's own message of what is here.
async fn fetch_runtime(config: &crate::config::Config, need: &str, log: &mut PushLog) {
    let defaults = build::upstream::Sources::default();
    let settings = &config.runtimes;
    let sources = build::upstream::Sources {
        node_dist: settings.node_dist.clone().unwrap_or(defaults.node_dist),
        go_dist: settings.go_dist.clone().unwrap_or(defaults.go_dist),
        python_release: settings
            .python_release
            .clone()
            .unwrap_or(defaults.python_release),
    };
    let fetched = match build::upstream::parse_need(need) {
        Ok(parsed) => {
            build::upstream::fetch(&config.home, &sources, &parsed, &mut |line| {
                log.buildpack_line(line)
            })
            .await
        }
        Err(err) => Err(err),
    };
    if let Err(err) = fetched {
        log.buildpack_line(&format!(" !     cannot fetch it from upstream: {err}"));
    }
}

/// `suite`'s stack, made first if it is missing; says which in the push.
async fn ensure_stack(
    gantry: &Gantry,
    suite: stack::Suite,
    log: &mut PushLog,
) -> Result<stack::StackImages, stack::StackError> {
    let config = &gantry.config;
    let stack = stack::ensure(
        &gantry.docker,
        config.stack_image.as_deref(),
        suite,
        &config.home,
        &config.stack_mirror,
        &mut |line| log.line(line),
    )
    .await?;
    log.line(&format!("stack {} ({})", stack.name, stack.run));
    Ok(stack)
}

/// Makes sure the stack exists, runs the buildpacks, and completes the
/// release's processes with the ones the buildpacks declared (a Procfile's
/// own entries win, as on Heroku).
struct BuildpackPlan {
    selection: buildpack::Selection,
    env: Vec<(String, String)>,
    stack: Option<String>,
}

async fn build_with_buildpacks(
    gantry: &Gantry,
    release: &mut Release,
    tag: &str,
    labels: &std::collections::HashMap<String, String>,
    plan: BuildpackPlan,
    source: Vec<u8>,
    log: &mut PushLog,
) -> Result<build::BuiltImage, build::BuildError> {
    let config = &gantry.config;
    let failed = |err: stack::StackError| build::BuildError::Failed(err.to_string());
    let mut suite = match plan.stack.as_deref() {
        Some(name) => stack::Suite::parse(name).map_err(failed)?,
        None => stack::DEFAULT_SUITE,
    };
    let mut stack = ensure_stack(gantry, suite, log).await.map_err(failed)?;
    let (selection, env) = (plan.selection, plan.env);
    let scratch = config
        .run_dir()
        .join(format!("build-{}-v{}", release.app, release.version));
    // A buildpack that finds no runtime for what the app asks for may stop
    // for one. A new app (no stack fixed yet) moves to the stack whose
    // Debian packages have it, as stack:set would; otherwise gantry fetches
    // it from upstream. The build then runs again, once for each.
    let mut upstream = config.runtimes.upstream;
    let mut may_move = plan.stack.is_none() && config.stack_image.is_none();
    let built = loop {
        let mut labels = labels.clone();
        labels.insert(stack::LABEL_SUITE.to_owned(), stack.name.clone());
        let result = buildpack::build(
            buildpack::BuildpackBuild {
                docker: &gantry.docker,
                app: &release.app,
                stack: &stack,
                tag,
                labels: &labels,
                source: source.clone(),
                selection: selection.clone(),
                config: env.clone(),
                commit_sha: &release.commit_sha,
                scratch: scratch.clone(),
                runtimes: crate::build::runtimes::store_dir(&config.home),
                upstream,
                new_app: may_move,
            },
            &mut |line| log.buildpack_line(line),
        )
        .await;
        if scratch.exists() {
            if let Err(err) = std::fs::remove_dir_all(&scratch) {
                tracing::warn!(path = %scratch.display(), error = %err, "cannot remove build scratch");
            }
        }
        let need = match result {
            Err(build::BuildError::NeedsRuntime(need)) if upstream || may_move => need,
            other => break other,
        };
        let asked_as_new = std::mem::take(&mut may_move);
        let better = match build::upstream::parse_need(&need) {
            Ok(build::upstream::Need::Python { version }) if asked_as_new => {
                stack::Suite::with_python(&version).filter(|s| *s != suite)
            }
            _ => None,
        };
        match better {
            Some(other) => {
                log.buildpack_line(&format!(
                    "-----> Python {} is the {} stack's: this new app builds on it (stack:set {} SUITE to choose)",
                    other.python(),
                    other.name(),
                    release.app
                ));
                suite = other;
                stack = ensure_stack(gantry, suite, log).await.map_err(failed)?;
            }
            None if upstream => {
                upstream = false;
                fetch_runtime(config, &need, log).await;
            }
            // Nothing to fetch it with: the build runs once more, asking
            // nothing, to say why not.
            None => {}
        }
    };
    if plan.stack.is_none() && built.is_ok() {
        // The first build that works fixes the app's stack: a later change
        // of the default does not move it.
        if let Err(err) = gantry.store.set_stack(&release.app, suite.name()).await {
            tracing::warn!(app = %release.app, error = %err, "cannot record the app's stack");
        }
    }
    let built = built?;
    let mut manifest = Manifest::from_stored(&release.manifest);
    if let Some(text) = &built.procfile {
        // What runs is the compiled tree's Procfile, as on Heroku.
        match crate::manifest::procfile::Procfile::parse(text) {
            Ok(procfile) => manifest.procfile = procfile,
            Err(errors) => {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{e} (after the build)"))
                    .collect();
                return Err(build::BuildError::Failed(lines.join("; ")));
            }
        }
    }
    release.manifest = manifest.to_stored();
    if !built.default_process_types.is_empty() {
        let mut manifest = Manifest::from_stored(&release.manifest);
        for (name, command) in built.default_process_types {
            if crate::manifest::procfile::is_process_name(&name) {
                manifest.procfile.processes.entry(name).or_insert(command);
            }
        }
        release.manifest = manifest.to_stored();
    }
    Ok(built.image)
}

/// Builds `release`'s image again from the app's repository: the same
/// commit, config vars and stack, tagged as the release names it (a restore
/// from a backup without images). Nothing else changes; the build's output
/// goes to `on_line` when it is done.
pub async fn rebuild(
    gantry: &Gantry,
    release: &Release,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), String> {
    let app = &release.app;
    let repo = crate::git::repos::repo_path(&gantry.config, app);
    let scratch = gantry
        .config
        .run_dir()
        .join(format!("rebuild-{app}-v{}", release.version));
    let object_dirs = vec![repo.join("objects")];
    let sha = release.commit_sha.clone();
    let read = tokio::task::spawn_blocking(move || {
        let source = Source::open(&scratch, &object_dirs)?;
        let has_dockerfile = source.has_file(&sha, "Dockerfile")?;
        let tar = source.tar(&sha)?;
        let dot_buildpacks = source
            .read_file(&sha, ".buildpacks")?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok::<_, crate::git::source::SourceError>((has_dockerfile, tar, dot_buildpacks))
    })
    .await
    .map_err(|e| format!("reading {app}'s repository: {e}"))?;
    let (has_dockerfile, context, dot_buildpacks) =
        read.map_err(|e| format!("reading {app}'s repository at {}: {e}", release.commit_sha))?;
    let vars = ConfigVars::open(&release.config, &gantry.secrets)
        .map_err(|e| format!("cannot read the config vars of {app}: {e}"))?;
    let stack = match gantry.store.get_app(app).await {
        Ok(Some(record)) => record.stack,
        Ok(None) => return Err(format!("{app} is not an app here")),
        Err(err) => return Err(err.to_string()),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut log = PushLog::new(tx, CancellationToken::new());
    let built = match Plan::choose(&vars, has_dockerfile, dot_buildpacks.as_deref(), stack) {
        Plan::Dockerfile => {
            let no_labels = std::collections::HashMap::new();
            build::build_dockerfile(
                &gantry.docker,
                context,
                &release.image,
                &no_labels,
                |line| log.line(line),
            )
            .await
        }
        Plan::Buildpacks {
            selection,
            env,
            stack,
        } => {
            let mut copy = release.clone();
            build_with_buildpacks(
                gantry,
                &mut copy,
                &release.image,
                &artifacts::image_labels(app),
                BuildpackPlan {
                    selection,
                    env,
                    stack,
                },
                context,
                &mut log,
            )
            .await
        }
    };
    drop(log);
    while let Ok(frame) = rx.try_recv() {
        if let Frame::Stdout(bytes) | Frame::Stderr(bytes) = frame {
            for line in String::from_utf8_lossy(&bytes).lines() {
                on_line(line);
            }
        }
    }
    built.map(|_| ()).map_err(|e| e.to_string())
}
