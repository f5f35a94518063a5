//! The index of a backup: one [`ObjectLine`] per object, in listing order (bucket, then
//! key), spooled to a local file before it is trusted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zdr_core::{ArtifactRecord, BoxRead, Error, Result};

/// One object of a backup, as the index artifact records it (a JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLine {
    /// The bucket.
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag when it was read (quotes removed).
    #[serde(default)]
    pub etag: Option<String>,
    /// Its last-modified time as the server reported it.
    #[serde(default)]
    pub modified: Option<String>,
    /// Its `Content-Type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Its user metadata (`x-amz-meta-*`, without the prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
    /// The blob holding its content.
    pub blob: ArtifactRecord,
}

impl ObjectLine {
    /// True when `other` describes the same version of the object as the listing saw it:
    /// same bucket, key, size, ETag and last-modified time.
    #[must_use]
    pub(crate) fn unchanged(&self, listed: &Listed) -> bool {
        self.bucket == listed.bucket
            && self.key == listed.key
            && self.size == listed.size
            && listed.etag.is_some()
            && self.etag == listed.etag
            && self.modified == listed.modified
    }
}

/// An object as the listing reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    /// The ETag as the server wrote it (quoted), for `If-Match`.
    pub(crate) raw_etag: Option<String>,
    pub(crate) modified: Option<String>,
}

/// An ETag without its quotes.
pub(crate) fn bare_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// Prefix of this crate's temporary files in the temp dir, `zdr-s3-<pid>-<random>`: the next
/// run removes those of a killed one ([`zdr_core::staging::sweep_abandoned`]).
const STAGING_PREFIX: &str = "zdr-s3-";

/// A temporary file in the temp dir, named for this process. The first one a process makes
/// first removes those that processes which are gone left behind (a `kill -9` skips the
/// removal a dropped [`tempfile::NamedTempFile`] does).
pub(crate) fn temp_file() -> std::io::Result<tempfile::NamedTempFile> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        zdr_core::staging::sweep_abandoned(&std::env::temp_dir(), STAGING_PREFIX);
    });
    tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
        .tempfile()
}

/// A spooled index: the artifact read to its (verified) end into a local temporary file,
/// then read back line by line.
pub(crate) struct Spooled {
    file: tempfile::NamedTempFile,
    lines: tokio::io::Lines<BufReader<tokio::fs::File>>,
    line: u64,
}

impl Spooled {
    /// Copy `stream` to a temporary file, to its end; any read error (the stored bytes do
    /// not match their record) fails here, before a line is used.
    pub(crate) async fn spool(mut stream: BoxRead, what: &str) -> Result<Self> {
        let file = temp_file()
            .map_err(|e| Error::from_io(e, "cannot create a temporary file for the index"))?;
        let mut out = tokio::fs::File::from_std(
            file.reopen()
                .map_err(|e| Error::from_io(e, "cannot open the index spool"))?,
        );
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| Error::from_io(e, format!("reading {what} failed")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .await
                .map_err(|e| Error::from_io(e, "writing the index spool failed"))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::from_io(e, "writing the index spool failed"))?;
        let back = tokio::fs::File::open(file.path())
            .await
            .map_err(|e| Error::from_io(e, "cannot reopen the index spool"))?;
        Ok(Self {
            file,
            lines: BufReader::new(back).lines(),
            line: 0,
        })
    }

    /// The same spool, read again from its first line.
    pub(crate) async fn reopen(self) -> Result<Self> {
        let back = tokio::fs::File::open(self.file.path())
            .await
            .map_err(|e| Error::from_io(e, "cannot reopen the index spool"))?;
        Ok(Self {
            file: self.file,
            lines: BufReader::new(back).lines(),
            line: 0,
        })
    }

    /// The next object, `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<ObjectLine>> {
        loop {
            let Some(text) = self
                .lines
                .next_line()
                .await
                .map_err(|e| Error::from_io(e, "reading the index spool failed"))?
            else {
                return Ok(None);
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            let line: ObjectLine = serde_json::from_str(&text).map_err(|e| {
                Error::integrity(format!("line {} of the index is not an object", self.line))
                    .with_source(e)
            })?;
            return Ok(Some(line));
        }
    }
}

/// The digest a bucket's objects are compared by: SHA-256 over `key \0 size \0 sha256 \n`
/// for every object, in key order.
#[derive(Default)]
pub(crate) struct ListingDigest {
    hasher: Sha256,
    pub(crate) objects: u64,
    pub(crate) bytes: u64,
}

impl ListingDigest {
    pub(crate) fn add(&mut self, key: &str, size: u64, sha256: &str) {
        self.hasher.update(key.as_bytes());
        self.hasher.update([0]);
        self.hasher.update(size.to_string().as_bytes());
        self.hasher.update([0]);
        self.hasher.update(sha256.as_bytes());
        self.hasher.update(b"\n");
        self.objects += 1;
        self.bytes += size;
    }

    pub(crate) fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}
