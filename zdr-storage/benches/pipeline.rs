//! Throughput and memory benchmark of the streaming artifact pipeline (not a test).
//!
//! ```text
//! cargo bench -p zdr-storage --bench pipeline -- <mode> <file> [options]
//! ```
//!
//! Pipeline modes stream `<file>` (a `tokio::fs::File`, read in `--read-buf` pieces, never
//! whole) through a [`BackupSource`] into a [`Repository`] on an fs tier in a temporary
//! directory next to the file (or under `--tier-dir DIR`), then print one line:
//!
//! ```text
//! RESULT mode=hash-lz4 input_bytes=.. stored_bytes=.. seconds=.. mb_s=.. cpu_seconds=.. peak_rss_kib=..
//! ```
//!
//! `mb_s` is input bytes / 10^6 / seconds; `cpu_seconds` the CPU time of all the process's
//! threads over the same span; `peak_rss_kib` is the process's own `VmHWM`.
//!
//! * `store-none`, `hash-{none,lz4,zstd,gzip}[-age]`: time one `Repository::backup`
//!   (compression, optional age encryption to a fresh X25519 recipient, SHA-256, upload with
//!   fsync and rename, sidecar, manifest).
//! * `restore-{none,lz4,zstd,gzip}[-age]`: back up once (untimed), then time reading the
//!   artifact back through `Repository::open` (SHA-256 checked at the end) into a sink.
//! * `verify-{none,lz4,zstd,gzip}[-age]`: back up once, then time `Repository::verify` deep.
//!
//! Stage modes take the pipeline apart, single-threaded, reading `<file>` in 1 MiB pieces
//! with `std::fs::File`: `stage-read` (the `tokio::fs::File` read loop alone), `stage-sha2`,
//! `stage-lz4` (the pipeline's frame settings: 4 MiB blocks, content checksum),
//! `stage-lz4-nocheck` (its content checksum is the difference), `stage-lz4-block`
//! (`lz4_flex::block` alone, no frame), `stage-zstd`, `stage-lz4+sha2` (both, serially on one thread) and `stage-channel` (the
//! pipeline's two bounded channels and copies with no compression and no hash). With
//! `--in-memory`, `stage-sha2`, `stage-lz4*` (but `stage-lz4-block`), `stage-zstd` and
//! `stage-lz4+sha2` read the first 180 MiB of the file into memory before the clock starts
//! and go over them until as many bytes as the file holds went by: CPU cost without reads.
//!
//! `gen-realistic <file> --size BYTES [--seed N]` writes deterministic rows shaped like
//! `pg_dump` output of `docs` in `/work/shared/bench/reference-db.sql` (md5 hex, lorem
//! text, jsonb, timestamps, integers) alternating with `pgbench_accounts` rows in the
//! reference database's proportions; zstd -3 compresses it about 3.5:1.
//!
//! Options: `--tier fs|null` (`null` discards the stored bytes: the pipeline without disk),
//! `--tier-dir DIR`, `--read-buf BYTES` (default 1 MiB), `--zstd-workers N` (default 0),
//! `--lz4-workers N` (default: cores, at most 4).

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use zdr_core::{
    ArtifactSink, BackupKind, BackupRequest, BackupSource, BoxRead, BoxWrite, Component,
    Compression, Entry, Error, Progress, SourceFacts, StorageTier,
};
use zdr_storage::{AgeKeys, CHUNK, PipelineOptions, Repository, TierConfig, open_tier};

type BenchResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    // `cargo bench` appends `--bench` to the arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let Err(e) = run(&args) {
        eprintln!("pipeline bench: {e}");
        std::process::exit(1);
    }
}

struct Opts {
    mode: String,
    file: PathBuf,
    tier: String,
    tier_dir: Option<PathBuf>,
    read_buf: usize,
    zstd_workers: u32,
    lz4_workers: u32,
    size: Option<u64>,
    seed: u64,
    in_memory: bool,
}

