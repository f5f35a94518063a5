//! A local **Microsoft Graph API double** for OneDrive — a test double, *not* Microsoft
//! Graph. It is an HTTP server on `127.0.0.1` (a free port) that holds a OneDrive
//! personal drive in memory and implements exactly the Graph calls that OpenDAL's
//! `onedrive` service (0.59) makes, with Graph's status codes and error bodies:
//!
//! | call | Graph endpoint |
//! | --- | --- |
//! | stat | `GET /v1.0/me/drive/root` and `GET /v1.0/me/drive/root:/PATH` (`If-None-Match` → 304) |
//! | list | `GET .../root/children`, `GET .../root:/PATH:/children`, paged with `$top` and an absolute `@odata.nextLink` (`$skiptoken`) |
//! | read | `GET .../root:/PATH:/content` → `302` to a pre-authenticated download URL on this server, which honours `Range` (206) |
//! | small write | `PUT .../root:/PATH:/content?@microsoft.graph.conflictBehavior=...` (creates parent folders; `If-Match` → 412; 201 new / 200 replaced) |
//! | large write | `POST .../root:/PATH:/createUploadSession` → an absolute `uploadUrl` on this server; `PUT` fragments with `Content-Range` (in order, multiples of 320 KiB except the last, no `Authorization`), `202` until the last → `201` new / `200` replaced; `DELETE` cancels |
//! | create_dir | `POST .../root:/PARENT:/children` with `{"name", "folder": {}, "@microsoft.graph.conflictBehavior"}` |
//! | delete | `DELETE .../root:/PATH` (recursive, `204`) |
//! | token | `POST /common/oauth2/v2.0/token` with `grant_type=refresh_token` → `{"access_token", "refresh_token", "expires_in"}`; Entra-style `invalid_grant` / `invalid_client` errors |
//!
//! Every Graph call must carry `Authorization: Bearer <token>` with a token this double
//! issued and has not expired; otherwise it answers `401 InvalidAuthenticationToken` like
//! Graph. [`GraphDouble::expire_access_tokens`] expires all issued access tokens, and
//! [`GraphDouble::refresh_count`] counts successful token refreshes.
//!
//! Not implemented (answered with `501 notImplemented`): copy, move (`PATCH`), versions,
//! `conflictBehavior=rename`. Paths are case-insensitive and case-preserving, as in
//! OneDrive. Choices where real Graph's behaviour is not verified: `parentReference.path`
//! is returned without percent-encoding; the root item carries no parent `path`/`id`;
//! creating a folder that exists with `conflictBehavior=replace` keeps it and its content;
//! the last upload-session fragment is answered `201` for a new file and `200` for a
//! replaced one (Graph documents both answers).
//!
//! `GET` on an upload URL answers the session's `nextExpectedRanges`, as Graph does.
//!
//! Test helpers beyond the Graph surface: [`GraphDouble::set_page_size`],
//! [`GraphDouble::calls`], [`GraphDouble::put_file`], fault injection with
//! [`GraphDouble::fail_fragments`] and [`GraphDouble::reject_upload_sessions`], and
//! observation with [`GraphDouble::max_request_body`] and
//! [`GraphDouble::open_upload_sessions`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use zdr_storage::onedrive::OneDriveConfig;

/// The application (client) ID the double accepts.
pub const CLIENT_ID: &str = "00000000-d0b1-e000-0000-graphdouble0";
/// The client secret the double accepts (it plays a confidential "Web" app).
pub const CLIENT_SECRET: &str = "graph-double-client-secret";
/// The refresh token the double accepts from the start.
pub const REFRESH_TOKEN: &str = "graph-double-refresh-token-0";
/// The drive id in `parentReference.driveId`.
pub const DRIVE_ID: &str = "d0ub1ed0ub1e0001";

/// Lifetime reported in `expires_in`, as Entra does (about an hour).
const TOKEN_LIFETIME_SECS: u64 = 3600;
/// Graph's simple-upload limit.
const SIMPLE_UPLOAD_MAX: usize = 250 * 1024 * 1024;
/// Graph's fragment granularity and maximum.
const FRAGMENT_UNIT: usize = 320 * 1024;
const FRAGMENT_MAX: usize = 60 * 1024 * 1024;
const BODY_LIMIT: usize = 300 * 1024 * 1024;
const GRAPH_ROOT: &str = "/v1.0/me/drive/root";
const TOKEN_PATH: &str = "/common/oauth2/v2.0/token";

