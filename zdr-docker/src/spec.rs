//! Container specs: captured from `inspect`, recorded as JSON, recreated.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig, HostConfig,
    Mount, MountType, NetworkConnectRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use serde::{Deserialize, Serialize};
use zdr_core::{Error, ErrorKind, Result, Secret};

use crate::Docker;

/// Whether an environment variable's name looks secret: it contains `PASSWORD`, `SECRET`,
/// `TOKEN`, `KEY` or `CREDENTIAL` (any case). Names ending in `_FILE` are not secret: their
/// value is a path (`POSTGRES_PASSWORD_FILE=/run/secrets/db`).
#[must_use]
pub fn is_secret_env_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.ends_with("_FILE") {
        return false;
    }
    ["PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL"]
        .iter()
        .any(|w| upper.contains(w))
}

/// Whether a value carries credentials in a URL (`postgres://user:password@host/db`).
#[must_use]
pub fn has_url_credentials(value: &str) -> bool {
    value.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// One environment variable of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value; `None` for a secret, which is recorded by name only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// True when the name looks secret ([`is_secret_env_name`]): the value was not recorded
    /// and must be supplied to recreate the container.
    #[serde(default)]
    pub secret: bool,
}

/// The kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A named (or anonymous) volume.
    Volume,
    /// A host path.
    Bind,
    /// A tmpfs (its content is not kept).
    Tmpfs,
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Volume, bind or tmpfs.
    pub kind: MountKind,
    /// The volume name or the host path; `None` for a tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where it is mounted in the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A network the container is attached to, with its aliases there (compose puts the service
/// name here: other services reach the container by it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// The network's name.
    pub name: String,
    /// The container's aliases on it (its old short id left out).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// The container's port and protocol, such as `5432/tcp`.
    pub container_port: String,
    /// The host address it is published on (empty: all).
    #[serde(default)]
    pub host_ip: String,
    /// The host port (empty: any free port).
    #[serde(default)]
    pub host_port: String,
}

/// A healthcheck (durations in nanoseconds, as the engine takes them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthcheckSpec {
    /// The probe: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ns: Option<i64>,
    /// Time a probe may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ns: Option<i64>,
    /// Consecutive failures before "unhealthy".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Time during which failures do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ns: Option<i64>,
}

/// A restart policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartSpec {
    /// `no`, `always`, `unless-stopped` or `on-failure`.
    pub name: String,
    /// For `on-failure`: how many restarts.
    #[serde(default)]
    pub maximum_retry_count: i64,
}

/// What a container is made of, as recorded in a backup: enough to create it again when the
/// compose file is gone or edited. Secrets in the environment are recorded by name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's name.
    pub name: String,
    /// The image as named at creation (`postgres:15`).
    pub image: String,
    /// The image's id at capture time (`sha256:...`), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The command (`Cmd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// The environment, in order; secret values left out.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Volumes, binds and tmpfs mounts.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// `HostConfig.NetworkMode` (`bridge`, a network name, `host`, `none`, `container:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// The networks with the container's aliases.
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    /// Exposed ports (`5432/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Labels (compose's included).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The healthcheck, if the container (or its image) has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthcheckSpec>,
    /// The restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartSpec>,
    /// The stop signal (`SIGINT` for PostgreSQL images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and `SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    /// The user the main process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// The names of the secrets found in the entrypoint, command and healthcheck test
    /// (`--requirepass pw`, `redis-cli -a pw`, a URL with credentials): recorded there as
    /// `${zdr-secret:NAME}` ([`crate::placeholder`]), their values never; they must be
    /// supplied, like secret environment variables, to recreate the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_args: Vec<String>,
}

