//! A **double** of n8n's public REST API (`/api/v1`), for the tests: no n8n server can be
//! installed here. It follows the documented endpoints and schemas of n8n's OpenAPI spec
//! (`packages/cli/src/public-api/v1/handlers/workflows/spec`): `X-N8N-API-KEY`
//! authentication, cursor paging (`limit` up to 250, `nextCursor`), workflow create and update
//! bodies that refuse read-only fields (`request/body/active is read-only`), missing required
//! ones and unknown ones, `activate` refused for a workflow without a trigger node, tags with
//! unique names, and `{"message": ...}` error bodies.

#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

const READ_ONLY: [&str; 10] = [
    "id",
    "active",
    "createdAt",
    "updatedAt",
    "isArchived",
    "versionId",
    "triggerCount",
    "meta",
    "tags",
    "activeVersion",
];
const WRITABLE: [&str; 10] = [
    "name",
    "nodes",
    "connections",
    "settings",
    "staticData",
    "pinData",
    "description",
    "externalId",
    "nodeGroups",
    "shared",
];
const REQUIRED: [&str; 4] = ["name", "nodes", "connections", "settings"];

#[derive(Default)]
pub struct Inner {
    pub workflows: BTreeMap<String, Value>,
    /// Tag ids per workflow.
    pub workflow_tags: BTreeMap<String, Vec<String>>,
    /// Tag names by id.
    pub tags: BTreeMap<String, String>,
    /// Every call, as `METHOD /path`.
    pub calls: Vec<String>,
    next: u64,
}

#[derive(Clone)]
struct Ctx {
    key: String,
    inner: Arc<Mutex<Inner>>,
}

pub struct N8nDouble {
    pub url: String,
    pub inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for N8nDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn now() -> String {
    "2026-12-01T00:00:00.000Z".to_owned()
}

impl Inner {
    /// A new id: 16 random letters and digits, as n8n makes them (two instances never
    /// share one).
    fn new_id(&mut self) -> String {
        use std::hash::{BuildHasher, Hasher};
        self.next += 1;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.next);
        let mut n = h.finish();
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(16);
        for _ in 0..16 {
            id.push(char::from(alphabet[(n % 62) as usize]));
            n = n / 62 + 0x9e37_79b9_7f4a_7c15 * u64::from(n.is_multiple_of(62));
        }
        id
    }

    fn with_tags(&self, id: &str) -> Option<Value> {
        let mut w = self.workflows.get(id)?.clone();
        w["tags"] = self.tag_list(id);
        Some(w)
    }

    fn tag_list(&self, id: &str) -> Value {
        Value::Array(
            self.workflow_tags
                .get(id)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|t| {
                            self.tags.get(t).map(|n| {
                                json!({"id": t, "name": n, "createdAt": now(), "updatedAt": now()})
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// A workflow as the test puts it there, bypassing the API's checks (active without a
    /// trigger, as an older instance allowed).
    pub fn insert(&mut self, mut w: Value, tags: &[&str]) -> String {
        let id = self.new_id();
        w["id"] = json!(id);
        w["createdAt"] = json!(now());
        w["updatedAt"] = json!(now());
        if w.get("active").is_none() {
            w["active"] = json!(false);
        }
        let mut ids = Vec::new();
        for t in tags {
            let tid = match self.tags.iter().find(|(_, n)| n.as_str() == *t) {
                Some((id, _)) => id.clone(),
                None => {
                    self.next += 1;
                    let tid = format!("tag{}", self.next);
                    self.tags.insert(tid.clone(), (*t).to_owned());
                    tid
                }
            };
            ids.push(tid);
        }
        self.workflow_tags.insert(id.clone(), ids);
        self.workflows.insert(id.clone(), w);
        id
    }
}

fn check_body(body: &Value) -> Result<(), Response> {
    let Some(obj) = body.as_object() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "request/body must be object",
        ));
    };
    for k in obj.keys() {
        if READ_ONLY.contains(&k.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("request/body/{k} is read-only"),
            ));
        }
        if !WRITABLE.contains(&k.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "request/body must NOT have additional properties",
            ));
        }
    }
    for r in REQUIRED {
        if !obj.contains_key(r) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                &format!("request/body must have required property '{r}'"),
            ));
        }
    }
    Ok(())
}

fn authorized(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Response> {
    match headers.get("x-n8n-api-key").and_then(|v| v.to_str().ok()) {
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "'X-N8N-API-KEY' header required",
        )),
        Some(k) if k == ctx.key => Ok(()),
        Some(_) => Err(error(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

fn page(items: Vec<Value>, q: &BTreeMap<String, String>) -> Response {
    let limit: usize = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(l)) if (1..=250).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "request/query/limit must be <= 250",
            );
        }
    };
    let start: usize = match q.get("cursor") {
        None => 0,
        Some(c) => match c.strip_prefix("cur-").and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return error(StatusCode::BAD_REQUEST, "An invalid cursor was provided"),
        },
    };
    let data: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let next = (start + limit < items.len()).then(|| format!("cur-{}", start + limit));
    Json(json!({ "data": data, "nextCursor": next })).into_response()
}

macro_rules! guard {
    ($ctx:expr, $headers:expr, $call:expr) => {{
        if let Err(r) = authorized(&$ctx, &$headers) {
            return r;
        }
        let Ok(mut inner) = $ctx.inner.lock() else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
        };
        inner.calls.push($call);
        inner
    }};
}

async fn list_workflows(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = guard!(ctx, headers, "GET /workflows".to_owned());
    let items: Vec<Value> = inner
        .workflows
        .keys()
        .filter_map(|id| inner.with_tags(id))
        .collect();
    page(items, &q)
}

