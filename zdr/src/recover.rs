//! Recovery plans as data, and the runbook's "single container failure" scenario as one call.
//!
//! [`Stack::plan_container_recovery`] looks at the engine, the config and the catalogs and
//! returns a [`RecoveryPlan`]: ordered steps, each with its precondition, action,
//! verification and timeout. It changes nothing (`zdr recover container --dry-run` prints it).
//! [`Stack::recover_container`] runs the same plan, records each step (start, duration,
//! outcome) and ends with a [`RecoveryReport`] — also when a step fails: the report then names
//! the step, what was already done, and what was kept aside. The report is stored on the
//! primary tier as JSON and as a markdown incident report in the runbook's template:
//!
//! ```text
//! reports/<recovery-id>.json
//! reports/<recovery-id>.md
//! ```
//!
//! Nothing is touched before every input is known: the container's spec (from the live
//! container, else from the newest backup that recorded it), the values of its secret
//! environment variables, the backup to restore and the tier holding it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use zdr_core::{
    ArtifactSink, BackupRequest, BackupSelector, BackupSource, CommandRunner, CommandSpec,
    Component, Error, ErrorKind, Manifest, Progress, Result, Secret, SourceFacts,
};
use zdr_docker::{ContainerSpec, Docker, MountKind, RecreateOptions, VolumeChoice};

use crate::adapter::{self, BackupOptions, ComponentType, RestoreOptions};
use crate::config::{ComponentConfig, RunnerConfig};
use crate::stack::{Stack, select_for};

#[cfg(feature = "postgres")]
mod physical;
mod project;
mod system;
pub use system::{
    ComponentRecovery, SystemDrillReport, SystemRecoveryOptions, SystemRecoveryPlan,
    SystemRecoveryReport, UNFINISHED_SYSTEM_PREFIX, UnfinishedSystemRecovery,
};

/// The key of the container spec in a backup manifest's facts.
pub const CONTAINER_FACT: &str = "container";

/// Where recovery reports are stored on the primary tier.
pub const REPORTS_PREFIX: &str = "reports/";

/// The label on a container made by a recovery (value: the recovery's id): a rerun of that
/// recovery, while it is unfinished, continues on it instead of refusing a healthy container.
pub const RECOVERY_LABEL: &str = "io.zdr.recovery";

/// Where a running (or interrupted) recovery marks itself:
/// `reports/unfinished/<component>/<recovery-id>`.
pub const UNFINISHED_PREFIX: &str = "reports/unfinished/";

/// What an unfinished recovery's marker holds: enough for the next run to continue it — the
/// container's spec (secrets by name only) and what was kept aside so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnfinishedRecovery {
    /// The recovery's id.
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// The container's spec as that run found it.
    pub spec: ContainerSpec,
    /// What it kept aside before it stopped.
    #[serde(default)]
    pub kept_aside: Vec<KeptAside>,
}

/// `sh -c script` as `user` inside the running `container`; a non-zero exit is an error with
/// its output.
pub(crate) async fn exec_script(
    docker: &Docker,
    container: &str,
    user: &str,
    script: &str,
) -> Result<()> {
    let runner = docker.exec_runner(container.to_owned()).with_user(user);
    let mut spec = CommandSpec::new("sh").args(["-c", script]);
    spec.stdout = true;
    let mut run = runner.spawn(&spec).await?;
    let mut err = String::new();
    let mut out = String::new();
    let (mut stderr, mut stdout) = (run.stderr.take(), run.stdout.take());
    let read_err = async {
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut err).await;
        }
    };
    let read_out = async {
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut out).await;
        }
    };
    tokio::join!(read_err, read_out);
    let exit = run.handle.wait().await?;
    if exit.success() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!(
                "a script on the files of container {container} failed with {exit}: {}",
                format!("{} {}", out.trim(), err.trim()).trim()
            ),
        )
        .with_context("container", container))
    }
}

/// How [`Stack::recover_container`] brings a PostgreSQL container's data back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMethod {
    /// A base backup and the WAL archive when they can reach the chosen moment (the end of
    /// the archive, or the `Before` time) and the archive is not older than the newest
    /// logical backup; the logical backup otherwise. Other component types: their backup.
    #[default]
    Auto,
    /// The logical backup, as for every other component type.
    Logical,
    /// A base backup and the WAL archive; an error when they cannot be used.
    Physical,
}

impl FromStr for RecoveryMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "logical" => Ok(Self::Logical),
            "physical" => Ok(Self::Physical),
            other => Err(Error::bad_input(format!(
                "unknown recovery method {other:?}: auto, logical or physical"
            ))),
        }
    }
}

/// The WAL replay of a physical recovery plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedWal {
    /// Where replay stops: `the end of the archive` or a time.
    pub target: String,
    /// The timelines followed, oldest first.
    pub timelines: Vec<u32>,
    /// The first segment replayed (the base backup's start).
    pub first_segment: String,
    /// The last segment of the unbroken chain in the archive.
    pub last_segment: String,
    /// Segments staged for the replay.
    pub segments: usize,
    /// When the newest archived file was stored, where the tier tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_until: Option<DateTime<Utc>>,
    /// How long the replay may take (`wal.recovery_timeout_secs`).
    #[serde(default)]
    pub recovery_timeout_secs: u64,
}

/// The container spec a backup recorded (facts key [`CONTAINER_FACT`]), if any.
#[must_use]
pub fn container_spec_of(manifest: &Manifest) -> Option<ContainerSpec> {
    manifest
        .facts
        .get(CONTAINER_FACT)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A backup source that adds the spec of the component's container to the facts.
pub(crate) struct WithContainerSpec<'a> {
    inner: &'a dyn BackupSource,
    spec: serde_json::Value,
}

impl<'a> WithContainerSpec<'a> {
    /// Wraps `inner`; `spec` is recorded as it is (secret values were never captured).
    pub(crate) fn new(inner: &'a dyn BackupSource, spec: &ContainerSpec) -> Result<Self> {
        let spec = serde_json::to_value(spec)
            .map_err(|e| Error::unexpected("cannot record the container spec").with_source(e))?;
        Ok(Self { inner, spec })
    }
}

#[async_trait]
impl BackupSource for WithContainerSpec<'_> {
    fn component(&self) -> &Component {
        self.inner.component()
    }

    async fn backup(
        &self,
        req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let mut facts = self.inner.backup(req, sink, progress).await?;
        match &mut facts.facts {
            serde_json::Value::Object(map) => {
                map.insert(CONTAINER_FACT.to_owned(), self.spec.clone());
            }
            serde_json::Value::Null => {
                facts.facts = serde_json::json!({ CONTAINER_FACT: self.spec.clone() });
            }
            // A source whose facts are not an object keeps them as they are.
            _ => {}
        }
        Ok(facts)
    }
}

/// Options of [`Stack::recover_container`].
#[derive(Debug, Clone)]
pub struct ContainerRecoveryOptions {
    /// Remove the failed container's volumes instead of keeping them aside (copied to
    /// `<volume>-failed-<time>`) for forensics.
    pub discard_volume: bool,
    /// Skip the fresh backup of what was restored (the runbook's post-recovery step 1).
    pub no_backup: bool,
    /// How long the recreated container and each dependent may take to become healthy.
    pub health_timeout: Duration,
    /// Read the backup from this tier only (default: the primary, then each replica).
    pub tier: Option<String>,
    /// Recover a container that runs and is healthy (by default that is refused: nothing
    /// failed, and its data would be replaced by the backup's).
    pub force: bool,
    /// Which backup: the newest usable one (default), or a selector (`Before(time)`, an id).
    /// A physical recovery recovers to that time exactly, or to the end of the archive.
    pub backup: BackupSelector,
    /// PostgreSQL: a base backup and the WAL archive, or the logical backup
    /// ([`RecoveryMethod::Auto`] chooses).
    pub method: RecoveryMethod,
}

impl Default for ContainerRecoveryOptions {
    fn default() -> Self {
        Self {
            backup: BackupSelector::Latest,
            method: RecoveryMethod::Auto,
            discard_volume: false,
            no_backup: false,
            health_timeout: Duration::from_secs(120),
            tier: None,
            force: false,
        }
    }
}

/// One step of a recovery plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanStep {
    /// Short name (`remove-failed`, `restore`, ...).
    pub id: String,
    /// What the step does.
    pub action: String,
    /// What must hold before it runs.
    pub precondition: String,
    /// How its success is checked.
    pub verification: String,
    /// The most it may take.
    pub timeout_secs: u64,
}

/// The backup a plan restores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedBackup {
    /// The backup's id.
    pub id: String,
    /// The tier it is read from first.
    pub tier: String,
    /// `logical`, `physical`, ...
    pub kind: String,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// A recovery plan: what will be done, in order, and with what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryPlan {
    /// `container`.
    pub scenario: String,
    /// The component recovered.
    pub component: String,
    /// The container's name.
    pub container: String,
    /// Whether the container exists now (`false`: it is recreated from the spec a backup
    /// recorded).
    pub container_exists: bool,
    /// The image it is recreated from.
    pub image: String,
    /// Where the spec comes from: `live container` or `backup <id>`.
    pub spec_from: String,
    /// The container's named volumes (replaced by fresh ones).
    pub volumes: Vec<String>,
    /// The backup restored.
    pub backup: PlannedBackup,
    /// The containers restarted afterwards.
    pub dependents: Vec<String>,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
    /// Why running the plan would be refused now (a container that runs and is healthy,
    /// without `force`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Recoveries of this component that did not finish (markers on the primary tier): this
    /// run continues their work.
    #[serde(default)]
    pub unfinished: Vec<String>,
    /// A physical recovery (PostgreSQL): the WAL replayed after the base backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<PlannedWal>,
    /// Why the logical backup was chosen when a base backup and the archive could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_note: Option<String>,
}

