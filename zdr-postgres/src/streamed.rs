//! Loading a custom-format dump while it arrives.
//!
//! The copy reads the artifact once (the storage layer checks the stored bytes' SHA-256 at
//! the end of the stream), and [`OffsetScan`] follows the archive's framing on the way. As
//! soon as the table of contents is in, `pg_restore --section=pre-data` creates the schema
//! in the side database. Each data block is then loaded as it arrives:
//!
//! - a table's rows, when the archive is not compressed inside (zdr's own dumps), go from
//!   the copy to their loader in memory and are loaded with `COPY` over the protocol
//!   ([`crate::copyin`]): a block still arriving is split by rows across every free
//!   connection, a small one already queued whole takes one. These bytes are never written
//!   to the spool (they are holes in it), and the copy waits for its loader, so a table
//!   loads at the speed of the server, and the memory held stays a few MiB;
//! - anything else (the large objects, a block compressed inside) goes into the spool and
//!   is loaded by its own `pg_restore --data-only`, whose input is the archive's header and
//!   table of contents followed by the block's bytes, read from the spool as the copy
//!   writes them.
//!
//! Up to `jobs` connections load at once, the blocks in the order they arrive. Once the
//! stream has ended intact and every block is loaded, `pg_restore -j jobs` runs what is
//! left — sequence values and the post-data section (indexes, constraints, triggers) — from
//! the spool, whose table of contents then records every block's position.
//!
//! The target is always a side or scratch database that is swapped in only after the stream
//! matched its checksum and the facts were compared, so loading before the end of the stream
//! never exposes unverified data. When the stream fails, the loads are stopped and the
//! stream's own error (a checksum mismatch, a dead tier) is returned. When the scanner does
//! not recognise the archive, the caller loads it whole from the spool; if rows had gone to
//! their loaders from memory by then, the spool is not the whole dump and the artifact is
//! read again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;
use zdr_core::{BoxRead, Error, ErrorKind, Progress, Result};

use crate::custom::{EntryInfo, OffsetScan, SECTION_POST_DATA, SECTION_PRE_DATA};
use crate::dir::Spool;
use crate::{PostgresComponent, pg, tools};
use sqlx::postgres::PgConnection;

/// Read size of the copy and of the block feeders.
const BUF: usize = 1 << 20;

/// Blocks spooled whole are loaded together up to this many bytes ...
const BATCH_BYTES: u64 = 8 << 20;

/// ... and this many tables.
const BATCH_ENTRIES: usize = 256;

/// What the copy tells the loader.
enum Event {
    /// The table of contents is in the spool: its bytes (with the header), every entry.
    Toc {
        head: Arc<Vec<u8>>,
        entries: Vec<EntryInfo>,
        /// The `COPY` statements of the tables whose rows are sent to their loader.
        stmts: Arc<BTreeMap<i64, String>>,
        /// The archive's integer size.
        int_size: usize,
    },
    /// A data block starts at `start`. A table's rows come through `rows` (they are not
    /// written to the spool); any other block's bytes follow in the spool as they are
    /// written.
    Block {
        dump_id: i64,
        start: u64,
        rows: Option<mpsc::Receiver<Vec<u8>>>,
    },
}

/// How far the copy is, for the block feeders.
#[derive(Clone, Default)]
struct Written {
    /// Bytes of the dump read so far (the spool file holds those that are not rows sent to
    /// a loader).
    bytes: u64,
    /// Ends of the blocks read to their end.
    ends: BTreeMap<i64, u64>,
    /// The copy stopped (ended or failed): no more bytes will come.
    stopped: bool,
}

/// A table's rows go to its loader in messages of at most this size ...
const ROWS_MSG: usize = 256 << 10;

/// ... and this many are queued.
const ROWS_QUEUE: usize = 4;

/// Rows for a loader: a range of the current read, or bytes read back from the spool.
enum Part {
    Read(std::ops::Range<usize>),
    Spooled(Vec<u8>),
}

/// The outcome of the copy.
struct Copied {
    bytes: u64,
    /// The scanner understood the whole archive.
    scanned: bool,
    /// Rows were sent to loaders instead of the spool: the spool is not the whole dump.
    holes: bool,
}

