//! Full restores (safe swap, in place, scratch), single-table restores, rollback.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use zdr_core::{
    ArtifactReader, Error, ErrorKind, Manifest, Progress, RestoreOutcome, Result, VerifyReport,
    failpoint,
};

use crate::facts::{self, PgFacts, split_table};
use crate::pg::{self, qi, qt};
use crate::{DumpFormat, PostgresComponent, RestoreMode, RestoreOptions, mismatch};
use crate::{dir, tools};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;

/// What a rollback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackOutcome {
    /// The database rolled back.
    pub database: String,
    /// The old database that is live again (its former name).
    pub restored_from: String,
    /// The name the displaced database now has (roll back again to undo).
    pub displaced_to: String,
    /// Databases that refused connections (left so by an interrupted swap of an older zdr)
    /// and were turned back on first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired: Vec<String>,
}

/// The longest suffix zdr appends: `__zdr_restore_` + a backup id (20 characters).
const LONGEST_SUFFIX: usize = "__zdr_restore_".len() + 20;

/// The part of every derived name that stands for `db`: `db` itself when it leaves room for
/// the longest suffix within 63 bytes, else a shortened `db` plus 6 hex digits of its
/// SHA-256 (so two long names never share derived databases).
fn stem(db: &str) -> String {
    let room = MAX_IDENT - LONGEST_SUFFIX;
    if db.len() <= room {
        return db.to_owned();
    }
    let mut end = room - 7;
    while !db.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}_{}",
        &db[..end],
        &zdr_core::sha256_hex(db.as_bytes())[..6]
    )
}

/// `<stem><suffix>`: a side, scratch or old database of `db`.
fn derived(db: &str, suffix: &str) -> String {
    format!("{}{suffix}", stem(db))
}

/// The prefix of every derived name of `db` with `marker`.
fn prefix_of(db: &str, marker: &str) -> String {
    derived(db, marker)
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

async fn db_exists(conn: &mut PgConnection, c: &PostgresComponent, name: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| pg::db_error(e, &c.config, "cannot list databases"))?;
    Ok(n > 0)
}

async fn drop_db(conn: &mut PgConnection, c: &PostgresComponent, name: &str) -> Result<()> {
    pg::exec(
        conn,
        &c.config,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", qi(name)),
    )
    .await
    .map_err(|e| e.with_context("database", name))
}

/// Take the per-database advisory lock so two restores of one database never overlap.
///
/// A restore killed a moment ago may still hold it on the server (its last command, such as a
/// CREATE DATABASE, runs to its end before the server notices the client is gone): wait for
/// it up to `lock_wait` ([`crate::PgConfig::lock_wait`]) before calling it a concurrent run.
async fn lock(conn: &mut PgConnection, c: &PostgresComponent, db: &str) -> Result<()> {
    let wait = c.config.lock_wait;
    pg::exec(
        conn,
        &c.config,
        &format!("SET lock_timeout = '{}ms'", wait.as_millis().max(1)),
    )
    .await?;
    let got = sqlx::query("SELECT pg_advisory_lock(hashtext('zdr restore ' || $1))")
        .bind(db)
        .execute(&mut *conn)
        .await;
    pg::exec(conn, &c.config, "RESET lock_timeout").await?;
    match got {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "another zdr restore of {db} is running (still after {:.1}s)",
                wait.as_secs_f64()
            ),
        )),
        Err(e) => Err(pg::db_error(e, &c.config, "cannot take the restore lock")),
    }
}

/// Drop `<db>__zdr_restore_*` and `<db>__zdr_verify_*` left by killed runs.
async fn clean_leftovers(
    conn: &mut PgConnection,
    c: &PostgresComponent,
    db: &str,
    progress: &Progress,
) -> Result<Vec<String>> {
    let mut dropped = Vec::new();
    for marker in ["__zdr_restore_", "__zdr_verify_"] {
        let pattern = format!("{}%", like_escape(&prefix_of(db, marker)));
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                .bind(&pattern)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| pg::db_error(e, &c.config, "cannot list databases"))?;
        for n in names {
            progress.warn(format!(
                "dropping {n}, left over by an interrupted restore of {db}"
            ));
            drop_db(conn, c, &n).await?;
            dropped.push(n);
        }
    }
    Ok(dropped)
}

