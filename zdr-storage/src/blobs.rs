//! Content-addressed blobs: the [`BlobStore`] a backup hands to a source whose data is many
//! objects that change little (object storage), the reader of a backup's blob list, and
//! the sweep of blobs no backup references any more.
//!
//! A blob is stored once per component, at [`layout::blob_key`] (the SHA-256 of its raw
//! content), through the same pipeline as any artifact: compressed, encrypted when the
//! pipeline encrypts, with a `.sha256` sidecar over the stored bytes. A backup names the
//! blobs it uses in its *blob list*, a JSON-lines artifact with one [`BlobRef`] per line,
//! which is never encrypted (it holds only content hashes and sizes), so checks,
//! replication and pruning can follow it on a host without the decryption key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use zdr_core::{
    ArtifactRecord, ArtifactWrite, BlobPut, BlobRef, BlobStore, BoxRead, Component, Error,
    ErrorKind, Manifest, Progress, Result, StorageTier, layout,
};

use crate::keys::AgeKeys;
use crate::pipeline::{
    CHUNK, FailureSlot, PipelineOptions, PipelineWriter, Sidecar, open_artifact, read_sidecar,
};

/// Blobs of at most this many raw bytes are stored in packs.
pub const PACKED_MAX: u64 = 1 << 20;
/// A pack is stored once it holds this many bytes (the default of
/// [`PipelineOptions::blob_pack_size`]).
pub const DEFAULT_PACK_SIZE: u64 = 4 << 20;
/// Blobs of at most this many raw bytes are encoded on the task that stores them.
const ENCODE_INLINE: u64 = 128 << 10;
/// Packs held at once: the one filling and those being stored. A new pack waits for a
/// slot, so memory stays at a few packs whatever the number of blobs.
const PACKS_IN_FLIGHT: usize = 3;
/// Pack tables kept after a lookup.
const TABLES_KEPT: usize = 8;
/// The place of a blob stored on its own in [`Known`].
const ALONE: u32 = u32::MAX;

/// The blob store of one backup on one tier.
///
/// A blob of up to [`PACKED_MAX`] raw bytes is compressed and encrypted in memory and put
/// into the pack filling; the pack is stored (pack, table, sidecar last) once it holds
/// [`PipelineOptions::blob_pack_size`] bytes, and at [`BlobStore::flush`]. A larger blob is
/// stored on its own through the pipeline. Content already stored on the tier — alone, or in
/// a complete pack (with its sidecar and table) of any backup, finished or not — is found
/// through one listing of the component's blobs and the tables of its packs, read when the
/// first new content arrives.
pub(crate) struct TierBlobs {
    tier: Arc<dyn StorageTier>,
    options: PipelineOptions,
    component: Component,
    progress: Progress,
    /// Blobs being stored right now, so two objects with the same content in one backup
    /// store it once (an encrypted blob differs byte for byte on every write).
    busy: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// What the tier held when the first new content arrived, and what this backup stored
    /// since; shared with the tasks storing packs.
    shared: Arc<Shared>,
    /// Room for packs being stored.
    slots: Arc<tokio::sync::Semaphore>,
    /// The tables last read (most recent last), for runs of finds in the same packs.
    tables: Mutex<Vec<(String, Arc<Vec<ArtifactRecord>>)>>,
}

#[derive(Default)]
struct Shared {
    known: tokio::sync::OnceCell<Mutex<Known>>,
    packing: Mutex<Packing>,
    /// The first pack that could not be stored: every later call fails with it.
    failed: Mutex<Option<Error>>,
}

impl Shared {
    /// A pack is stored: its blobs are found through the known set from now on.
    fn stored(&self, key: &str, records: &[ArtifactRecord]) {
        if let Some(known) = self.known.get()
            && let Ok(mut known) = known.lock()
        {
            known.add_pack(key.to_owned(), records);
        }
        if let Ok(mut packing) = self.packing.lock() {
            for r in records {
                if packing.pending.get(&r.name).is_some_and(|p| p.key == key) {
                    packing.pending.remove(&r.name);
                }
            }
        }
    }

    fn fail(&self, e: Error) {
        if let Ok(mut f) = self.failed.lock()
            && f.is_none()
        {
            *f = Some(e);
        }
    }
}

