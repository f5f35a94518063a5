//! `zdr::daemon` on real tiers and real files: schedules fired in order on an injected clock,
//! one catch-up run after a simulated downtime, a still-running job skipped (not started
//! twice), alerts sent once and their recovery announced to a webhook receiver, ping URLs,
//! `/metrics` scraped and parsed, a job timeout, a shutdown that abandons a job past its
//! grace, and the bad input refused at start-up. The n8n component used to hold a job open
//! talks to the HTTP gate of `support/` (a double of nothing but a server that has not
//! answered yet).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::{broadcast, watch};
use zdr::daemon::{AlertKind, Daemon, DaemonEvent, DaemonOptions, ManualClock};
use zdr::{Config, Progress, Stack};
use zdr_core::{Level, RecordingSink};

mod support;
use support::{flows, gate};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        std::fs::write(dir.path().join("live/app.env"), "A=1\n").unwrap();
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn config(&self, extra: &str) -> Config {
        let text = format!(
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
defaults = false
state_file = "{root}/state/daemon.json"
{extra}
"#,
            root = self.dir.path().display()
        );
        Config::parse(&text, "test", std::iter::empty()).unwrap()
    }

    async fn daemon(&self, extra: &str, progress: Progress) -> Daemon {
        let config = self.config(extra);
        let mut options = DaemonOptions::from_config(&config.daemon).unwrap();
        options.retry_delay = Duration::from_millis(20);
        let jobs = zdr::daemon::jobs(&config).unwrap();
        let stack = Arc::new(Stack::open(config).await.unwrap());
        Daemon::with_options(stack, jobs, options, progress).unwrap()
    }
}

impl Env {
    /// The daemon of `extra` on `clock`.
    async fn on_clock(
        &self,
        extra: &str,
        progress: Progress,
        clock: &Arc<ManualClock>,
    ) -> Arc<Daemon> {
        Arc::new(self.daemon(extra, progress).await.with_clock(clock.clone()))
    }
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, d, h, m, 0).unwrap()
}

/// Wait for the next event matching `f`.
async fn wait_for<T>(
    rx: &mut broadcast::Receiver<DaemonEvent>,
    mut f: impl FnMut(&DaemonEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let e = rx.recv().await.expect("daemon events");
            if let Some(t) = f(&e) {
                return t;
            }
        }
    })
    .await
    .expect("the awaited daemon event came within 60 s")
}

async fn finished(rx: &mut broadcast::Receiver<DaemonEvent>, job: &str) -> zdr::daemon::JobRun {
    wait_for(rx, |e| match e {
        DaemonEvent::Finished(r) if r.job == job => Some(r.clone()),
        _ => None,
    })
    .await
}

async fn finished_any(rx: &mut broadcast::Receiver<DaemonEvent>) -> zdr::daemon::JobRun {
    wait_for(rx, |e| match e {
        DaemonEvent::Finished(r) => Some(r.clone()),
        _ => None,
    })
    .await
}

async fn backups(stack_config: Config) -> usize {
    let stack = Stack::open(stack_config).await.unwrap();
    stack.list(None, Some("configs")).await.unwrap()[0]
        .backups
        .len()
}

/// Drives a daemon on a manual clock: `script` runs beside it, then the daemon stops.
async fn with_daemon<F, Fut>(daemon: Arc<Daemon>, script: F) -> zdr::daemon::DaemonExit
where
    F: FnOnce(broadcast::Receiver<DaemonEvent>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rx = daemon.subscribe();
    let (stop, stopped) = watch::channel(false);
    let mut stopped2 = stopped.clone();
    let run = Arc::clone(&daemon).run(async move {
        let _ = stopped2.wait_for(|s| *s).await;
    });
    let drive = async move {
        script(rx).await;
        let _ = stop.send(true);
    };
    let (exit, ()) = tokio::join!(run, drive);
    drop(stopped);
    exit.unwrap()
}

/// Job starts: (job, clock time).
type Starts = Vec<(String, DateTime<Utc>)>;

const JOBS: &str = r#"
[daemon.jobs.backup-configs]
component = "configs"
cron = "0 * * * *"

[daemon.jobs.verify]
run = "verify"
cron = "30 */2 * * *"
"#;

