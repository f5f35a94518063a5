//! A Vault HTTP **double**: an in-memory server written from Vault's API docs (not a real
//! Vault). It checks `X-Vault-Token`, serves `sys/mounts`, KV v1 (`LIST`/`GET`/`POST`/`PUT`)
//! and KV v2 (`data/`, `metadata/` with its settings — `max_versions`, `cas_required`,
//! `delete_version_after`, `custom_metadata`, and `cas_required` enforced on writes —
//! `delete/`, `destroy/`, `?version=N`), in Vault's response envelope (`request_id`,
//! `lease_id`, ... as vaultrs expects). With a namespace set, every call must carry it as
//! `X-Vault-Namespace` (anything else: 404, as for a route in another namespace). It can be
//! told to drop connections after N requests to simulate a server dying mid-transfer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A token allowed everywhere except `sys/mounts`.
pub const LIMITED_TOKEN: &str = "s.double-limited-token";

#[derive(Default)]
pub struct Version {
    pub data: Option<Value>,
    pub deleted: bool,
    pub destroyed: bool,
}

#[derive(Default)]
pub struct Inner {
    /// mount -> kv version
    pub mounts: BTreeMap<String, u8>,
    /// (mount, path) -> v1 data
    pub v1: BTreeMap<(String, String), Value>,
    /// (mount, path) -> versions (index 0 = version 1)
    pub v2: BTreeMap<(String, String), Vec<Version>>,
    /// (mount, path) -> KV v2 metadata settings (absent: defaults)
    pub settings: BTreeMap<(String, String), Value>,
    /// The namespace every request must name; `None`: the header must be absent.
    pub namespace: Option<String>,
    /// `X-Vault-Namespace` values seen (one per request that had one).
    pub namespaces_seen: Vec<String>,
    /// Answer metadata writes with 204 but keep nothing (a lossy target).
    pub ignore_metadata_writes: bool,
}

/// A snapshot body received: (sent to `snapshot-force`, bytes).
pub type Restored = (bool, Vec<u8>);

#[derive(Clone)]
pub struct Double {
    pub token: String,
    pub inner: Arc<Mutex<Inner>>,
    /// Requests served; when `fail_after` > 0 and reached, the server answers 503 / dies.
    pub served: Arc<AtomicUsize>,
    pub fail_after: Arc<AtomicUsize>,
    pub addr: String,
    /// The bytes `GET sys/storage/raft/snapshot` serves.
    pub snapshot: Arc<Mutex<Vec<u8>>>,
    /// Send half the snapshot, then break the connection.
    pub die_mid_snapshot: Arc<std::sync::atomic::AtomicBool>,
    /// Bodies received by `POST sys/storage/raft/snapshot[-force]`: (forced, bytes).
    pub restored: Arc<Mutex<Vec<Restored>>>,
}

impl Double {
    pub async fn start(token: &str, mounts: &[(&str, u8)]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mut inner = Inner::default();
        for (m, v) in mounts {
            inner.mounts.insert((*m).to_owned(), *v);
        }
        let d = Double {
            token: token.to_owned(),
            inner: Arc::new(Mutex::new(inner)),
            served: Arc::default(),
            fail_after: Arc::default(),
            addr,
            snapshot: Arc::default(),
            die_mid_snapshot: Arc::default(),
            restored: Arc::default(),
        };
        let app = Router::new()
            .fallback(handle)
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(d.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        d
    }
}

/// Percent-decode a request path.
fn decode(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({"errors": [msg]}))).into_response()
}

