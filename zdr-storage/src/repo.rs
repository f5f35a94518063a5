//! [`Repository`]: one tier plus the pipeline options, running backups, verifications and
//! restores with the rules of `design.md` (manifest last, check before restoring).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::Utc;
use zdr_core::{
    ArtifactReader, ArtifactRecord, ArtifactSink, ArtifactWrite, BackupId, BackupRequest,
    BackupSource, BoxRead, Catalog, Component, Error, ErrorKind, MANIFEST_FORMAT, Manifest,
    Progress, RestoreOutcome, RestoreTarget, Restorer, Result, StorageTier, ZDR_VERSION, layout,
};

use crate::pipeline::{
    FailureSlot, PipelineOptions, PipelineWriter, open_artifact, verify_sidecar, verify_stored,
};

/// A tier with the options used to write to it and the keys to read from it.
#[derive(Clone)]
pub struct Repository {
    tier: Arc<dyn StorageTier>,
    options: PipelineOptions,
    sweep_grace: std::time::Duration,
}

/// How old a temporary file of an interrupted run must be before a backup removes it: long
/// enough that no write still in progress (which keeps touching its file) is taken for one.
pub const DEFAULT_SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("tier", &self.tier.name())
            .field("options", &self.options)
            .finish()
    }
}

impl Repository {
    /// A repository on `tier` writing with `options`.
    pub fn new(tier: Arc<dyn StorageTier>, options: PipelineOptions) -> Self {
        Self::with_sweep_grace(tier, options, DEFAULT_SWEEP_GRACE)
    }

    /// A repository whose backups first remove temporary files of interrupted runs older
    /// than `grace` ([`DEFAULT_SWEEP_GRACE`] with [`Repository::new`]).
    #[must_use]
    pub fn with_sweep_grace(
        tier: Arc<dyn StorageTier>,
        options: PipelineOptions,
        grace: std::time::Duration,
    ) -> Self {
        Self {
            tier,
            options,
            sweep_grace: grace,
        }
    }

    /// The tier.
    #[must_use]
    pub fn tier(&self) -> &Arc<dyn StorageTier> {
        &self.tier
    }

    /// The pipeline options.
    #[must_use]
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// Every complete backup on the tier.
    ///
    /// # Errors
    /// Storage errors from listing the tier.
    pub async fn catalog(&self) -> Result<Catalog> {
        Catalog::load(self.tier.as_ref()).await
    }

    /// Run one backup of `source`: stream its artifacts through the pipeline, then write
    /// the manifest last. On failure, the artifacts written so far are deleted (best
    /// effort) and no manifest is written, so the catalog never sees the attempt.
    ///
    /// # Errors
    /// The source's error, or the storage error that caused it, with the component named.
    pub async fn backup(
        &self,
        source: &dyn BackupSource,
        schedule: &str,
        progress: &Progress,
    ) -> Result<Manifest> {
        let component = source.component().clone();
        if schedule.is_empty() || !zdr_core::layout::is_safe_key(schedule) || schedule.contains('/')
        {
            return Err(Error::bad_input(format!(
                "invalid schedule name {schedule:?}"
            )));
        }
        self.check_space(&component).await?;
        let started_at = Utc::now();
        let req = BackupRequest {
            id: BackupId::generate(started_at),
            schedule: schedule.to_owned(),
            started_at,
        };
        match self.tier.sweep_temporary(self.sweep_grace).await {
            Ok((0, _)) => {}
            Ok((n, bytes)) => progress.warn(format!(
                "removed {n} partial write(s) ({bytes} bytes) left on tier {} by interrupted runs",
                self.tier.name()
            )),
            Err(e) => progress.warn(format!("could not sweep temporary files: {e}")),
        }
        let task = format!("backup {component}");
        progress.start(&task, None);
        let mut sink = BackupSink {
            tier: self.tier.clone(),
            options: self.options.clone(),
            component: component.clone(),
            req: req.clone(),
            progress: progress.clone(),
            failure: FailureSlot::default(),
            finished: Arc::new(Mutex::new(Vec::new())),
            created: Vec::new(),
            blob_list: None,
            blob_store: None,
        };
        let result = source.backup(&req, &mut sink, progress).await;
        let outcome = match result {
            Ok(facts) => self.write_manifest(&sink, &req, facts).await,
            Err(e) => Err(sink.failure.take().unwrap_or(e)),
        };
        if outcome.is_err()
            && let Some(blobs) = &sink.blob_store
        {
            // Nothing the failed backup started lands on the tier after it reports.
            blobs.settle().await;
        }
        match outcome {
            Ok(m) => {
                progress.finish(&task);
                Ok(m)
            }
            Err(e) => {
                sink.cleanup().await;
                progress.finish(&task);
                Err(e.with_context("component", &component))
            }
        }
    }

