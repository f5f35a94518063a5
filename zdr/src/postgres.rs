//! PostgreSQL across the stack: the WAL archive on its tiers (`archive_command` /
//! `restore_command` targets with prefetch), base backups, point-in-time recovery with its
//! "apply the database" step and after-target check, `check`, WAL verification and RPO.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use zdr_core::{
    Component, Compression, Error, ErrorKind, LocalRunner, Manifest, Progress, RestoreOutcome,
    Result, StorageTier,
};
use zdr_postgres::basebackup::{BaseBackupFacts, PgBaseBackup};
use zdr_postgres::pitr::{PitrOptions, PitrPlan, RecoveryReport, RecoveryTarget};
use zdr_postgres::wal::{FetchOutcome, PushReport, TimelineReport, WalArchive, WalListing};
use zdr_postgres::{PostgresSettings, WalSettings};

use crate::config::ComponentConfig;
use crate::stack::{BackupReport, SkippedTier, Stack};

/// How to run the `zdr` binary from outside this process: PostgreSQL's `restore_command`
/// during point-in-time recovery, and the detached WAL prefetch.
#[derive(Debug, Clone)]
pub struct ZdrCommand {
    /// The `zdr` executable.
    pub program: PathBuf,
    /// The config file it reads (absolute).
    pub config: PathBuf,
}

impl ZdrCommand {
    /// The running executable with the config at `config` (made absolute).
    ///
    /// # Errors
    /// The executable or the config file cannot be found.
    pub fn current(config: &Path) -> Result<Self> {
        let program = std::env::current_exe()
            .map_err(|e| Error::from_io(e, "cannot find the zdr executable"))?;
        let config = std::fs::canonicalize(config).map_err(|e| {
            Error::from_io(e, "cannot resolve the config path")
                .with_context("path", config.display())
        })?;
        Ok(Self { program, config })
    }

    fn restore_command(&self, component: &str) -> String {
        format!(
            "{} --config {} --no-progress wal fetch --component {component} %f %p",
            self.program.display(),
            self.config.display()
        )
    }
}

/// What [`Stack::wal_fetch`] did.
#[derive(Debug, Clone, Serialize)]
pub struct WalFetchReport {
    /// The WAL file name.
    pub file: String,
    /// Fetched (from which tier, how many bytes) or not in the archive.
    pub outcome: FetchOutcome,
}

/// When [`Stack::pitr`] stops, and what it does with the recovered instance.
#[derive(Debug, Clone, Default)]
pub enum PitrFinish {
    /// Leave the instance up, paused at the target, for inspection.
    #[default]
    Keep,
    /// Stop and remove the instance (a PITR drill).
    Discard,
    /// Promote the instance to a primary on a new timeline that archives through the
    /// cluster's `archive_command`.
    Promote,
    /// Copy this database into the live cluster with the safe restore (side database,
    /// verification, swap; the old one is kept for rollback); then stop the instance, and
    /// remove it when `discard` is set.
    ApplyDatabase {
        /// The database to copy across.
        database: String,
        /// Remove the recovery instance afterwards.
        discard: bool,
    },
}

/// A point-in-time recovery request.
#[derive(Debug, Clone)]
pub struct PitrRequest {
    /// The target: a time, an LSN, a transaction id, a restore point, or the end of the
    /// archive.
    pub target: RecoveryTarget,
    /// Follow this timeline (default: the newest in the archive).
    pub timeline: Option<u32>,
    /// The new data directory (default: under `wal.recovery_dir` or the temp dir).
    pub data_dir: Option<PathBuf>,
    /// The recovery instance's port (default: a free one).
    pub port: Option<u16>,
    /// What to do once recovered.
    pub finish: PitrFinish,
    /// Read the base backup from this tier only (default: the primary, then each replica in
    /// order, falling back when a tier is unreachable or its copy is damaged).
    pub tier: Option<String>,
    /// The `zdr` binary and config that PostgreSQL's `restore_command` runs.
    pub zdr: ZdrCommand,
}

