//! The four traits every datastore adapter and storage backend implements, and the
//! types they exchange.

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Result;
use crate::id::{BackupId, Component};
use crate::manifest::{ArtifactRecord, BackupKind, Manifest};
use crate::progress::Progress;

/// A boxed byte stream to read.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed byte stream to write.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// One object on a tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its key, relative to the tier's root.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, where the tier reports it.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A place backups are stored: local disk, S3, OneDrive, memory.
///
/// Keys are `/`-separated and relative to the tier's root. Implementations add the tier
/// name and the key to every error they return.
#[async_trait]
pub trait StorageTier: Send + Sync {
    /// The tier's name from the configuration, such as `local` or `minio`.
    fn name(&self) -> &str;

    /// Open `key` for writing. The object exists only after `shutdown()` on the returned
    /// writer succeeds; dropping it earlier abandons the write.
    async fn writer(&self, key: &str) -> Result<BoxWrite>;

    /// Open `key` for reading.
    async fn reader(&self, key: &str) -> Result<BoxRead>;

    /// Open the `len` bytes of `key` from `offset` for reading (a blob inside a pack). By
    /// default, [`StorageTier::reader`] with the bytes before `offset` skipped; a tier that
    /// can ask its store for a range does.
    async fn reader_range(&self, key: &str, offset: u64, len: u64) -> Result<BoxRead> {
        use tokio::io::AsyncReadExt;
        let mut r = self.reader(key).await?;
        let skipped = tokio::io::copy(&mut (&mut r).take(offset), &mut tokio::io::sink())
            .await
            .map_err(|e| {
                crate::Error::from_io(e, "reading up to a range failed").with_context("key", key)
            })?;
        if skipped < offset {
            return Err(crate::Error::integrity(format!(
                "the object ends at {skipped} bytes, before the range at {offset}"
            ))
            .with_context("key", key));
        }
        Ok(Box::new(r.take(len)))
    }

    /// Read a small object (a manifest, a sidecar) whole.
    async fn read_all(&self, key: &str) -> Result<Vec<u8>>;

    /// Write a small object whole.
    async fn write_all(&self, key: &str, bytes: Vec<u8>) -> Result<()>;

    /// Every object under `prefix`, recursively.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>>;

    /// The object at `key`, or `None` if there is none.
    async fn stat(&self, key: &str) -> Result<Option<Entry>>;

    /// Delete `key`, and what an unfinished write of `key` left (a temporary file, an
    /// unfinished multipart upload); deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Delete every key of `keys` as [`StorageTier::delete`] does, in as few requests as the
    /// store allows (an object store's batch delete, a thousand keys a request). No order
    /// among them is promised: a caller that needs one key gone before another makes two
    /// calls. Missing keys succeed. By default, one delete after the other.
    ///
    /// # Errors
    /// The first failure; some keys may be gone by then.
    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// Remove the partial writes interrupted runs left on the tier (a local disk's
    /// temporary files, an object store's unfinished multipart uploads) that are older than
    /// `older_than`, so no run in progress loses its write. Returns how many were removed
    /// and the bytes they held. Tiers without partial writes remove nothing.
    ///
    /// # Errors
    /// When the scratch space cannot be listed.
    async fn sweep_temporary(&self, older_than: std::time::Duration) -> Result<(usize, u64)> {
        let _ = older_than;
        Ok((0, 0))
    }

