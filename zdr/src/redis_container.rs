//! [`zdr_redis::ServerContainer`] on the Docker Engine API: what a physical restore into a
//! Redis container needs (files in, a script on its files, stop, start).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use zdr_core::{Error, Result};
use zdr_docker::Docker;

/// A Redis server's container on the engine.
#[derive(Debug, Clone)]
pub(crate) struct DockerRedis {
    docker: Docker,
    container: String,
}

impl DockerRedis {
    pub(crate) fn new(docker: Docker, container: impl Into<String>) -> Self {
        Self {
            docker,
            container: container.into(),
        }
    }

    /// `sh -c script` as root inside the running container; a non-zero exit is an error with
    /// its output.
    async fn exec(&self, script: &str) -> Result<()> {
        crate::recover::exec_script(&self.docker, &self.container, "0", script).await
    }
}

#[async_trait]
impl zdr_redis::ServerContainer for DockerRedis {
    fn name(&self) -> String {
        self.container.clone()
    }

    async fn is_running(&self) -> Result<bool> {
        Ok(self.docker.status(&self.container).await?.running)
    }

    async fn put_file(&self, local: &Path, dir: &str, name: &str) -> Result<()> {
        self.docker
            .upload_file(&self.container, local, dir, name)
            .await
            .map(|_| ())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.docker
            .read_file(&self.container, path, 64 * 1024)
            .await
    }

    async fn run_script(&self, script: &str) -> Result<()> {
        if self.docker.status(&self.container).await?.running {
            return self.exec(script).await;
        }
        // Stopped: a helper of the container's own image (it has a shell) with its volumes.
        let image = self
            .docker
            .inspect(&self.container)
            .await?
            .config
            .and_then(|c| c.image)
            .ok_or_else(|| {
                Error::unexpected(format!("container {} has no image", self.container))
            })?;
        self.docker
            .run_on_volumes_of(
                &self.container,
                &image,
                script,
                &format!("change of the redis files of {}", self.container),
            )
            .await
    }

    async fn stop(&self, timeout: Duration) -> Result<()> {
        self.docker.stop(&self.container, Some(timeout)).await
    }

    async fn start(&self) -> Result<()> {
        self.docker.start(&self.container).await
    }
}