impl RecoveryPlan {
    /// The plan as text, one numbered step per line group.
    #[must_use]
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "Recovery plan: {} {} (container {}, image {}; spec from {})\n\
             Backup: {} ({}, finished {}) from tier {}\n",
            self.scenario,
            self.component,
            self.container,
            self.image,
            self.spec_from,
            self.backup.id,
            self.backup.kind,
            self.backup
                .finished_at
                .to_rfc3339_opts(SecondsFormat::Secs, true),
            self.backup.tier,
        );
        if let Some(w) = &self.wal {
            out.push_str(&format!(
                "WAL: {} segment(s) {} .. {} on timeline(s) {:?}, replayed to {}\n",
                w.segments, w.first_segment, w.last_segment, w.timelines, w.target
            ));
        }
        if let Some(n) = &self.method_note {
            out.push_str(&format!("Logical backup: {n}\n"));
        }
        if let Some(r) = &self.refused {
            out.push_str(&format!("Refused now: {r}\n"));
        }
        for u in &self.unfinished {
            out.push_str(&format!("Continues the unfinished recovery {u}\n"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!(
                "{:>2}. {:<15} {}\n    precondition: {}\n    verification: {}\n    timeout: {} s\n",
                i + 1,
                s.id,
                s.action,
                s.precondition,
                s.verification,
                s.timeout_secs
            ));
        }
        out
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Done and verified.
    Done,
    /// Failed: the recovery stopped here.
    Failed,
    /// Not run (an earlier step failed, or it was not needed).
    NotRun,
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The plan step's id.
    pub id: String,
    /// What it does.
    pub action: String,
    /// How it ended.
    pub status: StepStatus,
    /// When it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// How long it took.
    pub seconds: f64,
    /// What it did, or why it failed.
    pub detail: String,
}

/// Something a recovery kept instead of destroying it (a rollback brings it back).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptAside {
    /// `volume`.
    pub what: String,
    /// Its original name.
    pub original: String,
    /// The name it is kept under.
    pub kept_as: String,
}

/// A dependent container restarted after the recovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DependentRecord {
    /// The container.
    pub name: String,
    /// Its status after the restart (`running`, health when it has a check).
    pub status: String,
}

/// What a restore step restored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoredRecord {
    /// The backup's id.
    pub backup: String,
    /// The tier it was read from.
    pub tier: String,
    /// `logical`, ...
    pub kind: String,
    /// When the backup finished: the moment the data was restored to.
    pub finished_at: DateTime<Utc>,
    /// Items restored (tables, keys, files).
    pub items: u64,
    /// Items verified against the manifest's facts.
    pub verified: u64,
    /// Verification problems (empty when it passed).
    pub problems: Vec<String>,
    /// A physical recovery: the last commit replayed, the moment the data was recovered to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_to: Option<DateTime<Utc>>,
    /// A physical recovery: where replay stopped (`the end of the archive`, a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A physical recovery: the WAL location replay reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// A physical recovery: the timeline the server runs on after its promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

impl RestoredRecord {
    /// The record of a restore.
    #[must_use]
    pub fn of(r: &crate::RestoreReport) -> Self {
        Self {
            backup: r.backup.id.to_string(),
            tier: r.tier.clone(),
            kind: format!("{:?}", r.backup.kind).to_lowercase(),
            finished_at: r.backup.finished_at,
            items: r.outcome.items,
            verified: r.verify.checked,
            problems: r.verify.problems.iter().map(ToString::to_string).collect(),
            recovered_to: None,
            target: None,
            replay_lsn: None,
            timeline: None,
        }
    }
}

impl RestoredRecord {
    /// The record of a restore and the step's outcome: its detail, or an integrity error
    /// when the verification failed.
    pub(crate) fn checked(r: &crate::RestoreReport) -> (Self, Result<String>) {
        let record = Self::of(r);
        let detail = format!(
            "backup {} from tier {}: {} item(s), {} verified",
            record.backup, record.tier, record.items, record.verified
        );
        let outcome = if r.verify.is_ok() {
            Ok(detail)
        } else {
            Err(Error::new(
                ErrorKind::Integrity,
                format!("{detail}; verification failed"),
            ))
        };
        (record, outcome)
    }
}

/// The markdown table rows of recorded steps (`| # | Step | Status | Seconds | Detail |`).
pub(crate) fn step_rows(steps: &[StepRecord]) -> String {
    let mut rows = String::new();
    for (i, s) in steps.iter().enumerate() {
        let status = match s.status {
            StepStatus::Done => "done",
            StepStatus::Failed => "FAILED",
            StepStatus::NotRun => "not run",
        };
        rows.push_str(&format!(
            "| {} | {} | {status} | {:.1} | {} |\n",
            i + 1,
            s.id,
            s.seconds,
            s.detail.replace('|', "\\|").replace('\n', " ")
        ));
    }
    rows
}

/// What a recovery did, step by step: stored on the primary tier as JSON and markdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// The recovery's id (`recovery-<component>-<time>`).
    pub id: String,
    /// `container`.
    pub scenario: String,
    /// The component recovered.
    pub component: String,
    /// The container.
    pub container: String,
    /// When the recovery started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Seconds from start to the last step (the recovery time achieved).
    pub rto_seconds: f64,
    /// True when every step was done.
    pub ok: bool,
    /// The failed step's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every planned step, with its outcome.
    pub steps: Vec<StepRecord>,
    /// What was restored, from which backup and tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoredRecord>,
    /// What was kept aside.
    pub kept_aside: Vec<KeptAside>,
    /// Dependents restarted.
    pub dependents: Vec<DependentRecord>,
    /// The backup taken after the recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_backup: Option<String>,
    /// The keys the report was stored under on the primary tier (empty if storing failed).
    pub stored: Vec<String>,
}

impl RecoveryReport {
    /// The failed step, if any.
    #[must_use]
    pub fn failed_step(&self) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }

    /// The report as a markdown incident report (the runbook's template: timeline, recovery
    /// time per step and in total, what was restored, verification, and the sections an
    /// operator fills in).
    #[must_use]
    pub fn to_markdown(&self) -> String {
        let ts = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let title = if self.scenario.ends_with("drill") {
            "Drill report"
        } else {
            "Incident report"
        };
        let mut md = format!(
            "# {title}: {} recovery of {}\n\n\
             - Recovery: `{}`\n- Container: `{}`\n- Outcome: **{}**\n\n\
             ## Timeline\n\n\
             | Event | Time (UTC) |\n|---|---|\n\
             | Failure detected | _fill in_ |\n\
             | Recovery started | {} |\n\
             | Recovery {} | {} |\n\n\
             Recovery time achieved: **{:.1} s** (runbook objective for a single container: 30 min).\n\n\
             ## Steps\n\n| # | Step | Status | Seconds | Detail |\n|---|---|---|---|---|\n",
            self.scenario,
            self.component,
            self.id,
            self.container,
            if self.ok { "recovered" } else { "FAILED" },
            ts(&self.started_at),
            if self.ok { "completed" } else { "stopped" },
            ts(&self.finished_at),
            self.rto_seconds,
        );
        md.push_str(&step_rows(&self.steps));
        md.push_str("\n## What was restored\n\n");
        match &self.restored {
            Some(r) => md.push_str(&format!(
                "- Backup `{}` ({}, finished {}) from tier `{}`: {} items\n\
                 - Verification: {} item(s) checked against the manifest's facts, {}\n",
                r.backup,
                r.kind,
                ts(&r.finished_at),
                r.tier,
                r.items,
                r.verified,
                if r.problems.is_empty() {
                    "passed".to_owned()
                } else {
                    format!("{} problem(s): {}", r.problems.len(), r.problems.join("; "))
                }
            )),
            None => md.push_str("- Nothing was restored.\n"),
        }
        if let Some(r) = &self.restored
            && let Some(target) = &r.target
        {
            md.push_str(&format!(
                "- WAL replayed to {target}: {} segment(s), up to {}; the last commit replayed \
                 is of {}; timeline {} since the promotion\n",
                r.items,
                r.replay_lsn.as_deref().unwrap_or("?"),
                r.recovered_to.map_or_else(|| "none".to_owned(), |t| ts(&t)),
                r.timeline.unwrap_or(0)
            ));
        }
        if let Some(b) = &self.post_backup {
            md.push_str(&format!("- Fresh backup after the recovery: `{b}`\n"));
        }
        if !self.kept_aside.is_empty() {
            md.push_str("\n## Kept aside (forensics, rollback)\n\n");
            for k in &self.kept_aside {
                md.push_str(&format!(
                    "- {} `{}` kept as `{}`\n",
                    k.what, k.original, k.kept_as
                ));
            }
        }
        if !self.dependents.is_empty() {
            md.push_str("\n## Dependent services\n\n");
            for d in &self.dependents {
                md.push_str(&format!("- `{}`: {}\n", d.name, d.status));
            }
        }
        if let Some(e) = &self.error {
            md.push_str(&format!("\n## Error\n\n```\n{e}\n```\n"));
        }
        md.push_str(
            "\n## Root cause\n\n_fill in_\n\n## Prevention\n\n_fill in_\n\n## Testing improvements\n\n_fill in_\n",
        );
        md
    }
}

