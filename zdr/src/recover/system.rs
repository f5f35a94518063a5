//! The runbook's "full system disaster" scenario: every component back from one tier.
//!
//! [`Stack::recover_system`] reads the catalog of the chosen tier (the offsite copy when the
//! host and its local disk are gone), chooses one backup per component (the newest, or the
//! newest finished at or before a time), copies each chosen backup once onto the primary tier
//! — every artifact checked while it is copied, so the restores read local data and nothing is
//! downloaded twice — then brings the data tier back in dependency order (vault, postgres,
//! redis, qdrant, config files): a component in a container through the single-container
//! recovery (container recreated from its recorded spec when it is gone, dependents restarted),
//! any other through its restore, each verified. It ends with a fresh backup of every
//! component (unless told not to) and a report: per component the backup, the moment restored
//! to and its distance from the target time.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use zdr_core::{
    BackupSelector, Component, Error, ErrorKind, Manifest, Progress, RestoreTarget, Result,
};
use zdr_storage::{Repository, RetryPolicy};

use super::{ContainerRecoveryOptions, PlanStep, RecoveryMethod, RestoredRecord, Run, StepRecord};
use crate::adapter::{self, BackupOptions, ComponentType, RestoreOptions};
use crate::config::RunnerConfig;
use crate::stack::{Stack, select_for};

/// Options of [`Stack::recover_system`].
#[derive(Debug, Clone)]
pub struct SystemRecoveryOptions {
    /// The tier to recover from (the offsite copy); its backups are copied to the primary.
    pub from: String,
    /// Recover each component to its newest backup finished at or before this time.
    pub at: Option<DateTime<Utc>>,
    /// Skip the fresh backup of every component at the end.
    pub no_backup: bool,
    /// How long each container and dependent may take to become healthy.
    pub health_timeout: Duration,
    /// Replace containers that run and are healthy too (by default the recovery is refused
    /// before anything is touched when one does: nothing failed there).
    pub force: bool,
}

impl SystemRecoveryOptions {
    /// Recover from tier `from`, to the newest backups.
    #[must_use]
    pub fn from_tier(from: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            at: None,
            no_backup: false,
            health_timeout: Duration::from_secs(120),
            force: false,
        }
    }
}

/// Where a full-system recovery that did not finish is marked on the primary tier:
/// `reports/unfinished-system/<recovery-id>` (JSON: the tier, the target time, the backup
/// chosen per component and the components already restored). The next
/// `zdr recover system` with the same tier and time continues it: the same backups, the
/// components already restored skipped; it is removed when a run completes.
pub const UNFINISHED_SYSTEM_PREFIX: &str = "reports/unfinished-system/";

/// The marker of a full-system recovery under way ([`UNFINISHED_SYSTEM_PREFIX`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnfinishedSystemRecovery {
    /// The recovery's id (the first run's report id).
    pub id: String,
    /// The tier it recovers from.
    pub from: String,
    /// Its target time, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The backup chosen per component.
    pub backups: std::collections::BTreeMap<String, String>,
    /// The components restored and verified so far.
    #[serde(default)]
    pub done: Vec<String>,
}

impl Stack {
    /// The full-system recoveries that did not finish, oldest first, with their marker keys.
    ///
    /// # Errors
    /// The primary tier cannot be listed or a marker cannot be read (named).
    pub async fn unfinished_system_recoveries(
        &self,
    ) -> Result<Vec<(String, UnfinishedSystemRecovery)>> {
        super::read_markers(
            self.tier(&self.config().primary)?.as_ref(),
            UNFINISHED_SYSTEM_PREFIX,
            |e| e.with_hint("remove it if no full-system recovery is under way"),
        )
        .await
    }
}

async fn write_system_marker(
    tier: &dyn zdr_core::StorageTier,
    state: &UnfinishedSystemRecovery,
) -> Result<()> {
    super::write_marker(
        tier,
        &format!("{UNFINISHED_SYSTEM_PREFIX}{}", state.id),
        state,
    )
    .await
}