impl ContainerSpec {
    /// The spec of an inspected container.
    #[must_use]
    pub fn from_inspect(c: &ContainerInspectResponse) -> Self {
        let config = c.config.clone().unwrap_or_default();
        let host = c.host_config.clone().unwrap_or_default();
        let id = c.id.clone().unwrap_or_default();
        let short_id: String = id.chars().take(12).collect();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|kv| {
                let (name, value) = match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (kv, None),
                };
                let secret =
                    is_secret_env_name(&name) || value.as_deref().is_some_and(has_url_credentials);
                EnvVar {
                    value: if secret { None } else { value },
                    name,
                    secret,
                }
            })
            .collect();
        let mounts = c
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let kind = match m.typ.as_deref() {
                    Some("volume") => MountKind::Volume,
                    Some("bind") => MountKind::Bind,
                    Some("tmpfs") => MountKind::Tmpfs,
                    _ => return None,
                };
                let source = match kind {
                    MountKind::Volume => m.name.clone(),
                    MountKind::Bind => m.source.clone(),
                    MountKind::Tmpfs => None,
                };
                Some(MountSpec {
                    kind,
                    source,
                    target: m.destination.clone()?,
                    read_only: !m.rw.unwrap_or(true),
                })
            })
            .collect();
        let mut networks: Vec<NetworkSpec> = c
            .network_settings
            .clone()
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ep)| NetworkSpec {
                name,
                aliases: ep
                    .aliases
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| *a != short_id && *a != id)
                    .collect(),
            })
            .collect();
        // The network of NetworkMode first: it is the one the container is created on.
        let mode = host.network_mode.clone();
        networks.sort_by_key(|n| (Some(&n.name) != mode.as_ref(), n.name.clone()));
        let mut ports: Vec<PortSpec> = host
            .port_bindings
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(port, bindings)| {
                bindings
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |b| PortSpec {
                        container_port: port.clone(),
                        host_ip: b.host_ip.unwrap_or_default(),
                        host_port: b.host_port.unwrap_or_default(),
                    })
            })
            .collect();
        ports.sort_by(|a, b| {
            (&a.container_port, &a.host_port).cmp(&(&b.container_port, &b.host_port))
        });
        let mut exposed_ports = config.exposed_ports.unwrap_or_default();
        exposed_ports.sort();
        let mut command = config.cmd;
        let mut entrypoint = config.entrypoint;
        let mut healthcheck = config.healthcheck.and_then(|h| {
            Some(HealthcheckSpec {
                test: h.test.filter(|t| !t.is_empty())?,
                interval_ns: h.interval.filter(|v| *v > 0),
                timeout_ns: h.timeout.filter(|v| *v > 0),
                retries: h.retries.filter(|v| *v > 0),
                start_period_ns: h.start_period.filter(|v| *v > 0),
            })
        });
        let secret_args = {
            let mut lists: Vec<&mut Vec<String>> = Vec::new();
            lists.extend(entrypoint.as_mut());
            lists.extend(command.as_mut());
            lists.extend(healthcheck.as_mut().map(|h| &mut h.test));
            crate::args::mask_lists(&mut lists).into_keys().collect()
        };
        Self {
            name: c
                .name
                .as_deref()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.image.unwrap_or_default(),
            image_id: c.image.clone(),
            command,
            entrypoint,
            env,
            mounts,
            network_mode: host.network_mode,
            networks,
            exposed_ports,
            ports,
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            healthcheck,
            restart_policy: host.restart_policy.and_then(|r| {
                let name = r.name?.to_string();
                (!name.is_empty()).then_some(RestartSpec {
                    name,
                    maximum_retry_count: r.maximum_retry_count.unwrap_or(0),
                })
            }),
            stop_signal: config.stop_signal.filter(|s| !s.is_empty()),
            stop_timeout: config.stop_timeout,
            user: config.user.filter(|s| !s.is_empty()),
            working_dir: config.working_dir.filter(|s| !s.is_empty()),
            secret_args,
        }
    }

    /// The names of the secret environment variables (recorded without value).
    #[must_use]
    pub fn secret_names(&self) -> Vec<&str> {
        self.env
            .iter()
            .filter(|e| e.secret)
            .map(|e| e.name.as_str())
            .chain(self.secret_args.iter().map(String::as_str))
            .collect()
    }

    /// The mount at `target`, if any.
    #[must_use]
    pub fn mount(&self, target: &str) -> Option<&MountSpec> {
        self.mounts.iter().find(|m| m.target == target)
    }
}

/// Which volume a recreated container gets at a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeChoice {
    /// An existing volume, mounted as it is.
    Existing(String),
    /// A new, empty volume of this name, created first (an existing volume of that name is a
    /// conflict: data is never mixed in silently).
    Fresh(String),
}

