//! The Vault client: vaultrs for the KV and `sys` calls, plain HTTP where vaultrs has no
//! endpoint or cannot read the answer; and the mapping of Vault's errors.

use std::collections::HashMap;
use std::fmt;

use serde_json::{Value, json};
use vaultrs::client::{VaultClient as VaultrsClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zdr_core::{Error, ErrorKind, Result};

use crate::VaultClientConfig;
use crate::format::KvSettings;

/// A client for Vault: [`vaultrs`] for the KV and `sys` calls, plain HTTP for the raft
/// snapshot streams (see the crate docs).
pub struct VaultClient {
    pub(crate) cfg: VaultClientConfig,
    pub(crate) http: reqwest::Client,
    pub(crate) vrs: VaultrsClient,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the vaultrs client: its settings' Debug shows the token.
        f.debug_struct("VaultClient")
            .field("address", &self.cfg.address)
            .field("namespace", &self.cfg.namespace)
            .finish_non_exhaustive()
    }
}

pub(crate) fn vault_error(status: reqwest::StatusCode, what: &str, body: &[u8]) -> Error {
    // Vault's error bodies are `{"errors":["..."]}`: messages, never secret values.
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errors").cloned())
        .and_then(|e| {
            e.as_array().map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default();
    let msg = format!("vault: {what}: HTTP {status}{}", {
        if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        }
    });
    match status.as_u16() {
        401 | 403 => {
            Error::bad_input(msg).with_hint("permission denied: check the token and its policy")
        }
        404 => Error::not_found(msg),
        400 => Error::bad_input(msg),
        429 | 500..=599 => Error::new(ErrorKind::Source, msg).temporary(),
        _ => Error::new(ErrorKind::Source, msg),
    }
}

/// A vaultrs error as a zdr error. Only status codes and Vault's error messages are kept:
/// response bodies (which may hold secret values) and JSON parse details never are.
pub(crate) fn vaultrs_error(e: ClientError, what: &str, address: &str) -> Error {
    use rustify::errors::ClientError as Rest;
    let (code, errors) = match e {
        ClientError::APIError { code, errors } => (code, errors),
        ClientError::RestClientError {
            source: Rest::ServerResponseError { code, .. },
        } => (code, Vec::new()),
        ClientError::RestClientError {
            source: Rest::RequestError { source, .. },
        } => {
            return Error::new(
                ErrorKind::Source,
                format!("vault: {what}: cannot reach {address}: {source}"),
            )
            .temporary();
        }
        ClientError::RestClientError {
            source: Rest::ResponseError { .. },
        } => {
            return Error::new(
                ErrorKind::Source,
                format!("vault: {what}: the response broke off"),
            )
            .temporary();
        }
        // Static texts only (`Error parsing HTTP response`, ...): no content, no values.
        ClientError::RestClientError { source } => {
            return Error::new(
                ErrorKind::Source,
                format!("vault: {what}: unexpected response ({source})"),
            );
        }
        other => {
            return Error::new(
                ErrorKind::Source,
                format!("vault: {what}: unexpected response ({other})"),
            );
        }
    };
    let body = serde_json::to_vec(&json!({ "errors": errors })).unwrap_or_default();
    let status =
        reqwest::StatusCode::from_u16(code).unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    vault_error(status, what, &body)
}

pub(crate) fn is_missing(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::APIError { code: 404, .. }
            | ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError { code: 404, .. }
            }
    )
}

