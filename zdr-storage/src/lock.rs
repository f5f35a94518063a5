//! Locks held on a tier, so that runs on two hosts sharing it (an S3 bucket) see each other: a
//! backup of a component and a prune of it never work at the same time.
//!
//! A lock is the object `locks/<name>.json` holding its owner (host, pid, command, start time,
//! a random token) and a heartbeat the holder rewrites while it works. A lock whose heartbeat is
//! older than the stale time is taken over, with a warning naming the old owner; a fresh one is
//! refused with [`ErrorKind::Conflict`] naming it. Taking a lock writes it and reads it back
//! after a moment: of two runs writing at once, only the one whose token stayed goes on.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zdr_core::{Error, ErrorKind, Progress, Result, StorageTier};

/// The prefix of lock objects on a tier.
pub const LOCKS: &str = "locks/";

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// What it runs, such as `backup uploads`.
    pub command: String,
    /// When it took the lock.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// A random token telling two holders apart.
    pub token: String,
}

impl std::fmt::Display for LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} (pid {}) since {}, last heartbeat {}",
            self.command,
            self.host,
            self.pid,
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.heartbeat_at.format("%H:%M:%S UTC")
        )
    }
}

/// The key of lock `name`.
#[must_use]
pub fn lock_key(name: &str) -> String {
    format!("{LOCKS}{name}.json")
}

/// A lock held on a tier, with its heartbeat running; [`TierLock::release`] removes it. A lock
/// dropped without release stops its heartbeat and goes stale.
pub struct TierLock {
    tier: Arc<dyn StorageTier>,
    key: String,
    token: String,
    heartbeat: tokio::task::JoinHandle<()>,
    released: bool,
}

impl std::fmt::Debug for TierLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TierLock")
            .field("tier", &self.tier.name())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for TierLock {
    /// A lock dropped without [`TierLock::release`] — its run was abandoned (a timeout, a
    /// shutdown) — is removed in the background when a runtime is still there, so the next
    /// run of a long-lived process need not wait for it to go stale.
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(&self.tier);
            let key = self.key.clone();
            let token = self.token.clone();
            handle.spawn(async move {
                let _ = remove_if_ours(tier.as_ref(), &key, &token).await;
            });
        }
    }
}

/// The holder of lock `name` on `tier`, if any.
///
/// # Errors
/// Storage errors; a lock object that is not a lock ([`ErrorKind::Integrity`]).
pub async fn lock_holder(tier: &dyn StorageTier, name: &str) -> Result<Option<LockOwner>> {
    let key = lock_key(name);
    match tier.read_all(&key).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::integrity("not a zdr lock")
                .with_context("tier", tier.name())
                .with_context("key", &key)
                .with_source(e)
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Remove lock `name` from `tier` by hand (`zdr unlock`); returns who held it.
///
/// # Errors
/// Storage errors.
pub async fn remove_lock(tier: &dyn StorageTier, name: &str) -> Result<Option<LockOwner>> {
    let holder = lock_holder(tier, name).await.unwrap_or(None);
    tier.delete(&lock_key(name)).await?;
    Ok(holder)
}

impl TierLock {
    /// Take lock `name` on `tier` for `command`. A lock whose heartbeat is older than `stale`
    /// is taken over (a warning names its owner); the heartbeat is rewritten every
    /// `stale / 4`.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] naming the holder of a fresh lock, or the run that took it at
    /// the same moment; storage errors.
    pub async fn acquire(
        tier: Arc<dyn StorageTier>,
        name: &str,
        command: &str,
        stale: Duration,
        progress: &Progress,
    ) -> Result<Self> {
        let key = lock_key(name);
        let now = Utc::now();
        let stale_for = chrono::Duration::from_std(stale).unwrap_or(chrono::Duration::MAX);
        if let Some(old) = lock_holder(tier.as_ref(), name).await? {
            // A holder on this host whose process is gone (killed) is stale at once.
            let dead_here = old.host == host_name() && !process_alive(old.pid);
            if now - old.heartbeat_at < stale_for && !dead_here {
                return Err(held(&old, tier.name(), &key, name));
            }
            progress.warn(format!(
                "taking over the stale lock {name} on tier {} held by {old}",
                tier.name()
            ));
        }
        let me = LockOwner {
            host: host_name(),
            pid: std::process::id(),
            command: command.to_owned(),
            started_at: now,
            heartbeat_at: now,
            token: format!("{:032x}", rand::random::<u128>()),
        };
        write_owner(tier.as_ref(), &key, &me).await?;
        // Another run may have written at the same moment: the last write stays.
        tokio::time::sleep(Duration::from_millis(200)).await;
        match lock_holder(tier.as_ref(), name).await? {
            Some(o) if o.token == me.token => {}
            Some(o) => return Err(held(&o, tier.name(), &key, name)),
            None => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("lock {name} was removed while it was being taken"),
                )
                .with_context("tier", tier.name())
                .with_context("key", &key));
            }
        }
        let heartbeat = {
            let tier = tier.clone();
            let key = key.clone();
            let name = name.to_owned();
            let mut me = me.clone();
            tokio::spawn(async move {
                let every = (stale / 4).max(Duration::from_millis(100));
                loop {
                    tokio::time::sleep(every).await;
                    match lock_holder(tier.as_ref(), &name).await {
                        Ok(Some(o)) if o.token == me.token => {}
                        // Taken over or removed: stop beating.
                        Ok(_) => return,
                        Err(_) => continue,
                    }
                    me.heartbeat_at = Utc::now();
                    let _ = write_owner(tier.as_ref(), &key, &me).await;
                }
            })
        };
        Ok(Self {
            tier,
            key,
            token: me.token,
            heartbeat,
            released: false,
        })
    }

    /// Stop the heartbeat and remove the lock (when it is still this one's).
    ///
    /// # Errors
    /// Storage errors removing it.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.heartbeat.abort();
        remove_if_ours(self.tier.as_ref(), &self.key, &self.token).await
    }
}