/// The spec of a drill's throwaway copy of `spec` and the fresh volumes it gets: another name,
/// no compose labels (compose never takes it for the service), the drill label, ports on free
/// host ports, no network aliases (it never answers for the service name), no restart policy;
/// every volume, and every host directory the container may write to (a data directory
/// bind-mounted from the host), becomes a fresh volume — the copy shares nothing writable with
/// the live container. Read-only binds (config files) stay.
fn drill_copy(
    spec: &ContainerSpec,
    component: &str,
    stamp: &str,
) -> Result<(ContainerSpec, Vec<String>)> {
    let copy_name = format!("{}-zdr-drill-{stamp}", spec.name);
    let mut copy = spec.clone();
    copy.name.clone_from(&copy_name);
    copy.labels
        .retain(|k, _| !k.starts_with("com.docker.compose.") && k != RECOVERY_LABEL);
    copy.labels
        .insert(DRILL_LABEL.to_owned(), component.to_owned());
    copy.labels
        .insert(DRILL_OWNER_LABEL.to_owned(), std::process::id().to_string());
    for p in &mut copy.ports {
        // A free port of its own, fixed: a port the engine picks changes when the copy is
        // restarted (a redis restore restarts it).
        p.host_port = if p.container_port.ends_with("/tcp") {
            crate::free_port()?.to_string()
        } else {
            String::new()
        };
    }
    for n in &mut copy.networks {
        n.aliases.clear();
    }
    copy.restart_policy = None;
    let mut volumes = Vec::new();
    for (i, m) in copy.mounts.iter_mut().enumerate() {
        let writable_bind = m.kind == MountKind::Bind && !m.read_only;
        if m.kind == MountKind::Volume || writable_bind {
            let v = if writable_bind {
                format!("{copy_name}-bind{i}")
            } else {
                format!(
                    "{}-zdr-drill-{stamp}",
                    m.source.as_deref().unwrap_or("volume")
                )
            };
            m.kind = MountKind::Volume;
            m.source = Some(v.clone());
            volumes.push(v);
        }
    }
    Ok((copy, volumes))
}

/// Removes the drill copies labelled for `label` (a component, or a project drill's app)
/// that a killed drill left — its process, named in the copy's label, is gone — with their
/// volumes; a drill running beside this one keeps its copies.
pub(crate) async fn remove_abandoned_copies(
    docker: &Docker,
    label: &str,
    progress: &Progress,
) -> Result<()> {
    for (c, vols, labels) in docker.labelled(DRILL_LABEL, label).await? {
        let owner_alive = labels
            .get(DRILL_OWNER_LABEL)
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| std::path::Path::new("/proc").join(pid.to_string()).exists());
        if owner_alive {
            continue;
        }
        docker.remove(&c, true).await?;
        for v in vols.iter().filter(|v| v.contains("-zdr-drill-")) {
            docker.remove_abandoned_helpers(v).await?;
            if docker.volume_exists(v).await? {
                docker.remove_volume(v).await?;
            }
        }
        progress.info(format!(
            "removed the drill copy {c} left by an interrupted drill"
        ));
    }
    Ok(())
}

/// Writes an unfinished recovery's marker (JSON; the spec holds no secret values).
pub(crate) async fn write_marker(
    tier: &dyn zdr_core::StorageTier,
    key: &str,
    state: &impl Serialize,
) -> Result<()> {
    let json = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::unexpected("cannot serialize the recovery marker").with_source(e))?;
    tier.write_all(key, json).await
}

/// The recovery markers under `prefix`, oldest first, with their keys; one that cannot be read
/// is an integrity error naming it, annotated by `annotate`.
pub(crate) async fn read_markers<T: serde::de::DeserializeOwned>(
    tier: &dyn zdr_core::StorageTier,
    prefix: &str,
    annotate: impl Fn(Error) -> Error,
) -> Result<Vec<(String, T)>> {
    let mut keys: Vec<String> = tier
        .list(prefix)
        .await?
        .into_iter()
        .map(|e| e.key)
        .collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        let bytes = tier.read_all(&key).await?;
        let state: T = serde_json::from_slice(&bytes).map_err(|e| {
            annotate(
                Error::integrity(format!("the recovery marker {key} cannot be read"))
                    .with_source(e),
            )
        })?;
        out.push((key, state));
    }
    Ok(out)
}

/// A container that runs and is healthy has not failed: recovering it would replace its data
/// with the backup's. Refused unless forced.
async fn refuse_healthy(prepared: &Prepared, options: &ContainerRecoveryOptions) -> Result<()> {
    let Some(live) = &prepared.live else {
        return Ok(());
    };
    if options.force {
        return Ok(());
    }
    // A container made by a recovery that did not finish (killed, or a step failed) is the
    // half-done work of that recovery, which this run continues.
    let made_by = prepared
        .docker
        .inspect(live)
        .await?
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(RECOVERY_LABEL).cloned());
    if let Some(id) = made_by
        && prepared.unfinished.iter().any(|(_, u)| u.id == id)
    {
        return Ok(());
    }
    let status = prepared.docker.status(live).await?;
    if status.running && status.health.as_deref().is_none_or(|h| h == "healthy") {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "container {live} is running{}: nothing failed, and a recovery would replace its data with backup {}",
                if status.health.is_some() { " and healthy" } else { "" },
                prepared.plan.backup.id
            ),
        )
        .with_context("container", live)
        .with_hint("to bring back data in a running server use zdr restore; to replace the container anyway pass --force"));
    }
    Ok(())
}

/// Everything a container recovery needs, found before anything is touched.
pub(crate) struct Prepared {
    docker: Docker,
    spec: ContainerSpec,
    secrets: BTreeMap<String, Secret>,
    live: Option<String>,
    plan: RecoveryPlan,
    /// The backup the plan restores (the restore asks for exactly this one).
    backup: Manifest,
    /// Markers of recoveries of this component that did not finish, oldest first.
    unfinished: Vec<(String, UnfinishedRecovery)>,
    /// A physical recovery (PostgreSQL base backup and WAL), when the plan is one.
    #[cfg(feature = "postgres")]
    physical: Option<physical::Physical>,
}

const STEP_REMOVE: &str = "remove-failed";
const STEP_VOLUMES: &str = "keep-volumes";
const STEP_RECREATE: &str = "recreate";
const STEP_HEALTHY: &str = "wait-healthy";
const STEP_RESTORE: &str = "restore";
const STEP_DEPENDENTS: &str = "dependents";
const STEP_BACKUP: &str = "backup";

impl Stack {
    /// The plan [`Stack::recover_container`] would run for component `name`, without
    /// touching anything.
    ///
    /// # Errors
    /// A component whose tools do not run in a container (`runner = "docker"`); the engine
    /// unreachable; no spec for a container that no longer exists; no usable backup on any
    /// tier; a secret environment variable whose value cannot be found — each named.
    pub async fn plan_container_recovery(
        &self,
        name: &str,
        options: &ContainerRecoveryOptions,
    ) -> Result<RecoveryPlan> {
        let mut prepared = self.prepare_container_recovery(name, options).await?;
        prepared.plan.refused = refuse_healthy(&prepared, options)
            .await
            .err()
            .map(|e| e.to_string());
        prepared.plan.unfinished = prepared
            .unfinished
            .iter()
            .map(|(_, u)| u.id.clone())
            .collect();
        Ok(prepared.plan)
    }

    async fn prepare_container_recovery(
        &self,
        name: &str,
        options: &ContainerRecoveryOptions,
    ) -> Result<Prepared> {
        let config = self.config().component(name)?;
        let ty = ComponentType::of(config);
        let Some(RunnerConfig::Docker {
            container,
            dependents,
            ..
        }) = self.config().runners.get(name)
        else {
            return Err(Error::bad_input(format!(
                "component {name} does not run in a container: container recovery needs runner = \"docker\" and its container or service"
            ))
            .with_context("component", name));
        };
        let docker = self
            .docker()
            .await
            .map_err(|e| e.with_context("component", name))?;
        let live = match docker.resolve(container).await {
            Ok(c) => Some(c),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e.with_context("component", name)),
        };

