//! Restore (a whole backup, a bucket, a prefix or one key, anywhere) and verification.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use zdr_core::{
    ArtifactReader, Component, Error, ErrorKind, Manifest, Progress, RestoreOutcome, RestoreTarget,
    RestoreWithOptions, Restorer, Result, Verifier, VerifyReport,
};

use crate::index::{ListingDigest, ObjectLine, Spooled};
use crate::{INDEX, S3BucketComponent, S3BucketSettings, s3_error};

/// What a restore brings back, and where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Only this bucket of the backup.
    pub bucket: Option<String>,
    /// Only keys under this prefix.
    pub prefix: Option<String>,
    /// Only this key.
    pub key: Option<String>,
    /// Into this bucket instead of the original one (the backup must then hold one bucket,
    /// or `bucket` name one).
    pub to_bucket: Option<String>,
    /// On this endpoint instead of the component's own (its `buckets` are not used).
    pub to: Option<S3BucketSettings>,
    /// Replace objects that differ from the backup (otherwise the restore is refused,
    /// naming them, before anything is written).
    pub overwrite: bool,
    /// A drill: restore each bucket into a scratch bucket of its own
    /// (`zdr-scratch-<backup id>-<bucket>`), compare it with the backup's facts (count, bytes
    /// and digest of every key, size and SHA-256), then delete the scratch bucket — also when
    /// the comparison fails. The live buckets are not touched.
    pub scratch: bool,
}

impl RestoreOptions {
    fn wants(&self, line: &ObjectLine) -> bool {
        self.bucket.as_ref().is_none_or(|b| b == &line.bucket)
            && self
                .prefix
                .as_ref()
                .is_none_or(|p| line.key.starts_with(p.as_str()))
            && self.key.as_ref().is_none_or(|k| k == &line.key)
    }
}

/// How an object at the destination compares with the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    Identical,
    Differs,
}

#[async_trait]
impl Restorer for S3BucketComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        self.restore_with_options(&RestoreOptions::default(), backup, from, target, progress)
            .await
    }

    fn verifies_while_reading(&self) -> bool {
        true
    }
}

#[async_trait]
impl RestoreWithOptions for S3BucketComponent {
    type Options = RestoreOptions;

    fn restored_component(&self) -> &Component {
        &self.component
    }

    /// The index is read to its verified end before it is used, and each object's content
    /// is checked against its SHA-256 before its write is committed.
    fn verifies_while_reading_with(&self, _options: &RestoreOptions) -> bool {
        true
    }

