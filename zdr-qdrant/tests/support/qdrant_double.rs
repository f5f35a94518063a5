//! A **double** of Qdrant (not Qdrant), REST and gRPC over one in-memory state:
//! - REST: the routes and JSON shapes of `qdrant-openapi-1.18.2.json` that zdr-qdrant and
//!   its tests use (collections, points, per-collection and full-storage snapshots with
//!   download, multipart upload and recover from a URL), the `api-key` header checked on
//!   every route (401 when missing, 403 when wrong);
//! - gRPC: qdrant-client's generated server traits (`qdrant_server`, `collections_server`,
//!   `points_server`, `snapshots_server`), with the `api-key` metadata checked
//!   (`Unauthenticated` when missing, `PermissionDenied` when wrong); calls zdr-qdrant does
//!   not make answer `Unimplemented`.
//!
//! Switches corrupt the next snapshot download, drop the connection mid-download, report
//! another server version, make REST alone require another key, or drop a collection while
//! a full snapshot runs. Its collection snapshot format is its own (JSON), not Qdrant's; a
//! full snapshot is, as Qdrant's, a tar of collection snapshots and a `config.json`.
//!
//! Learned from the real server (1.18): uploaded snapshot files are kept among the
//! collection's snapshots until deleted (also after a failed restore); a full snapshot keeps
//! the collection snapshots it was made of, and fails with NotFound when a collection is
//! dropped while it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Collection {
    vectors: Value,
    payload_schema: Value,
    points: Vec<Value>,
}

#[derive(Default)]
struct Inner {
    collections: HashMap<String, Collection>,
    snapshots: HashMap<(String, String), Vec<u8>>,
    full_snapshots: HashMap<String, Vec<u8>>,
    rest_key: Option<String>,
    recovered_from: Vec<String>,
    uploads: usize,
    aliases: Vec<(String, String)>,
    version: String,
    corrupt_next_download: bool,
    die_after: Option<usize>,
    drop_during_full: Option<String>,
    stall_after: Option<usize>,
    stalled: bool,
    stall_uploads: bool,
    freeze_on_snapshot: bool,
    counter: u64,
}

/// A running double; dropped with the test's runtime.
#[derive(Clone)]
pub struct QdrantDouble {
    inner: Arc<Mutex<Inner>>,
    /// The REST base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The gRPC URL, `http://127.0.0.1:PORT2`.
    pub grpc_url: String,
    /// The API key it requires.
    pub api_key: String,
}

type Shared = (Arc<Mutex<Inner>>, String);

/// Snapshot collection `c` into the double's own format; `None` when it does not exist.
fn take_snapshot(s: &mut Inner, c: &str) -> Option<(String, Vec<u8>)> {
    let col = s.collections.get(c)?;
    let mut bytes = serde_json::to_vec(&json!({
        "vectors": col.vectors, "payload_schema": col.payload_schema, "points": col.points,
    }))
    .unwrap();
    // Pad to a realistic size so transfers span many chunks.
    bytes.extend(std::iter::repeat_n(b' ', 256 * 1024));
    s.counter += 1;
    let name = format!("{c}-{}-2026-11-25-23-59-59.snapshot", s.counter);
    s.snapshots
        .insert((c.to_string(), name.clone()), bytes.clone());
    Some((name, bytes))
}

/// Snapshot every collection and alias as Qdrant does: one collection snapshot per
/// collection, **kept** in each collection's snapshots (also when the full snapshot fails),
/// then a tar of those files and a `config.json` mapping collections to them. A collection
/// gone by the time its turn comes fails the whole snapshot with Qdrant's message, leaving
/// the collection snapshots made so far (`drop_during_full_snapshot` makes one go after the
/// first collection snapshot, as a concurrent drop would).
fn take_full_snapshot(s: &mut Inner) -> Result<(String, Vec<u8>), String> {
    let mut names: Vec<String> = s.collections.keys().cloned().collect();
    names.sort();
    let mut taken = Vec::new();
    for (i, c) in names.iter().enumerate() {
        if i == 1
            && let Some(victim) = s.drop_during_full.take()
        {
            s.collections.remove(&victim);
        }
        let Some((snap, bytes)) = take_snapshot(s, c) else {
            return Err(format!("Not found: Collection `{c}` doesn't exist!"));
        };
        taken.push((c.clone(), snap, bytes));
    }
    let mapping: serde_json::Map<String, Value> = taken
        .iter()
        .map(|(c, snap, _)| (c.clone(), json!(snap)))
        .collect();
    let aliases: serde_json::Map<String, Value> = s
        .aliases
        .iter()
        .map(|(alias, c)| (alias.clone(), json!(c)))
        .collect();
    let config = serde_json::to_vec_pretty(
        &json!({"collections_mapping": mapping, "collections_aliases": aliases}),
    )
    .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    for (_, snap, bytes) in &taken {
        append(&mut builder, snap, bytes);
    }
    append(&mut builder, "config.json", &config);
    let bytes = builder.into_inner().unwrap();
    s.counter += 1;
    let name = format!("full-snapshot-{}-2026-11-25-23-59-59.snapshot", s.counter);
    s.full_snapshots.insert(name.clone(), bytes.clone());
    Ok((name, bytes))
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    builder.append_data(&mut header, name, bytes).unwrap();
}

fn ok(result: Value) -> Response {
    axum::Json(json!({"result": result, "status": "ok", "time": 0.001})).into_response()
}

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"status": {"error": msg.into()}, "time": 0.0})),
    )
        .into_response()
}

fn missing(c: &str) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        format!("Not found: Collection `{c}` doesn't exist!"),
    )
}

