//! The streaming artifact pipeline.
//!
//! Write: raw bytes → compress (gzip / lz4 frame / zstd / none) → encrypt (age, optional) →
//! SHA-256 of the stored bytes → tier, plus a `.sha256` sidecar. Read: tier → SHA-256 and size
//! checked at the end → decrypt → decompress.
//!
//! Compression and encryption run on a blocking thread with the formats' reference `Write`
//! and `Read` implementations, while hashing and tier I/O run on the async runtime, so the
//! two halves use two cores. lz4 and zstd can also compress on worker threads of their own
//! ([`PipelineOptions::lz4_workers`], [`PipelineOptions::zstd_workers`]). Data moves in
//! chunks of [`CHUNK`] bytes through bounded channels, so memory stays flat whatever the
//! size of the artifact.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;
use zdr_core::{
    ArtifactRecord, ArtifactWrite, BoxRead, Compression, Error, ErrorKind, Progress, Result,
    StorageTier, layout,
};

use crate::keys::AgeKeys;

/// Size of the chunks moved between pipeline stages.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight between two stages.
const DEPTH: usize = 4;

/// How artifacts are written.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Compression of new artifacts.
    pub compression: Compression,
    /// Compression level; `None` for the format's default (gzip 6, zstd 3; lz4 has one level).
    pub level: Option<i32>,
    /// Worker threads for zstd (0: compress on the pipeline's own thread).
    pub zstd_workers: u32,
    /// Worker threads for lz4 (0 or 1: compress on the pipeline's own thread). The frame's
    /// blocks are independent, so each is compressed by the next free worker and written in
    /// order; the stored frame is the same format either way. Default: the number of cores,
    /// at most 4 ([`default_lz4_workers`]).
    pub lz4_workers: u32,
    /// Encryption keys; with no recipients and no passphrase, artifacts are plaintext.
    pub keys: AgeKeys,
    /// The size at which a pack of small blobs is stored (see [`zdr_core::layout::pack_key`]);
    /// 0 stores every blob on its own. Default [`crate::DEFAULT_PACK_SIZE`] (4 MiB).
    pub blob_pack_size: u64,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Zstd,
            level: None,
            zstd_workers: 0,
            lz4_workers: default_lz4_workers(),
            keys: AgeKeys::none(),
            blob_pack_size: crate::blobs::DEFAULT_PACK_SIZE,
        }
    }
}

/// The default number of lz4 worker threads: the number of cores, at most 4.
#[must_use]
pub fn default_lz4_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

enum Msg {
    Data(Bytes),
    End,
}

/// Shared slot for the first failure of a pipeline stage, so that the error a source sees
/// (a broken pipe) can be replaced by its cause (the tier's error).
#[derive(Clone, Default)]
pub(crate) struct FailureSlot(Arc<Mutex<Option<Error>>>);

impl FailureSlot {
    fn set(&self, e: &Error) {
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(e.duplicate());
        }
    }
    pub(crate) fn take(&self) -> Option<Error> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

fn broken_pipe() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "artifact pipeline stopped")
}

fn storage_io(tier: &str, key: &str, what: &str, e: io::Error) -> Error {
    let temporary = matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::Interrupted
    );
    let err = Error::new(ErrorKind::Storage, format!("{what} failed"))
        .with_context("tier", tier)
        .with_context("key", key)
        .with_source(e);
    if temporary { err.temporary() } else { err }
}

// ---------------------------------------------------------------------------------------
// Write side
// ---------------------------------------------------------------------------------------

/// A writer stage that can be finished, flushing its trailer into the stage below.
pub(crate) trait Stage: Write + Send {
    fn finish_stage(self: Box<Self>) -> io::Result<()>;
}

/// The last stage: hands chunks to the async hashing/upload task.
struct ChunkOut {
    tx: mpsc::Sender<Msg>,
    buf: Vec<u8>,
}

impl ChunkOut {
    fn send_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.tx
                .blocking_send(Msg::Data(Bytes::from(chunk)))
                .map_err(|_| broken_pipe())?;
        }
        Ok(())
    }
}

impl Write for ChunkOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stage for ChunkOut {
    fn finish_stage(mut self: Box<Self>) -> io::Result<()> {
        self.send_buf()?;
        self.tx.blocking_send(Msg::End).map_err(|_| broken_pipe())
    }
}

