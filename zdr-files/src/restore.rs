//! Restore: unpack into a staging directory beside the target, check every file against
//! the manifest, refuse to clobber, then move the files into place.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::{Component as PathPart, Path, PathBuf};

use sha2::{Digest, Sha256};
use zdr_core::{Error, ErrorKind, Progress, RestoreOutcome, Result};

use crate::backup::mode_of;
use crate::facts::{EntryType, FileEntry, FilesFacts, octal};
use crate::journal::{self, Journal, Record};

/// At most this many paths are named in a conflict error or a note.
const LIST_LIMIT: usize = 10;

/// Everything a restore needs, moved into the blocking task.
pub(crate) struct Job {
    pub backup_id: String,
    pub facts: FilesFacts,
    /// Absolute.
    pub target: PathBuf,
    pub overwrite: bool,
    pub progress: Progress,
    pub task: String,
}

/// A directory removed (recursively) when dropped, so it goes on success, on error and
/// on panic alike.
struct Staging {
    path: PathBuf,
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// `<prefix><8 random hex digits>`.
pub(crate) fn random_name(prefix: &str) -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{prefix}{:08x}", random & 0xffff_ffff)
}

/// Create the directory `path`, readable by the owner only; it must not exist.
fn private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Create a new directory `<parent>/<prefix><random>`, readable by the owner only.
pub(crate) fn unique_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let mut last = None;
    for _ in 0..16 {
        let path = parent.join(random_name(prefix));
        let mut builder = fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        match builder.create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io_error(
                    e,
                    "cannot create a directory beside the target",
                    &path,
                ));
            }
        }
    }
    Err(io_error(
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        "cannot find a free directory name beside the target",
        parent,
    ))
}

/// A local I/O failure at `path`.
pub(crate) fn io_error(e: io::Error, what: &str, path: &Path) -> Error {
    let kind = e.kind();
    let err = Error::new(ErrorKind::Io, format!("{what}: {}", path.display()))
        .with_source(e)
        .with_context("path", path.display());
    if kind == io::ErrorKind::PermissionDenied {
        err.with_hint("run the restore as a user that may write there")
    } else {
        err
    }
}

/// A failure reading the archive stream: keeps the kind of errors raised by zdr (the
/// reader's checksum mismatch at end of stream is an Integrity error); a malformed archive
/// is an Integrity error too.
fn stream_error(e: io::Error) -> Error {
    Error::from_io(e, "cannot read the backup archive")
        .with_hint("the stored backup may be damaged; restore from another tier or another backup")
}

