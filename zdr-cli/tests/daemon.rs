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
