//! [`PgFacts`]: what a backup records about its database, gathered with sqlx (in the
//! dump's snapshot during a backup), and the comparison a restore is verified by.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use zdr_core::{Error, Manifest, Result, VerifyReport};

use crate::pg::{db_error, qt};
use crate::{DumpFormat, PgConfig};

/// The version of the facts layout this build writes.
pub const FACTS_FORMAT: u32 = 1;

/// What a PostgreSQL backup recorded about its database (the manifest's `facts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgFacts {
    /// [`FACTS_FORMAT`].
    pub format: u32,
    /// The database dumped.
    pub database: String,
    /// The dump format of the main artifact.
    pub dump_format: DumpFormat,
    /// The name of the main artifact (the dump).
    pub artifact: String,
    /// The name of the globals artifact (`pg_dumpall --globals-only`), if one was made.
    pub globals_artifact: Option<String>,
    /// The server's `server_version`, such as `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// The server's `server_version_num`, such as `150018`.
    pub server_version_num: i64,
    /// `pg_database_size` at backup time, in bytes.
    pub database_size: i64,
    /// The ordinary tables, with exact row counts (and checksums when asked for).
    pub tables: Vec<TableFact>,
    /// Sequences and their `last_value` (read before the dump, so a restored value is at
    /// least this).
    pub sequences: Vec<SequenceFact>,
    /// The number of large objects.
    pub large_objects: i64,
    /// Installed extensions, by name.
    pub extensions: Vec<String>,
}

/// One table of a [`PgFacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFact {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// The exact row count, or `None` when counting was switched off.
    pub rows: Option<i64>,
    /// md5 over the sorted md5s of the rows' text forms, when checksums were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl TableFact {
    /// `schema.name`.
    #[must_use]
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// One sequence of a [`PgFacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceFact {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// `pg_sequences.last_value` (`None` before the first `nextval`).
    pub last_value: Option<i64>,
}

impl PgFacts {
    /// Read the facts of a PostgreSQL backup's manifest.
    ///
    /// # Errors
    /// [`zdr_core::ErrorKind::Integrity`] when the facts are not a PostgreSQL backup's.
    pub fn from_manifest(m: &Manifest) -> Result<Self> {
        serde_json::from_value(m.facts.clone()).map_err(|e| {
            Error::integrity(format!("backup {} does not carry PostgreSQL facts", m.id))
                .with_source(e)
        })
    }

    /// The table `schema.name` (or `name` in `public`).
    #[must_use]
    pub fn table(&self, spec: &str) -> Option<&TableFact> {
        let (schema, name) = split_table(spec);
        self.tables
            .iter()
            .find(|t| t.schema == schema && t.name == name)
    }
}

/// `schema.name` -> (schema, name); a bare name is in `public`.
pub(crate) fn split_table(spec: &str) -> (&str, &str) {
    match spec.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", spec),
    }
}

/// What the database looks like now (the parts of [`PgFacts`] a restore is checked by).
pub(crate) struct Observed {
    pub tables: Vec<TableFact>,
    pub sequences: Vec<SequenceFact>,
    pub large_objects: i64,
    pub extensions: Vec<String>,
}

const TABLES_SQL: &str = "SELECT n.nspname::text, c.relname::text FROM pg_class c \
    JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
        AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1, 2";