/// Stored blobs by the first 8 bytes of their SHA-256: the pack holding each (an index into
/// `packs`), or [`ALONE`]. What the tier held is two sorted arrays, 12 bytes a blob whatever
/// the number of backups; what this backup stored since is a map. A match is confirmed
/// against the pack's table or the blob's own sidecar.
#[derive(Default)]
struct Known {
    packs: Vec<String>,
    prefixes: Vec<u64>,
    places: Vec<u32>,
    added: HashMap<u64, u32>,
}

impl Known {
    /// The set from what a listing and the tables gave: `(prefix, place)` pairs.
    fn loaded(packs: Vec<String>, mut pairs: Vec<(u64, u32)>) -> Self {
        pairs.sort_unstable_by_key(|(p, _)| *p);
        let (prefixes, places) = pairs.into_iter().unzip();
        Self {
            packs,
            prefixes,
            places,
            added: HashMap::new(),
        }
    }

    fn place(&self, p: u64) -> Option<u32> {
        if let Some(&n) = self.added.get(&p) {
            return Some(n);
        }
        let at = self.prefixes.binary_search(&p).ok()?;
        self.places.get(at).copied()
    }

    fn add_pack(&mut self, key: String, records: &[ArtifactRecord]) {
        let Ok(n) = u32::try_from(self.packs.len()) else {
            return;
        };
        self.packs.push(key);
        for r in records {
            if let Some(p) = prefix(&r.name) {
                self.added.insert(p, n);
            }
        }
    }

    fn add_alone(&mut self, sha256: &str) {
        if let Some(p) = prefix(sha256) {
            self.added.insert(p, ALONE);
        }
    }
}

/// The first 8 bytes of a hex SHA-256.
fn prefix(sha256: &str) -> Option<u64> {
    u64::from_str_radix(sha256.get(..16)?, 16).ok()
}

/// The pack filling and the blobs of this backup whose pack is not stored yet.
#[derive(Default)]
struct Packing {
    current: Option<OpenPack>,
    pending: HashMap<String, ArtifactRecord>,
}

struct OpenPack {
    key: String,
    bytes: Vec<u8>,
    records: Vec<ArtifactRecord>,
    /// Its slot, from the first blob until it is stored.
    slot: tokio::sync::OwnedSemaphorePermit,
}

