//! An lz4 frame compressed on several threads.
//!
//! The frame is the one `lz4_flex::frame::FrameEncoder` writes with independent blocks and
//! no content checksum, so `lz4 -d`, `lz4_flex` and every other frame decoder read it. The
//! blocks are independent by the format's definition (`B.Indep`), so each one is compressed
//! by whichever worker is free and they are written back in order. At most `workers + 1`
//! blocks are in flight, so memory stays at a few blocks whatever the size of the artifact.
//!
//! Threads are started only once a second block is needed: an artifact smaller than one
//! block (most WAL-less config files, every sidecar) is compressed on the caller's thread.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use lz4_flex::block::{CompressTable, compress_into_with_table, get_maximum_output_size};
use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

use crate::pipeline::Stage;

/// Uncompressed bytes per block; the frame header announces blocks of at most 4 MiB.
pub(crate) const BLOCK: usize = 1 << 20;
/// The high bit of a block's size: the block is stored uncompressed.
const UNCOMPRESSED: u32 = 1 << 31;

struct Job {
    input: Vec<u8>,
    reply: SyncSender<io::Result<Block>>,
}

/// A compressed block, framed (size word + data), and the input buffer to reuse.
struct Block {
    framed: Vec<u8>,
    input: Vec<u8>,
}

/// The frame's header: what `FrameEncoder` writes before the first block with this setup
/// (worked out once per process).
fn header() -> io::Result<&'static [u8]> {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    let h = HEADER.get_or_init(|| reference_header().unwrap_or_default());
    if h.is_empty() {
        return Err(io::Error::other("unexpected lz4 frame layout"));
    }
    Ok(h)
}

fn reference_header() -> io::Result<Vec<u8>> {
    let info = FrameInfo::new()
        .block_size(BlockSize::Max4MB)
        .block_mode(BlockMode::Independent)
        .content_checksum(false);
    let mut empty = FrameEncoder::with_frame_info(info, Vec::new())
        .finish()
        .map_err(io::Error::other)?;
    // An empty frame is the header and the end mark (four zero bytes).
    let end = empty.len().saturating_sub(4);
    if end < 7 || empty[end..] != [0, 0, 0, 0] {
        return Err(io::Error::other("unexpected lz4 frame layout"));
    }
    empty.truncate(end);
    Ok(empty)
}

/// Compress one block into its framed form (little-endian size word, then the data; stored
/// as it is when compression would not make it smaller).
fn compress(input: &[u8], table: &mut CompressTable, out: &mut Vec<u8>) -> io::Result<()> {
    out.clear();
    out.resize(4 + get_maximum_output_size(input.len()), 0);
    let n = compress_into_with_table(input, &mut out[4..], table).map_err(io::Error::other)?;
    if n < input.len() {
        let size = u32::try_from(n).map_err(io::Error::other)?;
        out[..4].copy_from_slice(&size.to_le_bytes());
        out.truncate(4 + n);
    } else {
        let size = u32::try_from(input.len()).map_err(io::Error::other)? | UNCOMPRESSED;
        out.truncate(4);
        out[..4].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(input);
    }
    Ok(())
}

/// The stage: buffers one block, hands full blocks to the workers, writes results in order.
pub(crate) struct ParLz4 {
    inner: Option<Box<dyn Stage>>,
    workers: usize,
    block: Vec<u8>,
    spare: Vec<Vec<u8>>,
    header: &'static [u8],
    header_written: bool,
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    pending: VecDeque<Receiver<io::Result<Block>>>,
    table: Option<CompressTable>,
}

impl ParLz4 {
    /// A frame written into `inner`, its blocks compressed by `workers` threads (at least 2).
    pub(crate) fn new(inner: Box<dyn Stage>, workers: usize) -> io::Result<Self> {
        Ok(Self {
            inner: Some(inner),
            workers: workers.max(2),
            block: Vec::with_capacity(BLOCK),
            spare: Vec::new(),
            header: header()?,
            header_written: false,
            jobs: None,
            threads: Vec::new(),
            pending: VecDeque::new(),
            table: None,
        })
    }

