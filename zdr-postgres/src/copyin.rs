//! One table's data block loaded with `COPY ... FROM STDIN` over the protocol, its rows
//! split across connections.
//!
//! A custom-format archive stores a table's data as the server's text `COPY` output, framed
//! in chunks (a length, then that many bytes; a zero length ends the block). When the archive
//! is not compressed inside (zdr's dumps: `pg_dump --compress=0`, compressed by the pipeline),
//! the chunks are the rows exactly as `COPY` reads them. [`copy_block`] takes the block's
//! bytes from the copy as they arrive (they never go through the spool file), gathers the
//! rows into pieces of about 256 KiB cut at the end of a row, and hands each piece to the next free connection (a "lane"), each in its own
//! `COPY` of the same table. A large table so loads on every core, with no `pg_restore`
//! process and no pipe in between; the rows' order on disk may differ from the original's
//! (as after any parallel load), their content does not. The server's count of the rows each
//! `COPY` stored is returned.

use std::sync::Arc;

use sqlx::postgres::PgConnection;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use zdr_core::{Error, ErrorKind, Result};

use crate::PgConfig;
use crate::pg;

/// Size of the pieces handed to the lanes, and of the reads from the spool.
const PIECE: usize = 256 << 10;

/// `BLK_DATA`: the type byte of a table's data block.
const BLK_DATA: u8 = 1;

/// What every lane sets before its first `COPY`, as `pg_restore` does for its sessions
/// (each `COPY` commits synchronously: the row counts it returns are the verification's).
const FIXED_SESSION: &str = "SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0; SET row_security = off; \
     SET xmloption = content;";

/// Open one lane into `database`: a connection with the session settings of the archive
/// (`session`: the SQL of its `ENCODING`, `STDSTRINGS` and `SEARCHPATH` entries).
pub(crate) async fn open_lane(
    cfg: &PgConfig,
    database: &str,
    session: &[String],
) -> Result<PgConnection> {
    let mut conn = pg::connect(cfg, database).await?;
    let mut sql = String::from(FIXED_SESSION);
    if conn.server_version_num().is_some_and(|v| v >= 170_000) {
        sql.push_str(" SET transaction_timeout = 0;");
    }
    for s in session {
        sql.push('\n');
        sql.push_str(s);
    }
    // Several statements without parameters: sent as one simple query.
    pg::exec(&mut conn, cfg, &sql)
        .await
        .map_err(|e| e.with_context("while", "setting up a loading session"))?;
    Ok(conn)
}

/// Where the reader is in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// The block's type byte and entry id.
    Header,
    /// A chunk's length.
    Len,
    /// This many bytes of a chunk's payload.
    Payload(u64),
    /// After the end mark.
    End,
}

/// What [`Blocks::parse`] stopped for.
enum Parsed {
    /// A piece of rows is ready.
    Piece(Vec<u8>),
    /// The slab is used up: read more.
    More,
    /// The block ended.
    End,
}

/// The block's bytes as they come from the copy, its framing taken apart in memory (a
/// table's block holds one chunk per row: no await per chunk).
struct Blocks {
    rx: mpsc::Receiver<Vec<u8>>,
    id: i64,
    int_size: usize,
    at: At,
    /// Unread bytes are `slab[lo..hi]`.
    slab: Vec<u8>,
    lo: usize,
    hi: usize,
}

impl Blocks {
    /// Take the next bytes of the block (keeping the few unread ones).
    async fn fill(&mut self) -> Result<()> {
        let Some(next) = self.rx.recv().await else {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!("the dump ended inside the data block of entry {}", self.id),
            ));
        };
        if self.lo == self.hi {
            self.slab = next;
        } else {
            let mut slab = Vec::with_capacity(self.hi - self.lo + next.len());
            slab.extend_from_slice(&self.slab[self.lo..self.hi]);
            slab.extend_from_slice(&next);
            self.slab = slab;
        }
        self.lo = 0;
        self.hi = self.slab.len();
        Ok(())
    }

    /// `ReadInt` at `slab[lo]`, when its bytes are there: a sign byte, then `int_size`
    /// bytes, least significant first.
    fn int(&mut self) -> Option<i64> {
        let end = self.lo + 1 + self.int_size;
        if end > self.hi {
            return None;
        }
        let bytes = &self.slab[self.lo..end];
        let mut v: i64 = 0;
        for (i, b) in bytes[1..].iter().enumerate() {
            v |= i64::from(*b) << (8 * i);
        }
        let v = if bytes[0] != 0 { v.wrapping_neg() } else { v };
        self.lo = end;
        Some(v)
    }

    /// Take apart what the slab holds, gathering rows into `piece`.
    fn parse(&mut self, piece: &mut Piece) -> Result<Parsed> {
        let id = self.id;
        loop {
            match self.at {
                At::End => return Ok(Parsed::End),
                At::Header => {
                    if self.hi - self.lo < 2 + self.int_size {
                        return Ok(Parsed::More);
                    }
                    let kind = self.slab[self.lo];
                    self.lo += 1;
                    let block_id = self.int().unwrap_or(0);
                    if kind != BLK_DATA || block_id != id {
                        return Err(Error::integrity(format!(
                            "the spool holds no table data block of entry {id} where the \
                             archive put it (type {kind}, entry {block_id})"
                        )));
                    }
                    self.at = At::Len;
                }
                At::Len => {
                    let Some(len) = self.int() else {
                        return Ok(Parsed::More);
                    };
                    self.at = match u64::try_from(len) {
                        Ok(0) => At::End,
                        Ok(n) => At::Payload(n),
                        Err(_) => {
                            return Err(Error::integrity(format!(
                                "a negative chunk length {len} in the data block of entry {id}"
                            )));
                        }
                    };
                }
                At::Payload(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.hi - self.lo);
                    if n == 0 {
                        return Ok(Parsed::More);
                    }
                    piece.push(&self.slab[self.lo..self.lo + n]);
                    self.lo += n;
                    let left = left - n as u64;
                    self.at = if left == 0 {
                        At::Len
                    } else {
                        At::Payload(left)
                    };
                    if let Some(rows) = piece.take_rows() {
                        return Ok(Parsed::Piece(rows));
                    }
                }
            }
        }
    }
}

