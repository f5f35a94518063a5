//! `zdr`: the disaster-recovery command line. A thin consumer of the zdr SDK: it reads the
//! config, builds tiers and components, calls the library, and presents the result.

mod config;
mod drill;
mod drill_pg;
mod drill_redis;
mod output;
mod pg_wal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::json;
use zdr_core::{
    BackupSelector, Catalog, Component, Error, ErrorKind, Progress, RestoreTarget, Result,
    StorageTier, Verifier,
};
use zdr_storage::{Repository, RetryPolicy, open_tier};

use crate::config::{ComponentConfig, Config};
use crate::output::{CliProgress, human_bytes};

/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: bad input (config, arguments, unknown names, wrong key).
const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: verification failed (checksums, manifests, restored data).
pub(crate) const EXIT_VERIFY: u8 = 3;

#[derive(Parser)]
#[command(
    name = "zdr",
    version,
    about = "Disaster recovery for self-hosted stacks"
)]
struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "ZDR_CONFIG", default_value = "zdr.toml")]
    config: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or progress lines (warnings still go to stderr).
    #[arg(long, global = true)]
    no_progress: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up one component to the primary tier.
    Backup {
        /// The component, as named in the config.
        component: String,
        /// The schedule name (default from the config).
        #[arg(long)]
        schedule: Option<String>,
        /// Replicate to the other tiers afterwards.
        #[arg(long)]
        replicate: bool,
        /// postgres: back up this database instead of the configured one.
        #[arg(long)]
        database: Option<String>,
        /// redis: SCAN + DUMP + PTTL export instead of an RDB snapshot. vault: export the KV
        /// mounts instead of a raft snapshot.
        #[arg(long)]
        logical: bool,
        /// vault: with --logical, allow an export into unencrypted artifacts.
        #[arg(long, requires = "logical")]
        allow_plaintext: bool,
        /// redis: with --logical, only keys matching this glob pattern.
        #[arg(long = "match", requires = "logical")]
        pattern: Option<String>,
        /// redis: with --logical, only this database.
        #[arg(long, requires = "logical")]
        db: Option<u32>,
        /// postgres: a physical base backup of the whole cluster (pg_basebackup), the starting
        /// point of point-in-time recovery, instead of a pg_dump of one database.
        #[arg(long, conflicts_with_all = ["logical", "database"])]
        base: bool,
    },
    /// List the backups on each tier.
    List {
        /// Only this tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Re-read every artifact and check sizes, checksums, sidecars and manifests.
    Verify {
        /// Only this component (same as --component).
        #[arg(conflicts_with = "component")]
        target: Option<String>,
        /// Only this tier (default: every tier in the config).
        #[arg(long)]
        tier: Option<String>,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
        /// Also decrypt and decompress every artifact.
        #[arg(long)]
        deep: bool,
        /// postgres: also restore the latest backup into a scratch database, compare it with
        /// the manifest's facts (tables, row counts, checksums), and drop it. redis: load the
        /// latest RDB into a scratch redis-server and compare key counts and DUMP digests.
        #[arg(long)]
        restore: bool,
        /// postgres: check the WAL archive on every WAL tier: gaps and corrupt segments per
        /// timeline (with --deep, every segment is also decoded).
        #[arg(long, conflicts_with = "restore")]
        wal: bool,
    },
    /// Restore a component from the first tier that holds the backup intact.
    Restore {
        /// The component.
        component: String,
        /// latest, previous, before:TIME, or a backup id.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// Restore into this directory instead of the original location.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Replace existing data that differs from the backup.
        #[arg(long)]
        overwrite: bool,
        /// Only read from this tier.
        #[arg(long)]
        tier: Option<String>,
        /// postgres: the database to restore (default: the one the backup was made of).
        #[arg(long)]
        database: Option<String>,
        /// postgres: restore only this table (schema.name) from a custom- or directory-format backup.
        #[arg(long)]
        table: Option<String>,
        /// postgres: with --table, restore it under this name instead of replacing it.
        #[arg(long = "as", requires = "table")]
        as_name: Option<String>,
        /// postgres: drop the live database and restore in its place (no side database, no
        /// rollback). Needs --yes-destroy-live.
        #[arg(long)]
        in_place: bool,
        /// Confirm that --in-place may destroy the live database.
        #[arg(long, requires = "in_place")]
        yes_destroy_live: bool,
        /// redis: restore the selected logical (SCAN + DUMP) backup with RESTORE. vault:
        /// import the selected logical KV export.
        #[arg(long)]
        logical: bool,
        /// vault: restore the raft snapshot with snapshot-force (a snapshot of another cluster).
        #[arg(long, conflicts_with = "logical")]
        force: bool,
        /// redis: with --logical, leave existing keys alone (they are reported) instead of
        /// replacing them.
        #[arg(long, requires = "logical")]
        no_replace: bool,
        /// redis: with --logical, only keys matching this glob pattern.
        #[arg(long = "match", requires = "logical")]
        pattern: Option<String>,
        /// vault: with --logical, import the exported mount FROM into the mount TO
        /// (repeatable: `--mount-map secret=secret-copy --mount-map kv=kv2`).
        #[arg(long = "mount-map", requires = "logical", value_parser = parse_mount_map)]
        mount_map: Vec<(String, String)>,
    },
    /// postgres: swap the database replaced by the last restore back in (the current one
    /// is kept, so rolling back again undoes the rollback).
    Rollback {
        /// The component.
        component: String,
        /// The database (default: the configured one).
        #[arg(long)]
        database: Option<String>,
    },
    /// Copy backups missing on the replica tiers (primary → first → second ...).
    Replicate {
        /// Source tier (default: the chain from the config).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Destination tier.
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// postgres: the WAL archive, for archive_command and restore_command.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
    /// postgres: point-in-time recovery. Restores the newest base backup before the target
    /// into a new data directory, replays archived WAL in a recovery instance on a side port
    /// until the target, and verifies it; the live cluster is untouched unless
    /// --apply-database copies a database across (safe restore, rollback kept).
    Pitr {
        /// The postgres component.
        component: String,
        /// Recover to this time (`2026-01-16 14:29:59`, RFC 3339, or with a zone offset;
        /// plain times are UTC).
        #[arg(long)]
        target_time: Option<String>,
        /// Recover to this WAL location (`0/16B3748`).
        #[arg(long)]
        target_lsn: Option<String>,
        /// Recover to this transaction id.
        #[arg(long)]
        target_xid: Option<String>,
        /// Recover to this restore point (`pg_create_restore_point`).
        #[arg(long)]
        target_name: Option<String>,
        /// `latest`: replay every archived segment.
        #[arg(long, value_parser = ["latest"])]
        target: Option<String>,
        /// Follow this timeline (default: the newest in the archive).
        #[arg(long)]
        timeline: Option<u32>,
        /// The new data directory (default: under wal.recovery_dir or the temp dir).
        #[arg(long)]
        to: Option<PathBuf>,
        /// The recovery instance's port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Copy this database from the recovered instance into the live cluster with the
        /// safe restore (side database, verification, swap; the old one is kept).
        #[arg(long)]
        apply_database: Option<String>,
        /// Stop and remove the recovery instance at the end (a PITR drill).
        #[arg(long, conflicts_with = "promote")]
        discard: bool,
        /// Promote the recovered instance to a primary on a new timeline that archives
        /// through the cluster's archive_command (it stays on the side port; point clients at
        /// it or swap it in). Later recoveries follow the new timeline.
        #[arg(long, conflicts_with = "apply_database")]
        promote: bool,
    },
    /// postgres: check that WAL archiving works end to end: settings, then a forced WAL
    /// switch whose segment must reach every WAL tier.
    Check {
        /// The postgres component.
        component: String,
        /// Seconds to wait for the segment (default: wal.archive_wait_secs, 60).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// The newest backup of every component, and the age of the newest archived WAL (RPO).
    Status {
        /// Only this component.
        component: Option<String>,
    },
    /// A recovery drill. With --sandbox: throwaway data and a local tier (back up, break,
    /// restore, verify, report). With a component: restore its latest backup into a scratch
    /// directory and verify it, leaving live data alone.
    Drill {
        /// Run on throwaway data, without any config.
        #[arg(long, conflicts_with = "component")]
        sandbox: bool,
        /// The component to drill.
        #[arg(required_unless_present = "sandbox")]
        component: Option<String>,
    },
}

#[derive(Subcommand)]
enum WalAction {
    /// archive_command: `zdr --config PATH wal push --component NAME %p`.
    Push {
        /// The WAL file (PostgreSQL's %p).
        path: PathBuf,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
    /// restore_command: `zdr --config PATH wal fetch --component NAME %f %p`. Exits 1 when
    /// the file is not archived (PostgreSQL ends recovery), 255 on any other failure
    /// (PostgreSQL stops instead of ending recovery early).
    Fetch {
        /// The WAL file name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
    /// Download the segments after AFTER into DIR (started in the background by `fetch`).
    #[command(hide = true)]
    Prefetch {
        /// The segment just fetched.
        after: String,
        /// The prefetch directory.
        dir: PathBuf,
        /// How many segments.
        #[arg(long, default_value_t = 4)]
        count: usize,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            report_error(
                &Error::unexpected("cannot start the runtime").with_source(e),
                cli.json,
            );
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let progress = Progress::new(Arc::new(CliProgress::new(cli.no_progress || cli.json)));
    match runtime.block_on(run(&cli, &progress)) {
        Ok(Outcome { value, code }) => {
            print_result(&value, cli.json);
            ExitCode::from(code)
        }
        Err(e) => {
            report_error(&e, cli.json);
            if let Command::Wal {
                action: WalAction::Fetch { .. },
            } = cli.command
            {
                return ExitCode::from(pg_wal::EXIT_WAL_FATAL);
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Decrypt | ErrorKind::Conflict => {
            EXIT_BAD_INPUT
        }
        ErrorKind::Integrity => EXIT_VERIFY,
        _ => EXIT_FAILED,
    }
}

#[allow(clippy::print_stderr, clippy::print_stdout)]
fn report_error(e: &Error, json: bool) {
    if json {
        let context: serde_json::Map<String, serde_json::Value> = e
            .context()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        println!(
            "{}",
            json!({"ok": false, "error": {"kind": e.kind().as_str(), "message": e.to_string(),
                   "context": context, "hint": e.hint(), "temporary": e.is_temporary()}})
        );
    }
    eprintln!("zdr: error: {e}");
}

#[allow(clippy::print_stdout)]
fn print_result(value: &Output, json: bool) {
    if json {
        println!("{}", value.json);
    } else {
        for line in &value.text {
            println!("{line}");
        }
    }
}

/// What a command prints: text lines, or JSON.
pub(crate) struct Output {
    text: Vec<String>,
    json: serde_json::Value,
}

pub(crate) struct Outcome {
    value: Output,
    code: u8,
}

impl Outcome {
    fn ok(text: Vec<String>, json: serde_json::Value) -> Self {
        Self {
            value: Output { text, json },
            code: 0,
        }
    }
}

async fn run(cli: &Cli, progress: &Progress) -> Result<Outcome> {
    if let Command::Drill { sandbox: true, .. } = &cli.command {
        return drill::sandbox(progress).await;
    }
    let mut config = Config::load(&cli.config, std::env::vars())?;
    if !matches!(
        cli.command,
        Command::List { .. }
            | Command::Replicate { .. }
            | Command::Wal { .. }
            | Command::Status { .. }
    ) {
        config.resolve_vault_references().await?;
    }
    let config = config;
    match &cli.command {
        Command::Backup {
            component,
            schedule,
            replicate,
            database,
            logical,
            allow_plaintext,
            pattern,
            db,
            base,
        } => {
            if *base {
                return pg_wal::base_backup(&config, component, schedule.as_deref(), progress)
                    .await;
            }
            let vault = VaultArgs {
                logical: *logical,
                allow_plaintext: *allow_plaintext,
                force: false,
                mount_map: Vec::new(),
            };
            let redis = RedisArgs {
                mode: if *logical {
                    Some(zdr_redis::BackupMode::Logical {
                        pattern: pattern.clone(),
                        db: *db,
                    })
                } else {
                    None
                },
                ..RedisArgs::default()
            };
            backup(
                &config,
                component,
                schedule.as_deref(),
                *replicate,
                database.as_deref(),
                (&redis, &vault),
                progress,
            )
            .await
        }
        Command::List { tier, component } => {
            list(&config, tier.as_deref(), component.as_deref()).await
        }
        Command::Verify {
            target,
            tier,
            component,
            deep: _,
            restore: true,
            wal: _,
        } => {
            let name = target.as_deref().or(component.as_deref()).ok_or_else(|| {
                Error::bad_input(
                    "verify --restore needs a component (zdr verify postgres --restore)",
                )
            })?;
            verify_restore(&config, name, tier.as_deref(), progress).await
        }
        Command::Verify {
            target,
            tier,
            component,
            deep,
            restore: false,
            wal,
        } => {
            let component = target.as_deref().or(component.as_deref());
            if *wal {
                let name = component
                    .ok_or_else(|| Error::bad_input("verify --wal needs a postgres component"))?;
                return pg_wal::verify_wal(&config, name, *deep, progress).await;
            }
            verify(&config, tier.as_deref(), component, *deep, progress).await
        }
        Command::Restore {
            component,
            backup,
            to,
            overwrite,
            tier,
            database,
            table,
            as_name,
            in_place,
            yes_destroy_live,
            logical,
            force,
            no_replace,
            pattern,
            mount_map,
        } => {
            let target = RestoreTarget {
                path: to.clone(),
                name: database.clone(),
                overwrite: *overwrite,
            };
            let pg = PgArgs {
                database: None,
                options: zdr_postgres::RestoreOptions {
                    mode: if *in_place {
                        zdr_postgres::RestoreMode::InPlace {
                            confirmed: *yes_destroy_live,
                        }
                    } else {
                        zdr_postgres::RestoreMode::Safe
                    },
                    table: table.clone(),
                    table_as: as_name.clone(),
                },
                used: database.is_some() || table.is_some() || *in_place,
            };
            let redis = RedisArgs {
                mode: None,
                restore: zdr_redis::RestoreOptions {
                    replace: !*no_replace,
                    pattern: pattern.clone(),
                    scratch: false,
                },
                logical: *logical,
            };
            restore(
                &config,
                component,
                backup,
                &target,
                tier.as_deref(),
                &AdapterArgs {
                    pg,
                    redis,
                    vault: VaultArgs {
                        logical: *logical,
                        allow_plaintext: false,
                        force: *force,
                        mount_map: mount_map.clone(),
                    },
                },
                progress,
            )
            .await
        }
        Command::Rollback {
            component,
            database,
        } => rollback(&config, component, database.as_deref(), progress).await,
        Command::Replicate { from, to } => {
            replicate(&config, from.as_deref(), to.as_deref(), progress).await
        }
        Command::Wal { action } => match action {
            WalAction::Push { path, component } => {
                pg_wal::push(&config, component.as_deref(), path, progress).await
            }
            WalAction::Fetch {
                name,
                dest,
                component,
            } => {
                pg_wal::fetch(
                    &config,
                    &cli.config,
                    component.as_deref(),
                    name,
                    dest,
                    progress,
                )
                .await
            }
            WalAction::Prefetch {
                after,
                dir,
                count,
                component,
            } => {
                pg_wal::prefetch(&config, component.as_deref(), after, dir, *count, progress).await
            }
        },
        Command::Pitr {
            component,
            target_time,
            target_lsn,
            target_xid,
            target_name,
            target,
            timeline,
            to,
            port,
            apply_database,
            discard,
            promote,
        } => {
            let args = pg_wal::PitrArgs {
                target_time: target_time.clone(),
                target_lsn: target_lsn.clone(),
                target_xid: target_xid.clone(),
                target_name: target_name.clone(),
                latest: target.is_some(),
                timeline: *timeline,
                to: to.clone(),
                port: *port,
                apply_database: apply_database.clone(),
                discard: *discard,
                promote: *promote,
                config_path: cli.config.clone(),
            };
            pg_wal::pitr(&config, component, &args, progress).await
        }
        Command::Check { component, timeout } => {
            pg_wal::check(&config, component, *timeout, progress).await
        }
        Command::Status { component } => pg_wal::status(&config, component.as_deref()).await,
        Command::Drill { component, .. } => {
            let name = component.as_deref().unwrap_or_default();
            drill::component(&config, name, progress).await
        }
    }
}

/// Postgres-only arguments of a command.
#[derive(Default)]
pub(crate) struct PgArgs {
    /// Back up this database instead of the configured one.
    database: Option<String>,
    /// How a restore treats the live database.
    options: zdr_postgres::RestoreOptions,
    /// True when the operator passed any postgres-only flag.
    used: bool,
}

/// The component-specific arguments of `zdr restore`.
pub(crate) struct AdapterArgs {
    pg: PgArgs,
    redis: RedisArgs,
    vault: VaultArgs,
}

/// Vault-only arguments of a command.
#[derive(Default)]
pub(crate) struct VaultArgs {
    /// `--logical`: KV export / import instead of a raft snapshot.
    logical: bool,
    /// `backup --allow-plaintext`.
    allow_plaintext: bool,
    /// `restore --force`: `snapshot-force`.
    force: bool,
    /// `restore --logical --mount-map FROM=TO`: import mount FROM into mount TO.
    mount_map: Vec<(String, String)>,
}

/// Parse `FROM=TO` for `--mount-map`.
fn parse_mount_map(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.trim_matches('/').is_empty() && !b.trim_matches('/').is_empty() => {
            Ok((a.to_owned(), b.to_owned()))
        }
        _ => Err(format!("{s:?} is not FROM=TO (such as secret=secret-copy)")),
    }
}

/// Redis-only arguments of a command.
#[derive(Default)]
pub(crate) struct RedisArgs {
    /// The backup mode asked for (`--logical`); physical otherwise.
    mode: Option<zdr_redis::BackupMode>,
    /// How a restore treats the server.
    restore: zdr_redis::RestoreOptions,
    /// `restore --logical`: select among logical backups.
    logical: bool,
}

impl RedisArgs {
    fn used(&self) -> bool {
        self.mode.is_some() || self.logical
    }
}

/// A component's source/restorer/verifier, built from the config.
pub(crate) enum Adapter {
    Files(zdr_files::FilesComponent),
    Postgres(zdr_postgres::PostgresComponent),
    Redis(zdr_redis::RedisComponent),
    Vault(zdr_vault::VaultComponent),
    Qdrant(zdr_qdrant::QdrantComponent),
}

impl Adapter {
    pub(crate) fn build(name: &str, config: &ComponentConfig) -> Result<Self> {
        Self::build_with(name, config, &PgArgs::default())
    }

    fn build_with(name: &str, config: &ComponentConfig, pg: &PgArgs) -> Result<Self> {
        Self::build_full(
            name,
            config,
            pg,
            &RedisArgs::default(),
            &VaultArgs::default(),
        )
    }

    /// An adapter whose restores never touch live data (postgres: scratch database).
    pub(crate) fn build_scratch(name: &str, config: &ComponentConfig) -> Result<Self> {
        if matches!(config, ComponentConfig::Vault(_)) {
            return Err(Error::bad_input(format!(
                "{name} is a vault component: there is no scratch Vault to restore into (a drill would write into the live server); use `zdr restore {name} --logical` into a test Vault and `zdr verify {name}`"
            )));
        }
        let pg = PgArgs {
            options: zdr_postgres::RestoreOptions {
                mode: zdr_postgres::RestoreMode::Scratch,
                ..zdr_postgres::RestoreOptions::default()
            },
            ..PgArgs::default()
        };
        let redis = RedisArgs {
            restore: zdr_redis::RestoreOptions {
                scratch: true,
                ..zdr_redis::RestoreOptions::default()
            },
            ..RedisArgs::default()
        };
        Self::build_full(name, config, &pg, &redis, &VaultArgs::default())
    }

    fn build_full(
        name: &str,
        config: &ComponentConfig,
        pg: &PgArgs,
        redis: &RedisArgs,
        vault: &VaultArgs,
    ) -> Result<Self> {
        let component = Component::new(name)?;
        if let ComponentConfig::Vault(c) = config {
            if pg.used || pg.database.is_some() {
                return Err(Error::bad_input(format!(
                    "--database, --table, --as and --in-place apply to postgres components; {name} is a vault component"
                )));
            }
            let redis_only = matches!(&redis.mode, Some(zdr_redis::BackupMode::Logical { pattern, db }) if pattern.is_some() || db.is_some())
                || redis.restore.pattern.is_some();
            if redis_only {
                return Err(Error::bad_input(format!(
                    "--match, --db and --no-replace apply to redis components; {name} is a vault component"
                )));
            }
            return Ok(Self::Vault(
                zdr_vault::VaultComponent::new(
                    component,
                    zdr_vault::VaultConfig {
                        client: c.client()?,
                        mounts: c
                            .mounts
                            .clone()
                            .unwrap_or_else(|| vec!["secret".to_owned()]),
                        allow_plaintext: vault.allow_plaintext,
                        raft_snapshot: !vault.logical,
                        force: vault.force,
                    },
                )
                .with_mount_map(vault.mount_map.clone()),
            ));
        }
        if !vault.mount_map.is_empty() {
            return Err(Error::bad_input(format!(
                "--mount-map applies to vault components; {name} is not one"
            )));
        }
        if vault.allow_plaintext || vault.force {
            return Err(Error::bad_input(format!(
                "--allow-plaintext and --force apply to vault components; {name} is not one"
            )));
        }
        if let ComponentConfig::Qdrant(c) = config {
            let redis_only = matches!(&redis.mode, Some(zdr_redis::BackupMode::Logical { pattern, db }) if pattern.is_some() || db.is_some())
                || redis.restore.pattern.is_some();
            if pg.options.table.is_some() || pg.options.table_as.is_some() || redis_only {
                return Err(Error::bad_input(format!(
                    "--table, --as, --match and --db do not apply to qdrant components; {name} is one (--database names the collection to restore into)"
                )));
            }
            let mut c = c.clone();
            c.logical = c.logical || redis.used();
            return Ok(Self::Qdrant(zdr_qdrant::QdrantComponent::new(
                component, c,
            )?));
        }
        if redis.used() && !matches!(config, ComponentConfig::Redis(_)) {
            return Err(Error::bad_input(format!(
                "--logical, --match, --db and --no-replace apply to redis components; {name} is not one"
            )));
        }
        match config {
            ComponentConfig::Redis(c) => {
                if pg.used || pg.database.is_some() {
                    return Err(Error::bad_input(format!(
                        "--database, --table, --as and --in-place apply to postgres components; {name} is a redis component"
                    )));
                }
                Ok(Self::Redis(
                    zdr_redis::RedisComponent::new(component, c.to_redis()?)
                        .with_backup_mode(redis.mode.clone().unwrap_or_default())
                        .with_restore_options(redis.restore.clone()),
                ))
            }
            ComponentConfig::Files { path } => {
                if pg.used || pg.database.is_some() {
                    return Err(Error::bad_input(format!(
                        "--database, --table, --as and --in-place apply to postgres components; {name} is a files component"
                    )));
                }
                Ok(Self::Files(zdr_files::FilesComponent::new(
                    component,
                    path.clone(),
                )))
            }
            ComponentConfig::Vault(_) | ComponentConfig::Qdrant(_) => Err(Error::unexpected(
                "vault and qdrant components are built above",
            )),
            ComponentConfig::Postgres(c) => Ok(Self::Postgres(
                zdr_postgres::PostgresComponent::new(component, c.to_pg(pg.database.as_deref())?)
                    .with_restore_options(pg.options.clone()),
            )),
        }
    }
    pub(crate) fn source(&self) -> &dyn zdr_core::BackupSource {
        match self {
            Self::Files(f) => f,
            Self::Postgres(p) => p,
            Self::Redis(r) => r,
            Self::Vault(v) => v,
            Self::Qdrant(q) => q,
        }
    }
    pub(crate) fn restorer(&self) -> &dyn zdr_core::Restorer {
        match self {
            Self::Files(f) => f,
            Self::Postgres(p) => p,
            Self::Redis(r) => r,
            Self::Vault(v) => v,
            Self::Qdrant(q) => q,
        }
    }
    pub(crate) fn verifier(&self) -> &dyn Verifier {
        match self {
            Self::Files(f) => f,
            Self::Postgres(p) => p,
            Self::Redis(r) => r,
            Self::Vault(v) => v,
            Self::Qdrant(q) => q,
        }
    }
    /// True when the restorer verifies the data itself before making it live (postgres:
    /// the side database is checked before the swap).
    pub(crate) fn verifies_itself(&self) -> bool {
        matches!(self, Self::Postgres(_) | Self::Redis(_) | Self::Vault(_))
    }
    fn postgres(&self, name: &str) -> Result<&zdr_postgres::PostgresComponent> {
        match self {
            Self::Postgres(p) => Ok(p),
            Self::Files(_) | Self::Redis(_) | Self::Vault(_) | Self::Qdrant(_) => {
                Err(Error::bad_input(format!(
                    "{name} is not a postgres component; this command applies to postgres components"
                )))
            }
        }
    }
    /// Where a restore goes when the operator names no target: the original location.
    pub(crate) fn default_target(config: &ComponentConfig) -> Option<PathBuf> {
        match config {
            ComponentConfig::Files { path } => Some(path.clone()),
            ComponentConfig::Postgres(_)
            | ComponentConfig::Redis(_)
            | ComponentConfig::Vault(_)
            | ComponentConfig::Qdrant(_) => None,
        }
    }
}

/// The catalog without base backups: what logical (pg_dump) restores choose from.
pub(crate) fn logical_only(catalog: Catalog, tier: &str, comp: &Component) -> Catalog {
    let logical: Vec<zdr_core::Manifest> = catalog
        .list(Some(comp))
        .into_iter()
        .filter(|m| m.kind == zdr_core::BackupKind::Logical)
        .cloned()
        .collect();
    Catalog::from_manifests(tier, logical)
}

pub(crate) fn repository(config: &Config, tier: &str) -> Result<Repository> {
    let t = open_tier(tier, config.tier(tier)?)?;
    Ok(Repository::new(t, config.pipeline_options()?))
}

async fn backup(
    config: &Config,
    component: &str,
    schedule: Option<&str>,
    then_replicate: bool,
    database: Option<&str>,
    (redis, vault): (&RedisArgs, &VaultArgs),
    progress: &Progress,
) -> Result<Outcome> {
    let pg = PgArgs {
        database: database.map(str::to_owned),
        ..PgArgs::default()
    };
    let adapter = Adapter::build_full(component, config.component(component)?, &pg, redis, vault)?;
    let repo = repository(config, &config.primary)?;
    let started = Instant::now();
    let m = repo
        .backup(
            adapter.source(),
            schedule.unwrap_or(&config.schedule),
            progress,
        )
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let raw: u64 = m.artifacts.iter().map(|a| a.raw_size).sum();
    let mut text = vec![format!(
        "backed up {} as {} on {}: {} stored ({} raw) in {secs:.2}s",
        m.component,
        m.id,
        config.primary,
        human_bytes(m.stored_size()),
        human_bytes(raw)
    )];
    for a in &m.artifacts {
        text.push(format!(
            "  {}  {}  sha256 {}",
            a.key,
            human_bytes(a.size),
            a.sha256
        ));
    }
    let mut value = json!({"ok": true, "backup": m, "tier": config.primary, "seconds": secs});
    if then_replicate {
        let r = replicate(config, None, None, progress).await?;
        text.extend(r.value.text);
        value["replication"] = r.value.json;
        if r.code != 0 {
            return Ok(Outcome {
                value: Output { text, json: value },
                code: r.code,
            });
        }
    }
    Ok(Outcome::ok(text, value))
}

async fn list(config: &Config, tier: Option<&str>, component: Option<&str>) -> Result<Outcome> {
    let tiers: Vec<String> = match tier {
        Some(t) => vec![config.tier(t).map(|_| t.to_owned())?],
        None => config.tiers.keys().cloned().collect(),
    };
    let component = component.map(Component::new).transpose()?;
    let mut text = Vec::new();
    let mut out = Vec::new();
    for t in tiers {
        let tier = open_tier(&t, config.tier(&t)?)?;
        let catalog = Catalog::load(tier.as_ref()).await?;
        text.push(format!("tier {t}:"));
        let list = catalog.list(component.as_ref());
        if list.is_empty() {
            text.push("  (no backups)".to_owned());
        }
        for m in &list {
            text.push(format!(
                "  {:<12} {}  {}  {:<9} {:>10}  {} artifact(s)",
                m.component.as_str(),
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                m.schedule,
                human_bytes(m.stored_size()),
                m.artifacts.len()
            ));
        }
        for p in catalog.problems() {
            text.push(format!("  UNUSABLE {}: {}", p.key, p.error));
        }
        out.push(
            json!({"tier": t, "backups": list, "problems": catalog.problems().iter()
            .map(|p| json!({"key": p.key, "error": p.error.to_string()})).collect::<Vec<_>>()}),
        );
    }
    Ok(Outcome::ok(text, json!({"ok": true, "tiers": out})))
}

async fn verify(
    config: &Config,
    tier: Option<&str>,
    component: Option<&str>,
    deep: bool,
    progress: &Progress,
) -> Result<Outcome> {
    let tiers: Vec<String> = match tier {
        Some(t) => vec![config.tier(t).map(|_| t.to_owned())?],
        None => config.tiers.keys().cloned().collect(),
    };
    let component = component.map(Component::new).transpose()?;
    let options = config.pipeline_options()?;
    let mut text = Vec::new();
    let mut failures = Vec::new();
    let mut checked = 0u64;
    for t in &tiers {
        let repo = Repository::new(open_tier(t, config.tier(t)?)?, options.clone());
        let catalog = repo.catalog().await?;
        for p in catalog.problems() {
            failures.push(json!({"tier": t, "key": p.key, "error": p.error.to_string()}));
            text.push(format!("FAIL {t} {}: {}", p.key, p.error));
        }
        for m in catalog.list(component.as_ref()) {
            match repo.verify(m, deep, progress).await {
                Ok(()) => {
                    checked += 1;
                    text.push(format!(
                        "ok   {t} {} {} ({} artifact(s), {})",
                        m.component,
                        m.id,
                        m.artifacts.len(),
                        human_bytes(m.stored_size())
                    ));
                }
                Err(e) => {
                    text.push(format!("FAIL {t} {} {}: {e}", m.component, m.id));
                    failures.push(json!({"tier": t, "component": m.component, "backup": m.id,
                        "kind": e.kind().as_str(), "error": e.to_string()}));
                }
            }
        }
    }
    let ok = failures.is_empty();
    text.push(format!(
        "{}: {checked} backup(s) intact, {} problem(s)",
        if ok {
            "verified"
        } else {
            "VERIFICATION FAILED"
        },
        failures.len()
    ));
    Ok(Outcome {
        value: Output {
            text,
            json: json!({"ok": ok, "intact": checked, "failures": failures}),
        },
        code: if ok { 0 } else { EXIT_VERIFY },
    })
}

async fn restore(
    config: &Config,
    component: &str,
    selector: &str,
    target: &RestoreTarget,
    only_tier: Option<&str>,
    args: &AdapterArgs,
    progress: &Progress,
) -> Result<Outcome> {
    let (pg, redis) = (&args.pg, &args.redis);
    let component_config = config.component(component)?;
    let adapter = Adapter::build_full(component, component_config, pg, redis, &args.vault)?;
    let is_vault = matches!(adapter, Adapter::Vault(_));
    let mut target = target.clone();
    if target.path.is_none() {
        target.path = Adapter::default_target(component_config);
    }
    let target = &target;
    let comp = Component::new(component)?;
    let selector: BackupSelector = selector.parse()?;
    let tiers = match only_tier {
        Some(t) => vec![config.tier(t).map(|_| t.to_owned())?],
        None => config.restore_order(),
    };
    let options = config.pipeline_options()?;
    let mut last_err: Option<Error> = None;
    for t in &tiers {
        let tier: Arc<dyn StorageTier> = match open_tier(t, config.tier(t)?) {
            Ok(t) => t,
            Err(e) => {
                progress.warn(format!("tier {t} unusable: {e}"));
                last_err = Some(e);
                continue;
            }
        };
        let repo = Repository::new(tier, options.clone());
        let catalog = match repo.catalog().await {
            Ok(c) => c,
            Err(e) => {
                progress.warn(format!("cannot read the catalog of tier {t}: {e}"));
                last_err = Some(e);
                continue;
            }
        };
        let catalog = if matches!(adapter, Adapter::Postgres(_)) {
            logical_only(catalog, t, &comp)
        } else if redis.logical || is_vault {
            // `restore redis --logical`: choose among the logical backups only; vault: among
            // the KV exports (--logical) or the raft snapshots.
            let wanted = if matches!(adapter, Adapter::Qdrant(_)) {
                zdr_core::BackupKind::Export
            } else if !is_vault {
                zdr_core::BackupKind::Logical
            } else if redis.logical {
                zdr_core::BackupKind::Export
            } else {
                zdr_core::BackupKind::Snapshot
            };
            let logical: Vec<zdr_core::Manifest> = catalog
                .list(Some(&comp))
                .into_iter()
                .filter(|m| m.kind == wanted)
                .cloned()
                .collect();
            Catalog::from_manifests(t, logical)
        } else {
            catalog
        };
        let m = match catalog.select(&comp, &selector) {
            Ok(m) => m.clone(),
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        let started = Instant::now();
        match repo.restore(adapter.restorer(), &m, target, progress).await {
            Ok(outcome) => {
                let restore_secs = started.elapsed().as_secs_f64();
                let verify_target = RestoreTarget {
                    path: target.path.clone(),
                    name: target.name.clone(),
                    ..RestoreTarget::default()
                };
                let report = if adapter.verifies_itself() {
                    // Checked by the restorer before the data went live (a second check
                    // now would race with clients already writing to it).
                    zdr_core::VerifyReport {
                        checked: outcome.items,
                        problems: Vec::new(),
                    }
                } else {
                    adapter.verifier().verify(&m, &verify_target).await?
                };
                let secs = started.elapsed().as_secs_f64();
                let mut text = vec![format!(
                    "restored {} {} from tier {t} into {}: {} item(s), {} in {restore_secs:.2}s",
                    m.component,
                    m.id,
                    outcome.target,
                    outcome.items,
                    human_bytes(outcome.bytes)
                )];
                text.extend(outcome.notes.iter().map(|n| format!("  note: {n}")));
                let ok = report.is_ok();
                text.push(format!(
                    "verification: {} ({} checked{}); RTO {secs:.2}s",
                    if ok { "passed" } else { "FAILED" },
                    report.checked,
                    if ok {
                        String::new()
                    } else {
                        format!(", {} problem(s)", report.problems.len())
                    }
                ));
                text.extend(report.problems.iter().map(|p| format!("  problem: {p}")));
                return Ok(Outcome {
                    value: Output {
                        text,
                        json: json!({"ok": ok, "backup": m.id, "component": m.component, "tier": t,
                            "outcome": outcome, "verify": report, "rto_seconds": secs}),
                    },
                    code: if ok { 0 } else { EXIT_VERIFY },
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::Integrity | ErrorKind::Storage) => {
                progress.warn(format!(
                    "backup {} on tier {t} cannot be used ({e}); trying the next tier",
                    m.id
                ));
                last_err = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| Error::not_found(format!("no backup of {component}"))))
}

async fn replicate(
    config: &Config,
    from: Option<&str>,
    to: Option<&str>,
    progress: &Progress,
) -> Result<Outcome> {
    let pairs: Vec<(String, String)> = match (from, to) {
        (Some(f), Some(t)) => {
            config.tier(f)?;
            config.tier(t)?;
            vec![(f.to_owned(), t.to_owned())]
        }
        _ => {
            let chain = config.restore_order();
            chain
                .windows(2)
                .map(|w| (w[0].clone(), w[1].clone()))
                .collect()
        }
    };
    if pairs.is_empty() {
        return Err(Error::bad_input(
            "nothing to replicate: set replicate_to in the config, or pass --from and --to",
        ));
    }
    let mut text = Vec::new();
    let mut out = Vec::new();
    let mut failed = false;
    for (f, t) in pairs {
        let from_tier = open_tier(&f, config.tier(&f)?)?;
        let to_tier = open_tier(&t, config.tier(&t)?)?;
        let report =
            zdr_storage::replicate(&from_tier, &to_tier, &RetryPolicy::default(), progress).await?;
        text.push(format!(
            "{f} -> {t}: {} copied ({}), {} already there, {} failed",
            report.copied.len(),
            human_bytes(report.bytes),
            report.already_present,
            report.failed.len()
        ));
        for (id, e) in &report.failed {
            text.push(format!("  FAILED {id}: {e}"));
        }
        failed |= !report.failed.is_empty();
        out.push(json!({"from": f, "to": t, "copied": report.copied, "already_present": report.already_present,
            "bytes": report.bytes, "failed": report.failed.iter().map(|(id, e)| json!({"backup": id,
            "error": e.to_string(), "kind": e.kind().as_str()})).collect::<Vec<_>>()}));
    }
    Ok(Outcome {
        value: Output {
            text,
            json: json!({"ok": !failed, "replications": out}),
        },
        code: if failed { EXIT_FAILED } else { 0 },
    })
}

async fn rollback(
    config: &Config,
    component: &str,
    database: Option<&str>,
    progress: &Progress,
) -> Result<Outcome> {
    let adapter = Adapter::build(component, config.component(component)?)?;
    let pg = adapter.postgres(component)?;
    let db = database.unwrap_or(&pg.config().database).to_owned();
    let out = pg.rollback(&db, progress).await?;
    Ok(Outcome::ok(
        vec![format!(
            "rolled {} back to {}; the replaced database is kept as {} (roll back again to undo)",
            out.database, out.restored_from, out.displaced_to
        )],
        json!({"ok": true, "rollback": out}),
    ))
}

async fn verify_restore(
    config: &Config,
    component: &str,
    tier: Option<&str>,
    progress: &Progress,
) -> Result<Outcome> {
    let adapter = Adapter::build_scratch(component, config.component(component)?)?;
    if !matches!(adapter, Adapter::Redis(_)) {
        adapter.postgres(component)?;
    }
    let tier = tier.unwrap_or(&config.primary);
    let repo = repository(config, tier)?;
    let comp = Component::new(component)?;
    let catalog = repo.catalog().await?;
    let catalog = if matches!(adapter, Adapter::Postgres(_)) {
        logical_only(catalog, tier, &comp)
    } else {
        catalog
    };
    let m = catalog.select(&comp, &BackupSelector::Latest)?.clone();
    let started = Instant::now();
    let outcome = repo
        .restore(adapter.restorer(), &m, &RestoreTarget::default(), progress)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let mut text = vec![format!(
        "verified {} {} from tier {tier} by restoring it into {} ({} {}, {}) in {secs:.2}s",
        m.component,
        m.id,
        outcome.target,
        outcome.items,
        if matches!(adapter, Adapter::Redis(_)) {
            "key(s)"
        } else {
            "table(s)"
        },
        human_bytes(outcome.bytes)
    )];
    text.extend(outcome.notes.iter().map(|n| format!("  note: {n}")));
    Ok(Outcome::ok(
        text,
        json!({"ok": true, "backup": m.id, "tier": tier, "outcome": outcome, "seconds": secs}),
    ))
}