impl QdrantDouble {
    /// Start the double on a free port of 127.0.0.1.
    pub async fn start(api_key: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            version: "1.18.2".into(),
            ..Inner::default()
        }));
        let shared: Shared = (inner.clone(), api_key.to_string());
        let app = Router::new()
            .route("/", get(root))
            .route("/collections", get(list_collections))
            .route("/aliases", get(list_aliases))
            .route("/collections/aliases", post(update_aliases))
            .route(
                "/collections/{c}",
                get(collection_info)
                    .put(create_collection)
                    .delete(delete_collection),
            )
            .route("/collections/{c}/points", put(upsert).post(retrieve))
            .route("/collections/{c}/points/scroll", post(scroll))
            .route("/collections/{c}/index", put(create_index))
            .route(
                "/collections/{c}/snapshots",
                post(create_snapshot).get(list_snapshots),
            )
            .route("/collections/{c}/snapshots/upload", post(upload_snapshot))
            .route("/collections/{c}/snapshots/recover", put(recover_snapshot))
            .route(
                "/snapshots",
                post(create_full_snapshot).get(list_full_snapshots),
            )
            .route(
                "/snapshots/{name}",
                get(download_full_snapshot).delete(delete_full_snapshot),
            )
            .route(
                "/collections/{c}/snapshots/{name}",
                get(download_snapshot).delete(delete_snapshot),
            )
            .layer(middleware::from_fn_with_state(shared.clone(), auth))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let grpc_url = grpc::serve_grpc(inner.clone(), api_key.to_string()).await;
        Self {
            inner,
            url: format!("http://{addr}"),
            grpc_url,
            api_key: api_key.to_string(),
        }
    }

    /// Corrupt (flip one byte of) the next snapshot download.
    pub fn corrupt_next_download(&self) {
        self.inner.lock().unwrap().corrupt_next_download = true;
    }

    /// Drop the connection after `n` bytes of the next download.
    pub fn die_after(&self, n: usize) {
        self.inner.lock().unwrap().die_after = Some(n);
    }

    /// Report `version` from `GET /`.
    pub fn set_version(&self, version: &str) {
        self.inner.lock().unwrap().version = version.into();
    }

    /// Make REST alone (not gRPC) require `key` from now on.
    pub fn set_rest_api_key(&self, key: &str) {
        self.inner.lock().unwrap().rest_key = Some(key.into());
    }

    /// Send `n` bytes of the next download, then nothing, the connection left open.
    pub fn stall_after(&self, n: usize) {
        self.inner.lock().unwrap().stall_after = Some(n);
    }

    /// Stop answering altogether (as a server sent SIGSTOP) once a collection snapshot is
    /// asked for: that call and every later one wait forever.
    pub fn freeze_on_snapshot(&self) {
        self.inner.lock().unwrap().freeze_on_snapshot = true;
    }

    /// Never read nor answer snapshot uploads from now on.
    pub fn stall_uploads(&self) {
        self.inner.lock().unwrap().stall_uploads = true;
    }

    /// Stop answering (as a server sent SIGSTOP): every REST call and the gRPC health check
    /// from now on wait forever; uploads are not read.
    pub fn stop_answering(&self) {
        self.inner.lock().unwrap().stalled = true;
    }

    /// Drop collection `c` while the next full snapshot runs (after its first collection
    /// snapshot), as a concurrent drop would.
    pub fn drop_during_full_snapshot(&self, c: &str) {
        self.inner.lock().unwrap().drop_during_full = Some(c.into());
    }

    /// Collection snapshots held on the "server", of every collection.
    pub fn all_snapshot_count(&self) -> usize {
        self.inner.lock().unwrap().snapshots.len()
    }

    /// Full-storage snapshots currently held on the "server".
    pub fn full_snapshot_count(&self) -> usize {
        self.inner.lock().unwrap().full_snapshots.len()
    }

    /// How many snapshot uploads the "server" received.
    pub fn uploads(&self) -> usize {
        self.inner.lock().unwrap().uploads
    }

    /// The locations the server recovered snapshots from, oldest first.
    pub fn recovered_from(&self) -> Vec<String> {
        self.inner.lock().unwrap().recovered_from.clone()
    }

    /// Snapshots currently held on the "server" for collection `c`.
    pub fn snapshot_count(&self, c: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.snapshots.keys().filter(|(k, _)| k == c).count()
    }
}

async fn auth(State((s, key)): State<Shared>, req: Request, next: Next) -> Response {
    let (stalled, uploads) = {
        let s = s.lock().unwrap();
        (s.stalled, s.stall_uploads)
    };
    if stalled || (uploads && req.uri().path().ends_with("/snapshots/upload")) {
        return std::future::pending().await;
    }
    let key = s.lock().unwrap().rest_key.clone().unwrap_or(key);
    match req.headers().get("api-key").and_then(|v| v.to_str().ok()) {
        None => fail(
            StatusCode::UNAUTHORIZED,
            "Must provide an API key or an Authorization bearer token",
        ),
        Some(k) if k != key => fail(StatusCode::FORBIDDEN, "Invalid API key or JWT"),
        Some(_) => next.run(req).await,
    }
}

async fn root(State((s, _)): State<Shared>) -> Response {
    let v = s.lock().unwrap().version.clone();
    axum::Json(json!({"title": "qdrant - vector search engine", "version": v, "commit": "double"}))
        .into_response()
}

async fn list_collections(State((s, _)): State<Shared>) -> Response {
    let s = s.lock().unwrap();
    let names: Vec<Value> = s.collections.keys().map(|n| json!({"name": n})).collect();
    ok(json!({ "collections": names }))
}

async fn list_aliases(State((s, _)): State<Shared>) -> Response {
    let s = s.lock().unwrap();
    let a: Vec<Value> = s
        .aliases
        .iter()
        .map(|(a, c)| json!({"alias_name": a, "collection_name": c}))
        .collect();
    ok(json!({ "aliases": a }))
}

async fn update_aliases(
    State((s, _)): State<Shared>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = s.lock().unwrap();
    for action in body["actions"].as_array().cloned().unwrap_or_default() {
        if let Some(c) = action.get("create_alias") {
            let (coll, alias) = (
                c["collection_name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                c["alias_name"].as_str().unwrap_or_default().to_string(),
            );
            if !s.collections.contains_key(&coll) {
                return missing(&coll);
            }
            s.aliases.retain(|(a, _)| *a != alias);
            s.aliases.push((alias, coll));
        } else if let Some(d) = action.get("delete_alias") {
            let alias = d["alias_name"].as_str().unwrap_or_default().to_string();
            s.aliases.retain(|(a, _)| *a != alias);
        } else {
            return fail(StatusCode::BAD_REQUEST, "unknown alias action");
        }
    }
    ok(json!(true))
}

fn info(c: &Collection) -> Value {
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": 0,
        "points_count": c.points.len(),
        "segments_count": 1,
        "config": {
            "params": {"vectors": c.vectors, "shard_number": 1, "replication_factor": 1,
                        "write_consistency_factor": 1, "on_disk_payload": true},
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                                  "default_segment_number": 0, "flush_interval_sec": 5},
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0}
        },
        "payload_schema": c.payload_schema,
    })
}

async fn collection_info(State((s, _)): State<Shared>, Path(c): Path<String>) -> Response {
    let s = s.lock().unwrap();
    match s.collections.get(&c) {
        Some(col) => ok(info(col)),
        None => missing(&c),
    }
}

