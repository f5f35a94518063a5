//! Point-in-time recovery: pick the base backup, check the WAL chain, restore the base into a
//! new data directory, start a recovery instance on a side port with `restore_command`
//! pointing at the archive, and wait until the target is reached.
//!
//! The live cluster is never touched here. What to do with the recovered instance — copy a
//! database across through the safe logical restore, inspect it, or swap it in — is the
//! caller's choice ([`RecoveryInstance`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use zdr_core::{CommandRunner, CommandSpec, Error, ErrorKind, Manifest, Progress, Result};
use zdr_storage::Repository;

use crate::basebackup::{BASE_ARTIFACT, BaseBackupFacts};
use crate::wal::{TimelineSpan, WalArchive, WalListing};
use crate::walname::{Lsn, Segment};
use crate::{PgConfig, pg, tools};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// The last commit at or before this time (`recovery_target_time`).
    Time(DateTime<Utc>),
    /// This WAL location (`recovery_target_lsn`).
    Lsn(Lsn),
    /// This transaction id (`recovery_target_xid`).
    Xid(String),
    /// A restore point made with `pg_create_restore_point` (`recovery_target_name`).
    Name(String),
    /// The end of the archive; the instance is promoted there.
    Latest,
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            Self::Lsn(l) => write!(f, "LSN {l}"),
            Self::Xid(x) => write!(f, "transaction {x}"),
            Self::Name(n) => write!(f, "restore point {n:?}"),
            Self::Latest => f.write_str("the end of the archive"),
        }
    }
}

/// The chosen base backup and the WAL that will be replayed.
#[derive(Debug, Clone, Serialize)]
pub struct PitrPlan {
    /// The base backup restored.
    pub backup: Manifest,
    /// Its facts.
    #[serde(skip)]
    pub facts: BaseBackupFacts,
    /// The timelines followed.
    pub path: Vec<TimelineSpan>,
    /// The last segment of the unbroken WAL chain checked.
    pub chain_end: String,
    /// Every segment of that chain, in replay order (from the backup's start).
    #[serde(skip)]
    pub segments: Vec<Segment>,
    /// The timelines with a history file in the archive.
    #[serde(skip)]
    pub histories: Vec<u32>,
}

/// How to run the recovery instance.
#[derive(Debug, Clone)]
pub struct PitrOptions {
    /// The new data directory (must not exist, or be empty).
    pub data_dir: PathBuf,
    /// The port of the recovery instance (never the live one).
    pub port: u16,
    /// `restore_command` for the instance, with `%f` and `%p`, such as
    /// `/usr/local/bin/zdr --config /etc/zdr.toml wal fetch --component db %f %p`.
    pub restore_command: String,
    /// Follow this timeline (default: the newest in the archive).
    pub timeline: Option<u32>,
    /// Run the server as this OS user (through `runuser`) when zdr runs as root.
    pub run_as: Option<String>,
    /// How long recovery may take before it is abandoned.
    pub timeout: Duration,
}

/// What recovery reached.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The base backup used.
    pub backup: String,
    /// The target, as text.
    pub target: String,
    /// The last WAL location replayed.
    pub replay_lsn: Option<String>,
    /// The commit time of the last transaction replayed.
    pub last_commit: Option<DateTime<Utc>>,
    /// Whether the instance is paused at the target (false: promoted at the end of WAL).
    pub paused: bool,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The port.
    pub port: u16,
    /// Seconds from the start of the restore to the target reached.
    pub seconds: f64,
    /// Whether `pg_verifybackup` checked the restored base against its manifest.
    pub base_verified: bool,
    /// Databases found in the recovered instance.
    pub databases: Vec<String>,
}

