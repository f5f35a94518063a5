//! The backup: list, compare with the previous index, read what changed, store blobs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use zdr_core::{
    ArtifactSink, ArtifactWrite, BackupKind, BackupRequest, BackupSource, BlobRef, BlobStore,
    BoxRead, Component, Error, Progress, Result, SourceFacts,
};

use crate::index::{Listed, ListingDigest, ObjectLine, Spooled, bare_etag};
use crate::{BLOB_LIST, INDEX, S3BucketComponent, s3_error};

/// Objects up to this size are held in memory between reading and storing; larger ones go
/// through a temporary file.
const IN_MEMORY: u64 = 1 << 20;
/// Objects listed ahead of the oldest one not yet done, per object read at once.
const WINDOW_PER_READ: usize = 16;
/// How often an object that keeps changing while it is read is tried.
const ATTEMPTS: usize = 3;

/// What became of one listed object.
enum Outcome {
    /// Referenced from the previous backup without reading it.
    Reused(ObjectLine),
    /// Read and stored (or found stored); the blob bytes newly stored, if any.
    Read(ObjectLine, Option<u64>),
    /// Deleted between the listing and the read.
    Vanished(String),
    /// Rewritten during every attempt to read it.
    Unstable(String),
    /// Not backed up, with the reason.
    Skipped(String, &'static str),
}

#[async_trait]
impl BackupSource for S3BucketComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let blobs = sink.blobs(BLOB_LIST)?;
        let mut previous = match sink.previous(INDEX).await {
            Ok(Some(stream)) => match Spooled::spool(stream, "the previous backup's index").await {
                Ok(s) => Some(s),
                Err(e) => {
                    progress.warn(format!(
                        "the previous backup's index cannot be used ({e}); every object is read (content already stored is still shared)"
                    ));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                progress.warn(format!(
                    "the previous backup cannot be found ({e}); every object is read (content already stored is still shared)"
                ));
                None
            }
        };
        let mut index = sink.create(INDEX, "jsonl").await?;
        let mut list = sink.create(BLOB_LIST, "jsonl").await?;
        let mut held: Option<ObjectLine> = None;
        let mut buckets = serde_json::Map::new();
        let mut totals = Totals::default();
        let task = format!("objects of {}", self.component);
        progress.start(&task, None);
        for bucket in self.settings.sorted_buckets() {
            let op = self.settings.operator(&bucket)?;
            let mut digest = ListingDigest::default();
            for prefix in self.settings.listed_prefixes() {
                let mut lister = op
                    .lister_with(&prefix)
                    .recursive(true)
                    .await
                    .map_err(|e| s3_error(e, &bucket, "", "list the bucket"))?;
                let mut pending = FuturesOrdered::new();
                let mut listing_done = false;
                // `concurrency` objects are read at once; the index is written in listing
                // order, so a window of objects done behind one still being read (a large
                // one) waits in order without holding up the reads.
                let reads = Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency()));
                let window = self.settings.concurrency() * WINDOW_PER_READ;
                loop {
                    while !listing_done && pending.len() < window {
                        let entry = match lister.try_next().await {
                            Ok(entry) => entry,
                            Err(e) => {
                                reads.close();
                                settle(&mut pending).await;
                                return Err(s3_error(e, &bucket, &prefix, "list the bucket"));
                            }
                        };
                        let Some(entry) = entry else {
                            listing_done = true;
                            break;
                        };
                        let meta = entry.metadata();
                        let path = entry.path();
                        // A recursive listing reports only stored keys: one ending in `/` is
                        // a directory marker (the empty "folder" of consoles), kept too.
                        if !meta.is_file() && !crate::is_marker(path) {
                            continue;
                        }
                        if path.trim() != path || path.starts_with('/') || path.contains("//") {
                            // The S3 client normalizes such keys (trims blanks, drops
                            // leading and doubled slashes): reading one would read another.
                            progress.warn(format!(
                                "{bucket}/{path:?}: a key with surrounding blanks or doubled slashes is not backed up"
                            ));
                            totals.skipped.push(format!("{bucket}/{path}"));
                            continue;
                        }
                        let listed = Listed {
                            bucket: bucket.clone(),
                            key: entry.path().to_owned(),
                            size: meta.content_length(),
                            etag: meta.etag().map(bare_etag),
                            raw_etag: meta.etag().map(str::to_owned),
                            modified: meta.last_modified().map(|t| t.to_string()),
                        };
                        let before = match_previous(&mut previous, &mut held, &listed).await?;
                        let op = op.clone();
                        let blobs = blobs.clone();
                        let reads = reads.clone();
                        pending.push_back(async move {
                            match before {
                                Some(line) => Ok(Outcome::Reused(line)),
                                None => {
                                    let _read = reads
                                        .acquire_owned()
                                        .await
                                        .map_err(|_| Error::unexpected("the read slots closed"))?;
                                    fetch(&op, listed, blobs.as_ref()).await
                                }
                            }
                        });
                    }
                    let Some(outcome) = pending.next().await else {
                        break;
                    };
                    let outcome = match outcome {
                        Ok(o) => o,
                        Err(e) => {
                            reads.close();
                            settle(&mut pending).await;
                            return Err(e);
                        }
                    };
                    let line = match outcome {
                        Outcome::Reused(line) => {
                            totals.reused += 1;
                            line
                        }
                        Outcome::Read(line, stored) => {
                            totals.read_objects += 1;
                            totals.read_bytes += line.size;
                            if let Some(bytes) = stored {
                                totals.stored_blobs += 1;
                                totals.stored_bytes += bytes;
                            }
                            line
                        }
                        Outcome::Vanished(key) => {
                            progress.warn(format!(
                                "{bucket}/{key} was deleted during the backup; it is not in it"
                            ));
                            totals.vanished.push(format!("{bucket}/{key}"));
                            continue;
                        }
                        Outcome::Skipped(key, why) => {
                            progress.warn(format!("{bucket}/{key:?}: {why}; it is not backed up"));
                            totals.skipped.push(format!("{bucket}/{key}"));
                            continue;
                        }
                        Outcome::Unstable(key) => {
                            progress.warn(format!(
                                "{bucket}/{key} changed during each of {ATTEMPTS} reads; it is not in the backup"
                            ));
                            totals.unstable.push(format!("{bucket}/{key}"));
                            continue;
                        }
                    };
                    digest.add(&line.key, line.size, &line.sha256);
                    write_line(&mut index, &line).await?;
                    write_line(
                        &mut list,
                        &BlobRef {
                            blob: line.blob.clone(),
                        },
                    )
                    .await?;
                    progress.advance(&task, line.size);
                }
            }
            totals.objects += digest.objects;
            totals.bytes += digest.bytes;
            buckets.insert(
                bucket.clone(),
                json!({
                    "objects": digest.objects,
                    "bytes": digest.bytes,
                    "digest": digest.finish(),
                }),
            );
        }
        // Every blob the index names is stored whole before the index is.
        blobs.flush().await?;
        index.finish().await?;
        list.finish().await?;
        progress.finish(&task);
        Ok(SourceFacts {
            kind: BackupKind::Physical,
            facts: json!({
                "endpoint": self.settings.endpoint,
                "buckets": buckets,
                "prefixes": self.settings.listed_prefixes(),
                "objects": totals.objects,
                "bytes": totals.bytes,
                "reused_objects": totals.reused,
                "read_objects": totals.read_objects,
                "read_bytes": totals.read_bytes,
                "stored_blobs": totals.stored_blobs,
                "stored_blob_bytes": totals.stored_bytes,
                "vanished": totals.vanished,
                "unstable": totals.unstable,
                "skipped_keys": totals.skipped,
            }),
        })
    }
}