/// Spool the artifact `from` into `spool` and load it into `database` while it arrives; see
/// the module docs.
pub(crate) async fn spool_and_load(
    c: &PostgresComponent,
    from: BoxRead,
    spool: &Spool,
    database: &str,
    jobs: u32,
    progress: &Progress,
) -> Result<Streamed> {
    let (events, mut rx_events) = mpsc::unbounded_channel();
    let (written, rx_written) = watch::channel(Written::default());
    let dest = spool.dump_file();
    let hold = spool.hold();
    let copy = tokio::task::spawn_blocking(move || copy(from, &dest, hold, &events, &written));
    let mut load = Loader {
        c,
        spool,
        database,
        jobs: jobs.max(1) as usize,
        rx_written,
        head: None,
        ids: Vec::new(),
        early_post: BTreeMap::new(),
        starts: BTreeMap::new(),
        pre_data: None,
        pre_done: false,
        queue: VecDeque::new(),
        running: JoinSet::new(),
        busy: 0,
        idle: Vec::new(),
        session: Vec::new(),
        stmts: Arc::default(),
        int_size: 0,
        rows: 0,
        copied: 0,
        widest: 0,
        tables: BTreeMap::new(),
        counted: BTreeMap::new(),
        loaded: BTreeSet::new(),
        failed: None,
    };
    // Dispatch while the copy runs: on its news, and as loads finish.
    loop {
        tokio::select! {
            ev = rx_events.recv() => match ev {
                Some(ev) => load.on_event(ev, progress),
                None => break,
            },
            () = load.next_done() => {}
        }
        load.dispatch();
    }
    let copied = copy
        .await
        .map_err(|e| Error::unexpected("the spooling task failed").with_source(e))?;
    let copied = match copied {
        Ok(c) => c,
        Err(e) => {
            load.stop().await;
            return Err(e);
        }
    };
    if !copied.scanned || load.head.is_none() {
        // Taken before the loads stop: a schema step still running has touched it too.
        let touched = load.started();
        load.stop().await;
        return Ok(Streamed::Unrecognized {
            touched,
            complete: !copied.holes,
        });
    }
    load.finish_loads(progress).await?;
    if load.copied > 0 {
        progress.info(format!(
            "{database}: {} tables loaded with COPY over the protocol ({} rows), one of them \
             over {} connections at once",
            load.copied, load.rows, load.widest
        ));
    }
    // Sequence values, and indexes, constraints and triggers, in parallel from the spool.
    let rest: Vec<i64> = load
        .ids
        .iter()
        .copied()
        .filter(|id| !load.loaded.contains(id))
        .collect();
    let list = spool.file("rest.list");
    write_list(&list, &rest)?;
    let mut spec = tools::spec(&c.config, "pg_restore", database).args([
        "--exit-on-error".to_owned(),
        format!("--jobs={jobs}"),
        "--section=data".to_owned(),
        "--section=post-data".to_owned(),
        "-L".to_owned(),
        list.display().to_string(),
        "-d".to_owned(),
        database.to_owned(),
        spool.dump_file().display().to_string(),
    ]);
    spec.stdout = false;
    let what = format!("pg_restore -j {jobs} post-data {database}");
    progress.start(&what, None);
    let (run, tail) = tools::spawn(c.runner.as_ref(), &c.config, &spec).await?;
    tools::finish(run, tail, &c.config, "pg_restore").await?;
    progress.finish(&what);
    Ok(Streamed::Loaded {
        bytes: copied.bytes,
        counted: std::mem::take(&mut load.counted),
    })
}

/// What [`spool_and_load`] did.
pub(crate) enum Streamed {
    /// Loaded, these many bytes; `counted`: the rows the `COPY`s stored, by table (schema,
    /// name), for the tables loaded that way.
    Loaded {
        bytes: u64,
        counted: BTreeMap<(String, String), i64>,
    },
    /// The archive was not recognised; the stream was verified. `touched`: the schema or
    /// some data had been loaded before that showed (the database must be made empty again
    /// before it is loaded from the spool). `complete`: the spool holds the whole dump;
    /// when some rows went to their loaders from memory, it does not, and the artifact
    /// must be read again.
    Unrecognized { touched: bool, complete: bool },
}

/// The copy, on a blocking thread: artifact → spool file, scanned on the way.
fn copy(
    from: BoxRead,
    dest: &std::path::Path,
    hold: crate::dir::Hold,
    events: &mpsc::UnboundedSender<Event>,
    written: &watch::Sender<Written>,
) -> Result<Copied> {
    let res = copy_inner(from, dest, hold, events, written);
    written.send_modify(|w| w.stopped = true);
    res
}

