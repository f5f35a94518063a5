//! # zdr-redis
//!
//! The zdr component for Redis (the runbook's Redis rows: a snapshot every 6 hours,
//! `dump.rdb` restored after a crash, "Redis corruption after restore").
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> zdr_core::Result<()> {
//! use zdr_core::{Component, Progress, RestoreTarget};
//! use zdr_redis::{RedisComponent, RedisConfig, RestoreOptions};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let tier = open_tier("local", &TierConfig::Fs { root: "/var/backups/zdr".into() })?;
//! let repo = Repository::new(tier, PipelineOptions::default());
//! let mut config = RedisConfig::new("127.0.0.1", 6379);
//! config.password = std::env::var("REDIS_PASSWORD").ok().map(Into::into);
//! let redis = RedisComponent::new(Component::new("redis")?, config);
//!
//! // An RDB over the replication protocol, checked (magic, CRC64, key counts) while it streams.
//! let manifest = repo.backup(&redis, "daily", &Progress::none()).await?;
//! // Checksums first, then load it into a scratch redis-server and compare with the manifest.
//! let scratch = redis.restore_with(RestoreOptions { scratch: true, ..Default::default() });
//! let outcome = repo.restore(&scratch, &manifest, &RestoreTarget::default(), &Progress::none()).await?;
//! println!("{}: {:?}", outcome.target, outcome.notes);
//! # Ok(()) }
//! ```
//!
//! What it does:
//!
//! - **Physical backup** ([`BackupMode::Physical`]): the RDB is fetched over the network the
//!   way a replica does (`REPLCONF` + `PSYNC ? -1`, or `SYNC`), in the `$<len>` or the diskless
//!   `$EOF:<mark>` form, and streamed into the artifact `dump` (`rdb`). While it streams, a
//!   reader on a blocking thread checks the `REDIS` magic and version, walks every record,
//!   counts keys per database and checks the CRC64 trailer; the per-database counts are
//!   compared with `INFO keyspace` taken before the transfer, within the number of writes the
//!   server made during it. Any failure fails the backup before its manifest exists. Where
//!   `SYNC`/`PSYNC` are renamed away, `BGSAVE` + `LASTSAVE` polling + a copy of
//!   `data_dir/dbfilename` is used when a local data directory is configured.
//! - **Logical export** ([`BackupMode::Logical`]): `SCAN` + pipelined `DUMP`/`PTTL`, one
//!   database or all, optionally one key pattern, in the format documented in [`logical`];
//!   restored with `RESTORE ... ABSTTL [REPLACE]`.
//! - **Physical restore**: stop the Redis that owns the data directory, move the old
//!   `dump.rdb` and `appendonlydir` aside as `*.zdr-old-<timestamp>`, put the verified RDB in,
//!   start it, wait for `loading:0`, and compare key counts with the manifest.
//!   With [`RedisComponent::with_container`] the server runs in a container: the RDB is
//!   copied in, the container stopped, the files swapped on its volumes and the container
//!   started, through a [`ServerContainer`] — no data directory or tools on this machine.
//! - **Verification** ([`RedisComponent::verify_restore`]): the RDB is loaded into a scratch
//!   `redis-server` on a free port and compared with the manifest: key counts per database
//!   and the SHA-256 of `DUMP` payloads of a sample of keys recorded at backup time. Logical exports are `RESTORE`d into the
//!   empty scratch server and counted.
//!
//! ## Rules
//! - The RDB is never held in memory nor written to a temporary file during a backup; the
//!   logical export holds one batch of `DUMP` payloads at a time.
//! - The password is sent inside the protocol (`AUTH`) and to `redis-cli` as `REDISCLI_AUTH`
//!   in its environment only; it is scrubbed from error messages and hidden from `Debug`.
//! - `redis-server` and `redis-cli` run through a [`zdr_core::CommandRunner`].

mod client;
mod container;
pub mod logical;
mod physical;
pub mod rdb;
mod repl;
mod server;
mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupRequest, BackupSource, CommandRunner, Component, Error,
    LocalRunner, Manifest, Progress, RestoreCall, RestoreOutcome, RestoreTarget,
    RestoreWithOptions, Restorer, Result, SourceFacts, Verifier, VerifyReport,
};

pub use container::ServerContainer;
pub use rdb::{Crc64, RdbSummary};

/// The version of [`RedisFacts`].
pub const FACTS_FORMAT: u32 = 1;

pub use settings::RedisSettings;
pub use zdr_core::Secret;

