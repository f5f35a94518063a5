//! # zdr-storage
//!
//! Storage for zdr: [`StorageTier`](zdr_core::StorageTier) on OpenDAL for the local
//! filesystem, S3 (MinIO, SeaweedFS, AWS), OneDrive and memory; the streaming artifact
//! pipeline (SHA-256 of the stored bytes, gzip / lz4 / zstd, age encryption, a `.sha256`
//! sidecar for every artifact); the [`Repository`] that runs backups and restores with the
//! manifest written last; and [`replicate`] between tiers.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> zdr_core::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use zdr_core::{Progress, Compression};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let tier = open_tier("mem", &TierConfig::Memory)?;
//! let repo = Repository::new(tier.clone(), PipelineOptions { compression: Compression::Lz4, ..Default::default() });
//!
//! // Any BackupSource works; here a tiny one that writes a single artifact.
//! struct Hello(zdr_core::Component);
//! #[async_trait::async_trait]
//! impl zdr_core::BackupSource for Hello {
//!     fn component(&self) -> &zdr_core::Component { &self.0 }
//!     async fn backup(&self, _: &zdr_core::BackupRequest, sink: &mut dyn zdr_core::ArtifactSink,
//!                     _: &Progress) -> zdr_core::Result<zdr_core::SourceFacts> {
//!         let mut w = sink.create("hello", "txt").await?;
//!         w.write_all(b"hello, disaster").await.map_err(|e| zdr_core::Error::from_io(e, "write"))?;
//!         w.finish().await?;
//!         Ok(zdr_core::SourceFacts { kind: zdr_core::BackupKind::Logical, facts: serde_json::json!({}) })
//!     }
//! }
//! let manifest = repo.backup(&Hello(zdr_core::Component::new("hello")?), "daily", &Progress::none()).await?;
//! assert!(manifest.artifacts[0].key.ends_with(".txt.lz4"));
//!
//! // The catalog is rebuilt from the manifests on the tier.
//! let catalog = repo.catalog().await?;
//! let latest = catalog.latest(&manifest.component).unwrap();
//! repo.verify(latest, true, &Progress::none()).await?;
//! let mut text = String::new();
//! repo.open(&latest.artifacts[0], Progress::none())?.read_to_string(&mut text).await.unwrap();
//! assert_eq!(text, "hello, disaster");
//! # Ok(()) }
//! ```

mod blobs;
mod inflight;
mod keys;
mod lock;
mod lz4par;
mod object;
pub mod onedrive;
mod pipeline;
mod replicate;
mod repo;
mod retry;
mod s3_uploads;
pub use s3_uploads::{UnfinishedUpload, ensure_bucket, remove_bucket, unfinished_uploads};
mod tier;

pub use blobs::{BlobList, BlobSweep, DEFAULT_PACK_SIZE, PACKED_MAX, sweep_blobs};
pub use inflight::{Abandoned, abandon_in_flight};
pub use keys::AgeKeys;
pub use lock::{
    LOCKS, LockOwner, LockPolicy, REPOSITORY_LOCK, TierLock, component_lock, host_name,
    lock_holder, lock_key, remove_lock,
};
pub use object::{Found, find_object, object_key, put_object};
pub use pipeline::{
    CHUNK, PipelineOptions, PipelineWriter, default_lz4_workers, open_artifact, verify_sidecar,
    verify_stored,
};
pub use replicate::{ReplicationReport, replicate, replicate_backup, replicate_locked};
pub use repo::{DEFAULT_SWEEP_GRACE, Repository};
pub use retry::RetryPolicy;
pub use tier::{OpendalTier, S3Config, TierConfig, open_tier};