/// How [`Docker::recreate`] makes a container from a [`ContainerSpec`].
#[derive(Debug, Clone, Default)]
pub struct RecreateOptions {
    /// The new container's name (default: the spec's).
    pub name: Option<String>,
    /// Volume per mount target; a volume mount not listed gets the recorded volume, which
    /// must still exist.
    pub volumes: BTreeMap<String, VolumeChoice>,
    /// Values of the secret environment variables and command-line secrets (by name), such
    /// as those [`Docker::secrets_from`] read from the live container.
    pub secrets: BTreeMap<String, Secret>,
    /// Start the container once created.
    pub start: bool,
}

impl RecreateOptions {
    /// Options that create and start the container under the spec's name.
    #[must_use]
    pub fn new() -> Self {
        Self {
            start: true,
            ..Self::default()
        }
    }

    /// Put `choice` at mount `target`.
    #[must_use]
    pub fn volume(mut self, target: impl Into<String>, choice: VolumeChoice) -> Self {
        self.volumes.insert(target.into(), choice);
        self
    }

    /// A secret environment variable's value.
    #[must_use]
    pub fn secret(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.secrets.insert(name.into(), value);
        self
    }

    /// Several secret values.
    #[must_use]
    pub fn secrets(mut self, values: BTreeMap<String, Secret>) -> Self {
        self.secrets.extend(values);
        self
    }

    /// Another name for the new container.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

fn is_builtin_network(mode: &str) -> bool {
    matches!(mode, "" | "default" | "bridge" | "host" | "none") || mode.starts_with("container:")
}

impl Docker {
    /// The spec of a container, ready to be recorded (secrets by name only).
    ///
    /// # Errors
    /// As [`Docker::inspect`].
    pub async fn spec(&self, container: &str) -> Result<ContainerSpec> {
        Ok(ContainerSpec::from_inspect(&self.inspect(container).await?))
    }

