//! Host staging directories and temporary files of runs in progress are named
//! `<prefix><pid>-<random>` (in the temp dir), so the next run can tell the leftovers of a
//! killed run (its process is gone) from those of runs still going, and remove them.

use std::path::Path;

/// Removes the directories and files in `dir` named `<prefix><pid>-...` whose process is
/// gone: what runs killed before they could remove their own left behind. Errors are ignored
/// (what cannot be removed stays for the next sweep).
pub fn sweep_abandoned(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_of_gone_processes_are_swept() {
        let root = std::env::temp_dir().join(format!("zdr-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mine = root.join(format!("zdr-x-{}-0001", std::process::id()));
        // pid 0 is never a process directory in /proc.
        let gone = root.join("zdr-x-0-0002");
        let other = root.join("zdr-y-0-0003");
        for d in [&mine, &gone, &other] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        let mine_file = root.join(format!("zdr-x-{}-0004", std::process::id()));
        let gone_file = root.join("zdr-x-0-0005");
        for f in [&mine_file, &gone_file] {
            std::fs::write(f, b"spooled").unwrap_or_else(|e| panic!("{e}"));
        }
        sweep_abandoned(&root, "zdr-x-");
        assert!(mine.exists(), "a live run's directory was removed");
        assert!(!gone.exists(), "a killed run's directory stayed");
        assert!(other.exists(), "another prefix was touched");
        assert!(mine_file.exists(), "a live run's file was removed");
        assert!(!gone_file.exists(), "a killed run's file stayed");
        let _ = std::fs::remove_dir_all(&root);
    }
}
