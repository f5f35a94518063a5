//! [`Stack`]: the opened configuration — tiers in order, components by name — and the
//! operations that span them: backup, catalog, verification, restore with tier fallback,
//! replication, rollback.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use zdr_core::{
    BackupKind, BackupSelector, Catalog, Component, Error, ErrorKind, Manifest, Progress,
    RestoreOutcome, RestoreTarget, Result, StorageTier, VerifyReport,
};
use zdr_storage::{PipelineOptions, ReplicationReport, Repository, RetryPolicy, open_tier};

use crate::adapter::{self, Adapter, BackupOptions, ComponentType, RestoreOptions};
#[cfg(feature = "postgres")]
use crate::config::ComponentConfig;
use crate::config::Config;

/// A failure reported as data (the operation went on with the rest).
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The tier, where one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The component, where one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The backup, where one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// The stored key, where one is concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The error's kind (`integrity`, `storage`, ...).
    pub kind: String,
    /// What went wrong.
    pub error: String,
}

impl Problem {
    /// A failure of the tier `tier`.
    pub(crate) fn on_tier(e: &Error, tier: &str) -> Self {
        Self {
            tier: Some(tier.to_owned()),
            ..Self::new(e)
        }
    }

    pub(crate) fn new(e: &Error) -> Self {
        Self {
            tier: None,
            component: None,
            backup: None,
            key: None,
            kind: e.kind().as_str().to_owned(),
            error: e.to_string(),
        }
    }
}

/// What [`Stack::backup`] made.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The new backup's manifest.
    pub backup: Manifest,
    /// The tier it was written to (the primary).
    pub tier: String,
    /// How long it took.
    pub seconds: f64,
    /// The replication that followed, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationRun>,
}

/// The backups on one tier, as [`Stack::list`] found them.
#[derive(Debug, Clone, Serialize)]
pub struct TierListing {
    /// The tier.
    pub tier: String,
    /// Complete backups, oldest first.
    pub backups: Vec<Manifest>,
    /// Manifests that cannot be used, and why.
    pub problems: Vec<Problem>,
    /// Why the tier could not be read at all (unreachable, refused): its backups are
    /// unknown, the other tiers are still listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// What [`Stack::verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyRun {
    /// Backups found intact: (tier, manifest).
    pub intact: Vec<(String, Manifest)>,
    /// Damaged backups and unusable manifests.
    pub failures: Vec<Problem>,
}

impl VerifyRun {
    /// True when nothing failed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// A tier a restore passed over, and why.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedTier {
    /// The tier.
    pub tier: String,
    /// Why it was not used.
    pub reason: String,
}

/// What [`Stack::restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup: Manifest,
    /// The tier it was read from.
    pub tier: String,
    /// What the restorer did.
    pub outcome: RestoreOutcome,
    /// The verification against the manifest's facts.
    pub verify: VerifyReport,
    /// Seconds spent restoring.
    pub restore_seconds: f64,
    /// Seconds from start to verified (the RTO of this restore).
    pub rto_seconds: f64,
    /// Tiers tried before, and why they were passed over.
    pub skipped: Vec<SkippedTier>,
    /// The safety copy of the live data taken before it was replaced (redis physical
    /// restores: a backup with schedule `pre-restore` on the primary tier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety_copy: Option<String>,
}

impl RestoreReport {
    /// True when the verification passed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.verify.is_ok()
    }
}

/// One pair of tiers replicated.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationPair {
    /// The source tier.
    pub from: String,
    /// The destination tier.
    pub to: String,
    /// Backups copied.
    pub copied: Vec<String>,
    /// Backups already there.
    pub already_present: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Backups that could not be copied.
    pub failed: Vec<Problem>,
}

/// What [`Stack::replicate`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicationRun {
    /// Each pair of tiers, in chain order.
    pub pairs: Vec<ReplicationPair>,
}

impl ReplicationRun {
    /// True when every backup reached every tier.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.pairs.iter().all(|p| p.failed.is_empty())
    }
}

impl ScratchRestoreReport {
    /// True when the scratch copy matched the manifest.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.verify.is_ok()
    }
}

