//! Failures of a real S3 server (SeaweedFS) during backup and replication.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::await_holding_lock,
    missing_docs
)]

use std::sync::{Arc, Mutex};

use zdr_core::{Catalog, Compression, ErrorKind, Level, Progress, RecordingSink};
use zdr_storage::{AgeKeys, PipelineOptions, Repository, RetryPolicy, TierConfig, open_tier};
use zdr_tests::fixtures::{Kind, TestSource, TierFixture, data, s3_config};
use zdr_tests::seaweed::SeaweedFs;

/// The S3 server is killed mid-upload: a clear storage error naming the tier and key, no
/// manifest, and a re-run succeeds once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_killed_mid_upload() {
    let s3 = Arc::new(Mutex::new(SeaweedFs::start().await.unwrap()));
    let config = TierConfig::S3(s3_config(&s3.lock().unwrap()));
    let tier = open_tier("minio", &config).unwrap();
    let repo = Repository::new(
        tier.clone(),
        PipelineOptions {
            compression: Compression::None,
            keys: AgeKeys::none(),
            ..Default::default()
        },
    );
    let mut src = TestSource::new("postgres", vec![("dump", data(48 << 20, 9))]);
    let killer = s3.clone();
    src.hook = Some((20 << 20, Box::new(move || killer.lock().unwrap().kill())));
    let e = repo
        .backup(&src, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage, "{e}");
    assert_eq!(e.context_value("tier"), Some("minio"), "{e}");
    assert!(
        e.context_value("key")
            .is_some_and(|k| k.starts_with("postgres/daily/dump_")),
        "{e}"
    );
    assert_eq!(e.context_value("component"), Some("postgres"));

    {
        #[allow(clippy::await_holding_lock)]
        let mut server = s3.lock().unwrap();
        server.restart().await.unwrap();
    }
    let cat = Catalog::load(tier.as_ref()).await.unwrap();
    assert!(
        cat.list(None).is_empty(),
        "a manifest survived the failed backup"
    );
    let mut src = TestSource::new("postgres", vec![("dump", data(48 << 20, 9))]);
    src.hook = None;
    let m = repo.backup(&src, "daily", &Progress::none()).await.unwrap();
    repo.verify(&m, true, &Progress::none()).await.unwrap();
}

/// local → S3 → OneDrive (double): every copy read back and checked; a second run copies
/// nothing; the offsite tier alone restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_local_s3_onedrive() {
    let local = TierFixture::new(Kind::Fs).await;
    let s3 = TierFixture::new(Kind::S3).await;
    let offsite = TierFixture::new(Kind::OneDrive).await;
    let repo = Repository::new(local.tier.clone(), PipelineOptions::default());
    let a = repo
        .backup(
            &TestSource::new("configs", vec![("tree", data(3 << 20, 1))]),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let b = repo
        .backup(
            &TestSource::new(
                "redis",
                vec![("rdb", data(1 << 20, 2)), ("aof", data(1000, 3))],
            ),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let sink = Arc::new(RecordingSink::default());
    let progress = Progress::new(sink.clone());
    let r1 = zdr_storage::replicate(&local.tier, &s3.tier, &RetryPolicy::default(), &progress)
        .await
        .unwrap();
    assert_eq!(r1.copied.len(), 2);
    assert!(r1.failed.is_empty(), "{:?}", r1.failed);
    let r2 = zdr_storage::replicate(&s3.tier, &offsite.tier, &RetryPolicy::default(), &progress)
        .await
        .unwrap();
    assert_eq!(r2.copied.len(), 2, "{:?}", r2.failed);
    let again = zdr_storage::replicate(&local.tier, &s3.tier, &RetryPolicy::default(), &progress)
        .await
        .unwrap();
    assert_eq!((again.copied.len(), again.already_present), (0, 2));
    // The offsite tier alone: catalog, verification, byte-exact read.
    let off = Repository::new(offsite.tier.clone(), PipelineOptions::default());
    let cat = off.catalog().await.unwrap();
    assert_eq!(cat.list(None).len(), 2);
    for m in [&a, &b] {
        let got = cat.get(&m.id).unwrap();
        assert_eq!(got, m);
        off.verify(got, true, &Progress::none()).await.unwrap();
    }
    assert!(
        sink.messages(Level::Warn).is_empty(),
        "{:?}",
        sink.messages(Level::Warn)
    );
}

/// A corrupt source copy is never replicated; the destination gets no manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_source_is_not_replicated() {
    let local = TierFixture::new(Kind::Fs).await;
    let dest = TierFixture::new(Kind::Memory).await;
    let repo = Repository::new(local.tier.clone(), PipelineOptions::default());
    let m = repo
        .backup(
            &TestSource::new("configs", vec![("tree", data(1 << 20, 1))]),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let key = &m.artifacts[0].key;
    let mut bytes = local.tier.read_all(key).await.unwrap();
    bytes[10] ^= 0x80;
    local.tier.write_all(key, bytes).await.unwrap();
    let r = zdr_storage::replicate(
        &local.tier,
        &dest.tier,
        &RetryPolicy::none(),
        &Progress::none(),
    )
    .await
    .unwrap();
    assert_eq!(r.failed.len(), 1);
    assert_eq!(r.failed[0].1.kind(), ErrorKind::Integrity);
    assert_eq!(r.failed[0].1.context_value("tier"), Some("fs"));
    assert!(
        Catalog::load(dest.tier.as_ref())
            .await
            .unwrap()
            .list(None)
            .is_empty()
    );
}

/// The destination S3 server is down during replication: the retries are logged, the error
/// names the tier and key, and the other backups are not tried against the dead tier (one
/// backup's retries, not one per backup); after the server returns, a re-run copies
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_retries_are_logged_and_rerun_succeeds() {
    let local = TierFixture::new(Kind::Fs).await;
    let mut s3 = TierFixture::new(Kind::S3).await;
    let repo = Repository::new(local.tier.clone(), PipelineOptions::default());
    for seed in 1..=4 {
        repo.backup(
            &TestSource::new("configs", vec![("tree", data(1 << 20, seed))]),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    }
    s3.s3.as_mut().unwrap().kill();
    let sink = Arc::new(RecordingSink::default());
    let policy = RetryPolicy {
        attempts: 3,
        base_delay: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let r = zdr_storage::replicate(&local.tier, &s3.tier, &policy, &Progress::new(sink.clone()))
        .await
        .unwrap();
    assert_eq!(r.failed.len(), 4);
    let e = &r.failed[0].1;
    assert_eq!(e.context_value("tier"), Some("s3"), "{e}");
    for (_, e) in &r.failed[1..] {
        assert!(e.to_string().contains("not tried"), "{e}");
        assert_eq!(e.context_value("tier"), Some("s3"), "{e}");
    }
    let warns = sink.messages(Level::Warn);
    assert_eq!(
        warns.len(),
        2,
        "only the first backup was retried: {warns:?}"
    );
    assert!(
        warns[0].contains("attempt 1/3 failed, retrying"),
        "{warns:?}"
    );
    s3.s3.as_mut().unwrap().restart().await.unwrap();
    let r = zdr_storage::replicate(&local.tier, &s3.tier, &policy, &Progress::none())
        .await
        .unwrap();
    assert_eq!((r.copied.len(), r.failed.len()), (4, 0), "{:?}", r.failed);
}
