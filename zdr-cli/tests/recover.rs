//! `zdr recover container` as an operator runs it, against the real Docker engine: the plan
//! with `--dry-run` (text and JSON) changes nothing; a recovery killed (abort, as `kill -9`) right
//! after recreating the container, and again right after keeping the volumes aside, is
//! completed by the next run: data back, the report printed and stored. A physical restore of a
//! redis in a container killed while the container is down is repaired by the next run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use zdr_tests::containers::PgStack;

const PASSWORD: &str = "pw-cli-recover-7d2c";

fn zdr(config: &Path, args: &[&str], failpoint: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdr"));
    cmd.arg("--config")
        .arg(config)
        .arg("--no-progress")
        .args(args)
        .env("ZDR_COMPONENTS__DB__PASSWORD", PASSWORD)
        .env_remove("ZDR_FAILPOINT");
    if let Some(f) = failpoint {
        cmd.env("ZDR_FAILPOINT", f);
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_recovery_is_completed_by_the_next_run() {
    let pg = PgStack::start("zdrt-cli-recover", PASSWORD).await.unwrap();
    pg.sql(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 3000) g;",
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{root}/tier\"\n\
             [components.db]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"postgres\"\ndatabase = \"app\"\nbin_dir = \"/nonexistent/zdr-no-client-tools\"\n\
             runner = \"docker\"\ncontainer = \"{name}\"\ndependents = [\"{app}\"]\n",
            root = dir.path().display(),
            port = pg.port,
            name = pg.name,
            app = pg.app,
        ),
    )
    .unwrap();
    let out = zdr(&config, &["backup", "db"], None);
    assert!(out.status.success(), "{}", text(&out));

    // The plan, as text and JSON; the container keeps running as it was.
    let started = pg.docker.status(&pg.name).await.unwrap().started_at;
    let out = zdr(&config, &["recover", "container", "db", "--dry-run"], None);
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    for step in [
        "remove-failed",
        "keep-volumes",
        "recreate",
        "wait-healthy",
        "restore",
        "dependents",
        "backup",
    ] {
        assert!(plan.contains(step), "{step} missing from\n{plan}");
    }
    assert!(plan.contains(&pg.volume), "{plan}");
    assert!(plan.contains("Refused now: container"), "{plan}");
    let out = zdr(&config, &["recover", "container", "db"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is running and healthy"),
        "{}",
        text(&out)
    );
    let out = zdr(
        &config,
        &["--json", "recover", "container", "db", "--dry-run"],
        None,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["steps"].as_array().map(Vec::len), Some(7), "{v}");
    assert_eq!(v["plan"]["container_exists"], true, "{v}");
    // Without a base backup the logical one is used, and the plan says why.
    assert_eq!(v["plan"]["backup"]["kind"], "logical", "{v}");
    assert!(
        v["plan"]["method_note"]
            .as_str()
            .is_some_and(|n| n.contains("no base backup")),
        "{v}"
    );
    // Asked for explicitly, a physical recovery without a base backup is refused, naming it.
    let out = zdr(
        &config,
        &[
            "recover",
            "container",
            "db",
            "--dry-run",
            "--method",
            "physical",
        ],
        None,
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("no base backup of db that the WAL archive can roll forward"),
        "{}",
        text(&out)
    );
    let out = zdr(
        &config,
        &[
            "recover",
            "container",
            "db",
            "--dry-run",
            "--method",
            "base",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("auto, logical or physical"),
        "{}",
        text(&out)
    );
    assert_eq!(
        pg.docker.status(&pg.name).await.unwrap().started_at,
        started
    );
    assert!(!dir.path().join("tier/reports").exists());
    // The drill of the scenario, against a throwaway copy.
    let out = zdr(&config, &["drill", "--scenario", "container", "db"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(md.starts_with("# Drill report"), "{md}");
    assert!(md.contains("| teardown | done |"), "{md}");
    assert_eq!(
        pg.docker.status(&pg.name).await.unwrap().started_at,
        started
    );
    // The whole stack on a private network: the database copy and its app's copy, removed.
    let out = zdr(&config, &["drill", "--scenario", "project"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(md.contains("the whole stack on a private network"), "{md}");
    for step in [
        "| network | done |",
        "| drill-db | done |",
        "| apps | done |",
        "| teardown | done |",
    ] {
        assert!(md.contains(step), "{step}: {md}");
    }
    assert_eq!(
        pg.docker.status(&pg.name).await.unwrap().started_at,
        started
    );
    assert_eq!(
        pg.volumes().await.unwrap(),
        std::slice::from_ref(&pg.volume)
    );

    // The failure, then a recovery killed right after recreating the container ...
    pg.lose_container_and_volume().await.unwrap();
    let out = zdr(
        &config,
        &["recover", "container", "db"],
        Some("recover-after-recreate"),
    );
    assert_eq!(out.status.code(), None, "not killed: {}", text(&out));
    assert!(
        pg.docker.status(&pg.name).await.is_ok(),
        "no container recreated"
    );
    // ... and the next run killed right after keeping the (new, empty) volume aside.
    let out = zdr(
        &config,
        &["recover", "container", "db"],
        Some("recover-after-keep-volumes"),
    );
    assert_eq!(out.status.code(), None, "not killed: {}", text(&out));
    assert!(
        pg.docker.status(&pg.name).await.is_err(),
        "container still there"
    );
    let volumes = pg.volumes().await.unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v.starts_with(&format!("{}-failed-", pg.volume))),
        "{volumes:?}"
    );
    assert!(!volumes.contains(&pg.volume), "{volumes:?}");

    // The next run completes it: from the spec the backup recorded (the container is gone).
    let out = zdr(&config, &["--json", "recover", "container", "db"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["report"]["restored"]["problems"],
        serde_json::json!([]),
        "{v}"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM items").await.unwrap(), "3000");
    let stored = v["report"]["stored"].as_array().unwrap();
    assert_eq!(stored.len(), 2, "{v}");
    for key in stored {
        let path = dir.path().join("tier").join(key.as_str().unwrap());
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(!body.contains(PASSWORD), "{}", path.display());
    }
    // It carries over what the interrupted run kept aside (the volume the first one made).
    assert_eq!(
        v["report"]["kept_aside"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    // The incident report, printed and stored; a recovery that discarded the volume keeps
    // nothing, so it cannot be rolled back (exit 2), nor can one that does not exist.
    pg.docker.kill(&pg.name, "SIGKILL").await.unwrap();
    let out = zdr(
        &config,
        &[
            "--json",
            "recover",
            "container",
            "db",
            "--no-backup",
            "--discard-volume",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let md_key = v["report"]["stored"][1].as_str().unwrap();
    let md = std::fs::read_to_string(dir.path().join("tier").join(md_key)).unwrap();
    assert!(
        md.starts_with("# Incident report: container recovery of db"),
        "{md}"
    );
    assert!(md.contains("| restore | done |"), "{md}");
    assert!(md.contains("Recovery time achieved"), "{md}");
    let out = zdr(
        &config,
        &["recover", "rollback", "recovery-db-19700101t000000000z"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no recovery recovery-db-19700101t000000000z"),
        "{}",
        text(&out)
    );
    let id = v["report"]["id"].as_str().unwrap();
    let out = zdr(&config, &["recover", "rollback", id], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("kept nothing aside"), "{}", text(&out));
}

/// `zdr restore` of a redis in a container, killed (abort, as `kill -9`) after the container
/// was stopped and again after the files were swapped: the container stays down, and the next
/// command on the component (a backup) starts it again, saying so; nothing of the restore is
/// left in the volume. A wrong password is refused before anything is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restore_killed_while_its_container_is_down_is_repaired_by_the_next_run() {
    use std::os::unix::process::ExitStatusExt;
    let redis = zdr_tests::containers::RedisStack::start("zdrt-cli-redis", PASSWORD)
        .await
        .unwrap();
    redis
        .cli(&[
            "EVAL",
            "for i=1,500 do redis.call('SET','k'..i,i) end return 1",
            "0",
        ])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{root}/tier\"\n\
             [components.db]\ntype = \"redis\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             bin_dir = \"/nonexistent/zdr-no-client-tools\"\n\
             runner = \"docker\"\ncontainer = \"{name}\"\n",
            root = dir.path().display(),
            port = redis.port,
            name = redis.name,
        ),
    )
    .unwrap();
    let out = zdr(&config, &["--json", "backup", "db"], None);
    assert!(out.status.success(), "{}", text(&out));
    let first: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = first["backup"]["id"].as_str().unwrap().to_owned();

    // A wrong password: refused before the container is stopped.
    let started = redis.docker.status(&redis.name).await.unwrap().started_at;
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(&config)
        .args(["--no-progress", "restore", "db", "--no-safety-copy"])
        .env("ZDR_COMPONENTS__DB__PASSWORD", "not-the-password")
        .env_remove("ZDR_FAILPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("not-the-password"), "{}", text(&out));
    let status = redis.docker.status(&redis.name).await.unwrap();
    assert!(status.running && status.started_at == started, "{status:?}");
    // Only PostgreSQL recovers from a base backup and WAL.
    let out = zdr(
        &config,
        &[
            "recover",
            "container",
            "db",
            "--dry-run",
            "--method",
            "physical",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not postgres"), "{}", text(&out));

    for point in ["redis-after-stop", "redis-after-swap"] {
        redis.cli(&["SET", "k1", "changed"]).await.unwrap();
        let out = zdr(
            &config,
            &["restore", "db", "--backup", &first, "--no-safety-copy"],
            Some(point),
        );
        assert_eq!(out.status.signal(), Some(6), "{point}: {}", text(&out));
        assert!(
            !redis.docker.status(&redis.name).await.unwrap().running,
            "{point}: the container is down"
        );
        let out = zdr(&config, &["backup", "db"], None);
        assert!(out.status.success(), "{point}: {}", text(&out));
        assert!(
            text(&out).contains("interrupted restore"),
            "{point}: {}",
            text(&out)
        );
        assert!(redis.docker.status(&redis.name).await.unwrap().running);
        assert_eq!(redis.cli(&["DBSIZE"]).await.unwrap(), "500", "{point}");
        // Killed after the swap, the first backup's data is in place; killed before, the data
        // as it was.
        let k1 = redis.cli(&["GET", "k1"]).await.unwrap();
        let expected = if point == "redis-after-swap" {
            "1"
        } else {
            "changed"
        };
        assert_eq!(k1, expected, "{point}");
        let files = redis.sh("ls -a /data").await.unwrap();
        assert!(
            !files.contains(".zdr-restore-") && !files.contains(".zdr-new-"),
            "{point}: {files}"
        );
    }
}

/// Runs `statement` until it returns `want` (PostgreSQL applies a change a moment later).
async fn wait_sql(pg: &PgStack, statement: &str, want: &str) {
    for _ in 0..200 {
        if pg.sql(statement).await.ok().as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{statement} never returned {want}");
}

/// The runbook's single-container scenario with WAL archiving on: PostgreSQL in its container
/// archives through the zdr binary mounted into it, a base backup is taken with the tools of
/// the container, and the lost container comes back from the base backup and the archive —
/// first to the end of the archive (every archived commit back), then, lost again, to an exact
/// time (nothing after it). A damaged base backup is refused before the server ever starts,
/// and the next run completes the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_container_comes_back_from_a_base_backup_and_the_wal_archive() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tier = dir.path().join("tier");
    std::fs::create_dir_all(tier.join(".zdr-tmp")).unwrap();
    // The server's user in the image (uid 999) runs archive_command: the tier is its.
    let chown = Command::new("chown")
        .args(["-R", "999:999"])
        .arg(&tier)
        .status()
        .unwrap();
    assert!(chown.success());
    let config = dir.path().join("zdr.toml");
    let write_config = |port: u16, name: &str, app: &str| {
        std::fs::write(
            &config,
            format!(
                "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{root}\"\n\
                 [components.db]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
                 user = \"postgres\"\ndatabase = \"app\"\nbin_dir = \"/nonexistent/zdr-no-client-tools\"\n\
                 runner = \"docker\"\ncontainer = \"{name}\"\ndependents = [\"{app}\"]\n",
                root = tier.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    // Mounted into the container, so it must exist first; the port is known once it runs
    // (the file is rewritten in place, which the mount shows).
    write_config(1, "db", "app");
    let zdr_bin = env!("CARGO_BIN_EXE_zdr");
    let archive_command = "archive_command=/usr/local/bin/zdr --config /etc/zdr/zdr.toml --no-progress wal push --component db %p";
    let pg = PgStack::start_with(
        "zdrt-cli-physical",
        PASSWORD,
        vec![
            format!("{zdr_bin}:/usr/local/bin/zdr:ro"),
            format!("{}:/etc/zdr/zdr.toml:ro", config.display()),
            format!("{}:{}", tier.display(), tier.display()),
        ],
        Some(
            [
                "postgres",
                "-c",
                "wal_level=replica",
                "-c",
                "archive_mode=on",
                "-c",
                archive_command,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        ),
    )
    .await
    .unwrap();
    write_config(pg.port, &pg.name, &pg.app);
    pg.sql(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    )
    .await
    .unwrap();
    // A logical backup first, then the base backup (pg_basebackup inside the container).
    let out = zdr(&config, &["backup", "db"], None);
    assert!(out.status.success(), "{}", text(&out));
    let out = zdr(&config, &["--json", "backup", "db", "--base"], None);
    assert!(out.status.success(), "{}", text(&out));
    let base: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(base["backup"]["facts"]["kind"], "base", "{base}");
    assert_eq!(
        base["backup"]["facts"]["container"]["name"], pg.name,
        "the base backup records the container's spec: {base}"
    );
    let base_key = base["backup"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|a| a["size"].as_u64().unwrap())
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    pg.sql("INSERT INTO items SELECT g, 'second' FROM generate_series(1001, 2000) g")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let between = pg.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    pg.sql("INSERT INTO items SELECT g, 'third' FROM generate_series(2001, 3000) g")
        .await
        .unwrap();
    // Everything so far archived: the segment switched and stored.
    let segment = pg
        .sql("SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s")
        .await
        .unwrap();
    wait_sql(
        &pg,
        &format!("SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver"),
        "t",
    )
    .await;

    // The container and its volume lost. The plan: base backup and WAL, not the logical one.
    pg.lose_container_and_volume().await.unwrap();
    let out = zdr(
        &config,
        &["--json", "recover", "container", "db", "--dry-run"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["backup"]["kind"], "physical", "{v}");
    assert_eq!(v["plan"]["backup"]["id"], base["backup"]["id"], "{v}");
    assert!(v["plan"]["wal"]["segments"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["plan"]["wal"]["target"], "the end of the archive", "{v}");

    // A damaged base backup: refused while it streams in; the server never starts on it.
    let path = tier.join(&base_key);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let out = zdr(
        &config,
        &[
            "recover",
            "container",
            "db",
            "--method",
            "physical",
            "--no-backup",
        ],
        None,
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("| restore | FAILED |"),
        "{}",
        text(&out)
    );
    let status = pg.docker.status(&pg.name).await.unwrap();
    assert!(
        !status.running,
        "the container started on a damaged base backup"
    );
    assert!(
        status.started_at.is_none_or(|s| s.timestamp() < 0),
        "{status:?}"
    );
    std::fs::write(&path, &good).unwrap();

    // The next run completes it: every archived commit is back, the server is a primary
    // again, the recovery settings and the staged WAL are gone.
    let out = zdr(
        &config,
        &["recover", "container", "db", "--no-backup"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("the end of the archive"), "{report}");
    assert_eq!(pg.sql("SELECT count(*) FROM items").await.unwrap(), "3000");
    assert_eq!(pg.sql("SELECT pg_is_in_recovery()").await.unwrap(), "f");
    assert_eq!(pg.sql("SHOW restore_command").await.unwrap(), "");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_ls_dir('.') d WHERE d IN ('zdr-restore-wal', 'recovery.signal', 'zdr-recovery.conf')")
            .await
            .unwrap(),
        "0"
    );
    let app = pg.docker.status(&pg.app).await.unwrap();
    assert!(app.running, "{app:?}");

    // Written on the new timeline and archived, then lost again: recovered to the time
    // between the second and the third batch, across the timeline switch.
    pg.sql("INSERT INTO items VALUES (5000, 'new timeline')")
        .await
        .unwrap();
    let segment = pg
        .sql("SELECT pg_walfile_name(pg_current_wal_lsn()) FROM (SELECT pg_switch_wal()) s")
        .await
        .unwrap();
    wait_sql(
        &pg,
        &format!("SELECT last_archived_wal >= '{segment}' FROM pg_stat_archiver"),
        "t",
    )
    .await;
    pg.lose_container_and_volume().await.unwrap();
    let at = format!("before:{between}");
    let out = zdr(
        &config,
        &[
            "--json",
            "recover",
            "container",
            "db",
            "--no-backup",
            "--backup",
            &at,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let restored = &v["report"]["restored"];
    assert_eq!(restored["kind"], "physical", "{v}");
    assert!(
        restored["target"].as_str().unwrap().starts_with("time "),
        "{v}"
    );
    let to = restored["recovered_to"].as_str().unwrap();
    assert!(to <= between.as_str(), "recovered to {to}, after {between}");
    assert_eq!(pg.sql("SELECT count(*) FROM items").await.unwrap(), "2000");
    assert_eq!(pg.sql("SELECT pg_is_in_recovery()").await.unwrap(), "f");
    // The report is stored with the rest.
    assert!(tier.join("reports").exists());

    // The full-system scenario to the same time: lost once more, `zdr recover system --at`
    // rolls the base backup forward to exactly that time (not the logical backup's moment).
    // (Nothing of the newest timeline is archived yet, and the first timeline's later
    // segments belong to a branch abandoned at the time: neither is needed.)
    pg.sql("INSERT INTO items VALUES (6000, 'third timeline')")
        .await
        .unwrap();
    pg.lose_container_and_volume().await.unwrap();
    let system = |extra: &[&str]| {
        let mut args = vec![
            "--json", "recover", "system", "--from", "local", "--at", &between,
        ];
        args.extend_from_slice(extra);
        zdr(&config, &args, None)
    };
    let out = system(&["--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let planned = &v["plan"]["components"][0];
    assert_eq!(planned["backup"], base["backup"]["id"], "{v}");
    assert!(planned["wal"]["segments"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(planned["skew_seconds"], 0, "{v}");
    assert!(
        pg.docker.status(&pg.name).await.is_err(),
        "the plan touched it"
    );
    let out = system(&["--no-backup"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["report"]["components"][0];
    assert_eq!(c["backup"], base["backup"]["id"], "{v}");
    assert_eq!(c["restored"]["kind"], "physical", "{v}");
    assert_eq!(c["skew_seconds"], 0, "{v}");
    let to = c["restored"]["recovered_to"].as_str().unwrap();
    assert!(to <= between.as_str(), "recovered to {to}, after {between}");
    assert_eq!(pg.sql("SELECT count(*) FROM items").await.unwrap(), "2000");
    assert_eq!(pg.sql("SELECT pg_is_in_recovery()").await.unwrap(), "f");
    assert!(pg.docker.status(&pg.app).await.unwrap().running);
}
