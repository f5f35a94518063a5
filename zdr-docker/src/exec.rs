//! `docker exec` as a [`CommandRunner`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zdr_core::{
    BoxRead, BoxWrite, CommandExit, CommandRunner, CommandSpec, CommandWait, Error, ErrorKind,
    Result, RunningCommand,
};

use crate::Docker;

/// Bytes of stdin buffered between the caller and the engine.
const STDIN_BUFFER: usize = 64 * 1024;
/// Output frames (up to 32 KiB each) buffered per stream before the command waits for its reader.
const OUTPUT_FRAMES: usize = 8;

/// Runs tools inside a container through the engine's exec API: `pg_dump`, `psql`,
/// `redis-cli` run where the datastore is, and the host needs no client tools.
///
/// The contract is [`zdr_core::LocalRunner`]'s: stdin, stdout and stderr are streamed (never
/// buffered whole; an unread stdout or stderr holds the command back, as a pipe does),
/// dropping stdin sends EOF, the exit code is passed through, and a command whose handle is
/// dropped before it ended is killed. The environment of the [`CommandSpec`] (secrets
/// included) travels as the exec's environment, never in its arguments; the working
/// directory is the spec's. A program the container lacks is [`ErrorKind::NotFound`] at
/// spawn, as for a local process.
#[derive(Debug, Clone)]
pub struct DockerExecRunner {
    docker: Docker,
    container: String,
    user: Option<String>,
    env: Vec<(String, String)>,
    found: Arc<Mutex<HashSet<String>>>,
}

