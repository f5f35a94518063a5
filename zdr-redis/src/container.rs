//! Physical restore into a Redis that runs in a container: the verified RDB is copied into
//! the container's data directory, the container is stopped, the files are swapped on its
//! volumes (old ones kept aside), and it is started again — no `data_dir` on this machine, no
//! start/stop commands, no client tools on the host.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use fred::types::Value;
use zdr_core::{ArtifactReader, Error, ErrorKind, Manifest, Progress, RestoreOutcome, Result};

use crate::server::{fetch_rdb, loaded_outcome, wait_loaded};
use crate::{RedisComponent, RedisConfig, RedisFacts, client};

/// The container a Redis server runs in, as a physical restore needs it: copy a file into
/// it, read a small file, run a shell script on its files, stop and start it.
///
/// The facade implements it on the Docker Engine API (`zdr-docker`); another runtime (a
/// Podman socket, a Kubernetes pod) can implement it too.
#[async_trait]
pub trait ServerContainer: Send + Sync {
    /// The container's name, for messages.
    fn name(&self) -> String;

    /// Whether the container runs.
    async fn is_running(&self) -> Result<bool>;

    /// Copies the host file `local` into directory `dir` of the container as `name`
    /// (running or stopped container).
    async fn put_file(&self, local: &Path, dir: &str, name: &str) -> Result<()>;

    /// The content of a small file of the container (running or stopped), `None` when it
    /// does not exist.
    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// Runs `sh -c script` as root on the container's files: inside it while it runs, on
    /// its volumes while it is stopped.
    async fn run_script(&self, script: &str) -> Result<()>;

    /// Stops the container (its stop signal, then a kill after `timeout`).
    async fn stop(&self, timeout: Duration) -> Result<()>;

    /// Starts the container.
    async fn start(&self) -> Result<()>;
}

/// The journal of a restore in progress, in the data directory inside the container.
const JOURNAL: &str = ".zdr-restore-journal";
/// The data directory when the server cannot be asked and none is configured (the official
/// image's `/data`).
const DEFAULT_DIR: &str = "/data";

/// Where the server keeps its files, as it says (`CONFIG GET`), else as configured.
#[derive(Debug, Clone)]
struct Layout {
    dir: String,
    dbfilename: String,
    /// `appenddirname` and `appendfilename` when AOF is on.
    aof: Option<(String, String)>,
}

/// The staging directories of container restores: `<prefix><pid>-<random>` in the temp dir.
const STAGING_PREFIX: &str = "zdr-redis-restore-";

/// Accepts a path or file name only when the shell scripts can use it as it is.
fn safe(what: &str, value: &str, path: bool) -> Result<()> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "._-+@".contains(ch) || (path && ch == '/'));
    if ok && (!path || value.starts_with('/')) {
        Ok(())
    } else {
        Err(Error::bad_input(format!(
            "the redis {what} {value:?} is not a plain {}: zdr does not restore into it",
            if path { "absolute path" } else { "file name" }
        )))
    }
}

async fn config_get(c: &RedisConfig, cl: &fred::prelude::Client, name: &str) -> Option<String> {
    let v = client::cmd(c, cl, "CONFIG", vec![Value::from("GET"), Value::from(name)])
        .await
        .ok()?;
    // `[name, value]` (RESP2) or `{name: value}` (RESP3); nothing when unknown.
    match v {
        Value::Array(a) => a.get(1).and_then(Value::as_string),
        Value::Map(m) => m.inner().into_values().next().and_then(|v| v.as_string()),
        _ => None,
    }
}

