//! Replication between tiers (local → S3 → OneDrive): every backup missing on the
//! destination is copied artifact by artifact, each copy read back and checked, and the
//! manifest written last, so a replication cut short leaves nothing that looks complete.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zdr_core::{
    ArtifactRecord, BackupId, Catalog, Error, ErrorKind, Manifest, Progress, Result, StorageTier,
    layout,
};

use crate::keys::AgeKeys;
use crate::lock::{LockPolicy, TierLock, component_lock};
use crate::pipeline::{CHUNK, Sidecar, verify_sidecar, verify_stored};
use crate::repo::write_manifest;
use crate::retry::RetryPolicy;

/// What a replication did.
#[derive(Debug, Default)]
pub struct ReplicationReport {
    /// Backups copied to the destination.
    pub copied: Vec<BackupId>,
    /// Backups already on the destination.
    pub already_present: usize,
    /// Backups that could not be copied, with the error (tier and key in its context).
    pub failed: Vec<(BackupId, Error)>,
    /// Bytes copied.
    pub bytes: u64,
}

/// Copy every backup of `from` that `to` lacks. One backup failing does not stop the others;
/// the report lists it — except when the destination tier itself fails (a storage error of
/// that tier, after the retries): then the remaining backups are not tried in this run and are
/// listed as failed with that reason, instead of each waiting through its own retries.
///
/// This takes no lock: a caller sharing the destination with backups and prunes takes them
/// itself, or calls [`replicate_locked`].
///
/// # Errors
/// Only when the source catalog cannot be read or listed.
pub async fn replicate(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<ReplicationReport> {
    replicate_inner(from, to, policy, None, progress).await
}

/// [`replicate`], holding each component's lock ([`crate::component_lock`]) on the
/// destination while its backups are written there, so a prune of that tier waits for them
/// (and the replication waits, up to `locks.wait`, for a prune working on the component).
/// A component whose lock stays held is not copied in this run: its backups are listed as
/// failed with the holder named.
///
/// # Errors
/// Only when the source catalog cannot be read or listed.
pub async fn replicate_locked(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    policy: &RetryPolicy,
    locks: &LockPolicy,
    progress: &Progress,
) -> Result<ReplicationReport> {
    replicate_inner(from, to, policy, Some(locks), progress).await
}

async fn replicate_inner(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    policy: &RetryPolicy,
    locks: Option<&LockPolicy>,
    progress: &Progress,
) -> Result<ReplicationReport> {
    let source = Catalog::load(from.as_ref()).await?;
    let mut report = ReplicationReport::default();
    let mut destination_down: Option<String> = None;
    // The backups by component, in the catalog's order.
    let mut groups: Vec<(String, Vec<&Manifest>)> = Vec::new();
    for m in source.list(None) {
        match groups.iter_mut().find(|(c, _)| c == m.component.as_str()) {
            Some((_, v)) => v.push(m),
            None => groups.push((m.component.to_string(), vec![m])),
        }
    }
    for (component, backups) in groups {
        let mut lock: Option<TierLock> = None;
        // Why the component's lock could not be taken (its other backups are not tried).
        let mut refused: Option<String> = None;
        for m in backups {
            let skipped = match (&destination_down, &refused) {
                (Some(reason), _) => Some((ErrorKind::Storage, reason)),
                (None, Some(reason)) => Some((ErrorKind::Conflict, reason)),
                (None, None) => None,
            };
            if let Some((kind, reason)) = skipped {
                report.failed.push((
                    m.id.clone(),
                    Error::new(kind, format!("not tried: {reason}"))
                        .with_context("tier", to.name()),
                ));
                continue;
            }
            match present(to, m, policy, progress).await {
                Ok(true) => {
                    report.already_present += 1;
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    if destination_failed(&e, to.as_ref()) {
                        destination_down = Some(format!(
                            "tier {} failed earlier in this run ({e})",
                            to.name()
                        ));
                    }
                    report.failed.push((m.id.clone(), e));
                    continue;
                }
            }
            if lock.is_none()
                && let Some(lp) = locks
            {
                let command = format!("replicate {component} from {}", from.name());
                match TierLock::take(
                    to.clone(),
                    &component_lock(&component),
                    &command,
                    lp,
                    progress,
                )
                .await
                {
                    Ok(l) => lock = Some(l),
                    Err(e) => {
                        if destination_failed(&e, to.as_ref()) {
                            destination_down = Some(format!(
                                "tier {} failed earlier in this run ({e})",
                                to.name()
                            ));
                        } else {
                            refused = Some(format!("{e}"));
                        }
                        report.failed.push((m.id.clone(), e));
                        continue;
                    }
                }
                // Another run may have copied it while this one waited.
                if matches!(present(to, m, policy, progress).await, Ok(true)) {
                    report.already_present += 1;
                    continue;
                }
            }
            match copy_backup(from, to, m, policy, progress).await {
                Ok(bytes) => {
                    report.bytes += bytes;
                    report.copied.push(m.id.clone());
                    progress.info(format!(
                        "replicated {} {} from {} to {}",
                        m.component,
                        m.id,
                        from.name(),
                        to.name()
                    ));
                }
                Err(e) => {
                    if destination_failed(&e, to.as_ref()) {
                        destination_down = Some(format!(
                            "tier {} failed earlier in this run ({e})",
                            to.name()
                        ));
                    }
                    report.failed.push((m.id.clone(), e));
                }
            }
        }
        if let Some(l) = lock
            && let Err(e) = l.release().await
        {
            progress.warn(format!(
                "could not remove the lock of {component} on tier {}: {e}",
                to.name()
            ));
        }
    }
    Ok(report)
}

/// Whether `m`'s manifest is on `to` already.
async fn present(
    to: &Arc<dyn StorageTier>,
    m: &Manifest,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<bool> {
    let key = layout::manifest_key(&m.component, &m.id);
    policy
        .run(&format!("stat {key} on {}", to.name()), progress, || {
            to.stat(&key)
        })
        .await
        .map(|e| e.is_some())
}

/// A storage failure of the destination tier itself (not a damaged source backup).
fn destination_failed(e: &Error, to: &dyn StorageTier) -> bool {
    e.kind() == ErrorKind::Storage && e.context_value("tier") == Some(to.name())
}

/// Copy one backup from `from` to `to` as [`replicate`] copies each: every artifact read once
/// from the source and checked against its record while it is written, then the manifest.
/// Returns the bytes copied.
///
/// # Errors
/// A damaged source artifact ([`ErrorKind::Integrity`]), either tier's storage errors after
/// the retries; a partial copy is removed by the attempt that made it.
pub async fn replicate_backup(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    backup: &Manifest,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<u64> {
    copy_backup(from, to, backup, policy, progress).await
}

async fn copy_backup(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    m: &Manifest,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<u64> {
    let mut bytes = 0;
    for a in &m.artifacts {
        bytes += copy_one(from, to, a, policy, progress).await?;
    }
    bytes += copy_blobs(from, to, m, policy, progress).await?;
    let what = format!("write manifest of {} to {}", m.id, to.name());
    policy
        .run(&what, progress, || write_manifest(to.as_ref(), m))
        .await?;
    Ok(bytes)
}

/// Copy one artifact (with the retries of `policy`); returns its size.
async fn copy_one(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    a: &ArtifactRecord,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<u64> {
    let what = format!("copy {} from {} to {}", a.key, from.name(), to.name());
    progress.start(&what, Some(a.size));
    policy
        .run(&what, progress, || async move {
            let flight = crate::inflight::begin(to, &a.key);
            let copied = copy_artifact(from.as_ref(), to.as_ref(), a, progress).await;
            if copied.is_ok() {
                crate::inflight::end(flight);
            } else if to.delete(&a.key).await.is_ok() {
                // The failed attempt's partial copy (a temporary file, an unfinished
                // multipart upload) goes now, not at the next sweep.
                crate::inflight::end(flight);
            }
            copied
        })
        .await?;
    progress.finish(&what);
    Ok(a.size)
}

/// Copy the blobs `m`'s blob list names that the destination lacks (a blob already there
/// with a sidecar that matches is shared, not copied again). Returns the bytes copied.
async fn copy_blobs(
    from: &Arc<dyn StorageTier>,
    to: &Arc<dyn StorageTier>,
    m: &Manifest,
    policy: &RetryPolicy,
    progress: &Progress,
) -> Result<u64> {
    use futures::StreamExt;
    let Some(mut list) = crate::blobs::BlobList::open(from.clone(), m, &AgeKeys::none())? else {
        return Ok(0);
    };
    let mut bytes = 0;
    loop {
        // One copy per key at a time: objects with the same content name the same blob.
        let mut seen = std::collections::HashSet::new();
        let mut batch = Vec::new();
        while batch.len() < 256 {
            match list.next().await? {
                Some(b) if seen.insert(b.key.clone()) => batch.push(b),
                Some(_) => {}
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(bytes);
        }
        let copies = futures::stream::iter(batch.iter().map(|b| async move {
            // A blob in a pack travels with its pack: the whole object, checked against the
            // pack's sidecar, then the pack's table.
            let packed = b.offset.is_some();
            let whole;
            let b = if packed {
                whole = policy
                    .run(
                        &format!("read the sidecar of {} on {}", b.key, from.name()),
                        progress,
                        || pack_record(from.as_ref(), b),
                    )
                    .await?;
                &whole
            } else {
                b
            };
            let present = policy
                .run(
                    &format!("stat {} on {}", b.key, to.name()),
                    progress,
                    || to.stat(&b.key),
                )
                .await?;
            // A pack's table travels first, so a pack whose sidecar is there has its table.
            let table = layout::pack_table_key(&b.key);
            let copy_table = || async {
                policy
                    .run(&format!("copy {table} to {}", to.name()), progress, || {
                        crate::blobs::copy_pack_table(from.as_ref(), to.as_ref(), &b.key)
                    })
                    .await
            };
            if present.is_none() {
                if packed {
                    copy_table().await?;
                }
                return copy_one(from, to, b, policy, progress).await;
            }
            if packed
                && to
                    .stat(&layout::sidecar_key(&table))
                    .await
                    .is_ok_and(|s| s.is_none())
            {
                // An earlier copy that stopped between the table and the pack, or a table
                // lost on the destination.
                copy_table().await?;
            }
            // A blob already there is shared by the destination's own backups: it is never
            // replaced or removed. Stored bytes that differ (the same content encrypted
            // anew) cannot serve this backup's records.
            if present.is_some_and(|e| e.size == b.size) {
                if verify_sidecar(to.as_ref(), b).await.is_ok() {
                    return Ok(0);
                }
                // An earlier copy cut short after the object, before its sidecar: the same
                // bytes need only their sidecar.
                let missing = to
                    .stat(&layout::sidecar_key(&b.key))
                    .await
                    .is_ok_and(|s| s.is_none());
                if missing && same_bytes(to.as_ref(), b).await {
                    to.write_all(
                        &layout::sidecar_key(&b.key),
                        layout::sidecar_line(&b.key, &b.sha256).into_bytes(),
                    )
                    .await?;
                    return Ok(0);
                }
            }
            Err(Error::integrity(
                "the destination holds this blob with other stored bytes (or without its sidecar); it is shared by the destination's backups and is not replaced",
            )
            .with_context("tier", to.name())
            .with_context("key", &b.key)
            .with_hint("verify the destination tier; a blob without its sidecar is removed by the next prune once unreferenced"))
        }))
        .buffer_unordered(8)
        .collect::<Vec<Result<u64>>>()
        .await;
        for c in copies {
            bytes += c?;
        }
    }
}

/// The record of the whole pack holding the blob `b`: its size on `from` and the SHA-256
/// its sidecar gives.
async fn pack_record(from: &dyn StorageTier, b: &ArtifactRecord) -> Result<ArtifactRecord> {
    let missing = |what: &str| {
        Error::integrity(format!("the pack holding a blob of this backup {what}"))
            .with_context("tier", from.name())
            .with_context("key", &b.key)
    };
    let Some(entry) = from.stat(&b.key).await? else {
        return Err(missing("is missing"));
    };
    let sha = match crate::pipeline::read_sidecar(from, &b.key).await? {
        Sidecar::Missing => return Err(missing("has no .sha256 sidecar")),
        Sidecar::Unusable => return Err(missing("has a sidecar that does not name it")),
        Sidecar::Digest(d) => d,
    };
    Ok(ArtifactRecord {
        name: b.name.clone(),
        key: b.key.clone(),
        size: entry.size,
        sha256: sha,
        raw_size: entry.size,
        compression: zdr_core::Compression::None,
        encryption: None,
        offset: None,
    })
}

/// Whether the object at `a.key` on `tier` holds exactly the bytes `a` records.
async fn same_bytes(tier: &dyn StorageTier, a: &ArtifactRecord) -> bool {
    let Ok(mut r) = tier.reader(&a.key).await else {
        return false;
    };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(_) => return false,
        }
    }
    size == a.size && hex::encode(hasher.finalize()) == a.sha256
}

/// Copy one artifact, hashing the source bytes on the way (a corrupt source is never
/// replicated), then read the copy back and check it with its sidecar.
async fn copy_artifact(
    from: &dyn StorageTier,
    to: &dyn StorageTier,
    a: &ArtifactRecord,
    progress: &Progress,
) -> Result<()> {
    let mut r = from.reader(&a.key).await?;
    let mut w = to.writer(&a.key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let io = |tier: &str, what: &str, e: std::io::Error| {
        let err = Error::new(ErrorKind::Storage, format!("{what} failed"))
            .with_context("tier", tier)
            .with_context("key", &a.key)
            .with_source(e);
        // Network failures mid-stream are worth another attempt.
        err.temporary()
    };
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| io(from.name(), "read", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        w.write_all(&buf[..n])
            .await
            .map_err(|e| io(to.name(), "write", e))?;
    }
    let sha = hex::encode(hasher.finalize());
    if size != a.size || sha != a.sha256 {
        return Err(Error::integrity(
            "the source copy does not match its manifest; not replicating it",
        )
        .with_context("tier", from.name())
        .with_context("key", &a.key)
        .with_hint("verify the backup on the source tier (Repository::verify)"));
    }
    w.shutdown().await.map_err(|e| io(to.name(), "commit", e))?;
    to.write_all(
        &layout::sidecar_key(&a.key),
        layout::sidecar_line(&a.key, &a.sha256).into_bytes(),
    )
    .await?;
    // Read back what the destination stored.
    verify_stored(to, a, &Progress::none()).await.map_err(|e| {
        if e.kind() == ErrorKind::Integrity {
            e.temporary()
        } else {
            e
        }
    })?;
    progress.advance(&a.key, size);
    Ok(())
}
