//! # zdr-postgres
//!
//! The zdr component for PostgreSQL (the runbook's "Single Database Recovery"):
//! [`PostgresComponent`] streams `pg_dump` of one database into the artifact pipeline
//! (plain SQL or custom format, plus `pg_dumpall --globals-only`), records [`PgFacts`]
//! (server version, size, tables with exact row counts and optional checksums, sequences,
//! large objects, extensions) in the dump's own snapshot, restores **beside** the live
//! database and swaps only after verification, rolls a swap back, and restores single
//! tables.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> zdr_core::Result<()> {
//! use zdr_core::{BackupSelector, Component, Progress, RestoreTarget};
//! use zdr_postgres::{PgConfig, PostgresComponent};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let tier = open_tier("local", &TierConfig::Fs { root: "/var/backups/zdr".into() })?;
//! let repo = Repository::new(tier, PipelineOptions::default());
//! let mut config = PgConfig::new("127.0.0.1", 5432, "postgres", "zentoria_main");
//! config.password = std::env::var("PGPASSWORD").ok().map(Into::into);
//! let pg = PostgresComponent::new(Component::new("postgres")?, config);
//!
//! // Back up: pg_dump -Fc streamed through compression, checksums, age.
//! let manifest = repo.backup(&pg, "daily", &Progress::none()).await?;
//!
//! // Restore: into zentoria_main__zdr_restore_<id>, verified against the facts, then
//! // swapped in; the old database stays as zentoria_main__zdr_old_<timestamp>.
//! let latest = repo.catalog().await?.select(pg.component(), &BackupSelector::Latest)?.clone();
//! let outcome = repo.restore(&pg, &latest, &RestoreTarget::default(), &Progress::none()).await?;
//! println!("{}: {:?}", outcome.target, outcome.notes);
//!
//! // Changed our mind: put the previous database back.
//! pg.rollback("zentoria_main", &Progress::none()).await?;
//! # Ok(()) }
//! ```
//!
//! ## Rules
//! - The dump is never held in memory. A plain or custom-format backup is never written to
//!   a temporary file: `pg_dump`'s stdout is copied into the artifact writer.
//! - Restores read each artifact once (the storage layer checks only the sidecars first,
//!   see [`zdr_core::Restorer::verifies_while_reading`]) and run in parallel by default.
//!   A custom-format artifact is copied once into a private spool file under
//!   [`PgConfig::spool_dir`] — the copy is the checksum pass: a mismatch stops the restore
//!   before any database is created — then loaded with `pg_restore -j N`
//!   ([`PgConfig::jobs`], default the number of cores). A plain-format artifact (which
//!   `psql` can only load in one stream) streams into `psql --single-transaction` on the
//!   side database, which is dropped, never swapped in, if the checksum at the stream's end
//!   fails; an in-place restore spools it first, since it drops the live database.
//! - The directory format ([`DumpFormat::Directory`], `pg_dump -Fd -j N`) cannot stream: it
//!   is dumped into a private spool directory under [`PgConfig::spool_dir`] (disk space for
//!   one uncompressed dump), streamed as one tar artifact (`.dir.tar`), and the spool is
//!   removed (also on failure). Its restore unpacks the verified artifact into a spool
//!   (only flat regular files: `..`, absolute paths and links are refused), then runs
//!   `pg_restore -j N` ([`PgConfig::jobs`]) on it into the side database; verification and
//!   swap are the same.
//! - The password reaches the tools only through `PGPASSWORD` in their environment; it is
//!   scrubbed from captured stderr and never shown by `Debug`.
//! - Tools run through a [`zdr_core::CommandRunner`] (local processes by default; a
//!   container runner plugs in with [`PostgresComponent::with_runner`]). Their major version
//!   is checked against the server's.
//! - A full restore goes to `<db>__zdr_restore_<backup id>`; leftovers of killed runs are
//!   dropped on the next run. `RestoreMode::InPlace` drops the live database first and is
//!   refused unless confirmed.
//! - Not restored: database-level settings (`ALTER DATABASE ... SET`), grants on the
//!   database itself, and globals (the globals artifact is stored for a manual
//!   `psql -f`; roles normally exist on the server being restored).

