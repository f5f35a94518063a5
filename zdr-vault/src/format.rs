//! The artifact format: records, KV v2 settings and the digest of a secret's data.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

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
