//! Running unattended: [`Daemon`] runs the jobs of `[daemon.jobs]` (backups with replication
//! and pruning after them, verification, drills, pruning) on cron schedules, checks every
//! component's recovery point objective, serves Prometheus metrics and sends alerts.
//!
//! ```toml
//! [daemon]
//! listen = "127.0.0.1:9187"              # GET /metrics and /healthz (off when absent)
//! webhook = "https://alerts.example/zdr" # JSON alerts: a failure, a missed objective, a failed
//!                                        # drill — each once — and their recovery
//! jitter = "30s"                         # each run starts up to this much after its time
//! state_file = "/var/lib/zdr/daemon.json"
//!
//! [daemon.jobs.backup-db]                # replaces the default job of that name
//! run = "backup"                         # backup | verify | drill | prune | replicate
//! component = "db"
//! cron = "0 * * * *"                     # UTC; "off" disables a default job
//! ping = "https://hc-ping.com/<uuid>"    # healthchecks-style: /start, success, /fail
//! ```
//!
//! Without `[daemon.jobs]` entries (or with `defaults = true`, the default) every component
//! gets the runbook's schedule — see [`default_jobs`]. The same job runs by hand with
//! [`Daemon::run_once`] (`zdr run-once JOB`), as cron users need.
//!
//! The rules a scheduler for backups must keep:
//! - **No overlap**: a job whose previous run has not ended is skipped (and logged), never
//!   started twice; different jobs run in parallel (the component locks on the tier keep a
//!   backup and a prune of one component apart, across hosts).
//! - **One catch-up, not a burst**: at start-up a job that missed one or more runs while the
//!   daemon was down runs once, then follows its schedule; a backup job whose component has
//!   no backup at all runs at once.
//! - **Alert once**: an alert is sent when a job's outcome or a component's objective
//!   changes (ok → failed, failed → ok), not at every run; the state file remembers.
//! - **Clean shutdown**: after the shutdown signal no job starts; running ones get
//!   `shutdown_grace` to finish, then are abandoned (nothing partial is ever listed as a
//!   backup; the caller removes what their writes left, see
//!   [`abandon_in_flight`](zdr_storage::abandon_in_flight)).
//! - **An injectable clock** ([`Clock`], [`ManualClock`]) so schedules can be tested without
//!   waiting for them.

pub mod cron;
mod notify;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt as _};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use tokio::sync::{broadcast, watch};
use zdr_core::{Component, Error, ErrorKind, Progress, Result, Secret};

pub use cron::Schedule;
pub use notify::{Alert, AlertKind};
pub use state::{DaemonState, JobState};

use crate::adapter::ComponentType;
use crate::config::RunnerConfig;
use crate::prune::PruneOptions;
use crate::{BackupOptions, Config, Stack};
use notify::Notifier;
use state::StateFile;

/// `[daemon]`: how `zdr daemon` runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// `HOST:PORT` to serve `GET /metrics` (Prometheus) and `GET /healthz` on; off when
    /// absent.
    #[serde(default)]
    pub listen: Option<String>,
    /// A URL that receives each alert as a JSON POST ([`Alert`]).
    #[serde(default)]
    pub webhook: Option<Secret>,
    /// Attempts after the first for an alert or ping that failed (default 3; waits 1 s,
    /// 2 s, 4 s ...).
    #[serde(default)]
    pub webhook_retries: Option<u32>,
    /// Each run starts up to this long after its scheduled time, the same offset for the
    /// same job and time on the same host (default `30s`; `0s` for none).
    #[serde(default)]
    pub jitter: Option<String>,
    /// Where the daemon keeps its state (default: `$STATE_DIRECTORY/daemon.json` under
    /// systemd, else `$XDG_STATE_HOME/zdr/daemon.json`, else
    /// `~/.local/state/zdr/daemon.json`).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How often the recovery point objectives are checked between jobs (default `5m`;
    /// also after every job).
    #[serde(default)]
    pub status_every: Option<String>,
    /// How long running jobs may take to finish after the shutdown signal (default `5m`).
    #[serde(default)]
    pub shutdown_grace: Option<String>,
    /// Also write the metrics to this file at every check (node_exporter's textfile
    /// collector).
    #[serde(default)]
    pub textfile: Option<PathBuf>,
    /// Add the runbook's schedule for what `jobs` does not name (default true).
    #[serde(default)]
    pub defaults: Option<bool>,
    /// The jobs by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
}

/// `[daemon.jobs.NAME]`: one scheduled job.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// What it does: `backup` (the default), `verify`, `drill`, `prune` or `replicate`.
    #[serde(default)]
    pub run: Option<String>,
    /// A cron expression ([`Schedule`], UTC), or `off`.
    pub cron: String,
    /// The component (backup and drill: required, except for a system drill; verify and
    /// prune: all when absent).
    #[serde(default)]
    pub component: Option<String>,
    /// backup, postgres: a base backup (the start of point-in-time recovery).
    #[serde(default)]
    pub base: bool,
    /// backup: the logical form (redis key export, vault KV export, qdrant scroll).
    #[serde(default)]
    pub logical: bool,
    /// backup: replicate afterwards (default: when `replicate_to` names tiers).
    #[serde(default)]
    pub replicate: Option<bool>,
    /// backup: prune the component afterwards (default true; without retention rules
    /// nothing is deleted).
    #[serde(default)]
    pub prune: Option<bool>,
    /// verify: decrypt and decompress too (default true).
    #[serde(default)]
    pub deep: Option<bool>,
    /// verify: only the newest `n` backups of each component on each tier (default 1;
    /// 0 for all).
    #[serde(default)]
    pub sample: Option<usize>,
    /// drill: `scratch` (a scratch directory, database or server; the default),
    /// `container` (a throwaway copy of the component's container) or `system` (every
    /// component).
    #[serde(default)]
    pub scenario: Option<String>,
    /// A healthchecks-style ping URL: `URL/start` when the job starts, `URL` when it
    /// succeeded, `URL/fail` when it failed, with the outcome as the body.
    #[serde(default)]
    pub ping: Option<Secret>,
    /// The longest a run may take (`2h`); a run that takes longer fails.
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Which drill a drill job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillScenario {
    /// [`Stack::drill`]: the latest backup into a scratch target.
    Scratch,
    /// [`Stack::drill_container`]: a throwaway copy of the component's container.
    Container,
    /// [`Stack::drill_system`]: every component.
    System,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "run", rename_all = "snake_case")]
pub enum JobKind {
    /// Back up a component, then replicate and prune it.
    Backup {
        /// The component.
        component: String,
        /// postgres: a base backup.
        base: bool,
        /// The logical form.
        logical: bool,
        /// Replicate afterwards.
        replicate: bool,
        /// Prune the component afterwards.
        prune: bool,
    },
    /// Verify backups.
    Verify {
        /// Only this component.
        component: Option<String>,
        /// Decrypt and decompress too.
        deep: bool,
        /// Only the newest `n` of each component on each tier.
        sample: Option<usize>,
    },
    /// A drill.
    Drill {
        /// The component (none for a system drill).
        component: Option<String>,
        /// Which drill.
        scenario: DrillScenario,
    },
    /// Apply retention.
    Prune {
        /// Only this component.
        component: Option<String>,
    },
    /// Copy what the replica tiers miss.
    Replicate,
}

