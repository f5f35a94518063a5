//! The intent record of a restore, so a restore killed while it moves files into place is
//! completed by the next zdr run that touches the same directory.
//!
//! Beside the target, a restore writes `.zdr-restore-<backup>-<random>.journal` before it
//! creates its staging directory (the same name without `.journal`) and holds an exclusive
//! lock on it while it runs. Once every file is staged and checked, the record names the
//! target, the staging and keep directories, and what each entry replaces; only then are
//! files moved. A journal whose lock is free belongs to a dead run: if it had reached the
//! moves, [`repair`] completes them (the staged files are the verified backup, the replaced
//! versions are in the keep directory), otherwise it only removes the staging directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zdr_core::{Error, Result};

use crate::facts::FilesFacts;
use crate::restore::{State, io_error};

/// Name prefix of staging directories and journals.
pub(crate) const PREFIX: &str = ".zdr-restore-";
const SUFFIX: &str = ".journal";

/// What a journal records once the moves may begin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub backup_id: String,
    pub target: PathBuf,
    pub staging: PathBuf,
    pub keep: Option<PathBuf>,
    pub facts: FilesFacts,
    pub states: Vec<State>,
    pub conflicts: Vec<String>,
}

/// A live journal: its file, locked for the run; removed when dropped (the run ended, by
/// success or by an error it reported).
pub(crate) struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Create and lock a new journal beside the target; returns it and the path its staging
    /// directory must take.
    pub(crate) fn begin(parent: &Path, backup_id: &str) -> Result<(Self, PathBuf)> {
        let mut last = None;
        for _ in 0..16 {
            let stem = crate::restore::random_name(&format!("{PREFIX}{backup_id}-"));
            let path = parent.join(format!("{stem}{SUFFIX}"));
            let staging = parent.join(&stem);
            if staging.exists() {
                continue;
            }
            let mut options = OpenOptions::new();
            options.write(true).read(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(&path) {
                Ok(file) => {
                    lock(&file, &path)?;
                    return Ok((Self { path, file }, staging));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_error(e, "cannot create the restore journal", &path)),
            }
        }
        Err(io_error(
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
            "cannot find a free name for the restore journal",
            parent,
        ))
    }

    /// Record that the moves begin (written and flushed to disk before the first move).
    pub(crate) fn applying(&mut self, record: &Record) -> Result<()> {
        let text = serde_json::to_vec(record)
            .map_err(|e| Error::unexpected(format!("cannot encode the journal: {e}")))?;
        let path = self.path.clone();
        let io = |e| io_error(e, "cannot write the restore journal", &path);
        self.file.set_len(0).map_err(io)?;
        self.file.write_all(&text).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        if let Some(parent) = self.path.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn lock(file: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|e| io_error(e.into(), "cannot lock the restore journal", path))
}

/// Complete or clean up what dead restores into `target` left in `parent`. Returns a note
/// per repair. Journals locked by a live restore, and journals of other targets, are left
/// alone.
pub(crate) fn repair(parent: &Path, target: &Path) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(notes),
        Err(e) => return Err(io_error(e, "cannot look for interrupted restores", parent)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_prefix(PREFIX)
            .and_then(|_| name.strip_suffix(SUFFIX))
        else {
            continue;
        };
        let path = entry.path();
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        if lock(&file, &path).is_err() {
            continue; // a live restore
        }
        let mut text = Vec::new();
        let _ = file.read_to_end(&mut text);
        let staging = parent.join(stem);
        match serde_json::from_slice::<Record>(&text) {
            Ok(record) if record.target == target => {
                let done = crate::restore::resume(&record)?;
                notes.push(format!(
                    "completed a restore of backup {} that was interrupted while moving files into place: {done}",
                    record.backup_id
                ));
            }
            // Another target's record: its own restore repairs it.
            Ok(_) => continue,
            // Killed before the moves (or while writing the record): nothing was moved.
            Err(_) => {
                notes.push(format!(
                    "removed the staging directory of a restore interrupted before it changed anything: {}",
                    staging.display()
                ));
            }
        }
        let _ = fs::remove_dir_all(&staging);
        let _ = fs::remove_file(&path);
    }
    Ok(notes)
}
