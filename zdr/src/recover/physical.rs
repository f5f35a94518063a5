//! A PostgreSQL container recovered from a base backup and the WAL archive: the container's
//! own data directory is rebuilt in place, on its fresh volume, before it starts.
//!
//! 1. The base backup's tar is streamed into `$PGDATA` of the created (never started)
//!    container through the engine's archive API; its checksum is checked as it passes, and
//!    the container is not started unless it matched.
//! 2. The WAL the recovery replays (the chain from the backup's start to the end of the
//!    archive, each segment checked when fetched) and every timeline history file go into
//!    `$PGDATA/zdr-restore-wal/`, with the recovery settings: `restore_command` copies from
//!    there (standard tools only), the target, the timeline.
//! 3. A helper of the container's image checks the files against PostgreSQL's own
//!    `backup_manifest` (`pg_verifybackup`), adds the settings to `postgresql.auto.conf`,
//!    writes `recovery.signal` and hands the files to the server's user.
//! 4. The container starts, replays to the end of the archive (promoting itself there) or
//!    pauses at the target time, which is checked (no commit replayed after it) before it is
//!    promoted. The recovery settings and the staged WAL are removed again.
//!
//! The host needs no PostgreSQL tools, and the container needs no zdr.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use zdr_core::{BackupSelector, Error, ErrorKind, Manifest, Progress, Result};
use zdr_docker::{ContainerSpec, Docker};
use zdr_postgres::PgConfig;
use zdr_postgres::basebackup::BASE_ARTIFACT;
use zdr_postgres::pitr::{self, PitrPlan, RecoveryTarget};
use zdr_postgres::wal::{FetchOutcome, WalArchive};

use super::{PlannedWal, RestoredRecord};
use crate::stack::Stack;

/// The directory of `$PGDATA` the WAL of a recovery is staged in.
const STAGED_WAL: &str = "zdr-restore-wal";
/// The recovery settings, before they are appended to `postgresql.auto.conf`.
const STAGED_SETTINGS: &str = "zdr-recovery.conf";
/// Where the official image keeps its data directory when `PGDATA` is not set.
const DEFAULT_PGDATA: &str = "/var/lib/postgresql/data";
/// The host staging directories of WAL on its way into a container:
/// `<prefix><pid>-<random>` in the temp dir.
const STAGING_PREFIX: &str = "zdr-pg-recover-";
/// Segments fetched at once while the WAL is staged.
const FETCH_AHEAD: usize = 4;

/// A physical recovery, planned: the base backup, its tier, the WAL and the target.
pub(crate) struct Physical {
    pub(crate) plan: PitrPlan,
    pub(crate) target: RecoveryTarget,
    pub(crate) tier: String,
    pub(crate) archive: WalArchive,
    pub(crate) archived_until: Option<DateTime<Utc>>,
    pub(crate) recovery_timeout: Duration,
}

impl Physical {
    pub(crate) fn planned(&self) -> PlannedWal {
        let size = self.archive.segment_size();
        PlannedWal {
            target: self.target.to_string(),
            timelines: self.plan.path.iter().map(|s| s.timeline).collect(),
            first_segment: self.plan.facts.start_segment.clone(),
            last_segment: self
                .plan
                .segments
                .last()
                .map_or_else(|| self.plan.chain_end.clone(), |s| s.name(size)),
            segments: self.plan.segments.len(),
            archived_until: self.archived_until,
            recovery_timeout_secs: self.recovery_timeout.as_secs(),
        }
    }

    /// What the recovered server must show and does not: every database of the base backup,
    /// a new timeline (promoted), and for the end of the archive replay up to its last
    /// segment.
    fn problems(&self, reached: &pitr::RecoveryReport, timeline: u32) -> Vec<String> {
        let size = self.archive.segment_size();
        let mut problems = Vec::new();
        for db in &self.plan.facts.databases {
            if !reached.databases.contains(db) {
                problems.push(format!("database {db} of the base backup is missing"));
            }
        }
        if timeline <= self.timeline().unwrap_or(self.plan.facts.timeline) {
            problems.push(format!(
                "the server still runs on timeline {timeline}: it was not promoted"
            ));
        }
        if self.target == RecoveryTarget::Latest
            && let Some(last) = self.plan.segments.last()
        {
            let end = last.number * size;
            let replayed = reached
                .replay_lsn
                .as_deref()
                .and_then(|l| zdr_postgres::walname::Lsn::from_str(l).ok())
                .map_or(0, |l| l.0);
            if replayed < end {
                problems.push(format!(
                    "replay stopped at {} before the last archived segment {}",
                    reached.replay_lsn.as_deref().unwrap_or("?"),
                    last.name(size)
                ));
            }
        }
        problems
    }

