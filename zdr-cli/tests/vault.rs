//! `zdr` with a `vault` component against a real `rvault` server (rusty_vault 0.2.1, from
//! PATH: run scripts/install-test-deps.sh if it is missing): `backup vault --logical`
//! refused without encryption, accepted with `--allow-plaintext`, `restore vault --logical`
//! brings a deleted secret back, `verify vault`; the token never appears in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

struct Rvault {
    child: Child,
    addr: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Drop for Rvault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(addr: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut c = Command::new("curl");
    c.args(["-s", "-X", method, "-H"])
        .arg(format!("X-Vault-Token: {token}"))
        .arg(format!("{addr}/v1/{path}"));
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "-d", &b.to_string()]);
    }
    let out = c.output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn start() -> Rvault {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("rvault.hcl");
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
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The port opens before the server answers: retry init until it does.
    let mut init = Value::Null;
    for _ in 0..100 {
        init = curl(
            &addr,
            "",
            "PUT",
            "sys/init",
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        );
        if init["keys"][0].is_string() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = init["keys"][0].as_str().unwrap().to_owned();
    let token = init["root_token"].as_str().unwrap().to_owned();
    let unseal = curl(&addr, "", "PUT", "sys/unseal", Some(json!({"key": key})));
    assert_eq!(unseal["sealed"], false, "{unseal}");
    Rvault {
        child,
        addr,
        token,
        dir,
    }
}

impl Rvault {
    fn zdr(&self, args: &[&str]) -> (i32, Value, String) {
        self.zdr_with(args, "")
    }

    fn zdr_with(&self, args: &[&str], extra: &str) -> (i32, Value, String) {
        let config = self.dir.path().join("zdr.toml");
        std::fs::write(
            &config,
            format!(
                "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}\"\n[components.vault]\ntype = \"vault\"\naddress = \"{}\"\nmounts = [\"zdrtest\"]\n{extra}",
                self.dir.path().join("tier").display(),
                self.addr
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdr"));
        cmd.arg("--config")
            .arg(&config)
            .args(["--no-progress", "--json"])
            .args(args)
            .env("ZDR_COMPONENTS__VAULT__TOKEN", &self.token);
        if extra.contains("[vault]") {
            cmd.env("ZDR_VAULT__TOKEN", &self.token);
        }
        let out: Output = cmd.output().unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(&self.token), "token leaked: {all}");
        assert!(!all.contains("cli-vault-pw"), "secret leaked: {all}");
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), v, all)
    }
}

#[test]
fn vault_logical_backup_restore_verify() {
    let v = start();
    curl(
        &v.addr,
        &v.token,
        "POST",
        "sys/mounts/zdrtest",
        Some(json!({"type": "kv"})),
    );
    curl(
        &v.addr,
        &v.token,
        "POST",
        "zdrtest/zentoria/backup/postgresql",
        Some(json!({"password": "cli-vault-pw"})),
    );

    let (code, _, all) = v.zdr(&["backup", "vault", "--logical"]);
    assert_ne!(code, 0, "{all}");
    assert!(all.contains("unencrypted"), "{all}");

    let (code, out, all) = v.zdr(&["backup", "vault", "--logical", "--allow-plaintext"]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(out["backup"]["kind"], "export", "{out}");

    curl(
        &v.addr,
        &v.token,
        "DELETE",
        "zdrtest/zentoria/backup/postgresql",
        None,
    );
    let (code, _, all) = v.zdr(&["restore", "vault", "--logical"]);
    assert_eq!(code, 0, "{all}");
    let back = curl(
        &v.addr,
        &v.token,
        "GET",
        "zdrtest/zentoria/backup/postgresql",
        None,
    );
    assert_eq!(back["data"]["password"], "cli-vault-pw");

    // Into another mount with --mount-map.
    curl(
        &v.addr,
        &v.token,
        "POST",
        "sys/mounts/zdrcopy",
        Some(json!({"type": "kv"})),
    );
    let (code, _, all) = v.zdr(&[
        "restore",
        "vault",
        "--logical",
        "--mount-map",
        "zdrtest=zdrcopy",
    ]);
    assert_eq!(code, 0, "{all}");
    let copy = curl(
        &v.addr,
        &v.token,
        "GET",
        "zdrcopy/zentoria/backup/postgresql",
        None,
    );
    assert_eq!(copy["data"]["password"], "cli-vault-pw");
    // A malformed map and a map to a mount that does not exist: exit 2.
    let (code, _, all) = v.zdr(&["restore", "vault", "--logical", "--mount-map", "zdrtest"]);
    assert_eq!(code, 2, "{all}");
    let (code, _, all) = v.zdr(&[
        "restore",
        "vault",
        "--logical",
        "--mount-map",
        "zdrtest=nowhere",
    ]);
    assert_eq!(code, 2, "{all}");

    let (code, _, all) = v.zdr(&["verify", "vault"]);
    assert_eq!(code, 0, "{all}");
    // A drill would write into the live Vault: refused.
    let (code, _, all) = v.zdr(&["drill", "vault"]);
    assert_ne!(code, 0, "{all}");
}

#[test]
fn postgres_password_from_a_vault_reference() {
    let v = start();
    curl(
        &v.addr,
        &v.token,
        "POST",
        "sys/mounts/zdrtest",
        Some(json!({"type": "kv"})),
    );
    curl(
        &v.addr,
        &v.token,
        "POST",
        "zdrtest/zentoria/backup/postgresql",
        Some(json!({"password": "cli-vault-pw"})),
    );
    let pg = |field: &str| {
        format!(
            "[vault]\naddress = \"{}\"\n[components.pg]\ntype = \"postgres\"\nhost = \"127.0.0.1\"\nport = 1\nuser = \"postgres\"\ndatabase = \"x\"\npassword = \"vault:zdrtest/zentoria/backup/postgresql#{field}\"\n",
            v.addr
        )
    };
    // Resolved: the run gets past Vault and fails on the (absent) PostgreSQL server.
    let (code, _, all) = v.zdr_with(&["backup", "pg"], &pg("password"));
    assert_ne!(code, 0, "{all}");
    assert!(!all.contains("vault"), "{all}");
    // A missing field is a clear vault error naming the path, not the value.
    let (code, _, all) = v.zdr_with(&["backup", "pg"], &pg("nope"));
    assert_ne!(code, 0, "{all}");
    assert!(all.contains("no field"), "{all}");
    assert!(all.contains("zdrtest/zentoria/backup/postgresql"), "{all}");
}