fn usage() -> String {
    "usage: pipeline <mode> <file> [--tier fs|null] [--tier-dir DIR] [--read-buf BYTES] \
     [--zstd-workers N] [--lz4-workers N] [--in-memory] | gen-realistic <file> --size BYTES [--seed N]; \
     modes: store-none, hash-{none,lz4,zstd,gzip}[-age], restore-..., verify-..., \
     stage-{read,sha2,lz4,lz4-nocheck,lz4-block,zstd,lz4+sha2,channel}"
        .to_owned()
}

fn parse(args: &[String]) -> BenchResult<Opts> {
    let mut pos = Vec::new();
    let mut o = Opts {
        mode: String::new(),
        file: PathBuf::new(),
        tier: "fs".to_owned(),
        tier_dir: None,
        read_buf: 1 << 20,
        zstd_workers: 0,
        lz4_workers: zdr_storage::default_lz4_workers(),
        size: None,
        seed: 1,
        in_memory: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--tier" => o.tier = val()?,
            "--tier-dir" => o.tier_dir = Some(PathBuf::from(val()?)),
            "--read-buf" => o.read_buf = val()?.parse()?,
            "--zstd-workers" => o.zstd_workers = val()?.parse()?,
            "--lz4-workers" => o.lz4_workers = val()?.parse()?,
            "--size" => o.size = Some(parse_size(&val()?)?),
            "--seed" => o.seed = val()?.parse()?,
            "--in-memory" => o.in_memory = true,
            "-h" | "--help" => return Err(usage().into()),
            s if s.starts_with("--") => {
                return Err(format!("unknown option {s}; {}", usage()).into());
            }
            _ => pos.push(a.clone()),
        }
    }
    let [mode, file] = pos.as_slice() else {
        return Err(usage().into());
    };
    o.mode = mode.clone();
    o.file = PathBuf::from(file);
    if o.read_buf == 0 {
        return Err("--read-buf must be positive".into());
    }
    Ok(o)
}

fn parse_size(s: &str) -> BenchResult<u64> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    Ok(num.parse::<u64>()? * mult)
}

fn run(args: &[String]) -> BenchResult<()> {
    let o = parse(args)?;
    if o.mode == "gen-realistic" {
        let size = o.size.ok_or("gen-realistic needs --size")?;
        return gen_realistic(&o.file, size, o.seed);
    }
    if let Some(stage) = o.mode.strip_prefix("stage-") {
        return run_stage(stage, &o);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_pipeline(&o))
}

// ---------------------------------------------------------------------------------------
// Pipeline modes
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Backup,
    Restore,
    Verify,
}

fn parse_mode(mode: &str) -> BenchResult<(Op, Compression, bool)> {
    let (op, rest) = mode.split_once('-').ok_or_else(usage)?;
    let op = match op {
        "store" | "hash" => Op::Backup,
        "restore" => Op::Restore,
        "verify" => Op::Verify,
        _ => return Err(format!("unknown mode {mode}; {}", usage()).into()),
    };
    let (comp, age) = match rest.strip_suffix("-age") {
        Some(c) => (c, true),
        None => (rest, false),
    };
    let comp = match comp {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        "gzip" => Compression::Gzip,
        _ => return Err(format!("unknown compression in mode {mode}; {}", usage()).into()),
    };
    Ok((op, comp, age))
}

/// Streams one file into one artifact.
struct FileSource {
    component: Component,
    path: PathBuf,
    read_buf: usize,
}

#[async_trait]
impl BackupSource for FileSource {
    fn component(&self) -> &Component {
        &self.component
    }

