//! zdr-vault against the Vault HTTP **double** (`support/vault_double.rs`): KV v1 and v2
//! export/import/verify, refusals, a server dying mid-transfer, a corrupt artifact.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support {
    pub mod vault_double;
}

use std::sync::atomic::Ordering;

use serde_json::json;
use support::vault_double::{Double, LIMITED_TOKEN, Version};
use zdr_core::{Component, ErrorKind, Progress, RestoreTarget};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
use zdr_vault::{
    Secret, VaultClientConfig, VaultComponent, VaultConfig, data_digest, resolve_reference,
};

const TOKEN: &str = "s.double-root-token";

struct Env {
    _dir: tempfile::TempDir,
    repo: Repository,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tier = open_tier(
            "local",
            &TierConfig::Fs {
                root: dir.path().to_path_buf(),
            },
        )
        .unwrap();
        Self {
            _dir: dir,
            repo: Repository::new(tier, PipelineOptions::default()),
        }
    }
    async fn backups(&self) -> usize {
        self.repo.catalog().await.unwrap().list(None).len()
    }
}

fn vault(addr: &str, token: &str, mounts: &[&str], allow_plaintext: bool) -> VaultComponent {
    VaultComponent::new(
        Component::new("vault").unwrap(),
        VaultConfig {
            client: VaultClientConfig {
                address: addr.to_owned(),
                token: Secret::new(token),
                namespace: None,
            },
            mounts: mounts.iter().map(|s| (*s).to_owned()).collect(),
            allow_plaintext,
            raft_snapshot: false,
            force: false,
        },
    )
}

async fn seed(d: &Double) {
    let mut s = d.inner.lock().unwrap();
    s.v1.insert(
        ("kv1".into(), "app/db".into()),
        json!({"password": "hunter2", "user": "app"}),
    );
    s.v1.insert(("kv1".into(), "app/nested/deep".into()), json!({"k": "v"}));
    s.v1.insert(("kv1".into(), "top".into()), json!({"n": 1}));
    s.v1.insert(("kv1".into(), "odd name?#%".into()), json!({"n": 2}));
    s.v2.insert(
        ("secret".into(), "zentoria/backup/postgresql".into()),
        vec![
            Version {
                data: Some(json!({"password": "old"})),
                ..Version::default()
            },
            Version {
                data: None,
                destroyed: true,
                ..Version::default()
            },
            Version {
                data: Some(json!({"password": "gone"})),
                deleted: true,
                ..Version::default()
            },
            Version {
                data: Some(json!({"password": "s3cr3t-value"})),
                ..Version::default()
            },
        ],
    );
    s.v2.insert(
        ("secret".into(), "one".into()),
        vec![Version {
            data: Some(json!({"a": "b"})),
            ..Version::default()
        }],
    );
}

#[tokio::test]
async fn kv_v1_and_v2_export_import_verify() {
    let src = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&src).await;
    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1", "secret"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    // The manifest holds counts only: no value, no digest.
    let text = String::from_utf8(m.to_json().unwrap()).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("s3cr3t"),
        "{text}"
    );
    assert!(!text.contains(&data_digest(&json!({"password": "hunter2", "user": "app"}))));
    assert_eq!(m.facts["mounts"][0]["paths"], 4);
    assert_eq!(m.facts["mounts"][1]["versions"], 5);
    assert_eq!(m.facts["mounts"][1]["deleted_or_destroyed"], 2);

    let dst = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    let out = env
        .repo
        .restore(
            &vault(&dst.addr, TOKEN, &[], false),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.items, 9);
    let s = dst.inner.lock().unwrap();
    assert_eq!(s.v1.len(), 4);
    assert_eq!(s.v1[&("kv1".to_owned(), "odd name?#%".to_owned())]["n"], 2);
    assert_eq!(
        s.v1[&("kv1".to_owned(), "app/db".to_owned())]["password"],
        "hunter2"
    );
    let vs = &s.v2[&("secret".to_owned(), "zentoria/backup/postgresql".to_owned())];
    assert_eq!(vs.len(), 4, "versions replayed in order");
    assert!(vs[1].destroyed && vs[2].deleted && !vs[3].deleted);
    assert_eq!(vs[0].data.as_ref().unwrap()["password"], "old");
    assert_eq!(vs[3].data.as_ref().unwrap()["password"], "s3cr3t-value");
}

