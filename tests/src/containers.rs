//! Throwaway containers on the real Docker engine, from the images of
//! `scripts/build-test-images.sh`: a PostgreSQL, Redis or S3 container with its data on a named
//! volume and a published port, and an app container that depends on it. Everything whose name starts
//! with the stack's prefix (containers and volumes, the volumes kept aside by a recovery
//! included) is removed when the stack is dropped.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use zdr_core::{CommandRunner, CommandSpec, Error, Result};
use zdr_docker::bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use zdr_docker::bollard::query_parameters::{CreateContainerOptionsBuilder, ListVolumesOptions};
use zdr_docker::{Docker, DockerExecRunner};

/// The PostgreSQL test image.
pub const PG_IMAGE: &str = "zdr-test/postgres:current";
/// The minimal Debian test image.
pub const BASE_IMAGE: &str = "zdr-test/base:current";
/// The Redis test image.
pub const REDIS_IMAGE: &str = "zdr-test/redis:current";
/// The S3 test image (SeaweedFS behaving like MinIO's image for its credentials).
pub const S3_IMAGE: &str = "zdr-test/seaweedfs:current";

/// A PostgreSQL container (database `app`) and an app container depending on it.
pub struct PgStack {
    /// The engine.
    pub docker: Docker,
    /// The PostgreSQL container's name (also the prefix of everything else).
    pub name: String,
    /// The app container's name.
    pub app: String,
    /// The data volume's name.
    pub volume: String,
    /// The published port on 127.0.0.1.
    pub port: u16,
}

impl PgStack {
    /// Starts both containers (names `<prefix>-<random>` and `...-app`) and waits until
    /// PostgreSQL is healthy. `password` becomes `POSTGRES_PASSWORD`.
    ///
    /// # Errors
    /// A missing test image (named, with the script that builds it), the engine's errors.
    pub async fn start(prefix: &str, password: &str) -> Result<Self> {
        Self::start_with(prefix, password, Vec::new(), None).await
    }

    /// [`PgStack::start`] with more bind mounts (`host:container[:ro]`) and another
    /// command (such as `postgres -c archive_mode=on -c archive_command=...`).
    ///
    /// # Errors
    /// As [`PgStack::start`].
    pub async fn start_with(
        prefix: &str,
        password: &str,
        binds: Vec<String>,
        cmd: Option<Vec<String>>,
    ) -> Result<Self> {
        let (docker, name) = engine_and_name(prefix, PG_IMAGE).await?;
        let stack = Self {
            app: format!("{name}-app"),
            volume: format!("{name}-data"),
            port: free_port()?,
            docker,
            name,
        };
        stack
            .create(
                &stack.name,
                ContainerCreateBody {
                    image: Some(PG_IMAGE.to_owned()),
                    env: Some(vec![
                        format!("POSTGRES_PASSWORD={password}"),
                        "POSTGRES_DB=app".to_owned(),
                    ]),
                    exposed_ports: Some(vec!["5432/tcp".to_owned()]),
                    labels: Some(HashMap::from([(
                        "org.example.role".to_owned(),
                        "database".to_owned(),
                    )])),
                    cmd,
                    host_config: Some(HostConfig {
                        binds: Some(
                            std::iter::once(format!("{}:/var/lib/postgresql/data", stack.volume))
                                .chain(binds)
                                .collect(),
                        ),
                        port_bindings: Some(published(5432, stack.port)),
                        ..HostConfig::default()
                    }),
                    ..ContainerCreateBody::default()
                },
            )
            .await?;
        stack.create(&stack.app, app_body()).await?;
        stack
            .docker
            .wait_healthy(&stack.name, None, Duration::from_secs(120))
            .await?;
        Ok(stack)
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<()> {
        create_started(&self.docker, name, body).await
    }

    /// `psql -At -c statement` on database `app`, run inside the PostgreSQL container.
    ///
    /// # Errors
    /// psql failing (its stderr in the message).
    pub async fn sql(&self, statement: &str) -> Result<String> {
        psql(
            &DockerExecRunner::new(self.docker.clone(), &self.name),
            statement,
        )
        .await
    }

    /// The failure of the runbook's scenario: the container killed and removed, its volume
    /// lost.
    ///
    /// # Errors
    /// The engine's errors.
    pub async fn lose_container_and_volume(&self) -> Result<()> {
        lose(&self.docker, &self.name, &self.volume).await
    }

    /// The volumes whose names start with the data volume's (those kept aside included).
    ///
    /// # Errors
    /// The engine's errors.
    pub async fn volumes(&self) -> Result<Vec<String>> {
        let list = self
            .docker
            .client()
            .list_volumes(None::<ListVolumesOptions>)
            .await
            .map_err(|e| Error::unexpected(format!("list volumes: {e}")))?;
        let mut names: Vec<String> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with(&self.volume))
            .collect();
        names.sort();
        Ok(names)
    }
}

impl Drop for PgStack {
    fn drop(&mut self) {
        remove_stack(self.name.clone(), self.app.clone(), self.volume.clone());
    }
}