    /// The timeline recovery follows: the last of the path.
    fn timeline(&self) -> Option<u32> {
        self.plan.path.last().map(|s| s.timeline)
    }
}

/// How a full-system recovery brings back a postgres component in a container.
pub(crate) enum SystemPg {
    /// Its base backup and the WAL archive, replayed to `restored_to`.
    Physical {
        /// The base backup.
        base: Box<Manifest>,
        /// The WAL replayed.
        wal: PlannedWal,
        /// The target time, or the end of the archive.
        restored_to: DateTime<Utc>,
    },
    /// Its logical backup; why not the archive, when there was a reason.
    Logical(Option<String>),
}

/// The data directory in the container: `PGDATA` of its environment, else the official
/// image's. Only plain absolute paths: it goes into shell scripts.
pub(crate) fn pgdata_of(spec: &ContainerSpec) -> Result<String> {
    let dir = spec
        .env
        .iter()
        .find(|v| v.name == "PGDATA")
        .and_then(|v| v.value.clone())
        .unwrap_or_else(|| DEFAULT_PGDATA.to_owned());
    let plain = dir.starts_with('/')
        && dir.len() > 1
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
        && !dir.split('/').any(|p| p == "..");
    if plain {
        Ok(dir.trim_end_matches('/').to_owned())
    } else {
        Err(Error::bad_input(format!(
            "PGDATA of container {} is {dir:?}: only a plain absolute path can be recovered into",
            spec.name
        ))
        .with_context("container", &spec.name))
    }
}

/// A host directory for the segments on their way into the container, removed when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The container's log, for the errors of a server recovering in it.
struct ContainerLog<'a> {
    docker: &'a Docker,
    container: &'a str,
    config: &'a PgConfig,
    /// When zdr started it: a container started again since (a restart policy after the
    /// server exited) counts as gone.
    started: Option<DateTime<Utc>>,
}

#[async_trait::async_trait]
impl pitr::ServerLog for ContainerLog<'_> {
    async fn tail(&self) -> String {
        self.config
            .scrub(&self.docker.logs_tail(self.container, 12).await)
    }

    async fn alive(&self) -> Option<bool> {
        Some(
            self.docker
                .status(self.container)
                .await
                .is_ok_and(|s| s.running && s.started_at == self.started),
        )
    }
}

/// The recovery target for a backup selector, and the base backups it may start from.
fn target_of(
    selector: &BackupSelector,
    backups: &[Manifest],
) -> Option<(RecoveryTarget, Vec<Manifest>)> {
    match selector {
        BackupSelector::Latest => Some((RecoveryTarget::Latest, backups.to_vec())),
        BackupSelector::Before(t) => Some((RecoveryTarget::Time(*t), backups.to_vec())),
        BackupSelector::Id(id) => {
            let one: Vec<Manifest> = backups.iter().filter(|m| &m.id == id).cloned().collect();
            (!one.is_empty()).then_some((RecoveryTarget::Latest, one))
        }
        BackupSelector::Previous => None,
    }
}