impl TierBlobs {
    pub(crate) fn new(
        tier: Arc<dyn StorageTier>,
        options: &PipelineOptions,
        component: Component,
        progress: Progress,
    ) -> Self {
        // Blobs are small and many: compress each on its own pipeline thread.
        let options = PipelineOptions {
            zstd_workers: 0,
            lz4_workers: 0,
            ..options.clone()
        };
        Self {
            tier,
            options,
            component,
            progress,
            busy: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared::default()),
            slots: Arc::new(tokio::sync::Semaphore::new(PACKS_IN_FLIGHT)),
            tables: Mutex::new(Vec::new()),
        }
    }

    fn key(&self, sha256: &str) -> String {
        layout::blob_key(
            &self.component,
            sha256,
            self.options.compression,
            self.options.keys.encrypts(),
        )
    }

    /// The first failure to store a pack, as an error of its own kind.
    fn failure(&self) -> Option<Error> {
        let f = self.shared.failed.lock().ok()?;
        f.as_ref().map(|e| {
            let again = Error::new(
                e.kind(),
                format!("a pack of blobs could not be stored: {e}"),
            )
            .with_context("tier", self.tier.name());
            match e.context_value("key") {
                Some(key) => again.with_context("key", key),
                None => again,
            }
        })
    }

    /// What the tier holds, read once: one listing of the component's blobs, and the table
    /// of each complete pack.
    async fn known(&self) -> Result<&Mutex<Known>> {
        self.shared
            .known
            .get_or_try_init(|| async {
                let entries = self
                    .tier
                    .list(&layout::blob_prefix(&self.component))
                    .await?;
                let keys: std::collections::HashSet<&str> =
                    entries.iter().map(|e| e.key.as_str()).collect();
                let mut pairs: Vec<(u64, u32)> = Vec::new();
                let mut packs = Vec::new();
                for e in &entries {
                    let complete = keys.contains(layout::sidecar_key(&e.key).as_str());
                    if !complete {
                        continue;
                    }
                    if e.key.ends_with(".pack") {
                        let table = layout::pack_table_key(&e.key);
                        if keys.contains(table.as_str())
                            && keys.contains(layout::sidecar_key(&table).as_str())
                        {
                            packs.push((e.key.clone(), e.size));
                        }
                        continue;
                    }
                    let Some(name) = e.key.rsplit('/').next() else {
                        continue;
                    };
                    let sha = name.get(..64).unwrap_or("");
                    if layout::is_sha256_hex(sha)
                        && self.key(sha) == e.key
                        && let Some(p) = prefix(sha)
                    {
                        pairs.push((p, ALONE));
                    }
                }
                drop(keys);
                drop(entries);
                // The tables one after the other as they arrive, never all at once.
                use futures::StreamExt;
                let mut tables =
                    futures::stream::iter(packs.into_iter().map(|(key, size)| async move {
                        (read_table(self.tier.as_ref(), &key, size).await, key)
                    }))
                    .buffer_unordered(8);
                let mut usable = Vec::new();
                while let Some((table, key)) = tables.next().await {
                    match table {
                        Ok::<Vec<ArtifactRecord>, Error>(records) => {
                            let Ok(n) = u32::try_from(usable.len()) else {
                                continue;
                            };
                            pairs.extend(
                                records
                                    .iter()
                                    .filter_map(|r| prefix(&r.name))
                                    .map(|p| (p, n)),
                            );
                            usable.push(key);
                        }
                        Err(e) => self.progress.warn(format!(
                            "the pack {key} is not shared: its table cannot be used ({e})"
                        )),
                    }
                }
                Ok::<_, Error>(Mutex::new(Known::loaded(usable, pairs)))
            })
            .await
    }

    /// The record of the stored (or being stored) blob `sha256` of `raw_size` bytes, as this
    /// backup's options would store it.
    async fn lookup(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>> {
        let pending = self
            .shared
            .packing
            .lock()
            .map_err(|_| Error::unexpected("pack state poisoned"))?
            .pending
            .get(sha256)
            .cloned();
        if let Some(r) = pending.filter(|r| r.raw_size == raw_size) {
            return Ok(Some(r));
        }
        let Some(p) = prefix(sha256) else {
            return Ok(None);
        };
        let place = {
            let known = self
                .known()
                .await?
                .lock()
                .map_err(|_| Error::unexpected("blob set poisoned"))?;
            match known.place(p) {
                None => return Ok(None),
                Some(ALONE) => None,
                Some(n) => known.packs.get(n as usize).cloned(),
            }
        };
        let Some(pack) = place else {
            return self.find_alone(sha256, raw_size).await;
        };
        let table = self.table_of(&pack).await?;
        Ok(table
            .iter()
            .find(|r| {
                r.name == sha256
                    && r.raw_size == raw_size
                    && r.compression == self.options.compression
                    && r.encryption == self.options.keys.encryption_record()
            })
            .cloned())
    }

    async fn table_of(&self, pack: &str) -> Result<Arc<Vec<ArtifactRecord>>> {
        if let Ok(mut kept) = self.tables.lock()
            && let Some(at) = kept.iter().position(|(key, _)| key == pack)
        {
            let hit = kept.remove(at);
            let table = hit.1.clone();
            kept.push(hit);
            return Ok(table);
        }
        let size = self.tier.stat(pack).await?.map(|e| e.size).ok_or_else(|| {
            Error::not_found("a pack of this component is gone").with_context("key", pack)
        })?;
        let table = Arc::new(read_table(self.tier.as_ref(), pack, size).await?);
        if let Ok(mut kept) = self.tables.lock() {
            if kept.len() >= TABLES_KEPT {
                kept.remove(0);
            }
            kept.push((pack.to_owned(), table.clone()));
        }
        Ok(table)
    }

    /// The record of the blob stored on its own, when it is complete (object and sidecar).
    async fn find_alone(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>> {
        let key = self.key(sha256);
        let Some(entry) = self.tier.stat(&key).await? else {
            return Ok(None);
        };
        // A blob whose sidecar is missing or damaged was cut short: it is stored again.
        let Sidecar::Digest(stored) = read_sidecar(self.tier.as_ref(), &key).await? else {
            return Ok(None);
        };
        Ok(Some(ArtifactRecord {
            name: sha256.to_owned(),
            key,
            size: entry.size,
            sha256: stored,
            raw_size,
            compression: self.options.compression,
            encryption: self.options.keys.encryption_record(),
            offset: None,
        }))
    }

    async fn store(&self, sha256: &str, raw_size: u64, content: BoxRead) -> Result<BlobPut> {
        if let Some(record) = self.lookup(sha256, raw_size).await? {
            return Ok(BlobPut {
                record,
                stored: false,
            });
        }
        let record = if raw_size <= PACKED_MAX && self.options.blob_pack_size > 0 {
            self.store_packed(sha256, raw_size, content).await?
        } else {
            let record = self.store_alone(sha256, raw_size, content).await?;
            if let Ok(mut known) = self.known().await?.lock() {
                known.add_alone(sha256);
            }
            record
        };
        Ok(BlobPut {
            record,
            stored: true,
        })
    }

    /// Encode the blob in memory and add it to the pack filling; store the pack when full.
    async fn store_packed(
        &self,
        sha256: &str,
        raw_size: u64,
        mut content: BoxRead,
    ) -> Result<ArtifactRecord> {
        let mut raw = Vec::with_capacity(usize::try_from(raw_size).unwrap_or(0));
        (&mut content)
            .take(raw_size.saturating_add(1))
            .read_to_end(&mut raw)
            .await
            .map_err(|e| Error::from_io(e, "reading the blob's content failed"))?;
        let actual = zdr_core::sha256_hex(&raw);
        if raw.len() as u64 != raw_size || actual != sha256 {
            return Err(Error::integrity(format!(
                "the content changed while it was read ({} bytes with SHA-256 {actual}, expected {raw_size} bytes with {sha256})",
                raw.len()
            ))
            .with_context("blob", sha256));
        }
        // A small blob is compressed where it was read (a fraction of a millisecond); a
        // larger or encrypted one (a passphrase costs a key derivation) on a blocking thread.
        // Fewer threads allocating keeps the allocator's memory near what is in use.
        let frame = if raw_size <= ENCODE_INLINE && !self.options.keys.encrypts() {
            crate::pipeline::encode_in_memory(&self.options, &raw)?
        } else {
            let options = self.options.clone();
            tokio::task::spawn_blocking(move || crate::pipeline::encode_in_memory(&options, &raw))
                .await
                .map_err(|e| Error::unexpected("the blob encoder stopped").with_source(e))??
        };
        let frame_sha = zdr_core::sha256_hex(&frame);
        // The known set is read before anything is stored, so the tasks storing packs can
        // add to it.
        self.known().await?;
        // A new pack first takes a slot, waiting while the packs held are being stored; a
        // slot taken while another put opened the pack is given back.
        let mut slot: Option<tokio::sync::OwnedSemaphorePermit> = None;
        let (record, full) = loop {
            {
                let mut packing = self
                    .shared
                    .packing
                    .lock()
                    .map_err(|_| Error::unexpected("pack state poisoned"))?;
                if packing.current.is_none()
                    && let Some(slot) = slot.take()
                {
                    packing.current = Some(OpenPack {
                        key: layout::pack_key(&self.component, &new_pack_id()),
                        bytes: Vec::with_capacity(pack_capacity(self.options.blob_pack_size)),
                        records: Vec::new(),
                        slot,
                    });
                }
                if let Some(open) = packing.current.as_mut() {
                    let record = ArtifactRecord {
                        name: sha256.to_owned(),
                        key: open.key.clone(),
                        size: frame.len() as u64,
                        sha256: frame_sha,
                        raw_size,
                        compression: self.options.compression,
                        encryption: self.options.keys.encryption_record(),
                        offset: Some(open.bytes.len() as u64),
                    };
                    open.bytes.extend_from_slice(&frame);
                    open.records.push(record.clone());
                    let full = if open.bytes.len() as u64 >= self.options.blob_pack_size {
                        packing.current.take()
                    } else {
                        None
                    };
                    packing.pending.insert(sha256.to_owned(), record.clone());
                    break (record, full);
                }
            }
            slot = Some(
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::unexpected("pack slots closed"))?,
            );
        };
        if let Some(pack) = full {
            self.seal(pack);
        }
        Ok(record)
    }

    /// Start storing `pack` (it keeps its slot until it is stored or has failed).
    fn seal(&self, pack: OpenPack) {
        let tier = self.tier.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let OpenPack {
                key,
                bytes,
                records,
                slot,
            } = pack;
            match store_pack(tier.as_ref(), &key, bytes, &records).await {
                Ok(()) => shared.stored(&key, &records),
                Err(e) => shared.fail(e),
            }
            drop(slot);
        });
    }

    /// Store the pack filling, and wait until no pack is being stored.
    async fn flush_packs(&self) -> Result<()> {
        let open = self
            .shared
            .packing
            .lock()
            .map_err(|_| Error::unexpected("pack state poisoned"))?
            .current
            .take();
        if let Some(pack) = open {
            self.seal(pack);
        }
        self.wait_for_packs().await;
        // The failure stays recorded: every later call fails too.
        match self.failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until every pack sealed so far is stored (or has failed).
    async fn wait_for_packs(&self) {
        let all = u32::try_from(PACKS_IN_FLIGHT).unwrap_or(u32::MAX);
        // The slots are never closed, so this ends once the last pack gives its slot back.
        drop(self.slots.acquire_many(all).await);
    }

    /// Wait until no pack is being stored, dropping the one filling (a failed backup: what
    /// it started is stored whole, or not at all, before it reports).
    pub(crate) async fn settle(&self) {
        if let Ok(mut packing) = self.shared.packing.lock() {
            packing.current = None;
        }
        self.wait_for_packs().await;
    }

    /// Store one blob alone through the pipeline.
    async fn store_alone(
        &self,
        sha256: &str,
        raw_size: u64,
        mut content: BoxRead,
    ) -> Result<ArtifactRecord> {
        let key = self.key(sha256);
        let mut w = PipelineWriter::start(
            self.tier.clone(),
            sha256,
            key.clone(),
            &self.options,
            self.progress.clone(),
            FailureSlot::default(),
            Arc::new(Mutex::new(Vec::new())),
        )?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(raw_size).unwrap_or(CHUNK).max(8192))];
        loop {
            let n = content
                .read(&mut buf)
                .await
                .map_err(|e| Error::from_io(e, "reading the blob's content failed"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            w.write_all(&buf[..n]).await.map_err(|e| {
                Error::from_io(e, "storing a blob failed")
                    .with_context("tier", self.tier.name())
                    .with_context("key", &key)
            })?;
        }
        let actual = hex::encode(hasher.finalize());
        if size != raw_size || actual != sha256 {
            // Dropping the writer abandons the write: nothing is stored under the name.
            return Err(Error::integrity(format!(
                "the content changed while it was read ({size} bytes with SHA-256 {actual}, expected {raw_size} bytes with {sha256})"
            ))
            .with_context("key", &key));
        }
        Box::new(w).finish().await
    }
}

