//! Running external tools (`pg_dump`, `redis-cli`, ...) behind one trait, so an adapter
//! does not care whether they run as local processes ([`LocalRunner`]) or inside a
//! container (a `docker exec` runner plugs in by implementing [`CommandRunner`]).
//!
//! A [`CommandSpec`] keeps secrets apart: values added with [`CommandSpec::secret_env`]
//! reach the child's environment only and are never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::traits::{BoxRead, BoxWrite};

/// What to run: a program, its arguments and its environment.
#[derive(Clone, Default)]
pub struct CommandSpec {
    /// The program: a bare name (looked up by the runner) or a path.
    pub program: String,
    /// Its arguments. Never put secrets here: they show up in `ps`.
    pub args: Vec<String>,
    /// Environment variables added to the child's environment.
    pub env: Vec<(String, String)>,
    /// Secret environment variables (passwords): passed to the child, never displayed.
    pub secret_env: Vec<(String, String)>,
    /// Give the child a writable stdin (otherwise it reads nothing).
    pub stdin: bool,
    /// Capture the child's stdout (otherwise it is discarded).
    pub stdout: bool,
    /// The working directory, if not inherited.
    pub cwd: Option<PathBuf>,
}

impl CommandSpec {
    /// A spec for `program` without arguments; stdout and stderr are captured.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            stdout: true,
            ..Self::default()
        }
    }

    /// Add arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Add an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Add a secret environment variable (never displayed).
    #[must_use]
    pub fn secret_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.secret_env.push((key.into(), value.into()));
        self
    }

    /// Give the child a writable stdin.
    #[must_use]
    pub fn with_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// The command line for logs: program and arguments, no environment.
    #[must_use]
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &self.env)
            .field(
                "secret_env",
                &self
                    .secret_env
                    .iter()
                    .map(|(k, _)| format!("{k}=<redacted>"))
                    .collect::<Vec<_>>(),
            )
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("cwd", &self.cwd)
            .finish()
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandExit {
    /// The exit code, if it exited normally.
    pub code: Option<i32>,
}

impl CommandExit {
    /// True for exit code 0.
    #[must_use]
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for CommandExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(c) => write!(f, "exit code {c}"),
            None => f.write_str("killed by a signal"),
        }
    }
}

/// Waits for or stops a running command.
#[async_trait]
pub trait CommandWait: Send {
    /// Wait until the command ends.
    async fn wait(&mut self) -> Result<CommandExit>;
    /// Stop the command (best effort) and reap it.
    async fn kill(&mut self) -> Result<()>;
}

/// A started command: its streams (taken by the caller) and a handle to wait for it.
pub struct RunningCommand {
    /// The child's stdin, if [`CommandSpec::stdin`] was set; drop it to send EOF.
    pub stdin: Option<BoxWrite>,
    /// The child's stdout, if [`CommandSpec::stdout`] was set.
    pub stdout: Option<BoxRead>,
    /// The child's stderr (always captured; read it or it may block the child).
    pub stderr: Option<BoxRead>,
    /// Wait for the end, or kill.
    pub handle: Box<dyn CommandWait>,
}

impl fmt::Debug for RunningCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningCommand")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// Starts external tools. [`LocalRunner`] runs them as local processes; a container runner
/// (`docker exec`) implements the same trait.
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// A short description for logs and errors, such as `local` or `docker exec postgres`.
    fn describe(&self) -> String;

    /// Start `spec`.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when the program does not exist (context `program`), and
    /// [`ErrorKind::Io`] when it cannot be started.
    async fn spawn(&self, spec: &CommandSpec) -> Result<RunningCommand>;

    /// True when the commands see this host's files, so a path zdr writes (a spool file) can
    /// be handed to them; `false` for a runner that executes elsewhere (inside a container),
    /// whose commands are then fed through stdin instead.
    fn shares_host_files(&self) -> bool {
        true
    }
}

/// The size asked for the pipe a local command's stdout is read from.
const PIPE_SIZE: usize = 1 << 20;

/// Runs commands as local processes with `tokio::process`. A relative program name is
/// looked up in `bin_dir` when set, on `PATH` otherwise. Children are killed when their
/// handle is dropped.
#[derive(Debug, Clone, Default)]
pub struct LocalRunner {
    bin_dir: Option<PathBuf>,
}

