//! The locks runs hold on a tier, on real fs tiers: a prune waits for a running backup and
//! then counts the backup it waited for, a second prune waits for the first (repository
//! lock), a backup waits for a prune of its component, a replication holds the component's
//! lock on the destination, and each gives up after its wait naming the holder. The backup
//! held open is an n8n component's behind the HTTP gate of `support/`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use zdr::prune::{PruneAction, PruneOptions};
use zdr::storage::{LockPolicy, REPOSITORY_LOCK, TierLock, component_lock, lock_holder};
use zdr::{BackupOptions, Config, Progress, ProgressEvent, ProgressSink, Stack};
use zdr_core::Level;

mod support;
use support::{flows, gate};

/// Keeps the messages and wakes whoever waits for one.
#[derive(Default)]
struct Said {
    messages: Mutex<Vec<String>>,
    said: Notify,
}

impl ProgressSink for Said {
    fn event(&self, event: ProgressEvent) {
        if let ProgressEvent::Message { level, text } = event
            && level >= Level::Info
        {
            self.messages.lock().unwrap().push(text);
            self.said.notify_waiters();
        }
    }
}

impl Said {
    /// Returns the first message containing `text`, once it is said.
    async fn wait_for(&self, text: &str) -> String {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let said = self.said.notified();
                tokio::pin!(said);
                said.as_mut().enable();
                if let Some(m) = self
                    .messages
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|m| m.contains(text))
                {
                    return m.clone();
                }
                said.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing said with {text:?} within 60 s"))
    }
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        std::fs::write(dir.path().join("live/app.env"), "A=1\n").unwrap();
        Self { dir }
    }

    /// With `replicas`, backups go on to the tier `offsite` (which a prune of `local` then
    /// waits for).
    fn config(&self, replicas: bool, extra: &str) -> Config {
        let replicate_to = if replicas { r#"["offsite"]"# } else { "[]" };
        let text = format!(
            r#"
primary = "local"
replicate_to = {replicate_to}
[tiers.local]
type = "fs"
root = "{root}/local"
[tiers.offsite]
type = "fs"
root = "{root}/offsite"

[components.configs]
type = "files"
path = "{root}/live"

[retention]
keep_last = 1
{extra}
"#,
            root = self.dir.path().display(),
        );
        Config::parse(&text, "test", std::iter::empty()).unwrap()
    }
}

fn tier(stack: &Stack, name: &str) -> Arc<dyn zdr_core::StorageTier> {
    stack.tier(name).unwrap()
}

fn policy(wait_secs: u64) -> LockPolicy {
    LockPolicy {
        stale: Duration::from_secs(60),
        wait: Duration::from_secs(wait_secs),
    }
}

