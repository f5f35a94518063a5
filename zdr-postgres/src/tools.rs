//! The PostgreSQL client tools (`pg_dump`, `pg_dumpall`, `pg_restore`, `psql`), run through
//! a [`CommandRunner`] with the connection in the environment and stderr captured.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use zdr_core::{CommandRunner, CommandSpec, Error, ErrorKind, Result, RunningCommand};

use crate::PgConfig;

/// How much of a tool's stderr is kept for error messages.
const STDERR_TAIL: usize = 4096;

/// Build a spec for `tool` connecting to `database`: host, port, user and database go in
/// `PG*` variables, the password in `PGPASSWORD` (never on the command line).
pub(crate) fn spec(config: &PgConfig, tool: &str, database: &str) -> CommandSpec {
    let mut s = CommandSpec::new(tool)
        .env("PGHOST", &config.host)
        .env("PGPORT", config.port.to_string())
        .env("PGUSER", &config.user)
        .env("PGDATABASE", database)
        .env("PGAPPNAME", "zdr")
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(p) = &config.password {
        s = s.secret_env("PGPASSWORD", p.expose());
    }
    s
}

/// Start a tool; a missing binary is a clear bad-input error naming it and `bin_dir`.
pub(crate) async fn spawn(
    runner: &dyn CommandRunner,
    config: &PgConfig,
    spec: &CommandSpec,
) -> Result<(RunningCommand, StderrTail)> {
    let mut run = runner.spawn(spec).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::bad_input(format!(
                "the PostgreSQL client tool {} was not found ({})",
                spec.program,
                match &config.bin_dir {
                    Some(d) => format!("bin_dir = {}", d.display()),
                    None => "bin_dir not set, searched PATH".to_owned(),
                }
            ))
            .with_context("program", &spec.program)
            .with_hint(
                "install the PostgreSQL client tools matching the server (postgresql-client-15) \
                 or set `bin_dir` in the component config (e.g. /usr/lib/postgresql/15/bin)",
            )
        } else {
            e
        }
    })?;
    let tail = StderrTail::collect(run.stderr.take());
    Ok((run, tail))
}

/// The last few KiB of a tool's stderr, collected in the background.
pub(crate) struct StderrTail {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

impl StderrTail {
    fn collect(stream: Option<zdr_core::BoxRead>) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let task = stream.map(|mut s| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = s.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                        if b.len() > 2 * STDERR_TAIL {
                            let cut = b.len() - STDERR_TAIL;
                            b.drain(..cut);
                        }
                    }
                }
            })
        });
        Self { buf, task }
    }

    /// The captured text (after the stream ended), scrubbed of the password.
    pub(crate) async fn text(mut self, config: &PgConfig) -> String {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let b = self.buf.lock().map(|b| b.clone()).unwrap_or_default();
        let start = b.len().saturating_sub(STDERR_TAIL);
        config.scrub(String::from_utf8_lossy(&b[start..]).trim())
    }
}

/// Wait for a tool and turn a failure into a source error carrying its stderr.
pub(crate) async fn finish(
    mut run: RunningCommand,
    tail: StderrTail,
    config: &PgConfig,
    what: &str,
) -> Result<String> {
    let exit = run.handle.wait().await?;
    let text = tail.text(config).await;
    if exit.success() {
        Ok(text)
    } else {
        Err(tool_error(what, &exit.to_string(), &text))
    }
}

pub(crate) fn tool_error(what: &str, exit: &str, stderr: &str) -> Error {
    let lower = stderr.to_lowercase();
    let kind = if lower.contains("password authentication failed")
        || (lower.contains("database") && lower.contains("does not exist"))
        || lower.contains("no matching tables")
    {
        ErrorKind::BadInput
    } else {
        ErrorKind::Source
    };
    Error::new(kind, format!("{what} failed ({exit}): {stderr}"))
}

/// Stream `from` into the tool's stdin in chunks, then close it and wait. A read error
/// (a corrupt artifact) kills the tool and is returned as is; a write error means the tool
/// stopped early, and its own error is reported.
pub(crate) async fn feed(
    mut run: RunningCommand,
    tail: StderrTail,
    from: &mut (dyn AsyncRead + Send + Unpin),
    prelude: &[u8],
    config: &PgConfig,
    what: &str,
) -> Result<u64> {
    let mut stdin = run
        .stdin
        .take()
        .ok_or_else(|| Error::unexpected("the tool has no stdin"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut write_failed = stdin.write_all(prelude).await.is_err();
    while !write_failed {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                drop(stdin);
                let _ = run.handle.kill().await;
                let _ = tail.text(config).await;
                return Err(Error::from_io(e, format!("reading the backup for {what}")));
            }
        };
        if stdin.write_all(&buf[..n]).await.is_err() {
            write_failed = true;
        }
        total += n as u64;
    }
    if !write_failed {
        let _ = stdin.shutdown().await;
    }
    drop(stdin);
    let res = finish(run, tail, config, what).await;
    match res {
        Ok(_) if write_failed => Err(Error::new(
            ErrorKind::Source,
            format!("{what} stopped reading its input"),
        )),
        Ok(_) => Ok(total),
        Err(e) => Err(e),
    }
}

