//! Reading an app's repository for people: a tree or a file at a commit,
//! the log of a branch, a commit with its diff, and what changed between two
//! commits (a release page's "since the release before"). Read with gix,
//! never by running git.
//!
//! Built to stay fast on a large repository: a diff descends only into
//! subtrees whose ids differ, and every listing has a cap (files, bytes,
//! commits) with a note when it was reached.

use std::path::Path;

use gix::ObjectId;

/// A file larger than this is shown cut, with a note.
pub const SHOW_BYTES: usize = 512 * 1024;
/// Blobs larger than this get no line diff (their sizes are shown).
const DIFF_BYTES: usize = 256 * 1024;
/// At most this many files in one diff.
const DIFF_FILES: usize = 300;
/// At most this many diff lines in all.
const DIFF_LINES: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    #[error("cannot open the repository: {0}")]
    Open(String),
    #[error("no branch, tag or commit {0:?} in this repository")]
    NoRevision(String),
    #[error("cannot read the repository: {0}")]
    Read(String),
}

fn read(err: impl std::fmt::Display) -> BrowseError {
    BrowseError::Read(err.to_string())
}

/// What a tree entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Link,
    /// A submodule's commit.
    Submodule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
}

/// What is at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory: its entries, directories first, by name.
    Dir(Vec<Entry>),
    /// A file: its size and, if it is text, its first [`SHOW_BYTES`].
    File {
        size: usize,
        text: Option<String>,
        cut: bool,
    },
    /// A symbolic link, and where it points.
    Link(String),
}

/// One commit in a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    pub sha: String,
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
    /// Unix seconds of the author's date.
    pub time: i64,
}

/// How a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Deleted,
    Modified,
}

/// One file of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    pub path: String,
    pub change: Change,
    /// Unified diff lines (`+`, `-`, ` `, `@@`); `None` for a binary or a
    /// large file, or past the diff's line cap.
    pub patch: Option<String>,
    /// Why there is no patch, when there is none.
    pub note: Option<String>,
}

/// A diff, and whether a cap cut it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub files: Vec<FileDiff>,
    /// Files left out past [`DIFF_FILES`].
    pub more_files: bool,
}

/// A commit with its message and its diff against its first parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitDetail {
    pub summary: CommitSummary,
    pub message: String,
    pub parents: Vec<String>,
    pub diff: Diff,
}

/// An app's repository, open for reading.
pub struct Repo {
    repo: gix::Repository,
}

impl Repo {
    pub fn open(path: &Path) -> Result<Repo, BrowseError> {
        let repo = gix::open_opts(path, gix::open::Options::isolated())
            .map_err(|e| BrowseError::Open(e.to_string()))?;
        Ok(Repo { repo })
    }

    /// The commit a branch, tag or (abbreviated) sha names.
    pub fn resolve(&self, rev: &str) -> Result<ObjectId, BrowseError> {
        let wanted = |_| BrowseError::NoRevision(rev.to_owned());
        // Only names and hex: no `@{...}` or `:path` syntax from a URL.
        if rev.is_empty()
            || !rev
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            || rev.contains("..")
        {
            return Err(BrowseError::NoRevision(rev.to_owned()));
        }
        let id = self
            .repo
            .rev_parse_single(rev)
            .map_err(|_| BrowseError::NoRevision(rev.to_owned()))?;
        let commit = id
            .object()
            .map_err(read)?
            .peel_to_commit()
            .map_err(wanted)?;
        Ok(commit.id)
    }