#[tokio::test]
async fn schedules_fire_in_order_and_a_downtime_gets_one_catch_up_run() {
    let env = Env::new();
    let clock = Arc::new(ManualClock::new(at(16, 7, 10)));
    let daemon = env.on_clock(JOBS, Progress::none(), &clock).await;
    let started: Arc<Mutex<Starts>> = Arc::default();
    let log = Arc::clone(&started);
    let c = clock.clone();
    with_daemon(Arc::clone(&daemon), |mut rx| async move {
        let mut step = async |to: Option<DateTime<Utc>>, jobs: &[&str]| {
            if let Some(t) = to {
                c.set(t);
            }
            // Every start and end of this step, in whatever order they come.
            let mut ended = Vec::new();
            while ended.len() < jobs.len() {
                match wait_for(&mut rx, |e| match e {
                    DaemonEvent::Started { .. } | DaemonEvent::Finished(_) => Some(e.clone()),
                    _ => None,
                })
                .await
                {
                    DaemonEvent::Started { job, at } => log.lock().unwrap().push((job, at)),
                    DaemonEvent::Finished(r) => {
                        assert!(r.ok, "{}: {}", r.job, r.message);
                        ended.push(r.job);
                    }
                    _ => {}
                }
            }
            ended.sort();
            let mut want: Vec<String> = jobs.iter().map(|j| (*j).to_owned()).collect();
            want.sort();
            assert_eq!(ended, want);
        };
        // No backup of configs yet: it runs at once; verify waits for its time.
        step(None, &["backup-configs"]).await;
        step(Some(at(16, 8, 0)), &["backup-configs"]).await;
        step(Some(at(16, 8, 30)), &["verify"]).await;
        step(Some(at(16, 9, 0)), &["backup-configs"]).await;
        // The clock jumps (a suspended host): each job runs once, not once per missed hour.
        step(Some(at(16, 13, 5)), &["backup-configs", "verify"]).await;
        step(Some(at(16, 14, 0)), &["backup-configs"]).await;
    })
    .await;
    let first_run = started.lock().unwrap().clone();
    let want = |v: &[(&str, DateTime<Utc>)]| -> Vec<(String, DateTime<Utc>)> {
        v.iter().map(|(j, t)| ((*j).to_owned(), *t)).collect()
    };
    let mut sorted_first = first_run.clone();
    sorted_first.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(
        sorted_first,
        want(&[
            ("backup-configs", at(16, 7, 10)),
            ("backup-configs", at(16, 8, 0)),
            ("verify", at(16, 8, 30)),
            ("backup-configs", at(16, 9, 0)),
            ("backup-configs", at(16, 13, 5)),
            ("verify", at(16, 13, 5)),
            ("backup-configs", at(16, 14, 0)),
        ])
    );
    assert_eq!(backups(env.config(JOBS)).await, 5);

    // Down for three days; started again with the same state file: one catch-up run of
    // each job, then the schedule.
    started.lock().unwrap().clear();
    clock.set(at(19, 9, 10));
    let daemon = env.on_clock(JOBS, Progress::none(), &clock).await;
    let log = Arc::clone(&started);
    let c = clock.clone();
    with_daemon(daemon, |mut rx| async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(
                wait_for(&mut rx, |e| match e {
                    DaemonEvent::Started { job, at } => Some((job.clone(), *at)),
                    _ => None,
                })
                .await,
            );
        }
        let mut ended = vec![
            finished_any(&mut rx).await.job,
            finished_any(&mut rx).await.job,
        ];
        ended.sort();
        assert_eq!(ended, ["backup-configs", "verify"]);
        c.set(at(19, 10, 0));
        seen.push(
            wait_for(&mut rx, |e| match e {
                DaemonEvent::Started { job, at } => Some((job.clone(), *at)),
                _ => None,
            })
            .await,
        );
        finished(&mut rx, "backup-configs").await;
        log.lock().unwrap().extend(seen);
    })
    .await;
    let mut second = started.lock().unwrap().clone();
    second.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    assert_eq!(
        second,
        want(&[
            ("backup-configs", at(19, 9, 10)),
            ("verify", at(19, 9, 10)),
            ("backup-configs", at(19, 10, 0)),
        ])
    );
    assert_eq!(backups(env.config(JOBS)).await, 7);
    let state = std::fs::read_to_string(env.path("state/daemon.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["jobs"]["backup-configs"]["runs"], 7);
    assert_eq!(state["jobs"]["verify"]["runs"], 3);
}

#[tokio::test]
async fn a_job_still_running_is_skipped_not_started_twice() {
    let env = Env::new();
    let gate = gate().await;
    let extra = format!(
        "{}\n[daemon.jobs.backup-flows]\ncomponent = \"flows\"\ncron = \"0 * * * *\"\n",
        flows(&gate)
    );
    let clock = Arc::new(ManualClock::new(at(16, 7, 10)));
    let daemon = env.on_clock(&extra, Progress::none(), &clock).await;
    let c = clock.clone();
    let open = gate.open.clone();
    with_daemon(daemon, |mut rx| async move {
        // The catch-up backup starts and hangs on the server.
        wait_for(&mut rx, |e| match e {
            DaemonEvent::Started { job, .. } if job == "backup-flows" => Some(()),
            _ => None,
        })
        .await;
        c.set(at(16, 8, 0));
        let skipped = wait_for(&mut rx, |e| match e {
            DaemonEvent::Skipped { job, at } if job == "backup-flows" => Some(*at),
            DaemonEvent::Started { job, .. } if job == "backup-flows" => {
                panic!("started twice")
            }
            _ => None,
        })
        .await;
        assert_eq!(skipped, at(16, 8, 0));
        open.send_replace(true);
        let r = finished(&mut rx, "backup-flows").await;
        assert!(r.ok, "{}", r.message);
        c.set(at(16, 9, 0));
        let (job, when) = wait_for(&mut rx, |e| match e {
            DaemonEvent::Started { job, at } => Some((job.clone(), *at)),
            _ => None,
        })
        .await;
        assert_eq!((job.as_str(), when), ("backup-flows", at(16, 9, 0)));
        finished(&mut rx, "backup-flows").await;
    })
    .await;
    assert!(!gate.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_run_past_its_timeout_fails_and_a_shutdown_abandons_a_job_past_its_grace() {
    let env = Env::new();
    let gate = gate().await;
    let extra = format!(
        "shutdown_grace = \"1s\"\n{}\n[daemon.jobs.backup-flows]\ncomponent = \"flows\"\ncron = \"0 * * * *\"\n",
        flows(&gate)
    );
    // The same component in a job with a timeout, run by hand afterwards.
    let slow = format!(
        "{}\n[daemon.jobs.slow]\ncomponent = \"flows\"\ncron = \"0 0 * * *\"\ntimeout = \"1s\"\n",
        flows(&gate)
    );
    let sink = Arc::new(RecordingSink::default());
    let clock = Arc::new(ManualClock::new(at(16, 7, 10)));
    let daemon = env
        .on_clock(&extra, Progress::new(sink.clone()), &clock)
        .await;
    let lock = env.path("tier/locks/component-flows.json");
    let t = std::time::Instant::now();
    let exit = with_daemon(Arc::clone(&daemon), |mut rx| async move {
        wait_for(&mut rx, |e| match e {
            DaemonEvent::Started { job, .. } if job == "backup-flows" => Some(()),
            _ => None,
        })
        .await;
    })
    .await;
    assert_eq!(exit.abandoned, ["backup-flows"]);
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(
        sink.messages(Level::Warn)
            .iter()
            .any(|m| m.contains("job backup-flows did not finish within the shutdown grace")),
        "{:?}",
        sink.messages(Level::Warn)
    );
    // The abandoned run's lock is removed; the next run need not wait for it to go stale.
    lock_removed(&lock).await;

    // A run past its timeout fails, and leaves no lock either.
    let r = env
        .daemon(&slow, Progress::none())
        .await
        .run_once("slow")
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(
        r.message.contains("took longer than its timeout of 1 s"),
        "{}",
        r.message
    );
    lock_removed(&lock).await;
    // Nothing partial is listed.
    let stack = Stack::open(env.config(&extra)).await.unwrap();
    assert!(
        stack.list(None, Some("flows")).await.unwrap()[0]
            .backups
            .is_empty()
    );
}

/// The lock file is gone within 10 s (removed by a background task).
async fn lock_removed(lock: &Path) {
    for _ in 0..200 {
        if !lock.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} is still there", lock.display());
}

/// A receiver of webhook alerts and pings: (path, body) in arrival order.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<(String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let g = Arc::clone(&got);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: String| {
        let g = Arc::clone(&g);
        async move {
            g.lock().unwrap().push((uri.path().to_owned(), body));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got)
}

fn events(got: &Mutex<Vec<(String, String)>>, path: &str) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect()
}

fn pings(got: &Mutex<Vec<(String, String)>>) -> Vec<(String, String)> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/ping/"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn failures_and_missed_objectives_alert_once_and_their_recovery_is_announced() {
    let env = Env::new();
    let (addr, got) = receiver().await;
    let extra = format!(
        r#"webhook = "http://{addr}/hook"

[daemon.jobs.backup-configs]
component = "configs"
cron = "0 * * * *"
ping = "http://{addr}/ping/abc"

[rpo]
configs = "1h"
"#
    );
    let daemon = env.daemon(&extra, Progress::none()).await;
    std::fs::rename(env.path("live"), env.path("live-away")).unwrap();

    let r = daemon.run_once("backup-configs").await.unwrap();
    assert!(!r.ok);
    assert_eq!(r.alerts, [AlertKind::JobFailed]);
    // Alerts of one run are sent side by side: their order is not fixed.
    let mut hook = events(&got, "/hook");
    hook.sort_by_key(|a| a["event"].as_str().unwrap().to_owned());
    let kinds: Vec<&str> = hook.iter().map(|a| a["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["job_failed", "rpo_breached"]);
    assert_eq!(hook[0]["job"], "backup-configs");
    assert_eq!(hook[1]["component"], "configs");
    assert!(hook[0]["message"].as_str().unwrap().contains("failed"));
    assert!(hook[1]["message"].as_str().unwrap().contains("no backup"));
    let pings_after_first = pings(&got);

    // Still failing, still missed: nothing new.
    let r = daemon.run_once("backup-configs").await.unwrap();
    assert!(!r.ok);
    assert!(r.alerts.is_empty());
    assert_eq!(events(&got, "/hook").len(), 2);

    std::fs::rename(env.path("live-away"), env.path("live")).unwrap();
    let r = daemon.run_once("backup-configs").await.unwrap();
    assert!(r.ok, "{}", r.message);
    assert_eq!(r.alerts, [AlertKind::JobRecovered]);
    let mut kinds: Vec<String> = events(&got, "/hook")[2..]
        .iter()
        .map(|a| a["event"].as_str().unwrap().to_owned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["job_recovered", "rpo_recovered"]);

    // The ping URL saw start and fail for each failed run, start and success for the
    // last, with the outcome as the body.
    let all = pings(&got);
    let mut first: Vec<&str> = pings_after_first.iter().map(|(p, _)| p.as_str()).collect();
    first.sort_unstable();
    assert_eq!(first, ["/ping/abc/fail", "/ping/abc/start"]);
    assert_eq!(all.len(), 6);
    let mut last: Vec<&str> = all[4..].iter().map(|(p, _)| p.as_str()).collect();
    last.sort_unstable();
    assert_eq!(last, ["/ping/abc", "/ping/abc/start"]);
    let body = |path: &str| {
        all.iter()
            .rev()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .unwrap()
    };
    assert!(body("/ping/abc/fail").contains("backup configs"));
    assert!(body("/ping/abc").contains("stored on local"));
    let state = daemon.state().await.unwrap();
    let job = &state.jobs["backup-configs"];
    assert_eq!((job.runs, job.failures, job.failing), (3, 2, false));
}

#[tokio::test]
async fn an_unreachable_webhook_is_retried_and_never_blocks_or_fails_a_backup() {
    let env = Env::new();
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        r#"webhook = "http://{dead}/hook?token=s3cret"
webhook_retries = 2

[daemon.jobs.backup-configs]
component = "configs"
cron = "0 * * * *"
"#
    );
    let sink = Arc::new(RecordingSink::default());
    let daemon = env.daemon(&extra, Progress::new(sink.clone())).await;
    std::fs::rename(env.path("live"), env.path("live-away")).unwrap();
    let r = daemon.run_once("backup-configs").await.unwrap();
    assert!(!r.ok);
    std::fs::rename(env.path("live-away"), env.path("live")).unwrap();
    let r = daemon.run_once("backup-configs").await.unwrap();
    assert!(r.ok, "{}", r.message);
    let warnings = sink.messages(Level::Warn);
    let undelivered: Vec<&String> = warnings
        .iter()
        .filter(|m| m.contains("was not delivered after 3 attempts"))
        .collect();
    assert!(
        undelivered.iter().any(|m| m.contains("JobFailed")),
        "{warnings:?}"
    );
    assert!(
        undelivered.iter().any(|m| m.contains("JobRecovered")),
        "{warnings:?}"
    );
    // The URL (and its token) is never written out.
    assert!(
        !warnings
            .iter()
            .any(|m| m.contains("s3cret") || m.contains(&dead.to_string()))
    );
    assert_eq!(backups(env.config(&extra)).await, 1);
}

/// Prometheus text: `name{labels} value` lines, comments skipped; every value parses.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_served_and_parse() {
    let env = Env::new();
    let extra = "listen = \"127.0.0.1:0\"\n[daemon.jobs.backup-configs]\ncomponent = \"configs\"\ncron = \"0 * * * *\"\n";
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let daemon = Arc::new(env.daemon(extra, Progress::none()).await.with_clock(clock));
    let scraped: Arc<Mutex<String>> = Arc::default();
    let s = Arc::clone(&scraped);
    with_daemon(daemon, |mut rx| async move {
        let addr = wait_for(&mut rx, |e| match e {
            DaemonEvent::Listening(a) => Some(*a),
            _ => None,
        })
        .await;
        finished(&mut rx, "backup-configs").await;
        // The objectives are checked after a job ends.
        wait_for(&mut rx, |e| match e {
            DaemonEvent::StatusChecked { .. } => Some(()),
            _ => None,
        })
        .await;
        let body = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        *s.lock().unwrap() = body;
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert!(health.status().is_success());
    })
    .await;
    let text = scraped.lock().unwrap().clone();
    let metrics = parse_metrics(&text);
    let get = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
    };
    assert_eq!(get("zdr_job_runs_total{job=\"backup-configs\"}"), 1.0);
    assert_eq!(get("zdr_job_failing{job=\"backup-configs\"}"), 0.0);
    assert_eq!(get("zdr_job_running{job=\"backup-configs\"}"), 0.0);
    assert!(get("zdr_job_last_success_timestamp_seconds{job=\"backup-configs\"}") > 1.7e9);
    assert_eq!(get("zdr_backups{component=\"configs\"}"), 1.0);
    assert!(get("zdr_job_next_run_timestamp_seconds{job=\"backup-configs\"}") > 1.7e9);
}

