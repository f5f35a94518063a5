//! # zdr-vault
//!
//! The zdr adapter for HashiCorp Vault (and servers speaking its HTTP API).
//!
//! - **Logical export** of KV v1 and KV v2 mounts ([`VaultComponent`] as a
//!   [`BackupSource`]): every path is found with `LIST` (recursively); KV v2 mounts
//!   contribute every version with its metadata, deleted and destroyed versions recorded as
//!   such (without data). One artifact per mount, `kv-<mount>.jsonl` (format below).
//! - **Import** ([`VaultComponent`] as a [`Restorer`]) into the same or another Vault: KV v2
//!   versions are replayed in order; after the import every written path and version is read
//!   back and compared by SHA-256 with the digest stored in the artifact, and a mismatch fails
//!   the restore ([`ErrorKind::Integrity`]).
//! - **Credential references** ([`resolve_reference`]): `vault:secret/zentoria/backup/postgresql#password`.
//!
//! ## Which calls go where
//!
//! The KV calls go through [`vaultrs`]: KV v1 `LIST` and write, KV v2 `metadata` (`LIST`,
//! read, and write of the settings), `data` (read of a version, write), `delete` and
//! `destroy`. Plain HTTP
//! (`reqwest`) is kept where vaultrs has no endpoint — the raft snapshot save and restore
//! (streamed both ways; vaultrs would hold the snapshot in memory) and
//! `sys/internal/ui/mounts/<mount>` — and where vaultrs cannot read what rusty_vault answers:
//! `sys/mounts` for a mount's KV version (vaultrs requires `accessor`, `config`, `uuid`, ...
//! on every mount) and the KV v1 read (vaultrs requires `request_id`). Both send
//! `X-Vault-Token` and, with [`VaultClientConfig::namespace`], `X-Vault-Namespace` on every
//! call.
//!
//! ## Secrets stay secret
//!
//! A backup is refused unless the caller says the pipeline encrypts
//! ([`VaultConfig::encrypted`], from `PipelineOptions.keys.encrypts()`) or explicitly allows
//! plaintext ([`VaultConfig::allow_plaintext`]). The token is a [`Secret`], hidden from
//! `Debug`; errors name paths and HTTP statuses, never secret values. The manifest facts hold
//! only mount names, KV versions and counts: the SHA-256 digests of the values (brute-forceable
//! for short secrets) live only inside the artifact, which is encrypted.
//!
//! ## Artifact format (`kv-<mount>.jsonl`)
//!
//! JSON lines. The first line is a header
//! `{"format":"zdr-vault-kv/1","mount":"secret","kv":2}`; every further line is one record
//! `{"path":"a/b","version":3,"state":"live","data":{...},"metadata":{...},"sha256":"..."}`:
//! `version` is absent for KV v1; `state` is `live`, `deleted` or `destroyed` (the last two
//! carry no `data` and no `sha256`); `metadata` is the version's metadata as Vault returned it
//! (KV v2 only); `sha256` is the hex SHA-256 of `data` serialized as JSON with sorted keys.
//! Records of one path are consecutive and in ascending version order. On KV v2, the first
//! record of a path also carries `settings`, the path's metadata settings
//! (`{"max_versions":0,"cas_required":false,"delete_version_after":"0s","custom_metadata":{}}`),
//! which the import writes back after the versions and reads back too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use vaultrs::client::{VaultClient as VaultrsClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error,
    ErrorKind, Manifest, Progress, RestoreOutcome, RestoreTarget, Restorer, Result, SourceFacts,
    Verifier, VerifyReport,
};

/// The artifact format tag on the first line of every export.
pub const FORMAT: &str = "zdr-vault-kv/1";

pub use settings::VaultSettings;
pub use zdr_core::Secret;
mod settings;

/// How to reach Vault.
#[derive(Debug, Clone)]
pub struct VaultClientConfig {
    /// The server's address, such as `http://127.0.0.1:8200`.
    pub address: String,
    /// The token sent as `X-Vault-Token`.
    pub token: Secret,
    /// A Vault Enterprise namespace (such as `team-a` or `team-a/app`), sent as
    /// `X-Vault-Namespace` on every call; `None` for the root namespace.
    pub namespace: Option<String>,
}

