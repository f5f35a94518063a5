//! The logical export: `SCAN` + `DUMP` + `PTTL`, and its restore with `RESTORE ... ABSTTL`.
//!
//! ## Format (artifact `keys`, extension `zdrkeys`)
//! ```text
//! "ZDRKEYS1"                                  8 bytes, magic and version
//! then records, each starting with one tag byte:
//!   'D' db:u32                                the following keys belong to database db
//!   'K' klen:u32 key expire_at_ms:i64 plen:u32 payload
//!                                             one key: its name, its absolute expiry in
//!                                             Unix milliseconds (-1: none) and its DUMP payload
//!   'E' count:u64                             the end, with the number of keys written
//! ```
//! All integers are little-endian. A stream without its `E` record, or whose count differs,
//! is truncated.

use std::collections::BTreeMap;

use fred::prelude::{Client, ClientLike};
use fred::types::{CustomCommand, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use zdr_core::{
    ArtifactReader, ArtifactSink, BackupKind, Error, ErrorKind, Manifest, Progress, RestoreOutcome,
    Result, SourceFacts,
};

use crate::{FACTS_FORMAT, RedisComponent, RedisConfig, RedisFacts, RestoreOptions, client};

/// The magic at the start of a logical export.
pub const MAGIC: &[u8; 8] = b"ZDRKEYS1";
/// The artifact's name.
pub const ARTIFACT: &str = "keys";
/// The artifact's extension.
pub const EXT: &str = "zdrkeys";

const SCAN_COUNT: u32 = 1000;
const RESTORE_BATCH: usize = 200;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn werr(e: std::io::Error) -> Error {
    Error::from_io(e, "cannot write the key export")
}

pub(crate) async fn backup(
    r: &RedisComponent,
    sink: &mut dyn ArtifactSink,
    pattern: Option<&str>,
    only_db: Option<u32>,
    progress: &Progress,
) -> Result<SourceFacts> {
    let c = &r.config;
    let admin = client::connect(c, 0).await?;
    let server = client::info(c, &admin, "server").await?;
    let redis_version = server.get("redis_version").cloned().unwrap_or_default();
    let info_keys = client::keyspace(&client::info(c, &admin, "keyspace").await?);
    let before = client::activity(c, &admin).await?;
    let dbs: Vec<u32> = match only_db {
        Some(db) => {
            // An unknown database fails here, as bad input.
            let probe = client::connect(c, db).await?;
            let _ = fred::prelude::ClientLike::quit(&probe).await;
            vec![db]
        }
        None => info_keys.keys().copied().collect(),
    };
    let task = format!("redis SCAN/DUMP {}:{}", c.host, c.port);
    progress.start(&task, None);
    let mut w = sink.create(ARTIFACT, EXT).await?;
    w.write_all(MAGIC).await.map_err(werr)?;
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    let mut bytes = MAGIC.len() as u64;
    let mut total = 0u64;
    for db in dbs {
        let cl = client::connect(c, db).await?;
        let mut rec = vec![b'D'];
        rec.extend_from_slice(&db.to_le_bytes());
        w.write_all(&rec).await.map_err(werr)?;
        bytes += rec.len() as u64;
        let mut cursor = "0".to_owned();
        loop {
            let (next, keys) = client::scan_page(c, &cl, &cursor, pattern, SCAN_COUNT).await?;
            for chunk in keys.chunks(RESTORE_BATCH) {
                let dumps = client::dump_batch(c, &cl, chunk).await?;
                let now = now_ms();
                for (k, d) in chunk.iter().zip(dumps) {
                    let Some((payload, pttl)) = d else { continue };
                    let expire_at: i64 = if pttl >= 0 { now + pttl } else { -1 };
                    let mut rec = Vec::with_capacity(1 + 4 + k.len() + 8 + 4 + payload.len());
                    rec.push(b'K');
                    rec.extend_from_slice(&len32(k.len())?.to_le_bytes());
                    rec.extend_from_slice(k);
                    rec.extend_from_slice(&expire_at.to_le_bytes());
                    rec.extend_from_slice(&len32(payload.len())?.to_le_bytes());
                    rec.extend_from_slice(&payload);
                    w.write_all(&rec).await.map_err(werr)?;
                    bytes += rec.len() as u64;
                    progress.advance(&task, rec.len() as u64);
                    *counts.entry(db).or_insert(0) += 1;
                    total += 1;
                }
            }
            cursor = next;
            if cursor == "0" {
                break;
            }
        }
        let _ = fred::prelude::ClientLike::quit(&cl).await;
    }
    let mut rec = vec![b'E'];
    rec.extend_from_slice(&total.to_le_bytes());
    w.write_all(&rec).await.map_err(werr)?;
    bytes += rec.len() as u64;
    w.finish().await?;
    progress.finish(&task);
    let writes_during = client::activity(c, &admin).await?.writes_since(&before);
    let _ = fred::prelude::ClientLike::quit(&admin).await;
    progress.info(format!(
        "exported {total} key(s) from redis {redis_version} (SCAN + DUMP{})",
        pattern.map(|p| format!(", MATCH {p}")).unwrap_or_default()
    ));
    let facts = RedisFacts {
        format: FACTS_FORMAT,
        mode: "logical".into(),
        path: "scan-dump".into(),
        transfer: None,
        artifact: ARTIFACT.into(),
        redis_version,
        keys: counts,
        info_keys,
        writes_during,
        bytes,
        pattern: pattern.map(str::to_owned),
        db: only_db,
        ..RedisFacts::default()
    };
    Ok(SourceFacts {
        kind: BackupKind::Logical,
        facts: serde_json::to_value(&facts)
            .map_err(|e| Error::unexpected("cannot serialize facts").with_source(e))?,
    })
}

fn len32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::new(ErrorKind::Unsupported, "a key or value over 4 GiB"))
}