    /// The bytes a write can still use on the tier, where the tier can tell (a local disk);
    /// `None` for tiers that cannot (object stores).
    ///
    /// # Errors
    /// When the tier can tell but the query fails.
    async fn available_space(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// Where a source writes its artifacts during a backup. The storage layer implements it:
/// each artifact is hashed, compressed and encrypted on the fly and stored on the tier.
#[async_trait]
pub trait ArtifactSink: Send {
    /// Start a new artifact with logical `name` (unique within the backup) and file
    /// extension `ext` (such as `tar` or `sql`, without compression suffix).
    async fn create(&mut self, name: &str, ext: &str) -> Result<Box<dyn ArtifactWrite>>;

    /// True when the artifacts written to this sink are encrypted before they are stored.
    ///
    /// A source holding secrets (such as a Vault export) asks this before writing them.
    /// The default is `false`: a sink that does not say otherwise is treated as storing
    /// plaintext.
    fn encrypts(&self) -> bool {
        false
    }

    /// The raw bytes of the artifact `name` of the newest complete backup of this component
    /// on the tier the backup writes to, or `None` when there is none or it cannot be read
    /// here (encrypted, and no identity): what an incremental source compares against. The
    /// stream fails at its end when the stored bytes do not match their record, so read it
    /// to the end before trusting any of it.
    ///
    /// # Errors
    /// Storage errors reading the catalog. The default has no earlier backups: `None`.
    async fn previous(&mut self, name: &str) -> Result<Option<BoxRead>> {
        let _ = name;
        Ok(None)
    }

    /// The content-addressed blob store of this backup, for a source whose data is many
    /// objects that change little between backups (object storage): each distinct content is
    /// stored once, as a blob named by its SHA-256, and shared by every backup of the
    /// component that references it. `index` names the artifact (created by the source with
    /// [`ArtifactSink::create`]) that lists the blobs the backup uses, one JSON object per
    /// line with the blob's record under `"blob"` ([`crate::BlobRef`]); the manifest records
    /// it, so checks, replication and pruning can follow it.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Unsupported`] for a sink without a blob store (the default).
    fn blobs(&mut self, index: &str) -> Result<std::sync::Arc<dyn BlobStore>> {
        let _ = index;
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            "this artifact sink has no blob store",
        ))
    }
}

/// Content-addressed blobs on the tier a backup writes to (see [`ArtifactSink::blobs`]).
/// A blob is named by the SHA-256 of its raw content and stored through the same pipeline as
/// any artifact (compressed, encrypted, a `.sha256` sidecar over the stored bytes); small
/// blobs may be stored several to an object (a pack), their records then naming the slice
/// ([`ArtifactRecord::offset`]). Shared between concurrent tasks of one backup.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The record of the complete blob (object and sidecar) holding the raw content whose
    /// SHA-256 is `sha256` and whose length is `raw_size`, or `None` when the tier has none.
    async fn find(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>>;

    /// Store `content` as the blob `sha256` unless the tier already holds it, and return its
    /// record. The content's SHA-256 and length are checked while it is written: content
    /// that does not match (it changed while it was read) is refused with
    /// [`crate::ErrorKind::Integrity`] and nothing is stored.
    async fn put(&self, sha256: &str, raw_size: u64, content: BoxRead) -> Result<BlobPut>;

    /// Store what [`BlobStore::put`] accepted but still holds (small blobs gathered into a
    /// pack), and wait until every blob it returned a record for is stored whole. A backup
    /// calls it before its index is committed; the repository calls it again before the
    /// manifest. By default there is nothing to store.
    ///
    /// # Errors
    /// The first failure to store a blob: the backup must then fail.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// What [`BlobStore::put`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPut {
    /// The blob's record.
    pub record: ArtifactRecord,
    /// True when this call stored it; false when the tier already held it.
    pub stored: bool,
}

/// An artifact being written. Write the raw bytes, then call [`ArtifactWrite::finish`];
/// an artifact dropped without `finish` is abandoned and never listed in a manifest.
#[async_trait]
pub trait ArtifactWrite: AsyncWrite + Send + Unpin {
    /// Flush, store the sidecar, and return the artifact's record.
    async fn finish(self: Box<Self>) -> Result<ArtifactRecord>;
}

/// Reads a backup's artifacts back, decrypted and decompressed.
#[async_trait]
pub trait ArtifactReader: Send + Sync {
    /// Open `artifact` for reading its raw bytes. The stream fails (with
    /// [`crate::ErrorKind::Integrity`]) at its end if the stored bytes do not match the
    /// record's size and SHA-256, so a consumer must read it to the end before trusting it.
    async fn open(&self, artifact: &ArtifactRecord) -> Result<BoxRead>;
}

/// What a backup run asks of a source.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The id of the backup being made.
    pub id: BackupId,
    /// The schedule it belongs to, such as `daily`.
    pub schedule: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

