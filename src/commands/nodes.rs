//! `nodes`, `nodes:label`, `nodes:drain`, `nodes:activate`, `node:token`:
//! the machines of a swarm (runtime = swarm), for admins.

use std::time::{Duration, Instant};

use crate::access::Caller;
use crate::context::Gantry;
use crate::runtime::{Availability, Node, Services};

/// The swarm's services, or why there are none.
fn services(gantry: &Gantry) -> anyhow::Result<&dyn Services> {
    gantry.runtime.services().ok_or_else(|| {
        anyhow::anyhow!(
            "this gantry runs apps on one machine (runtime = docker): nodes belong to a swarm \
             (gantry serve --runtime swarm; see README, \"Several machines\")"
        )
    })
}

fn table(nodes: &[Node]) -> String {
    let mut out = format!(
        "{:<12} {:<16} {:<16} {:<8} {:<12} {:<8} {:<5} LABELS\n",
        "ID", "HOSTNAME", "ADDRESS", "ROLE", "AVAILABILITY", "STATE", "TASKS"
    );
    for n in nodes {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "{:<12} {:<16} {:<16} {:<8} {:<12} {:<8} {:<5} {}\n",
            n.id.get(..12).unwrap_or(&n.id),
            n.hostname,
            n.address,
            n.role,
            n.availability,
            n.state,
            n.tasks,
            if labels.is_empty() {
                "-".to_owned()
            } else {
                labels.join(",")
            }
        ));
    }
    out
}

pub async fn list(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    caller.require_admin("list nodes")?;
    Ok(table(&services(gantry)?.nodes().await?))
}

/// `KEY=VALUE` sets a label, `KEY=` removes it.
pub fn parse_labels(labels: &[String]) -> anyhow::Result<Vec<(String, Option<String>)>> {
    if labels.is_empty() {
        anyhow::bail!("give at least one label: KEY=VALUE (KEY= removes it)");
    }
    labels
        .iter()
        .map(|label| {
            let (key, value) = label.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("{label:?}: expected KEY=VALUE (KEY= removes it)")
            })?;
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid {
                anyhow::bail!("{key:?} is not a label name: letters, digits, '.', '_' and '-'");
            }
            Ok((
                key.to_owned(),
                (!value.is_empty()).then(|| value.to_owned()),
            ))
        })
        .collect()
}

pub async fn label(
    gantry: &Gantry,
    caller: &Caller,
    node: &str,
    labels: &[String],
) -> anyhow::Result<String> {
    caller.require_admin("label nodes")?;
    let changes = parse_labels(labels)?;
    let node = services(gantry)?.update_node(node, &changes, None).await?;
    Ok(table(&[node]))
}

pub async fn drain(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    caller.require_admin("drain nodes")?;
    let services = services(gantry)?;
    let total = |nodes: &[Node]| nodes.iter().map(|n| n.tasks).sum::<usize>();
    let before = total(&services.nodes().await?);
    let node = services
        .update_node(name, &[], Some(Availability::Drain))
        .await?;
    let had = node.tasks;
    // Swarm moves the tasks: wait until the node runs none and their
    // replacements run elsewhere.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut left, mut running) = (had, 0);
    while (left > 0 || running < before) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let nodes = services.nodes().await?;
        left = nodes
            .iter()
            .find(|n| n.id == node.id)
            .map_or(0, |n| n.tasks);
        running = total(&nodes);
    }
    if left > 0 || running < before {
        anyhow::bail!(
            "{} is drained, but after 120s {left} task(s) still run there and {running} of {before} run in all",
            node.hostname
        );
    }
    Ok(format!(
        "{} drained: takes no tasks; its {had} task(s) run on other nodes\n",
        node.hostname
    ))
}

pub async fn activate(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    caller.require_admin("activate nodes")?;
    let services = services(gantry)?;
    let node = services
        .update_node(name, &[], Some(Availability::Active))
        .await?;
    // Swarm leaves tasks where they are; replacing them one at a time
    // spreads them over every active node again.
    let mut lines = String::new();
    let spread = services
        .respread(&mut |line: &str| {
            lines.push_str("  ");
            lines.push_str(line);
            lines.push('\n');
        })
        .await?;
    Ok(format!(
        "{} active; re-spread {} service(s) over the nodes{}\n",
        node.hostname,
        spread.len(),
        if spread.is_empty() {
            String::new()
        } else {
            format!(": {}", spread.join(", "))
        }
    ))
}

/// The command a new machine runs to join.
pub async fn token(gantry: &Gantry, caller: &Caller) -> anyhow::Result<String> {
    caller.require_admin("see the join token")?;
    let join = services(gantry)?.join_info().await?;
    let (host, _) = join
        .manager
        .rsplit_once(':')
        .unwrap_or((join.manager.as_str(), ""));
    let swarm = &gantry.config.swarm;
    let registry = swarm
        .registry_url
        .clone()
        .unwrap_or_else(|| format!("http://{host}:{}", swarm.registry_listen.port()));
    Ok(format!(
        "gantry node:join --token {} --manager {} --registry {registry} --database-url {}\n",
        join.token, join.manager, gantry.config.database_url
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_set_remove_and_refuse_what_is_not_a_label() {
        let parsed = parse_labels(&["gpu=1".into(), "zone=".into()]).expect("labels");
        assert_eq!(
            parsed,
            [
                ("gpu".to_owned(), Some("1".to_owned())),
                ("zone".to_owned(), None)
            ]
        );
        assert!(parse_labels(&[]).is_err());
        assert!(parse_labels(&["gpu".into()]).is_err());
        assert!(parse_labels(&["=1".into()]).is_err());
        assert!(parse_labels(&["a b=1".into()]).is_err());
    }
}