/// One component as the system recovery brought it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentRecovery {
    /// The component.
    pub component: String,
    /// `postgres`, `redis`, ...
    pub component_type: String,
    /// The backup chosen on the source tier.
    pub backup: String,
    /// The moment it restores to (the backup's end).
    pub restored_to: DateTime<Utc>,
    /// Seconds between the target time and that moment (`None` without a target time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skew_seconds: Option<i64>,
    /// Bytes copied from the source tier (0 when the primary already held it).
    pub fetched_bytes: u64,
    /// What the restore restored and verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoredRecord>,
    /// The container recovery of a component in a container (its report id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_recovery: Option<String>,
    /// PostgreSQL in a container recovered from a base backup and the WAL archive: the WAL
    /// replayed and where replay stops. `None` for a restore of the backup as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<super::PlannedWal>,
    /// Why a PostgreSQL component is not recovered through its WAL archive, when it could
    /// have been asked to (no base backup, a gap, a target outside the archive, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_note: Option<String>,
}

/// What [`Stack::recover_system`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemRecoveryReport {
    /// `system-<time>`.
    pub id: String,
    /// The tier recovered from.
    pub from: String,
    /// The target time, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Seconds from start to end.
    pub rto_seconds: f64,
    /// True when every step was done.
    pub ok: bool,
    /// The failed step's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The steps, in order (`fetch`, `restore-<component>` in dependency order, `backup`).
    pub steps: Vec<StepRecord>,
    /// Per component: backup, moment restored to, skew, verification.
    pub components: Vec<ComponentRecovery>,
    /// The keys the report was stored under on the primary tier.
    pub stored: Vec<String>,
    /// The unfinished recovery this run continued (its id), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<String>,
}

impl SystemRecoveryReport {
    /// The report as a markdown incident report.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut md = format!(
            "# Incident report: full system recovery from {}\n\n- Recovery: `{}`\n- Outcome: **{}**\n{}\n\
             ## Timeline\n\n| Event | Time (UTC) |\n|---|---|\n| Failure detected | _fill in_ |\n\
             | Recovery started | {} |\n| Recovery {} | {} |\n\n\
             Recovery time achieved: **{:.1} s** (runbook objective for a full system: 24 h).\n\n\
             ## Steps\n\n| # | Step | Status | Seconds | Detail |\n|---|---|---|---|---|\n",
            self.from,
            self.id,
            if self.ok { "recovered" } else { "FAILED" },
            self.at
                .map(|t| format!("- Target time: {}\n", ts(&t)))
                .unwrap_or_default(),
            ts(&self.started_at),
            if self.ok { "completed" } else { "stopped" },
            ts(&self.finished_at),
            self.rto_seconds
        );
        if let Some(id) = &self.continues {
            md.push_str(&format!(
                "Continues the unfinished recovery `{id}`: components it restored are not restored again.\n\n"
            ));
        }
        md.push_str(&super::step_rows(&self.steps));
        md.push_str("\n## What was restored\n\n| Component | Backup | Restored to | Skew from target | Verification |\n|---|---|---|---|---|\n");
        for c in &self.components {
            md.push_str(&format!(
                "| {} ({}) | `{}`{} | {} | {} | {} |\n",
                c.component,
                c.component_type,
                c.backup,
                if c.wal.is_some() {
                    " + WAL archive"
                } else {
                    ""
                },
                ts(&c.restored_to),
                c.skew_seconds
                    .map(|s| format!("{s} s"))
                    .unwrap_or_else(|| "-".to_owned()),
                match &c.restored {
                    Some(r) if r.problems.is_empty() =>
                        format!("{} item(s) checked, passed", r.verified),
                    Some(r) => format!("{} problem(s)", r.problems.len()),
                    None => "not restored".to_owned(),
                }
            ));
        }
        if let Some(e) = &self.error {
            md.push_str(&format!(
                "\n## Error\n\n```\n{e}\n```\n\nThe recovery is marked unfinished: once the cause is fixed, the same \
                 `zdr recover system --from {}{}` continues it.\n",
                self.from,
                self.at
                    .map(|t| format!(" --at {}", ts(&t)))
                    .unwrap_or_default()
            ));
        }
        md.push_str(
            "\n## Root cause\n\n_fill in_\n\n## Prevention\n\n_fill in_\n\n## Testing improvements\n\n_fill in_\n",
        );
        md
    }
}

