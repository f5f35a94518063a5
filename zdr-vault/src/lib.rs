//! # zdr-vault
//!
//! The zdr adapter for HashiCorp Vault (and servers speaking its HTTP API).
//!
//! - **Logical export** of KV v1 and KV v2 mounts ([`VaultComponent`] as a
//!   [`BackupSource`](zdr_core::BackupSource)): every path is found with `LIST` (recursively); KV v2 mounts
//!   contribute every version with its metadata, deleted and destroyed versions recorded as
//!   such (without data). One artifact per mount, `kv-<mount>.jsonl` (format below).
//! - **Import** ([`VaultComponent`] as a [`Restorer`](zdr_core::Restorer)) into the same or another Vault: KV v2
//!   versions are replayed in order; after the import every written path and version is read
//!   back and compared by SHA-256 with the digest stored in the artifact, and a mismatch fails
//!   the restore ([`ErrorKind::Integrity`](zdr_core::ErrorKind::Integrity)).
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
//! A backup is refused unless the sink it writes to encrypts
//! ([`ArtifactSink::encrypts`](zdr_core::ArtifactSink::encrypts); zdr-storage's sink does when
//! `PipelineOptions.keys.encrypts()`) or the config explicitly allows plaintext
//! ([`VaultConfig::allow_plaintext`]). The token is a [`Secret`], hidden from
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

mod client;
mod config;
mod export;
mod format;
mod import;
mod raft;
mod reference;
mod verify;

use std::collections::BTreeMap;

use zdr_core::{Component, Error, RestoreTarget, Result};

pub use client::VaultClient;
pub use config::{VaultClientConfig, VaultConfig};
pub use format::{KvSettings, Record, data_digest};
pub use reference::resolve_reference;

/// The artifact format tag on the first line of every export.
pub const FORMAT: &str = "zdr-vault-kv/1";

pub use settings::VaultSettings;
pub use zdr_core::Secret;
mod settings;

/// The Vault component: a [`BackupSource`](zdr_core::BackupSource) (logical KV export) and a [`Restorer`](zdr_core::Restorer) (import
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
}

fn io_err(e: std::io::Error, what: &str) -> Error {
    Error::from_io(e, what.to_owned())
}
