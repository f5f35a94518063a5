//! `FilesComponent` on a real filesystem in temp dirs, with in-memory artifacts.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::Digest;
use support::*;
use zdr_core::{ErrorKind, Level, Progress, ProgressEvent, RestoreTarget, Restorer, Verifier};
use zdr_files::{EntryType, FilesComponent, FilesFacts};

const BIG: usize = 20 << 20;
const LONG_DIR: &str = "a-directory-name-that-is-long-enough-to-need-gnu-long-name-records-in-tar";
const LONG_FILE: &str =
    "and-a-file-name-that-is-also-rather-long-so-the-path-passes-100-bytes.conf";

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A config tree: nested dirs, an empty file, an empty dir, `big.bin` (20 MiB when `big`,
/// else 64 KiB), symlinks, modes 0600 and 0755, a path longer than 100 bytes, distinct old
/// mtimes everywhere.
fn build_tree(root: &Path, big: bool) -> std::io::Result<()> {
    fs::create_dir_all(root.join("etc/nginx/sites"))?;
    fs::create_dir_all(root.join("empty-dir"))?;
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join(LONG_DIR))?;
    fs::write(root.join("app.env"), "DATABASE_PASSWORD=hunter2\n")?;
    chmod(&root.join("app.env"), 0o600)?;
    fs::write(root.join("bin/run.sh"), "#!/bin/sh\nexec app\n")?;
    chmod(&root.join("bin/run.sh"), 0o755)?;
    fs::write(root.join("etc/nginx/nginx.conf"), "worker_processes 4;\n")?;
    fs::write(
        root.join("etc/nginx/sites/default"),
        "server { listen 80; root /srv/unique-marker-content; }\n",
    )?;
    fs::write(root.join("empty.txt"), "")?;
    fs::write(root.join(LONG_DIR).join(LONG_FILE), "long = true\n")?;
    let mut file = fs::File::create(root.join("big.bin"))?;
    for chunk in noise(if big { BIG } else { 64 << 10 }, 42).chunks(1 << 20) {
        file.write_all(chunk)?;
    }
    file.sync_all()?;
    std::os::unix::fs::symlink("etc/nginx/nginx.conf", root.join("current"))?;
    std::os::unix::fs::symlink("/nonexistent/dangling", root.join("dangling"))?;

    // Old, distinct mtimes; directories after their contents.
    let mut t = 1_600_000_000;
    for f in [
        "app.env",
        "bin/run.sh",
        "etc/nginx/nginx.conf",
        "etc/nginx/sites/default",
        "empty.txt",
        "big.bin",
        "current",
        "dangling",
    ] {
        t += 1000;
        set_mtime(&root.join(f), t)?;
    }
    set_mtime(&root.join(LONG_DIR).join(LONG_FILE), t + 5)?;
    for d in [
        "etc/nginx/sites",
        "etc/nginx",
        "etc",
        "bin",
        "empty-dir",
        LONG_DIR,
    ] {
        t += 1000;
        set_mtime(&root.join(d), t)?;
    }
    Ok(())
}

fn files_component(root: &Path) -> Result<FilesComponent, zdr_core::Error> {
    Ok(FilesComponent::new(configs()?, root.to_path_buf()))
}

fn target(path: &Path, overwrite: bool) -> RestoreTarget {
    RestoreTarget {
        path: Some(path.to_path_buf()),
        name: None,
        overwrite,
    }
}