/// One key read back from an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedKey {
    /// The database.
    pub db: u32,
    /// The key.
    pub key: Vec<u8>,
    /// Absolute expiry in Unix milliseconds, `-1` for none.
    pub expire_at_ms: i64,
    /// The `DUMP` payload.
    pub payload: Vec<u8>,
}

/// Reads an export record by record.
pub struct ExportReader<R> {
    inner: R,
    db: u32,
    seen: u64,
    ended: bool,
}

fn trunc() -> Error {
    Error::integrity("the key export is truncated or corrupt")
}

impl<R: tokio::io::AsyncRead + Unpin> ExportReader<R> {
    /// Check the magic and start reading.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the magic is wrong.
    pub async fn new(mut inner: R) -> Result<Self> {
        let mut m = [0u8; 8];
        inner.read_exact(&mut m).await.map_err(|_| trunc())?;
        if &m != MAGIC {
            return Err(Error::integrity("not a zdr key export (bad magic)"));
        }
        Ok(Self {
            inner,
            db: 0,
            seen: 0,
            ended: false,
        })
    }

    async fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.inner.read_exact(&mut b).await.map_err(io_or_trunc)?;
        Ok(u32::from_le_bytes(b))
    }

    async fn bytes(&mut self, n: u32) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        let got = (&mut self.inner)
            .take(u64::from(n))
            .read_to_end(&mut v)
            .await
            .map_err(io_or_trunc)?;
        if got != n as usize {
            return Err(trunc());
        }
        Ok(v)
    }

    /// The next key, or `None` after the end record.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] for a truncated or corrupt stream.
    pub async fn next(&mut self) -> Result<Option<ExportedKey>> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let mut tag = [0u8; 1];
            self.inner.read_exact(&mut tag).await.map_err(io_or_trunc)?;
            match tag[0] {
                b'D' => self.db = self.u32().await?,
                b'K' => {
                    let kl = self.u32().await?;
                    let key = self.bytes(kl).await?;
                    let mut e = [0u8; 8];
                    self.inner.read_exact(&mut e).await.map_err(io_or_trunc)?;
                    let pl = self.u32().await?;
                    let payload = self.bytes(pl).await?;
                    self.seen += 1;
                    return Ok(Some(ExportedKey {
                        db: self.db,
                        key,
                        expire_at_ms: i64::from_le_bytes(e),
                        payload,
                    }));
                }
                b'E' => {
                    let mut n = [0u8; 8];
                    self.inner.read_exact(&mut n).await.map_err(io_or_trunc)?;
                    if u64::from_le_bytes(n) != self.seen {
                        return Err(trunc());
                    }
                    // Read to the end: the artifact reader checks the hash there.
                    let mut rest = Vec::new();
                    self.inner
                        .read_to_end(&mut rest)
                        .await
                        .map_err(io_or_trunc)?;
                    if !rest.is_empty() {
                        return Err(trunc());
                    }
                    self.ended = true;
                }
                _ => return Err(trunc()),
            }
        }
    }
}