macro_rules! stage {
    ($name:ident, $inner:ty, |$s:ident| $finish:expr) => {
        struct $name($inner);
        impl Write for $name {
            fn write(&mut self, data: &[u8]) -> io::Result<usize> {
                self.0.write(data)
            }
            fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
                self.0.write_all(data)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.0.flush()
            }
        }
        impl Stage for $name {
            fn finish_stage(self: Box<Self>) -> io::Result<()> {
                let $s = self.0;
                let inner: Box<dyn Stage> = $finish?;
                inner.finish_stage()
            }
        }
    };
}

stage!(GzStage, flate2::write::GzEncoder<Box<dyn Stage>>, |s| s
    .finish());
stage!(
    Lz4Stage,
    lz4_flex::frame::FrameEncoder<Box<dyn Stage>>,
    |s| s.finish().map_err(io::Error::other)
);
stage!(
    ZstdStage,
    zstd::stream::write::Encoder<'static, Box<dyn Stage>>,
    |s| s.finish()
);
stage!(AgeStage, age::stream::StreamWriter<Box<dyn Stage>>, |s| s
    .finish());

fn build_chain(out: ChunkOut, options: &PipelineOptions) -> Result<Box<dyn Stage>> {
    build_chain_to(Box::new(out), options)
}

fn build_chain_to(out: Box<dyn Stage>, options: &PipelineOptions) -> Result<Box<dyn Stage>> {
    let mut stage: Box<dyn Stage> = out;
    if options.keys.encrypts() {
        let enc = options.keys.encryptor()?;
        let w = enc
            .wrap_output(stage)
            .map_err(|e| Error::unexpected("cannot start age encryption").with_source(e))?;
        stage = Box::new(AgeStage(w));
    }
    let bad_level = |e: io::Error| Error::bad_input("invalid compression level").with_source(e);
    Ok(match options.compression {
        Compression::None => stage,
        Compression::Gzip => {
            let level = options.level.map_or(6, |l| l.clamp(0, 9).unsigned_abs());
            Box::new(GzStage(flate2::write::GzEncoder::new(
                stage,
                flate2::Compression::new(level),
            )))
        }
        Compression::Lz4 if options.lz4_workers > 1 => Box::new(
            crate::lz4par::ParLz4::new(stage, options.lz4_workers as usize)
                .map_err(|e| Error::unexpected("cannot start lz4 compression").with_source(e))?,
        ),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max4MB)
                .content_checksum(false); // the SHA-256 of the stored bytes covers them
            Box::new(Lz4Stage(lz4_flex::frame::FrameEncoder::with_frame_info(
                info, stage,
            )))
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(stage, options.level.unwrap_or(3))
                .map_err(bad_level)?;
            enc.include_checksum(true).map_err(bad_level)?;
            if options.zstd_workers > 0 {
                enc.multithread(options.zstd_workers).map_err(bad_level)?;
            }
            Box::new(ZstdStage(enc))
        }
    })
}

/// The last stage of an in-memory encoding: collects the stored bytes.
struct VecOut(Arc<Mutex<Vec<u8>>>);

impl Write for VecOut {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("encoding buffer poisoned"))?
            .extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stage for VecOut {
    fn finish_stage(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

/// `raw` compressed and encrypted as `options` store an artifact, in memory: exactly the
/// bytes a [`PipelineWriter`] would store for it (a blob put into a pack). Blocking: call it
/// off the async threads.
pub(crate) fn encode_in_memory(options: &PipelineOptions, raw: &[u8]) -> Result<Vec<u8>> {
    if options.compression == Compression::Zstd {
        // One zstd context per thread, kept: a blob is small, and a fresh context for each
        // would cost more than compressing it.
        let frame = zstd_frame(options.level.unwrap_or(3), raw)
            .map_err(|e| Error::from_io(e, "compressing a blob failed"))?;
        if !options.keys.encrypts() {
            return Ok(frame);
        }
        let age_only = PipelineOptions {
            compression: Compression::None,
            ..options.clone()
        };
        return encode_in_memory(&age_only, &frame);
    }
    let out = Arc::new(Mutex::new(Vec::with_capacity(raw.len() / 2 + 256)));
    let mut chain = build_chain_to(Box::new(VecOut(out.clone())), options)?;
    chain
        .write_all(raw)
        .and_then(|()| chain.finish_stage())
        .map_err(|e| Error::from_io(e, "encoding a blob failed"))?;
    let mut guard = out
        .lock()
        .map_err(|_| Error::unexpected("encoding buffer poisoned"))?;
    Ok(std::mem::take(&mut *guard))
}

thread_local! {
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `raw` as one zstd frame with its checksum, as the streaming stage writes it (the frame
/// also records its content size).
fn zstd_frame(level: i32, raw: &[u8]) -> io::Result<Vec<u8>> {
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some((l, c)) if *l == level => c,
            _ => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                &mut slot.insert((level, c)).1
            }
        };
        compressor.compress(raw)
    })
}

