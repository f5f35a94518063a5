//! One behaviour suite for every storage tier, as OpenDAL does for its services: the same
//! cases run on the local filesystem, a real S3 server (SeaweedFS, started per test), the
//! OneDrive Graph-API **double**, and memory.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use tokio::io::AsyncReadExt;
use zdr_core::{
    BackupSelector, Catalog, Compression, ErrorKind, Progress, RestoreTarget, StorageTier,
};
use zdr_storage::{AgeKeys, PipelineOptions, Repository};
use zdr_tests::fixtures::{BlobContents, Kind, TestSource, TierFixture, data};

fn options(compression: Compression, keys: AgeKeys) -> PipelineOptions {
    PipelineOptions {
        compression,
        keys,
        ..PipelineOptions::default()
    }
}

async fn read_all(
    repo: &Repository,
    m: &zdr_core::Manifest,
    i: usize,
) -> zdr_core::Result<Vec<u8>> {
    let mut out = Vec::new();
    repo.open(&m.artifacts[i], Progress::none())?
        .read_to_end(&mut out)
        .await
        .map_err(|e| zdr_core::Error::from_io(e, "read"))?;
    Ok(out)
}

/// Every compression × (plaintext, age recipients), plus a passphrase, round trips byte-exact,
/// is listed by the catalog, and passes a deep verification.
async fn roundtrip(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let (secret, public) = AgeKeys::generate_identity();
    let keyed = AgeKeys::none()
        .with_recipients(&[public])
        .unwrap()
        .with_identities_text(&secret, "test")
        .unwrap();
    let big = data(3 << 20, 7);
    let small = b"tiny artifact\n".to_vec();
    let mut combos: Vec<(Compression, AgeKeys)> = Vec::new();
    for c in Compression::ALL {
        combos.push((c, AgeKeys::none()));
        combos.push((c, keyed.clone()));
    }
    combos.push((
        Compression::Zstd,
        AgeKeys::none().with_passphrase("correct horse".into()),
    ));
    for (c, keys) in combos {
        let encrypted = keys.encrypts();
        let repo = Repository::new(fx.tier.clone(), options(c, keys));
        let src = TestSource::new(
            "app",
            vec![
                ("big", big.clone()),
                ("small", small.clone()),
                ("empty", vec![]),
            ],
        );
        let m = repo.backup(&src, "daily", &Progress::none()).await.unwrap();
        let label = format!("{kind:?} {c} encrypted={encrypted}");
        assert!(
            m.artifacts[0].key.ends_with(&format!(
                ".bin{}{}",
                c.suffix(),
                if encrypted { ".age" } else { "" }
            )),
            "{label}"
        );
        assert_eq!(read_all(&repo, &m, 0).await.unwrap(), big, "{label}");
        assert_eq!(read_all(&repo, &m, 1).await.unwrap(), small, "{label}");
        assert_eq!(
            read_all(&repo, &m, 2).await.unwrap(),
            Vec::<u8>::new(),
            "{label}"
        );
        assert_eq!(m.artifacts[0].raw_size, big.len() as u64);
        let cat = repo.catalog().await.unwrap();
        assert!(cat.problems().is_empty(), "{label}: {:?}", cat.problems());
        assert_eq!(
            cat.latest(&m.component).map(|l| &l.id),
            Some(&m.id),
            "{label}"
        );
        repo.verify(&m, true, &Progress::none()).await.unwrap();
        // The sidecar on the tier is in `sha256sum -c` format.
        let sidecar = fx
            .tier
            .read_all(&format!("{}.sha256", m.artifacts[0].key))
            .await
            .unwrap();
        let file = m.artifacts[0].key.rsplit('/').next().unwrap();
        assert_eq!(
            String::from_utf8(sidecar).unwrap(),
            format!("{}  {file}\n", m.artifacts[0].sha256)
        );
    }
    let cat = Catalog::load(fx.tier.as_ref()).await.unwrap();
    assert_eq!(cat.list(None).len(), 9);
}

/// A flipped byte is caught by `verify`, by reading, and by `restore` before anything is written.
async fn flipped_byte(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let repo = Repository::new(fx.tier.clone(), options(Compression::Zstd, AgeKeys::none()));
    let live = fx.dir.path().join("live");
    std::fs::create_dir_all(live.join("sub")).unwrap();
    std::fs::write(live.join("a.conf"), data(300_000, 3)).unwrap();
    std::fs::write(live.join("sub/b.conf"), b"b = 1\n").unwrap();
    let files =
        zdr_files::FilesComponent::new(zdr_core::Component::new("configs").unwrap(), live.clone());
    let m = repo
        .backup(&files, "daily", &Progress::none())
        .await
        .unwrap();
    let key = m.artifacts[0].key.clone();
    let mut bytes = fx.tier.read_all(&key).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fx.tier.write_all(&key, bytes).await.unwrap();

    let e = repo.verify(&m, false, &Progress::none()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert_eq!(e.context_value("key"), Some(key.as_str()));
    assert_eq!(e.context_value("tier"), Some(fx.tier.name()));
    assert!(e.to_string().contains("checksum mismatch"), "{e}");

    let e = read_all(&repo, &m, 0).await.unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Integrity), "{e}");

    let target = fx.dir.path().join("restore-here");
    let e = repo
        .restore(
            &files,
            &m,
            &RestoreTarget {
                path: Some(target.clone()),
                ..Default::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        !target.exists(),
        "restore wrote into the target before checking"
    );
    // Nothing beside the target either (no staging directory left).
    let leftovers: Vec<_> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".zdr")),
        "{leftovers:?}"
    );
}

