//! OneDrive through Microsoft Graph: the tier configuration, unattended credentials, the
//! OpenDAL [`Operator`] built from them, and [`OneDriveTier`], the
//! [`StorageTier`] that streams writes through upload sessions of its own.
//!
//! # Credentials
//!
//! A backup tier must work without a person at the keyboard, so zdr uses the OAuth 2.0
//! *refresh-token* flow: an app registration (`client_id`, and `client_secret` for a
//! confidential "Web" app) plus a refresh token obtained once with the `offline_access`
//! and `Files.ReadWrite` scopes. OpenDAL redeems the refresh token for access tokens,
//! which expire within the hour, and renews them before they expire.
//!
//! The credentials come from one of:
//!
//! - the config itself: `client_id`, `client_secret` (optional) and `refresh_token`;
//! - an existing **rclone** OneDrive remote, named by `rclone_remote` (for example
//!   `"zentoria-onedrive"`): zdr reads the rclone config file (`rclone_config`, else
//!   `$RCLONE_CONFIG`, else `$XDG_CONFIG_HOME/rclone/rclone.conf`,
//!   `~/.config/rclone/rclone.conf` or `~/.rclone.conf`, the first that exists), takes
//!   `client_id` and `client_secret` from the remote's section and the refresh token from
//!   its `token` JSON. `client_id` / `client_secret` in the zdr config override the
//!   remote's. A remote made with rclone's built-in app (empty `client_id`) cannot be
//!   used: its tokens belong to rclone's app registration. The rclone keys `drive_id`
//!   and `drive_type` are accepted and **ignored**: OpenDAL always addresses the signed-in
//!   user's default drive (`/me/drive`), so a remote pointing at another drive (a
//!   SharePoint library) would not be the same place for zdr. A `region` other than
//!   `global` requires `graph_endpoint` and `token_endpoint` to be set;
//! - a bare `access_token`, for a short manual session only: it is never renewed.
//!
//! # Endpoints
//!
//! OpenDAL hard-codes `https://graph.microsoft.com/v1.0/me/drive/root` and
//! `https://login.microsoftonline.com/common/oauth2/v2.0/token`. `graph_endpoint` and
//! `token_endpoint` redirect those requests (national clouds such as
//! `https://graph.microsoft.us`, or a local Graph double in tests) through an HTTP
//! transport that rewrites the URLs before the default reqwest transport sends them.
//! Absolute URLs returned by the server (`@microsoft.graph.downloadUrl` redirects,
//! upload-session URLs, `@odata.nextLink`) are used as returned.
//!
//! The same transport renews the access token once when Graph answers `401` to a request
//! that OpenDAL signed with a token it still considered valid (a revoked token), and
//! retries that request; OpenDAL itself renews only by the clock. It also reports a
//! `200 OK` answer to the last fragment of an upload session (Graph's answer when it
//! replaced an existing file) as `201 Created`, the only answer OpenDAL 0.59 accepts.
//!
//! # Limits of OpenDAL's OneDrive service (0.59)
//!
//! - Writes are one-shot: an object is uploaded from one buffer, in one `write` call
//!   (larger than 4 MiB through an upload session in 3.75 MiB fragments). A
//!   [`Writer`](opendal::Writer) that receives a second `write` (for example one opened
//!   with `.chunk(..)` smaller than the object) fails with `Unsupported`.
//! - Set `root` to a folder (such as `"zdr"`): the drive root itself is a special item.
//!
//! # Streaming writes: spool to disk, then an upload session
//!
//! [`OneDriveTier`] (what [`open_tier`](crate::open_tier) returns for OneDrive) hands
//! reads, listings, stats, deletes and small whole-object writes (`write_all`) to OpenDAL,
//! but its [`writer`](StorageTier::writer) does not: a backup artifact arrives as a stream
//! of unknown length, possibly 100 GB, and must not be held in memory.
//!
//! Graph's upload sessions need the **total size in every fragment's** `Content-Range`
//! (`bytes 0-10485759/TOTAL`; `/*` is not accepted by OneDrive), and the total is known
//! only at the end of the stream. So the writer **spools** the object to an unnamed
//! temporary file (in `spool_dir`, default the system temporary directory; unlinked at
//! creation where the platform allows, so nothing is left behind even by a crash), writing
//! through a 1 MiB buffer. On `shutdown()` it uploads the file:
//!
//! - below 4 MiB ([`SIMPLE_UPLOAD_LIMIT`]) in one `PUT .../content`;
//! - otherwise through `POST .../createUploadSession` (conflict behaviour `replace`) and
//!   `PUT`s of [`FRAGMENT_SIZE`] = 10 MiB (32 × 320 KiB) fragments, in order, read back
//!   from the spool one at a time, without an `Authorization` header (the upload URL is
//!   pre-authenticated, and Graph refuses one).
//!
//! The trade-off: **memory stays flat** (the 1 MiB write buffer while spooling, one
//! 10 MiB fragment while uploading) but **disk use is the whole object** while it is
//! written, and the upload starts only when the stream ends. rclone does the same for
//! OneDrive uploads of unknown size. `spool_dir` must have room for the largest artifact
//! (for each writer open at the same time) and should be disk-backed: where `/tmp` is a
//! `tmpfs`, the default spool would hold the artifact in memory after all. A writer
//! dropped without `shutdown()` uploads nothing and frees its spool file.
//!
//! Failures: a fragment that fails with a connection error, a timeout, `408`, `429` or a
//! transient `5xx` is retried (up to 6 attempts, exponential backoff from 0.5 s; a
//! `Retry-After` is honoured); before each retry the writer asks the upload URL for
//! `nextExpectedRanges` and resumes where Graph wants it. If the answer to the last
//! fragment was lost and the session is gone, the upload counts as done when the item at
//! the key has the uploaded size. Other answers, or retries running out, cancel the
//! session (`DELETE` on the upload URL) and fail with a [`Storage`](ErrorKind::Storage)
//! error naming the tier and the key (temporary when a later retry could help). Graph
//! calls other than fragments carry an access token redeemed from the same refresh token
//! as the operator's (cached until two minutes before it expires, renewed once on `401`).
//! Upload URLs and tokens never appear in errors.

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Operator};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, BufWriter};
use zdr_core::{BoxRead, BoxWrite, Entry, Error, ErrorKind, Result, StorageTier};

use crate::tier::OpendalTier;

/// The Microsoft Graph origin that OpenDAL's OneDrive service calls.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// The OAuth 2.0 token endpoint that OpenDAL's OneDrive service calls.
pub const DEFAULT_TOKEN_ENDPOINT: &str =
    "https://login.microsoftonline.com/common/oauth2/v2.0/token";

/// The scopes requested when zdr renews a token itself (the same as OpenDAL's).
const SCOPE: &str = "offline_access Files.ReadWrite";

/// A OneDrive tier, as written in `zdr.toml` under `[tiers.NAME]` with `type = "onedrive"`.
///
/// Secrets (`client_secret`, `refresh_token`, `access_token`) never appear in `Debug`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneDriveConfig {
    /// The folder in the drive that holds the tier, such as `"zdr"` or `"/backups/zdr"`.
    /// Unset means the drive root, which is not recommended.
    #[serde(default)]
    pub root: Option<String>,
    /// The application (client) ID of the app registration. Required with
    /// `refresh_token`; overrides the rclone remote's `client_id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client secret of a confidential ("Web") app registration; leave unset for a
    /// public client. Overrides the rclone remote's `client_secret`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A long-lived refresh token (scopes `offline_access Files.ReadWrite`).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// A short-lived access token, never renewed: for a manual one-off session only.
    #[serde(default)]
    pub access_token: Option<String>,
    /// The name of an rclone OneDrive remote to take credentials from, such as
    /// `"zentoria-onedrive"` (a trailing `:` is accepted).
    #[serde(default)]
    pub rclone_remote: Option<String>,
    /// The rclone config file; defaults to `$RCLONE_CONFIG`, then rclone's usual places.
    #[serde(default)]
    pub rclone_config: Option<PathBuf>,
    /// Replaces `https://graph.microsoft.com` (scheme and host, optionally a path prefix;
    /// requests keep their `/v1.0/...` path), such as `https://graph.microsoft.us`.
    #[serde(default)]
    pub graph_endpoint: Option<String>,
    /// Replaces the token URL
    /// `https://login.microsoftonline.com/common/oauth2/v2.0/token` (the full URL).
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The directory where [`OneDriveTier`]'s writer spools an object before uploading
    /// it (see the module docs); the system temporary directory when unset. It needs
    /// room for the largest objects being written at the same time, and should be on
    /// disk: where `/tmp` is a `tmpfs`, the spool would take memory.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
}

/// Shows whether a secret is set, never its value.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for OneDriveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneDrive")
            .field("root", &self.root)
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("access_token", &redacted(&self.access_token))
            .field("rclone_remote", &self.rclone_remote)
            .field("rclone_config", &self.rclone_config)
            .field("graph_endpoint", &self.graph_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("spool_dir", &self.spool_dir)
            .finish()
    }
}