/// Create `name` like `like` (owner, encoding, collation) when that exists.
async fn create_db(
    conn: &mut PgConnection,
    c: &PostgresComponent,
    name: &str,
    like: &str,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, \
         datcollate::text, datctype::text FROM pg_database WHERE datname = $1",
    )
    .bind(like)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| pg::db_error(e, &c.config, "cannot read database settings"))?;
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", qi(name));
    if let Some(r) = row {
        let owner: String = r.get(0);
        let enc: String = r.get(1);
        let coll: String = r.get(2);
        let ctype: String = r.get(3);
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        sql.push_str(&format!(
            " OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            qi(&owner),
            lit(&enc),
            lit(&coll),
            lit(&ctype)
        ));
    }
    pg::exec(conn, &c.config, &sql)
        .await
        .map_err(|e| e.with_context("database", name))
}

/// A backup made ready to load: its artifact either spooled on local disk (read once, its
/// checksum verified while spooling), or — plain format into a side database — still to be
/// streamed (verified at the end of the stream, before psql commits).
pub(crate) struct Prepared<'a> {
    record: &'a zdr_core::ArtifactRecord,
    format: DumpFormat,
    spool: Option<dir::Spool>,
}

impl Prepared<'_> {
    /// Remove the spool, if any.
    pub(crate) async fn remove(self) {
        if let Some(s) = self.spool {
            s.remove().await;
        }
    }
}

/// Check the tools, then spool the dump artifact when it is loaded from a file: custom and
/// directory formats always (`pg_restore -j` needs a file it can seek), plain format when
/// `spool_plain` (an in-place restore, which must not drop the live database before the
/// backup is known to be intact). Nothing is created in the database server here: a corrupt
/// artifact is refused before any database exists.
pub(crate) async fn prepare<'a>(
    c: &PostgresComponent,
    backup: &'a Manifest,
    facts: &PgFacts,
    from: &dyn ArtifactReader,
    spool_plain: bool,
    progress: &Progress,
) -> Result<Prepared<'a>> {
    let record = backup.artifact(&facts.artifact).ok_or_else(|| {
        Error::integrity(format!(
            "backup {} has no artifact named {}",
            backup.id, facts.artifact
        ))
    })?;
    let cfg = &c.config;
    check_tools(c, facts).await?;
    let format = facts.dump_format;
    // A runner that executes elsewhere (a container) cannot open a spool on this host: a
    // custom-format dump is streamed into `pg_restore` through stdin instead (one job; the
    // target is a side or scratch database swapped in only after the stream's checksum
    // matched, or — in place — a backup the storage layer verified in full first).
    let streamed = format == DumpFormat::Custom && !c.runner.shares_host_files();
    if (format == DumpFormat::Plain && !spool_plain) || streamed {
        return Ok(Prepared {
            record,
            format,
            spool: None,
        });
    }
    dir::check_room(&dir::spool_parent(cfg), record.raw_size)?;
    let spool = dir::Spool::create(cfg, progress)?;
    let stream = from
        .open(record)
        .await
        .map_err(|e| e.with_context("key", &record.key))?;
    let task = format!("spool {}", record.key);
    progress.start(&task, Some(record.raw_size));
    let copied = match format {
        DumpFormat::Directory { .. } => dir::unpack(stream, &spool).await,
        DumpFormat::Custom | DumpFormat::Plain => {
            match dir::copy_in(stream, &spool, format == DumpFormat::Custom).await {
                Ok((n, positions)) => {
                    match positions {
                        Some(Ok(k)) => progress.info(format!(
                            "{}: recorded the data positions of {k} entries in the spooled dump",
                            record.key
                        )),
                        Some(Err(why)) => progress.info(format!(
                            "{}: the dump's data positions were not recorded ({why}); \
                             pg_restore searches for them",
                            record.key
                        )),
                        None => {}
                    }
                    Ok(n)
                }
                Err(e) => Err(e),
            }
        }
    };
    progress.finish(&task);
    match copied {
        Ok(_) => Ok(Prepared {
            record,
            format,
            spool: Some(spool),
        }),
        Err(e) => {
            spool.remove().await;
            Err(e.with_context("key", &record.key))
        }
    }
}