/// Room for a pack that reaches `pack_size` with its last blob: no reallocation while it
/// fills (a frame is at most a little over [`PACKED_MAX`]).
fn pack_capacity(pack_size: u64) -> usize {
    let most = pack_size.min(64 << 20) + PACKED_MAX + (64 << 10);
    usize::try_from(most).unwrap_or(usize::MAX)
}

/// A fresh pack id: 32 random hex digits.
fn new_pack_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Store a full pack: its bytes, its table, then its sidecar (a pack without a sidecar was
/// cut short and is never used).
async fn store_pack(
    tier: &dyn StorageTier,
    key: &str,
    bytes: Vec<u8>,
    records: &[ArtifactRecord],
) -> Result<()> {
    let sha = zdr_core::sha256_hex(&bytes);
    let mut table = Vec::with_capacity(records.len() * 256);
    for r in records {
        serde_json::to_writer(&mut table, r)
            .map_err(|e| Error::unexpected("cannot write a pack's table").with_source(e))?;
        table.push(b'\n');
    }
    let table_key = layout::pack_table_key(key);
    let table_sha = zdr_core::sha256_hex(&table);
    tier.write_all(key, bytes).await?;
    tier.write_all(&table_key, table).await?;
    tier.write_all(
        &layout::sidecar_key(&table_key),
        layout::sidecar_line(&table_key, &table_sha).into_bytes(),
    )
    .await?;
    tier.write_all(
        &layout::sidecar_key(key),
        layout::sidecar_line(key, &sha).into_bytes(),
    )
    .await
}

/// The table of the pack at `key`, checked against its own `.sha256` sidecar.
pub(crate) async fn read_table_bytes(tier: &dyn StorageTier, key: &str) -> Result<Vec<u8>> {
    let table_key = layout::pack_table_key(key);
    let bytes = tier.read_all(&table_key).await?;
    match read_sidecar(tier, &table_key).await? {
        Sidecar::Digest(d) if d == zdr_core::sha256_hex(&bytes) => Ok(bytes),
        Sidecar::Missing => Err(Error::not_found("the pack's table has no .sha256 sidecar")
            .with_context("tier", tier.name())
            .with_context("key", &table_key)),
        _ => Err(
            Error::integrity("the pack's table does not match its .sha256 sidecar")
                .with_context("tier", tier.name())
                .with_context("key", &table_key),
        ),
    }
}

/// Copy the table of the pack at `key` (checked against its sidecar) from `from` to `to`,
/// the sidecar last. A source pack without a complete table is left without one on `to`
/// too: its blobs are still read through their records, only not shared by later backups.
pub(crate) async fn copy_pack_table(
    from: &dyn StorageTier,
    to: &dyn StorageTier,
    key: &str,
) -> Result<()> {
    let table_key = layout::pack_table_key(key);
    let bytes = match read_table_bytes(from, key).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let sha = zdr_core::sha256_hex(&bytes);
    to.write_all(&table_key, bytes).await?;
    to.write_all(
        &layout::sidecar_key(&table_key),
        layout::sidecar_line(&table_key, &sha).into_bytes(),
    )
    .await
}

/// The records of the pack at `key` (of `size` bytes), from its table; each must name a
/// slice of the pack.
async fn read_table(tier: &dyn StorageTier, key: &str, size: u64) -> Result<Vec<ArtifactRecord>> {
    let table_key = layout::pack_table_key(key);
    let bytes = read_table_bytes(tier, key).await?;
    let mut out = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r: ArtifactRecord = serde_json::from_slice(line).map_err(|e| {
            Error::integrity(format!(
                "line {} of the pack's table is not a blob record",
                i + 1
            ))
            .with_context("key", &table_key)
            .with_source(e)
        })?;
        let inside = r
            .offset
            .is_some_and(|o| o.checked_add(r.size).is_some_and(|end| end <= size));
        if r.key != key || !inside || !layout::is_sha256_hex(&r.name) {
            return Err(Error::integrity(format!(
                "line {} of the pack's table names a blob outside the pack",
                i + 1
            ))
            .with_context("key", &table_key));
        }
        out.push(r);
    }
    Ok(out)
}