pub mod basebackup;
mod copyin;
mod custom;
mod dir;
mod facts;
mod pg;
pub mod pitr;
mod restore;
mod settings;
mod streamed;
mod tools;
pub mod wal;
pub mod walname;

pub use wal::{WalSettings, switch_wal, wal_settings};

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, BackupRequest, BackupSource, CommandRunner,
    Component, Error, ErrorKind, LocalRunner, Manifest, Progress, RestoreCall, RestoreOutcome,
    RestoreTarget, RestoreWithOptions, Restorer, Result, SourceFacts, Verifier, VerifyReport,
};

pub use facts::{FACTS_FORMAT, PgFacts, SequenceFact, TableFact};
pub use restore::RollbackOutcome;

pub use settings::{PostgresSettings, WalArchiveSettings};
pub use zdr_core::Secret;

/// The dump format of a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// Plain SQL (`.sql`): `gunzip | psql` restores it by hand, as the runbook does.
    Plain,
    /// pg_dump's custom format (`.dump`): selective restore of single tables.
    #[default]
    Custom,
    /// pg_dump's directory format with `jobs` parallel workers (`pg_dump -Fd -j N`), for
    /// large databases: dumped into a spool directory on disk ([`PgConfig::spool_dir`],
    /// room for one uncompressed dump), stored as one tar artifact (`.dir.tar`), and
    /// restored with `pg_restore -j` ([`PgConfig::jobs`]) from an unpacked spool. By hand:
    /// `mkdir d && zstd -dc x.dir.tar.zst | tar -x -C d && pg_restore -j 4 -d DB d`.
    Directory {
        /// Parallel jobs of `pg_dump` (at least 1); restores use [`PgConfig::jobs`].
        jobs: u32,
    },
}

/// The default number of jobs of [`DumpFormat::Directory`] when none is given.
pub const DEFAULT_JOBS: u32 = 2;

/// The default number of parallel `pg_restore` jobs: the number of cores.
#[must_use]
pub fn default_restore_jobs() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1)
        .clamp(1, 256)
}

impl DumpFormat {
    /// The artifact's extension.
    #[must_use]
    pub fn ext(self) -> &'static str {
        match self {
            Self::Plain => "sql",
            Self::Custom => "dump",
            Self::Directory { .. } => "dir.tar",
        }
    }

    /// The format's name for `pg_dump --format`.
    #[must_use]
    pub fn pg_name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Custom => "custom",
            Self::Directory { .. } => "directory",
        }
    }

    /// True for the formats `pg_restore` reads (custom, directory): single-table restores.
    #[must_use]
    pub fn is_archive(self) -> bool {
        !matches!(self, Self::Plain)
    }
}

impl std::str::FromStr for DumpFormat {
    type Err = Error;
    /// `plain` (`sql`), `custom` (`dump`), `directory` (`dir`, with [`DEFAULT_JOBS`]) or
    /// `directory:N` (N jobs).
    fn from_str(s: &str) -> Result<Self> {
        let (name, jobs) = match s.split_once(':') {
            Some((n, j)) => (n, Some(j)),
            None => (s, None),
        };
        match (name, jobs) {
            ("plain" | "sql", None) => Ok(Self::Plain),
            ("custom" | "dump", None) => Ok(Self::Custom),
            ("directory" | "dir", None) => Ok(Self::Directory { jobs: DEFAULT_JOBS }),
            ("directory" | "dir", Some(j)) => match j.parse::<u32>() {
                Ok(jobs) if (1..=256).contains(&jobs) => Ok(Self::Directory { jobs }),
                _ => Err(Error::bad_input(format!(
                    "invalid number of jobs {j:?} in dump format {s:?}: use 1 to 256"
                ))),
            },
            _ => Err(Error::bad_input(format!(
                "unknown dump format {s:?}: use plain, custom, directory or directory:N"
            ))),
        }
    }
}