/// The credentials resolved from a config (and possibly an rclone remote).
#[derive(Clone)]
enum Auth {
    /// Client id (+ secret) and a refresh token: unattended.
    Refresh {
        client_id: String,
        client_secret: Option<String>,
        refresh_token: String,
    },
    /// A bare access token, never renewed.
    Access(String),
}

/// Credentials found in an rclone OneDrive remote.
#[derive(Clone, PartialEq, Eq)]
struct RcloneRemote {
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: String,
    /// rclone's `region`, when set and not `global`.
    region: Option<String>,
}

impl fmt::Debug for RcloneRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcloneRemote")
            .field("client_id", &self.client_id)
            .field("client_secret", &redacted(&self.client_secret))
            .field("refresh_token", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Build the OpenDAL operator for a OneDrive tier.
///
/// Nothing is sent over the network here: the first operation redeems the refresh
/// token. The operator always carries zdr's HTTP transport (endpoint rewriting and
/// renewal of a revoked access token) around the default reqwest transport.
///
/// # Errors
/// [`BadInput`](zdr_core::ErrorKind::BadInput) when the credentials are missing or contradictory, the rclone
/// remote cannot be used (the message names the remote and the file, never a token), or
/// an endpoint is not an `http(s)://` URL. The caller adds the tier name.
pub fn operator(cfg: &OneDriveConfig) -> Result<Operator> {
    build(cfg).map(|b| b.op)
}

/// What [`build`] makes from a config: the operator, and what [`OneDriveTier`] needs to
/// call Graph itself.
struct Built {
    op: Operator,
    /// The Graph origin (no trailing `/`): `graph_endpoint` or [`DEFAULT_GRAPH_ENDPOINT`].
    graph: String,
    tokens: Tokens,
}

fn build(cfg: &OneDriveConfig) -> Result<Built> {
    let auth = resolve_auth(cfg, &|k| std::env::var_os(k), &|p| p.is_file())?;
    let graph = cfg
        .graph_endpoint
        .as_deref()
        .map(|e| check_endpoint("graph_endpoint", e))
        .transpose()?
        .map(|e| e.trim_end_matches('/').to_owned());
    let token = cfg
        .token_endpoint
        .as_deref()
        .map(|e| check_endpoint("token_endpoint", e))
        .transpose()?
        .map(str::to_owned);

    let mut builder = opendal::services::Onedrive::default();
    if let Some(root) = cfg.root.as_deref() {
        builder = builder.root(root);
    }
    let recovery = match &auth {
        Auth::Refresh {
            client_id,
            client_secret,
            refresh_token,
        } => {
            builder = builder.refresh_token(refresh_token).client_id(client_id);
            if let Some(secret) = client_secret {
                builder = builder.client_secret(secret);
            }
            Some(Arc::new(Recovery {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                state: tokio::sync::Mutex::new(RecoveryState {
                    refresh_token: refresh_token.clone(),
                    swaps: Vec::new(),
                    own: None,
                }),
            }))
        }
        Auth::Access(token) => {
            builder = builder.access_token(token);
            None
        }
    };
    let op = Operator::new(builder).map_err(|e| {
        Error::bad_input("cannot configure the OneDrive service")
            .with_source(e)
            .with_hint("check root, client_id and the token settings")
    })?;

    // The `opendal` facade is used without `auto-register-services`, so install its
    // default reqwest transport (first-wins, idempotent) and wrap it.
    opendal::install_default();
    let token_url = token.unwrap_or_else(|| DEFAULT_TOKEN_ENDPOINT.to_owned());
    let tokens = match (&auth, &recovery) {
        (_, Some(recovery)) => Tokens::Renewable {
            recovery: recovery.clone(),
            http: HttpTransporter::default(),
            token_url: token_url.clone(),
        },
        (Auth::Access(token), None) => Tokens::Fixed(token.clone()),
        (Auth::Refresh { .. }, None) => {
            return Err(Error::unexpected(
                "OneDrive: refresh credentials without token renewal",
            ));
        }
    };
    let transport = GraphTransport {
        inner: HttpTransporter::default(),
        graph: graph.clone(),
        token_url,
        rewrite_token: cfg.token_endpoint.is_some(),
        recovery,
    };
    let ctx = op
        .base_context()
        .with_http_transport(HttpTransporter::new(transport));
    Ok(Built {
        op: op.with_context(ctx),
        graph: graph.unwrap_or_else(|| DEFAULT_GRAPH_ENDPOINT.to_owned()),
        tokens,
    })
}

fn check_endpoint<'a>(field: &str, value: &'a str) -> Result<&'a str> {
    let ok = value
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    match ok {
        Some(_) => Ok(value),
        None => Err(Error::bad_input(format!(
            "{field} {value:?} is not an http:// or https:// URL"
        ))),
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Decide which credentials a config means. `env` and `exists` are injected for tests.
fn resolve_auth(
    cfg: &OneDriveConfig,
    env: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Auth> {
    let client_id = non_empty(&cfg.client_id);
    let client_secret = non_empty(&cfg.client_secret);
    let refresh_token = non_empty(&cfg.refresh_token);
    let access_token = non_empty(&cfg.access_token);

    if let Some(remote) = non_empty(&cfg.rclone_remote) {
        let remote = remote.trim_end_matches(':').to_owned();
        if refresh_token.is_some() || access_token.is_some() {
            return Err(Error::bad_input(format!(
                "OneDrive: rclone_remote {remote:?} and refresh_token/access_token are both set"
            ))
            .with_hint("take the token from the rclone remote or from the config, not both"));
        }
        let path = match &cfg.rclone_config {
            Some(p) => p.clone(),
            None => default_rclone_config(env, exists).ok_or_else(|| {
                Error::bad_input(format!(
                    "OneDrive: rclone remote {remote:?}: no rclone config file found \
                     ($RCLONE_CONFIG is unset and neither $XDG_CONFIG_HOME nor $HOME is set)"
                ))
                .with_hint("set rclone_config to the path of rclone.conf")
            })?,
        };
        let found = read_rclone_remote(&path, &remote)?;
        if found.region.is_some() && (cfg.graph_endpoint.is_none() || cfg.token_endpoint.is_none())
        {
            return Err(Error::bad_input(format!(
                "OneDrive: rclone remote {remote:?} in {} uses region {:?}, but graph_endpoint \
                 and token_endpoint are not both set",
                path.display(),
                found.region.as_deref().unwrap_or_default()
            ))
            .with_hint(
                "set graph_endpoint (such as https://graph.microsoft.us) and token_endpoint \
                 (such as https://login.microsoftonline.us/common/oauth2/v2.0/token)",
            ));
        }
        let Some(client_id) = client_id.or(found.client_id) else {
            return Err(Error::bad_input(format!(
                "OneDrive: rclone remote {remote:?} in {} has no client_id: it uses rclone's \
                 built-in app, whose tokens zdr cannot renew",
                path.display()
            ))
            .with_hint(
                "register an app in Microsoft Entra, put its client_id and client_secret into \
                 the rclone remote, run `rclone config reconnect REMOTE:` so the token belongs \
                 to that app; or set client_id here if the remote's token was issued to it",
            ));
        };
        return Ok(Auth::Refresh {
            client_id,
            client_secret: client_secret.or(found.client_secret),
            refresh_token: found.refresh_token,
        });
    }

    match (refresh_token, access_token) {
        (Some(_), Some(_)) => Err(Error::bad_input(
            "OneDrive: refresh_token and access_token are both set",
        )
        .with_hint("keep refresh_token (with client_id) for unattended use")),
        (Some(refresh_token), None) => {
            let Some(client_id) = client_id else {
                return Err(Error::bad_input(
                    "OneDrive: refresh_token is set but client_id is not",
                )
                .with_hint("set client_id to the app registration the token was issued to"));
            };
            Ok(Auth::Refresh {
                client_id,
                client_secret,
                refresh_token,
            })
        }
        (None, Some(token)) => Ok(Auth::Access(token)),
        (None, None) => Err(
            Error::bad_input("OneDrive: no credentials configured").with_hint(
                "set client_id (+ client_secret) and refresh_token, or rclone_remote naming an \
             rclone OneDrive remote",
            ),
        ),
    }
}

/// rclone's search order for its config file, when `$RCLONE_CONFIG` is unset: the first
/// existing one of `$XDG_CONFIG_HOME/rclone/rclone.conf`, `~/.config/rclone/rclone.conf`,
/// `~/.rclone.conf`; if none exists, the first candidate (so the error names it).
fn default_rclone_config(
    env: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = env("RCLONE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(xdg) = env("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(xdg).join("rclone").join("rclone.conf"));
    }
    if let Some(home) = env("HOME").filter(|p| !p.is_empty()) {
        let home = PathBuf::from(home);
        candidates.push(home.join(".config").join("rclone").join("rclone.conf"));
        candidates.push(home.join(".rclone.conf"));
    }
    candidates
        .iter()
        .find(|p| exists(p))
        .or_else(|| candidates.first())
        .cloned()
}

fn read_rclone_remote(path: &Path, remote: &str) -> Result<RcloneRemote> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist"
        } else {
            "cannot be read"
        };
        Error::bad_input(format!(
            "OneDrive: rclone config {} for remote {remote:?} {what}",
            path.display()
        ))
        .with_context("remote", remote)
        .with_context("file", path.display())
        .with_source(e)
        .with_hint("set rclone_config to the rclone.conf that defines the remote")
    })?;
    parse_rclone_remote(&text, remote, path)
}