/// What a system recovery will do: the backup chosen per component and the steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemRecoveryPlan {
    /// The tier recovered from.
    pub from: String,
    /// The target time, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
    /// Per component: the backup chosen, the moment it restores to, its skew from the target.
    pub components: Vec<ComponentRecovery>,
    /// The unfinished recovery this one continues (its id and the components it restored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continues: Option<UnfinishedSystemRecovery>,
}

impl SystemRecoveryPlan {
    /// The plan as text.
    #[must_use]
    pub fn to_text(&self) -> String {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let mut out = format!(
            "Recovery plan: full system from tier {}{}\n",
            self.from,
            self.at
                .map(|t| format!(", to {}", ts(&t)))
                .unwrap_or_default()
        );
        for c in &self.components {
            out.push_str(&format!(
                "  {} ({}): {} {}{}, restores to {}{}\n",
                c.component,
                c.component_type,
                if c.wal.is_some() {
                    "base backup"
                } else {
                    "backup"
                },
                c.backup,
                c.wal
                    .as_ref()
                    .map(|w| format!(
                        " + {} WAL segment(s) ({} to {})",
                        w.segments, w.first_segment, w.last_segment
                    ))
                    .unwrap_or_default(),
                ts(&c.restored_to),
                c.skew_seconds
                    .map(|s| format!(" ({s} s before the target)"))
                    .unwrap_or_default()
            ));
            if let Some(n) = &c.method_note {
                out.push_str(&format!("    not through the WAL archive: {n}\n"));
            }
        }
        if let Some(u) = &self.continues {
            out.push_str(&format!(
                "Continues the unfinished recovery {} (started {}){}\n",
                u.id,
                ts(&u.started_at),
                if u.done.is_empty() {
                    String::new()
                } else {
                    format!("; already restored: {}", u.done.join(", "))
                }
            ));
        }
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{:>2}. {:<20} {}\n", i + 1, s.id, s.action));
        }
        out
    }
}

/// How one component comes back, beyond the backup chosen: for PostgreSQL in a container, a
/// base backup and the WAL archive.
#[derive(Default)]
struct Way {
    /// The base backup (moved into the chosen backups once planned).
    base: Option<Manifest>,
    /// The WAL replayed.
    wal: Option<super::PlannedWal>,
    /// Where replay stops.
    restored_to: Option<DateTime<Utc>>,
    /// Why not through the archive.
    note: Option<String>,
}

/// Everything a system recovery needs, found before anything is touched.
struct Planned {
    from: std::sync::Arc<dyn zdr_core::StorageTier>,
    primary_name: String,
    chosen: Vec<(String, ComponentType, Manifest)>,
    steps: Vec<PlanStep>,
    components: Vec<ComponentRecovery>,
    continues: Option<UnfinishedSystemRecovery>,
}

/// The order the data tier comes back in: secrets first (the others may need them), then the
/// databases, the caches, the vector store, and the config files last.
pub(crate) fn rank(ty: ComponentType) -> u8 {
    match ty {
        ComponentType::Vault => 0,
        ComponentType::Postgres => 1,
        ComponentType::Redis => 2,
        ComponentType::Qdrant => 3,
        ComponentType::S3Bucket => 4,
        ComponentType::Files => 5,
        ComponentType::N8n => 6,
    }
}