/// Feeds raw bytes from the async side into the blocking compression stage.
struct ChunkIn {
    tx: PollSender<Msg>,
    buf: BytesMut,
}

impl ChunkIn {
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.tx.poll_reserve(cx)).map_err(|_| broken_pipe())?;
        let chunk = self.buf.split().freeze();
        self.tx
            .send_item(Msg::Data(chunk))
            .map_err(|_| broken_pipe())?;
        Poll::Ready(Ok(()))
    }
}

/// Bytes hashed on the upload task until [`HASH_OFFLOAD_AFTER`], then on a blocking thread
/// of their own, so a large artifact's SHA-256 overlaps with the tier's writes instead of
/// taking turns with them on one task (small artifacts and blobs never start a thread).
#[derive(Default)]
struct StoredHash {
    inline: Sha256,
    seen: u64,
    offloaded: Option<(mpsc::Sender<Bytes>, tokio::task::JoinHandle<Sha256>)>,
}

/// Stored bytes hashed on the upload task before the hashing moves to its own thread.
const HASH_OFFLOAD_AFTER: u64 = 4 * CHUNK as u64;

impl StoredHash {
    async fn update(&mut self, b: &Bytes) -> Result<()> {
        self.seen += b.len() as u64;
        if self.offloaded.is_none() {
            if self.seen <= HASH_OFFLOAD_AFTER {
                self.inline.update(b);
                return Ok(());
            }
            let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
            let mut hasher = std::mem::take(&mut self.inline);
            let task = tokio::task::spawn_blocking(move || {
                while let Some(b) = rx.blocking_recv() {
                    hasher.update(&b);
                }
                hasher
            });
            self.offloaded = Some((tx, task));
        }
        if let Some((tx, _)) = &self.offloaded {
            tx.send(b.clone())
                .await
                .map_err(|_| Error::unexpected("the hashing thread of an upload stopped"))?;
        }
        Ok(())
    }

    async fn finish(self) -> Result<String> {
        let hasher = match self.offloaded {
            None => self.inline,
            Some((tx, task)) => {
                drop(tx);
                task.await.map_err(|e| {
                    Error::unexpected("the hashing thread of an upload failed").with_source(e)
                })?
            }
        };
        Ok(hex::encode(hasher.finalize()))
    }
}

/// An artifact being written through the pipeline; see [`ArtifactWrite`].
pub struct PipelineWriter {
    input: ChunkIn,
    record: Option<RecordDraft>,
    encode: Option<tokio::task::JoinHandle<Result<u64>>>,
    upload: Option<tokio::task::JoinHandle<Result<(u64, String)>>>,
    failure: FailureSlot,
    finished: Arc<Mutex<Vec<ArtifactRecord>>>,
    progress: Progress,
}

struct RecordDraft {
    name: String,
    key: String,
    compression: Compression,
    encryption: Option<zdr_core::Encryption>,
}

