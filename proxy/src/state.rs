//! The routes the proxy serves, as one JSON file it rewrites on every change
//! and reads on start: a proxy that restarts (or whose `serve` died) comes back
//! serving what it served before, without waiting to be told.
//!
//! Only data and the file: it knows nothing of the live route table, which
//! makes itself from these specs and back (see `routes`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Every route and alias.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Custom domain → the host whose route serves it.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

/// One host's route, as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub host: String,
    /// The app's name, for logs and error pages.
    pub name: String,
    #[serde(default)]
    pub backends: Vec<SocketAddr>,
    #[serde(default)]
    pub https_redirect: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a proxy state file: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

impl State {
    /// The state in `path`; empty if there is no such file yet.
    pub fn load(path: &Path) -> Result<State, StateError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    /// Writes the state to `path` atomically (a temporary file renamed over
    /// it), so a crash mid-write leaves the previous state, never half of one.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(std::io::Error::other(e)))?;
        std::fs::write(&tmp, text).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy/state.json");
        assert_eq!(State::load(&path).expect("load"), State::default());
        let mut state = State::default();
        state.routes.push(RouteSpec {
            host: "a.test".into(),
            name: "a".into(),
            backends: vec!["127.0.0.1:9000".parse().expect("addr")],
            https_redirect: true,
        });
        state
            .aliases
            .insert("shop.example.com".into(), "a.test".into());
        state.save(&path).expect("save");
        assert_eq!(State::load(&path).expect("load"), state);
        std::fs::write(&path, "{not json").expect("write");
        let err = State::load(&path).expect_err("garbage accepted");
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