        // The backup to restore: the newest usable one, on the first tier holding it.
        let comp = Component::new(name)?;
        let tiers = match &options.tier {
            Some(t) => vec![self.config().tier(t).map(|_| t.clone())?],
            None => self.tier_order(),
        };
        let pipeline = self.pipeline()?;
        let restore_options = RestoreOptions::default();
        let mut chosen: Option<(String, Manifest)> = None;
        let mut recorded_spec: Option<(String, ContainerSpec)> = None;
        let mut reasons = Vec::new();
        // The component's manifests per readable tier, for a physical plan.
        #[cfg_attr(not(feature = "postgres"), allow(unused_mut, unused_variables))]
        let mut catalogs: Vec<(String, Vec<Manifest>)> = Vec::new();
        for t in &tiers {
            let catalog = match zdr_storage::Repository::new(self.tier(t)?, pipeline.clone())
                .catalog()
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    reasons.push(format!("tier {t}: {e}"));
                    continue;
                }
            };
            #[cfg(feature = "postgres")]
            catalogs.push((
                t.clone(),
                catalog.list(Some(&comp)).into_iter().cloned().collect(),
            ));
            if recorded_spec.is_none() {
                recorded_spec = catalog
                    .list(Some(&comp))
                    .into_iter()
                    .rev()
                    .find_map(|m| container_spec_of(m).map(|s| (m.id.to_string(), s)));
            }
            if chosen.is_none() {
                match select_for(&catalog, &comp, &options.backup, |m| {
                    adapter::accepts(ty, &restore_options, m)
                }) {
                    Ok(m) => chosen = Some((t.clone(), m)),
                    Err(e) => reasons.push(format!("tier {t}: {e}")),
                }
            }
        }
        // PostgreSQL: a base backup rolled forward through the archive, when it can be.
        #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
        let mut method_note = None;
        #[cfg(feature = "postgres")]
        let mut physical = None;
        if options.method == RecoveryMethod::Physical && ty != ComponentType::Postgres {
            return Err(Error::bad_input(format!(
                "component {name} is not postgres: only PostgreSQL recovers from a base backup and WAL"
            ))
            .with_context("component", name));
        }
        #[cfg(feature = "postgres")]
        if ty == ComponentType::Postgres && options.method != RecoveryMethod::Logical {
            match self
                .physical_recovery(name, &options.backup, &catalogs)
                .await
            {
                Ok(p) => {
                    // The archive stopped before the newest logical backup: that one is newer.
                    let newer_logical = chosen.as_ref().and_then(|(_, m)| {
                        let until = p.archived_until?;
                        (options.method == RecoveryMethod::Auto
                            && p.target == zdr_postgres::pitr::RecoveryTarget::Latest
                            && m.finished_at > until)
                            .then(|| {
                                format!(
                                    "backup {} is newer than the end of the WAL archive ({})",
                                    m.id,
                                    until.to_rfc3339_opts(SecondsFormat::Secs, true)
                                )
                            })
                    });
                    match newer_logical {
                        Some(note) => method_note = Some(note),
                        None => {
                            chosen = Some((p.tier.clone(), p.plan.backup.clone()));
                            physical = Some(p);
                        }
                    }
                }
                Err(e) if options.method == RecoveryMethod::Physical => return Err(e),
                Err(e) => method_note = Some(e.to_string()),
            }
        }
        let Some((tier, backup)) = chosen else {
            return Err(Error::not_found(format!(
                "no usable backup of {name} to recover the container with ({}{})",
                reasons.join("; "),
                method_note
                    .as_deref()
                    .map(|n| format!("; base backup and WAL: {n}"))
                    .unwrap_or_default()
            ))
            .with_context("component", name)
            .with_hint(format!("back it up first: zdr backup {name}")));
        };

        let unfinished = self.unfinished_recoveries(name).await?;
        let (mut spec, spec_from) = match &live {
            Some(c) => (
                docker
                    .spec(c)
                    .await
                    .map_err(|e| e.with_context("component", name))?,
                "live container".to_owned(),
            ),
            None => match unfinished
                .last()
                .map(|(_, u)| u)
                .map(|u| (u.id.clone(), u.spec.clone()))
                .or(recorded_spec)
            {
                Some((id, spec)) if id.starts_with("recovery-") => {
                    (spec, format!("unfinished recovery {id}"))
                }
                Some((id, spec)) => (spec, format!("backup {id}")),
                None => {
                    return Err(Error::not_found(format!(
                        "the container of {name} ({container}) does not exist and no backup of {name} recorded its spec"
                    ))
                    .with_context("component", name)
                    .with_hint("create the container again (docker-compose up -d), then restore with zdr restore"));
                }
            },
        };
        // The label of a recovery that made this container is not part of what it is made of.
        spec.labels.remove(RECOVERY_LABEL);
        let secrets = self
            .secret_values(name, config, &docker, live.as_deref(), &spec)
            .await?;

        let mut dependent_names = Vec::new();
        for d in dependents {
            let found = match &self.config().docker.project {
                Some(project) => docker
                    .compose_containers(project, Some(d))
                    .await?
                    .into_iter()
                    .map(|c| c.name)
                    .collect::<Vec<_>>(),
                None => Vec::new(),
            };
            if found.is_empty() {
                let c = docker
                    .resolve(&zdr_docker::ContainerRef::Name(d.clone()))
                    .await
                    .map_err(|e| {
                        e.with_context("component", name)
                            .with_hint("components.<name>.dependents names containers, or compose services of [docker] project")
                    })?;
                dependent_names.push(c);
            } else {
                dependent_names.extend(found);
            }
        }
        // Compose (v2) records `depends_on` in a label of each dependent container.
        if let (Some(project), Some(service)) = (
            spec.labels.get(zdr_docker::LABEL_PROJECT),
            spec.labels.get(zdr_docker::LABEL_SERVICE),
        ) {
            for c in docker.compose_containers(project, None).await? {
                let depends = c
                    .labels
                    .get("com.docker.compose.depends_on")
                    .is_some_and(|v| {
                        v.split(',')
                            .any(|d| d.split(':').next() == Some(service.as_str()))
                    });
                if depends && c.name != spec.name && !dependent_names.contains(&c.name) {
                    dependent_names.push(c.name);
                }
            }
        }

        let volumes: Vec<String> = spec
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume)
            .filter_map(|m| m.source.clone())
            .collect();
        let binds: Vec<String> = spec
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Bind)
            .map(|m| format!("{} at {}", m.source.as_deref().unwrap_or("?"), m.target))
            .collect();
        let health = options.health_timeout.as_secs();
        let mut steps = Vec::new();
        let step = |id: &str, action: String, pre: &str, verify: &str, timeout: u64| PlanStep {
            id: id.to_owned(),
            action,
            precondition: pre.to_owned(),
            verification: verify.to_owned(),
            timeout_secs: timeout,
        };
        steps.push(step(
            STEP_REMOVE,
            match &live {
                Some(c) => format!("stop and remove the failed container {c}"),
                None => format!("nothing to remove: container {} is gone", spec.name),
            },
            "the container's spec and secret values are known; a usable backup exists",
            "the container no longer exists",
            60,
        ));
        steps.push(step(
            STEP_VOLUMES,
            if volumes.is_empty() {
                "no named volumes".to_owned()
            } else if options.discard_volume {
                format!("remove the failed volume(s) {}", volumes.join(", "))
            } else {
                format!(
                    "keep the failed volume(s) {} aside as <volume>-failed-<time> (forensics, rollback)",
                    volumes.join(", ")
                )
            },
            "no container uses the volumes",
            "the copies exist; the original names are free",
            6 * 3600,
        ));
        #[cfg(feature = "postgres")]
        let is_physical = physical.is_some();
        #[cfg(not(feature = "postgres"))]
        let is_physical = false;
        steps.push(step(
            STEP_RECREATE,
            format!(
                "create {} from its spec (image {}) on fresh volume(s){}{}",
                spec.name,
                spec.image,
                if is_physical {
                    " without starting it"
                } else {
                    " and start it"
                },
                if binds.is_empty() {
                    String::new()
                } else {
                    format!("; host directories stay as they are: {}", binds.join(", "))
                }
            ),
            "the image exists locally; the name is free",
            if is_physical {
                "the container exists"
            } else {
                "the container runs"
            },
            60,
        ));
        let restore_step = step(
            STEP_RESTORE,
            format!(
                "restore backup {} from tier {} and verify it",
                backup.id, tier
            ),
            "the datastore answers",
            "the restored data matches the manifest's facts",
            3600,
        );
        let healthy_step = step(
            STEP_HEALTHY,
            format!("wait until {} is healthy", spec.name),
            "the container started",
            "a health probe begun after this start passed (running, without a healthcheck)",
            health + 10,
        );
        #[cfg(feature = "postgres")]
        let planned_wal = physical.as_ref().map(physical::Physical::planned);
        #[cfg(not(feature = "postgres"))]
        let planned_wal: Option<PlannedWal> = None;
        if let Some(w) = &planned_wal {
            steps.push(step(
                STEP_RESTORE,
                format!(
                    "stream base backup {} from tier {} into the new data directory (checksum \
                     checked on the way, then pg_verifybackup where the image has it), and {} \
                     WAL segment(s) {} .. {} with the recovery settings",
                    backup.id, tier, w.segments, w.first_segment, w.last_segment
                ),
                "the container exists and never ran on the fresh volume(s)",
                "the base backup's SHA-256 and PostgreSQL's backup_manifest (pg_verifybackup) match",
                3600,
            ));
            steps.push(step(
                STEP_HEALTHY,
                format!(
                    "start {}: PostgreSQL replays the WAL to {}, is checked there and promoted; \
                     the recovery settings and the staged WAL are removed; wait until healthy",
                    spec.name, w.target
                ),
                "the data directory holds the base backup, the WAL and recovery.signal",
                "out of recovery on a new timeline, replay reached the target, no commit after a \
                 time target, every database of the base backup there, a health probe passed",
                w.recovery_timeout_secs + health,
            ));
        } else {
            steps.push(healthy_step);
            steps.push(restore_step);
        }
        steps.push(step(
            STEP_DEPENDENTS,
            if dependent_names.is_empty() {
                "no dependent containers".to_owned()
            } else {
                format!("restart {}", dependent_names.join(", "))
            },
            "the datastore is restored and verified",
            "each dependent started again and is healthy",
            health.saturating_mul(u64::try_from(dependent_names.len().max(1)).unwrap_or(1)),
        ));
        steps.push(step(
            STEP_BACKUP,
            if options.no_backup {
                "no fresh backup (asked not to)".to_owned()
            } else {
                format!("a fresh backup of {name} (schedule post-recovery)")
            },
            "the recovery succeeded",
            "the backup's manifest is written",
            3600,
        ));
        let plan = RecoveryPlan {
            scenario: "container".to_owned(),
            component: name.to_owned(),
            container: spec.name.clone(),
            container_exists: live.is_some(),
            image: spec.image.clone(),
            spec_from,
            volumes,
            backup: PlannedBackup {
                id: backup.id.to_string(),
                tier,
                kind: format!("{:?}", backup.kind).to_lowercase(),
                finished_at: backup.finished_at,
            },
            dependents: dependent_names,
            steps,
            refused: None,
            unfinished: Vec::new(),
            wal: planned_wal,
            method_note,
        };
        Ok(Prepared {
            docker,
            spec,
            secrets,
            live,
            plan,
            backup,
            unfinished,
            #[cfg(feature = "postgres")]
            physical,
        })
    }

    /// The values of the spec's secret environment variables: from the live container, else
    /// from this process's environment (the same names, as compose reads them from `.env`),
    /// else — for a PostgreSQL image's `POSTGRES_PASSWORD` — the component's own password.
    async fn secret_values(
        &self,
        name: &str,
        config: &ComponentConfig,
        docker: &Docker,
        live: Option<&str>,
        spec: &ContainerSpec,
    ) -> Result<BTreeMap<String, Secret>> {
        let mut values = match live {
            Some(c) => docker.secrets_from(c, spec).await?,
            None => BTreeMap::new(),
        };
        for var in spec.secret_names() {
            if values.contains_key(var) {
                continue;
            }
            if let Ok(v) = std::env::var(var) {
                values.insert(var.to_owned(), Secret::new(v));
                continue;
            }
            // The component's own password is the superuser's only when zdr logs in as the
            // user the image creates.
            #[cfg(feature = "postgres")]
            if var == "POSTGRES_PASSWORD"
                && let ComponentConfig::Postgres(pg) = config
                && let Some(p) = &pg.password
                && spec
                    .env
                    .iter()
                    .find(|v| v.name == "POSTGRES_USER")
                    .and_then(|v| v.value.as_deref())
                    .unwrap_or("postgres")
                    == pg.user
            {
                values.insert(var.to_owned(), p.clone());
                continue;
            }
            // A redis container's `--requirepass` (and the healthcheck's `redis-cli -a`) is the
            // password zdr itself logs in with, when it logs in as the default user.
            #[cfg(feature = "redis")]
            if matches!(var, "REQUIREPASS" | "REDISCLI_AUTH")
                && let ComponentConfig::Redis(r) = config
                && let Some(p) = &r.password
                && r.to_redis().is_ok_and(|c| c.username.is_none())
            {
                values.insert(var.to_owned(), p.clone());
                continue;
            }
            // An object store's root password (MinIO's variables) is the secret key zdr
            // itself signs with, when it signs as the root user.
            #[cfg(feature = "s3")]
            if matches!(var, "MINIO_ROOT_PASSWORD" | "MINIO_SECRET_KEY")
                && let ComponentConfig::S3Bucket(b) = config
                && let Some(secret) = &b.secret_access_key
                && b.access_key_id.as_deref().is_some_and(|id| {
                    spec.env.iter().any(|v| {
                        matches!(v.name.as_str(), "MINIO_ROOT_USER" | "MINIO_ACCESS_KEY")
                            && v.value.as_deref() == Some(id)
                    })
                })
            {
                values.insert(var.to_owned(), secret.clone());
                continue;
            }
            let _ = config;
            let what = if spec.secret_args.iter().any(|a| a == var) {
                "the command-line secret"
            } else {
                "the secret environment variable"
            };
            return Err(Error::bad_input(format!(
                "the container of {name} needs {what} {var}, whose value is not recorded anywhere zdr can read it"
            ))
            .with_context("component", name)
            .with_context("variable", var)
            .with_hint(format!("export {var} in zdr's environment (as compose reads it from .env)")));
        }
        Ok(values)
    }

    /// The runbook's single-container scenario for component `name`: remove the failed
    /// container, keep its volumes aside (or discard them), recreate it from its spec on fresh
    /// volumes, wait until healthy, restore the newest usable backup and verify it, restart
    /// the dependent containers, take a fresh backup, and store the report.
    ///
    /// A failing step stops the recovery; the returned report names it and what was done
    /// before ([`RecoveryReport::ok`] is false).
    ///
    /// # Errors
    /// As [`Stack::plan_container_recovery`], before anything is touched.
    pub async fn recover_container(
        &self,
        name: &str,
        options: &ContainerRecoveryOptions,
        progress: &Progress,
    ) -> Result<RecoveryReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        let prepared = self.prepare_container_recovery(name, options).await?;
        refuse_healthy(&prepared, options).await?;
        let Prepared {
            docker,
            spec,
            secrets,
            live,
            plan,
            backup,
            unfinished,
            #[cfg(feature = "postgres")]
            physical,
        } = prepared;
        #[cfg(feature = "postgres")]
        let in_place = physical.is_some();
        #[cfg(not(feature = "postgres"))]
        let in_place = false;
        let stamp = started_at.format("%Y%m%dt%H%M%S%3fz").to_string();
        let id = format!("recovery-{name}-{stamp}");
        // Written before anything is touched, removed once a recovery of this component
        // succeeds: a run killed or failed halfway is continued by the next one, which finds
        // here the spec and what was kept aside.
        let primary = self.tier(&self.config().primary)?;
        let marker = format!("{UNFINISHED_PREFIX}{name}/{id}");
        let mut state = UnfinishedRecovery {
            id: id.clone(),
            started_at,
            spec: spec.clone(),
            // What interrupted runs kept aside (the failed data itself) comes first.
            kept_aside: unfinished
                .iter()
                .flat_map(|(_, u)| u.kept_aside.iter().cloned())
                .collect(),
        };
        write_marker(primary.as_ref(), &marker, &state)
            .await
            .map_err(|e| {
                e.with_hint("the recovery marks itself on the primary tier before it starts")
            })?;
        let mut run = Run::new(&plan.steps, progress);
        let mut report = RecoveryReport {
            id: id.clone(),
            scenario: plan.scenario.clone(),
            component: name.to_owned(),
            container: spec.name.clone(),
            started_at,
            finished_at: started_at,
            rto_seconds: 0.0,
            ok: false,
            error: None,
            steps: Vec::new(),
            restored: None,
            kept_aside: state.kept_aside.clone(),
            dependents: Vec::new(),
            post_backup: None,
            stored: Vec::new(),
        };

        let result: Result<()> = async {
            // 1. The failed container goes (its spec and secrets are in hand).
            run.step(STEP_REMOVE, async {
                match &live {
                    Some(c) => {
                        docker.remove(c, true).await?;
                        Ok(format!("removed {c}"))
                    }
                    None => Ok("container already gone".to_owned()),
                }
            })
            .await?;

            // 2. Its volumes: kept aside under a new name (copy), or discarded.
            let mut kept = Vec::new();
            let step = run
                .step(STEP_VOLUMES, async {
                    let mut done = Vec::new();
                    for v in &plan.volumes {
                        // A run killed while copying left its helper holding the volume.
                        let helpers = docker.remove_abandoned_helpers(v).await?;
                        if helpers > 0 {
                            done.push(format!(
                                "{helpers} helper container(s) of an interrupted run removed"
                            ));
                        }
                        if !docker.volume_exists(v).await? {
                            done.push(format!("{v} was lost"));
                            continue;
                        }
                        if options.discard_volume {
                            docker.remove_volume(v).await?;
                            done.push(format!("{v} removed"));
                        } else {
                            let aside = format!("{v}-failed-{stamp}");
                            docker.rename_volume(v, &aside, &spec.image).await?;
                            done.push(format!("{v} kept as {aside}"));
                            kept.push(KeptAside {
                                what: "volume".to_owned(),
                                original: v.clone(),
                                kept_as: aside,
                            });
                            // Recorded at once: a run killed from here on is continued by
                            // the next, which reports (and rolls back to) this copy.
                            let mut now = state.clone();
                            now.kept_aside.extend(kept.iter().cloned());
                            write_marker(primary.as_ref(), &marker, &now).await?;
                        }
                    }
                    Ok(if done.is_empty() {
                        "no named volumes".to_owned()
                    } else {
                        done.join(", ")
                    })
                })
                .await;
            state.kept_aside.extend(kept.iter().cloned());
            report.kept_aside.append(&mut kept);
            step?;

            // 3. The container again, from its spec, on fresh volumes.
            run.step(STEP_RECREATE, async {
                let mut opts = RecreateOptions::new().secrets(secrets.clone());
                // A physical recovery fills the data directory before the first start.
                opts.start = !in_place;
                for m in &spec.mounts {
                    if m.kind == MountKind::Volume
                        && let Some(v) = &m.source
                    {
                        opts = opts.volume(m.target.clone(), VolumeChoice::Fresh(v.clone()));
                    }
                }
                let mut labelled = spec.clone();
                labelled
                    .labels
                    .insert(RECOVERY_LABEL.to_owned(), id.clone());
                let id = docker.recreate(&labelled, &opts).await?;
                Ok(format!(
                    "created {} ({}) from {}",
                    spec.name,
                    id.chars().take(12).collect::<String>(),
                    spec.image
                ))
            })
            .await?;

            // 4-5 of a physical recovery: the base backup and the WAL into the data
            // directory, then the first start replays them.
            #[cfg(feature = "postgres")]
            if let Some(physical) = &physical {
                run.step(STEP_RESTORE, async {
                    self.stage_physical(physical, &docker, &spec, progress)
                        .await
                })
                .await?;
                let mut restored = None;
                let step = run
                    .step(STEP_HEALTHY, async {
                        let record = self
                            .finish_physical(
                                name,
                                physical,
                                &docker,
                                &spec,
                                options.health_timeout,
                                progress,
                            )
                            .await?;
                        let outcome = if record.problems.is_empty() {
                            Ok(format!(
                                "recovered to {} (last commit {}), {} WAL segment(s) replayed, \
                                 timeline {}; {} database(s) checked",
                                record.target.as_deref().unwrap_or("?"),
                                record.recovered_to.map_or_else(
                                    || "none replayed".to_owned(),
                                    |t| t.to_rfc3339_opts(SecondsFormat::Micros, true)
                                ),
                                record.items,
                                record.timeline.unwrap_or(0),
                                record.verified
                            ))
                        } else {
                            Err(Error::integrity(format!(
                                "the recovered server fails its checks: {}",
                                record.problems.join("; ")
                            )))
                        };
                        restored = Some(record);
                        outcome
                    })
                    .await;
                report.restored = restored;
                step?;
            }

            // 4. Healthy.
            if !in_place {
                run.step(STEP_HEALTHY, async {
                    let s = docker
                        .wait_healthy(&spec.name, None, options.health_timeout)
                        .await?;
                    Ok(format!(
                        "{} {}{}",
                        s.name,
                        s.status,
                        s.health.map(|h| format!(", {h}")).unwrap_or_default()
                    ))
                })
                .await?;

                // 5. Restore and verify.
                let mut restored = None;
                let step = run
                    .step(STEP_RESTORE, async {
                        // Exactly the backup the plan chose (a backup made meanwhile, of the
                        // empty new container, is never taken for the newest).
                        // The container is new on fresh volumes (the failed ones are kept aside):
                        // there is no live dataset to take a safety copy of.
                        let restore = RestoreOptions {
                            tier: options.tier.clone(),
                            backup: BackupSelector::Id(backup.id.clone()),
                            no_safety_copy: true,
                            ..RestoreOptions::default()
                        };
                        let r = self.restore(name, &restore, progress).await?;
                        let (record, outcome) = RestoredRecord::checked(&r);
                        restored = Some(record);
                        outcome
                    })
                    .await;
                report.restored = restored;
                step?;
            }

            // 6. Dependents restarted, each healthy again.
            let mut deps = Vec::new();
            let step = run
                .step(STEP_DEPENDENTS, async {
                    for d in &plan.dependents {
                        let before = docker.status(d).await?.started_at;
                        docker.restart(d, Some(Duration::from_secs(10))).await?;
                        let s = docker
                            .wait_healthy(d, before, options.health_timeout)
                            .await?;
                        deps.push(DependentRecord {
                            name: d.clone(),
                            status: format!(
                                "{}{}",
                                s.status,
                                s.health.map(|h| format!(", {h}")).unwrap_or_default()
                            ),
                        });
                    }
                    Ok(if plan.dependents.is_empty() {
                        "no dependent containers".to_owned()
                    } else {
                        format!("restarted {}", plan.dependents.join(", "))
                    })
                })
                .await;
            report.dependents = deps;
            step?;

            // 7. A fresh backup of what was restored.
            let mut post = None;
            let step = run
                .step(STEP_BACKUP, async {
                    if options.no_backup {
                        return Ok("skipped (asked not to)".to_owned());
                    }
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
                    post = Some(b.backup.id.to_string());
                    Ok(format!("backup {} on tier {}", b.backup.id, b.tier))
                })
                .await;
            report.post_backup = post;
            step
        }
        .await;

        report.steps = run.finish();
        report.ok = result.is_ok();
        report.error = result.err().map(|e| e.to_string());
        report.finished_at = Utc::now();
        report.rto_seconds = started.elapsed().as_secs_f64();
        self.store_report(&mut report, progress).await;
        if report.ok {
            for m in unfinished
                .iter()
                .map(|(k, _)| k)
                .chain(std::iter::once(&marker))
            {
                if let Err(e) = primary.delete(m).await {
                    progress.warn(format!("the recovery marker {m} could not be removed: {e}"));
                }
            }
        }
        Ok(report)
    }

    /// The markers of recoveries of component `name` that did not finish (under
    /// `reports/unfinished/<name>/`), oldest first, with what each holds.
    pub(crate) async fn unfinished_recoveries(
        &self,
        name: &str,
    ) -> Result<Vec<(String, UnfinishedRecovery)>> {
        read_markers(
            self.tier(&self.config().primary)?.as_ref(),
            &format!("{UNFINISHED_PREFIX}{name}/"),
            |e| {
                e.with_context("component", name)
                    .with_hint("remove it if no recovery of this component is under way")
            },
        )
        .await
    }

    /// Stores a report on the primary tier (`reports/<id>.json`, and `.md` when it has a
    /// markdown form) and records the keys in it; a failure is a warning — the report is still
    /// returned.
    pub(crate) async fn store_report<R: StoredReport>(&self, report: &mut R, progress: &Progress) {
        let stored = async {
            let tier = self.tier(&self.config().primary)?;
            let json_key = format!("{REPORTS_PREFIX}{}.json", report.id());
            let md_key = format!("{REPORTS_PREFIX}{}.md", report.id());
            let mut keys = vec![json_key.clone()];
            if report.markdown().is_some() {
                keys.push(md_key.clone());
            }
            let mut with_keys = report.clone();
            with_keys.set_stored(keys.clone());
            let mut json = serde_json::to_vec_pretty(&with_keys)
                .map_err(|e| Error::unexpected("cannot serialize the report").with_source(e))?;
            json.push(b'\n');
            tier.write_all(&json_key, json).await?;
            if let Some(md) = with_keys.markdown() {
                tier.write_all(&md_key, md.into_bytes()).await?;
            }
            Ok::<_, Error>(keys)
        }
        .await;
        match stored {
            Ok(keys) => report.set_stored(keys),
            Err(e) => progress.warn(format!(
                "the report could not be stored on tier {}: {e}",
                self.config().primary
            )),
        }
    }
}