/// Choose the base backup for `target` among `backups` (any manifests of the component; the
/// base backups are picked out) and check the WAL chain it needs in the archive.
///
/// # Errors
/// [`ErrorKind::BadInput`] for a target in the future or before the oldest usable base
/// backup, or no base backup at all; [`ErrorKind::NotFound`] naming the first missing WAL
/// segment; storage errors.
pub async fn plan(
    backups: &[Manifest],
    archive: &WalArchive,
    target: &RecoveryTarget,
    timeline: Option<u32>,
    now: DateTime<Utc>,
) -> Result<PitrPlan> {
    let mut bases: Vec<(Manifest, BaseBackupFacts)> = backups
        .iter()
        .filter(|m| BaseBackupFacts::is_base(m))
        .filter_map(|m| Some((m.clone(), BaseBackupFacts::from_manifest(m).ok()?)))
        .collect();
    bases.sort_by_key(|b| b.0.finished_at);
    let Some(oldest) = bases.first() else {
        return Err(
            Error::bad_input("there is no base backup of this component to recover from")
                .with_hint("take a base backup first"),
        );
    };
    let chosen = match target {
        RecoveryTarget::Time(t) => {
            if *t > now {
                return Err(Error::bad_input(format!(
                    "the target time {} is in the future (now is {})",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    now.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
            bases
                .iter()
                .rev()
                .find(|(m, _)| m.finished_at <= *t)
                .ok_or_else(|| {
                    Error::bad_input(format!(
                    "the target time {} is before the oldest base backup, {}, which finished at {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    oldest.0.id,
                    oldest.0.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
                ))
                .with_hint("nothing older can be recovered to; the catalog lists the base backups")
                })?
        }
        RecoveryTarget::Lsn(l) => bases
            .iter()
            .rev()
            .find(|(_, f)| f.stop_lsn <= *l)
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "the target LSN {l} is before the end of the oldest base backup, {} \
                     (consistent at {})",
                    oldest.0.id, oldest.1.stop_lsn
                ))
            })?,
        RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) | RecoveryTarget::Latest => {
            bases.last().unwrap_or(oldest)
        }
    };
    let (backup, facts) = chosen.clone();
    let listing = union_listing(archive).await?;
    let path = archive
        .timeline_path(facts.timeline, timeline, &listing)
        .await?;
    // The backup itself needs its WAL up to the stop point.
    archive.check_chain(&listing, &path, facts.start_lsn, Some(facts.stop_lsn))?;
    let until = match target {
        RecoveryTarget::Lsn(l) => Some(*l),
        _ => None,
    };
    let segments = archive.chain(&listing, &path, facts.start_lsn, until)?;
    let chain_end = archive.check_chain(&listing, &path, facts.start_lsn, until)?;
    Ok(PitrPlan {
        backup,
        facts,
        path,
        chain_end,
        segments,
        histories: listing.histories.iter().copied().collect(),
    })
}

/// What every tier of the archive holds, together (fetch tries them all).
async fn union_listing(archive: &WalArchive) -> Result<WalListing> {
    let mut all = WalListing::default();
    for i in 0..archive.tiers().len() {
        let l = archive.list(i).await?;
        for (tl, segs) in l.segments {
            all.segments.entry(tl).or_default().extend(segs);
        }
        all.histories.extend(l.histories);
        all.incomplete.extend(l.incomplete);
        if all.newest.as_ref().map(|n| &n.0) < l.newest.as_ref().map(|n| &n.0) {
            all.newest = l.newest;
        }
    }
    Ok(all)
}

/// What marks a recovery in progress: `<data dir>.zdr-lock` beside the data directory,
/// locked by the run for as long as it owns the instance and removed when it lets go. A
/// lock file nobody holds belongs to a run that was killed: [`clean_abandoned`] stops its
/// server and removes its data directory. An instance kept on purpose has no lock file.
const LOCK_SUFFIX: &str = ".zdr-lock";

