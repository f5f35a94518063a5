//! Physical backup: the RDB over the replication protocol, or the `BGSAVE` fallback.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use zdr_core::{ArtifactSink, BackupKind, Error, ErrorKind, Progress, Result, SourceFacts};

use crate::client;
use crate::rdb::{self, RdbSummary};
use crate::repl::{Conn, SyncCommand};
use crate::{FACTS_FORMAT, KeyDigest, RedisComponent, RedisConfig, RedisFacts};

/// The artifact's name.
pub(crate) const ARTIFACT: &str = "dump";

/// A `Read` over chunks sent from the async side.
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.current = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A validator on a blocking thread, fed chunk by chunk.
pub(crate) struct Validator {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    handle: tokio::task::JoinHandle<Result<RdbSummary>>,
}

impl Validator {
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::channel(4);
        let handle = tokio::task::spawn_blocking(move || {
            rdb::validate(ChunkReader {
                rx,
                current: Vec::new(),
                pos: 0,
            })
        });
        Self {
            tx: Some(tx),
            handle,
        }
    }

    /// Feed a chunk; `false` when the validator already stopped (it failed: see `finish`).
    pub(crate) async fn feed(&mut self, chunk: Vec<u8>) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    pub(crate) async fn finish(mut self) -> Result<RdbSummary> {
        self.tx = None;
        self.handle
            .await
            .map_err(|e| Error::unexpected(format!("the RDB validator failed: {e}")))?
    }
}

fn facts_json(f: &RedisFacts) -> Result<serde_json::Value> {
    serde_json::to_value(f).map_err(|e| Error::unexpected("cannot serialize facts").with_source(e))
}

pub(crate) async fn backup(
    r: &RedisComponent,
    sink: &mut dyn ArtifactSink,
    progress: &Progress,
) -> Result<SourceFacts> {
    let c = &r.config;
    let admin = client::connect(c, 0).await?;
    let server = client::info(c, &admin, "server").await?;
    let redis_version = server.get("redis_version").cloned().unwrap_or_default();
    let persistence = client::info(c, &admin, "persistence").await?;
    let aof_enabled = persistence.get("aof_enabled").is_some_and(|v| v == "1");
    let info_keys = client::keyspace(&client::info(c, &admin, "keyspace").await?);
    let before = client::activity(c, &admin).await?;

    let mut conn = Conn::connect(c).await?;
    let started = conn.start_sync(c).await?;
    let (path, transfer, summary) = match started {
        Some(cmd) => {
            let path = match cmd {
                SyncCommand::Psync => "psync",
                SyncCommand::Sync => "sync",
            };
            progress.info(format!(
                "fetching the RDB of redis {redis_version} at {}:{} over the replication protocol ({})",
                c.host,
                c.port,
                path.to_uppercase()
            ));
            let mut payload = conn.payload_start(c).await?;
            let task = format!("redis RDB {}:{}", c.host, c.port);
            progress.start(&task, None);
            let mut writer = sink.create(ARTIFACT, "rdb").await?;
            let mut validator = Validator::start();
            while let Some(chunk) = conn.next_chunk(c, &mut payload).await? {
                writer
                    .write_all(&chunk)
                    .await
                    .map_err(|e| Error::from_io(e, "cannot write the RDB artifact"))?;
                progress.advance(&task, chunk.len() as u64);
                if !validator.feed(chunk).await {
                    break;
                }
            }
            conn.close().await;
            let summary = validator.finish().await?;
            writer.finish().await?;
            progress.finish(&task);
            (path, payload.transfer.as_str(), summary)
        }
        None => {
            conn.close().await;
            let summary = bgsave_copy(r, &admin, sink, progress).await?;
            ("bgsave-copy", "file", summary)
        }
    };
    let writes_during = client::activity(c, &admin).await?.writes_since(&before);
    let aof_files = match (r.local_data_dir(), aof_enabled) {
        (Some(dir), true) => copy_aof_set(c, &admin, dir, sink, progress).await?,
        (None, true) => {
            progress.warn(
                "AOF is on but its files are not on this machine (no data_dir, or redis runs in a container): only the RDB is backed up".to_owned(),
            );
            Vec::new()
        }
        _ => Vec::new(),
    };
    check_counts(&summary.keys, &info_keys, writes_during)?;
    let sample = sample_digests(c, &summary.keys).await?;
    let sample_tolerance = client::activity(c, &admin).await?.writes_since(&before);
    let _ = fred::prelude::ClientLike::quit(&admin).await;
    progress.info(format!(
        "RDB v{} checked: {} bytes, CRC64 {}, {} key(s) in {} database(s); path {path}, transfer {transfer}",
        summary.version,
        summary.bytes,
        summary.crc64.as_deref().unwrap_or("off"),
        summary.keys.values().sum::<u64>(),
        summary.keys.len()
    ));
    let facts = RedisFacts {
        format: FACTS_FORMAT,
        mode: "physical".into(),
        path: path.into(),
        transfer: Some(transfer.into()),
        artifact: ARTIFACT.into(),
        redis_version,
        rdb_version: Some(summary.version),
        rdb_crc64: summary.crc64.clone(),
        keys: summary.keys.clone(),
        volatile: summary.volatile.clone(),
        info_keys,
        writes_during,
        sample,
        sample_tolerance,
        bytes: summary.bytes,
        pattern: None,
        db: None,
        aof_enabled,
        aof_files,
    };
    Ok(SourceFacts {
        kind: BackupKind::Physical,
        facts: facts_json(&facts)?,
    })
}

