//! Spools: private (0700) temporary directories on disk under [`PgConfig::spool_dir`].
//!
//! The directory format (`pg_dump -Fd -j N`) cannot stream, so it is written into a spool,
//! which is then streamed as one tar artifact; its restore unpacks the artifact into a spool
//! and runs `pg_restore -j N` on it. A custom-format restore copies the decoded artifact
//! into a spool file once (the stream checks the stored bytes' size and SHA-256 at its end,
//! so the copy is the verification pass) and runs `pg_restore -j N` on that file.
//!
//! Spools are removed when done, on failure, and when the future owning them is dropped.
//! Each holds an exclusive lock on its `.lock` file for its lifetime; a spool whose lock is
//! free belongs to a run that was killed, and the next spool created in the same directory
//! removes it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::io::SyncIoBridge;
use zdr_core::{ArtifactWrite, BoxRead, Error, ErrorKind, Progress, Result};

use crate::PgConfig;
use crate::custom::OffsetScan;
use std::os::unix::fs::FileExt;

/// Buffer between tar and the async pipeline (one pipeline chunk).
const BUF: usize = 1 << 20;

/// The name prefix of every spool directory.
const PREFIX: &str = "zdr-pg-spool-";

/// The lock file inside a spool, held by its owner.
const LOCK: &str = ".lock";

/// A spool whose lock is free is removed once it is this old (the owner takes its lock
/// right after creating it; the margin keeps a spool being born from being taken for a
/// dead one).
const DEAD_AFTER: Duration = Duration::from_secs(60);

/// A spool without a lock file (left by an older zdr) is removed once it is this old.
const UNLOCKED_AFTER: Duration = Duration::from_secs(3600);

/// The directory and the lock that marks it as in use.
struct Owned {
    dir: tempfile::TempDir,
    _lock: File,
}

/// A private temporary directory under the configured spool directory.
///
/// The directory is shared with the blocking thread that packs or unpacks it, and is
/// deleted when the last of them lets go: dropping a `Spool` (a dropped restore future)
/// also tells that thread to stop at its next read or write, so nothing writes into the
/// spool after it is deleted.
pub(crate) struct Spool {
    dir: Option<Arc<Owned>>,
    cancel: Arc<AtomicBool>,
}

/// What the blocking thread holds of a [`Spool`].
#[derive(Clone)]
pub(crate) struct Hold {
    _dir: Option<Arc<Owned>>,
    cancel: Arc<AtomicBool>,
}

impl Hold {
    /// An error once the spool was dropped (the run was abandoned).
    pub(crate) fn check(&self) -> io::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            // Not `Interrupted`: std's copy loops retry that kind.
            Err(io::Error::other(
                "abandoned: the backup or restore was dropped",
            ))
        } else {
            Ok(())
        }
    }
}

/// The directory spools are created in.
pub(crate) fn spool_parent(config: &PgConfig) -> PathBuf {
    config.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
}

