//! [`Config`]: `zdr.toml`, its `ZDR_*` environment overrides and `vault:` credential
//! references — or the same settings built in code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zdr_core::{Compression, Error, Result, Secret};
use zdr_storage::{AgeKeys, PipelineOptions, TierConfig};

/// Environment variables that are not config overrides.
const RESERVED_ENV: &[&str] = &[
    "ZDR_CONFIG",
    "ZDR_AGE_PASSPHRASE",
    "ZDR_LOG",
    "ZDR_PG_BIN_DIR",
    "ZDR_REDIS_BIN_DIR",
];

/// The top-level config keys: a `ZDR_*` variable whose first part is not one of them is not an
/// override and is ignored (it may belong to anything else in the environment — PostgreSQL runs
/// `archive_command` in its own), while an unknown key *inside* a known section is an error.
const TOP_LEVEL: &[&str] = &[
    "primary",
    "replicate_to",
    "schedule",
    "pipeline",
    "encryption",
    "tiers",
    "components",
    "retention",
    "rpo",
    "vault",
    "docker",
    "daemon",
];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The tier backups are written to.
    pub primary: String,
    /// Tiers `zdr replicate` copies to, in order: primary → first → second ...
    #[serde(default)]
    pub replicate_to: Vec<String>,
    /// The schedule name new backups get.
    #[serde(default = "default_schedule")]
    pub schedule: String,
    /// How artifacts are written.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// age encryption.
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// The tiers by name.
    pub tiers: BTreeMap<String, TierConfig>,
    /// The components by name.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentConfig>,
    /// `[vault]`: where `password = "vault:<mount>/<path>#<field>"` references are resolved.
    #[serde(default)]
    pub vault: Option<VaultRefConfig>,
    /// `[docker]`: the engine and the compose project of components whose tools run in a
    /// container.
    #[serde(default)]
    pub docker: DockerConfig,
    /// `[retention]`: the retention rules of every component without its own
    /// (`[components.NAME.retention]`, kept in [`Config::component_retention`]).
    #[serde(default)]
    pub retention: RetentionConfig,
    /// `[daemon]`: the schedules, metrics and alerts of `zdr daemon` (see [`crate::daemon`]).
    #[serde(default)]
    pub daemon: crate::daemon::DaemonConfig,
    /// `[locks]`: how long runs wait for the locks other runs hold on a tier, and when a
    /// lock is stale; see [`Config::lock_policy`].
    #[serde(default)]
    pub locks: LocksConfig,
    /// Each component's own retention rules, by component name.
    #[serde(skip)]
    pub component_retention: BTreeMap<String, RetentionConfig>,
    /// `[rpo]`: each component's recovery point objective (`db = "1h"`, `"off"` for none),
    /// against which `zdr status` measures the newest backup; see [`Config::rpo_target`].
    #[serde(default)]
    pub rpo: BTreeMap<String, String>,
    /// Where each component's client tools run, by component name (the `runner`, `container`,
    /// `service`, `exec_user`, `container_host` and `container_port` keys of its table);
    /// components not listed run them as local processes.
    #[serde(skip)]
    pub runners: BTreeMap<String, RunnerConfig>,
}

/// `[locks]`
///
/// ```toml
/// [locks]
/// wait = "1h"     # a backup, replication or prune waits this long for a lock held elsewhere
/// stale = "10m"   # a lock whose heartbeat is older than this is taken over
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksConfig {
    /// How long a run waits for a lock another run holds (`0s`: not at all; default `1h`).
    #[serde(default)]
    pub wait: Option<String>,
    /// How old a lock's heartbeat must be before another run takes the lock over (at least
    /// `10s`; default `10m`).
    #[serde(default)]
    pub stale: Option<String>,
}

/// `[docker]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The engine: a socket path, `unix://PATH` or `tcp://HOST:PORT` (default: `DOCKER_HOST`,
    /// then `/var/run/docker.sock`).
    #[serde(default)]
    pub host: Option<String>,
    /// The compose project whose containers `service = "..."` names.
    #[serde(default)]
    pub project: Option<String>,
}

/// Retention rules (`[retention]`, `[components.NAME.retention]`): what `zdr prune` keeps.
///
/// ```toml
/// [retention]                     # every component without its own rules
/// keep_daily = 7
/// keep_weekly = 4
///
/// [components.db.retention]
/// keep_last = 3
/// keep_daily = 14
/// keep_wal_for = "7d"             # PostgreSQL: point-in-time recovery window
/// [components.db.retention.tiers.offsite]
/// keep_monthly = 12               # this tier keeps by these rules instead
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// The newest `n` backups.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// The newest backup of each of the last `n` hours with a backup.
    #[serde(default)]
    pub keep_hourly: Option<u32>,
    /// The newest backup of each of the last `n` days with a backup.
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// The newest backup of each of the last `n` ISO weeks with a backup.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// The newest backup of each of the last `n` months with a backup.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
    /// The newest backup of each of the last `n` years with a backup.
    #[serde(default)]
    pub keep_yearly: Option<u32>,
    /// How far back a point-in-time recovery must stay possible (`7d`, `36h`): the base
    /// backups and WAL that window needs are kept whatever the rules say.
    #[serde(default)]
    pub keep_wal_for: Option<String>,
    /// Rules for one tier instead of these (by tier name).
    #[serde(default)]
    pub tiers: BTreeMap<String, zdr_core::retention::Retention>,
}

