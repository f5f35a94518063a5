//! The component's settings as they appear in a config file (`[components.NAME] type =
//! "redis"`), with their defaults, and their translation into [`RedisConfig`].

use std::path::PathBuf;

use serde::Deserialize;
use zdr_core::{Error, Result};

use crate::{RedisConfig, Secret};

/// `[components.NAME] type = "redis"`. The password belongs in
/// `ZDR_COMPONENTS__<NAME>__PASSWORD`, not in the file; it is never shown by `Debug`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user@]host[:port]` (a password in the URL is refused: use the variable).
    #[serde(default)]
    pub url: Option<String>,
    /// Host (default 127.0.0.1; ignored with `url`).
    #[serde(default)]
    pub host: Option<String>,
    /// Port (default 6379; ignored with `url`).
    #[serde(default)]
    pub port: Option<u16>,
    /// ACL user.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (prefer the environment variable).
    #[serde(default)]
    pub password: Option<Secret>,
    /// The server's data directory, when it is on this machine (BGSAVE fallback, physical
    /// restore).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The RDB file name in `data_dir` (default `dump.rdb`).
    #[serde(default)]
    pub dbfilename: Option<String>,
    /// The command that starts the server (argv), for a physical restore.
    #[serde(default)]
    pub start_command: Option<Vec<String>>,
    /// The command that stops it (argv); default `redis-cli SHUTDOWN NOSAVE`.
    #[serde(default)]
    pub stop_command: Option<Vec<String>>,
    /// Where redis-server and redis-cli are (default: PATH).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// Keys per database whose DUMP digest is recorded (default 32).
    #[serde(default)]
    pub sample_keys: Option<u32>,
    /// Seconds to wait for the server (default 60).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl RedisSettings {
    /// The library's config.
    ///
    /// # Errors
    /// A malformed `url`, or one holding a password.
    pub fn to_redis(&self) -> Result<RedisConfig> {
        let (mut host, mut port, mut user) = (
            self.host.clone().unwrap_or_else(|| "127.0.0.1".to_owned()),
            self.port.unwrap_or(6379),
            self.username.clone(),
        );
        if let Some(url) = &self.url {
            let rest = url
                .strip_prefix("redis://")
                .ok_or_else(|| Error::bad_input("components.redis.url must start with redis://"))?;
            let rest = rest.split('/').next().unwrap_or_default();
            let hostport = match rest.rsplit_once('@') {
                Some((auth, hp)) => {
                    if auth.contains(':') {
                        return Err(Error::bad_input(
                            "put the redis password in ZDR_COMPONENTS__<NAME>__PASSWORD, not in the url",
                        ));
                    }
                    if !auth.is_empty() {
                        user = Some(auth.to_owned());
                    }
                    hp
                }
                None => rest,
            };
            match hostport.rsplit_once(':') {
                Some((h, p)) => {
                    host = h.to_owned();
                    port = p.parse().map_err(|_| {
                        Error::bad_input(format!("bad port in the redis url: {p:?}"))
                    })?;
                }
                None => host = hostport.to_owned(),
            }
        }
        let mut c = RedisConfig::new(host, port);
        c.username = user;
        c.password = self.password.clone();
        c.data_dir = self.data_dir.clone();
        if let Some(f) = &self.dbfilename {
            c.dbfilename = f.clone();
        }
        c.start_command = self.start_command.clone();
        c.stop_command = self.stop_command.clone();
        c.bin_dir = self.bin_dir.clone();
        if let Some(n) = self.sample_keys {
            c.sample_keys = n;
        }
        if let Some(t) = self.timeout_secs {
            c.timeout = std::time::Duration::from_secs(t);
        }
        Ok(c)
    }
}
