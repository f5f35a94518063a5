//! Running `redis-server` (scratch verification) and managing the server that owns the data
//! directory (physical restore).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::Digest;
use zdr_core::{
    ArtifactReader, CommandSpec, Error, ErrorKind, Manifest, Progress, RestoreOutcome, Result,
    RunningCommand, VerifyReport,
};

use crate::{RedisComponent, RedisConfig, RedisFacts, client};

/// A free TCP port on 127.0.0.1.
fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::from_io(e, "cannot find a free port"))
}

/// Copy the artifact `dump` of `backup` to `path`, reading it to its end (the reader checks
/// the hash there).
pub(crate) async fn fetch_rdb(
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    path: &Path,
) -> Result<u64> {
    let record = backup
        .artifacts
        .iter()
        .find(|a| a.name == facts.artifact)
        .ok_or_else(|| {
            Error::integrity(format!(
                "backup {} has no artifact {}",
                backup.id, facts.artifact
            ))
        })?;
    let mut reader = from.open(record).await?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| Error::from_io(e, format!("cannot create {}", path.display())))?;
    let n = tokio::io::copy(&mut reader, &mut file)
        .await
        .map_err(|e| Error::from_io(e, "cannot copy the RDB artifact"))?;
    file.sync_all()
        .await
        .map_err(|e| Error::from_io(e, format!("cannot sync {}", path.display())))?;
    // Checked again on disk: magic, records, CRC64.
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&p)
            .map_err(|e| Error::from_io(e, format!("cannot open {}", p.display())))?;
        crate::rdb::validate(std::io::BufReader::new(f))
    })
    .await
    .map_err(|e| Error::unexpected(format!("the RDB validator failed: {e}")))??;
    Ok(n)
}

