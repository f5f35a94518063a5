//! A Rust service restoring its own database programmatically: pick the latest backup from
//! the local tier, restore it beside the live database, verify it against the manifest's
//! facts, and swap it in (the old database is kept for `rollback`).
//!
//! ```text
//! PGPASSWORD=... cargo run -p zdr-examples --example restore_postgres -- /var/backups/zdr zentoria_main
//! ```
//! It needs a running PostgreSQL server and a backup made with `zdr backup postgres`.

use zdr_core::{BackupSelector, Component, Progress, RestoreTarget};
use zdr_postgres::{PgConfig, PostgresComponent};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

#[tokio::main]
async fn main() -> zdr_core::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/var/backups/zdr".into());
    let database = args.next().unwrap_or_else(|| "zentoria_main".into());

    let repo = Repository::new(
        open_tier("local", &TierConfig::Fs { root: root.into() })?,
        PipelineOptions::default(),
    );
    let mut config = PgConfig::new("127.0.0.1", 5432, "postgres", database);
    config.password = std::env::var("PGPASSWORD").ok().map(Into::into);
    let pg = PostgresComponent::new(Component::new("postgres")?, config);

    let latest = repo
        .catalog()
        .await?
        .select(pg.component(), &BackupSelector::Latest)?
        .clone();
    // Checksums first, then side database -> verification -> swap.
    let outcome = repo
        .restore(&pg, &latest, &RestoreTarget::default(), &Progress::none())
        .await?;
    println!(
        "restored {} into {}: {:?}",
        latest.id, outcome.target, outcome.notes
    );
    Ok(())
}