#[tokio::test]
async fn round_trip_keeps_content_modes_mtimes_and_symlinks() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, true)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let (progress, events) = recording();
    let manifest = backup_with(&comp, &mut store, &progress).await?;

    // The facts.
    let facts = FilesFacts::from_manifest(&manifest)?;
    assert_eq!(facts.root, src.to_string_lossy());
    assert_eq!(facts.file_count, 7);
    assert_eq!(facts.symlink_count, 2);
    assert_eq!(facts.dir_count, 6);
    let mut on_disk = 0;
    for e in facts.entries.iter().filter(|e| e.kind == EntryType::File) {
        on_disk += fs::metadata(src.join(&e.path))?.len();
    }
    assert_eq!(facts.total_bytes, on_disk);
    assert!(on_disk > BIG as u64);
    let paths: Vec<&str> = facts.entries.iter().map(|e| e.path.as_str()).collect();
    let long_path = format!("{LONG_DIR}/{LONG_FILE}");
    assert_eq!(
        paths,
        [
            LONG_DIR,
            long_path.as_str(),
            "app.env",
            "big.bin",
            "bin",
            "bin/run.sh",
            "current",
            "dangling",
            "empty-dir",
            "empty.txt",
            "etc",
            "etc/nginx",
            "etc/nginx/nginx.conf",
            "etc/nginx/sites",
            "etc/nginx/sites/default",
        ]
    );
    let big = facts
        .entries
        .iter()
        .find(|e| e.path == "big.bin")
        .ok_or("big.bin")?;
    assert_eq!(big.kind, EntryType::File);
    assert_eq!(big.size, BIG as u64);
    assert_eq!(
        big.sha256.as_deref(),
        Some(hex::encode(sha2::Sha256::digest(noise(BIG, 42))).as_str())
    );
    let env = facts
        .entries
        .iter()
        .find(|e| e.path == "app.env")
        .ok_or("app.env")?;
    assert_eq!((env.mode, env.mtime), (0o600, 1_600_001_000));
    let link = facts
        .entries
        .iter()
        .find(|e| e.path == "current")
        .ok_or("current")?;
    assert_eq!(link.kind, EntryType::Symlink);
    assert_eq!(link.target.as_deref(), Some("etc/nginx/nginx.conf"));
    // The JSON shape the manifest carries.
    let json = &manifest.facts;
    assert_eq!(json["entries"][2]["type"], "file");
    assert_eq!(json["entries"][2]["path"], "app.env");
    assert!(json["entries"][0]["sha256"].is_null());
    // The artifact is a plain tar named after the component.
    assert_eq!(manifest.artifacts.len(), 1);
    assert_eq!(manifest.artifacts[0].name, "configs");
    assert!(manifest.artifacts[0].key.ends_with(".tar"));

    // Progress counted every byte.
    let advanced: u64 = events
        .events()
        .iter()
        .map(|e| match e {
            ProgressEvent::Advanced { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    assert_eq!(advanced, facts.total_bytes);

    // Restore into a directory that does not exist yet.
    let dst = tmp.path().join("restored");
    let outcome = comp
        .restore(
            &manifest,
            &store.reader(),
            &target(&dst, false),
            &Progress::none(),
        )
        .await?;
    assert_eq!(outcome.items, 9, "7 files and 2 symlinks");
    assert_eq!(outcome.bytes, facts.total_bytes);
    assert_eq!(outcome.target, dst.to_string_lossy());
    assert_eq!(snapshot(&src)?, snapshot(&dst)?);
    for e in &facts.entries {
        assert_eq!(mtime(&dst.join(&e.path))?, e.mtime, "mtime of {}", e.path);
        assert_eq!(
            mtime(&src.join(&e.path))?,
            e.mtime,
            "source mtime of {}",
            e.path
        );
    }
    assert_eq!(mode(&dst.join("app.env"))?, 0o600);
    assert_eq!(mode(&dst.join("bin/run.sh"))?, 0o755);
    assert_eq!(
        fs::read_link(dst.join("dangling"))?,
        Path::new("/nonexistent/dangling")
    );
    assert!(
        zdr_dirs(tmp.path()).is_empty(),
        "{:?}",
        zdr_dirs(tmp.path())
    );

    // Verify passes, against the restore and the original root.
    let report = comp.verify(&manifest, &target(&dst, false)).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.checked, 15);
    let report = comp.verify(&manifest, &RestoreTarget::default()).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn conflicting_file_without_overwrite_changes_nothing() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, false)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    // The live tree drifted: one file edited, one new file.
    let live = tmp.path().join("live");
    fs::create_dir_all(live.join("etc/nginx"))?;
    fs::write(live.join("etc/nginx/nginx.conf"), "worker_processes 8;\n")?;
    fs::write(live.join("local.override"), "keep me\n")?;
    let before = snapshot(&live)?;

    let err = comp
        .restore(
            &manifest,
            &store.reader(),
            &target(&live, false),
            &Progress::none(),
        )
        .await
        .err()
        .ok_or("restore should fail")?;
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("etc/nginx/nginx.conf"), "{err}");
    assert_eq!(err.context_value("component"), Some("configs"));
    assert!(err.hint().is_some());
    assert_eq!(snapshot(&live)?, before, "target untouched");
    assert!(zdr_dirs(tmp.path()).is_empty(), "no staging left");

    // With overwrite it succeeds, keeps the old version aside and leaves extra files alone.
    let outcome = comp
        .restore(
            &manifest,
            &store.reader(),
            &target(&live, true),
            &Progress::none(),
        )
        .await?;
    assert_eq!(
        fs::read(live.join("etc/nginx/nginx.conf"))?,
        b"worker_processes 4;\n"
    );
    assert_eq!(fs::read(live.join("local.override"))?, b"keep me\n");
    let kept = zdr_dirs(tmp.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with(".zdr-replaced-"), "{kept:?}");
    assert_eq!(
        fs::read(tmp.path().join(&kept[0]).join("etc/nginx/nginx.conf"))?,
        b"worker_processes 8;\n"
    );
    let notes = outcome.notes.join("\n");
    assert!(notes.contains(&kept[0]), "{notes}");
    assert!(notes.contains("local.override"), "{notes}");
    let report = comp.verify(&manifest, &target(&live, false)).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_existing_files_are_fine() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, false)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    let dst = tmp.path().join("dst");
    fs::create_dir_all(dst.join("etc/nginx"))?;
    fs::write(dst.join("etc/nginx/nginx.conf"), "worker_processes 4;\n")?;
    fs::write(dst.join("app.env"), "DATABASE_PASSWORD=hunter2\n")?;
    chmod(&dst.join("app.env"), 0o644)?;
    let outcome = comp
        .restore(
            &manifest,
            &store.reader(),
            &target(&dst, false),
            &Progress::none(),
        )
        .await?;
    assert_eq!(outcome.items, 7, "9 files and symlinks, 2 already there");
    let notes = outcome.notes.join("\n");
    assert!(
        notes.contains("2 files already at the target were identical"),
        "{notes}"
    );
    assert!(notes.contains("app.env"), "mode fixed: {notes}");
    assert_eq!(mode(&dst.join("app.env"))?, 0o600);
    let report = comp.verify(&manifest, &target(&dst, false)).await?;
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(zdr_dirs(tmp.path()).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn altered_content_is_an_integrity_error_and_target_is_untouched() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, false)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    let reader = store.reader().tampered(|bytes| {
        let marker = b"unique-marker-content";
        if let Some(i) = bytes.windows(marker.len()).position(|w| w == marker) {
            bytes[i] = b'U';
        }
    });
    let dst = tmp.path().join("dst");
    fs::create_dir_all(&dst)?;
    fs::write(dst.join("unrelated"), "x")?;
    let before = snapshot(&dst)?;
    let err = comp
        .restore(&manifest, &reader, &target(&dst, true), &Progress::none())
        .await
        .err()
        .ok_or("restore should fail")?;
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("etc/nginx/sites/default"), "{err}");
    assert_eq!(snapshot(&dst)?, before);
    assert!(zdr_dirs(tmp.path()).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_failing_at_its_end_fails_the_restore() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, false)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    let dst = tmp.path().join("dst");
    let err = comp
        .restore(
            &manifest,
            &store.reader().failing_at_end(),
            &target(&dst, false),
            &Progress::none(),
        )
        .await
        .err()
        .ok_or("restore should fail")?;
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(!dst.exists(), "target untouched");
    assert!(zdr_dirs(tmp.path()).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_entry_with_parent_dir_is_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    fs::create_dir_all(&src)?;
    fs::write(src.join("evil"), "payload")?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    // Replace the artifact with a tar whose entry escapes: `../evil`.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..7].copy_from_slice(b"../evil");
    header.set_size(7);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, &b"payload"[..])?;
    let bytes = tar.into_inner()?;
    store.put(&manifest.artifacts[0].key, bytes);

    let dst = tmp.path().join("sub/dst");
    let err = comp
        .restore(
            &manifest,
            &store.reader(),
            &target(&dst, false),
            &Progress::none(),
        )
        .await
        .err()
        .ok_or("restore should fail")?;
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    assert!(err.to_string().contains(".."), "{err}");
    assert!(!tmp.path().join("sub/evil").exists());
    assert!(!dst.exists());
    assert!(zdr_dirs(&tmp.path().join("sub")).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_modified_missing_and_chmodded_files() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    build_tree(&src, false)?;
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;

    fs::write(src.join("etc/nginx/nginx.conf"), "worker_processes 9;\n")?; // same size
    fs::write(src.join("bin/run.sh"), "#!/bin/sh\nexec app --debug\n")?; // size changed
    chmod(&src.join("bin/run.sh"), 0o755)?;
    fs::remove_file(src.join("empty.txt"))?;
    chmod(&src.join("app.env"), 0o644)?;
    fs::remove_file(src.join("current"))?;
    std::os::unix::fs::symlink("elsewhere", src.join("current"))?;
    fs::write(src.join("new-file"), "extra files are not problems")?;

    let report = comp.verify(&manifest, &RestoreTarget::default()).await?;
    assert_eq!(report.checked, 15);
    let problems = report.problems.join("\n");
    assert_eq!(report.problems.len(), 5, "{problems}");
    assert!(
        problems.contains("etc/nginx/nginx.conf: content changed"),
        "{problems}"
    );
    assert!(problems.contains("bin/run.sh: size changed"), "{problems}");
    assert!(problems.contains("empty.txt: missing"), "{problems}");
    assert!(
        problems.contains("app.env: mode changed (backup 0600, found 0644)"),
        "{problems}"
    );
    assert!(
        problems.contains("current: symlink points to elsewhere"),
        "{problems}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_root_is_bad_input() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("no-such-config");
    let comp = files_component(&missing)?;
    let mut store = MemStore::default();
    let err = backup(&comp, &mut store)
        .await
        .err()
        .ok_or("backup should fail")?;
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("no-such-config"), "{err}");
    assert!(store.records().is_empty());

    let file = tmp.path().join("a-file");
    fs::write(&file, "x")?;
    let err = backup(&files_component(&file)?, &mut store)
        .await
        .err()
        .ok_or("backup should fail")?;
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    Ok(())
}

