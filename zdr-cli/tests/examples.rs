//! The library examples (`examples/*.rs`), run as a service author would run them, against a
//! real PostgreSQL 15 cluster, a real local-disk tier and a real S3 server (SeaweedFS).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../../examples/restore_latest_postgres.rs"]
mod restore_latest_postgres;

#[path = "../../examples/backup_all.rs"]
mod backup_all;

use std::path::{Path, PathBuf};

use zdr::{BackupKind, BackupOptions, Progress, Stack};
use zdr_tests::postgres::{self as support, Cluster, PASSWORD, PG_BIN, SUPERUSER};
use zdr_tests::seaweed::SeaweedFs;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    cluster: Cluster,
    _s3: SeaweedFs,
}

impl Env {
    /// A cluster with the database `shop` (1000 items), a config with the local tier as
    /// primary and the S3 tier as replica, and a `configs` files component.
    async fn new() -> Self {
        assert!(
            support::available(),
            "PostgreSQL 15 server binaries not found in {PG_BIN}: run scripts/install-test-deps.sh"
        );
        let cluster = Cluster::start();
        cluster.psql("postgres", "CREATE DATABASE shop");
        cluster.psql(
            "shop",
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
        );
        let s3 = SeaweedFs::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("etc-app");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("app.env"), "LOG_LEVEL=info\n").unwrap();
        let config = dir.path().join("zdr.toml");
        // Credentials in the file: a test cannot set this process's environment.
        std::fs::write(
            &config,
            format!(
                r#"
primary = "local"
replicate_to = ["s3"]

[tiers.local]
type = "fs"
root = "{local}"

[tiers.s3]
type = "s3"
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "{region}"
access_key_id = "{key}"
secret_access_key = "{secret}"

[components.postgres]
type = "postgres"
port = {port}
user = "{SUPERUSER}"
password = "{PASSWORD}"
database = "shop"
bin_dir = "{PG_BIN}"

[components.configs]
type = "files"
path = "{files}"
"#,
                local = dir.path().join("local").display(),
                bucket = s3.bucket(),
                endpoint = s3.endpoint(),
                region = s3.region(),
                key = s3.access_key_id(),
                secret = s3.secret_access_key(),
                port = cluster.port,
                files = files.display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            cluster,
            _s3: s3,
        }
    }

    fn local(&self) -> &Path {
        self.dir.path()
    }
}

/// The newest backup of the component is a base backup, and the primary tier's copy of the
/// newest logical one is damaged: the example restores the logical backup from the S3 tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_latest_postgres_skips_base_backups_and_falls_back_to_the_next_tier() {
    let env = Env::new().await;
    let stack = Stack::from_file(&env.config).await.unwrap();
    let progress = Progress::none();
    let logical = stack
        .backup(
            "postgres",
            &BackupOptions {
                replicate: true,
                ..BackupOptions::default()
            },
            &progress,
        )
        .await
        .unwrap();
    assert!(logical.replication.as_ref().unwrap().is_ok());
    let base = stack
        .backup(
            "postgres",
            &BackupOptions {
                base: true,
                ..BackupOptions::default()
            },
            &progress,
        )
        .await
        .unwrap();
    assert_eq!(base.backup.kind, BackupKind::Physical);
    assert!(base.backup.started_at >= logical.backup.started_at);

    // Damage the primary's copy of the logical dump: one flipped byte in the middle.
    let artifact = logical
        .backup
        .artifacts
        .iter()
        .max_by_key(|a| a.size)
        .unwrap();
    let path = env.local().join("local").join(&artifact.key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, bytes).unwrap();

    // The accident.
    env.cluster.psql("shop", "DELETE FROM items WHERE id > 10");

    let report = restore_latest_postgres::restore_latest(&env.config)
        .await
        .unwrap();
    assert_eq!(report.backup.id, logical.backup.id, "a logical backup");
    assert_eq!(report.tier, "s3", "from the second tier");
    assert!(report.is_ok());
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].tier, "local");
    assert_eq!(
        env.cluster.psql("shop", "SELECT count(*) FROM items"),
        "1000"
    );

    // Only base backups left: the error points at point-in-time recovery.
    let only_base = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("replicate_to = [\"s3\"]", "")
        .replace(
            &env.local().join("local").display().to_string(),
            &only_base.path().display().to_string(),
        );
    let config = only_base.path().join("zdr.toml");
    std::fs::write(&config, text).unwrap();
    let stack = Stack::from_file(&config).await.unwrap();
    stack
        .backup(
            "postgres",
            &BackupOptions {
                base: true,
                ..BackupOptions::default()
            },
            &progress,
        )
        .await
        .unwrap();
    let err = restore_latest_postgres::restore_latest(&config)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), zdr::ErrorKind::NotFound, "{err}");
    assert!(
        err.hint().unwrap_or_default().contains("point-in-time"),
        "{err} / {:?}",
        err.hint()
    );
}