impl Stack {
    /// What [`Stack::recover_system`] would do, without touching anything: the backup chosen
    /// per component and the steps (`zdr recover system --dry-run`).
    ///
    /// # Errors
    /// As [`Stack::recover_system`] before anything is touched.
    pub async fn plan_system_recovery(
        &self,
        options: &SystemRecoveryOptions,
    ) -> Result<SystemRecoveryPlan> {
        let p = self.prepare_system_recovery(options).await?;
        Ok(SystemRecoveryPlan {
            from: options.from.clone(),
            at: options.at,
            steps: p.steps,
            components: p.components,
            continues: p.continues,
        })
    }

    async fn prepare_system_recovery(&self, options: &SystemRecoveryOptions) -> Result<Planned> {
        let from = self.tier(&options.from)?;
        let primary_name = self.config().primary.clone();
        let source = Repository::new(from.clone(), self.pipeline()?)
            .catalog()
            .await
            .map_err(|e| e.with_context("tier", &options.from))?;

        // One backup per component, chosen before anything is touched.
        let mut names: Vec<(String, ComponentType)> = self
            .config()
            .components
            .keys()
            .map(|n| Ok((n.clone(), self.component_type(n)?)))
            .collect::<Result<_>>()?;
        names.sort_by_key(|(n, ty)| (rank(*ty), n.clone()));
        // A recovery that did not finish is continued with the same choices, or refused.
        // An fs primary that does not exist yet holds no marker, and is not made here.
        let absent = matches!(
            self.config().tier(&primary_name)?,
            zdr_storage::TierConfig::Fs { root } if !root.exists()
        );
        let markers = if absent {
            Vec::new()
        } else {
            self.unfinished_system_recoveries().await?
        };
        let continues = match markers.into_iter().last() {
            Some((key, u)) if u.from != options.from || u.at != options.at => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "the full-system recovery {} (from tier {}{}) did not finish",
                        u.id,
                        u.from,
                        u.at.map(|t| format!(" at {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
                            .unwrap_or_default()
                    ),
                )
                .with_context("marker", &key)
                .with_hint(format!(
                    "run `zdr recover system --from {}{}` again to continue it, or remove {key} to start another",
                    u.from,
                    u.at.map(|t| format!(" --at {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)))
                        .unwrap_or_default()
                )));
            }
            other => other.map(|(_, u)| u),
        };
        let selector = options
            .at
            .map_or(BackupSelector::Latest, BackupSelector::Before);
        let mut chosen: Vec<(String, ComponentType, Manifest)> = Vec::new();
        // Per component: the WAL a postgres container replays, or why it does not.
        let mut ways: Vec<Way> = Vec::new();
        for (name, ty) in &names {
            let comp = Component::new(name)?;
            let marked: Option<zdr_core::BackupId> =
                match continues.as_ref().and_then(|u| u.backups.get(name)) {
                    Some(id) => Some(id.parse().map_err(|_| {
                        Error::integrity(format!(
                            "the unfinished recovery's marker names backup {id:?} of {name}, which is not a backup id"
                        ))
                    })?),
                    None => None,
                };
            let in_container = matches!(
                self.config().runners.get(name),
                Some(RunnerConfig::Docker { .. })
            );
            let selector = marked
                .clone()
                .map_or_else(|| selector.clone(), BackupSelector::Id);
            let logical = select_for(&source, &comp, &selector, |m| {
                adapter::accepts(*ty, &RestoreOptions::default(), m)
            });
            // PostgreSQL in a container: its base backup rolled forward through the WAL
            // archive to the target (or the archive's end), when the archive can.
            #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
            let mut way = Way::default();
            #[cfg(feature = "postgres")]
            if *ty == ComponentType::Postgres && in_container {
                let manifests = source.list(Some(&comp)).into_iter().cloned().collect();
                match self
                    .system_physical(
                        name,
                        &options.from,
                        manifests,
                        options.at,
                        marked.as_ref(),
                        logical.as_ref().ok(),
                    )
                    .await?
                {
                    super::physical::SystemPg::Physical {
                        base,
                        wal,
                        restored_to,
                    } => {
                        way = Way {
                            base: Some(*base),
                            wal: Some(wal),
                            restored_to: Some(restored_to),
                            note: None,
                        };
                    }
                    super::physical::SystemPg::Logical(note) => way.note = note,
                }
            }
            let selected = match way.base.take() {
                Some(base) => Ok(base),
                None => logical.map_err(|e| match &way.note {
                    Some(n) => Error::new(e.kind(), format!("{e}; base backup and WAL: {n}")),
                    None => e,
                }),
            };
            let m = selected.map_err(|e| {
                let when = options
                    .at
                    .map(|t| {
                        format!(
                            " finished at or before {}",
                            t.to_rfc3339_opts(SecondsFormat::Secs, true)
                        )
                    })
                    .unwrap_or_default();
                Error::new(
                    e.kind(),
                    format!(
                        "no usable backup of {name} on tier {}{when}: {e}",
                        options.from
                    ),
                )
                .with_context("component", name)
                .with_context("tier", &options.from)
            })?;
            // A container that runs and is healthy has not failed: refused unless forced.
            let physical = way.wal.is_some();
            let exists = || async {
                match self.docker_container(name).await {
                    Ok(found) => Ok(found.is_some()),
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(e),
                }
            };
            // The half-done work of an unfinished recovery is continued, not refused.
            if !options.force && continues.is_none() && in_container && exists().await? {
                let probe = ContainerRecoveryOptions {
                    backup: BackupSelector::Id(m.id.clone()),
                    method: if physical {
                        RecoveryMethod::Physical
                    } else {
                        RecoveryMethod::Logical
                    },
                    ..ContainerRecoveryOptions::default()
                };
                if let Some(why) = self.plan_container_recovery(name, &probe).await?.refused {
                    return Err(Error::new(ErrorKind::Conflict, why)
                        .with_context("component", name)
                        .with_hint("a full-system recovery replaces every component; pass --force to replace running ones too"));
                }
            }
            chosen.push((name.clone(), *ty, m));
            ways.push(way);
        }

        let mut steps = vec![PlanStep {
            id: "fetch".to_owned(),
            action: format!(
                "copy the {} chosen backup(s) from tier {} to tier {primary_name}, each artifact checked",
                chosen.len(),
                options.from
            ),
            precondition: String::new(),
            verification: String::new(),
            timeout_secs: 6 * 3600,
        }];
        for ((name, ty, m), way) in chosen.iter().zip(&ways) {
            steps.push(PlanStep {
                id: format!("restore-{name}"),
                action: match &way.wal {
                    Some(w) => format!(
                        "{ty} {name}: base backup {} and {} WAL segment(s) to {}, and verify it",
                        m.id, w.segments, w.target
                    ),
                    None => format!("{ty} {name}: backup {} and verify it", m.id),
                },
                precondition: String::new(),
                verification: String::new(),
                timeout_secs: 6 * 3600,
            });
        }
        steps.push(PlanStep {
            id: "backup".to_owned(),
            action: if options.no_backup {
                "no fresh backups (asked not to)".to_owned()
            } else {
                "a fresh backup of every component (schedule post-recovery)".to_owned()
            },
            precondition: String::new(),
            verification: String::new(),
            timeout_secs: 6 * 3600,
        });
        let components: Vec<ComponentRecovery> = chosen
            .iter()
            .zip(ways)
            .map(|((name, ty, m), way)| {
                let restored_to = way.restored_to.unwrap_or(m.finished_at);
                ComponentRecovery {
                    component: name.clone(),
                    component_type: ty.to_string(),
                    backup: m.id.to_string(),
                    restored_to,
                    skew_seconds: options.at.map(|t| (t - restored_to).num_seconds()),
                    fetched_bytes: 0,
                    restored: None,
                    container_recovery: None,
                    wal: way.wal,
                    method_note: way.note,
                }
            })
            .collect();
        Ok(Planned {
            from,
            primary_name,
            chosen,
            steps,
            components,
            continues,
        })
    }