    /// Refuse a backup that cannot fit, before anything is written: on a tier that knows
    /// its free space, the newest backup of the same component (its stored size, plus a
    /// margin for growth) must fit. A component backed up for the first time, or a tier that
    /// cannot tell, is not checked (a write that fills the disk still fails cleanly).
    async fn check_space(&self, component: &Component) -> Result<()> {
        let Some(available) = self.tier.available_space().await? else {
            return Ok(());
        };
        let prefix = format!("{}{component}/", layout::MANIFESTS);
        let newest = self
            .tier
            .list(&prefix)
            .await?
            .into_iter()
            .filter(|e| e.key.ends_with(".json"))
            .max_by(|a, b| a.key.cmp(&b.key));
        let Some(newest) = newest else {
            return Ok(());
        };
        let Ok(bytes) = self.tier.read_all(&newest.key).await else {
            return Ok(());
        };
        let Ok(previous) = serde_json::from_slice::<Manifest>(&bytes) else {
            return Ok(());
        };
        let last: u64 = previous.artifacts.iter().map(|a| a.size).sum();
        // 10 % growth, and 1 MiB of room for the manifest and sidecars.
        let needed = last + last / 10 + (1 << 20);
        if available < needed {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "not enough free space on tier {}: {} available, the last backup of {component} ({}) took {}",
                    self.tier.name(),
                    human_bytes(available),
                    previous.id,
                    human_bytes(last)
                ),
            )
            .with_context("tier", self.tier.name())
            .with_hint("free space on the tier's disk (or remove old backups) and run the backup again"));
        }
        Ok(())
    }

    async fn write_manifest(
        &self,
        sink: &BackupSink,
        req: &BackupRequest,
        facts: zdr_core::SourceFacts,
    ) -> Result<Manifest> {
        let artifacts = sink
            .finished
            .lock()
            .map(|f| f.clone())
            .map_err(|_| Error::unexpected("artifact list poisoned"))?;
        let finished: HashSet<&str> = artifacts.iter().map(|a| a.key.as_str()).collect();
        if let Some(open) = sink.created.iter().find(|k| !finished.contains(k.as_str())) {
            return Err(Error::unexpected(format!(
                "the source returned before finishing artifact {open}"
            )));
        }
        if artifacts.is_empty() {
            return Err(Error::unexpected("the source wrote no artifact"));
        }
        // Every blob the index names is stored whole before the backup exists.
        if let Some(blobs) = &sink.blob_store {
            zdr_core::BlobStore::flush(blobs.as_ref()).await?;
        }
        if let Some(list) = &sink.blob_list
            && !artifacts.iter().any(|a| &a.name == list)
        {
            return Err(Error::unexpected(format!(
                "the source asked for a blob store but wrote no blob list {list:?}"
            )));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: req.id.clone(),
            component: sink.component.clone(),
            kind: facts.kind,
            schedule: req.schedule.clone(),
            started_at: req.started_at,
            finished_at: Utc::now(),
            zdr_version: ZDR_VERSION.to_owned(),
            parent: None,
            blob_index: sink.blob_list.clone(),
            facts: facts.facts,
            artifacts,
        };
        write_manifest(self.tier.as_ref(), &manifest).await?;
        Ok(manifest)
    }

    /// Check every artifact of `manifest` on this tier: size, SHA-256 and sidecar. With
    /// `deep`, also decrypt and decompress each one to its end. A backup with blobs has each
    /// blob its list names checked the same way, and with `deep` its content against the
    /// SHA-256 it is named by.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] for the first artifact that does not match, naming tier and key.
    pub async fn verify(&self, manifest: &Manifest, deep: bool, progress: &Progress) -> Result<()> {
        self.verify_artifacts(manifest, deep, progress).await?;
        self.verify_blobs(manifest, deep, progress).await
    }

    /// Check every blob `manifest`'s blob list names (see [`Repository::verify`]); nothing
    /// for a backup without blobs.
    ///
    /// # Errors
    /// As [`Repository::verify`].
    pub async fn verify_blobs(
        &self,
        manifest: &Manifest,
        deep: bool,
        progress: &Progress,
    ) -> Result<()> {
        use futures::StreamExt;
        let Some(mut list) =
            crate::blobs::BlobList::open(self.tier.clone(), manifest, &self.options.keys)?
        else {
            return Ok(());
        };
        let task = format!("check the blobs of {} {}", manifest.component, manifest.id);
        progress.start(&task, None);
        loop {
            // Repeats are dropped within a batch only, so memory stays flat whatever the
            // number of objects (a blob named again in a later batch is checked again).
            let mut seen: HashSet<(String, Option<u64>)> = HashSet::new();
            let mut batch = Vec::new();
            while batch.len() < 256 {
                match list.next().await? {
                    Some(b) if seen.insert((b.key.clone(), b.offset)) => batch.push(b),
                    Some(_) => {}
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let checks = futures::stream::iter(
                batch
                    .iter()
                    .map(|b| crate::blobs::verify_blob(&self.tier, &self.options.keys, b, deep)),
            )
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
            for c in checks {
                c?;
            }
            progress.advance(&task, n);
        }
        progress.finish(&task);
        Ok(())
    }

    async fn verify_artifacts(
        &self,
        manifest: &Manifest,
        deep: bool,
        progress: &Progress,
    ) -> Result<()> {
        for a in &manifest.artifacts {
            progress.start(&a.key, Some(a.size));
            let res = verify_stored(self.tier.as_ref(), a, progress).await;
            progress.finish(&a.key);
            res?;
            if deep {
                let mut r = self.open(a, Progress::none())?;
                tokio::io::copy(&mut r, &mut tokio::io::sink())
                    .await
                    .map_err(|e| Error::from_io(e, "decoding failed"))?;
            }
        }
        Ok(())
    }

    /// Check the `.sha256` sidecar of every artifact of `manifest` against the manifest
    /// (small reads; the artifacts themselves are not read).
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] for the first sidecar that is missing or disagrees.
    pub async fn verify_sidecars(&self, manifest: &Manifest) -> Result<()> {
        for a in &manifest.artifacts {
            verify_sidecar(self.tier.as_ref(), a).await?;
        }
        Ok(())
    }

    /// Open one artifact for reading its raw bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Decrypt`] when the artifact is encrypted and no key is configured.
    pub fn open(&self, record: &ArtifactRecord, progress: Progress) -> Result<BoxRead> {
        open_artifact(self.tier.clone(), record, &self.options.keys, progress)
    }

    /// Restore `manifest` with `restorer` into `target`. Every artifact's checksum is verified
    /// first: a corrupt backup is refused before the target is touched. A restorer that
    /// checks each artifact while it reads it, before anything it changed is visible
    /// ([`Restorer::verifies_while_reading`]), gets the sidecars checked first and the
    /// artifacts read once, by itself.
    ///
    /// # Errors
    /// Integrity errors from the check, or the restorer's errors.
    pub async fn restore(
        &self,
        restorer: &dyn Restorer,
        manifest: &Manifest,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        if restorer.component() != &manifest.component {
            return Err(Error::bad_input(format!(
                "backup {} is of {}, not {}",
                manifest.id,
                manifest.component,
                restorer.component()
            )));
        }
        let checked = if restorer.verifies_while_reading() {
            self.verify_sidecars(manifest).await
        } else {
            self.verify(manifest, false, progress).await
        };
        checked.map_err(|e| e.with_context("component", &manifest.component))?;
        let reader = RepoReader {
            repo: self.clone(),
            progress: progress.clone(),
        };
        restorer
            .restore(manifest, &reader, target, progress)
            .await
            .map_err(|e| e.with_context("component", &manifest.component))
    }

    /// Delete a backup: its manifest first (so it leaves the catalog at once), then its
    /// artifacts and sidecars.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn delete_backup(&self, manifest: &Manifest) -> Result<()> {
        let key = layout::manifest_key(&manifest.component, &manifest.id);
        self.tier.delete(&key).await?;
        self.tier.delete(&layout::sidecar_key(&key)).await?;
        for a in &manifest.artifacts {
            self.tier.delete(&a.key).await?;
            self.tier.delete(&layout::sidecar_key(&a.key)).await?;
        }
        Ok(())
    }

    /// Delete several backups in as few requests as the tier allows
    /// ([`StorageTier::delete_many`]): every manifest first, so each backup leaves the catalog
    /// before any of its files goes, then the manifests' sidecars, the artifacts and theirs.
    /// A run cut short leaves unreferenced files, never a manifest without its artifacts.
    ///
    /// # Errors
    /// Storage errors; when the manifests' deletion fails, no artifact was touched.
    pub async fn delete_backups(&self, manifests: &[&Manifest]) -> Result<()> {
        let heads: Vec<String> = manifests
            .iter()
            .map(|m| layout::manifest_key(&m.component, &m.id))
            .collect();
        self.tier.delete_many(&heads).await?;
        zdr_core::failpoint("prune-after-manifests");
        let mut rest: Vec<String> = heads.iter().map(|k| layout::sidecar_key(k)).collect();
        for m in manifests {
            for a in &m.artifacts {
                rest.push(a.key.clone());
                rest.push(layout::sidecar_key(&a.key));
            }
        }
        self.tier.delete_many(&rest).await.map_err(|e| {
            e.with_context(
                "state",
                "the manifests are deleted; the files left are removed by a later prune as orphans",
            )
        })
    }
}

