//! Docker Swarm as gantry's runtime: each process type of an app is a
//! service (`gantry-APP-TYPE`) that Swarm keeps at its replica count across
//! the nodes, spread, restarted, and rolled out start-first: a new task runs
//! and passes its health check before an old one stops, and a failed update
//! rolls back by itself. Success is read from the service's update status,
//! never from a command's exit code.
//!
//! Web tasks publish their port on their node (host mode, a port Swarm
//! picks): this kernel has no IPVS, so no virtual IPs and no routing mesh,
//! and the proxy reaches each task at its node's address instead.
//!
//! Images reach the nodes through the cluster's registry: the runtime pushes
//! the local image there and names it by digest. A one-off (a release
//! phase, a cron run, a host job) is a Swarm job: one task, never restarted;
//! an attached one (`run APP`) is a container on the machine that has the
//! images, since Swarm cannot attach to a task.
//!
//! Swarm emits no task events: whoever follows tasks polls [`Services::tasks`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, Limit, NodeSpecAvailabilityEnum, ServiceSpec as SwarmSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, ServiceSpecRollbackConfig,
    ServiceSpecRollbackConfigFailureActionEnum, ServiceSpecRollbackConfigOrderEnum,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, TaskSpec,
    TaskSpecContainerSpec, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListServicesOptionsBuilder, ListTasksOptionsBuilder, LogsOptionsBuilder,
    PushImageOptionsBuilder, TagImageOptionsBuilder, UpdateNodeOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::docker::{LABEL_APP, LABEL_JOB, LABEL_ONEOFF, LABEL_PROCESS, LABEL_RELEASE};
use super::{
    Attached, Availability, Inspection, Instance, JoinInfo, Killed, LogsFrom, Node, ProcessSpec,
    Restarted, Result, Rolled, Runtime, RuntimeError, ServiceSpec, ServiceTask, Services, Task,
};
use crate::names::AppName;

/// What a swarm cannot do (yet), in words for the person who asked.
fn unsupported(what: &str) -> RuntimeError {
    RuntimeError::Engine(format!("{what} is not available with runtime = swarm yet").into())
}

/// A swarm, through one of its managers' engines.
pub struct SwarmRuntime {
    manager: Docker,
    /// How the manager was named, for messages.
    engine: String,
    /// The engine images are built on, and where they go for the nodes.
    images: Images,
    /// One-offs created and not yet run, by id.
    oneoffs: std::sync::Mutex<HashMap<String, Task>>,
    /// The manager's own node, where apps with storage run (a volume
    /// lives on one machine).
    storage_node: tokio::sync::OnceCell<String>,
    /// Attached one-offs (`run APP` with a terminal or stdin): Swarm
    /// cannot attach to a task, so they are containers of the engine that
    /// has the images, this machine's.
    attached: super::docker::DockerRuntime,
    /// The attached one-offs made and not yet removed, by container id.
    attached_ids: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Where a swarm's images come from: built on `local`, pushed to the
/// cluster's registry at `push_to`, pulled by every node from `pull_from`.
pub struct Images {
    pub local: Docker,
    pub push_to: String,
    pub pull_from: String,
}

impl SwarmRuntime {
    /// `network`: the bridge network of this machine's engine that
    /// attached one-offs join.
    pub fn new(manager: Docker, engine: &str, images: Images, network: &str) -> Self {
        SwarmRuntime {
            manager,
            engine: engine.to_owned(),
            attached: super::docker::DockerRuntime::new(images.local.clone(), network),
            attached_ids: std::sync::Mutex::new(std::collections::HashSet::new()),
            images,
            oneoffs: std::sync::Mutex::new(HashMap::new()),
            storage_node: tokio::sync::OnceCell::new(),
        }
    }

    /// Where an app with storage runs: `None` without mounts, else the
    /// placement that pins it to the manager's node, where its volumes are.
    async fn pin(&self, mounts: &[super::Mount]) -> Result<Option<String>> {
        if mounts.is_empty() {
            return Ok(None);
        }
        let id = self
            .storage_node
            .get_or_try_init(|| async { this_node(&self.manager).await.map(|(id, _)| id) })
            .await?;
        Ok(Some(format!("node.id=={id}")))
    }

    /// Pushes a local image to the cluster's registry; returns the name
    /// every node pulls it by, with its digest.
    async fn publish(&self, image: &str) -> Result<String> {
        let (repo, _) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let digest = push_image(&self.images.local, image, &self.images.push_to).await?;
        Ok(format!("{}/{repo}@{digest}", self.images.pull_from))
    }
}

/// Pushes `image` (`REPO:TAG`) from the engine `local` to the registry at
/// `push_to` (an address that engine trusts: loopback); returns its digest.
pub async fn push_image(local: &Docker, image: &str, push_to: &str) -> Result<String> {
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let target = format!("{push_to}/{repo}");
    let failed = |message: String| {
        RuntimeError::Engine(
            format!("cannot push {image} to the cluster's registry: {message}").into(),
        )
    };
    local
        .tag_image(
            image,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(&target)
                    .tag(tag)
                    .build(),
            ),
        )
        .await?;
    let mut pushing = local.push_image(
        &target,
        Some(PushImageOptionsBuilder::default().tag(tag).build()),
        None,
    );
    while let Some(info) = pushing.next().await {
        if let Some(detail) = info?.error_detail {
            return Err(failed(detail.message.unwrap_or_default()));
        }
    }
    let pushed = local.inspect_image(&format!("{target}:{tag}")).await?;
    let prefix = format!("{target}@");
    pushed
        .repo_digests
        .unwrap_or_default()
        .into_iter()
        .find_map(|d| d.strip_prefix(&prefix).map(str::to_owned))
        .ok_or_else(|| failed("the engine recorded no digest for the push".into()))
}

