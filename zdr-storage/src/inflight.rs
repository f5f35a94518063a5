//! Writes in progress in this process, so a run told to stop can remove what it started.
//!
//! Every artifact upload (backup, replication, WAL push) registers its tier and key before
//! it opens the writer and deregisters once the object and its sidecar are in place. What is
//! still registered when a process is interrupted is a partial write: its temporary file on
//! a local disk, its unfinished multipart upload on S3, or an object without its sidecar.
//! [`abandon_in_flight`] removes them; a run killed outright leaves them to the next run's
//! sweep instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use zdr_core::StorageTier;

struct Flight {
    id: u64,
    tier: Arc<dyn StorageTier>,
    key: String,
}

static FLIGHTS: Mutex<Vec<Flight>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A registered write; see [`begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlightId(u64);

/// Register a write of `key` on `tier` that is about to start.
pub(crate) fn begin(tier: &Arc<dyn StorageTier>, key: &str) -> FlightId {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut f) = FLIGHTS.lock() {
        f.push(Flight {
            id,
            tier: tier.clone(),
            key: key.to_owned(),
        });
    }
    FlightId(id)
}

/// The write `id` is complete, or was cleaned up by its own run: nothing to abandon.
pub(crate) fn end(id: FlightId) {
    if let Ok(mut f) = FLIGHTS.lock() {
        f.retain(|x| x.id != id.0);
    }
}

/// The writes of `key` on the tier named `tier` were cleaned up by their own run.
pub(crate) fn forget(tier: &str, key: &str) {
    if let Ok(mut f) = FLIGHTS.lock() {
        f.retain(|x| !(x.key == key && x.tier.name() == tier));
    }
}

/// What [`abandon_in_flight`] removed, or could not.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Abandoned {
    /// `tier:key` of every partial write removed (temporary files, unfinished uploads,
    /// objects without their sidecar).
    pub removed: Vec<String>,
    /// `tier:key: error` of every partial write that could not be removed (the next run's
    /// sweep removes it once it is older than the grace period).
    pub failed: Vec<String>,
}

/// Remove every write this process started and did not finish: for a run that is being
/// interrupted (SIGINT, SIGTERM) or a service shutting down with operations in progress.
/// Call it once the operations are stopped, or are about to be.
pub async fn abandon_in_flight() -> Abandoned {
    let flights = match FLIGHTS.lock() {
        Ok(mut f) => std::mem::take(&mut *f),
        Err(_) => Vec::new(),
    };
    let mut out = Abandoned::default();
    for f in flights {
        let name = format!("{}:{}", f.tier.name(), f.key);
        let sidecar = zdr_core::layout::sidecar_key(&f.key);
        let mut result = f.tier.delete(&f.key).await;
        if result.is_ok() {
            result = f.tier.delete(&sidecar).await;
        }
        match result {
            Ok(()) => out.removed.push(name),
            Err(e) => out.failed.push(format!("{name}: {e}")),
        }
    }
    out
}
