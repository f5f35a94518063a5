//! `FilesComponent` through zdr-storage's `Repository`: zstd-compressed artifacts on the
//! memory tier, the manifest written by the storage layer, restore after its checksum check.

use std::fs;

use zdr_core::{Component, Compression, Progress, RestoreTarget, Verifier};
use zdr_files::{FilesComponent, FilesFacts};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_through_the_repository() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    fs::create_dir_all(src.join("nginx"))?;
    fs::write(src.join("nginx/site.conf"), "server { listen 443; }\n")?;
    fs::write(src.join("app.env"), "KEY=value\n".repeat(10_000))?;
    std::os::unix::fs::symlink("nginx/site.conf", src.join("site"))?;

    let tier = open_tier("mem", &TierConfig::Memory)?;
    let repo = Repository::new(
        tier,
        PipelineOptions {
            compression: Compression::Zstd,
            ..PipelineOptions::default()
        },
    );
    let comp = FilesComponent::new(Component::new("configs")?, src.clone());
    let manifest = repo.backup(&comp, "daily", &Progress::none()).await?;
    assert_eq!(manifest.artifacts.len(), 1);
    assert!(
        manifest.artifacts[0].key.ends_with(".tar.zst"),
        "{}",
        manifest.artifacts[0].key
    );
    assert!(manifest.artifacts[0].size < manifest.artifacts[0].raw_size);
    assert_eq!(FilesFacts::from_manifest(&manifest)?.file_count, 2);

    // The catalog (rebuilt from the tier) hands back the same manifest.
    let catalog = repo.catalog().await?;
    let latest = catalog
        .latest(&manifest.component)
        .ok_or("no backup in the catalog")?;
    let dst = tmp.path().join("restored");
    let target = RestoreTarget {
        path: Some(dst.clone()),
        ..RestoreTarget::default()
    };
    let outcome = repo
        .restore(&comp, latest, &target, &Progress::none())
        .await?;
    assert_eq!(outcome.items, 3);
    assert_eq!(
        fs::read(dst.join("app.env"))?,
        fs::read(src.join("app.env"))?
    );
    assert_eq!(
        fs::read_link(dst.join("site"))?,
        fs::read_link(src.join("site"))?
    );
    let report = comp.verify(latest, &target).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}