    async fn restore_with_options(
        &self,
        options: &RestoreOptions,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        if options.scratch {
            return self.scratch_restore(options, backup, from, progress).await;
        }
        let mut o = options.clone();
        o.overwrite = o.overwrite || target.overwrite;
        if o.to_bucket.is_none() {
            o.to_bucket.clone_from(&target.name);
        }
        let in_backup = backup_buckets(backup);
        if let Some(b) = &o.bucket
            && !in_backup.contains(b)
        {
            return Err(Error::not_found(format!(
                "backup {} holds no bucket {b:?} (it holds {})",
                backup.id,
                in_backup.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(to) = &o.to_bucket {
            crate::check_bucket_name(to)?;
            if o.bucket.is_none() && in_backup.len() > 1 {
                return Err(Error::bad_input(format!(
                    "backup {} holds {} buckets: name the one to restore into {to:?}",
                    backup.id,
                    in_backup.len()
                )));
            }
        }
        let dest = match &o.to {
            Some(to) => {
                let mut to = to.clone();
                if to.buckets.is_empty() {
                    to.buckets.clone_from(&self.settings.buckets);
                }
                to.check()?;
                to
            }
            None => self.settings.clone(),
        };
        let record = backup.artifact(INDEX).ok_or_else(|| {
            Error::integrity(format!("backup {} has no index artifact", backup.id))
        })?;
        let spool = Spooled::spool(from.open(record).await?, "the backup's index").await?;
        let conc = self.settings.concurrency();
        let dest_bucket = |line: &ObjectLine| o.to_bucket.clone().unwrap_or(line.bucket.clone());
        let operators = Operators::new(&dest);

        // Pass 1: what is there already; refuse before writing anything.
        let mut spool = spool;
        let mut conflicts: Vec<String> = Vec::new();
        let mut conflict_count = 0u64;
        let mut buckets: BTreeSet<String> = BTreeSet::new();
        let mut wanted = 0u64;
        let mut batch: Vec<ObjectLine> = Vec::new();
        loop {
            let next = spool.next().await?;
            let done = next.is_none();
            if let Some(line) = next
                && o.wants(&line)
            {
                wanted += 1;
                buckets.insert(dest_bucket(&line));
                batch.push(line);
            }
            if batch.len() >= 256 || (done && !batch.is_empty()) {
                if !o.overwrite {
                    let checks: Vec<_> = batch
                        .iter()
                        .map(|line| {
                            let bucket = dest_bucket(line);
                            let operators = &operators;
                            async move { state(&operators.get(&bucket)?, &bucket, line).await }
                        })
                        .collect();
                    let states = futures::stream::iter(checks)
                        .buffered(conc)
                        .collect::<Vec<_>>()
                        .await;
                    for (line, s) in batch.iter().zip(states) {
                        if s? == State::Differs {
                            conflict_count += 1;
                            if conflicts.len() < 10 {
                                conflicts.push(format!("{}/{}", dest_bucket(line), line.key));
                            }
                        }
                    }
                }
                batch.clear();
            }
            if done {
                break;
            }
        }
        if wanted == 0 {
            return Err(Error::not_found(format!(
                "backup {} holds no object{}",
                backup.id,
                describe(&o)
            )));
        }
        if conflict_count > 0 {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{conflict_count} object(s) at the destination differ from backup {}: {}{}; nothing was written",
                    backup.id,
                    conflicts.join(", "),
                    if conflict_count > 10 { ", ..." } else { "" }
                ),
            )
            .with_hint("restore with overwrite to replace them, or into another bucket"));
        }
        let mut notes = Vec::new();
        for b in &buckets {
            let name = format!("{}", self.component);
            if zdr_storage::ensure_bucket(&name, &dest.s3_config(b))
                .await
                .map_err(|e| e.with_context("bucket", b))?
            {
                notes.push(format!("created bucket {b}"));
            }
        }

        // Pass 2: write what is missing or differs, each checked before it is committed
        // and read back after.
        let task = format!("restore objects of {}", self.component);
        progress.start(&task, None);
        let written = Mutex::new((0u64, 0u64, 0u64)); // (objects, bytes, identical)
        let mut spool = spool.reopen().await?;
        loop {
            let mut batch: Vec<ObjectLine> = Vec::new();
            while batch.len() < 256 {
                match spool.next().await? {
                    Some(line) if o.wants(&line) => batch.push(line),
                    Some(_) => {}
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let task = &task;
            let jobs: Vec<_> = batch
                .iter()
                .map(|line| {
                    let bucket = dest_bucket(line);
                    let operators = &operators;
                    let written = &written;
                    async move {
                        let op = operators.get(&bucket)?;
                        if state(&op, &bucket, line).await? == State::Identical {
                            if let Ok(mut w) = written.lock() {
                                w.2 += 1;
                            }
                            return Ok(());
                        }
                        put_object(&op, &bucket, line, from).await?;
                        if let Ok(mut w) = written.lock() {
                            w.0 += 1;
                            w.1 += line.size;
                        }
                        progress.advance(task, line.size);
                        Ok::<(), Error>(())
                    }
                })
                .collect();
            let results = futures::stream::iter(jobs)
                .buffer_unordered(conc)
                .collect::<Vec<_>>()
                .await;
            for r in results {
                r?;
            }
        }
        progress.finish(&task);
        let (objects, bytes, identical) = written
            .into_inner()
            .map_err(|_| Error::unexpected("restore counters poisoned"))?;
        if identical > 0 {
            notes.push(format!(
                "{identical} object(s) already identical at the destination were left alone"
            ));
        }
        Ok(RestoreOutcome {
            target: buckets.into_iter().collect::<Vec<_>>().join(", "),
            items: objects,
            bytes,
            notes,
        })
    }
}

impl S3BucketComponent {
    /// See [`RestoreOptions::scratch`].
    async fn scratch_restore(
        &self,
        options: &RestoreOptions,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let dest = match &options.to {
            Some(to) => {
                let mut to = to.clone();
                if to.buckets.is_empty() {
                    to.buckets.clone_from(&self.settings.buckets);
                }
                to
            }
            None => self.settings.clone(),
        };
        let whole = options.prefix.is_none() && options.key.is_none();
        let mut outcome = RestoreOutcome::default();
        let mut report = VerifyReport::default();
        let mut scratch_names = Vec::new();
        for bucket in backup_buckets(backup) {
            if options.bucket.as_ref().is_some_and(|b| b != &bucket) {
                continue;
            }
            if whole && backup.facts["buckets"][&bucket]["objects"].as_u64() == Some(0) {
                // Nothing to restore: the bucket was empty when it was backed up.
                continue;
            }
            let scratch = scratch_bucket(&backup.id.to_string(), &bucket);
            // A drill killed earlier may have left it.
            remove_bucket(&self.component, &dest, &scratch).await?;
            let inner = RestoreOptions {
                bucket: Some(bucket.clone()),
                to_bucket: Some(scratch.clone()),
                scratch: false,
                overwrite: false,
                ..options.clone()
            };
            let restored = self
                .restore_with_options(&inner, backup, from, &RestoreTarget::default(), progress)
                .await;
            // Whatever happens here, the scratch bucket is removed below.
            let compared: Result<()> = async {
                let out = restored?;
                outcome.items += out.items;
                outcome.bytes += out.bytes;
                if whole {
                    let op = dest.operator(&scratch)?;
                    let prefixes = backup_prefixes(backup);
                    let (objects, bytes, digest) =
                        bucket_digest(&op, &scratch, &prefixes, dest.concurrency()).await?;
                    report.checked += objects;
                    compare(
                        &backup.facts["buckets"][&bucket],
                        &bucket,
                        objects,
                        bytes,
                        &digest,
                        &mut report,
                    );
                } else {
                    report.checked += out.items;
                }
                Ok(())
            }
            .await;
            let removed = remove_bucket(&self.component, &dest, &scratch).await;
            compared?;
            match removed {
                Ok(()) => scratch_names.push(scratch),
                Err(e) => progress.warn(format!(
                    "the scratch bucket {scratch} could not be removed: {e}"
                )),
            }
        }
        if !report.is_ok() {
            return Err(Error::integrity(format!(
                "backup {} restored into scratch buckets differs from its facts: {}",
                backup.id,
                report.problems.join("; ")
            ))
            .with_verify_report(report));
        }
        outcome.target = scratch_names.join(", ");
        outcome.notes.push(format!(
            "restored into scratch bucket(s) {}, compared with the backup's facts ({} objects), and removed",
            outcome.target, report.checked
        ));
        Ok(outcome)
    }
}

/// The scratch bucket of a drill of `bucket` from backup `id`: a valid bucket name (lowercase,
/// at most 63 characters).
fn scratch_bucket(id: &str, bucket: &str) -> String {
    let mut name = format!(
        "zdr-scratch-{}-{bucket}",
        id.replace('_', "-").to_ascii_lowercase()
    );
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// Empty and delete `bucket` on `dest`'s endpoint; nothing when it does not exist.
async fn remove_bucket(component: &Component, dest: &S3BucketSettings, bucket: &str) -> Result<()> {
    let op = dest.operator(bucket)?;
    match op.delete_with("/").recursive(true).await {
        Ok(()) => {}
        Err(e) if e.kind() == opendal::ErrorKind::NotFound || crate::no_such_bucket(&e) => {
            return Ok(());
        }
        Err(e) => return Err(s3_error(e, bucket, "", "empty the scratch bucket")),
    }
    zdr_storage::remove_bucket(component.as_str(), &dest.s3_config(bucket))
        .await
        .map_err(|e| e.with_context("bucket", bucket))
}

/// The prefixes a backup listed.
fn backup_prefixes(backup: &Manifest) -> Vec<String> {
    backup
        .facts
        .get("prefixes")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_else(|| vec![String::new()])
}

/// Count, bytes and digest (see the facts) of the objects of `bucket` under `prefixes`, every
/// object read.
async fn bucket_digest(
    op: &opendal::Operator,
    bucket: &str,
    prefixes: &[String],
    concurrency: usize,
) -> Result<(u64, u64, String)> {
    let mut digest = ListingDigest::default();
    for prefix in prefixes {
        let mut lister = op
            .lister_with(prefix)
            .recursive(true)
            .await
            .map_err(|e| s3_error(e, bucket, "", "list the bucket"))?;
        // In listing (key) order, several read at once.
        let mut keys = Vec::new();
        loop {
            let entry = lister
                .try_next()
                .await
                .map_err(|e| s3_error(e, bucket, prefix, "list the bucket"))?;
            let last = entry.is_none();
            if let Some(e) = entry
                && (e.metadata().is_file() || crate::is_marker(e.path()))
            {
                keys.push(e.path().to_owned());
            }
            if keys.len() >= 256 || (last && !keys.is_empty()) {
                let reads: Vec<_> = keys
                    .iter()
                    .map(|k| async move {
                        if crate::is_marker(k) {
                            // A directory marker: no bytes to read (the client reads such a
                            // key as a directory).
                            Ok((crate::EMPTY_SHA256.to_owned(), 0))
                        } else {
                            hash_object(op, bucket, k).await
                        }
                    })
                    .collect();
                let hashed = futures::stream::iter(reads)
                    .buffered(concurrency)
                    .collect::<Vec<_>>()
                    .await;
                for (k, h) in keys.iter().zip(hashed) {
                    let (sha, size) = h?;
                    digest.add(k, size, &sha);
                }
                keys.clear();
            }
            if last {
                break;
            }
        }
    }
    let (objects, bytes) = (digest.objects, digest.bytes);
    Ok((objects, bytes, digest.finish()))
}

/// Compare one bucket's count, bytes and digest with the facts `want` recorded.
fn compare(
    want: &serde_json::Value,
    live: &str,
    objects: u64,
    bytes: u64,
    digest: &str,
    report: &mut VerifyReport,
) {
    if want["objects"].as_u64() != Some(objects) || want["bytes"].as_u64() != Some(bytes) {
        report.problems.push(format!(
            "bucket {live}: {objects} objects, {bytes} bytes; the backup has {} objects, {} bytes",
            want["objects"], want["bytes"]
        ));
    } else if want["digest"].as_str() != Some(digest) {
        report.problems.push(format!(
            "bucket {live}: the same count and bytes as the backup, but other keys or contents"
        ));
    }
}

fn describe(o: &RestoreOptions) -> String {
    let mut parts = Vec::new();
    if let Some(b) = &o.bucket {
        parts.push(format!("in bucket {b:?}"));
    }
    if let Some(p) = &o.prefix {
        parts.push(format!("under prefix {p:?}"));
    }
    if let Some(k) = &o.key {
        parts.push(format!("with key {k:?}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" {}", parts.join(" "))
    }
}

/// The buckets a backup's facts name.
fn backup_buckets(backup: &Manifest) -> BTreeSet<String> {
    backup
        .facts
        .get("buckets")
        .and_then(|b| b.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// One operator per destination bucket, made once.
struct Operators<'a> {
    settings: &'a S3BucketSettings,
    made: Mutex<std::collections::HashMap<String, opendal::Operator>>,
}

impl<'a> Operators<'a> {
    fn new(settings: &'a S3BucketSettings) -> Self {
        Self {
            settings,
            made: Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn get(&self, bucket: &str) -> Result<opendal::Operator> {
        let mut made = self
            .made
            .lock()
            .map_err(|_| Error::unexpected("operator cache poisoned"))?;
        if let Some(op) = made.get(bucket) {
            return Ok(op.clone());
        }
        let op = self.settings.operator(bucket)?;
        made.insert(bucket.to_owned(), op.clone());
        Ok(op)
    }
}

/// SHA-256 and length of the object at `key`.
async fn hash_object(op: &opendal::Operator, bucket: &str, key: &str) -> Result<(String, u64)> {
    let reader = op
        .reader_with(key)
        .await
        .map_err(|e| s3_error(e, bucket, key, "read the object"))?;
    let mut stream = reader
        .into_bytes_stream(..)
        .await
        .map_err(|e| s3_error(e, bucket, key, "read the object"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.try_next().await.map_err(|e| {
        Error::new(ErrorKind::Source, "reading the object failed")
            .with_context("bucket", bucket)
            .with_context("key", key)
            .with_source(e)
    })? {
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hex::encode(hasher.finalize()), size))
}

async fn state(op: &opendal::Operator, bucket: &str, line: &ObjectLine) -> Result<State> {
    if crate::is_marker(&line.key) {
        return Ok(if marker_exists(op, bucket, &line.key).await? {
            State::Identical
        } else {
            State::Missing
        });
    }
    let meta = match op.stat(&line.key).await {
        Ok(m) => m,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(State::Missing),
        Err(e) => return Err(s3_error(e, bucket, &line.key, "look up the object")),
    };
    if meta.content_length() != line.size {
        return Ok(State::Differs);
    }
    let (sha, _) = hash_object(op, bucket, &line.key).await?;
    Ok(if sha == line.sha256 {
        State::Identical
    } else {
        State::Differs
    })
}

/// Write one object from its blob: committed only when the content matched its SHA-256,
/// then read back and compared.
async fn put_object(
    op: &opendal::Operator,
    bucket: &str,
    line: &ObjectLine,
    from: &dyn ArtifactReader,
) -> Result<()> {
    let where_ = |e: Error| {
        e.with_context("bucket", bucket)
            .with_context("key", &line.key)
    };
    if crate::is_marker(&line.key) {
        return put_marker(op, bucket, line).await.map_err(where_);
    }
    let mut content = from.open(&line.blob).await.map_err(where_)?;
    let mut w = op.writer_with(&line.key).chunk(8 << 20);
    if let Some(ct) = &line.content_type {
        w = w.content_type(ct);
    }
    if !line.metadata.is_empty() {
        w = w.user_metadata(line.metadata.clone());
    }
    let mut writer = w
        .await
        .map_err(|e| s3_error(e, bucket, &line.key, "write the object"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    let copied: Result<()> = async {
        loop {
            let n = content.read(&mut buf).await.map_err(|e| {
                Error::from_io(e, "reading the backup failed").with_context("blob", &line.blob.key)
            })?;
            if n == 0 {
                return Ok(());
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            writer
                .write(bytes::Bytes::copy_from_slice(&buf[..n]))
                .await
                .map_err(|e| s3_error(e, bucket, &line.key, "write the object"))?;
        }
    }
    .await;
    let actual = hex::encode(hasher.finalize());
    let checked = copied.and_then(|()| {
        if actual == line.sha256 && size == line.size {
            Ok(())
        } else {
            Err(Error::integrity(format!(
                "the blob's content has SHA-256 {actual} ({size} bytes), not the recorded {} ({} bytes)",
                line.sha256, line.size
            ))
            .with_context("blob", &line.blob.key))
        }
    });
    if let Err(e) = checked {
        // Nothing is committed: the old object, if any, stays.
        let _ = writer.abort().await;
        return Err(where_(e));
    }
    writer
        .close()
        .await
        .map_err(|e| s3_error(e, bucket, &line.key, "commit the object"))?;
    let (back, back_size) = hash_object(op, bucket, &line.key).await?;
    if back != line.sha256 || back_size != line.size {
        return Err(where_(Error::integrity(format!(
            "the restored object reads back as {back_size} bytes with SHA-256 {back}, not {} bytes with {}",
            line.size, line.sha256
        ))));
    }
    Ok(())
}

/// A directory marker back: the empty object at its key (the client makes markers without
/// a content type or user metadata), looked up after.
async fn put_marker(op: &opendal::Operator, bucket: &str, line: &ObjectLine) -> Result<()> {
    if line.size != 0 || line.sha256 != crate::EMPTY_SHA256 {
        return Err(Error::integrity(format!(
            "the index records {} bytes for a key ending in '/'; only empty directory markers are kept",
            line.size
        )));
    }
    op.create_dir(&line.key)
        .await
        .map_err(|e| s3_error(e, bucket, &line.key, "write the directory marker"))?;
    if marker_exists(op, bucket, &line.key).await? {
        Ok(())
    } else {
        Err(Error::integrity(
            "the restored directory marker is not listed".to_owned(),
        ))
    }
}

/// Whether the key `key` (ending in `/`) is stored: the first key listed under it is the key
/// itself. (A lookup of such a key through the client asks whether anything is under it.)
/// A bucket that does not exist holds none.
async fn marker_exists(op: &opendal::Operator, bucket: &str, key: &str) -> Result<bool> {
    let listed = async {
        let mut lister = op.lister_with(key).recursive(true).limit(1).await?;
        lister.try_next().await
    }
    .await;
    match listed {
        Ok(first) => Ok(first.is_some_and(|e| e.path() == key)),
        Err(e)
            if e.kind() == opendal::ErrorKind::NotFound
                || e.to_string().contains("NoSuchBucket") =>
        {
            Ok(false)
        }
        Err(e) => Err(s3_error(e, bucket, key, "list the directory marker")),
    }
}

#[async_trait]
impl Verifier for S3BucketComponent {
    /// Read every object of each backed-up bucket (or of `target.name`, for a backup of one
    /// bucket restored elsewhere) under the backed-up prefixes, and compare the count, the
    /// bytes and the digest over key, size and content SHA-256 with the backup's facts.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let buckets = backup_buckets(backup);
        let prefixes = backup_prefixes(backup);
        if target.name.is_some() && buckets.len() > 1 {
            return Err(Error::bad_input(format!(
                "backup {} holds {} buckets; a single target bucket cannot be compared with it",
                backup.id,
                buckets.len()
            )));
        }
        let mut report = VerifyReport::default();
        for bucket in &buckets {
            let live = target.name.clone().unwrap_or(bucket.clone());
            let op = self.settings.operator(&live)?;
            let (objects, bytes, digest) =
                bucket_digest(&op, &live, &prefixes, self.settings.concurrency()).await?;
            report.checked += objects;
            compare(
                &backup.facts["buckets"][bucket],
                &live,
                objects,
                bytes,
                &digest,
                &mut report,
            );
        }
        Ok(report)
    }
}