fn copy_inner(
    from: BoxRead,
    dest: &std::path::Path,
    hold: crate::dir::Hold,
    events: &mpsc::UnboundedSender<Event>,
    written: &watch::Sender<Written>,
) -> Result<Copied> {
    let io_error = |e: io::Error| crate::dir::spool_error(e, dest);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::from_io(e, format!("cannot create {}", dest.display())))?;
    let mut input = BufReader::with_capacity(BUF, SyncIoBridge::new(from));
    let mut scan = OffsetScan::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    let mut told_toc = false;
    let mut told_blocks = 0;
    let mut told_ends = 0;
    // The tables whose rows go to their loader in memory, and the senders of the blocks
    // under way; `routed`: the first span not yet routed to its end.
    let mut stmts: Arc<BTreeMap<i64, String>> = Arc::default();
    let mut senders: BTreeMap<i64, mpsc::Sender<Vec<u8>>> = BTreeMap::new();
    let mut routed = 0;
    let mut holes = false;
    loop {
        hold.check().map_err(io_error)?;
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        let at = total;
        total += n as u64;
        scan.feed(&buf[..n]);
        if scan.has_failed() {
            // From here on everything goes to the spool: the caller loads it whole (or, if
            // rows went to loaders already, reads the artifact again).
            senders.clear();
            file.write_all_at(&buf[..n], at).map_err(io_error)?;
            written.send_modify(|w| w.bytes = total);
            continue;
        }
        // Route this read: a table's rows to its loader, anything else (the header, the
        // table of contents, the blocks pg_restore loads) into the spool at its position.
        // The table of contents just completed: which tables' rows go to loaders is known
        // before this read is routed; the loader hears of it once the read is in the spool.
        let toc = (!told_toc)
            .then(|| scan.toc_end().map(|end| (end, scan.entries())))
            .flatten();
        if let Some((_, entries)) = &toc {
            stmts = Arc::new(copy_statements(entries, scan.plain_data()));
        }
        let spans = scan.spans();
        let mut to_loaders: Vec<(i64, Part)> = Vec::new();
        let mut pos = at;
        while pos < total {
            let span = spans.get(routed).filter(|s| s.start <= pos);
            let upto = match span {
                Some(s) => s.end.unwrap_or(total).min(total),
                None => spans.get(routed).map_or(total, |s| s.start.min(total)),
            };
            let part =
                usize::try_from(pos - at).unwrap_or(n)..usize::try_from(upto - at).unwrap_or(n);
            match span.filter(|s| stmts.contains_key(&s.dump_id)) {
                Some(s) => {
                    if routed >= told_blocks && s.start < at {
                        // The block's header began in an earlier read, before the scanner
                        // knew it was one: those bytes went to the spool; its loader gets
                        // them first.
                        let len = usize::try_from(at - s.start).unwrap_or(usize::MAX);
                        let mut first = vec![0u8; len];
                        file.read_exact_at(&mut first, s.start).map_err(io_error)?;
                        to_loaders.push((s.dump_id, Part::Spooled(first)));
                    }
                    to_loaders.push((s.dump_id, Part::Read(part)));
                }
                None => file.write_all_at(&buf[part], pos).map_err(io_error)?,
            }
            if span.is_some_and(|s| s.end.is_some_and(|e| e <= total)) {
                routed += 1;
            }
            pos = upto;
        }
        if let Some((end, entries)) = toc {
            told_toc = true;
            let mut head = vec![0u8; usize::try_from(end).unwrap_or(usize::MAX)];
            file.read_exact_at(&mut head, 0).map_err(io_error)?;
            let _ = events.send(Event::Toc {
                head: Arc::new(head),
                entries,
                stmts: stmts.clone(),
                int_size: scan.int_size(),
            });
        }
        // Only the blocks new since the last read: earlier ones were told already.
        for s in &spans[told_blocks..] {
            // The position goes into the table of contents before anyone reads it.
            if let Some(p) = scan.patch_for(s.dump_id) {
                let (at, bytes) = p.offset();
                file.write_all_at(bytes, at).map_err(io_error)?;
                let (at, bytes) = p.flag();
                file.write_all_at(bytes, at).map_err(io_error)?;
            }
            let rows = stmts.contains_key(&s.dump_id).then(|| {
                let (tx, rx) = mpsc::channel(ROWS_QUEUE);
                senders.insert(s.dump_id, tx);
                rx
            });
            let _ = events.send(Event::Block {
                dump_id: s.dump_id,
                start: s.start,
                rows,
            });
        }
        told_blocks = spans.len();
        // What the spool holds now is told before the rows are handed over (a load
        // reading the spool never waits on a load waiting for its rows).
        // Blocks end in archive order: the newly ended ones follow the last told.
        let ended: Vec<(i64, u64)> = spans[told_ends..]
            .iter()
            .map_while(|s| s.end.map(|e| (s.dump_id, e)))
            .collect();
        told_ends += ended.len();
        let ended_ids: Vec<i64> = ended.iter().map(|e| e.0).collect();
        written.send_modify(|w| {
            w.ends.extend(ended);
            w.bytes = total;
        });
        // The rows, to the loaders told of their blocks above (a loader takes them once
        // it runs: the copy waits for it).
        for (id, part) in to_loaders {
            holes = true;
            let bytes = match &part {
                Part::Read(r) => &buf[r.clone()],
                Part::Spooled(v) => v.as_slice(),
            };
            for msg in bytes.chunks(ROWS_MSG) {
                if let Some(tx) = senders.get(&id)
                    && tx.blocking_send(msg.to_vec()).is_err()
                {
                    // The loader is gone (it failed, or the restore stops): its rows are
                    // dropped.
                    senders.remove(&id);
                }
            }
        }
        // The blocks that ended: their loaders see the end of their rows.
        for id in ended_ids {
            senders.remove(&id);
        }
    }
    drop(senders);
    // The spool has the dump's length; the rows loaded from memory are holes in it.
    file.set_len(total).map_err(io_error)?;
    let scanned = match scan.finish() {
        Ok(patches) => {
            for p in &patches {
                file.write_all_at(&p.bytes, p.at).map_err(io_error)?;
            }
            true
        }
        Err(_) => false,
    };
    Ok(Copied {
        bytes: total,
        scanned,
        holes,
    })
}

