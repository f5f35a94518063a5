//! The WAL archive: `archive_command` / `restore_command` targets, listing, chain checks.
//!
//! Every file PostgreSQL archives is stored at `wal/<component>/<timeline>/<name>[.lz4|.zst|.gz][.age]`
//! with a `.sha256` sidecar, on every tier of the archive.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use zdr_core::{Error, ErrorKind, Progress, Result, StorageTier};
use zdr_storage::{Found, PipelineOptions, find_object, open_artifact, put_object};

use crate::walname::{Lsn, Segment, Switch, WalFile, base_key, parse_history};

/// What happened on one tier when a file was pushed.
#[derive(Debug, Clone, Serialize)]
pub struct TierPush {
    /// The tier.
    pub tier: String,
    /// The key the file is stored at.
    pub key: String,
    /// False when the tier already held the same bytes (a repeated push).
    pub stored: bool,
}

/// The result of [`WalArchive::push`].
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The WAL file name.
    pub name: String,
    /// One entry per tier.
    pub tiers: Vec<TierPush>,
}

/// The result of [`WalArchive::fetch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum FetchOutcome {
    /// The file was written to the destination.
    Fetched {
        /// The tier it came from.
        tier: String,
        /// Its size after decoding.
        bytes: u64,
    },
    /// No tier holds the file (the normal end of recovery).
    NotFound,
}

/// What [`WalArchive::prune`] removed from one tier (or would, in a dry run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalPrune {
    /// The keys deleted (or, in a dry run, that would be).
    pub files: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
}

/// What [`WalArchive::list`] found on one tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalListing {
    /// Segment numbers per timeline.
    pub segments: BTreeMap<u32, BTreeSet<u64>>,
    /// Timelines that have a `.history` file.
    pub histories: BTreeSet<u32>,
    /// Objects written without their sidecar (interrupted pushes).
    pub incomplete: Vec<String>,
    /// The newest segment by name, and when the tier says it was written.
    pub newest: Option<(String, Option<DateTime<Utc>>)>,
}

/// One timeline on the way to a recovery target: from `begin` up to (not including) `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimelineSpan {
    /// The timeline.
    pub timeline: u32,
    /// Where it starts (0 for the first timeline).
    pub begin: Lsn,
    /// Where it was left for the next one, if it was.
    pub end: Option<Lsn>,
}

/// The result of [`WalArchive::verify`] for one timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineReport {
    /// The timeline.
    pub timeline: u32,
    /// First and last segment present.
    pub first: String,
    /// The last segment present.
    pub last: String,
    /// Segments present.
    pub count: usize,
    /// Segments missing between the first and the last.
    pub missing: Vec<String>,
    /// Segments whose stored bytes fail their checksum (or do not decode, with `deep`).
    pub corrupt: Vec<String>,
}

/// The WAL archive on one or more tiers.
#[derive(Clone)]
pub struct WalArchive {
    prefix: String,
    tiers: Vec<Arc<dyn StorageTier>>,
    options: PipelineOptions,
    segment_size: u64,
}

impl std::fmt::Debug for WalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalArchive")
            .field("prefix", &self.prefix)
            .field(
                "tiers",
                &self.tiers.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("options", &self.options)
            .field("segment_size", &self.segment_size)
            .finish()
    }
}

fn io_err(e: std::io::Error, what: &str, path: &Path) -> Error {
    let kind = e.kind();
    let err = Error::from_io(e, what.to_owned()).with_context("path", path.display());
    if kind == std::io::ErrorKind::NotFound {
        Error::bad_input(format!("{what}: {} does not exist", path.display()))
    } else {
        err
    }
}