/// Write a manifest's sidecar, then the manifest itself (which makes the backup exist).
pub(crate) async fn write_manifest(tier: &dyn StorageTier, manifest: &Manifest) -> Result<()> {
    let key = layout::manifest_key(&manifest.component, &manifest.id);
    let json = manifest.to_json()?;
    let sha = zdr_core::sha256_hex(&json);
    tier.write_all(
        &layout::sidecar_key(&key),
        layout::sidecar_line(&key, &sha).into_bytes(),
    )
    .await?;
    tier.write_all(&key, json).await
}

struct RepoReader {
    repo: Repository,
    progress: Progress,
}

#[async_trait]
impl ArtifactReader for RepoReader {
    async fn open(&self, artifact: &ArtifactRecord) -> Result<BoxRead> {
        self.repo.open(artifact, self.progress.clone())
    }
}

struct BackupSink {
    tier: Arc<dyn StorageTier>,
    options: PipelineOptions,
    component: Component,
    req: BackupRequest,
    progress: Progress,
    failure: FailureSlot,
    finished: Arc<Mutex<Vec<ArtifactRecord>>>,
    created: Vec<String>,
    /// The blob list's name, once the source asked for the blob store.
    blob_list: Option<String>,
    /// The blob store handed to the source.
    blob_store: Option<Arc<crate::blobs::TierBlobs>>,
}