async fn layout(c: &RedisConfig, cl: &fred::prelude::Client) -> Result<Layout> {
    let configured = c
        .data_dir
        .as_ref()
        .map(|d| d.to_string_lossy().into_owned());
    let dir = match config_get(c, cl, "dir").await {
        Some(d) => d,
        None => configured.unwrap_or_else(|| DEFAULT_DIR.to_owned()),
    };
    let dbfilename = config_get(c, cl, "dbfilename")
        .await
        .unwrap_or_else(|| c.dbfilename.clone());
    let aof_on = client::info(c, cl, "persistence")
        .await?
        .get("aof_enabled")
        .is_some_and(|v| v == "1");
    let aof = if aof_on {
        let Some(dirname) = config_get(c, cl, "appenddirname").await else {
            return Err(Error::bad_input(
                "redis runs with appendonly yes but does not say its appenddirname (redis before 7, or CONFIG renamed): zdr cannot put the backup where it would be loaded",
            ));
        };
        let filename = config_get(c, cl, "appendfilename")
            .await
            .unwrap_or_else(|| "appendonly.aof".to_owned());
        safe("appenddirname", &dirname, false)?;
        safe("appendfilename", &filename, false)?;
        Some((dirname, filename))
    } else {
        None
    };
    safe("data directory", &dir, true)?;
    safe("dbfilename", &dbfilename, false)?;
    Ok(Layout {
        dir,
        dbfilename,
        aof,
    })
}