impl DockerExecRunner {
    /// A runner for `container` (name or id), as the container's user.
    #[must_use]
    pub fn new(docker: Docker, container: impl Into<String>) -> Self {
        Self {
            docker,
            container: container.into(),
            user: None,
            env: Vec::new(),
            found: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Run the commands as `user` (`postgres`, `999`, `999:999`).
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Set `key` to `value` in every command's environment, in place of the value the
    /// [`CommandSpec`] gives: what differs inside the container, such as `PGHOST` and
    /// `PGPORT` when the host reaches the server through a published port.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The container the commands run in.
    #[must_use]
    pub fn container(&self) -> &str {
        &self.container
    }

    fn exec_error(&self, e: bollard::errors::Error, spec: &CommandSpec) -> Error {
        self.docker
            .err(
                e,
                format!(
                    "cannot run {} in container {}",
                    spec.program, self.container
                ),
            )
            .with_context("container", &self.container)
            .with_context("program", &spec.program)
    }

    /// Checks once per program that the container has it (`command -v` through `sh`).
    async fn check_program(&self, spec: &CommandSpec) -> Result<()> {
        if self
            .found
            .lock()
            .map(|f| f.contains(&spec.program))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let probe = CommandSpec::new("sh").args([
            "-c",
            "if command -v \"$1\" >/dev/null; then echo found; else echo missing; fi",
            "sh",
            &spec.program,
        ]);
        let mut run = self.start(&probe).await?;
        let mut answer = String::new();
        if let Some(mut out) = run.stdout.take() {
            let _ = out.read_to_string(&mut answer).await;
        }
        if let Some(mut err) = run.stderr.take() {
            let _ = tokio::io::copy(&mut err, &mut tokio::io::sink()).await;
        }
        run.handle.wait().await?;
        match answer.trim() {
            "found" => {
                if let Ok(mut f) = self.found.lock() {
                    f.insert(spec.program.clone());
                }
                Ok(())
            }
            "missing" => Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "cannot run {}: not found in container {}",
                    spec.program, self.container
                ),
            )
            .with_context("program", &spec.program)
            .with_context("container", &self.container)),
            // No `sh` in the image: the exec itself will tell.
            _ => Ok(()),
        }
    }

    async fn start(&self, spec: &CommandSpec) -> Result<RunningCommand> {
        let mut cmd = Vec::with_capacity(spec.args.len() + 1);
        cmd.push(spec.program.clone());
        cmd.extend(spec.args.iter().cloned());
        let env: Vec<String> = spec
            .env
            .iter()
            .chain(&spec.secret_env)
            .filter(|(k, _)| !self.env.iter().any(|(o, _)| o == k))
            .chain(&self.env)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let options = CreateExecOptions {
            attach_stdin: Some(spec.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env),
            cmd: Some(cmd),
            user: self.user.clone(),
            working_dir: spec.cwd.as_ref().map(|p| p.display().to_string()),
            ..CreateExecOptions::default()
        };
        let created = self
            .docker
            .client()
            .create_exec(&self.container, options)
            .await
            .map_err(|e| self.exec_error(e, spec))?;
        let started = self
            .docker
            .client()
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(64 * 1024),
                }),
            )
            .await
            .map_err(|e| self.exec_error(e, spec))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(Error::unexpected(format!(
                "the exec of {} in container {} started detached",
                spec.program, self.container
            )));
        };

        // stdin: the caller writes into a pipe; a task copies it to the engine and half-closes
        // the connection at EOF, which closes the command's stdin.
        let (stdin, stdin_task) = if spec.stdin {
            let (writer, mut reader) = tokio::io::duplex(STDIN_BUFFER);
            let mut input = input;
            let task = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut reader, &mut input).await;
                let _ = input.shutdown().await;
            });
            (Some(Box::new(writer) as BoxWrite), Some(task))
        } else {
            drop(input);
            (None, None)
        };

        // stdout and stderr: a task splits the engine's multiplexed stream.
        let (out_tx, out_rx) = mpsc::channel::<std::io::Result<Bytes>>(OUTPUT_FRAMES);
        let (err_tx, err_rx) = mpsc::channel::<std::io::Result<Bytes>>(OUTPUT_FRAMES);
        let want_stdout = spec.stdout;
        let context = format!("{} in container {}", spec.program, self.container);
        let pump = tokio::spawn(async move {
            let mut out_tx = want_stdout.then_some(out_tx);
            let mut err_tx = Some(err_tx);
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        if let Some(tx) = &out_tx
                            && tx.send(Ok(message)).await.is_err()
                        {
                            out_tx = None;
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        if let Some(tx) = &err_tx
                            && tx.send(Ok(message)).await.is_err()
                        {
                            err_tx = None;
                        }
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        let text = format!("the output of {context} broke off: {e}");
                        for tx in [&out_tx, &err_tx].into_iter().flatten() {
                            let _ = tx
                                .send(Err(std::io::Error::new(
                                    std::io::ErrorKind::BrokenPipe,
                                    text.clone(),
                                )))
                                .await;
                        }
                        break;
                    }
                }
            }
        });
        let stdout = spec.stdout.then(|| reader(out_rx));
        Ok(RunningCommand {
            stdin,
            stdout,
            stderr: Some(reader(err_rx)),
            handle: Box::new(ExecHandle {
                docker: self.docker.clone(),
                container: self.container.clone(),
                exec_id: created.id,
                pump: Some(pump),
                stdin_task,
                done: false,
            }),
        })
    }
}

