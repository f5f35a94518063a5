//! The calls of n8n's public REST API that zdr uses.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use zdr_core::{Error, ErrorKind, Result, Secret};

use crate::N8nSettings;

/// Page size of the list calls (n8n's maximum is 250).
const PAGE: u32 = 250;

#[derive(Clone)]
pub(crate) struct Api {
    url: String,
    base: String,
    key: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub(crate) fn new(s: &N8nSettings) -> Result<Self> {
        let url = s.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "n8n url {:?} is not an http(s) URL",
                s.url
            )));
        }
        let key = s.api_key.clone().ok_or_else(|| {
            Error::bad_input("n8n needs an API key (set it in ZDR_COMPONENTS__<NAME>__API_KEY)")
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(s.timeout_secs.unwrap_or(60).max(1)))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::bad_input(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            base: format!("{url}/api/v1"),
            url,
            key,
            http,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-N8N-API-KEY", self.key.expose())
            .header("accept", "application/json");
        if let Some(b) = body {
            req = req.json(b);
        }
        let response = req.send().await.map_err(|e| {
            Error::new(ErrorKind::Source, format!("n8n did not answer {what}"))
                .with_context("url", &self.url)
                .with_source(e.without_url())
                .temporary()
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("reading n8n's answer to {what} failed"),
            )
            .with_context("url", &self.url)
            .with_source(e.without_url())
            .temporary()
        })?;
        if status.is_success() {
            return if text.trim().is_empty() {
                Ok(Value::Null)
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    Error::new(
                        ErrorKind::Source,
                        format!("n8n's answer to {what} is not JSON"),
                    )
                    .with_context("url", &self.url)
                    .with_source(e)
                })
            };
        }
        // An error's body may be anything (a proxy's HTML page): its message where n8n gave one.
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "no message".to_owned());
        let err = match status.as_u16() {
            401 | 403 => Error::bad_input(format!("n8n refused the API key ({what}): {message}"))
                .with_hint("check the API key and its scopes (workflow:list, workflow:create, workflow:update, workflow:activate, tag:*)"),
            404 => Error::not_found(format!("n8n has no such thing ({what}): {message}")),
            400 | 409 | 422 => Error::bad_input(format!("n8n refused {what}: {message}")),
            _ => Error::new(ErrorKind::Source, format!("n8n failed {what}: HTTP {status}: {message}")).temporary(),
        };
        Err(err.with_context("url", &self.url))
    }

    /// Every item of a paged list (`data` + `nextCursor`).
    async fn all(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut p = format!("{path}?limit={PAGE}");
            if let Some(c) = &cursor {
                p.push_str("&cursor=");
                p.push_str(&percent(c));
            }
            let page = self.call(reqwest::Method::GET, &p, None).await?;
            let data = page.get("data").and_then(Value::as_array).ok_or_else(|| {
                Error::new(
                    ErrorKind::Source,
                    format!("n8n's list of {path} has no data"),
                )
                .with_context("url", &self.url)
            })?;
            out.extend(data.iter().cloned());
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if cursor.as_deref() == Some(c) => {
                    // Paging in a circle: the list would be cut short.
                    return Err(Error::new(
                        ErrorKind::Source,
                        format!("n8n returned the same cursor twice while listing {path}"),
                    )
                    .with_context("url", &self.url));
                }
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    pub(crate) async fn workflows(&self) -> Result<Vec<Value>> {
        self.all("/workflows").await
    }

    pub(crate) async fn workflow_tags(&self, id: &str) -> Result<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/workflows/{}/tags", percent(id)),
            None,
        )
        .await
    }

    pub(crate) async fn workflow_with_tags(&self, id: &str) -> Result<Value> {
        let mut w = self
            .call(
                reqwest::Method::GET,
                &format!("/workflows/{}", percent(id)),
                None,
            )
            .await?;
        if w.get("tags").is_none() {
            let tags = self.workflow_tags(id).await?;
            if let Some(o) = w.as_object_mut() {
                o.insert("tags".into(), tags);
            }
        }
        Ok(w)
    }

    /// Tag ids by name.
    pub(crate) async fn tags(&self) -> Result<BTreeMap<String, String>> {
        Ok(self
            .all("/tags")
            .await?
            .iter()
            .filter_map(|t| {
                Some((
                    t.get("name")?.as_str()?.to_owned(),
                    t.get("id")?.as_str()?.to_owned(),
                ))
            })
            .collect())
    }

    pub(crate) async fn create_tag(&self, name: &str) -> Result<String> {
        let t = self
            .call(
                reqwest::Method::POST,
                "/tags",
                Some(&json!({ "name": name })),
            )
            .await?;
        t.get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Source, "n8n created a tag without an id"))
    }

    pub(crate) async fn set_tags(&self, id: &str, ids: &Value) -> Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("/workflows/{}/tags", percent(id)),
            Some(ids),
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn create(&self, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, "/workflows", Some(body))
            .await
    }

    pub(crate) async fn update(&self, id: &str, body: &Value) -> Result<Value> {
        self.call(
            reqwest::Method::PUT,
            &format!("/workflows/{}", percent(id)),
            Some(body),
        )
        .await
    }

    pub(crate) async fn set_active(&self, id: &str, active: bool) -> Result<()> {
        let verb = if active { "activate" } else { "deactivate" };
        self.call(
            reqwest::Method::POST,
            &format!("/workflows/{}/{verb}", percent(id)),
            None,
        )
        .await
        .map(|_| ())
    }
}

/// Percent-encode a path segment or query value.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
