//! The HTTP transport around OpenDAL's: endpoint rewriting, renewal of a revoked access
//! token, and the `200 OK` answer to an upload's last fragment.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter};

use super::config::{DEFAULT_GRAPH_ENDPOINT, DEFAULT_TOKEN_ENDPOINT};
use super::oauth::Recovery;

/// Where the "Graph" and token requests go: OpenDAL's hard-coded URLs, rewritten.
#[derive(Clone)]
pub(super) struct GraphTransport {
    pub(super) inner: HttpTransporter,
    /// Replacement for `https://graph.microsoft.com`, without a trailing `/`.
    pub(super) graph: Option<String>,
    /// The effective token endpoint.
    pub(super) token_url: String,
    /// Whether token requests are rewritten to `token_url`.
    pub(super) rewrite_token: bool,
    /// Renewal of revoked access tokens (refresh-token auth only).
    pub(super) recovery: Option<Arc<Recovery>>,
}

/// Rewrite `url` if it starts with one of OpenDAL's hard-coded endpoints.
pub(super) fn rewrite_url(url: &str, graph: Option<&str>, token: Option<&str>) -> Option<String> {
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

pub(super) fn bearer<T>(req: &Request<T>) -> Option<String> {
    req.headers()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

pub(super) fn set_bearer<T>(req: &mut Request<T>, token: &str) -> opendal::Result<()> {
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
pub(super) fn is_last_fragment<T>(req: &Request<T>) -> bool {
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
pub(super) fn last_fragment_created(mut resp: Response<HttpBody>) -> Response<HttpBody> {
    if resp.status() == StatusCode::OK {
        *resp.status_mut() = StatusCode::CREATED;
    }
    resp
}

impl GraphTransport {
    pub(super) fn rewrite(&self, req: &mut Request<Buffer>) -> opendal::Result<()> {
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