/// What [`Stack::verify_restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ScratchRestoreReport {
    /// The backup restored.
    pub backup: Manifest,
    /// The tier it was read from.
    pub tier: String,
    /// What the scratch restore did (`None` when its verification failed).
    pub outcome: Option<RestoreOutcome>,
    /// The verification of the scratch copy against the manifest's facts.
    pub verify: VerifyReport,
    /// The component type (what `outcome.items` counts: tables or keys).
    pub component_type: ComponentType,
    /// How long it took.
    pub seconds: f64,
}

/// The opened configuration: tiers in order (primary, then replicas) and components by name,
/// with every operation as a method.
pub struct Stack {
    config: Config,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("primary", &self.config.primary)
            .field("replicate_to", &self.config.replicate_to)
            .field("components", &self.config.components.keys())
            .finish_non_exhaustive()
    }
}

impl Stack {
    /// Open `config`, resolving `vault:` credential references first.
    ///
    /// # Errors
    /// A reference that cannot be resolved (never its value).
    pub async fn open(mut config: Config) -> Result<Self> {
        config.resolve_vault_references().await?;
        Ok(Self { config })
    }

    /// Open `config` as it is, without contacting Vault for `vault:` references (for
    /// operations that need no component credentials: listing, replication, WAL
    /// archiving, status).
    #[must_use]
    pub fn open_unresolved(config: Config) -> Self {
        Self { config }
    }

    /// Load `zdr.toml` at `path` (with the `ZDR_*` overrides of this process) and open it.
    ///
    /// # Errors
    /// As [`Config::from_file`] and [`Stack::open`].
    pub async fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::open(Config::from_file(path)?).await
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Tiers in the order restores try them: primary, then the replicas.
    #[must_use]
    pub fn tier_order(&self) -> Vec<String> {
        self.config.restore_order()
    }

    /// Every tier in the config, by name.
    #[must_use]
    pub fn tier_names(&self) -> Vec<String> {
        self.config.tiers.keys().cloned().collect()
    }

    /// Open the named tier.
    ///
    /// # Errors
    /// An unknown tier; a tier whose settings are unusable.
    pub fn tier(&self, name: &str) -> Result<Arc<dyn StorageTier>> {
        open_tier(name, self.config.tier(name)?)
    }

    /// The pipeline options (compression, encryption keys).
    ///
    /// # Errors
    /// As [`Config::pipeline_options`].
    pub fn pipeline(&self) -> Result<PipelineOptions> {
        self.config.pipeline_options()
    }

    /// The repository on the named tier.
    ///
    /// # Errors
    /// As [`Stack::tier`] and [`Stack::pipeline`].
    pub fn repository(&self, tier: &str) -> Result<Repository> {
        Ok(self.repository_on(self.tier(tier)?, self.pipeline()?))
    }

    fn repository_on(&self, tier: Arc<dyn StorageTier>, pipeline: PipelineOptions) -> Repository {
        Repository::with_sweep_grace(tier, pipeline, self.sweep_grace())
    }

    /// How old a partial write must be before a run sweeps it (`[pipeline] sweep_grace_secs`).
    pub(crate) fn sweep_grace(&self) -> std::time::Duration {
        self.config.pipeline.sweep_grace_secs.map_or(
            zdr_storage::DEFAULT_SWEEP_GRACE,
            std::time::Duration::from_secs,
        )
    }

    /// The type of the named component.
    ///
    /// # Errors
    /// An unknown component.
    pub fn component_type(&self, name: &str) -> Result<ComponentType> {
        Ok(ComponentType::of(self.config.component(name)?))
    }

    /// Back up the named component to the primary tier (and replicate when asked).
    ///
    /// # Errors
    /// Options that do not apply to the component; the source's and the tier's errors (no
    /// manifest is written for a failed backup).
    pub async fn backup(
        &self,
        name: &str,
        options: &BackupOptions,
        progress: &Progress,
    ) -> Result<BackupReport> {
        let config = self.config.component(name)?;
        // One run per component at a time on the primary tier (a prune included), across
        // hosts sharing it: a backup waits for a prune of its component.
        let lock = zdr_storage::TierLock::take(
            self.tier(&self.config.primary)?,
            &component_lock(name),
            &format!("backup {name}"),
            &self.backup_lock_policy(options),
            progress,
        )
        .await
        .map_err(|e| e.with_context("component", name))?;
        let result = self.backup_locked(name, config, options, progress).await;
        if let Err(e) = lock.release().await {
            progress.warn(format!("could not remove the lock of {name}: {e}"));
        }
        result
    }

