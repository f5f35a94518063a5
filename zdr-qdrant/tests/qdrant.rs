//! zdr-qdrant against the Qdrant REST double (`support/qdrant_double.rs`), or against a real
//! Qdrant when `ZDR_TEST_QDRANT_URL` (and optional `ZDR_TEST_QDRANT_API_KEY`) is set; the
//! double's fault switches (corrupt download, dropped connection, reported version) are
//! skipped live. Backups go through `zdr_storage::Repository` on a local-filesystem tier.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::qdrant_double::QdrantDouble;
use zdr_core::{Component, ErrorKind, Progress, RestoreTarget, Result, Verifier};
use zdr_qdrant::{QdrantComponent, QdrantConfig, QdrantFacts};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};

const KEY: &str = "double-api-k3y-s3cret";

struct Env {
    url: String,
    api_key: Option<String>,
    double: Option<QdrantDouble>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    repo: Repository,
}

async fn env() -> Env {
    let (url, api_key, double) = match std::env::var("ZDR_TEST_QDRANT_URL") {
        Ok(url) => (url, std::env::var("ZDR_TEST_QDRANT_API_KEY").ok(), None),
        Err(_) => {
            let d = QdrantDouble::start(KEY).await;
            (d.url.clone(), Some(d.api_key.clone()), Some(d))
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    Env {
        url,
        api_key,
        double,
        http: reqwest::Client::new(),
        repo: Repository::new(tier, PipelineOptions::default()),
        _dir: dir,
    }
}

fn unique(prefix: &str) -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("zdr_{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

impl Env {
    fn component(&self, collections: &[&str], key: Option<String>) -> QdrantComponent {
        QdrantComponent::new(
            Component::new("qdrant").unwrap(),
            QdrantConfig {
                url: self.url.clone(),
                api_key: key,
                collections: collections.iter().map(|c| c.to_string()).collect(),
                ..QdrantConfig::default()
            },
        )
        .unwrap()
    }

    fn qdrant(&self, collections: &[&str]) -> QdrantComponent {
        self.component(collections, self.api_key.clone())
    }

    async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(k) = &self.api_key {
            r = r.header("api-key", k);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    /// A collection of `n` 4-d points with payloads, and an alias to it.
    async fn seed(&self, c: &str, n: u64, alias: Option<&str>) {
        self.req(
            reqwest::Method::PUT,
            &format!("/collections/{c}"),
            Some(json!({"vectors": {"size": 4, "distance": "Dot"}})),
        )
        .await;
        let points: Vec<Value> = (1..=n)
            .map(|i| {
                json!({"id": i, "vector": [i as f32, 1.0, 0.5, 0.25],
                       "payload": {"doc": format!("document {i}"), "n": i}})
            })
            .collect();
        self.req(
            reqwest::Method::PUT,
            &format!("/collections/{c}/points?wait=true"),
            Some(json!({ "points": points })),
        )
        .await;
        if let Some(a) = alias {
            self.req(
                reqwest::Method::POST,
                "/collections/aliases",
                Some(
                    json!({"actions": [{"create_alias": {"collection_name": c, "alias_name": a}}]}),
                ),
            )
            .await;
        }
    }

    async fn drop_collection(&self, c: &str) {
        self.req(reqwest::Method::DELETE, &format!("/collections/{c}"), None)
            .await;
    }

    async fn aliases(&self) -> Vec<(String, String)> {
        let v = self.req(reqwest::Method::GET, "/aliases", None).await;
        v["result"]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["alias_name"].as_str().unwrap().to_string(),
                    a["collection_name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn snapshots(&self, c: &str) -> usize {
        let v = self
            .req(
                reqwest::Method::GET,
                &format!("/collections/{c}/snapshots"),
                None,
            )
            .await;
        v["result"].as_array().unwrap().len()
    }

    async fn manifests(&self) -> usize {
        self.repo.catalog().await.unwrap().list(None).len()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_round_trip_under_another_name_then_original_with_aliases() -> Result<()> {
    let env = env().await;
    let c = unique("docs");
    let alias = format!("{c}_alias");
    env.seed(&c, 40, Some(&alias)).await;
    let q = env.qdrant(&[&c]);

    let manifest = env.repo.backup(&q, "daily", &Progress::none()).await?;
    let facts = QdrantFacts::from_manifest(&manifest)?;
    assert_eq!(facts.collections.len(), 1);
    assert_eq!(facts.collections[0].points_count, 40);
    assert_eq!(facts.collections[0].vectors["size"], 4);
    assert_eq!(facts.collections[0].checksum.len(), 64);
    assert_eq!(facts.collections[0].sample.len(), zdr_qdrant::SAMPLE_POINTS);
    assert!(facts.aliases.iter().any(|a| a.alias_name == alias));
    assert!(!facts.qdrant_version.is_empty());
    assert_eq!(env.snapshots(&c).await, 0, "snapshot deleted on the server");

    // Side by side under another name: aliases stay on the original.
    let side = format!("{c}_check");
    let target = RestoreTarget {
        name: Some(side.clone()),
        ..Default::default()
    };
    let out = env
        .repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await?;
    assert_eq!(out.target, side);
    let report = q.verify(&manifest, &target).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.checked > 1);

    // An existing target is refused without overwrite.
    let err = env
        .repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);

    // Lose the original (and its alias), restore it: the alias comes back.
    env.drop_collection(&c).await;
    assert!(!env.aliases().await.iter().any(|(a, _)| *a == alias));
    env.repo
        .restore(&q, &manifest, &RestoreTarget::default(), &Progress::none())
        .await?;
    assert!(env.aliases().await.contains(&(alias.clone(), c.clone())));
    let report = q.verify(&manifest, &RestoreTarget::default()).await?;
    assert!(report.is_ok(), "{:?}", report.problems);

    // Over the live collection (overwrite asked): the existing alias is kept as is.
    let over = RestoreTarget {
        overwrite: true,
        ..Default::default()
    };
    env.repo
        .restore(&q, &manifest, &over, &Progress::none())
        .await?;
    assert!(env.aliases().await.contains(&(alias.clone(), c.clone())));

    env.drop_collection(&c).await;
    env.drop_collection(&side).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verification_reports_changed_points() -> Result<()> {
    let env = env().await;
    let c = unique("verify");
    env.seed(&c, 12, None).await;
    let q = env.qdrant(&[&c]);
    let manifest = env.repo.backup(&q, "daily", &Progress::none()).await?;
    let id = QdrantFacts::from_manifest(&manifest)?.collections[0].sample[0]
        .id
        .clone();
    env.req(
        reqwest::Method::PUT,
        &format!("/collections/{c}/points?wait=true"),
        Some(json!({"points": [
            {"id": id, "vector": [9.0, 9.0, 9.0, 9.0], "payload": {"doc": "tampered"}},
            {"id": 1000, "vector": [1.0, 1.0, 1.0, 1.0], "payload": {}}
        ]})),
    )
    .await;
    let report = q.verify(&manifest, &RestoreTarget::default()).await?;
    assert!(!report.is_ok());
    let all = report.problems.join("\n");
    assert!(all.contains("13 points"), "{all}");
    assert!(all.contains("another payload"), "{all}");
    env.drop_collection(&c).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn checksum_mismatch_on_download_is_refused_without_manifest() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!("live Qdrant: cannot corrupt its downloads, skipped");
        return Ok(());
    };
    let c = unique("corrupt");
    env.seed(&c, 10, None).await;
    double.corrupt_next_download();
    let err = env
        .repo
        .backup(&env.qdrant(&[&c]), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(err.context_value("collection"), Some(c.as_str()));
    assert_eq!(env.manifests().await, 0);
    assert_eq!(double.snapshot_count(&c), 0, "snapshot still deleted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn server_dropping_the_download_midway_is_a_clear_error_without_manifest() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!("live Qdrant: cannot drop its connections, skipped");
        return Ok(());
    };
    let c = unique("drop");
    env.seed(&c, 10, None).await;
    double.die_after(64 * 1024);
    let err = env
        .repo
        .backup(&env.qdrant(&[&c]), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert!(err.message().contains("interrupted"), "{err}");
    assert_eq!(err.context_value("collection"), Some(c.as_str()));
    assert_eq!(env.manifests().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_api_key_is_bad_input_and_never_shown() -> Result<()> {
    let env = env().await;
    if env.api_key.is_none() {
        eprintln!("live Qdrant without an API key: skipped");
        return Ok(());
    }
    let wrong = "wr0ng-k3y-n0t-sh0wn";
    for key in [Some(wrong.to_string()), None] {
        let q = env.component(&[], key);
        let err = env
            .repo
            .backup(&q, "daily", &Progress::none())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
        let shown = format!("{err} {err:?} {q:?}");
        assert!(!shown.contains(wrong) && !shown.contains(KEY), "{shown}");
    }
    assert_eq!(env.manifests().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_collection_is_not_found_with_its_name() -> Result<()> {
    let env = env().await;
    let c = unique("absent");
    let err = env
        .repo
        .backup(&env.qdrant(&[&c]), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context_value("collection"), Some(c.as_str()));
    assert_eq!(err.context_value("component"), Some("qdrant"));
    assert_eq!(env.manifests().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_from_a_newer_qdrant_is_refused_before_upload() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!("live Qdrant: cannot change its version, skipped");
        return Ok(());
    };
    let c = unique("version");
    env.seed(&c, 5, None).await;
    let q = env.qdrant(&[&c]);
    let manifest = env.repo.backup(&q, "daily", &Progress::none()).await?;
    double.set_version("1.17.4");
    let target = RestoreTarget {
        name: Some(format!("{c}_old")),
        ..Default::default()
    };
    let err = env
        .repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        err.message().contains("1.18.2") && err.message().contains("1.17.4"),
        "{err}"
    );
    // A newer patch or minor server is fine.
    double.set_version("1.18.9");
    env.repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_export_and_import_round_trip_across_pages() -> Result<()> {
    let env = env().await;
    let c = unique("logical");
    let n = zdr_qdrant::BATCH as u64 * 2 + 37;
    env.seed(&c, n, None).await;
    env.req(
        reqwest::Method::PUT,
        &format!("/collections/{c}/index?wait=true"),
        Some(json!({"field_name": "n", "field_schema": "integer"})),
    )
    .await;
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            logical: true,
            ..env.qdrant(&[&c]).config().clone()
        },
    )?;
    let manifest = env.repo.backup(&q, "daily", &Progress::none()).await?;
    assert_eq!(manifest.kind, zdr_core::BackupKind::Export);
    let facts = QdrantFacts::from_manifest(&manifest)?;
    assert!(facts.logical);
    assert_eq!(facts.collections[0].points_count, n);
    assert!(manifest.artifacts[0].key.contains(".jsonl"));

    // A logical export crosses versions: an older target is not refused.
    if let Some(d) = &env.double {
        d.set_version("1.12.0");
    }
    let copy = format!("{c}_copy");
    let target = RestoreTarget {
        name: Some(copy.clone()),
        ..Default::default()
    };
    env.repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await?;
    let report = q.verify(&manifest, &target).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    let info = env
        .req(reqwest::Method::GET, &format!("/collections/{copy}"), None)
        .await;
    assert!(info["result"]["payload_schema"]["n"].is_object(), "{info}");
    let got = env
        .req(
            reqwest::Method::POST,
            &format!("/collections/{copy}/points"),
            Some(json!({"ids": [7], "with_payload": true, "with_vector": true})),
        )
        .await;
    let p = &got["result"][0];
    assert_eq!(p["payload"]["doc"], "document 7");
    assert_eq!(p["vector"][0].as_f64(), Some(7.0));

    env.drop_collection(&c).await;
    env.drop_collection(&copy).await;
    Ok(())
}
