//! Normal commands through `fred`: `INFO`, `SCAN`, `DUMP`, `PTTL`, `RESTORE`.

use std::collections::BTreeMap;

use fred::prelude::{Builder, Client, ClientLike, Config, ServerConfig};
use fred::types::{CustomCommand, Value};
use zdr_core::{Error, ErrorKind, Result};

use crate::RedisConfig;

/// Map a fred error: authentication problems are bad input, the rest are source failures.
pub(crate) fn fred_error(c: &RedisConfig, e: &fred::error::Error, what: &str) -> Error {
    let details = c.scrub(&e.to_string());
    let upper = details.to_ascii_uppercase();
    if matches!(e.kind(), fred::error::ErrorKind::Auth)
        || upper.contains("WRONGPASS")
        || upper.contains("NOAUTH")
        || upper.contains("INVALID PASSWORD")
        || upper.contains("WITHOUT ANY PASSWORD")
    {
        return Error::bad_input(format!("{what}: redis refused the credentials: {details}"))
            .with_hint("check the password (ZDR_COMPONENTS__<NAME>__PASSWORD) and the user");
    }
    if upper.contains("DB INDEX IS OUT OF RANGE") {
        return Error::bad_input(format!("{what}: unknown redis database: {details}"));
    }
    let err = Error::new(ErrorKind::Source, format!("{what}: {details}"));
    if matches!(
        e.kind(),
        fred::error::ErrorKind::IO | fred::error::ErrorKind::Timeout
    ) {
        err.temporary()
    } else {
        err
    }
}

/// Connect to database `db`.
pub(crate) async fn connect(c: &RedisConfig, db: u32) -> Result<Client> {
    let db8 =
        u8::try_from(db).map_err(|_| Error::bad_input(format!("unknown redis database {db}")))?;
    let config = Config {
        server: ServerConfig::new_centralized(c.host.clone(), c.port),
        username: c.username.clone(),
        password: c.password.as_ref().map(|p| p.expose().to_owned()),
        database: Some(db8),
        ..Config::default()
    };
    let client = Builder::from_config(config)
        .with_connection_config(|cc| {
            cc.connection_timeout = c.timeout;
            cc.internal_command_timeout = c.timeout;
        })
        .build()
        .map_err(|e| fred_error(c, &e, "cannot configure the redis client"))?;
    client.init().await.map_err(|e| {
        fred_error(
            c,
            &e,
            &format!("cannot connect to redis at {}:{}", c.host, c.port),
        )
    })?;
    Ok(client)
}

/// Run a command and return its raw value.
pub(crate) async fn cmd(
    c: &RedisConfig,
    client: &Client,
    name: &'static str,
    args: Vec<Value>,
) -> Result<Value> {
    client
        .custom::<Value, Value>(CustomCommand::new_static(name, None, false), args)
        .await
        .map_err(|e| fred_error(c, &e, &format!("redis {name} failed")))
}

/// `INFO <section>` as `key -> value` lines.
pub(crate) async fn info(
    c: &RedisConfig,
    client: &Client,
    section: &str,
) -> Result<BTreeMap<String, String>> {
    let v = cmd(c, client, "INFO", vec![Value::from(section)]).await?;
    let text = v.as_str().map(|s| s.into_owned()).unwrap_or_default();
    Ok(parse_info(&text))
}

pub(crate) fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Keys per database from `INFO keyspace` (`db0:keys=3,expires=1,avg_ttl=0`).
pub(crate) fn keyspace(info: &BTreeMap<String, String>) -> BTreeMap<u32, u64> {
    info.iter()
        .filter_map(|(k, v)| {
            let db = k.strip_prefix("db")?.parse().ok()?;
            let keys = v
                .split(',')
                .find_map(|p| p.strip_prefix("keys="))?
                .parse()
                .ok()?;
            Some((db, keys))
        })
        .collect()
}

/// Counters that bound the writes made between two points in time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Activity {
    dirty: u64,
    last_save: u64,
    commands: u64,
}

