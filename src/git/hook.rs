//! `gantry hook pre-receive`: what `git receive-pack` runs before accepting refs.
//!
//! It does no work itself: it hands the ref updates and the location of the
//! pushed objects to `gantry serve` over the control socket, relays the server's
//! output (git shows it to the pusher as `remote:` lines), and exits with the
//! server's verdict; non-zero makes git reject the push.

use std::io::BufRead;
use std::path::PathBuf;

use crate::control;
use crate::control::protocol::{HookRequest, RefUpdate, Request};

pub async fn pre_receive() -> anyhow::Result<i32> {
    let token = std::env::var("GANTRY_PUSH_TOKEN").map_err(|_| {
        anyhow::anyhow!("this hook only runs under gantry serve (GANTRY_PUSH_TOKEN is not set)")
    })?;
    let socket = std::env::var_os("GANTRY_SOCKET")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("GANTRY_SOCKET is not set"))?;

    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let update = RefUpdate::parse(&line)
            .ok_or_else(|| anyhow::anyhow!("unexpected pre-receive input: {line:?}"))?;
        updates.push(update);
    }

    let cwd = std::env::current_dir()?;
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
    let mut object_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("GIT_OBJECT_DIRECTORY") {
        object_dirs.push(absolute(PathBuf::from(dir)));
    }
    if let Some(dirs) = std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
        object_dirs.extend(std::env::split_paths(&dirs).map(absolute));
    }
    let own = absolute(PathBuf::from("objects"));
    if !object_dirs.contains(&own) {
        object_dirs.push(own);
    }

    let stream = control::client::connect(&socket)
        .await
        .ok_or_else(|| anyhow::anyhow!("gantry serve is not reachable at {}", socket.display()))?;
    control::client::call(
        stream,
        &Request::Hook(HookRequest {
            token,
            updates,
            object_dirs,
        }),
    )
    .await
}
