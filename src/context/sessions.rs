//! The authenticated `git receive-pack` runs: a token each, which the
//! pre-receive hook presents on the control socket to prove which session
//! its push belongs to.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::OwnedMutexGuard;

use crate::names::{AppName, KeyName};

/// Who is pushing to which app, for one run of `git receive-pack`.
#[derive(Debug, Clone)]
pub struct PushSession {
    pub app: AppName,
    pub key: KeyName,
}

/// Tokens handed to `receive-pack` runs, so their hook can prove which
/// authenticated session it belongs to.
#[derive(Debug, Default)]
pub struct PushSessions {
    sessions: Mutex<HashMap<String, LiveSession>>,
}

/// A registered session and the app locks it holds until `receive-pack` exits.
type LiveSession = (PushSession, Vec<OwnedMutexGuard<()>>);

impl PushSessions {
    /// Registers a session and returns its token; drop the guard to forget it.
    pub fn register(&self, session: PushSession) -> SessionGuard<'_> {
        let token = random_token();
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), (session, Vec::new()));
        SessionGuard {
            sessions: self,
            token,
        }
    }

    /// Pushes in flight (their `receive-pack` runs).
    pub fn live(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn get(&self, token: &str) -> Option<PushSession> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .map(|(session, _)| session.clone())
    }

    /// Keeps `guard` (an app lock) until the session's `receive-pack` exits: git
    /// updates the ref only after the hook returns, and the next push to the app
    /// must see that update.
    pub fn hold_until_done(&self, token: &str, guard: OwnedMutexGuard<()>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, guards)) = sessions.get_mut(token) {
            guards.push(guard);
        }
    }
}

/// Forgets its session when dropped (when `receive-pack` has exited).
pub struct SessionGuard<'a> {
    sessions: &'a PushSessions,
    pub token: String,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.sessions
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
}

fn random_token() -> String {
    use rand::RngExt;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