/// Every component backed up and replicated in one call each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_all_backs_up_every_component_and_replicates() {
    let env = Env::new().await;
    let results = backup_all::backup_all(&env.config).await.unwrap();
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["configs", "postgres"]);
    for (name, r) in &results {
        assert!(r.is_ok(), "{name}: {r:?}");
    }
    let stack = Stack::from_file(&env.config).await.unwrap();
    for listing in stack.list(None, None).await.unwrap() {
        assert_eq!(listing.backups.len(), 2, "tier {}", listing.tier);
        assert!(listing.problems.is_empty());
    }
}

/// A scratch verification whose restored copy differs from the manifest's facts: the
/// problems come back as data (`ScratchRestoreReport::verify`), the live database untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_restore_reports_mismatches_as_data() {
    let env = Env::new().await;
    let stack = Stack::from_file(&env.config).await.unwrap();
    let progress = Progress::none();
    let ok = stack
        .backup("postgres", &BackupOptions::default(), &progress)
        .await
        .unwrap();
    let report = stack
        .verify_restore("postgres", None, &progress)
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.verify);
    assert!(report.outcome.is_some());

    // The manifest now claims one row more than the dump holds (its sidecar rewritten to
    // match, so the catalog accepts it).
    let key = format!("manifests/postgres/{}.json", ok.backup.id);
    let path = env.local().join("local").join(&key);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let tables = m["facts"]["tables"].as_array_mut().unwrap();
    let items = tables.iter_mut().find(|t| t["name"] == "items").unwrap();
    items["rows"] = serde_json::json!(1001);
    let bytes = serde_json::to_vec_pretty(&m).unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    std::fs::write(&path, &bytes).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    std::fs::write(
        path.with_file_name(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )
    .unwrap();

    let report = stack
        .verify_restore("postgres", None, &progress)
        .await
        .unwrap();
    assert!(!report.is_ok());
    assert!(report.outcome.is_none());
    assert!(
        report.verify.problems.iter().any(|p| p.contains("items")),
        "{:?}",
        report.verify
    );
    assert_eq!(
        env.cluster.psql("shop", "SELECT count(*) FROM items"),
        "1000"
    );
    assert!(
        !env.cluster
            .databases()
            .iter()
            .any(|d| d.contains("__zdr_verify_")),
        "the scratch database is dropped"
    );
}

#[path = "../../examples/backup_configs.rs"]
mod backup_configs;

/// `examples/backup_configs.rs` (the lower-level crates directly): back up, replicate offsite,
/// restore from the offsite tier alone, verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_configs_example_restores_from_the_offsite_tier() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("etc-app");
    std::fs::create_dir_all(source.join("nginx")).unwrap();
    std::fs::write(source.join("app.env"), "LOG_LEVEL=info\n").unwrap();
    std::fs::write(source.join("nginx/site.conf"), "server {}\n").unwrap();
    let report = backup_configs::backup_configs(source, dir.path().join("backups"), dir.path())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(report.checked >= 3, "{report:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("restored/nginx/site.conf")).unwrap(),
        "server {}\n"
    );
}