/// A truncated artifact is reported as truncated by verify and fails reading.
async fn truncated(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let repo = Repository::new(fx.tier.clone(), options(Compression::Lz4, AgeKeys::none()));
    let src = TestSource::new("app", vec![("big", data(2 << 20, 11))]);
    let m = repo.backup(&src, "daily", &Progress::none()).await.unwrap();
    let key = m.artifacts[0].key.clone();
    let bytes = fx.tier.read_all(&key).await.unwrap();
    fx.tier
        .write_all(&key, bytes[..bytes.len() - 1000].to_vec())
        .await
        .unwrap();
    let e = repo.verify(&m, false, &Progress::none()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = read_all(&repo, &m, 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
}

/// Reading with the wrong age key is a Decrypt error naming the key; no key at all too.
async fn wrong_key(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let (_, public_a) = AgeKeys::generate_identity();
    let (secret_b, _) = AgeKeys::generate_identity();
    let writer = Repository::new(
        fx.tier.clone(),
        options(
            Compression::Zstd,
            AgeKeys::none().with_recipients(&[public_a]).unwrap(),
        ),
    );
    let src = TestSource::new("vault", vec![("secrets", data(100_000, 5))]);
    let m = writer
        .backup(&src, "daily", &Progress::none())
        .await
        .unwrap();
    let wrong = Repository::new(
        fx.tier.clone(),
        options(
            Compression::Zstd,
            AgeKeys::none()
                .with_identities_text(&secret_b, "b")
                .unwrap(),
        ),
    );
    let e = read_all(&wrong, &m, 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
    assert!(e.to_string().contains("wrong key"), "{e}");
    assert_eq!(e.context_value("key"), Some(m.artifacts[0].key.as_str()));
    let e = read_all(&writer, &m, 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decrypt, "{e}");
    // Hash verification does not need the key and still passes.
    wrong.verify(&m, false, &Progress::none()).await.unwrap();
}

/// A backup whose source fails halfway leaves no manifest and no artifact; a re-run works.
async fn failed_source(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let repo = Repository::new(fx.tier.clone(), options(Compression::Gzip, AgeKeys::none()));
    let mut src = TestSource::new("app", vec![("big", data(4 << 20, 1))]);
    src.fail_after = Some(2 << 20);
    let e = repo
        .backup(&src, "daily", &Progress::none())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Source, "{e}");
    assert_eq!(e.context_value("component"), Some("app"));
    let cat = repo.catalog().await.unwrap();
    assert!(cat.list(None).is_empty());
    let left = fx.tier.list("app/").await.unwrap();
    assert!(left.is_empty(), "partial artifacts left: {left:?}");
    src.fail_after = None;
    let m = repo.backup(&src, "daily", &Progress::none()).await.unwrap();
    let cat = repo.catalog().await.unwrap();
    assert_eq!(
        cat.select(&m.component, &BackupSelector::Latest)
            .unwrap()
            .id,
        m.id
    );
}

/// A range of an object reads exactly those bytes; small blobs stored in packs read back
/// whole through their slices, verify deep, and a second backup shares them.
async fn packed_blobs(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let bytes = data(300_000, 5);
    fx.tier
        .write_all("ranges/object", bytes.clone())
        .await
        .unwrap();
    for (offset, len) in [(0, 10), (12_345, 50_000), (299_990, 10), (150_000, 150_000)] {
        let mut got = Vec::new();
        fx.tier
            .reader_range("ranges/object", offset, len)
            .await
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        let (o, l) = (offset as usize, len as usize);
        assert_eq!(got, bytes[o..o + l], "{offset}+{len}");
    }
    let repo = Repository::new(
        fx.tier.clone(),
        PipelineOptions {
            blob_pack_size: 32 << 10,
            ..options(Compression::Zstd, AgeKeys::none())
        },
    );
    let contents: Vec<Vec<u8>> = (0..30u64)
        .map(|i| data(2_000 + (i as usize * 997) % 9_000, i * 2))
        .collect();
    let m = repo
        .backup(
            &BlobContents::new(contents.clone()),
            "daily",
            &Progress::none(),
        )
        .await
        .unwrap();
    let mut list = zdr_storage::BlobList::open(fx.tier.clone(), &m, &AgeKeys::none())
        .unwrap()
        .unwrap();
    let mut packs = std::collections::BTreeSet::new();
    for c in &contents {
        let r = list.next().await.unwrap().unwrap();
        assert!(r.offset.is_some(), "{r:?}");
        packs.insert(r.key.clone());
        let mut got = Vec::new();
        repo.open(&r, Progress::none())
            .unwrap()
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(&got, c);
    }
    assert!(packs.len() > 1, "{packs:?}");
    repo.verify(&m, true, &Progress::none()).await.unwrap();
    let again = repo
        .backup(&BlobContents::new(contents), "daily", &Progress::none())
        .await
        .unwrap();
    assert_eq!(again.facts["stored"], 0);
}

macro_rules! suite {
    ($($case:ident),*) => {
        mod fs { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Kind::Fs).await } )* }
        mod s3 { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Kind::S3).await } )* }
        mod onedrive { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Kind::OneDrive).await } )* }
        mod memory { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::Kind::Memory).await } )* }
    };
}

