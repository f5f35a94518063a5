//! Backup: a sorted walk of the tree streamed as a tar, hashing each file as it is read.

use std::fs::{File, Metadata};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zdr_core::{Error, ErrorKind, Progress, Result};

use crate::facts::{EntryType, FACTS_FORMAT, FileEntry, FilesFacts};
use crate::walk::{self, Kind, read_error};

/// Report progress in steps of this many bytes, not on every read.
const PROGRESS_STEP: u64 = 1 << 20;
/// Buffer between the tar writer and the async artifact stream.
const WRITE_BUFFER: usize = 256 << 10;

/// Walk `root` and write it as a tar into `out`; return `out` (so the caller can finish
/// the artifact) and the facts.
pub(crate) fn write_tar<W: Write>(
    out: W,
    root: &Path,
    root_text: String,
    exclude: &[String],
    progress: &Progress,
    task: &str,
) -> Result<(W, FilesFacts)> {
    let walked = walk::walk(root, exclude, progress)?;
    let total: u64 = walked
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File))
        .map(|e| e.meta.len())
        .sum();
    progress.start(task, Some(total));

    let mut facts = FilesFacts {
        format: FACTS_FORMAT,
        root: root_text,
        file_count: 0,
        dir_count: 0,
        symlink_count: 0,
        total_bytes: 0,
        entries: Vec::with_capacity(walked.entries.len()),
        skipped: walked.skipped,
        exclude: exclude.to_vec(),
    };
    let mut builder = tar::Builder::new(BufWriter::with_capacity(WRITE_BUFFER, out));
    let mut reported = Reported {
        progress,
        task,
        pending: 0,
    };
    for e in walked.entries {
        let write_err = |err: io::Error| {
            Error::from_io(err, format!("cannot write {} to the archive", e.rel))
                .with_context("path", e.abs.display())
        };
        let mode = mode_of(&e.meta);
        let mtime = mtime_of(&e.meta);
        let mut header = header_for(&e.meta, mtime);
        match &e.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, &e.rel, io::empty())
                    .map_err(write_err)?;
                facts.dir_count += 1;
                facts.entries.push(FileEntry {
                    path: e.rel,
                    kind: EntryType::Dir,
                    size: 0,
                    mode,
                    mtime,
                    sha256: None,
                    target: None,
                });
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder
                    .append_link(&mut header, &e.rel, target)
                    .map_err(write_err)?;
                facts.symlink_count += 1;
                facts.entries.push(FileEntry {
                    path: e.rel,
                    kind: EntryType::Symlink,
                    size: 0,
                    mode,
                    mtime,
                    sha256: None,
                    target: Some(target.clone()),
                });
            }
            Kind::File => {
                let file = match File::open(&e.abs) {
                    Ok(f) => f,
                    Err(err) => return Err(read_error(err, "cannot open", &e.abs)),
                };
                // Trust the open file, not the earlier lstat, and make sure it is still the
                // same file (not replaced by a symlink or another file in between).
                let meta = file
                    .metadata()
                    .map_err(|err| read_error(err, "cannot inspect", &e.abs))?;
                if !meta.is_file() || !same_file(&meta, &e.meta) {
                    return Err(changed(&e.abs, "was replaced while being backed up"));
                }
                let size = meta.len();
                let mtime = mtime_of(&meta);
                let mut header = header_for(&meta, mtime);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                let mut reader = HashingReader {
                    inner: file,
                    path: &e.abs,
                    expected: size,
                    read: 0,
                    hasher: Sha256::new(),
                    reported: &mut reported,
                };
                builder
                    .append_data(&mut header, &e.rel, &mut reader)
                    .map_err(write_err)?;
                let sha256 = hex::encode(reader.hasher.finalize());
                facts.file_count += 1;
                facts.total_bytes += size;
                facts.entries.push(FileEntry {
                    path: e.rel,
                    kind: EntryType::File,
                    size,
                    mode: mode_of(&meta),
                    mtime,
                    sha256: Some(sha256),
                    target: None,
                });
            }
        }
    }
    reported.flush();
    let buffered = builder
        .into_inner()
        .map_err(|e| Error::from_io(e, "cannot finish the archive"))?;
    let mut out = buffered
        .into_inner()
        .map_err(|e| Error::from_io(e.into_error(), "cannot finish the archive"))?;
    out.flush()
        .map_err(|e| Error::from_io(e, "cannot finish the archive"))?;
    Ok((out, facts))
}

fn header_for(meta: &Metadata, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode_of(meta));
    h.set_mtime(u64::try_from(mtime).unwrap_or(0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        h.set_uid(u64::from(meta.uid()));
        h.set_gid(u64::from(meta.gid()));
    }
    h
}

/// Permission bits of `meta` (with setuid, setgid, sticky).
#[cfg(unix)]
pub(crate) fn mode_of(meta: &Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Permission bits of `meta`: a best guess where there are none.
#[cfg(not(unix))]
pub(crate) fn mode_of(meta: &Metadata) -> u32 {
    match (meta.is_dir(), meta.permissions().readonly()) {
        (true, _) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    }
}

/// Modification time in whole seconds since the Unix epoch (negative before it; 0 if the
/// platform has no modification time).
pub(crate) fn mtime_of(meta: &Metadata) -> i64 {
    let Ok(t) = meta.modified() else { return 0 };
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_a: &Metadata, _b: &Metadata) -> bool {
    true
}

fn changed(path: &Path, what: &str) -> Error {
    Error::new(ErrorKind::Source, format!("{} {what}", path.display()))
        .with_context("path", path.display())
        .with_hint("the file changed during the backup; run the backup again when it is quiet")
}

/// Progress in steps of [`PROGRESS_STEP`].
struct Reported<'a> {
    progress: &'a Progress,
    task: &'a str,
    pending: u64,
}

impl Reported<'_> {
    fn add(&mut self, n: u64) {
        self.pending += n;
        if self.pending >= PROGRESS_STEP {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending > 0 {
            self.progress.advance(self.task, self.pending);
            self.pending = 0;
        }
    }
}

/// Hands tar exactly `expected` bytes of a file while hashing them, and fails (instead of
/// letting tar write a header whose size disagrees with its data) when the file turns out
/// shorter or longer than it was when its header was made.
struct HashingReader<'a, 'p> {
    inner: File,
    path: &'a Path,
    expected: u64,
    read: u64,
    hasher: Sha256,
    reported: &'a mut Reported<'p>,
}

impl Read for HashingReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.expected - self.read;
        if left == 0 {
            let mut probe = [0u8; 1];
            let n = retry(|| self.inner.read(&mut probe))
                .map_err(|e| read_error(e, "cannot read", self.path).into_io())?;
            if n > 0 {
                return Err(changed(
                    self.path,
                    &format!("grew beyond {} bytes while being backed up", self.expected),
                )
                .into_io());
            }
            return Ok(0);
        }
        let max = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = retry(|| self.inner.read(&mut buf[..max]))
            .map_err(|e| read_error(e, "cannot read", self.path).into_io())?;
        if n == 0 {
            return Err(changed(
                self.path,
                &format!(
                    "shrank while being backed up: expected {} bytes, found {}",
                    self.expected, self.read
                ),
            )
            .into_io());
        }
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.reported.add(n as u64);
        Ok(n)
    }
}

fn retry(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
