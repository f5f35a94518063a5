//! `zdr` with a `qdrant` component against the Qdrant **double** (REST + gRPC) of zdr-qdrant's
//! tests (`zdr-qdrant/tests/support/qdrant_double.rs`): snapshot backup, list, restore under another
//! collection name, verification, a drill and a verification by restore into scratch
//! collections; the API key never appears in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../zdr-qdrant/tests/support/qdrant_double.rs"]
#[allow(dead_code)]
mod qdrant_double;

use std::process::{Command, Output};

use serde_json::{Value, json};

fn curl(url: &str, key: &str, method: &str, path: &str, body: Value) -> Value {
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            method,
            "-H",
            &format!("api-key: {key}"),
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", &body.to_string(), &format!("{url}{path}")])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn zdr(config: &std::path::Path, key: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(config)
        .arg("--no-progress")
        .args(args)
        .env("ZDR_COMPONENTS__VECTORS__API_KEY", key)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_snapshot_backup_and_restore_under_another_name() {
    let key = "qdrant-test-key-7f3a";
    let double = qdrant_double::QdrantDouble::start(key).await;
    let url = double.url.clone();
    let grpc = double.grpc_url.clone();
    let (u, k) = (url.clone(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        curl(&u, &k, "PUT", "/collections/documents", json!({"vectors": {"size": 4, "distance": "Cosine"}}));
        let points: Vec<Value> = (1..=20)
            .map(|i| json!({"id": i, "vector": [i as f32, 0.5, 0.25, 1.0], "payload": {"doc": format!("d{i}")}}))
            .collect();
        curl(&u, &k, "PUT", "/collections/documents/points?wait=true", json!({"points": points}));
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n[components.vectors]\ntype = \"qdrant\"\nurl = \"{url}\"\ngrpc_url = \"{grpc}\"\ncollections = [\"documents\"]\n",
            dir.path().join("tier").display()
        ),
    )
    .unwrap();
    let cfg = config.clone();
    let k = key.to_owned();
    let outs = tokio::task::spawn_blocking(move || {
        let backup = zdr(&cfg, &k, &["backup", "vectors"]);
        let restore = zdr(
            &cfg,
            &k,
            &[
                "--json",
                "restore",
                "vectors",
                "--database",
                "documents_copy",
            ],
        );
        let wrong = zdr(&cfg, "wrong-key", &["backup", "vectors"]);
        let drill = zdr(&cfg, &k, &["--json", "drill", "vectors"]);
        let check = zdr(&cfg, &k, &["verify", "vectors", "--restore"]);
        (backup, restore, wrong, drill, check)
    })
    .await
    .unwrap();
    let (backup, restore, wrong, drill, check) = outs;
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(backup.status.success(), "{}", err(&backup));
    assert!(restore.status.success(), "{}", err(&restore));
    let v: Value = serde_json::from_slice(&restore.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let (u, k) = (url.clone(), key.to_owned());
    let info = tokio::task::spawn_blocking(move || {
        curl(&u, &k, "GET", "/collections/documents_copy", Value::Null)
    })
    .await
    .unwrap();
    assert_eq!(info["result"]["points_count"], 20, "{info}");
    assert_eq!(wrong.status.code(), Some(2), "{}", err(&wrong));
    // A drill and a verification by restore go through scratch collections that are gone
    // afterwards; the live collections and their snapshots are as they were.
    assert!(drill.status.success(), "{}", err(&drill));
    let v: Value = serde_json::from_slice(&drill.stdout).unwrap();
    assert_eq!(v["verify"]["problems"], json!([]), "{v}");
    assert_eq!(v["verify"]["checked"], 1, "one collection verified: {v}");
    assert!(check.status.success(), "{}", err(&check));
    let (u, k) = (url.clone(), key.to_owned());
    let (names, snaps) = tokio::task::spawn_blocking(move || {
        let list = curl(&u, &k, "GET", "/collections", Value::Null);
        let snaps = curl(
            &u,
            &k,
            "GET",
            "/collections/documents/snapshots",
            Value::Null,
        );
        (list, snaps)
    })
    .await
    .unwrap();
    let mut names: Vec<String> = names["result"]["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["documents", "documents_copy"]);
    assert_eq!(snaps["result"], json!([]), "{snaps}");
    for o in [&backup, &restore, &wrong, &drill, &check] {
        assert!(!err(o).contains(key) && !String::from_utf8_lossy(&o.stdout).contains(key));
    }
}

#[test]
fn qdrant_rest_port_other_than_6333_needs_grpc_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n[components.vectors]\ntype = \"qdrant\"\nurl = \"http://127.0.0.1:18080\"\n",
            dir.path().join("tier").display()
        ),
    )
    .unwrap();
    let out = zdr(&config, "some-key-9c1e", &["backup", "vectors"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("grpc_url"), "{err}");
    assert!(!err.contains("some-key-9c1e"), "{err}");
}

/// With `scratch_url`, a drill and a verification by restore go to that server: the live
/// server receives no upload and holds no scratch collection; the scratch server is left
/// with nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_drill_on_a_scratch_server_leaves_the_live_one_alone() {
    let key = "qdrant-test-key-scratch-9c1e";
    let live = qdrant_double::QdrantDouble::start(key).await;
    let scratch = qdrant_double::QdrantDouble::start(key).await;
    let (u, k) = (live.url.clone(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        curl(&u, &k, "PUT", "/collections/documents", json!({"vectors": {"size": 4, "distance": "Dot"}}));
        let points: Vec<Value> = (1..=12)
            .map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.5, 0.25], "payload": {"doc": format!("d{i}")}}))
            .collect();
        curl(&u, &k, "PUT", "/collections/documents/points?wait=true", json!({"points": points}));
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n[components.vectors]\ntype = \"qdrant\"\nurl = \"{}\"\ngrpc_url = \"{}\"\nscratch_url = \"{}\"\nscratch_grpc_url = \"{}\"\n",
            dir.path().join("tier").display(),
            live.url,
            live.grpc_url,
            scratch.url,
            scratch.grpc_url
        ),
    )
    .unwrap();
    let k = key.to_owned();
    let (backup, drill, check) = tokio::task::spawn_blocking(move || {
        (
            zdr(&config, &k, &["backup", "vectors"]),
            zdr(&config, &k, &["drill", "vectors"]),
            zdr(&config, &k, &["verify", "vectors", "--restore"]),
        )
    })
    .await
    .unwrap();
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(backup.status.success(), "{}", err(&backup));
    assert!(drill.status.success(), "{}", err(&drill));
    assert!(check.status.success(), "{}", err(&check));
    assert_eq!(live.uploads(), 0, "the live server received an upload");
    assert_eq!(scratch.uploads(), 2, "one upload per scratch restore");
    assert_eq!(
        scratch.all_snapshot_count(),
        0,
        "snapshot files left on the scratch server"
    );
    let (u, k) = (scratch.url.clone(), key.to_owned());
    let left =
        tokio::task::spawn_blocking(move || curl(&u, &k, "GET", "/collections", Value::Null))
            .await
            .unwrap();
    assert_eq!(left["result"]["collections"], json!([]), "{left}");
}
