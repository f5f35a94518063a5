//! zdr-postgres against a real PostgreSQL 15 (a throwaway cluster per test, see
//! `zdr_tests::postgres`), with backups stored on a real local-filesystem tier.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use zdr_tests::postgres as support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use support::{Cluster, PASSWORD, PG_BIN, SUPERUSER};
use tokio::io::{AsyncRead, ReadBuf};
use zdr_core::{
    ArtifactReader, ArtifactRecord, BackupSelector, BoxRead, Component, ErrorKind, Manifest,
    Progress, RestoreTarget, Restorer, Result, Verifier,
};
use zdr_postgres::{DumpFormat, PgConfig, PgFacts, PostgresComponent, RestoreMode, RestoreOptions};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

const SEED: &str = r"
CREATE EXTENSION pgcrypto;
CREATE EXTENSION hstore;
CREATE SEQUENCE invoice_no START 1000;
SELECT setval('invoice_no', 4242);
CREATE TABLE customers (
    id serial PRIMARY KEY,
    name text NOT NULL,
    profile jsonb,
    created timestamptz NOT NULL DEFAULT '2026-01-16 14:30:00+00',
    balance numeric(12, 2),
    avatar bytea,
    tags text[],
    attrs hstore,
    secret bytea
);
INSERT INTO customers (name, profile, balance, avatar, tags, attrs, secret)
SELECT 'customer ' || g, jsonb_build_object('n', g, 'vip', g % 7 = 0, 'note', 'é ü ✓'),
       g * 1.25, decode(md5(g::text), 'hex'), ARRAY['t' || g, 'x'], ('k=>' || g)::hstore,
       digest('s' || g, 'sha256')
FROM generate_series(1, 500) g;
CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text);
INSERT INTO events (what) SELECT 'seed ' || g FROM generate_series(1, 200) g;
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (no int PRIMARY KEY, customer int REFERENCES customers(id), total numeric);
INSERT INTO billing.invoices SELECT 1000 + g, g, g * 10 FROM generate_series(1, 50) g;
SELECT lo_from_bytea(0, 'a large object that must survive');
";

/// A stable digest of the data a restore must bring back.
const DIGEST: &str = "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (\
    SELECT c::text AS x FROM customers c UNION ALL SELECT e::text FROM events e \
    UNION ALL SELECT i::text FROM billing.invoices i \
    UNION ALL SELECT 'seq ' || last_value FROM invoice_no \
    UNION ALL SELECT 'lo ' || encode(lo_get(oid), 'escape') FROM pg_largeobject_metadata) s";

struct Env {
    cluster: Cluster,
    tier_dir: tempfile::TempDir,
    spool_dir: tempfile::TempDir,
    repo: Repository,
}

impl Env {
    fn new() -> Self {
        let cluster = Cluster::start();
        let tier_dir = tempfile::tempdir().unwrap();
        let tier = open_tier(
            "local",
            &TierConfig::Fs {
                root: tier_dir.path().to_path_buf(),
            },
        )
        .unwrap();
        Self {
            cluster,
            tier_dir,
            spool_dir: tempfile::tempdir().unwrap(),
            repo: Repository::new(tier, PipelineOptions::default()),
        }
    }

    fn seed(&self, db: &str) {
        self.cluster
            .psql("postgres", &format!("CREATE DATABASE {db}"));
        self.cluster.psql(db, SEED);
    }

    fn config(&self, db: &str, format: DumpFormat) -> PgConfig {
        let mut c = PgConfig::new("127.0.0.1", self.cluster.port, SUPERUSER, db);
        c.password = Some(PASSWORD.into());
        c.format = format;
        c.checksums = true;
        c.bin_dir = Some(PG_BIN.into());
        c.spool_dir = Some(self.spool_dir.path().to_path_buf());
        c.jobs = 2;
        c
    }