/// Run the restore, reading the archive from `stream`.
pub(crate) fn run(job: &Job, stream: impl Read) -> Result<RestoreOutcome> {
    let target = &job.target;
    let parent = target.parent().ok_or_else(|| {
        Error::bad_input(format!(
            "cannot restore into {}: it has no parent directory for staging",
            target.display()
        ))
        .with_context("path", target.display())
    })?;
    let target_existed = match fs::metadata(target) {
        Ok(m) if m.is_dir() => true,
        Ok(_) => {
            return Err(Error::bad_input(format!(
                "the restore target {} exists and is not a directory",
                target.display()
            ))
            .with_context("path", target.display()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error(e, "cannot inspect the restore target", target)),
    };
    fs::create_dir_all(parent)
        .map_err(|e| io_error(e, "cannot create the target's parent directory", parent))?;
    // A restore into this target that was killed midway is completed first.
    let repaired = journal::repair(parent, target)?;
    let target_existed = target_existed || (!repaired.is_empty() && target.is_dir());
    // Declared before the staging directory, so it is removed after it.
    let (mut journal, staging_path) = Journal::begin(parent, &job.backup_id)?;
    private_dir(&staging_path).map_err(|e| {
        io_error(
            e,
            "cannot create a directory beside the target",
            &staging_path,
        )
    })?;
    let staging = Staging { path: staging_path };

    job.progress.start(&job.task, Some(job.facts.total_bytes));
    unpack(job, stream, &staging.path)?;
    let states = plan(job)?;
    let conflicts: Vec<&str> = job
        .facts
        .entries
        .iter()
        .zip(&states)
        .filter(|(_, s)| matches!(s, State::Different(_)))
        .map(|(e, _)| e.path.as_str())
        .collect();
    if !conflicts.is_empty() && !job.overwrite {
        return Err(conflict_error(job, &conflicts, &states));
    }
    let keep = if conflicts.is_empty() {
        None
    } else {
        Some(unique_dir(
            parent,
            &format!(".zdr-replaced-{}-", job.backup_id),
        )?)
    };
    let record = Record {
        backup_id: job.backup_id.clone(),
        target: target.clone(),
        staging: staging.path.clone(),
        keep,
        facts: job.facts.clone(),
        states,
        conflicts: conflicts.iter().map(|c| (*c).to_owned()).collect(),
    };
    journal.applying(&record)?;
    zdr_core::failpoint("files-restore-before-moves");
    let mut outcome = apply(&record, false)?;
    if target_existed {
        note_extras(job, &mut outcome);
    }
    let mut notes = repaired;
    notes.append(&mut outcome.notes);
    outcome.notes = notes;
    job.progress.finish(&job.task);
    Ok(outcome)
}

/// Complete the moves of a restore that was killed while making them; a summary of what
/// was done.
pub(crate) fn resume(record: &Record) -> Result<String> {
    let outcome = apply(record, true)?;
    Ok(format!(
        "{} entries moved into place{}",
        outcome.items,
        record
            .keep
            .as_ref()
            .map(|k| format!(", replaced versions kept in {}", k.display()))
            .unwrap_or_default()
    ))
}

/// Unpack the archive into `staging`, checking each entry against the facts.
fn unpack(job: &Job, stream: impl Read, staging: &Path) -> Result<()> {
    let index = job.facts.index();
    let mut seen: HashSet<String> = HashSet::with_capacity(index.len());
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(stream_error)?;
    let mut pending_progress = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(stream_error)?;
        let raw = entry.path().map_err(stream_error)?.into_owned();
        let rel = safe_relative(&raw)?;
        let Some(fact) = index.get(rel.as_str()) else {
            return Err(Error::integrity(format!(
                "the archive holds {rel:?}, which the manifest does not record"
            ))
            .with_hint("the archive does not belong to this manifest; restore another backup"));
        };
        if !seen.insert(rel.clone()) {
            return Err(Error::integrity(format!(
                "the archive holds {rel:?} more than once"
            )));
        }
        let dest = staging.join(&rel);
        let kind = entry.header().entry_type();
        match (fact.kind, kind) {
            (EntryType::Dir, tar::EntryType::Directory) => {
                fs::create_dir(&dest)
                    .map_err(|e| io_error(e, "cannot create a staging directory", &dest))?;
            }
            (EntryType::File, tar::EntryType::Regular | tar::EntryType::Continuous) => {
                let (size, sha) = write_file(&mut entry, &dest, &mut |n| {
                    pending_progress += n;
                    if pending_progress >= 1 << 20 {
                        job.progress.advance(&job.task, pending_progress);
                        pending_progress = 0;
                    }
                })?;
                if size != fact.size || Some(sha.as_str()) != fact.sha256.as_deref() {
                    return Err(Error::integrity(format!(
                        "{rel} in the archive does not match the manifest \
                         ({size} bytes, sha256 {sha}; recorded {} bytes, sha256 {})",
                        fact.size,
                        fact.sha256.as_deref().unwrap_or("-")
                    ))
                    .with_context("path", &rel)
                    .with_hint(
                        "the stored backup is damaged; restore from another tier or another backup",
                    ));
                }
                set_mode(&dest, fact.mode)?;
                set_mtime(&dest, fact.mtime, false)?;
            }
            (EntryType::Symlink, tar::EntryType::Symlink) => {
                let link = entry.link_name().map_err(stream_error)?;
                let link = link.as_ref().and_then(|l| l.to_str()).map(str::to_owned);
                if link.as_deref() != fact.target.as_deref() {
                    return Err(Error::integrity(format!(
                        "the symlink {rel} in the archive points to {link:?}, the manifest \
                         records {:?}",
                        fact.target
                    ))
                    .with_context("path", &rel));
                }
                let link = link.unwrap_or_default();
                make_symlink(&link, &dest)?;
                set_mtime(&dest, fact.mtime, true)?;
            }
            (recorded, found) => {
                return Err(Error::integrity(format!(
                    "{rel} is a {recorded} in the manifest but a {found:?} entry in the archive"
                ))
                .with_context("path", &rel));
            }
        }
    }
    if pending_progress > 0 {
        job.progress.advance(&job.task, pending_progress);
    }
    // Read the stream to its very end: the reader reports a checksum mismatch only there.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(stream_error)?;

    let missing: Vec<&str> = job
        .facts
        .entries
        .iter()
        .filter(|e| !seen.contains(&e.path))
        .map(|e| e.path.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::integrity(format!(
            "the archive lacks {} entries the manifest records: {}",
            missing.len(),
            list(&missing)
        ))
        .with_hint("the stored backup is damaged; restore from another tier or another backup"));
    }
    Ok(())
}