/// What to back up and under which conditions.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// The server and the token.
    pub client: VaultClientConfig,
    /// The KV mounts to export, such as `["secret"]`.
    pub mounts: Vec<String>,
    /// The pipeline encrypts the artifacts (`PipelineOptions.keys.encrypts()`).
    pub encrypted: bool,
    /// Export even though the pipeline does not encrypt (`--allow-plaintext`).
    pub allow_plaintext: bool,
    /// Back up a raft snapshot (`sys/storage/raft/snapshot`) instead of a logical export.
    pub raft_snapshot: bool,
    /// On restore of a raft snapshot, use `snapshot-force` (a snapshot from another cluster).
    pub force: bool,
}

/// A client for Vault: [`vaultrs`] for the KV and `sys` calls, plain HTTP for the raft
/// snapshot streams (see the crate docs).
pub struct VaultClient {
    cfg: VaultClientConfig,
    http: reqwest::Client,
    vrs: VaultrsClient,
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

/// The metadata settings of a KV v2 secret, exported and restored with its versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvSettings {
    /// Versions kept (0: the mount's default).
    pub max_versions: u64,
    /// Writes must carry `cas`.
    pub cas_required: bool,
    /// Versions are deleted this long after being written (`0s`: never).
    pub delete_version_after: String,
    /// Free-form key/value metadata (not secret by Vault's contract, but kept in the
    /// artifact only).
    #[serde(default)]
    pub custom_metadata: BTreeMap<String, String>,
}

fn vault_error(status: reqwest::StatusCode, what: &str, body: &[u8]) -> Error {
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
        401 | 403 => Error::bad_input(msg).with_hint(
            "permission denied: check the token (ZDR_COMPONENTS__VAULT__TOKEN) and its policy",
        ),
        404 => Error::not_found(msg),
        400 => Error::bad_input(msg),
        429 | 500..=599 => Error::new(ErrorKind::Source, msg).temporary(),
        _ => Error::new(ErrorKind::Source, msg),
    }
}

/// A vaultrs error as a zdr error. Only status codes and Vault's error messages are kept:
/// response bodies (which may hold secret values) and JSON parse details never are.
fn vaultrs_error(e: ClientError, what: &str, address: &str) -> Error {
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

fn is_missing(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::APIError { code: 404, .. }
            | ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError { code: 404, .. }
            }
    )
}