/// Removes both containers and every volume whose name starts with `volume`, from a thread
/// of its own (a drop may run inside a runtime).
fn remove_stack(name: String, app: String, volume: String) {
    {
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(docker) = Docker::connect().await else {
                    return;
                };
                for c in [&name, &app] {
                    let _ = docker.remove(c, true).await;
                }
                if let Ok(list) = docker
                    .client()
                    .list_volumes(None::<ListVolumesOptions>)
                    .await
                {
                    for v in list.volumes.unwrap_or_default() {
                        if v.name.starts_with(&volume) {
                            let _ = docker.remove_volume(&v.name).await;
                        }
                    }
                }
            });
        });
        let _ = thread.join();
    }
}

/// A redis container (`redis-server --requirepass PASSWORD --appendonly yes`, healthcheck
/// `redis-cli -a PASSWORD ping`: secrets on its command line, as compose files often have
/// them) with `/data` on a named volume, and an app container depending on it.
pub struct RedisStack {
    /// The engine.
    pub docker: Docker,
    /// The redis container's name (also the prefix of everything else).
    pub name: String,
    /// The app container's name.
    pub app: String,
    /// The data volume's name.
    pub volume: String,
    /// The published port on 127.0.0.1.
    pub port: u16,
    password: String,
}

impl RedisStack {
    /// Starts both containers and waits until redis is healthy.
    ///
    /// # Errors
    /// A missing test image (named, with the script that builds it), the engine's errors.
    pub async fn start(prefix: &str, password: &str) -> Result<Self> {
        let (docker, name) = engine_and_name(prefix, REDIS_IMAGE).await?;
        let stack = Self {
            app: format!("{name}-app"),
            volume: format!("{name}-data"),
            port: free_port()?,
            docker,
            name,
            password: password.to_owned(),
        };
        create_started(
            &stack.docker,
            &stack.name,
            ContainerCreateBody {
                image: Some(REDIS_IMAGE.to_owned()),
                cmd: Some(
                    [
                        "redis-server",
                        "--requirepass",
                        password,
                        "--appendonly",
                        "yes",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ),
                healthcheck: Some(zdr_docker::bollard::models::HealthConfig {
                    test: Some(
                        [
                            "CMD",
                            "redis-cli",
                            "-a",
                            password,
                            "--no-auth-warning",
                            "ping",
                        ]
                        .map(str::to_owned)
                        .to_vec(),
                    ),
                    interval: Some(1_000_000_000),
                    timeout: Some(5_000_000_000),
                    retries: Some(5),
                    start_period: Some(60_000_000_000),
                    ..Default::default()
                }),
                exposed_ports: Some(vec!["6379/tcp".to_owned()]),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{}:/data", stack.volume)]),
                    port_bindings: Some(published(6379, stack.port)),
                    ..HostConfig::default()
                }),
                ..ContainerCreateBody::default()
            },
        )
        .await?;
        create_started(&stack.docker, &stack.app, app_body()).await?;
        stack
            .docker
            .wait_healthy(&stack.name, None, Duration::from_secs(120))
            .await?;
        Ok(stack)
    }

    /// `redis-cli -a PASSWORD --no-auth-warning ARGS...` inside the redis container; the
    /// output trimmed.
    ///
    /// # Errors
    /// redis-cli failing (its stderr in the message).
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-a", self.password.as_str(), "--no-auth-warning"];
        all.extend_from_slice(args);
        run_to_string(
            &DockerExecRunner::new(self.docker.clone(), &self.name),
            "redis-cli",
            &all,
        )
        .await
    }

    /// `sh -c script` inside the redis container as root; the output trimmed.
    ///
    /// # Errors
    /// The script failing.
    pub async fn sh(&self, script: &str) -> Result<String> {
        run_to_string(
            &DockerExecRunner::new(self.docker.clone(), &self.name).with_user("0"),
            "sh",
            &["-c", script],
        )
        .await
    }

    /// The failure of the runbook's scenario: the container killed and removed, its volume
    /// lost.
    ///
    /// # Errors
    /// The engine's errors.
    pub async fn lose_container_and_volume(&self) -> Result<()> {
        lose(&self.docker, &self.name, &self.volume).await
    }
}

impl Drop for RedisStack {
    fn drop(&mut self) {
        remove_stack(self.name.clone(), self.app.clone(), self.volume.clone());
    }
}

/// An S3 server in a container (the stack's MinIO: `MINIO_ROOT_USER` / `MINIO_ROOT_PASSWORD`,
/// S3 on 8333) with `/data` on a named volume, and an app container depending on it.
pub struct S3Stack {
    /// The engine.
    pub docker: Docker,
    /// The S3 container's name (also the prefix of everything else).
    pub name: String,
    /// The app container's name.
    pub app: String,
    /// The data volume's name.
    pub volume: String,
    /// The published S3 port on 127.0.0.1.
    pub port: u16,
    /// The access key id (`MINIO_ROOT_USER`).
    pub user: String,
}

