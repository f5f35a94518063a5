//! The PostgreSQL part of `zdr drill --sandbox`: a throwaway cluster (`initdb` into a temp
//! dir, a free port, scram-sha-256 over TCP), `pgbench -i` data, backup, an accident,
//! the safe restore (side database, verification, swap), and the RTO.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use zdr_core::{BackupSelector, Component, Error, Progress, RestoreTarget, Result, Verifier};
use zdr_postgres::{PgConfig, PgFacts, PostgresComponent};
use zdr_storage::Repository;

use super::SandboxOptions;
use crate::human_bytes;
use crate::postgres::{PitrFinish, PitrRequest, ZdrCommand};
use crate::stack::Stack;
use crate::{free_port, is_root};

/// The PostgreSQL server binaries (`$ZDR_PG_BIN_DIR`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`), or why there are none.
fn find_bin_dir() -> std::result::Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("ZDR_PG_BIN_DIR") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "PostgreSQL server binaries (initdb) not found in ZDR_PG_BIN_DIR={}",
                dir.display()
            ))
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    Err("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on PATH".to_owned())
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::from_io(e, what.to_owned())
}

/// A throwaway cluster, stopped (and its directory removed) on drop.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    root: bool,
    password: String,
}

impl Cluster {
    fn command(&self, program: &str) -> tokio::process::Command {
        server_command(&self.bin, program, self.root)
    }

    async fn start(bin: &Path, password: &str) -> Result<Self> {
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("zdr-drill-pg-")
            .tempdir()
            .map_err(io("create the cluster dir"))?;
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, password).map_err(io("write the password file"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod the password file"))?;
        }
        if root {
            run(tokio::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()))
            .await?;
        }
        let port = free_port()?;
        let cluster = Self {
            dir,
            bin: bin.to_path_buf(),
            port,
            root,
            password: password.to_owned(),
        };
        let data = cluster.dir.path().join("data");
        run(cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "zdr",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "-N"]))
        .await?;
        let _ = std::fs::remove_file(&pwfile);
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.dir.path().display()
        );
        run(cluster
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-w", "-t", "60", "-l"])
            .arg(cluster.dir.path().join("log"))
            .arg("start"))
        .await?;
        Ok(cluster)
    }

    /// A client tool over the Unix socket (trust).
    fn client(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.bin.join(program));
        c.env("PGHOST", self.dir.path())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "zdr");
        c
    }

    async fn psql(&self, db: &str, sql: &str) -> Result<String> {
        run(self.client("psql").args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
            "-c",
            sql,
        ]))
        .await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut c = if self.root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            std::process::Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn server_command(bin: &Path, program: &str, root: bool) -> tokio::process::Command {
    if root {
        // The server refuses to run as root: run it as the postgres OS user.
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        tokio::process::Command::new(bin.join(program))
    }
}