#[tokio::test]
async fn import_into_another_mount_name() {
    let src = Double::start(TOKEN, &[("kv1", 1)]).await;
    seed(&src).await;
    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let dst = Double::start(TOKEN, &[("restored", 2)]).await;
    let target = RestoreTarget {
        name: Some("restored".into()),
        ..RestoreTarget::default()
    };
    env.repo
        .restore(
            &vault(&dst.addr, TOKEN, &[], false),
            &m,
            &target,
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(
        dst.inner.lock().unwrap().v2.len(),
        4,
        "v1 export imported into a v2 mount"
    );
}

#[tokio::test]
async fn plaintext_export_refused_wrong_token_unknown_mount() {
    let src = Double::start(TOKEN, &[("kv1", 1)]).await;
    seed(&src).await;
    let env = Env::new();
    let e = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], false),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(format!("{e}").contains("unencrypted"), "{e}");
    assert_eq!(
        src.served.load(Ordering::SeqCst),
        0,
        "refused before contacting Vault"
    );

    let e = env
        .repo
        .backup(
            &vault(&src.addr, "wrong", &["kv1"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(!format!("{e:?}").contains("wrong\""), "{e:?}");

    let e = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["nope"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(format!("{e}").contains("nope/"), "{e}");
    assert_eq!(env.backups().await, 0);

    // Wrong token on import: nothing written.
    let m = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let dst = Double::start(TOKEN, &[("kv1", 1)]).await;
    let e = env
        .repo
        .restore(
            &vault(&dst.addr, "wrong", &[], false),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(dst.inner.lock().unwrap().v1.is_empty());
}

/// The export asks the sink: a sink that encrypts (age keys in the pipeline) accepts it
/// without `allow_plaintext`; the same export into a plaintext sink is refused.
#[tokio::test]
async fn export_decided_by_whether_the_sink_encrypts() {
    let src = Double::start(TOKEN, &[("kv1", 1)]).await;
    seed(&src).await;

    let plain = Env::new();
    let e = plain
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], false),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_eq!(plain.backups().await, 0);

    let (_secret, public) = zdr_storage::AgeKeys::generate_identity();
    let keys = zdr_storage::AgeKeys::none()
        .with_recipients(&[public])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    let repo = Repository::new(
        tier,
        PipelineOptions {
            keys,
            ..PipelineOptions::default()
        },
    );
    let m = repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], false),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(m.artifacts.len(), 1);
    assert!(
        m.artifacts[0].key.ends_with(".age"),
        "{}",
        m.artifacts[0].key
    );
}

#[tokio::test]
async fn server_dying_mid_transfer_leaves_no_manifest() {
    let src = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&src).await;
    src.fail_after.store(6, Ordering::SeqCst);
    let env = Env::new();
    let e = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1", "secret"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("503"), "{e}");
    assert!(!format!("{e:?}").contains("hunter2"));
    assert_eq!(env.backups().await, 0);
}