#[async_trait]
impl BlobStore for TierBlobs {
    async fn find(&self, sha256: &str, raw_size: u64) -> Result<Option<ArtifactRecord>> {
        if !layout::is_sha256_hex(sha256) {
            return Err(Error::bad_input(format!(
                "{sha256:?} is not a lowercase hex SHA-256"
            )));
        }
        self.lookup(sha256, raw_size).await
    }

    async fn put(&self, sha256: &str, raw_size: u64, content: BoxRead) -> Result<BlobPut> {
        if !layout::is_sha256_hex(sha256) {
            return Err(Error::bad_input(format!(
                "{sha256:?} is not a lowercase hex SHA-256"
            )));
        }
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let lock = self
            .busy
            .lock()
            .map_err(|_| Error::unexpected("blob lock poisoned"))?
            .entry(sha256.to_owned())
            .or_default()
            .clone();
        let stored = {
            let _held = lock.lock().await;
            self.store(sha256, raw_size, content).await
        };
        if let Ok(mut busy) = self.busy.lock()
            && Arc::strong_count(&lock) <= 2
        {
            busy.remove(sha256);
        }
        stored
    }

    async fn flush(&self) -> Result<()> {
        self.flush_packs().await
    }
}

/// The blob list of `manifest`, read line by line (never whole).
pub struct BlobList {
    lines: tokio::io::Lines<BufReader<BoxRead>>,
    list_key: String,
    prefix: String,
    line: u64,
}