    async fn backup(
        &self,
        _req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        _progress: &Progress,
    ) -> zdr_core::Result<SourceFacts> {
        let io = |what: &'static str| move |e| Error::from_io(e, what);
        let mut f = tokio::fs::File::open(&self.path)
            .await
            .map_err(io("open input"))?;
        let mut w = sink.create("data", "bin").await?;
        let mut buf = vec![0u8; self.read_buf];
        let mut total = 0u64;
        loop {
            let n = f.read(&mut buf).await.map_err(io("read input"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.write_all(&buf[..n]).await.map_err(io("write artifact"))?;
        }
        w.finish().await?;
        Ok(SourceFacts {
            kind: BackupKind::Logical,
            facts: serde_json::json!({ "bytes": total }),
        })
    }
}

async fn run_pipeline(o: &Opts) -> BenchResult<()> {
    let (op, compression, age) = parse_mode(&o.mode)?;
    let input_bytes = std::fs::metadata(&o.file)?.len();

    // The tier lives in a temporary directory on the same disk as the input by default.
    let parent = match &o.tier_dir {
        Some(d) => d.clone(),
        None => o
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    std::fs::create_dir_all(&parent)?;
    let dir = tempfile::Builder::new()
        .prefix("zdr-bench-tier-")
        .tempdir_in(&parent)?;
    let tier: Arc<dyn StorageTier> = match o.tier.as_str() {
        "fs" => open_tier(
            "bench",
            &TierConfig::Fs {
                root: dir.path().to_path_buf(),
            },
        )?,
        "null" if op == Op::Backup => Arc::new(NullTier),
        "null" => return Err("--tier null only works for hash and store modes".into()),
        t => return Err(format!("unknown tier {t}").into()),
    };

    let keys = if age {
        let (secret, public) = AgeKeys::generate_identity();
        AgeKeys::none()
            .with_recipients(&[public])?
            .with_identities_text(&secret, "generated")?
    } else {
        AgeKeys::none()
    };
    let repo = Repository::new(
        tier,
        PipelineOptions {
            compression,
            level: None,
            zstd_workers: o.zstd_workers,
            lz4_workers: o.lz4_workers,
            keys,
            ..PipelineOptions::default()
        },
    );
    let source = FileSource {
        component: Component::new("bench")?,
        path: o.file.clone(),
        read_buf: o.read_buf,
    };

    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let manifest = repo.backup(&source, "daily", &Progress::none()).await?;
    let mut seconds = started.elapsed().as_secs_f64();
    let mut cpu = cpu_seconds() - cpu0;
    let record = manifest
        .artifacts
        .first()
        .ok_or("the backup has no artifact")?
        .clone();
    if record.raw_size != input_bytes {
        return Err(format!(
            "the artifact holds {} raw bytes, the file {input_bytes}",
            record.raw_size
        )
        .into());
    }
    match op {
        Op::Backup => {}
        Op::Restore => {
            let (started, cpu0) = (Instant::now(), cpu_seconds());
            let reader = repo.open(&record, Progress::none())?;
            let mut reader = tokio::io::BufReader::with_capacity(CHUNK, reader);
            let n = tokio::io::copy_buf(&mut reader, &mut tokio::io::sink()).await?;
            seconds = started.elapsed().as_secs_f64();
            cpu = cpu_seconds() - cpu0;
            if n != input_bytes {
                return Err(format!("restored {n} bytes, expected {input_bytes}").into());
            }
        }
        Op::Verify => {
            let (started, cpu0) = (Instant::now(), cpu_seconds());
            repo.verify(&manifest, true, &Progress::none()).await?;
            seconds = started.elapsed().as_secs_f64();
            cpu = cpu_seconds() - cpu0;
        }
    }
    report(&o.mode, input_bytes, record.size, seconds, cpu);
    drop(repo);
    dir.close()?;
    Ok(())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the whole process (every thread) so far, in seconds, from `/proc/self/stat`
/// (utime + stime in clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            #[allow(clippy::cast_precision_loss)]
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn report(mode: &str, input: u64, stored: u64, seconds: f64, cpu: f64) {
    #[allow(clippy::cast_precision_loss)]
    let mb_s = input as f64 / 1e6 / seconds;
    println!(
        "RESULT mode={mode} input_bytes={input} stored_bytes={stored} seconds={seconds:.3} \
         mb_s={mb_s:.1} cpu_seconds={cpu:.2} peak_rss_kib={}",
        peak_rss_kib()
    );
}

/// A tier that keeps nothing: measures the pipeline without disk I/O.
struct NullTier;

#[async_trait]
impl StorageTier for NullTier {
    fn name(&self) -> &str {
        "null"
    }
    async fn writer(&self, _key: &str) -> zdr_core::Result<BoxWrite> {
        Ok(Box::new(tokio::io::sink()))
    }
    async fn reader(&self, _key: &str) -> zdr_core::Result<BoxRead> {
        Err(Error::not_found("the null tier keeps nothing"))
    }
    async fn read_all(&self, _key: &str) -> zdr_core::Result<Vec<u8>> {
        Err(Error::not_found("the null tier keeps nothing"))
    }
    async fn write_all(&self, _key: &str, _bytes: Vec<u8>) -> zdr_core::Result<()> {
        Ok(())
    }
    async fn list(&self, _prefix: &str) -> zdr_core::Result<Vec<Entry>> {
        Ok(Vec::new())
    }
    async fn stat(&self, _key: &str) -> zdr_core::Result<Option<Entry>> {
        Ok(None)
    }
    async fn delete(&self, _key: &str) -> zdr_core::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Stage modes
// ---------------------------------------------------------------------------------------

/// Counts the bytes written to it.
#[derive(Default)]
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of the file kept in memory by `--in-memory`: two of the generator's section pairs.
const SAMPLE: u64 = 180 << 20;

/// Read `file` in 1 MiB pieces, calling `f` on each; or, with a `sample` of it in memory,
/// go over the sample again and again until as many bytes as the file holds went by.
fn each_piece(
    file: &Path,
    sample: Option<&[u8]>,
    mut f: impl FnMut(&[u8]) -> BenchResult<()>,
) -> BenchResult<u64> {
    if let Some(sample) = sample {
        let size = std::fs::metadata(file)?.len();
        let mut total = 0u64;
        while total < size {
            for piece in sample.chunks(CHUNK) {
                #[allow(clippy::cast_possible_truncation)]
                let n = (size - total).min(piece.len() as u64) as usize;
                f(&piece[..n])?;
                total += n as u64;
                if total == size {
                    break;
                }
            }
        }
        return Ok(total);
    }
    let mut input = std::fs::File::open(file)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        f(&buf[..n])?;
    }
}

fn lz4_info(checksum: bool) -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .content_checksum(checksum)
}

fn run_stage(stage: &str, o: &Opts) -> BenchResult<()> {
    let file = o.file.as_path();
    let sample = if o.in_memory {
        let mut v = Vec::new();
        std::fs::File::open(file)?
            .take(SAMPLE)
            .read_to_end(&mut v)?;
        Some(v)
    } else {
        None
    };
    let sample = sample.as_deref();
    let (started, cpu0) = (Instant::now(), cpu_seconds());
    let (input, stored) = match stage {
        "read" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let read_buf = o.read_buf;
            let n = rt.block_on(async {
                let mut f = tokio::fs::File::open(file).await?;
                let mut buf = vec![0u8; read_buf];
                let mut total = 0u64;
                loop {
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(total);
                    }
                    total += n as u64;
                }
            })?;
            (n, n)
        }
        "sha2" => {
            let mut h = Sha256::new();
            let n = each_piece(file, sample, |b| {
                h.update(b);
                Ok(())
            })?;
            std::hint::black_box(h.finalize());
            (n, n)
        }
        "lz4" | "lz4-nocheck" => {
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                lz4_info(stage == "lz4"),
                Counter(0),
            );
            let n = each_piece(file, sample, |b| Ok(enc.write_all(b)?))?;
            let c = enc.finish()?;
            (n, c.0)
        }
        "lz4-block" => {
            // Raw block compression of 4 MiB blocks, no frame, no checksum, no copies.
            let mut input = std::fs::File::open(file)?;
            let block = 4 << 20;
            let mut buf = vec![0u8; block];
            let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(block)];
            let (mut n, mut c) = (0u64, 0u64);
            loop {
                let mut filled = 0;
                while filled < block {
                    let k = input.read(&mut buf[filled..])?;
                    if k == 0 {
                        break;
                    }
                    filled += k;
                }
                if filled == 0 {
                    break;
                }
                n += filled as u64;
                c += lz4_flex::block::compress_into(&buf[..filled], &mut out)? as u64;
            }
            (n, c)
        }
        "zstd" => {
            let mut enc = zstd::stream::write::Encoder::new(Counter(0), 3)?;
            enc.include_checksum(true)?;
            let n = each_piece(file, sample, |b| Ok(enc.write_all(b)?))?;
            let c = enc.finish()?;
            (n, c.0)
        }
        "lz4+sha2" => {
            struct Hashing(Sha256, u64);
            impl Write for Hashing {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.update(b);
                    self.1 += b.len() as u64;
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(
                lz4_info(true),
                Hashing(Sha256::new(), 0),
            );
            let n = each_piece(file, sample, |b| Ok(enc.write_all(b)?))?;
            let h = enc.finish()?;
            let c = h.1;
            std::hint::black_box(h.0.finalize());
            (n, c)
        }
        "channel" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let n = std::fs::metadata(file)?.len();
            rt.block_on(channel_only(n))?;
            (n, n)
        }
        s => return Err(format!("unknown stage {s}; {}", usage()).into()),
    };
    let seconds = started.elapsed().as_secs_f64();
    report(&o.mode, input, stored, seconds, cpu_seconds() - cpu0);
    Ok(())
}