impl RetentionConfig {
    /// The rules themselves (without the per-tier ones).
    #[must_use]
    pub fn rules(&self) -> zdr_core::retention::Retention {
        zdr_core::retention::Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
        }
    }

    fn check(&self, at: &str, tiers: &BTreeMap<String, TierConfig>) -> Result<()> {
        self.rules().check().map_err(|e| e.with_context("at", at))?;
        for (t, r) in &self.tiers {
            if !tiers.contains_key(t) {
                return Err(Error::bad_input(format!(
                    "{at}.tiers names the unknown tier {t:?}; the config defines {}",
                    names(tiers.keys())
                )));
            }
            r.check()
                .map_err(|e| e.with_context("at", format!("{at}.tiers.{t}")))?;
        }
        if let Some(w) = &self.keep_wal_for {
            zdr_core::retention::parse_duration(w)
                .map_err(|e| e.with_context("at", format!("{at}.keep_wal_for")))?;
        }
        Ok(())
    }
}

/// Takes the `retention` table out of each component table.
fn take_retention(table: &mut toml::Table) -> Result<BTreeMap<String, RetentionConfig>> {
    let mut out = BTreeMap::new();
    let Some(toml::Value::Table(components)) = table.get_mut("components") else {
        return Ok(out);
    };
    for (name, value) in components.iter_mut() {
        let toml::Value::Table(c) = value else {
            continue;
        };
        let Some(r) = c.remove("retention") else {
            continue;
        };
        let r: RetentionConfig = r.try_into().map_err(|e: toml::de::Error| {
            Error::bad_input(format!(
                "invalid components.{name}.retention: {}",
                e.message().trim()
            ))
            .with_context("component", name)
        })?;
        out.insert(name.clone(), r);
    }
    Ok(out)
}

/// Where a component's client tools (`pg_dump`, `pg_restore`, `psql`) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerConfig {
    /// Inside a container, through the engine's exec API (`runner = "docker"`): the host
    /// needs no client tools.
    Docker {
        /// The container: by name, or by compose service of `[docker] project`.
        container: zdr_docker::ContainerRef,
        /// The user the tools run as (`exec_user`; default: the container's).
        user: Option<String>,
        /// The server's address as the tools see it inside the container (`container_host`,
        /// default `127.0.0.1`); the component's `host` stays the one zdr itself connects to.
        host: String,
        /// The server's port inside the container (`container_port`, default 5432 for
        /// postgres, 6379 for redis).
        port: u16,
        /// The containers that depend on this one (`dependents`: compose service names of
        /// `[docker] project`, or container names), restarted after the container is
        /// recovered. Compose's own `com.docker.compose.depends_on` labels are read too.
        dependents: Vec<String>,
    },
}

/// The keys of a component table that say where its tools run (not the adapter's settings).
const RUNNER_KEYS: &[&str] = &[
    "runner",
    "container",
    "service",
    "exec_user",
    "container_host",
    "container_port",
    "dependents",
];

