//! `zdr daemon`, `zdr run-once` and `zdr jobs` as an operator runs them: the runbook's default
//! jobs, a job run by hand as cron would, the daemon's catch-up backup, `/metrics` scraped,
//! SIGTERM ending it cleanly, and bad input refused at start-up with exit 2.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Env {
    fn new(daemon: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("app.env"), "A=1\n").unwrap();
        let config = dir.path().join("zdr.toml");
        std::fs::write(
            &config,
            format!(
                r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tier"

[components.configs]
type = "files"
path = "{root}/live"

[daemon]
jitter = "0s"
state_file = "{root}/state/daemon.json"
{daemon}
"#,
                root = dir.path().display()
            ),
        )
        .unwrap();
        Self { dir, config }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdr"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args);
        cmd
    }

    fn zdr(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.zdr(&all);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), v)
    }

    fn backups(&self) -> usize {
        let (code, v) = self.json(&["list"]);
        assert_eq!(code, 0, "{v}");
        v["tiers"][0]["backups"].as_array().map_or(0, Vec::len)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn jobs_lists_the_runbook_defaults_and_run_once_runs_one_as_the_daemon_would() {
    let env = Env::new("");
    let (code, v) = env.json(&["jobs"]);
    assert_eq!(code, 0, "{v}");
    let jobs: Vec<(&str, &str)> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job"].as_str().unwrap(), j["cron"].as_str().unwrap()))
        .collect();
    assert_eq!(
        jobs,
        [
            ("backup-configs", "0 1 * * *"),
            ("drill-configs", "0 4 1 * *"),
            ("drill-system", "0 5 1 1,4,7,10 *"),
            ("verify", "0 3 * * 0"),
        ]
    );
    let text = env.zdr(&["jobs"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("runbook default"));

    let out = env.zdr(&["run-once", "backup-configs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("job backup-configs (backup configs, prune) succeeded")
    );
    assert_eq!(env.backups(), 1);
    let out = env.zdr(&["run-once", "drill-configs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (_, v) = env.json(&["jobs"]);
    let drill = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "drill-configs")
        .unwrap();
    assert_eq!(drill["state"]["runs"], 1);
    assert!(drill["state"]["drill_rto_seconds"].as_f64().is_some());

    // A failing job: exit 1, recorded as failing.
    std::fs::remove_dir_all(env.dir.path().join("live")).unwrap();
    let (code, v) = env.json(&["run-once", "backup-configs"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["alerts"][0], "job_failed");
    assert_eq!(env.backups(), 1);
    // zdr status names the failing job and exits 4, as for a missed objective.
    let out = env.zdr(&["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("job backup-configs: last run FAILED"),
        "{text}"
    );
    assert!(text.contains("job drill-configs: last run ok"), "{text}");
    assert!(text.contains("drill RTO"), "{text}");
    let (code, v) = env.json(&["status"]);
    assert_eq!(code, 4);
    assert_eq!(v["jobs_failing"][0], "backup-configs");

    let out = env.zdr(&["run-once", "backup-db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown job \"backup-db\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_schedules_are_refused_at_start_up() {
    for (daemon, want) in [
        (
            "[daemon.jobs.nightly]\ncomponent = \"configs\"\ncron = \"0 3 * *\"\n",
            "daemon.jobs.nightly.cron",
        ),
        (
            "[daemon.jobs.nightly]\ncomponent = \"db\"\ncron = \"@daily\"\n",
            "unknown component \"db\"",
        ),
        ("listen = \"9187\"\n", "daemon.listen"),
    ] {
        let env = Env::new(daemon);
        for cmd in [&["daemon"][..], &["jobs"], &["backup", "configs"]] {
            let out = env.zdr(cmd);
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {}", stderr(&out));
            assert!(stderr(&out).contains(want), "{cmd:?}: {}", stderr(&out));
        }
        assert!(!env.dir.path().join("tier").exists());
    }
}

#[test]
fn the_daemon_catches_up_serves_metrics_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new(&format!("listen = \"127.0.0.1:{port}\"\n"));
    let mut child = env
        .cmd(&["daemon"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // No backup yet: the backup job runs at once.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    loop {
        let line = lines.next().expect("the daemon's log").unwrap();
        log.push(line.clone());
        assert!(!line.contains("failed"), "{log:#?}");
        if line.contains("job backup-configs finished") {
            break;
        }
    }
    let body = http_get(port, "/metrics");
    assert!(
        body.contains("zdr_job_runs_total{job=\"backup-configs\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("zdr_job_failing{job=\"backup-configs\"} 0"),
        "{body}"
    );
    assert!(http_get(port, "/healthz").contains("ok"));
    // SIGTERM: nothing runs, so it ends at once with exit 0.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(20));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(out.contains("zdr daemon stopped"), "{out}");
    assert_eq!(env.backups(), 1);

    // A second daemon on the same address while something holds it: exit 2, nothing runs.
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::fs::remove_dir_all(env.dir.path().join("state")).unwrap();
    let out = env.zdr(&["daemon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("cannot serve metrics on 127.0.0.1:{port}")));
    drop(holder);
    assert_eq!(env.backups(), 1);
}

/// A plain HTTP/1.0 GET on 127.0.0.1:port; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Runs `cmd`, panics with its output when it fails; its stdout.
fn must(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `examples/daemon` run as shipped: the image built from its Dockerfile (on the test kit's
/// Debian base), the compose file's whole stack started (PostgreSQL and Redis from the test
/// kit's images), the daemon's catch-up backups of the database (its tools run in the db
/// container through the mounted engine socket), the cache and the config files written to the
/// bind-mounted tier and read back from the host, `/metrics` on the published port, and
/// `docker-compose stop` (SIGTERM) ending the daemon with exit 0.
#[test]
fn the_compose_example_runs_the_daemon_as_a_service() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/daemon");
    let id = std::process::id();
    let tag = format!("zdr-test/zdr-daemon:{id}");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_zdr"), ctx.path().join("zdr")).unwrap();
    must(
        Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args([
                "build",
                "-q",
                "--build-arg",
                "BASE=zdr-test/base:current",
                "-t",
                &tag,
                "-f",
            ])
            .arg(examples.join("Dockerfile"))
            .arg(ctx.path()),
    );
    drop(ctx);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let project = format!("zdrdaemon{id}");
    std::fs::copy(
        examples.join("docker-compose.yml"),
        root.join("docker-compose.yml"),
    )
    .unwrap();
    let config = std::fs::read_to_string(examples.join("zdr.toml")).unwrap();
    assert!(config.contains("project = \"stack\""));
    std::fs::write(
        root.join("zdr.toml"),
        config
            .replace("project = \"stack\"", &format!("project = \"{project}\""))
            .replace("[daemon]\n", "[daemon]\njitter = \"0s\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("config/nginx")).unwrap();
    std::fs::write(
        root.join("config/nginx/site.conf"),
        "server { listen 443; }\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("backups")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let compose = |args: &[&str]| {
        let mut c = Command::new("docker-compose");
        c.current_dir(root)
            .env("ZDR_IMAGE", &tag)
            .env("POSTGRES_IMAGE", "zdr-test/postgres:current")
            .env("REDIS_IMAGE", "zdr-test/redis:current")
            .env("POSTGRES_PASSWORD", "compose-s3cret")
            .env("ZDR_METRICS_PORT", port.to_string())
            .env("ZDR_BACKUP_DIR", root.join("backups"))
            .env("ZDR_CONFIG_DIR", root.join("config"))
            .args(["-p", &project, "-f", "docker-compose.yml"])
            .args(args);
        c
    };
    // Whatever happens below, the project and the image go.
    struct Cleanup<'a>(&'a dyn Fn(&[&str]) -> Command, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-v", "--remove-orphans"]).output();
            let _ = Command::new("docker").args(["rmi", "-f", &self.1]).output();
        }
    }
    let _cleanup = Cleanup(&compose, tag.clone());
    must(&mut compose(&["up", "-d"]));

    // The host reads the tier the container writes.
    let host = Env {
        config: root.join("host.toml"),
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(
        &host.config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n",
            root.join("backups").display()
        ),
    )
    .unwrap();
    let components = || -> Vec<String> {
        let (code, v) = host.json(&["list"]);
        assert_eq!(code, 0, "{v}");
        let mut c: Vec<String> = v["tiers"][0]["backups"]
            .as_array()
            .map(|b| {
                b.iter()
                    .map(|m| m["component"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        c.sort();
        c.dedup();
        c
    };
    let mut waited = 0;
    while components() != ["cache", "configs", "db"] {
        assert!(
            waited < 600,
            "not every component backed up after 120 s ({:?}): {}",
            components(),
            must(&mut compose(&["logs", "--no-color", "zdr"]))
        );
        std::thread::sleep(Duration::from_millis(200));
        waited += 1;
    }
    let out = host.zdr(&["verify", "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http_get(port, "/metrics");
        if metrics.contains("zdr_job_runs_total{job=\"backup-db\"} 1") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        metrics.contains("zdr_job_failing{job=\"backup-db\"} 0"),
        "{metrics}"
    );
    must(&mut compose(&["stop", "-t", "60", "zdr"]));
    let container = must(&mut compose(&["ps", "-q", "zdr"])).trim().to_owned();
    let code =
        must(Command::new("docker").args(["inspect", "-f", "{{.State.ExitCode}}", &container]));
    assert_eq!(code.trim(), "0");
    let logs = must(&mut compose(&["logs", "--no-color", "zdr"]));
    assert!(logs.contains("zdr daemon stopped"), "{logs}");
    assert!(!logs.contains("compose-s3cret"), "{logs}");
    assert!(!logs.contains("failed"), "{logs}");
}