impl WalArchive {
    /// An archive on `tiers` (the first is the one read first), writing with `options`
    /// (lz4 is the usual choice for WAL: it keeps per-segment latency low).
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] with no tier or a segment size that is not a power of two
    /// between 1 MiB and 1 GiB.
    pub fn new(
        component: &zdr_core::Component,
        tiers: Vec<Arc<dyn StorageTier>>,
        options: PipelineOptions,
        segment_size: u64,
    ) -> Result<Self> {
        if tiers.is_empty() {
            return Err(Error::bad_input("a WAL archive needs at least one tier"));
        }
        if !segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&segment_size) {
            return Err(Error::bad_input(format!(
                "invalid wal_segment_size {segment_size}: a power of two from 1 MiB to 1 GiB"
            )));
        }
        Ok(Self {
            prefix: format!("wal/{component}"),
            tiers,
            options,
            segment_size,
        })
    }

    /// The segment size the archive assumes.
    #[must_use]
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The tiers, first read first.
    #[must_use]
    pub fn tiers(&self) -> &[Arc<dyn StorageTier>] {
        &self.tiers
    }

    fn classify(&self, name: &str) -> Result<WalFile> {
        if name.contains('/') {
            return Err(Error::bad_input(format!(
                "{name:?} is not a WAL file name (it has a directory)"
            )));
        }
        WalFile::parse(name, self.segment_size)
    }

    /// Archive the file at `path` (PostgreSQL's `%p`, relative to the data directory it
    /// runs the command in) on every tier, concurrently. A tier that already holds the
    /// same bytes counts as done; one holding different bytes is a [`ErrorKind::Conflict`]
    /// and nothing there is overwritten (history files included). A stored copy that no
    /// longer decodes or fails its checksum is replaced.
    ///
    /// # Errors
    /// Conflict as above, storage errors (PostgreSQL keeps the file and retries), and
    /// [`ErrorKind::BadInput`] for a missing file or a name PostgreSQL does not archive.
    pub async fn push(&self, path: &Path, progress: &Progress) -> Result<PushReport> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::bad_input(format!("{} has no file name", path.display())))?
            .to_owned();
        let file = self.classify(&name)?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| io_err(e, "cannot read the WAL file", path))?;
        if let WalFile::Segment(_) = file
            && meta.len() != self.segment_size
        {
            return Err(Error::bad_input(format!(
                "{} is {} bytes, not a whole {}-byte segment",
                path.display(),
                meta.len(),
                self.segment_size
            ))
            .with_hint(
                "set wal.segment_size_mb in the component settings if the cluster uses another size",
            ));
        }
        let base = base_key(&self.prefix, &file, &name);
        let local_sha = tokio::sync::OnceCell::new();
        let pushes = self.tiers.iter().map(|tier| {
            let base = &base;
            let local_sha = &local_sha;
            let name = &name;
            async move {
                self.push_one(tier.clone(), path, base, local_sha, progress)
                    .await
                    .map_err(|e| {
                        e.with_context("tier", tier.name())
                            .with_context("file", name)
                    })
            }
        });
        let results = futures::future::join_all(pushes).await;
        let mut tiers = Vec::new();
        for r in results {
            tiers.push(r?);
        }
        Ok(PushReport { name, tiers })
    }

    async fn push_one(
        &self,
        tier: Arc<dyn StorageTier>,
        path: &Path,
        base: &str,
        local_sha: &tokio::sync::OnceCell<String>,
        progress: &Progress,
    ) -> Result<TierPush> {
        match find_object(tier.as_ref(), base, &self.options).await? {
            Found::Complete(record) => {
                let local = local_sha
                    .get_or_try_init(|| sha256_file(path))
                    .await?
                    .clone();
                match self.decoded_sha(&tier, &record).await {
                    Ok(stored) if stored == local => {
                        return Ok(TierPush {
                            tier: tier.name().to_owned(),
                            key: record.key,
                            stored: false,
                        });
                    }
                    Ok(stored) => {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "{} is already archived with different contents \
                                 (archived sha256 {stored}, local {local}); it was not overwritten",
                                record.name
                            ),
                        )
                        .with_context("key", &record.key)
                        .with_hint(
                            "two clusters may be archiving into the same place, or the cluster \
                             was restored without a new timeline: give each cluster its own \
                             archive and check archive_command",
                        ));
                    }
                    Err(e) if e.kind() == ErrorKind::Integrity => {
                        progress.warn(format!(
                            "{} on tier {}: the stored copy is corrupt ({e}); replacing it",
                            record.key,
                            tier.name()
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            Found::Incomplete { key } => {
                progress.warn(format!(
                    "{key} on tier {}: an earlier push did not finish; writing it again",
                    tier.name()
                ));
                tier.delete(&key).await?;
            }
            Found::Missing => {}
        }
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_err(e, "cannot read the WAL file", path))?;
        let record = put_object(tier.clone(), base, &mut f, &self.options, progress).await?;
        Ok(TierPush {
            tier: tier.name().to_owned(),
            key: record.key,
            stored: true,
        })
    }

    async fn decoded_sha(
        &self,
        tier: &Arc<dyn StorageTier>,
        record: &zdr_core::ArtifactRecord,
    ) -> Result<String> {
        let mut r = open_artifact(tier.clone(), record, &self.options.keys, Progress::none())?;
        sha256_of(&mut r)
            .await
            .map_err(|e| Error::from_io(e, "reading the archived copy failed"))
    }

    /// Restore the archived file `name` (PostgreSQL's `%f`) to `dest` (`%p`), trying the
    /// tiers in order. The copy is checked (size and SHA-256 of the stored bytes) before
    /// `dest` appears: it is written beside it and renamed. A corrupt or unreadable copy
    /// makes the next tier be tried.
    ///
    /// # Errors
    /// When no tier gave an intact copy and at least one failed for another reason than
    /// "not there" — PostgreSQL must then stop recovery rather than end it early.
    pub async fn fetch(
        &self,
        name: &str,
        dest: &Path,
        progress: &Progress,
    ) -> Result<FetchOutcome> {
        let file = self.classify(name)?;
        let base = base_key(&self.prefix, &file, name);
        let mut first_error: Option<Error> = None;
        for tier in &self.tiers {
            let record = match find_object(tier.as_ref(), &base, &self.options).await {
                Ok(Found::Complete(r)) => r,
                Ok(Found::Missing) => continue,
                Ok(Found::Incomplete { key }) => {
                    progress.warn(format!(
                        "{key} on tier {}: incomplete (no sidecar), not used",
                        tier.name()
                    ));
                    continue;
                }
                Err(e) => {
                    progress.warn(format!("tier {}: {e}", tier.name()));
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            match self.fetch_one(tier, &record, &file, dest).await {
                Ok(bytes) => {
                    return Ok(FetchOutcome::Fetched {
                        tier: tier.name().to_owned(),
                        bytes,
                    });
                }
                Err(e) => {
                    let e = e
                        .with_context("tier", tier.name())
                        .with_context("key", &record.key);
                    progress.warn(format!("{e}; trying the next tier"));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.with_context("file", name)),
            None => Ok(FetchOutcome::NotFound),
        }
    }

    /// Like [`WalArchive::fetch`], but take the file from `prefetch_dir` when a prefetch
    /// already brought it (it was checked when it was downloaded); older prefetched files are
    /// removed as recovery moves past them.
    ///
    /// # Errors
    /// As [`WalArchive::fetch`].
    pub async fn fetch_prefetched(
        &self,
        name: &str,
        dest: &Path,
        prefetch_dir: &Path,
        progress: &Progress,
    ) -> Result<FetchOutcome> {
        let file = self.classify(name)?;
        if let WalFile::Segment(_) = file {
            let ready = prefetch_dir.join(name);
            if let Ok(meta) = tokio::fs::metadata(&ready).await
                && meta.len() == self.segment_size
                && tokio::fs::rename(&ready, dest).await.is_ok()
            {
                sweep_prefetch(prefetch_dir, name).await;
                return Ok(FetchOutcome::Fetched {
                    tier: "prefetch".to_owned(),
                    bytes: meta.len(),
                });
            }
        }
        let out = self.fetch(name, dest, progress).await?;
        if out == FetchOutcome::NotFound {
            // The end of the archive: nothing more to prefetch.
            let _ = tokio::fs::remove_dir_all(prefetch_dir).await;
        }
        Ok(out)
    }

    /// Download up to `count` segments following `after` on its timeline into `dir` (each
    /// checked, written beside and renamed), skipping the ones already there or being
    /// fetched by another prefetch. Stops at the first segment not archived. Best effort:
    /// returns how many it brought.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when `after` is not a segment name, or `dir` cannot be made.
    pub async fn prefetch(
        &self,
        after: &str,
        count: usize,
        dir: &Path,
        progress: &Progress,
    ) -> Result<usize> {
        let WalFile::Segment(seg) = self.classify(after)? else {
            return Err(Error::bad_input(format!("{after} is not a WAL segment")));
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_err(e, "cannot create the prefetch directory", dir))?;
        let mut brought = 0;
        for i in 1..=count as u64 {
            let next = Segment {
                timeline: seg.timeline,
                number: seg.number + i,
            }
            .name(self.segment_size);
            let path = dir.join(&next);
            if tokio::fs::metadata(&path).await.is_ok() {
                continue;
            }
            let lock = dir.join(format!("{next}.lock"));
            if tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
                .await
                .is_err()
            {
                continue; // another prefetch is on it
            }
            let res = self.fetch(&next, &path, progress).await;
            let _ = tokio::fs::remove_file(&lock).await;
            match res {
                Ok(FetchOutcome::Fetched { .. }) => brought += 1,
                Ok(FetchOutcome::NotFound) | Err(_) => break,
            }
        }
        Ok(brought)
    }

    async fn fetch_one(
        &self,
        tier: &Arc<dyn StorageTier>,
        record: &zdr_core::ArtifactRecord,
        file: &WalFile,
        dest: &Path,
    ) -> Result<u64> {
        let tmp = tmp_path(dest);
        let res = async {
            let r = open_artifact(tier.clone(), record, &self.options.keys, Progress::none())?;
            // One blocking task writes the file straight from a large read buffer: no copy
            // into `tokio::fs`'s own buffer, no hand-off to the blocking pool per write.
            let input = tokio_util::io::SyncIoBridge::new(r);
            let path = tmp.clone();
            let n = tokio::task::spawn_blocking(move || -> Result<u64> {
                let mut input = std::io::BufReader::with_capacity(zdr_storage::CHUNK, input);
                let mut out = std::fs::File::create(&path)
                    .map_err(|e| io_err(e, "cannot write the restored WAL file", &path))?;
                std::io::copy(&mut input, &mut out)
                    .map_err(|e| Error::from_io(e, "restoring the WAL file failed"))
            })
            .await
            .map_err(|e| Error::unexpected("the WAL fetch task failed").with_source(e))??;
            if let WalFile::Segment(_) = file
                && n != self.segment_size
            {
                return Err(Error::integrity(format!(
                    "the archived segment decodes to {n} bytes, not {}",
                    self.segment_size
                )));
            }
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(|e| io_err(e, "cannot move the restored WAL file into place", dest))?;
            Ok(n)
        }
        .await;
        if res.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        res
    }

    /// Whether tier `index` holds a complete copy (object and sidecar) of the WAL file `name`.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] for a bad name or tier number; storage errors.
    pub async fn is_archived(&self, index: usize, name: &str) -> Result<bool> {
        let tier = self
            .tiers
            .get(index)
            .ok_or_else(|| Error::bad_input(format!("no archive tier number {index}")))?;
        let base = base_key(&self.prefix, &self.classify(name)?, name);
        Ok(matches!(
            find_object(tier.as_ref(), &base, &self.options).await?,
            Found::Complete(_)
        ))
    }

    /// Wait until every tier holds the WAL file `name`, polling each in turn; returns when it
    /// was seen on each (tier name, seconds since the call).
    ///
    /// # Errors
    /// [`ErrorKind::Storage`] naming the file and the tier it did not reach within `timeout`;
    /// storage errors.
    pub async fn wait_archived(
        &self,
        name: &str,
        timeout: std::time::Duration,
        progress: &Progress,
    ) -> Result<Vec<(String, f64)>> {
        let started = std::time::Instant::now();
        let mut arrived = Vec::new();
        for (i, tier) in self.tiers.iter().enumerate() {
            while !self.is_archived(i, name).await? {
                if started.elapsed() >= timeout {
                    return Err(Error::new(
                        ErrorKind::Storage,
                        format!(
                            "WAL file {name} did not reach tier {} within {} s",
                            tier.name(),
                            timeout.as_secs()
                        ),
                    )
                    .with_context("segment", name)
                    .with_context("tier", tier.name()));
                }
                progress.info(format!("waiting for {name} on {}", tier.name()));
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            arrived.push((tier.name().to_owned(), started.elapsed().as_secs_f64()));
        }
        Ok(arrived)
    }

    /// Read a timeline's history file from the first tier that has it.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no tier has it; integrity and storage errors.
    pub async fn history(&self, timeline: u32) -> Result<Vec<Switch>> {
        let name = format!("{timeline:08X}.history");
        let base = base_key(&self.prefix, &WalFile::History(timeline), &name);
        for tier in &self.tiers {
            if let Found::Complete(record) =
                find_object(tier.as_ref(), &base, &self.options).await?
            {
                let mut r =
                    open_artifact(tier.clone(), &record, &self.options.keys, Progress::none())?;
                let mut text = String::new();
                r.read_to_string(&mut text)
                    .await
                    .map_err(|e| Error::from_io(e, "reading a history file failed"))?;
                return parse_history(&text).map_err(|e| e.with_context("file", &name));
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            format!("the timeline history file {name} is not in the archive"),
        ))
    }

    /// Delete — or with `dry_run` only list — the WAL files on tier `index` that lie wholly
    /// before `floor` (a segment name: the oldest start segment of the base backups that are
    /// kept, [`crate::basebackup::wal_retention_floor`]): segments, partial segments and
    /// backup history files of earlier positions on any timeline, and their sidecars. Timeline
    /// history files are always kept; so is anything whose name is not a WAL file's.
    ///
    /// # Errors
    /// A floor that is not a segment name; storage errors (what was deleted before is listed
    /// in no result: the next prune finds the rest).
    pub async fn prune(&self, index: usize, floor: &str, dry_run: bool) -> Result<WalPrune> {
        let tier = self
            .tiers
            .get(index)
            .ok_or_else(|| Error::bad_input(format!("no archive tier number {index}")))?;
        let floor = Segment::parse(floor, self.segment_size)?.number;
        let mut entries = tier.list(&format!("{}/", self.prefix)).await?;
        // Files before their sidecars: a prune cut short leaves sidecars, never a file
        // without its checksum.
        entries.sort_by_key(|e| e.key.ends_with(".sha256"));
        let mut out = WalPrune::default();
        for e in entries {
            let file = e.key.rsplit('/').next().unwrap_or(&e.key);
            let file = file.strip_suffix(".sha256").unwrap_or(file);
            let Some(name) = strip_suffixes(file) else {
                continue;
            };
            let position = match WalFile::parse(name, self.segment_size) {
                Ok(WalFile::Segment(s)) => s.number,
                Ok(WalFile::Partial(_) | WalFile::Backup(_)) => {
                    match Segment::parse(&name[..24], self.segment_size) {
                        Ok(s) => s.number,
                        Err(_) => continue,
                    }
                }
                _ => continue,
            };
            if position >= floor {
                continue;
            }
            out.bytes += e.size;
            out.files.push(e.key);
        }
        if !dry_run {
            // In batches, the files before their sidecars.
            let split = out.files.partition_point(|k| !k.ends_with(".sha256"));
            tier.delete_many(&out.files[..split]).await?;
            tier.delete_many(&out.files[split..]).await?;
        }
        Ok(out)
    }

    /// List what the archive holds on tier `index` (0 = the first).
    ///
    /// # Errors
    /// Storage errors.
    pub async fn list(&self, index: usize) -> Result<WalListing> {
        let tier = self
            .tiers
            .get(index)
            .ok_or_else(|| Error::bad_input(format!("no archive tier number {index}")))?;
        let entries = tier.list(&format!("{}/", self.prefix)).await?;
        let keys: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        let mut out = WalListing::default();
        let mut newest: Option<(String, String)> = None;
        for e in &entries {
            let key = e.key.as_str();
            if key.ends_with(".sha256") {
                continue;
            }
            let Some(name) = strip_suffixes(key.rsplit('/').next().unwrap_or(key)) else {
                continue;
            };
            if !keys.contains(format!("{key}.sha256").as_str()) {
                out.incomplete.push(key.to_owned());
                continue;
            }
            match WalFile::parse(name, self.segment_size) {
                Ok(WalFile::Segment(s)) => {
                    out.segments.entry(s.timeline).or_default().insert(s.number);
                    if newest.as_ref().is_none_or(|(n, _)| name > n.as_str()) {
                        newest = Some((name.to_owned(), key.to_owned()));
                    }
                }
                Ok(WalFile::History(t)) => {
                    out.histories.insert(t);
                }
                _ => {}
            }
        }
        if let Some((name, key)) = newest {
            let modified = tier.stat(&key).await?.and_then(|e| e.modified);
            out.newest = Some((name, modified));
        }
        Ok(out)
    }

    /// The timelines from `from` (the base backup's) to `target` (`None`: the highest with a
    /// history file in the archive, else `from`), oldest first.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when `from` is not an ancestor of the target timeline;
    /// errors reading history files.
    pub async fn timeline_path(
        &self,
        from: u32,
        target: Option<u32>,
        listing: &WalListing,
    ) -> Result<Vec<TimelineSpan>> {
        let target = target.unwrap_or_else(|| {
            listing
                .histories
                .iter()
                .copied()
                .max()
                .unwrap_or(from)
                .max(from)
        });
        if target == from {
            return Ok(vec![TimelineSpan {
                timeline: from,
                begin: Lsn(0),
                end: None,
            }]);
        }
        let history = self.history(target).await?;
        // history: parent timelines in order, each with the LSN where it was left.
        let mut spans = Vec::new();
        let mut begin = Lsn(0);
        for sw in &history {
            spans.push(TimelineSpan {
                timeline: sw.parent,
                begin,
                end: Some(sw.at),
            });
            begin = sw.at;
        }
        spans.push(TimelineSpan {
            timeline: target,
            begin,
            end: None,
        });
        let Some(pos) = spans.iter().position(|s| s.timeline == from) else {
            return Err(Error::bad_input(format!(
                "the base backup is on timeline {from}, which is not in the history of \
                 timeline {target}"
            ))
            .with_hint("choose the target timeline, or another base backup"));
        };
        Ok(spans.split_off(pos))
    }

    /// Check that every segment from `start` (the base backup's start) up to `until` (or, with
    /// `None`, up to the newest segment archived on the path) is in `listing`, following
    /// `path`. Returns the last segment of the unbroken chain.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the first missing segment.
    pub fn check_chain(
        &self,
        listing: &WalListing,
        path: &[TimelineSpan],
        start: Lsn,
        until: Option<Lsn>,
    ) -> Result<String> {
        let chain = self.chain(listing, path, start, until)?;
        Ok(chain.last().map_or_else(
            || {
                Segment {
                    timeline: path.last().map_or(1, |s| s.timeline),
                    number: start.0 / self.segment_size,
                }
                .name(self.segment_size)
            },
            |g| g.name(self.segment_size),
        ))
    }

    /// The segments a recovery from `start` up to `until` (or, with `None`, up to the newest
    /// segment archived on the path) replays, in order, each on the timeline PostgreSQL takes
    /// it from (the newest on `path` that holds it), as [`WalArchive::check_chain`] checks
    /// them.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the first missing segment.
    pub fn chain(
        &self,
        listing: &WalListing,
        path: &[TimelineSpan],
        start: Lsn,
        until: Option<Lsn>,
    ) -> Result<Vec<Segment>> {
        let size = self.segment_size;
        let empty = BTreeSet::new();
        let have = |tl: u32, n: u64| listing.segments.get(&tl).unwrap_or(&empty).contains(&n);
        // The timelines whose files may hold segment n, newest first (as PostgreSQL tries them).
        let covering = |n: u64| -> Vec<u32> {
            path.iter()
                .rev()
                .filter(|s| {
                    let first = s.begin.0 / size;
                    let last = s.end.map_or(u64::MAX, |e| e.0.saturating_sub(1) / size);
                    n >= first && n <= last
                })
                .map(|s| s.timeline)
                .collect()
        };
        let first = start.0 / size;
        let last = match until {
            Some(l) => l.0 / size,
            // The newest segment of each timeline within its span of the path: what a
            // timeline archived after the path left it (an abandoned branch) is not replayed.
            None => path
                .iter()
                .filter_map(|s| {
                    let end = s.end.map_or(u64::MAX, |e| e.0.saturating_sub(1) / size);
                    listing
                        .segments
                        .get(&s.timeline)?
                        .range(..=end)
                        .next_back()
                        .copied()
                })
                .max()
                .unwrap_or(first),
        };
        let mut chain: Vec<Segment> = Vec::new();
        for n in first..=last.max(first) {
            let tls = covering(n);
            if let Some(tl) = tls.iter().find(|&&tl| have(tl, n)) {
                chain.push(Segment {
                    timeline: *tl,
                    number: n,
                });
                continue;
            }
            let tl = tls
                .first()
                .copied()
                .unwrap_or(path.last().map_or(1, |s| s.timeline));
            let missing = Segment {
                timeline: tl,
                number: n,
            }
            .name(size);
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the WAL chain is broken: segment {missing} is missing from the archive{}",
                    match chain.last() {
                        Some(g) => format!(" (the chain ends at {})", g.name(size)),
                        None => " (the base backup's first segment)".to_owned(),
                    }
                ),
            )
            .with_context("segment", &missing)
            .with_hint(
                "recover to a target before the gap (--target-lsn), use an older base backup, \
                 or find the segment on another tier and copy it into the archive",
            ));
        }
        Ok(chain)
    }

    /// Check the archive on tier `index`: per timeline, the segments missing between the
    /// first and the last, and the ones whose stored bytes fail their checksum (`deep`:
    /// or do not decrypt and decompress).
    ///
    /// # Errors
    /// Storage errors from listing.
    pub async fn verify(
        &self,
        index: usize,
        deep: bool,
        progress: &Progress,
    ) -> Result<(Vec<TimelineReport>, WalListing)> {
        let listing = self.list(index).await?;
        let tier = &self.tiers[index.min(self.tiers.len() - 1)];
        let size = self.segment_size;
        let mut reports = Vec::new();
        for (&tl, numbers) in &listing.segments {
            let (Some(&lo), Some(&hi)) = (numbers.first(), numbers.last()) else {
                continue;
            };
            let name = |n: u64| {
                Segment {
                    timeline: tl,
                    number: n,
                }
                .name(size)
            };
            let missing: Vec<String> = (lo..=hi)
                .filter(|n| !numbers.contains(n))
                .map(name)
                .collect();
            let mut corrupt = Vec::new();
            for &n in numbers {
                let seg = name(n);
                let base = base_key(
                    &self.prefix,
                    &WalFile::Segment(Segment {
                        timeline: tl,
                        number: n,
                    }),
                    &seg,
                );
                let ok = match find_object(tier.as_ref(), &base, &self.options).await {
                    Ok(Found::Complete(rec)) => {
                        let stored =
                            zdr_storage::verify_stored(tier.as_ref(), &rec, &Progress::none())
                                .await;
                        match stored {
                            Ok(()) if deep => self.decoded_sha(tier, &rec).await.is_ok(),
                            Ok(()) => true,
                            Err(e) if e.kind() == ErrorKind::Integrity => false,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(_) => false,
                    Err(e) if e.kind() == ErrorKind::Integrity => false,
                    Err(e) => return Err(e),
                };
                if !ok {
                    progress.warn(format!("{seg} on tier {}: corrupt", tier.name()));
                    corrupt.push(seg);
                }
            }
            reports.push(TimelineReport {
                timeline: tl,
                first: name(lo),
                last: name(hi),
                count: numbers.len(),
                missing,
                corrupt,
            });
        }
        Ok((reports, listing))
    }
}

/// The archiving settings of a live cluster.
#[derive(Debug, Clone, Serialize)]
pub struct WalSettings {
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// `archive_timeout` in seconds (0 = off): bounds the data at risk on a quiet server.
    pub archive_timeout_secs: u64,
    /// `wal_level`.
    pub wal_level: String,
    /// `pg_stat_archiver`: the last archived file, and the last failure.
    pub last_archived: Option<String>,
    /// The last file `archive_command` failed on.
    pub last_failed: Option<String>,
}

/// Read the archiving settings of the cluster `config` connects to.
///
/// # Errors
/// Connection and server errors.
pub async fn wal_settings(config: &crate::PgConfig) -> Result<WalSettings> {
    let mut conn = crate::pg::connect(config, &config.maintenance_database).await?;
    let row = sqlx::query(
        "SELECT current_setting('archive_mode'), current_setting('archive_command'), \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'archive_timeout'), current_setting('wal_level'), \
         (SELECT last_archived_wal FROM pg_stat_archiver), (SELECT last_failed_wal FROM pg_stat_archiver)",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| crate::pg::db_error(e, config, "cannot read the archiving settings"))?;
    crate::pg::close(conn).await;
    use sqlx::Row;
    Ok(WalSettings {
        archive_mode: row.get(0),
        archive_command: row.get(1),
        archive_timeout_secs: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
        wal_level: row.get(3),
        last_archived: row.get(4),
        last_failed: row.get(5),
    })
}

/// Force a WAL switch (`pg_switch_wal()`) after writing a record, and return the name of the
/// segment that was closed: the one to wait for in the archive.
///
/// # Errors
/// Connection and server errors (the user needs the right to call `pg_switch_wal`).
pub async fn switch_wal(config: &crate::PgConfig) -> Result<String> {
    let mut conn = crate::pg::connect(config, &config.maintenance_database).await?;
    // A restore point writes a WAL record, so the switch always closes a segment.
    let name: String = sqlx::query_scalar(
        "SELECT pg_walfile_name(lsn) FROM (SELECT pg_create_restore_point('zdr check'), pg_switch_wal() AS lsn) s",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| crate::pg::db_error(e, config, "cannot switch WAL"))?;
    crate::pg::close(conn).await;
    Ok(name)
}

/// A WAL file name from a stored object's file name (`X.lz4.age` → `X`), if it is one.
fn strip_suffixes(file: &str) -> Option<&str> {
    let file = file.strip_suffix(".age").unwrap_or(file);
    let file = [".lz4", ".zst", ".gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    (!file.is_empty()).then_some(file)
}

/// Remove prefetched segments recovery has moved past (names sort by position).
async fn sweep_prefetch(dir: &Path, current: &str) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.len() == 24 && *name < *current {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

fn tmp_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".zdr-{}.tmp", std::process::id()));
    dest.with_file_name(name)
}

async fn sha256_file(path: &Path) -> Result<String> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_err(e, "cannot read the WAL file", path))?;
    sha256_of(&mut f)
        .await
        .map_err(|e| io_err(e, "cannot read the WAL file", path))
}