/// Takes the runner keys out of each component table.
fn take_runners(table: &mut toml::Table) -> Result<BTreeMap<String, RunnerConfig>> {
    let project = table
        .get("docker")
        .and_then(|d| d.get("project"))
        .and_then(|p| p.as_str())
        .map(str::to_owned);
    let mut runners = BTreeMap::new();
    let Some(toml::Value::Table(components)) = table.get_mut("components") else {
        return Ok(runners);
    };
    for (name, value) in components.iter_mut() {
        let toml::Value::Table(c) = value else {
            continue;
        };
        let mut keys = BTreeMap::new();
        for k in RUNNER_KEYS {
            if let Some(v) = c.remove(*k) {
                keys.insert(*k, v);
            }
        }
        if keys.is_empty() {
            continue;
        }
        let text = |k: &str| -> Result<Option<String>> {
            match keys.get(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(
                    Error::bad_input(format!("components.{name}.{k} must be a string"))
                        .with_context("component", name),
                ),
            }
        };
        let runner = text("runner")?.unwrap_or_else(|| "local".to_owned());
        if runner == "local" {
            if let Some(k) = keys.keys().find(|k| **k != "runner") {
                return Err(Error::bad_input(format!(
                    "components.{name}.{k} applies to runner = \"docker\" only"
                ))
                .with_context("component", name));
            }
            continue;
        }
        if runner != "docker" {
            return Err(Error::bad_input(format!(
                "unknown runner {runner:?} for component {name}: local or docker"
            ))
            .with_context("component", name));
        }
        let ty = c.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        let default_port = match ty {
            "postgres" => 5432,
            "redis" => 6379,
            // Backed up and restored over the S3 API; the container is what a recovery
            // recreates (MinIO's port).
            "s3-bucket" => 9000,
            _ => {
                return Err(Error::bad_input(format!(
                    "runner = \"docker\" applies to postgres, redis and s3-bucket components; {name} is a {ty} component"
                ))
                .with_context("component", name));
            }
        };
        let container = match (text("container")?, text("service")?) {
            (Some(c), None) => zdr_docker::ContainerRef::Name(c),
            (None, Some(service)) => zdr_docker::ContainerRef::Service {
                project: project.clone().ok_or_else(|| {
                    Error::bad_input(format!(
                        "component {name} names compose service {service:?} but [docker] has no project"
                    ))
                    .with_context("component", name)
                    .with_hint("set project = \"...\" in [docker], or name the container")
                })?,
                service,
            },
            _ => {
                return Err(Error::bad_input(format!(
                    "component {name} with runner = \"docker\" needs exactly one of container = \"NAME\" or service = \"SERVICE\""
                ))
                .with_context("component", name));
            }
        };
        let port = match keys.get("container_port") {
            None => default_port,
            Some(toml::Value::Integer(p)) => u16::try_from(*p).map_err(|_| {
                Error::bad_input(format!(
                    "components.{name}.container_port {p} is not a port"
                ))
                .with_context("component", name)
            })?,
            Some(_) => {
                return Err(Error::bad_input(format!(
                    "components.{name}.container_port must be a number"
                ))
                .with_context("component", name));
            }
        };
        let dependents = match keys.get("dependents") {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::bad_input(format!(
                            "components.{name}.dependents must be a list of container or service names"
                        ))
                        .with_context("component", name)
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => {
                return Err(Error::bad_input(format!(
                    "components.{name}.dependents must be a list of container or service names"
                ))
                .with_context("component", name));
            }
        };
        runners.insert(
            name.clone(),
            RunnerConfig::Docker {
                container,
                user: text("exec_user")?,
                host: text("container_host")?.unwrap_or_else(|| "127.0.0.1".to_owned()),
                port,
                dependents,
            },
        );
    }
    Ok(runners)
}

fn default_schedule() -> String {
    "daily".to_owned()
}

/// `[pipeline]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// none, gzip, lz4 or zstd.
    #[serde(default)]
    pub compression: Option<String>,
    /// Compression level.
    #[serde(default)]
    pub level: Option<i32>,
    /// zstd worker threads.
    #[serde(default)]
    pub zstd_workers: Option<u32>,
    /// lz4 worker threads (default: the number of cores, at most 4; 0 or 1 compresses on
    /// the pipeline's own thread).
    #[serde(default)]
    pub lz4_workers: Option<u32>,
    /// Temporary files of interrupted runs older than this many seconds are removed from a
    /// local-disk tier by the next backup on it (default 3600).
    #[serde(default)]
    pub sweep_grace_secs: Option<u64>,
    /// The size at which a pack of small blobs (object storage) is stored, in bytes (default
    /// 4 MiB; 0 stores every blob on its own).
    #[serde(default)]
    pub blob_pack_size: Option<u64>,
}

/// `[encryption]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// X25519 recipients (`age1...`) new artifacts are encrypted to.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// An age identity file used to decrypt.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// The environment variable holding a passphrase (default `ZDR_AGE_PASSPHRASE`).
    #[serde(default)]
    pub passphrase_env: Option<String>,
}

/// `[components.NAME]`
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)]
pub enum ComponentConfig {
    /// A directory tree (config files).
    #[cfg(feature = "files")]
    Files {
        /// The directory.
        path: PathBuf,
    },
    /// A PostgreSQL database (pg_dump / pg_restore / psql).
    #[cfg(feature = "postgres")]
    Postgres(zdr_postgres::PostgresSettings),
    /// A Redis server (RDB over the replication protocol, or SCAN + DUMP).
    #[cfg(feature = "redis")]
    Redis(zdr_redis::RedisSettings),
    /// A Vault server (raft snapshot, or logical export of KV mounts).
    #[cfg(feature = "vault")]
    Vault(zdr_vault::VaultSettings),
    /// A Qdrant server (per-collection snapshots, or a logical export).
    /// The API key belongs in `ZDR_COMPONENTS__<NAME>__API_KEY`.
    #[cfg(feature = "qdrant")]
    Qdrant(zdr_qdrant::QdrantConfig),
    /// S3-compatible object storage (MinIO, SeaweedFS): buckets backed up incrementally
    /// into content-addressed blobs. The secret key belongs in
    /// `ZDR_COMPONENTS__<NAME>__SECRET_ACCESS_KEY` (or a `vault:` reference).
    #[cfg(feature = "s3")]
    #[serde(rename = "s3-bucket")]
    S3Bucket(zdr_s3::S3BucketSettings),
    /// n8n's workflows over its public REST API. The API key belongs in
    /// `ZDR_COMPONENTS__<NAME>__API_KEY` (or a `vault:` reference).
    #[cfg(feature = "n8n")]
    N8n(zdr_n8n::N8nSettings),
}

