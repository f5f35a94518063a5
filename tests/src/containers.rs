//! Throwaway containers on the real Docker engine, from the images of
//! `scripts/build-test-images.sh`: a PostgreSQL container with its data on a named volume and
//! a published port, and an app container that depends on it. Everything whose name starts
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
        let docker = Docker::connect().await?;
        for image in [PG_IMAGE, BASE_IMAGE] {
            if docker.client().inspect_image(image).await.is_err() {
                return Err(Error::not_found(format!(
                    "test image {image} is missing: run scripts/build-test-images.sh first"
                )));
            }
        }
        let name = format!("{prefix}-{:08x}", rand::random::<u32>());
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
                    host_config: Some(HostConfig {
                        binds: Some(vec![format!("{}:/var/lib/postgresql/data", stack.volume)]),
                        port_bindings: Some(HashMap::from([(
                            "5432/tcp".to_owned(),
                            Some(vec![PortBinding {
                                host_ip: Some("127.0.0.1".to_owned()),
                                host_port: Some(stack.port.to_string()),
                            }]),
                        )])),
                        ..HostConfig::default()
                    }),
                    ..ContainerCreateBody::default()
                },
            )
            .await?;
        stack
            .create(
                &stack.app,
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
                },
            )
            .await?;
        stack
            .docker
            .wait_healthy(&stack.name, None, Duration::from_secs(120))
            .await?;
        Ok(stack)
    }

    async fn create(&self, name: &str, body: ContainerCreateBody) -> Result<()> {
        self.docker
            .client()
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(name).build()),
                body,
            )
            .await
            .map_err(|e| Error::unexpected(format!("create {name}: {e}")))?;
        self.docker.start(name).await
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
        self.docker.kill(&self.name, "SIGKILL").await?;
        self.docker.remove(&self.name, true).await?;
        self.docker.remove_volume(&self.volume).await
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
        let (name, app, volume) = (self.name.clone(), self.app.clone(), self.volume.clone());
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
    let spec = CommandSpec::new("psql").args([
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
    ]);
    let mut run = runner.spawn(&spec).await?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = run.stdout.take() {
        o.read_to_string(&mut out)
            .await
            .map_err(|e| Error::from_io(e, "psql stdout"))?;
    }
    if let Some(mut e) = run.stderr.take() {
        e.read_to_string(&mut err)
            .await
            .map_err(|e| Error::from_io(e, "psql stderr"))?;
    }
    let exit = run.handle.wait().await?;
    if !exit.success() {
        return Err(Error::unexpected(format!(
            "psql {statement}: {exit}: {err}"
        )));
    }
    Ok(out.trim().to_owned())
}