/// Percent-encode a Vault path, keeping `/` (secret names may hold spaces, `?`, `#`, `%`).
fn enc(path: &str) -> String {
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

/// The digest stored for a secret's data: SHA-256 of its JSON with sorted keys.
#[must_use]
pub fn data_digest(data: &Value) -> String {
    fn canon(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, canon(v))).collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), v);
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(canon).collect()),
            other => other.clone(),
        }
    }
    // serde_json::Map may keep insertion order (preserve_order): write the keys sorted.
    fn write(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend(serde_json::to_vec(k).unwrap_or_default());
                    out.push(b':');
                    if let Some(v) = m.get(*k) {
                        write(v, out);
                    }
                }
                out.push(b'}');
            }
            Value::Array(a) => {
                out.push(b'[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(v, out);
                }
                out.push(b']');
            }
            other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
        }
    }
    let mut buf = Vec::new();
    write(&canon(data), &mut buf);
    hex::encode(Sha256::digest(&buf))
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

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{}", self.cfg.address.trim_end_matches('/'), path)
    }

    /// A plain HTTP request to `/v1/<path>` with the token and namespace headers.
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, self.url(path))
            .header("X-Vault-Token", self.cfg.token.expose());
        if let Some(ns) = &self.cfg.namespace {
            req = req.header("X-Vault-Namespace", ns.trim_matches('/'));
        }
        req
    }

    fn vrs_err(&self, what: &str, e: ClientError) -> Error {
        vaultrs_error(e, what, &self.cfg.address)
    }

    /// Call `method` on `/v1/<path>` over plain HTTP; `Ok(None)` for 404 when `missing_ok`.
    async fn call(
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
    async fn list(&self, mount: &str, kv: u8, prefix: &str) -> Result<Vec<String>> {
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
    async fn walk(&self, mount: &str, kv: u8) -> Result<Vec<String>> {
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
    async fn read(
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
    async fn write(&self, mount: &str, kv: u8, path: &str, data: &Value) -> Result<Option<u64>> {
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
    async fn metadata(&self, mount: &str, path: &str) -> Result<(Vec<(u64, Value)>, KvSettings)> {
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
    async fn write_settings(&self, mount: &str, path: &str, s: &KvSettings) -> Result<()> {
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
    async fn remove_version(&self, mount: &str, path: &str, v: u64, destroy: bool) -> Result<()> {
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

/// One record of the artifact (see the crate docs).
#[derive(Clone, Serialize, Deserialize)]
pub struct Record {
    /// The secret's path in its mount.
    pub path: String,
    /// The KV v2 version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// `live`, `deleted` or `destroyed`.
    pub state: String,
    /// The secret data (live records only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The version's metadata (KV v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// SHA-256 of `data` ([`data_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The path's KV v2 metadata settings (on the first record of each KV v2 path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<KvSettings>,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// Resolve a credential reference `vault:<mount>/<path>#<field>` (KV v1 or v2, detected
/// through `sys/mounts`) to its value.
///
/// # Errors
/// A malformed reference, a missing secret or field, or Vault's errors.
pub async fn resolve_reference(client: &VaultClientConfig, reference: &str) -> Result<Secret> {
    let bad = || {
        Error::bad_input(format!(
            "{reference:?} is not a vault reference (vault:<mount>/<path>#<field>)"
        ))
    };
    let rest = reference.strip_prefix("vault:").ok_or_else(bad)?;
    let (full, field) = rest.split_once('#').ok_or_else(bad)?;
    let (mount, path) = full.trim_matches('/').split_once('/').ok_or_else(bad)?;
    if field.is_empty() || path.is_empty() {
        return Err(bad());
    }
    let c = VaultClient::new(client.clone())?;
    let mount = mount.trim_matches('/');
    let kv = c.kv_version(mount).await?;
    let data = c
        .read(mount, kv, path, None)
        .await?
        .ok_or_else(|| Error::not_found(format!("vault: no secret at {mount}/{path}")))?;
    let value = data.get(field).ok_or_else(|| {
        Error::not_found(format!(
            "vault: secret {mount}/{path} has no field {field:?}"
        ))
    })?;
    Ok(Secret::new(match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }))
}

/// The Vault component: a [`BackupSource`] (logical KV export) and a [`Restorer`] (import
/// with read-back verification).
#[derive(Debug, Clone)]
pub struct VaultComponent {
    component: Component,
    config: VaultConfig,
    mount_map: BTreeMap<String, String>,
}

impl VaultComponent {
    /// A component named `component` with `config`.
    #[must_use]
    pub fn new(component: Component, config: VaultConfig) -> Self {
        Self {
            component,
            config,
            mount_map: BTreeMap::new(),
        }
    }

    /// Import (and verify) each backed-up mount `from` into the mount `to` of the target
    /// (mount names without slashes); mounts not in the map keep their name. A
    /// [`RestoreTarget::name`] still wins for a one-mount backup.
    #[must_use]
    pub fn with_mount_map<I, A, B>(mut self, map: I) -> Self
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        self.mount_map = map
            .into_iter()
            .map(|(a, b)| {
                (
                    a.into().trim_matches('/').to_owned(),
                    b.into().trim_matches('/').to_owned(),
                )
            })
            .collect();
        self
    }

    /// The target mount of the backed-up mount `src`.
    fn target_mount(&self, src: &str, target: &RestoreTarget) -> String {
        match &target.name {
            Some(n) => n.trim_matches('/').to_owned(),
            None => self
                .mount_map
                .get(src.trim_matches('/'))
                .cloned()
                .unwrap_or_else(|| src.trim_matches('/').to_owned()),
        }
    }

    fn client(&self) -> Result<VaultClient> {
        VaultClient::new(self.config.client.clone())
    }

    /// Stream `GET sys/storage/raft/snapshot` into the artifact `raft.snap`, chunk by chunk.
    async fn save_snapshot(
        &self,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let c = self.client()?;
        let what = "GET /v1/sys/storage/raft/snapshot";
        let mut resp = c
            .request(reqwest::Method::GET, "sys/storage/raft/snapshot")
            .send()
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Source,
                    format!("vault: {what}: cannot reach {}: {e}", c.cfg.address),
                )
                .temporary()
            })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(vault_error(status, what, &body));
        }
        let mut w = sink.create("raft", "snap").await?;
        let expected_len = resp.content_length();
        progress.start("raft", expected_len);
        let mut total = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            Error::new(
                ErrorKind::Source,
                format!("vault: {what}: transfer broken after {total} bytes: {e}"),
            )
            .temporary()
        })? {
            w.write_all(&chunk)
                .await
                .map_err(|e| io_err(e, "vault raft snapshot"))?;
            total += chunk.len() as u64;
            progress.advance("raft", chunk.len() as u64);
        }
        if let Some(expected) = expected_len
            && expected != total
        {
            return Err(Error::new(
                ErrorKind::Source,
                format!("vault: {what}: got {total} of {expected} bytes"),
            ));
        }
        if total == 0 {
            return Err(Error::new(
                ErrorKind::Source,
                format!("vault: {what}: empty snapshot"),
            ));
        }
        w.finish().await?;
        progress.finish("raft");
        Ok(SourceFacts {
            kind: BackupKind::Snapshot,
            facts: json!({ "raft_snapshot": true, "bytes": total }),
        })
    }

    /// Stream the `raft` artifact into `POST sys/storage/raft/snapshot[-force]`.
    async fn restore_snapshot(
        &self,
        c: &VaultClient,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let art = backup.artifact("raft").ok_or_else(|| {
            Error::integrity(format!("backup {} has no raft artifact", backup.id))
        })?;
        let endpoint = if self.config.force {
            "sys/storage/raft/snapshot-force"
        } else {
            "sys/storage/raft/snapshot"
        };
        let what = format!("POST /v1/{endpoint}");
        let reader = from.open(art).await?;
        progress.start("raft", Some(art.raw_size));
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
        let resp = c
            .request(reqwest::Method::POST, endpoint)
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Source, format!("vault: {what}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            return Err(vault_error(status, &what, &body));
        }
        progress.finish("raft");
        Ok(RestoreOutcome {
            target: c.cfg.address.clone(),
            items: 1,
            bytes: art.raw_size,
            notes: vec![format!("raft snapshot restored through {endpoint}")],
        })
    }
}

fn io_err(e: std::io::Error, what: &str) -> Error {
    Error::from_io(e, what.to_owned())
}

#[async_trait]
impl BackupSource for VaultComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        if self.config.raft_snapshot {
            return self.save_snapshot(sink, progress).await;
        }
        if !self.config.encrypted && !self.config.allow_plaintext {
            return Err(Error::bad_input(
                "refusing to export Vault secrets into an unencrypted backup",
            )
            .with_hint("configure [encryption] or pass --allow-plaintext"));
        }
        if self.config.mounts.is_empty() {
            return Err(Error::bad_input(
                "vault: no mounts configured (mounts = [\"secret\"])",
            ));
        }
        let c = self.client()?;
        // Check every mount (and the token) before writing anything.
        let mut kinds = Vec::new();
        for m in &self.config.mounts {
            let m = m.trim_matches('/').to_owned();
            let kv = c.kv_version(&m).await?;
            kinds.push((m, kv));
        }
        let mut facts = Vec::new();
        for (mount, kv) in kinds {
            let task = format!("kv-{mount}");
            progress.start(&task, None);
            let paths = c.walk(&mount, kv).await?;
            let mut w = sink.create(&format!("kv-{mount}"), "jsonl").await?;
            let header = json!({"format": FORMAT, "mount": mount, "kv": kv});
            let mut versions = 0u64;
            let mut deleted = 0u64;
            let mut line = serde_json::to_vec(&header).unwrap_or_default();
            line.push(b'\n');
            w.write_all(&line)
                .await
                .map_err(|e| io_err(e, "vault artifact"))?;
            for p in &paths {
                let mut recs = Vec::new();
                if kv == 2 {
                    let (vs, settings) = c.metadata(&mount, p).await?;
                    let mut settings = Some(settings);
                    for (n, vm) in vs {
                        let destroyed = vm.get("destroyed").and_then(Value::as_bool) == Some(true);
                        let del = vm
                            .get("deletion_time")
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty());
                        let (state, data) = if destroyed {
                            ("destroyed", None)
                        } else if del {
                            ("deleted", None)
                        } else {
                            ("live", c.read(&mount, 2, p, Some(n)).await?)
                        };
                        if state != "live" {
                            deleted += 1;
                        }
                        recs.push(Record {
                            path: p.clone(),
                            version: Some(n),
                            state: state.to_owned(),
                            sha256: data.as_ref().map(data_digest),
                            data,
                            metadata: Some(vm),
                            settings: settings.take(),
                        });
                    }
                } else if let Some(data) = c.read(&mount, 1, p, None).await? {
                    recs.push(Record {
                        path: p.clone(),
                        version: None,
                        state: "live".to_owned(),
                        sha256: Some(data_digest(&data)),
                        data: Some(data),
                        metadata: None,
                        settings: None,
                    });
                }
                for r in recs {
                    versions += 1;
                    let mut line = serde_json::to_vec(&r).unwrap_or_default();
                    line.push(b'\n');
                    w.write_all(&line)
                        .await
                        .map_err(|e| io_err(e, "vault artifact"))?;
                    progress.advance(&task, line.len() as u64);
                }
            }
            w.finish().await?;
            progress.finish(&task);
            facts.push(json!({
                "mount": mount, "kv": kv, "paths": paths.len(),
                "versions": versions, "deleted_or_destroyed": deleted,
            }));
        }
        Ok(SourceFacts {
            kind: BackupKind::Export,
            facts: json!({ "format": FORMAT, "mounts": facts }),
        })
    }
}

