//! PostgreSQL WAL archiving, base backups, point-in-time recovery, `check` and `status`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use zdr_core::{
    BackupKind, Component, Compression, Error, LocalRunner, Manifest, Progress, Result, StorageTier,
};
use zdr_postgres::basebackup::{BaseBackupFacts, PgBaseBackup};
use zdr_postgres::pitr::{PitrOptions, RecoveryTarget};
use zdr_postgres::wal::{FetchOutcome, WalArchive};
use zdr_postgres::walname::Lsn;
use zdr_storage::open_tier;

use crate::config::{ComponentConfig, Config, PostgresConfig};
use crate::output::human_bytes;
use crate::{Outcome, Output, repository};

/// Exit code of `wal fetch` when the file is not in the archive: PostgreSQL ends recovery.
pub(crate) const EXIT_WAL_MISSING: u8 = 1;
/// Exit code of `wal fetch` for every other failure: above 125, so PostgreSQL stops
/// recovery instead of treating the file as missing.
pub(crate) const EXIT_WAL_FATAL: u8 = 255;

/// The postgres component `name`, or the only one when `name` is `None`.
pub(crate) fn pg_component<'a>(
    config: &'a Config,
    name: Option<&'a str>,
) -> Result<(&'a str, &'a PostgresConfig)> {
    if let Some(n) = name {
        return match config.component(n)? {
            ComponentConfig::Postgres(p) => Ok((n, p)),
            _ => Err(Error::bad_input(format!(
                "component {n:?} is not a postgres component"
            ))),
        };
    }
    let pgs: Vec<(&str, &PostgresConfig)> = config
        .components
        .iter()
        .filter_map(|(n, c)| match c {
            ComponentConfig::Postgres(p) => Some((n.as_str(), p)),
            _ => None,
        })
        .collect();
    match pgs.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::bad_input("the config has no postgres component")),
        _ => Err(Error::bad_input(
            "the config has several postgres components: name one with --component",
        )),
    }
}

/// The WAL archive of a postgres component, on its WAL tiers.
pub(crate) fn archive(config: &Config, name: &str, pg: &PostgresConfig) -> Result<WalArchive> {
    let tiers = match &pg.wal.tiers {
        Some(t) => t.clone(),
        None => config.restore_order(),
    };
    let mut opened: Vec<Arc<dyn StorageTier>> = Vec::new();
    for t in &tiers {
        opened.push(open_tier(t, config.tier(t)?)?);
    }
    let mut options = config.pipeline_options()?;
    options.compression = match &pg.wal.compression {
        Some(c) => c.parse()?,
        None => Compression::Lz4,
    };
    options.level = None;
    let size = pg.wal.segment_size_mb.unwrap_or(16) * 1024 * 1024;
    WalArchive::new(&Component::new(name)?, opened, options, size)
}

/// `zdr wal push PATH`.
pub(crate) async fn push(
    config: &Config,
    component: Option<&str>,
    path: &Path,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, component)?;
    let archive = archive(config, name, pg)?;
    let started = Instant::now();
    let report = archive.push(path, progress).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let text = report
        .tiers
        .iter()
        .map(|t| {
            format!(
                "{} {} on {} ({})",
                if t.stored {
                    "archived"
                } else {
                    "already archived"
                },
                report.name,
                t.tier,
                t.key
            )
        })
        .collect();
    Ok(Outcome::ok(
        text,
        json!({"ok": true, "push": report, "milliseconds": ms}),
    ))
}

/// `zdr wal fetch NAME DEST`: from the prefetch directory beside DEST when a prefetch brought
/// it, else from the tiers; then start a background prefetch of the next segments.
pub(crate) async fn fetch(
    config: &Config,
    config_path: &Path,
    component: Option<&str>,
    file: &str,
    dest: &Path,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, component)?;
    let archive = archive(config, name, pg)?;
    let prefetch_dir = dest
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(".zdr-prefetch");
    match archive
        .fetch_prefetched(file, dest, &prefetch_dir, progress)
        .await?
    {
        FetchOutcome::Fetched { tier, bytes } => {
            let count = pg.wal.prefetch.unwrap_or(4);
            if count > 0 && file.len() == 24 {
                spawn_prefetch(config_path, name, file, &prefetch_dir, count, progress);
            }
            Ok(Outcome::ok(
                vec![format!(
                    "restored {file} from {tier} ({})",
                    human_bytes(bytes)
                )],
                json!({"ok": true, "file": file, "tier": tier, "bytes": bytes}),
            ))
        }
        FetchOutcome::NotFound => Ok(Outcome {
            value: Output {
                text: vec![format!("{file} is not in the archive")],
                json: json!({"ok": false, "file": file, "status": "not_found"}),
            },
            code: EXIT_WAL_MISSING,
        }),
    }
}

