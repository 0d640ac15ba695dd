//! Runtimes from their upstream releases, for a host that reaches the
//! internet: Node.js from nodejs.org, Go from go.dev, CPython from
//! python-build-standalone. Fetched only when a buildpack found no runtime
//! for what an app asks for on its stack or in the host's store; each
//! download is checked against the sha256 its publisher lists, then added to
//! the store like `runtimes:add` (which checks the binary's own version), so
//! it is fetched once.
//!
//! A buildpack asks by writing one line to `/gantry/out/need` (`node 22.x`,
//! `go exact 1.22`, `go minimum 1.24.5`, `python 3.12`) and stopping; the
//! build runs again once the runtime is in the store.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::runtimes::{self, RuntimeError, Stored};

/// Where each language's releases are listed. `[runtimes]` in gantry.toml
/// may point these at a mirror of the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// nodejs.org's `dist` layout: `index.json`, `vVERSION/SHASUMS256.txt`.
    pub node_dist: String,
    /// go.dev's download page: `?mode=json&include=all`, files beside it.
    pub go_dist: String,
    /// A GitHub release of python-build-standalone, as the releases API
    /// answers it (its assets include `SHA256SUMS`).
    pub python_release: String,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            node_dist: "https://nodejs.org/dist".into(),
            go_dist: "https://go.dev/dl".into(),
            python_release:
                "https://api.github.com/repos/astral-sh/python-build-standalone/releases/latest"
                    .into(),
        }
    }
}