#[tokio::test]
async fn a_prune_waits_for_a_running_backup_and_counts_the_backup_it_waited_for() {
    let env = Env::new();
    let gate = gate().await;
    let stack = Stack::open(env.config(false, &flows(&gate))).await.unwrap();
    gate.open.send_replace(true);
    let mut older = Vec::new();
    for _ in 0..2 {
        let r = stack
            .backup("flows", &BackupOptions::default(), &Progress::none())
            .await
            .unwrap();
        older.push(r.backup.id.to_string());
    }
    gate.open.send_replace(false);
    gate.requests.lock().unwrap().clear();

    let said = Arc::new(Said::default());
    let progress = Progress::new(said.clone());
    let (defaults, quiet) = (BackupOptions::default(), Progress::none());
    let backup = stack.backup("flows", &defaults, &quiet);
    let prune = async {
        // The backup holds its lock once it talks to the server.
        gate.wait_asked().await;
        let holder = lock_holder(tier(&stack, "local").as_ref(), &component_lock("flows"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(holder.command, "backup flows");
        let options = PruneOptions {
            component: Some("flows".into()),
            tier: Some("local".into()),
            ..PruneOptions::default()
        };
        let letting_go = async {
            let m = said.wait_for("waiting up to").await;
            assert!(m.contains("backup flows"), "{m}");
            gate.open.send_replace(true);
        };
        let (report, ()) = tokio::join!(stack.prune(&options, &progress), letting_go);
        report
    };
    let (backup, report) = tokio::join!(backup, prune);
    let newest = backup.unwrap().backup.id.to_string();
    let report = report.unwrap();
    assert!(report.is_ok(), "{report:?}");
    let decided: Vec<(String, PruneAction)> = report.tiers[0]
        .backups
        .iter()
        .map(|b| (b.id.clone(), b.action))
        .collect();
    // keep_last = 1 keeps the backup the prune waited for; both older ones go.
    assert_eq!(
        decided,
        vec![
            (newest.clone(), PruneAction::Keep),
            (older[1].clone(), PruneAction::Deleted),
            (older[0].clone(), PruneAction::Deleted),
        ]
    );
    let listed = stack.list(Some("local"), Some("flows")).await.unwrap();
    let ids: Vec<String> = listed[0].backups.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, vec![newest]);
    // Every lock is gone.
    let local = tier(&stack, "local");
    assert!(local.list("locks/").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_prune_waits_for_another_prune_and_a_backup_for_a_prune_each_up_to_its_wait() {
    let env = Env::new();
    let stack = Stack::open(env.config(false, "")).await.unwrap();
    for _ in 0..2 {
        stack
            .backup("configs", &BackupOptions::default(), &Progress::none())
            .await
            .unwrap();
    }
    let local = tier(&stack, "local");

    // Another prune holds the repository lock of the primary tier.
    let other = TierLock::acquire(
        local.clone(),
        REPOSITORY_LOCK,
        "prune",
        Duration::from_secs(60),
        &Progress::none(),
    )
    .await
    .unwrap();
    // Without a wait the tier is left alone, the holder named; nothing deleted.
    let report = stack
        .prune(
            &PruneOptions {
                wait: Some(Duration::ZERO),
                ..PruneOptions::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap();
    assert!(!report.is_ok());
    let local_report = report.tiers.iter().find(|t| t.tier == "local").unwrap();
    assert!(local_report.backups.is_empty());
    assert!(
        local_report.problems[0]
            .error
            .contains("lock repository is held by prune"),
        "{:?}",
        local_report.problems
    );
    assert_eq!(
        stack.list(Some("local"), Some("configs")).await.unwrap()[0]
            .backups
            .len(),
        2
    );
    // With one, it goes on when the other prune is done.
    let said = Arc::new(Said::default());
    let progress = Progress::new(said.clone());
    let options = PruneOptions {
        wait: Some(Duration::from_secs(60)),
        ..PruneOptions::default()
    };
    let letting_go = async {
        said.wait_for("waiting up to").await;
        other.release().await.unwrap();
    };
    let (report, ()) = tokio::join!(stack.prune(&options, &progress), letting_go);
    let report = report.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        stack.list(Some("local"), Some("configs")).await.unwrap()[0]
            .backups
            .len(),
        1
    );

    // A prune of the component elsewhere: a backup waits for it, then runs.
    let pruning = TierLock::acquire(
        local.clone(),
        &component_lock("configs"),
        "prune",
        Duration::from_secs(60),
        &Progress::none(),
    )
    .await
    .unwrap();
    let said = Arc::new(Said::default());
    let progress = Progress::new(said.clone());
    let options = BackupOptions {
        lock_wait: Some(Duration::from_secs(60)),
        ..BackupOptions::default()
    };
    let letting_go = async {
        let m = said.wait_for("waiting up to").await;
        assert!(m.contains("held by prune"), "{m}");
        pruning.release().await.unwrap();
    };
    let (backup, ()) = tokio::join!(stack.backup("configs", &options, &progress), letting_go);
    backup.unwrap();
    // Held past the wait: refused, naming the holder and the wait; nothing written.
    let pruning = TierLock::acquire(
        local.clone(),
        &component_lock("configs"),
        "prune",
        Duration::from_secs(60),
        &Progress::none(),
    )
    .await
    .unwrap();
    let before = stack.list(Some("local"), Some("configs")).await.unwrap()[0]
        .backups
        .len();
    let err = stack
        .backup(
            "configs",
            &BackupOptions {
                lock_wait: Some(Duration::from_secs(1)),
                ..BackupOptions::default()
            },
            &Progress::none(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), zdr::ErrorKind::Conflict);
    assert!(err.to_string().contains("held by prune"), "{err}");
    assert_eq!(err.context_value("waited"), Some("1 s"));
    assert_eq!(err.context_value("component"), Some("configs"));
    assert_eq!(
        stack.list(Some("local"), Some("configs")).await.unwrap()[0]
            .backups
            .len(),
        before
    );
    pruning.release().await.unwrap();
}

#[tokio::test]
async fn a_replication_holds_the_component_lock_on_the_destination() {
    let env = Env::new();
    let stack = Stack::open(env.config(true, "[locks]\nwait = \"0s\"\n"))
        .await
        .unwrap();
    stack
        .backup("configs", &BackupOptions::default(), &Progress::none())
        .await
        .unwrap();
    let offsite = tier(&stack, "offsite");
    // A prune of the component works on the destination: the replication does not write
    // there (wait 0 s), and says who holds it.
    let pruning = TierLock::acquire(
        offsite.clone(),
        &component_lock("configs"),
        "prune",
        Duration::from_secs(60),
        &Progress::none(),
    )
    .await
    .unwrap();
    let run = stack.replicate(None, &Progress::none()).await.unwrap();
    assert!(run.pairs[0].copied.is_empty());
    assert_eq!(run.pairs[0].failed.len(), 1);
    assert!(
        run.pairs[0].failed[0].error.contains("held by prune"),
        "{:?}",
        run.pairs[0].failed
    );
    assert!(
        stack.list(Some("offsite"), Some("configs")).await.unwrap()[0]
            .backups
            .is_empty()
    );
    // Waiting for it (the library call with a wait), the replication copies once it is
    // released, and removes its own lock.
    let said = Arc::new(Said::default());
    let progress = Progress::new(said.clone());
    let local = tier(&stack, "local");
    let (retry, locks) = (zdr::storage::RetryPolicy::none(), policy(60));
    let copy = zdr::storage::replicate_locked(&local, &offsite, &retry, &locks, &progress);
    let letting_go = async {
        let m = said.wait_for("waiting up to").await;
        assert!(m.contains("held by prune"), "{m}");
        pruning.release().await.unwrap();
    };
    let (report, ()) = tokio::join!(copy, letting_go);
    let report = report.unwrap();
    assert_eq!(report.copied.len(), 1, "{:?}", report.failed);
    assert!(
        lock_holder(offsite.as_ref(), &component_lock("configs"))
            .await
            .unwrap()
            .is_none()
    );
}
