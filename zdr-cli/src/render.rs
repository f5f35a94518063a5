//! Presentation of the library's results: text lines for people, JSON for `--json`, and the
//! exit code.

use serde_json::json;
use zdr::drill::{DrillReport, SandboxReport};
use zdr::pg::wal::{FetchOutcome, PushReport};
use zdr::postgres::{CheckReport, PitrReport, StatusReport, WalFetchReport, WalTierReport};
use zdr::{
    BackupReport, Error, ReplicationRun, RestoreReport, ScratchRestoreReport, TierListing,
    VerifyRun, human_bytes,
};

use crate::{EXIT_FAILED, EXIT_VERIFY, EXIT_WAL_MISSING};

/// What a command prints (text lines, or JSON) and its exit code.
pub(crate) struct Outcome {
    pub(crate) text: Vec<String>,
    pub(crate) json: serde_json::Value,
    pub(crate) code: u8,
    /// Errors of parts of the command (a tier that could not be read), for stderr.
    pub(crate) errors: Vec<String>,
}

impl Outcome {
    pub(crate) fn ok(text: Vec<String>, json: serde_json::Value) -> Self {
        Self {
            text,
            json,
            code: 0,
            errors: Vec::new(),
        }
    }

    fn with_code(mut self, failed: bool, code: u8) -> Self {
        if failed {
            self.code = code;
        }
        self
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn print(outcome: &Outcome, json: bool) {
    for e in &outcome.errors {
        eprintln!("zdr: error: {e}");
    }
    if json {
        println!("{}", outcome.json);
    } else {
        for line in &outcome.text {
            println!("{line}");
        }
    }
}

#[allow(clippy::print_stderr, clippy::print_stdout)]
pub(crate) fn report_error(e: &Error, json: bool) {
    if json {
        let context: serde_json::Map<String, serde_json::Value> = e
            .context()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        println!(
            "{}",
            json!({"ok": false, "error": {"kind": e.kind().as_str(), "message": e.to_string(),
                   "context": context, "hint": e.hint(), "temporary": e.is_temporary()}})
        );
    }
    eprintln!("zdr: error: {e}");
}

pub(crate) fn backup(r: &BackupReport, base: bool) -> Outcome {
    let m = &r.backup;
    let mut text = Vec::new();
    if base {
        let f = zdr::pg::basebackup::BaseBackupFacts::from_manifest(m).ok();
        text.push(format!(
            "base backup of {} as {} on {}: {} stored ({} of data directory) in {:.2}s; \
             WAL {} .. {} on timeline {}",
            m.component,
            m.id,
            r.tier,
            human_bytes(m.stored_size()),
            human_bytes(f.as_ref().map_or(0, |f| f.tar_bytes)),
            r.seconds,
            f.as_ref().map_or("?", |f| f.start_segment.as_str()),
            f.as_ref().map_or("?", |f| f.stop_segment.as_str()),
            f.as_ref().map_or(0, |f| f.timeline)
        ));
    } else {
        let raw: u64 = m.artifacts.iter().map(|a| a.raw_size).sum();
        text.push(format!(
            "backed up {} as {} on {}: {} stored ({} raw) in {:.2}s",
            m.component,
            m.id,
            r.tier,
            human_bytes(m.stored_size()),
            human_bytes(raw),
            r.seconds
        ));
        for a in &m.artifacts {
            text.push(format!(
                "  {}  {}  sha256 {}",
                a.key,
                human_bytes(a.size),
                a.sha256
            ));
        }
    }
    let mut value = json!({"ok": true, "backup": m, "tier": r.tier, "seconds": r.seconds});
    let mut failed = false;
    if let Some(run) = &r.replication {
        let rep = replicate(run);
        text.extend(rep.text);
        value["replication"] = rep.json;
        failed = !run.is_ok();
    }
    Outcome::ok(text, value).with_code(failed, EXIT_FAILED)
}

pub(crate) fn list(listings: &[TierListing]) -> Outcome {
    let mut text = Vec::new();
    let mut errors = Vec::new();
    for l in listings {
        if let Some(e) = &l.error {
            text.push(format!("tier {}: UNREACHABLE: {}", l.tier, e.error));
            errors.push(e.error.clone());
            continue;
        }
        text.push(format!("tier {}:", l.tier));
        if l.backups.is_empty() {
            text.push("  (no backups)".to_owned());
        }
        for m in &l.backups {
            text.push(format!(
                "  {:<12} {}  {}  {:<9} {:>10}  {} artifact(s)",
                m.component.as_str(),
                m.id,
                m.finished_at.format("%Y-%m-%d %H:%M:%S"),
                m.schedule,
                human_bytes(m.stored_size()),
                m.artifacts.len()
            ));
        }
        for p in &l.problems {
            text.push(format!(
                "  UNUSABLE {}: {}",
                p.key.as_deref().unwrap_or("?"),
                p.error
            ));
        }
    }
    let ok = errors.is_empty();
    let mut out =
        Outcome::ok(text, json!({"ok": ok, "tiers": listings})).with_code(!ok, EXIT_FAILED);
    out.errors = errors;
    out
}

pub(crate) fn verify(run: &VerifyRun) -> Outcome {
    let mut text = Vec::new();
    for p in &run.failures {
        match (&p.key, &p.backup) {
            (None, None) => text.push(format!(
                "FAIL {}: cannot be read: {}",
                p.tier.as_deref().unwrap_or("?"),
                p.error
            )),
            (Some(key), _) => text.push(format!(
                "FAIL {} {key}: {}",
                p.tier.as_deref().unwrap_or("?"),
                p.error
            )),
            (None, Some(backup)) => text.push(format!(
                "FAIL {} {} {}: {}",
                p.tier.as_deref().unwrap_or("?"),
                p.component.as_deref().unwrap_or("?"),
                backup,
                p.error
            )),
        }
    }
    for (t, m) in &run.intact {
        text.push(format!(
            "ok   {t} {} {} ({} artifact(s), {})",
            m.component,
            m.id,
            m.artifacts.len(),
            human_bytes(m.stored_size())
        ));
    }
    let ok = run.is_ok();
    text.push(format!(
        "{}: {} backup(s) intact, {} problem(s)",
        if ok {
            "verified"
        } else {
            "VERIFICATION FAILED"
        },
        run.intact.len(),
        run.failures.len()
    ));
    // Damage is exit 3; a wrong or missing key (and nothing damaged) exit 2, as for a
    // restore; a tier that could not be read (and nothing else) exit 1.
    let has = |kind: &str| run.failures.iter().any(|p| p.kind == kind);
    let code = if run
        .failures
        .iter()
        .any(|p| !matches!(p.kind.as_str(), "storage" | "decrypt"))
    {
        EXIT_VERIFY
    } else if has("decrypt") {
        crate::EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    };
    Outcome::ok(
        text,
        json!({"ok": ok, "intact": run.intact.len(), "failures": run.failures}),
    )
    .with_code(!ok, code)
}

pub(crate) fn restore(r: &RestoreReport) -> Outcome {
    let m = &r.backup;
    let mut text = Vec::new();
    for s in &r.skipped {
        text.push(format!("  skipped tier {}: {}", s.tier, s.reason));
    }
    text.push(format!(
        "restored {} {} from tier {} into {}: {} item(s), {} in {:.2}s",
        m.component,
        m.id,
        r.tier,
        r.outcome.target,
        r.outcome.items,
        human_bytes(r.outcome.bytes),
        r.restore_seconds
    ));
    text.extend(r.outcome.notes.iter().map(|n| format!("  note: {n}")));
    if let Some(id) = &r.safety_copy {
        text.push(format!(
            "  note: the live dataset was backed up first as {id} (schedule pre-restore)"
        ));
    }
    let ok = r.is_ok();
    text.push(format!(
        "verification: {} ({} checked{}); RTO {:.2}s",
        if ok { "passed" } else { "FAILED" },
        r.verify.checked,
        if ok {
            String::new()
        } else {
            format!(", {} problem(s)", r.verify.problems.len())
        },
        r.rto_seconds
    ));
    text.extend(r.verify.problems.iter().map(|p| format!("  problem: {p}")));
    Outcome::ok(
        text,
        json!({"ok": ok, "backup": m.id, "component": m.component, "tier": r.tier,
            "outcome": r.outcome, "verify": r.verify, "rto_seconds": r.rto_seconds,
            "skipped": r.skipped, "safety_copy": r.safety_copy}),
    )
    .with_code(!ok, EXIT_VERIFY)
}

pub(crate) fn replicate(run: &ReplicationRun) -> Outcome {
    let mut text = Vec::new();
    for p in &run.pairs {
        text.push(format!(
            "{} -> {}: {} copied ({}), {} already there, {} failed",
            p.from,
            p.to,
            p.copied.len(),
            human_bytes(p.bytes),
            p.already_present,
            p.failed.len()
        ));
        for f in &p.failed {
            text.push(format!(
                "  FAILED {}: {}",
                f.backup.as_deref().unwrap_or("?"),
                f.error
            ));
        }
    }
    let ok = run.is_ok();
    Outcome::ok(text, json!({"ok": ok, "replications": run.pairs})).with_code(!ok, EXIT_FAILED)
}

pub(crate) fn prune(r: &zdr::prune::PruneReport) -> Outcome {
    use zdr::prune::PruneAction;
    let mut text = Vec::new();
    if r.dry_run {
        text.push("dry run: nothing is deleted".to_owned());
    }
    for t in &r.tiers {
        let count = |a: PruneAction| t.backups.iter().filter(|b| b.action == a).count();
        let (gone, verb) = if r.dry_run {
            (count(PruneAction::WouldDelete), "would delete")
        } else {
            (count(PruneAction::Deleted), "deleted")
        };
        text.push(format!(
            "tier {}: {} kept, {verb} {gone}{}",
            t.tier,
            count(PruneAction::Keep),
            if count(PruneAction::Failed) > 0 {
                format!(", {} FAILED", count(PruneAction::Failed))
            } else {
                String::new()
            }
        ));
        for b in &t.backups {
            let action = match b.action {
                PruneAction::Keep => "keep",
                PruneAction::Deleted => "deleted",
                PruneAction::WouldDelete => "would delete",
                PruneAction::Failed => "FAILED to delete",
            };
            let why = if b.reasons.is_empty() {
                "no rule keeps it".to_owned()
            } else {
                b.reasons.join("; ")
            };
            text.push(format!(
                "  {action:<16} {} {} {:?} {}  ({why})",
                b.component,
                b.id,
                b.kind,
                b.started_at.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        for (c, w) in &t.wal {
            text.push(format!(
                "  {} {} WAL file(s) of {c} ({}) before the oldest kept base backup",
                if r.dry_run { "would delete" } else { "deleted" },
                w.files.len(),
                human_bytes(w.bytes)
            ));
        }
        for (c, b) in &t.blobs {
            text.push(format!(
                "  {} {} blob file(s) of {c} ({}) that no kept backup references",
                if r.dry_run { "would delete" } else { "deleted" },
                b.files.len(),
                human_bytes(b.bytes)
            ));
        }
        if !t.orphans.is_empty() {
            text.push(format!(
                "  {} {} file(s) no manifest names",
                if r.dry_run { "would delete" } else { "deleted" },
                t.orphans.len()
            ));
            for o in &t.orphans {
                text.push(format!("    {o}"));
            }
        }
        if t.swept > 0 {
            text.push(format!(
                "  swept {} partial write(s) of killed runs",
                t.swept
            ));
        }
        for p in &t.problems {
            text.push(format!(
                "  PROBLEM {}{}",
                p.backup
                    .as_deref()
                    .map(|b| format!("{b}: "))
                    .unwrap_or_default(),
                p.error
            ));
        }
    }
    let ok = r.is_ok();
    Outcome::ok(text, json!({"ok": ok, "prune": r})).with_code(!ok, EXIT_FAILED)
}

pub(crate) fn unlock(component: &str, holder: Option<&zdr::storage::LockOwner>) -> Outcome {
    let text = match holder {
        Some(h) => format!("removed the lock of {component}, held by {h}"),
        None => format!("{component} was not locked"),
    };
    Outcome::ok(
        vec![text],
        serde_json::json!({"ok": true, "component": component, "held_by": holder}),
    )
}

pub(crate) fn unlock_repository(tier: &str, holder: Option<&zdr::storage::LockOwner>) -> Outcome {
    let text = match holder {
        Some(h) => format!("removed the repository lock of tier {tier}, held by {h}"),
        None => format!("tier {tier} had no repository lock"),
    };
    Outcome::ok(
        vec![text],
        serde_json::json!({"ok": true, "tier": tier, "repository": true, "held_by": holder}),
    )
}

pub(crate) fn rollback(out: &zdr::pg::RollbackOutcome) -> Outcome {
    Outcome::ok(
        vec![format!(
            "rolled {} back to {}; the replaced database is kept as {} (roll back again to undo)",
            out.database, out.restored_from, out.displaced_to
        )],
        json!({"ok": true, "rollback": out}),
    )
}

pub(crate) fn verify_restore(r: &ScratchRestoreReport) -> Outcome {
    let unit = match r.component_type {
        zdr::ComponentType::Redis => "key(s)",
        zdr::ComponentType::Qdrant => "collection(s)",
        zdr::ComponentType::S3Bucket => "object(s)",
        zdr::ComponentType::N8n => "workflow(s)",
        _ => "table(s)",
    };
    let mut text = Vec::new();
    match &r.outcome {
        Some(o) => {
            text.push(format!(
                "verified {} {} from tier {} by restoring it into {} ({} {unit}, {}) in {:.2}s",
                r.backup.component,
                r.backup.id,
                r.tier,
                o.target,
                o.items,
                human_bytes(o.bytes),
                r.seconds
            ));
            text.extend(o.notes.iter().map(|n| format!("  note: {n}")));
        }
        None => {
            text.push(format!(
                "VERIFICATION FAILED: {} {} from tier {} restored into a scratch target does not match its manifest ({} checked, {} problem(s)); live data untouched",
                r.backup.component,
                r.backup.id,
                r.tier,
                r.verify.checked,
                r.verify.problems.len()
            ));
            text.extend(r.verify.problems.iter().map(|p| format!("  problem: {p}")));
        }
    }
    let ok = r.is_ok();
    Outcome::ok(
        text,
        json!({"ok": ok, "backup": r.backup.id, "tier": r.tier, "outcome": r.outcome,
            "verify": r.verify, "seconds": r.seconds}),
    )
    .with_code(!ok, EXIT_VERIFY)
}

pub(crate) fn wal_push(report: &PushReport, took: std::time::Duration) -> Outcome {
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
    Outcome::ok(
        text,
        json!({"ok": true, "push": report, "milliseconds": took.as_secs_f64() * 1000.0}),
    )
}

pub(crate) fn wal_fetch(r: &WalFetchReport) -> Outcome {
    let file = &r.file;
    match &r.outcome {
        FetchOutcome::Fetched { tier, bytes } => Outcome::ok(
            vec![format!(
                "restored {file} from {tier} ({})",
                human_bytes(*bytes)
            )],
            json!({"ok": true, "file": file, "tier": tier, "bytes": bytes}),
        ),
        FetchOutcome::NotFound => Outcome {
            text: vec![format!("{file} is not in the archive")],
            json: json!({"ok": false, "file": file, "status": "not_found"}),
            code: EXIT_WAL_MISSING,
            errors: Vec::new(),
        },
    }
}

pub(crate) fn pitr(r: &PitrReport) -> Outcome {
    let rec = &r.recovery;
    let mut text: Vec<String> = r.cleaned.iter().map(|c| format!("  {c}")).collect();
    text.extend(
        r.skipped
            .iter()
            .map(|s| format!("  skipped tier {}: {}", s.tier, s.reason)),
    );
    text.push(format!(
        "recovered {} to {}: base {} + WAL to {} (last commit {}), in {:.2}s; \
         instance on 127.0.0.1:{} in {}",
        r.component,
        r.target,
        rec.backup,
        rec.replay_lsn.as_deref().unwrap_or("?"),
        rec.last_commit
            .map_or_else(|| "none replayed".to_owned(), |c| c.to_rfc3339()),
        rec.seconds,
        rec.port,
        rec.data_dir.display()
    ));
    let mut value = json!({"ok": true, "recovery": rec, "tier": r.tier, "skipped": r.skipped,
        "cleaned": r.cleaned,
        "plan": {"backup": r.plan.backup.id, "chain_end": r.plan.chain_end,
        "timelines": r.plan.path}});
    if let Some(a) = &r.applied {
        text.push(format!(
            "applied database {} to the live cluster through backup {} ({} table(s), {}); \
             the replaced database is kept (zdr rollback {} --database {})",
            a.database,
            a.backup,
            a.outcome.items,
            human_bytes(a.outcome.bytes),
            r.component,
            a.database
        ));
        text.extend(a.outcome.notes.iter().map(|n| format!("  note: {n}")));
        value["applied"] =
            json!({"database": a.database, "backup": a.backup, "outcome": a.outcome});
    } else if r.discarded {
        text.push("recovery instance stopped and removed (--discard)".to_owned());
    } else if let Some(timeline) = r.promoted_timeline {
        text.push(format!(
            "promoted: a primary on timeline {timeline} at 127.0.0.1:{} ({}), archiving through \
             the cluster's archive_command; point clients at it or swap it in",
            rec.port,
            rec.data_dir.display()
        ));
        value["promoted_timeline"] = json!(timeline);
    } else {
        text.push(format!(
            "the instance stays up, paused at the target, for inspection: psql -h 127.0.0.1 -p {} ; \
             stop it with: pg_ctl stop -D {}",
            rec.port,
            rec.data_dir.display()
        ));
    }
    text.push(format!("RTO {:.2}s", r.rto_seconds));
    value["rto_seconds"] = json!(r.rto_seconds);
    Outcome::ok(text, value)
}

pub(crate) fn check(r: &CheckReport) -> Outcome {
    let s = &r.settings;
    let mut text = vec![format!(
        "{}: archive_mode={}, wal_level={}, archive_timeout={}s, archive_command runs zdr",
        r.component, s.archive_mode, s.wal_level, s.archive_timeout_secs
    )];
    if let Some(b) = r.rpo_bound_seconds {
        text.push(format!(
            "RPO bound: commits reach the archive within about {b}s plus one push (archive_timeout)"
        ));
    }
    for (tier, seconds) in &r.arrived {
        text.push(format!(
            "switched segment {} arrived on {tier} after {seconds:.2}s",
            r.segment
        ));
    }
    let arrived: Vec<serde_json::Value> = r
        .arrived
        .iter()
        .map(|(tier, seconds)| json!({"tier": tier, "seconds": seconds}))
        .collect();
    Outcome::ok(
        text,
        json!({"ok": true, "segment": r.segment, "settings": s, "arrived": arrived,
            "rpo_bound_seconds": r.rpo_bound_seconds}),
    )
}

pub(crate) fn verify_wal(tiers: &[WalTierReport]) -> Outcome {
    let mut text = Vec::new();
    for t in tiers {
        for r in &t.timelines {
            text.push(format!(
                "{} timeline {}: {} segment(s) {} .. {}{}{}",
                t.tier,
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
        if t.timelines.is_empty() {
            text.push(format!("{}: no WAL archived", t.tier));
        }
        if !t.incomplete.is_empty() {
            text.push(format!(
                "{}: {} interrupted push(es) (no sidecar): {}",
                t.tier,
                t.incomplete.len(),
                t.incomplete.join(", ")
            ));
        }
    }
    let ok = tiers.iter().all(WalTierReport::is_ok);
    Outcome::ok(text, json!({"ok": ok, "tiers": tiers})).with_code(!ok, EXIT_VERIFY)
}

pub(crate) fn status(
    r: &StatusReport,
    runs: Option<&std::collections::BTreeMap<String, zdr::daemon::JobState>>,
) -> Outcome {
    let mut text = Vec::new();
    let mut comps = Vec::new();
    for c in &r.components {
        let mut entry = json!({
            "component": c.component,
            "backups": c.backups,
            "tiers": c.tiers,
            "latest": c.latest.as_ref().map(|m| json!({"id": m.id, "kind": m.kind,
                "finished_at": m.finished_at, "age_seconds": (r.now - m.finished_at).num_seconds()})),
        });
        let mut line = format!(
            "{}: {} backup(s); latest {}",
            c.component,
            c.backups,
            c.latest.as_ref().map_or_else(
                || "none".to_owned(),
                |m| format!("{} ({} ago)", m.id, age(r.now - m.finished_at))
            )
        );
        entry["rpo_target_seconds"] = json!(c.rpo_target_seconds);
        entry["recovery_point_age_seconds"] = json!(c.recovery_point_age_seconds);
        entry["rpo_breached"] = json!(c.rpo_breached);
        if c.postgres {
            entry["latest_base"] = json!(c.latest_base);
            match &c.wal {
                Some(w) => {
                    entry["wal"] = json!(w);
                    line.push_str(&format!(
                        "; newest WAL {}{}",
                        w.newest_segment,
                        w.rpo_seconds.map_or_else(String::new, |s| format!(
                            " archived {} ago (RPO)",
                            age(chrono::Duration::seconds(s))
                        ))
                    ));
                }
                None => {
                    entry["wal"] = serde_json::Value::Null;
                    line.push_str("; no WAL archived");
                }
            }
        }
        if let Some(target) = c.rpo_target_seconds {
            let target = age(chrono::Duration::seconds(
                i64::try_from(target).unwrap_or(i64::MAX),
            ));
            line.push_str(&if c.rpo_breached {
                format!("; RPO {target} BREACHED")
            } else {
                format!("; RPO {target} met")
            });
        }
        text.push(line);
        for t in c.tiers.iter().skip(1) {
            text.push(format!(
                "  tier {}: {} backup(s); latest {}",
                t.tier,
                t.backups,
                match (&t.latest, t.age_seconds) {
                    (Some(id), Some(s)) =>
                        format!("{id} ({} ago)", age(chrono::Duration::seconds(s))),
                    _ => "none".to_owned(),
                }
            ));
        }
        comps.push(entry);
    }
    let ok = r.problems.is_empty();
    for p in &r.problems {
        text.push(format!(
            "tier {}: UNREACHABLE ({})",
            p.tier.as_deref().unwrap_or("?"),
            p.error
        ));
    }
    let breached: Vec<&str> = r
        .components
        .iter()
        .filter(|c| c.rpo_breached)
        .map(|c| c.component.as_str())
        .collect();
    if !breached.is_empty() {
        text.push(format!(
            "recovery point objective missed: {}",
            breached.join(", ")
        ));
    }
    let mut failing = Vec::new();
    for (job, s) in runs.into_iter().flatten() {
        let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map_or_else(|| "never".to_owned(), |t| format!("{} ago", age(r.now - t)))
        };
        let rto = s
            .drill_rto_seconds
            .map_or(String::new(), |x| format!(", drill RTO {x:.1} s"));
        if s.failing {
            failing.push(job.as_str());
            text.push(format!(
                "job {job}: last run FAILED {} ({}){rto}; last success {}",
                when(s.last_failure),
                s.last_error.as_deref().unwrap_or("no error recorded"),
                when(s.last_success)
            ));
        } else {
            text.push(format!(
                "job {job}: last run ok, {}{rto}",
                when(s.last_success)
            ));
        }
    }
    if !failing.is_empty() {
        text.push(format!("scheduled jobs failing: {}", failing.join(", ")));
    }
    let mut out = Outcome::ok(
        text,
        json!({"ok": ok && breached.is_empty() && failing.is_empty(), "tier": r.tier,
               "components": comps, "now": r.now, "problems": r.problems,
               "rpo_breached": breached, "jobs": runs, "jobs_failing": failing}),
    )
    .with_code(!ok, EXIT_FAILED)
    .with_code(!breached.is_empty() || !failing.is_empty(), crate::EXIT_RPO);
    out.errors = r.problems.iter().map(|p| p.error.clone()).collect();
    out
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

pub(crate) fn drill(r: &DrillReport) -> Outcome {
    let ok = r.is_ok();
    let mut text = vec![format!(
        "drill {}: restored {} from {} ({} item(s)) into a scratch target, verification {}; RTO {:.2}s",
        r.component,
        r.backup.id,
        r.tier,
        r.items,
        if ok { "passed" } else { "FAILED" },
        r.rto_seconds
    )];
    text.extend(r.verify.problems.iter().map(|p| format!("  problem: {p}")));
    Outcome::ok(
        text,
        json!({"ok": ok, "backup": r.backup.id, "rto_seconds": r.rto_seconds, "verify": r.verify}),
    )
    .with_code(!ok, EXIT_VERIFY)
}

pub(crate) fn sandbox(r: &SandboxReport) -> Outcome {
    Outcome::ok(r.steps.clone(), r.details.clone()).with_code(!r.ok, EXIT_VERIFY)
}

pub(crate) fn recovery_plan(plan: &zdr::recover::RecoveryPlan) -> Outcome {
    Outcome::ok(
        plan.to_text().lines().map(str::to_owned).collect(),
        json!({"ok": true, "dry_run": true, "plan": plan}),
    )
}

pub(crate) fn recovery(r: &zdr::recover::RecoveryReport) -> Outcome {
    let mut text: Vec<String> = r.to_markdown().lines().map(str::to_owned).collect();
    if !r.stored.is_empty() {
        text.push(String::new());
        text.push(format!("(report stored as {})", r.stored.join(" and ")));
    }
    let failed_verification = r.restored.as_ref().is_some_and(|x| !x.problems.is_empty());
    let mut out = Outcome::ok(text, json!({"ok": r.ok, "report": r}));
    if !r.ok {
        out.code = if failed_verification {
            EXIT_VERIFY
        } else {
            EXIT_FAILED
        };
        if let Some(e) = &r.error {
            out.errors.push(e.clone());
        }
    }
    out
}

pub(crate) fn recovery_rollback(r: &zdr::recover::RecoveryRollback) -> Outcome {
    let mut text = vec![format!(
        "rollback of {} ({} {}): {} in {:.1}s",
        r.recovery,
        r.component,
        r.container,
        if r.ok { "done" } else { "FAILED" },
        r.seconds
    )];
    for s in &r.steps {
        text.push(format!("  {:<15} {:?}: {}", s.id, s.status, s.detail));
    }
    for k in &r.restored {
        text.push(format!("  volume {} is back as {}", k.kept_as, k.original));
    }
    for k in &r.displaced {
        text.push(format!(
            "  recovered volume {} kept as {}",
            k.original, k.kept_as
        ));
    }
    let mut out = Outcome::ok(text, json!({"ok": r.ok, "rollback": r}));
    if !r.ok {
        out.code = EXIT_FAILED;
        if let Some(e) = &r.error {
            out.errors.push(e.clone());
        }
    }
    out
}

pub(crate) fn system_recovery(r: &zdr::recover::SystemRecoveryReport) -> Outcome {
    let mut text: Vec<String> = r.to_markdown().lines().map(str::to_owned).collect();
    if !r.stored.is_empty() {
        text.push(String::new());
        text.push(format!("(report stored as {})", r.stored.join(" and ")));
    }
    let failed_verification = r
        .components
        .iter()
        .any(|c| c.restored.as_ref().is_some_and(|x| !x.problems.is_empty()));
    let mut out = Outcome::ok(text, json!({"ok": r.ok, "report": r}));
    if !r.ok {
        out.code = if failed_verification {
            EXIT_VERIFY
        } else {
            EXIT_FAILED
        };
        if let Some(e) = &r.error {
            out.errors.push(e.clone());
        }
    }
    out
}

pub(crate) fn job_run(r: &zdr::daemon::JobRun) -> Outcome {
    let mut text = vec![format!(
        "job {} ({}) {} in {:.1} s: {}",
        r.job,
        r.what,
        if r.ok { "succeeded" } else { "FAILED" },
        r.seconds,
        r.message
    )];
    for a in &r.alerts {
        text.push(format!(
            "alert sent: {}",
            json!(a).as_str().unwrap_or("alert")
        ));
    }
    Outcome::ok(text, json!(r)).with_code(!r.ok, EXIT_FAILED)
}

pub(crate) fn jobs(jobs: &[zdr::daemon::JobOverview]) -> Outcome {
    let mut text = vec![format!(
        "{:<24} {:<18} {:<20} {:<10} what",
        "job", "cron (UTC)", "next run", "last run"
    )];
    for j in jobs {
        let last = match &j.state {
            Some(s) if s.failing => "FAILED".to_owned(),
            Some(s) if s.last_success.is_some() => "ok".to_owned(),
            _ => "-".to_owned(),
        };
        text.push(format!(
            "{:<24} {:<18} {:<20} {:<10} {}{}{}",
            j.job,
            j.cron,
            j.next_run.map_or_else(
                || "-".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M").to_string()
            ),
            last,
            j.what,
            if j.default { " (runbook default)" } else { "" },
            if j.ping { " (pings)" } else { "" },
        ));
    }
    Outcome::ok(text, json!({ "jobs": jobs }))
}

pub(crate) fn daemon_exit(exit: &zdr::daemon::DaemonExit) -> Outcome {
    let text = if exit.abandoned.is_empty() {
        vec!["zdr daemon stopped; no job was running or every running job finished".to_owned()]
    } else {
        vec![format!(
            "zdr daemon stopped; abandoned: {} (nothing partial is listed as a backup)",
            exit.abandoned.join(", ")
        )]
    };
    Outcome::ok(text, json!(exit)).with_code(!exit.abandoned.is_empty(), EXIT_FAILED)
}
