//! The manifest facts of a Qdrant backup, and the payload hashes of sampled points.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zdr_core::{Error, Manifest, Result};

/// One sampled point: its id and the SHA-256 of its payload (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointSample {
    /// The point id (an integer or a UUID string), as Qdrant returns it.
    pub id: Value,
    /// Lowercase hex SHA-256 of the payload serialized with sorted keys.
    pub payload_sha256: String,
}

/// What a backup recorded about one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionFacts {
    /// The collection name (also the artifact name).
    pub name: String,
    /// Its exact points count when the snapshot was taken.
    pub points_count: u64,
    /// Its vector configuration (`config.params.vectors`, REST's JSON shape).
    pub vectors: Value,
    /// Its sparse vectors (`config.params.sparse_vectors`), `null` when none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub sparse_vectors: Value,
    /// Its payload indexes (`payload_schema`).
    pub payload_schema: Value,
    /// The snapshot name on the server (the full snapshot's, for a full-storage backup).
    pub snapshot: String,
    /// Qdrant's SHA-256 of the snapshot, checked against the bytes received.
    pub checksum: String,
    /// A few points to compare after a restore.
    pub sample: Vec<PointSample>,
}

/// An alias and the collection it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasFact {
    /// The alias name.
    pub alias_name: String,
    /// The collection it points to.
    pub collection_name: String,
}

/// The full-storage snapshot of a backup taken with [`QdrantConfig::full_snapshot`](crate::QdrantConfig::full_snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullSnapshotFact {
    /// The snapshot name on the server.
    pub name: String,
    /// Qdrant's SHA-256 of the snapshot, checked against the bytes received.
    pub checksum: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The manifest facts of a Qdrant backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QdrantFacts {
    /// The server version (`GET /`).
    pub qdrant_version: String,
    /// True for a logical export (JSON lines), false for snapshots.
    #[serde(default)]
    pub logical: bool,
    /// Aliases of the backed-up collections (snapshots leave them out).
    pub aliases: Vec<AliasFact>,
    /// One entry per collection.
    pub collections: Vec<CollectionFacts>,
    /// The full-storage snapshot, when the backup is one (artifact
    /// [`FULL_SNAPSHOT_ARTIFACT`](crate::FULL_SNAPSHOT_ARTIFACT)); the collections then describe what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_snapshot: Option<FullSnapshotFact>,
}

impl QdrantFacts {
    /// Read the facts of a manifest written by this adapter.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`](zdr_core::ErrorKind::BadInput) when the manifest is not a Qdrant snapshot backup.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self> {
        serde_json::from_value(manifest.facts.clone()).map_err(|e| {
            Error::bad_input(format!(
                "backup {} has no Qdrant snapshot facts: {e}",
                manifest.id
            ))
            .with_context("component", &manifest.component)
        })
    }
}

pub(crate) fn payload_hash(payload: &Value) -> String {
    let mut canonical = String::new();
    canonical_json(payload, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON with object keys sorted at every level, whatever serde_json's map order.
pub(crate) fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