fn io_or_trunc(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        trunc()
    } else {
        Error::from_io(e, "cannot read the key export")
    }
}

/// Redis glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), as `SCAN MATCH` does.
#[must_use]
pub fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_match(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some((&c, srest)) = s.split_first() else {
                return false;
            };
            let (neg, mut p) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match p {
                    [] => return false,
                    [b']', r @ ..] => {
                        p = r;
                        break;
                    }
                    [b'\\', x, r @ ..] => {
                        matched |= *x == c;
                        p = r;
                    }
                    [a, b'-', b, r @ ..] if *b != b']' => {
                        let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                        matched |= (lo..=hi).contains(&c);
                        p = r;
                    }
                    [x, r @ ..] => {
                        matched |= *x == c;
                        p = r;
                    }
                }
            }
            matched != neg && glob_match(p, srest)
        }
        Some((b'\\', [x, rest @ ..])) => s.first() == Some(x) && glob_match(rest, &s[1..]),
        Some((x, rest)) => s.first() == Some(x) && glob_match(rest, &s[1..]),
    }
}

struct Batch {
    db: u32,
    keys: Vec<ExportedKey>,
}

pub(crate) async fn restore(
    r: &RedisComponent,
    options: &RestoreOptions,
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    restore_counted(r, options, backup, facts, from, progress)
        .await
        .map(|(o, _)| o)
}

/// The restore, and how many keys were skipped because their expiry had passed.
pub(crate) async fn restore_counted(
    r: &RedisComponent,
    options: &RestoreOptions,
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    progress: &Progress,
) -> Result<(RestoreOutcome, u64)> {
    let c = &r.config;
    let record = backup
        .artifacts
        .iter()
        .find(|a| a.name == facts.artifact)
        .ok_or_else(|| {
            Error::integrity(format!(
                "backup {} has no artifact {}",
                backup.id, facts.artifact
            ))
        })?;
    let stream = from.open(record).await?;
    let mut reader = ExportReader::new(BufReader::with_capacity(256 * 1024, stream)).await?;
    let replace = options.replace;
    let pattern = options.pattern.clone();
    let task = format!("redis RESTORE {}:{}", c.host, c.port);
    progress.start(&task, Some(record.size));
    let mut clients: BTreeMap<u32, Client> = BTreeMap::new();
    let mut stats = Stats::default();
    let mut batch = Batch {
        db: 0,
        keys: Vec::new(),
    };
    while let Some(k) = reader.next().await? {
        if let Some(p) = &pattern
            && !glob_match(p.as_bytes(), &k.key)
        {
            stats.skipped += 1;
            continue;
        }
        if k.db != batch.db || batch.keys.len() >= RESTORE_BATCH {
            flush(c, &mut clients, &mut batch, replace, &mut stats).await?;
            batch.db = k.db;
        }
        progress.advance(&task, (k.key.len() + k.payload.len()) as u64);
        batch.keys.push(k);
    }
    flush(c, &mut clients, &mut batch, replace, &mut stats).await?;
    for cl in clients.values() {
        let _ = fred::prelude::ClientLike::quit(cl).await;
    }
    progress.finish(&task);
    let mut notes = vec![format!(
        "{} key(s) restored{}",
        stats.restored,
        if replace {
            " (existing keys replaced)"
        } else {
            ""
        }
    )];
    if stats.expired > 0 {
        notes.push(format!(
            "{} key(s) had expired since the backup and were not restored",
            stats.expired
        ));
    }
    if stats.skipped > 0 {
        notes.push(format!(
            "{} key(s) did not match the pattern",
            stats.skipped
        ));
    }
    if !stats.existing.is_empty() {
        let shown: Vec<String> = stats.existing.iter().take(20).cloned().collect();
        notes.push(format!(
            "{} key(s) already exist and were left untouched (restore with replace to overwrite): {}{}",
            stats.existing.len(),
            shown.join(", "),
            if stats.existing.len() > 20 { ", ..." } else { "" }
        ));
    }
    progress.info(notes.join("; "));
    Ok((
        RestoreOutcome {
            target: format!("redis at {}:{}", c.host, c.port),
            items: stats.restored,
            bytes: record.size,
            notes,
        },
        stats.expired,
    ))
}