impl Activity {
    /// An upper bound of the writes made since `before`: the growth of
    /// `rdb_changes_since_last_save` when no save reset it meanwhile, otherwise the number of
    /// commands processed (reads included).
    pub(crate) fn writes_since(&self, before: &Activity) -> u64 {
        if self.last_save == before.last_save && self.dirty >= before.dirty {
            self.dirty - before.dirty
        } else {
            self.commands.saturating_sub(before.commands)
        }
    }
}

/// The current [`Activity`] counters.
pub(crate) async fn activity(c: &RedisConfig, client: &Client) -> Result<Activity> {
    let p = info(c, client, "persistence").await?;
    let s = info(c, client, "stats").await?;
    let num = |m: &BTreeMap<String, String>, k: &str| {
        m.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    Ok(Activity {
        dirty: num(&p, "rdb_changes_since_last_save"),
        last_save: num(&p, "rdb_last_save_time"),
        commands: num(&s, "total_commands_processed"),
    })
}

/// One `SCAN` page: the next cursor and the keys.
pub(crate) async fn scan_page(
    c: &RedisConfig,
    client: &Client,
    cursor: &str,
    pattern: Option<&str>,
    count: u32,
) -> Result<(String, Vec<Vec<u8>>)> {
    let mut args = vec![Value::from(cursor)];
    if let Some(p) = pattern {
        args.push(Value::from("MATCH"));
        args.push(Value::from(p));
    }
    args.push(Value::from("COUNT"));
    args.push(Value::from(i64::from(count)));
    let v = cmd(c, client, "SCAN", args).await?.into_array();
    let mut it = v.into_iter();
    let next = it
        .next()
        .and_then(|v| v.as_str().map(|s| s.into_owned()))
        .ok_or_else(|| Error::new(ErrorKind::Source, "redis sent a malformed SCAN reply"))?;
    let keys = it
        .next()
        .map(Value::into_array)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
        .collect();
    Ok((next, keys))
}

/// `DUMP` and `PTTL` of each key in one pipeline; `None` for keys gone meanwhile.
pub(crate) async fn dump_batch(
    c: &RedisConfig,
    client: &Client,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<(Vec<u8>, i64)>>> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe
            .custom(
                CustomCommand::new_static("DUMP", None, false),
                vec![Value::Bytes(k.clone().into())],
            )
            .await
            .map_err(|e| fred_error(c, &e, "redis DUMP failed"))?;
        let _: () = pipe
            .custom(
                CustomCommand::new_static("PTTL", None, false),
                vec![Value::Bytes(k.clone().into())],
            )
            .await
            .map_err(|e| fred_error(c, &e, "redis PTTL failed"))?;
    }
    let replies: Vec<Value> = pipe
        .all()
        .await
        .map_err(|e| fred_error(c, &e, "redis DUMP/PTTL pipeline failed"))?;
    let mut out = Vec::with_capacity(keys.len());
    let mut it = replies.into_iter();
    for _ in keys {
        let dump = it.next().unwrap_or(Value::Null);
        let ttl = it.next().and_then(|v| v.as_i64()).unwrap_or(-2);
        match dump.as_bytes() {
            Some(d) if ttl != -2 => out.push(Some((d.to_vec(), ttl))),
            _ => out.push(None),
        }
    }
    Ok(out)
}

/// `OBJECT ENCODING` of each key in one pipeline (`None` for keys gone meanwhile).
pub(crate) async fn encodings(
    c: &RedisConfig,
    client: &Client,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<String>>> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe
            .custom(
                CustomCommand::new_static("OBJECT", None, false),
                vec![Value::from("ENCODING"), Value::Bytes(k.clone().into())],
            )
            .await
            .map_err(|e| fred_error(c, &e, "redis OBJECT ENCODING failed"))?;
    }
    Ok(pipe
        .try_all::<Value>()
        .await
        .into_iter()
        .map(|r| r.ok().and_then(|v| v.as_str().map(|s| s.into_owned())))
        .collect())
}