/// A running Graph double; dropping it stops the server.
pub struct GraphDouble {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    base: String,
    refreshes: AtomicUsize,
    drive: Mutex<Drive>,
}

#[derive(Clone)]
struct Item {
    /// Case-preserved path from the drive root, without leading `/` (`""` for the root).
    path: String,
    name: String,
    id: String,
    folder: bool,
    data: Bytes,
    version: u64,
    created: SystemTime,
    modified: SystemTime,
}

struct UploadSession {
    path: String,
    behavior: String,
    if_match: Option<String>,
    total: Option<usize>,
    data: Vec<u8>,
}

/// Make upload-session fragment `PUT`s fail (see [`GraphDouble::fail_fragments`]).
#[derive(Clone, Debug)]
pub struct FragmentFaults {
    /// How many fragment `PUT`s fail.
    pub count: usize,
    /// The status they are answered with, such as 503, 429 or 400.
    pub status: u16,
    /// Only fragments starting at or after this offset fail.
    pub from_offset: usize,
    /// Apply the fragment first, then answer with the error: an answer lost on the way.
    pub apply: bool,
    /// A `Retry-After` header (seconds) on the failure.
    pub retry_after: Option<u64>,
}

impl FragmentFaults {
    /// `count` fragments rejected with `status`, not applied, no `Retry-After`.
    pub fn new(count: usize, status: u16) -> Self {
        Self {
            count,
            status,
            from_offset: 0,
            apply: false,
            retry_after: None,
        }
    }
}

struct Drive {
    /// Keyed by the lowercased path.
    items: BTreeMap<String, Item>,
    access_tokens: HashSet<String>,
    refresh_tokens: HashSet<String>,
    sessions: HashMap<String, UploadSession>,
    downloads: HashMap<String, String>,
    page_size: usize,
    counter: u64,
    calls: Vec<String>,
    faults: Option<FragmentFaults>,
    reject_sessions: Option<u16>,
    max_body: usize,
}