#[tokio::test]
async fn corrupt_artifact_refused_before_restore() {
    let src = Double::start(TOKEN, &[("kv1", 1)]).await;
    seed(&src).await;
    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let key = &m.artifacts[0].key;
    let mut bytes = env.repo.tier().read_all(key).await.unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    env.repo.tier().write_all(key, bytes).await.unwrap();
    let dst = Double::start(TOKEN, &[("kv1", 1)]).await;
    let e = env
        .repo
        .restore(
            &vault(&dst.addr, TOKEN, &[], false),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(dst.served.load(Ordering::SeqCst), 0, "target untouched");
}

#[tokio::test]
async fn credential_references_v1_and_v2() {
    let d = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&d).await;
    let cfg = VaultClientConfig {
        address: d.addr.clone(),
        token: Secret::new(TOKEN),
        namespace: None,
    };
    let s = resolve_reference(&cfg, "vault:secret/zentoria/backup/postgresql#password")
        .await
        .unwrap();
    assert_eq!(s.expose(), "s3cr3t-value");
    assert_eq!(format!("{s:?}"), "Secret(***)");
    let s = resolve_reference(&cfg, "vault:kv1/app/db#user")
        .await
        .unwrap();
    assert_eq!(s.expose(), "app");
    let e = resolve_reference(&cfg, "vault:kv1/app/db#nope")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(resolve_reference(&cfg, "kv1/app/db").await.is_err());
}

fn raft(addr: &str, token: &str, force: bool) -> VaultComponent {
    VaultComponent::new(
        Component::new("vault").unwrap(),
        VaultConfig {
            client: VaultClientConfig {
                address: addr.to_owned(),
                token: Secret::new(token),
                namespace: None,
            },
            mounts: Vec::new(),
            allow_plaintext: false,
            raft_snapshot: true,
            force,
        },
    )
}

