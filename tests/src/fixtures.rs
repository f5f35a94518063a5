//! Test fixtures: a [`TestSource`] that streams generated data, a [`BlobContents`] that puts
//! contents into the blob store, and [`TierFixture`] that
//! opens one storage tier of each kind on a fresh root: local fs (a temp dir), S3 (a real
//! SeaweedFS server), OneDrive (the Graph-API **double**), memory.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, BlobRef, BoxRead, Component, Error,
    Progress, Result, SourceFacts, StorageTier,
};
use zdr_storage::{S3Config, TierConfig, open_tier};

use crate::graph_double::GraphDouble;
use crate::seaweed::SeaweedFs;

/// Deterministic bytes with real entropy (xorshift), optionally mixed with text so that
/// compression has something to do.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x.is_multiple_of(4) {
            out.extend_from_slice(format!("row {} value {}\n", x % 1000, x >> 40).as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

/// A hook run once when the source has written `at` bytes of its first artifact.
pub type Hook = Box<dyn Fn() + Send + Sync>;

/// A source that writes named artifacts of generated data.
pub struct TestSource {
    pub component: Component,
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// Fail with a source error after writing this many bytes of the first artifact.
    pub fail_after: Option<usize>,
    /// Run a hook after this many bytes of the first artifact.
    pub hook: Option<(usize, Hook)>,
    hooked: AtomicBool,
}

impl TestSource {
    pub fn new(component: &str, artifacts: Vec<(&str, Vec<u8>)>) -> Self {
        Self {
            component: Component::new(component).unwrap(),
            artifacts: artifacts
                .into_iter()
                .map(|(n, d)| (n.to_owned(), d))
                .collect(),
            fail_after: None,
            hook: None,
            hooked: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl BackupSource for TestSource {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        _progress: &Progress,
    ) -> Result<SourceFacts> {
        for (i, (name, bytes)) in self.artifacts.iter().enumerate() {
            let mut w = sink.create(name, "bin").await?;
            for (n, chunk) in bytes.chunks(256 * 1024).enumerate() {
                let written = n * 256 * 1024;
                if i == 0 {
                    if let Some(limit) = self.fail_after
                        && written >= limit
                    {
                        return Err(Error::new(
                            zdr_core::ErrorKind::Source,
                            "the source failed on purpose",
                        ));
                    }
                    if let Some((at, hook)) = &self.hook
                        && written >= *at
                        && !self.hooked.swap(true, Ordering::SeqCst)
                    {
                        hook();
                    }
                }
                w.write_all(chunk)
                    .await
                    .map_err(|e| Error::from_io(e, "writing the artifact failed"))?;
            }
            w.finish().await?;
        }
        Ok(SourceFacts {
            kind: BackupKind::Logical,
            facts: serde_json::json!({"artifacts": self.artifacts.len()}),
        })
    }
}

/// Which kind of tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fs,
    S3,
    OneDrive,
    Memory,
}

/// A tier on a fresh root, with whatever keeps its server alive.
pub struct TierFixture {
    pub tier: Arc<dyn StorageTier>,
    pub config: TierConfig,
    pub dir: tempfile::TempDir,
    pub s3: Option<SeaweedFs>,
    pub graph: Option<GraphDouble>,
}

impl TierFixture {
    pub async fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (config, s3, graph) = match kind {
            Kind::Fs => (
                TierConfig::Fs {
                    root: dir.path().join("tier"),
                },
                None,
                None,
            ),
            Kind::Memory => (TierConfig::Memory, None, None),
            Kind::S3 => {
                let s3 = SeaweedFs::start().await.expect("SeaweedFS must start");
                (TierConfig::S3(s3_config(&s3)), Some(s3), None)
            }
            Kind::OneDrive => {
                let g = GraphDouble::start().await;
                (TierConfig::Onedrive(g.config("zdr")), None, Some(g))
            }
        };
        let tier = open_tier(&format!("{kind:?}").to_lowercase(), &config).unwrap();
        Self {
            tier,
            config,
            dir,
            s3,
            graph,
        }
    }
}

/// The tier config of a SeaweedFS server.
pub fn s3_config(s3: &SeaweedFs) -> S3Config {
    S3Config {
        bucket: s3.bucket().to_owned(),
        endpoint: Some(s3.endpoint()),
        region: Some(s3.region().to_owned()),
        root: Some("/zdr".to_owned()),
        access_key_id: Some(s3.access_key_id().to_owned()),
        secret_access_key: Some(s3.secret_access_key().into()),
        virtual_host_style: false,
    }
}

/// A source whose backup is a list of contents, each put into the blob store (component
/// `uploads`); its only artifact is the blob list, naming them in order. Its facts give the
/// number of contents it stored (`stored`).
pub struct BlobContents {
    component: Component,
    contents: Vec<Vec<u8>>,
}

impl BlobContents {
    /// A source backing up `contents`.
    pub fn new(contents: Vec<Vec<u8>>) -> Self {
        Self {
            component: Component::new("uploads").unwrap(),
            contents,
        }
    }
}

#[async_trait]
impl BackupSource for BlobContents {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        _progress: &Progress,
    ) -> Result<SourceFacts> {
        let blobs = sink.blobs("blobs")?;
        let mut list = sink.create("blobs", "jsonl").await?;
        let mut stored = 0u64;
        for c in &self.contents {
            let reader: BoxRead = Box::new(std::io::Cursor::new(c.clone()));
            let put = blobs
                .put(&zdr_core::sha256_hex(c), c.len() as u64, reader)
                .await?;
            stored += u64::from(put.stored);
            let mut line = serde_json::to_vec(&BlobRef { blob: put.record }).unwrap();
            line.push(b'\n');
            list.write_all(&line).await.unwrap();
        }
        blobs.flush().await?;
        list.finish().await?;
        Ok(SourceFacts {
            kind: BackupKind::Physical,
            facts: serde_json::json!({ "stored": stored }),
        })
    }
}

/// Run `cmd` with `sh -c` in `dir`; its standard output. Panics, with its standard error,
/// when it fails.
pub fn run_sh(dir: &std::path::Path, cmd: &str) -> Vec<u8> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
