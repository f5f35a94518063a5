//! zdr-qdrant against the Qdrant double (`support/qdrant_double.rs`: REST + gRPC over one
//! state), or against a real Qdrant when `ZDR_TEST_QDRANT_URL` is set (REST; optional
//! `ZDR_TEST_QDRANT_GRPC_URL`, default port 6334 on the same host, `ZDR_TEST_QDRANT_API_KEY`,
//! and `ZDR_TEST_QDRANT_SELF_URL`: the REST URL as the server itself reaches it, for
//! recover-from-URL, default `ZDR_TEST_QDRANT_URL`). The double's fault switches (corrupt
//! download, dropped connection, reported version, REST-only key) are skipped live. Backups
//! go through `zdr_storage::Repository` on a local-filesystem tier.

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

static BACKUPS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

struct Env {
    url: String,
    grpc_url: Option<String>,
    self_url: String,
    api_key: Option<String>,
    double: Option<QdrantDouble>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    repo: Repository,
}

async fn env() -> Env {
    let (url, grpc_url, api_key, double) = match std::env::var("ZDR_TEST_QDRANT_URL") {
        Ok(url) => (
            url,
            std::env::var("ZDR_TEST_QDRANT_GRPC_URL").ok(),
            std::env::var("ZDR_TEST_QDRANT_API_KEY").ok(),
            None,
        ),
        Err(_) => {
            let d = QdrantDouble::start(KEY).await;
            (
                d.url.clone(),
                Some(d.grpc_url.clone()),
                Some(d.api_key.clone()),
                Some(d),
            )
        }
    };
    let self_url = std::env::var("ZDR_TEST_QDRANT_SELF_URL").unwrap_or_else(|_| url.clone());
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
        grpc_url,
        self_url,
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
                grpc_url: self.grpc_url.clone(),
                api_key: key.map(zdr_core::Secret::new),
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

    /// A backup through the repository. Backups hold [`BACKUPS`] shared: a full-storage
    /// snapshot that fails deletes every collection snapshot new since it started, which
    /// would include another test's snapshot in flight (two backups of one server at once).
    async fn backup(&self, q: &QdrantComponent) -> Result<zdr_core::Manifest> {
        let _shared = BACKUPS.read().await;
        self.repo.backup(q, "daily", &Progress::none()).await
    }

    /// A backup while no other test's backup runs (see [`Env::backup`]).
    async fn backup_exclusive(&self, q: &QdrantComponent) -> Result<zdr_core::Manifest> {
        let _alone = BACKUPS.write().await;
        self.repo.backup(q, "daily", &Progress::none()).await
    }

    /// Drop a collection of the test, first checking that zdr left none of its snapshots
    /// on the server (Qdrant keeps a dropped collection's snapshot files).
    async fn drop_collection(&self, c: &str) {
        assert_eq!(
            self.snapshots(c).await,
            0,
            "snapshots of {c} left on the server"
        );
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

    let manifest = env.backup(&q).await?;
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
    // Qdrant keeps an uploaded snapshot file until it is deleted: the restore deletes it.
    assert_eq!(
        env.snapshots(&side).await,
        0,
        "uploaded snapshot left on the server"
    );
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
    assert_eq!(
        env.snapshots(&c).await,
        0,
        "uploaded snapshot left on the server"
    );
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
    let manifest = env.backup(&q).await?;
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
    let err = env.backup(&env.qdrant(&[&c])).await.unwrap_err();
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
    let err = env.backup(&env.qdrant(&[&c])).await.unwrap_err();
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
        let err = env.backup(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
        assert!(
            err.message().contains("gRPC"),
            "refused on gRPC first: {err}"
        );
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
    let err = env.backup(&env.qdrant(&[&c])).await.unwrap_err();
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
    let manifest = env.backup(&q).await?;
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
    // Index parameters beyond the type: a text index's tokenizer and case, a tenant key.
    let text = json!({"type": "text", "tokenizer": "word", "lowercase": false, "min_token_len": 2});
    let tenant = json!({"type": "keyword", "is_tenant": true});
    for (field, schema) in [("doc", &text), ("tenant", &tenant)] {
        env.req(
            reqwest::Method::PUT,
            &format!("/collections/{c}/index?wait=true"),
            Some(json!({"field_name": field, "field_schema": schema})),
        )
        .await;
    }
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            logical: true,
            ..env.qdrant(&[&c]).config().clone()
        },
    )?;
    let manifest = env.backup(&q).await?;
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
    let schema = &info["result"]["payload_schema"];
    assert!(schema["n"].is_object(), "{info}");
    // The parameters came back as recorded (the server may fill in defaults beside them).
    for (field, want) in [("doc", &text), ("tenant", &tenant)] {
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&schema[field]["params"][k], v, "{field}.{k}: {info}");
        }
    }
    assert_eq!(
        facts.collections[0].payload_schema["tenant"]["params"]["is_tenant"],
        true
    );
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

