//! zdr-redis against a real redis-server 7 (Debian package): a throwaway server per test on a
//! free port in a temp dir, killed on drop; backups stored on a real local-filesystem tier.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zdr_core::{
    BackupKind, Component, ErrorKind, Manifest, Progress, RecordingSink, RestoreTarget, Result,
};
use zdr_redis::{BackupMode, RedisComponent, RedisConfig, RedisFacts, RestoreOptions, rdb};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

const PASSWORD: &str = "r3dis-s3cret-pw";

fn skip() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server is not installed: skipping (scripts/install-test-deps.sh)");
        return true;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server on a free port with its own data directory.
struct Server {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    password: Option<String>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, None)
    }

    fn start_with(extra: &[&str], password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut s = Self {
            port,
            dir,
            child: None,
            password: password.map(str::to_owned),
        };
        s.spawn(extra);
        s
    }

    fn base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &self.dir.path().display().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--enable-debug-command",
            "yes",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(p) = &self.password {
            a.push("--requirepass".into());
            a.push(p.clone());
        }
        a
    }

    fn spawn(&mut self, extra: &[&str]) {
        let mut args = self.base_args();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_up();
    }

    fn wait_up(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self
                .try_cli(0, &["PING"])
                .is_some_and(|o| o.contains("PONG"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {} did not start", self.port);
    }

    fn try_cli(&self, db: u32, args: &[&str]) -> Option<String> {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string(), "-n", &db.to_string()]);
        if let Some(p) = &self.password {
            c.env("REDISCLI_AUTH", p);
        }
        let out = c.args(args).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn cli(&self, db: u32, args: &[&str]) -> String {
        self.try_cli(db, args).unwrap()
    }

    /// Run many commands (one per line) through redis-cli's stdin.
    fn pipe(&self, db: u32, lines: &str) {
        let mut c = Command::new("redis-cli");
        c.args(["-p", &self.port.to_string(), "-n", &db.to_string()]);
        if let Some(p) = &self.password {
            c.env("REDISCLI_AUTH", p);
        }
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }

    fn config(&self) -> RedisConfig {
        let mut c = RedisConfig::new("127.0.0.1", self.port);
        c.password = self.password.clone().map(Into::into);
        c.timeout = Duration::from_secs(20);
        c
    }

    /// Every key of every database: its value digest and whether it has a TTL.
    fn snapshot(&self) -> BTreeMap<(u32, String), (String, bool)> {
        let mut out = BTreeMap::new();
        for db in 0..16 {
            let keys = self.cli(db, &["--scan"]);
            for k in keys.lines().filter(|l| !l.is_empty()) {
                let d = self.cli(db, &["DEBUG", "DIGEST-VALUE", k]);
                let ttl: i64 = self.cli(db, &["PTTL", k]).parse().unwrap();
                out.insert((db, k.to_owned()), (d, ttl > 0));
            }
        }
        out
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // A server started daemonized by a physical restore.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// All value types, in several databases, with TTLs, small and large encodings.
fn seed(s: &Server) {
    let mut l = String::new();
    l.push_str(
        "SET greeting hello\nSET counter 42\nSET user:1 alice\nSET user:2 bob\nSET user:3 carol\n",
    );
    l.push_str("SET session:a tok EX 3600\nHSET profile:1 name alice age 30\n");
    l.push_str("RPUSH queue a b c d\nSADD tags x y z\nSADD ints 1 2 3\n");
    l.push_str("ZADD board 1 one 2 two 3.5 three\n");
    l.push_str("XADD events 1-1 type login user 1\nXADD events 2-1 type logout user 1\n");
    l.push_str(
        "XGROUP CREATE events workers 0\nXREADGROUP GROUP workers w1 COUNT 1 STREAMS events >\n",
    );
    for i in 0..300 {
        l.push_str(&format!(
            "HSET bighash f{i} v{i}\nSADD bigset m{i}\nZADD bigzset {i} m{i}\nRPUSH biglist item{i}\n"
        ));
    }
    s.pipe(0, &l);
    s.pipe(1, "SET other:1 one\nSET other:2 two EX 7200\nLPUSH l1 a\n");
    s.pipe(3, "HSET h3 a 1\nSET s3 v\n");
}

struct Env {
    server: Server,
    tier_dir: tempfile::TempDir,
    repo: Repository,
}

impl Env {
    fn new(extra: &[&str]) -> Self {
        Self::with_server(Server::start(extra))
    }

    fn with_server(server: Server) -> Self {
        let tier_dir = tempfile::tempdir().unwrap();
        let tier = open_tier(
            "local",
            &TierConfig::Fs {
                root: tier_dir.path().to_path_buf(),
            },
        )
        .unwrap();
        Self {
            server,
            tier_dir,
            repo: Repository::new(tier, PipelineOptions::default()),
        }
    }

    fn redis(&self, config: RedisConfig) -> RedisComponent {
        RedisComponent::new(Component::new("redis").unwrap(), config)
    }

    async fn backups(&self) -> usize {
        self.repo.catalog().await.unwrap().list(None).len()
    }

    async fn verify_scratch(
        &self,
        r: &RedisComponent,
        m: &Manifest,
    ) -> Result<zdr_core::RestoreOutcome> {
        let scratch = r.restore_with(RestoreOptions {
            scratch: true,
            ..RestoreOptions::default()
        });
        self.repo
            .restore(&scratch, m, &RestoreTarget::default(), &Progress::none())
            .await
    }
}

fn facts(m: &Manifest) -> RedisFacts {
    RedisFacts::from_manifest(m).unwrap()
}

#[tokio::test]
async fn physical_round_trip_diskless_then_restore_into_the_owning_server() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&["--repl-diskless-sync", "yes"]);
    seed(&env.server);
    let before = env.server.snapshot();
    let redis = env.redis(env.server.config());
    let sink = Arc::new(RecordingSink::default());
    let m = env
        .repo
        .backup(&redis, "daily", &Progress::new(sink.clone()))
        .await?;
    let f = facts(&m);
    assert_eq!(m.kind, BackupKind::Physical);
    assert_eq!(
        (f.path.as_str(), f.transfer.as_deref()),
        ("psync", Some("diskless"))
    );
    assert_eq!(f.rdb_version, Some(10));
    assert!(f.rdb_crc64.is_some());
    assert_eq!(f.keys, BTreeMap::from([(0, 16), (1, 3), (3, 2)]), "{f:?}");
    assert_eq!(f.keys, f.info_keys);
    assert_eq!(f.volatile.get(&0), Some(&1));
    assert!(!f.sample.is_empty());
    assert!(f.redis_version.starts_with('7'));

    // Scratch verification: a second server loads the RDB and compares.
    let out = env.verify_scratch(&redis, &m).await?;
    assert!(out.target.contains("scratch"), "{out:?}");

    // Accident, then a physical restore into the server that owns the data dir.
    env.server.cli(0, &["FLUSHALL"]);
    let mut server = env.server;
    server.stop();
    let dir = server.dir.path().to_path_buf();
    let mut start: Vec<String> = vec!["redis-server".into()];
    start.extend(server.base_args());
    start.extend(
        [
            "--daemonize",
            "yes",
            "--pidfile",
            &dir.join("redis.pid").display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    // Start it daemonized, as the configured start command will.
    let st = Command::new(&start[0]).args(&start[1..]).status().unwrap();
    assert!(st.success());
    server.wait_up();
    server.cli(0, &["SET", "written-after-backup", "x"]);
    std::fs::write(dir.join("dump.rdb"), b"old rdb").unwrap();
    std::fs::create_dir(dir.join("appendonlydir")).unwrap();
    let mut c = server.config();
    c.data_dir = Some(dir.clone());
    c.start_command = Some(start);
    let restorer = env_redis(&c);
    let out = env
        .repo
        .restore(&restorer, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 21);
    assert_eq!(server.snapshot(), before);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("dump.rdb.zdr-old-")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("appendonlydir.zdr-old-")),
        "{names:?}"
    );
    drop(server);
    Ok(())
}