impl S3Stack {
    /// Starts both containers and waits until the S3 API is healthy; `password` becomes
    /// `MINIO_ROOT_PASSWORD`, the secret key.
    ///
    /// # Errors
    /// A missing test image (named, with the script that builds it), the engine's errors.
    pub async fn start(prefix: &str, user: &str, password: &str) -> Result<Self> {
        let (docker, name) = engine_and_name(prefix, S3_IMAGE).await?;
        let stack = Self {
            app: format!("{name}-app"),
            volume: format!("{name}-data"),
            port: free_port()?,
            docker,
            name,
            user: user.to_owned(),
        };
        create_started(
            &stack.docker,
            &stack.name,
            ContainerCreateBody {
                image: Some(S3_IMAGE.to_owned()),
                env: Some(vec![
                    format!("MINIO_ROOT_USER={user}"),
                    format!("MINIO_ROOT_PASSWORD={password}"),
                ]),
                exposed_ports: Some(vec!["8333/tcp".to_owned()]),
                host_config: Some(HostConfig {
                    binds: Some(vec![format!("{}:/data", stack.volume)]),
                    port_bindings: Some(published(8333, stack.port)),
                    ..HostConfig::default()
                }),
                ..ContainerCreateBody::default()
            },
        )
        .await?;
        create_started(&stack.docker, &stack.app, app_body()).await?;
        stack
            .docker
            .wait_healthy(&stack.name, None, Duration::from_secs(120))
            .await?;
        Ok(stack)
    }

    /// The S3 endpoint on the host.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The failure of the runbook's scenario: the container killed and removed, its volume
    /// lost.
    ///
    /// # Errors
    /// The engine's errors.
    pub async fn lose_container_and_volume(&self) -> Result<()> {
        lose(&self.docker, &self.name, &self.volume).await
    }
}

impl Drop for S3Stack {
    fn drop(&mut self) {
        remove_stack(self.name.clone(), self.app.clone(), self.volume.clone());
    }
}

/// The engine, once the datastore's `image` and the app's image are there, and a fresh name
/// `<prefix>-<random>`.
async fn engine_and_name(prefix: &str, image: &str) -> Result<(Docker, String)> {
    let docker = Docker::connect().await?;
    for image in [image, BASE_IMAGE] {
        if docker.client().inspect_image(image).await.is_err() {
            return Err(Error::not_found(format!(
                "test image {image} is missing: run scripts/build-test-images.sh first"
            )));
        }
    }
    Ok((docker, format!("{prefix}-{:08x}", rand::random::<u32>())))
}

/// The container's `port`/tcp published on 127.0.0.1:`host_port`.
fn published(port: u16, host_port: u16) -> HashMap<String, Option<Vec<PortBinding>>> {
    HashMap::from([(
        format!("{port}/tcp"),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: Some(host_port.to_string()),
        }]),
    )])
}

/// Container `name` killed and removed, and its data volume lost.
async fn lose(docker: &Docker, name: &str, volume: &str) -> Result<()> {
    docker.kill(name, "SIGKILL").await?;
    docker.remove(name, true).await?;
    docker.remove_volume(volume).await
}

/// Creates container `name` and starts it.
async fn create_started(docker: &Docker, name: &str, body: ContainerCreateBody) -> Result<()> {
    docker
        .client()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .map_err(|e| Error::unexpected(format!("create {name}: {e}")))?;
    docker.start(name).await
}

/// The app container: a shell loop that exits on TERM.
#[must_use]
pub fn app_body() -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(BASE_IMAGE.to_owned()),
        cmd: Some(
            [
                "sh",
                "-c",
                "trap 'exit 0' TERM; while :; do sleep 0.2; done",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        ..ContainerCreateBody::default()
    }
}

/// `program args...` through `runner`, stdout trimmed; a failure names the command.
async fn run_to_string(runner: &dyn CommandRunner, program: &str, args: &[&str]) -> Result<String> {
    let spec = CommandSpec::new(program).args(args.iter().copied());
    let mut run = runner.spawn(&spec).await?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = run.stdout.take() {
        o.read_to_string(&mut out)
            .await
            .map_err(|e| Error::from_io(e, "stdout"))?;
    }
    if let Some(mut e) = run.stderr.take() {
        e.read_to_string(&mut err)
            .await
            .map_err(|e| Error::from_io(e, "stderr"))?;
    }
    let exit = run.handle.wait().await?;
    if !exit.success() {
        return Err(Error::unexpected(format!(
            "{program} {}: {exit}: {err}",
            args.last().copied().unwrap_or_default()
        )));
    }
    Ok(out.trim().to_owned())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::from_io(e, "bind"))?;
    Ok(l.local_addr()
        .map_err(|e| Error::from_io(e, "addr"))?
        .port())
}

/// `psql -X -At -v ON_ERROR_STOP=1 -U postgres -d app -c statement` through `runner`; the
/// output trimmed.
///
/// # Errors
/// psql failing (its stderr in the message).
pub async fn psql(runner: &dyn CommandRunner, statement: &str) -> Result<String> {
    run_to_string(
        runner,
        "psql",
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
            "-d",
            "app",
            "-c",
            statement,
        ],
    )
    .await
}
