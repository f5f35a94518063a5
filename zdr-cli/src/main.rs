//! `zdr`: the disaster-recovery command line. A thin consumer of the `zdr` library: it
//! parses arguments, makes one library call per command, and presents the result.

mod args;
mod hints;
mod output;
mod render;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use zdr::postgres::{PitrFinish, PitrRequest, ZdrCommand};
use zdr::{
    BackupOptions, BackupSelector, Config, Error, ErrorKind, Progress, RestoreOptions,
    RestoreTarget, Result, Stack,
};

use crate::args::{Cli, Command, RecoverScenario, WalAction};
use crate::output::CliProgress;
use crate::render::Outcome;

/// Exit code: the operation failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code: bad input (config, arguments, unknown names, wrong key).
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: verification failed (checksums, manifests, restored data).
pub(crate) const EXIT_VERIFY: u8 = 3;
/// `zdr status`: a component's recovery point objective is missed, or a scheduled job's
/// last run failed.
pub(crate) const EXIT_RPO: u8 = 4;
/// Exit code of `wal fetch` when the file is not in the archive: PostgreSQL ends recovery.
pub(crate) const EXIT_WAL_MISSING: u8 = 1;
/// Exit code of `wal fetch` for every other failure: above 125, so PostgreSQL stops
/// recovery instead of treating the file as missing.
pub(crate) const EXIT_WAL_FATAL: u8 = 255;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            render::report_error(
                &Error::unexpected("cannot start the runtime").with_source(e),
                cli.json,
            );
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let progress = Progress::new(Arc::new(CliProgress::new(cli.no_progress || cli.json)));
    // The daemon handles its own signals: the first one lets running jobs finish. Its log
    // is the timestamped lines, never bars.
    if matches!(cli.command, Command::Daemon) {
        let progress = Progress::new(Arc::new(CliProgress::log_only()));
        let result = runtime.block_on(run(&cli, &progress));
        runtime.shutdown_timeout(Duration::from_secs(5));
        return finish(&cli, result);
    }
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&cli, &progress) => Ok(r),
            code = interrupted() => Err(code),
        }
    });
    let result = match result {
        Ok(r) => r,
        Err(code) => {
            // The operation was dropped where it stood: a database swap in progress is rolled
            // back by the server and partial artifacts never get a manifest. What its writes
            // left (temporary files, unfinished uploads) is removed now; what cannot be is
            // swept by the next run on the tier.
            let abandoned = runtime.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(20),
                    zdr::storage::abandon_in_flight(),
                )
                .await
                .unwrap_or_default()
            });
            for r in &abandoned.removed {
                progress.warn(format!("removed the partial write {r}"));
            }
            for f in &abandoned.failed {
                progress.warn(format!(
                    "could not remove the partial write {f} (the next run on the tier sweeps it)"
                ));
            }
            render::report_error(
                &Error::new(
                    ErrorKind::Unexpected,
                    format!(
                        "interrupted by {}: stopped before completing; nothing partial is listed as a backup",
                        if code == EXIT_SIGTERM {
                            "SIGTERM"
                        } else {
                            "SIGINT"
                        }
                    ),
                ),
                cli.json,
            );
            // Worker tasks still running are abandoned with the runtime.
            runtime.shutdown_background();
            return ExitCode::from(code);
        }
    };
    finish(&cli, result)
}

