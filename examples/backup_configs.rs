//! Back up a config directory to a local tier, replicate it, and restore it somewhere else:
//! the runbook's "Configs" tier in a dozen lines of library use.
//!
//! ```text
//! cargo run -p zdr-examples --example backup_configs -- /etc/zentoria /var/backups/zdr
//! ```

use std::path::PathBuf;

use zdr::core::{BackupSelector, Component, Progress, RestoreTarget, Verifier};
use zdr::files::FilesComponent;
use zdr::storage::{PipelineOptions, Repository, RetryPolicy, TierConfig, open_tier};

/// Back up `source` to a local tier at `backups`, replicate it to an offsite tier in
/// `scratch`, restore the latest backup from the offsite tier alone into `scratch/restored`
/// and verify it; returns the verification.
pub async fn backup_configs(
    source: PathBuf,
    backups: PathBuf,
    scratch: &std::path::Path,
) -> zdr::Result<zdr::VerifyReport> {
    // A tier, a repository (zstd by default), and the component to back up.
    let local = open_tier("local", &TierConfig::Fs { root: backups })?;
    let repo = Repository::new(local.clone(), PipelineOptions::default());
    let configs = FilesComponent::new(Component::new("configs")?, source);

    let manifest = repo.backup(&configs, "daily", &Progress::none()).await?;
    println!(
        "backed up {} ({} bytes stored)",
        manifest.id,
        manifest.stored_size()
    );

    // Offsite copy, read back and checked.
    let offsite = open_tier(
        "offsite",
        &TierConfig::Fs {
            root: scratch.join("offsite"),
        },
    )?;
    let report =
        zdr::storage::replicate(&local, &offsite, &RetryPolicy::default(), &Progress::none())
            .await?;
    println!("replicated {} backup(s)", report.copied.len());

    // Restore the latest backup from the offsite tier alone, then verify the files.
    let offsite_repo = Repository::new(offsite, PipelineOptions::default());
    let catalog = offsite_repo.catalog().await?;
    let latest = catalog.select(&Component::new("configs")?, &BackupSelector::Latest)?;
    let target = RestoreTarget {
        path: Some(scratch.join("restored")),
        ..Default::default()
    };
    let outcome = offsite_repo
        .restore(&configs, latest, &target, &Progress::none())
        .await?;
    let report = configs.verify(latest, &target).await?;
    println!(
        "restored {} files into {}; verification problems: {}",
        outcome.items,
        outcome.target,
        report.problems.len()
    );
    Ok(report)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> zdr::Result<()> {
    let mut args = std::env::args().skip(1);
    let scratch = tempfile::tempdir().map_err(|e| zdr::Error::from_io(e, "tempdir"))?;
    let source = args
        .next()
        .map_or_else(|| PathBuf::from("examples"), PathBuf::from);
    let backups = args
        .next()
        .map_or_else(|| scratch.path().join("backups"), PathBuf::from);
    backup_configs(source, backups, scratch.path())
        .await
        .map(|_| ())
}
