//! # zdr-files
//!
//! The zdr component for directory trees such as `/opt/zentoria/config` (the runbook's
//! "Configs" tier): [`FilesComponent`] backs a tree up as one tar stream, restores it
//! beside the live files without clobbering them, and verifies a tree file by file
//! against the SHA-256 sums recorded in the manifest ([`FilesFacts`]).
//!
//! ```
//! # use std::sync::{Arc, Mutex};
//! # use std::pin::Pin;
//! # use std::task::{Context, Poll};
//! # use async_trait::async_trait;
//! # use zdr_core::{ArtifactReader, ArtifactRecord, ArtifactSink, ArtifactWrite, BoxRead, Compression, Result};
//! # // A sink and reader that keep one artifact in memory; zdr-storage provides the real ones.
//! # #[derive(Default, Clone)] struct Mem(Arc<Mutex<(Vec<u8>, Vec<ArtifactRecord>)>>);
//! # impl Mem { fn records(&self) -> Vec<ArtifactRecord> { self.0.lock().unwrap().1.clone() } }
//! # struct W(Vec<u8>, Mem, String);
//! # impl tokio::io::AsyncWrite for W {
//! #     fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> { self.0.extend_from_slice(b); Poll::Ready(Ok(b.len())) }
//! #     fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
//! #     fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> { Poll::Ready(Ok(())) }
//! # }
//! # #[async_trait] impl ArtifactWrite for W {
//! #     async fn finish(self: Box<Self>) -> Result<ArtifactRecord> {
//! #         let W(bytes, mem, name) = *self;
//! #         let record = ArtifactRecord { key: format!("{name}.tar"), name, size: bytes.len() as u64,
//! #             sha256: zdr_core::sha256_hex(&bytes), raw_size: bytes.len() as u64, compression: Compression::None, encryption: None, offset: None };
//! #         *mem.0.lock().unwrap() = (bytes, vec![record.clone()]);
//! #         Ok(record)
//! #     }
//! # }
//! # #[async_trait] impl ArtifactSink for Mem {
//! #     async fn create(&mut self, name: &str, _: &str) -> Result<Box<dyn ArtifactWrite>> { Ok(Box::new(W(Vec::new(), self.clone(), name.into()))) }
//! # }
//! # #[async_trait] impl ArtifactReader for Mem {
//! #     async fn open(&self, _: &ArtifactRecord) -> Result<BoxRead> { Ok(Box::new(std::io::Cursor::new(self.0.lock().unwrap().0.clone()))) }
//! # }
//! # #[tokio::main] async fn main() -> Result<()> {
//! # let tmp = tempfile::tempdir().unwrap();
//! # let config_dir = tmp.path().join("config");
//! # std::fs::create_dir_all(config_dir.join("nginx")).unwrap();
//! # std::fs::write(config_dir.join("nginx/site.conf"), "server {}\n").unwrap();
//! # std::fs::write(config_dir.join(".site.conf.swp"), "scratch").unwrap();
//! # let restore_dir = tmp.path().join("restored");
//! # let mut sink = Mem::default();
//! # let storage = sink.clone();
//! use zdr_core::{
//!     BackupId, BackupRequest, BackupSource, Component, MANIFEST_FORMAT, Manifest, Progress,
//!     RestoreTarget, Restorer, Verifier, ZDR_VERSION,
//! };
//! use zdr_files::{FilesComponent, FilesFacts};
//!
//! let configs = FilesComponent::new(Component::new("configs")?, config_dir).exclude(["*.swp"]);
//!
//! // Back up: one tar artifact named after the component, and per-file facts.
//! let started_at = chrono::Utc::now();
//! let req = BackupRequest {
//!     id: BackupId::generate(started_at),
//!     schedule: "daily".into(),
//!     started_at,
//! };
//! let facts = configs.backup(&req, &mut sink, &Progress::none()).await?;
//!
//! // The storage layer writes the manifest from these facts and the artifact records.
//! let manifest = Manifest {
//!     format: MANIFEST_FORMAT,
//!     id: req.id,
//!     component: BackupSource::component(&configs).clone(),
//!     kind: facts.kind,
//!     schedule: req.schedule,
//!     started_at,
//!     finished_at: chrono::Utc::now(),
//!     zdr_version: ZDR_VERSION.into(),
//!     parent: None,
//!     blob_index: None,
//!     facts: facts.facts,
//!     artifacts: sink.records(),
//! };
//! assert_eq!(FilesFacts::from_manifest(&manifest)?.file_count, 1);
//!
//! // Restore beside the live tree, then check it file by file.
//! let target = RestoreTarget {
//!     path: Some(restore_dir.clone()),
//!     ..RestoreTarget::default()
//! };
//! let outcome = configs.restore(&manifest, &storage, &target, &Progress::none()).await?;
//! assert_eq!(outcome.items, 1);
//! assert!(configs.verify(&manifest, &target).await?.is_ok());
//! assert!(restore_dir.join("nginx/site.conf").is_file());
//! # Ok(()) }
//! ```
//!
//! The tar is an ordinary (GNU) tar, so the manual runbook still works without zdr:
//! `tar -xpf configs_<id>.tar -C /opt/zentoria/config`.
//!
//! ## Behaviour
//! - **Backup** walks the tree in sorted order without following symlinks, archives
//!   directories, regular files and symlinks with their modes and modification times, and
//!   skips sockets, fifos and devices with a warning. Each file is read once, hashed while
//!   tar reads it, and never held in memory. A file that changes size while being read
//!   fails the backup (a [`zdr_core::ErrorKind::Source`] error naming it) rather than
//!   producing an archive whose header disagrees with its data.
//! - **Restore** unpacks into a staging directory beside the target
//!   (`<parent>/.zdr-restore-<backup id>-<random>`), checks every file's size and SHA-256
//!   against the manifest and refuses absolute or `..` paths (both
//!   [`zdr_core::ErrorKind::Integrity`]), reads the stream to its end, and only then moves
//!   files into the target. Existing files with different content are a
//!   [`zdr_core::ErrorKind::Conflict`] unless [`zdr_core::RestoreTarget::overwrite`] is set;
//!   with it, the replaced versions are moved to `<parent>/.zdr-replaced-<backup id>-<random>`
//!   (never deleted). Identical files and files the backup does not have are left alone.
//!   The staging directory is removed in every case. Ownership is not restored.
//! - **Verify** reports missing entries and changed types, sizes, content, modes and symlink
//!   targets; extra files are not problems.