    /// The runbook's full-system scenario: every component back from tier `options.from`
    /// (see the module documentation).
    ///
    /// # Errors
    /// Before anything is touched: an unknown tier, a source catalog that cannot be read, a
    /// component without a usable backup there (or none before the target time), each named.
    /// A step failing later ends the recovery with a report ([`SystemRecoveryReport::ok`] is
    /// false) naming it.
    pub async fn recover_system(
        &self,
        options: &SystemRecoveryOptions,
        progress: &Progress,
    ) -> Result<SystemRecoveryReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        let Planned {
            from,
            primary_name,
            chosen,
            steps,
            mut components,
            continues,
        } = self.prepare_system_recovery(options).await?;
        // Opened (an fs tier's root made) only once every input is known.
        let primary = self.tier(&primary_name)?;
        let stamp = started_at.format("%Y%m%dt%H%M%S%3fz").to_string();
        let id = format!("system-{stamp}");
        let continued = continues.as_ref().map(|u| u.id.clone());
        // Marked before anything is touched: a killed run is continued by the next one.
        let mut marker = continues.unwrap_or_else(|| UnfinishedSystemRecovery {
            id: id.clone(),
            from: options.from.clone(),
            at: options.at,
            started_at,
            backups: chosen
                .iter()
                .map(|(name, _, m)| (name.clone(), m.id.to_string()))
                .collect(),
            done: Vec::new(),
        });
        write_system_marker(primary.as_ref(), &marker).await?;
        let mut run = Run::new(&steps, progress);