/// Reads `reader` to its end in a task of its own and sends it on as chunks: the body of an
/// upload. Returns the receiving stream and the task, whose result is the reader's: a
/// checksum that fails at the end is an error of the task even when the engine stopped
/// reading at the archive's end marker (the rest is still read, and checked).
fn pump(
    mut reader: zdr_core::BoxRead,
    what: String,
) -> (
    impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<Result<u64>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let task = tokio::spawn(async move {
        let mut total = 0u64;
        let mut open = true;
        loop {
            let mut buf = BytesMut::with_capacity(256 * 1024);
            match reader.read_buf(&mut buf).await {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n as u64;
                    if open && tx.send(Ok(buf.freeze())).await.is_err() {
                        open = false;
                    }
                }
                Err(e) => {
                    let e = Error::from_io(e, format!("reading {what} failed"));
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return Err(e);
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (stream, task)
}

impl Stack {
    /// The physical recovery of postgres component `name` to what `selector` asks for, from
    /// the first tier of `catalogs` (the component's manifests per readable tier, in tier
    /// order) that holds a base backup the archive can roll forward.
    ///
    /// # Errors
    /// No base backup, a broken WAL chain, a target outside the archive: the reason per tier.
    pub(crate) async fn physical_recovery(
        &self,
        name: &str,
        selector: &BackupSelector,
        catalogs: &[(String, Vec<Manifest>)],
    ) -> Result<Physical> {
        let (name, pg) = self.pg_component(Some(name))?;
        let archive = self.archive_of(name, pg)?;
        self.physical_recovery_in(name, selector, catalogs, archive)
            .await
    }

    /// [`Stack::physical_recovery`] from `archive`.
    async fn physical_recovery_in(
        &self,
        name: &str,
        selector: &BackupSelector,
        catalogs: &[(String, Vec<Manifest>)],
        archive: WalArchive,
    ) -> Result<Physical> {
        let (name, pg) = self.pg_component(Some(name))?;
        let mut reasons = Vec::new();
        for (t, backups) in catalogs {
            let Some((target, backups)) = target_of(selector, backups) else {
                return Err(Error::bad_input(
                    "a physical recovery restores the newest state, a time, or a base backup by id",
                ));
            };
            match pitr::plan(&backups, &archive, &target, None, Utc::now()).await {
                Ok(plan) => {
                    let archived_until = newest_archived(&archive).await;
                    if let (RecoveryTarget::Time(at), Some(until)) = (&target, archived_until)
                        && until < *at
                    {
                        reasons.push(format!(
                            "tier {t}: the archive's newest file was stored at {until}, before {at}"
                        ));
                        continue;
                    }
                    return Ok(Physical {
                        plan,
                        target,
                        tier: t.clone(),
                        archive,
                        archived_until,
                        recovery_timeout: Duration::from_secs(
                            pg.wal.recovery_timeout_secs.unwrap_or(3600),
                        ),
                    });
                }
                Err(e) => reasons.push(format!("tier {t}: {e}")),
            }
        }
        Err(Error::not_found(format!(
            "no base backup of {name} that the WAL archive can roll forward ({})",
            reasons.join("; ")
        ))
        .with_context("component", name))
    }

    /// How a full-system recovery brings back postgres component `name`, which runs in a
    /// container: its base backup rolled forward through the WAL archive to `at` (or to the
    /// end of the archive), when the archive can do that and, without a target time, reaches
    /// past `newest_logical`. `manifests` are the component's backups on the source tier;
    /// `marked` the backup an unfinished recovery chose (a base backup continues the same way).
    ///
    /// # Errors
    /// Only for a marked base backup that can no longer be rolled forward; any other reason
    /// not to use the archive is returned as [`SystemPg::Logical`]'s note.
    pub(crate) async fn system_physical(
        &self,
        name: &str,
        from: &str,
        manifests: Vec<Manifest>,
        at: Option<DateTime<Utc>>,
        marked: Option<&zdr_core::BackupId>,
        newest_logical: Option<&Manifest>,
    ) -> Result<SystemPg> {
        let marked_base = marked.map(|id| {
            manifests
                .iter()
                .any(|m| &m.id == id && m.kind == zdr_core::BackupKind::Physical)
        });
        let selector = match (marked_base, at) {
            (Some(false), _) => return Ok(SystemPg::Logical(None)),
            (Some(true), None) => BackupSelector::Id(
                marked
                    .cloned()
                    .ok_or_else(|| Error::unexpected("a marked base backup without its id"))?,
            ),
            (_, Some(t)) => BackupSelector::Before(t),
            (None, None) => BackupSelector::Latest,
        };
        // The archive on the tiers that exist: a local-disk tier that is gone (the disaster)
        // is neither read nor made again before the recovery starts.
        let (_, pg) = self.pg_component(Some(name))?;
        let mut present = Vec::new();
        for t in self.wal_tier_names(name) {
            match self.config().tier(&t)? {
                zdr_storage::TierConfig::Fs { root } if !root.exists() => {}
                _ => present.push(t),
            }
        }
        if present.is_empty() {
            return Ok(SystemPg::Logical(Some(
                "no tier of the WAL archive exists".to_owned(),
            )));
        }
        let archive = self.archive_on(name, pg, &present)?;
        let planned = self
            .physical_recovery_in(name, &selector, &[(from.to_owned(), manifests)], archive)
            .await;
        let p = match planned {
            Ok(p) => p,
            Err(e) if marked_base == Some(true) => {
                return Err(e.with_hint(
                    "the unfinished recovery chose this base backup; remove its marker to choose again",
                ));
            }
            Err(e) => return Ok(SystemPg::Logical(Some(e.to_string()))),
        };
        if marked.is_none()
            && p.target == RecoveryTarget::Latest
            && let (Some(m), Some(until)) = (newest_logical, p.archived_until)
            && m.finished_at > until
        {
            return Ok(SystemPg::Logical(Some(format!(
                "backup {} is newer than the end of the WAL archive ({})",
                m.id,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ))));
        }
        let restored_to = match p.target {
            RecoveryTarget::Time(t) => t,
            _ => p.archived_until.unwrap_or(p.plan.backup.finished_at),
        };
        Ok(SystemPg::Physical {
            base: Box::new(p.plan.backup.clone()),
            wal: p.planned(),
            restored_to,
        })
    }

    /// Step `restore` of a physical recovery: the base backup and the WAL into `$PGDATA` of
    /// the created, stopped `container`, with the recovery settings. Returns what it did.
    pub(crate) async fn stage_physical(
        &self,
        physical: &Physical,
        docker: &Docker,
        spec: &ContainerSpec,
        progress: &Progress,
    ) -> Result<String> {
        let container = spec.name.as_str();
        let pgdata = pgdata_of(spec)?;
        let repo = self.repository(&physical.tier)?;
        let backup = &physical.plan.backup;
        repo.verify_sidecars(backup).await?;
        let record = backup
            .artifacts
            .iter()
            .find(|a| a.name == BASE_ARTIFACT)
            .ok_or_else(|| {
                Error::integrity(format!("backup {} has no base artifact", backup.id))
            })?;

        // The data directory, empty (a fresh volume; or below the volume's mount).
        docker
            .run_on_volumes_of(
                container,
                &spec.image,
                &format!(
                    "set -eu; mkdir -p '{pgdata}'; if [ -n \"$(ls -A '{pgdata}')\" ]; then \
                     echo '{pgdata} is not empty' >&2; exit 1; fi"
                ),
                &format!("preparation of {pgdata} in {container}"),
            )
            .await?;

        // The base backup, checked while it streams in.
        progress.info(format!(
            "restoring base backup {} into {pgdata} of {container}",
            backup.id
        ));
        let reader = repo.open(record, progress.clone())?;
        let (body, task) = pump(reader, format!("base backup {}", backup.id));
        let uploaded = docker.upload_tar(container, &pgdata, body).await;
        if uploaded.is_err() {
            task.abort();
        }
        let bytes = match (task.await, uploaded) {
            // The reader's own error (a checksum that failed) comes first.
            (Ok(Err(e)), _) => {
                return Err(e
                    .with_context("backup", backup.id.to_string())
                    .with_context("tier", &physical.tier));
            }
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(())) => {
                return Err(Error::unexpected("the base backup's reader failed").with_source(e));
            }
            (Ok(Ok(n)), Ok(())) => n,
        };

        // The WAL and the settings.
        let settings = pitr::recovery_settings(
            &physical.target,
            &format!("cp \"{STAGED_WAL}/%f\" \"%p\""),
            physical.timeline(),
        );
        let settings_text: String = settings
            .iter()
            .map(|(k, v)| format!("{k} = {}\n", pitr::quote_setting(v)))
            .collect();
        let staged = self
            .stage_wal(
                physical,
                docker,
                container,
                &pgdata,
                settings_text,
                progress,
            )
            .await?;

        // Checked against PostgreSQL's manifest, then handed to the server.
        docker
            .run_on_volumes_of(
                container,
                &spec.image,
                &format!(
                    "set -eu; cd '{pgdata}'; \
                     [ -s PG_VERSION ] || {{ echo 'no PG_VERSION in {pgdata}: the base backup is not there' >&2; exit 1; }}; \
                     if [ -f backup_manifest ] && command -v pg_verifybackup >/dev/null 2>&1; then \
                       pg_verifybackup --no-parse-wal --quiet -i {STAGED_WAL} -i {STAGED_SETTINGS} . ; \
                     fi; \
                     rm -f standby.signal postmaster.pid; \
                     {{ printf '\\n# zdr container recovery\\n'; cat {STAGED_SETTINGS}; }} >> postgresql.auto.conf; \
                     rm -f {STAGED_SETTINGS}; : > recovery.signal; \
                     u=$(id -u postgres 2>/dev/null || stat -c %u PG_VERSION); \
                     g=$(id -g postgres 2>/dev/null || stat -c %g PG_VERSION); \
                     chown -R \"$u:$g\" .; chmod 700 ."
                ),
                &format!("the recovery settings of {container}"),
            )
            .await
            .map_err(|e| {
                if e.to_string().contains("pg_verifybackup") || e.to_string().contains("checksum mismatch") {
                    Error::integrity(format!(
                        "the restored base backup {} fails pg_verifybackup: {e}",
                        backup.id
                    ))
                } else {
                    e
                }
            })?;
        Ok(format!(
            "base backup {} ({bytes} bytes) and {staged} WAL file(s) in {pgdata} of {container}, \
             recovery to {}",
            backup.id, physical.target
        ))
    }

    /// The history files and the chain's segments into `$PGDATA/zdr-restore-wal/` (and the
    /// settings beside it), fetched a few at a time through a host staging directory.
    async fn stage_wal(
        &self,
        physical: &Physical,
        docker: &Docker,
        container: &str,
        pgdata: &str,
        settings: String,
        progress: &Progress,
    ) -> Result<usize> {
        let size = physical.archive.segment_size();
        let mut names: Vec<String> = physical
            .plan
            .histories
            .iter()
            .map(|tl| format!("{tl:08X}.history"))
            .collect();
        names.extend(physical.plan.segments.iter().map(|s| s.name(size)));
        let count = names.len();
        // Those of recoveries killed before they could remove their own go first.
        zdr_core::staging::sweep_abandoned(&std::env::temp_dir(), STAGING_PREFIX);
        let staging = Staging(std::env::temp_dir().join(format!(
            "{STAGING_PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )));
        {
            use std::os::unix::fs::DirBuilderExt;
            // Only this user reads the WAL on its way through.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staging.0)
                .map_err(|e| Error::from_io(e, "cannot create the WAL staging directory"))?;
        }
        let dir = staging.0.clone();
        let archive = physical.archive.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
        let settings = Bytes::from(settings);
        let producer = tokio::spawn(async move {
            let send = |item: Bytes| {
                let tx = tx.clone();
                async move {
                    tx.send(Ok(item)).await.map_err(|_| {
                        Error::new(ErrorKind::Io, "the engine stopped reading the WAL")
                    })
                }
            };
            let run = async {
                send(zdr_docker::tar_entry(
                    STAGED_SETTINGS,
                    settings.len() as u64,
                    0o600,
                    0,
                )?)
                .await?;
                send(settings.clone()).await?;
                send(padding(settings.len() as u64)).await?;
                let mut fetched = futures::stream::iter(names.into_iter().map(|n| {
                    let archive = archive.clone();
                    let path = dir.join(&n);
                    async move {
                        let outcome = archive.fetch(&n, &path, &Progress::none()).await?;
                        match outcome {
                            FetchOutcome::Fetched { .. } => Ok((n, path)),
                            FetchOutcome::NotFound => Err(Error::not_found(format!(
                                "WAL file {n} is no longer in the archive"
                            ))
                            .with_context("file", &n)),
                        }
                    }
                }))
                .buffered(FETCH_AHEAD);
                while let Some(item) = fetched.next().await {
                    let (n, path) = item?;
                    let mut file = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| Error::from_io(e, format!("cannot open the fetched {n}")))?;
                    let len = file
                        .metadata()
                        .await
                        .map_err(|e| Error::from_io(e, format!("cannot read the fetched {n}")))?
                        .len();
                    send(zdr_docker::tar_entry(
                        &format!("{STAGED_WAL}/{n}"),
                        len,
                        0o600,
                        0,
                    )?)
                    .await?;
                    let mut left = len;
                    while left > 0 {
                        let mut buf = BytesMut::with_capacity(1024 * 1024);
                        let got = file.read_buf(&mut buf).await.map_err(|e| {
                            Error::from_io(e, format!("cannot read the fetched {n}"))
                        })?;
                        if got == 0 {
                            return Err(Error::new(
                                ErrorKind::Io,
                                format!("the fetched {n} ended early"),
                            ));
                        }
                        left = left.saturating_sub(got as u64);
                        send(buf.freeze()).await?;
                    }
                    send(padding(len)).await?;
                    let _ = tokio::fs::remove_file(&path).await;
                }
                send(zdr_docker::tar_end()).await?;
                Ok::<(), Error>(())
            }
            .await;
            if let Err(e) = &run {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
            run
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        progress.info(format!("staging {count} WAL file(s) in {container}"));
        let uploaded = docker.upload_tar(container, pgdata, body).await;
        if uploaded.is_err() {
            producer.abort();
        }
        let produced = producer.await;
        drop(staging);
        match (produced, uploaded) {
            // A fetch that failed (a damaged segment) comes first.
            (Ok(Err(e)), _) | (_, Err(e)) => Err(e),
            (Err(e), Ok(())) => {
                Err(Error::unexpected("the WAL staging task failed").with_source(e))
            }
            (Ok(Ok(())), Ok(())) => Ok(count),
        }
    }

    /// Step `wait-healthy` of a physical recovery: start the container, wait until replay
    /// reached the target (checked, then promoted) or the end of the archive, remove the
    /// recovery settings and the staged WAL, and wait until it is healthy. A server that
    /// fails is stopped again, so nothing uses a half-recovered database. The record's
    /// problems say what the checks found (the caller fails the step on any).
    pub(crate) async fn finish_physical(
        &self,
        name: &str,
        physical: &Physical,
        docker: &Docker,
        spec: &ContainerSpec,
        health_timeout: Duration,
        progress: &Progress,
    ) -> Result<RestoredRecord> {
        let container = spec.name.as_str();
        let (_, pg) = self.pg_component(Some(name))?;
        let mut side = pg.to_pg(None)?;
        side.database = side.maintenance_database.clone();
        let timeout = physical.recovery_timeout;
        docker.start(container).await?;
        let started = docker.status(container).await?.started_at;
        let result = async {
            let log = ContainerLog {
                docker,
                container,
                config: &side,
                started,
            };
            let reached =
                pitr::wait_for_target(&side, &physical.target, timeout, &log, progress).await?;
            crate::postgres::check_after_target(&physical.target, &reached)?;
            let names: Vec<&str> = pitr::recovery_settings(&physical.target, "", None)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            let timeline = pitr::finish_in_place(&side, reached.paused, &names).await?;
            crate::recover::exec_script(
                docker,
                container,
                "postgres",
                &format!("rm -rf '{}/{STAGED_WAL}'", pgdata_of(spec)?),
            )
            .await
            .unwrap_or_else(|e| progress.warn(format!("the staged WAL stays in {container}: {e}")));
            let problems = physical.problems(&reached, timeline);
            if problems.is_empty() {
                docker.wait_healthy(container, None, health_timeout).await?;
            }
            Ok::<_, Error>((reached, timeline, problems))
        }
        .await;
        let (reached, timeline, problems) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = docker.stop(container, Some(Duration::from_secs(30))).await;
                return Err(e.with_context("container", container));
            }
        };
        if !problems.is_empty() {
            // Nothing may use a server that fails its checks.
            let _ = docker.stop(container, Some(Duration::from_secs(30))).await;
        }
        Ok(RestoredRecord {
            backup: physical.plan.backup.id.to_string(),
            tier: physical.tier.clone(),
            kind: "physical".to_owned(),
            finished_at: physical.plan.backup.finished_at,
            items: physical.plan.segments.len() as u64,
            verified: reached.databases.len() as u64,
            problems,
            recovered_to: reached.last_commit,
            target: Some(physical.target.to_string()),
            replay_lsn: reached.replay_lsn.clone(),
            timeline: Some(timeline),
        })
    }
}

/// The zero bytes after a tar entry of `len` bytes.
fn padding(len: u64) -> Bytes {
    Bytes::from(vec![
        0u8;
        usize::try_from(zdr_docker::tar_padding(len))
            .unwrap_or(0)
    ])
}

/// When the newest file of the archive was stored (the newest over its tiers).
async fn newest_archived(archive: &WalArchive) -> Option<DateTime<Utc>> {
    let mut newest = None;
    for i in 0..archive.tiers().len() {
        if let Ok(l) = archive.list(i).await
            && let Some((_, Some(at))) = l.newest
        {
            newest = newest.max(Some(at));
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use zdr_docker::EnvVar;

    fn spec(pgdata: Option<&str>) -> ContainerSpec {
        let mut spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "name": "db", "image": "postgres:15"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        if let Some(p) = pgdata {
            spec.env.push(EnvVar {
                name: "PGDATA".to_owned(),
                value: Some(p.to_owned()),
                secret: false,
            });
        }
        spec
    }

    #[test]
    fn the_data_directory_is_pgdata_or_the_official_images() -> Result<()> {
        assert_eq!(pgdata_of(&spec(None))?, "/var/lib/postgresql/data");
        assert_eq!(
            pgdata_of(&spec(Some("/var/lib/postgresql/data/pgdata/")))?,
            "/var/lib/postgresql/data/pgdata"
        );
        // It goes into shell scripts: only plain absolute paths.
        for bad in [
            "data",
            "/",
            "/srv/it's",
            "/srv/a b",
            "/srv/../etc",
            "/srv/$(x)",
        ] {
            let e = pgdata_of(&spec(Some(bad)))
                .err()
                .ok_or_else(|| Error::unexpected(format!("{bad} accepted")))?;
            assert_eq!(e.kind(), ErrorKind::BadInput, "{bad}: {e}");
            assert!(e.to_string().contains("PGDATA of container db"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn methods_and_targets() -> Result<()> {
        use crate::recover::RecoveryMethod;
        assert_eq!("auto".parse::<RecoveryMethod>()?, RecoveryMethod::Auto);
        assert_eq!(
            "physical".parse::<RecoveryMethod>()?,
            RecoveryMethod::Physical
        );
        assert_eq!(
            "logical".parse::<RecoveryMethod>()?,
            RecoveryMethod::Logical
        );
        let e = "base".parse::<RecoveryMethod>().err();
        assert!(e.is_some_and(|e| e.to_string().contains("auto, logical or physical")));

        let t = Utc::now();
        let (target, _) = target_of(&BackupSelector::Before(t), &[])
            .ok_or_else(|| Error::unexpected("no target for a time"))?;
        assert_eq!(target, RecoveryTarget::Time(t));
        let (target, _) = target_of(&BackupSelector::Latest, &[])
            .ok_or_else(|| Error::unexpected("no target for latest"))?;
        assert_eq!(target, RecoveryTarget::Latest);
        // "previous" names a logical backup; an id the catalog does not hold, none.
        assert!(target_of(&BackupSelector::Previous, &[]).is_none());
        let id: zdr_core::BackupId = "20260116_140000_abcd".parse()?;
        assert!(target_of(&BackupSelector::Id(id), &[]).is_none());
        Ok(())
    }
}
