//! Who may do what. A [`Caller`] is the local admin or a registered SSH key;
//! the CLI, the SSH endpoint and the dashboard all ask it the same questions,
//! so a permission rule is written once, below all three. [`keys`] turns an
//! OpenSSH public key into the record a key is known by; [`login`] gives a key
//! a dashboard session.

pub mod keys;
pub mod login;

use crate::context::Gantry;
use crate::names::AppName;
use crate::store::{AppRecord, KeyRecord, Role, StoreError};

/// Who runs a command; decides what it may do.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The server's own user on the host: an admin.
    Local,
    Key(KeyRecord),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::Local => true,
            Caller::Key(key) => key.role == Role::Admin,
        }
    }

    pub fn may_manage(&self, app: &AppName) -> bool {
        match self {
            Caller::Local => true,
            Caller::Key(key) => key.may_manage(app),
        }
    }

    /// Who is recorded as having made a change.
    pub fn name(&self) -> String {
        match self {
            Caller::Local => "local".into(),
            Caller::Key(key) => key.name.to_string(),
        }
    }

    pub fn require_admin(&self, what: &str) -> anyhow::Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            anyhow::bail!("permission denied: only admin keys may {what}")
        }
    }

    pub fn require_app(&self, app: &AppName) -> anyhow::Result<()> {
        if self.may_manage(app) {
            Ok(())
        } else {
            anyhow::bail!("permission denied: this key may not manage app {app}")
        }
    }

    /// Whether `caller` may see and run `job`: an app's jobs (`APP/...`) go with
    /// the app, host jobs and gantry's own with admin rights.
    pub fn may_use_job(&self, job: &str) -> bool {
        match job.split_once('/') {
            Some((app, _)) => AppName::parse(app).is_ok_and(|app| self.may_manage(&app)),
            None => self.is_admin(),
        }
    }
}

/// The app `name` names, if `caller` may manage it and it exists.
pub async fn managed_app(
    gantry: &Gantry,
    caller: &Caller,
    name: &str,
) -> anyhow::Result<AppRecord> {
    let app = AppName::parse(name)?;
    caller.require_app(&app)?;
    Ok(gantry
        .store
        .get_app(&app)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("app {app}")))?)
}