/// What a buildpack asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// An npm semver range (`engines.node`).
    Node { range: String },
    /// `exact`: this version or a patch of it; otherwise at least it.
    Go { version: String, exact: bool },
    /// `3.12` (any patch) or `3.12.4`.
    Python { version: String },
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Node { range } => write!(f, "Node.js \"{range}\""),
            Need::Go {
                version,
                exact: true,
            } => write!(f, "Go {version}"),
            Need::Go { version, .. } => write!(f, "Go {version} or newer"),
            Need::Python { version } => write!(f, "Python {version}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("a buildpack asked for a runtime gantry cannot fetch: {0:?}")]
    Need(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered something gantry cannot read: {reason}")]
    Unreadable { url: String, reason: String },
    #[error("no release of {need} for linux x86-64 is listed at {url}")]
    NoRelease { need: String, url: String },
    #[error("{file} is not in the checksums at {url}")]
    NoChecksum { file: String, url: String },
    #[error(transparent)]
    Store(#[from] RuntimeError),
    #[error("cannot write the download: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a buildpack's `/gantry/out/need` line.
pub fn parse_need(line: &str) -> Result<Need, UpstreamError> {
    let bad = || UpstreamError::Need(line.trim().to_owned());
    let (lang, rest) = line.trim().split_once(' ').ok_or_else(bad)?;
    let rest = rest.trim();
    let plain_version = |v: &str| {
        !v.is_empty()
            && v.split('.').count() <= 3
            && v.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    match lang {
        "node" if !rest.is_empty() => Ok(Need::Node {
            range: rest.to_owned(),
        }),
        "go" => {
            let (how, version) = rest.split_once(' ').ok_or_else(bad)?;
            let version = version.trim();
            if !plain_version(version) {
                return Err(bad());
            }
            let exact = match how {
                "exact" => true,
                "minimum" => false,
                _ => return Err(bad()),
            };
            Ok(Need::Go {
                version: version.to_owned(),
                exact,
            })
        }
        "python" if plain_version(rest) && rest.contains('.') => Ok(Need::Python {
            version: rest.to_owned(),
        }),
        _ => Err(bad()),
    }
}

/// Fetches what `need` asks for into the store at `home`; `on_line` hears
/// what the pusher should.
pub async fn fetch(
    home: &Path,
    sources: &Sources,
    need: &Need,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<Stored, UpstreamError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(600))
        .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Unreachable {
            url: "(no HTTP client)".into(),
            reason: e.to_string(),
        })?;
    let release = match need {
        Need::Node { range } => node_release(&client, &sources.node_dist, range).await?,
        Need::Go { version, exact } => {
            go_release(&client, &sources.go_dist, version, *exact).await?
        }
        Need::Python { version } => {
            python_release(&client, &sources.python_release, version).await?
        }
    };
    on_line(&format!(
        "-----> Fetching {} {} from {}",
        release.lang, release.version, release.url
    ));
    let downloads = runtimes::store_dir(home).join(".downloads");
    tokio::fs::create_dir_all(&downloads).await?;
    let file = downloads.join(&release.file);
    let result = async {
        download(&client, &release.url, &file).await?;
        let stored = runtimes::add(
            home,
            release.lang,
            &release.version,
            &file.display().to_string(),
            Some(&release.sha256),
        )
        .await?;
        on_line(&format!(
            "       {} {} is in the runtime store (sha256 {} as published)",
            stored.lang,
            stored.version,
            &stored.sha256[..16.min(stored.sha256.len())]
        ));
        Ok(stored)
    }
    .await;
    let _ = tokio::fs::remove_file(&file).await;
    result
}

/// One release file chosen for a need.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Release {
    lang: &'static str,
    version: String,
    url: String,
    file: String,
    sha256: String,
}

async fn get_text(client: &reqwest::Client, url: &str) -> Result<String, UpstreamError> {
    let unreachable = |e: reqwest::Error| UpstreamError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?
        .text()
        .await
        .map_err(unreachable)
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T, UpstreamError> {
    let text = get_text(client, url).await?;
    serde_json::from_str(&text).map_err(|e| UpstreamError::Unreadable {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

async fn download(client: &reqwest::Client, url: &str, to: &Path) -> Result<(), UpstreamError> {
    let unreachable = |e: reqwest::Error| UpstreamError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unreachable)?;
    let mut file = tokio::fs::File::create(to).await?;
    while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    Ok(())
}

/// The sha256 that a `SHASUMS256.txt`/`SHA256SUMS` lists for `file`.
fn checksum_of(sums: &str, file: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let sum = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        (name == file && sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| sum.to_ascii_lowercase())
    })
}

#[derive(Deserialize)]
struct NodeIndexEntry {
    version: String,
    #[serde(default)]
    files: Vec<String>,
}

/// The newest Node for linux-x64 in nodejs.org's index that satisfies `range`.
fn choose_node(index: &[NodeIndexEntry], range: &str) -> Result<Option<String>, String> {
    let range = nodejs_semver::Range::parse(range).map_err(|e| e.to_string())?;
    Ok(index
        .iter()
        .filter(|e| e.files.iter().any(|f| f == "linux-x64"))
        .filter_map(|e| nodejs_semver::Version::parse(e.version.trim_start_matches('v')).ok())
        .filter(|v| !v.is_prerelease() && range.satisfies(v))
        .max()
        .map(|v| v.to_string()))
}

async fn node_release(
    client: &reqwest::Client,
    dist: &str,
    range: &str,
) -> Result<Release, UpstreamError> {
    let dist = dist.trim_end_matches('/');
    let index_url = format!("{dist}/index.json");
    let index: Vec<NodeIndexEntry> = get_json(client, &index_url).await?;
    let version = choose_node(&index, range)
        .map_err(|reason| UpstreamError::Need(format!("node {range}: {reason}")))?
        .ok_or_else(|| UpstreamError::NoRelease {
            need: format!("Node.js \"{range}\""),
            url: index_url.clone(),
        })?;
    let file = format!("node-v{version}-linux-x64.tar.gz");
    let sums_url = format!("{dist}/v{version}/SHASUMS256.txt");
    let sums = get_text(client, &sums_url).await?;
    let sha256 = checksum_of(&sums, &file).ok_or_else(|| UpstreamError::NoChecksum {
        file: file.clone(),
        url: sums_url,
    })?;
    Ok(Release {
        lang: "node",
        url: format!("{dist}/v{version}/{file}"),
        version,
        file,
        sha256,
    })
}

#[derive(Deserialize)]
struct GoRelease {
    version: String,
    #[serde(default)]
    stable: bool,
    #[serde(default)]
    files: Vec<GoFile>,
}

#[derive(Deserialize)]
struct GoFile {
    filename: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    sha256: String,
}

/// `1.22.5` as numbers, missing parts 0.
fn numbers(version: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = version
        .split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        })
        .collect();
    parts.resize(3, 0);
    parts
}