struct RunLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl RunLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let path = lock_path(dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::from_io(e, "cannot create the recovery directory's parent")
                    .with_context("path", parent.display())
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::from_io(e, "cannot create the recovery lock")
                    .with_context("path", path.display())
            })?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| {
                Error::bad_input(format!(
                    "another recovery is using the data directory {}",
                    dir.display()
                ))
                .with_context("path", dir.display())
            },
        )?;
        Ok(Self { path, _file: file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(LOCK_SUFFIX);
    dir.with_file_name(name)
}

/// Stop and remove the recovery instances under `parent` that killed runs left behind (a
/// lock file nobody holds; see the module's recovery lock), so a later `pitr` does not
/// find the memory, the port and the disk still taken. Returns a note per instance.
/// Instances kept on purpose, and recoveries in progress, are left alone.
pub async fn clean_abandoned(
    parent: &Path,
    live: &PgConfig,
    runner: &dyn CommandRunner,
    run_as: Option<&str>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(parent).await else {
        return notes;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(LOCK_SUFFIX) else {
            continue;
        };
        let lock = entry.path();
        let Ok(file) = std::fs::OpenOptions::new().write(true).open(&lock) else {
            continue;
        };
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue; // a recovery in progress
        }
        let dir = parent.join(stem);
        if tokio::fs::metadata(dir.join("postmaster.pid"))
            .await
            .is_ok()
        {
            let _ = pg_ctl(
                runner,
                live,
                run_as,
                live.bin_dir.as_deref(),
                &["stop", "-m", "immediate", "-w", "-D"],
                &dir,
            )
            .await;
        }
        match remove_dir(&dir).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&lock);
                notes.push(format!(
                    "stopped and removed the recovery instance in {} left by an interrupted recovery",
                    dir.display()
                ));
            }
            Err(e) => notes.push(format!(
                "could not remove the recovery instance in {} left by an interrupted recovery: {e}",
                dir.display()
            )),
        }
        drop(file);
    }
    notes
}

/// A recovery instance: a restored data directory with a server on a side port.
pub struct RecoveryInstance {
    config: PgConfig,
    data_dir: PathBuf,
    runner: Arc<dyn CommandRunner>,
    run_as: Option<String>,
    bin_dir: Option<PathBuf>,
    report: RecoveryReport,
    /// Held while this handle lives: the instance is not abandoned.
    _lock: RunLock,
}

impl fmt::Debug for RecoveryInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryInstance")
            .field("data_dir", &self.data_dir)
            .field("report", &self.report)
            .finish()
    }
}