impl ComponentConfig {
    /// The component's password setting, for the components that have one.
    fn password_mut(&mut self) -> Option<&mut Option<Secret>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => Some(&mut p.password),
            #[cfg(feature = "redis")]
            Self::Redis(r) => Some(&mut r.password),
            #[cfg(feature = "s3")]
            Self::S3Bucket(s) => Some(&mut s.secret_access_key),
            #[cfg(feature = "n8n")]
            Self::N8n(n) => Some(&mut n.api_key),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// `[vault]`: the Vault that resolves `vault:` credential references. The token belongs in
/// `ZDR_VAULT__TOKEN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultRefConfig {
    /// `http(s)://host:port`.
    pub address: String,
    /// A Vault Enterprise namespace (`X-Vault-Namespace`); none for the root namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The token (put it in the environment variable).
    #[serde(default)]
    pub token: Option<Secret>,
}

impl Config {
    /// Replace every component password of the form `vault:<mount>/<path>#<field>` with the
    /// value read from the `[vault]` section's server.
    ///
    /// # Errors
    /// A reference without a `[vault]` section or token, or Vault's errors (never the value).
    pub async fn resolve_vault_references(&mut self) -> Result<()> {
        let vault = &self.vault;
        for (name, c) in &mut self.components {
            let Some(password) = c.password_mut() else {
                continue;
            };
            let Some(reference) = password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .filter(|r| r.starts_with("vault:"))
            else {
                continue;
            };
            let v = vault.as_ref().ok_or_else(|| {
                Error::bad_input(format!(
                    "components.{name}.password is a vault: reference but the config has no [vault] section"
                ))
            })?;
            let token = v
                .token
                .clone()
                .ok_or_else(|| Error::bad_input("no vault token: set ZDR_VAULT__TOKEN"))?;
            *password = Some(resolve(v, token, &reference, name).await?);
        }
        Ok(())
    }
}

#[cfg(feature = "vault")]
async fn resolve(v: &VaultRefConfig, token: Secret, reference: &str, name: &str) -> Result<Secret> {
    let client = zdr_vault::VaultClientConfig {
        address: v.address.clone(),
        token,
        namespace: v.namespace.clone(),
    };
    zdr_vault::resolve_reference(&client, reference)
        .await
        .map_err(|e| e.with_context("component", name.to_owned()))
}

#[cfg(not(feature = "vault"))]
#[allow(clippy::unused_async)]
async fn resolve(
    _v: &VaultRefConfig,
    _token: Secret,
    _reference: &str,
    name: &str,
) -> Result<Secret> {
    Err(Error::new(
        zdr_core::ErrorKind::Unsupported,
        format!(
            "components.{name}.password is a vault: reference, and this zdr was built without the vault feature"
        ),
    ))
}

impl Config {
    /// A config built in code: backups go to the tier `primary` (named `primary_name`),
    /// no replicas, no components yet, default pipeline (zstd, no encryption).
    #[must_use]
    pub fn new(primary_name: impl Into<String>, primary: TierConfig) -> Self {
        let name = primary_name.into();
        let mut tiers = BTreeMap::new();
        tiers.insert(name.clone(), primary);
        Self {
            primary: name,
            replicate_to: Vec::new(),
            schedule: default_schedule(),
            pipeline: PipelineConfig::default(),
            encryption: EncryptionConfig::default(),
            tiers,
            components: BTreeMap::new(),
            vault: None,
            docker: DockerConfig::default(),
            retention: RetentionConfig::default(),
            locks: LocksConfig::default(),
            component_retention: BTreeMap::new(),
            daemon: crate::daemon::DaemonConfig::default(),
            rpo: BTreeMap::new(),
            runners: BTreeMap::new(),
        }
    }

    /// Set the retention rules of `component` (or, with `None`, of every component without
    /// its own): what [`crate::Stack::prune`] keeps.
    #[must_use]
    pub fn with_retention(mut self, component: Option<&str>, retention: RetentionConfig) -> Self {
        match component {
            Some(c) => {
                self.component_retention.insert(c.to_owned(), retention);
            }
            None => self.retention = retention,
        }
        self
    }