/// Where and how to connect, and where the client tools are.
#[derive(Clone)]
pub struct PgConfig {
    /// Host name, IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Password; handed to tools as `PGPASSWORD` only.
    pub password: Option<Secret>,
    /// The database backed up (and restored by default).
    pub database: String,
    /// The database used for `CREATE`/`DROP`/`ALTER DATABASE` (default `postgres`).
    pub maintenance_database: String,
    /// Where `pg_dump`, `pg_dumpall`, `pg_restore` and `psql` are (default: `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// The dump format.
    pub format: DumpFormat,
    /// Also store `pg_dumpall --globals-only` (roles, tablespaces).
    pub globals: bool,
    /// Count every table's rows exactly (switch off for huge tables).
    pub row_counts: bool,
    /// Record an md5 over each table's rows (reads every row once more).
    pub checksums: bool,
    /// Where restores of custom- and directory-format backups, and directory-format dumps,
    /// are spooled (default: the system temp dir). It needs free **disk** space for one
    /// uncompressed dump (about the size of the data without indexes; a restore checks it
    /// first); memory use does not grow with it. With a container runner, the tools must see
    /// this directory at the same path (a bind mount).
    pub spool_dir: Option<PathBuf>,
    /// Parallel `pg_restore` jobs of a restore (default: the number of cores,
    /// [`default_restore_jobs`]); [`RestoreOptions::jobs`] overrides it for one call.
    pub jobs: u32,
    /// How long a restore or rollback waits for another one of the same database (its
    /// advisory lock) before failing with a conflict; a run killed a moment ago can still
    /// hold it while its last server command finishes (default 30 s).
    pub lock_wait: std::time::Duration,
}

impl PgConfig {
    /// A config with the defaults: custom format, globals, row counts, no checksums, spool
    /// in the system temp dir.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        database: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            database: database.into(),
            maintenance_database: "postgres".into(),
            bin_dir: None,
            format: DumpFormat::Custom,
            globals: true,
            row_counts: true,
            checksums: false,
            spool_dir: None,
            jobs: default_restore_jobs(),
            lock_wait: std::time::Duration::from_secs(30),
        }
    }

    /// Remove the password from a text (tool output, driver messages).
    pub fn scrub(&self, text: &str) -> String {
        let text = match &self.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
            _ => text.to_owned(),
        };
        // Connection strings echoed by a tool: `password=...` up to the next space/quote.
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(i) = rest.to_ascii_lowercase().find("password=") {
            let (head, tail) = rest.split_at(i + "password=".len());
            out.push_str(head);
            let end = match tail.chars().next() {
                Some(q @ ('\'' | '"')) => tail[1..].find(q).map_or(tail.len(), |j| j + 2),
                _ => tail.find(char::is_whitespace).unwrap_or(tail.len()),
            };
            if end > 0 {
                out.push_str("<redacted>");
            }
            rest = &tail[end..];
        }
        out.push_str(rest);
        out
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("maintenance_database", &self.maintenance_database)
            .field("bin_dir", &self.bin_dir)
            .field("format", &self.format)
            .field("globals", &self.globals)
            .field("row_counts", &self.row_counts)
            .field("checksums", &self.checksums)
            .field("spool_dir", &self.spool_dir)
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// How a restore treats the live database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Restore into `<db>__zdr_restore_<id>`, verify, then swap by renaming; the old
    /// database is kept as `<db>__zdr_old_<timestamp>`.
    #[default]
    Safe,
    /// Drop the live database, then restore into a new one of the same name. Refused
    /// unless `confirmed` is true.
    InPlace {
        /// The operator confirmed the live database may be destroyed.
        confirmed: bool,
    },
    /// Restore into `<db>__zdr_verify_<id>`, verify, and drop it: the live database is
    /// never touched (`zdr verify postgres --restore`).
    Scratch,
}

