//! The connection to the engine and the container operations.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use zdr_core::{Error, ErrorKind, Result};

/// The compose label naming a container's project.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
/// The compose label naming a container's service.
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
const LABEL_NUMBER: &str = "com.docker.compose.container-number";

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Seconds bollard waits for the headers of an answer (streams are not limited).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// A connection to a Docker engine. Cheap to clone (one shared HTTP client).
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    endpoint: String,
}

impl fmt::Debug for Docker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Docker")
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.api_version())
            .finish()
    }
}

/// Which container: by name (or id), or by compose project and service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerRef {
    /// A container name or id, as `docker ps` shows it.
    Name(String),
    /// The container of a compose service (labels `com.docker.compose.project` and
    /// `com.docker.compose.service`).
    Service {
        /// The compose project name.
        project: String,
        /// The service name in the compose file.
        service: String,
    },
}

impl fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Service { project, service } => {
                write!(f, "service {service} of compose project {project}")
            }
        }
    }
}

/// A container as listed: id, name and its compose labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The full container id.
    pub id: String,
    /// The name, without the leading `/`.
    pub name: String,
    /// The image it was created from, as named at creation.
    pub image: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    /// The compose project, if any.
    pub project: Option<String>,
    /// The compose service, if any.
    pub service: Option<String>,
    /// All labels.
    pub labels: HashMap<String, String>,
}

/// The state of a container: whether it runs, since when, and its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// `created`, `running`, `restarting`, `exited`, `dead`, ...
    pub status: String,
    /// True while its main process runs.
    pub running: bool,
    /// When it last started (`State.StartedAt`), if it ever did.
    pub started_at: Option<DateTime<Utc>>,
    /// `starting`, `healthy` or `unhealthy`; `None` without a healthcheck.
    pub health: Option<String>,
    /// The exit code of the last run.
    pub exit_code: Option<i64>,
}

/// Maps an engine error to a zdr error: 404 → not found, 409 → conflict, 400 → bad input,
/// connection failures → I/O naming the endpoint.
pub(crate) fn engine_error(e: BollardError, what: impl Into<String>, endpoint: &str) -> Error {
    let what = what.into();
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                400 => ErrorKind::BadInput,
                _ => ErrorKind::Io,
            };
            Error::new(kind, format!("{what}: {}", message.trim()))
        }
        BollardError::SocketNotFoundError(path) => Error::new(
            ErrorKind::Io,
            format!("{what}: the Docker socket {path} does not exist"),
        )
        .with_context("socket", path)
        .with_hint("is the Docker engine running? DOCKER_HOST names another socket"),
        BollardError::RequestTimeoutError => Error::new(
            ErrorKind::Io,
            format!("{what}: the Docker engine did not answer in time"),
        )
        .with_context("socket", endpoint)
        .temporary(),
        other => {
            let text = error_chain(&other);
            if text.contains("ermission denied") {
                Error::new(
                    ErrorKind::Io,
                    format!("{what}: permission denied on the Docker socket {endpoint}"),
                )
                .with_context("socket", endpoint)
                .with_hint("run as root or as a member of the docker group")
            } else if is_connection_error(&other) {
                Error::new(
                    ErrorKind::Io,
                    format!("{what}: cannot reach the Docker engine at {endpoint}: {text}"),
                )
                .with_context("socket", endpoint)
                .with_hint("is the Docker engine running? DOCKER_HOST names another socket")
                .temporary()
            } else {
                Error::new(ErrorKind::Io, format!("{what}: {text}"))
                    .with_context("socket", endpoint)
            }
        }
    }
}

fn is_connection_error(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::HyperResponseError { .. }
    )
}

/// The error and its sources as one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Parses a Docker timestamp; the zero time (`0001-01-01T00:00:00Z`) means "never".
pub(crate) fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(s?).ok()?.with_timezone(&Utc);
    (t.timestamp() > 0).then_some(t)
}

