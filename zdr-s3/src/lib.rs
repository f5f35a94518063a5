//! # zdr-s3
//!
//! The stack's own object storage (MinIO, SeaweedFS, any S3 API) as a zdr component:
//! `type = "s3-bucket"`.
//!
//! - **Backup** lists each bucket (or prefixes of it). An object whose key, size, ETag and
//!   last-modified time match the previous backup's index is referenced, not read. A new or
//!   changed object is read once (pinned to the ETag it was listed with, so a rewrite during
//!   the read is refused and the object read again; its content type and user metadata come
//!   with the read's answer), hashed, and stored as a content-addressed blob
//!   ([`zdr_core::BlobStore`]; small ones several to a pack): identical content is stored
//!   once across keys, buckets and backups. The backup's artifacts are the index `objects`
//!   (one JSON line per object: bucket, key, size, ETag, last-modified, content type, user
//!   metadata, content SHA-256 and the blob's record) and the blob list `blobs` that checks,
//!   replication and pruning follow.
//! - **Restore** brings back every bucket, one bucket, a prefix or one key of any backup,
//!   into the same or another bucket (created when missing) on the same or another
//!   endpoint. Identical objects are skipped; an object that differs is replaced only with
//!   `overwrite` (otherwise the restore is refused, naming them, before anything is
//!   written). Each object's content is checked against its SHA-256 before the write is
//!   committed, and every restored object is read back and compared.
//! - **Verify** compares a bucket with the backup's facts: object count, bytes, and a
//!   digest over every key, size and content SHA-256.
//!
//! ```no_run
//! # async fn demo() -> zdr_core::Result<()> {
//! use zdr_core::{Component, Progress};
//! use zdr_s3::{S3BucketComponent, S3BucketSettings};
//! use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
//!
//! let settings = S3BucketSettings {
//!     endpoint: Some("http://127.0.0.1:9000".into()),
//!     buckets: vec!["uploads".into()],
//!     access_key_id: Some("minio".into()),
//!     secret_access_key: Some("minio-secret".into()),
//!     ..S3BucketSettings::default()
//! };
//! let uploads = S3BucketComponent::new(Component::new("uploads")?, settings)?;
//! let tier = open_tier("local", &TierConfig::Fs { root: "/var/backups/zdr".into() })?;
//! let repo = Repository::new(tier, PipelineOptions::default());
//! let first = repo.backup(&uploads, "daily", &Progress::none()).await?;
//! // ...objects change; the next backup stores only what changed.
//! let second = repo.backup(&uploads, "daily", &Progress::none()).await?;
//! # let _ = (first, second);
//! # Ok(()) }
//! ```

mod backup;
mod index;
mod restore;

use std::collections::BTreeSet;

use serde::Deserialize;
use zdr_core::{Component, Error, ErrorKind, Result, Secret};

pub use index::ObjectLine;
pub use restore::RestoreOptions;

/// The name of the index artifact (objects and their blobs).
pub const INDEX: &str = "objects";
/// The name of the blob list artifact.
pub const BLOB_LIST: &str = "blobs";

/// Where the object storage is and what of it to back up (`[components.NAME]` with
/// `type = "s3-bucket"`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3BucketSettings {
    /// The endpoint, such as `http://minio:9000`; AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The signing region; `us-east-1` when unset.
    #[serde(default)]
    pub region: Option<String>,
    /// The buckets backed up.
    pub buckets: Vec<String>,
    /// Only keys under these prefixes (every key when empty).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// The access key id.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret access key (a `vault:` reference, or `ZDR_COMPONENTS__<NAME>__SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// `bucket.host` addressing instead of `host/bucket`.
    #[serde(default)]
    pub virtual_host_style: bool,
    /// Objects read or written at once (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Seconds a request may wait for an answer, or a transfer for its next bytes, before it
    /// fails as a temporary error (default 60): a server that stops answering mid-listing or
    /// mid-transfer does not hang the run.
    #[serde(default)]
    pub stall_timeout_secs: Option<u64>,
}