impl PipelineWriter {
    /// Start writing an artifact at `key` on `tier`. The finished record is also pushed to
    /// `finished`, so the backup that owns the writer can list it in its manifest.
    pub(crate) fn start(
        tier: Arc<dyn StorageTier>,
        name: &str,
        key: String,
        options: &PipelineOptions,
        progress: Progress,
        failure: FailureSlot,
        finished: Arc<Mutex<Vec<ArtifactRecord>>>,
    ) -> Result<Self> {
        let (raw_tx, mut raw_rx) = mpsc::channel::<Msg>(DEPTH);
        let (enc_tx, mut enc_rx) = mpsc::channel::<Msg>(DEPTH);
        let chain = build_chain(
            ChunkOut {
                tx: enc_tx,
                buf: Vec::with_capacity(CHUNK),
            },
            options,
        )?;

        let fail = failure.clone();
        let encode = tokio::task::spawn_blocking(move || {
            let mut chain = chain;
            let mut raw = 0u64;
            let res = (|| {
                loop {
                    match raw_rx.blocking_recv() {
                        Some(Msg::Data(b)) => {
                            raw += b.len() as u64;
                            chain.write_all(&b).map_err(|e| {
                                Error::from_io(e, "compressing or encrypting failed")
                            })?;
                        }
                        Some(Msg::End) => break,
                        None => return Err(Error::new(ErrorKind::Source, "artifact abandoned")),
                    }
                }
                chain
                    .finish_stage()
                    .map_err(|e| Error::from_io(e, "finishing compression or encryption failed"))?;
                Ok(raw)
            })();
            if let Err(e) = &res
                && e.kind() != ErrorKind::Source
                && e.kind() != ErrorKind::Io
            {
                fail.set(e);
            }
            res
        });

        let fail = failure.clone();
        let upload_key = key.clone();
        let upload_progress = progress.clone();
        let upload = tokio::spawn(async move {
            let progress = upload_progress;
            let res = async {
                let tier_name = tier.name().to_owned();
                let flight = crate::inflight::begin(&tier, &upload_key);
                let mut w = tier.writer(&upload_key).await?;
                let mut hasher = StoredHash::default();
                let mut size = 0u64;
                loop {
                    match enc_rx.recv().await {
                        Some(Msg::Data(b)) => {
                            hasher.update(&b).await?;
                            size += b.len() as u64;
                            w.write_all(&b)
                                .await
                                .map_err(|e| storage_io(&tier_name, &upload_key, "upload", e))?;
                            progress.advance(&upload_key, b.len() as u64);
                        }
                        Some(Msg::End) => break,
                        None => {
                            return Err(Error::new(
                                ErrorKind::Source,
                                "artifact abandoned before its end",
                            )
                            .with_context("key", &upload_key));
                        }
                    }
                }
                w.flush()
                    .await
                    .map_err(|e| storage_io(&tier_name, &upload_key, "upload", e))?;
                zdr_core::failpoint("artifact-before-commit");
                w.shutdown()
                    .await
                    .map_err(|e| storage_io(&tier_name, &upload_key, "upload commit", e))?;
                zdr_core::failpoint("artifact-before-sidecar");
                let sha = hasher.finish().await?;
                tier.write_all(
                    &layout::sidecar_key(&upload_key),
                    layout::sidecar_line(&upload_key, &sha).into_bytes(),
                )
                .await?;
                crate::inflight::end(flight);
                Ok((size, sha))
            }
            .await;
            if let Err(e) = &res
                && e.kind() != ErrorKind::Source
            {
                fail.set(e);
            }
            res
        });

        Ok(Self {
            input: ChunkIn {
                tx: PollSender::new(raw_tx),
                buf: BytesMut::with_capacity(CHUNK),
            },
            record: Some(RecordDraft {
                name: name.to_owned(),
                key,
                compression: options.compression,
                encryption: options.keys.encryption_record(),
            }),
            encode: Some(encode),
            upload: Some(upload),
            failure,
            finished,
            progress,
        })
    }

    async fn join_all(&mut self) -> Result<(u64, u64, String)> {
        let join_err =
            |e: tokio::task::JoinError| Error::unexpected("pipeline task failed").with_source(e);
        let encode = match self.encode.take() {
            Some(h) => h.await.map_err(join_err)?,
            None => Err(Error::unexpected("artifact finished twice")),
        };
        let upload = match self.upload.take() {
            Some(h) => h.await.map_err(join_err)?,
            None => Err(Error::unexpected("artifact finished twice")),
        };
        // The cause comes first: a tier failure breaks the encoder's pipe, not the reverse.
        if let Some(cause) = self.failure.take()
            && (encode.is_err() || upload.is_err())
        {
            return Err(cause);
        }
        let raw = encode?;
        let (size, sha) = upload?;
        Ok((raw, size, sha))
    }
}

impl AsyncWrite for PipelineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut self.input;
        if this.buf.len() >= CHUNK {
            ready!(this.poll_send_buf(cx))?;
        }
        let n = (CHUNK - this.buf.len()).min(data.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.input.poll_send_buf(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutdown only flushes: the artifact is committed by `finish`.
        self.input.poll_send_buf(cx)
    }
}