impl Spool {
    /// Create `zdr-pg-spool-*` in `config.spool_dir` (default: the system temp dir), after
    /// removing the spools of killed runs there (each named in a warning).
    pub(crate) fn create(config: &PgConfig, progress: &Progress) -> Result<Self> {
        let parent = spool_parent(config);
        for (dead, bytes) in sweep(&parent) {
            progress.warn(format!(
                "removed {} ({bytes} bytes), a spool left by an interrupted run",
                dead.display()
            ));
        }
        let cannot = |e: io::Error| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create a spool directory in {}", parent.display()),
            )
            .with_source(e)
            .with_hint("set `spool_dir` to a directory with room for one uncompressed dump")
        };
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&parent)
            .map_err(cannot)?;
        let lock = File::create(dir.path().join(LOCK)).map_err(cannot)?;
        lock.try_lock().map_err(|e| cannot(io::Error::other(e)))?;
        Ok(Self {
            dir: Some(Arc::new(Owned { dir, _lock: lock })),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    pub(crate) fn hold(&self) -> Hold {
        Hold {
            _dir: self.dir.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// A file of that name inside the spool.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path(name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.dir.path().join(name))
    }

    /// Where pg_dump writes / pg_restore reads (inside the spool; created by them or by
    /// [`unpack`]).
    pub(crate) fn dump_dir(&self) -> PathBuf {
        self.path("dump")
    }

    /// The spool file of a custom-format restore ([`copy_in`]).
    pub(crate) fn dump_file(&self) -> PathBuf {
        self.path("dump.file")
    }

    /// Remove the spool off the async threads (a dump is large).
    pub(crate) async fn remove(mut self) {
        if let Some(d) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(d) {
                Ok(o) => o.dir.close(),
                Err(d) => {
                    drop(d);
                    Ok(())
                }
            })
            .await;
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Dropped without `remove` (an error path, or the future was dropped): stop the
        // blocking thread; the last holder's TempDir drop deletes the directory.
        self.cancel.store(true, Ordering::Relaxed);
        drop(self.dir.take());
    }
}

/// Remove the spools of killed runs in `parent`: those whose lock nobody holds (older than
/// [`DEAD_AFTER`]) and those without a lock file older than [`UNLOCKED_AFTER`]. Returns
/// what was removed and its size. Best effort: what cannot be read is left alone.
fn sweep(parent: &Path) -> Vec<(PathBuf, u64)> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return removed;
    };
    for e in entries.flatten() {
        let path = e.path();
        let named = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX));
        if !named || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let dead = match File::open(path.join(LOCK)) {
            // Locked by its owner: in use. Free: its owner is gone (the kernel releases the
            // lock of a killed process).
            Ok(f) => f.try_lock().is_ok() && age >= DEAD_AFTER,
            Err(err) if err.kind() == io::ErrorKind::NotFound => age >= UNLOCKED_AFTER,
            Err(_) => false,
        };
        if dead {
            let bytes = size_of_tree(&path);
            if std::fs::remove_dir_all(&path).is_ok() {
                removed.push((path, bytes));
            }
        }
    }
    removed
}

fn size_of_tree(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size_of_tree(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Check that `dir` has room for `needed` bytes (the decoded size of what is spooled),
/// before anything is written there.
///
/// # Errors
/// [`ErrorKind::Io`] naming the directory and both sizes when it has not.
pub(crate) fn check_room(dir: &Path, needed: u64) -> Result<()> {
    let st = rustix::fs::statvfs(dir).map_err(|e| {
        Error::from_io(
            io::Error::from(e),
            format!("cannot read the free space of {}", dir.display()),
        )
    })?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < needed {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "not enough free space in the spool directory {}: the restore spools {needed} \
                 bytes (the backup's uncompressed size), {free} bytes are free",
                dir.display()
            ),
        )
        .with_context("path", dir.display())
        .with_hint(
            "free space there, or set `spool_dir` to a directory with room for one \
             uncompressed dump",
        ));
    }
    Ok(())
}

/// Copy the decoded artifact `from` into the spool's [`Spool::dump_file`], to its end: the
/// stream checks the stored bytes' size and SHA-256 there, so a copy that returns `Ok` is of
/// a verified artifact. Returns the bytes written.
///
/// With `positions`, the artifact is a custom-format dump: its data blocks are located while
/// it is copied ([`OffsetScan`]) and their positions written into the spool's table of
/// contents at the end, as `pg_dump` does in a dump it can seek in; the outcome says how
/// many entries were given a position, or why none were.
pub(crate) async fn copy_in(
    from: BoxRead,
    spool: &Spool,
    positions: bool,
) -> Result<(u64, Option<std::result::Result<usize, String>>)> {
    let bridge = SyncIoBridge::new(from);
    let dest = spool.dump_file();
    let hold = spool.hold();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| Error::from_io(e, format!("cannot create {}", dest.display())))?;
        let mut input = CountingReader {
            inner: BufReader::with_capacity(BUF, bridge),
            n: 0,
            hold,
        };
        let mut out = ScanWriter {
            inner: BufWriter::with_capacity(BUF, file),
            scan: positions.then(OffsetScan::new),
        };
        let io_error = |e: io::Error| spool_error(e, &dest);
        io::copy(&mut input, &mut out)
            .and_then(|_| out.inner.flush())
            .map_err(io_error)?;
        let Some(scan) = out.scan else {
            return Ok((input.n, None));
        };
        let patches = match scan.finish() {
            Ok(p) => p,
            Err(why) => return Ok((input.n, Some(Err(why)))),
        };
        let file = out
            .inner
            .into_inner()
            .map_err(|e| io_error(e.into_error()))?;
        for p in &patches {
            file.write_all_at(&p.bytes, p.at).map_err(io_error)?;
        }
        Ok((input.n, Some(Ok(patches.len()))))
    })
    .await
    .map_err(|e| Error::unexpected("the spooling task failed").with_source(e))?
}