/// A tar entry's path as a `/`-separated relative path, refusing absolute paths and `..`.
fn safe_relative(raw: &Path) -> Result<String> {
    let refuse = |why: &str| {
        Error::integrity(format!(
            "refusing archive entry {:?}: {why}",
            raw.display().to_string()
        ))
        .with_hint("the archive is damaged or was not written by zdr; restore another backup")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.components() {
        match part {
            PathPart::Normal(s) => parts.push(s.to_str().ok_or_else(|| refuse("not UTF-8"))?),
            PathPart::CurDir => {}
            PathPart::ParentDir => return Err(refuse("the path contains `..`")),
            PathPart::RootDir | PathPart::Prefix(_) => {
                return Err(refuse("the path is absolute"));
            }
        }
    }
    if parts.is_empty() {
        return Err(refuse("the path is empty"));
    }
    Ok(parts.join("/"))
}

/// Write one file from the archive into staging; return its size and SHA-256.
fn write_file(
    from: &mut impl Read,
    dest: &Path,
    advanced: &mut dyn FnMut(u64),
) -> Result<(u64, String)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(dest)
        .map_err(|e| io_error(e, "cannot create a staging file", dest))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 128 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(stream_error(e)),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| io_error(e, "cannot write a staging file", dest))?;
        size += n as u64;
        advanced(n as u64);
    }
    file.sync_all()
        .map_err(|e| io_error(e, "cannot write a staging file", dest))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// SHA-256 of the file at `path` (read in chunks).
pub(crate) fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// What is at the target where an entry goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum State {
    /// Nothing (or its parent is being created or replaced).
    Absent,
    /// The same thing is already there. For a file, `Some(mode)` when only its mode differs.
    Same(Option<u32>),
    /// Something else is there; the text says what.
    Different(String),
}

/// Compare every entry with what is at the target.
fn plan(job: &Job) -> Result<Vec<State>> {
    let mut states: Vec<State> = Vec::with_capacity(job.facts.entries.len());
    let mut by_path: HashMap<&str, usize> = HashMap::with_capacity(job.facts.entries.len());
    for e in &job.facts.entries {
        let parent_fresh = e.path.rsplit_once('/').is_some_and(|(parent, _)| {
            by_path
                .get(parent)
                .is_some_and(|i| !matches!(states[*i], State::Same(_)))
        });
        let state = if parent_fresh {
            State::Absent
        } else {
            inspect(e, &job.target.join(&e.path))?
        };
        by_path.insert(e.path.as_str(), states.len());
        states.push(state);
    }
    Ok(states)
}

fn inspect(e: &FileEntry, dest: &Path) -> Result<State> {
    let meta = match fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(State::Absent);
        }
        Err(err) => return Err(io_error(err, "cannot inspect", dest)),
    };
    let ft = meta.file_type();
    let found = describe(&meta);
    Ok(match e.kind {
        EntryType::Dir if ft.is_dir() => State::Same(None),
        EntryType::File if ft.is_file() => {
            if meta.len() != e.size {
                State::Different(format!("{} bytes instead of {}", meta.len(), e.size))
            } else {
                let (_, sha) = hash_file(dest).map_err(|err| io_error(err, "cannot read", dest))?;
                if Some(sha.as_str()) == e.sha256.as_deref() {
                    let mode = mode_of(&meta);
                    State::Same((mode != e.mode).then_some(mode))
                } else {
                    State::Different("different content".to_owned())
                }
            }
        }
        EntryType::Symlink if ft.is_symlink() => {
            let link =
                fs::read_link(dest).map_err(|err| io_error(err, "cannot read symlink", dest))?;
            if link.to_str() == e.target.as_deref() {
                State::Same(None)
            } else {
                State::Different(format!("a symlink to {}", link.display()))
            }
        }
        _ => State::Different(format!("a {found} where the backup has a {}", e.kind)),
    })
}

