//! Host staging directories of runs in progress are named `<prefix><pid>-<random>` (in the
//! temp dir), so the next run can tell the leftovers of a killed run (its process is gone) from
//! the directories of runs still going, and remove them.

use std::path::Path;

/// Removes the directories in `dir` named `<prefix><pid>-...` whose process is gone: what runs
/// killed before they could remove their own left behind. Errors are ignored (a directory
/// that cannot be removed stays for the next sweep).
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
            let _ = std::fs::remove_dir_all(e.path());
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
        sweep_abandoned(&root, "zdr-x-");
        assert!(mine.exists(), "a live run's directory was removed");
        assert!(!gone.exists(), "a killed run's directory stayed");
        assert!(other.exists(), "another prefix was touched");
        let _ = std::fs::remove_dir_all(&root);
    }
}
