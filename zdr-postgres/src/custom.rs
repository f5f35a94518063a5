//! Data offsets for custom-format dumps that were written to a pipe.
//!
//! `pg_dump -Fc` writes its table of contents (TOC) first. When its output is a file it can
//! seek in, it goes back at the end and records in each TOC entry where that entry's data
//! block starts; when the output is a pipe (every zdr backup: the dump streams into the
//! pipeline), the entries say "position not set". `pg_restore` then has to find every block
//! by reading the chunk headers of all blocks before it — each `pg_restore -j` worker again
//! for every table it loads — and cannot order the tables largest first, because it does
//! not know their sizes.
//!
//! [`OffsetScan`] reads the dump while it is spooled (no second read), recognises the
//! header, the TOC entries and the data blocks' framing, and [`OffsetScan::finish`] returns
//! the positions to write into the spool's TOC: exactly what `pg_dump` writes into a dump it
//! can seek in. Anything the scanner does not recognise (an archive version it does not
//! know, framing that does not add up) makes it give up; the spool is then left as the
//! stream delivered it, which `pg_restore` reads as before. The format is the one
//! `pg_backup_archiver.c` and `pg_backup_custom.c` read (archive versions 1.12 to 1.16:
//! PostgreSQL 11 to 17).

use std::collections::HashMap;

/// `K_OFFSET_POS_NOT_SET`: the entry has data whose position was not recorded.
const POS_NOT_SET: u8 = 1;
/// `K_OFFSET_POS_SET`: the entry's data block starts at the recorded position.
const POS_SET: u8 = 2;
/// `K_OFFSET_NO_DATA`: the entry has no data.
const NO_DATA: u8 = 3;
/// `BLK_DATA`: a block of one table's `COPY` data.
const BLK_DATA: u8 = 1;
/// `BLK_BLOBS`: a block of large objects.
const BLK_BLOBS: u8 = 3;
/// `archCustom` in the header.
const FORMAT_CUSTOM: u8 = 1;
/// Archive versions understood (`MAKE_ARCHIVE_VERSION`): 1.12.0 to 1.16.x.
const MIN_VERSION: u32 = version(1, 12, 0);
const MAX_VERSION: u32 = version(1, 16, 255);
/// A single TOC entry (or the header) larger than this makes the scanner give up rather
/// than hold it.
const MAX_HELD: usize = 64 << 20;

const fn version(major: u8, minor: u8, rev: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | rev as u32
}

/// Where the scanner is in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    TocCount,
    Toc {
        left: u64,
    },
    BlockHeader,
    /// Data chunks of a table block.
    Chunks,
    /// The next large object's OID of a blobs block (0 ends the block).
    LoOid,
    /// Data chunks of one large object.
    LoChunks,
}

/// One TOC entry's data-position field.
#[derive(Debug, Clone)]
struct OffsetField {
    dump_id: i64,
    /// Absolute position of the field's flag byte.
    at: u64,
    flag: u8,
    /// What the entry is (`TABLE`, `TABLE DATA`, `INDEX`, ...), its section and the entries
    /// it depends on.
    info: EntryInfo,
}

/// What the loader needs to know of a TOC entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EntryInfo {
    /// The entry's dump id.
    pub(crate) dump_id: i64,
    /// Its kind (`TABLE`, `TABLE DATA`, `INDEX`, `CONSTRAINT`, `FK CONSTRAINT`, ...).
    pub(crate) desc: String,
    /// `SECTION_PRE_DATA` (2), `SECTION_DATA` (3), `SECTION_POST_DATA` (4), or 1 (none).
    pub(crate) section: i64,
    /// The dump ids it depends on.
    pub(crate) deps: Vec<i64>,
    /// A `TABLE DATA` entry's `COPY ... FROM stdin;` statement.
    pub(crate) copy_stmt: Option<String>,
    /// The SQL of the entries that set up a restore session (`ENCODING`, `STDSTRINGS`,
    /// `SEARCHPATH`); `None` for every other entry.
    pub(crate) session_sql: Option<String>,
    /// A `TABLE DATA` entry's table: schema and name.
    pub(crate) table: Option<(String, String)>,
}