        let result: Result<()> = async {
            let mut fetched = vec![0u64; chosen.len()];
            run.step("fetch", async {
                if options.from == primary_name {
                    return Ok("the backups are on the primary tier already".to_owned());
                }
                let mut total = 0u64;
                for (i, (_, _, m)) in chosen.iter().enumerate() {
                    let key = zdr_core::layout::manifest_key(&m.component, &m.id);
                    if primary.stat(&key).await?.is_some() {
                        continue;
                    }
                    let bytes = zdr_storage::replicate_backup(
                        &from,
                        &primary,
                        m,
                        &RetryPolicy::default(),
                        progress,
                    )
                    .await?;
                    if let Some(f) = fetched.get_mut(i) {
                        *f = bytes;
                    }
                    total += bytes;
                }
                Ok(format!(
                    "{} from tier {} to tier {primary_name}",
                    crate::human_bytes(total),
                    options.from
                ))
            })
            .await?;
            for (c, f) in components.iter_mut().zip(&fetched) {
                c.fetched_bytes = *f;
            }
            zdr_core::failpoint("recover-system-after-fetch");

            for (i, (name, _, m)) in chosen.iter().enumerate() {
                if marker.done.contains(name) {
                    run.skip(
                        &format!("restore-{name}"),
                        format!(
                            "restored and verified by the interrupted run of {}",
                            marker.id
                        ),
                    );
                    continue;
                }
                let mut record = None;
                let mut container = None;
                let physical = components.get(i).is_some_and(|c| c.wal.is_some());
                let step = run
                    .step(&format!("restore-{name}"), async {
                        let in_container = matches!(
                            self.config().runners.get(name),
                            Some(RunnerConfig::Docker { .. })
                        );
                        if in_container {
                            // The fetched copy is read first; a damaged one falls back to
                            // the other tiers (the source among them) for the same backup.
                            let opts = ContainerRecoveryOptions {
                                tier: None,
                                // The backup chosen for the whole system: as it is, or a base
                                // backup replayed to the target time (the newest base backup
                                // before it, the fetched one among them) or to the archive's end.
                                backup: match options.at {
                                    Some(t) if physical => BackupSelector::Before(t),
                                    _ => BackupSelector::Id(m.id.clone()),
                                },
                                no_backup: true,
                                // Checked for the whole system before anything was touched.
                                force: true,
                                health_timeout: options.health_timeout,
                                method: if physical {
                                    RecoveryMethod::Physical
                                } else {
                                    RecoveryMethod::Logical
                                },
                                ..ContainerRecoveryOptions::default()
                            };
                            let r = self.recover_container(name, &opts, progress).await?;
                            container = Some(r.id.clone());
                            record = r.restored.clone();
                            if !r.ok {
                                return Err(Error::new(
                                    ErrorKind::Source,
                                    format!(
                                        "the container recovery {} of {name} failed: {}",
                                        r.id,
                                        r.error.unwrap_or_default()
                                    ),
                                ));
                            }
                            return Ok(format!(
                                "container recovered ({}), backup {} restored and verified",
                                r.id, m.id
                            ));
                        }
                        let restore = RestoreOptions {
                            tier: None,
                            backup: BackupSelector::Id(m.id.clone()),
                            target: RestoreTarget {
                                overwrite: true,
                                ..RestoreTarget::default()
                            },
                            ..RestoreOptions::default()
                        };
                        let r = self.restore(name, &restore, progress).await?;
                        let (rec, outcome) = RestoredRecord::checked(&r);
                        record = Some(rec);
                        outcome
                    })
                    .await;
                if let Some(c) = components.get_mut(i) {
                    // Replayed to the archive's end: the last commit it replayed.
                    if options.at.is_none()
                        && let Some(to) = record.as_ref().and_then(|r| r.recovered_to)
                        && c.wal.is_some()
                    {
                        c.restored_to = to;
                    }
                    c.restored = record;
                    c.container_recovery = container;
                }
                step?;
                marker.done.push(name.clone());
                write_system_marker(primary.as_ref(), &marker).await?;
                zdr_core::failpoint(&format!("recover-system-after-{name}"));
            }

            run.step("backup", async {
                if options.no_backup {
                    return Ok("skipped (asked not to)".to_owned());
                }
                let mut made = Vec::new();
                for (name, _, _) in &chosen {
                    let b = self
                        .backup(
                            name,
                            &BackupOptions {
                                schedule: Some("post-recovery".to_owned()),
                                ..BackupOptions::default()
                            },
                            progress,
                        )
                        .await?;
                    made.push(format!("{name} {}", b.backup.id));
                }
                Ok(made.join(", "))
            })
            .await
        }
        .await;

