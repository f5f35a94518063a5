//! Volumes: create, remove, copy, rename-by-copy, export as tar.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, VolumeCreateRequest};
use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, RemoveVolumeOptionsBuilder};
use futures::StreamExt;
use zdr_core::{BoxRead, Error, ErrorKind, Result};

use crate::Docker;

/// The label marking helper containers, so leftovers of a killed run can be found.
const HELPER_LABEL: &str = "io.zdr.helper";

impl Docker {
    /// Removes the helper containers (of [`Docker::copy_volume`], [`Docker::export_volume`])
    /// that a killed run left holding `volume`, so it can be removed or copied again. Returns
    /// how many were removed.
    ///
    /// # Errors
    /// When the engine cannot be asked or a helper cannot be removed.
    pub async fn remove_abandoned_helpers(&self, volume: &str) -> Result<usize> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![HELPER_LABEL.to_owned()]);
        filters.insert("volume", vec![volume.to_owned()]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .client()
            .list_containers(Some(opts))
            .await
            .map_err(|e| {
                self.err(
                    e,
                    format!("cannot list the helper containers of volume {volume}"),
                )
                .with_context("volume", volume)
            })?;
        let mut removed = 0;
        for c in list {
            if let Some(id) = c.id {
                self.remove_helper(&id).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The containers (running or not) carrying `label` = `value`, each with the named
    /// volumes it mounts and all its labels.
    ///
    /// # Errors
    /// When the engine cannot be asked.
    pub async fn labelled(
        &self,
        label: &str,
        value: &str,
    ) -> Result<Vec<(String, Vec<String>, HashMap<String, String>)>> {
        let mut filters = HashMap::new();
        filters.insert("label", vec![format!("{label}={value}")]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .client()
            .list_containers(Some(opts))
            .await
            .map_err(|e| {
                self.err(
                    e,
                    format!("cannot list the containers labelled {label}={value}"),
                )
            })?;
        Ok(list
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .or(c.id)
                    .unwrap_or_default();
                let volumes = c
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|m| m.name)
                    .collect();
                (name, volumes, c.labels.unwrap_or_default())
            })
            .collect())
    }

    /// True when the volume exists.
    ///
    /// # Errors
    /// When the engine cannot be asked.
    pub async fn volume_exists(&self, volume: &str) -> Result<bool> {
        match self.client().inspect_volume(volume).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self
                .err(e, format!("cannot inspect volume {volume}"))
                .with_context("volume", volume)),
        }
    }

    /// Creates a local volume with `labels`. Creating an existing volume is not an error
    /// (the engine's behaviour).
    ///
    /// # Errors
    /// When the engine refuses (a bad name).
    pub async fn create_volume(
        &self,
        volume: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let req = VolumeCreateRequest {
            name: Some(volume.to_owned()),
            labels: Some(labels.clone().into_iter().collect()),
            ..VolumeCreateRequest::default()
        };
        self.client()
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(|e| {
                self.err(e, format!("cannot create volume {volume}"))
                    .with_context("volume", volume)
            })
    }

    /// Removes a volume.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming it; [`ErrorKind::Conflict`] when a container (even a
    /// stopped one) still uses it.
    pub async fn remove_volume(&self, volume: &str) -> Result<()> {
        let opts = RemoveVolumeOptionsBuilder::new().force(false).build();
        self.client()
            .remove_volume(volume, Some(opts))
            .await
            .map_err(|e| {
                let err = self
                    .err(e, format!("cannot remove volume {volume}"))
                    .with_context("volume", volume);
                if err.kind() == ErrorKind::Conflict {
                    err.with_hint("remove the containers using it first")
                } else {
                    err
                }
            })
    }

    /// Copies every file of volume `from` into the new volume `to` (created here; an existing
    /// `to` is a conflict), owners, modes and times kept (`cp -a`), through a helper container
    /// of `helper_image` (any image with `sh` and `cp`; no registry is needed) without network.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing `from` or image; [`ErrorKind::Conflict`] when
    /// `to` exists; [`ErrorKind::Io`] when the copy fails (`to` is removed again).
    pub async fn copy_volume(&self, from: &str, to: &str, helper_image: &str) -> Result<()> {
        if !self.volume_exists(from).await? {
            return Err(Error::not_found(format!("volume {from} does not exist"))
                .with_context("volume", from));
        }
        if self.volume_exists(to).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("volume {to} already exists: not copying {from} into it"),
            )
            .with_context("volume", to));
        }
        self.create_volume(to, &BTreeMap::new()).await?;
        let result = self
            .run_helper(
                helper_image,
                &[(from, "/from", true), (to, "/to", false)],
                &["sh", "-c", "cp -a /from/. /to/"],
                &format!("copy of volume {from} to {to}"),
            )
            .await;
        if let Err(e) = result {
            let _ = self.remove_volume(to).await;
            return Err(e.with_context("volume", from));
        }
        Ok(())
    }

    /// Renames a volume by copying it ([`Docker::copy_volume`]) and removing the original.
    /// The engine cannot rename volumes.
    ///
    /// # Errors
    /// As [`Docker::copy_volume`]; when `from` is still in use the copy is removed again and
    /// the error is a [`ErrorKind::Conflict`] naming `from`.
    pub async fn rename_volume(&self, from: &str, to: &str, helper_image: &str) -> Result<()> {
        self.copy_volume(from, to, helper_image).await?;
        if let Err(e) = self.remove_volume(from).await {
            let _ = self.remove_volume(to).await;
            return Err(e);
        }
        Ok(())
    }

    /// The content of a volume as a tar stream (entries relative to the volume's root), read
    /// through a helper container of `helper_image` that is never started and is removed when
    /// the stream ends or is dropped. For forensics: the failed volume kept aside.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing volume or image. A failure while streaming
    /// arrives as a read error on the stream.
    pub async fn export_volume(&self, volume: &str, helper_image: &str) -> Result<BoxRead> {
        if !self.volume_exists(volume).await? {
            return Err(Error::not_found(format!("volume {volume} does not exist"))
                .with_context("volume", volume));
        }
        let id = self
            .create_helper(
                helper_image,
                &[(volume, "/volume", true)],
                None,
                &["true"],
                &format!("export of volume {volume}"),
            )
            .await?;
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path("/volume/.")
            .build();
        let mut stream = self.client().download_from_container(&id, Some(opts));
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
        let docker = self.clone();
        let volume = volume.to_owned();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let item = item.map_err(|e| {
                    docker
                        .err(e, format!("cannot read volume {volume}"))
                        .with_context("volume", &volume)
                        .into_io()
                });
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
            drop(tx);
            let _ = docker.remove_helper(&id).await;
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            stream,
        ))))
    }

    /// Removes a helper container with the anonymous volumes its image declared (a helper
    /// made from a datastore's image gets one for the image's `VOLUME`).
    async fn remove_helper(&self, id: &str) -> Result<()> {
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        self.client()
            .remove_container(id, Some(opts))
            .await
            .map_err(|e| self.err(e, format!("cannot remove helper container {id}")))
    }

    /// Creates a helper container (no network, labelled) with `volumes` mounted.
    async fn create_helper(
        &self,
        image: &str,
        volumes: &[(&str, &str, bool)],
        volumes_from: Option<&str>,
        cmd: &[&str],
        what: &str,
    ) -> Result<String> {
        let mounts = volumes
            .iter()
            .map(|(v, target, ro)| Mount {
                target: Some((*target).to_owned()),
                source: Some((*v).to_owned()),
                typ: Some(MountType::VOLUME),
                read_only: Some(*ro),
                ..Mount::default()
            })
            .collect();
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
            entrypoint: Some(Vec::new()),
            user: Some("0".to_owned()),
            labels: Some(HashMap::from([(HELPER_LABEL.to_owned(), what.to_owned())])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                volumes_from: volumes_from.map(|c| vec![c.to_owned()]),
                network_mode: Some("none".to_owned()),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.client()
            .create_container(None, body)
            .await
            .map(|r| r.id)
            .map_err(|e| {
                let err = self
                    .err(
                        e,
                        format!("cannot create the helper container for the {what}"),
                    )
                    .with_context("image", image);
                if err.kind() == ErrorKind::NotFound {
                    err.with_hint(format!(
                        "the helper image {image} must exist locally (no registry is used)"
                    ))
                } else {
                    err
                }
            })
    }

    /// Runs a helper container to its end; a non-zero exit is an error with its output.
    async fn run_helper(
        &self,
        image: &str,
        volumes: &[(&str, &str, bool)],
        cmd: &[&str],
        what: &str,
    ) -> Result<()> {
        self.run_helper_with(image, volumes, None, cmd, what).await
    }

    /// As `run_helper`, also mounting the volumes of container `volumes_from`.
    pub(crate) async fn run_helper_with(
        &self,
        image: &str,
        volumes: &[(&str, &str, bool)],
        volumes_from: Option<&str>,
        cmd: &[&str],
        what: &str,
    ) -> Result<()> {
        let id = self
            .create_helper(image, volumes, volumes_from, cmd, what)
            .await?;
        let result = async {
            self.start(&id).await?;
            let mut wait = self.client().wait_container(&id, None);
            let code = match wait.next().await {
                Some(Ok(r)) => r.status_code,
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
                Some(Err(e)) => return Err(self.err(e, format!("cannot wait for the {what}"))),
                None => return Err(Error::unexpected(format!("no exit status for the {what}"))),
            };
            if code != 0 {
                let logs = self.helper_logs(&id).await;
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("the {what} failed with exit code {code}: {}", logs.trim()),
                ));
            }
            Ok(())
        }
        .await;
        let _ = self.remove_helper(&id).await;
        result
    }

    async fn helper_logs(&self, id: &str) -> String {
        let opts = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("20")
            .build();
        let mut logs = self.client().logs(id, Some(opts));
        let mut out = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }
}