/// Where Redis is and how to manage the server that owns the data directory.
#[derive(Clone)]
pub struct RedisConfig {
    /// Host name or IP address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user (default: the default user).
    pub username: Option<String>,
    /// Password (`requirepass` or the ACL user's).
    pub password: Option<Secret>,
    /// The server's data directory, when it is on this machine: the fallback backup copies
    /// `dbfilename` from here, and a physical restore writes here.
    pub data_dir: Option<PathBuf>,
    /// The RDB file name in `data_dir` (default `dump.rdb`).
    pub dbfilename: String,
    /// The command that starts the server for a physical restore (it must return once the
    /// server runs in the background: `redis-server /etc/redis.conf --daemonize yes`,
    /// `systemctl start redis`, `docker start redis`).
    pub start_command: Option<Vec<String>>,
    /// The command that stops it; default `redis-cli -h H -p P SHUTDOWN NOSAVE`.
    pub stop_command: Option<Vec<String>>,
    /// Where `redis-server` and `redis-cli` are (default: `PATH`).
    pub bin_dir: Option<PathBuf>,
    /// How long to wait for an answer from the server.
    pub timeout: Duration,
    /// How many keys per database the backup samples for `DUMP` digests.
    pub sample_keys: u32,
}

impl RedisConfig {
    /// A config for `host:port` without password, data directory or commands.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            username: None,
            password: None,
            data_dir: None,
            dbfilename: "dump.rdb".into(),
            start_command: None,
            stop_command: None,
            bin_dir: None,
            timeout: Duration::from_secs(60),
            sample_keys: 32,
        }
    }

    /// Remove the password from a text.
    pub(crate) fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
            _ => text.to_owned(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("data_dir", &self.data_dir)
            .field("dbfilename", &self.dbfilename)
            .field("start_command", &self.start_command)
            .field("stop_command", &self.stop_command)
            .field("bin_dir", &self.bin_dir)
            .field("timeout", &self.timeout)
            .field("sample_keys", &self.sample_keys)
            .finish()
    }
}

/// What a backup makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackupMode {
    /// An RDB snapshot over the replication protocol (or the `BGSAVE` fallback).
    #[default]
    Physical,
    /// `SCAN` + `DUMP` + `PTTL` of the matching keys.
    Logical {
        /// Only keys matching this glob pattern (`SCAN MATCH`).
        pattern: Option<String>,
        /// Only this database (default: every database with keys).
        db: Option<u32>,
    },
}

/// How a restore treats the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Logical restores: replace existing keys (`RESTORE ... REPLACE`). Without it, existing
    /// keys are reported and left alone.
    pub replace: bool,
    /// Logical restores: only keys matching this glob pattern.
    pub pattern: Option<String>,
    /// Load into a scratch server and verify only (never touch the configured server), for
    /// physical and logical backups alike.
    pub scratch: bool,
}

/// The SHA-256 of one key's `DUMP` payload, recorded at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyDigest {
    /// The database.
    pub db: u32,
    /// The key, hex encoded (keys are binary).
    pub key_hex: String,
    /// SHA-256 of the `DUMP` payload.
    pub sha256: String,
}

/// The facts of a Redis backup, stored in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisFacts {
    /// [`FACTS_FORMAT`].
    pub format: u32,
    /// `physical` or `logical`.
    pub mode: String,
    /// Which path ran: `psync`, `sync`, `bgsave-copy` (physical) or `scan-dump` (logical).
    pub path: String,
    /// Physical: `disk` (`$<len>`), `diskless` (`$EOF:`) or `file` (the fallback copy).
    pub transfer: Option<String>,
    /// The artifact's name.
    pub artifact: String,
    /// The server's `redis_version`.
    pub redis_version: String,
    /// Physical: the RDB format version.
    pub rdb_version: Option<u32>,
    /// Physical: the RDB's CRC64 trailer (hex), if checksums are on.
    pub rdb_crc64: Option<String>,
    /// Keys per database in the backup (counted in the RDB, or exported).
    pub keys: BTreeMap<u32, u64>,
    /// Physical: keys with an expiry per database (they may be gone when the RDB is loaded).
    pub volatile: BTreeMap<u32, u64>,
    /// Keys per database from `INFO keyspace` before the transfer.
    pub info_keys: BTreeMap<u32, u64>,
    /// An upper bound of the writes the server made during the transfer: the growth of
    /// `rdb_changes_since_last_save`, or of `total_commands_processed` when a save reset the
    /// former meanwhile (a disk-based sync saves). The tolerance of the key count comparison.
    pub writes_during: u64,
    /// `DUMP` digests of sampled keys, taken right after the transfer (keys whose `DUMP` is
    /// reproducible: not hash-table encoded).
    pub sample: Vec<KeyDigest>,
    /// Writes between the start of the transfer and the end of the sampling: how many sampled
    /// digests may legitimately differ.
    pub sample_tolerance: u64,
    /// Bytes of the artifact.
    pub bytes: u64,
    /// Logical: the pattern exported.
    pub pattern: Option<String>,
    /// Logical: the database exported, if only one.
    pub db: Option<u32>,
    /// Whether AOF was on at backup time.
    pub aof_enabled: bool,
    /// Physical, AOF on and `data_dir` configured: the multi-part AOF set (manifest first)
    /// copied beside the RDB.
    #[serde(default)]
    pub aof_files: Vec<AofFile>,
}