/// Pulls `REPO@DIGEST` from the registry at `pull_from` into the engine
/// `local` and tags it `image` (`REPO:TAG`): an image a node built, made
/// the manager's own.
pub async fn pull_image(local: &Docker, pull_from: &str, image: &str, digest: &str) -> Result<()> {
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let source = format!("{pull_from}/{repo}@{digest}");
    let mut pulling = local.create_image(
        Some(
            bollard::query_parameters::CreateImageOptionsBuilder::default()
                .from_image(&source)
                .build(),
        ),
        None,
        None,
    );
    while let Some(info) = pulling.next().await {
        if let Some(detail) = info?.error_detail {
            return Err(RuntimeError::Engine(
                format!(
                    "cannot pull {source} from the cluster's registry: {}",
                    detail.message.unwrap_or_default()
                )
                .into(),
            ));
        }
    }
    local
        .tag_image(
            &source,
            Some(
                TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(tag)
                    .build(),
            ),
        )
        .await?;
    Ok(())
}

/// Joins the engine `docker` to a swarm as a worker, unless it is in one
/// already; returns whether it joined now.
pub async fn join(
    docker: &Docker,
    token: &str,
    manager: &str,
    advertise: Option<&str>,
) -> Result<bool> {
    let info = docker.info().await?;
    let state = info.swarm.and_then(|s| s.local_node_state);
    if state == Some(bollard::models::LocalNodeState::ACTIVE) {
        return Ok(false);
    }
    let request = bollard::models::SwarmJoinRequest {
        listen_addr: Some("0.0.0.0:2377".into()),
        advertise_addr: advertise.map(str::to_owned),
        remote_addrs: Some(vec![manager.to_owned()]),
        join_token: Some(token.to_owned()),
        ..Default::default()
    };
    docker.join_swarm(request).await?;
    Ok(true)
}

/// `gantry-APP-TYPE`.
pub fn service_name(app: &AppName, process: &str) -> String {
    format!("gantry-{app}-{process}")
}

const NANOS: i64 = 1_000_000_000;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The health check of a web task: any HTTP answer on its port, asked from
/// inside it with what the image has (curl, else nc, as busybox has it;
/// neither: none). Busybox's static wget crashes, so it is not asked.
fn health_probe(port: u16, path: &str) -> Vec<String> {
    let path: String = path
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/._~?=&%-".contains(*c))
        .collect();
    vec![
        "CMD-SHELL".into(),
        format!(
            "if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null --max-time 3 'http://127.0.0.1:{port}{path}'; \
             elif command -v nc >/dev/null 2>&1; then printf '%s\\r\\nHost: localhost\\r\\n\\r\\n' 'GET {path} HTTP/1.0' | nc -w 3 127.0.0.1 {port} | head -n 1 | grep -q 'HTTP/'; \
             else exit 0; fi"
        ),
    ]
}

/// The whole Swarm spec of one process type of a release.
fn swarm_spec(spec: &ServiceSpec<'_>, force_update: Option<u64>, pin: Option<&str>) -> SwarmSpec {
    let labels = HashMap::from([
        (LABEL_APP.to_owned(), spec.app.to_string()),
        (LABEL_PROCESS.to_owned(), spec.process.to_owned()),
        (LABEL_RELEASE.to_owned(), spec.release.to_string()),
    ]);
    let health_check = spec.port.map(|port| HealthConfig {
        test: Some(health_probe(port, spec.health_path)),
        interval: Some(NANOS),
        timeout: Some(4 * NANOS),
        retries: Some(3),
        start_period: Some(nanos(spec.health_timeout)),
        start_interval: None,
    });
    let endpoint_spec = spec.port.map(|port| EndpointSpec {
        // No virtual IP: tasks are reached at their nodes' published ports.
        mode: Some(EndpointSpecModeEnum::DNSRR),
        ports: Some(vec![EndpointPortConfig {
            target_port: Some(i64::from(port)),
            published_port: None,
            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
            ..Default::default()
        }]),
    });
    // How long Swarm watches each new task after it became healthy before
    // the next one: a release that never gets healthy fails during its
    // start period anyway, and every second here is a second of each push.
    let monitor = Some(2 * NANOS);
    SwarmSpec {
        name: Some(service_name(spec.app, spec.process)),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(spec.image.to_owned()),
                labels: Some(labels),
                // The image's entrypoint (a buildpack's launcher) stays.
                args: spec
                    .command
                    .map(|c| vec!["/bin/sh".to_owned(), "-c".to_owned(), c.to_owned()]),
                env: Some(spec.env.clone()),
                init: Some(true),
                stop_grace_period: Some(nanos(spec.stop_grace)),
                health_check,
                mounts: swarm_mounts(&spec.mounts),
                ..Default::default()
            }),
            placement: placement(pin),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: spec.limits.memory,
                    nano_cpus: spec.limits.nano_cpus(),
                    pids: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(NANOS),
                max_attempts: None,
                window: None,
            }),
            force_update,
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(spec.replicas)),
            }),
            ..Default::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor,
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(1),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor,
            max_failure_ratio: Some(0.0),
            order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
        }),
        endpoint_spec,
        ..Default::default()
    }
}

