//! # zdr-qdrant
//!
//! The zdr adapter for [Qdrant](https://qdrant.tech), over its REST API:
//!
//! - **backup**: one snapshot per collection (`POST /collections/{c}/snapshots?wait=true`),
//!   streamed from the server into the artifact pipeline while its SHA-256 is computed and
//!   compared with the checksum Qdrant reported (a mismatch is an
//!   [`ErrorKind::Integrity`] error and no manifest is written), then deleted on the server
//!   (configurable). Facts: Qdrant version, aliases, and per collection its points count,
//!   vector configuration, payload indexes and a sample of point ids with payload hashes.
//! - **restore** without a shared filesystem: the snapshot is streamed back with a multipart
//!   `POST /collections/{c}/snapshots/upload?priority=snapshot&checksum=...`, under the
//!   original name or [`RestoreTarget::name`]; aliases are recreated when restoring under
//!   the original name. A snapshot from a newer Qdrant (major.minor) than the target is
//!   refused before anything is uploaded.
//! - **logical export** ([`QdrantConfig::logical`]): every point scrolled with its vector
//!   and payload into a JSON-lines artifact (first line: vector config and payload indexes),
//!   imported by creating the collection and upserting in batches of [`BATCH`]: the path
//!   across Qdrant versions.
//! - **verification**: points count, vector configuration and the sampled points compared
//!   with the manifest.
//!
//! The API key is sent as the `api-key` header on every call and never appears in errors,
//! logs or `Debug` output.
//!
//! ```no_run
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> zdr_core::Result<()> {
//! use std::sync::Arc;
//! use zdr_core::{Component, Progress, RestoreTarget};
//! use zdr_qdrant::{QdrantComponent, QdrantConfig};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let qdrant = QdrantComponent::new(
//!     Component::new("qdrant")?,
//!     QdrantConfig {
//!         url: "http://127.0.0.1:6333".into(),
//!         api_key: std::env::var("QDRANT_API_KEY").ok(),
//!         ..QdrantConfig::default()
//!     },
//! )?;
//! let repo = Repository::new(open_tier("mem", &TierConfig::Memory)?, PipelineOptions::default());
//! let manifest = repo.backup(&qdrant, "daily", &Progress::none()).await?;
//!
//! // Restore the (single) collection beside the original and compare it with the manifest.
//! let target = RestoreTarget { name: Some("documents_check".into()), ..Default::default() };
//! repo.restore(&qdrant, &manifest, &target, &Progress::none()).await?;
//! let report = zdr_core::Verifier::verify(&qdrant, &manifest, &target).await?;
//! assert!(report.is_ok(), "{:?}", report.problems);
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error,
    ErrorKind, Manifest, Progress, RestoreOutcome, RestoreTarget, Restorer, Result, SourceFacts,
    Verifier, VerifyReport,
};

/// The artifact extension of a collection snapshot.
pub const SNAPSHOT_EXT: &str = "snapshot";

/// The artifact extension of a logical export.
pub const EXPORT_EXT: &str = "jsonl";

/// Points per scroll page and per upsert batch of a logical export.
pub const BATCH: usize = 256;

/// How many points are sampled (ids and payload hashes) at backup for verification.
pub const SAMPLE_POINTS: usize = 5;

/// How to reach a Qdrant server and what to back up.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QdrantConfig {
    /// The REST base URL, such as `http://qdrant:6333`.
    pub url: String,
    /// The API key sent as the `api-key` header on every call (never shown).
    pub api_key: Option<String>,
    /// The collections to back up; empty means every collection on the server.
    pub collections: Vec<String>,
    /// Delete each snapshot on the server once it is stored (default `true`).
    pub delete_snapshots: bool,
    /// Timeout to connect, in seconds (transfers themselves are not limited).
    pub connect_timeout_secs: u64,
    /// Logical export instead of snapshots: every point scrolled with its vector and
    /// payload into a JSON-lines artifact (portable across Qdrant versions).
    pub logical: bool,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:6333".into(),
            api_key: None,
            collections: Vec::new(),
            delete_snapshots: true,
            connect_timeout_secs: 10,
            logical: false,
        }
    }
}

impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collections", &self.collections)
            .field("delete_snapshots", &self.delete_snapshots)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("logical", &self.logical)
            .finish()
    }
}

/// One sampled point: its id and the SHA-256 of its payload (canonical JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointSample {
    /// The point id (an integer or a UUID string), as Qdrant returns it.
    pub id: Value,
    /// Lowercase hex SHA-256 of the payload serialized with sorted keys.
    pub payload_sha256: String,
}

/// What a backup recorded about one collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionFacts {
    /// The collection name (also the artifact name).
    pub name: String,
    /// Its points count when the snapshot was taken.
    pub points_count: u64,
    /// Its vector configuration (`config.params.vectors`).
    pub vectors: Value,
    /// Its payload indexes (`payload_schema`).
    pub payload_schema: Value,
    /// The snapshot name on the server.
    pub snapshot: String,
    /// Qdrant's SHA-256 of the snapshot, checked against the bytes received.
    pub checksum: String,
    /// A few points to compare after a restore.
    pub sample: Vec<PointSample>,
}

/// An alias and the collection it points to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasFact {
    /// The alias name.
    pub alias_name: String,
    /// The collection it points to.
    pub collection_name: String,
}

/// The manifest facts of a Qdrant backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QdrantFacts {
    /// The server version (`GET /`).
    pub qdrant_version: String,
    /// True for a logical export (JSON lines), false for snapshots.
    #[serde(default)]
    pub logical: bool,
    /// Aliases of the backed-up collections (snapshots leave them out).
    pub aliases: Vec<AliasFact>,
    /// One entry per collection.
    pub collections: Vec<CollectionFacts>,
}

impl QdrantFacts {
    /// Read the facts of a manifest written by this adapter.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when the manifest is not a Qdrant snapshot backup.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self> {
        serde_json::from_value(manifest.facts.clone()).map_err(|e| {
            Error::bad_input(format!(
                "backup {} has no Qdrant snapshot facts: {e}",
                manifest.id
            ))
            .with_context("component", &manifest.component)
        })
    }
}

/// Backs up, restores and verifies the collections of one Qdrant server.
pub struct QdrantComponent {
    component: Component,
    config: QdrantConfig,
    base: String,
    http: reqwest::Client,
}