#[tokio::test]
async fn raft_snapshot_save_and_restore() {
    let d = Double::start(TOKEN, &[]).await;
    let snap: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    *d.snapshot.lock().unwrap() = snap.clone();
    let env = Env::new();
    let m = env
        .repo
        .backup(&raft(&d.addr, TOKEN, false), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(m.kind, zdr_core::BackupKind::Snapshot);
    assert_eq!(m.facts["bytes"], 3_000_000);
    env.repo
        .restore(
            &raft(&d.addr, TOKEN, false),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    env.repo
        .restore(
            &raft(&d.addr, TOKEN, true),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    let r = d.restored.lock().unwrap();
    assert_eq!(r.len(), 2);
    assert!(!r[0].0 && r[1].0, "snapshot-force only when asked");
    assert!(r[0].1 == snap && r[1].1 == snap);
}

#[tokio::test]
async fn raft_snapshot_wrong_token_and_server_dying() {
    let d = Double::start(TOKEN, &[]).await;
    *d.snapshot.lock().unwrap() = vec![7u8; 1_000_000];
    let env = Env::new();
    let e = env
        .repo
        .backup(&raft(&d.addr, "bad", false), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    d.die_mid_snapshot.store(true, Ordering::SeqCst);
    let e = env
        .repo
        .backup(&raft(&d.addr, TOKEN, false), "daily", &Progress::none())
        .await
        .unwrap_err();
    assert!(format!("{e}").contains("raft/snapshot"), "{e}");
    assert_eq!(env.backups().await, 0, "no manifest");
    assert!(
        env.repo.tier().list("").await.unwrap().is_empty(),
        "partial artifact removed"
    );
}

/// KV v2 through the HTTP API only, so it runs unchanged against a live Vault when
/// `ZDR_TEST_VAULT_ADDR` and `ZDR_TEST_VAULT_TOKEN` are set (fresh mounts with unique names),
/// and against the double otherwise.
#[tokio::test]
async fn kv_v2_versions_live_or_double() {
    let (addr, token, _double) = match (
        std::env::var("ZDR_TEST_VAULT_ADDR"),
        std::env::var("ZDR_TEST_VAULT_TOKEN"),
    ) {
        (Ok(a), Ok(t)) => (a, t, None),
        _ => {
            let d = Double::start(TOKEN, &[]).await;
            (d.addr.clone(), TOKEN.to_owned(), Some(d))
        }
    };
    let http = reqwest::Client::new();
    let call = |method: &str, path: String, body: serde_json::Value| {
        let req = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{addr}/v1/{path}"),
            )
            .header("X-Vault-Token", &token)
            .header("Content-Type", "application/json")
            .body(body.to_string());
        async move {
            let r = req.send().await.unwrap();
            let st = r.status().as_u16();
            let b: serde_json::Value = r.json_or_null().await;
            assert!(st < 300, "{st} {b}");
            b
        }
    };
    let n = std::process::id();
    let (src, dst) = (format!("zv2src{n}"), format!("zv2dst{n}"));
    for m in [&src, &dst] {
        call(
            "POST",
            format!("sys/mounts/{m}"),
            json!({"type": "kv", "options": {"version": "2"}}),
        )
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 1..=4 {
        call(
            "POST",
            format!("{src}/data/app/db"),
            json!({"data": {"password": format!("pw-{i}")}}),
        )
        .await;
    }
    call(
        "POST",
        format!("{src}/data/other"),
        json!({"data": {"x": "y"}}),
    )
    .await;
    call(
        "POST",
        format!("{src}/delete/app/db"),
        json!({"versions": [2]}),
    )
    .await;
    call(
        "PUT",
        format!("{src}/destroy/app/db"),
        json!({"versions": [3]}),
    )
    .await;

    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&addr, &token, &[&src], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(m.facts["mounts"][0]["kv"], 2);
    assert_eq!(m.facts["mounts"][0]["versions"], 5);
    assert_eq!(m.facts["mounts"][0]["deleted_or_destroyed"], 2);
    let target = RestoreTarget {
        name: Some(dst.clone()),
        ..RestoreTarget::default()
    };
    env.repo
        .restore(
            &vault(&addr, &token, &[], false),
            &m,
            &target,
            &Progress::none(),
        )
        .await
        .unwrap();
    let meta = call("GET", format!("{dst}/metadata/app/db"), json!(null)).await;
    let vs = &meta["data"]["versions"];
    assert_eq!(vs.as_object().unwrap().len(), 4, "{meta}");
    assert_eq!(vs["3"]["destroyed"], true, "{meta}");
    assert_ne!(vs["2"]["deletion_time"], "", "{meta}");
    let v4 = call("GET", format!("{dst}/data/app/db?version=4"), json!(null)).await;
    assert_eq!(v4["data"]["data"]["password"], "pw-4");
    let v1 = call("GET", format!("{dst}/data/app/db?version=1"), json!(null)).await;
    assert_eq!(v1["data"]["data"]["password"], "pw-1");
}

trait JsonOrNull {
    async fn json_or_null(self) -> serde_json::Value;
}

impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> serde_json::Value {
        let b = self.bytes().await.unwrap();
        serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null)
    }
}

#[tokio::test]
async fn token_without_sys_mounts_uses_the_ui_mounts_endpoint() {
    let d = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&d).await;
    let cfg = VaultClientConfig {
        address: d.addr.clone(),
        token: Secret::new(LIMITED_TOKEN),
        namespace: None,
    };
    let s = resolve_reference(&cfg, "vault:secret/zentoria/backup/postgresql#password")
        .await
        .unwrap();
    assert_eq!(s.expose(), "s3cr3t-value");
    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&d.addr, LIMITED_TOKEN, &["kv1", "secret"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(m.facts["mounts"][1]["kv"], 2);
    // Unknown mount with the limited token: still an error naming it.
    let e = env
        .repo
        .backup(
            &vault(&d.addr, LIMITED_TOKEN, &["nope"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
}

#[tokio::test]
async fn kv_v2_metadata_settings_restored_into_mapped_mounts() {
    let src = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&src).await;
    let settings = json!({"max_versions": 7, "cas_required": true,
                          "delete_version_after": "768h0m0s",
                          "custom_metadata": {"owner": "team-a", "ticket": "OPS-42"}});
    src.inner.lock().unwrap().settings.insert(
        ("secret".into(), "zentoria/backup/postgresql".into()),
        settings.clone(),
    );
    let env = Env::new();
    let m = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1", "secret"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    // Custom metadata stays inside the artifact, like the values.
    let text = String::from_utf8(m.to_json().unwrap()).unwrap();
    assert!(!text.contains("OPS-42"), "{text}");

    // Both mounts mapped to other names in one restore.
    let dst = Double::start(TOKEN, &[("kv1-copy", 1), ("secret-copy", 2)]).await;
    let v = vault(&dst.addr, TOKEN, &[], false)
        .with_mount_map([("kv1", "kv1-copy"), ("secret", "secret-copy")]);
    let out = env
        .repo
        .restore(&v, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert!(
        out.notes
            .iter()
            .any(|n| n.starts_with("secret-copy:") && n.contains("2 metadata setting(s)")),
        "{:?}",
        out.notes
    );
    {
        let s = dst.inner.lock().unwrap();
        let key = (
            "secret-copy".to_owned(),
            "zentoria/backup/postgresql".to_owned(),
        );
        assert_eq!(s.settings[&key], settings, "settings written back");
        assert_eq!(s.v2[&key].len(), 4, "versions replayed before cas_required");
        let plain = ("secret-copy".to_owned(), "one".to_owned());
        assert_eq!(s.settings[&plain]["cas_required"], false);
        assert_eq!(s.v1.len(), 4);
        assert!(s.v1.keys().all(|(m, _)| m == "kv1-copy"));
    }
    let report = zdr_core::Verifier::verify(&v, &m, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // A target that drops the settings fails the read-back.
    let lossy = Double::start(TOKEN, &[("secret", 2)]).await;
    lossy.inner.lock().unwrap().ignore_metadata_writes = true;
    let e = env
        .repo
        .restore(
            &vault(&lossy.addr, TOKEN, &[], false).with_mount_map([("kv1", "secret")]),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        format!("{e}").contains("secret/zentoria/backup/postgresql metadata settings"),
        "{e}"
    );
    assert!(!format!("{e:?}").contains("OPS-42"));
}

#[tokio::test]
async fn namespace_is_sent_on_every_call() {
    let src = Double::start(TOKEN, &[("kv1", 1), ("secret", 2)]).await;
    seed(&src).await;
    src.inner.lock().unwrap().namespace = Some("team-a/app".into());
    *src.snapshot.lock().unwrap() = vec![7u8; 64 * 1024];
    let with_ns = |raft: bool| {
        VaultComponent::new(
            Component::new("vault").unwrap(),
            VaultConfig {
                client: VaultClientConfig {
                    address: src.addr.clone(),
                    token: Secret::new(TOKEN),
                    namespace: Some("team-a/app".into()),
                },
                mounts: vec!["kv1".into(), "secret".into()],
                allow_plaintext: true,
                raft_snapshot: raft,
                force: false,
            },
        )
    };
    let env = Env::new();
    // KV export and import (vaultrs), raft save and restore (HTTP), all in the namespace.
    let m = env
        .repo
        .backup(&with_ns(false), "daily", &Progress::none())
        .await
        .unwrap();
    let target = RestoreTarget {
        name: None,
        ..RestoreTarget::default()
    };
    let v = with_ns(false).with_mount_map([("kv1", "secret")]);
    env.repo
        .restore(&v, &m, &target, &Progress::none())
        .await
        .unwrap();
    let raft = env
        .repo
        .backup(&with_ns(true), "daily", &Progress::none())
        .await
        .unwrap();
    env.repo
        .restore(&with_ns(true), &raft, &target, &Progress::none())
        .await
        .unwrap();
    assert_eq!(src.restored.lock().unwrap().len(), 1);
    let served = src.served.load(Ordering::SeqCst);
    {
        let s = src.inner.lock().unwrap();
        assert_eq!(s.namespaces_seen.len(), served, "every request named it");
        assert!(s.namespaces_seen.iter().all(|n| n == "team-a/app"));
        // kv1 imported into the v2 mount `secret` through the map.
        assert!(s.v2.contains_key(&("secret".to_owned(), "app/db".to_owned())));
    }
    // Without the namespace the mounts are not there.
    let e = env
        .repo
        .backup(
            &vault(&src.addr, TOKEN, &["kv1"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