/// The sections of an INI file, in order: `(name, [(key, value)])`.
///
/// rclone's format: `[name]` headers, `key = value` lines, `#` / `;` comment lines.
/// Keys are trimmed; values are trimmed and lose one pair of surrounding double quotes.
fn parse_ini(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push((name.trim().to_owned(), Vec::new()));
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if let Some((_, entries)) = sections.last_mut() {
            entries.push((key.trim().to_owned(), value.to_owned()));
        }
    }
    sections
}

/// The parts of rclone's `token` JSON that zdr reads.
#[derive(Deserialize)]
struct RcloneToken {
    #[serde(default)]
    refresh_token: Option<String>,
}

fn parse_rclone_remote(text: &str, remote: &str, path: &Path) -> Result<RcloneRemote> {
    let bad = |msg: String| {
        Error::bad_input(format!(
            "OneDrive: rclone remote {remote:?} in {}: {msg}",
            path.display()
        ))
        .with_context("remote", remote)
        .with_context("file", path.display())
    };
    if text.contains("RCLONE_ENCRYPT_V0:") {
        return Err(bad("the rclone config is encrypted".into()).with_hint(
            "zdr cannot decrypt rclone configs: give zdr an unencrypted rclone config file, \
             or set client_id, client_secret and refresh_token directly",
        ));
    }
    let sections = parse_ini(text);
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut found = false;
    for (name, kv) in sections {
        if name == remote {
            found = true;
            entries.extend(kv);
        }
    }
    if !found {
        return Err(bad("no such remote".into()).with_hint(
            "check the remote name with `rclone listremotes` and the rclone_config path",
        ));
    }
    // Later keys win, as in rclone.
    let get = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    match get("type") {
        Some("onedrive") => {}
        Some(other) => {
            return Err(bad(format!("type is {other:?}, not \"onedrive\"")));
        }
        None => return Err(bad("the section has no type (expected \"onedrive\")".into())),
    }
    let token = get("token").filter(|t| !t.is_empty()).ok_or_else(|| {
        bad("no token (the remote was never authorized)".into())
            .with_hint("authorize it with `rclone config reconnect REMOTE:`")
    })?;
    // Never attach the serde error: its message can quote token values.
    let parsed: RcloneToken = serde_json::from_str(token).map_err(|e| {
        bad(format!(
            "the token is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let refresh_token = parsed
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            bad("the token JSON has no refresh_token".into()).with_hint(
                "re-authorize the remote with `rclone config reconnect REMOTE:` so rclone \
                 stores a refresh token",
            )
        })?;
    let opt = |key: &str| {
        get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    // `drive_id` and `drive_type` are deliberately ignored (see the module docs).
    let region = opt("region").filter(|r| r != "global");
    Ok(RcloneRemote {
        client_id: opt("client_id"),
        client_secret: opt("client_secret"),
        refresh_token,
        region,
    })
}

/// Where the "Graph" and token requests go: OpenDAL's hard-coded URLs, rewritten.
#[derive(Clone)]
struct GraphTransport {
    inner: HttpTransporter,
    /// Replacement for `https://graph.microsoft.com`, without a trailing `/`.
    graph: Option<String>,
    /// The effective token endpoint.
    token_url: String,
    /// Whether token requests are rewritten to `token_url`.
    rewrite_token: bool,
    /// Renewal of revoked access tokens (refresh-token auth only).
    recovery: Option<Arc<Recovery>>,
}

/// Rewrite `url` if it starts with one of OpenDAL's hard-coded endpoints.
fn rewrite_url(url: &str, graph: Option<&str>, token: Option<&str>) -> Option<String> {
    if let (Some(graph), Some(rest)) = (graph, url.strip_prefix(DEFAULT_GRAPH_ENDPOINT))
        && (rest.is_empty() || rest.starts_with(['/', '?']))
    {
        return Some(format!("{graph}{rest}"));
    }
    if let (Some(token), Some(rest)) = (token, url.strip_prefix(DEFAULT_TOKEN_ENDPOINT))
        && (rest.is_empty() || rest.starts_with('?'))
    {
        return Some(format!("{token}{rest}"));
    }
    None
}

fn bearer<T>(req: &Request<T>) -> Option<String> {
    req.headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

fn set_bearer<T>(req: &mut Request<T>, token: &str) -> opendal::Result<()> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        opendal::Error::new(
            opendal::ErrorKind::Unexpected,
            "the renewed access token is not a valid header value",
        )
    })?;
    value.set_sensitive(true);
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(())
}

/// Whether `req` uploads the last fragment of an upload session (`PUT` with
/// `Content-Range: bytes START-END/TOTAL` and `END + 1 == TOTAL`).
fn is_last_fragment<T>(req: &Request<T>) -> bool {
    if req.method() != http::Method::PUT {
        return false;
    }
    let Some(range) = req
        .headers()
        .get(http::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
    else {
        return false;
    };
    let parsed = range.split_once('/').and_then(|(span, total)| {
        let end = span.split_once('-')?.1.parse::<u64>().ok()?;
        Some((end, total.parse::<u64>().ok()?))
    });
    parsed.is_some_and(|(end, total)| end + 1 == total)
}

/// Graph answers the last fragment with `201 Created` or `200 OK` (when it replaced a
/// file); OpenDAL 0.59 finishes the upload only on 201 (on 200 it panics in a
/// `debug_assert` and otherwise returns unknown metadata). Both carry the item.
fn last_fragment_created(mut resp: Response<HttpBody>) -> Response<HttpBody> {
    if resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::CREATED;
    }
    resp
}

impl GraphTransport {
    fn rewrite(&self, req: &mut Request<Buffer>) -> opendal::Result<()> {
        let token = self.rewrite_token.then_some(self.token_url.as_str());
        let url = req.uri().to_string();
        if let Some(new) = rewrite_url(&url, self.graph.as_deref(), token) {
            *req.uri_mut() = new.parse().map_err(|e| {
                opendal::Error::new(
                    opendal::ErrorKind::ConfigInvalid,
                    "the rewritten OneDrive URL is invalid",
                )
                .with_context("url", new)
                .set_source(e)
            })?;
        }
        Ok(())
    }
}

impl HttpTransport for GraphTransport {
    async fn fetch(&self, mut req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        self.rewrite(&mut req)?;
        if is_last_fragment(&req) {
            return self.inner.fetch(req).await.map(last_fragment_created);
        }
        // Token requests, upload fragments and downloads carry no bearer token.
        let (Some(recovery), Some(original)) = (&self.recovery, bearer(&req)) else {
            return self.inner.fetch(req).await;
        };
        let sent = recovery.current_for(&original).await;
        if sent != original {
            set_bearer(&mut req, &sent)?;
        }
        let retry = req.clone();
        let resp = self.inner.fetch(req).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        // Graph rejected a token OpenDAL still thinks valid: renew once and retry.
        let (_, mut body) = resp.into_parts();
        let _ = body.to_buffer().await;
        let fresh = recovery
            .renew(&self.inner, &self.token_url, &original, &sent)
            .await?;
        let mut retry = retry;
        set_bearer(&mut retry, &fresh)?;
        self.inner.fetch(retry).await
    }
}

/// Renews access tokens that Graph rejected, and substitutes the renewed token for the
/// rejected one in later requests (OpenDAL's signer keeps sending it until its clock
/// says it expired).
struct Recovery {
    client_id: String,
    client_secret: Option<String>,
    state: tokio::sync::Mutex<RecoveryState>,
}

struct RecoveryState {
    refresh_token: String,
    /// `(rejected token as OpenDAL sends it, renewed token)`, newest last.
    swaps: Vec<(String, String)>,
    /// The newest access token redeemed here, and when to stop using it (two minutes
    /// before it expires): what [`OneDriveTier`]'s own Graph calls send.
    own: Option<(String, Instant)>,
}

impl RecoveryState {
    fn lookup(&self, original: &str) -> Option<&str> {
        self.swaps
            .iter()
            .rev()
            .find(|(stale, _)| stale == original)
            .map(|(_, fresh)| fresh.as_str())
    }
}

/// The parts of a token response zdr reads.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The parts of an OAuth error response zdr reports (no secrets in them).
#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Recovery {
    async fn current_for(&self, original: &str) -> String {
        let state = self.state.lock().await;
        state.lookup(original).unwrap_or(original).to_owned()
    }

    async fn renew(
        &self,
        inner: &HttpTransporter,
        token_url: &str,
        original: &str,
        sent: &str,
    ) -> opendal::Result<String> {
        let mut state = self.state.lock().await;
        // Another request renewed already while this one waited for the lock.
        if let Some(fresh) = state.lookup(original)
            && fresh != sent
        {
            return Ok(fresh.to_owned());
        }
        let access = self
            .redeem(
                &mut state,
                inner,
                token_url,
                "OneDrive rejected the access token (HTTP 401) and renewing it failed",
            )
            .await?;
        state.swaps.retain(|(stale, _)| stale != original);
        state.swaps.push((original.to_owned(), access.clone()));
        if state.swaps.len() > 8 {
            state.swaps.remove(0);
        }
        Ok(access)
    }

    /// A valid access token for zdr's own Graph calls: the cached one, else a new one.
    /// With `rejected`, Graph refused that token: renew unless another call already did.
    async fn own_token(
        &self,
        inner: &HttpTransporter,
        token_url: &str,
        rejected: Option<&str>,
    ) -> opendal::Result<String> {
        let mut state = self.state.lock().await;
        if let Some((token, until)) = &state.own
            && Instant::now() < *until
            && rejected != Some(token.as_str())
        {
            return Ok(token.clone());
        }
        self.redeem(
            &mut state,
            inner,
            token_url,
            "OneDrive: redeeming the refresh token failed",
        )
        .await
    }

    /// Redeem the refresh token (the lock is held): keep the rotated refresh token and
    /// the new access token, and return the access token. Errors start with `failure`
    /// and never quote a token.
    async fn redeem(
        &self,
        state: &mut RecoveryState,
        inner: &HttpTransporter,
        token_url: &str,
        failure: &str,
    ) -> opendal::Result<String> {
        let mut form = format!(
            "grant_type=refresh_token&client_id={}&scope={}&refresh_token={}",
            form_encode(&self.client_id),
            form_encode(SCOPE),
            form_encode(&state.refresh_token),
        );
        if let Some(secret) = &self.client_secret {
            form.push_str("&client_secret=");
            form.push_str(&form_encode(secret));
        }
        let req = Request::post(token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Buffer::from(form))
            .map_err(|e| {
                opendal::Error::new(opendal::ErrorKind::Unexpected, "cannot build token request")
                    .set_source(e)
            })?;
        let resp = inner.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().to_bytes();
        if status != StatusCode::OK {
            let detail = serde_json::from_slice::<TokenError>(&body)
                .map(|e| format!("{}: {}", e.error, e.error_description))
                .unwrap_or_default();
            return Err(opendal::Error::new(
                opendal::ErrorKind::PermissionDenied,
                format!("{failure} (HTTP {status}) {detail}"),
            )
            .with_context("service_operation", "RefreshAccessToken")
            .with_temporary(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            opendal::Error::new(
                opendal::ErrorKind::Unexpected,
                "the token endpoint answered 200 without an access_token",
            )
        })?;
        if let Some(rt) = parsed.refresh_token.filter(|t| !t.is_empty()) {
            state.refresh_token = rt;
        }
        let lifetime = Duration::from_secs(
            parsed
                .expires_in
                .unwrap_or(3600)
                .saturating_sub(TOKEN_MARGIN_SECS),
        );
        state.own = Some((parsed.access_token.clone(), Instant::now() + lifetime));
        Ok(parsed.access_token)
    }
}

// ---------------------------------------------------------------------------------------
// The tier: OpenDAL for everything but streaming writes, which go through zdr's own
// upload sessions from a spool file.
// ---------------------------------------------------------------------------------------

/// Renew zdr's own access token this long before it expires.
const TOKEN_MARGIN_SECS: u64 = 120;

/// Graph's fragment granularity: every fragment but the last is a multiple of it.
const FRAGMENT_UNIT: u64 = 320 * 1024;

/// The size of the fragments [`OneDriveTier`]'s writer uploads: 32 × 320 KiB = 10 MiB,
/// the upper end of Microsoft's recommendation (Graph accepts up to 60 MiB).
pub const FRAGMENT_SIZE: u64 = 32 * FRAGMENT_UNIT;

/// Objects smaller than this go up in one simple `PUT .../content` instead of an upload
/// session (Graph's documented simple-upload limit).
pub const SIMPLE_UPLOAD_LIMIT: u64 = 4 * 1024 * 1024;

/// Write-through buffer in front of the spool file.
const SPOOL_BUFFER: usize = 1 << 20;

/// Retries and timeouts of zdr's own Graph calls.
#[derive(Clone, Copy, Debug)]
struct Policy {
    /// Attempts per call or fragment, the first included.
    attempts: u32,
    /// Backoff before the first retry; doubled each time up to `max_delay`.
    base_delay: Duration,
    max_delay: Duration,
    /// Upper bound for a server's `Retry-After`.
    max_retry_after: Duration,
    /// Timeout of one Graph call (metadata, small upload).
    call_timeout: Duration,
    /// Timeout of one fragment `PUT` (10 MiB, and Graph assembling the file on the last).
    fragment_timeout: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            call_timeout: Duration::from_secs(120),
            fragment_timeout: Duration::from_secs(600),
        }
    }
}

