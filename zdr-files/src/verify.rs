//! Verify: compare a directory tree with the facts a backup recorded.

use std::fs;
use std::io;
use std::path::Path;

use zdr_core::VerifyReport;

use crate::backup::mode_of;
use crate::facts::{EntryType, FilesFacts, octal};
use crate::restore::hash_file;

/// Compare the tree at `root` with `facts`. Missing entries, changed types, sizes,
/// content, modes and symlink targets are problems; entries the backup does not have
/// are not (config directories gain files). Modification times are not compared.
pub(crate) fn verify(facts: &FilesFacts, root: &Path) -> VerifyReport {
    let mut report = VerifyReport::default();
    match fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            report
                .problems
                .push(format!("{} is not a directory", root.display()));
            return report;
        }
        Err(e) => {
            report
                .problems
                .push(format!("cannot inspect {}: {e}", root.display()));
            return report;
        }
    }
    for e in &facts.entries {
        report.checked += 1;
        let path = root.join(&e.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                report
                    .problems
                    .push(format!("{}: missing ({})", e.path, e.kind));
                continue;
            }
            Err(err) => {
                report
                    .problems
                    .push(format!("{}: cannot inspect: {err}", e.path));
                continue;
            }
        };
        let ft = meta.file_type();
        let found = if ft.is_dir() {
            EntryType::Dir
        } else if ft.is_file() {
            EntryType::File
        } else if ft.is_symlink() {
            EntryType::Symlink
        } else {
            report.problems.push(format!(
                "{}: a special file where the backup has a {}",
                e.path, e.kind
            ));
            continue;
        };
        if found != e.kind {
            report.problems.push(format!(
                "{}: a {found} where the backup has a {}",
                e.path, e.kind
            ));
            continue;
        }
        match e.kind {
            EntryType::File => {
                if meta.len() != e.size {
                    report.problems.push(format!(
                        "{}: size changed (backup {} bytes, found {})",
                        e.path,
                        e.size,
                        meta.len()
                    ));
                } else {
                    match hash_file(&path) {
                        Ok((_, sha)) if Some(sha.as_str()) == e.sha256.as_deref() => {}
                        Ok(_) => report
                            .problems
                            .push(format!("{}: content changed (sha256 differs)", e.path)),
                        Err(err) => report
                            .problems
                            .push(format!("{}: cannot read: {err}", e.path)),
                    }
                }
                check_mode(&mut report, &e.path, e.mode, mode_of(&meta));
            }
            EntryType::Dir => check_mode(&mut report, &e.path, e.mode, mode_of(&meta)),
            EntryType::Symlink => match fs::read_link(&path) {
                Ok(link) if link.to_str() == e.target.as_deref() => {}
                Ok(link) => report.problems.push(format!(
                    "{}: symlink points to {} (backup: {})",
                    e.path,
                    link.display(),
                    e.target.as_deref().unwrap_or("-")
                )),
                Err(err) => report
                    .problems
                    .push(format!("{}: cannot read symlink: {err}", e.path)),
            },
        }
    }
    report
}

fn check_mode(report: &mut VerifyReport, path: &str, recorded: u32, found: u32) {
    if cfg!(unix) && recorded != found {
        report.problems.push(format!(
            "{path}: mode changed (backup {}, found {})",
            octal(recorded),
            octal(found)
        ));
    }
}