#[derive(Default)]
struct Stats {
    restored: u64,
    expired: u64,
    skipped: u64,
    existing: Vec<String>,
}

async fn flush(
    c: &RedisConfig,
    clients: &mut BTreeMap<u32, Client>,
    batch: &mut Batch,
    replace: bool,
    stats: &mut Stats,
) -> Result<()> {
    if batch.keys.is_empty() {
        return Ok(());
    }
    if let std::collections::btree_map::Entry::Vacant(slot) = clients.entry(batch.db) {
        slot.insert(client::connect(c, batch.db).await?);
    }
    let Some(cl) = clients.get(&batch.db) else {
        return Err(Error::unexpected("no client for the database"));
    };
    let now = now_ms();
    let pipe = cl.pipeline();
    let mut sent = Vec::new();
    for k in batch.keys.drain(..) {
        if k.expire_at_ms >= 0 && k.expire_at_ms <= now {
            stats.expired += 1;
            continue;
        }
        let ttl = if k.expire_at_ms < 0 {
            0
        } else {
            k.expire_at_ms
        };
        let mut args = vec![
            Value::Bytes(k.key.clone().into()),
            Value::from(ttl),
            Value::Bytes(k.payload.into()),
        ];
        if replace {
            args.push(Value::from("REPLACE"));
        }
        args.push(Value::from("ABSTTL"));
        let _: () = pipe
            .custom(CustomCommand::new_static("RESTORE", None, false), args)
            .await
            .map_err(|e| client::fred_error(c, &e, "redis RESTORE failed"))?;
        sent.push(k.key);
    }
    if sent.is_empty() {
        return Ok(());
    }
    let results = pipe.try_all::<Value>().await;
    for (key, res) in sent.iter().zip(results) {
        match res {
            Ok(_) => stats.restored += 1,
            Err(e) if e.details().to_ascii_uppercase().contains("BUSYKEY") => {
                stats
                    .existing
                    .push(String::from_utf8_lossy(key).into_owned());
            }
            Err(e) => {
                return Err(client::fred_error(
                    c,
                    &e,
                    &format!("redis RESTORE of {} failed", String::from_utf8_lossy(key)),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"user:*", b"user:1"));
        assert!(!glob_match(b"user:*", b"session:1"));
        assert!(glob_match(b"h?llo", b"hello"));
        assert!(glob_match(b"h[ae]llo", b"hallo"));
        assert!(!glob_match(b"h[^e]llo", b"hello"));
        assert!(glob_match(b"k[0-9]", b"k7"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(glob_match(b"*", b""));
    }

    #[tokio::test]
    async fn export_reader_reads_and_catches_truncation() -> Result<()> {
        let mut v = MAGIC.to_vec();
        v.push(b'D');
        v.extend_from_slice(&2u32.to_le_bytes());
        v.push(b'K');
        v.extend_from_slice(&1u32.to_le_bytes());
        v.push(b'a');
        v.extend_from_slice(&(-1i64).to_le_bytes());
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(b"xy");
        v.push(b'E');
        v.extend_from_slice(&1u64.to_le_bytes());
        let mut r = ExportReader::new(v.as_slice()).await?;
        let k = r.next().await?.ok_or_else(|| Error::unexpected("no key"))?;
        assert_eq!(
            (k.db, k.key.as_slice(), k.payload.as_slice()),
            (2, &b"a"[..], &b"xy"[..])
        );
        assert!(r.next().await?.is_none());
        for cut in 8..v.len() {
            let mut r = ExportReader::new(&v[..cut]).await?;
            let mut res = Ok(None);
            for _ in 0..3 {
                res = r.next().await;
                if res.is_err() {
                    break;
                }
            }
            assert!(res.is_err(), "cut {cut}");
        }
        Ok(())
    }
}
