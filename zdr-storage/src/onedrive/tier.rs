//! [`OneDriveTier`]: OpenDAL for everything but streaming writes, which go through zdr's
//! own upload sessions from a spool file.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use opendal::{HttpTransporter, Operator};
use tokio::io::BufWriter;
use zdr_core::{BoxRead, BoxWrite, Entry, Error, Result, StorageTier};

use super::build;
use super::config::OneDriveConfig;
use super::spool::{Job, SPOOL_BUFFER, Spool, SpoolWriter, Spooling, WriterState};
use super::upload::{Graph, Policy, Target};
use crate::tier::OpendalTier;

/// A OneDrive [`StorageTier`]: OpenDAL for reads, listings, stats, deletes and small
/// whole-object writes; [`StorageTier::writer`] streams through a local spool file and an
/// upload session of zdr's own (see the module docs).
pub struct OneDriveTier {
    inner: OpendalTier,
    pub(super) graph: Arc<Graph>,
    spool_dir: Option<PathBuf>,
}

impl fmt::Debug for OneDriveTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneDriveTier")
            .field("name", &self.inner.name())
            .field("root", &self.graph.root)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// Open the OneDrive tier `name`.
///
/// # Errors
/// As [`operator`](super::operator), with the tier name added.
pub fn open(name: &str, cfg: &OneDriveConfig) -> Result<Arc<dyn StorageTier>> {
    Ok(Arc::new(OneDriveTier::new(name, cfg)?))
}

impl OneDriveTier {
    /// Build the tier `name` from its config; nothing is sent over the network.
    ///
    /// # Errors
    /// As [`operator`](super::operator), with the tier name added.
    pub fn new(name: &str, cfg: &OneDriveConfig) -> Result<Self> {
        let built = build(cfg).map_err(|e| e.with_context("tier", name))?;
        let root = cfg
            .root
            .as_deref()
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let graph = Graph {
            http: HttpTransporter::default(),
            drive_root: format!("{}/v1.0/me/drive/root", built.graph),
            root,
            tokens: built.tokens,
            policy: Policy::default(),
        };
        Ok(Self {
            inner: OpendalTier::new(name, built.op),
            graph: Arc::new(graph),
            spool_dir: cfg.spool_dir.clone(),
        })
    }

    /// The OpenDAL operator behind reads, listings and deletes.
    #[must_use]
    pub fn operator(&self) -> &Operator {
        self.inner.operator()
    }
}

#[async_trait]
impl StorageTier for OneDriveTier {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn writer(&self, key: &str) -> Result<BoxWrite> {
        let tier = self.inner.name();
        if !zdr_core::layout::is_safe_key(key) {
            return Err(
                Error::bad_input(format!("unsafe storage key {key:?}")).with_context("tier", tier)
            );
        }
        let at = Target { tier, key };
        let dir = self.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spool = Spool::create(dir, at).await?;
        Ok(Box::new(SpoolWriter {
            state: WriterState::Spooling(Box::new(Spooling {
                file: BufWriter::with_capacity(SPOOL_BUFFER, spool.file),
                dir: spool.dir,
                len: 0,
                job: Job {
                    graph: self.graph.clone(),
                    tier: tier.to_owned(),
                    key: key.to_owned(),
                },
            })),
        }))
    }

    async fn reader(&self, key: &str) -> Result<BoxRead> {
        self.inner.reader(key).await
    }

    async fn reader_range(&self, key: &str, offset: u64, len: u64) -> Result<BoxRead> {
        self.inner.reader_range(key, offset, len).await
    }

    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read_all(key).await
    }

    async fn write_all(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner.write_all(key, bytes).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.inner.list(prefix).await
    }

    async fn stat(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.stat(key).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}
