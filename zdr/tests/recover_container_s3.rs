//! The runbook's single-container scenario for the stack's object storage: an S3 server in
//! its container (MinIO's credentials variables; SeaweedFS in the test image) with an app
//! depending on it, its buckets backed up by an `s3-bucket` component with
//! `runner = "docker"`; the container is killed and its volume lost; `Stack::recover_container`
//! recreates it from the spec the backup recorded (the secret key from the component, never
//! from the backup), waits until healthy, restores every object, verifies it and restarts the
//! app.

use zdr::recover::{ContainerRecoveryOptions, StepStatus};
use zdr::storage::{S3Config, TierConfig, open_tier};
use zdr::{BackupOptions, Config, Progress, Stack};
use zdr_core::{Error, ErrorKind, Result};
use zdr_tests::containers::S3Stack;

const USER: &str = "zdr-root";
const PASSWORD: &str = "pw-recover-s3-test-5e1d";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_object_store_container_comes_back_with_every_object() -> Result<()> {
    let s3 = S3Stack::start("zdrt-s3", USER, PASSWORD).await?;
    let bucket = S3Config {
        bucket: "uploads".to_owned(),
        endpoint: Some(s3.endpoint()),
        region: Some("us-east-1".to_owned()),
        access_key_id: Some(USER.to_owned()),
        secret_access_key: Some(PASSWORD.to_owned().into()),
        ..S3Config::default()
    };
    zdr::storage::ensure_bucket("test", &bucket).await?;
    let uploads = open_tier("uploads", &TierConfig::S3(bucket.clone()))?;
    let mut objects = Vec::new();
    for i in 0..40u32 {
        let key = format!("tenant-{}/doc-{i:03}.txt", i % 3);
        let body = format!("document {i} ")
            .repeat(1 + (i as usize) * 50)
            .into_bytes();
        uploads.write_all(&key, body.clone()).await?;
        objects.push((key, body));
    }

    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let text = format!(
        r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tier"

[components.objects]
type = "s3-bucket"
endpoint = "{endpoint}"
region = "us-east-1"
buckets = ["uploads"]
access_key_id = "{USER}"
runner = "docker"
container = "{name}"
dependents = ["{app}"]
"#,
        root = dir.path().display(),
        endpoint = s3.endpoint(),
        name = s3.name,
        app = s3.app,
    );
    let config = Config::parse(
        &text,
        "test",
        [(
            "ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY".to_owned(),
            PASSWORD.to_owned(),
        )]
        .into_iter(),
    )?;
    let stack = Stack::open(config).await?;
    let backup = stack
        .backup("objects", &BackupOptions::default(), &Progress::none())
        .await?;
    assert_eq!(backup.backup.facts["objects"], 40);
    // The container's spec is in the backup, its secret by name only.
    let spec = &backup.backup.facts["container"];
    assert_eq!(spec["name"], s3.name.as_str(), "{spec}");
    assert!(!spec.to_string().contains(PASSWORD), "{spec}");

    // Nothing failed yet: the running, healthy container is not replaced.
    let plan = stack
        .plan_container_recovery("objects", &ContainerRecoveryOptions::default())
        .await?;
    assert!(plan.refused.is_some(), "{plan:?}");

    // The failure: the container killed, its volume lost.
    s3.lose_container_and_volume().await?;
    let app_started = s3.docker.status(&s3.app).await?.started_at;
    let plan = stack
        .plan_container_recovery("objects", &ContainerRecoveryOptions::default())
        .await?;
    assert!(plan.refused.is_none(), "{plan:?}");
    assert_eq!(plan.backup.id, backup.backup.id.to_string());
    let report = stack
        .recover_container(
            "objects",
            &ContainerRecoveryOptions::default(),
            &Progress::none(),
        )
        .await?;
    assert!(report.ok, "{report:#?}");
    let steps: Vec<(&str, StepStatus)> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert!(
        steps.iter().all(|(_, s)| *s != StepStatus::Failed)
            && steps
                .iter()
                .any(|(id, s)| *id == "restore" && *s == StepStatus::Done),
        "{steps:?}"
    );
    let restored = report
        .restored
        .as_ref()
        .ok_or_else(|| Error::unexpected("no restore record"))?;
    assert!(restored.problems.is_empty(), "{restored:?}");
    assert_eq!(restored.items, 40, "{restored:?}");

    // Every object is back, byte for byte, in the recreated container (which signs with the
    // component's secret key: the server came back with it).
    let status = s3.docker.status(&s3.name).await?;
    assert!(status.running, "{status:?}");
    for (key, body) in &objects {
        let mut r = uploads.reader(key).await?;
        let mut back = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut r, &mut back)
            .await
            .map_err(|e| Error::from_io(e, "read back"))?;
        assert_eq!(&back, body, "{key}");
    }
    let wrong = S3Config {
        secret_access_key: Some("not-the-secret".to_owned().into()),
        ..bucket
    };
    let e = open_tier("wrong", &TierConfig::S3(wrong))?
        .list("")
        .await
        .err()
        .ok_or_else(|| Error::unexpected("the recreated server took any secret key"))?;
    assert_ne!(e.kind(), ErrorKind::NotFound, "{e}");
    // Its dependent was restarted and runs.
    let app = s3.docker.status(&s3.app).await?;
    assert!(app.running && app.started_at != app_started, "{app:?}");
    // A fresh backup of what was restored closes the recovery; it references every object.
    let newest = stack
        .backup("objects", &BackupOptions::default(), &Progress::none())
        .await?;
    assert_eq!(newest.backup.facts["objects"], 40);
    Ok(())
}
