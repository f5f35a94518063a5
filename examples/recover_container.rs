//! The runbook's single-container failure for PostgreSQL, from a service: the lost container
//! comes back from its newest base backup rolled forward through the WAL archive (every
//! archived commit), or to an exact time when one is given; the logical backup when the
//! archive cannot be used (the plan says why). The plan is printed first, then the recovery
//! runs and its incident report is printed (it is stored under `reports/` too).
//!
//! ```text
//! cargo run -p zdr-examples --example recover_container -- /etc/zdr/zdr.toml postgres
//! cargo run -p zdr-examples --example recover_container -- /etc/zdr/zdr.toml postgres "2026-01-16 14:29:59"
//! ```

use std::path::Path;

use zdr::core::BackupSelector;
use zdr::recover::{ContainerRecoveryOptions, RecoveryMethod, RecoveryReport};

/// Recover the container of `component`: to the end of the WAL archive, or to `time`.
pub async fn recover_container(
    config: &Path,
    component: &str,
    time: Option<&str>,
) -> zdr::Result<RecoveryReport> {
    let stack = zdr::Stack::from_file(config).await?;
    let options = ContainerRecoveryOptions {
        backup: match time {
            Some(t) => BackupSelector::Before(zdr::core::parse_time(t)?),
            None => BackupSelector::Latest,
        },
        method: RecoveryMethod::Auto,
        ..ContainerRecoveryOptions::default()
    };
    let plan = stack.plan_container_recovery(component, &options).await?;
    println!("{}", plan.to_text());
    let report = stack
        .recover_container(component, &options, &zdr::Progress::none())
        .await?;
    println!("{}", report.to_markdown());
    match &report.error {
        None => Ok(report),
        Some(e) => Err(zdr::Error::new(
            zdr::core::ErrorKind::Source,
            format!("the recovery stopped: {e}"),
        )),
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> zdr::Result<()> {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "zdr.toml".into());
    let component = args.next().unwrap_or_else(|| "postgres".into());
    let time = args.next();
    recover_container(config.as_ref(), &component, time.as_deref())
        .await
        .map(|_| ())
}
