//! Content-addressed blobs: the [`BlobStore`] a backup hands to a source whose data is many
//! objects that change little (object storage), the reader of a backup's blob list, and
//! the sweep of blobs no backup references any more.
//!
//! A blob is stored once per component, at [`layout::blob_key`] (the SHA-256 of its raw
//! content), through the same pipeline as any artifact: compressed, encrypted when the
//! pipeline encrypts, with a `.sha256` sidecar over the stored bytes. A backup names the
//! blobs it uses in its *blob list*, a JSON-lines artifact with one [`BlobRef`] per line,
//! which is never encrypted (it holds only content hashes and sizes), so checks,
//! replication and pruning can follow it on a host without the decryption key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zdr_core::{
    ArtifactRecord, ArtifactWrite, BlobPut, BlobRef, BlobStore, BoxRead, Component, Error,
    ErrorKind, Manifest, Progress, Result, StorageTier, layout,
};

use crate::keys::AgeKeys;
use crate::pipeline::{CHUNK, FailureSlot, PipelineOptions, PipelineWriter, open_artifact};

/// The blob store of one backup on one tier.
pub(crate) struct TierBlobs {
    tier: Arc<dyn StorageTier>,
    options: PipelineOptions,
    component: Component,
    progress: Progress,
    /// Blobs being stored right now, so two objects with the same content in one backup
    /// store it once (an encrypted blob differs byte for byte on every write).
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl TierBlobs {
    pub(crate) fn new(
        tier: Arc<dyn StorageTier>,
        options: &PipelineOptions,
        component: Component,
        progress: Progress,
    ) -> Self {
        // Blobs are small and many: compress each on its own pipeline thread.
        let options = PipelineOptions {
            zstd_workers: 0,
            lz4_workers: 0,
            ..options.clone()
        };
        Self {
            tier,
            options,
            component,
            progress,
            busy: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, sha256: &str) -> String {
        layout::blob_key(
            &self.component,
            sha256,
            self.options.compression,
            self.options.keys.encrypts(),
        )
    }

    async fn store(&self, sha256: &str, raw_size: u64, mut content: BoxRead) -> Result<BlobPut> {
        if let Some(record) = self.find(sha256, raw_size).await? {
            return Ok(BlobPut {
                record,
                stored: false,
            });
        }
        let key = self.key(sha256);
        let mut w = PipelineWriter::start(
            self.tier.clone(),
            sha256,
            key.clone(),
            &self.options,
            self.progress.clone(),
            FailureSlot::default(),
            Arc::new(Mutex::new(Vec::new())),
        )?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(raw_size).unwrap_or(CHUNK).max(8192))];
        loop {
            let n = content
                .read(&mut buf)
                .await
                .map_err(|e| Error::from_io(e, "reading the blob's content failed"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            w.write_all(&buf[..n]).await.map_err(|e| {
                Error::from_io(e, "storing a blob failed")
                    .with_context("tier", self.tier.name())
                    .with_context("key", &key)
            })?;
        }
        let actual = hex::encode(hasher.finalize());
        if size != raw_size || actual != sha256 {
            // Dropping the writer abandons the write: nothing is stored under the name.
            return Err(Error::integrity(format!(
                "the content changed while it was read ({size} bytes with SHA-256 {actual}, expected {raw_size} bytes with {sha256})"
            ))
            .with_context("key", &key));
        }
        Ok(BlobPut {
            record: Box::new(w).finish().await?,
            stored: true,
        })
    }
}

#[async_trait]
impl BlobStore for TierBlobs {
    async fn find(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>> {
        if !layout::is_sha256_hex(sha256) {
            return Err(Error::bad_input(format!(
                "{sha256:?} is not a lowercase hex SHA-256"
            )));
        }
        let key = self.key(sha256);
        let Some(entry) = self.tier.stat(&key).await? else {
            return Ok(None);
        };
        // A blob whose sidecar is missing or damaged was cut short: it is stored again.
        let sidecar = match self.tier.read_all(&layout::sidecar_key(&key)).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&sidecar);
        let Some(stored) = layout::parse_sidecar_for(&text, &key) else {
            return Ok(None);
        };
        Ok(Some(ArtifactRecord {
            name: sha256.to_owned(),
            key,
            size: entry.size,
            sha256: stored.to_owned(),
            raw_size,
            compression: self.options.compression,
            encryption: self.options.keys.encryption_record(),
        }))
    }

    async fn put(&self, sha256: &str, raw_size: u64, content: BoxRead) -> Result<BlobPut> {
        if !layout::is_sha256_hex(sha256) {
            return Err(Error::bad_input(format!(
                "{sha256:?} is not a lowercase hex SHA-256"
            )));
        }
        let lock = self
            .busy
            .lock()
            .map_err(|_| Error::unexpected("blob lock poisoned"))?
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let stored = {
            let _held = lock.lock().await;
            self.store(sha256, raw_size, content).await
        };
        if let Ok(mut busy) = self.busy.lock()
            && Arc::strong_count(&lock) <= 2
        {
            busy.remove(sha256);
        }
        stored
    }
}

/// The blob list of `manifest`, read line by line (never whole).
pub struct BlobList {
    lines: tokio::io::Lines<BufReader<BoxRead>>,
    list_key: String,
    prefix: String,
    line: u64,
}

impl std::fmt::Debug for BlobList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobList")
            .field("key", &self.list_key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl BlobList {
    /// Open the blob list of `manifest` on `tier`; `None` for a backup without blobs.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the manifest names a blob list it does not hold.
    pub fn open(
        tier: Arc<dyn StorageTier>,
        manifest: &Manifest,
        keys: &AgeKeys,
    ) -> Result<Option<Self>> {
        let Some(name) = &manifest.blob_index else {
            return Ok(None);
        };
        let record = manifest.artifact(name).ok_or_else(|| {
            Error::integrity(format!(
                "the manifest names blob list {name:?} but has no such artifact"
            ))
            .with_context("backup", &manifest.id)
        })?;
        let reader = open_artifact(tier, record, keys, Progress::none())?;
        Ok(Some(Self {
            lines: BufReader::with_capacity(1 << 16, reader).lines(),
            list_key: record.key.clone(),
            prefix: layout::blob_prefix(&manifest.component),
            line: 0,
        }))
    }

    /// The next blob's record, `None` at the (verified) end of the list.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] for a damaged list or a line naming a key outside the
    /// component's blobs.
    pub async fn next(&mut self) -> Result<Option<ArtifactRecord>> {
        loop {
            let line = self.lines.next_line().await.map_err(|e| {
                Error::from_io(e, "reading the blob list failed")
                    .with_context("key", &self.list_key)
            })?;
            let Some(line) = line else {
                return Ok(None);
            };
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: BlobRef = serde_json::from_str(&line).map_err(|e| {
                Error::integrity(format!(
                    "line {} of the blob list is not a blob record",
                    self.line
                ))
                .with_context("key", &self.list_key)
                .with_source(e)
            })?;
            let key = &parsed.blob.key;
            if !key.starts_with(&self.prefix)
                || !layout::is_safe_key(key)
                || !layout::is_sha256_hex(&parsed.blob.name)
            {
                return Err(Error::integrity(format!(
                    "line {} of the blob list names {key:?}, not a blob of this component",
                    self.line
                ))
                .with_context("key", &self.list_key));
            }
            return Ok(Some(parsed.blob));
        }
    }
}

/// Check one blob as [`crate::verify_stored`] checks an artifact and, with `deep`, decode it
/// and check its raw content against the SHA-256 it is named by.
pub(crate) async fn verify_blob(
    tier: &Arc<dyn StorageTier>,
    keys: &AgeKeys,
    blob: &ArtifactRecord,
    deep: bool,
) -> Result<()> {
    crate::pipeline::verify_stored(tier.as_ref(), blob, &Progress::none()).await?;
    if !deep {
        return Ok(());
    }
    let mut r = open_artifact(tier.clone(), blob, keys, Progress::none())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::from_io(e, "decoding failed").with_context("key", &blob.key))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != blob.name || size != blob.raw_size {
        return Err(Error::integrity(format!(
            "the blob's content has SHA-256 {actual} ({size} bytes), not the {} it is named by",
            blob.name
        ))
        .with_context("tier", tier.name())
        .with_context("key", &blob.key));
    }
    Ok(())
}

/// What a sweep of unreferenced blobs found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobSweep {
    /// The blobs (keys) removed, or that a dry run would remove.
    pub removed: Vec<String>,
    /// Their stored bytes.
    pub bytes: u64,
    /// Blobs still referenced by a backup on the tier.
    pub kept: usize,
}

/// Remove the blobs of `component` on `tier` that no backup in `manifests` (the backups of
/// the component kept on the tier) references and that are older than `grace`, so a backup in
/// progress, whose list is not written yet, keeps the blobs it just stored. A manifest on the
/// tier that is neither in `manifests` nor in `going` (the manifest keys of the backups being
/// deleted) — a backup that finished meanwhile — keeps its blobs too. With `dry_run`, only
/// lists them.
///
/// A backup still running references blobs it found stored before its manifest exists: run
/// prune and backups of the same component one at a time.
///
/// # Errors
/// Storage errors, and any blob list that cannot be read: then nothing is removed, since
/// its blobs would look unreferenced.
pub async fn sweep_blobs(
    tier: &Arc<dyn StorageTier>,
    keys: &AgeKeys,
    component: &Component,
    manifests: &[&Manifest],
    going: &[String],
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<BlobSweep> {
    let mut referenced: std::collections::HashSet<String> = std::collections::HashSet::new();
    for m in manifests {
        if &m.component != component {
            continue;
        }
        let Some(mut list) = BlobList::open(tier.clone(), m, keys)? else {
            continue;
        };
        while let Some(blob) = list.next().await? {
            referenced.insert(blob.key);
        }
    }
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut out = BlobSweep::default();
    let entries = tier.list(&layout::blob_prefix(component)).await?;
    // A backup that finished since the caller read the catalog keeps its blobs too.
    let known: std::collections::HashSet<String> = manifests
        .iter()
        .map(|m| layout::manifest_key(&m.component, &m.id))
        .chain(going.iter().cloned())
        .collect();
    let prefix = format!("{}{component}/", layout::MANIFESTS);
    for e in tier.list(&prefix).await? {
        if !e.key.ends_with(".json") || known.contains(&e.key) {
            continue;
        }
        let bytes = tier.read_all(&e.key).await?;
        let m = Manifest::from_json(&bytes).map_err(|err| err.with_context("key", &e.key))?;
        if let Some(mut list) = BlobList::open(tier.clone(), &m, keys)? {
            while let Some(blob) = list.next().await? {
                referenced.insert(blob.key);
            }
        }
    }
    for e in entries {
        let blob_key = e.key.strip_suffix(".sha256").unwrap_or(&e.key);
        if referenced.contains(blob_key) {
            if blob_key == e.key {
                out.kept += 1;
            }
            continue;
        }
        // Unknown age: a blob being written right now looks the same; leave it.
        if e.modified.is_none_or(|m| m > cutoff) {
            continue;
        }
        out.bytes += e.size;
        out.removed.push(e.key);
    }
    if !dry_run {
        // In batches, the blobs before their sidecars.
        let (blobs, sidecars): (Vec<String>, Vec<String>) = out
            .removed
            .iter()
            .cloned()
            .partition(|k| !k.ends_with(".sha256"));
        tier.delete_many(&blobs).await?;
        tier.delete_many(&sidecars).await?;
    }
    Ok(out)
}