/// What a restore does, beyond the [`RestoreTarget`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Safe (default), in place, or scratch.
    pub mode: RestoreMode,
    /// Restore only this table (`schema.name`, or `name` in `public`); needs a custom-format
    /// backup.
    pub table: Option<String>,
    /// With `table`: restore it under this name (in the same schema) instead of replacing it.
    pub table_as: Option<String>,
    /// Parallel `pg_restore` jobs for this call (default: [`PgConfig::jobs`]).
    pub jobs: Option<u32>,
}

/// Backs up, restores and verifies one PostgreSQL database.
#[derive(Clone)]
pub struct PostgresComponent {
    component: Component,
    config: PgConfig,
    runner: Arc<dyn CommandRunner>,
}

impl fmt::Debug for PostgresComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresComponent")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("runner", &self.runner.describe())
            .finish()
    }
}

impl PostgresComponent {
    /// A component for `config`, running the tools as local processes (from
    /// `config.bin_dir` when set).
    #[must_use]
    pub fn new(component: Component, config: PgConfig) -> Self {
        let runner = LocalRunner::shared(config.bin_dir.as_deref());
        Self {
            component,
            config,
            runner,
        }
    }

    /// Run the tools through another runner (such as `docker exec` into the database
    /// container).
    #[must_use]
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// A restore with `options` for one call: the returned value is the [`Restorer`] to hand
    /// to the storage layer (`Repository::restore`). [`Restorer::restore`] on the component
    /// itself uses the default options (the safe restore of the whole database).
    #[must_use]
    pub fn restore_with(&self, options: RestoreOptions) -> RestoreCall<'_, Self> {
        RestoreCall::new(self, options)
    }

    /// The component.
    #[must_use]
    pub fn component(&self) -> &Component {
        &self.component
    }

    /// The connection settings.
    #[must_use]
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    fn context(&self, e: Error) -> Error {
        e.with_context("component", &self.component)
    }

    async fn backup_inner(
        &self,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let c = &self.config;
        let db = c.database.as_str();
        let mut conn = pg::connect(c, db).await?;
        let (server_version, server_version_num, database_size) =
            facts::server(&mut conn, c).await?;
        tools::check_version(
            self.runner.as_ref(),
            c,
            "pg_dump",
            server_version_num,
            &server_version,
        )
        .await?;
        let superuser: bool =
            sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                .fetch_optional(&mut conn)
                .await
                .map_err(|e| pg::db_error(e, c, "cannot read the current role"))?
                .unwrap_or(false);

        // One snapshot for the facts and the dump.
        pg::exec(
            &mut conn,
            c,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .await?;
        let snapshot: String = sqlx::query("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| pg::db_error(e, c, "cannot export a snapshot"))?
            .get(0);
        // Sequences are not transactional: read them before pg_dump does.
        let sequences = facts::sequences(&mut conn, c).await?;

        let artifact = artifact_name(db);
        let task = format!("pg_dump {db}");
        progress.start(&task, Some(u64::try_from(database_size).unwrap_or(0)));
        let spec = tools::spec(c, "pg_dump", db).args([
            format!("--format={}", c.format.pg_name()),
            "--compress=0".to_owned(),
            format!("--snapshot={snapshot}"),
        ]);
        let (dumped, observed) = if let DumpFormat::Directory { jobs } = c.format {
            let spool = dir::Spool::create(c, progress)?;
            let res = async {
                let mut spec = spec.args([
                    format!("--jobs={}", jobs.max(1)),
                    "--file".to_owned(),
                    spool.dump_dir().display().to_string(),
                ]);
                spec.stdout = false;
                let dump = async {
                    let (run, tail) = tools::spawn(self.runner.as_ref(), c, &spec).await?;
                    tools::finish(run, tail, c, "pg_dump").await
                };
                let none = facts::Counted::new();
                let data = facts::observe_data(&mut conn, c, c.row_counts, c.checksums, &none);
                let (dumped, observed) = tokio::join!(dump, data);
                let _ = pg::exec(&mut conn, c, "COMMIT").await;
                dumped?;
                let observed = observed?;
                let writer = sink.create(&artifact, c.format.ext()).await?;
                let (writer, n) = dir::pack(&spool, writer).await?;
                writer.finish().await?;
                Ok::<_, Error>((n, observed))
            }
            .await;
            spool.remove().await;
            pg::close(conn).await;
            res?
        } else {
            let mut writer = sink.create(&artifact, c.format.ext()).await?;
            let (run, tail) = tools::spawn(self.runner.as_ref(), c, &spec).await?;
            let dump = tools::drain(run, tail, &mut writer, c, "pg_dump");
            let none = facts::Counted::new();
            let data = facts::observe_data(&mut conn, c, c.row_counts, c.checksums, &none);
            let (dumped, observed) = tokio::join!(dump, data);
            let _ = pg::exec(&mut conn, c, "COMMIT").await;
            pg::close(conn).await;
            let dumped = dumped?;
            let observed = observed?;
            writer.finish().await?;
            (dumped, observed)
        };
        progress.finish(&task);

        let globals_artifact = if c.globals {
            let name = "globals".to_owned();
            let mut w = sink.create(&name, "sql").await?;
            let mut spec =
                tools::spec(c, "pg_dumpall", &c.maintenance_database).args(["--globals-only"]);
            if !superuser {
                spec = spec.args(["--no-role-passwords"]);
            }
            let (run, tail) = tools::spawn(self.runner.as_ref(), c, &spec).await?;
            tools::drain(run, tail, &mut w, c, "pg_dumpall --globals-only").await?;
            w.finish().await?;
            Some(name)
        } else {
            None
        };
        progress.info(format!(
            "dumped {db} ({} format, {dumped} bytes, {} tables) from PostgreSQL {server_version}",
            c.format.pg_name(),
            observed.tables.len()
        ));
        let facts = PgFacts {
            format: FACTS_FORMAT,
            database: db.to_owned(),
            dump_format: c.format,
            artifact,
            globals_artifact,
            server_version,
            server_version_num,
            database_size,
            tables: observed.tables,
            sequences,
            large_objects: observed.large_objects,
            extensions: observed.extensions,
        };
        Ok(SourceFacts {
            kind: BackupKind::Logical,
            facts: serde_json::to_value(&facts)
                .map_err(|e| Error::unexpected("cannot serialize facts").with_source(e))?,
        })
    }

    fn check_manifest(&self, manifest: &Manifest) -> Result<PgFacts> {
        if manifest.component != self.component {
            return Err(Error::bad_input(format!(
                "backup {} is of component {}, not {}",
                manifest.id, manifest.component, self.component
            )));
        }
        PgFacts::from_manifest(manifest)
    }

    /// Swap the newest `<database>__zdr_old_<timestamp>` back in; the current database
    /// becomes `<database>__zdr_old_<now>` (so a second rollback undoes the first).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when there is no old database to roll back to; connection
    /// and server errors.
    pub async fn rollback(&self, database: &str, progress: &Progress) -> Result<RollbackOutcome> {
        restore::rollback(self, database, progress)
            .await
            .map_err(|e| self.context(e).with_context("database", database))
    }

    /// Restore `backup` into a scratch database, compare it with the facts, and drop it.
    /// The live database is never touched.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the restored data differs from the facts (the report
    /// is in the message), and the restore's errors.
    pub async fn verify_restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        self.restore_with(RestoreOptions {
            mode: RestoreMode::Scratch,
            ..RestoreOptions::default()
        })
        .restore(backup, from, &RestoreTarget::default(), progress)
        .await
    }
}