impl RecoveryInstance {
    /// What recovery reached.
    #[must_use]
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Connection settings for the instance (the live cluster's user and password, the
    /// side port), for reading from it — such as dumping a database across.
    #[must_use]
    pub fn config(&self, database: &str) -> PgConfig {
        let mut c = self.config.clone();
        c.database = database.to_owned();
        c
    }

    /// Stop the server (fast shutdown) and keep the data directory.
    ///
    /// # Errors
    /// When `pg_ctl stop` fails.
    pub async fn stop(&self) -> Result<()> {
        pg_ctl(
            self.runner.as_ref(),
            &self.config,
            self.run_as.as_deref(),
            self.bin_dir.as_deref(),
            &["stop", "-m", "fast", "-w", "-D"],
            &self.data_dir,
        )
        .await
        .map(|_| ())
    }

    /// Make the instance a primary that archives: restart it with the cluster's own archive
    /// settings (the `archive_mode = off` of the recovery instance removed), wait until it is
    /// paused at the target again, and promote it. PostgreSQL then starts a new timeline and
    /// archives its history file and segments through the cluster's `archive_command`, so
    /// later recoveries can follow it. Returns the new timeline.
    ///
    /// # Errors
    /// When the instance is not paused at a target (`--target latest` promotes by itself,
    /// without archiving), or the restart or promotion fails.
    pub async fn promote(&mut self, progress: &Progress) -> Result<u32> {
        if !self.report.paused {
            return Err(Error::bad_input(
                "the recovery instance is not paused at a target (it was promoted at the end of \
                 the archive without archiving); recover to a target to promote with archiving",
            ));
        }
        self.stop().await?;
        let auto = self.data_dir.join("postgresql.auto.conf");
        let text = tokio::fs::read_to_string(&auto).await.map_err(|e| {
            Error::from_io(e, "cannot read postgresql.auto.conf")
                .with_context("path", auto.display())
        })?;
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("archive_mode = 'off'"))
            .collect();
        tokio::fs::write(&auto, format!("{}\n", kept.join("\n")))
            .await
            .map_err(|e| {
                Error::from_io(e, "cannot write postgresql.auto.conf")
                    .with_context("path", auto.display())
            })?;
        let log = self.data_dir.join("zdr-recovery.log");
        let started = pg_ctl(
            self.runner.as_ref(),
            &self.config,
            self.run_as.as_deref(),
            self.bin_dir.as_deref(),
            &[
                "start",
                "-w",
                "-t",
                "600",
                "-l",
                &log.display().to_string(),
                "-D",
            ],
            &self.data_dir,
        )
        .await;
        if let Err(e) = started {
            return Err(server_failed(
                e,
                &FileLog {
                    path: &log,
                    config: &self.config,
                },
            )
            .await);
        }
        let target = RecoveryTarget::Name(String::new()); // any target: wait for the pause
        wait_for_target(
            &self.config,
            &target,
            Duration::from_secs(600),
            &FileLog {
                path: &log,
                config: &self.config,
            },
            progress,
        )
        .await?;
        let mut conn = pg::connect(&self.config, &self.config.database).await?;
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 120)")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, &self.config, "pg_promote failed"))?;
        // The checkpoint after promotion carries the new timeline; ask for it.
        let _ = pg::exec(&mut conn, &self.config, "CHECKPOINT").await;
        let timeline: i32 = sqlx::query_scalar("SELECT timeline_id FROM pg_control_checkpoint()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, &self.config, "cannot read the timeline"))?;
        pg::close(conn).await;
        if !promoted {
            return Err(
                Error::new(ErrorKind::Source, "pg_promote did not finish within 120 s")
                    .with_context("server log", log_tail(&log, &self.config).await),
            );
        }
        self.report.paused = false;
        Ok(u32::try_from(timeline).unwrap_or(0))
    }

    /// Stop the server and delete the data directory.
    ///
    /// # Errors
    /// When the directory cannot be removed.
    pub async fn discard(self) -> Result<()> {
        let _ = self.stop().await;
        remove_dir(&self.data_dir).await
    }
}

async fn remove_dir(dir: &Path) -> Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(
            Error::from_io(e, "cannot remove the recovery data directory")
                .with_context("path", dir.display()),
        ),
    }
}

/// Run `pg_ctl ARGS DIR` (as `run_as` when given); returns its output.
async fn pg_ctl(
    runner: &dyn CommandRunner,
    config: &PgConfig,
    run_as: Option<&str>,
    bin_dir: Option<&Path>,
    args: &[&str],
    dir: &Path,
) -> Result<String> {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.push(dir.display().to_string());
    let spec = as_user(run_as, bin_dir, "pg_ctl", all);
    let (mut run, tail) = tools::spawn(runner, config, &spec).await?;
    let mut out = String::new();
    if let Some(mut o) = run.stdout.take() {
        use tokio::io::AsyncReadExt;
        let _ = o.read_to_string(&mut out).await;
    }
    let err = tools::finish(run, tail, config, "pg_ctl").await?;
    Ok(format!("{out}{err}"))
}

/// A spec for `program` with `args`, wrapped in `runuser -u USER --` when `run_as` is set.
fn as_user(
    run_as: Option<&str>,
    bin_dir: Option<&Path>,
    program: &str,
    args: Vec<String>,
) -> CommandSpec {
    match run_as {
        Some(user) => {
            let full = bin_dir.map_or_else(
                || program.to_owned(),
                |d| d.join(program).display().to_string(),
            );
            let mut a = vec!["-u".to_owned(), user.to_owned(), "--".to_owned(), full];
            a.extend(args);
            let mut s = CommandSpec::new("/usr/sbin/runuser").args(a);
            s.stdout = true;
            s
        }
        None => CommandSpec::new(program).args(args),
    }
}