        if result.is_ok() {
            let key = format!("{UNFINISHED_SYSTEM_PREFIX}{}", marker.id);
            if let Err(e) = primary.delete(&key).await {
                progress.warn(format!(
                    "the recovery is complete but its marker {key} could not be removed: {e}"
                ));
            }
        }
        let mut report = SystemRecoveryReport {
            id,
            from: options.from.clone(),
            at: options.at,
            started_at,
            finished_at: Utc::now(),
            rto_seconds: started.elapsed().as_secs_f64(),
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            steps: run.finish(),
            components,
            stored: Vec::new(),
            continues: continued,
        };
        self.store_report(&mut report, progress).await;
        Ok(report)
    }
}

/// What [`Stack::drill_system`] found: one drill per component, in recovery order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemDrillReport {
    /// `drill-system-<time>`.
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Seconds from start to end.
    pub rto_seconds: f64,
    /// True when every drill that could run passed.
    pub ok: bool,
    /// One step per component (`drill-<component>`); components without a scratch target are
    /// `not-run`, with the reason.
    pub steps: Vec<StepRecord>,
    /// The keys it was stored under on the primary tier.
    pub stored: Vec<String>,
}

impl SystemDrillReport {
    /// The report of a drill of `kind` (`system`, `project`) that started at `started_at`
    /// (`started` on the monotonic clock) and ran the steps of `run`.
    pub(crate) fn finished(
        kind: &str,
        started_at: DateTime<Utc>,
        started: Instant,
        ok: bool,
        run: super::Run<'_>,
    ) -> Self {
        Self {
            id: format!("drill-{kind}-{}", started_at.format("%Y%m%dt%H%M%S%3fz")),
            started_at,
            rto_seconds: started.elapsed().as_secs_f64(),
            ok,
            steps: run.finish(),
            stored: Vec::new(),
        }
    }

