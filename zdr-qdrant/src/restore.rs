//! Restore: snapshot upload or recover, logical import, and aliases.

use async_trait::async_trait;
use qdrant_client::qdrant as pb;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::AsyncBufReadExt;
use zdr_core::{
    ArtifactReader, Component, Error, ErrorKind, Manifest, Progress, RestoreCall, RestoreOutcome,
    RestoreTarget, RestoreWithOptions, Restorer, Result,
};

use crate::client::artifact_name;
use crate::client::major_minor;
use crate::convert;
use crate::{AliasFact, BATCH, QdrantComponent, QdrantFacts};

impl QdrantComponent {
    /// Create `dest` from an export's first line, then upsert its points in batches.
    pub(crate) async fn import_collection(
        &self,
        dest: &str,
        reader: zdr_core::BoxRead,
        task: &str,
        progress: &Progress,
    ) -> Result<()> {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        let read_err = |e| Error::from_io(e, "read the export artifact");
        let bad = |what: String| self.err(ErrorKind::Integrity, what, Some(dest));
        let header: Value = match lines.next_line().await.map_err(read_err)? {
            Some(l) => serde_json::from_str(&l)
                .map_err(|e| bad(format!("export header unreadable: {e}")))?,
            None => return Err(bad("export is empty".into())),
        };
        let vectors_config =
            convert::json_to_vectors_config(&header["vectors"]).ok_or_else(|| {
                bad(format!(
                    "export header has a vector config this version cannot read: {}",
                    header["vectors"]
                ))
            })?;
        if self.collection_info(dest).await?.is_some() {
            self.rpc(
                "drop the collection to overwrite",
                Some(dest),
                self.grpc.delete_collection(dest),
            )
            .await?;
        }
        self.rpc(
            "create collection",
            Some(dest),
            self.grpc.create_collection(pb::CreateCollection {
                collection_name: dest.to_string(),
                vectors_config: Some(vectors_config),
                sparse_vectors_config: convert::json_to_sparse_config(&header["sparse_vectors"]),
                ..Default::default()
            }),
        )
        .await?;
        if let Some(schema) = header["payload_schema"].as_object() {
            for (field, info) in schema {
                let field_schema = if info["params"].is_object() {
                    info["params"].clone()
                } else {
                    info["data_type"].clone()
                };
                // REST: it takes every index's parameters as JSON, as recorded.
                self.call(
                    self.request(Method::PUT, &format!("/collections/{dest}/index?wait=true"))
                        .json(&json!({"field_name": field, "field_schema": field_schema})),
                    "create payload index",
                    Some(dest),
                )
                .await?;
            }
        }
        let mut batch: Vec<pb::PointStruct> = Vec::with_capacity(BATCH);
        let mut line_no = 1u64;
        loop {
            let line = lines.next_line().await.map_err(read_err)?;
            if let Some(l) = &line {
                line_no += 1;
                progress.advance(task, l.len() as u64 + 1);
                let p: Value = serde_json::from_str(l)
                    .map_err(|e| bad(format!("export line {line_no} unreadable: {e}")))?;
                let id = convert::json_to_id(&p["id"])
                    .ok_or_else(|| bad(format!("export line {line_no}: bad point id")))?;
                let vectors = convert::json_to_vectors(&p["vector"])
                    .ok_or_else(|| bad(format!("export line {line_no}: unreadable vector")))?;
                let payload = p["payload"]
                    .as_object()
                    .map(convert::json_to_payload)
                    .unwrap_or_default();
                batch.push(pb::PointStruct {
                    id: Some(id),
                    payload,
                    vectors: Some(vectors),
                });
            }
            if batch.len() >= BATCH || (line.is_none() && !batch.is_empty()) {
                self.rpc(
                    "upsert points",
                    Some(dest),
                    self.grpc.upsert_points(pb::UpsertPoints {
                        collection_name: dest.to_string(),
                        wait: Some(true),
                        points: std::mem::take(&mut batch),
                        ..Default::default()
                    }),
                )
                .await?;
            }
            if line.is_none() {
                return Ok(());
            }
        }
    }

