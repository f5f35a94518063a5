//! The command line: every command and flag (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use zdr::pg::pitr::RecoveryTarget;
use zdr::pg::walname::Lsn;
use zdr::{Error, Result};

#[derive(Parser)]
#[command(
    name = "zdr",
    version,
    about = "Disaster recovery for self-hosted stacks",
    after_help = "Exit codes:\n  0        done\n  1        failed (a tier unreachable, a datastore, an unexpected error)\n  2        bad input (config, arguments, unknown names, wrong or missing key, would clobber)\n  3        verification failed (checksums, sidecars, manifests, restored data)\n  4        status: a recovery point objective is missed, or a scheduled job's last run failed\n  130/143  interrupted by SIGINT/SIGTERM (nothing partial is listed)\n  wal fetch: 1 = not in the archive, 255 = any other failure"
)]
pub(crate) struct Cli {
    /// The config file.
    #[arg(long, global = true, env = "ZDR_CONFIG", default_value = "zdr.toml")]
    pub(crate) config: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// No progress bars or progress lines (warnings still go to stderr).
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Back up one component to the primary tier.
    Backup {
        /// The component, as named in the config.
        component: String,
        /// The schedule name (default from the config).
        #[arg(long)]
        schedule: Option<String>,
        /// Replicate to the other tiers afterwards.
        #[arg(long)]
        replicate: bool,
        /// postgres: back up this database instead of the configured one.
        #[arg(long)]
        database: Option<String>,
        /// redis: SCAN + DUMP + PTTL export instead of an RDB snapshot. vault: export the KV
        /// mounts instead of a raft snapshot.
        #[arg(long)]
        logical: bool,
        /// vault: with --logical, allow an export into unencrypted artifacts.
        #[arg(long, requires = "logical")]
        allow_plaintext: bool,
        /// redis: with --logical, only keys matching this glob pattern.
        #[arg(long = "match", requires = "logical")]
        pattern: Option<String>,
        /// redis: with --logical, only this database.
        #[arg(long, requires = "logical")]
        db: Option<u32>,
        /// postgres: a physical base backup of the whole cluster (pg_basebackup), the starting
        /// point of point-in-time recovery, instead of a pg_dump of one database.
        #[arg(long, conflicts_with_all = ["logical", "database"])]
        base: bool,
        /// Wait this long for the component's lock while another run (a prune) holds it
        /// (`30m`, `0s`: not at all; default: `[locks] wait`, 1h).
        #[arg(long, value_parser = parse_duration_arg)]
        wait: Option<std::time::Duration>,
    },
    /// List the backups on each tier.
    List {
        /// Only this tier.
        #[arg(long)]
        tier: Option<String>,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
    },
    /// Re-read every artifact and check sizes, checksums, sidecars and manifests.
    Verify {
        /// Only this component (same as --component).
        #[arg(conflicts_with = "component")]
        target: Option<String>,
        /// Only this tier (default: every tier in the config).
        #[arg(long)]
        tier: Option<String>,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
        /// Also decrypt and decompress every artifact.
        #[arg(long)]
        deep: bool,
        /// postgres: also restore the latest backup into a scratch database, compare it with
        /// the manifest's facts (tables, row counts, checksums), and drop it. redis: load the
        /// latest RDB into a scratch redis-server and compare key counts and DUMP digests.
        #[arg(long)]
        restore: bool,
        /// postgres: check the WAL archive on every WAL tier: gaps and corrupt segments per
        /// timeline (with --deep, every segment is also decoded).
        #[arg(long, conflicts_with = "restore")]
        wal: bool,
    },
    /// Restore a component from the first tier that holds the backup intact.
    Restore {
        /// The component.
        component: String,
        /// latest, previous, before:TIME, or a backup id.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// Restore into this directory instead of the original location.
        #[arg(long)]
        to: Option<PathBuf>,
        /// Replace existing data that differs from the backup.
        #[arg(long)]
        overwrite: bool,
        /// Only read from this tier.
        #[arg(long)]
        tier: Option<String>,
        /// postgres: the database to restore (default: the one the backup was made of).
        #[arg(long)]
        database: Option<String>,
        /// postgres: restore only this table (schema.name) from a custom- or directory-format backup.
        #[arg(long)]
        table: Option<String>,
        /// postgres: with --table, restore it under this name instead of replacing it.
        #[arg(long = "as", requires = "table")]
        as_name: Option<String>,
        /// postgres: drop the live database and restore in its place (no side database, no
        /// rollback). Needs --yes-destroy-live.
        #[arg(long)]
        in_place: bool,
        /// postgres: parallel pg_restore jobs (default: the component's `jobs`, else the
        /// number of cores).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
        jobs: Option<u32>,
        /// Confirm that --in-place may destroy the live database.
        #[arg(long, requires = "in_place")]
        yes_destroy_live: bool,
        /// redis: restore the selected logical (SCAN + DUMP) backup with RESTORE. vault:
        /// import the selected logical KV export.
        #[arg(long)]
        logical: bool,
        /// vault: restore the raft snapshot with snapshot-force (a snapshot of another cluster).
        #[arg(long, conflicts_with = "logical")]
        force: bool,
        /// redis: with --logical, leave existing keys alone (they are reported) instead of
        /// replacing them.
        #[arg(long, requires = "logical")]
        no_replace: bool,
        /// redis: with --logical, only keys matching this glob pattern.
        #[arg(long = "match", requires = "logical")]
        pattern: Option<String>,
        /// redis: replace the live dataset without first taking a safety copy of it (a backup
        /// with schedule `pre-restore`).
        #[arg(long)]
        no_safety_copy: bool,
        /// vault: with --logical, import the exported mount FROM into the mount TO
        /// (repeatable: `--mount-map secret=secret-copy --mount-map kv=kv2`).
        #[arg(long = "mount-map", requires = "logical", value_parser = parse_mount_map)]
        mount_map: Vec<(String, String)>,
        /// s3-bucket: only this bucket of the backup.
        #[arg(long)]
        bucket: Option<String>,
        /// s3-bucket: only keys under this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// s3-bucket: only this key.
        #[arg(long)]
        key: Option<String>,
        /// s3-bucket: into this bucket (created when missing) instead of the original one.
        #[arg(long)]
        to_bucket: Option<String>,
    },
    /// Remove a component's lock by hand (or with --repository, a prune's lock of a tier): a
    /// run that died without removing it, before its heartbeat goes stale (`[locks] stale`,
    /// 10 minutes; then the next run takes it over).
    Unlock {
        /// The component.
        #[arg(required_unless_present = "repository", conflicts_with = "repository")]
        component: Option<String>,
        /// The repository lock a prune holds on the tier, instead of a component's.
        #[arg(long)]
        repository: bool,
        /// On this tier (default: the primary).
        #[arg(long)]
        tier: Option<String>,
    },
    /// postgres: swap the database replaced by the last restore back in (the current one
    /// is kept, so rolling back again undoes the rollback).
    Rollback {
        /// The component.
        component: String,
        /// The database (default: the configured one).
        #[arg(long)]
        database: Option<String>,
    },
    /// Copy backups missing on the replica tiers (primary → first → second ...).
    Replicate {
        /// Source tier (default: the chain from the config).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Destination tier.
        #[arg(long, requires = "from")]
        to: Option<String>,
    },
    /// Apply the retention rules ([retention], [components.NAME.retention]) to every tier:
    /// delete the backups no rule keeps (manifest first), WAL no kept base backup needs,
    /// files no manifest names and partial writes of killed runs. The newest backup of each
    /// kind, the newest that verifies, what the point-in-time window needs and what a replica
    /// tier has not received yet are always kept.
    Prune {
        /// Decide and list what would go and why each kept backup is kept; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this component.
        #[arg(long)]
        component: Option<String>,
        /// Only this tier (the others are still read, to know what was replicated).
        #[arg(long)]
        tier: Option<String>,
        /// Wait this long for another prune of a tier, and for a backup or a replication of
        /// a component, to finish (`30m`, `0s`: not at all, the component is left alone;
        /// default: `[locks] wait`, 1h).
        #[arg(long, value_parser = parse_duration_arg)]
        wait: Option<std::time::Duration>,
    },
    /// postgres: the WAL archive, for archive_command and restore_command.
    Wal {
        #[command(subcommand)]
        action: WalAction,
    },
    /// postgres: point-in-time recovery. Restores the newest base backup before the target
    /// into a new data directory, replays archived WAL in a recovery instance on a side port
    /// until the target, and verifies it; the live cluster is untouched unless
    /// --apply-database copies a database across (safe restore, rollback kept).
    Pitr {
        /// The postgres component.
        component: String,
        /// Recover to this time (`2026-01-16 14:29:59`, RFC 3339, or with a zone offset;
        /// plain times are UTC).
        #[arg(long)]
        target_time: Option<String>,
        /// Recover to this WAL location (`0/16B3748`).
        #[arg(long)]
        target_lsn: Option<String>,
        /// Recover to this transaction id.
        #[arg(long)]
        target_xid: Option<String>,
        /// Recover to this restore point (`pg_create_restore_point`).
        #[arg(long)]
        target_name: Option<String>,
        /// `latest`: replay every archived segment.
        #[arg(long, value_parser = ["latest"])]
        target: Option<String>,
        /// Follow this timeline (default: the newest in the archive).
        #[arg(long)]
        timeline: Option<u32>,
        /// Read the base backup from this tier only (default: the primary, then each
        /// replica, falling back when a tier is down or its copy is damaged).
        #[arg(long)]
        tier: Option<String>,
        /// The new data directory (default: under wal.recovery_dir or the temp dir).
        #[arg(long)]
        to: Option<PathBuf>,
        /// The recovery instance's port (default: a free one).
        #[arg(long)]
        port: Option<u16>,
        /// Copy this database from the recovered instance into the live cluster with the
        /// safe restore (side database, verification, swap; the old one is kept).
        #[arg(long)]
        apply_database: Option<String>,
        /// Stop and remove the recovery instance at the end (a PITR drill).
        #[arg(long, conflicts_with = "promote")]
        discard: bool,
        /// Promote the recovered instance to a primary on a new timeline that archives
        /// through the cluster's archive_command (it stays on the side port; point clients at
        /// it or swap it in). Later recoveries follow the new timeline.
        #[arg(long, conflicts_with = "apply_database")]
        promote: bool,
    },
    /// postgres: check that WAL archiving works end to end: settings, then a forced WAL
    /// switch whose segment must reach every WAL tier.
    Check {
        /// The postgres component.
        component: String,
        /// Seconds to wait for the segment (default: wal.archive_wait_secs, 60).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// The newest backup of every component, and the age of the newest archived WAL (RPO).
    Status {
        /// Only this component.
        component: Option<String>,
        /// Also write the figures as Prometheus metrics to this file (atomically), for
        /// node_exporter's textfile collector: backup age, size and duration, recovery point
        /// age, the objective and whether it is missed, WAL archive age.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
    },
    /// A recovery drill. With --sandbox: throwaway data and a local tier (back up, break,
    /// restore, verify, report). With a component: restore its latest backup into a scratch
    /// directory and verify it, leaving live data alone.
    Drill {
        /// Run on throwaway data, without any config.
        #[arg(long, conflicts_with = "component")]
        sandbox: bool,
        /// The component to drill.
        #[arg(required_unless_present_any = ["sandbox", "scenario"])]
        component: Option<String>,
        /// `container`: the single-container recovery against a throwaway copy of the
        /// component's container (its own name, fresh volumes, free ports, no network
        /// aliases), restored, verified and removed; the live container is never touched.
        /// `system`: every component, in recovery order, restored into a scratch target
        /// (a throwaway container copy, a scratch directory, database or server) and verified.
        /// `project`: the containers of the components and those depending on them, copied
        /// onto a private network where the copies answer to the service names; the data
        /// restored and verified, the app copies started against it and waited healthy; all
        /// removed.
        #[arg(long, value_parser = ["container", "system", "project"], conflicts_with = "sandbox")]
        scenario: Option<String>,
        /// With --scenario: seconds the copy may take to become healthy.
        #[arg(long, default_value_t = 120, requires = "scenario")]
        health_timeout: u64,
    },
    /// Write a starter config (the --config path, default ./zdr.toml) from a docker-compose
    /// file: datastores recognised by image, PostgreSQL's tools in its container, dependents
    /// from depends_on, MinIO as an S3 tier, bind-mounted config directories as files
    /// components; password variables named, never copied.
    Init {
        /// The compose file.
        #[arg(long)]
        compose: PathBuf,
        /// The compose project name (default: the file's `name:`, else its directory's).
        #[arg(long)]
        project: Option<String>,
        /// The local tier's directory (default /var/backups/zdr).
        #[arg(long)]
        backup_root: Option<PathBuf>,
        /// Print the config instead of writing it.
        #[arg(long)]
        stdout: bool,
    },
    /// Run unattended: the jobs of [daemon.jobs] (default: the runbook's schedule —
    /// PostgreSQL hourly, Redis every 6 hours, the rest daily, a weekly deep verification,
    /// monthly drills, a quarterly system drill) on their cron schedules, with replication
    /// and pruning after each backup, objectives checked, /metrics served (daemon.listen)
    /// and alerts sent (daemon.webhook, per-job ping URLs). SIGTERM or SIGINT: no new job
    /// starts, running ones get daemon.shutdown_grace to finish; a second signal abandons
    /// them at once.
    Daemon,
    /// Run one of the daemon's jobs now, as the daemon would (replication, pruning, pings,
    /// alerts, its state file): for cron instead of the daemon. Exit 1 when the job failed.
    RunOnce {
        /// The job's name (zdr jobs lists them).
        job: String,
    },
    /// The daemon's jobs: what each does, its schedule, its next time and its last run.
    Jobs,
    /// The runbook's recovery scenarios, each one command (`--dry-run` prints the plan).
    Recover {
        #[command(subcommand)]
        scenario: RecoverScenario,
    },
}

#[derive(Subcommand)]
pub(crate) enum RecoverScenario {
    /// Single container failure: remove the failed container, keep its volumes aside,
    /// recreate it from its spec on fresh volumes, wait until healthy, restore the newest
    /// usable backup and verify it, restart the containers that depend on it, take a fresh
    /// backup; the report is printed and stored under reports/ on the primary tier.
    Container {
        /// The component (with runner = "docker").
        component: String,
        /// Print the plan (steps, preconditions, verifications, timeouts) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Remove the failed volumes instead of keeping them as <volume>-failed-<time>.
        #[arg(long)]
        discard_volume: bool,
        /// No fresh backup after the recovery.
        #[arg(long)]
        no_backup: bool,
        /// Read the backup from this tier only.
        #[arg(long)]
        tier: Option<String>,
        /// Seconds the container and each dependent may take to become healthy.
        #[arg(long, default_value_t = 120)]
        health_timeout: u64,
        /// Recover a container that runs and is healthy (refused by default).
        #[arg(long)]
        force: bool,
        /// latest, previous, before:TIME, or a backup id. PostgreSQL recovered from a base
        /// backup and the WAL archive replays to the end of the archive, or to TIME exactly.
        #[arg(long, default_value = "latest")]
        backup: String,
        /// PostgreSQL: physical (a base backup rolled forward through the WAL archive,
        /// RPO of seconds), logical (the logical backup), or auto (physical when the archive
        /// reaches the moment asked for and is not older than the newest logical backup).
        #[arg(long, default_value = "auto")]
        method: String,
    },
    /// Full system disaster: every component back from one tier (the offsite copy). The
    /// chosen backups are copied once onto the primary tier (checked while copied), then the
    /// data tier comes back in dependency order — vault, postgres, redis, qdrant, config files —
    /// containers recreated from their recorded specs, each restore verified; fresh backups
    /// at the end; the report is printed and stored under reports/.
    System {
        /// The tier to recover from.
        #[arg(long)]
        from: String,
        /// Recover each component to its newest backup finished at or before this time
        /// (`2026-01-16 14:29:59`, RFC 3339; plain times are UTC).
        #[arg(long)]
        at: Option<String>,
        /// No fresh backups after the recovery.
        #[arg(long)]
        no_backup: bool,
        /// Seconds each container and dependent may take to become healthy.
        #[arg(long, default_value_t = 120)]
        health_timeout: u64,
        /// Print the plan (the backup chosen per component, the steps) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace containers that run and are healthy too (refused by default).
        #[arg(long)]
        force: bool,
    },
    /// Undo a container recovery: put the volumes it kept aside back under their names (the
    /// recovered ones are kept aside in turn), recreate the container on them, wait until
    /// healthy, restart the dependents.
    Rollback {
        /// The recovery's id (`recovery-<component>-<time>`, under reports/ on the primary tier).
        recovery: String,
        /// Seconds the container and each dependent may take to become healthy.
        #[arg(long, default_value_t = 120)]
        health_timeout: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum WalAction {
    /// archive_command: `zdr --config PATH wal push --component NAME %p`.
    Push {
        /// The WAL file (PostgreSQL's %p).
        path: PathBuf,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
    /// restore_command: `zdr --config PATH wal fetch --component NAME %f %p`. Exits 1 when
    /// the file is not archived (PostgreSQL ends recovery), 255 on any other failure
    /// (PostgreSQL stops instead of ending recovery early).
    Fetch {
        /// The WAL file name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
    /// Download the segments after AFTER into DIR (started in the background by `fetch`).
    #[command(hide = true)]
    Prefetch {
        /// The segment just fetched.
        after: String,
        /// The prefetch directory.
        dir: PathBuf,
        /// How many segments.
        #[arg(long, default_value_t = 4)]
        count: usize,
        /// The postgres component (default: the only one).
        #[arg(long)]
        component: Option<String>,
    },
}

/// Parse `FROM=TO` for `--mount-map`.
/// A duration such as `30m`, `2h`, `0s`.
pub(crate) fn parse_duration_arg(s: &str) -> std::result::Result<std::time::Duration, String> {
    zdr::core::retention::parse_duration(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_mount_map(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.trim_matches('/').is_empty() && !b.trim_matches('/').is_empty() => {
            Ok((a.to_owned(), b.to_owned()))
        }
        _ => Err(format!("{s:?} is not FROM=TO (such as secret=secret-copy)")),
    }
}

/// The PITR target from the flags: exactly one of them.
pub(crate) fn recovery_target(
    time: Option<&str>,
    lsn: Option<&str>,
    xid: Option<&str>,
    name: Option<&str>,
    latest: bool,
) -> Result<RecoveryTarget> {
    let given = [
        time.is_some(),
        lsn.is_some(),
        xid.is_some(),
        name.is_some(),
        latest,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(Error::bad_input(
            "give exactly one of --target-time, --target-lsn, --target-xid, --target-name, --target latest",
        ));
    }
    if let Some(t) = time {
        return Ok(RecoveryTarget::Time(zdr::core::parse_time(t)?));
    }
    if let Some(l) = lsn {
        return Ok(RecoveryTarget::Lsn(l.parse::<Lsn>()?));
    }
    if let Some(x) = xid {
        if x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::bad_input(format!("invalid transaction id {x:?}")));
        }
        return Ok(RecoveryTarget::Xid(x.to_owned()));
    }
    if let Some(n) = name {
        return Ok(RecoveryTarget::Name(n.to_owned()));
    }
    Ok(RecoveryTarget::Latest)
}