    /// Remove the lock of `component` on `tier` (default: the primary) by hand — a run that
    /// died without removing it, when its heartbeat is not yet stale. Returns who held it.
    ///
    /// # Errors
    /// An unknown component or tier; storage errors.
    pub async fn unlock(
        &self,
        component: &str,
        tier: Option<&str>,
    ) -> Result<Option<zdr_storage::LockOwner>> {
        self.config.component(component)?;
        let tier = self.tier(tier.unwrap_or(&self.config.primary))?;
        zdr_storage::remove_lock(tier.as_ref(), &component_lock(component)).await
    }

    /// Remove the repository lock a prune holds on `tier` (default: the primary) by hand.
    /// Returns who held it.
    ///
    /// # Errors
    /// An unknown tier; storage errors.
    pub async fn unlock_repository(
        &self,
        tier: Option<&str>,
    ) -> Result<Option<zdr_storage::LockOwner>> {
        let tier = self.tier(tier.unwrap_or(&self.config.primary))?;
        zdr_storage::remove_lock(tier.as_ref(), zdr_storage::REPOSITORY_LOCK).await
    }

    async fn backup_locked(
        &self,
        name: &str,
        config: &crate::config::ComponentConfig,
        options: &BackupOptions,
        progress: &Progress,
    ) -> Result<BackupReport> {
        #[allow(clippy::collapsible_if)]
        if options.base {
            if ComponentType::of(config) != ComponentType::Postgres {
                return Err(Error::bad_input(format!(
                    "base backups apply to postgres components; {name} is a {} component",
                    ComponentType::of(config)
                )));
            }
            #[cfg(feature = "postgres")]
            {
                let mut report = self
                    .base_backup(name, options.schedule.as_deref(), progress)
                    .await?;
                if options.replicate {
                    report.replication = Some(
                        self.replicate_with(None, &self.backup_lock_policy(options), progress)
                            .await?,
                    );
                }
                return Ok(report);
            }
        }
        let pipeline = self.pipeline()?;
        let (runner, spec) = match self.docker_runner(name, true).await? {
            Some((runner, spec)) => (
                Some(Arc::new(runner) as Arc<dyn zdr_core::CommandRunner>),
                spec,
            ),
            None => (None, None),
        };
        let adapter = Adapter::for_backup(name, config, options)?
            .with_runner(runner)
            .in_container(self.server_container(name, config).await?);
        let repo = self.repository_on(self.tier(&self.config.primary)?, pipeline);
        let started = Instant::now();
        let schedule = options.schedule.as_deref().unwrap_or(&self.config.schedule);
        let m = match spec {
            // The container's spec goes into the manifest's facts, so the container can be
            // made again when the compose file is gone (secrets by name only).
            Some(spec) => {
                let source = crate::recover::WithContainerSpec::new(adapter.source(), &spec)?;
                repo.backup(&source, schedule, progress).await?
            }
            None => repo.backup(adapter.source(), schedule, progress).await?,
        };
        let mut report = BackupReport {
            backup: m,
            tier: self.config.primary.clone(),
            seconds: started.elapsed().as_secs_f64(),
            replication: None,
        };
        if options.replicate {
            report.replication = Some(
                self.replicate_with(None, &self.backup_lock_policy(options), progress)
                    .await?,
            );
        }
        Ok(report)
    }

    /// The catalog of one tier (or of every tier), of one component (or all). A tier that
    /// cannot be read is reported in its [`TierListing::error`]; the others are still listed.
    ///
    /// # Errors
    /// An unknown tier or component name.
    pub async fn list(
        &self,
        tier: Option<&str>,
        component: Option<&str>,
    ) -> Result<Vec<TierListing>> {
        let component = component.map(Component::new).transpose()?;
        let mut out = Vec::new();
        for t in self.tiers_or_all(tier)? {
            let loaded = match self.tier(&t) {
                Ok(opened) => Catalog::load(opened.as_ref()).await,
                Err(e) => Err(e),
            };
            let catalog = match loaded {
                Ok(c) => c,
                Err(e) => {
                    out.push(TierListing {
                        error: Some(Problem::on_tier(&e, &t)),
                        tier: t,
                        backups: Vec::new(),
                        problems: Vec::new(),
                    });
                    continue;
                }
            };
            out.push(TierListing {
                error: None,
                backups: catalog
                    .list(component.as_ref())
                    .into_iter()
                    .cloned()
                    .collect(),
                problems: catalog_problems(&catalog, &t),
                tier: t,
            });
        }
        Ok(out)
    }

