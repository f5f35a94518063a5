//! One component's source, restorer and verifier, built from its settings and the options of
//! one call. Per-call options live in [`BackupOptions`] and [`RestoreOptions`], never on a
//! long-lived component: every call builds the adapter it needs.

use std::path::PathBuf;

use zdr_core::{
    BackupKind, BackupSelector, BackupSource, Component, Error, Manifest, RestoreTarget, Restorer,
    Result, Verifier,
};

use crate::config::ComponentConfig;

/// The kind of a configured component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentType {
    /// A directory tree.
    Files,
    /// A PostgreSQL database.
    Postgres,
    /// A Redis server.
    Redis,
    /// A Vault server.
    Vault,
    /// A Qdrant server.
    Qdrant,
    /// S3-compatible object storage (`s3-bucket`).
    S3Bucket,
    /// n8n workflows.
    N8n,
}

impl ComponentType {
    /// The type's name in the config (`type = "..."`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Vault => "vault",
            Self::Qdrant => "qdrant",
            Self::S3Bucket => "s3-bucket",
            Self::N8n => "n8n",
        }
    }

    /// The type of a component's settings.
    #[must_use]
    pub fn of(config: &ComponentConfig) -> Self {
        match config {
            #[cfg(feature = "files")]
            ComponentConfig::Files { .. } => Self::Files,
            #[cfg(feature = "postgres")]
            ComponentConfig::Postgres(_) => Self::Postgres,
            #[cfg(feature = "redis")]
            ComponentConfig::Redis(_) => Self::Redis,
            #[cfg(feature = "vault")]
            ComponentConfig::Vault(_) => Self::Vault,
            #[cfg(feature = "qdrant")]
            ComponentConfig::Qdrant(_) => Self::Qdrant,
            #[cfg(feature = "s3")]
            ComponentConfig::S3Bucket(_) => Self::S3Bucket,
            #[cfg(feature = "n8n")]
            ComponentConfig::N8n(_) => Self::N8n,
        }
    }
}

impl std::fmt::Display for ComponentType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options of one backup call.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// The schedule name the backup gets (default: the config's `schedule`).
    pub schedule: Option<String>,
    /// Replicate to the replica tiers afterwards.
    pub replicate: bool,
    /// The logical form where a component has two: redis `SCAN` + `DUMP` instead of an RDB,
    /// vault a KV export instead of a raft snapshot, qdrant a scroll export instead of
    /// snapshots.
    pub logical: bool,
    /// postgres: this database instead of the configured one.
    pub database: Option<String>,
    /// postgres: a physical base backup of the cluster (`pg_basebackup`), the start of
    /// point-in-time recovery, instead of a dump of one database.
    pub base: bool,
    /// redis, logical: only keys matching this glob pattern.
    pub pattern: Option<String>,
    /// redis, logical: only this database.
    pub db: Option<u32>,
    /// vault, logical: allow an export into artifacts that the pipeline does not encrypt.
    pub allow_plaintext: bool,
    /// How long to wait for the component's lock while another run (a prune) holds it
    /// (default: `[locks] wait`).
    pub lock_wait: Option<std::time::Duration>,
}