impl GraphDouble {
    /// Start the double on `127.0.0.1` with a free port. Needs a tokio runtime.
    pub async fn start() -> GraphDouble {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Graph double");
        let addr = listener.local_addr().expect("local address");
        let now = SystemTime::now();
        let mut items = BTreeMap::new();
        items.insert(
            String::new(),
            Item {
                path: String::new(),
                name: "root".into(),
                id: format!("{DRIVE_ID}!root"),
                folder: true,
                data: Bytes::new(),
                version: 1,
                created: now,
                modified: now,
            },
        );
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            refreshes: AtomicUsize::new(0),
            drive: Mutex::new(Drive {
                items,
                access_tokens: HashSet::new(),
                refresh_tokens: HashSet::from([REFRESH_TOKEN.to_owned()]),
                sessions: HashMap::new(),
                downloads: HashMap::new(),
                page_size: 200,
                counter: 0,
                calls: Vec::new(),
                faults: None,
                reject_sessions: None,
                max_body: 0,
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GraphDouble { shared, task }
    }

    /// The value for `graph_endpoint`: replaces `https://graph.microsoft.com`.
    pub fn graph_endpoint(&self) -> String {
        self.shared.base.clone()
    }

    /// The value for `token_endpoint`.
    pub fn token_endpoint(&self) -> String {
        format!("{}{TOKEN_PATH}", self.shared.base)
    }

    /// Successful `grant_type=refresh_token` exchanges so far.
    pub fn refresh_count(&self) -> usize {
        self.shared.refreshes.load(Ordering::SeqCst)
    }

    /// Expire every access token issued so far: the next Graph call with one gets `401`.
    pub fn expire_access_tokens(&self) {
        self.shared.drive().access_tokens.clear();
    }

    /// The content of the file at `path` (from the drive root, such as `"zdr/a.bin"`;
    /// case-insensitive), if it exists and is a file.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        let key = normalize(path).to_lowercase();
        let drive = self.shared.drive();
        drive
            .items
            .get(&key)
            .filter(|i| !i.folder)
            .map(|i| i.data.to_vec())
    }

    /// Put a file into the drive directly (creating its folders), bypassing the API.
    pub fn put_file(&self, path: &str, data: &[u8]) {
        let mut drive = self.shared.drive();
        drive
            .store_file(&normalize(path), Bytes::copy_from_slice(data))
            .map_err(|_| "a parent is a file")
            .unwrap();
    }

    /// Page size of children listings when the client sends no `$top` (Graph: 200).
    pub fn set_page_size(&self, n: usize) {
        self.shared.drive().page_size = n.max(1);
    }

    /// The requests served so far, as `"METHOD /path"` (no query), oldest first.
    pub fn calls(&self) -> Vec<String> {
        self.shared.drive().calls.clone()
    }

    /// Make the next fragment `PUT`s fail as `faults` says (replacing earlier faults).
    pub fn fail_fragments(&self, faults: FragmentFaults) {
        self.shared.drive().faults = Some(faults);
    }

    /// Answer `createUploadSession` with `status` (`403 accessDenied`, `507
    /// quotaLimitReached`, others `serviceNotAvailable`) while set; `None` stops it.
    pub fn reject_upload_sessions(&self, status: Option<u16>) {
        self.shared.drive().reject_sessions = status;
    }

    /// The largest request body received so far, in bytes.
    pub fn max_request_body(&self) -> usize {
        self.shared.drive().max_body
    }

    /// Upload sessions created and neither completed nor cancelled.
    pub fn open_upload_sessions(&self) -> usize {
        self.shared.drive().sessions.len()
    }

    /// A tier config for the folder `root` with the credentials the double accepts and
    /// both endpoints pointing at it.
    pub fn config(&self, root: &str) -> OneDriveConfig {
        OneDriveConfig {
            root: Some(root.to_owned()),
            client_id: Some(CLIENT_ID.to_owned()),
            client_secret: Some(CLIENT_SECRET.into()),
            refresh_token: Some(REFRESH_TOKEN.into()),
            graph_endpoint: Some(self.graph_endpoint()),
            token_endpoint: Some(self.token_endpoint()),
            ..Default::default()
        }
    }
}

impl Drop for GraphDouble {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn drive(&self) -> MutexGuard<'_, Drive> {
        self.drive.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Trim slashes; the double's canonical path form.
fn normalize(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

fn base_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn query_get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// RFC 3339 in UTC with seconds, as Graph writes `lastModifiedDateTime`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": rfc3339(SystemTime::now()),
                "request-id": "00000000-0000-0000-0000-000000000000",
                "client-request-id": "00000000-0000-0000-0000-000000000000"
            }
        }
    });
    (status, axum::Json(body)).into_response()
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        "The resource could not be found.",
    )
}

fn not_implemented(what: &str) -> Response {
    graph_error(
        StatusCode::NOT_IMPLEMENTED,
        "notImplemented",
        &format!("the Graph double does not implement {what}"),
    )
}

fn oauth_error(status: StatusCode, error: &str, description: &str, code: u32) -> Response {
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": rfc3339(SystemTime::now()),
        "trace_id": "00000000-0000-0000-0000-000000000000",
        "correlation_id": "00000000-0000-0000-0000-000000000000"
    });
    (status, axum::Json(body)).into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Item {
    fn etag(&self) -> String {
        format!("\"{{{}}},{}\"", self.id, self.version)
    }
}

enum StoreError {
    ParentIsFile,
}

impl Drive {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn token(&mut self, kind: &str) -> String {
        let n = self.next();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        format!("dbl-{kind}-{n}-{nanos:08x}")
    }

    fn get(&self, path: &str) -> Option<&Item> {
        self.items.get(&path.to_lowercase())
    }

