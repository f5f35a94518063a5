//! zdr's own Microsoft Graph client for uploads: simple `PUT`s and upload sessions in
//! fragments, with retries, resumption and cancellation.

use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use opendal::{Buffer, HttpTransporter};
use serde::Deserialize;
use zdr_core::{Error, ErrorKind, Result};

use super::oauth::Tokens;
use super::spool::Spool;

/// Graph's fragment granularity: every fragment but the last is a multiple of it.
pub(super) const FRAGMENT_UNIT: u64 = 320 * 1024;

/// The size of the fragments [`OneDriveTier`](super::OneDriveTier)'s writer uploads: 32 × 320 KiB = 10 MiB,
/// the upper end of Microsoft's recommendation (Graph accepts up to 60 MiB).
pub const FRAGMENT_SIZE: u64 = 32 * FRAGMENT_UNIT;

/// Objects smaller than this go up in one simple `PUT .../content` instead of an upload
/// session (Graph's documented simple-upload limit).
pub const SIMPLE_UPLOAD_LIMIT: u64 = 4 * 1024 * 1024;

/// Retries and timeouts of zdr's own Graph calls.
#[derive(Clone, Copy, Debug)]
pub(super) struct Policy {
    /// Attempts per call or fragment, the first included.
    pub(super) attempts: u32,
    /// Backoff before the first retry; doubled each time up to `max_delay`.
    pub(super) base_delay: Duration,
    pub(super) max_delay: Duration,
    /// Upper bound for a server's `Retry-After`.
    pub(super) max_retry_after: Duration,
    /// Timeout of one Graph call (metadata, small upload).
    pub(super) call_timeout: Duration,
    /// Timeout of one fragment `PUT` (10 MiB, and Graph assembling the file on the last).
    pub(super) fragment_timeout: Duration,
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

/// The object a Graph call is about: every error names the tier and the key.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub(super) tier: &'a str,
    pub(super) key: &'a str,
}

impl Target<'_> {
    pub(super) fn error(&self, kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_context("tier", self.tier)
            .with_context("key", self.key)
    }

    pub(super) fn storage(&self, message: impl Into<String>) -> Error {
        self.error(ErrorKind::Storage, message)
    }
}

/// What came back from one HTTP exchange.
pub(super) enum Sent {
    /// An answer, with its body read.
    Answer(Response<Buffer>),
    /// No answer (connection failure, timeout): the description, safe to show.
    Lost(String),
}

/// An upload session's URL: pre-authenticated, so it is a secret. Never in errors, logs
/// or `Debug` output.
pub(super) struct UploadUrl(String);

/// Cancels an upload session when the upload fails or is dropped half-way.
pub(super) struct SessionGuard {
    pub(super) http: HttpTransporter,
    pub(super) url: Option<UploadUrl>,
}

impl SessionGuard {
    pub(super) fn url(&self) -> &str {
        self.url.as_ref().map_or("", |u| u.0.as_str())
    }

    /// The upload finished: nothing to cancel.
    pub(super) fn disarm(&mut self) {
        self.url = None;
    }

    /// Cancel the session now (best effort).
    pub(super) async fn cancel(&mut self) {
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
pub(super) async fn cancel_session(http: HttpTransporter, url: UploadUrl) {
    if let Ok(req) = Request::delete(url.0.as_str()).body(Buffer::new()) {
        let _ = tokio::time::timeout(Duration::from_secs(30), http.send(req)).await;
    }
}

/// Percent-encode a drive path for Graph's path addressing (`/` kept).
pub(super) fn encode_path(path: &str) -> String {
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
pub(super) fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 509)
}

/// `Retry-After` in seconds (Graph sends seconds), capped.
pub(super) fn retry_after(resp: &Response<Buffer>, cap: Duration) -> Option<Duration> {
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
pub(super) struct GraphErrorBody {
    pub(super) error: GraphErrorDetail,
}

#[derive(Deserialize)]
pub(super) struct GraphErrorDetail {
    #[serde(default)]
    pub(super) code: String,
    #[serde(default)]
    pub(super) message: String,
}

/// `HTTP 403 Forbidden (accessDenied: ...)`: status and Graph's error code and message,
/// never a URL.
pub(super) fn describe(resp: &Response<Buffer>) -> String {
    let status = resp.status();
    match serde_json::from_slice::<GraphErrorBody>(&resp.body().to_bytes()) {
        Ok(b) if !b.error.code.is_empty() => {
            format!("HTTP {status} ({}: {})", b.error.code, b.error.message)
        }
        _ => format!("HTTP {status}"),
    }
}

/// An OpenDAL transport error without its context (which holds the URL).
pub(super) fn describe_transport(e: &opendal::Error) -> String {
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
pub(super) struct ItemInfo {
    #[serde(default)]
    pub(super) size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionInfo {
    #[serde(default)]
    pub(super) upload_url: Option<String>,
    #[serde(default)]
    pub(super) next_expected_ranges: Option<Vec<String>>,
}

/// The first offset in `nextExpectedRanges` (`["12345-"]`, `["0-327679", ...]`);
/// `Some(None)` when the list is present and empty.
pub(super) fn next_expected(body: &[u8]) -> Option<Option<u64>> {
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
pub(super) enum SessionStatus {
    /// Graph expects this offset next.
    Next(u64),
    /// The session is gone (completed, expired or cancelled) or expects nothing more.
    Gone,
    /// No usable answer.
    Unknown,
}

/// zdr's own Microsoft Graph client, for streaming uploads.
pub(super) struct Graph {
    pub(super) http: HttpTransporter,
    /// `{graph}/v1.0/me/drive/root`.
    pub(super) drive_root: String,
    /// The tier's folder from the drive root, without leading or trailing `/`.
    pub(super) root: String,
    pub(super) tokens: Tokens,
    pub(super) policy: Policy,
}

impl Graph {
    pub(super) fn item_path(&self, key: &str) -> String {
        if self.root.is_empty() {
            encode_path(key)
        } else {
            encode_path(&format!("{}/{key}", self.root))
        }
    }

    /// One exchange, with a timeout.
    pub(super) async fn send(&self, req: Request<Buffer>, timeout: Duration) -> Sent {
        match tokio::time::timeout(timeout, self.http.send(req)).await {
            Ok(Ok(resp)) => Sent::Answer(resp),
            Ok(Err(e)) => Sent::Lost(describe_transport(&e)),
            Err(_) => Sent::Lost(format!("no answer within {}s", timeout.as_secs())),
        }
    }

    pub(super) fn token_error(&self, at: Target<'_>, e: &opendal::Error) -> Error {
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
    pub(super) async fn call(
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
    pub(super) fn expect_stored(
        what: &str,
        at: Target<'_>,
        resp: &Response<Buffer>,
        size: u64,
    ) -> Result<()> {
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
    pub(super) async fn put_small(&self, at: Target<'_>, bytes: Buffer) -> Result<()> {
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
    pub(super) async fn create_session(&self, at: Target<'_>) -> Result<UploadUrl> {
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
    pub(super) async fn session_status(&self, url: &str) -> SessionStatus {
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
    pub(super) async fn stored_size(&self, at: Target<'_>) -> Result<Option<u64>> {
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
    pub(super) async fn upload_session(
        &self,
        at: Target<'_>,
        spool: &mut Spool,
        total: u64,
    ) -> Result<()> {
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
    pub(super) async fn send_fragments(
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
