//! The SeaweedFS test kit itself: parallel instances, kill, restart, persistence.

use std::error::Error;
use std::time::{Duration, Instant};

use zdr_tests::seaweed::SeaweedFs;

type TestResult = Result<(), Box<dyn Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_kill_and_restart() -> TestResult {
    let started = Instant::now();
    let (a, mut b) = tokio::try_join!(SeaweedFs::start(), SeaweedFs::start())?;
    let startup = started.elapsed();
    assert!(
        startup < Duration::from_secs(60),
        "startup took {startup:?}"
    );
    assert_ne!(a.endpoint(), b.endpoint());
    assert_ne!(a.access_key_id(), b.access_key_id());
    assert_eq!(a.region(), "us-east-1");
    assert!(a.endpoint().starts_with("http://127.0.0.1:"));

    let op_a = a.operator()?;
    let op_b = b.operator()?;
    op_a.write("kit/hello.txt", b"from a".to_vec()).await?;
    op_b.write("kit/hello.txt", b"from b".to_vec()).await?;
    assert_eq!(op_a.read("kit/hello.txt").await?.to_vec(), b"from a");
    assert_eq!(op_b.read("kit/hello.txt").await?.to_vec(), b"from b");

    // The readiness probe leaves nothing behind.
    let listed: Vec<String> = op_a
        .list_with("")
        .recursive(true)
        .await?
        .into_iter()
        .map(|entry| entry.path().to_string())
        .collect();
    assert_eq!(listed, vec!["kit/hello.txt".to_string()]);

    // Credentials matter: B's keys do not open A.
    let wrong = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket(a.bucket())
            .endpoint(&a.endpoint())
            .region(a.region())
            .access_key_id(b.access_key_id())
            .secret_access_key(b.secret_access_key())
            .disable_config_load()
            .disable_ec2_metadata(),
    )?;
    assert!(wrong.read("kit/hello.txt").await.is_err());

    b.kill();
    assert!(!b.is_running());
    let after_kill =
        tokio::time::timeout(Duration::from_secs(30), op_b.read("kit/hello.txt")).await;
    assert!(
        matches!(after_kill, Ok(Err(_))),
        "a read from a killed server must fail promptly: {after_kill:?}"
    );
    // A is unaffected.
    assert_eq!(op_a.read("kit/hello.txt").await?.to_vec(), b"from a");

    let restarted = Instant::now();
    b.restart().await?;
    let restart_time = restarted.elapsed();
    assert!(b.is_running());
    assert_eq!(op_b.read("kit/hello.txt").await?.to_vec(), b"from b");
    op_b.write("kit/second.txt", b"after restart".to_vec())
        .await?;
    assert_eq!(
        op_b.read("kit/second.txt").await?.to_vec(),
        b"after restart"
    );
    assert!(
        restart_time < Duration::from_secs(60),
        "restart took {restart_time:?}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_bucket_is_an_error_not_auto_created() -> TestResult {
    let s = SeaweedFs::start().await?;
    let other = opendal::Operator::new(
        opendal::services::S3::default()
            .bucket("zdr-no-such-bucket")
            .endpoint(&s.endpoint())
            .region(s.region())
            .access_key_id(s.access_key_id())
            .secret_access_key(s.secret_access_key())
            .disable_config_load()
            .disable_ec2_metadata(),
    )?;
    assert!(other.write("x", b"y".to_vec()).await.is_err());
    Ok(())
}

/// The S3 behaviour the suites build on, as SeaweedFS serves it: multipart
/// uploads, immediately consistent listings, conditional writes, and what a
/// client sees when the server dies in the middle of a multipart upload.
#[tokio::test]
async fn s3_semantics_the_suites_rely_on() -> TestResult {
    const MIB: usize = 1024 * 1024;
    let mut s = SeaweedFs::start().await?;
    let op = s.operator()?;

    // Multipart upload (3 parts of <= 5 MiB), read back whole and by range.
    let data: Vec<u8> = (0..12 * MIB).map(|i| (i % 251) as u8).collect();
    let mut writer = op
        .writer_with("mp/big.bin")
        .chunk(5 * MIB)
        .concurrent(2)
        .await?;
    writer.write(data.clone()).await?;
    let meta = writer.close().await?;
    assert_eq!(meta.content_length(), data.len() as u64);
    assert!(
        meta.etag().is_some_and(|etag| etag.ends_with("-3\"")),
        "{meta:?}"
    );
    assert!(op.read("mp/big.bin").await?.to_vec() == data);
    assert_eq!(
        op.read_with("mp/big.bin").range(5..15).await?.to_vec(),
        &data[5..15]
    );

    // Listings see writes and deletes at once.
    for i in 0..40 {
        op.write(&format!("list/{i:03}"), vec![1u8]).await?;
    }
    assert_eq!(op.list_with("list/").recursive(true).await?.len(), 40);
    for i in 0..10 {
        op.delete(&format!("list/{i:03}")).await?;
    }
    assert_eq!(op.list_with("list/").recursive(true).await?.len(), 30);
    let top: Vec<String> = op
        .list("")
        .await?
        .into_iter()
        .map(|e| e.path().to_string())
        .collect();
    assert_eq!(top, vec!["list/".to_string(), "mp/".to_string()]);
    assert_eq!(
        op.read("list/000").await.map(|_| ()).map_err(|e| e.kind()),
        Err(opendal::ErrorKind::NotFound)
    );

    // Conditional writes are enforced.
    let existing = op
        .write_with("list/020", vec![2u8])
        .if_not_exists(true)
        .await;
    assert_eq!(
        existing.map(|_| ()).map_err(|e| e.kind()),
        Err(opendal::ErrorKind::ConditionNotMatch)
    );
    op.write_with("list/new", vec![2u8])
        .if_not_exists(true)
        .await?;
    let wrong = op
        .write_with("list/021", vec![3u8])
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .await;
    assert_eq!(
        wrong.map(|_| ()).map_err(|e| e.kind()),
        Err(opendal::ErrorKind::ConditionNotMatch)
    );
    let etag = op
        .stat("list/021")
        .await?
        .etag()
        .map(str::to_string)
        .unwrap_or_default();
    op.write_with("list/021", vec![4u8]).if_match(&etag).await?;
    assert_eq!(op.read("list/021").await?.to_vec(), vec![4u8]);

    // Killed in the middle of a multipart upload: the client gets a temporary
    // error on close, and after a restart the object does not exist.
    let mut writer = op.writer_with("mp/killed.bin").chunk(5 * MIB).await?;
    writer.write(data[..11 * MIB].to_vec()).await?;
    s.kill();
    let _ = writer.write(data[11 * MIB..].to_vec()).await;
    let closed = writer.close().await;
    assert!(
        closed.as_ref().is_err_and(|e| e.is_temporary()),
        "{closed:?}"
    );
    assert!(op.stat("mp/big.bin").await.is_err_and(|e| e.is_temporary()));
    s.restart().await?;
    assert_eq!(
        op.stat("mp/killed.bin")
            .await
            .map(|_| ())
            .map_err(|e| e.kind()),
        Err(opendal::ErrorKind::NotFound)
    );
    assert!(op.read("mp/big.bin").await?.to_vec() == data);
    assert_eq!(op.list_with("list/").recursive(true).await?.len(), 31);
    Ok(())
}