/// Remove the lock object `key` when it still holds `token` (one taken over meanwhile, or
/// unreadable, stays).
async fn remove_if_ours(tier: &dyn StorageTier, key: &str, token: &str) -> Result<()> {
    let ours = match tier.read_all(key).await {
        Ok(bytes) => serde_json::from_slice::<LockOwner>(&bytes).is_ok_and(|o| o.token == token),
        Err(_) => false,
    };
    if ours { tier.delete(key).await } else { Ok(()) }
}

fn held(owner: &LockOwner, tier: &str, key: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        format!("lock {name} is held by {owner}"),
    )
    .with_context("tier", tier)
    .with_context("key", key)
    .with_hint(format!(
        "wait for it to finish; if that run is gone, its lock goes stale, or remove it with `zdr unlock {name}`"
    ))
}

async fn write_owner(tier: &dyn StorageTier, key: &str, owner: &LockOwner) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(owner)
        .map_err(|e| Error::unexpected("cannot serialize a lock").with_source(e))?;
    tier.write_all(key, bytes).await
}

/// Whether process `pid` runs on this host.
fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// This host's name (`/proc/sys/kernel/hostname`, else `HOSTNAME`), as lock owners record it.
#[must_use]
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::{TierConfig, open_tier};

    #[tokio::test]
    async fn a_fresh_lock_is_refused_a_stale_one_taken_over_and_release_removes_it() {
        let tier = open_tier("mem", &TierConfig::Memory).unwrap();
        let first = TierLock::acquire(
            tier.clone(),
            "component-db",
            "backup db",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let err = TierLock::acquire(
            tier.clone(),
            "component-db",
            "prune",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("backup db"), "{err}");
        first.release().await.unwrap();
        assert!(
            lock_holder(tier.as_ref(), "component-db")
                .await
                .unwrap()
                .is_none()
        );

        // A holder that stopped beating long ago: taken over, with a warning naming it.
        let old = LockOwner {
            host: "gone-host".into(),
            pid: 4242,
            command: "backup db".into(),
            started_at: Utc::now() - chrono::Duration::hours(3),
            heartbeat_at: Utc::now() - chrono::Duration::hours(2),
            token: "old".into(),
        };
        write_owner(tier.as_ref(), &lock_key("component-db"), &old)
            .await
            .unwrap();
        // A holder on this host whose process is gone: taken over at once.
        let dead = LockOwner {
            host: host_name(),
            pid: u32::MAX - 1,
            heartbeat_at: Utc::now(),
            ..old.clone()
        };
        write_owner(tier.as_ref(), &lock_key("component-db"), &dead)
            .await
            .unwrap();
        TierLock::acquire(
            tier.clone(),
            "component-db",
            "backup db",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
        write_owner(tier.as_ref(), &lock_key("component-db"), &old)
            .await
            .unwrap();
        let sink = std::sync::Arc::new(zdr_core::RecordingSink::default());
        let progress = Progress::new(sink.clone());
        let taken = TierLock::acquire(
            tier.clone(),
            "component-db",
            "backup db",
            Duration::from_secs(60),
            &progress,
        )
        .await
        .unwrap();
        let warnings = sink.messages(zdr_core::Level::Warn);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("gone-host") && w.contains("4242")),
            "{warnings:?}"
        );
        // The heartbeat keeps it fresh.
        let before = lock_holder(tier.as_ref(), "component-db")
            .await
            .unwrap()
            .unwrap();
        drop(taken);
        assert_eq!(before.pid, std::process::id());
        assert_eq!(
            remove_lock(tier.as_ref(), "component-db")
                .await
                .unwrap()
                .map(|o| o.pid),
            Some(std::process::id())
        );
        assert!(
            lock_holder(tier.as_ref(), "component-db")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_heartbeat_moves_while_the_lock_is_held() {
        let tier = open_tier("mem", &TierConfig::Memory).unwrap();
        let lock = TierLock::acquire(
            tier.clone(),
            "prune",
            "prune",
            Duration::from_millis(800),
            &Progress::none(),
        )
        .await
        .unwrap();
        let first = lock_holder(tier.as_ref(), "prune").await.unwrap().unwrap();
        let mut moved = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = lock_holder(tier.as_ref(), "prune").await.unwrap().unwrap();
            if now.heartbeat_at > first.heartbeat_at {
                moved = true;
                break;
            }
        }
        assert!(moved, "no heartbeat within 2.5 s");
        lock.release().await.unwrap();
    }
}
