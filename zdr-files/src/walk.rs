//! A deterministic walk of a directory tree that never follows symlinks, and the small
//! glob matcher behind [`crate::FilesComponent::exclude`].

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use zdr_core::{Error, ErrorKind, Progress, Result};

use crate::facts::SkippedEntry;

/// What a walked entry is.
pub(crate) enum Kind {
    File,
    Dir,
    Symlink(String),
}

/// One entry found by [`walk`].
pub(crate) struct Walked {
    /// `/`-separated path relative to the root.
    pub rel: String,
    /// The absolute path.
    pub abs: PathBuf,
    pub kind: Kind,
    /// From `lstat`.
    pub meta: Metadata,
}

/// The result of a walk.
pub(crate) struct Walk {
    pub entries: Vec<Walked>,
    pub skipped: Vec<SkippedEntry>,
}

/// Walk `root` in sorted pre-order (each directory before its contents, siblings sorted
/// by name), without following symlinks. Entries matching `exclude` are left out with their
/// whole subtree; sockets, fifos, devices and names that are not UTF-8 are skipped with a
/// warning on `progress`.
pub(crate) fn walk(root: &Path, exclude: &[String], progress: &Progress) -> Result<Walk> {
    let mut out = Walk {
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    let mut stack: Vec<(PathBuf, String)> = Vec::new();
    push_children(root, "", &mut stack, &mut out.skipped, progress)?;
    while let Some((abs, rel)) = stack.pop() {
        if is_excluded(exclude, &rel) {
            continue;
        }
        let meta = match fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                skip(
                    &mut out.skipped,
                    progress,
                    &rel,
                    "vanished during the backup",
                );
                continue;
            }
            Err(e) => return Err(read_error(e, "cannot inspect", &abs)),
        };
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            push_children(&abs, &rel, &mut stack, &mut out.skipped, progress)?;
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            let target = match fs::read_link(&abs) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    skip(
                        &mut out.skipped,
                        progress,
                        &rel,
                        "vanished during the backup",
                    );
                    continue;
                }
                Err(e) => return Err(read_error(e, "cannot read symlink", &abs)),
            };
            match target.into_os_string().into_string() {
                Ok(t) => Kind::Symlink(t),
                Err(_) => {
                    skip(
                        &mut out.skipped,
                        progress,
                        &rel,
                        "symlink target is not UTF-8",
                    );
                    continue;
                }
            }
        } else {
            skip(&mut out.skipped, progress, &rel, special_kind(&meta));
            continue;
        };
        out.entries.push(Walked {
            rel,
            abs,
            kind,
            meta,
        });
    }
    Ok(out)
}

/// Push the children of `dir` onto `stack` so that they pop in sorted order.
fn push_children(
    dir: &Path,
    rel: &str,
    stack: &mut Vec<(PathBuf, String)>,
    skipped: &mut Vec<SkippedEntry>,
    progress: &Progress,
) -> Result<()> {
    let mut names: Vec<OsString> = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| read_error(e, "cannot list directory", dir))?;
    for entry in rd {
        let entry = entry.map_err(|e| read_error(e, "cannot list directory", dir))?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names.into_iter().rev() {
        let abs = dir.join(&name);
        match name.into_string() {
            Ok(name) => {
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((abs, child));
            }
            Err(name) => {
                let lossy = Path::new(rel).join(&name).to_string_lossy().into_owned();
                skip(skipped, progress, &lossy, "name is not UTF-8");
            }
        }
    }
    Ok(())
}

fn skip(skipped: &mut Vec<SkippedEntry>, progress: &Progress, rel: &str, reason: &str) {
    progress.warn(format!("skipping {rel}: {reason}"));
    skipped.push(SkippedEntry {
        path: rel.to_owned(),
        reason: reason.to_owned(),
    });
}

#[cfg(unix)]
fn special_kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    if ft.is_socket() {
        "socket"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_meta: &Metadata) -> &'static str {
    "special file"
}

/// A failure reading the tree being backed up.
pub(crate) fn read_error(e: io::Error, what: &str, path: &Path) -> Error {
    Error::new(ErrorKind::Source, format!("{what} {}", path.display()))
        .with_source(e)
        .with_context("path", path.display())
        .with_hint("check that zdr can read the whole tree, or exclude the path")
}

/// True when a pattern excludes the entry at `rel`. A pattern without `/` is matched
/// against the entry's name at any depth; a pattern with `/` against the whole relative path.
pub(crate) fn is_excluded(patterns: &[String], rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    patterns.iter().any(|p| {
        let p = p.trim_matches('/');
        let subject = if p.contains('/') { rel } else { name };
        glob(p.as_bytes(), subject.as_bytes())
    })
}

/// Match `s` against a glob: `*` matches within one path segment, `**` across segments
/// (`**/` also matches no directory at all), `?` one character other than `/`.
pub(crate) fn glob(p: &[u8], s: &[u8]) -> bool {
    match p {
        [] => s.is_empty(),
        [b'*', b'*', b'/', rest @ ..] => {
            glob(rest, s)
                || s.iter()
                    .enumerate()
                    .any(|(i, c)| *c == b'/' && glob(rest, &s[i + 1..]))
        }
        [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        [b'*', rest @ ..] => {
            let limit = s.iter().position(|c| *c == b'/').unwrap_or(s.len());
            (0..=limit).any(|i| glob(rest, &s[i..]))
        }
        [b'?', rest @ ..] => matches!(s.first(), Some(c) if *c != b'/') && glob(rest, &s[1..]),
        [c, rest @ ..] => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, s: &str| glob(p.as_bytes(), s.as_bytes());
        assert!(m("*.swp", ".app.env.swp"));
        assert!(!m("*.swp", "a/b.swp"));
        assert!(m("**/*.swp", "a/b.swp"));
        assert!(m("**/*.swp", "b.swp"));
        assert!(m("cache/**", "cache/x/y"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(!m("*.conf", "x.conf.bak"));
        let pats = vec!["*.bak".to_owned(), "nginx/cache".to_owned()];
        assert!(is_excluded(&pats, "deep/in/x.bak"));
        assert!(is_excluded(&pats, "nginx/cache"));
        assert!(!is_excluded(&pats, "other/cache"));
    }
}
