//! `zdr` with an `s3-bucket` component against a real SeaweedFS (the stack's object
//! storage) and a local-disk tier: backup, an incremental backup, restore of an earlier
//! backup into another bucket, a refused restore over changed objects, verification of the
//! blobs, and a prune that sweeps the blobs no kept backup uses. The secret key comes from
//! the environment and never appears in any output.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use zdr_tests::seaweed::SeaweedFs;

fn zdr(config: &Path, secret: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zdr"))
        .arg("--config")
        .arg(config)
        .arg("--no-progress")
        .args(args)
        .env("ZDR_COMPONENTS__OBJECTS__SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap()
}

fn json(config: &Path, secret: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = zdr(config, secret, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains(secret) && !String::from_utf8_lossy(&out.stderr).contains(secret));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_storage_backup_restore_verify_and_prune_through_the_cli() {
    let s3 = SeaweedFs::start().await.unwrap();
    let op = s3.operator().unwrap();
    for i in 0..40 {
        op.write(&format!("docs/file-{i:02}.txt"), format!("document {i}"))
            .await
            .unwrap();
    }
    op.write_with("photos/cat.png", vec![7u8; 300_000])
        .content_type("image/png")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zdr.toml");
    std::fs::write(
        &config,
        format!(
            r#"
primary = "local"

[retention]
keep_last = 1

# One blob a pack: pruning shows blob by blob.
[pipeline]
blob_pack_size = 1

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.objects]
type = "s3-bucket"
endpoint = "{endpoint}"
buckets = ["{bucket}"]
access_key_id = "{id}"
"#,
            root = dir.path().display(),
            endpoint = s3.endpoint(),
            bucket = s3.bucket(),
            id = s3.access_key_id(),
        ),
    )
    .unwrap();
    let secret = s3.secret_access_key().to_owned();

    let (code, first) = json(&config, &secret, &["backup", "objects"]);
    assert_eq!(code, 0, "{first}");
    // A drill and a verification by restore use scratch buckets, never the live one.
    let (code, v) = json(&config, &secret, &["drill", "objects"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = json(&config, &secret, &["verify", "objects", "--restore"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        op.read("docs/file-00.txt").await.unwrap().to_vec(),
        b"document 0"
    );
    let first_id = first["backup"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();

    // One object changes, one goes: the second backup reads only the changed one.
    op.write("docs/file-00.txt", "document 0, second edition")
        .await
        .unwrap();
    op.delete("docs/file-01.txt").await.unwrap();
    let (code, second) = json(&config, &secret, &["backup", "objects"]);
    assert_eq!(code, 0, "{second}");
    let second_id = second["backup"]["id"].as_str().unwrap().to_owned();
    assert_ne!(first_id, second_id);
    let (code, listed) = json(&config, &secret, &["list", "--component", "objects"]);
    assert_eq!(code, 0, "{listed}");
    let text = listed.to_string();
    assert!(
        text.contains(&first_id) && text.contains(&second_id),
        "{text}"
    );

    // The first backup, into its own bucket: refused, the changed object is named.
    let out = zdr(
        &config,
        &secret,
        &["restore", "objects", "--backup", &first_id],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docs/file-00.txt"), "{err}");
    assert_eq!(
        op.read("docs/file-00.txt").await.unwrap().to_vec(),
        b"document 0, second edition"
    );
    // Into another bucket: the old contents and the deleted object are there.
    let (code, v) = json(
        &config,
        &secret,
        &[
            "restore",
            "objects",
            "--backup",
            &first_id,
            "--prefix",
            "docs/",
            "--to-bucket",
            "restored-docs",
        ],
    );
    assert_eq!(code, 0, "{v}");
    let restored = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket("restored-docs")
            .endpoint(&s3.endpoint())
            .region(s3.region())
            .access_key_id(s3.access_key_id())
            .secret_access_key(&secret)
            .disable_config_load()
            .disable_ec2_metadata(),
    )
    .unwrap();
    assert_eq!(
        restored.read("docs/file-00.txt").await.unwrap().to_vec(),
        b"document 0"
    );
    assert_eq!(
        restored.read("docs/file-01.txt").await.unwrap().to_vec(),
        b"document 1"
    );
    assert!(
        restored.stat("photos/cat.png").await.is_err(),
        "outside the prefix"
    );
    // With --overwrite, in place.
    let (code, v) = json(
        &config,
        &secret,
        &["restore", "objects", "--backup", &first_id, "--overwrite"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        op.read("docs/file-01.txt").await.unwrap().to_vec(),
        b"document 1"
    );

    // verify checks every blob; a damaged blob is named.
    let (code, v) = json(&config, &secret, &["verify", "objects"]);
    assert_eq!(code, 0, "{v}");
    let tier = dir.path().join("tiers/local");
    let blobs: Vec<PathBuf> = files_under(&tier.join("objects/blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert_eq!(
        blobs.len(),
        42,
        "41 distinct contents, and the new edition: {blobs:?}"
    );

    // Prune keeps the newest backup only; the blobs only the first backup used (file-00's
    // first edition, file-01) go once they are older than the grace period.
    let (code, v) = json(&config, &secret, &["prune"]);
    assert_eq!(code, 0, "{v}");
    let old_blob = blobs
        .iter()
        .find(|p| {
            std::fs::read(p)
                .ok()
                .and_then(|b| zstd_text(&b))
                .is_some_and(|t| t == "document 0")
        })
        .unwrap()
        .clone();
    assert!(old_blob.exists(), "younger than the grace period: kept");
    for p in files_under(&tier.join("objects/blobs")) {
        let status = Command::new("touch")
            .args(["-d", "3 days ago"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (code, v) = json(&config, &secret, &["prune", "--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert!(old_blob.exists());
    assert!(v.to_string().contains("blobs"), "{v}");
    let (code, v) = json(&config, &secret, &["prune"]);
    assert_eq!(code, 0, "{v}");
    assert!(!old_blob.exists(), "{v}");
    let left: Vec<PathBuf> = files_under(&tier.join("objects/blobs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .collect();
    assert_eq!(
        left.len(),
        40,
        "the blobs of file-00's first edition and of file-01 went"
    );
    let (code, v) = json(&config, &secret, &["verify", "objects", "--deep"]);
    assert_eq!(code, 0, "{v}");

    // A flipped byte in a blob fails verify, naming it.
    let victim = &left[left.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(victim, bytes).unwrap();
    let out = zdr(&config, &secret, &["verify", "objects"]);
    assert_ne!(out.status.code(), Some(0));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains(&name), "{text}");
}

/// The text of a zstd frame, decoded with the `zstd` tool (the format is standard).
fn zstd_text(bytes: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(bytes).ok()?;
    let out = child.wait_with_output().ok()?;
    String::from_utf8(out.stdout).ok()
}