/// Check that the restore tool is there and fits both the server and the backup's server.
async fn check_tools(c: &PostgresComponent, facts: &PgFacts) -> Result<()> {
    let cfg = &c.config;
    let tool = match facts.dump_format {
        DumpFormat::Plain => "psql",
        DumpFormat::Custom | DumpFormat::Directory { .. } => "pg_restore",
    };
    let mut conn = pg::connect(cfg, &cfg.maintenance_database).await?;
    let (sv, svn, _) = facts::server(&mut conn, cfg).await?;
    pg::close(conn).await;
    tools::check_version(c.runner.as_ref(), cfg, tool, svn, &sv).await?;
    tools::check_version(
        c.runner.as_ref(),
        cfg,
        tool,
        facts.server_version_num,
        &facts.server_version,
    )
    .await
}

/// Whether a restore into a side or scratch database loads while the artifact arrives
/// ([`crate::streamed`]): custom format, tools that see this host's spool.
fn loads_while_arriving(c: &PostgresComponent, facts: &PgFacts) -> bool {
    facts.dump_format == DumpFormat::Custom && c.runner.shares_host_files()
}

/// Spool the custom-format dump and load it into `database` (created, empty) while it
/// arrives; an archive the scanner does not recognise is loaded from the complete spool.
/// The spool is removed in every case. Returns the bytes loaded, and the rows stored by the
/// tables loaded with `COPY`.
#[allow(clippy::too_many_arguments)]
async fn spool_and_load(
    c: &PostgresComponent,
    admin: &mut PgConnection,
    like: &str,
    backup: &Manifest,
    facts: &PgFacts,
    from: &dyn ArtifactReader,
    database: &str,
    jobs: u32,
    progress: &Progress,
) -> Result<(u64, facts::Counted)> {
    let record = backup.artifact(&facts.artifact).ok_or_else(|| {
        Error::integrity(format!(
            "backup {} has no artifact named {}",
            backup.id, facts.artifact
        ))
    })?;
    let spool = dir::Spool::create(&c.config, progress)?;
    let loaded = async {
        let stream = from
            .open(record)
            .await
            .map_err(|e| e.with_context("key", &record.key))?;
        let task = format!("spool and load {}", record.key);
        progress.start(&task, Some(record.raw_size));
        let res = crate::streamed::spool_and_load(c, stream, &spool, database, jobs, progress)
            .await
            .map_err(|e| e.with_context("key", &record.key));
        progress.finish(&task);
        match res? {
            crate::streamed::Streamed::Loaded { bytes, counted } => Ok((bytes, counted)),
            crate::streamed::Streamed::Unrecognized { touched, complete } => {
                progress.info(format!(
                    "{}: the dump's data blocks were not recognised; {}",
                    record.key,
                    if complete {
                        "loading it from the complete spool"
                    } else {
                        "reading it again, whole, into the spool and loading it from there"
                    }
                ));
                if touched {
                    // What was loaded early goes: the database starts empty again.
                    drop_db(admin, c, database).await?;
                    create_db(admin, c, database, like).await?;
                }
                if !complete {
                    // Some rows went to their loaders from memory, not into the spool: the
                    // artifact is read again, whole, into a new spool file.
                    let file = spool.dump_file();
                    std::fs::remove_file(&file).map_err(|e| {
                        Error::from_io(e, format!("cannot remove {}", file.display()))
                    })?;
                    let stream = from
                        .open(record)
                        .await
                        .map_err(|e| e.with_context("key", &record.key))?;
                    dir::copy_in(stream, &spool, true)
                        .await
                        .map_err(|e| e.with_context("key", &record.key))?;
                }
                let spec =
                    parallel_restore_spec(&c.config, database, &spool.dump_file(), jobs.max(1));
                let (run, tail) = tools::spawn(c.runner.as_ref(), &c.config, &spec).await?;
                tools::finish(run, tail, &c.config, "pg_restore").await?;
                Ok((record.raw_size, facts::Counted::new()))
            }
        }
    }
    .await;
    spool.remove().await;
    loaded
}

/// `pg_restore -j jobs` of the dump at `input` into `database`.
fn parallel_restore_spec(
    cfg: &crate::PgConfig,
    database: &str,
    input: &std::path::Path,
    jobs: u32,
) -> zdr_core::CommandSpec {
    let mut spec = tools::spec(cfg, "pg_restore", database)
        .args(["--exit-on-error".to_owned(), format!("--jobs={jobs}")]);
    if jobs == 1 {
        // pg_restore refuses it with -j > 1; the target is a side, scratch or freshly
        // created database that is dropped if anything fails.
        spec = spec.args(["--single-transaction"]);
    }
    let mut spec = spec.args([
        "-d".to_owned(),
        database.to_owned(),
        input.display().to_string(),
    ]);
    spec.stdout = false;
    spec
}

