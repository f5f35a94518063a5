//! Small blobs stored several to a pack, on real local-disk tiers: what a pack holds, how a
//! later backup shares its content, what a damaged or cut-short pack does, how pruning and
//! replication treat packs, and that a pack decodes with the standard tools.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use zdr_core::{
    ArtifactRecord, BoxRead, BoxWrite, Component, Entry, ErrorKind, Manifest, Progress, Result,
    StorageTier, layout,
};
use zdr_storage::{
    AgeKeys, BlobList, PipelineOptions, Repository, RetryPolicy, TierConfig, open_tier,
};
use zdr_tests::fixtures::{BlobContents, data, run_sh};

fn options(pack_size: u64) -> PipelineOptions {
    PipelineOptions {
        blob_pack_size: pack_size,
        ..PipelineOptions::default()
    }
}

fn fs_tier(root: &Path) -> Arc<dyn StorageTier> {
    open_tier(
        "local",
        &TierConfig::Fs {
            root: root.to_owned(),
        },
    )
    .unwrap()
}

async fn records(tier: &Arc<dyn StorageTier>, m: &Manifest) -> Vec<ArtifactRecord> {
    let mut list = BlobList::open(tier.clone(), m, &AgeKeys::none())
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    while let Some(r) = list.next().await.unwrap() {
        out.push(r);
    }
    out
}

async fn read_all(repo: &Repository, r: &ArtifactRecord) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    repo.open(r, Progress::none())?
        .read_to_end(&mut out)
        .await
        .map_err(|e| zdr_core::Error::from_io(e, "read"))?;
    Ok(out)
}

async fn keys(tier: &Arc<dyn StorageTier>, prefix: &str) -> BTreeSet<String> {
    tier.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

fn packs(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| k.ends_with(".pack"))
        .cloned()
        .collect()
}