/// The rows gathered for the next lane.
struct Piece {
    buf: Vec<u8>,
    /// Just after the last row end in `buf`.
    cut: usize,
}

impl Piece {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(PIECE + PIECE / 4),
            cut: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if let Some(i) = data.iter().rposition(|&b| b == b'\n') {
            self.cut = self.buf.len() + i + 1;
        }
        self.buf.extend_from_slice(data);
    }

    /// The whole rows gathered, once they are a piece's worth.
    fn take_rows(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() < PIECE || self.cut == 0 {
            return None;
        }
        let mut next = Vec::with_capacity(PIECE + PIECE / 4);
        next.extend_from_slice(&self.buf[self.cut..]);
        let mut out = std::mem::replace(&mut self.buf, next);
        out.truncate(self.cut);
        self.cut = 0;
        Some(out)
    }
}

/// The table a `COPY` statement names, for messages: `public.docs`.
fn copy_target(stmt: &str) -> &str {
    let rest = stmt.strip_prefix("COPY ").unwrap_or(stmt);
    rest.split([' ', '(']).next().unwrap_or(rest)
}

/// The table a `COPY` statement loads, as schema and name (quoted identifiers unquoted);
/// `None` when the statement is not `COPY schema.table ...`.
pub(crate) fn copy_table(stmt: &str) -> Option<(String, String)> {
    /// One identifier at the start of `s`, and the rest.
    fn ident(s: &str) -> Option<(String, &str)> {
        if let Some(q) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            while let Some((i, ch)) = chars.next() {
                if ch == '"' {
                    if q[i + 1..].starts_with('"') {
                        out.push('"');
                        chars.next();
                    } else {
                        return Some((out, &q[i + 1..]));
                    }
                } else {
                    out.push(ch);
                }
            }
            None
        } else {
            let end = s.find(['.', ' ', '(', ';']).unwrap_or(s.len());
            (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
        }
    }
    let (schema, rest) = ident(stmt.strip_prefix("COPY ")?)?;
    let (name, rest) = ident(rest.strip_prefix('.')?)?;
    rest.starts_with([' ', '(']).then_some((schema, name))
}

/// What one lane did: its connection back when its `COPY` ended cleanly, and the rows.
type LaneDone = (Option<PgConnection>, Result<u64>);

/// One lane: `COPY stmt` on `conn`, fed with the pieces it takes from `rx`.
async fn lane(
    mut conn: PgConnection,
    cfg: PgConfig,
    stmt: Arc<str>,
    id: i64,
    rx: Arc<Mutex<mpsc::Receiver<Vec<u8>>>>,
) -> LaneDone {
    let fail = |e: sqlx::Error| {
        pg::db_error(e, &cfg, &format!("loading {} failed", copy_target(&stmt)))
            .with_context("entry", id)
    };
    let res = async {
        let mut copy = conn.copy_in_raw(&stmt).await.map_err(fail)?;
        loop {
            let piece = rx.lock().await.recv().await;
            match piece {
                Some(p) => {
                    copy.send(p).await.map_err(fail)?;
                }
                None => break,
            }
        }
        copy.finish().await.map_err(fail)
    }
    .await;
    match res {
        Ok(rows) => (Some(conn), Ok(rows)),
        Err(e) => (None, Err(e)),
    }
}