fn env_redis(c: &RedisConfig) -> RedisComponent {
    RedisComponent::new(Component::new("redis").unwrap(), c.clone())
}

#[tokio::test]
async fn disk_transfer_and_writes_during_the_backup() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&["--repl-diskless-sync", "no"]);
    seed(&env.server);
    let mut big = String::new();
    for i in 0..20000 {
        big.push_str(&format!("SET bulk:{i} {}\n", "v".repeat(100)));
    }
    env.server.pipe(2, &big);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let port = env.server.port;
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = Command::new("redis-cli")
                    .args([
                        "-p",
                        &port.to_string(),
                        "-n",
                        "2",
                        "SET",
                        &format!("live:{n}"),
                        "x",
                    ])
                    .output();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let redis = env.redis(env.server.config());
    let m = env.repo.backup(&redis, "daily", &Progress::none()).await?;
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    let f = facts(&m);
    assert_eq!(f.transfer.as_deref(), Some("disk"));
    assert!(f.keys[&2] >= 20000);
    env.verify_scratch(&redis, &m).await?;
    Ok(())
}

#[tokio::test]
async fn truncated_and_flipped_rdb_are_rejected_by_the_crc_before_any_restore() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&[]);
    seed(&env.server);
    // A real RDB from the server.
    let file = env.tier_dir.path().join("fetched.rdb");
    let st = Command::new("redis-cli")
        .args([
            "-p",
            &env.server.port.to_string(),
            "--rdb",
            &file.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let good = std::fs::read(&file).unwrap();
    let s = rdb::validate_bytes(&good)?;
    assert_eq!(s.keys.values().sum::<u64>(), 21);
    let e = rdb::validate_bytes(&good[..good.len() - 100]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    for at in [20, good.len() / 3, good.len() / 2, good.len() - 12] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        let e = rdb::validate_bytes(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "flip at {at}: {e}");
    }
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 1] ^= 0x01; // the trailer itself
    assert!(
        rdb::validate_bytes(&bad)
            .unwrap_err()
            .message()
            .contains("checksum")
    );

    // Through the repository: a flipped stored artifact is refused before the restore.
    let redis = env.redis(env.server.config());
    let m = env.repo.backup(&redis, "daily", &Progress::none()).await?;
    let path = env.tier_dir.path().join(&m.artifacts[0].key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    env.server.cli(0, &["SET", "marker", "live"]);
    let mut c = env.server.config();
    c.data_dir = Some(env.server.dir.path().to_path_buf());
    c.start_command = Some(vec!["false".into()]);
    let e = env
        .repo
        .restore(
            &env_redis(&c),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    // The live server was not stopped.
    assert_eq!(env.server.cli(0, &["GET", "marker"]), "live");
    Ok(())
}

#[tokio::test]
async fn sync_renamed_away_falls_back_to_bgsave_or_says_why_not() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&[
        "--rename-command",
        "SYNC",
        "",
        "--rename-command",
        "PSYNC",
        "",
    ]);
    seed(&env.server);
    let e = env
        .repo
        .backup(&env.redis(env.server.config()), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("data_dir"), "{e}");
    assert_eq!(e.context_value("component"), Some("redis"));
    assert_eq!(env.backups().await, 0);

    let mut c = env.server.config();
    c.data_dir = Some(env.server.dir.path().to_path_buf());
    let redis = env.redis(c);
    let sink = Arc::new(RecordingSink::default());
    let m = env
        .repo
        .backup(&redis, "daily", &Progress::new(sink.clone()))
        .await?;
    let f = facts(&m);
    assert_eq!(
        (f.path.as_str(), f.transfer.as_deref()),
        ("bgsave-copy", Some("file"))
    );
    assert_eq!(f.keys.values().sum::<u64>(), 21);
    assert!(
        sink.messages(zdr_core::Level::Warn)
            .iter()
            .any(|m| m.contains("BGSAVE")),
    );
    env.verify_scratch(&redis, &m).await?;
    Ok(())
}

