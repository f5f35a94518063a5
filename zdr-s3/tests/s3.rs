//! The object-storage component against real SeaweedFS servers: one as the source (the
//! stack's MinIO), one holding the S3 tier, a local-disk tier for replication.
//!
//! `ZDR_S3_OBJECTS` sets how many objects the main test writes (default 400; the issue's
//! 10,000 runs with `ZDR_S3_OBJECTS=10000`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use zdr_core::{
    ArtifactRecord, ArtifactSink, ArtifactWrite, BackupRequest, BackupSource, BlobPut, BlobStore,
    BoxRead, Component, ErrorKind, Manifest, Progress, RestoreTarget, Restorer, Result,
    SourceFacts, StorageTier, Verifier,
};
use zdr_s3::{RestoreOptions, S3BucketComponent, S3BucketSettings};
use zdr_storage::{PipelineOptions, Repository, RetryPolicy, S3Config, TierConfig, open_tier};
use zdr_tests::seaweed::SeaweedFs;

/// One object as the test wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Obj {
    body: Vec<u8>,
    content_type: String,
    meta: BTreeMap<String, String>,
}

fn settings(s: &SeaweedFs, buckets: &[&str]) -> S3BucketSettings {
    S3BucketSettings {
        endpoint: Some(s.endpoint()),
        region: Some(s.region().to_owned()),
        buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
        access_key_id: Some(s.access_key_id().to_owned()),
        secret_access_key: Some(s.secret_access_key().into()),
        ..S3BucketSettings::default()
    }
}

fn s3_config(s: &SeaweedFs, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.to_owned(),
        endpoint: Some(s.endpoint()),
        region: Some(s.region().to_owned()),
        access_key_id: Some(s.access_key_id().to_owned()),
        secret_access_key: Some(s.secret_access_key().into()),
        ..S3Config::default()
    }
}

fn op(s: &SeaweedFs, bucket: &str) -> opendal::Operator {
    opendal::install_default();
    let b = opendal::services::S3::default()
        .bucket(bucket)
        .endpoint(&s.endpoint())
        .region(s.region())
        .access_key_id(s.access_key_id())
        .secret_access_key(s.secret_access_key())
        .disable_config_load()
        .disable_ec2_metadata();
    opendal::Operator::new(b).unwrap()
}

async fn bucket(s: &SeaweedFs, name: &str) -> opendal::Operator {
    zdr_storage::ensure_bucket("test", &s3_config(s, name))
        .await
        .unwrap();
    op(s, name)
}

async fn put(o: &opendal::Operator, key: &str, obj: &Obj) {
    let mut w = o
        .writer_with(key)
        .content_type(&obj.content_type)
        .user_metadata(obj.meta.clone())
        // Objects over 5 MiB go up in several parts (a multipart upload).
        .chunk(5 << 20)
        .await
        .unwrap();
    w.write(obj.body.clone()).await.unwrap();
    w.close().await.unwrap();
}

