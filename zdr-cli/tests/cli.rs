//! The `zdr` binary end to end, as an operator runs it: config file, env overrides, exit
//! codes, `--json`, and the failure modes that must leave live data and the catalog alone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
    live: PathBuf,
}

impl Env {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live/config");
        std::fs::create_dir_all(live.join("nginx")).unwrap();
        std::fs::write(
            live.join("app.env"),
            "DATABASE_URL=postgres://app@db/main\n",
        )
        .unwrap();
        std::fs::write(live.join("nginx/site.conf"), "server { listen 443; }\n").unwrap();
        let config = dir.path().join("zdr.toml");
        let text = format!(
            r#"
primary = "local"
replicate_to = ["replica"]
{extra}
[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[tiers.replica]
type = "fs"
root = "{root}/tiers/replica"

[components.configs]
type = "files"
path = "{live}"
"#,
            root = dir.path().display(),
            live = live.display()
        );
        std::fs::write(&config, text).unwrap();
        Self { dir, config, live }
    }

    fn zdr(&self, args: &[&str]) -> Output {
        self.zdr_env(args, &[])
    }

    fn zdr_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zdr"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--no-progress")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn json(&self, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.zdr(&all);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code().unwrap(), v)
    }

    fn tier(&self, name: &str) -> PathBuf {
        self.dir.path().join("tiers").join(name)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn backup_list_verify_replicate_restore_round_trip() {
    let env = Env::new("");
    let (code, v) = env.json(&["backup", "configs", "--replicate"]);
    assert_eq!(code, 0, "{v}");
    let id = v["backup"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["replication"]["replications"][0]["copied"][0],
        id.as_str()
    );

    let out = env.zdr(&["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tier local:") && text.contains("tier replica:"),
        "{text}"
    );
    assert_eq!(text.matches(&id).count(), 2, "{text}");

    let (code, v) = env.json(&["verify", "--deep"]);
    assert_eq!((code, v["intact"].as_u64()), (0, Some(2)), "{v}");

    // The accident: the tree is gone. Restore in place, then the verification passes.
    std::fs::remove_dir_all(&env.live).unwrap();
    let (code, v) = env.json(&["restore", "configs"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["tier"], "local");
    assert!(v["verify"]["problems"].as_array().unwrap().is_empty());
    assert!(v["rto_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        std::fs::read_to_string(env.live.join("app.env")).unwrap(),
        "DATABASE_URL=postgres://app@db/main\n"
    );
}

#[test]
fn restore_refuses_to_clobber_without_overwrite() {
    let env = Env::new("");
    assert!(env.zdr(&["backup", "configs"]).status.success());
    std::fs::write(env.live.join("app.env"), "changed by hand\n").unwrap();
    let out = env.zdr(&["restore", "configs"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("app.env"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(env.live.join("app.env")).unwrap(),
        "changed by hand\n"
    );
    let out = env.zdr(&["restore", "configs", "--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        std::fs::read_to_string(env.live.join("app.env"))
            .unwrap()
            .starts_with("DATABASE_URL")
    );
}

#[test]
fn corrupt_primary_fails_verify_and_restore_falls_back_to_the_replica() {
    let env = Env::new("");
    assert!(
        env.zdr(&["backup", "configs", "--replicate"])
            .status
            .success()
    );
    let artifact = std::fs::read_dir(env.tier("local").join("configs/daily"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "zst"))
        .unwrap();
    let mut bytes = std::fs::read(&artifact).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x10;
    std::fs::write(&artifact, bytes).unwrap();

    let out = env.zdr(&["verify", "--tier", "local"]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("checksum mismatch")
            && text.contains(artifact.file_name().unwrap().to_str().unwrap()),
        "{text}"
    );

    // Restoring from the corrupt tier alone is refused before the target is touched.
    let target = env.dir.path().join("scratch");
    let out = env.zdr(&[
        "restore",
        "configs",
        "--tier",
        "local",
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!target.exists());
    // Without --tier, zdr warns and restores from the replica.
    let out = env.zdr(&["restore", "configs", "--to", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("trying the next tier"),
        "{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("from tier replica"));
    assert_eq!(snapshot(&target).len(), 2);
}

#[test]
fn bad_input_exits_2_and_names_what() {
    let env = Env::new("");
    let out = env.zdr(&["backup", "redis"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown component \"redis\"; the config defines configs"),
        "{}",
        stderr(&out)
    );

    let out = env.zdr(&["list", "--tier", "offsite"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown tier \"offsite\""),
        "{}",
        stderr(&out)
    );

    let out = env.zdr(&["restore", "configs", "--backup", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown backup \"yesterday\""),
        "{}",
        stderr(&out)
    );

    let out = env.zdr(&[
        "restore",
        "configs",
        "--backup",
        "before:2001-01-01 00:00:00",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no backup"), "{}", stderr(&out));

    let bad = Env::new("");
    let text = std::fs::read_to_string(&bad.config).unwrap().replace(
        "replicate_to = [\"replica\"]",
        "replicate_to = [\"onedrive\"]",
    );
    std::fs::write(&bad.config, text).unwrap();
    let out = bad.zdr(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown tier \"onedrive\""),
        "{}",
        stderr(&out)
    );

    std::fs::write(&bad.config, "primary = \"local\"\n[tiers.local\n").unwrap();
    let out = bad.zdr(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("malformed config file") && stderr(&out).contains("line 2"),
        "{}",
        stderr(&out)
    );

    let out = bad.zdr_env(&["list"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let missing = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .args(["--config", "/nonexistent/zdr.toml", "list"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/zdr.toml"));

    let unknown_type = Env::new("");
    let text = std::fs::read_to_string(&unknown_type.config)
        .unwrap()
        .replace("type = \"files\"", "type = \"mysql\"");
    std::fs::write(&unknown_type.config, text).unwrap();
    let out = unknown_type.zdr(&["list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("mysql"), "{}", stderr(&out));
}

#[test]
fn env_overrides_the_config_and_json_errors_are_structured() {
    let env = Env::new("");
    let elsewhere = env.dir.path().join("elsewhere");
    let out = env.zdr_env(
        &["backup", "configs"],
        &[("ZDR_TIERS__LOCAL__ROOT", elsewhere.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(elsewhere.join("manifests/configs").is_dir());
    assert!(!env.tier("local").join("manifests").exists());

    let out = env.zdr_env(&["--json", "list"], &[("ZDR_TIERS__LOCAL__COLOUR", "red")]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "bad_input");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );
}

#[test]
fn encrypted_backups_need_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = zdr_storage_keys();
    let key = dir.path().join("age.key");
    std::fs::write(&key, format!("{secret}\n")).unwrap();
    let (other_secret, _) = zdr_storage_keys();
    let other = dir.path().join("other.key");
    std::fs::write(&other, format!("{other_secret}\n")).unwrap();
    let env = Env::new(&format!(
        "[encryption]\nrecipients = [\"{public}\"]\nidentity_file = \"{}\"\n",
        key.display()
    ));
    let (code, v) = env.json(&["backup", "configs"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["backup"]["artifacts"][0]["key"]
            .as_str()
            .unwrap()
            .ends_with(".tar.zst.age")
    );
    let manifest = std::fs::read_to_string(env.tier("local").join(format!(
        "manifests/configs/{}.json",
        v["backup"]["id"].as_str().unwrap()
    )))
    .unwrap();
    assert!(
        !manifest.contains("AGE-SECRET-KEY"),
        "secret key in the manifest"
    );

    let target = env.dir.path().join("scratch");
    let out = env.zdr_env(
        &["restore", "configs", "--to", target.to_str().unwrap()],
        &[("ZDR_ENCRYPTION__IDENTITY_FILE", other.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("AGE-SECRET-KEY"));
    assert!(!target.exists() || snapshot(&target).is_empty());
    // verify --deep with the wrong key: the same exit code as the restore (2), not damage.
    let out = env.zdr_env(
        &["verify", "--deep"],
        &[("ZDR_ENCRYPTION__IDENTITY_FILE", other.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env.zdr(&["restore", "configs", "--to", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Encrypting needs only the recipients: a backup runs without the identity file (kept
    // offline); decrypting without it names the file.
    let missing = dir.path().join("offline/age.key");
    let offline = [("ZDR_ENCRYPTION__IDENTITY_FILE", missing.to_str().unwrap())];
    let out = env.zdr_env(&["backup", "configs"], &offline);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = env.dir.path().join("again");
    let out = env.zdr_env(
        &["restore", "configs", "--to", again.to_str().unwrap()],
        &offline,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read age identity file"),
        "{}",
        stderr(&out)
    );
}

/// A `.sha256` sidecar whose file-name part is damaged fails `sha256sum -c` (the runbook's
/// check), so it fails `zdr verify` too, naming the sidecar; so does a damaged manifest
/// sidecar, which the catalog reports as damage.
#[test]
fn a_sidecar_with_a_damaged_file_name_fails_verify_like_sha256sum() {
    let env = Env::new("");
    let (code, v) = env.json(&["backup", "configs"]);
    assert_eq!(code, 0, "{v}");
    let key = v["backup"]["artifacts"][0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let sidecar = env.tier("local").join(format!("{key}.sha256"));
    // Artifacts, sidecars and manifests on a local-disk tier are private (0600).
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [env.tier("local").join(&key), sidecar.clone()] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
    let text = std::fs::read_to_string(&sidecar).unwrap();
    let name = Path::new(&key).file_name().unwrap().to_str().unwrap();
    let damaged = format!("X{}", &name[1..]);
    assert!(text.contains(name), "{text}");
    std::fs::write(&sidecar, text.replace(name, &damaged)).unwrap();
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(sidecar.file_name().unwrap())
        .current_dir(sidecar.parent().unwrap())
        .output()
        .unwrap();
    assert!(!check.status.success(), "sha256sum -c accepted it");
    let (code, v) = env.json(&["verify"]);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains(".sha256"),
        "{v}"
    );
    std::fs::write(&sidecar, text).unwrap();
    let (code, v) = env.json(&["verify"]);
    assert_eq!(code, 0, "{v}");

    // The manifest's sidecar damaged: listed as unusable, named, and verify exits 3.
    let manifests = env.tier("local").join("manifests/configs");
    let msidecar = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".json.sha256"))
        .unwrap();
    let mtext = std::fs::read_to_string(&msidecar).unwrap();
    std::fs::write(&msidecar, mtext.replacen(".json", ".jsno", 1)).unwrap();
    let (code, v) = env.json(&["verify"]);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["failures"][0]["error"]
            .as_str()
            .unwrap()
            .contains("damaged manifest or sidecar"),
        "{v}"
    );
}

fn zdr_storage_keys() -> (String, String) {
    let out = Command::new("age-keygen").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY"))
        .unwrap()
        .to_owned();
    let public = String::from_utf8(out.stderr)
        .unwrap()
        .trim()
        .trim_start_matches("Public key: ")
        .to_owned();
    (secret, public)
}

#[test]
fn sandbox_drill_passes() {
    let out = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .args(["--no-progress", "--json", "drill", "--sandbox"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["verify"]["checked"].as_u64().unwrap() > 80);
}

/// A fresh `zdr` process against a real S3 server (SeaweedFS), with the credentials given
/// only through `ZDR_*` variables: back up to S3, replicate to disk, restore from S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_primary_with_credentials_from_env() {
    let s3 = zdr_tests::seaweed::SeaweedFs::start().await.unwrap();
    let env = Env::new("");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "primary = \"local\"\nreplicate_to = [\"replica\"]",
        &format!(
            "primary = \"minio\"\nreplicate_to = [\"local\"]\n[tiers.minio]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nroot = \"/zentoria\"",
            s3.bucket(),
            s3.endpoint()
        ),
    );
    std::fs::write(&env.config, text).unwrap();
    let creds = [
        ("ZDR_TIERS__MINIO__ACCESS_KEY_ID", s3.access_key_id()),
        (
            "ZDR_TIERS__MINIO__SECRET_ACCESS_KEY",
            s3.secret_access_key(),
        ),
    ];
    let out = env.zdr_env(&["backup", "configs", "--replicate"], &creds);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(s3.secret_access_key()));
    let target = env.dir.path().join("from-s3");
    let out = env.zdr_env(
        &[
            "restore",
            "configs",
            "--tier",
            "minio",
            "--to",
            target.to_str().unwrap(),
        ],
        &creds,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&target).len(), 2);
    // Without credentials the server refuses: a storage failure (exit 1) naming the tier.
    let out = env.zdr(&["list", "--tier", "minio"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("tier: minio"), "{}", stderr(&out));
}

/// One tier unreachable (an S3 endpoint where nothing listens) never hides the others:
/// `list` and `verify` still show the local tier, name the unreachable one, and exit 1.
#[test]
fn an_unreachable_tier_is_reported_and_the_others_still_shown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new(&format!(
        "[tiers.dead]\ntype = \"s3\"\nbucket = \"zdr-dead\"\nendpoint = \"http://127.0.0.1:{port}\"\naccess_key_id = \"x\"\nsecret_access_key = \"y\"\n"
    ));
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.zdr(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("tier dead: UNREACHABLE"), "{text}");
    assert!(
        text.contains("tier local:") && text.contains("configs"),
        "{text}"
    );
    assert!(stderr(&out).contains("tier: dead"), "{}", stderr(&out));
    let (code, v) = env.json(&["list"]);
    assert_eq!(code, 1, "{v}");
    let tiers = v["tiers"].as_array().unwrap();
    let local = tiers.iter().find(|t| t["tier"] == "local").unwrap();
    assert_eq!(local["backups"].as_array().unwrap().len(), 1, "{v}");
    let dead = tiers.iter().find(|t| t["tier"] == "dead").unwrap();
    assert_eq!(dead["error"]["kind"], "storage", "{v}");

    let (code, v) = env.json(&["verify"]);
    assert_eq!(code, 1, "no damage, one tier unreadable: {v}");
    assert_eq!(v["intact"], 1, "{v}");
    assert_eq!(v["failures"][0]["tier"], "dead", "{v}");

    // status: the same.
    let out = env.zdr(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("configs: 1 backup(s)") && text.contains("tier dead: UNREACHABLE"),
        "{text}"
    );
    let (code, v) = env.json(&["status"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["problems"][0]["tier"], "dead", "{v}");
    assert_eq!(v["components"][0]["tiers"][0]["tier"], "local", "{v}");
    assert_eq!(v["components"][0]["tiers"][0]["backups"], 1, "{v}");
}

/// 5 MiB that do not compress: more than one 2 MiB write buffer of a local-disk tier, so
/// the temporary file exists on disk before the artifact is committed.
fn add_blob(env: &Env) {
    write_blob(env, 5 << 20);
}

/// `len` pseudo-random bytes that do not compress, as `blob.bin` in the live tree.
fn write_blob(env: &Env, len: usize) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let blob: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(env.live.join("blob.bin"), blob).unwrap();
}

fn tmp_files(env: &Env) -> Vec<PathBuf> {
    match std::fs::read_dir(env.tier("local").join(".zdr-tmp")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// A backup killed just before its artifact is committed leaves a temporary file and no
/// backup; the next backup removes the leftover once it is older than the grace period
/// (kept while younger: it could be a run in progress) and says so.
#[test]
fn a_killed_backup_leaves_no_backup_and_its_temporary_file_is_swept() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new("");
    add_blob(&env);
    let out = env.zdr_env(
        &["backup", "configs"],
        &[("ZDR_FAILPOINT", "artifact-before-commit")],
    );
    assert_eq!(out.status.signal(), Some(6), "{}", stderr(&out));
    let (code, v) = env.json(&["list"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["tiers"][0]["backups"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let left = tmp_files(&env);
    assert!(!left.is_empty(), "the killed run left its temporary file");
    // Younger than the default grace (1 h): kept.
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(left.iter().all(|p| p.exists()));
    // Older than the grace: removed, and reported.
    let out = env.zdr_env(
        &["backup", "configs"],
        &[("ZDR_PIPELINE__SWEEP_GRACE_SECS", "0")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("partial write(s)"),
        "{}",
        stderr(&out)
    );
    assert!(left.iter().all(|p| !p.exists()), "{left:?}");
    let (code, v) = env.json(&["verify"]);
    assert_eq!((code, v["intact"].as_u64()), (0, Some(2)), "{v}");
}

/// Ctrl-C (SIGINT) and SIGTERM during a backup: exit 130 and 143, an error saying so, and no
/// backup listed.
#[test]
fn interrupted_backups_exit_130_and_143_and_list_nothing() {
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let env = Env::new("");
        add_blob(&env);
        let child = Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&env.config)
            .args(["--no-progress", "backup", "configs"])
            .env("ZDR_FAILPOINT", "artifact-before-commit:pause")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The run is at the failpoint once its artifact's temporary file exists (a lock's
        // temporary file, `locks/component-configs.json`, comes and goes before it).
        let started = std::time::Instant::now();
        while !tmp_files(&env).iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with("component-") && !n.starts_with("repository."))
        }) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the backup never reached the failpoint"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let st = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("interrupted by SIG{signal}")),
            "{}",
            stderr(&out)
        );
        let (c, v) = env.json(&["list"]);
        assert_eq!(c, 0, "{v}");
        assert!(
            v["tiers"][0]["backups"].as_array().unwrap().is_empty(),
            "{v}"
        );
        // The interrupted run removed its own partial write and said so.
        assert!(
            stderr(&out).contains("removed the partial write local:"),
            "{}",
            stderr(&out)
        );
        assert!(tmp_files(&env).is_empty(), "{:?}", tmp_files(&env));
    }
}

/// An S3 tier and the writes that never finish there: a multipart upload left by a killed
/// backup is kept while younger than the grace period and aborted by the next run after it
/// (reported); an interrupted (SIGINT) backup aborts its own upload before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_s3_uploads_are_aborted_by_the_interrupted_run_or_swept_by_the_next() {
    let s3 = zdr_tests::seaweed::SeaweedFs::start().await.unwrap();
    let env = Env::new("");
    let text = std::fs::read_to_string(&env.config).unwrap().replace(
        "primary = \"local\"\nreplicate_to = [\"replica\"]",
        &format!(
            "primary = \"minio\"\n[tiers.minio]\ntype = \"s3\"\nbucket = \"{}\"\nendpoint = \"{}\"\nroot = \"/zentoria\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"",
            s3.bucket(),
            s3.endpoint(),
            s3.access_key_id(),
            s3.secret_access_key()
        ),
    );
    std::fs::write(&env.config, text).unwrap();
    // 20 MiB that do not compress: parts of 8 MiB reach the server before the commit.
    write_blob(&env, 20 << 20);
    let tier = zdr::TierConfig::S3(zdr::storage::S3Config {
        bucket: s3.bucket().to_owned(),
        endpoint: Some(s3.endpoint()),
        root: Some("/zentoria".into()),
        access_key_id: Some(s3.access_key_id().to_owned()),
        secret_access_key: Some(s3.secret_access_key().into()),
        ..Default::default()
    });
    let zdr::TierConfig::S3(cfg) = &tier else {
        unreachable!()
    };
    let uploads = || async {
        zdr::storage::unfinished_uploads("minio", cfg)
            .await
            .unwrap()
    };
    assert!(uploads().await.is_empty());

    // Killed just before its artifact's commit: the upload stays open on the server.
    let out = env.zdr_env(
        &["backup", "configs"],
        &[("ZDR_FAILPOINT", "artifact-before-commit")],
    );
    assert!(!out.status.success());
    let left = uploads().await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].key.starts_with("zentoria/configs/"), "{left:?}");
    // A run within the grace period keeps it (it could belong to a run in progress).
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(uploads().await, left);
    // Past the grace period the next run aborts it and says so.
    let out = env.zdr_env(
        &["backup", "configs"],
        &[("ZDR_PIPELINE__SWEEP_GRACE_SECS", "0")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed 1 partial write(s)"),
        "{}",
        stderr(&out)
    );
    assert!(uploads().await.is_empty());

    // Interrupted while its upload is open: the run aborts the upload itself.
    let child = Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(&env.config)
        .args(["--no-progress", "backup", "configs"])
        .env("ZDR_FAILPOINT", "artifact-before-commit:pause")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while uploads().await.is_empty() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the backup never opened its upload"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("removed the partial write minio:configs/"),
        "{}",
        stderr(&out)
    );
    assert!(uploads().await.is_empty());
    let (code, v) = env.json(&["verify"]);
    assert_eq!((code, v["intact"].as_u64()), (0, Some(2)), "{v}");
}

/// Unmounts a tmpfs when dropped.
struct Mounted(PathBuf);

/// A tmpfs of `size` mounted at `dir` (created), unmounted when the guard drops; `None`
/// (the test skipped) where mounting needs a root this run does not have.
fn small_tier(dir: &Path, size: &str) -> Option<Mounted> {
    std::fs::create_dir_all(dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        // A small tmpfs needs root (CI runs as root).
        eprintln!("cannot mount a tmpfs here: skipping");
        return None;
    }
    Some(Mounted(dir.to_path_buf()))
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The primary tier's disk fills up during a backup: a storage error (exit 1), no backup
/// listed, and the failed run removes its partial temporary file, so the next backup (once
/// there is room) succeeds at once.
#[test]
fn a_full_disk_fails_the_backup_cleanly_and_leaves_no_temporary_file() {
    let env = Env::new("");
    let tier = env.tier("local");
    let Some(_guard) = small_tier(&tier, "3m") else {
        return;
    };
    add_blob(&env);
    let out = env.zdr(&["backup", "configs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("tier: local"), "{}", stderr(&out));
    assert!(tmp_files(&env).is_empty(), "{:?}", tmp_files(&env));
    let (code, v) = env.json(&["list", "--tier", "local"]);
    assert_eq!(code, 0, "{v}");
    assert!(
        v["tiers"][0]["backups"].as_array().unwrap().is_empty(),
        "{v}"
    );
    std::fs::remove_file(env.live.join("blob.bin")).unwrap();
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A tier whose disk cannot hold another backup the size of the last one: the backup is
/// refused before anything is written (exit 1, the tier and sizes named), and runs again
/// once there is room.
#[test]
fn a_backup_that_cannot_fit_is_refused_before_writing() {
    let env = Env::new("");
    let tier = env.tier("local");
    let Some(_guard) = small_tier(&tier, "12m") else {
        return;
    };
    add_blob(&env);
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Leave about 3 MiB: less than the last backup (5 MiB) needs.
    let filler = tier.join("filler");
    std::fs::write(&filler, vec![1u8; 4 << 20]).unwrap();
    let before = snapshot(&tier);
    let out = env.zdr(&["backup", "configs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not enough free space on tier local")
            && stderr(&out).contains("took 5.0 MiB"),
        "{}",
        stderr(&out)
    );
    assert_eq!(snapshot(&tier), before, "nothing written");
    let (code, v) = env.json(&["list", "--tier", "local"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["tiers"][0]["backups"].as_array().unwrap().len(), 1, "{v}");
    std::fs::remove_file(&filler).unwrap();
    let out = env.zdr(&["backup", "configs"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A config-files restore killed while it puts files in place (before the first move, after
/// the first replaced file was kept aside — the live file then missing —, after the first
/// file went in): the next restore into the same directory, or the next backup of it,
/// completes the interrupted restore first and says so; nothing is left beside the target.
#[test]
fn a_files_restore_killed_midway_is_completed_by_the_next_run() {
    for (failpoint, next) in [
        ("files-restore-before-moves", "restore"),
        ("files-restore-after-aside", "restore"),
        ("files-restore-after-first-move", "backup"),
    ] {
        let env = Env::new("");
        let out = env.zdr(&["backup", "configs"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let backed_up = snapshot(&env.live);
        std::fs::write(env.live.join("app.env"), "changed\n").unwrap();
        std::fs::write(env.live.join("nginx/site.conf"), "changed too\n").unwrap();
        let live = env.live.to_str().unwrap().to_owned();
        let restore = ["restore", "configs", "--to", live.as_str(), "--overwrite"];
        let out = env.zdr_env(&restore, &[("ZDR_FAILPOINT", failpoint)]);
        assert!(!out.status.success(), "{failpoint}: {}", stderr(&out));
        let beside = |prefix: &str| -> Vec<String> {
            std::fs::read_dir(env.live.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        };
        assert!(
            beside(".zdr-restore-")
                .iter()
                .any(|n| n.ends_with(".journal")),
            "{failpoint}: {:?}",
            beside(".zdr-restore-")
        );
        let out = if next == "restore" {
            env.zdr(&restore)
        } else {
            env.zdr(&["backup", "configs"])
        };
        assert!(out.status.success(), "{failpoint}: {}", stderr(&out));
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert!(
            said.contains("completed a restore of backup"),
            "{failpoint}: {said}"
        );
        assert_eq!(snapshot(&env.live), backed_up, "{failpoint}");
        assert!(
            beside(".zdr-restore-").is_empty(),
            "{failpoint}: {:?}",
            beside(".zdr-restore-")
        );
        // The replaced versions are kept beside the target.
        let kept = beside(".zdr-replaced-");
        assert_eq!(kept.len(), 1, "{failpoint}: {kept:?}");
        let app = env.live.parent().unwrap().join(&kept[0]).join("app.env");
        assert_eq!(std::fs::read_to_string(app).unwrap(), "changed\n");
    }
}

#[test]
fn recover_container_refuses_before_touching_anything() {
    let env = Env::new(
        "[components.db]\ntype = \"postgres\"\ndatabase = \"app\"\nrunner = \"docker\"\n\
         container = \"zdrt-cli-no-such-container-4f1e\"\n",
    );
    // A component outside a container.
    let out = env.zdr(&["recover", "container", "configs", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("runner = \"docker\""),
        "{}",
        stderr(&out)
    );
    // An unknown component.
    let out = env.zdr(&["recover", "container", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown component \"ghost\""),
        "{}",
        stderr(&out)
    );
    // No backup to recover the container with: named, nothing written to the tier.
    let files = |p: &Path| if p.exists() { snapshot(p) } else { Vec::new() };
    let before = files(&env.tier("local"));
    let (code, v) = env.json(&["recover", "container", "db"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["error"]["kind"], "not_found", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no usable backup of db"),
        "{v}"
    );
    assert_eq!(files(&env.tier("local")), before);
    // A container drill needs its component.
    let out = env.zdr(&["drill", "--scenario", "container"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs the component"),
        "{}",
        stderr(&out)
    );
    // A project drill with nothing backed up: refused before anything is made.
    let out = env.zdr(&["drill", "--scenario", "project"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no usable backup of db"),
        "{}",
        stderr(&out)
    );
    // The full-system scenario: an unknown tier, a malformed time, a tier without backups.
    let out = env.zdr(&["recover", "system", "--from", "ghost"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown tier \"ghost\""),
        "{}",
        stderr(&out)
    );
    let out = env.zdr(&[
        "recover",
        "system",
        "--from",
        "replica",
        "--at",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("yesterday"), "{}", stderr(&out));
    let out = env.zdr(&["recover", "system", "--from", "replica"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no usable backup of db on tier replica"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files(&env.tier("local")), before);
}

#[test]
fn init_writes_a_config_from_a_compose_file_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("zentoria");
    std::fs::create_dir_all(stack.join("config/nginx")).unwrap();
    std::fs::write(
        stack.join("config/nginx/site.conf"),
        "server { listen 80; }\n",
    )
    .unwrap();
    let compose = stack.join("docker-compose.yml");
    std::fs::write(
        &compose,
        "services:\n  db:\n    image: postgres:15\n    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n      POSTGRES_DB: main\n    ports: ['127.0.0.1:15432:5432']\n  \
         web:\n    image: nginx\n    depends_on: [db]\n    volumes: ['./config/nginx:/etc/nginx/conf.d:ro']\n",
    )
    .unwrap();
    let config = dir.path().join("zdr.toml");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "init",
        "--compose",
        compose.to_str().unwrap(),
        "--backup-root",
        dir.path().join("backups").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("ZDR_COMPONENTS__DB__PASSWORD   (${DB_PASSWORD})"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("project = \"zentoria\""), "{text}");
    assert!(
        text.contains("service = \"db\"\ndependents = [\"web\"]"),
        "{text}"
    );
    assert!(
        text.contains("[components.files_web_etc_nginx_conf_d]"),
        "{text}"
    );
    // The written config is one zdr reads: its files component backs up.
    let out = run(&["backup", "files_web_etc_nginx_conf_d"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Never over an existing file; a file that is not YAML is named with its line.
    let out = run(&["init", "--compose", compose.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exists: not overwriting it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    std::fs::write(&compose, "services:\n  db: [\n").unwrap();
    let out = run(&["init", "--compose", compose.to_str().unwrap(), "--stdout"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("docker-compose.yml is not a compose file at line"),
        "{}",
        stderr(&out)
    );
}

/// Files under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .into_iter()
        .map(|(p, _)| {
            p.strip_prefix(&dir.display().to_string())
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn backup_id(env: &Env) -> String {
    let (code, v) = env.json(&["backup", "configs"]);
    assert_eq!(code, 0, "{v}");
    v["backup"]["id"].as_str().unwrap().to_owned()
}

fn decisions(v: &Value, tier: &str) -> Vec<(String, String, String)> {
    let t = v["prune"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == tier)
        .unwrap_or_else(|| panic!("no tier {tier}: {v}"));
    t["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["action"].as_str().unwrap().to_owned(),
                b["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
        .collect()
}

#[test]
fn prune_deletes_what_no_rule_keeps_and_keeps_what_replicas_still_need() {
    let env = Env::new("[retention]\nkeep_last = 1\n[retention.tiers.replica]\nkeep_last = 3\n");
    let b1 = backup_id(&env);
    let (code, v) = env.json(&["replicate"]);
    assert_eq!(code, 0, "{v}");
    let b2 = backup_id(&env);
    let b3 = backup_id(&env);
    let b4 = backup_id(&env);
    let local = env.tier("local");
    let before = snapshot(&env.dir.path().join("tiers"));

    // A dry run decides and says why, and changes nothing.
    let (code, v) = env.json(&["prune", "--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(snapshot(&env.dir.path().join("tiers")), before);
    let d = decisions(&v, "local");
    assert_eq!(d.len(), 4, "{v}");
    let by_id = |id: &str| d.iter().find(|(i, _, _)| i == id).unwrap().clone();
    assert_eq!(by_id(&b4).1, "keep");
    assert!(by_id(&b4).2.contains("keep_last (1 of 1)"), "{v}");
    assert!(by_id(&b4).2.contains("newest"), "{v}");
    // b2 and b3 are not on the replica yet, which would keep them (keep_last = 3 there).
    for b in [&b2, &b3] {
        assert_eq!(by_id(b).1, "keep", "{v}");
        assert!(
            by_id(b).2.contains("not yet replicated to tier replica"),
            "{v}"
        );
    }
    // b1 reached the replica: no rule of the local tier keeps it.
    assert_eq!(
        by_id(&b1),
        (b1.clone(), "would_delete".into(), String::new())
    );
    let d = decisions(&v, "replica");
    assert_eq!(
        d,
        vec![(
            b1.clone(),
            "keep".into(),
            "keep_last (1 of 3); newest physical backup".into()
        )]
    );
    let text = String::from_utf8_lossy(&env.zdr(&["prune", "--dry-run"]).stdout).into_owned();
    assert!(
        text.contains("would delete") && text.contains(&b1),
        "{text}"
    );

    // The prune itself: b1's manifest, artifact and sidecars leave the local tier only.
    let (code, v) = env.json(&["prune"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(by_id(&b1).0, b1);
    let left = files_under(&local);
    assert!(!left.iter().any(|f| f.contains(&b1)), "{left:?}");
    for b in [&b2, &b3, &b4] {
        assert!(
            left.iter()
                .any(|f| f.contains(b.as_str()) && f.contains("manifests/")),
            "{left:?}"
        );
    }
    assert!(
        files_under(&env.tier("replica"))
            .iter()
            .any(|f| f.contains(&b1))
    );
    let (code, v) = env.json(&["verify"]);
    assert_eq!((code, v["intact"].as_u64()), (0, Some(4)), "{v}");
    // Once replicated, the local tier keeps only what its rule keeps.
    assert_eq!(env.json(&["replicate"]).0, 0);
    let (code, v) = env.json(&["prune"]);
    assert_eq!(code, 0, "{v}");
    let d = decisions(&v, "local");
    let deleted: Vec<_> = d
        .iter()
        .filter(|x| x.1 == "deleted")
        .map(|x| x.0.clone())
        .collect();
    assert_eq!(deleted, vec![b3.clone(), b2.clone()], "{v}");
    // The replica keeps three: b4, b3, b2; b1 goes there.
    let d = decisions(&v, "replica");
    let deleted: Vec<_> = d
        .iter()
        .filter(|x| x.1 == "deleted")
        .map(|x| x.0.clone())
        .collect();
    assert_eq!(deleted, vec![b1.clone()], "{v}");
    // The restore still works from what is left.
    std::fs::remove_dir_all(&env.live).unwrap();
    let (code, v) = env.json(&["restore", "configs"]);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn prune_keeps_the_newest_backup_that_verifies_and_removes_old_orphans() {
    let env = Env::new("[retention]\nkeep_last = 1\n");
    let b1 = backup_id(&env);
    let b2 = backup_id(&env);
    let b3 = backup_id(&env);
    assert_eq!(env.json(&["replicate"]).0, 0);
    let local = env.tier("local");
    // The newest backup's artifact is damaged on the local tier.
    let artifact = files_under(&local)
        .into_iter()
        .find(|f| f.contains(&b3) && !f.contains("manifests") && !f.ends_with(".sha256"))
        .unwrap();
    let path = local.join(artifact.trim_start_matches('/'));
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let (code, v) = env.json(&["prune"]);
    assert_eq!(code, 1, "a damaged backup is a problem to report: {v}");
    let d = decisions(&v, "local");
    let get = |id: &str| d.iter().find(|(i, _, _)| i == id).unwrap().clone();
    assert_eq!(get(&b3).1, "keep");
    assert!(get(&b3).2.contains("fails verification"), "{v}");
    assert_eq!(get(&b2).1, "keep");
    assert!(
        get(&b2).2.contains("newest physical backup that verifies"),
        "{v}"
    );
    assert_eq!(get(&b1).1, "deleted", "{v}");
    let problems = v["prune"]["tiers"][0]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["backup"] == b3.as_str()), "{v}");

    // Files no manifest names: an old one goes, a fresh one (a backup still running) stays.
    let dir = local.join("configs").join(
        std::fs::read_dir(local.join("configs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let stray_old = dir.join(format!("configs_{b1}.tar.zst"));
    let stray_new = dir.join(format!("configs_{b1}.extra.zst"));
    std::fs::write(&stray_old, b"left by a killed backup").unwrap();
    std::fs::write(&stray_new, b"being written").unwrap();
    let st = Command::new("touch")
        .args(["-d", "3 days ago"])
        .arg(&stray_old)
        .status()
        .unwrap();
    assert!(st.success());
    let (code, v) = env.json(&["prune", "--dry-run"]);
    assert_eq!(code, 1, "{v}");
    assert!(stray_old.exists());
    let orphans = v["prune"]["tiers"][0]["orphans"].to_string();
    assert!(orphans.contains(&format!("configs_{b1}.tar.zst")), "{v}");
    let (_, v) = env.json(&["prune"]);
    assert!(!stray_old.exists(), "{v}");
    assert!(stray_new.exists(), "{v}");
}

/// Every backup the tier lists has its manifest's sidecar, its artifacts and theirs.
fn every_listed_backup_is_whole(tier: &Path) {
    let files: std::collections::BTreeSet<String> = files_under(tier).into_iter().collect();
    let manifests = tier.join("manifests/configs");
    for entry in std::fs::read_dir(&manifests).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let id = m["id"].as_str().unwrap();
        assert!(
            files.contains(&format!("/manifests/configs/{id}.json.sha256")),
            "{id}: no manifest sidecar"
        );
        for a in m["artifacts"].as_array().unwrap() {
            let key = a["key"].as_str().unwrap();
            for k in [key.to_owned(), format!("{key}.sha256")] {
                assert!(files.contains(&format!("/{k}")), "{id}: {k} is missing");
            }
        }
    }
}

/// A prune killed between the deletion of the manifests and that of their files (the
/// failpoint), and by `kill -9` at times spread over its run: every backup still listed is
/// whole and verifies; the next prune takes over the dead run's locks and finishes; the
/// files the killed runs left without a manifest go once past the orphan grace period.
#[test]
fn a_prune_killed_anywhere_never_leaves_a_manifest_without_its_files() {
    let env = Env::new("[retention]\nkeep_last = 1\n");
    let ids: Vec<String> = (0..24).map(|_| backup_id(&env)).collect();
    assert_eq!(env.json(&["replicate"]).0, 0);
    let local = env.tier("local");

    let out = env.zdr_env(
        &["prune", "--tier", "local"],
        &[("ZDR_FAILPOINT", "prune-after-manifests")],
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    every_listed_backup_is_whole(&local);
    let (code, v) = env.json(&["list", "--tier", "local"]);
    assert_eq!(code, 0, "{v}");
    let listed = v.to_string();
    assert!(listed.contains(ids.last().unwrap()), "{v}");
    assert!(!listed.contains(&ids[0]), "{v}");
    // The killed run's locks are still there, their process gone.
    assert!(local.join("locks/repository.json").exists());

    // kill -9 at spread times, each followed by the check, with new backups in between.
    for delay_ms in [5u64, 20, 60, 150, 400] {
        for _ in 0..4 {
            backup_id(&env);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_zdr"))
            .arg("--config")
            .arg(&env.config)
            .args(["--no-progress", "prune", "--tier", "local"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        every_listed_backup_is_whole(&local);
        let out = env.zdr(&["verify", "--tier", "local"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "after {delay_ms} ms: {}",
            stderr(&out)
        );
    }

    // The next prune takes the dead runs' locks over and finishes (the backups made in
    // between replicated first, as the replica tier keeps them).
    assert_eq!(env.json(&["replicate"]).0, 0);
    let out = env.zdr(&["prune", "--tier", "local"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!local.join("locks/repository.json").exists());
    assert!(!local.join("locks/component-configs.json").exists());
    let (_, v) = env.json(&["list", "--tier", "local"]);
    assert_eq!(v["tiers"][0]["backups"].as_array().unwrap().len(), 1);
    // What the killed runs left without a manifest goes once past the grace period.
    let leftovers: Vec<String> = files_under(&local.join("configs"));
    assert!(
        leftovers.len() > 2,
        "the failpoint run left orphans: {leftovers:?}"
    );
    for f in &leftovers {
        let st = Command::new("touch")
            .args(["-d", "3 days ago"])
            .arg(local.join("configs").join(f.trim_start_matches('/')))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let (code, v) = env.json(&["prune", "--tier", "local"]);
    assert_eq!(code, 0, "{v}");
    every_listed_backup_is_whole(&local);
    let kept = v["prune"]["tiers"][0]["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let left = files_under(&local.join("configs"));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|f| f.contains(&kept)), "{left:?}");
    assert_eq!(
        env.zdr(&["verify", "--tier", "local"]).status.code(),
        Some(0)
    );
}

#[test]
fn prune_refuses_bad_retention_rules_and_names_them() {
    for (extra, names) in [
        ("[retention]\nkeep_daily = 0\n", "keep_daily"),
        (
            "[retention]\nkeep_last = 2\n[retention.tiers.offsite]\nkeep_last = 1\n",
            "offsite",
        ),
        ("[retention]\nkeep_wal_for = \"a week\"\n", "keep_wal_for"),
        ("[retention]\nkeep_dayly = 3\n", "keep_dayly"),
    ] {
        let env = Env::new(extra);
        backup_id_or_skip(&env);
        std::fs::create_dir_all(env.dir.path().join("tiers")).unwrap();
        let before = snapshot(&env.dir.path().join("tiers"));
        let out = env.zdr(&["prune"]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{extra}: {}", stderr(&out));
        assert_eq!(snapshot(&env.dir.path().join("tiers")), before);
    }
    let env = Env::new("");
    let out = env.zdr(&["prune", "--component", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nope"));
}

/// A backup when the config can be read at all (a bad config fails every command).
fn backup_id_or_skip(env: &Env) {
    let _ = env.zdr(&["backup", "configs"]);
}

#[test]
fn status_exits_4_when_a_recovery_point_objective_is_missed() {
    let env = Env::new("[rpo]\nconfigs = \"1h\"\n");
    // No backup at all: the objective is missed.
    let (code, v) = env.json(&["status"]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["rpo_breached"][0], "configs", "{v}");
    assert_eq!(v["components"][0]["rpo_target_seconds"], 3600, "{v}");
    let out = env.zdr(&["status"]);
    assert_eq!(out.status.code(), Some(4));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("RPO 60m BREACHED"), "{text}");
    // A fresh backup meets it.
    backup_id(&env);
    let (code, v) = env.json(&["status"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["components"][0]["rpo_breached"], false, "{v}");
    assert!(
        v["components"][0]["recovery_point_age_seconds"]
            .as_i64()
            .unwrap()
            < 3600
    );
    // Config files have no objective by default; "off" switches one off.
    let env = Env::new("[rpo]\nconfigs = \"off\"\n");
    assert_eq!(env.json(&["status"]).0, 0);
    let env = Env::new("");
    assert_eq!(env.json(&["status"]).0, 0);
    // A malformed objective or an unknown component: exit 2, naming it.
    for (extra, names) in [
        ("[rpo]\nconfigs = \"hourly\"\n", "rpo.configs"),
        ("[rpo]\nnope = \"1h\"\n", "nope"),
    ] {
        let env = Env::new(extra);
        let out = env.zdr(&["status"]);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", stderr(&out));
        assert!(stderr(&out).contains(names), "{extra}: {}", stderr(&out));
    }
}

/// The sample lines of a Prometheus text file: `(name, labels, value)`, every sample preceded
/// by its family's `# TYPE` line.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    let mut typed = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n.to_owned(), l.trim_end_matches('}').to_owned()),
            None => (series.to_owned(), String::new()),
        };
        assert!(typed.contains(&name), "{name} has no TYPE line");
        out.push((name, labels, value.parse::<f64>().unwrap()));
    }
    out
}

#[test]
fn status_writes_prometheus_metrics_for_the_textfile_collector() {
    let env = Env::new("[rpo]\nconfigs = \"1h\"\n");
    let prom = env.dir.path().join("zdr.prom");
    // No backup yet: the objective is missed, and the file says so (exit 4 all the same).
    let out = env.zdr(&["status", "--textfile", prom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = samples(&std::fs::read_to_string(&prom).unwrap());
    let get = |s: &[(String, String, f64)], name: &str| {
        s.iter()
            .find(|(n, l, _)| n == name && (l.is_empty() || l == "component=\"configs\""))
            .map(|(_, _, v)| *v)
    };
    assert_eq!(get(&s, "zdr_rpo_breached"), Some(1.0));
    assert_eq!(get(&s, "zdr_rpo_target_seconds"), Some(3600.0));
    assert_eq!(get(&s, "zdr_backups"), Some(0.0));
    assert_eq!(get(&s, "zdr_backup_age_seconds"), None);
    // After a backup: its size, age and time; no longer breached.
    backup_id(&env);
    let out = env.zdr(&["status", "--textfile", prom.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = samples(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(get(&s, "zdr_rpo_breached"), Some(0.0));
    assert_eq!(get(&s, "zdr_backups"), Some(1.0));
    assert!(get(&s, "zdr_backup_size_bytes").unwrap() > 0.0);
    assert!(get(&s, "zdr_backup_age_seconds").unwrap() < 3600.0);
    assert!(get(&s, "zdr_backup_last_finished_timestamp_seconds").unwrap() > 1.7e9);
    assert_eq!(get(&s, "zdr_status_problems"), Some(0.0));
    // No temporary file is left beside it; a directory that does not exist is an error.
    let names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let out = env.zdr(&["status", "--textfile", "/nonexistent/dir/zdr.prom"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("/nonexistent/dir/zdr.prom"),
        "{}",
        stderr(&out)
    );
}

fn write_lock(env: &Env, heartbeat: &str) {
    write_named_lock(env, "component-configs", "backup configs", heartbeat);
}

fn write_named_lock(env: &Env, name: &str, command: &str, heartbeat: &str) {
    let dir = env.tier("local").join("locks");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        format!(
            r#"{{"host": "other-host", "pid": 77, "command": "{command}", "started_at": "{heartbeat}", "heartbeat_at": "{heartbeat}", "token": "theirs"}}"#
        ),
    )
    .unwrap();
}

#[test]
fn a_component_lock_held_elsewhere_stops_backup_and_prune_until_it_is_stale_or_removed() {
    let env = Env::new("[retention]\nkeep_last = 1\n[locks]\nwait = \"1s\"\n");
    let b1 = backup_id(&env);
    let now = chrono_like_now();
    write_lock(&env, &now);
    // A backup waits `[locks] wait`, then refuses, naming the holder and the wait; nothing
    // is written.
    let before = files_under(&env.tier("local"));
    let out = env.zdr(&["backup", "configs"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("other-host")
            && stderr(&out).contains("77")
            && stderr(&out).contains("waited")
            && stderr(&out).contains("1 s"),
        "{}",
        stderr(&out)
    );
    assert_eq!(files_under(&env.tier("local")), before);
    // A prune that may not wait leaves the component alone and says why (exit 1).
    let (code, v) = env.json(&["prune", "--wait", "0s"]);
    assert_eq!(code, 1, "{v}");
    assert!(v.to_string().contains("other-host"), "{v}");
    assert_eq!(files_under(&env.tier("local")), before);
    let out = env.zdr(&["prune", "--wait", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("soon"), "{}", stderr(&out));
    // `zdr unlock` removes it, naming who held it; the backup then runs and removes its own.
    let out = env.zdr(&["unlock", "configs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("other-host"));
    let b2 = backup_id(&env);
    assert_ne!(b1, b2);
    assert!(
        !env.tier("local")
            .join("locks/component-configs.json")
            .exists()
    );
    // A lock whose heartbeat is hours old is taken over, with a warning naming its owner.
    write_lock(&env, "2020-01-01T00:00:00Z");
    let out = env.zdr(&["backup", "configs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stale lock") && stderr(&out).contains("other-host"),
        "{}",
        stderr(&out)
    );
    let out = env.zdr(&["unlock", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_prune_elsewhere_holds_the_repository_lock_until_it_is_removed() {
    let env = Env::new("[retention]\nkeep_last = 1\n");
    backup_id(&env);
    backup_id(&env);
    let out = env.zdr(&["replicate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    write_named_lock(&env, "repository", "prune", &chrono_like_now());
    let before = files_under(&env.tier("local"));
    let (code, v) = env.json(&["prune", "--wait", "0s"]);
    assert_eq!(code, 1, "{v}");
    let text = v.to_string();
    assert!(
        text.contains("lock repository is held by prune on other-host"),
        "{v}"
    );
    assert_eq!(files_under(&env.tier("local")), before);
    // A dry run takes no lock and still decides.
    let (code, v) = env.json(&["prune", "--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        decisions(&v, "local")
            .iter()
            .filter(|d| d.1 == "would_delete")
            .count(),
        1,
        "{v}"
    );
    let out = env.zdr(&["unlock", "--repository"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("repository lock of tier local") && said.contains("other-host"),
        "{said}"
    );
    let out = env.zdr(&["unlock", "--repository"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("had no repository lock"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, v) = env.json(&["prune"]);
    assert_eq!(code, 0, "{v}");
    assert!(!env.tier("local").join("locks/repository.json").exists());
    // Neither a component nor --repository: a usage error.
    let out = env.zdr(&["unlock"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_lock_settings_are_refused_naming_the_key() {
    for (text, key) in [
        ("[locks]\nwait = \"soon\"\n", "locks.wait"),
        ("[locks]\nstale = \"2s\"\n", "locks.stale"),
        ("[locks]\nheartbeat = \"1m\"\n", "heartbeat"),
    ] {
        let env = Env::new(text);
        let out = env.zdr(&["list"]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{text}: {}", stderr(&out));
    }
}

/// Now in RFC 3339 (UTC), from `date`.
fn chrono_like_now() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