async fn run(cmd: &mut tokio::process::Command) -> Result<String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(io("run a PostgreSQL tool"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(Error::new(
            zdr_core::ErrorKind::Source,
            format!(
                "{:?} failed: {}",
                cmd.as_std().get_program(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// What the PostgreSQL part of the drill did.
pub struct PgDrill {
    /// Report lines.
    pub text: Vec<String>,
    /// The JSON report.
    pub json: serde_json::Value,
    /// Whether it passed.
    pub ok: bool,
    /// Restore + verification seconds.
    pub rto: f64,
}

/// The PostgreSQL part of the drill ran, or was skipped (no server binaries).
pub enum PgDrillOutcome {
    /// It ran.
    Ran(PgDrill),
    /// Why it did not run.
    Skipped(String),
}

/// Run the PostgreSQL drill against `repo`, or say why it was skipped.
pub async fn run_drill(
    repo: &Repository,
    options: &SandboxOptions,
    progress: &Progress,
) -> Result<PgDrillOutcome> {
    let bin = match find_bin_dir() {
        Ok(b) => b,
        Err(why) => {
            progress.warn(why.clone());
            return Ok(PgDrillOutcome::Skipped(why));
        }
    };
    let password: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..24)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect()
    };
    let mut text = Vec::new();
    let t = Instant::now();
    let cluster = Cluster::start(&bin, &password).await?;
    let db = "zentoria_main";
    cluster
        .psql("postgres", &format!("CREATE DATABASE {db}"))
        .await?;
    run(cluster
        .client("pgbench")
        .args(["-i", "-s", "1", "-q", "--foreign-keys", db]))
    .await?;
    cluster
        .psql(
            db,
            "CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), \
             payload jsonb); INSERT INTO audit (payload) SELECT jsonb_build_object('n', g, \
             'md5', md5(g::text)) FROM generate_series(1, 20000) g",
        )
        .await?;
    text.push(format!(
        "6. postgres throwaway PostgreSQL cluster on port {} ({}), pgbench -i -s 1 + 20k jsonb rows in {:.2}s",
        cluster.port,
        bin.display(),
        t.elapsed().as_secs_f64()
    ));

    let mut config = PgConfig::new("127.0.0.1", cluster.port, "zdr", db);
    config.password = Some(password.clone().into());
    config.bin_dir = Some(bin.clone());
    config.checksums = true;
    let pg = PostgresComponent::new(Component::new("postgres")?, config);

    // Back up.
    let t = Instant::now();
    let m = repo.backup(&pg, "daily", progress).await?;
    let backup_secs = t.elapsed().as_secs_f64();
    let facts = PgFacts::from_manifest(&m)?;
    let raw: u64 = m.artifacts.iter().map(|a| a.raw_size).sum();
    text.push(format!(
        "7. backup   postgres {}: {} tables, {} raw -> {} stored in {backup_secs:.2}s",
        m.id,
        facts.tables.len(),
        human_bytes(raw),
        human_bytes(m.stored_size())
    ));

    // The accident.
    cluster
        .psql(
            db,
            "DROP TABLE pgbench_accounts CASCADE; DELETE FROM audit WHERE id % 3 = 0",
        )
        .await?;
    let broken = pg.verify(&m, &RestoreTarget::default()).await?;
    text.push(format!(
        "8. break    DROP TABLE pgbench_accounts, DELETE a third of audit; verification now reports {} problem(s)",
        broken.problems.len()
    ));

    // Restore via the safe path: side database, verification, swap.
    let t = Instant::now();
    let latest = repo
        .catalog()
        .await?
        .select(pg.component(), &BackupSelector::Latest)?
        .clone();
    let outcome = repo
        .restore(&pg, &latest, &RestoreTarget::default(), progress)
        .await?;
    let restore_secs = t.elapsed().as_secs_f64();
    text.push(format!(
        "9. restore  into a side database, verified, swapped in {restore_secs:.2}s"
    ));
    text.extend(outcome.notes.iter().map(|n| format!("             {n}")));

    let t = Instant::now();
    let report = pg.verify(&latest, &RestoreTarget::default()).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    let accounts = cluster
        .psql(db, "SELECT count(*) FROM pgbench_accounts")
        .await?;
    let ok = report.is_ok() && !broken.is_ok() && accounts == "100000";
    text.push(format!(
        "10. verify  {} checks, {} problem(s), pgbench_accounts has {accounts} rows in {verify_secs:.2}s",
        report.checked,
        report.problems.len()
    ));
    text.extend(
        report
            .problems
            .iter()
            .map(|p| format!("             problem: {p}")),
    );
    let rto = restore_secs;

    // Point-in-time recovery on the same cluster: archiving through this very binary.
    let pitr = match &options.zdr_program {
        Some(zdr) => pitr_drill(&cluster, &bin, zdr, db, progress).await,
        None => Ok((
            vec!["10b. pitr   SKIPPED: no zdr executable given for archive_command".to_owned()],
            json!({"skipped": "no zdr executable given for archive_command"}),
            true,
        )),
    };
    let (pitr_ok, pitr_json) = match pitr {
        Ok((lines, j, ok)) => {
            text.extend(lines);
            (ok, j)
        }
        Err(e) => {
            text.push(format!("10b. pitr   FAILED: {e}"));
            (false, json!({"ok": false, "error": e.to_string()}))
        }
    };
    let ok = ok && pitr_ok;
    Ok(PgDrillOutcome::Ran(PgDrill {
        text,
        json: json!({"ok": ok, "backup": latest.id, "backup_seconds": backup_secs,
            "restore_seconds": restore_secs, "verify_seconds": verify_secs, "rto_seconds": rto,
            "restore": outcome, "verify": report, "bin_dir": bin, "pitr": pitr_json}),
        ok,
        rto,
    }))
}

/// The runbook's PITR scenario on the drill's cluster, through the same library calls as
/// `zdr pitr`: archiving on (`zdr wal push` of the given binary into a WAL tier in the
/// cluster's directory), a base backup, rows written, the time T recorded, an accident, then
/// recovery to T (checked: no commit after T replayed) with the database copied back into the
/// live cluster.
async fn pitr_drill(
    cluster: &Cluster,
    bin: &Path,
    zdr_program: &Path,
    db: &str,
    progress: &Progress,
) -> Result<(Vec<String>, serde_json::Value, bool)> {
    use zdr_postgres::pitr::RecoveryTarget;

    let mut text = Vec::new();
    let root = cluster.dir.path().join("pitr");
    let tier_dir = root.join("tier");
    std::fs::create_dir_all(tier_dir.join(".zdr-tmp")).map_err(io("create the WAL tier"))?;
    std::fs::create_dir_all(root.join("recovery")).map_err(io("create the recovery dir"))?;
    let config_path = root.join("zdr.toml");
    let config_text = format!(
        "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n\
         [components.postgres]\ntype = \"postgres\"\nport = {}\nuser = \"zdr\"\n\
         database = \"{db}\"\nbin_dir = \"{}\"\n\
         [components.postgres.wal]\nrun_as = \"postgres\"\nrecovery_timeout_secs = 300\n",
        tier_dir.display(),
        cluster.port,
        bin.display()
    );
    std::fs::write(&config_path, &config_text).map_err(io("write the drill's WAL config"))?;
    if cluster.root {
        run(tokio::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&root))
        .await?;
    }
    let zdr = ZdrCommand {
        program: zdr_program.to_path_buf(),
        config: config_path.clone(),
    };
    // The password reaches the library the way it reaches the CLI: never through the file.
    let env = [(
        "ZDR_COMPONENTS__POSTGRES__PASSWORD".to_owned(),
        cluster.password.clone(),
    )];
    let stack = Stack::open_unresolved(crate::Config::parse(
        &config_text,
        &config_path.display().to_string(),
        env.into_iter(),
    )?);
    cluster
        .psql("postgres", "ALTER SYSTEM SET archive_mode = on")
        .await?;
    cluster
        .psql(
            "postgres",
            &format!(
                "ALTER SYSTEM SET archive_command = '{} --config {} --no-progress wal push --component postgres %p'",
                zdr.program.display(),
                zdr.config.display()
            ),
        )
        .await?;
    run(cluster
        .command("pg_ctl")
        .arg("-D")
        .arg(cluster.dir.path().join("data"))
        .args(["-w", "-t", "60", "-m", "fast", "-l"])
        .arg(cluster.dir.path().join("log"))
        .arg("restart"))
    .await?;

    let t = Instant::now();
    let base = stack
        .base_backup("postgres", Some("daily"), progress)
        .await?;
    text.push(format!(
        "10b. pitr   archiving on (archive_command = zdr wal push); base backup {} ({}) in {:.2}s",
        base.backup.id,
        human_bytes(base.backup.stored_size()),
        t.elapsed().as_secs_f64()
    ));
    cluster
        .psql(
            db,
            "INSERT INTO audit (payload) SELECT jsonb_build_object('after_base', g) \
             FROM generate_series(1, 5000) g",
        )
        .await?;
    let expected = cluster.psql(db, "SELECT count(*) FROM audit").await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let target_text = cluster
        .psql(
            "postgres",
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        )
        .await?;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    cluster
        .psql(db, "DELETE FROM audit WHERE id % 2 = 0; INSERT INTO audit (payload) VALUES ('{\"after\": \"T\"}')")
        .await?;
    let live = stack.postgres_settings("postgres")?.to_pg(None)?;
    let last = zdr_postgres::switch_wal(&live).await?;
    stack
        .wal_archive(Some("postgres"))?
        .wait_archived(&last, std::time::Duration::from_secs(60), progress)
        .await?;
    text.push(format!(
        "10c. pitr   {expected} audit rows at T = {target_text} UTC; then DELETE of half of them; WAL up to {last} archived"
    ));

    let report = stack
        .pitr(
            "postgres",
            &PitrRequest {
                target: RecoveryTarget::Time(zdr_core::parse_time(&target_text)?),
                timeline: None,
                tier: None,
                data_dir: Some(root.join("recovery").join("data")),
                port: None,
                finish: PitrFinish::ApplyDatabase {
                    database: db.to_owned(),
                    discard: true,
                },
                zdr,
            },
            progress,
        )
        .await?;
    let rto = report.rto_seconds;
    let now = cluster.psql(db, "SELECT count(*) FROM audit").await?;
    let ok = now == expected;
    text.push(format!(
        "10d. pitr   recovered to T (base + WAL to {}), {db} copied back through the safe restore: audit has {now} rows (expected {expected}); RTO {rto:.2}s {}",
        report.recovery.replay_lsn.as_deref().unwrap_or("?"),
        if ok { "PASSED" } else { "FAILED" }
    ));
    Ok((
        text,
        json!({"ok": ok, "target": target_text, "expected_rows": expected, "rows": now,
            "rto_seconds": rto, "recovery": report.recovery,
            "restore": report.applied.map(|a| a.outcome)}),
        ok,
    ))
}