#[tokio::test(flavor = "multi_thread")]
async fn wrong_api_key_on_the_rest_side_is_bad_input_without_manifest() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!("live Qdrant: one key for REST and gRPC, skipped");
        return Ok(());
    };
    let c = unique("restkey");
    env.seed(&c, 5, None).await;
    let q = env.qdrant(&[&c]);
    let rest_only = "rest-only-k3y";
    double.set_rest_api_key(rest_only);
    // gRPC (info, snapshot) accepts the key, the REST download refuses it.
    let err = env.backup(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.message().contains("403"), "{err}");
    assert_eq!(err.context_value("collection"), Some(c.as_str()));
    let shown = format!("{err} {err:?} {q:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains(rest_only),
        "{shown}"
    );
    assert_eq!(env.manifests().await, 0);
    assert_eq!(double.snapshot_count(&c), 0, "snapshot deleted over gRPC");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_grpc_port_is_a_temporary_source_error() -> Result<()> {
    let env = env().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            grpc_url: Some(format!("http://127.0.0.1:{port}")),
            connect_timeout_secs: 2,
            ..env.qdrant(&[]).config().clone()
        },
    )?;
    let err = env.backup(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.message().contains(&port.to_string()), "{err}");
    assert_eq!(env.manifests().await, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_collection_on_grpc_calls_is_not_found() -> Result<()> {
    let env = env().await;
    let c = unique("nothere");
    let err = env.qdrant(&[]).list_snapshots(Some(&c)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context_value("collection"), Some(c.as_str()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn full_storage_snapshot_holds_every_collection_and_is_not_restored_through_the_api()
-> Result<()> {
    let env = env().await;
    let (a, b) = (unique("fulla"), unique("fullb"));
    env.seed(&a, 7, Some(&format!("{a}_alias"))).await;
    env.seed(&b, 3, None).await;
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            full_snapshot: true,
            ..env.qdrant(&[&a, &b]).config().clone()
        },
    )?;
    let before = q.list_snapshots(None).await?.len();
    let manifest = env.backup_exclusive(&q).await?;
    // Qdrant keeps the collection snapshots a full snapshot is made of: zdr deletes them —
    // of every collection on the server, other data included (live, the collections other
    // tests make are theirs to check).
    assert_eq!(env.snapshots(&a).await, 0, "collection snapshots left");
    assert_eq!(env.snapshots(&b).await, 0, "collection snapshots left");
    for other in q.list_collections().await? {
        if !other.starts_with("zdr") {
            assert_eq!(env.snapshots(&other).await, 0, "snapshots of {other} left");
        }
    }
    assert_eq!(manifest.artifacts.len(), 1);
    assert!(
        manifest.artifacts[0]
            .key
            .contains(zdr_qdrant::FULL_SNAPSHOT_ARTIFACT),
        "{}",
        manifest.artifacts[0].key
    );
    let facts = QdrantFacts::from_manifest(&manifest)?;
    let full = facts.full_snapshot.clone().expect("full snapshot facts");
    assert_eq!(full.checksum.len(), 64);
    assert_eq!(full.size, manifest.artifacts[0].raw_size);
    let counts: Vec<(String, u64)> = facts
        .collections
        .iter()
        .map(|c| (c.name.clone(), c.points_count))
        .collect();
    assert_eq!(counts, vec![(a.clone(), 7), (b.clone(), 3)]);
    assert_eq!(
        q.list_snapshots(None).await?.len(),
        before,
        "full snapshot deleted on the server"
    );
    // Restoring it is a server start, not an API call: refused with the hint.
    let err = env
        .repo
        .restore(&q, &manifest, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(
        format!("{err:?}").contains("as its storage snapshot"),
        "{err:?}"
    );
    // The collections are still what the backup recorded.
    let report = q.verify(&manifest, &RestoreTarget::default()).await?;
    assert!(report.is_ok(), "{:?}", report.problems);

    if let Some(double) = &env.double {
        // A corrupted full download fails the backup: no new manifest, snapshot still deleted.
        double.corrupt_next_download();
        let err = env.backup_exclusive(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
        assert_eq!(env.manifests().await, 1);
        assert_eq!(double.full_snapshot_count(), 0);
        // The server dropping the full download midway: a clear error, no manifest.
        double.die_after(100 * 1024);
        let err = env.backup_exclusive(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Source, "{err}");
        assert!(err.message().contains("interrupted"), "{err}");
        assert_eq!(env.manifests().await, 1);
        assert_eq!(double.full_snapshot_count(), 0);
    }
    env.drop_collection(&a).await;
    env.drop_collection(&b).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_by_recover_from_a_url_the_server_fetches() -> Result<()> {
    let env = env().await;
    let c = unique("recover");
    env.seed(&c, 9, None).await;
    // Keep the snapshot on the server: the server fetches it back from its own REST port.
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            delete_snapshots: false,
            recover_from: Some(format!(
                "{}/collections/{{collection}}/snapshots/{{snapshot}}",
                env.self_url
            )),
            // Live, the server's own address may differ from ours: it still needs the key.
            recover_with_api_key: env.self_url != env.url,
            ..env.qdrant(&[&c]).config().clone()
        },
    )?;
    let manifest = env.backup(&q).await?;
    let facts = QdrantFacts::from_manifest(&manifest)?;
    let snapshot = facts.collections[0].snapshot.clone();
    assert_eq!(env.snapshots(&c).await, 1, "kept on the server");
    let side = format!("{c}_recovered");
    let target = RestoreTarget {
        name: Some(side.clone()),
        ..Default::default()
    };
    let out = env
        .repo
        .restore(&q, &manifest, &target, &Progress::none())
        .await?;
    assert!(out.notes.iter().any(|n| n.contains("recover")), "{out:?}");
    let report = q.verify(&manifest, &target).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    let location = format!("{}/collections/{c}/snapshots/{snapshot}", env.self_url);
    if let Some(d) = &env.double {
        assert_eq!(d.recovered_from(), vec![location.clone()]);
        // The same server under another address: the key is not sent unless asked for, so
        // the server's own fetch is refused; with recover_with_api_key it goes through.
        let other = location.replace("127.0.0.1", "localhost");
        let checksum = facts.collections[0].checksum.clone();
        let err = q
            .recover_snapshot(&format!("{c}_other"), &other, Some(&checksum))
            .await
            .unwrap_err();
        assert!(err.message().contains("401"), "{err}");
        let with_key = QdrantComponent::new(
            Component::new("qdrant").unwrap(),
            QdrantConfig {
                recover_with_api_key: true,
                ..q.config().clone()
            },
        )?;
        with_key
            .recover_snapshot(&format!("{c}_other"), &other, Some(&checksum))
            .await?;
        assert_eq!(d.recovered_from().len(), 2);
        env.drop_collection(&format!("{c}_other")).await;
    }

    // A checksum that does not match is refused by the server; nothing is created.
    let bad = format!("{c}_bad");
    let err = q
        .recover_snapshot(&bad, &location, Some(&"0".repeat(64)))
        .await
        .unwrap_err();
    assert!(err.message().to_lowercase().contains("checksum"), "{err}");
    assert!(!format!("{err:?}").contains(KEY));
    assert_eq!(
        q.list_collections()
            .await?
            .iter()
            .filter(|n| **n == bad)
            .count(),
        0
    );

    env.req(
        reqwest::Method::DELETE,
        &format!("/collections/{c}/snapshots/{snapshot}"),
        None,
    )
    .await;
    env.drop_collection(&c).await;
    env.drop_collection(&side).await;
    Ok(())
}

/// A collection name that cannot be an artifact name (`team space`, which Qdrant accepts) no
/// longer blocks the backup: its artifact gets an encoded, reversible name, and both
/// collections come back.
#[tokio::test(flavor = "multi_thread")]
async fn collection_names_that_are_not_artifact_names_are_encoded() -> Result<()> {
    let env = env().await;
    let plain = unique("plain");
    let spaced = format!("{} team space", unique("odd"));
    env.seed(&plain, 12, None).await;
    env.seed(&spaced, 7, None).await;
    let q = env.qdrant(&[&plain, &spaced]);
    let manifest = env.backup(&q).await?;
    let names: Vec<&str> = manifest.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&plain.as_str()), "{names:?}");
    let encoded = zdr_qdrant::artifact_name(&spaced);
    assert!(names.contains(&encoded.as_str()), "{names:?}");
    assert_eq!(
        zdr_qdrant::collection_of_artifact(&encoded).as_deref(),
        Some(spaced.as_str())
    );
    env.drop_collection(&plain).await;
    env.drop_collection(&spaced).await;
    env.repo
        .restore(&q, &manifest, &RestoreTarget::default(), &Progress::none())
        .await?;
    let report = q.verify(&manifest, &RestoreTarget::default()).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    env.drop_collection(&plain).await;
    env.drop_collection(&spaced).await;
    Ok(())
}

/// A collection dropped while a full-storage snapshot runs fails it on the server (Qdrant
/// leaves the collection snapshots made so far): the snapshot is taken again with the
/// collections then on the server, and nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn full_storage_snapshot_survives_a_collection_dropped_meanwhile() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!(
            "live Qdrant: the drop cannot be timed, skipped (the suite's parallel drops do it)"
        );
        return Ok(());
    };
    let (a, b, gone) = (unique("keep1"), unique("keep2"), unique("zgone"));
    for c in [&a, &b, &gone] {
        env.seed(c, 4, None).await;
    }
    // Every collection (none configured), as in a whole-server backup.
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            full_snapshot: true,
            ..env.qdrant(&[]).config().clone()
        },
    )?;
    double.drop_during_full_snapshot(&gone);
    let manifest = env.backup_exclusive(&q).await?;
    let facts = QdrantFacts::from_manifest(&manifest)?;
    let names: Vec<&str> = facts.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec![a.as_str(), b.as_str()]);
    assert_eq!(double.all_snapshot_count(), 0, "collection snapshots left");
    assert_eq!(double.full_snapshot_count(), 0, "full snapshot left");

    // A configured collection that goes away is an error naming it, and nothing is left.
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            full_snapshot: true,
            ..env.qdrant(&[&a, &b]).config().clone()
        },
    )?;
    double.drop_during_full_snapshot(&b);
    let err = env.backup_exclusive(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(err.context_value("collection"), Some(b.as_str()), "{err:?}");
    assert_eq!(env.manifests().await, 1);
    assert_eq!(double.all_snapshot_count(), 0, "collection snapshots left");
    assert_eq!(double.full_snapshot_count(), 0, "full snapshot left");
    env.drop_collection(&a).await;
    Ok(())
}

