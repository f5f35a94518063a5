//! Standalone objects: one stored file with its `.sha256` sidecar, outside any backup
//! (PostgreSQL WAL segments). They go through the same pipeline as artifacts, so the stored
//! bytes are compressed, optionally encrypted and checksummed the same way, and the manual
//! runbook (`sha256sum -c`, `lz4 -d`, `age -d`) works on them too.
//!
//! An object is stored at `<base><compression suffix>[.age]`. Its sidecar is written after
//! the object, so an object without a sidecar is an interrupted write ([`Found::Incomplete`]).

use std::sync::{Arc, Mutex};

use tokio::io::AsyncRead;
use zdr_core::{
    ArtifactRecord, ArtifactWrite, Compression, Encryption, Error, Progress, Result, StorageTier,
    layout,
};

use crate::pipeline::{FailureSlot, PipelineOptions, PipelineWriter, Sidecar};

/// What [`find_object`] found under a base key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A complete object: its record (size and SHA-256 of the stored bytes from the tier and
    /// the sidecar; `raw_size` is unknown and 0).
    Complete(ArtifactRecord),
    /// The object exists without its sidecar: a write that did not finish.
    Incomplete {
        /// The object's key.
        key: String,
    },
    /// Nothing under this base key.
    Missing,
}

/// The key an object with base key `base` gets when written with `options`.
#[must_use]
pub fn object_key(base: &str, options: &PipelineOptions) -> String {
    let age = if options.keys.encrypts() { ".age" } else { "" };
    format!("{base}{}{age}", options.compression.suffix())
}

/// Write `from` as the object `base` (see [`object_key`]) on `tier`: compressed, encrypted,
/// hashed, then its sidecar. An existing object at the same key is replaced.
///
/// # Errors
/// Storage errors (with tier and key), and errors reading `from`.
pub async fn put_object(
    tier: Arc<dyn StorageTier>,
    base: &str,
    from: &mut (dyn AsyncRead + Send + Unpin),
    options: &PipelineOptions,
    progress: &Progress,
) -> Result<ArtifactRecord> {
    let key = object_key(base, options);
    let name = base.rsplit('/').next().unwrap_or(base).to_owned();
    let failure = FailureSlot::default();
    let mut writer = PipelineWriter::start(
        tier.clone(),
        &name,
        key.clone(),
        options,
        progress.clone(),
        failure.clone(),
        Arc::new(Mutex::new(Vec::new())),
    )?;
    // Big reads: a `tokio::fs::File` hands every read to the blocking pool, so 8 KiB reads
    // (tokio::io::copy's buffer) cost a thread hand-off each.
    let mut from = tokio::io::BufReader::with_capacity(crate::CHUNK, from);
    let copied = tokio::io::copy_buf(&mut from, &mut writer).await;
    if let Err(e) = copied {
        drop(writer);
        let e = failure
            .take()
            .unwrap_or_else(|| Error::from_io(e, "reading the object's source failed"));
        if tier.delete(&key).await.is_ok() {
            crate::inflight::forget(tier.name(), &key);
        }
        return Err(e.with_context("key", &key));
    }
    Box::new(writer).finish().await
}

/// The ways an object may have been stored, preferred first: what `options` writes, then
/// every other compression with and without encryption.
fn candidates(base: &str, options: &PipelineOptions) -> Vec<(String, Compression, bool)> {
    let preferred = (options.compression, options.keys.encrypts());
    let mut out = vec![preferred];
    for c in [
        Compression::Lz4,
        Compression::Zstd,
        Compression::Gzip,
        Compression::None,
    ] {
        for enc in [false, true] {
            if (c, enc) != preferred {
                out.push((c, enc));
            }
        }
    }
    out.into_iter()
        .map(|(c, enc)| {
            let age = if enc { ".age" } else { "" };
            (format!("{base}{}{age}", c.suffix()), c, enc)
        })
        .collect()
}

/// Look for the object `base` on `tier` under every compression and encryption suffix.
///
/// # Errors
/// Storage errors other than "not found", and [`zdr_core::ErrorKind::Integrity`] when the sidecar is
/// unreadable.
pub async fn find_object(
    tier: &dyn StorageTier,
    base: &str,
    options: &PipelineOptions,
) -> Result<Found> {
    for (key, compression, encrypted) in candidates(base, options) {
        let Some(entry) = tier.stat(&key).await? else {
            continue;
        };
        let sha = match crate::pipeline::read_sidecar(tier, &key).await? {
            Sidecar::Missing => return Ok(Found::Incomplete { key }),
            Sidecar::Unusable => {
                return Err(Error::integrity(
                    "the .sha256 sidecar is malformed or names another file",
                )
                .with_context("tier", tier.name())
                .with_context("key", layout::sidecar_key(&key)));
            }
            Sidecar::Digest(d) => d,
        };
        let name = base.rsplit('/').next().unwrap_or(base).to_owned();
        return Ok(Found::Complete(ArtifactRecord {
            name,
            key,
            size: entry.size,
            sha256: sha.to_owned(),
            raw_size: 0,
            compression,
            encryption: encrypted.then(|| Encryption::Age {
                recipients: Vec::new(),
                passphrase: false,
            }),
            offset: None,
        }));
    }
    Ok(Found::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open_artifact;
    use tokio::io::AsyncReadExt;

    fn memory() -> Result<Arc<dyn StorageTier>> {
        crate::open_tier("mem", &crate::TierConfig::Memory)
    }

    #[tokio::test]
    async fn put_find_open_round_trip() -> Result<()> {
        let tier = memory()?;
        let options = PipelineOptions {
            compression: Compression::Lz4,
            ..PipelineOptions::default()
        };
        assert_eq!(
            find_object(tier.as_ref(), "wal/1/a", &options).await?,
            Found::Missing
        );
        let data = vec![7u8; 300_000];
        let rec = put_object(
            tier.clone(),
            "wal/1/a",
            &mut data.as_slice(),
            &options,
            &Progress::none(),
        )
        .await?;
        assert_eq!(rec.key, "wal/1/a.lz4");
        // Found under another preferred compression too.
        let zstd = PipelineOptions::default();
        let Found::Complete(found) = find_object(tier.as_ref(), "wal/1/a", &zstd).await? else {
            return Err(Error::unexpected("not found"));
        };
        assert_eq!(found.sha256, rec.sha256);
        assert_eq!(found.compression, Compression::Lz4);
        let mut back = Vec::new();
        open_artifact(tier.clone(), &found, &options.keys, Progress::none())?
            .read_to_end(&mut back)
            .await
            .map_err(|e| Error::from_io(e, "read"))?;
        assert_eq!(back, data);
        // Without its sidecar the object is an interrupted write.
        tier.delete("wal/1/a.lz4.sha256").await?;
        assert_eq!(
            find_object(tier.as_ref(), "wal/1/a", &options).await?,
            Found::Incomplete {
                key: "wal/1/a.lz4".into()
            }
        );
        Ok(())
    }
}
