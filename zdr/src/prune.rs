//! [`Stack::prune`]: retention applied to every tier of the chain, with the rules that keep
//! a pruned repository usable.
//!
//! For each tier (primary, then the replicas) and each component, the backups of each kind
//! (logical, base backup, snapshot, ...) are weighed separately. A backup is kept when:
//! - a retention rule of that component and tier keeps it ([`crate::Config::retention_for`]);
//! - it is the newest of its kind on the tier;
//! - it is the newest of its kind that passes verification (sizes and SHA-256 of every
//!   artifact, read back), or newer than that one; with no backup of a kind that verifies,
//!   nothing of that kind is deleted;
//! - it is a base backup the component's point-in-time window (`keep_wal_for`) needs: every
//!   base backup started inside the window, and the newest one started before it;
//! - a later tier of the chain does not hold it yet while that tier's rules would keep it (it
//!   still has to be replicated there), or a later tier cannot be read to tell.
//!
//! A backup is deleted manifest first, then its artifacts, so a prune cut short leaves
//! unreferenced files (removed by a later prune as orphans), never a manifest pointing at
//! nothing. WAL segments before the oldest kept base backup's start (on every tier of the
//! component's WAL archive) go too. Files no manifest names, older than the sweep grace
//! period, and the partial writes and unfinished multipart uploads of killed runs are
//! removed. A dry run decides the same and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use zdr_core::retention::Retention;
use zdr_core::{BackupKind, Catalog, Component, Manifest, Progress, Result, layout};

use futures::StreamExt as _;

use crate::stack::{Problem, Stack};

/// Backups deleted together (one batch of manifests, then one of their files).
const DELETE_CHUNK: usize = 250;

/// Chunks deleted at once on one tier.
const DELETE_CONCURRENCY: usize = 4;

/// What [`Stack::prune`] does.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Only this component (default: every configured component).
    pub component: Option<String>,
    /// Only this tier (default: every tier of the chain). The other tiers are still read to
    /// know what has been replicated.
    pub tier: Option<String>,
    /// How long to wait for a lock another run holds: another prune's repository lock, a
    /// backup's or a replication's component lock (default: `[locks] wait`).
    pub wait: Option<std::time::Duration>,
}

/// What happened to one backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneAction {
    /// Kept (the reasons say why).
    Keep,
    /// Deleted.
    Deleted,
    /// Would be deleted (dry run).
    WouldDelete,
    /// To be deleted, but the deletion failed (see the tier's problems).
    Failed,
}

/// One backup's decision.
#[derive(Debug, Clone, Serialize)]
pub struct PruneItem {
    /// The component.
    pub component: String,
    /// The backup.
    pub id: String,
    /// Its kind.
    pub kind: BackupKind,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// What happened to it.
    pub action: PruneAction,
    /// Why it is kept (empty for a deleted backup: no rule kept it).
    pub reasons: Vec<String>,
}

/// What [`Stack::prune`] did on one tier.
#[derive(Debug, Clone, Serialize)]
pub struct TierPrune {
    /// The tier.
    pub tier: String,
    /// Every backup of the pruned components, newest first per component and kind.
    pub backups: Vec<PruneItem>,
    /// WAL files removed (or that would be), by component.
    pub wal: BTreeMap<String, WalPruned>,
    /// Files no manifest names, older than the grace period, removed (or that would be).
    pub orphans: Vec<String>,
    /// Content-addressed blobs (object storage) that no kept backup references, older than
    /// the grace period, removed (or that would be), by component: blobs and sidecars.
    pub blobs: BTreeMap<String, WalPruned>,
    /// Partial writes of killed runs swept (files and unfinished uploads).
    pub swept: usize,
    /// What went wrong on this tier (the rest went on).
    pub problems: Vec<Problem>,
}

/// WAL files [`Stack::prune`] removed from one tier (or would, in a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalPruned {
    /// The keys.
    pub files: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
}

/// What [`Stack::prune`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Per tier, in chain order.
    pub tiers: Vec<TierPrune>,
}

impl PruneReport {
    /// Whether every tier was read and every deletion done.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.tiers.iter().all(|t| t.problems.is_empty())
    }
}