impl BackupSink {
    async fn cleanup(&self) {
        for key in &self.created {
            for k in [key.clone(), layout::sidecar_key(key)] {
                match self.tier.delete(&k).await {
                    Ok(()) => crate::inflight::forget(self.tier.name(), &k),
                    Err(e) => self
                        .progress
                        .warn(format!("could not remove the partial artifact {k}: {e}")),
                }
            }
        }
    }
}

#[async_trait]
impl ArtifactSink for BackupSink {
    async fn create(&mut self, name: &str, ext: &str) -> Result<Box<dyn ArtifactWrite>> {
        let safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !s.starts_with('.')
        };
        if !safe(name) || !(ext.is_empty() || safe(ext)) {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("invalid artifact name {name:?} or extension {ext:?}"),
            ));
        }
        let key = layout::artifact_key(
            &self.component,
            &self.req.schedule,
            name,
            &self.req.id,
            ext,
            self.options.compression,
            self.options.keys.encrypts() && self.blob_list.as_deref() != Some(name),
        );
        if self.created.contains(&key) {
            return Err(Error::unexpected(format!("artifact {name} created twice")));
        }
        self.created.push(key.clone());
        self.progress.start(&key, None);
        // The blob list holds only content hashes and sizes, and is read by checks,
        // replication and pruning on hosts without the decryption key: never encrypted.
        let plain;
        let options = if self.blob_list.as_deref() == Some(name) {
            plain = PipelineOptions {
                keys: crate::keys::AgeKeys::none(),
                ..self.options.clone()
            };
            &plain
        } else {
            &self.options
        };
        let w = PipelineWriter::start(
            self.tier.clone(),
            name,
            key,
            options,
            self.progress.clone(),
            self.failure.clone(),
            self.finished.clone(),
        )?;
        Ok(Box::new(w))
    }

    fn encrypts(&self) -> bool {
        self.options.keys.encrypts()
    }

    async fn previous(&mut self, name: &str) -> Result<Option<BoxRead>> {
        let prefix = format!("{}{}/", layout::MANIFESTS, self.component);
        let mut keys: Vec<String> = self
            .tier
            .list(&prefix)
            .await?
            .into_iter()
            .map(|e| e.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        // Backup ids sort by time: the newest first.
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for key in keys {
            let Ok(bytes) = self.tier.read_all(&key).await else {
                continue;
            };
            let Ok(m) = Manifest::from_json(&bytes) else {
                continue;
            };
            if m.component != self.component || m.id == self.req.id {
                continue;
            }
            let Some(record) = m.artifact(name) else {
                continue;
            };
            if record.encryption.is_some() && !self.options.keys.can_decrypt() {
                return Ok(None);
            }
            return open_artifact(
                self.tier.clone(),
                record,
                &self.options.keys,
                Progress::none(),
            )
            .map(Some);
        }
        Ok(None)
    }

    fn blobs(&mut self, index: &str) -> Result<Arc<dyn zdr_core::BlobStore>> {
        if self.blob_list.as_deref().is_some_and(|l| l != index) {
            return Err(Error::unexpected("a backup has one blob list"));
        }
        if self.created.iter().any(|k| {
            k.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with(&format!("{index}_")))
        }) {
            return Err(Error::unexpected(format!(
                "ask for the blob store before creating the blob list {index:?}"
            )));
        }
        self.blob_list = Some(index.to_owned());
        let store = Arc::new(crate::blobs::TierBlobs::new(
            self.tier.clone(),
            &self.options,
            self.component.clone(),
            self.progress.clone(),
        ));
        self.blob_store = Some(store.clone());
        Ok(store)
    }
}

/// `bytes` for people: `1.5 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