/// The `COPY` statements of the table data entries whose rows a loader can send as they
/// are (`plain`: the archive does not compress its blocks), by entry.
fn copy_statements(entries: &[EntryInfo], plain: bool) -> BTreeMap<i64, String> {
    if !plain {
        return BTreeMap::new();
    }
    entries
        .iter()
        .filter(|e| e.desc == "TABLE DATA")
        .filter_map(|e| Some((e.dump_id, e.copy_stmt.clone()?)))
        .filter(|(_, s)| s.starts_with("COPY "))
        .collect()
}

fn write_list(path: &std::path::Path, ids: &[i64]) -> Result<()> {
    let mut text = String::new();
    for id in ids {
        text.push_str(&format!("{id};\n"));
    }
    std::fs::write(path, text)
        .map_err(|e| Error::from_io(e, format!("cannot write {}", path.display())))
}

/// One unit of work of the loader.
#[derive(Debug)]
enum Job {
    /// A data block loaded by `pg_restore` from the spool: dump id, start.
    Block(i64, u64),
    /// A table's rows, loaded with `COPY` as they come through `rows`.
    Copy {
        id: i64,
        rows: mpsc::Receiver<Vec<u8>>,
    },
    /// A post-data entry whose table is loaded.
    Post(i64),
}

/// The post-data entries that need one table's data and nothing else but the schema: indexes
/// and primary key / unique constraints, by the table's data entry.
fn single_table_post_data(entries: &[EntryInfo]) -> BTreeMap<i64, Vec<i64>> {
    let by_id: BTreeMap<i64, &EntryInfo> = entries.iter().map(|e| (e.dump_id, e)).collect();
    let mut data_of_table = BTreeMap::new();
    for e in entries.iter().filter(|e| e.desc == "TABLE DATA") {
        for d in &e.deps {
            if by_id.get(d).is_some_and(|t| t.desc == "TABLE") {
                data_of_table.insert(*d, e.dump_id);
            }
        }
    }
    let mut out: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for e in entries {
        if e.section != SECTION_POST_DATA || !(e.desc == "INDEX" || e.desc == "CONSTRAINT") {
            continue;
        }
        let mut table = None;
        let mut alone = true;
        for d in &e.deps {
            if let Some(&data) = data_of_table.get(d) {
                alone &= table.is_none_or(|t| t == data);
                table = Some(data);
            } else if by_id.get(d).is_none_or(|x| x.section != SECTION_PRE_DATA) {
                alone = false;
            }
        }
        if alone && let Some(t) = table {
            out.entry(t).or_default().push(e.dump_id);
        }
    }
    out
}

/// The loads in flight and to come.
struct Loader<'a> {
    c: &'a PostgresComponent,
    spool: &'a Spool,
    database: &'a str,
    jobs: usize,
    rx_written: watch::Receiver<Written>,
    head: Option<Arc<Vec<u8>>>,
    ids: Vec<i64>,
    /// Per table data entry: its indexes and primary key / unique constraints (entries that
    /// need that table alone), built as soon as a large table's data is in.
    early_post: BTreeMap<i64, Vec<i64>>,
    /// Where each data block starts.
    starts: BTreeMap<i64, u64>,
    pre_data: Option<tokio::task::JoinHandle<Result<()>>>,
    pre_done: bool,
    queue: VecDeque<Job>,
    running: JoinSet<Done>,
    /// Connections in use by the running loads (at most `jobs`).
    busy: usize,
    /// Loading connections between two blocks.
    idle: Vec<PgConnection>,
    /// The archive's session settings, for the loading connections.
    session: Vec<String>,
    /// The `COPY` statements of the blocks loaded over the protocol, by data entry (none
    /// when the archive compresses its blocks).
    stmts: Arc<BTreeMap<i64, String>>,
    int_size: usize,
    /// Rows stored by the `COPY`s, and the blocks they loaded.
    rows: u64,
    copied: usize,
    /// The most connections one table was loaded over.
    widest: usize,
    /// The table each `COPY` loads, by data entry (when its statement names the entry's own
    /// table).
    tables: BTreeMap<i64, (String, String)>,
    /// Rows the `COPY`s stored, by table.
    counted: BTreeMap<(String, String), i64>,
    /// Entries restored so far (data blocks, early post-data entries).
    loaded: BTreeSet<i64>,
    failed: Option<Error>,
}

