//! `zdr` with a `postgres` component against a real throwaway PostgreSQL 15 cluster:
//! backup, verify --restore, safe restore, rollback, single-table restore, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use zdr_tests::postgres as support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use support::{Cluster, PASSWORD, PG_BIN, SUPERUSER};

struct Env {
    _dir: tempfile::TempDir,
    config: PathBuf,
    cluster: Cluster,
}

impl Env {
    fn new() -> Self {
        let cluster = Cluster::start();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("zdr.toml");
        std::fs::write(
            &config,
            format!(
                r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.postgres]
type = "postgres"
host = "127.0.0.1"
port = {port}
user = "{SUPERUSER}"
database = "app"
bin_dir = "{PG_BIN}"
checksums = true
"#,
                root = dir.path().display(),
                port = cluster.port
            ),
        )
        .unwrap();
        cluster.psql("postgres", "CREATE DATABASE app");
        cluster.psql(
            "app",
            "CREATE TABLE orders (id serial PRIMARY KEY, item text, doc jsonb, at timestamptz DEFAULT now());
             INSERT INTO orders (item, doc) SELECT 'item ' || g, jsonb_build_object('g', g)
             FROM generate_series(1, 1000) g;
             CREATE TABLE notes (id int PRIMARY KEY, body text);
             INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 100) g;",
        );
        Self {
            _dir: dir,
            config,
            cluster,
        }
    }

    fn zdr_env(&self, args: &[&str], password: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args)
            .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", password)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.zdr_env(&all, PASSWORD);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(PASSWORD), "password in output: {text}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text} {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), v)
    }

    fn count(&self, db: &str, table: &str) -> String {
        self.cluster
            .psql(db, &format!("SELECT count(*) FROM {table}"))
    }

    fn dbs(&self, marker: &str) -> Vec<String> {
        self.cluster
            .databases()
            .into_iter()
            .filter(|d| d.contains(marker))
            .collect()
    }
}

/// The suite never skips: without PostgreSQL 15 it fails and says what to install.
fn require_postgres() {
    assert!(
        support::available(),
        "PostgreSQL 15 server binaries not found in {PG_BIN}: run scripts/install-test-deps.sh"
    );
}