/// Start `zdr wal prefetch` detached (own process group, no stdio): PostgreSQL's
/// restore_command returns at once while the next segments download.
fn spawn_prefetch(
    config_path: &Path,
    component: &str,
    after: &str,
    dir: &Path,
    count: usize,
    progress: &Progress,
) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let config_path =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let spawned = std::process::Command::new(exe)
        .arg("--config")
        .arg(config_path)
        .args(["--no-progress", "wal", "prefetch", "--component", component])
        .arg("--count")
        .arg(count.to_string())
        .arg(after)
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        progress.warn(format!("cannot start the WAL prefetch: {e}"));
    }
}

/// `zdr wal prefetch AFTER DIR` (hidden; started by `fetch`).
pub(crate) async fn prefetch(
    config: &Config,
    component: Option<&str>,
    after: &str,
    dir: &Path,
    count: usize,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, component)?;
    let archive = archive(config, name, pg)?;
    let n = archive.prefetch(after, count, dir, progress).await?;
    Ok(Outcome::ok(
        vec![format!("prefetched {n} segment(s) after {after}")],
        json!({"ok": true, "prefetched": n}),
    ))
}

/// `zdr backup NAME --base`.
pub(crate) async fn base_backup(
    config: &Config,
    name: &str,
    schedule: Option<&str>,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, Some(name))?;
    let archive = archive(config, name, pg)?;
    let wait = Duration::from_secs(pg.wal.archive_wait_secs.unwrap_or(60));
    let source =
        PgBaseBackup::new(Component::new(name)?, pg.to_pg(None)?).with_archive(archive, wait);
    let repo = repository(config, &config.primary)?;
    let started = Instant::now();
    let m = repo
        .backup(&source, schedule.unwrap_or(&config.schedule), progress)
        .await?;
    let secs = started.elapsed().as_secs_f64();
    let f = BaseBackupFacts::from_manifest(&m)?;
    Ok(Outcome::ok(
        vec![format!(
            "base backup of {name} as {} on {}: {} stored ({} of data directory) in {secs:.2}s; \
             WAL {} .. {} on timeline {}",
            m.id,
            config.primary,
            human_bytes(m.stored_size()),
            human_bytes(f.tar_bytes),
            f.start_segment,
            f.stop_segment,
            f.timeline
        )],
        json!({"ok": true, "backup": m, "tier": config.primary, "seconds": secs}),
    ))
}

/// The flags of `zdr pitr`.
pub(crate) struct PitrArgs {
    pub target_time: Option<String>,
    pub target_lsn: Option<String>,
    pub target_xid: Option<String>,
    pub target_name: Option<String>,
    pub latest: bool,
    pub timeline: Option<u32>,
    pub to: Option<PathBuf>,
    pub port: Option<u16>,
    pub apply_database: Option<String>,
    pub discard: bool,
    pub promote: bool,
    pub config_path: PathBuf,
}

fn recovery_target(a: &PitrArgs) -> Result<RecoveryTarget> {
    let given = [
        a.target_time.is_some(),
        a.target_lsn.is_some(),
        a.target_xid.is_some(),
        a.target_name.is_some(),
        a.latest,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(Error::bad_input(
            "give exactly one of --target-time, --target-lsn, --target-xid, --target-name, --target latest",
        ));
    }
    if let Some(t) = &a.target_time {
        return Ok(RecoveryTarget::Time(zdr_core::parse_time(t)?));
    }
    if let Some(l) = &a.target_lsn {
        return Ok(RecoveryTarget::Lsn(l.parse::<Lsn>()?));
    }
    if let Some(x) = &a.target_xid {
        if x.is_empty() || !x.chars().all(|c| c.is_ascii_digit()) {
            return Err(Error::bad_input(format!("invalid transaction id {x:?}")));
        }
        return Ok(RecoveryTarget::Xid(x.clone()));
    }
    if let Some(n) = &a.target_name {
        return Ok(RecoveryTarget::Name(n.clone()));
    }
    Ok(RecoveryTarget::Latest)
}

/// A free TCP port on 127.0.0.1 (for throwaway and recovery servers).
pub(crate) fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::from_io(e, "cannot find a free port"))
}