    fn children(&self, path: &str) -> Vec<&Item> {
        let key = path.to_lowercase();
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        self.items
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k.is_empty() && !k[prefix.len()..].contains('/'))
            .map(|(_, v)| v)
            .collect()
    }

    fn descendants_size(&self, path: &str) -> usize {
        let key = path.to_lowercase();
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        self.items
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.data.len())
            .sum()
    }

    /// Create the folders up to and including `path` (which must not be a file).
    fn ensure_folders(&mut self, path: &str) -> Result<(), StoreError> {
        if path.is_empty() {
            return Ok(());
        }
        let mut current = String::new();
        for part in path.split('/') {
            if !current.is_empty() {
                current.push('/');
            }
            current.push_str(part);
            match self.get(&current) {
                Some(i) if i.folder => {
                    // Keep the stored casing for the rest of the path.
                    current = i.path.clone();
                }
                Some(_) => return Err(StoreError::ParentIsFile),
                None => {
                    let now = SystemTime::now();
                    let id = format!("{DRIVE_ID}!{}", self.next());
                    self.items.insert(
                        current.to_lowercase(),
                        Item {
                            path: current.clone(),
                            name: part.to_owned(),
                            id,
                            folder: true,
                            data: Bytes::new(),
                            version: 1,
                            created: now,
                            modified: now,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Store a file, creating parents; `Ok(true)` if it was new.
    fn store_file(&mut self, path: &str, data: Bytes) -> Result<bool, StoreError> {
        self.ensure_folders(parent_of(path))?;
        let parent_path = self.get(parent_of(path)).map(|p| p.path.clone());
        let full = match parent_path {
            Some(p) if !p.is_empty() => format!("{p}/{}", base_name(path)),
            _ => base_name(path).to_owned(),
        };
        let now = SystemTime::now();
        let key = path.to_lowercase();
        if let Some(existing) = self.items.get_mut(&key) {
            existing.data = data;
            existing.version += 1;
            existing.modified = now;
            return Ok(false);
        }
        let id = format!("{DRIVE_ID}!{}", self.next());
        self.items.insert(
            key,
            Item {
                path: full,
                name: base_name(path).to_owned(),
                id,
                folder: false,
                data,
                version: 1,
                created: now,
                modified: now,
            },
        );
        Ok(true)
    }

    fn item_json(&self, item: &Item) -> Value {
        let mut v = json!({
            "id": item.id,
            "name": item.name,
            "eTag": item.etag(),
            "cTag": format!("\"c:{{{}}},{}\"", item.id, item.version),
            "createdDateTime": rfc3339(item.created),
            "lastModifiedDateTime": rfc3339(item.modified),
        });
        if item.path.is_empty() {
            // The root item: no parent path or id.
            v["root"] = json!({});
            v["size"] = json!(self.descendants_size(""));
            v["parentReference"] = json!({"driveId": DRIVE_ID, "driveType": "personal"});
            v["folder"] = json!({"childCount": self.children("").len()});
            return v;
        }
        let parent = parent_of(&item.path);
        let parent_id = self.get(parent).map(|p| p.id.clone()).unwrap_or_default();
        let parent_path = if parent.is_empty() {
            "/drive/root:".to_owned()
        } else {
            format!("/drive/root:/{parent}")
        };
        v["parentReference"] = json!({
            "driveType": "personal",
            "driveId": DRIVE_ID,
            "id": parent_id,
            "path": parent_path,
        });
        if item.folder {
            v["size"] = json!(self.descendants_size(&item.path));
            v["folder"] = json!({"childCount": self.children(&item.path).len()});
        } else {
            v["size"] = json!(item.data.len());
            v["file"] = json!({"mimeType": "application/octet-stream"});
        }
        v
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return graph_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "requestTooLarge",
                "body too large",
            );
        }
    };
    let method = parts.method;
    let path = parts.uri.path().to_owned();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let headers = parts.headers;
    let mut drive = shared.drive();
    drive.calls.push(format!("{method} {path}"));
    drive.max_body = drive.max_body.max(body.len());

    if path == TOKEN_PATH {
        if method != Method::POST {
            return oauth_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "use POST",
                900_561,
            );
        }
        return token(&shared, &mut drive, &body);
    }
    if let Some(id) = path.strip_prefix("/download/") {
        return download(&drive, id, &query, &headers, method);
    }
    if let Some(id) = path.strip_prefix("/upload/") {
        return upload_fragment(&mut drive, id, &method, &headers, body);
    }
    let Some(rest) = path.strip_prefix(GRAPH_ROOT) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Resource not found for the segment in {path}"),
        );
    };

    // Every Graph call is authenticated.
    let token = header_str(&headers, header::AUTHORIZATION).and_then(|h| h.strip_prefix("Bearer "));
    match token {
        Some(t) if drive.access_tokens.contains(t) => {}
        other => {
            let message = if other.is_some() {
                "Access token has expired or is not yet valid."
            } else {
                "Access token is empty."
            };
            let mut resp = graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
                ),
            );
            return resp;
        }
    }

    // `root`, `root/children`, `root:/PATH`, `root:/PATH:`, `root:/PATH:/ACTION`.
    let (item_path, action) = if rest.is_empty() {
        (String::new(), String::new())
    } else if rest == "/children" {
        (String::new(), "children".to_owned())
    } else if let Some(r) = rest.strip_prefix(':') {
        match r.split_once(':') {
            Some((p, a)) => (p.to_owned(), a.trim_start_matches('/').to_owned()),
            None => (r.to_owned(), String::new()),
        }
    } else {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid request");
    };
    let item_path = normalize(&percent_decode(&item_path, false));

    let behavior = query_get(&query, "@microsoft.graph.conflictBehavior").map(str::to_owned);
    match (method.clone(), action.as_str()) {
        (Method::GET, "") => {
            let Some(item) = drive.get(&item_path) else {
                return not_found();
            };
            if header_str(&headers, header::IF_NONE_MATCH) == Some(item.etag().as_str()) {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            axum::Json(drive.item_json(item)).into_response()
        }
        (Method::DELETE, "") => {
            if item_path.is_empty() {
                return graph_error(
                    StatusCode::FORBIDDEN,
                    "accessDenied",
                    "The root cannot be deleted.",
                );
            }
            let key = item_path.to_lowercase();
            if !drive.items.contains_key(&key) {
                return not_found();
            }
            let prefix = format!("{key}/");
            drive
                .items
                .retain(|k, _| k != &key && !k.starts_with(&prefix));
            StatusCode::NO_CONTENT.into_response()
        }
        (Method::GET, "children") => {
            list_children(&shared, &drive, &item_path, &path, &raw_query, &query)
        }
        (Method::POST, "children") => create_folder(&mut drive, &item_path, &body),
        (Method::GET, "content") => {
            let Some(item) = drive.get(&item_path) else {
                return not_found();
            };
            if item.folder {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "notSupported",
                    "Cannot download the content of a folder.",
                );
            }
            if header_str(&headers, header::IF_NONE_MATCH) == Some(item.etag().as_str()) {
                return StatusCode::NOT_MODIFIED.into_response();
            }
            let id = item.id.clone();
            let tempauth = drive.token("tempauth");
            drive.downloads.insert(tempauth.clone(), id.clone());
            let location = format!("{}/download/{id}?tempauth={tempauth}", shared.base);
            Response::builder()
                .status(StatusCode::FOUND)
                .header(header::LOCATION, location)
                .body(Body::empty())
                .unwrap()
        }
        (Method::PUT, "content") => {
            if item_path.is_empty() {
                return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "No file name.");
            }
            if body.len() > SIMPLE_UPLOAD_MAX {
                return graph_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "requestTooLarge",
                    "Simple upload is limited to 250 MB; use an upload session.",
                );
            }
            if let Some(r) = check_write(
                &drive,
                &item_path,
                behavior.as_deref(),
                header_str(&headers, header::IF_MATCH),
            ) {
                return r;
            }
            commit(&mut drive, &item_path, body)
        }
        (Method::POST, "createUploadSession") => {
            if item_path.is_empty() {
                return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "No file name.");
            }
            let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let behavior = body_json["item"]["@microsoft.graph.conflictBehavior"]
                .as_str()
                .map(str::to_owned)
                .or(behavior)
                .unwrap_or_else(|| "replace".to_owned());
            let if_match = header_str(&headers, header::IF_MATCH).map(str::to_owned);
            if let Some(r) = check_write(&drive, &item_path, Some(&behavior), if_match.as_deref()) {
                return r;
            }
            if let Some(status) = drive.reject_sessions {
                let status = StatusCode::from_u16(status).unwrap();
                let (code, message) = match status.as_u16() {
                    403 => ("accessDenied", "Access denied."),
                    507 => ("quotaLimitReached", "Insufficient Space Available."),
                    _ => ("serviceNotAvailable", "The service is not available."),
                };
                return graph_error(status, code, message);
            }
            let id = drive.token("session");
            drive.sessions.insert(
                id.clone(),
                UploadSession {
                    path: item_path,
                    behavior,
                    if_match,
                    total: None,
                    data: Vec::new(),
                },
            );
            let expires = rfc3339(SystemTime::now() + Duration::from_secs(3600));
            axum::Json(json!({
                "uploadUrl": format!("{}/upload/{id}", shared.base),
                "expirationDateTime": expires,
                "nextExpectedRanges": ["0-"],
            }))
            .into_response()
        }
        (_, "versions") => not_implemented("versions"),
        (_, "copy") => not_implemented("copy"),
        (Method::PATCH, _) => not_implemented("move/update (PATCH)"),
        (m, a) => graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalidRequest",
            &format!("{m} is not allowed on {a:?}"),
        ),
    }
}