/// What a source reports after streaming a backup.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFacts {
    /// The kind of backup made.
    pub kind: BackupKind,
    /// Facts for the manifest that a [`Verifier`] checks later.
    pub facts: serde_json::Value,
}

/// Something that can be backed up.
#[async_trait]
pub trait BackupSource: Send + Sync {
    /// The component this source backs up.
    fn component(&self) -> &Component;

    /// Stream one backup into `sink` and return the facts a [`Verifier`] needs later.
    async fn backup(
        &self,
        req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts>;
}

/// Where a restore goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTarget {
    /// A directory to restore into, for components that restore files.
    pub path: Option<PathBuf>,
    /// A name in the datastore (a database, a collection), when not the original.
    pub name: Option<String>,
    /// Replace data that already exists at the target.
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// Where the data went (a path, a database name).
    pub target: String,
    /// How many items were restored (files, tables, keys).
    pub items: u64,
    /// How many raw bytes were restored.
    pub bytes: u64,
    /// Notes for the operator (files left alone, renamed databases kept for rollback).
    pub notes: Vec<String>,
}

/// Restores a backup.
#[async_trait]
pub trait Restorer: Send + Sync {
    /// The component this restorer handles.
    fn component(&self) -> &Component;

    /// Restore `backup`, reading its artifacts from `from`, into `target`. The storage layer
    /// has verified every artifact's checksum before calling this, unless
    /// [`Restorer::verifies_while_reading`] says the restorer does it itself.
    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome>;

    /// True when this restore reads each artifact it uses to its end (where the stream checks
    /// size and SHA-256) before anything it changed becomes visible, and leaves the target
    /// untouched when that check fails: the storage layer then checks only the sidecars up
    /// front and skips its full checksum pass, so each artifact is read once — one download
    /// from a remote tier instead of two. Default `false`.
    fn verifies_while_reading(&self) -> bool {
        false
    }
}

/// A restorer whose restores take options of their own per call (a restore mode, a single
/// table, a key pattern): [`RestoreCall`] carries them to the storage layer, so no options are
/// ever stored on a long-lived component.
#[async_trait]
pub trait RestoreWithOptions: Send + Sync {
    /// The per-call options.
    type Options: Send + Sync + std::fmt::Debug;

    /// The component restored.
    fn restored_component(&self) -> &Component;

    /// As [`Restorer::verifies_while_reading`], for a restore with `options`.
    fn verifies_while_reading_with(&self, options: &Self::Options) -> bool {
        let _ = options;
        false
    }

    /// Restore `backup` with `options` (see [`Restorer::restore`]).
    async fn restore_with_options(
        &self,
        options: &Self::Options,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome>;
}

/// One restore with its own options: the [`Restorer`] to hand to the storage layer.
#[derive(Debug)]
pub struct RestoreCall<'a, R: RestoreWithOptions + std::fmt::Debug> {
    restorer: &'a R,
    options: R::Options,
}

impl<'a, R: RestoreWithOptions + std::fmt::Debug> RestoreCall<'a, R> {
    /// A restore of `restorer` with `options`.
    pub fn new(restorer: &'a R, options: R::Options) -> Self {
        Self { restorer, options }
    }

    /// The options of this call.
    pub fn options(&self) -> &R::Options {
        &self.options
    }
}

#[async_trait]
impl<R: RestoreWithOptions + std::fmt::Debug> Restorer for RestoreCall<'_, R> {
    fn component(&self) -> &Component {
        self.restorer.restored_component()
    }

    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        self.restorer
            .restore_with_options(&self.options, backup, from, target, progress)
            .await
    }

    fn verifies_while_reading(&self) -> bool {
        self.restorer.verifies_while_reading_with(&self.options)
    }
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// How many items were checked.
    pub checked: u64,
    /// What did not match; empty when the verification passed.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing failed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks restored data against the facts recorded in a manifest.
#[async_trait]
pub trait Verifier: Send + Sync {
    /// Compare the data at `target` with what `backup` recorded.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport>;
}
