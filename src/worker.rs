//! A node's worker: claims work from the cluster's queue (builds and host
//! jobs whose `requires` this node's labels satisfy) and runs it here.
//! Every node's `gantry node:join` runs one, and so does serve for its own
//! node. serve publishes the nodes' labels ([`publish_nodes_forever`]),
//! since only a manager may ask Swarm for them.
//!
//! A claim is a lease, renewed every third of [`LEASE`]. A worker that
//! cannot renew (its item was taken over, or it lost the database for a
//! whole lease) stops the work at once: another node has it, or will.
//! Every write names the claim's fence, so a late worker cannot write over
//! the one that took over.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bollard::Docker;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::context::Gantry;
use crate::store::{Claim, NodeLabels, Renewal, Store};
use crate::work::{BuildResult, BuildSpec, JobSpec, TIMED_OUT};

/// How long a claim holds without a renewal.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often an idle worker asks the queue.
const POLL: Duration = Duration::from_secs(1);

/// How a worker runs.
pub struct WorkerSettings {
    /// This node's Swarm id, by which its labels are found.
    pub node_id: String,
    /// The node's hostname: the worker's name in logs and claims.
    pub name: String,
    /// Where this node's engine pushes the images it builds: the cluster's
    /// registry, at an address the engine trusts (loopback).
    pub push_to: String,
    /// Scratch space for scripts and their artifacts.
    pub dir: PathBuf,
    /// Items run at once.
    pub slots: usize,
}

/// This engine's Swarm node: (id, hostname).
pub async fn identify(docker: &Docker) -> anyhow::Result<(String, String)> {
    crate::runtime::swarm::this_node(docker)
        .await
        .context("cannot tell which swarm node this engine is")
}

/// serve's side: writes the swarm's nodes and labels to the store every
/// two seconds, for the workers, while this manager leads.
pub async fn publish_nodes_forever(gantry: Arc<Gantry>, shutdown: CancellationToken) {
    let Some(services) = gantry.runtime.services() else {
        return;
    };
    let mut last: Option<Vec<NodeLabels>> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if gantry.leader.leading().is_none() {
            last = None;
            continue;
        }
        let nodes = match services.nodes().await {
            Ok(nodes) => nodes,
            Err(err) => {
                tracing::warn!(error = %err, "cannot list the swarm's nodes");
                continue;
            }
        };
        let nodes: Vec<NodeLabels> = nodes
            .into_iter()
            .map(|node| NodeLabels {
                id: node.id,
                hostname: node.hostname,
                labels: node
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            })
            .collect();
        // Written every tick (not only on change): a node gone from Swarm
        // goes from the table by its age.
        match gantry.store.publish_nodes(&nodes).await {
            Ok(()) => {
                if last.as_ref() != Some(&nodes) {
                    tracing::debug!(nodes = nodes.len(), "published the nodes' labels");
                    last = Some(nodes);
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot publish the nodes' labels"),
        }
    }
}

/// Claims and runs work until `shutdown`; items running then are stopped
/// (their leases run out, and another node takes them over).
pub async fn run_forever(
    store: Store,
    docker: Docker,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) {
    let settings = Arc::new(settings);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.slots.max(1)));
    let mut unpublished_said = false;
    tracing::info!(node = %settings.name, "the worker takes work for this node");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let labels = match store.node_labels(&settings.node_id).await {
            Ok(Some(node)) => node.labels,
            Ok(None) => {
                if !unpublished_said {
                    tracing::info!(node = %settings.name, "serve has not published this node yet; waiting");
                    unpublished_said = true;
                }
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read this node's labels");
                continue;
            }
        };
        let claim = match store.claim_work(&settings.name, &labels, LEASE).await {
            Ok(Some(claim)) => claim,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "cannot ask the work queue");
                continue;
            }
        };
        tracing::info!(id = claim.id, title = %claim.title, taken_from = %claim.taken_from, "claimed work");
        let (store, docker, settings) = (store.clone(), docker.clone(), settings.clone());
        let stop = shutdown.child_token();
        tokio::spawn(async move {
            execute(&store, &docker, &settings, claim, stop).await;
            drop(permit);
        });
    }
}

/// How an item ended here.
struct Outcome {
    code: Option<i64>,
    result: String,
}

impl Outcome {
    fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            code: None,
            result: reason.into(),
        }
    }
}

/// Why a worker stopped an item before it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Asked,
    Lost,
}

