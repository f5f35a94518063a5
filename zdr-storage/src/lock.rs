//! Locks held on a tier, so that runs on two hosts sharing it (an S3 bucket) see each other: a
//! backup of a component and a prune of it never work at the same time.
//!
//! A lock is the object `locks/<name>.json` holding its owner (host, pid, command, start time,
//! a random token) and a heartbeat the holder rewrites while it works. A lock whose heartbeat is
//! older than the stale time is taken over, with a warning naming the old owner; a fresh one is
//! refused with [`ErrorKind::Conflict`] naming it. Taking a lock writes it and reads it back
//! after a moment: of two runs writing at once, only the one whose token stayed goes on.
//!
//! [`TierLock::take`] waits for a held lock up to [`LockPolicy::wait`]: it asks the tier
//! again with a growing pause (200 ms up to 5 s), and at once when a lock of this process is
//! released. The locks zdr takes:
//! - [`component_lock`] on the primary tier, held by a backup of the component; on a replica
//!   tier, held by a replication writing the component's backups there; on every tier a
//!   prune works on, held while it decides and deletes the component's backups there;
//! - [`REPOSITORY_LOCK`] on every tier a prune works on, for the whole prune: one prune of a
//!   tier at a time. Backups of different components never wait for each other.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zdr_core::{Error, ErrorKind, Progress, Result, StorageTier};

/// The prefix of lock objects on a tier.
pub const LOCKS: &str = "locks/";

/// The name of the lock a prune holds on a tier while it works there.
pub const REPOSITORY_LOCK: &str = "repository";

/// The name of the lock a backup, a replication or a prune of `component` holds on a tier.
#[must_use]
pub fn component_lock(component: &str) -> String {
    format!("component-{component}")
}

/// How a run takes a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    /// A lock whose heartbeat is older than this is taken over (default 10 minutes).
    pub stale: Duration,
    /// How long to wait for a lock another run holds before giving up with
    /// [`ErrorKind::Conflict`] (default 1 hour; zero: give up at once).
    pub wait: Duration,
}

impl Default for LockPolicy {
    fn default() -> Self {
        Self {
            stale: Duration::from_secs(600),
            wait: Duration::from_secs(3600),
        }
    }
}