impl JobKind {
    /// The component the job is about, if one.
    #[must_use]
    pub fn component(&self) -> Option<&str> {
        match self {
            Self::Backup { component, .. } => Some(component),
            Self::Verify { component, .. }
            | Self::Drill { component, .. }
            | Self::Prune { component } => component.as_deref(),
            Self::Replicate => None,
        }
    }

    /// In words: `backup db, replicate, prune`.
    #[must_use]
    pub fn describe(&self) -> String {
        let of = |c: &Option<String>| c.as_deref().unwrap_or("every component").to_owned();
        match self {
            Self::Backup {
                component,
                base,
                logical,
                replicate,
                prune,
            } => {
                let mut s = format!(
                    "{}backup {component}",
                    if *base {
                        "base "
                    } else if *logical {
                        "logical "
                    } else {
                        ""
                    }
                );
                if *replicate {
                    s.push_str(", replicate");
                }
                if *prune {
                    s.push_str(", prune");
                }
                s
            }
            Self::Verify {
                component,
                deep,
                sample,
            } => format!(
                "verify{} {}{}",
                if *deep { " --deep" } else { "" },
                of(component),
                sample.map_or(String::new(), |n| format!(" (newest {n} per tier)"))
            ),
            Self::Drill {
                component,
                scenario,
            } => match scenario {
                DrillScenario::System => "drill --scenario system".to_owned(),
                DrillScenario::Container => format!("drill --scenario container {}", of(component)),
                DrillScenario::Scratch => format!("drill {}", of(component)),
            },
            Self::Prune { component } => format!("prune {}", of(component)),
            Self::Replicate => "replicate".to_owned(),
        }
    }
}

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name (`[daemon.jobs.NAME]`, or the default's: `backup-db`, `verify`, ...).
    pub name: String,
    /// When it runs.
    pub schedule: Schedule,
    /// What it does.
    pub kind: JobKind,
    /// Its healthchecks-style ping URL.
    pub ping: Option<Secret>,
    /// The longest a run may take.
    pub timeout: Option<Duration>,
    /// One of the runbook's default jobs (not named in the config).
    pub default: bool,
}

/// The runbook's schedule for `config`'s components, as jobs (before `[daemon.jobs]`
/// replaces or disables any of them by name):
/// - `backup-NAME`: PostgreSQL hourly (`0 * * * *`), Redis every 6 hours (`0 */6 * * *`),
///   Qdrant, Vault, object storage and n8n daily (`0 2 * * *`), config files daily
///   (`0 1 * * *`); replicated when `replicate_to` names tiers, then pruned;
/// - `verify`: weekly (`0 3 * * 0`), `--deep`, the newest backup of each component per tier;
/// - `drill-NAME`: monthly (`0 4 1 * *`, the runbook's single-container test) for
///   components with a scratch target (files, postgres, redis, object storage); a
///   throwaway container copy when the component's tools run in its container;
/// - `drill-system`: quarterly (`0 5 1 1,4,7,10 *`, the runbook's full-system drill).
#[must_use]
pub fn default_jobs(config: &Config) -> Vec<Job> {
    let mut jobs = Vec::new();
    let schedule = |s: &str| s.parse::<Schedule>().ok();
    let replicate = !config.replicate_to.is_empty();
    for (name, c) in &config.components {
        let ty = ComponentType::of(c);
        let cron = match ty {
            ComponentType::Postgres => "0 * * * *",
            ComponentType::Redis => "0 */6 * * *",
            ComponentType::Files => "0 1 * * *",
            _ => "0 2 * * *",
        };
        if let Some(s) = schedule(cron) {
            jobs.push(Job {
                name: format!("backup-{name}"),
                schedule: s,
                kind: JobKind::Backup {
                    component: name.clone(),
                    base: false,
                    logical: false,
                    replicate,
                    prune: true,
                },
                ping: None,
                timeout: None,
                default: true,
            });
        }
        let drillable = matches!(
            ty,
            ComponentType::Files
                | ComponentType::Postgres
                | ComponentType::Redis
                | ComponentType::S3Bucket
        );
        if let (true, Some(s)) = (drillable, schedule("0 4 1 * *")) {
            let scenario = if matches!(config.runners.get(name), Some(RunnerConfig::Docker { .. }))
            {
                DrillScenario::Container
            } else {
                DrillScenario::Scratch
            };
            jobs.push(Job {
                name: format!("drill-{name}"),
                schedule: s,
                kind: JobKind::Drill {
                    component: Some(name.clone()),
                    scenario,
                },
                ping: None,
                timeout: None,
                default: true,
            });
        }
    }
    if config.components.is_empty() {
        return jobs;
    }
    if let Some(s) = schedule("0 3 * * 0") {
        jobs.push(Job {
            name: "verify".to_owned(),
            schedule: s,
            kind: JobKind::Verify {
                component: None,
                deep: true,
                sample: Some(1),
            },
            ping: None,
            timeout: None,
            default: true,
        });
    }
    if let Some(s) = schedule("0 5 1 1,4,7,10 *") {
        jobs.push(Job {
            name: "drill-system".to_owned(),
            schedule: s,
            kind: JobKind::Drill {
                component: None,
                scenario: DrillScenario::System,
            },
            ping: None,
            timeout: None,
            default: true,
        });
    }
    jobs
}

/// The jobs `config` schedules: the defaults ([`default_jobs`], unless `defaults = false`)
/// with `[daemon.jobs]` replacing those of the same name, adding the others and disabling
/// any whose cron is `off`. Sorted by name.
///
/// # Errors
/// A job that names an unknown component, an invalid cron expression, an unknown `run`, a
/// key that does not apply to the job, an invalid duration or URL — each naming
/// `daemon.jobs.NAME.key`.
pub fn jobs(config: &Config) -> Result<Vec<Job>> {
    let d = &config.daemon;
    let mut out: BTreeMap<String, Job> = BTreeMap::new();
    if d.defaults.unwrap_or(true) {
        for j in default_jobs(config) {
            out.insert(j.name.clone(), j);
        }
    }
    for (name, jc) in &d.jobs {
        let at = format!("daemon.jobs.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::bad_input(format!(
                "invalid job name {name:?}: letters, digits, '-', '_' and '.' only"
            ))
            .with_context("at", at));
        }
        match parse_job(config, name, jc, &at)? {
            Some(job) => {
                out.insert(name.clone(), job);
            }
            None => {
                out.remove(name);
            }
        }
    }
    Ok(out.into_values().collect())
}