async fn execute(
    store: &Store,
    docker: &Docker,
    settings: &WorkerSettings,
    claim: Claim,
    shutdown: CancellationToken,
) {
    let (id, fence) = (claim.id, claim.fence);
    let stop = CancellationToken::new();
    let why = Arc::new(std::sync::Mutex::new(None::<Stop>));
    let renewer = tokio::spawn(renew(store.clone(), (id, fence), stop.clone(), why.clone()));
    {
        // The worker stopping counts as losing the item: it is taken over.
        let (stop, why) = (stop.clone(), why.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    set_stop(&why, Stop::Lost);
                    stop.cancel();
                }
                _ = stop.cancelled() => {}
            }
        });
    }
    let (lines, rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(write_log(store.clone(), (id, fence), rx));
    let mut on_line = |line: &str| {
        let _ = lines.send(line.to_owned());
    };
    let outcome = match claim.kind.as_str() {
        "job" => run_job(settings, &claim, &stop, &mut on_line).await,
        "build" => run_build(docker, settings, &claim, &stop, &mut on_line).await,
        other => Outcome::failed(format!("{other:?} is not work this worker knows")),
    };
    drop(lines);
    let _ = writer.await;
    renewer.abort();
    let stopped = why.lock().ok().and_then(|w| *w);
    if stopped == Some(Stop::Lost) {
        tracing::warn!(id, "this worker lost the item; another node has it or will");
        return;
    }
    let state = if stopped == Some(Stop::Asked) {
        "cancelled"
    } else {
        "done"
    };
    match store
        .finish_work(id, fence, state, outcome.code, &outcome.result)
        .await
    {
        Ok(true) => tracing::info!(id, state, "work finished"),
        Ok(false) => tracing::warn!(id, "the item was taken over before it finished here"),
        Err(err) => tracing::warn!(id, error = %err, "cannot record the end of the work"),
    }
    stop.cancel();
}

fn set_stop(why: &std::sync::Mutex<Option<Stop>>, stop: Stop) {
    if let Ok(mut why) = why.lock() {
        why.get_or_insert(stop);
    }
}

/// Renews the claim every third of the lease; on a lost claim, a request to
/// stop, or a whole lease without the database, stops the work.
async fn renew(
    store: Store,
    (id, fence): (i64, i64),
    stop: CancellationToken,
    why: Arc<std::sync::Mutex<Option<Stop>>>,
) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LEASE / 3) => {}
        }
        match store.renew_work(id, fence, LEASE).await {
            Ok(Renewal::Held) => renewed = Instant::now(),
            Ok(Renewal::CancelAsked) => {
                set_stop(&why, Stop::Asked);
                stop.cancel();
                return;
            }
            Ok(Renewal::Lost) => {
                set_stop(&why, Stop::Lost);
                stop.cancel();
                return;
            }
            Err(err) if renewed.elapsed() >= LEASE => {
                tracing::warn!(id, error = %err, "no database for a whole lease: stopping the work");
                set_stop(&why, Stop::Lost);
                stop.cancel();
                return;
            }
            Err(err) => tracing::warn!(id, error = %err, "cannot renew the lease; retrying"),
        }
    }
}

/// Writes the lines that arrive to the item's log, a batch at a time.
async fn write_log(store: Store, (id, fence): (i64, i64), mut rx: mpsc::UnboundedReceiver<String>) {
    let mut open = true;
    while open {
        let mut batch = Vec::new();
        match rx.recv().await {
            Some(line) => batch.push(line),
            None => break,
        }
        // Gather what comes within a quarter second into one row.
        let until = tokio::time::Instant::now() + Duration::from_millis(250);
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        match store.log_work(id, fence, &batch.join("\n")).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => tracing::warn!(id, error = %err, "cannot write the work's log"),
        }
    }
}

