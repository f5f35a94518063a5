//! The Redis part of `zdr drill --sandbox`: a throwaway `redis-server` (daemonized, a free
//! port, a temp data directory), data of every type in two databases, a physical backup (RDB
//! over the replication protocol) and a logical one of a key family, two accidents
//! (`FLUSHALL`, then `DEL` of the key family), the physical restore into the server that owns
//! the data directory and the selective logical restore, each with its RTO.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use zdr_core::{Component, Error, Progress, RestoreTarget, Result};
use zdr_redis::{BackupMode, RedisComponent, RedisConfig, RedisFacts, RestoreOptions};
use zdr_storage::Repository;

use crate::human_bytes;

/// `redis-server` and `redis-cli` (`$ZDR_REDIS_BIN_DIR`, else `PATH`), or why there are none.
fn find_bin_dir() -> std::result::Result<Option<PathBuf>, String> {
    if let Some(dir) = std::env::var_os("ZDR_REDIS_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("redis-server").is_file() && dir.join("redis-cli").is_file() {
            Ok(Some(dir))
        } else {
            Err(format!(
                "redis-server/redis-cli not found in ZDR_REDIS_BIN_DIR={}",
                dir.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("redis-server").is_file() && dir.join("redis-cli").is_file() {
                return Ok(None);
            }
        }
    }
    Err("redis-server/redis-cli not found on PATH".to_owned())
}

fn program(bin: Option<&Path>, name: &str) -> String {
    bin.map_or_else(|| name.to_owned(), |b| b.join(name).display().to_string())
}

/// A throwaway server, killed (by its pid file) on drop.
struct Sandbox {
    dir: tempfile::TempDir,
    bin: Option<PathBuf>,
    port: u16,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

impl Sandbox {
    fn start_command(&self) -> Vec<String> {
        let d = self.dir.path().display().to_string();
        vec![
            program(self.bin.as_deref(), "redis-server"),
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            d.clone(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--repl-diskless-sync-delay".into(),
            "0".into(),
            "--daemonize".into(),
            "yes".into(),
            "--pidfile".into(),
            format!("{d}/redis.pid"),
            "--logfile".into(),
            format!("{d}/redis.log"),
        ]
    }

    fn cli(&self, db: u32, args: &[&str]) -> Result<String> {
        let out = Command::new(program(self.bin.as_deref(), "redis-cli"))
            .args(["-p", &self.port.to_string(), "-n", &db.to_string()])
            .args(args)
            .output()
            .map_err(|e| Error::from_io(e, "cannot run redis-cli"))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn pipe(&self, db: u32, lines: &str) -> Result<()> {
        let mut child = Command::new(program(self.bin.as_deref(), "redis-cli"))
            .args(["-p", &self.port.to_string(), "-n", &db.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| Error::from_io(e, "cannot run redis-cli"))?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(lines.as_bytes())
                .map_err(|e| Error::from_io(e, "cannot feed redis-cli"))?;
        }
        child
            .wait()
            .map_err(|e| Error::from_io(e, "redis-cli failed"))?;
        Ok(())
    }

    fn dbsize(&self, db: u32) -> Result<u64> {
        Ok(self.cli(db, &["DBSIZE"])?.parse().unwrap_or(0))
    }
}

/// The Redis part of the drill ran, or was skipped.
pub enum RedisDrillOutcome {
    /// It ran: report lines, JSON, passed, RTO of the physical restore.
    Ran {
        /// Report lines.
        text: Vec<String>,
        /// The JSON report.
        json: serde_json::Value,
        /// Whether it passed.
        ok: bool,
    },
    /// Why it did not run.
    Skipped(String),
}

/// Run the Redis drill against `repo`, or say why it was skipped.
pub async fn run_drill(repo: &Repository, progress: &Progress) -> Result<RedisDrillOutcome> {
    let bin = match find_bin_dir() {
        Ok(b) => b,
        Err(why) => {
            progress.warn(why.clone());
            return Ok(RedisDrillOutcome::Skipped(why));
        }
    };
    let port = crate::free_port()?;
    let dir = tempfile::Builder::new()
        .prefix("zdr-drill-redis-")
        .tempdir()
        .map_err(|e| Error::from_io(e, "cannot create a temp dir"))?;
    let sb = Sandbox { dir, bin, port };
    let start = sb.start_command();
    let st = Command::new(&start[0])
        .args(&start[1..])
        .status()
        .map_err(|e| Error::from_io(e, "cannot start redis-server"))?;
    if !st.success() {
        return Err(Error::new(
            zdr_core::ErrorKind::Source,
            format!("redis-server failed to start ({st})"),
        ));
    }
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.cli(0, &["PING"])? != "PONG" {
        if Instant::now() > deadline {
            return Err(Error::new(
                zdr_core::ErrorKind::Source,
                "the sandbox redis-server did not start",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Data: every type, TTLs, two databases.
    let mut l = String::new();
    for i in 0..2000 {
        l.push_str(&format!("SET user:{i} name-{i}\n"));
        if i % 4 == 0 {
            l.push_str(&format!("SET session:{i} token-{i} EX 86400\n"));
        }
    }
    for i in 0..200 {
        l.push_str(&format!(
            "HSET cart:{i} item a qty {i}\nRPUSH jobs:{} job-{i}\nSADD tags t{i}\nZADD leaderboard {i} p{i}\nXADD audit * n {i}\n",
            i % 10
        ));
    }
    sb.pipe(0, &l)?;
    sb.pipe(1, "SET cache:home <html>\nHSET cache:meta built now\n")?;
    let before = (sb.dbsize(0)?, sb.dbsize(1)?);
    text.push(format!(
        "12. redis   sandbox redis-server on 127.0.0.1:{port}: {} keys in db0, {} in db1",
        before.0, before.1
    ));

    let mut config = RedisConfig::new("127.0.0.1", port);
    config.data_dir = Some(sb.dir.path().to_path_buf());
    config.start_command = Some(start.clone());
    config.bin_dir = sb.bin.clone();
    config.timeout = Duration::from_secs(30);
    let component = Component::new("redis")?;
    let redis = RedisComponent::new(component, config);
    let t = Instant::now();
    let m = repo.backup(&redis, "daily", progress).await?;
    let f = RedisFacts::from_manifest(&m)?;
    text.push(format!(
        "13. backup  redis {} (physical: {} path, {} transfer, RDB v{}, CRC64 {}, {} keys) {} in {:.2}s",
        m.id,
        f.path,
        f.transfer.as_deref().unwrap_or("-"),
        f.rdb_version.unwrap_or(0),
        f.rdb_crc64.as_deref().unwrap_or("off"),
        f.keys.values().sum::<u64>(),
        human_bytes(m.stored_size()),
        t.elapsed().as_secs_f64()
    ));
    let users = redis.clone().with_backup_mode(BackupMode::Logical {
        pattern: Some("user:*".into()),
        db: Some(0),
    });
    let mu = repo.backup(&users, "daily", progress).await?;
    text.push(format!(
        "            redis {} (logical: user:* of db0, {} keys)",
        mu.id,
        RedisFacts::from_manifest(&mu)?.keys.values().sum::<u64>()
    ));

    // Accident 1: FLUSHALL. Physical restore into the owning server.
    sb.cli(0, &["FLUSHALL"])?;
    text.push("14. break   FLUSHALL: every key of every database gone".to_owned());
    let t = Instant::now();
    let out = repo
        .restore(&redis, &m, &RestoreTarget::default(), progress)
        .await?;
    let rto_physical = t.elapsed().as_secs_f64();
    let after = (sb.dbsize(0)?, sb.dbsize(1)?);
    let ok1 = after == before;
    text.push(format!(
        "15. restore redis physical: stop, RDB swapped in, start, key counts verified: {} keys in db0, {} in db1 ({}); RTO {rto_physical:.2}s",
        after.0,
        after.1,
        if ok1 { "as before" } else { "DIFFERENT" }
    ));
    text.extend(out.notes.iter().map(|n| format!("             note: {n}")));

    // Accident 2: a key family deleted. Selective logical restore, other keys untouched.
    let family: Vec<String> = (0..2000).map(|i| format!("user:{i}")).collect();
    for chunk in family.chunks(500) {
        let mut args = vec!["DEL"];
        args.extend(chunk.iter().map(String::as_str));
        sb.cli(0, &args)?;
    }
    sb.cli(0, &["SET", "session:0", "changed-after-the-accident"])?;
    text.push("16. break   DEL user:* (2000 keys); session:0 changed meanwhile".to_owned());
    let t = Instant::now();
    let selective = users.restore_with(RestoreOptions {
        replace: false,
        ..RestoreOptions::default()
    });
    let out2 = repo
        .restore(&selective, &mu, &RestoreTarget::default(), progress)
        .await?;
    let rto_logical = t.elapsed().as_secs_f64();
    let ok2 = out2.items == 2000
        && sb.dbsize(0)? == before.0
        && sb.cli(0, &["GET", "session:0"])? == "changed-after-the-accident";
    text.push(format!(
        "17. restore redis logical user:*: {} keys restored with RESTORE ... ABSTTL, other keys untouched ({}); RTO {rto_logical:.2}s",
        out2.items,
        if ok2 { "verified" } else { "MISMATCH" }
    ));
    let ok = ok1 && ok2;
    text.push(format!(
        "18. report  redis {}: RTO {rto_physical:.2}s physical, {rto_logical:.2}s selective (runbook objective 15 min)",
        if ok { "PASSED" } else { "FAILED" }
    ));
    Ok(RedisDrillOutcome::Ran {
        text,
        json: json!({"ok": ok, "backup": m.id, "logical_backup": mu.id, "facts": f,
            "rto_physical_seconds": rto_physical, "rto_logical_seconds": rto_logical,
            "restore": out, "selective_restore": out2}),
        ok,
    })
}
