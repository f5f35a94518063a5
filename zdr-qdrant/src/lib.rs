//! # zdr-qdrant
//!
//! The zdr adapter for [Qdrant](https://qdrant.tech). The control plane goes over gRPC with
//! [`qdrant_client`] (server version, collection info and exact counts, aliases, snapshot
//! create/list/delete for collections and for the whole storage, scroll, upsert, collection
//! creation); the transfers go over plain HTTP with `reqwest`, streamed (snapshot download,
//! multipart upload, recover from a URL), since gRPC has no snapshot transfer:
//!
//! - **backup**: one snapshot per collection, streamed from the server's REST port into the
//!   artifact pipeline while its SHA-256 is computed and compared with the checksum Qdrant
//!   reported (a mismatch is an [`ErrorKind::Integrity`] error and no manifest is written),
//!   then deleted on the server (configurable). Facts: Qdrant version, aliases, and per
//!   collection its exact points count, vector configuration, payload indexes and a sample of
//!   point ids with payload hashes. With [`QdrantConfig::full_snapshot`], one full-storage
//!   snapshot (`/snapshots`: every collection and alias in one artifact, `storage.snapshot`).
//! - **restore** without a shared filesystem: the snapshot is streamed back with a multipart
//!   `POST /collections/{c}/snapshots/upload?priority=snapshot&checksum=...`, under the
//!   original name or [`RestoreTarget::name`]; or, with [`QdrantConfig::recover_from`], the
//!   server fetches it itself from a URL it can reach
//!   (`PUT /collections/{c}/snapshots/recover` with `location`, `priority`, `checksum`).
//!   Aliases are recreated when restoring under the original name. A snapshot from a newer
//!   Qdrant (major.minor) than the target is refused before anything is uploaded. A
//!   full-storage snapshot cannot be restored through the API (Qdrant loads it at start with
//!   `--storage-snapshot`): its restore is refused with that hint.
//! - **logical export** ([`QdrantConfig::logical`]): every point scrolled with its vector
//!   and payload into a JSON-lines artifact (first line: vector config and payload indexes),
//!   imported by creating the collection and upserting in batches of [`BATCH`]: the path
//!   across Qdrant versions.
//! - **verification**: exact points count, vector configuration and the sampled points
//!   compared with the manifest.
//!
//! The API key is sent as `api-key` (gRPC metadata and HTTP header) on every call and never
//! appears in errors, logs or `Debug` output.
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
//!         // gRPC defaults to the same host on 6334 when the REST port is 6333.
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

mod convert;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use qdrant_client::QdrantError;
use qdrant_client::qdrant as pb;
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

/// The artifact name of a full-storage snapshot ([`QdrantConfig::full_snapshot`]).
pub const FULL_SNAPSHOT_ARTIFACT: &str = "storage";

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
    /// The REST base URL, such as `http://qdrant:6333` (snapshot transfers).
    pub url: String,
    /// The gRPC URL, such as `http://qdrant:6334` (every other call). Default: the REST
    /// URL's host with port 6334 when the REST port is 6333 or not given; any other REST
    /// port needs this set.
    pub grpc_url: Option<String>,
    /// The API key sent as the `api-key` header on every call (never shown).
    pub api_key: Option<String>,
    /// The collections to back up; empty means every collection on the server.
    pub collections: Vec<String>,
    /// Delete each snapshot on the server once it is stored (default `true`).
    pub delete_snapshots: bool,
    /// Timeout to connect, in seconds (transfers themselves are not limited).
    pub connect_timeout_secs: u64,
    /// Timeout of one gRPC call, in seconds (snapshot creation of a large collection is one
    /// call: default one hour).
    pub timeout_secs: u64,
    /// Back up the whole storage as one full snapshot (every collection and alias) instead
    /// of one snapshot per collection. Restoring it is a server start with
    /// `--storage-snapshot`, not an API call.
    pub full_snapshot: bool,
    /// Restore by having the server fetch each snapshot itself from this URL
    /// (`PUT /collections/{c}/snapshots/recover`) instead of uploading it. `{collection}`
    /// and `{snapshot}` are replaced by the backed-up collection and the snapshot name, such
    /// as `http://files.internal/qdrant/{snapshot}` or
    /// `file:///qdrant/snapshots/{collection}/{snapshot}`. The checksum recorded at backup is
    /// passed along for the server to check. The API key is sent in the request (for the
    /// server to present when it fetches) only when the URL is on the configured REST server
    /// itself, or with [`QdrantConfig::recover_with_api_key`].
    pub recover_from: Option<String>,
    /// Send the API key along with a recover even when the URL is not the configured REST
    /// URL (the same server under another address, such as its container name). Leave it off
    /// for any other host: the server would present the key there.
    pub recover_with_api_key: bool,
    /// Logical export instead of snapshots: every point scrolled with its vector and
    /// payload into a JSON-lines artifact (portable across Qdrant versions).
    pub logical: bool,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:6333".into(),
            grpc_url: None,
            api_key: None,
            collections: Vec::new(),
            delete_snapshots: true,
            connect_timeout_secs: 10,
            timeout_secs: 3600,
            full_snapshot: false,
            recover_from: None,
            recover_with_api_key: false,
            logical: false,
        }
    }
}

impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("grpc_url", &self.grpc_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collections", &self.collections)
            .field("delete_snapshots", &self.delete_snapshots)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("full_snapshot", &self.full_snapshot)
            .field("recover_from", &self.recover_from)
            .field("recover_with_api_key", &self.recover_with_api_key)
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
    /// Its exact points count when the snapshot was taken.
    pub points_count: u64,
    /// Its vector configuration (`config.params.vectors`, REST's JSON shape).
    pub vectors: Value,
    /// Its sparse vectors (`config.params.sparse_vectors`), `null` when none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub sparse_vectors: Value,
    /// Its payload indexes (`payload_schema`).
    pub payload_schema: Value,
    /// The snapshot name on the server (the full snapshot's, for a full-storage backup).
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

/// The full-storage snapshot of a backup taken with [`QdrantConfig::full_snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullSnapshotFact {
    /// The snapshot name on the server.
    pub name: String,
    /// Qdrant's SHA-256 of the snapshot, checked against the bytes received.
    pub checksum: String,
    /// Its size in bytes.
    pub size: u64,
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
    /// The full-storage snapshot, when the backup is one (artifact
    /// [`FULL_SNAPSHOT_ARTIFACT`]); the collections then describe what it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_snapshot: Option<FullSnapshotFact>,
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
    grpc_url: String,
    http: reqwest::Client,
    grpc: qdrant_client::Qdrant,
}

impl fmt::Debug for QdrantComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantComponent")
            .field("component", &self.component)
            .field("config", &self.config)
            .field("grpc_url", &self.grpc_url)
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

/// The default gRPC URL for a REST base URL: the same host, port 6334 when the REST port
/// is 6333 or not given; `None` for any other port.
fn default_grpc_url(base: &str) -> Option<String> {
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    match port {
        None | Some("6333") => Some(format!("{scheme}://{host}:6334")),
        Some(_) => None,
    }
}

/// Information about one collection, in REST's JSON shapes.
struct Info {
    points_count: u64,
    vectors: Value,
    sparse_vectors: Value,
    payload_schema: Value,
}

fn enabled_payload(on: bool) -> Option<pb::WithPayloadSelector> {
    Some(on.into())
}