/// One `[daemon.jobs.NAME]`; `None` when its cron is `off`.
fn parse_job(config: &Config, name: &str, jc: &JobConfig, at: &str) -> Result<Option<Job>> {
    let bad = |key: &str, msg: String| {
        Error::bad_input(msg)
            .with_context("at", format!("{at}.{key}"))
            .with_context("job", name)
    };
    // `cron = "off"` disables the job (a default one, typically) whatever else it says.
    if jc.cron.trim() == "off" {
        return Ok(None);
    }
    let run = jc.run.as_deref().unwrap_or("backup");
    // Keys that apply to one kind of job only.
    let only = |key: &str, set: bool, kinds: &[&str]| -> Result<()> {
        if set && !kinds.contains(&run) {
            return Err(bad(
                key,
                format!(
                    "{at}.{key} applies to {} jobs; this one runs {run}",
                    kinds.join(" and ")
                ),
            ));
        }
        Ok(())
    };
    only("base", jc.base, &["backup"])?;
    only("logical", jc.logical, &["backup"])?;
    only("replicate", jc.replicate.is_some(), &["backup"])?;
    only("prune", jc.prune.is_some(), &["backup"])?;
    only("deep", jc.deep.is_some(), &["verify"])?;
    only("sample", jc.sample.is_some(), &["verify"])?;
    only("scenario", jc.scenario.is_some(), &["drill"])?;
    only(
        "component",
        jc.component.is_some(),
        &["backup", "verify", "drill", "prune"],
    )?;
    if let Some(c) = &jc.component {
        config
            .component(c)
            .map_err(|e| e.with_context("at", format!("{at}.component")))?;
    }
    let ty = jc
        .component
        .as_deref()
        .and_then(|c| config.components.get(c))
        .map(ComponentType::of);
    let kind = match run {
        "backup" => {
            let Some(component) = jc.component.clone() else {
                return Err(bad(
                    "component",
                    format!("{at} runs a backup and needs component = \"NAME\""),
                ));
            };
            if jc.base && ty != Some(ComponentType::Postgres) {
                return Err(bad(
                    "base",
                    format!("{at}.base applies to postgres components; {component} is not one"),
                ));
            }
            if jc.replicate == Some(true) && config.replicate_to.is_empty() {
                return Err(bad(
                    "replicate",
                    format!("{at}.replicate is true but replicate_to names no tier"),
                ));
            }
            JobKind::Backup {
                component,
                base: jc.base,
                logical: jc.logical,
                replicate: jc.replicate.unwrap_or(!config.replicate_to.is_empty()),
                prune: jc.prune.unwrap_or(true),
            }
        }
        "verify" => JobKind::Verify {
            component: jc.component.clone(),
            deep: jc.deep.unwrap_or(true),
            sample: match jc.sample {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(1),
            },
        },
        "drill" => {
            let scenario = match jc.scenario.as_deref().unwrap_or("scratch") {
                "scratch" => DrillScenario::Scratch,
                "container" => DrillScenario::Container,
                "system" => DrillScenario::System,
                other => {
                    return Err(bad(
                        "scenario",
                        format!(
                            "{at}.scenario {other:?} is not a drill: scratch, container or system"
                        ),
                    ));
                }
            };
            if scenario != DrillScenario::System && jc.component.is_none() {
                return Err(bad(
                    "component",
                    format!("{at} drills one component and needs component = \"NAME\""),
                ));
            }
            if scenario == DrillScenario::System && jc.component.is_some() {
                return Err(bad(
                    "component",
                    format!("{at} is a system drill (every component): remove component"),
                ));
            }
            JobKind::Drill {
                component: jc.component.clone(),
                scenario,
            }
        }
        "prune" => JobKind::Prune {
            component: jc.component.clone(),
        },
        "replicate" => {
            if config.replicate_to.is_empty() {
                return Err(bad(
                    "run",
                    format!("{at} replicates but replicate_to names no tier"),
                ));
            }
            JobKind::Replicate
        }
        other => {
            return Err(bad(
                "run",
                format!(
                    "{at}.run {other:?} is not a job: backup, verify, drill, prune or replicate"
                ),
            ));
        }
    };
    if let Some(p) = &jc.ping {
        check_url(p).map_err(|why| bad("ping", format!("{at}.ping {why}")))?;
    }
    let timeout = jc
        .timeout
        .as_deref()
        .map(|t| duration(t, &format!("{at}.timeout")))
        .transpose()?;
    let schedule: Schedule = jc.cron.parse().map_err(|e: Error| {
        e.with_context("at", format!("{at}.cron"))
            .with_context("job", name)
    })?;
    Ok(Some(Job {
        name: name.to_owned(),
        schedule,
        kind,
        ping: jc.ping.clone(),
        timeout,
        default: false,
    }))
}

/// A URL's scheme and host, never its text (it may carry a token).
fn check_url(url: &Secret) -> std::result::Result<(), String> {
    let u = url.expose();
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| "is not an http:// or https:// URL".to_owned())?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".to_owned());
    }
    Ok(())
}

fn duration(text: &str, at: &str) -> Result<Duration> {
    zdr_core::retention::parse_duration(text).map_err(|e| e.with_context("at", at.to_owned()))
}

/// Check `[daemon]` (called by the config's own check).
pub(crate) fn check(config: &Config) -> Result<()> {
    DaemonOptions::from_config(&config.daemon)?;
    jobs(config)?;
    Ok(())
}

/// How a [`Daemon`] runs (from `[daemon]`, see [`DaemonOptions::from_config`]).
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Where `/metrics` and `/healthz` are served.
    pub listen: Option<SocketAddr>,
    /// The webhook alerts go to.
    pub webhook: Option<Secret>,
    /// Attempts after the first.
    pub webhook_retries: u32,
    /// The wait before the first retry (doubling after each).
    pub retry_delay: Duration,
    /// The largest start delay.
    pub jitter: Duration,
    /// The state file.
    pub state_file: PathBuf,
    /// How often objectives are checked between jobs.
    pub status_every: Duration,
    /// How long running jobs may take to finish after the shutdown signal.
    pub shutdown_grace: Duration,
    /// The textfile-collector file.
    pub textfile: Option<PathBuf>,
}

