//! Recovery drills: the sandbox drill on throwaway data (the README's main job) and drills
//! of configured components, which restore into a scratch target and never touch live data.

#[cfg(all(feature = "files", feature = "postgres"))]
mod postgres;
#[cfg(all(feature = "files", feature = "redis"))]
mod redis;

#[cfg(feature = "files")]
use std::path::Path;

use std::path::PathBuf;
use std::time::Instant;
#[cfg(feature = "files")]
use zdr_core::Verifier;

use serde::Serialize;
#[cfg(feature = "files")]
use serde_json::json;
use zdr_core::{
    BackupSelector, Component, Error, Manifest, Progress, RestoreTarget, Result, VerifyReport,
};
#[cfg(feature = "files")]
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

use crate::adapter::{self, ComponentType, RestoreOptions};
#[cfg(feature = "files")]
use crate::human_bytes;
use crate::stack::{Stack, scratch_outcome, select_for};

/// Options of the sandbox drill.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// The `zdr` executable, for the point-in-time part: the throwaway cluster archives WAL
    /// through `zdr wal push` and recovers through `zdr wal fetch`. Without it that part is
    /// skipped.
    pub zdr_program: Option<PathBuf>,
}

/// What the sandbox drill did.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxReport {
    /// True when every part passed (a part skipped for lack of server binaries counts as
    /// passed; the report says so).
    pub ok: bool,
    /// The steps, one line each, in order (with what was done, the figures and the RTO).
    pub steps: Vec<String>,
    /// The whole report as data: per part (configs, postgres, redis) the backup, timings,
    /// restore outcome and verification.
    pub details: serde_json::Value,
    /// Seconds from start to end.
    pub total_seconds: f64,
}

/// What a drill of one configured component did.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The component.
    pub component: String,
    /// The backup restored.
    pub backup: Manifest,
    /// The tier it was read from.
    pub tier: String,
    /// How many items the scratch restore held.
    pub items: u64,
    /// The verification against the manifest's facts.
    pub verify: VerifyReport,
    /// Restore + verification, in seconds.
    pub rto_seconds: f64,
}

impl DrillReport {
    /// True when the verification passed.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.verify.is_ok()
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::from_io(e, what.to_owned())
}