#[tokio::test]
async fn restore_needs_a_target_path() -> TestResult {
    let tmp = tempfile::tempdir()?;
    fs::write(tmp.path().join("x"), "x")?;
    let comp = files_component(tmp.path())?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;
    let err = comp
        .restore(
            &manifest,
            &store.reader(),
            &RestoreTarget::default(),
            &Progress::none(),
        )
        .await
        .err()
        .ok_or("restore should fail")?;
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn file_growing_during_backup_fails_clearly() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    fs::create_dir_all(&src)?;
    let log = src.join("growing.log");
    fs::write(&log, noise(16 << 20, 7))?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new().append(true).open(log)?;
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"more\n")?;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    let comp = files_component(&src)?;
    let mut store = MemStore::default();
    let result = backup(&comp, &mut store).await;
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| "writer thread panicked")??;

    let err = result.err().ok_or("backup should fail")?;
    assert_eq!(err.kind(), ErrorKind::Source, "{err}");
    assert!(err.to_string().contains("growing.log"), "{err}");
    assert!(err.to_string().contains("grew"), "{err}");
    assert!(store.records().is_empty(), "no artifact finished");
    assert_eq!(
        store.abandoned.lock().map(|a| a.len()).unwrap_or_default(),
        1,
        "the artifact was abandoned"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn excludes_and_special_files_are_skipped() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("config");
    fs::create_dir_all(src.join("cache/deep"))?;
    fs::write(src.join("keep.conf"), "a")?;
    fs::write(src.join(".keep.conf.swp"), "b")?;
    fs::write(src.join("cache/deep/blob"), "c")?;
    let _listener = std::os::unix::net::UnixListener::bind(src.join("app.sock"))?;
    let comp = files_component(&src)?.exclude(["*.swp", "cache"]);
    let mut store = MemStore::default();
    let (progress, events) = recording();
    let manifest = backup_with(&comp, &mut store, &progress).await?;
    let facts = FilesFacts::from_manifest(&manifest)?;
    let paths: Vec<&str> = facts.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["keep.conf"]);
    assert_eq!(facts.skipped.len(), 1);
    assert_eq!(facts.skipped[0].path, "app.sock");
    assert_eq!(facts.skipped[0].reason, "socket");
    assert_eq!(facts.exclude, ["*.swp", "cache"]);
    let warnings = events.messages(Level::Warn);
    assert!(
        warnings.iter().any(|w| w.contains("app.sock")),
        "{warnings:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_of_another_component_is_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    fs::write(tmp.path().join("x"), "x")?;
    let comp = files_component(tmp.path())?;
    let mut store = MemStore::default();
    let manifest = backup(&comp, &mut store).await?;
    let other = FilesComponent::new(zdr_core::Component::new("other")?, tmp.path().into());
    let err = other
        .verify(&manifest, &RestoreTarget::default())
        .await
        .err()
        .ok_or("verify should fail")?;
    assert_eq!(err.kind(), ErrorKind::BadInput, "{err}");
    Ok(())
}