async fn create_collection(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = s.lock().unwrap();
    if s.collections.contains_key(&c) {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("Wrong input: Collection `{c}` already exists!"),
        );
    }
    s.collections.insert(
        c,
        Collection {
            vectors: body["vectors"].clone(),
            payload_schema: json!({}),
            points: Vec::new(),
        },
    );
    ok(json!(true))
}

async fn create_index(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = s.lock().unwrap();
    let Some(col) = s.collections.get_mut(&c) else {
        return missing(&c);
    };
    let field = body["field_name"].as_str().unwrap_or_default().to_string();
    let schema = &body["field_schema"];
    let entry = match schema.as_str() {
        Some(t) => json!({"data_type": t, "points": col.points.len()}),
        None => json!({"data_type": schema["type"], "params": schema, "points": col.points.len()}),
    };
    if !col.payload_schema.is_object() {
        col.payload_schema = json!({});
    }
    col.payload_schema[field] = entry;
    ok(json!({"operation_id": 2, "status": "completed"}))
}

async fn delete_collection(State((s, _)): State<Shared>, Path(c): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    let existed = s.collections.remove(&c).is_some();
    s.aliases.retain(|(_, coll)| *coll != c);
    ok(json!(existed))
}

async fn upsert(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut s = s.lock().unwrap();
    let Some(col) = s.collections.get_mut(&c) else {
        return missing(&c);
    };
    for p in body["points"].as_array().cloned().unwrap_or_default() {
        col.points.retain(|q| q["id"] != p["id"]);
        let mut p = p;
        if p.get("payload").is_none_or(Value::is_null) {
            p["payload"] = json!({});
        }
        col.points.push(p);
    }
    col.points.sort_by_key(|p| p["id"].to_string());
    ok(json!({"operation_id": 1, "status": "completed"}))
}

fn shape(p: &Value, with_payload: bool, with_vector: bool) -> Value {
    let mut out = json!({"id": p["id"]});
    if with_payload {
        out["payload"] = p["payload"].clone();
    }
    if with_vector {
        out["vector"] = p["vector"].clone();
    }
    out
}

fn flag(v: &Value, default: bool) -> bool {
    v.as_bool().unwrap_or(default)
}

async fn retrieve(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let s = s.lock().unwrap();
    let Some(col) = s.collections.get(&c) else {
        return missing(&c);
    };
    let ids = body["ids"].as_array().cloned().unwrap_or_default();
    let (wp, wv) = (
        flag(&body["with_payload"], true),
        flag(&body["with_vector"], false),
    );
    let found: Vec<Value> = col
        .points
        .iter()
        .filter(|p| ids.contains(&p["id"]))
        .map(|p| shape(p, wp, wv))
        .collect();
    ok(Value::Array(found))
}

async fn scroll(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let s = s.lock().unwrap();
    let Some(col) = s.collections.get(&c) else {
        return missing(&c);
    };
    let limit = body["limit"].as_u64().unwrap_or(10) as usize;
    let start = match body.get("offset").filter(|o| !o.is_null()) {
        Some(o) => col
            .points
            .iter()
            .position(|p| &p["id"] == o)
            .unwrap_or(col.points.len()),
        None => 0,
    };
    let (wp, wv) = (
        flag(&body["with_payload"], true),
        flag(&body["with_vector"], false),
    );
    let page: Vec<Value> = col.points[start..]
        .iter()
        .take(limit)
        .map(|p| shape(p, wp, wv))
        .collect();
    let next = col.points.get(start + limit).map(|p| p["id"].clone());
    ok(json!({"points": page, "next_page_offset": next}))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn create_snapshot(State((s, _)): State<Shared>, Path(c): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    let Some((name, bytes)) = take_snapshot(&mut s, &c) else {
        return missing(&c);
    };
    ok(
        json!({"name": name, "creation_time": "2026-11-25T23:59:59", "size": bytes.len(),
              "checksum": sha(&bytes)}),
    )
}

async fn create_full_snapshot(State((s, _)): State<Shared>) -> Response {
    let mut s = s.lock().unwrap();
    let (name, bytes) = match take_full_snapshot(&mut s) {
        Ok(taken) => taken,
        Err(msg) => return fail(StatusCode::NOT_FOUND, msg),
    };
    ok(
        json!({"name": name, "creation_time": "2026-11-25T23:59:59", "size": bytes.len(),
              "checksum": sha(&bytes)}),
    )
}

async fn list_full_snapshots(State((s, _)): State<Shared>) -> Response {
    let s = s.lock().unwrap();
    let list: Vec<Value> = s
        .full_snapshots
        .iter()
        .map(|(n, b)| json!({"name": n, "size": b.len(), "checksum": sha(b)}))
        .collect();
    ok(Value::Array(list))
}

async fn download_full_snapshot(
    State((s, _)): State<Shared>,
    Path(name): Path<String>,
) -> Response {
    let mut s = s.lock().unwrap();
    let Some(bytes) = s.full_snapshots.get(&name).cloned() else {
        return fail(StatusCode::NOT_FOUND, format!("Snapshot {name} not found"));
    };
    serve_bytes(&mut s, bytes)
}

async fn delete_full_snapshot(State((s, _)): State<Shared>, Path(name): Path<String>) -> Response {
    let mut s = s.lock().unwrap();
    match s.full_snapshots.remove(&name) {
        Some(_) => ok(json!(true)),
        None => fail(StatusCode::NOT_FOUND, format!("Snapshot {name} not found")),
    }
}

/// `PUT /collections/{c}/snapshots/recover`: fetch `location` (http only), check `checksum`,
/// replace the collection.
async fn recover_snapshot(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let Some(location) = body["location"].as_str().map(str::to_string) else {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "location is required");
    };
    if body["priority"]
        .as_str()
        .is_some_and(|p| p != "snapshot" && p != "replica" && p != "no_sync")
    {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "unknown priority");
    }
    let mut req = reqwest::Client::new().get(&location);
    if let Some(k) = body["api_key"].as_str() {
        req = req.header("api-key", k);
    }
    let bytes = match req.send().await {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return fail(StatusCode::BAD_REQUEST, format!("download failed: {e}")),
        },
        Ok(r) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "Failed to download snapshot from {location}: status {}",
                    r.status()
                ),
            );
        }
        Err(e) => return fail(StatusCode::BAD_REQUEST, format!("download failed: {e}")),
    };
    if let Some(expected) = body["checksum"].as_str() {
        let got = sha(&bytes);
        if got != expected {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Bad request: Checksum mismatch: expected {expected}, got {got}"),
            );
        }
    }
    let Ok(snap) = serde_json::from_slice::<Value>(&bytes) else {
        return fail(StatusCode::BAD_REQUEST, "not a snapshot of this double");
    };
    let mut s = s.lock().unwrap();
    s.recovered_from.push(location);
    s.collections.insert(
        c,
        Collection {
            vectors: snap["vectors"].clone(),
            payload_schema: snap["payload_schema"].clone(),
            points: snap["points"].as_array().cloned().unwrap_or_default(),
        },
    );
    ok(json!(true))
}