#[derive(Default)]
struct Totals {
    objects: u64,
    bytes: u64,
    reused: u64,
    read_objects: u64,
    read_bytes: u64,
    stored_blobs: u64,
    stored_bytes: u64,
    vanished: Vec<String>,
    unstable: Vec<String>,
    skipped: Vec<String>,
}

async fn write_line<T: serde::Serialize>(w: &mut Box<dyn ArtifactWrite>, line: &T) -> Result<()> {
    let mut text = serde_json::to_vec(line)
        .map_err(|e| Error::unexpected("cannot serialize an index line").with_source(e))?;
    text.push(b'\n');
    w.write_all(&text)
        .await
        .map_err(|e| Error::from_io(e, "writing the index failed"))
}

/// The previous backup's line for `listed` when the object has not changed since: the
/// previous index is in the same (bucket, key) order as the listing, so one pass over both.
async fn match_previous(
    previous: &mut Option<Spooled>,
    held: &mut Option<ObjectLine>,
    listed: &Listed,
) -> Result<Option<ObjectLine>> {
    let Some(prev) = previous.as_mut() else {
        return Ok(None);
    };
    loop {
        if held.is_none() {
            *held = prev.next().await?;
        }
        let Some(h) = held.as_ref() else {
            return Ok(None);
        };
        match (h.bucket.as_str(), h.key.as_str())
            .cmp(&(listed.bucket.as_str(), listed.key.as_str()))
        {
            std::cmp::Ordering::Less => *held = None,
            std::cmp::Ordering::Equal => {
                return Ok(held.take().filter(|h| h.unchanged(listed)));
            }
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
}

/// The bytes of one object, read once.
enum Content {
    Memory(Vec<u8>),
    File(tempfile::NamedTempFile),
}

impl Content {
    async fn into_reader(self) -> Result<BoxRead> {
        match self {
            Self::Memory(v) => Ok(Box::new(std::io::Cursor::new(v))),
            Self::File(f) => {
                let mut file = tokio::fs::File::open(f.path())
                    .await
                    .map_err(|e| Error::from_io(e, "cannot reopen an object's spool"))?;
                file.rewind()
                    .await
                    .map_err(|e| Error::from_io(e, "cannot rewind an object's spool"))?;
                Ok(Box::new(file))
            }
        }
    }
}

/// Read one new or changed object (pinned to the ETag it has when the read starts, checked
/// again after it), and store its content as a blob.
async fn fetch(op: &opendal::Operator, listed: Listed, blobs: &dyn BlobStore) -> Result<Outcome> {
    if crate::is_marker(&listed.key) {
        return fetch_marker(listed, blobs).await;
    }
    let bucket = &listed.bucket;
    let key = &listed.key;
    // The first read is pinned to the version the listing saw; after a change, to the one a
    // lookup finds.
    let mut pin: Option<(String, u64)> = listed.raw_etag.clone().map(|e| (e, listed.size));
    for _ in 0..ATTEMPTS {
        let (etag, size) = match pin.take() {
            Some(p) => p,
            None => {
                let meta = match op.stat(key).await {
                    Ok(m) => m,
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                        return Ok(Outcome::Vanished(key.clone()));
                    }
                    Err(e) => return Err(s3_error(e, bucket, key, "look up the object")),
                };
                let Some(etag) = meta.etag().map(str::to_owned) else {
                    return Err(Error::new(
                        zdr_core::ErrorKind::Source,
                        "the server gave no ETag: an object cannot be pinned while it is read",
                    )
                    .with_context("bucket", bucket)
                    .with_context("key", key));
                };
                (etag, meta.content_length())
            }
        };
        let read = read_pinned(op, bucket, key, &etag, size).await?;
        let Some((content, sha256, answered)) = read else {
            continue;
        };
        // The content type and user metadata come with the read's answer. An object read in
        // one answer is one version (the read was pinned to its ETag); a large one, which a
        // server may assemble from chunks while it is rewritten, is looked up again after
        // the read and must still be the same version (never a torn copy).
        let meta = match answered {
            Some(m) if size <= IN_MEMORY && m.etag() == Some(etag.as_str()) => m,
            _ => match op.stat(key).await {
                Ok(after)
                    if after.etag() == Some(etag.as_str()) && after.content_length() == size =>
                {
                    after
                }
                Ok(_) => continue,
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                    return Ok(Outcome::Vanished(key.clone()));
                }
                Err(e) => return Err(s3_error(e, bucket, key, "look up the object")),
            },
        };
        // `put` looks the blob up first and stores it only when the tier lacks it.
        let put = blobs
            .put(&sha256, size, content.into_reader().await?)
            .await
            .map_err(|e| e.with_context("bucket", bucket).with_context("key", key))?;
        let stored = put.stored.then_some(put.record.size);
        let blob = put.record;
        let metadata: BTreeMap<String, String> = meta
            .user_metadata()
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let same_version = listed.etag.as_deref() == Some(bare_etag(&etag).as_str());
        let line = ObjectLine {
            bucket: bucket.clone(),
            key: key.clone(),
            size,
            etag: Some(bare_etag(&etag)),
            // The listing's time is what the next listing is compared with; a version newer
            // than the listing has none, so the next backup reads it again.
            modified: if same_version {
                listed.modified.clone()
            } else {
                None
            },
            content_type: meta.content_type().map(str::to_owned),
            metadata,
            sha256,
            blob,
        };
        return Ok(Outcome::Read(line, stored));
    }
    Ok(Outcome::Unstable(key.clone()))
}