/// [`mixed`] backed up onto `tier` with `options`: the repository, the contents, the backup.
async fn mixed_backup(
    tier: &Arc<dyn StorageTier>,
    options: PipelineOptions,
) -> (Repository, Vec<Vec<u8>>, Manifest) {
    let repo = Repository::new(tier.clone(), options);
    let contents = mixed();
    let m = repo
        .backup(
            &BlobContents::new(contents.clone()),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    (repo, contents, m)
}

/// Small contents of 1–3 KB, one of them twice, and one of 2 MiB.
fn mixed() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..40u64)
        .map(|i| data(1000 + (i as usize * 53) % 2000, i))
        .collect();
    v.push(v[3].clone());
    v.push(data(2 << 20, 99));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_share_packs_with_a_table_and_a_sidecar_and_read_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let (repo, contents, m) = mixed_backup(&tier, options(16 << 10)).await;
    assert_eq!(m.facts["stored"], 41, "the repeated content is stored once");
    let all = keys(&tier, "uploads/blobs/").await;
    let packs = packs(&all);
    assert!(
        (2..20).contains(&packs.len()),
        "40 small contents in a few packs: {packs:?}"
    );
    let recs = records(&tier, &m).await;
    assert_eq!(recs.len(), contents.len());
    for (r, c) in recs.iter().zip(&contents) {
        assert_eq!(r.name, zdr_core::sha256_hex(c));
        if c.len() > 1 << 20 {
            assert_eq!(r.offset, None, "a large content is stored alone");
            assert!(all.contains(&r.key) && !r.key.ends_with(".pack"));
        } else {
            assert!(packs.contains(&r.key), "{r:?}");
            assert!(r.offset.is_some());
        }
        assert_eq!(&read_all(&repo, r).await.unwrap(), c);
    }
    assert_eq!(recs[3], recs[40], "the same content, the same blob");
    // Each pack: its sidecar matches its bytes; its table lists slices that tile it.
    for p in &packs {
        let bytes = tier.read_all(p).await.unwrap();
        let sidecar =
            String::from_utf8(tier.read_all(&format!("{p}.sha256")).await.unwrap()).unwrap();
        assert_eq!(
            sidecar,
            layout::sidecar_line(p, &zdr_core::sha256_hex(&bytes))
        );
        let table = String::from_utf8(tier.read_all(&format!("{p}.idx")).await.unwrap()).unwrap();
        let mut end = 0;
        for line in table.lines() {
            let r: ArtifactRecord = serde_json::from_str(line).unwrap();
            assert_eq!(r.offset, Some(end), "frames end to end");
            let frame = &bytes[end as usize..(end + r.size) as usize];
            assert_eq!(zdr_core::sha256_hex(frame), r.sha256);
            end += r.size;
        }
        assert_eq!(end, bytes.len() as u64);
    }
    repo.verify(&m, true, &Progress::none()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_backup_shares_packed_content_but_never_a_pack_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let (repo, contents, first) = mixed_backup(&tier, options(8 << 10)).await;
    let recs = records(&tier, &first).await;
    // One pack loses its sidecar, as a run killed between the pack and its sidecar leaves it.
    let cut = recs
        .iter()
        .find(|r| r.offset.is_some())
        .unwrap()
        .key
        .clone();
    let in_cut: BTreeSet<&String> = recs
        .iter()
        .filter(|r| r.key == cut)
        .map(|r| &r.name)
        .collect();
    tier.delete(&format!("{cut}.sha256")).await.unwrap();
    let mut more = contents.clone();
    more.push(data(1500, 1234));
    let second = repo
        .backup(&BlobContents::new(more.clone()), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(
        second.facts["stored"],
        in_cut.len() as u64 + 1,
        "only the new content and the content of the pack cut short are stored"
    );
    for (r, c) in records(&tier, &second).await.iter().zip(&more) {
        assert_ne!(r.key, cut, "nothing refers to a pack without its sidecar");
        assert_eq!(&read_all(&repo, r).await.unwrap(), c);
    }
    repo.verify(&second, true, &Progress::none()).await.unwrap();
    let refused = repo
        .verify(&first, false, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Integrity, "{refused}");
    assert_eq!(
        refused.context_value("key"),
        Some(format!("{cut}.sha256").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_pack_is_refused_for_that_blob_only() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let repo = Repository::new(tier.clone(), options(64 << 10));
    let m = repo
        .backup(&BlobContents::new(mixed()), "daily", &Progress::none())
        .await
        .unwrap();
    let recs = records(&tier, &m).await;
    let victim = recs[5].clone();
    let neighbours: Vec<&ArtifactRecord> = recs
        .iter()
        .filter(|r| r.key == victim.key && r.name != victim.name)
        .collect();
    assert!(!neighbours.is_empty());
    let mut bytes = tier.read_all(&victim.key).await.unwrap();
    bytes[(victim.offset.unwrap() + victim.size / 2) as usize] ^= 0x10;
    tier.write_all(&victim.key, bytes).await.unwrap();
    let err = repo.verify(&m, false, &Progress::none()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert_eq!(err.context_value("key"), Some(victim.key.as_str()));
    let err = read_all(&repo, &victim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    for r in neighbours {
        read_all(&repo, r).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_removes_a_pack_only_when_no_kept_backup_uses_any_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let repo = Repository::new(tier.clone(), options(1 << 20));
    let (a, b, c) = (data(3000, 10), data(3000, 20), data(3000, 30));
    let first = repo
        .backup(
            &BlobContents::new(vec![a.clone(), b.clone()]),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let second = repo
        .backup(
            &BlobContents::new(vec![b.clone(), c.clone()]),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(second.facts["stored"], 1);
    let all = keys(&tier, "uploads/blobs/").await;
    assert_eq!(packs(&all).len(), 2);
    let component = Component::new("uploads").unwrap();
    let sweep = |kept: Vec<Manifest>| {
        let tier = tier.clone();
        let component = component.clone();
        async move {
            let kept: Vec<&Manifest> = kept.iter().collect();
            zdr_storage::sweep_blobs(
                &tier,
                &AgeKeys::none(),
                &component,
                &kept,
                &[],
                std::time::Duration::ZERO,
                false,
            )
            .await
            .unwrap()
        }
    };
    repo.delete_backup(&first).await.unwrap();
    let swept = sweep(vec![second.clone()]).await;
    assert!(
        swept.removed.is_empty(),
        "the first pack still holds b: {:?}",
        swept.removed
    );
    repo.verify(&second, true, &Progress::none()).await.unwrap();
    repo.delete_backup(&second).await.unwrap();
    let swept = sweep(Vec::new()).await;
    assert_eq!(
        swept.removed.iter().cloned().collect::<BTreeSet<_>>(),
        all,
        "each pack with its table and sidecar"
    );
    assert!(keys(&tier, "uploads/blobs/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_copies_packs_with_their_tables_and_the_replica_shares_them() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(&dir.path().join("a"));
    let replica = fs_tier(&dir.path().join("b"));
    let (_, contents, m) = mixed_backup(&tier, options(16 << 10)).await;
    let report =
        zdr_storage::replicate(&tier, &replica, &RetryPolicy::default(), &Progress::none())
            .await
            .unwrap();
    assert_eq!(report.copied.len(), 1, "{:?}", report.failed);
    assert_eq!(
        keys(&replica, "uploads/blobs/").await,
        keys(&tier, "uploads/blobs/").await
    );
    // A copy that stopped after a table was lost on the way: the next replication brings it.
    let table = format!(
        "{}.idx",
        packs(&keys(&replica, "uploads/blobs/").await)
            .into_iter()
            .next()
            .unwrap()
    );
    replica.delete(&table).await.unwrap();
    replica.delete(&format!("{table}.sha256")).await.unwrap();
    replica
        .delete(&layout::manifest_key(&m.component, &m.id))
        .await
        .unwrap();
    zdr_storage::replicate(&tier, &replica, &RetryPolicy::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(
        keys(&replica, "uploads/blobs/").await,
        keys(&tier, "uploads/blobs/").await
    );
    let there = Repository::new(replica.clone(), options(16 << 10));
    there.verify(&m, true, &Progress::none()).await.unwrap();
    let again = there
        .backup(&BlobContents::new(contents), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(again.facts["stored"], 0, "the replica's packs are shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_packs_read_back_and_a_wrong_pack_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let (secret, public) = AgeKeys::generate_identity();
    let keys = AgeKeys::none()
        .with_recipients(std::slice::from_ref(&public))
        .unwrap()
        .with_identities_text(&secret, "test")
        .unwrap();
    let (repo, contents, m) = mixed_backup(
        &tier,
        PipelineOptions {
            keys,
            ..options(16 << 10)
        },
    )
    .await;
    for (r, c) in records(&tier, &m).await.iter().zip(&contents) {
        assert!(r.encryption.is_some());
        assert_eq!(&read_all(&repo, r).await.unwrap(), c);
    }
    repo.verify(&m, true, &Progress::none()).await.unwrap();
    // Plaintext backups do not share encrypted blobs.
    let plain = Repository::new(tier.clone(), options(16 << 10));
    let p = plain
        .backup(&BlobContents::new(contents), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(p.facts["stored"], 41);
}

/// A local-disk tier whose writes of packs fail: a dead server mid-upload.
struct NoPacks(Arc<dyn StorageTier>);

#[async_trait]
impl StorageTier for NoPacks {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn writer(&self, key: &str) -> Result<BoxWrite> {
        self.0.writer(key).await
    }
    async fn reader(&self, key: &str) -> Result<BoxRead> {
        self.0.reader(key).await
    }
    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        self.0.read_all(key).await
    }
    async fn write_all(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        if key.ends_with(".pack") {
            return Err(
                zdr_core::Error::new(ErrorKind::Storage, "injected: the server went away")
                    .with_context("tier", self.name())
                    .with_context("key", key),
            );
        }
        self.0.write_all(key, bytes).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.0.list(prefix).await
    }
    async fn stat(&self, key: &str) -> Result<Option<Entry>> {
        self.0.stat(key).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.0.delete(key).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_that_cannot_be_stored_fails_the_backup_and_leaves_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let inner = fs_tier(dir.path());
    let tier: Arc<dyn StorageTier> = Arc::new(NoPacks(inner.clone()));
    for pack_size in [4 << 10, 4 << 20] {
        let repo = Repository::new(tier.clone(), options(pack_size));
        let err = repo
            .backup(&BlobContents::new(mixed()), "daily", &Progress::none())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(repo.catalog().await.unwrap().list(None).is_empty());
        assert!(keys(&inner, "uploads/daily/").await.is_empty());
        let blobs = keys(&inner, "uploads/blobs/").await;
        assert!(
            blobs.iter().all(|k| !k.contains("/packs/")),
            "no table or sidecar without its pack: {blobs:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_in_a_pack_decodes_with_standard_tools() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tier");
    let tier = fs_tier(&root);
    let (secret, public) = AgeKeys::generate_identity();
    let key_file = dir.path().join("age.key");
    std::fs::write(&key_file, format!("# test key\n{secret}\n")).unwrap();
    for encrypted in [false, true] {
        let keys = if encrypted {
            AgeKeys::none()
                .with_recipients(std::slice::from_ref(&public))
                .unwrap()
        } else {
            AgeKeys::none()
        };
        let (_, contents, m) = mixed_backup(
            &tier,
            PipelineOptions {
                keys,
                ..options(16 << 10)
            },
        )
        .await;
        let recs = records(&tier, &m).await;
        for i in [0, 7, 39] {
            let r = &recs[i];
            let offset = r.offset.unwrap();
            let path = root.join(&r.key);
            let pack_dir = path.parent().unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            run_sh(pack_dir, &format!("sha256sum -c {file}.sha256"));
            let slice = format!("tail -c +{} {file} | head -c {}", offset + 1, r.size);
            let decrypt = if encrypted {
                format!(" | age -d -i {}", key_file.display())
            } else {
                String::new()
            };
            let out = run_sh(pack_dir, &format!("{slice}{decrypt} | zstd -dc"));
            assert_eq!(out, contents[i], "blob {i}, encrypted: {encrypted}");
            let hash = run_sh(pack_dir, &format!("{slice} | sha256sum"));
            assert!(String::from_utf8(hash).unwrap().starts_with(&r.sha256));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_table_only_stops_its_pack_being_shared() {
    let dir = tempfile::tempdir().unwrap();
    let tier = fs_tier(dir.path());
    let (repo, contents, first) = mixed_backup(&tier, options(8 << 10)).await;
    let recs = records(&tier, &first).await;
    let packs = packs(&keys(&tier, "uploads/blobs/").await);
    let mut damaged = packs.iter();
    let (garbage, renamed, outside) = (
        damaged.next().unwrap(),
        damaged.next().unwrap(),
        damaged.next().unwrap(),
    );
    let table_of = |p: &String| format!("{p}.idx");
    // Not JSON at all.
    tier.write_all(&table_of(garbage), b"{not json\n".to_vec())
        .await
        .unwrap();
    // Still JSON, one blob's name changed (a bit flipped in a hex digit): the table's own
    // sidecar refuses it, so later backups never point at the wrong content.
    let text = String::from_utf8(tier.read_all(&table_of(renamed)).await.unwrap()).unwrap();
    let mut lines: Vec<ArtifactRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    lines[0].name = zdr_core::sha256_hex(b"something else");
    let mut bad = Vec::new();
    for l in &lines {
        bad.extend(serde_json::to_vec(l).unwrap());
        bad.push(b'\n');
    }
    tier.write_all(&table_of(renamed), bad).await.unwrap();
    // A slice past the pack's end, in a table whose sidecar agrees (a writer gone wrong).
    let text = String::from_utf8(tier.read_all(&table_of(outside)).await.unwrap()).unwrap();
    let mut line: ArtifactRecord = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    line.offset = Some(1 << 40);
    let mut bad = serde_json::to_vec(&line).unwrap();
    bad.push(b'\n');
    let sha = zdr_core::sha256_hex(&bad);
    tier.write_all(&table_of(outside), bad).await.unwrap();
    tier.write_all(
        &format!("{}.sha256", table_of(outside)),
        layout::sidecar_line(&table_of(outside), &sha).into_bytes(),
    )
    .await
    .unwrap();
    let held = |p: &String| {
        recs.iter()
            .filter(|r| &r.key == p)
            .map(|r| r.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let unshared = held(garbage).len() + held(renamed).len() + held(outside).len();
    let recorder = Arc::new(zdr_core::RecordingSink::default());
    let progress = Progress::new(recorder.clone());
    let second = repo
        .backup(&BlobContents::new(contents.clone()), "daily", &progress)
        .await
        .unwrap();
    assert_eq!(second.facts["stored"], unshared as u64);
    let warnings = recorder.messages(zdr_core::Level::Warn);
    for p in [garbage, renamed, outside] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(p.as_str()) && w.contains("not shared")),
            "{p} named: {warnings:?}"
        );
    }
    for r in records(&tier, &second).await {
        assert!(![garbage, renamed, outside].contains(&&r.key), "{r:?}");
    }
    // The first backup's records do not depend on the tables.
    for (r, c) in recs.iter().zip(&contents) {
        assert_eq!(&read_all(&repo, r).await.unwrap(), c);
    }
    repo.verify(&first, true, &Progress::none()).await.unwrap();
    repo.verify(&second, true, &Progress::none()).await.unwrap();
}