#[async_trait]
impl ArtifactWrite for PipelineWriter {
    async fn finish(mut self: Box<Self>) -> Result<ArtifactRecord> {
        let sent = async {
            self.flush().await?;
            let tx = &mut self.input.tx;
            std::future::poll_fn(|cx| tx.poll_reserve(cx))
                .await
                .map_err(|_| broken_pipe())?;
            tx.send_item(Msg::End).map_err(|_| broken_pipe())
        }
        .await;
        let joined = self.join_all().await;
        let (raw_size, size, sha256) = match (sent, joined) {
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(_)) => return Err(Error::from_io(e, "artifact pipeline stopped")),
            (Ok(()), Ok(v)) => v,
        };
        let draft = self
            .record
            .take()
            .ok_or_else(|| Error::unexpected("artifact finished twice"))?;
        let record = ArtifactRecord {
            name: draft.name,
            key: draft.key,
            size,
            sha256,
            raw_size,
            compression: draft.compression,
            encryption: draft.encryption,
            offset: None,
        };
        if let Ok(mut f) = self.finished.lock() {
            f.push(record.clone());
        }
        self.progress.finish(&record.key);
        Ok(record)
    }
}

// ---------------------------------------------------------------------------------------
// Read side
// ---------------------------------------------------------------------------------------

type Item = std::result::Result<Bytes, Error>;

/// Reads chunks from the hashing task on the blocking decode thread.
struct ChunkReader {
    state: Arc<Mutex<ReaderState>>,
}

struct ReaderState {
    rx: mpsc::Receiver<std::result::Result<Option<Bytes>, Error>>,
    current: Bytes,
    done: bool,
}

impl ReaderState {
    /// Next chunk; `Ok(None)` at a verified end.
    fn next(&mut self) -> io::Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        match self.rx.blocking_recv() {
            Some(Ok(Some(b))) => Ok(Some(b)),
            Some(Ok(None)) => {
                self.done = true;
                Ok(None)
            }
            Some(Err(e)) => Err(e.into_io()),
            None => Err(broken_pipe()),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| io::Error::other("pipeline state poisoned"))?;
        while st.current.is_empty() {
            match st.next()? {
                Some(b) => st.current = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(st.current.len());
        out[..n].copy_from_slice(&st.current[..n]);
        let _ = st.current.split_to(n);
        Ok(n)
    }
}

/// Read the stored bytes of `record` from `tier`, checking size and SHA-256 at the end.
/// Chunks go to `tx`; the last message is `Ok(None)` when everything matched.
async fn hash_stage(
    tier: Arc<dyn StorageTier>,
    record: ArtifactRecord,
    tx: mpsc::Sender<std::result::Result<Option<Bytes>, Error>>,
    progress: Progress,
) {
    let res: Result<()> = async {
        let name = tier.name().to_owned();
        let mut r = stored_reader(tier.as_ref(), &record).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(CHUNK);
            while buf.len() < CHUNK {
                let n = r
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| storage_io(&name, &record.key, "download", e))?;
                if n == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            hasher.update(&buf);
            size += buf.len() as u64;
            progress.advance(&record.key, buf.len() as u64);
            if tx.send(Ok(Some(buf.freeze()))).await.is_err() {
                return Ok(());
            }
        }
        check_digest(&name, &record, size, &hex::encode(hasher.finalize()))
    }
    .await;
    let last = match res {
        Ok(()) => Ok(None),
        Err(e) => Err(e),
    };
    let _ = tx.send(last).await;
}

fn check_digest(tier: &str, record: &ArtifactRecord, size: u64, sha: &str) -> Result<()> {
    if size != record.size {
        let what = if size < record.size {
            "truncated"
        } else {
            "longer than recorded"
        };
        return Err(Error::integrity(format!(
            "artifact is {what}: {size} bytes stored, {} recorded",
            record.size
        ))
        .with_context("tier", tier)
        .with_context("key", &record.key));
    }
    if sha != record.sha256 {
        return Err(Error::integrity(format!(
            "checksum mismatch: stored bytes hash to {sha}, manifest says {}",
            record.sha256
        ))
        .with_context("tier", tier)
        .with_context("key", &record.key)
        .with_hint("the artifact is corrupt on this tier; restore from another tier"));
    }
    Ok(())
}