/// A 200 answer in Vault's envelope (vaultrs requires `request_id`, `lease_id`, ...).
fn ok(v: Value) -> Response {
    let mut v = v;
    if let Some(o) = v.as_object_mut() {
        for (k, d) in [
            ("request_id", json!("00000000-0000-0000-0000-00000000d0b1")),
            ("lease_id", json!("")),
            ("renewable", json!(false)),
            ("lease_duration", json!(0)),
            ("wrap_info", Value::Null),
            ("warnings", Value::Null),
            ("auth", Value::Null),
        ] {
            o.entry(k).or_insert(d);
        }
    }
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn default_settings() -> Value {
    json!({"max_versions": 0, "cas_required": false, "delete_version_after": "0s",
           "custom_metadata": null})
}

fn version_meta(n: usize, v: &Version) -> Value {
    json!({
        "created_time": "2026-01-01T00:00:00Z",
        "custom_metadata": null,
        "deletion_time": if v.deleted { "2026-01-02T00:00:00Z" } else { "" },
        "destroyed": v.destroyed,
        "version": n,
    })
}

fn meta_of(vs: &[Version], settings: &Value) -> Value {
    let mut versions = serde_json::Map::new();
    for (i, v) in vs.iter().enumerate() {
        versions.insert(
            (i + 1).to_string(),
            json!({
                "created_time": "2026-01-01T00:00:00Z",
                "deletion_time": if v.deleted { "2026-01-02T00:00:00Z" } else { "" },
                "destroyed": v.destroyed,
            }),
        );
    }
    let mut data = json!({
        "created_time": "2026-01-01T00:00:00Z", "updated_time": "2026-01-01T00:00:00Z",
        "current_version": vs.len(), "oldest_version": 0, "versions": versions,
    });
    for (k, v) in settings.as_object().unwrap() {
        data[k] = v.clone();
    }
    json!({ "data": data })
}

async fn handle(
    State(d): State<Double>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = d.served.fetch_add(1, Ordering::SeqCst) + 1;
    let fa = d.fail_after.load(Ordering::SeqCst);
    if fa > 0 && n > fa {
        return err(StatusCode::SERVICE_UNAVAILABLE, "double: server going away");
    }
    let token = headers.get("x-vault-token").and_then(|v| v.to_str().ok());
    // `LIMITED_TOKEN`: a token whose policy does not allow `sys/mounts` (like most).
    let limited = token == Some(LIMITED_TOKEN);
    if token != Some(d.token.as_str()) && !limited {
        return err(StatusCode::FORBIDDEN, "permission denied");
    }
    let ns = headers
        .get("x-vault-namespace")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    {
        let mut s = d.inner.lock().unwrap();
        if let Some(n) = &ns {
            s.namespaces_seen.push(n.clone());
        }
        if ns != s.namespace {
            return err(StatusCode::NOT_FOUND, "no handler for route");
        }
    }
    let path = decode(uri.path().trim_start_matches("/v1/").trim_end_matches('/'));
    let query = uri.query().unwrap_or("");
    let list = method.as_str() == "LIST" || query.contains("list=true");
    match (method.as_str(), path.as_str()) {
        ("GET", "sys/storage/raft/snapshot") => {
            let snap = d.snapshot.lock().unwrap().clone();
            let len = snap.len();
            let half = snap[..len / 2].to_vec();
            let rest = snap[len / 2..].to_vec();
            let die = d.die_mid_snapshot.load(Ordering::SeqCst);
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = if die {
                vec![
                    Ok(half),
                    Err(std::io::Error::other("double: killed mid-transfer")),
                ]
            } else {
                vec![Ok(half), Ok(rest)]
            };
            return Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/gzip")
                .header("content-length", len.to_string())
                .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
                .unwrap();
        }
        ("POST" | "PUT", "sys/storage/raft/snapshot" | "sys/storage/raft/snapshot-force") => {
            if body.is_empty() {
                return err(StatusCode::BAD_REQUEST, "missing snapshot");
            }
            d.restored
                .lock()
                .unwrap()
                .push((path.ends_with("-force"), body.to_vec()));
            return StatusCode::NO_CONTENT.into_response();
        }
        _ => {}
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = d.inner.lock().unwrap();
    if path == "sys/mounts" && limited {
        return err(StatusCode::FORBIDDEN, "1 error occurred: permission denied");
    }
    if let Some(m) = path.strip_prefix("sys/internal/ui/mounts/") {
        return match s.mounts.get(m) {
            Some(v) => ok(
                json!({"data": {"type": "kv", "path": format!("{m}/"), "options": {"version": v.to_string()}}}),
            ),
            None => err(StatusCode::FORBIDDEN, "permission denied"),
        };
    }
    if path == "sys/mounts" {
        let mut m = serde_json::Map::new();
        for (name, v) in &s.mounts {
            m.insert(
                format!("{name}/"),
                json!({"type": "kv", "options": {"version": v.to_string()},
                       "accessor": format!("kv_{name}"), "description": "",
                       "config": {"default_lease_ttl": 0, "force_no_cache": false,
                                  "max_lease_ttl": 0},
                       "external_entropy_access": false, "local": false, "seal_wrap": false,
                       "uuid": format!("0000-{name}")}),
            );
        }
        return ok(json!({"data": m}));
    }
    if let Some(m) = path.strip_prefix("sys/mounts/")
        && method == Method::POST
    {
        let v2 = body
            .get("options")
            .and_then(|o| o.get("version"))
            .and_then(Value::as_str)
            == Some("2");
        s.mounts.insert(m.to_owned(), if v2 { 2 } else { 1 });
        return StatusCode::NO_CONTENT.into_response();
    }
    let (mount, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let Some(kv) = s.mounts.get(mount).copied() else {
        return err(StatusCode::NOT_FOUND, "no handler for route");
    };
    let mount = mount.to_owned();
    let keys_under = |all: Vec<&String>, prefix: &str| -> Vec<String> {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut out: Vec<String> = all
            .into_iter()
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(|r| match r.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => r.to_owned(),
            })
            .collect();
        out.sort();
        out.dedup();
        out
    };
    if kv == 1 {
        let key = (mount.clone(), rest.to_owned());
        if list {
            let all: Vec<&String> =
                s.v1.keys()
                    .filter(|(m, _)| *m == mount)
                    .map(|(_, p)| p)
                    .collect();
            let keys = keys_under(all, rest);
            return if keys.is_empty() {
                err(StatusCode::NOT_FOUND, "")
            } else {
                ok(json!({"data": {"keys": keys}}))
            };
        }
        return match method.as_str() {
            "GET" => match s.v1.get(&key) {
                Some(v) => ok(json!({"data": v})),
                None => err(StatusCode::NOT_FOUND, ""),
            },
            "POST" | "PUT" => {
                s.v1.insert(key, body);
                StatusCode::NO_CONTENT.into_response()
            }
            "DELETE" => {
                s.v1.remove(&key);
                StatusCode::NO_CONTENT.into_response()
            }
            _ => err(StatusCode::METHOD_NOT_ALLOWED, "method"),
        };
    }
    let (op, p) = rest.split_once('/').unwrap_or((rest, ""));
    let key = (mount.clone(), p.to_owned());
    let version_q = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("version="))
        .and_then(|v| v.parse::<usize>().ok());
    match (op, method.as_str()) {
        ("metadata", _) if list => {
            let all: Vec<&String> =
                s.v2.keys()
                    .filter(|(m, _)| *m == mount)
                    .map(|(_, p)| p)
                    .collect();
            let keys = keys_under(all, p);
            if keys.is_empty() {
                err(StatusCode::NOT_FOUND, "")
            } else {
                ok(json!({"data": {"keys": keys}}))
            }
        }
        ("metadata", "GET") => match s.v2.get(&key) {
            Some(vs) => ok(meta_of(
                vs,
                s.settings.get(&key).unwrap_or(&default_settings()),
            )),
            None => err(StatusCode::NOT_FOUND, ""),
        },
        ("metadata", "POST" | "PUT") => {
            if s.ignore_metadata_writes {
                return StatusCode::NO_CONTENT.into_response();
            }
            let entry = s.settings.entry(key).or_insert_with(default_settings);
            for k in [
                "max_versions",
                "cas_required",
                "delete_version_after",
                "custom_metadata",
            ] {
                if let Some(v) = body.get(k) {
                    entry[k] = v.clone();
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("data", "GET") => {
            let Some(vs) = s.v2.get(&key) else {
                return err(StatusCode::NOT_FOUND, "");
            };
            let n = version_q.unwrap_or(vs.len());
            match vs.get(n.wrapping_sub(1)) {
                Some(Version {
                    data: Some(d),
                    deleted: false,
                    destroyed: false,
                }) => {
                    let meta = version_meta(n, &vs[n - 1]);
                    ok(json!({"data": {"data": d, "metadata": meta}}))
                }
                _ => err(StatusCode::NOT_FOUND, ""),
            }
        }
        ("data", "POST" | "PUT") => {
            let cas_required = s
                .settings
                .get(&key)
                .and_then(|st| st["cas_required"].as_bool())
                .unwrap_or(false);
            if cas_required && body.get("options").and_then(|o| o.get("cas")).is_none() {
                return err(
                    StatusCode::BAD_REQUEST,
                    "check-and-set parameter required for this call",
                );
            }
            let data = body.get("data").cloned().unwrap_or(Value::Null);
            let vs = s.v2.entry(key).or_default();
            vs.push(Version {
                data: Some(data),
                ..Version::default()
            });
            let meta = version_meta(vs.len(), &vs[vs.len() - 1]);
            ok(json!({ "data": meta }))
        }
        ("delete" | "destroy", "POST" | "PUT") => {
            let Some(vs) = s.v2.get_mut(&key) else {
                return err(StatusCode::NOT_FOUND, "");
            };
            for v in body
                .get("versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                if let Some(x) = v
                    .as_u64()
                    .and_then(|n| vs.get_mut((n as usize).wrapping_sub(1)))
                {
                    if op == "delete" {
                        x.deleted = true;
                    } else {
                        x.destroyed = true;
                        x.data = None;
                    }
                }
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => err(StatusCode::NOT_FOUND, "no handler for route"),
    }
}
