//! Back up every component of a `zdr.toml` (the runbook's nightly job) and replicate the new
//! backups to the replica tiers, reporting each one; a failing component does not stop the
//! others, and the program fails at the end if any did.
//!
//! ```text
//! cargo run -p zdr-examples --example backup_all -- /etc/zdr/zdr.toml
//! ```

/// Back up each component, then replicate once; returns each component's result.
pub async fn backup_all(
    config: &std::path::Path,
) -> zdr::Result<Vec<(String, zdr::Result<zdr::BackupReport>)>> {
    let stack = zdr::Stack::from_file(config).await?;
    let progress = zdr::Progress::none();
    let mut results = Vec::new();
    for name in stack.config().components.keys() {
        let result = stack
            .backup(name, &zdr::BackupOptions::default(), &progress)
            .await;
        match &result {
            Ok(r) => println!(
                "{name}: {} ({} bytes stored)",
                r.backup.id,
                r.backup.stored_size()
            ),
            Err(e) => println!("{name}: FAILED: {e}"),
        }
        results.push((name.clone(), result));
    }
    if !stack.config().replicate_to.is_empty() {
        let run = stack.replicate(None, &progress).await?;
        for p in &run.pairs {
            println!(
                "{} -> {}: {} copied, {} failed",
                p.from,
                p.to,
                p.copied.len(),
                p.failed.len()
            );
        }
    }
    Ok(results)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> zdr::Result<()> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "zdr.toml".into());
    let results = backup_all(config.as_ref()).await?;
    match results.into_iter().find_map(|(_, r)| r.err()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