/// Pipe one tool's stdout (`from`, such as `pg_dump`) into another's stdin (`to`, such as
/// `psql --single-transaction`). `to`'s stdin is closed (letting it commit) only after
/// `from` exited successfully; if `from` fails, `to` is killed, so nothing is committed.
pub(crate) async fn pipe(
    mut from: RunningCommand,
    from_tail: StderrTail,
    mut to: RunningCommand,
    to_tail: StderrTail,
    prelude: &[u8],
    config: &PgConfig,
    what: (&str, &str),
) -> Result<u64> {
    let mut out = from
        .stdout
        .take()
        .ok_or_else(|| Error::unexpected("the tool has no stdout"))?;
    let mut stdin = to
        .stdin
        .take()
        .ok_or_else(|| Error::unexpected("the tool has no stdin"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut write_failed = stdin.write_all(prelude).await.is_err();
    let mut read_error = None;
    while !write_failed {
        match out.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                write_failed = stdin.write_all(&buf[..n]).await.is_err();
                total += n as u64;
            }
            Err(e) => {
                read_error = Some(e);
                break;
            }
        }
    }
    drop(out);
    let produced = finish(from, from_tail, config, what.0).await;
    if produced.is_err() || read_error.is_some() || write_failed {
        drop(stdin);
        let _ = to.handle.kill().await;
        let consumed = finish(to, to_tail, config, what.1).await;
        produced?;
        if let Some(e) = read_error {
            return Err(Error::from_io(
                e,
                format!("reading the output of {}", what.0),
            ));
        }
        consumed?;
        return Err(Error::new(
            ErrorKind::Source,
            format!("{} stopped reading its input", what.1),
        ));
    }
    let _ = stdin.shutdown().await;
    drop(stdin);
    finish(to, to_tail, config, what.1).await?;
    Ok(total)
}

/// Copy a tool's stdout into `to` (the artifact writer), then wait for it.
pub(crate) async fn drain<W: AsyncWrite + Unpin + ?Sized>(
    mut run: RunningCommand,
    tail: StderrTail,
    to: &mut W,
    config: &PgConfig,
    what: &str,
) -> Result<u64> {
    let mut out = run
        .stdout
        .take()
        .ok_or_else(|| Error::unexpected("the tool has no stdout"))?;
    match tokio::io::copy(&mut out, to).await {
        Ok(n) => {
            finish(run, tail, config, what).await?;
            Ok(n)
        }
        Err(e) => {
            let _ = run.handle.kill().await;
            let _ = tail.text(config).await;
            Err(Error::from_io(e, format!("storing the output of {what}")))
        }
    }
}

/// The major version of a client tool, from `tool --version`
/// (`pg_dump (PostgreSQL) 15.18 (Debian ...)` -> 15).
pub(crate) async fn major_version(
    runner: &dyn CommandRunner,
    config: &PgConfig,
    tool: &str,
) -> Result<(u32, String)> {
    let s = CommandSpec::new(tool).args(["--version"]);
    let (mut run, tail) = spawn(runner, config, &s).await?;
    let mut text = String::new();
    if let Some(mut o) = run.stdout.take() {
        o.read_to_string(&mut text)
            .await
            .map_err(|e| Error::from_io(e, format!("reading {tool} --version")))?;
    }
    finish(run, tail, config, &format!("{tool} --version")).await?;
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .unwrap_or_default()
        .to_owned();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("cannot read the version of {tool} from {:?}", text.trim()),
            )
        })?;
    Ok((major, version))
}

/// Check that `tool` can work with a server of `server_num` (`server_version_num`).
pub(crate) async fn check_version(
    runner: &dyn CommandRunner,
    config: &PgConfig,
    tool: &str,
    server_num: i64,
    server_version: &str,
) -> Result<()> {
    let (major, version) = major_version(runner, config, tool).await?;
    let server_major = u32::try_from(server_num / 10000).unwrap_or(0);
    if major < server_major {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{tool} {version} is older than the server (PostgreSQL {server_version}): \
                 {tool} must be of major version {server_major} or newer"
            ),
        )
        .with_context("program", tool)
        .with_hint(format!(
            "install postgresql-client-{server_major} or point `bin_dir` at its binaries \
             (e.g. /usr/lib/postgresql/{server_major}/bin)"
        )));
    }
    Ok(())
}