/// A value for `postgresql.conf`, quoted.
#[must_use]
pub fn quote_setting(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Restore `plan`'s base backup from `repo` into `options.data_dir`, start a recovery
/// instance and wait until it reaches `target`. The artifact's checksum is verified before
/// anything is written. On failure the new data directory is removed and the error carries
/// the end of the server log.
///
/// # Errors
/// Integrity errors from the checksum, tool and server errors, [`ErrorKind::NotFound`] when
/// PostgreSQL ran out of WAL before the target, [`ErrorKind::BadInput`] for a data directory
/// in use.
#[allow(clippy::too_many_arguments)]
pub async fn recover(
    plan: &PitrPlan,
    repo: &Repository,
    live: &PgConfig,
    runner: Arc<dyn CommandRunner>,
    target: &RecoveryTarget,
    options: &PitrOptions,
    progress: &Progress,
) -> Result<RecoveryInstance> {
    let started = Instant::now();
    let dir = &options.data_dir;
    let lock = RunLock::acquire(dir)?;
    if let Ok(mut rd) = tokio::fs::read_dir(dir).await
        && rd.next_entry().await.ok().flatten().is_some()
    {
        return Err(Error::bad_input(format!(
            "the recovery data directory {} exists and is not empty",
            dir.display()
        ))
        .with_hint("choose another data directory, or remove it"));
    }
    let record = plan
        .backup
        .artifacts
        .iter()
        .find(|a| a.name == BASE_ARTIFACT)
        .ok_or_else(|| {
            Error::integrity(format!("backup {} has no base artifact", plan.backup.id))
        })?;
    repo.verify(&plan.backup, false, progress).await?;
    let res = async {
        progress.info(format!(
            "restoring base backup {} into {}",
            plan.backup.id,
            dir.display()
        ));
        extract(repo, record, dir, progress).await?;
        if let Some(user) = &options.run_as {
            let out = tokio::process::Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(dir)
                .output()
                .await
                .map_err(|e| Error::from_io(e, "cannot run chown"))?;
            if !out.status.success() {
                return Err(Error::bad_input(format!(
                    "cannot hand the recovery data directory to {user}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
                .with_context("path", dir.display()));
            }
        }
        let base_verified = verify_base(runner.as_ref(), live, options, dir, progress).await?;
        write_recovery_conf(dir, target, options).await?;
        let log = dir.join("zdr-recovery.log");
        let timeout = options.timeout.as_secs().max(10).to_string();
        let start = pg_ctl(
            runner.as_ref(),
            live,
            options.run_as.as_deref(),
            live.bin_dir.as_deref(),
            &[
                "start",
                "-w",
                "-t",
                &timeout,
                "-l",
                &log.display().to_string(),
                "-D",
            ],
            dir,
        )
        .await;
        if let Err(e) = start {
            return Err(server_failed(
                e,
                &FileLog {
                    path: &log,
                    config: live,
                },
            )
            .await);
        }
        zdr_core::failpoint("pitr-after-start");
        let mut side = live.clone();
        side.host = "127.0.0.1".into();
        side.port = options.port;
        side.database = live.maintenance_database.clone();
        let reached = wait_for_target(
            &side,
            target,
            options.timeout,
            &FileLog {
                path: &log,
                config: live,
            },
            progress,
        )
        .await?;
        let mut report = reached;
        report.backup = plan.backup.id.to_string();
        report.target = target.to_string();
        report.data_dir = dir.clone();
        report.port = options.port;
        report.base_verified = base_verified;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(RecoveryInstance {
            config: side,
            data_dir: dir.clone(),
            runner: runner.clone(),
            run_as: options.run_as.clone(),
            bin_dir: live.bin_dir.clone(),
            report,
            _lock: lock,
        })
    }
    .await;
    if res.is_err() {
        let _ = pg_ctl(
            runner.as_ref(),
            live,
            options.run_as.as_deref(),
            live.bin_dir.as_deref(),
            &["stop", "-m", "immediate", "-w", "-D"],
            dir,
        )
        .await;
        let _ = remove_dir(dir).await;
    }
    res
}

/// Stream the base tar into `dir` (created with mode 0700).
async fn extract(
    repo: &Repository,
    record: &zdr_core::ArtifactRecord,
    dir: &Path,
    progress: &Progress,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::create_dir_all(dir).await.map_err(|e| {
        Error::from_io(e, "cannot create the recovery data directory")
            .with_context("path", dir.display())
    })?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(|e| {
            Error::from_io(e, "cannot set the data directory's mode")
                .with_context("path", dir.display())
        })?;
    let reader = repo.open(record, progress.clone())?;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let mut ar = tar::Archive::new(bridge);
        ar.set_preserve_permissions(true);
        ar.set_overwrite(false);
        ar.unpack(&dir).map_err(|e| {
            Error::from_io(e, "extracting the base backup failed")
                .with_context("path", dir.display())
        })
    })
    .await
    .map_err(|e| Error::unexpected("extraction task failed").with_source(e))?
}

/// `pg_verifybackup` against the manifest PostgreSQL put in the tar (when both are there).
async fn verify_base(
    runner: &dyn CommandRunner,
    live: &PgConfig,
    options: &PitrOptions,
    dir: &Path,
    progress: &Progress,
) -> Result<bool> {
    if tokio::fs::metadata(dir.join("backup_manifest"))
        .await
        .is_err()
    {
        progress.warn("the base backup has no backup_manifest; pg_verifybackup skipped");
        return Ok(false);
    }
    let spec = as_user(
        options.run_as.as_deref(),
        live.bin_dir.as_deref(),
        "pg_verifybackup",
        vec![
            "--no-parse-wal".into(),
            "--quiet".into(),
            dir.display().to_string(),
        ],
    );
    match tools::spawn(runner, live, &spec).await {
        Ok((run, tail)) => {
            tools::finish(run, tail, live, "pg_verifybackup")
                .await
                .map_err(|e| {
                    Error::integrity(format!(
                        "the restored base backup fails pg_verifybackup: {e}"
                    ))
                })?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::BadInput => {
            progress.warn(format!("pg_verifybackup skipped: {e}"));
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The settings that make a server with `recovery.signal` replay to `target`: the
/// `restore_command`, the timeline followed (`latest` without one), hot standby, the target,
/// and a pause there (every target but [`RecoveryTarget::Latest`], which promotes at the end
/// of the archive). Each is a name and its unquoted value.
#[must_use]
pub fn recovery_settings(
    target: &RecoveryTarget,
    restore_command: &str,
    timeline: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut s = vec![
        ("restore_command", restore_command.to_owned()),
        (
            "recovery_target_timeline",
            timeline.map_or_else(|| "latest".to_owned(), |t| t.to_string()),
        ),
        ("hot_standby", "on".to_owned()),
    ];
    match target {
        RecoveryTarget::Time(t) => s.push((
            "recovery_target_time",
            t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
        )),
        RecoveryTarget::Lsn(l) => s.push(("recovery_target_lsn", l.to_string())),
        RecoveryTarget::Xid(x) => s.push(("recovery_target_xid", x.clone())),
        RecoveryTarget::Name(n) => s.push(("recovery_target_name", n.clone())),
        RecoveryTarget::Latest => {}
    }
    if *target != RecoveryTarget::Latest {
        s.push(("recovery_target_action", "pause".to_owned()));
    }
    s
}

async fn write_recovery_conf(dir: &Path, target: &RecoveryTarget, o: &PitrOptions) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::from_io(e, "cannot write the recovery settings").with_context("path", dir.display())
    };
    let _ = tokio::fs::remove_file(dir.join("standby.signal")).await;
    let _ = tokio::fs::remove_file(dir.join("postmaster.pid")).await;
    if tokio::fs::metadata(dir.join("postgresql.conf"))
        .await
        .is_err()
    {
        // Debian keeps the config outside the data directory: a minimal one.
        tokio::fs::write(dir.join("postgresql.conf"), "# written by zdr pitr\n")
            .await
            .map_err(io)?;
    }
    let mut conf = String::from("\n# --- zdr pitr (recovery instance) ---\n");
    let mut set = |k: &str, v: &str| conf.push_str(&format!("{k} = {}\n", quote_setting(v)));
    set("port", &o.port.to_string());
    set("listen_addresses", "127.0.0.1");
    set("unix_socket_directories", &dir.display().to_string());
    set("archive_mode", "off");
    for (k, v) in recovery_settings(target, &o.restore_command, o.timeline) {
        set(k, &v);
    }
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("postgresql.auto.conf"))
        .await
        .map_err(io)?;
    f.write_all(conf.as_bytes()).await.map_err(io)?;
    f.flush().await.map_err(io)?;
    tokio::fs::write(dir.join("recovery.signal"), b"")
        .await
        .map_err(io)?;
    Ok(())
}

/// Where the end of a recovering server's log comes from, for errors: a log file on this
/// host, or the output of the container the server runs in.
#[async_trait::async_trait]
pub trait ServerLog: Send + Sync {
    /// The last lines of the log, secrets scrubbed.
    async fn tail(&self) -> String;

    /// Whether the server's process still runs (a container that exited does not). While it
    /// runs, a server still starting up is waited for; otherwise its errors end the wait.
    async fn alive(&self) -> Option<bool> {
        None
    }
}

/// A server log file on this host.
struct FileLog<'a> {
    path: &'a Path,
    config: &'a PgConfig,
}

#[async_trait::async_trait]
impl ServerLog for FileLog<'_> {
    async fn tail(&self) -> String {
        let text = tokio::fs::read_to_string(self.path)
            .await
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(12);
        self.config.scrub(&lines[start..].join("\n"))
    }
}