/// The stored bytes of `record`: the whole object, or its slice of a pack.
pub(crate) async fn stored_reader(
    tier: &dyn StorageTier,
    record: &ArtifactRecord,
) -> Result<BoxRead> {
    match record.offset {
        Some(offset) => tier.reader_range(&record.key, offset, record.size).await,
        None => tier.reader(&record.key).await,
    }
}

/// Check an artifact on a tier without decoding it: its size, its SHA-256 against the
/// record, and its `.sha256` sidecar (for a blob in a pack, the pack's sidecar is there).
///
/// # Errors
/// [`ErrorKind::Integrity`] naming the tier and key when anything disagrees;
/// storage errors when it cannot be read.
pub async fn verify_stored(
    tier: &dyn StorageTier,
    record: &ArtifactRecord,
    progress: &Progress,
) -> Result<()> {
    let name = tier.name().to_owned();
    let mut r = stored_reader(tier, record).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| storage_io(&name, &record.key, "download", e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        progress.advance(&record.key, n as u64);
    }
    check_digest(&name, record, size, &hex::encode(hasher.finalize()))?;
    verify_sidecar(tier, record).await
}

/// Check an artifact's `.sha256` sidecar against the record, without reading the artifact
/// (a restore that checks the artifact's bytes while it reads them does this up front).
///
/// # Errors
/// [`ErrorKind::Integrity`] naming the tier and the sidecar's key when it is missing or
/// disagrees; storage errors when it cannot be read.
pub async fn verify_sidecar(tier: &dyn StorageTier, record: &ArtifactRecord) -> Result<()> {
    let name = tier.name().to_owned();
    let sidecar_key = layout::sidecar_key(&record.key);
    let stored = match read_sidecar(tier, &record.key).await? {
        Sidecar::Missing => {
            return Err(Error::integrity("the .sha256 sidecar is missing")
                .with_context("tier", &name)
                .with_context("key", &sidecar_key));
        }
        Sidecar::Unusable => None,
        Sidecar::Digest(d) => Some(d),
    };
    let stored = stored.as_deref();
    if record.offset.is_some() {
        // The sidecar of a pack covers the whole pack, which a stored pack always has; the
        // blob's own bytes are checked against its record when read.
        if stored.is_none() {
            return Err(Error::integrity(
                "the pack's .sha256 sidecar does not name it (`sha256sum -c` would fail)",
            )
            .with_context("tier", &name)
            .with_context("key", &sidecar_key));
        }
        return Ok(());
    }
    if stored != Some(record.sha256.as_str()) {
        return Err(
            Error::integrity(
                "the .sha256 sidecar disagrees with the manifest (digest or file name; `sha256sum -c` would fail)",
            )
                .with_context("tier", &name)
                .with_context("key", &sidecar_key),
        );
    }
    Ok(())
}

/// What the `.sha256` sidecar of an object says.
pub(crate) enum Sidecar {
    /// There is none: the object's write was cut short (or it was never written).
    Missing,
    /// It is malformed or names another file.
    Unusable,
    /// The SHA-256 it gives for the object.
    Digest(String),
}

/// Read the `.sha256` sidecar of `key` on `tier`.
///
/// # Errors
/// Storage errors other than "not found".
pub(crate) async fn read_sidecar(tier: &dyn StorageTier, key: &str) -> Result<Sidecar> {
    let bytes = match tier.read_all(&layout::sidecar_key(key)).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Sidecar::Missing),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    Ok(layout::parse_sidecar_for(&text, key)
        .map_or(Sidecar::Unusable, |d| Sidecar::Digest(d.to_owned())))
}

