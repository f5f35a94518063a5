//! The runbook's "single container failure" scenario against the real engine: a PostgreSQL
//! container (the image of `scripts/build-test-images.sh`) with its data on a named volume
//! and an app container that depends on it. The container is killed and removed and its
//! volume lost; `Stack::recover_container` brings it back from the spec its backup recorded,
//! restores and verifies the data, restarts the app and stores the report. A second failure,
//! with the container still there, keeps the failed volume aside. Refusals (no backup yet, a
//! component outside a container) change nothing, and a step that fails (a health timeout)
//! stops the recovery with a report, after which a second run completes it.

use std::time::Duration;

use zdr::recover::{ContainerRecoveryOptions, StepStatus, container_spec_of};
use zdr::{BackupOptions, Config, Progress, Stack};
use zdr_core::{Error, ErrorKind, Result};
use zdr_tests::containers::{PG_IMAGE, PgStack};

const PASSWORD: &str = "pw-recover-container-test-31f9";

fn config(dir: &std::path::Path, port: u16, runner: &str) -> Result<Config> {
    let text = format!(
        r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.db]
type = "postgres"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "app"
bin_dir = "/nonexistent/zdr-no-host-client-tools"
{runner}
"#,
        root = dir.display()
    );
    Config::parse(
        &text,
        "test",
        [(
            "ZDR_COMPONENTS__DB__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        )]
        .into_iter(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_postgres_container_is_recreated_restored_verified_and_its_dependents_restarted()
-> Result<()> {
    let pg = PgStack::start("zdrt-recover", PASSWORD).await?;
    let (docker, name, app, volume, port) = (
        pg.docker.clone(),
        pg.name.clone(),
        pg.app.clone(),
        pg.volume.clone(),
        pg.port,
    );
    pg.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, item text);
         INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 2000) g;",
    )
    .await?;

    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let runner = format!("runner = \"docker\"\ncontainer = \"{name}\"\ndependents = [\"{app}\"]");
    let stack = Stack::open(config(dir.path(), port, &runner)?).await?;
    let options = ContainerRecoveryOptions {
        health_timeout: Duration::from_secs(120),
        ..ContainerRecoveryOptions::default()
    };

    // No backup yet: refused before anything is touched.
    let before = docker.status(&name).await?;
    let e = stack
        .recover_container("db", &options, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recovered without any backup"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("no usable backup of db"), "{e}");
    let after = docker.status(&name).await?;
    assert!(after.running);
    assert_eq!(after.started_at, before.started_at);

    // A component whose tools run on the host has no container to recover.
    let local = Stack::open(config(dir.path(), port, "")?).await?;
    let e = local
        .plan_container_recovery("db", &options)
        .await
        .err()
        .ok_or_else(|| Error::unexpected("planned a container recovery without a container"))?;
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(e.to_string().contains("runner = \"docker\""), "{e}");

    // The backup records the container's spec, the password by name only.
    let backup = stack
        .backup("db", &BackupOptions::default(), &Progress::none())
        .await?;
    let spec = container_spec_of(&backup.backup)
        .ok_or_else(|| Error::unexpected("the backup did not record the container spec"))?;
    assert_eq!(spec.name, name);
    assert_eq!(spec.image, PG_IMAGE);
    assert!(
        spec.env
            .iter()
            .any(|v| v.name == "POSTGRES_PASSWORD" && v.secret && v.value.is_none()),
        "{:?}",
        spec.env
    );
    let manifest_text = String::from_utf8_lossy(&backup.backup.to_json()?).into_owned();
    assert!(
        !manifest_text.contains(PASSWORD),
        "the password leaked into the manifest"
    );

    // The plan, without touching anything.
    let plan = stack.plan_container_recovery("db", &options).await?;
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "remove-failed",
            "keep-volumes",
            "recreate",
            "wait-healthy",
            "restore",
            "dependents",
            "backup"
        ]
    );
    assert_eq!(plan.backup.id, backup.backup.id.to_string());
    assert_eq!(plan.volumes, std::slice::from_ref(&volume));
    assert_eq!(plan.dependents, std::slice::from_ref(&app));
    assert!(plan.container_exists);
    assert!(plan.to_text().contains("wait-healthy"));
    // The container runs and is healthy: the plan says a recovery would be refused, and it is.
    assert!(
        plan.refused
            .as_deref()
            .unwrap_or_default()
            .contains("is running and healthy"),
        "{plan:?}"
    );
    let e = stack
        .recover_container("db", &options, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recovered a healthy container"))?;
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.to_string().contains(&name), "{e}");
    assert_eq!(docker.status(&name).await?.started_at, before.started_at);

    // A drill of the scenario against a throwaway copy: restored and verified, then removed;
    // the live container and its volume untouched.
    let drill = stack
        .drill_container("db", &options, &Progress::none())
        .await?;
    assert!(drill.ok, "{drill:#?}");
    assert!(
        drill.container.contains("-zdr-drill-"),
        "{}",
        drill.container
    );
    assert!(
        drill.steps.iter().all(|s| s.status == StepStatus::Done),
        "{:#?}",
        drill.steps
    );
    let drilled = drill
        .restored
        .clone()
        .ok_or_else(|| Error::unexpected("drill restored nothing"))?;
    assert!(
        drilled.problems.is_empty() && drilled.verified > 0,
        "{drilled:?}"
    );
    assert_eq!(
        docker
            .status(&drill.container)
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::NotFound),
        "the drill copy was not removed"
    );
    assert_eq!(pg.volumes().await?, std::slice::from_ref(&volume));
    assert_eq!(docker.status(&name).await?.started_at, before.started_at);
    assert_eq!(pg.sql("SELECT count(*) FROM orders").await?, "2000");
    assert!(drill.to_markdown().starts_with("# Drill report"));
    assert_eq!(drill.stored.len(), 2);

    // The failure: the container killed and removed, its volume lost.
    pg.lose_container_and_volume().await?;
    let app_before = docker.status(&app).await?.started_at;

    let sink = std::sync::Arc::new(zdr_core::RecordingSink::default());
    let progress = Progress::new(sink.clone());
    let report = stack.recover_container("db", &options, &progress).await?;
    assert!(report.ok, "{:#?}", report);
    let first = report.clone();
    assert!(
        report.steps.iter().all(|s| s.status == StepStatus::Done),
        "{:#?}",
        report.steps
    );
    let restored = report
        .restored
        .clone()
        .ok_or_else(|| Error::unexpected("nothing restored"))?;
    assert_eq!(restored.backup, backup.backup.id.to_string());
    assert!(
        restored.problems.is_empty() && restored.verified > 0,
        "{restored:?}"
    );
    assert!(
        report.kept_aside.is_empty(),
        "a lost volume has nothing to keep"
    );
    assert_eq!(
        pg.sql("SELECT count(*), sum(id) FROM orders").await?,
        "2000|2001000"
    );
    // Recreated from the recorded spec: same image, labels, published port, and the
    // password from the component's config.
    let recreated = docker.spec(&name).await?;
    assert_eq!(
        recreated.labels.get("org.example.role").map(String::as_str),
        Some("database")
    );
    assert_eq!(recreated.ports, spec.ports);
    // The dependent was restarted after the restore.
    let app_after = docker.status(&app).await?;
    assert!(app_after.running);
    assert!(
        app_after.started_at > app_before,
        "{app_after:?} vs {app_before:?}"
    );
    assert_eq!(report.dependents.len(), 1);
    // A fresh backup, and the report on the primary tier (JSON and markdown).
    let post = report
        .post_backup
        .clone()
        .ok_or_else(|| Error::unexpected("no fresh backup"))?;
    assert!(
        dir.path()
            .join("tiers/local/manifests/db")
            .join(format!("{post}.json"))
            .exists()
    );
    assert_eq!(report.stored.len(), 2, "{:?}", report.stored);
    let md = std::fs::read_to_string(dir.path().join("tiers/local").join(&report.stored[1]))
        .map_err(|e| Error::from_io(e, "report"))?;
    assert!(
        md.contains("## Timeline") && md.contains("Root cause"),
        "{md}"
    );
    assert!(md.contains(&backup.backup.id.to_string()), "{md}");
    assert!(!md.contains(PASSWORD));
    let json = std::fs::read_to_string(dir.path().join("tiers/local").join(&report.stored[0]))
        .map_err(|e| Error::from_io(e, "report"))?;
    assert!(!json.contains(PASSWORD));
    assert!(
        sink.messages(zdr_core::Level::Info)
            .iter()
            .any(|m| m.contains("step restore done")),
        "{:?}",
        sink.messages(zdr_core::Level::Info)
    );

    // A second failure, the container still there: a step that fails (no time to become
    // healthy) stops the recovery with a report naming it and what was kept aside ...
    pg.sql("DELETE FROM orders WHERE id > 5").await?;
    docker.kill(&name, "SIGKILL").await?;
    let hurried = ContainerRecoveryOptions {
        health_timeout: Duration::from_millis(1),
        no_backup: true,
        ..ContainerRecoveryOptions::default()
    };
    let failed = stack
        .recover_container("db", &hurried, &Progress::none())
        .await?;
    assert!(!failed.ok);
    let step = failed
        .failed_step()
        .ok_or_else(|| Error::unexpected("no failed step"))?;
    assert_eq!(step.id, "wait-healthy", "{:#?}", failed.steps);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("did not become healthy within"),
        "{failed:?}"
    );
    assert_eq!(failed.kept_aside.len(), 1, "{failed:?}");
    let aside = failed.kept_aside[0].kept_as.clone();
    assert!(docker.volume_exists(&aside).await?, "{aside} was not kept");
    assert!(
        failed
            .steps
            .iter()
            .skip_while(|s| s.id != "wait-healthy")
            .skip(1)
            .all(|s| s.status == StepStatus::NotRun)
    );
    assert!(failed.to_markdown().contains("FAILED"));
    // The failed recovery stays marked unfinished, so the next run continues it even though
    // the container it made may be healthy by then.
    let unfinished = dir.path().join("tiers/local/reports/unfinished/db");
    let marked = || {
        std::fs::read_dir(&unfinished)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(marked(), 1);
    let status = stack.status(None).await?;
    assert!(
        status
            .problems
            .iter()
            .any(|p| p.error.contains(&format!("{} of db", failed.id))
                && p.error.contains("did not finish")),
        "{:?}",
        status.problems
    );
    let plan = stack.plan_container_recovery("db", &options).await?;
    assert!(plan.refused.is_none(), "{plan:?}");
    assert_eq!(plan.unfinished.len(), 1, "{plan:?}");

    // ... and running it again completes it.
    let report = stack
        .recover_container("db", &options, &Progress::none())
        .await?;
    assert!(report.ok, "{report:#?}");
    assert_eq!(pg.sql("SELECT count(*) FROM orders").await?, "2000");
    assert_eq!(marked(), 0, "the markers stay after a successful recovery");
    // It lists first what the failed run kept aside (the damaged data itself), then the
    // volume that run had made, kept aside in turn.
    assert_eq!(report.kept_aside.len(), 2, "{:?}", report.kept_aside);
    assert_eq!(report.kept_aside[0].kept_as, aside);

    // Rollback: the volume the failed recovery kept aside (the damaged data, 5 rows) comes
    // back under its name; the recovered one is kept aside in turn.
    let e = stack
        .rollback_recovery(
            "recovery-db-19700101t000000000z",
            &options,
            &Progress::none(),
        )
        .await
        .err()
        .ok_or_else(|| Error::unexpected("rolled back an unknown recovery"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = stack
        .rollback_recovery(&first.id, &options, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("rolled back a recovery that kept nothing"))?;
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(e.to_string().contains("kept nothing aside"), "{e}");
    let back = stack
        .rollback_recovery(&report.id, &options, &Progress::none())
        .await?;
    assert!(back.ok, "{back:#?}");
    assert_eq!(back.restored.len(), 1);
    assert_eq!(back.displaced.len(), 1);
    assert_eq!(pg.sql("SELECT count(*) FROM orders").await?, "5");
    assert!(docker.volume_exists(&back.displaced[0].kept_as).await?);
    assert!(
        !docker.volume_exists(&aside).await?,
        "the kept volume is back under its name"
    );
    Ok(())
}
