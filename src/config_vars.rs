//! An app's config vars (Heroku's `config:set`): the environment its processes
//! get, sealed with [`Secrets`] whenever it is stored.

use std::collections::BTreeMap;

use crate::secrets::{Secrets, SecretsError};
use crate::store::Release;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigVarError {
    #[error("{0:?} is not KEY=VALUE")]
    NotAssignment(String),
    #[error("invalid config var name {0:?}: names are letters, digits and '_', not starting with a digit")]
    BadName(String),
    #[error("the value of {0} is not base64 (config:set --encoded takes each value base64-encoded): {1}")]
    NotBase64(String, String),
    #[error("the value of {0} decodes to bytes that are not UTF-8 text")]
    NotText(String),
    #[error(
        "PORT is set by gantry (the port the web process listens on); it cannot be a config var"
    )]
    Port,
}

/// Config var names and values, sorted by name.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigVars(BTreeMap<String, String>);

impl ConfigVars {
    /// Checks a name: `^[A-Za-z_][A-Za-z0-9_]*$`, and not `PORT`.
    pub fn check_name(name: &str) -> Result<(), ConfigVarError> {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(ConfigVarError::BadName(name.to_owned()));
        }
        if name == "PORT" {
            return Err(ConfigVarError::Port);
        }
        Ok(())
    }

    /// Parses `KEY=VALUE` (the value may be empty and may contain `=`).
    pub fn parse_assignment(raw: &str) -> Result<(String, String), ConfigVarError> {
        let (name, value) = raw
            .split_once('=')
            .ok_or_else(|| ConfigVarError::NotAssignment(raw.to_owned()))?;
        Self::check_name(name)?;
        Ok((name.to_owned(), value.to_owned()))
    }

    /// `KEY=BASE64` as Dokku's `config:set --encoded` takes it: the way to
    /// pass a value with newlines, quotes or spaces through an SSH command line.
    pub fn parse_encoded_assignment(raw: &str) -> Result<(String, String), ConfigVarError> {
        use base64::Engine;
        let (name, encoded) = Self::parse_assignment(raw)?;
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let bytes = engine
            .decode(encoded.trim())
            .map_err(|e| ConfigVarError::NotBase64(name.clone(), e.to_string()))?;
        let value = String::from_utf8(bytes).map_err(|_| ConfigVarError::NotText(name.clone()))?;
        Ok((name, value))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn set(&mut self, name: String, value: String) {
        self.0.insert(name, value);
    }

    /// Removes `name`; returns whether it was set.
    pub fn unset(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The names whose value differs between `self` and `other` (added,
    /// changed or removed): what a release page may show, never the values.
    pub fn changed_names(&self, other: &ConfigVars) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .iter()
            .filter(|(k, v)| other.0.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(other.0.keys().filter(|k| !self.0.contains_key(*k)).cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The container environment: every var, then `PORT`.
    pub fn to_env(&self, port: u16) -> Vec<String> {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain([format!("PORT={port}")])
            .collect()
    }

    /// Sealed for storage; an empty set is stored as an empty string.
    pub fn seal(&self, secrets: &Secrets) -> Result<String, SecretsError> {
        if self.is_empty() {
            return Ok(String::new());
        }
        let json = serde_json::to_vec(&self.0).map_err(|_| SecretsError::Open)?;
        secrets.seal(&json)
    }

    pub fn open(sealed: &str, secrets: &Secrets) -> Result<ConfigVars, SecretsError> {
        if sealed.is_empty() {
            return Ok(ConfigVars::default());
        }
        let json = secrets.open(sealed)?;
        serde_json::from_slice(&json)
            .map(ConfigVars)
            .map_err(|_| SecretsError::Open)
    }
}

/// The environment a process of `release` gets: its config vars and `PORT`.
pub fn release_env(release: &Release, secrets: &Secrets) -> Result<Vec<String>, SecretsError> {
    Ok(ConfigVars::open(&release.config, secrets)?.to_env(release.port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        assert_eq!(
            ConfigVars::parse_assignment("URL=postgres://a?b=c"),
            Ok(("URL".into(), "postgres://a?b=c".into()))
        );
        assert_eq!(
            ConfigVars::parse_assignment("EMPTY="),
            Ok(("EMPTY".into(), String::new()))
        );
        assert!(matches!(
            ConfigVars::parse_assignment("NOEQUALS"),
            Err(ConfigVarError::NotAssignment(_))
        ));
        assert_eq!(
            ConfigVars::parse_encoded_assignment("KEY=bGluZSAxCmxpbmUgIjIiICdx"),
            Ok(("KEY".into(), "line 1\nline \"2\" 'q".into()))
        );
        assert_eq!(
            ConfigVars::parse_encoded_assignment("E="),
            Ok(("E".into(), String::new()))
        );
        assert!(matches!(
            ConfigVars::parse_encoded_assignment("KEY=not base64!"),
            Err(ConfigVarError::NotBase64(..))
        ));
        assert!(matches!(
            ConfigVars::parse_encoded_assignment("KEY=/w=="),
            Err(ConfigVarError::NotText(_))
        ));
        for bad in ["1X=a", "A-B=a", "=a", "A B=c"] {
            assert!(
                matches!(
                    ConfigVars::parse_assignment(bad),
                    Err(ConfigVarError::BadName(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            ConfigVars::parse_assignment("PORT=1"),
            Err(ConfigVarError::Port)
        );
    }

    #[test]
    fn changes_env_and_sealing() {
        let mut old = ConfigVars::default();
        old.set("A".into(), "1".into());
        old.set("B".into(), "2".into());
        let mut new = old.clone();
        new.set("A".into(), "changed".into());
        new.unset("B");
        new.set("C".into(), "3".into());
        assert_eq!(new.changed_names(&old), ["A", "B", "C"]);
        assert!(new.changed_names(&new).is_empty());
        assert_eq!(new.to_env(5000), ["A=changed", "C=3", "PORT=5000"]);

        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = Secrets::load_or_create(&dir.path().join("k")).expect("secrets");
        let sealed = new.seal(&secrets).expect("seal");
        assert!(!sealed.contains("changed"));
        assert_eq!(ConfigVars::open(&sealed, &secrets).expect("open"), new);
        assert_eq!(ConfigVars::default().seal(&secrets).expect("seal"), "");
        assert_eq!(
            ConfigVars::open("", &secrets).expect("open"),
            ConfigVars::default()
        );
    }
}