impl std::fmt::Debug for BlobList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobList")
            .field("key", &self.list_key)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl BlobList {
    /// Open the blob list of `manifest` on `tier`; `None` for a backup without blobs.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] when the manifest names a blob list it does not hold.
    pub fn open(
        tier: Arc<dyn StorageTier>,
        manifest: &Manifest,
        keys: &AgeKeys,
    ) -> Result<Option<Self>> {
        let Some(name) = &manifest.blob_index else {
            return Ok(None);
        };
        let record = manifest.artifact(name).ok_or_else(|| {
            Error::integrity(format!(
                "the manifest names blob list {name:?} but has no such artifact"
            ))
            .with_context("backup", &manifest.id)
        })?;
        let reader = open_artifact(tier, record, keys, Progress::none())?;
        Ok(Some(Self {
            lines: BufReader::with_capacity(1 << 16, reader).lines(),
            list_key: record.key.clone(),
            prefix: layout::blob_prefix(&manifest.component),
            line: 0,
        }))
    }

    /// The next blob's record, `None` at the (verified) end of the list.
    ///
    /// # Errors
    /// [`ErrorKind::Integrity`] for a damaged list or a line naming a key outside the
    /// component's blobs.
    pub async fn next(&mut self) -> Result<Option<ArtifactRecord>> {
        loop {
            let line = self.lines.next_line().await.map_err(|e| {
                Error::from_io(e, "reading the blob list failed")
                    .with_context("key", &self.list_key)
            })?;
            let Some(line) = line else {
                return Ok(None);
            };
            self.line += 1;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: BlobRef = serde_json::from_str(&line).map_err(|e| {
                Error::integrity(format!(
                    "line {} of the blob list is not a blob record",
                    self.line
                ))
                .with_context("key", &self.list_key)
                .with_source(e)
            })?;
            let key = &parsed.blob.key;
            if !key.starts_with(&self.prefix)
                || !layout::is_safe_key(key)
                || !layout::is_sha256_hex(&parsed.blob.name)
            {
                return Err(Error::integrity(format!(
                    "line {} of the blob list names {key:?}, not a blob of this component",
                    self.line
                ))
                .with_context("key", &self.list_key));
            }
            return Ok(Some(parsed.blob));
        }
    }
}