/// A directory marker: its (empty) content stored as the empty blob. The client reads keys
/// ending in `/` as folders, never their bytes, so a marker is taken as empty only when the
/// listing's ETag is the MD5 of no bytes; any other such key is skipped and named, never
/// recorded empty. (The client makes markers without a content type or user metadata, and
/// none is recorded.)
async fn fetch_marker(listed: Listed, blobs: &dyn BlobStore) -> Result<Outcome> {
    let bucket = &listed.bucket;
    let key = &listed.key;
    if listed.etag.as_deref() != Some(crate::EMPTY_MD5) {
        return Ok(Outcome::Skipped(
            key.clone(),
            "a key ending in '/' whose ETag is not that of an empty object",
        ));
    }
    let sha256 = crate::EMPTY_SHA256.to_owned();
    let empty: zdr_core::BoxRead = Box::new(tokio::io::empty());
    let put = blobs
        .put(&sha256, 0, empty)
        .await
        .map_err(|e| e.with_context("bucket", bucket).with_context("key", key))?;
    let stored = put.stored.then_some(put.record.size);
    let line = ObjectLine {
        bucket: bucket.clone(),
        key: key.clone(),
        size: 0,
        etag: listed.etag.clone(),
        modified: listed.modified.clone(),
        content_type: None,
        metadata: BTreeMap::new(),
        sha256,
        blob: put.record,
    };
    Ok(Outcome::Read(line, stored))
}

