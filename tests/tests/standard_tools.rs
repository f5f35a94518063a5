//! Artifacts decode with the standard tools, so the runbook works without zdr:
//! `sha256sum -c`, `gunzip`, `lz4 -d`, `zstd -d`, `age -d`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use zdr_core::{Compression, Progress};
use zdr_storage::{AgeKeys, PipelineOptions, Repository, TierConfig, open_tier};
use zdr_tests::fixtures::{TestSource, data, run_sh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_decode_with_standard_tools() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tier");
    let tier = open_tier("local", &TierConfig::Fs { root: root.clone() }).unwrap();
    let (secret, public) = AgeKeys::generate_identity();
    let key_file = dir.path().join("age.key");
    std::fs::write(&key_file, format!("# test key\n{secret}\n")).unwrap();
    let raw = data(5 << 20, 42);
    // lz4 on the pipeline's own thread (FrameEncoder) and on three workers (blocks
    // compressed in parallel, written in order).
    let tools = [
        (Compression::None, 0, "cat"),
        (Compression::Gzip, 0, "gunzip -c"),
        (Compression::Lz4, 0, "lz4 -dc"),
        (Compression::Lz4, 3, "lz4 -dc"),
        (Compression::Zstd, 0, "zstd -dc"),
    ];
    for (compression, lz4_workers, decoder) in tools {
        for encrypted in [false, true] {
            let keys = if encrypted {
                AgeKeys::none()
                    .with_recipients(std::slice::from_ref(&public))
                    .unwrap()
            } else {
                AgeKeys::none()
            };
            let repo = Repository::new(
                tier.clone(),
                PipelineOptions {
                    compression,
                    keys,
                    lz4_workers,
                    ..Default::default()
                },
            );
            let m = repo
                .backup(
                    &TestSource::new("tools", vec![("dump", raw.clone())]),
                    "daily",
                    &Progress::none(),
                )
                .await
                .unwrap();
            let path = root.join(&m.artifacts[0].key);
            let dir = path.parent().unwrap();
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            run_sh(dir, &format!("sha256sum -c {file}.sha256"));
            let decrypt = if encrypted {
                format!("age -d -i {} {file} | ", key_file.display())
            } else {
                format!("cat {file} | ")
            };
            let out = run_sh(dir, &format!("{decrypt}{decoder}"));
            assert!(
                out == raw,
                "{compression} (lz4 workers {lz4_workers}) encrypted={encrypted}: decoded bytes differ"
            );
        }
    }
    // The manifests have sidecars too.
    let manifests = root.join("manifests/tools");
    for entry in std::fs::read_dir(&manifests).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".json") {
            run_sh(&manifests, &format!("sha256sum -c {name}.sha256"));
        }
    }
}
