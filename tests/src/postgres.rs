//! A throwaway PostgreSQL 15 cluster per test suite: `initdb` into a temp dir, `pg_ctl start`
//! on a free port (socket in the temp dir, TCP with scram-sha-256), stopped and deleted on
//! drop. As root, the server runs as the `postgres` OS user (it refuses to run as root).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const SUPERUSER: &str = "zdr";
pub const PASSWORD: &str = "pw-Zq8#x!sekret";

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub port: u16,
    data: PathBuf,
}

fn is_root() -> bool {
    // SAFETY-free: read the effective uid through `id -u`.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn as_pg(program: &str) -> Command {
    let path = Path::new(PG_BIN).join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn available() -> bool {
    Path::new(PG_BIN).join("initdb").exists()
}

impl Cluster {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Start a cluster with `conf` appended to its postgresql.conf (archiving settings).
    pub fn start_with(conf: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zdr-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let out = as_pg("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "-N"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&pwfile).ok();
        if !conf.is_empty() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            writeln!(f, "\n{conf}").unwrap();
        }
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
            dir.path().display()
        );
        let out = as_pg("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &opts, "-w", "-t", "60", "-l"])
            .arg(dir.path().join("log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        Self { dir, port, data }
    }

    /// Run SQL through psql over the Unix socket (trust), returning stdout (tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        psql_at(self.dir.path(), self.port, db, sql)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// Like [`Cluster::psql`] but returns the error text on failure.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(Path::new(PG_BIN).join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn databases(&self) -> Vec<String> {
        self.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_data_dir(&self.data);
    }
}

/// psql over the Unix socket in `socket_dir` on `port` (trust), tuples only.
pub fn psql_at(socket_dir: &Path, port: u16, db: &str, sql: &str) -> String {
    let out = Command::new(Path::new(PG_BIN).join("psql"))
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(socket_dir)
        .args([
            "-p",
            &port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            db,
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Stop the server of `data` (immediate) as the postgres user.
pub fn stop_data_dir(data: &Path) {
    let _ = as_pg("pg_ctl")
        .arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"])
        .output();
}
