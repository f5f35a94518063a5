//! Spooling: the local file an object is written to before it is uploaded, and the
//! writer [`OneDriveTier::writer`](super::OneDriveTier::writer) returns.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use opendal::Buffer;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, BufWriter};
use zdr_core::{Error, ErrorKind, Result};

use super::upload::{Graph, SIMPLE_UPLOAD_LIMIT, Target};

/// Write-through buffer in front of the spool file.
pub(super) const SPOOL_BUFFER: usize = 1 << 20;

/// The local spool file an object is written to before it is uploaded. It is created
/// unlinked where the platform allows (so it vanishes with the process) and deleted when
/// dropped.
pub(super) struct Spool {
    pub(super) file: tokio::fs::File,
    pub(super) dir: PathBuf,
}

impl Spool {
    pub(super) async fn create(dir: PathBuf, at: Target<'_>) -> Result<Self> {
        let d = dir.clone();
        let file = tokio::task::spawn_blocking(move || tempfile::tempfile_in(&d))
            .await
            .map_err(|e| {
                at.error(ErrorKind::Unexpected, "spool task failed")
                    .with_source(e)
            })?
            .map_err(|e| {
                at.error(
                    ErrorKind::Io,
                    format!("cannot create a spool file in {}", dir.display()),
                )
                .with_source(e)
                .with_hint(
                    "set spool_dir to a writable directory with room for the largest artifact",
                )
            })?;
        Ok(Self {
            file: tokio::fs::File::from_std(file),
            dir,
        })
    }

    pub(super) fn io_error(&self, at: Target<'_>, what: &str, e: std::io::Error) -> Error {
        at.error(
            ErrorKind::Io,
            format!("{what} the spool file in {} failed", self.dir.display()),
        )
        .with_source(e)
        .with_hint("set spool_dir to a directory with room for the largest artifact")
    }

    /// Read `len` bytes at `offset` (one fragment: the only buffer held).
    pub(super) async fn read_at(
        &mut self,
        at: Target<'_>,
        offset: u64,
        len: u64,
    ) -> Result<Buffer> {
        let n = usize::try_from(len)
            .map_err(|_| at.error(ErrorKind::Unexpected, "fragment too large"))?;
        let mut buf = vec![0u8; n];
        let read = async {
            self.file.seek(std::io::SeekFrom::Start(offset)).await?;
            self.file.read_exact(&mut buf).await
        }
        .await;
        match read {
            Ok(_) => Ok(Buffer::from(buf)),
            Err(e) => Err(self.io_error(at, "reading", e)),
        }
    }
}

/// What a writer uploads on `shutdown()`.
pub(super) struct Job {
    pub(super) graph: Arc<Graph>,
    pub(super) tier: String,
    pub(super) key: String,
}

impl Job {
    pub(super) async fn commit(self, mut spool: Spool, len: u64) -> Result<()> {
        let at = Target {
            tier: &self.tier,
            key: &self.key,
        };
        if len < SIMPLE_UPLOAD_LIMIT {
            let bytes = spool.read_at(at, 0, len).await?;
            drop(spool);
            return self.graph.put_small(at, bytes).await;
        }
        let result = self.graph.upload_session(at, &mut spool, len).await;
        drop(spool);
        result
    }
}

/// The writer [`OneDriveTier::writer`](super::OneDriveTier::writer) returns: bytes go to the spool file; `shutdown()`
/// uploads it.
pub(super) struct SpoolWriter {
    pub(super) state: WriterState,
}

/// A writer receiving bytes.
pub(super) struct Spooling {
    pub(super) file: BufWriter<tokio::fs::File>,
    pub(super) dir: PathBuf,
    pub(super) len: u64,
    pub(super) job: Job,
}

impl Spooling {
    pub(super) fn failure(&self, e: std::io::Error) -> std::io::Error {
        Error::new(
            ErrorKind::Io,
            format!("writing the spool file in {} failed", self.dir.display()),
        )
        .with_context("tier", &self.job.tier)
        .with_context("key", &self.job.key)
        .with_source(e)
        .with_hint("set spool_dir to a directory with room for the largest artifact")
        .into_io()
    }
}

pub(super) enum WriterState {
    Spooling(Box<Spooling>),
    Committing(Pin<Box<dyn Future<Output = Result<()>> + Send>>),
    Done,
    Failed,
}

pub(super) fn after_end(what: &str) -> std::io::Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("OneDrive writer: {what} after shutdown or a failure"),
    )
    .into_io()
}

impl AsyncWrite for SpoolWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let WriterState::Spooling(s) = &mut this.state else {
            return Poll::Ready(Err(after_end("write")));
        };
        match ready!(Pin::new(&mut s.file).poll_write(cx, buf)) {
            Ok(n) => {
                s.len += n as u64;
                Poll::Ready(Ok(n))
            }
            Err(e) => {
                let err = s.failure(e);
                this.state = WriterState::Failed;
                Poll::Ready(Err(err))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            // Flushing only moves bytes to the spool; the upload happens on shutdown.
            WriterState::Spooling(s) => match ready!(Pin::new(&mut s.file).poll_flush(cx)) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(e) => {
                    let err = s.failure(e);
                    this.state = WriterState::Failed;
                    Poll::Ready(Err(err))
                }
            },
            WriterState::Committing(_) | WriterState::Done => Poll::Ready(Ok(())),
            WriterState::Failed => Poll::Ready(Err(after_end("flush"))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                WriterState::Spooling(s) => {
                    if let Err(e) = ready!(Pin::new(&mut s.file).poll_flush(cx)) {
                        let err = s.failure(e);
                        this.state = WriterState::Failed;
                        return Poll::Ready(Err(err));
                    }
                    let WriterState::Spooling(s) =
                        std::mem::replace(&mut this.state, WriterState::Failed)
                    else {
                        return Poll::Ready(Err(after_end("shutdown")));
                    };
                    let Spooling {
                        file,
                        dir,
                        len,
                        job,
                    } = *s;
                    let spool = Spool {
                        file: file.into_inner(),
                        dir,
                    };
                    this.state = WriterState::Committing(Box::pin(job.commit(spool, len)));
                }
                WriterState::Committing(upload) => {
                    let result = ready!(upload.as_mut().poll(cx));
                    this.state = if result.is_ok() {
                        WriterState::Done
                    } else {
                        WriterState::Failed
                    };
                    return Poll::Ready(result.map_err(Error::into_io));
                }
                WriterState::Done => return Poll::Ready(Ok(())),
                WriterState::Failed => return Poll::Ready(Err(after_end("shutdown"))),
            }
        }
    }
}