#[tokio::test]
async fn aof_on_the_multi_part_set_is_stored_beside_the_rdb() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&["--appendonly", "yes"]);
    seed(&env.server);
    let mut c = env.server.config();
    c.data_dir = Some(env.server.dir.path().to_path_buf());
    let m = env
        .repo
        .backup(&env.redis(c), "daily", &Progress::none())
        .await?;
    let f = facts(&m);
    assert!(f.aof_enabled);
    let kinds: Vec<&str> = f.aof_files.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"manifest"), "{f:?}");
    assert!(kinds.contains(&"b") && kinds.contains(&"i"), "{kinds:?}");
    // Every file is an artifact, byte for byte.
    for a in &f.aof_files {
        let rec = m.artifacts.iter().find(|r| r.name == a.artifact).unwrap();
        assert_eq!(rec.raw_size, a.bytes);
    }
    assert_eq!(m.artifacts.len(), 1 + f.aof_files.len());

    // Physical restore into the AOF-enabled server: a new AOF set based on the RDB.
    let before = env.server.snapshot();
    let mut server = env.server;
    server.stop();
    let dir = server.dir.path().to_path_buf();
    let mut start: Vec<String> = vec!["redis-server".into()];
    start.extend(server.base_args());
    start.extend(
        [
            "--appendonly",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            &dir.join("redis.pid").display().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned()),
    );
    assert!(
        Command::new(&start[0])
            .args(&start[1..])
            .status()
            .unwrap()
            .success()
    );
    server.wait_up();
    server.cli(0, &["FLUSHALL"]);
    let mut c = server.config();
    c.data_dir = Some(dir.clone());
    c.start_command = Some(start);
    let out = env
        .repo
        .restore(
            &env_redis(&c),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await?;
    assert!(
        out.notes.iter().any(|n| n.contains("new AOF set")),
        "{out:?}"
    );
    assert_eq!(server.snapshot(), before);
    drop(server);
    Ok(())
}