/// The database copied into the live cluster by a recovery.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedDatabase {
    /// The database.
    pub database: String,
    /// The logical backup taken from the recovery instance (schedule `pitr`).
    pub backup: String,
    /// The safe restore into the live cluster.
    pub outcome: RestoreOutcome,
}

/// What [`Stack::pitr`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    /// The component.
    pub component: String,
    /// The target, as text.
    pub target: String,
    /// The plan: base backup, timelines, WAL chain end.
    pub plan: PitrPlan,
    /// The tier the base backup was read from.
    pub tier: String,
    /// Tiers tried before, and why they were passed over.
    pub skipped: Vec<SkippedTier>,
    /// The recovery instance's report.
    pub recovery: RecoveryReport,
    /// The database copied into the live cluster, if asked.
    pub applied: Option<AppliedDatabase>,
    /// The timeline of the promoted instance, if promoted.
    pub promoted_timeline: Option<u32>,
    /// Whether the instance was stopped and removed.
    pub discarded: bool,
    /// Recovery instances of interrupted earlier recoveries that were stopped and removed
    /// first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleaned: Vec<String>,
    /// Seconds from start to the end of the last step.
    pub rto_seconds: f64,
}

/// What [`Stack::check`] found: archiving configured, and a switched segment arriving on
/// every WAL tier.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The component.
    pub component: String,
    /// The segment switched to and waited for.
    pub segment: String,
    /// The archiving settings.
    pub settings: WalSettings,
    /// Per tier: when the segment arrived (seconds after the switch).
    pub arrived: Vec<(String, f64)>,
    /// The RPO bound from `archive_timeout`, when set.
    pub rpo_bound_seconds: Option<u64>,
}

/// The WAL archive on one tier, as [`Stack::verify_wal`] found it.
#[derive(Debug, Clone, Serialize)]
pub struct WalTierReport {
    /// The tier.
    pub tier: String,
    /// Per timeline: range, gaps, corrupt segments.
    pub timelines: Vec<TimelineReport>,
    /// Files stored without a sidecar (interrupted pushes).
    pub incomplete: Vec<String>,
}

impl WalTierReport {
    /// True when no segment is missing or corrupt.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.timelines
            .iter()
            .all(|t| t.missing.is_empty() && t.corrupt.is_empty())
    }
}

/// The newest archived WAL of a component: the data at risk (RPO).
#[derive(Debug, Clone, Serialize)]
pub struct WalStatus {
    /// The newest archived segment.
    pub newest_segment: String,
    /// When it was archived, where the tier tells.
    pub archived_at: Option<DateTime<Utc>>,
    /// Its age in seconds.
    pub rpo_seconds: Option<i64>,
    /// The timelines archived.
    pub timelines: Vec<u32>,
}

/// One component in [`Stack::status`].
#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    /// The component.
    pub component: String,
    /// How many backups the primary tier holds.
    pub backups: usize,
    /// The newest backup.
    pub latest: Option<Manifest>,
    /// postgres: the newest base backup's id.
    pub latest_base: Option<String>,
    /// postgres: the WAL archive's newest segment (`None` when nothing is archived or the
    /// component is not postgres).
    pub wal: Option<WalStatus>,
    /// True for postgres components (whose `wal` is meaningful).
    pub postgres: bool,
    /// The component on each reachable tier, primary first.
    pub tiers: Vec<TierStatus>,
    /// The recovery point objective in seconds (`[rpo]`, else the runbook's for the type).
    pub rpo_target_seconds: Option<u64>,
    /// How old the newest recovery point is, in seconds: the newest backup, or for postgres
    /// with a base backup the newest archived WAL segment when that is newer.
    pub recovery_point_age_seconds: Option<i64>,
    /// The objective is missed: the recovery point is older than it, or there is none.
    pub rpo_breached: bool,
}