impl Loader<'_> {
    fn started(&self) -> bool {
        self.pre_data.is_some() || self.pre_done
    }

    fn on_event(&mut self, ev: Event, progress: &Progress) {
        match ev {
            Event::Toc {
                head,
                entries,
                stmts,
                int_size,
            } => {
                self.ids = entries.iter().map(|e| e.dump_id).collect();
                self.early_post = single_table_post_data(&entries);
                self.session = entries
                    .iter()
                    .filter_map(|e| e.session_sql.clone())
                    .collect();
                self.int_size = int_size;
                self.tables = entries
                    .iter()
                    .filter_map(|e| {
                        let table = e.table.clone()?;
                        let stmt = stmts.get(&e.dump_id)?;
                        (crate::copyin::copy_table(stmt).as_ref() == Some(&table))
                            .then_some((e.dump_id, table))
                    })
                    .collect();
                self.stmts = stmts;
                self.head = Some(head.clone());
                let c = self.c.clone();
                let db = self.database.to_owned();
                progress.info(format!(
                    "{db}: loading while the dump arrives (schema first)"
                ));
                self.pre_data = Some(tokio::spawn(async move {
                    restore_from_head(&c, &db, &["--section=pre-data".to_owned()], &head).await
                }));
            }
            Event::Block {
                dump_id,
                start,
                rows,
            } => {
                self.starts.insert(dump_id, start);
                if self.failed.is_some() {
                    // Nothing starts any more; dropping `rows` lets the copy go on.
                    return;
                }
                self.queue.push_back(match rows {
                    Some(rows) => Job::Copy { id: dump_id, rows },
                    None => Job::Block(dump_id, start),
                });
            }
        }
    }

    /// Wait for the schema or a block load to finish and take its outcome (pending when
    /// nothing runs). Cancel-safe.
    async fn next_done(&mut self) {
        if let Some(h) = &mut self.pre_data {
            let r = h.await;
            self.pre_data = None;
            self.pre_done = true;
            if let Some(e) = join_error(r) {
                self.fail(e);
            }
            return;
        }
        match self.running.join_next().await {
            Some(done) => self.collect(done),
            None => std::future::pending().await,
        }
    }

    fn collect(&mut self, done: std::result::Result<Done, tokio::task::JoinError>) {
        let done = match done {
            Ok(d) => {
                self.busy = self.busy.saturating_sub(d.lanes);
                self.idle.extend(d.conns);
                if let Some(n) = d.rows {
                    self.rows += n;
                    self.copied += 1;
                    self.widest = self.widest.max(d.lanes);
                    if let Some(t) = d.ids.first().and_then(|id| self.tables.get(id)) {
                        *self.counted.entry(t.clone()).or_insert(0) +=
                            i64::try_from(n).unwrap_or(i64::MAX);
                    }
                }
                Ok((d.ids, d.res))
            }
            Err(e) => Err(e),
        };
        match done {
            Ok((ids, Ok(()))) => {
                // A large table's indexes are built while the other tables still load.
                let w = self.rx_written.borrow().clone();
                for id in &ids {
                    let size = match (self.starts.get(id), w.ends.get(id)) {
                        (Some(s), Some(e)) => e.saturating_sub(*s),
                        _ => 0,
                    };
                    if size >= BATCH_BYTES
                        && let Some(posts) = self.early_post.remove(id)
                    {
                        self.queue.extend(posts.into_iter().map(Job::Post));
                    }
                }
                self.loaded.extend(ids);
            }
            Ok((_, Err(e))) => self.fail(e),
            Err(e) => {
                // The task's connections are unknown: none counted busy any more after the
                // failure (no new load starts once one failed).
                self.fail(Error::unexpected("a loading task failed").with_source(e))
            }
        }
    }

    fn fail(&mut self, e: Error) {
        if self.failed.is_none() {
            self.failed = Some(e);
        }
        // The rows queued for loads that will not start are dropped: the copy, which waits
        // for its loaders, goes on.
        self.queue.retain(|j| !matches!(j, Job::Copy { .. }));
    }

    fn dispatch(&mut self) {
        if !self.pre_done || self.failed.is_some() {
            return;
        }
        let Some(head) = self.head.clone() else {
            return;
        };
        while self.busy < self.jobs {
            // Rows first, wherever they are queued: the read of the artifact waits for them
            // (an index built meanwhile would hold up the stream).
            if let Some(i) = self
                .queue
                .iter()
                .position(|j| matches!(j, Job::Copy { .. }))
            {
                if let Some(Job::Copy { id, rows }) = self.queue.remove(i) {
                    self.spawn_copy(id, rows);
                }
                continue;
            }
            if let Some(&Job::Post(id)) = self.queue.front() {
                self.queue.pop_front();
                let c = self.c.clone();
                let db = self.database.to_owned();
                let list = self.spool.file(&format!("post-{id}.list"));
                let head = head.clone();
                self.take_slot();
                self.running.spawn(async move {
                    let res = async {
                        write_list(&list, &[id])?;
                        let args = [
                            "--section=post-data".to_owned(),
                            "-L".to_owned(),
                            list.display().to_string(),
                        ];
                        restore_from_head(&c, &db, &args, &head).await
                    }
                    .await;
                    Done::of(vec![id], res)
                });
                continue;
            }
            // Blocks already spooled whole go together (one pg_restore for many small
            // tables), up to a size that leaves large ones to load in parallel; a block still
            // arriving goes alone.
            let mut batch = Vec::new();
            {
                let w = self.rx_written.borrow();
                let mut bytes = 0;
                while let Some(&Job::Block(id, start)) = self.queue.front() {
                    let Some(&end) = w.ends.get(&id) else { break };
                    let size = end.saturating_sub(start);
                    if !batch.is_empty()
                        && (batch.len() >= BATCH_ENTRIES || bytes + size > BATCH_BYTES)
                    {
                        break;
                    }
                    bytes += size;
                    batch.push((id, start));
                    self.queue.pop_front();
                }
            }
            if batch.is_empty() {
                match self.queue.pop_front() {
                    Some(Job::Block(id, start)) => batch.push((id, start)),
                    Some(other) => self.queue.push_front(other),
                    None => return,
                }
                if batch.is_empty() {
                    continue;
                }
            }
            let c = self.c.clone();
            let db = self.database.to_owned();
            let list = self.spool.file(&format!("blocks-{}.list", batch[0].0));
            let file = self.spool.dump_file();
            let rx = self.rx_written.clone();
            let head = head.clone();
            self.take_slot();
            self.running.spawn(async move {
                let ids: Vec<i64> = batch.iter().map(|b| b.0).collect();
                let res = load_blocks(&c, &db, &batch, &list, &file, &head, rx).await;
                Done::of(ids, res)
            });
        }
    }

    /// Start loading the rows of entry `id` with `COPY` over the protocol: over every free
    /// connection when its block is still arriving, else (a block of at most a few MiB
    /// already queued whole) over one.
    fn spawn_copy(&mut self, id: i64, rows: mpsc::Receiver<Vec<u8>>) {
        let whole = self.rx_written.borrow().ends.contains_key(&id);
        let lanes = if whole {
            1
        } else {
            self.jobs.saturating_sub(self.busy).max(1)
        };
        let keep = self.idle.len().saturating_sub(lanes);
        let conns = self.idle.split_off(keep);
        self.busy += lanes;
        let cfg = self.c.config.clone();
        let db = self.database.to_owned();
        let session = self.session.clone();
        let stmt = self.stmts.get(&id).cloned().unwrap_or_default();
        let int_size = self.int_size;
        self.running.spawn(async move {
            let (conns, res) = crate::copyin::copy_block(
                &cfg, &db, &session, conns, lanes, rows, int_size, id, &stmt,
            )
            .await;
            let rows = res.as_ref().ok().copied();
            Done {
                ids: vec![id],
                lanes,
                conns,
                rows,
                res: res.map(|_| ()),
            }
        });
    }

    /// Count one more load by a `pg_restore` of its own, closing an idle loading connection
    /// if that would make more than `jobs` connections in all.
    fn take_slot(&mut self) {
        self.busy += 1;
        if self.busy + self.idle.len() > self.jobs
            && let Some(conn) = self.idle.pop()
        {
            tokio::spawn(pg::close(conn));
        }
    }

    /// Close the connections between blocks.
    async fn close_idle(&mut self) {
        for conn in self.idle.drain(..) {
            pg::close(conn).await;
        }
    }

    /// Wait for the schema and every block, then report the first failure.
    async fn finish_loads(&mut self, progress: &Progress) -> Result<()> {
        let task = format!("{}: loading the last tables", self.database);
        progress.start(&task, None);
        if let Some(h) = self.pre_data.take() {
            self.pre_done = true;
            if let Some(e) = join_error(h.await) {
                self.fail(e);
            }
        }
        loop {
            self.dispatch();
            if self.failed.is_some() {
                break;
            }
            match self.running.join_next().await {
                Some(done) => self.collect(done),
                None if self.queue.is_empty() => break,
                // Nothing runs, so no connection is in use: what is queued starts next.
                None => self.busy = 0,
            }
        }
        progress.finish(&task);
        if let Some(e) = self.failed.take() {
            self.stop().await;
            return Err(e);
        }
        self.close_idle().await;
        Ok(())
    }

    /// Stop every load (their processes are killed).
    async fn stop(&mut self) {
        if let Some(h) = self.pre_data.take() {
            h.abort();
            let _ = h.await;
        }
        self.running.shutdown().await;
        self.busy = 0;
        self.close_idle().await;
    }
}