/// A scratch restore (drills, `verify --restore`) restores into collections of its own,
/// compares them with the backup's facts, and deletes them and their snapshot files: the
/// live collections, aliases and snapshots are never touched.
#[tokio::test(flavor = "multi_thread")]
async fn scratch_restore_verifies_and_leaves_nothing_behind() -> Result<()> {
    let env = env().await;
    let (c, d) = (unique("scr1"), unique("scr2"));
    let alias = format!("{c}_alias");
    env.seed(&c, 30, Some(&alias)).await;
    env.seed(&d, 9, None).await;
    let q = env.qdrant(&[&c, &d]);
    let manifest = env.backup(&q).await?;
    let collections_before = q.list_collections().await?;
    let aliases_before = env.aliases().await;
    let scratch = q.restore_with(zdr_qdrant::RestoreOptions { scratch: true });
    let out = env
        .repo
        .restore(
            &scratch,
            &manifest,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await?;
    assert_eq!(out.items, 2, "{out:?}");
    assert!(out.notes.iter().any(|n| n.contains("verified")), "{out:?}");
    assert!(out.target.contains(zdr_qdrant::SCRATCH_PREFIX), "{out:?}");
    let ours = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| {
                !n.starts_with(zdr_qdrant::SCRATCH_PREFIX) || out.target.contains(n.as_str())
            })
            .collect()
    };
    let after = q.list_collections().await?;
    assert!(
        !after.iter().any(|n| out.target.contains(n.as_str())),
        "scratch collections left: {after:?}"
    );
    assert_eq!(
        ours(after.clone())
            .iter()
            .filter(|n| **n == c || **n == d)
            .count(),
        2
    );
    assert!(collections_before.contains(&c));
    assert_eq!(
        env.aliases()
            .await
            .iter()
            .filter(|(a, _)| *a == alias)
            .count(),
        aliases_before.iter().filter(|(a, _)| *a == alias).count()
    );
    if let Some(double) = &env.double {
        assert_eq!(double.all_snapshot_count(), 0, "snapshot files left");
    }

    // Facts the data does not match: an integrity error carrying the verification, and the
    // scratch collections are still deleted.
    let mut wrong = manifest.clone();
    wrong.facts["collections"][0]["points_count"] = json!(31);
    let err = env
        .repo
        .restore(
            &scratch,
            &wrong,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    let report = err
        .verify_report()
        .expect("the verification travels with the error");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("30 points, the backup recorded 31")),
        "{:?}",
        report.problems
    );
    let left: Vec<String> = q
        .list_collections()
        .await?
        .into_iter()
        .filter(|n| {
            n.starts_with(&zdr_qdrant::host_scratch_prefix())
                && n.contains(&format!("-{}-", std::process::id()))
        })
        .collect();
    assert!(left.is_empty(), "scratch collections left: {left:?}");
    // A target name does not apply to a scratch restore.
    let named = RestoreTarget {
        name: Some("elsewhere".into()),
        ..Default::default()
    };
    let err = env
        .repo
        .restore(&scratch, &manifest, &named, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    env.drop_collection(&c).await;
    env.drop_collection(&d).await;
    Ok(())
}