/// Load a prepared backup into `database` (created, empty): `pg_restore -j jobs` from the
/// spool, `psql -f` of a spooled plain dump, or the plain artifact streamed into
/// `psql --single-transaction` (killed before it commits when the stream fails its
/// checksum). Returns the bytes loaded.
pub(crate) async fn apply(
    c: &PostgresComponent,
    prepared: &Prepared<'_>,
    from: &dyn ArtifactReader,
    database: &str,
    jobs: u32,
    progress: &Progress,
) -> Result<u64> {
    let cfg = &c.config;
    let record = prepared.record;
    let psql = || {
        tools::spec(cfg, "psql", database).args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "--single-transaction",
        ])
    };
    let Some(spool) = &prepared.spool else {
        let (mut spec, tool) = if prepared.format == DumpFormat::Custom {
            (
                tools::spec(cfg, "pg_restore", database)
                    .args(["--exit-on-error", "--single-transaction", "-d", database])
                    .with_stdin(),
                "pg_restore",
            )
        } else {
            (psql().args(["-f", "-"]).with_stdin(), "psql")
        };
        spec.stdout = false;
        let mut stream = from
            .open(record)
            .await
            .map_err(|e| e.with_context("key", &record.key))?;
        let task = format!("{tool} {database}");
        progress.start(&task, Some(record.raw_size));
        let (run, tail) = tools::spawn(c.runner.as_ref(), cfg, &spec).await?;
        let n = tools::feed(run, tail, &mut stream, b"", cfg, tool)
            .await
            .map_err(|e| e.with_context("key", &record.key))?;
        progress.finish(&task);
        return Ok(n);
    };
    let jobs = jobs.max(1);
    let (mut spec, what) = match prepared.format {
        DumpFormat::Plain => (
            psql().args(["-f".to_owned(), spool.dump_file().display().to_string()]),
            format!("psql {database}"),
        ),
        DumpFormat::Custom | DumpFormat::Directory { .. } => {
            let input = if prepared.format == DumpFormat::Custom {
                spool.dump_file()
            } else {
                spool.dump_dir()
            };
            (
                parallel_restore_spec(cfg, database, &input, jobs),
                format!("pg_restore -j {jobs} {database}"),
            )
        }
    };
    spec.stdout = false;
    progress.start(&what, None);
    let (run, tail) = tools::spawn(c.runner.as_ref(), cfg, &spec).await?;
    let tool = if prepared.format == DumpFormat::Plain {
        "psql"
    } else {
        "pg_restore"
    };
    tools::finish(run, tail, cfg, tool).await?;
    progress.finish(&what);
    Ok(record.raw_size)
}

/// The `pg_restore` jobs of a restore with `opts`.
fn jobs_of(c: &PostgresComponent, opts: &RestoreOptions) -> u32 {
    opts.jobs.unwrap_or(c.config.jobs).max(1)
}

/// Compare `database` with the facts. `counted`: the rows the restore's `COPY`s stored, by
/// table, used instead of counting those tables again.
pub(crate) async fn verify_db(
    c: &PostgresComponent,
    facts: &PgFacts,
    database: &str,
    counted: &facts::Counted,
) -> Result<VerifyReport> {
    let checksums = facts.tables.iter().any(|t| t.md5.is_some());
    let counts = facts.tables.iter().any(|t| t.rows.is_some());
    let mut conn = pg::connect(&c.config, database).await?;
    let now = facts::observe(&mut conn, &c.config, counts, checksums, counted).await;
    pg::close(conn).await;
    Ok(facts::compare(facts, &now?))
}

/// Restore entry point: dispatch on the options.
pub(crate) async fn run(
    c: &PostgresComponent,
    opts: &RestoreOptions,
    backup: &Manifest,
    facts: &PgFacts,
    from: &dyn ArtifactReader,
    db: &str,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    if let Some(table) = &opts.table {
        return restore_table(c, opts, backup, facts, from, db, table, progress).await;
    }
    if opts.table_as.is_some() {
        return Err(Error::bad_input(
            "a new table name (table_as) needs a table to restore",
        ));
    }
    let cfg = &c.config;
    let mut admin = pg::connect(cfg, &admin_database(c, db)).await?;
    let res = full(c, opts, &mut admin, backup, facts, from, db, progress).await;
    pg::close(admin).await;
    res
}