    /// What is left in the spool directory (directory-format dumps and restores).
    fn spool_left(&self) -> Vec<String> {
        std::fs::read_dir(self.spool_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn pg(&self, db: &str, format: DumpFormat) -> PostgresComponent {
        PostgresComponent::new(Component::new("postgres").unwrap(), self.config(db, format))
    }

    fn digest(&self, db: &str) -> String {
        self.cluster.psql(db, DIGEST)
    }

    fn side_dbs(&self) -> Vec<String> {
        self.cluster
            .databases()
            .into_iter()
            .filter(|d| d.contains("__zdr_restore_") || d.contains("__zdr_verify_"))
            .collect()
    }

    fn old_dbs(&self, db: &str) -> Vec<String> {
        self.cluster
            .databases()
            .into_iter()
            .filter(|d| d.starts_with(&format!("{db}__zdr_old_")))
            .collect()
    }
}

/// The suite never skips: without PostgreSQL 15 it fails and says what to install.
fn skip() -> bool {
    assert!(
        support::available(),
        "PostgreSQL 15 server binaries not found in {PG_BIN}: run scripts/install-test-deps.sh"
    );
    false
}

async fn round_trip(format: DumpFormat) -> Result<()> {
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", format);
    let before = env.digest("app");
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let facts = PgFacts::from_manifest(&m)?;
    assert_eq!(facts.dump_format, format);
    assert!(facts.server_version.starts_with("15."));
    assert_eq!(facts.table("customers").unwrap().rows, Some(500));
    assert_eq!(facts.table("billing.invoices").unwrap().rows, Some(50));
    assert!(facts.table("customers").unwrap().md5.is_some());
    assert_eq!(facts.large_objects, 1);
    assert!(facts.extensions.contains(&"hstore".to_owned()));
    let ext = format.ext();
    assert!(
        m.artifacts[0]
            .key
            .contains(&format!("app_{}.{ext}.zst", m.id))
    );
    assert!(m.artifacts.iter().any(|a| a.name == "globals"));
    let manifest_text = String::from_utf8(m.to_json()?).unwrap();
    assert!(!manifest_text.contains(PASSWORD));

    // An accident, then the safe restore.
    env.cluster.psql(
        "app",
        "DELETE FROM events; DROP TABLE billing.invoices; SELECT nextval('invoice_no');",
    );
    assert_eq!(env.cluster.psql("app", "SELECT count(*) FROM events"), "0");
    let latest = env
        .repo
        .catalog()
        .await?
        .select(pg.component(), &BackupSelector::Latest)?
        .clone();
    let out = env
        .repo
        .restore(&pg, &latest, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(out.target, "app");
    assert_eq!(env.digest("app"), before, "restored data differs");
    assert_eq!(
        env.cluster.psql("app", "SELECT nextval('invoice_no')"),
        "4243"
    );
    let restored = env.digest("app");
    assert_eq!(
        env.cluster.psql(
            "app",
            "SELECT count(*) FROM customers WHERE attrs -> 'k' = '7'"
        ),
        "1"
    );
    assert!(env.side_dbs().is_empty());
    let old = env.old_dbs("app");
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(
        env.cluster.psql(&old[0], "SELECT count(*) FROM events"),
        "0"
    );
    assert!(pg.verify(&latest, &RestoreTarget::default()).await?.is_ok());

    // Rollback puts the damaged one back; a second rollback undoes it.
    let rb = pg.rollback("app", &Progress::none()).await?;
    assert_eq!(rb.restored_from, old[0]);
    assert_eq!(env.cluster.psql("app", "SELECT count(*) FROM events"), "0");
    let report = pg.verify(&latest, &RestoreTarget::default()).await?;
    assert!(!report.is_ok());
    pg.rollback("app", &Progress::none()).await?;
    assert_eq!(env.digest("app"), restored);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[tokio::test]
async fn round_trip_custom_format() -> Result<()> {
    if skip() {
        return Ok(());
    }
    round_trip(DumpFormat::Custom).await
}

#[tokio::test]
async fn round_trip_plain_format_restorable_by_hand() -> Result<()> {
    if skip() {
        return Ok(());
    }
    round_trip(DumpFormat::Plain).await?;
    // The runbook's way: zstd -dc | psql works on the stored artifact.
    let env = Env::new();
    env.seed("app");
    let m = env
        .repo
        .backup(
            &env.pg("app", DumpFormat::Plain),
            "daily",
            &Progress::none(),
        )
        .await?;
    let file = env.tier_dir.path().join(&m.artifacts[0].key);
    env.cluster.psql("postgres", "CREATE DATABASE byhand");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | {PG_BIN}/psql -X -q -v ON_ERROR_STOP=1 -h {} -p {} -U {SUPERUSER} -d byhand -o /dev/null",
            file.display(),
            env.cluster.dir.path().display(),
            env.cluster.port
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(env.digest("byhand"), env.digest("app"));
    Ok(())
}

/// Reads a real artifact, slowly, and optionally fails after `fail_after` bytes.
struct SlowReader {
    repo: Repository,
    delay: Duration,
    fail_after: Option<u64>,
}

struct Slow {
    inner: BoxRead,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    delay: Duration,
    read: u64,
    fail_after: Option<u64>,
}

impl AsyncRead for Slow {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(limit) = self.fail_after
            && self.read >= limit
        {
            return Poll::Ready(Err(zdr_core::Error::integrity(
                "injected: artifact corrupt midway",
            )
            .into_io()));
        }
        if self.sleep.is_none() {
            let d = self.delay;
            self.sleep = Some(Box::pin(tokio::time::sleep(d)));
        }
        if let Some(s) = self.sleep.as_mut()
            && s.as_mut().poll(cx).is_pending()
        {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        // Small reads, so the restore takes a while.
        let room = buf.remaining().min(4096);
        let mut tmp = vec![0u8; room];
        let mut rb = ReadBuf::new(&mut tmp);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(rb.filled());
                let n = (buf.filled().len() - before) as u64;
                self.read += n;
                self.sleep = None;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

use std::future::Future;

#[async_trait]
impl ArtifactReader for SlowReader {
    async fn open(&self, a: &ArtifactRecord) -> Result<BoxRead> {
        Ok(Box::new(Slow {
            inner: self.repo.open(a, Progress::none())?,
            sleep: None,
            delay: self.delay,
            read: 0,
            fail_after: self.fail_after,
        }))
    }
}

async fn backup_events(env: &Env, format: DumpFormat) -> (PostgresComponent, Manifest) {
    env.seed("app");
    // Enough data that a slow reader takes a few seconds.
    env.cluster.psql(
        "app",
        "INSERT INTO events (what) SELECT repeat(md5(g::text), 4) FROM generate_series(1, 3000) g",
    );
    let pg = env.pg("app", format);
    let m = env
        .repo
        .backup(&pg, "daily", &Progress::none())
        .await
        .unwrap();
    (pg, m)
}

#[tokio::test]
async fn live_database_stays_writable_during_a_safe_restore() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    let (pg, m) = backup_events(&env, DumpFormat::Custom).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, ok) = (stop.clone(), ok.clone());
        let (dir, port) = (env.cluster.dir.path().to_path_buf(), env.cluster.port);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let st = std::process::Command::new(format!("{PG_BIN}/psql"))
                    .args(["-X", "-q", "-h"])
                    .arg(&dir)
                    .args(["-p", &port.to_string(), "-U", SUPERUSER, "-d", "app", "-c"])
                    .arg("INSERT INTO events (what) VALUES ('written during the restore')")
                    .stderr(std::process::Stdio::null())
                    .status();
                if st.map(|s| s.success()).unwrap_or(false) {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let reader = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::from_millis(2),
        fail_after: None,
    };
    let (target, progress) = (RestoreTarget::default(), Progress::none());
    let restore = pg.restore(&m, &reader, &target, &progress);
    tokio::pin!(restore);
    // While the restore runs, the live database takes writes.
    let mut during = 0;
    let out = loop {
        tokio::select! {
            r = &mut restore => break r?,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                during = ok.load(Ordering::SeqCst);
            }
        }
    };
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        during > 3,
        "only {during} writes succeeded during the restore"
    );
    assert!(out.notes.iter().any(|n| n.contains("__zdr_old_")));
    // The writes made during the restore are in the old database, kept for inspection.
    let old = env.old_dbs("app");
    assert_eq!(old.len(), 1);
    let kept: u64 = env
        .cluster
        .psql(
            &old[0],
            "SELECT count(*) FROM events WHERE what = 'written during the restore'",
        )
        .parse()
        .unwrap();
    assert!(kept >= during, "{kept} < {during}");
    assert!(env.side_dbs().is_empty());
    Ok(())
}

#[tokio::test]
async fn interrupted_restore_leaves_live_untouched_and_is_cleaned_next_run() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    let (pg, m) = backup_events(&env, DumpFormat::Plain).await;
    env.cluster
        .psql("app", "DELETE FROM events WHERE id % 2 = 0");
    let live = env.digest("app");

    // 1. The artifact stream fails midway: psql is stopped, the side database dropped.
    let failing = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: Some(64 * 1024),
    };
    let e = pg
        .restore(&m, &failing, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert!(env.side_dbs().is_empty(), "{:?}", env.side_dbs());
    assert!(env.old_dbs("app").is_empty());

    // 2. The restore is killed (its future dropped mid-stream: the tool is killed, nothing
    //    cleans up), leaving the side database behind.
    let slow = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::from_millis(20),
        fail_after: None,
    };
    let killed = tokio::time::timeout(
        Duration::from_millis(1000),
        pg.restore(&m, &slow, &RestoreTarget::default(), &Progress::none()),
    )
    .await;
    assert!(killed.is_err(), "the restore finished before it was killed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.side_dbs().len(), 1);
    assert_eq!(env.digest("app"), live);

    // 3. The next run drops the leftover and restores.
    let out = env
        .repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert!(
        out.notes.iter().any(|n| n.contains("left over")),
        "{:?}",
        out.notes
    );
    assert!(env.side_dbs().is_empty());
    assert!(pg.verify(&m, &RestoreTarget::default()).await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn flipped_byte_is_refused_before_the_target_is_touched() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster
        .psql("app", "DELETE FROM customers WHERE id > 490");
    let live = env.digest("app");
    let dbs = env.cluster.databases();
    let path = env.tier_dir.path().join(&m.artifacts[0].key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let e = env
        .repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(
        env.cluster.databases(),
        dbs,
        "a database was created or dropped"
    );
    // The spool that was the checksum pass is gone too.
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[tokio::test]
async fn unknown_database_table_and_wrong_password_are_clear() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.seed("app");
    let dbs = env.cluster.databases();

    let e = env
        .repo
        .backup(
            &env.pg("nosuchdb", DumpFormat::Custom),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(e.to_string().contains("nosuchdb"), "{e}");

    let mut cfg = env.config("app", DumpFormat::Custom);
    cfg.password = Some("wrong-password".into());
    let bad = PostgresComponent::new(Component::new("postgres")?, cfg);
    let e = env
        .repo
        .backup(&bad, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong-password"));
    assert!(env.repo.catalog().await?.list(None).is_empty());

    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let one = pg.restore_with(RestoreOptions {
        table: Some("public.nosuchtable".into()),
        ..RestoreOptions::default()
    });
    let e = env
        .repo
        .restore(&one, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(e.to_string().contains("nosuchtable"), "{e}");
    assert!(e.to_string().contains("public.customers"), "{e}");
    assert_eq!(env.cluster.databases(), dbs);

    // In place without confirmation: refused, nothing changes.
    let in_place = pg.restore_with(RestoreOptions {
        mode: RestoreMode::InPlace { confirmed: false },
        ..RestoreOptions::default()
    });
    let e = env
        .repo
        .restore(&in_place, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert_eq!(env.cluster.databases(), dbs);
    Ok(())
}

#[tokio::test]
async fn missing_tools_and_wrong_major_version() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.seed("app");
    let empty = tempfile::tempdir().unwrap();
    let mut cfg = env.config("app", DumpFormat::Custom);
    cfg.bin_dir = Some(empty.path().to_path_buf());
    let pg = PostgresComponent::new(Component::new("postgres")?, cfg.clone());
    let e = env
        .repo
        .backup(&pg, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("pg_dump") && text.contains("bin_dir"),
        "{text}"
    );
    assert!(text.contains(&empty.path().display().to_string()), "{text}");

    let fake = empty.path().join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 13.0'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = env
        .repo
        .backup(&pg, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let text = e.to_string();
    assert!(text.contains("13.0") && text.contains("15."), "{text}");
    assert!(env.repo.catalog().await?.list(None).is_empty());
    Ok(())
}

#[tokio::test]
async fn single_table_restore_replace_and_as() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster.psql(
        "app",
        "DELETE FROM billing.invoices WHERE no > 1010; INSERT INTO events (what) VALUES ('after')",
    );
    let one = pg.restore_with(RestoreOptions {
        table: Some("billing.invoices".into()),
        ..RestoreOptions::default()
    });
    let out = env
        .repo
        .restore(&one, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert!(out.notes[0].contains("50 rows"), "{:?}", out.notes);
    assert_eq!(
        env.cluster
            .psql("app", "SELECT count(*) FROM billing.invoices"),
        "50"
    );
    // Other tables keep their newer data.
    assert_eq!(
        env.cluster.psql("app", "SELECT count(*) FROM events"),
        "201"
    );

    env.cluster
        .psql("app", "DELETE FROM customers WHERE id > 50");
    let copy = pg.restore_with(RestoreOptions {
        table: Some("customers".into()),
        table_as: Some("customers_restored".into()),
        ..RestoreOptions::default()
    });
    env.repo
        .restore(&copy, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(
        env.cluster
            .psql("app", "SELECT count(*) FROM customers_restored"),
        "500"
    );
    assert_eq!(
        env.cluster.psql("app", "SELECT count(*) FROM customers"),
        "50"
    );
    // --as onto an existing name is a conflict.
    let e = env
        .repo
        .restore(&copy, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(env.side_dbs().is_empty());
    Ok(())
}

#[tokio::test]
async fn verify_restore_in_place_and_restore_of_a_dropped_database() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let before = env.digest("app");
    let dbs = env.cluster.databases();
    let reader = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: None,
    };
    let out = pg.verify_restore(&m, &reader, &Progress::none()).await?;
    assert!(out.target.contains("__zdr_verify_"));
    assert_eq!(env.cluster.databases(), dbs, "scratch database left behind");

    env.cluster
        .psql("app", "DELETE FROM customers WHERE id > 100");
    let in_place = pg.restore_with(RestoreOptions {
        mode: RestoreMode::InPlace { confirmed: true },
        ..RestoreOptions::default()
    });
    env.repo
        .restore(&in_place, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);
    assert!(env.old_dbs("app").is_empty());

    // The database is gone entirely: a safe restore creates it.
    env.cluster
        .psql("postgres", "DROP DATABASE app WITH (FORCE)");
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);

    // Restore under another name, leaving the original alone.
    env.repo
        .restore(
            &pg,
            &m,
            &RestoreTarget {
                name: Some("app_copy".into()),
                ..RestoreTarget::default()
            },
            &Progress::none(),
        )
        .await?;
    assert_eq!(env.digest("app_copy"), before);
    Ok(())
}

#[tokio::test]
async fn verification_mismatch_keeps_live_and_drops_the_side_database() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster.psql("app", "DELETE FROM events WHERE id > 100");
    let live = env.digest("app");
    let dbs = env.cluster.databases();
    // Facts that the dump cannot match: the restore must stop before the swap. With row
    // checksums the tables are read again; without, the counts compared are those the
    // restore's COPYs returned: the mismatch is found all the same.
    let mut facts = PgFacts::from_manifest(&m)?;
    facts
        .tables
        .iter_mut()
        .find(|t| t.name == "customers")
        .unwrap()
        .rows = Some(499);
    let reader = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: None,
    };
    for with_checksums in [true, false] {
        if !with_checksums {
            for t in &mut facts.tables {
                t.md5 = None;
            }
        }
        let mut lying = m.clone();
        lying.facts = serde_json::to_value(&facts).unwrap();
        let e = pg
            .restore(
                &lying,
                &reader,
                &RestoreTarget::default(),
                &Progress::none(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
        assert!(
            e.to_string()
                .contains("public.customers: 500 rows, the backup has 499"),
            "{e}"
        );
        assert_eq!(e.context_value("database"), Some("app"));
        assert_eq!(env.digest("app"), live);
        assert_eq!(env.cluster.databases(), dbs);
    }
    Ok(())
}

/// Wraps the local runner and records every command: the password must only ever be in the
/// secret environment, never in the arguments. (A `docker exec` runner plugs in the same way.)
struct Recording {
    inner: zdr_core::LocalRunner,
    seen: std::sync::Mutex<Vec<zdr_core::CommandSpec>>,
}

#[async_trait]
impl zdr_core::CommandRunner for Recording {
    fn describe(&self) -> String {
        "recording".into()
    }
    async fn spawn(&self, spec: &zdr_core::CommandSpec) -> Result<zdr_core::RunningCommand> {
        self.seen.lock().unwrap().push(spec.clone());
        self.inner.spawn(spec).await
    }
}

#[tokio::test]
async fn password_only_in_the_tools_environment() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let pg = env
        .pg("app", DumpFormat::Custom)
        .with_runner(runner.clone());
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    let seen = runner.seen.lock().unwrap().clone();
    for tool in ["pg_dump", "pg_dumpall", "pg_restore"] {
        assert!(
            seen.iter().any(|s| s.program == tool),
            "{tool} not run: {seen:?}"
        );
    }
    for s in &seen {
        assert!(!s.args.iter().any(|a| a.contains(PASSWORD)), "{s:?}");
        assert!(!s.env.iter().any(|(_, v)| v.contains(PASSWORD)), "{s:?}");
        assert!(!format!("{s:?}").contains(PASSWORD));
        if s.args != ["--version"] {
            assert!(
                s.secret_env
                    .iter()
                    .any(|(k, v)| k == "PGPASSWORD" && v == PASSWORD)
            );
        }
    }
    Ok(())
}

/// Runs every tool normally, except that the table dump of a single-table restore dies
/// after 3000 bytes.
struct BreakTableDump(zdr_core::LocalRunner);

#[async_trait]
impl zdr_core::CommandRunner for BreakTableDump {
    fn describe(&self) -> String {
        "breaks table dumps".into()
    }
    async fn spawn(&self, spec: &zdr_core::CommandSpec) -> Result<zdr_core::RunningCommand> {
        if spec.program == "pg_dump" && spec.args.iter().any(|a| a == "--data-only") {
            let mut broken = spec.clone();
            broken.program = "/bin/sh".into();
            broken.args = vec![
                "-c".into(),
                "\"$0\" \"$@\" | head -c 3000; exit 1".into(),
                format!("{PG_BIN}/pg_dump"),
            ];
            broken.args.extend(spec.args.iter().cloned());
            return self.0.spawn(&broken).await;
        }
        self.0.spawn(spec).await
    }
}

#[tokio::test]
async fn single_table_restore_commits_nothing_when_the_copy_fails() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster.psql("app", "DELETE FROM events WHERE id > 150");
    let broken = pg.with_runner(Arc::new(BreakTableDump(
        zdr_core::LocalRunner::with_bin_dir(PG_BIN),
    )));
    let one = broken.restore_with(RestoreOptions {
        table: Some("public.events".into()),
        ..RestoreOptions::default()
    });
    let e = env
        .repo
        .restore(&one, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source, "{e}");
    assert!(e.to_string().contains("pg_dump of the table failed"), "{e}");
    assert_eq!(e.context_value("table"), Some("public.events"));
    // The TRUNCATE and the partial COPY were rolled back.
    assert_eq!(
        env.cluster.psql("app", "SELECT count(*) FROM events"),
        "150"
    );
    assert!(env.side_dbs().is_empty());
    Ok(())
}

const DIR2: DumpFormat = DumpFormat::Directory { jobs: 2 };

#[tokio::test]
async fn round_trip_directory_format_two_jobs() -> Result<()> {
    skip();
    round_trip(DIR2).await?;

    // pg_dump and pg_restore run with -j 2 from a spool; the artifact is a plain tar that
    // the runbook restores by hand: zstd -dc | tar -x, pg_restore -j 2.
    let env = Env::new();
    env.seed("app");
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let pg = env.pg("app", DIR2).with_runner(runner.clone());
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    assert!(
        m.artifacts[0].key.ends_with(".dir.tar.zst"),
        "{}",
        m.artifacts[0].key
    );
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    let before = env.digest("app");
    env.cluster.psql("app", "DELETE FROM events WHERE id > 10");
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    let seen = runner.seen.lock().unwrap().clone();
    for tool in ["pg_dump", "pg_restore"] {
        assert!(
            seen.iter()
                .any(|s| s.program == tool && s.args.iter().any(|a| a == "--jobs=2") && !s.stdin),
            "{tool} not run with --jobs=2: {seen:?}"
        );
    }

    let file = env.tier_dir.path().join(&m.artifacts[0].key);
    let by_hand = env.tier_dir.path().join("by-hand");
    std::fs::create_dir(&by_hand).unwrap();
    env.cluster.psql("postgres", "CREATE DATABASE byhand");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -dc {} | tar -x -C {d} && {PG_BIN}/pg_restore -j 2 -h {} -p {} -U {SUPERUSER} -d byhand {d}",
            file.display(),
            env.cluster.dir.path().display(),
            env.cluster.port,
            d = by_hand.display(),
        ))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(env.digest("byhand"), before);
    Ok(())
}

#[tokio::test]
async fn directory_format_single_table_restore() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DIR2);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster.psql(
        "app",
        "DELETE FROM billing.invoices WHERE no > 1010; INSERT INTO events (what) VALUES ('after')",
    );
    let one = pg.restore_with(RestoreOptions {
        table: Some("billing.invoices".into()),
        ..RestoreOptions::default()
    });
    let out = env
        .repo
        .restore(&one, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert!(out.notes[0].contains("50 rows"), "{:?}", out.notes);
    assert_eq!(
        env.cluster
            .psql("app", "SELECT count(*) FROM billing.invoices"),
        "50"
    );
    assert_eq!(
        env.cluster.psql("app", "SELECT count(*) FROM events"),
        "201"
    );
    assert!(env.side_dbs().is_empty());
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

/// pg_dump runs to its end, then reports a failure (exit 1).
struct FailingDump(zdr_core::LocalRunner);

#[async_trait]
impl zdr_core::CommandRunner for FailingDump {
    fn describe(&self) -> String {
        "fails pg_dump".into()
    }
    async fn spawn(&self, spec: &zdr_core::CommandSpec) -> Result<zdr_core::RunningCommand> {
        if spec.program == "pg_dump" && !spec.args.iter().any(|a| a == "--version") {
            let mut broken = spec.clone();
            broken.program = "/bin/sh".into();
            broken.args = vec![
                "-c".into(),
                "\"$0\" \"$@\"; echo 'injected failure' >&2; exit 1".into(),
                format!("{PG_BIN}/pg_dump"),
            ];
            broken.args.extend(spec.args.iter().cloned());
            return self.0.spawn(&broken).await;
        }
        self.0.spawn(spec).await
    }
}

#[tokio::test]
async fn directory_format_spool_is_removed_on_failure() -> Result<()> {
    skip();
    let env = Env::new();
    let (pg, m) = backup_events(&env, DIR2).await;
    assert!(env.spool_left().is_empty());

    // A failing pg_dump: no backup, no spool.
    let failing =
        pg.clone()
            .with_runner(Arc::new(FailingDump(zdr_core::LocalRunner::with_bin_dir(
                PG_BIN,
            ))));
    let e = env
        .repo
        .backup(&failing, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("injected failure"), "{e}");
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    assert_eq!(env.repo.catalog().await?.list(None).len(), 1);

    // The artifact stream failing midway: the live database untouched, no side database,
    // no spool.
    env.cluster
        .psql("app", "DELETE FROM events WHERE id % 2 = 0");
    let live = env.digest("app");
    let dbs = env.cluster.databases();
    let broken = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: Some(64 * 1024),
    };
    let e = pg
        .restore(&m, &broken, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(env.cluster.databases(), dbs);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // Facts that the restored data cannot match: pg_restore ran, verification fails, the
    // spool and the side database are gone.
    let mut lying = m.clone();
    let mut facts = PgFacts::from_manifest(&m)?;
    facts
        .tables
        .iter_mut()
        .find(|t| t.name == "events")
        .unwrap()
        .rows = Some(1);
    lying.facts = serde_json::to_value(&facts).unwrap();
    let whole = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: None,
    };
    let e = pg
        .restore(&lying, &whole, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(env.cluster.databases(), dbs);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // A restore killed midway leaves no spool either (dropped future).
    let slow = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::from_millis(20),
        fail_after: None,
    };
    let killed = tokio::time::timeout(
        Duration::from_millis(500),
        pg.restore(&m, &slow, &RestoreTarget::default(), &Progress::none()),
    )
    .await;
    assert!(killed.is_err(), "the restore finished before it was killed");
    // The unpacking thread notices at its next read and lets go of the spool.
    for _ in 0..50 {
        if env.spool_left().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[tokio::test]
async fn directory_format_flipped_byte_is_refused_before_anything() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let pg = env.pg("app", DIR2);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster
        .psql("app", "DELETE FROM customers WHERE id > 490");
    let live = env.digest("app");
    let dbs = env.cluster.databases();
    let path = env.tier_dir.path().join(&m.artifacts[0].key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let e = env
        .repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(
        env.cluster.databases(),
        dbs,
        "a database was created or dropped"
    );
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[test]
fn dump_format_names() {
    assert_eq!(
        "directory".parse::<DumpFormat>().unwrap(),
        DumpFormat::Directory { jobs: 2 }
    );
    assert_eq!(
        "dir:4".parse::<DumpFormat>().unwrap(),
        DumpFormat::Directory { jobs: 4 }
    );
    assert_eq!("custom".parse::<DumpFormat>().unwrap(), DumpFormat::Custom);
    for bad in ["directory:0", "directory:x", "custom:2", "tar"] {
        let e = bad.parse::<DumpFormat>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{bad}");
    }
    assert_eq!(DIR2.ext(), "dir.tar");
    assert_eq!(
        serde_json::to_string(&DIR2).unwrap(),
        r#"{"directory":{"jobs":2}}"#
    );
    assert_eq!(
        serde_json::to_string(&DumpFormat::Custom).unwrap(),
        r#""custom""#
    );
}

#[tokio::test]
async fn a_large_table_gets_its_indexes_while_the_others_load_and_foreign_keys_hold() -> Result<()>
{
    if skip() {
        return Ok(());
    }
    // A table large enough (> 8 MiB of COPY data) for its primary key and index to be built
    // as soon as its data is in, a small table referencing it, a second large one loading
    // after it, a sequence and a check constraint: restored identical, keys enforced.
    let env = Env::new();
    env.cluster.psql("postgres", "CREATE DATABASE big");
    env.cluster.psql(
        "big",
        "CREATE TABLE parent (id int PRIMARY KEY, body text NOT NULL);
         CREATE INDEX parent_body ON parent (body);
         INSERT INTO parent SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 80000) g;
         CREATE TABLE child (id serial PRIMARY KEY, parent_id int NOT NULL REFERENCES parent (id),
                             note text CHECK (note <> ''));
         INSERT INTO child (parent_id, note) SELECT g, 'n' || g FROM generate_series(1, 5000) g;
         CREATE TABLE zlarge (k bigint PRIMARY KEY, v text);
         INSERT INTO zlarge SELECT g, repeat('x', 100) || g FROM generate_series(1, 90000) g;",
    );
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let pg = env
        .pg("big", DumpFormat::Custom)
        .with_runner(runner.clone());
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let digest = |db: &str| {
        env.cluster.psql(
            db,
            "SELECT (SELECT md5(string_agg(id || body, ',' ORDER BY id)) FROM parent) || \
             (SELECT md5(string_agg(id || ':' || parent_id || note, ',' ORDER BY id)) FROM child) || \
             (SELECT md5(string_agg(k || v, ',' ORDER BY k)) FROM zlarge) || \
             (SELECT last_value FROM child_id_seq)",
        )
    };
    let before = digest("big");
    env.cluster
        .psql("big", "DELETE FROM child; DELETE FROM parent WHERE id > 10");
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(digest("big"), before);
    // The keys and indexes are there and enforced.
    let idx = env.cluster.psql(
        "big",
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'",
    );
    assert_eq!(idx, "child_pkey,parent_body,parent_pkey,zlarge_pkey");
    let fk = env.cluster.psql(
        "big",
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated",
    );
    assert_eq!(fk, "1");
    assert!(
        env.cluster
            .try_psql(
                "big",
                "INSERT INTO child (parent_id, note) VALUES (999999, 'x')"
            )
            .is_err(),
        "the foreign key holds"
    );
    // parent's indexes were built by their own runs as its data arrived (stdin: the table of
    // contents), not by the final parallel run.
    let seen = runner.seen.lock().unwrap().clone();
    let early: Vec<_> = seen
        .iter()
        .filter(|s| {
            s.program == "pg_restore"
                && s.stdin
                && s.args.iter().any(|a| a == "--section=post-data")
        })
        .collect();
    assert!(early.len() >= 3, "{seen:?}");
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[tokio::test]
async fn a_dump_the_scanner_gives_up_on_is_loaded_from_the_complete_spool() -> Result<()> {
    if skip() {
        return Ok(());
    }
    // A table of contents entry larger than the scanner holds (a 65 MiB comment): nothing is
    // loaded early, the dump is loaded whole from the verified spool, and nothing is lost.
    let env = Env::new();
    env.cluster.psql("postgres", "CREATE DATABASE huge");
    env.cluster.psql(
        "huge",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;
         DO $$ BEGIN EXECUTE format('COMMENT ON TABLE t IS %L', repeat('c', 65 * 1024 * 1024)); END $$;",
    );
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let pg = env
        .pg("huge", DumpFormat::Custom)
        .with_runner(runner.clone());
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let digest = |db: &str| {
        env.cluster.psql(
            db,
            "SELECT md5(string_agg(id || v, ',' ORDER BY id)) || length(obj_description('t'::regclass)) FROM t",
        )
    };
    let before = digest("huge");
    env.cluster.psql("huge", "DELETE FROM t");
    runner.seen.lock().unwrap().clear();
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(digest("huge"), before);
    let seen = runner.seen.lock().unwrap().clone();
    let restores: Vec<_> = seen
        .iter()
        .filter(|s| s.program == "pg_restore" && s.args != ["--version"])
        .collect();
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert!(
        restores[0].args.iter().any(|a| a.starts_with("--jobs=")) && !restores[0].stdin,
        "{restores:?}"
    );
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

/// Copies the file `pg_restore` reads (its last argument) before it runs.
struct SpoolCopy {
    inner: zdr_core::LocalRunner,
    to: std::path::PathBuf,
}

#[async_trait]
impl zdr_core::CommandRunner for SpoolCopy {
    fn describe(&self) -> String {
        "spool copy".into()
    }
    async fn spawn(&self, spec: &zdr_core::CommandSpec) -> Result<zdr_core::RunningCommand> {
        if spec.program == "pg_restore" && spec.args.iter().any(|a| a.starts_with("--jobs=")) {
            std::fs::copy(spec.args.last().unwrap(), &self.to).unwrap();
        }
        self.inner.spawn(spec).await
    }
}

#[tokio::test]
async fn the_spooled_custom_dump_records_data_positions_as_pg_dump_does() -> Result<()> {
    if skip() {
        return Ok(());
    }
    // pg_dump writes a table of contents without data positions into a pipe (the backup's
    // stream); the restore's spool gets them while it is written. The spool must then be
    // byte for byte what pg_dump writes into a file it can seek in (but the creation time
    // in the header), except for the tables' rows, which went to their loaders from memory
    // and are holes (zeros) in the spool: positions of every table's block and of the large
    // objects' block, the large objects' block itself.
    let env = Env::new();
    let (pg, m) = backup_events(&env, DumpFormat::Custom).await;
    let copied = env.tier_dir.path().join("spool-copy.dump");
    let pg = PostgresComponent::new(pg.component().clone(), pg.config().clone()).with_runner(
        Arc::new(SpoolCopy {
            inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
            to: copied.clone(),
        }),
    );
    // pg_dump into a file, of the database as it was backed up (a restore gives its
    // objects new OIDs, which the table of contents names).
    let by_pg_dump = env.tier_dir.path().join("by-pg-dump.dump");
    let st = std::process::Command::new(format!("{PG_BIN}/pg_dump"))
        .args(["--format=custom", "--compress=0", "-h"])
        .arg(env.cluster.dir.path())
        .args(["-p", &env.cluster.port.to_string(), "-U", SUPERUSER, "-f"])
        .arg(&by_pg_dump)
        .arg("app")
        .status()
        .unwrap();
    assert!(st.success());
    let before = env.digest("app");
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);
    let spooled = std::fs::read(&copied).unwrap();
    let expected = std::fs::read(&by_pg_dump).unwrap();
    assert_eq!(spooled.len(), expected.len());
    // The stream as stored did not have the positions: the artifact decoded by hand differs
    // from pg_dump's file in the table of contents only, the last difference being the last
    // position pg_dump recorded.
    let stored = std::process::Command::new("zstd")
        .arg("-dc")
        .arg(env.tier_dir.path().join(&m.artifacts[0].key))
        .output()
        .unwrap()
        .stdout;
    assert_eq!(stored.len(), expected.len());
    let last_position = (51..expected.len())
        .rev()
        .find(|&i| stored[i] != expected[i])
        .expect("the stored stream has no data positions");
    // Header: magic, version, sizes, format (11 bytes), compression (an int: 5 bytes),
    // then the creation time (7 ints: 35 bytes) — the only part that may differ. Then the
    // table of contents, every position included, exactly pg_dump's.
    assert_eq!(spooled[..16], expected[..16]);
    assert_eq!(
        spooled[51..=last_position],
        expected[51..=last_position],
        "the spooled table of contents differs from pg_dump's"
    );
    // After it, pg_dump's bytes, or holes where rows went to their loaders.
    let holes = (last_position + 1..expected.len())
        .filter(|&i| spooled[i] != expected[i])
        .inspect(|&i| assert_eq!(spooled[i], 0, "byte {i} of the spool"))
        .count();
    assert!(holes > 0, "every table's rows went through the spool");
    let lo = b"a large object that must survive";
    assert!(
        spooled.windows(lo.len()).any(|w| w == lo),
        "the large objects' block is in the spool"
    );
    Ok(())
}

#[tokio::test]
async fn custom_format_restores_with_parallel_jobs_from_a_spool_removed_every_time() -> Result<()> {
    skip();
    let env = Env::new();
    let (pg, m) = backup_events(&env, DumpFormat::Custom).await;
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let mut config = pg.config().clone();
    config.jobs = 3;
    let pg = PostgresComponent::new(pg.component().clone(), config).with_runner(runner.clone());
    let before = env.digest("app");
    env.cluster.psql("app", "DELETE FROM events WHERE id > 10");

    // Loaded while it arrives: the schema, then each table's data block with COPY (the
    // large objects by a pg_restore of their own: stdin the table of contents, then the
    // block), then sequence values and
    // post-data with the configured jobs, pg_restore -j 3, from the complete spool file.
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    let restores: Vec<_> = runner
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.program == "pg_restore" && s.args != ["--version"])
        .cloned()
        .collect();
    let has = |s: &zdr_core::CommandSpec, a: &str| s.args.iter().any(|x| x == a);
    let pre: Vec<_> = restores
        .iter()
        .filter(|s| has(s, "--section=pre-data"))
        .collect();
    assert_eq!(pre.len(), 1, "{restores:?}");
    assert!(pre[0].stdin, "{restores:?}");
    let blocks: Vec<_> = restores.iter().filter(|s| has(s, "--data-only")).collect();
    // The tables' rows go over the protocol (COPY); the large object's block alone is loaded
    // by a pg_restore of its own.
    assert_eq!(blocks.len(), 1, "{restores:?}");
    assert!(
        blocks.iter().all(|s| s.stdin && has(s, "-L")),
        "{restores:?}"
    );
    let parallel: Vec<_> = restores
        .iter()
        .filter(|s| s.args.iter().any(|a| a.starts_with("--jobs=")))
        .collect();
    assert_eq!(parallel.len(), 1, "{restores:?}");
    assert_eq!(restores.len(), 2 + blocks.len(), "{restores:?}");
    let r = parallel[0];
    assert!(r.args.iter().any(|a| a == "--jobs=3"), "{r:?}");
    assert!(has(r, "--section=post-data"), "{r:?}");
    assert!(!r.args.iter().any(|a| a == "--single-transaction"), "{r:?}");
    assert!(!r.stdin, "{r:?}");
    let file = r.args.last().unwrap();
    assert!(
        file.starts_with(&env.spool_dir.path().display().to_string()),
        "{r:?}"
    );

    // Jobs for one call override the config.
    runner.seen.lock().unwrap().clear();
    env.cluster.psql("app", "DELETE FROM events WHERE id > 10");
    let two = pg.restore_with(RestoreOptions {
        jobs: Some(2),
        ..RestoreOptions::default()
    });
    env.repo
        .restore(&two, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.digest("app"), before);
    assert!(
        runner
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.program == "pg_restore" && s.args.iter().any(|a| a == "--jobs=2")),
    );
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // One job: the large objects' pg_restore, the tables' COPYs and the indexes share one
    // slot, and the read of the artifact waits for them without stalling them.
    env.cluster.psql("app", "DELETE FROM events WHERE id > 10");
    let one = pg.restore_with(RestoreOptions {
        jobs: Some(1),
        ..RestoreOptions::default()
    });
    tokio::time::timeout(
        Duration::from_secs(120),
        env.repo
            .restore(&one, &m, &RestoreTarget::default(), &Progress::none()),
    )
    .await
    .expect("a restore with one job finishes")?;
    assert_eq!(env.digest("app"), before);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // The stream failing midway: refused before any database is created, spool removed.
    env.cluster.psql("app", "DELETE FROM events WHERE id > 10");
    let live = env.digest("app");
    let dbs = env.cluster.databases();
    let broken = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: Some(64 * 1024),
    };
    let e = pg
        .restore(&m, &broken, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(env.cluster.databases(), dbs);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // pg_restore ran, the facts do not match: side database dropped, spool removed.
    let mut lying = m.clone();
    let mut facts = PgFacts::from_manifest(&m)?;
    facts
        .tables
        .iter_mut()
        .find(|t| t.name == "events")
        .unwrap()
        .rows = Some(1);
    lying.facts = serde_json::to_value(&facts).unwrap();
    let e = env
        .repo
        .restore(&pg, &lying, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.digest("app"), live);
    assert_eq!(env.cluster.databases(), dbs);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // A restore killed while spooling leaves no spool either (dropped future).
    let slow = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::from_millis(20),
        fail_after: None,
    };
    let killed = tokio::time::timeout(
        Duration::from_millis(500),
        pg.restore(&m, &slow, &RestoreTarget::default(), &Progress::none()),
    )
    .await;
    assert!(killed.is_err(), "the restore finished before it was killed");
    for _ in 0..50 {
        if env.spool_left().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    // It was loading into its side database (the data arrives while it loads): the live
    // database is untouched, and the side database is what the next restore removes.
    assert_eq!(env.digest("app"), live);
    let left: Vec<String> = env
        .cluster
        .databases()
        .into_iter()
        .filter(|d| !dbs.contains(d))
        .collect();
    assert!(
        left.iter().all(|d| d.starts_with("app__zdr_restore_")) && left.len() <= 1,
        "{left:?}"
    );

    // Not enough room in the spool directory: refused before anything is loaded, naming
    // it (and the side database a killed run left is gone).
    let mut huge = m.clone();
    huge.artifacts[0].raw_size = u64::MAX;
    let e = pg
        .restore(&huge, &broken, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    let spool = env.spool_dir.path().display().to_string();
    assert!(
        e.to_string().contains("not enough free space") && e.to_string().contains(&spool),
        "{e}"
    );
    assert_eq!(env.cluster.databases(), dbs);
    Ok(())
}

/// A tier that counts the reads of each key (every `reader` call and the bytes it served).
struct CountingTier {
    inner: Arc<dyn zdr_core::StorageTier>,
    reads: Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>>,
}

struct CountingRead {
    inner: BoxRead,
    key: String,
    reads: Arc<std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>>,
}

impl AsyncRead for CountingRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let key = self.key.clone();
            self.reads.lock().unwrap().entry(key).or_default().1 += n;
        }
        res
    }
}