impl DaemonOptions {
    /// The options `[daemon]` sets, with the defaults for the rest.
    ///
    /// # Errors
    /// An invalid address, duration or URL, naming the key.
    pub fn from_config(d: &DaemonConfig) -> Result<Self> {
        let listen = d
            .listen
            .as_deref()
            .map(|l| {
                l.parse::<SocketAddr>().map_err(|_| {
                    Error::bad_input(format!(
                        "daemon.listen {l:?} is not an address: HOST:PORT such as 127.0.0.1:9187"
                    ))
                    .with_context("at", "daemon.listen")
                })
            })
            .transpose()?;
        if let Some(w) = &d.webhook {
            check_url(w).map_err(|why| {
                Error::bad_input(format!("daemon.webhook {why}"))
                    .with_context("at", "daemon.webhook")
            })?;
        }
        let dur = |v: &Option<String>, key: &str, default: Duration| -> Result<Duration> {
            v.as_deref()
                .map_or(Ok(default), |t| duration(t, &format!("daemon.{key}")))
        };
        let status_every = dur(&d.status_every, "status_every", Duration::from_secs(300))?;
        if status_every.is_zero() {
            return Err(
                Error::bad_input("daemon.status_every must be longer than 0s")
                    .with_context("at", "daemon.status_every"),
            );
        }
        Ok(Self {
            listen,
            webhook: d.webhook.clone(),
            webhook_retries: d.webhook_retries.unwrap_or(3),
            retry_delay: Duration::from_secs(1),
            jitter: dur(&d.jitter, "jitter", Duration::from_secs(30))?,
            state_file: d.state_file.clone().unwrap_or_else(default_state_file),
            status_every,
            shutdown_grace: dur(
                &d.shutdown_grace,
                "shutdown_grace",
                Duration::from_secs(300),
            )?,
            textfile: d.textfile.clone(),
        })
    }
}

fn default_state_file() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd's StateDirectory= may list several, separated by ':'.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return PathBuf::from(first).join("daemon.json");
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("zdr/daemon.json");
    }
    env("HOME")
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join(".local/state/zdr/daemon.json")
}

/// The time, and waiting for a time: [`SystemClock`] in production, [`ManualClock`] in
/// tests.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Return at `t` (at once when it has passed).
    async fn sleep_until(&self, t: DateTime<Utc>);
}

/// The system's clock. Long waits are taken in steps of at most a minute, so a clock
/// change or a suspended host delays a job by a minute at most.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        loop {
            let left = (t - Utc::now()).to_std().unwrap_or_default();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
        }
    }
}

/// A clock that moves only when told ([`ManualClock::advance`], [`ManualClock::set`]):
/// schedules over days run in milliseconds.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: watch::Sender::new(start),
        }
    }

    /// Move forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|n| *n += chrono::Duration::from_std(by).unwrap_or_default());
    }

    /// Move to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        self.now.send_replace(t);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        let mut rx = self.now.subscribe();
        let _ = rx.wait_for(|n| *n >= t).await;
    }
}

/// One run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct JobRun {
    /// The job.
    pub job: String,
    /// What it did, in words.
    pub what: String,
    /// When it started (the daemon's clock).
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub seconds: f64,
    /// It succeeded.
    pub ok: bool,
    /// Its outcome in words (the error when it failed).
    pub message: String,
    /// A drill's recovery time, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// The alerts it caused.
    pub alerts: Vec<AlertKind>,
}

/// What a running daemon reports (see [`Daemon::subscribe`]).
#[derive(Debug, Clone)]
pub enum DaemonEvent {
    /// `/metrics` is served at this address.
    Listening(SocketAddr),
    /// A job's next run.
    Scheduled {
        /// The job.
        job: String,
        /// When it will start (jitter included).
        at: DateTime<Utc>,
        /// A catch-up run for missed ones.
        catch_up: bool,
    },
    /// A job started.
    Started {
        /// The job.
        job: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A job ended.
    Finished(JobRun),
    /// A job's time came while its previous run was still going.
    Skipped {
        /// The job.
        job: String,
        /// The scheduled time skipped.
        at: DateTime<Utc>,
    },
    /// The objectives were checked: the components whose objective is missed.
    StatusChecked {
        /// Components with a missed objective.
        breached: Vec<String>,
    },
    /// An alert was sent (or is being sent).
    Alerted(Alert),
    /// The shutdown signal came; running jobs are finishing.
    Stopping {
        /// The running jobs.
        running: Vec<String>,
    },
}

/// The runs recorded in the state file of `config`'s daemon (`zdr daemon`, `zdr run-once`),
/// of the jobs `config` schedules; `None` when nothing was recorded yet. What `zdr status`
/// shows beside the objectives.
///
/// # Errors
/// An invalid `[daemon]` section; an unreadable or invalid state file.
pub async fn recorded_runs(config: &Config) -> Result<Option<BTreeMap<String, JobState>>> {
    let options = DaemonOptions::from_config(&config.daemon)?;
    if !options.state_file.exists() {
        return Ok(None);
    }
    let names: BTreeSet<String> = jobs(config)?.into_iter().map(|j| j.name).collect();
    let state = StateFile::new(options.state_file).read().await?;
    Ok(Some(
        state
            .jobs
            .into_iter()
            .filter(|(name, _)| names.contains(name))
            .collect(),
    ))
}

/// How [`Daemon::run`] ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonExit {
    /// Jobs still running when the grace period ended, abandoned.
    pub abandoned: Vec<String>,
}

/// What `/metrics` serves, shared with the HTTP server.
#[derive(Default)]
struct Shared {
    status_text: String,
    state: DaemonState,
    running: BTreeSet<String>,
    next: BTreeMap<String, DateTime<Utc>>,
}

/// The scheduler. See the [module docs](self).
pub struct Daemon {
    stack: Arc<Stack>,
    jobs: Vec<Job>,
    options: DaemonOptions,
    clock: Arc<dyn Clock>,
    state: StateFile,
    notifier: Notifier,
    progress: Progress,
    events: broadcast::Sender<DaemonEvent>,
    shared: Arc<Mutex<Shared>>,
    host: String,
}

/// A job's next slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    scheduled: DateTime<Utc>,
    due: DateTime<Utc>,
}

impl Daemon {
    /// A daemon for `stack`, with the jobs and options of its `[daemon]` config and the
    /// system clock. Progress lines and warnings go to `progress`.
    ///
    /// # Errors
    /// An invalid `[daemon]` section (also refused when the config is loaded).
    pub fn new(stack: Arc<Stack>, progress: Progress) -> Result<Self> {
        let options = DaemonOptions::from_config(&stack.config().daemon)?;
        let jobs = jobs(stack.config())?;
        Self::with_options(stack, jobs, options, progress)
    }

    /// A daemon running `jobs` with `options`.
    ///
    /// # Errors
    /// The HTTP client for alerts cannot be made.
    pub fn with_options(
        stack: Arc<Stack>,
        jobs: Vec<Job>,
        options: DaemonOptions,
        progress: Progress,
    ) -> Result<Self> {
        let notifier = Notifier::new(
            options.webhook.clone(),
            jobs.iter().any(|j| j.ping.is_some()),
            options.webhook_retries,
            options.retry_delay,
            progress.clone(),
        )?;
        Ok(Self {
            stack,
            jobs,
            state: StateFile::new(options.state_file.clone()),
            options,
            clock: Arc::new(SystemClock),
            notifier,
            progress,
            events: broadcast::channel(1024).0,
            shared: Arc::new(Mutex::new(Shared::default())),
            host: zdr_storage::host_name(),
        })
    }