/// Where zdr's own Graph calls get their access token.
#[derive(Clone)]
enum Tokens {
    /// A bare `access_token` from the config, never renewed.
    Fixed(String),
    /// Redeemed from the refresh token, shared with the transport's [`Recovery`] (so a
    /// rotated refresh token is used by both).
    Renewable {
        recovery: Arc<Recovery>,
        http: HttpTransporter,
        token_url: String,
    },
}

impl Tokens {
    /// A token to send; with `rejected`, Graph answered 401 to that one: renew it.
    /// `None` when it cannot be renewed.
    async fn get(&self, rejected: Option<&str>) -> opendal::Result<Option<String>> {
        match self {
            Self::Fixed(t) if rejected.is_none() => Ok(Some(t.clone())),
            Self::Fixed(_) => Ok(None),
            Self::Renewable {
                recovery,
                http,
                token_url,
            } => recovery
                .own_token(http, token_url, rejected)
                .await
                .map(Some),
        }
    }
}

/// The object a Graph call is about: every error names the tier and the key.
#[derive(Clone, Copy)]
struct Target<'a> {
    tier: &'a str,
    key: &'a str,
}

impl Target<'_> {
    fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_context("tier", self.tier)
            .with_context("key", self.key)
    }

    fn storage(&self, message: impl Into<String>) -> Error {
        self.error(ErrorKind::Storage, message)
    }
}

/// What came back from one HTTP exchange.
enum Sent {
    /// An answer, with its body read.
    Answer(Response<Buffer>),
    /// No answer (connection failure, timeout): the description, safe to show.
    Lost(String),
}

/// An upload session's URL: pre-authenticated, so it is a secret. Never in errors, logs
/// or `Debug` output.
struct UploadUrl(String);

/// Cancels an upload session when the upload fails or is dropped half-way.
struct SessionGuard {
    http: HttpTransporter,
    url: Option<UploadUrl>,
}

impl SessionGuard {
    fn url(&self) -> &str {
        self.url.as_ref().map_or("", |u| u.0.as_str())
    }

    /// The upload finished: nothing to cancel.
    fn disarm(&mut self) {
        self.url = None;
    }

    /// Cancel the session now (best effort).
    async fn cancel(&mut self) {
        if let Some(url) = self.url.take() {
            cancel_session(self.http.clone(), url).await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(url) = self.url.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(cancel_session(self.http.clone(), url));
        }
    }
}

/// `DELETE` an upload session (no `Authorization`: the URL is pre-authenticated).
async fn cancel_session(http: HttpTransporter, url: UploadUrl) {
    if let Ok(req) = Request::delete(url.0.as_str()).body(Buffer::new()) {
        let _ = tokio::time::timeout(Duration::from_secs(30), http.send(req)).await;
    }
}

/// Percent-encode a drive path for Graph's path addressing (`/` kept).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Statuses worth retrying: timeouts, throttling, transient server errors.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 509)
}

/// `Retry-After` in seconds (Graph sends seconds), capped.
fn retry_after(resp: &Response<Buffer>, cap: Duration) -> Option<Duration> {
    resp.headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(cap))
}

/// The parts of a Graph error body zdr reports.
#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphErrorDetail,
}

#[derive(Deserialize)]
struct GraphErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `HTTP 403 Forbidden (accessDenied: ...)`: status and Graph's error code and message,
/// never a URL.
fn describe(resp: &Response<Buffer>) -> String {
    let status = resp.status();
    match serde_json::from_slice::<GraphErrorBody>(&resp.body().to_bytes()) {
        Ok(b) if !b.error.code.is_empty() => {
            format!("HTTP {status} ({}: {})", b.error.code, b.error.message)
        }
        _ => format!("HTTP {status}"),
    }
}

