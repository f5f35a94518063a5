//! The Qdrant component's configuration.

use std::fmt;

use serde::Deserialize;
use zdr_core::Secret;

/// How to reach a Qdrant server and what to back up.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QdrantConfig {
    /// The REST base URL, such as `http://qdrant:6333` (snapshot transfers).
    pub url: String,
    /// The gRPC URL, such as `http://qdrant:6334` (every other call). Default: the REST
    /// URL's host with port 6334 when the REST port is 6333 or not given; any other REST
    /// port needs this set.
    pub grpc_url: Option<String>,
    /// The API key sent as the `api-key` header on every call (never shown, never
    /// serialized).
    pub api_key: Option<Secret>,
    /// The collections to back up; empty means every collection on the server.
    pub collections: Vec<String>,
    /// Delete each snapshot on the server once it is stored (default `true`).
    pub delete_snapshots: bool,
    /// Timeout to connect, in seconds.
    pub connect_timeout_secs: u64,
    /// Stall timeout, in seconds: a snapshot download or upload that moves no byte for this
    /// long, and a control call (collection info, counts, scroll, aliases, listing and
    /// deleting snapshots) that gets no answer for this long, fail with a temporary error
    /// instead of waiting on a server that stopped answering (default 60).
    pub stall_timeout_secs: u64,
    /// Timeout of one long server-side operation, in seconds: snapshot creation, and the
    /// server's restore of an uploaded or fetched snapshot (default one hour).
    pub timeout_secs: u64,
    /// Back up the whole storage as one full snapshot (every collection and alias) instead
    /// of one snapshot per collection. Restoring it is a server start with
    /// `--storage-snapshot`, not an API call.
    pub full_snapshot: bool,
    /// Restore by having the server fetch each snapshot itself from this URL
    /// (`PUT /collections/{c}/snapshots/recover`) instead of uploading it. `{collection}`
    /// and `{snapshot}` are replaced by the backed-up collection and the snapshot name, such
    /// as `http://files.internal/qdrant/{snapshot}` or
    /// `file:///qdrant/snapshots/{collection}/{snapshot}`. The checksum recorded at backup is
    /// passed along for the server to check. The API key is sent in the request (for the
    /// server to present when it fetches) only when the URL is on the configured REST server
    /// itself, or with [`QdrantConfig::recover_with_api_key`].
    pub recover_from: Option<String>,
    /// Send the API key along with a recover even when the URL is not the configured REST
    /// URL (the same server under another address, such as its container name). Leave it off
    /// for any other host: the server would present the key there.
    pub recover_with_api_key: bool,
    /// Logical export instead of snapshots: every point scrolled with its vector and
    /// payload into a JSON-lines artifact (portable across Qdrant versions).
    pub logical: bool,
    /// Another Qdrant server for drills and verifications by restore (REST URL): their
    /// scratch collections are made there instead of on the live server, which then sees no
    /// write at all. It takes the same API key.
    pub scratch_url: Option<String>,
    /// The gRPC URL of [`QdrantConfig::scratch_url`] (default: derived from it as for
    /// [`QdrantConfig::grpc_url`]).
    pub scratch_grpc_url: Option<String>,
}

impl QdrantConfig {
    /// The configuration that points at the scratch server ([`QdrantConfig::scratch_url`]),
    /// or this one when none is set.
    #[must_use]
    pub fn for_scratch(&self) -> Self {
        match &self.scratch_url {
            Some(url) => Self {
                url: url.clone(),
                grpc_url: self.scratch_grpc_url.clone(),
                recover_from: None,
                ..self.clone()
            },
            None => self.clone(),
        }
    }
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:6333".into(),
            grpc_url: None,
            api_key: None,
            collections: Vec::new(),
            delete_snapshots: true,
            connect_timeout_secs: 10,
            stall_timeout_secs: 60,
            timeout_secs: 3600,
            full_snapshot: false,
            recover_from: None,
            recover_with_api_key: false,
            logical: false,
            scratch_url: None,
            scratch_grpc_url: None,
        }
    }
}

impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("grpc_url", &self.grpc_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collections", &self.collections)
            .field("delete_snapshots", &self.delete_snapshots)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("stall_timeout_secs", &self.stall_timeout_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("full_snapshot", &self.full_snapshot)
            .field("recover_from", &self.recover_from)
            .field("recover_with_api_key", &self.recover_with_api_key)
            .field("logical", &self.logical)
            .field("scratch_url", &self.scratch_url)
            .field("scratch_grpc_url", &self.scratch_grpc_url)
            .finish()
    }
}
