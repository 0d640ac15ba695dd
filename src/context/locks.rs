//! One lock per app: a push, a config change, a scale or a restore of an app
//! holds it, so two of them never interleave while different apps go side by side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::names::AppName;

/// One lock per app, so two pushes to the same app never interleave while
/// pushes to different apps run side by side.
#[derive(Debug, Default)]
pub struct AppLocks {
    locks: Mutex<HashMap<AppName, Arc<tokio::sync::Mutex<()>>>>,
}

impl AppLocks {
    pub fn get(&self, app: &AppName) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.clone())
            .or_default()
            .clone()
    }
}