impl ComponentStatus {
    /// Set the recovery point's age and whether the objective is missed.
    fn measure_rpo(&mut self, now: DateTime<Utc>) {
        let backup_age = self
            .latest
            .as_ref()
            .map(|m| (now - m.finished_at).num_seconds());
        let wal_age = self
            .latest_base
            .as_ref()
            .and(self.wal.as_ref())
            .and_then(|w| w.rpo_seconds);
        self.recovery_point_age_seconds = match (backup_age, wal_age) {
            (Some(b), Some(w)) => Some(b.min(w)),
            (b, w) => b.or(w),
        };
        self.rpo_breached = self.rpo_target_seconds.is_some_and(|target| {
            self.recovery_point_age_seconds
                .is_none_or(|age| age > i64::try_from(target).unwrap_or(i64::MAX))
        });
    }
}

/// One component on one tier in [`Stack::status`].
#[derive(Debug, Clone, Serialize)]
pub struct TierStatus {
    /// The tier.
    pub tier: String,
    /// How many backups it holds.
    pub backups: usize,
    /// The newest one's id.
    pub latest: Option<String>,
    /// Its age in seconds.
    pub age_seconds: Option<i64>,
}

/// What [`Stack::status`] reports.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The tier read (the primary).
    pub tier: String,
    /// When.
    pub now: DateTime<Utc>,
    /// Per component.
    pub components: Vec<ComponentStatus>,
    /// Tiers (and WAL archives) that could not be read; the rest is still reported.
    pub problems: Vec<crate::Problem>,
}

pub(crate) use crate::{free_port, is_root};

