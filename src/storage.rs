//! An app's storage: named volumes (or host directories) mounted into every
//! one of its containers, kept across deploys, restarts and rollbacks, as
//! Dokku's `storage:mount` does. Stored on the app one mount per line,
//! `SOURCE:/path`.

/// Paths a mount may not cover: the system's, the app's own tree (a volume
/// over `/app` would hide the slug) and gantry's.
const RESERVED: [&str; 14] = [
    "/", "/app", "/bin", "/boot", "/dev", "/etc", "/gantry", "/lib", "/lib64", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("expected NAME:/path (a volume name, or a host directory, then where the app sees it), got {0:?}")]
    Shape(String),
    #[error("{0:?} is not a volume name: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64")]
    Name(String),
    #[error("the mount path {0:?} is relative: it must start with / (say /app/storage or /data)")]
    Relative(String),
    #[error("the mount path {0:?} is reserved (the system's, gantry's, or /app itself, which holds the app): mount below it, such as /app/storage or /data")]
    Reserved(String),
    #[error("the mount path {0:?} has a '.', '..' or empty part")]
    Unclean(String),
    #[error("the host directory {0:?} is not an absolute, clean path")]
    HostPath(String),
    #[error("{0} is already mounted")]
    Taken(String),
}

/// Where a mount's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A named volume gantry keeps for the app (`gantry-vol-APP-NAME`).
    Volume(String),
    /// A directory on the host, bound as it is.
    Host(String),
}

/// One mount of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: Source,
    /// Where the app's processes see it.
    pub path: String,
}

impl Mount {
    /// Reads `NAME:/path` or `/host/dir:/path`, refusing what cannot be mounted.
    pub fn parse(text: &str) -> Result<Mount, StorageError> {
        let text = text.trim();
        let (source, path) = text
            .rsplit_once(':')
            .filter(|(s, p)| !s.is_empty() && !p.is_empty())
            .ok_or_else(|| StorageError::Shape(text.to_owned()))?;
        let path = check_path(path)?;
        let source = if source.starts_with('/') {
            if clean(source).is_none() {
                return Err(StorageError::HostPath(source.to_owned()));
            }
            Source::Host(source.to_owned())
        } else {
            let ok = source.len() <= 64
                && source
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && source
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            if !ok {
                return Err(StorageError::Name(source.to_owned()));
            }
            Source::Volume(source.to_owned())
        };
        Ok(Mount { source, path })
    }

    /// `NAME:/path`, as it is stored and shown.
    pub fn spec(&self) -> String {
        match &self.source {
            Source::Volume(name) | Source::Host(name) => format!("{name}:{}", self.path),
        }
    }

    /// What the engine mounts: the volume's full name, or the host directory.
    pub fn engine_source(&self, app: &str) -> String {
        match &self.source {
            Source::Volume(name) => volume_name(app, name),
            Source::Host(dir) => dir.clone(),
        }
    }
}

/// The engine's name for an app's volume.
pub fn volume_name(app: &str, name: &str) -> String {
    format!("gantry-vol-{app}-{name}")
}

/// Label on every volume gantry makes for an app.
pub const LABEL_APP: &str = "gantry.volume.app";

fn clean(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

fn check_path(path: &str) -> Result<String, StorageError> {
    if !path.starts_with('/') {
        return Err(StorageError::Relative(path.to_owned()));
    }
    if path == "/" {
        return Err(StorageError::Reserved(path.to_owned()));
    }
    let path = clean(path).ok_or_else(|| StorageError::Unclean(path.to_owned()))?;
    let covers = |reserved: &str| {
        reserved == "/" && path == "/"
            || path == reserved
            || reserved.starts_with(&format!("{path}/"))
    };
    let inside_system = |reserved: &str| {
        reserved != "/" && reserved != "/app" && path.starts_with(&format!("{reserved}/"))
    };
    if RESERVED.iter().any(|r| covers(r) || inside_system(r)) {
        return Err(StorageError::Reserved(path));
    }
    Ok(path)
}

/// The app's mounts, from what the store holds (one per line; a line that no
/// longer reads is skipped).
pub fn parse_stored(stored: &str) -> Vec<Mount> {
    stored
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| Mount::parse(l).ok())
        .collect()
}

/// The stored form of `mounts`.
pub fn to_stored(mounts: &[Mount]) -> String {
    mounts.iter().map(|m| m.spec() + "\n").collect()
}

/// `mounts` with `new` added: a path or a volume is mounted once.
pub fn with(mounts: &[Mount], new: Mount) -> Result<Vec<Mount>, StorageError> {
    if let Some(taken) = mounts
        .iter()
        .find(|m| m.path == new.path || m.source == new.source)
    {
        return Err(StorageError::Taken(taken.spec()));
    }
    let mut all = mounts.to_vec();
    all.push(new);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_named_volumes_or_host_directories_at_clean_paths() {
        let m = Mount::parse("data:/app/storage").expect("volume");
        assert_eq!(m.source, Source::Volume("data".into()));
        assert_eq!(m.path, "/app/storage");
        assert_eq!(m.engine_source("shop"), "gantry-vol-shop-data");
        let h = Mount::parse("/srv/shop/uploads:/data/").expect("host");
        assert_eq!(h.source, Source::Host("/srv/shop/uploads".into()));
        assert_eq!(h.spec(), "/srv/shop/uploads:/data");
        assert_eq!(
            Mount::parse("data:app/storage"),
            Err(StorageError::Relative("app/storage".into()))
        );
        for reserved in [
            "/",
            "/app",
            "/etc",
            "/usr/local",
            "/proc/x",
            "/gantry/lib",
            "/dev",
        ] {
            assert!(
                matches!(
                    Mount::parse(&format!("d:{reserved}")),
                    Err(StorageError::Reserved(_))
                ),
                "{reserved}"
            );
        }
        assert!(matches!(
            Mount::parse("d:/app/../etc"),
            Err(StorageError::Unclean(_))
        ));
        assert!(matches!(
            Mount::parse("Data:/x"),
            Err(StorageError::Name(_))
        ));
        assert!(matches!(
            Mount::parse("nocolon"),
            Err(StorageError::Shape(_))
        ));
        assert!(matches!(
            Mount::parse("/a/../b:/x"),
            Err(StorageError::HostPath(_))
        ));
        assert!(Mount::parse("d:/app/storage/sub").is_ok());
        assert!(Mount::parse("d:/var/lib/data").is_ok());
    }

    #[test]
    fn a_path_or_volume_is_mounted_once_and_survives_storage() {
        let one = vec![Mount::parse("data:/data").expect("mount")];
        assert!(matches!(
            with(&one, Mount::parse("other:/data").expect("mount")),
            Err(StorageError::Taken(_))
        ));
        let two = with(&one, Mount::parse("cache:/cache").expect("mount")).expect("add");
        assert_eq!(parse_stored(&to_stored(&two)), two);
    }
}
