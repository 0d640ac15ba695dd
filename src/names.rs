//! Validated names. Raw strings from users, SSH commands and git paths become
//! these types once, at the edge; everything downstream takes the type and never
//! re-checks (an `AppName` is always safe in a path, a Docker label or a host name).

use std::fmt;

/// Why a name was refused; the message states the rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("invalid app name {0:?}: app names start with a lowercase letter, then up to 29 lowercase letters, digits or '-' (^[a-z][a-z0-9-]{{0,29}}$)")]
    App(String),
    #[error("invalid release {0:?}: write it as vN or N, e.g. v3")]
    Release(String),
    #[error("invalid key name {0:?}: key names are 1 to 64 characters from letters, digits, '.', '_', '@' and '-'")]
    Key(String),
}

/// An app's name: `^[a-z][a-z0-9-]{0,29}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppName(String);

impl AppName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if first_ok && rest_ok && raw.len() <= 30 {
            Ok(AppName(raw.to_owned()))
        } else {
            Err(NameError::App(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a release version written `vN` or `N` (N ≥ 1).
pub fn parse_version(raw: &str) -> Result<i64, NameError> {
    raw.strip_prefix('v')
        .unwrap_or(raw)
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| NameError::Release(raw.to_owned()))
}

/// The name of a registered SSH key (who pushed, who changed what).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
        if ok {
            Ok(KeyName(raw.to_owned()))
        } else {
            Err(NameError::Key(raw.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_follow_the_rule() {
        for good in ["a", "web1", "my-app", "a23456789012345678901234567890"] {
            assert!(AppName::parse(good).is_ok(), "{good} refused");
        }
        let long = "a".repeat(31);
        for bad in [
            "",
            "A",
            "1app",
            "-x",
            "../x",
            "x;rm",
            "my_app",
            "app.git",
            "a b",
            long.as_str(),
        ] {
            let err = AppName::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("^[a-z][a-z0-9-]{0,29}$"), "{err}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v3"), Ok(3));
        assert_eq!(parse_version("12"), Ok(12));
        for bad in ["v0", "-1", "vv1", "x", ""] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_names() {
        assert!(KeyName::parse("alice@laptop").is_ok());
        assert!(KeyName::parse("").is_err());
        assert!(KeyName::parse("a b").is_err());
        assert!(KeyName::parse("../../etc").is_err());
    }
}