    fn commit(&self, id: ObjectId) -> Result<gix::Commit<'_>, BrowseError> {
        self.repo.find_commit(id).map_err(read)
    }

    /// What is at `path` (`""`: the root) in the commit's tree.
    pub fn node(&self, commit: ObjectId, path: &str) -> Result<Option<Node>, BrowseError> {
        let tree = self.commit(commit)?.tree().map_err(read)?;
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Ok(Some(Node::Dir(self.entries(&tree)?)));
        }
        if path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Ok(None);
        }
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(read)? else {
            return Ok(None);
        };
        let mode = entry.mode();
        let object = entry.object().map_err(read)?;
        if mode.is_tree() {
            return Ok(Some(Node::Dir(self.entries(&object.into_tree())?)));
        }
        if mode.is_link() {
            return Ok(Some(Node::Link(
                String::from_utf8_lossy(&object.data).into_owned(),
            )));
        }
        if mode.is_commit() {
            return Ok(None);
        }
        let data = &object.data;
        let cut = data.len() > SHOW_BYTES;
        let shown = &data[..data.len().min(SHOW_BYTES)];
        Ok(Some(Node::File {
            size: data.len(),
            text: text_of(shown, cut),
            cut,
        }))
    }

    /// The bytes of the file at `path`, for a download.
    pub fn blob(&self, commit: ObjectId, path: &str) -> Result<Option<Vec<u8>>, BrowseError> {
        let tree = self.commit(commit)?.tree().map_err(read)?;
        let path = path.trim_matches('/');
        if path.is_empty() || path.split('/').any(|p| p.is_empty() || p == "..") {
            return Ok(None);
        }
        let Some(entry) = tree.lookup_entry_by_path(path).map_err(read)? else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        Ok(Some(entry.object().map_err(read)?.detach().data))
    }

    fn entries(&self, tree: &gix::Tree<'_>) -> Result<Vec<Entry>, BrowseError> {
        let decoded = tree.decode().map_err(read)?;
        let mut entries: Vec<Entry> = decoded
            .entries
            .iter()
            .map(|e| Entry {
                name: e.filename.to_string(),
                kind: kind_of(e.mode),
            })
            .collect();
        entries.sort_by(|a, b| {
            (a.kind != Kind::Dir)
                .cmp(&(b.kind != Kind::Dir))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(entries)
    }

    /// Up to `limit` commits reachable from `from`, newest first, and not
    /// from `hide` (the commit a range starts after).
    pub fn log(
        &self,
        from: ObjectId,
        hide: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<CommitSummary>, BrowseError> {
        let walk = self
            .repo
            .rev_walk([from])
            .sorting(gix::revision::walk::Sorting::ByCommitTime(
                Default::default(),
            ));
        let walk = match hide {
            Some(hide) => walk.with_hidden([hide]),
            None => walk,
        };
        let mut out = Vec::new();
        for info in walk.all().map_err(read)?.take(limit) {
            let info = info.map_err(read)?;
            out.push(self.summary(info.id)?);
        }
        Ok(out)
    }

    fn summary(&self, id: ObjectId) -> Result<CommitSummary, BrowseError> {
        let commit = self.commit(id)?;
        let message = commit.message_raw().map_err(read)?.to_string();
        let author = commit.author().map_err(read)?;
        Ok(CommitSummary {
            sha: id.to_string(),
            subject: message.lines().next().unwrap_or_default().trim().to_owned(),
            author: format!("{} <{}>", author.name, author.email),
            time: author.time().map(|t| t.seconds).unwrap_or_default(),
        })
    }

    /// A commit, its message and its diff against its first parent.
    pub fn commit_detail(&self, id: ObjectId) -> Result<CommitDetail, BrowseError> {
        let commit = self.commit(id)?;
        let message = commit.message_raw().map_err(read)?.to_string();
        let parents: Vec<ObjectId> = commit.parent_ids().map(|p| p.detach()).collect();
        let diff = self.diff(parents.first().copied(), id)?;
        Ok(CommitDetail {
            summary: self.summary(id)?,
            message,
            parents: parents.iter().map(ToString::to_string).collect(),
            diff,
        })
    }

    /// What changed from commit `old` (`None`: nothing) to commit `new`.
    pub fn diff(&self, old: Option<ObjectId>, new: ObjectId) -> Result<Diff, BrowseError> {
        let new_tree = self.commit(new)?.tree_id().map_err(read)?.detach();
        let old_tree = match old {
            Some(old) => Some(self.commit(old)?.tree_id().map_err(read)?.detach()),
            None => None,
        };
        let mut diff = Diff::default();
        let mut lines = 0;
        self.diff_trees(old_tree, Some(new_tree), "", &mut diff, &mut lines)?;
        Ok(diff)
    }

    /// Compares two trees (either may be absent), descending only into
    /// subtrees that differ.
    fn diff_trees(
        &self,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        prefix: &str,
        diff: &mut Diff,
        lines: &mut usize,
    ) -> Result<(), BrowseError> {
        if old == new {
            return Ok(());
        }
        let entries = |id: Option<ObjectId>| -> Result<
            Vec<(String, gix::object::tree::EntryMode, ObjectId)>,
            BrowseError,
        > {
            let Some(id) = id else { return Ok(Vec::new()) };
            let tree = self.repo.find_tree(id).map_err(read)?;
            let decoded = tree.decode().map_err(read)?;
            Ok(decoded
                .entries
                .iter()
                .map(|e| (e.filename.to_string(), e.mode, e.oid.to_owned()))
                .collect())
        };
        let old_entries = entries(old)?;
        let new_entries = entries(new)?;
        let mut names: Vec<&String> = old_entries
            .iter()
            .chain(new_entries.iter())
            .map(|(n, _, _)| n)
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let before = old_entries.iter().find(|(n, _, _)| n == name);
            let after = new_entries.iter().find(|(n, _, _)| n == name);
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let is_tree = |e: Option<&(String, gix::object::tree::EntryMode, ObjectId)>| {
                e.is_some_and(|(_, m, _)| m.is_tree())
            };
            let id_of = |e: Option<&(String, gix::object::tree::EntryMode, ObjectId)>| {
                e.map(|(_, _, id)| *id)
            };
            if before.map(|(_, m, id)| (m, id)) == after.map(|(_, m, id)| (m, id)) {
                continue;
            }
            // Trees on either side are walked; a file on the other side is
            // compared as a file of its own.
            if is_tree(before) || is_tree(after) {
                let old_tree = id_of(before.filter(|_| is_tree(before)));
                let new_tree = id_of(after.filter(|_| is_tree(after)));
                self.diff_trees(old_tree, new_tree, &path, diff, lines)?;
                let old_file = id_of(before.filter(|_| !is_tree(before)));
                let new_file = id_of(after.filter(|_| !is_tree(after)));
                if old_file.is_some() || new_file.is_some() {
                    self.diff_file(&path, old_file, new_file, diff, lines)?;
                }
                continue;
            }
            self.diff_file(&path, id_of(before), id_of(after), diff, lines)?;
        }
        Ok(())
    }

    fn diff_file(
        &self,
        path: &str,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        diff: &mut Diff,
        lines: &mut usize,
    ) -> Result<(), BrowseError> {
        if diff.files.len() >= DIFF_FILES {
            diff.more_files = true;
            return Ok(());
        }
        let change = match (old, new) {
            (None, _) => Change::Added,
            (_, None) => Change::Deleted,
            _ => Change::Modified,
        };
        let data = |id: Option<ObjectId>| -> Result<Vec<u8>, BrowseError> {
            match id {
                Some(id) => Ok(self.repo.find_object(id).map_err(read)?.detach().data),
                None => Ok(Vec::new()),
            }
        };
        let (before, after) = (data(old)?, data(new)?);
        let (patch, note) = if before.len() > DIFF_BYTES || after.len() > DIFF_BYTES {
            (
                None,
                Some(format!(
                    "large file ({} → {} bytes): no line diff",
                    before.len(),
                    after.len()
                )),
            )
        } else if *lines >= DIFF_LINES {
            (None, Some("the diff is too long to show more".to_owned()))
        } else {
            match (text_of(&before, false), text_of(&after, false)) {
                (Some(before), Some(after)) => {
                    let patch = unified(&before, &after);
                    *lines += patch.lines().count();
                    (Some(patch), None)
                }
                _ => (None, Some("binary file".to_owned())),
            }
        };
        diff.files.push(FileDiff {
            path: path.to_owned(),
            change,
            patch,
            note,
        });
        Ok(())
    }
}

fn kind_of(mode: gix::object::tree::EntryMode) -> Kind {
    if mode.is_tree() {
        Kind::Dir
    } else if mode.is_link() {
        Kind::Link
    } else if mode.is_commit() {
        Kind::Submodule
    } else {
        Kind::File
    }
}

/// The text of `bytes` if they are text (UTF-8, no NUL); a cut may have
/// split the last character, which is dropped.
fn text_of(bytes: &[u8], cut: bool) -> Option<String> {
    if bytes.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text.to_owned()),
        Err(err) if cut && err.valid_up_to() + 4 > bytes.len() => {
            Some(String::from_utf8_lossy(&bytes[..err.valid_up_to()]).into_owned())
        }
        Err(_) => None,
    }
}

/// The unified diff of two texts (three lines of context), without file
/// headers: hunks only.
fn unified(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_utf8_without_nul_and_a_cut_character_is_dropped() {
        assert_eq!(text_of(b"hello\n", false).as_deref(), Some("hello\n"));
        assert_eq!(text_of(b"a\0b", false), None);
        assert_eq!(text_of(&[0xff, 0xfe], false), None);
        let snowman = "☃".as_bytes();
        assert_eq!(
            text_of(&[b'a', snowman[0], snowman[1]], true).as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_unified_diff_shows_the_changed_line_with_context() {
        let patch = unified("a\nb\nc\n", "a\nB\nc\n");
        assert!(
            patch.contains("-b\n") && patch.contains("+B\n") && patch.contains("@@"),
            "{patch}"
        );
    }
}