async fn read(o: &opendal::Operator, key: &str) -> Option<Obj> {
    let meta = match o.stat(key).await {
        Ok(m) => m,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return None,
        Err(e) => panic!("stat {key}: {e}"),
    };
    let body = o.read(key).await.unwrap().to_vec();
    Some(Obj {
        body,
        content_type: meta.content_type().unwrap_or_default().to_owned(),
        meta: meta
            .user_metadata()
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

fn object(rng: &mut rand::rngs::StdRng, i: usize) -> Obj {
    let size = match i % 50 {
        0 => 0,
        1 => 6 << 20, // multipart
        2..=9 => rng.random_range(100_000..400_000),
        _ => rng.random_range(1..20_000),
    };
    let mut body = vec![0u8; size];
    rng.fill(&mut body[..]);
    let mut meta = BTreeMap::new();
    if i.is_multiple_of(3) {
        meta.insert("owner".to_owned(), format!("user-{i}"));
    }
    Obj {
        body,
        content_type: if i.is_multiple_of(2) {
            "application/pdf".into()
        } else {
            "image/png".into()
        },
        meta,
    }
}

fn count() -> usize {
    std::env::var("ZDR_S3_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// The complete stored blobs of `component` (alone, or in a pack with its sidecar and
/// table), by content SHA-256: the object holding each, and where in it.
async fn stored_blobs(
    tier: &Arc<dyn StorageTier>,
    component: &Component,
) -> BTreeMap<String, Held> {
    let keys: BTreeSet<String> = tier
        .list(&zdr_core::layout::blob_prefix(component))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    let mut out = BTreeMap::new();
    for k in &keys {
        if k.ends_with(".sha256") || k.ends_with(".idx") || !keys.contains(&format!("{k}.sha256")) {
            continue;
        }
        if k.ends_with(".pack") {
            let table = tier.read_all(&format!("{k}.idx")).await.unwrap();
            for line in String::from_utf8(table).unwrap().lines() {
                let r: ArtifactRecord = serde_json::from_str(line).unwrap();
                assert_eq!(&r.key, k);
                out.insert(
                    r.name,
                    Held {
                        key: k.clone(),
                        offset: r.offset.unwrap(),
                        size: r.size,
                    },
                );
            }
        } else {
            let name = k.rsplit('/').next().unwrap();
            let size = tier.stat(k).await.unwrap().unwrap().size;
            out.insert(
                name[..64].to_owned(),
                Held {
                    key: k.clone(),
                    offset: 0,
                    size,
                },
            );
        }
    }
    out
}

/// Where a blob is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    key: String,
    offset: u64,
    size: u64,
}

/// Every key under the component's blobs (blobs, packs, tables, sidecars).
async fn blob_area(tier: &Arc<dyn StorageTier>, component: &Component) -> BTreeSet<String> {
    tier.list(&zdr_core::layout::blob_prefix(component))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

async fn all_objects(o: &opendal::Operator) -> BTreeMap<String, Obj> {
    let mut out = BTreeMap::new();
    for e in o.list_with("").recursive(true).await.unwrap() {
        if e.metadata().is_file() {
            out.insert(e.path().to_owned(), read(o, e.path()).await.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backups_store_only_what_changed_and_restore_any_point() {
    let source = SeaweedFs::start().await.unwrap();
    let store = SeaweedFs::start().await.unwrap();
    let docs = bucket(&source, "docs").await;
    let uploads = bucket(&source, "uploads").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let n = count();
    let mut truth: BTreeMap<(String, String), Obj> = BTreeMap::new();
    for i in 0..n {
        let (b, o) = if i.is_multiple_of(4) {
            ("docs", &docs)
        } else {
            ("uploads", &uploads)
        };
        let key = format!("tenant-{}/file-{i:05}.bin", i % 3);
        // Every 25th object repeats another's content: stored once.
        let obj = if i % 25 == 24 {
            truth.values().next().cloned().unwrap()
        } else {
            object(&mut rng, i)
        };
        put(o, &key, &obj).await;
        truth.insert((b.to_owned(), key), obj);
    }
    // One object of 64 MiB (a multipart upload of 13 parts).
    let big = Obj {
        body: (0..64u32 << 20).map(|i| (i % 251) as u8).collect(),
        content_type: "video/mp4".into(),
        meta: BTreeMap::from([("camera".to_owned(), "front".to_owned())]),
    };
    put(&uploads, "big/video.mp4", &big).await;
    truth.insert(("uploads".into(), "big/video.mp4".into()), big);
    let n = n + 1;
    let distinct: BTreeSet<&Vec<u8>> = truth.values().map(|o| &o.body).collect();

    let tier = open_tier("minio", &TierConfig::S3(s3_config(&store, store.bucket()))).unwrap();
    // Small packs: several of them, some holding only content a later backup drops.
    let options = PipelineOptions {
        blob_pack_size: 256 << 10,
        ..PipelineOptions::default()
    };
    let repo = Repository::new(tier.clone(), options.clone());
    let component = Component::new("objects").unwrap();
    let s3 =
        S3BucketComponent::new(component.clone(), settings(&source, &["uploads", "docs"])).unwrap();

    let first = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    assert_eq!(first.facts["objects"], n as u64);
    assert_eq!(first.facts["read_objects"], n as u64);
    assert_eq!(first.facts["stored_blobs"], distinct.len() as u64);
    let held = stored_blobs(&tier, &component).await;
    assert_eq!(held.len(), distinct.len());
    let packs: BTreeSet<&String> = held
        .values()
        .filter(|h| h.key.ends_with(".pack"))
        .map(|h| &h.key)
        .collect();
    assert!(
        packs.len() > 1 && packs.len() < held.len() / 2,
        "small contents share packs: {} packs for {} blobs",
        packs.len(),
        held.len()
    );
    assert!(
        held.values().any(|h| !h.key.ends_with(".pack")),
        "a large content is stored alone"
    );
    assert_eq!(first.blob_index.as_deref(), Some("blobs"));
    let blobs_record = first.artifact("blobs").unwrap();
    assert!(blobs_record.encryption.is_none());

    // 1 % changed, 1 % deleted, 1 % added.
    let step = 100;
    let keys: Vec<(String, String)> = truth.keys().cloned().collect();
    let mut changed_bytes = 0u64;
    let before = truth.clone();
    for (idx, (b, key)) in keys.iter().enumerate() {
        let o = if b == "docs" { &docs } else { &uploads };
        if idx % step == 1 {
            let mut obj = truth[&(b.clone(), key.clone())].clone();
            obj.body
                .extend_from_slice(format!("-changed {key}").as_bytes());
            obj.body[0] ^= 0xff;
            changed_bytes += obj.body.len() as u64;
            put(o, key, &obj).await;
            truth.insert((b.clone(), key.clone()), obj);
        } else if idx % step == 2 {
            o.delete(key).await.unwrap();
            truth.remove(&(b.clone(), key.clone()));
        }
    }
    let added = n.div_ceil(step);
    for i in 0..added {
        let key = format!("new/added-{i}.txt");
        let obj = Obj {
            body: format!("added object {i}").into_bytes(),
            content_type: "text/plain".into(),
            meta: BTreeMap::new(),
        };
        changed_bytes += obj.body.len() as u64;
        put(&uploads, &key, &obj).await;
        truth.insert(("uploads".into(), key), obj);
    }
    let blobs_before = stored_blobs(&tier, &component).await;
    let second = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    let changed = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 1)
        .count() as u64;
    let deleted = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 2)
        .count() as u64;
    assert_eq!(second.facts["objects"], truth.len() as u64);
    assert_eq!(
        second.facts["read_objects"],
        changed + added as u64,
        "only the changed and added objects are read"
    );
    let new_blobs = stored_blobs(&tier, &component).await;
    assert_eq!(
        new_blobs
            .keys()
            .filter(|k| !blobs_before.contains_key(*k))
            .count() as u64,
        changed + added as u64
    );
    let stored = second.facts["stored_blob_bytes"].as_u64().unwrap();
    // Random content does not compress: the stored bytes are the changed bytes plus
    // the compression frames.
    assert!(
        stored <= changed_bytes + changed_bytes / 10 + 4096,
        "stored {stored} for {changed_bytes} changed bytes"
    );

    repo.verify(&second, true, &Progress::none()).await.unwrap();
    let report = Verifier::verify(&s3, &second, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    let stale = Verifier::verify(&s3, &first, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(
        !stale.is_ok(),
        "the live buckets moved on since the first backup"
    );

    // The first backup, whole, into its own buckets: refused while objects differ,
    // nothing written; with overwrite, the deleted objects and the old contents are back.
    let refused = repo
        .restore(
            &s3.restore_with(RestoreOptions::default()),
            &first,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("file-"), "{refused}");
    for ((b, key), obj) in &truth {
        let o = if b == "docs" { &docs } else { &uploads };
        assert_eq!(
            read(o, key).await.as_ref(),
            Some(obj),
            "{b}/{key} untouched"
        );
    }
    let outcome = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                overwrite: true,
                ..RestoreOptions::default()
            }),
            &first,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.items,
        changed + deleted,
        "changed and deleted objects written"
    );
    for ((b, key), obj) in &before {
        let o = if b == "docs" { &docs } else { &uploads };
        assert_eq!(
            read(o, key).await.as_ref(),
            Some(obj),
            "{b}/{key} as in the first backup"
        );
    }

    // One prefix of one bucket into a bucket that does not exist yet.
    let outcome = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                bucket: Some("uploads".into()),
                prefix: Some("tenant-1/".into()),
                to_bucket: Some("restored-prefix".into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert!(
        outcome
            .notes
            .iter()
            .any(|n| n.contains("created bucket restored-prefix"))
    );
    let restored = all_objects(&op(&source, "restored-prefix")).await;
    let expected: BTreeMap<String, Obj> = truth
        .iter()
        .filter(|((b, k), _)| b == "uploads" && k.starts_with("tenant-1/"))
        .map(|((_, k), o)| (k.clone(), o.clone()))
        .collect();
    assert_eq!(restored, expected);
    // Again: everything identical, nothing written.
    let again = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                bucket: Some("uploads".into()),
                prefix: Some("tenant-1/".into()),
                to_bucket: Some("restored-prefix".into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.items, 0);

    // One key; a key the backup does not hold.
    let (one_key, one_obj) = expected.iter().next().unwrap();
    let outcome = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                bucket: Some("uploads".into()),
                key: Some(one_key.clone()),
                to_bucket: Some("restored-one".into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.items, 1);
    assert_eq!(
        all_objects(&op(&source, "restored-one")).await,
        BTreeMap::from([(one_key.clone(), one_obj.clone())])
    );
    let missing = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                key: Some("no/such/key".into()),
                bucket: Some("uploads".into()),
                to_bucket: Some("restored-one".into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    let two_buckets = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                to_bucket: Some("restored-all".into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(two_buckets.kind(), ErrorKind::BadInput, "{two_buckets}");

    // Replication to a local disk copies each blob once; a second backup replicated
    // copies only its new blobs.
    let dir = tempfile::tempdir().unwrap();
    let local = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().join("tier"),
        },
    )
    .unwrap();
    let report = zdr_storage::replicate(&tier, &local, &RetryPolicy::default(), &Progress::none())
        .await
        .unwrap();
    assert_eq!(report.copied.len(), 2, "{:?}", report.failed);
    assert_eq!(
        blob_area(&local, &component).await,
        blob_area(&tier, &component).await,
        "every pack with its table and sidecar, every blob with its sidecar"
    );
    let replica = Repository::new(local.clone(), options.clone());
    replica
        .verify(&second, true, &Progress::none())
        .await
        .unwrap();

    // Pruning the first backup: the sweep removes only blobs no other backup uses.
    repo.delete_backup(&first).await.unwrap();
    let catalog = repo.catalog().await.unwrap();
    let kept: Vec<&Manifest> = catalog.list(Some(&component));
    let dry = zdr_storage::sweep_blobs(
        &tier,
        &zdr_storage::AgeKeys::none(),
        &component,
        &kept,
        &[],
        std::time::Duration::ZERO,
        true,
    )
    .await
    .unwrap();
    let sha_set = |m: &BTreeMap<(String, String), Obj>| -> BTreeSet<String> {
        m.values().map(|o| zdr_core::sha256_hex(&o.body)).collect()
    };
    let gone = sha_set(&before).difference(&sha_set(&truth)).count();
    assert!(gone > 0);
    // A blob alone goes with its sidecar; a pack only when none of its blobs is used any
    // more, with its table and sidecar.
    let live = sha_set(&truth);
    let mut used: BTreeMap<&String, bool> = BTreeMap::new();
    for (sha, h) in &new_blobs {
        *used.entry(&h.key).or_default() |= live.contains(sha);
    }
    let expected: BTreeSet<String> = used
        .iter()
        .filter(|(_, used)| !**used)
        .flat_map(|(k, _)| {
            let mut v = vec![(*k).clone(), format!("{k}.sha256")];
            if k.ends_with(".pack") {
                v.push(format!("{k}.idx"));
                v.push(format!("{k}.idx.sha256"));
            }
            v
        })
        .collect();
    assert_eq!(
        dry.removed.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "only what no kept backup uses"
    );
    assert_eq!(
        stored_blobs(&tier, &component).await,
        new_blobs,
        "a dry run removes nothing"
    );
    let swept = zdr_storage::sweep_blobs(
        &tier,
        &zdr_storage::AgeKeys::none(),
        &component,
        &kept,
        &[],
        std::time::Duration::ZERO,
        false,
    )
    .await
    .unwrap();
    assert_eq!(swept.removed, dry.removed);
    repo.verify(&second, true, &Progress::none()).await.unwrap();

    // A flipped byte in one object's blob: verify names it; a restore of its bucket
    // fails, and that object is not written.
    let counts: BTreeMap<String, usize> = truth.values().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(zdr_core::sha256_hex(&o.body)).or_default() += 1;
        m
    });
    let ((_, victim), victim_obj) = truth
        .iter()
        .find(|((b, _), o)| {
            b == "uploads" && !o.body.is_empty() && counts[&zdr_core::sha256_hex(&o.body)] == 1
        })
        .unwrap();
    let victim_at =
        stored_blobs(&tier, &component).await[&zdr_core::sha256_hex(&victim_obj.body)].clone();
    let target_key = victim_at.key.clone();
    let mut bytes = tier.read_all(&target_key).await.unwrap();
    let mid = usize::try_from(victim_at.offset + victim_at.size / 2).unwrap();
    bytes[mid] ^= 0x01;
    tier.write_all(&target_key, bytes).await.unwrap();
    let bad = repo
        .verify(&second, false, &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Integrity, "{bad}");
    assert_eq!(bad.context_value("key"), Some(target_key.as_str()));
    let fresh = "restored-after-damage";
    let damaged = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                bucket: Some("uploads".into()),
                to_bucket: Some(fresh.into()),
                ..RestoreOptions::default()
            }),
            &second,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(damaged.kind(), ErrorKind::Integrity, "{damaged}");
    let restored = all_objects(&op(&source, fresh)).await;
    assert!(
        !restored.contains_key(victim),
        "the damaged object is not written"
    );
    for (k, o) in &restored {
        assert_eq!(
            Some(o),
            truth.get(&("uploads".to_owned(), k.clone())),
            "{k} is whole"
        );
    }
}

/// A source that fails its blob store's `put` number `fail_at`: an interrupted backup.
struct Interrupted {
    inner: S3BucketComponent,
    fail_at: usize,
}

struct FailingSink<'a> {
    inner: &'a mut dyn ArtifactSink,
    fail_at: usize,
}

struct FailingBlobs {
    inner: Arc<dyn BlobStore>,
    puts: AtomicUsize,
    fail_at: usize,
}

#[async_trait]
impl BlobStore for FailingBlobs {
    async fn find(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>> {
        self.inner.find(sha256, raw_size).await
    }
    async fn put(&self, sha256: &str, raw_size: u64, content: BoxRead) -> Result<BlobPut> {
        if self.puts.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_at {
            return Err(zdr_core::Error::new(
                ErrorKind::Storage,
                "the tier went away (injected)",
            ));
        }
        self.inner.put(sha256, raw_size, content).await
    }
}

#[async_trait]
impl ArtifactSink for FailingSink<'_> {
    async fn create(&mut self, name: &str, ext: &str) -> Result<Box<dyn ArtifactWrite>> {
        self.inner.create(name, ext).await
    }
    async fn previous(&mut self, name: &str) -> Result<Option<BoxRead>> {
        self.inner.previous(name).await
    }
    fn blobs(&mut self, index: &str) -> Result<Arc<dyn BlobStore>> {
        Ok(Arc::new(FailingBlobs {
            inner: self.inner.blobs(index)?,
            puts: AtomicUsize::new(0),
            fail_at: self.fail_at,
        }))
    }
}

#[async_trait]
impl BackupSource for Interrupted {
    fn component(&self) -> &Component {
        BackupSource::component(&self.inner)
    }
    async fn backup(
        &self,
        req: &BackupRequest,
        sink: &mut dyn ArtifactSink,
        progress: &Progress,
    ) -> Result<SourceFacts> {
        let mut failing = FailingSink {
            inner: sink,
            fail_at: self.fail_at,
        };
        self.inner.backup(req, &mut failing, progress).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interrupted_backup_leaves_no_index_and_the_next_still_shares_its_blobs() {
    let source = SeaweedFs::start().await.unwrap();
    let data = bucket(&source, "data").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for i in 0..60 {
        put(&data, &format!("k{i:03}"), &object(&mut rng, i + 2)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_owned(),
        },
    )
    .unwrap();
    // Packs of about one small object each: most are stored before the failure.
    let repo = Repository::new(
        tier.clone(),
        PipelineOptions {
            blob_pack_size: 4096,
            ..PipelineOptions::default()
        },
    );
    let component = Component::new("data").unwrap();
    let s3 = S3BucketComponent::new(component.clone(), settings(&source, &["data"])).unwrap();
    let err = repo
        .backup(
            &Interrupted {
                inner: s3.clone(),
                fail_at: 30,
            },
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    assert!(repo.catalog().await.unwrap().list(None).is_empty());
    let left = tier.list("data/daily/").await.unwrap();
    assert!(left.is_empty(), "no index or blob list left: {left:?}");
    // Blobs whose write completed (alone or in a pack, with the sidecar) before the failure.
    let kept_blobs = stored_blobs(&tier, &component).await.len();
    assert!(
        kept_blobs >= 20,
        "the blobs stored before the failure stay: {kept_blobs}"
    );

    let m = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    assert_eq!(m.facts["objects"], 60);
    assert_eq!(
        m.facts["stored_blobs"].as_u64().unwrap() as usize,
        60 - kept_blobs,
        "the blobs of the interrupted run are shared, not stored again"
    );
    repo.verify(&m, true, &Progress::none()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_rewritten_during_the_backup_is_never_stored_torn() {
    let source = SeaweedFs::start().await.unwrap();
    let data = bucket(&source, "busy").await;
    let version = |v: u8| Obj {
        body: vec![v; 6 << 20],
        content_type: "application/octet-stream".into(),
        meta: BTreeMap::new(),
    };
    // A small object, read in one answer with its metadata: each version has its own content
    // type and user metadata, which must come with the same version's bytes.
    let small = |v: u8| Obj {
        body: vec![v; 64 << 10],
        content_type: format!("text/v{v}"),
        meta: BTreeMap::from([("version".to_owned(), v.to_string())]),
    };
    put(&data, "hot", &version(0)).await;
    put(&data, "cold", &version(200)).await;
    put(&data, "warm", &small(0)).await;
    let shas: BTreeSet<String> = (0..=30u8)
        .map(|v| zdr_core::sha256_hex(&version(v).body))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_owned(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier, PipelineOptions::default());
    let s3 = S3BucketComponent::new(
        Component::new("busy").unwrap(),
        settings(&source, &["busy"]),
    )
    .unwrap();
    let writer = {
        let data = data.clone();
        tokio::spawn(async move {
            for v in 1..=30u8 {
                put(&data, "hot", &version(v)).await;
                for w in 0..4u8 {
                    put(&data, "warm", &small(v * 4 + w)).await;
                }
            }
        })
    };
    let m = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    writer.await.unwrap();
    let unstable = m.facts["unstable"].as_array().unwrap();
    let restored_into = "busy-restored";
    repo.restore(
        &s3.restore_with(RestoreOptions {
            to_bucket: Some(restored_into.into()),
            ..RestoreOptions::default()
        }),
        &m,
        &RestoreTarget::default(),
        &Progress::none(),
    )
    .await
    .unwrap();
    let back = all_objects(&op(&source, restored_into)).await;
    assert_eq!(back["cold"], version(200));
    match back.get("warm") {
        Some(warm) => assert_eq!(
            warm,
            &small(warm.body[0]),
            "bytes, content type and metadata of one version"
        ),
        None => assert!(
            unstable.iter().any(|u| u.as_str() == Some("busy/warm")),
            "{m:?}"
        ),
    }
    match back.get("hot") {
        Some(hot) => {
            assert!(
                shas.contains(&zdr_core::sha256_hex(&hot.body)),
                "the copy is one whole version"
            );
            assert!(!unstable.iter().any(|u| u.as_str() == Some("busy/hot")));
        }
        None => assert!(
            unstable.iter().any(|u| u.as_str() == Some("busy/hot")),
            "{m:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_credentials_a_missing_bucket_and_a_dead_endpoint_are_named_and_write_no_backup() {
    let mut source = SeaweedFs::start().await.unwrap();
    bucket(&source, "present").await;
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_owned(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier.clone(), PipelineOptions::default());
    let component = Component::new("objects").unwrap();

    let mut wrong = settings(&source, &["present"]);
    wrong.secret_access_key = Some("not-the-secret".into());
    let err = repo
        .backup(
            &S3BucketComponent::new(component.clone(), wrong).unwrap(),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.context_value("bucket"), Some("present"), "{err}");
    assert!(!err.to_string().contains("not-the-secret"));

    let err = repo
        .backup(
            &S3BucketComponent::new(component.clone(), settings(&source, &["present", "absent"]))
                .unwrap(),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.context_value("bucket"), Some("absent"), "{err}");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // A server that accepts connections and never answers: a temporary error within the
    // stall timeout, naming the bucket.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming() {
            held.push(s);
        }
    });
    let mut stalled = settings(&source, &["present"]);
    stalled.endpoint = Some(hole_url);
    stalled.stall_timeout_secs = Some(1);
    let started = std::time::Instant::now();
    let err = repo
        .backup(
            &S3BucketComponent::new(component.clone(), stalled).unwrap(),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.context_value("bucket"), Some("present"), "{err}");
    assert!(err.is_temporary(), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));

    source.kill();
    let err = repo
        .backup(
            &S3BucketComponent::new(component.clone(), settings(&source, &["present"])).unwrap(),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.context_value("bucket"), Some("present"), "{err}");
    assert!(repo.catalog().await.unwrap().list(None).is_empty());
    assert!(tier.list("objects/").await.unwrap().is_empty());
}

#[test]
fn restorer_reads_each_artifact_once() {
    let s3 = S3BucketComponent::new(
        Component::new("objects").unwrap(),
        S3BucketSettings {
            buckets: vec!["uploads".into()],
            ..S3BucketSettings::default()
        },
    )
    .unwrap();
    assert!(Restorer::verifies_while_reading(&s3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_restores_into_scratch_buckets_compares_and_removes_them() {
    let source = SeaweedFs::start().await.unwrap();
    let data = bucket(&source, "data").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut live = BTreeMap::new();
    for i in 0..20 {
        let obj = object(&mut rng, i + 3);
        put(&data, &format!("d/{i:02}"), &obj).await;
        live.insert(format!("d/{i:02}"), obj);
    }
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_owned(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier, PipelineOptions::default());
    // An empty bucket beside it: nothing to restore there, and no failure.
    bucket(&source, "empty").await;
    let s3 = S3BucketComponent::new(
        Component::new("data").unwrap(),
        settings(&source, &["data", "empty"]),
    )
    .unwrap();
    let m = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    assert_eq!(m.facts["buckets"]["empty"]["objects"], 0);
    let scratch = format!(
        "zdr-scratch-{}-data",
        m.id.to_string().replace('_', "-").to_ascii_lowercase()
    );
    let drill = RestoreOptions {
        scratch: true,
        ..RestoreOptions::default()
    };
    let out = repo
        .restore(
            &s3.restore_with(drill.clone()),
            &m,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.items, 20);
    assert_eq!(out.target, scratch);
    let gone = op(&source, &scratch).list("").await.unwrap_err();
    assert!(gone.to_string().contains("NoSuchBucket"), "{gone}");
    assert_eq!(
        all_objects(&data).await,
        live,
        "the live bucket is untouched"
    );

    // Facts that the restored data does not match: the drill fails with the comparison,
    // and the scratch bucket is still removed.
    let mut wrong = m.clone();
    wrong.facts["buckets"]["data"]["digest"] = serde_json::json!("0".repeat(64));
    let err = repo
        .restore(
            &s3.restore_with(drill),
            &wrong,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(!err.verify_report().unwrap().is_ok());
    assert!(op(&source, &scratch).list("").await.is_err());
    assert_eq!(all_objects(&data).await, live);
}

/// A missing bucket created for a tier outside `us-east-1` is sent with its location
/// constraint, a body the signature covers: the real server takes the signed body and the
/// bucket is there to write to; creating it again is no error.
#[tokio::test]
async fn a_bucket_outside_us_east_1_is_created_with_its_signed_location_constraint() {
    let s = SeaweedFs::start().await.unwrap();
    let mut c = s3_config(&s, "eu-bucket");
    c.region = Some("eu-central-1".into());
    assert!(zdr_storage::ensure_bucket("test", &c).await.unwrap());
    assert!(!zdr_storage::ensure_bucket("test", &c).await.unwrap());
    let o = op(&s, "eu-bucket");
    o.write("k", b"v".to_vec()).await.unwrap();
    assert_eq!(o.read("k").await.unwrap().to_vec(), b"v");
}

/// The keys of `o` as a recursive listing gives them, directory markers (keys ending in `/`)
/// included.
async fn listed_keys(o: &opendal::Operator) -> Vec<String> {
    o.list_with("")
        .recursive(true)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path().to_owned())
        .filter(|p| p != "/")
        .collect()
}

/// Directory markers (the empty "folders" consoles make, stored as keys ending in `/`) are
/// objects of the bucket like any other: backed up, referenced unchanged by the next backup,
/// restored into another bucket — and a folder that only exists as a prefix stays one.
#[tokio::test]
async fn directory_markers_are_backed_up_and_restored() {
    let source = SeaweedFs::start().await.unwrap();
    let data = bucket(&source, "media").await;
    data.create_dir("photos/").await.unwrap();
    data.create_dir("inbox/empty/").await.unwrap();
    let obj = Obj {
        body: b"jpeg".to_vec(),
        content_type: "image/jpeg".into(),
        meta: BTreeMap::new(),
    };
    put(&data, "photos/a.jpg", &obj).await;
    put(&data, "docs/x/y.txt", &obj).await;
    let live = listed_keys(&data).await;
    assert_eq!(
        live,
        ["docs/x/y.txt", "inbox/empty/", "photos/", "photos/a.jpg"],
        "the server keeps markers as keys and makes none for a prefix"
    );
    let dir = tempfile::tempdir().unwrap();
    let tier = open_tier(
        "local",
        &TierConfig::Fs {
            root: dir.path().to_owned(),
        },
    )
    .unwrap();
    let repo = Repository::new(tier, PipelineOptions::default());
    let s3 = S3BucketComponent::new(
        Component::new("media").unwrap(),
        settings(&source, &["media"]),
    )
    .unwrap();
    let first = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    assert_eq!(first.facts["objects"], 4, "{}", first.facts);
    assert_eq!(first.facts["skipped_keys"], serde_json::json!([]));
    let report = Verifier::verify(&s3, &first, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    repo.verify(&first, true, &Progress::none()).await.unwrap();
    // Unchanged, the markers are referenced, not looked up again.
    let second = repo.backup(&s3, "daily", &Progress::none()).await.unwrap();
    assert_eq!(second.facts["reused_objects"], 4, "{}", second.facts);

    // A lost marker is a difference the live comparison sees.
    data.delete("inbox/empty/").await.unwrap();
    let report = Verifier::verify(&s3, &first, &RestoreTarget::default())
        .await
        .unwrap();
    assert!(!report.is_ok(), "a lost marker went unnoticed");

    // Into another bucket: the same keys, markers included and empty, nothing more.
    let out = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                to_bucket: Some("media-copy".into()),
                ..RestoreOptions::default()
            }),
            &first,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.items, 4);
    let copy = op(&source, "media-copy");
    assert_eq!(listed_keys(&copy).await, live);
    assert_eq!(read(&copy, "photos/a.jpg").await.unwrap().body, b"jpeg");
    let report = Verifier::verify(
        &s3,
        &first,
        &RestoreTarget {
            name: Some("media-copy".into()),
            ..RestoreTarget::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report:?}");
    // Restored again: every key, markers included, is identical and left alone.
    let again = repo
        .restore(
            &s3.restore_with(RestoreOptions {
                to_bucket: Some("media-copy".into()),
                ..RestoreOptions::default()
            }),
            &first,
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .unwrap();
    assert_eq!(again.items, 0, "{:?}", again.notes);
}