#[tokio::test]
async fn a_metrics_address_in_use_stops_the_daemon_before_any_job() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let extra = format!(
        "listen = \"{addr}\"\n[daemon.jobs.backup-configs]\ncomponent = \"configs\"\ncron = \"0 * * * *\"\n"
    );
    let daemon = env.daemon(&extra, Progress::none()).await;
    let e = Arc::new(daemon)
        .run(std::future::pending())
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(e.kind(), zdr::ErrorKind::BadInput);
    assert!(!Path::new(&env.path("state/daemon.json")).exists());
    assert_eq!(backups(env.config(&extra)).await, 0);
}

#[test]
fn bad_daemon_config_is_refused_naming_the_key() {
    let env = Env::new();
    let parse = |extra: &str| {
        let text = format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{root}/tier\"\n[components.configs]\ntype = \"files\"\npath = \"{root}/live\"\n{extra}",
            root = env.dir.path().display()
        );
        Config::parse(&text, "zdr.toml", std::iter::empty())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    for (extra, want) in [
        (
            "[daemon.jobs.b]\ncomponent = \"configs\"\ncron = \"0 25 * * *\"\n",
            "hour: 25 is outside 0-23",
        ),
        (
            "[daemon.jobs.b]\ncomponent = \"nope\"\ncron = \"@daily\"\n",
            "unknown component \"nope\"",
        ),
        (
            "[daemon.jobs.b]\nrun = \"backpu\"\ncron = \"@daily\"\n",
            "daemon.jobs.b.run \"backpu\" is not a job",
        ),
        ("[daemon.jobs.b]\ncron = \"@daily\"\n", "needs component"),
        (
            "[daemon.jobs.b]\nrun = \"verify\"\nscenario = \"system\"\ncron = \"@daily\"\n",
            "daemon.jobs.b.scenario applies to drill jobs",
        ),
        (
            "[daemon.jobs.b]\ncomponent = \"configs\"\nbase = true\ncron = \"@daily\"\n",
            "applies to postgres components",
        ),
        (
            "[daemon.jobs.b]\nrun = \"replicate\"\ncron = \"@daily\"\n",
            "replicate_to names no tier",
        ),
        (
            "[daemon.jobs.b]\ncomponent = \"configs\"\ncron = \"@daily\"\nping = \"hc-ping.com/x\"\n",
            "daemon.jobs.b.ping is not an http:// or https:// URL",
        ),
        (
            "[daemon]\nlisten = \"localhost\"\n",
            "daemon.listen \"localhost\" is not an address",
        ),
        (
            "[daemon]\nwebhook = \"ftp://x\"\n",
            "daemon.webhook is not an http",
        ),
        ("[daemon]\njitter = \"5 minutes\"\n", "invalid duration"),
        ("[daemon]\ncolour = 1\n", "unknown field `colour`"),
        (
            "[daemon.jobs.\"bad name\"]\ncomponent = \"configs\"\ncron = \"@daily\"\n",
            "invalid job name",
        ),
    ] {
        let e = parse(extra);
        assert!(e.contains(want), "{extra}: {e}");
    }
    // A retention rule that keeps nothing is refused as well.
    let e = parse("[retention]\nkeep_last = 0\n");
    assert!(e.contains("keep"), "{e}");
}