/// A host job's script, run here in its own process group; its output is
/// the log.
async fn run_job(
    settings: &WorkerSettings,
    claim: &Claim,
    stop: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Outcome {
    let spec: JobSpec = match serde_json::from_str(&claim.spec) {
        Ok(spec) => spec,
        Err(err) => return Outcome::failed(format!("unreadable job spec: {err}")),
    };
    let dir = settings.dir.join(format!("work-{}", claim.id));
    let outcome = run_script(settings, &spec, &claim.input, &dir, stop, on_line).await;
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

async fn run_script(
    settings: &WorkerSettings,
    spec: &JobSpec,
    script: &[u8],
    dir: &std::path::Path,
    stop: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Outcome {
    use std::os::unix::fs::PermissionsExt as _;
    let artifacts = dir.join("artifacts");
    let path = dir.join("job");
    let written = std::fs::create_dir_all(&artifacts)
        .and_then(|()| std::fs::write(&path, script))
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)));
    if let Err(err) = written {
        return Outcome::failed(format!(
            "cannot write the script to {}: {err}",
            dir.display()
        ));
    }
    let mut command = tokio::process::Command::new(&path);
    command
        .current_dir(&artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GANTRY_JOB", &spec.job)
        .env("GANTRY_RUN", spec.run.to_string())
        .env("GANTRY_PARENT_RUN", format!("{}#{}", spec.job, spec.run))
        .env("GANTRY_ARTIFACTS", &artifacts)
        .env("GANTRY_NODE", &settings.name)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Outcome::failed(format!("cannot start the script: {err}")),
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let pipes: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as _),
        child.stderr.take().map(|p| Box::new(p) as _),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let pid = child.id();
    let kill_tree = || crate::signal::kill_group(pid);
    let timeout = tokio::time::sleep(Duration::from_secs(spec.timeout_secs.max(1)));
    tokio::pin!(timeout);
    let mut output_open = true;
    let outcome = loop {
        tokio::select! {
            line = rx.recv(), if output_open => match line {
                Some(line) => on_line(&line),
                None => output_open = false,
            },
            status = child.wait(), if !output_open => break match status {
                Ok(status) => match status.code() {
                    Some(code) => Outcome { code: Some(i64::from(code)), result: if code == 0 { String::new() } else { format!("exit code {code}") } },
                    None => Outcome::failed("killed by a signal"),
                },
                Err(err) => Outcome::failed(format!("cannot wait for it: {err}")),
            },
            _ = &mut timeout => {
                kill_tree();
                let _ = child.wait().await;
                break Outcome::failed(format!("{TIMED_OUT} after {}s; its process tree was killed", spec.timeout_secs));
            }
            _ = stop.cancelled() => {
                kill_tree();
                let _ = child.wait().await;
                break Outcome::failed("cancelled");
            }
        }
    };
    while let Ok(line) = rx.try_recv() {
        on_line(&line);
    }
    outcome
}

/// A Dockerfile build on this node's engine, pushed to the cluster's
/// registry; the older images of the app built here go (the newest stays,
/// the next build's cache).
async fn run_build(
    docker: &Docker,
    settings: &WorkerSettings,
    claim: &Claim,
    stop: &CancellationToken,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Outcome {
    let spec: BuildSpec = match serde_json::from_str(&claim.spec) {
        Ok(spec) => spec,
        Err(err) => return Outcome::failed(format!("unreadable build spec: {err}")),
    };
    let build = async {
        let no_labels = std::collections::HashMap::new();
        let built = crate::build::build_dockerfile(
            docker,
            claim.input.clone(),
            &spec.image,
            &no_labels,
            &mut *on_line,
        )
        .await
        .map_err(|e| e.to_string())?;
        let digest = crate::runtime::swarm::push_image(docker, &spec.image, &settings.push_to)
            .await
            .map_err(|e| e.to_string())?;
        on_line(&format!(
            "pushed {} to the cluster's registry ({digest})",
            spec.image
        ));
        Ok::<_, String>(BuildResult {
            digest,
            size: built.size,
            exposed_port: built.exposed_port,
        })
    };
    let built = tokio::select! {
        built = build => built,
        _ = stop.cancelled() => return Outcome::failed("cancelled"),
    };
    forget_older(docker, &spec.image, &settings.push_to).await;
    match built {
        Ok(result) => match serde_json::to_string(&result) {
            Ok(json) => Outcome {
                code: Some(0),
                result: json,
            },
            Err(err) => Outcome::failed(err.to_string()),
        },
        Err(err) => Outcome::failed(err),
    }
}

/// Removes this node's tags of the app's images but `keep` itself (its
/// tag in the registry's name goes too: it is pushed).
async fn forget_older(docker: &Docker, keep: &str, push_to: &str) {
    let (repo, _) = keep.rsplit_once(':').unwrap_or((keep, ""));
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&std::collections::HashMap::from([(
            "reference",
            vec![repo.to_owned(), format!("{push_to}/{repo}")],
        )]))
        .build();
    let Ok(images) = docker.list_images(Some(options)).await else {
        return;
    };
    for tag in images.iter().flat_map(|i| i.repo_tags.iter()) {
        if tag != keep {
            let _ = docker
                .remove_image(
                    tag,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
}