#[async_trait]
impl zdr_core::StorageTier for CountingTier {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn writer(&self, key: &str) -> Result<zdr_core::BoxWrite> {
        self.inner.writer(key).await
    }
    async fn reader(&self, key: &str) -> Result<BoxRead> {
        self.reads
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default()
            .0 += 1;
        Ok(Box::new(CountingRead {
            inner: self.inner.reader(key).await?,
            key: key.to_owned(),
            reads: self.reads.clone(),
        }))
    }
    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.read_all(key).await
    }
    async fn write_all(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.inner.write_all(key, bytes).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<zdr_core::Entry>> {
        self.inner.list(prefix).await
    }
    async fn stat(&self, key: &str) -> Result<Option<zdr_core::Entry>> {
        self.inner.stat(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }
}

#[tokio::test]
async fn restore_from_the_s3_tier_reads_each_artifact_once() -> Result<()> {
    skip();
    let env = Env::new();
    env.seed("app");
    let s3 = zdr_tests::seaweed::SeaweedFs::start()
        .await
        .expect("SeaweedFS must start (scripts/install-test-deps.sh)");
    let tier = open_tier(
        "minio",
        &TierConfig::S3(zdr_tests::fixtures::s3_config(&s3)),
    )?;
    let reads = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let counting = Arc::new(CountingTier {
        inner: tier,
        reads: reads.clone(),
    });
    let repo = Repository::new(counting, PipelineOptions::default());
    for format in [DumpFormat::Custom, DumpFormat::Plain, DIR2] {
        let pg = env.pg("app", format);
        let m = repo.backup(&pg, "daily", &Progress::none()).await?;
        let before = env.digest("app");
        env.cluster.psql("app", "DELETE FROM events");
        reads.lock().unwrap().clear();
        repo.restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
            .await?;
        assert_eq!(env.digest("app"), before, "{format:?}");
        let dump = &m.artifacts[0];
        let seen = reads.lock().unwrap().clone();
        assert_eq!(
            seen.get(&dump.key),
            Some(&(1, dump.size)),
            "{format:?}: the dump artifact must be read once, whole: {seen:?}"
        );
        // The globals artifact is not used by the restore, and not read.
        assert!(seen.keys().all(|k| k == &dump.key), "{format:?}: {seen:?}");
        assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    }

    // A flipped byte on the S3 tier: refused during the one read, nothing created.
    let pg = env.pg("app", DumpFormat::Custom);
    let m = repo.backup(&pg, "daily", &Progress::none()).await?;
    let op = s3.operator().unwrap();
    let key = format!("zdr/{}", m.artifacts[0].key);
    let mut bytes = op.read(&key).await.unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    op.write(&key, bytes).await.unwrap();
    let dbs = env.cluster.databases();
    let e = repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(env.cluster.databases(), dbs);
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

/// A table of about 45 MiB of `COPY` text with every character the text format escapes
/// (tab, newline, carriage return, backslash), NULLs, bytea and non-ASCII letters, in a
/// LATIN1 database; and a small table.
const HARD_ROWS: &str = r"
CREATE TABLE big (id int PRIMARY KEY, t text, b bytea, n numeric);
INSERT INTO big SELECT g,
    CASE WHEN g % 7 = 0 THEN NULL
         ELSE 'r' || g || E'\t|\n|\\|\r|' || chr(233) || chr(252) || repeat(md5(g::text), 1 + g % 5)
    END,
    decode(md5(g::text), 'hex'), g / 3.0
FROM generate_series(1, 250000) g;
CREATE TABLE small (k text PRIMARY KEY);
INSERT INTO small VALUES (chr(233)), (E'a\tb'), (E'\\N'), ('');
";

const HARD_DIGEST: &str = "SELECT (SELECT count(*) || ':' || md5(string_agg(b::text, ',' ORDER BY id)) FROM big b) \
     || (SELECT md5(string_agg(s::text, ',' ORDER BY k)) FROM small s)";

#[tokio::test]
async fn rows_load_over_copy_split_across_connections_in_the_archive_encoding() -> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.cluster.psql(
        "postgres",
        "CREATE DATABASE enc ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    env.cluster.psql("enc", HARD_ROWS);
    let runner = Arc::new(Recording {
        inner: zdr_core::LocalRunner::with_bin_dir(PG_BIN),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let pg = env
        .pg("enc", DumpFormat::Custom)
        .with_runner(runner.clone());
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let before = env.cluster.psql("enc", HARD_DIGEST);
    env.cluster
        .psql("enc", "DELETE FROM big WHERE id > 100; DELETE FROM small");

    let sink = Arc::new(zdr_core::RecordingSink::default());
    runner.seen.lock().unwrap().clear();
    env.repo
        .restore(
            &pg,
            &m,
            &RestoreTarget::default(),
            &Progress::new(sink.clone()),
        )
        .await?;
    assert_eq!(env.cluster.psql("enc", HARD_DIGEST), before);
    assert_eq!(
        env.cluster.psql(
            "enc",
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'enc'"
        ),
        "LATIN1"
    );
    // Both tables went over the protocol, the large one over both connections at once; no
    // pg_restore loaded data.
    let notes = sink.messages(zdr_core::Level::Info);
    assert!(
        notes.iter().any(|n| n.contains(
            "2 tables loaded with COPY over the protocol (250004 rows), one of them over 2 \
             connections at once"
        )),
        "{notes:?}"
    );
    let seen = runner.seen.lock().unwrap().clone();
    assert!(
        !seen
            .iter()
            .any(|s| s.program == "pg_restore" && s.args.iter().any(|a| a == "--data-only")),
        "{seen:?}"
    );
    // With md5 checksums configured the tables are read again; without, the counts the
    // COPYs returned are compared with the facts.
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("as their COPY stored them")),
        "{notes:?}"
    );
    let mut config = pg.config().clone();
    config.checksums = false;
    let pg = PostgresComponent::new(pg.component().clone(), config);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    env.cluster.psql("enc", "DELETE FROM big WHERE id > 100");
    let sink = Arc::new(zdr_core::RecordingSink::default());
    env.repo
        .restore(
            &pg,
            &m,
            &RestoreTarget::default(),
            &Progress::new(sink.clone()),
        )
        .await?;
    assert_eq!(env.cluster.psql("enc", HARD_DIGEST), before);
    let notes = sink.messages(zdr_core::Level::Info);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("(row counts of 2 tables as their COPY stored them)")),
        "{notes:?}"
    );
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}