/// An OpenDAL transport error without its context (which holds the URL).
fn describe_transport(e: &opendal::Error) -> String {
    let mut text = e.message().to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The item a session or upload answered with (to check its size).
#[derive(Deserialize)]
struct ItemInfo {
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionInfo {
    #[serde(default)]
    upload_url: Option<String>,
    #[serde(default)]
    next_expected_ranges: Option<Vec<String>>,
}

/// The first offset in `nextExpectedRanges` (`["12345-"]`, `["0-327679", ...]`);
/// `Some(None)` when the list is present and empty.
fn next_expected(body: &[u8]) -> Option<Option<u64>> {
    let info: SessionInfo = serde_json::from_slice(body).ok()?;
    let ranges = info.next_expected_ranges?;
    Some(
        ranges
            .first()
            .and_then(|r| r.split('-').next())
            .and_then(|s| s.trim().parse().ok()),
    )
}

/// What the upload URL says about a session.
enum SessionStatus {
    /// Graph expects this offset next.
    Next(u64),
    /// The session is gone (completed, expired or cancelled) or expects nothing more.
    Gone,
    /// No usable answer.
    Unknown,
}

/// zdr's own Microsoft Graph client, for streaming uploads.
struct Graph {
    http: HttpTransporter,
    /// `{graph}/v1.0/me/drive/root`.
    drive_root: String,
    /// The tier's folder from the drive root, without leading or trailing `/`.
    root: String,
    tokens: Tokens,
    policy: Policy,
}

impl Graph {
    fn item_path(&self, key: &str) -> String {
        if self.root.is_empty() {
            encode_path(key)
        } else {
            encode_path(&format!("{}/{key}", self.root))
        }
    }

    /// One exchange, with a timeout.
    async fn send(&self, req: Request<Buffer>, timeout: Duration) -> Sent {
        match tokio::time::timeout(timeout, self.http.send(req)).await {
            Ok(Ok(resp)) => Sent::Answer(resp),
            Ok(Err(e)) => Sent::Lost(describe_transport(&e)),
            Err(_) => Sent::Lost(format!("no answer within {}s", timeout.as_secs())),
        }
    }

    fn token_error(&self, at: Target<'_>, e: &opendal::Error) -> Error {
        let err = at
            .storage(describe_transport(e))
            .with_hint("check the OneDrive credentials (client_id, client_secret, refresh token)");
        if e.is_temporary() {
            err.temporary()
        } else {
            err
        }
    }

    /// An authenticated Graph call: the access token is attached (and renewed once on
    /// `401`); connection failures, timeouts, `429` and transient `5xx` are retried with
    /// backoff (honouring `Retry-After`). Returns the first other answer, for the caller
    /// to judge; a temporary error when the retries ran out.
    async fn call(
        &self,
        what: &str,
        at: Target<'_>,
        build: impl Fn() -> std::result::Result<http::request::Builder, Error>,
        body: Buffer,
    ) -> Result<Response<Buffer>> {
        let p = self.policy;
        let mut token = match self.tokens.get(None).await {
            Ok(Some(t)) => t,
            Ok(None) => return Err(at.storage("OneDrive: no access token")),
            Err(e) => return Err(self.token_error(at, &e)),
        };
        let mut renewed = false;
        let mut failures = 0;
        let mut delay = p.base_delay;
        loop {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| at.storage("OneDrive: the access token is not a valid header"))?;
            value.set_sensitive(true);
            let req = build()?
                .header(AUTHORIZATION, value)
                .body(body.clone())
                .map_err(|e| {
                    at.error(
                        ErrorKind::Unexpected,
                        format!("cannot build the request to {what}"),
                    )
                    .with_source(e)
                })?;
            let (problem, wait) = match self.send(req, p.call_timeout).await {
                Sent::Answer(resp) if resp.status() == StatusCode::UNAUTHORIZED && !renewed => {
                    renewed = true;
                    match self.tokens.get(Some(&token)).await {
                        Ok(Some(t)) => {
                            token = t;
                            continue;
                        }
                        Ok(None) => return Ok(resp),
                        Err(e) => return Err(self.token_error(at, &e)),
                    }
                }
                Sent::Answer(resp) if retryable(resp.status()) => {
                    (describe(&resp), retry_after(&resp, p.max_retry_after))
                }
                Sent::Answer(resp) => return Ok(resp),
                Sent::Lost(d) => (d, None),
            };
            failures += 1;
            if failures >= p.attempts {
                return Err(at
                    .storage(format!(
                        "OneDrive: cannot {what}: {problem} (gave up after {failures} attempts)"
                    ))
                    .temporary());
            }
            tokio::time::sleep(wait.unwrap_or(delay)).await;
            delay = (delay * 2).min(p.max_delay);
        }
    }

    /// Fail unless `resp` is a success; check the stored size when Graph reports it.
    fn expect_stored(what: &str, at: Target<'_>, resp: &Response<Buffer>, size: u64) -> Result<()> {
        if !resp.status().is_success() {
            let mut e = at.storage(format!("OneDrive: cannot {what}: {}", describe(resp)));
            if resp.status() == StatusCode::UNAUTHORIZED {
                e = e.with_hint("check the OneDrive credentials");
            }
            return Err(e);
        }
        let stored = serde_json::from_slice::<ItemInfo>(&resp.body().to_bytes())
            .ok()
            .and_then(|i| i.size);
        match stored {
            Some(n) if n != size => Err(at.storage(format!(
                "OneDrive: stored {n} bytes where {size} were uploaded"
            ))),
            _ => Ok(()),
        }
    }

    /// Upload a small object in one `PUT .../content`.
    async fn put_small(&self, at: Target<'_>, bytes: Buffer) -> Result<()> {
        let size = bytes.len() as u64;
        let url = format!(
            "{}:/{}:/content?@microsoft.graph.conflictBehavior=replace",
            self.drive_root,
            self.item_path(at.key)
        );
        let resp = self
            .call(
                "upload",
                at,
                || {
                    Ok(Request::put(url.as_str())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(http::header::CONTENT_LENGTH, size))
                },
                bytes,
            )
            .await?;
        Self::expect_stored("upload", at, &resp, size)
    }

    /// Create an upload session that replaces an existing file.
    async fn create_session(&self, at: Target<'_>) -> Result<UploadUrl> {
        let url = format!(
            "{}:/{}:/createUploadSession",
            self.drive_root,
            self.item_path(at.key)
        );
        let body = serde_json::json!({
            "item": { "@microsoft.graph.conflictBehavior": "replace" }
        });
        let resp = self
            .call(
                "create an upload session",
                at,
                || Ok(Request::post(url.as_str()).header(CONTENT_TYPE, "application/json")),
                Buffer::from(body.to_string()),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(at.storage(format!(
                "OneDrive: cannot create an upload session: {}",
                describe(&resp)
            )));
        }
        serde_json::from_slice::<SessionInfo>(&resp.body().to_bytes())
            .ok()
            .and_then(|s| s.upload_url)
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .map(UploadUrl)
            .ok_or_else(|| at.storage("OneDrive: the upload session has no uploadUrl"))
    }

    /// Ask the upload URL which bytes it expects next.
    async fn session_status(&self, url: &str) -> SessionStatus {
        let Ok(req) = Request::get(url).body(Buffer::new()) else {
            return SessionStatus::Unknown;
        };
        match self.send(req, self.policy.call_timeout).await {
            Sent::Answer(resp) if resp.status() == StatusCode::NOT_FOUND => SessionStatus::Gone,
            Sent::Answer(resp) if resp.status().is_success() => {
                match next_expected(&resp.body().to_bytes()) {
                    Some(Some(n)) => SessionStatus::Next(n),
                    Some(None) => SessionStatus::Gone,
                    None => SessionStatus::Unknown,
                }
            }
            _ => SessionStatus::Unknown,
        }
    }

    /// The size of the item at the key, if it exists.
    async fn stored_size(&self, at: Target<'_>) -> Result<Option<u64>> {
        let url = format!("{}:/{}", self.drive_root, self.item_path(at.key));
        let resp = self
            .call(
                "check the uploaded object",
                at,
                || Ok(Request::get(url.as_str())),
                Buffer::new(),
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(at.storage(format!(
                "OneDrive: cannot check the uploaded object: {}",
                describe(&resp)
            )));
        }
        Ok(serde_json::from_slice::<ItemInfo>(&resp.body().to_bytes())
            .ok()
            .and_then(|i| i.size))
    }

    /// Upload `total` bytes from `spool` through an upload session.
    async fn upload_session(&self, at: Target<'_>, spool: &mut Spool, total: u64) -> Result<()> {
        let url = self.create_session(at).await?;
        let mut guard = SessionGuard {
            http: self.http.clone(),
            url: Some(url),
        };
        let result = self.send_fragments(at, spool, total, guard.url()).await;
        if result.is_ok() {
            guard.disarm();
        } else {
            guard.cancel().await;
        }
        result
    }

    /// PUT the fragments in order; retry and resume from `nextExpectedRanges`.
    async fn send_fragments(
        &self,
        at: Target<'_>,
        spool: &mut Spool,
        total: u64,
        url: &str,
    ) -> Result<()> {
        let p = self.policy;
        let mut offset = 0u64;
        // The fragment last read, reused when the same one is sent again.
        let mut held: Option<(u64, Buffer)> = None;
        let mut failures = 0;
        let mut delay = p.base_delay;
        let mut sent_last = false;
        loop {
            let end = (offset + FRAGMENT_SIZE).min(total) - 1;
            let len = end - offset + 1;
            let body = match held.take() {
                Some((o, b)) if o == offset && b.len() as u64 == len => b,
                _ => spool.read_at(at, offset, len).await?,
            };
            let range = format!("bytes {offset}-{end}/{total}");
            // No Authorization header: the upload URL is pre-authenticated.
            let req = Request::put(url)
                .header(http::header::CONTENT_RANGE, range.as_str())
                .header(http::header::CONTENT_LENGTH, len)
                .body(body.clone())
                .map_err(|e| {
                    at.error(ErrorKind::Unexpected, "cannot build a fragment request")
                        .with_source(e)
                })?;
            sent_last |= end + 1 == total;
            let (problem, wait, gone) = match self.send(req, p.fragment_timeout).await {
                Sent::Answer(resp) => match resp.status() {
                    StatusCode::OK | StatusCode::CREATED => {
                        return Self::expect_stored("finish the upload", at, &resp, total);
                    }
                    StatusCode::ACCEPTED => {
                        let next = match next_expected(&resp.body().to_bytes()) {
                            Some(Some(n)) => n,
                            _ => end + 1,
                        };
                        if next > offset && next < total {
                            offset = next;
                            held = None;
                            failures = 0;
                            delay = p.base_delay;
                            continue;
                        }
                        (
                            format!("HTTP 202 expecting offset {next} after {range}"),
                            None,
                            false,
                        )
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => (describe(&resp), None, false),
                    StatusCode::NOT_FOUND => (describe(&resp), None, true),
                    s if retryable(s) => (
                        describe(&resp),
                        retry_after(&resp, p.max_retry_after),
                        false,
                    ),
                    _ => {
                        return Err(at.storage(format!(
                            "OneDrive rejected the fragment {range}: {}",
                            describe(&resp)
                        )));
                    }
                },
                Sent::Lost(d) => (d, None, false),
            };
            failures += 1;
            if failures >= p.attempts && !gone {
                return Err(at
                    .storage(format!(
                        "OneDrive: the fragment {range} failed {failures} times; last: {problem}"
                    ))
                    .temporary());
            }
            if !gone {
                tokio::time::sleep(wait.unwrap_or(delay)).await;
                delay = (delay * 2).min(p.max_delay);
            }
            let status = if gone {
                SessionStatus::Gone
            } else {
                self.session_status(url).await
            };
            match status {
                SessionStatus::Next(n) if n < total => {
                    held = Some((offset, body));
                    offset = n;
                }
                SessionStatus::Next(_) | SessionStatus::Gone => {
                    // An earlier attempt at the last fragment may have completed the
                    // upload with its answer lost.
                    if sent_last && self.stored_size(at).await? == Some(total) {
                        return Ok(());
                    }
                    return Err(at
                        .storage(format!(
                            "OneDrive: the upload session ended before the upload did \
                             (at {range}: {problem})"
                        ))
                        .temporary());
                }
                SessionStatus::Unknown => held = Some((offset, body)),
            }
        }
    }
}

/// The local spool file an object is written to before it is uploaded. It is created
/// unlinked where the platform allows (so it vanishes with the process) and deleted when
/// dropped.
struct Spool {
    file: tokio::fs::File,
    dir: PathBuf,
}

impl Spool {
    async fn create(dir: PathBuf, at: Target<'_>) -> Result<Self> {
        let d = dir.clone();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&d))
            .await
            .map_err(|e| {
                at.error(ErrorKind::Unexpected, "spool task failed")
                    .with_source(e)
            })?
            .map_err(|e| {
                at.error(
                    ErrorKind::Io,
                    format!("cannot create a spool file in {}", dir.display()),
                )
                .with_source(e)
                .with_hint(
                    "set spool_dir to a writable directory with room for the largest artifact",
                )
            })?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            dir,
        })
    }

    fn io_error(&self, at: Target<'_>, what: &str, e: std::io::Error) -> Error {
        at.error(
            ErrorKind::Io,
            format!("{what} the spool file in {} failed", self.dir.display()),
        )
        .with_source(e)
        .with_hint("set spool_dir to a directory with room for the largest artifact")
    }

    /// Read `len` bytes at `offset` (one fragment: the only buffer held).
    async fn read_at(&mut self, at: Target<'_>, offset: u64, len: u64) -> Result<Buffer> {
        let n = usize::try_from(len)
            .map_err(|_| at.error(ErrorKind::Unexpected, "fragment too large"))?;
        let mut buf = vec![0u8; n];
        let read = async {
            self.file.seek(std::io::SeekFrom::Start(offset)).await?;
            self.file.read_exact(&mut buf).await
        }
        .await;
        match read {
            Ok(_) => Ok(Buffer::from(buf)),
            Err(e) => Err(self.io_error(at, "reading", e)),
        }
    }
}