/// Print the outcome or the error; the exit code.
fn finish(cli: &Cli, result: Result<Outcome>) -> ExitCode {
    match result {
        Ok(outcome) => {
            render::print(&outcome, cli.json);
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            let e = hints::for_cli(e);
            render::report_error(&e, cli.json);
            if let Command::Wal {
                action: WalAction::Fetch { .. },
            } = cli.command
            {
                return ExitCode::from(EXIT_WAL_FATAL);
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// `zdr daemon`: run the schedule until a signal; a second signal abandons running jobs.
async fn daemon(stack: Stack, progress: &Progress) -> Result<Outcome> {
    let daemon = Arc::new(zdr::daemon::Daemon::new(Arc::new(stack), progress.clone())?);
    let (signals, rx) = tokio::sync::watch::channel(0u32);
    let counter = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let _ = interrupted().await;
            n += 1;
            let _ = signals.send(n);
        }
    });
    let mut first = rx.clone();
    let mut second = rx;
    let jobs = daemon.jobs().len();
    progress.info(format!(
        "zdr daemon {}: {jobs} jobs (zdr jobs lists them)",
        env!("CARGO_PKG_VERSION")
    ));
    let run = Arc::clone(&daemon).run(async move {
        let _ = first.wait_for(|n| *n >= 1).await;
    });
    let exit = tokio::select! {
        r = run => r?,
        _ = second.wait_for(|n| *n >= 2) => zdr::daemon::DaemonExit {
            abandoned: vec!["every running job (a second signal)".to_owned()],
        },
    };
    counter.abort();
    if !exit.abandoned.is_empty() {
        let abandoned =
            tokio::time::timeout(Duration::from_secs(20), zdr::storage::abandon_in_flight())
                .await
                .unwrap_or_default();
        for r in &abandoned.removed {
            progress.warn(format!("removed the partial write {r}"));
        }
    }
    Ok(render::daemon_exit(&exit))
}

/// Exit code after SIGINT (Ctrl-C): 128 + 2.
const EXIT_SIGINT: u8 = 130;
/// Exit code after SIGTERM: 128 + 15.
const EXIT_SIGTERM: u8 = 143;

/// Wait for SIGINT or SIGTERM; the exit code to leave with.
async fn interrupted() -> u8 {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => EXIT_SIGINT,
            _ = term.recv() => EXIT_SIGTERM,
        },
        // Without signal handling, never interrupt.
        _ => std::future::pending().await,
    }
}

fn exit_code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::BadInput | ErrorKind::NotFound | ErrorKind::Decrypt | ErrorKind::Conflict => {
            EXIT_BAD_INPUT
        }
        ErrorKind::Integrity => EXIT_VERIFY,
        _ => EXIT_FAILED,
    }
}