/// Read `key` whole with `If-Match: etag`, hashing it, with the metadata the server answered
/// with (when it gave any); `None` when it changed (the precondition failed, it vanished, or
/// its length differs from `size`).
async fn read_pinned(
    op: &opendal::Operator,
    bucket: &str,
    key: &str,
    etag: &str,
    size: u64,
) -> Result<Option<(Content, String, Option<opendal::Metadata>)>> {
    let changed = |e: &opendal::Error| {
        matches!(
            e.kind(),
            opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::NotFound
        )
    };
    let reader = match op.reader_with(key).if_match(etag).await {
        Ok(r) => r,
        Err(e) if changed(&e) => return Ok(None),
        Err(e) => return Err(s3_error(e, bucket, key, "read the object")),
    };
    let mut stream = match reader.into_bytes_stream(0..size).await {
        Ok(s) => s,
        Err(e) if changed(&e) => return Ok(None),
        Err(e) => return Err(s3_error(e, bucket, key, "read the object")),
    };
    let answered = if size == 0 {
        None // no read is sent for no bytes
    } else {
        match stream.metadata().await {
            Ok(m) => Some(m),
            Err(e) if changed(&e) => return Ok(None),
            Err(e) if e.kind() == opendal::ErrorKind::Unsupported => None,
            Err(e) => return Err(s3_error(e, bucket, key, "read the object")),
        }
    };
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut content = if size <= IN_MEMORY {
        Content::Memory(Vec::with_capacity(usize::try_from(size).unwrap_or(0)))
    } else {
        Content::File(
            crate::index::temp_file()
                .map_err(|e| Error::from_io(e, "cannot create an object's spool"))?,
        )
    };
    let mut file = match &content {
        Content::File(f) => {
            Some(tokio::fs::File::from_std(f.reopen().map_err(|e| {
                Error::from_io(e, "cannot open an object's spool")
            })?))
        }
        Content::Memory(_) => None,
    };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                let text = e.to_string();
                if text.contains("ConditionNotMatch") || text.contains("PreconditionFailed") {
                    return Ok(None);
                }
                return Err(
                    Error::new(zdr_core::ErrorKind::Source, "reading the object failed")
                        .with_context("bucket", bucket)
                        .with_context("key", key)
                        .with_source(e)
                        .temporary(),
                );
            }
        };
        hasher.update(&chunk);
        got += chunk.len() as u64;
        match (&mut content, file.as_mut()) {
            (Content::Memory(v), _) => v.extend_from_slice(&chunk),
            (Content::File(_), Some(f)) => f
                .write_all(&chunk)
                .await
                .map_err(|e| Error::from_io(e, "writing an object's spool failed"))?,
            (Content::File(_), None) => {}
        }
    }
    if let Some(mut f) = file {
        f.flush()
            .await
            .map_err(|e| Error::from_io(e, "writing an object's spool failed"))?;
    }
    if got != size {
        return Ok(None);
    }
    Ok(Some((content, hex::encode(hasher.finalize()), answered)))
}

/// Lets the reads and blob writes already under way end (stored whole, or failed) before a
/// failed backup returns: nothing it started lands on the tier after it has reported its
/// failure, so what a failed run left is exactly what the next one finds.
async fn settle<F: std::future::Future>(pending: &mut FuturesOrdered<F>) {
    while pending.next().await.is_some() {}
}
