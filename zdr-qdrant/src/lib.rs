//! # zdr-qdrant
//!
//! The zdr adapter for [Qdrant](https://qdrant.tech). The control plane goes over gRPC with
//! [`qdrant_client`] (server version, collection info and exact counts, aliases, snapshot
//! create/list/delete for collections and for the whole storage, scroll, upsert, collection
//! creation); the transfers go over plain HTTP with `reqwest`, streamed (snapshot download,
//! multipart upload, recover from a URL), since gRPC has no snapshot transfer:
//!
//! - **backup**: one snapshot per collection, streamed from the server's REST port into the
//!   artifact pipeline while its SHA-256 is computed and compared with the checksum Qdrant
//!   reported (a mismatch is an [`ErrorKind::Integrity`](zdr_core::ErrorKind::Integrity) error and no manifest is written),
//!   then deleted on the server (configurable). Facts: Qdrant version, aliases, and per
//!   collection its exact points count, vector configuration, payload indexes and a sample of
//!   point ids with payload hashes. With [`QdrantConfig::full_snapshot`], one full-storage
//!   snapshot (`/snapshots`: every collection and alias in one artifact, `storage.snapshot`).
//! - **restore** without a shared filesystem: the snapshot is streamed back with a multipart
//!   `POST /collections/{c}/snapshots/upload?priority=snapshot&checksum=...`, under the
//!   original name or [`RestoreTarget::name`](zdr_core::RestoreTarget::name); or, with [`QdrantConfig::recover_from`], the
//!   server fetches it itself from a URL it can reach
//!   (`PUT /collections/{c}/snapshots/recover` with `location`, `priority`, `checksum`).
//!   Aliases are recreated when restoring under the original name. A snapshot from a newer
//!   Qdrant (major.minor) than the target is refused before anything is uploaded. A
//!   full-storage snapshot cannot be restored through the API (Qdrant loads it at start with
//!   `--storage-snapshot`): its restore is refused with that hint.
//! - **logical export** ([`QdrantConfig::logical`]): every point scrolled with its vector
//!   and payload into a JSON-lines artifact (first line: vector config and payload indexes),
//!   imported by creating the collection and upserting in batches of [`BATCH`]: the path
//!   across Qdrant versions.
//! - **verification**: exact points count, vector configuration and the sampled points
//!   compared with the manifest.
//!
//! The API key is sent as `api-key` (gRPC metadata and HTTP header) on every call and never
//! appears in errors, logs or `Debug` output.
//!
//! ```no_run
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> zdr_core::Result<()> {
//! use std::sync::Arc;
//! use zdr_core::{Component, Progress, RestoreTarget};
//! use zdr_qdrant::{QdrantComponent, QdrantConfig};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let qdrant = QdrantComponent::new(
//!     Component::new("qdrant")?,
//!     QdrantConfig {
//!         url: "http://127.0.0.1:6333".into(),
//!         // gRPC defaults to the same host on 6334 when the REST port is 6333.
//!         api_key: std::env::var("QDRANT_API_KEY").ok().map(zdr_core::Secret::new),
//!         ..QdrantConfig::default()
//!     },
//! )?;
//! let repo = Repository::new(open_tier("mem", &TierConfig::Memory)?, PipelineOptions::default());
//! let manifest = repo.backup(&qdrant, "daily", &Progress::none()).await?;
//!
//! // Restore the (single) collection beside the original and compare it with the manifest.
//! let target = RestoreTarget { name: Some("documents_check".into()), ..Default::default() };
//! repo.restore(&qdrant, &manifest, &target, &Progress::none()).await?;
//! let report = zdr_core::Verifier::verify(&qdrant, &manifest, &target).await?;
//! assert!(report.is_ok(), "{:?}", report.problems);
//! # Ok(()) }
//! ```

mod backup;
mod client;
mod config;
mod convert;
mod facts;
mod restore;
mod tarscan;
mod transfer;
mod verify;

use std::fmt;

use zdr_core::Component;

pub use client::{artifact_name, collection_of_artifact};
pub use config::QdrantConfig;
pub use facts::{AliasFact, CollectionFacts, FullSnapshotFact, PointSample, QdrantFacts};
pub use restore::{RestoreOptions, SCRATCH_PREFIX, host_scratch_prefix};

/// The artifact extension of a collection snapshot.
pub const SNAPSHOT_EXT: &str = "snapshot";

/// The artifact name of a full-storage snapshot ([`QdrantConfig::full_snapshot`]).
pub const FULL_SNAPSHOT_ARTIFACT: &str = "storage";

/// The artifact extension of a logical export.
pub const EXPORT_EXT: &str = "jsonl";

/// Points per scroll page and per upsert batch of a logical export.
pub const BATCH: usize = 256;

/// How many points are sampled (ids and payload hashes) at backup for verification.
pub const SAMPLE_POINTS: usize = 5;

/// Backs up, restores and verifies the collections of one Qdrant server.
pub struct QdrantComponent {
    component: Component,
    config: QdrantConfig,
    base: String,
    grpc_url: String,
    http: reqwest::Client,
    grpc: qdrant_client::Qdrant,
}

impl fmt::Debug for QdrantComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantComponent")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("grpc_url", &self.grpc_url)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::client::{default_grpc_url, major_minor};
    use crate::facts::payload_hash;

    #[test]
    fn versions_compare_by_major_minor() {
        assert_eq!(major_minor("1.18.2"), Some((1, 18)));
        assert_eq!(major_minor("v1.9.0-dev"), Some((1, 9)));
        assert!(major_minor("1.18.2") > major_minor("1.9.7"));
        assert_eq!(major_minor("garbage"), None);
    }

    #[test]
    fn payload_hash_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": null}}"#)
                .unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, {"p": 3, "q": 2}]}, "b": 1}"#)
                .unwrap_or_default();
        assert_eq!(payload_hash(&a), payload_hash(&b));
        assert_ne!(payload_hash(&a), payload_hash(&json!({"b": 2})));
    }

    #[test]
    fn grpc_port_follows_the_rest_port() {
        assert_eq!(
            default_grpc_url("http://qdrant:6333").as_deref(),
            Some("http://qdrant:6334")
        );
        assert_eq!(
            default_grpc_url("https://q.example").as_deref(),
            Some("https://q.example:6334")
        );
        assert_eq!(
            default_grpc_url("http://[::1]:6333").as_deref(),
            Some("http://[::1]:6334")
        );
        assert_eq!(default_grpc_url("http://qdrant:8080"), None);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let cfg = QdrantConfig {
            api_key: Some("s3cr3t".into()),
            ..QdrantConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        let parsed: QdrantConfig =
            serde_json::from_str(r#"{"url":"http://qdrant:6333","api_key":"s3cr3t"}"#)
                .unwrap_or_default();
        assert_eq!(parsed.api_key.as_ref().map(|k| k.expose()), Some("s3cr3t"));
        assert!(!format!("{parsed:?}").contains("s3cr3t"));
    }
}