/// An I/O error of spooling into `dest`. A read error carries the artifact's own error
/// (Integrity, Storage) as is; a local one names the spool file.
pub(crate) fn spool_error(e: io::Error, dest: &Path) -> Error {
    let e = Error::from_io(e, "spooling the backup");
    if e.kind() == ErrorKind::Io {
        e.with_context("path", dest.display())
    } else {
        e
    }
}

/// A writer that shows every byte written to an [`OffsetScan`] too.
struct ScanWriter<W> {
    inner: W,
    scan: Option<OffsetScan>,
}

impl<W: Write> Write for ScanWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(s) = &mut self.scan {
            s.feed(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The files of a directory dump, `toc.dat` first, then by name. pg_dump writes a flat
/// directory of regular files; anything else is refused.
fn dump_files(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().into_string().map_err(|n| {
            io::Error::other(format!("unexpected file name {n:?} in the dump directory"))
        })?;
        if !e.file_type()?.is_file() {
            return Err(io::Error::other(format!(
                "unexpected entry {name} in the dump directory (not a regular file)"
            )));
        }
        files.push((name, e.path()));
    }
    files.sort_by(|a, b| (a.0 != "toc.dat", &a.0).cmp(&(b.0 != "toc.dat", &b.0)));
    Ok(files)
}

/// Stream the directory `dir` as a tar archive into `writer` (on a blocking thread) and
/// hand the writer back, not yet finished. Returns the tar's size.
pub(crate) async fn pack(
    spool: &Spool,
    writer: Box<dyn ArtifactWrite>,
) -> Result<(Box<dyn ArtifactWrite>, u64)> {
    let bridge = SyncIoBridge::new(writer);
    let dir = spool.dump_dir();
    let hold = spool.hold();
    tokio::task::spawn_blocking(move || {
        let files = dump_files(&dir)
            .map_err(|e| Error::from_io(e, format!("cannot list the dump in {}", dir.display())))?;
        let mut out = CountingWriter {
            inner: BufWriter::with_capacity(BUF, bridge),
            n: 0,
            hold,
        };
        let mut tar = tar::Builder::new(&mut out);
        tar.mode(tar::HeaderMode::Deterministic);
        tar.follow_symlinks(false);
        for (name, path) in &files {
            tar.append_path_with_name(path, name)
                .map_err(|e| Error::from_io(e, format!("storing {name} of the dump")))?;
        }
        tar.finish()
            .map_err(|e| Error::from_io(e, "finishing the dump archive"))?;
        drop(tar);
        let n = out.n;
        let bridge = out
            .inner
            .into_inner()
            .map_err(|e| Error::from_io(e.into_error(), "storing the dump archive"))?;
        Ok((bridge.into_inner(), n))
    })
    .await
    .map_err(|e| Error::unexpected("the archiving task failed").with_source(e))?
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
    hold: Hold,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hold.check()?;
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The single file name an archive entry may have: one normal component (`./x` allowed).
fn entry_name(path: &Path) -> Option<String> {
    let mut name = None;
    for part in path.components() {
        match part {
            PathPart::CurDir => {}
            PathPart::Normal(n) if name.is_none() => name = Some(n.to_str()?.to_owned()),
            _ => return None,
        }
    }
    name
}

/// Unpack the tar stream `from` into the spool's new dump directory: flat regular files only
/// (absolute paths, `..`, subdirectories, links are refused as an integrity error). The
/// stream is read to its end, so the artifact's checksum is checked. Returns the bytes read.
pub(crate) async fn unpack(from: BoxRead, spool: &Spool) -> Result<u64> {
    let bridge = SyncIoBridge::new(from);
    let dest = spool.dump_dir();
    let hold = spool.hold();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir(&dest)
            .map_err(|e| Error::from_io(e, format!("cannot create {}", dest.display())))?;
        let mut input = CountingReader {
            inner: BufReader::with_capacity(BUF, bridge),
            n: 0,
            hold,
        };
        let mut archive = tar::Archive::new(&mut input);
        let read_err = |e: io::Error| Error::from_io(e, "reading the dump archive");
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let path = entry.path().map_err(read_err)?.into_owned();
            let kind = entry.header().entry_type();
            let name = match entry_name(&path) {
                Some(n) if kind.is_file() => n,
                _ => {
                    return Err(Error::integrity(format!(
                        "the dump archive holds an unsafe or unexpected entry {} ({kind:?}); \
                         only the flat files of a pg_dump directory are accepted",
                        path.display()
                    )));
                }
            };
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest.join(&name))
                .map_err(|e| Error::from_io(e, format!("cannot create {name} of the dump")))?;
            io::copy(&mut entry, &mut file).map_err(read_err)?;
        }
        // Read to the end: the stream checks size and SHA-256 there.
        io::copy(&mut input, &mut io::sink()).map_err(read_err)?;
        Ok(input.n)
    })
    .await
    .map_err(|e| Error::unexpected("the unpacking task failed").with_source(e))?
}

