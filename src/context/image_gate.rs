//! The engine's image store is shared by builds, which reuse cached layers,
//! and pruning, which deletes them: builds read-lock this gate and image
//! removals write-lock it, so a prune never deletes a layer a build is about
//! to use.

pub static IMAGE_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());