/// The backups of one component and kind on one tier, newest first.
fn group<'a>(catalog: &'a Catalog, comp: &Component, kind: BackupKind) -> Vec<&'a Manifest> {
    let mut v: Vec<&Manifest> = catalog
        .list(Some(comp))
        .into_iter()
        .filter(|m| m.kind == kind)
        .collect();
    v.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    v
}

/// Whether `rules` keep `m` among `others` (the backups of its kind on a tier).
fn would_keep(rules: &Retention, others: &[&Manifest], m: &Manifest) -> bool {
    let mut times: Vec<DateTime<Utc>> = others
        .iter()
        .filter(|o| o.id != m.id)
        .map(|o| o.started_at)
        .collect();
    times.push(m.started_at);
    let reasons = rules.apply(&times);
    // The newest of a kind is always kept as well.
    let newest = times.iter().all(|t| *t <= m.started_at);
    newest || reasons.last().is_some_and(|r| !r.is_empty())
}

impl Stack {
    /// Apply retention to the tiers of the chain; see the [module docs](crate::prune).
    ///
    /// # Errors
    /// An unknown component or tier; unusable pipeline settings. What fails on a tier (it
    /// cannot be read, a deletion fails) is reported in [`TierPrune::problems`] and the
    /// rest goes on.
    pub async fn prune(&self, options: &PruneOptions, progress: &Progress) -> Result<PruneReport> {
        let config = self.config();
        let names: Vec<String> = match &options.component {
            Some(c) => {
                config.component(c)?;
                vec![c.clone()]
            }
            None => config.components.keys().cloned().collect(),
        };
        let chain = self.tier_order();
        let pruned: Vec<String> = match &options.tier {
            Some(t) => {
                config.tier(t)?;
                vec![t.clone()]
            }
            None => chain.clone(),
        };
        let pipeline = self.pipeline()?;
        let mut policy = config.lock_policy();
        if let Some(w) = options.wait {
            policy.wait = w;
        }
        // One prune of a tier at a time, across hosts: the repository lock of each pruned
        // tier, taken in chain order before its catalog is read and held to the end.
        let mut repo_locks: Vec<zdr_storage::TierLock> = Vec::new();
        let mut locked_out: BTreeMap<String, Problem> = BTreeMap::new();
        if !options.dry_run {
            let mut opened: Vec<(String, std::sync::Arc<dyn zdr_core::StorageTier>)> = Vec::new();
            for t in &pruned {
                match self.tier(t) {
                    Ok(tier) => opened.push((t.clone(), tier)),
                    Err(e) => {
                        locked_out.insert(t.clone(), Problem::on_tier(&e, t));
                    }
                }
            }
            let tiers: Vec<_> = opened.iter().map(|(_, tier)| tier.clone()).collect();
            let taken = zdr_storage::TierLock::take_each(
                &tiers,
                zdr_storage::REPOSITORY_LOCK,
                "prune",
                &policy,
                progress,
            )
            .await;
            for ((t, _), r) in opened.iter().zip(taken) {
                match r {
                    Ok(l) => repo_locks.push(l),
                    Err(e) => {
                        locked_out.insert(t.clone(), Problem::on_tier(&e, t));
                    }
                }
            }
        }
        let mut catalogs: BTreeMap<String, std::result::Result<Catalog, Problem>> = BTreeMap::new();
        for t in chain.iter().chain(&pruned) {
            if catalogs.contains_key(t) {
                continue;
            }
            let loaded = match self.tier(t) {
                Ok(tier) => Catalog::load(tier.as_ref()).await,
                Err(e) => Err(e),
            };
            catalogs.insert(t.clone(), loaded.map_err(|e| Problem::on_tier(&e, t)));
        }
        let now = Utc::now();
        let mut report = PruneReport {
            dry_run: options.dry_run,
            tiers: Vec::new(),
        };
        // Base backups kept anywhere: the WAL they need stays on every WAL tier.
        let mut kept_bases: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
        // Whether some tier could not be decided for a component (no WAL pruning then).
        let mut undecided: BTreeSet<String> = BTreeSet::new();

        for t in &pruned {
            let mut out = TierPrune {
                tier: t.clone(),
                backups: Vec::new(),
                wal: BTreeMap::new(),
                orphans: Vec::new(),
                blobs: BTreeMap::new(),
                swept: 0,
                problems: Vec::new(),
            };
            if let Some(p) = locked_out.remove(t) {
                out.problems.push(p);
                undecided.extend(names.iter().cloned());
                report.tiers.push(out);
                continue;
            }
            if let Err(p) = &catalogs[t] {
                out.problems.push(p.clone());
                undecided.extend(names.iter().cloned());
                report.tiers.push(out);
                continue;
            }
            let repo = match self.tier(t) {
                Ok(tier) => zdr_storage::Repository::with_sweep_grace(
                    tier,
                    pipeline.clone(),
                    self.sweep_grace(),
                ),
                Err(e) => {
                    out.problems.push(Problem::on_tier(&e, t));
                    report.tiers.push(out);
                    continue;
                }
            };
            let later: Vec<&String> = chain.iter().skip_while(|c| *c != t).skip(1).collect();
            for name in &names {
                let comp = Component::new(name.clone())?;
                // Never while a backup or a replication of the component works on this
                // tier: the prune waits for it.
                let lock = if options.dry_run {
                    None
                } else {
                    match zdr_storage::TierLock::take(
                        repo.tier().clone(),
                        &crate::stack::component_lock(name),
                        "prune",
                        &policy,
                        progress,
                    )
                    .await
                    {
                        Ok(l) => Some(l),
                        Err(e) => {
                            out.problems.push(Problem {
                                component: Some(name.clone()),
                                ..Problem::on_tier(&e, t)
                            });
                            undecided.insert(name.clone());
                            continue;
                        }
                    }
                };
                // A backup that landed since the catalog was read (the one this prune
                // waited for) counts: the catalog is read again.
                if lock.is_some() {
                    match landed_since(repo.tier().as_ref(), &catalogs[t], &comp).await {
                        Ok(false) => {}
                        Ok(true) => {
                            let fresh = Catalog::load(repo.tier().as_ref())
                                .await
                                .map_err(|e| Problem::on_tier(&e, t));
                            catalogs.insert(t.clone(), fresh);
                        }
                        Err(e) => {
                            catalogs.insert(t.clone(), Err(Problem::on_tier(&e, t)));
                        }
                    }
                }
                let catalog = match &catalogs[t] {
                    Ok(c) => c,
                    Err(p) => {
                        out.problems.push(Problem {
                            component: Some(name.clone()),
                            ..p.clone()
                        });
                        undecided.insert(name.clone());
                        release(lock, name, t, progress).await;
                        continue;
                    }
                };
                // Every key a manifest of the component names (for the orphan sweep).
                let mut named: BTreeSet<String> = BTreeSet::new();
                for m in catalog.list(Some(&comp)) {
                    for a in &m.artifacts {
                        named.insert(layout::sidecar_key(&a.key));
                        named.insert(a.key.clone());
                    }
                }
                let window = config
                    .wal_window(name)
                    .map(|w| now - chrono::Duration::from_std(w).unwrap_or(chrono::Duration::MAX));
                let rules = config.retention_for(name, t);
                let mut kinds: Vec<BackupKind> = Vec::new();
                for m in catalog.list(Some(&comp)) {
                    if !kinds.contains(&m.kind) {
                        kinds.push(m.kind);
                    }
                }
                kinds.sort_by_key(|k| kind_name(*k));
                for kind in kinds {
                    let backups = group(catalog, &comp, kind);
                    let times: Vec<DateTime<Utc>> = backups.iter().map(|m| m.started_at).collect();
                    let mut reasons = rules.apply(&times);
                    if let Some(r) = reasons.first_mut() {
                        r.push(format!("newest {} backup", kind_name(kind)));
                    }
                    if kind == BackupKind::Physical
                        && let Some(cut) = window
                    {
                        let mut before_seen = false;
                        for (i, m) in backups.iter().enumerate() {
                            if m.started_at >= cut {
                                reasons[i].push("inside the point-in-time window".into());
                            } else if !before_seen {
                                before_seen = true;
                                reasons[i].push(
                                    "the base backup the point-in-time window starts from".into(),
                                );
                            }
                        }
                    }
                    for (i, m) in backups.iter().enumerate() {
                        if !reasons[i].is_empty() {
                            continue;
                        }
                        for r in &later {
                            match &catalogs[*r] {
                                Err(_) => reasons[i].push(format!(
                                    "tier {r} cannot be read to tell whether it holds this backup"
                                )),
                                Ok(rc) => {
                                    if rc.get(&m.id).is_none() {
                                        let theirs = group(rc, &comp, kind);
                                        let rr = config.retention_for(name, r);
                                        if would_keep(&rr, &theirs, m) {
                                            reasons[i].push(format!(
                                                "not yet replicated to tier {r}, which keeps it"
                                            ));
                                        }
                                    }
                                }
                            }
                        }
                    }
                    // The newest backup that verifies, and everything newer, is kept; only
                    // read back when something would go.
                    if reasons.iter().any(Vec::is_empty) {
                        let mut verified = false;
                        for (i, m) in backups.iter().enumerate() {
                            match repo.verify(m, false, progress).await {
                                Ok(()) => {
                                    reasons[i].push(format!(
                                        "newest {} backup that verifies",
                                        kind_name(kind)
                                    ));
                                    verified = true;
                                    break;
                                }
                                Err(e) => {
                                    reasons[i].push(format!("fails verification ({e})"));
                                    out.problems.push(Problem {
                                        tier: Some(t.clone()),
                                        component: Some(name.clone()),
                                        backup: Some(m.id.to_string()),
                                        ..Problem::new(&e)
                                    });
                                }
                            }
                        }
                        if !verified {
                            for r in &mut reasons {
                                if r.is_empty() {
                                    r.push(format!(
                                        "no {} backup on this tier verifies",
                                        kind_name(kind)
                                    ));
                                }
                            }
                        }
                    }
                    // The deletions go in chunks, each a batch of manifests and then one of
                    // their files (one request a thousand keys on an object store), a few
                    // chunks at a time.
                    let mut deleted: BTreeMap<usize, Result<()>> = if options.dry_run {
                        BTreeMap::new()
                    } else {
                        let repo = &repo;
                        let going: Vec<usize> = (0..backups.len())
                            .filter(|i| reasons[*i].is_empty())
                            .collect();
                        let chunks: Vec<Vec<usize>> =
                            going.chunks(DELETE_CHUNK).map(<[usize]>::to_vec).collect();
                        let backups = &backups;
                        futures::stream::iter(chunks.into_iter().map(|chunk| async move {
                            let ms: Vec<&Manifest> = chunk.iter().map(|i| backups[*i]).collect();
                            let result = repo.delete_backups(&ms).await;
                            chunk
                                .into_iter()
                                .map(|i| {
                                    let r = match &result {
                                        Ok(()) => Ok(()),
                                        Err(e) => {
                                            Err(zdr_core::Error::new(e.kind(), e.to_string()))
                                        }
                                    };
                                    (i, r)
                                })
                                .collect::<Vec<_>>()
                        }))
                        .buffer_unordered(DELETE_CONCURRENCY)
                        .flat_map(futures::stream::iter)
                        .collect()
                        .await
                    };
                    for (i, m) in backups.iter().enumerate() {
                        let keep = !reasons[i].is_empty();
                        let action = if keep {
                            if kind == BackupKind::Physical {
                                kept_bases
                                    .entry(name.clone())
                                    .or_default()
                                    .push((*m).clone());
                            }
                            PruneAction::Keep
                        } else if options.dry_run {
                            PruneAction::WouldDelete
                        } else {
                            match deleted.remove(&i).unwrap_or_else(|| {
                                Err(zdr_core::Error::unexpected("the deletion did not run"))
                            }) {
                                Ok(()) => {
                                    progress.info(format!(
                                        "deleted backup {} of {name} from tier {t}",
                                        m.id
                                    ));
                                    PruneAction::Deleted
                                }
                                Err(e) => {
                                    out.problems.push(Problem {
                                        tier: Some(t.clone()),
                                        component: Some(name.clone()),
                                        backup: Some(m.id.to_string()),
                                        ..Problem::new(&e)
                                    });
                                    PruneAction::Failed
                                }
                            }
                        };
                        out.backups.push(PruneItem {
                            component: name.clone(),
                            id: m.id.to_string(),
                            kind,
                            started_at: m.started_at,
                            action,
                            reasons: std::mem::take(&mut reasons[i]),
                        });
                    }
                }
                if let Err(p) = self
                    .prune_orphans(
                        repo.tier().as_ref(),
                        t,
                        catalog,
                        &named,
                        &comp,
                        options,
                        &mut out,
                    )
                    .await
                {
                    out.problems.push(p);
                }
                self.prune_blobs(&repo, t, catalog, &comp, options, &mut out)
                    .await;
                release(lock, name, t, progress).await;
            }
            if !options.dry_run {
                match repo.tier().sweep_temporary(self.sweep_grace()).await {
                    Ok((n, _)) => out.swept = n,
                    Err(e) => out.problems.push(Problem::on_tier(&e, t)),
                }
            }
            report.tiers.push(out);
        }
        // Backups kept on tiers not pruned in this run count for the WAL floor too.
        for t in chain.iter().filter(|c| !pruned.contains(c)) {
            match &catalogs[t] {
                Ok(c) => {
                    for name in &names {
                        let comp = Component::new(name.clone())?;
                        kept_bases
                            .entry(name.clone())
                            .or_default()
                            .extend(group(c, &comp, BackupKind::Physical).into_iter().cloned());
                    }
                }
                Err(_) => undecided.extend(names.iter().cloned()),
            }
        }
        #[cfg(feature = "postgres")]
        self.prune_wal(&names, &kept_bases, &undecided, options, &mut report)
            .await;
        #[cfg(not(feature = "postgres"))]
        let _ = (&kept_bases, &undecided);
        for l in repo_locks {
            if let Err(e) = l.release().await {
                progress.warn(format!("could not remove the repository lock: {e}"));
            }
        }
        Ok(report)
    }

