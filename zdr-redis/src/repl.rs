//! The replica side of the replication handshake on a raw TCP connection (fred does not
//! speak `PSYNC`): `AUTH`, `REPLCONF`, `PSYNC ? -1` (or `SYNC`), then the RDB payload in
//! either transfer form, streamed to a callback.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use zdr_core::{Error, ErrorKind, Result};

use crate::RedisConfig;

/// How the server sent the RDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// `$<len>\r\n` then `len` bytes (the server wrote the RDB to its disk first).
    Disk,
    /// `$EOF:<40-byte mark>\r\n`, the bytes, then the mark (diskless sync).
    Diskless,
}

impl Transfer {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Diskless => "diskless",
        }
    }
}

/// Which command started the transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncCommand {
    Psync,
    Sync,
}

/// The state of one RDB payload being read.
pub(crate) struct Payload {
    pub(crate) transfer: Transfer,
    left: u64,
    mark: Vec<u8>,
    pending: Vec<u8>,
    done: bool,
    pub(crate) total: u64,
}

pub(crate) struct Conn {
    io: BufReader<TcpStream>,
    timeout: Duration,
}

#[allow(dead_code)] // integer and array payloads are parsed for completeness
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn source(c: &RedisConfig, msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Source, c.scrub(&msg.into()))
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Conn {
    pub(crate) async fn connect(c: &RedisConfig) -> Result<Self> {
        let addr = format!("{}:{}", c.host, c.port);
        let stream = tokio::time::timeout(c.timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                source(c, format!("cannot connect to redis at {addr}: timed out")).temporary()
            })?
            .map_err(|e| {
                source(c, format!("cannot connect to redis at {addr}: {e}"))
                    .temporary()
                    .with_hint(
                        "check host and port in [components.<name>], and that redis is running",
                    )
            })?;
        let mut conn = Self {
            io: BufReader::with_capacity(64 * 1024, stream),
            timeout: c.timeout,
        };
        if let Some(pw) = &c.password {
            let reply = match &c.username {
                Some(u) => {
                    conn.command(c, &[b"AUTH", u.as_bytes(), pw.expose().as_bytes()])
                        .await?
                }
                None => conn.command(c, &[b"AUTH", pw.expose().as_bytes()]).await?,
            };
            if let Reply::Error(e) = reply {
                return Err(auth_error(c, &e));
            }
        }
        Ok(conn)
    }

    async fn line(&mut self, c: &RedisConfig) -> Result<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(self.timeout, self.io.read_until(b'\n', &mut buf))
            .await
            .map_err(|_| source(c, "redis did not answer in time").temporary())?
            .map_err(|e| source(c, format!("connection to redis failed: {e}")).temporary())?;
        if n == 0 {
            return Err(source(c, "redis closed the connection").temporary());
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn read_reply<'a>(
        &'a mut self,
        c: &'a RedisConfig,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply>> + Send + 'a>> {
        Box::pin(async move {
            let line = self.line(c).await?;
            let (tag, rest) = line.split_at(line.len().min(1));
            match tag {
                "+" => Ok(Reply::Simple(rest.to_owned())),
                "-" => Ok(Reply::Error(rest.to_owned())),
                ":" => rest
                    .parse()
                    .map(Reply::Int)
                    .map_err(|_| source(c, format!("bad integer reply {rest:?}"))),
                "$" => {
                    let n: i64 = rest
                        .parse()
                        .map_err(|_| source(c, format!("bad bulk length {rest:?}")))?;
                    if n < 0 {
                        return Ok(Reply::Bulk(None));
                    }
                    let mut v = vec![0u8; usize::try_from(n).unwrap_or(0) + 2];
                    self.io
                        .read_exact(&mut v)
                        .await
                        .map_err(|e| source(c, format!("connection to redis failed: {e}")))?;
                    v.truncate(v.len() - 2);
                    Ok(Reply::Bulk(Some(v)))
                }
                "*" => {
                    let n: i64 = rest
                        .parse()
                        .map_err(|_| source(c, format!("bad array length {rest:?}")))?;
                    let mut items = Vec::new();
                    for _ in 0..n.max(0) {
                        items.push(self.read_reply(c).await?);
                    }
                    Ok(Reply::Array(items))
                }
                _ => Err(source(c, format!("unexpected reply from redis: {line:?}"))),
            }
        })
    }

    pub(crate) async fn command(&mut self, c: &RedisConfig, args: &[&[u8]]) -> Result<Reply> {
        self.io
            .get_mut()
            .write_all(&encode(args))
            .await
            .map_err(|e| source(c, format!("cannot send to redis: {e}")).temporary())?;
        self.read_reply(c).await
    }

    /// `REPLCONF`, then `PSYNC ? -1` (or `SYNC` when `PSYNC` is unknown). Returns the
    /// command that worked, or `Ok(None)` when both are unknown (renamed away).
    pub(crate) async fn start_sync(&mut self, c: &RedisConfig) -> Result<Option<SyncCommand>> {
        let port = self
            .io
            .get_ref()
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
            .to_string();
        // Older servers or proxies may refuse REPLCONF: PSYNC/SYNC decide.
        let _ = self
            .command(c, &[b"REPLCONF", b"listening-port", port.as_bytes()])
            .await?;
        let _ = self
            .command(c, &[b"REPLCONF", b"capa", b"eof", b"capa", b"psync2"])
            .await?;
        self.io
            .get_mut()
            .write_all(&encode(&[b"PSYNC", b"?", b"-1"]))
            .await
            .map_err(|e| source(c, format!("cannot send to redis: {e}")).temporary())?;
        let line = self.line_skipping_keepalives(c).await?;
        if line.starts_with("+FULLRESYNC") {
            return Ok(Some(SyncCommand::Psync));
        }
        if let Some(e) = line.strip_prefix('-') {
            check_auth(c, e)?;
            if !is_unknown_command(e) {
                return Err(source(c, format!("redis refused PSYNC: {e}")));
            }
        } else {
            return Err(source(c, format!("unexpected answer to PSYNC: {line:?}")));
        }
        self.io
            .get_mut()
            .write_all(&encode(&[b"SYNC"]))
            .await
            .map_err(|e| source(c, format!("cannot send to redis: {e}")).temporary())?;
        // SYNC answers with the payload header directly; peek at an error first.
        let first = self.peek_after_keepalives(c).await?;
        if first == b'-' {
            let line = self.line(c).await?;
            let e = line.trim_start_matches('-');
            check_auth(c, e)?;
            if is_unknown_command(e) {
                return Ok(None);
            }
            return Err(source(c, format!("redis refused SYNC: {e}")));
        }
        Ok(Some(SyncCommand::Sync))
    }

    async fn peek_after_keepalives(&mut self, c: &RedisConfig) -> Result<u8> {
        loop {
            let buf = tokio::time::timeout(self.timeout, self.io.fill_buf())
                .await
                .map_err(|_| source(c, "redis did not start the transfer in time").temporary())?
                .map_err(|e| source(c, format!("connection to redis failed: {e}")).temporary())?;
            match buf.first() {
                None => {
                    return Err(source(c, "redis closed the replication connection").temporary());
                }
                Some(b'\n') => self.io.consume(1),
                Some(&b) => return Ok(b),
            }
        }
    }

    async fn line_skipping_keepalives(&mut self, c: &RedisConfig) -> Result<String> {
        self.peek_after_keepalives(c).await?;
        self.line(c).await
    }

    /// Read the payload header (after the `\n` keepalives) and return the transfer state.
    pub(crate) async fn payload_start(&mut self, c: &RedisConfig) -> Result<Payload> {
        let header = self.line_skipping_keepalives(c).await?;
        let Some(spec) = header.strip_prefix('$') else {
            return Err(source(
                c,
                format!("unexpected RDB payload header from redis: {header:?}"),
            ));
        };
        if let Some(mark) = spec.strip_prefix("EOF:") {
            let mark = mark.as_bytes().to_vec();
            if mark.len() != 40 {
                return Err(source(c, "bad diskless end mark from redis"));
            }
            return Ok(Payload {
                transfer: Transfer::Diskless,
                left: 0,
                mark,
                pending: Vec::new(),
                done: false,
                total: 0,
            });
        }
        let left: u64 = spec
            .parse()
            .map_err(|_| source(c, format!("bad RDB payload length {spec:?}")))?;
        Ok(Payload {
            transfer: Transfer::Disk,
            left,
            mark: Vec::new(),
            pending: Vec::new(),
            done: left == 0,
            total: 0,
        })
    }

    /// The next chunk of RDB bytes, or `None` at the end of the payload.
    pub(crate) async fn next_chunk(
        &mut self,
        c: &RedisConfig,
        p: &mut Payload,
    ) -> Result<Option<Vec<u8>>> {
        const CHUNK: usize = 256 * 1024;
        if p.done {
            return Ok(None);
        }
        let mut buf = vec![0u8; CHUNK];
        match p.transfer {
            Transfer::Disk => {
                let want = usize::try_from(p.left.min(CHUNK as u64)).unwrap_or(CHUNK);
                let n = self.read_some(c, &mut buf[..want]).await?;
                p.left -= n as u64;
                p.total += n as u64;
                p.done = p.left == 0;
                buf.truncate(n);
                Ok(Some(buf))
            }
            Transfer::Diskless => loop {
                let n = self.read_some(c, &mut buf).await?;
                let search_from = p.pending.len().saturating_sub(p.mark.len() - 1);
                p.pending.extend_from_slice(&buf[..n]);
                if let Some(i) = find(&p.pending[search_from..], &p.mark) {
                    p.pending.truncate(search_from + i);
                    p.done = true;
                    p.total += p.pending.len() as u64;
                    return Ok(Some(std::mem::take(&mut p.pending)));
                }
                if p.pending.len() >= CHUNK {
                    let keep = p.pending.split_off(p.pending.len() - p.mark.len());
                    let out = std::mem::replace(&mut p.pending, keep);
                    p.total += out.len() as u64;
                    return Ok(Some(out));
                }
            },
        }
    }

    async fn read_some(&mut self, c: &RedisConfig, buf: &mut [u8]) -> Result<usize> {
        let n = tokio::time::timeout(self.timeout, self.io.read(buf))
            .await
            .map_err(|_| source(c, "the RDB transfer stalled").temporary())?
            .map_err(|e| source(c, format!("the RDB transfer failed: {e}")).temporary())?;
        if n == 0 {
            return Err(Error::integrity(
                "redis closed the connection in the middle of the RDB transfer (truncated)",
            ));
        }
        Ok(n)
    }

    /// Close the connection cleanly.
    pub(crate) async fn close(mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_unknown_command(e: &str) -> bool {
    e.to_ascii_lowercase().contains("unknown command")
}

pub(crate) fn auth_error(c: &RedisConfig, e: &str) -> Error {
    Error::bad_input(c.scrub(&format!("redis refused the credentials: {e}")))
        .with_hint("check the password (ZDR_COMPONENTS__<NAME>__PASSWORD) and the user")
}

fn check_auth(c: &RedisConfig, e: &str) -> Result<()> {
    let upper = e.to_ascii_uppercase();
    if upper.starts_with("NOAUTH")
        || upper.starts_with("WRONGPASS")
        || upper.contains("AUTHENTICATION REQUIRED")
    {
        return Err(
            Error::bad_input(c.scrub(&format!("redis needs a password: {e}")))
                .with_hint("set the password in ZDR_COMPONENTS__<NAME>__PASSWORD"),
        );
    }
    if upper.starts_with("NOPERM") {
        return Err(Error::bad_input(
            c.scrub(&format!("the redis user may not replicate: {e}")),
        ));
    }
    Ok(())
}