/// Options of one restore call.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Which backup: `latest` and `previous` count only backups this component's restorer
    /// can restore (a base backup is never handed to the logical PostgreSQL restore).
    pub backup: BackupSelector,
    /// Only read from this tier (default: the primary, then each replica in order, falling
    /// back to the next tier when a copy is damaged or a tier is unreachable).
    pub tier: Option<String>,
    /// Where the data goes (default: where it came from).
    pub target: RestoreTarget,
    /// Restore a logical backup (redis `RESTORE`, vault KV import, qdrant upsert).
    pub logical: bool,
    /// postgres: the restore mode (safe swap, in place, scratch) and a single table.
    #[cfg(feature = "postgres")]
    pub postgres: zdr_postgres::RestoreOptions,
    /// redis, logical: replace existing keys (default true) and a key pattern.
    #[cfg(feature = "redis")]
    pub redis: zdr_redis::RestoreOptions,
    /// vault: restore a raft snapshot with `snapshot-force` (a snapshot of another cluster).
    pub force: bool,
    /// vault, logical: import the exported mount FROM into the mount TO.
    pub mount_map: Vec<(String, String)>,
    /// redis, physical: skip the safety copy of the live dataset taken before the server is
    /// stopped (a backup with schedule `pre-restore`).
    pub no_safety_copy: bool,
    /// s3-bucket: which bucket, prefix or key, into which bucket or endpoint (the target
    /// name is the destination bucket too; `target.overwrite` replaces differing objects).
    #[cfg(feature = "s3")]
    pub s3: zdr_s3::RestoreOptions,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            backup: BackupSelector::Latest,
            tier: None,
            target: RestoreTarget::default(),
            logical: false,
            #[cfg(feature = "postgres")]
            postgres: zdr_postgres::RestoreOptions::default(),
            #[cfg(feature = "redis")]
            redis: zdr_redis::RestoreOptions {
                replace: true,
                ..zdr_redis::RestoreOptions::default()
            },
            force: false,
            mount_map: Vec::new(),
            no_safety_copy: false,
            #[cfg(feature = "s3")]
            s3: zdr_s3::RestoreOptions::default(),
        }
    }
}

impl RestoreOptions {
    /// The default options with another selector.
    #[must_use]
    pub fn backup(selector: BackupSelector) -> Self {
        Self {
            backup: selector,
            ..Self::default()
        }
    }

    fn postgres_used(&self) -> bool {
        #[cfg(feature = "postgres")]
        return self.postgres != zdr_postgres::RestoreOptions::default();
        #[cfg(not(feature = "postgres"))]
        false
    }

    fn s3_used(&self) -> bool {
        #[cfg(feature = "s3")]
        return self.s3 != zdr_s3::RestoreOptions::default();
        #[cfg(not(feature = "s3"))]
        false
    }

    fn redis_used(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.redis.pattern.is_some() || !self.redis.replace;
        #[cfg(not(feature = "redis"))]
        false
    }
}

/// A component's source/restorer/verifier, built for one call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Adapter {
    #[cfg(feature = "files")]
    Files(zdr_files::FilesComponent),
    #[cfg(feature = "postgres")]
    Postgres(
        zdr_postgres::PostgresComponent,
        zdr_postgres::RestoreOptions,
    ),
    #[cfg(feature = "redis")]
    Redis(zdr_redis::RedisComponent, zdr_redis::RestoreOptions),
    #[cfg(feature = "vault")]
    Vault(zdr_vault::VaultComponent),
    #[cfg(feature = "qdrant")]
    Qdrant(zdr_qdrant::QdrantComponent, zdr_qdrant::RestoreOptions),
    #[cfg(feature = "s3")]
    S3(zdr_s3::S3BucketComponent, zdr_s3::RestoreOptions),
    #[cfg(feature = "n8n")]
    N8n(zdr_n8n::N8nComponent),
}

fn not_for(options: &str, ty: &str, name: &str, actual: ComponentType) -> Error {
    Error::bad_input(format!(
        "{options} apply to {ty} components; {name} is a {actual} component"
    ))
    .with_context("component", name)
}

