//! The OneDrive tier configuration and the credentials it means.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zdr_core::{Error, Result, Secret};

use super::rclone::{default_rclone_config, read_rclone_remote};

/// The Microsoft Graph origin that OpenDAL's OneDrive service calls.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// The OAuth 2.0 token endpoint that OpenDAL's OneDrive service calls.
pub const DEFAULT_TOKEN_ENDPOINT: &str =
    "https://login.microsoftonline.com/common/oauth2/v2.0/token";

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
    pub client_secret: Option<Secret>,
    /// A long-lived refresh token (scopes `offline_access Files.ReadWrite`).
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// A short-lived access token, never renewed: for a manual one-off session only.
    #[serde(default)]
    pub access_token: Option<Secret>,
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
    /// The directory where [`OneDriveTier`](super::OneDriveTier)'s writer spools an object before uploading
    /// it (see the module docs); the system temporary directory when unset. It needs
    /// room for the largest objects being written at the same time, and should be on
    /// disk: where `/tmp` is a `tmpfs`, the spool would take memory.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
}

/// Shows whether a secret is set, never its value.
pub(super) fn redacted<T>(secret: &Option<T>) -> Option<&'static str> {
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
pub(super) enum Auth {
    /// Client id (+ secret) and a refresh token: unattended.
    Refresh {
        client_id: String,
        client_secret: Option<String>,
        refresh_token: String,
    },
    /// A bare access token, never renewed.
    Access(String),
}

pub(super) fn check_endpoint<'a>(field: &str, value: &'a str) -> Result<&'a str> {
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

pub(super) fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A secret's trimmed value, `None` when unset or blank.
pub(super) fn non_empty_secret(v: &Option<Secret>) -> Option<String> {
    v.as_ref()
        .map(|s| s.expose().trim())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Decide which credentials a config means. `env` and `exists` are injected for tests.
pub(super) fn resolve_auth(
    cfg: &OneDriveConfig,
    env: &dyn Fn(&str) -> Option<OsString>,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Auth> {
    let client_id = non_empty(&cfg.client_id);
    let client_secret = non_empty_secret(&cfg.client_secret);
    let refresh_token = non_empty_secret(&cfg.refresh_token);
    let access_token = non_empty_secret(&cfg.access_token);

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