#[tokio::test]
async fn an_unknown_job_names_the_jobs() {
    let env = Env::new();
    let daemon = env.daemon(JOBS, Progress::none()).await;
    let e = daemon.run_once("backup-db").await.unwrap_err();
    assert_eq!(e.kind(), zdr::ErrorKind::BadInput);
    assert!(
        e.to_string().contains("unknown job \"backup-db\"")
            && e.to_string().contains("backup-configs, verify"),
        "{e}"
    );
}

#[tokio::test]
async fn the_runbook_defaults_cover_every_component() {
    let env = Env::new();
    let text = format!(
        "primary = \"local\"\nreplicate_to = [\"r\"]\n[tiers.local]\ntype = \"fs\"\nroot = \"{root}/a\"\n[tiers.r]\ntype = \"fs\"\nroot = \"{root}/b\"\n[components.configs]\ntype = \"files\"\npath = \"{root}/live\"\n[daemon.jobs.drill-configs]\ncron = \"off\"\n[daemon.jobs.backup-configs]\ncomponent = \"configs\"\ncron = \"*/30 * * * *\"\n",
        root = env.dir.path().display()
    );
    let config = Config::parse(&text, "t", std::iter::empty()).unwrap();
    let jobs = zdr::daemon::jobs(&config).unwrap();
    let names: Vec<(&str, String, bool)> = jobs
        .iter()
        .map(|j| (j.name.as_str(), j.schedule.to_string(), j.default))
        .collect();
    assert_eq!(
        names,
        [
            ("backup-configs", "*/30 * * * *".to_owned(), false),
            ("drill-system", "0 5 1 1,4,7,10 *".to_owned(), true),
            ("verify", "0 3 * * 0".to_owned(), true),
        ]
    );
    assert_eq!(jobs[0].kind.describe(), "backup configs, replicate, prune");
    let defaults = zdr::daemon::default_jobs(&config);
    let d: Vec<(&str, String)> = defaults
        .iter()
        .map(|j| (j.name.as_str(), j.schedule.to_string()))
        .collect();
    assert!(
        d.contains(&("backup-configs", "0 1 * * *".to_owned())),
        "{d:?}"
    );
    assert!(
        d.contains(&("drill-configs", "0 4 1 * *".to_owned())),
        "{d:?}"
    );
}

