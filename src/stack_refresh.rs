//! `gantry.stack-refresh`: the weekly job that rebuilds the stacks, so
//! Debian's security updates reach the stacks, and then lists the apps whose
//! live release sits on an outdated one, or, with `[stack] auto_rebase = true`,
//! rebases them (`stack:rebase`: the same slug on the new stack, no rebuild).

use std::collections::BTreeSet;
use std::io::Write;

use crate::build::stack::{self, Suite};
use crate::context::Gantry;
use crate::deploy::releases;

/// The job's name, as `jobs` lists it.
pub const STACK_REFRESH_JOB: &str = "gantry.stack-refresh";

pub struct StackRefreshJob;

#[async_trait::async_trait]
impl crate::context::Upkeep for StackRefreshJob {
    fn name(&self) -> &'static str {
        STACK_REFRESH_JOB
    }

    fn schedule(&self) -> &'static str {
        // Sundays at 04:23.
        "23 4 * * 0"
    }

    fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3 * 3600)
    }

    fn enabled(&self, config: &crate::config::Config) -> bool {
        // A configured stack_image is not gantry's to rebuild.
        config.stack_image.is_none()
    }

    async fn run(
        &self,
        gantry: &Gantry,
        log: &mut std::fs::File,
        _artifacts: &std::path::Path,
    ) -> anyhow::Result<()> {
        refresh(gantry, log).await
    }
}

/// The suites to rebuild: the default, every one an app is on, every one built.
async fn suites_in_use(gantry: &Gantry) -> anyhow::Result<BTreeSet<&'static str>> {
    let mut suites = BTreeSet::from([stack::DEFAULT_SUITE.name()]);
    for app in gantry.store.list_apps().await? {
        if let Some(suite) = app.stack.as_deref().and_then(|s| Suite::parse(s).ok()) {
            suites.insert(suite.name());
        }
    }
    for info in stack::list(&gantry.docker).await {
        if info.built {
            suites.insert(info.suite.name());
        }
    }
    Ok(suites)
}

async fn refresh(gantry: &Gantry, log: &mut std::fs::File) -> anyhow::Result<()> {
    let config = &gantry.config;
    let mut failed = Vec::new();
    for name in suites_in_use(gantry).await? {
        let suite = Suite::parse(name)?;
        writeln!(log, "== rebuilding the {suite} stack")?;
        let mut lines = Vec::new();
        let built = stack::build(
            &gantry.docker,
            suite,
            &config.home,
            &config.stack_mirror,
            &mut |line| lines.push(line.to_owned()),
        )
        .await;
        for line in lines {
            writeln!(log, "{line}")?;
        }
        match built {
            Ok(built) => match built.upgraded {
                Some(n) => writeln!(log, "{suite}: {n} package(s) from -security and -updates")?,
                None => writeln!(log, "{suite}: Debian testing, no -security or -updates")?,
            },
            Err(err) => {
                writeln!(log, "{suite}: {err}")?;
                failed.push(format!("{suite}: {err}"));
            }
        }
    }
    writeln!(log, "== apps on an outdated stack")?;
    let mut outdated = 0;
    for record in gantry.store.list_apps().await? {
        let Some(current) = gantry.store.current_release(&record.name).await? else {
            continue;
        };
        let Some(suite) = releases::built_on(gantry, &current.image).await else {
            continue;
        };
        let target = match releases::rebase_target(gantry, &current.image, suite).await {
            Ok(target) => target,
            Err(err) => {
                writeln!(log, "{}: cannot tell its stack: {err:#}", record.name)?;
                failed.push(format!("checking {}: {err:#}", record.name));
                continue;
            }
        };
        if releases::on_current_stack(gantry, &current.image, &target)
            .await
            .unwrap_or(true)
        {
            continue;
        }
        outdated += 1;
        if config.stack.auto_rebase {
            match releases::rebase(gantry, &record, STACK_REFRESH_JOB).await {
                Ok(text) => write!(log, "{}: {text}", record.name)?,
                Err(err) => {
                    writeln!(log, "{}: {err}", record.name)?;
                    failed.push(format!("rebasing {}: {err}", record.name));
                }
            }
        } else {
            writeln!(
                log,
                "{} v{} is on an outdated {suite} stack: stack:rebase {} (or [stack] auto_rebase = true)",
                record.name, current.version, record.name
            )?;
        }
    }
    if outdated == 0 {
        writeln!(log, "none: every app is on its stack's current image")?;
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failed.join("; "))
    }
}
