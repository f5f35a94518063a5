//! # zdr-core
//!
//! The vocabulary of zdr, the disaster-recovery SDK: the traits every datastore adapter
//! ([`BackupSource`], [`Restorer`], [`Verifier`]) and every storage backend
//! ([`StorageTier`]) implements, the versioned [`Manifest`] that describes a backup, the
//! [`Catalog`] rebuilt from manifests, the [`Progress`] sink a consumer injects, and the
//! one [`Error`] type with a matchable [`ErrorKind`].
//!
//! This crate depends on no datastore client. Storage lives in `zdr-storage`, adapters in
//! `zdr-files`, `zdr-postgres`, ...
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use zdr_core::{BackupId, BackupKind, BackupSelector, Catalog, Component, Manifest, MANIFEST_FORMAT};
//!
//! let configs = Component::new("configs")?;
//! let backup = |h: u32| Manifest {
//!     format: MANIFEST_FORMAT,
//!     id: BackupId::generate(Utc.with_ymd_and_hms(2026, 1, 16, h, 0, 0).unwrap()),
//!     component: configs.clone(),
//!     kind: BackupKind::Physical,
//!     schedule: "daily".into(),
//!     started_at: Utc.with_ymd_and_hms(2026, 1, 16, h, 0, 0).unwrap(),
//!     finished_at: Utc.with_ymd_and_hms(2026, 1, 16, h, 5, 0).unwrap(),
//!     zdr_version: "0.1.0".into(),
//!     parent: None,
//!     blob_index: None,
//!     facts: serde_json::Value::Null,
//!     artifacts: vec![],
//! };
//! let catalog = Catalog::from_manifests("local", vec![backup(12), backup(14), backup(16)]);
//!
//! // The runbook's PITR question: what is the newest backup before 14:29:59?
//! let target = zdr_core::parse_time("2026-01-16 14:29:59")?;
//! let chosen = catalog.select(&configs, &BackupSelector::Before(target))?;
//! assert_eq!(chosen.started_at.format("%H:%M").to_string(), "14:00");
//!
//! // Asking for a time before the first backup is a clear error, not a guess.
//! let early = zdr_core::parse_time("2026-01-16 09:00:00")?;
//! let err = catalog.select(&configs, &BackupSelector::Before(early)).unwrap_err();
//! assert_eq!(err.kind(), zdr_core::ErrorKind::NotFound);
//! # Ok::<(), zdr_core::Error>(())
//! ```

mod catalog;
mod error;
mod failpoint;
mod id;
pub mod layout;
mod manifest;
mod progress;
pub mod retention;
pub mod runner;
mod secret;
pub mod staging;
mod traits;

pub use catalog::{BackupSelector, Catalog, CatalogProblem, parse_time};
pub use error::{Error, ErrorKind, ErrorStatus, Result};
pub use failpoint::{FAILPOINT_ENV, failpoint};
pub use id::{BackupId, Component};
pub use manifest::{
    ArtifactRecord, BackupKind, BlobRef, Compression, Encryption, MANIFEST_FORMAT, Manifest,
};
pub use progress::{Level, Progress, ProgressEvent, ProgressSink, RecordingSink};
pub use runner::{
    CommandExit, CommandRunner, CommandSpec, CommandWait, LocalRunner, RunningCommand,
};
pub use secret::Secret;
pub use traits::{
    ArtifactReader, ArtifactSink, ArtifactWrite, BackupRequest, BackupSource, BlobPut, BlobStore,
    BoxRead, BoxWrite, Entry, RestoreCall, RestoreOutcome, RestoreTarget, RestoreWithOptions,
    Restorer, SourceFacts, StorageTier, Verifier, VerifyReport,
};

/// The zdr version recorded in manifests.
pub const ZDR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Lowercase hex SHA-256 of `bytes`.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