/// A report stored under `reports/` on the primary tier.
pub(crate) trait StoredReport: Serialize + Clone {
    /// Its id (the file name without extension).
    fn id(&self) -> &str;
    /// Records the keys it was stored under.
    fn set_stored(&mut self, keys: Vec<String>);
    /// Its markdown form, if it has one.
    fn markdown(&self) -> Option<String>;
}

impl StoredReport for RecoveryReport {
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

impl StoredReport for RecoveryRollback {
    fn id(&self) -> &str {
        &self.id
    }
    fn set_stored(&mut self, keys: Vec<String>) {
        self.stored = keys;
    }
    fn markdown(&self) -> Option<String> {
        None
    }
}

/// What [`Stack::rollback_recovery`] did: the volumes a recovery kept aside put back under
/// their names, the recovered ones kept aside in turn (so the rollback can be undone).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryRollback {
    /// The rollback's id (`<recovery-id>-rollback-<time>`).
    pub id: String,
    /// The recovery rolled back.
    pub recovery: String,
    /// The component.
    pub component: String,
    /// The container.
    pub container: String,
    /// True when every step was done.
    pub ok: bool,
    /// The failed step's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The steps, with their outcomes.
    pub steps: Vec<StepRecord>,
    /// Volumes put back: `kept_as` (the recovery's copy) is now `original` again.
    pub restored: Vec<KeptAside>,
    /// The volumes the recovery had made, kept aside now under `kept_as`.
    pub displaced: Vec<KeptAside>,
    /// Seconds from start to end.
    pub seconds: f64,
    /// The keys it was stored under on the primary tier.
    pub stored: Vec<String>,
}