/// Conflict and precondition checks before writing `path`.
fn check_write(
    drive: &Drive,
    path: &str,
    behavior: Option<&str>,
    if_match: Option<&str>,
) -> Option<Response> {
    let existing = drive.get(path);
    if let Some(item) = existing {
        if item.folder {
            return Some(graph_error(
                StatusCode::CONFLICT,
                "nameAlreadyExists",
                "A folder with the same name already exists.",
            ));
        }
        if behavior == Some("fail") {
            return Some(graph_error(
                StatusCode::CONFLICT,
                "nameAlreadyExists",
                "The specified item name already exists.",
            ));
        }
        if if_match.is_some_and(|m| m != "*" && m != item.etag()) {
            return Some(graph_error(
                StatusCode::PRECONDITION_FAILED,
                "preconditionFailed",
                "ETag does not match current item's value",
            ));
        }
    }
    if behavior == Some("rename") {
        return Some(not_implemented("conflictBehavior=rename"));
    }
    None
}

/// Store the file and answer like Graph: 201 new, 200 replaced, with the item.
fn commit(drive: &mut Drive, path: &str, data: Bytes) -> Response {
    match drive.store_file(path, data) {
        Ok(new) => {
            let item = drive.get(path).cloned().unwrap();
            let status = if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, axum::Json(drive.item_json(&item))).into_response()
        }
        Err(StoreError::ParentIsFile) => graph_error(
            StatusCode::CONFLICT,
            "nameAlreadyExists",
            "A file exists where a parent folder was expected.",
        ),
    }
}