/// Woken whenever a lock of this process is released or dropped, so a run of the same
/// process waiting for it goes on at once instead of at its next look.
static RELEASED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The longest pause between two looks at a held lock.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// How long a tier may keep failing with temporary errors while a lock is taken on it: past
/// this its error is returned, whatever is left of the wait (which is for a lock another run
/// holds, not for a server that is down).
pub const TIER_DOWN_AFTER: Duration = Duration::from_secs(30);

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
    /// The heartbeat task, and the sender whose drop stops it (after a write in flight).
    heartbeat: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
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
        let Some((beat, stop)) = self.heartbeat.take() else {
            return;
        };
        drop(stop);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tier = Arc::clone(&self.tier);
            let key = self.key.clone();
            let token = self.token.clone();
            handle.spawn(async move {
                // A heartbeat write in flight lands first, then the lock goes.
                let _ = beat.await;
                let _ = remove_if_ours(tier.as_ref(), &key, &token).await;
                RELEASED.notify_waiters();
            });
        } else {
            beat.abort();
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
    /// Take lock `name` on `tier` for `command`, waiting up to `policy.wait` while another
    /// run holds it (a progress message says once who it waits for). A holder that goes
    /// stale meanwhile is taken over as [`TierLock::acquire`] does.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] naming the holder when the lock is still held after the
    /// wait; storage errors.
    pub async fn take(
        tier: Arc<dyn StorageTier>,
        name: &str,
        command: &str,
        policy: &LockPolicy,
        progress: &Progress,
    ) -> Result<Self> {
        let mut waiting = Waiting::new(policy.wait);
        let mut down = Down::default();
        loop {
            // Listen before looking, so a release right after the look is not missed.
            let released = RELEASED.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // Held elsewhere, or the tier failed for a moment: look again until the deadline.
            let err = match Self::acquire(tier.clone(), name, command, policy.stale, progress).await
            {
                Err(e) if e.kind() == ErrorKind::Conflict || e.is_temporary() => e,
                other => return other,
            };
            if down.for_too_long(&err) {
                return Err(Down::give_up(err));
            }
            if waiting.over() {
                return Err(waiting.give_up(err));
            }
            waiting.pause(released, &err, progress).await;
        }
    }

    /// Take lock `name` on every tier of `tiers` for `command`, waiting up to `policy.wait`
    /// while some are held — all at once or none: while it waits it holds none of them, so
    /// two runs taking the same locks in different orders (two hosts whose configs list
    /// the tiers differently) never hold one each and wait for the other. Past the wait, the
    /// locks it could take are kept and the others answered with the conflict. The results
    /// are in the order of `tiers`; a tier that fails otherwise (not a conflict, not a
    /// passing failure) is answered with its error at once.
    pub async fn take_each(
        tiers: &[Arc<dyn StorageTier>],
        name: &str,
        command: &str,
        policy: &LockPolicy,
        progress: &Progress,
    ) -> Vec<Result<Self>> {
        let mut waiting = Waiting::new(policy.wait);
        // A tier that failed for good (or stayed down too long) keeps its error.
        let mut failed: Vec<Option<Error>> = tiers.iter().map(|_| None).collect();
        let mut down: Vec<Down> = tiers.iter().map(|_| Down::default()).collect();
        loop {
            let mut taken: Vec<Option<Result<Self>>> = Vec::with_capacity(tiers.len());
            let mut busy: Option<Error> = None;
            for (i, tier) in tiers.iter().enumerate() {
                if failed[i].is_some() {
                    taken.push(None);
                    continue;
                }
                match Self::acquire(tier.clone(), name, command, policy.stale, progress).await {
                    Ok(l) => taken.push(Some(Ok(l))),
                    Err(e) if down[i].for_too_long(&e) => {
                        failed[i] = Some(Down::give_up(e));
                        taken.push(None);
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict || e.is_temporary() => {
                        if busy.is_none() {
                            busy = Some(Error::new(e.kind(), e.to_string()));
                        }
                        taken.push(Some(Err(e)));
                    }
                    Err(e) => {
                        failed[i] = Some(e);
                        taken.push(None);
                    }
                }
            }
            let Some(busy) = busy.filter(|_| !waiting.over()) else {
                return taken
                    .into_iter()
                    .zip(failed)
                    .map(|(t, f)| match (t, f) {
                        (_, Some(e)) => Err(e),
                        (Some(Err(e)), None) => Err(waiting.give_up(e)),
                        (Some(r), None) => r,
                        (None, None) => Err(Error::unexpected("a lock was not tried")),
                    })
                    .collect();
            };
            for l in taken.into_iter().flatten().flatten() {
                let _ = l.release().await;
            }
            // Listening only now: its own releases must not wake it (that would spin). A
            // release elsewhere in the process since its look is seen at the next look.
            let released = RELEASED.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            waiting.pause(released, &busy, progress).await;
        }
    }

    /// Take lock `name` on `tier` for `command`, without waiting. A lock whose heartbeat is
    /// older than `stale` is taken over (a warning names its owner); the heartbeat is rewritten every
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
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let heartbeat = {
            let tier = tier.clone();
            let key = key.clone();
            let name = name.to_owned();
            let mut me = me.clone();
            tokio::spawn(async move {
                let every = (stale / 4).max(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        // Released or dropped: the sender is gone.
                        _ = &mut stopped => return,
                        () = tokio::time::sleep(every) => {}
                    }
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
            heartbeat: Some((heartbeat, stop)),
        })
    }

    /// Stop the heartbeat and remove the lock (when it is still this one's).
    ///
    /// # Errors
    /// Storage errors removing it.
    pub async fn release(mut self) -> Result<()> {
        if let Some((beat, stop)) = self.heartbeat.take() {
            drop(stop);
            // A heartbeat write in flight lands before the removal, never after it.
            let _ = beat.await;
        }
        let removed = remove_if_ours(self.tier.as_ref(), &self.key, &self.token).await;
        RELEASED.notify_waiters();
        removed
    }
}

/// The wait of [`TierLock::take`] and [`TierLock::take_each`]: a deadline, and pauses that
/// grow (200 ms to 5 s) and are spread at random, cut short by a release in this process.
/// Since when a tier has failed with temporary errors, look after look.
#[derive(Default)]
struct Down {
    since: Option<tokio::time::Instant>,
}

impl Down {
    /// Whether `err` (the latest look's) ends a run of temporary failures longer than
    /// [`TIER_DOWN_AFTER`]; a conflict (the tier answered) starts the count again.
    fn for_too_long(&mut self, err: &Error) -> bool {
        if err.kind() == ErrorKind::Conflict || !err.is_temporary() {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        since.elapsed() >= TIER_DOWN_AFTER
    }

    /// `err`, saying how long the tier kept failing.
    fn give_up(err: Error) -> Error {
        err.with_context("failing for", seconds(TIER_DOWN_AFTER))
    }
}

struct Waiting {
    wait: Duration,
    deadline: tokio::time::Instant,
    pause: Duration,
    announced: bool,
}

impl Waiting {
    fn new(wait: Duration) -> Self {
        let start = tokio::time::Instant::now();
        Self {
            wait,
            deadline: start
                .checked_add(wait)
                .unwrap_or_else(|| start + Duration::from_secs(30 * 365 * 86_400)),
            pause: Duration::from_millis(200),
            announced: false,
        }
    }

    /// Whether the wait is over.
    fn over(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// `err`, naming the wait when there was one.
    fn give_up(&self, err: Error) -> Error {
        if self.wait.is_zero() {
            err
        } else {
            err.with_context("waited", seconds(self.wait))
        }
    }

    /// Say once what it waits for, then pause until the next look or a release.
    async fn pause(
        &mut self,
        released: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        what: &Error,
        progress: &Progress,
    ) {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if !self.announced {
            self.announced = true;
            progress.info(format!("waiting up to {} for {what}", seconds(left)));
        }
        // Spread the next looks of runs that wait for the same lock.
        let spread = self.pause.mul_f64(0.75 + rand::random::<f64>() / 2.0);
        tokio::select! {
            () = released => {
                let stagger = Duration::from_millis(rand::random::<u64>() % 100);
                tokio::time::sleep(stagger.min(left)).await;
            }
            () = tokio::time::sleep(spread.min(left)) => {}
        }
        self.pause = (self.pause * 2).min(MAX_PAUSE);
    }
}

/// `12 s`, `0.6 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
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

    /// A tier whose server is down: every call fails with a temporary error.
    struct DownTier;

    fn refused() -> Error {
        Error::new(
            ErrorKind::Source,
            "error sending request: connection refused",
        )
        .temporary()
    }

    #[async_trait::async_trait]
    impl StorageTier for DownTier {
        fn name(&self) -> &str {
            "down"
        }
        async fn writer(&self, _key: &str) -> Result<zdr_core::BoxWrite> {
            Err(refused())
        }
        async fn reader(&self, _key: &str) -> Result<zdr_core::BoxRead> {
            Err(refused())
        }
        async fn read_all(&self, _key: &str) -> Result<Vec<u8>> {
            Err(refused())
        }
        async fn write_all(&self, _key: &str, _bytes: Vec<u8>) -> Result<()> {
            Err(refused())
        }
        async fn list(&self, _prefix: &str) -> Result<Vec<zdr_core::Entry>> {
            Err(refused())
        }
        async fn stat(&self, _key: &str) -> Result<Option<zdr_core::Entry>> {
            Err(refused())
        }
        async fn delete(&self, _key: &str) -> Result<()> {
            Err(refused())
        }
    }

    /// A server that stays down while a lock is taken on it is an error after
    /// [`TIER_DOWN_AFTER`], not a wait for the whole lock wait (an hour by default); with
    /// several tiers, the others' locks are still taken.
    #[tokio::test(start_paused = true)]
    async fn a_tier_that_stays_down_is_an_error_long_before_the_lock_wait() {
        let down: Arc<dyn StorageTier> = Arc::new(DownTier);
        let policy = LockPolicy {
            stale: Duration::from_secs(600),
            wait: Duration::from_secs(3600),
        };
        let started = tokio::time::Instant::now();
        let err = TierLock::take(
            down.clone(),
            "component-db",
            "replicate",
            &policy,
            &Progress::none(),
        )
        .await
        .unwrap_err();
        let took = started.elapsed();
        assert!(err.is_temporary(), "{err}");
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert!(err.to_string().contains("failing for"), "{err}");
        assert!(
            took >= TIER_DOWN_AFTER && took < TIER_DOWN_AFTER + MAX_PAUSE * 2,
            "{took:?}"
        );

        let up = open_tier("mem", &TierConfig::Memory).unwrap();
        let started = tokio::time::Instant::now();
        let mut taken = TierLock::take_each(
            &[down, up.clone()],
            "component-db",
            "replicate",
            &policy,
            &Progress::none(),
        )
        .await;
        assert!(started.elapsed() < TIER_DOWN_AFTER + MAX_PAUSE * 2);
        let second = taken.pop().unwrap().unwrap();
        let first = taken.pop().unwrap().unwrap_err();
        assert!(first.to_string().contains("failing for"), "{first}");
        assert!(
            lock_holder(up.as_ref(), "component-db")
                .await
                .unwrap()
                .is_some()
        );
        second.release().await.unwrap();
    }

    fn policy(wait_ms: u64) -> LockPolicy {
        LockPolicy {
            stale: Duration::from_secs(60),
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[tokio::test]
    async fn take_waits_for_a_release_in_this_process_and_for_a_removal_elsewhere() {
        let tier = open_tier("mem", &TierConfig::Memory).unwrap();
        let held = TierLock::acquire(
            tier.clone(),
            "component-db",
            "backup db",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let sink = std::sync::Arc::new(zdr_core::RecordingSink::default());
        let progress = Progress::new(sink.clone());
        let waiter = {
            let tier = tier.clone();
            tokio::spawn(async move {
                TierLock::take(tier, "component-db", "prune", &policy(60_000), &progress).await
            })
        };
        // The waiter says whom it waits for, then still waits.
        while sink.messages(zdr_core::Level::Info).is_empty() {
            tokio::task::yield_now().await;
        }
        let said = sink.messages(zdr_core::Level::Info);
        assert!(
            said[0].contains("waiting up to") && said[0].contains("backup db"),
            "{said:?}"
        );
        assert!(!waiter.is_finished());
        held.release().await.unwrap();
        let mine = waiter.await.unwrap().unwrap();
        let holder = lock_holder(tier.as_ref(), "component-db")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(holder.command, "prune");

        // A holder elsewhere (no wake-up here): seen gone at a later look.
        let waiter = {
            let tier = tier.clone();
            tokio::spawn(async move {
                TierLock::take(
                    tier,
                    "component-db",
                    "backup db",
                    &policy(60_000),
                    &Progress::none(),
                )
                .await
            })
        };
        tier.delete(&lock_key("component-db")).await.unwrap();
        waiter.await.unwrap().unwrap().release().await.unwrap();
        drop(mine);
    }

    /// On a paused clock: a waiter whose looks have grown 5 s apart takes the lock within
    /// the read-back pause of its release in this process, not at its next look.
    #[tokio::test(start_paused = true)]
    async fn a_release_in_this_process_wakes_the_waiter_at_once() {
        let tier = open_tier("mem", &TierConfig::Memory).unwrap();
        let held = TierLock::acquire(
            tier.clone(),
            "component-db",
            "backup db",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let waiter = {
            let tier = tier.clone();
            tokio::spawn(async move {
                let r = TierLock::take(
                    tier,
                    "component-db",
                    "prune",
                    &policy(600_000),
                    &Progress::none(),
                )
                .await;
                (r, tokio::time::Instant::now())
            })
        };
        // Long enough for the waiter's pause to reach its 5 s ceiling.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let released_at = tokio::time::Instant::now();
        held.release().await.unwrap();
        let (taken, at) = waiter.await.unwrap();
        taken.unwrap().release().await.unwrap();
        let after = at - released_at;
        assert!(
            after < Duration::from_millis(400),
            "taken {after:?} after the release"
        );
    }

    #[tokio::test]
    async fn take_each_waits_holding_none_and_keeps_what_it_could_take() {
        let a = open_tier("a", &TierConfig::Memory).unwrap();
        let b = open_tier("b", &TierConfig::Memory).unwrap();
        let held = TierLock::acquire(
            b.clone(),
            REPOSITORY_LOCK,
            "prune",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let tiers = vec![a.clone(), b.clone()];
        let sink = std::sync::Arc::new(zdr_core::RecordingSink::default());
        let progress = Progress::new(sink.clone());
        let waiter = {
            let tiers = tiers.clone();
            tokio::spawn(async move {
                TierLock::take_each(&tiers, REPOSITORY_LOCK, "prune", &policy(60_000), &progress)
                    .await
            })
        };
        while sink.messages(zdr_core::Level::Info).is_empty() {
            tokio::task::yield_now().await;
        }
        // While it waits for b it does not hold a.
        let mut free = false;
        for _ in 0..100 {
            if lock_holder(a.as_ref(), REPOSITORY_LOCK)
                .await
                .unwrap()
                .is_none()
            {
                free = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(free, "tier a stayed locked while the run waited for b");
        held.release().await.unwrap();
        let got = waiter.await.unwrap();
        assert_eq!(got.len(), 2);
        for l in got {
            l.unwrap().release().await.unwrap();
        }
        // Past the wait: the lock it could take is kept, the other answered with the holder.
        let held = TierLock::acquire(
            b.clone(),
            REPOSITORY_LOCK,
            "prune",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let mut got = TierLock::take_each(
            &tiers,
            REPOSITORY_LOCK,
            "prune",
            &policy(300),
            &Progress::none(),
        )
        .await;
        let second = got.pop().unwrap().unwrap_err();
        assert_eq!(second.kind(), ErrorKind::Conflict);
        assert_eq!(second.context_value("waited"), Some("0.3 s"));
        got.pop().unwrap().unwrap().release().await.unwrap();
        held.release().await.unwrap();
    }

    #[tokio::test]
    async fn take_gives_up_after_the_wait_naming_the_holder_and_at_once_without_one() {
        let tier = open_tier("mem", &TierConfig::Memory).unwrap();
        let held = TierLock::acquire(
            tier.clone(),
            REPOSITORY_LOCK,
            "prune",
            Duration::from_secs(60),
            &Progress::none(),
        )
        .await
        .unwrap();
        let err = TierLock::take(
            tier.clone(),
            REPOSITORY_LOCK,
            "prune",
            &policy(600),
            &Progress::none(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("held by prune"), "{err}");
        assert_eq!(err.context_value("waited"), Some("0.6 s"));
        let err = TierLock::take(
            tier.clone(),
            REPOSITORY_LOCK,
            "prune",
            &policy(0),
            &Progress::none(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.context_value("waited"), None);
        held.release().await.unwrap();
        TierLock::take(
            tier.clone(),
            REPOSITORY_LOCK,
            "prune",
            &policy(0),
            &Progress::none(),
        )
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
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
