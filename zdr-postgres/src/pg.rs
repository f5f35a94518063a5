//! Connections (sqlx), SQL helpers and the mapping of server errors to zdr errors.

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use zdr_core::{Error, ErrorKind, Result};

use crate::PgConfig;

/// Quote an identifier: `my"db` -> `"my""db"`.
pub(crate) fn qi(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote a `schema.table` pair.
pub(crate) fn qt(schema: &str, table: &str) -> String {
    format!("{}.{}", qi(schema), qi(table))
}

/// Connect to `database` with the configured host, port, user and password.
pub(crate) async fn connect(config: &PgConfig, database: &str) -> Result<PgConnection> {
    let mut opts = PgConnectOptions::new_without_pgpass()
        .username(&config.user)
        .database(database)
        .application_name("zdr")
        .ssl_mode(PgSslMode::Disable);
    opts = if config.host.starts_with('/') {
        opts.socket(&config.host).port(config.port)
    } else {
        opts.host(&config.host).port(config.port)
    };
    if let Some(p) = &config.password {
        opts = opts.password(p.expose());
    }
    let opts = opts.disable_statement_logging();
    PgConnection::connect_with(&opts)
        .await
        .map_err(|e| db_error(e, config, "cannot connect").with_context("database", database))
}

/// Map an sqlx error to a zdr error: unknown database, wrong password and missing objects
/// are bad input; the rest is a source failure.
pub(crate) fn db_error(e: sqlx::Error, config: &PgConfig, what: &str) -> Error {
    let text = config.scrub(&e.to_string());
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.into_owned()));
    match code.as_deref() {
        Some("3D000") => Error::bad_input(format!("{what}: {text}")).with_hint(
            "check the database name (`database` in the component config or --database)",
        ),
        Some("28P01") | Some("28000") => Error::bad_input(format!("{what}: {text}"))
            .with_context("user", &config.user)
            .with_hint("check the password (ZDR_COMPONENTS__<NAME>__PASSWORD) and pg_hba.conf"),
        Some("42P01") | Some("3F000") => Error::bad_input(format!("{what}: {text}")),
        Some("42501") => Error::bad_input(format!("{what}: permission denied: {text}"))
            .with_context("user", &config.user),
        _ => {
            let temporary = matches!(e, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
            let err = Error::new(ErrorKind::Source, format!("{what}: {text}"))
                .with_context("host", &config.host)
                .with_context("port", config.port);
            if temporary { err.temporary() } else { err }
        }
    }
}

/// Run one statement that returns nothing.
pub(crate) async fn exec(conn: &mut PgConnection, config: &PgConfig, sql: &str) -> Result<()> {
    sqlx::Executor::execute(&mut *conn, sql)
        .await
        .map(|_| ())
        .map_err(|e| db_error(e, config, "a statement failed"))
}

/// Close a connection, ignoring errors.
pub(crate) async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}