impl LocalRunner {
    /// A runner that finds programs on `PATH`.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner that finds programs in `dir` (and only there).
    #[must_use]
    pub fn with_bin_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: Some(dir.into()),
        }
    }

    /// A shared runner taking programs from `bin_dir` when given, else from `PATH`: what an
    /// adapter uses unless the caller plugs in another runner.
    #[must_use]
    pub fn shared(bin_dir: Option<&std::path::Path>) -> std::sync::Arc<dyn CommandRunner> {
        std::sync::Arc::new(Self {
            bin_dir: bin_dir.map(std::path::Path::to_path_buf),
        })
    }

    /// The directory programs are taken from, if set.
    #[must_use]
    pub fn bin_dir(&self) -> Option<&std::path::Path> {
        self.bin_dir.as_deref()
    }
}

struct LocalChild(tokio::process::Child);

#[async_trait]
impl CommandWait for LocalChild {
    async fn wait(&mut self) -> Result<CommandExit> {
        let status = self
            .0
            .wait()
            .await
            .map_err(|e| Error::from_io(e, "cannot wait for a child process"))?;
        Ok(CommandExit {
            code: status.code(),
        })
    }

    async fn kill(&mut self) -> Result<()> {
        self.0
            .kill()
            .await
            .map_err(|e| Error::from_io(e, "cannot kill a child process"))
    }
}

#[async_trait]
impl CommandRunner for LocalRunner {
    fn describe(&self) -> String {
        match &self.bin_dir {
            Some(d) => format!("local ({})", d.display()),
            None => "local (PATH)".to_owned(),
        }
    }

    async fn spawn(&self, spec: &CommandSpec) -> Result<RunningCommand> {
        let program = match &self.bin_dir {
            Some(dir) if !spec.program.contains('/') => dir.join(&spec.program),
            _ => PathBuf::from(&spec.program),
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&spec.args)
            .stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if spec.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in spec.env.iter().chain(&spec.secret_env) {
            cmd.env(k, v);
        }
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("cannot run {}: {e}", program.display()))
                .with_context("program", program.display())
        })?;
        let stdin = child.stdin.take().map(|s| Box::new(s) as BoxWrite);
        if let Some(out) = &child.stdout {
            // A dump or a base backup streams gigabytes through this pipe: 1 MiB of room
            // (instead of 64 KiB) lets the tool keep writing while zdr compresses a chunk,
            // and lets zdr read in large pieces. Best effort: the limit is
            // /proc/sys/fs/pipe-max-size (1 MiB by default).
            let _ = rustix::pipe::fcntl_setpipe_size(out, PIPE_SIZE);
        }
        let stdout = child.stdout.take().map(|s| Box::new(s) as BoxRead);
        let stderr = child.stderr.take().map(|s| Box::new(s) as BoxRead);
        Ok(RunningCommand {
            stdin,
            stdout,
            stderr,
            handle: Box::new(LocalChild(child)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn local_runner_streams_and_hides_secrets() -> Result<()> {
        let spec = CommandSpec::new("sh")
            .args(["-c", "cat; printf \"$SECRET_X\" >&2"])
            .secret_env("SECRET_X", "hunter2")
            .with_stdin();
        assert!(!format!("{spec:?}").contains("hunter2"));
        let mut run = LocalRunner::new().spawn(&spec).await?;
        let mut stdin = run.stdin.take().ok_or_else(|| Error::unexpected("stdin"))?;
        stdin
            .write_all(b"hello")
            .await
            .map_err(|e| Error::from_io(e, "w"))?;
        drop(stdin);
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = run.stdout.take() {
            o.read_to_string(&mut out)
                .await
                .map_err(|e| Error::from_io(e, "r"))?;
        }
        if let Some(mut e) = run.stderr.take() {
            e.read_to_string(&mut err)
                .await
                .map_err(|e| Error::from_io(e, "r"))?;
        }
        assert!(run.handle.wait().await?.success());
        assert_eq!((out.as_str(), err.as_str()), ("hello", "hunter2"));
        Ok(())
    }

    #[tokio::test]
    async fn missing_program_is_not_found() {
        let dir = std::env::temp_dir().join("zdr-runner-empty-dir-that-does-not-exist");
        let e = LocalRunner::with_bin_dir(&dir)
            .spawn(&CommandSpec::new("pg_dump"))
            .await
            .err();
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::NotFound));
    }
}