    /// Use `clock` instead of the system's.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The jobs, by name.
    #[must_use]
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &DaemonOptions {
        &self.options
    }

    /// Events from now on (a receiver that falls behind by more than 1024 misses the
    /// oldest).
    #[must_use]
    pub fn subscribe(&self) -> broadcast::Receiver<DaemonEvent> {
        self.events.subscribe()
    }

    /// The state file's contents (empty before any run).
    ///
    /// # Errors
    /// An unreadable or invalid state file.
    pub async fn state(&self) -> Result<DaemonState> {
        self.state.read().await
    }

    fn emit(&self, e: DaemonEvent) {
        let _ = self.events.send(e);
    }

    fn job(&self, name: &str) -> Result<&Job> {
        self.jobs.iter().find(|j| j.name == name).ok_or_else(|| {
            Error::bad_input(format!(
                "unknown job {name:?}; the config schedules {}",
                if self.jobs.is_empty() {
                    "no jobs".to_owned()
                } else {
                    self.jobs
                        .iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
            .with_context("job", name)
            .with_hint("zdr jobs lists them")
        })
    }

    /// Run the job `name` once, as the daemon would — the same steps, pings, state and
    /// alerts — and wait for its alerts to be delivered (or given up).
    ///
    /// # Errors
    /// An unknown job. The job's own failure is in [`JobRun::ok`].
    pub async fn run_once(&self, name: &str) -> Result<JobRun> {
        let job = self.job(name)?.clone();
        let run = self.run_job(&job).await;
        #[cfg(feature = "postgres")]
        self.check_status().await;
        self.notifier.flush(Duration::from_secs(60)).await;
        Ok(run)
    }

    /// The start-up slot of every job: one catch-up run for a job that missed runs while
    /// the daemon was down (or a backup job whose component has no backup yet), else its
    /// next time.
    async fn initial_slots(&self, state: &DaemonState, now: DateTime<Utc>) -> Vec<Slot> {
        // A backup job without a record: the newest backup of its component tells.
        let needs_catalog = self
            .jobs
            .iter()
            .any(|j| matches!(j.kind, JobKind::Backup { .. }) && !state.jobs.contains_key(&j.name));
        let catalog = if needs_catalog {
            match async {
                self.stack
                    .repository(&self.stack.config().primary)?
                    .catalog()
                    .await
            }
            .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    self.progress.warn(format!(
                        "cannot read the primary tier's catalog for catch-up runs: {e}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        self.jobs
            .iter()
            .map(|job| {
                let recorded = state.jobs.get(&job.name).and_then(|s| s.last_started);
                let (last, never) = match (&job.kind, recorded, &catalog) {
                    (JobKind::Backup { component, .. }, None, Some(catalog)) => {
                        let newest = Component::new(component.clone())
                            .ok()
                            .and_then(|c| catalog.latest(&c).map(|m| m.started_at));
                        (newest, newest.is_none())
                    }
                    _ => (recorded, false),
                };
                let missed = never
                    || last
                        .and_then(|l| job.schedule.next_after(l))
                        .is_some_and(|n| n <= now);
                if missed {
                    Slot {
                        scheduled: now,
                        due: now + self.jitter(&job.name, now),
                    }
                } else {
                    self.slot_after(job, now)
                }
            })
            .collect()
    }

    /// The first slot of `job` after `t`.
    fn slot_after(&self, job: &Job, t: DateTime<Utc>) -> Slot {
        // A schedule that fires within eight years was checked when it was parsed.
        let scheduled = job
            .schedule
            .next_after(t)
            .unwrap_or_else(|| t + chrono::Duration::days(365 * 8));
        Slot {
            scheduled,
            due: scheduled + self.jitter(&job.name, scheduled),
        }
    }

    /// The start delay of `job` at `at`: the same for the same job, time and host.
    fn jitter(&self, job: &str, at: DateTime<Utc>) -> chrono::Duration {
        let max = u64::try_from(self.options.jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return chrono::Duration::zero();
        }
        let mut h = std::hash::DefaultHasher::new();
        (&self.host, job, at.timestamp()).hash(&mut h);
        chrono::Duration::milliseconds(i64::try_from(h.finish() % max).unwrap_or(0))
    }

    /// Run the schedule until `shutdown` resolves; then let running jobs finish for
    /// `shutdown_grace` and abandon the rest.
    ///
    /// # Errors
    /// The metrics address cannot be bound (in use, not permitted) — before any job runs.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> Result<DaemonExit> {
        let server = match self.options.listen {
            Some(addr) => Some(self.serve(addr).await?),
            None => None,
        };
        let exit = self.schedule(shutdown).await;
        if let Some(s) = server {
            s.abort();
        }
        self.notifier.flush(Duration::from_secs(10)).await;
        Ok(exit)
    }

    async fn schedule(&self, shutdown: impl Future<Output = ()>) -> DaemonExit {
        tokio::pin!(shutdown);
        let now = self.clock.now();
        let state = match self.state.read().await {
            Ok(s) => s,
            Err(e) => {
                self.progress
                    .warn(format!("{e}; starting without it (no catch-up runs)"));
                DaemonState::default()
            }
        };
        let mut slots = self.initial_slots(&state, now).await;
        for (job, slot) in self.jobs.iter().zip(&slots) {
            self.emit(DaemonEvent::Scheduled {
                job: job.name.clone(),
                at: slot.due,
                catch_up: slot.scheduled == now,
            });
        }
        self.publish_next(&slots);
        self.lock_shared().state = state;
        // The running jobs, polled by this task (the library's operations are not all
        // `Send`, and need not be: their heavy work runs on tokio's blocking threads).
        // The objectives' check runs among them too (it reads every tier: it must not hold up
        // a running backup), one at a time; it ends with `None`.
        let mut tasks: FuturesUnordered<Pin<Box<dyn Future<Output = Option<JobRun>> + '_>>> =
            FuturesUnordered::new();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let mut next_status = now;
        let mut checking = false;
        loop {
            let now = self.clock.now();
            #[cfg(feature = "postgres")]
            if !checking && now >= next_status {
                checking = true;
                tasks.push(Box::pin(async {
                    self.check_status().await;
                    None
                }));
                next_status =
                    now + chrono::Duration::from_std(self.options.status_every).unwrap_or_default();
            }
            for (i, job) in self.jobs.iter().enumerate() {
                if slots[i].due > now {
                    continue;
                }
                if running.contains(&job.name) {
                    self.progress.warn(format!(
                        "job {} is still running: its run of {} is skipped",
                        job.name, slots[i].scheduled
                    ));
                    self.emit(DaemonEvent::Skipped {
                        job: job.name.clone(),
                        at: slots[i].scheduled,
                    });
                } else {
                    running.insert(job.name.clone());
                    tasks.push(Box::pin(async { Some(self.run_job(job).await) }));
                }
                // The next slot; slots missed while this one waited are not made up.
                let mut next = self.slot_after(job, slots[i].scheduled);
                if next.due <= now {
                    next = self.slot_after(job, now);
                }
                slots[i] = next;
                self.emit(DaemonEvent::Scheduled {
                    job: job.name.clone(),
                    at: next.due,
                    catch_up: false,
                });
                self.publish_next(&slots);
            }
            let mut wake = slots
                .iter()
                .map(|s| s.due)
                .min()
                .unwrap_or(now + chrono::Duration::days(1));
            if cfg!(feature = "postgres") && !checking {
                wake = wake.min(next_status);
            }
            tokio::select! {
                () = self.clock.sleep_until(wake) => {}
                Some(done) = tasks.next(), if !tasks.is_empty() => match done {
                    Some(run) => {
                        running.remove(&run.job);
                        // A job changes what the status reports: check it now (or right
                        // after the check under way).
                        next_status = self.clock.now();
                    }
                    None => checking = false,
                },
                () = &mut shutdown => break,
            }
        }
        let names: Vec<String> = running.iter().cloned().collect();
        self.emit(DaemonEvent::Stopping {
            running: names.clone(),
        });
        if !names.is_empty() {
            self.progress.info(format!(
                "stopping: waiting up to {} s for {}",
                self.options.shutdown_grace.as_secs(),
                names.join(", ")
            ));
        }
        let drained = tokio::time::timeout(self.options.shutdown_grace, async {
            while let Some(done) = tasks.next().await {
                if let Some(run) = done {
                    running.remove(&run.job);
                }
            }
        })
        .await;
        let mut exit = DaemonExit::default();
        if drained.is_err() {
            exit.abandoned = running.iter().cloned().collect();
            // Dropping the runs stops them where they stand.
            drop(tasks);
            for j in &exit.abandoned {
                self.lock_shared().running.remove(j);
                self.progress.warn(format!(
                    "job {j} did not finish within the shutdown grace period and was abandoned (nothing partial is listed as a backup)"
                ));
            }
        }
        exit
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish_next(&self, slots: &[Slot]) {
        let mut shared = self.lock_shared();
        shared.next = self
            .jobs
            .iter()
            .zip(slots)
            .map(|(j, s)| (j.name.clone(), s.due))
            .collect();
    }

    /// Run `job` once: ping, run, record, alert.
    async fn run_job(&self, job: &Job) -> JobRun {
        let started_at = self.clock.now();
        let what = job.kind.describe();
        self.lock_shared().running.insert(job.name.clone());
        self.emit(DaemonEvent::Started {
            job: job.name.clone(),
            at: started_at,
        });
        self.progress
            .info(format!("job {} started: {what}", job.name));
        if let Some(p) = &job.ping {
            self.notifier
                .ping(p, "/start", String::new(), &job.name)
                .await;
        }
        let t = Instant::now();
        let result = match job.timeout {
            Some(limit) => tokio::time::timeout(limit, self.execute(job))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::new(
                        ErrorKind::Unexpected,
                        format!(
                            "job {} took longer than its timeout of {} s and was stopped",
                            job.name,
                            limit.as_secs()
                        ),
                    ))
                }),
            None => self.execute(job).await,
        };
        let seconds = t.elapsed().as_secs_f64();
        let (ok, message, rto_seconds) = match result {
            Ok((m, rto)) => (true, m, rto),
            Err(e) => (false, e.to_string(), None),
        };
        let finished_at = self.clock.now();
        let name = job.name.clone();
        let msg = message.clone();
        let update = self
            .state
            .update(move |s| {
                let j = s.jobs.entry(name).or_default();
                let was_failing = j.failing;
                j.last_started = Some(started_at);
                j.last_finished = Some(finished_at);
                j.last_duration_seconds = Some(seconds);
                j.runs += 1;
                if ok {
                    j.last_success = Some(finished_at);
                    j.last_error = None;
                } else {
                    j.last_failure = Some(finished_at);
                    j.last_error = Some(msg);
                    j.failures += 1;
                }
                if rto_seconds.is_some() {
                    j.drill_rto_seconds = rto_seconds;
                }
                j.failing = !ok;
                (was_failing, s.clone())
            })
            .await;
        let was_failing = match update {
            Ok((was, state)) => {
                self.lock_shared().state = state;
                Some(was)
            }
            Err(e) => {
                self.progress
                    .warn(format!("cannot record the run of job {}: {e}", job.name));
                None
            }
        };
        self.lock_shared().running.remove(&job.name);
        let drill = matches!(job.kind, JobKind::Drill { .. });
        // Without a record of the last outcome, a failure is still alerted.
        let alert = match (was_failing.unwrap_or(false), ok) {
            (false, false) if drill => Some(AlertKind::DrillFailed),
            (false, false) => Some(AlertKind::JobFailed),
            (true, true) if drill => Some(AlertKind::DrillRecovered),
            (true, true) => Some(AlertKind::JobRecovered),
            _ => None,
        };
        if ok {
            self.progress.info(format!(
                "job {} finished in {seconds:.1} s: {message}",
                job.name
            ));
        } else {
            self.progress.warn(format!(
                "job {} failed after {seconds:.1} s: {message}",
                job.name
            ));
        }
        if let Some(p) = &job.ping {
            let suffix = if ok { "" } else { "/fail" };
            self.notifier
                .ping(p, suffix, format!("{what}: {message}"), &job.name)
                .await;
        }
        let mut alerts = Vec::new();
        if let Some(kind) = alert {
            alerts.push(kind);
            self.send_alert(Alert {
                event: kind,
                job: Some(job.name.clone()),
                component: job.kind.component().map(str::to_owned),
                message: if ok {
                    format!("job {} ({what}) succeeded again: {message}", job.name)
                } else {
                    format!("job {} ({what}) failed: {message}", job.name)
                },
                host: self.host.clone(),
                at: finished_at,
            })
            .await;
        }
        let run = JobRun {
            job: job.name.clone(),
            what,
            started_at,
            seconds,
            ok,
            message,
            rto_seconds,
            alerts,
        };
        self.emit(DaemonEvent::Finished(run.clone()));
        run
    }

    async fn send_alert(&self, alert: Alert) {
        self.emit(DaemonEvent::Alerted(alert.clone()));
        self.notifier.alert(alert).await;
    }

    /// What the job does; the summary and a drill's RTO.
    async fn execute(&self, job: &Job) -> Result<(String, Option<f64>)> {
        let progress = &self.progress;
        let stack = &self.stack;
        match &job.kind {
            JobKind::Backup {
                component,
                base,
                logical,
                replicate,
                prune,
            } => {
                let report = stack
                    .backup(
                        component,
                        &BackupOptions {
                            replicate: *replicate,
                            base: *base,
                            logical: *logical,
                            ..BackupOptions::default()
                        },
                        progress,
                    )
                    .await?;
                let m = &report.backup;
                let mut summary = format!(
                    "backup {} of {component}: {} stored on {} in {:.1} s",
                    m.id,
                    crate::human_bytes(m.artifacts.iter().map(|a| a.size).sum()),
                    report.tier,
                    report.seconds
                );
                if let Some(r) = &report.replication {
                    if !r.is_ok() {
                        return Err(Error::new(
                            ErrorKind::Unexpected,
                            format!("{summary}; replication failed: {}", replication_problems(r)),
                        )
                        .with_context("component", component));
                    }
                    summary.push_str("; replicated");
                }
                if *prune {
                    let r = stack
                        .prune(
                            &PruneOptions {
                                component: Some(component.clone()),
                                ..PruneOptions::default()
                            },
                            progress,
                        )
                        .await?;
                    let deleted: usize = r
                        .tiers
                        .iter()
                        .flat_map(|t| &t.backups)
                        .filter(|i| i.action == crate::prune::PruneAction::Deleted)
                        .count();
                    if !r.is_ok() {
                        return Err(Error::new(
                            ErrorKind::Unexpected,
                            format!("{summary}; pruning failed: {}", prune_problems(&r)),
                        )
                        .with_context("component", component));
                    }
                    summary.push_str(&format!("; pruned {deleted}"));
                }
                Ok((summary, None))
            }
            JobKind::Verify {
                component,
                deep,
                sample,
            } => {
                let run = stack
                    .verify_newest(None, component.as_deref(), *deep, *sample, progress)
                    .await?;
                if run.is_ok() {
                    Ok((format!("{} backups intact", run.intact.len()), None))
                } else {
                    Err(Error::new(
                        ErrorKind::Integrity,
                        format!(
                            "{} backups intact, {} failed: {}",
                            run.intact.len(),
                            run.failures.len(),
                            run.failures
                                .iter()
                                .take(5)
                                .map(|p| format!(
                                    "{}{}: {}",
                                    p.tier.as_deref().map_or(String::new(), |t| format!("{t}/")),
                                    p.backup
                                        .as_deref()
                                        .or(p.component.as_deref())
                                        .unwrap_or("-"),
                                    p.error
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    ))
                }
            }
            JobKind::Drill {
                component,
                scenario,
            } => {
                let options = crate::recover::ContainerRecoveryOptions::default();
                let name = component.as_deref().unwrap_or_default();
                let (ok, rto, text) = match scenario {
                    DrillScenario::Scratch => {
                        let r = stack.drill(name, progress).await?;
                        (
                            r.is_ok(),
                            r.rto_seconds,
                            format!(
                                "drill of {name}: backup {} restored into a scratch target, {} items, verification {}",
                                r.backup.id,
                                r.items,
                                if r.is_ok() { "passed" } else { "FAILED" }
                            ),
                        )
                    }
                    DrillScenario::Container => {
                        let r = stack.drill_container(name, &options, progress).await?;
                        (
                            r.ok,
                            r.rto_seconds,
                            format!(
                                "container drill of {name}: {}",
                                r.error
                                    .as_deref()
                                    .unwrap_or("restored and verified in a throwaway copy")
                            ),
                        )
                    }
                    DrillScenario::System => {
                        let r = stack.drill_system(&options, progress).await?;
                        (r.ok, r.rto_seconds, format!("system drill {}", r.id))
                    }
                };
                if ok {
                    Ok((format!("{text} (RTO {rto:.1} s)"), Some(rto)))
                } else {
                    Err(Error::new(
                        ErrorKind::Integrity,
                        format!("{text} (RTO {rto:.1} s)"),
                    ))
                }
            }
            JobKind::Prune { component } => {
                let r = stack
                    .prune(
                        &PruneOptions {
                            component: component.clone(),
                            ..PruneOptions::default()
                        },
                        progress,
                    )
                    .await?;
                if r.is_ok() {
                    let deleted = r
                        .tiers
                        .iter()
                        .flat_map(|t| &t.backups)
                        .filter(|i| i.action == crate::prune::PruneAction::Deleted)
                        .count();
                    Ok((format!("pruned {deleted} backups"), None))
                } else {
                    Err(Error::new(ErrorKind::Unexpected, prune_problems(&r)))
                }
            }
            JobKind::Replicate => {
                let r = stack.replicate(None, progress).await?;
                if r.is_ok() {
                    Ok(("replicated".to_owned(), None))
                } else {
                    Err(Error::new(ErrorKind::Unexpected, replication_problems(&r)))
                }
            }
        }
    }

    /// Check every component's objective: metrics, textfile, and an alert for each
    /// component whose objective became missed or met again.
    #[cfg(feature = "postgres")]
    async fn check_status(&self) {
        let report = match self.stack.status(None).await {
            Ok(r) => r,
            Err(e) => {
                self.progress
                    .warn(format!("cannot check the recovery point objectives: {e}"));
                return;
            }
        };
        let text = crate::metrics::prometheus_text(&report);
        self.lock_shared().status_text.clone_from(&text);
        if let Some(path) = &self.options.textfile {
            let p = path.clone();
            let r = report.clone();
            let written =
                tokio::task::spawn_blocking(move || crate::metrics::write_textfile(&r, &p)).await;
            if let Ok(Err(e)) = written {
                self.progress
                    .warn(format!("cannot write the metrics file: {e}"));
            }
        }
        let now: BTreeMap<String, (bool, String)> = report
            .components
            .iter()
            .map(|c| {
                let why = match (c.recovery_point_age_seconds, c.rpo_target_seconds) {
                    (Some(age), Some(target)) => format!(
                        "the newest recovery point of {} is {age} s old; the objective is {target} s",
                        c.component
                    ),
                    (None, Some(target)) => format!(
                        "{} has no backup on the primary tier; the objective is {target} s",
                        c.component
                    ),
                    _ => String::new(),
                };
                (c.component.clone(), (c.rpo_breached, why))
            })
            .collect();
        let breached: Vec<String> = now
            .iter()
            .filter(|(_, (b, _))| *b)
            .map(|(c, _)| c.clone())
            .collect();
        let current = now.clone();
        let changes = self
            .state
            .update(move |s| {
                let mut changes = Vec::new();
                for (c, (b, why)) in current {
                    let before = s.rpo_breached.insert(c.clone(), b).unwrap_or(false);
                    if before != b {
                        changes.push((c, b, why));
                    }
                }
                (changes, s.clone())
            })
            .await;
        self.emit(DaemonEvent::StatusChecked { breached });
        let changes = match changes {
            Ok((c, state)) => {
                self.lock_shared().state = state;
                c
            }
            Err(e) => {
                self.progress
                    .warn(format!("cannot record the objectives' state: {e}"));
                return;
            }
        };
        for (component, breached, why) in changes {
            let at = self.clock.now();
            self.send_alert(Alert {
                event: if breached {
                    AlertKind::RpoBreached
                } else {
                    AlertKind::RpoRecovered
                },
                job: None,
                message: if breached {
                    format!("recovery point objective of {component} missed: {why}")
                } else {
                    format!("recovery point objective of {component} met again: {why}")
                },
                component: Some(component),
                host: self.host.clone(),
                at,
            })
            .await;
        }
    }

    /// The Prometheus text of `/metrics`: the objectives' metrics of the last check and
    /// every job's.
    #[must_use]
    pub fn metrics_text(&self) -> String {
        let shared = self.lock_shared();
        let mut out = shared.status_text.clone();
        let mut family = |name: &str, help: &str, samples: Vec<(String, f64)>| {
            use std::fmt::Write as _;
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (job, v) in samples {
                let _ = writeln!(out, "{name}{{job=\"{}\"}} {v}", escape(&job));
            }
        };
        let per = |f: &dyn Fn(&str, Option<&JobState>) -> Option<f64>| -> Vec<(String, f64)> {
            self.jobs
                .iter()
                .filter_map(|j| {
                    f(&j.name, shared.state.jobs.get(&j.name)).map(|v| (j.name.clone(), v))
                })
                .collect()
        };
        #[allow(clippy::cast_precision_loss)]
        let ts = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp() as f64);
        family(
            "zdr_job_last_success_timestamp_seconds",
            "When the job last succeeded (Unix time).",
            per(&|_, s| ts(s.and_then(|s| s.last_success))),
        );
        family(
            "zdr_job_last_failure_timestamp_seconds",
            "When the job last failed (Unix time).",
            per(&|_, s| ts(s.and_then(|s| s.last_failure))),
        );
        family(
            "zdr_job_last_duration_seconds",
            "How long the job's last run took.",
            per(&|_, s| s.and_then(|s| s.last_duration_seconds)),
        );
        family(
            "zdr_job_failing",
            "1 when the job's last run failed.",
            per(&|_, s| s.map(|s| if s.failing { 1.0 } else { 0.0 })),
        );
        #[allow(clippy::cast_precision_loss)]
        family(
            "zdr_job_runs_total",
            "Runs of the job ended (as recorded in the state file).",
            per(&|_, s| s.map(|s| s.runs as f64)),
        );
        family(
            "zdr_job_running",
            "1 while the job runs.",
            per(&|n, _| Some(if shared.running.contains(n) { 1.0 } else { 0.0 })),
        );
        family(
            "zdr_job_next_run_timestamp_seconds",
            "When the job runs next (Unix time).",
            per(&|n, _| ts(shared.next.get(n).copied())),
        );
        family(
            "zdr_drill_rto_seconds",
            "The recovery time of the job's last drill.",
            per(&|_, s| s.and_then(|s| s.drill_rto_seconds)),
        );
        out
    }

    /// Serve `/metrics` and `/healthz` on `addr`.
    async fn serve(self: &Arc<Self>, addr: SocketAddr) -> Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::bad_input(format!("cannot serve metrics on {addr}: {e}"))
                .with_context("at", "daemon.listen")
                .with_hint(if e.kind() == std::io::ErrorKind::AddrInUse {
                    "another process listens there: choose another daemon.listen"
                } else {
                    "check daemon.listen"
                })
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        let this = Arc::clone(self);
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let this = Arc::clone(&this);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            this.metrics_text(),
                        )
                    }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        let progress = self.progress.clone();
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                progress.warn(format!("the metrics server stopped: {e}"));
            }
        });
        self.progress
            .info(format!("serving /metrics on http://{bound}"));
        self.emit(DaemonEvent::Listening(bound));
        Ok(handle)
    }

    /// Each job with its next time after now and its recorded state (`zdr jobs`).
    ///
    /// # Errors
    /// An unreadable state file.
    pub async fn overview(&self) -> Result<Vec<JobOverview>> {
        let state = self.state.read().await?;
        let now = self.clock.now();
        Ok(self
            .jobs
            .iter()
            .map(|j| JobOverview {
                job: j.name.clone(),
                what: j.kind.describe(),
                cron: j.schedule.to_string(),
                default: j.default,
                next_run: j.schedule.next_after(now),
                ping: j.ping.is_some(),
                state: state.jobs.get(&j.name).cloned(),
            })
            .collect())
    }
}