/// Percent-encode a Vault path, keeping `/` (secret names may hold spaces, `?`, `#`, `%`).
pub(crate) fn enc(path: &str) -> String {
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

impl VaultClient {
    /// A client for `cfg`.
    ///
    /// # Errors
    /// A bad address or namespace.
    pub fn new(cfg: VaultClientConfig) -> Result<Self> {
        if !(cfg.address.starts_with("http://") || cfg.address.starts_with("https://"))
            || reqwest::Url::parse(&cfg.address).is_err()
        {
            return Err(Error::bad_input(format!(
                "vault address {:?} must be an http:// or https:// URL",
                cfg.address
            )));
        }
        if let Some(ns) = &cfg.namespace
            && (ns.trim_matches('/').is_empty() || !ns.bytes().all(|b| (0x21..0x7f).contains(&b)))
        {
            return Err(Error::bad_input(format!(
                "vault namespace {ns:?} must be a non-empty path of printable ASCII"
            )));
        }
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::unexpected(format!("vault: http client: {e}")))?;
        let settings = VaultClientSettingsBuilder::default()
            .address(&cfg.address)
            .token(cfg.token.expose())
            .namespace(cfg.namespace.clone())
            .build()
            // The builder's messages name fields, never the token.
            .map_err(|e| Error::bad_input(format!("vault: client settings: {e}")))?;
        let vrs = VaultrsClient::new(settings)
            .map_err(|e| Error::unexpected(format!("vault: client: {e}")))?;
        Ok(Self { cfg, http, vrs })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.cfg.address.trim_end_matches('/'), path)
    }

    /// A plain HTTP request to `/v1/<path>` with the token and namespace headers.
    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-Vault-Token", self.cfg.token.expose());
        if let Some(ns) = &self.cfg.namespace {
            req = req.header("X-Vault-Namespace", ns.trim_matches('/'));
        }
        req
    }

    pub(crate) fn vrs_err(&self, what: &str, e: ClientError) -> Error {
        vaultrs_error(e, what, &self.cfg.address)
    }

    /// Call `method` on `/v1/<path>` over plain HTTP; `Ok(None)` for 404 when `missing_ok`.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        missing_ok: bool,
    ) -> Result<Option<Value>> {
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::unexpected(format!("vault: method {method}: {e}")))?;
        let mut req = self.request(m, path);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).unwrap_or_default());
        }
        let what = format!("{method} /v1/{path}");
        let resp = req.send().await.map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("vault: {what}: cannot reach {}: {e}", self.cfg.address),
            )
            .temporary()
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            Error::new(ErrorKind::Source, format!("vault: {what}: {e}")).temporary()
        })?;
        if status.as_u16() == 404 && missing_ok {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(vault_error(status, &what, &bytes));
        }
        if bytes.is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("vault: {what}: response is not JSON ({e})"),
            )
        })
    }

    /// The KV version (1 or 2) of `mount`, from `sys/mounts`.
    ///
    /// Plain HTTP, not vaultrs: vaultrs parses every mount into a struct that requires
    /// `accessor`, `config`, `uuid`, ... and the `data` envelope, which rusty_vault (and other
    /// servers of Vault's API) do not send; only `options.version` matters here.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] for an unknown mount; permission errors as `BadInput`.
    pub async fn kv_version(&self, mount: &str) -> Result<u8> {
        let key = format!("{}/", mount.trim_matches('/'));
        let mounts = match self.call("GET", "sys/mounts", None, false).await {
            Ok(v) => v.unwrap_or_default(),
            // `sys/mounts` needs a privileged policy; Vault answers any token allowed on the
            // mount at `sys/internal/ui/mounts/<mount>` (no vaultrs endpoint either). If that
            // fails too, the permission error stands (a bad token, or a mount the token may
            // not see).
            Err(e) if e.kind() == ErrorKind::BadInput => {
                let ui = self
                    .call(
                        "GET",
                        &format!("sys/internal/ui/mounts/{}", enc(mount.trim_matches('/'))),
                        None,
                        true,
                    )
                    .await
                    .map_err(|_| e.duplicate())?
                    .ok_or_else(|| e.duplicate())?;
                let data = ui.get("data").cloned().unwrap_or_default();
                json!({ "data": { key.clone(): data } })
            }
            Err(e) => return Err(e),
        };
        // Vault returns the table both at the top level and under `data`.
        let entry = mounts
            .get("data")
            .and_then(|d| d.get(&key))
            .or_else(|| mounts.get(&key))
            .ok_or_else(|| Error::not_found(format!("vault: no mount {key} on the server")))?;
        let version = entry
            .get("options")
            .and_then(|o| o.get("version"))
            .and_then(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .or_else(|| v.as_u64().map(|n| n.to_string()))
            });
        Ok(if version.as_deref() == Some("2") {
            2
        } else {
            1
        })
    }

    /// The keys under `prefix` of `mount` (folders end with `/`); empty if there are none.
    pub(crate) async fn list(&self, mount: &str, kv: u8, prefix: &str) -> Result<Vec<String>> {
        let what = format!("LIST {mount}/{prefix}");
        let keys = if kv == 2 {
            vaultrs::kv2::list(&self.vrs, mount, prefix).await
        } else {
            vaultrs::kv1::list(&self.vrs, mount, prefix)
                .await
                .map(|r| r.data.keys)
        };
        match keys {
            Ok(k) => Ok(k),
            Err(e) if is_missing(&e) => Ok(Vec::new()),
            Err(e) => Err(self.vrs_err(&what, e)),
        }
    }

    /// Every secret path under `mount` (for KV v2, under `metadata/`), recursively, sorted.
    pub(crate) async fn walk(&self, mount: &str, kv: u8) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut todo = vec![String::new()];
        while let Some(prefix) = todo.pop() {
            for k in self.list(mount, kv, prefix.trim_end_matches('/')).await? {
                let full = format!("{prefix}{k}");
                if k.ends_with('/') {
                    todo.push(full);
                } else {
                    out.push(full);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Read the data of a KV secret (`version` for KV v2; `None` = current).
    pub(crate) async fn read(
        &self,
        mount: &str,
        kv: u8,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<Value>> {
        let what = format!("GET {mount}/{path}");
        let got = match (kv, version) {
            (2, Some(n)) => vaultrs::kv2::read_version::<Value>(&self.vrs, mount, path, n).await,
            (2, None) => vaultrs::kv2::read::<Value>(&self.vrs, mount, path).await,
            _ => {
                // KV v1 read: plain HTTP, not vaultrs: vaultrs requires `request_id` in the
                // answer, which rusty_vault does not send.
                let Some(v) = self
                    .call("GET", &format!("{}/{}", enc(mount), enc(path)), None, true)
                    .await?
                else {
                    return Ok(None);
                };
                return Ok(Some(v.get("data").cloned().unwrap_or(Value::Null)));
            }
        };
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.vrs_err(&what, e)),
        }
    }

    /// Write `data` (a JSON object) at `path`: KV v2 returns the new version.
    pub(crate) async fn write(
        &self,
        mount: &str,
        kv: u8,
        path: &str,
        data: &Value,
    ) -> Result<Option<u64>> {
        let what = format!("write {mount}/{path}");
        if kv == 2 {
            return vaultrs::kv2::set(&self.vrs, mount, path, data)
                .await
                .map(|m| Some(m.version))
                .map_err(|e| self.vrs_err(&what, e));
        }
        let fields: HashMap<&str, &Value> = data
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
            .unwrap_or_default();
        vaultrs::kv1::set(&self.vrs, mount, path, &fields)
            .await
            .map(|()| None)
            .map_err(|e| self.vrs_err(&what, e))
    }

    /// The versions and settings of a KV v2 secret: (version number, its metadata as
    /// JSON) in ascending order, and the settings.
    pub(crate) async fn metadata(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<(Vec<(u64, Value)>, KvSettings)> {
        let m = vaultrs::kv2::read_metadata(&self.vrs, mount, path)
            .await
            .map_err(|e| self.vrs_err(&format!("GET {mount}/metadata/{path}"), e))?;
        let mut versions: Vec<(u64, Value)> = m
            .versions
            .into_iter()
            .filter_map(|(k, v)| {
                let n = k.parse().ok()?;
                Some((
                    n,
                    json!({"created_time": v.created_time, "deletion_time": v.deletion_time,
                           "destroyed": v.destroyed}),
                ))
            })
            .collect();
        versions.sort_by_key(|(n, _)| *n);
        let settings = KvSettings {
            max_versions: m.max_versions,
            cas_required: m.cas_required,
            delete_version_after: m.delete_version_after,
            custom_metadata: m.custom_metadata.unwrap_or_default().into_iter().collect(),
        };
        Ok((versions, settings))
    }

    /// Write the settings of a KV v2 secret.
    pub(crate) async fn write_settings(
        &self,
        mount: &str,
        path: &str,
        s: &KvSettings,
    ) -> Result<()> {
        let mut req = vaultrs::api::kv2::requests::SetSecretMetadataRequest::builder();
        req.max_versions(s.max_versions)
            .cas_required(s.cas_required)
            .custom_metadata(
                s.custom_metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<HashMap<String, String>>(),
            );
        if !s.delete_version_after.is_empty() {
            req.delete_version_after(s.delete_version_after.clone());
        }
        vaultrs::kv2::set_metadata(&self.vrs, mount, path, Some(&mut req))
            .await
            .map_err(|e| self.vrs_err(&format!("POST {mount}/metadata/{path}"), e))
    }

    /// Soft-delete (`destroy == false`) or destroy one version of a KV v2 secret.
    pub(crate) async fn remove_version(
        &self,
        mount: &str,
        path: &str,
        v: u64,
        destroy: bool,
    ) -> Result<()> {
        let r = if destroy {
            vaultrs::kv2::destroy_versions(&self.vrs, mount, path, vec![v]).await
        } else {
            vaultrs::kv2::delete_versions(&self.vrs, mount, path, vec![v]).await
        };
        r.map_err(|e| {
            let op = if destroy { "destroy" } else { "delete" };
            self.vrs_err(&format!("{op} {mount}/{path} version {v}"), e)
        })
    }
}