/// One file of a Redis 7 multi-part AOF set (`appendonlydir`), stored as an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AofFile {
    /// The file name in `appendonlydir`.
    pub file: String,
    /// The artifact's name.
    pub artifact: String,
    /// `manifest`, or the manifest's type: `b` (base), `h` (history), `i` (incremental).
    pub kind: String,
    /// Bytes copied (an incremental file is copied up to its size when the copy started).
    pub bytes: u64,
}

impl RedisFacts {
    /// The facts of `manifest`.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] when the manifest was not made by this adapter.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self> {
        serde_json::from_value(manifest.facts.clone()).map_err(|e| {
            Error::bad_input(format!(
                "backup {} does not hold redis facts: {e}",
                manifest.id
            ))
        })
    }
}

/// Backs up, restores and verifies one Redis server.
#[derive(Clone)]
pub struct RedisComponent {
    component: Component,
    config: RedisConfig,
    runner: Arc<dyn CommandRunner>,
    container: Option<Arc<dyn ServerContainer>>,
    mode: BackupMode,
}

impl fmt::Debug for RedisComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisComponent")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("runner", &self.runner.describe())
            .field("container", &self.container.as_ref().map(|c| c.name()))
            .field("mode", &self.mode)
            .finish()
    }
}

impl RedisComponent {
    /// A component for `config`; tools run as local processes (from `bin_dir` when set).
    #[must_use]
    pub fn new(component: Component, config: RedisConfig) -> Self {
        let runner = LocalRunner::shared(config.bin_dir.as_deref());
        Self {
            component,
            config,
            runner,
            container: None,
            mode: BackupMode::Physical,
        }
    }

    /// The server runs in `container`: a physical restore copies the RDB into the
    /// container's data directory (the server's `dir`; `data_dir` when the server cannot be
    /// asked, default `/data`), stops the container, swaps the files on its volumes (the old
    /// ones kept aside) and starts it again — no data directory on this machine and no
    /// start/stop commands are needed. Backups and logical restores go over the network as
    /// always.
    #[must_use]
    pub fn with_container(mut self, container: Arc<dyn ServerContainer>) -> Self {
        self.container = Some(container);
        self
    }

    /// Run `redis-server`/`redis-cli` and the start/stop commands through another runner.
    #[must_use]
    pub fn with_runner(mut self, runner: Arc<dyn CommandRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// Make backups of this mode.
    #[must_use]
    pub fn with_backup_mode(mut self, mode: BackupMode) -> Self {
        self.mode = mode;
        self
    }

    /// A restore with `options` for one call: the returned value is the [`Restorer`] to hand
    /// to the storage layer. [`Restorer::restore`] on the component itself uses the default
    /// options (into the configured server; a logical backup without replacing existing
    /// keys).
    #[must_use]
    pub fn restore_with(&self, options: RestoreOptions) -> RestoreCall<'_, Self> {
        RestoreCall::new(self, options)
    }

    /// Bring back a server a killed physical restore left down (in its container, or the
    /// one owning `data_dir`); what was repaired.
    async fn repair_interrupted(&self, progress: &Progress) -> Result<Option<String>> {
        match &self.container {
            Some(c) => container::repair_interrupted(self, c.as_ref(), progress).await,
            None => server::repair_interrupted(self, progress).await,
        }
        .map_err(|e| self.context(e))
    }

    /// The data directory when it is on this machine: `data_dir`, unless the server runs in
    /// a container (where `data_dir` names the directory inside it).
    pub(crate) fn local_data_dir(&self) -> Option<&std::path::Path> {
        match self.container {
            Some(_) => None,
            None => self.config.data_dir.as_deref(),
        }
    }

