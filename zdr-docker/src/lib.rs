//! zdr on the Docker Engine API, through [bollard] (no `docker` CLI subprocesses).
//!
//! - [`Docker`]: the connection (`DOCKER_HOST` or `/var/run/docker.sock`, API version
//!   negotiated with the engine — Docker 20.10 speaks API 1.41 at most), containers of a compose
//!   project found by their labels, inspect / stop / start / restart / kill / remove.
//! - [`ContainerSpec`]: what a container is made of (image, command, env, mounts, networks with
//!   aliases, ports, labels, healthcheck, restart policy, ...), captured from `inspect`, stored as
//!   JSON, and used by [`Docker::recreate`] to make the container again on a fresh or existing
//!   volume. Environment variables whose names look secret are recorded by name only.
//! - [`Docker::wait_healthy`]: a new start (`State.StartedAt` later than a given instant) and a
//!   passing health probe after it — a container can still read "healthy" right after a crash.
//! - volumes: create, remove, copy and rename-by-copy through a helper container, export as a
//!   tar stream (forensics).
//! - files in a container: [`Docker::upload_file`] streams a host file in (running or stopped
//!   container), [`Docker::read_file`] reads a small one back, [`Docker::run_on_volumes_of`]
//!   runs a script on a stopped container's volumes.
//! - networks: [`Docker::create_network`] (a private bridge for a throwaway copy of a stack),
//!   [`Docker::remove_network`].
//! - [`DockerExecRunner`]: a [`zdr_core::CommandRunner`] running tools (`pg_dump`, `psql`,
//!   `redis-cli`, ...) inside a container through `exec`, streams and exit code passed through.
//!
//! Every error is a [`zdr_core::Error`] naming the container, volume or socket involved.

mod args;
mod client;
mod exec;
mod files;
mod health;
mod network;
mod spec;
mod volume;

pub use args::placeholder;
pub use client::{
    ContainerInfo, ContainerRef, ContainerStatus, Docker, LABEL_PROJECT, LABEL_SERVICE,
};
pub use exec::DockerExecRunner;
pub use files::{tar_end, tar_entry, tar_padding};
pub use spec::{
    ContainerSpec, EnvVar, HealthcheckSpec, MountKind, MountSpec, NetworkSpec, PortSpec,
    RecreateOptions, RestartSpec, VolumeChoice, has_url_credentials, is_secret_env_name,
};

/// The bollard crate, for callers that need an engine call this crate does not wrap.
pub use bollard;
