//! A Rust service restoring its own database: the latest PostgreSQL backup described by
//! `zdr.toml`, from the first tier that holds it intact (primary, then each replica),
//! restored beside the live database, verified against the manifest's facts, and swapped in
//! (the old database is kept for rollback). Base backups in the catalog are left to
//! point-in-time recovery: `latest` means the newest backup this restore can use.
//!
//! ```text
//! ZDR_COMPONENTS__POSTGRES__PASSWORD=... cargo run -p zdr-examples --example restore_latest_postgres -- /etc/zdr/zdr.toml
//! ```

/// The whole program: load the config, open the stack, restore, report.
pub async fn restore_latest(config: &std::path::Path) -> zdr::Result<zdr::RestoreReport> {
    let stack = zdr::Stack::from_file(config).await?;
    let options = zdr::RestoreOptions::default();
    let report = stack
        .restore("postgres", &options, &zdr::Progress::none())
        .await?;
    println!(
        "restored {} from tier {}: {} table(s), verification {}",
        report.backup.id,
        report.tier,
        report.outcome.items,
        if report.is_ok() { "passed" } else { "FAILED" }
    );
    Ok(report)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> zdr::Result<()> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "zdr.toml".into());
    restore_latest(config.as_ref()).await.map(|_| ())
}