const STEP_SWAP: &str = "swap-volumes";

impl Stack {
    /// A stored recovery report (`reports/<id>.json` on the primary tier).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the id; a report that cannot be parsed.
    pub async fn recovery_report(&self, id: &str) -> Result<RecoveryReport> {
        if id.is_empty() || id.contains('/') || id.contains("..") {
            return Err(Error::bad_input(format!("invalid recovery id {id:?}")));
        }
        let tier = self.tier(&self.config().primary)?;
        let key = format!("{REPORTS_PREFIX}{id}.json");
        if tier.stat(&key).await?.is_none() {
            return Err(Error::not_found(format!(
                "no recovery {id} on tier {} ({key} does not exist)",
                self.config().primary
            ))
            .with_context("recovery", id)
            .with_hint("the ids are the names under reports/ on the primary tier"));
        }
        let bytes = tier.read_all(&key).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::bad_input(format!(
                "{key} is not the report of a container recovery (a rollback's or a system recovery's report cannot be rolled back)"
            ))
            .with_source(e)
            .with_context("recovery", id)
        })
    }

    /// Undo the container recovery `id`: remove the container it made, keep its volumes
    /// aside (`<volume>-rolledback-<time>`), put the volumes the recovery kept aside back
    /// under their names, recreate the container on them, wait until healthy, restart the
    /// dependents. The report is stored as `reports/<id>-rollback-<time>.json`.
    ///
    /// # Errors
    /// Before anything is touched: an unknown recovery, one that kept nothing aside (its
    /// volumes were lost or discarded), a kept volume that no longer exists, and the
    /// preconditions of [`Stack::plan_container_recovery`].
    pub async fn rollback_recovery(
        &self,
        id: &str,
        options: &ContainerRecoveryOptions,
        progress: &Progress,
    ) -> Result<RecoveryRollback> {
        let started = Instant::now();
        let recovery = self.recovery_report(id).await?;
        if recovery.kept_aside.is_empty() {
            return Err(Error::bad_input(format!(
                "recovery {id} kept nothing aside (its volumes were lost or discarded): nothing to roll back to"
            ))
            .with_context("recovery", id));
        }
        // What the rollback needs of the plan is the container, not a backup to restore.
        let logical = ContainerRecoveryOptions {
            method: RecoveryMethod::Logical,
            ..options.clone()
        };
        let prepared = self
            .prepare_container_recovery(&recovery.component, &logical)
            .await?;
        let Prepared {
            docker,
            spec,
            secrets,
            live,
            plan,
            ..
        } = prepared;
        // Per original volume, the first copy kept aside: the failed data itself (a recovery
        // that continued an interrupted one also kept aside the volume that one had made).
        let mut to_restore: Vec<KeptAside> = Vec::new();
        for k in &recovery.kept_aside {
            if !to_restore.iter().any(|t| t.original == k.original) {
                to_restore.push(k.clone());
            }
        }
        for k in &to_restore {
            // A rollback killed after putting a volume back finds it under its name.
            if !docker.volume_exists(&k.kept_as).await?
                && !docker.volume_exists(&k.original).await?
            {
                return Err(Error::not_found(format!(
                    "volume {} kept aside by recovery {id} no longer exists",
                    k.kept_as
                ))
                .with_context("recovery", id)
                .with_context("volume", &k.kept_as));
            }
        }
        let stamp = Utc::now().format("%Y%m%dt%H%M%S%3fz").to_string();
        let step = |sid: &str, action: String, timeout: u64| PlanStep {
            id: sid.to_owned(),
            action,
            precondition: String::new(),
            verification: String::new(),
            timeout_secs: timeout,
        };
        let health = options.health_timeout.as_secs();
        let steps = vec![
            step(
                STEP_REMOVE,
                format!("remove the container {}", spec.name),
                60,
            ),
            step(
                STEP_SWAP,
                format!(
                    "keep the recovered volume(s) aside and put {} back",
                    to_restore
                        .iter()
                        .map(|k| k.kept_as.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                1200,
            ),
            step(STEP_RECREATE, format!("create {} on them", spec.name), 60),
            step(
                STEP_HEALTHY,
                format!("wait until {} is healthy", spec.name),
                health,
            ),
            step(
                STEP_DEPENDENTS,
                format!("restart {}", plan.dependents.join(", ")),
                health.saturating_mul(u64::try_from(plan.dependents.len().max(1)).unwrap_or(1)),
            ),
        ];
        let mut run = Run::new(&steps, progress);
        let mut restored = Vec::new();
        let mut displaced = Vec::new();
        let result: Result<()> = async {
            run.step(STEP_REMOVE, async {
                match &live {
                    Some(c) => {
                        docker.remove(c, true).await?;
                        Ok(format!("removed {c}"))
                    }
                    None => Ok("container already gone".to_owned()),
                }
            })
            .await?;
            run.step(STEP_SWAP, async {
                let mut done = Vec::new();
                for k in &to_restore {
                    docker.remove_abandoned_helpers(&k.original).await?;
                    docker.remove_abandoned_helpers(&k.kept_as).await?;
                    if !docker.volume_exists(&k.kept_as).await? {
                        done.push(format!("{} is back already", k.original));
                        continue;
                    }
                    if docker.volume_exists(&k.original).await? {
                        let aside = format!("{}-rolledback-{stamp}", k.original);
                        docker
                            .rename_volume(&k.original, &aside, &spec.image)
                            .await?;
                        done.push(format!("{} kept as {aside}", k.original));
                        displaced.push(KeptAside {
                            what: "volume".to_owned(),
                            original: k.original.clone(),
                            kept_as: aside,
                        });
                    }
                    docker
                        .rename_volume(&k.kept_as, &k.original, &spec.image)
                        .await?;
                    done.push(format!("{} back as {}", k.kept_as, k.original));
                    restored.push(k.clone());
                }
                Ok(done.join(", "))
            })
            .await?;
            run.step(STEP_RECREATE, async {
                let mut opts = RecreateOptions::new().secrets(secrets.clone());
                for m in &spec.mounts {
                    if m.kind == MountKind::Volume
                        && let Some(v) = &m.source
                    {
                        opts = opts.volume(m.target.clone(), VolumeChoice::Existing(v.clone()));
                    }
                }
                docker.recreate(&spec, &opts).await?;
                Ok(format!("created {} from {}", spec.name, spec.image))
            })
            .await?;
            run.step(STEP_HEALTHY, async {
                let s = docker
                    .wait_healthy(&spec.name, None, options.health_timeout)
                    .await?;
                Ok(format!("{} {}", s.name, s.status))
            })
            .await?;
            run.step(STEP_DEPENDENTS, async {
                for d in &plan.dependents {
                    let before = docker.status(d).await?.started_at;
                    docker.restart(d, Some(Duration::from_secs(10))).await?;
                    docker
                        .wait_healthy(d, before, options.health_timeout)
                        .await?;
                }
                Ok(if plan.dependents.is_empty() {
                    "no dependent containers".to_owned()
                } else {
                    format!("restarted {}", plan.dependents.join(", "))
                })
            })
            .await
        }
        .await;
        let mut report = RecoveryRollback {
            id: format!("{id}-rollback-{stamp}"),
            recovery: id.to_owned(),
            component: recovery.component.clone(),
            container: spec.name.clone(),
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            steps: run.finish(),
            restored,
            displaced,
            seconds: started.elapsed().as_secs_f64(),
            stored: Vec::new(),
        };
        self.store_report(&mut report, progress).await;
        Ok(report)
    }
}

const STEP_TEARDOWN: &str = "teardown";

/// The label on a drill's throwaway container (value: the component).
pub const DRILL_LABEL: &str = "io.zdr.drill";

/// The label naming the process (pid on the drill's host) that made a drill copy: a copy whose
/// process is gone was left by an interrupted drill.
pub const DRILL_OWNER_LABEL: &str = "io.zdr.drill.pid";

impl Stack {
    /// The single-container scenario as a drill against a throwaway copy — never the live
    /// container: a container made from the same spec under another name
    /// (`<container>-zdr-drill-<time>`), on fresh volumes, its ports published on free host
    /// ports, no network aliases (it never answers for the service) and no compose labels;
    /// waited healthy, the newest usable backup restored into it and verified, then removed
    /// with its volumes (also when a step failed). Each step's time is recorded; the report
    /// is stored as `reports/drill-<component>-<time>.json` and `.md`.
    ///
    /// # Errors
    /// As [`Stack::plan_container_recovery`], before anything is created.
    pub async fn drill_container(
        &self,
        name: &str,
        options: &ContainerRecoveryOptions,
        progress: &Progress,
    ) -> Result<RecoveryReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        // A drill restores the logical backup into its copy.
        let logical = ContainerRecoveryOptions {
            method: RecoveryMethod::Logical,
            ..options.clone()
        };
        let Prepared {
            docker,
            spec,
            secrets,
            plan,
            backup,
            ..
        } = self.prepare_container_recovery(name, &logical).await?;
        let stamp = started_at.format("%Y%m%dt%H%M%S%3fz").to_string();
        remove_abandoned_copies(&docker, name, progress).await?;
        let (copy, volumes) = drill_copy(&spec, name, &stamp)?;
        let copy_name = copy.name.clone();
        let mut recreate = RecreateOptions::new().secrets(secrets);
        for m in &copy.mounts {
            if let Some(v) = m.source.as_ref().filter(|v| volumes.contains(v)) {
                recreate = recreate.volume(m.target.clone(), VolumeChoice::Fresh(v.clone()));
            }
        }
        let health = options.health_timeout.as_secs();
        let step = |id: &str, action: String, timeout: u64| PlanStep {
            id: id.to_owned(),
            action,
            precondition: String::new(),
            verification: String::new(),
            timeout_secs: timeout,
        };
        let steps = vec![
            step(
                STEP_RECREATE,
                format!(
                    "create the throwaway copy {copy_name} from the spec of {} on fresh volume(s)",
                    spec.name
                ),
                60,
            ),
            step(
                STEP_HEALTHY,
                format!("wait until {copy_name} is healthy"),
                health,
            ),
            step(
                STEP_RESTORE,
                format!(
                    "restore backup {} from tier {} into it and verify",
                    plan.backup.id, plan.backup.tier
                ),
                3600,
            ),
            step(
                STEP_TEARDOWN,
                format!("remove {copy_name} and its volume(s)"),
                120,
            ),
        ];
        let mut run = Run::new(&steps, progress);
        let mut restored = None;
        let result: Result<()> = async {
            run.step(STEP_RECREATE, async {
                docker.recreate(&copy, &recreate).await?;
                Ok(format!("created {copy_name} from {}", copy.image))
            })
            .await?;
            run.step(STEP_HEALTHY, async {
                let s = docker
                    .wait_healthy(&copy_name, None, options.health_timeout)
                    .await?;
                Ok(format!("{} {}", s.name, s.status))
            })
            .await?;
            run.step(STEP_RESTORE, async {
                let drill = self.drill_stack(name, &docker, &copy_name).await?;
                let r = drill
                    .restore(
                        name,
                        &RestoreOptions {
                            tier: options.tier.clone(),
                            backup: BackupSelector::Id(backup.id.clone()),
                            // A throwaway copy: nothing live to keep.
                            no_safety_copy: true,
                            ..RestoreOptions::default()
                        },
                        progress,
                    )
                    .await?;
                let (record, outcome) = RestoredRecord::checked(&r);
                restored = Some(record);
                outcome
            })
            .await
        }
        .await;
        // The copy goes whatever happened.
        let teardown = run
            .step(STEP_TEARDOWN, async {
                match docker.remove(&copy_name, true).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                for v in &volumes {
                    docker.remove_abandoned_helpers(v).await?;
                    if docker.volume_exists(v).await? {
                        docker.remove_volume(v).await?;
                    }
                }
                Ok(format!("removed {copy_name} and {}", volumes.join(", ")))
            })
            .await;
        let result = result.and(teardown);
        let mut report = RecoveryReport {
            id: format!("drill-{name}-{stamp}"),
            scenario: "container drill".to_owned(),
            component: name.to_owned(),
            container: copy_name,
            started_at,
            finished_at: Utc::now(),
            rto_seconds: started.elapsed().as_secs_f64(),
            ok: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            steps: run.finish(),
            restored,
            kept_aside: Vec::new(),
            dependents: Vec::new(),
            post_backup: None,
            stored: Vec::new(),
        };
        self.store_report(&mut report, progress).await;
        Ok(report)
    }

    /// This stack with component `name` pointed at the drill's copy: its tools run in the
    /// copy, and zdr connects to the copy's published port.
    async fn drill_stack(&self, name: &str, docker: &Docker, copy: &str) -> Result<Stack> {
        let mut config = self.config().clone();
        let c = docker.inspect(copy).await?;
        let published = |container_port: u16| {
            c.network_settings
                .as_ref()
                .and_then(|n| n.ports.as_ref())
                .and_then(|p| p.get(&format!("{container_port}/tcp")).cloned().flatten())
                .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
                .and_then(|p| p.parse::<u16>().ok())
        };
        if let Some(RunnerConfig::Docker {
            container,
            port,
            dependents,
            ..
        }) = config.runners.get_mut(name)
        {
            let inner = *port;
            *container = zdr_docker::ContainerRef::Name(copy.to_owned());
            dependents.clear();
            #[cfg(feature = "postgres")]
            if let Some(ComponentConfig::Postgres(pg)) = config.components.get_mut(name) {
                pg.port = published(inner).ok_or_else(|| {
                    Error::bad_input(format!(
                        "the container of {name} publishes no host port for {inner}/tcp: a drill copy cannot be reached"
                    ))
                    .with_context("component", name)
                })?;
            }
            #[cfg(feature = "redis")]
            if let Some(ComponentConfig::Redis(r)) = config.components.get_mut(name) {
                let port = published(inner).ok_or_else(|| {
                    Error::bad_input(format!(
                        "the container of {name} publishes no host port for {inner}/tcp: a drill copy cannot be reached"
                    ))
                    .with_context("component", name)
                })?;
                // The address zdr connects to, with the copy's port (a url's own port too).
                let lib = r.to_redis()?;
                r.url = None;
                r.host = Some(lib.host);
                r.username = lib.username;
                r.port = Some(port);
            }
            let _ = inner;
        }
        let _ = published;
        Ok(Stack::open_unresolved(config))
    }
}