    /// The report as markdown.
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let what = if self.id.starts_with("drill-project-") {
            "the whole stack on a private network"
        } else {
            "full system"
        };
        let mut md = format!(
            "# Drill report: {what}\n\n- Drill: `{}`\n- Outcome: **{}**\n- Started: {}\n- Total: {:.1} s\n\n\
             | # | Step | Status | Seconds | Detail |\n|---|---|---|---|---|\n",
            self.id,
            if self.ok { "passed" } else { "FAILED" },
            self.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            self.rto_seconds
        );
        md.push_str(&super::step_rows(&self.steps));
        md
    }
}

impl Stack {
    /// The full-system scenario as a drill, live data never touched: every component, in
    /// recovery order, restored into a scratch target and verified — a throwaway copy of its
    /// container ([`Stack::drill_container`]) for a component in a container, a scratch
    /// directory, database or server otherwise ([`Stack::drill`]). A failing drill does not
    /// stop the others; a component without a scratch target (vault) is listed as not run. The report goes to `reports/drill-system-<time>.json` and `.md`.
    ///
    /// # Errors
    /// Only when the component list cannot be read; each drill's failure is in the report.
    pub async fn drill_system(
        &self,
        options: &ContainerRecoveryOptions,
        progress: &Progress,
    ) -> Result<SystemDrillReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        let mut names: Vec<(String, ComponentType)> = self
            .config()
            .components
            .keys()
            .map(|n| Ok((n.clone(), self.component_type(n)?)))
            .collect::<Result<_>>()?;
        names.sort_by_key(|(n, ty)| (rank(*ty), n.clone()));
        let steps: Vec<PlanStep> = names
            .iter()
            .map(|(n, ty)| PlanStep {
                id: format!("drill-{n}"),
                action: format!("{ty} {n}: restore into a scratch target and verify"),
                precondition: String::new(),
                verification: String::new(),
                timeout_secs: 6 * 3600,
            })
            .collect();
        let mut run = Run::new(&steps, progress);
        let mut ok = true;
        for (name, ty) in &names {
            let in_container = matches!(
                self.config().runners.get(name),
                Some(RunnerConfig::Docker { .. })
            );
            if !in_container && *ty == ComponentType::Vault {
                run.skip(
                    &format!("drill-{name}"),
                    format!("{ty} has no scratch target: not drilled"),
                );
                continue;
            }
            let result = run
                .step(&format!("drill-{name}"), async {
                    if in_container {
                        let r = self.drill_container(name, options, progress).await?;
                        if r.ok {
                            Ok(format!(
                                "throwaway copy restored and verified ({:.1} s), removed",
                                r.rto_seconds
                            ))
                        } else {
                            Err(Error::new(
                                ErrorKind::Integrity,
                                format!(
                                    "the container drill {} failed: {}",
                                    r.id,
                                    r.error.unwrap_or_default()
                                ),
                            ))
                        }
                    } else {
                        let r = self.drill(name, progress).await?;
                        if r.is_ok() {
                            Ok(format!(
                                "backup {} from tier {}: {} item(s) restored into a scratch target and verified ({:.1} s)",
                                r.backup.id, r.tier, r.items, r.rto_seconds
                            ))
                        } else {
                            Err(Error::new(
                                ErrorKind::Integrity,
                                format!(
                                    "verification failed: {} problem(s)",
                                    r.verify.problems.len()
                                ),
                            ))
                        }
                    }
                })
                .await;
            ok &= result.is_ok();
        }
        let mut report = SystemDrillReport::finished("system", started_at, started, ok, run);
        self.store_report(&mut report, progress).await;
        Ok(report)
    }
}

impl super::StoredReport for SystemRecoveryReport {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_stored(&mut self, keys: Vec<String>) {
        self.stored = keys;
    }
    fn markdown(&self) -> Option<String> {
        Some(self.to_markdown())
    }
}

impl super::StoredReport for SystemDrillReport {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_stored(&mut self, keys: Vec<String>) {
        self.stored = keys;
    }
    fn markdown(&self) -> Option<String> {
        Some(self.to_markdown())
    }
}
