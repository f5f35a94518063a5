//! Snapshot transfers over HTTP: streamed download, multipart upload, and recover from a
//! URL the server fetches itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;
use zdr_core::{ArtifactSink, Error, ErrorKind, Progress, Result};

use crate::tarscan::TarScan;
use crate::{CollectionFacts, QdrantComponent, SNAPSHOT_EXT};

impl QdrantComponent {
    /// Stream `GET {path}` into the artifact `artifact`, checking Qdrant's checksum and
    /// size; returns the bytes received.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn download(
        &self,
        path: &str,
        artifact: &str,
        c: Option<&str>,
        name: &str,
        checksum: &str,
        size: Option<u64>,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
        mut scan: Option<&mut TarScan>,
    ) -> Result<u64> {
        let resp = self
            .send(self.request(Method::GET, path), "download snapshot", c)
            .await?;
        let task = format!("qdrant snapshot {artifact}");
        progress.start(&task, size.or(resp.content_length()));
        let mut out = sink.create(artifact, SNAPSHOT_EXT).await?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut stream = resp.bytes_stream();
        let stall = self.stall();
        loop {
            let next = tokio::time::timeout(stall, stream.try_next())
                .await
                .map_err(|_| {
                    self.stalled(
                        &format!("download of snapshot {name} after {total} bytes"),
                        stall,
                        c,
                    )
                })?;
            let Some(chunk) = next.map_err(|e| {
                self.err(
                    ErrorKind::Source,
                    format!("download of snapshot {name} interrupted after {total} bytes: {e}"),
                    c,
                )
                .temporary()
            })?
            else {
                break;
            };
            hasher.update(&chunk);
            if let Some(scan) = scan.as_deref_mut() {
                scan.feed(&chunk);
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::from_io(e, "write the snapshot artifact"))?;
            total += chunk.len() as u64;
            progress.advance(&task, chunk.len() as u64);
        }
        let got = hex::encode(hasher.finalize());
        if !checksum.is_empty() && got != checksum {
            // `out` is dropped without finish: the artifact is abandoned.
            return Err(self.err(
                ErrorKind::Integrity,
                format!(
                    "snapshot {name} received with SHA-256 {got}, qdrant reported {checksum} ({total} bytes)"
                ),
                c,
            ));
        }
        if let Some(size) = size.filter(|s| *s != total) {
            return Err(self.err(
                ErrorKind::Integrity,
                format!("snapshot {name} is {size} bytes on the server, {total} received"),
                c,
            ));
        }
        out.finish().await?;
        progress.finish(&task);
        Ok(total)
    }

    /// Stream a snapshot artifact back with the multipart upload.
    pub(crate) async fn upload_snapshot(
        &self,
        dest: &str,
        c: &CollectionFacts,
        raw_size: u64,
        reader: zdr_core::BoxRead,
    ) -> Result<()> {
        let watch = Arc::new(BodyWatch::default());
        let body = watched(ReaderStream::new(reader), Arc::clone(&watch));
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(body),
            raw_size,
        )
        .file_name(upload_file_name(&c.snapshot))
        .mime_str("application/octet-stream")
        .map_err(|e| Error::unexpected(format!("multipart: {e}")))?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);
        let mut path = format!("/collections/{dest}/snapshots/upload?wait=true&priority=snapshot");
        if !c.checksum.is_empty() {
            path.push_str(&format!("&checksum={}", c.checksum));
        }
        let upload = self.call(
            self.request(Method::POST, &path).multipart(form),
            "upload snapshot",
            Some(dest),
        );
        // The server stops reading when it stalls: the body is then no longer polled.
        let stall = self.stall();
        let watchdog = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250).min(stall)).await;
                if watch.done.load(Ordering::Relaxed) {
                    // The body is sent; the server's restore is bounded by `call`'s limit, and
                    // by the server answering its health check meanwhile.
                    return self
                        .stopped_answering(
                            &format!("restore of snapshot {}", c.snapshot),
                            Some(dest),
                        )
                        .await;
                }
                let idle = Duration::from_millis(
                    watch
                        .started
                        .elapsed()
                        .as_millis()
                        .saturating_sub(u128::from(watch.last_ms.load(Ordering::Relaxed)))
                        .try_into()
                        .unwrap_or(u64::MAX),
                );
                if idle >= stall {
                    return self.stalled(
                        &format!(
                            "upload of snapshot {} after {} bytes",
                            c.snapshot,
                            watch.bytes.load(Ordering::Relaxed)
                        ),
                        stall,
                        Some(dest),
                    );
                }
            }
        };
        tokio::select! {
            r = upload => r.map(|_| ()),
            e = watchdog => Err(e),
        }
    }

    /// Delete one snapshot file of collection `c` on the server; NotFound when it is gone.
    pub(crate) async fn delete_snapshot_file(&self, c: &str, name: &str) -> Result<()> {
        self.rpc(
            "delete snapshot",
            Some(c),
            self.grpc
                .delete_snapshot(qdrant_client::qdrant::DeleteSnapshotRequest {
                    collection_name: c.to_owned(),
                    snapshot_name: name.to_owned(),
                }),
        )
        .await
        .map(|_| ())
    }

    /// Delete the file an upload left in the collection's snapshots (Qdrant keeps uploaded
    /// snapshots until deleted). A failure is returned for the caller to report.
    pub(crate) async fn delete_uploaded_snapshot(&self, dest: &str, snapshot: &str) -> Result<()> {
        self.delete_snapshot_file(dest, &upload_file_name(snapshot))
            .await
    }

    /// Have the server restore collection `dest` from a snapshot it fetches itself at
    /// `location` (`http(s)://` or `file://` under its snapshots directory), with
    /// `priority=snapshot`; `checksum` (SHA-256, hex) is checked by the server before it
    /// restores. The API key goes along in the request only when `location` is on this
    /// component's own REST server, or with [`QdrantConfig::recover_with_api_key`](crate::QdrantConfig::recover_with_api_key).
    ///
    /// # Errors
    /// BadInput for a refused key, NotFound, or Source errors with the server's message
    /// (such as a checksum mismatch or an unreachable location).
    pub async fn recover_snapshot(
        &self,
        dest: &str,
        location: &str,
        checksum: Option<&str>,
    ) -> Result<()> {
        let mut body = json!({"location": location, "priority": "snapshot"});
        if let Some(sum) = checksum.filter(|s| !s.is_empty()) {
            body["checksum"] = json!(sum);
        }
        if let Some(key) = &self.config.api_key
            && (self.config.recover_with_api_key
                || location.starts_with(&format!("{}/", self.base)))
        {
            body["api_key"] = json!(key.expose());
        }
        let recover = self.call(
            self.request(
                Method::PUT,
                &format!("/collections/{dest}/snapshots/recover?wait=true"),
            )
            .json(&body),
            "recover snapshot from a URL",
            Some(dest),
        );
        tokio::select! {
            r = recover => r.map(|_| ()),
            e = self.stopped_answering("recover snapshot from a URL", Some(dest)) => Err(e),
        }
    }
}