fn describe(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

fn conflict_error(job: &Job, conflicts: &[&str], states: &[State]) -> Error {
    let detail: Vec<String> = job
        .facts
        .entries
        .iter()
        .zip(states)
        .filter_map(|(e, s)| match s {
            State::Different(why) => Some(format!("{} ({why})", e.path)),
            _ => None,
        })
        .take(LIST_LIMIT)
        .collect();
    let more = conflicts.len().saturating_sub(LIST_LIMIT);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Error::new(
        ErrorKind::Conflict,
        format!(
            "{} paths at {} differ from the backup: {}{more}; nothing was changed",
            conflicts.len(),
            job.target.display(),
            detail.join(", ")
        ),
    )
    .with_context("path", job.target.display())
    .with_hint(
        "restore into an empty directory and compare, or restore with overwrite \
         (the replaced versions are kept beside the target)",
    )
}

/// Move the staged entries into the target. With `resume`, the moves of a killed run are
/// completed: entries already moved (no longer staged) and paths already kept aside are
/// skipped, and a path the killed run was copying into place is replaced.
fn apply(record: &Record, resume: bool) -> Result<RestoreOutcome> {
    let target = &record.target;
    let staging = &record.staging;
    let states = &record.states;
    let keep = &record.keep;
    let conflicts: Vec<&str> = record.conflicts.iter().map(String::as_str).collect();
    fs::create_dir_all(target)
        .map_err(|e| io_error(e, "cannot create the restore target", target))?;

    let mut outcome = RestoreOutcome {
        target: target.display().to_string(),
        ..RestoreOutcome::default()
    };
    let mut identical = 0u64;
    let mut mode_fixed: Vec<&str> = Vec::new();
    let mut first_move = true;
    for (e, state) in record.facts.entries.iter().zip(states) {
        let src = staging.join(&e.path);
        let dest = target.join(&e.path);
        let staged = e.kind == EntryType::Dir || fs::symlink_metadata(&src).is_ok();
        if resume && !staged {
            continue; // moved into place before the kill
        }
        if let (State::Different(_), Some(keep)) = (state, keep) {
            let kept = keep.join(&e.path);
            if !(resume && fs::symlink_metadata(&kept).is_ok()) {
                move_aside(&dest, &kept)?;
                if first_move {
                    zdr_core::failpoint("files-restore-after-aside");
                }
            }
        }
        match (e.kind, state) {
            (EntryType::Dir, State::Same(_)) => {}
            (EntryType::Dir, _) => match fs::create_dir(&dest) {
                Ok(()) => {}
                Err(err) if resume && err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io_error(err, "cannot create directory", &dest)),
            },
            (_, State::Same(mode)) => {
                identical += 1;
                if mode.is_some() {
                    set_mode(&dest, e.mode)?;
                    mode_fixed.push(&e.path);
                }
            }
            (_, state) => {
                if *state == State::Absent && !resume && fs::symlink_metadata(&dest).is_ok() {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!(
                            "{} appeared at the target during the restore; the restore stopped \
                             part way",
                            e.path
                        ),
                    )
                    .with_context("path", dest.display())
                    .with_hint("stop whatever writes to the target and run the restore again"));
                }
                move_into_place(&src, &dest, e)?;
                outcome.items += 1;
                outcome.bytes += e.size;
                if first_move {
                    first_move = false;
                    zdr_core::failpoint("files-restore-after-first-move");
                }
            }
        }
    }
    // Directories last, deepest first: adding their contents changed their mtimes, and a
    // read-only directory must still accept its contents while they are moved in.
    for e in record.facts.entries.iter().rev() {
        if e.kind == EntryType::Dir {
            let dest = target.join(&e.path);
            set_mode(&dest, e.mode)?;
            set_mtime(&dest, e.mtime, false)?;
        }
    }
    if let Ok(dir) = File::open(target) {
        let _ = dir.sync_all();
    }

    if identical > 0 {
        outcome.notes.push(format!(
            "{identical} files already at the target were identical and kept"
        ));
    }
    if !mode_fixed.is_empty() {
        outcome.notes.push(format!(
            "restored the mode of {} identical files: {}",
            mode_fixed.len(),
            list(&mode_fixed)
        ));
    }
    if let Some(keep) = keep
        && !conflicts.is_empty()
    {
        outcome.notes.push(format!(
            "replaced {} paths that differed from the backup ({}); their previous versions \
             are kept in {} until you delete it",
            conflicts.len(),
            list(&conflicts),
            keep.display()
        ));
    }
    Ok(outcome)
}