/// Which stable Go to fetch: for an exact request, the newest patch of it;
/// for a minimum, the newest patch of the minimum's own minor series that
/// is new enough, else the oldest newer series' newest patch (the closest
/// to what go.mod asks for, as Heroku picks).
fn choose_go<'a>(
    releases: &'a [GoRelease],
    version: &str,
    exact: bool,
) -> Option<(&'a GoRelease, &'a GoFile)> {
    let asked = numbers(version);
    let given = version.split('.').count();
    let mut candidates: Vec<(Vec<u64>, &GoRelease, &GoFile)> = releases
        .iter()
        .filter(|r| r.stable)
        .filter_map(|r| {
            let file = r
                .files
                .iter()
                .find(|f| f.os == "linux" && f.arch == "amd64" && f.kind == "archive")?;
            Some((numbers(r.version.trim_start_matches("go")), r, file))
        })
        .filter(|(v, _, _)| {
            if exact {
                v[..given.min(3)] == asked[..given.min(3)]
            } else {
                *v >= asked
            }
        })
        .collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let series = |v: &[u64]| (v[0], v[1]);
    let wanted_series = if exact {
        candidates.last().map(|(v, _, _)| series(v))?
    } else {
        candidates.first().map(|(v, _, _)| series(v))?
    };
    candidates
        .into_iter()
        .rev()
        .find(|(v, _, _)| series(v) == wanted_series)
        .map(|(_, r, f)| (r, f))
}

async fn go_release(
    client: &reqwest::Client,
    dist: &str,
    version: &str,
    exact: bool,
) -> Result<Release, UpstreamError> {
    let dist = dist.trim_end_matches('/');
    let list_url = format!("{dist}/?mode=json&include=all");
    let releases: Vec<GoRelease> = get_json(client, &list_url).await?;
    let (release, file) =
        choose_go(&releases, version, exact).ok_or_else(|| UpstreamError::NoRelease {
            need: Need::Go {
                version: version.to_owned(),
                exact,
            }
            .to_string(),
            url: list_url.clone(),
        })?;
    Ok(Release {
        lang: "go",
        version: release.version.trim_start_matches("go").to_owned(),
        url: format!("{dist}/{}", file.filename),
        file: file.filename.clone(),
        sha256: file.sha256.to_ascii_lowercase(),
    })
}

#[derive(Deserialize)]
struct GithubRelease {
    #[serde(default)]
    assets: Vec<GithubAsset>,
}

#[derive(Deserialize)]
struct GithubAsset {
    name: String,
    browser_download_url: String,
}

/// `3.12.8` of `cpython-3.12.8+20241219-x86_64-unknown-linux-gnu-install_only.tar.gz`.
fn python_asset_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("cpython-")?;
    let (version, tail) = rest.split_once('+')?;
    tail.ends_with("-x86_64-unknown-linux-gnu-install_only.tar.gz")
        .then_some(version)
}