    /// Remove files under the component's prefix that no manifest on the tier names and
    /// that are older than the sweep grace period. Skipped when a manifest of the component
    /// cannot be read (its artifacts would look unreferenced).
    #[allow(clippy::too_many_arguments)]
    async fn prune_orphans(
        &self,
        opened: &dyn zdr_core::StorageTier,
        tier: &str,
        catalog: &Catalog,
        named: &BTreeSet<String>,
        comp: &Component,
        options: &PruneOptions,
        out: &mut TierPrune,
    ) -> std::result::Result<(), Problem> {
        let mine = format!("{}{comp}/", layout::MANIFESTS);
        if catalog.problems().iter().any(|p| p.key.starts_with(&mine)) {
            return Ok(());
        }
        let entries = opened
            .list(&format!("{comp}/"))
            .await
            .map_err(|e| Problem::on_tier(&e, tier))?;
        let grace = self.sweep_grace().max(ORPHAN_GRACE);
        let cutoff =
            Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut orphans: Vec<String> = Vec::new();
        for e in entries {
            if named.contains(&e.key) || !is_artifact_key(&e.key) {
                continue;
            }
            // Unknown age: a file being written right now looks the same; leave it.
            if e.modified.is_none_or(|m| m > cutoff) {
                continue;
            }
            orphans.push(e.key);
        }
        if !options.dry_run {
            opened
                .delete_many(&orphans)
                .await
                .map_err(|err| Problem::on_tier(&err, tier))?;
        }
        out.orphans.extend(orphans);
        Ok(())
    }

