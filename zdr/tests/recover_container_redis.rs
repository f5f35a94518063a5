//! Redis in a container (`runner = "docker"`) against the real engine: a Redis container
//! (the image of `scripts/build-test-images.sh`, `--requirepass` and `--appendonly yes` on
//! its command line, `/data` on a named volume) and an app container that depends on it.
//! The physical restore goes into the container (RDB copied in, container stopped, files
//! swapped on its volume with the old ones kept aside, started, key counts checked) with no
//! data directory or tools on the host; a restore killed while the container was down is
//! repaired by the next; a drill restores into a throwaway copy; and the runbook's
//! single-container scenario brings back a container whose volume was lost, its password
//! coming from the component's config.

use std::time::Duration;

use zdr::recover::{ContainerRecoveryOptions, StepStatus, container_spec_of};
use zdr::{BackupOptions, Config, ErrorKind, Progress, RestoreOptions, Stack};
use zdr_core::{Error, Result};
use zdr_tests::containers::{REDIS_IMAGE, RedisStack};

const PASSWORD: &str = "pw-redis-container-test-7c21";

fn config(dir: &std::path::Path, port: u16, runner: &str) -> Result<Config> {
    let text = format!(
        r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.cache]
type = "redis"
host = "127.0.0.1"
port = {port}
bin_dir = "/nonexistent/zdr-no-host-client-tools"
{runner}
"#,
        root = dir.display()
    );
    Config::parse(
        &text,
        "test",
        [(
            "ZDR_COMPONENTS__CACHE__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        )]
        .into_iter(),
    )
}

async fn fill(redis: &RedisStack) -> Result<()> {
    redis
        .cli(&[
            "EVAL",
            "for i=1,3000 do redis.call('SET','key:'..i,'value '..i) end \
             redis.call('HSET','profile','name','ada','lang','rust') \
             redis.call('SET','session','s1','EX','86400') return 1",
            "0",
        ])
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_in_a_container_is_restored_drilled_and_recovered_through_the_engine() -> Result<()> {
    let redis = RedisStack::start("zdrt-redis", PASSWORD).await?;
    let (docker, name, app) = (redis.docker.clone(), redis.name.clone(), redis.app.clone());
    fill(&redis).await?;
    assert_eq!(redis.cli(&["DBSIZE"]).await?, "3002");

    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let runner = format!("runner = \"docker\"\ncontainer = \"{name}\"\ndependents = [\"{app}\"]");
    let stack = Stack::open(config(dir.path(), redis.port, &runner)?).await?;

    // The backup (RDB over the replication protocol) records the container's spec, with the
    // command-line password by name only.
    let backup = stack
        .backup("cache", &BackupOptions::default(), &Progress::none())
        .await?;
    let spec = container_spec_of(&backup.backup)
        .ok_or_else(|| Error::unexpected("the backup did not record the container spec"))?;
    assert_eq!(spec.image, REDIS_IMAGE);
    assert!(
        spec.secret_args.iter().any(|a| a == "REQUIREPASS"),
        "{:?}",
        spec.secret_args
    );
    let manifest_text = String::from_utf8_lossy(&backup.backup.to_json()?).into_owned();
    assert!(!manifest_text.contains(PASSWORD), "the password leaked");

    // A restore into the live container: the data changed since the backup comes back.
    redis.cli(&["FLUSHALL"]).await?;
    redis.cli(&["SET", "written-after", "1"]).await?;
    let started_before = docker.status(&name).await?.started_at;
    let restored = stack
        .restore(
            "cache",
            &RestoreOptions {
                no_safety_copy: true,
                ..RestoreOptions::default()
            },
            &Progress::none(),
        )
        .await?;
    assert!(restored.is_ok(), "{restored:?}");
    assert_eq!(redis.cli(&["DBSIZE"]).await?, "3002");
    assert_eq!(redis.cli(&["GET", "key:2999"]).await?, "value 2999");
    assert_eq!(redis.cli(&["HGET", "profile", "lang"]).await?, "rust");
    assert_eq!(redis.cli(&["EXISTS", "written-after"]).await?, "0");
    let status = docker.status(&name).await?;
    assert!(status.running && status.started_at > started_before);
    // The old files are kept aside in the volume; the new AOF set is what redis loaded
    // (appendonly yes), and nothing of the restore is left behind.
    let files = redis.sh("ls -a /data; ls /data/appendonlydir").await?;
    assert!(files.contains("dump.rdb.zdr-old-"), "{files}");
    assert!(files.contains("appendonlydir.zdr-old-"), "{files}");
    assert!(files.contains("appendonly.aof.1.base.rdb"), "{files}");
    assert!(!files.contains(".zdr-restore-"), "{files}");
    // Owned by the redis user, as the server wrote them.
    assert_eq!(
        redis
            .sh("stat -c %U /data/dump.rdb /data/appendonlydir")
            .await?,
        "redis\nredis"
    );
    // Written again after the restart: redis appends to the new set.
    redis.cli(&["SET", "after-restore", "yes"]).await?;

    // A restore killed while the container was down (journal written, container stopped,
    // the RDB moved aside, nothing in its place) is repaired by the next restore, which then
    // completes.
    docker.stop(&name, Some(Duration::from_secs(10))).await?;
    docker
        .run_on_volumes_of(
            &name,
            REDIS_IMAGE,
            "printf 'restore of x at y\\ndump.rdb\\nappendonlydir\\n' > /data/.zdr-restore-journal; \
             mv /data/dump.rdb /data/dump.rdb.zdr-old-29990101_000000",
            "the state of a killed restore",
        )
        .await?;
    let sink = std::sync::Arc::new(zdr_core::RecordingSink::default());
    let repaired = stack
        .restore(
            "cache",
            &RestoreOptions {
                no_safety_copy: true,
                ..RestoreOptions::default()
            },
            &Progress::new(sink.clone()),
        )
        .await?;
    assert!(
        repaired
            .outcome
            .notes
            .iter()
            .any(|n| n.contains("repaired an interrupted restore of x")),
        "{:?}",
        repaired.outcome.notes
    );
    assert_eq!(redis.cli(&["DBSIZE"]).await?, "3002");
    assert!(
        !redis
            .sh("ls -a /data")
            .await?
            .contains(".zdr-restore-journal"),
        "the journal was left"
    );

    // A container stopped by someone else (no journal) is not started by a restore: refused,
    // and it stays stopped.
    docker.stop(&name, Some(Duration::from_secs(10))).await?;
    let e = stack
        .restore(
            "cache",
            &RestoreOptions {
                no_safety_copy: true,
                ..RestoreOptions::default()
            },
            &Progress::none(),
        )
        .await
        .err()
        .ok_or_else(|| Error::unexpected("restored into a stopped container"))?;
    assert!(e.to_string().contains("is not running"), "{e}");
    assert!(!docker.status(&name).await?.running);
    docker.start(&name).await?;
    docker
        .wait_healthy(&name, None, Duration::from_secs(60))
        .await?;

    let options = ContainerRecoveryOptions {
        health_timeout: Duration::from_secs(120),
        ..ContainerRecoveryOptions::default()
    };
    // A drill against a throwaway copy: restored and verified, removed; the live container
    // untouched.
    redis.cli(&["SET", "live-marker", "yes"]).await?;
    let live_start = docker.status(&name).await?.started_at;
    let drill = stack
        .drill_container("cache", &options, &Progress::none())
        .await?;
    assert!(drill.ok, "{drill:#?}");
    assert_eq!(
        docker
            .status(&drill.container)
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound),
        "the drill copy was not removed"
    );
    assert_eq!(docker.status(&name).await?.started_at, live_start);
    assert_eq!(redis.cli(&["GET", "live-marker"]).await?, "yes");

    // The runbook's scenario: the container killed and removed, its volume lost.
    redis.lose_container_and_volume().await?;
    let app_before = docker.status(&app).await?.started_at;
    let report = stack
        .recover_container("cache", &options, &Progress::none())
        .await?;
    assert!(report.ok, "{report:#?}");
    assert!(
        report.steps.iter().all(|s| s.status == StepStatus::Done),
        "{:#?}",
        report.steps
    );
    let record = report
        .restored
        .clone()
        .ok_or_else(|| Error::unexpected("nothing restored"))?;
    assert!(
        record.problems.is_empty() && record.verified > 0,
        "{record:?}"
    );
    // The newest backup (the drill's source) is the first one: the data as backed up, the
    // password put back from the component's config (the container recreated from its
    // spec answers to it).
    assert_eq!(redis.cli(&["DBSIZE"]).await?, "3002");
    assert_eq!(redis.cli(&["GET", "key:1"]).await?, "value 1");
    assert!(docker.status(&app).await?.started_at > app_before);
    let post = report
        .post_backup
        .clone()
        .ok_or_else(|| Error::unexpected("no fresh backup"))?;
    assert!(
        dir.path()
            .join("tiers/local/manifests/cache")
            .join(format!("{post}.json"))
            .exists()
    );
    let md = std::fs::read_to_string(dir.path().join("tiers/local").join(&report.stored[1]))
        .map_err(|e| Error::from_io(e, "report"))?;
    assert!(!md.contains(PASSWORD));
    Ok(())
}