/// Server version and size (cheap).
pub(crate) async fn server(
    conn: &mut PgConnection,
    config: &PgConfig,
) -> Result<(String, i64, i64)> {
    let row = sqlx::query(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::bigint, \
         pg_database_size(current_database())",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| db_error(e, config, "cannot read the server version"))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Sequences (non-transactional; read them before the dump starts).
pub(crate) async fn sequences(
    conn: &mut PgConnection,
    config: &PgConfig,
) -> Result<Vec<SequenceFact>> {
    let rows = sqlx::query(
        "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db_error(e, config, "cannot list sequences"))?;
    Ok(rows
        .iter()
        .map(|r| SequenceFact {
            schema: r.get(0),
            name: r.get(1),
            last_value: r.get(2),
        })
        .collect())
}

/// Everything, on `conn` (in whatever transaction it is in).
pub(crate) async fn observe(
    conn: &mut PgConnection,
    config: &PgConfig,
    counts: bool,
    checksums: bool,
    counted: &Counted,
) -> Result<Observed> {
    let seqs = sequences(conn, config).await?;
    let rest = observe_data(conn, config, counts, checksums, counted).await?;
    Ok(Observed {
        sequences: seqs,
        ..rest
    })
}

/// Rows by table (schema, name).
pub(crate) type Counted = std::collections::BTreeMap<(String, String), i64>;

/// Tables (with counts and checksums), large objects, extensions. A table in `counted` (the
/// rows a restore's `COPY` stored: the server's own count) is not counted again, unless its
/// rows are read for checksums anyway.
pub(crate) async fn observe_data(
    conn: &mut PgConnection,
    config: &PgConfig,
    counts: bool,
    checksums: bool,
    counted: &Counted,
) -> Result<Observed> {
    let names = sqlx::query(TABLES_SQL)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| db_error(e, config, "cannot list tables"))?;
    let mut tables = Vec::with_capacity(names.len());
    for r in &names {
        let schema: String = r.get(0);
        let name: String = r.get(1);
        let q = qt(&schema, &name);
        let known = if checksums {
            None
        } else {
            counted.get(&(schema.clone(), name.clone())).copied()
        };
        let rows = if !counts {
            None
        } else if known.is_some() {
            known
        } else {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM ONLY {q}"))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| {
                    db_error(e, config, "cannot count rows")
                        .with_context("table", format!("{schema}.{name}"))
                })?;
            Some(n)
        };
        let md5 = if checksums {
            let h: String = sqlx::query_scalar(&format!(
                "SELECT md5(coalesce(string_agg(h, '' ORDER BY h), '')) \
                 FROM (SELECT md5(t::text) AS h FROM ONLY {q} t) x"
            ))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                db_error(e, config, "cannot checksum rows")
                    .with_context("table", format!("{schema}.{name}"))
            })?;
            Some(h)
        } else {
            None
        };
        tables.push(TableFact {
            schema,
            name,
            rows,
            md5,
        });
    }
    let large_objects: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_largeobject_metadata")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db_error(e, config, "cannot count large objects"))?;
    let extensions: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| db_error(e, config, "cannot list extensions"))?;
    Ok(Observed {
        tables,
        sequences: Vec::new(),
        large_objects,
        extensions,
    })
}

/// Compare a database with the facts of its backup.
pub(crate) fn compare(facts: &PgFacts, now: &Observed) -> VerifyReport {
    let mut problems = Vec::new();
    let mut checked = 0u64;
    for t in &facts.tables {
        checked += 1;
        let Some(o) = now
            .tables
            .iter()
            .find(|o| o.schema == t.schema && o.name == t.name)
        else {
            problems.push(format!("table {} is missing", t.qualified()));
            continue;
        };
        if let (Some(want), Some(got)) = (t.rows, o.rows)
            && want != got
        {
            problems.push(format!(
                "table {}: {got} rows, the backup has {want}",
                t.qualified()
            ));
        }
        if let (Some(want), Some(got)) = (&t.md5, &o.md5)
            && want != got
        {
            problems.push(format!(
                "table {}: row checksum {got} differs from the backup's {want}",
                t.qualified()
            ));
        }
    }
    for o in &now.tables {
        if facts.table(&o.qualified()).is_none() {
            problems.push(format!("table {} is not in the backup", o.qualified()));
        }
    }
    for s in &facts.sequences {
        checked += 1;
        match now
            .sequences
            .iter()
            .find(|o| o.schema == s.schema && o.name == s.name)
        {
            None => problems.push(format!("sequence {}.{} is missing", s.schema, s.name)),
            Some(o) => {
                if let Some(want) = s.last_value
                    && o.last_value.is_none_or(|got| got < want)
                {
                    problems.push(format!(
                        "sequence {}.{}: last value {:?}, the backup has {want}",
                        s.schema, s.name, o.last_value
                    ));
                }
            }
        }
    }
    checked += 1;
    if now.large_objects != facts.large_objects {
        problems.push(format!(
            "{} large objects, the backup has {}",
            now.large_objects, facts.large_objects
        ));
    }
    for e in &facts.extensions {
        checked += 1;
        if !now.extensions.contains(e) {
            problems.push(format!("extension {e} is missing"));
        }
    }
    VerifyReport { checked, problems }
}