/// An artifact name for a database name (the pipeline allows `[A-Za-z0-9._-]`).
fn artifact_name(db: &str) -> String {
    let s: String = db
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("db{s}")
    } else {
        s
    }
}

#[async_trait]
impl BackupSource for PostgresComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Stream `pg_dump` of the configured database into the artifact `<database>`
    /// (`sql` or `dump`), and `pg_dumpall --globals-only` into `globals` (`sql`); return
    /// [`PgFacts`] taken in the dump's snapshot.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] for an unknown database, a wrong password or missing tools;
    /// [`ErrorKind::Unsupported`] for client tools older than the server;
    /// [`ErrorKind::Source`] for server and tool failures (with the tool's stderr).
    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        self.backup_inner(sink, progress).await.map_err(|e| {
            self.context(e)
                .with_context("database", &self.config.database)
        })
    }
}

#[async_trait]
impl Restorer for PostgresComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    fn verifies_while_reading(&self) -> bool {
        self.verifies_while_reading_with(&RestoreOptions::default())
    }

    /// Restore into `target.name` (default: the backup's database) with the default
    /// [`RestoreOptions`] (the safe restore); see the crate docs and
    /// [`PostgresComponent::restore_with`].
    ///
    /// # Errors
    /// As [`RestoreCall`]'s restore.
    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        self.restore_with_options(&RestoreOptions::default(), backup, from, target, progress)
            .await
    }
}