/// Keep what is at `dest` by moving it to `keep` (in the directory beside the target).
fn move_aside(dest: &Path, keep: &Path) -> Result<()> {
    if let Some(parent) = keep.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| io_error(e, "cannot create a directory for replaced files", parent))?;
    }
    match fs::rename(dest, keep) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let meta =
                fs::symlink_metadata(dest).map_err(|err| io_error(err, "cannot inspect", dest))?;
            if meta.is_dir() {
                return Err(io_error(
                    e,
                    "cannot keep the replaced directory: the target is on another filesystem \
                     than its parent",
                    dest,
                )
                .with_hint("move it away by hand and run the restore again"));
            }
            copy_entry(dest, keep, &meta)?;
            fs::remove_file(dest).map_err(|err| io_error(err, "cannot replace", dest))
        }
        Err(e) => Err(io_error(e, "cannot move aside the replaced path", dest)),
    }
}

/// Rename a staged file or symlink into place; copy when the target is on another
/// filesystem than its parent (a mount point).
fn move_into_place(src: &Path, dest: &Path, e: &FileEntry) -> Result<()> {
    match fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::CrossesDevices => {
            let meta =
                fs::symlink_metadata(src).map_err(|err| io_error(err, "cannot inspect", src))?;
            copy_entry(src, dest, &meta)?;
            if e.kind == EntryType::File {
                set_mode(dest, e.mode)?;
            }
            set_mtime(dest, e.mtime, e.kind == EntryType::Symlink)
        }
        Err(err) => Err(io_error(
            err,
            "cannot move the restored file into place",
            dest,
        )),
    }
}

/// Copy a file or symlink (not a directory), keeping mode and mtime.
fn copy_entry(src: &Path, dest: &Path, meta: &fs::Metadata) -> Result<()> {
    let mtime = filetime::FileTime::from_last_modification_time(meta);
    if meta.file_type().is_symlink() {
        let link = fs::read_link(src).map_err(|e| io_error(e, "cannot read symlink", src))?;
        let link = link.to_str().unwrap_or_default().to_owned();
        make_symlink(&link, dest)?;
        filetime::set_symlink_file_times(dest, mtime, mtime)
            .map_err(|e| io_error(e, "cannot set the time of", dest))
    } else {
        fs::copy(src, dest).map_err(|e| io_error(e, "cannot copy into place", dest))?;
        if let Ok(f) = File::open(dest) {
            let _ = f.sync_all();
        }
        fs::set_permissions(dest, meta.permissions())
            .map_err(|e| io_error(e, "cannot set the mode of", dest))?;
        filetime::set_file_mtime(dest, mtime)
            .map_err(|e| io_error(e, "cannot set the time of", dest))
    }
}

#[cfg(unix)]
fn make_symlink(link: &str, dest: &Path) -> Result<()> {
    std::os::unix::fs::symlink(link, dest).map_err(|e| io_error(e, "cannot create symlink", dest))
}

#[cfg(not(unix))]
fn make_symlink(_link: &str, dest: &Path) -> Result<()> {
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "cannot restore the symlink {} on this platform",
            dest.display()
        ),
    ))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(e, &format!("cannot set mode {}", octal(mode)), path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

fn set_mtime(path: &Path, mtime: i64, symlink: bool) -> Result<()> {
    let t = filetime::FileTime::from_unix_time(mtime, 0);
    let r = if symlink {
        filetime::set_symlink_file_times(path, t, t)
    } else {
        filetime::set_file_mtime(path, t)
    };
    r.map_err(|e| io_error(e, "cannot set the modification time of", path))
}

/// Note the entries at the target that the backup does not have (left alone).
fn note_extras(job: &Job, outcome: &mut RestoreOutcome) {
    let Ok(walked) = crate::walk::walk(&job.target, &[], &Progress::none()) else {
        return;
    };
    let index = job.facts.index();
    let extras: Vec<&str> = walked
        .entries
        .iter()
        .map(|w| w.rel.as_str())
        .filter(|rel| !index.contains_key(rel))
        .collect();
    if !extras.is_empty() {
        outcome.notes.push(format!(
            "{} entries at the target are not in the backup and were left alone: {}",
            extras.len(),
            list(&extras)
        ));
    }
}

/// Up to [`LIST_LIMIT`] items, comma-separated, with a count of the rest.
pub(crate) fn list(items: &[&str]) -> String {
    let mut s = items
        .iter()
        .take(LIST_LIMIT)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LIST_LIMIT {
        s.push_str(&format!(" and {} more", items.len() - LIST_LIMIT));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative(Path::new("./a/b")).ok(),
            Some("a/b".to_owned())
        );
        for bad in ["../evil", "a/../../b", "/etc/passwd", "."] {
            let kind = safe_relative(Path::new(bad)).err().map(|e| e.kind());
            assert_eq!(kind, Some(ErrorKind::Integrity), "{bad}");
        }
    }
}
