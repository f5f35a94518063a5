//! A **double** of the Qdrant REST API (not Qdrant): the routes and JSON shapes of
//! `qdrant-openapi-1.18.2.json` that zdr-qdrant uses, over in-memory collections, with the
//! `api-key` header checked on every route (401 when missing, 403 when wrong) and switches
//! to corrupt the next snapshot download, drop the connection mid-download, or report
//! another server version. Its snapshot format is its own (JSON), not Qdrant's.

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
    aliases: Vec<(String, String)>,
    version: String,
    corrupt_next_download: bool,
    die_after: Option<usize>,
    counter: u64,
}

/// A running double; dropped with the test's runtime.
#[derive(Clone)]
pub struct QdrantDouble {
    inner: Arc<Mutex<Inner>>,
    /// The base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The API key it requires.
    pub api_key: String,
}

type Shared = (Arc<Mutex<Inner>>, String);

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
        Self {
            inner,
            url: format!("http://{addr}"),
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

    /// Snapshots currently held on the "server" for collection `c`.
    pub fn snapshot_count(&self, c: &str) -> usize {
        let inner = self.inner.lock().unwrap();
        inner.snapshots.keys().filter(|(k, _)| k == c).count()
    }
}

async fn auth(State((_, key)): State<Shared>, req: Request, next: Next) -> Response {
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
    let Some(col) = s.collections.get(&c) else {
        return missing(&c);
    };
    let mut bytes = serde_json::to_vec(&json!({
        "vectors": col.vectors, "payload_schema": col.payload_schema, "points": col.points,
    }))
    .unwrap();
    // Pad to a realistic size so transfers span many chunks.
    bytes.extend(std::iter::repeat_n(b' ', 256 * 1024));
    s.counter += 1;
    let name = format!("{c}-{}-2026-11-25-23-59-59.snapshot", s.counter);
    let desc = json!({"name": name, "creation_time": "2026-11-25T23:59:59", "size": bytes.len(),
                      "checksum": sha(&bytes)});
    s.snapshots.insert((c, name), bytes);
    ok(desc)
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
    let Some(mut bytes) = s.snapshots.get(&(c.clone(), name.clone())).cloned() else {
        return fail(StatusCode::NOT_FOUND, format!("Snapshot {name} not found"));
    };
    if std::mem::take(&mut s.corrupt_next_download) {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
    }
    let headers = [(header::CONTENT_TYPE, "application/octet-stream")];
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
fn file_part(headers: &HeaderMap, body: &[u8]) -> Option<Vec<u8>> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let boundary = ct.split("boundary=").nth(1)?.trim_matches('"');
    let start_marker = format!("--{boundary}");
    let pos = find(body, start_marker.as_bytes())?;
    let after = &body[pos + start_marker.len()..];
    let headers_end = find(after, b"\r\n\r\n")? + 4;
    let data = &after[headers_end..];
    let end = find(data, format!("\r\n--{boundary}").as_bytes())?;
    Some(data[..end].to_vec())
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
    let Some(file) = file_part(&headers, &body) else {
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
    let Ok(snap) = serde_json::from_slice::<Value>(&file) else {
        return fail(StatusCode::BAD_REQUEST, "not a snapshot of this double");
    };
    let mut s = s.lock().unwrap();
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
