//! Point-in-time recovery of one database to a moment before an accident: the newest base
//! backup before the time, WAL replayed in a recovery instance on a side port until that
//! time (checked: no commit after it was replayed), then the database copied into the live
//! cluster through the safe restore (side database, verification, swap; the replaced
//! database is kept for rollback), and the recovery instance removed.
//!
//! PostgreSQL's `restore_command` runs the `zdr` binary with the same config.
//!
//! ```text
//! cargo run -p zdr-examples --example pitr_to_time -- /etc/zdr/zdr.toml zentoria_main "2026-01-16 14:29:59" /usr/local/bin/zdr
//! ```

use std::path::Path;

use zdr::pg::pitr::RecoveryTarget;
use zdr::postgres::{PitrFinish, PitrReport, PitrRequest, ZdrCommand};

/// Recover `database` of the `postgres` component to `time`.
pub async fn pitr_to_time(
    config: &Path,
    database: &str,
    time: &str,
    zdr_program: &Path,
) -> zdr::Result<PitrReport> {
    let stack = zdr::Stack::from_file(config).await?;
    let request = PitrRequest {
        target: RecoveryTarget::Time(zdr::core::parse_time(time)?),
        timeline: None,
        tier: None,
        data_dir: None,
        port: None,
        finish: PitrFinish::ApplyDatabase {
            database: database.to_owned(),
            discard: true,
        },
        zdr: ZdrCommand {
            program: zdr_program.to_path_buf(),
            config: std::fs::canonicalize(config)
                .map_err(|e| zdr::Error::from_io(e, "cannot resolve the config path"))?,
        },
    };
    let report = stack
        .pitr("postgres", &request, &zdr::Progress::none())
        .await?;
    println!(
        "{database} recovered to {} from base backup {} (last commit replayed {:?}) in {:.1}s",
        report.target, report.recovery.backup, report.recovery.last_commit, report.rto_seconds
    );
    Ok(report)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> zdr::Result<()> {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "zdr.toml".into());
    let database = args.next().unwrap_or_else(|| "zentoria_main".into());
    let time = args
        .next()
        .ok_or_else(|| zdr::Error::bad_input("give the target time"))?;
    let zdr_program = args.next().unwrap_or_else(|| "/usr/local/bin/zdr".into());
    pitr_to_time(config.as_ref(), &database, &time, zdr_program.as_ref())
        .await
        .map(|_| ())
}