async fn list_snapshots(State((s, _)): State<Shared>, Path(c): Path<String>) -> Response {
    let s = s.lock().unwrap();
    if !s.collections.contains_key(&c) {
        return missing(&c);
    }
    let list: Vec<Value> = s
        .snapshots
        .iter()
        .filter(|((k, _), _)| *k == c)
        .map(|((_, n), b)| json!({"name": n, "size": b.len(), "checksum": sha(b)}))
        .collect();
    ok(Value::Array(list))
}

async fn download_snapshot(
    State((s, _)): State<Shared>,
    Path((c, name)): Path<(String, String)>,
) -> Response {
    let mut s = s.lock().unwrap();
    let Some(bytes) = s.snapshots.get(&(c.clone(), name.clone())).cloned() else {
        return fail(StatusCode::NOT_FOUND, format!("Snapshot {name} not found"));
    };
    serve_bytes(&mut s, bytes)
}

/// A snapshot download, with the corrupt and die switches applied.
fn serve_bytes(s: &mut Inner, mut bytes: Vec<u8>) -> Response {
    if std::mem::take(&mut s.corrupt_next_download) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
    }
    let headers = [(header::CONTENT_TYPE, "application/octet-stream")];
    if let Some(n) = s.stall_after.take() {
        use futures::StreamExt;
        // Send the head, then nothing more and keep the connection open: a stopped server.
        let head = Bytes::from(bytes[..n.min(bytes.len())].to_vec());
        let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
            futures::stream::once(async {
                std::future::pending::<Result<Bytes, std::io::Error>>().await
            }),
        );
        return (headers, Body::from_stream(stream)).into_response();
    }
    match s.die_after.take() {
        None => (headers, bytes).into_response(),
        Some(n) => {
            let head = Bytes::from(bytes[..n.min(bytes.len())].to_vec());
            // Send the head, let it reach the client, then drop the connection.
            let stream = futures::stream::unfold(0u8, move |step| {
                let head = head.clone();
                async move {
                    match step {
                        0 => Some((Ok(head), 1)),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            Some((Err(std::io::Error::other("double: connection dropped")), 2))
                        }
                        _ => None,
                    }
                }
            });
            (headers, Body::from_stream(stream)).into_response()
        }
    }
}

async fn delete_snapshot(
    State((s, _)): State<Shared>,
    Path((c, name)): Path<(String, String)>,
) -> Response {
    let mut s = s.lock().unwrap();
    match s.snapshots.remove(&(c, name.clone())) {
        Some(_) => ok(json!(true)),
        None => fail(StatusCode::NOT_FOUND, format!("Snapshot {name} not found")),
    }
}

/// The file part of a `multipart/form-data` body (the double reads it whole).
fn file_part(headers: &HeaderMap, body: &[u8]) -> Option<(Option<String>, Vec<u8>)> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let start_marker = format!("--{boundary}");
    let pos = find(body, start_marker.as_bytes())?;
    let after = &body[pos + start_marker.len()..];
    let headers_end = find(after, b"\r\n\r\n")? + 4;
    // The part's `filename="..."`: Qdrant stores the upload under it.
    let part_headers = String::from_utf8_lossy(&after[..headers_end]);
    let file_name = part_headers
        .split("filename=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned);
    let data = &after[headers_end..];
    let end = find(data, format!("\r\n--{boundary}").as_bytes())?;
    Some((file_name, data[..end].to_vec()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn upload_snapshot(
    State((s, _)): State<Shared>,
    Path(c): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((file_name, file)) = file_part(&headers, &body) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "expected a multipart snapshot field",
        );
    };
    if let Some(expected) = q.get("checksum") {
        let got = sha(&file);
        if &got != expected {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("Bad request: Checksum mismatch: expected {expected}, got {got}"),
            );
        }
    }
    let mut s = s.lock().unwrap();
    // Like Qdrant, the uploaded file stays in the collection's snapshots (listed, and kept
    // until deleted) under the part's file name, saved before its restore is tried: it stays
    // when the restore fails too.
    s.uploads += 1;
    let stored = file_name.unwrap_or_else(|| "upload.snapshot".to_owned());
    s.snapshots.insert((c.clone(), stored), file.clone());
    let Ok(snap) = serde_json::from_slice::<Value>(&file) else {
        return fail(StatusCode::BAD_REQUEST, "not a snapshot of this double");
    };
    s.collections.insert(
        c,
        Collection {
            vectors: snap["vectors"].clone(),
            payload_schema: snap["payload_schema"].clone(),
            points: snap["points"].as_array().cloned().unwrap_or_default(),
        },
    );
    ok(json!(true))
}

// ---------------------------------------------------------------------------------------
// The gRPC side: qdrant-client's generated server traits over the same state. Only the
// calls zdr-qdrant makes are implemented; every other answers `unimplemented`.
// ---------------------------------------------------------------------------------------

mod grpc {
    #![allow(clippy::wildcard_imports)]
    use super::*;
    use qdrant_client::qdrant as pb;
    use qdrant_client::qdrant::{
        collections_server::{Collections, CollectionsServer},
        points_server::{Points, PointsServer},
        qdrant_server::{Qdrant, QdrantServer},
        snapshots_server::{Snapshots, SnapshotsServer},
    };
    use tonic::{Request, Response, Status};

    fn unimplemented(name: &str) -> Status {
        Status::unimplemented(format!("the qdrant double does not implement {name}"))
    }

    fn not_found(c: &str) -> Status {
        Status::not_found(format!("Not found: Collection `{c}` doesn't exist!"))
    }

    /// The gRPC service of the double (all four traits on one shared state).
    #[derive(Clone)]
    struct Grpc(Arc<Mutex<Inner>>);

    fn check_key(key: &str, req: &Request<()>) -> Result<(), Status> {
        match req.metadata().get("api-key").and_then(|v| v.to_str().ok()) {
            None => Err(Status::unauthenticated(
                "Must provide an API key or an Authorization bearer token",
            )),
            Some(k) if k != key => Err(Status::permission_denied("Invalid API key or JWT")),
            Some(_) => Ok(()),
        }
    }

