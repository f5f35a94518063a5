//! OAuth 2.0 refresh-token redemption: the renewal of access tokens Graph rejected, and
//! the access tokens of zdr's own Graph calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use opendal::{Buffer, HttpTransporter};
use serde::Deserialize;

/// The scopes requested when zdr renews a token itself (the same as OpenDAL's).
pub(super) const SCOPE: &str = "offline_access Files.ReadWrite";

/// Renews access tokens that Graph rejected, and substitutes the renewed token for the
/// rejected one in later requests (OpenDAL's signer keeps sending it until its clock
/// says it expired).
pub(super) struct Recovery {
    pub(super) client_id: String,
    pub(super) client_secret: Option<String>,
    pub(super) state: tokio::sync::Mutex<RecoveryState>,
}

pub(super) struct RecoveryState {
    pub(super) refresh_token: String,
    /// `(rejected token as OpenDAL sends it, renewed token)`, newest last.
    pub(super) swaps: Vec<(String, String)>,
    /// The newest access token redeemed here, and when to stop using it (two minutes
    /// before it expires): what [`OneDriveTier`](super::OneDriveTier)'s own Graph calls send.
    pub(super) own: Option<(String, Instant)>,
}

impl RecoveryState {
    pub(super) fn lookup(&self, original: &str) -> Option<&str> {
        self.swaps
            .iter()
            .rev()
            .find(|(stale, _)| stale == original)
            .map(|(_, fresh)| fresh.as_str())
    }
}

/// The parts of a token response zdr reads.
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
    /// Lifetime in seconds.
    #[serde(default)]
    pub(super) expires_in: Option<u64>,
}

/// The parts of an OAuth error response zdr reports (no secrets in them).
#[derive(Deserialize)]
pub(super) struct TokenError {
    #[serde(default)]
    pub(super) error: String,
    #[serde(default)]
    pub(super) error_description: String,
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub(super) fn form_encode(value: &str) -> String {
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
    pub(super) async fn current_for(&self, original: &str) -> String {
        let state = self.state.lock().await;
        state.lookup(original).unwrap_or(original).to_owned()
    }

    pub(super) async fn renew(
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
    pub(super) async fn own_token(
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
    pub(super) async fn redeem(
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

/// Renew zdr's own access token this long before it expires.
pub(super) const TOKEN_MARGIN_SECS: u64 = 120;

/// Where zdr's own Graph calls get their access token.
#[derive(Clone)]
pub(super) enum Tokens {
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
    pub(super) async fn get(&self, rejected: Option<&str>) -> opendal::Result<Option<String>> {
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