/// The end of the server log, for errors.
async fn log_tail(log: &Path, config: &PgConfig) -> String {
    FileLog { path: log, config }.tail().await
}

/// The error of a recovering server that failed, told by what its log says.
pub async fn server_failed(e: Error, log: &dyn ServerLog) -> Error {
    let tail = log.tail().await;
    if tail.contains("recovery ended before configured recovery target was reached") {
        return Error::new(
            ErrorKind::NotFound,
            "the archive's WAL ends before the recovery target: PostgreSQL stopped recovery",
        )
        .with_context("server log", tail)
        .with_hint("choose an earlier target, or check that archiving is working");
    }
    if tail.contains("before consistent recovery point") {
        return Error::bad_input("the recovery target is before the base backup became consistent")
            .with_context("server log", tail)
            .with_hint("choose a later target or an older base backup");
    }
    Error::new(
        ErrorKind::Source,
        format!("the recovery instance failed: {e}"),
    )
    .with_context("server log", tail)
}

/// Wait until the server at `side` reached `target`: out of recovery for
/// [`RecoveryTarget::Latest`], paused at the target otherwise (`recovery_target_action =
/// pause`). Reports where replay stopped and the last commit it replayed.
///
/// # Errors
/// The server unreachable eight times in a row (what `log` says of it in the error), out of
/// recovery without pausing at a target, or `timeout` passed.
pub async fn wait_for_target(
    side: &PgConfig,
    target: &RecoveryTarget,
    timeout: Duration,
    log: &dyn ServerLog,
    progress: &Progress,
) -> Result<RecoveryReport> {
    let deadline = Instant::now() + timeout;
    let mut failures = 0;
    let mut refusals = 0;
    loop {
        let state = async {
            let mut conn = pg::connect(side, &side.database).await?;
            let row = sqlx::query(
                "SELECT pg_is_in_recovery(), \
                 CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE 'promoted' END, \
                 COALESCE(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text, \
                 (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::bigint",
            )
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, side, "cannot read the recovery state"))?;
            let dbs: Vec<String> = sqlx::query_scalar(
                "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, side, "cannot list databases"))?;
            pg::close(conn).await;
            Ok::<_, Error>((
                row.get::<bool, _>(0),
                row.get::<String, _>(1),
                row.get::<Option<String>, _>(2),
                row.get::<Option<i64>, _>(3)
                    .and_then(DateTime::<Utc>::from_timestamp_micros),
                dbs,
            ))
        }
        .await;
        match state {
            Ok((in_recovery, pause, lsn, last_commit, databases)) => {
                failures = 0;
                refusals = 0;
                let done = match target {
                    RecoveryTarget::Latest => !in_recovery,
                    _ => pause == "paused",
                };
                if done {
                    return Ok(RecoveryReport {
                        backup: String::new(),
                        target: String::new(),
                        replay_lsn: lsn,
                        last_commit,
                        paused: in_recovery,
                        data_dir: PathBuf::new(),
                        port: side.port,
                        seconds: 0.0,
                        base_verified: false,
                        databases,
                    });
                }
                if !in_recovery && *target != RecoveryTarget::Latest {
                    return Err(Error::unexpected(
                        "the recovery instance left recovery without pausing at the target",
                    ));
                }
            }
            Err(e) => {
                // Before it listens, and before it is consistent (it answers "starting up"),
                // a recovering server refuses connections: the replay under way, not a
                // failure, while its process runs.
                let text = e.to_string().to_lowercase();
                let starting =
                    text.contains("starting up") || text.contains("not yet accepting connections");
                let refused = text.contains("connection refused");
                match log.alive().await {
                    Some(false) => return Err(server_failed(e, log).await),
                    Some(true) if starting => failures = 0,
                    // Not listening yet: about a minute, then it is counted (a wrong port).
                    Some(true) if refused && refusals < 240 => refusals += 1,
                    _ => failures += 1,
                }
                if failures >= 8 {
                    return Err(server_failed(e, log).await);
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "recovery did not reach the target within {} s",
                    timeout.as_secs()
                ),
            )
            .with_context("server log", log.tail().await)
            .temporary());
        }
        progress.info("waiting for recovery to reach the target");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Ends a recovery done in place, in the server that stays (a container's data directory):
/// promotes it when it paused at a target, removes the recovery settings named in `settings`
/// from `postgresql.auto.conf` (`ALTER SYSTEM RESET`), reloads, and checkpoints. Returns the
/// timeline the server now runs on.
///
/// # Errors
/// The server unreachable, `pg_promote` not finishing within two minutes, a setting that
/// cannot be reset.
pub async fn finish_in_place(config: &PgConfig, paused: bool, settings: &[&str]) -> Result<u32> {
    let mut conn = pg::connect(config, &config.maintenance_database).await?;
    if paused {
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 120)")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, config, "pg_promote failed"))?;
        if !promoted {
            return Err(Error::new(
                ErrorKind::Source,
                "pg_promote did not finish within 120 s",
            ));
        }
    }
    for name in settings {
        // Names come from `recovery_settings`: plain identifiers.
        pg::exec(&mut conn, config, &format!("ALTER SYSTEM RESET {name}")).await?;
    }
    pg::exec(&mut conn, config, "SELECT pg_reload_conf()").await?;
    pg::exec(&mut conn, config, "CHECKPOINT").await?;
    let timeline: i32 = sqlx::query_scalar("SELECT timeline_id FROM pg_control_checkpoint()")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| pg::db_error(e, config, "cannot read the timeline"))?;
    pg::close(conn).await;
    Ok(u32::try_from(timeline).unwrap_or(0))
}

/// The segment holding `lsn` on `timeline`, by name.
#[must_use]
pub fn segment_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    Segment::containing(timeline, lsn, segment_size).name(segment_size)
}