/// Check one blob as [`crate::verify_stored`] checks an artifact and, with `deep`, decode it
/// and check its raw content against the SHA-256 it is named by.
pub(crate) async fn verify_blob(
    tier: &Arc<dyn StorageTier>,
    keys: &AgeKeys,
    blob: &ArtifactRecord,
    deep: bool,
) -> Result<()> {
    crate::pipeline::verify_stored(tier.as_ref(), blob, &Progress::none()).await?;
    if !deep {
        return Ok(());
    }
    let mut r = open_artifact(tier.clone(), blob, keys, Progress::none())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| Error::from_io(e, "decoding failed").with_context("key", &blob.key))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let actual = hex::encode(hasher.finalize());
    if actual != blob.name || size != blob.raw_size {
        return Err(Error::integrity(format!(
            "the blob's content has SHA-256 {actual} ({size} bytes), not the {} it is named by",
            blob.name
        ))
        .with_context("tier", tier.name())
        .with_context("key", &blob.key));
    }
    Ok(())
}

/// What a sweep of unreferenced blobs found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlobSweep {
    /// The blobs (keys) removed, or that a dry run would remove.
    pub removed: Vec<String>,
    /// Their stored bytes.
    pub bytes: u64,
    /// Blobs still referenced by a backup on the tier.
    pub kept: usize,
}

