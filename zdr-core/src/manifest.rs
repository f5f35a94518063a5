//! The versioned JSON [`Manifest`] that describes one backup, and the records of its artifacts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{BackupId, Component};

/// The manifest format this build writes and the newest it reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What kind of backup a manifest describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// A logical dump (SQL, key export, ...).
    Logical,
    /// A physical copy of files or a datastore's on-disk format.
    Physical,
    /// Write-ahead log segments.
    Wal,
    /// A datastore's own snapshot format.
    Snapshot,
    /// A portable export (scroll of points, KV walk, ...).
    Export,
}

/// How an artifact's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip (RFC 1952); `gunzip` reads it.
    Gzip,
    /// LZ4 frame format; `lz4 -d` reads it.
    Lz4,
    /// Zstandard; `zstd -d` reads it.
    #[default]
    Zstd,
}

impl Compression {
    /// The file-name suffix, including the dot; empty for [`Compression::None`].
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Gzip => ".gz",
            Self::Lz4 => ".lz4",
            Self::Zstd => ".zst",
        }
    }

    /// All variants, for tests and help texts.
    pub const ALL: [Compression; 4] = [Self::None, Self::Gzip, Self::Lz4, Self::Zstd];
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "gzip" | "gz" => Ok(Self::Gzip),
            "lz4" => Ok(Self::Lz4),
            "zstd" | "zst" => Ok(Self::Zstd),
            other => Err(Error::bad_input(format!(
                "unknown compression {other:?}: use none, gzip, lz4 or zstd"
            ))),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        })
    }
}

/// How an artifact is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Encryption {
    /// age (age-encryption.org/v1); `age -d -i KEY` reads it.
    Age {
        /// The public X25519 recipients (`age1...`) it was encrypted to; empty with a passphrase.
        recipients: Vec<String>,
        /// True when it was encrypted to a passphrase (scrypt) instead of recipients.
        passphrase: bool,
    },
}

/// One stored artifact of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// The logical name given by the source, such as `configs` or `zentoria_main`.
    pub name: String,
    /// The key on every tier, such as `configs/daily/configs_20260116_143000_a1f3.tar.zst`.
    pub key: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the stored bytes (after compression and encryption),
    /// the same value as the `.sha256` sidecar.
    pub sha256: String,
    /// Size of the bytes before compression and encryption.
    pub raw_size: u64,
    /// Compression of the stored bytes.
    pub compression: Compression,
    /// Encryption of the stored bytes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Where the stored bytes start inside the object at `key` when that object is a
    /// *pack* of several small blobs (see [`crate::layout::pack_key`]): the artifact is the
    /// `size` bytes from this offset, and `sha256` is theirs. `None` when the artifact is
    /// the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// The part of a blob-index line every reader understands: the record of the blob it
/// references. Sources add their own fields beside it (an object's key, its metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The stored blob.
    pub blob: ArtifactRecord,
}

/// Describes one complete backup. A backup exists if and only if its manifest does: it is
/// written last, after every artifact and sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The manifest format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The backup's id.
    pub id: BackupId,
    /// The component backed up.
    pub component: Component,
    /// What kind of backup this is.
    pub kind: BackupKind,
    /// The schedule it belongs to, such as `daily` or `manual`.
    pub schedule: String,
    /// When the backup started.
    pub started_at: DateTime<Utc>,
    /// When the last artifact was stored.
    pub finished_at: DateTime<Utc>,
    /// The zdr version that wrote it.
    pub zdr_version: String,
    /// The backup this one depends on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<BackupId>,
    /// The name of the artifact that indexes this backup's content-addressed blobs, when
    /// it has any: a JSON-lines artifact whose lines each carry a blob's
    /// [`ArtifactRecord`] under `"blob"` ([`BlobRef`]). The blobs live under
    /// [`crate::layout::blob_prefix`], shared by every backup of the component; checks,
    /// replication and pruning follow the index to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_index: Option<String>,
    /// Facts recorded by the source for verification (versions, counts, per-file hashes...).
    #[serde(default)]
    pub facts: serde_json::Value,
    /// The stored artifacts.
    pub artifacts: Vec<ArtifactRecord>,
}

impl Manifest {
    /// Serialize to pretty JSON.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unexpected`] if serialization fails (it does not for valid manifests).
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::unexpected("cannot serialize manifest").with_source(e))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parse and check a manifest.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Integrity`] for JSON that is not a manifest, and
    /// [`crate::ErrorKind::Unsupported`] for a format newer than this build reads.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity("not a zdr manifest").with_source(e))?;
        if probe.format > MANIFEST_FORMAT {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!(
                    "manifest format {} is newer than this zdr reads ({MANIFEST_FORMAT})",
                    probe.format
                ),
            )
            .with_hint("upgrade zdr"));
        }
        let m: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::integrity("malformed zdr manifest").with_source(e))?;
        Ok(m)
    }

    /// The artifact with logical `name`.
    #[must_use]
    pub fn artifact(&self, name: &str) -> Option<&ArtifactRecord> {
        self.artifacts.iter().find(|a| a.name == name)
    }

    /// Total stored size of all artifacts.
    #[must_use]
    pub fn stored_size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}