    /// The connection settings.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    pub(crate) fn context(&self, e: Error) -> Error {
        e.with_context("component", &self.component)
            .with_context("host", format!("{}:{}", self.config.host, self.config.port))
    }

    fn check_manifest(&self, manifest: &Manifest) -> Result<RedisFacts> {
        if manifest.component != self.component {
            return Err(Error::bad_input(format!(
                "backup {} is of component {}, not {}",
                manifest.id, manifest.component, self.component
            )));
        }
        RedisFacts::from_manifest(manifest)
    }

    /// Load a backup into a scratch `redis-server` on a free port and compare it with the
    /// manifest: a physical one as its `dump.rdb` (key counts per database, sampled `DUMP`
    /// digests), a logical one by `RESTORE` into the empty server (key counts). The live
    /// server is never touched.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::Integrity`] when the loaded data differs beyond the recorded
    /// tolerance; [`zdr_core::ErrorKind::NotFound`] without `redis-server`.
    pub async fn verify_restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        server::verify_scratch(self, backup, &facts, from, progress)
            .await
            .map_err(|e| self.context(e))
    }
}

#[async_trait]
impl BackupSource for RedisComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// A physical (RDB) or logical (`DUMP`) backup, depending on the [`BackupMode`].
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] for a wrong password or an unknown database;
    /// [`zdr_core::ErrorKind::Integrity`] when the RDB fails its checks;
    /// [`zdr_core::ErrorKind::Unsupported`] when replication is disabled and no data
    /// directory is configured; [`zdr_core::ErrorKind::Source`] for server failures.
    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        if let Some(note) = self.repair_interrupted(progress).await? {
            progress.warn(note);
        }
        let r = match &self.mode {
            BackupMode::Physical => physical::backup(self, sink, progress).await,
            BackupMode::Logical { pattern, db } => {
                logical::backup(self, sink, pattern.as_deref(), *db, progress).await
            }
        };
        r.map_err(|e| self.context(e))
    }
}

#[async_trait]
impl Restorer for RedisComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// A logical backup is restored with `RESTORE` into the configured server; a physical one
    /// replaces the data directory of the server (stop, swap files, start, verify), or is
    /// loaded into a scratch server when [`RestoreOptions::scratch`] is set.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] for a physical restore without `data_dir` or
    /// `start_command`; [`zdr_core::ErrorKind::Integrity`] when the loaded data differs from
    /// the manifest; [`zdr_core::ErrorKind::Source`] for server failures;
    /// [`zdr_core::ErrorKind::BadInput`] for a target with a name or path (a redis restore
    /// goes into the configured server).
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
impl RestoreWithOptions for RedisComponent {
    type Options = RestoreOptions;

    fn restored_component(&self) -> &Component {
        &self.component
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
        if target.name.is_some() || target.path.is_some() {
            return Err(self.context(Error::bad_input(
                "a redis backup restores into the configured server (or a scratch one): a target name or path does not apply",
            )));
        }
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        let repaired = match (&self.container, options.scratch) {
            (_, true) => None,
            (Some(container), false) => {
                let repaired = self.repair_interrupted(progress).await?;
                if repaired.is_none()
                    && !container.is_running().await.map_err(|e| self.context(e))?
                {
                    return Err(self.context(container::not_running(&container.name())));
                }
                repaired
            }
            (None, false) => self.repair_interrupted(progress).await?,
        };
        // Scratch first: a scratch restore never touches the configured server.
        let r = if options.scratch {
            server::verify_scratch(self, backup, &facts, from, progress).await
        } else if facts.mode == "logical" {
            logical::restore(self, options, backup, &facts, from, progress).await
        } else if let Some(container) = &self.container {
            container::restore_physical(self, container.as_ref(), backup, &facts, from, progress)
                .await
        } else {
            server::restore_physical(self, backup, &facts, from, progress).await
        };
        let mut outcome = r.map_err(|e| self.context(e))?;
        if let Some(note) = repaired {
            outcome.notes.insert(0, note);
        }
        Ok(outcome)
    }
}

#[async_trait]
impl Verifier for RedisComponent {
    /// Compare the live server's key counts per database with the backup's, allowing for
    /// keys with an expiry (physical backups).
    ///
    /// # Errors
    /// Connection errors; differences are reported in the [`VerifyReport`].
    async fn verify(&self, backup: &Manifest, _target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        server::compare_counts(self, &self.config, &facts)
            .await
            .map_err(|e| self.context(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let mut c = RedisConfig::new("h", 6379);
        c.password = Some("s3cr3t-pw".into());
        let r = RedisComponent::new(
            Component::new("redis").unwrap_or_else(|_| unreachable!()),
            c.clone(),
        );
        assert!(!format!("{c:?}{r:?}").contains("s3cr3t-pw"));
        assert_eq!(c.scrub("x s3cr3t-pw y"), "x <redacted> y");
    }
}
