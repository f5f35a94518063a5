//! The component's settings as they appear in a config file (`[components.NAME] type =
//! "postgres"`), with their defaults, and their translation into [`PgConfig`].

use std::path::PathBuf;

use serde::Deserialize;
use zdr_core::Result;

use crate::{PgConfig, Secret};

/// `[components.NAME] type = "postgres"`. The password belongs in
/// `ZDR_COMPONENTS__<NAME>__PASSWORD`, not in the file; it is never shown by `Debug`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// Host name, IP address or Unix socket directory.
    #[serde(default = "default_pg_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// User.
    #[serde(default = "default_pg_user")]
    pub user: String,
    /// Password (prefer the environment variable).
    #[serde(default)]
    pub password: Option<Secret>,
    /// The database to back up.
    pub database: String,
    /// The database used for CREATE/DROP/ALTER DATABASE (default `postgres`).
    #[serde(default)]
    pub maintenance_database: Option<String>,
    /// Where pg_dump, pg_restore, psql and pg_dumpall are (default: PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// `custom` (default) or `plain`.
    #[serde(default)]
    pub format: Option<String>,
    /// Store `pg_dumpall --globals-only` too (default true).
    #[serde(default)]
    pub globals: Option<bool>,
    /// Exact row counts in the facts (default true).
    #[serde(default)]
    pub row_counts: Option<bool>,
    /// Per-table md5 of the rows in the facts (default false).
    #[serde(default)]
    pub checksums: Option<bool>,
    /// Where restores (custom and directory formats) and directory-format dumps are spooled
    /// (default: the system temp dir); needs disk space for one uncompressed dump.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Parallel `pg_restore` jobs of a restore (default: the number of cores).
    #[serde(default)]
    pub jobs: Option<u32>,
    /// Seconds a restore or rollback waits for another one of the same database before
    /// failing with a conflict (default 30).
    #[serde(default)]
    pub lock_wait_secs: Option<u64>,
    /// `[components.NAME.wal]`: WAL archiving, base backups and point-in-time recovery.
    #[serde(default)]
    pub wal: WalArchiveSettings,
}

/// `[components.NAME.wal]`: where WAL goes and how recovery instances run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalArchiveSettings {
    /// The tiers every WAL file is written to (default: the primary and the replicas).
    #[serde(default)]
    pub tiers: Option<Vec<String>>,
    /// Compression of WAL files (default `lz4`: lowest latency per segment).
    #[serde(default)]
    pub compression: Option<String>,
    /// The cluster's `wal_segment_size` in MiB (default 16).
    #[serde(default)]
    pub segment_size_mb: Option<u64>,
    /// Run recovery instances as this OS user when zdr runs as root (e.g. `postgres`).
    #[serde(default)]
    pub run_as: Option<String>,
    /// Where recovery data directories are created (default: the system temp dir).
    #[serde(default)]
    pub recovery_dir: Option<PathBuf>,
    /// Seconds a base backup waits for its last WAL segment to reach the archive, and
    /// `zdr check` for the switched segment (default 60).
    #[serde(default)]
    pub archive_wait_secs: Option<u64>,
    /// Seconds a recovery may take (default 3600).
    #[serde(default)]
    pub recovery_timeout_secs: Option<u64>,
    /// Segments `wal fetch` downloads ahead in a background process (into
    /// `pg_wal/.zdr-prefetch`), so replay does not wait for the tier (default 4; 0 = off).
    #[serde(default)]
    pub prefetch: Option<usize>,
}

fn default_pg_host() -> String {
    "127.0.0.1".to_owned()
}

fn default_pg_port() -> u16 {
    5432
}

fn default_pg_user() -> String {
    "postgres".to_owned()
}

impl PostgresSettings {
    /// The library's config, with `database` overriding the configured one.
    ///
    /// # Errors
    /// An unknown dump format; `jobs` outside 1 to 256.
    pub fn to_pg(&self, database: Option<&str>) -> Result<PgConfig> {
        let mut c = PgConfig::new(
            self.host.clone(),
            self.port,
            self.user.clone(),
            database.unwrap_or(&self.database),
        );
        c.password = self.password.clone();
        if let Some(m) = &self.maintenance_database {
            c.maintenance_database = m.clone();
        }
        c.bin_dir = self.bin_dir.clone();
        if let Some(f) = &self.format {
            c.format = f.parse()?;
        }
        c.globals = self.globals.unwrap_or(true);
        c.row_counts = self.row_counts.unwrap_or(true);
        c.checksums = self.checksums.unwrap_or(false);
        if let Some(dir) = &self.spool_dir {
            c.spool_dir = Some(dir.clone());
        }
        if let Some(jobs) = self.jobs {
            if !(1..=256).contains(&jobs) {
                return Err(zdr_core::Error::bad_input(format!(
                    "invalid number of restore jobs {jobs}: use 1 to 256"
                )));
            }
            c.jobs = jobs;
        }
        if let Some(secs) = self.lock_wait_secs {
            c.lock_wait = std::time::Duration::from_secs(secs);
        }
        Ok(c)
    }
}