/// A OneDrive [`StorageTier`]: OpenDAL for reads, listings, stats, deletes and small
/// whole-object writes; [`StorageTier::writer`] streams through a local spool file and an
/// upload session of zdr's own (see the module docs).
pub struct OneDriveTier {
    inner: OpendalTier,
    graph: Arc<Graph>,
    spool_dir: Option<PathBuf>,
}

impl fmt::Debug for OneDriveTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneDriveTier")
            .field("name", &self.inner.name())
            .field("root", &self.graph.root)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// Open the OneDrive tier `name`.
///
/// # Errors
/// As [`operator`], with the tier name added.
pub fn open(name: &str, cfg: &OneDriveConfig) -> Result<Arc<dyn StorageTier>> {
    Ok(Arc::new(OneDriveTier::new(name, cfg)?))
}

impl OneDriveTier {
    /// Build the tier `name` from its config; nothing is sent over the network.
    ///
    /// # Errors
    /// As [`operator`], with the tier name added.
    pub fn new(name: &str, cfg: &OneDriveConfig) -> Result<Self> {
        let built = build(cfg).map_err(|e| e.with_context("tier", name))?;
        let root = cfg
            .root
            .as_deref()
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let graph = Graph {
            http: HttpTransporter::default(),
            drive_root: format!("{}/v1.0/me/drive/root", built.graph),
            root,
            tokens: built.tokens,
            policy: Policy::default(),
        };
        Ok(Self {
            inner: OpendalTier::new(name, built.op),
            graph: Arc::new(graph),
            spool_dir: cfg.spool_dir.clone(),
        })
    }

    /// The OpenDAL operator behind reads, listings and deletes.
    #[must_use]
    pub fn operator(&self) -> &Operator {
        self.inner.operator()
    }
}

#[async_trait]
impl StorageTier for OneDriveTier {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn writer(&self, key: &str) -> Result<BoxWrite> {
        let tier = self.inner.name();
        if !zdr_core::layout::is_safe_key(key) {
            return Err(
                Error::bad_input(format!("unsafe storage key {key:?}")).with_context("tier", tier)
            );
        }
        let at = Target { tier, key };
        let dir = self.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spool = Spool::create(dir, at).await?;
        Ok(Box::new(SpoolWriter {
            state: WriterState::Spooling(Box::new(Spooling {
                file: BufWriter::with_capacity(SPOOL_BUFFER, spool.file),
                dir: spool.dir,
                len: 0,
                job: Job {
                    graph: self.graph.clone(),
                    tier: tier.to_owned(),
                    key: key.to_owned(),
                },
            })),
        }))
    }

    async fn reader(&self, key: &str) -> Result<BoxRead> {
        self.inner.reader(key).await
    }

    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read_all(key).await
    }

    async fn write_all(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner.write_all(key, bytes).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.inner.list(prefix).await
    }

    async fn stat(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.stat(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}

/// What a writer uploads on `shutdown()`.
struct Job {
    graph: Arc<Graph>,
    tier: String,
    key: String,
}

impl Job {
    async fn commit(self, mut spool: Spool, len: u64) -> Result<()> {
        let at = Target {
            tier: &self.tier,
            key: &self.key,
        };
        if len < SIMPLE_UPLOAD_LIMIT {
            let bytes = spool.read_at(at, 0, len).await?;
            drop(spool);
            return self.graph.put_small(at, bytes).await;
        }
        let result = self.graph.upload_session(at, &mut spool, len).await;
        drop(spool);
        result
    }
}

/// The writer [`OneDriveTier::writer`] returns: bytes go to the spool file; `shutdown()`
/// uploads it.
struct SpoolWriter {
    state: WriterState,
}

/// A writer receiving bytes.
struct Spooling {
    file: BufWriter<tokio::fs::File>,
    dir: PathBuf,
    len: u64,
    job: Job,
}

impl Spooling {
    fn failure(&self, e: std::io::Error) -> std::io::Error {
        Error::new(
            ErrorKind::Io,
            format!("writing the spool file in {} failed", self.dir.display()),
        )
        .with_context("tier", &self.job.tier)
        .with_context("key", &self.job.key)
        .with_source(e)
        .with_hint("set spool_dir to a directory with room for the largest artifact")
        .into_io()
    }
}

enum WriterState {
    Spooling(Box<Spooling>),
    Committing(Pin<Box<dyn Future<Output = Result<()>> + Send>>),
    Done,
    Failed,
}

fn after_end(what: &str) -> std::io::Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("OneDrive writer: {what} after shutdown or a failure"),
    )
    .into_io()
}

