//! The directory format (`pg_dump -Fd -j N`): pg_dump cannot stream it, so it is written
//! into a spool directory on disk, which is then streamed as one tar artifact; a restore
//! unpacks the artifact into a spool directory and runs `pg_restore -j N` on it. Spools are
//! private (0700) temporary directories, removed when done, on failure, and when the
//! future owning them is dropped.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::io::SyncIoBridge;
use zdr_core::{ArtifactWrite, BoxRead, Error, ErrorKind, Result};

use crate::PgConfig;

/// Buffer between tar and the async pipeline (one pipeline chunk).
const BUF: usize = 1 << 20;

/// A private temporary directory under the configured spool directory.
///
/// The directory is shared with the blocking thread that packs or unpacks it, and is
/// deleted when the last of them lets go: dropping a `Spool` (a dropped restore future)
/// also tells that thread to stop at its next read or write, so nothing writes into the
/// spool after it is deleted.
pub(crate) struct Spool {
    dir: Option<Arc<tempfile::TempDir>>,
    cancel: Arc<AtomicBool>,
}

/// What the blocking thread holds of a [`Spool`].
#[derive(Clone)]
struct Hold {
    _dir: Option<Arc<tempfile::TempDir>>,
    cancel: Arc<AtomicBool>,
}

impl Hold {
    fn check(&self) -> io::Result<()> {
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

impl Spool {
    /// Create `zdr-pg-spool-*` in `config.spool_dir` (default: the system temp dir).
    pub(crate) fn create(config: &PgConfig) -> Result<Self> {
        let parent = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("zdr-pg-spool-")
            .tempdir_in(&parent)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot create a spool directory in {}", parent.display()),
                )
                .with_source(e)
                .with_hint(
                    "the directory format needs `spool_dir` with room for one uncompressed dump",
                )
            })?;
        Ok(Self {
            dir: Some(Arc::new(dir)),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    fn hold(&self) -> Hold {
        Hold {
            _dir: self.dir.clone(),
            cancel: self.cancel.clone(),
        }
    }

    /// Where pg_dump writes / pg_restore reads (inside the spool; created by them or by
    /// [`unpack`]).
    pub(crate) fn dump_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.path().join("dump"))
    }

    /// Remove the spool off the async threads (a dump is large).
    pub(crate) async fn remove(mut self) {
        if let Some(d) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || match Arc::try_unwrap(d) {
                Ok(d) => d.close(),
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