/// The app's mounts as Swarm takes them: a name is the node's local volume
/// (made there beforehand), a path a directory of the node.
fn swarm_mounts(mounts: &[super::Mount]) -> Option<Vec<bollard::models::Mount>> {
    use bollard::models::MountType;
    (!mounts.is_empty()).then(|| {
        mounts
            .iter()
            .map(|m| bollard::models::Mount {
                target: Some(m.path.clone()),
                source: Some(m.host.display().to_string()),
                typ: Some(if m.host.is_absolute() {
                    MountType::BIND
                } else {
                    MountType::VOLUME
                }),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect()
    })
}

fn placement(pin: Option<&str>) -> Option<bollard::models::TaskSpecPlacement> {
    pin.map(|constraint| bollard::models::TaskSpecPlacement {
        constraints: Some(vec![constraint.to_owned()]),
        ..Default::default()
    })
}

/// How to update a service at `version` (Swarm refuses an update made
/// from an older version of its spec).
fn update_options(
    version: Option<&bollard::models::ObjectVersion>,
) -> bollard::query_parameters::UpdateServiceOptions {
    let version = version
        .and_then(|v| v.index)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or_default();
    UpdateServiceOptionsBuilder::default()
        .version(version)
        .build()
}

/// The name (and id) of a one-off's Swarm job.
const ONEOFF_PREFIX: &str = "gantry-oneoff-";

/// A one-off as a Swarm job: one task, run once, never restarted, with the
/// image's entrypoint and the task's command.
fn job_spec(name: &str, task: &Task, image: &str, pin: Option<&str>) -> SwarmSpec {
    let labels = match &task.owner {
        super::Owner::App { app, release } => HashMap::from([
            (LABEL_ONEOFF.to_owned(), app.to_string()),
            (LABEL_RELEASE.to_owned(), release.to_string()),
        ]),
        super::Owner::Job(run) => HashMap::from([(LABEL_JOB.to_owned(), run.clone())]),
    };
    SwarmSpec {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                labels: Some(labels),
                command: task.entrypoint.clone(),
                args: Some(task.command.clone()),
                env: Some(task.env.clone()),
                dir: task.working_dir.clone(),
                init: Some(true),
                mounts: swarm_mounts(&task.mounts),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: placement(pin),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated_job: Some(bollard::models::ServiceSpecModeReplicatedJob {
                max_concurrent: Some(1),
                total_completions: Some(1),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What an update of a service must come to.
struct Expected {
    replicas: u32,
    /// The release every running task must be of.
    release: i64,
    /// Tasks are replaced even though the spec is the same.
    force: bool,
    /// How long one new task has to become healthy.
    health_timeout: Duration,
}

impl Expected {
    fn of(spec: &ServiceSpec<'_>) -> Expected {
        Expected {
            replicas: spec.replicas,
            release: spec.release,
            force: spec.force,
            health_timeout: spec.health_timeout,
        }
    }
}

/// How many tasks a replicated service keeps.
fn replicas_of(spec: &SwarmSpec) -> Option<i64> {
    spec.mode.as_ref()?.replicated.as_ref()?.replicas
}

/// Meant to run, and running (for a checked task: healthy).
fn running(task: &bollard::models::Task) -> bool {
    task.desired_state == Some(TaskState::RUNNING)
        && task.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
}

/// A time the engine reported, as RFC 3339.
fn rfc3339(t: bollard::models::BollardDate) -> String {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), 0)
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// A node as gantry shows it, with its running apps' tasks counted.
fn node_of(n: bollard::models::Node, running: &HashMap<String, usize>) -> Node {
    let id = n.id.unwrap_or_default();
    let spec = n.spec.unwrap_or_default();
    let status = n.status.unwrap_or_default();
    let role = match (n.manager_status.and_then(|m| m.leader), spec.role) {
        (Some(true), _) => "leader".to_owned(),
        (_, Some(role)) => role.to_string(),
        _ => "worker".to_owned(),
    };
    Node {
        tasks: running.get(&id).copied().unwrap_or(0),
        hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
        address: status.addr.unwrap_or_default(),
        role,
        availability: spec
            .availability
            .map_or_else(|| "active".to_owned(), |a| a.to_string()),
        state: status
            .state
            .map_or_else(|| "unknown".to_owned(), |s| s.to_string()),
        labels: spec.labels.unwrap_or_default().into_iter().collect(),
        id,
    }
}

fn task_state(state: Option<&TaskState>) -> String {
    state.map_or_else(|| "unknown".to_owned(), |s| s.to_string())
}

impl SwarmRuntime {
    async fn find_service(&self, name: &str) -> Result<Option<bollard::models::Service>> {
        match self.manager.inspect_service(name, None).await {
            Ok(service) => Ok(Some(service)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether the service's running tasks are spread evenly over the
    /// active, ready nodes (no node more than one task ahead of another).
    async fn balanced(&self, service: &str) -> Result<bool> {
        let nodes = self.manager.list_nodes(None).await?;
        let mut counts: HashMap<String, usize> = nodes
            .into_iter()
            .filter(|n| {
                let spec = n.spec.as_ref();
                let active = spec.and_then(|s| s.availability)
                    != Some(NodeSpecAvailabilityEnum::DRAIN)
                    && spec.and_then(|s| s.availability) != Some(NodeSpecAvailabilityEnum::PAUSE);
                let ready = n.status.as_ref().and_then(|s| s.state)
                    == Some(bollard::models::NodeState::READY);
                active && ready
            })
            .filter_map(|n| n.id)
            .map(|id| (id, 0))
            .collect();
        for task in self.service_tasks(("service", service.to_owned())).await? {
            if let (true, Some(count)) = (
                running(&task),
                task.node_id.and_then(|n| counts.get_mut(&n)),
            ) {
                *count += 1;
            }
        }
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        Ok(max <= min + 1)
    }

    /// Replaces every task of the service (a forced update) in `order`,
    /// and waits for the update to end.
    async fn force_update(
        &self,
        id: &str,
        name: &str,
        order: ServiceSpecUpdateConfigOrderEnum,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<()> {
        let service = self.manager.inspect_service(id, None).await?;
        let mut spec = service.spec.unwrap_or_default();
        let release = spec
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_RELEASE))
            .and_then(|r| r.parse().ok())
            .unwrap_or_default();
        let replicas = replicas_of(&spec).unwrap_or(1);
        if let Some(template) = spec.task_template.as_mut() {
            template.force_update = Some(template.force_update.unwrap_or(0) + 1);
        }
        if let Some(update) = spec.update_config.as_mut() {
            update.order = Some(order);
        }
        let options = update_options(service.version.as_ref());
        let since = crate::time::now_ms() / 1000;
        self.manager.update_service(id, spec, options, None).await?;
        // Wait as a roll-out does: the service's own update status.
        let expected = Expected {
            replicas: u32::try_from(replicas).unwrap_or(1),
            release,
            force: true,
            health_timeout: Duration::from_secs(60),
        };
        match self.wait_updated(&expected, name, since, progress).await? {
            Rolled::Done => Ok(()),
            Rolled::RolledBack(why) | Rolled::Failed(why) => Err(RuntimeError::Engine(
                format!("replacing the tasks of {name} failed: {why}").into(),
            )),
        }
    }

    /// Sets the order of the service's updates; replaces no task.
    async fn set_update_order(
        &self,
        id: &str,
        order: ServiceSpecUpdateConfigOrderEnum,
    ) -> Result<()> {
        let service = self.manager.inspect_service(id, None).await?;
        let mut spec = service.spec.unwrap_or_default();
        if spec.update_config.as_ref().and_then(|u| u.order) == Some(order) {
            return Ok(());
        }
        if let Some(update) = spec.update_config.as_mut() {
            update.order = Some(order);
        }
        let options = update_options(service.version.as_ref());
        self.manager.update_service(id, spec, options, None).await?;
        Ok(())
    }

    /// The node named by host name, id, or a prefix of its id.
    async fn find_node(&self, name: &str) -> Result<bollard::models::Node> {
        let nodes = self.manager.list_nodes(None).await?;
        let mut matches: Vec<bollard::models::Node> = nodes
            .into_iter()
            .filter(|n| {
                let host = n.description.as_ref().and_then(|d| d.hostname.as_deref());
                host == Some(name) || n.id.as_deref().is_some_and(|id| id.starts_with(name))
            })
            .collect();
        match (matches.len(), name.is_empty()) {
            (1, false) => Ok(matches.remove(0)),
            (0, _) | (_, true) => Err(RuntimeError::Engine(
                format!("no node {name:?} in the swarm (gantry nodes lists them)").into(),
            )),
            _ => Err(RuntimeError::Engine(
                format!("{name:?} names several nodes: give more of the id").into(),
            )),
        }
    }

    async fn app_services(&self, app: &AppName) -> Result<Vec<bollard::models::Service>> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_APP}={app}")])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        Ok(self.manager.list_services(Some(options)).await?)
    }

    /// Node id to (host name, address).
    async fn node_addresses(&self) -> Result<HashMap<String, (String, Option<std::net::IpAddr>)>> {
        let nodes = self.manager.list_nodes(None).await?;
        Ok(nodes
            .into_iter()
            .filter_map(|n| {
                let host = n.description.and_then(|d| d.hostname).unwrap_or_default();
                let addr = n.status.and_then(|s| s.addr).and_then(|a| a.parse().ok());
                Some((n.id?, (host, addr)))
            })
            .collect())
    }

    async fn service_tasks(&self, filter: (&str, String)) -> Result<Vec<bollard::models::Task>> {
        let filters = HashMap::from([(filter.0, vec![filter.1])]);
        let options = ListTasksOptionsBuilder::default().filters(&filters).build();
        Ok(self.manager.list_tasks(Some(options)).await?)
    }

    /// Waits for a new service's tasks: all running, or failing again and
    /// again (nothing to roll back to: the service is removed).
    async fn wait_created(
        &self,
        spec: &ServiceSpec<'_>,
        name: &str,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Rolled> {
        let deadline = tokio::time::Instant::now() + spec.health_timeout + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            let tasks = self.service_tasks(("service", name.to_owned())).await?;
            let running = tasks.iter().filter(|t| running(t)).count();
            let failures: Vec<String> = tasks
                .iter()
                .filter(|t| {
                    matches!(
                        t.status.as_ref().and_then(|s| s.state),
                        Some(TaskState::FAILED | TaskState::REJECTED)
                    )
                })
                .filter_map(|t| {
                    let status = t.status.as_ref()?;
                    Some(
                        status
                            .err
                            .clone()
                            .or(status.message.clone())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            let line = format!("{name}: {running}/{} running", spec.replicas);
            if line != last {
                progress(&line);
                last = line;
            }
            if running >= usize::try_from(spec.replicas).unwrap_or(usize::MAX) {
                return Ok(Rolled::Done);
            }
            if failures.len() >= 3 || tokio::time::Instant::now() > deadline {
                let reason = failures.last().cloned().unwrap_or_else(|| {
                    format!(
                        "not running after {}s",
                        (spec.health_timeout + Duration::from_secs(60)).as_secs()
                    )
                });
                self.manager.delete_service(name).await?;
                return Ok(Rolled::Failed(reason));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the update Swarm runs ends, and says how. `since` (unix
    /// seconds) is when it was asked for: an update status that started
    /// before is an earlier update's, and Swarm sets none at all when the
    /// task template did not change (a new replica count).
    async fn wait_updated(
        &self,
        spec: &Expected,
        name: &str,
        since: i64,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Rolled> {
        let per_task = spec.health_timeout + Duration::from_secs(30);
        let limit = per_task * spec.replicas.max(1) + Duration::from_secs(30);
        let started = tokio::time::Instant::now();
        let mut last = String::new();
        loop {
            let service = self.manager.inspect_service(name, None).await?;
            let status = service.update_status.unwrap_or_default();
            let fresh = status
                .started_at
                .is_some_and(|t| t.unix_timestamp() >= since - 2);
            let message = status.message.clone().unwrap_or_default();
            let state = status.state.filter(|_| fresh);
            let line = match state {
                Some(state) => format!("{name}: {state} {message}").trim_end().to_owned(),
                None => format!("{name}: updating"),
            };
            if line != last {
                progress(&line);
                last = line;
            }
            match state {
                Some(ServiceUpdateStatusStateEnum::COMPLETED) => return Ok(Rolled::Done),
                Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                    return Ok(Rolled::RolledBack(message))
                }
                Some(
                    ServiceUpdateStatusStateEnum::PAUSED
                    | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED,
                ) => return Ok(Rolled::Failed(message)),
                Some(_) => {}
                // No update of ours (yet): done when the tasks that run are
                // all of this release and as many as asked. A forced update
                // always gets a status of its own: wait for it a while.
                None if !spec.force || started.elapsed() > Duration::from_secs(15) => {
                    let tasks = self.service_tasks(("service", name.to_owned())).await?;
                    let releases: Vec<Option<i64>> = tasks
                        .iter()
                        .filter(|t| running(t))
                        .map(|t| {
                            t.spec
                                .as_ref()
                                .and_then(|s| s.container_spec.as_ref())
                                .and_then(|c| c.labels.as_ref())
                                .and_then(|l| l.get(LABEL_RELEASE))
                                .and_then(|r| r.parse().ok())
                        })
                        .collect();
                    let enough =
                        releases.len() >= usize::try_from(spec.replicas).unwrap_or(usize::MAX);
                    if enough && releases.iter().all(|r| *r == Some(spec.release)) {
                        return Ok(Rolled::Done);
                    }
                }
                None => {}
            }
            if started.elapsed() > limit {
                return Ok(Rolled::Failed(format!(
                    "the update did not end within {}s",
                    limit.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[async_trait::async_trait]
impl Services for SwarmRuntime {
    async fn roll_out(
        &self,
        spec: ServiceSpec<'_>,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Rolled> {
        let t = std::time::Instant::now();
        let image = self.publish(spec.image).await?;
        progress(&format!(
            "pushed {} to the cluster's registry in {:.1}s: {image}",
            spec.image,
            t.elapsed().as_secs_f64()
        ));
        let spec = ServiceSpec {
            image: &image,
            ..spec
        };
        let name = service_name(spec.app, spec.process);
        let pin = self.pin(&spec.mounts).await?;
        match self.find_service(&name).await? {
            None => {
                self.manager
                    .create_service(swarm_spec(&spec, None, pin.as_deref()), None)
                    .await?;
                self.wait_created(&spec, &name, progress).await
            }
            Some(current) => {
                let options = update_options(current.version.as_ref());
                let forced = current
                    .spec
                    .and_then(|s| s.task_template)
                    .and_then(|t| t.force_update)
                    .unwrap_or(0);
                let force = spec.force.then_some(forced + 1).or(Some(forced));
                let since = crate::time::now_ms() / 1000;
                self.manager
                    .update_service(
                        &name,
                        swarm_spec(&spec, force, pin.as_deref()),
                        options,
                        None,
                    )
                    .await?;
                self.wait_updated(&Expected::of(&spec), &name, since, progress)
                    .await
            }
        }
    }

    async fn scale(&self, app: &AppName, process: &str, replicas: u32) -> Result<()> {
        let name = service_name(app, process);
        let Some(current) = self.find_service(&name).await? else {
            return Err(RuntimeError::Engine(
                format!("{app} has no {process} service on the swarm").into(),
            ));
        };
        let options = update_options(current.version.as_ref());
        let mut spec = current.spec.unwrap_or_default();
        spec.mode = Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(replicas)),
            }),
            ..Default::default()
        });
        self.manager
            .update_service(&name, spec, options, None)
            .await?;
        Ok(())
    }

    async fn tasks(&self, app: Option<&AppName>) -> Result<Vec<ServiceTask>> {
        let nodes = self.node_addresses().await?;
        let label = match app {
            Some(app) => format!("{LABEL_APP}={app}"),
            None => LABEL_APP.to_owned(),
        };
        let tasks = self.service_tasks(("label", label)).await?;
        let mut out: Vec<ServiceTask> = tasks
            .into_iter()
            .filter(|t| t.desired_state == Some(TaskState::RUNNING))
            .filter_map(|t| {
                let labels = t
                    .spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                let status = t.status.unwrap_or_default();
                let state = status.state;
                let (node, addr) = t
                    .node_id
                    .as_ref()
                    .and_then(|id| nodes.get(id))
                    .cloned()
                    .unwrap_or_default();
                let port = status
                    .port_status
                    .and_then(|p| p.ports)
                    .and_then(|ports| ports.into_iter().find_map(|p| p.published_port))
                    .and_then(|p| u16::try_from(p).ok());
                Some(ServiceTask {
                    app: labels.get(LABEL_APP).and_then(|a| AppName::parse(a).ok())?,
                    id: t.id?,
                    process: labels
                        .get(LABEL_PROCESS)
                        .cloned()
                        .unwrap_or_else(|| "web".into()),
                    release: labels.get(LABEL_RELEASE).and_then(|r| r.parse().ok()),
                    slot: t.slot.and_then(|s| u32::try_from(s).ok()).unwrap_or(0),
                    node,
                    running: state == Some(TaskState::RUNNING),
                    state: task_state(state.as_ref()),
                    endpoint: addr.zip(port).map(|(ip, port)| SocketAddr::new(ip, port)),
                    message: status.err.or(status.message).unwrap_or_default(),
                    since: status.timestamp.map(rfc3339).unwrap_or_default(),
                })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.app, &a.process, a.slot, &a.id).cmp(&(&b.app, &b.process, b.slot, &b.id))
        });
        Ok(out)
    }

    async fn process_types(&self, app: &AppName) -> Result<Vec<String>> {
        let mut types: Vec<String> = self
            .app_services(app)
            .await?
            .into_iter()
            .filter_map(|s| s.spec?.labels?.get(LABEL_PROCESS).cloned())
            .collect();
        types.sort();
        Ok(types)
    }

    async fn nodes(&self) -> Result<Vec<Node>> {
        let tasks = self.service_tasks(("label", LABEL_APP.to_owned())).await?;
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for task in tasks {
            if let (true, Some(node)) = (running(&task), task.node_id) {
                *per_node.entry(node).or_default() += 1;
            }
        }
        let mut nodes: Vec<Node> = self
            .manager
            .list_nodes(None)
            .await?
            .into_iter()
            .map(|n| node_of(n, &per_node))
            .collect();
        nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(nodes)
    }

    async fn update_node(
        &self,
        node: &str,
        labels: &[(String, Option<String>)],
        availability: Option<Availability>,
    ) -> Result<Node> {
        let found = self.find_node(node).await?;
        let id = found.id.clone().unwrap_or_default();
        let version = found
            .version
            .as_ref()
            .and_then(|v| v.index)
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or_default();
        let mut spec = found.spec.clone().unwrap_or_default();
        let mut current = spec.labels.take().unwrap_or_default();
        for (key, value) in labels {
            match value {
                Some(value) => current.insert(key.clone(), value.clone()),
                None => current.remove(key),
            };
        }
        spec.labels = Some(current);
        if let Some(availability) = availability {
            spec.availability = Some(match availability {
                Availability::Active => NodeSpecAvailabilityEnum::ACTIVE,
                Availability::Drain => NodeSpecAvailabilityEnum::DRAIN,
            });
        }
        let options = UpdateNodeOptionsBuilder::default().version(version).build();
        self.manager.update_node(&id, spec, options).await?;
        let nodes = Services::nodes(self).await?;
        nodes
            .into_iter()
            .find(|n| n.id == id)
            .ok_or_else(|| RuntimeError::Engine(format!("node {node} vanished").into()))
    }

    async fn respread(
        &self,
        progress: &mut (dyn for<'b> FnMut(&'b str) + Send),
    ) -> Result<Vec<String>> {
        let filters = HashMap::from([("label", vec![LABEL_APP.to_owned()])]);
        let options = ListServicesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let mut done = Vec::new();
        for service in self.manager.list_services(Some(options)).await? {
            let (Some(id), Some(spec)) = (service.id, service.spec) else {
                continue;
            };
            let name = spec.name.clone().unwrap_or_else(|| id.clone());
            let replicas = replicas_of(&spec).unwrap_or(0);
            // One task has nowhere better to be.
            if replicas < 2 {
                continue;
            }
            // Each round replaces the tasks one at a time, stop-first: a
            // new task is placed while its old one no longer counts, so it
            // goes to the least loaded node (start-first counts the old
            // one, and ties leave a node empty). The others keep serving.
            for round in 1..=3 {
                if self.balanced(&id).await? {
                    break;
                }
                progress(&format!("{name}: replacing its tasks, round {round}"));
                self.force_update(
                    &id,
                    &name,
                    ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
                    progress,
                )
                .await?;
            }
            // Back to start-first for deploys (the template is unchanged:
            // no task is replaced).
            self.set_update_order(&id, ServiceSpecUpdateConfigOrderEnum::START_FIRST)
                .await?;
            done.push(name);
        }
        Ok(done)
    }

    async fn join_info(&self) -> Result<JoinInfo> {
        let swarm = self.manager.inspect_swarm().await?;
        let token = swarm
            .join_tokens
            .and_then(|t| t.worker)
            .ok_or_else(|| RuntimeError::Engine("the swarm has no worker join token".into()))?;
        let info = self.manager.info().await?;
        let manager = info
            .swarm
            .and_then(|s| s.remote_managers)
            .unwrap_or_default()
            .into_iter()
            .find_map(|m| m.addr)
            .ok_or_else(|| RuntimeError::Engine("the swarm names no manager address".into()))?;
        Ok(JoinInfo { token, manager })
    }

    async fn remove(&self, app: &AppName, process: Option<&str>) -> Result<usize> {
        let mut removed = 0;
        for service in self.app_services(app).await? {
            let labels = service
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default();
            if process.is_some_and(|p| labels.get(LABEL_PROCESS).map(String::as_str) != Some(p)) {
                continue;
            }
            if let Some(id) = service.id {
                self.manager.delete_service(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl Runtime for SwarmRuntime {
    /// Checks that the engine is a manager of a swarm.
    async fn prepare(&self) -> Result<()> {
        let info = self.manager.info().await?;
        let control = info.swarm.and_then(|s| s.control_available);
        if control != Some(true) {
            return Err(RuntimeError::Engine(
                format!(
                    "runtime = swarm: the Docker engine at {} is not a manager of a swarm \
                     (`docker swarm init` makes one; or point [swarm] engine at a manager)",
                    self.engine
                )
                .into(),
            ));
        }
        Ok(())
    }

    async fn start_process(&self, _spec: ProcessSpec<'_>) -> Result<String> {
        Err(unsupported(
            "starting one process by itself (deploy rolls out services)",
        ))
    }

    async fn start(&self, _id: &str) -> Result<()> {
        Err(unsupported("starting one process by itself"))
    }

    async fn inspect(&self, id: &str) -> Result<Inspection> {
        let task = self.manager.inspect_task(id).await?;
        let status = task.status.unwrap_or_default();
        let nodes = self.node_addresses().await?;
        let address = task
            .node_id
            .as_ref()
            .and_then(|n| nodes.get(n))
            .and_then(|(_, addr)| *addr);
        Ok(Inspection {
            running: status.state == Some(TaskState::RUNNING),
            state: task_state(status.state.as_ref()),
            restarts: 0,
            exit_code: status.container_status.and_then(|c| c.exit_code),
            started_at: status.timestamp.map(rfc3339).unwrap_or_default(),
            created_at: task.created_at.map_or(0, |t| t.unix_timestamp()),
            address,
            oom_killed: false,
        })
    }

    async fn list(&self, app: &AppName) -> Result<Vec<Instance>> {
        Ok(self
            .tasks(Some(app))
            .await?
            .into_iter()
            .map(|t| Instance {
                name: format!("{}.{} on {}", t.process, t.slot, t.node),
                id: t.id,
                release: t.release,
                process: t.process,
                replica: t.slot,
                running: t.running,
            })
            .collect())
    }

    /// A task's memory when it runs on the manager's own node (the manager
    /// cannot read other nodes' containers; their edges report theirs, see
    /// [`local_tasks_memory`]).
    async fn memory(&self, id: &str) -> Result<Option<u64>> {
        let filters = HashMap::from([("label", vec![format!("{TASK_ID_LABEL}={id}")])]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let containers = self.manager.list_containers(Some(options)).await?;
        match containers.into_iter().find_map(|c| c.id) {
            Some(container) => super::docker::container_memory(&self.manager, &container).await,
            None => Ok(None),
        }
    }

    fn logs(
        &self,
        id: &str,
        from: LogsFrom,
        timestamps: bool,
    ) -> BoxStream<'static, Result<String>> {
        let options = super::logs_options(from, timestamps);
        self.manager
            .task_logs(id, Some(options))
            .map(|chunk| chunk.map(|c| c.to_string()).map_err(RuntimeError::from))
            .boxed()
    }

    /// Removes a one-off's job; an app's task is Swarm's to stop (scale or
    /// remove its service instead).
    async fn stop_and_remove(&self, id: &str, grace: Duration) {
        let local = self
            .attached_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if local {
            self.attached.stop_and_remove(id, grace).await;
            return;
        }
        if !id.starts_with(ONEOFF_PREFIX) {
            tracing::debug!(task = id, "a swarm task is stopped through its service");
            return;
        }
        self.oneoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        match self.manager.delete_service(id).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(err) => tracing::warn!(job = id, error = %err, "cannot remove a one-off's job"),
        }
    }

    /// Swarm reports no task events; the services watcher polls tasks.
    fn restarts(&self) -> BoxStream<'static, Result<Restarted>> {
        futures_util::stream::pending().boxed()
    }

    fn out_of_memory(&self) -> BoxStream<'static, Result<Killed>> {
        futures_util::stream::pending().boxed()
    }

    /// On the manager's own machine, where an app with storage runs.
    async fn ensure_volume(&self, app: &AppName, name: &str) -> Result<()> {
        super::docker::create_volume(&self.manager, app, name).await
    }

    async fn volumes(&self, app: &AppName) -> Result<Vec<String>> {
        super::docker::app_volumes(&self.manager, app).await
    }

    /// Waits (up to a minute) for the tasks of a removed service to let go
    /// of it (Swarm stops them after their removal returned), and removes
    /// the ended task containers Swarm keeps as history, which hold it too.
    async fn remove_volume(&self, name: &str) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let filters = HashMap::from([
                ("volume", vec![name.to_owned()]),
                (
                    "status",
                    vec!["exited".to_owned(), "created".to_owned(), "dead".to_owned()],
                ),
            ]);
            let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            for ended in self.manager.list_containers(Some(options)).await? {
                if let Some(id) = ended.id {
                    let _ = self
                        .manager
                        .remove_container(
                            &id,
                            None::<bollard::query_parameters::RemoveContainerOptions>,
                        )
                        .await;
                }
            }
            let removed = self
                .manager
                .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                .await;
            match removed {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Keeps the task until it runs: a Swarm job is made and started at once.
    /// An attached one-off is a container on this machine's engine instead.
    async fn create_oneoff(&self, task: &Task) -> Result<String> {
        if task.interactive.is_some() {
            self.attached.prepare().await?;
            let id = self.attached.create_oneoff(task).await?;
            self.attached_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
            return Ok(id);
        }
        let id = {
            use rand::RngExt;
            format!("{ONEOFF_PREFIX}{:08x}", rand::rng().random::<u32>())
        };
        self.oneoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), task.clone());
        Ok(id)
    }

    /// Runs it as a Swarm job (one task, never restarted) on whichever node
    /// Swarm picks, waits for its end, then passes its output on.
    async fn run_oneoff(
        &self,
        id: &str,
        output: &mut (dyn for<'b> FnMut(&'b [u8]) + Send),
    ) -> Result<i64> {
        let task = self
            .oneoffs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::Engine(format!("no one-off {id}").into()))?;
        let image = self.publish(&task.image).await?;
        let pin = self.pin(&task.mounts).await?;
        self.manager
            .create_service(job_spec(id, &task, &image, pin.as_deref()), None)
            .await?;
        let code = loop {
            let tasks = self.service_tasks(("service", id.to_owned())).await?;
            let status = tasks.into_iter().find_map(|t| t.status);
            match status.as_ref().and_then(|s| s.state) {
                Some(TaskState::COMPLETE) => break 0,
                Some(TaskState::FAILED) => {
                    let status = status.unwrap_or_default();
                    match status.container_status.and_then(|c| c.exit_code) {
                        Some(code) if code != 0 => break code,
                        _ => {
                            return Err(RuntimeError::Engine(
                                status.err.unwrap_or_else(|| "the job failed".into()).into(),
                            ))
                        }
                    }
                }
                Some(TaskState::REJECTED | TaskState::ORPHANED | TaskState::REMOVE) => {
                    let status = status.unwrap_or_default();
                    return Err(RuntimeError::Engine(
                        format!(
                            "the swarm did not run it: {}",
                            status.err.or(status.message).unwrap_or_default()
                        )
                        .into(),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        };
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("all")
            .build();
        let mut logs = self.manager.service_logs(id, Some(options));
        while let Some(chunk) = logs.next().await {
            output(&chunk?.into_bytes());
        }
        Ok(code)
    }

    async fn attach_oneoff(&self, id: &str, streams: Attached<'_>) -> Result<i32> {
        let local = self
            .attached_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        if !local {
            return Err(unsupported(
                "attaching to a one-off made without a terminal or stdin",
            ));
        }
        self.attached.attach_oneoff(id, streams).await
    }

    fn services(&self) -> Option<&dyn Services> {
        Some(self)
    }
}

/// The Swarm node `docker` is: (id, hostname); an error when its engine is
/// in no swarm.
pub async fn this_node(docker: &Docker) -> Result<(String, String)> {
    let info = docker.info().await?;
    let id = info
        .swarm
        .and_then(|s| s.node_id)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| RuntimeError::Engine("the engine is in no swarm".into()))?;
    Ok((id, info.name.unwrap_or_default()))
}

/// The label Swarm gives a task's container: the task's id.
const TASK_ID_LABEL: &str = "com.docker.swarm.task.id";

/// The memory of `app`'s tasks that run on `docker`'s engine (a node's
/// own), by process and slot (`web.1`): each node's edge reports what only
/// its engine can see.
pub async fn local_tasks_memory(
    docker: &Docker,
    app: &AppName,
) -> Result<std::collections::BTreeMap<String, u64>> {
    let filters = HashMap::from([(
        "label",
        vec![format!("{LABEL_APP}={app}"), TASK_ID_LABEL.to_owned()],
    )]);
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    let mut out = std::collections::BTreeMap::new();
    for container in docker.list_containers(Some(options)).await? {
        let (Some(id), Some(labels)) = (container.id, container.labels) else {
            continue;
        };
        let Some(process) = labels.get(LABEL_PROCESS) else {
            continue;
        };
        // "SERVICE.SLOT.TASK"
        let slot = labels
            .get("com.docker.swarm.task.name")
            .and_then(|name| name.split('.').nth(1))
            .unwrap_or("1");
        if let Some(bytes) = super::docker::container_memory(docker, &id).await? {
            out.insert(format!("{process}.{slot}"), bytes);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_web_service_starts_first_rolls_back_and_publishes_on_its_node() {
        let app = AppName::parse("shop").expect("name");
        let spec = ServiceSpec {
            app: &app,
            release: 7,
            image: "127.0.0.1:5001/gantry/shop@sha256:abc",
            process: "web",
            replicas: 3,
            env: vec!["PORT=5000".into()],
            command: Some("./server"),
            port: Some(5000),
            health_path: "/",
            health_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            limits: crate::resources::Limits::default(),
            mounts: Vec::new(),
            force: false,
        };
        let made = swarm_spec(&spec, Some(2), None);
        assert!(made
            .task_template
            .as_ref()
            .is_some_and(|t| t.placement.is_none()));
        assert_eq!(made.name.as_deref(), Some("gantry-shop-web"));
        let update = made.update_config.expect("update config");
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        let endpoint = made.endpoint_spec.expect("endpoint");
        assert_eq!(endpoint.mode, Some(EndpointSpecModeEnum::DNSRR));
        let port = &endpoint.ports.expect("ports")[0];
        assert_eq!(port.target_port, Some(5000));
        assert_eq!(port.published_port, None);
        assert_eq!(
            port.publish_mode,
            Some(EndpointPortConfigPublishModeEnum::HOST)
        );
        let template = made.task_template.expect("template");
        assert_eq!(template.force_update, Some(2));
        let container = template.container_spec.expect("container");
        assert_eq!(container.command, None, "the image's entrypoint stays");
        assert_eq!(
            container.args,
            Some(vec!["/bin/sh".into(), "-c".into(), "./server".into()])
        );
        let check = container.health_check.expect("health check");
        assert!(check.test.expect("test")[1].contains("http://127.0.0.1:5000/"));
        assert_eq!(
            container.labels.expect("labels").get(LABEL_RELEASE),
            Some(&"7".to_owned())
        );
        // A worker has no port, so no check and nothing published.
        let worker = swarm_spec(
            &ServiceSpec {
                process: "worker",
                port: None,
                ..spec.clone()
            },
            None,
            None,
        );
        assert!(worker.endpoint_spec.is_none());
        let container = worker
            .task_template
            .and_then(|t| t.container_spec)
            .expect("container");
        assert!(container.health_check.is_none());
        // With storage: its volume and a host directory, on the pinned node.
        let mounts = vec![
            super::super::Mount {
                host: "gantry-vol-shop-data".into(),
                path: "/data".into(),
                read_only: false,
            },
            super::super::Mount {
                host: "/srv/shop".into(),
                path: "/srv".into(),
                read_only: true,
            },
        ];
        let stored = swarm_spec(&ServiceSpec { mounts, ..spec }, None, Some("node.id==abc"));
        let template = stored.task_template.expect("template");
        let constraints = template.placement.and_then(|p| p.constraints);
        assert_eq!(constraints, Some(vec!["node.id==abc".to_owned()]));
        let mounts = template
            .container_spec
            .and_then(|c| c.mounts)
            .expect("mounts");
        use bollard::models::MountType;
        assert_eq!(
            mounts
                .iter()
                .map(|m| (m.typ, m.source.as_deref(), m.target.as_deref()))
                .collect::<Vec<_>>(),
            [
                (
                    Some(MountType::VOLUME),
                    Some("gantry-vol-shop-data"),
                    Some("/data")
                ),
                (Some(MountType::BIND), Some("/srv/shop"), Some("/srv")),
            ]
        );
    }
}
