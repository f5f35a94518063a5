//! `zdr` with a `redis` component against a real throwaway redis-server 7 (Debian package,
//! a free port, a temp data directory, `requirepass`): backup (physical and `--logical`),
//! `verify --restore`, physical restore into the owning server, selective logical restore
//! with and without `--no-replace`, exit codes, and no password in any output.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PASSWORD: &str = "cli-r3dis-pw-0099";

fn skip() -> bool {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("redis-server is not installed: skipping");
        return true;
    }
    false
}

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.data().join("redis.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

impl Env {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_command(&self) -> Vec<String> {
        let d = self.data().display().to_string();
        [
            "redis-server",
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &d,
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            PASSWORD,
            "--repl-diskless-sync-delay",
            "0",
            "--daemonize",
            "yes",
            "--pidfile",
            &format!("{d}/redis.pid"),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("zdr.toml");
        let env = Self { dir, config, port };
        std::fs::create_dir(env.data()).unwrap();
        let start = env.start_command();
        // The start command is in the config (the password with it, as the server's own
        // config would be); the stop command is the default: redis-cli SHUTDOWN NOSAVE with
        // REDISCLI_AUTH in its environment.
        let start_toml: Vec<String> = start.iter().map(|s| format!("{s:?}")).collect();
        std::fs::write(
            &env.config,
            format!(
                r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.redis]
type = "redis"
url = "redis://127.0.0.1:{port}"
data_dir = "{data}"
start_command = [{start}]
"#,
                root = env.dir.path().display(),
                data = env.data().display(),
                start = start_toml.join(", "),
            ),
        )
        .unwrap();
        assert!(
            Command::new(&start[0])
                .args(&start[1..])
                .status()
                .unwrap()
                .success()
        );
        let t = Instant::now();
        while env.cli(0, &["PING"]) != "PONG" {
            assert!(t.elapsed() < Duration::from_secs(10), "redis did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut l = String::new();
        for i in 0..100 {
            l.push_str(&format!("SET user:{i} u{i}\nHSET cart:{i} qty {i}\n"));
        }
        l.push_str(
            "SET session:x t EX 3600\nRPUSH q a b\nZADD z 1 a\nXADD s * k v\nSADD set a b\n",
        );
        env.pipe(0, &l);
        env.pipe(2, "SET other v\n");
        env
    }

    fn cli(&self, db: u32, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "-n", &db.to_string()])
            .env("REDISCLI_AUTH", PASSWORD)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn pipe(&self, db: u32, lines: &str) {
        let mut c = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "-n", &db.to_string()])
            .env("REDISCLI_AUTH", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        assert!(c.wait().unwrap().success());
    }

    fn zdr_env(&self, args: &[&str], password: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args)
            .env("ZDR_COMPONENTS__REDIS__PASSWORD", password)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        self.json_pw(args, PASSWORD)
    }

    fn json_pw(&self, args: &[&str], password: &str) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.zdr_env(&all, password);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stdout.contains(PASSWORD) && !stderr.contains(PASSWORD)
                || args.first() == Some(&"nothing"),
            "password leaked: {stdout} {stderr}"
        );
        let v: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
        (out.status.code().unwrap_or(-1), v)
    }
}