#[allow(clippy::too_many_arguments)]
async fn full(
    c: &PostgresComponent,
    opts: &RestoreOptions,
    admin: &mut PgConnection,
    backup: &Manifest,
    facts: &PgFacts,
    from: &dyn ArtifactReader,
    db: &str,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    if db.is_empty() || db.contains('\0') {
        return Err(Error::bad_input("empty database name"));
    }
    lock(admin, c, db).await?;
    let mut notes = Vec::new();
    for d in repair_connections(admin, c, db, progress).await? {
        notes.push(format!(
            "{d} refused connections (an interrupted swap); turned them back on"
        ));
    }
    for d in clean_leftovers(admin, c, db, progress).await? {
        notes.push(format!("dropped {d}, left over by an interrupted restore"));
    }
    let live_exists = db_exists(admin, c, db).await?;
    match opts.mode {
        RestoreMode::InPlace { confirmed: false } => Err(Error::bad_input(format!(
            "an in-place restore drops the live database {db} first; it needs explicit confirmation"
        ))
        .with_hint(
            "confirm the in-place restore, or use the default safe restore (side database + swap)",
        )),
        RestoreMode::InPlace { confirmed: true } => {
            // The backup is spooled and verified before the live database goes.
            let prepared = prepare(c, backup, facts, from, true, progress).await?;
            let loaded = async {
                if live_exists {
                    progress.warn(format!(
                        "dropping the live database {db} (in-place restore)"
                    ));
                    drop_db(admin, c, db).await?;
                }
                create_db(admin, c, db, &cfg_template(c)).await?;
                apply(c, &prepared, from, db, jobs_of(c, opts), progress).await
            }
            .await;
            prepared.remove().await;
            let bytes = loaded?;
            let report = verify_db(c, facts, db, &facts::Counted::new()).await?;
            if !report.is_ok() {
                return Err(mismatch(&report));
            }
            notes.push(format!(
                "restored in place; {} checks passed",
                report.checked
            ));
            Ok(RestoreOutcome {
                target: db.to_owned(),
                items: facts.tables.len() as u64,
                bytes,
                notes,
            })
        }
        RestoreMode::Safe | RestoreMode::Scratch => {
            let scratch = opts.mode == RestoreMode::Scratch;
            let marker = if scratch {
                "__zdr_verify_"
            } else {
                "__zdr_restore_"
            };
            let side = derived(db, &format!("{marker}{}", backup.id));
            let like = if live_exists {
                db.to_owned()
            } else {
                cfg_template(c)
            };
            let t0 = std::time::Instant::now();
            // Custom format on this host: loaded while it arrives, verified at the end of the
            // stream, swapped in only after that. Directory format: spooled and verified
            // before the side database exists. Plain: verified at the end of the stream,
            // before psql commits.
            let streamed = loads_while_arriving(c, facts);
            let prepared = if streamed {
                check_tools(c, facts).await?;
                if let Some(r) = backup.artifact(&facts.artifact) {
                    dir::check_room(&dir::spool_parent(&c.config), r.raw_size)?;
                }
                None
            } else {
                Some(prepare(c, backup, facts, from, false, progress).await?)
            };
            let spooled = t0.elapsed();
            if let Err(e) = create_db(admin, c, &side, &like).await {
                if let Some(p) = prepared {
                    p.remove().await;
                }
                return Err(e);
            }
            let attempt = async {
                let jobs = jobs_of(c, opts);
                let loaded = match prepared {
                    Some(p) => {
                        let l = apply(c, &p, from, &side, jobs, progress).await;
                        p.remove().await;
                        l.map(|b| (b, facts::Counted::new()))
                    }
                    None => {
                        spool_and_load(c, admin, &like, backup, facts, from, &side, jobs, progress)
                            .await
                    }
                };
                let (bytes, counted) = loaded?;
                let t1 = std::time::Instant::now();
                let report = verify_db(c, facts, &side, &counted).await?;
                if !report.is_ok() {
                    return Err(mismatch(&report).with_hint(
                        "the live database was not touched; the side database is dropped",
                    ));
                }
                let timing = if streamed {
                    let how = if counted.is_empty() || facts.tables.iter().any(|t| t.md5.is_some())
                    {
                        String::new()
                    } else {
                        format!(
                            " (row counts of {} tables as their COPY stored them)",
                            counted.len()
                        )
                    };
                    format!(
                        "load while it arrived {:.2}s, verification {:.2}s{how}",
                        (t1 - t0).as_secs_f64(),
                        t1.elapsed().as_secs_f64()
                    )
                } else {
                    format!(
                        "spool {:.2}s, load {:.2}s, verification {:.2}s",
                        spooled.as_secs_f64(),
                        (t1 - t0 - spooled).as_secs_f64(),
                        t1.elapsed().as_secs_f64()
                    )
                };
                progress.info(format!("{side}: {timing}"));
                Ok::<_, Error>((bytes, report, timing))
            }
            .await;
            let (bytes, report, timing) = match attempt {
                Ok(v) => v,
                Err(e) => {
                    if let Err(d) = drop_db(admin, c, &side).await {
                        progress.warn(format!("could not drop {side}: {d}"));
                    }
                    return Err(e);
                }
            };
            if scratch {
                drop_db(admin, c, &side).await?;
                notes.push(format!(
                    "restored into the scratch database {side}: {} checks passed; dropped it \
                     ({timing})",
                    report.checked
                ));
                return Ok(RestoreOutcome {
                    target: side,
                    items: facts.tables.len() as u64,
                    bytes,
                    notes,
                });
            }
            let swap_started = std::time::Instant::now();
            if live_exists {
                let old = old_name(db);
                if let Err(e) = swap(admin, c, db, &side, &old).await {
                    let _ = drop_db(admin, c, &side).await;
                    return Err(e);
                }
                notes.push(format!(
                    "the previous database is kept as {old} (a rollback swaps it back)"
                ));
            } else {
                pg::exec(
                    admin,
                    &c.config,
                    &format!("ALTER DATABASE {} RENAME TO {}", qi(&side), qi(db)),
                )
                .await?;
                notes.push(format!("{db} did not exist; created it from the backup"));
            }
            notes.push(format!(
                "verified before the swap: {} checks passed ({timing}, swap {:.2}s)",
                report.checked,
                swap_started.elapsed().as_secs_f64()
            ));
            Ok(RestoreOutcome {
                target: db.to_owned(),
                items: facts.tables.len() as u64,
                bytes,
                notes,
            })
        }
    }
}