/// The SHA-256 of everything `r` yields, read in 1 MiB chunks.
async fn sha256_of(r: &mut (dyn tokio::io::AsyncRead + Send + Unpin)) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; zdr_storage::CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walname::DEFAULT_SEGMENT_SIZE;

    fn listing(segs: &[(u32, u64)], histories: &[u32]) -> WalListing {
        let mut l = WalListing::default();
        for &(tl, n) in segs {
            l.segments.entry(tl).or_default().insert(n);
        }
        l.histories = histories.iter().copied().collect();
        l
    }

    fn archive() -> Result<WalArchive> {
        let tier = zdr_storage::open_tier("mem", &zdr_storage::TierConfig::Memory)?;
        let c = zdr_core::Component::new("db")?;
        WalArchive::new(
            &c,
            vec![tier],
            PipelineOptions::default(),
            DEFAULT_SEGMENT_SIZE,
        )
    }

    #[test]
    fn chain_on_one_timeline() -> Result<()> {
        let a = archive()?;
        let path = [TimelineSpan {
            timeline: 1,
            begin: Lsn(0),
            end: None,
        }];
        let l = listing(&[(1, 2), (1, 3), (1, 4), (1, 6)], &[]);
        let start = Segment {
            timeline: 1,
            number: 2,
        }
        .start(DEFAULT_SEGMENT_SIZE);
        // Up to segment 4: complete.
        let until = Segment {
            timeline: 1,
            number: 4,
        }
        .start(DEFAULT_SEGMENT_SIZE);
        assert_eq!(
            a.check_chain(&l, &path, start, Some(until))?,
            "000000010000000000000004"
        );
        // To the newest: segment 5 is missing, and named.
        let err = a
            .check_chain(&l, &path, start, None)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("000000010000000000000005")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn chain_across_a_timeline_switch() -> Result<()> {
        let a = archive()?;
        let size = DEFAULT_SEGMENT_SIZE;
        // Timeline 2 starts inside segment 5 (0/5000A0).
        let path = [
            TimelineSpan {
                timeline: 1,
                begin: Lsn(0),
                end: Some(Lsn(5 * size + 0xA0)),
            },
            TimelineSpan {
                timeline: 2,
                begin: Lsn(5 * size + 0xA0),
                end: None,
            },
        ];
        let l = listing(&[(1, 3), (1, 4), (2, 5), (2, 6)], &[2]);
        assert_eq!(
            a.check_chain(&l, &path, Lsn(3 * size), None)?,
            "000000020000000000000006"
        );
        // What a recovery replays, in order: each segment from the timeline that holds it
        // (segment 5, where timeline 2 begins, from timeline 2).
        let names: Vec<String> = a
            .chain(&l, &path, Lsn(3 * size), None)?
            .iter()
            .map(|s| s.name(size))
            .collect();
        assert_eq!(
            names,
            [
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006"
            ]
        );
        // Segment 4 only on timeline 2 does not count: timeline 2 starts at 5.
        let l = listing(&[(1, 3), (2, 4), (2, 5)], &[2]);
        assert!(a.check_chain(&l, &path, Lsn(3 * size), None).is_err());
        // Timeline 1 went on archiving after timeline 2 branched off it (segments 6 and 7,
        // an abandoned branch): the chain of this path ends with timeline 2's newest segment,
        // and does not ask timeline 2 for segment 7.
        let l = listing(
            &[(1, 3), (1, 4), (1, 5), (1, 6), (1, 7), (2, 5), (2, 6)],
            &[2],
        );
        assert_eq!(
            a.check_chain(&l, &path, Lsn(3 * size), None)?,
            "000000020000000000000006"
        );
        Ok(())
    }

    #[test]
    fn suffixes_are_stripped() {
        assert_eq!(
            strip_suffixes("000000010000000000000001.lz4.age"),
            Some("000000010000000000000001")
        );
        assert_eq!(
            strip_suffixes("00000002.history.zst"),
            Some("00000002.history")
        );
        assert_eq!(strip_suffixes("x"), Some("x"));
    }
}