#[test]
fn physical_backup_verify_restore_and_restore_into_the_owning_server() {
    if skip() {
        return;
    }
    let env = Env::new();
    let (code, v) = env.json(&["backup", "redis"]);
    assert_eq!(code, 0, "{v}");
    let facts = &v["backup"]["facts"];
    assert_eq!(facts["path"], "psync", "{facts}");
    assert_eq!(facts["keys"]["0"], 205, "{facts}");
    assert_eq!(facts["keys"]["2"], 1, "{facts}");

    let (code, v) = env.json(&["verify", "redis", "--restore"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["outcome"]["target"].as_str().unwrap().contains("scratch"),
        "{v}"
    );

    env.cli(0, &["FLUSHALL"]);
    let (code, v) = env.json(&["restore", "redis"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.cli(0, &["DBSIZE"]), "205");
    assert_eq!(env.cli(2, &["GET", "other"]), "v");
    assert_eq!(env.cli(0, &["GET", "user:7"]), "u7");
}

#[test]
fn logical_backup_and_selective_restore_with_and_without_replace() {
    if skip() {
        return;
    }
    let env = Env::new();
    let (code, v) = env.json(&[
        "backup",
        "redis",
        "--logical",
        "--match",
        "user:*",
        "--db",
        "0",
    ]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["backup"]["kind"], "logical", "{v}");
    assert_eq!(v["backup"]["facts"]["keys"]["0"], 100);
    // A physical backup afterwards: `restore --logical` still picks the logical one.
    assert_eq!(env.json(&["backup", "redis"]).0, 0);

    env.cli(0, &["DEL", "user:1", "user:2"]);
    env.cli(0, &["SET", "user:3", "changed"]);
    env.cli(0, &["SET", "cart:1", "changed"]);
    let (code, v) = env.json(&["restore", "redis", "--logical", "--no-replace"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["outcome"]["items"], 2, "{v}");
    let notes = v["outcome"]["notes"].to_string();
    assert!(notes.contains("already exist"), "{notes}");
    assert_eq!(env.cli(0, &["GET", "user:1"]), "u1");
    assert_eq!(env.cli(0, &["GET", "user:3"]), "changed");

    // `zdr drill redis` checks the latest backup in a scratch server, live data untouched.
    let (code, v) = env.json(&["drill", "redis"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(env.cli(0, &["GET", "user:3"]), "changed");

    let (code, v) = env.json(&["restore", "redis", "--logical", "--match", "user:3"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["outcome"]["items"], 1, "{v}");
    assert_eq!(env.cli(0, &["GET", "user:3"]), "u3");
    assert_eq!(env.cli(0, &["GET", "cart:1"]), "changed");
}

#[test]
fn wrong_password_unknown_db_and_misplaced_flags_are_exit_2() {
    if skip() {
        return;
    }
    let env = Env::new();
    let (code, v) = env.json_pw(&["backup", "redis"], "wrong-pw-77");
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"]["kind"], "bad_input", "{v}");
    assert!(!v.to_string().contains("wrong-pw-77"), "{v}");
    let (code, v) = env.json(&["backup", "redis", "--logical", "--db", "99"]);
    assert_eq!(code, 2, "{v}");
    let (code, v) = env.json(&["backup", "redis", "--database", "x"]);
    assert_eq!(code, 2, "{v}");
    let (code, v) = env.json(&["restore", "redis", "--logical"]);
    assert_ne!(code, 0, "no logical backup yet: {v}");
}

#[test]
fn sandbox_drill_includes_redis_or_says_it_was_skipped() {
    if skip() {
        return;
    }
    let run = |bin_dir: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_zdr"));
        c.args(["--json", "--no-progress", "drill", "--sandbox"]);
        if let Some(d) = bin_dir {
            c.env("ZDR_REDIS_BIN_DIR", d);
        }
        let out = c.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    let (code, v) = run(None);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["redis"]["ok"], true, "{v}");
    assert!(v["redis"]["rto_physical_seconds"].as_f64().is_some(), "{v}");
    let (code, v) = run(Some("/nonexistent/zdr-redis-bin"));
    assert_eq!(code, Some(0), "{v}");
    assert!(
        v["redis"]["skipped"]
            .as_str()
            .unwrap()
            .contains("ZDR_REDIS_BIN_DIR"),
        "{v}"
    );
    assert_eq!(v["ok"], true, "{v}");
}

/// A physical restore first takes a safety copy of the live dataset (schedule `pre-restore`),
/// so keys written since the last save are not lost; the restore still brings back the
/// selected backup, not the safety copy. A wrong password is found before anything is
/// stopped: the server keeps running with its data.
#[test]
fn physical_restore_takes_a_safety_copy_and_checks_credentials_first() {
    if skip() {
        return;
    }
    let env = Env::new();
    let (code, v) = env.json(&["backup", "redis"]);
    assert_eq!(code, 0, "{v}");
    let selected = v["backup"]["id"].as_str().unwrap().to_owned();
    // Written after the backup, never saved to disk (`save ""`).
    env.pipe(0, "SET written:after the-backup\n");

    // Wrong password: refused before the server is touched.
    let (code, v) = env.json_pw(&["restore", "redis"], "not-the-password");
    assert_eq!(code, 2, "{v}");
    assert_eq!(env.cli(0, &["GET", "written:after"]), "the-backup");
    // Without the safety copy, the restorer's own preflight refuses it just the same.
    let (code, v) = env.json_pw(
        &["restore", "redis", "--no-safety-copy"],
        "not-the-password",
    );
    assert_eq!(code, 2, "{v}");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("nothing was stopped"),
        "{v}"
    );
    assert_eq!(env.cli(0, &["GET", "written:after"]), "the-backup");

    let (code, v) = env.json(&["restore", "redis"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["backup"],
        selected.as_str(),
        "the selected backup, not the copy: {v}"
    );
    let copy = v["safety_copy"].as_str().unwrap().to_owned();
    assert_eq!(
        env.cli(0, &["GET", "written:after"]),
        "",
        "restored to the backup"
    );
    let (_, list) = env.json(&["list"]);
    let backups = list["tiers"][0]["backups"].as_array().unwrap();
    let safety = backups.iter().find(|b| b["id"] == copy.as_str()).unwrap();
    assert_eq!(safety["schedule"], "pre-restore", "{safety}");
    assert_eq!(
        safety["facts"]["keys"]["0"], 206,
        "the unsaved key is in the copy"
    );

    // The safety copy restores the key written after the backup.
    let (code, v) = env.json(&["restore", "redis", "--backup", &copy, "--no-safety-copy"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["safety_copy"].is_null(), "{v}");
    assert_eq!(env.cli(0, &["GET", "written:after"]), "the-backup");
}

/// A physical restore killed after the server was stopped (before and after the new RDB is
/// in place) leaves it down; the next zdr command touching the component starts it again
/// (saying so), and the safety copy taken before the stop brings back what was in memory.
#[test]
fn a_restore_killed_while_the_server_is_down_is_repaired_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    if skip() {
        return;
    }
    let env = Env::new();
    let (code, v) = env.json(&["backup", "redis"]);
    assert_eq!(code, 0, "{v}");
    for point in ["redis-after-swap", "redis-after-stop"] {
        env.pipe(0, "SET written:after the-backup\n");
        let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&env.config)
            .args(["--no-progress", "restore", "redis"])
            .env("ZDR_COMPONENTS__REDIS__PASSWORD", PASSWORD)
            .env("ZDR_FAILPOINT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(6), "{point}: {out:?}");
        assert_ne!(env.cli(0, &["PING"]), "PONG", "{point}: the server is down");
        // The next command on the component brings the server back first.
        let out = env.zdr_env(&["backup", "redis"], PASSWORD);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("interrupted restore"), "{point}: {err}");
        assert_eq!(env.cli(0, &["PING"]), "PONG", "{point}");
        // What was in memory before the killed restore is in its safety copy.
        let (_, list) = env.json(&["list"]);
        let copy = list["tiers"][0]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|b| b["schedule"] == "pre-restore")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (code, v) = env.json(&["restore", "redis", "--backup", &copy, "--no-safety-copy"]);
        assert_eq!(code, 0, "{point}: {v}");
        assert_eq!(
            env.cli(0, &["GET", "written:after"]),
            "the-backup",
            "{point}"
        );
    }
}