    /// Add a replica tier: restores fall back to it, replication copies to it (in the order
    /// added).
    #[must_use]
    pub fn with_replica(mut self, name: impl Into<String>, tier: TierConfig) -> Self {
        let name = name.into();
        self.tiers.insert(name.clone(), tier);
        self.replicate_to.push(name);
        self
    }

    /// Add a component.
    #[must_use]
    pub fn with_component(mut self, name: impl Into<String>, component: ComponentConfig) -> Self {
        self.components.insert(name.into(), component);
        self
    }

    /// Run the client tools of component `name` where `runner` says (inside a container).
    #[must_use]
    pub fn with_runner(mut self, name: impl Into<String>, runner: RunnerConfig) -> Self {
        self.runners.insert(name.into(), runner);
        self
    }

    /// Read `path` and apply the `ZDR_*` overrides of this process's environment.
    ///
    /// # Errors
    /// See [`Config::load`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(path.as_ref(), std::env::vars())
    }

    /// Read `path` and apply the `ZDR_*` overrides of `env`.
    ///
    /// # Errors
    /// An unreadable or malformed file, an unknown key, tier, component or component type,
    /// each named.
    pub fn load(path: &Path, env: impl Iterator<Item = (String, String)>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_input(format!("cannot read config file {}", path.display()))
                .with_source(e)
                .with_hint("check the config file's path")
        })?;
        Self::parse(&text, &path.display().to_string(), env)
    }

    /// Parse config text from `origin` and apply the `ZDR_*` overrides of `env`.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            Error::bad_input(format!(
                "malformed config file {origin}: {}",
                e.message().trim()
            ))
            .with_context("at", describe_span(text, e.span()))
        })?;
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("ZDR_") else {
                continue;
            };
            if RESERVED_ENV.contains(&name.as_str()) || rest.starts_with("TEST_") {
                continue;
            }
            let first = rest
                .split("__")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !TOP_LEVEL.contains(&first.as_str()) {
                continue;
            }
            apply_override(&mut table, &name, rest, &value)?;
        }
        let runners = take_runners(&mut table)?;
        let component_retention = take_retention(&mut table)?;
        let mut config: Config = table.try_into().map_err(|e: toml::de::Error| {
            Error::bad_input(format!("invalid config {origin}: {}", e.message().trim()))
        })?;
        config.runners = runners;
        config.component_retention = component_retention;
        config.check()?;
        Ok(config)
    }

    /// How runs take their locks: `[locks]`, with the defaults of
    /// [`zdr_storage::LockPolicy`] for what it leaves out.
    #[must_use]
    pub fn lock_policy(&self) -> zdr_storage::LockPolicy {
        let default = zdr_storage::LockPolicy::default();
        let read = |v: &Option<String>| {
            v.as_deref()
                .and_then(|t| zdr_core::retention::parse_duration(t).ok())
        };
        zdr_storage::LockPolicy {
            stale: read(&self.locks.stale).unwrap_or(default.stale),
            wait: read(&self.locks.wait).unwrap_or(default.wait),
        }
    }

    fn check_locks(&self) -> Result<()> {
        if let Some(w) = &self.locks.wait {
            zdr_core::retention::parse_duration(w)
                .map_err(|e| e.with_context("at", "locks.wait"))?;
        }
        if let Some(s) = &self.locks.stale {
            let d = zdr_core::retention::parse_duration(s)
                .map_err(|e| e.with_context("at", "locks.stale"))?;
            if d < std::time::Duration::from_secs(10) {
                return Err(Error::bad_input(format!(
                    "locks.stale = {s:?} is too short: a lock's heartbeat is rewritten every quarter of it, and a busy tier can take seconds to answer; use at least 10s"
                ))
                .with_context("at", "locks.stale"));
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<()> {
        for t in std::iter::once(&self.primary).chain(&self.replicate_to) {
            if !self.tiers.contains_key(t) {
                return Err(Error::bad_input(format!(
                    "unknown tier {t:?}; the config defines {}",
                    names(self.tiers.keys())
                )));
            }
        }
        for name in self.components.keys() {
            zdr_core::Component::new(name.clone())?;
        }
        self.retention.check("retention", &self.tiers)?;
        self.check_locks()?;
        for (name, value) in &self.rpo {
            if !self.components.contains_key(name) {
                return Err(Error::bad_input(format!(
                    "rpo.{name} names an unknown component; the config defines {}",
                    names(self.components.keys())
                )));
            }
            if value != "off" {
                zdr_core::retention::parse_duration(value)
                    .map_err(|e| e.with_context("at", format!("rpo.{name}")))?;
            }
        }
        for (name, r) in &self.component_retention {
            r.check(&format!("components.{name}.retention"), &self.tiers)?;
        }
        crate::daemon::check(self)?;
        Ok(())
    }

    /// The retention rules of `component` on `tier`: the component's rules for that tier,
    /// else its own rules, else `[retention]`'s for that tier, else `[retention]`'s.
    #[must_use]
    pub fn retention_for(&self, component: &str, tier: &str) -> zdr_core::retention::Retention {
        let own = self.component_retention.get(component);
        if let Some(r) = own.and_then(|r| r.tiers.get(tier)) {
            return *r;
        }
        if let Some(r) = own.map(RetentionConfig::rules).filter(|r| !r.is_empty()) {
            return r;
        }
        if let Some(r) = self.retention.tiers.get(tier) {
            return *r;
        }
        self.retention.rules()
    }

    /// The recovery point objective of `component`: `[rpo]`'s value, else the runbook's for
    /// its type (PostgreSQL 1 hour, Redis 6 hours, Qdrant, Vault, object storage and n8n 24 hours; config files
    /// none: they are backed up on change). `None`: no objective (`"off"`).
    #[must_use]
    pub fn rpo_target(&self, component: &str) -> Option<std::time::Duration> {
        if let Some(v) = self.rpo.get(component) {
            return zdr_core::retention::parse_duration(v).ok();
        }
        let hours = match self.components.get(component)? {
            #[cfg(feature = "postgres")]
            ComponentConfig::Postgres(_) => 1,
            #[cfg(feature = "redis")]
            ComponentConfig::Redis(_) => 6,
            #[cfg(feature = "qdrant")]
            ComponentConfig::Qdrant(_) => 24,
            #[cfg(feature = "vault")]
            ComponentConfig::Vault(_) => 24,
            #[cfg(feature = "s3")]
            ComponentConfig::S3Bucket(_) => 24,
            #[cfg(feature = "n8n")]
            ComponentConfig::N8n(_) => 24,
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(std::time::Duration::from_secs(hours * 3600))
    }

    /// The point-in-time recovery window of `component` (`keep_wal_for`), if any.
    #[must_use]
    pub fn wal_window(&self, component: &str) -> Option<std::time::Duration> {
        self.component_retention
            .get(component)
            .and_then(|r| r.keep_wal_for.as_deref())
            .or(self.retention.keep_wal_for.as_deref())
            .and_then(|w| zdr_core::retention::parse_duration(w).ok())
    }

    /// The named tier's config.
    ///
    /// # Errors
    /// An unknown tier, naming the ones defined.
    pub fn tier(&self, name: &str) -> Result<&TierConfig> {
        self.tiers.get(name).ok_or_else(|| {
            Error::bad_input(format!(
                "unknown tier {name:?}; the config defines {}",
                names(self.tiers.keys())
            ))
        })
    }

    /// The named component's config.
    ///
    /// # Errors
    /// An unknown component, naming the ones defined.
    pub fn component(&self, name: &str) -> Result<&ComponentConfig> {
        self.components.get(name).ok_or_else(|| {
            Error::bad_input(format!(
                "unknown component {name:?}; the config defines {}",
                names(self.components.keys())
            ))
        })
    }

    /// Tiers in the order restores try them: primary, then the replicas.
    #[must_use]
    pub fn restore_order(&self) -> Vec<String> {
        let mut v = vec![self.primary.clone()];
        v.extend(self.replicate_to.iter().cloned());
        v
    }

    /// The pipeline options, with the encryption keys loaded.
    ///
    /// # Errors
    /// An unknown compression, a malformed recipient, an unreadable identity file.
    pub fn pipeline_options(&self) -> Result<PipelineOptions> {
        let compression: Compression = match &self.pipeline.compression {
            Some(c) => c.parse()?,
            None => Compression::Zstd,
        };
        let mut keys = AgeKeys::none().with_recipients(&self.encryption.recipients)?;
        if let Some(file) = &self.encryption.identity_file {
            keys = keys.with_identity_file_when_needed(file)?;
        }
        let pass_env = self
            .encryption
            .passphrase_env
            .as_deref()
            .unwrap_or("ZDR_AGE_PASSPHRASE");
        if let Ok(pass) = std::env::var(pass_env)
            && !pass.is_empty()
        {
            keys = keys.with_passphrase(pass);
        }
        Ok(PipelineOptions {
            compression,
            level: self.pipeline.level,
            zstd_workers: self.pipeline.zstd_workers.unwrap_or(0),
            lz4_workers: self
                .pipeline
                .lz4_workers
                .unwrap_or_else(zdr_storage::default_lz4_workers),
            keys,
            blob_pack_size: self
                .pipeline
                .blob_pack_size
                .unwrap_or(zdr_storage::DEFAULT_PACK_SIZE),
        })
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn describe_span(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(s) => {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}")
        }
        None => "unknown position".to_owned(),
    }
}

/// `ZDR_TIERS__MINIO__SECRET_ACCESS_KEY=x` sets `tiers.minio.secret_access_key = "x"`.
/// Values that parse as TOML (numbers, booleans, arrays) keep their type.
fn apply_override(table: &mut toml::Table, var: &str, path: &str, value: &str) -> Result<()> {
    let segments: Vec<String> = path.split("__").map(str::to_lowercase).collect();
    if segments.iter().any(String::is_empty) {
        return Err(Error::bad_input(format!(
            "malformed override variable {var}"
        )));
    }
    // Secrets stay strings even when they look like numbers or booleans.
    let secret = segments
        .last()
        .is_some_and(|l| l.contains("password") || l.contains("secret") || l.contains("token"));
    let parsed: toml::Value = if secret {
        toml::Value::String(value.to_owned())
    } else {
        toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()))
    };
    // A credential for a tier or component the file does not define is a mistake (a typo in
    // the variable, or a config that lost the entry), not a new half-defined entry.
    if let [section, name, _, ..] = segments.as_slice()
        && (section == "components" || section == "tiers")
        && !table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(name))
    {
        {
            let what = if section == "tiers" {
                "tier"
            } else {
                "component"
            };
            return Err(Error::bad_input(format!(
                "{var} sets a key of {what} {name}, which the config does not define"
            ))
            .with_hint(format!(
                "define [{section}.{name}] in the config, or unset {var}"
            )));
        }
    }
    let mut cur = table;
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| Error::bad_input(format!("malformed override variable {var}")))?;
    for seg in parents {
        let entry = cur
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| {
            Error::bad_input(format!("{var}: {seg} is not a table in the config"))
        })?;
    }
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(all(
    test,
    feature = "files",
    feature = "postgres",
    feature = "redis",
    feature = "vault"
))]
mod tests {
    use super::*;