impl Docker {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://PATH` or `tcp://HOST:PORT`), or
    /// to `/var/run/docker.sock`, and negotiates the API version with it.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] naming the socket when it does not exist, refuses the connection or
    /// denies permission.
    pub async fn connect() -> Result<Self> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => Self::connect_to(&host).await,
            _ => Self::connect_to(DEFAULT_SOCKET).await,
        }
    }

    /// Connects to `host`: a socket path, `unix://PATH`, or `tcp://HOST:PORT` /
    /// `http://HOST:PORT`; negotiates the API version.
    ///
    /// # Errors
    /// As [`Docker::connect`]; [`ErrorKind::BadInput`] for an address of another scheme.
    pub async fn connect_to(host: &str) -> Result<Self> {
        let version = bollard::API_DEFAULT_VERSION;
        let (client, endpoint) = if let Some(addr) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            let url = format!("http://{addr}");
            (
                bollard::Docker::connect_with_http(&url, REQUEST_TIMEOUT_SECS, version),
                url,
            )
        } else if host.starts_with('/') || host.starts_with("unix://") {
            let path = host.trim_start_matches("unix://").to_owned();
            (
                bollard::Docker::connect_with_socket(&path, REQUEST_TIMEOUT_SECS, version),
                path,
            )
        } else {
            return Err(Error::bad_input(format!(
                "unsupported Docker address {host}: use a socket path, unix://PATH or tcp://HOST:PORT"
            ))
            .with_context("docker_host", host));
        };
        let client = client
            .map_err(|e| engine_error(e, "cannot connect to the Docker engine", &endpoint))?;
        let client = client.negotiate_version().await.map_err(|e| {
            engine_error(e, "cannot reach the Docker engine", &endpoint)
                .with_context("socket", &endpoint)
        })?;
        Ok(Self { client, endpoint })
    }

    /// The socket path or URL this connection uses.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The API version in use after negotiation, such as `1.41`.
    #[must_use]
    pub fn api_version(&self) -> String {
        let v = self.client.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The underlying bollard client, for engine calls this crate does not wrap.
    #[must_use]
    pub fn client(&self) -> &bollard::Docker {
        &self.client
    }

    pub(crate) fn err(&self, e: BollardError, what: impl Into<String>) -> Error {
        engine_error(e, what, &self.endpoint)
    }

    /// The containers of a compose project (running or not), optionally of one service only,
    /// sorted by name.
    ///
    /// # Errors
    /// When the engine cannot be asked.
    pub async fn compose_containers(
        &self,
        project: &str,
        service: Option<&str>,
    ) -> Result<Vec<ContainerInfo>> {
        let mut labels = vec![format!("{LABEL_PROJECT}={project}")];
        if let Some(s) = service {
            labels.push(format!("{LABEL_SERVICE}={s}"));
        }
        let mut filters = HashMap::new();
        filters.insert("label", labels);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.client.list_containers(Some(opts)).await.map_err(|e| {
            self.err(
                e,
                format!("cannot list the containers of compose project {project}"),
            )
            .with_context("project", project)
        })?;
        let mut out: Vec<ContainerInfo> = list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                    project: labels.get(LABEL_PROJECT).cloned(),
                    service: labels.get(LABEL_SERVICE).cloned(),
                    labels,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The name of the container `target` designates. A compose service with several
    /// containers (scaled) is ambiguous unless only one of them is container number 1.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container or the project and service;
    /// [`ErrorKind::BadInput`] when a service has several containers.
    pub async fn resolve(&self, target: &ContainerRef) -> Result<String> {
        match target {
            ContainerRef::Name(name) => {
                let c = self.inspect(name).await?;
                Ok(c.name
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| name.clone()))
            }
            ContainerRef::Service { project, service } => {
                let list = self.compose_containers(project, Some(service)).await?;
                match list.as_slice() {
                    [] => Err(Error::not_found(format!(
                        "no container of service {service} in compose project {project}"
                    ))
                    .with_context("project", project)
                    .with_context("service", service)
                    .with_hint("is the compose project up? `docker ps -a` lists the containers")),
                    [one] => Ok(one.name.clone()),
                    many => {
                        let first: Vec<_> = many
                            .iter()
                            .filter(|c| c.labels.get(LABEL_NUMBER).map(String::as_str) == Some("1"))
                            .collect();
                        match first.as_slice() {
                            [one] => Ok(one.name.clone()),
                            _ => Err(Error::bad_input(format!(
                                "service {service} of compose project {project} has {} containers ({}): name one",
                                many.len(),
                                many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                            ))
                            .with_context("project", project)
                            .with_context("service", service)),
                        }
                    }
                }
            }
        }
    }

    /// The engine's full description of a container (`docker inspect`).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container when there is no such container.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
        self.client
            .inspect_container(container, None)
            .await
            .map_err(|e| {
                self.err(e, format!("cannot inspect container {container}"))
                    .with_context("container", container)
            })
    }

    /// Whether a container runs, since when, and its health.
    ///
    /// # Errors
    /// As [`Docker::inspect`].
    pub async fn status(&self, container: &str) -> Result<ContainerStatus> {
        let c = self.inspect(container).await?;
        Ok(status_of(container, &c))
    }

    /// Stops a container: its stop signal, then `SIGKILL` after `timeout` (the engine's
    /// default of 10 s when `None`). Stopping a stopped container is not an error.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container, or an engine failure.
    pub async fn stop(&self, container: &str, timeout: Option<Duration>) -> Result<()> {
        let mut opts = StopContainerOptionsBuilder::new();
        if let Some(t) = timeout {
            opts = opts.t(i32::try_from(t.as_secs()).unwrap_or(i32::MAX));
        }
        self.client
            .stop_container(container, Some(opts.build()))
            .await
            .map_err(|e| {
                self.err(e, format!("cannot stop container {container}"))
                    .with_context("container", container)
            })
    }

    /// Starts a container. Starting a running container is not an error.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container, or the engine's reason (a port taken,
    /// a missing network).
    pub async fn start(&self, container: &str) -> Result<()> {
        self.client
            .start_container(container, None)
            .await
            .map_err(|e| {
                self.err(e, format!("cannot start container {container}"))
                    .with_context("container", container)
            })
    }

    /// Restarts a container (stop with `timeout`, then start).
    ///
    /// # Errors
    /// As [`Docker::stop`] and [`Docker::start`].
    pub async fn restart(&self, container: &str, timeout: Option<Duration>) -> Result<()> {
        let mut opts = RestartContainerOptionsBuilder::new();
        if let Some(t) = timeout {
            opts = opts.t(i32::try_from(t.as_secs()).unwrap_or(i32::MAX));
        }
        self.client
            .restart_container(container, Some(opts.build()))
            .await
            .map_err(|e| {
                self.err(e, format!("cannot restart container {container}"))
                    .with_context("container", container)
            })
    }

    /// Sends `signal` (such as `KILL`, `TERM`) to a container's main process.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container; [`ErrorKind::Conflict`] when it is not
    /// running.
    pub async fn kill(&self, container: &str, signal: &str) -> Result<()> {
        let opts = KillContainerOptionsBuilder::new().signal(signal).build();
        self.client
            .kill_container(container, Some(opts))
            .await
            .map_err(|e| {
                self.err(e, format!("cannot send {signal} to container {container}"))
                    .with_context("container", container)
            })
    }

    /// Removes a container (`force`: even when running). Its volumes are kept, anonymous
    /// ones too: they may hold the only copy of the data.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming the container; [`ErrorKind::Conflict`] when it runs and
    /// `force` is false.
    pub async fn remove(&self, container: &str, force: bool) -> Result<()> {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(false)
            .build();
        self.client
            .remove_container(container, Some(opts))
            .await
            .map_err(|e| {
                self.err(e, format!("cannot remove container {container}"))
                    .with_context("container", container)
            })
    }

    /// A runner executing tools inside `container` (see [`crate::DockerExecRunner`]).
    #[must_use]
    pub fn exec_runner(&self, container: impl Into<String>) -> crate::DockerExecRunner {
        crate::DockerExecRunner::new(self.clone(), container)
    }
}

pub(crate) fn status_of(name: &str, c: &ContainerInspectResponse) -> ContainerStatus {
    let state = c.state.clone().unwrap_or_default();
    let name = c
        .name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| name.to_owned());
    ContainerStatus {
        name,
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        running: state.running.unwrap_or(false),
        started_at: parse_time(state.started_at.as_deref()),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        exit_code: state.exit_code,
    }
}
