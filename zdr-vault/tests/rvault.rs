//! zdr-vault against a REAL Vault-API server: `rvault` (rusty_vault 0.2.1, started here from
//! PATH; run `scripts/install-test-deps.sh` if it is missing), or a live Vault when
//! `ZDR_TEST_VAULT_ADDR` and `ZDR_TEST_VAULT_TOKEN` are set. Init/unseal, tokens, KV v1
//! export/import/verify, wrong token, unknown mount, plaintext export refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use zdr_core::{Component, ErrorKind, Progress, RestoreTarget, Verifier};
use zdr_storage::{PipelineOptions, Repository, TierConfig, open_tier};
use zdr_vault::{Secret, VaultClientConfig, VaultComponent, VaultConfig, resolve_reference};

struct Server {
    addr: String,
    token: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn call(
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut r = c
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{addr}/v1/{path}"),
        )
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        r = r
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn server() -> Server {
    if let (Ok(addr), Ok(token)) = (
        std::env::var("ZDR_TEST_VAULT_ADDR"),
        std::env::var("ZDR_TEST_VAULT_TOKEN"),
    ) {
        return Server {
            addr,
            token,
            child: None,
            _dir: None,
        };
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("config.hcl");
    std::fs::write(
        &cfg,
        format!(
            "storage \"file\" {{\n  path = \"{}\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\nlog_level = \"warn\"\npid_file = \"{}\"\n",
            dir.path().join("data").display(),
            dir.path().join("rvault.pid").display()
        ),
    )
    .unwrap();
    let child = Command::new("rvault")
        .arg("server")
        .arg(format!("--config={}", cfg.display()))
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start rvault ({e}): run scripts/install-test-deps.sh"));
    let addr = format!("http://127.0.0.1:{port}");
    let mut s = Server {
        addr: addr.clone(),
        token: String::new(),
        child: Some(child),
        _dir: Some(dir),
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, init) = call(
        &addr,
        "",
        "PUT",
        "sys/init",
        Some(json!({"secret_shares": 1, "secret_threshold": 1})),
    )
    .await;
    assert_eq!(st, 200, "sys/init: {init}");
    let key = init["keys"][0].as_str().unwrap().to_owned();
    s.token = init["root_token"].as_str().unwrap().to_owned();
    let (st, unseal) = call(&addr, "", "PUT", "sys/unseal", Some(json!({"key": key}))).await;
    assert_eq!(st, 200, "sys/unseal: {unseal}");
    assert_eq!(unseal["sealed"], false, "{unseal}");
    s
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

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        std::process::id() as u64 * 1000 + u64::from(rand_suffix())
    )
}

fn rand_suffix() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1000) as u16
}

