//! Reading a pushed commit with gix: its metadata and a tar of its tree.
//!
//! During pre-receive the pushed objects sit in git's quarantine directory, which
//! gix does not find on its own (it ignores `GIT_OBJECT_DIRECTORY`). So we open a
//! scratch repository whose `objects/info/alternates` lists the quarantine and the
//! real object store: gix then sees exactly what git sees, and the quarantine is
//! never touched.

use std::path::{Path, PathBuf};

/// Facts about the pushed commit that a release records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    /// The first line of the message.
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot prepare a scratch repository in {0}: {1}")]
    Scratch(PathBuf, std::io::Error),
    #[error("cannot open the pushed objects: {0}")]
    Open(String),
    #[error("commit {0} was not found in the push")]
    NoCommit(String),
    #[error("cannot read the pushed tree: {0}")]
    Read(String),
}

/// A read-only view of a repository's objects plus a push's quarantined ones.
pub struct Source {
    repo: gix::Repository,
    scratch: PathBuf,
}

impl Source {
    /// Opens `object_dirs` (quarantine first) through a scratch repository at `scratch`.
    pub fn open(scratch: &Path, object_dirs: &[PathBuf]) -> Result<Source, SourceError> {
        // Removes the scratch directory however this function returns.
        struct Cleanup<'a>(Option<&'a Path>);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                if let Some(path) = self.0 {
                    let _ = std::fs::remove_dir_all(path);
                }
            }
        }
        let mut cleanup = Cleanup(Some(scratch));
        let fail = |e| SourceError::Scratch(scratch.to_owned(), e);
        std::fs::create_dir_all(scratch.join("objects/info")).map_err(fail)?;
        std::fs::create_dir_all(scratch.join("refs")).map_err(fail)?;
        std::fs::write(scratch.join("HEAD"), "ref: refs/heads/main\n").map_err(fail)?;
        std::fs::write(
            scratch.join("config"),
            "[core]\n\trepositoryformatversion = 0\n\tbare = true\n",
        )
        .map_err(fail)?;
        let alternates: String = object_dirs
            .iter()
            .map(|d| format!("{}\n", d.display()))
            .collect();
        std::fs::write(scratch.join("objects/info/alternates"), alternates).map_err(fail)?;
        let repo = gix::open_opts(scratch, gix::open::Options::isolated())
            .map_err(|e| SourceError::Open(e.to_string()))?;
        // From here on, `Source`'s own Drop removes the directory.
        cleanup.0 = None;
        Ok(Source {
            repo,
            scratch: scratch.to_owned(),
        })
    }

    fn commit(&self, sha: &str) -> Result<gix::Commit<'_>, SourceError> {
        let id = gix::ObjectId::from_hex(sha.as_bytes())
            .map_err(|_| SourceError::NoCommit(sha.to_owned()))?;
        self.repo
            .find_commit(id)
            .map_err(|_| SourceError::NoCommit(sha.to_owned()))
    }

    pub fn commit_info(&self, sha: &str) -> Result<CommitInfo, SourceError> {
        let commit = self.commit(sha)?;
        let read = |e: &dyn std::fmt::Display| SourceError::Read(e.to_string());
        let message = commit.message_raw().map_err(|e| read(&e))?;
        let subject = message
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let author = commit.author().map_err(|e| read(&e))?;
        Ok(CommitInfo {
            sha: sha.to_owned(),
            subject,
            author: format!("{} <{}>", author.name, author.email),
        })
    }

    /// Whether the commit's tree has a regular file at `path` (e.g. `Dockerfile`).
    pub fn has_file(&self, sha: &str, path: &str) -> Result<bool, SourceError> {
        let tree = self
            .commit(sha)?
            .tree()
            .map_err(|e| SourceError::Read(e.to_string()))?;
        let entry = tree
            .lookup_entry_by_path(path)
            .map_err(|e| SourceError::Read(e.to_string()))?;
        Ok(entry.is_some_and(|e| e.mode().is_blob()))
    }

    /// The contents of the regular file at `path` in the commit's tree, if any.
    pub fn read_file(&self, sha: &str, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let read = |e: &dyn std::fmt::Display| SourceError::Read(e.to_string());
        let tree = self.commit(sha)?.tree().map_err(|e| read(&e))?;
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(|e| read(&e))? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let object = entry.object().map_err(|e| read(&e))?;
        Ok(Some(object.data.clone()))
    }

    /// The commit's tree as an uncompressed tar, entries dated at commit time.
    pub fn tar(&self, sha: &str) -> Result<Vec<u8>, SourceError> {
        let read = |e: &dyn std::fmt::Display| SourceError::Read(e.to_string());
        let commit = self.commit(sha)?;
        let time = commit.time().map_err(|e| read(&e))?;
        let tree_id = commit.tree_id().map_err(|e| read(&e))?;
        let (mut stream, _index) = self.repo.worktree_stream(tree_id).map_err(|e| read(&e))?;
        let mut out = Vec::new();
        gix_archive::write_stream(
            &mut stream,
            gix::worktree::stream::Stream::next_entry,
            &mut out,
            gix_archive::Options {
                format: gix_archive::Format::Tar,
                tree_prefix: None,
                modification_time: time.seconds,
            },
        )
        .map_err(|e| read(&e))?;
        Ok(out)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