    fn tiers_or_all(&self, tier: Option<&str>) -> Result<Vec<String>> {
        match tier {
            Some(t) => Ok(vec![self.config.tier(t).map(|_| t.to_owned())?]),
            None => Ok(self.tier_names()),
        }
    }

    /// Re-read every artifact of every backup (of one component, on one tier when given)
    /// and check sizes, checksums, sidecars and manifests; `deep` also decrypts and
    /// decompresses. Damage is reported in the result, not as an error, and so is a tier
    /// that cannot be read (the other tiers are still verified).
    ///
    /// # Errors
    /// An unknown tier or component; unusable pipeline settings.
    pub async fn verify(
        &self,
        tier: Option<&str>,
        component: Option<&str>,
        deep: bool,
        progress: &Progress,
    ) -> Result<VerifyRun> {
        self.verify_newest(tier, component, deep, None, progress)
            .await
    }

    /// [`Stack::verify`] of a sample: with `newest = Some(n)`, only the newest `n` backups of
    /// each component on each tier (what a scheduled verification checks); `None` for all.
    ///
    /// # Errors
    /// As [`Stack::verify`].
    pub async fn verify_newest(
        &self,
        tier: Option<&str>,
        component: Option<&str>,
        deep: bool,
        newest: Option<usize>,
        progress: &Progress,
    ) -> Result<VerifyRun> {
        let component = component.map(Component::new).transpose()?;
        let options = self.pipeline()?;
        let mut run = VerifyRun::default();
        for t in self.tiers_or_all(tier)? {
            let (repo, catalog) = match self.open_catalog(&t, &options).await {
                Ok(rc) => rc,
                Err(e) => {
                    run.failures.push(Problem {
                        tier: Some(t.clone()),
                        ..Problem::new(&e)
                    });
                    continue;
                }
            };
            run.failures.extend(catalog_problems(&catalog, &t));
            let mut chosen = catalog.list(component.as_ref());
            if let Some(n) = newest {
                // Newest first within each component, then the first n of each.
                chosen.sort_by(|a, b| {
                    a.component
                        .cmp(&b.component)
                        .then(b.started_at.cmp(&a.started_at))
                });
                let mut seen: std::collections::BTreeMap<&Component, usize> =
                    std::collections::BTreeMap::new();
                chosen.retain(|m| {
                    let k = seen.entry(&m.component).or_default();
                    *k += 1;
                    *k <= n
                });
            }
            for m in chosen {
                match repo.verify(m, deep, progress).await {
                    Ok(()) => run.intact.push((t.clone(), m.clone())),
                    Err(e) => run.failures.push(Problem {
                        tier: Some(t.clone()),
                        component: Some(m.component.to_string()),
                        backup: Some(m.id.to_string()),
                        ..Problem::new(&e)
                    }),
                }
            }
        }
        Ok(run)
    }