/// Whether zdr runs as root (PostgreSQL servers must then run as another OS user).
pub(crate) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `zdr pitr NAME --target-...`.
pub(crate) async fn pitr(
    config: &Config,
    name: &str,
    args: &PitrArgs,
    progress: &Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let (name, pg) = pg_component(config, Some(name))?;
    let target = recovery_target(args)?;
    let archive = archive(config, name, pg)?;
    let comp = Component::new(name)?;
    let repo = repository(config, &config.primary)?;
    let catalog = repo.catalog().await?;
    let backups: Vec<Manifest> = catalog.list(Some(&comp)).into_iter().cloned().collect();
    let plan = zdr_postgres::pitr::plan(&backups, &archive, &target, args.timeline, Utc::now())
        .await
        .map_err(|e| e.with_context("component", name))?;
    progress.info(format!(
        "recovering {name} to {target} from base backup {} (WAL checked up to {})",
        plan.backup.id, plan.chain_end
    ));
    let exe = std::env::current_exe()
        .map_err(|e| Error::from_io(e, "cannot find the zdr executable for restore_command"))?;
    let config_path = std::fs::canonicalize(&args.config_path).map_err(|e| {
        Error::from_io(e, "cannot resolve the config path for restore_command")
            .with_context("path", args.config_path.display())
    })?;
    let restore_command = format!(
        "{} --config {} --no-progress wal fetch --component {name} %f %p",
        exe.display(),
        config_path.display()
    );
    let data_dir = match &args.to {
        Some(d) => d.clone(),
        None => pg
            .wal
            .recovery_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!(
                "zdr-pitr-{name}-{}",
                Utc::now().format("%Y%m%d_%H%M%S")
            )),
    };
    let options = PitrOptions {
        data_dir,
        port: match args.port {
            Some(p) => p,
            None => free_port()?,
        },
        restore_command,
        timeline: args.timeline,
        run_as: if is_root() {
            pg.wal.run_as.clone()
        } else {
            None
        },
        timeout: Duration::from_secs(pg.wal.recovery_timeout_secs.unwrap_or(3600)),
    };
    let live = pg.to_pg(None)?;
    let runner = LocalRunner::shared(live.bin_dir.as_deref());
    let mut instance =
        zdr_postgres::pitr::recover(&plan, &repo, &live, runner, &target, &options, progress)
            .await
            .map_err(|e| e.with_context("component", name))?;
    let report = instance.report().clone();
    if let RecoveryTarget::Time(t) = &target
        && let Some(c) = report.last_commit
        && c > *t
    {
        let _ = instance.stop().await;
        return Err(Error::integrity(format!(
            "the recovered instance replayed a commit at {c}, after the target {t}"
        )));
    }
    let mut text = vec![format!(
        "recovered {name} to {target}: base {} + WAL to {} (last commit {}), in {:.2}s; \
         instance on 127.0.0.1:{} in {}",
        report.backup,
        report.replay_lsn.as_deref().unwrap_or("?"),
        report
            .last_commit
            .map_or_else(|| "none replayed".to_owned(), |c| c.to_rfc3339()),
        report.seconds,
        report.port,
        report.data_dir.display()
    )];
    let mut value = json!({"ok": true, "recovery": report, "plan": {
        "backup": plan.backup.id, "chain_end": plan.chain_end, "timelines": plan.path}});
    if let Some(db) = &args.apply_database {
        // Copy the database across: a logical backup of it from the recovery instance
        // (kept in the catalog, schedule `pitr`), then the safe restore into the live cluster.
        let res = apply_database(&repo, &instance, &comp, pg.to_pg(Some(db))?, db, progress).await;
        let _ = instance.stop().await;
        let (m, outcome) = res?;
        text.push(format!(
            "applied database {db} to the live cluster through backup {} ({} table(s), {}); \
             the replaced database is kept (zdr rollback {name} --database {db})",
            m.id,
            outcome.items,
            human_bytes(outcome.bytes)
        ));
        text.extend(outcome.notes.iter().map(|n| format!("  note: {n}")));
        value["applied"] = json!({"database": db, "backup": m.id, "outcome": outcome});
        if args.discard {
            instance.discard().await?;
        }
    } else if args.discard {
        instance.discard().await?;
        text.push("recovery instance stopped and removed (--discard)".to_owned());
    } else if args.promote {
        let timeline = instance.promote(progress).await?;
        text.push(format!(
            "promoted: a primary on timeline {timeline} at 127.0.0.1:{} ({}), archiving through \
             the cluster's archive_command; point clients at it or swap it in",
            report.port,
            report.data_dir.display()
        ));
        value["promoted_timeline"] = json!(timeline);
    } else {
        text.push(format!(
            "the instance stays up, paused at the target, for inspection: psql -h 127.0.0.1 -p {} ; \
             stop it with: pg_ctl stop -D {}",
            report.port,
            report.data_dir.display()
        ));
    }
    let rto = started.elapsed().as_secs_f64();
    text.push(format!("RTO {rto:.2}s"));
    value["rto_seconds"] = json!(rto);
    Ok(Outcome::ok(text, value))
}

