//! How to reach Vault and what to back up.

use crate::Secret;

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
    /// Export even though the sink does not encrypt
    /// ([`ArtifactSink::encrypts`](zdr_core::ArtifactSink::encrypts) is false).
    pub allow_plaintext: bool,
    /// Back up a raft snapshot (`sys/storage/raft/snapshot`) instead of a logical export.
    pub raft_snapshot: bool,
    /// On restore of a raft snapshot, use `snapshot-force` (a snapshot from another cluster).
    pub force: bool,
}
