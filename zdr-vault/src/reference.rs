//! Credential references `vault:<mount>/<path>#<field>`.

use serde_json::Value;
use zdr_core::{Error, Result};

use crate::client::VaultClient;
use crate::{Secret, VaultClientConfig};

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