fn cfg_template(c: &PostgresComponent) -> String {
    c.config.maintenance_database.clone()
}

fn old_name(db: &str) -> String {
    derived(
        db,
        &format!(
            "__zdr_old_{}",
            chrono::Utc::now().format("%Y%m%d_%H%M%S%3f")
        ),
    )
}

/// Rename `live` to `old` and `side` to `live`, after closing every connection to `live` —
/// in one transaction, so a crash at any instant (the process killed, the connection cut)
/// leaves either the state before or the state after, never a live name without a database
/// or a database that refuses connections: PostgreSQL rolls an unfinished transaction back.
///
/// New connections to `live` wait on the rename's lock while the transaction runs; a client
/// that connected between the termination and the rename makes the rename fail or time out,
/// and the step is retried from a savepoint.
async fn swap(
    admin: &mut PgConnection,
    c: &PostgresComponent,
    live: &str,
    side: &str,
    old: &str,
) -> Result<()> {
    let cfg = &c.config;
    pg::exec(admin, cfg, "BEGIN").await?;
    let res = swap_in_transaction(admin, c, live, side, old).await;
    match res {
        Ok(()) => {
            failpoint("pg-swap-before-commit");
            pg::exec(admin, cfg, "COMMIT").await?;
            failpoint("pg-swap-after-commit");
            Ok(())
        }
        Err(e) => {
            let _ = pg::exec(admin, cfg, "ROLLBACK").await;
            Err(e)
        }
    }
}