fn reader(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> BoxRead {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

#[async_trait]
impl CommandRunner for DockerExecRunner {
    fn describe(&self) -> String {
        format!("docker exec {}", self.container)
    }

    fn shares_host_files(&self) -> bool {
        false
    }

    async fn spawn(&self, spec: &CommandSpec) -> Result<RunningCommand> {
        self.check_program(spec).await?;
        self.start(spec).await
    }
}

struct ExecHandle {
    docker: Docker,
    container: String,
    exec_id: String,
    pump: Option<JoinHandle<()>>,
    stdin_task: Option<JoinHandle<()>>,
    done: bool,
}

impl ExecHandle {
    /// The exec's state: running, exit code, host pid.
    async fn state(&self) -> Result<(bool, Option<i64>, Option<i64>)> {
        let r = self
            .docker
            .client()
            .inspect_exec(&self.exec_id)
            .await
            .map_err(|e| {
                self.docker
                    .err(
                        e,
                        format!("cannot inspect an exec in container {}", self.container),
                    )
                    .with_context("container", &self.container)
            })?;
        Ok((r.running.unwrap_or(false), r.exit_code, r.pid))
    }
}

#[async_trait]
impl CommandWait for ExecHandle {
    async fn wait(&mut self) -> Result<CommandExit> {
        // The output ends when the command has exited and its streams are drained.
        if let Some(pump) = self.pump.take() {
            let _ = pump.await;
        }
        let mut delay = Duration::from_millis(5);
        loop {
            let (running, code, _) = self.state().await?;
            if !running {
                self.done = true;
                if let Some(t) = self.stdin_task.take() {
                    t.abort();
                }
                return Ok(CommandExit {
                    code: code.and_then(|c| i32::try_from(c).ok()),
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    async fn kill(&mut self) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let result = kill_exec(&self.docker, &self.container, &self.exec_id).await;
        if let Some(t) = self.stdin_task.take() {
            t.abort();
        }
        if let Some(p) = self.pump.take() {
            p.abort();
        }
        self.done = true;
        result
    }
}

impl Drop for ExecHandle {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(t) = self.stdin_task.take() {
            t.abort();
        }
        if let Some(p) = self.pump.take() {
            p.abort();
        }
        // Killed on drop, as a local child is: best effort, in the background.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let container = self.container.clone();
            let exec_id = self.exec_id.clone();
            rt.spawn(async move {
                let _ = kill_exec(&docker, &container, &exec_id).await;
            });
        }
    }
}

/// Kills an exec'd process. The engine has no call for it: the process is found by its host
/// pid (`/proc/PID/status`, `NSpid`: its pid inside the container) and sent `SIGKILL` by a
/// second exec of `sh -c kill` in the container. Needs the engine on this host.
async fn kill_exec(docker: &Docker, container: &str, exec_id: &str) -> Result<()> {
    // Right after the start the engine may not report the process yet: wait for its pid.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let pid = loop {
        let r = docker.client().inspect_exec(exec_id).await.map_err(|e| {
            docker
                .err(
                    e,
                    format!("cannot inspect an exec in container {container}"),
                )
                .with_context("container", container)
        })?;
        match (r.running.unwrap_or(false), r.pid.filter(|p| *p > 0)) {
            (true, Some(pid)) => break pid,
            (false, _) if r.exit_code.is_some() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => return Ok(()),
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "cannot kill a command in container {container}: its process {pid} is not visible here ({e})"
                ),
            )
            .with_context("container", container)
        })?;
    let inner = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .ok_or_else(|| {
            Error::unexpected(format!(
                "no NSpid for process {pid} of container {container}"
            ))
        })?
        .to_owned();
    let options = CreateExecOptions {
        cmd: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "kill -9 \"$1\"".to_owned(),
            "sh".to_owned(),
            inner,
        ]),
        user: Some("0".to_owned()),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        ..CreateExecOptions::default()
    };
    let client = docker.client();
    let created = client.create_exec(container, options).await.map_err(|e| {
        docker
            .err(e, format!("cannot kill a command in container {container}"))
            .with_context("container", container)
    })?;
    client
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: true,
                ..StartExecOptions::default()
            }),
        )
        .await
        .map_err(|e| {
            docker
                .err(e, format!("cannot kill a command in container {container}"))
                .with_context("container", container)
        })?;
    for _ in 0..100 {
        match client.inspect_exec(exec_id).await {
            Ok(r) if r.running.unwrap_or(false) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return Ok(()),
        }
    }
    Err(Error::new(
        ErrorKind::Io,
        format!("a command in container {container} still runs after SIGKILL"),
    )
    .with_context("container", container))
}