    /// Restore the named component: the selected backup (among those its restorer can
    /// restore) from the first tier that holds it intact — primary, then each replica —
    /// then verify the result against the manifest's facts.
    ///
    /// A tier that cannot be opened or listed, or whose copy fails its checksums, is passed
    /// over (and named in [`RestoreReport::skipped`]); any other error stops the restore.
    ///
    /// # Errors
    /// Options that do not apply; no tier holding a usable backup (the last tier's reason);
    /// the restorer's errors.
    pub async fn restore(
        &self,
        name: &str,
        options: &RestoreOptions,
        progress: &Progress,
    ) -> Result<RestoreReport> {
        let config = self.config.component(name)?;
        let ty = ComponentType::of(config);
        let adapter = Adapter::for_restore(name, config, options)?
            .with_runner(self.runner_for(name).await?)
            .in_container(self.server_container(name, config).await?);
        let mut target = options.target.clone();
        if target.path.is_none() {
            target.path = adapter::default_target(config);
        }
        let comp = Component::new(name)?;
        let tiers = match &options.tier {
            Some(t) => vec![self.config.tier(t).map(|_| t.clone())?],
            None => self.tier_order(),
        };
        let pipeline = self.pipeline()?;
        let started = Instant::now();
        let safety_copy = self.safety_copy(name, ty, options, progress).await?;
        let mut skipped = Vec::new();
        let mut last_err: Option<Error> = None;
        for t in &tiers {
            let (repo, catalog) = match self.open_catalog(t, &pipeline).await {
                Ok(rc) => rc,
                Err(e) => {
                    progress.warn(format!("tier {t} unusable: {e}"));
                    skipped.push(SkippedTier {
                        tier: t.clone(),
                        reason: e.to_string(),
                    });
                    last_err = Some(e);
                    continue;
                }
            };
            let m = match select_for(&catalog, &comp, &options.backup, |m| {
                adapter::accepts(ty, options, m) && Some(&m.id) != safety_copy.as_ref()
            }) {
                Ok(m) => m,
                Err(e) => {
                    let e = explain_other_kinds(e, &catalog, &comp, ty, options);
                    skipped.push(SkippedTier {
                        tier: t.clone(),
                        reason: e.to_string(),
                    });
                    last_err = Some(e);
                    continue;
                }
            };
            let restore_started = Instant::now();
            match repo
                .restore(adapter.restorer().as_ref(), &m, &target, progress)
                .await
            {
                Ok(outcome) => {
                    let restore_seconds = restore_started.elapsed().as_secs_f64();
                    let verify = if adapter.verifies_itself() {
                        // Checked by the restorer before the data went live (a second
                        // check now would race with clients already writing to it).
                        VerifyReport {
                            checked: outcome.items,
                            problems: Vec::new(),
                        }
                    } else {
                        let verify_target = RestoreTarget {
                            path: target.path.clone(),
                            name: target.name.clone(),
                            ..RestoreTarget::default()
                        };
                        adapter.verifier().verify(&m, &verify_target).await?
                    };
                    return Ok(RestoreReport {
                        backup: m,
                        tier: t.clone(),
                        outcome,
                        verify,
                        restore_seconds,
                        rto_seconds: started.elapsed().as_secs_f64(),
                        skipped,
                        safety_copy: safety_copy.map(|id| id.to_string()),
                    });
                }
                Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Storage) => {
                    progress.warn(format!(
                        "backup {} on tier {t} cannot be used ({e}); trying the next tier",
                        m.id
                    ));
                    skipped.push(SkippedTier {
                        tier: t.clone(),
                        reason: e.to_string(),
                    });
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::not_found(format!("no backup of {name}"))))
    }

    /// Before a redis physical restore replaces the live dataset: a backup of what the server
    /// holds now (schedule `pre-restore`), so nothing in memory is lost without a copy. A
    /// server that does not answer holds nothing to keep (a warning says so); one that
    /// refuses the credentials stops the restore before anything changes.
    async fn safety_copy(
        &self,
        name: &str,
        ty: ComponentType,
        options: &RestoreOptions,
        progress: &Progress,
    ) -> Result<Option<zdr_core::BackupId>> {
        if ty != ComponentType::Redis || options.logical || options.no_safety_copy {
            return Ok(None);
        }
        let copy = BackupOptions {
            schedule: Some("pre-restore".to_owned()),
            ..BackupOptions::default()
        };
        match self.backup(name, &copy, progress).await {
            Ok(report) => {
                progress.info(format!(
                    "safety copy of the live dataset before the restore: {}",
                    report.backup.id
                ));
                Ok(Some(report.backup.id))
            }
            Err(e) if e.kind() == ErrorKind::Source && e.is_temporary() => {
                progress.warn(format!(
                    "no safety copy of {name}: the server does not answer ({e}); nothing in memory to keep"
                ));
                Ok(None)
            }
            Err(e) => Err(e.with_hint(
                "the safety copy of the live dataset failed, so nothing was replaced; fix the cause, or restore without a safety copy",
            )),
        }
    }

    async fn open_catalog(
        &self,
        tier: &str,
        pipeline: &PipelineOptions,
    ) -> Result<(Repository, Catalog)> {
        let repo = Repository::new(self.tier(tier)?, pipeline.clone());
        let catalog = repo.catalog().await?;
        Ok((repo, catalog))
    }