impl Stack {
    /// The postgres component `name`, or the only one when `name` is `None`.
    pub(crate) fn pg_component<'a>(
        &'a self,
        name: Option<&'a str>,
    ) -> Result<(&'a str, &'a PostgresSettings)> {
        if let Some(n) = name {
            return Ok((n, self.postgres_settings(n)?));
        }
        let pgs: Vec<(&str, &PostgresSettings)> = self
            .config()
            .components
            .iter()
            .filter_map(|(n, c)| match c {
                ComponentConfig::Postgres(p) => Some((n.as_str(), p)),
                #[allow(unreachable_patterns)]
                _ => None,
            })
            .collect();
        match pgs.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::bad_input("the config has no postgres component")),
            _ => Err(Error::bad_input(
                "the config has several postgres components: name the one meant",
            )),
        }
    }

    /// The WAL archive of a postgres component (the only one when `name` is `None`), on its
    /// WAL tiers (`wal.tiers`, default the primary and the replicas), lz4 by default.
    ///
    /// # Errors
    /// Not a postgres component; unknown tiers; bad settings.
    pub fn wal_archive(&self, name: Option<&str>) -> Result<WalArchive> {
        let (name, pg) = self.pg_component(name)?;
        self.archive_of(name, pg)
    }

    /// The tiers of the named component's WAL archive, in its order.
    pub(crate) fn wal_tier_names(&self, name: &str) -> Vec<String> {
        match self
            .postgres_settings(name)
            .ok()
            .and_then(|pg| pg.wal.tiers.clone())
        {
            Some(t) => t,
            None => self.tier_order(),
        }
    }

    pub(crate) fn archive_of(&self, name: &str, pg: &PostgresSettings) -> Result<WalArchive> {
        let tiers = match &pg.wal.tiers {
            Some(t) => t.clone(),
            None => self.tier_order(),
        };
        self.archive_on(name, pg, &tiers)
    }

    /// The WAL archive of a postgres component on the named tiers only.
    pub(crate) fn archive_on(
        &self,
        name: &str,
        pg: &PostgresSettings,
        tiers: &[String],
    ) -> Result<WalArchive> {
        let mut opened: Vec<Arc<dyn StorageTier>> = Vec::new();
        for t in tiers {
            opened.push(self.tier(t)?);
        }
        let mut options = self.pipeline()?;
        options.compression = match &pg.wal.compression {
            Some(c) => c.parse()?,
            None => Compression::Lz4,
        };
        options.level = None;
        let size = pg.wal.segment_size_mb.unwrap_or(16) * 1024 * 1024;
        WalArchive::new(&Component::new(name)?, opened, options, size)
    }

    /// `archive_command`: store the WAL file at `path` on every WAL tier.
    ///
    /// # Errors
    /// Different bytes already archived under the name (the archived copy is untouched); a
    /// short segment; tier errors.
    pub async fn wal_push(
        &self,
        component: Option<&str>,
        path: &Path,
        progress: &Progress,
    ) -> Result<PushReport> {
        self.wal_archive(component)?.push(path, progress).await
    }

    /// `restore_command`: write the WAL file `file` to `dest`, from the prefetch directory
    /// beside `dest` when a prefetch brought it, else from the first tier holding an intact
    /// copy. With `prefetch`, a detached `zdr wal prefetch` then downloads the next
    /// `wal.prefetch` segments (default 4).
    ///
    /// # Errors
    /// Corrupt everywhere, a tier down, bad settings ([`FetchOutcome::NotFound`] is not an
    /// error: it is the normal end of recovery).
    pub async fn wal_fetch(
        &self,
        component: Option<&str>,
        file: &str,
        dest: &Path,
        prefetch: Option<&ZdrCommand>,
        progress: &Progress,
    ) -> Result<WalFetchReport> {
        let (name, pg) = self.pg_component(component)?;
        let archive = self.archive_of(name, pg)?;
        let prefetch_dir = dest
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(".zdr-prefetch");
        let outcome = archive
            .fetch_prefetched(file, dest, &prefetch_dir, progress)
            .await?;
        if let (FetchOutcome::Fetched { .. }, Some(cmd)) = (&outcome, prefetch) {
            let count = pg.wal.prefetch.unwrap_or(4);
            if count > 0 && file.len() == 24 {
                spawn_prefetch(cmd, name, file, &prefetch_dir, count, progress);
            }
        }
        Ok(WalFetchReport {
            file: file.to_owned(),
            outcome,
        })
    }

    /// Download the `count` segments after `after` into `dir` (what the detached prefetch
    /// runs). Returns how many were brought.
    ///
    /// # Errors
    /// Tier errors.
    pub async fn wal_prefetch(
        &self,
        component: Option<&str>,
        after: &str,
        dir: &Path,
        count: usize,
        progress: &Progress,
    ) -> Result<usize> {
        self.wal_archive(component)?
            .prefetch(after, count, dir, progress)
            .await
    }

    /// A base backup (`pg_basebackup`, streamed) of the named postgres component to the
    /// primary tier; complete once its last WAL segment is archived.
    ///
    /// # Errors
    /// Not a postgres component; archiving that does not deliver the stop segment within
    /// `wal.archive_wait_secs`; server and tool errors.
    pub async fn base_backup(
        &self,
        name: &str,
        schedule: Option<&str>,
        progress: &Progress,
    ) -> Result<BackupReport> {
        let (name, pg) = self.pg_component(Some(name))?;
        let archive = self.archive_of(name, pg)?;
        let wait = Duration::from_secs(pg.wal.archive_wait_secs.unwrap_or(60));
        let mut source =
            PgBaseBackup::new(Component::new(name)?, pg.to_pg(None)?).with_archive(archive, wait);
        // In a container: pg_basebackup runs there, and the container's spec is recorded.
        let spec = match self.docker_runner(name, true).await? {
            Some((runner, spec)) => {
                source = source.with_runner(Arc::new(runner));
                spec
            }
            None => None,
        };
        let primary = self.config().primary.clone();
        let repo = self.repository(&primary)?;
        let started = Instant::now();
        let schedule = schedule.unwrap_or(&self.config().schedule);
        let m = match spec {
            Some(spec) => {
                let source = crate::recover::WithContainerSpec::new(&source, &spec)?;
                repo.backup(&source, schedule, progress).await?
            }
            None => repo.backup(&source, schedule, progress).await?,
        };
        Ok(BackupReport {
            backup: m,
            tier: primary,
            seconds: started.elapsed().as_secs_f64(),
            replication: None,
        })
    }

    /// Point-in-time recovery of the named postgres component: the newest base backup that
    /// ended before the target, the WAL chain checked, a recovery instance on a side port
    /// replaying to the target (paused there), a time target checked (no commit replayed
    /// after it), then [`PitrFinish`].
    ///
    /// # Errors
    /// A target before the oldest backup or in the future, a gap in the chain, a recovery
    /// that ends early, a commit replayed after a time target (the instance is stopped).
    pub async fn pitr(
        &self,
        name: &str,
        request: &PitrRequest,
        progress: &Progress,
    ) -> Result<PitrReport> {
        let started = Instant::now();
        let (name, pg) = self.pg_component(Some(name))?;
        let target = &request.target;
        let archive = self.archive_of(name, pg)?;
        let comp = Component::new(name)?;
        let default_parent = pg
            .wal
            .recovery_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let data_dir = match &request.data_dir {
            Some(d) => d.clone(),
            None => default_parent.join(format!(
                "zdr-pitr-{name}-{}-{:04x}",
                Utc::now().format("%Y%m%d_%H%M%S"),
                rand::random::<u16>()
            )),
        };
        let run_as = if is_root() {
            pg.wal.run_as.clone()
        } else {
            None
        };
        // Instances that killed recoveries left running go first.
        let live = pg.to_pg(None)?;
        let mut cleaned = Vec::new();
        {
            let runner = LocalRunner::shared(live.bin_dir.as_deref());
            let mut parents = vec![default_parent];
            if let Some(p) = data_dir.parent()
                && !parents.iter().any(|q| q.as_path() == p)
            {
                parents.push(p.to_path_buf());
            }
            for parent in parents {
                for note in zdr_postgres::pitr::clean_abandoned(
                    &parent,
                    &live,
                    runner.as_ref(),
                    run_as.as_deref(),
                )
                .await
                {
                    progress.warn(note.clone());
                    cleaned.push(note);
                }
            }
        }
        let options = PitrOptions {
            data_dir,
            port: match request.port {
                Some(p) => p,
                None => free_port()?,
            },
            restore_command: request.zdr.restore_command(name),
            timeline: request.timeline,
            run_as,
            timeout: Duration::from_secs(pg.wal.recovery_timeout_secs.unwrap_or(3600)),
        };
        let tiers = match &request.tier {
            Some(t) => vec![self.config().tier(t).map(|_| t.clone())?],
            None => self.tier_order(),
        };
        let mut skipped = Vec::new();
        let mut last_err = None;
        let mut recovered = None;
        for t in &tiers {
            let attempt = async {
                let repo = self.repository(t)?;
                let catalog = repo.catalog().await?;
                let backups: Vec<Manifest> =
                    catalog.list(Some(&comp)).into_iter().cloned().collect();
                let plan = zdr_postgres::pitr::plan(
                    &backups,
                    &archive,
                    target,
                    request.timeline,
                    Utc::now(),
                )
                .await?;
                progress.info(format!(
                    "recovering {name} to {target} from base backup {} on tier {t} (WAL checked up to {})",
                    plan.backup.id, plan.chain_end
                ));
                let runner = LocalRunner::shared(live.bin_dir.as_deref());
                let instance = zdr_postgres::pitr::recover(
                    &plan, &repo, &live, runner, target, &options, progress,
                )
                .await?;
                Ok::<_, Error>((repo, plan, instance))
            }
            .await;
            match attempt {
                Ok(r) => {
                    recovered = Some((t.clone(), r));
                    break;
                }
                // A tier that is down, or whose copy of the base backup is damaged: the
                // next tier may hold it intact. Anything else is the request's problem.
                Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Storage) => {
                    progress.warn(format!(
                        "tier {t} cannot be used for the recovery ({e}); trying the next tier"
                    ));
                    skipped.push(SkippedTier {
                        tier: t.clone(),
                        reason: e.to_string(),
                    });
                    last_err = Some(e);
                }
                Err(e) => return Err(e.with_context("component", name)),
            }
        }
        let Some((tier, (repo, plan, mut instance))) = recovered else {
            return Err(last_err
                .unwrap_or_else(|| Error::not_found(format!("no base backup of {name}")))
                .with_context("component", name));
        };
        let recovery = instance.report().clone();
        if let Err(e) = check_after_target(target, &recovery) {
            let _ = instance.stop().await;
            return Err(e.with_context("component", name));
        }
        let mut report = PitrReport {
            component: name.to_owned(),
            target: target.to_string(),
            plan,
            tier,
            skipped,
            recovery,
            applied: None,
            promoted_timeline: None,
            discarded: false,
            cleaned,
            rto_seconds: 0.0,
        };
        match &request.finish {
            PitrFinish::ApplyDatabase { database, discard } => {
                let res = apply_database(
                    &repo,
                    &instance,
                    &comp,
                    pg.to_pg(Some(database))?,
                    database,
                    progress,
                )
                .await;
                let _ = instance.stop().await;
                let (m, outcome) = res?;
                report.applied = Some(AppliedDatabase {
                    database: database.clone(),
                    backup: m.id.to_string(),
                    outcome,
                });
                if *discard {
                    instance.discard().await?;
                    report.discarded = true;
                }
            }
            PitrFinish::Discard => {
                instance.discard().await?;
                report.discarded = true;
            }
            PitrFinish::Promote => {
                report.promoted_timeline = Some(instance.promote(progress).await?);
            }
            PitrFinish::Keep => {}
        }
        report.rto_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Check that WAL archiving works end to end for the named postgres component: settings
    /// (archive_mode, wal_level, archive_command running zdr), then a forced WAL switch whose
    /// segment must reach every WAL tier within `timeout` (default `wal.archive_wait_secs`).
    ///
    /// # Errors
    /// Archiving not configured through zdr (naming each problem); the segment not arriving.
    pub async fn check(
        &self,
        name: &str,
        timeout: Option<Duration>,
        progress: &Progress,
    ) -> Result<CheckReport> {
        let (name, pg) = self.pg_component(Some(name))?;
        let archive = self.archive_of(name, pg)?;
        let live = pg.to_pg(None)?;
        let settings = zdr_postgres::wal_settings(&live).await?;
        let mut problems = Vec::new();
        if settings.archive_mode == "off" {
            problems.push("archive_mode is off (set archive_mode = on and restart)".to_owned());
        }
        if settings.wal_level == "minimal" {
            problems.push("wal_level is minimal (set wal_level = replica)".to_owned());
        }
        if !settings.archive_command.contains("wal push") {
            problems.push(format!(
                "archive_command is {:?}, not zdr's (archive_command = 'zdr --config PATH wal push --component {name} %p')",
                settings.archive_command
            ));
        }
        if !problems.is_empty() {
            return Err(Error::bad_input(format!(
                "{name} is not archiving WAL through zdr: {}",
                problems.join("; ")
            ))
            .with_context("component", name));
        }
        let segment = zdr_postgres::switch_wal(&live).await?;
        let wait = timeout.unwrap_or(Duration::from_secs(pg.wal.archive_wait_secs.unwrap_or(60)));
        let arrived = archive
            .wait_archived(&segment, wait, progress)
            .await
            .map_err(|e| {
                e.with_context("component", name).with_hint(
                    "look for archive_command failures in the PostgreSQL log (pg_stat_archiver shows \
                     the last failure)",
                )
            })?;
        let rpo_bound_seconds =
            (settings.archive_timeout_secs > 0).then_some(settings.archive_timeout_secs);
        if rpo_bound_seconds.is_none() {
            progress.warn(
                "archive_timeout is 0: on a quiet server a commit can stay unarchived until its \
                 segment fills (no RPO bound); set archive_timeout = 60 for an RPO of about a minute",
            );
        }
        Ok(CheckReport {
            component: name.to_owned(),
            segment,
            settings,
            arrived,
            rpo_bound_seconds,
        })
    }

    /// Check the WAL archive of the named postgres component on every WAL tier: gaps and
    /// corrupt segments per timeline (`deep`: every segment decoded too), interrupted pushes.
    ///
    /// # Errors
    /// Not a postgres component; a tier that cannot be listed.
    pub async fn verify_wal(
        &self,
        name: &str,
        deep: bool,
        progress: &Progress,
    ) -> Result<Vec<WalTierReport>> {
        let archive = self.wal_archive(Some(name))?;
        let mut out = Vec::new();
        for (i, tier) in archive.tiers().iter().enumerate() {
            let (timelines, listing): (Vec<TimelineReport>, WalListing) =
                archive.verify(i, deep, progress).await?;
            out.push(WalTierReport {
                tier: tier.name().to_owned(),
                timelines,
                incomplete: listing.incomplete,
            });
        }
        Ok(out)
    }

    /// The newest backup of every component (or of `only`) on the primary tier, and for
    /// postgres components the age of the newest archived WAL segment (RPO).
    ///
    /// # Errors
    /// The primary tier's catalog or a WAL archive cannot be read.
    pub async fn status(&self, only: Option<&str>) -> Result<StatusReport> {
        let primary = self.config().primary.clone();
        let now = Utc::now();
        // Every tier is read; one that cannot be is a problem, not the end of the report.
        let mut catalogs = Vec::new();
        let mut problems = Vec::new();
        let mut order = self.tier_order();
        for t in self.tier_names() {
            if !order.contains(&t) {
                order.push(t);
            }
        }
        for t in order {
            match async { self.repository(&t)?.catalog().await }.await {
                Ok(c) => catalogs.push((t, c)),
                Err(e) => problems.push(crate::Problem::on_tier(&e, &t)),
            }
        }
        let mut components = Vec::new();
        for (name, c) in &self.config().components {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let comp = Component::new(name.clone())?;
            let tiers: Vec<TierStatus> = catalogs
                .iter()
                .map(|(t, c)| {
                    let list = c.list(Some(&comp));
                    let newest = list.iter().max_by_key(|m| m.finished_at);
                    TierStatus {
                        tier: t.clone(),
                        backups: list.len(),
                        latest: newest.map(|m| m.id.to_string()),
                        age_seconds: newest.map(|m| (now - m.finished_at).num_seconds()),
                    }
                })
                .collect();
            // The primary's view when it can be read, else the first tier that can.
            let list = catalogs
                .first()
                .map(|(_, c)| c.list(Some(&comp)))
                .unwrap_or_default();
            let latest = list
                .iter()
                .max_by_key(|m| m.finished_at)
                .map(|m| (*m).clone());
            let mut status = ComponentStatus {
                component: name.clone(),
                backups: list.len(),
                latest,
                latest_base: None,
                wal: None,
                postgres: false,
                tiers,
                rpo_target_seconds: self.config().rpo_target(name).map(|d| d.as_secs()),
                recovery_point_age_seconds: None,
                rpo_breached: false,
            };
            #[allow(irrefutable_let_patterns)]
            if let ComponentConfig::Postgres(pg) = c {
                status.postgres = true;
                status.latest_base = list
                    .iter()
                    .filter(|m| BaseBackupFacts::is_base(m))
                    .max_by_key(|m| m.finished_at)
                    .map(|m| m.id.to_string());
                let listing = match self.archive_of(name, pg)?.list(0).await {
                    Ok(l) => l,
                    Err(e) => {
                        let mut p = crate::Problem::new(&e);
                        p.component = Some(name.clone());
                        p.tier = e.context_value("tier").map(str::to_owned);
                        problems.push(p);
                        status.measure_rpo(now);
                        components.push(status);
                        continue;
                    }
                };
                if let Some((seg, modified)) = &listing.newest {
                    status.wal = Some(WalStatus {
                        newest_segment: seg.clone(),
                        archived_at: *modified,
                        rpo_seconds: modified.map(|m| (now - m).num_seconds()),
                        timelines: listing.segments.keys().copied().collect(),
                    });
                }
            }
            status.measure_rpo(now);
            components.push(status);
        }
        // Container recoveries that did not finish (killed, or a step failed): the container
        // may be half made; the next `zdr recover container` continues it.
        for name in self.config().runners.keys() {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let Ok(unfinished) = self.unfinished_recoveries(name).await else {
                continue; // the primary tier's problem is reported above
            };
            for (key, u) in unfinished {
                problems.push(crate::Problem {
                    tier: Some(primary.clone()),
                    component: Some(name.clone()),
                    backup: None,
                    key: Some(key),
                    kind: "conflict".to_owned(),
                    error: format!(
                        "the container recovery {} of {name} (started {}) did not finish: `zdr recover container {name}` continues it",
                        u.id,
                        u.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                });
            }
        }
        // Full-system recoveries that did not finish: the next run continues them.
        if only.is_none()
            && let Ok(unfinished) = self.unfinished_system_recoveries().await
        {
            for (key, u) in unfinished {
                problems.push(crate::Problem {
                    tier: Some(primary.clone()),
                    component: None,
                    backup: None,
                    key: Some(key),
                    kind: "conflict".to_owned(),
                    error: format!(
                        "the full-system recovery {} (started {}) did not finish: `zdr recover system --from {}{}` continues it",
                        u.id,
                        u.started_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        u.from,
                        u.at.map(|t| format!(
                            " --at {}",
                            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ))
                        .unwrap_or_default()
                    ),
                });
            }
        }
        Ok(StatusReport {
            tier: primary,
            now,
            components,
            problems,
        })
    }
}