#[test]
fn backup_verify_restore_rollback_table() {
    require_postgres();
    let env = Env::new();
    let (code, v) = env.json(&["backup", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backup"]["facts"]["tables"][1]["rows"], 1000, "{v}");
    assert!(
        v["backup"]["artifacts"][0]["key"]
            .as_str()
            .unwrap()
            .ends_with(".dump.zst")
    );

    let (code, v) = env.json(&["verify", "postgres", "--restore"]);
    assert_eq!(code, 0, "{v}");
    assert!(env.dbs("__zdr_verify_").is_empty());
    let (code, v) = env.json(&["drill", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert!(env.dbs("__zdr_").is_empty(), "the drill touched the server");
    let (code, v) = env.json(&["verify", "postgres"]);
    assert_eq!((code, v["intact"].as_u64()), (0, Some(1)), "{v}");

    // The accident, then the safe restore.
    env.cluster.psql("app", "DROP TABLE orders");
    let (code, v) = env.json(&["restore", "postgres", "--database", "app"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.count("app", "orders"), "1000");
    assert_eq!(env.dbs("app__zdr_old_").len(), 1);
    assert!(env.dbs("__zdr_restore_").is_empty());

    // Rollback brings the damaged database back (orders missing again).
    let (code, v) = env.json(&["rollback", "postgres", "--database", "app"]);
    assert_eq!(code, 0, "{v}");
    assert!(env.cluster.try_psql("app", "SELECT 1 FROM orders").is_err());
    let (code, _) = env.json(&["rollback", "postgres"]);
    assert_eq!(code, 0);
    assert_eq!(env.count("app", "orders"), "1000");

    // Single table, under a new name.
    env.cluster.psql("app", "DELETE FROM notes WHERE id > 10");
    let (code, v) = env.json(&[
        "restore",
        "postgres",
        "--table",
        "public.notes",
        "--as",
        "notes_back",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.count("app", "notes_back"), "100");
    assert_eq!(env.count("app", "notes"), "10");
    let (code, v) = env.json(&["restore", "postgres", "--table", "public.nosuch"]);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuch"));

    // In place needs the explicit confirmation.
    let (code, v) = env.json(&["restore", "postgres", "--in-place"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(env.count("app", "notes"), "10");
    let (code, v) = env.json(&["restore", "postgres", "--in-place", "--yes-destroy-live"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.count("app", "notes"), "100");
}

#[test]
fn wrong_password_and_unknown_database_exit_2() {
    require_postgres();
    let env = Env::new();
    let out = env.zdr_env(&["backup", "postgres"], "not-the-password");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password"));

    let (code, v) = env.json(&["backup", "postgres", "--database", "nosuchdb"]);
    assert_eq!(code, 2, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("nosuchdb"));

    let (code, v) = env.json(&["rollback", "postgres"]);
    assert_eq!(code, 2, "{v}");
}

#[test]
fn sandbox_drill_includes_postgres_or_says_why_not() {
    require_postgres();
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .args(["--no-progress", "--json", "drill", "--sandbox"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["postgres"]["ok"], true, "{v}");
    assert!(v["postgres"]["rto_seconds"].as_f64().unwrap() > 0.0);
    // The PITR part: back to T, with the rows deleted after T restored.
    let pitr = &v["postgres"]["pitr"];
    assert_eq!(pitr["ok"], true, "{v}");
    assert_eq!(pitr["rows"], pitr["expected_rows"], "{v}");
    assert_eq!(pitr["recovery"]["base_verified"], true, "{v}");
    assert!(
        v["postgres"]["verify"]["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Without server binaries the drill says so and still drills the config files.
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .args(["--no-progress", "drill", "--sandbox"])
        .env("ZDR_PG_BIN_DIR", "/nonexistent/bin")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("postgres SKIPPED"), "{text}");
    assert!(text.contains("configs PASSED"), "{text}");
}

impl Env {
    /// `zdr` killed (aborted) at the failpoint `point`.
    fn zdr_killed_at(&self, args: &[&str], point: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args)
            .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", PASSWORD)
            .env("ZDR_FAILPOINT", point)
            .output()
            .unwrap()
    }

    /// The live database's content fingerprint (connectable, same rows).
    fn fingerprint(&self) -> String {
        self.cluster.psql(
            "app",
            "SELECT count(*) || ':' || coalesce(sum(length(item)), 0) FROM orders",
        )
    }
}

/// A restore and a rollback killed (SIGABRT, as `kill -9`) at every step of the swap: the
/// live database stays connectable with its data (the swap is one transaction, rolled back
/// by the server), no database is left without connections, and the next run completes.
#[test]
fn restore_and_rollback_killed_at_every_swap_step_leave_the_live_database_usable() {
    use std::os::unix::process::ExitStatusExt;
    require_postgres();
    let env = Env::new();
    let (code, v) = env.json(&["backup", "postgres"]);
    assert_eq!(code, 0, "{v}");
    // Newer live data than the backup: what a bad swap would strand.
    env.cluster.psql("app", "DELETE FROM orders WHERE id > 900");
    let before = env.fingerprint();
    for point in [
        "pg-swap-after-terminate",
        "pg-swap-after-rename-live",
        "pg-swap-after-rename-side",
        "pg-swap-before-commit",
    ] {
        let out = env.zdr_killed_at(&["restore", "postgres"], point);
        assert_eq!(out.status.signal(), Some(6), "{point}: not killed: {out:?}");
        assert_eq!(env.fingerprint(), before, "{point}: live data changed");
        assert!(env.dbs("app__zdr_old_").is_empty(), "{point}: swapped");
        let refusing = env.cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE NOT datallowconn AND NOT datistemplate",
        );
        assert_eq!(refusing, "0", "{point}: a database refuses connections");
    }
    // Killed after the commit: the restore is done; the next run cleans up.
    let out = env.zdr_killed_at(&["restore", "postgres"], "pg-swap-after-commit");
    assert_eq!(out.status.signal(), Some(6));
    assert_eq!(env.count("app", "orders"), "1000", "the swap committed");
    assert_eq!(
        env.dbs("app__zdr_old_").len(),
        1,
        "the old database is kept"
    );

    // The next restore drops what the killed ones left and completes.
    let (code, v) = env.json(&["restore", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert!(env.dbs("__zdr_restore_").is_empty(), "leftovers: {v}");
    assert_eq!(env.count("app", "orders"), "1000");

    // Rollback killed mid-swap: nothing changes; then it completes.
    env.cluster.psql("app", "DELETE FROM orders WHERE id > 500");
    let live = env.fingerprint();
    for point in ["pg-swap-after-rename-live", "pg-swap-before-commit"] {
        let out = env.zdr_killed_at(&["rollback", "postgres"], point);
        assert_eq!(out.status.signal(), Some(6), "{point}");
        assert_eq!(env.fingerprint(), live, "{point}");
    }
    let (code, v) = env.json(&["rollback", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert_ne!(env.fingerprint(), live, "rolled back to the older database");
    assert_eq!(env.count("app", "orders"), "1000");
    let refusing = env.cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE NOT datallowconn AND NOT datistemplate",
    );
    assert_eq!(refusing, "0");
}

/// A database left refusing connections (an older zdr killed mid-swap) is repaired by the
/// next restore or rollback, which says so.
#[test]
fn a_database_left_refusing_connections_is_repaired_by_the_next_run() {
    require_postgres();
    let env = Env::new();
    let (code, v) = env.json(&["backup", "postgres"]);
    assert_eq!(code, 0, "{v}");
    env.cluster.psql(
        "postgres",
        "ALTER DATABASE app WITH ALLOW_CONNECTIONS false",
    );
    assert!(env.cluster.try_psql("app", "SELECT 1").is_err());
    let (code, v) = env.json(&["restore", "postgres"]);
    assert_eq!(code, 0, "{v}");
    let notes = v["outcome"]["notes"].to_string();
    assert!(notes.contains("turned them back on"), "{v}");
    assert_eq!(env.count("app", "orders"), "1000");
    // The kept old database, switched off the same way, is repaired by the rollback.
    let old = env.dbs("app__zdr_old_").pop().unwrap();
    env.cluster.psql(
        "postgres",
        &format!("ALTER DATABASE \"{old}\" WITH ALLOW_CONNECTIONS false"),
    );
    let (code, v) = env.json(&["rollback", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["rollback"]["repaired"][0], old, "{v}");
    assert_eq!(env.count("app", "orders"), "1000");
}

/// The maintenance database itself (`postgres`) can be restored: zdr administers it from
/// `template1` meanwhile.
#[test]
fn the_postgres_database_itself_can_be_restored() {
    require_postgres();
    let env = Env::new();
    env.cluster.psql(
        "postgres",
        "CREATE TABLE ops (id int); INSERT INTO ops VALUES (1), (2)",
    );
    let (code, v) = env.json(&["backup", "postgres", "--database", "postgres"]);
    assert_eq!(code, 0, "{v}");
    env.cluster.psql("postgres", "DELETE FROM ops");
    let (code, v) = env.json(&["restore", "postgres", "--database", "postgres"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.count("postgres", "ops"), "2");
}

/// Another restore of the same database holds its lock (here a session holding the same
/// advisory lock): the restore waits for it (a killed run's last server command may still be
/// finishing), and fails with a conflict (exit 2) only after `lock_wait_secs`.
#[test]
fn a_restore_waits_for_the_lock_then_reports_a_conflict() {
    require_postgres();
    let env = Env::new();
    let (code, v) = env.json(&["backup", "postgres"]);
    assert_eq!(code, 0, "{v}");
    let hold = |secs: u32| {
        Command::new(std::path::Path::new(PG_BIN).join("psql"))
            .args(["-X", "-q", "-h"])
            .arg(env.cluster.dir.path())
            .args([
                "-p",
                &env.cluster.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
            ])
            .arg("-c")
            .arg(format!(
                "SELECT pg_advisory_lock(hashtext('zdr restore app')); SELECT pg_sleep({secs})"
            ))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let held_by = |env: &Env| {
        env.cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        )
    };
    // Held for longer than the wait: a conflict naming the database.
    let mut holder = hold(4);
    while held_by(&env) == "0" {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(&env.config)
        .args(["--no-progress", "restore", "postgres"])
        .env("ZDR_COMPONENTS__POSTGRES__PASSWORD", PASSWORD)
        .env("ZDR_COMPONENTS__POSTGRES__LOCK_WAIT_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another zdr restore of app is running"),
        "{err}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
    while held_by(&env) != "0" {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Held for a moment only: the restore waits, then runs.
    let mut holder = hold(2);
    while held_by(&env) == "0" {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (code, v) = env.json(&["restore", "postgres"]);
    assert_eq!(code, 0, "{v}");
    let _ = holder.wait();
}