struct CountingReader<R> {
    inner: R,
    n: u64,
    hold: Hold,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.hold.check()?;
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let t = std::time::SystemTime::now() - Duration::from_secs(secs);
        let f = File::open(path).unwrap_or_else(|_| unreachable!());
        f.set_modified(t).unwrap_or_else(|_| unreachable!());
    }

    #[test]
    fn spools_of_killed_runs_are_swept_and_live_ones_kept() {
        let parent = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let mut config = PgConfig::new("h", 5432, "u", "d");
        config.spool_dir = Some(parent.path().to_path_buf());
        // A live spool of this process (made old below, but locked).
        let live = Spool::create(&config, &Progress::none()).unwrap_or_else(|_| unreachable!());
        let live_dir = live
            .dump_file()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // A killed run: its lock file is there, nobody holds it.
        let dead = parent.path().join(format!("{PREFIX}dead"));
        std::fs::create_dir(&dead).unwrap_or_else(|_| unreachable!());
        std::fs::write(dead.join(LOCK), b"").unwrap_or_else(|_| unreachable!());
        std::fs::write(dead.join("dump.file"), [7u8; 1000]).unwrap_or_else(|_| unreachable!());
        age(&dead, 120);
        // A killed run a moment ago (it may be one being born): kept for now.
        let young = parent.path().join(format!("{PREFIX}young"));
        std::fs::create_dir(&young).unwrap_or_else(|_| unreachable!());
        std::fs::write(young.join(LOCK), b"").unwrap_or_else(|_| unreachable!());
        // An old spool without a lock file (an older zdr), and something else.
        let unlocked = parent.path().join(format!("{PREFIX}old"));
        std::fs::create_dir(&unlocked).unwrap_or_else(|_| unreachable!());
        age(&unlocked, 7200);
        let other = parent.path().join("not-a-spool");
        std::fs::create_dir(&other).unwrap_or_else(|_| unreachable!());
        age(&other, 7200);
        age(&live_dir, 7200);

        let mut removed: Vec<_> = sweep(parent.path()).into_iter().collect();
        removed.sort();
        assert_eq!(removed, vec![(dead, 1000), (unlocked, 0)]);
        assert!(young.exists() && other.exists() && live_dir.exists());
        drop(live);
        assert!(!live_dir.exists());
    }

    #[test]
    fn room_is_checked_before_spooling() {
        let dir = std::env::temp_dir();
        assert!(check_room(&dir, 1).is_ok());
        let e = check_room(&dir, u64::MAX)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("not enough free space") && e.contains(&dir.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn only_flat_names_are_accepted() {
        assert_eq!(entry_name(Path::new("toc.dat")).as_deref(), Some("toc.dat"));
        assert_eq!(
            entry_name(Path::new("./3456.dat")).as_deref(),
            Some("3456.dat")
        );
        assert_eq!(entry_name(Path::new("../x")), None);
        assert_eq!(entry_name(Path::new("/etc/passwd")), None);
        assert_eq!(entry_name(Path::new("a/b")), None);
        assert_eq!(entry_name(Path::new(".")), None);
    }
}