    /// Mark and sweep the component's content-addressed blobs: every blob a backup still on
    /// the tier (kept, or whose deletion failed) references stays; the others, older than
    /// the grace period, go. Skipped when a manifest of the component cannot be read.
    async fn prune_blobs(
        &self,
        repo: &zdr_storage::Repository,
        tier: &str,
        catalog: &Catalog,
        comp: &Component,
        options: &PruneOptions,
        out: &mut TierPrune,
    ) {
        let mine = format!("{}{comp}/", layout::MANIFESTS);
        if catalog.problems().iter().any(|p| p.key.starts_with(&mine)) {
            return;
        }
        let gone: BTreeSet<&str> = out
            .backups
            .iter()
            .filter(|b| {
                b.component == comp.as_str()
                    && matches!(b.action, PruneAction::Deleted | PruneAction::WouldDelete)
            })
            .map(|b| b.id.as_str())
            .collect();
        let going: Vec<String> = gone
            .iter()
            .map(|id| format!("{}{comp}/{id}.json", layout::MANIFESTS))
            .collect();
        let kept: Vec<&Manifest> = catalog
            .list(Some(comp))
            .into_iter()
            .filter(|m| !gone.contains(m.id.to_string().as_str()))
            .collect();
        let grace = self.sweep_grace().max(ORPHAN_GRACE);
        match zdr_storage::sweep_blobs(
            repo.tier(),
            &repo.options().keys,
            comp,
            &kept,
            &going,
            grace,
            options.dry_run,
        )
        .await
        {
            Ok(swept) if swept.removed.is_empty() => {}
            Ok(swept) => {
                out.blobs.insert(
                    comp.to_string(),
                    WalPruned {
                        files: swept.removed,
                        bytes: swept.bytes,
                    },
                );
            }
            Err(e) => out.problems.push(Problem {
                component: Some(comp.to_string()),
                ..Problem::on_tier(&e, tier)
            }),
        }
    }