/// The TOC entries whose SQL every restore session runs first.
const SESSION_ENTRIES: [&str; 3] = ["ENCODING", "STDSTRINGS", "SEARCHPATH"];

/// `SECTION_PRE_DATA`.
pub(crate) const SECTION_PRE_DATA: i64 = 2;
/// `SECTION_POST_DATA`.
pub(crate) const SECTION_POST_DATA: i64 = 4;

/// One position to write into the spool: `bytes` at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patch {
    pub(crate) at: u64,
    pub(crate) bytes: Vec<u8>,
}

impl Patch {
    /// The offset part: written first, so a reader never sees the flag "set" with a partly
    /// written offset.
    pub(crate) fn offset(&self) -> (u64, &[u8]) {
        (self.at + 1, &self.bytes[1..])
    }

    /// The flag part, written last.
    pub(crate) fn flag(&self) -> (u64, &[u8]) {
        (self.at, &self.bytes[..1])
    }
}

/// The incremental reader of a custom-format archive; see the module docs.
#[derive(Debug)]
pub(crate) struct OffsetScan {
    state: State,
    /// Bytes consumed so far (absolute position of the next unread byte).
    pos: u64,
    /// Bytes of an incomplete unit, kept until the rest arrives.
    held: Vec<u8>,
    /// Data bytes still to pass over.
    skip: u64,
    version: u32,
    int_size: usize,
    off_size: usize,
    fields: Vec<OffsetField>,
    /// Dump id → index in `fields`.
    index: HashMap<i64, usize>,
    /// Data blocks seen: dump id → position of the block's type byte.
    blocks: HashMap<i64, u64>,
    /// Data blocks in the order they came: dump id, start, end (once read to its end).
    spans: Vec<Span>,
    /// Where the table of contents ends (the first data block starts).
    toc_end: Option<u64>,
    /// The header says the data blocks are not compressed.
    plain: bool,
    failed: Option<String>,
}

/// One data block of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// The TOC entry it belongs to.
    pub(crate) dump_id: i64,
    /// The position of its type byte.
    pub(crate) start: u64,
    /// The position just after its end marker, once read.
    pub(crate) end: Option<u64>,
}

/// What one parsing step did.
enum Step {
    /// A unit of `n` bytes was read.
    Read(usize),
    /// More bytes are needed.
    Short,
}

/// A reader over one slice that reports running short instead of failing.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    int_size: usize,
}

/// The cursor ran out of bytes.
struct Short;

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Short> {
        let b = *self.data.get(self.at).ok_or(Short)?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Short> {
        let end = self.at.checked_add(n).ok_or(Short)?;
        let s = self.data.get(self.at..end).ok_or(Short)?;
        self.at = end;
        Ok(s)
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, Short> {
        let negative = self.byte()? != 0;
        let mut v: i64 = 0;
        for (i, b) in self.take(self.int_size)?.iter().enumerate() {
            v |= i64::from(*b) << (8 * i);
        }
        Ok(if negative { v.wrapping_neg() } else { v })
    }

    /// `ReadStr`: `None` for NULL.
    fn str_bytes(&mut self) -> Result<Option<&[u8]>, Short> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        let n = usize::try_from(n).map_err(|_| Short)?;
        self.take(n).map(Some)
    }

    /// `ReadStr`: a length (negative: NULL), then that many bytes; passed over.
    fn skip_str(&mut self) -> Result<bool, Short> {
        let n = self.int()?;
        if n < 0 {
            return Ok(false);
        }
        let n = usize::try_from(n).map_err(|_| Short)?;
        self.take(n)?;
        Ok(true)
    }
}

/// A step outcome: `Short`, or a reason to give up.
enum Halt {
    Short,
    Bad(String),
}