    /// The values of `spec`'s secrets — environment variables and command-line secrets — as
    /// `container` (the live one, or any container holding the same environment and command)
    /// has them. Names it lacks are left out.
    ///
    /// # Errors
    /// As [`Docker::inspect`].
    pub async fn secrets_from(
        &self,
        container: &str,
        spec: &ContainerSpec,
    ) -> Result<BTreeMap<String, Secret>> {
        let c = self.inspect(container).await?;
        let wanted = spec.secret_names();
        let config = c.config.unwrap_or_default();
        let mut values: BTreeMap<String, Secret> = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                wanted
                    .contains(&k)
                    .then(|| (k.to_owned(), Secret::new(v.to_owned())))
            })
            .collect();
        // The command-line secrets, found the same way they were at capture.
        let mut entrypoint = config.entrypoint.unwrap_or_default();
        let mut command = config.cmd.unwrap_or_default();
        let mut test = config.healthcheck.and_then(|h| h.test).unwrap_or_default();
        for (name, value) in
            crate::args::mask_lists(&mut [&mut entrypoint, &mut command, &mut test])
        {
            if spec.secret_args.contains(&name) {
                values.insert(name, Secret::new(value));
            }
        }
        Ok(values)
    }

    /// Creates (and with [`RecreateOptions::start`], starts) a container from `spec`: same
    /// image, command, environment, mounts, networks and aliases, ports, labels, healthcheck,
    /// restart policy, stop signal, user and working directory; volumes as `options` maps
    /// them. Returns the new container's id.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] naming a secret variable without a value;
    /// [`ErrorKind::NotFound`] for a missing image, network or recorded volume;
    /// [`ErrorKind::Conflict`] when the name is taken or a fresh volume already exists.
    pub async fn recreate(
        &self,
        spec: &ContainerSpec,
        options: &RecreateOptions,
    ) -> Result<String> {
        let name = options.name.clone().unwrap_or_else(|| spec.name.clone());
        let mut env = Vec::with_capacity(spec.env.len());
        for var in &spec.env {
            if var.secret {
                let value = options.secrets.get(&var.name).ok_or_else(|| {
                    Error::bad_input(format!(
                        "the secret environment variable {} of container {name} has no value",
                        var.name
                    ))
                    .with_context("container", &name)
                    .with_context("variable", &var.name)
                    .with_hint("supply it (RecreateOptions::secret) or read it from the live container (Docker::secrets_from)")
                })?;
                env.push(format!("{}={}", var.name, value.expose()));
            } else if let Some(v) = &var.value {
                env.push(format!("{}={v}", var.name));
            } else {
                env.push(var.name.clone());
            }
        }

        let unmask = |args: &Vec<String>| {
            crate::args::unmask(args, &options.secrets).map_err(|secret| {
                Error::bad_input(format!(
                    "the command-line secret {secret} of container {name} has no value"
                ))
                .with_context("container", &name)
                .with_context("variable", &secret)
                .with_hint("supply it (RecreateOptions::secret) or read it from the live container (Docker::secrets_from)")
            })
        };
        let cmd = spec.command.as_ref().map(unmask).transpose()?;
        let entrypoint = spec.entrypoint.as_ref().map(unmask).transpose()?;
        let health_test = spec
            .healthcheck
            .as_ref()
            .map(|h| unmask(&h.test))
            .transpose()?;

        // Volumes: check or create each first, so a failure leaves no container behind.
        let mut mounts = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            let mount = match m.kind {
                MountKind::Volume => {
                    let volume = match options.volumes.get(&m.target) {
                        Some(VolumeChoice::Fresh(v)) => {
                            self.create_fresh_volume(v, &name, &m.target).await?;
                            v.clone()
                        }
                        Some(VolumeChoice::Existing(v)) => {
                            self.require_volume(v, &name, &m.target).await?;
                            v.clone()
                        }
                        None => {
                            let v = m.source.clone().ok_or_else(|| {
                                Error::bad_input(format!(
                                    "the volume mount {} of container {name} names no volume",
                                    m.target
                                ))
                                .with_context("container", &name)
                            })?;
                            self.require_volume(&v, &name, &m.target).await?;
                            v
                        }
                    };
                    Mount {
                        target: Some(m.target.clone()),
                        source: Some(volume),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(m.read_only),
                        ..Mount::default()
                    }
                }
                MountKind::Bind => Mount {
                    target: Some(m.target.clone()),
                    source: m.source.clone(),
                    typ: Some(MountType::BIND),
                    read_only: Some(m.read_only),
                    ..Mount::default()
                },
                MountKind::Tmpfs => Mount {
                    target: Some(m.target.clone()),
                    typ: Some(MountType::TMPFS),
                    read_only: Some(m.read_only),
                    ..Mount::default()
                },
            };
            mounts.push(mount);
        }

        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            port_bindings
                .entry(p.container_port.clone())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host_port.clone()),
                });
        }

        let mode = spec.network_mode.clone().unwrap_or_default();
        let user_networks: Vec<&NetworkSpec> = spec
            .networks
            .iter()
            .filter(|n| !is_builtin_network(&n.name))
            .collect();
        // The engine (API < 1.44) takes one network at creation: NetworkMode's, with its
        // aliases; the others are connected afterwards.
        let networking_config = if is_builtin_network(&mode) {
            None
        } else {
            spec.networks
                .iter()
                .find(|n| n.name == mode)
                .map(|n| NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        n.name.clone(),
                        EndpointSettings {
                            aliases: Some(n.aliases.clone()),
                            ..EndpointSettings::default()
                        },
                    )])),
                })
        };

        let restart_policy = spec.restart_policy.as_ref().map(|r| RestartPolicy {
            name: Some(match r.name.as_str() {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: (r.name == "on-failure").then_some(r.maximum_retry_count),
        });

        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd,
            entrypoint,
            env: Some(env),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: (!spec.exposed_ports.is_empty()).then(|| spec.exposed_ports.clone()),
            healthcheck: spec.healthcheck.as_ref().map(|h| HealthConfig {
                test: health_test.clone(),
                interval: h.interval_ns,
                timeout: h.timeout_ns,
                retries: h.retries,
                start_period: h.start_period_ns,
                start_interval: None,
            }),
            stop_signal: spec.stop_signal.clone(),
            stop_timeout: spec.stop_timeout,
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                restart_policy,
                network_mode: spec.network_mode.clone(),
                ..HostConfig::default()
            }),
            networking_config,
            ..ContainerCreateBody::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .client()
            .create_container(Some(opts), body)
            .await
            .map_err(|e| {
                let err = self.err(e, format!("cannot create container {name}"));
                let err = if err.kind() == ErrorKind::NotFound {
                    err.with_hint(format!(
                        "is the image {} (or a network) still there? `docker images`",
                        spec.image
                    ))
                } else {
                    err
                };
                err.with_context("container", &name)
                    .with_context("image", &spec.image)
            })?;
        for n in user_networks.iter().filter(|n| n.name != mode) {
            let req = NetworkConnectRequest {
                container: created.id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(n.aliases.clone()),
                    ..EndpointSettings::default()
                }),
            };
            if let Err(e) = self.client().connect_network(&n.name, req).await {
                let err = self
                    .err(
                        e,
                        format!("cannot connect container {name} to network {}", n.name),
                    )
                    .with_context("container", &name)
                    .with_context("network", &n.name);
                // Best effort: do not leave a half-made container behind.
                let _ = self.remove(&created.id, true).await;
                return Err(err);
            }
        }
        if options.start {
            self.start(&name).await?;
        }
        Ok(created.id)
    }

    async fn require_volume(&self, volume: &str, container: &str, target: &str) -> Result<()> {
        if self.volume_exists(volume).await? {
            return Ok(());
        }
        Err(Error::not_found(format!(
            "volume {volume} for {target} of container {container} does not exist"
        ))
        .with_context("volume", volume)
        .with_context("container", container)
        .with_hint("map the mount to a fresh volume (VolumeChoice::Fresh) to start empty"))
    }

    async fn create_fresh_volume(&self, volume: &str, container: &str, target: &str) -> Result<()> {
        if self.volume_exists(volume).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "volume {volume} for {target} of container {container} already exists (asked for a fresh one)"
                ),
            )
            .with_context("volume", volume)
            .with_context("container", container));
        }
        self.create_volume(volume, &BTreeMap::new()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_are_secret_values() {
        assert!(has_url_credentials("postgres://app:s3cret@db:5432/main"));
        assert!(has_url_credentials("redis://:pw@cache:6379/0"));
        assert!(!has_url_credentials("postgres://app@db/main"));
        assert!(!has_url_credentials("http://qdrant:6333"));
        assert!(!has_url_credentials("mailto:someone@example.org"));
        assert!(!has_url_credentials("https://example.org/a@b:c"));
    }

    #[test]
    fn secret_names() {
        for n in [
            "POSTGRES_PASSWORD",
            "db_password",
            "AWS_SECRET_ACCESS_KEY",
            "API_KEY",
            "VAULT_TOKEN",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "KeyRing",
        ] {
            assert!(is_secret_env_name(n), "{n}");
        }
        for n in [
            "POSTGRES_PASSWORD_FILE",
            "PGDATA",
            "PATH",
            "POSTGRES_USER",
            "LANG",
        ] {
            assert!(!is_secret_env_name(n), "{n}");
        }
    }

    #[test]
    fn capture_records_secrets_by_name_only() {
        let c: ContainerInspectResponse = match serde_json::from_value(serde_json::json!({
            "Id": "0123456789abcdef0123",
            "Name": "/db",
            "Image": "sha256:abc",
            "Config": {
                "Image": "postgres:15",
                "Env": ["POSTGRES_PASSWORD=hunter2", "POSTGRES_PASSWORD_FILE=/run/s", "PGDATA=/d"],
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000000000}
            },
            "HostConfig": {"NetworkMode": "app", "RestartPolicy": {"Name": "always"}},
            "Mounts": [{"Type": "volume", "Name": "pgdata", "Destination": "/d", "RW": true}],
            "NetworkSettings": {"Networks": {
                "other": {"Aliases": ["x"]},
                "app": {"Aliases": ["db", "0123456789ab"]}
            }}
        })) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let spec = ContainerSpec::from_inspect(&c);
        let json = serde_json::to_string(&spec).unwrap_or_default();
        assert!(!json.contains("hunter2"), "{json}");
        assert_eq!(spec.secret_names(), vec!["POSTGRES_PASSWORD"]);
        assert_eq!(spec.env[1].value.as_deref(), Some("/run/s"));
        assert_eq!(spec.networks[0].name, "app");
        assert_eq!(spec.networks[0].aliases, vec!["db".to_owned()]);
        assert_eq!(spec.mounts[0].source.as_deref(), Some("pgdata"));
        assert_eq!(
            spec.restart_policy.as_ref().map(|r| r.name.as_str()),
            Some("always")
        );
        let back: ContainerSpec = match serde_json::from_str(&json) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, spec);
    }
}