/// The file name of an upload: the snapshot's own name, with one `.snapshot` extension.
fn upload_file_name(snapshot: &str) -> String {
    if snapshot.ends_with(".snapshot") {
        snapshot.to_owned()
    } else {
        format!("{snapshot}.snapshot")
    }
}

/// How far an upload body got: bytes handed to the connection, and when the last were.
struct BodyWatch {
    started: Instant,
    last_ms: AtomicU64,
    bytes: AtomicU64,
    done: AtomicBool,
}

impl Default for BodyWatch {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }
}

/// `inner`, noting in `watch` each chunk taken and the end.
fn watched<S, T, E>(
    inner: S,
    watch: Arc<BodyWatch>,
) -> impl Stream<Item = std::result::Result<T, E>>
where
    S: Stream<Item = std::result::Result<T, E>> + Unpin,
    T: AsRef<[u8]>,
{
    futures::stream::unfold((inner, watch), |(mut inner, watch)| async move {
        let item = inner.next().await;
        match &item {
            Some(Ok(chunk)) => {
                watch
                    .bytes
                    .fetch_add(chunk.as_ref().len() as u64, Ordering::Relaxed);
                let ms = u64::try_from(watch.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                watch.last_ms.store(ms, Ordering::Relaxed);
            }
            Some(Err(_)) => {}
            None => watch.done.store(true, Ordering::Relaxed),
        }
        item.map(|i| (i, (inner, watch)))
    })
}