async fn python_release(
    client: &reqwest::Client,
    release_url: &str,
    version: &str,
) -> Result<Release, UpstreamError> {
    let release: GithubRelease = get_json(client, release_url).await?;
    let given = version.split('.').count();
    let asked = numbers(version);
    let asset = release
        .assets
        .iter()
        .filter_map(|a| Some((numbers(python_asset_version(&a.name)?), a)))
        .filter(|(v, _)| v[..given] == asked[..given])
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, a)| a)
        .ok_or_else(|| UpstreamError::NoRelease {
            need: format!("Python {version}"),
            url: release_url.to_owned(),
        })?;
    let sums = release
        .assets
        .iter()
        .find(|a| a.name == "SHA256SUMS")
        .ok_or_else(|| UpstreamError::NoChecksum {
            file: asset.name.clone(),
            url: release_url.to_owned(),
        })?;
    let text = get_text(client, &sums.browser_download_url).await?;
    let sha256 = checksum_of(&text, &asset.name).ok_or_else(|| UpstreamError::NoChecksum {
        file: asset.name.clone(),
        url: sums.browser_download_url.clone(),
    })?;
    Ok(Release {
        lang: "python",
        version: python_asset_version(&asset.name)
            .unwrap_or(version)
            .to_owned(),
        url: asset.browser_download_url.clone(),
        file: asset.name.clone(),
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_are_read_strictly() {
        assert_eq!(
            parse_need("node 22.x || >=24").expect("node"),
            Need::Node {
                range: "22.x || >=24".into()
            }
        );
        assert_eq!(
            parse_need("go minimum 1.24.5").expect("go"),
            Need::Go {
                version: "1.24.5".into(),
                exact: false
            }
        );
        assert_eq!(
            parse_need("python 3.12\n").expect("python"),
            Need::Python {
                version: "3.12".into()
            }
        );
        for bad in [
            "",
            "node",
            "go 1.22",
            "go exact 1.22; rm",
            "python 3",
            "ruby 3.3",
        ] {
            assert!(parse_need(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_picks_the_newest_linux_release_in_the_range() {
        let index: Vec<NodeIndexEntry> = serde_json::from_str(
            r#"[{"version":"v24.1.0","files":["linux-x64"]},
                {"version":"v22.12.0","files":["linux-x64","win-x64-zip"]},
                {"version":"v22.13.0","files":["win-x64-zip"]},
                {"version":"v22.11.0","files":["linux-x64"]},
                {"version":"v20.18.1","files":["linux-x64"]}]"#,
        )
        .expect("index");
        assert_eq!(
            choose_node(&index, "22.x").expect("range").as_deref(),
            Some("22.12.0")
        );
        assert_eq!(
            choose_node(&index, ">=18 <21").expect("range").as_deref(),
            Some("20.18.1")
        );
        assert_eq!(choose_node(&index, "^26").expect("range"), None);
        assert!(choose_node(&index, "not a range!").is_err());
    }

    #[test]
    fn go_picks_the_closest_series_and_its_newest_patch() {
        let releases: Vec<GoRelease> = serde_json::from_str(
            r#"[{"version":"go1.25.1","stable":true,"files":[{"filename":"go1.25.1.linux-amd64.tar.gz","os":"linux","arch":"amd64","kind":"archive","sha256":"aa"}]},
                {"version":"go1.24.6","stable":true,"files":[{"filename":"go1.24.6.linux-amd64.tar.gz","os":"linux","arch":"amd64","kind":"archive","sha256":"bb"}]},
                {"version":"go1.24.4","stable":true,"files":[{"filename":"go1.24.4.linux-amd64.tar.gz","os":"linux","arch":"amd64","kind":"archive","sha256":"cc"}]},
                {"version":"go1.26rc1","stable":false,"files":[{"filename":"go1.26rc1.linux-amd64.tar.gz","os":"linux","arch":"amd64","kind":"archive","sha256":"dd"}]},
                {"version":"go1.22.12","stable":true,"files":[{"filename":"go1.22.12.linux-amd64.tar.gz","os":"linux","arch":"amd64","kind":"archive","sha256":"ee"}]}]"#,
        )
        .expect("releases");
        let pick = |v: &str, exact: bool| {
            choose_go(&releases, v, exact).map(|(r, f)| (r.version.clone(), f.sha256.clone()))
        };
        assert_eq!(
            pick("1.24.5", false),
            Some(("go1.24.6".into(), "bb".into()))
        );
        assert_eq!(pick("1.23", false), Some(("go1.24.6".into(), "bb".into())));
        assert_eq!(pick("1.22", true), Some(("go1.22.12".into(), "ee".into())));
        assert_eq!(pick("1.24.4", true), Some(("go1.24.4".into(), "cc".into())));
        assert_eq!(pick("1.27", false), None);
    }

    #[test]
    fn checksums_are_found_by_file_name() {
        let sums = format!(
            "{}  node-v22.12.0-linux-arm64.tar.gz\n{}  node-v22.12.0-linux-x64.tar.gz\n",
            "a".repeat(64),
            "B".repeat(64)
        );
        assert_eq!(
            checksum_of(&sums, "node-v22.12.0-linux-x64.tar.gz"),
            Some("b".repeat(64))
        );
        assert_eq!(checksum_of(&sums, "node-v22.12.0-linux-x64.tar.xz"), None);
        assert_eq!(
            python_asset_version(
                "cpython-3.12.8+20241219-x86_64-unknown-linux-gnu-install_only.tar.gz"
            ),
            Some("3.12.8")
        );
        assert_eq!(
            python_asset_version(
                "cpython-3.12.8+20241219-x86_64-unknown-linux-gnu-install_only_stripped.tar.gz"
            ),
            None
        );
    }
}