impl fmt::Debug for QdrantComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantComponent")
            .field("component", &self.component)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `major.minor` of a version string such as `1.18.2` or `v1.18.2-dev`.
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn payload_hash(payload: &Value) -> String {
    let mut canonical = String::new();
    canonical_json(payload, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON with object keys sorted at every level, whatever serde_json's map order.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl QdrantComponent {
    /// A Qdrant component named `component` for the server in `config`.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when the URL is empty or the HTTP client cannot be built.
    pub fn new(component: Component, config: QdrantConfig) -> Result<Self> {
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "qdrant url {:?} must start with http:// or https://",
                config.url
            ))
            .with_context("component", &component));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .build()
            .map_err(|e| {
                Error::bad_input(format!("cannot build the HTTP client: {e}"))
                    .with_context("component", &component)
            })?;
        Ok(Self {
            component,
            config,
            base,
            http,
        })
    }

    /// The configuration (its `Debug` hides the API key).
    #[must_use]
    pub fn config(&self) -> &QdrantConfig {
        &self.config
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.config.api_key {
            req = req.header("api-key", key);
        }
        req
    }

    fn err(&self, kind: ErrorKind, message: String, collection: Option<&str>) -> Error {
        let mut e = Error::new(kind, message).with_context("component", &self.component);
        if let Some(c) = collection {
            e = e.with_context("collection", c);
        }
        e
    }

    /// Send `req` and return the response when its status is a success.
    async fn send(
        &self,
        req: RequestBuilder,
        what: &str,
        collection: Option<&str>,
    ) -> Result<Response> {
        let resp = req.send().await.map_err(|e| {
            // reqwest errors carry the URL, never the headers: the API key cannot leak.
            self.err(
                ErrorKind::Source,
                format!("{what}: request to qdrant at {} failed: {e}", self.base),
                collection,
            )
            .temporary()
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let detail: String = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
            .unwrap_or(body)
            .chars()
            .take(300)
            .collect();
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self
                .err(
                    ErrorKind::BadInput,
                    format!("{what}: qdrant refused the API key ({status})"),
                    collection,
                )
                .with_hint("check api_key (ZDR_COMPONENTS__<NAME>__API_KEY)"),
            StatusCode::NOT_FOUND => self.err(
                ErrorKind::NotFound,
                format!("{what}: not found ({detail})"),
                collection,
            ),
            s if s.is_server_error() => self
                .err(
                    ErrorKind::Source,
                    format!("{what}: qdrant answered {status}: {detail}"),
                    collection,
                )
                .temporary(),
            _ => self.err(
                ErrorKind::Source,
                format!("{what}: qdrant answered {status}: {detail}"),
                collection,
            ),
        })
    }

    /// Send `req` and return the `result` of Qdrant's JSON envelope.
    async fn call(
        &self,
        req: RequestBuilder,
        what: &str,
        collection: Option<&str>,
    ) -> Result<Value> {
        let resp = self.send(req, what, collection).await?;
        let mut v: Value = resp.json().await.map_err(|e| {
            self.err(
                ErrorKind::Source,
                format!("{what}: unreadable answer: {e}"),
                collection,
            )
        })?;
        Ok(v.get_mut("result").map(Value::take).unwrap_or(v))
    }

    /// The server's version (`GET /`).
    ///
    /// # Errors
    /// Source errors when the server is unreachable, BadInput when the key is refused.
    pub async fn server_version(&self) -> Result<String> {
        let v = self
            .call(
                self.request(Method::GET, "/"),
                "read the server version",
                None,
            )
            .await?;
        v["version"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(ErrorKind::Source, "GET / has no version".into(), None))
    }

    /// The names of every collection on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        let v = self
            .call(
                self.request(Method::GET, "/collections"),
                "list collections",
                None,
            )
            .await?;
        let mut names: Vec<String> = v["collections"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// Every alias on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_aliases(&self) -> Result<Vec<AliasFact>> {
        let v = self
            .call(self.request(Method::GET, "/aliases"), "list aliases", None)
            .await?;
        serde_json::from_value(v["aliases"].clone()).map_err(|e| {
            self.err(
                ErrorKind::Source,
                format!("unreadable alias list: {e}"),
                None,
            )
        })
    }

    /// `GET /collections/{c}`: `None` when the collection does not exist.
    async fn collection_info(&self, c: &str) -> Result<Option<Value>> {
        match self
            .call(
                self.request(Method::GET, &format!("/collections/{c}")),
                "read collection info",
                Some(c),
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn sample(&self, c: &str) -> Result<Vec<PointSample>> {
        let v = self
            .call(
                self.request(Method::POST, &format!("/collections/{c}/points/scroll"))
                    .json(&json!({"limit": SAMPLE_POINTS, "with_payload": true, "with_vector": false})),
                "sample points",
                Some(c),
            )
            .await?;
        Ok(v["points"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .map(|p| PointSample {
                        id: p["id"].clone(),
                        payload_sha256: payload_hash(&p["payload"]),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Snapshot one collection, stream it into `sink`, check Qdrant's checksum.
    async fn backup_collection(
        &self,
        c: &str,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<CollectionFacts> {
        let info = self.collection_info(c).await?.ok_or_else(|| {
            self.err(
                ErrorKind::NotFound,
                format!("collection {c} does not exist"),
                Some(c),
            )
        })?;
        let sample = self.sample(c).await?;
        let snap = self
            .call(
                self.request(
                    Method::POST,
                    &format!("/collections/{c}/snapshots?wait=true"),
                ),
                "create snapshot",
                Some(c),
            )
            .await?;
        let name = snap["name"].as_str().unwrap_or_default().to_string();
        let checksum = snap["checksum"].as_str().unwrap_or_default().to_lowercase();
        if name.is_empty() {
            return Err(self.err(
                ErrorKind::Source,
                "snapshot creation returned no name".into(),
                Some(c),
            ));
        }
        let result = self
            .download(c, &name, &checksum, snap["size"].as_u64(), sink, progress)
            .await;
        if self.config.delete_snapshots {
            let deleted = self
                .send(
                    self.request(
                        Method::DELETE,
                        &format!("/collections/{c}/snapshots/{name}?wait=true"),
                    ),
                    "delete snapshot",
                    Some(c),
                )
                .await;
            if let Err(e) = deleted {
                progress.warn(format!(
                    "snapshot {name} of {c} left on the server: {}",
                    e.message()
                ));
            }
        }
        result?;
        Ok(CollectionFacts {
            name: c.to_string(),
            points_count: info["points_count"].as_u64().unwrap_or(0),
            vectors: info["config"]["params"]["vectors"].clone(),
            payload_schema: info["payload_schema"].clone(),
            snapshot: name,
            checksum,
            sample,
        })
    }

    async fn download(
        &self,
        c: &str,
        name: &str,
        checksum: &str,
        size: Option<u64>,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<()> {
        let resp = self
            .send(
                self.request(Method::GET, &format!("/collections/{c}/snapshots/{name}")),
                "download snapshot",
                Some(c),
            )
            .await?;
        let task = format!("qdrant snapshot {c}");
        progress.start(&task, size.or(resp.content_length()));
        let mut out = sink.create(c, SNAPSHOT_EXT).await?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| {
            self.err(
                ErrorKind::Source,
                format!("download of snapshot {name} interrupted after {total} bytes: {e}"),
                Some(c),
            )
            .temporary()
        })? {
            hasher.update(&chunk);
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
                Some(c),
            ));
        }
        if let Some(size) = size.filter(|s| *s != total) {
            return Err(self.err(
                ErrorKind::Integrity,
                format!("snapshot {name} is {size} bytes on the server, {total} received"),
                Some(c),
            ));
        }
        out.finish().await?;
        progress.finish(&task);
        Ok(())
    }

    /// Stream a snapshot artifact back with the multipart upload.
    async fn upload_snapshot(
        &self,
        dest: &str,
        c: &CollectionFacts,
        raw_size: u64,
        reader: zdr_core::BoxRead,
    ) -> Result<()> {
        let part = reqwest::multipart::Part::stream_with_length(
            reqwest::Body::wrap_stream(ReaderStream::new(reader)),
            raw_size,
        )
        .file_name(format!("{}.snapshot", c.snapshot))
        .mime_str("application/octet-stream")
        .map_err(|e| Error::unexpected(format!("multipart: {e}")))?;
        let form = reqwest::multipart::Form::new().part("snapshot", part);
        let mut path = format!("/collections/{dest}/snapshots/upload?wait=true&priority=snapshot");
        if !c.checksum.is_empty() {
            path.push_str(&format!("&checksum={}", c.checksum));
        }
        self.call(
            self.request(Method::POST, &path).multipart(form),
            "upload snapshot",
            Some(dest),
        )
        .await?;
        Ok(())
    }

    /// Scroll every point of `c` (vectors and payloads) into a JSON-lines artifact whose
    /// first line is the collection's configuration.
    async fn export_collection(
        &self,
        c: &str,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<CollectionFacts> {
        let info = self.collection_info(c).await?.ok_or_else(|| {
            self.err(
                ErrorKind::NotFound,
                format!("collection {c} does not exist"),
                Some(c),
            )
        })?;
        let sample = self.sample(c).await?;
        let task = format!("qdrant export {c}");
        progress.start(&task, None);
        let mut out = sink.create(c, EXPORT_EXT).await?;
        let io = |e| Error::from_io(e, "write the export artifact");
        let header = json!({
            "collection": c,
            "vectors": info["config"]["params"]["vectors"],
            "payload_schema": info["payload_schema"],
        });
        out.write_all(format!("{header}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut offset = Value::Null;
        let mut count = 0u64;
        loop {
            let mut body = json!({"limit": BATCH, "with_payload": true, "with_vector": true});
            if !offset.is_null() {
                body["offset"] = offset.clone();
            }
            let page = self
                .call(
                    self.request(Method::POST, &format!("/collections/{c}/points/scroll"))
                        .json(&body),
                    "scroll points",
                    Some(c),
                )
                .await?;
            let mut lines = String::new();
            for p in page["points"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let point = json!({"id": p["id"], "vector": p["vector"], "payload": p["payload"]});
                lines.push_str(&point.to_string());
                lines.push('\n');
                count += 1;
            }
            out.write_all(lines.as_bytes()).await.map_err(io)?;
            progress.advance(&task, lines.len() as u64);
            offset = page["next_page_offset"].clone();
            if offset.is_null() {
                break;
            }
        }
        out.finish().await?;
        progress.finish(&task);
        Ok(CollectionFacts {
            name: c.to_string(),
            points_count: count,
            vectors: info["config"]["params"]["vectors"].clone(),
            payload_schema: info["payload_schema"].clone(),
            snapshot: String::new(),
            checksum: String::new(),
            sample,
        })
    }

    /// Create `dest` from an export's first line, then upsert its points in batches.
    async fn import_collection(
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
        if self.collection_info(dest).await?.is_some() {
            self.send(
                self.request(Method::DELETE, &format!("/collections/{dest}")),
                "drop the collection to overwrite",
                Some(dest),
            )
            .await?;
        }
        self.call(
            self.request(Method::PUT, &format!("/collections/{dest}"))
                .json(&json!({"vectors": header["vectors"]})),
            "create collection",
            Some(dest),
        )
        .await?;
        if let Some(schema) = header["payload_schema"].as_object() {
            for (field, info) in schema {
                let field_schema = if info["params"].is_object() {
                    info["params"].clone()
                } else {
                    info["data_type"].clone()
                };
                self.call(
                    self.request(Method::PUT, &format!("/collections/{dest}/index?wait=true"))
                        .json(&json!({"field_name": field, "field_schema": field_schema})),
                    "create payload index",
                    Some(dest),
                )
                .await?;
            }
        }
        let mut batch = Vec::with_capacity(BATCH);
        let mut line_no = 1u64;
        loop {
            let line = lines.next_line().await.map_err(read_err)?;
            if let Some(l) = &line {
                line_no += 1;
                progress.advance(task, l.len() as u64 + 1);
                batch.push(
                    serde_json::from_str::<Value>(l)
                        .map_err(|e| bad(format!("export line {line_no} unreadable: {e}")))?,
                );
            }
            if batch.len() >= BATCH || (line.is_none() && !batch.is_empty()) {
                self.call(
                    self.request(
                        Method::PUT,
                        &format!("/collections/{dest}/points?wait=true"),
                    )
                    .json(&json!({ "points": batch })),
                    "upsert points",
                    Some(dest),
                )
                .await?;
                batch.clear();
            }
            if line.is_none() {
                return Ok(());
            }
        }
    }

    async fn create_aliases(&self, aliases: &[AliasFact]) -> Result<()> {
        if aliases.is_empty() {
            return Ok(());
        }
        let current = self.list_aliases().await?;
        let mut actions: Vec<Value> = Vec::new();
        for a in aliases {
            match current.iter().find(|c| c.alias_name == a.alias_name) {
                Some(c) if c.collection_name == a.collection_name => continue,
                Some(_) => actions.push(json!({"delete_alias": {"alias_name": a.alias_name}})),
                None => {}
            }
            actions.push(json!({"create_alias": {"collection_name": a.collection_name, "alias_name": a.alias_name}}));
        }
        if actions.is_empty() {
            return Ok(());
        }
        self.call(
            self.request(Method::POST, "/collections/aliases")
                .json(&json!({ "actions": actions })),
            "recreate aliases",
            None,
        )
        .await?;
        Ok(())
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
        if let Some(bad) = collections.iter().find(|c| !safe_name(c)) {
            return Err(self.err(
                ErrorKind::Unsupported,
                format!(
                    "collection name {bad:?} cannot be an artifact name (use A-Z a-z 0-9 - _ .)"
                ),
                Some(bad),
            ));
        }
        let aliases: Vec<AliasFact> = self
            .list_aliases()
            .await?
            .into_iter()
            .filter(|a| collections.contains(&a.collection_name))
            .collect();
        let mut facts = Vec::with_capacity(collections.len());
        for c in &collections {
            facts.push(if self.config.logical {
                self.export_collection(c, sink, progress).await?
            } else {
                self.backup_collection(c, sink, progress).await?
            });
        }
        let facts = QdrantFacts {
            qdrant_version,
            logical: self.config.logical,
            aliases,
            collections: facts,
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
            let record = backup.artifact(&c.name).ok_or_else(|| {
                self.err(
                    ErrorKind::Integrity,
                    format!(
                        "backup {} has no artifact for collection {}",
                        backup.id, c.name
                    ),
                    Some(&c.name),
                )
            })?;
            let reader = from.open(record).await?;
            let task = format!("qdrant upload {dest}");
            progress.start(&task, Some(record.raw_size));
            if facts.logical {
                self.import_collection(&dest, reader, &task, progress)
                    .await?;
            } else {
                self.upload_snapshot(&dest, c, record.raw_size, reader)
                    .await?;
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
        outcome.target = restored.join(",");
        Ok(outcome)
    }
}

#[async_trait]
impl Verifier for QdrantComponent {
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = QdrantFacts::from_manifest(backup)?;
        let mut report = VerifyReport::default();
        for c in &facts.collections {
            let dest = match (&target.name, facts.collections.len()) {
                (Some(n), 1) => n.clone(),
                _ => c.name.clone(),
            };
            let Some(info) = self.collection_info(&dest).await? else {
                report
                    .problems
                    .push(format!("collection {dest} is missing"));
                continue;
            };
            report.checked += 1;
            let points = info["points_count"].as_u64().unwrap_or(0);
            if points != c.points_count {
                report.problems.push(format!(
                    "{dest}: {points} points, the backup recorded {}",
                    c.points_count
                ));
            }
            if info["config"]["params"]["vectors"] != c.vectors {
                report.problems.push(format!(
                    "{dest}: vector config {} differs from the backup's {}",
                    info["config"]["params"]["vectors"], c.vectors
                ));
            }
            if c.sample.is_empty() {
                continue;
            }
            let ids: Vec<&Value> = c.sample.iter().map(|s| &s.id).collect();
            let got = self
                .call(
                    self.request(Method::POST, &format!("/collections/{dest}/points"))
                        .json(&json!({"ids": ids, "with_payload": true, "with_vector": false})),
                    "read sampled points",
                    Some(&dest),
                )
                .await?;
            let empty = Vec::new();
            let got = got.as_array().unwrap_or(&empty);
            for s in &c.sample {
                report.checked += 1;
                match got.iter().find(|p| p["id"] == s.id) {
                    None => report
                        .problems
                        .push(format!("{dest}: point {} is missing", s.id)),
                    Some(p) if payload_hash(&p["payload"]) != s.payload_sha256 => report
                        .problems
                        .push(format!("{dest}: point {} has another payload", s.id)),
                    Some(_) => {}
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_minor() {
        assert_eq!(major_minor("1.18.2"), Some((1, 18)));
        assert_eq!(major_minor("v1.9.0-dev"), Some((1, 9)));
        assert!(major_minor("1.18.2") > major_minor("1.9.7"));
        assert_eq!(major_minor("garbage"), None);
    }

    #[test]
    fn payload_hash_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 2, "p": 3}], "x": null}}"#)
                .unwrap_or_default();
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, {"p": 3, "q": 2}]}, "b": 1}"#)
                .unwrap_or_default();
        assert_eq!(payload_hash(&a), payload_hash(&b));
        assert_ne!(payload_hash(&a), payload_hash(&json!({"b": 2})));
    }

    #[test]
    fn debug_hides_the_api_key() {
        let cfg = QdrantConfig {
            api_key: Some("s3cr3t".into()),
            ..QdrantConfig::default()
        };
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
    }
}
