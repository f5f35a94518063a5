//! Backup: collection snapshots, the full-storage snapshot and the logical export.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use qdrant_client::qdrant as pb;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error, ErrorKind, Progress,
    Result, SourceFacts,
};

use crate::client::artifact_name;
use crate::tarscan::TarScan;
use crate::{
    AliasFact, BATCH, CollectionFacts, EXPORT_EXT, FULL_SNAPSHOT_ARTIFACT, FullSnapshotFact,
    QdrantComponent, QdrantFacts,
};

/// How many times a full snapshot is taken when collections go away while it runs.
const FULL_SNAPSHOT_ATTEMPTS: u32 = 3;

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
            .rpc_long("create snapshot", Some(c), self.grpc.create_snapshot(c))
            .await?
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
                None,
            )
            .await;
        // Also after a failed download: the snapshot is never left behind silently.
        if self.config.delete_snapshots
            && let Err(e) = self.delete_snapshot_file(c, &name).await
        {
            progress.warn(format!(
                "snapshot {name} of {c} left on the server: {}",
                e.message()
            ));
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
    ///
    /// Qdrant makes it from one snapshot per collection, which it keeps in each collection's
    /// snapshots, also when it fails; those made during this call are deleted (with
    /// [`QdrantConfig::delete_snapshots`](crate::QdrantConfig::delete_snapshots)). A collection
    /// dropped while the snapshot runs fails it: it is taken again with the collections then
    /// on the server (three attempts at most).
    pub(crate) async fn backup_full(
        &self,
        collections: &[String],
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<(FullSnapshotFact, Vec<CollectionFacts>)> {
        let mut collections = collections.to_vec();
        let mut attempt = 1;
        let (snap, before, known) = loop {
            let mut before = Vec::with_capacity(collections.len());
            for c in &collections {
                let taken = match self.collection_info(c).await? {
                    Some(info) => self.sample(c).await.map(|sample| Some((info, sample))),
                    None => Ok(None),
                };
                match taken {
                    Ok(Some((info, sample))) => before.push((c.clone(), info, sample)),
                    // Every collection was asked for, and this one went since the listing.
                    Ok(None) if self.config.collections.is_empty() => {}
                    Err(e)
                        if self.config.collections.is_empty()
                            && e.kind() == ErrorKind::NotFound => {}
                    Ok(None) => {
                        return Err(self.err(
                            ErrorKind::NotFound,
                            format!("collection {c} does not exist"),
                            Some(c),
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            let known = self.collection_snapshots().await?;
            let created = self
                .rpc_long(
                    "create full snapshot",
                    None,
                    self.grpc.create_full_snapshot(),
                )
                .await;
            match created {
                Err(e) => {
                    // Which collection snapshots it made is unknown: every one that appeared
                    // since the listing goes.
                    if self.config.delete_snapshots {
                        self.remove_new_collection_snapshots(&known, progress).await;
                    }
                    if e.kind() != ErrorKind::NotFound {
                        return Err(e);
                    }
                    if attempt >= FULL_SNAPSHOT_ATTEMPTS {
                        return Err(self
                            .err(
                                ErrorKind::Source,
                                format!(
                                    "the full snapshot failed {attempt} times because collections went away while it ran; last: {}",
                                    e.message()
                                ),
                                None,
                            )
                            .temporary()
                            .with_hint("collections are being dropped right now; run the backup again later"));
                    }
                    attempt += 1;
                    progress.warn(format!(
                        "the full snapshot failed because a collection went away while it ran ({}); taking it again ({attempt} of {FULL_SNAPSHOT_ATTEMPTS})",
                        e.message()
                    ));
                    if self.config.collections.is_empty() {
                        collections = self.list_collections().await?;
                    }
                }
                Ok(reply) => {
                    break (
                        reply.snapshot_description.unwrap_or_default(),
                        before,
                        known,
                    );
                }
            }
        };
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
        let mut scan = TarScan::default();
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
                Some(&mut scan),
            )
            .await;
        if self.config.delete_snapshots {
            // The archive names the collection snapshots it was made of: exactly those go.
            // Without that list (a download cut short), every one new since the listing.
            match scan.collection_snapshots() {
                Some(made) => {
                    for (c, snapshot) in made {
                        match self.delete_snapshot_file(&c, &snapshot).await {
                            Err(e) if e.kind() != ErrorKind::NotFound => progress.warn(format!(
                                "snapshot {snapshot} of {c} (made for the full snapshot) left on the server: {}",
                                e.message()
                            )),
                            _ => {}
                        }
                    }
                }
                None => self.remove_new_collection_snapshots(&known, progress).await,
            }
        }
        if self.config.delete_snapshots {
            let deleted = self
                .rpc(
                    "delete full snapshot",
                    None,
                    self.grpc
                        .delete_full_snapshot(pb::DeleteFullSnapshotRequest {
                            snapshot_name: name.clone(),
                        }),
                )
                .await;
            if let Err(e) = deleted {
                progress.warn(format!(
                    "full snapshot {name} left on the server: {}",
                    e.message()
                ));
            }
        }
        let total = result?;
        let facts = before
            .into_iter()
            .map(|(c, info, sample)| CollectionFacts {
                name: c,
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

    /// The snapshot names of every collection on the server.
    async fn collection_snapshots(&self) -> Result<HashMap<String, HashSet<String>>> {
        let mut known = HashMap::new();
        for c in self.list_collections().await? {
            match self.list_snapshots(Some(&c)).await {
                Ok(list) => {
                    known.insert(c, list.into_iter().map(|(n, _, _)| n).collect());
                }
                // Dropped since it was listed.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(known)
    }

    /// Delete the collection snapshots that are not in `known` (those a full snapshot made);
    /// each one that stays is reported.
    async fn remove_new_collection_snapshots(
        &self,
        known: &HashMap<String, HashSet<String>>,
        progress: &Progress,
    ) {
        let now = match self.collection_snapshots().await {
            Ok(now) => now,
            Err(e) => {
                progress.warn(format!(
                    "the collection snapshots the full snapshot made may be left on the server: {}",
                    e.message()
                ));
                return;
            }
        };
        for (c, names) in now {
            for name in names {
                if known.get(&c).is_some_and(|k| k.contains(&name)) {
                    continue;
                }
                match self.delete_snapshot_file(&c, &name).await {
                    Err(e) if e.kind() != ErrorKind::NotFound => progress.warn(format!(
                        "snapshot {name} of {c} (made for the full snapshot) left on the server: {}",
                        e.message()
                    )),
                    _ => {}
                }
            }
        }
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
                let taken = if self.config.logical {
                    self.export_collection(c, sink, progress).await
                } else {
                    self.backup_collection(c, sink, progress).await
                };
                match taken {
                    Ok(f) => facts.push(f),
                    // Every collection was asked for and this one was dropped since the
                    // listing: it is not part of the backup.
                    Err(e)
                        if self.config.collections.is_empty()
                            && e.kind() == ErrorKind::NotFound
                            && self.collection_info(c).await?.is_none() =>
                    {
                        progress.warn(format!(
                            "collection {c} was dropped while the backup ran: not backed up"
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            if facts.is_empty() {
                return Err(self.err(
                    ErrorKind::NotFound,
                    "every collection was dropped while the backup ran".into(),
                    None,
                ));
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