    pub(crate) async fn create_aliases(&self, aliases: &[AliasFact]) -> Result<()> {
        if aliases.is_empty() {
            return Ok(());
        }
        let current = self.list_aliases().await?;
        for a in aliases {
            match current.iter().find(|c| c.alias_name == a.alias_name) {
                Some(c) if c.collection_name == a.collection_name => continue,
                Some(_) => {
                    self.rpc(
                        "recreate aliases",
                        None,
                        self.grpc.delete_alias(a.alias_name.as_str()),
                    )
                    .await?;
                }
                None => {}
            }
            self.rpc(
                "recreate aliases",
                None,
                self.grpc.create_alias(pb::CreateAlias {
                    collection_name: a.collection_name.clone(),
                    alias_name: a.alias_name.clone(),
                }),
            )
            .await?;
        }
        Ok(())
    }
}

/// Options of one restore call ([`QdrantComponent::restore_with`]).
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore every collection into a scratch collection of its own
    /// ([`SCRATCH_PREFIX`], unique per process), compare each with the backup's facts, then
    /// delete the scratch collections and the snapshot files the uploads left — also when the
    /// restore or the comparison failed. Live collections and aliases are never touched; a
    /// target name does not apply. Scratch collections that an interrupted run of this host
    /// left behind (its process is gone) are deleted first.
    pub scratch: bool,
}

/// The name prefix of scratch collections ([`RestoreOptions::scratch`]).
pub const SCRATCH_PREFIX: &str = "zdr-scratch-";

/// A short tag of this host, so a run never deletes scratch collections of another host's
/// drill that shares the server.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(host.trim().as_bytes())[..4])
}

/// The name prefix of the scratch collections this host makes:
/// [`SCRATCH_PREFIX`] and a tag of the host name; the pid of the process follows.
#[must_use]
pub fn host_scratch_prefix() -> String {
    format!("{SCRATCH_PREFIX}{}-", host_tag())
}

/// The scratch collection names of one restore: `zdr-scratch-<host>-<pid>-<nanos>-<i>`.
fn scratch_names(count: usize) -> Vec<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let (tag, pid) = (host_tag(), std::process::id());
    (0..count)
        .map(|i| format!("{SCRATCH_PREFIX}{tag}-{pid}-{nanos}-{i}"))
        .collect()
}

/// The pid of a scratch collection made on this host, `None` for any other name.
fn scratch_pid_here(name: &str, tag: &str) -> Option<u32> {
    let rest = name.strip_prefix(SCRATCH_PREFIX)?.strip_prefix(tag)?;
    rest.strip_prefix('-')?.split('-').next()?.parse().ok()
}

