//! # zdr: disaster recovery for a self-hosted stack, as one library
//!
//! Add `zdr` as one dependency and every recovery operation of the `zdr` command is a
//! method call with a typed result: the same `zdr.toml` (with `ZDR_*` overrides and
//! `vault:` credential references), the same tiers (local disk → S3/MinIO → OneDrive), the
//! same decisions — which backup `latest` means for a restorer, falling back tier by tier to
//! the first intact copy, PITR's after-target check and its "apply the database" step.
//!
//! Restore the latest PostgreSQL backup from the first tier that holds it intact:
//!
//! ```no_run
//! # async fn run() -> zdr::Result<()> {
//! let stack = zdr::Stack::from_file("/etc/zdr/zdr.toml").await?;
//! let report = stack
//!     .restore("postgres", &zdr::RestoreOptions::default(), &zdr::Progress::none())
//!     .await?;
//! println!("restored {} from tier {}: verification {}", report.backup.id, report.tier,
//!     if report.is_ok() { "passed" } else { "FAILED" });
//! # Ok(()) }
//! ```
//!
//! A config built in code, with no file:
//!
//! ```
//! use zdr::{ComponentConfig, Config, TierConfig};
//! let config = Config::new("local", TierConfig::Fs { root: "/var/backups/zdr".into() })
//!     .with_component("configs", ComponentConfig::Files { path: "/etc/app".into() });
//! let stack = zdr::Stack::open_unresolved(config);
//! assert_eq!(stack.tier_order(), ["local"]);
//! assert_eq!(stack.component_type("configs").map(|t| t.as_str()).ok(), Some("files"));
//! ```
//!
//! The operations, on [`Stack`]:
//! - [`Stack::backup`] (with [`BackupOptions`]), [`Stack::base_backup`], [`Stack::replicate`]
//! - [`Stack::list`], [`Stack::verify`] ([`VerifyRun`] as data), [`Stack::status`] (RPO)
//! - [`Stack::restore`] (with [`RestoreOptions`]: selector, tier, target, per-adapter
//!   options), [`Stack::rollback`], [`Stack::verify_restore`], [`Stack::drill`]
//! - PostgreSQL WAL and PITR: [`Stack::wal_push`], [`Stack::wal_fetch`],
//!   [`Stack::wal_prefetch`], [`Stack::check`], [`Stack::verify_wal`], [`Stack::pitr`]
//! - the sandbox drill: [`drill::sandbox`]
//! - running unattended: [`daemon::Daemon`] (schedules, catch-up, metrics, alerts),
//!   [`Stack::prune`], [`Stack::status`]
//!
//! Library code never prints: progress goes to the [`Progress`] sink you pass, results come
//! back as values, errors as [`Error`] with a kind, a retry status and context.

#[cfg(not(any(
    feature = "files",
    feature = "postgres",
    feature = "redis",
    feature = "vault",
    feature = "qdrant",
    feature = "s3",
    feature = "n8n"
)))]
compile_error!(
    "zdr needs at least one adapter feature: files, postgres, redis, vault, qdrant, s3 or n8n"
);

mod adapter;
mod config;
pub mod daemon;
pub mod drill;
pub mod init;
#[cfg(feature = "postgres")]
pub mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod prune;
pub mod recover;
#[cfg(feature = "redis")]
mod redis_container;
mod stack;

pub use adapter::{BackupOptions, ComponentType, RestoreOptions};
pub use config::{
    ComponentConfig, Config, DockerConfig, EncryptionConfig, LocksConfig, PipelineConfig,
    RetentionConfig, RunnerConfig, VaultRefConfig,
};
pub use stack::{
    BackupReport, Problem, ReplicationPair, ReplicationRun, RestoreReport, ScratchRestoreReport,
    SkippedTier, Stack, TierListing, VerifyRun,
};
pub use zdr_core::{
    self as core, BackupId, BackupKind, BackupSelector, Component, Error, ErrorKind, Manifest,
    Progress, ProgressEvent, ProgressSink, RestoreOutcome, RestoreTarget, Result, Secret,
    VerifyReport,
};
pub use zdr_storage::{self as storage, PipelineOptions, TierConfig};

/// The Docker engine (containers, specs, volumes, `docker exec` runner).
pub use zdr_docker as docker;
#[cfg(feature = "files")]
pub use zdr_files as files;
/// n8n workflows (`n8n`): settings.
#[cfg(feature = "n8n")]
pub use zdr_n8n as n8n;
#[cfg(feature = "postgres")]
pub use zdr_postgres as pg;
#[cfg(feature = "qdrant")]
pub use zdr_qdrant as qdrant;
#[cfg(feature = "redis")]
pub use zdr_redis as redis;
/// Object storage (`s3-bucket`): settings and restore options.
#[cfg(feature = "s3")]
pub use zdr_s3 as s3;
#[cfg(feature = "vault")]
pub use zdr_vault as vault;

/// A free TCP port on 127.0.0.1 (for throwaway and recovery servers, drill copies).
pub(crate) fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::from_io(e, "cannot find a free port"))
}

/// Whether this process runs as root (PostgreSQL servers must then run as another OS user).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A byte count for people: `1.5 MiB`.
#[must_use]
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
