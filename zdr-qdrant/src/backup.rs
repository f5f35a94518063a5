//! Backup: collection snapshots, the full-storage snapshot and the logical export.

use async_trait::async_trait;
use qdrant_client::qdrant as pb;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error, ErrorKind, Progress,
    Result, SourceFacts,
};

use crate::client::artifact_name;
use crate::{
    AliasFact, BATCH, CollectionFacts, EXPORT_EXT, FULL_SNAPSHOT_ARTIFACT, FullSnapshotFact,
    QdrantComponent, QdrantFacts,
};

impl QdrantComponent {
    /// Snapshot one collection, stream it into `sink`, check Qdrant's checksum.
    pub(crate) async fn backup_collection(
        &self,
        c: &str,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<CollectionFacts> {
        let info = self.existing_info(c).await?;
        let sample = self.sample(c).await?;
        let snap = self
            .grpc
            .create_snapshot(c)
            .await
            .map_err(|e| self.grpc_err("create snapshot", Some(c), e))?
            .snapshot_description
            .unwrap_or_default();
        let name = snap.name;
        let checksum = snap.checksum.unwrap_or_default().to_lowercase();
        if name.is_empty() {
            return Err(self.err(
                ErrorKind::Source,
                "snapshot creation returned no name".into(),
                Some(c),
            ));
        }
        let result = self
            .download(
                &format!("/collections/{c}/snapshots/{name}"),
                &artifact_name(c),
                Some(c),
                &name,
                &checksum,
                u64::try_from(snap.size).ok().filter(|s| *s > 0),
                sink,
                progress,
            )
            .await;
        if self.config.delete_snapshots {
            let deleted = self
                .grpc
                .delete_snapshot(pb::DeleteSnapshotRequest {
                    collection_name: c.to_string(),
                    snapshot_name: name.clone(),
                })
                .await;
            if let Err(e) = deleted {
                let e = self.grpc_err("delete snapshot", Some(c), e);
                progress.warn(format!(
                    "snapshot {name} of {c} left on the server: {}",
                    e.message()
                ));
            }
        }
        result?;
        Ok(CollectionFacts {
            name: c.to_string(),
            points_count: info.points_count,
            vectors: info.vectors,
            sparse_vectors: info.sparse_vectors,
            payload_schema: info.payload_schema,
            snapshot: name,
            checksum,
            sample,
        })
    }

    /// One full-storage snapshot (every collection) streamed into the artifact
    /// [`FULL_SNAPSHOT_ARTIFACT`], with facts for each of `collections`.
    pub(crate) async fn backup_full(
        &self,
        collections: &[String],
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<(FullSnapshotFact, Vec<CollectionFacts>)> {
        let mut before = Vec::with_capacity(collections.len());
        for c in collections {
            before.push((self.existing_info(c).await?, self.sample(c).await?));
        }
        let snap = self
            .grpc
            .create_full_snapshot()
            .await
            .map_err(|e| self.grpc_err("create full snapshot", None, e))?
            .snapshot_description
            .unwrap_or_default();
        let name = snap.name;
        let checksum = snap.checksum.unwrap_or_default().to_lowercase();
        if name.is_empty() {
            return Err(self.err(
                ErrorKind::Source,
                "full snapshot creation returned no name".into(),
                None,
            ));
        }
        let size = u64::try_from(snap.size).ok().filter(|s| *s > 0);
        let result = self
            .download(
                &format!("/snapshots/{name}"),
                FULL_SNAPSHOT_ARTIFACT,
                None,
                &name,
                &checksum,
                size,
                sink,
                progress,
            )
            .await;
        if self.config.delete_snapshots {
            let deleted = self
                .grpc
                .delete_full_snapshot(pb::DeleteFullSnapshotRequest {
                    snapshot_name: name.clone(),
                })
                .await;
            if let Err(e) = deleted {
                let e = self.grpc_err("delete full snapshot", None, e);
                progress.warn(format!(
                    "full snapshot {name} left on the server: {}",
                    e.message()
                ));
            }
        }
        let total = result?;
        let facts = collections
            .iter()
            .zip(before)
            .map(|(c, (info, sample))| CollectionFacts {
                name: c.clone(),
                points_count: info.points_count,
                vectors: info.vectors,
                sparse_vectors: info.sparse_vectors,
                payload_schema: info.payload_schema,
                snapshot: name.clone(),
                checksum: String::new(),
                sample,
            })
            .collect();
        Ok((
            FullSnapshotFact {
                name,
                checksum,
                size: total,
            },
            facts,
        ))
    }

    /// Scroll every point of `c` (vectors and payloads) into a JSON-lines artifact whose
    /// first line is the collection's configuration.
    pub(crate) async fn export_collection(
        &self,
        c: &str,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<CollectionFacts> {
        let info = self.existing_info(c).await?;
        let sample = self.sample(c).await?;
        let task = format!("qdrant export {c}");
        progress.start(&task, None);
        let mut out = sink.create(&artifact_name(c), EXPORT_EXT).await?;
        let io = |e| Error::from_io(e, "write the export artifact");
        let mut header = json!({
            "collection": c,
            "vectors": info.vectors,
            "payload_schema": info.payload_schema,
        });
        if !info.sparse_vectors.is_null() {
            header["sparse_vectors"] = info.sparse_vectors.clone();
        }
        out.write_all(format!("{header}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut offset = None;
        let mut count = 0u64;
        loop {
            let (points, next) = self.scroll(c, BATCH, offset, true).await?;
            let mut lines = String::new();
            for p in points {
                lines.push_str(&p.to_string());
                lines.push('\n');
                count += 1;
            }
            out.write_all(lines.as_bytes()).await.map_err(io)?;
            progress.advance(&task, lines.len() as u64);
            offset = next;
            if offset.is_none() {
                break;
            }
        }
        out.finish().await?;
        progress.finish(&task);
        Ok(CollectionFacts {
            name: c.to_string(),
            points_count: count,
            vectors: info.vectors,
            sparse_vectors: info.sparse_vectors,
            payload_schema: info.payload_schema,
            snapshot: String::new(),
            checksum: String::new(),
            sample,
        })
    }
}

#[async_trait]
impl BackupSource for QdrantComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let qdrant_version = self.server_version().await?;
        let collections = if self.config.collections.is_empty() {
            self.list_collections().await?
        } else {
            self.config.collections.clone()
        };
        if collections.is_empty() {
            return Err(self.err(
                ErrorKind::NotFound,
                "the server has no collection to back up".into(),
                None,
            ));
        }
        let aliases: Vec<AliasFact> = self
            .list_aliases()
            .await?
            .into_iter()
            .filter(|a| collections.contains(&a.collection_name))
            .collect();
        let (full_snapshot, facts) = if self.config.full_snapshot && !self.config.logical {
            let (full, facts) = self.backup_full(&collections, sink, progress).await?;
            (Some(full), facts)
        } else {
            let mut facts = Vec::with_capacity(collections.len());
            for c in &collections {
                facts.push(if self.config.logical {
                    self.export_collection(c, sink, progress).await?
                } else {
                    self.backup_collection(c, sink, progress).await?
                });
            }
            (None, facts)
        };
        let facts = QdrantFacts {
            qdrant_version,
            logical: self.config.logical,
            aliases,
            collections: facts,
            full_snapshot,
        };
        Ok(SourceFacts {
            kind: if self.config.logical {
                BackupKind::Export
            } else {
                BackupKind::Snapshot
            },
            facts: serde_json::to_value(&facts)
                .map_err(|e| Error::unexpected(format!("facts: {e}")))?,
        })
    }
}