    pub(super) async fn serve_grpc(inner: Arc<Mutex<Inner>>, key: String) -> String {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = Grpc(inner);
        let (k1, k2, k3, k4) = (key.clone(), key.clone(), key.clone(), key);
        let router = tonic::transport::Server::builder()
            .add_service(QdrantServer::with_interceptor(svc.clone(), move |r| {
                check_key(&k1, &r).map(|()| r)
            }))
            .add_service(CollectionsServer::with_interceptor(svc.clone(), move |r| {
                check_key(&k2, &r).map(|()| r)
            }))
            .add_service(PointsServer::with_interceptor(svc.clone(), move |r| {
                check_key(&k3, &r).map(|()| r)
            }))
            .add_service(SnapshotsServer::with_interceptor(svc, move |r| {
                check_key(&k4, &r).map(|()| r)
            }));
        tokio::spawn(async move {
            let _ = router
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        format!("http://{addr}")
    }

    // JSON (how the double stores things, REST's shapes) <-> gRPC messages, written here
    // independently of zdr-qdrant's own conversions.

    fn pb_value(v: &Value) -> pb::Value {
        use pb::value::Kind;
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) if n.is_i64() => Kind::IntegerValue(n.as_i64().unwrap()),
            Value::Number(n) => Kind::DoubleValue(n.as_f64().unwrap()),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(pb::ListValue {
                values: a.iter().map(pb_value).collect(),
            }),
            Value::Object(o) => Kind::StructValue(pb::Struct {
                fields: o.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect(),
            }),
        };
        pb::Value { kind: Some(kind) }
    }

    fn json_value(v: &pb::Value) -> Value {
        use pb::value::Kind;
        match &v.kind {
            None | Some(Kind::NullValue(_)) => Value::Null,
            Some(Kind::BoolValue(b)) => json!(b),
            Some(Kind::IntegerValue(i)) => json!(i),
            Some(Kind::DoubleValue(d)) => json!(d),
            Some(Kind::StringValue(s)) => json!(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(json_value).collect()),
            Some(Kind::StructValue(s)) => Value::Object(
                s.fields
                    .iter()
                    .map(|(k, v)| (k.clone(), json_value(v)))
                    .collect(),
            ),
        }
    }

    fn json_id(id: &Option<pb::PointId>) -> Value {
        match id.as_ref().and_then(|i| i.point_id_options.clone()) {
            Some(pb::point_id::PointIdOptions::Num(n)) => json!(n),
            Some(pb::point_id::PointIdOptions::Uuid(u)) => json!(u),
            None => Value::Null,
        }
    }

    fn pb_id(v: &Value) -> pb::PointId {
        let o = match v {
            Value::Number(n) => pb::point_id::PointIdOptions::Num(n.as_u64().unwrap()),
            other => pb::point_id::PointIdOptions::Uuid(other.as_str().unwrap().to_string()),
        };
        pb::PointId {
            point_id_options: Some(o),
        }
    }

    fn pb_params(v: &Value) -> pb::VectorParams {
        pb::VectorParams {
            size: v["size"].as_u64().unwrap(),
            distance: pb::Distance::from_str_name(v["distance"].as_str().unwrap()).unwrap() as i32,
            ..Default::default()
        }
    }