impl std::fmt::Debug for S3BucketSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3BucketSettings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("buckets", &self.buckets)
            .field("prefixes", &self.prefixes)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

impl S3BucketSettings {
    /// Check the settings without contacting the server.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] naming what is wrong.
    pub fn check(&self) -> Result<()> {
        if self.buckets.is_empty() {
            return Err(Error::bad_input(
                "name at least one bucket (buckets = [...])",
            ));
        }
        for b in &self.buckets {
            check_bucket_name(b)?;
        }
        for p in &self.prefixes {
            if p.starts_with('/') {
                return Err(Error::bad_input(format!(
                    "prefix {p:?} starts with '/': S3 keys are relative"
                )));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(Error::bad_input(
                "set both access_key_id and secret_access_key, or neither",
            ));
        }
        if let Some(e) = &self.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(Error::bad_input(format!(
                "endpoint {e:?} is not an http(s) URL"
            )));
        }
        if self.concurrency == Some(0) {
            return Err(Error::bad_input("concurrency must be at least 1"));
        }
        if self.stall_timeout_secs == Some(0) {
            return Err(Error::bad_input("stall_timeout_secs must be at least 1"));
        }
        Ok(())
    }

    /// The buckets, sorted, each once.
    fn sorted_buckets(&self) -> Vec<String> {
        self.buckets
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The prefixes listed, sorted, none inside another (`""` alone when none is set).
    fn listed_prefixes(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .prefixes
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if all.is_empty() || all.iter().any(String::is_empty) {
            return vec![String::new()];
        }
        let mut out: Vec<String> = Vec::new();
        for p in all.drain(..) {
            if !out.iter().any(|o| p.starts_with(o.as_str())) {
                out.push(p);
            }
        }
        out
    }

    fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(8).max(1)
    }

    /// The same endpoint and credentials for another bucket, as a storage tier sees them.
    fn s3_config(&self, bucket: &str) -> zdr_storage::S3Config {
        zdr_storage::S3Config {
            bucket: bucket.to_owned(),
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            root: None,
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.clone(),
            virtual_host_style: self.virtual_host_style,
        }
    }

    /// An OpenDAL operator on `bucket`.
    fn operator(&self, bucket: &str) -> Result<opendal::Operator> {
        opendal::install_default();
        let mut b = opendal::services::S3::default()
            .bucket(bucket)
            .region(self.region.as_deref().unwrap_or("us-east-1"))
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(e) = &self.endpoint {
            b = b.endpoint(e);
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                b = b.access_key_id(id).secret_access_key(secret.expose());
            }
            _ => b = b.skip_signature(),
        }
        if self.virtual_host_style {
            b = b.enable_virtual_host_style();
        }
        let stall = std::time::Duration::from_secs(self.stall_timeout_secs.unwrap_or(60));
        opendal::Operator::new(b)
            .map(|op| {
                op.layer(
                    opendal::layers::TimeoutLayer::new()
                        .with_timeout(stall)
                        .with_io_timeout(stall),
                )
            })
            .map_err(|e| s3_error(e, bucket, "", "configure the S3 client"))
    }
}

/// Refuse what S3 refuses as a bucket name (3-63 of `[a-z0-9.-]`, starting and ending with
/// a letter or digit).
fn check_bucket_name(b: &str) -> Result<()> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "invalid bucket name {b:?}: use 3-63 of [a-z0-9.-], starting and ending with a letter or digit"
        )))
    }
}

/// The server answered `NoSuchBucket` (OpenDAL reports it as a configuration error).
pub(crate) fn no_such_bucket(e: &opendal::Error) -> bool {
    e.to_string().contains("NoSuchBucket")
}