    /// Copy the backups missing on the replica tiers along the chain (primary → first →
    /// second ...), or from one tier to another.
    ///
    /// # Errors
    /// No replica tiers configured; an unknown tier; a source catalog that cannot be read.
    pub async fn replicate(
        &self,
        pair: Option<(&str, &str)>,
        progress: &Progress,
    ) -> Result<ReplicationRun> {
        self.replicate_with(pair, &self.config.lock_policy(), progress)
            .await
    }

    /// The locks of a backup: `[locks]`, with the backup's own wait.
    fn backup_lock_policy(&self, options: &BackupOptions) -> zdr_storage::LockPolicy {
        let mut policy = self.config.lock_policy();
        if let Some(w) = options.lock_wait {
            policy.wait = w;
        }
        policy
    }

    async fn replicate_with(
        &self,
        pair: Option<(&str, &str)>,
        locks: &zdr_storage::LockPolicy,
        progress: &Progress,
    ) -> Result<ReplicationRun> {
        let pairs: Vec<(String, String)> = match pair {
            Some((f, t)) => {
                self.config.tier(f)?;
                self.config.tier(t)?;
                vec![(f.to_owned(), t.to_owned())]
            }
            None => self
                .tier_order()
                .windows(2)
                .map(|w| (w[0].clone(), w[1].clone()))
                .collect(),
        };
        if pairs.is_empty() {
            return Err(Error::bad_input(
                "nothing to replicate: no replica tiers (replicate_to) are configured and no pair of tiers was given",
            ));
        }
        let mut run = ReplicationRun::default();
        for (f, t) in pairs {
            let to = self.tier(&t)?;
            // What killed runs left on the destination (temporary files, unfinished
            // multipart uploads) older than the grace period goes first.
            match to.sweep_temporary(self.sweep_grace()).await {
                Ok((0, _)) => {}
                Ok((n, bytes)) => progress.warn(format!(
                    "removed {n} partial write(s) ({bytes} bytes) left on tier {t} by interrupted runs"
                )),
                Err(e) => progress.warn(format!("could not sweep partial writes on tier {t}: {e}")),
            }
            let report: ReplicationReport = zdr_storage::replicate_locked(
                &self.tier(&f)?,
                &to,
                &RetryPolicy::default(),
                locks,
                progress,
            )
            .await?;
            run.pairs.push(ReplicationPair {
                copied: report.copied.iter().map(ToString::to_string).collect(),
                already_present: report.already_present,
                bytes: report.bytes,
                failed: report
                    .failed
                    .iter()
                    .map(|(id, e)| Problem {
                        backup: Some(id.to_string()),
                        tier: Some(t.clone()),
                        ..Problem::new(e)
                    })
                    .collect(),
                from: f,
                to: t,
            });
        }
        Ok(run)
    }

    #[cfg(feature = "postgres")]
    /// postgres: swap the database replaced by the last restore back in (the current one
    /// is kept, so rolling back again undoes the rollback).
    ///
    /// # Errors
    /// Not a postgres component; nothing to roll back to; server errors.
    pub async fn rollback(
        &self,
        name: &str,
        database: Option<&str>,
        progress: &Progress,
    ) -> Result<zdr_postgres::RollbackOutcome> {
        let pg = self.postgres_settings(name)?;
        let mut component =
            zdr_postgres::PostgresComponent::new(Component::new(name)?, pg.to_pg(None)?);
        if let Some(runner) = self.runner_for(name).await? {
            component = component.with_runner(runner);
        }
        let db = database.unwrap_or(&pg.database).to_owned();
        component.rollback(&db, progress).await
    }