/// Copy `db` from a recovery instance into the live cluster: a logical backup of it from the
/// instance (kept in the catalog, schedule `pitr`), then the safe restore (side database,
/// facts verified, swap; the replaced database is kept for rollback).
pub(crate) async fn apply_database(
    repo: &zdr_storage::Repository,
    instance: &zdr_postgres::pitr::RecoveryInstance,
    comp: &Component,
    live: zdr_postgres::PgConfig,
    db: &str,
    progress: &Progress,
) -> Result<(Manifest, zdr_core::RestoreOutcome)> {
    let side = zdr_postgres::PostgresComponent::new(comp.clone(), instance.config(db));
    let m = repo.backup(&side, "pitr", progress).await?;
    let live_db = zdr_postgres::PostgresComponent::new(comp.clone(), live);
    let target = zdr_core::RestoreTarget {
        name: Some(db.to_owned()),
        ..zdr_core::RestoreTarget::default()
    };
    let outcome = repo.restore(&live_db, &m, &target, progress).await?;
    Ok((m, outcome))
}

/// `zdr check NAME`: archiving configured as expected, and a forced WAL switch arriving on
/// every tier within the timeout.
pub(crate) async fn check(
    config: &Config,
    name: &str,
    timeout: Option<u64>,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, Some(name))?;
    let archive = archive(config, name, pg)?;
    let live = pg.to_pg(None)?;
    let settings = zdr_postgres::wal_settings(&live).await?;
    let mut problems = Vec::new();
    if settings.archive_mode == "off" {
        problems.push("archive_mode is off (set archive_mode = on and restart)".to_owned());
    }
    if settings.wal_level == "minimal" {
        problems.push("wal_level is minimal (set wal_level = replica)".to_owned());
    }
    if !settings.archive_command.contains("wal push") {
        problems.push(format!(
            "archive_command is {:?}, not zdr's (archive_command = 'zdr --config PATH wal push --component {name} %p')",
            settings.archive_command
        ));
    }
    if !problems.is_empty() {
        return Err(Error::bad_input(format!(
            "{name} is not archiving WAL through zdr: {}",
            problems.join("; ")
        ))
        .with_context("component", name));
    }
    let segment = zdr_postgres::switch_wal(&live).await?;
    let wait = Duration::from_secs(timeout.unwrap_or(pg.wal.archive_wait_secs.unwrap_or(60)));
    let arrived: Vec<serde_json::Value> = archive
        .wait_archived(&segment, wait, progress)
        .await
        .map_err(|e| {
            e.with_context("component", name).with_hint(
                "look for archive_command failures in the PostgreSQL log (pg_stat_archiver shows \
                 the last failure)",
            )
        })?
        .into_iter()
        .map(|(tier, seconds)| json!({"tier": tier, "seconds": seconds}))
        .collect();
    let rpo_bound = (settings.archive_timeout_secs > 0).then_some(settings.archive_timeout_secs);
    let mut text = vec![format!(
        "{name}: archive_mode={}, wal_level={}, archive_timeout={}s, archive_command runs zdr",
        settings.archive_mode, settings.wal_level, settings.archive_timeout_secs
    )];
    match rpo_bound {
        Some(s) => text.push(format!(
            "RPO bound: commits reach the archive within about {s}s plus one push (archive_timeout)"
        )),
        None => progress.warn(
            "archive_timeout is 0: on a quiet server a commit can stay unarchived until its \
             segment fills (no RPO bound); set archive_timeout = 60 for an RPO of about a minute",
        ),
    }
    for a in &arrived {
        text.push(format!(
            "switched segment {segment} arrived on {} after {:.2}s",
            a["tier"].as_str().unwrap_or("?"),
            a["seconds"].as_f64().unwrap_or(0.0)
        ));
    }
    Ok(Outcome::ok(
        text,
        json!({"ok": true, "segment": segment, "settings": settings, "arrived": arrived,
            "rpo_bound_seconds": rpo_bound}),
    ))
}