impl From<Short> for Halt {
    fn from(_: Short) -> Self {
        Halt::Short
    }
}

impl OffsetScan {
    /// A scanner at the start of an archive.
    pub(crate) fn new() -> Self {
        Self {
            state: State::Head,
            pos: 0,
            held: Vec::new(),
            skip: 0,
            version: 0,
            int_size: 4,
            off_size: 8,
            fields: Vec::new(),
            index: HashMap::new(),
            blocks: HashMap::new(),
            spans: Vec::new(),
            toc_end: None,
            plain: false,
            failed: None,
        }
    }

    /// Whether the archive's data blocks hold the `COPY` text as it is (`pg_dump
    /// --compress=0`), known once the header was read.
    pub(crate) fn plain_data(&self) -> bool {
        self.plain
    }

    /// The size of the archive's integers (after the sign byte), known once the header was
    /// read.
    pub(crate) fn int_size(&self) -> usize {
        self.int_size
    }

    /// Where the table of contents ends, once it was read whole.
    pub(crate) fn toc_end(&self) -> Option<u64> {
        self.toc_end
    }

    /// Every TOC entry, in TOC order.
    pub(crate) fn entries(&self) -> Vec<EntryInfo> {
        self.fields.iter().map(|f| f.info.clone()).collect()
    }

    /// The data blocks seen so far, in archive order.
    pub(crate) fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The position to record for `dump_id`'s data block, if its entry has none yet and
    /// its block was seen: written as [`Patch::offset`], then [`Patch::flag`].
    pub(crate) fn patch_for(&self, dump_id: i64) -> Option<Patch> {
        let f = self.fields.get(*self.index.get(&dump_id)?)?;
        let start = *self.blocks.get(&dump_id)?;
        (f.flag == POS_NOT_SET).then(|| self.patch(f.at, start))
    }

    fn patch(&self, at: u64, start: u64) -> Patch {
        let mut bytes = Vec::with_capacity(1 + self.off_size);
        bytes.push(POS_SET);
        let mut v = start;
        for _ in 0..self.off_size {
            bytes.push((v & 0xff) as u8);
            v >>= 8;
        }
        Patch { at, bytes }
    }

