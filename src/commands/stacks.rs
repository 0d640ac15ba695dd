//! `stacks`, `stack:set`, `apps:info`: which stack and runtimes an app builds on.

use crate::access::Caller;
use crate::build::stack::{self, Suite};
use crate::context::Gantry;
use crate::names::AppName;
use crate::time::{format_age, parse_rfc3339};

/// Image labels a buildpack build records its runtimes under
/// (`gantry.runtime.python=3.13.5`).
pub const LABEL_RUNTIME: &str = "gantry.runtime.";

pub async fn list(gantry: &Gantry) -> anyhow::Result<String> {
    let stacks = stack::list(&gantry.docker).await;
    let apps = gantry.store.list_apps().await?;
    let now = crate::time::now_ms() / 1000;
    let mut out = format!(
        "{:<10} {:<9} {:<10} {:<5} {:<30} IMAGE\n",
        "STACK", "BUILT", "UPDATED", "APPS", "RUNTIMES"
    );
    for info in stacks {
        let users = apps
            .iter()
            .filter(|a| a.stack.as_deref() == Some(info.suite.name()))
            .count();
        let age = info
            .updated
            .as_deref()
            .and_then(parse_rfc3339)
            .map_or("-".to_owned(), |t| format!("{} ago", format_age(t, now)));
        let mut runtimes: Vec<String> = info
            .runtimes
            .iter()
            .map(|(lang, version)| format!("{lang} {version}"))
            .collect();
        // Debian runtimes gantry made for this stack on first need.
        for (lang, version) in crate::build::debian::made_for(&gantry.docker, info.suite).await {
            runtimes.push(format!("{lang} {version}"));
        }
        let default = if info.suite == stack::DEFAULT_SUITE {
            " (default)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{:<10} {:<9} {:<10} {:<5} {:<30} {}{default}\n",
            info.suite.name(),
            if info.built { "yes" } else { "no" },
            age,
            users,
            if runtimes.is_empty() {
                "-".to_owned()
            } else {
                runtimes.join(", ")
            },
            info.run_image,
        ));
    }
    if let Some(image) = &gantry.config.stack_image {
        out.push_str(&format!(
            "note: gantry.toml sets stack_image = {image:?}: every build uses that image\n"
        ));
    }
    out.push_str("build one with: sudo gantry stack:build SUITE\n");
    Ok(out)
}

pub async fn set(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
    suite: &str,
) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let suite = Suite::parse(suite)?;
    gantry.store.set_stack(&record.name, suite.name()).await?;
    let was = record
        .stack
        .as_deref()
        .unwrap_or(stack::DEFAULT_SUITE.name());
    Ok(format!(
        "{} is on stack {suite} from its next build on (was {was}); push to build on it\n",
        record.name
    ))
}

pub async fn rebase(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    crate::deploy::releases::rebase(gantry, &record, &caller.name()).await
}

/// The stack an app's next build uses.
pub fn stack_of(record: &crate::store::AppRecord) -> String {
    match &record.stack {
        Some(stack) => stack.clone(),
        None => format!(
            "{} (the default; fixed at the first build)",
            stack::DEFAULT_SUITE
        ),
    }
}

pub async fn info(gantry: &Gantry, caller: &Caller, name: &str) -> anyhow::Result<String> {
    let record = crate::access::managed_app(gantry, caller, name).await?;
    let app: &AppName = &record.name;
    let mut rows: Vec<(&str, String)> = vec![
        ("App", app.to_string()),
        ("URL", gantry.config.app_url(app)),
        ("Git remote", gantry.config.git_remote(app)),
        (
            "Deploy branch",
            record
                .deploy_branch
                .clone()
                .unwrap_or_else(|| "main or master".into()),
        ),
        ("Stack", stack_of(&record)),
    ];
    let domains: Vec<String> = gantry
        .store
        .list_domains()
        .await?
        .into_iter()
        .filter(|(owner, _)| owner == app.as_str())
        .map(|(_, host)| host)
        .collect();
    rows.push((
        "Domains",
        if domains.is_empty() {
            "-".into()
        } else {
            domains.join(", ")
        },
    ));
    match gantry.store.current_release(app).await? {
        Some(release) => {
            rows.push((
                "Release",
                format!("v{} ({})", release.version, release.image),
            ));
            let labels = gantry
                .docker
                .inspect_image(&release.image)
                .await
                .ok()
                .and_then(|i| i.config)
                .and_then(|c| c.labels)
                .unwrap_or_default();
            let mut runtimes: Vec<String> = labels
                .iter()
                .filter_map(|(k, v)| Some(format!("{} {v}", k.strip_prefix(LABEL_RUNTIME)?)))
                .collect();
            runtimes.sort();
            if let Some(built_on) = labels.get(stack::LABEL_SUITE) {
                rows.push(("Built on", built_on.clone()));
            }
            rows.push((
                "Runtimes",
                if runtimes.is_empty() {
                    "- (a Dockerfile build, or none recorded)".into()
                } else {
                    runtimes.join(", ")
                },
            ));
            let manifest = crate::manifest::Manifest::from_stored(&release.manifest);
            let formation = crate::manifest::formation::Formation::from_stored(&record.formation);
            let processes: Vec<String> = manifest
                .process_types()
                .iter()
                .map(|p| {
                    let default = u32::from(p == "web");
                    format!("{p}={}", formation.count(p, default))
                })
                .collect();
            rows.push(("Processes", processes.join(" ")));
        }
        None => rows.push(("Release", "none yet: push to deploy".into())),
    }
    if record.stopped {
        rows.push(("State", "stopped (ps:start starts it)".into()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    Ok(rows
        .into_iter()
        .map(|(k, v)| format!("{:width$} {v}\n", format!("{k}:")))
        .collect())
}
