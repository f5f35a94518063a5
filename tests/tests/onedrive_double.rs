//! The OneDrive tier's OpenDAL operator against the local Graph API double
//! ([`zdr_tests::graph_double`]): uploads (simple and upload session), reads, listing with
//! paging, stat, delete, and the refresh-token flow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use opendal::ErrorKind;
use zdr_storage::onedrive::{OneDriveConfig, operator};
use zdr_tests::graph_double::{self, GraphDouble};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Deterministic bytes that differ at every offset of a page.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

const LARGE: usize = 10 * 1024 * 1024 + 12_345;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_list_stat_delete() -> TestResult {
    let double = GraphDouble::start().await;
    double.set_page_size(2);
    let op = operator(&double.config("zdr"))?;

    let small = b"hello, onedrive".to_vec();
    let large = pattern(LARGE);
    op.write("backups/daily/small.txt", small.clone()).await?;
    op.write("backups/daily/large.bin", large.clone()).await?;
    for i in 0..5u8 {
        op.write(&format!("backups/many/f{i}.txt"), vec![i; 10])
            .await?;
    }

    // The small object went up in one PUT, the large one through an upload session.
    let calls = double.calls();
    assert!(
        calls.contains(&"PUT /v1.0/me/drive/root:/zdr/backups/daily/small.txt:/content".to_owned())
    );
    assert!(calls.contains(
        &"POST /v1.0/me/drive/root:/zdr/backups/daily/large.bin:/createUploadSession".to_owned()
    ));
    let fragments = calls
        .iter()
        .filter(|c| c.starts_with("PUT /upload/"))
        .count();
    assert!(fragments >= 3, "{fragments} fragments");

    // Byte-exact, through the API and in the double's drive.
    assert_eq!(op.read("backups/daily/small.txt").await?.to_vec(), small);
    assert_eq!(op.read("backups/daily/large.bin").await?.to_vec(), large);
    assert_eq!(
        double.file("zdr/backups/daily/large.bin"),
        Some(large.clone())
    );
    assert_eq!(
        double.file("ZDR/Backups/daily/small.txt"),
        Some(small.clone())
    );

    // Ranged, concurrent reads (as the tier reads) follow the download redirect.
    let reader = op
        .reader_with("backups/daily/large.bin")
        .chunk(4 << 20)
        .concurrent(2)
        .await?;
    let part = reader.read(1_000..9_000_000).await?.to_vec();
    assert_eq!(part, large[1_000..9_000_000]);
    let tail = op
        .read_with("backups/daily/large.bin")
        .range(LARGE as u64 - 10..)
        .await?;
    assert_eq!(tail.to_vec(), large[LARGE - 10..]);

    // Stat.
    let meta = op.stat("backups/daily/large.bin").await?;
    assert!(meta.is_file());
    assert_eq!(meta.content_length(), LARGE as u64);
    assert!(meta.etag().is_some());
    assert!(op.stat("backups/daily/").await?.is_dir());
    let missing = op.stat("backups/daily/nope.bin").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let missing = op.read("backups/nope.bin").await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    // Recursive listing, with `@odata.nextLink` paging (page size 2, 5 files in many/).
    let entries = op.list_with("backups/").recursive(true).await?;
    let files: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.metadata().is_file())
        .map(|e| e.path().to_owned())
        .collect();
    let mut expected: BTreeSet<String> = (0..5).map(|i| format!("backups/many/f{i}.txt")).collect();
    expected.insert("backups/daily/small.txt".into());
    expected.insert("backups/daily/large.bin".into());
    assert_eq!(files, expected);
    let many_pages = double
        .calls()
        .iter()
        .filter(|c| *c == "GET /v1.0/me/drive/root:/zdr/backups/many:/children")
        .count();
    assert!(many_pages >= 3, "{many_pages} pages");
    let top: BTreeSet<String> = op
        .list("backups/")
        .await?
        .iter()
        .map(|e| e.path().to_owned())
        .collect();
    let want: BTreeSet<String> = ["backups/", "backups/daily/", "backups/many/"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(top, want);
    assert!(op.list("nowhere/").await?.is_empty());

    // Delete (idempotent), and a recursive delete of a folder.
    op.delete("backups/daily/small.txt").await?;
    op.delete("backups/daily/small.txt").await?;
    assert_eq!(
        op.stat("backups/daily/small.txt").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(double.file("zdr/backups/daily/small.txt"), None);
    op.delete_with("backups/many/").recursive(true).await?;
    assert_eq!(double.file("zdr/backups/many/f0.txt"), None);
    assert_eq!(double.file("zdr/backups/daily/large.bin"), Some(large));

    // create_dir of a nested folder.
    op.create_dir("backups/weekly/").await?;
    assert!(op.stat("backups/weekly/").await?.is_dir());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_tokens_are_renewed() -> TestResult {
    let double = GraphDouble::start().await;
    let op = operator(&double.config("zdr"))?;
    assert_eq!(
        double.refresh_count(),
        0,
        "building the operator is offline"
    );

    op.write("a.txt", b"first".to_vec()).await?;
    assert_eq!(double.refresh_count(), 1);

    // Graph now rejects the token OpenDAL still considers valid.
    double.expire_access_tokens();
    assert_eq!(op.read("a.txt").await?.to_vec(), b"first");
    let after = double.refresh_count();
    assert!(after > 1, "refresh_count {after}");

    // The renewed token is used from then on, without more refreshes.
    op.write("b.txt", b"second".to_vec()).await?;
    assert_eq!(op.list("").await?.len(), 3);
    assert_eq!(double.refresh_count(), after);

    // Mid-run expiry during concurrent work, including an upload session.
    double.expire_access_tokens();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let op = op.clone();
        tasks.spawn(async move { op.read(if i % 2 == 0 { "a.txt" } else { "b.txt" }).await });
    }
    let big = pattern(5 * 1024 * 1024);
    op.write("big.bin", big.clone()).await?;
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    assert_eq!(double.file("zdr/big.bin"), Some(big));
    assert!(double.refresh_count() > after);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_clearly() -> TestResult {
    let double = GraphDouble::start().await;

    let mut cfg = double.config("zdr");
    cfg.refresh_token = Some("not-a-token-the-double-issued".into());
    let op = operator(&cfg)?;
    let err = op.write("x.txt", b"x".to_vec()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("RefreshAccessToken"), "{text}");
    assert!(!text.contains(graph_double::CLIENT_SECRET), "{text}");
    assert!(!err.is_temporary());
    assert_eq!(double.refresh_count(), 0);
    assert_eq!(double.file("zdr/x.txt"), None);

    let mut cfg = double.config("zdr");
    cfg.client_secret = Some("wrong-secret".into());
    let err = operator(&cfg)?.stat("x.txt").await.unwrap_err();
    assert!(err.to_string().contains("invalid_client"), "{err}");

    // A bare access token that Graph rejects: a 401 with Graph's error code.
    let cfg = OneDriveConfig {
        access_token: Some("stale-access-token".into()),
        graph_endpoint: Some(double.graph_endpoint()),
        ..OneDriveConfig::default()
    };
    let err = operator(&cfg)?.stat("x.txt").await.unwrap_err();
    assert!(
        err.to_string().contains("InvalidAuthenticationToken"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_remote_credentials_work() -> TestResult {
    let double = GraphDouble::start().await;
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("rclone.conf");
    std::fs::write(
        &conf,
        format!(
            "[zentoria-onedrive]\ntype = onedrive\nclient_id = {}\nclient_secret = {}\n\
             token = {{\"access_token\":\"old\",\"token_type\":\"Bearer\",\"refresh_token\":\"{}\",\"expiry\":\"2026-01-16T12:00:00Z\"}}\n\
             drive_id = {}\ndrive_type = personal\n",
            graph_double::CLIENT_ID,
            graph_double::CLIENT_SECRET,
            graph_double::REFRESH_TOKEN,
            graph_double::DRIVE_ID,
        ),
    )?;
    let cfg = OneDriveConfig {
        root: Some("zdr".into()),
        rclone_remote: Some("zentoria-onedrive".into()),
        rclone_config: Some(conf),
        graph_endpoint: Some(double.graph_endpoint()),
        token_endpoint: Some(double.token_endpoint()),
        ..Default::default()
    };
    let op = operator(&cfg)?;
    op.write("via-rclone.txt", b"ok".to_vec()).await?;
    assert_eq!(op.read("via-rclone.txt").await?.to_vec(), b"ok");
    assert_eq!(double.refresh_count(), 1);
    Ok(())
}

/// OpenDAL's OneDrive writer is one-shot: the whole object must arrive in one `write`.
/// A writer with `.chunk(n)` smaller than the object fails; one big write works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onedrive_writes_are_one_shot() -> TestResult {
    let double = GraphDouble::start().await;
    let op = operator(&double.config("zdr"))?;
    let data = pattern(LARGE);

    let mut w = op.writer_with("chunked.bin").chunk(8 << 20).await?;
    let result = async {
        w.write(data.clone()).await?;
        w.close().await
    }
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert_eq!(double.file("zdr/chunked.bin"), None);

    let mut w = op.writer("whole.bin").await?;
    w.write(data.clone()).await?;
    w.close().await?;
    assert_eq!(double.file("zdr/whole.bin"), Some(data));
    Ok(())
}

/// Graph answers the last fragment of a replacing upload session with `200 OK`; zdr's
/// transport makes OpenDAL accept it (OpenDAL alone panics in debug builds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_can_be_overwritten() -> TestResult {
    let double = GraphDouble::start().await;
    let op = operator(&double.config("zdr"))?;
    op.write("big.bin", pattern(LARGE)).await?;
    let replacement = pattern(LARGE + 1);
    let meta = op.write("big.bin", replacement.clone()).await?;
    assert_eq!(meta.content_length(), replacement.len() as u64);
    assert_eq!(op.read("big.bin").await?.to_vec(), replacement);
    assert_eq!(double.file("zdr/big.bin"), Some(replacement));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The OneDrive tier (`open_tier`): streaming writes through zdr's own upload sessions.
// ---------------------------------------------------------------------------------------

mod tier {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use zdr_core::{ErrorKind, StorageTier};
    use zdr_storage::onedrive::FRAGMENT_SIZE;
    use zdr_storage::{TierConfig, open_tier};
    use zdr_tests::graph_double::{self, FragmentFaults, GraphDouble};

    use super::{TestResult, pattern};

    const MIB: usize = 1024 * 1024;
    const FRAGMENT: usize = FRAGMENT_SIZE as usize;

    fn open(double: &GraphDouble, spool: &Path) -> Arc<dyn StorageTier> {
        let mut cfg = double.config("zdr");
        cfg.spool_dir = Some(spool.to_path_buf());
        open_tier("offsite", &TierConfig::Onedrive(cfg)).unwrap()
    }

    /// Write `data` through `StorageTier::writer` in 64 KiB writes, then `shutdown()`.
    async fn put(tier: &dyn StorageTier, key: &str, data: &[u8]) -> zdr_core::Result<()> {
        let mut w = tier.writer(key).await?;
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk)
                .await
                .map_err(|e| zdr_core::Error::from_io(e, "write"))?;
        }
        w.shutdown()
            .await
            .map_err(|e| zdr_core::Error::from_io(e, "shutdown"))
    }

    async fn get(tier: &dyn StorageTier, key: &str) -> Vec<u8> {
        let mut out = Vec::new();
        tier.reader(key)
            .await
            .unwrap()
            .read_to_end(&mut out)
            .await
            .unwrap();
        out
    }

    fn count(double: &GraphDouble, prefix: &str) -> usize {
        double
            .calls()
            .iter()
            .filter(|c| c.starts_with(prefix))
            .count()
    }

    /// Open file descriptors of this process that point into `dir` (Linux).
    fn open_fds_in(dir: &Path) -> usize {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_object_streams_in_bounded_fragments() -> TestResult {
        let double = GraphDouble::start().await;
        let spool = tempfile::tempdir()?;
        let tier = open(&double, spool.path());
        assert_eq!(tier.name(), "offsite");
        let data = pattern(40 * MIB);
        put(tier.as_ref(), "app/daily/big.bin", &data).await?;

        assert_eq!(
            double.file("zdr/app/daily/big.bin").as_deref(),
            Some(&data[..])
        );
        assert_eq!(get(tier.as_ref(), "app/daily/big.bin").await, data);
        let entry = tier.stat("app/daily/big.bin").await?.unwrap();
        assert_eq!(entry.size, data.len() as u64);
        assert_eq!(
            count(
                &double,
                "POST /v1.0/me/drive/root:/zdr/app/daily/big.bin:/createUploadSession"
            ),
            1
        );
        assert_eq!(count(&double, "PUT /upload/"), 4, "{:?}", double.calls());
        // One fragment at a time, never the whole object.
        let largest = double.max_request_body();
        assert!(largest <= FRAGMENT + 64 * 1024, "largest body {largest}");
        assert_eq!(double.open_upload_sessions(), 0);
        // The spool is gone.
        assert_eq!(std::fs::read_dir(spool.path())?.count(), 0);
        assert_eq!(open_fds_in(spool.path()), 0);

        // Replacing an existing object (Graph answers the last fragment 200) works, and
        // so does a revoked access token (renewed once on 401).
        double.expire_access_tokens();
        let before = double.refresh_count();
        let other = pattern(FRAGMENT + 1);
        put(tier.as_ref(), "app/daily/big.bin", &other).await?;
        assert_eq!(double.file("zdr/app/daily/big.bin"), Some(other.clone()));
        assert!(double.refresh_count() > before);
        assert_eq!(tier.read_all("app/daily/big.bin").await?, other);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sizes_at_the_edges() -> TestResult {
        let double = GraphDouble::start().await;
        let spool = tempfile::tempdir()?;
        let tier = open(&double, spool.path());
        let sizes = [
            0,
            1,
            4 * MIB - 1,
            4 * MIB,
            FRAGMENT - 1,
            FRAGMENT,
            FRAGMENT + 1,
            2 * FRAGMENT,
        ];
        for (i, size) in sizes.into_iter().enumerate() {
            let key = format!("edge/{i}.bin");
            let data = pattern(size);
            put(tier.as_ref(), &key, &data).await?;
            assert_eq!(
                double.file(&format!("zdr/{key}")),
                Some(data.clone()),
                "{size}"
            );
            assert_eq!(tier.read_all(&key).await?, data, "{size}");
            assert_eq!(
                tier.stat(&key).await?.map(|e| e.size),
                Some(size as u64),
                "{size}"
            );
        }
        // Below 4 MiB one simple PUT; from 4 MiB on an upload session.
        assert_eq!(count(&double, "PUT /v1.0/me/drive/root:/zdr/edge/"), 3);
        assert_eq!(count(&double, "POST /v1.0/me/drive/root:/zdr/edge/"), 5);
        assert_eq!(count(&double, "PUT /upload/"), 1 + 1 + 1 + 2 + 2);
        assert!(double.max_request_body() <= FRAGMENT);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_writer_leaves_nothing() -> TestResult {
        let double = GraphDouble::start().await;
        let spool = tempfile::tempdir()?;
        let tier = open(&double, spool.path());
        let data = pattern(12 * MIB);
        let mut w = tier.writer("app/daily/abandoned.bin").await?;
        for chunk in data.chunks(64 * 1024) {
            w.write_all(chunk).await?;
        }
        w.flush().await?;
        if cfg!(target_os = "linux") {
            assert_eq!(open_fds_in(spool.path()), 1, "the spool file is open");
        }
        drop(w);

        assert_eq!(tier.stat("app/daily/abandoned.bin").await?, None);
        assert_eq!(double.file("zdr/app/daily/abandoned.bin"), None);
        assert_eq!(count(&double, "POST /v1.0/"), 0, "{:?}", double.calls());
        assert_eq!(count(&double, "PUT "), 0);
        // The spool file: never named in the directory, and closed (so freed) after the
        // drop (a write in flight on a blocking thread may hold it for a moment).
        assert_eq!(std::fs::read_dir(spool.path())?.count(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while open_fds_in(spool.path()) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(open_fds_in(spool.path()), 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_fragments_are_retried() -> TestResult {
        let double = GraphDouble::start().await;
        let spool = tempfile::tempdir()?;
        let tier = open(&double, spool.path());
        let data = pattern(25 * MIB);

        // The second fragment fails with 503 twice, then goes through.
        double.fail_fragments(FragmentFaults {
            from_offset: FRAGMENT,
            ..FragmentFaults::new(2, 503)
        });
        put(tier.as_ref(), "retry/a.bin", &data).await?;
        assert_eq!(double.file("zdr/retry/a.bin"), Some(data.clone()));
        assert_eq!(count(&double, "PUT /upload/"), 3 + 2);
        // Before each retry the writer asked the session what it expects.
        assert_eq!(count(&double, "GET /upload/"), 2);

        // The answer to the second fragment is lost although it was stored: the writer
        // resumes where nextExpectedRanges says, without sending it again.
        double.fail_fragments(FragmentFaults {
            from_offset: FRAGMENT,
            apply: true,
            ..FragmentFaults::new(1, 503)
        });
        let before = count(&double, "PUT /upload/");
        put(tier.as_ref(), "retry/b.bin", &data).await?;
        assert_eq!(double.file("zdr/retry/b.bin"), Some(data.clone()));
        assert_eq!(count(&double, "PUT /upload/") - before, 3);

        // The answer to the last fragment is lost although the upload completed: the
        // session is gone, the item has the size, the upload counts as done.
        double.fail_fragments(FragmentFaults {
            from_offset: 2 * FRAGMENT,
            apply: true,
            ..FragmentFaults::new(1, 502)
        });
        put(tier.as_ref(), "retry/c.bin", &data).await?;
        assert_eq!(double.file("zdr/retry/c.bin"), Some(data.clone()));
        assert_eq!(
            count(&double, "GET /v1.0/me/drive/root:/zdr/retry/c.bin"),
            1,
            "the writer checked the stored item"
        );

        // 429 with Retry-After is honoured.
        double.fail_fragments(FragmentFaults {
            retry_after: Some(1),
            ..FragmentFaults::new(1, 429)
        });
        let started = Instant::now();
        put(tier.as_ref(), "retry/d.bin", &data).await?;
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(double.file("zdr/retry/d.bin"), Some(data));
        assert_eq!(double.open_upload_sessions(), 0);
        Ok(())
    }

    fn assert_names_tier_and_key(e: &zdr_core::Error, key: &str) {
        assert_eq!(e.kind(), ErrorKind::Storage, "{e}");
        assert_eq!(e.context_value("tier"), Some("offsite"), "{e}");
        assert_eq!(e.context_value("key"), Some(key), "{e}");
        let text = format!("{e} {e:?}");
        assert!(!text.contains("/upload/"), "upload URL leaked: {text}");
        assert!(!text.contains("tempauth"), "{text}");
        assert!(!text.contains(graph_double::CLIENT_SECRET), "{text}");
        assert!(!text.contains(graph_double::REFRESH_TOKEN), "{text}");
        assert!(!text.contains("dbl-at-"), "access token leaked: {text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanent_failures_name_tier_and_key() -> TestResult {
        let double = GraphDouble::start().await;
        let spool = tempfile::tempdir()?;
        let tier = open(&double, spool.path());
        let data = pattern(15 * MIB);

        // The double refuses the upload session.
        double.reject_upload_sessions(Some(403));
        let e = put(tier.as_ref(), "fail/denied.bin", &data)
            .await
            .unwrap_err();
        assert_names_tier_and_key(&e, "fail/denied.bin");
        assert!(e.to_string().contains("accessDenied"), "{e}");
        assert!(!e.is_temporary(), "{e}");
        double.reject_upload_sessions(Some(507));
        let e = put(tier.as_ref(), "fail/full.bin", &data)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("quotaLimitReached"), "{e}");
        assert!(!e.is_temporary(), "{e}");
        double.reject_upload_sessions(None);
        assert_eq!(count(&double, "PUT /upload/"), 0);

        // A fragment rejected for good: the session is cancelled.
        double.fail_fragments(FragmentFaults {
            from_offset: FRAGMENT,
            ..FragmentFaults::new(1, 400)
        });
        let e = put(tier.as_ref(), "fail/rejected.bin", &data)
            .await
            .unwrap_err();
        assert_names_tier_and_key(&e, "fail/rejected.bin");
        assert!(!e.is_temporary(), "{e}");
        assert_eq!(count(&double, "DELETE /upload/"), 1);
        assert_eq!(double.open_upload_sessions(), 0);
        assert_eq!(tier.stat("fail/rejected.bin").await?, None);

        // 503 on every attempt: the retries run out, the session is cancelled, and the
        // error says a later retry could help.
        double.fail_fragments(FragmentFaults {
            retry_after: Some(0),
            ..FragmentFaults::new(1000, 503)
        });
        let e = put(tier.as_ref(), "fail/busy.bin", &data)
            .await
            .unwrap_err();
        assert_names_tier_and_key(&e, "fail/busy.bin");
        assert!(e.is_temporary(), "{e}");
        assert_eq!(count(&double, "DELETE /upload/"), 2);
        assert_eq!(double.open_upload_sessions(), 0);
        assert_eq!(tier.stat("fail/busy.bin").await?, None);
        double.fail_fragments(FragmentFaults::new(0, 503));

        // A small object whose simple upload is refused (a bad refresh token).
        let mut cfg = double.config("zdr");
        cfg.refresh_token = Some("not-a-token-the-double-issued".into());
        cfg.spool_dir = Some(spool.path().to_path_buf());
        let bad = open_tier("offsite", &TierConfig::Onedrive(cfg))?;
        let e = put(bad.as_ref(), "fail/small.bin", b"tiny")
            .await
            .unwrap_err();
        assert_names_tier_and_key(&e, "fail/small.bin");
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        assert!(!e.is_temporary(), "{e}");

        // An unusable spool directory fails at `writer`, naming it.
        let mut cfg = double.config("zdr");
        cfg.spool_dir = Some(spool.path().join("missing"));
        let nowhere = open_tier("offsite", &TierConfig::Onedrive(cfg))?;
        let e = nowhere.writer("fail/x.bin").await.map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        assert_eq!(e.context_value("key"), Some("fail/x.bin"));
        assert_eq!(std::fs::read_dir(spool.path())?.count(), 0);
        Ok(())
    }
}