/// Load the data block of entry `id` (its bytes coming through `rows`) with `COPY stmt`
/// over `lanes` connections: those in `conns`, and new ones opened with `session` up to
/// `lanes`. Returns the connections that ended cleanly (for the next blocks) and the rows
/// the server stored. On any failure the `COPY`s still open are abandoned (their rows are
/// never committed).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn copy_block(
    cfg: &PgConfig,
    database: &str,
    session: &[String],
    mut conns: Vec<PgConnection>,
    lanes: usize,
    rows: mpsc::Receiver<Vec<u8>>,
    int_size: usize,
    id: i64,
    stmt: &str,
) -> (Vec<PgConnection>, Result<u64>) {
    while conns.len() < lanes.max(1) {
        match open_lane(cfg, database, session).await {
            Ok(c) => conns.push(c),
            Err(e) => return (conns, Err(e)),
        }
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>(2 * conns.len());
    let rx = Arc::new(Mutex::new(rx));
    let stmt: Arc<str> = Arc::from(stmt);
    let mut set: JoinSet<LaneDone> = JoinSet::new();
    for conn in conns {
        set.spawn(lane(conn, cfg.clone(), stmt.clone(), id, rx.clone()));
    }
    drop(rx);
    let mut blocks = Blocks {
        rx: rows,
        id,
        int_size,
        at: At::Header,
        slab: Vec::new(),
        lo: 0,
        hi: 0,
    };
    let fed = feed(&mut blocks, &tx).await;
    drop(tx);
    if let Err(e) = fed {
        set.shutdown().await;
        return (Vec::new(), Err(e));
    }
    let mut back = Vec::new();
    let mut rows = 0u64;
    let mut failed = None;
    while let Some(done) = set.join_next().await {
        match done {
            Ok((conn, Ok(n))) => {
                rows += n;
                back.extend(conn);
            }
            Ok((_, Err(e))) => {
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(Error::unexpected("a loading lane failed").with_source(e));
            }
        }
    }
    match failed {
        Some(e) => (Vec::new(), Err(e)),
        None => (back, Ok(rows)),
    }
}

/// Read the block and send its rows to the lanes, a piece at a time. `Ok` also when every
/// lane stopped taking pieces: their own errors say why.
async fn feed(b: &mut Blocks, tx: &mpsc::Sender<Vec<u8>>) -> Result<()> {
    let mut piece = Piece::new();
    loop {
        match b.parse(&mut piece)? {
            Parsed::Piece(rows) => {
                if tx.send(rows).await.is_err() {
                    return Ok(());
                }
            }
            Parsed::More => b.fill().await?,
            Parsed::End => break,
        }
    }
    if !piece.buf.is_empty() {
        let _ = tx.send(piece.buf).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_cut_at_the_end_of_a_row() {
        let mut p = Piece::new();
        let row = b"1\tsome text of a row\n";
        let mut sent = Vec::new();
        let mut total = 0;
        while total < 3 * PIECE {
            p.push(row);
            total += row.len();
            if let Some(rows) = p.take_rows() {
                assert!(rows.len() >= PIECE);
                assert_eq!(rows.last(), Some(&b'\n'));
                assert_eq!(rows.len() % row.len(), 0);
                sent.push(rows);
            }
        }
        assert_eq!(sent.len(), 2);
        let rest = p.buf.len();
        assert_eq!(sent.iter().map(Vec::len).sum::<usize>() + rest, total);
    }

    #[test]
    fn a_row_larger_than_a_piece_is_sent_whole() {
        let mut p = Piece::new();
        p.push(b"1\tshort\n2\t");
        p.push(&vec![b'x'; 2 * PIECE]);
        // Past the size of a piece, the rows that ended go; the long one waits for its end.
        let first = p.take_rows();
        assert_eq!(first.as_deref(), Some(&b"1\tshort\n"[..]));
        assert!(p.take_rows().is_none());
        p.push(b"\n");
        let long = p.take_rows();
        assert_eq!(long.as_ref().map(Vec::len), Some(2 + 2 * PIECE + 1));
    }

    #[test]
    fn the_table_a_copy_loads_is_read_back_from_its_statement() {
        let t = |s: &str, n: &str| Some((s.to_owned(), n.to_owned()));
        assert_eq!(
            copy_table("COPY public.docs (id, body) FROM stdin;\n"),
            t("public", "docs")
        );
        assert_eq!(
            copy_table("COPY \"My \"\"S\"\"\".\"t.x\" FROM stdin;"),
            t("My \"S\"", "t.x")
        );
        assert_eq!(copy_table("COPY docs FROM stdin;"), None);
        assert_eq!(copy_table("COPY \"unterminated.t FROM stdin;"), None);
        assert_eq!(copy_table("INSERT INTO a.b VALUES (1);"), None);
    }

    #[test]
    fn the_copy_target_is_named() {
        assert_eq!(
            copy_target("COPY public.docs (id, body) FROM stdin;\n"),
            "public.docs"
        );
        assert_eq!(copy_target("COPY \"s\".t FROM stdin;"), "\"s\".t");
    }
}