/// The RDB's key counts against `INFO keyspace` taken before the transfer: every database's
/// difference, and the sum of the differences, must be at most the number of writes the
/// server made during the transfer.
pub(crate) fn check_counts(
    rdb: &BTreeMap<u32, u64>,
    info: &BTreeMap<u32, u64>,
    writes_during: u64,
) -> Result<()> {
    let dbs: std::collections::BTreeSet<u32> = rdb.keys().chain(info.keys()).copied().collect();
    let mut total = 0u64;
    let mut problems = Vec::new();
    for db in dbs {
        let a = rdb.get(&db).copied().unwrap_or(0);
        let b = info.get(&db).copied().unwrap_or(0);
        let d = a.abs_diff(b);
        total += d;
        if d > writes_during {
            problems.push(format!(
                "db{db}: {a} key(s) in the RDB, {b} in INFO keyspace"
            ));
        }
    }
    if !problems.is_empty() || total > writes_during {
        return Err(Error::integrity(format!(
            "the RDB's key counts do not match the server beyond the {writes_during} write(s) made during the transfer: {}",
            if problems.is_empty() {
                format!("{total} key(s) differ in total")
            } else {
                problems.join("; ")
            }
        )));
    }
    Ok(())
}

/// SHA-256 of `DUMP` for up to `sample_keys` keys of each database.
async fn sample_digests(c: &RedisConfig, keys: &BTreeMap<u32, u64>) -> Result<Vec<KeyDigest>> {
    let mut out = Vec::new();
    if c.sample_keys == 0 {
        return Ok(out);
    }
    for (&db, &n) in keys {
        if n == 0 {
            continue;
        }
        let client = client::connect(c, db).await?;
        // Only keys whose DUMP is byte-for-byte reproducible on another server: hash tables
        // (large sets and hashes) serialize in the order of a per-process seeded hash.
        let want = c.sample_keys as usize;
        let mut cursor = "0".to_owned();
        let mut picked: Vec<Vec<u8>> = Vec::new();
        let mut looked = 0usize;
        loop {
            let (next, page) = client::scan_page(c, &client, &cursor, None, 100).await?;
            looked += page.len();
            let enc = client::encodings(c, &client, &page).await?;
            picked.extend(
                page.into_iter()
                    .zip(enc)
                    .filter(|(_, e)| e.as_deref().is_some_and(|e| e != "hashtable"))
                    .map(|(k, _)| k),
            );
            cursor = next;
            if cursor == "0" || picked.len() >= want || looked >= want * 20 {
                break;
            }
        }
        picked.truncate(want);
        let dumps = client::dump_batch(c, &client, &picked).await?;
        for (k, d) in picked.iter().zip(dumps) {
            if let Some((payload, _)) = d {
                out.push(KeyDigest {
                    db,
                    key_hex: hex::encode(k),
                    sha256: hex::encode(sha2::Sha256::digest(&payload)),
                });
            }
        }
        let _ = fred::prelude::ClientLike::quit(&client).await;
    }
    Ok(out)
}

/// `BGSAVE`, wait until `LASTSAVE` moves, then stream `data_dir/dbfilename` into the artifact.
async fn bgsave_copy(
    r: &RedisComponent,
    admin: &fred::prelude::Client,
    sink: &mut dyn ArtifactSink,
    progress: &Progress,
) -> Result<RdbSummary> {
    let c = &r.config;
    let Some(dir) = r.local_data_dir() else {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "redis refuses SYNC and PSYNC (renamed or disabled), and no data_dir is configured for the BGSAVE fallback",
        )
        .with_hint("set data_dir (the server's `dir`) in the component settings when zdr runs beside redis, or make a logical backup"));
    };
    progress.warn(format!(
        "redis refuses SYNC/PSYNC: falling back to BGSAVE and copying {}",
        dir.join(&c.dbfilename).display()
    ));
    let last = lastsave(c, admin).await?;
    let started = std::time::Instant::now();
    match client::cmd(c, admin, "BGSAVE", vec![]).await {
        Ok(_) => {}
        Err(e) if e.message().contains("already in progress") => {}
        Err(e) => return Err(e),
    }
    // BGSAVE forks before it answers: the save is done when no save is in progress any more;
    // LASTSAVE moving confirms it (it has a one-second resolution).
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = lastsave(c, admin).await?;
        let p = client::info(c, admin, "persistence").await?;
        if p.get("rdb_bgsave_in_progress").is_some_and(|v| v == "0")
            && (now != last || started.elapsed() > Duration::from_millis(1100))
        {
            if p.get("rdb_last_bgsave_status").is_some_and(|v| v != "ok") {
                return Err(Error::new(
                    ErrorKind::Source,
                    "redis BGSAVE failed (rdb_last_bgsave_status is not ok)",
                ));
            }
            break;
        }
        if started.elapsed() > c.timeout * 10 {
            return Err(
                Error::new(ErrorKind::Source, "redis BGSAVE did not finish in time").temporary(),
            );
        }
    }
    let path = dir.join(&c.dbfilename);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| Error::from_io(e, format!("cannot open {}", path.display())))?;
    let task = format!("copy {}", path.display());
    progress.start(&task, file.metadata().await.ok().map(|m| m.len()));
    let mut writer = sink.create(ARTIFACT, "rdb").await?;
    let mut validator = Validator::start();
    loop {
        let mut buf = vec![0u8; 256 * 1024];
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        writer
            .write_all(&buf)
            .await
            .map_err(|e| Error::from_io(e, "cannot write the RDB artifact"))?;
        progress.advance(&task, n as u64);
        if !validator.feed(buf).await {
            break;
        }
    }
    let summary = validator.finish().await?;
    writer.finish().await?;
    progress.finish(&task);
    Ok(summary)
}