impl QdrantComponent {
    /// A restore of this component with `options`, as a [`Restorer`] for the storage layer.
    #[must_use]
    pub fn restore_with(&self, options: RestoreOptions) -> RestoreCall<'_, Self> {
        RestoreCall::new(self, options)
    }

    /// Delete the scratch collections that runs of this host left behind when they were
    /// killed (their process is gone); returns their names.
    ///
    /// # Errors
    /// As [`QdrantComponent::list_collections`], or when one cannot be deleted.
    pub async fn remove_abandoned_scratch(&self) -> Result<Vec<String>> {
        let tag = host_tag();
        let mut removed = Vec::new();
        for c in self.list_collections().await? {
            let Some(pid) = scratch_pid_here(&c, &tag) else {
                continue;
            };
            if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            self.drop_scratch(&c).await?;
            removed.push(c);
        }
        Ok(removed)
    }

    /// Delete a scratch collection and every snapshot file it holds on the server.
    async fn drop_scratch(&self, c: &str) -> Result<()> {
        let snapshots = match self.list_snapshots(Some(c)).await {
            Ok(list) => list,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for (name, _, _) in snapshots {
            self.delete_snapshot_file(c, &name).await?;
        }
        match self
            .rpc(
                "delete the scratch collection",
                Some(c),
                self.grpc.delete_collection(c),
            )
            .await
        {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Restore every collection of `facts` into `dests` (same order), checked beforehand.
    async fn restore_into(
        &self,
        backup: &Manifest,
        facts: &QdrantFacts,
        dests: &[String],
        from: &dyn ArtifactReader,
        progress: &Progress,
        outcome: &mut RestoreOutcome,
    ) -> Result<()> {
        for (c, dest) in facts.collections.iter().zip(dests) {
            let record = backup.artifact(&artifact_name(&c.name)).ok_or_else(|| {
                self.err(
                    ErrorKind::Integrity,
                    format!(
                        "backup {} has no artifact for collection {}",
                        backup.id, c.name
                    ),
                    Some(&c.name),
                )
            })?;
            let task = format!("qdrant upload {dest}");
            progress.start(&task, Some(record.raw_size));
            if let Some(template) = self.config.recover_from.as_ref().filter(|_| !facts.logical) {
                // The server fetches the snapshot itself; the stored artifact was checked by
                // the repository and its checksum goes along for the server to check.
                let location = template
                    .replace("{collection}", &c.name)
                    .replace("{snapshot}", &c.snapshot);
                self.recover_snapshot(dest, &location, Some(&c.checksum))
                    .await?;
            } else {
                let reader = from.open(record).await?;
                if facts.logical {
                    self.import_collection(dest, reader, &task, progress)
                        .await?;
                } else {
                    let uploaded = self.upload_snapshot(dest, c, record.raw_size, reader).await;
                    // Qdrant keeps the uploaded file among the collection's snapshots, also
                    // when its restore failed: a full copy per restore unless it is removed.
                    // A leftover is reported.
                    if let Err(e) = self.delete_uploaded_snapshot(dest, &c.snapshot).await
                        && e.kind() != ErrorKind::NotFound
                    {
                        let note = format!(
                            "the uploaded snapshot of {dest} was left on the server: {}",
                            e.message()
                        );
                        progress.warn(note.clone());
                        outcome.notes.push(note);
                    }
                    uploaded?;
                }
            }
            progress.finish(&task);
            outcome.items += 1;
            outcome.bytes += record.raw_size;
        }
        Ok(())
    }

    /// Restore into scratch collections, compare them with the facts, delete them.
    async fn restore_scratch(
        &self,
        backup: &Manifest,
        facts: &QdrantFacts,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let mut outcome = RestoreOutcome::default();
        let abandoned = self.remove_abandoned_scratch().await?;
        if !abandoned.is_empty() {
            outcome.notes.push(format!(
                "removed {} scratch collections left by interrupted runs: {}",
                abandoned.len(),
                abandoned.join(", ")
            ));
        }
        let dests = scratch_names(facts.collections.len());
        let restored = self
            .restore_into(backup, facts, &dests, from, progress, &mut outcome)
            .await;
        let verified = match restored {
            Ok(()) => self.verify_collections(facts, &dests).await,
            Err(e) => Err(e),
        };
        // Always: the scratch collections (and any snapshot in them) go, whatever happened.
        let mut leftovers = Vec::new();
        for d in &dests {
            if let Err(e) = self.drop_scratch(d).await {
                leftovers.push(format!("{d}: {}", e.message()));
            }
        }
        let report = verified?;
        if !leftovers.is_empty() {
            return Err(self
                .err(
                    ErrorKind::Source,
                    format!(
                        "the scratch restore was verified but its collections could not all be deleted: {}",
                        leftovers.join("; ")
                    ),
                    None,
                )
                .temporary()
                .with_hint("the next scratch restore of this host deletes them"));
        }
        if !report.is_ok() {
            return Err(self
                .err(
                    ErrorKind::Integrity,
                    format!(
                        "backup {} restored into scratch collections differs from its facts: {}",
                        backup.id,
                        report.problems.join("; ")
                    ),
                    None,
                )
                .with_verify_report(report));
        }
        outcome.target = format!("scratch collections {} (deleted)", dests.join(","));
        outcome.notes.push(format!(
            "{} collections verified in scratch collections ({} checks), then deleted",
            dests.len(),
            report.checked
        ));
        Ok(outcome)
    }

    /// Refuse a backup this server cannot restore: a full-storage snapshot, or snapshots
    /// from a newer Qdrant.
    async fn check_restorable(&self, backup: &Manifest, facts: &QdrantFacts) -> Result<()> {
        if let Some(full) = &facts.full_snapshot {
            return Err(self
                .err(
                    ErrorKind::Unsupported,
                    format!(
                        "backup {} is a full-storage snapshot ({}): Qdrant restores those only when it starts",
                        backup.id, full.name
                    ),
                    None,
                )
                .with_hint(
                    "decode the artifact `storage` (sha256sum -c, then decompress/decrypt as stored), stop Qdrant \
                     and start it once from that file as its storage snapshot; per-collection backups restore through zdr",
                ));
        }
        let server = self.server_version().await?;
        match (major_minor(&facts.qdrant_version), major_minor(&server)) {
            (Some(snap), Some(srv)) if snap > srv && !facts.logical => Err(self
                .err(
                    ErrorKind::Unsupported,
                    format!(
                        "the snapshots were taken on Qdrant {} and the target server runs {server}: \
                         Qdrant cannot restore a snapshot from a newer version",
                        facts.qdrant_version
                    ),
                    None,
                )
                .with_hint(
                    "restore on a Qdrant at least as new, or use a logical export to cross versions",
                )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Restorer for QdrantComponent {
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
}

#[async_trait]
impl RestoreWithOptions for QdrantComponent {
    type Options = RestoreOptions;

    fn restored_component(&self) -> &Component {
        &self.component
    }

    async fn restore_with_options(
        &self,
        options: &RestoreOptions,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let facts = QdrantFacts::from_manifest(backup)?;
        self.check_restorable(backup, &facts).await?;
        if options.scratch {
            if target.name.is_some() {
                return Err(self.err(
                    ErrorKind::BadInput,
                    "a scratch restore chooses its own collection names: a target name does not apply"
                        .into(),
                    None,
                ));
            }
            return self.restore_scratch(backup, &facts, from, progress).await;
        }
        if target.name.is_some() && facts.collections.len() != 1 {
            return Err(self.err(
                ErrorKind::BadInput,
                format!(
                    "a target name needs a backup of one collection; this one has {}",
                    facts.collections.len()
                ),
                None,
            ));
        }
        let dests: Vec<String> = facts
            .collections
            .iter()
            .map(|c| target.name.clone().unwrap_or_else(|| c.name.clone()))
            .collect();
        // Every target is checked before the first upload: no half-restored set.
        for dest in &dests {
            if !target.overwrite && self.collection_info(dest).await?.is_some() {
                return Err(self
                    .err(
                        ErrorKind::Conflict,
                        format!("collection {dest} already exists"),
                        Some(dest),
                    )
                    .with_hint("restore under another name, or overwrite"));
            }
        }
        let mut outcome = RestoreOutcome::default();
        self.restore_into(backup, &facts, &dests, from, progress, &mut outcome)
            .await?;
        if target.name.is_none() {
            self.create_aliases(&facts.aliases).await?;
            if !facts.aliases.is_empty() {
                outcome
                    .notes
                    .push(format!("{} aliases recreated", facts.aliases.len()));
            }
        } else if !facts.aliases.is_empty() {
            outcome.notes.push(
                "restored under another name: aliases left pointing at the original collection"
                    .into(),
            );
        }
        if self.config.recover_from.is_some() && !facts.logical {
            outcome
                .notes
                .push("recovered by the server from recover_from".into());
        }
        outcome.target = dests.join(",");
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_carry_this_host_and_process() {
        let names = scratch_names(3);
        let tag = host_tag();
        assert_eq!(names.len(), 3);
        for n in &names {
            assert_eq!(scratch_pid_here(n, &tag), Some(std::process::id()), "{n}");
        }
        assert_ne!(names[0], names[1]);
        assert_eq!(scratch_pid_here(&names[0], "00000000"), None);
        assert_eq!(scratch_pid_here("documents", &tag), None);
        assert_eq!(
            scratch_pid_here(&format!("{SCRATCH_PREFIX}{tag}-x-1-0"), &tag),
            None
        );
    }
}
