//! An app's resource limits per process type: memory and CPUs, as Dokku's
//! `resource:limit` and Heroku's dyno sizes give them. Stored on the app one
//! process type per line, `TYPE memory=BYTES cpus=N`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourcesError {
    #[error("{0:?} is not a memory size: a number with k, m or g (512m, 1.5g), at least 6m")]
    Memory(String),
    #[error("{0:?} is not a number of CPUs: a positive number such as 0.5 or 2")]
    Cpus(String),
    #[error("unknown limit {0:?}: memory=SIZE and cpus=N are the ones there are (0 or none removes one)")]
    Unknown(String),
}

/// The limits of one process type; `None`: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Bytes; swap is not allowed beyond it.
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
}

impl Limits {
    /// Applies `memory=512m cpus=1.5` settings over these (0 or `none`
    /// removes a limit).
    pub fn set(&mut self, settings: &[String]) -> Result<(), ResourcesError> {
        for setting in settings {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| ResourcesError::Unknown(setting.clone()))?;
            let off = value == "0" || value.eq_ignore_ascii_case("none");
            match key {
                "memory" => {
                    self.memory = if off {
                        None
                    } else {
                        Some(parse_memory(value)?)
                    }
                }
                "cpus" => self.cpus = if off { None } else { Some(parse_cpus(value)?) },
                _ => return Err(ResourcesError::Unknown(key.to_owned())),
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none()
    }

    /// The engine's CPU quota in billionths of a CPU.
    pub fn nano_cpus(&self) -> Option<i64> {
        self.cpus.map(|c| (c * 1e9).round() as i64)
    }

    /// `memory=512m cpus=1.5`, or `unlimited`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(bytes) = self.memory {
            parts.push(format!("memory={}", human_memory(bytes)));
        }
        if let Some(cpus) = self.cpus {
            parts.push(format!("cpus={cpus}"));
        }
        if parts.is_empty() {
            "unlimited".into()
        } else {
            parts.join(" ")
        }
    }
}

fn parse_memory(text: &str) -> Result<i64, ResourcesError> {
    let bad = || ResourcesError::Memory(text.to_owned());
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (number, unit) = match lower.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * scale;
    // Docker refuses less than 6 MB.
    if !bytes.is_finite() || !(6.0 * 1024.0 * 1024.0..=1e15).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as i64)
}

fn parse_cpus(text: &str) -> Result<f64, ResourcesError> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| ResourcesError::Cpus(text.to_owned()))?;
    if !value.is_finite() || !(0.01..=1024.0).contains(&value) {
        return Err(ResourcesError::Cpus(text.to_owned()));
    }
    Ok(value)
}

/// `512m`, `1.5g`.
pub fn human_memory(bytes: i64) -> String {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        let gib = mib / 1024.0;
        format!("{}g", trim_number(gib))
    } else {
        format!("{}m", trim_number(mib))
    }
}

fn trim_number(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Every process type's limits, as the app stores them.
pub fn parse_stored(stored: &str) -> BTreeMap<String, Limits> {
    let mut all = BTreeMap::new();
    for line in stored.lines() {
        let mut parts = line.split_whitespace();
        let Some(process) = parts.next() else {
            continue;
        };
        let mut limits = Limits::default();
        for part in parts {
            match part.split_once('=') {
                Some(("memory", v)) => limits.memory = v.parse().ok(),
                Some(("cpus", v)) => limits.cpus = v.parse().ok(),
                _ => {}
            }
        }
        if !limits.is_empty() {
            all.insert(process.to_owned(), limits);
        }
    }
    all
}

/// The stored form.
pub fn to_stored(all: &BTreeMap<String, Limits>) -> String {
    let mut out = String::new();
    for (process, limits) in all {
        if limits.is_empty() {
            continue;
        }
        out.push_str(process);
        if let Some(memory) = limits.memory {
            out.push_str(&format!(" memory={memory}"));
        }
        if let Some(cpus) = limits.cpus {
            out.push_str(&format!(" cpus={cpus}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_like_docker_flags_and_round_trip() {
        let mut limits = Limits::default();
        limits
            .set(&["memory=512m".into(), "cpus=1.5".into()])
            .expect("set");
        assert_eq!(limits.memory, Some(512 * 1024 * 1024));
        assert_eq!(limits.nano_cpus(), Some(1_500_000_000));
        assert_eq!(limits.describe(), "memory=512m cpus=1.5");
        limits.set(&["memory=1.5G".into()]).expect("set");
        assert_eq!(limits.describe(), "memory=1.5g cpus=1.5");
        limits.set(&["cpus=0".into()]).expect("unset");
        assert_eq!(limits.cpus, None);
        for bad in [
            "memory=lots",
            "memory=1k",
            "cpus=-1",
            "cpus=many",
            "disk=1g",
            "memory",
        ] {
            assert!(Limits::default().set(&[bad.into()]).is_err(), "{bad}");
        }
        let all = BTreeMap::from([
            ("web".to_owned(), limits),
            ("worker".to_owned(), Limits::default()),
        ]);
        let again = parse_stored(&to_stored(&all));
        assert_eq!(again.len(), 1);
        assert_eq!(again["web"], limits);
    }
}