/// Remove the blobs of `component` on `tier` that no backup in `manifests` (the backups of
/// the component kept on the tier) references and that are older than `grace`, so a backup in
/// progress, whose list is not written yet, keeps the blobs it just stored. A manifest on the
/// tier that is neither in `manifests` nor in `going` (the manifest keys of the backups being
/// deleted) — a backup that finished meanwhile — keeps its blobs too. With `dry_run`, only
/// lists them.
///
/// A backup still running references blobs it found stored before its manifest exists: run
/// prune and backups of the same component one at a time.
///
/// # Errors
/// Storage errors, and any blob list that cannot be read: then nothing is removed, since
/// its blobs would look unreferenced.
pub async fn sweep_blobs(
    tier: &Arc<dyn StorageTier>,
    keys: &AgeKeys,
    component: &Component,
    manifests: &[&Manifest],
    going: &[String],
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<BlobSweep> {
    let mut referenced: std::collections::HashSet<String> = std::collections::HashSet::new();
    for m in manifests {
        if &m.component != component {
            continue;
        }
        let Some(mut list) = BlobList::open(tier.clone(), m, keys)? else {
            continue;
        };
        while let Some(blob) = list.next().await? {
            referenced.insert(blob.key);
        }
    }
    let cutoff =
        chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let mut out = BlobSweep::default();
    let entries = tier.list(&layout::blob_prefix(component)).await?;
    // A backup that finished since the caller read the catalog keeps its blobs too.
    let known: std::collections::HashSet<String> = manifests
        .iter()
        .map(|m| layout::manifest_key(&m.component, &m.id))
        .chain(going.iter().cloned())
        .collect();
    let prefix = format!("{}{component}/", layout::MANIFESTS);
    for e in tier.list(&prefix).await? {
        if !e.key.ends_with(".json") || known.contains(&e.key) {
            continue;
        }
        let bytes = tier.read_all(&e.key).await?;
        let m = Manifest::from_json(&bytes).map_err(|err| err.with_context("key", &e.key))?;
        if let Some(mut list) = BlobList::open(tier.clone(), &m, keys)? {
            while let Some(blob) = list.next().await? {
                referenced.insert(blob.key);
            }
        }
    }
    for e in entries {
        // A pack's table and the sidecars of both go with the pack.
        let base = e.key.strip_suffix(".sha256").unwrap_or(&e.key);
        let blob_key = if base.ends_with(".pack.idx") {
            base.strip_suffix(".idx").unwrap_or(base)
        } else {
            base
        };
        if referenced.contains(blob_key) {
            if blob_key == e.key {
                out.kept += 1;
            }
            continue;
        }
        // Unknown age: a blob being written right now looks the same; leave it.
        if e.modified.is_none_or(|m| m > cutoff) {
            continue;
        }
        out.bytes += e.size;
        out.removed.push(e.key);
    }
    if !dry_run {
        // In batches, the blobs before their sidecars.
        let (blobs, sidecars): (Vec<String>, Vec<String>) = out
            .removed
            .iter()
            .cloned()
            .partition(|k| !k.ends_with(".sha256"));
        tier.delete_many(&blobs).await?;
        tier.delete_many(&sidecars).await?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> ArtifactRecord {
        ArtifactRecord {
            name: name.to_owned(),
            key: "c/blobs/packs/ab/ab.pack".to_owned(),
            size: 1,
            sha256: String::new(),
            raw_size: 1,
            compression: zdr_core::Compression::Zstd,
            encryption: None,
            offset: Some(0),
        }
    }

    #[test]
    fn the_known_set_finds_loaded_and_added_blobs_by_prefix() {
        let a = format!("{}{}", "0a".repeat(8), "11".repeat(24));
        let b = format!("{}{}", "ff".repeat(8), "22".repeat(24));
        let c = format!("{}{}", "05".repeat(8), "33".repeat(24));
        let (pa, pb, pc) = (
            prefix(&a).unwrap_or_default(),
            prefix(&b).unwrap_or_default(),
            prefix(&c).unwrap_or_default(),
        );
        // Loaded out of order: the set sorts them.
        let mut known = Known::loaded(vec!["p0".into(), "p1".into()], vec![(pb, 1), (pa, 0)]);
        assert_eq!(known.place(pa), Some(0));
        assert_eq!(known.place(pb), Some(1));
        assert_eq!(known.place(pc), None);
        known.add_alone(&c);
        assert_eq!(known.place(pc), Some(ALONE));
        known.add_pack("p2".into(), &[record(&a)]);
        assert_eq!(known.place(pa), Some(2), "the newest place wins");
        assert_eq!(known.packs.len(), 3);
        assert_eq!(prefix("not hex at all, not hex at all"), None);
    }
}