mod backup;
mod facts;
mod journal;
mod restore;
mod verify;
mod walk;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, BackupRequest, BackupSource, Component, Error,
    Manifest, Progress, RestoreOutcome, RestoreTarget, Restorer, Result, SourceFacts, Verifier,
    VerifyReport,
};

pub use facts::{EntryType, FACTS_FORMAT, FileEntry, FilesFacts, SkippedEntry};

/// The file extension of the artifact (`<component>_<id>.tar[.zst][.age]` on the tiers).
pub const ARTIFACT_EXT: &str = "tar";

/// Backs up, restores and verifies one directory tree.
///
/// The artifact is named after the component and has the extension `tar`.
#[derive(Debug, Clone)]
pub struct FilesComponent {
    component: Component,
    root: PathBuf,
    exclude: Vec<String>,
}

impl FilesComponent {
    /// A component that backs up the tree at `root`.
    #[must_use]
    pub fn new(component: Component, root: PathBuf) -> Self {
        Self {
            component,
            root,
            exclude: Vec::new(),
        }
    }

    /// Leave out entries matching these patterns (with everything below them). A pattern
    /// without `/` matches an entry's name at any depth (`*.swp`); one with `/` matches the
    /// path relative to the root (`nginx/cache`, `**/*.tmp`). `*` and `?` stay within one
    /// path segment, `**` crosses segments.
    #[must_use]
    pub fn exclude<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// The directory this component backs up.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The exclude patterns.
    #[must_use]
    pub fn excluded(&self) -> &[String] {
        &self.exclude
    }

    fn context(&self, e: Error) -> Error {
        e.with_context("component", &self.component)
    }

    fn check_manifest(&self, manifest: &Manifest) -> Result<FilesFacts> {
        if manifest.component != self.component {
            return Err(Error::bad_input(format!(
                "backup {} is of component {}, not {}",
                manifest.id, manifest.component, self.component
            )));
        }
        FilesFacts::from_manifest(manifest)
    }