/// The pipeline's data movement without compression, hashing or storage: `total` bytes
/// from a 1 MiB buffer in memory, into `BytesMut` chunks of [`CHUNK`], over a bounded
/// channel to a blocking thread that copies them into fresh `Vec` chunks (as the pipeline's
/// last writer stage does), over a second channel to an async task that drops them.
async fn channel_only(total: u64) -> BenchResult<()> {
    const DEPTH: usize = 4;
    let (raw_tx, mut raw_rx) = mpsc::channel::<Bytes>(DEPTH);
    let (enc_tx, mut enc_rx) = mpsc::channel::<Bytes>(DEPTH);
    let encode = tokio::task::spawn_blocking(move || {
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK);
        while let Some(b) = raw_rx.blocking_recv() {
            let mut rest = &b[..];
            while !rest.is_empty() {
                let n = (CHUNK - buf.len()).min(rest.len());
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if buf.len() >= CHUNK {
                    let chunk = std::mem::replace(&mut buf, Vec::with_capacity(CHUNK));
                    if enc_tx.blocking_send(Bytes::from(chunk)).is_err() {
                        return;
                    }
                }
            }
        }
        if !buf.is_empty() {
            let _ = enc_tx.blocking_send(Bytes::from(buf));
        }
    });
    let upload = tokio::spawn(async move {
        let mut sink = Counter(0);
        while let Some(b) = enc_rx.recv().await {
            sink.0 += std::hint::black_box(&b).len() as u64;
        }
        Ok::<_, std::io::Error>(sink.0)
    });
    let piece = vec![0x5au8; 1 << 20];
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut left = total;
    while left > 0 {
        #[allow(clippy::cast_possible_truncation)]
        let n = left.min(piece.len() as u64) as usize;
        let mut data = &piece[..n];
        while !data.is_empty() {
            let k = (CHUNK - buf.len()).min(data.len());
            buf.extend_from_slice(&data[..k]);
            data = &data[k..];
            if buf.len() >= CHUNK {
                raw_tx.send(buf.split().freeze()).await?;
            }
        }
        left -= n as u64;
    }
    if !buf.is_empty() {
        raw_tx.send(buf.split().freeze()).await?;
    }
    drop(raw_tx);
    encode.await?;
    let got = upload.await??;
    if got != total {
        return Err(format!("channel moved {got} of {total} bytes").into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Realistic data
// ---------------------------------------------------------------------------------------

/// splitmix64: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 32 hex digits of 128 pseudo-random bits, like `md5(...)`.
fn md5ish(out: &mut Vec<u8>, a: u64, b: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for w in [a, b] {
        for i in (0..16).rev() {
            #[allow(clippy::cast_possible_truncation)]
            out.push(HEX[((w >> (i * 4)) & 0xf) as usize]);
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Bytes of `docs` rows, then of `pgbench_accounts` rows, in each section pair: the
/// proportions of the reference database (4 M `docs` rows of about 225 bytes, 5 M
/// `pgbench_accounts` rows of about 98 bytes), repeated so that any large window of the
/// file has the same mix.
const DOCS_SECTION: u64 = 58 << 20;
const ACCOUNTS_SECTION: u64 = 32 << 20;

/// Writes at most `size` bytes in total.
struct Capped<W: Write> {
    out: W,
    written: u64,
    size: u64,
}

impl<W: Write> Capped<W> {
    fn full(&self) -> bool {
        self.written >= self.size
    }
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        #[allow(clippy::cast_possible_truncation)]
        let take = (self.size - self.written).min(b.len() as u64) as usize;
        self.out.write_all(&b[..take])?;
        self.written += take as u64;
        Ok(())
    }
}

/// What `pg_dump` writes for the reference database (`pgbench -i -s 50` plus `docs` of
/// reference-db.sql) in COPY format, exactly `size` bytes: sections of `docs` rows
/// (`id \t body \t meta \t ts \t n`: md5 hex, lorem text, jsonb, timestamptz, integer)
/// alternating with sections of `pgbench_accounts` rows (`aid \t bid \t abalance \t filler`,
/// the filler being 84 blanks).
fn gen_realistic(path: &Path, size: u64, seed: u64) -> BenchResult<()> {
    let started = Instant::now();
    let file = std::fs::File::create(path)?;
    let mut out = Capped {
        out: std::io::BufWriter::with_capacity(8 << 20, file),
        written: 0,
        size,
    };
    let mut rng = Rng(seed);
    // md5((g % 5000)::text): 5000 distinct tags.
    let tags: Vec<Vec<u8>> = (0..5000u64)
        .map(|i| {
            let mut t = Vec::with_capacity(32);
            md5ish(&mut t, mix(i ^ 0xa5a5), mix(i.wrapping_add(7)));
            t
        })
        .collect();
    // now() for the dump: 2026-01-15 00:00:00 UTC.
    let now_us: i64 = 1_768_435_200 * 1_000_000;
    let year_us: i64 = 365 * 86_400 * 1_000_000;
    out.put(b"--\n-- PostgreSQL database dump\n--\n\n")?;
    let mut row = Vec::with_capacity(512);
    let (mut g, mut aid) = (1u64, 1u64);
    while !out.full() {
        out.put(b"COPY public.docs (id, body, meta, ts, n) FROM stdin;\n")?;
        let end = out.written + DOCS_SECTION;
        while out.written < end && !out.full() {
            row.clear();
            write!(row, "{g}\t")?;
            md5ish(&mut row, rng.next(), rng.next());
            row.push(b' ');
            md5ish(&mut row, rng.next(), rng.next());
            row.extend_from_slice(b" lorem ipsum dolor sit amet ");
            md5ish(&mut row, mix(g), mix(g ^ 0x5555_5555));
            write!(row, "\t{{\"k\": {}, \"tag\": \"", g % 1000)?;
            #[allow(clippy::cast_possible_truncation)]
            row.extend_from_slice(&tags[(g % 5000) as usize]);
            row.extend_from_slice(b"\"}\t");
            #[allow(clippy::cast_possible_wrap)]
            let ts = now_us - (rng.next() >> 1) as i64 % year_us;
            let (secs, micros) = (ts.div_euclid(1_000_000), ts.rem_euclid(1_000_000));
            let (y, mo, d) = civil(secs.div_euclid(86_400));
            let sod = secs.rem_euclid(86_400);
            write!(
                row,
                "{y:04}-{mo:02}-{d:02} {:02}:{:02}:{:02}",
                sod / 3600,
                sod / 60 % 60,
                sod % 60
            )?;
            if micros != 0 {
                let frac = format!("{micros:06}");
                write!(row, ".{}", frac.trim_end_matches('0'))?;
            }
            writeln!(row, "+00\t{}", rng.next() % 1_000_001)?;
            out.put(&row)?;
            g += 1;
        }
        out.put(b"\\.\n\n")?;
        out.put(b"COPY public.pgbench_accounts (aid, bid, abalance, filler) FROM stdin;\n")?;
        let end = out.written + ACCOUNTS_SECTION;
        while out.written < end && !out.full() {
            row.clear();
            writeln!(row, "{aid}\t{}\t0\t{:84}", (aid - 1) / 100_000 + 1, "")?;
            out.put(&row)?;
            aid += 1;
        }
        out.put(b"\\.\n\n")?;
    }
    let (written, mut out) = (out.written, out.out);
    out.flush()?;
    eprintln!(
        "gen-realistic: {written} bytes, {} docs and {} pgbench_accounts rows in {:.1} s",
        g - 1,
        aid - 1,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