fn list_children(
    shared: &Shared,
    drive: &Drive,
    path: &str,
    url_path: &str,
    raw_query: &str,
    query: &[(String, String)],
) -> Response {
    match drive.get(path) {
        Some(i) if i.folder => {}
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                "The item is not a folder.",
            );
        }
        None => return not_found(),
    }
    let top = query_get(query, "$top")
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|t| *t > 0)
        .unwrap_or(drive.page_size);
    let skip = query_get(query, "$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let children = drive.children(path);
    let page: Vec<Value> = children
        .iter()
        .skip(skip)
        .take(top)
        .map(|i| drive.item_json(i))
        .collect();
    let mut body = json!({ "value": page });
    if skip + top < children.len() {
        let kept: Vec<&str> = raw_query
            .split('&')
            .filter(|p| {
                !p.is_empty() && !p.starts_with("$skiptoken=") && !p.starts_with("%24skiptoken=")
            })
            .collect();
        let mut q = kept.join("&");
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&format!("$skiptoken={}", skip + top));
        body["@odata.nextLink"] = json!(format!("{}{url_path}?{q}", shared.base));
    }
    axum::Json(body).into_response()
}

fn create_folder(drive: &mut Drive, parent: &str, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Invalid JSON body.",
        );
    };
    let Some(name) = req["name"]
        .as_str()
        .filter(|n| !n.is_empty() && !n.contains('/'))
    else {
        return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "Invalid name.");
    };
    if req.get("folder").is_none() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "Only folder creation is supported by POST children.",
        );
    }
    let behavior = req["@microsoft.graph.conflictBehavior"]
        .as_str()
        .unwrap_or("fail");
    let parent_item = match drive.get(parent) {
        Some(p) if p.folder => p.clone(),
        Some(_) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                "The parent is not a folder.",
            );
        }
        None => return not_found(),
    };
    let path = if parent_item.path.is_empty() {
        name.to_owned()
    } else {
        format!("{}/{name}", parent_item.path)
    };
    if let Some(existing) = drive.get(&path).cloned() {
        match behavior {
            "fail" => {
                return graph_error(
                    StatusCode::CONFLICT,
                    "nameAlreadyExists",
                    "The specified item name already exists.",
                );
            }
            // The double keeps an existing folder and its content on `replace`.
            "replace" if existing.folder => {
                return (StatusCode::OK, axum::Json(drive.item_json(&existing))).into_response();
            }
            "replace" => {
                drive.items.remove(&path.to_lowercase());
            }
            _ => return not_implemented("conflictBehavior=rename"),
        }
    }
    if drive.ensure_folders(&path).is_err() {
        return graph_error(
            StatusCode::CONFLICT,
            "nameAlreadyExists",
            "A parent is a file.",
        );
    }
    let item = drive.get(&path).cloned().unwrap();
    (StatusCode::CREATED, axum::Json(drive.item_json(&item))).into_response()
}