#[async_trait]
impl Restorer for VaultComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Import every `kv-<mount>` artifact into the mount of the same name (or
    /// `target.name`, when the backup holds one mount). Existing secrets get new versions (KV
    /// v2) or are overwritten (KV v1). Everything written is read back and compared.
    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let c = self.client()?;
        if backup.kind == BackupKind::Snapshot {
            return self.restore_snapshot(&c, backup, from, progress).await;
        }
        let arts: Vec<_> = backup
            .artifacts
            .iter()
            .filter(|a| a.name.starts_with("kv-"))
            .collect();
        if target.name.is_some() && arts.len() != 1 {
            return Err(Error::bad_input(
                "vault: a target mount name needs a backup of exactly one mount",
            ));
        }
        let mut out = RestoreOutcome::default();
        let mut targets = Vec::new();
        for a in arts {
            let mut lines = BufReader::new(from.open(a).await?).lines();
            let header: Value = match lines
                .next_line()
                .await
                .map_err(|e| io_err(e, "vault artifact"))?
            {
                Some(l) => serde_json::from_str(&l).map_err(|e| {
                    Error::integrity(format!("vault artifact {}: bad header ({e})", a.name))
                })?,
                None => {
                    return Err(Error::integrity(format!(
                        "vault artifact {} is empty",
                        a.name
                    )));
                }
            };
            if header.get("format").and_then(Value::as_str) != Some(FORMAT) {
                return Err(Error::integrity(format!(
                    "vault artifact {} is not {FORMAT}",
                    a.name
                )));
            }
            let src_kv = header.get("kv").and_then(Value::as_u64).unwrap_or(1);
            let mount = self.target_mount(
                header
                    .get("mount")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                target,
            );
            let kv = c.kv_version(&mount).await?;
            targets.push(mount.clone());
            progress.start(&a.name, None);
            // (path, version written in the target, digest) to read back.
            let items_before = out.items;
            let mut written: Vec<(String, Option<u64>, String)> = Vec::new();
            // KV v2 settings, written after every version (cas_required would refuse the
            // replay's writes) and read back with the data.
            let mut settings: Vec<(String, KvSettings)> = Vec::new();
            while let Some(l) = lines
                .next_line()
                .await
                .map_err(|e| io_err(e, "vault artifact"))?
            {
                let r: Record = serde_json::from_str(&l).map_err(|e| {
                    Error::integrity(format!("vault artifact {}: bad record ({e})", a.name))
                })?;
                // KV v1 sources and v1 targets carry the live data only.
                if (src_kv == 1 || kv == 1) && r.state != "live" {
                    continue;
                }
                let data = r.data.clone().unwrap_or_else(|| json!({}));
                if kv == 2 {
                    if let Some(st) = r.settings.clone().filter(|_| src_kv == 2) {
                        settings.push((r.path.clone(), st));
                    }
                    let v = c.write(&mount, 2, &r.path, &data).await?.ok_or_else(|| {
                        Error::new(
                            ErrorKind::Source,
                            format!("vault: write of {mount}/{} returned no version", r.path),
                        )
                    })?;
                    match r.state.as_str() {
                        "deleted" => c.remove_version(&mount, &r.path, v, false).await?,
                        "destroyed" => c.remove_version(&mount, &r.path, v, true).await?,
                        _ => {
                            if let Some(d) = r.sha256.clone() {
                                written.push((r.path.clone(), Some(v), d));
                            }
                        }
                    }
                } else {
                    c.write(&mount, 1, &r.path, &data).await?;
                    if let Some(d) = r.sha256.clone() {
                        // A later version of the same path replaces the earlier one.
                        written.retain(|(p, _, _)| p != &r.path);
                        written.push((r.path.clone(), None, d));
                    }
                }
                out.items += 1;
                out.bytes += l.len() as u64;
                progress.advance(&a.name, l.len() as u64);
            }
            for (p, st) in &settings {
                c.write_settings(&mount, p, st).await?;
            }
            // Read back every written path/version and compare digests.
            let mut bad = Vec::new();
            for (p, st) in &settings {
                let (_, got) = c.metadata(&mount, p).await?;
                if got != *st {
                    bad.push(format!("{mount}/{p} metadata settings"));
                }
            }
            for (p, v, d) in &written {
                let got = c.read(&mount, kv, p, *v).await?;
                if got.as_ref().map(data_digest).as_deref() != Some(d.as_str()) {
                    bad.push(match v {
                        Some(v) => format!("{mount}/{p} version {v}"),
                        None => format!("{mount}/{p}"),
                    });
                }
            }
            progress.finish(&a.name);
            if !bad.is_empty() {
                return Err(Error::integrity(format!(
                    "vault: {} secret(s) read back differ from the backup: {}",
                    bad.len(),
                    bad.join(", ")
                )));
            }
            out.notes.push(format!(
                "{mount}: {} record(s) imported, {} read back and matched by SHA-256, {} metadata setting(s) restored",
                out.items - items_before,
                written.len(),
                settings.len()
            ));
        }
        out.target = format!("{} ({})", self.config.client.address, targets.join(", "));
        Ok(out)
    }
}

#[async_trait]
impl Verifier for VaultComponent {
    /// Count-only check against the manifest facts (the digests live in the encrypted
    /// artifact and are compared by the restore itself): every exported mount exists on the
    /// target and holds at least as many paths as were exported. Raft snapshots: the server
    /// answers `sys/mounts` with the token.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let c = self.client()?;
        let mut report = VerifyReport::default();
        if backup.kind == BackupKind::Snapshot {
            c.call("GET", "sys/mounts", None, false).await?;
            report.checked = 1;
            return Ok(report);
        }
        let mounts = backup
            .facts
            .get("mounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for m in mounts {
            let src = m
                .get("mount")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mount = self.target_mount(&src, target);
            let want = m.get("paths").and_then(Value::as_u64).unwrap_or(0);
            match c.kv_version(&mount).await {
                Ok(kv) => {
                    let got = c.walk(&mount, kv).await?.len() as u64;
                    report.checked += got;
                    if got < want {
                        report
                            .problems
                            .push(format!("{mount}: {got} path(s), the backup has {want}"));
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    report
                        .problems
                        .push(format!("{mount}: no such mount on the target"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}