/// Wait until the server answers and has finished loading.
pub(crate) async fn wait_loaded(c: &RedisConfig, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    let mut last;
    loop {
        match client::connect(c, 0).await {
            Ok(cl) => {
                let r = client::info(c, &cl, "persistence").await;
                let _ = fred::prelude::ClientLike::quit(&cl).await;
                match r {
                    Ok(p) if p.get("loading").is_some_and(|v| v == "0") => return Ok(()),
                    Ok(_) => last = "still loading".into(),
                    Err(e) if e.kind() == ErrorKind::BadInput => return Err(e),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) if e.kind() == ErrorKind::BadInput => return Err(e),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() > deadline {
            return Err(Error::new(
                ErrorKind::Source,
                format!(
                    "redis at {}:{} did not finish loading within {}s: {last}",
                    c.host,
                    c.port,
                    deadline.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Key counts of `c`'s server against the facts.
pub(crate) async fn compare_counts(
    _r: &RedisComponent,
    c: &RedisConfig,
    facts: &RedisFacts,
) -> Result<VerifyReport> {
    let cl = client::connect(c, 0).await?;
    let live = client::keyspace(&client::info(c, &cl, "keyspace").await?);
    let _ = fred::prelude::ClientLike::quit(&cl).await;
    Ok(count_report(&facts.keys, &facts.volatile, &live))
}

/// Each database must hold between `keys - volatile` and `keys` keys (keys with an expiry
/// may have expired since the backup).
pub(crate) fn count_report(
    keys: &BTreeMap<u32, u64>,
    volatile: &BTreeMap<u32, u64>,
    live: &BTreeMap<u32, u64>,
) -> VerifyReport {
    let mut report = VerifyReport::default();
    let dbs: std::collections::BTreeSet<u32> = keys.keys().chain(live.keys()).copied().collect();
    for db in dbs {
        let want = keys.get(&db).copied().unwrap_or(0);
        let may_expire = volatile.get(&db).copied().unwrap_or(0);
        let got = live.get(&db).copied().unwrap_or(0);
        report.checked += 1;
        if got > want || got < want.saturating_sub(may_expire) {
            report.problems.push(format!(
                "db{db}: {got} key(s) loaded, the backup holds {want} ({may_expire} with an expiry)"
            ));
        }
    }
    report
}

/// Compare sampled `DUMP` digests; more mismatches than the recorded tolerance is a problem.
async fn compare_sample(
    c: &RedisConfig,
    facts: &RedisFacts,
    report: &mut VerifyReport,
) -> Result<()> {
    let mut by_db: BTreeMap<u32, Vec<&crate::KeyDigest>> = BTreeMap::new();
    for d in &facts.sample {
        by_db.entry(d.db).or_default().push(d);
    }
    let mut differ = Vec::new();
    for (db, digests) in by_db {
        let cl = client::connect(c, db).await?;
        let keys: Vec<Vec<u8>> = digests
            .iter()
            .map(|d| hex::decode(&d.key_hex).unwrap_or_default())
            .collect();
        let dumps = client::dump_batch(c, &cl, &keys).await?;
        let _ = fred::prelude::ClientLike::quit(&cl).await;
        for (d, got) in digests.iter().zip(dumps) {
            report.checked += 1;
            let same = got
                .map(|(p, _)| hex::encode(sha2::Sha256::digest(&p)) == d.sha256)
                .unwrap_or(false);
            if !same {
                differ.push(format!(
                    "db{db} key {}",
                    String::from_utf8_lossy(&hex::decode(&d.key_hex).unwrap_or_default())
                ));
            }
        }
    }
    if differ.len() as u64 > facts.sample_tolerance {
        report.problems.push(format!(
            "{} sampled key(s) differ from their DUMP digest at backup time (tolerance {}): {}",
            differ.len(),
            facts.sample_tolerance,
            differ.join(", ")
        ));
    }
    Ok(())
}

struct Scratch {
    run: RunningCommand,
    _dir: tempfile::TempDir,
}

impl Scratch {
    async fn stop(mut self) {
        let _ = self.run.handle.kill().await;
    }
}

async fn start_scratch(r: &RedisComponent, dir: tempfile::TempDir, port: u16) -> Result<Scratch> {
    let spec = CommandSpec::new("redis-server").args([
        "--port".to_owned(),
        port.to_string(),
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--dir".to_owned(),
        dir.path().display().to_string(),
        "--dbfilename".to_owned(),
        "dump.rdb".to_owned(),
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
        "--daemonize".to_owned(),
        "no".to_owned(),
        "--protected-mode".to_owned(),
        "yes".to_owned(),
    ]);
    let mut spec = spec;
    spec.stdout = false;
    let run = r.runner.spawn(&spec).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            e.with_hint(
                "install redis-server (Debian: apt-get install redis-server) or set bin_dir",
            )
        } else {
            e
        }
    })?;
    Ok(Scratch { run, _dir: dir })
}

/// Load the backup into a scratch server and compare.
pub(crate) async fn verify_scratch(
    r: &RedisComponent,
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let dir = tempfile::Builder::new()
        .prefix("zdr-redis-verify-")
        .tempdir()
        .map_err(|e| Error::from_io(e, "cannot create a temporary directory"))?;
    let logical = facts.mode == "logical";
    let bytes = if logical {
        0
    } else {
        fetch_rdb(backup, facts, from, &dir.path().join("dump.rdb")).await?
    };
    let port = free_port()?;
    progress.info(format!(
        "loading backup {} into a scratch redis-server on 127.0.0.1:{port}",
        backup.id
    ));
    let scratch = start_scratch(r, dir, port).await?;
    let mut sc = RedisConfig::new("127.0.0.1", port);
    sc.timeout = r.config.timeout;
    let result = async {
        wait_loaded(&sc, r.config.timeout).await?;
        if logical {
            // An empty scratch server, RESTOREd key by key, then counted.
            let mut into = r.clone();
            into.config = sc.clone();
            let options = crate::RestoreOptions {
                replace: true,
                ..crate::RestoreOptions::default()
            };
            let (_, expired) =
                crate::logical::restore_counted(&into, &options, backup, facts, from, progress)
                    .await?;
            let cl = client::connect(&sc, 0).await?;
            let live = client::keyspace(&client::info(&sc, &cl, "keyspace").await?);
            let _ = fred::prelude::ClientLike::quit(&cl).await;
            let all = facts.keys.clone();
            let mut report = count_report(&facts.keys, &all, &live);
            let (want, got) = (all.values().sum::<u64>(), live.values().sum::<u64>());
            if got + expired != want {
                report.problems.push(format!(
                    "{got} key(s) loaded and {expired} expired, the export holds {want}"
                ));
            }
            return Ok::<_, Error>(report);
        }
        let mut report = compare_counts(r, &sc, facts).await?;
        compare_sample(&sc, facts, &mut report).await?;
        Ok::<_, Error>(report)
    }
    .await;
    scratch.stop().await;
    let report = result?;
    if !report.is_ok() {
        return Err(Error::integrity(format!(
            "the backup loaded into a scratch redis does not match its manifest: {}",
            report.problems.join("; ")
        ))
        .with_verify_report(report));
    }
    Ok(RestoreOutcome {
        target: format!("scratch redis-server on 127.0.0.1:{port}"),
        items: facts.keys.values().sum(),
        bytes,
        notes: vec![format!(
            "{} check(s) passed: key counts per database and {} sampled DUMP digest(s)",
            report.checked,
            facts.sample.len()
        )],
    })
}

async fn run_to_end(r: &RedisComponent, spec: &CommandSpec, what: &str) -> Result<()> {
    let mut run = r.runner.spawn(spec).await?;
    let mut err = String::new();
    if let Some(mut e) = run.stderr.take() {
        use tokio::io::AsyncReadExt;
        let _ = e.read_to_string(&mut err).await;
    }
    if let Some(mut o) = run.stdout.take() {
        use tokio::io::AsyncReadExt;
        let mut s = String::new();
        let _ = o.read_to_string(&mut s).await;
    }
    let exit = run.handle.wait().await?;
    if !exit.success() {
        return Err(Error::new(
            ErrorKind::Source,
            r.config.scrub(&format!(
                "{what} ({}) failed with {exit}: {}",
                spec.display(),
                err.trim()
            )),
        ));
    }
    Ok(())
}

fn command_spec(argv: &[String]) -> Result<CommandSpec> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| Error::bad_input("an empty start/stop command is configured"))?;
    let mut spec = CommandSpec::new(program.clone()).args(args.iter().cloned());
    spec.stdout = false;
    Ok(spec)
}

/// Stop the server, swap the files, start it, wait for loading, compare.
/// The journal of a physical restore in progress, in the data directory.
const JOURNAL: &str = ".zdr-restore-journal";

/// Finish what a physical restore killed between stopping and restarting the server left:
/// when its journal is there and the server does not answer, put the previous RDB (and AOF
/// directory) back if none is in place, start the server with the configured command and wait
/// until it has loaded. Returns what was repaired.
pub(crate) async fn repair_interrupted(
    r: &RedisComponent,
    progress: &Progress,
) -> Result<Option<String>> {
    let c = &r.config;
    let Some(dir) = &c.data_dir else {
        return Ok(None);
    };
    let journal = dir.join(JOURNAL);
    let Ok(what) = tokio::fs::read_to_string(&journal).await else {
        return Ok(None);
    };
    let what = what.trim().to_owned();
    if tokio::net::TcpStream::connect((c.host.as_str(), c.port))
        .await
        .is_ok()
    {
        // The server is up (the restore finished, or someone started it): nothing to do.
        let _ = tokio::fs::remove_file(&journal).await;
        return Ok(None);
    }
    let Some(start) = &c.start_command else {
        return Err(Error::new(
            ErrorKind::Source,
            format!(
                "redis is down after an interrupted {what}, and no start_command is configured to start it"
            ),
        ));
    };
    let mut done = Vec::new();
    let newest_aside = |prefix: String| async move {
        let mut best: Option<std::path::PathBuf> = None;
        if let Ok(mut rd) = tokio::fs::read_dir(dir).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix)
                    && best
                        .as_ref()
                        .is_none_or(|b| b.file_name().is_some_and(|n| *n.to_string_lossy() < *name))
                {
                    best = Some(e.path());
                }
            }
        }
        best
    };
    let target = dir.join(&c.dbfilename);
    if !target.exists()
        && let Some(old) = newest_aside(format!("{}.zdr-old-", c.dbfilename)).await
    {
        tokio::fs::rename(&old, &target)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot put {} back", old.display())))?;
        done.push(format!("put {} back", old.display()));
    }
    let aof = dir.join("appendonlydir");
    if !aof.exists()
        && let Some(old) = newest_aside("appendonlydir.zdr-old-".to_owned()).await
    {
        tokio::fs::rename(&old, &aof)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot put {} back", old.display())))?;
        done.push(format!("put {} back", old.display()));
    }
    progress.warn(format!(
        "redis at {}:{} is down after an interrupted {what}: starting it",
        c.host, c.port
    ));
    run_to_end(r, &command_spec(start)?, "starting redis").await?;
    wait_loaded(c, c.timeout * 5).await?;
    let _ = tokio::fs::remove_file(&journal).await;
    done.push("started the server".to_owned());
    Ok(Some(format!(
        "repaired an interrupted {what}: {}",
        done.join(", ")
    )))
}