/// Several backups deleted at once (`Repository::delete_backups`, a batch of manifests and
/// then one of their files): the others and their files untouched, and the same deletion
/// again (every key missing now) succeeds.
async fn delete_backups(kind: Kind) {
    let fx = TierFixture::new(kind).await;
    let repo = Repository::new(fx.tier.clone(), options(Compression::Zstd, AgeKeys::none()));
    let mut made = Vec::new();
    for i in 0..3u8 {
        let src = TestSource::new(
            "db",
            vec![
                ("dump", data(1000 + usize::from(i), u64::from(i))),
                ("globals", data(10, 1)),
            ],
        );
        made.push(repo.backup(&src, "daily", &Progress::none()).await.unwrap());
    }
    repo.delete_backups(&[&made[0], &made[2]]).await.unwrap();
    let cat = Catalog::load(fx.tier.as_ref()).await.unwrap();
    let ids: Vec<_> = cat.list(None).iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![made[1].id.clone()]);
    let left: Vec<String> = fx
        .tier
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .filter(|k| !k.starts_with('.'))
        .collect();
    // The kept backup's manifest, two artifacts, and their sidecars: nothing else.
    assert_eq!(left.len(), 6, "{left:?}");
    let kept = made[1].id.to_string();
    assert!(left.iter().all(|k| k.contains(&kept)), "{left:?}");
    repo.delete_backups(&[&made[0], &made[2]]).await.unwrap();
    fx.tier.delete_many(&[]).await.unwrap();
}

suite!(
    roundtrip,
    flipped_byte,
    truncated,
    wrong_key,
    failed_source,
    delete_backups,
    packed_blobs
);

/// A batch delete on S3 aborts the unfinished multipart uploads of its keys (what a killed
/// write of them left), and leaves an upload of another key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_batch_delete_aborts_the_unfinished_uploads_of_its_keys_only() {
    let fx = TierFixture::new(Kind::S3).await;
    let s3 = fx.s3.as_ref().unwrap();
    let zdr_storage::TierConfig::S3(cfg) = &fx.config else {
        unreachable!()
    };
    // Two multipart uploads started by a plain S3 client (curl, SigV4) and never finished.
    for key in ["db/daily/a_x.zst", "db/daily/keep_y.zst"] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "-X",
                "POST",
                "--aws-sigv4",
                &format!("aws:amz:{}:s3", s3.region()),
                "--user",
                &format!("{}:{}", s3.access_key_id(), s3.secret_access_key()),
                &format!("{}/{}/zdr/{key}?uploads=", s3.endpoint(), s3.bucket()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fx.tier
        .write_all("db/daily/a_x.zst", b"x".to_vec())
        .await
        .unwrap();
    fx.tier
        .write_all("db/daily/b_x.zst", b"y".to_vec())
        .await
        .unwrap();
    assert_eq!(
        zdr_storage::unfinished_uploads("s3", cfg)
            .await
            .unwrap()
            .len(),
        2
    );
    fx.tier
        .delete_many(&[
            "db/daily/a_x.zst".to_owned(),
            "db/daily/b_x.zst".to_owned(),
            "db/daily/missing_z.zst".to_owned(),
        ])
        .await
        .unwrap();
    let left = zdr_storage::unfinished_uploads("s3", cfg).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].key.ends_with("db/daily/keep_y.zst"), "{left:?}");
    for key in ["db/daily/a_x.zst", "db/daily/b_x.zst"] {
        assert!(fx.tier.stat(key).await.unwrap().is_none(), "{key}");
    }
}

#[allow(dead_code)]
fn _uses(_: Arc<dyn StorageTier>) {}