/// The steps of a running plan, recorded as they run.
pub(crate) struct Run<'a> {
    records: Vec<StepRecord>,
    timeouts: BTreeMap<String, u64>,
    progress: &'a Progress,
}

impl<'a> Run<'a> {
    pub(crate) fn new(steps: &[PlanStep], progress: &'a Progress) -> Self {
        Self {
            records: steps
                .iter()
                .map(|s| StepRecord {
                    id: s.id.clone(),
                    action: s.action.clone(),
                    status: StepStatus::NotRun,
                    started_at: None,
                    seconds: 0.0,
                    detail: String::new(),
                })
                .collect(),
            timeouts: steps
                .iter()
                .map(|s| (s.id.clone(), s.timeout_secs))
                .collect(),
            progress,
        }
    }

    /// Runs one step within its timeout and records how it ended.
    pub(crate) async fn step(
        &mut self,
        id: &str,
        body: impl std::future::Future<Output = Result<String>>,
    ) -> Result<()> {
        let timeout = Duration::from_secs(self.timeouts.get(id).copied().unwrap_or(3600));
        let index = self.records.iter().position(|r| r.id == id);
        let action = index
            .and_then(|i| self.records.get(i))
            .map(|r| r.action.clone())
            .unwrap_or_default();
        self.progress.info(format!("step {id}: {action}"));
        let started_at = Utc::now();
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, body).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Source,
                format!("step {id} did not finish within {} s", timeout.as_secs()),
            )),
        };
        let seconds = started.elapsed().as_secs_f64();
        if result.is_ok() {
            // The fault suite kills the process here: a second run must continue.
            zdr_core::failpoint(&format!("recover-after-{id}"));
        }
        let (status, detail) = match &result {
            Ok(d) => (StepStatus::Done, d.clone()),
            Err(e) => (StepStatus::Failed, e.to_string()),
        };
        match &result {
            Ok(d) => self
                .progress
                .info(format!("step {id} done in {seconds:.1} s: {d}")),
            Err(e) => self
                .progress
                .warn(format!("step {id} failed after {seconds:.1} s: {e}")),
        }
        if let Some(r) = index.and_then(|i| self.records.get_mut(i)) {
            r.status = status;
            r.started_at = Some(started_at);
            r.seconds = seconds;
            r.detail = detail;
        }
        result.map(|_| ()).map_err(|e| e.with_context("step", id))
    }

    /// Records a step that is not run, with the reason.
    pub(crate) fn skip(&mut self, id: &str, reason: String) {
        self.progress.info(format!("step {id}: {reason}"));
        if let Some(r) = self.records.iter_mut().find(|r| r.id == id) {
            r.detail = reason;
        }
    }

    pub(crate) fn finish(self) -> Vec<StepRecord> {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zdr_docker::{MountSpec, NetworkSpec, PortSpec};

    #[test]
    fn a_drill_copy_shares_nothing_writable_and_never_answers_for_the_service() {
        let json = serde_json::json!({
            "name": "zentoria-db",
            "image": "postgres:15",
            "env": [],
            "mounts": [],
            "networks": [],
            "exposed_ports": [],
            "ports": [],
            "labels": {"com.docker.compose.project": "zentoria", "com.docker.compose.service": "db",
                       "io.zdr.recovery": "recovery-db-1", "org.example": "kept"},
            "restart_policy": {"name": "always"}
        });
        let mut spec: ContainerSpec =
            serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        spec.mounts = vec![
            MountSpec {
                kind: MountKind::Volume,
                source: Some("pgdata".into()),
                target: "/var/lib/postgresql/data".into(),
                read_only: false,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: Some("/srv/db/wal".into()),
                target: "/wal".into(),
                read_only: false,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: Some("/srv/db/conf".into()),
                target: "/etc/pg".into(),
                read_only: true,
            },
        ];
        spec.networks = vec![NetworkSpec {
            name: "zentoria_default".into(),
            aliases: vec!["db".into()],
        }];
        spec.ports = vec![PortSpec {
            container_port: "5432/tcp".into(),
            host_ip: "127.0.0.1".into(),
            host_port: "5432".into(),
        }];
        let (copy, volumes) = drill_copy(&spec, "postgres", "s1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.name, "zentoria-db-zdr-drill-s1");
        assert_eq!(
            volumes,
            ["pgdata-zdr-drill-s1", "zentoria-db-zdr-drill-s1-bind1"]
        );
        assert!(
            copy.mounts
                .iter()
                .all(|m| m.source.as_deref() != Some("pgdata")
                    && m.source.as_deref() != Some("/srv/db/wal"))
        );
        assert_eq!(copy.mounts[2].source.as_deref(), Some("/srv/db/conf"));
        assert_eq!(copy.mounts[2].kind, MountKind::Bind);
        assert!(copy.networks[0].aliases.is_empty());
        // A free port of its own, not the live container's (fixed across restarts).
        let port: u16 = copy.ports[0]
            .host_port
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(port, 5432);
        assert_eq!(copy.ports[0].host_ip, "127.0.0.1");
        assert!(copy.restart_policy.is_none());
        let labels: Vec<&str> = copy.labels.keys().map(String::as_str).collect();
        assert_eq!(labels, [DRILL_LABEL, DRILL_OWNER_LABEL, "org.example"]);
        assert_eq!(
            copy.labels.get(DRILL_OWNER_LABEL),
            Some(&std::process::id().to_string())
        );
    }
}