fn enabled_vectors(on: bool) -> Option<pb::WithVectorsSelector> {
    Some(on.into())
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
    /// [`ErrorKind::BadInput`] when a URL is malformed, the gRPC URL cannot be derived from
    /// the REST URL (set [`QdrantConfig::grpc_url`]), the API key is not printable ASCII, or
    /// a client cannot be built.
    pub fn new(component: Component, config: QdrantConfig) -> Result<Self> {
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "qdrant url {:?} must start with http:// or https://",
                config.url
            ))
            .with_context("component", &component));
        }
        let grpc_url = match &config.grpc_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => default_grpc_url(&base).ok_or_else(|| {
                Error::bad_input(format!(
                    "cannot tell the gRPC port of qdrant at {base} (REST is not on 6333)"
                ))
                .with_context("component", &component)
                .with_hint("set grpc_url, such as http://qdrant:6334")
            })?,
        };
        if !(grpc_url.starts_with("http://") || grpc_url.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "qdrant grpc_url {grpc_url:?} must start with http:// or https://"
            ))
            .with_context("component", &component));
        }
        if let Some(key) = &config.api_key
            && !key.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            // Checked here: qdrant-client would put a malformed key into its error message.
            return Err(Error::bad_input(
                "the qdrant API key has characters other than printable ASCII",
            )
            .with_context("component", &component));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .build()
            .map_err(|e| {
                Error::bad_input(format!("cannot build the HTTP client: {e}"))
                    .with_context("component", &component)
            })?;
        // No compatibility check: it prints, and the restore checks versions itself.
        let grpc = qdrant_client::Qdrant::from_url(&grpc_url)
            .api_key(config.api_key.clone())
            .skip_compatibility_check()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| {
                Error::bad_input(format!(
                    "cannot build the qdrant gRPC client for {grpc_url}: {e}"
                ))
                .with_context("component", &component)
            })?;
        Ok(Self {
            component,
            config,
            base,
            grpc_url,
            http,
            grpc,
        })
    }

    /// The configuration (its `Debug` hides the API key).
    #[must_use]
    pub fn config(&self) -> &QdrantConfig {
        &self.config
    }

    /// The gRPC URL in use (configured or derived from the REST URL).
    #[must_use]
    pub fn grpc_url(&self) -> &str {
        &self.grpc_url
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

    /// A message from the server with the API key masked, should it ever echo it.
    fn redact(&self, msg: &str) -> String {
        let msg: String = msg.chars().take(300).collect();
        match &self.config.api_key {
            Some(k) if !k.is_empty() => msg.replace(k.as_str(), "***"),
            _ => msg,
        }
    }

    /// A gRPC failure as a zdr error: refused key → BadInput, missing → NotFound,
    /// unreachable or overloaded → temporary Source error.
    fn grpc_err(&self, what: &str, collection: Option<&str>, e: QdrantError) -> Error {
        let status = match e {
            QdrantError::ResponseError { status }
            | QdrantError::ResourceExhaustedError { status, .. } => status,
            other => {
                return self.err(
                    ErrorKind::Source,
                    format!("{what}: {}", self.redact(&other.to_string())),
                    collection,
                );
            }
        };
        let detail = self.redact(status.message());
        use tonic::Code;
        // qdrant-client reports a failed connection as `Internal: Failed to connect to ...`.
        let code = match status.code() {
            Code::Internal if status.message().starts_with("Failed to connect") => {
                Code::Unavailable
            }
            code => code,
        };
        match code {
            Code::Unauthenticated | Code::PermissionDenied => self
                .err(
                    ErrorKind::BadInput,
                    format!("{what}: qdrant refused the API key (gRPC {code:?})"),
                    collection,
                )
                .with_hint("check api_key (ZDR_COMPONENTS__<NAME>__API_KEY)"),
            Code::NotFound => self.err(
                ErrorKind::NotFound,
                format!("{what}: not found ({detail})"),
                collection,
            ),
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted => self
                .err(
                    ErrorKind::Source,
                    format!(
                        "{what}: qdrant gRPC at {} unavailable ({code:?}): {detail}",
                        self.grpc_url
                    ),
                    collection,
                )
                .temporary(),
            Code::Unimplemented => self.err(
                ErrorKind::Unsupported,
                format!("{what}: the server does not implement this gRPC call: {detail}"),
                collection,
            ),
            code => self.err(
                ErrorKind::Source,
                format!("{what}: qdrant answered gRPC {code:?}: {detail}"),
                collection,
            ),
        }
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
        let detail = self.redact(
            &serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
                .unwrap_or(body),
        );
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

    /// The server's version (gRPC health check).
    ///
    /// # Errors
    /// Source errors when the server is unreachable, BadInput when the key is refused.
    pub async fn server_version(&self) -> Result<String> {
        let reply = self
            .grpc
            .health_check()
            .await
            .map_err(|e| self.grpc_err("read the server version", None, e))?;
        if reply.version.is_empty() {
            return Err(self.err(
                ErrorKind::Source,
                "the health check has no version".into(),
                None,
            ));
        }
        Ok(reply.version)
    }

    /// The names of every collection on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        let v = self
            .grpc
            .list_collections()
            .await
            .map_err(|e| self.grpc_err("list collections", None, e))?;
        let mut names: Vec<String> = v.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    /// Every alias on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_aliases(&self) -> Result<Vec<AliasFact>> {
        let v = self
            .grpc
            .list_aliases()
            .await
            .map_err(|e| self.grpc_err("list aliases", None, e))?;
        Ok(v.aliases
            .into_iter()
            .map(|a| AliasFact {
                alias_name: a.alias_name,
                collection_name: a.collection_name,
            })
            .collect())
    }

    /// The snapshots held on the server: of `collection`, or the full-storage ones for
    /// `None`, as (name, size, checksum).
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`]; NotFound for an unknown collection.
    pub async fn list_snapshots(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<(String, u64, Option<String>)>> {
        let list = match collection {
            Some(c) => self.grpc.list_snapshots(c).await,
            None => self.grpc.list_full_snapshots().await,
        }
        .map_err(|e| self.grpc_err("list snapshots", collection, e))?;
        Ok(list
            .snapshot_descriptions
            .into_iter()
            .map(|d| (d.name, u64::try_from(d.size).unwrap_or(0), d.checksum))
            .collect())
    }

    /// Collection info and exact count: `None` when the collection does not exist.
    async fn collection_info(&self, c: &str) -> Result<Option<Info>> {
        let info = match self.grpc.collection_info(c).await {
            Ok(r) => r.result,
            Err(e) => {
                let e = self.grpc_err("read collection info", Some(c), e);
                return if e.kind() == ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(e)
                };
            }
        };
        let Some(info) = info else {
            return Err(self.err(
                ErrorKind::Source,
                "collection info answer has no result".into(),
                Some(c),
            ));
        };
        let params = info.config.as_ref().and_then(|c| c.params.as_ref());
        let count = self
            .grpc
            .count(pb::CountPoints {
                collection_name: c.to_string(),
                exact: Some(true),
                ..Default::default()
            })
            .await
            .map_err(|e| self.grpc_err("count points", Some(c), e))?;
        Ok(Some(Info {
            points_count: count.result.map_or(0, |r| r.count),
            vectors: convert::vectors_config_to_json(
                params.and_then(|p| p.vectors_config.as_ref()),
            ),
            sparse_vectors: convert::sparse_config_to_json(
                params.and_then(|p| p.sparse_vectors_config.as_ref()),
            ),
            payload_schema: convert::payload_schema_to_json(&info.payload_schema),
        }))
    }

    async fn existing_info(&self, c: &str) -> Result<Info> {
        self.collection_info(c).await?.ok_or_else(|| {
            self.err(
                ErrorKind::NotFound,
                format!("collection {c} does not exist"),
                Some(c),
            )
        })
    }

    /// One page of points (gRPC scroll): the points as REST JSON and the next offset.
    async fn scroll(
        &self,
        c: &str,
        limit: usize,
        offset: Option<pb::PointId>,
        with_vectors: bool,
    ) -> Result<(Vec<Value>, Option<pb::PointId>)> {
        let page = self
            .grpc
            .scroll(pb::ScrollPoints {
                collection_name: c.to_string(),
                offset,
                limit: u32::try_from(limit).ok(),
                with_payload: enabled_payload(true),
                with_vectors: enabled_vectors(with_vectors),
                ..Default::default()
            })
            .await
            .map_err(|e| self.grpc_err("scroll points", Some(c), e))?;
        let points = page
            .result
            .into_iter()
            .map(|p| {
                let mut v = json!({
                    "id": convert::id_to_json(p.id.as_ref()),
                    "payload": convert::payload_to_json(&p.payload),
                });
                if with_vectors {
                    v["vector"] = convert::vectors_to_json(p.vectors);
                }
                v
            })
            .collect();
        Ok((points, page.next_page_offset))
    }

    async fn sample(&self, c: &str) -> Result<Vec<PointSample>> {
        let (points, _) = self.scroll(c, SAMPLE_POINTS, None, false).await?;
        Ok(points
            .iter()
            .map(|p| PointSample {
                id: p["id"].clone(),
                payload_sha256: payload_hash(&p["payload"]),
            })
            .collect())
    }

    /// Snapshot one collection, stream it into `sink`, check Qdrant's checksum.
    async fn backup_collection(
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
                c,
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
    async fn backup_full(
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

    /// Stream `GET {path}` into the artifact `artifact`, checking Qdrant's checksum and
    /// size; returns the bytes received.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        path: &str,
        artifact: &str,
        c: Option<&str>,
        name: &str,
        checksum: &str,
        size: Option<u64>,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
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
        while let Some(chunk) = stream.try_next().await.map_err(|e| {
            self.err(
                ErrorKind::Source,
                format!("download of snapshot {name} interrupted after {total} bytes: {e}"),
                c,
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

    /// Have the server restore collection `dest` from a snapshot it fetches itself at
    /// `location` (`http(s)://` or `file://` under its snapshots directory), with
    /// `priority=snapshot`; `checksum` (SHA-256, hex) is checked by the server before it
    /// restores. The API key goes along in the request only when `location` is on this
    /// component's own REST server, or with [`QdrantConfig::recover_with_api_key`].
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
            body["api_key"] = json!(key);
        }
        self.call(
            self.request(
                Method::PUT,
                &format!("/collections/{dest}/snapshots/recover?wait=true"),
            )
            .json(&body),
            "recover snapshot from a URL",
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
        let info = self.existing_info(c).await?;
        let sample = self.sample(c).await?;
        let task = format!("qdrant export {c}");
        progress.start(&task, None);
        let mut out = sink.create(c, EXPORT_EXT).await?;
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

    async fn create_aliases(&self, aliases: &[AliasFact]) -> Result<()> {
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

    /// Read the points `ids` of `c` (payloads only) as REST JSON.
    async fn get_points(&self, c: &str, ids: &[Value]) -> Result<Vec<Value>> {
        let got = self
            .grpc
            .get_points(pb::GetPoints {
                collection_name: c.to_string(),
                ids: ids.iter().filter_map(convert::json_to_id).collect(),
                with_payload: enabled_payload(true),
                with_vectors: enabled_vectors(false),
                ..Default::default()
            })
            .await
            .map_err(|e| self.grpc_err("read sampled points", Some(c), e))?;
        Ok(got
            .result
            .into_iter()
            .map(|p| {
                json!({
                    "id": convert::id_to_json(p.id.as_ref()),
                    "payload": convert::payload_to_json(&p.payload),
                })
            })
            .collect())
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
                     and start it once with `--storage-snapshot <file>`; per-collection backups restore through zdr",
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
            if info.points_count != c.points_count {
                report.problems.push(format!(
                    "{dest}: {} points, the backup recorded {}",
                    info.points_count, c.points_count
                ));
            }
            if info.vectors != c.vectors {
                report.problems.push(format!(
                    "{dest}: vector config {} differs from the backup's {}",
                    info.vectors, c.vectors
                ));
            }
            if c.sample.is_empty() {
                continue;
            }
            let ids: Vec<Value> = c.sample.iter().map(|s| s.id.clone()).collect();
            let got = self.get_points(&dest, &ids).await?;
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
    fn grpc_port_follows_the_rest_port() {
        assert_eq!(
            default_grpc_url("http://qdrant:6333").as_deref(),
            Some("http://qdrant:6334")
        );
        assert_eq!(
            default_grpc_url("https://q.example").as_deref(),
            Some("https://q.example:6334")
        );
        assert_eq!(
            default_grpc_url("http://[::1]:6333").as_deref(),
            Some("http://[::1]:6334")
        );
        assert_eq!(default_grpc_url("http://qdrant:8080"), None);
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