    fn inner(&mut self) -> io::Result<&mut Box<dyn Stage>> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("lz4 stage already finished"))
    }

    /// Write `framed` below, after the frame header if it was not written yet.
    fn emit(&mut self, framed: &[u8]) -> io::Result<()> {
        if !self.header_written {
            self.header_written = true;
            let h = self.header;
            self.inner()?.write_all(h)?;
        }
        self.inner()?.write_all(framed)
    }

    fn start_workers(&mut self) -> io::Result<()> {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.workers {
            let rx = Arc::clone(&rx);
            let t = std::thread::Builder::new()
                .name(format!("zdr-lz4-{i}"))
                .spawn(move || worker(&rx))?;
            self.threads.push(t);
        }
        self.jobs = Some(tx);
        Ok(())
    }

    /// Write the oldest block in flight below.
    fn drain_one(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let block = rx
            .recv()
            .map_err(|_| io::Error::other("an lz4 worker stopped"))??;
        self.emit(&block.framed)?;
        self.spare.push(block.input);
        Ok(())
    }

    /// Hand the full block to a worker.
    fn submit(&mut self) -> io::Result<()> {
        while self.pending.len() > self.workers {
            self.drain_one()?;
        }
        if self.jobs.is_none() {
            self.start_workers()?;
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK));
        let input = std::mem::replace(&mut self.block, next);
        let (reply, rx) = sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the lz4 workers stopped"))?
            .send(Job { input, reply })
            .map_err(|_| io::Error::other("the lz4 workers stopped"))?;
        self.pending.push_back(rx);
        Ok(())
    }

    /// Write out everything: the partial block (on this thread when no worker was needed)
    /// and every block in flight.
    fn write_out(&mut self) -> io::Result<()> {
        if !self.block.is_empty() {
            if self.jobs.is_some() {
                self.submit()?;
            } else {
                let table = self.table.get_or_insert_with(CompressTable::default);
                let mut out = Vec::new();
                compress(&self.block, table, &mut out)?;
                self.block.clear();
                self.emit(&out)?;
            }
        }
        while !self.pending.is_empty() {
            self.drain_one()?;
        }
        Ok(())
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    let mut table = CompressTable::default();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let mut framed = Vec::new();
        let res = compress(&job.input, &mut table, &mut framed).map(|()| Block {
            framed,
            input: {
                let mut input = job.input;
                input.clear();
                input
            },
        });
        // The stage may be gone (an error above it); nothing waits for this block then.
        let _ = job.reply.send(res);
    }
}

impl Write for ParLz4 {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (BLOCK - self.block.len()).min(data.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner()?.flush()
    }
}

impl Stage for ParLz4 {
    fn finish_stage(mut self: Box<Self>) -> io::Result<()> {
        self.write_out()?;
        self.emit(&[0, 0, 0, 0])?;
        self.jobs = None;
        for t in self.threads.drain(..) {
            t.join()
                .map_err(|_| io::Error::other("an lz4 worker panicked"))?;
        }
        let inner = self
            .inner
            .take()
            .ok_or_else(|| io::Error::other("lz4 stage already finished"))?;
        inner.finish_stage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Collects what the stage writes.
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("poisoned"))?
                .extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Stage for Sink {
        fn finish_stage(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
    }

    fn encode(data: &[u8], workers: usize, piece: usize) -> io::Result<Vec<u8>> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut s = Box::new(ParLz4::new(Box::new(Sink(out.clone())), workers)?);
        for p in data.chunks(piece.max(1)) {
            s.write_all(p)?;
        }
        s.finish_stage()?;
        let frame = out.lock().map_err(|_| io::Error::other("poisoned"))?;
        Ok(frame.clone())
    }

    fn decode(frame: &[u8]) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        lz4_flex::frame::FrameDecoder::new(frame).read_to_end(&mut v)?;
        Ok(v)
    }

    /// Text-like bytes that compress, then random bytes that do not (stored blocks).
    fn mixed(len: usize) -> Vec<u8> {
        let mut v: Vec<u8> = (0..len / 2)
            .map(|i| b"row 17 | alpha beta gamma\n"[i % 26])
            .collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x.to_le_bytes()[0]);
        }
        v
    }

    #[test]
    fn frames_decode_to_the_input_whatever_the_sizes_and_workers() -> io::Result<()> {
        for (len, workers, piece) in [
            (0, 2, 1),
            (1, 2, 1),
            (BLOCK - 1, 2, 4096),
            (BLOCK, 2, BLOCK),
            (BLOCK + 1, 3, 65_536),
            (7 * BLOCK + 12_345, 2, 300_000),
            (9 * BLOCK, 4, 3 * BLOCK),
        ] {
            let data = mixed(len);
            let frame = encode(&data, workers, piece)?;
            assert!(
                decode(&frame)? == data,
                "len {len} workers {workers}: decoded bytes differ"
            );
        }
        Ok(())
    }

    #[test]
    fn the_frame_has_the_reference_encoder_header_and_compresses() -> io::Result<()> {
        let data = mixed(6 * BLOCK);
        let frame = encode(&data, 2, BLOCK)?;
        let h = header()?;
        assert_eq!(&frame[..h.len()], h);
        assert_eq!(&frame[..4], &[0x04, 0x22, 0x4d, 0x18], "lz4 frame magic");
        assert_eq!(&frame[frame.len() - 4..], &[0, 0, 0, 0], "end mark");
        // Half of the input compresses well, half is stored as it is.
        assert!(frame.len() < data.len() * 6 / 10, "{}", frame.len());
        assert!(frame.len() > data.len() / 2, "{}", frame.len());
        Ok(())
    }

    #[test]
    fn a_failing_stage_below_is_an_error_not_a_hang() -> io::Result<()> {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Stage for Broken {
            fn finish_stage(self: Box<Self>) -> io::Result<()> {
                Ok(())
            }
        }
        let mut s = ParLz4::new(Box::new(Broken), 2)?;
        let data = mixed(8 * BLOCK);
        match s.write_all(&data) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            Ok(()) => panic!("a write into a broken stage succeeded"),
        }
        Ok(())
    }
}