fn token(shared: &Shared, drive: &mut Drive, body: &[u8]) -> Response {
    let form = parse_query(&String::from_utf8_lossy(body));
    let get = |k: &str| query_get(&form, k).unwrap_or("");
    if get("grant_type") != "refresh_token" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The provided value for the input parameter 'grant_type' is not valid.",
            70_003,
        );
    }
    if get("client_id") != CLIENT_ID {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "Application with the given identifier was not found in the directory.",
            700_016,
        );
    }
    match query_get(&form, "client_secret").filter(|s| !s.is_empty()) {
        None => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                7_000_218,
            );
        }
        Some(s) if s != CLIENT_SECRET => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client secret provided.",
                7_000_215,
            );
        }
        Some(_) => {}
    }
    if !drive.refresh_tokens.contains(get("refresh_token")) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The provided value for the 'refresh_token' is not valid.",
            9_002_313,
        );
    }
    let access = drive.token("at");
    let refresh = drive.token("rt");
    drive.access_tokens.insert(access.clone());
    drive.refresh_tokens.insert(refresh.clone());
    shared.refreshes.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "token_type": "Bearer",
        "scope": "Files.ReadWrite",
        "expires_in": TOKEN_LIFETIME_SECS,
        "ext_expires_in": TOKEN_LIFETIME_SECS,
        "access_token": access,
        "refresh_token": refresh,
    }))
    .into_response()
}

/// Parse `Range: bytes=...` against `len`: `Some(Ok((start, end_inclusive)))`,
/// `Some(Err(()))` when unsatisfiable, `None` when absent or unparsable.
fn parse_range(value: Option<&str>, len: usize) -> Option<Result<(usize, usize), ()>> {
    let spec = value?.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let parsed = if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let start: usize = a.parse().ok()?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<usize>().ok()?.min(len.saturating_sub(1))
        };
        (start, end)
    };
    if parsed.0 >= len || parsed.0 > parsed.1 {
        return Some(Err(()));
    }
    Some(Ok(parsed))
}

fn download(
    drive: &Drive,
    id: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    method: Method,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let authorized = query_get(query, "tempauth")
        .and_then(|t| drive.downloads.get(t))
        .is_some_and(|i| i == id);
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(item) = drive.items.values().find(|i| i.id == id && !i.folder) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = item.data.len();
    let base = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, item.etag());
    if len == 0 {
        return base
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty())
            .unwrap();
    }
    match parse_range(header_str(headers, header::RANGE), len) {
        None => base
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, len)
            .body(Body::from(item.data.clone()))
            .unwrap(),
        Some(Err(())) => base
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{len}"))
            .body(Body::empty())
            .unwrap(),
        Some(Ok((start, end))) => base
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start + 1)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
            .body(Body::from(item.data.slice(start..=end)))
            .unwrap(),
    }
}

