//! Bare repositories on disk, one per app, and the git processes that serve them.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::config::Config;
use crate::names::AppName;

/// `$GANTRY_HOME/repos/APP.git`
pub fn repo_path(config: &Config, app: &AppName) -> PathBuf {
    config.repos_dir().join(format!("{app}.git"))
}

/// Creates the app's bare repository if it does not exist yet.
pub async fn ensure_repo(config: &Config, app: &AppName) -> std::io::Result<PathBuf> {
    let path = repo_path(config, app);
    if path.join("HEAD").exists() {
        return Ok(path);
    }
    tokio::fs::create_dir_all(config.repos_dir()).await?;
    let output = Command::new("git")
        .args(["init", "--quiet", "--bare", "--initial-branch=main"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .await?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!(
            "git init failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(path)
}

/// The commit `refname` points at in the repository, if the ref exists.
pub fn ref_target(repo: &Path, refname: &str) -> Result<Option<String>, String> {
    let repo = gix::open_opts(repo, gix::open::Options::isolated()).map_err(|e| e.to_string())?;
    let found = repo
        .try_find_reference(refname)
        .map_err(|e| e.to_string())?;
    Ok(found.and_then(|r| r.target().try_id().map(|id| id.to_string())))
}

/// The hooks directory every repository uses (`core.hooksPath`).
pub fn hooks_dir(config: &Config) -> PathBuf {
    config.home.join("hooks")
}

/// Writes the pre-receive hook, which hands each push to this very binary.
pub fn install_hooks(config: &Config) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()?;
    let dir = hooks_dir(config);
    std::fs::create_dir_all(&dir)?;
    let hook = dir.join("pre-receive");
    let script = format!(
        "#!/bin/sh\n# Written by gantry serve: hands the push to the server (see `gantry hook`).\nexec {} hook pre-receive\n",
        shell_quote(&exe)
    );
    std::fs::write(&hook, script)?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `git receive-pack` for a push, with the hook pointed at gantry.
pub fn receive_pack(config: &Config, repo: &Path, token: &str) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg(format!("core.hooksPath={}", hooks_dir(config).display()))
        .arg("receive-pack")
        .arg(repo)
        .env("GANTRY_PUSH_TOKEN", token)
        .env("GANTRY_SOCKET", config.socket_path());
    cmd
}

/// `git upload-pack` for a clone or fetch.
pub fn upload_pack(repo: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("upload-pack").arg(repo);
    cmd
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
