//! The runbook's "full system disaster" scenario against real servers: a PostgreSQL container
//! and a Redis container (each with an app container depending on it) and config files, backed
//! up and replicated to an S3 tier (SeaweedFS); then the host's local tier is wiped, the
//! containers and their volumes are lost and the config directory deleted. `Stack::recover_system` brings everything back from
//! the S3 tier to a target time — refusing first, with nothing touched, a time before the first
//! backup; a run stopped halfway is marked unfinished and continued by the next.

use std::time::Duration;

use zdr::recover::{StepStatus, SystemRecoveryOptions};
use zdr::{BackupOptions, Config, Progress, Stack};
use zdr_core::{Error, ErrorKind, Result};
use zdr_tests::containers::{PgStack, RedisStack};
use zdr_tests::seaweed::SeaweedFs;

const PASSWORD: &str = "pw-recover-system-test-a1c0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_comes_back_from_the_s3_tier_to_a_target_time() -> Result<()> {
    let pg = PgStack::start("zdrt-system", PASSWORD).await?;
    let redis = RedisStack::start("zdrt-system-cache", PASSWORD).await?;
    redis
        .cli(&[
            "EVAL",
            "for i=1,1000 do redis.call('SET','session:'..i,'user '..i) end return 1",
            "0",
        ])
        .await?;
    let s3 = SeaweedFs::start()
        .await
        .map_err(|e| Error::from_io(e, "SeaweedFS"))?;
    pg.sql(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);
         INSERT INTO notes SELECT g, repeat('n', g % 50) FROM generate_series(1, 1500) g;",
    )
    .await?;
    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let live = dir.path().join("live/config");
    std::fs::create_dir_all(live.join("nginx")).map_err(|e| Error::from_io(e, "mkdir"))?;
    let write = |rel: &str, body: &str| {
        std::fs::write(live.join(rel), body).map_err(|e| Error::from_io(e, "write"))
    };
    write("app.env", "MODE=first\n")?;
    write("nginx/site.conf", "server { listen 443; }\n")?;
    let text = format!(
        r#"
primary = "local"
replicate_to = ["offsite"]

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[tiers.offsite]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
root = "/zdr"
access_key_id = "{key}"
secret_access_key = "{secret}"

[components.db]
type = "postgres"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "app"
bin_dir = "/nonexistent/zdr-no-host-client-tools"
runner = "docker"
container = "{name}"
dependents = ["{app}"]

[components.cache]
type = "redis"
host = "127.0.0.1"
port = {cache_port}
runner = "docker"
container = "{cache}"
dependents = ["{cache_app}"]

[components.configs]
type = "files"
path = "{live}"
"#,
        root = dir.path().display(),
        bucket = s3.bucket(),
        endpoint = s3.endpoint(),
        key = s3.access_key_id(),
        secret = s3.secret_access_key(),
        port = pg.port,
        name = pg.name,
        app = pg.app,
        cache_port = redis.port,
        cache = redis.name,
        cache_app = redis.app,
        live = live.display(),
    );
    let config = Config::parse(
        &text,
        "test",
        [
            (
                "ZDR_COMPONENTS__DB__PASSWORD".to_owned(),
                PASSWORD.to_owned(),
            ),
            (
                "ZDR_COMPONENTS__CACHE__PASSWORD".to_owned(),
                PASSWORD.to_owned(),
            ),
        ]
        .into_iter(),
    )?;
    let stack = Stack::open(config).await?;
    let replicate = BackupOptions {
        replicate: true,
        ..BackupOptions::default()
    };
    let db_backup = stack.backup("db", &replicate, &Progress::none()).await?;
    let cache_backup = stack.backup("cache", &replicate, &Progress::none()).await?;
    let first = stack
        .backup("configs", &replicate, &Progress::none())
        .await?;
    // The target time: after the first config backup, before the second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let target = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write("app.env", "MODE=second\n")?;
    stack
        .backup("configs", &replicate, &Progress::none())
        .await?;

    // Nothing has failed yet: a system recovery would replace the running, healthy database
    // container, so it is refused before anything is touched.
    let e = stack
        .plan_system_recovery(&SystemRecoveryOptions::from_tier("offsite"))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("planned to replace a healthy container"))?;
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains("is running and healthy"), "{e}");

    // The system drill: every component into a scratch target, the live ones untouched.
    let started = pg.docker.status(&pg.name).await?.started_at;
    let drill = stack
        .drill_system(
            &zdr::recover::ContainerRecoveryOptions::default(),
            &Progress::none(),
        )
        .await?;
    assert!(drill.ok, "{drill:#?}");
    let drilled: Vec<(&str, StepStatus)> = drill
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        drilled,
        [
            ("drill-db", StepStatus::Done),
            ("drill-cache", StepStatus::Done),
            ("drill-configs", StepStatus::Done)
        ]
    );
    assert_eq!(pg.docker.status(&pg.name).await?.started_at, started);
    assert_eq!(
        std::fs::read_to_string(live.join("app.env")).map_err(|e| Error::from_io(e, "read"))?,
        "MODE=second\n"
    );
    assert!(
        drill
            .to_markdown()
            .starts_with("# Drill report: full system")
    );

    // The disaster: the local tier, the container with its volume and the config files gone.
    std::fs::remove_dir_all(dir.path().join("tiers/local"))
        .map_err(|e| Error::from_io(e, "wipe local tier"))?;
    pg.lose_container_and_volume().await?;
    redis.lose_container_and_volume().await?;
    std::fs::remove_dir_all(&live).map_err(|e| Error::from_io(e, "wipe config"))?;

    // A target time before the first backup: refused, nothing touched.
    let too_early = SystemRecoveryOptions {
        at: Some(zdr_core::parse_time("2001-01-01 00:00:00")?),
        ..SystemRecoveryOptions::from_tier("offsite")
    };
    let e = stack
        .recover_system(&too_early, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recovered to a time before every backup"))?;
    assert!(
        e.to_string().contains(
            "no usable backup of db on tier offsite finished at or before 2001-01-01T00:00:00Z"
        ),
        "{e}"
    );
    assert!(
        !dir.path().join("tiers/local").exists(),
        "the local tier was touched"
    );
    assert_eq!(
        pg.docker.status(&pg.name).await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    let e = stack
        .recover_system(
            &SystemRecoveryOptions::from_tier("nowhere"),
            &Progress::none(),
        )
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recovered from an unknown tier"))?;
    assert!(e.to_string().contains("nowhere"), "{e}");

    // The plan, to the target time: the older config backup, nothing touched.
    let options = SystemRecoveryOptions {
        at: Some(target),
        ..SystemRecoveryOptions::from_tier("offsite")
    };
    let plan = stack.plan_system_recovery(&options).await?;
    let planned: Vec<(&str, &str)> = plan
        .components
        .iter()
        .map(|c| (c.component.as_str(), c.backup.as_str()))
        .collect();
    let (db_id, cache_id, first_id) = (
        db_backup.backup.id.to_string(),
        cache_backup.backup.id.to_string(),
        first.backup.id.to_string(),
    );
    assert_eq!(
        planned,
        [
            ("db", db_id.as_str()),
            ("cache", cache_id.as_str()),
            ("configs", first_id.as_str())
        ]
    );
    assert!(plan.to_text().contains("restore-configs"));
    assert!(
        !dir.path().join("tiers/local").exists(),
        "the plan touched the local tier"
    );

    // The recovery, to the target time — stopped halfway: the config directory cannot be
    // made (its parent is a file), after the database came back.
    let parent = dir.path().join("live");
    std::fs::remove_dir_all(&parent).map_err(|e| Error::from_io(e, "wipe config parent"))?;
    std::fs::write(&parent, "in the way\n").map_err(|e| Error::from_io(e, "obstacle"))?;
    let stopped = stack.recover_system(&options, &Progress::none()).await?;
    assert!(!stopped.ok, "{stopped:#?}");
    let statuses: Vec<(&str, StepStatus)> = stopped
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("fetch", StepStatus::Done),
            ("restore-db", StepStatus::Done),
            ("restore-cache", StepStatus::Done),
            ("restore-configs", StepStatus::Failed),
            ("backup", StepStatus::NotRun)
        ]
    );
    let configs = &stopped.components[2];
    assert_eq!(configs.backup, first.backup.id.to_string());
    assert!(configs.skew_seconds.is_some_and(|s| s >= 1), "{configs:?}");
    assert!(configs.fetched_bytes > 0);
    assert_eq!(
        stopped.components[0].backup,
        db_backup.backup.id.to_string()
    );
    assert!(stopped.components[0].container_recovery.is_some());
    assert!(stopped.components[1].container_recovery.is_some());
    // It is marked unfinished, with the database done; status names it.
    let unfinished = stack.unfinished_system_recoveries().await?;
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    assert_eq!(unfinished[0].1.id, stopped.id);
    assert_eq!(unfinished[0].1.done, ["db", "cache"]);
    let status = stack.status(None).await?;
    assert!(
        status.problems.iter().any(|p| p
            .error
            .contains(&format!("full-system recovery {} ", stopped.id))
            && p.error.contains("did not finish")),
        "{:?}",
        status.problems
    );
    // Another target while it is unfinished: refused, naming it.
    let e = stack
        .plan_system_recovery(&SystemRecoveryOptions::from_tier("offsite"))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("planned another recovery over an unfinished one"))?;
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains(&stopped.id), "{e}");
    // The same command again continues it: the same backups, the database (healthy now, and
    // otherwise refused) not restored twice.
    let plan = stack.plan_system_recovery(&options).await?;
    assert!(
        plan.to_text()
            .contains(&format!("Continues the unfinished recovery {}", stopped.id)),
        "{}",
        plan.to_text()
    );
    std::fs::remove_file(&parent).map_err(|e| Error::from_io(e, "obstacle"))?;
    let report = stack.recover_system(&options, &Progress::none()).await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.continues.as_deref(), Some(stopped.id.as_str()));
    let order: Vec<(&str, StepStatus)> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        order,
        [
            ("fetch", StepStatus::Done),
            ("restore-db", StepStatus::NotRun),
            ("restore-cache", StepStatus::NotRun),
            ("restore-configs", StepStatus::Done),
            ("backup", StepStatus::Done)
        ]
    );
    assert!(stack.unfinished_system_recoveries().await?.is_empty());
    // The data is back: the database in its recreated container, the files as of the target.
    assert_eq!(
        pg.sql("SELECT count(*), sum(length(body)) FROM notes")
            .await?,
        "1500|36750"
    );
    assert_eq!(redis.cli(&["DBSIZE"]).await?, "1000");
    assert_eq!(redis.cli(&["GET", "session:1000"]).await?, "user 1000");
    assert!(redis.docker.status(&redis.app).await?.running);
    assert_eq!(
        std::fs::read_to_string(live.join("app.env")).map_err(|e| Error::from_io(e, "read"))?,
        "MODE=first\n"
    );
    assert!(pg.docker.status(&pg.app).await?.running);
    // The chosen backups are on the local tier now (copied once), with the report.
    let local = dir.path().join("tiers/local");
    assert!(
        local
            .join(format!("manifests/configs/{}.json", first.backup.id))
            .exists()
    );
    assert_eq!(report.stored.len(), 2);
    let md = std::fs::read_to_string(local.join(&report.stored[1]))
        .map_err(|e| Error::from_io(e, "report"))?;
    assert!(md.contains("full system recovery from offsite"), "{md}");
    assert!(!md.contains(PASSWORD));
    Ok(())
}
