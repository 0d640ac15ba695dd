//! The records the store keeps. Plain data: no behaviour beyond parsing their
//! enums from the strings the database holds.

use crate::names::{AppName, KeyName};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Anything, on every app.
    Admin,
    /// Push to and manage only the apps listed on the key.
    Deployer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Deployer => "deployer",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        match raw {
            "admin" => Some(Role::Admin),
            "deployer" => Some(Role::Deployer),
            _ => None,
        }
    }
}

/// A registered SSH key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: KeyName,
    /// Canonical OpenSSH form, `ALGORITHM BASE64`, without a comment.
    pub public_key: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    pub role: Role,
    /// The apps a deployer may touch; empty for admins.
    pub apps: Vec<AppName>,
}

impl KeyRecord {
    /// Whether this key may push to and manage `app`.
    pub fn may_manage(&self, app: &AppName) -> bool {
        self.role == Role::Admin || self.apps.contains(app)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub name: AppName,
    /// The branch whose pushes deploy; `None` means `main` or `master`.
    pub deploy_branch: Option<String>,
    pub current_release: Option<i64>,
    pub created_at: i64,
    /// The app's config vars, sealed (empty: none).
    pub config: String,
    /// How many releases' images to keep; `None`: the default.
    pub keep_releases: Option<i64>,
    /// Process counts as JSON (empty: one web); see `manifest::formation`.
    pub formation: String,
    /// Stopped with `ps:stop`: no containers run until `ps:start` or a deploy.
    pub stopped: bool,
    /// Plain HTTP redirects to HTTPS once the app's host has a certificate.
    pub https_redirect: bool,
    /// The stack (Debian suite) builds use; `None`: never built, the default.
    pub stack: Option<String>,
    /// Mounts, one `SOURCE:/path` per line (see `storage`).
    pub storage: String,
    /// Limits, one `TYPE memory=BYTES cpus=N` per line (see `resources`).
    pub resources: String,
}

impl AppRecord {
    /// Whether a push to `refname` (e.g. `refs/heads/main`) deploys.
    pub fn deploys(&self, refname: &str) -> bool {
        let Some(branch) = refname.strip_prefix("refs/heads/") else {
            return false;
        };
        match &self.deploy_branch {
            Some(configured) => branch == configured,
            None => branch == "main" || branch == "master",
        }
    }
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseStatus {
    Building,
    Failed,
    Succeeded,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Building => "building",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Succeeded => "succeeded",
        }
    }

    pub fn parse(raw: &str) -> Option<ReleaseStatus> {
        match raw {
            "building" => Some(ReleaseStatus::Building),
            "failed" => Some(ReleaseStatus::Failed),
            "succeeded" => Some(ReleaseStatus::Succeeded),
            _ => None,
        }
    }
}

/// What made a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseKind {
    /// A push: new code.
    Deploy,
    /// A config change: the current image with new config vars.
    Config,
    /// An older release's image and config, put live again.
    Rollback,
    /// The same slug on a freshly built stack (`stack:rebase`).
    Rebase,
}

impl ReleaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseKind::Deploy => "deploy",
            ReleaseKind::Config => "config",
            ReleaseKind::Rollback => "rollback",
            ReleaseKind::Rebase => "rebase",
        }
    }

    pub fn parse(raw: &str) -> Option<ReleaseKind> {
        match raw {
            "deploy" => Some(ReleaseKind::Deploy),
            "rebase" => Some(ReleaseKind::Rebase),
            "config" => Some(ReleaseKind::Config),
            "rollback" => Some(ReleaseKind::Rollback),
            _ => None,
        }
    }
}

/// One numbered attempt to put a commit live (`vN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub app: AppName,
    pub version: i64,
    pub status: ReleaseStatus,
    /// Image tag, `gantry/APP:vN`.
    pub image: String,
    pub commit_sha: String,
    pub commit_message: String,
    pub commit_author: String,
    /// The port the web process listens on (`PORT`).
    pub port: u16,
    /// The name of the key that pushed.
    pub created_by: String,
    pub created_at: i64,
    pub build_ms: i64,
    pub build_log: String,
    /// Why it failed; empty otherwise.
    pub error: String,
    /// The config vars it runs with, sealed (empty: none).
    pub config: String,
    pub kind: ReleaseKind,
    /// One line: `Deploy 1a2b3c4`, `Set FOO, BAR`, `Rollback to v3`.
    pub description: String,
    /// The image's content id (`sha256:…`).
    pub image_id: String,
    /// The image's size in bytes.
    pub image_size: i64,
    /// The formation it went live with (JSON, as the app stores it).
    pub formation: String,
    /// Its Procfile and app.json (JSON; see `manifest`).
    pub manifest: String,
}

/// A dashboard login token or session, by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebToken {
    pub id: String,
    pub kind: String,
    /// The key it acts as; empty for the host's local admin.
    pub key_name: String,
    pub csrf: String,
    pub expires_at: i64,
}

/// An app's add-on (`addons:create`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddonRecord {
    pub app: AppName,
    /// `postgres`.
    pub kind: String,
    /// What it was made with, sealed (see `addons`).
    pub secret: String,
    pub created_at: i64,
}
