//! The client side: construction, error mapping, the gRPC control plane (version,
//! collections, aliases, snapshots, scroll) and the HTTP request helper.

use std::time::Duration;

use qdrant_client::QdrantError;
use qdrant_client::qdrant as pb;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use zdr_core::{Component, Error, ErrorKind, Result};

use crate::convert;
use crate::facts::payload_hash;
use crate::{AliasFact, PointSample, QdrantComponent, QdrantConfig, SAMPLE_POINTS};

pub(crate) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The artifact name of a collection. Qdrant accepts names an artifact cannot carry (spaces,
/// `/`, non-ASCII): those — and names that could be mistaken for an encoded one — become `_q`
/// followed by the hex of the name's UTF-8 bytes. Every other name is its own artifact name,
/// so backups made before this encoding existed keep their names. The mapping is injective and
/// reversible ([`collection_of_artifact`]).
#[must_use]
pub fn artifact_name(collection: &str) -> String {
    if safe_name(collection) && !collection.starts_with("_q") {
        collection.to_owned()
    } else {
        format!("_q{}", hex::encode(collection.as_bytes()))
    }
}

/// The collection an artifact name stands for ([`artifact_name`] reversed); `None` when it is
/// not one `artifact_name` makes.
#[must_use]
pub fn collection_of_artifact(artifact: &str) -> Option<String> {
    match artifact.strip_prefix("_q") {
        Some(hexed) => {
            let name = String::from_utf8(hex::decode(hexed).ok()?).ok()?;
            (artifact_name(&name) == artifact).then_some(name)
        }
        None => (safe_name(artifact)).then(|| artifact.to_owned()),
    }
}

/// The default gRPC URL for a REST base URL: the same host, port 6334 when the REST port
/// is 6333 or not given; `None` for any other port.
pub(crate) fn default_grpc_url(base: &str) -> Option<String> {
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    match port {
        None | Some("6333") => Some(format!("{scheme}://{host}:6334")),
        Some(_) => None,
    }
}

/// Information about one collection, in REST's JSON shapes.
pub(crate) struct Info {
    pub(crate) points_count: u64,
    pub(crate) vectors: Value,
    pub(crate) sparse_vectors: Value,
    pub(crate) payload_schema: Value,
}

pub(crate) fn enabled_payload(on: bool) -> Option<pb::WithPayloadSelector> {
    Some(on.into())
}

pub(crate) fn enabled_vectors(on: bool) -> Option<pb::WithVectorsSelector> {
    Some(on.into())
}

/// True when a gRPC status stands for a failed connection rather than an answer: tonic
/// turns transport errors (connection reset or closed, h2 protocol errors) into `Unknown`
/// and an abandoned call into `Cancelled`.
pub(crate) fn is_transport_failure(code: tonic::Code, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    code == tonic::Code::Cancelled
        || (code == tonic::Code::Unknown
            && [
                "transport error",
                "connection",
                "connect",
                "h2 protocol error",
                "broken pipe",
                "stream closed",
                "error reading",
                "timed out",
            ]
            .iter()
            .any(|needle| m.contains(needle)))
}

/// `major.minor` of a version string such as `1.18.2` or `v1.18.2-dev`.
pub(crate) fn major_minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl QdrantComponent {
    /// A Qdrant component named `component` for the server in `config`.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when a URL is malformed, the gRPC URL cannot be derived from
    /// the REST URL (set [`QdrantConfig::grpc_url`]), the API key is not printable ASCII, or
    /// a client cannot be built.
    pub fn new(component: Component, config: QdrantConfig) -> Result<Self> {
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "qdrant url {:?} must start with http:// or https://",
                config.url
            ))
            .with_context("component", &component));
        }
        let grpc_url = match &config.grpc_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => default_grpc_url(&base).ok_or_else(|| {
                Error::bad_input(format!(
                    "cannot tell the gRPC port of qdrant at {base} (REST is not on 6333)"
                ))
                .with_context("component", &component)
                .with_hint("set grpc_url, such as http://qdrant:6334")
            })?,
        };
        if !(grpc_url.starts_with("http://") || grpc_url.starts_with("https://")) {
            return Err(Error::bad_input(format!(
                "qdrant grpc_url {grpc_url:?} must start with http:// or https://"
            ))
            .with_context("component", &component));
        }
        if let Some(key) = &config.api_key
            && !key.expose().bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            // Checked here: qdrant-client would put a malformed key into its error message.
            return Err(Error::bad_input(
                "the qdrant API key has characters other than printable ASCII",
            )
            .with_context("component", &component));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .build()
            .map_err(|e| {
                Error::bad_input(format!("cannot build the HTTP client: {e}"))
                    .with_context("component", &component)
            })?;
        // No compatibility check: it prints, and the restore checks versions itself.
        let grpc = qdrant_client::Qdrant::from_url(&grpc_url)
            .api_key(config.api_key.as_ref().map(|k| k.expose().to_owned()))
            .skip_compatibility_check()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| {
                Error::bad_input(format!(
                    "cannot build the qdrant gRPC client for {grpc_url}: {e}"
                ))
                .with_context("component", &component)
            })?;
        Ok(Self {
            component,
            config,
            base,
            grpc_url,
            http,
            grpc,
        })
    }

    /// The configuration (its `Debug` hides the API key).
    #[must_use]
    pub fn config(&self) -> &QdrantConfig {
        &self.config
    }

    /// The gRPC URL in use (configured or derived from the REST URL).
    #[must_use]
    pub fn grpc_url(&self) -> &str {
        &self.grpc_url
    }

    /// The stall timeout ([`QdrantConfig::stall_timeout_secs`]).
    pub(crate) fn stall(&self) -> Duration {
        Duration::from_secs(self.config.stall_timeout_secs.max(1))
    }

    /// The limit of one long server-side operation ([`QdrantConfig::timeout_secs`]).
    pub(crate) fn long_timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs.max(1))
    }

    /// The temporary error of a server that gave no answer (or moved no byte) for `limit`.
    pub(crate) fn stalled(&self, what: &str, limit: Duration, collection: Option<&str>) -> Error {
        self.err(
            ErrorKind::Source,
            format!(
                "{what}: qdrant at {} gave no answer for {} s",
                self.base,
                limit.as_secs()
            ),
            collection,
        )
        .temporary()
        .with_hint(
            "the server may be overloaded or stopped; the stall timeout is stall_timeout_secs",
        )
    }

    /// A gRPC control call, limited by the stall timeout; its failure as a zdr error.
    pub(crate) async fn rpc<T>(
        &self,
        what: &str,
        collection: Option<&str>,
        call: impl std::future::Future<Output = std::result::Result<T, QdrantError>>,
    ) -> Result<T> {
        self.rpc_within(self.stall(), what, collection, call).await
    }

    /// A long server-side operation (snapshot creation): limited by
    /// [`QdrantConfig::timeout_secs`], and abandoned as soon as the server stops answering its
    /// health check within the stall timeout ([`Self::stopped_answering`]) — a stopped server
    /// is not waited on for an hour.
    pub(crate) async fn rpc_long<T>(
        &self,
        what: &str,
        collection: Option<&str>,
        call: impl std::future::Future<Output = std::result::Result<T, QdrantError>>,
    ) -> Result<T> {
        let call = self.rpc_within(self.long_timeout(), what, collection, call);
        tokio::select! {
            r = call => r,
            e = self.stopped_answering(what, collection) => Err(e),
        }
    }

    /// Resolves (to the temporary error to report) once the server fails to answer a health
    /// check within the stall timeout; checked every stall timeout. Any answer, even an error,
    /// counts as alive.
    pub(crate) async fn stopped_answering(&self, what: &str, collection: Option<&str>) -> Error {
        let stall = self.stall();
        loop {
            tokio::time::sleep(stall).await;
            if tokio::time::timeout(stall, self.grpc.health_check())
                .await
                .is_err()
            {
                return self.stalled(
                    &format!("{what} (its health check went unanswered too)"),
                    stall,
                    collection,
                );
            }
        }
    }

    /// A gRPC call limited by `limit`; its failure as a zdr error.
    pub(crate) async fn rpc_within<T>(
        &self,
        limit: Duration,
        what: &str,
        collection: Option<&str>,
        call: impl std::future::Future<Output = std::result::Result<T, QdrantError>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r.map_err(|e| self.grpc_err(what, collection, e)),
            Err(_) => Err(self.stalled(what, limit, collection)),
        }
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = &self.config.api_key {
            req = req.header("api-key", key.expose());
        }
        req
    }

    pub(crate) fn err(&self, kind: ErrorKind, message: String, collection: Option<&str>) -> Error {
        let mut e = Error::new(kind, message).with_context("component", &self.component);
        if let Some(c) = collection {
            e = e.with_context("collection", c);
        }
        e
    }

    /// A message from the server with the API key masked, should it ever echo it.
    pub(crate) fn redact(&self, msg: &str) -> String {
        let msg: String = msg.chars().take(300).collect();
        match &self.config.api_key {
            Some(k) if !k.expose().is_empty() => msg.replace(k.expose(), "***"),
            _ => msg,
        }
    }

    /// A gRPC failure as a zdr error: refused key → BadInput, missing → NotFound,
    /// unreachable or overloaded → temporary Source error.
    pub(crate) fn grpc_err(&self, what: &str, collection: Option<&str>, e: QdrantError) -> Error {
        let status = match e {
            QdrantError::ResponseError { status }
            | QdrantError::ResourceExhaustedError { status, .. } => status,
            QdrantError::Io(e) => {
                return self
                    .err(
                        ErrorKind::Source,
                        format!(
                            "{what}: the connection to qdrant gRPC at {} failed: {}",
                            self.grpc_url,
                            self.redact(&e.to_string())
                        ),
                        collection,
                    )
                    .temporary();
            }
            other => {
                return self.err(
                    ErrorKind::Source,
                    format!("{what}: {}", self.redact(&other.to_string())),
                    collection,
                );
            }
        };
        let detail = self.redact(status.message());
        use tonic::Code;
        // qdrant-client reports a failed connection as `Internal: Failed to connect to ...`.
        let code = match status.code() {
            Code::Internal if status.message().starts_with("Failed to connect") => {
                Code::Unavailable
            }
            code => code,
        };
        if is_transport_failure(code, status.message()) {
            // tonic reports a broken connection (reset, closed, refused mid-call) as `Unknown`
            // or `Cancelled`: not an answer of the server.
            return self
                .err(
                    ErrorKind::Source,
                    format!(
                        "{what}: the connection to qdrant gRPC at {} failed: {detail}",
                        self.grpc_url
                    ),
                    collection,
                )
                .temporary();
        }
        match code {
            Code::Unauthenticated | Code::PermissionDenied => self
                .err(
                    ErrorKind::BadInput,
                    format!("{what}: qdrant refused the API key (gRPC {code:?})"),
                    collection,
                )
                .with_hint("check the configured api_key"),
            Code::NotFound => self.err(
                ErrorKind::NotFound,
                format!("{what}: not found ({detail})"),
                collection,
            ),
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted => self
                .err(
                    ErrorKind::Source,
                    format!(
                        "{what}: qdrant gRPC at {} unavailable ({code:?}): {detail}",
                        self.grpc_url
                    ),
                    collection,
                )
                .temporary(),
            Code::Unimplemented => self.err(
                ErrorKind::Unsupported,
                format!("{what}: the server does not implement this gRPC call: {detail}"),
                collection,
            ),
            code => self.err(
                ErrorKind::Source,
                format!("{what}: qdrant answered gRPC {code:?}: {detail}"),
                collection,
            ),
        }
    }

    /// Send `req` and return the response when its status is a success.
    pub(crate) async fn send(
        &self,
        req: RequestBuilder,
        what: &str,
        collection: Option<&str>,
    ) -> Result<Response> {
        self.send_within(self.stall(), req, what, collection).await
    }

    /// [`Self::send`] with the answer's headers awaited at most `limit`.
    pub(crate) async fn send_within(
        &self,
        limit: Duration,
        req: RequestBuilder,
        what: &str,
        collection: Option<&str>,
    ) -> Result<Response> {
        let sent = tokio::time::timeout(limit, req.send())
            .await
            .map_err(|_| self.stalled(what, limit, collection))?;
        let resp = sent.map_err(|e| {
            // reqwest errors carry the URL, never the headers: the API key cannot leak.
            self.err(
                ErrorKind::Source,
                format!("{what}: request to qdrant at {} failed: {e}", self.base),
                collection,
            )
            .temporary()
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let detail = self.redact(
            &serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["status"]["error"].as_str().map(str::to_string))
                .unwrap_or(body),
        );
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => self
                .err(
                    ErrorKind::BadInput,
                    format!("{what}: qdrant refused the API key ({status})"),
                    collection,
                )
                .with_hint("check the configured api_key"),
            StatusCode::NOT_FOUND => self.err(
                ErrorKind::NotFound,
                format!("{what}: not found ({detail})"),
                collection,
            ),
            s if s.is_server_error() => self
                .err(
                    ErrorKind::Source,
                    format!("{what}: qdrant answered {status}: {detail}"),
                    collection,
                )
                .temporary(),
            _ => self.err(
                ErrorKind::Source,
                format!("{what}: qdrant answered {status}: {detail}"),
                collection,
            ),
        })
    }

    /// Send `req` and return the `result` of Qdrant's JSON envelope.
    pub(crate) async fn call(
        &self,
        req: RequestBuilder,
        what: &str,
        collection: Option<&str>,
    ) -> Result<Value> {
        // Index creation and restores with `wait=true` answer when the work is done.
        let limit = self.long_timeout();
        let resp = self.send_within(limit, req, what, collection).await?;
        let mut v: Value = resp.json().await.map_err(|e| {
            self.err(
                ErrorKind::Source,
                format!("{what}: unreadable answer: {e}"),
                collection,
            )
        })?;
        Ok(v.get_mut("result").map(Value::take).unwrap_or(v))
    }

    /// The server's version (gRPC health check).
    ///
    /// # Errors
    /// Source errors when the server is unreachable, BadInput when the key is refused.
    pub async fn server_version(&self) -> Result<String> {
        let reply = self
            .rpc("read the server version", None, self.grpc.health_check())
            .await?;
        if reply.version.is_empty() {
            return Err(self.err(
                ErrorKind::Source,
                "the health check has no version".into(),
                None,
            ));
        }
        Ok(reply.version)
    }

    /// The names of every collection on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_collections(&self) -> Result<Vec<String>> {
        let v = self
            .rpc("list collections", None, self.grpc.list_collections())
            .await?;
        let mut names: Vec<String> = v.collections.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    /// Every alias on the server.
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`].
    pub async fn list_aliases(&self) -> Result<Vec<AliasFact>> {
        let v = self
            .rpc("list aliases", None, self.grpc.list_aliases())
            .await?;
        Ok(v.aliases
            .into_iter()
            .map(|a| AliasFact {
                alias_name: a.alias_name,
                collection_name: a.collection_name,
            })
            .collect())
    }

    /// The snapshots held on the server: of `collection`, or the full-storage ones for
    /// `None`, as (name, size, checksum).
    ///
    /// # Errors
    /// As [`QdrantComponent::server_version`]; NotFound for an unknown collection.
    pub async fn list_snapshots(
        &self,
        collection: Option<&str>,
    ) -> Result<Vec<(String, u64, Option<String>)>> {
        let list = match collection {
            Some(c) => {
                self.rpc("list snapshots", collection, self.grpc.list_snapshots(c))
                    .await?
            }
            None => {
                self.rpc("list snapshots", None, self.grpc.list_full_snapshots())
                    .await?
            }
        };
        Ok(list
            .snapshot_descriptions
            .into_iter()
            .map(|d| (d.name, u64::try_from(d.size).unwrap_or(0), d.checksum))
            .collect())
    }

    /// Collection info and exact count: `None` when the collection does not exist.
    pub(crate) async fn collection_info(&self, c: &str) -> Result<Option<Info>> {
        let info = match self
            .rpc(
                "read collection info",
                Some(c),
                self.grpc.collection_info(c),
            )
            .await
        {
            Ok(r) => r.result,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(info) = info else {
            return Err(self.err(
                ErrorKind::Source,
                "collection info answer has no result".into(),
                Some(c),
            ));
        };
        let params = info.config.as_ref().and_then(|c| c.params.as_ref());
        let count = self
            .rpc(
                "count points",
                Some(c),
                self.grpc.count(pb::CountPoints {
                    collection_name: c.to_string(),
                    exact: Some(true),
                    ..Default::default()
                }),
            )
            .await;
        // Dropped since the info was read: it does not exist.
        let count = match count {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        let rest_schema = match self.rest_payload_schema(c).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            other => other?,
        };
        Ok(Some(Info {
            points_count: count.result.map_or(0, |r| r.count),
            vectors: convert::vectors_config_to_json(
                params.and_then(|p| p.vectors_config.as_ref()),
            ),
            sparse_vectors: convert::sparse_config_to_json(
                params.and_then(|p| p.sparse_vectors_config.as_ref()),
            ),
            payload_schema: match rest_schema {
                Some(schema) => schema,
                None => convert::payload_schema_to_json(&info.payload_schema),
            },
        }))
    }

    /// The payload indexes of `c` as REST shows them, with their parameters (tokenizer,
    /// `is_tenant`, ...: the shape index creation takes back); `None` when REST does not
    /// list them.
    async fn rest_payload_schema(&self, c: &str) -> Result<Option<Value>> {
        let resp = self
            .send(
                self.request(Method::GET, &format!("/collections/{c}")),
                "read payload indexes",
                Some(c),
            )
            .await?;
        let v: Value = tokio::time::timeout(self.stall(), resp.json())
            .await
            .map_err(|_| self.stalled("read payload indexes", self.stall(), Some(c)))?
            .map_err(|e| {
                self.err(
                    ErrorKind::Source,
                    format!("read payload indexes: unreadable answer: {e}"),
                    Some(c),
                )
                .temporary()
            })?;
        let Some(schema) = v["result"]["payload_schema"].as_object() else {
            return Ok(None);
        };
        Ok(Some(Value::Object(
            schema
                .iter()
                .map(|(field, info)| {
                    let mut kept = json!({ "data_type": info["data_type"] });
                    if info["params"].is_object() {
                        kept["params"] = info["params"].clone();
                    }
                    if let Some(points) = info["points"].as_u64() {
                        kept["points"] = json!(points);
                    }
                    (field.clone(), kept)
                })
                .collect(),
        )))
    }

    pub(crate) async fn existing_info(&self, c: &str) -> Result<Info> {
        self.collection_info(c).await?.ok_or_else(|| {
            self.err(
                ErrorKind::NotFound,
                format!("collection {c} does not exist"),
                Some(c),
            )
        })
    }

    /// One page of points (gRPC scroll): the points as REST JSON and the next offset.
    pub(crate) async fn scroll(
        &self,
        c: &str,
        limit: usize,
        offset: Option<pb::PointId>,
        with_vectors: bool,
    ) -> Result<(Vec<Value>, Option<pb::PointId>)> {
        let page = self
            .rpc(
                "scroll points",
                Some(c),
                self.grpc.scroll(pb::ScrollPoints {
                    collection_name: c.to_string(),
                    offset,
                    limit: u32::try_from(limit).ok(),
                    with_payload: enabled_payload(true),
                    with_vectors: enabled_vectors(with_vectors),
                    ..Default::default()
                }),
            )
            .await?;
        let points = page
            .result
            .into_iter()
            .map(|p| {
                let mut v = json!({
                    "id": convert::id_to_json(p.id.as_ref()),
                    "payload": convert::payload_to_json(&p.payload),
                });
                if with_vectors {
                    v["vector"] = convert::vectors_to_json(p.vectors);
                }
                v
            })
            .collect();
        Ok((points, page.next_page_offset))
    }

    pub(crate) async fn sample(&self, c: &str) -> Result<Vec<PointSample>> {
        let (points, _) = self.scroll(c, SAMPLE_POINTS, None, false).await?;
        Ok(points
            .iter()
            .map(|p| PointSample {
                id: p["id"].clone(),
                payload_sha256: payload_hash(&p["payload"]),
            })
            .collect())
    }
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn artifact_names_are_reversible_and_leave_plain_names_alone() {
        for name in [
            "docs",
            "team space",
            "a/b",
            "дом",
            "_qdeadbeef",
            ".hidden",
            "x y.z",
        ] {
            let a = artifact_name(name);
            assert!(safe_name(&a), "{name:?} -> {a:?}");
            assert_eq!(collection_of_artifact(&a).as_deref(), Some(name), "{a}");
        }
        assert_eq!(artifact_name("docs_v2.1"), "docs_v2.1");
        assert_eq!(artifact_name("team space"), "_q7465616d207370616365");
        assert_ne!(
            artifact_name("_q00"),
            "_q00",
            "an encoded-looking name is encoded"
        );
        assert_eq!(collection_of_artifact("_qzz"), None);
    }
}