/// Open `record` on `tier` for reading its raw bytes (decrypted, decompressed). The stream
/// ends with an [`ErrorKind::Integrity`] error instead of EOF if the stored bytes do not
/// match the record.
///
/// # Errors
/// Fails early only for problems known before reading (no keys for an encrypted artifact).
pub fn open_artifact(
    tier: Arc<dyn StorageTier>,
    record: &ArtifactRecord,
    keys: &AgeKeys,
    progress: Progress,
) -> Result<BoxRead> {
    if record.encryption.is_some() && !keys.can_decrypt() {
        if let Some(problem) = keys.identity_problem() {
            return Err(Error::new(
                ErrorKind::Decrypt,
                format!("the artifact is encrypted and {problem}"),
            )
            .with_context("key", &record.key));
        }
        return Err(Error::new(
            ErrorKind::Decrypt,
            "the artifact is encrypted and no age identity or passphrase is configured",
        )
        .with_context("key", &record.key)
        .with_hint("set encryption.identity_file (or ZDR_AGE_PASSPHRASE)"));
    }
    let (stored_tx, stored_rx) = mpsc::channel(DEPTH);
    let (out_tx, mut out_rx) = mpsc::channel::<Item>(DEPTH);
    tokio::spawn(hash_stage(
        tier.clone(),
        record.clone(),
        stored_tx,
        progress,
    ));

    let record = record.clone();
    let keys = keys.clone();
    let tier_name = tier.name().to_owned();
    tokio::task::spawn_blocking(move || {
        let state = Arc::new(Mutex::new(ReaderState {
            rx: stored_rx,
            current: Bytes::new(),
            done: false,
        }));
        let res = decode_stage(&state, &record, &keys, &out_tx);
        if let Err(e) = res {
            let e = e
                .with_context("tier", &tier_name)
                .with_context("key", &record.key);
            let _ = out_tx.blocking_send(Err(e));
        }
    });

    let stream = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx)).map_err_into_io();
    Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
}

trait MapErrIntoIo: Sized {
    fn map_err_into_io(self) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin;
}

impl<S: futures::Stream<Item = Item> + Send + Unpin> MapErrIntoIo for S {
    fn map_err_into_io(self) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + Unpin {
        use futures::StreamExt;
        self.map(|r| r.map_err(Error::into_io))
    }
}

/// A decoder failed. If the stored bytes also fail their checksum, that is the cause to
/// report; otherwise a decoder failing on stored data means the data is corrupt.
fn decode_error(state: &Arc<Mutex<ReaderState>>, e: io::Error, what: &str) -> Error {
    let inner = Error::from_io(e, what.to_owned());
    if inner.kind() != ErrorKind::Io && inner.kind() != ErrorKind::Integrity {
        return inner; // a storage or decryption error travelling through the decoder
    }
    if let Ok(mut st) = state.lock() {
        loop {
            match st.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    let cause = Error::from_io(e, "reading artifact failed");
                    if cause.kind() == ErrorKind::Integrity {
                        return cause;
                    }
                    break;
                }
            }
        }
    }
    Error::integrity(format!("{what}: {inner}"))
}

fn decode_stage(
    state: &Arc<Mutex<ReaderState>>,
    record: &ArtifactRecord,
    keys: &AgeKeys,
    out: &mpsc::Sender<Item>,
) -> Result<()> {
    let input = ChunkReader {
        state: state.clone(),
    };
    let decrypted: Box<dyn Read> = if record.encryption.is_some() {
        Box::new(keys.decrypt(std::io::BufReader::with_capacity(CHUNK, input))?)
    } else {
        Box::new(input)
    };
    let mut decoded: Box<dyn Read> = match record.compression {
        Compression::None => decrypted,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(CHUNK, decrypted),
        )),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(decrypted)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(decrypted)
                .map_err(|e| Error::from_io(e, "cannot start zstd decoder"))?,
        ),
    };
    let what = format!("decoding the {} stream failed", record.compression);
    loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        let mut filled = 0;
        while filled < CHUNK {
            let n = match decoded.read(&mut buf[filled..]) {
                Ok(n) => n,
                Err(e) => return Err(decode_error(state, e, &what)),
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        if out.blocking_send(Ok(buf.freeze())).is_err() {
            return Ok(()); // the consumer stopped reading
        }
    }
    drop(decoded);
    // The decoder is done; the stored stream must be too, and its checksum must match.
    let mut st = state
        .lock()
        .map_err(|_| Error::unexpected("pipeline state poisoned"))?;
    let mut trailing = st.current.len() as u64;
    while let Some(b) = st
        .next()
        .map_err(|e| Error::from_io(e, "reading artifact failed"))?
    {
        trailing += b.len() as u64;
    }
    if trailing > 0 {
        return Err(Error::integrity(format!(
            "{trailing} bytes of trailing data after the end of the compressed stream"
        )));
    }
    Ok(())
}