#[tokio::test]
async fn wrong_or_missing_password_is_bad_input_and_never_shown() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::with_server(Server::start_with(&[], Some(PASSWORD)));
    seed(&env.server);
    for pw in [Some("not-the-password-x1"), None] {
        let mut c = env.server.config();
        c.password = pw.map(Into::into);
        for mode in [
            BackupMode::Physical,
            BackupMode::Logical {
                pattern: None,
                db: None,
            },
        ] {
            let r = env.redis(c.clone()).with_backup_mode(mode);
            let e = env
                .repo
                .backup(&r, "daily", &Progress::none())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
            let shown = format!("{e} {e:?} {r:?}");
            assert!(
                !shown.contains("not-the-password-x1") && !shown.contains(PASSWORD),
                "{shown}"
            );
        }
    }
    assert_eq!(env.backups().await, 0);
    let r = env.redis(env.server.config());
    let m = env.repo.backup(&r, "daily", &Progress::none()).await?;
    assert!(!serde_json::to_string(&m).unwrap().contains(PASSWORD));
    env.verify_scratch(&r, &m).await?;
    let e = env
        .repo
        .backup(
            &r.clone().with_backup_mode(BackupMode::Logical {
                pattern: None,
                db: Some(99),
            }),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    Ok(())
}

#[tokio::test]
async fn logical_round_trip_selective_restore_and_existing_keys() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new(&[]);
    seed(&env.server);
    let before = env.server.snapshot();
    let r = env.redis(env.server.config());
    let all = r.clone().with_backup_mode(BackupMode::Logical {
        pattern: None,
        db: None,
    });
    let m = env.repo.backup(&all, "daily", &Progress::none()).await?;
    let f = facts(&m);
    assert_eq!(m.kind, BackupKind::Logical);
    assert_eq!(f.keys, BTreeMap::from([(0, 16), (1, 3), (3, 2)]));

    // Scratch verification of a logical export: RESTOREd into an empty scratch server and
    // counted; the configured server is not touched.
    env.server.cli(0, &["SET", "only-live", "1"]);
    let out = env.verify_scratch(&all, &m).await?;
    assert!(out.target.contains("scratch"), "{out:?}");
    assert_eq!(env.server.cli(0, &["GET", "only-live"]), "1");
    env.server.cli(0, &["DEL", "only-live"]);

    // Everything gone, everything back (TTLs kept as absolute times).
    env.server.cli(0, &["FLUSHALL"]);
    let out = env
        .repo
        .restore(&all, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 21);
    assert_eq!(env.server.snapshot(), before);
    let ttl: i64 = env.server.cli(0, &["PTTL", "session:a"]).parse().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");

    // A key family, one database: export user:* of db 0, lose it, bring it back alone.
    let users = r.clone().with_backup_mode(BackupMode::Logical {
        pattern: Some("user:*".into()),
        db: Some(0),
    });
    let mu = env.repo.backup(&users, "daily", &Progress::none()).await?;
    assert_eq!(facts(&mu).keys, BTreeMap::from([(0, 3)]));
    env.server.cli(0, &["DEL", "user:1", "user:2", "user:3"]);
    env.server.cli(0, &["SET", "greeting", "changed-after"]);
    let out = env
        .repo
        .restore(&users, &mu, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 3);
    assert_eq!(env.server.cli(0, &["GET", "user:2"]), "bob");
    assert_eq!(env.server.cli(0, &["GET", "greeting"]), "changed-after");

    // Existing keys: without replace they are reported and untouched; with replace, replaced.
    env.server.cli(0, &["SET", "user:1", "mallory"]);
    env.server.cli(0, &["DEL", "user:3"]);
    let keep = users.restore_with(RestoreOptions {
        replace: false,
        ..RestoreOptions::default()
    });
    let out = env
        .repo
        .restore(&keep, &mu, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 1);
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("already exist") && n.contains("user:1")),
        "{out:?}"
    );
    assert_eq!(env.server.cli(0, &["GET", "user:1"]), "mallory");
    assert_eq!(env.server.cli(0, &["GET", "user:3"]), "carol");
    let replace = users.restore_with(RestoreOptions {
        replace: true,
        ..RestoreOptions::default()
    });
    let out = env
        .repo
        .restore(&replace, &mu, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 3);
    assert_eq!(env.server.cli(0, &["GET", "user:1"]), "alice");

    // Restore of a pattern out of the full export.
    env.server.cli(1, &["DEL", "other:1"]);
    let only = all.restore_with(RestoreOptions {
        replace: false,
        pattern: Some("other:*".into()),
        ..RestoreOptions::default()
    });
    let out = env
        .repo
        .restore(&only, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.items, 1, "{out:?}");
    assert_eq!(env.server.cli(1, &["GET", "other:1"]), "one");
    Ok(())
}