    fn pb_vectors_config(v: &Value) -> pb::VectorsConfig {
        use pb::vectors_config::Config;
        let config = if v.get("size").is_some() {
            Config::Params(pb_params(v))
        } else {
            Config::ParamsMap(pb::VectorParamsMap {
                map: v
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, p)| (k.clone(), pb_params(p)))
                    .collect(),
            })
        };
        pb::VectorsConfig {
            config: Some(config),
        }
    }

    fn json_params(p: &pb::VectorParams) -> Value {
        let d = pb::Distance::try_from(p.distance).unwrap().as_str_name();
        json!({"size": p.size, "distance": d})
    }

    fn json_vectors_config(c: &Option<pb::VectorsConfig>) -> Value {
        use pb::vectors_config::Config;
        match c.as_ref().and_then(|c| c.config.as_ref()) {
            Some(Config::Params(p)) => json_params(p),
            Some(Config::ParamsMap(m)) => Value::Object(
                m.map
                    .iter()
                    .map(|(k, p)| (k.clone(), json_params(p)))
                    .collect(),
            ),
            None => Value::Null,
        }
    }

    fn json_one_vector(v: &pb::Vector) -> Value {
        match v.vector.as_ref() {
            Some(pb::vector::Vector::Dense(d)) => json!(d.data),
            Some(pb::vector::Vector::Sparse(s)) => {
                json!({"indices": s.indices, "values": s.values})
            }
            Some(pb::vector::Vector::MultiDense(m)) => {
                Value::Array(m.vectors.iter().map(|d| json!(d.data)).collect())
            }
            _ => panic!("double: unsupported vector"),
        }
    }

    fn json_point(p: &pb::PointStruct) -> Value {
        let vector = match p.vectors.as_ref().and_then(|v| v.vectors_options.as_ref()) {
            Some(pb::vectors::VectorsOptions::Vector(v)) => json_one_vector(v),
            Some(pb::vectors::VectorsOptions::Vectors(n)) => Value::Object(
                n.vectors
                    .iter()
                    .map(|(k, v)| (k.clone(), json_one_vector(v)))
                    .collect(),
            ),
            None => Value::Null,
        };
        let payload: serde_json::Map<String, Value> = p
            .payload
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect();
        json!({"id": json_id(&p.id), "vector": vector, "payload": payload})
    }

    fn pb_one_vector(v: &Value) -> pb::VectorOutput {
        let floats = |a: &Value| -> Vec<f32> {
            a.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let vector = if v.get("indices").is_some() {
            pb::vector_output::Vector::Sparse(pb::SparseVector {
                indices: v["indices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as u32)
                    .collect(),
                values: floats(&v["values"]),
            })
        } else if v[0].is_array() {
            pb::vector_output::Vector::MultiDense(pb::MultiDenseVector {
                vectors: v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| pb::DenseVector { data: floats(d) })
                    .collect(),
            })
        } else {
            pb::vector_output::Vector::Dense(pb::DenseVector { data: floats(v) })
        };
        pb::VectorOutput {
            vector: Some(vector),
            ..Default::default()
        }
    }

    fn retrieved(p: &Value, with_payload: bool, with_vectors: bool) -> pb::RetrievedPoint {
        let mut out = pb::RetrievedPoint {
            id: Some(pb_id(&p["id"])),
            ..Default::default()
        };
        if with_payload {
            out.payload = p["payload"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect())
                .unwrap_or_default();
        }
        if with_vectors && !p["vector"].is_null() {
            let v = &p["vector"];
            let options = if v.is_object() && v.get("indices").is_none() {
                pb::vectors_output::VectorsOptions::Vectors(pb::NamedVectorsOutput {
                    vectors: v
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, x)| (k.clone(), pb_one_vector(x)))
                        .collect(),
                })
            } else {
                pb::vectors_output::VectorsOptions::Vector(pb_one_vector(v))
            };
            out.vectors = Some(pb::VectorsOutput {
                vectors_options: Some(options),
            });
        }
        out
    }

    fn enabled_payload(s: &Option<pb::WithPayloadSelector>) -> bool {
        matches!(
            s.as_ref().and_then(|s| s.selector_options.as_ref()),
            Some(pb::with_payload_selector::SelectorOptions::Enable(true))
        )
    }

    fn enabled_vectors(s: &Option<pb::WithVectorsSelector>) -> bool {
        matches!(
            s.as_ref().and_then(|s| s.selector_options.as_ref()),
            Some(pb::with_vectors_selector::SelectorOptions::Enable(true))
        )
    }

    fn grpc_info(c: &Collection) -> pb::CollectionInfo {
        let payload_schema = c
            .payload_schema
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let t = v["data_type"].as_str().unwrap_or_default();
                        let mut name = t.to_string();
                        if let Some(first) = name.get_mut(0..1) {
                            first.make_ascii_uppercase();
                        }
                        let data_type =
                            pb::PayloadSchemaType::from_str_name(&name).map_or(0, |t| t as i32);
                        (
                            k.clone(),
                            pb::PayloadSchemaInfo {
                                data_type,
                                params: None,
                                points: v["points"].as_u64(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        pb::CollectionInfo {
            status: pb::CollectionStatus::Green as i32,
            segments_count: 1,
            config: Some(pb::CollectionConfig {
                params: Some(pb::CollectionParams {
                    shard_number: 1,
                    vectors_config: Some(pb_vectors_config(&c.vectors)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            payload_schema,
            points_count: Some(c.points.len() as u64),
            ..Default::default()
        }
    }

    fn description(name: &str, bytes: &[u8]) -> pb::SnapshotDescription {
        pb::SnapshotDescription {
            name: name.to_string(),
            creation_time: None,
            size: bytes.len() as i64,
            checksum: Some(sha(bytes)),
        }
    }

    fn op() -> Response<pb::CollectionOperationResponse> {
        Response::new(pb::CollectionOperationResponse {
            result: true,
            time: 0.001,
        })
    }

    #[tonic::async_trait]
    impl Qdrant for Grpc {
        async fn health_check(
            &self,
            _r: Request<pb::HealthCheckRequest>,
        ) -> Result<Response<pb::HealthCheckReply>, Status> {
            let (version, stalled) = {
                let s = self.0.lock().unwrap();
                (s.version.clone(), s.stalled)
            };
            if stalled {
                return std::future::pending().await;
            }
            Ok(Response::new(pb::HealthCheckReply {
                title: "qdrant - vector search engine".into(),
                version,
                commit: Some("double".into()),
            }))
        }
    }

    #[tonic::async_trait]
    impl Collections for Grpc {
        async fn get(
            &self,
            r: Request<pb::GetCollectionInfoRequest>,
        ) -> Result<Response<pb::GetCollectionInfoResponse>, Status> {
            let c = r.into_inner().collection_name;
            let s = self.0.lock().unwrap();
            let col = s.collections.get(&c).ok_or_else(|| not_found(&c))?;
            Ok(Response::new(pb::GetCollectionInfoResponse {
                result: Some(grpc_info(col)),
                time: 0.001,
            }))
        }

        async fn list(
            &self,
            _r: Request<pb::ListCollectionsRequest>,
        ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
            let s = self.0.lock().unwrap();
            Ok(Response::new(pb::ListCollectionsResponse {
                collections: s
                    .collections
                    .keys()
                    .map(|n| pb::CollectionDescription { name: n.clone() })
                    .collect(),
                time: 0.001,
            }))
        }

        async fn create(
            &self,
            r: Request<pb::CreateCollection>,
        ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
            let r = r.into_inner();
            let mut s = self.0.lock().unwrap();
            if s.collections.contains_key(&r.collection_name) {
                return Err(Status::invalid_argument(format!(
                    "Wrong input: Collection `{}` already exists!",
                    r.collection_name
                )));
            }
            s.collections.insert(
                r.collection_name,
                Collection {
                    vectors: json_vectors_config(&r.vectors_config),
                    payload_schema: json!({}),
                    points: Vec::new(),
                },
            );
            Ok(op())
        }

        async fn delete(
            &self,
            r: Request<pb::DeleteCollection>,
        ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
            let c = r.into_inner().collection_name;
            let mut s = self.0.lock().unwrap();
            let existed = s.collections.remove(&c).is_some();
            s.aliases.retain(|(_, coll)| *coll != c);
            Ok(Response::new(pb::CollectionOperationResponse {
                result: existed,
                time: 0.001,
            }))
        }

        async fn update_aliases(
            &self,
            r: Request<pb::ChangeAliases>,
        ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
            use pb::alias_operations::Action;
            let mut s = self.0.lock().unwrap();
            for a in r.into_inner().actions {
                match a.action {
                    Some(Action::CreateAlias(c)) => {
                        if !s.collections.contains_key(&c.collection_name) {
                            return Err(not_found(&c.collection_name));
                        }
                        s.aliases.retain(|(a, _)| *a != c.alias_name);
                        s.aliases.push((c.alias_name, c.collection_name));
                    }
                    Some(Action::DeleteAlias(d)) => s.aliases.retain(|(a, _)| *a != d.alias_name),
                    _ => return Err(unimplemented("this alias action")),
                }
            }
            Ok(op())
        }

        async fn list_aliases(
            &self,
            _r: Request<pb::ListAliasesRequest>,
        ) -> Result<Response<pb::ListAliasesResponse>, Status> {
            let s = self.0.lock().unwrap();
            Ok(Response::new(pb::ListAliasesResponse {
                aliases: s
                    .aliases
                    .iter()
                    .map(|(a, c)| pb::AliasDescription {
                        alias_name: a.clone(),
                        collection_name: c.clone(),
                    })
                    .collect(),
                time: 0.001,
            }))
        }

        async fn collection_exists(
            &self,
            r: Request<pb::CollectionExistsRequest>,
        ) -> Result<Response<pb::CollectionExistsResponse>, Status> {
            let c = r.into_inner().collection_name;
            let exists = self.0.lock().unwrap().collections.contains_key(&c);
            Ok(Response::new(pb::CollectionExistsResponse {
                result: Some(pb::CollectionExists { exists }),
                time: 0.001,
            }))
        }

        async fn update(
            &self,
            _r: Request<pb::UpdateCollection>,
        ) -> Result<Response<pb::CollectionOperationResponse>, Status> {
            Err(unimplemented("update"))
        }
        async fn list_collection_aliases(
            &self,
            _r: Request<pb::ListCollectionAliasesRequest>,
        ) -> Result<Response<pb::ListAliasesResponse>, Status> {
            Err(unimplemented("list_collection_aliases"))
        }
        async fn collection_cluster_info(
            &self,
            _r: Request<pb::CollectionClusterInfoRequest>,
        ) -> Result<Response<pb::CollectionClusterInfoResponse>, Status> {
            Err(unimplemented("collection_cluster_info"))
        }
        async fn update_collection_cluster_setup(
            &self,
            _r: Request<pb::UpdateCollectionClusterSetupRequest>,
        ) -> Result<Response<pb::UpdateCollectionClusterSetupResponse>, Status> {
            Err(unimplemented("update_collection_cluster_setup"))
        }
        async fn create_shard_key(
            &self,
            _r: Request<pb::CreateShardKeyRequest>,
        ) -> Result<Response<pb::CreateShardKeyResponse>, Status> {
            Err(unimplemented("create_shard_key"))
        }
        async fn delete_shard_key(
            &self,
            _r: Request<pb::DeleteShardKeyRequest>,
        ) -> Result<Response<pb::DeleteShardKeyResponse>, Status> {
            Err(unimplemented("delete_shard_key"))
        }
        async fn list_shard_keys(
            &self,
            _r: Request<pb::ListShardKeysRequest>,
        ) -> Result<Response<pb::ListShardKeysResponse>, Status> {
            Err(unimplemented("list_shard_keys"))
        }
    }

    #[tonic::async_trait]
    impl Points for Grpc {
        async fn upsert(
            &self,
            r: Request<pb::UpsertPoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            let r = r.into_inner();
            let mut s = self.0.lock().unwrap();
            let col = s
                .collections
                .get_mut(&r.collection_name)
                .ok_or_else(|| not_found(&r.collection_name))?;
            for p in &r.points {
                let p = json_point(p);
                col.points.retain(|q| q["id"] != p["id"]);
                col.points.push(p);
            }
            col.points.sort_by_key(|p| p["id"].to_string());
            Ok(Response::new(pb::PointsOperationResponse {
                result: Some(pb::UpdateResult {
                    operation_id: Some(1),
                    status: pb::UpdateStatus::Completed as i32,
                }),
                time: 0.001,
                usage: None,
            }))
        }

        async fn get(
            &self,
            r: Request<pb::GetPoints>,
        ) -> Result<Response<pb::GetResponse>, Status> {
            let r = r.into_inner();
            let s = self.0.lock().unwrap();
            let col = s
                .collections
                .get(&r.collection_name)
                .ok_or_else(|| not_found(&r.collection_name))?;
            let ids: Vec<Value> = r.ids.iter().map(|i| json_id(&Some(i.clone()))).collect();
            let (wp, wv) = (
                enabled_payload(&r.with_payload),
                enabled_vectors(&r.with_vectors),
            );
            Ok(Response::new(pb::GetResponse {
                result: col
                    .points
                    .iter()
                    .filter(|p| ids.contains(&p["id"]))
                    .map(|p| retrieved(p, wp, wv))
                    .collect(),
                time: 0.001,
                usage: None,
            }))
        }

        async fn scroll(
            &self,
            r: Request<pb::ScrollPoints>,
        ) -> Result<Response<pb::ScrollResponse>, Status> {
            let r = r.into_inner();
            let s = self.0.lock().unwrap();
            let col = s
                .collections
                .get(&r.collection_name)
                .ok_or_else(|| not_found(&r.collection_name))?;
            let limit = r.limit.unwrap_or(10) as usize;
            let start = match &r.offset {
                Some(o) => {
                    let o = json_id(&Some(o.clone()));
                    col.points
                        .iter()
                        .position(|p| p["id"] == o)
                        .unwrap_or(col.points.len())
                }
                None => 0,
            };
            let (wp, wv) = (
                enabled_payload(&r.with_payload),
                enabled_vectors(&r.with_vectors),
            );
            Ok(Response::new(pb::ScrollResponse {
                result: col.points[start..]
                    .iter()
                    .take(limit)
                    .map(|p| retrieved(p, wp, wv))
                    .collect(),
                next_page_offset: col.points.get(start + limit).map(|p| pb_id(&p["id"])),
                time: 0.001,
                usage: None,
            }))
        }

        async fn count(
            &self,
            r: Request<pb::CountPoints>,
        ) -> Result<Response<pb::CountResponse>, Status> {
            let c = r.into_inner().collection_name;
            let s = self.0.lock().unwrap();
            let col = s.collections.get(&c).ok_or_else(|| not_found(&c))?;
            Ok(Response::new(pb::CountResponse {
                result: Some(pb::CountResult {
                    count: col.points.len() as u64,
                }),
                time: 0.001,
                usage: None,
            }))
        }

        async fn delete(
            &self,
            _r: Request<pb::DeletePoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("delete"))
        }
        async fn update_vectors(
            &self,
            _r: Request<pb::UpdatePointVectors>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("update_vectors"))
        }
        async fn delete_vectors(
            &self,
            _r: Request<pb::DeletePointVectors>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("delete_vectors"))
        }
        async fn set_payload(
            &self,
            _r: Request<pb::SetPayloadPoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("set_payload"))
        }
        async fn overwrite_payload(
            &self,
            _r: Request<pb::SetPayloadPoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("overwrite_payload"))
        }
        async fn delete_payload(
            &self,
            _r: Request<pb::DeletePayloadPoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("delete_payload"))
        }
        async fn clear_payload(
            &self,
            _r: Request<pb::ClearPayloadPoints>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("clear_payload"))
        }
        async fn create_field_index(
            &self,
            _r: Request<pb::CreateFieldIndexCollection>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("create_field_index"))
        }
        async fn delete_field_index(
            &self,
            _r: Request<pb::DeleteFieldIndexCollection>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("delete_field_index"))
        }
        async fn create_vector_name(
            &self,
            _r: Request<pb::CreateVectorNameRequest>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("create_vector_name"))
        }
        async fn delete_vector_name(
            &self,
            _r: Request<pb::DeleteVectorNameRequest>,
        ) -> Result<Response<pb::PointsOperationResponse>, Status> {
            Err(unimplemented("delete_vector_name"))
        }
        async fn search(
            &self,
            _r: Request<pb::SearchPoints>,
        ) -> Result<Response<pb::SearchResponse>, Status> {
            Err(unimplemented("search"))
        }
        async fn search_batch(
            &self,
            _r: Request<pb::SearchBatchPoints>,
        ) -> Result<Response<pb::SearchBatchResponse>, Status> {
            Err(unimplemented("search_batch"))
        }
        async fn search_groups(
            &self,
            _r: Request<pb::SearchPointGroups>,
        ) -> Result<Response<pb::SearchGroupsResponse>, Status> {
            Err(unimplemented("search_groups"))
        }
        async fn recommend(
            &self,
            _r: Request<pb::RecommendPoints>,
        ) -> Result<Response<pb::RecommendResponse>, Status> {
            Err(unimplemented("recommend"))
        }
        async fn recommend_batch(
            &self,
            _r: Request<pb::RecommendBatchPoints>,
        ) -> Result<Response<pb::RecommendBatchResponse>, Status> {
            Err(unimplemented("recommend_batch"))
        }
        async fn recommend_groups(
            &self,
            _r: Request<pb::RecommendPointGroups>,
        ) -> Result<Response<pb::RecommendGroupsResponse>, Status> {
            Err(unimplemented("recommend_groups"))
        }
        async fn discover(
            &self,
            _r: Request<pb::DiscoverPoints>,
        ) -> Result<Response<pb::DiscoverResponse>, Status> {
            Err(unimplemented("discover"))
        }
        async fn discover_batch(
            &self,
            _r: Request<pb::DiscoverBatchPoints>,
        ) -> Result<Response<pb::DiscoverBatchResponse>, Status> {
            Err(unimplemented("discover_batch"))
        }
        async fn update_batch(
            &self,
            _r: Request<pb::UpdateBatchPoints>,
        ) -> Result<Response<pb::UpdateBatchResponse>, Status> {
            Err(unimplemented("update_batch"))
        }
        async fn query(
            &self,
            _r: Request<pb::QueryPoints>,
        ) -> Result<Response<pb::QueryResponse>, Status> {
            Err(unimplemented("query"))
        }
        async fn query_batch(
            &self,
            _r: Request<pb::QueryBatchPoints>,
        ) -> Result<Response<pb::QueryBatchResponse>, Status> {
            Err(unimplemented("query_batch"))
        }
        async fn query_groups(
            &self,
            _r: Request<pb::QueryPointGroups>,
        ) -> Result<Response<pb::QueryGroupsResponse>, Status> {
            Err(unimplemented("query_groups"))
        }
        async fn facet(
            &self,
            _r: Request<pb::FacetCounts>,
        ) -> Result<Response<pb::FacetResponse>, Status> {
            Err(unimplemented("facet"))
        }
        async fn search_matrix_pairs(
            &self,
            _r: Request<pb::SearchMatrixPoints>,
        ) -> Result<Response<pb::SearchMatrixPairsResponse>, Status> {
            Err(unimplemented("search_matrix_pairs"))
        }
        async fn search_matrix_offsets(
            &self,
            _r: Request<pb::SearchMatrixPoints>,
        ) -> Result<Response<pb::SearchMatrixOffsetsResponse>, Status> {
            Err(unimplemented("search_matrix_offsets"))
        }
    }

    #[tonic::async_trait]
    impl Snapshots for Grpc {
        async fn create(
            &self,
            r: Request<pb::CreateSnapshotRequest>,
        ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
            let c = r.into_inner().collection_name;
            let freeze = {
                let mut s = self.0.lock().unwrap();
                if s.freeze_on_snapshot {
                    s.stalled = true;
                }
                s.freeze_on_snapshot
            };
            if freeze {
                return std::future::pending().await;
            }
            let mut s = self.0.lock().unwrap();
            let (name, bytes) = take_snapshot(&mut s, &c).ok_or_else(|| not_found(&c))?;
            Ok(Response::new(pb::CreateSnapshotResponse {
                snapshot_description: Some(description(&name, &bytes)),
                time: 0.001,
            }))
        }

        async fn list(
            &self,
            r: Request<pb::ListSnapshotsRequest>,
        ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
            let c = r.into_inner().collection_name;
            let s = self.0.lock().unwrap();
            if !s.collections.contains_key(&c) {
                return Err(not_found(&c));
            }
            Ok(Response::new(pb::ListSnapshotsResponse {
                snapshot_descriptions: s
                    .snapshots
                    .iter()
                    .filter(|((k, _), _)| *k == c)
                    .map(|((_, n), b)| description(n, b))
                    .collect(),
                time: 0.001,
            }))
        }

        async fn delete(
            &self,
            r: Request<pb::DeleteSnapshotRequest>,
        ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
            let r = r.into_inner();
            let mut s = self.0.lock().unwrap();
            s.snapshots
                .remove(&(r.collection_name, r.snapshot_name.clone()))
                .ok_or_else(|| {
                    Status::not_found(format!("Snapshot {} not found", r.snapshot_name))
                })?;
            Ok(Response::new(pb::DeleteSnapshotResponse { time: 0.001 }))
        }

        async fn create_full(
            &self,
            _r: Request<pb::CreateFullSnapshotRequest>,
        ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
            let mut s = self.0.lock().unwrap();
            let (name, bytes) = take_full_snapshot(&mut s).map_err(Status::not_found)?;
            Ok(Response::new(pb::CreateSnapshotResponse {
                snapshot_description: Some(description(&name, &bytes)),
                time: 0.001,
            }))
        }

        async fn list_full(
            &self,
            _r: Request<pb::ListFullSnapshotsRequest>,
        ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
            let s = self.0.lock().unwrap();
            Ok(Response::new(pb::ListSnapshotsResponse {
                snapshot_descriptions: s
                    .full_snapshots
                    .iter()
                    .map(|(n, b)| description(n, b))
                    .collect(),
                time: 0.001,
            }))
        }

        async fn delete_full(
            &self,
            r: Request<pb::DeleteFullSnapshotRequest>,
        ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
            let name = r.into_inner().snapshot_name;
            let mut s = self.0.lock().unwrap();
            s.full_snapshots
                .remove(&name)
                .ok_or_else(|| Status::not_found(format!("Snapshot {name} not found")))?;
            Ok(Response::new(pb::DeleteSnapshotResponse { time: 0.001 }))
        }
    }
}