#[tokio::test]
async fn a_copy_connection_killed_mid_table_fails_the_restore_and_leaves_live_untouched()
-> Result<()> {
    if skip() {
        return Ok(());
    }
    let env = Env::new();
    env.cluster.psql("postgres", "CREATE DATABASE app");
    env.cluster.psql("app", HARD_ROWS);
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let before = env.cluster.psql("app", HARD_DIGEST);
    env.cluster.psql("app", "DELETE FROM big WHERE id % 2 = 0");
    let live = env.cluster.psql("app", HARD_DIGEST);

    // The artifact arrives slowly; a connection loading `big` into the side database is
    // terminated by the server while its COPY runs.
    let slow = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::from_millis(1),
        fail_after: None,
    };
    let done = Arc::new(AtomicBool::new(false));
    let killer = {
        let (dir, port, done) = (
            env.cluster.dir.path().to_path_buf(),
            env.cluster.port,
            done.clone(),
        );
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let killed = support::psql_at(
                    &dir,
                    port,
                    "postgres",
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE query LIKE 'COPY public.big %' AND datname LIKE 'app__zdr_restore_%'",
                );
                if killed != "0" {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
    };
    let res = pg
        .restore(&m, &slow, &RestoreTarget::default(), &Progress::none())
        .await;
    done.store(true, Ordering::SeqCst);
    assert!(killer.join().unwrap(), "no COPY of big was seen to kill");
    let e = res.unwrap_err();
    assert!(e.to_string().contains("loading public.big failed"), "{e}");
    assert_eq!(env.cluster.psql("app", HARD_DIGEST), live);
    assert!(env.side_dbs().is_empty(), "{:?}", env.side_dbs());
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // The stream fails inside the large table's block: its own error is reported, and
    // nothing of the loads stays.
    let failing = SlowReader {
        repo: env.repo.clone(),
        delay: Duration::ZERO,
        fail_after: Some(2 << 20),
    };
    let e = pg
        .restore(&m, &failing, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("injected"), "{e}");
    assert_eq!(env.cluster.psql("app", HARD_DIGEST), live);
    assert!(env.side_dbs().is_empty(), "{:?}", env.side_dbs());
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());

    // And the next restore brings it all back.
    env.repo
        .restore(&pg, &m, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert_eq!(env.cluster.psql("app", HARD_DIGEST), before);
    assert!(pg.verify(&m, &RestoreTarget::default()).await?.is_ok());
    Ok(())
}

