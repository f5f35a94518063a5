//! Restore: snapshot upload or recover, logical import, and aliases.

use async_trait::async_trait;
use qdrant_client::qdrant as pb;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use zdr_core::{
    ArtifactReader, Component, Error, ErrorKind, Manifest, Progress, RestoreOutcome, RestoreTarget,
    Restorer, Result,
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
            self.grpc
                .delete_collection(dest)
                .await
                .map_err(|e| self.grpc_err("drop the collection to overwrite", Some(dest), e))?;
        }
        self.grpc
            .create_collection(pb::CreateCollection {
                collection_name: dest.to_string(),
                vectors_config: Some(vectors_config),
                sparse_vectors_config: convert::json_to_sparse_config(&header["sparse_vectors"]),
                ..Default::default()
            })
            .await
            .map_err(|e| self.grpc_err("create collection", Some(dest), e))?;
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
                self.grpc
                    .upsert_points(pb::UpsertPoints {
                        collection_name: dest.to_string(),
                        wait: Some(true),
                        points: std::mem::take(&mut batch),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| self.grpc_err("upsert points", Some(dest), e))?;
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
                    self.grpc
                        .delete_alias(a.alias_name.as_str())
                        .await
                        .map_err(|e| self.grpc_err("recreate aliases", None, e))?;
                }
                None => {}
            }
            self.grpc
                .create_alias(pb::CreateAlias {
                    collection_name: a.collection_name.clone(),
                    alias_name: a.alias_name.clone(),
                })
                .await
                .map_err(|e| self.grpc_err("recreate aliases", None, e))?;
        }
        Ok(())
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
        let facts = QdrantFacts::from_manifest(backup)?;
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
            (Some(snap), Some(srv)) if snap > srv && !facts.logical => {
                return Err(self
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
                    ));
            }
            _ => {}
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
        // Every target is checked before the first upload: no half-restored set.
        for c in &facts.collections {
            let dest = target.name.clone().unwrap_or_else(|| c.name.clone());
            if !target.overwrite && self.collection_info(&dest).await?.is_some() {
                return Err(self
                    .err(
                        ErrorKind::Conflict,
                        format!("collection {dest} already exists"),
                        Some(&dest),
                    )
                    .with_hint("restore under another name, or overwrite"));
            }
        }
        let mut outcome = RestoreOutcome::default();
        let mut restored = Vec::new();
        for c in &facts.collections {
            let dest = target.name.clone().unwrap_or_else(|| c.name.clone());
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
                self.recover_snapshot(&dest, &location, Some(&c.checksum))
                    .await?;
            } else {
                let reader = from.open(record).await?;
                if facts.logical {
                    self.import_collection(&dest, reader, &task, progress)
                        .await?;
                } else {
                    self.upload_snapshot(&dest, c, record.raw_size, reader)
                        .await?;
                    // Qdrant keeps the uploaded file among the collection's snapshots: a
                    // full copy per restore unless it is removed. A leftover is reported.
                    if let Err(e) = self.delete_uploaded_snapshot(&dest, &c.snapshot).await {
                        let note = format!(
                            "the uploaded snapshot of {dest} was left on the server: {}",
                            e.message()
                        );
                        progress.warn(note.clone());
                        outcome.notes.push(note);
                    }
                }
            }
            progress.finish(&task);
            outcome.items += 1;
            outcome.bytes += record.raw_size;
            restored.push(dest);
        }
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
        outcome.target = restored.join(",");
        Ok(outcome)
    }
}