#[tokio::test]
async fn a_shutdown_lets_a_running_job_finish_within_its_grace() {
    let env = Env::new();
    let gate = gate().await;
    let extra = format!(
        "shutdown_grace = \"60s\"\n{}\n[daemon.jobs.backup-flows]\ncomponent = \"flows\"\ncron = \"0 * * * *\"\n",
        flows(&gate)
    );
    let clock = Arc::new(ManualClock::new(at(16, 7, 10)));
    let daemon = env.on_clock(&extra, Progress::none(), &clock).await;
    // The server answers only once the daemon is stopping: the run must outlast the signal.
    let mut events = daemon.subscribe();
    let open = gate.open.clone();
    let opener = tokio::spawn(async move {
        wait_for(&mut events, |e| match e {
            DaemonEvent::Stopping { running } => Some(running.clone()),
            _ => None,
        })
        .await;
        open.send_replace(true);
    });
    let exit = with_daemon(Arc::clone(&daemon), |mut rx| async move {
        wait_for(&mut rx, |e| match e {
            DaemonEvent::Started { job, .. } if job == "backup-flows" => Some(()),
            _ => None,
        })
        .await;
    })
    .await;
    opener.await.unwrap();
    assert!(exit.abandoned.is_empty(), "{exit:?}");
    let state = daemon.state().await.unwrap();
    let job = &state.jobs["backup-flows"];
    assert_eq!((job.runs, job.failing), (1, false), "{job:?}");
    let stack = Stack::open(env.config(&extra)).await.unwrap();
    assert_eq!(
        stack.list(None, Some("flows")).await.unwrap()[0]
            .backups
            .len(),
        1
    );
}