/// What a finished load did.
struct Done {
    /// The entries it loaded.
    ids: Vec<i64>,
    /// The connections it counted as busy.
    lanes: usize,
    /// Its loading connections, for the next blocks.
    conns: Vec<PgConnection>,
    /// The rows its `COPY` stored, when it was one.
    rows: Option<u64>,
    res: Result<()>,
}

impl Done {
    /// A load by `pg_restore` (one connection of its own).
    fn of(ids: Vec<i64>, res: Result<()>) -> Self {
        Self {
            ids,
            lanes: 1,
            conns: Vec::new(),
            rows: None,
            res,
        }
    }
}

/// Run `pg_restore --exit-on-error <args> -d database` on the archive's header and table of
/// contents alone (stdin): for entries that need no data (schema, indexes, keys).
async fn restore_from_head(
    c: &PostgresComponent,
    database: &str,
    args: &[String],
    head: &[u8],
) -> Result<()> {
    let mut spec = tools::spec(&c.config, "pg_restore", database)
        .args(["--exit-on-error"])
        .args(args.iter().cloned())
        .args(["-d", database])
        .with_stdin();
    spec.stdout = false;
    let (run, tail) = tools::spawn(c.runner.as_ref(), &c.config, &spec).await?;
    let mut none = tokio::io::empty();
    tools::feed(run, tail, &mut none, head, &c.config, "pg_restore").await?;
    Ok(())
}