#[async_trait]
impl RestoreWithOptions for PostgresComponent {
    type Options = RestoreOptions;

    fn restored_component(&self) -> &Component {
        &self.component
    }

    /// Every PostgreSQL restore reads its artifact once and checks it on the way: custom
    /// and directory formats into a spool before any database is created, plain format
    /// into a side database that is only swapped in after the check (in place: spooled
    /// first).
    fn verifies_while_reading_with(&self, options: &RestoreOptions) -> bool {
        // In place with a runner that cannot read a spool on this host, the live database
        // goes before the stream ends: the storage layer checks the artifact in full first.
        self.runner.shares_host_files() || !matches!(options.mode, RestoreMode::InPlace { .. })
    }

    /// As [`Restorer::restore`], with `options` for this call.
    async fn restore_with_options(
        &self,
        options: &RestoreOptions,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        let db = target
            .name
            .clone()
            .unwrap_or_else(|| facts.database.clone());
        restore::run(self, options, backup, &facts, from, &db, progress)
            .await
            .map_err(|e| {
                let e = self.context(e).with_context("database", &db);
                match &options.table {
                    Some(t) => e.with_context("table", t),
                    None => e,
                }
            })
    }
}

#[async_trait]
impl Verifier for PostgresComponent {
    /// Compare the database `target.name` (default: the backup's) with the facts: table
    /// list, row counts, checksums (when recorded), sequences, large objects, extensions.
    ///
    /// # Errors
    /// Connection errors; differences are reported in the [`VerifyReport`].
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        let db = target
            .name
            .clone()
            .unwrap_or_else(|| facts.database.clone());
        restore::verify_db(self, &facts, &db, &facts::Counted::new())
            .await
            .map_err(|e| self.context(e).with_context("database", &db))
    }
}

/// The kind of error for a mismatch between a restored database and its facts.
pub(crate) fn mismatch(report: &VerifyReport) -> Error {
    Error::new(
        ErrorKind::Integrity,
        format!(
            "the restored database does not match the backup: {}",
            report.problems.join("; ")
        ),
    )
    .with_verify_report(report.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let mut c = PgConfig::new("h", 5432, "u", "d");
        c.password = Some("s3cr3t-pw".into());
        let pg = PostgresComponent::new(
            Component::new("postgres").unwrap_or_else(|_| unreachable!()),
            c.clone(),
        );
        assert!(!format!("{c:?}{pg:?}").contains("s3cr3t-pw"));
        assert_eq!(c.scrub("x s3cr3t-pw y"), "x <redacted> y");
        assert_eq!(
            c.scrub("dbname=a password=other host=h PASSWORD='q r' x"),
            "dbname=a password=<redacted> host=h PASSWORD=<redacted> x"
        );
    }

    #[test]
    fn artifact_names_are_safe() {
        assert_eq!(artifact_name("zentoria_main"), "zentoria_main");
        assert_eq!(artifact_name("my db"), "my_db");
        assert_eq!(artifact_name(".x"), "db.x");
    }
}
