//! The process formation: how many containers of each process type an app runs
//! (`ps:scale web=3`). Stored per app as JSON; an app that was never scaled runs
//! one `web`.

use std::collections::BTreeMap;

/// The most replicas of one process type on this single host.
pub const MAX_REPLICAS: u32 = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormationError {
    #[error("{0:?} is not TYPE=COUNT (e.g. web=3)")]
    NotAssignment(String),
    #[error("invalid count {count:?} for {process}: give a number from 0 to {MAX_REPLICAS}")]
    BadCount { process: String, count: String },
    #[error("unknown process type {0:?}: this app's process types are {1} (others come from a Procfile)")]
    UnknownType(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formation(BTreeMap<String, u32>);

impl Default for Formation {
    fn default() -> Self {
        Formation(BTreeMap::from([("web".to_owned(), 1)]))
    }
}

impl Formation {
    /// Reads the stored form; empty or unreadable means the default.
    pub fn from_stored(stored: &str) -> Formation {
        serde_json::from_str(stored)
            .map(Formation)
            .unwrap_or_default()
    }

    pub fn to_stored(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }

    /// How many web replicas to run.
    pub fn web(&self) -> u32 {
        self.0.get("web").copied().unwrap_or(0)
    }

    /// How many of `process` to run: the scaled count, else `default`.
    pub fn count(&self, process: &str, default: u32) -> u32 {
        self.0.get(process).copied().unwrap_or(default)
    }

    /// Parses `TYPE=COUNT`; `process_types` are the types the app has.
    pub fn parse_assignment(
        raw: &str,
        process_types: &[&str],
    ) -> Result<(String, u32), FormationError> {
        let (process, count) = raw
            .split_once('=')
            .ok_or_else(|| FormationError::NotAssignment(raw.to_owned()))?;
        if !process_types.contains(&process) {
            return Err(FormationError::UnknownType(
                process.to_owned(),
                process_types.join(", "),
            ));
        }
        let n = count
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_REPLICAS)
            .ok_or_else(|| FormationError::BadCount {
                process: process.to_owned(),
                count: count.to_owned(),
            })?;
        Ok((process.to_owned(), n))
    }

    pub fn set(&mut self, process: String, count: u32) {
        self.0.insert(process, count);
    }

    /// `web=3`
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_and_storage() {
        let types = ["web"];
        assert_eq!(
            Formation::parse_assignment("web=3", &types),
            Ok(("web".into(), 3))
        );
        assert_eq!(
            Formation::parse_assignment("web=0", &types),
            Ok(("web".into(), 0))
        );
        for bad in ["web=-1", "web=x", "web=21", "web="] {
            assert!(
                matches!(
                    Formation::parse_assignment(bad, &types),
                    Err(FormationError::BadCount { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            Formation::parse_assignment("web", &types),
            Err(FormationError::NotAssignment(_))
        ));
        assert!(matches!(
            Formation::parse_assignment("worker=1", &types),
            Err(FormationError::UnknownType(..))
        ));

        let mut f = Formation::from_stored("");
        assert_eq!(f.web(), 1);
        f.set("web".into(), 3);
        let back = Formation::from_stored(&f.to_stored());
        assert_eq!(back.web(), 3);
        assert_eq!(back.describe(), "web=3");
        assert_eq!((back.count("web", 1), back.count("worker", 2)), (3, 2));
    }
}
