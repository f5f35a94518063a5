//! The facts a files backup records in its manifest, and their validation.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zdr_core::{Error, ErrorKind, Manifest, Result};

/// The version of the [`FilesFacts`] layout this build writes and the newest it reads.
pub const FACTS_FORMAT: u32 = 1;

/// What a files backup records in `Manifest::facts`: the tree's root and one
/// [`FileEntry`] per directory, regular file and symlink, in the order they were archived
/// (sorted, parents before their contents).
///
/// ```json
/// {
///   "format": 1,
///   "root": "/opt/zentoria/config",
///   "file_count": 2, "dir_count": 1, "symlink_count": 1, "total_bytes": 18,
///   "entries": [
///     {"path": "app.env", "type": "file", "size": 12, "mode": 384, "mtime": 1768573800,
///      "sha256": "9f86d0..."},
///     {"path": "nginx", "type": "dir", "size": 0, "mode": 493, "mtime": 1768573800},
///     {"path": "nginx/site.conf", "type": "file", "size": 6, "mode": 420, "mtime": 1768573800,
///      "sha256": "2c26b4..."},
///     {"path": "current", "type": "symlink", "size": 0, "mode": 511, "mtime": 1768573800,
///      "target": "nginx/site.conf"}
///   ],
///   "skipped": [{"path": "run/app.sock", "reason": "socket"}],
///   "exclude": ["*.swp"]
/// }
/// ```
///
/// `mode` is the permission bits as a number (`384` is `0o600`), `mtime` whole seconds
/// since the Unix epoch, `sha256` lowercase hex of the file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesFacts {
    /// The layout version ([`FACTS_FORMAT`]).
    pub format: u32,
    /// The absolute path of the directory that was backed up.
    pub root: String,
    /// How many regular files were archived.
    pub file_count: u64,
    /// How many directories were archived (the root itself is not counted).
    pub dir_count: u64,
    /// How many symlinks were archived.
    pub symlink_count: u64,
    /// The sum of the sizes of the regular files.
    pub total_bytes: u64,
    /// Every archived entry, parents before their contents.
    pub entries: Vec<FileEntry>,
    /// Entries that were seen but not archived (sockets, fifos, devices, names that are
    /// not UTF-8, files that vanished during the backup).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedEntry>,
    /// The exclude patterns in effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// The type of an archived entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, stored as a link (never followed).
    Symlink,
}

impl EntryType {
    /// `file`, `dir` or `symlink`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
        }
    }
}

impl std::fmt::Display for EntryType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One archived entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The path relative to the root, `/`-separated, such as `nginx/site.conf`.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// The size in bytes of a regular file; 0 for directories and symlinks.
    pub size: u64,
    /// The permission bits (including setuid, setgid and sticky), such as `0o644`.
    pub mode: u32,
    /// The modification time, in whole seconds since the Unix epoch.
    pub mtime: i64,
    /// Lowercase hex SHA-256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The target of a symlink, as stored in the link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An entry that was seen during the backup but not archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    /// The path relative to the root (lossily converted if it is not UTF-8).
    pub path: String,
    /// Why it was skipped, such as `socket` or `fifo`.
    pub reason: String,
}

impl FilesFacts {
    /// Read and check the facts of a files backup's manifest.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the facts are not those of a files backup or are
    /// inconsistent (unsafe or duplicate paths, an entry whose parent directory is not
    /// recorded before it, a file without a checksum, a symlink without a target), and
    /// [`ErrorKind::Unsupported`] for a facts format newer than this build reads.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self> {
        let facts: Self = serde_json::from_value(manifest.facts.clone()).map_err(|e| {
            Error::integrity("the manifest's facts are not those of a files backup")
                .with_source(e)
                .with_context("backup", &manifest.id)
        })?;
        if facts.format > FACTS_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "files facts format {} is newer than this zdr reads ({FACTS_FORMAT})",
                    facts.format
                ),
            )
            .with_hint("upgrade zdr")
            .with_context("backup", &manifest.id));
        }
        facts
            .validate()
            .map_err(|e| e.with_context("backup", &manifest.id))?;
        Ok(facts)
    }

    /// The facts as JSON for [`zdr_core::SourceFacts`].
    ///
    /// # Errors
    /// [`ErrorKind::Unexpected`] if serialization fails (it does not for these types).
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self)
            .map_err(|e| Error::unexpected("cannot serialize files facts").with_source(e))
    }

    /// Check that the entries describe a tree that is safe to recreate: relative paths
    /// without `..`, each path once, each parent a directory recorded earlier.
    pub(crate) fn validate(&self) -> Result<()> {
        let mut seen: HashMap<&str, EntryType> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let bad = |what: &str| {
                Error::integrity(format!("the manifest's entry {:?} {what}", e.path))
                    .with_hint("the manifest is damaged; restore another backup")
            };
            if !zdr_core::layout::is_safe_key(&e.path) {
                return Err(bad("is not a safe relative path"));
            }
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && seen.get(parent) != Some(&EntryType::Dir)
            {
                return Err(bad("comes before its parent directory or has no parent"));
            }
            match e.kind {
                EntryType::File => {
                    let ok = e.sha256.as_deref().is_some_and(|s| {
                        s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    });
                    if !ok {
                        return Err(bad("has no valid sha256"));
                    }
                }
                EntryType::Symlink => {
                    if e.target.as_deref().is_none_or(str::is_empty) {
                        return Err(bad("is a symlink without a target"));
                    }
                }
                EntryType::Dir => {}
            }
            if seen.insert(e.path.as_str(), e.kind).is_some() {
                return Err(bad("is recorded twice"));
            }
        }
        Ok(())
    }

    /// The entries by path.
    pub(crate) fn index(&self) -> HashMap<&str, &FileEntry> {
        self.entries.iter().map(|e| (e.path.as_str(), e)).collect()
    }
}

/// Format permission bits the way `ls` users read them, such as `0644`.
pub(crate) fn octal(mode: u32) -> String {
    format!("{mode:04o}")
}