impl AsyncWrite for SpoolWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let WriterState::Spooling(s) = &mut this.state else {
            return Poll::Ready(Err(after_end("write")));
        };
        match ready!(Pin::new(&mut s.file).poll_write(cx, buf)) {
            Ok(n) => {
                s.len += n as u64;
                Poll::Ready(Ok(n))
            }
            Err(e) => {
                let err = s.failure(e);
                this.state = WriterState::Failed;
                Poll::Ready(Err(err))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            // Flushing only moves bytes to the spool; the upload happens on shutdown.
            WriterState::Spooling(s) => match ready!(Pin::new(&mut s.file).poll_flush(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => {
                    let err = s.failure(e);
                    this.state = WriterState::Failed;
                    Poll::Ready(Err(err))
                }
            },
            WriterState::Committing(_) | WriterState::Done => Poll::Ready(Ok(())),
            WriterState::Failed => Poll::Ready(Err(after_end("flush"))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                WriterState::Spooling(s) => {
                    if let Err(e) = ready!(Pin::new(&mut s.file).poll_flush(cx)) {
                        let err = s.failure(e);
                        this.state = WriterState::Failed;
                        return Poll::Ready(Err(err));
                    }
                    let WriterState::Spooling(s) =
                        std::mem::replace(&mut this.state, WriterState::Failed)
                    else {
                        return Poll::Ready(Err(after_end("shutdown")));
                    };
                    let Spooling {
                        file,
                        dir,
                        len,
                        job,
                    } = *s;
                    let spool = Spool {
                        file: file.into_inner(),
                        dir,
                    };
                    this.state = WriterState::Committing(Box::pin(job.commit(spool, len)));
                }
                WriterState::Committing(upload) => {
                    let result = ready!(upload.as_mut().poll(cx));
                    this.state = if result.is_ok() {
                        WriterState::Done
                    } else {
                        WriterState::Failed
                    };
                    return Poll::Ready(result.map_err(Error::into_io));
                }
                WriterState::Done => return Poll::Ready(Ok(())),
                WriterState::Failed => return Poll::Ready(Err(after_end("shutdown"))),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;

    use zdr_core::ErrorKind;

    use super::*;

    const SECRET_AT: &str = "EwAAAccessTokenValue";
    const SECRET_RT: &str = "M.C5_RefreshTokenValue";

    fn conf(body: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(body.as_bytes()).unwrap();
        f
    }

    fn rclone_cfg(remote: &str, path: &Path) -> OneDriveConfig {
        OneDriveConfig {
            root: Some("zdr".into()),
            rclone_remote: Some(remote.into()),
            rclone_config: Some(path.to_path_buf()),
            ..Default::default()
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn resolve(cfg: &OneDriveConfig) -> Result<Auth> {
        resolve_auth(cfg, &no_env, &|_| false)
    }

    fn good_conf() -> String {
        format!(
            "# rclone config\n\
             [other]\ntype = s3\n\n\
             [zentoria-onedrive]\n\
             type = onedrive\n\
             client_id = my-app-id\n\
             client_secret = my-app-secret\n\
             token = {{\"access_token\":\"{SECRET_AT}\",\"token_type\":\"Bearer\",\"refresh_token\":\"{SECRET_RT}\",\"expiry\":\"2026-01-16T12:00:00.000000+01:00\"}}\n\
             drive_id = 0123456789abcdef\n\
             drive_type = personal\n"
        )
    }

    fn assert_no_secrets(e: &Error) {
        let s = format!("{e} {e:?}");
        assert!(!s.contains(SECRET_AT), "{s}");
        assert!(!s.contains(SECRET_RT), "{s}");
    }

    #[test]
    fn rclone_remote_gives_refresh_credentials() {
        let f = conf(&good_conf());
        let auth = resolve(&rclone_cfg("zentoria-onedrive:", f.path())).unwrap();
        let Auth::Refresh {
            client_id,
            client_secret,
            refresh_token,
        } = auth
        else {
            panic!("expected refresh credentials");
        };
        assert_eq!(client_id, "my-app-id");
        assert_eq!(client_secret.as_deref(), Some("my-app-secret"));
        assert_eq!(refresh_token, SECRET_RT);
    }

    #[test]
    fn config_client_values_override_the_remote() {
        let f = conf(&good_conf());
        let mut cfg = rclone_cfg("zentoria-onedrive", f.path());
        cfg.client_id = Some("override-id".into());
        cfg.client_secret = Some("override-secret".into());
        let Auth::Refresh {
            client_id,
            client_secret,
            ..
        } = resolve(&cfg).unwrap()
        else {
            panic!("expected refresh credentials");
        };
        assert_eq!(client_id, "override-id");
        assert_eq!(client_secret.as_deref(), Some("override-secret"));
    }

    #[test]
    fn rclone_missing_file_names_remote_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.conf");
        let e = resolve(&rclone_cfg("zentoria-onedrive", &path))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let s = e.to_string();
        assert!(s.contains("zentoria-onedrive"), "{s}");
        assert!(s.contains(&path.display().to_string()), "{s}");
        assert!(s.contains("does not exist"), "{s}");
    }

    #[test]
    fn rclone_missing_section() {
        let f = conf(&good_conf());
        let e = resolve(&rclone_cfg("elsewhere", f.path()))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let s = e.to_string();
        assert!(
            s.contains("\"elsewhere\"") && s.contains("no such remote"),
            "{s}"
        );
        assert!(s.contains(&f.path().display().to_string()), "{s}");
        assert_eq!(e.context_value("remote"), Some("elsewhere"));
    }

    #[test]
    fn rclone_wrong_type() {
        let f = conf(&good_conf());
        let e = resolve(&rclone_cfg("other", f.path()))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().contains("type is \"s3\""), "{e}");
    }

    #[test]
    fn rclone_without_refresh_token_never_prints_tokens() {
        let cases = [
            format!(
                "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"access_token\":\"{SECRET_AT}\",\"expiry\":\"x\"}}\n"
            ),
            format!(
                "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"access_token\":\"{SECRET_AT}\",\"refresh_token\":\"\"}}\n"
            ),
            "[r]\ntype = onedrive\nclient_id = id\n".to_owned(),
            // Broken JSON whose serde error would quote the value.
            format!(
                "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"refresh_token\":{SECRET_RT}}}\n"
            ),
            format!(
                "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"refresh_token\":[\"{SECRET_RT}\"]}}\n"
            ),
        ];
        for case in cases {
            let f = conf(&case);
            let e = resolve(&rclone_cfg("r", f.path())).map(|_| ()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadInput, "{case}");
            assert!(e.to_string().contains("\"r\""), "{e}");
            assert!(
                e.to_string().contains(&f.path().display().to_string()),
                "{e}"
            );
            assert_no_secrets(&e);
        }
    }

    #[test]
    fn rclone_builtin_app_needs_client_id() {
        let f = conf(&format!(
            "[od]\ntype = onedrive\nclient_id =\nclient_secret =\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
        ));
        let e = resolve(&rclone_cfg("od", f.path()))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().contains("no client_id"), "{e}");
        assert!(e.hint().is_some_and(|h| h.contains("client_id")));
        assert_no_secrets(&e);
    }

    #[test]
    fn rclone_region_requires_endpoints() {
        let body = format!(
            "[od]\ntype = onedrive\nclient_id = id\nregion = us\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
        );
        let f = conf(&body);
        let e = resolve(&rclone_cfg("od", f.path()))
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("region \"us\""), "{e}");
        let mut cfg = rclone_cfg("od", f.path());
        cfg.graph_endpoint = Some("https://graph.microsoft.us".into());
        cfg.token_endpoint =
            Some("https://login.microsoftonline.us/common/oauth2/v2.0/token".into());
        assert!(resolve(&cfg).is_ok());
        let f = conf(&body.replace("region = us", "region = global"));
        assert!(resolve(&rclone_cfg("od", f.path())).is_ok());
    }

    #[test]
    fn rclone_encrypted_config_is_refused() {
        let f = conf("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabcdef\n");
        let e = resolve(&rclone_cfg("od", f.path()))
            .map(|_| ())
            .unwrap_err();
        assert!(e.to_string().contains("encrypted"), "{e}");
    }

    #[test]
    fn ini_parser_handles_comments_quotes_and_repeats() {
        let ini = parse_ini(
            "; top comment\nstray = ignored\n[a]\n  key = \"quoted value\" \n# c\nk2=v=with=eq\n[b]\n\n[a]\nkey = later\n",
        );
        let names: Vec<_> = ini.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "a"]);
        assert_eq!(
            ini[0].1,
            [
                ("key".to_owned(), "quoted value".to_owned()),
                ("k2".to_owned(), "v=with=eq".to_owned())
            ]
        );
        // Repeated sections merge; later keys win.
        let f = conf(&format!(
            "[r]\ntype = onedrive\nclient_id = first\n[r]\nclient_id = second\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
        ));
        let remote = read_rclone_remote(f.path(), "r").unwrap();
        assert_eq!(remote.client_id.as_deref(), Some("second"));
        assert!(!format!("{remote:?}").contains(SECRET_RT));
    }

    #[test]
    fn default_rclone_config_follows_rclone() {
        let env = |k: &str| match k {
            "HOME" => Some(OsString::from("/home/op")),
            "XDG_CONFIG_HOME" => Some(OsString::from("/xdg")),
            _ => None,
        };
        assert_eq!(
            default_rclone_config(&env, &|_| false),
            Some(PathBuf::from("/xdg/rclone/rclone.conf"))
        );
        assert_eq!(
            default_rclone_config(&env, &|p| p
                == Path::new("/home/op/.config/rclone/rclone.conf")),
            Some(PathBuf::from("/home/op/.config/rclone/rclone.conf"))
        );
        let with_var = |k: &str| (k == "RCLONE_CONFIG").then(|| OsString::from("/etc/rc.conf"));
        assert_eq!(
            default_rclone_config(&with_var, &|_| false),
            Some(PathBuf::from("/etc/rc.conf"))
        );
        assert_eq!(default_rclone_config(&no_env, &|_| true), None);
    }

    #[test]
    fn direct_credentials_rules() {
        let cfg = OneDriveConfig {
            refresh_token: Some(SECRET_RT.into()),
            ..Default::default()
        };
        let e = resolve(&cfg).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("client_id"), "{e}");
        assert_no_secrets(&e);

        let cfg = OneDriveConfig {
            refresh_token: Some(SECRET_RT.into()),
            access_token: Some(SECRET_AT.into()),
            client_id: Some("id".into()),
            ..Default::default()
        };
        assert!(resolve(&cfg).is_err());

        let e = resolve(&OneDriveConfig::default()).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);

        let f = conf(&good_conf());
        let mut cfg = rclone_cfg("zentoria-onedrive", f.path());
        cfg.refresh_token = Some(SECRET_RT.into());
        assert!(resolve(&cfg).is_err());

        let cfg = OneDriveConfig {
            access_token: Some(SECRET_AT.into()),
            ..Default::default()
        };
        assert!(matches!(resolve(&cfg), Ok(Auth::Access(_))));
    }

    #[test]
    fn debug_redacts_secrets() {
        let cfg = OneDriveConfig {
            root: Some("zdr".into()),
            client_id: Some("my-app-id".into()),
            client_secret: Some("top-secret-value".into()),
            refresh_token: Some(SECRET_RT.into()),
            access_token: Some(SECRET_AT.into()),
            rclone_remote: Some("zentoria-onedrive".into()),
            ..Default::default()
        };
        let s = format!("{cfg:?} {cfg:#?}");
        assert!(!s.contains("top-secret-value"), "{s}");
        assert_no_secrets(&Error::bad_input(s.clone()));
        assert!(
            s.contains("my-app-id") && s.contains("zentoria-onedrive"),
            "{s}"
        );
        assert!(s.contains("<redacted>"), "{s}");
        let unset = format!("{:?}", OneDriveConfig::default());
        assert!(!unset.contains("<redacted>"), "{unset}");
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let ok: OneDriveConfig =
            serde_json::from_str(r#"{"root":"zdr","rclone_remote":"zentoria-onedrive"}"#).unwrap();
        assert_eq!(ok.rclone_remote.as_deref(), Some("zentoria-onedrive"));
        assert!(serde_json::from_str::<OneDriveConfig>(r#"{"drive_id":"x"}"#).is_err());
    }

    #[test]
    fn urls_are_rewritten_only_at_the_known_endpoints() {
        let g = Some("http://127.0.0.1:9/prefix");
        let t = Some("http://127.0.0.1:9/tok");
        assert_eq!(
            rewrite_url(
                "https://graph.microsoft.com/v1.0/me/drive/root:/a:/content",
                g,
                t
            )
            .as_deref(),
            Some("http://127.0.0.1:9/prefix/v1.0/me/drive/root:/a:/content")
        );
        assert_eq!(
            rewrite_url(DEFAULT_TOKEN_ENDPOINT, g, t).as_deref(),
            Some("http://127.0.0.1:9/tok")
        );
        assert_eq!(
            rewrite_url("https://graph.microsoft.community/x", g, t),
            None
        );
        assert_eq!(
            rewrite_url("https://my.microsoftpersonalcontent.com/d", g, t),
            None
        );
        assert_eq!(
            rewrite_url("https://graph.microsoft.com/v1.0/me", None, t),
            None
        );
        assert_eq!(rewrite_url(DEFAULT_TOKEN_ENDPOINT, g, None), None);
    }

    #[test]
    fn last_fragment_detection() {
        let put = |range: &str| {
            Request::put("http://x/upload/1")
                .header(http::header::CONTENT_RANGE, range)
                .body(())
                .unwrap()
        };
        assert!(is_last_fragment(&put("bytes 3932160-10498124/10498125")));
        assert!(!is_last_fragment(&put("bytes 0-3932159/10498125")));
        assert!(!is_last_fragment(&put("garbage")));
        let get = Request::get("http://x").body(()).unwrap();
        assert!(!is_last_fragment(&get));
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("a b+c/d=e&f~"), "a%20b%2Bc%2Fd%3De%26f~");
    }

    #[test]
    fn upload_session_helpers() {
        assert_eq!(FRAGMENT_SIZE, 10 * 1024 * 1024);
        assert_eq!(FRAGMENT_SIZE % FRAGMENT_UNIT, 0);
        assert_eq!(
            next_expected(br#"{"nextExpectedRanges":["12345-"]}"#),
            Some(Some(12345))
        );
        assert_eq!(
            next_expected(
                br#"{"expirationDateTime":"x","nextExpectedRanges":["0-327679","400000-"]}"#
            ),
            Some(Some(0))
        );
        assert_eq!(next_expected(br#"{"nextExpectedRanges":[]}"#), Some(None));
        assert_eq!(next_expected(br#"{"id":"x"}"#), None);
        assert_eq!(next_expected(b"not json"), None);
        assert_eq!(
            encode_path("zdr/a b/c+d%.tar.zst"),
            "zdr/a%20b/c%2Bd%25.tar.zst"
        );
        assert_eq!(encode_path("\u{e9}t\u{e9}"), "%C3%A9t%C3%A9");
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::INSUFFICIENT_STORAGE));
        assert!(!retryable(StatusCode::BAD_REQUEST));
        assert!(!retryable(StatusCode::NOT_IMPLEMENTED));
    }

    #[test]
    fn retry_after_and_error_descriptions() {
        let resp = |status: u16, retry: Option<&str>, body: &str| {
            let mut b = Response::builder().status(status);
            if let Some(r) = retry {
                b = b.header(http::header::RETRY_AFTER, r);
            }
            b.body(Buffer::from(body.to_owned())).unwrap()
        };
        let cap = Duration::from_secs(300);
        assert_eq!(
            retry_after(&resp(429, Some("7"), ""), cap),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(&resp(429, Some("99999"), ""), cap), Some(cap));
        assert_eq!(
            retry_after(&resp(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), ""), cap),
            None
        );
        assert_eq!(retry_after(&resp(503, None, ""), cap), None);
        let r = resp(
            403,
            None,
            r#"{"error":{"code":"accessDenied","message":"Access denied."}}"#,
        );
        assert_eq!(
            describe(&r),
            "HTTP 403 Forbidden (accessDenied: Access denied.)"
        );
        assert_eq!(describe(&resp(502, None, "<html>")), "HTTP 502 Bad Gateway");
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .with_context("url", "https://up.example/upload/secret?tempauth=SECRET");
        assert!(!describe_transport(&e).contains("SECRET"));
    }

    #[test]
    fn tier_builds_offline_and_hides_secrets() {
        let cfg = OneDriveConfig {
            root: Some("/backups//zdr/".into()),
            client_id: Some("id".into()),
            refresh_token: Some(SECRET_RT.into()),
            graph_endpoint: Some("http://127.0.0.1:9/".into()),
            spool_dir: Some(PathBuf::from("/var/spool/zdr")),
            ..Default::default()
        };
        let tier = OneDriveTier::new("offsite", &cfg).unwrap();
        assert_eq!(tier.name(), "offsite");
        assert_eq!(tier.graph.root, "backups/zdr");
        assert_eq!(
            tier.graph.drive_root,
            "http://127.0.0.1:9/v1.0/me/drive/root"
        );
        assert_eq!(tier.graph.item_path("a/b c"), "backups/zdr/a/b%20c");
        let shown = format!("{tier:?} {cfg:?}");
        assert!(!shown.contains(SECRET_RT), "{shown}");
        assert!(shown.contains("/var/spool/zdr"), "{shown}");

        let cfg = OneDriveConfig {
            root: Some("zdr".into()),
            ..Default::default()
        };
        let e = OneDriveTier::new("offsite", &cfg).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert_eq!(e.context_value("tier"), Some("offsite"));
    }

    #[test]
    fn operator_builds_offline_and_checks_endpoints() {
        let mut cfg = OneDriveConfig {
            root: Some("zdr".into()),
            client_id: Some("id".into()),
            refresh_token: Some(SECRET_RT.into()),
            graph_endpoint: Some("https://graph.microsoft.us/".into()),
            token_endpoint: Some(
                "https://login.microsoftonline.us/common/oauth2/v2.0/token".into(),
            ),
            ..Default::default()
        };
        let op = operator(&cfg).unwrap();
        assert!(op.info().capability().write);
        cfg.graph_endpoint = Some("graph.microsoft.us".into());
        let e = operator(&cfg).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        assert!(e.to_string().contains("graph_endpoint"), "{e}");
    }
}