impl Adapter {
    /// The same adapter with its client tools run by `runner` (inside a container), when
    /// given; adapters without client tools in a container are unchanged (redis: the server
    /// is reached over the network, its files through [`Adapter::in_container`]; a scratch
    /// server runs on this machine).
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub(crate) fn with_runner(
        self,
        runner: Option<std::sync::Arc<dyn zdr_core::CommandRunner>>,
    ) -> Self {
        let Some(runner) = runner else {
            return self;
        };
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(p, o) => Self::Postgres(p.with_runner(runner), o),
            #[allow(unreachable_patterns)]
            other => other,
        }
    }

    /// The same adapter for a server that runs in `container` (redis: a physical restore
    /// swaps the RDB on the container's volumes and restarts it); others unchanged.
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) fn in_container(self, container: Option<(zdr_docker::Docker, String)>) -> Self {
        let Some((docker, container)) = container else {
            return self;
        };
        match self {
            #[cfg(feature = "redis")]
            Self::Redis(r, o) => Self::Redis(
                r.with_container(std::sync::Arc::new(
                    crate::redis_container::DockerRedis::new(docker, container),
                )),
                o,
            ),
            #[allow(unreachable_patterns)]
            other => other,
        }
    }

    /// The adapter for a backup with `options`.
    pub(crate) fn for_backup(
        name: &str,
        config: &ComponentConfig,
        options: &BackupOptions,
    ) -> Result<Self> {
        let ty = ComponentType::of(config);
        let component = Component::new(name)?;
        if options.database.is_some() && ty != ComponentType::Postgres {
            return Err(not_for("database", "postgres", name, ty));
        }
        if options.base && ty != ComponentType::Postgres {
            return Err(not_for("base backups", "postgres", name, ty));
        }
        if (options.pattern.is_some() || options.db.is_some()) && ty != ComponentType::Redis {
            return Err(not_for("key pattern and db", "redis", name, ty));
        }
        if options.allow_plaintext && ty != ComponentType::Vault {
            return Err(not_for("allow_plaintext", "vault", name, ty));
        }
        if options.logical
            && matches!(
                ty,
                ComponentType::Files
                    | ComponentType::Postgres
                    | ComponentType::S3Bucket
                    | ComponentType::N8n
            )
        {
            return Err(Error::bad_input(format!(
                "{name} is a {ty} component: it has one backup form (logical applies to redis, vault and qdrant)"
            )));
        }
        Ok(match config {
            #[cfg(feature = "n8n")]
            ComponentConfig::N8n(c) => Self::N8n(zdr_n8n::N8nComponent::new(component, c)?),
            #[cfg(feature = "s3")]
            ComponentConfig::S3Bucket(c) => Self::S3(
                zdr_s3::S3BucketComponent::new(component, c.clone())?,
                zdr_s3::RestoreOptions::default(),
            ),
            #[cfg(feature = "files")]
            ComponentConfig::Files { path } => {
                Self::Files(zdr_files::FilesComponent::new(component, path.clone()))
            }
            #[cfg(feature = "postgres")]
            ComponentConfig::Postgres(c) => Self::Postgres(
                zdr_postgres::PostgresComponent::new(
                    component,
                    c.to_pg(options.database.as_deref())?,
                ),
                zdr_postgres::RestoreOptions::default(),
            ),
            #[cfg(feature = "redis")]
            ComponentConfig::Redis(c) => Self::Redis(
                zdr_redis::RedisComponent::new(component, c.to_redis()?).with_backup_mode(
                    if options.logical {
                        zdr_redis::BackupMode::Logical {
                            pattern: options.pattern.clone(),
                            db: options.db,
                        }
                    } else {
                        zdr_redis::BackupMode::Physical
                    },
                ),
                zdr_redis::RestoreOptions::default(),
            ),
            #[cfg(feature = "vault")]
            ComponentConfig::Vault(c) => Self::Vault(zdr_vault::VaultComponent::new(
                component,
                zdr_vault::VaultConfig {
                    client: c.client()?,
                    mounts: c.mounts(),
                    allow_plaintext: options.allow_plaintext,
                    raft_snapshot: !options.logical,
                    force: false,
                },
            )),
            #[cfg(feature = "qdrant")]
            ComponentConfig::Qdrant(c) => {
                let mut c = c.clone();
                c.logical = c.logical || options.logical;
                Self::Qdrant(
                    zdr_qdrant::QdrantComponent::new(component, c)?,
                    zdr_qdrant::RestoreOptions::default(),
                )
            }
        })
    }

    /// The adapter for a restore with `options`.
    pub(crate) fn for_restore(
        name: &str,
        config: &ComponentConfig,
        options: &RestoreOptions,
    ) -> Result<Self> {
        let ty = ComponentType::of(config);
        let component = Component::new(name)?;
        if options.postgres_used() && ty != ComponentType::Postgres {
            return Err(not_for(
                "table, table_as, jobs and the in-place mode",
                "postgres",
                name,
                ty,
            ));
        }
        if options.redis_used() && ty != ComponentType::Redis {
            return Err(not_for("key pattern and no-replace", "redis", name, ty));
        }
        if options.s3_used() && ty != ComponentType::S3Bucket {
            return Err(not_for(
                "bucket, prefix, key and destination bucket",
                "s3-bucket",
                name,
                ty,
            ));
        }
        if (options.force || !options.mount_map.is_empty()) && ty != ComponentType::Vault {
            return Err(not_for("force and mount_map", "vault", name, ty));
        }
        if options.logical
            && matches!(
                ty,
                ComponentType::Files
                    | ComponentType::Postgres
                    | ComponentType::S3Bucket
                    | ComponentType::N8n
            )
        {
            return Err(Error::bad_input(format!(
                "{name} is a {ty} component: it has one backup form (logical applies to redis, vault and qdrant)"
            )));
        }
        if options.target.name.is_some()
            && !matches!(
                ty,
                ComponentType::Postgres | ComponentType::Qdrant | ComponentType::S3Bucket
            )
        {
            return Err(Error::bad_input(format!(
                "a target name (database, collection or bucket) applies to postgres, qdrant and s3-bucket components; {name} is a {ty} component"
            ))
            .with_context("component", name));
        }
        Ok(match config {
            #[cfg(feature = "n8n")]
            ComponentConfig::N8n(c) => Self::N8n(zdr_n8n::N8nComponent::new(component, c)?),
            #[cfg(feature = "s3")]
            ComponentConfig::S3Bucket(c) => Self::S3(
                zdr_s3::S3BucketComponent::new(component, c.clone())?,
                options.s3.clone(),
            ),
            #[cfg(feature = "files")]
            ComponentConfig::Files { path } => {
                Self::Files(zdr_files::FilesComponent::new(component, path.clone()))
            }
            #[cfg(feature = "postgres")]
            ComponentConfig::Postgres(c) => Self::Postgres(
                zdr_postgres::PostgresComponent::new(component, c.to_pg(None)?),
                options.postgres.clone(),
            ),
            #[cfg(feature = "redis")]
            ComponentConfig::Redis(c) => Self::Redis(
                zdr_redis::RedisComponent::new(component, c.to_redis()?),
                options.redis.clone(),
            ),
            #[cfg(feature = "vault")]
            ComponentConfig::Vault(c) => Self::Vault(
                zdr_vault::VaultComponent::new(
                    component,
                    zdr_vault::VaultConfig {
                        client: c.client()?,
                        mounts: c.mounts(),
                        allow_plaintext: false,
                        raft_snapshot: !options.logical,
                        force: options.force,
                    },
                )
                .with_mount_map(options.mount_map.clone()),
            ),
            #[cfg(feature = "qdrant")]
            ComponentConfig::Qdrant(c) => {
                let mut c = c.clone();
                c.logical = c.logical || options.logical;
                Self::Qdrant(
                    zdr_qdrant::QdrantComponent::new(component, c)?,
                    zdr_qdrant::RestoreOptions::default(),
                )
            }
        })
    }

    /// An adapter whose restores never touch live data: postgres restores into a scratch
    /// database, redis into a scratch server, qdrant into scratch collections it deletes
    /// after comparing them, files wherever the caller's target path says.
    #[cfg_attr(not(feature = "vault"), allow(unused_variables))]
    pub(crate) fn scratch(name: &str, config: &ComponentConfig) -> Result<Self> {
        let ty = ComponentType::of(config);
        match config {
            #[cfg(feature = "postgres")]
            ComponentConfig::Postgres(_) => Self::for_restore(
                name,
                config,
                &RestoreOptions {
                    postgres: zdr_postgres::RestoreOptions {
                        mode: zdr_postgres::RestoreMode::Scratch,
                        ..zdr_postgres::RestoreOptions::default()
                    },
                    ..RestoreOptions::default()
                },
            ),
            #[cfg(feature = "redis")]
            ComponentConfig::Redis(_) => Self::for_restore(
                name,
                config,
                &RestoreOptions {
                    redis: zdr_redis::RestoreOptions {
                        scratch: true,
                        replace: true,
                        pattern: None,
                    },
                    ..RestoreOptions::default()
                },
            ),
            #[cfg(feature = "files")]
            ComponentConfig::Files { .. } => {
                Self::for_restore(name, config, &RestoreOptions::default())
            }
            #[cfg(feature = "n8n")]
            ComponentConfig::N8n(_) => Err(Error::bad_input(format!(
                "{name} is a {ty} component: there is no scratch n8n to restore into; restore into a test instance and verify the backups instead"
            ))
            .with_context("component", name)),
            // Scratch buckets on the same endpoint, compared with the facts, then deleted.
            #[cfg(feature = "s3")]
            ComponentConfig::S3Bucket(c) => Ok(Self::S3(
                zdr_s3::S3BucketComponent::new(Component::new(name)?, c.clone())?,
                zdr_s3::RestoreOptions {
                    scratch: true,
                    ..zdr_s3::RestoreOptions::default()
                },
            )),
            #[cfg(feature = "vault")]
            ComponentConfig::Vault(_) => Err(Error::bad_input(format!(
                "{name} is a {ty} component: there is no scratch Vault to restore into (a drill would write into the live server); restore the logical export into a test Vault and verify the backups instead"
            ))
            .with_context("component", name)),
            #[cfg(feature = "qdrant")]
            ComponentConfig::Qdrant(c) => {
                let component = Component::new(name)?;
                // On the scratch server when one is configured.
                Ok(Self::Qdrant(
                    zdr_qdrant::QdrantComponent::new(component, c.for_scratch())?,
                    zdr_qdrant::RestoreOptions { scratch: true },
                ))
            }
        }
    }

    pub(crate) fn source(&self) -> &dyn BackupSource {
        match self {
            #[cfg(feature = "files")]
            Self::Files(f) => f,
            #[cfg(feature = "postgres")]
            Self::Postgres(p, _) => p,
            #[cfg(feature = "redis")]
            Self::Redis(r, _) => r,
            #[cfg(feature = "vault")]
            Self::Vault(v) => v,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(q, _) => q,
            #[cfg(feature = "s3")]
            Self::S3(s, _) => s,
            #[cfg(feature = "n8n")]
            Self::N8n(n) => n,
        }
    }

    /// The restorer, with this call's options.
    pub(crate) fn restorer(&self) -> RestorerFor<'_> {
        match self {
            #[cfg(feature = "files")]
            Self::Files(f) => RestorerFor::Component(f),
            #[cfg(feature = "postgres")]
            Self::Postgres(p, o) => RestorerFor::Postgres(p.restore_with(o.clone())),
            #[cfg(feature = "redis")]
            Self::Redis(r, o) => RestorerFor::Redis(r.restore_with(o.clone())),
            #[cfg(feature = "vault")]
            Self::Vault(v) => RestorerFor::Component(v),
            #[cfg(feature = "qdrant")]
            Self::Qdrant(q, o) => RestorerFor::Qdrant(q.restore_with(o.clone())),
            #[cfg(feature = "s3")]
            Self::S3(s, o) => RestorerFor::S3(s.restore_with(o.clone())),
            #[cfg(feature = "n8n")]
            Self::N8n(n) => RestorerFor::Component(n),
        }
    }

    pub(crate) fn verifier(&self) -> &dyn Verifier {
        match self {
            #[cfg(feature = "files")]
            Self::Files(f) => f,
            #[cfg(feature = "postgres")]
            Self::Postgres(p, _) => p,
            #[cfg(feature = "redis")]
            Self::Redis(r, _) => r,
            #[cfg(feature = "vault")]
            Self::Vault(v) => v,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(q, _) => q,
            #[cfg(feature = "s3")]
            Self::S3(s, _) => s,
            #[cfg(feature = "n8n")]
            Self::N8n(n) => n,
        }
    }

    /// True when the restorer verifies the data itself before making it live (postgres:
    /// the side database is checked before the swap), so a second check is not needed.
    pub(crate) fn verifies_itself(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(..) => true,
            #[cfg(feature = "redis")]
            Self::Redis(..) => true,
            #[cfg(feature = "vault")]
            Self::Vault(_) => true,
            // A scratch restore compares its collections with the facts before deleting them.
            #[cfg(feature = "qdrant")]
            Self::Qdrant(_, o) => o.scratch,
            // Every object written is read back and compared with its SHA-256.
            #[cfg(feature = "s3")]
            Self::S3(..) => true,
            // Every restored workflow is read back and compared.
            #[cfg(feature = "n8n")]
            Self::N8n(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// A component's restorer for one call: the component itself, or a call carrying its options.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RestorerFor<'a> {
    #[allow(dead_code)]
    Component(&'a dyn Restorer),
    #[cfg(feature = "postgres")]
    Postgres(zdr_core::RestoreCall<'a, zdr_postgres::PostgresComponent>),
    #[cfg(feature = "redis")]
    Redis(zdr_core::RestoreCall<'a, zdr_redis::RedisComponent>),
    #[cfg(feature = "qdrant")]
    Qdrant(zdr_core::RestoreCall<'a, zdr_qdrant::QdrantComponent>),
    #[cfg(feature = "s3")]
    S3(zdr_core::RestoreCall<'a, zdr_s3::S3BucketComponent>),
}

impl RestorerFor<'_> {
    pub(crate) fn as_ref(&self) -> &dyn Restorer {
        match self {
            Self::Component(r) => *r,
            #[cfg(feature = "postgres")]
            Self::Postgres(c) => c,
            #[cfg(feature = "redis")]
            Self::Redis(c) => c,
            #[cfg(feature = "qdrant")]
            Self::Qdrant(c) => c,
            #[cfg(feature = "s3")]
            Self::S3(c) => c,
        }
    }
}

/// Whether a restore with `options` can use `m` (a cheap check on the manifest, before any
/// byte is read): PostgreSQL restores only logical dumps (base backups are for
/// point-in-time recovery), redis `logical` only `SCAN` + `DUMP` exports, vault a raft
/// snapshot or (logical) a KV export, qdrant (logical) an export.
pub(crate) fn accepts(ty: ComponentType, options: &RestoreOptions, m: &Manifest) -> bool {
    match ty {
        ComponentType::Postgres => m.kind == BackupKind::Logical,
        ComponentType::Redis => !options.logical || m.kind == BackupKind::Logical,
        ComponentType::Vault => {
            m.kind
                == if options.logical {
                    BackupKind::Export
                } else {
                    BackupKind::Snapshot
                }
        }
        ComponentType::Qdrant => !options.logical || m.kind == BackupKind::Export,
        ComponentType::Files | ComponentType::S3Bucket | ComponentType::N8n => true,
    }
}

/// What each component type's backups of another kind are for, to explain a selection that
/// found only those.
pub(crate) fn other_kind_hint(ty: ComponentType, options: &RestoreOptions) -> &'static str {
    match ty {
        ComponentType::Postgres => {
            "base backups are restored by point-in-time recovery, not by a logical restore"
        }
        ComponentType::Redis | ComponentType::Qdrant if !options.logical => "",
        ComponentType::Redis | ComponentType::Qdrant => {
            "only logical exports can be restored logically"
        }
        ComponentType::Vault if options.logical => {
            "raft snapshots are restored without the logical option"
        }
        ComponentType::Vault => "KV exports are restored with the logical option",
        ComponentType::Files | ComponentType::S3Bucket | ComponentType::N8n => "",
    }
}

/// Where a restore goes when the caller names no target: the original location.
pub(crate) fn default_target(config: &ComponentConfig) -> Option<PathBuf> {
    match config {
        #[cfg(feature = "files")]
        ComponentConfig::Files { path } => Some(path.clone()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