    /// Prune each PostgreSQL component's WAL archive below the oldest kept base backup.
    #[cfg(feature = "postgres")]
    async fn prune_wal(
        &self,
        names: &[String],
        kept_bases: &BTreeMap<String, Vec<Manifest>>,
        undecided: &BTreeSet<String>,
        options: &PruneOptions,
        report: &mut PruneReport,
    ) {
        for name in names {
            if undecided.contains(name)
                || self.component_type(name).ok() != Some(crate::ComponentType::Postgres)
            {
                continue;
            }
            let Some(floor) = kept_bases
                .get(name)
                .and_then(|b| zdr_postgres::basebackup::wal_retention_floor(b))
            else {
                continue;
            };
            let Ok(archive) = self.wal_archive(Some(name)) else {
                continue;
            };
            let wal_tiers = self.wal_tier_names(name);
            for (i, t) in wal_tiers.iter().enumerate() {
                let Some(out) = report.tiers.iter_mut().find(|p| &p.tier == t) else {
                    continue;
                };
                match archive.prune(i, &floor, options.dry_run).await {
                    Ok(w) => {
                        if !w.files.is_empty() {
                            out.wal.insert(
                                name.clone(),
                                WalPruned {
                                    files: w.files,
                                    bytes: w.bytes,
                                },
                            );
                        }
                    }
                    Err(e) => out.problems.push(Problem {
                        component: Some(name.clone()),
                        ..Problem::on_tier(&e, t)
                    }),
                }
            }
        }
    }
}