    async fn backup_inner(
        &self,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let root = absolute(&self.root)?;
        match tokio::fs::metadata(&root).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::bad_input(format!(
                    "cannot back up {}: it is not a directory",
                    root.display()
                ))
                .with_context("path", root.display()));
            }
            Err(e) => {
                return Err(
                    Error::bad_input(format!("cannot back up {}: {e}", root.display()))
                        .with_context("path", root.display())
                        .with_hint("check the component's root path in the configuration"),
                );
            }
        }
        // A restore into this tree that was killed midway is completed before it is read.
        if let Some(parent) = root.parent().map(Path::to_path_buf) {
            let tree = root.clone();
            let notes = runtime()?
                .spawn_blocking(move || journal::repair(&parent, &tree))
                .await
                .map_err(join_error)??;
            for note in notes {
                progress.warn(note);
            }
        }
        let root_text = root
            .to_str()
            .ok_or_else(|| {
                Error::bad_input(format!(
                    "cannot back up {}: the path is not UTF-8",
                    root.display()
                ))
            })?
            .to_owned();
        let handle = runtime()?;
        let writer = sink.create(self.component.as_str(), ARTIFACT_EXT).await?;
        let task = format!("backup {}", self.component);
        let exclude = self.exclude.clone();
        let blocking_progress = progress.clone();
        let blocking_task = task.clone();
        let (writer, facts) = handle
            .spawn_blocking(move || {
                let bridge = SyncIoBridge::new_with_handle(writer, Handle::current());
                let (bridge, facts) = backup::write_tar(
                    bridge,
                    &root,
                    root_text,
                    &exclude,
                    &blocking_progress,
                    &blocking_task,
                )?;
                Ok::<_, Error>((bridge.into_inner(), facts))
            })
            .await
            .map_err(join_error)??;
        writer.finish().await?;
        progress.finish(&task);
        progress.info(format!(
            "backed up {} files, {} bytes from {}",
            facts.file_count, facts.total_bytes, facts.root
        ));
        Ok(SourceFacts {
            kind: BackupKind::Physical,
            facts: facts.to_json()?,
        })
    }

    async fn restore_inner(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        let path = target.path.as_ref().ok_or_else(|| {
            Error::bad_input("restoring files needs a target directory")
                .with_hint("give the directory to restore into (it may be the original root)")
        })?;
        let path = absolute(path)?;
        let facts = self.check_manifest(backup)?;
        let record = backup.artifact(self.component.as_str()).ok_or_else(|| {
            Error::integrity(format!(
                "backup {} has no artifact named {}",
                backup.id, self.component
            ))
            .with_hint("the manifest is damaged; restore another backup")
        })?;
        let handle = runtime()?;
        let stream = from
            .open(record)
            .await
            .map_err(|e| e.with_context("key", &record.key))?;
        let job = restore::Job {
            backup_id: backup.id.to_string(),
            facts,
            target: path.clone(),
            overwrite: target.overwrite,
            progress: progress.clone(),
            task: format!("restore {}", self.component),
        };
        let key = record.key.clone();
        handle
            .spawn_blocking(move || {
                let bridge = SyncIoBridge::new_with_handle(stream, Handle::current());
                restore::run(&job, bridge)
            })
            .await
            .map_err(join_error)?
            .map_err(|e| {
                e.with_context("key", key)
                    .with_context("path", path.display())
            })
    }
}

#[async_trait]
impl BackupSource for FilesComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Stream the tree as a tar into the artifact `<component>` (extension `tar`) and
    /// return [`FilesFacts`] as the facts.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] when the root is missing or not a directory,
    /// [`zdr_core::ErrorKind::Source`] when a file cannot be read or changes size while
    /// being read, and the sink's errors.
    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        self.backup_inner(sink, progress)
            .await
            .map_err(|e| self.context(e))
    }
}

#[async_trait]
impl Restorer for FilesComponent {
    fn component(&self) -> &Component {
        &self.component
    }

    /// Restore into `target.path` (required); see the crate docs for the steps.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] without a target path or for a manifest of another
    /// component, [`zdr_core::ErrorKind::Integrity`] when the archive does not match the
    /// manifest (target untouched), [`zdr_core::ErrorKind::Conflict`] when the target holds
    /// different files and `overwrite` is not set (target untouched),
    /// [`zdr_core::ErrorKind::Io`] for local failures.
    async fn restore(
        &self,
        backup: &Manifest,
        from: &dyn ArtifactReader,
        target: &RestoreTarget,
        progress: &Progress,
    ) -> Result<RestoreOutcome> {
        self.restore_inner(backup, from, target, progress)
            .await
            .map_err(|e| self.context(e))
    }
}

#[async_trait]
impl Verifier for FilesComponent {
    /// Compare the tree at `target.path` (or the original root when it is `None`) with the
    /// backup's facts.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::BadInput`] for a manifest of another component and
    /// [`zdr_core::ErrorKind::Integrity`] for facts that are not a files backup's; what
    /// differs on disk is reported in the [`VerifyReport`], not as an error.
    async fn verify(&self, backup: &Manifest, target: &RestoreTarget) -> Result<VerifyReport> {
        let facts = self.check_manifest(backup).map_err(|e| self.context(e))?;
        let root = match &target.path {
            Some(p) => p.clone(),
            None => PathBuf::from(&facts.root),
        };
        let handle = runtime().map_err(|e| self.context(e))?;
        handle
            .spawn_blocking(move || verify::verify(&facts, &root))
            .await
            .map_err(|e| self.context(join_error(e)))
    }
}

fn runtime() -> Result<Handle> {
    Handle::try_current().map_err(|e| {
        Error::unexpected("zdr-files needs a Tokio runtime (it runs file I/O on blocking threads)")
            .with_source(e)
    })
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::unexpected("a blocking file task failed").with_source(e)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| {
        Error::bad_input(format!("cannot make {} absolute", path.display()))
            .with_source(e)
            .with_context("path", path.display())
    })
}