/// Serves a real artifact; the first stream it opens ends early, as if the dump had ended
/// there (the storage layer's checksum is checked before this reader, so the restore sees
/// a stream its scanner cannot follow to the end).
struct EndsEarlyOnce {
    repo: Repository,
    cut: u64,
    opens: AtomicU64,
}

#[async_trait]
impl ArtifactReader for EndsEarlyOnce {
    async fn open(&self, a: &ArtifactRecord) -> Result<BoxRead> {
        let inner = self.repo.open(a, Progress::none())?;
        if self.opens.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(Box::new(tokio::io::AsyncReadExt::take(inner, self.cut)))
        } else {
            Ok(inner)
        }
    }
}

#[tokio::test]
async fn a_dump_the_scanner_loses_after_rows_went_to_their_loaders_is_read_again() -> Result<()> {
    if skip() {
        return Ok(());
    }
    // The scanner loses the archive in the middle of a table's block, after some of its
    // rows went to the loaders from memory (not into the spool): what was loaded goes, the
    // artifact is read again whole into the spool, and loaded from there.
    let env = Env::new();
    env.cluster.psql("postgres", "CREATE DATABASE app");
    env.cluster.psql("app", HARD_ROWS);
    let pg = env.pg("app", DumpFormat::Custom);
    let m = env.repo.backup(&pg, "daily", &Progress::none()).await?;
    let before = env.cluster.psql("app", HARD_DIGEST);
    env.cluster.psql("app", "DELETE FROM big WHERE id % 3 = 0");
    let reader = EndsEarlyOnce {
        repo: env.repo.clone(),
        cut: m.artifacts[0].raw_size / 2,
        opens: AtomicU64::new(0),
    };
    let sink = Arc::new(zdr_core::RecordingSink::default());
    pg.restore(
        &m,
        &reader,
        &RestoreTarget::default(),
        &Progress::new(sink.clone()),
    )
    .await?;
    assert_eq!(reader.opens.load(Ordering::SeqCst), 2);
    let notes = sink.messages(zdr_core::Level::Info);
    assert!(
        notes.iter().any(|n| n.contains(
            "not recognised; reading it again, whole, into the spool and loading it from there"
        )),
        "{notes:?}"
    );
    assert_eq!(env.cluster.psql("app", HARD_DIGEST), before);
    assert!(env.side_dbs().is_empty(), "{:?}", env.side_dbs());
    assert!(env.spool_left().is_empty(), "{:?}", env.spool_left());
    Ok(())
}