#[tokio::test]
async fn kv_v1_export_import_verify_on_a_real_server() {
    let s = server().await;
    let src = unique("zsrc");
    let dst = unique("zdst");
    for m in [&src, &dst] {
        let (st, b) = call(
            &s.addr,
            &s.token,
            "POST",
            &format!("sys/mounts/{m}"),
            Some(json!({"type": "kv"})),
        )
        .await;
        assert!(st == 200 || st == 204, "mount {m}: {st} {b}");
    }
    let secrets = [
        (
            "zentoria/backup/postgresql",
            json!({"password": "pg-secret-1", "user": "backup"}),
        ),
        (
            "zentoria/backup/redis",
            json!({"password": "redis-secret-2"}),
        ),
        ("top", json!({"k": "v"})),
    ];
    for (p, d) in &secrets {
        let (st, b) = call(
            &s.addr,
            &s.token,
            "POST",
            &format!("{src}/{p}"),
            Some(d.clone()),
        )
        .await;
        assert!(st == 200 || st == 204, "write {p}: {st} {b}");
    }
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier, PipelineOptions::default());

    // Plaintext export refused; wrong token and unknown mount are clear errors; no manifest.
    let e = repo
        .backup(
            &vault(&s.addr, &s.token, &[&src], false),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let e = repo
        .backup(
            &vault(&s.addr, "not-a-token", &[&src], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let e = repo
        .backup(
            &vault(&s.addr, &s.token, &["no-such-mount"], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(repo.catalog().await.unwrap().list(None).is_empty());

    let m = repo
        .backup(
            &vault(&s.addr, &s.token, &[&src], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(m.facts["mounts"][0]["paths"], 3, "{}", m.facts);
    assert_eq!(m.facts["mounts"][0]["kv"], 1);
    let text = String::from_utf8(m.to_json().unwrap()).unwrap();
    assert!(!text.contains("secret-1") && !text.contains("secret-2"));

    // Import with a wrong token: refused, nothing written.
    let target = RestoreTarget {
        name: Some(dst.clone()),
        ..RestoreTarget::default()
    };
    let e = repo
        .restore(
            &vault(&s.addr, "not-a-token", &[], false),
            &m,
            &target,
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    let (st, _) = call(&s.addr, &s.token, "GET", &format!("{dst}/top"), None).await;
    assert_eq!(st, 404);

    let comp = vault(&s.addr, &s.token, &[], false);
    let out = repo
        .restore(&comp, &m, &target, &Progress::none())
        .await
        .unwrap();
    assert_eq!(out.items, 3);
    for (p, d) in &secrets {
        let (st, b) = call(&s.addr, &s.token, "GET", &format!("{dst}/{p}"), None).await;
        assert_eq!(st, 200);
        assert_eq!(&b["data"], d);
    }
    let report = comp.verify(&m, &target).await.unwrap();
    assert!(report.is_ok() && report.checked == 3, "{report:?}");

    // The imported copy resolves as a credential reference.
    let cfg = VaultClientConfig {
        address: s.addr.clone(),
        token: Secret::new(&s.token),
        namespace: None,
    };
    let pw = resolve_reference(
        &cfg,
        &format!("vault:{dst}/zentoria/backup/postgresql#password"),
    )
    .await
    .unwrap();
    assert_eq!(pw.expose(), "pg-secret-1");
}

#[tokio::test]
async fn kv_v1_import_through_a_mount_map_on_a_real_server() {
    let s = server().await;
    let (a, b) = (unique("zmapa"), unique("zmapb"));
    let (a_copy, b_copy) = (format!("{a}c"), format!("{b}c"));
    for m in [&a, &b, &a_copy, &b_copy] {
        let (st, body) = call(
            &s.addr,
            &s.token,
            "POST",
            &format!("sys/mounts/{m}"),
            Some(json!({"type": "kv"})),
        )
        .await;
        assert!(st == 200 || st == 204, "mount {m}: {st} {body}");
    }
    for (m, p, d) in [
        (&a, "svc/db", json!({"password": "map-secret-a"})),
        (
            &a,
            "svc/cache",
            json!({"password": "map-secret-c", "port": "6379"}),
        ),
        (&b, "root", json!({"k": "v"})),
    ] {
        let (st, body) = call(&s.addr, &s.token, "POST", &format!("{m}/{p}"), Some(d)).await;
        assert!(st == 200 || st == 204, "write {m}/{p}: {st} {body}");
    }
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_path_buf(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier, PipelineOptions::default());
    let m = repo
        .backup(
            &vault(&s.addr, &s.token, &[&a, &b], true),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    // Two mounts, each into its own copy: RestoreTarget.name cannot do that, the map can.
    let v = vault(&s.addr, &s.token, &[], false)
        .with_mount_map([(a.as_str(), a_copy.as_str()), (b.as_str(), b_copy.as_str())]);
    let out = repo
        .restore(&v, &m, &RestoreTarget::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(out.items, 3, "{out:?}");
    assert!(
        out.target.contains(&a_copy) && out.target.contains(&b_copy),
        "{}",
        out.target
    );
    let (st, got) = call(
        &s.addr,
        &s.token,
        "GET",
        &format!("{a_copy}/svc/cache"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["data"]["password"], "map-secret-c");
    assert_eq!(got["data"]["port"], "6379");
    let (st, got) = call(&s.addr, &s.token, "GET", &format!("{b_copy}/root"), None).await;
    assert_eq!(st, 200, "{got}");
    assert_eq!(got["data"]["k"], "v");
    let report = v.verify(&m, &RestoreTarget::default()).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.checked, 3);
    // A map to a mount that does not exist: NotFound, naming it.
    let missing = format!("{a}missing");
    let e = repo
        .restore(
            &vault(&s.addr, &s.token, &[], false).with_mount_map([(a.as_str(), missing.as_str())]),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(format!("{e}").contains(&missing), "{e}");
}