/// One job as `zdr jobs` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobOverview {
    /// The job.
    pub job: String,
    /// What it does.
    pub what: String,
    /// Its cron expression.
    pub cron: String,
    /// One of the runbook's defaults.
    pub default: bool,
    /// Its next scheduled time (jitter not included).
    pub next_run: Option<DateTime<Utc>>,
    /// It pings a URL.
    pub ping: bool,
    /// Its recorded runs.
    pub state: Option<JobState>,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn replication_problems(r: &crate::ReplicationRun) -> String {
    report_errors(r, "see zdr replicate")
}

fn prune_problems(r: &crate::prune::PruneReport) -> String {
    report_errors(r, "see zdr prune --dry-run")
}

/// The first five `"error"` strings anywhere in a report, joined; `otherwise` when none.
fn report_errors(report: &impl Serialize, otherwise: &str) -> String {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(report) {
        collect_errors(&v, &mut out);
    }
    if out.is_empty() {
        otherwise.to_owned()
    } else {
        out.join("; ")
    }
}

/// Every `"error"` string in a report, at most five.
fn collect_errors(v: &serde_json::Value, out: &mut Vec<String>) {
    if out.len() >= 5 {
        return;
    }
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("error", serde_json::Value::String(s)) if out.len() < 5 => out.push(s.clone()),
                    _ => collect_errors(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                collect_errors(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn daemon(jitter: Duration) -> Daemon {
        let config = Config::new(
            "local",
            zdr_storage::TierConfig::Fs {
                root: std::env::temp_dir().join("zdr-jitter-test"),
            },
        );
        let mut options = DaemonOptions::from_config(&DaemonConfig::default()).unwrap();
        options.jitter = jitter;
        Daemon::with_options(
            Arc::new(Stack::open_unresolved(config)),
            Vec::new(),
            options,
            Progress::none(),
        )
        .unwrap()
    }

    #[test]
    fn jitter_stays_below_its_bound_is_stable_and_spreads_jobs() {
        let d = daemon(Duration::from_secs(30));
        let t = Utc::now();
        let mut seen = BTreeSet::new();
        for i in 0..200 {
            let job = format!("job-{i}");
            let j = d.jitter(&job, t);
            assert!(
                j >= chrono::Duration::zero() && j < chrono::Duration::seconds(30),
                "{j}"
            );
            assert_eq!(
                j,
                d.jitter(&job, t),
                "the same job, time and host: the same delay"
            );
            seen.insert(j.num_seconds());
        }
        // 200 jobs over 30 one-second buckets: most buckets used.
        assert!(seen.len() > 20, "{seen:?}");
        assert_eq!(
            daemon(Duration::ZERO).jitter("x", t),
            chrono::Duration::zero()
        );
    }
}
