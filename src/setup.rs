//! Opening a gantry: the shared context, plus what is chosen above the job
//! system: gantry's own jobs that other parts do (`gantry.certs`,
//! `gantry.stack-refresh`). The CLI and
//! `serve` both open gantry here, so both see the same jobs.

use std::sync::Arc;

use crate::config::Config;
use crate::context::Gantry;

/// The context, with gantry's own jobs registered.
pub async fn open(config: Config) -> anyhow::Result<Gantry> {
    let mut gantry = Gantry::open(config).await?;
    gantry.upkeep.push(Arc::new(crate::acme::CertsJob));
    gantry
        .upkeep
        .push(Arc::new(crate::stack_refresh::StackRefreshJob));
    gantry.upkeep.push(Arc::new(crate::backup::BackupJob));
    gantry
        .app_upkeep
        .push(Arc::new(crate::addons::PostgresBackups));
    Ok(gantry)
}
