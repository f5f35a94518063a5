//! The component's settings as they appear in a config file (`[components.NAME] type =
//! "vault"`), and their translation into a [`VaultClientConfig`].

use serde::Deserialize;
use zdr_core::{Error, Result};

use crate::{Secret, VaultClientConfig};

/// `[components.NAME] type = "vault"`. The token belongs in
/// `ZDR_COMPONENTS__<NAME>__TOKEN`, not in the file; it is never shown by `Debug`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultSettings {
    /// `http(s)://host:port`.
    pub address: String,
    /// The KV mounts of a logical export (default `["secret"]`).
    #[serde(default)]
    pub mounts: Option<Vec<String>>,
    /// A Vault Enterprise namespace (`X-Vault-Namespace` on every call); none for the root
    /// namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The token (put it in the environment variable).
    #[serde(default)]
    pub token: Option<Secret>,
}

impl VaultSettings {
    /// The KV mounts of a logical export (`secret` when none are configured).
    #[must_use]
    pub fn mounts(&self) -> Vec<String> {
        self.mounts
            .clone()
            .unwrap_or_else(|| vec!["secret".to_owned()])
    }
}

impl VaultSettings {
    /// The library's client configuration.
    ///
    /// # Errors
    /// No token.
    pub fn client(&self) -> Result<VaultClientConfig> {
        let token = self.token.clone().ok_or_else(|| {
            Error::bad_input(
                "no vault token: set the component's token (ZDR_COMPONENTS__<NAME>__TOKEN)",
            )
        })?;
        Ok(VaultClientConfig {
            address: self.address.clone(),
            token,
            namespace: self.namespace.clone(),
        })
    }
}