/// Write a small but realistic config tree: env files, YAML, a TLS key with mode 0600,
/// an executable hook, a symlink, nested directories and one larger binary file.
#[cfg(feature = "files")]
fn make_configs(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dirs = [
        "postgres",
        "redis",
        "qdrant",
        "vault/policies",
        "nginx/sites",
        "hooks",
        "app",
    ];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).map_err(io("create sandbox dirs"))?;
    }
    let w = |p: &str, body: String| {
        std::fs::write(root.join(p), body).map_err(io("write sandbox file"))
    };
    w(
        "postgres/postgresql.conf",
        "archive_mode = on\narchive_command = 'zdr wal push %p'\nshared_buffers = 256MB\n".into(),
    )?;
    w("redis/redis.conf", "appendonly yes\nsave 900 1\n".into())?;
    w(
        "qdrant/config.yaml",
        "storage:\n  snapshots_path: /qdrant/snapshots\n".into(),
    )?;
    w(
        "app/.env",
        "DATABASE_URL=postgres://app@postgres/zentoria_main\nLOG_LEVEL=info\n".into(),
    )?;
    for i in 0..40 {
        w(
            &format!("vault/policies/policy_{i:02}.hcl"),
            format!(
                "path \"secret/data/zentoria/{i}/*\" {{\n  capabilities = [\"read\", \"list\"]\n}}\n"
            ),
        )?;
        w(
            &format!("nginx/sites/site_{i:02}.conf"),
            format!(
                "server {{\n  listen 443 ssl;\n  server_name s{i}.zentoria.local;\n  location / {{ proxy_pass http://app:{}; }}\n}}\n",
                8000 + i
            ),
        )?;
    }
    w(
        "nginx/tls.key",
        "-----BEGIN PRIVATE KEY-----\nsandbox-only, not a real key\n-----END PRIVATE KEY-----\n"
            .into(),
    )?;
    std::fs::set_permissions(
        root.join("nginx/tls.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(io("chmod"))?;
    w("hooks/post-restore.sh", "#!/bin/sh\necho restored\n".into())?;
    std::fs::set_permissions(
        root.join("hooks/post-restore.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .map_err(io("chmod"))?;
    std::os::unix::fs::symlink("sites/site_00.conf", root.join("nginx/default.conf"))
        .map_err(io("symlink"))?;
    // 8 MiB of pseudo-random bytes (a GeoIP database, a model, ...): real entropy.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blob: Vec<u8> = (0..8 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(root.join("app/geo.db"), blob).map_err(io("write sandbox file"))?;
    Ok(())
}

/// The sandbox drill: everything throwaway, nothing configured. Config files (and, when
/// their server binaries are installed, a PostgreSQL cluster with point-in-time recovery and
/// a Redis server) are backed up to a local-disk tier in a temp dir, broken, restored from
/// the catalog rebuilt from the tier, and verified.
///
/// # Errors
/// Only when the sandbox itself cannot be set up or the config-files part cannot run; a
/// part that fails its verification is reported in [`SandboxReport::ok`].
#[cfg(feature = "files")]
pub async fn sandbox(options: &SandboxOptions, progress: &Progress) -> Result<SandboxReport> {
    let total = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("zdr-drill-")
        .tempdir()
        .map_err(io("create sandbox"))?;
    let live = dir.path().join("opt/zentoria/config");
    std::fs::create_dir_all(&live).map_err(io("create sandbox"))?;
    make_configs(&live)?;
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().join("backup/local"),
        },
    )?;
    let repo = Repository::new(tier, PipelineOptions::default());
    let component = Component::new("configs")?;
    let files = zdr_files::FilesComponent::new(component.clone(), live.clone());
    let mut text = vec![format!("sandbox: {}", dir.path().display())];

    // 1. Back up.
    let t = Instant::now();
    let m = repo.backup(&files, "daily", progress).await?;
    let backup_secs = t.elapsed().as_secs_f64();
    let raw: u64 = m.artifacts.iter().map(|a| a.raw_size).sum();
    text.push(format!(
        "1. backup   {} {}: {} raw -> {} stored (zstd) in {backup_secs:.2}s",
        m.component,
        m.id,
        human_bytes(raw),
        human_bytes(m.stored_size())
    ));
    for a in &m.artifacts {
        text.push(format!("             {}  sha256 {}", a.key, a.sha256));
    }

    // 2. Break: the accident deletes the whole tree.
    std::fs::remove_dir_all(&live).map_err(io("delete sandbox tree"))?;
    let gone = verify_files(&files, &m, &live).await?;
    text.push(format!(
        "2. break    deleted {}; verification now reports {} problem(s)",
        live.display(),
        gone.problems.len()
    ));

    // 3. Restore: the catalog is rebuilt from the tier, the checksums checked first.
    let t = Instant::now();
    let catalog = repo.catalog().await?;
    let latest = catalog
        .select(&component, &zdr_core::BackupSelector::Latest)?
        .clone();
    let outcome = repo
        .restore(
            &files,
            &latest,
            &RestoreTarget {
                path: Some(live.clone()),
                ..RestoreTarget::default()
            },
            progress,
        )
        .await?;
    let restore_secs = t.elapsed().as_secs_f64();
    text.push(format!(
        "3. restore  {} item(s), {} into {} in {restore_secs:.2}s",
        outcome.items,
        human_bytes(outcome.bytes),
        outcome.target
    ));

    // 4. Verify the restored tree against the per-file hashes in the manifest.
    let t = Instant::now();
    let report = verify_files(&files, &latest, &live).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    let ok = report.is_ok() && !gone.is_ok();
    text.push(format!(
        "4. verify   {} entries checked, {} problem(s) in {verify_secs:.2}s",
        report.checked,
        report.problems.len()
    ));
    text.extend(
        report
            .problems
            .iter()
            .map(|p| format!("             problem: {p}")),
    );
    let rto = restore_secs + verify_secs;
    text.push(format!(
        "5. report   configs {}: RTO {rto:.2}s (restore + verify; runbook objective 15 min)",
        if ok { "PASSED" } else { "FAILED" },
    ));

    // PostgreSQL, when its binaries are installed: a throwaway cluster on the same tier.
    #[cfg(feature = "postgres")]
    let (pg_ok, pg_json) = match postgres::run_drill(&repo, options, progress).await {
        Err(e) => {
            text.push(format!("6. postgres FAILED: {e}"));
            (
                false,
                json!({"ok": false, "error": {"kind": e.kind().as_str(), "message": e.to_string()}}),
            )
        }
        Ok(postgres::PgDrillOutcome::Skipped(why)) => {
            text.push(format!(
                "6. postgres SKIPPED: {why}; install postgresql-15 to drill it (the config files were drilled)"
            ));
            (true, json!({"skipped": why}))
        }
        Ok(postgres::PgDrillOutcome::Ran(d)) => {
            text.extend(d.text);
            text.push(format!(
                "11. report  postgres {}: RTO {:.2}s (side database restore + verification + swap; runbook objective 15 min)",
                if d.ok { "PASSED" } else { "FAILED" },
                d.rto
            ));
            (d.ok, d.json)
        }
    };
    #[cfg(not(feature = "postgres"))]
    let (pg_ok, pg_json) = {
        let _ = options;
        (
            true,
            json!({"skipped": "built without the postgres feature"}),
        )
    };
    // Redis, when redis-server is installed: a throwaway server on the same tier.
    #[cfg(feature = "redis")]
    let (redis_ok, redis_json) = match redis::run_drill(&repo, progress).await {
        Err(e) => {
            text.push(format!("12. redis   FAILED: {e}"));
            (
                false,
                json!({"ok": false, "error": {"kind": e.kind().as_str(), "message": e.to_string()}}),
            )
        }
        Ok(redis::RedisDrillOutcome::Skipped(why)) => {
            text.push(format!(
                "12. redis   SKIPPED: {why}; install redis-server to drill it (the rest was drilled)"
            ));
            (true, json!({"skipped": why}))
        }
        Ok(redis::RedisDrillOutcome::Ran {
            text: t,
            json: j,
            ok: o,
        }) => {
            text.extend(t);
            (o, j)
        }
    };
    #[cfg(not(feature = "redis"))]
    let (redis_ok, redis_json) = (true, json!({"skipped": "built without the redis feature"}));
    let all_ok = ok && pg_ok && redis_ok;
    text.push(format!(
        "drill {}: total {:.2}s",
        if all_ok { "PASSED" } else { "FAILED" },
        total.elapsed().as_secs_f64()
    ));
    Ok(SandboxReport {
        ok: all_ok,
        steps: text,
        details: json!({"ok": all_ok, "sandbox": dir.path(), "backup": latest, "backup_seconds": backup_secs,
            "restore_seconds": restore_secs, "verify_seconds": verify_secs, "rto_seconds": rto,
            "restore": outcome, "verify": report, "postgres": pg_json, "redis": redis_json}),
        total_seconds: total.elapsed().as_secs_f64(),
    })
}

#[cfg(feature = "files")]
async fn verify_files(
    files: &zdr_files::FilesComponent,
    m: &zdr_core::Manifest,
    path: &Path,
) -> Result<zdr_core::VerifyReport> {
    files
        .verify(
            m,
            &RestoreTarget {
                path: Some(path.to_path_buf()),
                ..RestoreTarget::default()
            },
        )
        .await
}

impl Stack {
    /// Drill the named component: restore its latest backup (that it can restore) from the
    /// primary tier into a scratch target — a scratch directory for files, a scratch
    /// database for postgres, a scratch server for redis — verify it against the manifest's
    /// facts and remove it. Live data is never touched.
    ///
    /// # Errors
    /// A component type without a scratch target (vault, qdrant); no backup; the restore's
    /// errors.
    pub async fn drill(&self, name: &str, progress: &Progress) -> Result<DrillReport> {
        let (adapter, ty) = self.adapter_for_drill(name).await?;
        let tier = self.config().primary.clone();
        let repo = self.repository(&tier)?;
        let comp = Component::new(name)?;
        let catalog = repo.catalog().await?;
        let options = RestoreOptions::default();
        let m = select_for(&catalog, &comp, &BackupSelector::Latest, |m| {
            adapter::accepts(ty, &options, m)
        })?;
        let scratch = tempfile::Builder::new()
            .prefix("zdr-drill-")
            .tempdir()
            .map_err(io("create scratch dir"))?;
        // Files go to a scratch directory; postgres and redis restore into their own scratch
        // database or server.
        let target = RestoreTarget {
            path: (ty == ComponentType::Files).then(|| scratch.path().join(name)),
            ..RestoreTarget::default()
        };
        let t = Instant::now();
        let result = repo
            .restore(adapter.restorer().as_ref(), &m, &target, progress)
            .await;
        let (items, verify) = if adapter.verifies_itself() {
            // The scratch database (or server) was compared with the facts, then dropped.
            let (outcome, verify) = scratch_outcome(result)?;
            (outcome.map_or(0, |o| o.items), verify)
        } else {
            let outcome = result?;
            (outcome.items, adapter.verifier().verify(&m, &target).await?)
        };
        Ok(DrillReport {
            component: name.to_owned(),
            backup: m,
            tier,
            items,
            verify,
            rto_seconds: t.elapsed().as_secs_f64(),
        })
    }
}