    /// Whether the scanner gave up.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Why the scanner gave up, if it did (tests).
    #[cfg(test)]
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Read the next bytes of the archive.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        if self.held.is_empty() {
            let used = self.run(data);
            if self.failed.is_none() && used < data.len() {
                self.held.extend_from_slice(&data[used..]);
            }
        } else {
            let mut held = std::mem::take(&mut self.held);
            held.extend_from_slice(data);
            let used = self.run(&held);
            if used > 0 {
                held.drain(..used);
            }
            self.held = held;
        }
        if self.held.len() > MAX_HELD {
            self.give_up(format!(
                "an archive item larger than {} MiB at byte {}",
                MAX_HELD >> 20,
                self.pos
            ));
        }
    }

    /// The positions to record, once the whole archive was read: one per TOC entry whose
    /// data position was not set and whose block was found. Errors when the archive was
    /// not understood or did not end after a complete block.
    pub(crate) fn finish(self) -> Result<Vec<Patch>, String> {
        if let Some(f) = self.failed {
            return Err(f);
        }
        if self.state != State::BlockHeader || !self.held.is_empty() || self.skip != 0 {
            return Err(format!(
                "the archive ended inside an item ({:?}) at byte {}",
                self.state, self.pos
            ));
        }
        let mut patches = Vec::new();
        for f in &self.fields {
            if f.flag != POS_NOT_SET {
                continue;
            }
            let Some(&start) = self.blocks.get(&f.dump_id) else {
                return Err(format!(
                    "entry {} has data but no data block was found",
                    f.dump_id
                ));
            };
            patches.push(self.patch(f.at, start));
        }
        Ok(patches)
    }

    /// The data-block positions found so far, by dump id (tests).
    #[cfg(test)]
    pub(crate) fn block_starts(&self) -> &HashMap<i64, u64> {
        &self.blocks
    }

    /// The positions recorded in the TOC (flag `POS_SET`), by dump id (tests).
    #[cfg(test)]
    pub(crate) fn recorded(&self, data: &[u8]) -> HashMap<i64, u64> {
        self.fields
            .iter()
            .filter(|f| f.flag == POS_SET)
            .map(|f| {
                let at = usize::try_from(f.at).unwrap_or(usize::MAX);
                let mut v = 0u64;
                for i in 0..self.off_size {
                    v |= u64::from(data[at + 1 + i]) << (8 * i);
                }
                (f.dump_id, v)
            })
            .collect()
    }

    fn give_up(&mut self, why: String) {
        self.failed = Some(why);
        self.held = Vec::new();
    }

    /// Parse as much of `data` as possible; returns the bytes consumed.
    fn run(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        while at < data.len() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - at);
                self.skip -= n as u64;
                self.pos += n as u64;
                at += n;
                continue;
            }
            match self.step(&data[at..]) {
                Ok(Step::Read(n)) => {
                    self.pos += n as u64;
                    at += n;
                }
                Ok(Step::Short) => break,
                Err(why) => {
                    self.give_up(why);
                    break;
                }
            }
        }
        at
    }

    /// Read one unit at the start of `data`.
    fn step(&mut self, data: &[u8]) -> Result<Step, String> {
        let mut c = Cursor {
            data,
            at: 0,
            int_size: self.int_size,
        };
        let done = match self.state {
            State::Head => self.head(&mut c),
            State::TocCount => c.int().map_err(Halt::from).and_then(|n| {
                let left = u64::try_from(n)
                    .map_err(|_| Halt::Bad(format!("a negative TOC entry count {n}")))?;
                self.state = if left == 0 {
                    self.toc_end = Some(self.pos + c.at as u64);
                    State::BlockHeader
                } else {
                    State::Toc { left }
                };
                Ok(())
            }),
            State::Toc { left } => self.entry(&mut c, left),
            State::BlockHeader => self.block_header(&mut c),
            State::Chunks | State::LoChunks => c.int().map_err(Halt::from).and_then(|n| {
                match u64::try_from(n) {
                    Ok(0) => {
                        self.state = if self.state == State::Chunks {
                            self.end_block(self.pos + c.at as u64);
                            State::BlockHeader
                        } else {
                            State::LoOid
                        };
                    }
                    Ok(len) => self.skip = len,
                    Err(_) => return Err(Halt::Bad(format!("a negative chunk length {n}"))),
                }
                Ok(())
            }),
            State::LoOid => c.int().map_err(Halt::from).map(|oid| {
                self.state = if oid == 0 {
                    self.end_block(self.pos + c.at as u64);
                    State::BlockHeader
                } else {
                    State::LoChunks
                };
            }),
        };
        match done {
            Ok(()) => Ok(Step::Read(c.at)),
            Err(Halt::Short) => Ok(Step::Short),
            Err(Halt::Bad(why)) => Err(format!("{why} at byte {}", self.pos)),
        }
    }

    /// `ReadHead`.
    fn head(&mut self, c: &mut Cursor<'_>) -> Result<(), Halt> {
        if c.take(5)? != b"PGDMP" {
            return Err(Halt::Bad("not a custom-format archive".into()));
        }
        let major = c.byte()?;
        let minor = c.byte()?;
        let rev = c.byte()?;
        let v = version(major, minor, rev);
        if !(MIN_VERSION..=MAX_VERSION).contains(&v) {
            return Err(Halt::Bad(format!(
                "archive version {major}.{minor}.{rev} is not one this scanner knows"
            )));
        }
        let int_size = usize::from(c.byte()?);
        let off_size = usize::from(c.byte()?);
        if !(1..=8).contains(&int_size) || !(1..=8).contains(&off_size) {
            return Err(Halt::Bad(format!(
                "unusual integer ({int_size}) or offset ({off_size}) size"
            )));
        }
        if c.byte()? != FORMAT_CUSTOM {
            return Err(Halt::Bad("not the custom format".into()));
        }
        c.int_size = int_size;
        // The compression algorithm (0: none), or before 1.15 the zlib level (0: none).
        let plain = if v >= version(1, 15, 0) {
            c.byte()? == 0
        } else {
            c.int()? == 0
        };
        for _ in 0..7 {
            c.int()?; // creation time
        }
        c.skip_str()?; // database name
        c.skip_str()?; // server version
        c.skip_str()?; // pg_dump version
        self.version = v;
        self.int_size = int_size;
        self.off_size = off_size;
        self.plain = plain;
        self.state = State::TocCount;
        Ok(())
    }

    /// One `ReadToc` entry with the custom format's extra field (the data position).
    fn entry(&mut self, c: &mut Cursor<'_>, left: u64) -> Result<(), Halt> {
        let dump_id = c.int()?;
        if dump_id <= 0 {
            return Err(Halt::Bad(format!("TOC entry id {dump_id} out of range")));
        }
        c.int()?; // had dumper
        c.skip_str()?; // table oid
        c.skip_str()?; // oid
        let tag = c
            .str_bytes()?
            .map(|t| String::from_utf8_lossy(t).into_owned());
        let desc = c
            .str_bytes()?
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        let section = c.int()?;
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let defn = c.str_bytes()?;
        let session_sql = if SESSION_ENTRIES.contains(&desc.as_str()) {
            text(defn)
        } else {
            None
        };
        c.skip_str()?; // drop statement
        let copy_stmt = text(c.str_bytes()?).filter(|s| !s.is_empty());
        let namespace = c
            .str_bytes()?
            .map(|n| String::from_utf8_lossy(n).into_owned());
        let table = match (desc.as_str(), namespace, tag) {
            ("TABLE DATA", Some(n), Some(t)) => Some((n, t)),
            _ => None,
        };
        c.skip_str()?; // tablespace
        if self.version >= version(1, 14, 0) {
            c.skip_str()?; // table access method
        }
        if self.version >= version(1, 16, 0) {
            c.int()?; // relkind
        }
        c.skip_str()?; // owner
        c.skip_str()?; // "false" (with oids)
        let mut deps = Vec::new();
        while let Some(d) = c.str_bytes()? {
            // Dependencies are dump ids as text; one that is not is passed over.
            if let Some(id) = std::str::from_utf8(d).ok().and_then(|t| t.parse().ok()) {
                deps.push(id);
            }
        }
        let at = self.pos + c.at as u64;
        let flag = c.byte()?;
        c.take(self.off_size)?;
        if !(POS_NOT_SET..=NO_DATA).contains(&flag) {
            return Err(Halt::Bad(format!(
                "unknown data position flag {flag} in TOC entry {dump_id}"
            )));
        }
        self.index.insert(dump_id, self.fields.len());
        self.fields.push(OffsetField {
            dump_id,
            at,
            flag,
            info: EntryInfo {
                dump_id,
                desc,
                section,
                deps,
                copy_stmt,
                session_sql,
                table,
            },
        });
        self.state = if left > 1 {
            State::Toc { left: left - 1 }
        } else {
            self.check_toc()?;
            self.toc_end = Some(self.pos + c.at as u64);
            State::BlockHeader
        };
        Ok(())
    }

    fn check_toc(&self) -> Result<(), Halt> {
        if self.index.len() != self.fields.len() {
            return Err(Halt::Bad("a TOC entry id twice".into()));
        }
        Ok(())
    }

    fn end_block(&mut self, end: u64) {
        if let Some(s) = self.spans.last_mut() {
            s.end = Some(end);
        }
    }

    /// A data block's type and dump id.
    fn block_header(&mut self, c: &mut Cursor<'_>) -> Result<(), Halt> {
        let kind = c.byte()?;
        let dump_id = c.int()?;
        let blobs = match kind {
            BLK_DATA => false,
            BLK_BLOBS => true,
            k => return Err(Halt::Bad(format!("unknown data block type {k}"))),
        };
        let has_data = self
            .index
            .get(&dump_id)
            .and_then(|&i| self.fields.get(i))
            .is_some_and(|f| f.flag != NO_DATA);
        if !has_data {
            return Err(Halt::Bad(format!(
                "a data block for entry {dump_id}, which has no data in the TOC"
            )));
        }
        if self.blocks.insert(dump_id, self.pos).is_some() {
            return Err(Halt::Bad(format!("two data blocks for entry {dump_id}")));
        }
        self.spans.push(Span {
            dump_id,
            start: self.pos,
            end: None,
        });
        self.state = if blobs { State::LoOid } else { State::Chunks };
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// A hand-built archive in the layout `pg_dump` writes (version 1.14, 4-byte ints).
    /// A small custom-format archive: TOC entries (dump id, has data; all `TABLE DATA` of
    /// `public.t` with `COPY t FROM stdin;`), then the blocks (kind, dump id, chunks).
    pub(crate) fn archive(entries: &[(i64, bool)], blocks: &[(u8, i64, Vec<Vec<u8>>)]) -> Vec<u8> {
        fn int(out: &mut Vec<u8>, v: i64) {
            out.push(u8::from(v < 0));
            out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn s(out: &mut Vec<u8>, v: Option<&str>) {
            match v {
                None => int(out, -1),
                Some(v) => {
                    int(out, v.len() as i64);
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        let mut out = b"PGDMP".to_vec();
        out.extend_from_slice(&[1, 14, 0, 4, 8, FORMAT_CUSTOM]);
        int(&mut out, 0);
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut out, v);
        }
        s(&mut out, Some("db"));
        s(&mut out, Some("15.1"));
        s(&mut out, Some("15.1"));
        int(&mut out, entries.len() as i64);
        for &(id, data) in entries {
            int(&mut out, id);
            int(&mut out, i64::from(data));
            for v in ["1259", "16384", "t", "TABLE DATA"] {
                s(&mut out, Some(v));
            }
            int(&mut out, 3);
            s(&mut out, Some("CREATE ..."));
            s(&mut out, None);
            s(&mut out, Some("COPY t FROM stdin;\n"));
            s(&mut out, Some("public"));
            s(&mut out, None);
            s(&mut out, Some("heap"));
            s(&mut out, Some("postgres"));
            s(&mut out, Some("false"));
            s(&mut out, Some("7"));
            s(&mut out, None);
            out.push(if data { POS_NOT_SET } else { NO_DATA });
            out.extend_from_slice(&[0; 8]);
        }
        for (kind, id, chunks) in blocks {
            out.push(*kind);
            int(&mut out, *id);
            if *kind == BLK_BLOBS {
                int(&mut out, 16500);
            }
            for ch in chunks {
                int(&mut out, ch.len() as i64);
                out.extend_from_slice(ch);
            }
            int(&mut out, 0);
            if *kind == BLK_BLOBS {
                int(&mut out, 0);
            }
        }
        out
    }

    fn scan_in_pieces(data: &[u8], piece: usize) -> OffsetScan {
        let mut s = OffsetScan::new();
        for p in data.chunks(piece) {
            s.feed(p);
        }
        s
    }

    #[test]
    fn block_positions_are_found_whatever_the_piece_size() {
        let rows: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{i}\trow\n").into_bytes())
            .collect();
        let a = archive(
            &[(5, false), (7, true), (9, true)],
            &[
                (BLK_DATA, 7, rows.clone()),
                (BLK_BLOBS, 9, vec![b"blob".to_vec()]),
            ],
        );
        let start7 = a.windows(5).position(|w| w == [BLK_DATA, 0, 7, 0, 0]);
        for piece in [1, 2, 3, 7, 64, 4096, a.len()] {
            let s = scan_in_pieces(&a, piece);
            assert!(s.failure().is_none(), "piece {piece}: {:?}", s.failure());
            assert_eq!(
                s.block_starts().get(&7).map(|&p| p as usize),
                start7,
                "piece {piece}"
            );
            assert_eq!(s.spans().len(), 2);
            assert!(s.spans().iter().all(|sp| sp.end.is_some()));
            assert_eq!(s.spans()[1].end, Some(a.len() as u64));
            assert_eq!(s.spans()[0].end, Some(s.spans()[1].start));
            assert_eq!(s.toc_end(), Some(s.spans()[0].start));
            let patches = s.finish().expect("complete archive");
            assert_eq!(patches.len(), 2, "piece {piece}");
            // Applied, the patched archive records the positions it was scanned at.
            let mut patched = a.clone();
            for p in &patches {
                let at = p.at as usize;
                patched[at..at + p.bytes.len()].copy_from_slice(&p.bytes);
            }
            let again = scan_in_pieces(&patched, piece);
            let recorded = again.recorded(&patched);
            assert_eq!(recorded.len(), 2);
            assert_eq!(&recorded, again.block_starts());
            assert!(again.finish().expect("patched archive").is_empty());
        }
    }

    #[test]
    fn damaged_archives_never_panic_and_never_patch_outside_the_file() {
        // The scanner sees a corrupt artifact's bytes before the stream's checksum refuses
        // it: flipped bytes, cuts and junk must end in "gave up" or sane positions.
        let rows: Vec<Vec<u8>> = (0..200).map(|i| format!("{i}\tx\n").into_bytes()).collect();
        let good = archive(
            &[(5, false), (7, true), (9, true)],
            &[(BLK_DATA, 7, rows), (BLK_BLOBS, 9, vec![b"blob".to_vec()])],
        );
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let mut a = good.clone();
            let len = a.len() as u64;
            for _ in 0..(1 + next() % 4) {
                let at = (next() % len) as usize;
                a[at] = (next() & 0xff) as u8;
            }
            if round % 3 == 0 {
                a.truncate((next() % len) as usize);
            }
            let piece = 1 + (next() % 300) as usize;
            let s = scan_in_pieces(&a, piece);
            if let Ok(patches) = s.finish() {
                for p in patches {
                    assert!(p.at as usize + p.bytes.len() <= a.len(), "round {round}");
                }
            }
        }
    }

    #[test]
    fn a_truncated_archive_gives_no_positions() {
        let a = archive(&[(7, true)], &[(BLK_DATA, 7, vec![b"1\n".to_vec()])]);
        for cut in [3, 40, a.len() - 3, a.len() - 1] {
            let s = scan_in_pieces(&a[..cut], 5);
            assert!(s.finish().is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn unknown_input_is_given_up_on() {
        let mut s = OffsetScan::new();
        s.feed(b"PK\x03\x04 not a dump at all");
        assert!(s.failure().is_some());
        assert!(s.finish().is_err());

        let mut a = archive(&[(7, true)], &[(BLK_DATA, 7, vec![b"1\n".to_vec()])]);
        a[6] = 99; // archive version 1.99
        let s = scan_in_pieces(&a, 16);
        assert!(s.failure().is_some_and(|f| f.contains("1.99")));

        // A block for an entry the TOC does not have: the framing does not add up.
        let a = archive(&[(7, true)], &[(BLK_DATA, 8, vec![b"1\n".to_vec()])]);
        assert!(scan_in_pieces(&a, 16).finish().is_err());
        // An entry with data but no block.
        let a = archive(&[(7, true), (8, true)], &[(BLK_DATA, 7, vec![])]);
        assert!(scan_in_pieces(&a, 16).finish().is_err());
    }
}
