//! The daemon's state file: per job its last runs and outcome, per component whether its
//! objective was missed — what catch-up, alerting once and the job metrics read. Written
//! atomically under a lock, so `zdr run-once` and a running daemon can share it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zdr_core::{Error, Result};

/// One job's record.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// When its last run started.
    #[serde(default)]
    pub last_started: Option<DateTime<Utc>>,
    /// When its last run ended.
    #[serde(default)]
    pub last_finished: Option<DateTime<Utc>>,
    /// When a run last succeeded.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// When a run last failed.
    #[serde(default)]
    pub last_failure: Option<DateTime<Utc>>,
    /// How long the last run took, in seconds.
    #[serde(default)]
    pub last_duration_seconds: Option<f64>,
    /// The last run failed (alerted once; its recovery is announced).
    #[serde(default)]
    pub failing: bool,
    /// The last run's error, if it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Drill jobs: the last drill's recovery time, in seconds.
    #[serde(default)]
    pub drill_rto_seconds: Option<f64>,
    /// How many runs ended, and how many of them failed.
    #[serde(default)]
    pub runs: u64,
    /// How many runs failed.
    #[serde(default)]
    pub failures: u64,
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DaemonState {
    /// Per job.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobState>,
    /// Per component: its recovery point objective was missed at the last check.
    #[serde(default)]
    pub rpo_breached: BTreeMap<String, bool>,
}

/// The state file at a path.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Read the state (empty when there is no file yet).
    pub(crate) async fn read(&self) -> Result<DaemonState> {
        let path = self.path.clone();
        blocking(move || {
            let _lock = lock(&path)?;
            read(&path)
        })
        .await
    }

    /// Read, change and write back the state under the lock; returns what `f` returns.
    pub(crate) async fn update<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut DaemonState) -> T + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        blocking(move || {
            let _lock = lock(&path)?;
            let mut state = read(&path)?;
            let out = f(&mut state);
            write(&path, &state)?;
            Ok(out)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::unexpected("the state file task failed").with_source(e))?
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::from_io(e, what).with_context("path", path.display().to_string())
}

/// An exclusive lock on `<state>.lock`, released when dropped.
fn lock(path: &Path) -> Result<std::fs::File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(io("cannot create the state file's directory", dir))?;
    }
    let lock_path = path.with_extension("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("cannot open the state file's lock", &lock_path))?;
    file.lock()
        .map_err(io("cannot lock the state file", &lock_path))?;
    Ok(file)
}

fn read(path: &Path) -> Result<DaemonState> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_input(format!(
                "the daemon's state file {} is not valid: {e}",
                path.display()
            ))
            .with_hint("remove it: the daemon starts afresh (and catches up on backups)")
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DaemonState::default()),
        Err(e) => Err(io("cannot read the state file", path)(e)),
    }
}

fn write(path: &Path, state: &DaemonState) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::unexpected("cannot encode the daemon state").with_source(e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io("cannot write the state file", &tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("cannot write the state file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot replace the state file", path))
}