fn join_error(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Option<Error> {
    match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(Error::unexpected("a loading task failed").with_source(e)),
    }
}

/// Load data blocks (dump id, start; in archive order) with one `pg_restore --data-only`:
/// its input is `head` (header and table of contents), then each block's bytes from the
/// spool file as they are written.
async fn load_blocks(
    c: &PostgresComponent,
    database: &str,
    blocks: &[(i64, u64)],
    list: &std::path::Path,
    file: &std::path::Path,
    head: &[u8],
    mut rx: watch::Receiver<Written>,
) -> Result<()> {
    let ids: Vec<i64> = blocks.iter().map(|b| b.0).collect();
    write_list(list, &ids)?;
    let mut spec = tools::spec(&c.config, "pg_restore", database)
        .args([
            "--exit-on-error".to_owned(),
            "--data-only".to_owned(),
            "-L".to_owned(),
            list.display().to_string(),
            "-d".to_owned(),
            database.to_owned(),
        ])
        .with_stdin();
    spec.stdout = false;
    let (mut run, tail) = tools::spawn(c.runner.as_ref(), &c.config, &spec).await?;
    let mut stdin = run
        .stdin
        .take()
        .ok_or_else(|| Error::unexpected("pg_restore has no stdin"))?;
    let file = std::fs::File::open(file)
        .map_err(|e| Error::from_io(e, format!("cannot open {}", file.display())))?;
    let mut feeder = Feeder {
        file: Arc::new(file),
        buf: vec![0u8; BUF],
    };
    // Straight from the spool into the pipe (no intermediate copy); a write that fails means
    // pg_restore stopped, and its own error is what `finish` reports.
    let mut fed = stdin.write_all(head).await.is_ok();
    for &(id, start) in blocks {
        if !fed {
            break;
        }
        match feeder.block(&mut *stdin, &mut rx, id, start).await {
            Ok(ok) => fed = ok,
            Err(e) => {
                drop(stdin);
                let _ = run.handle.kill().await;
                let _ = tail.text(&c.config).await;
                return Err(e);
            }
        }
    }
    if fed {
        let _ = stdin.shutdown().await;
    }
    drop(stdin);
    tools::finish(run, tail, &c.config, "pg_restore").await?;
    if fed {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Source,
            "pg_restore stopped reading its input",
        ))
    }
}

/// Reads blocks out of the spool file for a loader.
struct Feeder {
    file: Arc<std::fs::File>,
    buf: Vec<u8>,
}