/// Copy the multi-part AOF set: `*.manifest` of `data_dir/appendonlydir`, then every file it
/// lists, after any AOF rewrite has finished (a rewrite replaces the set).
async fn copy_aof_set(
    c: &RedisConfig,
    admin: &fred::prelude::Client,
    dir: &std::path::Path,
    sink: &mut dyn ArtifactSink,
    progress: &Progress,
) -> Result<Vec<crate::AofFile>> {
    let started = std::time::Instant::now();
    loop {
        let p = client::info(c, admin, "persistence").await?;
        if p.get("aof_rewrite_in_progress").is_none_or(|v| v == "0") {
            break;
        }
        if started.elapsed() > c.timeout {
            return Err(
                Error::new(ErrorKind::Source, "an AOF rewrite did not finish in time").temporary(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let aof_dir = dir.join("appendonlydir");
    let mut manifest = None;
    let mut rd = tokio::fs::read_dir(&aof_dir)
        .await
        .map_err(|e| Error::from_io(e, format!("cannot list {}", aof_dir.display())))?;
    while let Some(e) = rd
        .next_entry()
        .await
        .map_err(|e| Error::from_io(e, format!("cannot list {}", aof_dir.display())))?
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".manifest") {
            manifest = Some(name);
        }
    }
    let manifest = manifest.ok_or_else(|| {
        Error::new(
            ErrorKind::Source,
            format!("no AOF manifest in {}", aof_dir.display()),
        )
    })?;
    let text = tokio::fs::read_to_string(aof_dir.join(&manifest))
        .await
        .map_err(|e| Error::from_io(e, format!("cannot read the AOF manifest {manifest}")))?;
    let mut files = vec![(manifest.clone(), "manifest".to_owned())];
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let get = |k: &str| {
            words
                .iter()
                .position(|w| *w == k)
                .and_then(|i| words.get(i + 1))
        };
        if let (Some(f), Some(t)) = (get("file"), get("type")) {
            if f.contains('/') || f.starts_with('.') {
                return Err(Error::new(
                    ErrorKind::Source,
                    format!("unexpected file name {f:?} in the AOF manifest"),
                ));
            }
            files.push(((*f).to_owned(), (*t).to_owned()));
        }
    }
    let mut out = Vec::new();
    for (i, (file, kind)) in files.into_iter().enumerate() {
        let path = aof_dir.join(&file);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot open {}", path.display())))?;
        let size = f
            .metadata()
            .await
            .map_err(|e| Error::from_io(e, format!("cannot stat {}", path.display())))?
            .len();
        let ext = if kind == "manifest" {
            "manifest"
        } else if file.ends_with(".rdb") {
            "rdb"
        } else {
            "aof"
        };
        let artifact = format!("aof.{i}.{kind}");
        let mut w = sink.create(&artifact, ext).await?;
        let mut limited = f.take(size);
        let bytes = tokio::io::copy(&mut limited, &mut w)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot copy {}", path.display())))?;
        w.finish().await?;
        out.push(crate::AofFile {
            file,
            artifact,
            kind,
            bytes,
        });
    }
    progress.info(format!(
        "AOF is on: copied the multi-part AOF set ({} file(s), manifest {manifest})",
        out.len()
    ));
    Ok(out)
}

async fn lastsave(c: &RedisConfig, admin: &fred::prelude::Client) -> Result<i64> {
    Ok(client::cmd(c, admin, "LASTSAVE", vec![])
        .await?
        .as_i64()
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_writes_pass() {
        let rdb = BTreeMap::from([(0, 10), (1, 5)]);
        let info = BTreeMap::from([(0, 12), (1, 5)]);
        assert!(check_counts(&rdb, &info, 2).is_ok());
        assert!(check_counts(&rdb, &info, 1).is_err());
        assert!(check_counts(&rdb, &BTreeMap::from([(0, 10)]), 0).is_err());
    }
}