    /// Restore the latest backup (that the component can restore) from `tier` (default: the
    /// primary) into a scratch target — a scratch database for postgres, a scratch server
    /// for redis — verify it against the manifest's facts and remove it. Live data is never
    /// touched.
    ///
    /// # Errors
    /// A component type without a scratch target; an integrity error naming what differs.
    pub async fn verify_restore(
        &self,
        name: &str,
        tier: Option<&str>,
        progress: &Progress,
    ) -> Result<ScratchRestoreReport> {
        let config = self.config.component(name)?;
        let ty = ComponentType::of(config);
        if !matches!(
            ty,
            ComponentType::Postgres
                | ComponentType::Redis
                | ComponentType::Qdrant
                | ComponentType::S3Bucket
        ) {
            return Err(Error::bad_input(format!(
                "{name} is a {ty} component; a verification by scratch restore applies to postgres, redis, qdrant and s3-bucket components"
            ))
            .with_context("component", name));
        }
        let adapter = Adapter::scratch(name, config)?.with_runner(self.runner_for(name).await?);
        let tier = tier.unwrap_or(&self.config.primary).to_owned();
        let repo = self.repository(&tier)?;
        let comp = Component::new(name)?;
        let catalog = repo.catalog().await?;
        let options = RestoreOptions::default();
        let m = select_for(&catalog, &comp, &BackupSelector::Latest, |m| {
            adapter::accepts(ty, &options, m)
        })
        .map_err(|e| explain_other_kinds(e, &catalog, &comp, ty, &options))?;
        let started = Instant::now();
        let (outcome, verify) = scratch_outcome(
            repo.restore(
                adapter.restorer().as_ref(),
                &m,
                &RestoreTarget::default(),
                progress,
            )
            .await,
        )?;
        Ok(ScratchRestoreReport {
            backup: m,
            tier,
            outcome,
            verify,
            component_type: ty,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// The postgres settings of the named component.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres_settings(&self, name: &str) -> Result<&zdr_postgres::PostgresSettings> {
        match self.config.component(name)? {
            ComponentConfig::Postgres(p) => Ok(p),
            #[allow(unreachable_patterns)]
            other => Err(Error::bad_input(format!(
                "{name} is a {} component; this operation applies to postgres components",
                ComponentType::of(other)
            ))
            .with_context("component", name)),
        }
    }

    pub(crate) async fn adapter_for_drill(&self, name: &str) -> Result<(Adapter, ComponentType)> {
        let config = self.config.component(name)?;
        let adapter = Adapter::scratch(name, config)?.with_runner(self.runner_for(name).await?);
        Ok((adapter, ComponentType::of(config)))
    }

    /// The engine and the container of component `name` when the config puts its tools in
    /// a container (`runner = "docker"`); `None` for local tools.
    ///
    /// # Errors
    /// The engine unreachable, the container or compose service unknown, each named.
    pub(crate) async fn docker_container(
        &self,
        name: &str,
    ) -> Result<Option<(zdr_docker::Docker, String)>> {
        let Some(crate::config::RunnerConfig::Docker { container, .. }) =
            self.config.runners.get(name)
        else {
            return Ok(None);
        };
        let docker = self
            .docker()
            .await
            .map_err(|e| e.with_context("component", name))?;
        let container = docker
            .resolve(container)
            .await
            .map_err(|e| e.with_context("component", name))?;
        Ok(Some((docker, container)))
    }

    /// The engine and container of a component whose server itself is handled through the
    /// container (redis: files and restarts); `None` for the others and for local ones.
    async fn server_container(
        &self,
        name: &str,
        config: &crate::config::ComponentConfig,
    ) -> Result<Option<(zdr_docker::Docker, String)>> {
        if ComponentType::of(config) != ComponentType::Redis {
            return Ok(None);
        }
        self.docker_container(name).await
    }

    /// A connection to the engine of `[docker] host` (default: `DOCKER_HOST`, then the
    /// local socket).
    ///
    /// # Errors
    /// The engine unreachable, naming the endpoint.
    pub(crate) async fn docker(&self) -> Result<zdr_docker::Docker> {
        match &self.config.docker.host {
            Some(h) => zdr_docker::Docker::connect_to(h).await,
            None => zdr_docker::Docker::connect().await,
        }
    }

    /// The runner of component `name`'s client tools when the config puts them in a
    /// container (connects to the engine and finds the container); `None` for local tools.
    ///
    /// # Errors
    /// The engine unreachable, the container or compose service unknown, each named.
    pub(crate) async fn runner_for(
        &self,
        name: &str,
    ) -> Result<Option<Arc<dyn zdr_core::CommandRunner>>> {
        Ok(self
            .docker_runner(name, false)
            .await?
            .map(|(runner, _)| Arc::new(runner) as Arc<dyn zdr_core::CommandRunner>))
    }

    /// The exec runner of component `name`'s tools and, with `with_spec`, the spec of its
    /// container (recorded in its backups), when the config puts the tools in a container.
    pub(crate) async fn docker_runner(
        &self,
        name: &str,
        with_spec: bool,
    ) -> Result<
        Option<(
            zdr_docker::DockerExecRunner,
            Option<zdr_docker::ContainerSpec>,
        )>,
    > {
        let Some(crate::config::RunnerConfig::Docker {
            user, host, port, ..
        }) = self.config.runners.get(name)
        else {
            return Ok(None);
        };
        let Some((docker, container)) = self.docker_container(name).await? else {
            return Ok(None);
        };
        let spec = if with_spec {
            let mut spec = docker
                .spec(&container)
                .await
                .map_err(|e| e.with_context("component", name))?;
            // Which recovery made the container is not part of what it is made of.
            spec.labels.remove(crate::recover::RECOVERY_LABEL);
            Some(spec)
        } else {
            None
        };
        let mut runner = docker
            .exec_runner(container)
            .with_env("PGHOST", host)
            .with_env("PGPORT", port.to_string());
        if let Some(u) = user {
            runner = runner.with_user(u);
        }
        Ok(Some((runner, spec)))
    }
}

/// A scratch restore's result as data: the outcome and a passed verification, or the failed
/// verification an integrity error carries. Other errors stay errors.
/// The name of the lock a backup, replication or prune of `component` holds on a tier.
#[must_use]
pub fn component_lock(component: &str) -> String {
    zdr_storage::component_lock(component)
}

pub(crate) fn scratch_outcome(
    result: Result<RestoreOutcome>,
) -> Result<(Option<RestoreOutcome>, VerifyReport)> {
    match result {
        Ok(outcome) => {
            let verify = VerifyReport {
                checked: outcome.items,
                problems: Vec::new(),
            };
            Ok((Some(outcome), verify))
        }
        Err(e) => match e.verify_report() {
            Some(report) if !report.is_ok() => Ok((None, report.clone())),
            _ => Err(e),
        },
    }
}

fn catalog_problems(catalog: &Catalog, tier: &str) -> Vec<Problem> {
    catalog
        .problems()
        .iter()
        .map(|p| Problem {
            tier: Some(tier.to_owned()),
            key: Some(p.key.clone()),
            ..Problem::new(&p.error)
        })
        .collect()
}

/// Resolve `selector` among the backups of `comp` that `accepts` takes.
pub(crate) fn select_for(
    catalog: &Catalog,
    comp: &Component,
    selector: &BackupSelector,
    accepts: impl Fn(&Manifest) -> bool,
) -> Result<Manifest> {
    let usable: Vec<Manifest> = catalog
        .list(Some(comp))
        .into_iter()
        .filter(|m| accepts(m))
        .cloned()
        .collect();
    let filtered = Catalog::from_manifests(catalog.tier(), usable);
    filtered.select(comp, selector).cloned()
}

/// Add to a "no backup" error what the catalog holds of other kinds, and what they are for.
fn explain_other_kinds(
    e: Error,
    catalog: &Catalog,
    comp: &Component,
    ty: ComponentType,
    options: &RestoreOptions,
) -> Error {
    if e.kind() != ErrorKind::NotFound {
        return e;
    }
    let others: Vec<&Manifest> = catalog
        .list(Some(comp))
        .into_iter()
        .filter(|m| !adapter::accepts(ty, options, m))
        .collect();
    let hint = adapter::other_kind_hint(ty, options);
    if others.is_empty() || hint.is_empty() {
        return e;
    }
    let kinds: Vec<String> = others
        .iter()
        .rev()
        .take(3)
        .map(|m| format!("{} ({})", m.id, kind_name(m.kind)))
        .collect();
    e.with_context(
        "other kinds",
        format!(
            "{} backup(s) of other kinds: {}",
            others.len(),
            kinds.join(", ")
        ),
    )
    .with_hint(hint)
}

fn kind_name(kind: BackupKind) -> &'static str {
    match kind {
        BackupKind::Logical => "logical",
        BackupKind::Physical => "physical",
        BackupKind::Wal => "wal",
        BackupKind::Snapshot => "snapshot",
        BackupKind::Export => "export",
    }
}