/// Bring back a server a restore killed between stopping and starting the container left
/// down: the previous RDB (and AOF directory) put back where none is in place, the
/// container started, loading waited for. Returns what was repaired.
pub(crate) async fn repair_interrupted(
    r: &RedisComponent,
    container: &dyn ServerContainer,
    progress: &Progress,
) -> Result<Option<String>> {
    let c = &r.config;
    let configured = c.data_dir.as_ref().map_or_else(
        || DEFAULT_DIR.to_owned(),
        |d| d.to_string_lossy().into_owned(),
    );
    if container.is_running().await? {
        // The server answers: a restore killed before it stopped the container, or after it
        // started it again, left at most its journal and staged copy beside the data.
        let Ok(cl) = client::connect(c, 0).await else {
            return Ok(None);
        };
        let dir = config_get(c, &cl, "dir").await.unwrap_or(configured);
        let _ = fred::prelude::ClientLike::quit(&cl).await;
        safe("data directory", &dir, true)?;
        if container
            .read_file(&format!("{dir}/{JOURNAL}"))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        container
            .run_script(&format!(
                "rm -f {dir}/{JOURNAL} {dir}/.zdr-restore-*.rdb; rm -rf {dir}/*.zdr-new-*"
            ))
            .await?;
        return Ok(Some(format!(
            "removed what an interrupted restore left beside the data in container {} (the server runs)",
            container.name()
        )));
    }
    let dir = configured;
    safe("data directory", &dir, true)?;
    let Some(journal) = container.read_file(&format!("{dir}/{JOURNAL}")).await? else {
        return Ok(None);
    };
    let journal = String::from_utf8_lossy(&journal).into_owned();
    let mut lines = journal.lines();
    let what = lines.next().unwrap_or("restore").trim().to_owned();
    let dbfilename = lines.next().unwrap_or(&c.dbfilename).trim().to_owned();
    let aofdir = lines.next().unwrap_or("appendonlydir").trim().to_owned();
    safe("dbfilename", &dbfilename, false)?;
    safe("appenddirname", &aofdir, false)?;
    progress.warn(format!(
        "the redis container {} is down after an interrupted {what}: starting it",
        container.name()
    ));
    // The newest file kept aside goes back where nothing is in place.
    container
        .run_script(&format!(
            "set -e; cd {dir}
for f in {dbfilename} {aofdir}; do
  if [ ! -e \"$f\" ]; then
    old=$(ls -d \"$f\".zdr-old-* 2>/dev/null | sort | tail -n 1)
    if [ -n \"$old\" ]; then mv \"$old\" \"$f\"; fi
  fi
done
rm -rf .zdr-restore-*.rdb ./*.zdr-new-*"
        ))
        .await?;
    container.start().await?;
    wait_loaded(c, c.timeout * 5).await?;
    container
        .run_script(&format!("rm -f {dir}/{JOURNAL}"))
        .await?;
    Ok(Some(format!(
        "repaired an interrupted {what}: the previous files where the new ones were missing, the container {} started",
        container.name()
    )))
}

/// The physical restore into the container.
pub(crate) async fn restore_physical(
    r: &RedisComponent,
    container: &dyn ServerContainer,
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let c = &r.config;
    let name = container.name();
    // The RDB checked on this machine first (hash, magic, records, CRC64): nothing is
    // stopped for a backup that cannot be loaded.
    // Those of restores killed before they could remove their own (each holds a whole RDB).
    zdr_core::staging::sweep_abandoned(&std::env::temp_dir(), STAGING_PREFIX);
    let staging = tempfile::Builder::new()
        .prefix(&format!("{STAGING_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Error::from_io(e, "cannot create a staging directory"))?;
    let staged = staging.path().join("dump.rdb");
    let bytes = fetch_rdb(backup, facts, from, &staged).await?;

    // The server must answer with the configured credentials (once it has loaded its data:
    // a container just started is still loading), and says where its files are.
    wait_loaded(c, c.timeout).await.map_err(|e| {
        e.with_hint("nothing was stopped or replaced: the server must run and accept the configured credentials")
    })?;
    let cl = client::connect(c, 0).await.map_err(|e| {
        e.with_hint("nothing was stopped or replaced: the server must run and accept the configured credentials")
    })?;
    let layout = layout(c, &cl).await;
    let _ = fred::prelude::ClientLike::quit(&cl).await;
    let layout = layout?;
    let dir = &layout.dir;
    let ts = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();
    let staged_name = format!(".zdr-restore-{}.rdb", backup.id);
    safe("staged file", &staged_name, false)?;

    // Leftovers of a killed run go; the RDB goes in beside the data while the server runs.
    container
        .run_script(&format!("rm -f {dir}/.zdr-restore-*.rdb"))
        .await?;
    progress.info(format!(
        "copying the RDB ({bytes} bytes) into {dir} of container {name}"
    ));
    let aofdir = layout
        .aof
        .as_ref()
        .map_or("appendonlydir", |(d, _)| d.as_str());
    let prepared: Result<()> = async {
        container.put_file(&staged, dir, &staged_name).await?;
        // From here on the server may be down: the journal lets the next run bring it back.
        container
            .run_script(&format!(
                "printf '%s\\n' 'restore of {id} at {ts}' {dbf} {aofdir} > {dir}/{JOURNAL}",
                id = backup.id,
                dbf = layout.dbfilename,
            ))
            .await?;
        progress.info(format!("stopping the redis container {name}"));
        container.stop(c.timeout).await
    }
    .await;
    drop(staging);
    if let Err(e) = prepared {
        // Still running (the stop failed or never came): what this run put beside the data
        // goes again.
        if container.is_running().await.unwrap_or(false) {
            let _ = container
                .run_script(&format!("rm -f {dir}/{staged_name} {dir}/{JOURNAL}"))
                .await;
        }
        return Err(e);
    }
    zdr_core::failpoint("redis-after-stop");

    // Everything new is made complete first; then each old file is moved aside and the new
    // one moved in (a run killed between two moves is repaired by the next: what is missing
    // comes back from aside).
    let dbf = &layout.dbfilename;
    let mut script = format!(
        "set -e; cd {dir}
owner=$(stat -c %u:%g .)
chown \"$owner\" {staged_name}
"
    );
    let mut notes = Vec::new();
    if let Some((aofdir, prefix)) = &layout.aof {
        // AOF in use: redis 7 would start empty (and ignore the RDB) without an AOF set; a
        // new set whose base is the backup's RDB loads it.
        script.push_str(&format!(
            "rm -rf {aofdir}.zdr-new-{ts}
mkdir {aofdir}.zdr-new-{ts}
cp {staged_name} {aofdir}.zdr-new-{ts}/{prefix}.1.base.rdb
printf 'file {prefix}.1.base.rdb seq 1 type b\\n' > {aofdir}.zdr-new-{ts}/{prefix}.manifest
chown -R \"$owner\" {aofdir}.zdr-new-{ts}
if [ -e {aofdir} ]; then mv {aofdir} {aofdir}.zdr-old-{ts}; fi
mv {aofdir}.zdr-new-{ts} {aofdir}
"
        ));
        notes.push(format!(
            "the AOF directory is kept as {dir}/{aofdir}.zdr-old-{ts}; a new AOF set has the backup's RDB as its base"
        ));
    }
    script.push_str(&format!(
        "if [ -e {dbf} ]; then mv {dbf} {dbf}.zdr-old-{ts}; fi
mv {staged_name} {dbf}
"
    ));
    if let Err(e) = container.run_script(&script).await {
        // The server must not stay down: what is missing comes back from aside, and the
        // container starts on its previous data.
        return Err(match repair_interrupted(r, container, progress).await {
            Ok(_) => e.with_hint(format!(
                "nothing was restored: the container {name} runs again on its previous data"
            )),
            Err(again) => e.with_hint(format!(
                "the container {name} is stopped and could not be started again ({again}); the next zdr command on the component retries"
            )),
        });
    }
    notes.insert(
        0,
        format!(
            "the previous RDB (if any) is kept as {dir}/{}.zdr-old-{ts} in the container's volume",
            dbf
        ),
    );
    zdr_core::failpoint("redis-after-swap");

    progress.info(format!("starting the redis container {name}"));
    container.start().await?;
    wait_loaded(c, c.timeout * 5).await?;
    container
        .run_script(&format!("rm -f {dir}/{JOURNAL}"))
        .await?;
    loaded_outcome(
        r,
        facts,
        format!(
            "redis container {name} ({}:{}, {dir}/{dbf})",
            c.host, c.port
        ),
        bytes,
        notes,
    )
    .await
}

/// A container that is not running when a restore begins and has no journal is not ours to
/// start: say so instead of failing on the connection.
pub(crate) fn not_running(name: &str) -> Error {
    Error::new(
        ErrorKind::Source,
        format!("the redis container {name} is not running: nothing was restored"),
    )
    .with_context("container", name)
    .with_hint(
        "start it (docker start), or recover it: zdr recover container <component>; a restore killed while the container was down is found through its journal in data_dir (default /data): set data_dir when the server's dir is elsewhere",
    )
}

#[cfg(test)]
mod tests {
    use super::{STAGING_PREFIX, safe};

    #[test]
    fn staging_left_by_a_dead_process_is_swept_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // No process has a pid above the kernel's maximum (4194304).
        let dead = dir.path().join(format!("{STAGING_PREFIX}99999999-abc"));
        let live = dir
            .path()
            .join(format!("{STAGING_PREFIX}{}-def", std::process::id()));
        let other = dir.path().join("zdr-something-else-1-x");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(d.join("dump.rdb"), b"REDIS").unwrap_or_else(|e| panic!("{e}"));
        }
        zdr_core::staging::sweep_abandoned(dir.path(), STAGING_PREFIX);
        assert!(!dead.exists(), "the dead process's staging stayed");
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn only_plain_paths_and_names_reach_the_scripts() {
        assert!(safe("data directory", "/data", true).is_ok());
        assert!(safe("data directory", "/var/lib/redis-7", true).is_ok());
        assert!(safe("dbfilename", "dump.rdb", false).is_ok());
        for (value, path) in [
            ("data", true),
            ("/data dir", true),
            ("/data;rm -rf /", true),
            ("/$(id)", true),
            ("", false),
            ("..", false),
            ("a/b.rdb", false),
            ("dump'.rdb", false),
        ] {
            let e = safe("x", value, path)
                .err()
                .unwrap_or_else(|| panic!("{value:?} was accepted"));
            assert!(
                e.to_string().contains("zdr does not restore into it"),
                "{e}"
            );
        }
    }
}
