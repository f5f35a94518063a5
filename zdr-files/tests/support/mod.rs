//! In-memory artifacts for testing `zdr-files` on its own: a sink that keeps raw bytes,
//! and a reader that can serve altered bytes or fail at the end of the stream the way the
//! storage layer does on a checksum mismatch.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zdr_core::{
    ArtifactReader, ArtifactRecord, ArtifactSink, ArtifactWrite, BackupId, BackupRequest,
    BackupSource, BoxRead, Component, Compression, Error, MANIFEST_FORMAT, Manifest, Progress,
    RecordingSink, Result, ZDR_VERSION,
};
use zdr_files::FilesComponent;

pub type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Artifacts by key, with their records.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    records: Arc<Mutex<Vec<ArtifactRecord>>>,
    /// Artifacts dropped without `finish`.
    pub abandoned: Arc<Mutex<Vec<String>>>,
}

impl MemStore {
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.inner.lock().ok()?.get(key).cloned()
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(key.to_owned(), bytes);
        }
    }

    pub fn records(&self) -> Vec<ArtifactRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// A reader serving the stored bytes as they are.
    pub fn reader(&self) -> MemReader {
        MemReader {
            store: self.clone(),
            tamper: None,
            fail_at_end: false,
        }
    }
}

#[async_trait]
impl ArtifactSink for MemStore {
    async fn create(&mut self, name: &str, ext: &str) -> Result<Box<dyn ArtifactWrite>> {
        Ok(Box::new(MemWrite {
            name: name.to_owned(),
            key: format!("{name}.{ext}"),
            buf: Vec::new(),
            store: self.clone(),
            finished: false,
        }))
    }
}

pub struct MemWrite {
    name: String,
    key: String,
    buf: Vec<u8>,
    store: MemStore,
    finished: bool,
}

impl AsyncWrite for MemWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemWrite {
    fn drop(&mut self) {
        if !self.finished
            && let Ok(mut a) = self.store.abandoned.lock()
        {
            a.push(self.key.clone());
        }
    }
}

#[async_trait]
impl ArtifactWrite for MemWrite {
    async fn finish(mut self: Box<Self>) -> Result<ArtifactRecord> {
        self.finished = true;
        let bytes = std::mem::take(&mut self.buf);
        let record = ArtifactRecord {
            name: self.name.clone(),
            key: self.key.clone(),
            size: bytes.len() as u64,
            sha256: zdr_core::sha256_hex(&bytes),
            raw_size: bytes.len() as u64,
            compression: Compression::None,
            encryption: None,
            offset: None,
        };
        self.store.put(&self.key, bytes);
        if let Ok(mut r) = self.store.records.lock() {
            r.push(record.clone());
        }
        Ok(record)
    }
}

type Tamper = Arc<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// Serves stored artifacts, optionally altered, optionally failing at the end of stream.
#[derive(Clone)]
pub struct MemReader {
    store: MemStore,
    tamper: Option<Tamper>,
    fail_at_end: bool,
}

impl MemReader {
    /// Serve bytes changed by `f` (without the end-of-stream checksum failure, so the
    /// component's own checks are what catches it).
    pub fn tampered(mut self, f: impl Fn(&mut Vec<u8>) + Send + Sync + 'static) -> Self {
        self.tamper = Some(Arc::new(f));
        self
    }

    /// Fail with an Integrity error after the last byte, as the storage layer does when
    /// the stored bytes do not match the record.
    pub fn failing_at_end(mut self) -> Self {
        self.fail_at_end = true;
        self
    }
}

#[async_trait]
impl ArtifactReader for MemReader {
    async fn open(&self, artifact: &ArtifactRecord) -> Result<BoxRead> {
        let mut bytes = self
            .store
            .bytes(&artifact.key)
            .ok_or_else(|| Error::not_found(format!("no artifact {}", artifact.key)))?;
        if let Some(t) = &self.tamper {
            t(&mut bytes);
        }
        Ok(Box::new(EndReader {
            data: Cursor::new(bytes),
            fail_at_end: self.fail_at_end,
        }))
    }
}

struct EndReader {
    data: Cursor<Vec<u8>>,
    fail_at_end: bool,
}

impl AsyncRead for EndReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let pos = self.data.position() as usize;
        let len = self.data.get_ref().len();
        if pos >= len {
            if self.fail_at_end {
                return Poll::Ready(Err(Error::integrity(
                    "sha256 of the stored bytes does not match the record",
                )
                .into_io()));
            }
            return Poll::Ready(Ok(()));
        }
        // Small chunks, like a network stream.
        let n = (len - pos).min(buf.remaining()).min(16 << 10);
        buf.put_slice(&self.data.get_ref()[pos..pos + n]);
        self.data.set_position((pos + n) as u64);
        Poll::Ready(Ok(()))
    }
}

pub fn configs() -> Result<Component> {
    Component::new("configs")
}

pub fn request() -> BackupRequest {
    let started_at = chrono::Utc::now();
    BackupRequest {
        id: BackupId::generate(started_at),
        schedule: "daily".into(),
        started_at,
    }
}

/// Back `comp` up into `store` and build the manifest the storage layer would write.
pub async fn backup_with(
    comp: &FilesComponent,
    store: &mut MemStore,
    progress: &Progress,
) -> Result<Manifest> {
    let req = request();
    let facts = comp.backup(&req, store, progress).await?;
    Ok(Manifest {
        format: MANIFEST_FORMAT,
        id: req.id,
        component: BackupSource::component(comp).clone(),
        kind: facts.kind,
        schedule: req.schedule,
        started_at: req.started_at,
        finished_at: chrono::Utc::now(),
        zdr_version: ZDR_VERSION.into(),
        parent: None,
        blob_index: None,
        facts: facts.facts,
        artifacts: store.records(),
    })
}

pub async fn backup(comp: &FilesComponent, store: &mut MemStore) -> Result<Manifest> {
    backup_with(comp, store, &Progress::none()).await
}

pub fn recording() -> (Progress, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    (Progress::new(sink.clone()), sink)
}

/// Entries in `dir` whose names start with `.zdr-` (staging or kept-aside directories).
pub fn zdr_dirs(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".zdr-"))
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of a [`snapshot`]: relative path, type, mode, content or link target.
pub type Snap = (String, String, u32, Vec<u8>);

/// A snapshot of a tree, sorted by path.
pub fn snapshot(root: &Path) -> std::io::Result<Vec<Snap>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir)?.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let rel = p
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            let meta = fs::symlink_metadata(&p)?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p)?;
                out.push((
                    rel,
                    "symlink".into(),
                    0,
                    t.to_string_lossy().as_bytes().to_vec(),
                ));
            } else if meta.is_dir() {
                out.push((rel, "dir".into(), mode, Vec::new()));
                stack.push(p);
            } else {
                out.push((rel, "file".into(), mode, fs::read(&p)?));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn chmod(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

pub fn mode(path: &Path) -> std::io::Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(fs::symlink_metadata(path)?.permissions().mode() & 0o7777)
}

pub fn mtime(path: &Path) -> std::io::Result<i64> {
    let meta = fs::symlink_metadata(path)?;
    Ok(filetime::FileTime::from_last_modification_time(&meta).unix_seconds())
}

pub fn set_mtime(path: &Path, secs: i64) -> std::io::Result<()> {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(path, t, t)
}