    const BASE: &str = r#"
primary = "local"
replicate_to = ["minio"]
[tiers.local]
type = "fs"
root = "/tmp/x"
[tiers.minio]
type = "s3"
bucket = "zdr-backups"
endpoint = "http://127.0.0.1:8333"
[components.configs]
type = "files"
path = "/etc/zentoria"
"#;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn env_overrides_nested_keys() -> Result<()> {
        let c = Config::parse(
            BASE,
            "t",
            env(&[
                ("ZDR_TIERS__MINIO__SECRET_ACCESS_KEY", "s3cr3t"),
                ("ZDR_TIERS__MINIO__ACCESS_KEY_ID", "id"),
                ("ZDR_PIPELINE__LEVEL", "9"),
                ("ZDR_CONFIG", "ignored"),
                ("HOME", "ignored"),
            ]),
        )?;
        assert_eq!(c.pipeline.level, Some(9));
        let TierConfig::S3(s3) = c.tier("minio")? else {
            panic!("not s3")
        };
        assert_eq!(
            s3.secret_access_key.as_ref().map(|s| s.expose()),
            Some("s3cr3t")
        );
        assert!(!format!("{c:?}").contains("s3cr3t"), "secret in Debug");
        Ok(())
    }

    #[test]
    fn an_override_for_an_undefined_component_or_tier_is_refused() {
        for (var, want) in [
            (
                "ZDR_COMPONENTS__DB__PASSWORD",
                "ZDR_COMPONENTS__DB__PASSWORD sets a key of component db, which the config does not define",
            ),
            (
                "ZDR_TIERS__OFFSITE__SECRET_ACCESS_KEY",
                "sets a key of tier offsite",
            ),
        ] {
            let Err(e) = Config::parse(BASE, "t", env(&[(var, "x")])) else {
                panic!("{var} for an undefined entry accepted");
            };
            let e = e.to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("\"x\""), "{e}");
        }
    }

    #[test]
    fn postgres_component_with_password_from_env() -> Result<()> {
        let text = format!(
            "{BASE}\n[components.postgres]\ntype = \"postgres\"\nport = 5433\ndatabase = \"app\"\nformat = \"plain\"\n"
        );
        let c = Config::parse(
            &text,
            "t",
            env(&[("ZDR_COMPONENTS__POSTGRES__PASSWORD", "pg-s3cr3t")]),
        )?;
        let ComponentConfig::Postgres(pg) = c.component("postgres")? else {
            panic!("not postgres")
        };
        let lib = pg.to_pg(Some("other"))?;
        assert_eq!((lib.port, lib.database.as_str()), (5433, "other"));
        assert_eq!(lib.password.as_ref().map(|p| p.expose()), Some("pg-s3cr3t"));
        assert_eq!(lib.format, zdr_postgres::DumpFormat::Plain);
        assert!(
            !format!("{c:?}{lib:?}").contains("pg-s3cr3t"),
            "secret in Debug"
        );
        Ok(())
    }

    #[test]
    fn vault_component_with_token_from_env() -> Result<()> {
        let c = Config::parse(
            &format!(
                "{BASE}\n[components.vault]\ntype = \"vault\"\naddress = \"http://10.0.0.7:8200\"\nmounts = [\"secret\", \"kv1\"]\n"
            ),
            "t",
            env(&[("ZDR_COMPONENTS__VAULT__TOKEN", "hvs.tok-98765")]),
        )?;
        let ComponentConfig::Vault(v) = c.component("vault")? else {
            panic!("not vault")
        };
        let client = v.client()?;
        assert_eq!(client.token.expose(), "hvs.tok-98765");
        assert_eq!(client.namespace, None);
        assert_eq!(
            v.mounts.as_deref(),
            Some(&["secret".to_owned(), "kv1".to_owned()][..])
        );
        assert!(!format!("{c:?}{client:?}").contains("98765"));
        let none = Config::parse(
            &format!("{BASE}\n[components.vault]\ntype = \"vault\"\naddress = \"http://h:1\"\n"),
            "t",
            env(&[]),
        )?;
        let ComponentConfig::Vault(v) = none.component("vault")? else {
            panic!("not vault")
        };
        assert_eq!(
            v.client().err().map(|e| e.kind()),
            Some(zdr_core::ErrorKind::BadInput)
        );
        let ns = Config::parse(
            &format!(
                "{BASE}\n[components.vault]\ntype = \"vault\"\naddress = \"http://h:1\"\nnamespace = \"team-a/app\"\n"
            ),
            "t",
            env(&[("ZDR_COMPONENTS__VAULT__TOKEN", "hvs.tok-1")]),
        )?;
        let ComponentConfig::Vault(v) = ns.component("vault")? else {
            panic!("not vault")
        };
        assert_eq!(v.client()?.namespace.as_deref(), Some("team-a/app"));
        Ok(())
    }

    #[test]
    fn redis_component_with_url_and_password_from_env() -> Result<()> {
        let c = Config::parse(
            &format!(
                "{BASE}\n[components.cache]\ntype = \"redis\"\nurl = \"redis://ops@10.0.0.5:6380\"\ndata_dir = \"/var/lib/redis\"\nstart_command = [\"systemctl\", \"start\", \"redis\"]\n"
            ),
            "t",
            env(&[("ZDR_COMPONENTS__CACHE__PASSWORD", "12345")]),
        )?;
        let ComponentConfig::Redis(r) = c.component("cache")? else {
            panic!("not redis")
        };
        let lib = r.to_redis()?;
        assert_eq!((lib.host.as_str(), lib.port), ("10.0.0.5", 6380));
        assert_eq!(lib.username.as_deref(), Some("ops"));
        assert_eq!(lib.password.as_ref().map(|p| p.expose()), Some("12345"));
        assert!(!format!("{c:?}{lib:?}").contains("12345"));
        let bad = Config::parse(
            &format!("{BASE}\n[components.cache]\ntype = \"redis\"\nurl = \"redis://:pw@h:1\"\n"),
            "t",
            env(&[]),
        )?;
        let ComponentConfig::Redis(r) = bad.component("cache")? else {
            panic!("not redis")
        };
        assert_eq!(
            r.to_redis().err().map(|e| e.kind()),
            Some(zdr_core::ErrorKind::BadInput)
        );
        Ok(())
    }

    #[test]
    fn unknown_tier_component_and_keys_are_bad_input() {
        let e = Config::parse(
            &BASE.replace("[\"minio\"]", "[\"onedrive\"]"),
            "t",
            env(&[]),
        );
        assert!(
            e.err()
                .is_some_and(|e| e.to_string().contains("unknown tier \"onedrive\""))
        );
        let e = Config::parse(
            &BASE.replace("type = \"files\"", "type = \"mysql\""),
            "t",
            env(&[]),
        );
        assert!(e.err().is_some_and(|e| e.to_string().contains("mysql")));
        let e = Config::parse(&format!("{BASE}\nbogus = 1\n"), "t", env(&[]));
        assert!(e.err().is_some_and(|e| e.to_string().contains("bogus")));
        // Variables that are not overrides at all are left alone.
        assert!(
            Config::parse(
                BASE,
                "t",
                env(&[("ZDR_BIN", "/x/zdr"), ("ZDR_REDIS_BIN_DIR", "/usr/bin")])
            )
            .is_ok()
        );
        let e = Config::parse(BASE, "t", env(&[("ZDR_TIERS__LOCAL__COLOR", "red")]));
        assert!(e.err().is_some_and(|e| e.to_string().contains("color")));
        let e = Config::parse("primary = ", "zdr.toml", env(&[]));
        assert!(
            e.err()
                .is_some_and(|e| e.to_string().contains("malformed config file zdr.toml"))
        );
        let c = Config::parse(BASE, "t", env(&[])).ok();
        let e = c
            .as_ref()
            .map(|c| c.component("redis").err().map(|e| e.to_string()));
        assert!(
            e.flatten()
                .is_some_and(|e| e.contains("unknown component \"redis\""))
        );
    }
}