/// Scratch collections a killed run of this host left behind (its process is gone) are
/// deleted by the next scratch restore; those of a live process are kept.
#[tokio::test(flavor = "multi_thread")]
async fn scratch_collections_of_a_dead_process_are_removed() -> Result<()> {
    let env = env().await;
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let prefix = zdr_qdrant::host_scratch_prefix();
    let abandoned = format!("{prefix}{dead}-1-0");
    let live = format!("{prefix}{}-1-0", std::process::id());
    env.seed(&abandoned, 3, None).await;
    env.seed(&live, 3, None).await;
    let q = env.qdrant(&[]);
    let removed = q.remove_abandoned_scratch().await?;
    assert!(removed.contains(&abandoned), "{removed:?}");
    assert!(!removed.contains(&live), "{removed:?}");
    let now = q.list_collections().await?;
    assert!(!now.contains(&abandoned) && now.contains(&live), "{now:?}");
    env.drop_collection(&live).await;
    Ok(())
}

/// A server that stops sending midway through a download, or stops answering at all (as
/// after SIGSTOP), fails the call after the stall timeout with a temporary error instead of
/// hanging; no manifest is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_server_is_a_temporary_error_after_the_stall_timeout() -> Result<()> {
    let env = env().await;
    let Some(double) = &env.double else {
        eprintln!("live Qdrant: cannot stall it from here, skipped");
        return Ok(());
    };
    let c = unique("stall");
    env.seed(&c, 10, None).await;
    let q = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            stall_timeout_secs: 1,
            timeout_secs: 5,
            ..env.qdrant(&[&c]).config().clone()
        },
    )?;
    let manifest = env.backup(&q).await?;
    double.stall_after(64 * 1024);
    let started = std::time::Instant::now();
    let err = env.backup(&q).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.message().contains("gave no answer for 1 s"), "{err}");
    assert!(err.message().contains("after 65536 bytes"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(env.manifests().await, 1);
    assert_eq!(double.snapshot_count(&c), 0, "snapshot still deleted");

    // An upload the server stops reading (or, once the body is sent, never answers).
    double.stall_uploads();
    let started = std::time::Instant::now();
    let err = env
        .repo
        .restore(
            &q,
            &manifest,
            &RestoreTarget {
                name: Some(format!("{c}_copy")),
                ..Default::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.message().contains("gave no answer"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    // Stopped while it makes a snapshot (a long operation, limited by timeout_secs): given
    // up once the server leaves its health check unanswered, not after the long limit.
    let patient = QdrantComponent::new(
        Component::new("qdrant").unwrap(),
        QdrantConfig {
            timeout_secs: 600,
            ..q.config().clone()
        },
    )?;
    double.freeze_on_snapshot();
    let started = std::time::Instant::now();
    let err = env.backup(&patient).await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.message().contains("create snapshot"), "{err}");
    assert!(
        err.message().contains("health check went unanswered"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(env.manifests().await, 1);

    double.stop_answering();
    let err = q.server_version().await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.message().contains("gave no answer"), "{err}");
    let err = env
        .repo
        .restore(
            &q,
            &manifest,
            &RestoreTarget {
                name: Some(format!("{c}_copy")),
                ..Default::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    Ok(())
}