async fn swap_in_transaction(
    admin: &mut PgConnection,
    c: &PostgresComponent,
    live: &str,
    side: &str,
    old: &str,
) -> Result<()> {
    let cfg = &c.config;
    pg::exec(admin, cfg, "SET LOCAL lock_timeout = '5s'").await?;
    let mut last = None;
    for _ in 0..20 {
        pg::exec(admin, cfg, "SAVEPOINT zdr_swap").await?;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(live)
        .execute(&mut *admin)
        .await
        .map_err(|e| pg::db_error(e, cfg, "cannot terminate connections"))?;
        failpoint("pg-swap-after-terminate");
        match pg::exec(
            admin,
            cfg,
            &format!("ALTER DATABASE {} RENAME TO {}", qi(live), qi(old)),
        )
        .await
        {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => {
                pg::exec(admin, cfg, "ROLLBACK TO SAVEPOINT zdr_swap").await?;
                last = Some(e);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(e) = last {
        return Err(e.with_context("database", live));
    }
    failpoint("pg-swap-after-rename-live");
    pg::exec(
        admin,
        cfg,
        &format!("ALTER DATABASE {} RENAME TO {}", qi(side), qi(live)),
    )
    .await?;
    failpoint("pg-swap-after-rename-side");
    Ok(())
}

/// Turn connections back on for `db` and its kept `__zdr_old_*` copies where a run of an
/// older zdr (which switched them off outside a transaction during the swap) was killed.
/// Returns the databases repaired.
async fn repair_connections(
    admin: &mut PgConnection,
    c: &PostgresComponent,
    db: &str,
    progress: &Progress,
) -> Result<Vec<String>> {
    let pattern = format!("{}%", like_escape(&prefix_of(db, "__zdr_old_")));
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database \
         WHERE NOT datallowconn AND NOT datistemplate AND (datname = $1 OR datname LIKE $2)",
    )
    .bind(db)
    .bind(&pattern)
    .fetch_all(&mut *admin)
    .await
    .map_err(|e| pg::db_error(e, &c.config, "cannot list databases"))?;
    for n in &names {
        progress.warn(format!(
            "{n} refused connections, left so by an interrupted swap; turning them back on"
        ));
        pg::exec(
            admin,
            &c.config,
            &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", qi(n)),
        )
        .await?;
    }
    Ok(names)
}

/// The database to run CREATE/DROP/ALTER DATABASE from: the configured maintenance
/// database, or `template1` when that is the database being restored (a session cannot
/// rename or drop its own database).
fn admin_database(c: &PostgresComponent, db: &str) -> String {
    if c.config.maintenance_database == db {
        "template1".to_owned()
    } else {
        c.config.maintenance_database.clone()
    }
}

/// Swap the newest `<db>__zdr_old_*` back in.
pub(crate) async fn rollback(
    c: &PostgresComponent,
    db: &str,
    progress: &Progress,
) -> Result<RollbackOutcome> {
    let cfg = &c.config;
    let mut admin = pg::connect(cfg, &admin_database(c, db)).await?;
    let res = async {
        lock(&mut admin, c, db).await?;
        let repaired = repair_connections(&mut admin, c, db, progress).await?;
        let pattern = format!("{}%", like_escape(&prefix_of(db, "__zdr_old_")));
        let newest: Option<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1 ORDER BY datname DESC LIMIT 1",
        )
        .bind(&pattern)
        .fetch_optional(&mut admin)
        .await
        .map_err(|e| pg::db_error(e, cfg, "cannot list databases"))?;
        let Some(from) = newest else {
            return Err(Error::not_found(format!(
                "no {db}__zdr_old_* database to roll back to"
            ))
            .with_hint("a rollback needs a previous safe restore of this database"));
        };
        let displaced = old_name(db);
        if db_exists(&mut admin, c, db).await? {
            swap(&mut admin, c, db, &from, &displaced).await?;
        } else {
            pg::exec(
                &mut admin,
                cfg,
                &format!("ALTER DATABASE {} RENAME TO {}", qi(&from), qi(db)),
            )
            .await?;
        }
        progress.info(format!("rolled {db} back to {from}; the replaced one is {displaced}"));
        Ok(RollbackOutcome {
            database: db.to_owned(),
            restored_from: from,
            displaced_to: displaced,
            repaired,
        })
    }
    .await;
    pg::close(admin).await;
    res
}

/// Restore one table: the whole backup into a side database, then the table copied into
/// the live database in one transaction, verified by row count.
#[allow(clippy::too_many_arguments)]
async fn restore_table(
    c: &PostgresComponent,
    opts: &RestoreOptions,
    backup: &Manifest,
    facts: &PgFacts,
    from: &dyn ArtifactReader,
    db: &str,
    table: &str,
    progress: &Progress,
) -> Result<RestoreOutcome> {
    let cfg = &c.config;
    if !facts.dump_format.is_archive() {
        return Err(Error::bad_input(format!(
            "a single-table restore needs a custom- or directory-format backup; {} is {:?}",
            backup.id, facts.dump_format
        ))
        .with_hint(
            "set format = \"custom\" (or \"directory\") for the component, or restore the whole database",
        ));
    }
    let Some(fact) = facts.table(table) else {
        return Err(Error::bad_input(format!(
            "table {table} is not in backup {}; it has: {}",
            backup.id,
            facts
                .tables
                .iter()
                .map(|t| t.qualified())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let (schema, name) = split_table(table);
    let dest_name = opts.table_as.clone().unwrap_or_else(|| name.to_owned());
    let mut live = pg::connect(cfg, db).await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2)",
    )
    .bind(schema)
    .bind(&dest_name)
    .fetch_one(&mut live)
    .await
    .map_err(|e| pg::db_error(e, cfg, "cannot look up the table"))?;
    pg::close(live).await;
    if opts.table_as.is_some() && exists {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("{schema}.{dest_name} already exists in {db}"),
        )
        .with_hint("restore it under another name"));
    }
    let mut admin = pg::connect(cfg, &cfg.maintenance_database).await?;
    let res = async {
        lock(&mut admin, c, db).await?;
        clean_leftovers(&mut admin, c, db, progress).await?;
        let side = derived(db, &format!("__zdr_restore_{}", backup.id));
        let prepared = prepare(c, backup, facts, from, false, progress).await?;
        if let Err(e) = create_db(&mut admin, c, &side, db).await {
            prepared.remove().await;
            return Err(e);
        }
        let copied = async {
            let loaded = apply(c, &prepared, from, &side, jobs_of(c, opts), progress).await;
            prepared.remove().await;
            loaded?;
            let mut sc = pg::connect(cfg, &side).await?;
            let src = if let Some(new) = &opts.table_as {
                pg::exec(
                    &mut sc,
                    cfg,
                    &format!(
                        "CREATE TABLE {n} (LIKE {o} INCLUDING ALL); INSERT INTO {n} SELECT * FROM {o}",
                        n = qt(schema, new),
                        o = qt(schema, name)
                    ),
                )
                .await?;
                new.clone()
            } else {
                name.to_owned()
            };
            pg::close(sc).await;
            // pg_dump of the table from the side db, piped into psql on the live db.
            let mut dump = tools::spec(cfg, "pg_dump", &side).args([
                "--format=plain".to_owned(),
                format!("--table={}", qt(schema, &src)),
            ]);
            let prelude = if exists {
                dump = dump.args(["--data-only"]);
                format!("TRUNCATE TABLE ONLY {};\n", qt(schema, &src))
            } else {
                String::new()
            };
            let (drun, dtail) = tools::spawn(c.runner.as_ref(), cfg, &dump).await?;
            let mut psql = tools::spec(cfg, "psql", db)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", "-"])
                .with_stdin();
            psql.stdout = false;
            let (prun, ptail) = tools::spawn(c.runner.as_ref(), cfg, &psql).await?;
            tools::pipe(
                drun,
                dtail,
                prun,
                ptail,
                prelude.as_bytes(),
                cfg,
                ("pg_dump of the table", "psql"),
            )
            .await?;
            let mut lc = pg::connect(cfg, db).await?;
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ONLY {}", qt(schema, &src)))
                .fetch_one(&mut lc)
                .await
                .map_err(|e| pg::db_error(e, cfg, "cannot count the restored rows"))?;
            pg::close(lc).await;
            if let Some(want) = fact.rows
                && want != n
            {
                return Err(Error::integrity(format!(
                    "{schema}.{src} has {n} rows after the restore, the backup has {want}"
                )));
            }
            Ok::<_, Error>((src, n))
        }
        .await;
        let dropped = drop_db(&mut admin, c, &side).await;
        let (src, n) = copied?;
        dropped?;
        Ok(RestoreOutcome {
            target: format!("{db}: {schema}.{src}"),
            items: 1,
            bytes: 0,
            notes: vec![if exists {
                format!("replaced the rows of {schema}.{src} ({n} rows, count verified)")
            } else {
                format!("created {schema}.{src} with {n} rows (count verified)")
            }],
        })
    }
    .await;
    pg::close(admin).await;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit() {
        let long = "a".repeat(80);
        let id = "20260116_143000_a1f3";
        let side = derived(&long, &format!("__zdr_restore_{id}"));
        assert_eq!(side.len(), MAX_IDENT);
        assert!(side.starts_with(&prefix_of(&long, "__zdr_restore_")));
        let other = "a".repeat(81);
        assert_ne!(stem(&long), stem(&other));
        assert!(derived(&long, "__zdr_old_20260116_143000123").len() <= MAX_IDENT);
        assert_eq!(derived("app", "__zdr_old_x"), "app__zdr_old_x");
        assert_eq!(like_escape("a_b%"), "a\\_b\\%");
    }
}