async fn create_workflow(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = guard!(ctx, headers, "POST /workflows".to_owned());
    if let Err(r) = check_body(&body) {
        return r;
    }
    let mut w = body;
    let id = inner.new_id();
    w["id"] = json!(id);
    w["active"] = json!(false);
    w["createdAt"] = json!(now());
    w["updatedAt"] = json!(now());
    w["versionId"] = json!(format!("v-{id}"));
    inner.workflows.insert(id.clone(), w);
    inner.workflow_tags.insert(id.clone(), Vec::new());
    Json(inner.with_tags(&id).unwrap_or_default()).into_response()
}

async fn get_workflow(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let inner = guard!(ctx, headers, format!("GET /workflows/{id}"));
    match inner.with_tags(&id) {
        Some(w) => Json(w).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update_workflow(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = guard!(ctx, headers, format!("PUT /workflows/{id}"));
    if let Err(r) = check_body(&body) {
        return r;
    }
    let Some(old) = inner.workflows.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut w = body;
    for k in ["id", "active", "createdAt", "versionId"] {
        if let Some(v) = old.get(k) {
            w[k] = v.clone();
        }
    }
    w["updatedAt"] = json!(now());
    inner.workflows.insert(id.clone(), w);
    Json(inner.with_tags(&id).unwrap_or_default()).into_response()
}

async fn delete_workflow(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = guard!(ctx, headers, format!("DELETE /workflows/{id}"));
    let Some(w) = inner.with_tags(&id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    inner.workflows.remove(&id);
    inner.workflow_tags.remove(&id);
    Json(w).into_response()
}

fn has_trigger(w: &Value) -> bool {
    w.get("nodes")
        .and_then(Value::as_array)
        .is_some_and(|nodes| {
            nodes.iter().any(|n| {
                n.get("type").and_then(Value::as_str).is_some_and(|t| {
                    let t = t.to_ascii_lowercase();
                    t.contains("trigger") || t.ends_with(".webhook")
                })
            })
        })
}

async fn activate(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
) -> Response {
    let mut inner = guard!(ctx, headers, format!("POST /workflows/{id}/{verb}"));
    let Some(w) = inner.workflows.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    match verb.as_str() {
        "activate" => {
            if !has_trigger(w) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Workflow has no node to start the workflow - at least one trigger, poller or webhook node is required",
                );
            }
            w["active"] = json!(true);
        }
        "deactivate" => w["active"] = json!(false),
        _ => return error(StatusCode::NOT_FOUND, "Not Found"),
    }
    Json(inner.with_tags(&id).unwrap_or_default()).into_response()
}

async fn workflow_tags(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let inner = guard!(ctx, headers, format!("GET /workflows/{id}/tags"));
    if !inner.workflows.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    Json(inner.tag_list(&id)).into_response()
}

async fn set_workflow_tags(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = guard!(ctx, headers, format!("PUT /workflows/{id}/tags"));
    if !inner.workflows.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(items) = body.as_array() else {
        return error(StatusCode::BAD_REQUEST, "request/body must be array");
    };
    let mut ids = Vec::new();
    for t in items {
        let Some(tid) = t.get("id").and_then(Value::as_str) else {
            return error(
                StatusCode::BAD_REQUEST,
                "request/body/0 must have required property 'id'",
            );
        };
        if !inner.tags.contains_key(tid) {
            return error(StatusCode::NOT_FOUND, "Some tags not found");
        }
        ids.push(tid.to_owned());
    }
    inner.workflow_tags.insert(id.clone(), ids);
    Json(inner.tag_list(&id)).into_response()
}

async fn list_tags(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = guard!(ctx, headers, "GET /tags".to_owned());
    let items: Vec<Value> = inner
        .tags
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name, "createdAt": now(), "updatedAt": now()}))
        .collect();
    page(items, &q)
}

async fn create_tag(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = guard!(ctx, headers, "POST /tags".to_owned());
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return error(
            StatusCode::BAD_REQUEST,
            "request/body must have required property 'name'",
        );
    };
    if inner.tags.values().any(|n| n == name) {
        return error(StatusCode::CONFLICT, "Tag already exists");
    }
    inner.next += 1;
    let id = format!("tag{}", inner.next);
    inner.tags.insert(id.clone(), name.to_owned());
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "name": name, "createdAt": now(), "updatedAt": now()})),
    )
        .into_response()
}

impl N8nDouble {
    pub async fn start(key: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let ctx = Ctx {
            key: key.to_owned(),
            inner: inner.clone(),
        };
        let app = Router::new()
            .route(
                "/api/v1/workflows",
                get(list_workflows).post(create_workflow),
            )
            .route(
                "/api/v1/workflows/{id}",
                get(get_workflow)
                    .put(update_workflow)
                    .delete(delete_workflow),
            )
            .route("/api/v1/workflows/{id}/{verb}", post(activate))
            .route(
                "/api/v1/workflows/{id}/tags",
                get(workflow_tags).put(set_workflow_tags),
            )
            .route("/api/v1/tags", get(list_tags).post(create_tag))
            .with_state(ctx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}"),
            inner,
            task,
        }
    }

    /// The workflows the instance holds now, with their tags.
    pub fn workflows(&self) -> Vec<Value> {
        let inner = self.inner.lock().expect("lock");
        inner
            .workflows
            .keys()
            .filter_map(|id| inner.with_tags(id))
            .collect()
    }

    /// The calls that changed something (everything but `GET`).
    pub fn writes(&self) -> Vec<String> {
        self.inner
            .lock()
            .expect("lock")
            .calls
            .iter()
            .filter(|c| !c.starts_with("GET "))
            .cloned()
            .collect()
    }
}