pub(crate) async fn restore_physical(
    r: &RedisComponent,
    backup: &Manifest,
    facts: &RedisFacts,
    from: &dyn ArtifactReader,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let c = &r.config;
    let dir = c.data_dir.clone().ok_or_else(|| {
        Error::bad_input("a physical redis restore needs data_dir (the server's `dir`)").with_hint(
            "set the server's data_dir in the component settings, or restore a logical backup",
        )
    })?;
    let start = c.start_command.clone().ok_or_else(|| {
        Error::bad_input("a physical redis restore needs start_command to start the server again")
            .with_hint(
                "such as [\"redis-server\", \"/etc/redis/redis.conf\", \"--daemonize\", \"yes\"]",
            )
    })?;
    // Stage the RDB beside the data first: checked before the server is stopped.
    let staged = dir.join(format!(".zdr-restore-{}.rdb", backup.id));
    let bytes = fetch_rdb(backup, facts, from, &staged).await?;
    // Preflight: a server that answers must accept the configured credentials before it is
    // stopped (a wrong password found only after the restart would lose what was in memory).
    if tokio::net::TcpStream::connect((c.host.as_str(), c.port))
        .await
        .is_ok()
    {
        match crate::client::connect(c, 0).await {
            Ok(client) => {
                let _ = fred::prelude::ClientLike::quit(&client).await;
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&staged).await;
                return Err(e.with_hint(
                    "nothing was stopped or replaced: fix the credentials and restore again",
                ));
            }
        }
    }
    let ts = chrono::Utc::now().format("%Y%m%d_%H%M%S").to_string();

    // From here on the server may be down: the journal lets the next run bring it back if
    // this one is killed before the restart.
    tokio::fs::write(
        dir.join(JOURNAL),
        format!("restore of {} at {ts}\n", backup.id),
    )
    .await
    .map_err(|e| Error::from_io(e, "cannot write the restore journal"))?;
    progress.info(format!("stopping redis at {}:{}", c.host, c.port));
    let stop = match &c.stop_command {
        Some(argv) => command_spec(argv)?,
        None => {
            let mut s = CommandSpec::new("redis-cli").args([
                "-h".to_owned(),
                c.host.clone(),
                "-p".to_owned(),
                c.port.to_string(),
            ]);
            if let Some(u) = &c.username {
                s = s.args(["--user".to_owned(), u.clone()]);
            }
            if let Some(p) = &c.password {
                s = s.secret_env("REDISCLI_AUTH", p.expose());
            }
            s = s.args(["SHUTDOWN", "NOSAVE"]);
            s.stdout = false;
            s
        }
    };
    let stopped = run_to_end(r, &stop, "stopping redis").await;
    // redis-cli SHUTDOWN reports a closed connection on success with some versions.
    let deadline = Instant::now() + c.timeout;
    loop {
        if tokio::net::TcpStream::connect((c.host.as_str(), c.port))
            .await
            .is_err()
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = tokio::fs::remove_file(&staged).await;
            stopped?;
            return Err(Error::new(
                ErrorKind::Source,
                "redis is still running after the stop command",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    zdr_core::failpoint("redis-after-stop");
    let mut notes = Vec::new();
    let target = dir.join(&c.dbfilename);
    if target.exists() {
        let old = dir.join(format!("{}.zdr-old-{ts}", c.dbfilename));
        tokio::fs::rename(&target, &old)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot move {} aside", target.display())))?;
        notes.push(format!("the previous RDB is kept as {}", old.display()));
    }
    let aof = dir.join("appendonlydir");
    let mut aof_prefix = None;
    if aof.exists() {
        // The AOF file prefix (`appendfilename`) from the old manifest's name.
        if let Ok(mut rd) = tokio::fs::read_dir(&aof).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(p) = name.strip_suffix(".manifest") {
                    aof_prefix = Some(p.to_owned());
                }
            }
        }
        let old = dir.join(format!("appendonlydir.zdr-old-{ts}"));
        tokio::fs::rename(&aof, &old)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot move {} aside", aof.display())))?;
        notes.push(format!(
            "the AOF directory is kept as {} (redis would load it instead of the RDB)",
            old.display()
        ));
    }
    if let Some(prefix) = &aof_prefix {
        // AOF in use: with appendonly yes and no AOF, redis 7 starts empty and ignores
        // dump.rdb. A new AOF set whose base is the backup's RDB loads it either way.
        tokio::fs::create_dir(&aof)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot create {}", aof.display())))?;
        let base = format!("{prefix}.1.base.rdb");
        tokio::fs::copy(&staged, aof.join(&base))
            .await
            .map_err(|e| {
                Error::from_io(e, format!("cannot write {}", aof.join(&base).display()))
            })?;
        tokio::fs::write(
            aof.join(format!("{prefix}.manifest")),
            format!("file {base} seq 1 type b\n"),
        )
        .await
        .map_err(|e| Error::from_io(e, "cannot write the AOF manifest"))?;
        notes.push(format!(
            "a new AOF set was written with the backup's RDB as its base ({})",
            aof.join(&base).display()
        ));
    }
    tokio::fs::rename(&staged, &target)
        .await
        .map_err(|e| Error::from_io(e, format!("cannot put {} in place", target.display())))?;
    zdr_core::failpoint("redis-after-swap");

    progress.info(c.scrub(&format!("starting redis ({})", start.join(" "))));
    run_to_end(r, &command_spec(&start)?, "starting redis").await?;
    wait_loaded(c, c.timeout * 5).await?;
    let _ = tokio::fs::remove_file(dir.join(JOURNAL)).await;
    loaded_outcome(
        r,
        facts,
        format!("redis at {}:{} ({})", c.host, c.port, target.display()),
        bytes,
        notes,
    )
    .await
}

/// The outcome of a physical restore once the server has loaded the RDB: its key counts
/// per database compared with the manifest's (an integrity error naming the differences).
pub(crate) async fn loaded_outcome(
    r: &RedisComponent,
    facts: &RedisFacts,
    target: String,
    bytes: u64,
    notes: Vec<String>,
) -> Result<RestoreOutcome> {
    let report = compare_counts(r, &r.config, facts).await?;
    if !report.is_ok() {
        return Err(Error::integrity(format!(
            "redis loaded the backup but its key counts differ from the manifest: {}",
            report.problems.join("; ")
        ))
        .with_verify_report(report));
    }
    Ok(RestoreOutcome {
        target,
        items: facts.keys.values().sum(),
        bytes,
        notes,
    })
}