async fn run(cli: &Cli, progress: &Progress) -> Result<Outcome> {
    if let Command::Drill { sandbox: true, .. } = &cli.command {
        let options = zdr::drill::SandboxOptions {
            zdr_program: std::env::current_exe().ok(),
        };
        return Ok(render::sandbox(
            &zdr::drill::sandbox(&options, progress).await?,
        ));
    }
    if let Command::Init {
        compose,
        project,
        backup_root,
        stdout,
    } = &cli.command
    {
        return init(cli, compose, project, backup_root, *stdout);
    }
    let config = Config::load(&cli.config, std::env::vars())
        .map_err(|e| e.with_hint("pass --config PATH or set ZDR_CONFIG"))?;
    // Commands that need no component credentials do not contact Vault for `vault:`
    // references.
    let stack = if matches!(
        cli.command,
        Command::List { .. }
            | Command::Replicate { .. }
            | Command::Prune { .. }
            | Command::Wal { .. }
            | Command::Status { .. }
            | Command::Jobs
    ) {
        Stack::open_unresolved(config)
    } else {
        Stack::open(config).await?
    };
    match &cli.command {
        Command::Backup {
            component,
            schedule,
            replicate,
            database,
            logical,
            allow_plaintext,
            pattern,
            db,
            base,
            wait,
        } => {
            let options = BackupOptions {
                lock_wait: *wait,
                schedule: schedule.clone(),
                replicate: *replicate,
                logical: *logical,
                database: database.clone(),
                base: *base,
                pattern: pattern.clone(),
                db: *db,
                allow_plaintext: *allow_plaintext,
            };
            let report = stack.backup(component, &options, progress).await?;
            Ok(render::backup(&report, *base))
        }
        Command::List { tier, component } => Ok(render::list(
            &stack.list(tier.as_deref(), component.as_deref()).await?,
        )),
        Command::Verify {
            target,
            tier,
            component,
            deep,
            restore,
            wal,
        } => {
            let name = target.as_deref().or(component.as_deref());
            if *restore {
                let name = name.ok_or_else(|| {
                    Error::bad_input(
                        "verify --restore needs a component (zdr verify postgres --restore)",
                    )
                })?;
                return Ok(render::verify_restore(
                    &stack
                        .verify_restore(name, tier.as_deref(), progress)
                        .await?,
                ));
            }
            if *wal {
                let name = name
                    .ok_or_else(|| Error::bad_input("verify --wal needs a postgres component"))?;
                return Ok(render::verify_wal(
                    &stack.verify_wal(name, *deep, progress).await?,
                ));
            }
            Ok(render::verify(
                &stack.verify(tier.as_deref(), name, *deep, progress).await?,
            ))
        }
        Command::Restore {
            component,
            backup,
            to,
            overwrite,
            tier,
            database,
            table,
            as_name,
            in_place,
            jobs,
            yes_destroy_live,
            logical,
            force,
            no_replace,
            pattern,
            mount_map,
            no_safety_copy,
            bucket,
            prefix,
            key,
            to_bucket,
        } => {
            let selector: BackupSelector = backup.parse()?;
            let options = RestoreOptions {
                backup: selector,
                tier: tier.clone(),
                target: RestoreTarget {
                    path: to.clone(),
                    name: database.clone(),
                    overwrite: *overwrite,
                },
                logical: *logical,
                postgres: zdr::pg::RestoreOptions {
                    mode: if *in_place {
                        zdr::pg::RestoreMode::InPlace {
                            confirmed: *yes_destroy_live,
                        }
                    } else {
                        zdr::pg::RestoreMode::Safe
                    },
                    table: table.clone(),
                    table_as: as_name.clone(),
                    jobs: *jobs,
                },
                redis: zdr::redis::RestoreOptions {
                    replace: !*no_replace,
                    pattern: pattern.clone(),
                    scratch: false,
                },
                force: *force,
                mount_map: mount_map.clone(),
                no_safety_copy: *no_safety_copy,
                s3: zdr::s3::RestoreOptions {
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                    key: key.clone(),
                    to_bucket: to_bucket.clone(),
                    to: None,
                    overwrite: false,
                    scratch: false,
                },
            };
            let report = stack.restore(component, &options, progress).await?;
            Ok(render::restore(&report))
        }
        Command::Unlock {
            component,
            repository,
            tier,
        } => match component {
            Some(component) if !*repository => {
                let holder = stack.unlock(component, tier.as_deref()).await?;
                Ok(render::unlock(component, holder.as_ref()))
            }
            _ => {
                let holder = stack.unlock_repository(tier.as_deref()).await?;
                let tier = tier.as_deref().unwrap_or(&stack.config().primary);
                Ok(render::unlock_repository(tier, holder.as_ref()))
            }
        },
        Command::Rollback {
            component,
            database,
        } => Ok(render::rollback(
            &stack
                .rollback(component, database.as_deref(), progress)
                .await?,
        )),
        Command::Replicate { from, to } => {
            let pair = from.as_deref().zip(to.as_deref());
            let run = stack.replicate(pair, progress).await.map_err(|e| {
                if e.kind() == ErrorKind::BadInput && pair.is_none() {
                    e.with_hint("set replicate_to in the config, or pass --from and --to")
                } else {
                    e
                }
            })?;
            Ok(render::replicate(&run))
        }
        Command::Prune {
            dry_run,
            component,
            tier,
            wait,
        } => {
            let options = zdr::prune::PruneOptions {
                dry_run: *dry_run,
                component: component.clone(),
                tier: tier.clone(),
                wait: *wait,
            };
            Ok(render::prune(&stack.prune(&options, progress).await?))
        }
        Command::Wal { action } => wal(&stack, cli, action, progress).await,
        Command::Pitr {
            component,
            target_time,
            target_lsn,
            target_xid,
            target_name,
            target,
            timeline,
            tier,
            to,
            port,
            apply_database,
            discard,
            promote,
        } => {
            let target = args::recovery_target(
                target_time.as_deref(),
                target_lsn.as_deref(),
                target_xid.as_deref(),
                target_name.as_deref(),
                target.is_some(),
            )?;
            let finish = match (apply_database, *discard, *promote) {
                (Some(db), discard, _) => PitrFinish::ApplyDatabase {
                    database: db.clone(),
                    discard,
                },
                (None, true, _) => PitrFinish::Discard,
                (None, false, true) => PitrFinish::Promote,
                (None, false, false) => PitrFinish::Keep,
            };
            let request = PitrRequest {
                target,
                timeline: *timeline,
                tier: tier.clone(),
                data_dir: to.clone(),
                port: *port,
                finish,
                zdr: ZdrCommand::current(&cli.config)?,
            };
            Ok(render::pitr(
                &stack.pitr(component, &request, progress).await?,
            ))
        }
        Command::Check { component, timeout } => Ok(render::check(
            &stack
                .check(component, timeout.map(Duration::from_secs), progress)
                .await?,
        )),
        Command::Status {
            component,
            textfile,
        } => {
            let report = stack.status(component.as_deref()).await?;
            if let Some(path) = textfile {
                zdr::metrics::write_textfile(&report, path)?;
            }
            // The scheduled jobs' last runs, when the daemon (or run-once) recorded any.
            let runs = match zdr::daemon::recorded_runs(stack.config()).await {
                Ok(r) => r,
                Err(e) => {
                    progress.warn(format!("cannot read the daemon's record of its jobs: {e}"));
                    None
                }
            };
            Ok(render::status(&report, runs.as_ref()))
        }
        Command::Drill {
            component,
            scenario,
            health_timeout,
            ..
        } => {
            let name = component.as_deref().unwrap_or_default();
            let options = zdr::recover::ContainerRecoveryOptions {
                health_timeout: Duration::from_secs(*health_timeout),
                ..zdr::recover::ContainerRecoveryOptions::default()
            };
            match scenario.as_deref() {
                Some(which @ ("system" | "project")) => {
                    let r = if which == "system" {
                        stack.drill_system(&options, progress).await?
                    } else {
                        stack.drill_project(&options, progress).await?
                    };
                    let mut out = render::Outcome::ok(
                        r.to_markdown().lines().map(str::to_owned).collect(),
                        json!({"ok": r.ok, "report": r}),
                    );
                    if !r.ok {
                        out.code = EXIT_VERIFY;
                    }
                    return Ok(out);
                }
                Some(_) if component.is_none() => {
                    return Err(Error::bad_input(
                        "zdr drill --scenario container needs the component",
                    ));
                }
                Some(_) => {
                    return Ok(render::recovery(
                        &stack.drill_container(name, &options, progress).await?,
                    ));
                }
                None => {}
            }
            Ok(render::drill(&stack.drill(name, progress).await?))
        }
        Command::Daemon => daemon(stack, progress).await,
        Command::RunOnce { job } => {
            let daemon = zdr::daemon::Daemon::new(Arc::new(stack), progress.clone())?;
            Ok(render::job_run(&daemon.run_once(job).await?))
        }
        Command::Jobs => {
            let daemon = zdr::daemon::Daemon::new(Arc::new(stack), progress.clone())?;
            Ok(render::jobs(&daemon.overview().await?))
        }
        // Handled before the config is read.
        Command::Init { .. } => Err(Error::unexpected("zdr init reads no config")),
        Command::Recover { scenario } => match scenario {
            RecoverScenario::Container {
                component,
                dry_run,
                discard_volume,
                no_backup,
                tier,
                health_timeout,
                force,
                backup,
                method,
            } => {
                let options = zdr::recover::ContainerRecoveryOptions {
                    discard_volume: *discard_volume,
                    no_backup: *no_backup,
                    health_timeout: Duration::from_secs(*health_timeout),
                    tier: tier.clone(),
                    force: *force,
                    backup: backup.parse()?,
                    method: method.parse()?,
                };
                if *dry_run {
                    Ok(render::recovery_plan(
                        &stack.plan_container_recovery(component, &options).await?,
                    ))
                } else {
                    Ok(render::recovery(
                        &stack
                            .recover_container(component, &options, progress)
                            .await?,
                    ))
                }
            }
            RecoverScenario::System {
                from,
                at,
                no_backup,
                health_timeout,
                dry_run,
                force,
            } => {
                let options = zdr::recover::SystemRecoveryOptions {
                    from: from.clone(),
                    at: at.as_deref().map(zdr::core::parse_time).transpose()?,
                    no_backup: *no_backup,
                    health_timeout: Duration::from_secs(*health_timeout),
                    force: *force,
                };
                if *dry_run {
                    let plan = stack.plan_system_recovery(&options).await?;
                    return Ok(render::Outcome::ok(
                        plan.to_text().lines().map(str::to_owned).collect(),
                        json!({"ok": true, "dry_run": true, "plan": plan}),
                    ));
                }
                Ok(render::system_recovery(
                    &stack.recover_system(&options, progress).await?,
                ))
            }
            RecoverScenario::Rollback {
                recovery,
                health_timeout,
            } => {
                let options = zdr::recover::ContainerRecoveryOptions {
                    health_timeout: Duration::from_secs(*health_timeout),
                    ..zdr::recover::ContainerRecoveryOptions::default()
                };
                Ok(render::recovery_rollback(
                    &stack
                        .rollback_recovery(recovery, &options, progress)
                        .await?,
                ))
            }
        },
    }
}