/// `zdr verify NAME --wal`: gaps and corrupt segments per timeline on every WAL tier.
pub(crate) async fn verify_wal(
    config: &Config,
    name: &str,
    deep: bool,
    progress: &Progress,
) -> Result<Outcome> {
    let (name, pg) = pg_component(config, Some(name))?;
    let archive = archive(config, name, pg)?;
    let mut text = Vec::new();
    let mut tiers = Vec::new();
    let mut bad = false;
    for (i, tier) in archive.tiers().iter().enumerate() {
        let (reports, listing) = archive.verify(i, deep, progress).await?;
        for r in &reports {
            bad |= !r.missing.is_empty() || !r.corrupt.is_empty();
            text.push(format!(
                "{} timeline {}: {} segment(s) {} .. {}{}{}",
                tier.name(),
                r.timeline,
                r.count,
                r.first,
                r.last,
                if r.missing.is_empty() {
                    String::new()
                } else {
                    format!("; MISSING {}", r.missing.join(", "))
                },
                if r.corrupt.is_empty() {
                    String::new()
                } else {
                    format!("; CORRUPT {}", r.corrupt.join(", "))
                }
            ));
        }
        if reports.is_empty() {
            text.push(format!("{}: no WAL archived", tier.name()));
        }
        if !listing.incomplete.is_empty() {
            text.push(format!(
                "{}: {} interrupted push(es) (no sidecar): {}",
                tier.name(),
                listing.incomplete.len(),
                listing.incomplete.join(", ")
            ));
        }
        tiers.push(
            json!({"tier": tier.name(), "timelines": reports, "incomplete": listing.incomplete}),
        );
    }
    Ok(Outcome {
        value: Output {
            text,
            json: json!({"ok": !bad, "tiers": tiers}),
        },
        code: if bad { crate::EXIT_VERIFY } else { 0 },
    })
}

/// `zdr status`: the newest backup of every component, and for postgres components with
/// archived WAL, the age of the newest segment (the data at risk: RPO).
pub(crate) async fn status(config: &Config, only: Option<&str>) -> Result<Outcome> {
    let repo = repository(config, &config.primary)?;
    let catalog = repo.catalog().await?;
    let now = Utc::now();
    let mut text = Vec::new();
    let mut comps = Vec::new();
    for (name, c) in &config.components {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let comp = Component::new(name.clone())?;
        let list = catalog.list(Some(&comp));
        let newest = |kind: Option<BackupKind>| {
            list.iter()
                .filter(|m| kind.is_none_or(|k| m.kind == k))
                .max_by_key(|m| m.finished_at)
                .copied()
        };
        let latest = newest(None);
        let mut entry = json!({
            "component": name,
            "backups": list.len(),
            "latest": latest.map(|m| json!({"id": m.id, "kind": m.kind, "finished_at": m.finished_at,
                "age_seconds": (now - m.finished_at).num_seconds()})),
        });
        let mut line = format!(
            "{name}: {} backup(s); latest {}",
            list.len(),
            latest.map_or_else(
                || "none".to_owned(),
                |m| format!("{} ({} ago)", m.id, age(now - m.finished_at))
            )
        );
        if let ComponentConfig::Postgres(pg) = c {
            let base = list
                .iter()
                .filter(|m| BaseBackupFacts::is_base(m))
                .max_by_key(|m| m.finished_at);
            entry["latest_base"] = json!(base.map(|m| &m.id));
            let archive = archive(config, name, pg)?;
            let listing = archive.list(0).await?;
            if let Some((seg, modified)) = &listing.newest {
                let rpo = modified.map(|m| (now - m).num_seconds());
                entry["wal"] = json!({"newest_segment": seg, "archived_at": modified,
                    "rpo_seconds": rpo, "timelines": listing.segments.keys().collect::<Vec<_>>()});
                line.push_str(&format!(
                    "; newest WAL {seg}{}",
                    rpo.map_or_else(String::new, |s| format!(
                        " archived {} ago (RPO)",
                        age(chrono::Duration::seconds(s))
                    ))
                ));
            } else {
                entry["wal"] = serde_json::Value::Null;
                line.push_str("; no WAL archived");
            }
        }
        text.push(line);
        comps.push(entry);
    }
    Ok(Outcome::ok(
        text,
        json!({"ok": true, "tier": config.primary, "components": comps, "now": now}),
    ))
}

fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