/// `bytes START-END/TOTAL`.
fn parse_content_range(value: &str) -> Option<(usize, usize, usize)> {
    let spec = value.strip_prefix("bytes ")?;
    let (range, total) = spec.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

fn upload_fragment(
    drive: &mut Drive,
    id: &str,
    method: &Method,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if *method == Method::DELETE {
        return if drive.sessions.remove(id).is_some() {
            StatusCode::NO_CONTENT.into_response()
        } else {
            not_found()
        };
    }
    if *method == Method::GET {
        // Graph: the session's status, pre-authenticated like the fragments.
        let Some(session) = drive.sessions.get(id) else {
            return not_found();
        };
        return axum::Json(json!({
            "expirationDateTime": rfc3339(SystemTime::now() + Duration::from_secs(3600)),
            "nextExpectedRanges": [format!("{}-", session.data.len())],
        }))
        .into_response();
    }
    if *method != Method::PUT {
        return graph_error(StatusCode::METHOD_NOT_ALLOWED, "invalidRequest", "Use PUT.");
    }
    // The upload URL is pre-authenticated; Graph refuses an Authorization header here.
    if headers.contains_key(header::AUTHORIZATION) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Do not send an Authorization header to the upload URL.",
        );
    }
    if !drive.sessions.contains_key(id) {
        return not_found();
    }
    let Some((start, end, total)) =
        header_str(headers, header::CONTENT_RANGE).and_then(parse_content_range)
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "A valid Content-Range header is required.",
        );
    };
    // Injected faults: answer with an error, before or after applying the fragment.
    let fault = drive
        .faults
        .as_mut()
        .filter(|f| f.count > 0 && start >= f.from_offset)
        .map(|f| {
            f.count -= 1;
            f.clone()
        });
    if let Some(f) = fault {
        if f.apply {
            // Apply the fragment (without the remaining faults), drop the answer.
            let pending = drive.faults.take();
            let _ = upload_fragment(drive, id, method, headers, body);
            drive.faults = pending;
        }
        let status = StatusCode::from_u16(f.status).unwrap();
        let mut err = graph_error(status, "injectedFault", "Injected by the Graph double.");
        if let Some(secs) = f.retry_after {
            err.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return err;
    }
    let Some(session) = drive.sessions.get_mut(id) else {
        return not_found();
    };
    let declared =
        header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    if end < start
        || end >= total
        || body.len() != end - start + 1
        || declared.is_some_and(|d| d != body.len())
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "Content-Range does not match the fragment.",
        );
    }
    if session.total.is_some_and(|t| t != total) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "The total size changed during the session.",
        );
    }
    if start != session.data.len() {
        let expected = session.data.len();
        let mut resp = graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "invalidRange",
            &format!("The fragment overlaps or skips data; expected {expected}-"),
        );
        resp.headers_mut().insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes */{total}")).unwrap(),
        );
        return resp;
    }
    let last = end + 1 == total;
    if body.len() > FRAGMENT_MAX || (!last && !body.len().is_multiple_of(FRAGMENT_UNIT)) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRange",
            "Fragments must be a multiple of 320 KiB (except the last) and at most 60 MiB.",
        );
    }
    session.total = Some(total);
    session.data.extend_from_slice(&body);
    if !last {
        let next = session.data.len();
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "expirationDateTime": rfc3339(SystemTime::now() + Duration::from_secs(3600)),
                "nextExpectedRanges": [format!("{next}-")],
            })),
        )
            .into_response();
    }
    let Some(session) = drive.sessions.remove(id) else {
        return not_found();
    };
    if let Some(r) = check_write(
        drive,
        &session.path,
        Some(&session.behavior),
        session.if_match.as_deref(),
    ) {
        return r;
    }
    commit(drive, &session.path, Bytes::from(session.data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_768_564_799)),
            "2026-01-16T11:59:59Z"
        );
        assert_eq!(percent_decode("a%20b+c%2", true), "a b c%2");
        assert_eq!(parse_range(Some("bytes=0-"), 10), Some(Ok((0, 9))));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Some(Ok((2, 4))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Some(Ok((7, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Some(Err(())));
        assert_eq!(parse_content_range("bytes 0-9/20"), Some((0, 9, 20)));
    }
}
