//! OneDrive through Microsoft Graph: the tier configuration, unattended credentials, the
//! OpenDAL [`Operator`] built from them, and [`OneDriveTier`], the
//! [`StorageTier`](zdr_core::StorageTier) that streams writes through upload sessions of its own.
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
//! but its [`writer`](zdr_core::StorageTier::writer) does not: a backup artifact arrives as a stream
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
//! session (`DELETE` on the upload URL) and fail with a [`Storage`](zdr_core::ErrorKind::Storage)
//! error naming the tier and the key (temporary when a later retry could help). Graph
//! calls other than fragments carry an access token redeemed from the same refresh token
//! as the operator's (cached until two minutes before it expires, renewed once on `401`).
//! Upload URLs and tokens never appear in errors.

mod config;
mod oauth;
mod rclone;
mod spool;
#[cfg(test)]
mod tests;
mod tier;
mod transport;
mod upload;

use std::sync::Arc;

use opendal::{HttpTransporter, Operator};
use zdr_core::{Error, Result};

pub use config::{DEFAULT_GRAPH_ENDPOINT, DEFAULT_TOKEN_ENDPOINT, OneDriveConfig};
pub use tier::{OneDriveTier, open};
pub use upload::{FRAGMENT_SIZE, SIMPLE_UPLOAD_LIMIT};

use config::{Auth, check_endpoint, resolve_auth};
use oauth::{Recovery, RecoveryState, Tokens};
use transport::GraphTransport;

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