impl Feeder {
    /// Copy the block of entry `id` from `start` to its end into `to`, waiting for the copy
    /// where it is not written yet. `false` when the reader went away.
    async fn block(
        &mut self,
        to: &mut (dyn tokio::io::AsyncWrite + Send + Unpin),
        rx: &mut watch::Receiver<Written>,
        id: i64,
        start: u64,
    ) -> Result<bool> {
        let mut pos = start;
        loop {
            let (limit, end, stopped) = {
                let w = rx.borrow_and_update();
                let end = w.ends.get(&id).copied();
                (end.unwrap_or(w.bytes).min(w.bytes), end, w.stopped)
            };
            while pos < limit {
                let want = usize::try_from(limit - pos).unwrap_or(BUF).min(BUF);
                let file = self.file.clone();
                let mut buf = std::mem::take(&mut self.buf);
                let (buf, n) = tokio::task::spawn_blocking(move || {
                    let n = file.read_at(&mut buf[..want], pos);
                    (buf, n)
                })
                .await
                .map_err(|e| Error::unexpected("reading the spool failed").with_source(e))?;
                self.buf = buf;
                let n = n.map_err(|e| Error::from_io(e, "reading the spool"))?;
                if n == 0 {
                    break;
                }
                if to.write_all(&self.buf[..n]).await.is_err() {
                    return Ok(false);
                }
                pos += n as u64;
            }
            if end.is_some_and(|e| pos >= e) {
                return Ok(true);
            }
            if stopped {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("the dump ended inside the data block of entry {id}"),
                ));
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(
                    ErrorKind::Unexpected,
                    format!("the spooling stopped inside the data block of entry {id}"),
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn e(id: i64, desc: &str, section: i64, deps: &[i64]) -> EntryInfo {
        EntryInfo {
            dump_id: id,
            desc: desc.to_owned(),
            section,
            deps: deps.to_vec(),
            ..EntryInfo::default()
        }
    }

    /// Serves `data` in reads of 1 to 7 bytes, so that every unit of the archive (block
    /// headers included) is split between reads somewhere.
    struct Dribble {
        data: Vec<u8>,
        at: usize,
        next: usize,
    }

    impl tokio::io::AsyncRead for Dribble {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = (self.next % 7 + 1)
                .min(self.data.len() - self.at)
                .min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            self.next += 1;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_block_reaches_its_loader_whole_whatever_the_reads() {
        use crate::custom::tests::archive;
        let rows = |tag: &str, n: usize| -> Vec<Vec<u8>> {
            (0..n)
                .map(|i| format!("{i}\t{tag} row {i}\n").into_bytes())
                .collect()
        };
        let entries = [(1, true), (2, true), (3, false), (4, true)];
        let blocks = [
            (1, 1, rows("a", 40)),
            (1, 2, rows("b", 1)),
            (1, 4, rows("c", 25)),
        ];
        let data = archive(&entries, &blocks);
        let toc_len = archive(&entries, &[]).len();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::PgConfig::new("localhost", 5432, "u", "db");
        cfg.spool_dir = Some(dir.path().to_path_buf());
        let spool = Spool::create(&cfg, &Progress::none()).unwrap();
        let (events, mut rx_events) = mpsc::unbounded_channel();
        let (written, _rx_written) = watch::channel(Written::default());
        let dest = spool.dump_file();
        let hold = spool.hold();
        let from: BoxRead = Box::new(Dribble {
            data: data.clone(),
            at: 0,
            next: 0,
        });
        let copy = tokio::task::spawn_blocking(move || copy(from, &dest, hold, &events, &written));
        // Each block's loader takes its bytes as they come.
        let mut loaders = Vec::new();
        while let Some(ev) = rx_events.recv().await {
            if let Event::Block {
                dump_id,
                rows: Some(mut rx),
                ..
            } = ev
            {
                loaders.push(tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(m) = rx.recv().await {
                        got.extend_from_slice(&m);
                    }
                    (dump_id, got)
                }));
            }
        }
        let copied = copy.await.unwrap().unwrap();
        assert!(copied.scanned && copied.holes);
        assert_eq!(copied.bytes, data.len() as u64);
        let mut all = Vec::new();
        for (i, l) in loaders.into_iter().enumerate() {
            let (id, got) = l.await.unwrap();
            assert_eq!(id, [1, 2, 4][i]);
            // The block from its type byte and entry id to its end mark.
            assert_eq!(&got[..2], &[1, 0], "block of entry {id}");
            assert_eq!(got[2], u8::try_from(id).unwrap());
            all.extend_from_slice(&got);
        }
        assert_eq!(all, data[toc_len..]);
        // The spool has the dump's length and header; where the rows were, it holds zeros (or
        // the few header bytes read before the scanner knew a block began there).
        let spooled = std::fs::read(spool.dump_file()).unwrap();
        assert_eq!(spooled.len(), data.len());
        assert_eq!(spooled[..16], data[..16]);
        assert!((toc_len..data.len()).all(|i| spooled[i] == 0 || spooled[i] == data[i]));
        let zeros = spooled[toc_len..].iter().filter(|&&b| b == 0).count();
        assert!(zeros > (data.len() - toc_len) / 2, "{zeros} zeros");
        spool.remove().await;
    }

    #[test]
    fn only_indexes_and_keys_of_one_table_are_built_early() {
        let entries = [
            e(1, "SCHEMA", 2, &[]),
            e(2, "FUNCTION", 2, &[1]),
            e(10, "TABLE", 2, &[1]),
            e(11, "TABLE", 2, &[1]),
            e(20, "TABLE DATA", 3, &[10]),
            e(21, "TABLE DATA", 3, &[11]),
            e(22, "SEQUENCE SET", 3, &[]),
            e(30, "CONSTRAINT", 4, &[10]),        // primary key of 10
            e(31, "INDEX", 4, &[10, 2]),          // expression index using a function
            e(32, "INDEX", 4, &[11]),             // index of 11
            e(33, "FK CONSTRAINT", 4, &[11, 30]), // needs both tables
            e(34, "INDEX", 4, &[10, 11]),         // two tables (not a real case): not early
            e(35, "TRIGGER", 4, &[10]),
            e(36, "INDEX", 4, &[30]), // depends on a post-data entry
        ];
        let early = single_table_post_data(&entries);
        assert_eq!(early.get(&20), Some(&vec![30, 31]));
        assert_eq!(early.get(&21), Some(&vec![32]));
        assert_eq!(early.len(), 2);
    }
}