/// An error of the object store, naming the bucket and the key.
pub(crate) fn s3_error(e: opendal::Error, bucket: &str, key: &str, what: &str) -> Error {
    use opendal::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        _ if no_such_bucket(&e) => ErrorKind::NotFound,
        K::ConditionNotMatch => ErrorKind::Conflict,
        K::ConfigInvalid => ErrorKind::BadInput,
        _ => ErrorKind::Source,
    };
    let hint = match e.kind() {
        K::PermissionDenied => Some("check the access key and secret (and the bucket's policy)"),
        K::NotFound if key.is_empty() => Some("check the bucket name"),
        _ if no_such_bucket(&e) => Some("check the bucket name"),
        _ => None,
    };
    let temporary = e.is_temporary();
    let mut err = Error::new(kind, format!("{what} failed: {}", e.kind()))
        .with_context("bucket", bucket)
        .with_source(e);
    if !key.is_empty() {
        err = err.with_context("key", key);
    }
    if let Some(h) = hint {
        err = err.with_hint(h);
    }
    if temporary { err.temporary() } else { err }
}

/// An S3-compatible object store as a zdr component.
#[derive(Debug, Clone)]
pub struct S3BucketComponent {
    component: Component,
    settings: S3BucketSettings,
}

impl S3BucketComponent {
    /// The component `component` backing up what `settings` names.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] for settings that cannot work ([`S3BucketSettings::check`]).
    pub fn new(component: Component, settings: S3BucketSettings) -> Result<Self> {
        settings
            .check()
            .map_err(|e| e.with_context("component", &component))?;
        Ok(Self {
            component,
            settings,
        })
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &S3BucketSettings {
        &self.settings
    }

    /// A restore with `options` (see [`RestoreOptions`]).
    #[must_use]
    pub fn restore_with(&self, options: RestoreOptions) -> zdr_core::RestoreCall<'_, Self> {
        zdr_core::RestoreCall::new(self, options)
    }
}

/// SHA-256 of no bytes: the content of every directory marker.
pub(crate) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The ETag of an object of no bytes (its MD5), quotes removed.
pub(crate) const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// A directory marker: a stored key ending in `/` (an empty "folder" made by a console or
/// `mkdir` through an S3 client), other than the bucket's root.
pub(crate) fn is_marker(key: &str) -> bool {
    key.len() > 1 && key.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let good = S3BucketSettings {
            buckets: vec!["uploads".into()],
            ..S3BucketSettings::default()
        };
        assert!(good.check().is_ok());
        for bad in [
            S3BucketSettings::default(),
            S3BucketSettings {
                buckets: vec!["Up".into()],
                ..S3BucketSettings::default()
            },
            S3BucketSettings {
                buckets: vec!["uploads".into()],
                prefixes: vec!["/abs".into()],
                ..S3BucketSettings::default()
            },
            S3BucketSettings {
                buckets: vec!["uploads".into()],
                access_key_id: Some("id".into()),
                ..S3BucketSettings::default()
            },
            S3BucketSettings {
                buckets: vec!["uploads".into()],
                endpoint: Some("minio:9000".into()),
                ..S3BucketSettings::default()
            },
        ] {
            assert_eq!(
                bad.check().map_err(|e| e.kind()).err(),
                Some(ErrorKind::BadInput),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prefixes_inside_others_are_listed_once() {
        let s = S3BucketSettings {
            buckets: vec!["b".into()],
            prefixes: vec!["docs/2026/".into(), "a/".into(), "docs/".into()],
            ..S3BucketSettings::default()
        };
        assert_eq!(s.listed_prefixes(), vec!["a/", "docs/"]);
        let all = S3BucketSettings {
            prefixes: vec!["x/".into(), String::new()],
            ..s
        };
        assert_eq!(all.listed_prefixes(), vec![""]);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = S3BucketSettings {
            buckets: vec!["uploads".into()],
            access_key_id: Some("AKIA-visible".into()),
            secret_access_key: Some("very-secret".into()),
            ..S3BucketSettings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret") && !shown.contains("AKIA-visible"));
    }
}
