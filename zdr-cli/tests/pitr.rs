//! WAL archiving and point-in-time recovery with `zdr` against real PostgreSQL 15 clusters
//! that archive through `archive_command = 'zdr wal push %p'` (to a local tier, and to the
//! real S3 server SeaweedFS), base backups from `pg_basebackup`, and recovery instances
//! started by `zdr pitr` with `restore_command = 'zdr wal fetch %f %p'`.
//!
//! As root, PostgreSQL (and so archive_command and restore_command) runs as the `postgres`
//! OS user: the test directory is handed to it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use zdr_tests::postgres as support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cluster, PASSWORD, PG_BIN, SUPERUSER, psql_at, stop_data_dir};

const ZDR: &str = env!("CARGO_BIN_EXE_zdr");

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    tier: PathBuf,
    cluster: Cluster,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Env {
    /// A cluster archiving through zdr into `tiers/local` (and `extra_tier` TOML, if given,
    /// whose name is listed in `wal_tiers`).
    fn new(extra_tier: Option<(&str, &str)>) -> Self {
        Self::with(extra_tier, "")
    }

    /// Like [`Env::new`] with more `postgresql.conf` lines.
    fn with(extra_tier: Option<(&str, &str)>, conf: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zdr-pitr-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = dir.path().join("zdr.toml");
        let tier = dir.path().join("tiers/local");
        std::fs::create_dir_all(tier.join(".zdr-tmp")).unwrap();
        std::fs::create_dir_all(dir.path().join("recovery")).unwrap();
        let archive_command = format!(
            "{ZDR} --config {} --no-progress wal push --component postgres %p",
            config.display()
        );
        let cluster = Cluster::start_with(&format!(
            "wal_level = replica\narchive_mode = on\narchive_command = '{archive_command}'\n{conf}\n"
        ));
        let (extra, wal_tiers) = match extra_tier {
            Some((name, toml)) => (toml.to_owned(), format!("[\"local\", \"{name}\"]")),
            None => (String::new(), "[\"local\"]".to_owned()),
        };
        std::fs::write(
            &config,
            format!(
                r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{tier}"
{extra}
[components.postgres]
type = "postgres"
host = "127.0.0.1"
port = {port}
user = "{SUPERUSER}"
database = "app"
bin_dir = "{PG_BIN}"

[components.postgres.wal]
tiers = {wal_tiers}
run_as = "postgres"
recovery_dir = "{recovery}"
archive_wait_secs = 30
recovery_timeout_secs = 120
"#,
                tier = tier.display(),
                port = cluster.port,
                recovery = dir.path().join("recovery").display(),
            ),
        )
        .unwrap();
        give_to_postgres(dir.path());
        cluster.psql("postgres", "CREATE DATABASE app");
        cluster.psql(
            "app",
            "CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), note text);
             INSERT INTO events (id, note) SELECT g, 'before base' FROM generate_series(1, 100) g;",
        );
        Self {
            dir,
            config,
            tier,
            cluster,
        }
    }

    fn zdr(&self, args: &[&str]) -> Output {
        let started = Instant::now();
        let out = self.zdr_inner(args);
        eprintln!("zdr {args:?}: {:.2}s", started.elapsed().as_secs_f64());
        out
    }

    fn zdr_inner(&self, args: &[&str]) -> Output {
        Command::new(ZDR)
            .arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args)
            .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", PASSWORD)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.zdr(&all);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| Value::String(stderr(&out)));
        (out.status.code().unwrap_or(-1), v)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (code, v) = self.json(args);
        assert_eq!(code, 0, "zdr {args:?}: {v}");
        v
    }

    /// Force a WAL switch and wait until the closed segment is archived (zdr check).
    fn switch(&self) -> String {
        let v = self.ok(&["check", "postgres"]);
        v["segment"].as_str().unwrap().to_owned()
    }

    fn segment_key(&self, name: &str) -> PathBuf {
        self.tier
            .join("wal/postgres")
            .join(&name[..8])
            .join(format!("{name}.lz4"))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn events(socket: &Path, port: u16) -> String {
    psql_at(
        socket,
        port,
        "app",
        "SELECT count(*), min(id), max(id), count(*) FILTER (WHERE note = 'after T') FROM events",
    )
}

/// The runbook's scenario: rows written, base backup, more rows, an accidental DELETE at a
/// recorded time T, then recovery to just before T — by time (applied to the live cluster
/// through the safe restore), by LSN and by named restore point (inspected in place).
#[test]
fn runbook_point_in_time_recovery() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    let c = &env.cluster;
    let v = env.ok(&["backup", "postgres", "--base"]);
    let facts = &v["backup"]["facts"];
    assert_eq!(facts["kind"], "base");
    assert_eq!(facts["timeline"], 1);
    assert!(facts["system_identifier"].as_str().unwrap().len() > 5);
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after base' FROM generate_series(101, 200) g",
    );
    let lsn = c.psql(
        "postgres",
        "SELECT pg_create_restore_point('before-delete')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    // The accident, and writes after it.
    c.psql(
        "app",
        "DELETE FROM events WHERE id <= 150;
         INSERT INTO events (id, note) SELECT g, 'after T' FROM generate_series(201, 250) g",
    );
    env.switch();
    assert_eq!(c.psql("app", "SELECT count(*) FROM events"), "100");

    // 1. To the time, and copy the database across into the live cluster.
    let v = env.ok(&[
        "pitr",
        "postgres",
        "--target-time",
        &t,
        "--apply-database",
        "app",
        "--discard",
    ]);
    assert!(v["rto_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(v["recovery"]["paused"], true);
    assert_eq!(v["recovery"]["base_verified"], true, "{v}");
    assert_eq!(
        events(c.dir.path(), c.port),
        "200|1|200|0",
        "every row written before T is back, none after"
    );
    assert!(
        c.databases().iter().any(|d| d.starts_with("app__zdr_old_")),
        "the replaced database is kept for rollback"
    );
    let data_dir = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    assert!(
        !data_dir.exists(),
        "--discard removes the recovery instance"
    );

    // 2. To the LSN of the restore point: the instance stays up, paused, for inspection.
    let v = env.ok(&["pitr", "postgres", "--target-lsn", &lsn]);
    let dir = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let port = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(events(&dir, port), "200|1|200|0");
    stop_data_dir(&dir);

    // 3. To the named restore point.
    let v = env.ok(&["pitr", "postgres", "--target-name", "before-delete"]);
    let dir = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let port = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(events(&dir, port), "200|1|200|0");
    stop_data_dir(&dir);

    // 4. A target after the newest archived WAL: PostgreSQL runs out of WAL before reaching
    // it and stops; zdr reports it (exit 2) and removes the recovery directory.
    let now = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    );
    let out = env.zdr(&["pitr", "postgres", "--target-time", &now]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ends before the recovery target"),
        "{}",
        stderr(&out)
    );

    // 5. To the end of the archive: the accident is replayed too.
    let v = env.ok(&["pitr", "postgres", "--target", "latest", "--discard"]);
    assert_eq!(v["recovery"]["paused"], false);

    // Status reports the newest archived segment and its age.
    let v = env.ok(&["status", "postgres"]);
    let wal = &v["components"][0]["wal"];
    assert!(
        wal["newest_segment"]
            .as_str()
            .unwrap()
            .starts_with("00000001")
    );
    assert!(wal["rpo_seconds"].as_i64().unwrap() < 600, "{v}");
}

/// `wal push`/`wal fetch` rules, corrupt and missing segments, bad targets.
#[test]
fn archive_rules_and_broken_chains() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    let c = &env.cluster;
    env.ok(&["backup", "postgres", "--base"]);
    let mut segs = Vec::new();
    for i in 0..3 {
        c.psql(
            "app",
            &format!(
                "INSERT INTO events (id, note) SELECT g, 'x' FROM generate_series({}, {}) g",
                1000 + i * 100,
                1099 + i * 100
            ),
        );
        segs.push(env.switch());
    }
    let scratch = env.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // fetch: an archived segment comes back whole; a missing one exits 1 (end of recovery).
    let got = scratch.join(&segs[0]);
    let out = env.zdr(&["wal", "fetch", &segs[0], got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&got).unwrap().len(), 16 * 1024 * 1024);
    // The fetch started a background prefetch of the next segments beside the destination;
    // the next fetch takes its segment from there.
    let ahead = scratch.join(".zdr-prefetch").join(&segs[1]);
    let started = Instant::now();
    while !ahead.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing prefetched"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let next = scratch.join("next");
    let (code, v) = env.json(&["wal", "fetch", &segs[1], next.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["tier"], "prefetch", "{v}");
    assert_eq!(std::fs::metadata(&next).unwrap().len(), 16 * 1024 * 1024);
    assert!(!ahead.exists());
    let missing = scratch.join("nothing");
    let out = env.zdr(&[
        "wal",
        "fetch",
        "0000000100000000000000FE",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!missing.exists());

    // push: the same bytes again is a success; different bytes under the name are refused
    // and leave the archived copy alone.
    let out = env.zdr(&["wal", "push", got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("already archived"));
    let stored = std::fs::read(env.segment_key(&segs[0])).unwrap();
    let other = scratch.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join(&segs[0]), vec![0x5a_u8; 16 * 1024 * 1024]).unwrap();
    let out = env.zdr(&["wal", "push", other.join(&segs[0]).to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("different contents"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(env.segment_key(&segs[0])).unwrap(), stored);
    // History files are never overwritten either.
    std::fs::write(
        other.join("00000007.history"),
        "1\t0/3000000\tno recovery target specified\n",
    )
    .unwrap();
    let out = env.zdr(&[
        "wal",
        "push",
        other.join("00000007.history").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        other.join("00000007.history"),
        "1\t0/4000000\tsomething else\n",
    )
    .unwrap();
    let out = env.zdr(&[
        "wal",
        "push",
        other.join("00000007.history").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A short file is not a segment.
    std::fs::write(other.join("000000010000000000000077"), b"short").unwrap();
    let out = env.zdr(&[
        "wal",
        "push",
        other.join("000000010000000000000077").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // Targets outside the backups.
    let out = env.zdr(&["pitr", "postgres", "--target-time", "2001-01-01 00:00:00"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("before the oldest base backup"),
        "{}",
        stderr(&out)
    );
    let out = env.zdr(&["pitr", "postgres", "--target-time", "2999-01-01 00:00:00"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("in the future"), "{}", stderr(&out));
    let out = env.zdr(&["pitr", "postgres"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A corrupt segment: fetch refuses it (exit 255: PostgreSQL stops, never replays it).
    let key = env.segment_key(&segs[0]);
    let mut bytes = std::fs::read(&key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&key, &bytes).unwrap();
    let dest = scratch.join("corrupt");
    let out = env.zdr(&["wal", "fetch", &segs[0], dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("checksum"), "{}", stderr(&out));
    assert!(!dest.exists());

    // A segment missing from the middle of the chain: recovery is refused, naming it.
    std::fs::remove_file(env.segment_key(&segs[1])).unwrap();
    std::fs::remove_file(format!("{}.sha256", env.segment_key(&segs[1]).display())).unwrap();
    // (--timeline 1: the history file pushed above names a timeline 7 branching off early.)
    let out = env.zdr(&["pitr", "postgres", "--target", "latest", "--timeline", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&segs[1]), "{}", stderr(&out));
    // Following timeline 7, whose history says it left timeline 1 at 0/3000000 and of which
    // nothing is archived: the chain ends at that switch (the missing segment lies on the
    // part of timeline 1 that timeline 7 left behind), so the recovery starts. PostgreSQL
    // then asks for segment 3 on timeline 7 (absent) and on timeline 1: that is the corrupt
    // copy, which fetch refuses, and the recovery stops without replaying it.
    let out = env.zdr(&["pitr", "postgres", "--target", "latest"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("checksum") && stderr(&out).contains(&segs[0]),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("is missing from the archive"),
        "{}",
        stderr(&out)
    );

    // verify --wal reports both.
    let (code, v) = env.json(&["verify", "postgres", "--wal"]);
    assert_eq!(code, 3, "{v}");
    let tl = &v["tiers"][0]["timelines"][0];
    assert!(
        tl["missing"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == &segs[1]),
        "{v}"
    );
    assert!(
        tl["corrupt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == &segs[0]),
        "{v}"
    );
    // The live cluster was never touched.
    assert_eq!(c.psql("app", "SELECT count(*) FROM events"), "400");
}

/// The S3 WAL tier goes down while PostgreSQL archives: archive_command fails, PostgreSQL
/// keeps the segments and retries, and once the server is back every segment arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_survives_an_unreachable_s3_tier() {
    if !support::available() {
        return;
    }
    let mut s3 = zdr_tests::seaweed::SeaweedFs::start().await.unwrap();
    let toml = format!(
        "[tiers.minio]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nroot = \"/zdr\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        s3.bucket(),
        s3.endpoint(),
        s3.access_key_id(),
        s3.secret_access_key()
    );
    let env = Env::new(Some(("minio", &toml)));
    let c = &env.cluster;
    let first = env.switch();
    s3.kill();
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'while down' FROM generate_series(500, 600) g",
    );
    let lost = c.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    // PostgreSQL reports the failure and keeps retrying.
    let started = Instant::now();
    loop {
        let failed = c.psql("postgres", "SELECT failed_count FROM pg_stat_archiver");
        if failed != "0" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "archive_command never failed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    s3.restart().await.unwrap();
    // Once the tier is back, every segment arrives on both tiers.
    let last = env.switch();
    assert!(last > lost && lost > first);
    let (code, v) = env.json(&["verify", "postgres", "--wal"]);
    assert_eq!(code, 0, "{v}");
    for t in v["tiers"].as_array().unwrap() {
        let tl = &t["timelines"][0];
        assert!(tl["missing"].as_array().unwrap().is_empty(), "{v}");
        assert!(tl["last"].as_str().unwrap() >= lost.as_str(), "{v}");
    }

    // The local WAL copies are lost: recovery reads every segment from the S3 tier.
    env.ok(&["backup", "postgres", "--base"]);
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after base' FROM generate_series(700, 710) g",
    );
    env.switch();
    std::fs::remove_dir_all(env.tier.join("wal")).unwrap();
    let v = env.ok(&["pitr", "postgres", "--target", "latest"]);
    let d = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let p = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(
        psql_at(
            &d,
            p,
            "app",
            "SELECT count(*) FROM events WHERE id BETWEEN 700 AND 710"
        ),
        "11"
    );
    stop_data_dir(&d);
}

/// `archive_timeout` bounds the data at risk on a quiet server: `zdr check` reports the bound
/// (and warns when there is none). (The timeout-driven switch itself is PostgreSQL's; on this
/// VM the checkpointer did not switch within 25 s with archive_timeout = 5 even outside zdr,
/// so the test checks what zdr reads and reports, not PostgreSQL's timer.)
#[test]
fn check_reports_the_rpo_bound() {
    if !support::available() {
        return;
    }
    let env = Env::with(None, "archive_timeout = 60");
    let v = env.ok(&["check", "postgres"]);
    assert_eq!(v["rpo_bound_seconds"], 60, "{v}");
    assert_eq!(v["settings"]["archive_timeout_secs"], 60, "{v}");
    env.cluster
        .psql("postgres", "ALTER SYSTEM SET archive_timeout = 0");
    env.cluster.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let out = env.zdr(&["check", "postgres"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("archive_timeout is 0"),
        "{}",
        stderr(&out)
    );
    // Archiving switched off: check refuses, naming the setting.
    env.cluster
        .psql("postgres", "ALTER SYSTEM SET archive_command = ''");
    env.cluster.psql("postgres", "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    let out = env.zdr(&["check", "postgres"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("archive_command"), "{}", stderr(&out));
}

/// `--promote` makes a recovered instance a primary on timeline 2 that archives through the
/// cluster's archive_command; a later recovery to the end follows timeline 2 (its rows, not
/// the old timeline's), and `--timeline 1` still recovers the old history.
#[test]
fn recovery_after_a_promotion_follows_the_new_timeline() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    let c = &env.cluster;
    env.ok(&["backup", "postgres", "--base"]);
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after base' FROM generate_series(101, 200) g",
    );
    let lsn = c.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'timeline 1 only' FROM generate_series(201, 220) g",
    );
    env.switch();

    let v = env.ok(&["pitr", "postgres", "--target-lsn", &lsn, "--promote"]);
    assert_eq!(v["promoted_timeline"], 2, "{v}");
    let dir = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let port = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    psql_at(
        &dir,
        port,
        "app",
        "INSERT INTO events (id, note) SELECT g, 'timeline 2' FROM generate_series(300, 310) g",
    );
    psql_at(&dir, port, "postgres", "SELECT pg_switch_wal()");
    // The new timeline's history file and segments reach the archive.
    let history = env.tier.join("wal/postgres/00000002/00000002.history.lz4");
    let started = Instant::now();
    loop {
        let (_, v) = env.json(&["verify", "postgres", "--wal"]);
        let has_tl2 = v["tiers"][0]["timelines"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["timeline"] == 2));
        if has_tl2 && history.exists() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timeline 2 never archived: {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    stop_data_dir(&dir);

    let count = |dir: &Path, port: u16| {
        psql_at(
            dir,
            port,
            "app",
            "SELECT count(*), count(*) FILTER (WHERE note = 'timeline 2'), \
             count(*) FILTER (WHERE note = 'timeline 1 only') FROM events",
        )
    };
    // To the end: along timeline 2.
    let v = env.ok(&["pitr", "postgres", "--target", "latest"]);
    let d = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let p = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(count(&d, p), "211|11|0", "{v}");
    stop_data_dir(&d);
    // Along timeline 1.
    let v = env.ok(&["pitr", "postgres", "--target", "latest", "--timeline", "1"]);
    let d = PathBuf::from(v["recovery"]["data_dir"].as_str().unwrap());
    let p = u16::try_from(v["recovery"]["port"].as_u64().unwrap()).unwrap();
    assert_eq!(count(&d, p), "220|0|20", "{v}");
    stop_data_dir(&d);
}

/// A base backup while archive_command fails: PostgreSQL waits for its last segment to be
/// archived without end; zdr gives up after `archive_wait_secs`, says why, writes no manifest,
/// and succeeds once archiving works again.
#[test]
fn base_backup_with_failing_archiving_is_refused_in_time() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    let c = &env.cluster;
    c.psql("postgres", "ALTER SYSTEM SET archive_command = 'false'");
    c.psql("postgres", "SELECT pg_reload_conf()");
    let started = Instant::now();
    let out = Command::new(ZDR)
        .arg("--config")
        .arg(&env.config)
        .args(["--no-progress", "backup", "postgres", "--base"])
        .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", PASSWORD)
        .env("ZDR_COMPONENTS__POSTGRES__WAL__ARCHIVE_WAIT_SECS", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("waiting for its last WAL segment to be archived"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let (_, v) = env.json(&["list"]);
    assert!(!v.to_string().contains("\"base\""), "no manifest: {v}");
    c.psql("postgres", "ALTER SYSTEM RESET archive_command");
    c.psql("postgres", "SELECT pg_reload_conf()");
    let v = env.ok(&["backup", "postgres", "--base"]);
    assert_eq!(v["backup"]["facts"]["kind"], "base");
}

#[path = "../../examples/pitr_to_time.rs"]
#[allow(clippy::print_stdout)]
mod pitr_example;

/// `examples/pitr_to_time.rs`, as a service would run it: the database recovered to a time
/// before an accident and copied into the live cluster, with the after-target check done by
/// the library.
#[test]
fn pitr_example_recovers_a_database_to_a_time() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    // The example reads the config alone: the password goes into the file.
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "database = \"app\"",
        &format!("database = \"app\"\npassword = \"{PASSWORD}\""),
    );
    std::fs::write(&env.config, text).unwrap();
    let c = &env.cluster;
    env.ok(&["backup", "postgres", "--base"]);
    c.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after base' FROM generate_series(101, 200) g",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let t = c.psql(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    );
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("app", "DELETE FROM events WHERE id <= 150");
    env.switch();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(pitr_example::pitr_to_time(
            &env.config,
            "app",
            &t,
            Path::new(ZDR),
        ))
        .unwrap();
    assert!(report.discarded);
    assert_eq!(report.applied.as_ref().unwrap().database, "app");
    assert_eq!(events(c.dir.path(), c.port), "200|1|200|0");
    assert!(!report.recovery.data_dir.exists());

    // A time before the first base backup: refused, live data untouched.
    let err = runtime
        .block_on(pitr_example::pitr_to_time(
            &env.config,
            "app",
            "2001-01-01 00:00:00",
            Path::new(ZDR),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), zdr::ErrorKind::BadInput, "{err}");
    assert_eq!(events(c.dir.path(), c.port), "200|1|200|0");
}

/// A damaged base backup on the primary tier: `zdr pitr` recovers from the replica tier's
/// intact copy and names the tier it passed over; `--tier` pins the tier (and then fails on
/// the damaged copy, exit 3, nothing left behind).
#[test]
fn pitr_falls_back_to_the_replica_when_the_primary_copy_is_damaged() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    // A second tier inside the environment's directory (owned by the server's OS user, which
    // runs archive_command), holding replicas and WAL.
    let replica_root = env.dir.path().join("tiers/replica");
    std::fs::create_dir_all(replica_root.join(".zdr-tmp")).unwrap();
    give_to_postgres(&replica_root);
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace(
            "primary = \"local\"",
            "primary = \"local\"\nreplicate_to = [\"replica\"]",
        )
        .replace(
            "[components.postgres]",
            &format!(
                "[tiers.replica]\ntype = \"fs\"\nroot = \"{}\"\n\n[components.postgres]",
                replica_root.display()
            ),
        )
        .replace("tiers = [\"local\"]", "tiers = [\"local\", \"replica\"]");
    std::fs::write(&env.config, text).unwrap();
    let v = env.ok(&["backup", "postgres", "--base", "--replicate"]);
    let base = v["backup"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|a| a["size"].as_u64().unwrap())
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    env.cluster.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after base' FROM generate_series(101, 150) g",
    );
    env.switch();
    let path = env.tier.join(&base);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let v = env.ok(&["pitr", "postgres", "--target", "latest", "--discard"]);
    assert_eq!(v["tier"], "replica", "{v}");
    assert_eq!(v["skipped"][0]["tier"], "local", "{v}");

    let out = env.zdr(&[
        "pitr",
        "postgres",
        "--target",
        "latest",
        "--discard",
        "--tier",
        "local",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path().join("recovery"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A recovery killed once its instance is up leaves the server running and its data
/// directory behind (PostgreSQL runs on its own); the next `pitr` of the component stops and
/// removes them first, says so, and recovers.
#[test]
fn the_next_pitr_removes_the_instance_a_killed_recovery_left_running() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    env.ok(&["backup", "postgres", "--base"]);
    env.switch();
    let out = Command::new(ZDR)
        .arg("--config")
        .arg(&env.config)
        .args([
            "--no-progress",
            "pitr",
            "postgres",
            "--target",
            "latest",
            "--discard",
        ])
        .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", PASSWORD)
        .env("ZDR_FAILPOINT", "pitr-after-start")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    let recovery = env.dir.path().join("recovery");
    let entries: Vec<PathBuf> = std::fs::read_dir(&recovery)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    assert_eq!(dirs.len(), 1, "{entries:?}");
    assert!(
        entries
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".zdr-lock")),
        "{entries:?}"
    );
    let pid_file = std::fs::read_to_string(dirs[0].join("postmaster.pid")).unwrap();
    let pid = pid_file.lines().next().unwrap().trim().to_owned();
    assert!(Path::new("/proc").join(&pid).exists(), "the instance runs");

    let v = env.ok(&["pitr", "postgres", "--target", "latest", "--discard"]);
    let cleaned = v["cleaned"].as_array().unwrap();
    assert_eq!(cleaned.len(), 1, "{v}");
    assert!(
        cleaned[0]
            .as_str()
            .unwrap()
            .contains("stopped and removed the recovery instance"),
        "{v}"
    );
    // pg_ctl stop returns once the server removed its pid file; the process itself may take
    // a moment more to exit, and until its parent reaps it, it stays a zombie.
    let stat = Path::new("/proc").join(&pid).join("stat");
    let running = || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!running(), "the old server stopped");
    let left: Vec<_> = std::fs::read_dir(&recovery).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `zdr prune` on a WAL archive: the point-in-time window keeps the older base backup and its
/// WAL; without a window, the older base backup goes and so does every segment before the
/// kept one's start, and recovery to the end still works.
#[test]
fn prune_keeps_the_wal_the_kept_base_backups_need() {
    if !support::available() {
        return;
    }
    let env = Env::new(None);
    let first = env.ok(&["backup", "postgres", "--base"]);
    let first_id = first["backup"]["id"].as_str().unwrap().to_owned();
    let first_start = first["backup"]["facts"]["start_segment"]
        .as_str()
        .unwrap()
        .to_owned();
    env.cluster.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'between' FROM generate_series(101, 200) g",
    );
    let between = env.switch();
    let second = env.ok(&["backup", "postgres", "--base"]);
    let second_start = second["backup"]["facts"]["start_segment"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(first_start < between && between < second_start);
    env.cluster.psql(
        "app",
        "INSERT INTO events (id, note) SELECT g, 'after' FROM generate_series(201, 300) g",
    );
    env.switch();
    for s in [&first_start, &between, &second_start] {
        assert!(env.segment_key(s).exists(), "{s} archived");
    }
    let base = std::fs::read_to_string(&env.config).unwrap();
    // What the prune did with one backup on the (only) tier.
    let decision = |v: &Value, id: &str| {
        v["prune"]["tiers"][0]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()
            .clone()
    };

    // A 7-day window: both base backups are inside it, nothing goes.
    std::fs::write(
        &env.config,
        format!("{base}\n[components.postgres.retention]\nkeep_last = 1\nkeep_wal_for = \"7d\"\n"),
    )
    .unwrap();
    let v = env.ok(&["prune"]);
    let first_item = decision(&v, &first_id);
    assert_eq!(first_item["action"], "keep", "{v}");
    assert!(
        first_item["reasons"]
            .to_string()
            .contains("point-in-time window"),
        "{v}"
    );
    assert!(env.segment_key(&first_start).exists());

    // No window: the first base backup and the WAL before the second one's start go.
    std::fs::write(
        &env.config,
        format!("{base}\n[components.postgres.retention]\nkeep_last = 1\n"),
    )
    .unwrap();
    let v = env.ok(&["prune", "--dry-run"]);
    let wal = &v["prune"]["tiers"][0]["wal"]["postgres"];
    let listed = wal["files"].to_string();
    assert!(
        listed.contains(&first_start) && listed.contains(&between),
        "{v}"
    );
    assert!(!listed.contains(&second_start), "{v}");
    assert!(
        env.segment_key(&first_start).exists(),
        "a dry run deletes nothing"
    );
    let v = env.ok(&["prune"]);
    let first_item = decision(&v, &first_id);
    assert_eq!(first_item["action"], "deleted", "{v}");
    for s in [&first_start, &between] {
        assert!(!env.segment_key(s).exists(), "{s} pruned");
        let sidecar = PathBuf::from(format!("{}.sha256", env.segment_key(s).display()));
        assert!(!sidecar.exists(), "{s} sidecar pruned");
    }
    assert!(env.segment_key(&second_start).exists());
    let (code, v) = env.json(&["verify", "postgres", "--wal"]);
    assert_eq!(
        code, 0,
        "the archive from the kept base backup on is whole: {v}"
    );
    let v = env.ok(&["pitr", "postgres", "--target", "latest", "--discard"]);
    assert_eq!(v["recovery"]["paused"], false, "{v}");
}