/// A time target is met only when no commit after it was replayed.
pub(crate) fn check_after_target(target: &RecoveryTarget, report: &RecoveryReport) -> Result<()> {
    if let RecoveryTarget::Time(t) = target
        && let Some(c) = report.last_commit
        && c > *t
    {
        return Err(Error::integrity(format!(
            "the recovered instance replayed a commit at {c}, after the target {t}"
        )));
    }
    Ok(())
}

/// Copy `db` from a recovery instance into the live cluster: a logical backup of it from the
/// instance (kept in the catalog, schedule `pitr`), then the safe restore (side database,
/// facts verified, swap; the replaced database is kept for rollback).
pub(crate) async fn apply_database(
    repo: &zdr_storage::Repository,
    instance: &zdr_postgres::pitr::RecoveryInstance,
    comp: &Component,
    live: zdr_postgres::PgConfig,
    db: &str,
    progress: &Progress,
) -> Result<(Manifest, RestoreOutcome)> {
    let side = zdr_postgres::PostgresComponent::new(comp.clone(), instance.config(db));
    let m = repo.backup(&side, "pitr", progress).await?;
    let live_db = zdr_postgres::PostgresComponent::new(comp.clone(), live);
    let target = zdr_core::RestoreTarget {
        name: Some(db.to_owned()),
        ..zdr_core::RestoreTarget::default()
    };
    let outcome = repo.restore(&live_db, &m, &target, progress).await?;
    Ok((m, outcome))
}

/// Start `zdr wal prefetch` detached (own process group, no stdio): PostgreSQL's
/// restore_command returns at once while the next segments download.
fn spawn_prefetch(
    cmd: &ZdrCommand,
    component: &str,
    after: &str,
    dir: &Path,
    count: usize,
    progress: &Progress,
) {
    use std::os::unix::process::CommandExt;
    let spawned = std::process::Command::new(&cmd.program)
        .arg("--config")
        .arg(&cmd.config)
        .args(["--no-progress", "wal", "prefetch", "--component", component])
        .arg("--count")
        .arg(count.to_string())
        .arg(after)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        progress.warn(format!("cannot start the WAL prefetch: {e}"));
    }
}