/// Release a component's lock, warning when it cannot be removed.
async fn release(lock: Option<zdr_storage::TierLock>, name: &str, tier: &str, progress: &Progress) {
    if let Some(l) = lock
        && let Err(e) = l.release().await
    {
        progress.warn(format!(
            "could not remove the lock of {name} on tier {tier}: {e}"
        ));
    }
}

/// Whether a manifest of `comp` is on the tier that `catalog` (read earlier) does not know.
async fn landed_since(
    tier: &dyn zdr_core::StorageTier,
    catalog: &std::result::Result<Catalog, Problem>,
    comp: &Component,
) -> Result<bool> {
    let Ok(catalog) = catalog else {
        return Ok(false);
    };
    let mut known: BTreeSet<String> = catalog
        .list(Some(comp))
        .iter()
        .map(|m| layout::manifest_key(comp, &m.id))
        .collect();
    known.extend(catalog.problems().iter().map(|p| p.key.clone()));
    let entries = tier.list(&format!("{}{comp}/", layout::MANIFESTS)).await?;
    Ok(entries
        .iter()
        .any(|e| e.key.ends_with(".json") && !known.contains(&e.key)))
}

/// Files without a manifest are removed only once they are this old (or older than the sweep
/// grace period, if that is longer): a backup still running has written some artifacts and
/// not yet its manifest.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Whether `key` has the shape of an artifact or its sidecar:
/// `<component>/<schedule>/<name>_<backup-id>.<ext>...`.
fn is_artifact_key(key: &str) -> bool {
    let parts: Vec<&str> = key.split('/').collect();
    let [_, _, file] = parts.as_slice() else {
        return false;
    };
    let stem = file.split('.').next().unwrap_or_default();
    stem.match_indices('_')
        .any(|(i, _)| zdr_core::BackupId::parse(&stem[i + 1..]).is_ok())
}

fn kind_name(kind: BackupKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}").to_lowercase())
}