/// `zdr init --compose`: the config made from the compose file, written to --config (never
/// over an existing file) or printed.
fn init(
    cli: &Cli,
    compose: &std::path::Path,
    project: &Option<String>,
    backup_root: &Option<std::path::PathBuf>,
    stdout: bool,
) -> Result<Outcome> {
    let text = std::fs::read_to_string(compose).map_err(|e| {
        Error::from_io(
            e,
            format!("cannot read the compose file {}", compose.display()),
        )
    })?;
    let options = zdr::init::ComposeInit {
        project: project.clone(),
        backup_root: backup_root.clone(),
    };
    let report = zdr::init::config_from_compose(&text, compose, &options)?;
    let mut lines = Vec::new();
    if stdout {
        lines.extend(report.toml.lines().map(str::to_owned));
    } else {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&cli.config)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::new(
                        ErrorKind::Conflict,
                        format!("{} exists: not overwriting it", cli.config.display()),
                    )
                    .with_hint("pass another --config path, or --stdout")
                } else {
                    Error::from_io(e, format!("cannot create {}", cli.config.display()))
                }
            })?;
        file.write_all(report.toml.as_bytes())
            .map_err(|e| Error::from_io(e, format!("cannot write {}", cli.config.display())))?;
        lines.push(format!(
            "wrote {} for compose project {}",
            cli.config.display(),
            report.project
        ));
        for d in &report.detected {
            lines.push(format!(
                "  {:<9} {} (service {})",
                d.kind, d.name, d.service
            ));
        }
        for (s, why) in &report.skipped {
            lines.push(format!("  skipped   {s}: {why}"));
        }
        if !report.secrets.is_empty() {
            lines.push("export before running zdr:".to_owned());
            for (var, from) in &report.secrets {
                lines.push(format!("  {var}   ({from})"));
            }
        }
    }
    Ok(Outcome::ok(
        lines,
        json!({"ok": true, "config": if stdout { None } else { Some(cli.config.display().to_string()) },
               "project": report.project, "detected": report.detected, "skipped": report.skipped,
               "secrets": report.secrets, "toml": report.toml}),
    ))
}

async fn wal(stack: &Stack, cli: &Cli, action: &WalAction, progress: &Progress) -> Result<Outcome> {
    match action {
        WalAction::Push { path, component } => {
            let started = std::time::Instant::now();
            let report = stack.wal_push(component.as_deref(), path, progress).await?;
            Ok(render::wal_push(&report, started.elapsed()))
        }
        WalAction::Fetch {
            name,
            dest,
            component,
        } => {
            let prefetch = ZdrCommand::current(&cli.config).ok();
            let report = stack
                .wal_fetch(
                    component.as_deref(),
                    name,
                    dest,
                    prefetch.as_ref(),
                    progress,
                )
                .await?;
            Ok(render::wal_fetch(&report))
        }
        WalAction::Prefetch {
            after,
            dir,
            count,
            component,
        } => {
            let n = stack
                .wal_prefetch(component.as_deref(), after, dir, *count, progress)
                .await?;
            Ok(Outcome::ok(
                vec![format!("prefetched {n} segment(s) after {after}")],
                json!({"ok": true, "prefetched": n}),
            ))
        }
    }
}
